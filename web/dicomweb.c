/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dicomweb - see dicomweb.h.
 */
#include "dicomweb.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/util.h"
#include "dicom/redact.h"
#include "http.h"
#include "oauth.h"

/* One libcurl easy handle and the buffer libcurl writes its detail to. */
struct dicomweb_conn {
    CURL *curl;
    char errbuf[CURL_ERROR_SIZE];
};

struct dicomweb {
    char *base_url;
    char *ca_file;
    unsigned timeout_s;
    struct oauth_source *tokens;
    bool (*cancelled)(void *ctx);
    void *cancel_ctx;

    pthread_mutex_t lock; /* guards idle and idle_count */
    struct dicomweb_conn **idle;
    size_t idle_cap;
    size_t idle_count;
    atomic_uint handles_made;
    _Atomic uint64_t last_403_due_ms;
};

struct dicomweb *dicomweb_new(const struct dicomweb_params *params)
{
    struct dicomweb *dw = calloc(1, sizeof(*dw));
    size_t n;

    if (dw == NULL)
        return NULL;
    dw->idle_cap =
        params->pool_size > 0 ? params->pool_size : DICOMWEB_POOL_DEFAULT;
    dw->idle = calloc(dw->idle_cap, sizeof(*dw->idle));
    dw->base_url = strdup(params->base_url);
    dw->ca_file = params->ca_file != NULL ? strdup(params->ca_file) : NULL;
    if (dw->idle == NULL || dw->base_url == NULL ||
        (params->ca_file != NULL && dw->ca_file == NULL)) {
        free(dw->idle);
        free(dw->base_url);
        free(dw->ca_file);
        free(dw);
        return NULL;
    }
    /* Trailing slashes would make "//studies". */
    n = strlen(dw->base_url);
    while (n > 0 && dw->base_url[n - 1] == '/')
        dw->base_url[--n] = '\0';
    dw->timeout_s = params->timeout_s;
    dw->tokens = params->tokens;
    dw->cancelled = params->cancelled;
    dw->cancel_ctx = params->cancel_ctx;
    pthread_mutex_init(&dw->lock, NULL);
    atomic_init(&dw->handles_made, 0);
    atomic_init(&dw->last_403_due_ms, 0);
    return dw;
}

static void dicomweb_conn_free(struct dicomweb_conn *conn)
{
    if (conn == NULL)
        return;
    curl_easy_cleanup(conn->curl);
    free(conn);
}

void dicomweb_free(struct dicomweb *dw)
{
    if (dw == NULL)
        return;
    for (size_t i = 0; i < dw->idle_count; i++)
        dicomweb_conn_free(dw->idle[i]);
    pthread_mutex_destroy(&dw->lock);
    free(dw->idle);
    free(dw->base_url);
    free(dw->ca_file);
    free(dw);
}

const char *dicomweb_base_url(const struct dicomweb *dw)
{
    return dw->base_url;
}

unsigned dicomweb_handles_made(struct dicomweb *dw)
{
    return atomic_load(&dw->handles_made);
}

/* An idle handle of the pool, or a new one; NULL on out-of-memory. */
static struct dicomweb_conn *dicomweb_take(struct dicomweb *dw)
{
    struct dicomweb_conn *conn = NULL;

    pthread_mutex_lock(&dw->lock);
    if (dw->idle_count > 0)
        conn = dw->idle[--dw->idle_count];
    pthread_mutex_unlock(&dw->lock);
    if (conn != NULL)
        return conn;
    conn = calloc(1, sizeof(*conn));
    if (conn == NULL)
        return NULL;
    conn->curl = curl_easy_init();
    if (conn->curl == NULL) {
        free(conn);
        return NULL;
    }
    atomic_fetch_add(&dw->handles_made, 1);
    return conn;
}

/* Back to the pool (its connection stays open for the next request), or
 * freed when the pool is full. */
