/*
 * stow - see stow.h.
 *
 * DICOM JSON (PS3.18 F.2): the response is an object keyed by tags
 * "GGGGEEEE"; a sequence is {"vr": "SQ", "Value": [item, ...]}, an item an
 * object of the same kind; a UI value is {"vr": "UI", "Value": ["1.2.3"]},
 * a US value {"vr": "US", "Value": [45070]}.
 */
#include "stow.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <strings.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http.h"
#include "json.h"

#define STOW_TAG_FAILED_SOP_SEQUENCE "00081198"
#define STOW_TAG_REFERENCED_SOP_SEQUENCE "00081199"
#define STOW_TAG_REFERENCED_SOP_INSTANCE_UID "00081155"
#define STOW_TAG_FAILURE_REASON "00081197"
#define STOW_TAG_WARNING_REASON "00081196"

static void stow_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void stow_err(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || err_len == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

enum stow_request_action stow_request_action(long status)
{
    switch (status) {
    case 200:
    case 202:
    case 409:
        return STOW_READ_BODY;
    case 400:
    case 413:
    case 415:
        return STOW_SPLIT_BATCH;
    case 401:
        return STOW_REFRESH_TOKEN;
    case 403:
        return STOW_FORBIDDEN;
    default:
        return http_is_redirect(status) ? STOW_REDIRECTED : STOW_RETRY_LATER;
    }
}

enum stow_outcome stow_failure_outcome(uint16_t reason)
{
    if (reason == 0xB00E)
        return STOW_DELIVERED;            /* already exists */
    if (reason == 0xB00F || (reason & 0xFF00) == 0xA700 || reason == 0x0110)
        return STOW_RETRY;                /* pending, resources, processing */
    return STOW_REJECTED;
}

const char *stow_reason_text(uint16_t reason)
{
    switch (reason) {
    case 0x0000:
        return "none";
    case 0x0110:
        return "processing failure";
    case 0x0111:
        return "duplicate SOP Instance";
    case 0x0117:
        return "invalid SOP Instance";
    case 0x0120:
        return "missing attribute";
    case 0x0121:
        return "missing attribute value";
    case 0x0122:
        return "SOP Class not supported";
    case 0x0124:
        return "not authorized";
    case 0xB000:
        return "coercion of data elements";
    case 0xB006:
        return "elements discarded";
    case 0xB007:
        return "data set does not match SOP Class";
    case 0xB00E:
        return "instance already exists";
    case 0xB00F:
        return "instance pending (being stored)";
    case 0xC122:
        return "Referenced Transfer Syntax not supported / UID mismatch";
    default:
        break;
    }
    switch (reason & 0xFF00) {
    case 0xA700:
        return "out of resources";
    case 0xA900:
        return "data set does not match SOP Class";
    case 0xC000:
    case 0xC100:
    case 0xC200:
    case 0xC300:
    case 0xC400:
    case 0xC500:
    case 0xC600:
    case 0xC700:
    case 0xC800:
    case 0xC900:
    case 0xCA00:
    case 0xCB00:
    case 0xCC00:
    case 0xCD00:
    case 0xCE00:
    case 0xCF00:
        return "cannot understand";
    default:
        return "unknown reason";
    }
}

/* The first string of a UI element, or NULL. */
static const char *stow_first_string(const cJSON *item, const char *tag)
{
    const cJSON *elem = cJSON_GetObjectItemCaseSensitive(item, tag);
    const cJSON *value = cJSON_GetObjectItemCaseSensitive(elem, "Value");
    const cJSON *first = cJSON_GetArrayItem(value, 0);

    return cJSON_IsString(first) ? first->valuestring : NULL;
}

/* The first number of a US element as a code; false if absent or bad. */
static bool stow_first_code(const cJSON *item, const char *tag,
                            uint16_t *ret_code)
{
    const cJSON *elem = cJSON_GetObjectItemCaseSensitive(item, tag);
    const cJSON *value = cJSON_GetObjectItemCaseSensitive(elem, "Value");
    const cJSON *first = cJSON_GetArrayItem(value, 0);
    double v;

    if (!cJSON_IsNumber(first))
        return false;
    v = first->valuedouble;
    if (v < 0 || v > 65535 || v != (double)(uint16_t)v)
        return false;
    *ret_code = (uint16_t)v;
    return true;
}

/* Index of @uid in @sop_uids at or after @from, or -1. */
static long stow_find_from(const char *const *sop_uids, size_t count,
                           const char *uid, size_t from)
{
    for (size_t i = from; i < count; i++)
        if (strcmp(sop_uids[i], uid) == 0)
            return (long)i;
    return -1;
}

static long stow_find(const char *const *sop_uids, size_t count,
                      const char *uid)
{
    return stow_find_from(sop_uids, count, uid, 0);
}

/*
 * Applies the items of sequence @tag in @root to @results. @failed selects
 * the Failed SOP Sequence semantics. Returns 0 or -EBADMSG.
 */
static int stow_apply_sequence(const cJSON *root, const char *tag,
                               bool failed, const char *const *sop_uids,
                               size_t count,
                               struct stow_instance_result *results,
                               char *err, size_t err_len)
{
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(root, tag);
    const cJSON *items;
    const cJSON *item;

    if (seq == NULL)
        return 0;
    items = cJSON_GetObjectItemCaseSensitive(seq, "Value");
    if (!cJSON_IsObject(seq) || (items != NULL && !cJSON_IsArray(items))) {
        stow_err(err, err_len, "sequence %s is not a DICOM JSON sequence",
                 tag);
        return -EBADMSG;
    }
    cJSON_ArrayForEach(item, items) {
        const char *uid;
        uint16_t code = 0;
        long i;

        if (!cJSON_IsObject(item)) {
            stow_err(err, err_len, "an item of %s is not an object", tag);
            return -EBADMSG;
        }
        uid = stow_first_string(item, STOW_TAG_REFERENCED_SOP_INSTANCE_UID);
        if (uid == NULL) {
            stow_err(err, err_len,
                     "an item of %s has no ReferencedSOPInstanceUID "
                     "(0008,1155)", tag);
            return -EBADMSG;
        }
        /* The same instance may be in a batch twice (sent twice by the
         * modality): the answer speaks for every copy. */
        for (i = stow_find(sop_uids, count, uid); i >= 0;
             i = stow_find_from(sop_uids, count, uid, (size_t)i + 1)) {
            if (failed) {
                if (!stow_first_code(item, STOW_TAG_FAILURE_REASON, &code))
                    code = 0x0110;  /* failed, reason not given */
                results[i].outcome = stow_failure_outcome(code);
                results[i].reason = code;
            } else {
                /* The Failed SOP Sequence is applied after this one, so a
                 * UID listed in both counts as failed. */
                results[i].outcome = STOW_DELIVERED;
                results[i].reason =
                    stow_first_code(item, STOW_TAG_WARNING_REASON, &code)
                        ? code
                        : 0;
            }
        }
    }
    return 0;
}

int stow_parse_response(long http_status, const char *body, size_t body_len,
                        const char *const *sop_uids, size_t count,
                        struct stow_instance_result *ret_results, char *err,
                        size_t err_len)
{
    struct stow_instance_result *results;
    const cJSON *obj;
    cJSON *root = NULL;
    char why[128];
    bool blank = true;
    int r = 0;

    results = calloc(count > 0 ? count : 1, sizeof(*results));
    if (results == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < count; i++) {
        results[i].outcome = STOW_RETRY;
        results[i].reason = 0;
        results[i].http_status = http_status;
    }
    for (size_t i = 0; i < body_len && blank; i++)
        blank = body[i] == ' ' || body[i] == '\n' || body[i] == '\r' ||
                body[i] == '\t';
    if (blank) {
        if (http_status != 200) {
            stow_err(err, err_len, "HTTP %ld with an empty body", http_status);
            r = -EBADMSG;
            goto out;
        }
        for (size_t i = 0; i < count; i++)
            results[i].outcome = STOW_DELIVERED;
        memcpy(ret_results, results, count * sizeof(results[0]));
        goto out;
    }

    r = json_parse(body, body_len, &root, why, sizeof(why));
    if (r < 0) {
        stow_err(err, err_len, "the body is %s", why);
        goto out;
    }
    /* Servers answer an object; some wrap it in a one-element array. */
    obj = root;
    if (cJSON_IsArray(root) && cJSON_GetArraySize(root) == 1)
        obj = cJSON_GetArrayItem(root, 0);
    if (!cJSON_IsObject(obj)) {
        stow_err(err, err_len, "the body is not a DICOM JSON object");
        r = -EBADMSG;
        goto out;
    }
    r = stow_apply_sequence(obj, STOW_TAG_REFERENCED_SOP_SEQUENCE, false,
                            sop_uids, count, results, err, err_len);
    if (r == 0)
        r = stow_apply_sequence(obj, STOW_TAG_FAILED_SOP_SEQUENCE, true,
                                sop_uids, count, results, err, err_len);
    if (r == 0)
        memcpy(ret_results, results, count * sizeof(results[0]));
out:
    cJSON_Delete(root);
    free(results);
    return r;
}

/* ------------------------------------------------------------------ */
/* The request                                                         */
/* ------------------------------------------------------------------ */

struct stow_client {
    CURL *curl;
    char *base_url;
    char *ca_file;
    unsigned timeout_s;
    char errbuf[CURL_ERROR_SIZE];
    bool (*cancelled)(void *ctx);
    void *cancel_ctx;
};

static int stow_on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow,
                            curl_off_t ultotal, curl_off_t ulnow)
{
    struct stow_client *client = arg;

    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    return client->cancelled != NULL && client->cancelled(client->cancel_ctx)
               ? 1
               : 0;
}

