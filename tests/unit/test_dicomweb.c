/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_dicomweb - the one DICOMweb client against scripted HTTP servers in
 * this process (http_stub.h): a 401 invalidates the token and replays
 * once with a new one from a real token source (a second stub as token
 * endpoint); a second 401 is the answer; a 403 gives the diagnosis from
 * the token's claims, due in the log once per rate-limit period; the
 * secrets of a failed exchange are gathered; Retry-After in seconds and as
 * an HTTP-date; the pool reuses one handle, and threads sharing a client
 * never need more handles than run at once; a token failure sends nothing;
 * transport failure, cancel, and the request hooks (a body, a streaming
 * consumer that pauses, a multi loop of its own as WADO-RS needs).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "dicom/redact.h"
#include "http_stub.h"
#include "tap.h"
#include "web/dicomweb.h"
#include "web/oauth.h"

/* The DICOMweb server's script: answer i for request i, the last one
 * again after the end. @next counts the requests as they come (before
 * the answer: the stub's own count may lag behind the client). */
struct script {
    const char *answers[4];
    size_t count;
    atomic_int next;
};

static const char *scripted_reply(void *ctx, const char *request,
                                  size_t header_len, size_t request_len)
{
    struct script *sc = ctx;
    int i = atomic_fetch_add(&sc->next, 1);

    (void)request;
    (void)header_len;
    (void)request_len;
    return sc->answers[(size_t)i < sc->count ? (size_t)i : sc->count - 1];
}

/* A token endpoint handing out "tok-1", "tok-2", ... or refusing. */
static atomic_int tokens_issued;
static atomic_bool refuse_client;

static const char *token_endpoint(void *ctx, const char *request,
                                  size_t header_len, size_t request_len)
{
    static _Thread_local char answer[512];
    char body[160];
    int n;

    (void)ctx;
    (void)request;
    (void)header_len;
    (void)request_len;
    if (atomic_load(&refuse_client)) {
        n = snprintf(body, sizeof(body),
                     "{\"error\": \"invalid_client\", "
                     "\"error_description\": \"no\"}");
        snprintf(answer, sizeof(answer),
                 "HTTP/1.1 401 Unauthorized\r\nContent-Type: "
                 "application/json\r\nContent-Length: %d\r\n\r\n%s",
                 n, body);
        return answer;
    }
    n = snprintf(body, sizeof(body),
                 "{\"access_token\": \"tok-%d\", \"token_type\": \"Bearer\", "
                 "\"expires_in\": 3600}",
                 atomic_fetch_add(&tokens_issued, 1) + 1);
    snprintf(answer, sizeof(answer),
             "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
             "Content-Length: %d\r\n\r\n%s",
             n, body);
    return answer;
}

static struct http_stub token_stub;
static char token_url[128];

static struct oauth_source *client_credentials_source(void)
{
    struct oauth_params p = {
        .kind = OAUTH_CLIENT_CREDENTIALS,
        .token_url = token_url,
        .client_id = "client-1",
        .client_secret = "s3cret-value",
        .timeout_s = 5,
    };
    return oauth_source_new(&p);
}

static struct oauth_source *static_source(const char *token)
{
    struct oauth_params p = { .kind = OAUTH_STATIC, .static_token = token };

    return oauth_source_new(&p);
}

/* A client of the server @stub at /dicom-web, with @tokens. */
static struct dicomweb *client_for(struct http_stub *stub,
                                   struct oauth_source *tokens)
{
    char base[128];
    struct dicomweb_params p = {
        .base_url = base,
        .timeout_s = 5,
        .tokens = tokens,
        .pool_size = 2,
    };

    snprintf(base, sizeof(base), "http://127.0.0.1:%d/dicom-web/", stub->port);
    return dicomweb_new(&p);
}

#define OK_EMPTY                                                  \
    "HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n" \
    "Content-Length: 2\r\n\r\n[]"
#define UNAUTHORIZED "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"

