/* SPDX-License-Identifier: Apache-2.0 */
/*
 * write - the writer thread's SQL: one transaction per group of queued
 * entries (interning names, studies and series on the way) and the prune
 * chunks. Only the writer thread calls these once it runs.
 */
#include "ledger.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ledger_int.h"

static const char *const ledger__wsql[LEDGER__W_COUNT] = {
    [LEDGER__W_BEGIN] = "BEGIN IMMEDIATE",
    [LEDGER__W_COMMIT] = "COMMIT",
    [LEDGER__W_ROLLBACK] = "ROLLBACK",
    [LEDGER__W_NAME_GET] = "SELECT id FROM name WHERE kind = ?1 AND value = ?2",
    [LEDGER__W_NAME_ADD] = "INSERT INTO name(kind, value) VALUES(?1, ?2)",
    [LEDGER__W_STUDY_GET] = "SELECT id FROM study WHERE uid = ?1",
    [LEDGER__W_STUDY_ADD] = "INSERT INTO study(uid) VALUES(?1)",
    [LEDGER__W_SERIES_GET] =
        "SELECT id FROM series WHERE study_id = ?1 AND uid = ?2",
    [LEDGER__W_SERIES_ADD] = "INSERT INTO series(study_id, uid) VALUES(?1, ?2)",
    [LEDGER__W_KEY_MAX] = "SELECT id FROM delivery WHERE id BETWEEN ?1 AND ?2"
                          " ORDER BY id DESC LIMIT 1",
    [LEDGER__W_DELIVERY_ADD] =
        "INSERT INTO delivery(id, sop_key, sop_uid, series_id, class_id,"
        " ae_id, dest_id, wait_ms, bytes, outcome)"
        " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    [LEDGER__W_SOP_STUDY] =
        "SELECT se.study_id FROM delivery d JOIN series se"
        " ON se.id = d.series_id WHERE d.sop_key = ?1 AND d.sop_uid = ?2"
        " ORDER BY d.id DESC LIMIT 1",
    [LEDGER__W_TX_ADD] = "INSERT INTO commit_tx(uid, ae_id, received_ms,"
                         " n_items) VALUES(?1, ?2, ?3, ?4)",
    [LEDGER__W_ITEM_ADD] =
        "INSERT INTO commit_item(tx_id, sop_key, pos, sop_uid, class_id,"
        " study_id) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
    [LEDGER__W_TX_GET] =
        "SELECT id FROM commit_tx WHERE uid = ?1 ORDER BY id DESC LIMIT 1",
    [LEDGER__W_ITEM_RESOLVE] =
        "UPDATE commit_item SET result = ?4, reason = ?5, basis = ?6,"
        " resolved_ms = ?7, study_id = coalesce(?8, study_id)"
        " WHERE tx_id = ?1 AND sop_key = ?2 AND sop_uid = ?3",
    [LEDGER__W_TX_REPORT] =
        "UPDATE commit_tx SET reported_ms = ?2, event_type = ?3 WHERE id = ?1",
    [LEDGER__P_DEL_SCAN] = "SELECT id, series_id FROM delivery WHERE id < ?1"
                           " ORDER BY id LIMIT ?2",
    [LEDGER__P_DEL_RANGE] = "DELETE FROM delivery WHERE id <= ?1",
    [LEDGER__P_SERIES_STUDY] = "SELECT study_id FROM series WHERE id = ?1",
    [LEDGER__P_SERIES_DEL] = "DELETE FROM series WHERE id = ?1 AND NOT EXISTS"
                             " (SELECT 1 FROM delivery WHERE series_id = ?1)",
    [LEDGER__P_STUDY_DEL] =
        "DELETE FROM study WHERE id = ?1"
        " AND NOT EXISTS (SELECT 1 FROM series WHERE study_id = ?1)"
        " AND NOT EXISTS (SELECT 1 FROM commit_item WHERE study_id = ?1)",
    [LEDGER__P_TX_OLDEST] = "SELECT id FROM commit_tx WHERE received_ms < ?1"
                            " ORDER BY received_ms, id LIMIT 1",
    [LEDGER__P_ITEM_SCAN] =
        "SELECT sop_key, pos, study_id FROM commit_item WHERE tx_id = ?1"
        " ORDER BY sop_key, pos LIMIT ?2",
    [LEDGER__P_ITEM_DEL] = "DELETE FROM commit_item WHERE tx_id = ?1"
                           " AND (sop_key, pos) <= (?2, ?3)",
    [LEDGER__P_TX_DEL] = "DELETE FROM commit_tx WHERE id = ?1 AND NOT EXISTS"
                         " (SELECT 1 FROM commit_item WHERE tx_id = ?1)",
};

