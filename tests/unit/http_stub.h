/* SPDX-License-Identifier: Apache-2.0 */
/*
 * http_stub - a tiny HTTP/1.1 server for unit tests, on 127.0.0.1 and a
 * random port, in a thread of the test process. For every request it
 * reads the headers and a Content-Length body, keeps a copy, asks the
 * test's callback what to answer, answers and closes the connection.
 * A callback returning NULL drops the connection without an answer.
 */
#ifndef STOWBRIDGE_HTTP_STUB_H
#define STOWBRIDGE_HTTP_STUB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct http_stub;

/* Returns the raw HTTP answer for @request (headers and body), or NULL. */
typedef const char *(*http_stub_reply_fn)(void *ctx, const char *request,
                                          size_t header_len,
                                          size_t request_len);

struct http_stub {
    int listen_fd;
    int port;
    http_stub_reply_fn reply;
    void *ctx;
    pthread_t thread;
    atomic_bool stop;
    atomic_int requests; /* answered or dropped so far */
    pthread_mutex_t lock;
    char *last_request; /* under lock; NUL-terminated */
    size_t last_len;
    size_t last_header_len;
};

/* Starts serving; returns 0 or -1. */
int http_stub_start(struct http_stub *stub, http_stub_reply_fn reply,
                    void *ctx);

/* Stops the thread and closes the socket; the last request stays. */
void http_stub_stop(struct http_stub *stub);

/* Frees the kept request. */
void http_stub_free(struct http_stub *stub);

/* Copies header @name of the last request into @buf; NULL if absent. */
char *http_stub_header(struct http_stub *stub, const char *name, char *buf,
                       size_t len);

#endif