static void test_401_replays_once_with_a_new_token(void)
{
    struct script sc = { { UNAUTHORIZED, OK_EMPTY }, 2, 0 };
    struct oauth_source *src = client_credentials_source();
    struct http_stub stub;
    struct dicomweb *dw;
    struct dicomweb_reply rep;
    char hdr[256];

    CHECK(http_stub_start(&stub, scripted_reply, &sc) == 0);
    dw = client_for(&stub, src);
    CHECK(dw != NULL);
    CHECK(dicomweb_search(dw, "/studies?limit=1", &rep) == 0);
    CHECK(rep.http_status == 200 && rep.replayed && !rep.token_failed);
    CHECK(rep.body != NULL && strcmp(rep.body, "[]") == 0);
    CHECK(rep.secrets == NULL); /* a 2xx: nothing to hide */
    CHECK(atomic_load(&sc.next) == 2);
    CHECK(oauth_source_fetches(src) == 2);
    CHECK_MSG(http_stub_header(&stub, "Authorization", hdr, sizeof(hdr)) !=
                      NULL &&
                  strcmp(hdr, "Bearer tok-2") == 0,
              "%s", hdr);
    CHECK(strncmp(stub.last_request, "GET /dicom-web/studies?limit=1 HTTP/1.1",
                  39) == 0);
    dicomweb_reply_free(&rep);
    http_stub_stop(&stub);
    http_stub_free(&stub);
    dicomweb_free(dw);
    oauth_source_free(src);
}

static void test_second_401_is_the_answer(void)
{
    struct script sc = { { UNAUTHORIZED }, 1, 0 };
    struct oauth_source *src = static_source("static-tok-abc");
    struct http_stub stub;
    struct dicomweb *dw;
    struct dicomweb_reply rep;
    char shown[256];
    static const char echo[] = "the server echoed static-tok-abc";

    CHECK(http_stub_start(&stub, scripted_reply, &sc) == 0);
    dw = client_for(&stub, src);
    CHECK(dicomweb_search(dw, "/studies", &rep) == 0);
    CHECK(rep.http_status == 401 && rep.replayed);
    CHECK(atomic_load(&sc.next) == 2); /* never a third */
    /* The exchange's secrets come with a refusal, for showing its text. */
    CHECK(rep.secrets != NULL && !rep.secrets_missing);
    redact_text(rep.secrets, echo, strlen(echo), REDACT_TEXT_MAX, shown,
                sizeof(shown));
    CHECK_MSG(strstr(shown, "static-tok-abc") == NULL, "%s", shown);
    dicomweb_reply_free(&rep);

    /* Without a token source: no Authorization, and no replay. */
    struct dicomweb *bare = client_for(&stub, NULL);
    char hdr[64];
    atomic_store(&sc.next, 0);
    CHECK(dicomweb_search(bare, "/studies", &rep) == 0);
    CHECK(rep.http_status == 401 && !rep.replayed);
    CHECK(atomic_load(&sc.next) == 1);
    CHECK(http_stub_header(&stub, "Authorization", hdr, sizeof(hdr)) == NULL);
    dicomweb_reply_free(&rep);
    dicomweb_free(bare);

    http_stub_stop(&stub);
    http_stub_free(&stub);
    dicomweb_free(dw);
    oauth_source_free(src);
}

/* base64url without padding. */
static void b64url(const char *in, char *out, size_t out_len)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmn"
                                   "opqrstuvwxyz0123456789-_";
    size_t n = strlen(in);
    size_t o = 0;

    for (size_t i = 0; i < n && o + 5 < out_len; i += 3) {
        unsigned v = (unsigned char)in[i] << 16;
        if (i + 1 < n)
            v |= (unsigned char)in[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)in[i + 2];
        out[o++] = alphabet[v >> 18 & 63];
        out[o++] = alphabet[v >> 12 & 63];
        if (i + 1 < n)
            out[o++] = alphabet[v >> 6 & 63];
        if (i + 2 < n)
            out[o++] = alphabet[v & 63];
    }
    out[o] = '\0';
}

