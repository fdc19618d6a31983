/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_plan - the uploader's planner (bridge/plan.h), table-driven: the
 * backoff's growth, cap and jitter; new and retried entries in turn, due
 * retries only, the window; one study per batch; the instance and byte
 * limits, an instance larger than the byte limit alone; fairness between
 * studies within a pass and across passes; copies of one SOP Instance UID
 * never planned together, the earliest first; held and unknown entries
 * never planned; the queue's room; bad arguments.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/plan.h"
#include "tap.h"

#define MB (UINT64_C(1) << 20)

static void test_backoff(void)
{
    static const struct {
        unsigned min_s;
        unsigned max_s;
        uint32_t attempts;
        unsigned jitter;
        unsigned want;
    } rows[] = {
        { 5, 600, 0, 1000, 5 }, /* never tried counts as one */
        { 5, 600, 1, 1000, 5 },
        { 5, 600, 2, 1000, 10 }, /* doubles per attempt */
        { 5, 600, 3, 1000, 20 },
        { 5, 600, 7, 1000, 320 },
        { 5, 600, 8, 1000, 600 },  /* capped at max_s */
        { 5, 600, 50, 1000, 600 }, /* no overflow on many attempts */
        { 5, 600, UINT32_MAX, 1000, 600 },
        { 5, 600, 1, 800, 4 },     /* -20 % */
        { 5, 600, 1, 1200, 6 },    /* +20 % */
        { 5, 600, 50, 1200, 720 }, /* jitter applies after the cap */
        { 5, 600, 1, 0, 4 },       /* jitter clamped to 800.. */
        { 5, 600, 1, 5000, 6 },    /* ..1200 */
        { 1, 1, 1, 800, 1 },       /* at least 1 s */
        { 0, 600, 3, 1000, 1 },
        { 10, 10, 9, 1000, 10 },
    };

    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        unsigned got = plan_backoff_s(rows[i].min_s, rows[i].max_s,
                                      rows[i].attempts, rows[i].jitter);
        CHECK_MSG(got == rows[i].want, "row %zu: %u, want %u", i, got,
                  rows[i].want);
    }
    /* Growth is monotonic up to the cap. */
    for (uint32_t a = 1; a < 40; a++)
        CHECK(plan_backoff_s(3, 900, a, 1000) <=
              plan_backoff_s(3, 900, a + 1, 1000));
}

/* A candidate in a table: study and SOP as short names, "" unknown. */
struct cand_row {
    const char *id;
    const char *study;
    const char *sop;
    uint64_t size;
    bool retry;
    int64_t not_before_us;
    bool held;
};

#define MAX_CANDS 16

static size_t make_cands(const struct cand_row *rows,
                         struct plan_candidate *out)
{
    size_t n = 0;

    for (; rows[n].id != NULL; n++) {
        out[n].id = rows[n].id;
        out[n].study_uid = rows[n].study[0] ? rows[n].study : NULL;
        out[n].sop_uid = rows[n].sop[0] ? rows[n].sop : NULL;
        out[n].size = rows[n].size;
        out[n].retry = rows[n].retry;
        out[n].not_before_us = rows[n].not_before_us;
        out[n].held = rows[n].held;
    }
    return n;
}

/* The selection as "id id id". */
static void show_order(const struct plan_candidate *cands, const size_t *order,
                       size_t n, char *out, size_t len)
{
    size_t used = 0;

    out[0] = '\0';
    for (size_t i = 0; i < n && used < len; i++)
        used += (size_t)snprintf(out + used, len - used, "%s%s", i ? " " : "",
                                 cands[order[i]].id);
}

