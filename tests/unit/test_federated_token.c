/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_federated_token - workload identity (federated_token.h): which
 * file (auth.client_assertion_file, or AZURE_FEDERATED_TOKEN_FILE for
 * auth.type "azure" only), the file re-read on every request so that a
 * token rotated between two requests is the one sent (checked at a
 * scripted token endpoint, identity_server.py, which records the form),
 * the exact form, the checks (size cap, empty, not a JWT, expired, not a
 * regular file), and Entra's AADSTS70021 answer explained.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "cred_test_util.h"
#include "tap.h"
#include "web/cred_http.h"
#include "web/credential.h"
#include "web/entra_errors.h"
#include "web/federated_token.h"

static char dir[512];
static char file[600];
static char err[1024];
static int port;

/* A JWT-shaped federated token with @sub and @exp (signature fake: only
 * Entra verifies it). */
static char *make_token(const char *sub, long long exp)
{
    char claims[512];
    const char *header = "{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"JWT\"}";
    char *h;
    char *c;
    char *out;

    snprintf(claims, sizeof(claims),
             "{\"aud\":[\"api://AzureADTokenExchange\"],\"exp\":%lld,"
             "\"iss\":\"https://oidc.prod-aks.azure.com/tenant/\","
             "\"sub\":\"%s\"}",
             exp, sub);
    h = ctu_b64url_encode((const unsigned char *)header, strlen(header));
    c = ctu_b64url_encode((const unsigned char *)claims, strlen(claims));
    out = malloc(strlen(h) + strlen(c) + 64);
    sprintf(out, "%s.%s.c2lnbmF0dXJlLW9mLXRoZS1pc3N1ZXI", h, c);
    free(h);
    free(c);
    return out;
}

static void test_path_rule(void)
{
    const char *env = "/var/run/secrets/azure/tokens/azure-identity-token";

    CHECK(strcmp(federated_token_path("/etc/tok", "azure", env), "/etc/tok") ==
          0);
    CHECK(strcmp(federated_token_path("/etc/tok", "client_credentials", NULL),
                 "/etc/tok") == 0);
    CHECK(federated_token_path("", "azure", env) == env);
    CHECK(federated_token_path(NULL, "azure", env) == env);
    CHECK(federated_token_path(NULL, "client_credentials", env) == NULL);
    CHECK(federated_token_path(NULL, "managed_identity", env) == NULL);
    CHECK(federated_token_path(NULL, "azure", "") == NULL);
    CHECK(federated_token_path(NULL, "azure", NULL) == NULL);
    CHECK(federated_token_path(NULL, NULL, env) == NULL);
}

/* POSTs @form to the scripted endpoint; returns the status, the body in
 * @ret_body (caller frees). */
static long post(const char *url_path, const char *form, char **ret_body)
{
    char url[128];
    struct cred_http_request req = { .url = url,
                                     .form = form,
                                     .timeout_s = 20 };
    struct cred_http_response resp;
    long status = 0;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, url_path);
    *ret_body = NULL;
    if (cred_http_perform(&req, &resp, err, sizeof(err)) == 0) {
        status = resp.status;
        *ret_body = strdup(resp.body);
        cred_http_response_free(&resp);
    }
    return status;
}

/* The client_assertion the endpoint got last. */
static char *last_assertion(void)
{
    char *body = NULL;
    cJSON *root;
    const cJSON *a;
    char *out = NULL;
    char url[128];
    struct cred_http_request req = { .url = url, .timeout_s = 20 };
    struct cred_http_response resp;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/_last", port);
    if (cred_http_perform(&req, &resp, err, sizeof(err)) != 0)
        return NULL;
    body = resp.body;
    root = cJSON_Parse(body);
    a = cJSON_GetObjectItemCaseSensitive(root, "client_assertion");
    if (cJSON_IsString(a))
        out = strdup(a->valuestring);
    cJSON_Delete(root);
    cred_http_response_free(&resp);
    return out;
}

