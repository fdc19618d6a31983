/* SPDX-License-Identifier: Apache-2.0 */
/*
 * commit - see commit.h.
 *
 * Threads: the engine resolves items and writes reports; one sender per
 * dicom.remote_aes entry delivers the reports of its AE, so an AE that
 * does not answer (up to dicom.timeout_s an attempt) delays only its own
 * reports; the engine keeps the reports of callers without an entry.
 *
 * Locking: cs->lock guards the transaction list, each item's result,
 * each transaction's state and the counters. A transaction has one
 * owner that may keep a pointer to it across unlocked work and is the
 * only one to remove it or change its state: the engine while it is
 * pending (TX_PENDING), then the sender of its caller's AE (TX_REPORT;
 * the engine when the caller has no entry). The handler only appends,
 * the delivery hook only resolves pending items. No file, network or
 * ledger call runs with the lock held, except the ledger's queueing calls
 * (a bounded copy under its own mutex).
 */
#include "commit.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/log.h"
#include "base/util.h"
#include "dicom/dataset.h"
#include "dicom/part10.h"
#include "dicom/tags.h"
#include "find.h"
#include "ledger/ledger.h"
#include "spool/spool.h"
#include "spool/txn.h"
#include "web/qido.h"

#define COMMIT_MAGIC "stowbridge-commit 1"
/* Pause after a failed QIDO-RS look-up of one instance. */
#define COMMIT_QIDO_RETRY_MS 30000
/* First pause after a failed report attempt; it doubles. */
#define COMMIT_REPORT_RETRY_MIN_S 2
/* The engine looks at deadlines and retries at least this often. */
#define COMMIT_TICK_MS 1000
/* A look at the spool and the server for the pending items at least this
 * often, and at once for a new request; a delivery only resolves its own
 * items (the hook), so a big backlog is not listed at every delivery. */
#define COMMIT_RESOLVE_EVERY_MS 5000
/* How long a report may keep trying after commit.max_wait_h. */
#define COMMIT_REPORT_EXTRA_H 24
#define COMMIT_PRUNE_EVERY_MS (3600 * 1000)
/* How often the engine looks at the ledger's health, and the longest
 * pause between two attempts to open it again. */
#define COMMIT_LEDGER_CHECK_MS 2000
#define COMMIT_LEDGER_BACKOFF_MAX_S 300
/* After a failed attempt to an AE, no report goes to it for this long,
 * doubling per failure in a row up to commit.report_retry_max_s: a
 * modality that is down is asked once per pause, not once per report. */
#define COMMIT_AE_HOLD_MIN_S 2
/* Deliveries remembered in memory, newest last: they cover the ledger's
 * batching window (an instance delivered just before the request is not
 * yet readable there) and a daemon running without a ledger. */
#define COMMIT_RECENT_MAX 8192

enum tx_state {
    TX_WRITING = 0, /* the handler is making it durable */
    TX_PENDING,     /* items still being resolved */
    TX_REPORT,      /* resolved; report written, not yet delivered */
};

struct commit_item {
    char cls[UTIL_UID_MAX + 1];
    char inst[UTIL_UID_MAX + 1];
    char study[UTIL_UID_MAX + 1];
    bool resolved;
    uint16_t reason; /* 0: committed */
    enum ledger_commit_basis basis;
    int64_t next_qido_ms;
};

struct commit_tx {
    char uid[UTIL_UID_MAX + 1];
    char caller[UTIL_AE_TITLE_MAX + 1];
    char peer[64];
    int64_t received_ms;
    struct commit_item *items;
    size_t n;
    size_t unresolved;
    enum tx_state state;
    unsigned attempts;
    int64_t next_attempt_ms;
    bool no_remote_logged;
    /* commit.same_association: the request's association is open and
     * its thread owns the report (report_take()/report_done()); the
     * results it was given. */
    bool on_assoc;
    struct scp_commit_result *assoc_results;
    struct commit_tx *next;
};

/* One recent delivery. */
struct commit_recent {
    char inst[UTIL_UID_MAX + 1];
    char cls[UTIL_UID_MAX + 1];
    char study[UTIL_UID_MAX + 1];
};

/* The thread that delivers the reports of one remote AE. */
struct commit_sender {
    struct commit_service *cs;
    const struct commit_remote *remote;
    pthread_t thread;
    bool started;
    pthread_cond_t cond; /* with cs->lock */
    bool kick;
    unsigned failures;     /* attempts failed in a row (network, ACSE) */
    int64_t hold_until_ms; /* no attempt before (after a failure) */
};

struct commit_service {
    struct commit_params p;
    struct commit_remote *remotes;
    struct commit_sender *senders;   /* one per remote */
    struct scp_outbound_tls out_tls; /* strings ours; with has_out_tls */
    bool has_out_tls;
    char *our_ae;
    char *destination;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    bool thread_started;
    bool sync_inited; /* lock, conds */
    bool stop;
    bool kick;
    bool kick_resolve; /* a new request: look at the spool now */
    int64_t last_resolve_ms;
    struct commit_tx *txs;
    struct commit_counts counts;
    int64_t last_prune_ms;
    uint64_t ledger_dropped_logged;

    /* The ledger (owned): the handle is swapped under the write lock;
     * every call on it holds the read lock (ledger_get()/ledger_put()).
     * The rest is the engine's. */
    pthread_rwlock_t ledger_lock;
    struct ledger *ledger;
    char *ledger_file; /* params->ledger_path; NULL: no ledger */
    uint64_t ledger_failed_seen;
    uint64_t ledger_written_at_open;
    bool ledger_down_logged; /* the ledger is down and that was said */
    unsigned ledger_backoff_s;
    int64_t ledger_next_open_ms;
    int64_t ledger_next_check_ms;
    struct commit_recent *recent; /* ring of COMMIT_RECENT_MAX */
    size_t recent_next;
    size_t recent_count;
};

/* The ledger for one call (NULL: none now); ledger_put() after it. */
static struct ledger *ledger_get(struct commit_service *cs)
{
    pthread_rwlock_rdlock(&cs->ledger_lock);
    return cs->ledger;
}

static void ledger_put(struct commit_service *cs)
{
    pthread_rwlock_unlock(&cs->ledger_lock);
}

/* Copies @src into @dst (capacity @size), cut to fit. */
static void copy_str(char *dst, size_t size, const char *src)
{
    size_t n = strnlen(src, size - 1);

    memcpy(dst, src, n);
    dst[n] = '\0';
}

static int64_t now_ms(void)
{
    return (int64_t)(util_now_realtime_us() / 1000);
}

static void tx_free(struct commit_tx *tx)
{
    if (tx == NULL)
        return;
    free(tx->assoc_results);
    free(tx->items);
    free(tx);
}

/* ------------------------------------------------------------------ */
/* Files                                                               */
/* ------------------------------------------------------------------ */

static void tx_file_name(const struct commit_tx *tx, bool report,
                         char name[SPOOL_TXN_NAME_MAX + 1])
{
    (void)snprintf(name, SPOOL_TXN_NAME_MAX + 1, "%s.%s", tx->uid,
                   report ? "rep" : "req");
}

/* The text of commit/<tx>.req or .rep (caller frees), or NULL. */
static char *tx_serialize(const struct commit_tx *tx, bool report,
                          size_t *ret_len)
{
    size_t cap = 512 + tx->n * (2 * UTIL_UID_MAX + 32);
    char *buf = malloc(cap);
    size_t len = 0;
    int n;

    if (buf == NULL)
        return NULL;
    n = snprintf(buf, cap,
                 COMMIT_MAGIC "\ntx %s\ncaller %s\npeer %s\nreceived_ms "
                              "%lld\n",
                 tx->uid, tx->caller, tx->peer, (long long)tx->received_ms);
    if (n < 0 || (size_t)n >= cap) {
        free(buf);
        return NULL;
    }
    len = (size_t)n;
    for (size_t i = 0; i < tx->n; i++) {
        const struct commit_item *it = &tx->items[i];

        if (report)
            n = snprintf(buf + len, cap - len, "item %s %s %04X %u\n", it->cls,
                         it->inst, (unsigned)it->reason, (unsigned)it->basis);
        else
            n = snprintf(buf + len, cap - len, "item %s %s\n", it->cls,
                         it->inst);
        if (n < 0 || (size_t)n >= cap - len) {
            free(buf);
            return NULL;
        }
        len += (size_t)n;
    }
    *ret_len = len;
    return buf;
}

