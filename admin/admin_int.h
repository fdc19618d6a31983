/* SPDX-License-Identifier: Apache-2.0 */
/*
 * admin_int - declarations shared only inside the admin module (and its
 * unit test): HTML and JSON escaping into a capped buffer (base/buf.h),
 * the page and JSON renderers, and the access rules. All functions are
 * reentrant; none does I/O.
 */
#ifndef STOWBRIDGE_ADMIN_INT_H
#define STOWBRIDGE_ADMIN_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "admin.h"
#include "base/buf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Ceilings of the responses we build. */
#define ADMIN__PAGE_MAX (2u * 1024u * 1024u)
#define ADMIN__JSON_MAX (16u * 1024u)
#define ADMIN__METRICS_MAX (4u * 1024u * 1024u)

/*
 * Appends @s HTML-escaped for text and quoted attributes alike:
 * & < > " ' as entities; control characters other than tab and newline
 * and bytes that are not well-formed UTF-8 as U+FFFD.
 */
void admin__append_html(struct buf *b, const char *s);
/* Appends @s as a JSON string with its quotes (RFC 8259 escapes; broken
 * UTF-8 as U+FFFD). */
void admin__append_json(struct buf *b, const char *s);

/* What the status page needs besides the snapshot. */
struct admin__page_opts {
    uint32_t refresh_s;
    bool actions;         /* actions enabled: show how to call them */
    bool token;           /* a token is configured */
    const char *base_url; /* "http://127.0.0.1:9475" for examples */
};

/* Renders the status page of @st at Unix time @now_s into @b. */
void admin__render_page(struct buf *b, const struct admin_status *st,
                        int64_t now_s, const struct admin__page_opts *opts);

/* /healthz: writes the JSON body, returns the HTTP status (200/503). */
unsigned admin__render_healthz(struct buf *b, uint64_t age_ms,
                               uint64_t limit_ms);

/* The readiness checks, in the order of admin__ready_check_names:
 * "dicom_port", "spool", "destination". */
#define ADMIN__READY_CHECKS 3
extern const char *const admin__ready_check_names[ADMIN__READY_CHECKS];

/* Each check's problem in words; "" when it passes. */
struct admin__ready_verdict {
    char problem[ADMIN__READY_CHECKS][ADMIN_TEXT_MAX + 96];
};

/* Fills @v for @r at Unix time @now_s; true when every check passes. */
bool admin__ready_verdict(const struct admin_ready *r, int64_t now_s,
                          struct admin__ready_verdict *v);

/* /readyz: writes the JSON body, returns 200 when every check passes,
 * else 503. */
unsigned admin__render_readyz(struct buf *b, const struct admin_ready *r,
                              int64_t now_s);

/* The verdict of an Authorization header against the configured token. */
enum admin__cred {
    ADMIN__CRED_MISSING = 0, /* no header */
    ADMIN__CRED_BEARER,      /* Bearer with the right token */
    ADMIN__CRED_BASIC,       /* Basic with the token as password */
    ADMIN__CRED_WRONG,       /* a credential, not the right one */
};

/*
 * Judges @header (NULL when absent) against @token (@token_len bytes,
 * non-empty). Schemes are case-insensitive; every comparison takes a time
 * that depends only on the configured token's length.
 */
enum admin__cred admin__check_credentials(const char *header, const char *token,
                                          size_t token_len);

/* True when @given (@given_len bytes) equals @expected, in a time that
 * depends only on @expected_len. */
bool admin__token_equal(const char *expected, size_t expected_len,
                        const char *given, size_t given_len);

/*
 * True when a request must be refused as cross-site: an Origin header
 * that is "null" or is not "http://" + @host, or a Sec-Fetch-Site other
 * than "same-origin" and "none". Absent headers (curl, scripts) pass.
 */
bool admin__cross_site(const char *origin, const char *sec_fetch_site,
                       const char *host);

/* True when a Host header (NULL: absent) names a loopback address
 * (127.x.y.z, [::1]) or "localhost", with or without a port. */
bool admin__host_is_loopback(const char *host);

/* True when @id can be an entry ID: 1..ADMIN_ID_MAX-1 characters of
 * [0-9A-Za-z._-], not starting with '.'. */
bool admin__entry_id_valid(const char *id);

#ifdef __cplusplus
}
#endif

#endif