/* One token request with the file as it is now; the access token the
 * endpoint issued in @ret_access. */
static int request(const char *client_id, char **ret_access, long *ret_st)
{
    char *form = NULL;
    char *body = NULL;
    int r;

    r = federated_token_form(
        file, client_id, "https://dicom.healthcareapis.azure.com/.default",
        NULL, (int64_t)time(NULL), &form, err, sizeof(err));
    if (r < 0)
        return r;
    *ret_st = post("/token", form, &body);
    *ret_access = body;
    explicit_bzero(form, strlen(form));
    free(form);
    return 0;
}

static void test_rotation(void)
{
    long long now = (long long)time(NULL);
    char *first = make_token("system:serviceaccount:pacs:bridge", now + 3600);
    char *second =
        make_token("system:serviceaccount:pacs:bridge-rotated", now + 7200);
    char with_newline[4096];
    char *body = NULL;
    char *got;
    long st = 0;

    snprintf(with_newline, sizeof(with_newline), "%s\n", first);
    CHECK(ctu_write(file, with_newline, 0640) == 0);
    CHECK_MSG(request("app-1", &body, &st) == 0, "%s", err);
    CHECK_MSG(st == 200 && body != NULL && strstr(body, "fed.") != NULL,
              "%ld %s", st, body);
    free(body);
    got = last_assertion();
    CHECK(got != NULL && strcmp(got, first) == 0);
    free(got);

    /* The kubelet writes a new token (atomic rename): the next request
     * sends the new one, with no reload of anything. */
    CHECK(ctu_write(file, second, 0640) == 0);
    CHECK_MSG(request("app-1", &body, &st) == 0, "%s", err);
    CHECK(st == 200);
    free(body);
    got = last_assertion();
    CHECK_MSG(got != NULL && strcmp(got, second) == 0, "sent %s", got);
    free(got);

    /* Rewritten in place as well. */
    FILE *f = fopen(file, "w");
    CHECK(f != NULL);
    if (f != NULL) {
        fputs(first, f);
        fclose(f);
    }
    CHECK(request("app-1", &body, &st) == 0 && st == 200);
    free(body);
    got = last_assertion();
    CHECK(got != NULL && strcmp(got, first) == 0);
    free(got);

    /* Entra's answer when no federated credential matches. */
    CHECK(request("unknown-app", &body, &st) == 0);
    CHECK(st == 400 && body != NULL);
    if (body != NULL) {
        char why[1024];
        unsigned long code = 0;
        CHECK(entra_explain(body, strlen(body), ENTRA_CRED_FEDERATED, why,
                            sizeof(why), &code));
        CHECK(code == 70021 && entra_error_transient(code));
        CHECK_MSG(strncmp(why,
                          "AADSTS70021: no federated identity "
                          "credential",
                          45) == 0,
                  "%s", why);
    }
    free(body);
    free(first);
    free(second);
}

