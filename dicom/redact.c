/* SPDX-License-Identifier: Apache-2.0 */
/*
 * redact - see redact.h.
 *
 * The values are kept in buckets by their first byte (case-folded), each
 * bucket longest first, so that at each position of a text only the
 * values that can start there are tried, and the longest that matches
 * wins ("DOE^JOHN" before "DOE"). A text is scanned once, left to right,
 * only as far as the output needs and at most REDACT_SCAN_MAX bytes (a
 * body of 16 MiB of blanks costs no more than that).
 */
#include "redact.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"

struct redact_value {
    char *text;
    size_t len;
};

/* Where matches may start: the first REDACT_SCAN_MAX bytes of a text. */
#define REDACT_SCAN_MAX (64 * 1024)

struct redact {
    struct redact_value *values; /* by bucket, each longest first */
    size_t count;
    size_t cap;
    size_t bucket[257]; /* values of first byte b (folded):
                           bucket[b] .. bucket[b + 1] - 1 */
    bool failed;        /* out of memory or full: withhold */
};

static const char *const redact_months[12] = {
    "January", "February", "March",     "April",   "May",      "June",
    "July",    "August",   "September", "October", "November", "December",
};

struct redact *redact_new(void)
{
    return calloc(1, sizeof(struct redact));
}

void redact_free(struct redact *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->count; i++) {
        explicit_bzero(r->values[i].text, r->values[i].len);
        free(r->values[i].text);
    }
    free(r->values);
    free(r);
}

size_t redact_count(const struct redact *r)
{
    return r != NULL ? r->count : 0;
}

static bool redact_is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
           (c >= 'a' && c <= 'z');
}

static bool redact_is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') ||
           (c >= 'a' && c <= 'f');
}

static unsigned char redact_fold_ascii(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

/* The second byte of a C3 xx sequence, capitals folded to small letters
 * (U+00C0..U+00DE but U+00D7, the multiplication sign). */
static unsigned char redact_fold_c3(unsigned char c)
{
    return c >= 0x80 && c <= 0x9E && c != 0x97 ? (unsigned char)(c + 32) : c;
}

/* True if @n bytes at @a and @b are equal under the folding above. */
static bool redact_equal(const unsigned char *a, const unsigned char *b,
                         size_t n)
{
    for (size_t k = 0; k < n; k++) {
        unsigned char x = a[k];
        unsigned char y = b[k];

        if (x == y)
            continue;
        if (x < 0x80 && y < 0x80) {
            if (redact_fold_ascii(x) != redact_fold_ascii(y))
                return false;
        } else if (k == 0 || a[k - 1] != 0xC3 || b[k - 1] != 0xC3 ||
                   redact_fold_c3(x) != redact_fold_c3(y)) {
            return false;
        }
    }
    return true;
}

/* True if something worth hiding is in @s: a letter, digit or non-ASCII
 * byte. */
static bool redact_worth(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (redact_is_alnum((unsigned char)s[i]) || (unsigned char)s[i] >= 0x80)
            return true;
    return false;
}

/* Adds @n bytes at @s as one value, unless already held. */
static int redact_put(struct redact *r, const char *s, size_t n)
{
    unsigned b;
    size_t pos;
    char *copy;

    if (r == NULL)
        return -EINVAL;
    if (n == 0 || !redact_worth(s, n))
        return 0;
    b = redact_fold_ascii((unsigned char)s[0]);
    for (size_t i = r->bucket[b]; i < r->bucket[b + 1]; i++)
        if (r->values[i].len == n &&
            redact_equal((const unsigned char *)r->values[i].text,
                         (const unsigned char *)s, n))
            return 0;
    if (r->count >= REDACT_MAX_VALUES) {
        r->failed = true;
        return -E2BIG;
    }
    if (r->count == r->cap) {
        size_t cap = r->cap > 0 ? r->cap * 2 : 16;
        struct redact_value *grown = realloc(r->values, cap * sizeof(*grown));
        if (grown == NULL) {
            r->failed = true;
            return -ENOMEM;
        }
        r->values = grown;
        r->cap = cap;
    }
    copy = malloc(n + 1);
    if (copy == NULL) {
        r->failed = true;
        return -ENOMEM;
    }
    memcpy(copy, s, n);
    copy[n] = '\0';
    for (pos = r->bucket[b]; pos < r->bucket[b + 1] && r->values[pos].len >= n;
         pos++)
        ;
    memmove(r->values + pos + 1, r->values + pos,
            (r->count - pos) * sizeof(*r->values));
    r->values[pos].text = copy;
    r->values[pos].len = n;
    r->count++;
    for (unsigned k = b + 1; k <= 256; k++)
        r->bucket[k]++;
    return 0;
}

/* A growing string for the encoded forms; failed on out-of-memory. */
struct redact_buf {
    char *text;
    size_t len;
    size_t cap;
    bool failed;
};

static void redact_buf_add(struct redact_buf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *grown = realloc(b->text, cap);
        if (grown == NULL) {
            b->failed = true;
            return;
        }
        b->text = grown;
        b->cap = cap;
    }
    memcpy(b->text + b->len, s, n);
    b->len += n;
    b->text[b->len] = '\0';
}

