/* SPDX-License-Identifier: Apache-2.0 */
/*
 * http_stub - see http_stub.h.
 */
#include "http_stub.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* Reads one request from @fd into a new buffer; NULL if none came. */
static char *read_request(int fd, size_t *ret_len, size_t *ret_header_len)
{
    size_t cap = 1 << 16;
    size_t len = 0;
    size_t header_len = 0;
    size_t content_length = 0;
    char *buf = malloc(cap);

    if (buf == NULL)
        return NULL;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            char *grown = realloc(buf, cap * 2);
            if (grown == NULL)
                break;
            buf = grown;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, 4096);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        if (header_len == 0) {
            char *end = strstr(buf, "\r\n\r\n");
            if (end == NULL)
                continue;
            header_len = (size_t)(end - buf) + 4;
            char *cl = strcasestr(buf, "\r\nContent-Length:");
            if (cl != NULL && cl < end)
                content_length = strtoul(cl + 17, NULL, 10);
        }
        if (len >= header_len + content_length)
            break;
    }
    if (header_len == 0) {
        free(buf);
        return NULL;
    }
    *ret_len = len;
    *ret_header_len = header_len;
    return buf;
}

static void *serve(void *arg)
{
    struct http_stub *stub = arg;

    while (!atomic_load(&stub->stop)) {
        struct pollfd pfd = { stub->listen_fd, POLLIN, 0 };
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        int fd = accept(stub->listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        size_t len = 0;
        size_t header_len = 0;
        char *request = read_request(fd, &len, &header_len);
        if (request != NULL) {
            const char *answer =
                stub->reply(stub->ctx, request, header_len, len);
            /* Kept before the answer goes out: a client that has its
             * answer finds its request here. */
            pthread_mutex_lock(&stub->lock);
            free(stub->last_request);
            stub->last_request = request;
            stub->last_len = len;
            stub->last_header_len = header_len;
            pthread_mutex_unlock(&stub->lock);
            /* Counted before the answer too: a client that has its
             * answer must see its request counted. */
            atomic_fetch_add(&stub->requests, 1);
            if (answer != NULL)
                (void)!write(fd, answer, strlen(answer));
        }
        close(fd);
    }
    return NULL;
}

int http_stub_start(struct http_stub *stub, http_stub_reply_fn reply, void *ctx)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof(addr);
    int one = 1;

    memset(stub, 0, sizeof(*stub));
    stub->reply = reply;
    stub->ctx = ctx;
    pthread_mutex_init(&stub->lock, NULL);
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    stub->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(stub->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(stub->listen_fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        listen(stub->listen_fd, 16) < 0 ||
        getsockname(stub->listen_fd, (struct sockaddr *)&addr, &len) < 0)
        return -1;
    stub->port = ntohs(addr.sin_port);
    return pthread_create(&stub->thread, NULL, serve, stub) == 0 ? 0 : -1;
}

void http_stub_stop(struct http_stub *stub)
{
    atomic_store(&stub->stop, true);
    pthread_join(stub->thread, NULL);
    close(stub->listen_fd);
}

void http_stub_free(struct http_stub *stub)
{
    free(stub->last_request);
    stub->last_request = NULL;
    pthread_mutex_destroy(&stub->lock);
}

char *http_stub_header(struct http_stub *stub, const char *name, char *buf,
                       size_t len)
{
    char pattern[128];
    char *found = NULL;

    snprintf(pattern, sizeof(pattern), "\r\n%s:", name);
    pthread_mutex_lock(&stub->lock);
    char *h = stub->last_request != NULL
                  ? strcasestr(stub->last_request, pattern)
                  : NULL;
    if (h != NULL && (size_t)(h - stub->last_request) < stub->last_header_len) {
        h += strlen(pattern);
        while (*h == ' ')
            h++;
        size_t n = strcspn(h, "\r\n");
        if (n >= len)
            n = len - 1;
        memcpy(buf, h, n);
        buf[n] = '\0';
        found = buf;
    }
    pthread_mutex_unlock(&stub->lock);
    return found;
}
