/* SPDX-License-Identifier: Apache-2.0 */
/*
 * http - see http.h.
 */
#include "http.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* X509 verify results (OpenSSL's X509_V_ERR_*, x509_vfy.h), as libcurl
 * reports them through CURLINFO_SSL_VERIFYRESULT. */
#define HTTP_X509_OK 0
#define HTTP_X509_UNABLE_TO_GET_ISSUER_CERT 2
#define HTTP_X509_CERT_NOT_YET_VALID 9
#define HTTP_X509_CERT_HAS_EXPIRED 10
#define HTTP_X509_DEPTH_ZERO_SELF_SIGNED_CERT 18
#define HTTP_X509_SELF_SIGNED_CERT_IN_CHAIN 19
#define HTTP_X509_UNABLE_TO_GET_ISSUER_CERT_LOCALLY 20
#define HTTP_X509_UNABLE_TO_VERIFY_LEAF_SIGNATURE 21
#define HTTP_X509_HOSTNAME_MISMATCH 62

long http_stow_deadline_s(unsigned timeout_s, uint64_t body_bytes)
{
    uint64_t s = 2 * (uint64_t)timeout_s +
                 (body_bytes + HTTP_MIN_RATE_BPS - 1) / HTTP_MIN_RATE_BPS;

    return s > (uint64_t)LONG_MAX / 1000 ? LONG_MAX / 1000 : (long)s;
}

void http_setup(CURL *curl, unsigned timeout_s, long deadline_s,
                const char *ca_file, char *errbuf)
{
    errbuf[0] = '\0';
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, (long)timeout_s);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, HTTP_LOW_SPEED_BPS);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, (long)timeout_s);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, deadline_s > 0 ? deadline_s : 0L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    if (ca_file != NULL)
        curl_easy_setopt(curl, CURLOPT_CAINFO, ca_file);
}

bool http_is_tls_failure(CURLcode rc)
{
    return rc == CURLE_PEER_FAILED_VERIFICATION ||
           rc == CURLE_SSL_CACERT_BADFILE || rc == CURLE_SSL_CONNECT_ERROR ||
           rc == CURLE_SSL_ISSUER_ERROR;
}

/* The cause and the fix of a certificate the peer failed verification
 * with, by X509 verify result @verify. */
static const char *http_tls_cause(long verify)
{
    switch (verify) {
    case HTTP_X509_DEPTH_ZERO_SELF_SIGNED_CERT:
        return "the server's certificate is self-signed; fix: put it, or "
               "the CA that should issue it, as PEM in upload.ca_file";
    case HTTP_X509_SELF_SIGNED_CERT_IN_CHAIN:
        return "the server's chain ends in a CA not trusted here; fix: put "
               "that CA's certificate as PEM in upload.ca_file";
    case HTTP_X509_UNABLE_TO_GET_ISSUER_CERT:
    case HTTP_X509_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case HTTP_X509_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        return "the server's certificate is issued by an unknown CA; fix: "
               "put that CA's certificate as PEM in upload.ca_file";
    case HTTP_X509_CERT_HAS_EXPIRED:
        return "the server's certificate has expired; fix: the server needs "
               "a renewed one (upload.ca_file cannot help), or this clock "
               "is wrong";
    case HTTP_X509_CERT_NOT_YET_VALID:
        return "the server's certificate is not valid yet; fix: check this "
               "machine's clock";
    case HTTP_X509_HOSTNAME_MISMATCH:
        return "the server's certificate is not for the host name in the "
               "URL; fix: use a name it names in upload.url or "
               "auth.token_url, or a certificate for this name";
    default:
        return "the server's certificate failed verification; fix: for a "
               "private CA, put its certificate as PEM in upload.ca_file";
    }
}

void http_describe(CURL *curl, CURLcode rc, const char *errbuf, char *out,
                   size_t len)
{
    const char *detail =
        errbuf != NULL && errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);
    long verify = HTTP_X509_OK;
    long cause;

    if (len == 0)
        return;
    if (rc == CURLE_PEER_FAILED_VERIFICATION) {
        (void)curl_easy_getinfo(curl, CURLINFO_SSL_VERIFYRESULT, &verify);
        /* libcurl checks the host name itself, after OpenSSL accepted
         * the chain, and then reports X509_V_ERR_UNSPECIFIED (1) or OK:
         * its message says which ("... target host name '...'"). */
        cause = strstr(detail, "target host name") != NULL
                    ? HTTP_X509_HOSTNAME_MISMATCH
                    : verify;
        snprintf(out, len, "TLS: %s (%s; X509 verify result %ld)",
                 http_tls_cause(cause), detail, verify);
    } else if (rc == CURLE_SSL_CACERT_BADFILE) {
        snprintf(out, len,
                 "TLS: the CA file in upload.ca_file cannot be "
                 "read as PEM certificates (%s)",
                 detail);
    } else if (rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_SSL_ISSUER_ERROR) {
        snprintf(out, len, "TLS: the handshake failed (%s)", detail);
    } else if (detail != curl_easy_strerror(rc)) {
        snprintf(out, len, "%s (%s)", curl_easy_strerror(rc), detail);
    } else {
        snprintf(out, len, "%s", detail);
    }
}

bool http_header_value(const char *line, size_t n, const char *name, char *out,
                       size_t out_len)
{
    size_t name_len = strlen(name);
    size_t start;
    size_t end;

    if (n <= name_len || line[name_len] != ':' ||
        strncasecmp(line, name, name_len) != 0 || out_len == 0)
        return false;
    start = name_len + 1;
    end = n;
    while (start < end && (line[start] == ' ' || line[start] == '\t'))
        start++;
    while (end > start && (line[end - 1] == '\r' || line[end - 1] == '\n' ||
                           line[end - 1] == ' ' || line[end - 1] == '\t'))
        end--;
    if (end - start >= out_len)
        end = start + out_len - 1;
    memcpy(out, line + start, end - start);
    out[end - start] = '\0';
    return true;
}

bool http_is_redirect(long status)
{
    return status == 301 || status == 302 || status == 303 || status == 307 ||
           status == 308;
}
