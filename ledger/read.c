/* SPDX-License-Identifier: Apache-2.0 */
/*
 * read - the read API: one read-only connection per handle, its
 * statements prepared once, used under lg->rlock by any thread. Functions
 * that run more than one statement do so in one read transaction, so they
 * see one snapshot of the file.
 */
#include "ledger.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "ledger_int.h"

/* Columns 0-9 of a delivery row, as ledger__row_instance() reads them. */
#define LEDGER__ROW_COLS                                              \
    "d.id, d.sop_uid, d.wait_ms, d.bytes, d.outcome, st.uid, se.uid," \
    " c.value, a.value, ds.value"
#define LEDGER__ROW_NAMES                    \
    " LEFT JOIN name c ON c.id = d.class_id" \
    " LEFT JOIN name a ON a.id = d.ae_id"    \
    " LEFT JOIN name ds ON ds.id = d.dest_id"
#define LEDGER__STUDY_JOIN                                 \
    " FROM study st JOIN series se ON se.study_id = st.id" \
    " JOIN delivery d ON d.series_id = se.id"
/* Arrival time of row d. */
#define LEDGER__ARRIVED "((d.id >> 12) - d.wait_ms)"
/* Columns 0-8 of a transaction row, as ledger__row_commit() reads them. */
#define LEDGER__TX_COLS                                          \
    "SELECT t.id, t.uid, a.value, t.received_ms, t.reported_ms," \
    " t.event_type, t.n_items,"                                  \
    " (SELECT count(*) FROM commit_item i WHERE i.tx_id = t.id"  \
    "  AND i.result = 1),"                                       \
    " (SELECT count(*) FROM commit_item i WHERE i.tx_id = t.id"  \
    "  AND i.result = 2)"                                        \
    " FROM commit_tx t LEFT JOIN name a ON a.id = t.ae_id"

static const char *const ledger__rsql[LEDGER__R_COUNT] = {
    [LEDGER__R_BEGIN] = "BEGIN",
    [LEDGER__R_END] = "COMMIT",
    [LEDGER__R_FIND] =
        "SELECT " LEDGER__ROW_COLS " FROM delivery d"
        " LEFT JOIN series se ON se.id = d.series_id"
        " LEFT JOIN study st ON st.id = se.study_id" LEDGER__ROW_NAMES
        " WHERE d.sop_key = ?1 AND d.sop_uid = ?2"
        " ORDER BY d.id DESC LIMIT 1",
    [LEDGER__R_STUDY_ROWS] =
        "SELECT " LEDGER__ROW_COLS LEDGER__STUDY_JOIN LEDGER__ROW_NAMES
        " WHERE st.uid = ?1 ORDER BY se.uid, d.id",
    [LEDGER__R_STUDY_COUNTS] =
        "SELECT count(*), count(DISTINCT d.sop_uid), count(DISTINCT se.id),"
        " sum(d.outcome = 1), sum(d.outcome = 2), sum(d.bytes),"
        " min(" LEDGER__ARRIVED "), max(" LEDGER__ARRIVED "),"
        " min(d.id >> 12), max(d.id >> 12)" LEDGER__STUDY_JOIN
        " WHERE st.uid = ?1",
    [LEDGER__R_STUDY_SOURCES] =
        "SELECT a.value, count(DISTINCT d.sop_uid), count(*),"
        " min(" LEDGER__ARRIVED "), max(" LEDGER__ARRIVED ")" LEDGER__STUDY_JOIN
        " LEFT JOIN name a ON a.id = d.ae_id"
        " WHERE st.uid = ?1 GROUP BY d.ae_id ORDER BY a.value",
    [LEDGER__R_TX_FIND] =
        LEDGER__TX_COLS " WHERE t.uid = ?1 ORDER BY t.id DESC LIMIT 1",
    [LEDGER__R_TX_BY_ID] = LEDGER__TX_COLS " WHERE t.id = ?1",
    [LEDGER__R_TX_LIST] =
        LEDGER__TX_COLS " WHERE t.received_ms >= ?1"
                        " ORDER BY t.received_ms DESC, t.id DESC LIMIT ?2",
    [LEDGER__R_ITEMS] =
        "SELECT i.pos, c.value, i.sop_uid, st.uid, i.result, i.reason,"
        " i.basis, i.resolved_ms FROM commit_item i"
        " LEFT JOIN name c ON c.id = i.class_id"
        " LEFT JOIN study st ON st.id = i.study_id"
        " WHERE i.tx_id = ?1 ORDER BY i.pos",
    [LEDGER__R_STUDY_TXS] =
        "SELECT i.tx_id, count(*), sum(i.result = 1), sum(i.result = 2)"
        " FROM commit_item i"
        " WHERE i.study_id = (SELECT id FROM study WHERE uid = ?1)"
        " GROUP BY i.tx_id ORDER BY i.tx_id",
};