static void dicomweb_give(struct dicomweb *dw, struct dicomweb_conn *conn)
{
    pthread_mutex_lock(&dw->lock);
    if (dw->idle_count < dw->idle_cap) {
        dw->idle[dw->idle_count++] = conn;
        conn = NULL;
    }
    pthread_mutex_unlock(&dw->lock);
    dicomweb_conn_free(conn);
}

/* The one place a copy of a token dies. */
static void dicomweb_token_free(char *token)
{
    if (token != NULL) {
        explicit_bzero(token, strlen(token));
        free(token);
    }
}

void dicomweb_reply_free(struct dicomweb_reply *reply)
{
    if (reply == NULL)
        return;
    free(reply->body);
    reply->body = NULL;
    reply->body_len = 0;
    redact_free(reply->secrets);
    reply->secrets = NULL;
}

static void dicomweb_reply_init(struct dicomweb_reply *reply)
{
    memset(reply, 0, sizeof(*reply));
    reply->retry_after_s = -1;
}

int64_t dicomweb_parse_retry_after(const char *value, int64_t now_s)
{
    struct tm tm;
    const char *p = value;
    char *end;
    int64_t when;

    while (*p == ' ' || *p == '\t')
        p++;
    if (*p >= '0' && *p <= '9') {
        long long v = strtoll(p, &end, 10);
        while (*end == ' ' || *end == '\t')
            end++;
        if (*end != '\0' || v < 0)
            return -1;
        return v > DICOMWEB_RETRY_AFTER_MAX ? DICOMWEB_RETRY_AFTER_MAX : v;
    }
    /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT". */
    memset(&tm, 0, sizeof(tm));
    end = strptime(p, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (end == NULL)
        return -1;
    when = (int64_t)timegm(&tm);
    if (when <= now_s)
        return 0;
    return when - now_s > DICOMWEB_RETRY_AFTER_MAX ? DICOMWEB_RETRY_AFTER_MAX
                                                   : when - now_s;
}

/* ------------------------------------------------------------------ */
/* One attempt                                                         */
/* ------------------------------------------------------------------ */

struct dicomweb_sink {
    const struct dicomweb_request *req;
    struct buf body; /* up to DICOMWEB_MAX_RESPONSE bytes and the NUL */
    bool overflow;
    bool hook_refused;
};

static size_t dicomweb_on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct dicomweb_sink *sink = arg;
    size_t n = size * nmemb;

    if (sink->req->on_body != NULL) {
        size_t taken = sink->req->on_body(sink->req->ctx, data, n);
        if (taken != n && taken != CURL_WRITEFUNC_PAUSE)
            sink->hook_refused = true;
        return taken;
    }
    if (sink->overflow || sink->body.len + n >= sink->body.max) {
        sink->overflow = true;
        return n; /* keep reading, stop storing: the status still counts */
    }
    if (buf_append(&sink->body, data, n) < 0)
        return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
    return n;
}

static size_t dicomweb_on_header(char *data, size_t size, size_t nmemb,
                                 void *arg)
{
    struct dicomweb_reply *reply = arg;
    size_t n = size * nmemb;
    static const char warning[] = "warning:";
    char value[128];

    /* A new status line (after a 100 Continue, say) starts afresh. */
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        reply->retry_after_s = -1;
        reply->more_results = false;
        reply->location[0] = '\0';
    }
    /* PS3.18 8.3.4.4: "Warning: 299 <service>: There are <n> additional
     * results that can be requested". */
    if (n > sizeof(warning) - 1 &&
        strncasecmp(data, warning, sizeof(warning) - 1) == 0 &&
        memmem(data, n, "additional results", 18) != NULL)
        reply->more_results = true;
    (void)http_header_value(data, n, "location", reply->location,
                            sizeof(reply->location));
    if (http_header_value(data, n, "retry-after", value, sizeof(value)))
        reply->retry_after_s =
            dicomweb_parse_retry_after(value, (int64_t)time(NULL));
    return n;
}

static int dicomweb_on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow,
                                curl_off_t ultotal, curl_off_t ulnow)
{
    struct dicomweb *dw = arg;

    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    return dw->cancelled(dw->cancel_ctx) ? 1 : 0;
}