struct stow_client *stow_client_new(const struct stow_params *params)
{
    struct stow_client *client = calloc(1, sizeof(*client));

    if (client == NULL)
        return NULL;
    client->curl = curl_easy_init();
    client->base_url = strdup(params->base_url);
    client->ca_file = params->ca_file != NULL ? strdup(params->ca_file) : NULL;
    client->timeout_s = params->timeout_s;
    client->cancelled = params->cancelled;
    client->cancel_ctx = params->cancel_ctx;
    if (client->curl == NULL || client->base_url == NULL ||
        (params->ca_file != NULL && client->ca_file == NULL)) {
        stow_client_free(client);
        return NULL;
    }
    /* Trailing slashes would make "//studies". */
    size_t n = strlen(client->base_url);
    while (n > 0 && client->base_url[n - 1] == '/')
        client->base_url[--n] = '\0';
    return client;
}

void stow_client_free(struct stow_client *client)
{
    if (client == NULL)
        return;
    if (client->curl != NULL)
        curl_easy_cleanup(client->curl);
    free(client->base_url);
    free(client->ca_file);
    free(client);
}

void stow_reply_free(struct stow_reply *reply)
{
    if (reply == NULL)
        return;
    free(reply->body);
    reply->body = NULL;
    reply->body_len = 0;
}