static void test_form_and_checks(void)
{
    long long now = (long long)time(NULL);
    char *tok = make_token("s", now + 60);
    char big[FEDERATED_MAX_TOKEN + 2];
    char expect[8192];
    char *form = NULL;
    char *read = NULL;

    CHECK(ctu_write(file, tok, 0600) == 0);
    CHECK(federated_token_form(file, "c1", NULL,
                               "https://dicom.healthcareapis.azure.com",
                               (int64_t)now, &form, err, sizeof(err)) == 0);
    snprintf(expect, sizeof(expect),
             "grant_type=client_credentials&client_id=c1&client_assertion_type"
             "=urn%%3Aietf%%3Aparams%%3Aoauth%%3Aclient-assertion-type%%3A"
             "jwt-bearer&client_assertion=%s&resource=https%%3A%%2F%%2Fdicom."
             "healthcareapis.azure.com",
             tok);
    CHECK_MSG(form != NULL && strcmp(form, expect) == 0, "%s", form);
    free(form);
    form = NULL;
    CHECK(federated_token_form(file, NULL, NULL, NULL, (int64_t)now, &form, err,
                               sizeof(err)) == -EINVAL);
    CHECK(strstr(err, "auth.client_id") != NULL);

    /* Expired: nothing refreshes the file. */
    CHECK(federated_token_read(file, (int64_t)now + 61, &read, err,
                               sizeof(err)) == -EKEYEXPIRED);
    CHECK(strstr(err, "expired") != NULL && strstr(err, tok) == NULL);
    free(tok);

    CHECK(federated_token_read("/nonexistent/token", 0, &read, err,
                               sizeof(err)) == -ENOENT);
    CHECK(strstr(err, "/nonexistent/token") != NULL);
    CHECK(federated_token_read(dir, 0, &read, err, sizeof(err)) == -EINVAL);
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    CHECK(ctu_write(file, big, 0600) == 0);
    CHECK(federated_token_read(file, 0, &read, err, sizeof(err)) == -EFBIG);
    CHECK(ctu_write(file, "", 0600) == 0);
    CHECK(federated_token_read(file, 0, &read, err, sizeof(err)) == -ENODATA);
    CHECK(ctu_write(file, " \n\t\n", 0600) == 0);
    CHECK(federated_token_read(file, 0, &read, err, sizeof(err)) == -ENODATA);
    CHECK(ctu_write(file, "hello-world\n", 0600) == 0);
    CHECK(federated_token_read(file, 0, &read, err, sizeof(err)) == -EBADMSG);
    CHECK(strstr(err, "does not hold a JWT") != NULL &&
          strstr(err, "hello-world") == NULL);
    CHECK(ctu_write(file, "eyJhIjoxfQ.eyJiIjoyfQ", 0600) == 0);
    CHECK(federated_token_read(file, 0, &read, err, sizeof(err)) == -EBADMSG);
    CHECK(ctu_write(file, "bm90IGpzb24.eyJiIjoyfQ.c2ln", 0600) == 0);
    CHECK(federated_token_read(file, 0, &read, err, sizeof(err)) == -EBADMSG);
    CHECK(ctu_write(file, "eyJhIjoxfQ.eyJiIjoyfQ.c2ln\nextra", 0600) == 0);
    CHECK(federated_token_read(file, 0, &read, err, sizeof(err)) == -EBADMSG);
    FILE *nul = fopen(file, "w");
    CHECK(nul != NULL);
    if (nul != NULL) {
        fwrite("eyJhIjoxfQ.eyJiIjoyfQ.c2ln\0junk", 1, 31, nul);
        fclose(nul);
    }
    CHECK(federated_token_read(file, 0, &read, err, sizeof(err)) == -EBADMSG);
    CHECK(strstr(err, "NUL") != NULL);
    /* No exp claim: accepted (Entra decides). */
    CHECK(ctu_write(file, "eyJhIjoxfQ.eyJiIjoyfQ.c2ln\r\n", 0600) == 0);
    CHECK(federated_token_read(file, 0, &read, err, sizeof(err)) == 0);
    CHECK(read != NULL && strcmp(read, "eyJhIjoxfQ.eyJiIjoyfQ.c2ln") == 0);
    free(read);
}

int main(void)
{
    struct ctu_server server;
    const char *argv[4];

    if (ctu_tmpdir(dir, sizeof(dir)) < 0)
        return 1;
    snprintf(file, sizeof(file), "%s/azure-identity-token", dir);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    test_path_rule();
    test_form_and_checks();
    argv[0] = PYTHON3;
    argv[1] = SB_SOURCE_DIR "/tests/unit/identity_server.py";
    argv[2] = dir;
    argv[3] = NULL;
    if (ctu_server_start(&server, argv, 30) != 0) {
        CHECK(!"identity_server.py started");
    } else {
        port = server.port;
        test_rotation();
    }
    ctu_server_stop(&server);
    curl_global_cleanup();
    ctu_rmtree(dir);
    return tap_done();
}