/* A failed transfer as a negative errno. */
static int dicomweb_curl_errno(CURLcode rc)
{
    return rc == CURLE_ABORTED_BY_CALLBACK  ? -ECANCELED
           : rc == CURLE_OUT_OF_MEMORY      ? -ENOMEM
           : rc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT
           : rc == CURLE_COULDNT_CONNECT    ? -ECONNREFUSED
           : rc == CURLE_READ_ERROR         ? -EIO
                                            : -ECONNABORTED;
}

/* Frees a header list, wiping every entry first: one holds the token. */
static void dicomweb_headers_free(struct curl_slist *headers)
{
    for (struct curl_slist *h = headers; h != NULL; h = h->next)
        explicit_bzero(h->data, strlen(h->data));
    curl_slist_free_all(headers);
}

/* "Accept: @accept" and, unless @token is NULL, "Authorization: Bearer
 * @token"; NULL on out-of-memory. */
static struct curl_slist *dicomweb_headers(const char *accept,
                                           const char *token)
{
    struct curl_slist *headers = NULL;
    struct curl_slist *grown;
    char *line = NULL;

    if (asprintf(&line, "Accept: %s", accept) < 0)
        return NULL;
    headers = curl_slist_append(NULL, line);
    free(line);
    line = NULL;
    if (headers == NULL || token == NULL)
        return headers;
    if (asprintf(&line, "Authorization: Bearer %s", token) < 0) {
        curl_slist_free_all(headers);
        return NULL;
    }
    grown = curl_slist_append(headers, line);
    dicomweb_token_free(line);
    if (grown == NULL) {
        dicomweb_headers_free(headers);
        return NULL;
    }
    return grown;
}

/*
 * Sends @req once on @conn with @token (NULL: no Authorization) and fills
 * @reply (initialised by the caller). Returns 0 when an HTTP answer came.
 */
static int dicomweb_attempt(struct dicomweb *dw, struct dicomweb_conn *conn,
                            const struct dicomweb_request *req,
                            const char *token, struct dicomweb_reply *reply)
{
    struct dicomweb_sink sink = { .req = req };
    struct curl_slist *headers = NULL;
    CURL *c = conn->curl;
    char *url = NULL;
    CURLcode rc;
    int r = 0;

    buf_init(&sink.body, DICOMWEB_MAX_RESPONSE + 1);
    curl_easy_reset(c);
    http_setup(c, dw->timeout_s,
               req->deadline_s > 0 ? req->deadline_s : (long)dw->timeout_s,
               dw->ca_file, conn->errbuf);
    /* asprintf leaves its pointer undefined on failure. */
    if (asprintf(&url, "%s%s", dw->base_url, req->path) < 0)
        url = NULL;
    headers = dicomweb_headers(req->accept, token);
    if (url == NULL || headers == NULL) {
        snprintf(reply->error, sizeof(reply->error), "out of memory");
        r = -ENOMEM;
        goto out;
    }
    if (req->prepare != NULL) {
        r = req->prepare(req->ctx, c, &headers, reply->error,
                         sizeof(reply->error));
        if (r < 0)
            goto out;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, dicomweb_on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, dicomweb_on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, reply);
    if (dw->cancelled != NULL) {
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, dicomweb_on_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, dw);
    }

    rc =
        req->perform != NULL ? req->perform(req->ctx, c) : curl_easy_perform(c);
    if (rc != CURLE_OK) {
        http_describe(c, rc, conn->errbuf, reply->error, sizeof(reply->error));
        reply->http_status = 0;
        r = sink.hook_refused ? -EIO : dicomweb_curl_errno(rc);
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply->http_status);
    if (sink.overflow) {
        snprintf(reply->error, sizeof(reply->error),
                 "response body over %d bytes%s", DICOMWEB_MAX_RESPONSE,
                 req->cap_is_error ? "" : ", cut");
        if (req->cap_is_error) {
            r = -EMSGSIZE;
            goto out;
        }
    }
    if (req->on_body == NULL) {
        reply->body = buf_take(&sink.body, &reply->body_len);
        if (reply->body == NULL)
            r = -ENOMEM;
    }
