/* SPDX-License-Identifier: Apache-2.0 */
/*
 * monitor - see monitor.h.
 *
 * Locking: counters and histograms are the registry's atomics. The
 * summaries (spool, destination, token, studies, failed entries) sit
 * under one mutex, held for copies only: the refresh thread scans the
 * spool without it and swaps the result in. The provider callbacks run
 * on the admin thread and only copy.
 */
#include "monitor.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "admin/admin.h"
#include "base/log.h"
#include "base/metrics.h"
#include "base/metrics_catalog.h"
#include "base/util.h"
#include "scp/scp.h"
#include "spool/spool.h"
#include "web/oauth.h"

/* The four spool states the metrics and the page show, in
 * enum admin_backlog_state order. */
static const enum spool_state monitor_states[ADMIN_BACKLOG_COUNT] = {
    SPOOL_INCOMING, SPOOL_ACTIVE, SPOOL_DEFERRED, SPOOL_FAILED
};
static const char *const monitor_state_names[ADMIN_BACKLOG_COUNT] = {
    METRICS_STATE_INCOMING, METRICS_STATE_ACTIVE, METRICS_STATE_DEFERRED,
    METRICS_STATE_FAILED
};
static const char *const monitor_service_names[] = { METRICS_SERVICE_STOW,
                                                     METRICS_SERVICE_QIDO,
                                                     METRICS_SERVICE_TOKEN };

/* The longest admin token file read. */
#define MONITOR_TOKEN_MAX 4096
/* What the destination is asked when nothing else proved it reachable:
 * a point look-up of a UID that exists nowhere (2.25.0), as cheap for a
 * server as a request can be; any answer but 401/403 is proof. */
#define MONITOR_PROBE_PATH "/studies?StudyInstanceUID=2.25.0"
/* Rates are sampled every step; the page shows 5 min and 1 h. */
#define MONITOR_RATE_STEP_S 10
#define MONITOR_RATE_HORIZON_S 3600

struct monitor {
    /* What monitor_new() copied. */
    char *version;
    char *node;
    char *spool_dir;
    char *url;
    char *token_source;
    char *listen;
    char *token_file;
    char **callers;
    size_t caller_count;
    struct spool *spool;
    uint64_t min_free_bytes;
    uint16_t dicom_port;
    bool allow_actions;
    uint32_t ready_window_s;
    int64_t started_s;
    int (*notify)(const char *state);

    struct metrics *metrics;
    struct metrics_catalog cat;
    struct metrics_series *associations;
    struct metrics_series *delivered;
    struct metrics_series *delivered_bytes;
    struct metrics_series *token_expiry;
    struct metrics_series *destination_up;
    struct metrics_series *upload_time;
    struct metrics_series *cfind_time;
    struct metrics_series *latency;
    struct metrics_series *free_bytes_gauge;
    struct metrics_series *commits_journal;
    struct metrics_series *commits_file;
    struct metrics_series *journal_flushes;
    struct metrics_series *journal_up;
    struct metrics_series *spool_count[ADMIN_BACKLOG_COUNT];
    struct metrics_series *spool_bytes[ADMIN_BACKLOG_COUNT];
    struct metrics_series *spool_age[ADMIN_BACKLOG_COUNT];
    struct admin_events *events;
    struct admin_rate *rx;
    struct admin_rate *rx_bytes;
    struct admin_rate *tx;
    struct admin_rate *tx_bytes;
    struct admin *admin;

    atomic_bool listening;
    _Atomic int64_t destination_ok_s;

    /* Under lock. */
    pthread_mutex_t lock;
    struct spool_state_stats stats[SPOOL_STATE_COUNT];
    int64_t stats_time_s; /* when they were taken; 0: never */
    uint64_t free_bytes;
    struct spool_commit_stats seen; /* the spool's counts at the last render */
    bool writable;
    char spool_error[ADMIN_TEXT_MAX];
    struct admin_failed_entry *failed; /* ADMIN_FAILED_MAX, newest first */
    size_t failed_count;
    struct admin_destination dest;
    struct admin_token_state token;
    struct admin_study *studies; /* MONITOR_STUDIES_TRACKED */
    size_t study_count;
    char last_status[256];

    /* The refresh thread. */
    pthread_t thread;
    bool thread_started;
    pthread_t probe_thread;
    bool probe_started;
    pthread_mutex_t wake_lock;
    pthread_cond_t wake;
    bool stop;
    atomic_bool rescan; /* an action changed the spool */

    /* systemd watchdog: WATCHDOG_USEC / 2 in ms; 0: off. */
    uint64_t watchdog_ms;
    uint64_t last_watchdog_ms;

    /* Wrapped C-FIND handler and QIDO fetch. */
    struct scp_find_handler find_inner;
    find_fetch_fn fetch_inner;
    void *fetch_ctx;
};

/* One C-FIND in flight, for its duration. */
struct monitor_find_session {
    struct monitor *monitor;
    void *inner;
    uint64_t start_ms;
};

static int64_t monitor_now_s(void)
{
    return (int64_t)time(NULL);
}

static char *monitor_strdup(const char *s)
{
    return strdup(s != NULL ? s : "");
}

/* ---- configuration --------------------------------------------------- */

int monitor_config_check(const char *listen, const char *token_file,
                         bool allow_actions, char *err, size_t err_len)
{
    return admin_config_check(listen != NULL ? listen : "",
                              token_file != NULL && token_file[0] != '\0',
                              allow_actions, err, err_len);
}

/* Reads the admin token: a regular file not readable by others, one
 * line (trailing white space dropped). */
