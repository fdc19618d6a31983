/* SPDX-License-Identifier: Apache-2.0 */
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
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"
#include "dicom/part10.h"
#include "dicom/redact.h"
#include "monitor.h"
#include "outcome.h"
#include "plan.h"
#include "servertext.h"
#include "sopindex.h"
#include "spool/spool.h"
#include "web/dicomweb.h"
#include "web/oauth.h"
#include "web/stow.h"

/* How many entries of each state one scheduling pass looks at. */
#define UPLOADER_WINDOW 512
/* How long the scheduler sleeps when there is nothing to do. */
#define UPLOADER_IDLE_MS 500
/* Connection failures in a row after which every worker pauses. */
#define UPLOADER_DOWN_AFTER 5
/* Entry files one scheduling pass may parse for UIDs missing in meta/. */
#define UPLOADER_PARSE_BUDGET 256

struct batch {
    char study[UTIL_UID_MAX + 1];
    size_t count;
    char (*ids)[SPOOL_ID_MAX];
    uint64_t bytes;
};

/* What a worker reports when an entry it had in flight leaves active/. */
enum landing {
    LANDED_DELIVERED,
    LANDED_FAILED,
    LANDED_DEFERRED,
    LANDED_REQUEUED,
};

struct landing_record {
    char id[SPOOL_ID_MAX];
    enum landing kind;
    char why[256]; /* LANDED_FAILED: the reason */
};

struct uploader {
    struct uploader_params params;
    char *url;
    char *ca_file;

    pthread_t scheduler;
    pthread_t *workers;
    unsigned worker_count;

    pthread_mutex_t lock;
    pthread_cond_t changed; /* queue, busy or stop changed */
    struct batch **queue;   /* at most worker_count waiting */
    size_t queued;
    atomic_bool stop;

    /* Under lock: outcomes reported since the last scheduling pass. */
    struct landing_record *landings;
    size_t landing_count;
    size_t landing_cap;
    bool landings_lost; /* one could not be kept (no memory) */

    /* The scheduler thread's own: the copies index, the pause it obeys
     * (to log its end), the reason of the last failed digest. */
    struct sopindex *index;
    int64_t pause_seen_us;
    char digest_err[256];
    /* The study of the last batch queued, where the planner's rotation
     * between studies goes on from. */
    char last_study[UTIL_UID_MAX + 1];

    pthread_mutex_t pause_lock; /* one writer of the pause file */
    /* A pause that could not be written to the spool (0: none). */
    _Atomic int64_t paused_until_us;
    atomic_uint connection_failures;
    /* The DICOMweb client every worker sends with (one handle each). */
    struct dicomweb *web;
};

struct worker {
    struct uploader *up;
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

/* Exponential backoff with +-20 % jitter, in seconds, for @attempts
 * (plan_backoff_s()). */
static unsigned backoff_s(const struct uploader *up, uint32_t attempts)
{
    unsigned char rnd[2] = { 0, 0 };

    (void)util_random_bytes(rnd, sizeof(rnd));
    return plan_backoff_s(up->params.retry_min_s, up->params.retry_max_s,
                          attempts,
                          800 + (unsigned)((rnd[0] << 8 | rnd[1]) % 401));
}

/*
 * A worker's entry left active/: tells the scheduler, which resolves the
 * held duplicates of a delivered or failed entry. Losing a report (no
 * memory) is safe: the duplicates are then sent themselves.
 */
static void report_landing(struct uploader *up, const char *id,
                           enum landing kind, const char *why)
{
    struct landing_record *rec;