static void test_403_diagnosis(void)
{
    struct script sc = {
        { "HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nforbidden" },
        1,
        0,
    };
    struct http_stub stub;
    struct dicomweb *dw;
    struct dicomweb_reply rep;
    char header[64];
    char payload[256];
    char jwt[512];
    struct oauth_source *src;

    b64url("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", header, sizeof(header));
    b64url("{\"appid\":\"app-7\",\"oid\":\"oid-9\",\"idtyp\":\"app\","
           "\"aud\":\"https://dicom.healthcareapis.azure.com\"}",
           payload, sizeof(payload));
    snprintf(jwt, sizeof(jwt), "%s.%s.c2lnbmF0dXJl", header, payload);
    src = static_source(jwt);
    CHECK(http_stub_start(&stub, scripted_reply, &sc) == 0);
    dw = client_for(&stub, src);
    CHECK(dicomweb_search(dw, "/studies", &rep) == 0);
    CHECK(rep.http_status == 403 && !rep.replayed);
    CHECK(atomic_load(&sc.next) == 1); /* a 403 is not replayed */
    CHECK_MSG(strstr(rep.diagnosis, "HTTP 403") != NULL &&
                  strstr(rep.diagnosis, "appid=app-7") != NULL &&
                  strstr(rep.diagnosis, "oid=oid-9") != NULL,
              "%s", rep.diagnosis);
    CHECK(strstr(rep.diagnosis, jwt) == NULL &&
          strstr(rep.diagnosis, payload) == NULL);
    CHECK(rep.diagnosis_due);
    CHECK(rep.body != NULL && strcmp(rep.body, "forbidden") == 0);
    dicomweb_reply_free(&rep);
    /* The same diagnosis is due in the log once per period. */
    CHECK(dicomweb_stow(dw, "1.2.3", NULL, 0, &rep) == 0);
    CHECK(rep.http_status == 403 && rep.diagnosis[0] != '\0');
    CHECK(!rep.diagnosis_due);
    dicomweb_reply_free(&rep);
    http_stub_stop(&stub);
    http_stub_free(&stub);
    dicomweb_free(dw);
    oauth_source_free(src);

    /* An opaque token: still a diagnosis, saying it cannot tell. */
    src = static_source("opaque-token");
    sc.next = 0;
    CHECK(http_stub_start(&stub, scripted_reply, &sc) == 0);
    dw = client_for(&stub, src);
    CHECK(dicomweb_search(dw, "/studies", &rep) == 0);
    CHECK_MSG(strstr(rep.diagnosis, "opaque") != NULL &&
                  strstr(rep.diagnosis, "opaque-token") == NULL,
              "%s", rep.diagnosis);
    dicomweb_reply_free(&rep);
    http_stub_stop(&stub);
    http_stub_free(&stub);
    dicomweb_free(dw);
    oauth_source_free(src);
}

static void test_retry_after(void)
{
    char date_answer[256];
    char date[64];
    time_t when = time(NULL) + 100;
    struct tm tm;
    struct script sc = {
        { "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 120\r\n"
          "Content-Length: 0\r\n\r\n",
          date_answer,
          "HTTP/1.1 429 Too Many Requests\r\nRetry-After: soon\r\n"
          "Content-Length: 0\r\n\r\n" },
        3,
        0,
    };
    struct http_stub stub;
    struct dicomweb *dw;
    struct dicomweb_reply rep;

    gmtime_r(&when, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    snprintf(date_answer, sizeof(date_answer),
             "HTTP/1.1 503 Service Unavailable\r\nRetry-After: %s\r\n"
             "Content-Length: 0\r\n\r\n",
             date);
    CHECK(http_stub_start(&stub, scripted_reply, &sc) == 0);
    dw = client_for(&stub, NULL);
    CHECK(dicomweb_search(dw, "/studies", &rep) == 0);
    CHECK(rep.http_status == 503 && rep.retry_after_s == 120);
    dicomweb_reply_free(&rep);
    CHECK(dicomweb_search(dw, "/studies", &rep) == 0);
    CHECK_MSG(rep.http_status == 503 && rep.retry_after_s >= 90 &&
                  rep.retry_after_s <= 100,
              "%lld", (long long)rep.retry_after_s);
    dicomweb_reply_free(&rep);
    CHECK(dicomweb_search(dw, "/studies", &rep) == 0);
    CHECK(rep.http_status == 429 && rep.retry_after_s == -1);
    dicomweb_reply_free(&rep);
    http_stub_stop(&stub);
    http_stub_free(&stub);
    dicomweb_free(dw);

    CHECK(dicomweb_parse_retry_after("120", 0) == 120);
    CHECK(dicomweb_parse_retry_after(" 0 ", 0) == 0);
    CHECK(dicomweb_parse_retry_after("999999", 0) == DICOMWEB_RETRY_AFTER_MAX);
    CHECK(dicomweb_parse_retry_after("-5", 0) == -1);
    CHECK(dicomweb_parse_retry_after("", 0) == -1);
    CHECK(dicomweb_parse_retry_after("Sun, 06 Nov 1994 08:49:37", 0) == -1);
    /* Sun, 06 Nov 1994 08:49:37 GMT = 784111777 */
    CHECK(dicomweb_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT",
                                     784111777 - 30) == 30);
    CHECK(dicomweb_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT",
                                     784111777 + 30) == 0);
    CHECK(dicomweb_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 0) ==
          DICOMWEB_RETRY_AFTER_MAX);
}