static void test_select(void)
{
    static const struct {
        const char *name;
        struct cand_row cands[MAX_CANDS];
        size_t window;
        const char *want;
    } rows[] = {
        { "new and retried in turn",
          { { "n1", "S", "1", 1, false, 0, false },
            { "n2", "S", "2", 1, false, 0, false },
            { "n3", "S", "3", 1, false, 0, false },
            { "r1", "S", "4", 1, true, 100, false },
            { "r2", "S", "5", 1, true, 100, false },
            { NULL, NULL, NULL, 0, false, 0, false } },
          100,
          "n1 r1 n2 r2 n3" },
        { "a retry not due yet is left out",
          { { "n1", "S", "1", 1, false, 0, false },
            { "r1", "S", "4", 1, true, 5000, false },
            { "r2", "S", "5", 1, true, 1000, false },
            { NULL, NULL, NULL, 0, false, 0, false } },
          100,
          "n1 r2" },
        { "only retries",
          { { "r1", "S", "4", 1, true, 0, false },
            { "r2", "S", "5", 1, true, 1000, false },
            { NULL, NULL, NULL, 0, false, 0, false } },
          100,
          "r1 r2" },
        { "the window",
          { { "n1", "S", "1", 1, false, 0, false },
            { "n2", "S", "2", 1, false, 0, false },
            { "r1", "S", "4", 1, true, 0, false },
            { "r2", "S", "5", 1, true, 0, false },
            { NULL, NULL, NULL, 0, false, 0, false } },
          3,
          "n1 r1 n2" },
        { "a backlog of retries never starves new images",
          { { "r1", "S", "1", 1, true, 0, false },
            { "r2", "S", "2", 1, true, 0, false },
            { "r3", "S", "3", 1, true, 0, false },
            { "r4", "S", "4", 1, true, 0, false },
            { "n1", "S", "5", 1, false, 0, false },
            { NULL, NULL, NULL, 0, false, 0, false } },
          2,
          "n1 r1" },
        { "nothing due",
          { { "r1", "S", "1", 1, true, 1001, false },
            { NULL, NULL, NULL, 0, false, 0, false } },
          100,
          "" },
    };

    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct plan_candidate cands[MAX_CANDS];
        size_t n = make_cands(rows[i].cands, cands);
        size_t *order = NULL;
        size_t count = 99;
        char got[256];
        int r = plan_select(cands, n, 1000, rows[i].window, &order, &count);

        CHECK_MSG(r == 0, "%s: %d", rows[i].name, r);
        show_order(cands, order, count, got, sizeof(got));
        CHECK_MSG(strcmp(got, rows[i].want) == 0, "%s: '%s', want '%s'",
                  rows[i].name, got, rows[i].want);
        CHECK(count > 0 || order == NULL);
        free(order);
    }
}

/* The plan as "a b|c" (batches split by '|'), each batch checked for
 * its byte count and study. */
static void show_plan(const struct plan_candidate *cands,
                      const struct plan *plan, char *out, size_t len)
{
    size_t used = 0;

    out[0] = '\0';
    for (size_t b = 0; b < plan->batch_count; b++) {
        const struct plan_batch *pb = &plan->batches[b];
        const char *study = cands[pb->study_candidate].study_uid;
        uint64_t bytes = 0;

        for (size_t k = 0; k < pb->count && used < len; k++) {
            const struct plan_candidate *c =
                &cands[plan->members[pb->first + k]];
            bytes += c->size;
            CHECK_MSG(strcmp(c->study_uid, study) == 0,
                      "%s in a batch of study %s", c->id, study);
            used += (size_t)snprintf(out + used, len - used, "%s%s",
                                     b > 0 && k == 0 ? "|"
                                     : k > 0         ? " "
                                                     : "",
                                     c->id);
        }
        CHECK(bytes == pb->bytes);
    }
}

#define END                                  \
    {                                        \
        NULL, NULL, NULL, 0, false, 0, false \
    }