static void redact_buf_free(struct redact_buf *b)
{
    if (b->text != NULL) {
        explicit_bzero(b->text, b->len);
        free(b->text);
    }
    memset(b, 0, sizeof(*b));
}

/* Adds the form in @b (then emptied), or marks @r failed. */
static int redact_put_buf(struct redact *r, struct redact_buf *b)
{
    int ret;

    if (b->failed) {
        redact_buf_free(b);
        r->failed = true;
        return -ENOMEM;
    }
    ret = redact_put(r, b->text != NULL ? b->text : "", b->len);
    redact_buf_free(b);
    return ret;
}

/* Percent-encodes @n bytes at @s: all but A-Z a-z 0-9 - . _ ~ as %XX;
 * a space as '+' when @plus. */
static void redact_percent(struct redact_buf *b, const char *s, size_t n,
                           bool plus)
{
    static const char hex[] = "0123456789ABCDEF";

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char enc[3];

        if (redact_is_alnum(c) || c == '-' || c == '.' || c == '_' ||
            c == '~') {
            redact_buf_add(b, (const char *)&s[i], 1);
        } else if (c == ' ' && plus) {
            redact_buf_add(b, "+", 1);
        } else {
            enc[0] = '%';
            enc[1] = hex[c >> 4];
            enc[2] = hex[c & 15];
            redact_buf_add(b, enc, 3);
        }
    }
}

/* Decodes the UTF-8 sequence at @s (at most @n bytes) into @ret_cp;
 * returns its length, or 0 if it is not valid UTF-8. */
static size_t redact_utf8(const unsigned char *s, size_t n, uint32_t *ret_cp)
{
    uint32_t cp;
    size_t len;

    if (s[0] < 0x80) {
        *ret_cp = s[0];
        return 1;
    }
    if (s[0] >= 0xC2 && s[0] <= 0xDF) {
        len = 2;
        cp = s[0] & 0x1Fu;
    } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        len = 3;
        cp = s[0] & 0x0Fu;
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        len = 4;
        cp = s[0] & 0x07u;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3Fu);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    *ret_cp = cp;
    return len;
}

/* JSON-escapes @n bytes at @s as a server's JSON writer may: '"' and '\'
 * with a backslash, control and non-ASCII characters as \uXXXX (UTF-16
 * surrogate pairs beyond the BMP). Invalid UTF-8 is copied as it is. */
static void redact_json(struct redact_buf *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    while (i < n) {
        uint32_t cp;
        size_t len = redact_utf8(p + i, n - i, &cp);
        char esc[16];

        if (len == 0) {
            redact_buf_add(b, s + i, 1);
            i++;
            continue;
        }
        if (cp == '"' || cp == '\\') {
            esc[0] = '\\';
            esc[1] = (char)cp;
            redact_buf_add(b, esc, 2);
        } else if (cp >= 0x20 && cp < 0x80) {
            redact_buf_add(b, s + i, 1);
        } else if (cp < 0x10000) {
            snprintf(esc, sizeof(esc), "\\u%04x", (unsigned)cp);
            redact_buf_add(b, esc, 6);
        } else {
            uint32_t v = cp - 0x10000;
            snprintf(esc, sizeof(esc), "\\u%04x\\u%04x",
                     (unsigned)(0xD800 + (v >> 10)),
                     (unsigned)(0xDC00 + (v & 0x3FF)));
            redact_buf_add(b, esc, 12);
        }
        i += len;
    }
}

