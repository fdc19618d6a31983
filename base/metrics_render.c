/* SPDX-License-Identifier: Apache-2.0 */
/*
 * metrics_render - the Prometheus text exposition format 0.0.4 of a
 * registry (see metrics.h).
 */
#include "metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics_int.h"

/* A growable text buffer with a ceiling; the first error sticks. */
struct text {
    char *p;
    size_t len;
    size_t cap;
    size_t max;
    int error;
};

static void text_reserve(struct text *t, size_t more)
{
    size_t cap;
    char *p;

    if (t->error)
        return;
    if (t->len + more + 1 > t->max) {
        t->error = -E2BIG;
        return;
    }
    if (t->len + more + 1 <= t->cap)
        return;
    cap = t->cap ? t->cap : 4096;
    while (cap < t->len + more + 1)
        cap *= 2;
    if (cap > t->max)
        cap = t->max;
    p = realloc(t->p, cap);
    if (p == NULL) {
        t->error = -ENOMEM;
        return;
    }
    t->p = p;
    t->cap = cap;
}

static void text_put(struct text *t, const char *s, size_t n)
{
    text_reserve(t, n);
    if (t->error)
        return;
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}

static void text_str(struct text *t, const char *s)
{
    text_put(t, s, strlen(s));
}

/* Escapes \ and newline, and " too when @quote (label values). */
static void text_escaped(struct text *t, const char *s, bool quote)
{
    const char *run = s;

    for (; *s; s++) {
        const char *rep = NULL;
        if (*s == '\\')
            rep = "\\\\";
        else if (*s == '\n')
            rep = "\\n";
        else if (quote && *s == '"')
            rep = "\\\"";
        if (rep == NULL)
            continue;
        text_put(t, run, (size_t)(s - run));
        text_str(t, rep);
        run = s + 1;
    }
    text_put(t, run, (size_t)(s - run));
}

static void text_u64(struct text *t, uint64_t v)
{
    char buf[24];
    int n = snprintf(buf, sizeof(buf), "%" PRIu64, v);

    text_put(t, buf, (size_t)n);
}

static void text_double(struct text *t, double v)
{
    char buf[40];
    size_t n = metrics_format_double(v, buf, sizeof(buf));

    text_put(t, buf, n);
}

size_t metrics_format_double(double v, char *buf, size_t len)
{
    int n;

    if (len == 0)
        return 0;
    if (isnan(v))
        n = snprintf(buf, len, "NaN");
    else if (isinf(v))
        n = snprintf(buf, len, v > 0 ? "+Inf" : "-Inf");
    else if (v == 0)
        n = snprintf(buf, len, "0");
    else {
        /* %.15g is exact for every decimal of up to 15 digits (DBL_DIG);
         * 17 digits always read back. */
        for (int prec = 15; prec <= 17; prec++) {
            n = snprintf(buf, len, "%.*g", prec, v);
            if (n < 0 || (size_t)n >= len || strtod(buf, NULL) == v)
                break;
        }
    }
    if (n < 0)
        n = 0;
    return (size_t)n < len ? (size_t)n : len - 1;
}

/* {a="x",b="y"[,le="..."]} or nothing. */
static void text_labels(struct text *t, const struct metrics_family *f,
                        const struct metrics_series *s, const char *le)
{
    if (f->label_count == 0 && le == NULL)
        return;
    text_put(t, "{", 1);
    for (size_t i = 0; i < f->label_count; i++) {
        if (i > 0)
            text_put(t, ",", 1);
        text_str(t, f->label_names[i]);
        text_put(t, "=\"", 2);
        text_escaped(t, s->values[i], true);
        text_put(t, "\"", 1);
    }
    if (le != NULL) {
        if (f->label_count > 0)
            text_put(t, ",", 1);
        text_put(t, "le=\"", 4);
        text_str(t, le);
        text_put(t, "\"", 1);
    }
    text_put(t, "}", 1);
}