/* The handle whose read lock this thread holds (callbacks' re-entry). */
static _Thread_local const struct ledger *ledger__reading;

/* Takes the read lock; -EDEADLK from inside one of its own callbacks. */
static int ledger__rlock(struct ledger *lg, const struct ledger **ret_prev)
{
    if (lg == NULL)
        return -ENODEV;
    if (ledger__reading == lg)
        return -EDEADLK;
    (void)pthread_mutex_lock(&lg->rlock);
    *ret_prev = ledger__reading;
    ledger__reading = lg;
    return 0;
}

static void ledger__runlock(struct ledger *lg, const struct ledger *prev)
{
    ledger__reading = prev;
    (void)pthread_mutex_unlock(&lg->rlock);
}

/* Maps a failed step on the read connection; notes corruption. */
static int ledger__rfail(struct ledger *lg, int rc)
{
    int r = ledger__errno(lg->rdb, rc);

    if (r == -EUCLEAN)
        atomic_store(&lg->broken, true);
    return r != 0 ? r : -EIO;
}

static void ledger__rreset(sqlite3_stmt *st)
{
    (void)sqlite3_reset(st);
    (void)sqlite3_clear_bindings(st);
}

/* Starts / ends a read transaction around several statements. */
static int ledger__rtx_begin(struct ledger *lg)
{
    sqlite3_stmt *st = lg->rst[LEDGER__R_BEGIN];
    int rc = sqlite3_step(st);

    ledger__rreset(st);
    return rc == SQLITE_DONE ? 0 : ledger__rfail(lg, rc);
}

static void ledger__rtx_end(struct ledger *lg)
{
    sqlite3_stmt *st = lg->rst[LEDGER__R_END];

    if (sqlite3_get_autocommit(lg->rdb) == 0) {
        (void)sqlite3_step(st);
        ledger__rreset(st);
    }
}

static int64_t ledger__col64(sqlite3_stmt *st, int col)
{
    return sqlite3_column_int64(st, col);
}

/* Reads columns 0-9 of a delivery row. */
static int ledger__row_instance(struct ledger *lg, sqlite3_stmt *st,
                                struct ledger_instance *out)
{
    int64_t delivered = ledger__col64(st, 0) >> LEDGER__SEQ_BITS;
    int r;

    memset(out, 0, sizeof(*out));
    out->delivered_ms = delivered;
    out->arrived_ms = delivered - ledger__col64(st, 2);
    out->bytes = (uint64_t)ledger__col64(st, 3);
    out->outcome = (enum ledger_outcome)sqlite3_column_int(st, 4);
    r = ledger__column_uid(st, 1, out->sop_instance_uid,
                           sizeof(out->sop_instance_uid));
    if (r == 0)
        r = ledger__column_uid(st, 5, out->study_uid, sizeof(out->study_uid));
    if (r == 0)
        r = ledger__column_uid(st, 6, out->series_uid, sizeof(out->series_uid));
    ledger__column_text(st, 7, out->sop_class_uid, sizeof(out->sop_class_uid));
    ledger__column_text(st, 8, out->calling_ae, sizeof(out->calling_ae));
    ledger__column_text(st, 9, out->destination, sizeof(out->destination));
    if (r < 0)
        atomic_store(&lg->broken, true);
    return r;
}

/* Reads columns 0-8 of a transaction row; *@ret_id is its row ID. */
static int ledger__row_commit(struct ledger *lg, sqlite3_stmt *st,
                              struct ledger_commit *out, int64_t *ret_id)
{
    int r;