/* Parses a file written by tx_serialize(); NULL when malformed. */
static struct commit_tx *tx_parse(const char *data, size_t len, bool report)
{
    struct commit_tx *tx = calloc(1, sizeof(*tx));
    size_t cap = 0;
    size_t pos = 0;
    bool magic = false;

    if (tx == NULL)
        return NULL;
    while (pos < len) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        size_t l = nl != NULL ? (size_t)(nl - (data + pos)) : len - pos;
        char line[256];
        char a[UTIL_UID_MAX + 2];
        char b[UTIL_UID_MAX + 2];
        unsigned reason = 0;
        unsigned basis = 0;
        long long ms = 0;

        if (l >= sizeof(line))
            goto out_bad;
        memcpy(line, data + pos, l);
        line[l] = '\0';
        pos += l + 1;
        if (!magic) {
            if (strcmp(line, COMMIT_MAGIC) != 0)
                goto out_bad;
            magic = true;
        } else if (sscanf(line, "tx %65s", a) == 1) {
            if (!util_uid_valid(a))
                goto out_bad;
            copy_str(tx->uid, sizeof(tx->uid), a);
        } else if (sscanf(line, "caller %16s", b) == 1) {
            copy_str(tx->caller, sizeof(tx->caller), b);
        } else if (strncmp(line, "peer ", 5) == 0) {
            copy_str(tx->peer, sizeof(tx->peer), line + 5);
        } else if (sscanf(line, "received_ms %lld", &ms) == 1) {
            tx->received_ms = ms;
        } else if (strncmp(line, "item ", 5) == 0) {
            int got =
                sscanf(line, "item %65s %65s %x %u", a, b, &reason, &basis);
            struct commit_item *it;

            if (got < 2 || (report && got != 4) || !util_uid_valid(a) ||
                !util_uid_valid(b) || reason > 0xFFFF)
                goto out_bad;
            if (tx->n == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                struct commit_item *ni = realloc(tx->items, ncap * sizeof(*ni));
                if (ni == NULL)
                    goto out_bad;
                tx->items = ni;
                cap = ncap;
            }
            it = &tx->items[tx->n++];
            memset(it, 0, sizeof(*it));
            copy_str(it->cls, sizeof(it->cls), a);
            copy_str(it->inst, sizeof(it->inst), b);
            if (report) {
                it->resolved = true;
                it->reason = (uint16_t)reason;
                it->basis = (enum ledger_commit_basis)basis;
            }
        } else if (line[0] != '\0') {
            goto out_bad;
        }
    }
    if (!magic || tx->uid[0] == '\0' || tx->caller[0] == '\0' || tx->n == 0)
        goto out_bad;
    tx->unresolved = report ? 0 : tx->n;
    tx->state = report ? TX_REPORT : TX_PENDING;
    return tx;

out_bad:
    tx_free(tx);
    return NULL;
}

/* Writes @tx's request or report file durably. */
static int tx_write(struct commit_service *cs, const struct commit_tx *tx,
                    bool report, unsigned flags, char *err, size_t err_len)
{
    char name[SPOOL_TXN_NAME_MAX + 1];
    size_t len = 0;
    char *text = tx_serialize(tx, report, &len);
    int r;

    if (text == NULL) {
        snprintf(err, err_len, "out of memory");
        return -ENOMEM;
    }
    tx_file_name(tx, report, name);
    r = spool_txn_write(cs->p.spool, name, text, len, flags, err, err_len);
    free(text);
    return r;
}

/* ------------------------------------------------------------------ */
/* The handler (association threads)                                   */
/* ------------------------------------------------------------------ */

static struct commit_tx *tx_find(struct commit_service *cs, const char *uid)
{
    for (struct commit_tx *tx = cs->txs; tx != NULL; tx = tx->next)
        if (strcmp(tx->uid, uid) == 0)
            return tx;
    return NULL;
}

static bool tx_same_items(const struct commit_tx *tx,
                          const struct scp_commit_request *rq)
{
    if (tx->n != rq->item_count)
        return false;
    for (size_t i = 0; i < tx->n; i++)
        if (strcmp(tx->items[i].cls, rq->items[i].sop_class_uid) != 0 ||
            strcmp(tx->items[i].inst, rq->items[i].sop_instance_uid) != 0)
            return false;
    return true;
}

/* Unlinks @tx from the list (lock held). */
static void tx_unlink(struct commit_service *cs, struct commit_tx *tx)
{
    for (struct commit_tx **pp = &cs->txs; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == tx) {
            *pp = tx->next;
            return;
        }
    }
}

/* Appends @tx at the end of the list (lock held): oldest first. */
static void tx_append(struct commit_service *cs, struct commit_tx *tx)
{
    struct commit_tx **pp = &cs->txs;

    while (*pp != NULL)
        pp = &(*pp)->next;
    tx->next = NULL;
    *pp = tx;
}

static void commit_kick(struct commit_service *cs)
{
    cs->kick = true;
    pthread_cond_signal(&cs->cond);
}

static int commit_request(void *ctx, const struct scp_commit_request *rq,
                          char *err, size_t err_len)
{
    struct commit_service *cs = ctx;
    struct commit_tx *tx;
    struct commit_tx *old;
    int r;

    tx = calloc(1, sizeof(*tx));
    if (tx == NULL ||
        (tx->items = calloc(rq->item_count, sizeof(*tx->items))) == NULL) {
        tx_free(tx);
        snprintf(err, err_len, "out of memory");
        return -ENOMEM;
    }
    copy_str(tx->uid, sizeof(tx->uid), rq->tx_uid);
    copy_str(tx->caller, sizeof(tx->caller), rq->calling_ae);
    copy_str(tx->peer, sizeof(tx->peer), rq->peer);
    tx->received_ms = now_ms();
    tx->n = rq->item_count;
    tx->unresolved = rq->item_count;
    tx->state = TX_WRITING;
    tx->on_assoc = rq->report_here && cs->p.same_association;
    for (size_t i = 0; i < rq->item_count; i++) {
        snprintf(tx->items[i].cls, sizeof(tx->items[i].cls), "%s",
                 rq->items[i].sop_class_uid);
        snprintf(tx->items[i].inst, sizeof(tx->items[i].inst), "%s",
                 rq->items[i].sop_instance_uid);
    }

    pthread_mutex_lock(&cs->lock);
    old = tx_find(cs, rq->tx_uid);
    if (old != NULL) {
        bool same = tx_same_items(old, rq);
        pthread_mutex_unlock(&cs->lock);
        tx_free(tx);
        snprintf(err, err_len, "Transaction UID %s is active", rq->tx_uid);
        return same ? -EALREADY : -EEXIST;
    }
    tx_append(cs, tx);
    pthread_mutex_unlock(&cs->lock);

    r = tx_write(cs, tx, false, SPOOL_TXN_EXCL, err, err_len);

    pthread_mutex_lock(&cs->lock);
    if (r < 0) {
        tx_unlink(cs, tx);
    } else {
        tx->state = TX_PENDING;
        cs->counts.requests++;
        cs->kick_resolve = true;
        commit_kick(cs);
    }
    pthread_mutex_unlock(&cs->lock);
    if (r < 0) {
        tx_free(tx);
        return r;
    }
    if (cs->ledger_file != NULL) {
        struct ledger_commit_ref *refs = calloc(rq->item_count, sizeof(*refs));
        if (refs != NULL) {
            for (size_t i = 0; i < rq->item_count; i++) {
                refs[i].sop_class_uid = rq->items[i].sop_class_uid;
                refs[i].sop_instance_uid = rq->items[i].sop_instance_uid;
            }
            r = ledger_record_commit_received(ledger_get(cs), rq->tx_uid,
                                              rq->calling_ae, tx->received_ms,
                                              refs, rq->item_count);
            ledger_put(cs);
            if (r < 0 && r != -ENODEV)
                log_warning("event=ledger-dropped tx=%s reason=\"the "
                            "ledger did not take the request (%d)\", "
                            "ignoring",
                            rq->tx_uid, r);
            free(refs);
        }
    }
    return 0;
}

/* The report of @tx, the association thread's to send (lock held). */
static int assoc_report(struct commit_service *cs, struct commit_tx *tx,
                        struct scp_commit_report *ret)
{
    struct scp_commit_result *res = calloc(tx->n, sizeof(*res));