static int monitor_read_token(const char *path, char **ret_token, char *err,
                              size_t err_len)
{
    struct stat st;
    char *text;
    ssize_t n;
    size_t len = 0;
    int fd;
    int r = 0;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        r = -errno;
        snprintf(err, err_len, "admin.token_file: cannot read '%s': %s", path,
                 strerror(-r));
        return r;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, err_len,
                 "admin.token_file: '%s' is not a regular "
                 "file",
                 path);
        (void)close(fd);
        return -EINVAL;
    }
    if ((st.st_mode & 0007) != 0) {
        snprintf(err, err_len,
                 "admin.token_file: '%s' is readable by "
                 "others (mode %04o); chmod 0600 or 0640 it",
                 path, (unsigned)(st.st_mode & 07777));
        (void)close(fd);
        return -EPERM;
    }
    text = calloc(1, MONITOR_TOKEN_MAX + 1);
    if (text == NULL) {
        (void)close(fd);
        return -ENOMEM;
    }
    while (len < MONITOR_TOKEN_MAX &&
           (n = read(fd, text + len, MONITOR_TOKEN_MAX - len)) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            r = -errno;
            break;
        }
        len += (size_t)n;
    }
    (void)close(fd);
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' ||
                       text[len - 1] == ' ' || text[len - 1] == '\t'))
        text[--len] = '\0';
    if (r == 0 &&
        (len == 0 || len >= MONITOR_TOKEN_MAX ||
         memchr(text, '\0', len) != NULL || memchr(text, '\n', len) != NULL)) {
        snprintf(err, err_len,
                 "admin.token_file: the token in '%s' is "
                 "empty, longer than %d bytes or not one line",
                 path, MONITOR_TOKEN_MAX - 1);
        r = -EINVAL;
    } else if (r < 0) {
        snprintf(err, err_len, "admin.token_file: cannot read '%s': %s", path,
                 strerror(-r));
    }
    if (r < 0) {
        explicit_bzero(text, MONITOR_TOKEN_MAX + 1);
        free(text);
        return r;
    }
    *ret_token = text;
    return 0;
}

/* ---- the studies in flight ------------------------------------------- */

/* The row of @study_uid, created (evicting the least recently active
 * finished study, else the least recently active one) when @create.
 * Under lock. */
static struct admin_study *monitor_study(struct monitor *mon,
                                         const char *study_uid,
                                         const char *calling_ae, bool create)
{
    struct admin_study *victim = NULL;
    int64_t now = monitor_now_s();

    if (study_uid == NULL || study_uid[0] == '\0')
        return NULL;
    for (size_t i = 0; i < mon->study_count; i++)
        if (strcmp(mon->studies[i].study_uid, study_uid) == 0)
            return &mon->studies[i];
    if (!create)
        return NULL;
    if (mon->study_count < MONITOR_STUDIES_TRACKED) {
        victim = &mon->studies[mon->study_count++];
    } else {
        for (size_t i = 0; i < mon->study_count; i++) {
            struct admin_study *s = &mon->studies[i];
            bool done = s->delivered + s->failed >= s->received;
            bool vdone = victim != NULL &&
                         victim->delivered + victim->failed >= victim->received;
            if (victim == NULL || (done && !vdone) ||
                (done == vdone && s->last_s < victim->last_s))
                victim = s;
        }
    }
    memset(victim, 0, sizeof(*victim));
    admin_copy_text(victim->study_uid, sizeof(victim->study_uid), study_uid);
    admin_copy_text(victim->calling_ae, sizeof(victim->calling_ae), calling_ae);
    victim->first_s = now;
    victim->last_s = now;
    return victim;
}

/* ---- hooks ------------------------------------------------------------ */

void monitor_received(struct monitor *mon, const char *calling_ae,
                      const char *study_uid, uint64_t bytes)
{
    struct admin_study *s;

    if (mon == NULL)
        return;
    metrics_counter_inc(
        METRICS_SERIES(mon->cat.received_instances, calling_ae));
    metrics_counter_add(METRICS_SERIES(mon->cat.received_bytes, calling_ae),
                        bytes);
    pthread_mutex_lock(&mon->lock);
    s = monitor_study(mon, study_uid, calling_ae, true);
    if (s != NULL) {
        s->received++;
        s->last_s = monitor_now_s();
    }
    pthread_mutex_unlock(&mon->lock);
}

void monitor_refused(struct monitor *mon, uint16_t status)
{
    char code[8];

    if (mon == NULL)
        return;
    snprintf(code, sizeof(code), "%04X", (unsigned)status);
    metrics_counter_inc(METRICS_SERIES(mon->cat.store_refusals, code));
}

void monitor_association(struct monitor *mon, int delta)
{
    if (mon != NULL)
        metrics_gauge_add(mon->associations, (double)delta);
}

void monitor_delivered(struct monitor *mon, struct spool *spool, const char *id,
                       const struct spool_meta *meta)
{
    char path[4096];
    struct stat st;
    uint64_t arrival_us = 0;
    uint64_t bytes = 0;
    struct admin_study *s;

    if (mon == NULL)
        return;
    if (spool_entry_path(spool, SPOOL_ACTIVE, id, path, sizeof(path)) == 0 &&
        stat(path, &st) == 0)
        bytes = (uint64_t)st.st_size;
    metrics_counter_inc(mon->delivered);
    metrics_counter_add(mon->delivered_bytes, bytes);
    if (spool_id_arrival_us(id, &arrival_us) == 0) {
        uint64_t now = util_now_realtime_us();
        metrics_histogram_observe(
            mon->latency,
            now > arrival_us ? (double)(now - arrival_us) / 1e6 : 0.0);
    }
    pthread_mutex_lock(&mon->lock);
    s = monitor_study(mon, meta != NULL ? meta->study_uid : NULL, NULL, false);
    if (s != NULL) {
        s->delivered++;
        s->last_s = monitor_now_s();
    }
    pthread_mutex_unlock(&mon->lock);
}

/* The deferral reason label for an outcome. */
static const char *monitor_defer_reason(long status, uint16_t reason,
                                        const char *why)
{
    if (reason != 0)
        return METRICS_REASON_INSTANCE;
    if (status == 401)
        return METRICS_REASON_UNAUTHORIZED;
    if (status == 403)
        return METRICS_REASON_FORBIDDEN;
    if (status == 429 || status == 408 || status == 503)
        return METRICS_REASON_THROTTLED;
    if (status >= 500)
        return METRICS_REASON_SERVER_ERROR;
    if (status == 0 && why != NULL && strncmp(why, "no token", 8) == 0)
        return METRICS_REASON_TOKEN;
    if (status == 0 && why != NULL && strncmp(why, "no answer", 9) == 0)
        return METRICS_REASON_NETWORK;
    if (status == 0)
        return METRICS_REASON_LOCAL;
    return METRICS_REASON_SERVER_ERROR;
}

