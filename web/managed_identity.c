/* SPDX-License-Identifier: Apache-2.0 */
/*
 * managed_identity - see managed_identity.h.
 */
#include "managed_identity.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "base/util.h"
#include "cred_http.h"
#include "cred_int.h"
#include "credential.h"

static const char *mi_or_null(const char *s)
{
    return s != NULL && s[0] != '\0' ? s : NULL;
}

void mi_env_from_process(struct mi_env *ret_env)
{
    memset(ret_env, 0, sizeof(*ret_env));
    ret_env->identity_endpoint = mi_or_null(getenv("IDENTITY_ENDPOINT"));
    ret_env->imds_endpoint = mi_or_null(getenv("IMDS_ENDPOINT"));
    ret_env->identity_header = mi_or_null(getenv("IDENTITY_HEADER"));
    ret_env->msi_endpoint = mi_or_null(getenv("MSI_ENDPOINT"));
    ret_env->arc_agent_installed = access(MI_ARC_AGENT, F_OK) == 0;
}

/* The flavor @env says, or -EINVAL for a host kind we do not serve. */
static int mi_detect(const struct mi_env *env, enum mi_flavor *ret_flavor,
                     char *err, size_t err_len)
{
    if (env->identity_endpoint != NULL && env->identity_header != NULL) {
        util_err(err, err_len,
                 "IDENTITY_ENDPOINT and IDENTITY_HEADER are set: this is "
                 "Azure App Service, Functions, Container Apps or Service "
                 "Fabric, whose managed identity stowbridge does not "
                 "support; use a certificate or workload identity "
                 "(auth.client_assertion_file) instead");
        return -EINVAL;
    }
    if ((env->identity_endpoint != NULL && env->imds_endpoint != NULL) ||
        env->arc_agent_installed) {
        *ret_flavor = MI_ARC;
        return 0;
    }
    if (env->msi_endpoint != NULL) {
        util_err(err, err_len,
                 "MSI_ENDPOINT is set: this is Azure Cloud Shell, whose "
                 "identity is a user's; use auth.type \"command\" with the "
                 "Azure CLI instead");
        return -EINVAL;
    }
    *ret_flavor = MI_IMDS;
    return 0;
}

/* @url with a "localhost" host replaced by 127.0.0.1, as MSAL does (the
 * agent listens on IPv4 only). New string or NULL. */
static char *mi_arc_url(const char *url)
{
    static const char local[] = "//localhost";
    const char *at = strstr(url, local);
    size_t out_size;
    char *out;

    if (at == NULL ||
        (at[sizeof(local) - 1] != ':' && at[sizeof(local) - 1] != '/' &&
         at[sizeof(local) - 1] != '\0'))
        return strdup(url);
    out_size = strlen(url) + 2;
    out = malloc(out_size);
    if (out == NULL)
        return NULL;
    snprintf(out, strlen(url) + 2, "%.*s//127.0.0.1%s", (int)(at - url), url,
             at + sizeof(local) - 1);
    return out;
}

int mi_resolve(const struct mi_params *params, const struct mi_env *env,
               enum mi_flavor *ret_flavor, char **ret_url, char *err,
               size_t err_len)
{
    const char *resource = mi_or_null(params->resource) != NULL
                               ? params->resource
                               : CRED_AZURE_DICOM_RESOURCE;
    const char *client_id = mi_or_null(params->client_id);
    enum mi_flavor flavor = params->flavor;
    char *query = NULL;
    char *base;
    char *url;
    bool ok;
    int r;

    if (flavor == MI_DETECT) {
        r = mi_detect(env, &flavor, err, err_len);
        if (r < 0)
            return r;
    }
    if (flavor == MI_ARC && client_id != NULL) {
        util_err(err, err_len,
                 "Azure Arc offers only the machine's system-assigned "
                 "identity: remove auth.client_id (%s)",
                 client_id);
        return -EINVAL;
    }
    if (mi_or_null(params->endpoint) != NULL)
        base = strdup(params->endpoint);
    else if (flavor == MI_ARC)
        base =
            mi_arc_url(env->identity_endpoint != NULL ? env->identity_endpoint
                                                      : MI_ARC_URL);
    else
        base = strdup(MI_IMDS_URL);
    if (base == NULL)
        return -ENOMEM;
    ok = cred__form_add(&query, "api-version",
                        flavor == MI_ARC ? MI_ARC_API_VERSION
                                         : MI_IMDS_API_VERSION);
    ok = ok && cred__form_add(&query, "resource", resource);
    if (ok && client_id != NULL)
        ok = cred__form_add(&query, "client_id", client_id);
    size_t url_len = ok ? strlen(base) + 1 + strlen(query) + 1 : 0;
    url = ok ? malloc(url_len) : NULL;
    if (url == NULL) {
        free(base);
        free(query);
        return -ENOMEM;
    }
    snprintf(url, url_len, "%s%c%s", base,
             strchr(base, '?') != NULL ? '&' : '?', query);
    free(base);
    free(query);
    *ret_flavor = flavor;
    *ret_url = url;
    return 0;
}

