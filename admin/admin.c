/* SPDX-License-Identifier: Apache-2.0 */
/*
 * admin - the server (see admin.h).
 *
 * libmicrohttpd runs in "external polling" mode with its own epoll set:
 * our thread polls that epoll fd and an eventfd (to stop), calls
 * MHD_run(), then enforces the request deadline. Doing the polling
 * ourselves is what lets us (1) run at a lower priority with every signal
 * blocked, and (2) cut off a connection that takes too long as a whole
 * (libmicrohttpd's own timeout is an idle timeout, which a client sending
 * one byte every few seconds never reaches): every libmicrohttpd callback
 * runs on this thread, so shutting down a connection's socket here cannot
 * race with libmicrohttpd closing it (the fd cannot have been reused).
 *
 * No endpoint takes a body: a request that announces one is refused on
 * the first call of the access handler (libmicrohttpd then discards the
 * body and closes the connection); every other request is answered on
 * the second call, so keep-alive works.
 */
#include "admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "admin_int.h"
#include "base/metrics.h"
#include "base/util.h"

#define ADMIN_HEADER_MEMORY (16u * 1024u)
#define ADMIN_POLL_MAX_MS 1000
#define ADMIN_LISTEN_BACKLOG 128

/* One open connection, tracked on the server thread only. */
struct admin_conn {
    int fd;
    uint64_t deadline_ms;
    bool shut;
    struct admin_conn *prev;
    struct admin_conn *next;
};

struct admin {
    struct MHD_Daemon *mhd;
    int listen_fd;
    int wake_fd;
    pthread_t thread;
    bool thread_started;
    atomic_bool stop;
    _Atomic uint64_t heartbeat_ms;

    char *token;
    size_t token_len;
    bool allow_actions;
    uint64_t stale_ms;
    uint32_t refresh_s;
    uint64_t timeout_ms;
    struct metrics *metrics;
    struct admin_provider provider;
    uint16_t port;
    char base_url[80];

    struct admin_conn *conns; /* server thread only */
};

static uint64_t now_monotonic_ms(void)
{
    struct timespec ts;

    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int64_t now_realtime_s(void)
{
    struct timespec ts;

    (void)clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

/* ---- responses -------------------------------------------------------- */

enum body_kind { BODY_TEXT, BODY_JSON, BODY_HTML, BODY_METRICS };

static const char *const content_types[] = { "text/plain; charset=utf-8",
                                             "application/json",
                                             "text/html; charset=utf-8",
                                             METRICS_CONTENT_TYPE };

/*
 * Queues @body (@len bytes, malloc'ed: ownership passes to
 * libmicrohttpd) with @status and the headers every answer carries.
 * @extra_name/@extra_value: one more header, or NULL.
 */
static enum MHD_Result send_owned(struct MHD_Connection *c, unsigned status,
                                  enum body_kind kind, char *body, size_t len,
                                  const char *extra_name,
                                  const char *extra_value)
{
    struct MHD_Response *r;
    enum MHD_Result ok;

    r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(body);
        return MHD_NO;
    }
    (void)MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                  content_types[kind]);
    (void)MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    (void)MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    (void)MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    (void)MHD_add_response_header(r, "X-Frame-Options", "DENY");
    if (kind == BODY_HTML)
        (void)MHD_add_response_header(
            r, "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; "
            "form-action 'none'; frame-ancestors 'none'; base-uri 'none'");
    if (extra_name != NULL)
        (void)MHD_add_response_header(r, extra_name, extra_value);
    ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result send_buf(struct MHD_Connection *c, unsigned status,
                                enum body_kind kind, struct buf *b,
                                const char *extra_name, const char *extra_value)
{
    size_t len;
    char *body;

    if (b->error) {
        buf_free(b);
        buf_init(b, ADMIN__JSON_MAX);
        buf_append_str(b, "the response would be too large\n");
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        kind = BODY_TEXT;
    }
    body = buf_take(b, &len);
    if (body == NULL)
        return MHD_NO;
    return send_owned(c, status, kind, body, len, extra_name, extra_value);
}

/* A short JSON error: {"error":"<text>"}. */
static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status,
                                  const char *text, const char *extra_name,
                                  const char *extra_value)
{
    struct buf b;

    buf_init(&b, ADMIN__JSON_MAX);
    buf_append_str(&b, "{\"error\":");
    admin__append_json(&b, text);
    buf_append_str(&b, "}\n");
    return send_buf(c, status, BODY_JSON, &b, extra_name, extra_value);
}