static void test_batches(void)
{
    static const struct {
        const char *name;
        struct cand_row cands[MAX_CANDS];
        unsigned max_instances;
        uint64_t max_bytes;
        size_t max_batches;
        const char *after_study;
        const char *want;
    } rows[] = {
        { "one study per batch, each in arrival order",
          { { "a1", "A", "1", MB, false, 0, false },
            { "b1", "B", "2", MB, false, 0, false },
            { "a2", "A", "3", MB, false, 0, false },
            { "b2", "B", "4", MB, false, 0, false },
            { "a3", "A", "5", MB, false, 0, false },
            END },
          50,
          100 * MB,
          4,
          NULL,
          "a1 a2 a3|b1 b2" },
        { "batch_max_instances",
          { { "a1", "A", "1", MB, false, 0, false },
            { "a2", "A", "2", MB, false, 0, false },
            { "a3", "A", "3", MB, false, 0, false },
            { "a4", "A", "4", MB, false, 0, false },
            { "a5", "A", "5", MB, false, 0, false },
            END },
          2,
          100 * MB,
          4,
          NULL,
          "a1 a2|a3 a4|a5" },
        { "batch_max_bytes: an overflowing one skipped, a smaller later "
          "one still fits",
          { { "a1", "A", "1", 60 * MB, false, 0, false },
            { "a2", "A", "2", 50 * MB, false, 0, false },
            { "a3", "A", "3", 40 * MB, false, 0, false },
            { "a4", "A", "4", 10 * MB, false, 0, false },
            END },
          50,
          100 * MB,
          4,
          NULL,
          "a1 a3|a2 a4" },
        { "exactly batch_max_bytes fits",
          { { "a1", "A", "1", 60 * MB, false, 0, false },
            { "a2", "A", "2", 40 * MB, false, 0, false },
            { "a3", "A", "3", 1, false, 0, false },
            END },
          50,
          100 * MB,
          4,
          NULL,
          "a1 a2|a3" },
        { "an instance larger than batch_max_bytes goes alone",
          { { "a1", "A", "1", 10 * MB, false, 0, false },
            { "a2", "A", "2", 250 * MB, false, 0, false },
            { "a3", "A", "3", 10 * MB, false, 0, false },
            END },
          50,
          100 * MB,
          4,
          NULL,
          "a1 a3|a2" },
        { "an oversized first instance, alone, others after it",
          { { "a1", "A", "1", 250 * MB, false, 0, false },
            { "a2", "A", "2", 10 * MB, false, 0, false },
            { "a3", "A", "3", 10 * MB, false, 0, false },
            END },
          50,
          100 * MB,
          4,
          NULL,
          "a1|a2 a3" },
        { "fair between two studies: the small one is not held back",
          { { "a1", "A", "1", MB, false, 0, false },
            { "a2", "A", "2", MB, false, 0, false },
            { "a3", "A", "3", MB, false, 0, false },
            { "a4", "A", "4", MB, false, 0, false },
            { "a5", "A", "5", MB, false, 0, false },
            { "a6", "A", "6", MB, false, 0, false },
            { "b1", "B", "7", MB, false, 0, false },
            END },
          2,
          100 * MB,
          2,
          NULL,
          "a1 a2|b1" },
        { "round-robin: every study's first batch before any second one",
          { { "a1", "A", "1", MB, false, 0, false },
            { "a2", "A", "2", MB, false, 0, false },
            { "a3", "A", "3", MB, false, 0, false },
            { "b1", "B", "4", MB, false, 0, false },
            { "b2", "B", "5", MB, false, 0, false },
            { "b3", "B", "6", MB, false, 0, false },
            END },
          1,
          100 * MB,
          5,
          NULL,
          "a1|b1|a2|b2|a3" },
        { "across passes: the rotation goes on after the last study",
          { { "a1", "A", "1", MB, false, 0, false },
            { "a2", "A", "2", MB, false, 0, false },
            { "b1", "B", "3", MB, false, 0, false },
            { "c1", "C", "4", MB, false, 0, false },
            END },
          50,
          100 * MB,
          1,
          "A",
          "b1" },
        { "across passes: after the last study in the order, the first",
          { { "a1", "A", "1", MB, false, 0, false },
            { "b1", "B", "3", MB, false, 0, false },
            { "c1", "C", "4", MB, false, 0, false },
            END },
          50,
          100 * MB,
          1,
          "C",
          "a1" },
        { "across passes: after a study no longer waiting, the next UID",
          { { "a1", "A", "1", MB, false, 0, false },
            { "c1", "C", "3", MB, false, 0, false },
            END },
          50,
          100 * MB,
          1,
          "B",
          "c1" },
        { "across passes: after the last UID, around to the first",
          { { "a1", "A", "1", MB, false, 0, false },
            { "b1", "B", "3", MB, false, 0, false },
            END },
          50,
          100 * MB,
          1,
          "Z",
          "a1" },
        { "copies of one SOP Instance UID: only the earliest",
          { { "x1", "A", "S", MB, false, 0, false },
            { "x2", "A", "S", MB, false, 0, false },
            { "y1", "A", "T", MB, false, 0, false },
            { "x3", "A", "S", MB, true, 0, false },
            END },
          50,
          100 * MB,
          4,
          NULL,
          "x1 y1" },
        { "copies of one SOP Instance UID in two studies: still one",
          { { "x1", "A", "S", MB, false, 0, false },
            { "x2", "B", "S", MB, false, 0, false },
            END },
          50,
          100 * MB,
          4,
          NULL,
          "x1" },
        { "held by the copy rules, or not indexed: never planned",
          { { "x1", "A", "S", MB, false, 0, true },
            { "x2", "A", "S", MB, false, 0, false },
            { "u1", "", "", MB, false, 0, false },
            { "u2", "A", "", MB, false, 0, false },
            { "h1", "B", "H", MB, false, 0, true },
            END },
          50,
          100 * MB,
          4,
          NULL,
          "x2" },
        { "no room in the queue",
          { { "a1", "A", "1", MB, false, 0, false }, END },
          50,
          100 * MB,
          0,
          NULL,
          "" },
        { "everything held",
          { { "a1", "A", "1", MB, false, 0, true }, END },
          50,
          100 * MB,
          4,
          NULL,
          "" },
    };

    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct plan_candidate cands[MAX_CANDS];
        size_t order[MAX_CANDS];
        size_t n = make_cands(rows[i].cands, cands);
        struct plan_limits limits = {
            .batch_max_instances = rows[i].max_instances,
            .batch_max_bytes = rows[i].max_bytes,
            .max_batches = rows[i].max_batches,
        };
        struct plan plan;
        char got[256];
        int r;

        for (size_t k = 0; k < n; k++)
            order[k] = k;
        r = plan_batches(cands, order, n, &limits, rows[i].after_study, &plan);
        CHECK_MSG(r == 0, "%s: %d", rows[i].name, r);
        show_plan(cands, &plan, got, sizeof(got));
        CHECK_MSG(strcmp(got, rows[i].want) == 0, "%s: '%s', want '%s'",
                  rows[i].name, got, rows[i].want);
        CHECK(plan.batch_count <= rows[i].max_batches);
        plan_free(&plan);
        CHECK(plan.batches == NULL && plan.members == NULL);
    }
}

