/* SPDX-License-Identifier: Apache-2.0 */
/*
 * proxy - see proxy.h.
 *
 * v1 (proxy-protocol.txt 2.1): "PROXY TCP4|TCP6 src dst sport dport\r\n"
 * or "PROXY UNKNOWN ...\r\n", at most 107 bytes. Addresses are checked
 * with inet_pton for their family, ports are 0..65535 without leading
 * zeros. v2 (2.2): the 12-byte signature, version 2 with command LOCAL
 * or PROXY, family and length; TCP over IPv4 (12 address bytes) and IPv6
 * (36) are read, anything else is taken as LOCAL, and TLVs are skipped.
 */
#include "proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROXY_V1_MAX 107
#define PROXY_V2_HEAD 16

static const unsigned char proxy_v2_sig[12] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
};
static const char proxy_v1_sig[] = "PROXY ";

static void proxy_why(char *why, size_t why_len, const char *text)
{
    if (why != NULL && why_len > 0)
        (void)snprintf(why, why_len, "%s", text);
}

void proxy_addr_from_ipv4(const unsigned char ip4[4], unsigned char ret[16])
{
    memset(ret, 0, 10);
    ret[10] = 0xff;
    ret[11] = 0xff;
    memcpy(ret + 12, ip4, 4);
}

static bool proxy_is_mapped(const unsigned char addr[16])
{
    static const unsigned char prefix[12] = { 0, 0, 0, 0, 0,    0,
                                              0, 0, 0, 0, 0xff, 0xff };

    return memcmp(addr, prefix, sizeof(prefix)) == 0;
}

void proxy_addr_text(const unsigned char addr[16], char ret[PROXY_ADDR_TEXT])
{
    const char *r;

    if (proxy_is_mapped(addr))
        r = inet_ntop(AF_INET, addr + 12, ret, PROXY_ADDR_TEXT);
    else
        r = inet_ntop(AF_INET6, addr, ret, PROXY_ADDR_TEXT);
    if (r == NULL)
        (void)snprintf(ret, PROXY_ADDR_TEXT, "?");
}