/* ---- endpoints -------------------------------------------------------- */

static enum MHD_Result serve_metrics(struct admin *a, struct MHD_Connection *c)
{
    char *text;
    size_t len;
    int r;

    if (a->metrics == NULL)
        return send_error(c, MHD_HTTP_NOT_FOUND, "no metrics here", NULL, NULL);
    r = metrics_render(a->metrics, ADMIN__METRICS_MAX, &text, &len);
    if (r < 0)
        return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
                          r == -E2BIG ? "the metrics text is too large"
                                      : "out of memory",
                          NULL, NULL);
    return send_owned(c, MHD_HTTP_OK, BODY_METRICS, text, len, NULL, NULL);
}

static enum MHD_Result serve_healthz(struct admin *a, struct MHD_Connection *c)
{
    uint64_t beat =
        atomic_load_explicit(&a->heartbeat_ms, memory_order_relaxed);
    uint64_t now = now_monotonic_ms();
    struct buf b;
    unsigned status;

    buf_init(&b, ADMIN__JSON_MAX);
    status =
        admin__render_healthz(&b, now > beat ? now - beat : 0, a->stale_ms);
    return send_buf(c, status, BODY_JSON, &b, NULL, NULL);
}

static enum MHD_Result serve_readyz(struct admin *a, struct MHD_Connection *c)
{
    struct admin_ready ready;
    struct buf b;
    unsigned status;

    if (a->provider.ready == NULL)
        return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                          "readiness is not provided", NULL, NULL);
    memset(&ready, 0, sizeof(ready));
    if (a->provider.ready(a->provider.ctx, &ready) < 0)
        return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                          "the daemon could not take a readiness snapshot",
                          NULL, NULL);
    ready.spool_error[sizeof(ready.spool_error) - 1] = '\0';
    buf_init(&b, ADMIN__JSON_MAX);
    status = admin__render_readyz(&b, &ready, now_realtime_s());
    return send_buf(c, status, BODY_JSON, &b, NULL, NULL);
}

#define TERMINATE(field) ((field)[sizeof(field) - 1] = '\0')

/* Whatever the provider wrote, every string of the snapshot ends. */
static void terminate_strings(struct admin_status *st)
{
    TERMINATE(st->version);
    TERMINATE(st->node);
    TERMINATE(st->ready.spool_error);
    TERMINATE(st->destination.url);
    TERMINATE(st->destination.last_error);
    TERMINATE(st->token.source);
    TERMINATE(st->token.last_refresh_error);
    TERMINATE(st->token.last_denied_diagnosis);
    for (size_t i = 0; i < ADMIN_FAILED_MAX; i++) {
        TERMINATE(st->failed[i].id);
        TERMINATE(st->failed[i].calling_ae);
        TERMINATE(st->failed[i].study_uid);
        TERMINATE(st->failed[i].sop_uid);
        TERMINATE(st->failed[i].reason);
    }
    for (size_t i = 0; i < ADMIN_STUDIES_MAX; i++) {
        TERMINATE(st->studies[i].study_uid);
        TERMINATE(st->studies[i].calling_ae);
    }
    for (size_t i = 0; i < ADMIN_EVENTS_MAX; i++)
        TERMINATE(st->events[i].text);
}

static enum MHD_Result serve_page(struct admin *a, struct MHD_Connection *c)
{
    struct admin__page_opts opts = {
        .refresh_s = a->refresh_s,
        .actions = a->allow_actions,
        .token = a->token != NULL,
        .base_url = a->base_url,
    };
    struct admin_status *st;
    struct buf b;
    int r;

    if (a->provider.status == NULL)
        return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                          "the status is not provided", NULL, NULL);
    st = calloc(1, sizeof(*st));
    if (st == NULL)
        return MHD_NO;
    r = a->provider.status(a->provider.ctx, st);
    if (r < 0) {
        free(st);
        return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                          "the daemon could not take a status snapshot", NULL,
                          NULL);
    }
    terminate_strings(st);
    buf_init(&b, ADMIN__PAGE_MAX);
    admin__render_page(&b, st, now_realtime_s(), &opts);
    free(st);
    return send_buf(c, MHD_HTTP_OK, BODY_HTML, &b, NULL, NULL);
}