    pthread_mutex_lock(&up->lock);
    if (up->landing_count == up->landing_cap) {
        size_t cap = up->landing_cap == 0 ? 64 : up->landing_cap * 2;
        struct landing_record *grown =
            realloc(up->landings, cap * sizeof(*grown));
        if (grown == NULL) {
            up->landings_lost = true;
            pthread_mutex_unlock(&up->lock);
            return;
        }
        up->landings = grown;
        up->landing_cap = cap;
    }
    rec = &up->landings[up->landing_count++];
    snprintf(rec->id, sizeof(rec->id), "%s", id);
    rec->kind = kind;
    snprintf(rec->why, sizeof(rec->why), "%s", why != NULL ? why : "");
    pthread_mutex_unlock(&up->lock);
}

/*
 * Pauses every upload for @seconds, unless a longer pause is in effect.
 * The pause lives in the spool's pause file, so that `stowbridge queue
 * resume` (another process) can end it; if it cannot be written it is
 * kept here and only time ends it.
 */
static void pause_uploads(struct uploader *up, unsigned seconds,
                          const char *reason)
{
    struct spool_pause cur;
    struct spool_pause p;
    char err[256];

    memset(&p, 0, sizeof(p));
    p.since_us = now_us();
    p.until_us = p.since_us + (int64_t)seconds * 1000000;
    snprintf(p.reason, sizeof(p.reason), "%s", reason);
    pthread_mutex_lock(&up->pause_lock);
    if (spool_pause_read(up->params.spool, &cur) == 0 &&
        cur.until_us >= p.until_us) {
        pthread_mutex_unlock(&up->pause_lock);
        return;
    }
    if (spool_pause_write(up->params.spool, &p, err, sizeof(err)) < 0) {
        log_warning("event=pause-not-recorded reason=\"%s\", pausing "
                    "anyway ('queue resume' cannot end this one)",
                    err);
        if (atomic_load(&up->paused_until_us) < p.until_us)
            atomic_store(&up->paused_until_us, p.until_us);
    }
    pthread_mutex_unlock(&up->pause_lock);
}

/* The end of the pause in effect (0: none), read from the spool before
 * each scheduling pass; logs when a pause ends, early or not. */
static int64_t current_pause(struct uploader *up)
{
    struct spool_pause p;
    int64_t now = now_us();
    int64_t until = 0;
    int64_t kept = atomic_load(&up->paused_until_us);

    if (spool_pause_read(up->params.spool, &p) == 0)
        until = p.until_us;
    if (kept > until)
        until = kept;
    if (until > now) {
        up->pause_seen_us = until;
        return until;
    }
    if (up->pause_seen_us > now)
        log_notice("event=resumed url=%s reason=\"the pause was ended "
                   "early (stowbridge queue resume or queue retry)\"",
                   up->url);
    else if (up->pause_seen_us != 0)
        log_info("event=resumed url=%s reason=\"the pause is over\"", up->url);
    up->pause_seen_us = 0;
    return 0;
}

/*
 * At start: deferred entries and a pause recorded before (by an earlier
 * run, perhaps with a longer retry.max_pause_s, or a version that knew no
 * cap) are obeyed within today's limits: the longer of retry.max_pause_s
 * and retry.max_s.
 */
static void adopt_pause(struct uploader *up)
{
    unsigned longest = up->params.max_pause_s > up->params.retry_max_s
                           ? up->params.max_pause_s
                           : up->params.retry_max_s;
    struct spool_entry *deferred = NULL;
    size_t n_def = 0;
    unsigned capped = 0;
    struct spool_pause p;
    int64_t now = now_us();
    int64_t latest = now + (int64_t)longest * 1000000;
    char err[256];

    if (spool_list(up->params.spool, SPOOL_DEFERRED, &deferred, &n_def, err,
                   sizeof(err)) == 0) {
        for (size_t i = 0; i < n_def; i++)
            if (deferred[i].mtime_us > latest &&
                spool_defer(up->params.spool, deferred[i].id, SPOOL_DEFERRED,
                            latest, err, sizeof(err)) == 0)
                capped++;
        free(deferred);
    }
    if (capped > 0)
        log_notice("event=deferred-capped count=%u seconds=%u "
                   "reason=\"deferred for longer than retry.max_pause_s "
                   "and retry.max_s allow\"",
                   capped, longest);
    if (spool_pause_read(up->params.spool, &p) < 0 || p.until_us <= now)
        return;
    if (p.until_us > now + (int64_t)longest * 1000000) {
        p.until_us = now + (int64_t)longest * 1000000;
        if (spool_pause_write(up->params.spool, &p, err, sizeof(err)) < 0)
            log_warning("event=pause-not-recorded reason=\"%s\", "
                        "ignoring",
                        err);
    }
    up->pause_seen_us = p.until_us;
    log_notice("event=paused url=%s seconds=%lld reason=\"%s (recorded "
               "before this start; 'stowbridge queue resume' ends it)\"",
               up->url, (long long)((p.until_us - now + 999999) / 1000000),
               p.reason);
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
        log_warning("id=%s event=meta-failed reason=\"%s\", ignoring", id, err);
}

/* The server has @id: it leaves the spool (a Warning Reason is logged). */
static void deliver_entry(struct uploader *up, const char *id, long status,
                          uint16_t warning)
{
    struct spool_meta meta;
    char err[256];
    int r;

    load_meta(up, id, &meta);
    monitor_delivered(up->params.monitor, up->params.spool, id, &meta);
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
    report_landing(up, id, LANDED_DELIVERED, NULL);
}

static void fail_entry(struct uploader *up, const char *id, long status,
                       uint16_t reason, const char *why);

/* Defers @id as retry @o says (the outcome table, outcome.h); an entry
 * older than retry.max_age_h is failed as expired instead: we stop
 * trying, we never stop trying silently. meta/ is read once. */
static void defer_entry(struct uploader *up, const char *id,
                        const struct outcome *o)
{
    struct outcome expired = *o;
    struct spool_meta meta;
    uint64_t arrival = 0;
    unsigned delay_s;
    char err[256];
    int r;

    if (spool_id_arrival_us(id, &arrival) == 0 &&
        outcome_expire(&expired, (int64_t)arrival, now_us(),
                       up->params.max_age_h)) {
        fail_entry(up, id, expired.http_status, expired.reason, expired.why);
        return;
    }
    load_meta(up, id, &meta);
    meta.last_http_status = o->http_status;
    meta.last_reason = o->reason;
    snprintf(meta.last_error, sizeof(meta.last_error), "%.*s",
             (int)sizeof(meta.last_error) - 1, o->why);
    delay_s = outcome_retry_delay_s(o, backoff_s(up, meta.attempts));
    save_meta(up, id, &meta);
    r = spool_defer(up->params.spool, id, SPOOL_ACTIVE,
                    now_us() + (int64_t)delay_s * 1000000, err, sizeof(err));
    if (r < 0 && r != -ENOENT)
        log_err("id=%s event=defer-failed reason=\"%s\"", id, err);
    log_notice("id=%s event=deferred sop=%s attempts=%u next=%us "
               "reason=\"%s\"",
               id, meta.sop_uid, meta.attempts, delay_s, o->why);
    monitor_deferred(up->params.monitor, o->http_status, o->reason, o->why);
    report_landing(up, id, LANDED_DEFERRED, NULL);
}

/* A dead letter: @id goes to failed/, with @why kept in meta/. */
static void fail_entry(struct uploader *up, const char *id, long status,
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
    monitor_dead_letter(up->params.monitor, status, &meta, why);
    report_landing(up, id, LANDED_FAILED, why);
}

/* Defers every entry of @b as retry @o says. */
static void defer_batch(struct uploader *up, const struct batch *b,
                        const struct outcome *o)
{
    for (size_t i = 0; i < b->count; i++)
        defer_entry(up, b->ids[i], o);
}

/* Defers every entry of @b for @delay_s (0: the backoff for its
 * attempts), with @why. */
static void defer_all(struct uploader *up, const struct batch *b, long status,
                      unsigned delay_s, const char *why)
{
    struct outcome o;

    outcome_retry(status, 0, delay_s, why, &o);
    defer_batch(up, b, &o);
}

/* Back to incoming/: the transfer was cut short by a stop. */
static void requeue_all(struct uploader *up, const struct batch *b)
{
    char err[256];

    for (size_t i = 0; i < b->count; i++) {
        (void)spool_move(up->params.spool, b->ids[i], SPOOL_ACTIVE,
                         SPOOL_INCOMING, err, sizeof(err));
        report_landing(up, b->ids[i], LANDED_REQUEUED, NULL);
    }
}

/* ------------------------------------------------------------------ */
/* Workers                                                             */
/* ------------------------------------------------------------------ */

/* A 403's diagnosis, when the DICOMweb client says it is due. */
static void report_forbidden(struct uploader *up,
                             const struct dicomweb_reply *rep)
{
    if (rep->diagnosis_due)
        log_err("event=forbidden url=%s diagnosis=\"%s\"", up->url,
                rep->diagnosis);
}

/* What a server's text about @b must not show: the entries' values and
 * the exchange's secrets. NULL (withhold) when either is unknown. */
static struct redact *hide_for(struct uploader *up, const struct batch *b,
                               const struct dicomweb_reply *rep)
{
    struct redact *hide;

    if (rep->secrets_missing)
        return NULL;
    hide = servertext_for_entries(up->params.spool, SPOOL_ACTIVE, b->ids,
                                  b->count, NULL, NULL);
    if (hide != NULL && redact_merge(hide, rep->secrets) < 0) {
        redact_free(hide);
        hide = NULL;
    }
    return hide;
}

static void send_batch(struct worker *w, const struct batch *b, bool may_split);

/* Applies the per-instance results of a 200/202/409 answer. */
static void apply_results(struct uploader *up, const struct batch *b,
                          const struct dicomweb_reply *rep)
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
        snprintf(why, sizeof(why),
                 "HTTP %ld with an answer that cannot be "
                 "read: %s",
                 rep->http_status, err);
        defer_all(up, b, rep->http_status, 0, why);
        goto out;
    }
    for (size_t i = 0; i < b->count; i++) {
        struct outcome o;

        outcome_for_instance(rep->http_status, &results[i], &o);
        switch (o.verdict) {
        case OUTCOME_DELIVERED:
            if (up->params.on_delivered != NULL)
                up->params.on_delivered(up->params.on_delivered_ctx, b->ids[i],
                                        &metas[i], results[i].reason == 0xB00E);
            deliver_entry(up, b->ids[i], rep->http_status, o.reason);
            break;
        case OUTCOME_RETRY:
            defer_entry(up, b->ids[i], &o);
            break;
        case OUTCOME_DEAD_LETTER:
            fail_entry(up, b->ids[i], rep->http_status, o.reason, o.why);
            break;
        }
    }
