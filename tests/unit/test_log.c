/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_log - the one logging function: every "%s" escaped (newlines,
 * control characters, quotes, invalid UTF-8; spaces and "=" outside
 * quotes), other conversions as printf writes them, lines cut at
 * LOG_LINE_MAX, one write(2) per line with its priority prefix.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "base/log.h"
#include "tap.h"

static char formatted[LOG_LINE_MAX + 64];

static const char *fmt(const char *format, ...)
    __attribute__((format(printf, 1, 2)));

static const char *fmt(const char *format, ...)
{
    va_list ap;

    va_start(ap, format);
    (void)log_vformat(formatted, sizeof(formatted), format, ap);
    va_end(ap);
    return formatted;
}

#define CHECK_FMT(expected, ...)                                             \
    do {                                                                     \
        const char *got_ = fmt(__VA_ARGS__);                                 \
        CHECK_MSG(strcmp(got_, (expected)) == 0, "got [%s] want [%s]", got_, \
                  (expected));                                               \
    } while (0)

static void test_plain_conversions(void)
{
    CHECK_FMT("a=1 b=-2 c=3 d=4", "a=%d b=%ld c=%llu d=%zu", 1, -2L, 3ULL,
              (size_t)4);
    CHECK_FMT("status=A700 x=0x1f pct=50%", "status=%04X x=%#x pct=%d%%",
              0xA700u, 31u, 50);
    CHECK_FMT("[   7] [7   ] [007]", "[%4d] [%-4d] [%03d]", 7, 7, 7);
    CHECK_FMT("[  42]", "[%*d]", 4, 42);
    CHECK_FMT("t=1.50", "t=%.2f", 1.5);
    CHECK_FMT("c=A", "c=%c", 'A');
    CHECK_FMT("c=\\x0a", "c=%c", '\n');
    CHECK_FMT("n=-5 u=65535", "n=%hd u=%hu", (short)-5, (unsigned short)65535);
    CHECK_FMT("j=9 t=3", "j=%jd t=%td", (intmax_t)9, (ptrdiff_t)3);
}

/* The same without the format check, for formats the compiler would
 * refuse: what the formatter does with them is the test. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
static const char *fmt_unchecked(const char *format, ...)
{
    va_list ap;

    va_start(ap, format);
    (void)log_vformat(formatted, sizeof(formatted), format, ap);
    va_end(ap);
    return formatted;
}
#pragma GCC diagnostic pop

/* Every length of the integer conversions, long double, pointers, a
 * negative '*' width and precision; %n and unknown conversions end the
 * line (the types of the arguments after them are unknown). */
static void test_lengths_and_bad_formats(void)
{
    int written = 0;

    CHECK_FMT("l=-1 ll=-2 z=-3 j=-4 t=-5", "l=%li ll=%lli z=%zd j=%ji t=%ti",
              -1L, -2LL, (ssize_t)-3, (intmax_t)-4, (ptrdiff_t)-5);
    CHECK_FMT("u=1 o=10 x=ff X=FF z=5 j=6 t=7",
              "u=%u o=%llo x=%lx X=%zX z=%zu j=%ju t=%tu", 1u, 8ULL, 255UL,
              (size_t)255, (size_t)5, (uintmax_t)6, (ptrdiff_t)7);
    CHECK_FMT("L=2.50 e=1.0e+00 g=0.5", "L=%.2Lf e=%.1e g=%g", (long double)2.5,
              1.0, 0.5);
    CHECK_FMT("p=0x10", "p=%p", (void *)0x10);
    CHECK_FMT("[42  ] [ab]", "[%*d] [%.*s]", -4, 42, -1, "ab");
    CHECK_MSG(strcmp(fmt_unchecked("a=%d %n b=%s", 1, &written, "x"),
                     "a=1 <bad format>...") == 0,
              "got [%s]", formatted);
    CHECK(written == 0);
    CHECK_MSG(strcmp(fmt_unchecked("a=%y b=%d", 2), "a=<bad format>...") == 0,
              "got [%s]", formatted);
}

