/* SPDX-License-Identifier: Apache-2.0 */
/*
 * log - see log.h.
 */
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static atomic_int log_max_level = LOG_LEVEL_INFO;

static const struct {
    const char *name;
    enum log_level level;
} log_level_names[] = {
    { "err", LOG_LEVEL_ERR },         { "error", LOG_LEVEL_ERR },
    { "warning", LOG_LEVEL_WARNING }, { "notice", LOG_LEVEL_NOTICE },
    { "info", LOG_LEVEL_INFO },       { "debug", LOG_LEVEL_DEBUG },
};

static _Atomic(log_observer_fn) log_observer;
static _Atomic(void *) log_observer_ctx;

void log_set_observer(log_observer_fn fn, void *ctx)
{
    atomic_store(&log_observer, NULL);
    atomic_store(&log_observer_ctx, ctx);
    atomic_store(&log_observer, fn);
}

void log_set_level(enum log_level level)
{
    atomic_store(&log_max_level, (int)level);
}

bool log_enabled(enum log_level level)
{
    return (int)level <= atomic_load(&log_max_level);
}

int log_level_parse(const char *name, enum log_level *ret_level)
{
    for (size_t i = 0; i < sizeof(log_level_names) / sizeof(log_level_names[0]);
         i++) {
        if (strcmp(name, log_level_names[i].name) == 0) {
            *ret_level = log_level_names[i].level;
            return 0;
        }
    }
    return -EINVAL;
}

const char *log_level_name(enum log_level level)
{
    for (size_t i = 0; i < sizeof(log_level_names) / sizeof(log_level_names[0]);
         i++) {
        if (log_level_names[i].level == level)
            return log_level_names[i].name;
    }
    return "info";
}

/* ------------------------------------------------------------------ */
/* The escaping formatter                                              */
/* ------------------------------------------------------------------ */

/* A bounded output: @cap bytes for content, 3 more kept for "...". */
struct log_out {
    char *buf;
    size_t cap;
    size_t pos;
    bool truncated;
};

/* Appends @n bytes as one unit: all of them, or none and truncated. */
static void out_unit(struct log_out *o, const char *p, size_t n)
{
    if (o->truncated)
        return;
    if (n > o->cap - o->pos) {
        o->truncated = true;
        return;
    }
    memcpy(o->buf + o->pos, p, n);
    o->pos += n;
}

static void out_hex(struct log_out *o, unsigned char c)
{
    static const char digits[] = "0123456789abcdef";
    char esc[4] = { '\\', 'x', digits[c >> 4], digits[c & 0xF] };

    out_unit(o, esc, sizeof(esc));
}

/*
 * Length of the well-formed UTF-8 sequence (RFC 3629: no overlong forms,
 * no surrogates, nothing above U+10FFFF) at @p, which has @avail bytes;
 * 0 if there is none.
 */
static size_t utf8_sequence(const unsigned char *p, size_t avail)
{
    unsigned char c = p[0];
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    size_t need;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        need = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        need = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        need = 4;
    else
        return 0;
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    if (avail < need || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return need;
}

/* Appends at most @max bytes of @s, escaped as log.h describes. */
static void out_escaped(struct log_out *o, const char *s, size_t max,
                        bool quoted)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    while (i < max && p[i] != '\0' && !o->truncated) {
        unsigned char c = p[i];
        size_t avail = strnlen((const char *)p + i, max - i);
        size_t n;

        switch (c) {
        case '\\':
            out_unit(o, "\\\\", 2);
            i++;
            continue;
        case '"':
            out_unit(o, "\\\"", 2);
            i++;
            continue;
        case '\n':
            out_unit(o, "\\n", 2);
            i++;
            continue;
        case '\r':
            out_unit(o, "\\r", 2);
            i++;
            continue;
        case '\t':
            out_unit(o, "\\t", 2);
            i++;
            continue;
        default:
            break;
        }
        if (c < 0x20 || c == 0x7F || (!quoted && (c == ' ' || c == '='))) {
            out_hex(o, c);
            i++;
            continue;
        }
        n = utf8_sequence(p + i, avail);
        if (n == 0) {
            out_hex(o, c);
            i++;
            continue;
        }
        out_unit(o, (const char *)p + i, n);
        i += n;
    }
}

/* A conversion specification, parsed. */
struct log_spec {
    char flags[8];
    int width;      /* -1: none */
    int precision;  /* -1: none */
    char length[3]; /* "", "hh", "h", "l", "ll", "z", "j", "t", "L" */
    char conversion;
};

/* Parses the specification after '%' at @p into @spec; returns the
 * character after it. Widths and precisions given as '*' are left as -2
 * for the caller to take from the arguments. */
