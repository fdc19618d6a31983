/* SPDX-License-Identifier: Apache-2.0 */
/*
 * wado - see wado.h.
 *
 * The transfer runs on the client's multi handle, driven here: perform,
 * then wait in curl_multi_poll(). The write callback feeds the parser;
 * when the sink is over budget it returns CURL_WRITEFUNC_PAUSE (libcurl
 * keeps that chunk and stops reading the socket, so TCP holds the server
 * back, and the low-speed check skips paused transfers). The sink's waker
 * calls curl_multi_wakeup() on every release; the loop then unpauses if
 * the budget allows, and libcurl hands the kept chunk over again.
 */
#include "wado.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "base/util.h"
#include "dicomweb.h"
#include "http.h"
#include "multipart.h"
#include "partfile.h"

/* libcurl's receive buffer: the most one write callback hands over, so
 * also how far past its budget the sink can get. */
#define WADO_BUFFER_SIZE (64 * 1024)
/* Kept of a non-2xx body, for the error message. */
#define WADO_EXCERPT_MAX 1024

struct wado_client {
    CURL *curl;
    CURLM *multi;
    char *base_url;
    char *ca_file;
    unsigned connect_timeout_s;
    unsigned stall_timeout_s;
};

/* What the body of the answer is being read as. */
enum wado_body {
    WADO_BODY_UNKNOWN = 0, /* no body byte yet */
    WADO_BODY_ERROR,       /* a non-2xx answer: kept for the message */
    WADO_BODY_MULTIPART,
    WADO_BODY_SINGLE, /* one application/dicom part */
    WADO_BODY_FAILED, /* stop: the failure is recorded */
};

struct wado_fetch {
    const struct wado_request *req;
    struct partfile_sink *sink;
    struct wado_result *res;
    CURL *curl;
    enum wado_body body;
    struct multipart_parser *parser;
    struct multipart_part single;
    /* The first failure seen in a callback. */
    enum wado_failure failure;
    int error;
    /* Set by a part callback that fails, so that the parser's error is
     * not mistaken for a malformed body. */
    enum wado_failure part_failure;
    bool paused;
    bool cancel_seen;
    char excerpt[WADO_EXCERPT_MAX + 1];
    size_t excerpt_len;
    char curl_error[CURL_ERROR_SIZE];
};

const char *wado_failure_name(enum wado_failure failure)
{
    switch (failure) {
    case WADO_OK:
        return "ok";
    case WADO_TRANSPORT:
        return "transport";
    case WADO_UNAUTHORIZED:
        return "unauthorized";
    case WADO_FORBIDDEN:
        return "forbidden";
    case WADO_NOT_FOUND:
        return "not-found";
    case WADO_NOT_ACCEPTABLE:
        return "not-acceptable";
    case WADO_SERVER_ERROR:
        return "server-error";
    case WADO_HTTP_ERROR:
        return "http-error";
    case WADO_BAD_BODY:
        return "bad-body";
    case WADO_TRUNCATED:
        return "truncated";
    case WADO_CANCELLED:
        return "cancelled";
    case WADO_LOCAL:
        return "local";
    }
    return "unknown";
}

/* ------------------------------------------------------------------ */
/* URL and Accept                                                      */
/* ------------------------------------------------------------------ */

/* Percent-encodes @text as one path segment into @out (3 * len + 1). */
static void wado_encode_segment(const char *text, char *out)
{
    static const char hex[] = "0123456789ABCDEF";

    for (; *text != '\0'; text++) {
        unsigned char c = (unsigned char)*text;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
            (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
            c == '~') {
            *out++ = (char)c;
        } else {
            *out++ = '%';
            *out++ = hex[c >> 4];
            *out++ = hex[c & 15];
        }
    }
    *out = '\0';
}