/* Adds @n bytes at @s and their encoded forms. */
static int redact_add_forms(struct redact *r, const char *s, size_t n)
{
    struct redact_buf b = { NULL, 0, 0, false };
    bool plain = true;
    bool space = false;
    int ret;

    while (n > 0 && (s[0] == ' ' || s[0] == '\t')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\0'))
        n--;
    if (n == 0 || !redact_worth(s, n))
        return 0;
    if (n > REDACT_VALUE_MAX) {
        /* Piece by piece: each piece is hidden wherever it occurs. */
        for (size_t off = 0; off < n; off += REDACT_VALUE_MAX) {
            size_t piece =
                n - off < REDACT_VALUE_MAX ? n - off : REDACT_VALUE_MAX;
            ret = redact_add_forms(r, s + off, piece);
            if (ret < 0)
                return ret;
        }
        return 0;
    }
    ret = redact_put(r, s, n);
    if (ret < 0)
        return ret;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!redact_is_alnum(c) && c != '-' && c != '.' && c != '_' && c != '~')
            plain = false;
        if (c == ' ')
            space = true;
    }
    if (plain)
        return 0;
    redact_percent(&b, s, n, false);
    ret = redact_put_buf(r, &b);
    if (ret == 0 && space) {
        redact_percent(&b, s, n, true);
        ret = redact_put_buf(r, &b);
    }
    if (ret == 0) {
        redact_json(&b, s, n);
        ret = redact_put_buf(r, &b);
    }
    return ret;
}

int redact_add_literal(struct redact *r, const char *value)
{
    if (r == NULL)
        return -EINVAL;
    if (value == NULL)
        return 0;
    return redact_add_forms(r, value, strlen(value));
}

/* Adds the words of @n bytes at @s, split at spaces and the punctuation
 * names are written with ("O'Brien", "Smith-Jones", "Jr."). */
static int redact_add_words(struct redact *r, const char *s, size_t n)
{
    size_t start = 0;
    int ret = 0;

    for (size_t i = 0; i <= n && ret == 0; i++) {
        bool sep = i == n || s[i] == ' ' || s[i] == '-' || s[i] == ',' ||
                   s[i] == '.' || s[i] == '\'' || s[i] == '\t';
        if (!sep)
            continue;
        if (i > start && (start > 0 || i < n))
            ret = redact_add_forms(r, s + start, i - start);
        start = i + 1;
    }
    return ret;
}

int redact_add_person_name(struct redact *r, const char *pn)
{
    const char *group;
    size_t total;
    int ret;

    if (r == NULL)
        return -EINVAL;
    if (pn == NULL)
        return 0;
    total = strlen(pn);
    ret = redact_add_forms(r, pn, total);
    group = pn;
    while (ret == 0 && group <= pn + total) {
        size_t glen = strcspn(group, "=");
        const char *comp = group;
        size_t trimmed = glen;

        while (trimmed > 0 &&
               (group[trimmed - 1] == '^' || group[trimmed - 1] == ' '))
            trimmed--;
        ret = redact_add_forms(r, group, trimmed);
        while (ret == 0 && comp < group + glen) {
            size_t clen = strcspn(comp, "^=");
            if (clen > glen - (size_t)(comp - group))
                clen = glen - (size_t)(comp - group);
            ret = redact_add_forms(r, comp, clen);
            if (ret == 0)
                ret = redact_add_words(r, comp, clen);
            comp += clen + 1;
        }
        group += glen + 1;
    }
    return ret;
}

/* Adds one rendering made with printf-style @fmt. */
static int redact_add_fmt(struct redact *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int redact_add_fmt(struct redact *r, const char *fmt, ...)
{
    char text[64];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(text))
        return 0;
    return redact_put(r, text, (size_t)n);
}