/* Three studies, one batch per pass: each gets its turn, a late study
 * too (the scheduler's passes, with what they send leaving). */
static void test_rotation_over_passes(void)
{
    static const struct cand_row rows[] = {
        { "a1", "A", "1", MB, false, 0, false },
        { "a2", "A", "2", MB, false, 0, false },
        { "a3", "A", "3", MB, false, 0, false },
        { "b1", "B", "4", MB, false, 0, false },
        { "c1", "C", "5", MB, false, 0, false },
        END,
    };
    /* The oldest first, then A, B, C in turn though B is gone. */
    static const char *const want[] = { "a1", "b1", "c1", "a2", "a3" };
    struct plan_candidate cands[MAX_CANDS];
    size_t n = make_cands(rows, cands);
    struct plan_limits limits = { 1, 100 * MB, 1 };
    char last[8] = "";

    for (size_t pass = 0; pass < sizeof(want) / sizeof(want[0]); pass++) {
        size_t *order = NULL;
        size_t count = 0;
        struct plan plan;
        char got[64];

        CHECK(plan_select(cands, n, 0, 100, &order, &count) == 0);
        CHECK(plan_batches(cands, order, count, &limits, last, &plan) == 0);
        show_plan(cands, &plan, got, sizeof(got));
        CHECK_MSG(strcmp(got, want[pass]) == 0, "pass %zu: '%s', want '%s'",
                  pass, got, want[pass]);
        /* What the scheduler does: sent ones leave the candidates. */
        if (plan.batch_count == 1) {
            size_t c = plan.members[0];
            snprintf(last, sizeof(last), "%s", cands[c].study_uid);
            memmove(&cands[c], &cands[c + 1], (n - c - 1) * sizeof(*cands));
            n--;
        }
        plan_free(&plan);
        free(order);
    }
    CHECK(n == 0);
}

static void test_bad_arguments(void)
{
    struct plan_candidate c = { "a1", "A", "1", 1, false, 0, false };
    struct plan_limits limits = { 1, 100, 1 };
    struct plan plan;
    size_t order = 0;
    size_t *sel = NULL;
    size_t count = 0;

    CHECK(plan_select(NULL, 1, 0, 10, &sel, &count) == -EINVAL);
    CHECK(plan_select(&c, 1, 0, 10, NULL, &count) == -EINVAL);
    CHECK(plan_select(&c, 1, 0, 0, &sel, &count) == 0 && count == 0 &&
          sel == NULL);
    CHECK(plan_select(NULL, 0, 0, 10, &sel, &count) == 0 && count == 0);
    CHECK(plan_batches(&c, &order, 1, NULL, NULL, &plan) == -EINVAL);
    CHECK(plan_batches(&c, NULL, 1, &limits, NULL, &plan) == -EINVAL);
    CHECK(plan_batches(&c, &order, 1, &limits, NULL, NULL) == -EINVAL);
    limits.batch_max_instances = 0;
    CHECK(plan_batches(&c, &order, 1, &limits, NULL, &plan) == -EINVAL);
    limits.batch_max_instances = 1;
    CHECK(plan_batches(NULL, NULL, 0, &limits, NULL, &plan) == 0 &&
          plan.batch_count == 0);
    plan_free(&plan);
    plan_free(NULL);
}

int main(void)
{
    test_backoff();
    test_select();
    test_batches();
    test_rotation_over_passes();
    test_bad_arguments();
    return tap_done();
}
