/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_oidc_assertion - certificate credentials against a real OAuth 2.0
 * server that verifies private_key_jwt: oidc-provider (npm) on the
 * machine's Node.js (tests/oidc/server.mjs; its packages are installed
 * by the CTest fixture oidc_peer, tests/oidc/setup.sh). The server holds
 * the public key of a certificate made here with openssl, for a PS256
 * client and an RS256 client. Checked: both algorithms get a token with
 * the aud = token URL, iss = sub = client ID assertion and the form of
 * cred_assertion_form_build(), sent by cred_http_perform(); the server
 * refuses a wrong key (explained as AADSTS700027 by entra_explain()),
 * the other algorithm, a replayed assertion (so every request needs a
 * new jti), a wrong audience, and a PSS signature with OpenSSL's default
 * salt over the very same header and claims.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "cred_test_util.h"
#include "tap.h"
#include "web/cred_http.h"
#include "web/credential.h"
#include "web/entra_errors.h"
#include "web/jwt_assertion.h"

static char dir[512];
static char token_url[128];
static char err[1024];

static const char *path(const char *name)
{
    static char buf[4][640];
    static int next;
    char *p = buf[next++ % 4];

    snprintf(p, sizeof(buf[0]), "%s/%s", dir, name);
    return p;
}

/* POSTs a client_credentials request with @assertion for @client_id.
 * Returns the HTTP status (0: no answer); the body in @ret_body. */
static long post(const char *client_id, const char *assertion, char **ret_body)
{
    struct cred_assertion_form form = {
        .client_id = client_id,
        .assertion = assertion,
    };
    struct cred_http_request req = {
        .url = token_url,
        .timeout_s = 20,
    };
    struct cred_http_response resp;
    char *body = NULL;
    long status = 0;

    *ret_body = NULL;
    if (cred_assertion_form_build(&form, &body) != 0)
        return 0;
    req.form = body;
    if (cred_http_perform(&req, &resp, err, sizeof(err)) == 0) {
        status = resp.status;
        *ret_body = strdup(resp.body);
        cred_http_response_free(&resp);
    } else {
        fprintf(stderr, "POST failed: %s\n", err);
    }
    explicit_bzero(body, strlen(body));
    free(body);
    return status;
}

/* Whether @body is a Bearer token answer with a lifetime. */
static bool is_token_answer(const char *body)
{
    cJSON *root = body != NULL ? cJSON_Parse(body) : NULL;
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(root, "access_token");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "token_type");
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(root, "expires_in");
    bool ok = cJSON_IsString(tok) && tok->valuestring[0] != '\0' &&
              cJSON_IsString(type) &&
              strcmp(type->valuestring, "Bearer") == 0 && cJSON_IsNumber(exp) &&
              exp->valuedouble > 0;

    cJSON_Delete(root);
    return ok;
}

static bool is_invalid_client(const char *body)
{
    cJSON *root = body != NULL ? cJSON_Parse(body) : NULL;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "error");
    bool is =
        cJSON_IsString(e) && strcmp(e->valuestring, "invalid_client") == 0;

    cJSON_Delete(root);
    return is;
}

static char *sign(struct jwt_credential *cred, enum jwt_alg alg,
                  const char *client_id, const char *aud)
{
    struct jwt_assertion_params p = {
        .alg = alg,
        .client_id = client_id,
        .audience = aud,
    };
    char *jwt = NULL;

    if (jwt_assertion_sign(cred, &p, (int64_t)time(NULL), &jwt, err,
                           sizeof(err)) != 0)
        fprintf(stderr, "sign: %s\n", err);
    return jwt;
}

/* @jwt's header and claims signed again with PSS and OpenSSL's default
 * salt length (the trap of protocol-facts-2.md 0.9). */
static char *resign_default_salt(const char *jwt, const char *key_file)
{
    const char *dot = strrchr(jwt, '.');
    FILE *f = fopen(key_file, "r");
    EVP_PKEY *key = f != NULL ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char sig[1024];
    size_t sig_len = sizeof(sig);
    char *input = strndup(jwt, (size_t)(dot - jwt));
    char *out = NULL;

    if (f != NULL)
        fclose(f);
    if (key != NULL && input != NULL &&
        EVP_DigestSignInit(md, &pctx, EVP_sha256(), NULL, key) == 1 &&
        EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
        EVP_DigestSign(md, sig, &sig_len, (unsigned char *)input,
                       strlen(input)) == 1) {
        char *seg = ctu_b64url_encode(sig, sig_len);
        out = malloc(strlen(input) + strlen(seg) + 2);
        sprintf(out, "%s.%s", input, seg);
        free(seg);
    }
    free(input);
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(key);
    return out;
}

