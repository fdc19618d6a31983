/* SPDX-License-Identifier: Apache-2.0 */
/*
 * federated_token - see federated_token.h.
 */
#include "federated_token.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "base/util.h"
#include "cred_int.h"
#include "credential.h"

const char *federated_token_path(const char *configured, const char *auth_type,
                                 const char *env_value)
{
    if (configured != NULL && configured[0] != '\0')
        return configured;
    if (auth_type != NULL && strcmp(auth_type, "azure") == 0 &&
        env_value != NULL && env_value[0] != '\0')
        return env_value;
    return NULL;
}

static bool federated_b64url_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/*
 * Checks that @jwt is three base64url segments, the first two JSON
 * objects, and that its exp (if any) is after @now_s.
 */
static int federated_check_jwt(const char *jwt, const char *path, int64_t now_s,
                               char *err, size_t err_len)
{
    const char *seg[3];
    size_t seg_len[3];
    const char *p = jwt;
    cJSON *claims = NULL;
    char *json;
    int64_t exp;
    int r;

    for (int i = 0; i < 3; i++) {
        seg[i] = p;
        while (federated_b64url_char(*p))
            p++;
        seg_len[i] = (size_t)(p - seg[i]);
        if (seg_len[i] == 0 || (i < 2 && *p != '.') || (i == 2 && *p != 0))
            goto out_not_jwt;
        if (i < 2)
            p++;
    }
    for (int i = 0; i < 2; i++) {
        json = cred__base64url_decode(seg[i], seg_len[i], false, NULL);
        cJSON *root = json != NULL ? cJSON_Parse(json) : NULL;
        free(json);
        if (!cJSON_IsObject(root)) {
            cJSON_Delete(root);
            goto out_not_jwt;
        }
        if (i == 0)
            cJSON_Delete(root);
        else
            claims = root;
    }
    if (cred__json_int(cJSON_GetObjectItemCaseSensitive(claims, "exp"), &exp) &&
        exp <= now_s) {
        util_err(err, err_len,
                 "the federated token in '%s' expired %lld s ago: nothing "
                 "refreshes the file (for Kubernetes, check the projected "
                 "service account token volume)",
                 path, (long long)(now_s - exp));
        r = -EKEYEXPIRED;
    } else {
        r = 0;
    }
    cJSON_Delete(claims);
    return r;
out_not_jwt:
    util_err(err, err_len,
             "'%s' does not hold a JWT (three base64url parts separated "
             "by '.'): auth.client_assertion_file must be the federated "
             "token itself",
             path);
    return -EBADMSG;
}

int federated_token_read(const char *path, int64_t now_s, char **ret_token,
                         char *err, size_t err_len)
{
    char *data = NULL;
    size_t len = 0;
    int r;

    r = cred__read_file(path, FEDERATED_MAX_TOKEN, &data, &len, err, err_len);
    if (r < 0)
        return r;
    if (strlen(data) != len) {
        util_err(err, err_len, "'%s' holds a NUL byte: not a token", path);
        r = -EBADMSG;
        goto out_wipe;
    }
    cred__trim(data);
    if (data[0] == '\0') {
        util_err(err, err_len, "'%s' holds only white space", path);
        r = -ENODATA;
        goto out_wipe;
    }
    r = federated_check_jwt(data, path, now_s, err, err_len);
    if (r < 0)
        goto out_wipe;
    *ret_token = data;
    return 0;
out_wipe:
    cred__free_secret_n(data, len);
    return r;
}

int federated_token_form(const char *path, const char *client_id,
                         const char *scope, const char *resource, int64_t now_s,
                         char **ret_form, char *err, size_t err_len)
{
    struct cred_assertion_form form;
    char *token = NULL;
    int r;

    r = federated_token_read(path, now_s, &token, err, err_len);
    if (r < 0)
        return r;
    form.client_id = client_id;
    form.assertion = token;
    form.scope = scope;
    form.resource = resource;
    r = cred_assertion_form_build(&form, ret_form);
    if (r == -EINVAL)
        util_err(err, err_len, "workload identity needs auth.client_id");
    cred__free_secret(token);
    return r;
}