int wado_url(const char *base_url, const char *study, const char *series,
             const char *instance, char **ret_url, char *err, size_t err_len)
{
    const char *names[3] = { "StudyInstanceUID", "SeriesInstanceUID",
                             "SOPInstanceUID" };
    const char *uids[3] = { study, series, instance };
    char enc[3][3 * UTIL_UID_MAX + 1];
    size_t base_len = strlen(base_url);
    int r;

    if (study == NULL || (instance != NULL && series == NULL)) {
        util_err(err, err_len,
                 "a retrieve needs a study, and a series for "
                 "an instance");
        return -EINVAL;
    }
    for (int i = 0; i < 3; i++) {
        enc[i][0] = '\0';
        if (uids[i] == NULL)
            continue;
        if (!util_uid_valid(uids[i])) {
            util_err(err, err_len, "%s is not a valid UID", names[i]);
            return -EINVAL;
        }
        wado_encode_segment(uids[i], enc[i]);
    }
    while (base_len > 0 && base_url[base_len - 1] == '/')
        base_len--;
    if (instance != NULL)
        r = asprintf(ret_url, "%.*s/studies/%s/series/%s/instances/%s",
                     (int)base_len, base_url, enc[0], enc[1], enc[2]);
    else if (series != NULL)
        r = asprintf(ret_url, "%.*s/studies/%s/series/%s", (int)base_len,
                     base_url, enc[0], enc[1]);
    else
        r = asprintf(ret_url, "%.*s/studies/%s", (int)base_len, base_url,
                     enc[0]);
    if (r < 0) {
        *ret_url = NULL;
        return -ENOMEM;
    }
    return 0;
}

