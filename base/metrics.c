/* SPDX-License-Identifier: Apache-2.0 */
/*
 * metrics - see metrics.h.
 *
 * Layout: a registry keeps its families in an array sorted by name,
 * under the registry mutex (registration and rendering only). A family
 * keeps its series in a fixed array of max_series slots that only grows:
 * a new series is written to slot n, then the count is published with a
 * release store, so lock-free readers that load the count with acquire
 * see a fully built series. The family mutex serialises creation and the
 * callback pointers of callback gauges.
 */
#include "metrics.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics_int.h"
#include "util.h"

/* ---- small helpers ---------------------------------------------------- */

static uint64_t double_bits(double d)
{
    uint64_t u;

    memcpy(&u, &d, sizeof(u));
    return u;
}

static double bits_double(uint64_t u)
{
    double d;

    memcpy(&d, &u, sizeof(d));
    return d;
}

static void atomic_add_double(_Atomic uint64_t *bits, double delta)
{
    uint64_t old = atomic_load_explicit(bits, memory_order_relaxed);

    while (!atomic_compare_exchange_weak_explicit(
        bits, &old, double_bits(bits_double(old) + delta), memory_order_relaxed,
        memory_order_relaxed))
        ;
}

/* FNV-1a over the values, with a separator no UTF-8 text contains. */
static uint32_t values_hash(const char *const *values, size_t count)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < count; i++) {
        for (const unsigned char *p = (const unsigned char *)values[i]; *p;
             p++) {
            h ^= *p;
            h *= 16777619u;
        }
        h ^= 0xffu;
        h *= 16777619u;
    }
    return h;
}

static bool name_valid(const char *name)
{
    if (name == NULL || name[0] == '\0')
        return false;
    for (const char *p = name; *p; p++) {
        char c = *p;
        bool alpha =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(p != name && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s);
    size_t m = strlen(suffix);

    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* A label value we render: 1..128 bytes of UTF-8, no control characters
 * but newline (escaped as \n). */
static bool label_value_valid(const char *v)
{
    size_t len = strlen(v);

    if (len == 0 || len > METRICS_LABEL_VALUE_MAX)
        return false;
    for (const unsigned char *p = (const unsigned char *)v; *p;) {
        size_t n = util_utf8_sequence(p);
        if (n == 0 || (*p < 0x20 && *p != '\n') || *p == 0x7f)
            return false;
        p += n;
    }
    return true;
}

/* ---- registry --------------------------------------------------------- */

struct metrics *metrics_new(void)
{
    struct metrics *m = calloc(1, sizeof(*m));

    if (m == NULL)
        return NULL;
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        return NULL;
    }
    return m;
}

static void series_free(struct metrics_series *s)
{
    free(s);
}

static void family_free(struct metrics_family *f)
{
    size_t n;

    if (f == NULL)
        return;
    n = atomic_load_explicit(&f->count, memory_order_relaxed);
    for (size_t i = 0; i < n; i++)
        series_free(f->slots[i]);
    series_free(f->other);
    free(f->slots);
    for (size_t i = 0; i < f->label_count; i++)
        free(f->label_names[i]);
    free(f->name);
    free(f->help);
    (void)pthread_mutex_destroy(&f->lock);
    free(f);
}

void metrics_free(struct metrics *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->family_count; i++)
        family_free(m->families[i]);
    free(m->families);
    (void)pthread_mutex_destroy(&m->lock);
    free(m);
}

/*
 * A series of @f with label values @values (label_count strings, already
 * valid), in one block aligned to a cache line: the struct, the histogram
 * buckets, then the strings.
 */