void monitor_deferred(struct monitor *mon, long status, uint16_t reason,
                      const char *why)
{
    if (mon == NULL)
        return;
    metrics_counter_inc(METRICS_SERIES(
        mon->cat.deferrals, monitor_defer_reason(status, reason, why)));
}

void monitor_dead_letter(struct monitor *mon, long status,
                         const struct spool_meta *meta, const char *why)
{
    const char *label = METRICS_REASON_REJECTED;
    struct admin_study *s;

    if (mon == NULL)
        return;
    if (why != NULL && strncmp(why, "expired", 7) == 0)
        label = METRICS_REASON_EXPIRED;
    else if (status == 0)
        label = METRICS_REASON_UNREADABLE;
    metrics_counter_inc(METRICS_SERIES(mon->cat.dead_letters, label));
    pthread_mutex_lock(&mon->lock);
    s = monitor_study(mon, meta != NULL ? meta->study_uid : NULL, NULL, false);
    if (s != NULL) {
        s->failed++;
        s->last_s = monitor_now_s();
    }
    pthread_mutex_unlock(&mon->lock);
    atomic_store(&mon->rescan, true);
}

void monitor_http(struct monitor *mon, enum monitor_service service,
                  long status, double seconds, const char *error)
{
    char code[24];
    int64_t now = monitor_now_s();

    if (mon == NULL)
        return;
    if (status > 0)
        snprintf(code, sizeof(code), "%ld", status);
    else
        snprintf(code, sizeof(code), "%s", METRICS_CODE_NO_ANSWER);
    metrics_counter_inc(METRICS_SERIES(mon->cat.http_responses,
                                       monitor_service_names[service], code));
    if (service == MONITOR_STOW)
        metrics_histogram_observe(mon->upload_time, seconds);
    if (service == MONITOR_TOKEN)
        return;
    pthread_mutex_lock(&mon->lock);
    if ((status >= 200 && status < 300) ||
        (status >= 400 && status < 500 && status != 401 && status != 403)) {
        atomic_store(&mon->destination_ok_s, now);
        mon->dest.up = true;
        mon->dest.last_success_s = now;
    } else {
        mon->dest.last_failure_s = now;
        if (status == 0 || status >= 500)
            mon->dest.up = false;
        if (status > 0)
            snprintf(mon->dest.last_error, sizeof(mon->dest.last_error),
                     "HTTP %ld%s%s", status, error != NULL ? ": " : "",
                     error != NULL ? error : "");
        else
            admin_copy_text(mon->dest.last_error, sizeof(mon->dest.last_error),
                            error != NULL ? error : "no answer");
    }
    if (status == 401 || status == 403) {
        mon->token.last_denied_s = now;
        mon->token.last_denied_status = (int)status;
    }
    metrics_gauge_set(mon->destination_up, mon->dest.up ? 1.0 : 0.0);
    pthread_mutex_unlock(&mon->lock);
}

void monitor_token_fetch(struct monitor *mon, bool ok, long status,
                         int64_t expires_s, const char *error)
{
    if (mon == NULL)
        return;
    metrics_counter_inc(
        METRICS_SERIES(mon->cat.token_refreshes,
                       ok ? METRICS_RESULT_OK : METRICS_RESULT_FAILED));
    if (status >= 0)
        monitor_http(mon, MONITOR_TOKEN, status, 0.0, NULL);
    pthread_mutex_lock(&mon->lock);
    mon->token.last_refresh_s = monitor_now_s();
    mon->token.last_refresh_ok = ok;
    if (ok) {
        mon->token.have_token = true;
        mon->token.expires_s = expires_s;
        mon->token.last_refresh_error[0] = '\0';
        metrics_gauge_set(mon->token_expiry, (double)expires_s);
    } else {
        admin_copy_text(mon->token.last_refresh_error,
                        sizeof(mon->token.last_refresh_error), error);
    }
    pthread_mutex_unlock(&mon->lock);
}

static void monitor_on_stored(void *ctx, const char *calling_ae,
                              const char *study_uid, uint64_t bytes)
{
    monitor_received(ctx, calling_ae, study_uid, bytes);
}

static void monitor_on_refused(void *ctx, uint16_t status)
{
    monitor_refused(ctx, status);
}

static void monitor_on_association(void *ctx, int delta)
{
    monitor_association(ctx, delta);
}

void monitor_scp_observer(struct monitor *mon, struct scp_observer *ret)
{
    memset(ret, 0, sizeof(*ret));
    if (mon == NULL)
        return;
    ret->ctx = mon;
    ret->stored = monitor_on_stored;
    ret->refused = monitor_on_refused;
    ret->association = monitor_on_association;
}

/* A token request ended: the HTTP code is 200 for a token; for a
 * refusal, the "HTTP nnn" our own error text names (oauth.c writes it),
 * else no answer. A token command has no HTTP exchange. */
static void monitor_on_token(void *ctx, bool ok, int64_t expires_s,
                             const char *error)
{
    struct monitor *mon = ctx;
    const char *http = error != NULL ? strstr(error, "HTTP ") : NULL;
    long status = ok ? 200 : 0;

    if (!ok && http != NULL)
        status = strtol(http + 5, NULL, 10);
    if (status < 100 || status > 599)
        status = ok ? 200 : 0;
    monitor_token_fetch(mon, ok,
                        strcmp(mon->token_source, "command") == 0 ? -1 : status,
                        expires_s, error);
}

void monitor_oauth_observer(struct monitor *mon, struct oauth_params *params)
{
    if (mon == NULL)
        return;
    params->fetched = monitor_on_token;
    params->fetched_ctx = mon;
}

/* ---- C-FIND and QIDO wrappers ---------------------------------------- */

static void *monitor_find_begin(void *ctx, enum scp_find_model model,
                                const struct ds *identifier, const char *caller,
                                struct scp_find_status *ret_status)
{
    struct monitor *mon = ctx;
    struct monitor_find_session *s = calloc(1, sizeof(*s));
    uint64_t start = util_now_monotonic_ms();

    if (s == NULL) {
        ret_status->status = 0xA700;
        snprintf(ret_status->comment, sizeof(ret_status->comment),
                 "out of memory");
        return NULL;
    }
    s->monitor = mon;
    s->start_ms = start;
    s->inner = mon->find_inner.begin(mon->find_inner.ctx, model, identifier,
                                     caller, ret_status);
    if (s->inner == NULL) {
        metrics_histogram_observe(mon->cfind_time,
                                  (double)(util_now_monotonic_ms() - start) /
                                      1000.0);
        free(s);
        return NULL;
    }
    return s;
}

