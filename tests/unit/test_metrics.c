/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of metrics (registry, bounded labels, exposition text) and
 * metrics_catalog. The text is also checked by promtool in
 * test_metrics_promtool (metrics_sample.c).
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/metrics.h"
#include "base/metrics_catalog.h"
#include "tap.h"

static char *render(struct metrics *m)
{
    char *text = NULL;
    size_t len = 0;
    int r = metrics_render(m, 1u << 20, &text, &len);

    CHECK_MSG(r == 0, "render: %d", r);
    if (r == 0)
        CHECK(strlen(text) == len);
    return text;
}

static struct metrics_family *add(struct metrics *m,
                                  struct metrics_family_params p)
{
    struct metrics_family *f = NULL;
    char err[256] = "";
    int r = metrics_family_add(m, &p, &f, err, sizeof(err));

    CHECK_MSG(r == 0, "add %s: %d %s", p.name, r, err);
    return f;
}

static int add_err(struct metrics *m, struct metrics_family_params p)
{
    struct metrics_family *f = NULL;
    char err[256] = "";
    int r = metrics_family_add(m, &p, &f, err, sizeof(err));

    if (r < 0)
        CHECK_MSG(err[0] != '\0', "no reason for %s", p.name);
    return r;
}

static const char *const code_label[] = { "code" };
static const char *const two_labels[] = { "service", "code" };

/* The exact text of a small registry: order, HELP/TYPE, cumulative
 * buckets, _sum/_count, doubles. */
static void test_exposition_exact(void)
{
    static const double bounds[] = { 0.1, 1, 10 };
    struct metrics *m = metrics_new();
    struct metrics_family *req, *temp, *lat;
    char *text;

    req = add(m, (struct metrics_family_params){ .name = "t_requests_total",
                                                 .help = "Requests by code.",
                                                 .type = METRICS_COUNTER,
                                                 .label_names = code_label,
                                                 .label_count = 1,
                                                 .max_series = 4 });
    temp =
        add(m, (struct metrics_family_params){ .name = "t_temp_celsius",
                                               .help = "A back\\slash in help.",
                                               .type = METRICS_GAUGE });
    lat = add(m, (struct metrics_family_params){ .name = "t_latency_seconds",
                                                 .help = "Latency.",
                                                 .type = METRICS_HISTOGRAM,
                                                 .buckets = bounds,
                                                 .bucket_count = 3 });
    metrics_counter_add(METRICS_SERIES(req, "500"), 2);
    metrics_counter_inc(METRICS_SERIES(req, "200"));
    metrics_counter_add(METRICS_SERIES(req, "200"), 41);
    metrics_gauge_set(metrics_series(temp, NULL), 21.5);
    struct metrics_series *h = metrics_series(lat, NULL);
    metrics_histogram_observe(h, 0.05);
    metrics_histogram_observe(h, 0.1); /* upper bounds are inclusive */
    metrics_histogram_observe(h, 0.5);
    metrics_histogram_observe(h, 5);
    metrics_histogram_observe(h, 50);
    metrics_histogram_observe(h, NAN); /* ignored */
    CHECK(metrics_histogram_count(h) == 5);
    CHECK(fabs(metrics_histogram_sum(h) - 55.65) < 1e-9);

    text = render(m);
    const char *want = "# HELP t_latency_seconds Latency.\n"
                       "# TYPE t_latency_seconds histogram\n"
                       "t_latency_seconds_bucket{le=\"0.1\"} 2\n"
                       "t_latency_seconds_bucket{le=\"1\"} 3\n"
                       "t_latency_seconds_bucket{le=\"10\"} 4\n"
                       "t_latency_seconds_bucket{le=\"+Inf\"} 5\n"
                       "t_latency_seconds_sum 55.65\n"
                       "t_latency_seconds_count 5\n"
                       "# HELP t_requests_total Requests by code.\n"
                       "# TYPE t_requests_total counter\n"
                       "t_requests_total{code=\"200\"} 42\n"
                       "t_requests_total{code=\"500\"} 2\n"
                       "# HELP t_temp_celsius A back\\\\slash in help.\n"
                       "# TYPE t_temp_celsius gauge\n"
                       "t_temp_celsius 21.5\n";
    CHECK_MSG(text && strcmp(text, want) == 0, "got:\n%s", text);
    free(text);
    metrics_free(m);
}

