/* SPDX-License-Identifier: Apache-2.0 */
/*
 * rate - see rate.h.
 *
 * A ring of samples at least step_ms apart (the "kept" samples), plus the
 * newest sample, which moves on every record until it is a step past the
 * last kept one and becomes kept itself.
 */
#include "rate.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

struct sample {
    uint64_t t_ms;
    uint64_t total;
};

struct admin_rate {
    pthread_mutex_t lock;
    uint64_t step_ms;
    size_t capacity;
    size_t count; /* kept samples */
    size_t head;  /* slot of the oldest kept sample */
    bool have_latest;
    struct sample latest;
    struct sample kept[];
};

struct admin_rate *admin_rate_new(uint32_t step_s, uint32_t horizon_s)
{
    struct admin_rate *r;
    size_t capacity;

    if (step_s < 1 || step_s > 3600 || horizon_s < step_s ||
        horizon_s > 7u * 86400u)
        return NULL;
    capacity = horizon_s / step_s + 2;
    r = calloc(1, sizeof(*r) + capacity * sizeof(r->kept[0]));
    if (r == NULL)
        return NULL;
    if (pthread_mutex_init(&r->lock, NULL) != 0) {
        free(r);
        return NULL;
    }
    r->step_ms = (uint64_t)step_s * 1000u;
    r->capacity = capacity;
    return r;
}

void admin_rate_free(struct admin_rate *r)
{
    if (r == NULL)
        return;
    (void)pthread_mutex_destroy(&r->lock);
    free(r);
}

static struct sample *kept_at(struct admin_rate *r, size_t i)
{
    return &r->kept[(r->head + i) % r->capacity];
}

static void keep(struct admin_rate *r, struct sample s)
{
    if (r->count == r->capacity) {
        r->head = (r->head + 1) % r->capacity;
        r->count--;
    }
    *kept_at(r, r->count) = s;
    r->count++;
}

void admin_rate_record(struct admin_rate *r, uint64_t now_ms, uint64_t total)
{
    struct sample s = { now_ms, total };

    pthread_mutex_lock(&r->lock);
    if (r->have_latest &&
        (total < r->latest.total || now_ms < r->latest.t_ms)) {
        r->count = 0; /* the counter restarted: forget */
        r->head = 0;
        r->have_latest = false;
    }
    if (r->count == 0 || now_ms >= kept_at(r, r->count - 1)->t_ms + r->step_ms)
        keep(r, s);
    r->latest = s;
    r->have_latest = true;
    pthread_mutex_unlock(&r->lock);
}

struct admin_rate_value admin_rate_get(struct admin_rate *r, uint64_t now_ms,
                                       uint32_t window_s)
{
    struct admin_rate_value v = { 0, 0 };
    uint64_t window_ms = (uint64_t)window_s * 1000u;
    uint64_t from = now_ms > window_ms ? now_ms - window_ms : 0;

    pthread_mutex_lock(&r->lock);
    if (r->have_latest && r->latest.t_ms >= from) {
        for (size_t i = 0; i < r->count; i++) {
            const struct sample *s = kept_at(r, i);
            if (s->t_ms < from)
                continue;
            if (s->t_ms < r->latest.t_ms) {
                uint64_t span_ms = r->latest.t_ms - s->t_ms;
                v.per_s = (double)(r->latest.total - s->total) * 1000.0 /
                          (double)span_ms;
                v.span_s = (uint32_t)((span_ms + 500) / 1000);
                if (v.span_s == 0)
                    v.span_s = 1;
            }
            break;
        }
    }
    pthread_mutex_unlock(&r->lock);
    return v;
}