/* Adds the renderings of one valid date. */
static int redact_add_ymd(struct redact *r, int y, int m, int d)
{
    const char *month = redact_months[m - 1];
    int yy = y % 100;
    int ret = 0;

    ret = ret ? ret : redact_add_fmt(r, "%04d%02d%02d", y, m, d);
    ret = ret ? ret : redact_add_fmt(r, "%04d-%02d-%02d", y, m, d);
    ret = ret ? ret : redact_add_fmt(r, "%04d/%02d/%02d", y, m, d);
    ret = ret ? ret : redact_add_fmt(r, "%04d.%02d.%02d", y, m, d);
    ret = ret ? ret : redact_add_fmt(r, "%02d.%02d.%04d", d, m, y);
    ret = ret ? ret : redact_add_fmt(r, "%02d/%02d/%04d", d, m, y);
    ret = ret ? ret : redact_add_fmt(r, "%02d-%02d-%04d", d, m, y);
    ret = ret ? ret : redact_add_fmt(r, "%02d/%02d/%04d", m, d, y);
    ret = ret ? ret : redact_add_fmt(r, "%02d-%02d-%04d", m, d, y);
    ret = ret ? ret : redact_add_fmt(r, "%d.%d.%04d", d, m, y);
    ret = ret ? ret : redact_add_fmt(r, "%d/%d/%04d", d, m, y);
    ret = ret ? ret : redact_add_fmt(r, "%d/%d/%04d", m, d, y);
    ret = ret ? ret : redact_add_fmt(r, "%d-%d-%04d", d, m, y);
    ret = ret ? ret : redact_add_fmt(r, "%d-%d-%04d", m, d, y);
    ret = ret ? ret : redact_add_fmt(r, "%02d.%02d.%02d", d, m, yy);
    ret = ret ? ret : redact_add_fmt(r, "%02d/%02d/%02d", d, m, yy);
    ret = ret ? ret : redact_add_fmt(r, "%02d/%02d/%02d", m, d, yy);
    ret = ret ? ret : redact_add_fmt(r, "%d %.3s %04d", d, month, y);
    ret = ret ? ret : redact_add_fmt(r, "%d %s %04d", d, month, y);
    ret = ret ? ret : redact_add_fmt(r, "%02d %.3s %04d", d, month, y);
    ret = ret ? ret : redact_add_fmt(r, "%.3s %d, %04d", month, d, y);
    ret = ret ? ret : redact_add_fmt(r, "%s %d, %04d", month, d, y);
    ret = ret ? ret : redact_add_fmt(r, "%.3s %d %04d", month, d, y);
    ret = ret ? ret : redact_add_fmt(r, "%s %d %04d", month, d, y);
    ret = ret ? ret : redact_add_fmt(r, "%d-%.3s-%04d", d, month, y);
    ret = ret ? ret : redact_add_fmt(r, "%02d-%.3s-%04d", d, month, y);
    return ret;
}

/* Adds one date of a DA value (not a range). */
static int redact_add_one_date(struct redact *r, const char *s, size_t n)
{
    char text[16];
    int y;
    int m;
    int d;

    while (n > 0 && s[0] == ' ') {
        s++;
        n--;
    }
    while (n > 0 && s[n - 1] == ' ')
        n--;
    if (n == 8 && strspn(s, "0123456789") >= 8) {
        memcpy(text, s, 8);
        text[8] = '\0';
        y = (text[0] - '0') * 1000 + (text[1] - '0') * 100 +
            (text[2] - '0') * 10 + (text[3] - '0');
        m = (text[4] - '0') * 10 + (text[5] - '0');
        d = (text[6] - '0') * 10 + (text[7] - '0');
        if (m >= 1 && m <= 12 && d >= 1 && d <= 31)
            return redact_add_ymd(r, y, m, d);
    }
    return redact_add_forms(r, s, n);
}

int redact_add_date(struct redact *r, const char *da)
{
    const char *dash;
    int ret;

    if (r == NULL)
        return -EINVAL;
    if (da == NULL)
        return 0;
    dash = strchr(da, '-');
    if (dash == NULL)
        return redact_add_one_date(r, da, strlen(da));
    ret = redact_add_one_date(r, da, (size_t)(dash - da));
    if (ret == 0)
        ret = redact_add_one_date(r, dash + 1, strlen(dash + 1));
    return ret;
}