static void test_escaping_and_floats(void)
{
    static const char *const l1[] = { "v" };
    struct metrics *m = metrics_new();
    struct metrics_family *g;
    char *text;
    char buf[40];

    g = add(m, (struct metrics_family_params){ .name = "t_gauge",
                                               .help = "G.",
                                               .type = METRICS_GAUGE,
                                               .label_names = l1,
                                               .label_count = 1,
                                               .max_series = 8 });
    metrics_gauge_set(METRICS_SERIES(g, "a\"b\\c\nd"), 1);
    metrics_gauge_set(METRICS_SERIES(g, "nan"), NAN);
    metrics_gauge_set(METRICS_SERIES(g, "pinf"), INFINITY);
    metrics_gauge_set(METRICS_SERIES(g, "ninf"), -INFINITY);
    metrics_gauge_set(METRICS_SERIES(g, "third"), 1.0 / 3.0);
    metrics_gauge_set(METRICS_SERIES(g, "\xc3\xa9t\xc3\xa9"), -2.5);
    text = render(m);
    CHECK(text && strstr(text, "t_gauge{v=\"a\\\"b\\\\c\\nd\"} 1\n"));
    CHECK(text && strstr(text, "t_gauge{v=\"nan\"} NaN\n"));
    CHECK(text && strstr(text, "t_gauge{v=\"pinf\"} +Inf\n"));
    CHECK(text && strstr(text, "t_gauge{v=\"ninf\"} -Inf\n"));
    CHECK(text && strstr(text, "t_gauge{v=\"third\"} 0.3333333333333333\n"));
    CHECK(text && strstr(text, "t_gauge{v=\"\xc3\xa9t\xc3\xa9\"} -2.5\n"));
    /* Sorted by value bytes: the quote (0x22) before the letters. */
    CHECK(text && strstr(text, "{v=\"a\\\"") < strstr(text, "{v=\"nan\""));
    CHECK(text && strstr(text, "{v=\"ninf\"") < strstr(text, "{v=\"pinf\""));
    CHECK(text && text[strlen(text) - 1] == '\n');
    free(text);

    metrics_format_double(0.1, buf, sizeof(buf));
    CHECK(strcmp(buf, "0.1") == 0);
    metrics_format_double(100, buf, sizeof(buf));
    CHECK(strcmp(buf, "100") == 0);
    metrics_format_double(1e21, buf, sizeof(buf));
    CHECK(strcmp(buf, "1e+21") == 0);
    metrics_format_double(-0.0, buf, sizeof(buf));
    CHECK(strcmp(buf, "0") == 0);
    metrics_format_double(123456789012345678.0, buf, sizeof(buf));
    CHECK(strtod(buf, NULL) == 123456789012345678.0);
    metrics_format_double(5e-324, buf, sizeof(buf));
    CHECK(strtod(buf, NULL) == 5e-324);
    metrics_free(m);
}

/* max_series, then "other"; invalid values to "other"; "other" shown only
 * once used. */
static void test_bounded_labels(void)
{
    struct metrics *m = metrics_new();
    struct metrics_family *f;
    struct metrics_series *a, *b, *c;
    char *text;
    char longv[METRICS_LABEL_VALUE_MAX + 2];

    f = add(m, (struct metrics_family_params){ .name = "t_by_ae_total",
                                               .help = "By AE.",
                                               .type = METRICS_COUNTER,
                                               .label_names = code_label,
                                               .label_count = 1,
                                               .max_series = 2 });
    a = METRICS_SERIES(f, "CT01");
    b = METRICS_SERIES(f, "MR02");
    CHECK(a != b && !metrics_series_is_other(a) && !metrics_series_is_other(b));
    CHECK(METRICS_SERIES(f, "CT01") == a);
    text = render(m);
    CHECK(text && !strstr(text, "other"));
    free(text);

    c = METRICS_SERIES(f, "US03");
    CHECK(metrics_series_is_other(c));
    CHECK(METRICS_SERIES(f, "XA04") == c);
    memset(longv, 'x', sizeof(longv) - 1);
    longv[sizeof(longv) - 1] = '\0';
    CHECK(METRICS_SERIES(f, longv) == c);
    CHECK(METRICS_SERIES(f, "") == c);
    CHECK(METRICS_SERIES(f, "bad\xff") == c);
    CHECK(METRICS_SERIES(f, "tab\there") == c);
    CHECK(METRICS_SERIES(f, METRICS_OTHER) == c);
    CHECK(metrics_series(f, (const char *const[]){ NULL }) == c);
    CHECK(metrics_series(f, NULL) == c);
    metrics_counter_add(a, 3);
    metrics_counter_add(c, 5);
    text = render(m);
    CHECK(text && strstr(text, "t_by_ae_total{code=\"CT01\"} 3\n"));
    CHECK(text && strstr(text, "t_by_ae_total{code=\"MR02\"} 0\n"));
    CHECK(text && strstr(text, "t_by_ae_total{code=\"other\"} 5\n"));
    CHECK(text && !strstr(text, "US03"));
    free(text);
    CHECK(metrics_family_counter_sum(f) == 8);

    /* Two labels: "other" for every label of the overflow series. */
    struct metrics_family *h =
        add(m, (struct metrics_family_params){ .name = "t_http_total",
                                               .help = "HTTP.",
                                               .type = METRICS_COUNTER,
                                               .label_names = two_labels,
                                               .label_count = 2,
                                               .max_series = 1 });
    metrics_counter_inc(METRICS_SERIES(h, "stow", "200"));
    metrics_counter_inc(METRICS_SERIES(h, "stow", "503"));
    /* A partly "other" combination is a series of its own kind. */
    CHECK(!metrics_series_is_other(METRICS_SERIES(h, "stow", "200")));
    text = render(m);
    CHECK(text &&
          strstr(text, "t_http_total{service=\"stow\",code=\"200\"} 1\n"));
    CHECK(text &&
          strstr(text, "t_http_total{service=\"other\",code=\"other\"} 1\n"));
    free(text);
    metrics_free(m);
}