int wado_accept(const char *transfer_syntax, char *buf, size_t len)
{
    int n;

    if (transfer_syntax == NULL) {
        n = snprintf(buf, len, "%s", WADO_ACCEPT_ANY);
    } else {
        if (!util_uid_valid(transfer_syntax))
            return -EINVAL;
        n = snprintf(buf, len,
                     "multipart/related; type=\"application/dicom\"; "
                     "transfer-syntax=%s",
                     transfer_syntax);
    }
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* ------------------------------------------------------------------ */
/* Client                                                              */
/* ------------------------------------------------------------------ */

struct wado_client *wado_client_new(const struct wado_params *params)
{
    struct wado_client *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->curl = curl_easy_init();
    c->multi = curl_multi_init();
    c->base_url = strdup(params->base_url);
    c->ca_file = params->ca_file != NULL ? strdup(params->ca_file) : NULL;
    c->connect_timeout_s =
        params->connect_timeout_s != 0 ? params->connect_timeout_s : 30;
    c->stall_timeout_s =
        params->stall_timeout_s != 0 ? params->stall_timeout_s : 60;
    if (c->curl == NULL || c->multi == NULL || c->base_url == NULL ||
        (params->ca_file != NULL && c->ca_file == NULL)) {
        wado_client_free(c);
        return NULL;
    }
    return c;
}

void wado_client_free(struct wado_client *client)
{
    if (client == NULL)
        return;
    if (client->multi != NULL)
        curl_multi_cleanup(client->multi);
    if (client->curl != NULL)
        curl_easy_cleanup(client->curl);
    free(client->base_url);
    free(client->ca_file);
    free(client);
}

/* ------------------------------------------------------------------ */
/* The answer                                                          */
/* ------------------------------------------------------------------ */

/* Records the first failure of the fetch. */
static void wado_fail(struct wado_fetch *f, enum wado_failure failure,
                      int error, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void wado_fail(struct wado_fetch *f, enum wado_failure failure,
                      int error, const char *fmt, ...)
{
    va_list ap;

    if (f->failure != WADO_OK)
        return;
    f->failure = failure;
    f->error = error;
    va_start(ap, fmt);
    vsnprintf(f->res->error, sizeof(f->res->error), fmt, ap);
    va_end(ap);
}

/* A part callback failed with @r: a local failure unless it is ours. */
static int wado_part_failed(struct wado_fetch *f, int r)
{
    if (f->part_failure == WADO_OK)
        f->part_failure = r == -ECANCELED ? WADO_CANCELLED : WADO_LOCAL;
    return r;
}

static int wado_on_part_begin(void *ctx, const struct multipart_part *part,
                              char *err, size_t err_len)
{
    struct wado_fetch *f = ctx;

    if (part->has_content_type &&
        strcmp(part->content_type.type, "application/dicom") != 0) {
        util_err(err, err_len, "part %u is %s, not application/dicom",
                 part->index + 1, part->content_type.type);
        f->part_failure = WADO_BAD_BODY;
        return -EBADMSG;
    }
    int r = partfile_begin(f->sink, part, err, err_len);
    return r < 0 ? wado_part_failed(f, r) : 0;
}

static int wado_on_part_data(void *ctx, const void *data, size_t len, char *err,
                             size_t err_len)
{
    struct wado_fetch *f = ctx;
    int r = partfile_write(f->sink, data, len, err, err_len);

    return r < 0 ? wado_part_failed(f, r) : 0;
}

static int wado_on_part_end(void *ctx, const struct multipart_part *part,
                            char *err, size_t err_len)
{
    struct wado_fetch *f = ctx;
    int r = partfile_end(f->sink, err, err_len);

    if (r < 0)
        return wado_part_failed(f, r);
    f->res->parts++;
    f->res->part_bytes += part->received;
    return 0;
}

/*
 * The first body byte (or the end of an empty body): the status and the
 * Content-Type decide how the body is read. Returns 0 or -1 (failure
 * recorded).
 */
static int wado_start_body(struct wado_fetch *f)
{
    struct multipart_callbacks cb = { wado_on_part_begin, wado_on_part_data,
                                      wado_on_part_end, f };
    struct multipart_media_type type;
    char reason[256];
    char *ct = NULL;
    long status = 0;

    curl_easy_getinfo(f->curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(f->curl, CURLINFO_CONTENT_TYPE, &ct);
    f->res->http_status = status;
    if (ct != NULL)
        snprintf(f->res->content_type, sizeof(f->res->content_type), "%s", ct);
    if (status != 200 && status != 206) {
        f->body = WADO_BODY_ERROR;
        return 0;
    }
    f->body = WADO_BODY_FAILED;
    if (ct == NULL) {
        wado_fail(f, WADO_BAD_BODY, -EBADMSG,
                  "HTTP %ld without a Content-Type: not a WADO-RS answer",
                  status);
        return -1;
    }
    if (multipart_media_type_parse(ct, &type, reason, sizeof(reason)) < 0) {
        wado_fail(f, WADO_BAD_BODY, -EBADMSG, "the answer's Content-Type: %s",
                  reason);
        return -1;
    }
    if (strncmp(type.type, "multipart/", 10) == 0) {
        int r = multipart_new(ct, &cb, &f->parser, reason, sizeof(reason));
        if (r < 0) {
            wado_fail(f, r == -ENOMEM ? WADO_LOCAL : WADO_BAD_BODY, r,
                      "the answer's %s", reason);
            return -1;
        }
        f->body = WADO_BODY_MULTIPART;
        return 0;
    }
    if (strcmp(type.type, "application/dicom") == 0) {
        /* One instance, not wrapped: a part of its own. */
        curl_off_t cl = -1;
        memset(&f->single, 0, sizeof(f->single));
        f->single.has_content_type = true;
        f->single.content_type = type;
        curl_easy_getinfo(f->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
        f->single.content_length = cl;
        int r = partfile_begin(f->sink, &f->single, reason, sizeof(reason));
        if (r < 0) {
            wado_fail(f, WADO_LOCAL, r, "%s", reason);
            return -1;
        }
        f->body = WADO_BODY_SINGLE;
        return 0;
    }
    wado_fail(f, WADO_BAD_BODY, -EBADMSG,
              "the answer is %s, not multipart/related of application/dicom",
              type.type);
    return -1;
}

/* Body bytes of a 200/206 answer. Returns 0 or -1 (failure recorded). */
static int wado_feed(struct wado_fetch *f, const char *data, size_t n)
{
    char reason[256];
    int r;

    if (f->body == WADO_BODY_SINGLE) {
        r = partfile_write(f->sink, data, n, reason, sizeof(reason));
        if (r < 0) {
            wado_fail(f, WADO_LOCAL, r, "%s", reason);
            return -1;
        }
        f->single.received += n;
        return 0;
    }
    r = multipart_feed(f->parser, data, n, reason, sizeof(reason));
    if (r < 0) {
        enum wado_failure why =
            f->part_failure != WADO_OK ? f->part_failure : WADO_BAD_BODY;
        wado_fail(f, why, r, why == WADO_BAD_BODY ? "malformed body: %s" : "%s",
                  reason);
        return -1;
    }
    return 0;
}

static size_t wado_on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct wado_fetch *f = arg;
    size_t n = size * nmemb;

    if (f->body == WADO_BODY_UNKNOWN && wado_start_body(f) < 0)
        return 0;
    switch (f->body) {
    case WADO_BODY_ERROR: {
        size_t room = WADO_EXCERPT_MAX - f->excerpt_len;
        size_t k = n < room ? n : room;
        memcpy(f->excerpt + f->excerpt_len, data, k);
        f->excerpt_len += k;
        return n;
    }
    case WADO_BODY_MULTIPART:
    case WADO_BODY_SINGLE:
        if (partfile_over_budget(f->sink)) {
            if (!f->paused) {
                f->paused = true;
                f->res->pauses++;
            }
            return CURL_WRITEFUNC_PAUSE;
        }
        if (wado_feed(f, data, n) < 0) {
            f->body = WADO_BODY_FAILED;
            return 0;
        }
        return n;
    default:
        return 0;
    }
}

static size_t wado_on_header(char *data, size_t size, size_t nmemb, void *arg)
{
    struct wado_fetch *f = arg;
    size_t n = size * nmemb;
    char value[128];

    /* A new status line (after a 100 Continue, say) starts afresh. */
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0)
        f->res->retry_after_s = -1;
    if (http_header_value(data, n, "retry-after", value, sizeof(value)))
        f->res->retry_after_s =
            dicomweb_parse_retry_after(value, (int64_t)time(NULL));
    return n;
}

static int wado_on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow,
                            curl_off_t ultotal, curl_off_t ulnow)
{
    struct wado_fetch *f = arg;

    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    if (f->req->cancelled != NULL && f->req->cancelled(f->req->cancel_ctx)) {
        f->cancel_seen = true;
        return 1;
    }
    return 0;
}

static void wado_wake(void *ctx)
{
    (void)curl_multi_wakeup(ctx);
}

/* The server's text of a non-2xx answer, printable and short. */
static void wado_excerpt(const struct wado_fetch *f, char *out, size_t len)
{
    size_t w = 0;
    bool space = false;

    for (size_t i = 0; i < f->excerpt_len && w + 4 < len && w < 200; i++) {
        unsigned char c = (unsigned char)f->excerpt[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            space = w > 0;
            continue;
        }
        if (space)
            out[w++] = ' ';
        space = false;
        out[w++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    out[w] = '\0';
}

/* A non-2xx answer: what it means, with advice. */
static void wado_status_failure(struct wado_fetch *f)
{
    long s = f->res->http_status;
    char said[256];
    char text[300];

    wado_excerpt(f, said, sizeof(said));
    if (said[0] != '\0')
        snprintf(text, sizeof(text), "; server said: \"%s\"", said);
    else
        text[0] = '\0';
    if (s == 401) {
        wado_fail(f, WADO_UNAUTHORIZED, -EACCES,
                  "HTTP 401: the token was refused%s", text);
    } else if (s == 403) {
        wado_fail(f, WADO_FORBIDDEN, -EACCES,
                  "HTTP 403: this identity may not read it%s", text);
    } else if (s == 404) {
        wado_fail(f, WADO_NOT_FOUND, -ENOENT,
                  "HTTP 404: the server has no such %s%s",
                  f->req->instance_uid != NULL ? "instance"
                  : f->req->series_uid != NULL ? "series"
                                               : "study",
                  text);
    } else if (s == 406 && f->req->transfer_syntax == NULL) {
        wado_fail(f, WADO_NOT_ACCEPTABLE, -EPROTO,
                  "HTTP 406: the server will not send the instances as "
                  "stored (Accept: %s); a WADO-RS server must accept "
                  "transfer-syntax=* (PS3.18 8.7.3.5.2): check that the URL "
                  "is the DICOMweb root and that the server supports it%s",
                  WADO_ACCEPT_ANY, text);
    } else if (s == 406) {
        wado_fail(f, WADO_NOT_ACCEPTABLE, -EPROTO,
                  "HTTP 406: the server will not transcode to %s (Azure "
                  "transcodes single instances of at most 100 MB only, and "
                  "refuses any transfer syntax but * for a study or a "
                  "series): ask with transfer-syntax=* instead%s",
                  f->req->transfer_syntax, text);
    } else if (s >= 500 && s <= 599) {
        char after[48] = "";
        if (f->res->retry_after_s >= 0)
            snprintf(after, sizeof(after), " (Retry-After %lld s)",
                     (long long)f->res->retry_after_s);
        wado_fail(f, WADO_SERVER_ERROR, -EPROTO,
                  "HTTP %ld: server error, retry later%s%s", s, after, text);
    } else {
        wado_fail(f, WADO_HTTP_ERROR, -EPROTO,
                  "HTTP %ld: not an answer to a WADO-RS retrieve (expected "
                  "200)%s",
                  s, text);
    }
}

/* A transfer error after a 200/206 body began: truncated or stalled. */
static void wado_body_cut(struct wado_fetch *f, CURLcode rc)
{
    char where[256] = "";
    const char *detail =
        f->curl_error[0] != '\0' ? f->curl_error : curl_easy_strerror(rc);

    if (f->body == WADO_BODY_MULTIPART) {
        (void)multipart_finish(f->parser, where, sizeof(where));
    } else {
        snprintf(where, sizeof(where),
                 "truncated: the body ended after %llu bytes of its single "
                 "application/dicom part",
                 (unsigned long long)f->single.received);
    }
    if (rc == CURLE_OPERATION_TIMEDOUT)
        wado_fail(f, WADO_TRANSPORT, -ETIMEDOUT, "stalled, %s (%s)",
                  where + (strncmp(where, "truncated: ", 11) == 0 ? 11 : 0),
                  detail);
    else
        wado_fail(f, WADO_TRUNCATED, -ENODATA, "%s (%s)", where, detail);
}

/* The transfer is over with @rc: turns everything into the result. */
static void wado_conclude(struct wado_fetch *f, CURLcode rc)
{
    char reason[256];
    int r;

    if (f->failure != WADO_OK)
        return; /* a callback failed first: that is the cause */
    if (rc == CURLE_ABORTED_BY_CALLBACK && f->cancel_seen) {
        wado_fail(f, WADO_CANCELLED, -ECANCELED, "cancelled after %u parts",
                  f->res->parts);
        return;
    }
    if (rc != CURLE_OK && f->body == WADO_BODY_UNKNOWN) {
        long status = 0;
        curl_easy_getinfo(f->curl, CURLINFO_RESPONSE_CODE, &status);
        if (status == 0) {
            const char *detail = f->curl_error[0] != '\0'
                                     ? f->curl_error
                                     : curl_easy_strerror(rc);
            wado_fail(f, WADO_TRANSPORT,
                      rc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT
                      : rc == CURLE_COULDNT_CONNECT  ? -ECONNREFUSED
                                                     : -ECONNABORTED,
                      "no answer: %s", detail);
            return;
        }
    }
    if (f->body == WADO_BODY_UNKNOWN && wado_start_body(f) < 0)
        return;
    switch (f->body) {
    case WADO_BODY_ERROR:
        wado_status_failure(f);
        return;
    case WADO_BODY_MULTIPART:
        /* A cut after the close delimiter cost only epilogue: every part
         * is here. */
        if (rc != CURLE_OK && !multipart_closed(f->parser)) {
            wado_body_cut(f, rc);
            return;
        }
        r = multipart_finish(f->parser, reason, sizeof(reason));
        if (r == -ENODATA)
            wado_fail(f, WADO_TRUNCATED, r, "%s", reason);
        else if (r < 0)
            wado_fail(f, WADO_BAD_BODY, r, "malformed body: %s", reason);
        return;
    case WADO_BODY_SINGLE:
        if (rc != CURLE_OK) {
            wado_body_cut(f, rc);
            return;
        }
        r = partfile_end(f->sink, reason, sizeof(reason));
        if (r < 0) {
            wado_fail(f, r == -ECANCELED ? WADO_CANCELLED : WADO_LOCAL, r, "%s",
                      reason);
            return;
        }
        f->res->parts = 1;
        f->res->part_bytes = f->single.received;
        return;
    default:
        wado_fail(f, WADO_LOCAL, -EIO, "transfer failed: %s",
                  curl_easy_strerror(rc));
        return;
    }
}

/* Sets the options of one retrieve on the client's (reset) handle. */
static void wado_prepare(struct wado_client *client, struct wado_fetch *f,
                         const char *url, struct curl_slist *headers)
{
    CURL *c = client->curl;

    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, wado_on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, wado_on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, f);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, wado_on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, f);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, f->curl_error);
    curl_easy_setopt(c, CURLOPT_BUFFERSIZE, (long)WADO_BUFFER_SIZE);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT,
                     (long)client->connect_timeout_s);
    /* No whole-transfer timeout (a study can take long): a stall does. */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)client->stall_timeout_s);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    if (client->ca_file != NULL)
        curl_easy_setopt(c, CURLOPT_CAINFO, client->ca_file);
}

