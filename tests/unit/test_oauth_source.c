/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_oauth_source - the shared token source against a token endpoint
 * in this process: the form sent (body and Basic client authentication),
 * caching, refresh ahead of expiry on a deterministic clock, one fetch in
 * flight for many threads, invalidation after a 401 (only of the current
 * token), a refused client, an endpoint that is down, and the failure
 * hold that keeps callers from stampeding it.
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

#include "http_stub.h"
#include "tap.h"
#include "web/oauth.h"

/* The endpoint's behaviour, switched by the tests. */
static atomic_int endpoint_mode; /* enum below */
static atomic_int endpoint_delay_ms;
static atomic_int token_counter;
static char answer[1024];
/* MODE_LIFETIME: the expires_in member's JSON value. */
static char lifetime_json[64];

enum { MODE_OK, MODE_REFUSE, MODE_ERROR, MODE_LIFETIME, MODE_ECHO };

static const char *token_endpoint(void *ctx, const char *request,
                                  size_t header_len, size_t request_len)
{
    (void)ctx;
    (void)request;
    (void)header_len;
    (void)request_len;
    if (atomic_load(&endpoint_delay_ms) > 0)
        usleep((useconds_t)atomic_load(&endpoint_delay_ms) * 1000u);
    switch (atomic_load(&endpoint_mode)) {
    case MODE_REFUSE:
        return "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json"
               "\r\nContent-Length: 77\r\n\r\n"
               "{\"error\": \"invalid_client\", \"error_description\": "
               "\"AADSTS7000215: bad secret\"}";
    case MODE_ERROR:
        return "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5"
               "\r\n\r\noops!";
    case MODE_ECHO: {
        /* An endpoint that echoes what it got: the secret as sent in the
         * form, as it is, and the request's Basic credentials. */
        const char *body = "{\"error\": \"invalid_client\", "
                           "\"error_description\": \"AADSTS7000215: Invalid "
                           "client secret provided: 'se+cret&x' (form "
                           "se%2Bcret%26x, Basic "
                           "Y2xpZW50JTNBMTpzZSUyQmNyZXQlMjZ4).\"}";
        snprintf(answer, sizeof(answer),
                 "HTTP/1.1 401 Unauthorized\r\nContent-Type: "
                 "application/json\r\nContent-Length: %zu\r\n\r\n%s",
                 strlen(body), body);
        return answer;
    }
    case MODE_LIFETIME: {
        char body[160];
        int n =
            snprintf(body, sizeof(body),
                     "{\"access_token\": \"tok-%d\", \"token_type\": "
                     "\"Bearer\", \"expires_in\": %s}",
                     atomic_fetch_add(&token_counter, 1) + 1, lifetime_json);
        snprintf(answer, sizeof(answer),
                 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 "Content-Length: %d\r\n\r\n%s",
                 n, body);
        return answer;
    }
    default: {
        char body[128];
        int n = snprintf(body, sizeof(body),
                         "{\"access_token\": \"tok-%d\", \"token_type\": "
                         "\"Bearer\", \"expires_in\": \"100\"}",
                         atomic_fetch_add(&token_counter, 1) + 1);
        snprintf(answer, sizeof(answer),
                 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 "Content-Length: %d\r\n\r\n%s",
                 n, body);
        return answer;
    }
    }
}

static uint64_t monotonic_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct http_stub stub;
static char url[128];
static char err[512];

static struct oauth_source *new_source(enum oauth_client_auth auth)
{
    struct oauth_params p = {
        .kind = OAUTH_CLIENT_CREDENTIALS,
        .token_url = url,
        .client_id = "client:1",
        .client_secret = "se+cret&x",
        .scope = "https://dicom.healthcareapis.azure.com/.default",
        .client_auth = auth,
        .timeout_s = 5,
    };
    return oauth_source_new(&p);
}