/* Remembers why @rc failed and maps it to a negative errno. */
static int ledger__fail(struct ledger__writer *w, int rc)
{
    (void)snprintf(w->errtext, sizeof(w->errtext), "%s", sqlite3_errmsg(w->db));
    return ledger__errno(w->db, rc);
}

/* Steps @st to the end (no rows wanted) and resets it. */
static int ledger__run(struct ledger__writer *w, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    int r = rc == SQLITE_DONE ? 0 : ledger__fail(w, rc);

    (void)sqlite3_reset(st);
    (void)sqlite3_clear_bindings(st);
    return r;
}

/*
 * Steps @st once: *@ret_found tells whether it gave a row whose first
 * column is not NULL, and *@ret_id is that column. Resets @st.
 */
static int ledger__run_id(struct ledger__writer *w, sqlite3_stmt *st,
                          int64_t *ret_id, bool *ret_found)
{
    int rc = sqlite3_step(st);
    int r = 0;

    *ret_found = false;
    if (rc == SQLITE_ROW) {
        if (sqlite3_column_type(st, 0) != SQLITE_NULL) {
            *ret_id = sqlite3_column_int64(st, 0);
            *ret_found = true;
        }
    } else if (rc != SQLITE_DONE) {
        r = ledger__fail(w, rc);
    }
    (void)sqlite3_reset(st);
    (void)sqlite3_clear_bindings(st);
    return r;
}

/* Forgets the cached IDs (after a rollback or a prune). */
static void ledger__forget(struct ledger__writer *w, bool names)
{
    w->series_cached = false;
    if (!names)
        return;
    for (unsigned k = 0; k < LEDGER__NAME_KINDS; k++) {
        for (unsigned i = 0; i < LEDGER__NAME_CACHE; i++) {
            free(w->names[k][i].value);
            w->names[k][i].value = NULL;
        }
    }
}

/* The ID of name @value of @kind, added if new. */
static int ledger__name_id(struct ledger__writer *w, int kind,
                           const char *value, int64_t *ret_id)
{
    struct ledger__name_slot *slots = w->names[kind - 1];
    struct ledger__name_slot *slot;
    sqlite3_stmt *st;
    bool found;
    int r;

    for (unsigned i = 0; i < LEDGER__NAME_CACHE; i++) {
        if (slots[i].value != NULL && strcmp(slots[i].value, value) == 0) {
            *ret_id = slots[i].id;
            return 0;
        }
    }
    st = w->st[LEDGER__W_NAME_GET];
    (void)sqlite3_bind_int(st, 1, kind);
    (void)sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
    r = ledger__run_id(w, st, ret_id, &found);
    if (r == 0 && !found) {
        st = w->st[LEDGER__W_NAME_ADD];
        (void)sqlite3_bind_int(st, 1, kind);
        (void)sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
        r = ledger__run(w, st);
        *ret_id = sqlite3_last_insert_rowid(w->db);
    }
    if (r < 0)
        return r;
    slot = &slots[w->name_next[kind - 1]++ % LEDGER__NAME_CACHE];
    free(slot->value);
    slot->value = strdup(value); /* not cached if NULL: harmless */
    slot->id = *ret_id;
    return 0;
}

/* The ID of study @uid; added if new and @create, else *@ret_found. */
static int ledger__study_id(struct ledger__writer *w, const char *uid,
                            bool create, int64_t *ret_id, bool *ret_found)
{
    sqlite3_stmt *st = w->st[LEDGER__W_STUDY_GET];
    int r;

    (void)ledger__bind_uid(st, 1, uid);
    r = ledger__run_id(w, st, ret_id, ret_found);
    if (r < 0 || *ret_found || !create)
        return r;
    st = w->st[LEDGER__W_STUDY_ADD];
    (void)ledger__bind_uid(st, 1, uid);
    r = ledger__run(w, st);
    if (r == 0) {
        *ret_id = sqlite3_last_insert_rowid(w->db);
        *ret_found = true;
    }
    return r;
}