struct stow_sink {
    struct stow_reply *reply;
    size_t cap;
    bool overflow;
};

static size_t stow_on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct stow_sink *sink = arg;
    struct stow_reply *reply = sink->reply;
    size_t n = size * nmemb;

    if (reply->body_len + n > STOW_MAX_RESPONSE) {
        sink->overflow = true;
        return n;   /* keep reading, stop storing: the status still counts */
    }
    if (reply->body_len + n + 1 > sink->cap) {
        size_t cap = (reply->body_len + n + 1) * 2;
        char *grown = realloc(reply->body, cap);
        if (grown == NULL)
            return 0;   /* aborts the transfer: CURLE_WRITE_ERROR */
        reply->body = grown;
        sink->cap = cap;
    }
    memcpy(reply->body + reply->body_len, data, n);
    reply->body_len += n;
    reply->body[reply->body_len] = '\0';
    return n;
}

static size_t stow_on_header(char *data, size_t size, size_t nmemb, void *arg)
{
    struct stow_reply *reply = arg;
    size_t n = size * nmemb;
    static const char name[] = "retry-after:";
    static const char warning[] = "warning:";

    /* PS3.18 8.3.4.4: "Warning: 299 <service>: There are <n> additional
     * results that can be requested". */
    if (n > sizeof(warning) - 1 &&
        strncasecmp(data, warning, sizeof(warning) - 1) == 0 &&
        memmem(data, n, "additional results", 18) != NULL)
        reply->more_results = true;

    (void)http_header_value(data, n, "location", reply->location,
                            sizeof(reply->location));
    if (n > sizeof(name) - 1 && strncasecmp(data, name, sizeof(name) - 1) == 0) {
        char value[128];
        size_t len = n - (sizeof(name) - 1);
        if (len >= sizeof(value))
            len = sizeof(value) - 1;
        memcpy(value, data + sizeof(name) - 1, len);
        value[len] = '\0';
        value[strcspn(value, "\r\n")] = '\0';
        reply->retry_after_s = stow_parse_retry_after(value, (int64_t)time(NULL));
    }
    return n;
}

