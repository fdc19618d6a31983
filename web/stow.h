/*
 * stow - STOW-RS (PS3.18 10.5, docs/architecture.md section 6): the request and what
 * the server's answer means for each instance of a batch.
 *
 * Request: stow_post() sends one batch of Part 10 files as one
 * multipart/related; type="application/dicom" body to
 * {base}/studies/{StudyInstanceUID}, streamed from the files (libcurl
 * MIME API: never loaded into memory), each part exactly
 * "Content-Type: application/dicom", a random boundary, Accept:
 * application/dicom+json, no Expect: 100-continue. Every request has the
 * limits of http.h: a low-speed limit over timeout_s, and a whole-request
 * deadline of 2 timeout_s + body bytes / 16 KiB/s for STOW-RS (timeout_s
 * for GETs). Redirects are never followed.
 *
 * Answer: stow_parse_response() turns an HTTP status and a DICOM JSON body
 * (the Store Instances Response Module, PS3.18 Annex I) into one outcome
 * per instance sent, following the outcome table of docs/architecture.md section 6.
 *
 * Thread safety: a struct stow_client is used by one thread at a time
 * (one per upload worker: its connection is reused between batches);
 * curl_global_init() must have run before the first stow_client_new().
 * The other functions are reentrant; JSON trees die in the function that
 * parsed them.
 * Errors: 0 or a negative errno; -EBADMSG for a body that is not the JSON
 * a STOW-RS server must send, with the reason in @err.
 */
#ifndef STOWBRIDGE_STOW_H
#define STOWBRIDGE_STOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What becomes of one instance after an answer. */
enum stow_outcome {
    STOW_DELIVERED = 0,   /* stored (or already stored): unlink it */
    STOW_RETRY,           /* transient: defer with backoff */
    STOW_REJECTED,        /* permanent: dead letter with the reason */
};

/* What the HTTP status of the whole request asks for (docs/architecture.md section 6). */
enum stow_request_action {
    STOW_READ_BODY = 0,   /* 200, 202, 409: per-instance outcomes in body */
    STOW_SPLIT_BATCH,     /* 400, 413, 415: retry singly, then reject */
    STOW_REFRESH_TOKEN,   /* 401: new token, replay once */
    STOW_FORBIDDEN,       /* 403: long backoff, diagnose, never reject */
    STOW_REDIRECTED,      /* 301, 302, 303, 307, 308: never followed; the
                             URL should change (long backoff, say so) */
    STOW_RETRY_LATER,     /* 408, 429, 5xx, anything else */
};

/* One instance's fate, as far as the response tells it. */
struct stow_instance_result {
    enum stow_outcome outcome;
    /* Failure Reason (0008,1197), or a Warning Reason (0008,1196) for a
     * delivered instance; 0 when the server gave none. */
    uint16_t reason;
    /* HTTP status of the request, for the record. */
    long http_status;
};

/* The action for a whole-request HTTP @status. */
enum stow_request_action stow_request_action(long status);

/*
 * The outcome a Failure Reason (0008,1197) code calls for:
 * 0xB00E/45070 (already exists) -> DELIVERED; 0xB00F (pending), 0xA7xx
 * (out of resources), 0x0110 (processing failure) -> RETRY; everything
 * else (0xA9xx, 0xCxxx, 0x0120-0x0122, 0x0124, UID mismatch 0xC122, ...) ->
 * REJECTED.
 */
enum stow_outcome stow_failure_outcome(uint16_t reason);

/* A short English meaning of a Failure or Warning Reason code. */
const char *stow_reason_text(uint16_t reason);

/*
 * Parses the body of a 200, 202 or 409 answer and fills @ret_results[i]
 * for the instance whose SOP Instance UID is @sop_uids[i]:
 *   in Referenced SOP Sequence (0008,1199)  -> DELIVERED (a Warning Reason
 *                                              is kept in .reason);
 *   in Failed SOP Sequence (0008,1198)      -> stow_failure_outcome();
 *   in neither                              -> RETRY (the server did not
 *                                              say it has it: send again).
 * An empty body with 200 means every instance was stored. A body that is
 * not a DICOM JSON object, or whose sequences are malformed, gives
 * -EBADMSG (the caller retries the batch: an unparseable answer is
 * transient). @ret_results is written only on success.
 */
