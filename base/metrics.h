/* SPDX-License-Identifier: Apache-2.0 */
/*
 * metrics - a registry of counters, gauges and histograms, rendered in
 * the Prometheus text exposition format 0.0.4, for every layer (scp/,
 * web/, bridge/, admin/). Depends on libc and pthreads only.
 *
 * Model. A registry holds families. A family has a name, a help text, a
 * type and a fixed list of label names; each combination of label values
 * is one series, the handle the hot paths update. Label sets are
 * BOUNDED: a family declares the most series it may hold (max_series);
 * once that many exist, any new combination goes to the family's
 * overflow series, whose every label value is "other" (so calling AE
 * titles are bounded to the configured callers plus "other": declare the
 * callers' series first with max_series = their number). Label values
 * that are empty, longer than METRICS_LABEL_VALUE_MAX bytes, not UTF-8
 * or holding control characters other than newline go to "other" too.
 * A series, once created, lives as long as the registry.
 *
 * Hot paths. metrics_series() finds a series without a lock (an atomic
 * load and a scan of at most max_series entries, comparing a hash first);
 * only the first use of a new combination takes the family's mutex.
 * Callers may keep the returned pointer (per association, per worker) and
 * skip the lookup. Counter increments are one relaxed atomic add; gauge
 * and histogram sum updates are an atomic compare-and-swap loop; a
 * histogram observation also adds to one bucket. No update takes a lock
 * or allocates. Each series sits on its own cache line.
 *
 * Rendering. metrics_render() writes every family in name order (HELP,
 * TYPE, then its series ordered by label values), histogram buckets
 * cumulative with le="+Inf" equal to _count, doubles as the shortest text
 * that reads back exactly, NaN, +Inf and -Inf as Prometheus spells them,
 * label values escaped (\\, \", \n), the help text escaped (\\, \n), every
 * line ending in "\n". It takes the registry's mutex (registration waits,
 * updates never do) and calls the callback gauges and collectors.
 *
 * Thread safety: every function may be called from any thread at any
 * time once metrics_new() returned, except metrics_free(), which must be
 * the last call. Callbacks (metrics_gauge_set_fn, metrics_add_collector)
 * run on the rendering thread; they must be quick and must not register
 * families, set callbacks or render (updates are fine).
 *
 * Ownership: the registry owns families and series; pointers to them are
 * valid until metrics_free(). Strings passed in are copied.
 *
 * Errors: registration returns 0 or a negative errno (-EINVAL for a bad
 * name, help, label or bucket list, -EEXIST for a name taken, -ENOMEM)
 * with the reason in @err. Updates cannot fail. Using an update of the
 * wrong type on a series (metrics_counter_add() on a gauge) is a
 * programmer error caught by assert().
 */
#ifndef STOWBRIDGE_METRICS_H
#define STOWBRIDGE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct metrics;
struct metrics_family;
struct metrics_series;

enum metrics_type {
    METRICS_COUNTER = 0,
    METRICS_GAUGE,
    METRICS_HISTOGRAM,
};

/* Limits: label names per family, bytes per label value, buckets. */
#define METRICS_LABELS_MAX 4
#define METRICS_LABEL_VALUE_MAX 128
#define METRICS_BUCKETS_MAX 32
/* The label value of the overflow series. */
#define METRICS_OTHER "other"
/* The Content-Type of metrics_render()'s output. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct metrics_family_params {
    /*
     * [a-zA-Z_][a-zA-Z0-9_]* (colons are for recording rules); a counter's
     * name ends in "_total"; a histogram's name + "_bucket", "_sum",
     * "_count" must not be taken either.
     */
    const char *name;
    const char *help; /* non-empty, one line */
    enum metrics_type type;
    /* 0..METRICS_LABELS_MAX names, [a-zA-Z_][a-zA-Z0-9_]*, no "__"
     * prefix, no duplicates, "le" not allowed for histograms. */
    const char *const *label_names;
    size_t label_count;
    /* Series besides "other" (1..4096); ignored without labels. */
    size_t max_series;
    /* Histograms: strictly increasing finite upper bounds (1..32); the
     * +Inf bucket is implicit. */
    const double *buckets;
    size_t bucket_count;
};

