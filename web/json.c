/* SPDX-License-Identifier: Apache-2.0 */
/*
 * json - see json.h.
 */
#include "json.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>

#include <cjson/cJSON.h>

/* Offset of the bracket that opens level JSON_MAX_DEPTH + 1, or -1 when
 * the text nests no deeper than JSON_MAX_DEPTH (strings are skipped). */
static long json_too_deep_at(const char *text, size_t len)
{
    bool in_string = false;
    size_t depth = 0;

    for (size_t i = 0; i < len; i++) {
        char c = text[i];

        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > JSON_MAX_DEPTH)
                return (long)i;
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return -1;
}

int json_parse(const char *text, size_t len, struct cJSON **ret_root, char *err,
               size_t err_len)
{
    const char *end = NULL;
    long deep = json_too_deep_at(text, len);
    cJSON *root;

    if (deep >= 0) {
        if (err != NULL && err_len > 0)
            snprintf(err, err_len,
                     "nested deeper than %d levels (at byte "
                     "%ld)",
                     JSON_MAX_DEPTH, deep);
        return -EBADMSG;
    }
    root = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (root == NULL) {
        if (err != NULL && err_len > 0)
            snprintf(err, err_len, "not JSON (at byte %ld)",
                     end != NULL && end >= text ? (long)(end - text) : 0L);
        return -EBADMSG;
    }
    *ret_root = root;
    return 0;
}
