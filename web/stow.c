/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stow - see stow.h.
 *
 * DICOM JSON (PS3.18 F.2): the response is an object keyed by tags
 * "GGGGEEEE"; a sequence is {"vr": "SQ", "Value": [item, ...]}, an item an
 * object of the same kind; a UI value is {"vr": "UI", "Value": ["1.2.3"]},
 * a US value {"vr": "US", "Value": [45070]}.
 */
#include "stow.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "base/util.h"
#include "dicom/tags.h"
#include "http.h"
#include "json.h"

enum stow_request_action stow_request_action(long status)
{
    switch (status) {
    case 200:
    case 202:
    case 409:
        return STOW_READ_BODY;
    case 400:
    case 413:
    case 415:
        return STOW_SPLIT_BATCH;
    case 401:
        return STOW_REFRESH_TOKEN;
    case 403:
        return STOW_FORBIDDEN;
    default:
        return http_is_redirect(status) ? STOW_REDIRECTED : STOW_RETRY_LATER;
    }
}

enum stow_outcome stow_failure_outcome(uint16_t reason)
{
    if (reason == 0xB00E)
        return STOW_DELIVERED; /* already exists */
    if (reason == 0xB00F || (reason & 0xFF00) == 0xA700 || reason == 0x0110)
        return STOW_RETRY; /* pending, resources, processing */
    return STOW_REJECTED;
}

const char *stow_reason_text(uint16_t reason)
{
    switch (reason) {
    case 0x0000:
        return "none";
    case 0x0110:
        return "processing failure";
    case 0x0111:
        return "duplicate SOP Instance";
    case 0x0117:
        return "invalid SOP Instance";
    case 0x0120:
        return "missing attribute";
    case 0x0121:
        return "missing attribute value";
    case 0x0122:
        return "SOP Class not supported";
    case 0x0124:
        return "not authorized";
    case 0xB000:
        return "coercion of data elements";
    case 0xB006:
        return "elements discarded";
    case 0xB007:
        return "data set does not match SOP Class";
    case 0xB00E:
        return "instance already exists";
    case 0xB00F:
        return "instance pending (being stored)";
    case 0xC122:
        return "Referenced Transfer Syntax not supported / UID mismatch";
    default:
        break;
    }
    switch (reason & 0xFF00) {
    case 0xA700:
        return "out of resources";
    case 0xA900:
        return "data set does not match SOP Class";
    case 0xC000:
    case 0xC100:
    case 0xC200:
    case 0xC300:
    case 0xC400:
    case 0xC500:
    case 0xC600:
    case 0xC700:
    case 0xC800:
    case 0xC900:
    case 0xCA00:
    case 0xCB00:
    case 0xCC00:
    case 0xCD00:
    case 0xCE00:
    case 0xCF00:
        return "cannot understand";
    default:
        return "unknown reason";
    }
}

/* The first string of a UI element, or NULL. */
static const char *stow_first_string(const cJSON *item, uint32_t tag)
{
    char key[9];
    const cJSON *elem;
    const cJSON *value;
    const cJSON *first;

    dicom_tag_json_key(tag, key);
    elem = cJSON_GetObjectItemCaseSensitive(item, key);
    value = cJSON_GetObjectItemCaseSensitive(elem, "Value");
    first = cJSON_GetArrayItem(value, 0);
    return cJSON_IsString(first) ? first->valuestring : NULL;
}

/* The first number of a US element as a code; false if absent or bad. */
static bool stow_first_code(const cJSON *item, uint32_t tag, uint16_t *ret_code)
{
    char key[9];
    const cJSON *elem;
    const cJSON *value;
    const cJSON *first;
    double v;

    dicom_tag_json_key(tag, key);
    elem = cJSON_GetObjectItemCaseSensitive(item, key);
    value = cJSON_GetObjectItemCaseSensitive(elem, "Value");
    first = cJSON_GetArrayItem(value, 0);

    if (!cJSON_IsNumber(first))
        return false;
    v = first->valuedouble;
    if (v < 0 || v > 65535 || v != (double)(uint16_t)v)
        return false;
    *ret_code = (uint16_t)v;
    return true;
}

/* Index of @uid in @sop_uids at or after @from, or -1. */
static long stow_find_from(const char *const *sop_uids, size_t count,
                           const char *uid, size_t from)
{
    for (size_t i = from; i < count; i++)
        if (strcmp(sop_uids[i], uid) == 0)
            return (long)i;
    return -1;
}

static long stow_find(const char *const *sop_uids, size_t count,
                      const char *uid)
{
    return stow_find_from(sop_uids, count, uid, 0);
}

