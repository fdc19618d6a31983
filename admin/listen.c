/* SPDX-License-Identifier: Apache-2.0 */
/*
 * listen - admin.listen parsing and the admin section's configuration
 * rules (see admin.h).
 */
#include "admin.h"
#include "base/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_port(const char *s, uint16_t *ret_port)
{
    unsigned long v = 0;

    if (*s == '\0' || strlen(s) > 5)
        return -EINVAL;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        v = v * 10 + (unsigned long)(*p - '0');
    }
    if (v > 65535)
        return -EINVAL;
    *ret_port = (uint16_t)v;
    return 0;
}

int admin_listen_parse(const char *text, struct admin_listen *ret_listen,
                       char *err, size_t err_len)
{
    struct admin_listen l;
    char host[64];
    const char *port;
    size_t len;

    memset(&l, 0, sizeof(l));
    if (text == NULL || text[0] == '\0') {
        *ret_listen = l;
        return 0;
    }
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':') {
            util_err(err, err_len, "'%s' is not [IPv6 address]:port", text);
            return -EINVAL;
        }
        len = (size_t)(close - text - 1);
        if (len == 0 || len >= sizeof(host)) {
            util_err(err, err_len, "'%s': bad IPv6 address", text);
            return -EINVAL;
        }
        memcpy(host, text + 1, len);
        host[len] = '\0';
        port = close + 2;
        if (inet_pton(AF_INET6, host, l.addr) != 1) {
            util_err(err, err_len, "'%s': '%s' is not a numeric IPv6 address",
                     text, host);
            return -EINVAL;
        }
        l.ipv6 = true;
    } else {
        const char *colon = strrchr(text, ':');
        if (colon == NULL) {
            util_err(err, err_len, "'%s' is not address:port (e.g. %s)", text,
                     ADMIN_DEFAULT_LISTEN);
            return -EINVAL;
        }
        if (memchr(text, ':', (size_t)(colon - text)) != NULL) {
            util_err(err, err_len,
                     "'%s': write an IPv6 address in brackets, "
                     "[::1]:%d",
                     text, ADMIN_DEFAULT_PORT);
            return -EINVAL;
        }
        len = (size_t)(colon - text);
        if (len == 0 || len >= sizeof(host)) {
            util_err(err, err_len, "'%s': bad address", text);
            return -EINVAL;
        }
        memcpy(host, text, len);
        host[len] = '\0';
        port = colon + 1;
        if (inet_pton(AF_INET, host, l.addr) != 1) {
            util_err(err, err_len,
                     "'%s': '%s' is not a numeric IPv4 address "
                     "(host names are not accepted)",
                     text, host);
            return -EINVAL;
        }
    }
    if (parse_port(port, &l.port) < 0) {
        util_err(err, err_len, "'%s': the port must be 0..65535", text);
        return -EINVAL;
    }
    if (l.ipv6) {
        static const uint8_t one[16] = { [15] = 1 };
        static const uint8_t v4mapped[12] = { [10] = 0xff, [11] = 0xff };
        l.loopback = memcmp(l.addr, one, 16) == 0 ||
                     (memcmp(l.addr, v4mapped, 12) == 0 && l.addr[12] == 127);
    } else {
        l.loopback = l.addr[0] == 127;
    }
    l.enabled = true;
    *ret_listen = l;
    return 0;
}

int admin_config_check(const char *listen, bool have_token, bool allow_actions,
                       char *err, size_t err_len)
{
    struct admin_listen l;
    char why[160];
    int r;

    r = admin_listen_parse(listen, &l, why, sizeof(why));
    if (r < 0) {
        util_err(err, err_len, "admin.listen: %s", why);
        return r;
    }
    if (l.enabled && !l.loopback && !have_token) {
        util_err(err, err_len,
                 "admin.listen '%s' is not a loopback address: "
                 "set admin.token_file (a bearer token) to serve it there",
                 listen);
        return -EINVAL;
    }
    if (allow_actions && !have_token) {
        util_err(err, err_len,
                 "admin.allow_actions needs admin.token_file: "
                 "actions are only taken with the bearer token");
        return -EINVAL;
    }
    return 0;
}
