/* SPDX-License-Identifier: Apache-2.0 */
/*
 * admin_demo - an admin endpoint over a realistic, fixed snapshot, for
 * the loopback tests of tests/integration/admin_it.py (curl, headless
 * Chromium, a real Prometheus server) and for a look by hand.
 *
 * usage: admin_demo [--listen ADDR] [--token-file PATH] [--actions]
 *                   [--stale-s N] [--timeout-s N] [--conn-limit N]
 *                   [--per-ip N] [--refresh-s N] [--not-ready]
 *
 * Prints "port=N" once it listens, then runs a small "daemon loop" (a
 * heartbeat every 100 ms, counters moving, rates recorded) until SIGTERM,
 * SIGINT or end of stdin. SIGUSR1 stops the heartbeat (so /healthz goes
 * stale). The snapshot's numbers are fixed so tests can look for them:
 * see fill_status(). Actions: entry FAILED_ID can be retried (once per
 * call); admin_demo_actions_total{action} counts the calls that ran.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "admin/admin.h"
#include "base/metrics.h"
#include "base/metrics_catalog.h"

#define FAILED_ID "1764000000.123456-9f1c2b3a4d5e6f70"
#define FAILED_REASON \
    "rejected by the server: 0xA900 <Data Set does not match SOP Class>"

static atomic_bool stop_flag;
static atomic_bool beat_off;

struct demo {
    bool not_ready;
    int64_t started_s;
    struct metrics *metrics;
    struct metrics_catalog cat;
    struct metrics_family *actions;
    struct admin_events *events;
    struct admin_rate *received;
    struct admin_rate *delivered;
};

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        atomic_store(&beat_off, true);
    else
        atomic_store(&stop_flag, true);
}

static uint64_t monotonic_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int fill_ready(void *ctx, struct admin_ready *r)
{
    struct demo *d = ctx;
    int64_t now = (int64_t)time(NULL);

    r->dicom_listening = !d->not_ready;
    r->dicom_port = 11112;
    r->spool_writable = true;
    r->spool_free_bytes = d->not_ready ? 200ull << 20 : 52613349376ull;
    r->spool_min_free_bytes = 1ull << 30;
    r->destination_ok_s = d->not_ready ? 0 : now - 4;
    r->window_s = 300;
    return 0;
}

static int fill_status(void *ctx, struct admin_status *st)
{
    struct demo *d = ctx;
    int64_t now = (int64_t)time(NULL);
    uint64_t now_ms = monotonic_ms();

    admin_copy_text(st->version, sizeof(st->version), "0.1.0");
    admin_copy_text(st->node, sizeof(st->node), "STOWBRIDGE1");
    st->started_s = d->started_s;
    (void)fill_ready(ctx, &st->ready);
    /* The summary of a spool of 100 000 entries. */
    st->backlog[ADMIN_BACKLOG_INCOMING] =
        (struct admin_backlog){ 61234, 61234ull * 524288, 3725 };
    st->backlog[ADMIN_BACKLOG_ACTIVE] =
        (struct admin_backlog){ 16, 16ull * 524288, 2 };
    st->backlog[ADMIN_BACKLOG_DEFERRED] =
        (struct admin_backlog){ 37763, 37763ull * 524288, 90061 };
    st->backlog[ADMIN_BACKLOG_FAILED] =
        (struct admin_backlog){ 987, 987ull * 524288, 400000 };
    st->throughput.received_5m = admin_rate_get(d->received, now_ms, 300);
    st->throughput.received_1h = admin_rate_get(d->received, now_ms, 3600);
    st->throughput.delivered_5m = admin_rate_get(d->delivered, now_ms, 300);
    st->throughput.delivered_1h = admin_rate_get(d->delivered, now_ms, 3600);
    st->throughput.received_total =
        metrics_family_counter_sum(d->cat.received_instances);
    st->throughput.delivered_total =
        metrics_counter_get(metrics_series(d->cat.delivered_instances, NULL));
    admin_copy_text(st->destination.url, sizeof(st->destination.url),
                    "https://contoso-dicom.dicom.azurehealthcareapis.com/v2");
    st->destination.up = true;
    st->destination.last_success_s = now - 4;
    st->destination.last_failure_s = now - 1800;
    admin_copy_text(st->destination.last_error,
                    sizeof(st->destination.last_error),
                    "HTTP 503 Service Unavailable, will retry");
    admin_copy_text(st->token.source, sizeof(st->token.source),
                    "client_credentials");
    st->token.have_token = true;
    st->token.expires_s = now + 2520;
    st->token.last_refresh_s = now - 1080;
    st->token.last_refresh_ok = true;
    st->token.last_denied_s = now - 7200;
    st->token.last_denied_status = 403;
    admin_copy_text(st->token.last_denied_diagnosis,
                    sizeof(st->token.last_denied_diagnosis),
                    "the token has no 'roles' claim: give the app the "
                    "DICOM Data Owner role");
    for (size_t i = 0; i < 12; i++) {
        struct admin_failed_entry *f = &st->failed[i];
        if (i == 0)
            admin_copy_text(f->id, sizeof(f->id), FAILED_ID);
        else
            (void)snprintf(f->id, sizeof(f->id),
                           "1763990%03zu.000001-00000000000000%02zu", i, i);
        admin_copy_text(f->calling_ae, sizeof(f->calling_ae),
                        i % 2 ? "MR02" : "CT01");
        (void)snprintf(f->study_uid, sizeof(f->study_uid),
                       "1.2.826.0.1.3680043.8.498.%zu", 4242 + i);
        (void)snprintf(f->sop_uid, sizeof(f->sop_uid),
                       "1.2.826.0.1.3680043.8.498.%zu.7", 4242 + i);
        f->bytes = 524288;
        f->arrived_s = now - 4000;
        f->failed_s = now - 3600 + (int64_t)i;
        admin_copy_text(f->reason, sizeof(f->reason),
                        i == 0 ? FAILED_REASON
                               : "rejected: 0xC122 SOP Class not supported");
    }
    st->failed_count = 12;
    for (size_t i = 0; i < 6; i++) {
        struct admin_study *s = &st->studies[i];
        (void)snprintf(s->study_uid, sizeof(s->study_uid),
                       "1.2.826.0.1.3680043.8.498.%zu", 9000 + i);
        admin_copy_text(s->calling_ae, sizeof(s->calling_ae),
                        i % 2 ? "MR02" : "CT01");
        s->received = 480 + i;
        s->delivered = 300 + i;
        s->failed = i == 0 ? 1 : 0;
        s->first_s = now - 900;
        s->last_s = now - (int64_t)i;
    }
    st->study_count = 6;
    st->studies_total = 6;
    st->event_count =
        admin_events_copy(d->events, st->events, ADMIN_EVENTS_MAX);
    return 0;
}