static void test_accepted(struct jwt_credential *cred)
{
    char *jwt;
    char *body;
    long st;

    jwt = sign(cred, JWT_ALG_PS256, "bridge-ps256", token_url);
    st = post("bridge-ps256", jwt, &body);
    CHECK_MSG(st == 200 && is_token_answer(body), "PS256: %ld %s", st, body);
    free(body);
    /* The same assertion again: the server keeps jti and refuses it. */
    st = post("bridge-ps256", jwt, &body);
    CHECK_MSG(st >= 400 && is_invalid_client(body), "replay: %ld %s", st, body);
    free(body);
    free(jwt);
    /* A fresh one in the same second is fine: a new jti. */
    jwt = sign(cred, JWT_ALG_PS256, "bridge-ps256", token_url);
    st = post("bridge-ps256", jwt, &body);
    CHECK_MSG(st == 200 && is_token_answer(body), "PS256 again: %ld %s", st,
              body);
    free(body);
    free(jwt);

    jwt = sign(cred, JWT_ALG_RS256, "bridge-rs256", token_url);
    st = post("bridge-rs256", jwt, &body);
    CHECK_MSG(st == 200 && is_token_answer(body), "RS256: %ld %s", st, body);
    free(body);
    free(jwt);
}

static void test_refused(struct jwt_credential *cred,
                         struct jwt_credential *other)
{
    unsigned long code = 0;
    char why[1024];
    char *jwt;
    char *bad;
    char *body;
    long st;

    /* A key the server does not hold for this client. */
    jwt = sign(other, JWT_ALG_PS256, "bridge-ps256", token_url);
    st = post("bridge-ps256", jwt, &body);
    CHECK_MSG(st == 401 && is_invalid_client(body), "wrong key: %ld %s", st,
              body);
    CHECK(body != NULL &&
          entra_explain(body, strlen(body), ENTRA_CRED_CERTIFICATE, why,
                        sizeof(why), &code));
    CHECK_MSG(code == 700027 &&
                  strncmp(why, "invalid_client (as Entra's AADSTS700027): ",
                          42) == 0 &&
                  strstr(why, "does not hold this certificate") != NULL,
              "%s", why);
    free(body);
    free(jwt);

    /* The algorithm the client is not registered for. */
    jwt = sign(cred, JWT_ALG_RS256, "bridge-ps256", token_url);
    st = post("bridge-ps256", jwt, &body);
    CHECK_MSG(st == 401 && is_invalid_client(body), "alg: %ld %s", st, body);
    free(body);
    free(jwt);

    /* An audience that is not this server's token endpoint. */
    jwt = sign(cred, JWT_ALG_PS256, "bridge-ps256",
               "https://login.microsoftonline.com/t/oauth2/v2.0/token");
    st = post("bridge-ps256", jwt, &body);
    CHECK_MSG(st == 401 && is_invalid_client(body), "aud: %ld %s", st, body);
    free(body);
    free(jwt);

    /* The salt trap: same header and claims, default PSS salt. The server
     * (jose: salt = digest length, RFC 7518 3.5) refuses it... */
    jwt = sign(cred, JWT_ALG_PS256, "bridge-ps256", token_url);
    bad = jwt != NULL ? resign_default_salt(jwt, path("key.pem")) : NULL;
    CHECK(bad != NULL);
    st = post("bridge-ps256", bad, &body);
    CHECK_MSG(st == 401 && is_invalid_client(body), "default salt: %ld %s", st,
              body);
    free(body);
    /* ...and takes ours, unused so far, with the same jti. */
    st = post("bridge-ps256", jwt, &body);
    CHECK_MSG(st == 200 && is_token_answer(body), "our salt: %ld %s", st, body);
    free(body);
    free(bad);
    free(jwt);
}

int main(void)
{
    struct jwt_credential *cred = NULL;
    struct jwt_credential *other = NULL;
    struct ctu_server server;
    const char *argv[4];

    if (ctu_tmpdir(dir, sizeof(dir)) < 0 ||
        ctu_sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout '%s' "
               "-out '%s' -days 2 -subj /CN=bridge 2>/dev/null",
               path("key.pem"), path("cert.pem")) != 0 ||
        ctu_sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout '%s' "
               "-out '%s' -days 2 -subj /CN=intruder 2>/dev/null",
               path("other_key.pem"), path("other_cert.pem")) != 0) {
        fprintf(stderr, "cannot make keys\n");
        return 1;
    }
    CHECK(jwt_credential_from_files(path("cert.pem"), path("key.pem"), &cred,
                                    err, sizeof(err)) == 0);
    CHECK(jwt_credential_from_files(path("other_cert.pem"),
                                    path("other_key.pem"), &other, err,
                                    sizeof(err)) == 0);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    argv[0] = NODE_BINARY;
    argv[1] = SB_SOURCE_DIR "/tests/oidc/server.mjs";
    argv[2] = path("cert.pem");
    argv[3] = NULL;
    if (ctu_server_start(&server, argv, 60) != 0) {
        CHECK(!"oidc-provider started");
    } else if (cred != NULL && other != NULL) {
        snprintf(token_url, sizeof(token_url), "http://127.0.0.1:%d/token",
                 server.port);
        test_accepted(cred);
        test_refused(cred, other);
    }
    ctu_server_stop(&server);
    jwt_credential_free(cred);
    jwt_credential_free(other);
    curl_global_cleanup();
    ctu_rmtree(dir);
    return tap_done();
}