/* A new empty registry, or NULL when out of memory. */
struct metrics *metrics_new(void);

/* Frees the registry and all its families. Accepts NULL. */
void metrics_free(struct metrics *m);

/*
 * Registers a family. On success *@ret_family is the new family, owned by
 * the registry. Errors: -EINVAL (reason in @err), -EEXIST (the name, or
 * one a histogram would use, is taken), -ENOMEM.
 */
int metrics_family_add(struct metrics *m,
                       const struct metrics_family_params *params,
                       struct metrics_family **ret_family, char *err,
                       size_t err_len);

/* The family called @name, or NULL. */
struct metrics_family *metrics_family_find(struct metrics *m, const char *name);

/*
 * The series of @family for the label values @values (label_count
 * strings; ignored for a family without labels, "other" when NULL for
 * one with labels). Never NULL: a combination
 * beyond max_series, an invalid value, or running out of memory gives the
 * "other" series. Lock-free when the series exists.
 */
struct metrics_series *metrics_series(struct metrics_family *family,
                                      const char *const *values);

/* metrics_series() with the label values listed inline:
 * METRICS_SERIES(fam, "CT01", "A700"). C only (a compound literal); C++
 * passes an array. */
#define METRICS_SERIES(family, ...) \
    metrics_series((family), (const char *const[]){ __VA_ARGS__ })

/* True if @series is its family's overflow series ("other"). */
bool metrics_series_is_other(const struct metrics_series *series);

/* Counters: add @n (the value only goes up). */
void metrics_counter_add(struct metrics_series *series, uint64_t n);
static inline void metrics_counter_inc(struct metrics_series *series)
{
    metrics_counter_add(series, 1);
}

/* A counter's current value. */
uint64_t metrics_counter_get(const struct metrics_series *series);

/* The sum of every series of counter family @family (e.g. all callers). */
uint64_t metrics_family_counter_sum(const struct metrics_family *family);

/* Gauges: set, add (negative to subtract), read. */
void metrics_gauge_set(struct metrics_series *series, double value);
void metrics_gauge_add(struct metrics_series *series, double delta);
double metrics_gauge_get(const struct metrics_series *series);

/* Typedef for a callback gauge's function: returns the value now. */
typedef double (*metrics_gauge_fn)(void *ctx);

/*
 * Makes @series a callback gauge: at every render its value is @fn(@ctx)
 * (e.g. spool free bytes). NULL @fn returns it to a plain gauge.
 */
void metrics_gauge_set_fn(struct metrics_series *series, metrics_gauge_fn fn,
                          void *ctx);

/*
 * Histograms: counts @value in the first bucket whose upper bound is >=
 * it (or +Inf) and adds it to the sum. NaN is ignored.
 */
void metrics_histogram_observe(struct metrics_series *series, double value);

/* A histogram's observation count and sum (for tests and summaries). */
uint64_t metrics_histogram_count(const struct metrics_series *series);
double metrics_histogram_sum(const struct metrics_series *series);

/* Typedef for a collector: called at the start of every render. */
typedef void (*metrics_collector_fn)(void *ctx);

/*
 * Registers @fn(@ctx) to run at the start of every metrics_render(),
 * before any family is read, in registration order: the place to set a
 * batch of gauges from one snapshot (spool entries by state). Returns 0,
 * -ENOMEM or -ENOSPC (more than 16 collectors).
 */
int metrics_add_collector(struct metrics *m, metrics_collector_fn fn,
                          void *ctx);

/*
 * Renders the registry in the text format 0.0.4. On success *@ret_text
 * is a NUL-terminated string the caller frees with free(), and
 * *@ret_len its length. Errors: -E2BIG (the text would exceed
 * @max_len bytes), -ENOMEM.
 */
int metrics_render(struct metrics *m, size_t max_len, char **ret_text,
                   size_t *ret_len);

/*
 * Writes @value as the exposition format spells a float: "NaN", "+Inf",
 * "-Inf", or the shortest decimal that reads back as @value (at most 17
 * significant digits). Returns the length written (always < @len when
 * @len >= 32).
 */
size_t metrics_format_double(double value, char *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif
