/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_stow_http - the STOW-RS request (dicomweb_stow()) on the wire,
 * against a capturing HTTP server in this process: golden multipart framing,
 * headers (type, boundary, Accept, Authorization, no Expect, no
 * Content-Disposition), a body over 1 MiB, the reply (status, body,
 * Retry-After), and failures (missing file, connection refused, connection
 * dropped).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>

#include "http_stub.h"
#include "tap.h"
#include "web/dicomweb.h"
#include "web/oauth.h"
#include "web/stow.h"

/* Answers every request with the raw HTTP text in @ctx (NULL: drop). */
static const char *fixed_reply(void *ctx, const char *request,
                               size_t header_len, size_t request_len)
{
    (void)request;
    (void)header_len;
    (void)request_len;
    return ctx;
}

static char dir[] = "/tmp/stowbridge-stow-XXXXXX";

/* The token sources of the clients made by new_client(). */
static struct oauth_source *sources[16];
static size_t source_count;

/* A DICOMweb client sending "Bearer @token" (NULL: no Authorization). */
static struct dicomweb *new_client(struct dicomweb_params *params,
                                   const char *token)
{
    struct oauth_params op = { .kind = OAUTH_NONE };

    if (token != NULL) {
        op.kind = OAUTH_STATIC;
        op.static_token = token;
    }
    params->tokens = oauth_source_new(&op);
    if (source_count < sizeof(sources) / sizeof(sources[0]))
        sources[source_count++] = params->tokens;
    return dicomweb_new(params);
}

static void write_file(const char *name, const char *data, size_t len,
                       char *path, size_t path_len)
{
    snprintf(path, path_len, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f != NULL) {
        fwrite(data, 1, len, f);
        fclose(f);
    }
}

static void test_golden_framing(void)
{
    static const char reply[] =
        "HTTP/1.1 202 Accepted\r\nContent-Type: application/dicom+json\r\n"
        "Retry-After: 7\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    struct http_stub cap;
    struct dicomweb_params params = { .timeout_s = 10 };
    struct dicomweb_reply rep;
    char base[128];
    char a[256];
    char b[256];
    char ct[256];
    char expected[1024];
    write_file("a.dcm", "AAAA", 4, a, sizeof(a));
    write_file("b.dcm", "BB\r\n--BB", 8, b, sizeof(b));
    CHECK(http_stub_start(&cap, fixed_reply, (void *)reply) == 0);
    snprintf(base, sizeof(base), "http://127.0.0.1:%d/dicom-web/", cap.port);
    params.base_url = base;
    struct dicomweb *client = new_client(&params, "tok-123");
    const char *paths[] = { a, b };

    CHECK(client != NULL);
    CHECK(dicomweb_stow(client, "1.2.840.99.1", paths, 2, &rep) == 0);
    http_stub_stop(&cap);

    CHECK(rep.http_status == 202);
    CHECK(rep.body != NULL && strcmp(rep.body, "{}") == 0);
    CHECK(rep.retry_after_s == 7);
    dicomweb_reply_free(&rep);

    CHECK_MSG(strncmp(cap.last_request,
                      "POST /dicom-web/studies/1.2.840.99.1 HTTP/1.1\r\n",
                      47) == 0,
              "%.60s", cap.last_request);
    CHECK(http_stub_header(&cap, "Content-Type", ct, sizeof(ct)) != NULL);
    const char *prefix = "multipart/related; type=\"application/dicom\"; "
                         "boundary=";
    CHECK_MSG(strncmp(ct, prefix, strlen(prefix)) == 0, "%s", ct);
    const char *boundary = ct + strlen(prefix);
    CHECK(strlen(boundary) >= 20);
    char tmp[256];
    CHECK(http_stub_header(&cap, "Accept", tmp, sizeof(tmp)) != NULL &&
          strcmp(tmp, "application/dicom+json") == 0);
    CHECK(http_stub_header(&cap, "Authorization", tmp, sizeof(tmp)) != NULL &&
          strcmp(tmp, "Bearer tok-123") == 0);
    CHECK(http_stub_header(&cap, "Expect", tmp, sizeof(tmp)) == NULL);
    CHECK(strcasestr(cap.last_request, "Content-Disposition") == NULL);

    /* The body, byte for byte. */
    snprintf(expected, sizeof(expected),
             "--%s\r\nContent-Type: application/dicom\r\n\r\nAAAA\r\n"
             "--%s\r\nContent-Type: application/dicom\r\n\r\nBB\r\n--BB\r\n"
             "--%s--\r\n",
             boundary, boundary, boundary);
    CHECK_MSG(cap.last_len - cap.last_header_len == strlen(expected) &&
                  memcmp(cap.last_request + cap.last_header_len, expected,
                         strlen(expected)) == 0,
              "request:\n%s", cap.last_request);
    CHECK(http_stub_header(&cap, "Content-Length", tmp, sizeof(tmp)) != NULL &&
          strtoul(tmp, NULL, 10) == strlen(expected));

    /* A second request on the same client: a new random boundary. */
    struct http_stub cap2;
    char ct2[256];
    CHECK(http_stub_start(&cap2, fixed_reply,
                          "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") == 0);
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", cap2.port);
    dicomweb_free(client);
    params.base_url = base;
    client = new_client(&params, NULL);
    CHECK(dicomweb_stow(client, "1.2.3", paths, 1, &rep) == 0);
    http_stub_stop(&cap2);
    CHECK(rep.http_status == 200 && rep.retry_after_s == -1);
    CHECK(rep.body != NULL && rep.body_len == 0);
    CHECK(strncmp(cap2.last_request, "POST /studies/1.2.3 HTTP/1.1", 28) == 0);
    CHECK(http_stub_header(&cap2, "Authorization", tmp, sizeof(tmp)) == NULL);
    CHECK(http_stub_header(&cap2, "Content-Type", ct2, sizeof(ct2)) != NULL &&
          strcmp(ct2, ct) != 0);
    dicomweb_reply_free(&rep);
    http_stub_free(&cap);
    http_stub_free(&cap2);
    dicomweb_free(client);
}

