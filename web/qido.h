/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qido - QIDO-RS (PS3.18 10.6) pieces that know nothing of C-FIND:
 * building a correctly percent-encoded search URL and turning a DICOM
 * JSON answer (PS3.18 Annex F.2) into plain data sets (dataset.h). The
 * request itself is dicomweb_search() (dicomweb.h), the DICOMweb client.
 *
 * Thread safety: reentrant; a struct qido_url belongs to one thread.
 * Errors: 0 or a negative errno; -EBADMSG for a body that is not a DICOM
 * JSON array of objects, with the reason in @err; -ENOMEM.
 */
#ifndef STOWBRIDGE_QIDO_H
#define STOWBRIDGE_QIDO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

#ifdef __cplusplus
extern "C" {
#endif

struct ds;

/* The longest search URL (path and query) built. */
#define QIDO_URL_MAX (256 * 1024)
/* The longest value text one attribute of an answer becomes. */
#define QIDO_VALUE_MAX (16 * 1024 * 1024)

/* A growing "/resource?key=value&..." string, at most QIDO_URL_MAX bytes;
 * the first failure sticks (qido_url_error()). */
struct qido_url {
    struct buf text;
    bool has_query;
};

/* Starts @url with @path (e.g. "/studies/1.2.3/series"), taken as is. */
void qido_url_init(struct qido_url *url, const char *path);

/*
 * Appends "key=value" (or "&key=value"), both percent-encoded: every byte
 * but A-Z a-z 0-9 - . _ ~ and the wildcards * ? becomes %XX, so '+', '^',
 * ',', '&', '=', '#', '\' and non-ASCII UTF-8 reach the server intact.
 * @flags may leave some characters of the value as they are:
 * QIDO_RAW_COMMAS (the QIDO-RS UID list separator), QIDO_RAW_CARET (for
 * servers that do not percent-decode and take '^' raw).
 */
#define QIDO_RAW_COMMAS 1u
#define QIDO_RAW_CARET 2u
void qido_url_add(struct qido_url *url, const char *key, const char *value,
                  unsigned flags);

/* Appends "key=NNN". */
void qido_url_add_uint(struct qido_url *url, const char *key,
                       unsigned long value);

/* The URL so far ("" after a failure: check qido_url_error()). */
const char *qido_url_text(const struct qido_url *url);

/* 0, or the first failure: -E2BIG (over QIDO_URL_MAX), -ENOMEM. */
int qido_url_error(const struct qido_url *url);

/* Hands out the text (caller frees) and empties @url; NULL after a
 * failure, which is then in @ret_err (may be NULL). */
char *qido_url_take(struct qido_url *url, int *ret_err);

/* Frees the text. */
void qido_url_free(struct qido_url *url);

/* Formats @tag as the 8 upper-case hex digits QIDO-RS uses. */
void qido_tag_text(uint32_t tag, char ret_text[9]);

/*
 * Parses a QIDO-RS answer body: a JSON array of DICOM JSON objects. An
 * empty body (204, or 200 with nothing) is zero results, as is "[]".
 * Values become UTF-8 text: several values joined by '\', PN component
 * groups (Alphabetic, Ideographic, Phonetic) joined by '=', numbers
 * printed back as DICOM IS/DS text, sequences as items; BulkDataURI and
 * InlineBinary attributes are kept zero-length. On success the caller
 * owns *@ret_results (free with qido_results_free()).
 */
int qido_parse_results(const char *body, size_t body_len,
                       struct ds ***ret_results, size_t *ret_count, char *err,
                       size_t err_len);

/* Frees what qido_parse_results() returned. Accepts NULL. */
void qido_results_free(struct ds **results, size_t count);

#ifdef __cplusplus
}
#endif

#endif