static void test_strings_in_quotes(void)
{
    /* Plain text is unchanged, spaces and '=' included. */
    CHECK_FMT("reason=\"a b=c\"", "reason=\"%s\"", "a b=c");
    /* A DCMTK text with a newline stays on one line. */
    CHECK_FMT("reason=\"Bad presentation context ID\\nIllegal PDU Length\"",
              "reason=\"%s\"",
              "Bad presentation context ID\nIllegal PDU "
              "Length");
    CHECK_FMT("reason=\"a\\r\\tb\\x01\\x1b[31m\\x7f\"", "reason=\"%s\"",
              "a\r\tb\x01\x1b[31m\x7f");
    /* Quotes and backslashes cannot close the value early. */
    CHECK_FMT("reason=\"say \\\"hi\\\" \\\\ done\"", "reason=\"%s\"",
              "say \"hi\" \\ done");
    /* Valid UTF-8 is kept; invalid bytes are shown as hex. */
    CHECK_FMT("name=\"\xe7\x8e\x8b^\xe5\xb0\x8f\xe6\x9d\xb1\"", "name=\"%s\"",
              "\xe7\x8e\x8b^\xe5\xb0\x8f\xe6\x9d\xb1");
    CHECK_FMT("x=\"\\xff\\xc3(\\xed\\xa0\\x80\\xc0\\xaf\\xf4\\x90\\x80\\x80\"",
              "x=\"%s\"", "\xff\xc3(\xed\xa0\x80\xc0\xaf\xf4\x90\x80\x80");
    /* A sequence cut at the end of the string is invalid too. */
    CHECK_FMT("x=\"ab\\xe7\\x8e\"", "x=\"%s\"", "ab\xe7\x8e");
    CHECK_FMT("x=\"\xf0\x9f\x98\x80\"", "x=\"%s\"", "\xf0\x9f\x98\x80");
    {
        const char *volatile none = NULL;
        CHECK_FMT("x=\"(null)\"", "x=\"%s\"", none);
    }
}

static void test_strings_unquoted(void)
{
    /* The forged event of the issue: an AE title with a quote. */
    CHECK_FMT("event=refused from=A\\\"\\x20event\\x3dfailed@127.0.0.1",
              "event=refused from=%s@%s", "A\" event=failed", "127.0.0.1");
    CHECK_FMT("from=CT1@10.1.2.3 sop=1.2.3", "from=%s@%s sop=%s", "CT1",
              "10.1.2.3", "1.2.3");
    /* After a quoted value, the context is unquoted again. */
    CHECK_FMT("a=\"x y\" b=x\\x20y", "a=\"%s\" b=%s", "x y", "x y");
    CHECK_FMT("a=x\\ny", "a=%s", "x\ny");
}

static void test_precision_and_width(void)
{
    CHECK_FMT("s=\"abc\"", "s=\"%.3s\"", "abcdef");
    CHECK_FMT("s=\"ab\"", "s=\"%.*s\"", 2, "abcdef");
    /* Precision counts input bytes; escaping may make the output longer. */
    CHECK_FMT("s=\"\\n\\n\"", "s=\"%.2s\"", "\n\n\n");
    /* A precision that cuts a UTF-8 sequence shows the rest as hex. */
    CHECK_FMT("s=\"\\xe7\\x8e\"", "s=\"%.2s\"", "\xe7\x8e\x8b");
    CHECK_FMT("[  ab] [ab  ]", "[%4s] [%-4s]", "ab", "ab");
}

static void test_errno_and_m(void)
{
    errno = ENOENT;
    const char *got = fmt("reason=\"%m\"");
    CHECK_MSG(strstr(got, "No such file") != NULL, "got [%s]", got);
    errno = EIO;
    (void)fmt("x=%d", 1);
    CHECK(errno == EIO);
}

static void test_truncation(void)
{
    char big[LOG_LINE_MAX * 2];
    size_t n;

    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    const char *got = fmt("reason=\"%s\"", big);
    n = strlen(got);
    CHECK(n < sizeof(formatted));
    CHECK(n >= 3 && strcmp(got + n - 3, "...") == 0);
}