    if (res == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < tx->n; i++) {
        res[i].sop_class_uid = tx->items[i].cls;
        res[i].sop_instance_uid = tx->items[i].inst;
        res[i].failure_reason = tx->items[i].reason;
    }
    free(tx->assoc_results);
    tx->assoc_results = res;
    ret->tx_uid = tx->uid;
    ret->retrieve_ae = cs->our_ae;
    ret->items = res;
    ret->item_count = tx->n;
    return 1;
}

static void report_reported(struct commit_service *cs, struct commit_tx *tx,
                            const char *to, const char *via);
static void sender_kick(struct commit_service *cs, const struct commit_tx *tx);
static void commit_report_done(void *ctx, const char *tx_uid, bool sent,
                               const char *why);

static int commit_report_take(void *ctx, const char *tx_uid,
                              struct scp_commit_report *ret_report)
{
    struct commit_service *cs = ctx;
    struct commit_tx *tx;
    int r = -ENOENT;

    pthread_mutex_lock(&cs->lock);
    tx = tx_find(cs, tx_uid);
    if (tx != NULL && tx->on_assoc)
        r = tx->state == TX_REPORT ? assoc_report(cs, tx, ret_report) : 0;
    pthread_mutex_unlock(&cs->lock);
    if (r == -ENOMEM) /* a new association then, from the sender */
        commit_report_done(cs, tx_uid, false, "out of memory");
    return r;
}

static void commit_report_done(void *ctx, const char *tx_uid, bool sent,
                               const char *why)
{
    struct commit_service *cs = ctx;
    struct commit_tx *tx;

    pthread_mutex_lock(&cs->lock);
    tx = tx_find(cs, tx_uid);
    if (tx == NULL || !tx->on_assoc) {
        pthread_mutex_unlock(&cs->lock);
        return;
    }
    free(tx->assoc_results);
    tx->assoc_results = NULL;
    if (!sent) {
        tx->on_assoc = false; /* the sender's (or engine's) from now on */
        tx->next_attempt_ms = 0;
        sender_kick(cs, tx);
        commit_kick(cs);
    }
    pthread_mutex_unlock(&cs->lock);
    if (sent) {
        /* Still on_assoc: nobody else touches it. */
        report_reported(cs, tx, tx->caller, "same-association");
        return;
    }
    if (why != NULL)
        log_warning("event=commit-report-deferred tx=%s to=%s "
                    "via=same-association reason=\"%s\", sending it on a "
                    "new association",
                    tx_uid, tx->caller, why);
    else
        log_info("event=commit-report-new-association tx=%s to=%s "
                 "reason=\"the request's association ended before the "
                 "report was ready\"",
                 tx_uid, tx->caller);
}

void commit_handler_init(struct commit_service *cs,
                         struct scp_commit_handler *ret_handler)
{
    memset(ret_handler, 0, sizeof(*ret_handler));
    ret_handler->ctx = cs;
    ret_handler->request = commit_request;
    if (cs->p.same_association) {
        ret_handler->report_take = commit_report_take;
        ret_handler->report_done = commit_report_done;
    }
}

/* ------------------------------------------------------------------ */
/* Resolution                                                          */
/* ------------------------------------------------------------------ */

/* Resolves @it (lock held); true if it was still pending. */
static bool item_resolve(struct commit_tx *tx, struct commit_item *it,
                         uint16_t reason, enum ledger_commit_basis basis,
                         const char *study)
{
    if (it->resolved)
        return false;
    it->resolved = true;
    it->reason = reason;
    it->basis = basis;
    if (study != NULL)
        copy_str(it->study, sizeof(it->study), study);
    tx->unresolved--;
    return true;
}

static void ledger_resolved(struct commit_service *cs, const char *tx_uid,
                            const struct commit_item *it)
{
    struct ledger_commit_resolution res;

    if (cs->ledger_file == NULL)
        return;
    memset(&res, 0, sizeof(res));
    res.tx_uid = tx_uid;
    res.sop_instance_uid = it->inst;
    res.study_uid = it->study;
    res.result = it->reason == 0 ? LEDGER_ITEM_COMMITTED : LEDGER_ITEM_FAILED;
    res.failure_reason = it->reason;
    res.basis = it->basis;
    res.resolved_ms = now_ms();
    (void)ledger_record_commit_resolved(ledger_get(cs), &res);
    ledger_put(cs);
}

void commit_note_delivered(void *ctx, const char *id,
                           const struct spool_meta *meta, bool already)
{
    struct commit_service *cs = ctx;
    struct part10_field f[2];
    char path[4096];
    char cls[UTIL_UID_MAX + 1] = "";
    char series[UTIL_UID_MAX + 1] = "";
    struct stat st;
    uint64_t arrival_us = 0;
    bool kicked = false;

    if (cs == NULL || meta == NULL || meta->sop_uid[0] == '\0')
        return;
    memset(f, 0, sizeof(f));
    f[0].tag = DCM_TAG_SOPClassUID;
    f[1].tag = DCM_TAG_SeriesInstanceUID;
    if (spool_entry_path(cs->p.spool, SPOOL_ACTIVE, id, path, sizeof(path)) ==
            0 &&
        part10_read_file(path, f, 2, NULL, NULL, 0) == 0) {
        if (f[0].value != NULL && util_uid_valid(f[0].value))
            copy_str(cls, sizeof(cls), f[0].value);
        if (f[1].value != NULL && util_uid_valid(f[1].value))
            copy_str(series, sizeof(series), f[1].value);
    }
    part10_fields_clear(f, 2);

    if (cs->ledger_file != NULL) {
        struct ledger_delivery d;
        int r;

        memset(&d, 0, sizeof(d));
        (void)spool_id_arrival_us(id, &arrival_us);
        d.sop_instance_uid = meta->sop_uid;
        d.sop_class_uid = cls;
        d.study_uid = meta->study_uid;
        d.series_uid = series;
        d.calling_ae = meta->calling_ae;
        d.destination = cs->destination;
        d.arrived_ms = (int64_t)(arrival_us / 1000);
        d.delivered_ms = now_ms();
        d.bytes = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
        d.outcome = already ? LEDGER_ALREADY_EXISTED : LEDGER_STORED;
        r = ledger_record_delivery(ledger_get(cs), &d);
        ledger_put(cs);
        if (r < 0 && r != -ENODEV)
            log_debug("id=%s event=ledger-dropped sop=%s reason=\"%d\"", id,
                      meta->sop_uid, r);
    }

    pthread_mutex_lock(&cs->lock);
    {
        struct commit_recent *r = &cs->recent[cs->recent_next];

        copy_str(r->inst, sizeof(r->inst), meta->sop_uid);
        copy_str(r->cls, sizeof(r->cls), cls);
        copy_str(r->study, sizeof(r->study), meta->study_uid);
        cs->recent_next = (cs->recent_next + 1) % COMMIT_RECENT_MAX;
        if (cs->recent_count < COMMIT_RECENT_MAX)
            cs->recent_count++;
    }
    for (struct commit_tx *tx = cs->txs; tx != NULL; tx = tx->next) {
        if (tx->state != TX_PENDING || tx->unresolved == 0)
            continue;
        for (size_t i = 0; i < tx->n; i++) {
            struct commit_item *it = &tx->items[i];
            uint16_t reason;

            if (it->resolved || strcmp(it->inst, meta->sop_uid) != 0)
                continue;
            reason = cls[0] != '\0' && strcmp(cls, it->cls) != 0 ? 0x0119 : 0;
            if (item_resolve(tx, it, reason, LEDGER_BASIS_DELIVERED,
                             meta->study_uid)) {
                ledger_resolved(cs, tx->uid, it);
                kicked = true;
            }
        }
    }
    if (kicked)
        commit_kick(cs);
    pthread_mutex_unlock(&cs->lock);
}

/* One instance of the spool, for the look-ups of a pass. */
struct spool_seen {
    char sop[UTIL_UID_MAX + 1];
    char id[SPOOL_ID_MAX];
    enum spool_state state;
};

static int seen_cmp(const void *a, const void *b)
{
    const struct spool_seen *x = a;
    const struct spool_seen *y = b;
    int c = strcmp(x->sop, y->sop);

    return c != 0 ? c : (int)x->state - (int)y->state;
}

/*
 * Every entry of the queue states and failed/ with its SOP Instance UID
 * (from meta/, or from the file for an entry the scheduler has not seen
 * yet), sorted by UID. An entry that moves while it is read may be missed
 * (see the second look in resolve_pass()).
 */