static enum MHD_Result serve_action(struct admin *a, struct MHD_Connection *c,
                                    const char *url)
{
    const char *host =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    const char *auth = MHD_lookup_connection_value(
        c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    const char *origin =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    const char *fetch_site =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-Fetch-Site");
    struct buf b;
    char why[ADMIN_TEXT_MAX] = "";
    int r;

    if (!a->allow_actions || a->token == NULL)
        return send_error(c, MHD_HTTP_FORBIDDEN,
                          "actions are off (admin.allow_actions)", NULL, NULL);
    switch (admin__check_credentials(auth, a->token, a->token_len)) {
    case ADMIN__CRED_BEARER:
        break;
    case ADMIN__CRED_BASIC:
        return send_error(c, MHD_HTTP_UNAUTHORIZED,
                          "actions need \"Authorization: Bearer <token>\", "
                          "not Basic",
                          MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                          "Bearer realm=\"stowbridge\"");
    default:
        return send_error(c, MHD_HTTP_UNAUTHORIZED,
                          "actions need \"Authorization: Bearer <token>\"",
                          MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                          "Bearer realm=\"stowbridge\"");
    }
    if (admin__cross_site(origin, fetch_site, host))
        return send_error(c, MHD_HTTP_FORBIDDEN, "cross-site request refused",
                          NULL, NULL);
    buf_init(&b, ADMIN__JSON_MAX);
    if (strcmp(url, "/actions/retry") == 0) {
        const char *id =
            MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "id");
        if (a->provider.retry_failed == NULL)
            return send_error(c, MHD_HTTP_NOT_FOUND, "no such action", NULL,
                              NULL);
        if (id == NULL || !admin__entry_id_valid(id))
            return send_error(c, MHD_HTTP_BAD_REQUEST,
                              "give the entry as ?id=<entry id>", NULL, NULL);
        r = a->provider.retry_failed(a->provider.ctx, id, why, sizeof(why));
        if (r == -ENOENT)
            return send_error(c, MHD_HTTP_NOT_FOUND,
                              "no failed entry with this id", NULL, NULL);
        if (r < 0)
            return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
                              why[0] ? why : "the retry failed", NULL, NULL);
        buf_append_str(&b, "{\"retried\":1,\"id\":");
        admin__append_json(&b, id);
        buf_append_str(&b, "}\n");
    } else {
        uint64_t count = 0;
        if (a->provider.retry_all_failed == NULL)
            return send_error(c, MHD_HTTP_NOT_FOUND, "no such action", NULL,
                              NULL);
        r = a->provider.retry_all_failed(a->provider.ctx, &count, why,
                                         sizeof(why));
        if (r < 0)
            return send_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
                              why[0] ? why : "the retry failed", NULL, NULL);
        buf_appendf(&b, "{\"retried\":%" PRIu64 "}\n", count);
    }
    return send_buf(c, MHD_HTTP_OK, BODY_JSON, &b, NULL, NULL);
}

/* True when the request carries (or announces) a body. */
static bool has_body(struct MHD_Connection *c)
{
    const char *len = MHD_lookup_connection_value(
        c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te = MHD_lookup_connection_value(
        c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);

    if (te != NULL)
        return true;
    if (len == NULL)
        return false;
    for (const char *p = len; *p; p++)
        if (*p != '0' && *p != ' ')
            return true;
    return false;
}

enum route {
    ROUTE_NONE,
    ROUTE_PAGE,
    ROUTE_METRICS,
    ROUTE_HEALTHZ,
    ROUTE_READYZ,
    ROUTE_ACTION
};

static enum route route_of(const char *url)
{
    if (strcmp(url, "/") == 0)
        return ROUTE_PAGE;
    if (strcmp(url, "/metrics") == 0)
        return ROUTE_METRICS;
    if (strcmp(url, "/healthz") == 0)
        return ROUTE_HEALTHZ;
    if (strcmp(url, "/readyz") == 0)
        return ROUTE_READYZ;
    if (strcmp(url, "/actions/retry") == 0 ||
        strcmp(url, "/actions/retry-all") == 0)
        return ROUTE_ACTION;
    return ROUTE_NONE;
}

/* The read rules: Host for a server without token, the token otherwise. */
static enum MHD_Result check_read(struct admin *a, struct MHD_Connection *c,
                                  enum route route, bool *ret_ok)
{
    const char *auth;

    *ret_ok = false;
    if (a->token == NULL) {
        const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                       MHD_HTTP_HEADER_HOST);
        if (!admin__host_is_loopback(host))
            return send_error(c, MHD_HTTP_MISDIRECTED_REQUEST,
                              "this endpoint answers only to a loopback "
                              "Host (127.0.0.1, [::1], localhost)",
                              NULL, NULL);
        *ret_ok = true;
        return MHD_YES;
    }
    if (route == ROUTE_HEALTHZ || route == ROUTE_READYZ) {
        *ret_ok = true;
        return MHD_YES;
    }
    auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                       MHD_HTTP_HEADER_AUTHORIZATION);
    switch (admin__check_credentials(auth, a->token, a->token_len)) {
    case ADMIN__CRED_BEARER:
    case ADMIN__CRED_BASIC:
        *ret_ok = true;
        return MHD_YES;
    default:
        return send_error(c, MHD_HTTP_UNAUTHORIZED,
                          "this endpoint needs the admin token (Bearer, or "
                          "Basic with the token as password)",
                          MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                          "Basic realm=\"stowbridge\", charset=\"UTF-8\"");
    }
}

