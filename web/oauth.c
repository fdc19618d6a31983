/* SPDX-License-Identifier: Apache-2.0 */
/*
 * oauth - see oauth.h.
 */
#include "oauth.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <pthread.h>

#include "base/util.h"
#include "cred_int.h"
#include "credential.h"
#include "dicom/redact.h"
#include "entra_errors.h"
#include "federated_token.h"
#include "http.h"
#include "json.h"
#include "jwt_assertion.h"
#include "managed_identity.h"
#include "token_command.h"

/* The audience of tokens for the Azure Health Data Services DICOM service. */
#define OAUTH_AZURE_DICOM_AUDIENCE "https://dicom.healthcareapis.azure.com"

void oauth_token_free(struct oauth_token *token)
{
    if (token == NULL)
        return;
    if (token->access_token != NULL) {
        explicit_bzero(token->access_token, strlen(token->access_token));
        free(token->access_token);
    }
    free(token->token_type);
    token->access_token = NULL;
    token->token_type = NULL;
}

/* Errors that no retry will cure: the configuration is wrong. */
static bool oauth_error_is_permanent(const char *error)
{
    static const char *const permanent[] = {
        "invalid_client",   "unauthorized_client", "invalid_grant",
        "invalid_scope",    "invalid_request",     "unsupported_grant_type",
        "invalid_resource", "unauthorized",
    };
    for (size_t i = 0; i < sizeof(permanent) / sizeof(permanent[0]); i++)
        if (strcmp(error, permanent[i]) == 0)
            return true;
    return false;
}

/* Cleans @text (server text) into @out, hiding the values of @hide (NULL:
 * the set could not be made, the text is withheld): first line only, at
 * most @max bytes. */
static void oauth_server_text(const struct redact *hide, const char *text,
                              size_t max, char *out, size_t out_len)
{
    redact_text(hide, text, strcspn(text, "\r\n"), max, out, out_len);
}

/* Reads expires_in @item into @token: a lifetime, absent, or no lifetime
 * (then what was received goes into expires_in_bad). */
static void oauth_read_expires_in(const cJSON *item, const struct redact *hide,
                                  struct oauth_token *token)
{
    char text[32];
    double v = 0;
    bool number = false;

    token->expires_in_s = -1;
    token->expires_in_bad[0] = '\0';
    if (item == NULL || cJSON_IsNull(item))
        return;
    if (cJSON_IsNumber(item)) {
        v = item->valuedouble;
        number = true;
        snprintf(token->expires_in_bad, sizeof(token->expires_in_bad), "%.15g",
                 v);
    } else if (cJSON_IsString(item)) {
        /* Entra v1 endpoints send "3599": decimal digits only (strtod
         * alone would take "inf", "nan" and hex). */
        const char *p = item->valuestring;
        char *end = NULL;
        if (p[0] != '\0' && strspn(p, " 0123456789.eE+-") == strlen(p)) {
            v = strtod(p, &end);
            while (end != NULL && *end == ' ')
                end++;
            number = end != NULL && end != p && *end == '\0';
        }
        oauth_server_text(hide, p, 24, text, sizeof(text));
        snprintf(token->expires_in_bad, sizeof(token->expires_in_bad), "'%s'",
                 text);
    } else {
        snprintf(token->expires_in_bad, sizeof(token->expires_in_bad),
                 "a JSON %s",
                 cJSON_IsBool(item)     ? "boolean"
                 : cJSON_IsArray(item)  ? "array"
                 : cJSON_IsObject(item) ? "object"
                                        : "value");
    }
    /* NaN fails both comparisons; the range keeps the conversion to an
     * integer defined and the milliseconds from wrapping. */
    if (number && v >= 1 && v <= (double)OAUTH_MAX_LIFETIME_S) {
        token->expires_in_s = (int64_t)v;
        token->expires_in_bad[0] = '\0';
    }
}

/*
 * What a token endpoint's refusal (any status but 200) says, into @err:
 * the OAuth error and its description from @root (RFC 6749 5.2), or the
 * start of @body when it has none, with the values of @hide hidden.
 * Returns -EACCES when asking again will not help (a permanent OAuth
 * error, or a 4xx but 408 and 429 without one), else -EAGAIN.
 */
static int oauth_refusal(long http_status, const cJSON *root, const char *body,
                         size_t body_len, const struct redact *hide, char *err,
                         size_t err_len)
{
    const char *error;
    const char *description;
    char error_text[80];
    char text[REDACT_TEXT_MAX + 8];

    cred__oauth_error(root, &error, &description);
    if (error != NULL) {
        /* Entra puts several lines in the description: keep the
         * first, which carries the AADSTS code and its meaning. */
        oauth_server_text(hide, error, 64, error_text, sizeof(error_text));
        if (description != NULL)
            oauth_server_text(hide, description, REDACT_TEXT_MAX, text,
                              sizeof(text));
        util_err(err, err_len, "token endpoint refused: HTTP %ld, error=%s%s%s",
                 http_status, error_text, description != NULL ? ": " : "",
                 description != NULL ? text : "");
        return oauth_error_is_permanent(error) ? -EACCES : -EAGAIN;
    }
    redact_text(hide, body, body_len, 120, text, sizeof(text));
    util_err(err, err_len,
             "token endpoint answered HTTP %ld without an OAuth "
             "error%s%s",
             http_status, text[0] != '\0' ? ": " : "", text);
    return http_status >= 400 && http_status < 500 && http_status != 408 &&
                   http_status != 429
               ? -EACCES
               : -EAGAIN;
}

/* oauth_parse_token_response() with the values of @hide hidden in the
 * server's texts (NULL: they are withheld). */
