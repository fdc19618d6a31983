/* SPDX-License-Identifier: Apache-2.0 */
/*
 * outcome - see outcome.h.
 */
#include "outcome.h"

#include <stdio.h>
#include <string.h>

#include "web/stow.h"

/* The longest reason of an expired entry. */
#define OUTCOME_EXPIRED_MAX 320
/* "Already exists": delivered, and not worth a warning. */
#define OUTCOME_REASON_ALREADY_STORED 0xB00E

void outcome_for_instance(long http_status,
                          const struct stow_instance_result *res,
                          struct outcome *ret)
{
    memset(ret, 0, sizeof(*ret));
    ret->http_status = http_status;
    switch (res->outcome) {
    case STOW_DELIVERED:
        ret->verdict = OUTCOME_DELIVERED;
        ret->reason =
            res->reason == OUTCOME_REASON_ALREADY_STORED ? 0 : res->reason;
        return;
    case STOW_RETRY:
        ret->verdict = OUTCOME_RETRY;
        ret->reason = res->reason;
        if (res->reason != 0)
            snprintf(ret->why, sizeof(ret->why),
                     "HTTP %ld, Failure Reason %04X (%s)", http_status,
                     res->reason, stow_reason_text(res->reason));
        else
            snprintf(ret->why, sizeof(ret->why),
                     "HTTP %ld, the answer does not list this instance as "
                     "stored",
                     http_status);
        return;
    case STOW_REJECTED:
        break;
    }
    ret->verdict = OUTCOME_DEAD_LETTER;
    ret->reason = res->reason;
    snprintf(ret->why, sizeof(ret->why), "HTTP %ld, Failure Reason %04X (%s)",
             http_status, res->reason, stow_reason_text(res->reason));
}

void outcome_for_retry_later(long http_status, int64_t retry_after_s,
                             unsigned max_pause_s, struct outcome *ret,
                             struct outcome_pause *ret_pause)
{
    unsigned floor_s = 0;

    if (max_pause_s == 0)
        max_pause_s = 1;
    memset(ret_pause, 0, sizeof(*ret_pause));
    outcome_retry(http_status, 0, 0, "", ret);
    snprintf(ret->why, sizeof(ret->why), "HTTP %ld", http_status);
    if (retry_after_s <= 0)
        return;
    /* Never longer than retry.max_pause_s, whatever was asked. */
    floor_s = retry_after_s > (int64_t)max_pause_s ? max_pause_s
                                                   : (unsigned)retry_after_s;
    ret->floor_s = floor_s;
    if (http_status != 429 && http_status != 503)
        return;
    /* The whole service asked for a pause, not this batch. */
    if (retry_after_s >= OUTCOME_RETRY_AFTER_READ_MAX)
        snprintf(ret_pause->asked, sizeof(ret_pause->asked), "at least %lld s",
                 (long long)retry_after_s);
    else
        snprintf(ret_pause->asked, sizeof(ret_pause->asked), "%lld s",
                 (long long)retry_after_s);
    snprintf(ret_pause->reason, sizeof(ret_pause->reason),
             "HTTP %ld with Retry-After %s", http_status, ret_pause->asked);
    ret_pause->seconds = floor_s;
}

void outcome_retry(long http_status, uint16_t reason, unsigned delay_s,
                   const char *why, struct outcome *ret)
{
    memset(ret, 0, sizeof(*ret));
    ret->verdict = OUTCOME_RETRY;
    ret->http_status = http_status;
    ret->reason = reason;
    ret->delay_s = delay_s;
    snprintf(ret->why, sizeof(ret->why), "%s", why != NULL ? why : "");
}

bool outcome_expire(struct outcome *o, int64_t arrival_us, int64_t now_us,
                    unsigned max_age_h)
{
    char last[OUTCOME_WHY_MAX];

    if (o->verdict != OUTCOME_RETRY ||
        now_us - arrival_us <= (int64_t)max_age_h * 3600 * 1000000)
        return false;
    memcpy(last, o->why, sizeof(last));
    /* At most OUTCOME_EXPIRED_MAX - 1 bytes, the last error cut first. */
    snprintf(o->why, OUTCOME_EXPIRED_MAX,
             "expired: not delivered within %u h; last error: %.*s", max_age_h,
             OUTCOME_EXPIRED_MAX - 80, last);
    o->verdict = OUTCOME_DEAD_LETTER;
    o->delay_s = 0;
    o->floor_s = 0;
    return true;
}

unsigned outcome_retry_delay_s(const struct outcome *o, unsigned backoff_s)
{
    if (o->delay_s != 0)
        return o->delay_s;
    return backoff_s > o->floor_s ? backoff_s : o->floor_s;
}
