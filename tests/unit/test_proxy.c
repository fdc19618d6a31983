/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_proxy - the PROXY protocol parser and trusted networks (scp/proxy.h),
 * table-driven: v1 and v2 as HAProxy writes them, every prefix of each
 * (truncated headers wait for more), garbage, and broken fields.
 */
#include "scp/proxy.h"

#include <stdio.h>
#include <string.h>

#include "tap.h"

struct parse_case {
    const char *name;
    const unsigned char *bytes;
    size_t len;
    enum proxy_verdict verdict;
    size_t header_len; /* PROXY_OK */
    bool local;
    const char *src; /* PROXY_OK and !local */
    unsigned src_port;
};

#define S(text) (const unsigned char *)(text), sizeof(text) - 1

static const unsigned char v2_tcp4[] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49,
    0x54, 0x0A, 0x21, 0x11, 0x00, 0x0C, 10,   1,    2,    3,
    127,  0,    0,    1,    0x30, 0x39, 0x00, 0x68, 0x01, /* the first byte of
                                                             the connection's
                                                             own data */
};
static const unsigned char v2_tcp6_tlv[] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54,
    0x0A, 0x21, 0x21, 0x00, 0x27, 0x20, 0x01, 0x0d, 0xb8, 0,    0,
    0,    0,    0,    0,    0,    0,    0,    0,    0,    0x07, 0,
    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,
    0,    0,    0,    1,    0x04, 0xD2, 0x0A, 0xCA, 0x04, 0x00, 0x00,
};
static const unsigned char v2_local[] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51,
    0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00,
};
static const unsigned char v2_unix[] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49,
    0x54, 0x0A, 0x21, 0x31, 0x00, 0x04, 'a',  'b',  'c',  'd',
};
static const unsigned char v2_version1[] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51,
    0x55, 0x49, 0x54, 0x0A, 0x11, 0x11, 0x00, 0x0C,
};
static const unsigned char v2_command3[] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51,
    0x55, 0x49, 0x54, 0x0A, 0x23, 0x11, 0x00, 0x0C,
};
static const unsigned char v2_short_addr[] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49,
    0x54, 0x0A, 0x21, 0x11, 0x00, 0x04, 10,   1,    2,    3,
};
static const unsigned char v2_too_long[] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51,
    0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0xFF, 0xFF,
};
static const unsigned char assoc_rq[] = { 0x01, 0x00, 0x00, 0x00, 0x00, 0xCD };
static const unsigned char client_hello[] = { 0x16, 0x03, 0x01, 0x02, 0x00 };