static int oauth_parse_answer(long http_status, const char *body,
                              size_t body_len, const struct redact *hide,
                              struct oauth_token *ret_token, char *err,
                              size_t err_len)
{
    struct oauth_token token;
    const cJSON *item;
    cJSON *root = NULL;
    char why[128] = "";
    int r;

    memset(&token, 0, sizeof(token));
    token.expires_in_s = -1;
    if (body_len > OAUTH_MAX_RESPONSE) {
        util_err(err, err_len,
                 "token endpoint answered HTTP %ld with %zu "
                 "bytes, more than %d",
                 http_status, body_len, OAUTH_MAX_RESPONSE);
        return -EAGAIN;
    }
    (void)json_parse(body, body_len, &root, why, sizeof(why));
    if (http_status != 200) {
        r = oauth_refusal(http_status, root, body, body_len, hide, err,
                          err_len);
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        util_err(err, err_len,
                 "token endpoint answered 200 with a body "
                 "that is not a JSON object%s%s",
                 why[0] != '\0' ? ": " : "", why);
        r = -EAGAIN;
        goto out;
    }
    item = cJSON_GetObjectItemCaseSensitive(root, "access_token");
    if (!cJSON_IsString(item) || item->valuestring[0] == '\0') {
        util_err(err, err_len, "token endpoint answer has no access_token");
        r = -EAGAIN;
        goto out;
    }
    token.access_token = strdup(item->valuestring);
    item = cJSON_GetObjectItemCaseSensitive(root, "token_type");
    token.token_type =
        strdup(cJSON_IsString(item) ? item->valuestring : "Bearer");
    if (token.access_token == NULL || token.token_type == NULL) {
        r = -ENOMEM;
        goto out;
    }
    if (strcasecmp(token.token_type, "Bearer") != 0) {
        char type[40];
        oauth_server_text(hide, token.token_type, 24, type, sizeof(type));
        util_err(err, err_len,
                 "token endpoint issued a '%s' token, not "
                 "a Bearer token",
                 type);
        r = -EACCES;
        goto out;
    }
    oauth_read_expires_in(cJSON_GetObjectItemCaseSensitive(root, "expires_in"),
                          hide, &token);
    *ret_token = token;
    token.access_token = NULL;
    token.token_type = NULL;
    r = 0;
out:
    oauth_token_free(&token);
    cJSON_Delete(root);
    return r;
}

int oauth_parse_token_response(long http_status, const char *body,
                               size_t body_len, struct oauth_token *ret_token,
                               char *err, size_t err_len)
{
    struct redact *nothing = redact_new();
    int r = oauth_parse_answer(http_status, body, body_len, nothing, ret_token,
                               err, err_len);

    redact_free(nothing);
    return r;
}

void oauth_claims_free(struct oauth_claims *claims)
{
    if (claims == NULL)
        return;
    free(claims->aud);
    free(claims->iss);
    free(claims->tid);
    free(claims->oid);
    free(claims->appid);
    free(claims->azp);
    free(claims->idtyp);
    free(claims->roles);
    free(claims->scp);
    memset(claims, 0, sizeof(*claims));
}

/* A string claim, or a list of strings joined with ' '; NULL if absent. */
static char *oauth_claim_text(const cJSON *root, const char *name)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, name);
    const cJSON *elem;
    size_t len = 1;
    char *out;

    if (cJSON_IsString(item))
        return strdup(item->valuestring);
    if (!cJSON_IsArray(item))
        return NULL;
    cJSON_ArrayForEach(elem, item) if (cJSON_IsString(elem)) len +=
        strlen(elem->valuestring) + 1;
    out = calloc(1, len);
    if (out == NULL)
        return NULL;
    size_t used = 0;
    cJSON_ArrayForEach(elem, item)
    {
        if (!cJSON_IsString(elem))
            continue;
        int n = snprintf(out + used, len - used, "%s%s", used > 0 ? " " : "",
                         elem->valuestring);
        if (n > 0)
            used += (size_t)n < len - used ? (size_t)n : len - used - 1;
    }
    return out;
}

int oauth_decode_claims(const char *jwt, struct oauth_claims *ret_claims,
                        char *err, size_t err_len)
{
    struct oauth_claims claims;
    const char *dot1 = strchr(jwt, '.');
    const char *dot2 = dot1 != NULL ? strchr(dot1 + 1, '.') : NULL;
    const cJSON *item;
    cJSON *root;
    char *payload;

    memset(&claims, 0, sizeof(claims));
    if (dot1 == NULL || dot2 == NULL || strlen(jwt) > OAUTH_MAX_RESPONSE) {
        util_err(err, err_len,
                 "the access token is not a JWT (opaque "
                 "token): its claims cannot be shown");
        return -EINVAL;
    }
    payload =
        cred__base64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), true, NULL);
    root = payload != NULL ? cJSON_Parse(payload) : NULL;
    free(payload);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        util_err(err, err_len,
                 "the access token's payload is not a JSON "
                 "object");
        return -EINVAL;
    }
    claims.aud = oauth_claim_text(root, "aud");
    claims.iss = oauth_claim_text(root, "iss");
    claims.tid = oauth_claim_text(root, "tid");
    claims.oid = oauth_claim_text(root, "oid");
    claims.appid = oauth_claim_text(root, "appid");
    claims.azp = oauth_claim_text(root, "azp");
    claims.idtyp = oauth_claim_text(root, "idtyp");
    claims.roles = oauth_claim_text(root, "roles");
    claims.scp = oauth_claim_text(root, "scp");
    item = cJSON_GetObjectItemCaseSensitive(root, "exp");
    if (cJSON_IsNumber(item))
        claims.exp = (int64_t)item->valuedouble;
    item = cJSON_GetObjectItemCaseSensitive(root, "iat");
    if (cJSON_IsNumber(item))
        claims.iat = (int64_t)item->valuedouble;
    cJSON_Delete(root);
    *ret_claims = claims;
    return 0;
}

int oauth_jwt_segment_json(const char *jwt, int index, char **ret_json)
{
    const char *start = jwt;
    const char *end;
    cJSON *root;
    char *decoded;
    char *json;

    for (int i = 0; i < index && start != NULL; i++) {
        start = strchr(start, '.');
        if (start != NULL)
            start++;
    }
    if (start == NULL || strchr(jwt, '.') == NULL)
        return -EINVAL;
    end = strchr(start, '.');
    if (end == NULL)
        return -EINVAL;
    decoded = cred__base64url_decode(start, (size_t)(end - start), true, NULL);
    root = decoded != NULL ? cJSON_Parse(decoded) : NULL;
    free(decoded);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return -EINVAL;
    }
    json = cJSON_Print(root);
    cJSON_Delete(root);
    if (json == NULL)
        return -ENOMEM;
    *ret_json = json;
    return 0;
}