/* The ID of series @series_uid of study @study_uid, added if new. */
static int ledger__series_id(struct ledger__writer *w, const char *study_uid,
                             const char *series_uid, int64_t *ret_id)
{
    sqlite3_stmt *st;
    int64_t study_id = 0;
    bool found;
    int r;

    if (w->series_cached && strcmp(w->study_uid, study_uid) == 0 &&
        strcmp(w->series_uid, series_uid) == 0) {
        *ret_id = w->series_id;
        return 0;
    }
    r = ledger__study_id(w, study_uid, true, &study_id, &found);
    if (r < 0)
        return r;
    st = w->st[LEDGER__W_SERIES_GET];
    (void)sqlite3_bind_int64(st, 1, study_id);
    (void)ledger__bind_uid(st, 2, series_uid);
    r = ledger__run_id(w, st, ret_id, &found);
    if (r == 0 && !found) {
        st = w->st[LEDGER__W_SERIES_ADD];
        (void)sqlite3_bind_int64(st, 1, study_id);
        (void)ledger__bind_uid(st, 2, series_uid);
        r = ledger__run(w, st);
        *ret_id = sqlite3_last_insert_rowid(w->db);
    }
    if (r < 0)
        return r;
    (void)snprintf(w->study_uid, sizeof(w->study_uid), "%s", study_uid);
    (void)snprintf(w->series_uid, sizeof(w->series_uid), "%s", series_uid);
    w->study_id = study_id;
    w->series_id = *ret_id;
    w->series_cached = true;
    return 0;
}

/*
 * A free row key for a delivery at @ms: the millisecond shifted left, plus
 * the next free sequence number of that millisecond; a full millisecond
 * (4096 rows) spills into the next one.
 */
static int ledger__delivery_key(struct ledger__writer *w, int64_t ms,
                                int64_t *ret_key)
{
    for (; ms <= LEDGER__MS_MAX; ms++) {
        int64_t base = ms << LEDGER__SEQ_BITS;
        int64_t top = base | LEDGER__SEQ_MASK;
        sqlite3_stmt *st = w->st[LEDGER__W_KEY_MAX];
        int64_t max = 0;
        bool found;
        int r;

        if (base > w->last_key) {
            *ret_key = base;
            return 0;
        }
        /* last_key is at least every key written, so it is the max. */
        if ((w->last_key >> LEDGER__SEQ_BITS) == ms && w->last_key < top) {
            *ret_key = w->last_key + 1;
            return 0;
        }
        (void)sqlite3_bind_int64(st, 1, base);
        (void)sqlite3_bind_int64(st, 2, top);
        r = ledger__run_id(w, st, &max, &found);
        if (r < 0)
            return r;
        if (!found) {
            *ret_key = base;
            return 0;
        }
        if (max < top) {
            *ret_key = max + 1;
            return 0;
        }
    }
    (void)snprintf(w->errtext, sizeof(w->errtext), "delivery time too late");
    return -EOVERFLOW;
}

static int ledger__put_delivery(struct ledger__writer *w,
                                const struct ledger__entry *e)
{
    sqlite3_stmt *st = w->st[LEDGER__W_DELIVERY_ADD];
    int64_t series = 0;
    int64_t cls = 0;
    int64_t ae = 0;
    int64_t dest = 0;
    int64_t key = 0;
    int r;

    r = ledger__series_id(w, e->u.d.study_uid, e->u.d.series_uid, &series);
    if (r == 0)
        r = ledger__name_id(w, LEDGER__NAME_CLASS, e->u.d.sop_class_uid, &cls);
    if (r == 0)
        r = ledger__name_id(w, LEDGER__NAME_AE, e->u.d.calling_ae, &ae);
    if (r == 0)
        r = ledger__name_id(w, LEDGER__NAME_DEST, e->u.d.destination, &dest);
    if (r == 0)
        r = ledger__delivery_key(w, e->u.d.delivered_ms, &key);
    if (r < 0)
        return r;
    (void)sqlite3_bind_int64(st, 1, key);
    (void)sqlite3_bind_int64(st, 2, ledger__uid_key(e->u.d.sop_uid));
    (void)ledger__bind_uid(st, 3, e->u.d.sop_uid);
    (void)sqlite3_bind_int64(st, 4, series);
    (void)sqlite3_bind_int64(st, 5, cls);
    (void)sqlite3_bind_int64(st, 6, ae);
    (void)sqlite3_bind_int64(st, 7, dest);
    (void)sqlite3_bind_int64(st, 8, e->u.d.delivered_ms - e->u.d.arrived_ms);
    (void)sqlite3_bind_int64(st, 9, (int64_t)e->u.d.bytes);
    (void)sqlite3_bind_int(st, 10, e->u.d.outcome);
    r = ledger__run(w, st);
    if (r == 0 && key > w->last_key)
        w->last_key = key;
    return r;
}

