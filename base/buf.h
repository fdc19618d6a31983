/* SPDX-License-Identifier: Apache-2.0 */
/*
 * buf - a growable byte buffer with a ceiling, in the manner of curl's
 * dynbuf: every buffer is given its largest size when it is initialised,
 * and an append that would pass it fails instead of growing without bound
 * (STYLE: "every growable buffer has a ceiling").
 *
 * The first error sticks: after it, appends do nothing and return it, so
 * a caller may append many pieces and check once (buf_error(), or the
 * result of buf_take()). The text is always NUL-terminated (the NUL is
 * counted against the ceiling).
 *
 * Errors: -E2BIG (the ceiling), -ENOMEM, -EINVAL (a bad format).
 * Ownership: the buffer owns its memory until buf_take() hands it out;
 * buf_free() releases it and accepts a zeroed or failed buffer.
 * Thread safety: a struct buf belongs to one thread.
 */
#ifndef STOWBRIDGE_BASE_BUF_H
#define STOWBRIDGE_BASE_BUF_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct buf {
    char *p;    /* NUL-terminated when not NULL; owned */
    size_t len; /* bytes held, without the NUL */
    size_t cap; /* bytes allocated */
    size_t max; /* ceiling of cap (text + NUL) */
    int error;  /* 0, or the first error (sticks) */
};

/* Starts an empty buffer that will never hold more than @max bytes
 * (including the terminating NUL). Allocates nothing. */
void buf_init(struct buf *b, size_t max);

/* Frees the memory; the buffer is empty again with the same ceiling. */
void buf_free(struct buf *b);

/* Empties the buffer and clears its error; the memory is kept. */
void buf_reset(struct buf *b);

/* Appends @len bytes of @data. Returns 0 or the (sticky) error. */
int buf_append(struct buf *b, const void *data, size_t len);

/* Appends the string @s. */
int buf_append_str(struct buf *b, const char *s);

/* Appends printf-formatted text. */
int buf_appendf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The text ("" when empty); borrowed until the next change. */
const char *buf_text(const struct buf *b);

/* The first error, or 0. */
int buf_error(const struct buf *b);

/*
 * Hands out the text (a NUL-terminated heap string, possibly "") and its
 * length in @ret_len (may be NULL), leaving the buffer empty. NULL when
 * the buffer failed (it is then freed) or on out-of-memory.
 */
char *buf_take(struct buf *b, size_t *ret_len);

#ifdef __cplusplus
}
#endif

#endif