out:
    buf_free(&sink.body);
    if (req->release != NULL)
        req->release(req->ctx);
    /* The header list holds a copy of the token: wiped. */
    dicomweb_headers_free(headers);
    free(url);
    return r;
}

/* True once per DICOMWEB_403_LOG_MS: the one rate limit of the 403
 * diagnosis. */
static bool dicomweb_403_due(struct dicomweb *dw)
{
    uint64_t now = util_now_monotonic_ms();
    uint64_t last = atomic_load(&dw->last_403_due_ms);

    if (last != 0 && now - last < DICOMWEB_403_LOG_MS)
        return false;
    return atomic_compare_exchange_strong(&dw->last_403_due_ms, &last, now);
}

/* After a 403: what the token says, for the operator. */
static void dicomweb_diagnose(struct dicomweb *dw, const char *token,
                              struct dicomweb_reply *reply)
{
    struct oauth_claims claims;
    char err[128];
    bool decoded;

    decoded = token != NULL &&
              oauth_decode_claims(token, &claims, err, sizeof(err)) == 0;
    oauth_diagnose_forbidden(decoded ? &claims : NULL, dw->base_url,
                             (int64_t)time(NULL), reply->diagnosis,
                             sizeof(reply->diagnosis));
    if (decoded)
        oauth_claims_free(&claims);
    reply->diagnosis_due = dicomweb_403_due(dw);
}

/* The secrets of an exchange whose answer someone may show. */
static void dicomweb_gather_secrets(struct dicomweb *dw, const char *token,
                                    struct dicomweb_reply *reply)
{
    reply->secrets = redact_new();
    if (reply->secrets == NULL ||
        (token != NULL && redact_add_literal(reply->secrets, token) < 0) ||
        (dw->tokens != NULL &&
         oauth_source_add_secrets(dw->tokens, reply->secrets) < 0))
        reply->secrets_missing = true;
}

int dicomweb_request(struct dicomweb *dw, const struct dicomweb_request *req,
                     struct dicomweb_reply *ret_reply)
{
    struct dicomweb_conn *conn;
    bool replayed = false;
    int r = 0;

    dicomweb_reply_init(ret_reply);
    conn = dicomweb_take(dw);
    if (conn == NULL) {
        snprintf(ret_reply->error, sizeof(ret_reply->error), "out of memory");
        return -ENOMEM;
    }
    for (;;) {
        uint64_t generation = 0;
        char *token = NULL;
        char err[256];

        if (dw->tokens != NULL) {
            r = oauth_source_token(dw->tokens, util_now_monotonic_ms(), &token,
                                   &generation, err, sizeof(err));
            if (r < 0) {
                ret_reply->token_failed = true;
                ret_reply->replayed = replayed;
                snprintf(ret_reply->error, sizeof(ret_reply->error), "%s", err);
                break;
            }
        }
        r = dicomweb_attempt(dw, conn, req, token, ret_reply);
        if (r == 0 && ret_reply->http_status == 401 && !replayed &&
            dw->tokens != NULL) {
            /* Refused: that token is forgotten, a new one tried once. */
            oauth_source_invalidate(dw->tokens, generation);
            dicomweb_token_free(token);
            dicomweb_reply_free(ret_reply);
            dicomweb_reply_init(ret_reply);
            replayed = true;
            continue;
        }
        ret_reply->replayed = replayed;
        if (r == 0 && ret_reply->http_status == 403)
            dicomweb_diagnose(dw, token, ret_reply);
        if (r != -ECANCELED && (r < 0 || ret_reply->http_status < 200 ||
                                ret_reply->http_status > 299))
            dicomweb_gather_secrets(dw, token, ret_reply);
        dicomweb_token_free(token);
        break;
    }
    dicomweb_give(dw, conn);
    return r;
}

/* ------------------------------------------------------------------ */
/* STOW-RS, QIDO-RS, the probe                                         */
/* ------------------------------------------------------------------ */

struct dicomweb_stow_body {
    const char *const *paths;
    size_t count;
    curl_mime *mime;
};