static void test_large_body(void)
{
    struct http_stub cap;
    struct dicomweb_params params = { .timeout_s = 10 };
    size_t big = 2 * 1024 * 1024 + 3;
    char *data = malloc(big);
    char path[256];
    char base[128];
    char tmp[64];
    struct dicomweb_reply rep;

    memset(data, 'x', big);
    write_file("big.dcm", data, big, path, sizeof(path));
    free(data);
    CHECK(http_stub_start(&cap, fixed_reply,
                          "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") == 0);
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", cap.port);
    params.base_url = base;
    struct dicomweb *client = new_client(&params, "t");
    const char *paths[] = { path };
    CHECK(dicomweb_stow(client, "1.2.3", paths, 1, &rep) == 0);
    http_stub_stop(&cap);
    CHECK(rep.http_status == 200);
    /* Over 1 MiB libcurl would add Expect: 100-continue by itself. */
    CHECK(http_stub_header(&cap, "Expect", tmp, sizeof(tmp)) == NULL);
    CHECK(cap.last_len - cap.last_header_len > big);
    dicomweb_reply_free(&rep);
    http_stub_free(&cap);
    dicomweb_free(client);
}

static void test_failures(void)
{
    struct dicomweb_params params = { .timeout_s = 5 };
    struct dicomweb_reply rep;
    struct http_stub cap;
    char base[128];
    char path[256];
    int port;

    write_file("c.dcm", "CCCC", 4, path, sizeof(path));

    /* A missing file: nothing is sent. */
    params.base_url = "http://127.0.0.1:9";
    struct dicomweb *client = new_client(&params, NULL);
    const char *missing[] = { "/nonexistent/x.dcm" };
    CHECK(dicomweb_stow(client, "1.2.3", missing, 1, &rep) == -ENOENT);
    CHECK(strstr(rep.error, "/nonexistent/x.dcm") != NULL);
    dicomweb_reply_free(&rep);
    dicomweb_free(client);

    /* The server drops the connection in the middle of the request. */
    CHECK(http_stub_start(&cap, fixed_reply, NULL) == 0);
    port = cap.port;
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", port);
    params.base_url = base;
    client = new_client(&params, NULL);
    {
        const char *paths[] = { path };
        int r = dicomweb_stow(client, "1.2.3", paths, 1, &rep);
        CHECK_MSG(r < 0 && rep.http_status == 0 && rep.error[0] != '\0',
                  "dropped: r=%d status=%ld", r, rep.http_status);
    }
    dicomweb_reply_free(&rep);
    dicomweb_free(client);
    http_stub_stop(&cap);
    http_stub_free(&cap);

    /* Connection refused: the same port, now that nobody listens. */
    client = new_client(&params, NULL);
    const char *paths[] = { path };
    CHECK(dicomweb_stow(client, "1.2.3", paths, 1, &rep) == -ECONNREFUSED);
    CHECK(rep.http_status == 0 && rep.error[0] != '\0');
    dicomweb_reply_free(&rep);
    dicomweb_free(client);
}