static double spool_free_bytes(void *ctx)
{
    (void)ctx;
    return 52613349376.0;
}

static int retry_failed(void *ctx, const char *id, char *err, size_t len)
{
    struct demo *d = ctx;

    (void)err;
    (void)len;
    if (strcmp(id, FAILED_ID) != 0)
        return -ENOENT;
    metrics_counter_inc(METRICS_SERIES(d->actions, "retry"));
    admin_events_push(d->events, (int64_t)time(NULL), 5,
                      "1764000000.123456-9f1c2b3a4d5e6f70: retry requested "
                      "by the admin endpoint");
    return 0;
}

static int retry_all(void *ctx, uint64_t *ret_count, char *err, size_t len)
{
    struct demo *d = ctx;

    (void)err;
    (void)len;
    metrics_counter_inc(METRICS_SERIES(d->actions, "retry_all"));
    *ret_count = 987;
    return 0;
}

static char *read_token(const char *path)
{
    char buf[512];
    size_t n;
    FILE *f = fopen(path, "re");

    if (f == NULL)
        return NULL;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    return strdup(buf);
}

static void seed(struct demo *d)
{
    static const char *const lines[] = {
        "<6>started: DICOM port 11112, admin 127.0.0.1:9475, "
        "spool /var/spool/stowbridge",
        "<6>1763999000.000001-00000000000000aa: from=CT01@10.20.30.40, "
        "sop=1.2.826.0.1.3680043.8.498.9000.1, size=524288, status=sent",
        "<4>1763999100.000001-00000000000000ab: from=MR02@10.20.30.41, "
        "sop=1.2.826.0.1.3680043.8.498.9001.1, size=524288, "
        "status=deferred (HTTP 503 Service Unavailable, will retry)",
        "<3>" FAILED_ID ": from=CT01@10.20.30.40, "
        "sop=1.2.826.0.1.3680043.8.498.4242.7, size=524288, "
        "status=failed (" FAILED_REASON ")",
        "<5>token refreshed: expires in 3600 s",
    };
    int64_t now = (int64_t)time(NULL);

    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        admin_events_push_line(d->events, now - 60 + (int64_t)i * 10, lines[i]);
    metrics_counter_add(METRICS_SERIES(d->cat.received_instances, "CT01"),
                        1234);
    metrics_counter_add(METRICS_SERIES(d->cat.received_bytes, "CT01"),
                        1234ull * 524288);
    metrics_counter_add(METRICS_SERIES(d->cat.store_refusals, "A700"), 2);
    metrics_counter_add(METRICS_SERIES(d->cat.http_responses, "stow", "200"),
                        118);
    metrics_counter_add(METRICS_SERIES(d->cat.dead_letters, "rejected"), 12);
    metrics_gauge_set(metrics_series(d->cat.token_expiry, NULL),
                      (double)(now + 2520));
    metrics_gauge_set(metrics_series(d->cat.destination_up, NULL), 1);
    metrics_gauge_set(METRICS_SERIES(d->cat.spool_entries, "incoming"), 61234);
    metrics_gauge_set(METRICS_SERIES(d->cat.spool_entries, "failed"), 987);
    metrics_gauge_set_fn(metrics_series(d->cat.spool_free_bytes, NULL),
                         spool_free_bytes, NULL);
    metrics_counter_add(METRICS_SERIES(d->cat.token_refreshes, "ok"), 3);
    for (int i = 0; i < 50; i++)
        metrics_histogram_observe(metrics_series(d->cat.upload_duration, NULL),
                                  0.04 * i);
}