out:
    free(uids);
    free(metas);
    free(results);
}

/*
 * No answer at all (connection, DNS, TLS, timeout): retry with backoff;
 * UPLOADER_DOWN_AFTER failures in a row pause every upload ("destination
 * down") for a time that grows with them.
 */
static void no_answer(struct uploader *up, const struct batch *b,
                      const struct dicomweb_reply *rep)
{
    unsigned failures = atomic_fetch_add(&up->connection_failures, 1) + 1;
    char why[768];

    snprintf(why, sizeof(why), "no answer from %s: %s", up->url, rep->error);
    defer_all(up, b, 0, 0, why);
    if (failures >= UPLOADER_DOWN_AFTER) {
        unsigned pause = backoff_s(up, failures - UPLOADER_DOWN_AFTER + 1);
        char reason[sizeof(((struct spool_pause *)0)->reason)];
        snprintf(reason, sizeof(reason),
                 "the destination is down: %u "
                 "connection failures in a row",
                 failures);
        pause_uploads(up, pause, reason);
        log_warning("event=destination-down url=%s failures=%u "
                    "pause=%us",
                    up->url, failures, pause);
    }
}

/*
 * 400, 413, 415: a batch is split and each instance sent alone once; an
 * instance alone that still gets it goes to failed/ with the server's
 * text, without what it echoes of the instance.
 */