static void test_form_and_cache(void)
{
    struct oauth_source *src = new_source(OAUTH_AUTH_BODY);
    uint64_t gen = 0;
    uint64_t gen2 = 0;
    char *tok = NULL;
    char hdr[256];

    CHECK(oauth_source_token(src, 1000, &tok, &gen, err, sizeof(err)) == 0);
    CHECK(tok != NULL && strcmp(tok, "tok-1") == 0);
    free(tok);
    pthread_mutex_lock(&stub.lock);
    const char *body = stub.last_request + stub.last_header_len;
    CHECK_MSG(strstr(body, "grant_type=client_credentials") != NULL &&
                  strstr(body, "client_id=client%3A1") != NULL &&
                  strstr(body, "client_secret=se%2Bcret%26x") != NULL &&
                  strstr(body, "scope=https%3A%2F%2Fdicom.healthcareapis."
                               "azure.com%2F.default") != NULL &&
                  strstr(body, "resource=") == NULL,
              "%s", body);
    pthread_mutex_unlock(&stub.lock);
    CHECK(http_stub_header(&stub, "Authorization", hdr, sizeof(hdr)) == NULL);

    /* Cached: no new request until the refresh point. expires_in 100 s:
     * refresh 10 s (10%) before expiry. */
    CHECK(oauth_source_token(src, 80000, &tok, &gen2, err, sizeof(err)) == 0);
    CHECK(strcmp(tok, "tok-1") == 0 && gen2 == gen);
    free(tok);
    CHECK(oauth_source_fetches(src) == 1);
    CHECK(oauth_source_token(src, 91500, &tok, &gen2, err, sizeof(err)) == 0);
    CHECK(strcmp(tok, "tok-2") == 0 && gen2 == gen + 1);
    free(tok);
    CHECK(oauth_source_fetches(src) == 2);

    /* 401 with an old token: nothing happens; with the current: refetch. */
    oauth_source_invalidate(src, gen);
    CHECK(oauth_source_token(src, 92000, &tok, &gen, err, sizeof(err)) == 0);
    CHECK(strcmp(tok, "tok-2") == 0);
    free(tok);
    oauth_source_invalidate(src, gen);
    /* Not at once: requests are OAUTH_MIN_FETCH_INTERVAL_MS apart, so
     * this one waits the 499 ms left (in real time). */
    uint64_t t0 = monotonic_ms();
    CHECK(oauth_source_token(src, 92001, &tok, &gen, err, sizeof(err)) == 0);
    CHECK(tok != NULL && strcmp(tok, "tok-3") == 0);
    free(tok);
    CHECK_MSG(monotonic_ms() - t0 >= 450, "waited %llu ms",
              (unsigned long long)(monotonic_ms() - t0));
    CHECK(oauth_source_fetches(src) == 3);
    oauth_source_free(src);

    /* Basic client authentication: ID and secret URL-encoded, then
     * base64 of "client%3A1:se%2Bcret%26x". */
    src = new_source(OAUTH_AUTH_BASIC);
    CHECK(oauth_source_token(src, 1, &tok, &gen, err, sizeof(err)) == 0);
    free(tok);
    CHECK(http_stub_header(&stub, "Authorization", hdr, sizeof(hdr)) != NULL);
    CHECK_MSG(strcmp(hdr, "Basic Y2xpZW50JTNBMTpzZSUyQmNyZXQlMjZ4") == 0, "%s",
              hdr);
    pthread_mutex_lock(&stub.lock);
    CHECK(strstr(stub.last_request + stub.last_header_len, "client_secret") ==
          NULL);
    pthread_mutex_unlock(&stub.lock);
    oauth_source_free(src);
}

struct caller {
    struct oauth_source *src;
    int result;
    char *token;
};

static void *call(void *arg)
{
    struct caller *c = arg;
    uint64_t gen;
    char my_err[256];

    c->result = oauth_source_token(c->src, 5000, &c->token, &gen, my_err,
                                   sizeof(my_err));
    return NULL;
}

