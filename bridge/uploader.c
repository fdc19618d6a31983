/*
 * uploader - see uploader.h.
 */
#include "uploader.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "oauth.h"
#include "redact.h"
#include "scp.h"
#include "servertext.h"
#include "spool.h"
#include "stow.h"
#include "util.h"

/* How many entries of each state one scheduling pass looks at. */
#define UPLOADER_WINDOW 512
/* How long the scheduler sleeps when there is nothing to do. */
#define UPLOADER_IDLE_MS 500
/* Connection failures in a row after which every worker pauses. */
#define UPLOADER_DOWN_AFTER 5
/* The same 403 diagnosis is logged at most this often. */
#define UPLOADER_403_LOG_MS 60000

struct batch {
    char study[UTIL_UID_MAX + 1];
    size_t count;
    char (*ids)[SPOOL_ID_MAX];
    uint64_t bytes;
};

struct uploader {
    struct uploader_params params;
    char *url;
    char *ca_file;

    pthread_t scheduler;
    pthread_t *workers;
    unsigned worker_count;

    pthread_mutex_t lock;
    pthread_cond_t changed;       /* queue, busy or stop changed */
    struct batch **queue;         /* at most worker_count waiting */
    size_t queued;
    atomic_bool stop;

    _Atomic int64_t paused_until_us;
    atomic_uint connection_failures;
    _Atomic uint64_t last_403_log_ms;
};

struct worker {
    struct uploader *up;
    struct stow_client *client;
};

static int64_t now_us(void)
{
    return (int64_t)util_now_realtime_us();
}

static bool uploader_cancelled(void *ctx)
{
    return atomic_load(&((struct uploader *)ctx)->stop);
}

static void batch_free(struct batch *b)
{
    if (b == NULL)
        return;
    free(b->ids);
    free(b);
}

/* Exponential backoff with +-20 % jitter, in seconds, for @attempts. */
static unsigned backoff_s(const struct uploader *up, uint32_t attempts)
{
    uint64_t delay = up->params.retry_min_s;
    unsigned char rnd[2] = { 0, 0 };

    for (uint32_t i = 1; i < attempts && delay < up->params.retry_max_s; i++)
        delay *= 2;
    if (delay > up->params.retry_max_s)
        delay = up->params.retry_max_s;
    (void)util_random_bytes(rnd, sizeof(rnd));
    unsigned permille = 800 + (unsigned)((rnd[0] << 8 | rnd[1]) % 401);
    delay = delay * permille / 1000;
    return delay > 0 ? (unsigned)delay : 1;
}

/* ------------------------------------------------------------------ */
/* Per-instance outcomes                                               */
/* ------------------------------------------------------------------ */

static void load_meta(struct uploader *up, const char *id,
                      struct spool_meta *meta)
{
    if (spool_meta_read(up->params.spool, id, meta) < 0)
        memset(meta, 0, sizeof(*meta));
}

static void save_meta(struct uploader *up, const char *id,
                      const struct spool_meta *meta)
{
    char err[256];

    if (spool_meta_write(up->params.spool, id, meta, err, sizeof(err)) < 0)
        log_warning("id=%s event=meta-failed reason=\"%s\", ignoring", id,
                    err);
}

static void outcome_delivered(struct uploader *up, const char *id,
                              long status, uint16_t warning)
{
    struct spool_meta meta;
    char err[256];
    int r;

    load_meta(up, id, &meta);
    r = spool_remove(up->params.spool, id, SPOOL_ACTIVE, err, sizeof(err));
    if (r < 0 && r != -ENOENT)
        log_err("id=%s event=remove-failed reason=\"%s\"", id, err);
    if (warning != 0)
        log_info("id=%s event=delivered sop=%s study=%s status=%ld "
                 "warning=%04X meaning=\"%s\"",
                 id, meta.sop_uid, meta.study_uid, status, warning,
                 stow_reason_text(warning));
    else
        log_info("id=%s event=delivered sop=%s study=%s status=%ld", id,
                 meta.sop_uid, meta.study_uid, status);
}

