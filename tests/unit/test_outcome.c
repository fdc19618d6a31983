/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_outcome - the uploader's outcome table (bridge/outcome.h), one row
 * per case: each per-instance answer (stored, stored with a warning,
 * already there, pending, out of resources, processing failure, not
 * listed, rejected); "later" answers with and without Retry-After, capped
 * to retry.max_pause_s, pausing every upload only for 429 and 503; the
 * expiry of old retries; the wait of a retry (backoff, floor, fixed).
 */
#include <stdio.h>
#include <string.h>

#include "bridge/outcome.h"
#include "tap.h"
#include "web/stow.h"

#define HOUR_US (INT64_C(3600) * 1000000)

static void test_instances(void)
{
    static const struct {
        long status;
        enum stow_outcome stow;
        uint16_t reason;
        enum outcome_verdict verdict;
        uint16_t kept_reason;
        const char *why; /* substring; NULL: why must be empty */
    } rows[] = {
        { 200, STOW_DELIVERED, 0, OUTCOME_DELIVERED, 0, NULL },
        { 202, STOW_DELIVERED, 0xB000, OUTCOME_DELIVERED, 0xB000, NULL },
        { 202, STOW_DELIVERED, 0xB007, OUTCOME_DELIVERED, 0xB007, NULL },
        /* Already there: delivered, no warning. */
        { 409, STOW_DELIVERED, 0xB00E, OUTCOME_DELIVERED, 0, NULL },
        { 409, STOW_RETRY, 0xB00F, OUTCOME_RETRY, 0xB00F,
          "HTTP 409, Failure Reason B00F (" },
        { 409, STOW_RETRY, 0xA700, OUTCOME_RETRY, 0xA700,
          "HTTP 409, Failure Reason A700 (" },
        { 202, STOW_RETRY, 0x0110, OUTCOME_RETRY, 0x0110,
          "HTTP 202, Failure Reason 0110 (" },
        { 202, STOW_RETRY, 0, OUTCOME_RETRY, 0,
          "HTTP 202, the answer does not list this instance as stored" },
        { 409, STOW_REJECTED, 0xC122, OUTCOME_DEAD_LETTER, 0xC122,
          "HTTP 409, Failure Reason C122 (" },
        { 409, STOW_REJECTED, 0xA900, OUTCOME_DEAD_LETTER, 0xA900,
          "HTTP 409, Failure Reason A900 (" },
        { 202, STOW_REJECTED, 0x0122, OUTCOME_DEAD_LETTER, 0x0122,
          "HTTP 202, Failure Reason 0122 (" },
    };

    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct stow_instance_result res = {
            .outcome = rows[i].stow,
            .reason = rows[i].reason,
            .http_status = rows[i].status,
        };
        struct outcome o;

        memset(&o, 0x5a, sizeof(o));
        outcome_for_instance(rows[i].status, &res, &o);
        CHECK_MSG(o.verdict == rows[i].verdict, "row %zu: verdict %d", i,
                  (int)o.verdict);
        CHECK_MSG(o.reason == rows[i].kept_reason, "row %zu: reason %04X", i,
                  o.reason);
        CHECK(o.http_status == rows[i].status);
        if (rows[i].why == NULL)
            CHECK_MSG(o.why[0] == '\0', "row %zu: why '%s'", i, o.why);
        else
            CHECK_MSG(strstr(o.why, rows[i].why) == o.why, "row %zu: why '%s'",
                      i, o.why);
        /* Only the backoff decides an instance's wait. */
        CHECK(o.delay_s == 0 && o.floor_s == 0);
        /* A reason's meaning is spelled out. */
        if (rows[i].why != NULL && rows[i].reason != 0)
            CHECK_MSG(strstr(o.why, stow_reason_text(rows[i].reason)) != NULL,
                      "row %zu: '%s'", i, o.why);
    }
}

