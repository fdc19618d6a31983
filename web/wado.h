/* SPDX-License-Identifier: Apache-2.0 */
/*
 * wado - WADO-RS retrieve of whole instances (PS3.18 10.4), streamed:
 * one GET of a study, a series or an instance with
 *   Accept: multipart/related; type="application/dicom"; transfer-syntax=*
 * whose multipart body is parsed as it arrives (multipart.h) and written
 * part by part into files (partfile.h), never held in memory. The
 * transfer pauses (CURL_WRITEFUNC_PAUSE) while the sink is over its byte
 * budget and resumes as soon as the consumer releases files (the sink's
 * waker wakes the transfer loop: no polling).
 *
 * "transfer-syntax=*" asks for the instances as stored: Azure answers 406
 * to anything else for a study or a series, and transcodes a single
 * instance only (PS3.18 8.7.3.5.2; protocol-facts-2.md 2.4). A caller
 * that needs an uncompressed copy of one instance may ask for a UID.
 *
 * Answers: 200 (and 206, which servers may send when only part of the
 * target could be returned: the caller compares what arrived with what it
 * listed) are read as multipart/related of application/dicom parts; a
 * single-part application/dicom answer is taken as one part. Parts with
 * another Content-Type make the fetch fail (WADO_BAD_BODY). Other
 * statuses are classified below; the token (401) and permission (403)
 * logic and any replay belong to the caller, which passes the bearer
 * token in.
 *
 * Typical use (C-MOVE/C-GET): wado_fetch() runs on a fetch thread; its
 * sink's on_file() queues each file for the association thread, which
 * sends it (C-STORE), removes it and calls partfile_release(); a budget of
 * retrieve.max_temp_mb bounds what is fetched ahead, so fetching and
 * sending overlap.
 *
 * What was handed to the sink before a failure is complete (each file a
 * whole part ending at its delimiter): the consumer may keep it and count
 * the rest as not received.
 *
 * Thread safety: a struct wado_client belongs to one thread at a time
 * (it owns one libcurl easy handle and one multi handle);
 * curl_global_init() must have run first. wado_url() is reentrant.
 * Library code: never logs; errors come back in the result.
 */
#ifndef STOWBRIDGE_WADO_H
#define STOWBRIDGE_WADO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct partfile_sink;
struct wado_client;

/* The Accept header value sent when no transfer syntax is asked for. */
#define WADO_ACCEPT_ANY \
    "multipart/related; type=\"application/dicom\"; transfer-syntax=*"

/* What kind of failure a fetch met; the caller decides what to do. */
enum wado_failure {
    WADO_OK = 0,
    WADO_TRANSPORT,      /* no HTTP answer, or it stalled: connect, DNS,
                            TLS, reset, low-speed timeout; retry later */
    WADO_UNAUTHORIZED,   /* 401: refresh the token and replay once */
    WADO_FORBIDDEN,      /* 403: the identity may not read */
    WADO_NOT_FOUND,      /* 404: no such study, series or instance */
    WADO_NOT_ACCEPTABLE, /* 406: the server will not send this form */
    WADO_SERVER_ERROR,   /* 5xx: retry later (see retry_after_s) */
    WADO_HTTP_ERROR,     /* any other status than 200 and 206 */
    WADO_BAD_BODY,       /* a 200 body that is not what was asked for */
    WADO_TRUNCATED,      /* the body ended before the close delimiter */
    WADO_CANCELLED,      /* the cancel callback said so */
    WADO_LOCAL,          /* our side: disk, memory, the consumer */
};

/* A short name for @failure ("truncated", "not-acceptable", ...). */
const char *wado_failure_name(enum wado_failure failure);

struct wado_params {
    const char *base_url;       /* DICOMweb root, e.g. https://.../v2 */
    const char *ca_file;        /* NULL: the system's CA store */
    unsigned connect_timeout_s; /* 0: 30 */
    /* Abort when less than 1 byte/s arrived for this long (time spent
     * paused for the budget does not count; libcurl averages the speed
     * over about 5 s, so a stall is seen up to that much later). 0: 60. */
    unsigned stall_timeout_s;
};

struct wado_request {
    const char *study_uid;       /* required */
    const char *series_uid;      /* NULL: the whole study */
    const char *instance_uid;    /* NULL: the whole series */
    const char *transfer_syntax; /* NULL: "*" (as stored) */
    const char *bearer;          /* NULL: no Authorization header */
    /* Polled during the transfer (at least once a second, paused or
     * not); true aborts it with WADO_CANCELLED. NULL: never. */
    bool (*cancelled)(void *ctx);
    void *cancel_ctx;
};

struct wado_result {
    enum wado_failure failure;
    long http_status;       /* 0 when no HTTP answer arrived */
    char content_type[256]; /* of the answer; "" when none */
    unsigned parts;         /* files handed to the sink */
    uint64_t part_bytes;    /* their total size */
    unsigned pauses;        /* times the transfer waited for the budget */
    int64_t retry_after_s;  /* Retry-After of the answer; -1: none */
    char error[512];        /* why it failed; "" on success */
};

/*
 * Builds {base_url}/studies/{study}[/series/{series}[/instances/{inst}]]
 * into *@ret_url (the caller frees it). Each UID is checked first (PS3.5
 * 9.1: 1..64 digits and dots, no empty or zero-padded component) and then
 * percent-encoded as a path segment (a valid UID needs no escape). An
 * instance needs a series. Trailing slashes of @base_url are dropped.
 * Returns 0, -EINVAL (reason in @err) or -ENOMEM.
 */
int wado_url(const char *base_url, const char *study, const char *series,
             const char *instance, char **ret_url, char *err, size_t err_len);

/*
 * Formats the Accept header value for @transfer_syntax (NULL: "*") into
 * @buf: WADO_ACCEPT_ANY, or the same with the UID. Returns 0, -EINVAL for
 * a transfer syntax that is not a UID, or -ENAMETOOLONG.
 */
int wado_accept(const char *transfer_syntax, char *buf, size_t len);

/* Creates a client; strings are copied. NULL on out-of-memory. */
struct wado_client *wado_client_new(const struct wado_params *params);

/* Accepts NULL. */
void wado_client_free(struct wado_client *client);

/*
 * Retrieves @request into @sink. Returns 0 when every part arrived and
 * the close delimiter was seen (ret_result->parts may be 0), or a
 * negative errno, with ret_result->failure and ->error saying why:
 *   -EINVAL       a bad UID or transfer syntax (nothing was sent)
 *   -ECONNREFUSED, -ETIMEDOUT, -ECONNABORTED   WADO_TRANSPORT
 *   -EACCES       WADO_UNAUTHORIZED, WADO_FORBIDDEN
 *   -ENOENT       WADO_NOT_FOUND
 *   -EPROTO       WADO_NOT_ACCEPTABLE, WADO_SERVER_ERROR, WADO_HTTP_ERROR
 *   -EBADMSG      WADO_BAD_BODY
 *   -ENODATA      WADO_TRUNCATED
 *   -ECANCELED    WADO_CANCELLED
 *   other         WADO_LOCAL (-ENOSPC, -ENOMEM, the consumer's code)
 * The sink's open part, if any, is removed on failure. @ret_result is
 * always filled.
 */
int wado_fetch(struct wado_client *client, const struct wado_request *request,
               struct partfile_sink *sink, struct wado_result *ret_result);

#ifdef __cplusplus
}
#endif

#endif