static struct metrics_series *series_new(struct metrics_family *f,
                                         const char *const *values, bool other)
{
    size_t head = (sizeof(struct metrics_series) + METRICS_CACHE_LINE - 1) &
                  ~(size_t)(METRICS_CACHE_LINE - 1);
    size_t nbuckets = f->type == METRICS_HISTOGRAM ? f->bucket_count + 1 : 0;
    size_t size = head + nbuckets * sizeof(_Atomic uint64_t);
    size_t lens[METRICS_LABELS_MAX];
    struct metrics_series *s;
    char *p;

    for (size_t i = 0; i < f->label_count; i++) {
        lens[i] = strlen(values[i]);
        size += lens[i] + 1;
    }
    size = (size + METRICS_CACHE_LINE - 1) & ~(size_t)(METRICS_CACHE_LINE - 1);
    s = aligned_alloc(METRICS_CACHE_LINE, size);
    if (s == NULL)
        return NULL;
    memset(s, 0, size);
    atomic_init(&s->value, f->type == METRICS_GAUGE ? double_bits(0.0) : 0);
    atomic_init(&s->sum_bits, double_bits(0.0));
    atomic_init(&s->used, false);
    s->family = f;
    s->type = f->type;
    s->other = other;
    s->buckets = nbuckets ? (_Atomic uint64_t *)((char *)s + head) : NULL;
    for (size_t i = 0; i < nbuckets; i++)
        atomic_init(&s->buckets[i], 0);
    p = (char *)s + head + nbuckets * sizeof(_Atomic uint64_t);
    for (size_t i = 0; i < f->label_count; i++) {
        memcpy(p, values[i], lens[i] + 1);
        s->values[i] = p;
        p += lens[i] + 1;
    }
    s->hash = values_hash((const char *const *)s->values, f->label_count);
    return s;
}

/* The names a family's samples and HELP/TYPE lines use (up to 4). */
static size_t family_sample_names(const char *name, enum metrics_type type,
                                  char names[4][160])
{
    if (type != METRICS_HISTOGRAM) {
        (void)snprintf(names[0], sizeof(names[0]), "%s", name);
        return 1;
    }
    (void)snprintf(names[0], sizeof(names[0]), "%s", name);
    (void)snprintf(names[1], sizeof(names[1]), "%s_bucket", name);
    (void)snprintf(names[2], sizeof(names[2]), "%s_sum", name);
    (void)snprintf(names[3], sizeof(names[3]), "%s_count", name);
    return 4;
}

static bool name_taken(const struct metrics *m, const char *name,
                       enum metrics_type type)
{
    char mine[4][160];
    char theirs[4][160];
    size_t nm = family_sample_names(name, type, mine);

    for (size_t i = 0; i < m->family_count; i++) {
        const struct metrics_family *f = m->families[i];
        size_t nt = family_sample_names(f->name, f->type, theirs);
        for (size_t a = 0; a < nm; a++)
            for (size_t b = 0; b < nt; b++)
                if (strcmp(mine[a], theirs[b]) == 0)
                    return true;
    }
    return false;
}