/*
 * Applies the items of sequence @tag in @root to @results. @failed selects
 * the Failed SOP Sequence semantics. Returns 0 or -EBADMSG.
 */
static int stow_apply_sequence(const cJSON *root, uint32_t seq_tag, bool failed,
                               const char *const *sop_uids, size_t count,
                               struct stow_instance_result *results, char *err,
                               size_t err_len)
{
    const cJSON *seq;
    const cJSON *items;
    const cJSON *item;
    char tag[9];

    dicom_tag_json_key(seq_tag, tag);
    seq = cJSON_GetObjectItemCaseSensitive(root, tag);

    if (seq == NULL)
        return 0;
    items = cJSON_GetObjectItemCaseSensitive(seq, "Value");
    if (!cJSON_IsObject(seq) || (items != NULL && !cJSON_IsArray(items))) {
        util_err(err, err_len, "sequence %s is not a DICOM JSON sequence", tag);
        return -EBADMSG;
    }
    cJSON_ArrayForEach(item, items)
    {
        const char *uid;
        uint16_t code = 0;
        long i;

        if (!cJSON_IsObject(item)) {
            util_err(err, err_len, "an item of %s is not an object", tag);
            return -EBADMSG;
        }
        uid = stow_first_string(item, DCM_TAG_ReferencedSOPInstanceUID);
        if (uid == NULL) {
            util_err(err, err_len,
                     "an item of %s has no ReferencedSOPInstanceUID "
                     "(0008,1155)",
                     tag);
            return -EBADMSG;
        }
        /* The same instance may be in a batch twice (sent twice by the
         * modality): the answer speaks for every copy. */
        for (i = stow_find(sop_uids, count, uid); i >= 0;
             i = stow_find_from(sop_uids, count, uid, (size_t)i + 1)) {
            if (failed) {
                if (!stow_first_code(item, DCM_TAG_FailureReason, &code))
                    code = 0x0110; /* failed, reason not given */
                results[i].outcome = stow_failure_outcome(code);
                results[i].reason = code;
            } else {
                /* The Failed SOP Sequence is applied after this one, so a
                 * UID listed in both counts as failed. */
                results[i].outcome = STOW_DELIVERED;
                results[i].reason =
                    stow_first_code(item, DCM_TAG_WarningReason, &code) ? code
                                                                        : 0;
            }
        }
    }
    return 0;
}

int stow_parse_response(long http_status, const char *body, size_t body_len,
                        const char *const *sop_uids, size_t count,
                        struct stow_instance_result *ret_results, char *err,
                        size_t err_len)
{
    struct stow_instance_result *results;
    const cJSON *obj;
    cJSON *root = NULL;
    char why[128];
    bool blank = true;
    int r = 0;

    results = calloc(count > 0 ? count : 1, sizeof(*results));
    if (results == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < count; i++) {
        results[i].outcome = STOW_RETRY;
        results[i].reason = 0;
        results[i].http_status = http_status;
    }
    for (size_t i = 0; i < body_len && blank; i++)
        blank = body[i] == ' ' || body[i] == '\n' || body[i] == '\r' ||
                body[i] == '\t';
    if (blank) {
        if (http_status != 200) {
            util_err(err, err_len, "HTTP %ld with an empty body", http_status);
            r = -EBADMSG;
            goto out;
        }
        for (size_t i = 0; i < count; i++)
            results[i].outcome = STOW_DELIVERED;
        memcpy(ret_results, results, count * sizeof(results[0]));
        goto out;
    }

    r = json_parse(body, body_len, &root, why, sizeof(why));
    if (r < 0) {
        util_err(err, err_len, "the body is %s", why);
        goto out;
    }
    /* Servers answer an object; some wrap it in a one-element array. */
    obj = root;
    if (cJSON_IsArray(root) && cJSON_GetArraySize(root) == 1)
        obj = cJSON_GetArrayItem(root, 0);
    if (!cJSON_IsObject(obj)) {
        util_err(err, err_len, "the body is not a DICOM JSON object");
        r = -EBADMSG;
        goto out;
    }
    r = stow_apply_sequence(obj, DCM_TAG_ReferencedSOPSequence, false, sop_uids,
                            count, results, err, err_len);
    if (r == 0)
        r = stow_apply_sequence(obj, DCM_TAG_FailedSOPSequence, true, sop_uids,
                                count, results, err, err_len);
    if (r == 0)
        memcpy(ret_results, results, count * sizeof(results[0]));
out:
    cJSON_Delete(root);
    free(results);
    return r;
}