static int spool_scan(struct commit_service *cs, struct spool_seen **ret,
                      size_t *ret_n)
{
    static const enum spool_state states[] = {
        SPOOL_INCOMING,
        SPOOL_ACTIVE,
        SPOOL_DEFERRED,
        SPOOL_FAILED,
    };
    struct spool_seen *seen = NULL;
    size_t n = 0;
    size_t cap = 0;

    for (size_t s = 0; s < sizeof(states) / sizeof(states[0]); s++) {
        struct spool_entry *e = NULL;
        size_t count = 0;
        char err[256];

        if (spool_list(cs->p.spool, states[s], &e, &count, err, sizeof(err)) <
            0) {
            log_warning("event=commit-scan-failed reason=\"%s\", will retry",
                        err);
            free(seen);
            return -EIO;
        }
        for (size_t i = 0; i < count; i++) {
            struct spool_meta meta;

            if (spool_meta_read(cs->p.spool, e[i].id, &meta) < 0 ||
                meta.sop_uid[0] == '\0') {
                /* Not seen by the scheduler yet: read the entry. */
                struct part10_field f;
                char path[4096];

                memset(&f, 0, sizeof(f));
                f.tag = DCM_TAG_SOPInstanceUID;
                meta.sop_uid[0] = '\0';
                if (spool_entry_path(cs->p.spool, states[s], e[i].id, path,
                                     sizeof(path)) == 0 &&
                    part10_read_file(path, &f, 1, NULL, NULL, 0) == 0 &&
                    f.value != NULL && util_uid_valid(f.value))
                    copy_str(meta.sop_uid, sizeof(meta.sop_uid), f.value);
                part10_fields_clear(&f, 1);
                if (meta.sop_uid[0] == '\0')
                    continue;
            }
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 256;
                struct spool_seen *ns = realloc(seen, ncap * sizeof(*ns));
                if (ns == NULL) {
                    free(e);
                    free(seen);
                    return -ENOMEM;
                }
                seen = ns;
                cap = ncap;
            }
            copy_str(seen[n].sop, sizeof(seen[n].sop), meta.sop_uid);
            copy_str(seen[n].id, sizeof(seen[n].id), e[i].id);
            seen[n].state = states[s];
            n++;
        }
        free(e);
    }
    if (n > 1)
        qsort(seen, n, sizeof(*seen), seen_cmp);
    *ret = seen;
    *ret_n = n;
    return 0;
}

/* Where @sop is in the scan: 1 queued, 2 failed only (@ret_id), 0 not. */
static int spool_where(const struct spool_seen *seen, size_t n, const char *sop,
                       const char **ret_id)
{
    size_t lo = 0;
    size_t hi = n;
    bool failed = false;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(seen[mid].sop, sop) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t i = lo; i < n && strcmp(seen[i].sop, sop) == 0; i++) {
        if (seen[i].state != SPOOL_FAILED)
            return 1;
        if (!failed)
            *ret_id = seen[i].id;
        failed = true;
    }
    return failed ? 2 : 0;
}

/* What one QIDO-RS look-up found. */
enum qido_found {
    QIDO_ERROR = 0,
    QIDO_ABSENT,
    QIDO_SAME_CLASS,
    QIDO_OTHER_CLASS,
};

static enum qido_found qido_lookup(struct commit_service *cs,
                                   const struct commit_item *it)
{
    struct qido_url url;
    struct find_reply reply;
    struct ds **results = NULL;
    size_t count = 0;
    char err[256];
    enum qido_found found = QIDO_ERROR;
    int r;

    qido_url_init(&url, "/instances");
    qido_url_add(&url, "SOPInstanceUID", it->inst, 0);
    qido_url_add(&url, "includefield", "00080016", 0);
    if (qido_url_error(&url)) {
        qido_url_free(&url);
        return QIDO_ERROR;
    }
    memset(&reply, 0, sizeof(reply));
    r = find_web_fetch(cs->p.web, qido_url_text(&url), &reply);
    pthread_mutex_lock(&cs->lock);
    cs->counts.qido_lookups++;
    pthread_mutex_unlock(&cs->lock);
    qido_url_free(&url);
    if (r < 0 || reply.http_status == 0) {
        log_warning("event=commit-lookup-failed sop=%s reason=\"%s\", will "
                    "retry",
                    it->inst, reply.error[0] ? reply.error : "no answer");
        goto out;
    }
    if (reply.http_status == 204 || reply.http_status == 404) {
        found = QIDO_ABSENT;
        goto out;
    }
    if (reply.http_status != 200) {
        log_warning("event=commit-lookup-failed sop=%s status=%ld "
                    "reason=\"HTTP error status\", will retry",
                    it->inst, reply.http_status);
        goto out;
    }
    if (qido_parse_results(reply.body, reply.body_len, &results, &count, err,
                           sizeof(err)) < 0) {
        log_warning("event=commit-lookup-failed sop=%s reason=\"answer "
                    "not DICOM JSON: %s\", will retry",
                    it->inst, err);
        goto out;
    }
    found = QIDO_ABSENT;
    for (size_t i = 0; i < count; i++) {
        const char *uid = ds_value(results[i], DCM_TAG_SOPInstanceUID);
        const char *cls = ds_value(results[i], DCM_TAG_SOPClassUID);

        if (uid != NULL && strcmp(uid, it->inst) != 0)
            continue;
        /* A server that leaves the class out: present is all we know. */
        if (cls == NULL || cls[0] == '\0' || strcmp(cls, it->cls) == 0) {
            found = QIDO_SAME_CLASS;
            break;
        }
        found = QIDO_OTHER_CLASS;
    }
    qido_results_free(results, count);
out:
    find_reply_free(&reply);
    return found;
}

/* One pending item taken out of the list for a pass. */
struct work {
    struct commit_tx *tx;
    size_t index;
    struct commit_item copy; /* its UIDs, read without the lock */
    int64_t received_ms;
    bool done;
    uint16_t reason;
    enum ledger_commit_basis basis;
    char study[UTIL_UID_MAX + 1];
    bool maybe_absent; /* QIDO said absent: look at the spool again */
    bool qido_failed;
};

static void work_set(struct work *w, uint16_t reason,
                     enum ledger_commit_basis basis, const char *study)
{
    w->done = true;
    w->reason = reason;
    w->basis = basis;
    if (study != NULL)
        copy_str(w->study, sizeof(w->study), study);
}