/* Runs the transfer to its end; returns its result code. */
static CURLcode wado_run(struct wado_client *client, struct wado_fetch *f)
{
    CURLcode rc = CURLE_OK;
    int running = 1;

    if (curl_multi_add_handle(client->multi, client->curl) != CURLM_OK)
        return CURLE_OUT_OF_MEMORY;
    partfile_set_waker(f->sink, wado_wake, client->multi);
    for (;;) {
        CURLMcode mc = curl_multi_perform(client->multi, &running);
        if (mc != CURLM_OK) {
            rc = CURLE_OUT_OF_MEMORY;
            snprintf(f->curl_error, sizeof(f->curl_error), "%s",
                     curl_multi_strerror(mc));
            break;
        }
        if (running == 0)
            break;
        if (f->paused && !partfile_over_budget(f->sink)) {
            f->paused = false;
            /* May hand the kept chunk to wado_on_body() right here. */
            rc = curl_easy_pause(client->curl, CURLPAUSE_CONT);
            if (rc != CURLE_OK)
                break;
            continue;
        }
        /* Sockets, curl's timers, or a release (the waker), at most 1 s:
         * the progress callback (cancel) runs at least that often. */
        mc = curl_multi_poll(client->multi, NULL, 0, 1000, NULL);
        if (mc != CURLM_OK) {
            rc = CURLE_OUT_OF_MEMORY;
            break;
        }
    }
    partfile_set_waker(f->sink, NULL, NULL);
    if (running == 0) {
        int left;
        CURLMsg *msg;
        while ((msg = curl_multi_info_read(client->multi, &left)) != NULL) {
            if (msg->msg == CURLMSG_DONE && msg->easy_handle == client->curl)
                rc = msg->data.result;
        }
    }
    curl_multi_remove_handle(client->multi, client->curl);
    return rc;
}