/* True if a VR holds no patient data worth hiding (see redact.h). */
static bool redact_vr_skipped(const char *vr)
{
    static const char *const skipped[] = {
        "UI", "CS", "AE", "AT", "TM", "US", "UL", "SS", "SL", "UV", "SV", "FL",
        "FD", "IS", "DS", "OB", "OW", "OF", "OD", "OL", "OV", "UN", "SQ",
    };
    for (size_t i = 0; i < sizeof(skipped) / sizeof(skipped[0]); i++)
        if (strcmp(vr, skipped[i]) == 0)
            return true;
    return false;
}

/* Adds one value (no backslash in it) by VR. */
static int redact_add_single(struct redact *r, const char *vr, const char *s,
                             size_t n)
{
    char *copy;
    int ret = 0;

    if (strcmp(vr, "DA") == 0 || strcmp(vr, "DT") == 0) {
        copy = strndup(s, n);
        if (copy == NULL) {
            r->failed = true;
            return -ENOMEM;
        }
        if (strcmp(vr, "DT") == 0 && n >= 8) {
            /* The date part, and the value itself. */
            char date[9];
            memcpy(date, copy, 8);
            date[8] = '\0';
            ret = redact_add_date(r, date);
            if (ret == 0)
                ret = redact_add_forms(r, copy, n);
        } else {
            ret = redact_add_date(r, copy);
        }
        free(copy);
        return ret;
    }
    /* The pieces between C-FIND wildcards. */
    for (size_t start = 0, i = 0; i <= n && ret == 0; i++) {
        if (i < n && s[i] != '*' && s[i] != '?')
            continue;
        if (i > start) {
            if (strcmp(vr, "PN") == 0) {
                copy = strndup(s + start, i - start);
                if (copy == NULL) {
                    r->failed = true;
                    return -ENOMEM;
                }
                ret = redact_add_person_name(r, copy);
                explicit_bzero(copy, i - start);
                free(copy);
            } else {
                ret = redact_add_forms(r, s + start, i - start);
            }
        }
        start = i + 1;
    }
    return ret;
}

int redact_add_value(struct redact *r, const char *vr, const char *value)
{
    const char *p = value;
    int ret = 0;

    if (r == NULL)
        return -EINVAL;
    if (value == NULL || vr == NULL || redact_vr_skipped(vr))
        return 0;
    while (ret == 0) {
        size_t n = strcspn(p, "\\");
        ret = redact_add_single(r, vr, p, n);
        if (p[n] == '\0')
            break;
        p += n + 1;
    }
    return ret;
}

int redact_add_dataset(struct redact *r, const struct ds *ds)
{
    int ret = 0;

    if (r == NULL)
        return -EINVAL;
    if (ds == NULL)
        return 0;
    for (size_t i = 0; i < ds->count && ret == 0; i++) {
        const struct ds_attr *attr = &ds->attrs[i];
        if (strcmp(attr->vr, "SQ") == 0) {
            for (size_t k = 0; k < attr->item_count && ret == 0; k++)
                ret = redact_add_dataset(r, attr->items[k]);
        } else {
            ret = redact_add_value(r, attr->vr, attr->value);
        }
    }
    return ret;
}

int redact_merge(struct redact *dst, const struct redact *src)
{
    int ret = 0;

    if (dst == NULL)
        return -EINVAL;
    if (src == NULL)
        return 0;
    if (src->failed)
        dst->failed = true;
    for (size_t i = 0; i < src->count && ret == 0; i++)
        ret = redact_put(dst, src->values[i].text, src->values[i].len);
    return ret;
}

/* True if an escape (%XX, \uXXXX, \n, \r, \t) ends just before @i. */
static bool redact_escape_before(const unsigned char *t, size_t i)
{
    if (i >= 3 && t[i - 3] == '%' && redact_is_hex(t[i - 2]) &&
        redact_is_hex(t[i - 1]))
        return true;
    if (i >= 6 && t[i - 6] == '\\' && t[i - 5] == 'u' &&
        redact_is_hex(t[i - 4]) && redact_is_hex(t[i - 3]) &&
        redact_is_hex(t[i - 2]) && redact_is_hex(t[i - 1]))
        return true;
    return i >= 2 && t[i - 2] == '\\' &&
           (t[i - 1] == 'n' || t[i - 1] == 'r' || t[i - 1] == 't');
}