/* The study of the latest delivery of @sop_uid, if the ledger has one. */
static int ledger__sop_study(struct ledger__writer *w, const char *sop_uid,
                             int64_t *ret_id, bool *ret_found)
{
    sqlite3_stmt *st = w->st[LEDGER__W_SOP_STUDY];

    (void)sqlite3_bind_int64(st, 1, ledger__uid_key(sop_uid));
    (void)ledger__bind_uid(st, 2, sop_uid);
    return ledger__run_id(w, st, ret_id, ret_found);
}

static int ledger__put_received(struct ledger__writer *w,
                                const struct ledger__entry *e)
{
    sqlite3_stmt *st = w->st[LEDGER__W_TX_ADD];
    int64_t ae = 0;
    int64_t tx;
    int r = ledger__name_id(w, LEDGER__NAME_AE, e->u.rx.calling_ae, &ae);

    if (r < 0)
        return r;
    (void)ledger__bind_uid(st, 1, e->u.rx.tx_uid);
    (void)sqlite3_bind_int64(st, 2, ae);
    (void)sqlite3_bind_int64(st, 3, e->u.rx.received_ms);
    (void)sqlite3_bind_int64(st, 4, (int64_t)e->u.rx.n_items);
    r = ledger__run(w, st);
    if (r < 0)
        return r;
    tx = sqlite3_last_insert_rowid(w->db);
    for (size_t i = 0; i < e->u.rx.n_items; i++) {
        const struct ledger__item *it = &e->u.rx.items[i];
        int64_t cls = 0;
        int64_t study = 0;
        bool known = false;

        r = ledger__name_id(w, LEDGER__NAME_CLASS, it->sop_class_uid, &cls);
        if (r == 0)
            r = ledger__sop_study(w, it->sop_uid, &study, &known);
        if (r < 0)
            return r;
        st = w->st[LEDGER__W_ITEM_ADD];
        (void)sqlite3_bind_int64(st, 1, tx);
        (void)sqlite3_bind_int64(st, 2, ledger__uid_key(it->sop_uid));
        (void)sqlite3_bind_int64(st, 3, (int64_t)i);
        (void)ledger__bind_uid(st, 4, it->sop_uid);
        (void)sqlite3_bind_int64(st, 5, cls);
        if (known)
            (void)sqlite3_bind_int64(st, 6, study);
        r = ledger__run(w, st);
        if (r < 0)
            return r;
    }
    return 0;
}

/* The latest transaction @uid; *@ret_found false if none. */
static int ledger__tx_id(struct ledger__writer *w, const char *uid,
                         int64_t *ret_id, bool *ret_found)
{
    sqlite3_stmt *st = w->st[LEDGER__W_TX_GET];

    (void)ledger__bind_uid(st, 1, uid);
    return ledger__run_id(w, st, ret_id, ret_found);
}