static void refused_batch(struct worker *w, const struct batch *b,
                          const struct dicomweb_reply *rep, bool may_split)
{
    struct uploader *up = w->up;
    struct redact *hide;
    char why[768];
    char err[512];

    if (may_split && b->count > 1) {
        log_notice("event=split study=%s instances=%zu status=%ld", b->study,
                   b->count, rep->http_status);
        for (size_t i = 0; i < b->count; i++) {
            struct batch one = { .count = 1, .ids = &b->ids[i] };
            memcpy(one.study, b->study, sizeof(one.study));
            send_batch(w, &one, false);
        }
        return;
    }
    hide = hide_for(up, b, rep);
    redact_text(hide, rep->body, rep->body_len, REDACT_TEXT_MAX, err,
                sizeof(err));
    redact_free(hide);
    snprintf(why, sizeof(why), "HTTP %ld for this instance alone: %s",
             rep->http_status, err);
    for (size_t i = 0; i < b->count; i++)
        fail_entry(up, b->ids[i], rep->http_status, 0, why);
}

/* 301, 302, 303, 307, 308: a configuration problem: never followed,
 * retried slowly, logged as event=redirected. */
static void redirected(struct uploader *up, const struct batch *b,
                       const struct dicomweb_reply *rep)
{
    struct redact *hide = hide_for(up, b, rep);
    char why[768];

    servertext_redirect(hide, rep->http_status, rep->location, why,
                        sizeof(why));
    redact_free(hide);
    log_err("event=redirected url=%s status=%ld reason=\"%s\"", up->url,
            rep->http_status, why);
    defer_all(up, b, rep->http_status, up->params.retry_max_s, why);
}

/* 408, 429, 5xx and the rest: retry, at least Retry-After; a 429 or 503
 * with Retry-After pauses every upload (outcome_for_retry_later()). */
static void retry_later(struct uploader *up, const struct batch *b,
                        const struct dicomweb_reply *rep)
{
    struct outcome later;
    struct outcome_pause pause;

    outcome_for_retry_later(rep->http_status, rep->retry_after_s,
                            up->params.max_pause_s, &later, &pause);
    if (pause.seconds > 0) {
        pause_uploads(up, pause.seconds, pause.reason);
        log_notice("event=paused url=%s status=%ld retry_after=\"%s\" "
                   "seconds=%u max_pause_s=%u",
                   up->url, rep->http_status, pause.asked, pause.seconds,
                   up->params.max_pause_s);
    }
    defer_batch(up, b, &later);
}

/* What the HTTP answer @rep to @b means for its entries (the outcome
 * table, docs/architecture.md section 6). */
static void apply_answer(struct worker *w, const struct batch *b,
                         const struct dicomweb_reply *rep, bool may_split)
{
    struct uploader *up = w->up;

    switch (stow_request_action(rep->http_status)) {
    case STOW_READ_BODY:
        apply_results(up, b, rep);
        break;
    case STOW_REFRESH_TOKEN:
        /* The DICOMweb client already replayed once with a new token. */
        defer_all(up, b, 401, 0,
                  "HTTP 401 even with a fresh token: the server does not "
                  "accept tokens from this issuer or for this audience "
                  "(see 'stowbridge token')");
        break;
    case STOW_FORBIDDEN:
        report_forbidden(up, rep);
        defer_all(up, b, 403, up->params.retry_max_s,
                  "HTTP 403: the token's identity may not store here (see "
                  "the event=forbidden log line)");
        break;
    case STOW_SPLIT_BATCH:
        refused_batch(w, b, rep, may_split);
        break;
    case STOW_REDIRECTED:
        redirected(up, b, rep);
        break;
    case STOW_RETRY_LATER:
        retry_later(up, b, rep);
        break;
    }
}

/* Sends @b once (a 401 is replayed by the DICOMweb client, not here) and
 * applies what came of it to each of its entries. */
