/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_oauth_reload - the token source with the credentials of issue 13,
 * against a token endpoint in this process (http_stub): a certificate's
 * client assertion in the form, a key that is not the certificate's,
 * the background refresh (callers keep the valid token while the slow
 * endpoint answers; freeing waits for it), oauth_source_reload() (new
 * secret on the next fetch, the current token kept; a broken key or
 * another kind refused, the old material kept), and Entra's sentence for
 * an invalid_client without a code.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cred_test_util.h"
#include "http_stub.h"
#include "tap.h"
#include "web/oauth.h"

static atomic_int endpoint_delay_ms;
static atomic_int endpoint_refuse;
static atomic_int token_counter;
static char answer[512];

static const char *token_endpoint(void *ctx, const char *request,
                                  size_t header_len, size_t request_len)
{
    (void)ctx;
    (void)request;
    (void)header_len;
    (void)request_len;
    if (atomic_load(&endpoint_delay_ms) > 0)
        usleep((useconds_t)atomic_load(&endpoint_delay_ms) * 1000u);
    char body[128];
    int len;
    if (atomic_load(&endpoint_refuse)) {
        len = snprintf(body, sizeof(body),
                       "{\"error\": \"invalid_client\", "
                       "\"error_description\": \"no\"}");
        snprintf(answer, sizeof(answer),
                 "HTTP/1.1 401 Unauthorized\r\nContent-Type: "
                 "application/json\r\nContent-Length: %d\r\n\r\n%s",
                 len, body);
        return answer;
    }
    int n = atomic_fetch_add(&token_counter, 1) + 1;
    len = snprintf(body, sizeof(body),
                   "{\"access_token\": \"tok-%d\", \"token_type\": "
                   "\"Bearer\", \"expires_in\": 100}",
                   n);
    snprintf(answer, sizeof(answer),
             "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
             "Content-Length: %d\r\n\r\n%s",
             len, body);
    return answer;
}

static struct http_stub stub;
static char url[128];
static char dir[256];
static char cert_a[300];
static char key_a[300];
static char key_b[300];

static uint64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Whether the last request's body holds @needle. */
static bool last_body_has(const char *needle)
{
    bool found;

    pthread_mutex_lock(&stub.lock);
    found = stub.last_request != NULL &&
            strstr(stub.last_request + stub.last_header_len, needle) != NULL;
    pthread_mutex_unlock(&stub.lock);
    return found;
}

static void test_certificate(void)
{
    struct oauth_params p = {
        .kind = OAUTH_CLIENT_CREDENTIALS,
        .token_url = url,
        .client_id = "app-cert",
        .client_certificate_file = cert_a,
        .client_key_file = key_a,
        .timeout_s = 5,
    };
    struct oauth_source *src = NULL;
    char err[768] = "";
    char *tok = NULL;
    uint64_t gen = 0;

    CHECK(oauth_source_open(&p, &src, err, sizeof(err)) == 0);
    CHECK(oauth_source_token(src, 1000, &tok, &gen, err, sizeof(err)) == 0);
    free(tok);
    CHECK_MSG(last_body_has("client_assertion_type=urn%3Aietf%3Aparams%3A"
                            "oauth%3Aclient-assertion-type%3Ajwt-bearer") &&
                  last_body_has("client_assertion=eyJ") &&
                  last_body_has("client_id=app-cert") &&
                  !last_body_has("client_secret"),
              "the form carries a client assertion, no secret");

    /* An invalid_client without a code: the certificate's sentence. */
    atomic_store(&endpoint_refuse, 1);
    oauth_source_invalidate(src, gen);
    CHECK(oauth_source_token(src, 5000, &tok, &gen, err, sizeof(err)) ==
          -EACCES);
    CHECK_MSG(strstr(err, "AADSTS700027") != NULL &&
                  strstr(err, "certificate") != NULL,
              "%s", err);
    atomic_store(&endpoint_refuse, 0);

    /* Reload with a key of another certificate: refused, old kept. */
    p.client_key_file = key_b;
    err[0] = '\0';
    CHECK(oauth_source_reload(src, &p, err, sizeof(err)) == -EKEYREJECTED);
    CHECK_MSG(strstr(err, key_b) != NULL, "%s", err);
    CHECK(oauth_source_token(src, 9000, &tok, &gen, err, sizeof(err)) == 0);
    CHECK(tok != NULL);
    free(tok);
    CHECK(last_body_has("client_assertion=eyJ"));

    /* Another kind: a restart, not a reload. */
    p.kind = OAUTH_COMMAND;
    CHECK(oauth_source_reload(src, &p, err, sizeof(err)) == -EINVAL);
    CHECK(strstr(err, "restart") != NULL);
    oauth_source_free(src);

    /* Opening with a mismatched key says why. */
    p.kind = OAUTH_CLIENT_CREDENTIALS;
    src = NULL;
    CHECK(oauth_source_open(&p, &src, err, sizeof(err)) == -EKEYREJECTED &&
          src == NULL);
    CHECK(oauth_source_new(&p) == NULL);
}

