/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cred_http - see cred_http.h.
 */
#include "cred_http.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "base/util.h"
#include "cred_int.h"

struct cred_http_buffer {
    char *data;
    size_t len;
    size_t cap;
    size_t max;
    bool overflow;
    bool failed;
    char *www_authenticate;
};

static size_t cred_http_on_body(char *data, size_t size, size_t nmemb,
                                void *arg)
{
    struct cred_http_buffer *buf = arg;
    size_t n = size * nmemb;

    if (buf->len + n > buf->max) {
        buf->overflow = true;
        return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
    }
    if (buf->len + n + 1 > buf->cap) {
        size_t cap = buf->cap > 0 ? buf->cap : 4096;
        char *grown;

        while (cap < buf->len + n + 1)
            cap *= 2;
        if (cap > buf->max + 1)
            cap = buf->max + 1;
        grown = malloc(cap);
        if (grown == NULL) {
            buf->failed = true;
            return 0;
        }
        /* Not realloc(): wipe the old copy of what may be a token. */
        if (buf->data != NULL) {
            memcpy(grown, buf->data, buf->len);
            cred__free_secret_n(buf->data, buf->cap);
        }
        buf->data = grown;
        buf->cap = cap;
    }
    memcpy(buf->data + buf->len, data, n);
    buf->len += n;
    buf->data[buf->len] = '\0';
    return n;
}

static size_t cred_http_on_header(char *data, size_t size, size_t nmemb,
                                  void *arg)
{
    static const char name[] = "www-authenticate:";
    struct cred_http_buffer *buf = arg;
    size_t n = size * nmemb;

    /* A new status line (after a 100 Continue): forget the old headers. */
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        free(buf->www_authenticate);
        buf->www_authenticate = NULL;
        return n;
    }
    if (buf->www_authenticate == NULL && n > sizeof(name) - 1 &&
        strncasecmp(data, name, sizeof(name) - 1) == 0 && n < 8192) {
        char *value = strndup(data + sizeof(name) - 1, n - (sizeof(name) - 1));
        if (value == NULL) {
            buf->failed = true;
            return 0;
        }
        buf->www_authenticate = cred__trim(value);
    }
    return n;
}

/* Wipes every header line (keys travel in Authorization) and frees. */
static void cred_http_free_headers(struct curl_slist *list)
{
    for (struct curl_slist *l = list; l != NULL; l = l->next)
        explicit_bzero(l->data, strlen(l->data));
    curl_slist_free_all(list);
}

int cred_http_perform(const struct cred_http_request *req,
                      struct cred_http_response *ret_response, char *err,
                      size_t err_len)
{
    struct cred_http_buffer buf;
    struct curl_slist *headers = NULL;
    unsigned timeout_s = req->timeout_s > 0 ? req->timeout_s : 30;
    long status = 0;
    CURLcode rc;
    CURL *curl;
    int r;

    if (req->url == NULL || req->url[0] == '\0')
        return -EINVAL;
    memset(&buf, 0, sizeof(buf));
    buf.max = req->max_body > 0 ? req->max_body : CRED_HTTP_MAX_BODY;
    curl = curl_easy_init();
    if (curl == NULL)
        return -ENOMEM;
    for (const char *const *h = req->headers; h != NULL && *h != NULL; h++) {
        struct curl_slist *grown = curl_slist_append(headers, *h);
        if (grown == NULL) {
            r = -ENOMEM;
            goto out;
        }
        headers = grown;
    }
    if (req->form != NULL) {
        struct curl_slist *grown = curl_slist_append(
            headers, "Content-Type: application/x-www-form-urlencoded");
        /* No "Expect: 100-continue" round trip for a form. */
        if (grown != NULL) {
            headers = grown;
            grown = curl_slist_append(headers, "Expect:");
        }
        if (grown == NULL) {
            r = -ENOMEM;
            goto out;
        }
        headers = grown;
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, req->form);
    }
    curl_easy_setopt(curl, CURLOPT_URL, req->url);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, (long)timeout_s);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, (long)timeout_s);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, cred_http_on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &buf);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, cred_http_on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &buf);
    if (req->no_proxy)
        curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    if (req->ca_file != NULL && req->ca_file[0] != '\0')
        curl_easy_setopt(curl, CURLOPT_CAINFO, req->ca_file);

    rc = curl_easy_perform(curl);
    if (buf.failed) {
        r = -ENOMEM;
        goto out;
    }
    if (buf.overflow) {
        util_err(err, err_len, "the answer of %s is larger than %zu bytes",
                 req->url, buf.max);
        r = -EAGAIN;
        goto out;
    }
    if (rc != CURLE_OK) {
        util_err(err, err_len, "%s: %s", req->url, curl_easy_strerror(rc));
        r = -EAGAIN;
        goto out;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    memset(ret_response, 0, sizeof(*ret_response));
    ret_response->status = status;
    if (buf.data == NULL) {
        buf.data = calloc(1, 1);
        buf.cap = 1;
        if (buf.data == NULL) {
            r = -ENOMEM;
            goto out;
        }
    }
    ret_response->body = buf.data;
    ret_response->body_len = buf.len;
    ret_response->www_authenticate = buf.www_authenticate;
    buf.data = NULL;
    buf.www_authenticate = NULL;
    r = 0;
out:
    cred__free_secret_n(buf.data, buf.cap);
    free(buf.www_authenticate);
    cred_http_free_headers(headers);
    curl_easy_cleanup(curl);
    return r;
}

void cred_http_response_free(struct cred_http_response *response)
{
    if (response == NULL)
        return;
    cred__free_secret_n(response->body, response->body_len);
    free(response->www_authenticate);
    memset(response, 0, sizeof(*response));
}