static void test_single_flight(void)
{
    struct oauth_source *src = new_source(OAUTH_AUTH_BODY);
    struct caller callers[8];
    pthread_t threads[8];

    atomic_store(&endpoint_delay_ms, 300);
    for (int i = 0; i < 8; i++) {
        callers[i].src = src;
        callers[i].token = NULL;
        pthread_create(&threads[i], NULL, call, &callers[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(threads[i], NULL);
        CHECK(callers[i].result == 0 && callers[i].token != NULL);
        if (i > 0 && callers[i].token != NULL && callers[0].token != NULL)
            CHECK(strcmp(callers[i].token, callers[0].token) == 0);
    }
    for (int i = 0; i < 8; i++)
        free(callers[i].token);
    CHECK_MSG(oauth_source_fetches(src) == 1, "fetches: %u",
              oauth_source_fetches(src));
    atomic_store(&endpoint_delay_ms, 0);
    oauth_source_free(src);
}

static void test_failures(void)
{
    struct oauth_source *src = new_source(OAUTH_AUTH_BODY);
    uint64_t gen;
    char *tok = NULL;

    /* A refused client is a configuration error, with the server's words. */
    atomic_store(&endpoint_mode, MODE_REFUSE);
    CHECK(oauth_source_token(src, 1000, &tok, &gen, err, sizeof(err)) ==
          -EACCES);
    CHECK(tok == NULL);
    CHECK_MSG(strstr(err, "invalid_client") && strstr(err, "AADSTS7000215"),
              "%s", err);
    /* Held: the next callers get the same answer without a request. */
    err[0] = '\0';
    CHECK(oauth_source_token(src, 1500, &tok, &gen, err, sizeof(err)) ==
          -EACCES);
    CHECK(strstr(err, "invalid_client") != NULL);
    CHECK(oauth_source_fetches(src) == 1);

    /* The endpoint fails: transient. */
    atomic_store(&endpoint_mode, MODE_ERROR);
    CHECK(oauth_source_token(src, 1000 + OAUTH_FAILURE_HOLD_MS, &tok, &gen, err,
                             sizeof(err)) == -EAGAIN);
    CHECK(oauth_source_fetches(src) == 2);

    /* Back: a token again. */
    atomic_store(&endpoint_mode, MODE_OK);
    CHECK(oauth_source_token(src, 1000 + 2 * OAUTH_FAILURE_HOLD_MS, &tok, &gen,
                             err, sizeof(err)) == 0);
    CHECK(tok != NULL);
    free(tok);

    /* A refresh that fails while the token is still valid: keep using it. */
    atomic_store(&endpoint_mode, MODE_ERROR);
    uint64_t t0 = 1000 + 2 * OAUTH_FAILURE_HOLD_MS;
    CHECK(oauth_source_token(src, t0 + 95000, &tok, &gen, err, sizeof(err)) ==
          0);
    CHECK(tok != NULL);
    free(tok);
    /* Past expiry it is an outage. */
    CHECK(oauth_source_token(src, t0 + 101000, &tok, &gen, err, sizeof(err)) ==
          -EAGAIN);
    atomic_store(&endpoint_mode, MODE_OK);
    oauth_source_free(src);

    /* Nobody listening at all. */
    struct oauth_params p = {
        .kind = OAUTH_CLIENT_CREDENTIALS,
        .token_url = "http://127.0.0.1:9/token",
        .client_id = "c",
        .client_secret = "s",
        .timeout_s = 2,
    };
    src = oauth_source_new(&p);
    CHECK(oauth_source_token(src, 1, &tok, &gen, err, sizeof(err)) == -EAGAIN);
    CHECK_MSG(strstr(err, "unreachable") != NULL, "%s", err);
    oauth_source_free(src);
}

/* The notices a source gives, for the tests. */
static char notices[2048];

static void on_notice(void *ctx, const char *message)
{
    (void)ctx;
    snprintf(notices + strlen(notices), sizeof(notices) - strlen(notices),
             "%s\n", message);
}

/*
 * Lifetimes that are no lifetime: each form is answered by the endpoint
 * while callers ask every 100 ms for 20 s. One request each (the 60 s
 * fallback), and the notice says what was received; before the fix a
 * wrapping value expired at once and every call fetched.
 */
static void test_nonsense_lifetimes(void)
{
    static const struct {
        const char *json;
        const char *shown;
    } forms[] = {
        { "-5", "expires_in -5," },
        { "0", "expires_in 0," },
        { "\"NaN\"", "expires_in 'NaN'," },
        { "1e30", "expires_in 1e+30," },
        { "18446744073709551616", "expires_in 1.84467440737096e+19," },
        { "\"99999999999999999999\"", "expires_in '99999999999999999999'," },
        { "9223372036854775", "expires_in 9.22337203685478e+15," },
        { "\"soon\"", "expires_in 'soon'," },
    };
    struct oauth_params p = {
        .kind = OAUTH_CLIENT_CREDENTIALS,
        .token_url = url,
        .client_id = "client:1",
        .client_secret = "se+cret&x",
        .timeout_s = 5,
        .notice = on_notice,
    };

    atomic_store(&endpoint_mode, MODE_LIFETIME);
    for (size_t f = 0; f < sizeof(forms) / sizeof(forms[0]); f++) {
        struct oauth_source *src = oauth_source_new(&p);
        unsigned failures = 0;

        snprintf(lifetime_json, sizeof(lifetime_json), "%s", forms[f].json);
        notices[0] = '\0';
        for (uint64_t now = 1000; now < 21000; now += 100) {
            uint64_t gen;
            char *tok = NULL;
            if (oauth_source_token(src, now, &tok, &gen, err, sizeof(err)) < 0)
                failures++;
            free(tok);
        }
        CHECK_MSG(oauth_source_fetches(src) == 1 && failures == 0,
                  "%s: %u requests in 20 s, %u failures", forms[f].json,
                  oauth_source_fetches(src), failures);
        CHECK_MSG(strstr(notices, forms[f].shown) != NULL &&
                      strstr(notices, "used for 60 s") != NULL,
                  "%s: %s", forms[f].json, notices);
        /* The fallback lifetime ends: one more request, not a stampede. */
        for (uint64_t now = 21000; now < 61000; now += 100) {
            uint64_t gen;
            char *tok = NULL;
            (void)oauth_source_token(src, now, &tok, &gen, err, sizeof(err));
            free(tok);
        }
        CHECK_MSG(oauth_source_fetches(src) == 2, "%s: %u requests in 60 s",
                  forms[f].json, oauth_source_fetches(src));
        oauth_source_free(src);
    }
    /* A sound lifetime gives no notice. */
    snprintf(lifetime_json, sizeof(lifetime_json), "3599");
    notices[0] = '\0';
    struct oauth_source *src = oauth_source_new(&p);
    uint64_t gen;
    char *tok = NULL;
    CHECK(oauth_source_token(src, 1, &tok, &gen, err, sizeof(err)) == 0);
    free(tok);
    CHECK(notices[0] == '\0');
    oauth_source_free(src);
    atomic_store(&endpoint_mode, MODE_OK);
}

/* An endpoint echoing the client secret: never in the error, in any of
 * its forms; the OAuth error and the AADSTS code stay. */
static void test_secret_echo(void)
{
    struct oauth_source *src = new_source(OAUTH_AUTH_BASIC);
    uint64_t gen;
    char *tok = NULL;

    atomic_store(&endpoint_mode, MODE_ECHO);
    CHECK(oauth_source_token(src, 1000, &tok, &gen, err, sizeof(err)) ==
          -EACCES);
    CHECK_MSG(strstr(err, "se+cret") == NULL && strstr(err, "se%2B") == NULL &&
                  strstr(err, "Y2xpZW50JTNBMTpzZSUyQmNyZXQlMjZ4") == NULL &&
                  strstr(err, "invalid_client") != NULL &&
                  strstr(err, "AADSTS7000215") != NULL &&
                  strstr(err, "[redacted]") != NULL,
              "%s", err);
    /* The held failure repeats the redacted text. */
    CHECK(oauth_source_token(src, 1500, &tok, &gen, err, sizeof(err)) ==
          -EACCES);
    CHECK_MSG(strstr(err, "se+cret") == NULL, "%s", err);
    oauth_source_free(src);
    atomic_store(&endpoint_mode, MODE_OK);
}

static void test_static_and_none(void)
{
    struct oauth_params p = { .kind = OAUTH_STATIC, .static_token = "fixed" };
    struct oauth_source *src = oauth_source_new(&p);
    uint64_t gen;
    char *tok = NULL;

    CHECK(oauth_source_token(src, 1, &tok, &gen, err, sizeof(err)) == 0);
    CHECK(tok != NULL && strcmp(tok, "fixed") == 0);
    free(tok);
    oauth_source_invalidate(src, gen);
    oauth_source_free(src);

    p.kind = OAUTH_NONE;
    src = oauth_source_new(&p);
    tok = (char *)"x";
    CHECK(oauth_source_token(src, 1, &tok, &gen, err, sizeof(err)) == 0);
    CHECK(tok == NULL);
    oauth_source_free(src);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (http_stub_start(&stub, token_endpoint, NULL) != 0)
        return 1;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/tenant/oauth2/v2.0/token",
             stub.port);
    test_form_and_cache();
    test_single_flight();
    test_failures();
    test_static_and_none();
    test_nonsense_lifetimes();
    test_secret_echo();
    http_stub_stop(&stub);
    http_stub_free(&stub);
    curl_global_cleanup();
    return tap_done();
}
