/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rate - rates over sliding windows (the last 5 minutes, the last hour)
 * from periodic samples of a cumulative counter, for the status page.
 *
 * The daemon records a counter's running total now and then (every
 * second is fine: samples closer than the step only update the newest);
 * admin_rate_get() divides the growth since the oldest kept sample inside
 * the window by the time between them. Memory is fixed at creation:
 * horizon_s / step_s + 2 samples. No cost on the hot paths: the counter
 * itself is a metrics counter.
 *
 * Thread safety: every function may be called from any thread (a mutex).
 * Times are monotonic milliseconds (clock_gettime(CLOCK_MONOTONIC)).
 */
#ifndef STOWBRIDGE_ADMIN_RATE_H
#define STOWBRIDGE_ADMIN_RATE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct admin_rate;

/* A rate and the time it was measured over. */
struct admin_rate_value {
    double per_s;    /* growth per second over span_s */
    uint32_t span_s; /* 0: not enough samples yet (per_s is 0) */
};

/* Samples every @step_s (1..3600) seconds, kept for @horizon_s
 * (step_s..7 days). NULL when out of memory or out of range. */
struct admin_rate *admin_rate_new(uint32_t step_s, uint32_t horizon_s);

/* Frees it. Accepts NULL. */
void admin_rate_free(struct admin_rate *rate);

/*
 * Records that the counter stood at @total at @now_ms. Times must not go
 * back; a total below the previous one (a restart of the counter) starts
 * the history again.
 */
void admin_rate_record(struct admin_rate *rate, uint64_t now_ms,
                       uint64_t total);

/*
 * The rate over the last @window_s seconds as of the newest sample: from
 * the oldest sample no older than @window_s before @now_ms. span_s is
 * shorter than the window while less history exists.
 */
struct admin_rate_value admin_rate_get(struct admin_rate *rate, uint64_t now_ms,
                                       uint32_t window_s);

#ifdef __cplusplus
}
#endif

#endif
