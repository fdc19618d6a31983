/* SPDX-License-Identifier: Apache-2.0 */
/*
 * auth - the access rules of the admin endpoint (see admin_int.h and the
 * "Access rules" of admin.h).
 */
#include "admin_int.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

/* Longest Authorization header we look at. */
#define AUTH_HEADER_MAX 1024

bool admin__token_equal(const char *expected, size_t expected_len,
                        const char *given, size_t given_len)
{
    volatile unsigned char diff = expected_len != given_len;

    for (size_t i = 0; i < expected_len; i++) {
        unsigned char g = i < given_len ? (unsigned char)given[i] : 0;
        diff |= (unsigned char)expected[i] ^ g;
    }
    return diff == 0;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Decodes standard base64 (padding optional) of @len bytes into @out
 * (capacity @cap); returns the decoded length, or -1. */
static long b64_decode(const char *in, size_t len, unsigned char *out,
                       size_t cap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;

    while (len > 0 && in[len - 1] == '=')
        len--;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n == cap)
                return -1;
            out[n++] = (unsigned char)(acc >> bits);
        }
    }
    return (long)n;
}

enum admin__cred admin__check_credentials(const char *header, const char *token,
                                          size_t token_len)
{
    unsigned char decoded[AUTH_HEADER_MAX];
    const char *value;
    size_t len;

    if (header == NULL)
        return ADMIN__CRED_MISSING;
    while (*header == ' ' || *header == '\t')
        header++;
    len = strlen(header);
    if (len > AUTH_HEADER_MAX)
        return ADMIN__CRED_WRONG;
    while (len > 0 && (header[len - 1] == ' ' || header[len - 1] == '\t'))
        len--;
    if (len > 7 && strncasecmp(header, "Bearer", 6) == 0 &&
        (header[6] == ' ' || header[6] == '\t')) {
        value = header + 7;
        while (*value == ' ' || *value == '\t')
            value++;
        len -= (size_t)(value - header);
        return admin__token_equal(token, token_len, value, len)
                   ? ADMIN__CRED_BEARER
                   : ADMIN__CRED_WRONG;
    }
    if (len > 6 && strncasecmp(header, "Basic", 5) == 0 &&
        (header[5] == ' ' || header[5] == '\t')) {
        const unsigned char *colon;
        bool ok;
        long n;
        value = header + 6;
        while (*value == ' ' || *value == '\t')
            value++;
        len -= (size_t)(value - header);
        n = b64_decode(value, len, decoded, sizeof(decoded));
        if (n < 0) {
            explicit_bzero(decoded, sizeof(decoded));
            return ADMIN__CRED_WRONG;
        }
        colon = memchr(decoded, ':', (size_t)n);
        ok = colon != NULL &&
             admin__token_equal(token, token_len, (const char *)colon + 1,
                                (size_t)(decoded + n - colon - 1));
        explicit_bzero(decoded, sizeof(decoded));
        return ok ? ADMIN__CRED_BASIC : ADMIN__CRED_WRONG;
    }
    return ADMIN__CRED_WRONG;
}

bool admin__cross_site(const char *origin, const char *sec_fetch_site,
                       const char *host)
{
    if (sec_fetch_site != NULL && strcasecmp(sec_fetch_site, "same-origin") &&
        strcasecmp(sec_fetch_site, "none"))
        return true;
    if (origin == NULL)
        return false;
    if (host == NULL || strcasecmp(origin, "null") == 0 ||
        strncasecmp(origin, "http://", 7) != 0)
        return true;
    return strcasecmp(origin + 7, host) != 0;
}

bool admin__host_is_loopback(const char *host)
{
    char name[64];
    const char *end;
    unsigned char addr[16];
    size_t len;

    if (host == NULL)
        return true;
    if (host[0] == '[') {
        host++;
        end = strchr(host, ']');
        if (end == NULL || (end[1] != '\0' && end[1] != ':'))
            return false;
    } else {
        end = strchr(host, ':');
        if (end == NULL)
            end = host + strlen(host);
    }
    len = (size_t)(end - host);
    if (len == 0 || len >= sizeof(name))
        return false;
    memcpy(name, host, len);
    name[len] = '\0';
    if (strcasecmp(name, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, name, addr) == 1)
        return addr[0] == 127;
    if (inet_pton(AF_INET6, name, addr) == 1) {
        static const unsigned char one[16] = { [15] = 1 };
        return memcmp(addr, one, sizeof(one)) == 0;
    }
    return false;
}

bool admin__entry_id_valid(const char *id)
{
    size_t len = strlen(id);

    if (len == 0 || len >= ADMIN_ID_MAX || id[0] == '.')
        return false;
    for (const char *p = id; *p; p++) {
        char c = *p;
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
              (c >= 'A' && c <= 'Z') || c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}