    memset(out, 0, sizeof(*out));
    *ret_id = ledger__col64(st, 0);
    r = ledger__column_uid(st, 1, out->tx_uid, sizeof(out->tx_uid));
    ledger__column_text(st, 2, out->calling_ae, sizeof(out->calling_ae));
    out->received_ms = ledger__col64(st, 3);
    out->reported_ms = ledger__col64(st, 4);
    out->event_type = (unsigned)sqlite3_column_int(st, 5);
    out->items = (uint64_t)ledger__col64(st, 6);
    out->committed = (uint64_t)ledger__col64(st, 7);
    out->failed = (uint64_t)ledger__col64(st, 8);
    if (out->committed + out->failed <= out->items)
        out->pending = out->items - out->committed - out->failed;
    if (r < 0)
        atomic_store(&lg->broken, true);
    return r;
}

int ledger_find_instance(struct ledger *lg, const char *sop_uid,
                         struct ledger_instance *ret_instance)
{
    const struct ledger *prev = NULL;
    struct ledger_instance found;
    sqlite3_stmt *st;
    int rc;
    int r = ledger__rlock(lg, &prev);

    if (r < 0)
        return r;
    if (sop_uid == NULL || sop_uid[0] == '\0' || ret_instance == NULL) {
        ledger__runlock(lg, prev);
        return -EINVAL;
    }
    st = lg->rst[LEDGER__R_FIND];
    (void)sqlite3_bind_int64(st, 1, ledger__uid_key(sop_uid));
    (void)ledger__bind_uid(st, 2, sop_uid);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        r = ledger__row_instance(lg, st, &found);
    else
        r = rc == SQLITE_DONE ? -ENOENT : ledger__rfail(lg, rc);
    ledger__rreset(st);
    ledger__runlock(lg, prev);
    if (r == 0)
        *ret_instance = found;
    return r;
}

int ledger_study_instances(struct ledger *lg, const char *study_uid,
                           ledger_instance_cb cb, void *ctx)
{
    const struct ledger *prev = NULL;
    struct ledger_instance row;
    sqlite3_stmt *st;
    int rc;
    int r = ledger__rlock(lg, &prev);

    if (r < 0)
        return r;
    if (study_uid == NULL || cb == NULL) {
        ledger__runlock(lg, prev);
        return -EINVAL;
    }
    st = lg->rst[LEDGER__R_STUDY_ROWS];
    (void)ledger__bind_uid(st, 1, study_uid);
    while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        r = ledger__row_instance(lg, st, &row);
        if (r == 0)
            r = cb(ctx, &row);
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = ledger__rfail(lg, rc);
    ledger__rreset(st);
    ledger__runlock(lg, prev);
    return r;
}

int ledger_study_counts(struct ledger *lg, const char *study_uid,
                        struct ledger_study_counts *ret_counts)
{
    const struct ledger *prev = NULL;
    struct ledger_study_counts c;
    sqlite3_stmt *st;
    int rc;
    int r = ledger__rlock(lg, &prev);

    if (r < 0)
        return r;
    if (study_uid == NULL || ret_counts == NULL) {
        ledger__runlock(lg, prev);
        return -EINVAL;
    }
    st = lg->rst[LEDGER__R_STUDY_COUNTS];
    (void)ledger__bind_uid(st, 1, study_uid);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        c.deliveries = (uint64_t)ledger__col64(st, 0);
        c.instances = (uint64_t)ledger__col64(st, 1);
        c.series = (uint64_t)ledger__col64(st, 2);
        c.stored = (uint64_t)ledger__col64(st, 3);
        c.already_existed = (uint64_t)ledger__col64(st, 4);
        c.bytes = (uint64_t)ledger__col64(st, 5);
        c.first_arrived_ms = ledger__col64(st, 6);
        c.last_arrived_ms = ledger__col64(st, 7);
        c.first_delivered_ms = ledger__col64(st, 8);
        c.last_delivered_ms = ledger__col64(st, 9);
        r = c.deliveries > 0 ? 0 : -ENOENT;
    } else {
        r = ledger__rfail(lg, rc);
    }
    ledger__rreset(st);
    ledger__runlock(lg, prev);
    if (r == 0)
        *ret_counts = c;
    return r;
}

