/* SPDX-License-Identifier: Apache-2.0 */
/*
 * credential - see credential.h; also the cred__ helpers of cred_int.h.
 */
#include "credential.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "base/util.h"
#include "cred_int.h"

void cred__free_secret(char *s)
{
    if (s == NULL)
        return;
    explicit_bzero(s, strlen(s));
    free(s);
}

void cred__free_secret_n(void *p, size_t len)
{
    if (p == NULL)
        return;
    explicit_bzero(p, len);
    free(p);
}

void cred_token_free(struct cred_token *token)
{
    if (token == NULL)
        return;
    cred__free_secret(token->access_token);
    token->access_token = NULL;
    token->expires_in_s = -1;
}

int cred__read_file(const char *path, size_t max, char **ret_data,
                    size_t *ret_len, char *err, size_t err_len)
{
    struct stat st;
    char *data = NULL;
    size_t len = 0;
    int fd;
    int r;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        r = -errno;
        util_err(err, err_len, "cannot open '%s': %s", path, strerror(-r));
        return r;
    }
    if (fstat(fd, &st) < 0) {
        r = -errno;
        util_err(err, err_len, "fstat() '%s' failed: %s", path, strerror(-r));
        goto out_close;
    }
    if (!S_ISREG(st.st_mode)) {
        util_err(err, err_len, "'%s' is not a regular file", path);
        r = -EINVAL;
        goto out_close;
    }
    if ((uint64_t)st.st_size > max) {
        util_err(err, err_len, "'%s' is %lld bytes, more than %zu", path,
                 (long long)st.st_size, max);
        r = -EFBIG;
        goto out_close;
    }
    /* Read up to one byte more than allowed: the file may have grown. */
    data = malloc(max + 2);
    if (data == NULL) {
        r = -ENOMEM;
        goto out_close;
    }
    for (;;) {
        ssize_t n = read(fd, data + len, max + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = -errno;
            util_err(err, err_len, "read() '%s' failed: %s", path,
                     strerror(-r));
            goto out_free;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > max) {
            util_err(err, err_len, "'%s' is more than %zu bytes", path, max);
            r = -EFBIG;
            goto out_free;
        }
    }
    if (len == 0) {
        util_err(err, err_len, "'%s' is empty", path);
        r = -ENODATA;
        goto out_free;
    }
    data[len] = '\0';
    *ret_data = data;
    *ret_len = len;
    data = NULL;
    r = 0;
out_free:
    cred__free_secret_n(data, max + 2);
out_close:
    (void)close(fd);
    return r;
}

static const char cred_b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

char *cred__base64url(const unsigned char *data, size_t len)
{
    char *out = malloc((len + 2) / 3 * 4 + 1);
    size_t n = 0;
    size_t i;

    if (out == NULL)
        return NULL;
    for (i = 0; i + 2 < len; i += 3) {
        uint32_t v =
            (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        out[n++] = cred_b64url[v >> 18 & 63];
        out[n++] = cred_b64url[v >> 12 & 63];
        out[n++] = cred_b64url[v >> 6 & 63];
        out[n++] = cred_b64url[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)data[i] << 16;
        out[n++] = cred_b64url[v >> 18 & 63];
        out[n++] = cred_b64url[v >> 12 & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8;
        out[n++] = cred_b64url[v >> 18 & 63];
        out[n++] = cred_b64url[v >> 12 & 63];
        out[n++] = cred_b64url[v >> 6 & 63];
    }
    out[n] = '\0';
    return out;
}

char *cred__base64url_decode(const char *in, size_t len, bool lenient,
                             size_t *ret_len)
{
    char *out = malloc(len * 3 / 4 + 3);
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        const char *p = in[i] != '\0' ? strchr(cred_b64url, in[i]) : NULL;
        uint32_t v;

        if (p != NULL)
            v = (uint32_t)(p - cred_b64url);
        else if (lenient && (in[i] == '+' || in[i] == '/'))
            v = in[i] == '+' ? 62 : 63;
        else if (lenient && in[i] == '=')
            break;
        else {
            free(out);
            return NULL;
        }
        acc = acc << 6 | v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (char)(acc >> bits & 0xff);
        }
    }
    /* A lone trailing character carries fewer than 8 bits: not base64. */
    if (bits >= 6 && !lenient) {
        free(out);
        return NULL;
    }
    out[n] = '\0';
    if (ret_len != NULL)
        *ret_len = n;
    return out;
}

