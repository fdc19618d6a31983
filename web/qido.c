/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qido - see qido.h.
 *
 * DICOM JSON (PS3.18 F.2) per attribute: {"vr": "PN", "Value": [...]}.
 * Value entries are strings, numbers, PN objects {"Alphabetic": ...,
 * "Ideographic": ..., "Phonetic": ...}, items (for SQ) or null (an empty
 * value in a multi-valued attribute).
 */
#include "qido.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "base/util.h"
#include "dicom/dataset.h"
#include "json.h"

/* Deeper sequence nesting than this is refused (a hostile body). */
#define QIDO_MAX_DEPTH 8

/* ------------------------------------------------------------------ */
/* URLs                                                                */
/* ------------------------------------------------------------------ */

static void qido_url_append(struct qido_url *url, const char *text, size_t n)
{
    (void)buf_append(&url->text, text, n);
}

static void qido_url_append_encoded(struct qido_url *url, const char *text,
                                    unsigned flags)
{
    static const char hex[] = "0123456789ABCDEF";

    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        char enc[3];
        /* '*' and '?' are valid in a URI query (RFC 3986 3.4) and are
         * the wildcards: sent as they are, as servers expect them. */
        bool plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                     (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' ||
                     *p == '_' || *p == '~' || *p == '*' || *p == '?' ||
                     ((flags & QIDO_RAW_COMMAS) && *p == ',') ||
                     ((flags & QIDO_RAW_CARET) && *p == '^');

        if (plain) {
            qido_url_append(url, (const char *)p, 1);
            continue;
        }
        enc[0] = '%';
        enc[1] = hex[*p >> 4];
        enc[2] = hex[*p & 15];
        qido_url_append(url, enc, 3);
    }
}

void qido_url_init(struct qido_url *url, const char *path)
{
    memset(url, 0, sizeof(*url));
    buf_init(&url->text, QIDO_URL_MAX);
    qido_url_append(url, path, strlen(path));
}

void qido_url_add(struct qido_url *url, const char *key, const char *value,
                  unsigned flags)
{
    qido_url_append(url, url->has_query ? "&" : "?", 1);
    url->has_query = true;
    qido_url_append_encoded(url, key, 0);
    qido_url_append(url, "=", 1);
    qido_url_append_encoded(url, value, flags);
}

void qido_url_add_uint(struct qido_url *url, const char *key,
                       unsigned long value)
{
    char text[32];

    snprintf(text, sizeof(text), "%lu", value);
    qido_url_add(url, key, text, 0);
}

const char *qido_url_text(const struct qido_url *url)
{
    return url->text.error != 0 ? "" : buf_text(&url->text);
}

int qido_url_error(const struct qido_url *url)
{
    return buf_error(&url->text);
}

char *qido_url_take(struct qido_url *url, int *ret_err)
{
    int r = buf_error(&url->text);
    char *text = buf_take(&url->text, NULL);

    if (text == NULL && ret_err != NULL)
        *ret_err = r < 0 ? r : -ENOMEM;
    return text;
}

void qido_url_free(struct qido_url *url)
{
    buf_free(&url->text);
    url->has_query = false;
}

void qido_tag_text(uint32_t tag, char ret_text[9])
{
    snprintf(ret_text, 9, "%08X", (unsigned)tag);
}

/* ------------------------------------------------------------------ */
/* DICOM JSON                                                          */
/* ------------------------------------------------------------------ */

/* Values are joined in a struct buf of at most QIDO_VALUE_MAX bytes. */
static void qido_text_add(struct buf *t, const char *s, size_t n)
{
    (void)buf_append(t, s, n);
}