int wado_fetch(struct wado_client *client, const struct wado_request *request,
               struct partfile_sink *sink, struct wado_result *ret_result)
{
    struct wado_fetch f;
    struct curl_slist *headers = NULL;
    char accept[160];
    char line[200];
    char *url = NULL;
    char *auth = NULL;
    int r;

    memset(ret_result, 0, sizeof(*ret_result));
    ret_result->retry_after_s = -1;
    memset(&f, 0, sizeof(f));
    f.req = request;
    f.sink = sink;
    f.res = ret_result;
    f.curl = client->curl;

    r = wado_url(client->base_url, request->study_uid, request->series_uid,
                 request->instance_uid, &url, ret_result->error,
                 sizeof(ret_result->error));
    if (r < 0) {
        ret_result->failure = WADO_LOCAL;
        return r;
    }
    if (wado_accept(request->transfer_syntax, accept, sizeof(accept)) < 0) {
        snprintf(ret_result->error, sizeof(ret_result->error),
                 "the transfer syntax asked for is not a UID");
        ret_result->failure = WADO_LOCAL;
        free(url);
        return -EINVAL;
    }
    snprintf(line, sizeof(line), "Accept: %s", accept);
    headers = curl_slist_append(headers, line);
    if (request->bearer != NULL) {
        if (asprintf(&auth, "Authorization: Bearer %s", request->bearer) < 0)
            auth = NULL;
        struct curl_slist *h =
            auth != NULL ? curl_slist_append(headers, auth) : NULL;
        if (h == NULL) {
            curl_slist_free_all(headers);
            headers = NULL;
        }
    }
    if (headers == NULL) {
        wado_fail(&f, WADO_LOCAL, -ENOMEM, "out of memory");
        goto out;
    }

    wado_prepare(client, &f, url, headers);
    CURLcode rc = wado_run(client, &f);
    wado_conclude(&f, rc);
    /* The handle outlives @f: forget every pointer into it. */
    curl_easy_reset(client->curl);

out:
    if (f.failure != WADO_OK)
        partfile_abort(sink);
    ret_result->failure = f.failure;
    multipart_free(f.parser);
    if (auth != NULL) {
        explicit_bzero(auth, strlen(auth));
        free(auth);
    }
    /* The list holds its own copy of the header: wipe that too. */
    for (struct curl_slist *h = headers; h != NULL; h = h->next) {
        if (strncmp(h->data, "Authorization:", 14) == 0)
            explicit_bzero(h->data, strlen(h->data));
    }
    curl_slist_free_all(headers);
    free(url);
    return f.failure == WADO_OK ? 0 : f.error;
}