static bool cred_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
           c == '~';
}

/* Length of @s percent-encoded. */
static size_t cred_encoded_len(const char *s)
{
    size_t n = 0;

    for (; *s != '\0'; s++)
        n += cred_unreserved((unsigned char)*s) ? 1 : 3;
    return n;
}

static char *cred_encode_into(char *dst, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";

    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (cred_unreserved(c)) {
            *dst++ = (char)c;
        } else {
            *dst++ = '%';
            *dst++ = hex[c >> 4];
            *dst++ = hex[c & 15];
        }
    }
    return dst;
}

bool cred__form_add(char **form, const char *name, const char *value)
{
    size_t old = *form != NULL ? strlen(*form) : 0;
    size_t need =
        old + 1 + cred_encoded_len(name) + 1 + cred_encoded_len(value) + 1;
    char *grown = malloc(need);
    char *p;

    if (grown == NULL) {
        cred__free_secret(*form);
        *form = NULL;
        return false;
    }
    p = grown;
    if (old > 0) {
        memcpy(p, *form, old);
        p += old;
        *p++ = '&';
    }
    p = cred_encode_into(p, name);
    *p++ = '=';
    p = cred_encode_into(p, value);
    *p = '\0';
    /* Not realloc(): the old buffer may hold a secret, wipe it. */
    cred__free_secret(*form);
    *form = grown;
    return true;
}

int cred__token_set(struct cred_token *ret_token, const char *value,
                    int64_t lifetime)
{
    char *copy = strdup(value);

    if (copy == NULL)
        return -ENOMEM;
    ret_token->access_token = copy;
    ret_token->expires_in_s = lifetime;
    return 0;
}

void cred__oauth_error(const cJSON *root, const char **ret_error,
                       const char **ret_description)
{
    const cJSON *error = cJSON_GetObjectItemCaseSensitive(root, "error");
    const cJSON *description =
        cJSON_GetObjectItemCaseSensitive(root, "error_description");

    *ret_error = cJSON_IsString(error) ? error->valuestring : NULL;
    *ret_description =
        cJSON_IsString(description) ? description->valuestring : NULL;
}

bool cred__json_int(const cJSON *item, int64_t *ret)
{
    if (cJSON_IsNumber(item)) {
        double d = item->valuedouble;
        if (d != d || d > 9.2e18 || d < -9.2e18)
            return false;
        *ret = (int64_t)d;
        return true;
    }
    if (cJSON_IsString(item)) {
        const char *s = item->valuestring;
        char *end;
        long long v;

        if (s[0] == '\0' || !(s[0] == '-' || (s[0] >= '0' && s[0] <= '9')))
            return false;
        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno != 0 || *end != '\0')
            return false;
        *ret = v;
        return true;
    }
    return false;
}

char *cred__trim(char *s)
{
    size_t len = strlen(s);
    size_t start = 0;

    while (len > 0 && strchr(" \t\r\n\f\v", s[len - 1]) != NULL)
        len--;
    while (start < len && strchr(" \t\r\n\f\v", s[start]) != NULL)
        start++;
    memmove(s, s + start, len - start);
    s[len - start] = '\0';
    return s;
}

