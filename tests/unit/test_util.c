/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_util - UID and AE title validation, trimming, IPv4 networks, log
 * level names, the error formatter.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/util.h"
#include "tap.h"

static void test_uids(void)
{
    CHECK(util_uid_valid("1.2.840.10008.1.1"));
    CHECK(util_uid_valid("2.25.242422315187102122747475212045372960498"));
    CHECK(util_uid_valid("0.1"));
    CHECK(!util_uid_valid(""));
    CHECK(!util_uid_valid("1..2"));
    CHECK(!util_uid_valid(".1.2"));
    CHECK(!util_uid_valid("1.2."));
    CHECK(!util_uid_valid("1.02"));
    CHECK(!util_uid_valid("1.2a"));
    CHECK(!util_uid_valid("1.2 "));
    CHECK(!util_uid_valid("../etc/passwd"));
    /* 64 characters is the limit. */
    CHECK(util_uid_valid(
        "1.23456789012345678901234567890123456789012345678901234567890123"));
    CHECK(!util_uid_valid(
        "1.234567890123456789012345678901234567890123456789012345678901234"));
}

static void test_ae_titles(void)
{
    char buf[17];

    CHECK(util_ae_title_valid("STOWBRIDGE"));
    CHECK(util_ae_title_valid("  CT_1  "));
    CHECK(util_ae_title_valid("1234567890123456"));
    CHECK(!util_ae_title_valid("12345678901234567"));
    CHECK(!util_ae_title_valid(""));
    CHECK(!util_ae_title_valid("    "));
    CHECK(!util_ae_title_valid("A\\B"));
    CHECK(!util_ae_title_valid("A\nB"));
    CHECK(!util_ae_title_valid("\xc3\xa9T"));

    CHECK(util_trim_copy(buf, sizeof(buf), "  AE  ") == 0);
    CHECK(strcmp(buf, "AE") == 0);
    CHECK(util_trim_copy(buf, 3, "ABCD") == -ENAMETOOLONG);
    CHECK(buf[0] == '\0');
}

static void test_networks(void)
{
    struct util_ipv4_net net;

    CHECK(util_ipv4_net_parse("10.0.0.0/8", &net) == 0);
    CHECK(util_ipv4_net_contains(&net, "10.200.3.4"));
    CHECK(!util_ipv4_net_contains(&net, "11.0.0.1"));
    CHECK(!util_ipv4_net_contains(&net, "not-an-ip"));

    CHECK(util_ipv4_net_parse("192.0.2.7", &net) == 0);
    CHECK(util_ipv4_net_contains(&net, "192.0.2.7"));
    CHECK(!util_ipv4_net_contains(&net, "192.0.2.8"));

    /* Host bits beyond the prefix are cleared. */
    CHECK(util_ipv4_net_parse("192.168.1.77/24", &net) == 0);
    CHECK(util_ipv4_net_contains(&net, "192.168.1.1"));

    CHECK(util_ipv4_net_parse("0.0.0.0/0", &net) == 0);
    CHECK(util_ipv4_net_contains(&net, "203.0.113.9"));

    CHECK(util_ipv4_net_parse("10.0.0.0/33", &net) == -EINVAL);
    CHECK(util_ipv4_net_parse("10.0.0.0/", &net) == -EINVAL);
    CHECK(util_ipv4_net_parse("10.0.0.0/8x", &net) == -EINVAL);
    CHECK(util_ipv4_net_parse("10.0.0/8", &net) == -EINVAL);
    CHECK(util_ipv4_net_parse("pacs.example.org", &net) == -EINVAL);
    CHECK(util_ipv4_net_parse("::1", &net) == -EINVAL);
    CHECK(util_ipv4_net_parse("", &net) == -EINVAL);
}

static void test_log_levels(void)
{
    enum log_level level;

    CHECK(log_level_parse("debug", &level) == 0 && level == LOG_LEVEL_DEBUG);
    CHECK(log_level_parse("error", &level) == 0 && level == LOG_LEVEL_ERR);
    CHECK(log_level_parse("verbose", &level) == -EINVAL);
    CHECK(strcmp(log_level_name(LOG_LEVEL_WARNING), "warning") == 0);
    log_set_level(LOG_LEVEL_NOTICE);
    CHECK(log_enabled(LOG_LEVEL_ERR));
    CHECK(!log_enabled(LOG_LEVEL_INFO));
    log_set_level(LOG_LEVEL_INFO);
}

static void test_random(void)
{
    unsigned char a[16];
    unsigned char b[16];

    CHECK(util_random_bytes(a, sizeof(a)) == 0);
    CHECK(util_random_bytes(b, sizeof(b)) == 0);
    CHECK(memcmp(a, b, sizeof(a)) != 0);
}

static void test_utf8(void)
{
    static const struct {
        const char *bytes;
        size_t len;
    } cases[] = {
        { "A", 1 },
        { "\xc3\xbc", 2 },         /* u-umlaut */
        { "\xe2\x82\xac", 3 },     /* euro sign */
        { "\xf0\x9f\x98\x80", 4 }, /* U+1F600 */
        { "\xc0\x80", 0 },         /* overlong NUL */
        { "\xe0\x80\xaf", 0 },     /* overlong '/' */
        { "\xed\xa0\x80", 0 },     /* a surrogate */
        { "\xf4\x90\x80\x80", 0 }, /* past U+10FFFF */
        { "\xc3", 0 },             /* cut by the NUL */
        { "\x80", 0 },             /* a continuation byte alone */
        { "\xff", 0 },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK_MSG(util_utf8_sequence((const unsigned char *)cases[i].bytes) ==
                      cases[i].len,
                  "case %zu", i);
}

/* util_err: formats, cuts to fit with a NUL, and writes nothing when
 * there is no room or no buffer. */
static void test_err(void)
{
    char err[8];

    util_err(err, sizeof(err), "%s %d", "code", 42);
    CHECK(strcmp(err, "code 42") == 0);
    util_err(err, sizeof(err), "%s", "longer than eight");
    CHECK(strcmp(err, "longer ") == 0);
    memcpy(err, "kept", 5);
    util_err(err, 0, "%s", "nothing");
    CHECK(strcmp(err, "kept") == 0);
    util_err(NULL, 16, "%s", "nowhere"); /* must not crash */
    util_err(err, 1, "%s", "x");
    CHECK(err[0] == '\0');
}

/* util_deadline_ms: later than now by the delay, nanoseconds in range. */
static void test_deadline(void)
{
    struct timespec before;
    struct timespec d;
    int64_t diff_ms;

    (void)clock_gettime(CLOCK_MONOTONIC, &before);
    util_deadline_ms(CLOCK_MONOTONIC, 1999, &d);
    CHECK(d.tv_nsec >= 0 && d.tv_nsec < 1000000000L);
    diff_ms = (int64_t)(d.tv_sec - before.tv_sec) * 1000 +
              (d.tv_nsec - before.tv_nsec) / 1000000;
    CHECK(diff_ms >= 1999 && diff_ms < 1999 + 1000);
    util_deadline_ms(CLOCK_REALTIME, 0, &d);
    CHECK(d.tv_nsec >= 0 && d.tv_nsec < 1000000000L);
    CHECK(d.tv_sec >= (time_t)(util_now_realtime_us() / 1000000u) - 1);
}

int main(void)
{
    test_uids();
    test_ae_titles();
    test_networks();
    test_log_levels();
    test_random();
    test_utf8();
    test_err();
    test_deadline();
    return tap_done();
}