static void test_retry_later(void)
{
    static const struct {
        long status;
        int64_t retry_after_s;
        unsigned max_pause_s;
        unsigned floor_s;
        unsigned pause_s;
        const char *asked;
    } rows[] = {
        { 500, 0, 600, 0, 0, "" }, /* the backoff alone */
        { 502, 0, 600, 0, 0, "" },
        { 408, 0, 600, 0, 0, "" },
        { 503, 0, 600, 0, 0, "" }, /* no Retry-After: no pause */
        { 429, 0, 600, 0, 0, "" },
        { 500, 30, 600, 30, 0, "" },      /* at least Retry-After */
        { 504, 900, 600, 600, 0, "" },    /* capped */
        { 429, 30, 600, 30, 30, "30 s" }, /* the whole service pauses */
        { 503, 120, 600, 120, 120, "120 s" },
        { 503, 3600, 600, 600, 600, "3600 s" },            /* capped */
        { 429, 86400, 600, 600, 600, "at least 86400 s" }, /* maybe cut */
        { 429, 10, 0, 1, 1, "10 s" }, /* max_pause_s is >= 1 */
        { 503, -5, 600, 0, 0, "" },   /* nonsense is none */
    };

    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct outcome o;
        struct outcome_pause p;
        char want_why[32];

        outcome_for_retry_later(rows[i].status, rows[i].retry_after_s,
                                rows[i].max_pause_s, &o, &p);
        CHECK_MSG(o.verdict == OUTCOME_RETRY, "row %zu", i);
        CHECK(o.http_status == rows[i].status && o.reason == 0);
        snprintf(want_why, sizeof(want_why), "HTTP %ld", rows[i].status);
        CHECK_MSG(strcmp(o.why, want_why) == 0, "row %zu: '%s'", i, o.why);
        CHECK(o.delay_s == 0);
        CHECK_MSG(o.floor_s == rows[i].floor_s, "row %zu: floor %u", i,
                  o.floor_s);
        CHECK_MSG(p.seconds == rows[i].pause_s, "row %zu: pause %u", i,
                  p.seconds);
        CHECK_MSG(strcmp(p.asked, rows[i].asked) == 0, "row %zu: '%s'", i,
                  p.asked);
        if (p.seconds > 0) {
            char want[128];
            snprintf(want, sizeof(want), "HTTP %ld with Retry-After %s",
                     rows[i].status, rows[i].asked);
            CHECK_MSG(strcmp(p.reason, want) == 0, "row %zu: '%s'", i,
                      p.reason);
        } else {
            CHECK(p.reason[0] == '\0');
        }
    }
}

static void test_expire(void)
{
    static const struct {
        enum outcome_verdict verdict;
        int64_t age_us;
        unsigned max_age_h;
        bool expired;
    } rows[] = {
        { OUTCOME_RETRY, 0, 168, false },
        { OUTCOME_RETRY, 168 * HOUR_US, 168, false }, /* not older */
        { OUTCOME_RETRY, 168 * HOUR_US + 1, 168, true },
        { OUTCOME_RETRY, 2 * HOUR_US, 1, true },
        /* However old, what can be delivered is; a dead letter stays. */
        { OUTCOME_DELIVERED, 1000 * HOUR_US, 1, false },
        { OUTCOME_DEAD_LETTER, 1000 * HOUR_US, 1, false },
    };
    const int64_t now = INT64_C(1800000000) * 1000000;

    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct outcome o;

        outcome_retry(503, 0x0110, 600, "HTTP 503", &o);
        o.verdict = rows[i].verdict;
        o.floor_s = 7;
        bool r =
            outcome_expire(&o, now - rows[i].age_us, now, rows[i].max_age_h);
        CHECK_MSG(r == rows[i].expired, "row %zu", i);
        if (rows[i].expired) {
            char want[128];
            snprintf(want, sizeof(want),
                     "expired: not delivered within "
                     "%u h; last error: HTTP 503",
                     rows[i].max_age_h);
            CHECK(o.verdict == OUTCOME_DEAD_LETTER);
            CHECK_MSG(strcmp(o.why, want) == 0, "row %zu: '%s'", i, o.why);
            CHECK(o.reason == 0x0110 && o.http_status == 503);
            CHECK(o.delay_s == 0 && o.floor_s == 0);
        } else {
            CHECK(o.verdict == rows[i].verdict);
            CHECK(strcmp(o.why, "HTTP 503") == 0);
        }
    }

    /* A long last error is cut, the words around it are kept. */
    {
        char longwhy[OUTCOME_WHY_MAX];
        struct outcome o;

        memset(longwhy, 'x', sizeof(longwhy) - 1);
        longwhy[sizeof(longwhy) - 1] = '\0';
        outcome_retry(0, 0, 0, longwhy, &o);
        CHECK(strlen(o.why) == OUTCOME_WHY_MAX - 1);
        CHECK(outcome_expire(&o, 0, 2 * HOUR_US, 1));
        CHECK(strncmp(o.why,
                      "expired: not delivered within 1 h; last "
                      "error: xxx",
                      48) == 0);
        CHECK(strlen(o.why) < 320);
    }
}

static void test_delay(void)
{
    static const struct {
        unsigned delay_s;
        unsigned floor_s;
        unsigned backoff_s;
        unsigned want;
    } rows[] = {
        { 0, 0, 40, 40 },     /* the backoff */
        { 0, 30, 40, 40 },    /* the backoff, above the floor */
        { 0, 90, 40, 90 },    /* the floor (Retry-After) */
        { 600, 0, 40, 600 },  /* fixed: 403, redirect, refused client */
        { 600, 0, 720, 600 }, /* fixed even when the backoff is longer */
    };

    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct outcome o;

        outcome_retry(0, 0, rows[i].delay_s, "x", &o);
        o.floor_s = rows[i].floor_s;
        unsigned got = outcome_retry_delay_s(&o, rows[i].backoff_s);
        CHECK_MSG(got == rows[i].want, "row %zu: %u, want %u", i, got,
                  rows[i].want);
    }

    struct outcome o;
    outcome_retry(401, 0, 0, NULL, &o);
    CHECK(o.verdict == OUTCOME_RETRY && o.why[0] == '\0');
}

int main(void)
{
    test_instances();
    test_retry_later();
    test_expire();
    test_delay();
    return tap_done();
}