/* Resolves what can be resolved among the pending items. */
static void resolve_pass(struct commit_service *cs)
{
    struct work *work = NULL;
    size_t n = 0;
    size_t cap = 0;
    struct spool_seen *seen = NULL;
    size_t seen_n = 0;
    int64_t now = now_ms();
    bool need_second_scan = false;
    uint64_t free_mb = 0;

    pthread_mutex_lock(&cs->lock);
    for (struct commit_tx *tx = cs->txs; tx != NULL; tx = tx->next) {
        if (tx->state != TX_PENDING || tx->unresolved == 0)
            continue;
        for (size_t i = 0; i < tx->n; i++) {
            if (tx->items[i].resolved)
                continue;
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 64;
                struct work *nw = realloc(work, ncap * sizeof(*nw));
                if (nw == NULL)
                    break;
                work = nw;
                cap = ncap;
            }
            memset(&work[n], 0, sizeof(work[n]));
            work[n].tx = tx;
            work[n].index = i;
            work[n].copy = tx->items[i];
            work[n].received_ms = tx->received_ms;
            n++;
        }
    }
    pthread_mutex_unlock(&cs->lock);
    if (n == 0) {
        free(work);
        return;
    }

    /* 1. Delivered by us, as the ledger knows. */
    for (size_t i = 0; i < n && cs->ledger_file != NULL; i++) {
        struct ledger_instance li;
        int found =
            ledger_find_instance(ledger_get(cs), work[i].copy.inst, &li);

        ledger_put(cs);
        if (found != 0)
            continue;
        work_set(&work[i],
                 li.sop_class_uid[0] != '\0' &&
                         strcmp(li.sop_class_uid, work[i].copy.cls) != 0
                     ? 0x0119
                     : 0,
                 LEDGER_BASIS_DELIVERED, li.study_uid);
    }
    /* 1b. Delivered by us moments ago (not yet readable in the ledger). */
    pthread_mutex_lock(&cs->lock);
    for (size_t i = 0; i < n; i++) {
        if (work[i].done)
            continue;
        for (size_t k = 0; k < cs->recent_count; k++) {
            const struct commit_recent *r = &cs->recent[k];

            if (strcmp(r->inst, work[i].copy.inst) != 0)
                continue;
            work_set(&work[i],
                     r->cls[0] != '\0' && strcmp(r->cls, work[i].copy.cls) != 0
                         ? 0x0119
                         : 0,
                     LEDGER_BASIS_DELIVERED, r->study);
            break;
        }
    }
    pthread_mutex_unlock(&cs->lock);
    /* 2. In the spool: queued waits, failed/ fails. */
    if (spool_scan(cs, &seen, &seen_n) < 0) {
        free(work);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const char *id = NULL;
        int where;

        if (work[i].done)
            continue;
        where = spool_where(seen, seen_n, work[i].copy.inst, &id);
        if (where == 1)
            continue;
        if (where == 2) {
            log_notice("id=%s event=commit-failed tx=%s sop=%s reason=0110 "
                       "why=\"the instance is in failed/\"",
                       id, work[i].tx->uid, work[i].copy.inst);
            work_set(&work[i], 0x0110, LEDGER_BASIS_FAILED_ENTRY, NULL);
            continue;
        }
        /* 3. Unknown to us: ask the server. */
        if (cs->p.web == NULL || now < work[i].copy.next_qido_ms) {
            work[i].qido_failed = cs->p.web != NULL;
            continue;
        }
        switch (qido_lookup(cs, &work[i].copy)) {
        case QIDO_SAME_CLASS:
            work_set(&work[i], 0, LEDGER_BASIS_SERVER, NULL);
            break;
        case QIDO_OTHER_CLASS:
            work_set(&work[i], 0x0119, LEDGER_BASIS_SERVER, NULL);
            break;
        case QIDO_ABSENT:
            work[i].maybe_absent = true;
            need_second_scan = true;
            break;
        case QIDO_ERROR:
            work[i].qido_failed = true;
            break;
        }
    }
    /* An entry moving between two states while the spool was listed can
     * be missed once: believe "absent" only if a second look agrees. */
    if (need_second_scan) {
        free(seen);
        seen = NULL;
        seen_n = 0;
        if (spool_scan(cs, &seen, &seen_n) == 0) {
            for (size_t i = 0; i < n; i++) {
                const char *id = NULL;

                if (!work[i].maybe_absent)
                    continue;
                if (spool_where(seen, seen_n, work[i].copy.inst, &id) == 0)
                    work_set(&work[i], 0x0112, LEDGER_BASIS_SERVER, NULL);
            }
        }
    }
    free(seen);
    /* 4. Past commit.max_wait_h. */
    (void)spool_free_mb(cs->p.spool, &free_mb);
    for (size_t i = 0; i < n; i++) {
        if (work[i].done ||
            now - work[i].received_ms < (int64_t)cs->p.max_wait_h * 3600 * 1000)
            continue;
        work_set(&work[i], free_mb < cs->p.min_free_mb ? 0x0213 : 0x0110,
                 LEDGER_BASIS_DEADLINE, NULL);
    }

    pthread_mutex_lock(&cs->lock);
    for (size_t i = 0; i < n; i++) {
        struct commit_item *it = &work[i].tx->items[work[i].index];

        if (work[i].qido_failed && !work[i].done)
            it->next_qido_ms = now + COMMIT_QIDO_RETRY_MS;
        if (!work[i].done)
            continue;
        if (item_resolve(work[i].tx, it, work[i].reason, work[i].basis,
                         work[i].study[0] ? work[i].study : NULL))
            ledger_resolved(cs, work[i].tx->uid, it);
    }
    pthread_mutex_unlock(&cs->lock);
    free(work);
}

/* ------------------------------------------------------------------ */
/* Reports                                                             */
/* ------------------------------------------------------------------ */

static const struct commit_remote *remote_for(struct commit_service *cs,
                                              const char *ae)
{
    for (size_t i = 0; i < cs->p.remote_count; i++)
        if (strcmp(cs->remotes[i].ae_title, ae) == 0)
            return &cs->remotes[i];
    return NULL;
}

/* The sender of @ae's reports, or NULL when @ae has no entry. */
static struct commit_sender *sender_for(struct commit_service *cs,
                                        const char *ae)
{
    for (size_t i = 0; i < cs->p.remote_count; i++)
        if (strcmp(cs->remotes[i].ae_title, ae) == 0)
            return &cs->senders[i];
    return NULL;
}

/* Wakes the sender of @tx's caller (lock held). */
static void sender_kick(struct commit_service *cs, const struct commit_tx *tx)
{
    struct commit_sender *s = sender_for(cs, tx->caller);

    if (s != NULL) {
        s->kick = true;
        pthread_cond_signal(&s->cond);
    }
}

static void tx_counts(const struct commit_tx *tx, size_t *ret_ok,
                      size_t *ret_failed)
{
    size_t ok = 0;

    for (size_t i = 0; i < tx->n; i++)
        ok += tx->items[i].reason == 0;
    *ret_ok = ok;
    *ret_failed = tx->n - ok;
}

/* Writes the report of resolved @tx and removes its request file. */
static void report_write(struct commit_service *cs, struct commit_tx *tx)
{
    char name[SPOOL_TXN_NAME_MAX + 1];
    char err[512];
    size_t ok = 0;
    size_t failed = 0;
    int r = tx_write(cs, tx, true, 0, err, sizeof(err));

    if (r < 0) {
        log_err("event=commit-report-unwritten tx=%s reason=\"%s\", will "
                "retry",
                tx->uid, err);
        return;
    }
    tx_file_name(tx, false, name);
    r = spool_txn_remove(cs->p.spool, name, err, sizeof(err));
    if (r < 0 && r != -ENOENT)
        log_warning("event=commit-request-left tx=%s reason=\"%s\", "
                    "ignoring",
                    tx->uid, err);
    tx_counts(tx, &ok, &failed);
    log_info("event=commit-resolved tx=%s from=%s items=%zu committed=%zu "
             "failed=%zu",
             tx->uid, tx->caller, tx->n, ok, failed);
    pthread_mutex_lock(&cs->lock);
    tx->state = TX_REPORT;
    tx->attempts = 0;
    tx->next_attempt_ms = 0;
    sender_kick(cs, tx);
    pthread_mutex_unlock(&cs->lock);
}

/* Removes @tx's report file and the transaction (engine thread). */
static void tx_finish(struct commit_service *cs, struct commit_tx *tx)
{
    char name[SPOOL_TXN_NAME_MAX + 1];
    char err[512];
    int r;

    tx_file_name(tx, true, name);
    r = spool_txn_remove(cs->p.spool, name, err, sizeof(err));
    if (r < 0 && r != -ENOENT)
        log_err("event=commit-report-left tx=%s reason=\"%s\"", tx->uid, err);
    pthread_mutex_lock(&cs->lock);
    tx_unlink(cs, tx);
    pthread_mutex_unlock(&cs->lock);
    tx_free(tx);
}

/* The pause after @failures attempts failed in a row: 2 s doubling, at
 * most commit.report_retry_max_s. */
static unsigned retry_pause_s(const struct commit_service *cs,
                              unsigned failures)
{
    unsigned pause_s = COMMIT_REPORT_RETRY_MIN_S;

    for (unsigned a = 0; a < failures && pause_s < cs->p.report_retry_max_s;
         a++)
        pause_s *= 2;
    return pause_s > cs->p.report_retry_max_s ? cs->p.report_retry_max_s
                                              : pause_s;
}

/* The report of @tx was accepted (by its owner): logged, recorded in the
 * ledger, and the transaction finished. */
static void report_reported(struct commit_service *cs, struct commit_tx *tx,
                            const char *to, const char *via)
{
    size_t ok = 0;
    size_t failed = 0;

    tx_counts(tx, &ok, &failed);
    log_info("event=commit-reported tx=%s to=%s via=%s event_type=%u "
             "items=%zu committed=%zu failed=%zu attempts=%u",
             tx->uid, to, via, failed ? 2u : 1u, tx->n, ok, failed,
             tx->attempts + 1);
    if (cs->ledger_file != NULL) {
        (void)ledger_record_commit_reported(ledger_get(cs), tx->uid,
                                            failed ? 2u : 1u, now_ms());
        ledger_put(cs);
    }
    pthread_mutex_lock(&cs->lock);
    cs->counts.reports_sent++;
    pthread_mutex_unlock(&cs->lock);
    tx_finish(cs, tx);
}

/* One attempt to deliver the report of @tx, by its owner: @sender (the
 * caller's AE) or the engine (NULL: no dicom.remote_aes entry). */
