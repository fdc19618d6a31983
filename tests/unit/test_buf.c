/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_buf - base/buf: appends within the ceiling, the ceiling exactly
 * (text + NUL), the sticky first error, formatted appends, reset, take.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "tap.h"

static void test_append_and_take(void)
{
    struct buf b;
    size_t len = 0;
    char *text;

    buf_init(&b, 1024);
    CHECK(strcmp(buf_text(&b), "") == 0 && b.p == NULL);
    CHECK(buf_append_str(&b, "abc") == 0);
    CHECK(buf_append(&b, "de\0f", 4) == 0);
    CHECK(b.len == 7 && memcmp(buf_text(&b), "abcde\0f", 8) == 0);
    CHECK(buf_appendf(&b, "-%d-%s", 42, "x") == 0);
    CHECK(b.len == 12 && strcmp(buf_text(&b) + 7, "-42-x") == 0);
    text = buf_take(&b, &len);
    CHECK(text != NULL && len == 12 && memcmp(text, "abcde\0f-42-x", 13) == 0);
    CHECK(b.p == NULL && b.len == 0 && b.max == 1024);
    free(text);
    /* An empty buffer hands out "". */
    text = buf_take(&b, &len);
    CHECK(text != NULL && text[0] == '\0' && len == 0);
    free(text);
    buf_free(&b);
}

static void test_ceiling(void)
{
    struct buf b;
    char big[300];

    memset(big, 'x', sizeof(big));
    /* 10 bytes: 9 of text and the NUL. */
    buf_init(&b, 10);
    CHECK(buf_append(&b, big, 9) == 0 && b.len == 9 && b.cap <= 10);
    CHECK(buf_append(&b, "y", 1) == -E2BIG);
    /* The error sticks, the text stays as it was. */
    CHECK(buf_append(&b, "", 0) == -E2BIG);
    CHECK(buf_appendf(&b, "%d", 1) == -E2BIG);
    CHECK(buf_error(&b) == -E2BIG && b.len == 9);
    CHECK(buf_take(&b, NULL) == NULL && b.p == NULL);
    buf_free(&b);

    /* One append larger than the ceiling, and a huge length. */
    buf_init(&b, 100);
    CHECK(buf_append(&b, big, sizeof(big)) == -E2BIG && b.p == NULL);
    buf_reset(&b);
    CHECK(buf_error(&b) == 0);
    CHECK(buf_append(&b, big, (size_t)-1) == -E2BIG);
    buf_reset(&b);
    /* Growth past several doublings, ending at the ceiling. */
    for (int i = 0; i < 99; i++)
        CHECK(buf_append(&b, "z", 1) == 0);
    CHECK(b.len == 99 && b.cap == 100);
    CHECK(buf_appendf(&b, "%s", "z") == -E2BIG);
    buf_free(&b);

    /* A ceiling of 0 holds nothing, not even "". */
    buf_init(&b, 0);
    CHECK(buf_append(&b, "", 0) == -E2BIG);
    buf_free(&b);
}

static void test_reset_keeps_memory(void)
{
    struct buf b;
    char *before;

    buf_init(&b, 4096);
    CHECK(buf_appendf(&b, "%0100d", 7) == 0 && b.len == 100);
    before = b.p;
    buf_reset(&b);
    CHECK(b.len == 0 && strcmp(buf_text(&b), "") == 0 && b.p == before);
    CHECK(buf_append_str(&b, "again") == 0 &&
          strcmp(buf_text(&b), "again") == 0);
    buf_free(&b);
    CHECK(b.p == NULL && b.max == 4096);
    /* Freeing twice, or a zeroed buffer, is fine. */
    buf_free(&b);
}

int main(void)
{
    test_append_and_take();
    test_ceiling();
    test_reset_keeps_memory();
    return tap_done();
}