static int ledger__put_resolved(struct ledger__writer *w,
                                const struct ledger__entry *e,
                                uint64_t *ignored)
{
    sqlite3_stmt *st = w->st[LEDGER__W_ITEM_RESOLVE];
    int64_t tx = 0;
    int64_t study = 0;
    bool found;
    bool known = false;
    int r = ledger__tx_id(w, e->u.res.tx_uid, &tx, &found);

    if (r < 0)
        return r;
    if (!found) {
        (*ignored)++;
        return 0;
    }
    if (e->u.res.study_uid[0] != '\0')
        r = ledger__study_id(w, e->u.res.study_uid, true, &study, &known);
    else
        r = ledger__sop_study(w, e->u.res.sop_uid, &study, &known);
    if (r < 0)
        return r;
    (void)sqlite3_bind_int64(st, 1, tx);
    (void)sqlite3_bind_int64(st, 2, ledger__uid_key(e->u.res.sop_uid));
    (void)ledger__bind_uid(st, 3, e->u.res.sop_uid);
    (void)sqlite3_bind_int(st, 4, e->u.res.result);
    (void)sqlite3_bind_int(st, 5, e->u.res.reason);
    (void)sqlite3_bind_int(st, 6, e->u.res.basis);
    (void)sqlite3_bind_int64(st, 7, e->u.res.resolved_ms);
    if (known)
        (void)sqlite3_bind_int64(st, 8, study);
    r = ledger__run(w, st);
    if (r == 0 && sqlite3_changes(w->db) == 0)
        (*ignored)++;
    return r;
}

static int ledger__put_reported(struct ledger__writer *w,
                                const struct ledger__entry *e,
                                uint64_t *ignored)
{
    sqlite3_stmt *st = w->st[LEDGER__W_TX_REPORT];
    int64_t tx = 0;
    bool found;
    int r = ledger__tx_id(w, e->u.rep.tx_uid, &tx, &found);

    if (r < 0)
        return r;
    if (!found) {
        (*ignored)++;
        return 0;
    }
    (void)sqlite3_bind_int64(st, 1, tx);
    (void)sqlite3_bind_int64(st, 2, e->u.rep.reported_ms);
    (void)sqlite3_bind_int(st, 3, (int)e->u.rep.event_type);
    return ledger__run(w, st);
}

/* Ends the open transaction: COMMIT if @r is 0, else ROLLBACK. */
static int ledger__finish(struct ledger__writer *w, int r)
{
    if (r == 0)
        r = ledger__run(w, w->st[LEDGER__W_COMMIT]);
    if (r < 0 && sqlite3_get_autocommit(w->db) == 0) {
        (void)sqlite3_step(w->st[LEDGER__W_ROLLBACK]);
        (void)sqlite3_reset(w->st[LEDGER__W_ROLLBACK]);
    }
    if (r < 0)
        ledger__forget(w, true);
    return r;
}

/* Refuses to touch a file found corrupt. */
static int ledger__check_broken(struct ledger *lg)
{
    if (!atomic_load(&lg->broken))
        return 0;
    (void)snprintf(lg->w.errtext, sizeof(lg->w.errtext),
                   "the ledger file is corrupt; nothing more is written");
    return -EUCLEAN;
}

int ledger__write_group(struct ledger *lg, struct ledger__entry **entries,
                        size_t n, uint64_t *ret_ignored)
{
    struct ledger__writer *w = &lg->w;
    uint64_t ignored = 0;
    int r = ledger__check_broken(lg);

    if (r < 0)
        return r;
    r = ledger__run(w, w->st[LEDGER__W_BEGIN]);
    for (size_t i = 0; i < n && r == 0; i++) {
        const struct ledger__entry *e = entries[i];

        switch (e->kind) {
        case LEDGER__DELIVERY:
            r = ledger__put_delivery(w, e);
            break;
        case LEDGER__COMMIT_RECEIVED:
            r = ledger__put_received(w, e);
            break;
        case LEDGER__COMMIT_RESOLVED:
            r = ledger__put_resolved(w, e, &ignored);
            break;
        case LEDGER__COMMIT_REPORTED:
            r = ledger__put_reported(w, e, &ignored);
            break;
        }
    }
    r = ledger__finish(w, r);
    *ret_ignored = r == 0 ? ignored : 0;
    return r;
}

static int ledger__cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a;
    int64_t y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

/* Sorts and deduplicates @ids[0..n); returns the new count. */
static size_t ledger__unique(int64_t *ids, size_t n)
{
    size_t out = 0;

    if (n > 1)
        qsort(ids, n, sizeof(*ids), ledger__cmp_id);
    for (size_t i = 0; i < n; i++) {
        if (out == 0 || ids[out - 1] != ids[i])
            ids[out++] = ids[i];
    }
    return out;
}