static double callback_value(void *ctx)
{
    return *(double *)ctx;
}

static void collector(void *ctx)
{
    struct metrics_series *s = ctx;
    metrics_gauge_add(s, 1);
}

static void test_callbacks(void)
{
    struct metrics *m = metrics_new();
    struct metrics_family *f, *g;
    double free_bytes = 1234567890;
    char *text;

    f = add(m, (struct metrics_family_params){ .name = "t_free_bytes",
                                               .help = "Free.",
                                               .type = METRICS_GAUGE });
    g = add(m, (struct metrics_family_params){ .name = "t_renders",
                                               .help = "Renders.",
                                               .type = METRICS_GAUGE });
    metrics_gauge_set_fn(metrics_series(f, NULL), callback_value, &free_bytes);
    CHECK(metrics_add_collector(m, collector, metrics_series(g, NULL)) == 0);
    text = render(m);
    CHECK(text && strstr(text, "t_free_bytes 1234567890\n"));
    CHECK(text && strstr(text, "t_renders 1\n"));
    free(text);
    free_bytes = 42;
    text = render(m);
    CHECK(text && strstr(text, "t_free_bytes 42\n"));
    CHECK(text && strstr(text, "t_renders 2\n"));
    free(text);
    metrics_gauge_set_fn(metrics_series(f, NULL), NULL, NULL);
    metrics_gauge_set(metrics_series(f, NULL), 7);
    text = render(m);
    CHECK(text && strstr(text, "t_free_bytes 7\n"));
    free(text);
    for (int i = 1; i < 16; i++)
        CHECK(metrics_add_collector(m, collector, metrics_series(g, NULL)) ==
              0);
    CHECK(metrics_add_collector(m, collector, NULL) == -ENOSPC);
    metrics_free(m);
}

