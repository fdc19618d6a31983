/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stow - what a STOW-RS answer (PS3.18 10.5, docs/architecture.md section 6)
 * means for each instance of a batch. The request itself is dicomweb_stow()
 * (dicomweb.h), the one DICOMweb client.
 *
 * stow_request_action() turns the HTTP status of the whole request into
 * what the uploader does next; stow_parse_response() turns a DICOM JSON
 * body (the Store Instances Response Module, PS3.18 Annex I) into one
 * outcome per instance sent, following the outcome table of
 * docs/architecture.md section 6.
 *
 * Thread safety: reentrant; JSON trees die in the function that parsed
 * them. Errors: 0 or a negative errno; -EBADMSG for a body that is not the
 * JSON a STOW-RS server must send, with the reason in @err.
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
    STOW_DELIVERED = 0, /* stored (or already stored): unlink it */
    STOW_RETRY,         /* transient: defer with backoff */
    STOW_REJECTED,      /* permanent: dead letter with the reason */
};

/* What the HTTP status of the whole request asks for (docs/architecture.md
 * section 6). */
enum stow_request_action {
    STOW_READ_BODY = 0, /* 200, 202, 409: per-instance outcomes in body */
    STOW_SPLIT_BATCH,   /* 400, 413, 415: retry singly, then reject */
    STOW_REFRESH_TOKEN, /* 401: new token, replay once */
    STOW_FORBIDDEN,     /* 403: long backoff, diagnose, never reject */
    STOW_REDIRECTED,    /* 301, 302, 303, 307, 308: never followed; the
                           URL should change (long backoff, say so) */
    STOW_RETRY_LATER,   /* 408, 429, 5xx, anything else */
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

#ifdef __cplusplus
}
#endif

#endif