static void test_pool_reuse(void)
{
    struct script sc = { { OK_EMPTY }, 1, 0 };
    struct http_stub stub;
    struct dicomweb *dw;
    struct dicomweb_reply rep;

    CHECK(http_stub_start(&stub, scripted_reply, &sc) == 0);
    dw = client_for(&stub, NULL);
    for (int i = 0; i < 5; i++) {
        CHECK(dicomweb_search(dw, "/studies", &rep) == 0 &&
              rep.http_status == 200);
        dicomweb_reply_free(&rep);
    }
    CHECK(atomic_load(&sc.next) == 5);
    CHECK_MSG(dicomweb_handles_made(dw) == 1, "%u", dicomweb_handles_made(dw));
    http_stub_stop(&stub);
    http_stub_free(&stub);
    dicomweb_free(dw);
}

#define THREADS 4
#define PER_THREAD 5

static atomic_int concurrent_ok;

static void *search_many(void *arg)
{
    struct dicomweb *dw = arg;

    for (int i = 0; i < PER_THREAD; i++) {
        struct dicomweb_reply rep;
        if (dicomweb_search(dw, "/studies", &rep) == 0 &&
            rep.http_status == 200)
            atomic_fetch_add(&concurrent_ok, 1);
        dicomweb_reply_free(&rep);
    }
    return NULL;
}

/* Threads share one client: each request has a handle of its own, the
 * pool never makes more than run at once. */
static void test_pool_threads(void)
{
    struct script sc = { { OK_EMPTY }, 1, 0 };
    struct oauth_source *src = static_source("shared-tok");
    struct http_stub stub;
    struct dicomweb *dw;
    pthread_t threads[THREADS];

    CHECK(http_stub_start(&stub, scripted_reply, &sc) == 0);
    dw = client_for(&stub, src);
    atomic_store(&concurrent_ok, 0);
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&threads[i], NULL, search_many, dw) == 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    CHECK(atomic_load(&concurrent_ok) == THREADS * PER_THREAD);
    CHECK(atomic_load(&sc.next) == THREADS * PER_THREAD);
    CHECK_MSG(dicomweb_handles_made(dw) >= 1 &&
                  dicomweb_handles_made(dw) <= THREADS,
              "%u", dicomweb_handles_made(dw));
    http_stub_stop(&stub);
    http_stub_free(&stub);
    dicomweb_free(dw);
    oauth_source_free(src);
}

static void test_token_failure_sends_nothing(void)
{
    struct script sc = { { OK_EMPTY }, 1, 0 };
    struct oauth_source *src;
    struct http_stub stub;
    struct dicomweb *dw;
    struct dicomweb_reply rep;
    int r;

    atomic_store(&refuse_client, true);
    src = client_credentials_source();
    CHECK(http_stub_start(&stub, scripted_reply, &sc) == 0);
    dw = client_for(&stub, src);
    r = dicomweb_search(dw, "/studies", &rep);
    CHECK_MSG(r == -EACCES && rep.token_failed && rep.http_status == 0 &&
                  rep.error[0] != '\0',
              "r=%d %s", r, rep.error);
    CHECK(strstr(rep.error, "s3cret-value") == NULL);
    CHECK(atomic_load(&sc.next) == 0);
    dicomweb_reply_free(&rep);
    atomic_store(&refuse_client, false);
    http_stub_stop(&stub);
    http_stub_free(&stub);
    dicomweb_free(dw);
    oauth_source_free(src);
}

static bool always_cancelled(void *ctx)
{
    (void)ctx;
    return true;
}

struct collector {
    char data[64];
    size_t len;
    size_t limit; /* refuses what would go past it */
    int prepared;
    int released;
};

static size_t collect(void *ctx, const char *data, size_t len)
{
    struct collector *c = ctx;

    if (c->len + len > c->limit)
        return 0;
    memcpy(c->data + c->len, data, len);
    c->len += len;
    return len;
}