/* log_vformat() into a tiny buffer, through a varargs wrapper. */
static size_t fmt_into(char *buf, size_t len, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

static size_t fmt_into(char *buf, size_t len, const char *format, ...)
{
    va_list ap;
    size_t n;

    va_start(ap, format);
    n = log_vformat(buf, len, format, ap);
    va_end(ap);
    return n;
}

static void test_small_buffers(void)
{
    char buf[16];
    size_t n;

    /* 16 bytes: 12 of content, "..." and the NUL. */
    n = fmt_into(buf, sizeof(buf), "x=\"%s\"", "\n\n\n\n\n\n\n\n");
    CHECK_MSG(strcmp(buf, "x=\"\\n\\n\\n\\n...") == 0, "got [%s]", buf);
    CHECK(n == strlen(buf));
    /* A UTF-8 character is never cut either. */
    n = fmt_into(buf, sizeof(buf), "x=\"%s\"",
                 "ab\xe7\x8e\x8b\xe7\x8e\x8b\xe7\x8e\x8b");
    CHECK_MSG(strcmp(buf, "x=\"ab\xe7\x8e\x8b\xe7\x8e\x8b...") == 0, "got [%s]",
              buf);
    n = fmt_into(buf, sizeof(buf), "%s", "short");
    CHECK(strcmp(buf, "short") == 0 && n == 5);
    n = fmt_into(buf, 3, "%s", "abc");
    CHECK(n == 0 && buf[0] == '\0');
    n = fmt_into(buf, 0, "%s", "abc");
    CHECK(n == 0);
}

/* log_msg() writes "<N>line\n" with one write(2) on stderr. */
static void test_log_msg_line(void)
{
    char path[] = "/tmp/test_log.XXXXXX";
    int fd = mkstemp(path);
    int saved = dup(STDERR_FILENO);
    char buf[LOG_LINE_MAX * 2];
    ssize_t n;

    CHECK(fd >= 0 && saved >= 0);
    if (fd < 0 || saved < 0)
        return;
    (void)dup2(fd, STDERR_FILENO);
    log_set_level(LOG_LEVEL_INFO);
    log_msg(LOG_LEVEL_WARNING, "event=refused from=%s reason=\"%s\"",
            "A\" event=failed", "line one\nline two");
    log_msg(LOG_LEVEL_DEBUG, "event=hidden");
    (void)dup2(saved, STDERR_FILENO);
    (void)close(saved);

    n = pread(fd, buf, sizeof(buf) - 1, 0);
    (void)close(fd);
    (void)unlink(path);
    CHECK(n > 0);
    if (n <= 0)
        return;
    buf[n] = '\0';
    CHECK_MSG(strcmp(buf, "<4>event=refused from=A\\\"\\x20event\\x3dfailed "
                          "reason=\"line one\\nline two\"\n") == 0,
              "got [%s]", buf);
    /* One event, one line: exactly one newline, at the end. */
    CHECK(strchr(buf, '\n') == buf + n - 1);

    /* A very long line is cut to LOG_LINE_MAX with "..." before "\n". */
    memcpy(path, "/tmp/test_log.XXXXXX", sizeof(path));
    fd = mkstemp(path);
    saved = dup(STDERR_FILENO);
    CHECK(fd >= 0 && saved >= 0);
    if (fd < 0 || saved < 0)
        return;
    char *big = malloc(LOG_LINE_MAX * 3);
    CHECK(big != NULL);
    if (big == NULL)
        return;
    memset(big, '"', LOG_LINE_MAX * 3 - 1);
    big[LOG_LINE_MAX * 3 - 1] = '\0';
    (void)dup2(fd, STDERR_FILENO);
    log_msg(LOG_LEVEL_ERR, "reason=\"%s\"", big);
    (void)dup2(saved, STDERR_FILENO);
    (void)close(saved);
    free(big);
    n = pread(fd, buf, sizeof(buf) - 1, 0);
    (void)close(fd);
    (void)unlink(path);
    CHECK(n > 0 && (size_t)n <= LOG_LINE_MAX + 1);
    if (n > 4) {
        buf[n] = '\0';
        CHECK(strcmp(buf + n - 4, "...\n") == 0);
        CHECK(strncmp(buf, "<3>reason=\"\\\"", 13) == 0);
    }
}

struct observed {
    int calls;
    enum log_level level;
    size_t len;
    char line[LOG_LINE_MAX + 8];
};

static void observe(void *ctx, enum log_level level, const char *line,
                    size_t len)
{
    struct observed *o = ctx;

    o->calls++;
    o->level = level;
    o->len = len;
    /* The line must be NUL-terminated at @len (the monitor reads it as a
     * string). */
    snprintf(o->line, sizeof(o->line), "%s", line);
}

/* The observer sees each written line exactly as written, and nothing
 * below the level; after log_set_observer(NULL) nothing. */
static void test_observer(void)
{
    struct observed o;
    int devnull = open("/dev/null", O_WRONLY);
    int saved = dup(STDERR_FILENO);

    memset(&o, 0, sizeof(o));
    CHECK(devnull >= 0 && saved >= 0);
    if (devnull < 0 || saved < 0)
        return;
    (void)dup2(devnull, STDERR_FILENO);
    log_set_level(LOG_LEVEL_NOTICE);
    log_set_observer(observe, &o);
    log_msg(LOG_LEVEL_WARNING, "event=x reason=\"%s\"", "a\nb");
    log_msg(LOG_LEVEL_DEBUG, "event=hidden");
    CHECK(o.calls == 1);
    CHECK(o.level == LOG_LEVEL_WARNING);
    CHECK_MSG(strcmp(o.line, "<4>event=x reason=\"a\\nb\"\n") == 0, "got [%s]",
              o.line);
    CHECK(o.len == strlen(o.line));
    log_set_observer(NULL, NULL);
    log_msg(LOG_LEVEL_ERR, "event=after");
    CHECK(o.calls == 1);
    (void)dup2(saved, STDERR_FILENO);
    (void)close(saved);
    (void)close(devnull);
    log_set_level(LOG_LEVEL_INFO);
}

int main(void)
{
    test_plain_conversions();
    test_lengths_and_bad_formats();
    test_strings_in_quotes();
    test_strings_unquoted();
    test_precision_and_width();
    test_errno_and_m();
    test_truncation();
    test_small_buffers();
    test_log_msg_line();
    test_observer();
    return tap_done();
}
