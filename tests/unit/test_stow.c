/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_stow - STOW-RS answers turned into per-instance outcomes: the
 * docs/architecture.md section 6 table, row by row, plus malformed bodies.
 */
#include <errno.h>
#include <string.h>

#include "tap.h"
#include "web/stow.h"

static const char *const uids[] = { "1.2.3.1", "1.2.3.2", "1.2.3.3" };
static struct stow_instance_result res[3];
static char err[256];

static int parse(long status, const char *body)
{
    memset(res, 0xff, sizeof(res));
    err[0] = '\0';
    return stow_parse_response(status, body, strlen(body), uids, 3, res, err,
                               sizeof(err));
}

#define REF(uid) "{\"00081155\": {\"vr\": \"UI\", \"Value\": [\"" uid "\"]}}"
#define REF_WARN(uid, code)                                       \
    "{\"00081155\": {\"vr\": \"UI\", \"Value\": [\"" uid "\"]}, " \
    "\"00081196\": {\"vr\": \"US\", \"Value\": [" code "]}}"
#define FAIL(uid, code)                                           \
    "{\"00081155\": {\"vr\": \"UI\", \"Value\": [\"" uid "\"]}, " \
    "\"00081197\": {\"vr\": \"US\", \"Value\": [" code "]}}"

static void test_request_actions(void)
{
    CHECK(stow_request_action(200) == STOW_READ_BODY);
    CHECK(stow_request_action(202) == STOW_READ_BODY);
    CHECK(stow_request_action(409) == STOW_READ_BODY);
    CHECK(stow_request_action(400) == STOW_SPLIT_BATCH);
    CHECK(stow_request_action(413) == STOW_SPLIT_BATCH);
    CHECK(stow_request_action(415) == STOW_SPLIT_BATCH);
    CHECK(stow_request_action(401) == STOW_REFRESH_TOKEN);
    CHECK(stow_request_action(403) == STOW_FORBIDDEN);
    CHECK(stow_request_action(408) == STOW_RETRY_LATER);
    CHECK(stow_request_action(429) == STOW_RETRY_LATER);
    CHECK(stow_request_action(500) == STOW_RETRY_LATER);
    CHECK(stow_request_action(503) == STOW_RETRY_LATER);
    CHECK(stow_request_action(0) == STOW_RETRY_LATER);
    /* Redirects are an answer of their own, never a retry as usual. */
    CHECK(stow_request_action(301) == STOW_REDIRECTED);
    CHECK(stow_request_action(302) == STOW_REDIRECTED);
    CHECK(stow_request_action(303) == STOW_REDIRECTED);
    CHECK(stow_request_action(307) == STOW_REDIRECTED);
    CHECK(stow_request_action(308) == STOW_REDIRECTED);
    CHECK(stow_request_action(304) == STOW_RETRY_LATER);
}

static void test_reasons(void)
{
    CHECK(stow_failure_outcome(0xB00E) == STOW_DELIVERED);
    CHECK(stow_failure_outcome(45070) == STOW_DELIVERED);
    CHECK(stow_failure_outcome(0xB00F) == STOW_RETRY);
    CHECK(stow_failure_outcome(0xA700) == STOW_RETRY);
    CHECK(stow_failure_outcome(0xA7FF) == STOW_RETRY);
    CHECK(stow_failure_outcome(0x0110) == STOW_RETRY);
    CHECK(stow_failure_outcome(0xA900) == STOW_REJECTED);
    CHECK(stow_failure_outcome(0xC000) == STOW_REJECTED);
    CHECK(stow_failure_outcome(0x0120) == STOW_REJECTED);
    CHECK(stow_failure_outcome(0x0121) == STOW_REJECTED);
    CHECK(stow_failure_outcome(0x0122) == STOW_REJECTED);
    CHECK(stow_failure_outcome(0xC122) == STOW_REJECTED);
    CHECK(strcmp(stow_reason_text(0xB00E), "instance already exists") == 0);
    CHECK(strcmp(stow_reason_text(0xA7A1), "out of resources") == 0);
    CHECK(strcmp(stow_reason_text(0xC3AB), "cannot understand") == 0);
    CHECK(strcmp(stow_reason_text(0x0122), "SOP Class not supported") == 0);
    CHECK(strcmp(stow_reason_text(0x1234), "unknown reason") == 0);
}