/* Parses a decimal 0..@max without sign or leading zeros. */
static int proxy_parse_number(const char *text, unsigned max,
                              unsigned *ret_value)
{
    unsigned long v;
    char *end;

    if (text[0] < '0' || text[0] > '9' || (text[0] == '0' && text[1] != '\0'))
        return -EINVAL;
    errno = 0;
    v = strtoul(text, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return -EINVAL;
    *ret_value = (unsigned)v;
    return 0;
}

int proxy_net_parse(const char *text, struct proxy_net *ret_net)
{
    char host[PROXY_ADDR_TEXT + 1];
    const char *slash = strchr(text, '/');
    size_t host_len = slash != NULL ? (size_t)(slash - text) : strlen(text);
    unsigned char ip4[4];
    struct proxy_net net;
    unsigned prefix;
    bool v4;

    if (host_len == 0 || host_len >= sizeof(host))
        return -EINVAL;
    memcpy(host, text, host_len);
    host[host_len] = '\0';
    memset(&net, 0, sizeof(net));
    if (inet_pton(AF_INET, host, ip4) == 1) {
        proxy_addr_from_ipv4(ip4, net.addr);
        v4 = true;
    } else if (inet_pton(AF_INET6, host, net.addr) == 1) {
        v4 = false;
    } else {
        return -EINVAL;
    }
    prefix = v4 ? 32 : 128;
    if (slash != NULL &&
        proxy_parse_number(slash + 1, v4 ? 32 : 128, &prefix) < 0)
        return -EINVAL;
    net.prefix = v4 ? prefix + 96 : prefix;
    for (unsigned bit = net.prefix; bit < 128; bit++)
        net.addr[bit / 8] &= (unsigned char)~(0x80u >> (bit % 8));
    *ret_net = net;
    return 0;
}

bool proxy_net_contains(const struct proxy_net *net,
                        const unsigned char addr[16])
{
    unsigned full = net->prefix / 8;
    unsigned rest = net->prefix % 8;

    if (memcmp(net->addr, addr, full) != 0)
        return false;
    if (rest == 0)
        return true;
    unsigned char mask = (unsigned char)(0xffu << (8 - rest));
    return (net->addr[full] & mask) == (addr[full] & mask);
}

/* Splits the v1 line @line (CRLF cut) into @ret_header. */
static enum proxy_verdict proxy_parse_v1_line(char *line,
                                              struct proxy_header *ret_header,
                                              char *why, size_t why_len)
{
    char *fields[6];
    size_t n = 0;
    char *p = line;
    unsigned src_port;
    unsigned dst_port;
    unsigned char dst[16];
    unsigned char ip4[4];

    /* Single spaces between fields, none leading or trailing. */
    while (n < 6) {
        fields[n++] = p;
        p = strchr(p, ' ');
        if (p == NULL)
            break;
        *p++ = '\0';
    }
    if (n >= 2 && strcmp(fields[1], "UNKNOWN") == 0) {
        ret_header->local = true;
        return PROXY_OK;
    }
    if (n != 6 || p != NULL) {
        proxy_why(why, why_len, "PROXY v1: expected 6 fields");
        return PROXY_INVALID;
    }
    if (strcmp(fields[1], "TCP4") == 0) {
        if (inet_pton(AF_INET, fields[2], ip4) != 1) {
            proxy_why(why, why_len, "PROXY v1: bad TCP4 source address");
            return PROXY_INVALID;
        }
        proxy_addr_from_ipv4(ip4, ret_header->src);
        if (inet_pton(AF_INET, fields[3], ip4) != 1) {
            proxy_why(why, why_len, "PROXY v1: bad TCP4 destination address");
            return PROXY_INVALID;
        }
    } else if (strcmp(fields[1], "TCP6") == 0) {
        if (inet_pton(AF_INET6, fields[2], ret_header->src) != 1) {
            proxy_why(why, why_len, "PROXY v1: bad TCP6 source address");
            return PROXY_INVALID;
        }
        if (inet_pton(AF_INET6, fields[3], dst) != 1) {
            proxy_why(why, why_len, "PROXY v1: bad TCP6 destination address");
            return PROXY_INVALID;
        }
    } else {
        proxy_why(why, why_len,
                  "PROXY v1: protocol is not TCP4, TCP6 or UNKNOWN");
        return PROXY_INVALID;
    }
    if (proxy_parse_number(fields[4], 65535, &src_port) < 0 ||
        proxy_parse_number(fields[5], 65535, &dst_port) < 0) {
        proxy_why(why, why_len, "PROXY v1: bad port");
        return PROXY_INVALID;
    }
    ret_header->src_port = (uint16_t)src_port;
    ret_header->local = false;
    return PROXY_OK;
}

static enum proxy_verdict proxy_parse_v1(const unsigned char *buf, size_t len,
                                         struct proxy_header *ret_header,
                                         char *why, size_t why_len)
{
    char line[PROXY_V1_MAX + 1];
    size_t end;

    for (end = 0; end < len && end < PROXY_V1_MAX; end++) {
        if (buf[end] == '\n')
            break;
        if (buf[end] == '\0' || (buf[end] != '\r' && buf[end] < ' ') ||
            buf[end] > '~') {
            proxy_why(why, why_len, "PROXY v1: not printable text");
            return PROXY_INVALID;
        }
    }
    if (end == len && len < PROXY_V1_MAX)
        return PROXY_NEED_MORE;
    if (end >= PROXY_V1_MAX || end == 0 || buf[end - 1] != '\r') {
        proxy_why(why, why_len, "PROXY v1: no CRLF within 107 bytes");
        return PROXY_INVALID;
    }
    memcpy(line, buf, end - 1);
    line[end - 1] = '\0';
    memset(ret_header, 0, sizeof(*ret_header));
    ret_header->len = end + 1;
    enum proxy_verdict v = proxy_parse_v1_line(line, ret_header, why, why_len);
    if (v == PROXY_OK && !ret_header->local)
        proxy_addr_text(ret_header->src, ret_header->src_text);
    return v;
}

static enum proxy_verdict proxy_parse_v2(const unsigned char *buf, size_t len,
                                         struct proxy_header *ret_header,
                                         char *why, size_t why_len)
{
    size_t body;
    unsigned version;
    unsigned command;
    unsigned family;

    if (len < PROXY_V2_HEAD)
        return PROXY_NEED_MORE;
    version = buf[12] >> 4;
    command = buf[12] & 0x0f;
    family = buf[13];
    body = ((size_t)buf[14] << 8) | buf[15];
    if (version != 2) {
        proxy_why(why, why_len, "PROXY v2: version is not 2");
        return PROXY_INVALID;
    }
    if (command > 1) {
        proxy_why(why, why_len, "PROXY v2: command is not LOCAL or PROXY");
        return PROXY_INVALID;
    }
    if (PROXY_V2_HEAD + body > PROXY_HEADER_MAX) {
        proxy_why(why, why_len, "PROXY v2: header longer than 1024 bytes");
        return PROXY_INVALID;
    }
    if (len < PROXY_V2_HEAD + body)
        return PROXY_NEED_MORE;
    memset(ret_header, 0, sizeof(*ret_header));
    ret_header->len = PROXY_V2_HEAD + body;
    ret_header->local = true;
    if (command == 0)
        return PROXY_OK;
    const unsigned char *a = buf + PROXY_V2_HEAD;
    if (family == 0x11) { /* TCP over IPv4 */
        if (body < 12) {
            proxy_why(why, why_len,
                      "PROXY v2: IPv4 addresses longer than the header");
            return PROXY_INVALID;
        }
        proxy_addr_from_ipv4(a, ret_header->src);
        ret_header->src_port = (uint16_t)((a[8] << 8) | a[9]);
        ret_header->local = false;
    } else if (family == 0x21) { /* TCP over IPv6 */
        if (body < 36) {
            proxy_why(why, why_len,
                      "PROXY v2: IPv6 addresses longer than the header");
            return PROXY_INVALID;
        }
        memcpy(ret_header->src, a, 16);
        ret_header->src_port = (uint16_t)((a[32] << 8) | a[33]);
        ret_header->local = false;
    }
    if (!ret_header->local)
        proxy_addr_text(ret_header->src, ret_header->src_text);
    return PROXY_OK;
}

enum proxy_verdict proxy_parse(const unsigned char *buf, size_t len,
                               struct proxy_header *ret_header, char *why,
                               size_t why_len)
{
    size_t v1 = sizeof(proxy_v1_sig) - 1;
    size_t n;

    if (len == 0)
        return PROXY_NEED_MORE;
    n = len < v1 ? len : v1;
    if (memcmp(buf, proxy_v1_sig, n) == 0)
        return n < v1 ? PROXY_NEED_MORE
                      : proxy_parse_v1(buf, len, ret_header, why, why_len);
    n = len < sizeof(proxy_v2_sig) ? len : sizeof(proxy_v2_sig);
    if (memcmp(buf, proxy_v2_sig, n) == 0)
        return n < sizeof(proxy_v2_sig)
                   ? PROXY_NEED_MORE
                   : proxy_parse_v2(buf, len, ret_header, why, why_len);
    return PROXY_NOT_PROXY;
}