/* Lowers the calling thread's priority once (the server thread). */
static void lower_priority(void)
{
    pid_t tid = gettid();
    int nice_now;

    errno = 0;
    nice_now = getpriority(PRIO_PROCESS, (id_t)tid);
    if (nice_now == -1 && errno != 0)
        return;
    (void)setpriority(PRIO_PROCESS, (id_t)tid, nice_now + ADMIN_NICE);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
                                  const char *url, const char *method,
                                  const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    struct admin *a = cls;
    enum route route = route_of(url);
    bool is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
                  strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    bool is_post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    enum MHD_Result res;
    bool ok;

    (void)version;
    (void)upload_data;
    if (*req_cls == NULL) {
        /*
         * First call: only the headers are in. A request that brings a
         * body is refused now ("early": libmicrohttpd then discards the
         * body and closes the connection); any other is answered on the
         * next call, which keeps the connection alive for the next
         * request (an early answer never does, in 0.9.75).
         */
        *req_cls = a;
        if (has_body(c))
            return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE,
                              "no request body is accepted here", NULL, NULL);
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0; /* cannot happen without a length */
        return MHD_YES;
    }
    if (route == ROUTE_NONE)
        return send_error(c, MHD_HTTP_NOT_FOUND, "not found", NULL, NULL);
    if (route == ROUTE_ACTION && !is_post)
        return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use POST",
                          MHD_HTTP_HEADER_ALLOW, "POST");
    if (route != ROUTE_ACTION && !is_get)
        return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET",
                          MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    if (route == ROUTE_ACTION)
        return serve_action(a, c, url);
    res = check_read(a, c, route, &ok);
    if (!ok)
        return res;
    switch (route) {
    case ROUTE_PAGE:
        return serve_page(a, c);
    case ROUTE_METRICS:
        return serve_metrics(a, c);
    case ROUTE_HEALTHZ:
        return serve_healthz(a, c);
    default:
        return serve_readyz(a, c);
    }
}

/* ---- connections and their deadline ----------------------------------- */

static void on_connection(void *cls, struct MHD_Connection *c,
                          void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct admin *a = cls;
    struct admin_conn *conn = *socket_context;

    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        conn = calloc(1, sizeof(*conn));
        if (conn == NULL || info == NULL) {
            free(conn);
            *socket_context = NULL;
            return; /* untracked: only MHD's idle timeout applies */
        }
        conn->fd = info->connect_fd;
        conn->deadline_ms = now_monotonic_ms() + a->timeout_ms;
        conn->next = a->conns;
        if (a->conns != NULL)
            a->conns->prev = conn;
        a->conns = conn;
        *socket_context = conn;
        return;
    }
    if (conn == NULL)
        return;
    if (conn->prev != NULL)
        conn->prev->next = conn->next;
    else
        a->conns = conn->next;
    if (conn->next != NULL)
        conn->next->prev = conn->prev;
    free(conn);
    *socket_context = NULL;
}