int cred_assertion_form_build(const struct cred_assertion_form *form,
                              char **ret_body)
{
    char *body = NULL;
    bool ok;

    if (form->client_id == NULL || form->client_id[0] == '\0' ||
        form->assertion == NULL || form->assertion[0] == '\0')
        return -EINVAL;
    ok = cred__form_add(&body, "grant_type", "client_credentials");
    ok = ok && cred__form_add(&body, "client_id", form->client_id);
    ok = ok && cred__form_add(&body, "client_assertion_type",
                              CRED_ASSERTION_TYPE_JWT);
    ok = ok && cred__form_add(&body, "client_assertion", form->assertion);
    if (ok && form->scope != NULL && form->scope[0] != '\0')
        ok = cred__form_add(&body, "scope", form->scope);
    if (ok && form->resource != NULL && form->resource[0] != '\0')
        ok = cred__form_add(&body, "resource", form->resource);
    if (!ok)
        return -ENOMEM;
    *ret_body = body;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Redaction                                                           */
/* ------------------------------------------------------------------ */

static bool cred_token_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '+' || c == '/' || c == '=' ||
           c == '_' || c == '~' || c == '.' || c == '-';
}

/* Whether the run @s (@len token characters) looks like a credential. */
static bool cred_looks_secret(const char *s, size_t len)
{
    size_t upper = 0;
    size_t lower = 0;
    size_t digit = 0;
    size_t hex_run = 0;
    size_t longest_hex = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (len >= 16 && i + 2 < len && s[i] == 'e' && s[i + 1] == 'y' &&
            s[i + 2] == 'J')
            return true;
        if (c >= 'A' && c <= 'Z')
            upper++;
        else if (c >= 'a' && c <= 'z')
            lower++;
        else if (c >= '0' && c <= '9')
            digit++;
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
            (c >= 'A' && c <= 'F')) {
            if (++hex_run > longest_hex)
                longest_hex = hex_run;
        } else {
            hex_run = 0;
        }
    }
    if (longest_hex >= 32)
        return true;
    return len >= 24 && upper >= 3 && lower >= 3 && digit >= 2;
}

void cred_redact_line(const char *text, size_t len, char *buf, size_t buf_len)
{
    static const char redacted[] = "[redacted]";
    size_t start = 0;
    size_t end;
    size_t out = 0;
    bool cut = false;

    if (buf_len == 0)
        return;
    buf[0] = '\0';
    if (text == NULL)
        return;
    /* The first line with something other than white space on it. */
    while (start < len && (text[start] == ' ' || text[start] == '\t' ||
                           text[start] == '\r' || text[start] == '\n'))
        start++;
    end = start;
    while (end < len && text[end] != '\n' && text[end] != '\r' &&
           text[end] != '\0')
        end++;
    for (size_t i = start; i < end && !cut;) {
        unsigned char c = (unsigned char)text[i];
        if (cred_token_char(c) && c != '=') {
            size_t j = i;
            /* '=' belongs to a run only as trailing base64 padding, so
             * "name=value" is judged as "name=" and "value". */
            while (j < end && cred_token_char((unsigned char)text[j]) &&
                   text[j] != '=')
                j++;
            while (j < end && text[j] == '=')
                j++;
            bool secret = cred_looks_secret(text + i, j - i);
            const char *piece = secret ? redacted : text + i;
            size_t piece_len = secret ? sizeof(redacted) - 1 : j - i;
            for (size_t k = 0; k < piece_len; k++) {
                if (out + 1 >= buf_len) {
                    cut = true;
                    break;
                }
                buf[out++] = piece[k];
            }
            i = j;
            continue;
        }
        if (out + 1 >= buf_len) {
            cut = true;
            break;
        }
        buf[out++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
        i++;
    }
    /* Trailing white space is noise in a log line. */
    while (out > 0 && buf[out - 1] == ' ')
        out--;
    buf[out] = '\0';
    /* Whether a run is a secret was judged on the whole run, so a cut
     * run leaks nothing that the whole one would not have. */
    if (cut && buf_len >= 4) {
        if (out > buf_len - 4)
            out = buf_len - 4;
        memcpy(buf + out, "...", 4);
    }
}
