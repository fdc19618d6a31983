/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_wado - the WADO-RS request and its sink (web/wado.h, partfile.h):
 * URL building and UID checks, the exact Accept header, the bearer token;
 * against an HTTP server in this process: parts written to files of their
 * own (mode 0600, exact bytes, type, transfer syntax, location), each
 * failure classified (406 with advice, 401, 403, 404, 5xx with
 * Retry-After, other statuses, no answer, refused, garbage, a part of the
 * wrong type, truncated by the connection or by a missing close
 * delimiter) with the unfinished file removed; the byte budget pausing
 * the transfer while a consumer thread drains files, with the most bytes
 * outstanding measured; cancel while paused; a consumer that refuses; a
 * write that fails. The sink alone: prefix, directory, over-budget rule,
 * wait and wake.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "http_stub.h"
#include "tap.h"
#include "web/multipart.h"
#include "web/partfile.h"
#include "web/wado.h"

static char dir[] = "/tmp/stowbridge-wado-XXXXXX";

/* Answers every request with the raw HTTP text in @ctx (NULL: drop). */
static const char *fixed_reply(void *ctx, const char *request,
                               size_t header_len, size_t request_len)
{
    (void)request;
    (void)header_len;
    (void)request_len;
    return ctx;
}

/* Files in the test directory. */
static unsigned count_files(void)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    unsigned n = 0;

    if (d == NULL)
        return 0;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.')
            n++;
    }
    closedir(d);
    return n;
}

static void empty_dir(void)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char path[512];

    if (d == NULL)
        return;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        unlink(path);
    }
    closedir(d);
}

static char *read_file(const char *path, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 &&
        fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)n + 1);
        if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        } else if (buf != NULL) {
            buf[n] = '\0';
            *ret_len = (size_t)n;
        }
    }
    fclose(f);
    return buf;
}

/* ------------------------------------------------------------------ */
/* A consumer: keeps what it got, or drains files on a thread          */
/* ------------------------------------------------------------------ */

#define MAX_FILES 64

struct got_file {
    char path[512];
    char *data;
    size_t len;
    uint64_t size;
    unsigned index;
    char type[64];
    char ts[65];
    char location[128];
    mode_t mode;
};

struct consumer {
    struct partfile_sink *sink;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct got_file files[MAX_FILES];
    unsigned count;
    unsigned taken; /* drained by the thread */
    bool threaded;  /* drain on the thread, else keep */
    bool stop;
    int refuse_with;        /* on_file returns this when non-zero */
    bool cancel_when_held;  /* cancel once held back for 300 ms */
    uint64_t held_since_ms; /* when the sink was first seen over budget */
    uint64_t cancel_ms;     /* when the cancel was answered */
};

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int on_file(void *ctx, const struct partfile_file *file, char *err,
                   size_t err_len)
{
    struct consumer *c = ctx;
    struct stat st;

    if (c->refuse_with != 0) {
        snprintf(err, err_len, "consumer refused part %u", file->index + 1);
        return c->refuse_with;
    }
    pthread_mutex_lock(&c->lock);
    if (c->count < MAX_FILES) {
        struct got_file *g = &c->files[c->count];
        snprintf(g->path, sizeof(g->path), "%s", file->path);
        g->size = file->size;
        g->index = file->index;
        snprintf(g->type, sizeof(g->type), "%s", file->content_type);
        snprintf(g->ts, sizeof(g->ts), "%s", file->transfer_syntax);
        snprintf(g->location, sizeof(g->location), "%s",
                 file->content_location != NULL ? file->content_location : "-");
        g->mode = stat(file->path, &st) == 0 ? st.st_mode & 0777 : 0;
        if (!c->threaded)
            g->data = read_file(file->path, &g->len);
        c->count++;
    }
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    return 0;
}