int stow_parse_response(long http_status, const char *body, size_t body_len,
                        const char *const *sop_uids, size_t count,
                        struct stow_instance_result *ret_results, char *err,
                        size_t err_len);

struct stow_client;

/* What a client needs; strings are copied. */
struct stow_params {
    const char *base_url;     /* DICOMweb root, e.g. https://.../v2 */
    const char *ca_file;      /* NULL: the system's CA store */
    unsigned timeout_s;       /* connect timeout, stall limit, deadlines:
                                 see "Limits" in http.h */
    /* Polled during a transfer (about once a second when idle); a true
     * answer aborts it with -ECANCELED. NULL: never. */
    bool (*cancelled)(void *ctx);
    void *cancel_ctx;
};

/* One answer. The body is kept up to STOW_MAX_RESPONSE bytes. */
#define STOW_MAX_RESPONSE (16 * 1024 * 1024)

struct stow_reply {
    long http_status;         /* 0 when no HTTP answer arrived */
    char *body;               /* NUL-terminated; owned */
    size_t body_len;
    int64_t retry_after_s;    /* from Retry-After; -1 when absent */
    bool more_results;        /* a Warning header says "additional
                                 results" can be requested (QIDO-RS) */
    char location[512];       /* the Location header, "" if none; the
                                 server's text, as it came (cut to fit):
                                 redact before showing it */
    char error[512];          /* transport error when http_status is 0:
                                 for TLS the cause and the fix (http.h) */
};

/* Creates a client (one libcurl easy handle). NULL on out-of-memory. */
struct stow_client *stow_client_new(const struct stow_params *params);

/* Accepts NULL. */
void stow_client_free(struct stow_client *client);

/*
 * POSTs the @count files at @paths as one STOW-RS request for study
 * @study_uid, with "Authorization: Bearer @bearer_token" unless it is NULL.
 * Returns 0 when the exchange completed (whatever the HTTP status: see
 * @ret_reply), or a negative errno for a transport failure (connection
 * refused, reset, TLS, DNS, the low-speed limit or the deadline: -ETIMEDOUT)
 * with the reason in ret_reply->error.
 * A file that cannot be opened gives -ENOENT/-EACCES before anything is
 * sent. @ret_reply must be released with stow_reply_free() in every case.
 */
int stow_post(struct stow_client *client, const char *study_uid,
              const char *const *paths, size_t count,
              const char *bearer_token, struct stow_reply *ret_reply);

void stow_reply_free(struct stow_reply *reply);

/*
 * GETs {base}@path_and_query (which starts with '/', already
 * percent-encoded) with Accept: application/dicom+json and the token; a
 * whole-request deadline of timeout_s. The client serves QIDO-RS this way.
 * Returns 0 when an HTTP answer came (body in @ret_reply, up to
 * STOW_MAX_RESPONSE; a longer one gives -EMSGSIZE), or a negative errno
 * for a transport failure with the reason in ret_reply->error.
 * @ret_reply must be released with stow_reply_free() in every case.
 */
int stow_get(struct stow_client *client, const char *path_and_query,
             const char *bearer_token, struct stow_reply *ret_reply);

/*
 * Checks that the DICOMweb server answers: GET {base}/studies?limit=1 with
 * the token. Fills @ret_reply like stow_post() (the body is dropped).
 * Returns 0 when an HTTP answer came, or a negative errno.
 */
int stow_probe(struct stow_client *client, const char *bearer_token,
               struct stow_reply *ret_reply);

/*
 * Parses a Retry-After value (RFC 9110 10.2.3): delay-seconds or an
 * HTTP-date, relative to @now_s. Returns seconds (0 for a date in the
 * past), or -1 if unparsable.
 */
int64_t stow_parse_retry_after(const char *value, int64_t now_s);

#ifdef __cplusplus
}
#endif

#endif