/* The "daemon loop": heartbeat, some traffic, rate samples. */
static void loop(struct demo *d, struct admin *a)
{
    struct metrics_series *mr =
        METRICS_SERIES(d->cat.received_instances, "MR02");
    struct metrics_series *delivered =
        metrics_series(d->cat.delivered_instances, NULL);
    struct pollfd in = { .fd = 0, .events = POLLIN };
    char buf[256];

    while (!atomic_load(&stop_flag)) {
        int r = poll(&in, 1, 100);
        if (r > 0) {
            ssize_t n = read(0, buf, sizeof(buf));
            if (n <= 0)
                break; /* stdin closed: the test is gone */
        }
        if (!atomic_load(&beat_off))
            admin_heartbeat(a);
        metrics_counter_add(mr, 3);
        metrics_counter_add(delivered, 2);
        admin_rate_record(
            d->received, monotonic_ms(),
            metrics_family_counter_sum(d->cat.received_instances));
        admin_rate_record(d->delivered, monotonic_ms(),
                          metrics_counter_get(delivered));
    }
}

int main(int argc, char **argv)
{
    static const char *const callers[] = { "CT01", "MR02", "US03" };
    static const char *const action_label[] = { "action" };
    struct metrics_catalog_params cp = { .version = "0.1.0",
                                         .callers = callers,
                                         .caller_count = 3 };
    struct admin_params p = { .listen = "127.0.0.1:0" };
    struct demo d;
    struct admin *a = NULL;
    char *token = NULL;
    char err[512] = "";
    int r;

    memset(&d, 0, sizeof(d));
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : "";
        uint32_t n = (uint32_t)strtoul(v, NULL, 10);
        bool takes_value = true;

        if (strcmp(opt, "--listen") == 0) {
            p.listen = v;
        } else if (strcmp(opt, "--token-file") == 0) {
            token = read_token(v);
            if (token == NULL) {
                fprintf(stderr, "admin_demo: cannot read %s\n", v);
                return 2;
            }
            p.token = token;
        } else if (strcmp(opt, "--stale-s") == 0) {
            p.healthz_stale_s = n;
        } else if (strcmp(opt, "--timeout-s") == 0) {
            p.request_timeout_s = n;
        } else if (strcmp(opt, "--conn-limit") == 0) {
            p.connection_limit = n;
        } else if (strcmp(opt, "--per-ip") == 0) {
            p.per_ip_limit = n;
        } else if (strcmp(opt, "--refresh-s") == 0) {
            p.page_refresh_s = n;
        } else if (strcmp(opt, "--actions") == 0) {
            p.allow_actions = true;
            takes_value = false;
        } else if (strcmp(opt, "--not-ready") == 0) {
            d.not_ready = true;
            takes_value = false;
        } else {
            fprintf(stderr, "admin_demo: unknown option %s\n", opt);
            return 2;
        }
        if (takes_value)
            i++;
    }
    d.started_s = (int64_t)time(NULL) - 3 * 86400 - 7260;
    cp.start_time_s = (double)d.started_s;
    d.metrics = metrics_new();
    d.events = admin_events_new(ADMIN_EVENTS_MAX);
    d.received = admin_rate_new(10, 3600);
    d.delivered = admin_rate_new(10, 3600);
    if (!d.metrics || !d.events || !d.received || !d.delivered ||
        metrics_catalog_register(d.metrics, &cp, &d.cat, err, sizeof(err)) <
            0 ||
        metrics_family_add(
            d.metrics,
            &(struct metrics_family_params){ .name = "admin_demo_actions_total",
                                             .help = "Actions the demo ran.",
                                             .type = METRICS_COUNTER,
                                             .label_names = action_label,
                                             .label_count = 1,
                                             .max_series = 2 },
            &d.actions, err, sizeof(err)) < 0) {
        fprintf(stderr, "admin_demo: setup failed: %s\n", err);
        return 1;
    }
    seed(&d);
    p.metrics = d.metrics;
    p.provider = (struct admin_provider){ .ctx = &d,
                                          .ready = fill_ready,
                                          .status = fill_status,
                                          .retry_failed = retry_failed,
                                          .retry_all_failed = retry_all };
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGUSR1, on_signal);
    signal(SIGPIPE, SIG_IGN);
    r = admin_new(&p, &a, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "admin_demo: %s (%s)\n", err, strerror(-r));
        return 1;
    }
    if (a == NULL) {
        fprintf(stderr, "admin_demo: admin endpoint off\n");
        return 1;
    }
    printf("port=%u\n", (unsigned)admin_port(a));
    fflush(stdout);
    loop(&d, a);
    admin_free(a);
    if (token != NULL) {
        explicit_bzero(token, strlen(token));
        free(token);
    }
    admin_rate_free(d.received);
    admin_rate_free(d.delivered);
    admin_events_free(d.events);
    metrics_free(d.metrics);
    return 0;
}