static int params_check(const struct metrics_family_params *p, char *err,
                        size_t err_len)
{
    if (!name_valid(p->name) || strlen(p->name) > 120) {
        util_err(err, err_len,
                 "metric name '%s' is not [a-zA-Z_][a-zA-Z0-9_]* "
                 "of at most 120 characters",
                 p->name ? p->name : "(null)");
        return -EINVAL;
    }
    if (p->type == METRICS_COUNTER && !ends_with(p->name, "_total")) {
        util_err(err, err_len, "counter '%s' must end in _total", p->name);
        return -EINVAL;
    }
    if (p->type != METRICS_COUNTER && ends_with(p->name, "_total")) {
        util_err(err, err_len, "only counters end in _total ('%s')", p->name);
        return -EINVAL;
    }
    if (p->type != METRICS_COUNTER && p->type != METRICS_GAUGE &&
        p->type != METRICS_HISTOGRAM) {
        util_err(err, err_len, "metric '%s': unknown type", p->name);
        return -EINVAL;
    }
    if (p->help == NULL || p->help[0] == '\0' || strchr(p->help, '\n')) {
        util_err(err, err_len, "metric '%s' needs a one-line help text",
                 p->name);
        return -EINVAL;
    }
    if (p->label_count > METRICS_LABELS_MAX ||
        (p->label_count > 0 && p->label_names == NULL)) {
        util_err(err, err_len, "metric '%s': at most %d label names", p->name,
                 METRICS_LABELS_MAX);
        return -EINVAL;
    }
    for (size_t i = 0; i < p->label_count; i++) {
        const char *l = p->label_names[i];
        if (!name_valid(l) || strncmp(l, "__", 2) == 0 ||
            (p->type == METRICS_HISTOGRAM && strcmp(l, "le") == 0)) {
            util_err(err, err_len, "metric '%s': bad label name '%s'", p->name,
                     l ? l : "(null)");
            return -EINVAL;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(l, p->label_names[j]) == 0) {
                util_err(err, err_len, "metric '%s': label '%s' twice", p->name,
                         l);
                return -EINVAL;
            }
    }
    if (p->label_count > 0 &&
        (p->max_series < 1 || p->max_series > METRICS_SERIES_PER_FAMILY_MAX)) {
        util_err(err, err_len, "metric '%s': max_series must be 1..%d", p->name,
                 METRICS_SERIES_PER_FAMILY_MAX);
        return -EINVAL;
    }
    if (p->type == METRICS_HISTOGRAM) {
        if (p->buckets == NULL || p->bucket_count < 1 ||
            p->bucket_count > METRICS_BUCKETS_MAX) {
            util_err(err, err_len, "histogram '%s' needs 1..%d buckets",
                     p->name, METRICS_BUCKETS_MAX);
            return -EINVAL;
        }
        for (size_t i = 0; i < p->bucket_count; i++)
            if (!isfinite(p->buckets[i]) ||
                (i > 0 && !(p->buckets[i] > p->buckets[i - 1]))) {
                util_err(err, err_len,
                         "histogram '%s': bucket bounds must be "
                         "finite and strictly increasing",
                         p->name);
                return -EINVAL;
            }
    }
    return 0;
}

static struct metrics_family *family_new(const struct metrics_family_params *p)
{
    struct metrics_family *f = calloc(1, sizeof(*f));
    const char *other_values[METRICS_LABELS_MAX];

    if (f == NULL)
        return NULL;
    if (pthread_mutex_init(&f->lock, NULL) != 0) {
        free(f);
        return NULL;
    }
    atomic_init(&f->count, 0);
    f->type = p->type;
    f->label_count = p->label_count;
    f->max_series = p->label_count ? p->max_series : 1;
    f->bucket_count = p->type == METRICS_HISTOGRAM ? p->bucket_count : 0;
    for (size_t i = 0; i < f->bucket_count; i++)
        f->buckets[i] = p->buckets[i];
    f->name = strdup(p->name);
    f->help = strdup(p->help);
    f->slots = calloc(f->max_series, sizeof(*f->slots));
    if (f->name == NULL || f->help == NULL || f->slots == NULL)
        goto out_free;
    for (size_t i = 0; i < p->label_count; i++) {
        f->label_names[i] = strdup(p->label_names[i]);
        if (f->label_names[i] == NULL)
            goto out_free;
        other_values[i] = METRICS_OTHER;
    }
    if (p->label_count == 0) {
        f->slots[0] = series_new(f, NULL, false);
        if (f->slots[0] == NULL)
            goto out_free;
        atomic_store_explicit(&f->count, 1, memory_order_release);
    } else {
        f->other = series_new(f, other_values, true);
        if (f->other == NULL)
            goto out_free;
    }
    return f;

out_free:
    family_free(f);
    return NULL;
}