static void test_reload_secret(void)
{
    struct oauth_params p = {
        .kind = OAUTH_CLIENT_CREDENTIALS,
        .token_url = url,
        .client_id = "app",
        .client_secret = "old-secret",
        .timeout_s = 5,
    };
    struct oauth_source *src = oauth_source_new(&p);
    char err[768];
    char *tok = NULL;
    uint64_t gen = 0;
    uint64_t gen2 = 0;
    unsigned fetches;

    CHECK(src != NULL);
    CHECK(oauth_source_token(src, 1000, &tok, &gen, err, sizeof(err)) == 0);
    free(tok);
    CHECK(last_body_has("client_secret=old-secret"));
    fetches = oauth_source_fetches(src);

    p.client_secret = "new-secret";
    CHECK(oauth_source_reload(src, &p, err, sizeof(err)) == 0);
    /* The current token stays until its refresh. */
    CHECK(oauth_source_token(src, 2000, &tok, &gen2, err, sizeof(err)) == 0);
    free(tok);
    CHECK(gen2 == gen && oauth_source_fetches(src) == fetches);
    /* A 401: the new secret goes out. */
    oauth_source_invalidate(src, gen2);
    CHECK(oauth_source_token(src, 3000, &tok, &gen2, err, sizeof(err)) == 0);
    free(tok);
    CHECK(gen2 == gen + 1);
    CHECK(last_body_has("client_secret=new-secret") &&
          !last_body_has("old-secret"));
    oauth_source_free(src);
}

static void test_background_refresh(void)
{
    struct oauth_params p = {
        .kind = OAUTH_CLIENT_CREDENTIALS,
        .token_url = url,
        .client_id = "app",
        .client_secret = "s",
        .timeout_s = 5,
        .background_refresh = true,
    };
    struct oauth_source *src = oauth_source_new(&p);
    char err[768];
    char *tok = NULL;
    char first[32];
    uint64_t gen = 0;
    uint64_t t0;

    CHECK(src != NULL);
    CHECK(oauth_source_token(src, 1000, &tok, &gen, err, sizeof(err)) == 0);
    snprintf(first, sizeof(first), "%s", tok);
    free(tok);

    /* Due (10 s before the 100 s expiry), the endpoint slow: the caller
     * gets the current token at once, the refresh runs behind. */
    atomic_store(&endpoint_delay_ms, 600);
    t0 = monotonic_ms();
    CHECK(oauth_source_token(src, 92000, &tok, &gen, err, sizeof(err)) == 0);
    CHECK_MSG(monotonic_ms() - t0 < 300, "took %llu ms",
              (unsigned long long)(monotonic_ms() - t0));
    CHECK(strcmp(tok, first) == 0);
    free(tok);
    for (int i = 0; i < 100 && oauth_source_fetches(src) < 2; i++)
        usleep(10000);
    CHECK(oauth_source_fetches(src) == 2);
    /* Later callers see the new token once it is in. */
    for (int i = 0; i < 300; i++) {
        CHECK(oauth_source_token(src, 92500, &tok, &gen, err, sizeof(err)) ==
              0);
        bool fresh = strcmp(tok, first) != 0;
        free(tok);
        if (fresh)
            break;
        usleep(10000);
    }
    CHECK(oauth_source_token(src, 92600, &tok, &gen, err, sizeof(err)) == 0);
    CHECK_MSG(strcmp(tok, first) != 0, "still %s", tok);
    free(tok);
    CHECK(oauth_source_fetches(src) == 2);

    /* Freed while a background refresh is running: it waits. */
    CHECK(oauth_source_token(src, 92600 + 91000, &tok, &gen, err,
                             sizeof(err)) == 0);
    free(tok);
    oauth_source_free(src);
    atomic_store(&endpoint_delay_ms, 0);
    CHECK(1);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CHECK(ctu_tmpdir(dir, sizeof(dir)) == 0);
    snprintf(cert_a, sizeof(cert_a), "%s/a.crt", dir);
    snprintf(key_a, sizeof(key_a), "%s/a.key", dir);
    snprintf(key_b, sizeof(key_b), "%s/b.key", dir);
    CHECK(ctu_sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout '%s' "
                 "-out '%s' -days 30 -subj /CN=a 2>/dev/null",
                 key_a, cert_a) == 0);
    CHECK(ctu_sh("openssl genpkey -algorithm RSA -pkeyopt "
                 "rsa_keygen_bits:2048 -out '%s' 2>/dev/null",
                 key_b) == 0);
    CHECK(http_stub_start(&stub, token_endpoint, NULL) == 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/token", stub.port);

    test_certificate();
    test_reload_secret();
    test_background_refresh();

    http_stub_stop(&stub);
    http_stub_free(&stub);
    ctu_rmtree(dir);
    curl_global_cleanup();
    return tap_done();
}
