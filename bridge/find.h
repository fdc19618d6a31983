/* SPDX-License-Identifier: Apache-2.0 */
/*
 * find - the C-FIND provider: answers a C-FIND identifier by QIDO-RS
 * against the DICOMweb server (docs/architecture.md section 8), with DIMSE
 * matching (PS3.4 C.2.2.2, match.h) guaranteed by matching every key again on
 * the results.
 *
 *   level    STUDY/SERIES/IMAGE from /studies, /series, /instances or the
 *            nested resources when the unique keys above are single
 *            values; PATIENT (Patient Root) from /studies grouped by
 *            Patient ID + Issuer of Patient ID.
 *   keys     (find_plan.c) a key with a value is a match parameter
 *            (percent-encoded); an empty key is an includefield, never
 *            "key=". With the
 *            azure profile only what Azure accepts is sent, with the
 *            orthanc profile only values that need no percent-encoding;
 *            everything else is matched here.
 *   paging   limit/offset until the server has no more or max_results
 *            were read (then the last status is A700 with a comment);
 *            duplicates across pages dropped by unique key; a C-CANCEL
 *            stops before the next page.
 *   answers  the keys asked for, Query/Retrieve Level, and Retrieve AE
 *            Title = find_params.retrieve_ae (ours) when retrieve is
 *            offered.
 *   errors   a failed QIDO-RS request (network, HTTP status, bad JSON,
 *            token) ends the C-FIND with a Cxxx status and an error
 *            comment, never an empty success:
 *              C001 server unreachable   C002 HTTP error status
 *              C003 answer not DICOM JSON  C004 no token
 *              A900 identifier invalid for the information model
 *            What the server said (an error body, a redirect's Location,
 *            a JSON error) is logged cut to REDACT_TEXT_MAX bytes with
 *            the identifier's own values and the exchange's secrets
 *            hidden (redact.h); a 3xx is never followed and is logged as
 *            "upload.url should change".
 *
 * The HTTP request is a function pointer (find_fetch_fn) so tests can
 * play the server; find_web_fetch() is the real one: web/dicomweb.h's
 * client (token source, 401 replay once, 403 diagnosis, a pool of reused
 * connections), logging the 403 diagnosis when it is due.
 *
 * Thread safety: a find_service may serve any number of associations at
 * once; a session belongs to one association thread.
 */
#ifndef STOWBRIDGE_FIND_H
#define STOWBRIDGE_FIND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scp/scp.h"

struct ds;
struct oauth_source;
struct redact;

/* One QIDO-RS answer. */
struct find_reply {
    long http_status; /* 0: no HTTP answer (see error) */
    char *body;       /* owned; may be NULL */
    size_t body_len;
    char error[512];    /* transport or token failure, or the 403
                           diagnosis */
    char location[512]; /* a 3xx's Location, as the server sent it */
    bool token_failed;  /* no token could be had */
    bool more_results;  /* Warning: "... additional results ..." */
    /* The secrets of the exchange (the token sent, the source's), to hide
     * in what the server said; owned, may be NULL. */
    struct redact *secrets;
    bool unchecked; /* the secrets could not be gathered: the
                       server's texts are withheld */
};

/* GETs {base}@path_and_query; fills @ret_reply. Returns 0 or a negative
 * errno (the reply then says why). */
typedef int (*find_fetch_fn)(void *ctx, const char *path_and_query,
                             struct find_reply *ret_reply);

/* query.profile: what the QIDO-RS server can match. */
enum find_profile {
    FIND_PROFILE_STANDARD = 0, /* PS3.18: every key, percent-encoded */
    FIND_PROFILE_AZURE,        /* Azure's subset (protocol-facts 3.4) */
    FIND_PROFILE_ORTHANC,      /* no percent-decoding on the server */
};

struct find_params {
    enum find_profile profile;
    unsigned page_size;   /* query.page_size */
    unsigned max_results; /* query.max_results */
    find_fetch_fn fetch;
    void *fetch_ctx;
    /* Retrieve AE Title (0008,0054) of every answer, at every level
     * (PS3.4 C.4.1.1.3.2), whether asked for or not: our dicom.ae_title
     * when we answer C-MOVE/C-GET (copied). NULL or "": retrieve is not
     * offered; the key is then answered zero length when asked for, and
     * never taken from the server. */
    const char *retrieve_ae;
};

struct find_service;

/* NULL on out-of-memory. */
struct find_service *find_service_new(const struct find_params *params);
void find_service_free(struct find_service *service);

/* The scp_find_handler that answers C-FIND with @service. */
void find_handler_init(struct find_service *service,
                       struct scp_find_handler *ret_handler);

/* Number of QIDO-RS requests made so far (for tests and logs). */
unsigned long find_service_requests(struct find_service *service);

/* Frees what a fetch put in @reply (body and secrets). */
void find_reply_free(struct find_reply *reply);

/* The real fetch: QIDO-RS over libcurl with the token source. */
struct find_web;
struct find_web *find_web_new(const char *base_url, const char *ca_file,
                              unsigned timeout_s, struct oauth_source *tokens);
void find_web_free(struct find_web *web);
int find_web_fetch(void *find_web, const char *path_and_query,
                   struct find_reply *ret_reply);

#endif