/* Deletes the studies in @ids that nothing refers to any more. */
static int ledger__drop_studies(struct ledger__writer *w, int64_t *ids,
                                size_t n)
{
    n = ledger__unique(ids, n);
    for (size_t i = 0; i < n; i++) {
        sqlite3_stmt *st = w->st[LEDGER__P_STUDY_DEL];
        int r;

        (void)sqlite3_bind_int64(st, 1, ids[i]);
        r = ledger__run(w, st);
        if (r < 0)
            return r;
    }
    return 0;
}

/*
 * Deletes the oldest deliveries below @cutoff_key (at most one chunk) and
 * the series and studies left without any.
 */
static int ledger__prune_deliveries(struct ledger *lg, int64_t cutoff_key,
                                    uint64_t *ret_n)
{
    struct ledger__writer *w = &lg->w;
    sqlite3_stmt *st = w->st[LEDGER__P_DEL_SCAN];
    int64_t *series = w->scratch;
    int64_t *studies = w->scratch + lg->p.prune_chunk;
    size_t n_series = 0;
    size_t n_studies = 0;
    int64_t last = 0;
    uint64_t n = 0;
    int rc;
    int r = 0;

    (void)sqlite3_bind_int64(st, 1, cutoff_key);
    (void)sqlite3_bind_int64(st, 2, lg->p.prune_chunk);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t s = sqlite3_column_int64(st, 1);

        last = sqlite3_column_int64(st, 0);
        if (n_series == 0 || series[n_series - 1] != s)
            series[n_series++] = s;
        n++;
    }
    if (rc != SQLITE_DONE)
        r = ledger__fail(w, rc);
    (void)sqlite3_reset(st);
    (void)sqlite3_clear_bindings(st);
    if (r < 0 || n == 0)
        goto out;
    st = w->st[LEDGER__P_DEL_RANGE];
    (void)sqlite3_bind_int64(st, 1, last);
    r = ledger__run(w, st);
    n_series = ledger__unique(series, n_series);
    for (size_t i = 0; i < n_series && r == 0; i++) {
        int64_t study = 0;
        bool found;

        st = w->st[LEDGER__P_SERIES_STUDY];
        (void)sqlite3_bind_int64(st, 1, series[i]);
        r = ledger__run_id(w, st, &study, &found);
        if (r < 0 || !found)
            continue;
        st = w->st[LEDGER__P_SERIES_DEL];
        (void)sqlite3_bind_int64(st, 1, series[i]);
        r = ledger__run(w, st);
        if (r == 0 && sqlite3_changes(w->db) > 0)
            studies[n_studies++] = study;
    }
    if (r == 0)
        r = ledger__drop_studies(w, studies, n_studies);
out:
    *ret_n = r == 0 ? n : 0;
    return r;
}

/*
 * Deletes up to one chunk of items of the oldest transaction received
 * before @cutoff_ms, and the transaction once it has none left.
 * *@ret_any: there was such a transaction.
 */
static int ledger__prune_commits(struct ledger *lg, int64_t cutoff_ms,
                                 bool *ret_any, uint64_t *ret_items,
                                 uint64_t *ret_tx)
{
    struct ledger__writer *w = &lg->w;
    sqlite3_stmt *st = w->st[LEDGER__P_TX_OLDEST];
    int64_t *studies = w->scratch;
    size_t n_studies = 0;
    int64_t tx = 0;
    int64_t key = 0;
    int64_t pos = 0;
    uint64_t n = 0;
    bool found;
    int rc;
    int r;

    *ret_any = false;
    (void)sqlite3_bind_int64(st, 1, cutoff_ms);
    r = ledger__run_id(w, st, &tx, &found);
    if (r < 0 || !found)
        return r;
    *ret_any = true;
    st = w->st[LEDGER__P_ITEM_SCAN];
    (void)sqlite3_bind_int64(st, 1, tx);
    (void)sqlite3_bind_int64(st, 2, lg->p.prune_chunk);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        key = sqlite3_column_int64(st, 0);
        pos = sqlite3_column_int64(st, 1);
        if (sqlite3_column_type(st, 2) != SQLITE_NULL)
            studies[n_studies++] = sqlite3_column_int64(st, 2);
        n++;
    }
    if (rc != SQLITE_DONE)
        r = ledger__fail(w, rc);
    (void)sqlite3_reset(st);
    (void)sqlite3_clear_bindings(st);
    if (r == 0 && n > 0) {
        st = w->st[LEDGER__P_ITEM_DEL];
        (void)sqlite3_bind_int64(st, 1, tx);
        (void)sqlite3_bind_int64(st, 2, key);
        (void)sqlite3_bind_int64(st, 3, pos);
        r = ledger__run(w, st);
    }
    if (r == 0 && n < lg->p.prune_chunk) {
        st = w->st[LEDGER__P_TX_DEL];
        (void)sqlite3_bind_int64(st, 1, tx);
        r = ledger__run(w, st);
        if (r == 0 && sqlite3_changes(w->db) > 0)
            (*ret_tx)++;
    }
    if (r == 0)
        r = ledger__drop_studies(w, studies, n_studies);
    *ret_items = n;
    return r;
}