/* Whether @s is one printable line without spaces (a header value). */
static bool mi_printable_word(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

/* A hint for what an error answer usually means, or "". */
static const char *mi_hint(long status, const char *description)
{
    if (status == 400 && description != NULL &&
        strstr(description, "Identity not found") != NULL)
        return ": no managed identity is assigned to this machine, or "
               "auth.client_id names a user-assigned identity that is not "
               "attached to it (Azure portal: the VM's Identity blade)";
    if (status == 410)
        return ": the instance metadata service is being updated, it is "
               "back within 70 s";
    if (status == 429)
        return ": too many requests, will retry";
    return "";
}

int mi_parse_answer(long status, const char *body, size_t len, int64_t now_s,
                    const char *what, struct cred_token *ret_token, char *err,
                    size_t err_len)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *item;
    int64_t expires_in = 0;
    int64_t expires_on = 0;
    int64_t lifetime = -1;
    bool have_in;
    bool have_on;
    int r;

    if (status != 200) {
        const char *error;
        const char *description;
        char text[256] = "";

        cred__oauth_error(root, &error, &description);
        if (description != NULL)
            cred_redact_line(description, strlen(description), text,
                             sizeof(text));
        util_err(err, err_len, "%s answered HTTP %ld%s%s%s%s%s", what, status,
                 error != NULL ? ": error=" : "", error != NULL ? error : "",
                 text[0] != '\0' ? ": " : "", text,
                 mi_hint(status, description));
        if (status == 404 || status == 408 || status == 410 || status == 429 ||
            status >= 500 || status < 400)
            r = -EAGAIN;
        else
            r = -EACCES;
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        util_err(err, err_len,
                 "%s answered 200 with a body that is not "
                 "a JSON object (%zu bytes)",
                 what, len);
        r = -EBADMSG;
        goto out;
    }
    item = cJSON_GetObjectItemCaseSensitive(root, "access_token");
    if (!cJSON_IsString(item) || item->valuestring[0] == '\0' ||
        !mi_printable_word(item->valuestring)) {
        util_err(err, err_len,
                 "%s answered 200 without a usable "
                 "access_token",
                 what);
        r = -EBADMSG;
        goto out;
    }
    have_in = cred__json_int(
        cJSON_GetObjectItemCaseSensitive(root, "expires_in"), &expires_in);
    have_on = cred__json_int(
        cJSON_GetObjectItemCaseSensitive(root, "expires_on"), &expires_on);
    if (have_in && expires_in > 0)
        lifetime = expires_in;
    else if (have_on)
        lifetime = expires_on - now_s;
    else if (have_in)
        lifetime = expires_in;
    if ((have_in || have_on) && lifetime <= 0) {
        util_err(err, err_len,
                 "%s answered with a token that has already "
                 "expired (check this machine's clock)",
                 what);
        r = -EBADMSG;
        goto out;
    }
    r = cred__token_set(ret_token, item->valuestring, lifetime);
out:
    cJSON_Delete(root);
    return r;
}