int metrics_family_add(struct metrics *m,
                       const struct metrics_family_params *params,
                       struct metrics_family **ret_family, char *err,
                       size_t err_len)
{
    struct metrics_family *f;
    size_t pos;
    int r;

    r = params_check(params, err, err_len);
    if (r < 0)
        return r;
    f = family_new(params);
    if (f == NULL) {
        util_err(err, err_len, "metric '%s': out of memory", params->name);
        return -ENOMEM;
    }
    pthread_mutex_lock(&m->lock);
    if (name_taken(m, f->name, f->type)) {
        pthread_mutex_unlock(&m->lock);
        util_err(err, err_len, "metric name '%s' is already taken", f->name);
        family_free(f);
        return -EEXIST;
    }
    if (m->family_count == m->family_cap) {
        size_t cap = m->family_cap ? m->family_cap * 2 : 16;
        struct metrics_family **a = realloc(m->families, cap * sizeof(*a));
        if (a == NULL) {
            pthread_mutex_unlock(&m->lock);
            util_err(err, err_len, "metric '%s': out of memory", f->name);
            family_free(f);
            return -ENOMEM;
        }
        m->families = a;
        m->family_cap = cap;
    }
    for (pos = 0; pos < m->family_count; pos++)
        if (strcmp(m->families[pos]->name, f->name) > 0)
            break;
    memmove(&m->families[pos + 1], &m->families[pos],
            (m->family_count - pos) * sizeof(*m->families));
    m->families[pos] = f;
    m->family_count++;
    pthread_mutex_unlock(&m->lock);
    *ret_family = f;
    return 0;
}

struct metrics_family *metrics_family_find(struct metrics *m, const char *name)
{
    struct metrics_family *found = NULL;

    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->family_count; i++)
        if (strcmp(m->families[i]->name, name) == 0) {
            found = m->families[i];
            break;
        }
    pthread_mutex_unlock(&m->lock);
    return found;
}

/* ---- series lookup ---------------------------------------------------- */

static bool values_equal(const struct metrics_series *s,
                         const char *const *values, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (strcmp(s->values[i], values[i]) != 0)
            return false;
    return true;
}

static struct metrics_series *give_other(struct metrics_family *f)
{
    if (!atomic_load_explicit(&f->other->used, memory_order_relaxed))
        atomic_store_explicit(&f->other->used, true, memory_order_relaxed);
    return f->other;
}

static struct metrics_series *scan(struct metrics_family *f, size_t n,
                                   const char *const *values, uint32_t h)
{
    for (size_t i = 0; i < n; i++) {
        struct metrics_series *s = f->slots[i];
        if (s->hash == h && values_equal(s, values, f->label_count))
            return s;
    }
    return NULL;
}

/* The slow path: validate, then create under the family mutex. */
static struct metrics_series *
series_create(struct metrics_family *f, const char *const *values, uint32_t h)
{
    struct metrics_series *s;
    bool all_other = true;
    size_t n;

    for (size_t i = 0; i < f->label_count; i++) {
        if (values[i] == NULL || !label_value_valid(values[i]))
            return give_other(f);
        if (strcmp(values[i], METRICS_OTHER) != 0)
            all_other = false;
    }
    if (all_other)
        return give_other(f);
    pthread_mutex_lock(&f->lock);
    n = atomic_load_explicit(&f->count, memory_order_relaxed);
    s = scan(f, n, values, h);
    if (s == NULL && n < f->max_series) {
        s = series_new(f, values, false);
        if (s != NULL) {
            f->slots[n] = s;
            atomic_store_explicit(&f->count, n + 1, memory_order_release);
        }
    }
    pthread_mutex_unlock(&f->lock);
    return s != NULL ? s : give_other(f);
}