static void send_batch(struct worker *w, const struct batch *b, bool may_split)
{
    struct uploader *up = w->up;
    const char **paths = calloc(b->count, sizeof(*paths));
    char(*path_buf)[4096] = calloc(b->count, sizeof(*path_buf));
    struct dicomweb_reply rep;
    char why[768];
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

    uint64_t sent_ms = util_now_monotonic_ms();
    r = dicomweb_stow(up->web, b->study, paths, b->count, &rep);
    /* The request's time includes a token fetch it had to wait for. */
    if (r != -ECANCELED && !rep.token_failed)
        monitor_http(up->params.monitor, MONITOR_STOW,
                     r < 0 ? 0 : rep.http_status,
                     (double)(util_now_monotonic_ms() - sent_ms) / 1000.0,
                     r < 0 ? rep.error : NULL);
    if (rep.replayed)
        log_notice("event=token-refused status=401 action=\"refresh and "
                   "replay once\"");
    if (rep.token_failed) {
        snprintf(why, sizeof(why), "no token: %s", rep.error);
        /* A refused client is a configuration problem: retry slowly. */
        defer_all(up, b, 0, r == -EACCES ? up->params.retry_max_s : 0, why);
    } else if (r == -ECANCELED) {
        requeue_all(up, b);
    } else if (r < 0) {
        no_answer(up, b, &rep);
    } else {
        atomic_store(&up->connection_failures, 0);
        apply_answer(w, b, &rep, may_split);
    }
out:
    dicomweb_reply_free(&rep);
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
    free(w);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* The scheduler                                                       */
/* ------------------------------------------------------------------ */

/*
 * The UIDs of entry @id (listed in @state) for the index: from meta/,
 * else parsed from the file, which costs one of *@budget (the UIDs are
 * then kept in meta/). Returns 0, -EAGAIN when the budget is spent,
 * -ENOENT when the file is gone, -EINVAL when it cannot be read as DICOM.
 */
static int entry_uids(struct uploader *up, enum spool_state state,
                      const char *id, unsigned *budget,
                      struct spool_meta *ret_meta)
{
    struct spool_meta meta;
    char path[4096];
    bool have = spool_meta_read(up->params.spool, id, &meta) == 0;

    if (have && util_uid_valid(meta.study_uid) &&
        util_uid_valid(meta.sop_uid)) {
        *ret_meta = meta;
        return 0;
    }
    if (*budget == 0)
        return -EAGAIN;
    (*budget)--;
    if (!have)
        memset(&meta, 0, sizeof(meta));
    if (spool_entry_path(up->params.spool, state, id, path, sizeof(path)) < 0)
        return -EINVAL;
    if (part10_read_instance_uids(path, meta.study_uid, meta.sop_uid, NULL, 0) <
        0)
        return access(path, F_OK) == 0 ? -EINVAL : -ENOENT;
    /* The receiver writes meta/ just after the commit: if it did so
     * meanwhile, keep its version (with the calling AE). */
    struct spool_meta again;
    if (!have && spool_meta_read(up->params.spool, id, &again) == 0 &&
        util_uid_valid(again.study_uid) && util_uid_valid(again.sop_uid)) {
        *ret_meta = again;
        return 0;
    }
    save_meta(up, id, &meta);
    *ret_meta = meta;
    return 0;
}

/* Moves @id from @state to failed/ with @why (the scheduler's own). */
static void fail_from(struct uploader *up, enum spool_state state,
                      const char *id, const char *why)
{
    char err[256];

    if (spool_move(up->params.spool, id, state, SPOOL_ACTIVE, err,
                   sizeof(err)) == 0)
        fail_entry(up, id, 0, 0, why);
}

/* One state's listing in a scheduling pass. */
struct listing {
    enum spool_state state;
    struct spool_entry *entries;
    size_t count;
    size_t next;
};

/*
 * Brings the index up to date with this pass's listings of active/,
 * deferred/ and incoming/ (listed in that order, so an entry moving
 * forward meanwhile is seen at least once), walked together in ID order.
 * Only entries the index has not seen are read (meta/, or the file within
 * UPLOADER_PARSE_BUDGET); when the budget runs out, the walk stops and
 * @frontier gets the first ID not looked at: no entry from there on may
 * be sent in this pass, since an earlier copy might be among them.
 * @frontier is "" when every entry was looked at.
 */
static void index_refresh(struct uploader *up, struct listing lists[3],
                          bool drop_in_flight, char frontier[SPOOL_ID_MAX])
{
    unsigned budget = UPLOADER_PARSE_BUDGET;

    frontier[0] = '\0';
    sopindex_scan_begin(up->index);
    for (;;) {
        const struct spool_entry *e = NULL;
        enum spool_state state = SPOOL_INCOMING;
        struct spool_meta meta;
        const char *min = NULL;
        int r;

        for (int i = 0; i < 3; i++)
            if (lists[i].next < lists[i].count &&
                (min == NULL ||
                 strcmp(lists[i].entries[lists[i].next].id, min) < 0))
                min = lists[i].entries[lists[i].next].id;
        if (min == NULL)
            break;
        /* Listed twice (it moved between two listings): the later wins. */
        for (int i = 0; i < 3; i++)
            if (lists[i].next < lists[i].count &&
                strcmp(lists[i].entries[lists[i].next].id, min) == 0) {
                e = &lists[i].entries[lists[i].next++];
                state = lists[i].state;
            }
        if (sopindex_scan_seen(up->index, e->id, state) ||
            state == SPOOL_ACTIVE)
            continue; /* known; active/ holds only what we moved there */
        r = entry_uids(up, state, e->id, &budget, &meta);
        if (r == 0)
            r = sopindex_add(up->index, e->id, meta.study_uid, meta.sop_uid,
                             e->size, state);
        if (r == -EAGAIN || r == -ENOMEM) {
            memcpy(frontier, e->id, strlen(e->id) + 1);
            break;
        }
        if (r == -EINVAL)
            fail_from(up, state, e->id,
                      "the entry cannot be read as DICOM (no valid "
                      "StudyInstanceUID or SOPInstanceUID)");
    }
    (void)sopindex_scan_end(up->index, frontier[0] ? frontier : NULL,
                            drop_in_flight);
}

/* A held identical copy shares the fate of the copy it waited for. */
static void resolve_duplicate(struct uploader *up,
                              const struct sopindex_member *m,
                              const struct landing_record *rec, const char *sop)
{
    char why[320];
    char err[256];
    int r;

    if (rec->kind == LANDED_DELIVERED) {
        r = spool_remove(up->params.spool, m->id, m->state, err, sizeof(err));
        if (r == -ENOENT)
            return; /* moved meanwhile: the next pass sees it again */
        if (r < 0) {
            log_err("id=%s event=remove-failed reason=\"%s\"", m->id, err);
            return;
        }
        log_info("id=%s event=duplicate-removed sop=%s of=%s "
                 "reason=\"identical copy of %s, which was delivered\"",
                 m->id, sop, rec->id, rec->id);
        return;
    }
    snprintf(why, sizeof(why), "identical copy of %s, which failed: %s",
             rec->id, rec->why);
    fail_from(up, m->state, m->id, why);
}

/* Applies the outcomes the workers reported since the last pass. */
static void apply_landings(struct uploader *up,
                           const struct landing_record *recs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct landing_record *rec = &recs[i];
        struct sopindex_member *run = NULL;
        char sop[UTIL_UID_MAX + 1];
        size_t count = 0;

        if (!sopindex_contains(up->index, rec->id))
            continue;
        if (rec->kind == LANDED_DEFERRED || rec->kind == LANDED_REQUEUED) {
            sopindex_set_in_flight(up->index, rec->id, false);
            continue;
        }
        snprintf(sop, sizeof(sop), "%s", sopindex_sop(up->index, rec->id));
        (void)sopindex_take_run(up->index, rec->id, &run, &count);
        for (size_t k = 0; k < count; k++)
            resolve_duplicate(up, &run[k], rec, sop);
        free(run);
    }
}

