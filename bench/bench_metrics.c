/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench_metrics - what counting costs the hot paths, and what rendering
 * costs the admin thread.
 *
 * usage: bench_metrics [ITERATIONS_PER_THREAD]   (default 20 000 000)
 *
 * 1. Updates from 4 threads at once (a C-STORE counts from its
 *    association thread): the same counter series (one contended cache
 *    line), one series per thread, a labeled lookup + increment, a
 *    histogram observation, a gauge add (compare-and-swap), and for
 *    comparison a counter behind one global pthread mutex.
 * 2. metrics_render() of the full catalog with realistic series.
 * 3. The status page with every list full (the snapshot of a spool of
 *    100 000 entries: summaries and bounded lists).
 * Prints one line per measurement; built by CMake, run by hand (and
 * briefly by CTest as bench_metrics_smoke, which checks the counts).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin/admin_int.h"
#include "base/metrics.h"
#include "base/metrics_catalog.h"

#define THREADS 4

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

enum scenario { SAME, OWN, LOOKUP, HISTOGRAM, GAUGE, MUTEX, SCENARIOS };

static const char *const scenario_names[] = {
    "counter_inc, same series      ", "counter_inc, own series       ",
    "lookup(calling_ae) + inc      ", "histogram_observe, same series",
    "gauge_add (CAS), same series  ", "global pthread mutex + ++     "
};

struct shared {
    struct metrics_catalog cat;
    struct metrics_family *own;
    struct metrics_series *own_series[THREADS];
    pthread_mutex_t lock;
    uint64_t locked_counter;
    uint64_t iterations;
    pthread_barrier_t start;
    enum scenario scenario;
};

struct thread_arg {
    struct shared *s;
    int id;
    uint64_t cpu_ns;
};

static const char *const callers[] = { "CT01",   "CT02",   "MR01", "MR02",
                                       "US01",   "US02",   "CR01", "CR02",
                                       "DX01",   "DX02",   "NM01", "PT01",
                                       "XA01",   "MG01",   "RF01", "OT01",
                                       "PACS_A", "PACS_B", "WS01", "WS02" };

static void *run(void *arg)
{
    struct thread_arg *t = arg;
    struct shared *s = t->s;
    struct metrics_series *same =
        metrics_series(s->cat.delivered_instances, NULL);
    struct metrics_series *hist = metrics_series(s->cat.upload_duration, NULL);
    struct metrics_series *gauge =
        metrics_series(s->cat.associations_active, NULL);
    struct metrics_series *own = s->own_series[t->id];
    const char *ae = callers[(t->id * 5) % 20];
    uint64_t n = s->iterations;
    uint64_t start;

    pthread_barrier_wait(&s->start);
    start = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    switch (s->scenario) {
    case SAME:
        for (uint64_t i = 0; i < n; i++)
            metrics_counter_inc(same);
        break;
    case OWN:
        for (uint64_t i = 0; i < n; i++)
            metrics_counter_inc(own);
        break;
    case LOOKUP:
        for (uint64_t i = 0; i < n; i++)
            metrics_counter_inc(METRICS_SERIES(s->cat.received_instances, ae));
        break;
    case HISTOGRAM:
        for (uint64_t i = 0; i < n; i++)
            metrics_histogram_observe(hist, (double)(i & 63) * 0.05);
        break;
    case GAUGE:
        for (uint64_t i = 0; i < n; i++)
            metrics_gauge_add(gauge, 1);
        break;
    default:
        for (uint64_t i = 0; i < n; i++) {
            pthread_mutex_lock(&s->lock);
            s->locked_counter++;
            pthread_mutex_unlock(&s->lock);
        }
        break;
    }
    t->cpu_ns = clock_ns(CLOCK_THREAD_CPUTIME_ID) - start;
    return NULL;
}

/*
 * Runs @sc on @threads threads; prints the CPU time per update (mean over
 * the threads: what an update costs its caller, cache-line transfers
 * included, preemption excluded) and the updates per second of all
 * threads together (wall clock).
 */