static void test_registration_errors(void)
{
    static const double up[] = { 1, 2 };
    static const double down[] = { 2, 1 };
    static const double nan_b[] = { 1, NAN };
    static const char *const bad_l[] = { "__x" };
    static const char *const le_l[] = { "le" };
    static const char *const dup_l[] = { "a", "a" };
    static const char *const five[] = { "a", "b", "c", "d", "e" };
    struct metrics *m = metrics_new();
    struct metrics_family_params p;

    p = (struct metrics_family_params){ .name = "1abc",
                                        .help = "x",
                                        .type = METRICS_GAUGE };
    CHECK(add_err(m, p) == -EINVAL);
    p.name = "a-b";
    CHECK(add_err(m, p) == -EINVAL);
    p.name = "a:b"; /* colons: recording rules only */
    CHECK(add_err(m, p) == -EINVAL);
    p.name = "t_ok";
    p.help = "";
    CHECK(add_err(m, p) == -EINVAL);
    p.help = "two\nlines";
    CHECK(add_err(m, p) == -EINVAL);
    p.help = "ok";
    p.name = "t_gauge_total";
    CHECK(add_err(m, p) == -EINVAL);
    p.type = METRICS_COUNTER;
    p.name = "t_counter";
    CHECK(add_err(m, p) == -EINVAL);
    p.name = "t_counter_total";
    CHECK(add_err(m, p) == 0);
    CHECK(add_err(m, p) == -EEXIST);
    CHECK(metrics_family_find(m, "t_counter_total") != NULL);
    CHECK(metrics_family_find(m, "t_nothing") == NULL);

    p = (struct metrics_family_params){ .name = "t_h",
                                        .help = "h",
                                        .type = METRICS_HISTOGRAM,
                                        .buckets = up,
                                        .bucket_count = 2 };
    CHECK(add_err(m, p) == 0);
    p = (struct metrics_family_params){ .name = "t_h_count",
                                        .help = "c",
                                        .type = METRICS_GAUGE };
    CHECK(add_err(m, p) == -EEXIST);
    p = (struct metrics_family_params){ .name = "t_g",
                                        .help = "g",
                                        .type = METRICS_GAUGE };
    CHECK(add_err(m, p) == 0);
    p = (struct metrics_family_params){ .name = "t",
                                        .help = "h",
                                        .type = METRICS_HISTOGRAM,
                                        .buckets = up,
                                        .bucket_count = 2 };
    CHECK(add_err(m, p) == 0);
    p.name = "t_hx";
    p.buckets = down;
    CHECK(add_err(m, p) == -EINVAL);
    p.buckets = nan_b;
    CHECK(add_err(m, p) == -EINVAL);
    p.buckets = NULL;
    p.bucket_count = 0;
    CHECK(add_err(m, p) == -EINVAL);
    p.buckets = up;
    p.bucket_count = 2;
    p.label_names = le_l;
    p.label_count = 1;
    p.max_series = 2;
    CHECK(add_err(m, p) == -EINVAL);

    p = (struct metrics_family_params){ .name = "t_l",
                                        .help = "l",
                                        .type = METRICS_GAUGE,
                                        .label_names = bad_l,
                                        .label_count = 1,
                                        .max_series = 2 };
    CHECK(add_err(m, p) == -EINVAL);
    p.label_names = dup_l;
    p.label_count = 2;
    CHECK(add_err(m, p) == -EINVAL);
    p.label_names = five;
    p.label_count = 5;
    CHECK(add_err(m, p) == -EINVAL);
    p.label_names = five;
    p.label_count = 1;
    p.max_series = 0;
    CHECK(add_err(m, p) == -EINVAL);
    p.max_series = 5000;
    CHECK(add_err(m, p) == -EINVAL);
    metrics_free(m);
}

static void test_ceiling(void)
{
    struct metrics *m = metrics_new();
    struct metrics_family *f;
    char *text = NULL;
    size_t len = 0;

    f = add(m, (struct metrics_family_params){ .name = "t_x_total",
                                               .help = "X.",
                                               .type = METRICS_COUNTER });
    metrics_counter_inc(metrics_series(f, NULL));
    CHECK(metrics_render(m, 40, &text, &len) == -E2BIG);
    CHECK(text == NULL);
    CHECK(metrics_render(m, 4096, &text, &len) == 0);
    CHECK(len > 40 && len < 4096);
    free(text);
    /* An empty registry renders as nothing, not as an error. */
    metrics_free(m);
    m = metrics_new();
    CHECK(metrics_render(m, 4096, &text, &len) == 0 && len == 0);
    free(text);
    metrics_free(m);
}

/* ---- concurrency --------------------------------------------------------- */

#define THREADS 4
#define PER_THREAD 200000

struct worker {
    struct metrics_family *counter;
    struct metrics_family *labeled;
    struct metrics_family *hist;
    struct metrics_family *gauge;
    int id;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    struct metrics_series *c = metrics_series(w->counter, NULL);
    struct metrics_series *h = metrics_series(w->hist, NULL);
    struct metrics_series *g = metrics_series(w->gauge, NULL);
    char name[16];

    for (int i = 0; i < PER_THREAD; i++) {
        metrics_counter_inc(c);
        /* Every thread creates the same 40 values in a different order. */
        (void)snprintf(name, sizeof(name), "AE%02d", (i * 7 + w->id) % 40);
        metrics_counter_inc(METRICS_SERIES(w->labeled, name));
        metrics_histogram_observe(h, (double)(i % 4));
        metrics_gauge_add(g, 1);
    }
    return NULL;
}

struct renderer {
    struct metrics *m;
    atomic_bool stop;
    int renders;
};

static void *render_loop(void *arg)
{
    struct renderer *r = arg;

    while (!atomic_load(&r->stop)) {
        char *text = NULL;
        size_t len;
        if (metrics_render(r->m, 1u << 20, &text, &len) == 0)
            r->renders++;
        free(text);
    }
    return NULL;
}