/* A redirect is an answer, not followed, its Location kept for the
 * message; the token is sent only to the configured server. */
static void test_redirect_not_followed(void)
{
    struct dicomweb_params params = { .timeout_s = 5 };
    struct dicomweb_reply rep;
    struct http_stub cap;
    char base[128];
    char path[256];
    char hdr[256];

    write_file("r.dcm", "RRRR", 4, path, sizeof(path));
    CHECK(http_stub_start(&cap, fixed_reply,
                          "HTTP/1.1 308 Permanent Redirect\r\n"
                          "Location: http://127.0.0.1:9/moved/studies/1.2.3\r\n"
                          "Content-Length: 0\r\n\r\n") == 0);
    snprintf(base, sizeof(base), "http://127.0.0.1:%d/dicom-web", cap.port);
    params.base_url = base;
    struct dicomweb *client = new_client(&params, "tok");
    const char *paths[] = { path };
    CHECK(dicomweb_stow(client, "1.2.3", paths, 1, &rep) == 0);
    CHECK(rep.http_status == 308 &&
          stow_request_action(rep.http_status) == STOW_REDIRECTED);
    CHECK_MSG(strcmp(rep.location, "http://127.0.0.1:9/moved/studies/1.2.3") ==
                  0,
              "%s", rep.location);
    CHECK(atomic_load(&cap.requests) == 1);
    CHECK(http_stub_header(&cap, "Authorization", hdr, sizeof(hdr)) != NULL &&
          strcmp(hdr, "Bearer tok") == 0);
    dicomweb_reply_free(&rep);
    CHECK(dicomweb_search(client, "/studies?limit=1", &rep) == 0 &&
          rep.http_status == 308 && rep.location[0] != '\0');
    dicomweb_reply_free(&rep);
    dicomweb_free(client);
    http_stub_stop(&cap);
    http_stub_free(&cap);
}

static void test_retry_after(void)
{
    CHECK(dicomweb_parse_retry_after("120", 0) == 120);
    CHECK(dicomweb_parse_retry_after(" 0 ", 0) == 0);
    CHECK(dicomweb_parse_retry_after("999999", 0) == 86400);
    CHECK(dicomweb_parse_retry_after("-5", 0) == -1);
    CHECK(dicomweb_parse_retry_after("soon", 0) == -1);
    CHECK(dicomweb_parse_retry_after("12abc", 0) == -1);
    /* Sun, 06 Nov 1994 08:49:37 GMT = 784111777 */
    CHECK(dicomweb_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT",
                                     784111777 - 30) == 30);
    CHECK(dicomweb_parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT",
                                     784111777 + 30) == 0);
}

int main(void)
{
    char cmd[128];

    if (mkdtemp(dir) == NULL)
        return 1;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    test_golden_framing();
    test_large_body();
    test_failures();
    test_redirect_not_followed();
    test_retry_after();
    for (size_t i = 0; i < source_count; i++)
        oauth_source_free(sources[i]);
    curl_global_cleanup();
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    (void)!system(cmd);
    return tap_done();
}