/* Checks the path @file named by an Arc challenge against @dir. */
static int mi_arc_check_path(const char *file, const char *dir, char *err,
                             size_t err_len)
{
    size_t dir_len = strlen(dir);
    const char *name;
    size_t name_len;

    while (dir_len > 1 && dir[dir_len - 1] == '/')
        dir_len--;
    if (strncmp(file, dir, dir_len) != 0 || file[dir_len] != '/') {
        util_err(err, err_len,
                 "the Azure Arc challenge names '%s', which is not in %.*s: "
                 "refused (is something other than the Arc agent listening "
                 "on the identity endpoint?)",
                 file, (int)dir_len, dir);
        return -EPERM;
    }
    name = file + dir_len + 1;
    name_len = strlen(name);
    if (name_len <= 4 || strchr(name, '/') != NULL || name[0] == '.' ||
        strcmp(name + name_len - 4, ".key") != 0) {
        util_err(err, err_len,
                 "the Azure Arc challenge names '%s', which is not a .key "
                 "file directly in %.*s: refused",
                 file, (int)dir_len, dir);
        return -EPERM;
    }
    return 0;
}

/* Opens the Arc key file @file (no symbolic link). Returns the fd, or
 * -EACCES (not in the himds group), -EPERM (a link), -EAGAIN (else),
 * with the reason. */
static int mi_arc_open_key(const char *file, char *err, size_t err_len)
{
    int fd =
        open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
    int r;

    if (fd >= 0)
        return fd;
    r = -errno;
    if (r == -EACCES || r == -EPERM) {
        util_err(err, err_len,
                 "cannot read the Azure Arc key file '%s': %s: the "
                 "service must run as root or in the himds group "
                 "(SupplementaryGroups=himds), with the token "
                 "directory readable (ReadOnlyPaths=" MI_ARC_TOKEN_DIR ")",
                 file, strerror(-r));
        return -EACCES;
    }
    if (r == -ELOOP) {
        util_err(err, err_len,
                 "the Azure Arc key file '%s' is a "
                 "symbolic link: refused",
                 file);
        return -EPERM;
    }
    util_err(err, err_len,
             "cannot open the Azure Arc key file '%s': "
             "%s",
             file, strerror(-r));
    return -EAGAIN;
}

/* Reads the checked key file @file into a new string. */
static int mi_arc_read_key(const char *file, char **ret_key, char *err,
                           size_t err_len)
{
    char buf[MI_ARC_MAX_KEY + 2];
    struct stat st;
    size_t len = 0;
    char *key;
    int fd;
    int r;

    fd = mi_arc_open_key(file, err, err_len);
    if (fd < 0)
        return fd;
    if (fstat(fd, &st) < 0) {
        r = -errno;
        util_err(err, err_len, "fstat() '%s' failed: %s", file, strerror(-r));
        goto out_close;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > MI_ARC_MAX_KEY) {
        util_err(err, err_len,
                 S_ISREG(st.st_mode)
                     ? "the Azure Arc key file '%s' is larger than %d "
                       "bytes: refused"
                     : "the Azure Arc key file '%s' is not a regular file "
                       "(limit %d bytes): refused",
                 file, MI_ARC_MAX_KEY);
        r = -EPERM;
        goto out_close;
    }
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = -errno;
            util_err(err, err_len, "read() '%s' failed: %s", file,
                     strerror(-r));
            goto out_wipe;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > MI_ARC_MAX_KEY) {
            util_err(err, err_len,
                     "the Azure Arc key file '%s' is larger "
                     "than %d bytes: refused",
                     file, MI_ARC_MAX_KEY);
            r = -EPERM;
            goto out_wipe;
        }
    }
    buf[len] = '\0';
    while (len > 0 && strchr(" \t\r\n", buf[len - 1]) != NULL)
        buf[--len] = '\0';
    if (len == 0 || !mi_printable_word(buf)) {
        util_err(err, err_len, "the Azure Arc key file '%s' is %s", file,
                 len == 0 ? "empty" : "not one printable word: refused");
        r = -EBADMSG;
        goto out_wipe;
    }
    key = strdup(buf);
    if (key == NULL) {
        r = -ENOMEM;
        goto out_wipe;
    }
    *ret_key = key;
    r = 0;
out_wipe:
    explicit_bzero(buf, sizeof(buf));
out_close:
    (void)close(fd);
    return r;
}