static int monitor_find_next(void *session, bool cancelled,
                             struct ds **ret_answer,
                             struct scp_find_status *ret_status)
{
    struct monitor_find_session *s = session;

    return s->monitor->find_inner.next(s->inner, cancelled, ret_answer,
                                       ret_status);
}

static void monitor_find_end(void *session)
{
    struct monitor_find_session *s = session;
    struct monitor *mon = s->monitor;

    mon->find_inner.end(s->inner);
    metrics_histogram_observe(mon->cfind_time,
                              (double)(util_now_monotonic_ms() - s->start_ms) /
                                  1000.0);
    free(s);
}

void monitor_wrap_find(struct monitor *mon,
                       const struct scp_find_handler *inner,
                       struct scp_find_handler *ret_handler)
{
    if (mon == NULL) {
        *ret_handler = *inner;
        return;
    }
    mon->find_inner = *inner;
    ret_handler->ctx = mon;
    ret_handler->begin = monitor_find_begin;
    ret_handler->next = monitor_find_next;
    ret_handler->end = monitor_find_end;
}

void monitor_wrap_fetch(struct monitor *mon, find_fetch_fn inner_fetch,
                        void *inner_ctx)
{
    mon->fetch_inner = inner_fetch;
    mon->fetch_ctx = inner_ctx;
}

int monitor_fetch(void *ctx, const char *path_and_query,
                  struct find_reply *ret_reply)
{
    struct monitor *mon = ctx;
    uint64_t start = util_now_monotonic_ms();
    int r = mon->fetch_inner(mon->fetch_ctx, path_and_query, ret_reply);

    if (!ret_reply->token_failed)
        monitor_http(mon, MONITOR_QIDO, r < 0 ? 0 : ret_reply->http_status,
                     (double)(util_now_monotonic_ms() - start) / 1000.0,
                     r < 0 ? ret_reply->error : NULL);
    return r;
}

/* ---- the log: events and the last 403's diagnosis -------------------- */

/* Copies the value of key="..." in @line (escaped as the log wrote it)
 * into @out, or returns false. */
static bool monitor_quoted_value(const char *line, const char *key, char *out,
                                 size_t out_len)
{
    const char *p = strstr(line, key);
    size_t n = 0;

    if (p == NULL || p[strlen(key)] != '"')
        return false;
    p += strlen(key) + 1;
    while (*p != '\0' && *p != '"' && n + 1 < out_len) {
        if (*p == '\\' && p[1] != '\0')
            p++;
        out[n++] = *p++;
    }
    out[n] = '\0';
    return true;
}

static void monitor_on_log(void *ctx, enum log_level level, const char *line,
                           size_t len)
{
    struct monitor *mon = ctx;
    char diagnosis[ADMIN_TEXT_MAX];

    (void)len;
    if (level > LOG_LEVEL_NOTICE)
        return;
    admin_events_push_line(mon->events, monitor_now_s(), line);
    if ((strncmp(line + 3, "event=forbidden ", 16) == 0 ||
         strstr(line, " event=forbidden ") != NULL) &&
        monitor_quoted_value(line, "diagnosis=", diagnosis,
                             sizeof(diagnosis))) {
        pthread_mutex_lock(&mon->lock);
        admin_copy_text(mon->token.last_denied_diagnosis,
                        sizeof(mon->token.last_denied_diagnosis), diagnosis);
        pthread_mutex_unlock(&mon->lock);
    }
}

/* ---- provider callbacks (admin thread) -------------------------------- */

static void monitor_fill_ready(struct monitor *mon, struct admin_ready *r)
{
    r->dicom_listening = atomic_load(&mon->listening);
    r->dicom_port = mon->dicom_port;
    pthread_mutex_lock(&mon->lock);
    r->spool_writable = mon->writable;
    admin_copy_text(r->spool_error, sizeof(r->spool_error), mon->spool_error);
    r->spool_free_bytes = mon->free_bytes;
    pthread_mutex_unlock(&mon->lock);
    r->spool_min_free_bytes = mon->min_free_bytes;
    r->destination_ok_s = atomic_load(&mon->destination_ok_s);
    r->window_s = mon->ready_window_s;
    r->receive_only = mon->url[0] == '\0';
}

static int monitor_provide_ready(void *ctx, struct admin_ready *ret_ready)
{
    monitor_fill_ready(ctx, ret_ready);
    return 0;
}

/* Studies still in flight first, most recent activity first. */
static int monitor_study_order(const void *a, const void *b)
{
    const struct admin_study *x = a;
    const struct admin_study *y = b;
    bool xo = x->delivered + x->failed < x->received;
    bool yo = y->delivered + y->failed < y->received;

    if (xo != yo)
        return xo ? -1 : 1;
    return x->last_s > y->last_s ? -1 : x->last_s < y->last_s ? 1 : 0;
}