static const char *parse_spec(const char *p, struct log_spec *spec)
{
    size_t nf = 0;

    memset(spec, 0, sizeof(*spec));
    spec->width = -1;
    spec->precision = -1;
    while (*p != '\0' && strchr("-+ #0", *p) != NULL) {
        if (nf + 1 < sizeof(spec->flags))
            spec->flags[nf++] = *p;
        p++;
    }
    if (*p == '*') {
        spec->width = -2;
        p++;
    } else if (*p >= '0' && *p <= '9') {
        spec->width = 0;
        while (*p >= '0' && *p <= '9') {
            if (spec->width < 10000)
                spec->width = spec->width * 10 + (*p - '0');
            p++;
        }
    }
    if (*p == '.') {
        p++;
        if (*p == '*') {
            spec->precision = -2;
            p++;
        } else {
            spec->precision = 0;
            while (*p >= '0' && *p <= '9') {
                if (spec->precision < 10000)
                    spec->precision = spec->precision * 10 + (*p - '0');
                p++;
            }
        }
    }
    if ((p[0] == 'h' && p[1] == 'h') || (p[0] == 'l' && p[1] == 'l')) {
        memcpy(spec->length, p, 2);
        p += 2;
    } else if (*p != '\0' && strchr("hlzjtL", *p) != NULL) {
        spec->length[0] = *p++;
    }
    spec->conversion = *p;
    return *p != '\0' ? p + 1 : p;
}

/* The printf format for @spec with width and precision resolved. */
static void spec_format(const struct log_spec *spec, char *fmt, size_t len)
{
    char width[16] = "";
    char precision[16] = "";

    if (spec->width >= 0)
        snprintf(width, sizeof(width), "%d", spec->width);
    if (spec->precision >= 0)
        snprintf(precision, sizeof(precision), ".%d", spec->precision);
    snprintf(fmt, len, "%%%s%s%s%s%c", spec->flags, width, precision,
             spec->length, spec->conversion);
}

/* Appends @n bytes of plain ASCII produced by our own conversion. */
static void out_plain(struct log_out *o, const char *p, int n)
{
    for (int i = 0; i < n && !o->truncated; i++)
        out_unit(o, p + i, 1);
}

/* Takes the widths and precisions given as '*' from the arguments, as
 * printf does: a negative width is the '-' flag, a negative precision
 * none. Widths are capped at 10000. */
static void spec_take_stars(struct log_spec *spec, va_list *ap)
{
    if (spec->width == -2) {
        spec->width = va_arg(*ap, int);
        if (spec->width < 0) {
            size_t nf = strlen(spec->flags);
            if (nf + 1 < sizeof(spec->flags))
                spec->flags[nf] = '-';
            spec->width = spec->width == INT_MIN ? INT_MAX : -spec->width;
        }
        if (spec->width > 10000)
            spec->width = 10000;
    }
    if (spec->precision == -2) {
        spec->precision = va_arg(*ap, int);
        if (spec->precision < 0)
            spec->precision = -1;
    }
}

/* A %s: escaped (see out_escaped()), padded to the width by what it
 * shows. */
static void out_string(struct log_out *o, const struct log_spec *spec,
                       const char *s, bool quoted)
{
    size_t max = spec->precision >= 0 ? (size_t)spec->precision : (size_t)-1;
    size_t start = o->pos;

    if (s == NULL)
        s = "(null)";
    if (spec->width > 0 && strchr(spec->flags, '-') == NULL) {
        /* Right-aligned: pad by the unescaped length. */
        size_t raw = strnlen(s, max);
        for (size_t k = raw; k < (size_t)spec->width; k++)
            out_unit(o, " ", 1);
    }
    out_escaped(o, s, max, quoted);
    for (size_t k = o->pos - start; spec->width > 0 && k < (size_t)spec->width;
         k++)
        out_unit(o, " ", 1);
}

/* The numeric conversions are handed to snprintf() with a specification
 * rebuilt by spec_format() from what parse_spec() accepted (flags, width,
 * precision, a length modifier and one known conversion), never with text
 * from outside: a non-literal format is safe here. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"

/* A signed integer conversion (d, i) of the argument's length. */
static int format_signed(char *tmp, size_t len, const char *f,
                         const struct log_spec *spec, va_list *ap)
{
    const char *l = spec->length;

    if (strcmp(l, "l") == 0)
        return snprintf(tmp, len, f, va_arg(*ap, long));
    if (strcmp(l, "ll") == 0)
        return snprintf(tmp, len, f, va_arg(*ap, long long));
    if (strcmp(l, "z") == 0)
        return snprintf(tmp, len, f, va_arg(*ap, ssize_t));
    if (strcmp(l, "j") == 0)
        return snprintf(tmp, len, f, va_arg(*ap, intmax_t));
    if (strcmp(l, "t") == 0)
        return snprintf(tmp, len, f, va_arg(*ap, ptrdiff_t));
    return snprintf(tmp, len, f, va_arg(*ap, int));
}

