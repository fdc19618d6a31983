/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dicomweb - the one DICOMweb client of the project: every request to the
 * DICOMweb server (STOW-RS, QIDO-RS, the probe of `check`, and next
 * WADO-RS) goes through dicomweb_request(), which
 *   1. takes a libcurl handle from the client's pool (or makes one);
 *   2. asks the token source (oauth.h: whatever credential it was built
 *      from) for a Bearer token;
 *   3. sends the request with the limits of http.h (connect timeout,
 *      low-speed limit, whole-request deadline, no redirects);
 *   4. on 401, invalidates that token and replays once with a new one; a
 *      second 401 is the answer;
 *   5. on 403, writes the diagnosis from the token's claims (who the
 *      token says it is and what role it lacks: oauth_diagnose_forbidden)
 *      into the reply, and says whether it is due in the log (at most once
 *      per DICOMWEB_403_LOG_MS per client: one rate limit, here);
 *   6. reads Retry-After (seconds or an HTTP-date), Location and the
 *      QIDO-RS "additional results" Warning into the reply;
 *   7. on any answer but 2xx, or no answer, gathers the secrets of the
 *      exchange (the token sent, the source's secrets) into the reply, for
 *      whoever shows what the server said (redact.h);
 *   8. wipes and frees its copies of the token, and gives the handle back.
 * What an answer means is the caller's: stow.h for STOW-RS, qido.h for
 * QIDO-RS.
 *
 * A new kind of request plugs in with a struct dicomweb_request: its path
 * and Accept header, a prepare() hook that puts a body on the handle (the
 * STOW-RS multipart is one), an on_body() hook that takes the answer as it
 * streams (a WADO-RS multipart reader) instead of the reply buffer, and a
 * perform() hook that runs the transfer in its own loop (WADO-RS pauses
 * it while its consumer is over budget).
 *
 * Library code: never logs (the caller logs the diagnosis when
 * diagnosis_due says so). Thread safety: a struct dicomweb may be used by
 * any number of threads at once (the pool is locked; each request has its
 * own handle); curl_global_init() must have run before dicomweb_new().
 * Errors: 0 when an HTTP answer came (whatever its status), or a negative
 * errno: -ECANCELED (the cancel callback), -ETIMEDOUT, -ECONNREFUSED,
 * -ECONNABORTED, -EIO, -ENOMEM, -EMSGSIZE, a file's open() errno, with the
 * reason in reply->error; when no token could be had, token_failed is set
 * and the token source's errno is returned (-EACCES: the credential is
 * refused, -EAGAIN: the endpoint is down).
 */