static void report_send(struct commit_service *cs, struct commit_sender *sender,
                        struct commit_tx *tx)
{
    const struct commit_remote *remote = remote_for(cs, tx->caller);
    struct scp_commit_result *results;
    struct scp_commit_report rep;
    struct scp_remote to;
    int64_t now = now_ms();
    int64_t give_up =
        tx->received_ms +
        ((int64_t)cs->p.max_wait_h + COMMIT_REPORT_EXTRA_H) * 3600 * 1000;
    uint16_t status = 0;
    char err[512] = "";
    size_t ok = 0;
    size_t failed = 0;
    unsigned pause_s;
    int r = -EHOSTUNREACH;

    if (now > give_up) {
        log_err("event=commit-report-abandoned tx=%s to=%s attempts=%u "
                "reason=\"not delivered within commit.max_wait_h + %d h\"",
                tx->uid, tx->caller, tx->attempts, COMMIT_REPORT_EXTRA_H);
        tx_finish(cs, tx);
        return;
    }
    tx_counts(tx, &ok, &failed);
    if (remote == NULL) {
        if (!tx->no_remote_logged)
            log_err("event=commit-report-waiting tx=%s to=%s reason=\"no "
                    "dicom.remote_aes entry for this AE title; add one and "
                    "restart\"",
                    tx->uid, tx->caller);
        tx->no_remote_logged = true;
        snprintf(err, sizeof(err), "no address");
    } else {
        results = calloc(tx->n, sizeof(*results));
        if (results == NULL) {
            snprintf(err, sizeof(err), "out of memory");
            r = -ENOMEM;
        } else {
            for (size_t i = 0; i < tx->n; i++) {
                results[i].sop_class_uid = tx->items[i].cls;
                results[i].sop_instance_uid = tx->items[i].inst;
                results[i].failure_reason = tx->items[i].reason;
            }
            rep.tx_uid = tx->uid;
            rep.retrieve_ae = cs->our_ae;
            rep.items = results;
            rep.item_count = tx->n;
            to.ae_title = remote->ae_title;
            to.host = remote->host;
            to.port = remote->port;
            to.tls = remote->tls;
            to.certificate_sha256 = remote->certificate_sha256;
            r = scp_commit_send_report(
                cs->our_ae, &to, cs->has_out_tls ? &cs->out_tls : NULL, &rep,
                cs->p.timeout_s, &status, err, sizeof(err));
            free(results);
        }
        if (r < 0 && sender != NULL) {
            /* The AE did not answer or refused the association: hold
             * its other reports too. */
            pthread_mutex_lock(&cs->lock);
            sender->hold_until_ms =
                now + (int64_t)retry_pause_s(cs, sender->failures) * 1000;
            sender->failures++;
            pthread_mutex_unlock(&cs->lock);
        } else if (sender != NULL) {
            pthread_mutex_lock(&cs->lock);
            sender->failures = 0;
            sender->hold_until_ms = 0;
            pthread_mutex_unlock(&cs->lock);
        }
        if (r == 0 && status == 0) {
            char where[UTIL_AE_TITLE_MAX + 300];

            snprintf(where, sizeof(where), "%s@%s:%u", remote->ae_title,
                     remote->host, (unsigned)remote->port);
            report_reported(cs, tx, where, "new-association");
            return;
        }
        if (r == 0)
            snprintf(err, sizeof(err), "the peer answered status %04X",
                     (unsigned)status);
    }
    pause_s = retry_pause_s(cs, tx->attempts);
    if (remote != NULL)
        log_warning("event=commit-report-deferred tx=%s to=%s@%s:%u "
                    "attempts=%u next=%us reason=\"%s\", will retry",
                    tx->uid, remote->ae_title, remote->host,
                    (unsigned)remote->port, tx->attempts + 1, pause_s, err);
    tx->attempts++;
    tx->next_attempt_ms = now + (int64_t)pause_s * 1000;
}

/* ------------------------------------------------------------------ */
/* The ledger's health                                                 */
/* ------------------------------------------------------------------ */

/*
 * Opens the ledger at cs->ledger_file and puts it in place (engine, or
 * commit_start() before the threads). Logs the outcome only when the
 * state changes: the first failure of a run of failures, and the first
 * success after one.
 */
static void ledger_try_open(struct commit_service *cs, int64_t now)
{
    struct ledger_params lp;
    struct ledger_stats st;
    struct ledger *lg = NULL;
    char err[512];
    int r;

    memset(&lp, 0, sizeof(lp));
    lp.path = cs->ledger_file;
    lp.flags = LEDGER_OPEN_RECOVER;
    r = ledger_open(&lp, &lg, err, sizeof(err));
    if (r < 0) {
        if (!cs->ledger_down_logged)
            log_warning("event=ledger-unavailable path=%s reason=\"%s\", "
                        "retrying (every %u s at most): deliveries are not "
                        "recorded meanwhile and commitment asks the server",
                        cs->ledger_file, err, COMMIT_LEDGER_BACKOFF_MAX_S);
        else
            log_debug("event=ledger-unavailable path=%s reason=\"%s\"",
                      cs->ledger_file, err);
        cs->ledger_down_logged = true;
        cs->ledger_next_open_ms = now + (int64_t)cs->ledger_backoff_s * 1000;
        cs->ledger_backoff_s =
            cs->ledger_backoff_s * 2 > COMMIT_LEDGER_BACKOFF_MAX_S
                ? COMMIT_LEDGER_BACKOFF_MAX_S
                : cs->ledger_backoff_s * 2;
        return;
    }
    if (ledger_moved_aside(lg) != NULL)
        log_warning("event=ledger-moved-aside path=%s to=%s reason=\"%s\"",
                    cs->ledger_file, ledger_moved_aside(lg),
                    ledger_moved_aside_reason(lg));
    memset(&st, 0, sizeof(st));
    (void)ledger_stats(lg, &st);
    cs->ledger_failed_seen = st.failed;
    cs->ledger_written_at_open = st.written;
    pthread_rwlock_wrlock(&cs->ledger_lock);
    cs->ledger = lg;
    pthread_rwlock_unlock(&cs->ledger_lock);
    pthread_mutex_lock(&cs->lock);
    if (cs->ledger_down_logged)
        cs->counts.ledger_reopens++;
    pthread_mutex_unlock(&cs->lock);
    if (cs->ledger_down_logged)
        log_notice("event=ledger-reopened path=%s: deliveries are recorded "
                   "again",
                   cs->ledger_file);
    else
        log_info("event=ledger-open path=%s keep_days=%u", cs->ledger_file,
                 cs->p.keep_days);
    cs->ledger_down_logged = false;
}

/*
 * Why the open ledger @lg can no longer be used, in @why (NULL: it is
 * fine): the writer found it corrupt or its header was overwritten
 * (*@ret_corrupt), its writes fail with I/O errors, or its file was
 * removed or replaced (SQLite would go on writing into the removed file).
 */
static const char *ledger_trouble(struct commit_service *cs, struct ledger *lg,
                                  char *why, size_t len, bool *ret_corrupt)
{
    struct ledger_stats st;
    int r;

    *ret_corrupt = false;
    if (ledger_stats(lg, &st) == 0) {
        bool new_failures = st.failed > cs->ledger_failed_seen;

        cs->ledger_failed_seen = st.failed;
        if (st.broken) {
            *ret_corrupt = true;
            snprintf(why, len, "corrupt: %s", st.last_error_text);
            return why;
        }
        if (new_failures && st.last_error == -EIO) {
            snprintf(why, len, "I/O error: %s", st.last_error_text);
            return why;
        }
        /* Healthy and writing since it was opened: the next trouble
         * starts from the shortest pause again. */
        if (st.written > cs->ledger_written_at_open && !new_failures)
            cs->ledger_backoff_s = 1;
    }
    r = ledger_check_file(lg, why, len);
    if (r == -EUCLEAN)
        *ret_corrupt = true;
    return r < 0 && r != -ENODEV ? why : NULL;
}

/*
 * Every COMMIT_LEDGER_CHECK_MS (engine): a ledger in trouble is closed
 * (moved aside when corrupt) and opened again; a ledger that could not be
 * opened is tried again with a pause doubling from 1 s up to
 * COMMIT_LEDGER_BACKOFF_MAX_S. The ledger is not the spool: meanwhile
 * deliveries go on and commitment asks the server.
 */