static bool qido_parse_tag(const char *key, uint32_t *ret_tag)
{
    uint32_t tag = 0;

    if (strlen(key) != 8)
        return false;
    for (int i = 0; i < 8; i++) {
        char c = key[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else
            return false;
        tag = tag << 4 | d;
    }
    *ret_tag = tag;
    return true;
}

/* Prints a JSON number as DICOM text: integers plainly, DS in at most 16
 * characters. */
static void qido_number_text(double v, const char *vr, char *buf, size_t len)
{
    if (strcmp(vr, "DS") != 0 && strcmp(vr, "FL") != 0 &&
        strcmp(vr, "FD") != 0 && v == floor(v) && fabs(v) < 1e18) {
        snprintf(buf, len, "%lld", (long long)v);
        return;
    }
    for (int precision = 16; precision > 6; precision--) {
        snprintf(buf, len, "%.*g", precision, v);
        if (strlen(buf) <= 16)
            return;
    }
}

/* Appends one PN value: its component groups joined by '=', exactly as
 * the server sent them: up to the last group present, even an empty one
 * ({"Alphabetic": "Wang^XiaoDong", "Ideographic": "...", "Phonetic": ""}
 * is "Wang^XiaoDong=...=", as Orthanc stores and answers it); a group
 * that is absent or null is not there. */
static int qido_pn_text(const cJSON *value, struct buf *t, char *err,
                        size_t err_len)
{
    static const char *groups[] = { "Alphabetic", "Ideographic", "Phonetic" };
    size_t last = 0;
    const char *parts[3] = { NULL, NULL, NULL };

    if (cJSON_IsString(value)) {
        qido_text_add(t, value->valuestring, strlen(value->valuestring));
        return 0;
    }
    if (!cJSON_IsObject(value)) {
        util_err(err, err_len, "a PN value is neither an object nor text");
        return -EBADMSG;
    }
    for (size_t g = 0; g < 3; g++) {
        const cJSON *part = cJSON_GetObjectItemCaseSensitive(value, groups[g]);
        if (part == NULL || cJSON_IsNull(part))
            continue;
        if (!cJSON_IsString(part)) {
            util_err(err, err_len, "PN %s is not text", groups[g]);
            return -EBADMSG;
        }
        parts[g] = part->valuestring;
        last = g + 1;
    }
    for (size_t g = 0; g < last; g++) {
        if (g > 0)
            qido_text_add(t, "=", 1);
        if (parts[g] != NULL)
            qido_text_add(t, parts[g], strlen(parts[g]));
    }
    return 0;
}

static int qido_parse_object(const cJSON *object, struct ds *ds, int depth,
                             char *err, size_t err_len);

/* The items of sequence @elem (its "Value" array @values) as the items
 * of a new SQ attribute @tag of @ds. */
static int qido_parse_sequence(const cJSON *elem, const cJSON *values,
                               uint32_t tag, struct ds *ds, int depth,
                               char *err, size_t err_len)
{
    struct ds_attr *attr = ds_put(ds, tag, "SQ", NULL);
    const cJSON *value;
    int r;

    if (attr == NULL)
        return -ENOMEM;
    if (depth >= QIDO_MAX_DEPTH) {
        util_err(err, err_len, "sequences nested deeper than %d",
                 QIDO_MAX_DEPTH);
        return -EBADMSG;
    }
    cJSON_ArrayForEach(value, values)
    {
        struct ds *item;
        if (!cJSON_IsObject(value)) {
            util_err(err, err_len, "sequence %s: an item is not an object",
                     elem->string);
            return -EBADMSG;
        }
        item = ds_add_item(attr);
        if (item == NULL)
            return -ENOMEM;
        r = qido_parse_object(value, item, depth + 1, err, err_len);
        if (r < 0)
            return r;
    }
    return 0;
}

static int qido_parse_attribute(const cJSON *elem, struct ds *ds, int depth,
                                char *err, size_t err_len)
{
    const cJSON *vr_json = cJSON_GetObjectItemCaseSensitive(elem, "vr");
    const cJSON *values = cJSON_GetObjectItemCaseSensitive(elem, "Value");
    struct buf text;
    const cJSON *value;
    char vr[3];
    uint32_t tag;
    size_t i = 0;
    int r = 0;

    if (!qido_parse_tag(elem->string, &tag)) {
        /* The name is the server's text: quoted only when it is short
         * and plain (a keyword, say), never a value it echoed. */
        bool plain = strlen(elem->string) <= 16 &&
                     strspn(elem->string, "0123456789ABCDEFGHIJKLMNOPQRSTUV"
                                          "WXYZabcdefghijklmnopqrstuvwxyz") ==
                         strlen(elem->string);
        util_err(err, err_len,
                 "member %s%s%sis not a DICOM JSON tag (8 hex "
                 "digits)",
                 plain ? "'" : "", plain ? elem->string : "",
                 plain ? "' " : "");
        return -EBADMSG;
    }
    if (!cJSON_IsObject(elem) || !cJSON_IsString(vr_json) ||
        strlen(vr_json->valuestring) != 2) {
        util_err(err, err_len, "attribute %s has no valid \"vr\"",
                 elem->string);
        return -EBADMSG;
    }
    memcpy(vr, vr_json->valuestring, 3);
    if (values != NULL && !cJSON_IsArray(values)) {
        util_err(err, err_len, "attribute %s: \"Value\" is not an array",
                 elem->string);
        return -EBADMSG;
    }
    if (strcmp(vr, "SQ") == 0)
        return qido_parse_sequence(elem, values, tag, ds, depth, err, err_len);

    buf_init(&text, QIDO_VALUE_MAX);
    cJSON_ArrayForEach(value, values)
    {
        if (i++ > 0)
            qido_text_add(&text, "\\", 1);
        if (cJSON_IsNull(value))
            continue;
        if (strcmp(vr, "PN") == 0) {
            r = qido_pn_text(value, &text, err, err_len);
        } else if (cJSON_IsString(value)) {
            qido_text_add(&text, value->valuestring,
                          strlen(value->valuestring));
        } else if (cJSON_IsNumber(value)) {
            char number[40];
            qido_number_text(value->valuedouble, vr, number, sizeof(number));
            qido_text_add(&text, number, strlen(number));
        } else {
            util_err(err, err_len,
                     "attribute %s: a value is neither text "
                     "nor a number",
                     elem->string);
            r = -EBADMSG;
        }
        if (r < 0)
            break;
    }
    if (r == 0 && buf_error(&text) == -E2BIG) {
        util_err(err, err_len, "attribute %s: values over %d bytes",
                 elem->string, QIDO_VALUE_MAX);
        r = -EBADMSG;
    } else if (r == 0 && buf_error(&text) < 0) {
        r = -ENOMEM;
    }
    if (r == 0 && ds_put(ds, tag, vr, text.p) == NULL)
        r = -ENOMEM;
    buf_free(&text);
    return r;
}

static int qido_parse_object(const cJSON *object, struct ds *ds, int depth,
                             char *err, size_t err_len)
{
    const cJSON *elem;

    cJSON_ArrayForEach(elem, object)
    {
        int r = qido_parse_attribute(elem, ds, depth, err, err_len);
        if (r < 0)
            return r;
    }
    return 0;
}

void qido_results_free(struct ds **results, size_t count)
{
    if (results == NULL)
        return;
    for (size_t i = 0; i < count; i++)
        ds_free(results[i]);
    free(results);
}

int qido_parse_results(const char *body, size_t body_len,
                       struct ds ***ret_results, size_t *ret_count, char *err,
                       size_t err_len)
{
    struct ds **results = NULL;
    const cJSON *object;
    cJSON *root;
    size_t count = 0;
    size_t n;
    int r = 0;

    *ret_results = NULL;
    *ret_count = 0;
    n = 0;
    while (n < body_len && (body[n] == ' ' || body[n] == '\t' ||
                            body[n] == '\r' || body[n] == '\n'))
        n++;
    if (n == body_len)
        return 0; /* 204, or 200 with no body: no results */

    char why[128];
    if (json_parse(body, body_len, &root, why, sizeof(why)) < 0) {
        util_err(err, err_len, "the answer is %s", why);
        return -EBADMSG;
    }
    if (!cJSON_IsArray(root)) {
        util_err(err, err_len, "the answer is not a JSON array");
        cJSON_Delete(root);
        return -EBADMSG;
    }
    n = (size_t)cJSON_GetArraySize(root);
    if (n > 0) {
        results = calloc(n, sizeof(*results));
        if (results == NULL) {
            cJSON_Delete(root);
            return -ENOMEM;
        }
    }
    cJSON_ArrayForEach(object, root)
    {
        if (!cJSON_IsObject(object)) {
            util_err(err, err_len, "result %zu is not a JSON object",
                     count + 1);
            r = -EBADMSG;
            break;
        }
        results[count] = ds_new();
        if (results[count] == NULL) {
            r = -ENOMEM;
            break;
        }
        count++;
        r = qido_parse_object(object, results[count - 1], 0, err, err_len);
        if (r < 0)
            break;
    }
    cJSON_Delete(root);
    if (r < 0) {
        qido_results_free(results, count);
        return r;
    }
    *ret_results = results;
    *ret_count = count;
    return 0;
}
