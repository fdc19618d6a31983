/* SPDX-License-Identifier: Apache-2.0 */
/*
 * util - see util.h.
 */
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

bool util_uid_valid(const char *uid)
{
    size_t len = strlen(uid);
    size_t component_start = 0;

    if (len == 0 || len > UTIL_UID_MAX)
        return false;
    for (size_t i = 0; i <= len; i++) {
        char c = uid[i];
        if (c == '.' || c == '\0') {
            size_t component_len = i - component_start;
            if (component_len == 0)
                return false;
            if (component_len > 1 && uid[component_start] == '0')
                return false;
            component_start = i + 1;
        } else if (c < '0' || c > '9') {
            return false;
        }
    }
    return true;
}

bool util_ae_title_valid(const char *ae)
{
    char trimmed[UTIL_AE_TITLE_MAX + 1];

    if (util_trim_copy(trimmed, sizeof(trimmed), ae) < 0)
        return false;
    if (trimmed[0] == '\0')
        return false;
    for (const char *p = trimmed; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c >= 0x7f || c == '\\')
            return false;
    }
    return true;
}

int util_trim_copy(char *dst, size_t dst_size, const char *src)
{
    const char *end;
    size_t len;

    while (*src == ' ')
        src++;
    end = src + strlen(src);
    while (end > src && end[-1] == ' ')
        end--;
    len = (size_t)(end - src);
    if (len >= dst_size) {
        if (dst_size > 0)
            dst[0] = '\0';
        return -ENAMETOOLONG;
    }
    memcpy(dst, src, len);
    dst[len] = '\0';
    return 0;
}

int util_ipv4_net_parse(const char *text, struct util_ipv4_net *ret_net)
{
    char addr_text[INET_ADDRSTRLEN];
    const char *slash = strchr(text, '/');
    size_t addr_len = slash ? (size_t)(slash - text) : strlen(text);
    unsigned long prefix = 32;
    struct in_addr in;
    uint32_t mask;

    if (addr_len == 0 || addr_len >= sizeof(addr_text))
        return -EINVAL;
    memcpy(addr_text, text, addr_len);
    addr_text[addr_len] = '\0';
    if (inet_pton(AF_INET, addr_text, &in) != 1)
        return -EINVAL;
    if (slash) {
        char *end;
        if (slash[1] < '0' || slash[1] > '9')
            return -EINVAL;
        errno = 0;
        prefix = strtoul(slash + 1, &end, 10);
        if (errno != 0 || *end != '\0' || prefix > 32)
            return -EINVAL;
    }
    mask = prefix == 0 ? 0 : UINT32_MAX << (32 - prefix);
    ret_net->mask = mask;
    ret_net->addr = ntohl(in.s_addr) & mask;
    return 0;
}

bool util_ipv4_net_contains(const struct util_ipv4_net *net, const char *ip)
{
    struct in_addr in;

    if (inet_pton(AF_INET, ip, &in) != 1)
        return false;
    return (ntohl(in.s_addr) & net->mask) == net->addr;
}

uint64_t util_now_monotonic_ms(void)
{
    struct timespec ts;

    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t util_now_realtime_us(void)
{
    struct timespec ts;

    (void)clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void util_deadline_ms(clockid_t clock, uint64_t ms, struct timespec *ret)
{
    struct timespec ts;

    (void)clock_gettime(clock, &ts);
    ts.tv_sec += (time_t)(ms / 1000u);
    ts.tv_nsec += (long)(ms % 1000u) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    *ret = ts;
}

int util_random_bytes(void *buf, size_t len)
{
    unsigned char *p = buf;

    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

const char *util_strerror(int neg_errno, char *buf, size_t len)
{
    /* GNU strerror_r may return a static string instead of filling buf. */
    return strerror_r(-neg_errno, buf, len);
}

size_t util_utf8_sequence(const unsigned char *p)
{
    unsigned char c = p[0];
    size_t n;
    uint32_t cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1fu;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0fu;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07u;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0u) != 0x80u)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3fu);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

void util_err(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || err_len == 0)
        return;
    va_start(ap, fmt);
    (void)vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}