static void run_scenario(struct shared *s, enum scenario sc, int threads,
                         const char *name)
{
    pthread_t th[THREADS];
    struct thread_arg args[THREADS];
    uint64_t cpu = 0;
    uint64_t wall;

    s->scenario = sc;
    pthread_barrier_init(&s->start, NULL, (unsigned)threads);
    wall = now_ns();
    for (int i = 0; i < threads; i++) {
        args[i] = (struct thread_arg){ s, i, 0 };
        pthread_create(&th[i], NULL, run, &args[i]);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        cpu += args[i].cpu_ns;
    }
    wall = now_ns() - wall;
    pthread_barrier_destroy(&s->start);
    printf("  %d thread%s %s %6.1f ns CPU/update, %6.1f M updates/s\n", threads,
           threads > 1 ? "s:" : ": ", name,
           (double)cpu / threads / (double)s->iterations,
           (double)s->iterations * threads / ((double)wall / 1e9) / 1e6);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static void fill_status(struct admin_status *st, int64_t now)
{
    snprintf(st->version, sizeof(st->version), "0.1.0");
    snprintf(st->node, sizeof(st->node), "STOWBRIDGE");
    st->started_s = now - 86400 * 3;
    st->ready = (struct admin_ready){ .dicom_listening = true,
                                      .dicom_port = 11112,
                                      .spool_writable = true,
                                      .spool_free_bytes = 50ull << 30,
                                      .spool_min_free_bytes = 1ull << 30,
                                      .destination_ok_s = now - 5,
                                      .window_s = 300 };
    st->backlog[0] = (struct admin_backlog){ 61000, 61000ull * 520000, 3400 };
    st->backlog[1] = (struct admin_backlog){ 16, 16ull * 520000, 2 };
    st->backlog[2] = (struct admin_backlog){ 38000, 38000ull * 520000, 86000 };
    st->backlog[3] = (struct admin_backlog){ 984, 984ull * 520000, 400000 };
    for (size_t i = 0; i < ADMIN_FAILED_MAX; i++) {
        struct admin_failed_entry *f = &st->failed[i];
        snprintf(f->id, sizeof(f->id), "1764%06zu.123456-9f1c2b3a4d5e6f70", i);
        snprintf(f->calling_ae, sizeof(f->calling_ae), "CT%02zu", i % 20);
        snprintf(f->study_uid, sizeof(f->study_uid),
                 "1.2.826.0.1.3680043.8.498.%zu", 1000000 + i);
        snprintf(f->sop_uid, sizeof(f->sop_uid),
                 "1.2.826.0.1.3680043.8.498.%zu.1", 1000000 + i);
        f->bytes = 520000;
        f->arrived_s = now - 4000;
        f->failed_s = now - 3000;
        snprintf(f->reason, sizeof(f->reason),
                 "the server rejected the "
                 "instance: 0xA900 <Data Set does not match SOP Class> & "
                 "more");
    }
    st->failed_count = ADMIN_FAILED_MAX;
    for (size_t i = 0; i < ADMIN_STUDIES_MAX; i++) {
        struct admin_study *s = &st->studies[i];
        snprintf(s->study_uid, sizeof(s->study_uid),
                 "1.2.826.0.1.3680043.8.498.%zu", 2000000 + i);
        snprintf(s->calling_ae, sizeof(s->calling_ae), "MR%02zu", i % 10);
        s->received = 2000;
        s->delivered = 1500;
        s->failed = i % 3;
        s->first_s = now - 600;
        s->last_s = now - 3;
    }
    st->study_count = ADMIN_STUDIES_MAX;
    st->studies_total = 1200;
    for (size_t i = 0; i < ADMIN_EVENTS_MAX; i++) {
        struct admin_event *e = &st->events[i];
        e->time_s = now - (int64_t)i;
        e->level = 6;
        snprintf(e->text, sizeof(e->text),
                 "1764000000.123456-9f1c2b3a4d5e6f"
                 "70: from=CT01@10.1.2.3, sop=1.2.3.4.5.%zu, size=520000, "
                 "status=sent",
                 i);
    }
    st->event_count = ADMIN_EVENTS_MAX;
}

int main(int argc, char **argv)
{
    struct metrics_catalog_params cp = { .version = "0.1.0",
                                         .start_time_s = 1764000000,
                                         .callers = callers,
                                         .caller_count = 20 };
    static const char *const thread_label[] = { "thread" };
    struct shared s;
    struct metrics *m = metrics_new();
    char err[256];
    uint64_t iterations = argc > 1 ? strtoull(argv[1], NULL, 10) : 20000000;
    int failures = 0;

    memset(&s, 0, sizeof(s));
    s.iterations = iterations;
    pthread_mutex_init(&s.lock, NULL);
    if (metrics_catalog_register(m, &cp, &s.cat, err, sizeof(err)) < 0 ||
        metrics_family_add(
            m,
            &(struct metrics_family_params){ .name = "bench_own_total",
                                             .help = "Own.",
                                             .type = METRICS_COUNTER,
                                             .label_names = thread_label,
                                             .label_count = 1,
                                             .max_series = THREADS },
            &s.own, err, sizeof(err)) < 0) {
        fprintf(stderr, "bench_metrics: %s\n", err);
        return 1;
    }
    for (int i = 0; i < THREADS; i++) {
        char name[8];
        snprintf(name, sizeof(name), "t%d", i);
        s.own_series[i] = METRICS_SERIES(s.own, name);
    }

    printf("updates, %" PRIu64 " per thread\n", iterations);
    run_scenario(&s, SAME, 1, scenario_names[SAME]);
    run_scenario(&s, MUTEX, 1, scenario_names[MUTEX]);
    for (int sc = 0; sc < SCENARIOS; sc++)
        run_scenario(&s, (enum scenario)sc, THREADS, scenario_names[sc]);
    /* Everything counted, nothing lost. */
    uint64_t same =
        metrics_counter_get(metrics_series(s.cat.delivered_instances, NULL));
    if (same != iterations * (THREADS + 1) ||
        s.locked_counter != iterations * (THREADS + 1)) {
        fprintf(stderr, "lost increments: %" PRIu64 "\n", same);
        failures++;
    }
    if (metrics_family_counter_sum(s.cat.received_instances) !=
        iterations * THREADS) {
        fprintf(stderr, "lost labeled increments\n");
        failures++;
    }
    if (metrics_histogram_count(metrics_series(s.cat.upload_duration, NULL)) !=
        iterations * THREADS) {
        fprintf(stderr, "lost observations\n");
        failures++;
    }

    /* Render the catalog (20 callers, HTTP codes, spool states). */
    static const char *const codes[] = { "200", "202", "400", "401", "403",
                                         "409", "429", "500", "503", "none" };
    for (size_t i = 0; i < 10; i++) {
        metrics_counter_inc(
            METRICS_SERIES(s.cat.http_responses, "stow", codes[i]));
        metrics_counter_inc(
            METRICS_SERIES(s.cat.http_responses, "qido", codes[i]));
    }
    int rounds = 2000;
    uint64_t t0 = now_ns();
    size_t len = 0;
    for (int i = 0; i < rounds; i++) {
        char *text = NULL;
        if (metrics_render(m, 1u << 22, &text, &len) < 0) {
            failures++;
            break;
        }
        free(text);
    }
    printf("metrics_render, catalog: %.1f us, %zu bytes\n",
           (double)(now_ns() - t0) / rounds / 1000.0, len);

    /* The status page with every list full. */
    struct admin_status *st = calloc(1, sizeof(*st));
    struct admin__page_opts opts = { .refresh_s = 10,
                                     .actions = true,
                                     .token = true,
                                     .base_url = "http://127.0.0.1:9475" };
    int64_t now = (int64_t)time(NULL);
    uint64_t *times;
    fill_status(st, now);
    rounds = 500;
    times = calloc((size_t)rounds, sizeof(*times));
    for (int i = 0; i < rounds; i++) {
        struct buf b;
        uint64_t one = now_ns();
        buf_init(&b, ADMIN__PAGE_MAX);
        admin__render_page(&b, st, now, &opts);
        len = b.len;
        if (b.error)
            failures++;
        buf_free(&b);
        times[i] = now_ns() - one;
    }
    qsort(times, (size_t)rounds, sizeof(*times), cmp_u64);
    printf("status page, full lists: median %.1f us, p99 %.1f us, max "
           "%.1f us, %zu bytes\n",
           (double)times[rounds / 2] / 1000.0,
           (double)times[rounds * 99 / 100] / 1000.0,
           (double)times[rounds - 1] / 1000.0, len);
    free(times);
    free(st);
    metrics_free(m);
    return failures ? 1 : 0;
}