/* The drain thread: reads each file, removes it, releases its bytes. */
static void *drain(void *arg)
{
    struct consumer *c = arg;

    pthread_mutex_lock(&c->lock);
    for (;;) {
        while (!c->stop && c->taken == c->count)
            pthread_cond_wait(&c->cond, &c->lock);
        if (c->taken == c->count && c->stop)
            break;
        struct got_file *g = &c->files[c->taken++];
        pthread_mutex_unlock(&c->lock);
        g->data = read_file(g->path, &g->len);
        unlink(g->path);
        /* A C-STORE takes a while: let the fetch run into its budget. */
        usleep(20000);
        partfile_release(c->sink, g->size);
        pthread_mutex_lock(&c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

static void consumer_init(struct consumer *c)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
}

static void consumer_free(struct consumer *c)
{
    for (unsigned i = 0; i < c->count && i < MAX_FILES; i++) {
        free(c->files[i].data);
        unlink(c->files[i].path);
    }
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->lock);
}

/* Cancels once the sink has been over budget for 300 ms: the transfer
 * is then paused (data arrives much faster than that), so this proves a
 * paused transfer still polls its cancel callback. */
static bool cancel_now(void *ctx)
{
    struct consumer *c = ctx;

    if (!c->cancel_when_held || !partfile_over_budget(c->sink)) {
        c->held_since_ms = 0;
        return false;
    }
    if (c->held_since_ms == 0)
        c->held_since_ms = now_ms();
    if (now_ms() - c->held_since_ms < 300)
        return false;
    c->cancel_ms = now_ms();
    return true;
}

/* One fetch against @reply, into a fresh sink of @budget bytes. */
struct run {
    int rc;
    struct wado_result res;
    struct partfile_stats stats;
    char request[4096];
    char accept[256];
    char auth[256];
};

static void fetch(const char *reply, const struct wado_request *req,
                  struct consumer *c, uint64_t budget, struct run *out)
{
    struct http_stub stub;
    struct partfile_params pp = { dir, "wado", budget, on_file, c };
    struct wado_params wp = { NULL, NULL, 5, 10 };
    struct partfile_sink *sink = NULL;
    pthread_t thread;
    char base[128];
    char err[256];

    memset(out, 0, sizeof(*out));
    CHECK(http_stub_start(&stub, fixed_reply, (void *)reply) == 0);
    snprintf(base, sizeof(base), "http://127.0.0.1:%d/dicom-web/", stub.port);
    wp.base_url = base;
    struct wado_client *client = wado_client_new(&wp);
    CHECK(client != NULL);
    CHECK_MSG(partfile_new(&pp, &sink, err, sizeof(err)) == 0, "%s", err);
    c->sink = sink;
    if (c->threaded)
        pthread_create(&thread, NULL, drain, c);
    out->rc = wado_fetch(client, req, sink, &out->res);
    if (c->threaded) {
        pthread_mutex_lock(&c->lock);
        c->stop = true;
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
        pthread_join(thread, NULL);
    }
    partfile_get_stats(sink, &out->stats);
    partfile_free(sink);
    wado_client_free(client);
    http_stub_stop(&stub);
    if (stub.last_request != NULL) {
        snprintf(out->request, sizeof(out->request), "%s", stub.last_request);
        if (http_stub_header(&stub, "Accept", out->accept,
                             sizeof(out->accept)) == NULL)
            out->accept[0] = '\0';
        if (http_stub_header(&stub, "Authorization", out->auth,
                             sizeof(out->auth)) == NULL)
            out->auth[0] = '\0';
    }
    http_stub_free(&stub);
}

static const struct wado_request study_req = { "1.2.840.99.1", NULL, NULL, NULL,
                                               NULL,           NULL, NULL };

/* ------------------------------------------------------------------ */
/* Tests                                                               */
/* ------------------------------------------------------------------ */

static void test_url(void)
{
    char *url = NULL;
    char err[256];
    char accept[256];

    CHECK(wado_url("https://h/v2//", "1.2.3", NULL, NULL, &url, err,
                   sizeof(err)) == 0);
    CHECK(url != NULL && strcmp(url, "https://h/v2/studies/1.2.3") == 0);
    free(url);
    CHECK(wado_url("https://h/v2", "1.2.3", "1.2.3.4", NULL, &url, err,
                   sizeof(err)) == 0);
    CHECK(strcmp(url, "https://h/v2/studies/1.2.3/series/1.2.3.4") == 0);
    free(url);
    CHECK(wado_url("http://h/dicom-web", "1.2", "1.3", "1.4.5", &url, err,
                   sizeof(err)) == 0);
    CHECK(strcmp(url, "http://h/dicom-web/studies/1.2/series/1.3/instances/"
                      "1.4.5") == 0);
    free(url);

    /* UIDs are checked before they reach a URL. */
    static const char *const bad[] = {
        "",
        "1..2",
        "1.2.",
        "1.02",
        "1.2.3/../4",
        "1.2 3",
        "1.2?x=1",
        "1.2%2f3",
        "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20.21.22.23.24.25.26",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        url = NULL;
        CHECK_MSG(wado_url("http://h", bad[i], NULL, NULL, &url, err,
                           sizeof(err)) == -EINVAL &&
                      url == NULL,
                  "'%s' accepted", bad[i]);
        CHECK(strstr(err, "StudyInstanceUID is not a valid UID") != NULL);
        CHECK(wado_url("http://h", "1.2", bad[i], NULL, &url, err,
                       sizeof(err)) == -EINVAL);
        CHECK(strstr(err, "SeriesInstanceUID") != NULL);
        CHECK(wado_url("http://h", "1.2", "1.3", bad[i], &url, err,
                       sizeof(err)) == -EINVAL);
        CHECK(strstr(err, "SOPInstanceUID") != NULL);
    }
    CHECK(wado_url("http://h", "1.2", NULL, "1.3", &url, err, sizeof(err)) ==
          -EINVAL);
    CHECK(wado_url("http://h", NULL, NULL, NULL, &url, err, sizeof(err)) ==
          -EINVAL);

    CHECK(wado_accept(NULL, accept, sizeof(accept)) == 0);
    CHECK(strcmp(accept, "multipart/related; type=\"application/dicom\"; "
                         "transfer-syntax=*") == 0);
    CHECK(wado_accept("1.2.840.10008.1.2.1", accept, sizeof(accept)) == 0);
    CHECK(strcmp(accept, "multipart/related; type=\"application/dicom\"; "
                         "transfer-syntax=1.2.840.10008.1.2.1") == 0);
    CHECK(wado_accept("*", accept, sizeof(accept)) == -EINVAL);
    CHECK(wado_accept(NULL, accept, 10) == -ENAMETOOLONG);
}

#define MP_HEAD                                                     \
    "HTTP/1.1 200 OK\r\nConnection: close\r\n"                      \
    "Content-Type: multipart/related; type=\"application/dicom\"; " \
    "boundary=\"b0-b1\"\r\n"

static void test_parts_to_files(void)
{
    static const char reply[] = MP_HEAD
        "Content-Length: 272\r\n\r\n"
        "--b0-b1\r\n"
        "Content-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
        "\r\nContent-Length: 10\r\n"
        "Content-Location: http://x/studies/1/series/2/instances/3\r\n\r\n"
        "0123456789\r\n"
        "--b0-b1\r\n"
        "Content-Type: application/dicom\r\n\r\n"
        "line\r\n-b0-b1 --b0-b1\r\n\r"
        "\r\n--b0-b1\r\n"
        "\r\n"
        "no type\r\n"
        "--b0-b1--\r\n";
    struct wado_request req = study_req;
    struct consumer c;
    struct run r;

    /* The HTTP Content-Length above must be right for this test. */
    CHECK(strlen(strstr(reply, "\r\n\r\n") + 4) == 272);
    consumer_init(&c);
    req.series_uid = "1.2.840.99.2";
    req.bearer = "secret-token";
    fetch(reply, &req, &c, 0, &r);
    CHECK_MSG(r.rc == 0 && r.res.failure == WADO_OK, "%d %s", r.rc,
              r.res.error);
    CHECK(r.res.http_status == 200);
    CHECK(strstr(r.res.content_type, "boundary=\"b0-b1\"") != NULL);
    CHECK(r.res.parts == 3 && c.count == 3);
    CHECK(r.res.part_bytes == 10 + 23 + 7);
    CHECK(r.res.error[0] == '\0');
    CHECK_MSG(strncmp(r.request,
                      "GET /dicom-web/studies/1.2.840.99.1/series/1.2.840.99.2"
                      " HTTP/1.1\r\n",
                      66) == 0,
              "%.80s", r.request);
    CHECK_MSG(strcmp(r.accept, WADO_ACCEPT_ANY) == 0, "%s", r.accept);
    CHECK(strcmp(r.auth, "Bearer secret-token") == 0);

    CHECK(c.files[0].len == 10 &&
          memcmp(c.files[0].data, "0123456789", 10) == 0);
    CHECK(strcmp(c.files[0].type, "application/dicom") == 0);
    CHECK(strcmp(c.files[0].ts, "1.2.840.10008.1.2.1") == 0);
    CHECK(strcmp(c.files[0].location,
                 "http://x/studies/1/series/2/instances/3") == 0);
    CHECK(c.files[1].len == 23 &&
          memcmp(c.files[1].data, "line\r\n-b0-b1 --b0-b1\r\n\r", 23) == 0);
    CHECK(c.files[1].ts[0] == '\0' && strcmp(c.files[1].location, "-") == 0);
    CHECK(c.files[2].len == 7 && memcmp(c.files[2].data, "no type", 7) == 0);
    CHECK(c.files[2].type[0] == '\0' && c.files[2].index == 2);
    for (unsigned i = 0; i < 3; i++) {
        CHECK_MSG(c.files[i].mode == 0600, "mode %o", c.files[i].mode);
        CHECK(strncmp(c.files[i].path, dir, strlen(dir)) == 0);
        CHECK(strstr(c.files[i].path, "/wado-") != NULL);
        CHECK(strcmp(c.files[i].path + strlen(c.files[i].path) - 4, ".dcm") ==
              0);
    }
    CHECK(count_files() == 3);
    consumer_free(&c);
    CHECK(count_files() == 0);

    /* No bearer: no Authorization header. An instance URL. */
    consumer_init(&c);
    req.bearer = NULL;
    req.instance_uid = "1.2.840.99.3";
    fetch(reply, &req, &c, 0, &r);
    CHECK(r.rc == 0 && r.auth[0] == '\0');
    static const char get[] = "GET /dicom-web/studies/1.2.840.99.1/series/"
                              "1.2.840.99.2/instances/1.2.840.99.3 ";
    CHECK(strncmp(r.request, get, sizeof(get) - 1) == 0);
    consumer_free(&c);

    /* A transcoding request names its UID in the Accept header. */
    consumer_init(&c);
    req.transfer_syntax = "1.2.840.10008.1.2.1";
    fetch(reply, &req, &c, 0, &r);
    CHECK(r.rc == 0);
    CHECK(strcmp(r.accept, "multipart/related; type=\"application/dicom\"; "
                           "transfer-syntax=1.2.840.10008.1.2.1") == 0);
    consumer_free(&c);

    /* Bad UIDs and transfer syntaxes: nothing is sent. */
    consumer_init(&c);
    req.transfer_syntax = "jpeg";
    fetch(reply, &req, &c, 0, &r);
    CHECK(r.rc == -EINVAL && r.request[0] == '\0');
    req.transfer_syntax = NULL;
    req.instance_uid = "1.2.x";
    fetch(reply, &req, &c, 0, &r);
    CHECK(r.rc == -EINVAL && r.request[0] == '\0');
    CHECK(strstr(r.res.error, "SOPInstanceUID") != NULL);
    consumer_free(&c);
}

/* Non-2xx answers and what they mean. */
static void test_statuses(void)
{
    static const struct {
        const char *reply;
        int rc;
        enum wado_failure failure;
        long status;
        const char *text;
    } cases[] = {
        { "HTTP/1.1 406 Not Acceptable\r\nContent-Length: 43\r\n\r\n"
          "{\"message\":\"multi instance transcoding\"}\r\n",
          -EPROTO, WADO_NOT_ACCEPTABLE, 406, "transfer-syntax=*" },
        { "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", -ENOENT,
          WADO_NOT_FOUND, 404, "no such study" },
        { "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", -EACCES,
          WADO_UNAUTHORIZED, 401, "token was refused" },
        { "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", -EACCES,
          WADO_FORBIDDEN, 403, "may not read" },
        { "HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\n"
          "busy",
          -EPROTO, WADO_SERVER_ERROR, 503, "Retry-After 7 s" },
        { "HTTP/1.1 500 Internal\r\nContent-Length: 0\r\n\r\n", -EPROTO,
          WADO_SERVER_ERROR, 500, "server error" },
        { "HTTP/1.1 302 Found\r\nLocation: http://e/\r\nContent-Length: 0"
          "\r\n\r\n",
          -EPROTO, WADO_HTTP_ERROR, 302, "HTTP 302" },
        { "HTTP/1.1 204 No Content\r\n\r\n", -EPROTO, WADO_HTTP_ERROR, 204,
          "expected 200" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct consumer c;
        struct run r;
        consumer_init(&c);
        fetch(cases[i].reply, &study_req, &c, 0, &r);
        CHECK_MSG(r.rc == cases[i].rc && r.res.failure == cases[i].failure &&
                      r.res.http_status == cases[i].status &&
                      strstr(r.res.error, cases[i].text) != NULL,
                  "case %zu: %d %s %ld %s", i, r.rc,
                  wado_failure_name(r.res.failure), r.res.http_status,
                  r.res.error);
        CHECK(c.count == 0 && count_files() == 0);
        consumer_free(&c);
    }

    /* The server's own words come along, printable. */
    struct consumer c;
    struct run r;
    consumer_init(&c);
    fetch(cases[0].reply, &study_req, &c, 0, &r);
    CHECK_MSG(strstr(r.res.error, "server said: \"{\"message\":\"multi "
                                  "instance transcoding\"}\"") != NULL,
              "%s", r.res.error);
    /* A 406 to a transcoding request advises transfer-syntax=*. */
    struct wado_request req = study_req;
    req.transfer_syntax = "1.2.840.10008.1.2.4.90";
    fetch(cases[0].reply, &req, &c, 0, &r);
    CHECK_MSG(strstr(r.res.error, "will not transcode to "
                                  "1.2.840.10008.1.2.4.90") != NULL &&
                  strstr(r.res.error, "transfer-syntax=* instead") != NULL,
              "%s", r.res.error);
    consumer_free(&c);
}

/* Answers that are not what was asked for. */
static void test_garbage(void)
{
    static const struct {
        const char *reply;
        const char *text;
    } cases[] = {
        { "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 13"
          "\r\n\r\n<html></html>",
          "text/html, not multipart/related" },
        { "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
          "without a Content-Type" },
        { "HTTP/1.1 200 OK\r\nContent-Type: multipart/related\r\n"
          "Content-Length: 3\r\n\r\nabc",
          "no boundary parameter" },
        { MP_HEAD "Content-Length: 21\r\n\r\n<html>oops</html>\r\n\r\n",
          "no boundary in the 21 bytes" },
        { MP_HEAD "Content-Length: 62\r\n\r\n--b0-b1\r\n"
                  "Content-Type: application/dicom+json\r\n\r\n[]\r\n--b0-b1--",
          "part 1 is application/dicom+json, not application/dicom" },
        { MP_HEAD "Content-Length: 41\r\n\r\n--b0-b1\r\n"
                  "Content-Length: x\r\n\r\n\r\n--b0-b1--",
          "Content-Length 'x' is not a byte count" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct consumer c;
        struct run r;
        consumer_init(&c);
        fetch(cases[i].reply, &study_req, &c, 0, &r);
        CHECK_MSG(r.rc == -EBADMSG && r.res.failure == WADO_BAD_BODY &&
                      strstr(r.res.error, cases[i].text) != NULL,
                  "case %zu: %d %s %s", i, r.rc,
                  wado_failure_name(r.res.failure), r.res.error);
        CHECK(c.count == 0 && count_files() == 0);
        consumer_free(&c);
    }
}

/* Bodies that end early; what came whole before stays handed out. */
static void test_truncated(void)
{
    static const struct {
        const char *reply;
        const char *text;
        unsigned whole; /* parts complete before the cut */
    } cases[] = {
        /* The connection closes before the HTTP Content-Length. */
        { MP_HEAD "Content-Length: 500\r\n\r\n--b0-b1\r\n\r\nfirst\r\n"
                  "--b0-b1\r\n\r\nsecond, cut",
          "inside part 2 after 11 data bytes", 1 },
        /* Chunked, without the last chunk. */
        { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
          "Content-Type: multipart/related; boundary=b0-b1\r\n\r\n"
          "15\r\n--b0-b1\r\n\r\nfirst\r\n--b\r\n"
          "D\r\n0-b1\r\n\r\nsecon\r\n",
          "inside part 2 after 5 data bytes", 1 },
        /* HTTP-complete, but no close delimiter. */
        { MP_HEAD "Content-Length: 32\r\n\r\n--b0-b1\r\n\r\nfirst\r\n"
                  "--b0-b1\r\n\r\nsec",
          "inside part 2 after 3 data bytes", 1 },
        { MP_HEAD "Content-Length: 25\r\n\r\n--b0-b1\r\n\r\nfirst\r\n"
                  "--b0-b1",
          "boundary line after part 1", 0 }, /* its line is not whole */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct consumer c;
        struct run r;
        consumer_init(&c);
        fetch(cases[i].reply, &study_req, &c, 0, &r);
        CHECK_MSG(r.rc == -ENODATA && r.res.failure == WADO_TRUNCATED &&
                      strstr(r.res.error, cases[i].text) != NULL &&
                      strncmp(r.res.error, "truncated", 9) == 0,
                  "case %zu: %d %s %s", i, r.rc,
                  wado_failure_name(r.res.failure), r.res.error);
        CHECK(r.res.parts == cases[i].whole && c.count == cases[i].whole);
        CHECK(c.count == 0 || (c.files[0].len == 5 &&
                               memcmp(c.files[0].data, "first", 5) == 0));
        /* Only the whole part's file is left. */
        CHECK(count_files() == cases[i].whole);
        consumer_free(&c);
    }
    /* Cut in the epilogue: every part is whole, nothing is missing. */
    struct consumer c;
    struct run r;
    consumer_init(&c);
    fetch(MP_HEAD "Content-Length: 90\r\n\r\n--b0-b1\r\n\r\nfirst\r\n"
                  "--b0-b1--\r\nepilo",
          &study_req, &c, 0, &r);
    CHECK_MSG(r.rc == 0 && r.res.parts == 1, "%d %s", r.rc, r.res.error);
    consumer_free(&c);

    /* A 200 whose body never came. */
    consumer_init(&c);
    fetch(MP_HEAD "Content-Length: 100\r\n\r\n", &study_req, &c, 0, &r);
    CHECK_MSG(r.res.failure == WADO_TRUNCATED &&
                  strstr(r.res.error, "before the first boundary") != NULL,
              "%s %s", wado_failure_name(r.res.failure), r.res.error);
    consumer_free(&c);
}

static void test_transport(void)
{
    struct consumer c;
    struct run r;

    /* Accepted, then closed without a word. */
    consumer_init(&c);
    fetch(NULL, &study_req, &c, 0, &r);
    CHECK_MSG(r.rc == -ECONNABORTED && r.res.failure == WADO_TRANSPORT &&
                  r.res.http_status == 0 &&
                  strstr(r.res.error, "no answer") != NULL,
              "%d %s", r.rc, r.res.error);
    consumer_free(&c);

    /* Nobody listening. */
    struct http_stub stub;
    struct wado_params wp = { NULL, NULL, 5, 10 };
    struct partfile_params pp = { dir, NULL, 0, on_file, &c };
    struct partfile_sink *sink = NULL;
    struct wado_result res;
    char base[128];
    char err[256];
    consumer_init(&c);
    CHECK(http_stub_start(&stub, fixed_reply, NULL) == 0);
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", stub.port);
    http_stub_stop(&stub);
    http_stub_free(&stub);
    wp.base_url = base;
    struct wado_client *client = wado_client_new(&wp);
    CHECK(partfile_new(&pp, &sink, err, sizeof(err)) == 0);
    CHECK(wado_fetch(client, &study_req, sink, &res) == -ECONNREFUSED);
    CHECK(res.failure == WADO_TRANSPORT);
    partfile_free(sink);
    wado_client_free(client);
    consumer_free(&c);
}

static void test_single_part(void)
{
    static const char reply[] =
        "HTTP/1.1 200 OK\r\nContent-Type: application/dicom; "
        "transfer-syntax=1.2.840.10008.1.2.4.50\r\nContent-Length: 9\r\n\r\n"
        "DICM-data";
    struct consumer c;
    struct run r;

    consumer_init(&c);
    fetch(reply, &study_req, &c, 0, &r);
    CHECK_MSG(r.rc == 0 && r.res.parts == 1 && c.count == 1, "%d %s", r.rc,
              r.res.error);
    CHECK(c.files[0].len == 9 && memcmp(c.files[0].data, "DICM-data", 9) == 0);
    CHECK(strcmp(c.files[0].ts, "1.2.840.10008.1.2.4.50") == 0);
    consumer_free(&c);

    /* ...and cut short. */
    consumer_init(&c);
    fetch("HTTP/1.1 200 OK\r\nContent-Type: application/dicom\r\n"
          "Content-Length: 90\r\n\r\nDICM",
          &study_req, &c, 0, &r);
    CHECK_MSG(r.res.failure == WADO_TRUNCATED &&
                  strstr(r.res.error, "after 4 bytes") != NULL,
              "%s", r.res.error);
    CHECK(c.count == 0 && count_files() == 0);
    consumer_free(&c);
}

/* A body of @parts parts of @size bytes each (part i filled with 'a'+i). */
static char *big_reply(unsigned parts, size_t size)
{
    size_t cap = 256 + parts * (size + 128);
    char *body = malloc(cap);
    char *reply = malloc(cap + 256);
    size_t len = 0;

    for (unsigned i = 0; i < parts; i++) {
        len += (size_t)sprintf(body + len, "--b0-b1\r\nContent-Type: "
                                           "application/dicom\r\n\r\n");
        memset(body + len, 'a' + (int)(i % 26), size);
        len += size;
        len += (size_t)sprintf(body + len, "\r\n");
    }
    len += (size_t)sprintf(body + len, "--b0-b1--\r\n");
    body[len] = '\0';
    sprintf(reply, MP_HEAD "Content-Length: %zu\r\n\r\n%s", len, body);
    free(body);
    return reply;
}

/* The budget holds the fetch back while the consumer drains. */
static void test_budget(void)
{
    const unsigned parts = 40;
    const size_t size = 100 * 1024;
    const uint64_t budget = 256 * 1024;
    char *reply = big_reply(parts, size);
    struct consumer c;
    struct run r;
    bool right = true;

    consumer_init(&c);
    c.threaded = true;
    fetch(reply, &study_req, &c, budget, &r);
    CHECK_MSG(r.rc == 0 && r.res.parts == parts && c.count == parts, "%d %u %s",
              r.rc, r.res.parts, r.res.error);
    for (unsigned i = 0; i < c.count; i++) {
        const struct got_file *g = &c.files[i];
        right = right && g->len == size && g->data != NULL &&
                g->data[0] == 'a' + (int)(i % 26) &&
                g->data[size - 1] == 'a' + (int)(i % 26);
    }
    CHECK(right);
    CHECK_MSG(r.res.pauses > 0, "never paused");
    /* At most the budget plus one libcurl write (64 KiB). */
    CHECK_MSG(r.stats.peak_outstanding <= budget + 64 * 1024, "peak %llu",
              (unsigned long long)r.stats.peak_outstanding);
    CHECK(r.stats.peak_outstanding >= budget);
    CHECK(r.stats.files == parts && r.stats.outstanding == 0);
    CHECK(count_files() == 0);
    printf("# budget %llu KiB: %u pauses, peak %llu KiB outstanding\n",
           (unsigned long long)budget / 1024, r.res.pauses,
           (unsigned long long)r.stats.peak_outstanding / 1024);
    consumer_free(&c);

    /* No budget: never paused. */
    consumer_init(&c);
    c.threaded = true;
    fetch(reply, &study_req, &c, 0, &r);
    CHECK(r.rc == 0 && r.res.pauses == 0 && r.res.parts == parts);
    consumer_free(&c);

    /* A part larger than the budget still comes whole. */
    consumer_init(&c);
    c.threaded = true;
    fetch(reply, &study_req, &c, 50 * 1024, &r);
    CHECK(r.rc == 0 && r.res.parts == parts);
    consumer_free(&c);
    free(reply);
}

/* Cancel while paused by a consumer that never releases. */
static void test_cancel(void)
{
    char *reply = big_reply(20, 100 * 1024);
    struct wado_request req = study_req;
    struct consumer c;
    struct run r;

    consumer_init(&c);
    c.cancel_when_held = true;
    req.cancelled = cancel_now;
    req.cancel_ctx = &c;
    uint64_t start = now_ms();
    fetch(reply, &req, &c, 200 * 1024, &r);
    CHECK_MSG(r.rc == -ECANCELED && r.res.failure == WADO_CANCELLED, "%d %s",
              r.rc, r.res.error);
    CHECK(r.res.pauses > 0);
    CHECK(strstr(r.res.error, "cancelled after") != NULL);
    /* The files handed out stay, the one being written is gone. */
    CHECK(count_files() == c.count && c.count >= 1 && c.count < 20);
    /* Polled at least once a second while paused (generous here). */
    CHECK_MSG(c.held_since_ms != 0 && now_ms() - start < 10000, "took %llu ms",
              (unsigned long long)(now_ms() - start));
    consumer_free(&c);
    free(reply);
}

/* The consumer refuses a file: it is removed and the fetch stops. */
static void test_consumer_refuses(void)
{
    char *reply = big_reply(3, 1000);
    struct consumer c;
    struct run r;

    consumer_init(&c);
    c.refuse_with = -EMFILE;
    fetch(reply, &study_req, &c, 0, &r);
    CHECK_MSG(r.rc == -EMFILE && r.res.failure == WADO_LOCAL &&
                  strstr(r.res.error, "consumer refused part 1") != NULL,
              "%d %s", r.rc, r.res.error);
    CHECK(count_files() == 0);
    consumer_free(&c);
    free(reply);
}

/* A write that fails (here: the file size limit) removes the file. */
static void test_write_fails(void)
{
    char *reply = big_reply(2, 200 * 1024);
    struct rlimit old;
    struct rlimit lim;
    struct consumer c;
    struct run r;

    signal(SIGXFSZ, SIG_IGN);
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 100 * 1024;
    setrlimit(RLIMIT_FSIZE, &lim);
    consumer_init(&c);
    fetch(reply, &study_req, &c, 0, &r);
    setrlimit(RLIMIT_FSIZE, &old);
    CHECK_MSG(r.rc == -EFBIG && r.res.failure == WADO_LOCAL &&
                  strstr(r.res.error, "write() '") != NULL &&
                  strstr(r.res.error, "File too large") != NULL,
              "%d %s", r.rc, r.res.error);
    CHECK(c.count == 0 && count_files() == 0);
    consumer_free(&c);
    free(reply);
}

/* ------------------------------------------------------------------ */
/* The sink alone                                                      */
/* ------------------------------------------------------------------ */

static int keep_file(void *ctx, const struct partfile_file *file, char *err,
                     size_t err_len)
{
    (void)err;
    (void)err_len;
    *(uint64_t *)ctx += file->size;
    return 0;
}

struct releaser {
    struct partfile_sink *sink;
    uint64_t bytes;
};

static void *release_later(void *arg)
{
    struct releaser *rl = arg;

    usleep(100000);
    partfile_release(rl->sink, rl->bytes);
    return NULL;
}

static void count_wake(void *ctx)
{
    atomic_fetch_add((atomic_int *)ctx, 1);
}

static void test_sink(void)
{
    struct partfile_sink *s = NULL;
    struct multipart_part part;
    uint64_t kept = 0;
    struct partfile_params pp = { dir, "x", 1000, keep_file, &kept };
    char err[256];
    char data[600];
    atomic_int wakes = 0;

    memset(data, 'd', sizeof(data));
    memset(&part, 0, sizeof(part));

    pp.prefix = "bad/prefix";
    CHECK(partfile_new(&pp, &s, err, sizeof(err)) == -EINVAL);
    pp.prefix = "";
    CHECK(partfile_new(&pp, &s, err, sizeof(err)) == -EINVAL);
    pp.prefix = "x";
    pp.dir = "/nonexistent/stowbridge";
    CHECK(partfile_new(&pp, &s, err, sizeof(err)) == -ENOENT);
    CHECK(strstr(err, "open() '/nonexistent/stowbridge' failed") != NULL);
    pp.dir = dir;
    CHECK(partfile_new(&pp, &s, err, sizeof(err)) == 0);

    /* Nothing handed out: never over budget, whatever the part's size. */
    CHECK(partfile_begin(s, &part, err, sizeof(err)) == 0);
    CHECK(partfile_begin(s, &part, err, sizeof(err)) == -EBUSY);
    CHECK(partfile_write(s, data, 600, err, sizeof(err)) == 0);
    CHECK(partfile_write(s, data, 600, err, sizeof(err)) == 0);
    CHECK(!partfile_over_budget(s));
    CHECK(partfile_end(s, err, sizeof(err)) == 0);
    CHECK(kept == 1200 && count_files() == 1);
    /* 1200 handed out >= 1000: over, until released. */
    CHECK(partfile_over_budget(s));
    CHECK(partfile_wait_budget(s, 50) == -ETIMEDOUT);
    partfile_set_waker(s, count_wake, &wakes);
    struct releaser rl = { s, 1200 };
    pthread_t t;
    pthread_create(&t, NULL, release_later, &rl);
    CHECK(partfile_wait_budget(s, 10000) == 0);
    pthread_join(t, NULL);
    CHECK(!partfile_over_budget(s));
    CHECK(atomic_load(&wakes) == 1);
    partfile_set_waker(s, NULL, NULL);
    partfile_release(s, 5); /* more than handed out: clamped */
    CHECK(atomic_load(&wakes) == 1);

    /* Handed 600 + current 400 reaches the budget. */
    CHECK(partfile_begin(s, &part, err, sizeof(err)) == 0);
    CHECK(partfile_write(s, data, 600, err, sizeof(err)) == 0);
    CHECK(partfile_end(s, err, sizeof(err)) == 0);
    CHECK(!partfile_over_budget(s));
    CHECK(partfile_begin(s, &part, err, sizeof(err)) == 0);
    CHECK(partfile_write(s, data, 399, err, sizeof(err)) == 0);
    CHECK(!partfile_over_budget(s));
    CHECK(partfile_write(s, data, 1, err, sizeof(err)) == 0);
    CHECK(partfile_over_budget(s));
    /* Abort gives the open part's bytes back and removes its file. */
    partfile_abort(s);
    CHECK(!partfile_over_budget(s));
    CHECK(count_files() == 2);
    struct partfile_stats st;
    partfile_get_stats(s, &st);
    CHECK(st.files == 2 && st.bytes == 1800 && st.outstanding == 600);
    CHECK(partfile_write(s, data, 1, err, sizeof(err)) == -EBADF);
    CHECK(partfile_end(s, err, sizeof(err)) == -EBADF);

    /* Freed with a part open: its file goes. */
    CHECK(partfile_begin(s, &part, err, sizeof(err)) == 0);
    CHECK(count_files() == 3);
    partfile_free(s);
    CHECK(count_files() == 2);
    partfile_free(NULL);
    empty_dir();
}

int main(void)
{
    if (mkdtemp(dir) == NULL)
        return 1;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    test_url();
    test_parts_to_files();
    test_statuses();
    test_garbage();
    test_truncated();
    test_transport();
    test_single_part();
    test_budget();
    test_cancel();
    test_consumer_refuses();
    test_write_fails();
    test_sink();
    empty_dir();
    rmdir(dir);
    curl_global_cleanup();
    return tap_done();
}