int64_t stow_parse_retry_after(const char *value, int64_t now_s)
{
    struct tm tm;
    const char *p = value;
    char *end;

    while (*p == ' ' || *p == '\t')
        p++;
    if (*p >= '0' && *p <= '9') {
        long long v = strtoll(p, &end, 10);
        while (*end == ' ' || *end == '\t')
            end++;
        if (*end != '\0' || v < 0)
            return -1;
        return v > 86400 ? 86400 : v;
    }
    /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT". */
    memset(&tm, 0, sizeof(tm));
    end = strptime(p, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (end == NULL)
        return -1;
    int64_t when = (int64_t)timegm(&tm);
    if (when <= now_s)
        return 0;
    return when - now_s > 86400 ? 86400 : when - now_s;
}

/* Appends "Authorization: Bearer ..." to @headers unless @bearer_token is
 * NULL; the header text is kept in *@ret_auth (wiped by stow_free_auth()).
 * Returns 0 or -ENOMEM. */
static int stow_add_auth(struct curl_slist **headers, const char *bearer_token,
                         char **ret_auth)
{
    *ret_auth = NULL;
    if (bearer_token == NULL)
        return 0;
    if (asprintf(ret_auth, "Authorization: Bearer %s", bearer_token) < 0) {
        *ret_auth = NULL;
        return -ENOMEM;
    }
    *headers = curl_slist_append(*headers, *ret_auth);
    return 0;
}

static void stow_free_auth(char *auth)
{
    if (auth != NULL) {
        explicit_bzero(auth, strlen(auth));
        free(auth);
    }
}

/* Resets the client's handle and sets what every request shares: URL,
 * headers, the body and header sinks, and the limits of http.h with the
 * whole-request @deadline_s. */
static CURL *stow_prepare(struct stow_client *client, const char *url,
                          struct curl_slist *headers, struct stow_sink *sink,
                          struct stow_reply *reply, long deadline_s)
{
    CURL *c = client->curl;

    curl_easy_reset(c);
    http_setup(c, client->timeout_s, deadline_s, client->ca_file,
               client->errbuf);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, stow_on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, sink);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, stow_on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, reply);
    return c;
}

/* A failed transfer as a negative errno. */
static int stow_curl_errno(CURLcode rc)
{
    return rc == CURLE_ABORTED_BY_CALLBACK ? -ECANCELED
           : rc == CURLE_OUT_OF_MEMORY    ? -ENOMEM
           : rc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT
           : rc == CURLE_COULDNT_CONNECT  ? -ECONNREFUSED
           : rc == CURLE_READ_ERROR       ? -EIO
                                          : -ECONNABORTED;
}