static int count_prepare(void *ctx, CURL *curl, struct curl_slist **headers,
                         char *err, size_t err_len)
{
    struct collector *c = ctx;

    (void)curl;
    (void)err;
    (void)err_len;
    c->prepared++;
    *headers = curl_slist_append(*headers, "X-Test: 1");
    return *headers != NULL ? 0 : -ENOMEM;
}

static void count_release(void *ctx)
{
    ((struct collector *)ctx)->released++;
}

static void test_failures_and_hooks(void)
{
    struct script sc = { { "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
                           "0123456789" },
                         1,
                         0 };
    struct collector col = { .limit = sizeof(col.data) };
    struct dicomweb_request req = {
        .path = "/studies/1.2.3",
        .accept = "multipart/related; type=\"application/dicom\"",
        .prepare = count_prepare,
        .release = count_release,
        .on_body = collect,
        .ctx = &col,
    };
    struct dicomweb_params p = { .timeout_s = 5 };
    struct http_stub stub;
    struct dicomweb *dw;
    struct dicomweb_reply rep;
    char base[64];
    char hdr[128];
    int port;
    int r;

    CHECK(http_stub_start(&stub, scripted_reply, &sc) == 0);
    port = stub.port;
    dw = client_for(&stub, NULL);
    /* The hooks: a header added, the body streamed to the caller. */
    CHECK(dicomweb_request(dw, &req, &rep) == 0 && rep.http_status == 200);
    CHECK(rep.body == NULL && col.len == 10 &&
          memcmp(col.data, "0123456789", 10) == 0);
    CHECK(col.prepared == 1 && col.released == 1);
    CHECK(http_stub_header(&stub, "X-Test", hdr, sizeof(hdr)) != NULL);
    CHECK(http_stub_header(&stub, "Accept", hdr, sizeof(hdr)) != NULL &&
          strcmp(hdr, "multipart/related; type=\"application/dicom\"") == 0);
    dicomweb_reply_free(&rep);
    /* A consumer that refuses the body aborts the request. */
    col.len = 0;
    col.limit = 4;
    r = dicomweb_request(dw, &req, &rep);
    CHECK_MSG(r == -EIO && rep.http_status == 0, "r=%d", r);
    CHECK(col.released == 2);
    dicomweb_reply_free(&rep);
    http_stub_stop(&stub);
    http_stub_free(&stub);
    dicomweb_free(dw);

    /* Nobody listens any more: refused, with the reason and secrets. */
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
    p.base_url = base;
    dw = dicomweb_new(&p);
    r = dicomweb_search(dw, "/studies", &rep);
    CHECK_MSG(r == -ECONNREFUSED && rep.http_status == 0 &&
                  rep.error[0] != '\0' && rep.secrets != NULL,
              "r=%d", r);
    dicomweb_reply_free(&rep);
    dicomweb_free(dw);

    /* Cancelled: stopped at once. */
    sc.next = 0;
    CHECK(http_stub_start(&stub, scripted_reply, &sc) == 0);
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", stub.port);
    p.cancelled = always_cancelled;
    dw = dicomweb_new(&p);
    CHECK(dicomweb_search(dw, "/studies", &rep) == -ECANCELED);
    dicomweb_reply_free(&rep);
    /* A missing file is refused before anything is sent. */
    {
        const char *missing[] = { "/nonexistent/x.dcm" };
        CHECK(dicomweb_stow(dw, "1.2.3", missing, 1, &rep) == -ENOENT);
        CHECK(strstr(rep.error, "/nonexistent/x.dcm") != NULL);
        dicomweb_reply_free(&rep);
    }
    http_stub_stop(&stub);
    CHECK(atomic_load(&stub.requests) <= 1);
    http_stub_free(&stub);
    dicomweb_free(dw);
}

/* A streaming consumer that pauses the first time (as WADO-RS does when
 * over its byte budget), and a multi loop that resumes it. */
struct streamer {
    CURLM *multi;
    char data[64];
    size_t len;
    int pauses;
    bool paused;
    int performs;
};

