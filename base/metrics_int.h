/* SPDX-License-Identifier: Apache-2.0 */
/*
 * metrics_int - the registry's data structures, shared by metrics.c
 * (registration, lookup, updates) and metrics_render.c (the text format).
 * Locking rules: see metrics.c.
 */
#ifndef STOWBRIDGE_METRICS_INT_H
#define STOWBRIDGE_METRICS_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics.h"

#define METRICS_SERIES_PER_FAMILY_MAX 4096
#define METRICS_COLLECTORS_MAX 16
#define METRICS_CACHE_LINE 64

struct metrics_series {
    /* Counter: the count. Gauge: the bits of a double. */
    _Atomic uint64_t value;
    /* Histogram: the bits of the double sum. */
    _Atomic uint64_t sum_bits;
    /* Histogram: bucket_count + 1 non-cumulative counts (last is +Inf). */
    _Atomic uint64_t *buckets;
    struct metrics_family *family;
    enum metrics_type type;
    bool other;
    /* Set once the overflow series was handed out (so it is rendered). */
    atomic_bool used;
    uint32_t hash;
    /* Callback gauge; read and written under the family mutex. */
    metrics_gauge_fn fn;
    void *fn_ctx;
    char *values[METRICS_LABELS_MAX];
};

struct metrics_family {
    char *name;
    char *help;
    enum metrics_type type;
    size_t label_count;
    char *label_names[METRICS_LABELS_MAX];
    double buckets[METRICS_BUCKETS_MAX];
    size_t bucket_count;
    size_t max_series;
    pthread_mutex_t lock;
    _Atomic size_t count;
    struct metrics_series **slots;
    struct metrics_series *other;
};

struct metrics_collector {
    metrics_collector_fn fn;
    void *ctx;
};

struct metrics {
    pthread_mutex_t lock;
    struct metrics_family **families;
    size_t family_count;
    size_t family_cap;
    struct metrics_collector collectors[METRICS_COLLECTORS_MAX];
    size_t collector_count;
};

#endif