static void ledger_watch(struct commit_service *cs, int64_t now)
{
    struct ledger *lg;
    char why[256];
    bool corrupt = false;

    if (cs->ledger_file == NULL || now < cs->ledger_next_check_ms)
        return;
    cs->ledger_next_check_ms = now + COMMIT_LEDGER_CHECK_MS;
    lg = cs->ledger; /* only the engine changes it */
    if (lg != NULL) {
        if (ledger_trouble(cs, lg, why, sizeof(why), &corrupt) == NULL)
            return;
        log_err("event=ledger-broken path=%s reason=\"%s\", reopening it: "
                "deliveries go on, commitment asks the server meanwhile",
                cs->ledger_file, why);
        cs->ledger_down_logged = true;
        pthread_rwlock_wrlock(&cs->ledger_lock);
        cs->ledger = NULL;
        pthread_rwlock_unlock(&cs->ledger_lock);
        ledger_close(lg);
        if (corrupt) {
            char moved[4200];
            char err[512];

            if (ledger_move_aside(cs->ledger_file, moved, sizeof(moved), err,
                                  sizeof(err)) == 0)
                log_warning("event=ledger-moved-aside path=%s to=%s "
                            "reason=\"corrupt\"",
                            cs->ledger_file, moved);
            else
                log_warning("event=ledger-move-failed path=%s reason=\"%s\"",
                            cs->ledger_file, err);
        }
        cs->ledger_next_open_ms = now + (int64_t)cs->ledger_backoff_s * 1000;
        cs->ledger_backoff_s =
            cs->ledger_backoff_s * 2 > COMMIT_LEDGER_BACKOFF_MAX_S
                ? COMMIT_LEDGER_BACKOFF_MAX_S
                : cs->ledger_backoff_s * 2;
        return;
    }
    if (now >= cs->ledger_next_open_ms)
        ledger_try_open(cs, now);
}

/* ------------------------------------------------------------------ */
/* The engine                                                          */
/* ------------------------------------------------------------------ */

static void engine_pass(struct commit_service *cs, bool resolve)
{
    struct commit_tx *due_now[64];
    size_t n;
    int64_t now = now_ms();

    ledger_watch(cs, now);
    if (cs->p.keep_days > 0 &&
        now - cs->last_prune_ms >= COMMIT_PRUNE_EVERY_MS) {
        struct ledger *lg = ledger_get(cs);
        struct ledger_stats st;

        if (lg != NULL) {
            cs->last_prune_ms = now;
            (void)ledger_prune(lg,
                               now - (int64_t)cs->p.keep_days * 86400 * 1000);
            /* Said once an hour at most: the ledger never stops delivery. */
            if (ledger_stats(lg, &st) == 0 &&
                st.dropped + st.failed > cs->ledger_dropped_logged) {
                log_warning("event=ledger-lost dropped=%llu failed=%llu "
                            "reason=\"%s\", ignoring",
                            (unsigned long long)st.dropped,
                            (unsigned long long)st.failed, st.last_error_text);
                cs->ledger_dropped_logged = st.dropped + st.failed;
            }
        }
        ledger_put(cs);
    }
    if (resolve)
        resolve_pass(cs);

    /* Resolved transactions: write their reports (at most 64 a pass;
     * one not written, the disk full, is tried again next pass). */
    n = 0;
    pthread_mutex_lock(&cs->lock);
    for (struct commit_tx *t = cs->txs; t != NULL && n < 64; t = t->next)
        if (t->state == TX_PENDING && t->unresolved == 0)
            due_now[n++] = t;
    pthread_mutex_unlock(&cs->lock);
    for (size_t i = 0; i < n; i++)
        report_write(cs, due_now[i]);

    /* Reports due whose caller has no dicom.remote_aes entry (the
     * engine's: they only log and wait to be abandoned). The senders
     * deliver the others. */
    n = 0;
    pthread_mutex_lock(&cs->lock);
    for (struct commit_tx *t = cs->txs; t != NULL && n < 64; t = t->next)
        /* Owner first: another's next_attempt_ms is not ours to read. */
        if (t->state == TX_REPORT && sender_for(cs, t->caller) == NULL &&
            !t->on_assoc && t->next_attempt_ms <= now)
            due_now[n++] = t;
    pthread_mutex_unlock(&cs->lock);
    for (size_t i = 0; i < n; i++)
        report_send(cs, NULL, due_now[i]);
}

/*
 * The oldest report of @s's AE due now (lock held), or NULL; sets
 * *@ret_wait_ms to how long to sleep when there is none.
 */
static struct commit_tx *sender_pick(struct commit_sender *s, int64_t now,
                                     int64_t *ret_wait_ms)
{
    struct commit_service *cs = s->cs;
    int64_t wait = COMMIT_TICK_MS;

    if (now < s->hold_until_ms) {
        *ret_wait_ms =
            s->hold_until_ms - now < wait ? s->hold_until_ms - now : wait;
        return NULL;
    }
    for (struct commit_tx *t = cs->txs; t != NULL; t = t->next) {
        if (t->state != TX_REPORT || t->on_assoc ||
            strcmp(t->caller, s->remote->ae_title))
            continue;
        if (t->next_attempt_ms <= now)
            return t;
        if (t->next_attempt_ms - now < wait)
            wait = t->next_attempt_ms - now;
    }
    *ret_wait_ms = wait;
    return NULL;
}