static void outcome_failed(struct uploader *up, const char *id, long status,
                           uint16_t reason, const char *why);

/* Defers @id for @delay_s (0: the backoff for its attempts); an entry
 * older than retry.max_age_h is failed as expired instead: we stop
 * trying, we never stop trying silently. */
static void outcome_deferred(struct uploader *up, const char *id,
                             long status, uint16_t reason, unsigned delay_s,
                             const char *why)
{
    struct spool_meta meta;
    char err[256];
    int r;

    uint64_t arrival = 0;
    if (spool_id_arrival_us(id, &arrival) == 0 &&
        now_us() - (int64_t)arrival >
            (int64_t)up->params.max_age_h * 3600 * 1000000) {
        char expired[320];
        snprintf(expired, sizeof(expired), "expired: not delivered within "
                                           "%u h; last error: %s",
                 up->params.max_age_h, why);
        outcome_failed(up, id, status, reason, expired);
        return;
    }
    load_meta(up, id, &meta);
    meta.last_http_status = status;
    meta.last_reason = reason;
    snprintf(meta.last_error, sizeof(meta.last_error), "%s", why);
    if (delay_s == 0)
        delay_s = backoff_s(up, meta.attempts);
    save_meta(up, id, &meta);
    r = spool_defer(up->params.spool, id, SPOOL_ACTIVE,
                    now_us() + (int64_t)delay_s * 1000000, err, sizeof(err));
    if (r < 0 && r != -ENOENT)
        log_err("id=%s event=defer-failed reason=\"%s\"", id, err);
    log_notice("id=%s event=deferred sop=%s attempts=%u next=%us "
               "reason=\"%s\"",
               id, meta.sop_uid, meta.attempts, delay_s, why);
}

static void outcome_failed(struct uploader *up, const char *id, long status,
                           uint16_t reason, const char *why)
{
    struct spool_meta meta;
    char err[256];
    int r;

    load_meta(up, id, &meta);
    meta.last_http_status = status;
    meta.last_reason = reason;
    snprintf(meta.last_error, sizeof(meta.last_error), "%s", why);
    save_meta(up, id, &meta);
    r = spool_move(up->params.spool, id, SPOOL_ACTIVE, SPOOL_FAILED, err,
                   sizeof(err));
    if (r < 0 && r != -ENOENT)
        log_err("id=%s event=fail-move-failed reason=\"%s\"", id, err);
    log_warning("id=%s event=failed sop=%s study=%s reason=\"%s\"", id,
                meta.sop_uid, meta.study_uid, why);
}

static void defer_all(struct uploader *up, const struct batch *b, long status,
                      unsigned delay_s, const char *why)
{
    for (size_t i = 0; i < b->count; i++)
        outcome_deferred(up, b->ids[i], status, 0, delay_s, why);
}

/* Back to incoming/: the transfer was cut short by a stop. */
static void requeue_all(struct uploader *up, const struct batch *b)
{
    char err[256];

    for (size_t i = 0; i < b->count; i++)
        (void)spool_move(up->params.spool, b->ids[i], SPOOL_ACTIVE,
                         SPOOL_INCOMING, err, sizeof(err));
}

/* ------------------------------------------------------------------ */
/* Workers                                                             */
/* ------------------------------------------------------------------ */

static void log_forbidden(struct uploader *up, const char *token)
{
    uint64_t now = util_now_monotonic_ms();
    uint64_t last = atomic_load(&up->last_403_log_ms);
    struct oauth_claims claims;
    char diagnosis[2048];
    char err[256];
    bool decoded;

    if (last != 0 && now - last < UPLOADER_403_LOG_MS)
        return;
    atomic_store(&up->last_403_log_ms, now);
    decoded = token != NULL &&
              oauth_decode_claims(token, &claims, err, sizeof(err)) == 0;
    oauth_diagnose_forbidden(decoded ? &claims : NULL, up->url,
                             (int64_t)time(NULL), diagnosis,
                             sizeof(diagnosis));
    if (decoded)
        oauth_claims_free(&claims);
    log_err("event=forbidden url=%s diagnosis=\"%s\"", up->url, diagnosis);
}