static const char *oauth_or(const char *s, const char *fallback)
{
    return s != NULL && s[0] != '\0' ? s : fallback;
}

/* Appends to @buf, keeping it NUL-terminated and never overflowing. */
static void oauth_append(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void oauth_append(char *buf, size_t len, const char *fmt, ...)
{
    size_t used = strnlen(buf, len);
    va_list ap;

    if (used + 1 >= len)
        return;
    va_start(ap, fmt);
    vsnprintf(buf + used, len - used, fmt, ap);
    va_end(ap);
}

int oauth_diagnose_token(const struct oauth_claims *claims, const char *url,
                         const char *tenant, int64_t now_s, char *buf,
                         size_t len)
{
    bool azure = url != NULL && strstr(url, ".azurehealthcareapis.com") != NULL;
    int errors = 0;

    if (len == 0)
        return 0;
    buf[0] = '\0';
    if (claims->exp != 0 && claims->exp <= now_s) {
        oauth_append(buf, len,
                     "error: the token expired %lld s ago: check "
                     "this machine's clock (NTP)\n",
                     (long long)(now_s - claims->exp));
        errors++;
    } else if (claims->exp != 0) {
        oauth_append(buf, len, "ok: valid for %lld s more\n",
                     (long long)(claims->exp - now_s));
    }
    if (claims->iat > now_s + 300) {
        oauth_append(buf, len,
                     "error: the token was issued %lld s in the "
                     "future: this machine's clock is behind\n",
                     (long long)(claims->iat - now_s));
        errors++;
    }
    if (azure) {
        if (claims->aud == NULL ||
            strncmp(claims->aud, OAUTH_AZURE_DICOM_AUDIENCE,
                    strlen(OAUTH_AZURE_DICOM_AUDIENCE)) != 0) {
            oauth_append(buf, len,
                         "error: the audience is '%s', not the DICOM service "
                         "(" OAUTH_AZURE_DICOM_AUDIENCE
                         "): set auth.scope to " OAUTH_AZURE_DICOM_AUDIENCE
                         "/.default or use "
                         "auth.type \"azure\"\n",
                         oauth_or(claims->aud, "-"));
            errors++;
        } else {
            oauth_append(buf, len,
                         "ok: the audience is the Azure DICOM "
                         "service\n");
        }
    } else if (claims->aud != NULL) {
        oauth_append(buf, len,
                     "ok: audience '%s' (check it is the DICOMweb "
                     "server's)\n",
                     claims->aud);
    }
    if (tenant != NULL && tenant[0] != '\0' && claims->tid != NULL &&
        strchr(tenant, '.') == NULL && strcasecmp(tenant, claims->tid) != 0) {
        oauth_append(buf, len,
                     "error: the token is from tenant %s, not the "
                     "configured %s\n",
                     claims->tid, tenant);
        errors++;
    }
    if (claims->roles == NULL && claims->scp == NULL)
        oauth_append(buf, len,
                     "warning: the token carries no roles and no scopes%s\n",
                     azure ? ": normal for Azure, whose DICOM data roles are "
                             "role assignments checked by the service; if "
                             "stores get 403, assign \"DICOM Data Owner\" "
                             "to the service principal"
                           : ": if stores get 403, grant this client a role "
                             "or scope that allows STOW-RS");
    else
        oauth_append(buf, len, "ok: roles=[%s] scp=[%s]\n",
                     oauth_or(claims->roles, "none"),
                     oauth_or(claims->scp, "none"));
    return errors;
}

void oauth_diagnose_forbidden(const struct oauth_claims *claims,
                              const char *url, int64_t now_s, char *buf,
                              size_t len)
{
    bool azure = url != NULL && strstr(url, ".azurehealthcareapis.com") != NULL;

    if (len == 0)
        return;
    buf[0] = '\0';
    oauth_append(buf, len,
                 "the DICOMweb server refused the token (HTTP 403): the "
                 "login worked but this identity is not allowed to store");
    if (claims == NULL) {
        oauth_append(buf, len,
                     "; the token is opaque, its identity cannot "
                     "be shown");
    } else {
        oauth_append(buf, len,
                     "; token identity: appid=%s oid=%s idtyp=%s tid=%s "
                     "aud=%s roles=[%s] scp=[%s] exp=%lld",
                     oauth_or(claims->appid, oauth_or(claims->azp, "-")),
                     oauth_or(claims->oid, "-"), oauth_or(claims->idtyp, "-"),
                     oauth_or(claims->tid, "-"), oauth_or(claims->aud, "-"),
                     oauth_or(claims->roles, "none"),
                     oauth_or(claims->scp, "none"), (long long)claims->exp);
        if (claims->exp != 0 && claims->exp <= now_s)
            oauth_append(buf, len,
                         "; the token expired %lld s ago (check "
                         "this machine's clock)",
                         (long long)(now_s - claims->exp));
    }
    if (azure) {
        if (claims != NULL && claims->aud != NULL &&
            strncmp(claims->aud, OAUTH_AZURE_DICOM_AUDIENCE,
                    strlen(OAUTH_AZURE_DICOM_AUDIENCE)) != 0)
            oauth_append(buf, len,
                         "; the token is for '%s', not the DICOM service: "
                         "set auth.scope to " OAUTH_AZURE_DICOM_AUDIENCE
                         "/.default (or use auth.type \"azure\")",
                         claims->aud);
        bool user = claims != NULL && claims->idtyp != NULL &&
                    strcmp(claims->idtyp, "user") == 0;
        oauth_append(buf, len,
                     "; fix: in the Azure portal, open the DICOM service, "
                     "Access control (IAM), and assign the role \"DICOM Data "
                     "Owner\" to %s (object ID %s); role assignments can "
                     "take several minutes to apply",
                     user ? "this user (a user token: the role is the "
                            "user's, not the app's)"
                          : "the app's service principal (or the managed "
                            "identity) the token names",
                     claims != NULL ? oauth_or(claims->oid, "see appid")
                                    : "of the app");
    } else {
        bool user = claims != NULL && claims->idtyp != NULL &&
                    strcmp(claims->idtyp, "user") == 0;
        oauth_append(buf, len,
                     "; fix: grant %s permission to store on the server "
                     "(for a standard OAuth2 server, a role or scope that "
                     "allows STOW-RS)",
                     user ? "this user (a user token: the server checks the "
                            "user's roles, not the app's)"
                          : "this client (the app or managed identity the "
                            "token names)");
    }
    oauth_append(buf, len, "; instances stay queued and are retried");
}

/* ------------------------------------------------------------------ */
/* The token source                                                    */
/* ------------------------------------------------------------------ */

/*
 * What a source authenticates with, for one fetch: replaced as a whole by
 * oauth_source_reload(). A fetch holds a reference (refs, under the
 * source's lock) so that a reload never frees what a fetch in flight
 * reads.
 */
struct oauth_material {
    unsigned refs;
    enum oauth_kind kind;
    char *token_url;
    char *client_id;
    char *client_secret;
    char *scope;
    char *resource;
    enum oauth_client_auth client_auth;
    char *static_token;
    char *ca_file;
    unsigned timeout_s;
    struct jwt_credential *certificate; /* NULL: no certificate */
    enum jwt_alg alg;
    char *assertion_file; /* NULL: no federated token */
    char *endpoint;
    struct mi_env mi_env;
    char **command; /* NULL-terminated, or NULL */
    unsigned command_timeout_s;
};

struct oauth_source {
    enum oauth_kind kind;
    void (*notice)(void *ctx, const char *message);
    void *notice_ctx;
    void (*fetched_fn)(void *ctx, bool ok, int64_t expires_s,
                       const char *error);
    void *fetched_ctx;

    pthread_mutex_t lock;
    pthread_cond_t fetched;
    struct oauth_material *material; /* current; under lock */
    bool background_refresh;
    bool refresher_running; /* a background refresh thread exists */
    bool fetching;
    char *token; /* current token, or NULL */
    uint64_t generation;
    uint64_t expires_at_ms;
    uint64_t refresh_at_ms;
    uint64_t failed_at_ms; /* 0: the last fetch did not fail */
    int failure;           /* its error code */
    char failure_text[768];
    unsigned fetches;
    uint64_t last_fetch_ms; /* when the last request started */
};

static void oauth_free_secret(char *s)
{
    if (s == NULL)
        return;
    explicit_bzero(s, strlen(s));
    free(s);
}

static bool oauth_dup(char **dst, const char *src)
{
    if (src == NULL) {
        *dst = NULL;
        return true;
    }
    *dst = strdup(src);
    return *dst != NULL;
}

/* A non-empty string or NULL. */
static const char *oauth_nonempty(const char *s)
{
    return s != NULL && s[0] != '\0' ? s : NULL;
}

static void oauth_material_free(struct oauth_material *m)
{
    if (m == NULL)
        return;
    free(m->token_url);
    free(m->client_id);
    oauth_free_secret(m->client_secret);
    free(m->scope);
    free(m->resource);
    oauth_free_secret(m->static_token);
    free(m->ca_file);
    jwt_credential_free(m->certificate);
    free(m->assertion_file);
    free(m->endpoint);
    if (m->command != NULL) {
        for (size_t i = 0; m->command[i] != NULL; i++)
            free(m->command[i]);
        free(m->command);
    }
    free(m);
}

/* Drops a reference taken under the source's lock. */
static void oauth_material_put(struct oauth_source *source,
                               struct oauth_material *m)
{
    bool last;

    pthread_mutex_lock(&source->lock);
    last = --m->refs == 0;
    pthread_mutex_unlock(&source->lock);
    if (last)
        oauth_material_free(m);
}

/* New material from @params, the certificate loaded and checked. */
static int oauth_material_new(const struct oauth_params *params,
                              struct oauth_material **ret, char *err,
                              size_t err_len)
{
    struct oauth_material *m = calloc(1, sizeof(*m));
    size_t argc = 0;
    int r;

    if (m == NULL)
        return -ENOMEM;
    m->refs = 1;
    m->kind = params->kind;
    m->client_auth = params->client_auth;
    m->timeout_s = params->timeout_s > 0 ? params->timeout_s : 30;
    m->alg = params->assertion_alg == OAUTH_ASSERTION_RS256 ? JWT_ALG_RS256
                                                            : JWT_ALG_PS256;
    m->command_timeout_s = params->command_timeout_s;
    if (!oauth_dup(&m->token_url, params->token_url) ||
        !oauth_dup(&m->client_id, params->client_id) ||
        !oauth_dup(&m->client_secret, params->client_secret) ||
        !oauth_dup(&m->scope, params->scope) ||
        !oauth_dup(&m->resource, params->resource) ||
        !oauth_dup(&m->static_token, params->static_token) ||
        !oauth_dup(&m->ca_file, params->ca_file) ||
        !oauth_dup(&m->assertion_file,
                   oauth_nonempty(params->client_assertion_file)) ||
        !oauth_dup(&m->endpoint, oauth_nonempty(params->endpoint))) {
        r = -ENOMEM;
        goto out_free;
    }
    if (params->kind == OAUTH_COMMAND) {
        if (params->command == NULL || params->command[0] == NULL) {
            util_err(err, err_len, "the token command is empty");
            r = -EINVAL;
            goto out_free;
        }
        while (params->command[argc] != NULL)
            argc++;
        m->command = calloc(argc + 1, sizeof(*m->command));
        if (m->command == NULL) {
            r = -ENOMEM;
            goto out_free;
        }
        for (size_t i = 0; i < argc; i++) {
            m->command[i] = strdup(params->command[i]);
            if (m->command[i] == NULL) {
                r = -ENOMEM;
                goto out_free;
            }
        }
    }
    if (params->kind == OAUTH_MANAGED_IDENTITY)
        mi_env_from_process(&m->mi_env);
    if (params->kind == OAUTH_CLIENT_CREDENTIALS &&
        oauth_nonempty(params->client_certificate_file) != NULL) {
        const char *key = oauth_nonempty(params->client_key_file);

        r = jwt_credential_from_files(
            params->client_certificate_file,
            key != NULL ? key : params->client_certificate_file,
            &m->certificate, err, err_len);
        if (r < 0)
            goto out_free;
    }
    *ret = m;
    return 0;
out_free:
    oauth_material_free(m);
    return r;
}

int oauth_source_open(const struct oauth_params *params,
                      struct oauth_source **ret_source, char *err,
                      size_t err_len)
{
    struct oauth_source *source = calloc(1, sizeof(*source));
    int r;

    if (source == NULL)
        return -ENOMEM;
    pthread_mutex_init(&source->lock, NULL);
    pthread_cond_init(&source->fetched, NULL);
    source->kind = params->kind;
    source->background_refresh = params->background_refresh;
    source->notice = params->notice;
    source->notice_ctx = params->notice_ctx;
    source->fetched_fn = params->fetched;
    source->fetched_ctx = params->fetched_ctx;
    r = oauth_material_new(params, &source->material, err, err_len);
    if (r < 0) {
        oauth_source_free(source);
        return r;
    }
    *ret_source = source;
    return 0;
}

struct oauth_source *oauth_source_new(const struct oauth_params *params)
{
    struct oauth_source *source = NULL;

    return oauth_source_open(params, &source, NULL, 0) == 0 ? source : NULL;
}

int oauth_source_reload(struct oauth_source *source,
                        const struct oauth_params *params, char *err,
                        size_t err_len)
{
    struct oauth_material *m = NULL;
    struct oauth_material *old;
    bool last;
    int r;

    if (params->kind != source->kind) {
        util_err(err, err_len,
                 "auth.type changed: restart the service to "
                 "apply it");
        return -EINVAL;
    }
    r = oauth_material_new(params, &m, err, err_len);
    if (r < 0)
        return r;
    if (m->kind == OAUTH_CLIENT_CREDENTIALS && m->assertion_file != NULL) {
        /* Read on every request anyway: a broken file is said now. */
        char *token = NULL;

        r = federated_token_read(m->assertion_file, (int64_t)time(NULL), &token,
                                 err, err_len);
        oauth_free_secret(token);
        if (r < 0) {
            oauth_material_free(m);
            return r;
        }
    }
    pthread_mutex_lock(&source->lock);
    old = source->material;
    source->material = m;
    /* A failure held for the old material says nothing of the new. */
    source->failed_at_ms = 0;
    last = --old->refs == 0;
    pthread_mutex_unlock(&source->lock);
    if (last)
        oauth_material_free(old);
    return 0;
}

void oauth_source_free(struct oauth_source *source)
{
    if (source == NULL)
        return;
    /* A background refresh still uses the source: wait for its end. */
    pthread_mutex_lock(&source->lock);
    while (source->refresher_running)
        pthread_cond_wait(&source->fetched, &source->lock);
    pthread_mutex_unlock(&source->lock);
    oauth_material_free(source->material);
    oauth_free_secret(source->token);
    pthread_cond_destroy(&source->fetched);
    pthread_mutex_destroy(&source->lock);
    free(source);
}

/* base64 (RFC 4648 4, padded) of @n bytes at @in, in a new string. */
static char *oauth_base64(const char *in, size_t n)
{
    static const char abc[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        "0123456789+/";
    const unsigned char *p = (const unsigned char *)in;
    char *out = malloc((n + 2) / 3 * 4 + 1);
    size_t o = 0;

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        out[o++] = abc[v >> 18 & 63];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = i + 1 < n ? abc[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? abc[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

/* Adds the secrets of @m that never change (the client secret, the static
 * token, the HTTP Basic credentials) to @r. */
static int oauth_add_fixed_secrets(const struct oauth_material *m,
                                   struct redact *r)
{
    int ret = redact_add_literal(r, m->client_secret);

    if (ret == 0)
        ret = redact_add_literal(r, m->static_token);
    if (ret == 0 && m->client_secret != NULL) {
        /* As HTTP Basic carries them (RFC 6749 2.3.1: both URL-encoded
         * first), whichever way they are sent: equal to the secret. */
        CURL *curl = curl_easy_init();
        char *user =
            curl != NULL
                ? curl_easy_escape(curl, m->client_id ? m->client_id : "", 0)
                : NULL;
        char *password =
            curl != NULL ? curl_easy_escape(curl, m->client_secret, 0) : NULL;
        char *pair = NULL;
        char *b64 = NULL;

        if (user != NULL && password != NULL &&
            asprintf(&pair, "%s:%s", user, password) >= 0)
            b64 = oauth_base64(pair, strlen(pair));
        ret = b64 != NULL ? redact_add_literal(r, b64) : -ENOMEM;
        if (pair != NULL)
            oauth_free_secret(pair);
        oauth_free_secret(b64);
        if (password != NULL) {
            explicit_bzero(password, strlen(password));
            curl_free(password);
        }
        curl_free(user);
        if (curl != NULL)
            curl_easy_cleanup(curl);
    }
    return ret;
}

int oauth_source_add_secrets(struct oauth_source *source, struct redact *r)
{
    struct oauth_material *m;
    int ret;

    pthread_mutex_lock(&source->lock);
    m = source->material;
    m->refs++;
    pthread_mutex_unlock(&source->lock);
    ret = oauth_add_fixed_secrets(m, r);
    oauth_material_put(source, m);
    pthread_mutex_lock(&source->lock);
    if (ret == 0)
        ret = redact_add_literal(r, source->token);
    pthread_mutex_unlock(&source->lock);
    return ret;
}

struct oauth_buffer {
    char *data;
    size_t len;
    bool overflow;
    char location[512];
};

static size_t oauth_on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct oauth_buffer *buf = arg;
    size_t n = size * nmemb;

    if (buf->len + n > OAUTH_MAX_RESPONSE) {
        buf->overflow = true;
        return n;
    }
    char *grown = realloc(buf->data, buf->len + n + 1);
    if (grown == NULL)
        return 0;
    buf->data = grown;
    memcpy(buf->data + buf->len, data, n);
    buf->len += n;
    buf->data[buf->len] = '\0';
    return n;
}

static size_t oauth_on_header(char *data, size_t size, size_t nmemb, void *arg)
{
    struct oauth_buffer *buf = arg;
    size_t n = size * nmemb;

    (void)http_header_value(data, n, "location", buf->location,
                            sizeof(buf->location));
    return n;
}

/* Appends "&name=value" (URL-encoded) to the form in @form. */
static bool oauth_form_add(CURL *curl, char **form, const char *name,
                           const char *value)
{
    char *encoded;
    char *grown;
    size_t old;
    size_t add;

    if (value == NULL)
        return true;
    encoded = curl_easy_escape(curl, value, 0);
    if (encoded == NULL)
        return false;
    old = *form != NULL ? strlen(*form) : 0;
    add = strlen(name) + strlen(encoded) + 3;
    grown = realloc(*form, old + add);
    if (grown == NULL) {
        explicit_bzero(encoded, strlen(encoded));
        curl_free(encoded);
        return false;
    }
    snprintf(grown + old, add, "%s%s=%s", old > 0 ? "&" : "", name, encoded);
    *form = grown;
    explicit_bzero(encoded, strlen(encoded));
    curl_free(encoded);
    return true;
}

/* How @m authenticates, for entra_explain(). */
static enum entra_credential
oauth_entra_credential(const struct oauth_material *m)
{
    if (m->certificate != NULL)
        return ENTRA_CRED_CERTIFICATE;
    if (m->assertion_file != NULL)
        return ENTRA_CRED_FEDERATED;
    return ENTRA_CRED_SECRET;
}

/* Builds the client_credentials form of @m into @ret_form (secret: the
 * caller wipes it), and for HTTP Basic the encoded ID and secret. The
 * assertion, when there is one, goes into @hide. */
static int oauth_build_form(CURL *curl, const struct oauth_material *m,
                            struct redact *hide, char **ret_form,
                            char **ret_user, char **ret_password, char *err,
                            size_t err_len)
{
    char *form = NULL;
    bool ok;
    int r;

    if (m->certificate != NULL || m->assertion_file != NULL) {
        struct cred_assertion_form af;
        char *assertion = NULL;

        if (m->certificate != NULL) {
            struct jwt_assertion_params jp;

            memset(&jp, 0, sizeof(jp));
            jp.alg = m->alg;
            jp.client_id = m->client_id;
            jp.audience = m->token_url;
            r = jwt_assertion_sign(m->certificate, &jp, (int64_t)time(NULL),
                                   &assertion, err, err_len);
        } else {
            r = federated_token_read(m->assertion_file, (int64_t)time(NULL),
                                     &assertion, err, err_len);
        }
        if (r < 0)
            return r;
        if (hide != NULL)
            (void)redact_add_literal(hide, assertion);
        memset(&af, 0, sizeof(af));
        af.client_id = m->client_id;
        af.assertion = assertion;
        af.scope = m->scope;
        af.resource = m->resource;
        r = cred_assertion_form_build(&af, ret_form);
        oauth_free_secret(assertion);
        return r;
    }
    ok = oauth_form_add(curl, &form, "grant_type", "client_credentials");
    if (m->client_auth == OAUTH_AUTH_BODY) {
        ok = ok && oauth_form_add(curl, &form, "client_id", m->client_id);
        ok = ok &&
             oauth_form_add(curl, &form, "client_secret", m->client_secret);
    } else {
        /* RFC 6749 2.3.1: both URL-encoded before Basic encoding. */
        *ret_user = curl_easy_escape(curl, m->client_id, 0);
        *ret_password = curl_easy_escape(curl, m->client_secret, 0);
        ok = ok && *ret_user != NULL && *ret_password != NULL;
    }
    ok = ok && oauth_form_add(curl, &form, "scope", m->scope);
    ok = ok && oauth_form_add(curl, &form, "resource", m->resource);
    if (!ok) {
        oauth_free_secret(form);
        return -ENOMEM;
    }
    *ret_form = form;
    return 0;
}

/* One client_credentials request (no lock held). Fills @ret_token or
 * @err, in which the server's texts carry none of the source's secrets,
 * and an Entra error gets its sentence. */
/* The token request on @curl: POST @form to auth.token_url, the answer
 * into @body, HTTP Basic with @user and @password when @user is set. */
static void oauth_setup_request(CURL *curl, const struct oauth_material *m,
                                const char *form, const char *user,
                                const char *password, struct oauth_buffer *body,
                                char *errbuf)
{
    http_setup(curl, m->timeout_s, (long)m->timeout_s, m->ca_file, errbuf);
    curl_easy_setopt(curl, CURLOPT_URL, m->token_url);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, form);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, oauth_on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, oauth_on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, body);
    if (user != NULL) {
        curl_easy_setopt(curl, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(curl, CURLOPT_USERNAME, user);
        curl_easy_setopt(curl, CURLOPT_PASSWORD, password);
    }
}

/*
 * After a refusal @r of the token endpoint with the answer @body: appends
 * what Entra's error code means for credential @m to @err ("; ...") when
 * entra_explain() knows it. Returns @r, or -EAGAIN for a code that passes
 * by itself (a new federated credential still propagating).
 */
static int oauth_explain_entra(const struct oauth_material *m, const char *body,
                               size_t len, int r, char *err, size_t err_len)
{
    char advice[512];
    unsigned long code = 0;
    size_t used;

    if (!entra_explain(body, len, oauth_entra_credential(m), advice,
                       sizeof(advice), &code))
        return r;
    used = strnlen(err, err_len);
    if (used + 1 < err_len)
        snprintf(err + used, err_len - used, "; %s", advice);
    return entra_error_transient(code) ? -EAGAIN : r;
}

static int oauth_fetch_client_credentials(const struct oauth_material *m,
                                          struct oauth_token *ret_token,
                                          char *err, size_t err_len)
{
    struct oauth_buffer body;
    CURL *curl = curl_easy_init();
    struct redact *hide = redact_new();
    char errbuf[CURL_ERROR_SIZE];
    char *form = NULL;
    char *user = NULL;
    char *password = NULL;
    long status = 0;
    CURLcode rc;
    int r;

    memset(&body, 0, sizeof(body));
    if (curl == NULL) {
        redact_free(hide);
        return -ENOMEM;
    }
    if (hide != NULL)
        (void)oauth_add_fixed_secrets(m, hide);
    r = oauth_build_form(curl, m, hide, &form, &user, &password, err, err_len);
    if (r < 0) {
        /* A certificate that stopped signing (expired) or a federated
         * token file that is missing or stale: nothing to send. */
        if (r != -ENOMEM)
            r = r == -EKEYEXPIRED || r == -EKEYREJECTED ? -EACCES : -EAGAIN;
        goto out;
    }

    oauth_setup_request(curl, m, form, user, password, &body, errbuf);
    rc = curl_easy_perform(curl);
    if (rc != CURLE_OK) {
        char why[512];
        http_describe(curl, rc, errbuf, why, sizeof(why));
        util_err(err, err_len, "token endpoint unreachable: %s", why);
        r = -EAGAIN;
        goto out;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (http_is_redirect(status)) {
        char where[REDACT_TEXT_MAX + 8];
        redact_text(hide, body.location, strlen(body.location), REDACT_TEXT_MAX,
                    where, sizeof(where));
        util_err(err, err_len,
                 "token endpoint answered HTTP %ld, a "
                 "redirect to '%s': auth.token_url should "
                 "change (redirects are not followed)",
                 status, where);
        r = -EACCES;
        goto out;
    }
    if (body.overflow) {
        util_err(err, err_len, "token endpoint answer over %d bytes",
                 OAUTH_MAX_RESPONSE);
        r = -EAGAIN;
        goto out;
    }
    /* hide NULL (out of memory): the server's texts are withheld. */
    r = oauth_parse_answer(status, body.data != NULL ? body.data : "", body.len,
                           hide, ret_token, err, err_len);
    if (r < 0 && status != 200 && body.data != NULL)
        r = oauth_explain_entra(m, body.data, body.len, r, err, err_len);
out:
    oauth_free_secret(form);
    if (password != NULL) {
        explicit_bzero(password, strlen(password));
        curl_free(password);
    }
    curl_free(user);
    if (body.data != NULL) {
        explicit_bzero(body.data, body.len);
        free(body.data);
    }
    redact_free(hide);
    curl_easy_cleanup(curl);
    return r;
}

/* A token of a credential module as a token endpoint's answer. */
static int oauth_from_cred(struct cred_token *in, struct oauth_token *ret)
{
    memset(ret, 0, sizeof(*ret));
    ret->token_type = strdup("Bearer");
    if (ret->token_type == NULL)
        return -ENOMEM;
    ret->access_token = in->access_token;
    in->access_token = NULL;
    ret->expires_in_s =
        in->expires_in_s >= 1 && in->expires_in_s <= OAUTH_MAX_LIFETIME_S
            ? in->expires_in_s
            : -1;
    return 0;
}

/* One token request of @m (no lock held), of whichever kind. Errors:
 * -EACCES for what configuration must fix, -EAGAIN for the rest. */
static int oauth_fetch(const struct oauth_material *m,
                       struct oauth_token *ret_token, char *err, size_t err_len)
{
    struct cred_token got;
    int r;

    memset(&got, 0, sizeof(got));
    if (m->kind == OAUTH_MANAGED_IDENTITY) {
        struct mi_params mp;

        memset(&mp, 0, sizeof(mp));
        mp.flavor = MI_DETECT;
        mp.resource = m->resource;
        mp.client_id = m->client_id;
        mp.endpoint = m->endpoint;
        mp.timeout_s = m->timeout_s;
        r = mi_get_token(&mp, &m->mi_env, (int64_t)time(NULL), &got, err,
                         err_len);
        if (r == -EINVAL || r == -EPERM)
            r = -EACCES;
    } else if (m->kind == OAUTH_COMMAND) {
        struct token_command_params tp;

        memset(&tp, 0, sizeof(tp));
        tp.argv = (const char *const *)m->command;
        tp.timeout_s = m->command_timeout_s;
        r = token_command_run(&tp, &got, err, err_len);
        if (r == -ENOENT || r == -EACCES || r == -EINVAL || r == -EBADMSG)
            r = -EACCES;
        else if (r < 0 && r != -ENOMEM)
            r = -EAGAIN;
    } else {
        return oauth_fetch_client_credentials(m, ret_token, err, err_len);
    }
    if (r == 0)
        r = oauth_from_cred(&got, ret_token);
    cred_token_free(&got);
    return r;
}

/* True while a new request would come sooner than
 * OAUTH_MIN_FETCH_INTERVAL_MS after the last one. */
static bool oauth_too_soon(const struct oauth_source *source, uint64_t now_ms)
{
    return source->fetches > 0 &&
           now_ms < source->last_fetch_ms + OAUTH_MIN_FETCH_INTERVAL_MS;
}

/*
 * One fetch, with the source's lock held on entry and on return (it is
 * released during the request) and source->fetching already set: the
 * result becomes the current token or the held failure, and waiting
 * callers are woken. @now_ms is when the request starts: the lifetime
 * counts from then. A notice for the operator goes into @notice.
 */
static int oauth_fetch_locked(struct oauth_source *source, uint64_t now_ms,
                              char *notice, size_t notice_len, char *err,
                              size_t err_len)
{
    struct oauth_material *material;
    struct oauth_token fetched;
    char why[768] = "";
    int r;

    source->fetches++;
    source->last_fetch_ms = now_ms;
    material = source->material;
    material->refs++;
    pthread_mutex_unlock(&source->lock);

    memset(&fetched, 0, sizeof(fetched));
    r = oauth_fetch(material, &fetched, why, sizeof(why));
    oauth_material_put(source, material);

    pthread_mutex_lock(&source->lock);
    source->fetching = false;
    if (r == 0) {
        int64_t lifetime_s = fetched.expires_in_s;
        if (lifetime_s <= 0 && fetched.expires_in_bad[0] != '\0') {
            lifetime_s = OAUTH_FALLBACK_LIFETIME_S;
            snprintf(notice, notice_len,
                     "token endpoint sent expires_in %s, not a lifetime of "
                     "1 s to %d days: the token is used for %d s",
                     fetched.expires_in_bad, OAUTH_MAX_LIFETIME_S / 86400,
                     OAUTH_FALLBACK_LIFETIME_S);
        } else if (lifetime_s <= 0) {
            lifetime_s = OAUTH_DEFAULT_LIFETIME_S;
        }
        uint64_t lifetime_ms = (uint64_t)lifetime_s * 1000u;
        uint64_t margin_ms = lifetime_ms / 10;
        if (margin_ms > 300000)
            margin_ms = 300000;
        oauth_free_secret(source->token);
        source->token = fetched.access_token;
        fetched.access_token = NULL;
        source->generation++;
        source->expires_at_ms = now_ms + lifetime_ms;
        source->refresh_at_ms = now_ms + lifetime_ms - margin_ms;
        source->failed_at_ms = 0;
        oauth_token_free(&fetched);
    } else {
        source->failed_at_ms = now_ms > 0 ? now_ms : 1;
        source->failure = r;
        util_err(source->failure_text, sizeof(source->failure_text), "%s", why);
        util_err(err, err_len, "%s", why);
    }
    pthread_cond_broadcast(&source->fetched);
    if (source->fetched_fn != NULL)
        source->fetched_fn(
            source->fetched_ctx, r == 0,
            r == 0 ? (int64_t)time(NULL) +
                         (int64_t)((source->expires_at_ms - now_ms) / 1000u)
                   : 0,
            r == 0 ? NULL : why);
    return r;
}

struct oauth_refresh_job {
    struct oauth_source *source;
    uint64_t now_ms;
};

/* The background refresh (oauth_params.background_refresh): one fetch,
 * then the source may be freed. */
static void *oauth_refresh_main(void *arg)
{
    struct oauth_refresh_job *job = arg;
    struct oauth_source *source = job->source;
    char notice[160] = "";

    pthread_mutex_lock(&source->lock);
    (void)oauth_fetch_locked(source, job->now_ms, notice, sizeof(notice), NULL,
                             0);
    pthread_mutex_unlock(&source->lock);
    free(job);
    if (notice[0] != '\0' && source->notice != NULL)
        source->notice(source->notice_ctx, notice);
    pthread_mutex_lock(&source->lock);
    source->refresher_running = false;
    pthread_cond_broadcast(&source->fetched);
    pthread_mutex_unlock(&source->lock);
    return NULL;
}

/* Starts the background refresh, lock held and source->fetching set.
 * false when no thread could be made (then the caller fetches). */
static bool oauth_start_refresh(struct oauth_source *source, uint64_t now_ms)
{
    struct oauth_refresh_job *job = malloc(sizeof(*job));
    pthread_attr_t attr;
    pthread_t thread;
    bool started;

    if (job == NULL)
        return false;
    job->source = source;
    job->now_ms = now_ms;
    if (pthread_attr_init(&attr) != 0) {
        free(job);
        return false;
    }
    (void)pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    source->refresher_running = true;
    started = pthread_create(&thread, &attr, oauth_refresh_main, job) == 0;
    (void)pthread_attr_destroy(&attr);
    if (!started) {
        source->refresher_running = false;
        free(job);
    }
    return started;
}

int oauth_source_token(struct oauth_source *source, uint64_t now_ms,
                       char **ret_token, uint64_t *ret_generation, char *err,
                       size_t err_len)
{
    char notice[160] = "";
    int r;

    if (source->kind == OAUTH_NONE) {
        *ret_token = NULL;
        *ret_generation = 0;
        return 0;
    }
    if (source->kind == OAUTH_STATIC) {
        pthread_mutex_lock(&source->lock);
        *ret_token = strdup(source->material->static_token != NULL
                                ? source->material->static_token
                                : "");
        pthread_mutex_unlock(&source->lock);
        *ret_generation = 0;
        return *ret_token != NULL ? 0 : -ENOMEM;
    }

    pthread_mutex_lock(&source->lock);
    for (;;) {
        bool have = source->token != NULL && now_ms < source->expires_at_ms;
        bool due = !have || now_ms >= source->refresh_at_ms;
        bool held = source->failed_at_ms != 0 &&
                    now_ms < source->failed_at_ms + OAUTH_FAILURE_HOLD_MS;
        bool soon = oauth_too_soon(source, now_ms);

        /* Due while this one still works: in the background, this caller
         * goes on with the current token. */
        if (have && due && source->background_refresh && !source->fetching &&
            !held && !soon) {
            source->fetching = true;
            if (!oauth_start_refresh(source, now_ms))
                source->fetching = false;
        }
        /* Fresh; or due, but a refresh is under way, just failed or would
         * come too soon (and this one still works). */
        if (have && (!due || source->fetching || held || soon)) {
            *ret_token = strdup(source->token);
            *ret_generation = source->generation;
            pthread_mutex_unlock(&source->lock);
            return *ret_token != NULL ? 0 : -ENOMEM;
        }
        if (source->fetching) {
            pthread_cond_wait(&source->fetched, &source->lock);
            continue;
        }
        if (held) {
            r = source->failure;
            util_err(err, err_len, "%s", source->failure_text);
            pthread_mutex_unlock(&source->lock);
            return r;
        }
        break;
    }
    source->fetching = true;
    if (oauth_too_soon(source, now_ms)) {
        /* A token refused (401) or expired right after it came: the
         * endpoint is asked again only once the interval has passed.
         * Others wait for this fetch meanwhile (fetching is set). */
        uint64_t wait_ms =
            source->last_fetch_ms + OAUTH_MIN_FETCH_INTERVAL_MS - now_ms;
        struct timespec ts = { (time_t)(wait_ms / 1000),
                               (long)(wait_ms % 1000) * 1000000L };
        pthread_mutex_unlock(&source->lock);
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
        pthread_mutex_lock(&source->lock);
        now_ms += wait_ms;
    }
    r = oauth_fetch_locked(source, now_ms, notice, sizeof(notice), err,
                           err_len);
    if (source->token != NULL && now_ms < source->expires_at_ms) {
        /* New, or the old one still valid after a failed refresh. */
        *ret_token = strdup(source->token);
        *ret_generation = source->generation;
        r = *ret_token != NULL ? 0 : -ENOMEM;
    }
    pthread_mutex_unlock(&source->lock);
    if (notice[0] != '\0' && source->notice != NULL)
        source->notice(source->notice_ctx, notice);
    return r;
}

void oauth_source_invalidate(struct oauth_source *source, uint64_t generation)
{
    if (source->kind == OAUTH_NONE || source->kind == OAUTH_STATIC)
        return;
    pthread_mutex_lock(&source->lock);
    if (source->token != NULL && source->generation == generation) {
        oauth_free_secret(source->token);
        source->token = NULL;
    }
    pthread_mutex_unlock(&source->lock);
}

unsigned oauth_source_fetches(struct oauth_source *source)
{
    unsigned n;

    pthread_mutex_lock(&source->lock);
    n = source->fetches;
    pthread_mutex_unlock(&source->lock);
    return n;
}