static int monitor_provide_status(void *ctx, struct admin_status *st)
{
    struct monitor *mon = ctx;
    uint64_t now_ms = util_now_monotonic_ms();
    int64_t now = monitor_now_s();
    struct admin_study *order;
    size_t n;

    admin_copy_text(st->version, sizeof(st->version), mon->version);
    admin_copy_text(st->node, sizeof(st->node), mon->node);
    st->started_s = mon->started_s;
    monitor_fill_ready(mon, &st->ready);

    st->throughput.received_5m = admin_rate_get(mon->rx, now_ms, 300);
    st->throughput.received_1h = admin_rate_get(mon->rx, now_ms, 3600);
    st->throughput.received_bytes_5m =
        admin_rate_get(mon->rx_bytes, now_ms, 300);
    st->throughput.received_bytes_1h =
        admin_rate_get(mon->rx_bytes, now_ms, 3600);
    st->throughput.delivered_5m = admin_rate_get(mon->tx, now_ms, 300);
    st->throughput.delivered_1h = admin_rate_get(mon->tx, now_ms, 3600);
    st->throughput.delivered_bytes_5m =
        admin_rate_get(mon->tx_bytes, now_ms, 300);
    st->throughput.delivered_bytes_1h =
        admin_rate_get(mon->tx_bytes, now_ms, 3600);
    st->throughput.received_total =
        metrics_family_counter_sum(mon->cat.received_instances);
    st->throughput.delivered_total = metrics_counter_get(mon->delivered);

    order = malloc(MONITOR_STUDIES_TRACKED * sizeof(*order));
    pthread_mutex_lock(&mon->lock);
    for (int i = 0; i < ADMIN_BACKLOG_COUNT; i++) {
        const struct spool_state_stats *s = &mon->stats[monitor_states[i]];
        st->backlog[i].count = s->count;
        st->backlog[i].bytes = s->bytes;
        st->backlog[i].oldest_age_s =
            s->count > 0 && mon->stats_time_s > 0
                ? s->oldest_s + (uint64_t)(now > mon->stats_time_s
                                               ? now - mon->stats_time_s
                                               : 0)
                : 0;
    }
    st->destination = mon->dest;
    admin_copy_text(st->destination.url, sizeof(st->destination.url),
                    mon->url[0] != '\0' ? mon->url : "(none: receive-only)");
    st->token = mon->token;
    admin_copy_text(st->token.source, sizeof(st->token.source),
                    mon->token_source);
    n = mon->failed_count < ADMIN_FAILED_MAX ? mon->failed_count
                                             : ADMIN_FAILED_MAX;
    memcpy(st->failed, mon->failed, n * sizeof(st->failed[0]));
    st->failed_count = n;
    n = 0;
    if (order != NULL) {
        memcpy(order, mon->studies, mon->study_count * sizeof(*order));
        n = mon->study_count;
    }
    pthread_mutex_unlock(&mon->lock);

    st->studies_total = 0;
    if (order != NULL) {
        size_t open = 0;
        qsort(order, n, sizeof(*order), monitor_study_order);
        for (size_t i = 0; i < n; i++)
            if (order[i].delivered + order[i].failed < order[i].received)
                open++;
        st->studies_total = open;
        st->study_count = open < ADMIN_STUDIES_MAX ? open : ADMIN_STUDIES_MAX;
        memcpy(st->studies, order, st->study_count * sizeof(*order));
        free(order);
    }
    st->event_count =
        admin_events_copy(mon->events, st->events, ADMIN_EVENTS_MAX);
    return 0;
}

/* Moves a failed entry back to incoming/ (as `queue retry` does): the
 * attempts start again, the last error stays visible. */
static int monitor_retry_entry(struct monitor *mon, const char *id, char *err,
                               size_t err_len)
{
    struct spool_meta meta;
    char why[256];
    int r;

    if (spool_meta_read(mon->spool, id, &meta) == 0) {
        meta.attempts = 0;
        (void)spool_meta_write(mon->spool, id, &meta, why, sizeof(why));
    }
    r = spool_move(mon->spool, id, SPOOL_FAILED, SPOOL_INCOMING, why,
                   sizeof(why));
    if (r == -ENOENT) {
        snprintf(err, err_len, "no failed entry %s", id);
        return -ENOENT;
    }
    if (r < 0) {
        snprintf(err, err_len, "%s", why);
        return r;
    }
    return 0;
}

static int monitor_provide_retry(void *ctx, const char *id, char *err,
                                 size_t err_len)
{
    struct monitor *mon = ctx;
    int r = monitor_retry_entry(mon, id, err, err_len);

    if (r == 0) {
        log_notice("id=%s event=retry source=admin", id);
        atomic_store(&mon->rescan, true);
    }
    return r;
}

static int monitor_provide_retry_all(void *ctx, uint64_t *ret_count, char *err,
                                     size_t err_len)
{
    struct monitor *mon = ctx;
    struct spool_entry *entries = NULL;
    size_t count = 0;
    uint64_t moved = 0;
    char why[256];
    int r;

    r = spool_list(mon->spool, SPOOL_FAILED, &entries, &count, why,
                   sizeof(why));
    if (r < 0) {
        snprintf(err, err_len, "%s", why);
        return r;
    }
    for (size_t i = 0; i < count; i++)
        if (monitor_retry_entry(mon, entries[i].id, why, sizeof(why)) == 0)
            moved++;
    free(entries);
    log_notice("event=retry-all source=admin count=%" PRIu64, moved);
    atomic_store(&mon->rescan, true);
    *ret_count = moved;
    return 0;
}

/* ---- the refresh thread ---------------------------------------------- */

/* Fills @out (ADMIN_FAILED_MAX) with the newest failed entries and their
 * reason; returns how many. */
static size_t monitor_read_failed(struct monitor *mon,
                                  struct admin_failed_entry *out)
{
    struct spool_entry *entries = NULL;
    size_t count = 0;
    size_t n = 0;
    char err[256];

    if (spool_list(mon->spool, SPOOL_FAILED, &entries, &count, err,
                   sizeof(err)) < 0)
        return 0;
    for (size_t i = count; i > 0 && n < ADMIN_FAILED_MAX; i--) {
        const struct spool_entry *e = &entries[i - 1];
        struct admin_failed_entry *f = &out[n++];
        struct spool_meta meta;
        uint64_t arrival = 0;

        memset(f, 0, sizeof(*f));
        admin_copy_text(f->id, sizeof(f->id), e->id);
        f->bytes = e->size;
        if (spool_id_arrival_us(e->id, &arrival) == 0)
            f->arrived_s = (int64_t)(arrival / 1000000u);
        f->failed_s = e->mtime_us / 1000000;
        if (spool_meta_read(mon->spool, e->id, &meta) == 0) {
            admin_copy_text(f->calling_ae, sizeof(f->calling_ae),
                            meta.calling_ae);
            admin_copy_text(f->study_uid, sizeof(f->study_uid), meta.study_uid);
            admin_copy_text(f->sop_uid, sizeof(f->sop_uid), meta.sop_uid);
            admin_copy_text(f->reason, sizeof(f->reason),
                            meta.last_error[0] != '\0'
                                ? meta.last_error
                                : "(no reason recorded)");
        } else {
            admin_copy_text(f->reason, sizeof(f->reason), "(no meta/ record)");
        }
    }
    free(entries);
    return n;
}

