/* SPDX-License-Identifier: Apache-2.0 */
/*
 * json - parsing a server's JSON answer with a depth limit that can be
 * named. cJSON gives up at CJSON_NESTING_LIMIT (1000) levels and reports
 * only the byte it stopped at ("not JSON (at byte 1000)"); a body nested
 * deeper than any DICOM JSON, OAuth or STOW-RS answer can be is refused
 * here first, before cJSON recurses into it, with "nested deeper than
 * JSON_MAX_DEPTH levels".
 *
 * Thread safety: reentrant (cJSON's global error pointer is not used).
 * Errors: -EBADMSG with the reason in @err; -ENOMEM.
 */
#ifndef STOWBRIDGE_JSON_H
#define STOWBRIDGE_JSON_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cJSON;

/* Arrays and objects nested deeper than this are refused. DICOM JSON
 * needs 3 levels per sequence (attribute, Value, item) plus 2: QIDO-RS
 * answers with 8 nested sequences (qido.h) stay far below. */
#define JSON_MAX_DEPTH 64

/*
 * Parses @len bytes at @text (trailing bytes after the value are
 * ignored, as servers may add a newline) into *@ret_root (the caller
 * deletes it with cJSON_Delete()). -EBADMSG: "nested deeper than 64
 * levels (at byte N)" or "not JSON (at byte N)" in @err.
 */
int json_parse(const char *text, size_t len, struct cJSON **ret_root, char *err,
               size_t err_len);

#ifdef __cplusplus
}
#endif

#endif