static void render_histogram(struct text *t, const struct metrics_family *f,
                             const struct metrics_series *s)
{
    uint64_t cumulative = 0;
    char le[40];

    for (size_t i = 0; i <= f->bucket_count; i++) {
        cumulative +=
            atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
        if (i < f->bucket_count)
            (void)metrics_format_double(f->buckets[i], le, sizeof(le));
        else
            (void)snprintf(le, sizeof(le), "+Inf");
        text_str(t, f->name);
        text_put(t, "_bucket", 7);
        text_labels(t, f, s, le);
        text_put(t, " ", 1);
        text_u64(t, cumulative);
        text_put(t, "\n", 1);
    }
    text_str(t, f->name);
    text_put(t, "_sum", 4);
    text_labels(t, f, s, NULL);
    text_put(t, " ", 1);
    text_double(t, metrics_histogram_sum(s));
    text_put(t, "\n", 1);
    /* The count is the +Inf bucket, so the two always agree. */
    text_str(t, f->name);
    text_put(t, "_count", 6);
    text_labels(t, f, s, NULL);
    text_put(t, " ", 1);
    text_u64(t, cumulative);
    text_put(t, "\n", 1);
}

static void render_series(struct text *t, const struct metrics_family *f,
                          struct metrics_series *s)
{
    if (f->type == METRICS_HISTOGRAM) {
        render_histogram(t, f, s);
        return;
    }
    text_str(t, f->name);
    text_labels(t, f, s, NULL);
    text_put(t, " ", 1);
    if (f->type == METRICS_COUNTER)
        text_u64(t, metrics_counter_get(s));
    else if (s->fn != NULL)
        text_double(t, s->fn(s->fn_ctx));
    else
        text_double(t, metrics_gauge_get(s));
    text_put(t, "\n", 1);
}

static int series_cmp(const void *a, const void *b)
{
    const struct metrics_series *x = *(const struct metrics_series *const *)a;
    const struct metrics_series *y = *(const struct metrics_series *const *)b;
    size_t n = x->family->label_count;

    for (size_t i = 0; i < n; i++) {
        int c = strcmp(x->values[i], y->values[i]);
        if (c != 0)
            return c;
    }
    return 0;
}

static void render_family(struct text *t, struct metrics_family *f,
                          struct metrics_series **order)
{
    static const char *const type_names[] = { "counter", "gauge", "histogram" };
    size_t n;

    pthread_mutex_lock(&f->lock);
    n = atomic_load_explicit(&f->count, memory_order_acquire);
    memcpy(order, f->slots, n * sizeof(*order));
    if (f->other != NULL &&
        atomic_load_explicit(&f->other->used, memory_order_relaxed))
        order[n++] = f->other;
    if (n > 0) {
        qsort(order, n, sizeof(*order), series_cmp);
        text_put(t, "# HELP ", 7);
        text_str(t, f->name);
        text_put(t, " ", 1);
        text_escaped(t, f->help, false);
        text_put(t, "\n# TYPE ", 8);
        text_str(t, f->name);
        text_put(t, " ", 1);
        text_str(t, type_names[f->type]);
        text_put(t, "\n", 1);
        for (size_t i = 0; i < n; i++)
            render_series(t, f, order[i]);
    }
    pthread_mutex_unlock(&f->lock);
}

int metrics_render(struct metrics *m, size_t max_len, char **ret_text,
                   size_t *ret_len)
{
    struct metrics_collector collectors[METRICS_COLLECTORS_MAX];
    struct metrics_series **order = NULL;
    struct text t = { .max = max_len };
    size_t ncollectors;
    size_t most = 0;

    pthread_mutex_lock(&m->lock);
    ncollectors = m->collector_count;
    memcpy(collectors, m->collectors, ncollectors * sizeof(*collectors));
    pthread_mutex_unlock(&m->lock);
    for (size_t i = 0; i < ncollectors; i++)
        collectors[i].fn(collectors[i].ctx);

    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->family_count; i++)
        if (m->families[i]->max_series > most)
            most = m->families[i]->max_series;
    order = malloc((most + 1) * sizeof(*order));
    if (order == NULL)
        t.error = -ENOMEM;
    text_reserve(&t, 0);
    for (size_t i = 0; i < m->family_count && !t.error; i++)
        render_family(&t, m->families[i], order);
    pthread_mutex_unlock(&m->lock);
    free(order);
    if (t.error) {
        free(t.p);
        return t.error;
    }
    *ret_text = t.p;
    *ret_len = t.len;
    return 0;
}