/* Probes that a new file can be written to the spool (tmp/). */
static bool monitor_probe_spool(struct monitor *mon, char *err, size_t err_len)
{
    char id[SPOOL_ID_MAX];
    int fd = -1;
    int r = spool_tmp_create(mon->spool, id, &fd, err, err_len);

    if (r < 0)
        return false;
    spool_discard(mon->spool, id, fd);
    return true;
}

/* The STATUS= line systemd shows. */
static void monitor_status_line(struct monitor *mon, char *buf, size_t len)
{
    const struct spool_state_stats *s = mon->stats;
    uint64_t backlog = s[SPOOL_INCOMING].count + s[SPOOL_ACTIVE].count +
                       s[SPOOL_DEFERRED].count;
    uint64_t oldest = 0;

    for (int i = SPOOL_INCOMING; i <= SPOOL_DEFERRED; i++)
        if (s[i].count > 0 && s[i].oldest_s > oldest)
            oldest = s[i].oldest_s;
    snprintf(buf, len,
             "%s; backlog %" PRIu64 " (oldest %" PRIu64 " s), failed %" PRIu64
             ", received %" PRIu64 ", delivered %" PRIu64 "%s",
             mon->url[0] == '\0' ? "receiving (receive-only)"
                                 : "receiving and uploading",
             backlog, oldest, s[SPOOL_FAILED].count,
             metrics_family_counter_sum(mon->cat.received_instances),
             metrics_counter_get(mon->delivered),
             mon->url[0] == '\0' ? ""
             : mon->dest.up      ? ", destination up"
                                 : ", destination DOWN");
}

/* One refresh: scan, free space, probe, failed list, rates, and
 * STATUS= when it changed (and @notify: not before READY=1).
 * Returns how long the scan took, in ms. */
static uint64_t monitor_refresh(struct monitor *mon,
                                struct admin_failed_entry *failed_buf,
                                bool notify)
{
    struct spool_state_stats stats[SPOOL_STATE_COUNT];
    uint64_t start = util_now_monotonic_ms();
    struct statvfs vfs;
    uint64_t free_bytes = 0;
    char err[ADMIN_TEXT_MAX];
    char status[256];
    char line[300];
    bool scanned;
    bool writable;
    size_t failed_n;
    uint64_t took;

    scanned = spool_stats(mon->spool, util_now_realtime_us(), stats, err,
                          sizeof(err)) == 0;
    if (statvfs(mon->spool_dir, &vfs) == 0)
        free_bytes = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
    err[0] = '\0';
    writable = monitor_probe_spool(mon, err, sizeof(err));
    failed_n = monitor_read_failed(mon, failed_buf);
    took = util_now_monotonic_ms() - start;

    pthread_mutex_lock(&mon->lock);
    if (scanned) {
        memcpy(mon->stats, stats, sizeof(stats));
        mon->stats_time_s = monitor_now_s();
    }
    mon->free_bytes = free_bytes;
    mon->writable = writable;
    admin_copy_text(mon->spool_error, sizeof(mon->spool_error),
                    writable ? "" : err);
    memcpy(mon->failed, failed_buf, failed_n * sizeof(*failed_buf));
    mon->failed_count = failed_n;
    monitor_status_line(mon, status, sizeof(status));
    bool send = strcmp(status, mon->last_status) != 0;
    if (send)
        snprintf(mon->last_status, sizeof(mon->last_status), "%s", status);
    pthread_mutex_unlock(&mon->lock);

    if (send && notify && mon->notify != NULL) {
        snprintf(line, sizeof(line), "STATUS=%s", status);
        (void)mon->notify(line);
    }
    admin_rate_record(mon->rx, start,
                      metrics_family_counter_sum(mon->cat.received_instances));
    admin_rate_record(mon->rx_bytes, start,
                      metrics_family_counter_sum(mon->cat.received_bytes));
    admin_rate_record(mon->tx, start, metrics_counter_get(mon->delivered));
    admin_rate_record(mon->tx_bytes, start,
                      metrics_counter_get(mon->delivered_bytes));
    return took;
}

/*
 * Asks the destination MONITOR_PROBE_PATH when nothing proved it
 * reachable for half of admin.ready_window_s, so an idle bridge stays
 * ready (and one whose token broke does not).
 */
static void monitor_probe_destination(struct monitor *mon)
{
    struct find_reply reply;
    int64_t ok = atomic_load(&mon->destination_ok_s);

    if (mon->fetch_inner == NULL ||
        monitor_now_s() - ok < (int64_t)mon->ready_window_s / 2)
        return;
    memset(&reply, 0, sizeof(reply));
    (void)monitor_fetch(mon, MONITOR_PROBE_PATH, &reply);
    find_reply_free(&reply);
}

/* The probe's own thread: a destination that hangs (up to
 * upload.timeout_s) never holds up the spool summary. */
static void *monitor_probe_main(void *arg)
{
    struct monitor *mon = arg;

    (void)pthread_setname_np(pthread_self(), "sb-probe");
    pthread_mutex_lock(&mon->wake_lock);
    while (!mon->stop) {
        pthread_mutex_unlock(&mon->wake_lock);
        monitor_probe_destination(mon);
        pthread_mutex_lock(&mon->wake_lock);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        (void)pthread_cond_timedwait(&mon->wake, &mon->wake_lock, &ts);
    }
    pthread_mutex_unlock(&mon->wake_lock);
    return NULL;
}