/* A request is done: the next one on this connection gets a new budget. */
static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct admin *a = cls;
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    (void)toe;
    *req_cls = NULL;
    if (info != NULL && info->socket_context != NULL) {
        struct admin_conn *conn = info->socket_context;
        conn->deadline_ms = now_monotonic_ms() + a->timeout_ms;
    }
}

/* Shuts down connections past their deadline; returns ms to the next. */
static uint64_t enforce_deadlines(struct admin *a)
{
    uint64_t now = now_monotonic_ms();
    uint64_t next = ADMIN_POLL_MAX_MS;

    for (struct admin_conn *c = a->conns; c != NULL; c = c->next) {
        if (c->shut)
            continue;
        if (now >= c->deadline_ms) {
            (void)shutdown(c->fd, SHUT_RDWR);
            c->shut = true;
        } else if (c->deadline_ms - now < next) {
            next = c->deadline_ms - now;
        }
    }
    return next;
}

static void *server_thread(void *arg)
{
    struct admin *a = arg;
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(a->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    int epoll_fd = info != NULL ? info->epoll_fd : -1;

    lower_priority();
    while (!atomic_load(&a->stop)) {
        struct pollfd fds[2] = { { .fd = epoll_fd, .events = POLLIN },
                                 { .fd = a->wake_fd, .events = POLLIN } };
        MHD_UNSIGNED_LONG_LONG mhd_ms;
        uint64_t wait_ms = enforce_deadlines(a);

        if (MHD_get_timeout(a->mhd, &mhd_ms) == MHD_YES && mhd_ms < wait_ms)
            wait_ms = mhd_ms;
        if (poll(fds, 2, (int)wait_ms) < 0 && errno != EINTR) {
            (void)poll(NULL, 0, 100); /* ENOMEM: try again shortly */
            continue;
        }
        if (fds[1].revents & POLLIN) {
            uint64_t v;
            ssize_t n = read(a->wake_fd, &v, sizeof(v));
            (void)n; /* a non-blocking eventfd: drained or empty */
        }
        if (atomic_load(&a->stop))
            break;
        (void)MHD_run(a->mhd);
    }
    return NULL;
}

/* ---- life cycle ------------------------------------------------------- */

static int open_listener(const struct admin_listen *l, int *ret_fd,
                         uint16_t *ret_port, char *err, size_t err_len,
                         const char *text)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int one = 1;
    int fd;
    int r;

    memset(&ss, 0, sizeof(ss));
    if (l->ipv6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(l->port);
        memcpy(&s6->sin6_addr, l->addr, 16);
        len = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(l->port);
        memcpy(&s4->sin_addr, l->addr, 4);
        len = sizeof(*s4);
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        r = -errno;
        util_err(err, err_len, "socket() for admin.listen '%s' failed: %s",
                 text, strerror(-r));
        return r;
    }
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (l->ipv6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 ||
        listen(fd, ADMIN_LISTEN_BACKLOG) < 0) {
        r = -errno;
        util_err(err, err_len, "bind() to admin.listen '%s' failed: %s", text,
                 strerror(-r));
        (void)close(fd);
        return r;
    }
    len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        r = -errno;
        util_err(err, err_len, "getsockname() failed: %s", strerror(-r));
        (void)close(fd);
        return r;
    }
    *ret_port = ntohs(l->ipv6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                              : ((struct sockaddr_in *)&ss)->sin_port);
    *ret_fd = fd;
    return 0;
}

static int start_mhd(struct admin *a, const struct admin_params *p, bool ipv6,
                     char *err, size_t err_len)
{
    unsigned conn_limit = p->connection_limit ? p->connection_limit : 64;
    unsigned per_ip = p->per_ip_limit ? p->per_ip_limit : 16;
    unsigned timeout_s = (unsigned)(a->timeout_ms / 1000u);
    unsigned flags = MHD_USE_EPOLL | (ipv6 ? MHD_USE_IPv6 : 0);

    a->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, a, MHD_OPTION_LISTEN_SOCKET,
        (MHD_socket)a->listen_fd, MHD_OPTION_CONNECTION_LIMIT, conn_limit,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)ADMIN_HEADER_MEMORY,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, a,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, a, MHD_OPTION_END);
    if (a->mhd == NULL) {
        util_err(err, err_len, "libmicrohttpd could not start on port %u",
                 (unsigned)a->port);
        return -EIO;
    }
    return 0;
}

