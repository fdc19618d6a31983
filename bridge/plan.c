/* SPDX-License-Identifier: Apache-2.0 */
/*
 * plan - see plan.h.
 */
#include "plan.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A candidate of the pass as plan_batches() sorts them. */
struct plan_slot {
    size_t cand; /* index into the candidates */
    size_t pos;  /* position in the pass's order */
    bool taken;
};

/* The slots of one study, and the batches made of them. */
struct plan_study {
    size_t first; /* its first slot (in sort order) */
    size_t count;
    size_t batch_first; /* its batches in the work array */
    size_t batch_count;
};

int plan_select(const struct plan_candidate *cands, size_t count,
                int64_t now_us, size_t window, size_t **ret_order,
                size_t *ret_count)
{
    size_t *order;
    size_t n = 0;
    size_t next_new = 0;
    size_t next_retry = 0;

    if ((cands == NULL && count > 0) || ret_order == NULL || ret_count == NULL)
        return -EINVAL;
    *ret_order = NULL;
    *ret_count = 0;
    if (count == 0 || window == 0)
        return 0;
    order = calloc(count < window ? count : window, sizeof(*order));
    if (order == NULL)
        return -ENOMEM;
    while (n < window && (next_new < count || next_retry < count)) {
        /* One new entry, then one due retry. */
        while (next_new < count && cands[next_new].retry)
            next_new++;
        if (next_new < count)
            order[n++] = next_new++;
        while (next_retry < count && (!cands[next_retry].retry ||
                                      cands[next_retry].not_before_us > now_us))
            next_retry++;
        if (next_retry < count && n < window)
            order[n++] = next_retry++;
    }
    if (n == 0) {
        free(order);
        return 0;
    }
    *ret_order = order;
    *ret_count = n;
    return 0;
}

/* A slot under sorting: by @uid, then by position in the pass. */
struct plan_key {
    const char *uid;
    size_t pos;
    size_t slot;
};