/* The index's digest function: the entry's file in @state. */
static int digest_entry(void *ctx, const char *id, enum spool_state state,
                        struct sopindex_digest *ret_digest)
{
    struct uploader *up = ctx;
    char path[4096];

    if (spool_entry_path(up->params.spool, state, id, path, sizeof(path)) < 0)
        return -ENAMETOOLONG;
    return sopindex_digest_file(path, ret_digest, up->digest_err,
                                sizeof(up->digest_err));
}

/* Records in meta/ which copy @id waits for or conflicts with. */
static void note_copy_of(struct uploader *up, const char *id, const char *other)
{
    struct spool_meta meta;

    load_meta(up, id, &meta);
    if (strcmp(meta.copy_of, other) == 0)
        return;
    snprintf(meta.copy_of, sizeof(meta.copy_of), "%s", other);
    save_meta(up, id, &meta);
}

/*
 * May candidate @id (listed in @state) be sent now? The copy rules of
 * sopindex.h: a duplicate or conflict is logged once; with keep-first a
 * conflicting copy goes to failed/ at once.
 */
static bool admit(struct uploader *up, const char *id, enum spool_state state)
{
    struct sopindex_judgement j;
    char mine[SOPINDEX_HEX_SHOWN + 1];
    char theirs[SOPINDEX_HEX_SHOWN + 1];
    char sop[UTIL_UID_MAX + 1];
    char why[320];
    const char *s = sopindex_sop(up->index, id);

    if (s == NULL || sopindex_judge(up->index, id, digest_entry, up, &j) < 0)
        return false;
    snprintf(sop, sizeof(sop), "%s", s);
    sopindex_digest_hex(&j.digest, mine);
    sopindex_digest_hex(&j.other_digest, theirs);
    switch (j.verdict) {
    case SOPINDEX_SEND:
        return true;
    case SOPINDEX_WAIT:
        if (j.error != 0 && j.error != -ENOENT && j.first)
            log_warning("id=%s event=compare-failed sop=%s reason=\"%s\", "
                        "will retry",
                        id, sop, up->digest_err);
        return false;
    case SOPINDEX_DUPLICATE:
        if (j.first) {
            note_copy_of(up, id, j.other_id);
            log_notice("id=%s event=duplicate sop=%s of=%s bytes=%llu "
                       "sha256=%s action=\"held: removed once %s is "
                       "delivered, failed with it if it fails\"",
                       id, sop, j.other_id, (unsigned long long)j.size, mine,
                       j.other_id);
        }
        return false;
    case SOPINDEX_CONFLICT:
        if (j.first) {
            note_copy_of(up, id, j.other_id);
            log_warning("id=%s event=conflict sop=%s earlier=%s bytes=%llu "
                        "earlier_bytes=%llu sha256=%s earlier_sha256=%s "
                        "transfer_syntax=%s earlier_transfer_syntax=%s "
                        "action=\"%s\"",
                        id, sop, j.other_id, (unsigned long long)j.size,
                        (unsigned long long)j.other_size, mine, theirs,
                        j.digest.transfer_syntax[0] ? j.digest.transfer_syntax
                                                    : "-",
                        j.other_digest.transfer_syntax[0]
                            ? j.other_digest.transfer_syntax
                            : "-",
                        up->params.on_conflict_send
                            ? "sent once the earlier copy is resolved "
                              "(upload.on_conflict send)"
                            : "to failed/, the earlier copy is kept "
                              "(upload.on_conflict keep-first)");
        }
        if (up->params.on_conflict_send)
            return false;
        snprintf(why, sizeof(why),
                 "conflicting duplicate of %s: another "
                 "data set under the same SOP Instance "
                 "UID (sha256 %s, the earlier one %s); "
                 "upload.on_conflict keep-first keeps "
                 "the earlier copy",
                 j.other_id, mine, theirs);
        fail_from(up, state, id, why);
        sopindex_remove(up->index, id);
        return false;
    }
    return false;
}