static void test_bodies(void)
{
    /* 200: all referenced, one with a warning (Azure's 45063 on implicit). */
    CHECK(
        parse(
            200,
            "{\"00081199\": {\"vr\": \"SQ\", \"Value\": [" REF(
                "1.2.3.1") ", " REF_WARN("1.2.3.2",
                                         "45063") ", " REF("1.2.3.3") "]}}") ==
        0);
    CHECK(res[0].outcome == STOW_DELIVERED && res[0].reason == 0);
    CHECK(res[1].outcome == STOW_DELIVERED && res[1].reason == 45063);
    CHECK(res[2].outcome == STOW_DELIVERED && res[2].http_status == 200);

    /* 202 mixed: stored, already there, and rejected. */
    CHECK(
        parse(202,
              "{\"00081199\": {\"vr\": \"SQ\", \"Value\": [" REF(
                  "1.2.3.1") "]}, \"00081198\": {\"vr\": \"SQ\", "
                             "\"Value\": [" FAIL("1.2.3.2", "45070") ", " FAIL(
                                 "1.2.3.3", "43264") "]}}") == 0);
    CHECK(res[0].outcome == STOW_DELIVERED);
    CHECK(res[1].outcome == STOW_DELIVERED && res[1].reason == 0xB00E);
    CHECK(res[2].outcome == STOW_REJECTED && res[2].reason == 0xA900);
    CHECK(res[2].http_status == 202);

    /* 409: every one failed, for transient and permanent reasons. */
    CHECK(parse(409, "{\"00081198\": {\"vr\": \"SQ\", \"Value\": [" FAIL(
                         "1.2.3.1",
                         "42752") ", " FAIL("1.2.3.2",
                                            "272") ", " FAIL("1.2.3.3",
                                                             "290") "]}}") ==
          0);
    CHECK(res[0].outcome == STOW_RETRY && res[0].reason == 0xA700);
    CHECK(res[1].outcome == STOW_RETRY && res[1].reason == 0x0110);
    CHECK(res[2].outcome == STOW_REJECTED && res[2].reason == 0x0122);

    /* Not mentioned at all: not known to be stored, so send again. */
    CHECK(parse(200, "{\"00081199\": {\"vr\": \"SQ\", \"Value\": [" REF(
                         "1.2.3.1") ", " REF("9.9.9") "]}}") == 0);
    CHECK(res[0].outcome == STOW_DELIVERED);
    CHECK(res[1].outcome == STOW_RETRY && res[2].outcome == STOW_RETRY);

    /* The same instance twice in one batch: the answer covers both. */
    {
        const char *const dup[] = { "1.2.3.1", "1.2.3.1" };
        const char *body =
            "{\"00081199\": {\"vr\": \"SQ\", \"Value\": [" REF("1.2.3.1") "]}}";
        struct stow_instance_result two[2];
        CHECK(stow_parse_response(200, body, strlen(body), dup, 2, two, err,
                                  sizeof(err)) == 0);
        CHECK(two[0].outcome == STOW_DELIVERED &&
              two[1].outcome == STOW_DELIVERED);
    }

    /* Listed as referenced and failed: failed wins. */
    CHECK(parse(202, "{\"00081199\": {\"vr\": \"SQ\", \"Value\": [" REF(
                         "1.2.3.1") "]}, \"00081198\": {\"vr\": \"SQ\", "
                                    "\"Value\": [" FAIL("1.2.3.1",
                                                        "49152") "]}}") == 0);
    CHECK(res[0].outcome == STOW_REJECTED && res[0].reason == 0xC000);

    /* A failed item without a reason: processing failure, retried. */
    CHECK(parse(409, "{\"00081198\": {\"vr\": \"SQ\", \"Value\": [" REF(
                         "1.2.3.3") "]}}") == 0);
    CHECK(res[2].outcome == STOW_RETRY && res[2].reason == 0x0110);

    /* Wrapped in an array (some servers), empty sequences, empty 200. */
    CHECK(parse(200, "[{\"00081199\": {\"vr\": \"SQ\", \"Value\": [" REF(
                         "1.2.3.2") "]}}]") == 0);
    CHECK(res[1].outcome == STOW_DELIVERED && res[0].outcome == STOW_RETRY);
    CHECK(parse(200, "{\"00081199\": {\"vr\": \"SQ\"}}") == 0);
    CHECK(res[0].outcome == STOW_RETRY);
    CHECK(parse(200, "  \n") == 0);
    CHECK(res[0].outcome == STOW_DELIVERED && res[2].outcome == STOW_DELIVERED);
}

static void test_broken_bodies(void)
{
    CHECK(parse(409, "") == -EBADMSG && strstr(err, "empty") != NULL);
    CHECK(parse(200, "{\"00081199\": ") == -EBADMSG &&
          strstr(err, "not JSON") != NULL);
    CHECK(parse(200, "<html>502 Bad Gateway</html>") == -EBADMSG);
    CHECK(parse(200, "42") == -EBADMSG && strstr(err, "object") != NULL);
    CHECK(parse(200, "{\"00081199\": {\"vr\": \"SQ\", \"Value\": 5}}") ==
          -EBADMSG);
    CHECK(parse(200, "{\"00081199\": {\"vr\": \"SQ\", \"Value\": [7]}}") ==
          -EBADMSG);
    CHECK(parse(200, "{\"00081199\": {\"vr\": \"SQ\", \"Value\": [{}]}}") ==
              -EBADMSG &&
          strstr(err, "(0008,1155)") != NULL);
    /* Results are written only on success. */
    CHECK(res[0].outcome == (enum stow_outcome)0xffffffff);

    /* 100 000 levels deep: said so, not "not JSON at byte 1000". */
    static char deep[200001];
    memset(deep, '[', 100000);
    memset(deep + 100000, ']', 100000);
    CHECK(parse(200, deep) == -EBADMSG);
    CHECK_MSG(strstr(err, "nested deeper than 64 levels") != NULL, "%s", err);
}

int main(void)
{
    test_request_actions();
    test_reasons();
    test_bodies();
    test_broken_bodies();
    return tap_done();
}