/* The multipart body, streamed from the files at send time. */
static int dicomweb_stow_prepare(void *ctx, CURL *curl,
                                 struct curl_slist **headers, char *err,
                                 size_t err_len)
{
    struct dicomweb_stow_body *body = ctx;
    struct curl_slist *list = *headers;

    body->mime = curl_mime_init(curl);
    if (body->mime == NULL)
        goto oom;
    for (size_t i = 0; i < body->count; i++) {
        curl_mimepart *part = curl_mime_addpart(body->mime);
        /* filedata streams the file at send time; it also sets a file
         * name, which would add a Content-Disposition: drop it. The type
         * must be exactly application/dicom (Azure answers 415 to any
         * parameter). */
        if (part == NULL ||
            curl_mime_filedata(part, body->paths[i]) != CURLE_OK ||
            curl_mime_filename(part, NULL) != CURLE_OK ||
            curl_mime_type(part, "application/dicom") != CURLE_OK)
            goto oom;
    }
    /* libcurl keeps this type and appends "; boundary=..." (random). */
    list = curl_slist_append(list, "Content-Type: multipart/related; "
                                   "type=\"application/dicom\"");
    /* Some servers never answer 100-continue: each request would stall. */
    if (list != NULL)
        list = curl_slist_append(list, "Expect:");
    if (list == NULL)
        goto oom;
    *headers = list;
    curl_easy_setopt(curl, CURLOPT_MIMEPOST, body->mime);
    return 0;
oom:
    snprintf(err, err_len, "out of memory");
    return -ENOMEM;
}

static void dicomweb_stow_release(void *ctx)
{
    struct dicomweb_stow_body *body = ctx;

    curl_mime_free(body->mime);
    body->mime = NULL;
}

int dicomweb_stow(struct dicomweb *dw, const char *study_uid,
                  const char *const *paths, size_t count,
                  struct dicomweb_reply *ret_reply)
{
    struct dicomweb_stow_body body = { paths, count, NULL };
    struct dicomweb_request req = {
        .accept = "application/dicom+json",
        .prepare = dicomweb_stow_prepare,
        .release = dicomweb_stow_release,
        .ctx = &body,
    };
    uint64_t body_bytes = 0;
    char *path = NULL;
    int r;

    /* Every file must be readable before anything is sent; their sizes
     * give the deadline. */
    for (size_t i = 0; i < count; i++) {
        struct stat st;
        int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            r = -errno;
            dicomweb_reply_init(ret_reply);
            snprintf(ret_reply->error, sizeof(ret_reply->error),
                     "open() '%s' failed: %s", paths[i], strerror(-r));
            return r;
        }
        if (fstat(fd, &st) == 0)
            body_bytes += (uint64_t)st.st_size;
        (void)close(fd);
    }
    if (asprintf(&path, "/studies/%s", study_uid) < 0) {
        dicomweb_reply_init(ret_reply);
        snprintf(ret_reply->error, sizeof(ret_reply->error), "out of memory");
        return -ENOMEM;
    }
    req.path = path;
    /* A deadline that grows with the body (a 2 GB study takes long), and
     * the low-speed limit against stalls and trickled answers (http.h). */
    req.deadline_s = http_stow_deadline_s(dw->timeout_s, body_bytes);
    r = dicomweb_request(dw, &req, ret_reply);
    free(path);
    return r;
}

int dicomweb_search(struct dicomweb *dw, const char *path_and_query,
                    struct dicomweb_reply *ret_reply)
{
    struct dicomweb_request req = {
        .path = path_and_query,
        .accept = "application/dicom+json",
        .cap_is_error = true,
    };

    return dicomweb_request(dw, &req, ret_reply);
}

int dicomweb_probe(struct dicomweb *dw, struct dicomweb_reply *ret_reply)
{
    int r = dicomweb_search(dw, "/studies?limit=1", ret_reply);

    /* Only the status matters here. */
    free(ret_reply->body);
    ret_reply->body = NULL;
    ret_reply->body_len = 0;
    return r;
}
