/* SPDX-License-Identifier: Apache-2.0 */
/*
 * proxy - the PROXY protocol header (HAProxy's proxy-protocol.txt,
 * versions 1 and 2) that a load balancer sends before the connection's
 * own bytes, and the address networks of the proxies trusted to send it.
 *
 * Addresses are kept as 16 bytes, IPv4 as IPv4-mapped IPv6
 * (::ffff:a.b.c.d), so one comparison serves both families.
 *
 * Thread safety: none needed; the functions only read their arguments.
 * Ownership: nothing is allocated; results are filled in place.
 */
#ifndef STOWBRIDGE_PROXY_H
#define STOWBRIDGE_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The longest header we read: a v1 line is at most 107 bytes; v2 is 16
 * bytes and its announced length, whose TLVs we skip, up to this. */
#define PROXY_HEADER_MAX 1024
/* Room for an address as text (INET6_ADDRSTRLEN). */
#define PROXY_ADDR_TEXT 46

/* A network: @addr (16 bytes, IPv4 mapped) and a prefix 0..128. */
struct proxy_net {
    unsigned char addr[16];
    unsigned prefix;
};

enum proxy_verdict {
    PROXY_NEED_MORE = 0, /* a header may be starting: wait for bytes */
    PROXY_OK,            /* a whole, valid header */
    PROXY_INVALID,       /* a broken header; @why says what */
    PROXY_NOT_PROXY,     /* the bytes do not start a PROXY header */
};

struct proxy_header {
    size_t len;            /* bytes of the header, to be consumed */
    bool local;            /* LOCAL, UNKNOWN, or an unsupported family: keep
                            * the connection's own address */
    unsigned char src[16]; /* the original caller */
    uint16_t src_port;
    char src_text[PROXY_ADDR_TEXT]; /* dotted IPv4 or IPv6 text */
};

/*
 * Parses "a.b.c.d", "a.b.c.d/n", an IPv6 address or "x::y/n" into
 * @ret_net (host bits cleared). Returns 0, or -EINVAL.
 */
int proxy_net_parse(const char *text, struct proxy_net *ret_net);

/* True if the 16-byte address @addr lies in @net. */
bool proxy_net_contains(const struct proxy_net *net,
                        const unsigned char addr[16]);

/* Maps a 4-byte IPv4 address (network order) to its 16-byte form. */
void proxy_addr_from_ipv4(const unsigned char ip4[4], unsigned char ret[16]);

/*
 * Writes the text of @addr: dotted IPv4 for a mapped address, else IPv6.
 */
void proxy_addr_text(const unsigned char addr[16], char ret[PROXY_ADDR_TEXT]);

/*
 * Looks at the @len bytes at @buf, the first bytes of a connection.
 * PROXY_NOT_PROXY as soon as they cannot begin a v1 ("PROXY ") or v2
 * (the 12-byte signature) header; PROXY_NEED_MORE while a header may
 * still be arriving (at most PROXY_HEADER_MAX bytes); PROXY_OK with
 * @ret_header filled; PROXY_INVALID with @why (if given) saying what is
 * wrong. Only PROXY_OK fills @ret_header.
 */
enum proxy_verdict proxy_parse(const unsigned char *buf, size_t len,
                               struct proxy_header *ret_header, char *why,
                               size_t why_len);

#ifdef __cplusplus
}
#endif

#endif