/* Length of the longest value of @r that matches at byte @i of @t, or 0. */
static size_t redact_match(const struct redact *r, const unsigned char *t,
                           size_t len, size_t i)
{
    unsigned b = redact_fold_ascii(t[i]);

    for (size_t k = r->bucket[b]; k < r->bucket[b + 1]; k++) {
        const struct redact_value *v = &r->values[k];
        const unsigned char *vt = (const unsigned char *)v->text;

        if (v->len > len - i || !redact_equal(t + i, vt, v->len))
            continue;
        if (v->len < REDACT_ANYWHERE_MIN) {
            if (redact_is_alnum(vt[0]) && i > 0 && redact_is_alnum(t[i - 1]) &&
                !redact_escape_before(t, i))
                continue;
            if (redact_is_alnum(vt[v->len - 1]) && i + v->len < len &&
                redact_is_alnum(t[i + v->len]))
                continue;
        }
        return v->len;
    }
    return 0;
}

/* Appends @n bytes to @out if they fit into @cap (the cut) and the
 * buffer; returns false when they do not. */
static bool redact_emit(char *out, size_t out_size, size_t *o, size_t cap,
                        const char *s, size_t n)
{
    if (*o + n > cap || *o + n + 1 > out_size)
        return false;
    memcpy(out + *o, s, n);
    *o += n;
    return true;
}

/* The common loop of redact_text() and redact_clean(). */
static size_t redact_copy(const struct redact *r, const char *text, size_t len,
                          size_t max, char *out, size_t out_size)
{
    const unsigned char *t = (const unsigned char *)text;
    size_t cap = max;
    size_t o = 0;
    size_t i = 0;
    bool cut = false;

    if (out_size == 0)
        return 0;
    /* Room for "..." after the cut. */
    if (cap + 4 > out_size)
        cap = out_size > 4 ? out_size - 4 : 0;
    while (i < len && !cut) {
        unsigned char c = t[i];
        uint32_t cp;
        size_t m;
        size_t n;

        if (i >= REDACT_SCAN_MAX) {
            cut = true;
            break;
        }
        m = r != NULL ? redact_match(r, t, len, i) : 0;

        if (m > 0) {
            cut = !redact_emit(out, out_size, &o, cap, REDACT_MARK,
                               sizeof(REDACT_MARK) - 1);
            i += m;
            continue;
        }
        if (c < 0x20 || c == 0x7F || c == ' ') {
            if (o > 0 && out[o - 1] != ' ')
                cut = !redact_emit(out, out_size, &o, cap, " ", 1);
            i++;
            continue;
        }
        if (c == '"') {
            cut = !redact_emit(out, out_size, &o, cap, "'", 1);
            i++;
            continue;
        }
        n = redact_utf8(t + i, len - i, &cp);
        if (n == 0) {
            cut = !redact_emit(out, out_size, &o, cap, "?", 1);
            i++;
            continue;
        }
        cut = !redact_emit(out, out_size, &o, cap, text + i, n);
        i += n;
    }
    while (o > 0 && out[o - 1] == ' ')
        o--;
    if (cut && o + 4 <= out_size) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return o;
}

size_t redact_text(const struct redact *r, const char *text, size_t len,
                   size_t max, char *out, size_t out_size)
{
    if (r == NULL || r->failed)
        return redact_copy(NULL, REDACT_WITHHELD, sizeof(REDACT_WITHHELD) - 1,
                           max, out, out_size);
    return redact_copy(r, text != NULL ? text : "", text != NULL ? len : 0, max,
                       out, out_size);
}

size_t redact_clean(const char *text, size_t len, size_t max, char *out,
                    size_t out_size)
{
    return redact_copy(NULL, text != NULL ? text : "", text != NULL ? len : 0,
                       max, out, out_size);
}