static int plan_key_cmp(const void *a, const void *b)
{
    const struct plan_key *x = a;
    const struct plan_key *y = b;
    int c = strcmp(x->uid, y->uid);

    if (c != 0)
        return c;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static bool plan_usable(const struct plan_candidate *c)
{
    return !c->held && c->study_uid != NULL && c->sop_uid != NULL &&
           c->id != NULL;
}

/*
 * The slots worth planning, sorted by study then position: not held,
 * UIDs known, and the first of their SOP Instance UID in this pass.
 */
static int plan_slots(const struct plan_candidate *cands, const size_t *order,
                      size_t order_count, struct plan_slot **ret_slots,
                      size_t *ret_count)
{
    struct plan_key *keys = calloc(order_count, sizeof(*keys));
    struct plan_slot *slots = calloc(order_count, sizeof(*slots));
    size_t n = 0;
    size_t kept = 0;

    if (keys == NULL || slots == NULL) {
        free(keys);
        free(slots);
        return -ENOMEM;
    }
    for (size_t i = 0; i < order_count; i++)
        if (plan_usable(&cands[order[i]])) {
            keys[n].uid = cands[order[i]].sop_uid;
            keys[n].pos = i;
            keys[n].slot = order[i];
            n++;
        }
    /* By SOP Instance UID: only the first of each line stays. */
    qsort(keys, n, sizeof(*keys), plan_key_cmp);
    for (size_t i = 0; i < n; i++)
        if (i == 0 || strcmp(keys[i].uid, keys[i - 1].uid) != 0)
            keys[kept++] = keys[i];
    /* Then by study, each study's slots in the pass's order. */
    for (size_t i = 0; i < kept; i++)
        keys[i].uid = cands[keys[i].slot].study_uid;
    qsort(keys, kept, sizeof(*keys), plan_key_cmp);
    for (size_t i = 0; i < kept; i++) {
        slots[i].cand = keys[i].slot;
        slots[i].pos = keys[i].pos;
        slots[i].taken = false;
    }
    free(keys);
    *ret_slots = slots;
    *ret_count = kept;
    return 0;
}

/* A study under sorting: by the position of its first slot. */
struct plan_study_ref {
    struct plan_study study;
    size_t first_pos;
};

static int plan_study_cmp(const void *a, const void *b)
{
    const struct plan_study_ref *x = a;
    const struct plan_study_ref *y = b;

    return x->first_pos < y->first_pos ? -1 : x->first_pos > y->first_pos;
}

/*
 * Makes the batches of one study's slots, at most @max of them, into
 * @work (room for @max more), greedily: each batch starts at the first
 * slot not taken and takes later ones in order while they fit.
 */
static size_t plan_study_batches(const struct plan_candidate *cands,
                                 struct plan_slot *slots,
                                 const struct plan_study *study,
                                 const struct plan_limits *limits, size_t max,
                                 struct plan_batch *work, size_t *members,
                                 size_t *member_count)
{
    size_t made = 0;
    size_t start = study->first;
    size_t end = study->first + study->count;

    while (made < max) {
        struct plan_batch *b = &work[made];

        while (start < end && slots[start].taken)
            start++;
        if (start == end)
            break;
        b->first = *member_count;
        b->count = 0;
        b->bytes = 0;
        b->study_candidate = slots[start].cand;
        for (size_t k = start;
             k < end && b->count < limits->batch_max_instances; k++) {
            uint64_t size = cands[slots[k].cand].size;

            if (slots[k].taken)
                continue;
            if (b->count > 0 && b->bytes + size > limits->batch_max_bytes)
                continue;
            slots[k].taken = true;
            members[(*member_count)++] = slots[k].cand;
            b->count++;
            b->bytes += size;
        }
        made++;
    }
    return made;
}

/* What plan_batches() builds before it hands out the plan. */
struct plan_work {
    struct plan_slot *slots; /* by study, then position */
    size_t slot_count;
    struct plan_study_ref *studies;
    size_t study_count;
    struct plan_batch *batches; /* each study's, study after study */
    size_t batch_count;
    size_t *members; /* of those batches */
    size_t member_count;
};

static void plan_work_free(struct plan_work *w)
{
    free(w->slots);
    free(w->studies);
    free(w->batches);
    free(w->members);
}

/*
 * The studies of the slots, in the order their turns go round: a first
 * pass (no @after_study) by their first candidate, oldest first; a later
 * one in UID order (the slots are sorted by study), starting after
 * @after_study and wrapping, so each waiting study has its turn even
 * when the previous one is gone. Returns the index of the first turn.
 */
static size_t plan_work_studies(struct plan_work *w,
                                const struct plan_candidate *cands,
                                const char *after_study)
{
    for (size_t i = 0; i < w->slot_count; i++) {
        if (i == 0 || strcmp(cands[w->slots[i].cand].study_uid,
                             cands[w->slots[i - 1].cand].study_uid) != 0) {
            w->studies[w->study_count].study.first = i;
            w->studies[w->study_count].first_pos = w->slots[i].pos;
            w->study_count++;
        }
        w->studies[w->study_count - 1].study.count++;
    }
    if (after_study == NULL || after_study[0] == '\0') {
        qsort(w->studies, w->study_count, sizeof(*w->studies), plan_study_cmp);
        return 0;
    }
    for (size_t s = 0; s < w->study_count; s++)
        if (strcmp(cands[w->slots[w->studies[s].study.first].cand].study_uid,
                   after_study) > 0)
            return s;
    return 0;
}

/* Each study's batches, at most @max each: no more can go out. */
static void plan_work_batches(struct plan_work *w,
                              const struct plan_candidate *cands,
                              const struct plan_limits *limits, size_t max)
{
    for (size_t s = 0; s < w->study_count; s++) {
        struct plan_study *st = &w->studies[s].study;

        st->batch_first = w->batch_count;
        st->batch_count = plan_study_batches(
            cands, w->slots, st, limits, max < st->count ? max : st->count,
            &w->batches[w->batch_count], w->members, &w->member_count);
        w->batch_count += st->batch_count;
    }
}

/* Round-robin from study @start: each study's first batch, then each
 * one's second..., at most @max batches, into @plan. */
static int plan_round_robin(const struct plan_work *w, size_t start, size_t max,
                            struct plan *plan)
{
    bool any = true;

    plan->batches = calloc(max < w->batch_count ? max : w->batch_count,
                           sizeof(*plan->batches));
    plan->members = calloc(w->member_count, sizeof(*plan->members));
    if (plan->batches == NULL || plan->members == NULL) {
        plan_free(plan);
        return -ENOMEM;
    }
    for (size_t round = 0; any && plan->batch_count < max; round++) {
        any = false;
        for (size_t i = 0; i < w->study_count && plan->batch_count < max; i++) {
            const struct plan_study *st =
                &w->studies[(start + i) % w->study_count].study;
            const struct plan_batch *from;
            struct plan_batch *to;

            if (round >= st->batch_count)
                continue;
            any = true;
            from = &w->batches[st->batch_first + round];
            to = &plan->batches[plan->batch_count++];
            *to = *from;
            to->first = plan->member_count;
            memcpy(&plan->members[plan->member_count], &w->members[from->first],
                   from->count * sizeof(*plan->members));
            plan->member_count += from->count;
        }
    }
    return 0;
}

int plan_batches(const struct plan_candidate *cands, const size_t *order,
                 size_t order_count, const struct plan_limits *limits,
                 const char *after_study, struct plan *ret_plan)
{
    struct plan_work w;
    size_t start;
    int r;

    if (ret_plan == NULL || limits == NULL ||
        (order_count > 0 && (cands == NULL || order == NULL)) ||
        limits->batch_max_instances == 0)
        return -EINVAL;
    memset(ret_plan, 0, sizeof(*ret_plan));
    if (order_count == 0 || limits->max_batches == 0)
        return 0;
    memset(&w, 0, sizeof(w));
    r = plan_slots(cands, order, order_count, &w.slots, &w.slot_count);
    if (r < 0 || w.slot_count == 0)
        goto out;
    /* At most one study, one batch and one member per slot. */
    w.studies = calloc(w.slot_count, sizeof(*w.studies));
    w.batches = calloc(w.slot_count, sizeof(*w.batches));
    w.members = calloc(w.slot_count, sizeof(*w.members));
    if (w.studies == NULL || w.batches == NULL || w.members == NULL) {
        r = -ENOMEM;
        goto out;
    }
    start = plan_work_studies(&w, cands, after_study);
    plan_work_batches(&w, cands, limits, limits->max_batches);
    r = plan_round_robin(&w, start, limits->max_batches, ret_plan);

out:
    plan_work_free(&w);
    return r;
}

void plan_free(struct plan *plan)
{
    if (plan == NULL)
        return;
    free(plan->members);
    free(plan->batches);
    memset(plan, 0, sizeof(*plan));
}

unsigned plan_backoff_s(unsigned min_s, unsigned max_s, uint32_t attempts,
                        unsigned jitter_permille)
{
    uint64_t delay = min_s;

    for (uint32_t i = 1; i < attempts && delay < max_s; i++)
        delay *= 2;
    if (delay > max_s)
        delay = max_s;
    if (jitter_permille < 800)
        jitter_permille = 800;
    if (jitter_permille > 1200)
        jitter_permille = 1200;
    delay = delay * jitter_permille / 1000;
    return delay > 0 ? (unsigned)delay : 1;
}