struct metrics_series *metrics_series(struct metrics_family *f,
                                      const char *const *values)
{
    struct metrics_series *s;
    size_t n;
    uint32_t h;

    if (f->label_count == 0)
        return f->slots[0];
    if (values == NULL)
        return give_other(f);
    for (size_t i = 0; i < f->label_count; i++)
        if (values[i] == NULL)
            return give_other(f);
    h = values_hash(values, f->label_count);
    n = atomic_load_explicit(&f->count, memory_order_acquire);
    s = scan(f, n, values, h);
    if (s != NULL)
        return s;
    return series_create(f, values, h);
}

bool metrics_series_is_other(const struct metrics_series *s)
{
    return s->other;
}

/* ---- updates ---------------------------------------------------------- */

void metrics_counter_add(struct metrics_series *s, uint64_t n)
{
    assert(s->type == METRICS_COUNTER);
    atomic_fetch_add_explicit(&s->value, n, memory_order_relaxed);
}

uint64_t metrics_counter_get(const struct metrics_series *s)
{
    assert(s->type == METRICS_COUNTER);
    return atomic_load_explicit(&((struct metrics_series *)s)->value,
                                memory_order_relaxed);
}

uint64_t metrics_family_counter_sum(const struct metrics_family *f)
{
    struct metrics_family *mf = (struct metrics_family *)f;
    size_t n = atomic_load_explicit(&mf->count, memory_order_acquire);
    uint64_t sum = 0;

    assert(f->type == METRICS_COUNTER);
    for (size_t i = 0; i < n; i++)
        sum += metrics_counter_get(f->slots[i]);
    if (f->other != NULL)
        sum += metrics_counter_get(f->other);
    return sum;
}

void metrics_gauge_set(struct metrics_series *s, double value)
{
    assert(s->type == METRICS_GAUGE);
    atomic_store_explicit(&s->value, double_bits(value), memory_order_relaxed);
}

void metrics_gauge_add(struct metrics_series *s, double delta)
{
    assert(s->type == METRICS_GAUGE);
    atomic_add_double(&s->value, delta);
}

double metrics_gauge_get(const struct metrics_series *s)
{
    assert(s->type == METRICS_GAUGE);
    return bits_double(atomic_load_explicit(
        &((struct metrics_series *)s)->value, memory_order_relaxed));
}

void metrics_gauge_set_fn(struct metrics_series *s, metrics_gauge_fn fn,
                          void *ctx)
{
    assert(s->type == METRICS_GAUGE);
    pthread_mutex_lock(&s->family->lock);
    s->fn = fn;
    s->fn_ctx = ctx;
    pthread_mutex_unlock(&s->family->lock);
}

void metrics_histogram_observe(struct metrics_series *s, double value)
{
    const struct metrics_family *f = s->family;
    size_t i;

    assert(s->type == METRICS_HISTOGRAM);
    if (isnan(value))
        return;
    for (i = 0; i < f->bucket_count; i++)
        if (value <= f->buckets[i])
            break;
    atomic_fetch_add_explicit(&s->buckets[i], 1, memory_order_relaxed);
    atomic_add_double(&s->sum_bits, value);
}

uint64_t metrics_histogram_count(const struct metrics_series *s)
{
    uint64_t n = 0;

    assert(s->type == METRICS_HISTOGRAM);
    for (size_t i = 0; i <= s->family->bucket_count; i++)
        n += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
    return n;
}

double metrics_histogram_sum(const struct metrics_series *s)
{
    assert(s->type == METRICS_HISTOGRAM);
    return bits_double(atomic_load_explicit(
        &((struct metrics_series *)s)->sum_bits, memory_order_relaxed));
}

int metrics_add_collector(struct metrics *m, metrics_collector_fn fn, void *ctx)
{
    int r = 0;

    pthread_mutex_lock(&m->lock);
    if (m->collector_count == METRICS_COLLECTORS_MAX) {
        r = -ENOSPC;
    } else {
        m->collectors[m->collector_count].fn = fn;
        m->collectors[m->collector_count].ctx = ctx;
        m->collector_count++;
    }
    pthread_mutex_unlock(&m->lock);
    return r;
}