/* An unsigned integer conversion (u, o, x, X) of the argument's length. */
static int format_unsigned(char *tmp, size_t len, const char *f,
                           const struct log_spec *spec, va_list *ap)
{
    const char *l = spec->length;

    if (strcmp(l, "l") == 0)
        return snprintf(tmp, len, f, va_arg(*ap, unsigned long));
    if (strcmp(l, "ll") == 0)
        return snprintf(tmp, len, f, va_arg(*ap, unsigned long long));
    if (strcmp(l, "z") == 0)
        return snprintf(tmp, len, f, va_arg(*ap, size_t));
    if (strcmp(l, "j") == 0)
        return snprintf(tmp, len, f, va_arg(*ap, uintmax_t));
    if (strcmp(l, "t") == 0)
        return snprintf(tmp, len, f, va_arg(*ap, ptrdiff_t));
    return snprintf(tmp, len, f, va_arg(*ap, unsigned int));
}

/*
 * One conversion @spec (its '*' arguments already taken) of the next
 * argument, written to @o; @saved_errno is what %m shows. Returns false
 * when the rest of the format must be left out (%n, or a conversion we do
 * not know: the types of the arguments after it are unknown too).
 */
static bool out_conversion(struct log_out *o, const struct log_spec *spec,
                           bool quoted, int saved_errno, va_list *ap)
{
    char spec_fmt[48];
    char tmp[512];
    int n = 0;

    spec_format(spec, spec_fmt, sizeof(spec_fmt));
    switch (spec->conversion) {
    case 's':
        out_string(o, spec, va_arg(*ap, const char *), quoted);
        return true;
    case 'd':
    case 'i':
        n = format_signed(tmp, sizeof(tmp), spec_fmt, spec, ap);
        break;
    case 'u':
    case 'o':
    case 'x':
    case 'X':
        n = format_unsigned(tmp, sizeof(tmp), spec_fmt, spec, ap);
        break;
    case 'c':
        n = snprintf(tmp, sizeof(tmp), spec_fmt, va_arg(*ap, int));
        if (n == 1 &&
            ((unsigned char)tmp[0] < 0x20 || (unsigned char)tmp[0] >= 0x7F)) {
            out_hex(o, (unsigned char)tmp[0]);
            return true;
        }
        break;
    case 'e':
    case 'E':
    case 'f':
    case 'F':
    case 'g':
    case 'G':
    case 'a':
    case 'A':
        if (strcmp(spec->length, "L") == 0)
            n = snprintf(tmp, sizeof(tmp), spec_fmt, va_arg(*ap, long double));
        else
            n = snprintf(tmp, sizeof(tmp), spec_fmt, va_arg(*ap, double));
        break;
    case 'p':
        n = snprintf(tmp, sizeof(tmp), spec_fmt, va_arg(*ap, void *));
        break;
    case 'm': {
        char ebuf[128];
        out_escaped(o, strerror_r(saved_errno, ebuf, sizeof(ebuf)), (size_t)-1,
                    quoted);
        return true;
    }
    default:
        out_unit(o, "<bad format>", 12);
        return false;
    }
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof(tmp))
        n = (int)sizeof(tmp) - 1;
    out_plain(o, tmp, n);
    return true;
}
#pragma GCC diagnostic pop

size_t log_vformat(char *buf, size_t len, const char *fmt, va_list ap)
{
    struct log_out o = { buf, 0, 0, false };
    int saved_errno = errno;
    bool quoted = false;
    va_list args;

    if (len == 0)
        return 0;
    if (len < 4) {
        buf[0] = '\0';
        return 0;
    }
    o.cap = len - 1 - 3;

    va_copy(args, ap);
    for (const char *p = fmt; *p != '\0' && !o.truncated;) {
        struct log_spec spec;

        if (*p != '%') {
            if (*p == '"')
                quoted = !quoted;
            out_unit(&o, p, 1);
            p++;
            continue;
        }
        if (p[1] == '%') {
            out_unit(&o, "%", 1);
            p += 2;
            continue;
        }
        p = parse_spec(p + 1, &spec);
        spec_take_stars(&spec, &args);
        if (!out_conversion(&o, &spec, quoted, saved_errno, &args))
            o.truncated = true;
    }
    va_end(args);
    if (o.truncated) {
        memcpy(o.buf + o.pos, "...", 3);
        o.pos += 3;
    }
    o.buf[o.pos] = '\0';
    errno = saved_errno;
    return o.pos;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    char line[LOG_LINE_MAX + 8];
    int saved_errno = errno;
    int prefix;
    size_t n;
    va_list ap;

    if (!log_enabled(level))
        return;

    prefix = snprintf(line, sizeof(line), "<%d>", (int)level);
    va_start(ap, fmt);
    n = log_vformat(line + prefix, LOG_LINE_MAX - (size_t)prefix, fmt, ap);
    va_end(ap);
    n += (size_t)prefix;
    line[n++] = '\n';

    /* One write per line; a short write to stderr is not worth retrying. */
    (void)!write(STDERR_FILENO, line, n);
    log_observer_fn observer = atomic_load(&log_observer);
    if (observer != NULL) {
        line[n] = '\0';
        observer(atomic_load(&log_observer_ctx), level, line, n);
    }
    errno = saved_errno;
}