int ledger_study_sources(struct ledger *lg, const char *study_uid,
                         ledger_source_cb cb, void *ctx)
{
    const struct ledger *prev = NULL;
    struct ledger_study_source src;
    sqlite3_stmt *st;
    int rc;
    int r = ledger__rlock(lg, &prev);

    if (r < 0)
        return r;
    if (study_uid == NULL || cb == NULL) {
        ledger__runlock(lg, prev);
        return -EINVAL;
    }
    st = lg->rst[LEDGER__R_STUDY_SOURCES];
    (void)ledger__bind_uid(st, 1, study_uid);
    while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        memset(&src, 0, sizeof(src));
        ledger__column_text(st, 0, src.calling_ae, sizeof(src.calling_ae));
        src.instances = (uint64_t)ledger__col64(st, 1);
        src.deliveries = (uint64_t)ledger__col64(st, 2);
        src.first_arrived_ms = ledger__col64(st, 3);
        src.last_arrived_ms = ledger__col64(st, 4);
        r = cb(ctx, &src);
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = ledger__rfail(lg, rc);
    ledger__rreset(st);
    ledger__runlock(lg, prev);
    return r;
}

/* The latest transaction @tx_uid and its row ID; -ENOENT if none. */
static int ledger__tx_find(struct ledger *lg, const char *tx_uid,
                           struct ledger_commit *ret_commit, int64_t *ret_id)
{
    sqlite3_stmt *st = lg->rst[LEDGER__R_TX_FIND];
    int rc;
    int r;

    (void)ledger__bind_uid(st, 1, tx_uid);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        r = ledger__row_commit(lg, st, ret_commit, ret_id);
    else
        r = rc == SQLITE_DONE ? -ENOENT : ledger__rfail(lg, rc);
    ledger__rreset(st);
    return r;
}

int ledger_commit_find(struct ledger *lg, const char *tx_uid,
                       struct ledger_commit *ret_commit)
{
    const struct ledger *prev = NULL;
    struct ledger_commit c;
    int64_t id;
    int r = ledger__rlock(lg, &prev);

    if (r < 0)
        return r;
    if (tx_uid == NULL || tx_uid[0] == '\0' || ret_commit == NULL)
        r = -EINVAL;
    else
        r = ledger__tx_find(lg, tx_uid, &c, &id);
    ledger__runlock(lg, prev);
    if (r == 0)
        *ret_commit = c;
    return r;
}

int ledger_commit_list(struct ledger *lg, int64_t since_ms, unsigned limit,
                       ledger_commit_cb cb, void *ctx)
{
    const struct ledger *prev = NULL;
    struct ledger_commit c;
    sqlite3_stmt *st;
    int64_t id;
    int rc;
    int r = ledger__rlock(lg, &prev);

    if (r < 0)
        return r;
    if (cb == NULL) {
        ledger__runlock(lg, prev);
        return -EINVAL;
    }
    st = lg->rst[LEDGER__R_TX_LIST];
    (void)sqlite3_bind_int64(st, 1, since_ms);
    (void)sqlite3_bind_int64(st, 2, limit > 0 ? (int64_t)limit : -1);
    while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        r = ledger__row_commit(lg, st, &c, &id);
        if (r == 0)
            r = cb(ctx, &c);
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = ledger__rfail(lg, rc);
    ledger__rreset(st);
    ledger__runlock(lg, prev);
    return r;
}

/* Steps the items statement of transaction @tx into @cb. */
static int ledger__items(struct ledger *lg, int64_t tx, ledger_item_cb cb,
                         void *ctx)
{
    sqlite3_stmt *st = lg->rst[LEDGER__R_ITEMS];
    struct ledger_commit_item it;
    int rc;
    int r = 0;

    (void)sqlite3_bind_int64(st, 1, tx);
    while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        memset(&it, 0, sizeof(it));
        it.pos = (unsigned)sqlite3_column_int(st, 0);
        ledger__column_text(st, 1, it.sop_class_uid, sizeof(it.sop_class_uid));
        r = ledger__column_uid(st, 2, it.sop_instance_uid,
                               sizeof(it.sop_instance_uid));
        if (r == 0)
            r = ledger__column_uid(st, 3, it.study_uid, sizeof(it.study_uid));
        if (r < 0) {
            atomic_store(&lg->broken, true);
            break;
        }
        it.result = (enum ledger_item_result)sqlite3_column_int(st, 4);
        it.failure_reason = (uint16_t)sqlite3_column_int(st, 5);
        it.basis = (enum ledger_commit_basis)sqlite3_column_int(st, 6);
        it.resolved_ms = ledger__col64(st, 7);
        r = cb(ctx, &it);
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = ledger__rfail(lg, rc);
    ledger__rreset(st);
    return r;
}