static size_t stream_body(void *ctx, const char *data, size_t len)
{
    struct streamer *st = ctx;

    if (st->pauses == 0) {
        st->pauses++;
        st->paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    if (st->len + len > sizeof(st->data))
        return 0;
    memcpy(st->data + st->len, data, len);
    st->len += len;
    return len;
}

static CURLcode stream_perform(void *ctx, CURL *curl)
{
    struct streamer *st = ctx;
    CURLcode rc = CURLE_OK;
    CURLMsg *msg;
    int running = 1;
    int left;

    st->performs++;
    if (curl_multi_add_handle(st->multi, curl) != CURLM_OK)
        return CURLE_FAILED_INIT;
    while (running > 0) {
        if (curl_multi_perform(st->multi, &running) != CURLM_OK)
            break;
        if (st->paused) {
            st->paused = false;
            (void)curl_easy_pause(curl, CURLPAUSE_CONT);
        }
        if (running > 0)
            (void)curl_multi_poll(st->multi, NULL, 0, 100, NULL);
    }
    while ((msg = curl_multi_info_read(st->multi, &left)) != NULL)
        if (msg->msg == CURLMSG_DONE)
            rc = msg->data.result;
    curl_multi_remove_handle(st->multi, curl);
    return rc;
}

static void test_perform_hook(void)
{
    struct script sc = { { "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
                           "0123456789" },
                         1,
                         0 };
    struct streamer st = { .multi = curl_multi_init() };
    struct dicomweb_request req = {
        .path = "/studies/1.2.3",
        .accept = "multipart/related; type=\"application/dicom\"",
        .on_body = stream_body,
        .perform = stream_perform,
        .ctx = &st,
    };
    struct http_stub stub;
    struct dicomweb *dw;
    struct dicomweb_reply rep;
    int r;

    CHECK(st.multi != NULL);
    CHECK(http_stub_start(&stub, scripted_reply, &sc) == 0);
    dw = client_for(&stub, NULL);
    r = dicomweb_request(dw, &req, &rep);
    CHECK_MSG(r == 0 && rep.http_status == 200, "r=%d %s", r, rep.error);
    CHECK(st.performs == 1 && st.pauses == 1);
    CHECK(st.len == 10 && memcmp(st.data, "0123456789", 10) == 0);
    CHECK(rep.body == NULL);
    dicomweb_reply_free(&rep);
    http_stub_stop(&stub);
    http_stub_free(&stub);
    dicomweb_free(dw);
    curl_multi_cleanup(st.multi);
}

/* An answer over DICOMWEB_MAX_RESPONSE: an error for a search, cut (with
 * a note) for STOW-RS, whose status is what counts. */
static void test_answer_cap(void)
{
    size_t body_len = DICOMWEB_MAX_RESPONSE + 10;
    char *answer = malloc(body_len + 128);
    struct script sc = { { answer }, 1, 0 };
    struct http_stub stub;
    struct dicomweb *dw;
    struct dicomweb_reply rep;
    int n;

    CHECK(answer != NULL);
    if (answer == NULL)
        return;
    n = snprintf(answer, 128, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n",
                 body_len);
    memset(answer + n, 'j', body_len);
    answer[n + (int)body_len] = '\0';
    CHECK(http_stub_start(&stub, scripted_reply, &sc) == 0);
    dw = client_for(&stub, NULL);
    CHECK(dicomweb_search(dw, "/studies", &rep) == -EMSGSIZE);
    CHECK(rep.http_status == 200 && strstr(rep.error, "over") != NULL);
    dicomweb_reply_free(&rep);
    CHECK(dicomweb_stow(dw, "1.2.3", NULL, 0, &rep) == 0);
    CHECK_MSG(rep.http_status == 200 && rep.body != NULL &&
                  rep.body_len < DICOMWEB_MAX_RESPONSE &&
                  strstr(rep.error, "cut") != NULL,
              "%ld %zu '%s'", rep.http_status, rep.body_len, rep.error);
    dicomweb_reply_free(&rep);
    http_stub_stop(&stub);
    http_stub_free(&stub);
    dicomweb_free(dw);
    free(answer);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (http_stub_start(&token_stub, token_endpoint, NULL) != 0)
        return 1;
    snprintf(token_url, sizeof(token_url), "http://127.0.0.1:%d/token",
             token_stub.port);
    test_401_replays_once_with_a_new_token();
    test_second_401_is_the_answer();
    test_403_diagnosis();
    test_retry_after();
    test_pool_reuse();
    test_pool_threads();
    test_token_failure_sends_nothing();
    test_failures_and_hooks();
    test_answer_cap();
    test_perform_hook();
    http_stub_stop(&token_stub);
    http_stub_free(&token_stub);
    curl_global_cleanup();
    return tap_done();
}