static void *monitor_main(void *arg)
{
    struct monitor *mon = arg;
    struct admin_failed_entry *failed_buf =
        calloc(ADMIN_FAILED_MAX, sizeof(*failed_buf));
    uint64_t interval = MONITOR_REFRESH_MIN_MS;
    uint64_t last = 0;

    (void)pthread_setname_np(pthread_self(), "sb-monitor");
    pthread_mutex_lock(&mon->wake_lock);
    while (!mon->stop) {
        uint64_t now = util_now_monotonic_ms();

        if (failed_buf != NULL && (last == 0 || now - last >= interval ||
                                   atomic_exchange(&mon->rescan, false))) {
            pthread_mutex_unlock(&mon->wake_lock);
            uint64_t took = monitor_refresh(mon, failed_buf, true);
            pthread_mutex_lock(&mon->wake_lock);
            last = util_now_monotonic_ms();
            /* A long scan (a big spool) is repeated less often: at most
             * 5 % of one core goes to it. */
            interval = took * 20;
            if (interval < MONITOR_REFRESH_MIN_MS)
                interval = MONITOR_REFRESH_MIN_MS;
            if (interval > MONITOR_REFRESH_MAX_MS)
                interval = MONITOR_REFRESH_MAX_MS;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 500 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        (void)pthread_cond_timedwait(&mon->wake, &mon->wake_lock, &ts);
    }
    pthread_mutex_unlock(&mon->wake_lock);
    free(failed_buf);
    return NULL;
}

/* At every render: the spool gauges from the last scan, ages carried on
 * to now. */
static void monitor_collect(void *ctx)
{
    struct monitor *mon = ctx;
    int64_t now = monitor_now_s();

    pthread_mutex_lock(&mon->lock);
    for (int i = 0; i < ADMIN_BACKLOG_COUNT; i++) {
        const struct spool_state_stats *s = &mon->stats[monitor_states[i]];
        uint64_t age =
            s->count > 0 && mon->stats_time_s > 0
                ? s->oldest_s + (uint64_t)(now > mon->stats_time_s
                                               ? now - mon->stats_time_s
                                               : 0)
                : 0;
        metrics_gauge_set(mon->spool_count[i], (double)s->count);
        metrics_gauge_set(mon->spool_bytes[i], (double)s->bytes);
        metrics_gauge_set(mon->spool_age[i], (double)age);
    }
    metrics_gauge_set(mon->free_bytes_gauge, (double)mon->free_bytes);
    if (mon->spool != NULL) {
        struct spool_commit_stats cs;
        spool_commit_counts(mon->spool, &cs);
        metrics_counter_add(mon->commits_journal,
                            cs.journal_commits - mon->seen.journal_commits);
        metrics_counter_add(mon->commits_file,
                            cs.file_commits - mon->seen.file_commits);
        metrics_counter_add(mon->journal_flushes,
                            cs.journal_flushes - mon->seen.journal_flushes);
        metrics_gauge_set(mon->journal_up, cs.journal_up ? 1 : 0);
        mon->seen = cs;
    }
    pthread_mutex_unlock(&mon->lock);
}

/* ---- life cycle ------------------------------------------------------- */

int monitor_new(const struct monitor_params *p, struct monitor **ret_monitor,
                char *err, size_t err_len)
{
    struct monitor *mon = calloc(1, sizeof(*mon));
    int r = -ENOMEM;

    if (mon == NULL)
        return -ENOMEM;
    pthread_mutex_init(&mon->lock, NULL);
    pthread_mutex_init(&mon->wake_lock, NULL);
    pthread_cond_init(&mon->wake, NULL);
    mon->started_s = monitor_now_s();
    mon->version = monitor_strdup(p->version);
    mon->node = monitor_strdup(p->node);
    mon->spool_dir = monitor_strdup(p->spool_dir);
    mon->url = monitor_strdup(p->destination_url);
    mon->token_source = monitor_strdup(p->token_source);
    mon->listen = monitor_strdup(p->listen);
    mon->token_file = monitor_strdup(p->token_file);
    mon->spool = p->spool;
    mon->min_free_bytes = p->spool_min_free_bytes;
    mon->dicom_port = p->dicom_port;
    mon->allow_actions = p->allow_actions;
    mon->ready_window_s = p->ready_window_s;
    mon->notify = p->notify;
    mon->failed = calloc(ADMIN_FAILED_MAX, sizeof(*mon->failed));
    mon->studies = calloc(MONITOR_STUDIES_TRACKED, sizeof(*mon->studies));
    mon->events = admin_events_new(ADMIN_EVENTS_MAX);
    mon->rx = admin_rate_new(MONITOR_RATE_STEP_S, MONITOR_RATE_HORIZON_S);
    mon->rx_bytes = admin_rate_new(MONITOR_RATE_STEP_S, MONITOR_RATE_HORIZON_S);
    mon->tx = admin_rate_new(MONITOR_RATE_STEP_S, MONITOR_RATE_HORIZON_S);
    mon->tx_bytes = admin_rate_new(MONITOR_RATE_STEP_S, MONITOR_RATE_HORIZON_S);
    mon->metrics = metrics_new();
    if (p->caller_count > 0) {
        mon->callers = calloc(p->caller_count, sizeof(*mon->callers));
        if (mon->callers != NULL)
            for (size_t i = 0; i < p->caller_count; i++)
                if ((mon->callers[i] = monitor_strdup(p->callers[i])) != NULL)
                    mon->caller_count++;
    }
    if (mon->version == NULL || mon->node == NULL || mon->spool_dir == NULL ||
        mon->url == NULL || mon->token_source == NULL || mon->listen == NULL ||
        mon->token_file == NULL || mon->failed == NULL ||
        mon->studies == NULL || mon->events == NULL || mon->rx == NULL ||
        mon->rx_bytes == NULL || mon->tx == NULL || mon->tx_bytes == NULL ||
        mon->metrics == NULL || mon->caller_count != p->caller_count) {
        snprintf(err, err_len, "out of memory");
        goto out_free;
    }
    r = metrics_catalog_register(
        mon->metrics,
        &(struct metrics_catalog_params){
            .version = mon->version,
            .start_time_s = (double)mon->started_s,
            .callers = (const char *const *)mon->callers,
            .caller_count = mon->caller_count },
        &mon->cat, err, err_len);
    if (r < 0)
        goto out_free;
    mon->associations = metrics_series(mon->cat.associations_active, NULL);
    mon->delivered = metrics_series(mon->cat.delivered_instances, NULL);
    mon->delivered_bytes = metrics_series(mon->cat.delivered_bytes, NULL);
    mon->token_expiry = metrics_series(mon->cat.token_expiry, NULL);
    mon->destination_up = metrics_series(mon->cat.destination_up, NULL);
    mon->upload_time = metrics_series(mon->cat.upload_duration, NULL);
    mon->cfind_time = metrics_series(mon->cat.cfind_duration, NULL);
    mon->latency = metrics_series(mon->cat.delivery_latency, NULL);
    mon->free_bytes_gauge = metrics_series(mon->cat.spool_free_bytes, NULL);
    mon->commits_journal =
        METRICS_SERIES(mon->cat.spool_commits, METRICS_PATH_JOURNAL);
    mon->commits_file =
        METRICS_SERIES(mon->cat.spool_commits, METRICS_PATH_FILE);
    mon->journal_flushes = metrics_series(mon->cat.spool_journal_flushes, NULL);
    mon->journal_up = metrics_series(mon->cat.spool_journal_up, NULL);
    for (int i = 0; i < ADMIN_BACKLOG_COUNT; i++) {
        mon->spool_count[i] =
            METRICS_SERIES(mon->cat.spool_entries, monitor_state_names[i]);
        mon->spool_bytes[i] =
            METRICS_SERIES(mon->cat.spool_bytes, monitor_state_names[i]);
        mon->spool_age[i] =
            METRICS_SERIES(mon->cat.spool_oldest_age, monitor_state_names[i]);
    }
    /* A static token never expires as far as we know. */
    mon->token.have_token = strcmp(mon->token_source, "static") == 0;
    /* Unknown until the first answer says otherwise. */
    mon->dest.up = mon->url[0] != '\0';
    metrics_gauge_set(mon->destination_up, mon->dest.up ? 1.0 : 0.0);
    r = metrics_add_collector(mon->metrics, monitor_collect, mon);
    if (r < 0) {
        snprintf(err, err_len, "out of memory");
        goto out_free;
    }
    {
        const char *usec = getenv("WATCHDOG_USEC");
        const char *pid = getenv("WATCHDOG_PID");
        if (usec != NULL && (pid == NULL || atol(pid) == (long)getpid())) {
            unsigned long long us = strtoull(usec, NULL, 10);
            mon->watchdog_ms = us / 2000u;
        }
    }
    *ret_monitor = mon;
    return 0;

out_free:
    monitor_free(mon);
    return r;
}

int monitor_start(struct monitor *mon, char *err, size_t err_len)
{
    char *token = NULL;
    int r;

    /* The first summary before anyone can ask. */
    {
        struct admin_failed_entry *buf = calloc(ADMIN_FAILED_MAX, sizeof(*buf));
        if (buf == NULL)
            return -ENOMEM;
        (void)monitor_refresh(mon, buf, false);
        free(buf);
    }
    log_set_observer(monitor_on_log, mon);
    if (mon->listen[0] != '\0') {
        if (mon->token_file[0] != '\0') {
            r = monitor_read_token(mon->token_file, &token, err, err_len);
            if (r < 0)
                return r;
        }
        r = admin_new(
            &(struct admin_params){
                .listen = mon->listen,
                .token = token,
                .allow_actions = mon->allow_actions,
                .metrics = mon->metrics,
                .provider = { .ctx = mon,
                              .ready = monitor_provide_ready,
                              .status = monitor_provide_status,
                              .retry_failed = monitor_provide_retry,
                              .retry_all_failed = monitor_provide_retry_all } },
            &mon->admin, err, err_len);
        if (token != NULL) {
            explicit_bzero(token, strlen(token));
            free(token);
        }
        /* Images matter more than their monitoring: a port in use is
         * logged and the daemon runs on without the endpoint. */
        if (r < 0)
            log_err("event=admin-failed listen=%s reason=\"%s\", "
                    "continuing without the admin endpoint",
                    mon->listen, err);
    }
    r = pthread_create(&mon->thread, NULL, monitor_main, mon);
    if (r != 0) {
        snprintf(err, err_len, "cannot start the monitor thread: %s",
                 strerror(r));
        return -r;
    }
    mon->thread_started = true;
    if (mon->fetch_inner != NULL) {
        r = pthread_create(&mon->probe_thread, NULL, monitor_probe_main, mon);
        if (r != 0) {
            snprintf(err, err_len, "cannot start the probe thread: %s",
                     strerror(r));
            return -r;
        }
        mon->probe_started = true;
    }
    return 0;
}

const struct metrics_catalog *monitor_catalog(const struct monitor *mon)
{
    return &mon->cat;
}

uint16_t monitor_admin_port(const struct monitor *mon)
{
    return mon != NULL && mon->admin != NULL ? admin_port(mon->admin) : 0;
}

void monitor_heartbeat(struct monitor *mon)
{
    uint64_t now;

    if (mon == NULL)
        return;
    admin_heartbeat(mon->admin);
    if (mon->watchdog_ms == 0)
        return;
    now = util_now_monotonic_ms();
    if (now - mon->last_watchdog_ms >= mon->watchdog_ms) {
        mon->last_watchdog_ms = now;
        if (mon->notify != NULL)
            (void)mon->notify("WATCHDOG=1");
    }
}

void monitor_set_listening(struct monitor *mon, bool listening)
{
    if (mon != NULL)
        atomic_store(&mon->listening, listening);
}

void monitor_stop(struct monitor *mon)
{
    if (mon == NULL)
        return;
    if (mon->thread_started) {
        pthread_mutex_lock(&mon->wake_lock);
        mon->stop = true;
        pthread_cond_broadcast(&mon->wake);
        pthread_mutex_unlock(&mon->wake_lock);
        (void)pthread_join(mon->thread, NULL);
        if (mon->probe_started)
            (void)pthread_join(mon->probe_thread, NULL);
        mon->thread_started = false;
        mon->probe_started = false;
    }
    admin_free(mon->admin);
    mon->admin = NULL;
}

void monitor_free(struct monitor *mon)
{
    if (mon == NULL)
        return;
    monitor_stop(mon);
    log_set_observer(NULL, NULL);
    metrics_free(mon->metrics);
    admin_events_free(mon->events);
    admin_rate_free(mon->rx);
    admin_rate_free(mon->rx_bytes);
    admin_rate_free(mon->tx);
    admin_rate_free(mon->tx_bytes);
    for (size_t i = 0; i < mon->caller_count; i++)
        free(mon->callers[i]);
    free(mon->callers);
    free(mon->failed);
    free(mon->studies);
    free(mon->version);
    free(mon->node);
    free(mon->spool_dir);
    free(mon->url);
    free(mon->token_source);
    free(mon->listen);
    free(mon->token_file);
    pthread_mutex_destroy(&mon->lock);
    pthread_mutex_destroy(&mon->wake_lock);
    pthread_cond_destroy(&mon->wake);
    free(mon);
}