static void test_concurrency(void)
{
    static const double b[] = { 0.5, 1.5, 2.5 };
    static const char *const ae[] = { "calling_ae" };
    struct metrics *m = metrics_new();
    struct worker w[THREADS];
    pthread_t t[THREADS];
    pthread_t rt;
    struct renderer rd = { .m = m };
    struct metrics_family *counter, *labeled, *hist, *gauge;
    uint64_t expect = (uint64_t)THREADS * PER_THREAD;

    counter = add(m, (struct metrics_family_params){ .name = "t_c_total",
                                                     .help = "C.",
                                                     .type = METRICS_COUNTER });
    labeled = add(m, (struct metrics_family_params){ .name = "t_l_total",
                                                     .help = "L.",
                                                     .type = METRICS_COUNTER,
                                                     .label_names = ae,
                                                     .label_count = 1,
                                                     .max_series = 32 });
    hist = add(m, (struct metrics_family_params){ .name = "t_h_seconds",
                                                  .help = "H.",
                                                  .type = METRICS_HISTOGRAM,
                                                  .buckets = b,
                                                  .bucket_count = 3 });
    gauge = add(m, (struct metrics_family_params){
                       .name = "t_g", .help = "G.", .type = METRICS_GAUGE });
    CHECK(pthread_create(&rt, NULL, render_loop, &rd) == 0);
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){ counter, labeled, hist, gauge, i };
        CHECK(pthread_create(&t[i], NULL, work, &w[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    atomic_store(&rd.stop, true);
    pthread_join(rt, NULL);

    CHECK(metrics_counter_get(metrics_series(counter, NULL)) == expect);
    CHECK(metrics_family_counter_sum(labeled) == expect);
    CHECK(metrics_histogram_count(metrics_series(hist, NULL)) == expect);
    CHECK(metrics_histogram_sum(metrics_series(hist, NULL)) ==
          (double)expect * 1.5);
    CHECK(metrics_gauge_get(metrics_series(gauge, NULL)) == (double)expect);
    /* 40 values, 32 series: each value exactly once, 8 in "other". */
    char *text = render(m);
    int lines = 0;
    for (const char *p = text; p && (p = strstr(p, "t_l_total{")); p++)
        lines++;
    CHECK_MSG(lines == 33, "%d series", lines);
    free(text);
    CHECK(rd.renders > 0);
    metrics_free(m);
}

static void test_catalog(void)
{
    static const char *const callers[] = { "CT01", "MR02", "CT01" };
    struct metrics_catalog_params p = { .version = "0.1.0",
                                        .start_time_s = 1764000000,
                                        .callers = callers,
                                        .caller_count = 3 };
    struct metrics_catalog cat;
    struct metrics *m = metrics_new();
    char err[256] = "";
    char *text;

    CHECK(metrics_catalog_register(m, &p, &cat, err, sizeof(err)) == 0);
    CHECK(cat.delivery_latency != NULL && cat.build_info != NULL);
    /* Two distinct callers declared; a third goes to other. */
    CHECK(!metrics_series_is_other(
        METRICS_SERIES(cat.received_instances, "MR02")));
    CHECK(metrics_series_is_other(
        METRICS_SERIES(cat.received_instances, "US03")));
    text = render(m);
    CHECK(text && strstr(text, "stowbridge_build_info{version=\"0.1.0\"} 1\n"));
    CHECK(text && strstr(text, "stowbridge_start_time_seconds 1764000000\n"));
    CHECK(text && strstr(text, "stowbridge_received_instances_total"
                               "{calling_ae=\"CT01\"} 0\n"));
    CHECK(text && strstr(text, "stowbridge_spool_entries{state=\"failed\"} 0"));
    CHECK(text && strstr(text, "stowbridge_token_refreshes_total"
                               "{result=\"failed\"} 0\n"));
    CHECK(text && strstr(text, "# TYPE stowbridge_delivery_latency_seconds "
                               "histogram\n"));
    free(text);
    /* Registering twice in one registry: names are taken. */
    CHECK(metrics_catalog_register(m, &p, &cat, err, sizeof(err)) == -EEXIST);
    metrics_free(m);

    static const char *many[METRICS_CATALOG_CALLERS_MAX + 1];
    for (size_t i = 0; i <= METRICS_CATALOG_CALLERS_MAX; i++)
        many[i] = "X";
    p.callers = many;
    p.caller_count = METRICS_CATALOG_CALLERS_MAX + 1;
    m = metrics_new();
    CHECK(metrics_catalog_register(m, &p, &cat, err, sizeof(err)) == -EINVAL);
    metrics_free(m);
}

int main(void)
{
    test_exposition_exact();
    test_escaping_and_floats();
    test_bounded_labels();
    test_callbacks();
    test_registration_errors();
    test_ceiling();
    test_concurrency();
    test_catalog();
    return tap_done();
}