static const struct parse_case parse_cases[] = {
    { "v1 tcp4", S("PROXY TCP4 192.0.2.7 127.0.0.1 40000 104\r\n\x01"),
      PROXY_OK, 42, false, "192.0.2.7", 40000 },
    { "v1 tcp6", S("PROXY TCP6 2001:db8::7 ::1 4000 11112\r\n"), PROXY_OK, 39,
      false, "2001:db8::7", 4000 },
    { "v1 unknown", S("PROXY UNKNOWN\r\n"), PROXY_OK, 15, true, NULL, 0 },
    { "v1 unknown with addresses",
      S("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"),
      PROXY_OK, 59, true, NULL, 0 },
    { "v1 tcp4 given an IPv6 address",
      S("PROXY TCP4 2001:db8::7 127.0.0.1 1 2\r\n"), PROXY_INVALID, 0, false,
      NULL, 0 },
    { "v1 port out of range", S("PROXY TCP4 1.2.3.4 5.6.7.8 70000 1\r\n"),
      PROXY_INVALID, 0, false, NULL, 0 },
    { "v1 port with a leading zero", S("PROXY TCP4 1.2.3.4 5.6.7.8 01 1\r\n"),
      PROXY_INVALID, 0, false, NULL, 0 },
    { "v1 missing field", S("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), PROXY_INVALID,
      0, false, NULL, 0 },
    { "v1 extra field", S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"),
      PROXY_INVALID, 0, false, NULL, 0 },
    { "v1 double space", S("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"),
      PROXY_INVALID, 0, false, NULL, 0 },
    { "v1 udp", S("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), PROXY_INVALID, 0,
      false, NULL, 0 },
    { "v1 LF without CR", S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), PROXY_INVALID,
      0, false, NULL, 0 },
    { "v1 binary garbage", S("PROXY \x01\x02\x03"), PROXY_INVALID, 0, false,
      NULL, 0 },
    { "v1 no CRLF within 107 bytes",
      S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 "
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxxxxxxxx"),
      PROXY_INVALID, 0, false, NULL, 0 },
    { "v2 tcp4", v2_tcp4, sizeof(v2_tcp4), PROXY_OK, 28, false, "10.1.2.3",
      12345 },
    { "v2 tcp6 with a TLV", v2_tcp6_tlv, sizeof(v2_tcp6_tlv), PROXY_OK, 55,
      false, "2001:db8::7", 1234 },
    { "v2 local", v2_local, sizeof(v2_local), PROXY_OK, 16, true, NULL, 0 },
    { "v2 unix family taken as local", v2_unix, sizeof(v2_unix), PROXY_OK, 20,
      true, NULL, 0 },
    { "v2 version 1", v2_version1, sizeof(v2_version1), PROXY_INVALID, 0, false,
      NULL, 0 },
    { "v2 command 3", v2_command3, sizeof(v2_command3), PROXY_INVALID, 0, false,
      NULL, 0 },
    { "v2 addresses longer than the header", v2_short_addr,
      sizeof(v2_short_addr), PROXY_INVALID, 0, false, NULL, 0 },
    { "v2 longer than the limit", v2_too_long, sizeof(v2_too_long),
      PROXY_INVALID, 0, false, NULL, 0 },
    { "an A-ASSOCIATE-RQ", assoc_rq, sizeof(assoc_rq), PROXY_NOT_PROXY, 0,
      false, NULL, 0 },
    { "a ClientHello", client_hello, sizeof(client_hello), PROXY_NOT_PROXY, 0,
      false, NULL, 0 },
    { "GET", S("GET / HTTP/1.0\r\n"), PROXY_NOT_PROXY, 0, false, NULL, 0 },
    { "PROXX", S("PROXX TCP4"), PROXY_NOT_PROXY, 0, false, NULL, 0 },
    { "nothing", (const unsigned char *)"", 0, PROXY_NEED_MORE, 0, false, NULL,
      0 },
};

static void test_parse_table(void)
{
    for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
        const struct parse_case *c = &parse_cases[i];
        struct proxy_header h;
        char why[96] = "";

        memset(&h, 0x5a, sizeof(h));
        enum proxy_verdict v =
            proxy_parse(c->bytes, c->len, &h, why, sizeof(why));
        CHECK_MSG(v == c->verdict, "%s: verdict %d, want %d (%s)", c->name,
                  (int)v, (int)c->verdict, why);
        if (v == PROXY_INVALID)
            CHECK_MSG(why[0] != '\0', "%s: a reason", c->name);
        if (v != PROXY_OK || c->verdict != PROXY_OK)
            continue;
        CHECK_MSG(h.len == c->header_len, "%s: len %zu, want %zu", c->name,
                  h.len, c->header_len);
        CHECK_MSG(h.local == c->local, "%s: local", c->name);
        if (!c->local) {
            CHECK_MSG(strcmp(h.src_text, c->src) == 0, "%s: src %s", c->name,
                      h.src_text);
            CHECK_MSG(h.src_port == c->src_port, "%s: port %u", c->name,
                      (unsigned)h.src_port);
        }
    }
}

/* Every strict prefix of a valid header waits for more bytes. */
static void test_truncated(void)
{
    for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
        const struct parse_case *c = &parse_cases[i];
        struct proxy_header h;

        if (c->verdict != PROXY_OK)
            continue;
        for (size_t n = 0; n < c->header_len; n++) {
            enum proxy_verdict v = proxy_parse(c->bytes, n, &h, NULL, 0);
            CHECK_MSG(v == PROXY_NEED_MORE, "%s cut at %zu: verdict %d",
                      c->name, n, (int)v);
        }
    }
}