/* Takes the outcomes reported since the last pass (caller frees). */
static struct landing_record *take_landings(struct uploader *up,
                                            size_t *ret_count, bool *ret_lost)
{
    struct landing_record *recs;

    pthread_mutex_lock(&up->lock);
    recs = up->landings;
    *ret_count = up->landing_count;
    *ret_lost = up->landings_lost;
    up->landings = NULL;
    up->landing_count = 0;
    up->landing_cap = 0;
    up->landings_lost = false;
    pthread_mutex_unlock(&up->lock);
    return recs;
}

/*
 * The planner's candidates of a pass: the entries of incoming/ and then of
 * deferred/ (each listing in ID order) that sort before @frontier ("":
 * all), with their UIDs from the copies index (NULL: not indexed).
 * *@ret is the caller's to free.
 */
static int gather_candidates(struct uploader *up,
                             const struct listing *incoming,
                             const struct listing *deferred,
                             const char *frontier, struct plan_candidate **ret,
                             size_t *ret_count)
{
    const struct listing *lists[2] = { incoming, deferred };
    struct plan_candidate *cands;
    size_t n = 0;

    cands = calloc(incoming->count + deferred->count + 1, sizeof(*cands));
    if (cands == NULL)
        return -ENOMEM;
    for (int l = 0; l < 2; l++)
        for (size_t i = 0; i < lists[l]->count; i++) {
            const struct spool_entry *e = &lists[l]->entries[i];
            struct plan_candidate *c = &cands[n];

            if (frontier[0] != '\0' && strcmp(e->id, frontier) >= 0)
                break; /* listings are in ID order */
            c->id = e->id;
            c->study_uid = sopindex_study(up->index, e->id);
            c->sop_uid = sopindex_sop(up->index, e->id);
            c->size = e->size;
            c->retry = lists[l]->state == SPOOL_DEFERRED;
            c->not_before_us = e->mtime_us;
            n++;
        }
    *ret = cands;
    *ret_count = n;
    return 0;
}

/* Moves the entries of planned batch @pb to active/ and queues them for
 * the workers. Returns true when a batch was queued. */
static bool enqueue_batch(struct uploader *up, const struct plan *plan,
                          const struct plan_batch *pb,
                          const struct plan_candidate *cands)
{
    struct batch *b = calloc(1, sizeof(*b));
    const char *study = cands[pb->study_candidate].study_uid;

    if (b != NULL)
        b->ids = calloc(pb->count, sizeof(*b->ids));
    if (b == NULL || b->ids == NULL) {
        batch_free(b);
        return false;
    }
    snprintf(b->study, sizeof(b->study), "%s", study);
    for (size_t k = 0; k < pb->count; k++) {
        const struct plan_candidate *c = &cands[plan->members[pb->first + k]];
        char move_err[256];

        if (spool_move(up->params.spool, c->id,
                       c->retry ? SPOOL_DEFERRED : SPOOL_INCOMING, SPOOL_ACTIVE,
                       move_err, sizeof(move_err)) < 0)
            continue; /* lost race, or logged by the next pass */
        sopindex_set_in_flight(up->index, c->id, true);
        memcpy(b->ids[b->count], c->id, strlen(c->id) + 1);
        b->count++;
        b->bytes += c->size;
    }
    if (b->count == 0) {
        batch_free(b);
        return false;
    }
    snprintf(up->last_study, sizeof(up->last_study), "%s", b->study);
    pthread_mutex_lock(&up->lock);
    up->queue[up->queued++] = b;
    pthread_cond_broadcast(&up->changed);
    pthread_mutex_unlock(&up->lock);
    return true;
}

/*
 * One pass: list the spool, bring the copies index up to date, resolve
 * the duplicates of what the workers finished, then, while the workers'
 * queue has room, plan batches (plan.h) of the candidates the copy rules
 * admit and queue them. meta/ is read only for entries the index has not
 * seen. Returns the number of batches queued.
 */