#ifndef STOWBRIDGE_DICOMWEB_H
#define STOWBRIDGE_DICOMWEB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#ifdef __cplusplus
extern "C" {
#endif

struct oauth_source;
struct redact;
struct dicomweb;

/* The most of an answer kept in a reply. */
#define DICOMWEB_MAX_RESPONSE (16 * 1024 * 1024)
/* Idle connections kept when the params do not say. */
#define DICOMWEB_POOL_DEFAULT 8
/* The same 403 diagnosis is due in the log at most this often. */
#define DICOMWEB_403_LOG_MS 60000
/* The longest Retry-After taken as it is, in seconds. */
#define DICOMWEB_RETRY_AFTER_MAX 86400

/* What a client needs; strings are copied, @tokens is borrowed and must
 * outlive the client. */
struct dicomweb_params {
    const char *base_url;        /* DICOMweb root, e.g. https://.../v2 */
    const char *ca_file;         /* NULL: the system's CA store */
    unsigned timeout_s;          /* connect, stall and deadlines (http.h) */
    struct oauth_source *tokens; /* NULL: no Authorization, no replay */
    unsigned pool_size;          /* idle handles kept; 0: the default */
    /* Polled during a transfer (about once a second when idle); a true
     * answer aborts it with -ECANCELED. NULL: never. */
    bool (*cancelled)(void *ctx);
    void *cancel_ctx;
};

/* One answer. Release with dicomweb_reply_free() in every case. */
struct dicomweb_reply {
    long http_status; /* 0 when no HTTP answer arrived */
    char *body;       /* NUL-terminated; owned; NULL with on_body */
    size_t body_len;
    int64_t retry_after_s;  /* from Retry-After; -1 when absent */
    bool more_results;      /* a Warning says "additional results" can
                               be requested (QIDO-RS, PS3.18 8.3.4.4) */
    bool replayed;          /* a 401 was followed by a new token and one
                               replay (this is the replay's answer) */
    bool token_failed;      /* no token could be had: see error */
    bool diagnosis_due;     /* 403: log the diagnosis now */
    bool secrets_missing;   /* the secrets could not be gathered: the
                               server's texts must be withheld */
    struct redact *secrets; /* for a non-2xx answer or none: the token
                               sent and the source's secrets; owned */
    char location[512];     /* the Location header, "" if none; the
                               server's text as it came (cut to fit):
                               redact before showing it */
    char error[512];        /* transport error, the token failure, or a
                               note (a body over the cap, cut) */
    char diagnosis[2048];   /* 403: what the token is and what to
                               change; never the token itself */
};

/*
 * One kind of request. @path is appended to the base URL (it starts with
 * '/' and is already percent-encoded). Hooks get @ctx.
 */
struct dicomweb_request {
    const char *path;
    const char *accept; /* the Accept header value */
    long deadline_s;    /* whole request; 0: timeout_s */
    bool cap_is_error;  /* a body over DICOMWEB_MAX_RESPONSE gives
                           -EMSGSIZE (else it is cut, with a note
                           in error) */
    /* Before each attempt, after the shared options: puts the body and
     * its headers on @curl. Returns 0 or a negative errno (reason in
     * @err). NULL: a GET. */
    int (*prepare)(void *ctx, CURL *curl, struct curl_slist **headers,
                   char *err, size_t err_len);
    /* After each attempt: frees what prepare() made. May be NULL. */
    void (*release)(void *ctx);
    /* Takes the body as it arrives instead of the reply: returns @len,
     * CURL_WRITEFUNC_PAUSE to pause the transfer (perform() resumes it),
     * or anything else to abort (-EIO). NULL: kept in the reply. */
    size_t (*on_body)(void *ctx, const char *data, size_t len);
    /* Runs the transfer on @curl instead of curl_easy_perform(): a multi
     * loop that can pause and resume it (WADO-RS, whose consumer gives
     * back its byte budget). NULL: curl_easy_perform(). */
    CURLcode (*perform)(void *ctx, CURL *curl);
    void *ctx;
};

/* NULL on out-of-memory. */
struct dicomweb *dicomweb_new(const struct dicomweb_params *params);

/* Frees the pool. Accepts NULL. No request may be running. */
void dicomweb_free(struct dicomweb *dw);

/* The base URL without trailing slashes. */
const char *dicomweb_base_url(const struct dicomweb *dw);

/* How many libcurl handles were made so far (the pool's reuse shows). */
unsigned dicomweb_handles_made(struct dicomweb *dw);

/* The authenticated request (see the top). Fills @ret_reply in every
 * case. */
int dicomweb_request(struct dicomweb *dw, const struct dicomweb_request *req,
                     struct dicomweb_reply *ret_reply);

/*
 * STOW-RS (PS3.18 10.5): POSTs the @count Part 10 files at @paths as one
 * multipart/related; type="application/dicom" body to
 * {base}/studies/@study_uid, streamed from the files at send time, each
 * part exactly "Content-Type: application/dicom", a random boundary,
 * Accept: application/dicom+json, no Expect: 100-continue; the deadline
 * of http_stow_deadline_s(). A file that cannot be opened gives its
 * errno (-ENOENT, -EACCES) before anything is sent. The answer is kept
 * up to DICOMWEB_MAX_RESPONSE (then cut, with a note in error).
 */
int dicomweb_stow(struct dicomweb *dw, const char *study_uid,
                  const char *const *paths, size_t count,
                  struct dicomweb_reply *ret_reply);

/*
 * QIDO-RS (PS3.18 10.6): GETs {base}@path_and_query with Accept:
 * application/dicom+json and a deadline of timeout_s. A body over
 * DICOMWEB_MAX_RESPONSE gives -EMSGSIZE.
 */
int dicomweb_search(struct dicomweb *dw, const char *path_and_query,
                    struct dicomweb_reply *ret_reply);

/* Checks that the server answers: GET {base}/studies?limit=1; the body is
 * dropped. */
int dicomweb_probe(struct dicomweb *dw, struct dicomweb_reply *ret_reply);

/* Frees the body and the secrets. Accepts NULL. */
void dicomweb_reply_free(struct dicomweb_reply *reply);

/*
 * Parses a Retry-After value (RFC 9110 10.2.3): delay-seconds or an
 * IMF-fixdate, relative to @now_s. Returns seconds (0 for a date in the
 * past, at most DICOMWEB_RETRY_AFTER_MAX), or -1 if unparsable.
 */
int64_t dicomweb_parse_retry_after(const char *value, int64_t now_s);

#ifdef __cplusplus
}
#endif

#endif
