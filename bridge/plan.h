/* SPDX-License-Identifier: Apache-2.0 */
/*
 * plan - the uploader's planner: which spool entries one scheduling pass
 * sends, in which batches, in which order; and the backoff of a retry.
 *
 * Pure: no I/O, no clock, no randomness, no logging; the scheduler
 * (uploader.c) lists the spool, asks the copies index, and moves what the
 * plan says. A pass is planned in two steps:
 *   1. plan_select(): the candidates of this pass, at most @window, new
 *      (incoming/) and retried (deferred/, once due) entries taken in
 *      turn so that a backlog of retries never starves new images, each
 *      kind in the order given (spool IDs sort in arrival order);
 *   2. the scheduler judges those by the copy rules (sopindex.h) and marks
 *      the ones to hold; plan_batches() then groups the rest:
 *        - one study per batch (STOW-RS POST /studies/{StudyInstanceUID});
 *        - at most batch_max_instances and batch_max_bytes per batch; an
 *          instance larger than batch_max_bytes goes alone;
 *        - a batch starts with its study's first candidate and is filled
 *          with that study's later ones in order (one that would overflow
 *          the bytes is skipped, a later smaller one may still fit);
 *        - fair between studies: batches go round-robin over the studies
 *          (each study's first batch before any study's second), so one
 *          large study cannot hold back a small one; a pass that follows
 *          none (no @after_study) starts with the oldest study (the one
 *          of the first candidate), else the rotation goes on in Study
 *          Instance UID order after the previous pass's last study, so
 *          every waiting study has its turn within as many passes as
 *          there are studies;
 *        - copies of one SOP Instance UID (issue 9): at most the earliest
 *          not-held candidate of a SOP Instance UID is planned, never two
 *          in one pass;
 *        - at most max_batches batches (the room in the workers' queue).
 *
 * Thread safety: reentrant. Ownership: the plan borrows nothing; it holds
 * indexes into the caller's candidate array. Errors: -EINVAL for a bad
 * argument, -ENOMEM.
 */
#ifndef STOWBRIDGE_PLAN_H
#define STOWBRIDGE_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One spool entry the scheduler could send. */
struct plan_candidate {
    const char *id;        /* spool entry ID (borrowed) */
    const char *study_uid; /* NULL: unknown, never planned */
    const char *sop_uid;   /* NULL: unknown, never planned */
    uint64_t size;         /* bytes */
    bool retry;            /* listed in deferred/ (else incoming/) */
    int64_t not_before_us; /* retry: due from then (wall clock) */
    bool held;             /* kept back by the copy rules */
};

struct plan_limits {
    unsigned batch_max_instances; /* >= 1 */
    uint64_t batch_max_bytes;
    size_t max_batches; /* room in the queue; 0 plans nothing */
};

/* One batch: entries members[first .. first + count - 1] of the plan. */
struct plan_batch {
    size_t first;
    size_t count;
    uint64_t bytes;
    size_t study_candidate; /* index of a candidate of its study */
};

struct plan {
    size_t *members; /* candidate indexes, batch after batch */
    size_t member_count;
    struct plan_batch *batches;
    size_t batch_count;
};

/*
 * Step 1: the indexes of the candidates of this pass into *@ret_order
 * (caller frees; NULL when none) and their number into *@ret_count: new
 * and due retried candidates in turn (a retry is due when its
 * not_before_us <= @now_us), at most @window.
 */
int plan_select(const struct plan_candidate *cands, size_t count,
                int64_t now_us, size_t window, size_t **ret_order,
                size_t *ret_count);

/*
 * Step 2: the batches of the @order_count candidates @order (from
 * plan_select(), with held marked) into *@ret_plan (free with
 * plan_free()). @after_study is the study of the previous pass's last
 * batch (NULL or "": start with the oldest study, then by first
 * candidate; else in UID order after it, wrapping around).
 */
int plan_batches(const struct plan_candidate *cands, const size_t *order,
                 size_t order_count, const struct plan_limits *limits,
                 const char *after_study, struct plan *ret_plan);

/* Frees what plan_batches() put in @plan and empties it. Accepts an
 * emptied plan. */
void plan_free(struct plan *plan);

/*
 * The wait before attempt @attempts + 1 of an entry that failed
 * @attempts times (>= 1; 0 counts as 1): retry.min_s doubled per attempt
 * up to retry.max_s, times @jitter_permille/1000 (800..1200, clamped:
 * +-20 % so that entries that failed together do not come back
 * together), and at least 1 s.
 */
unsigned plan_backoff_s(unsigned min_s, unsigned max_s, uint32_t attempts,
                        unsigned jitter_permille);

#endif