static void free_token(char *token)
{
    if (token != NULL) {
        explicit_bzero(token, strlen(token));
        free(token);
    }
}

static void send_batch(struct worker *w, struct batch *b, bool may_split);

/* Applies the per-instance results of a 200/202/409 answer. */
static void apply_results(struct uploader *up, const struct batch *b,
                          const struct stow_reply *rep)
{
    const char **uids = calloc(b->count, sizeof(*uids));
    struct spool_meta *metas = calloc(b->count, sizeof(*metas));
    struct stow_instance_result *results = calloc(b->count, sizeof(*results));
    char err[256];
    char why[320];

    if (uids == NULL || metas == NULL || results == NULL) {
        defer_all(up, b, rep->http_status, 0, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < b->count; i++) {
        load_meta(up, b->ids[i], &metas[i]);
        uids[i] = metas[i].sop_uid;
    }
    if (stow_parse_response(rep->http_status, rep->body, rep->body_len, uids,
                            b->count, results, err, sizeof(err)) < 0) {
        snprintf(why, sizeof(why), "HTTP %ld with an answer that cannot be "
                                   "read: %s", rep->http_status, err);
        defer_all(up, b, rep->http_status, 0, why);
        goto out;
    }
    for (size_t i = 0; i < b->count; i++) {
        const struct stow_instance_result *res = &results[i];
        switch (res->outcome) {
        case STOW_DELIVERED:
            outcome_delivered(up, b->ids[i], rep->http_status,
                              res->reason == 0xB00E ? 0 : res->reason);
            break;
        case STOW_RETRY:
            if (res->reason != 0)
                snprintf(why, sizeof(why), "HTTP %ld, Failure Reason %04X "
                                           "(%s)", rep->http_status,
                         res->reason, stow_reason_text(res->reason));
            else
                snprintf(why, sizeof(why), "HTTP %ld, the answer does not "
                                           "list this instance as stored",
                         rep->http_status);
            outcome_deferred(up, b->ids[i], rep->http_status, res->reason, 0,
                             why);
            break;
        case STOW_REJECTED:
            snprintf(why, sizeof(why), "HTTP %ld, Failure Reason %04X (%s)",
                     rep->http_status, res->reason,
                     stow_reason_text(res->reason));
            outcome_failed(up, b->ids[i], rep->http_status, res->reason, why);
            break;
        }
    }
out:
    free(uids);
    free(metas);
    free(results);
}

static void send_batch(struct worker *w, struct batch *b, bool may_split)
{
    struct uploader *up = w->up;
    const char **paths = calloc(b->count, sizeof(*paths));
    char (*path_buf)[4096] = calloc(b->count, sizeof(*path_buf));
    struct stow_reply rep;
    struct redact *hide = NULL;
    char why[768];
    char err[512];
    char *token = NULL;
    uint64_t generation = 0;
    bool replayed = false;
    int r;

    memset(&rep, 0, sizeof(rep));
    if (paths == NULL || path_buf == NULL) {
        defer_all(up, b, 0, 0, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < b->count; i++) {
        struct spool_meta meta;
        load_meta(up, b->ids[i], &meta);
        meta.attempts++;
        meta.last_attempt_us = now_us();
        save_meta(up, b->ids[i], &meta);
        (void)spool_entry_path(up->params.spool, SPOOL_ACTIVE, b->ids[i],
                               path_buf[i], sizeof(path_buf[i]));
        paths[i] = path_buf[i];
    }

again:
    r = oauth_source_token(up->params.tokens, util_now_monotonic_ms(), &token,
                           &generation, err, sizeof(err));
    if (r < 0) {
        snprintf(why, sizeof(why), "no token: %s", err);
        /* A refused client is a configuration problem: retry slowly. */
        defer_all(up, b, 0, r == -EACCES ? up->params.retry_max_s : 0, why);
        goto out;
    }
    r = stow_post(w->client, b->study, paths, b->count, token, &rep);
    if (r == -ECANCELED) {
        requeue_all(up, b);
        goto out;
    }
    if (r < 0) {
        unsigned failures = atomic_fetch_add(&up->connection_failures, 1) + 1;
        snprintf(why, sizeof(why), "no answer from %s: %s", up->url,
                 rep.error);
        defer_all(up, b, 0, 0, why);
        if (failures >= UPLOADER_DOWN_AFTER) {
            unsigned pause = backoff_s(up, failures - UPLOADER_DOWN_AFTER + 1);
            atomic_store(&up->paused_until_us,
                         now_us() + (int64_t)pause * 1000000);
            log_warning("event=destination-down url=%s failures=%u "
                        "pause=%us",
                        up->url, failures, pause);
        }
        goto out;
    }
    atomic_store(&up->connection_failures, 0);

    switch (stow_request_action(rep.http_status)) {
    case STOW_READ_BODY:
        apply_results(up, b, &rep);
        break;
    case STOW_REFRESH_TOKEN:
        if (!replayed) {
            replayed = true;
            oauth_source_invalidate(up->params.tokens, generation);
            free_token(token);
            token = NULL;
            stow_reply_free(&rep);
            log_notice("event=token-refused status=401 action=\"refresh and "
                       "replay once\"");
            goto again;
        }
        defer_all(up, b, 401, 0,
                  "HTTP 401 even with a fresh token: the server does not "
                  "accept tokens from this issuer or for this audience "
                  "(see 'stowbridge token')");
        break;
    case STOW_FORBIDDEN:
        log_forbidden(up, token);
        defer_all(up, b, 403, up->params.retry_max_s,
                  "HTTP 403: the token's identity may not store here (see "
                  "the event=forbidden log line)");
        break;
    case STOW_SPLIT_BATCH:
        if (may_split && b->count > 1) {
            log_notice("event=split study=%s instances=%zu status=%ld",
                       b->study, b->count, rep.http_status);
            for (size_t i = 0; i < b->count; i++) {
                struct batch one = { .count = 1, .ids = &b->ids[i] };
                memcpy(one.study, b->study, sizeof(one.study));
                send_batch(w, &one, false);
            }
            break;
        }
        /* The server's words, without what it echoes of the instance. */
        hide = servertext_for_entries(up->params.spool, SPOOL_ACTIVE, b->ids,
                                      b->count, up->params.tokens, token);
        redact_text(hide, rep.body, rep.body_len, REDACT_TEXT_MAX, err,
                    sizeof(err));
        snprintf(why, sizeof(why), "HTTP %ld for this instance alone: %s",
                 rep.http_status, err);
        for (size_t i = 0; i < b->count; i++)
            outcome_failed(up, b->ids[i], rep.http_status, 0, why);
        break;
    case STOW_REDIRECTED:
        /* A configuration problem: never followed, retried slowly. */
        hide = servertext_for_entries(up->params.spool, SPOOL_ACTIVE, b->ids,
                                      b->count, up->params.tokens, token);
        servertext_redirect(hide, rep.http_status, rep.location, why,
                            sizeof(why));
        log_err("event=redirected url=%s status=%ld reason=\"%s\"", up->url,
                rep.http_status, why);
        defer_all(up, b, rep.http_status, up->params.retry_max_s, why);
        break;
    case STOW_RETRY_LATER: {
        unsigned delay = 0;
        if (rep.retry_after_s > 0) {
            delay = (unsigned)rep.retry_after_s;
            if (rep.http_status == 429 || rep.http_status == 503) {
                /* The whole service asked for a pause, not this batch. */
                atomic_store(&up->paused_until_us,
                             now_us() + rep.retry_after_s * 1000000);
                log_notice("event=paused url=%s status=%ld seconds=%lld",
                           up->url, rep.http_status,
                           (long long)rep.retry_after_s);
            }
        }
        snprintf(why, sizeof(why), "HTTP %ld", rep.http_status);
        for (size_t i = 0; i < b->count; i++) {
            struct spool_meta meta;
            load_meta(up, b->ids[i], &meta);
            unsigned d = backoff_s(up, meta.attempts);
            outcome_deferred(up, b->ids[i], rep.http_status, 0,
                             d > delay ? d : delay, why);
        }
        break;
    }
    }
out:
    redact_free(hide);
    stow_reply_free(&rep);
    free_token(token);
    free(paths);
    free(path_buf);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct uploader *up = w->up;

    for (;;) {
        struct batch *b = NULL;

        pthread_mutex_lock(&up->lock);
        while (up->queued == 0 && !atomic_load(&up->stop))
            pthread_cond_wait(&up->changed, &up->lock);
        if (up->queued > 0) {
            b = up->queue[0];
            memmove(up->queue, up->queue + 1,
                    (up->queued - 1) * sizeof(*up->queue));
            up->queued--;
            pthread_cond_broadcast(&up->changed);
        }
        pthread_mutex_unlock(&up->lock);
        if (b == NULL)
            break;
        if (atomic_load(&up->stop))
            requeue_all(up, b);
        else
            send_batch(w, b, true);
        batch_free(b);
    }
    stow_client_free(w->client);
    free(w);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* The scheduler                                                       */
/* ------------------------------------------------------------------ */

/* Study UID of entry @id in @state: from meta/, else from the file. */
static int entry_study(struct uploader *up, enum spool_state state,
                       const char *id, char study[UTIL_UID_MAX + 1])
{
    struct spool_meta meta;
    char path[4096];

    if (spool_meta_read(up->params.spool, id, &meta) == 0 &&
        util_uid_valid(meta.study_uid)) {
        memcpy(study, meta.study_uid, strlen(meta.study_uid) + 1);
        return 0;
    }
    if (spool_entry_path(up->params.spool, state, id, path, sizeof(path)) < 0)
        return -EINVAL;
    memset(&meta, 0, sizeof(meta));
    if (scp_read_entry_uids(path, meta.study_uid, meta.sop_uid) < 0)
        return -EINVAL;
    save_meta(up, id, &meta);
    memcpy(study, meta.study_uid, strlen(meta.study_uid) + 1);
    return 0;
}

struct candidate {
    const struct spool_entry *entry;
    enum spool_state state;
    bool taken;
};

/* Moves @id from @state to failed/ with @why (the scheduler's own). */
static void fail_from(struct uploader *up, enum spool_state state,
                      const char *id, const char *why)
{
    char err[256];

    if (spool_move(up->params.spool, id, state, SPOOL_ACTIVE, err,
                   sizeof(err)) == 0)
        outcome_failed(up, id, 0, 0, why);
}

/*
 * One pass: expire old entries, then build and queue batches while there
 * is room. Returns the number of batches queued.
 */
static unsigned schedule_pass(struct uploader *up)
{
    struct spool_entry *incoming = NULL;
    struct spool_entry *deferred = NULL;
    size_t n_in = 0;
    size_t n_def = 0;
    struct candidate *cand = NULL;
    size_t n_cand = 0;
    unsigned queued = 0;
    int64_t now = now_us();
    char err[256];

    if (spool_list(up->params.spool, SPOOL_INCOMING, &incoming, &n_in, err,
                   sizeof(err)) < 0 ||
        spool_list(up->params.spool, SPOOL_DEFERRED, &deferred, &n_def, err,
                   sizeof(err)) < 0) {
        log_err("event=scheduler-error reason=\"%s\", will retry", err);
        goto out;
    }
    cand = calloc(2 * UPLOADER_WINDOW, sizeof(*cand));
    if (cand == NULL)
        goto out;

    /* Fair: alternate new and retried entries. */
    size_t i_in = 0;
    size_t i_def = 0;
    while (n_cand < 2 * UPLOADER_WINDOW && (i_in < n_in || i_def < n_def)) {
        for (int turn = 0; turn < 2; turn++) {
            const struct spool_entry *e = NULL;
            enum spool_state state = SPOOL_INCOMING;
            if (turn == 0 && i_in < n_in) {
                e = &incoming[i_in++];
            } else if (turn == 1) {
                while (i_def < n_def && e == NULL) {
                    const struct spool_entry *d = &deferred[i_def++];
                    if (d->mtime_us <= now)
                        e = d;
                }
                state = SPOOL_DEFERRED;
            }
            if (e != NULL && n_cand < 2 * UPLOADER_WINDOW) {
                cand[n_cand].entry = e;
                cand[n_cand].state = state;
                n_cand++;
            }
        }
    }

    for (size_t c = 0; c < n_cand && !atomic_load(&up->stop); c++) {
        char study[UTIL_UID_MAX + 1];
        struct batch *b;
        char other[UTIL_UID_MAX + 1];

        if (cand[c].taken)
            continue;
        pthread_mutex_lock(&up->lock);
        bool full = up->queued >= up->worker_count;
        pthread_mutex_unlock(&up->lock);
        if (full)
            break;

        if (entry_study(up, cand[c].state, cand[c].entry->id, study) < 0) {
            fail_from(up, cand[c].state, cand[c].entry->id,
                      "the entry cannot be read as DICOM (no valid "
                      "StudyInstanceUID)");
            cand[c].taken = true;
            continue;
        }
        b = calloc(1, sizeof(*b));
        if (b != NULL)
            b->ids = calloc(up->params.batch_max_instances, sizeof(*b->ids));
        if (b == NULL || b->ids == NULL) {
            batch_free(b);
            break;
        }
        memcpy(b->study, study, sizeof(study));
        for (size_t k = c; k < n_cand && b->count <
                                             up->params.batch_max_instances;
             k++) {
            const struct spool_entry *e = cand[k].entry;
            char move_err[256];
            if (cand[k].taken)
                continue;
            if (k != c && (entry_study(up, cand[k].state, e->id, other) < 0 ||
                           strcmp(other, study) != 0))
                continue;
            if (b->count > 0 &&
                b->bytes + e->size > up->params.batch_max_bytes)
                continue;
            cand[k].taken = true;
            if (spool_move(up->params.spool, e->id, cand[k].state,
                           SPOOL_ACTIVE, move_err, sizeof(move_err)) < 0)
                continue;   /* lost race, or logged by the next pass */
            memcpy(b->ids[b->count], e->id, strlen(e->id) + 1);
            b->count++;
            b->bytes += e->size;
        }
        if (b->count == 0) {
            batch_free(b);
            continue;
        }
        pthread_mutex_lock(&up->lock);
        up->queue[up->queued++] = b;
        pthread_cond_broadcast(&up->changed);
        pthread_mutex_unlock(&up->lock);
        queued++;
    }

out:
    free(cand);
    free(incoming);
    free(deferred);
    return queued;
}

static void *scheduler_main(void *arg)
{
    struct uploader *up = arg;

    while (!atomic_load(&up->stop)) {
        int64_t paused = atomic_load(&up->paused_until_us);
        int64_t wait_ms = UPLOADER_IDLE_MS;

        if (paused <= now_us()) {
            if (schedule_pass(up) > 0)
                wait_ms = 50;   /* more may be waiting: look again soon */
        } else {
            wait_ms = (paused - now_us()) / 1000;
            if (wait_ms > UPLOADER_IDLE_MS)
                wait_ms = UPLOADER_IDLE_MS;
            if (wait_ms < 1)
                wait_ms = 1;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += wait_ms / 1000;
        ts.tv_nsec += (wait_ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_mutex_lock(&up->lock);
        if (!atomic_load(&up->stop))
            pthread_cond_timedwait(&up->changed, &up->lock, &ts);
        pthread_mutex_unlock(&up->lock);
    }
    return NULL;
}

struct uploader *uploader_start(const struct uploader_params *params)
{
    struct uploader *up = calloc(1, sizeof(*up));

    if (up == NULL)
        return NULL;
    up->params = *params;
    up->url = strdup(params->url);
    up->ca_file = params->ca_file != NULL ? strdup(params->ca_file) : NULL;
    up->worker_count = params->workers > 0 ? params->workers : 1;
    up->workers = calloc(up->worker_count, sizeof(*up->workers));
    up->queue = calloc(up->worker_count, sizeof(*up->queue));
    pthread_mutex_init(&up->lock, NULL);
    pthread_cond_init(&up->changed, NULL);
    if (up->url == NULL || up->workers == NULL || up->queue == NULL ||
        (params->ca_file != NULL && up->ca_file == NULL)) {
        log_err("event=uploader-failed reason=\"out of memory\"");
        goto fail;
    }
    up->params.url = up->url;
    up->params.ca_file = up->ca_file;

    for (unsigned i = 0; i < up->worker_count; i++) {
        struct stow_params sp = {
            .base_url = up->url,
            .ca_file = up->ca_file,
            .timeout_s = params->timeout_s,
            .cancelled = uploader_cancelled,
            .cancel_ctx = up,
        };
        struct worker *w = calloc(1, sizeof(*w));
        if (w != NULL) {
            w->up = up;
            w->client = stow_client_new(&sp);
        }
        if (w == NULL || w->client == NULL ||
            pthread_create(&up->workers[i], NULL, worker_main, w) != 0) {
            if (w != NULL)
                stow_client_free(w->client);
            free(w);
            log_err("event=uploader-failed reason=\"cannot start worker "
                    "%u\"", i);
            up->worker_count = i;
            uploader_stop(up);
            return NULL;
        }
    }
    if (pthread_create(&up->scheduler, NULL, scheduler_main, up) != 0) {
        log_err("event=uploader-failed reason=\"cannot start the "
                "scheduler\"");
        atomic_store(&up->stop, true);
        pthread_cond_broadcast(&up->changed);
        for (unsigned i = 0; i < up->worker_count; i++)
            pthread_join(up->workers[i], NULL);
        goto fail;
    }
    log_notice("event=uploader-started url=%s workers=%u batch=%u/%llu MiB",
               up->url, up->worker_count, params->batch_max_instances,
               (unsigned long long)(params->batch_max_bytes >> 20));
    return up;

fail:
    pthread_cond_destroy(&up->changed);
    pthread_mutex_destroy(&up->lock);
    free(up->queue);
    free(up->workers);
    free(up->url);
    free(up->ca_file);
    free(up);
    return NULL;
}

void uploader_stop(struct uploader *up)
{
    if (up == NULL)
        return;
    pthread_mutex_lock(&up->lock);
    atomic_store(&up->stop, true);
    pthread_cond_broadcast(&up->changed);
    pthread_mutex_unlock(&up->lock);
    if (up->scheduler != 0)
        pthread_join(up->scheduler, NULL);
    for (unsigned i = 0; i < up->worker_count; i++)
        pthread_join(up->workers[i], NULL);
    /* Batches still queued go back to incoming/. */
    for (size_t i = 0; i < up->queued; i++) {
        requeue_all(up, up->queue[i]);
        batch_free(up->queue[i]);
    }
    pthread_cond_destroy(&up->changed);
    pthread_mutex_destroy(&up->lock);
    free(up->queue);
    free(up->workers);
    free(up->url);
    free(up->ca_file);
    free(up);
    log_notice("event=uploader-stopped");
}