int ledger_commit_items(struct ledger *lg, const char *tx_uid,
                        ledger_item_cb cb, void *ctx)
{
    const struct ledger *prev = NULL;
    struct ledger_commit c;
    int64_t id = 0;
    int r = ledger__rlock(lg, &prev);

    if (r < 0)
        return r;
    if (tx_uid == NULL || tx_uid[0] == '\0' || cb == NULL) {
        ledger__runlock(lg, prev);
        return -EINVAL;
    }
    r = ledger__rtx_begin(lg);
    if (r == 0)
        r = ledger__tx_find(lg, tx_uid, &c, &id);
    if (r == 0)
        r = ledger__items(lg, id, cb, ctx);
    ledger__rtx_end(lg);
    ledger__runlock(lg, prev);
    return r;
}

/* Reads transaction @tx by row ID into @out. */
static int ledger__tx_by_id(struct ledger *lg, int64_t tx,
                            struct ledger_commit *out)
{
    sqlite3_stmt *st = lg->rst[LEDGER__R_TX_BY_ID];
    int64_t id;
    int rc;
    int r;

    (void)sqlite3_bind_int64(st, 1, tx);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        r = ledger__row_commit(lg, st, out, &id);
    else
        r = rc == SQLITE_DONE ? -ENOENT : ledger__rfail(lg, rc);
    ledger__rreset(st);
    return r;
}

int ledger_study_commits(struct ledger *lg, const char *study_uid,
                         ledger_study_commit_cb cb, void *ctx)
{
    const struct ledger *prev = NULL;
    struct ledger_commit c;
    struct ledger_commit_study s;
    sqlite3_stmt *st;
    int rc = SQLITE_DONE;
    int r = ledger__rlock(lg, &prev);

    if (r < 0)
        return r;
    if (study_uid == NULL || cb == NULL) {
        ledger__runlock(lg, prev);
        return -EINVAL;
    }
    r = ledger__rtx_begin(lg);
    st = lg->rst[LEDGER__R_STUDY_TXS];
    if (r == 0)
        (void)ledger__bind_uid(st, 1, study_uid);
    while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        memset(&s, 0, sizeof(s));
        s.items = (uint64_t)ledger__col64(st, 1);
        s.committed = (uint64_t)ledger__col64(st, 2);
        s.failed = (uint64_t)ledger__col64(st, 3);
        if (s.committed + s.failed <= s.items)
            s.pending = s.items - s.committed - s.failed;
        r = ledger__tx_by_id(lg, ledger__col64(st, 0), &c);
        if (r == -ENOENT) {
            r = 0; /* items without their transaction: skip */
            continue;
        }
        if (r == 0)
            r = cb(ctx, &c, &s);
    }
    if (r == 0 && rc != SQLITE_DONE)
        r = ledger__rfail(lg, rc);
    ledger__rreset(st);
    ledger__rtx_end(lg);
    ledger__runlock(lg, prev);
    return r;
}

int ledger__reader_prepare(struct ledger *lg, char *err, size_t err_len)
{
    for (int i = 0; i < LEDGER__R_COUNT; i++) {
        int rc =
            sqlite3_prepare_v3(lg->rdb, ledger__rsql[i], -1,
                               SQLITE_PREPARE_PERSISTENT, &lg->rst[i], NULL);

        if (rc != SQLITE_OK) {
            ledger__err(err, err_len, "ledger '%s': preparing \"%s\": %s",
                        lg->path, ledger__rsql[i], sqlite3_errmsg(lg->rdb));
            return ledger__errno(lg->rdb, rc);
        }
    }
    return 0;
}

void ledger__reader_finalize(struct ledger *lg)
{
    for (int i = 0; i < LEDGER__R_COUNT; i++) {
        (void)sqlite3_finalize(lg->rst[i]);
        lg->rst[i] = NULL;
    }
}