int stow_post(struct stow_client *client, const char *study_uid,
              const char *const *paths, size_t count,
              const char *bearer_token, struct stow_reply *ret_reply)
{
    struct stow_sink sink = { ret_reply, 0, false };
    struct curl_slist *headers = NULL;
    curl_mime *mime = NULL;
    char *url = NULL;
    char *auth = NULL;
    uint64_t body_bytes = 0;
    CURLcode rc;
    int r = 0;

    memset(ret_reply, 0, sizeof(*ret_reply));
    ret_reply->retry_after_s = -1;

    /* Every file must be readable before anything is sent; their sizes
     * give the deadline. */
    for (size_t i = 0; i < count; i++) {
        struct stat st;
        int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            r = -errno;
            snprintf(ret_reply->error, sizeof(ret_reply->error),
                     "open() '%s' failed: %s", paths[i], strerror(errno));
            return r;
        }
        if (fstat(fd, &st) == 0)
            body_bytes += (uint64_t)st.st_size;
        (void)close(fd);
    }

    if (asprintf(&url, "%s/studies/%s", client->base_url, study_uid) < 0) {
        url = NULL;
        r = -ENOMEM;
        goto out;
    }
    mime = curl_mime_init(client->curl);
    if (mime == NULL) {
        r = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < count; i++) {
        curl_mimepart *part = curl_mime_addpart(mime);
        /* filedata streams the file at send time; it also sets a file
         * name, which would add a Content-Disposition: drop it. The type
         * must be exactly application/dicom (Azure answers 415 to any
         * parameter). */
        if (part == NULL || curl_mime_filedata(part, paths[i]) != CURLE_OK ||
            curl_mime_filename(part, NULL) != CURLE_OK ||
            curl_mime_type(part, "application/dicom") != CURLE_OK) {
            r = -ENOMEM;
            goto out;
        }
    }
    /* libcurl keeps this type and appends "; boundary=..." (random). */
    headers = curl_slist_append(headers, "Content-Type: multipart/related; "
                                         "type=\"application/dicom\"");
    headers = curl_slist_append(headers, "Accept: application/dicom+json");
    /* Some servers never answer 100-continue: each request would stall. */
    headers = curl_slist_append(headers, "Expect:");
    if (stow_add_auth(&headers, bearer_token, &auth) < 0 || headers == NULL) {
        r = -ENOMEM;
        goto out;
    }

    /* A deadline that grows with the body (a 2 GB study takes long), and
     * the low-speed limit against stalls and trickled answers (http.h). */
    CURL *c = stow_prepare(client, url, headers, &sink, ret_reply,
                           http_stow_deadline_s(client->timeout_s,
                                                body_bytes));
    curl_easy_setopt(c, CURLOPT_MIMEPOST, mime);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, stow_on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, client);

    rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
        http_describe(c, rc, client->errbuf, ret_reply->error,
                      sizeof(ret_reply->error));
        ret_reply->http_status = 0;
        r = stow_curl_errno(rc);
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &ret_reply->http_status);
    if (sink.overflow)
        snprintf(ret_reply->error, sizeof(ret_reply->error),
                 "response body over %d bytes, cut", STOW_MAX_RESPONSE);
    if (ret_reply->body == NULL) {
        ret_reply->body = strdup("");
        if (ret_reply->body == NULL)
            r = -ENOMEM;
    }
out:
    stow_free_auth(auth);
    curl_slist_free_all(headers);
    curl_mime_free(mime);
    free(url);
    return r;
}

int stow_get(struct stow_client *client, const char *path_and_query,
             const char *bearer_token, struct stow_reply *ret_reply)
{
    struct stow_sink sink = { ret_reply, 0, false };
    struct curl_slist *headers = NULL;
    char *url = NULL;
    char *auth = NULL;
    CURLcode rc;
    int r = 0;

    memset(ret_reply, 0, sizeof(*ret_reply));
    ret_reply->retry_after_s = -1;
    if (asprintf(&url, "%s%s", client->base_url, path_and_query) < 0)
        return -ENOMEM;
    headers = curl_slist_append(headers, "Accept: application/dicom+json");
    if (stow_add_auth(&headers, bearer_token, &auth) < 0 || headers == NULL) {
        r = -ENOMEM;
        goto out;
    }
    CURL *c = stow_prepare(client, url, headers, &sink, ret_reply,
                           (long)client->timeout_s);
    rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
        http_describe(c, rc, client->errbuf, ret_reply->error,
                      sizeof(ret_reply->error));
        r = stow_curl_errno(rc);
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &ret_reply->http_status);
    if (sink.overflow) {
        snprintf(ret_reply->error, sizeof(ret_reply->error),
                 "response body over %d bytes", STOW_MAX_RESPONSE);
        r = -EMSGSIZE;
        goto out;
    }
    if (ret_reply->body == NULL) {
        ret_reply->body = strdup("");
        if (ret_reply->body == NULL)
            r = -ENOMEM;
    }
out:
    stow_free_auth(auth);
    curl_slist_free_all(headers);
    free(url);
    return r;
}

int stow_probe(struct stow_client *client, const char *bearer_token,
               struct stow_reply *ret_reply)
{
    int r = stow_get(client, "/studies?limit=1", bearer_token, ret_reply);

    /* Only the status matters here. */
    free(ret_reply->body);
    ret_reply->body = NULL;
    ret_reply->body_len = 0;
    return r;
}
