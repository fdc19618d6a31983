/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cred_http - the HTTP requests of the credential modules (credential.h):
 * one GET or form POST on a libcurl easy handle of its own, with the
 * safety every token request needs: connect and total timeouts,
 * CURLOPT_NOSIGNAL, http and https only, redirects never followed (a
 * token endpoint that redirects is answered as it is), an answer size
 * cap, optionally no proxy (the instance metadata endpoint must never be
 * reached through one), and every header and answer byte wiped after use
 * (they carry keys and tokens).
 *
 * Thread safety: reentrant; curl_global_init() must have run first.
 * Ownership: a struct cred_http_response owns its strings; free it with
 * cred_http_response_free(), which accepts zeroed or half-filled structs.
 * Errors: 0 when an HTTP answer arrived (whatever its status); -EAGAIN
 * when none did (unreachable, timeout, TLS, answer over the cap), with
 * the reason in @err; -ENOMEM; -EINVAL for a bad request.
 */
#ifndef STOWBRIDGE_CRED_HTTP_H
#define STOWBRIDGE_CRED_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The default answer cap; token answers are a few KiB. */
#define CRED_HTTP_MAX_BODY (64 * 1024)

struct cred_http_request {
    const char *url;            /* required */
    const char *form;           /* NULL: GET; else the POST body, sent as
                                   application/x-www-form-urlencoded */
    const char *const *headers; /* NULL or NULL-terminated "Name: value" */
    const char *ca_file;        /* NULL: the system's CA store */
    unsigned timeout_s;         /* connect and total; 0: 30 s */
    bool no_proxy;              /* never use a proxy */
    size_t max_body;            /* 0: CRED_HTTP_MAX_BODY */
};

struct cred_http_response {
    long status;
    char *body; /* NUL-terminated; secret: may be a token */
    size_t body_len;
    char *www_authenticate; /* the first WWW-Authenticate value, or
                               NULL; trimmed */
};

/*
 * Performs @req and fills @ret_response when an answer arrived.
 */
int cred_http_perform(const struct cred_http_request *req,
                      struct cred_http_response *ret_response, char *err,
                      size_t err_len);

/* Wipes the body and frees. Accepts NULL. */
void cred_http_response_free(struct cred_http_response *response);

#ifdef __cplusplus
}
#endif

#endif