static unsigned schedule_pass(struct uploader *up)
{
    struct listing lists[3] = {
        { .state = SPOOL_ACTIVE },
        { .state = SPOOL_DEFERRED },
        { .state = SPOOL_INCOMING },
    };
    struct plan_candidate *cands = NULL;
    size_t n_cands = 0;
    size_t *order = NULL;
    size_t n_order = 0;
    struct plan plan = { 0 };
    struct plan_limits limits;
    unsigned queued = 0;
    struct landing_record *landings;
    size_t n_landings = 0;
    bool lost = false;
    char frontier[SPOOL_ID_MAX];
    char err[256];
    size_t room;

    landings = take_landings(up, &n_landings, &lost);
    for (int i = 0; i < 3; i++) {
        if (spool_list(up->params.spool, lists[i].state, &lists[i].entries,
                       &lists[i].count, err, sizeof(err)) < 0) {
            log_err("event=scheduler-error reason=\"%s\", will retry", err);
            apply_landings(up, landings, n_landings);
            goto out;
        }
    }
    index_refresh(up, lists, lost, frontier);
    apply_landings(up, landings, n_landings);

    pthread_mutex_lock(&up->lock);
    room = up->worker_count - up->queued;
    pthread_mutex_unlock(&up->lock);
    if (room == 0)
        goto out;
    /* Beyond the frontier the index is incomplete: nothing there is a
     * candidate yet. */
    if (gather_candidates(up, &lists[2], &lists[1], frontier, &cands,
                          &n_cands) < 0 ||
        plan_select(cands, n_cands, now_us(), 2 * UPLOADER_WINDOW, &order,
                    &n_order) < 0)
        goto out;
    for (size_t i = 0; i < n_order && !atomic_load(&up->stop); i++) {
        struct plan_candidate *c = &cands[order[i]];

        if (c->study_uid == NULL ||
            !admit(up, c->id, c->retry ? SPOOL_DEFERRED : SPOOL_INCOMING)) {
            /* admit() may have dropped it from the index: its UIDs with
             * it. */
            c->held = true;
            c->study_uid = NULL;
            c->sop_uid = NULL;
        }
    }
    limits.batch_max_instances = up->params.batch_max_instances;
    limits.batch_max_bytes = up->params.batch_max_bytes;
    limits.max_batches = room;
    if (atomic_load(&up->stop) ||
        plan_batches(cands, order, n_order, &limits, up->last_study, &plan) < 0)
        goto out;
    for (size_t i = 0; i < plan.batch_count && !atomic_load(&up->stop); i++)
        if (enqueue_batch(up, &plan, &plan.batches[i], cands))
            queued++;

out:
    plan_free(&plan);
    free(order);
    free(cands);
    free(landings);
    for (int i = 0; i < 3; i++)
        free(lists[i].entries);
    return queued;
}

static void *scheduler_main(void *arg)
{
    struct uploader *up = arg;

    while (!atomic_load(&up->stop)) {
        int64_t paused = current_pause(up);
        int64_t wait_ms = UPLOADER_IDLE_MS;

        if (paused <= now_us()) {
            if (schedule_pass(up) > 0)
                wait_ms = 50; /* more may be waiting: look again soon */
        } else {
            wait_ms = (paused - now_us()) / 1000;
            if (wait_ms > UPLOADER_IDLE_MS)
                wait_ms = UPLOADER_IDLE_MS;
            if (wait_ms < 1)
                wait_ms = 1;
        }
        struct timespec ts;
        util_deadline_ms(CLOCK_REALTIME, (uint64_t)wait_ms, &ts);
        pthread_mutex_lock(&up->lock);
        if (!atomic_load(&up->stop))
            pthread_cond_timedwait(&up->changed, &up->lock, &ts);
        pthread_mutex_unlock(&up->lock);
    }
    return NULL;
}

/* The DICOMweb client of the workers: one pooled handle each. */
static struct dicomweb *open_web(struct uploader *up)
{
    struct dicomweb_params wp = {
        .base_url = up->url,
        .ca_file = up->ca_file,
        .timeout_s = up->params.timeout_s,
        .tokens = up->params.tokens,
        .pool_size = up->worker_count,
        .cancelled = uploader_cancelled,
        .cancel_ctx = up,
    };

    return dicomweb_new(&wp);
}

/* Frees @up and what it holds, once its threads are joined (or were
 * never started); its locks must have been initialised. */
static void uploader_release(struct uploader *up)
{
    pthread_cond_destroy(&up->changed);
    pthread_mutex_destroy(&up->pause_lock);
    pthread_mutex_destroy(&up->lock);
    sopindex_free(up->index);
    dicomweb_free(up->web);
    free(up->landings);
    free(up->queue);
    free(up->workers);
    free(up->url);
    free(up->ca_file);
    free(up);
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
    up->index = sopindex_new();
    if (up->params.max_pause_s == 0)
        up->params.max_pause_s = 1;
    pthread_mutex_init(&up->lock, NULL);
    pthread_mutex_init(&up->pause_lock, NULL);
    pthread_cond_init(&up->changed, NULL);
    if (up->url == NULL || up->workers == NULL || up->queue == NULL ||
        up->index == NULL || (params->ca_file != NULL && up->ca_file == NULL)) {
        log_err("event=uploader-failed reason=\"out of memory\"");
        goto fail;
    }
    up->params.url = up->url;
    up->params.ca_file = up->ca_file;
    adopt_pause(up);
    up->web = open_web(up);
    if (up->web == NULL) {
        log_err("event=uploader-failed reason=\"out of memory\"");
        goto fail;
    }

    for (unsigned i = 0; i < up->worker_count; i++) {
        struct worker *w = calloc(1, sizeof(*w));
        if (w != NULL)
            w->up = up;
        if (w == NULL ||
            pthread_create(&up->workers[i], NULL, worker_main, w) != 0) {
            free(w);
            log_err("event=uploader-failed reason=\"cannot start worker "
                    "%u\"",
                    i);
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
    log_notice("event=uploader-started url=%s workers=%u batch=%u/%llu MiB "
               "on_conflict=%s max_pause_s=%u",
               up->url, up->worker_count, params->batch_max_instances,
               (unsigned long long)(params->batch_max_bytes >> 20),
               params->on_conflict_send ? "send" : "keep-first",
               up->params.max_pause_s);
    return up;

fail:
    uploader_release(up);
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
    uploader_release(up);
    log_notice("event=uploader-stopped");
}