int mi_arc_read_challenge(const char *www_authenticate, const char *token_dir,
                          char **ret_key, char *err, size_t err_len)
{
    static const char realm[] = "Basic realm=";
    const char *at =
        www_authenticate != NULL ? strcasestr(www_authenticate, realm) : NULL;
    char *file;
    int r;

    if (at == NULL) {
        util_err(err, err_len,
                 "the Azure Arc identity endpoint answered 401 without "
                 "'WWW-Authenticate: Basic realm=<key file>'");
        return -EBADMSG;
    }
    file = strdup(at + sizeof(realm) - 1);
    if (file == NULL)
        return -ENOMEM;
    cred__trim(file);
    if (file[0] == '"') {
        size_t n = strlen(file);
        memmove(file, file + 1, n);
        if (n >= 2 && file[n - 2] == '"')
            file[n - 2] = '\0';
    }
    if (!mi_printable_word(file)) {
        util_err(err, err_len,
                 "the Azure Arc challenge names no usable "
                 "file path: refused");
        r = -EPERM;
        goto out;
    }
    r = mi_arc_check_path(
        file, token_dir != NULL ? token_dir : MI_ARC_TOKEN_DIR, err, err_len);
    if (r == 0)
        r = mi_arc_read_key(file, ret_key, err, err_len);
out:
    free(file);
    return r;
}

static int mi_request(const char *url, const char *authorization,
                      unsigned timeout_s, struct cred_http_response *ret,
                      const char *what, char *err, size_t err_len)
{
    const char *headers[3] = { "Metadata: true", authorization, NULL };
    struct cred_http_request req;
    char why[256] = "";
    int r;

    memset(&req, 0, sizeof(req));
    req.url = url;
    req.headers = headers;
    req.timeout_s = timeout_s > 0 ? timeout_s : 10;
    req.no_proxy = true;
    r = cred_http_perform(&req, ret, why, sizeof(why));
    if (r == -EAGAIN)
        util_err(err, err_len, "%s is unreachable (%s)%s", what, why,
                 strstr(what, "Arc") != NULL
                     ? ": is the Azure Connected Machine agent (himds) "
                       "running?"
                     : ": this is not an Azure VM, or something blocks "
                       "169.254.169.254");
    return r;
}

int mi_get_token(const struct mi_params *params, const struct mi_env *env,
                 int64_t now_s, struct cred_token *ret_token, char *err,
                 size_t err_len)
{
    struct cred_http_response resp;
    enum mi_flavor flavor;
    char *authorization = NULL;
    char *key = NULL;
    char *url = NULL;
    const char *what;
    int r;

    memset(&resp, 0, sizeof(resp));
    r = mi_resolve(params, env, &flavor, &url, err, err_len);
    if (r < 0)
        return r;
    what = flavor == MI_ARC ? "the Azure Arc identity endpoint"
                            : "the Azure instance metadata endpoint";
    r = mi_request(url, NULL, params->timeout_s, &resp, what, err, err_len);
    if (r < 0)
        goto out;
    if (flavor == MI_ARC && resp.status == 401) {
        r = mi_arc_read_challenge(resp.www_authenticate, params->arc_token_dir,
                                  &key, err, err_len);
        if (r < 0)
            goto out;
        size_t auth_len = strlen(key) + sizeof("Authorization: Basic ");
        authorization = malloc(auth_len);
        if (authorization == NULL) {
            r = -ENOMEM;
            goto out;
        }
        snprintf(authorization, auth_len, "Authorization: Basic %s", key);
        cred_http_response_free(&resp);
        r = mi_request(url, authorization, params->timeout_s, &resp, what, err,
                       err_len);
        if (r < 0)
            goto out;
        if (resp.status == 401) {
            util_err(err, err_len,
                     "%s refused the key of its own challenge file (HTTP "
                     "401): the agent may have rotated it, will retry",
                     what);
            r = -EAGAIN;
            goto out;
        }
    }
    r = mi_parse_answer(resp.status, resp.body, resp.body_len, now_s, what,
                        ret_token, err, err_len);
out:
    cred_http_response_free(&resp);
    cred__free_secret(authorization);
    cred__free_secret(key);
    free(url);
    return r;
}