/* Every single-byte corruption of a v2 header is refused or read, never
 * beyond its bytes (ASan watches the reads). */
static void test_garbage(void)
{
    unsigned char buf[sizeof(v2_tcp6_tlv)];
    unsigned long seed = 12345;

    for (int round = 0; round < 20000; round++) {
        struct proxy_header h;
        size_t len = 1 + (seed >> 8) % sizeof(buf);

        memcpy(buf, v2_tcp6_tlv, sizeof(buf));
        for (int k = 0; k < 3; k++) {
            seed = seed * 1103515245u + 12345u;
            buf[(seed >> 4) % len] = (unsigned char)(seed >> 16);
        }
        enum proxy_verdict v = proxy_parse(buf, len, &h, NULL, 0);
        CHECK(v == PROXY_OK || v == PROXY_INVALID || v == PROXY_NEED_MORE ||
              v == PROXY_NOT_PROXY);
        if (v == PROXY_OK)
            CHECK(h.len <= len);
    }
}

static void test_networks(void)
{
    struct proxy_net net;
    unsigned char a[16];
    unsigned char ip4[4] = { 10, 1, 2, 3 };

    CHECK(proxy_net_parse("10.0.0.0/8", &net) == 0);
    proxy_addr_from_ipv4(ip4, a);
    CHECK(proxy_net_contains(&net, a));
    ip4[0] = 11;
    proxy_addr_from_ipv4(ip4, a);
    CHECK(!proxy_net_contains(&net, a));
    CHECK(proxy_net_parse("127.0.0.3", &net) == 0);
    ip4[0] = 127, ip4[1] = 0, ip4[2] = 0, ip4[3] = 3;
    proxy_addr_from_ipv4(ip4, a);
    CHECK(proxy_net_contains(&net, a));
    ip4[3] = 4;
    proxy_addr_from_ipv4(ip4, a);
    CHECK(!proxy_net_contains(&net, a));
    CHECK(proxy_net_parse("10.1.2.3/20", &net) == 0); /* bits cleared */
    ip4[0] = 10, ip4[1] = 1, ip4[2] = 15, ip4[3] = 200;
    proxy_addr_from_ipv4(ip4, a);
    CHECK(proxy_net_contains(&net, a));
    CHECK(proxy_net_parse("fd00::/64", &net) == 0);
    memset(a, 0, sizeof(a));
    a[0] = 0xfd;
    a[15] = 9;
    CHECK(proxy_net_contains(&net, a));
    a[7] = 1;
    CHECK(!proxy_net_contains(&net, a));
    CHECK(proxy_net_parse("::1", &net) == 0);
    memset(a, 0, sizeof(a));
    a[15] = 1;
    CHECK(proxy_net_contains(&net, a));
    CHECK(proxy_net_parse("0.0.0.0/0", &net) == 0);
    CHECK(proxy_net_parse("::/0", &net) == 0);
    CHECK(proxy_net_contains(&net, a));
    const char *bad[] = { "",
                          "10.0.0.0/33",
                          "::1/129",
                          "10.0.0.0/",
                          "10/8",
                          "host.example",
                          "10.0.0.0/08",
                          "1.2.3.4/-1",
                          "1.2.3.4 ",
                          "/8" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_MSG(proxy_net_parse(bad[i], &net) < 0, "'%s' refused", bad[i]);
    char text[PROXY_ADDR_TEXT];
    ip4[0] = 192, ip4[1] = 0, ip4[2] = 2, ip4[3] = 7;
    proxy_addr_from_ipv4(ip4, a);
    proxy_addr_text(a, text);
    CHECK(strcmp(text, "192.0.2.7") == 0);
}

int main(void)
{
    test_parse_table();
    test_truncated();
    test_garbage();
    test_networks();
    return tap_done();
}
