/* SPDX-License-Identifier: Apache-2.0 */
/*
 * buf - see buf.h.
 */
#include "buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The first allocation, unless the ceiling is lower. */
#define BUF_FIRST_CAP 64

void buf_init(struct buf *b, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->max = max;
}

void buf_free(struct buf *b)
{
    size_t max = b->max;

    free(b->p);
    buf_init(b, max);
}

void buf_reset(struct buf *b)
{
    b->len = 0;
    b->error = 0;
    if (b->p != NULL)
        b->p[0] = '\0';
}

/* Makes room for @more bytes and the NUL, within the ceiling. */
static int buf_reserve(struct buf *b, size_t more)
{
    size_t need;
    size_t cap;
    char *grown;

    if (b->error != 0)
        return b->error;
    if (more >= b->max || b->len + more + 1 > b->max) {
        b->error = -E2BIG;
        return b->error;
    }
    need = b->len + more + 1;
    if (need <= b->cap)
        return 0;
    cap = b->cap > 0 ? b->cap : BUF_FIRST_CAP;
    while (cap < need)
        cap = cap > b->max / 2 ? b->max : cap * 2;
    if (cap > b->max)
        cap = b->max;
    grown = realloc(b->p, cap);
    if (grown == NULL) {
        b->error = -ENOMEM;
        return b->error;
    }
    b->p = grown;
    b->cap = cap;
    return 0;
}

int buf_append(struct buf *b, const void *data, size_t len)
{
    int r = buf_reserve(b, len);

    if (r < 0)
        return r;
    if (len > 0)
        memcpy(b->p + b->len, data, len);
    b->len += len;
    b->p[b->len] = '\0';
    return 0;
}

int buf_append_str(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_appendf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    int r;

    if (b->error != 0)
        return b->error;
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->error = -EINVAL;
        return b->error;
    }
    r = buf_reserve(b, (size_t)n);
    if (r < 0)
        return r;
    va_start(ap, fmt);
    (void)vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

const char *buf_text(const struct buf *b)
{
    return b->p != NULL ? b->p : "";
}

int buf_error(const struct buf *b)
{
    return b->error;
}

char *buf_take(struct buf *b, size_t *ret_len)
{
    char *text;

    if (b->error == 0 && b->p == NULL && buf_reserve(b, 0) == 0)
        b->p[0] = '\0';
    if (b->error != 0) {
        buf_free(b);
        return NULL;
    }
    text = b->p;
    if (ret_len != NULL)
        *ret_len = b->len;
    b->p = NULL;
    b->len = 0;
    b->cap = 0;
    return text;
}
