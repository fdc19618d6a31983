/* SPDX-License-Identifier: Apache-2.0 */
/*
 * outcome - the uploader's outcome table: what a STOW-RS answer means
 * for each instance of the batch, as one of three verdicts:
 *   delivered    -> removed from the spool (with the Warning Reason, if
 *                   any worth logging);
 *   retry        -> deferred/, for the backoff of its attempts
 *                   (plan_backoff_s()), at least a floor (Retry-After), or
 *                   for a fixed time (a configuration problem: slowly);
 *   dead letter  -> failed/, with the reason kept in meta/.
 * The rows (README "Sending"):
 *   200/202/409, per instance: stored (or Failure Reason B00E, already
 *   there) -> delivered; Failure Reason B00F, A7xx, 0110, or not listed ->
 *   retry; any other Failure Reason -> dead letter (stow_failure_outcome());
 *   408, 429, 5xx...: retry, at least Retry-After capped to
 *   retry.max_pause_s; 429 and 503 with Retry-After also pause every
 *   upload for that long;
 *   any retry of an entry older than retry.max_age_h -> dead letter
 *   "expired", naming the last error: we stop trying, never silently.
 *
 * Pure: no I/O, no clock (times are arguments), no logging.
 * Thread safety: reentrant.
 */
#ifndef STOWBRIDGE_OUTCOME_H
#define STOWBRIDGE_OUTCOME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct stow_instance_result;

/* Room for a reason (meta/ keeps its first 255 bytes, the log all). */
#define OUTCOME_WHY_MAX 768
/* Room for a pause's reason (struct spool_pause's). */
#define OUTCOME_PAUSE_REASON_MAX 160
/* Retry-After values the STOW client reads are at most this (stow.c):
 * one that large may have been cut, so it is shown as "at least". */
#define OUTCOME_RETRY_AFTER_READ_MAX 86400

enum outcome_verdict {
    OUTCOME_DELIVERED,
    OUTCOME_RETRY,
    OUTCOME_DEAD_LETTER,
};

struct outcome {
    enum outcome_verdict verdict;
    long http_status; /* of the answer; 0: none */
    /* DELIVERED: a Warning Reason worth logging (B00E is not); RETRY,
     * DEAD_LETTER: the Failure Reason for meta/. 0: none. */
    uint16_t reason;
    /* RETRY: wait exactly delay_s; when 0, the backoff for the attempts
     * so far, but at least floor_s. */
    unsigned delay_s;
    unsigned floor_s;
    char why[OUTCOME_WHY_MAX]; /* RETRY, DEAD_LETTER: for meta/ and logs */
};

/* What a whole answer asks of every upload. */
struct outcome_pause {
    unsigned seconds; /* 0: no pause */
    /* What was asked: "N s", or "at least N s" for a value that may
     * have been cut; "" when nothing was. */
    char asked[64];
    char reason[OUTCOME_PAUSE_REASON_MAX]; /* for the spool's pause file */
};

/* The row of one instance @res of a 200, 202 or 409 answer. */
void outcome_for_instance(long http_status,
                          const struct stow_instance_result *res,
                          struct outcome *ret);

/*
 * The row of a 408, 429, 5xx or other "later" answer with @retry_after_s
 * (0: none), for each instance, and the pause it asks of every upload
 * (429 and 503 with Retry-After); Retry-After is capped to @max_pause_s
 * (>= 1).
 */
void outcome_for_retry_later(long http_status, int64_t retry_after_s,
                             unsigned max_pause_s, struct outcome *ret,
                             struct outcome_pause *ret_pause);

/* A retry for @delay_s (0: the backoff), with @why and @reason. */
void outcome_retry(long http_status, uint16_t reason, unsigned delay_s,
                   const char *why, struct outcome *ret);

/*
 * Turns a retry of an entry that arrived at @arrival_us into a dead
 * letter when it is older than @max_age_h at @now_us (both wall clock):
 * "expired: not delivered within N h; last error: <why>". Returns true
 * when it did.
 */
bool outcome_expire(struct outcome *o, int64_t arrival_us, int64_t now_us,
                    unsigned max_age_h);

/* The wait of retry @o given the backoff for its attempts. */
unsigned outcome_retry_delay_s(const struct outcome *o, unsigned backoff_s);

#endif