int ledger__prune_chunk(struct ledger *lg, int64_t cutoff_ms, bool *ret_more,
                        uint64_t *ret_deliveries, uint64_t *ret_commits,
                        bool *ret_deleted)
{
    struct ledger__writer *w = &lg->w;
    uint64_t deliveries = 0;
    uint64_t items = 0;
    uint64_t commits = 0;
    bool any = false;
    int r = ledger__check_broken(lg);

    *ret_more = false;
    *ret_deleted = false;
    if (r < 0)
        return r;
    r = ledger__run(w, w->st[LEDGER__W_BEGIN]);
    if (r == 0)
        r = ledger__prune_deliveries(lg, cutoff_ms << LEDGER__SEQ_BITS,
                                     &deliveries);
    if (r == 0 && deliveries == 0)
        r = ledger__prune_commits(lg, cutoff_ms, &any, &items, &commits);
    r = ledger__finish(w, r);
    /* Series and studies may be gone: look them up again. */
    ledger__forget(w, false);
    if (r < 0)
        return r;
    *ret_more = deliveries > 0 || any;
    *ret_deleted = deliveries > 0 || items > 0 || commits > 0;
    *ret_deliveries += deliveries;
    *ret_commits += commits;
    return 0;
}

int ledger__writer_prepare(struct ledger *lg, char *err, size_t err_len)
{
    struct ledger__writer *w = &lg->w;
    sqlite3_stmt *st;
    bool found;
    int r;

    w->last_key = -1;
    w->scratch = calloc(2 * (size_t)lg->p.prune_chunk, sizeof(*w->scratch));
    if (w->scratch == NULL) {
        ledger__err(err, err_len, "out of memory");
        return -ENOMEM;
    }
    for (int i = 0; i < LEDGER__W_COUNT; i++) {
        int rc = sqlite3_prepare_v3(w->db, ledger__wsql[i], -1,
                                    SQLITE_PREPARE_PERSISTENT, &w->st[i], NULL);

        if (rc != SQLITE_OK) {
            ledger__err(err, err_len, "ledger '%s': preparing \"%s\": %s",
                        lg->path, ledger__wsql[i], sqlite3_errmsg(w->db));
            return ledger__errno(w->db, rc);
        }
    }
    /* The greatest key so far (reads the end of the delivery table). */
    st = w->st[LEDGER__W_KEY_MAX];
    (void)sqlite3_bind_int64(st, 1, 0);
    (void)sqlite3_bind_int64(st, 2, INT64_MAX);
    r = ledger__run_id(w, st, &w->last_key, &found);
    if (r < 0) {
        ledger__err(err, err_len, "ledger '%s': %s", lg->path, w->errtext);
        return r;
    }
    if (!found)
        w->last_key = -1;
    return 0;
}

void ledger__writer_finalize(struct ledger *lg)
{
    struct ledger__writer *w = &lg->w;

    for (int i = 0; i < LEDGER__W_COUNT; i++) {
        (void)sqlite3_finalize(w->st[i]);
        w->st[i] = NULL;
    }
    ledger__forget(w, true);
    free(w->scratch);
    w->scratch = NULL;
    free(w->batch);
    w->batch = NULL;
}
