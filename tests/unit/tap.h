/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tap.h - the tiny assertion helper of the unit tests.
 *
 * CHECK(cond) records a failure with file and line and goes on; the test's
 * main() ends with `return tap_done();`, which prints the closing line
 * "N passed, N failed" that CI reads, and returns non-zero on any failure.
 */
#ifndef STOWBRIDGE_TAP_H
#define STOWBRIDGE_TAP_H

#include <stdio.h>

static unsigned tap_passed;
static unsigned tap_failed;

#define CHECK(cond)                                                         \
    do {                                                                    \
        if (cond) {                                                         \
            tap_passed++;                                                   \
        } else {                                                            \
            tap_failed++;                                                   \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                   \
    } while (0)

#define CHECK_MSG(cond, ...)                                                \
    do {                                                                    \
        if (cond) {                                                         \
            tap_passed++;                                                   \
        } else {                                                            \
            tap_failed++;                                                   \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                   \
            fputc('\n', stderr);                                            \
        }                                                                   \
    } while (0)

static inline int tap_done(void)
{
    printf("%u passed, %u failed\n", tap_passed, tap_failed);
    return tap_failed == 0 ? 0 : 1;
}

#endif
