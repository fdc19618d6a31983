/* SPDX-License-Identifier: Apache-2.0 */
/*
 * http - what every HTTP request of web/ shares (docs/architecture.md section
 * 6): limits that keep a slow, stalled or hostile server from holding a worker,
 * no redirects, and failures described so that an operator can act on them.
 * Used by dicomweb.c (STOW-RS, QIDO-RS, the probe) and oauth.c (token
 * requests); internal to web/.
 *
 * Limits, with T the timeout the caller was given (upload.timeout_s):
 *   connect    T;
 *   low speed  less than HTTP_LOW_SPEED_BPS (1024 bytes/s, sent and
 *              received counted together) for T seconds in a row aborts
 *              the request: a stall, or an answer trickled a few bytes a
 *              second. libcurl averages the speed over the last 5
 *              seconds, so this trips at most T + 6 s after the bytes stop
 *              flowing at speed;
 *   deadline   the whole request: T for token requests, QIDO-RS and the
 *              probe; for STOW-RS http_stow_deadline_s():
 *                  deadline = 2 T + body bytes / HTTP_MIN_RATE_BPS
 *              with HTTP_MIN_RATE_BPS 16 KiB/s (a 128 kbit/s link), so a
 *              5 MiB batch with T 5 may take 330 s, a 100 MiB batch with
 *              T 60 6520 s, and an answer trickled at 2 bytes/s after a
 *              small batch with T 5 holds its worker about 11 s (the low
 *              speed limit), never more than the deadline.
 * Redirects are never followed: a 3xx is an answer, the caller says the
 * URL should change, and no token is ever sent to another place. Only
 * http and https.
 *
 * Failures: http_describe() names the cause of a TLS verification failure
 * from the X509 verify result (CURLINFO_SSL_VERIFYRESULT: self-signed,
 * unknown CA, expired, not yet valid) or libcurl's host name check (name
 * mismatch), with the fix (upload.ca_file, the configuration key the
 * program reads the CA file from), and libcurl's own detail for the rest.
 *
 * Thread safety: reentrant; a CURL handle belongs to one thread.
 */
#ifndef STOWBRIDGE_HTTP_H
#define STOWBRIDGE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HTTP_LOW_SPEED_BPS 1024L
#define HTTP_MIN_RATE_BPS (16L * 1024)

/* The whole-request deadline of a STOW-RS request with @body_bytes. */
long http_stow_deadline_s(unsigned timeout_s, uint64_t body_bytes);

/*
 * Sets on @curl (after curl_easy_reset() or init) what every request
 * shares: no signals, connect timeout and low-speed limit from
 * @timeout_s, the whole-request @deadline_s (0: none), http/https only,
 * no redirects, the CA file (NULL: the system's), and @errbuf (at least
 * CURL_ERROR_SIZE bytes, emptied) for libcurl's detail.
 */
void http_setup(CURL *curl, unsigned timeout_s, long deadline_s,
                const char *ca_file, char *errbuf);

/* True if @rc is a failure of TLS certificate verification. */
bool http_is_tls_failure(CURLcode rc);

/*
 * Describes the failure @rc of the transfer on @curl, with libcurl's
 * detail from @errbuf (may be NULL or ""), in @out: for TLS, the cause
 * and the fix (see above); otherwise libcurl's message and detail.
 * Always NUL-terminates.
 */
void http_describe(CURL *curl, CURLcode rc, const char *errbuf, char *out,
                   size_t len);

/*
 * If the header line @line (@n bytes, as a header callback gets it) is
 * header @name (case-insensitive, without the colon), copies its value
 * without surrounding white space and line end into @out (cut to fit)
 * and returns true.
 */
bool http_header_value(const char *line, size_t n, const char *name, char *out,
                       size_t out_len);

/* True for the redirect statuses 301, 302, 303, 307 and 308. */
bool http_is_redirect(long status);

#ifdef __cplusplus
}
#endif

#endif