static void *sender_main(void *arg)
{
    struct commit_sender *s = arg;
    struct commit_service *cs = s->cs;

    pthread_mutex_lock(&cs->lock);
    while (!cs->stop) {
        int64_t wait_ms = 0;
        struct commit_tx *tx = sender_pick(s, now_ms(), &wait_ms);

        if (tx != NULL) {
            pthread_mutex_unlock(&cs->lock);
            report_send(cs, s, tx);
            pthread_mutex_lock(&cs->lock);
            continue;
        }
        if (!s->kick) {
            struct timespec ts;

            clock_gettime(CLOCK_MONOTONIC, &ts);
            if (wait_ms < 10)
                wait_ms = 10;
            ts.tv_sec += wait_ms / 1000;
            ts.tv_nsec += (wait_ms % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            (void)pthread_cond_timedwait(&s->cond, &cs->lock, &ts);
        }
        s->kick = false;
    }
    pthread_mutex_unlock(&cs->lock);
    return NULL;
}

static void *engine_main(void *arg)
{
    struct commit_service *cs = arg;

    pthread_mutex_lock(&cs->lock);
    while (!cs->stop) {
        if (!cs->kick) {
            struct timespec ts;

            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += COMMIT_TICK_MS / 1000;
            (void)pthread_cond_timedwait(&cs->cond, &cs->lock, &ts);
        }
        cs->kick = false;
        if (cs->stop)
            break;
        bool resolve = cs->kick_resolve || now_ms() - cs->last_resolve_ms >=
                                               COMMIT_RESOLVE_EVERY_MS;
        cs->kick_resolve = false;
        if (resolve)
            cs->last_resolve_ms = now_ms();
        pthread_mutex_unlock(&cs->lock);
        engine_pass(cs, resolve);
        pthread_mutex_lock(&cs->lock);
    }
    pthread_mutex_unlock(&cs->lock);
    return NULL;
}

/* Reads commit/ back at start. */
static int load_files(struct commit_service *cs, char *err, size_t err_len)
{
    char **names = NULL;
    size_t count = 0;
    int r = spool_txn_prepare(cs->p.spool, err, err_len);

    if (r < 0)
        return r;
    r = spool_txn_list(cs->p.spool, &names, &count, err, err_len);
    if (r < 0)
        return r;
    for (size_t i = 0; i < count; i++) {
        size_t len = strlen(names[i]);
        bool report = len > 4 && strcmp(names[i] + len - 4, ".rep") == 0;
        bool request = len > 4 && strcmp(names[i] + len - 4, ".req") == 0;
        struct commit_tx *tx;
        char *data = NULL;
        size_t dlen = 0;

        if (!report && !request)
            continue;
        if (request) {
            char rep[SPOOL_TXN_NAME_MAX + 1];
            snprintf(rep, sizeof(rep), "%.*s.rep", (int)(len - 4), names[i]);
            if (spool_txn_exists(cs->p.spool, rep)) {
                /* Resolved before a crash: the report holds it all. */
                (void)spool_txn_remove(cs->p.spool, names[i], NULL, 0);
                continue;
            }
        }
        if (spool_txn_read(cs->p.spool, names[i], &data, &dlen) < 0) {
            log_warning("event=commit-file-unreadable file=commit/%s, "
                        "ignoring",
                        names[i]);
            continue;
        }
        tx = tx_parse(data, dlen, report);
        free(data);
        if (tx == NULL) {
            log_warning("event=commit-file-invalid file=commit/%s "
                        "reason=\"not a commitment transaction file\", "
                        "ignoring",
                        names[i]);
            continue;
        }
        tx_append(cs, tx);
        log_notice("event=commit-restored tx=%s from=%s items=%zu state=%s",
                   tx->uid, tx->caller, tx->n,
                   report ? "report-waiting" : "pending");
    }
    spool_txn_list_free(names, count);
    return 0;
}

/* A copy of the strings of @s in *@ret, or NULL; false when out of
 * memory. */
static bool dup_or_null(const char *s, const char **ret)
{
    *ret = NULL;
    if (s == NULL)
        return true;
    *ret = strdup(s);
    return *ret != NULL;
}

/* Copies params->outbound_tls into cs->out_tls; -EINVAL (with @err) when
 * a remote needs TLS and there is none, -ENOMEM. */
static int out_tls_copy(struct commit_service *cs,
                        const struct commit_params *params, char *err,
                        size_t err_len)
{
    const struct scp_outbound_tls *t = params->outbound_tls;

    for (size_t i = 0; i < params->remote_count; i++)
        if (params->remotes[i].tls && (t == NULL || t->ca_file == NULL)) {
            snprintf(err, err_len,
                     "remote AE %s needs TLS but no outbound TLS is set "
                     "(dicom.tls.ca_file)",
                     params->remotes[i].ae_title);
            return -EINVAL;
        }
    if (t == NULL)
        return 0;
    cs->out_tls.profile = t->profile;
    cs->out_tls.security_level = t->security_level;
    if (!dup_or_null(t->ca_file, &cs->out_tls.ca_file) ||
        !dup_or_null(t->certificate_file, &cs->out_tls.certificate_file) ||
        !dup_or_null(t->private_key_file, &cs->out_tls.private_key_file) ||
        !dup_or_null(t->private_key_password_file,
                     &cs->out_tls.private_key_password_file)) {
        snprintf(err, err_len, "out of memory");
        return -ENOMEM;
    }
    cs->has_out_tls = t->ca_file != NULL;
    return 0;
}

struct commit_service *commit_start(const struct commit_params *params,
                                    char *err, size_t err_len)
{
    struct commit_service *cs = calloc(1, sizeof(*cs));
    pthread_condattr_t ca;

    if (cs == NULL)
        goto out_nomem;
    cs->p = *params;
    cs->our_ae = strdup(params->our_ae);
    cs->destination = strdup(params->destination ? params->destination : "");
    if (cs->our_ae == NULL || cs->destination == NULL)
        goto out_nomem;
    if (params->remote_count > 0) {
        cs->remotes = calloc(params->remote_count, sizeof(*cs->remotes));
        if (cs->remotes == NULL)
            goto out_nomem;
        for (size_t i = 0; i < params->remote_count; i++) {
            const struct commit_remote *in = &params->remotes[i];

            cs->remotes[i].port = in->port;
            cs->remotes[i].tls = in->tls;
            cs->remotes[i].ae_title = strdup(in->ae_title);
            cs->remotes[i].host = strdup(in->host);
            if (in->certificate_sha256 != NULL)
                cs->remotes[i].certificate_sha256 =
                    strdup(in->certificate_sha256);
            if (cs->remotes[i].ae_title == NULL ||
                cs->remotes[i].host == NULL ||
                (in->certificate_sha256 != NULL &&
                 cs->remotes[i].certificate_sha256 == NULL)) {
                cs->p.remote_count = i + 1;
                goto out_nomem;
            }
        }
    }
    cs->p.outbound_tls = NULL; /* borrowed: cs->out_tls is the copy */
    if (out_tls_copy(cs, params, err, err_len) < 0) {
        commit_stop(cs);
        return NULL;
    }
    cs->recent = calloc(COMMIT_RECENT_MAX, sizeof(*cs->recent));
    cs->senders = calloc(params->remote_count ? params->remote_count : 1,
                         sizeof(*cs->senders));
    if (cs->recent == NULL || cs->senders == NULL)
        goto out_nomem;
    if (cs->p.report_retry_max_s == 0)
        cs->p.report_retry_max_s = 300;
    pthread_mutex_init(&cs->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cs->cond, &ca);
    for (size_t i = 0; i < cs->p.remote_count; i++) {
        cs->senders[i].cs = cs;
        cs->senders[i].remote = &cs->remotes[i];
        pthread_cond_init(&cs->senders[i].cond, &ca);
    }
    pthread_condattr_destroy(&ca);
    pthread_rwlock_init(&cs->ledger_lock, NULL);
    cs->sync_inited = true;
    cs->last_prune_ms = 0;
    cs->ledger_backoff_s = 1;
    if (params->ledger_path != NULL && params->ledger_path[0] != '\0') {
        cs->ledger_file = strdup(params->ledger_path);
        if (cs->ledger_file == NULL)
            goto out_nomem;
        ledger_try_open(cs, now_ms());
    }
    if (load_files(cs, err, err_len) < 0) {
        commit_stop(cs);
        return NULL;
    }
    cs->kick = cs->txs != NULL;
    if (pthread_create(&cs->thread, NULL, engine_main, cs) != 0) {
        snprintf(err, err_len, "cannot start the commitment thread");
        commit_stop(cs);
        return NULL;
    }
    cs->thread_started = true;
    for (size_t i = 0; i < cs->p.remote_count; i++) {
        if (pthread_create(&cs->senders[i].thread, NULL, sender_main,
                           &cs->senders[i]) != 0) {
            snprintf(err, err_len, "cannot start the report thread of %s",
                     cs->remotes[i].ae_title);
            commit_stop(cs);
            return NULL;
        }
        cs->senders[i].started = true;
    }
    return cs;

out_nomem:
    snprintf(err, err_len, "out of memory");
    commit_stop(cs);
    return NULL;
}

void commit_stop(struct commit_service *cs)
{
    if (cs == NULL)
        return;
    if (cs->sync_inited) {
        pthread_mutex_lock(&cs->lock);
        cs->stop = true;
        pthread_cond_signal(&cs->cond);
        for (size_t i = 0; i < cs->p.remote_count; i++)
            pthread_cond_signal(&cs->senders[i].cond);
        pthread_mutex_unlock(&cs->lock);
        /* A report being sent finishes or times out (dicom.timeout_s). */
        for (size_t i = 0; i < cs->p.remote_count; i++)
            if (cs->senders[i].started)
                pthread_join(cs->senders[i].thread, NULL);
        if (cs->thread_started)
            pthread_join(cs->thread, NULL);
        for (size_t i = 0; i < cs->p.remote_count; i++)
            pthread_cond_destroy(&cs->senders[i].cond);
        pthread_mutex_destroy(&cs->lock);
        pthread_cond_destroy(&cs->cond);
        ledger_close(cs->ledger); /* commits what is queued */
        pthread_rwlock_destroy(&cs->ledger_lock);
    }
    free(cs->ledger_file);
    while (cs->txs != NULL) {
        struct commit_tx *tx = cs->txs;
        cs->txs = tx->next;
        tx_free(tx);
    }
    if (cs->remotes != NULL) {
        for (size_t i = 0; i < cs->p.remote_count; i++) {
            free((char *)cs->remotes[i].ae_title);
            free((char *)cs->remotes[i].host);
            free((char *)cs->remotes[i].certificate_sha256);
        }
        free(cs->remotes);
    }
    free((char *)cs->out_tls.ca_file);
    free((char *)cs->out_tls.certificate_file);
    free((char *)cs->out_tls.private_key_file);
    free((char *)cs->out_tls.private_key_password_file);
    free(cs->senders);
    free(cs->recent);
    free(cs->our_ae);
    free(cs->destination);
    free(cs);
}

void commit_get_counts(struct commit_service *cs,
                       struct commit_counts *ret_counts)
{
    memset(ret_counts, 0, sizeof(*ret_counts));
    if (cs == NULL)
        return;
    pthread_mutex_lock(&cs->lock);
    *ret_counts = cs->counts;
    ret_counts->pending = 0;
    ret_counts->reports_waiting = 0;
    for (struct commit_tx *t = cs->txs; t != NULL; t = t->next) {
        if (t->state == TX_REPORT)
            ret_counts->reports_waiting++;
        else
            ret_counts->pending++;
    }
    pthread_mutex_unlock(&cs->lock);
}