static int start_thread(struct admin *a, char *err, size_t err_len)
{
    sigset_t all;
    sigset_t old;
    int r;

    (void)sigfillset(&all);
    (void)pthread_sigmask(SIG_SETMASK, &all, &old);
    r = pthread_create(&a->thread, NULL, server_thread, a);
    (void)pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0) {
        util_err(err, err_len,
                 "pthread_create() for the admin server "
                 "failed: %s",
                 strerror(r));
        return -r;
    }
    (void)pthread_setname_np(a->thread, "sb-admin");
    a->thread_started = true;
    return 0;
}

int admin_new(const struct admin_params *p, struct admin **ret_admin, char *err,
              size_t err_len)
{
    bool have_token = p->token != NULL && p->token[0] != '\0';
    struct admin_listen l;
    struct admin *a;
    char host[64];
    int r;

    r = admin_config_check(p->listen, have_token, p->allow_actions, err,
                           err_len);
    if (r < 0)
        return r;
    (void)admin_listen_parse(p->listen, &l, NULL, 0);
    if (!l.enabled) {
        *ret_admin = NULL;
        return 0;
    }
    a = calloc(1, sizeof(*a));
    if (a == NULL)
        return -ENOMEM;
    a->listen_fd = -1;
    a->wake_fd = -1;
    atomic_init(&a->stop, false);
    atomic_init(&a->heartbeat_ms, now_monotonic_ms());
    a->allow_actions = p->allow_actions;
    a->stale_ms =
        (uint64_t)(p->healthz_stale_s ? p->healthz_stale_s : 30) * 1000u;
    a->refresh_s = p->page_refresh_s ? p->page_refresh_s : 10;
    a->timeout_ms =
        (uint64_t)(p->request_timeout_s ? p->request_timeout_s : 10) * 1000u;
    a->metrics = p->metrics;
    a->provider = p->provider;
    if (have_token) {
        a->token_len = strlen(p->token);
        a->token = strdup(p->token);
        if (a->token == NULL) {
            r = -ENOMEM;
            goto out_free;
        }
    }
    r = open_listener(&l, &a->listen_fd, &a->port, err, err_len, p->listen);
    if (r < 0)
        goto out_free;
    if (inet_ntop(l.ipv6 ? AF_INET6 : AF_INET, l.addr, host, sizeof(host)) ==
        NULL)
        (void)snprintf(host, sizeof(host), "localhost");
    (void)snprintf(a->base_url, sizeof(a->base_url),
                   l.ipv6 ? "http://[%s]:%u" : "http://%s:%u", host,
                   (unsigned)a->port);
    a->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (a->wake_fd < 0) {
        r = -errno;
        util_err(err, err_len, "eventfd() failed: %s", strerror(-r));
        goto out_free;
    }
    r = start_mhd(a, p, l.ipv6, err, err_len);
    if (r < 0)
        goto out_free;
    a->listen_fd = -1; /* libmicrohttpd owns it now */
    r = start_thread(a, err, err_len);
    if (r < 0)
        goto out_free;
    *ret_admin = a;
    return 0;

out_free:
    admin_free(a);
    return r;
}

void admin_free(struct admin *a)
{
    if (a == NULL)
        return;
    if (a->thread_started) {
        uint64_t one = 1;
        ssize_t n;
        atomic_store(&a->stop, true);
        n = write(a->wake_fd, &one, sizeof(one));
        (void)n; /* cannot fail short of EAGAIN: already woken */
        (void)pthread_join(a->thread, NULL);
    }
    if (a->mhd != NULL)
        MHD_stop_daemon(a->mhd); /* closes connections and the listener */
    if (a->listen_fd >= 0)
        (void)close(a->listen_fd);
    if (a->wake_fd >= 0)
        (void)close(a->wake_fd);
    while (a->conns != NULL) { /* normally emptied by MHD_stop_daemon */
        struct admin_conn *next = a->conns->next;
        free(a->conns);
        a->conns = next;
    }
    if (a->token != NULL) {
        explicit_bzero(a->token, a->token_len);
        free(a->token);
    }
    free(a);
}

uint16_t admin_port(const struct admin *a)
{
    return a->port;
}

void admin_heartbeat(struct admin *a)
{
    if (a == NULL)
        return;
    atomic_store_explicit(&a->heartbeat_ms, now_monotonic_ms(),
                          memory_order_relaxed);
}
