/* SPDX-License-Identifier: Apache-2.0 */
/*
 * scp_net - the connection loop of scp_run() (see scp_int.h).
 *
 * One thread, one epoll set, three kinds of socket:
 *   pending  accepted, still sending the A-ASSOCIATE-RQ. Watched
 *            edge-triggered and only peeked at (MSG_PEEK), so the whole
 *            PDU is still unread when DCMTK gets the socket. They do not
 *            count against dicom.max_associations but against
 *            dicom.max_pending, with a deadline of dicom.timeout_s for the
 *            whole request. When the set is full, a new connection evicts
 *            the oldest pending one of the address holding the most: a
 *            trickling flood keeps being replaced by newcomers while a
 *            real SCU, whose request arrives at once, gets through. While
 *            there is room nobody is evicted, so one PACS may open many
 *            (TLS) associations at the same instant.
 *   closing  an association that ended (rejected, aborted, released) or
 *            a request we refused: our last PDU is sent and the write
 *            side shut down; whatever the peer sends is read and dropped
 *            until it closes, or min(dicom.timeout_s, SCP_CLOSE_WAIT_MAX_S)
 *            passed. No slot, no thread is held meanwhile.
 *   the listener, and an eventfd that association threads use to hand
 *            their sockets back and to say a slot is free.
 *
 * A complete request is checked here (scp_rq_check): a malformed one is
 * answered A-ABORT and never reaches DCMTK (whose parse errors leak, see
 * scp_rq.h); one calling another AE title, from a caller not allowed,
 * with another application context or a maximum PDU length too small for
 * our responses gets its A-ASSOCIATE-RJ (permanent) from here too, so no
 * refusal ever takes a slot or a thread; over the association limit it
 * gets A-ASSOCIATE-RJ transient "local limit exceeded"; otherwise a slot
 * is taken and an association thread started.
 *
 * Listeners: the plain port and the TLS port, each on every IPv4 and
 * IPv6 address (one dual-stack socket) or on dicom.bind_address.
 *
 * Before the request, in this order and within the same deadline:
 *   PROXY    a connection from a trusted proxy must start with a PROXY v1
 *            or v2 header (proxy.h); it is read (peeked, then consumed
 *            exactly) and the address it carries becomes the caller's for
 *            the allow list and the logs. A PROXY header from any other
 *            address, or none from a trusted proxy, drops the connection.
 *   TLS      on the TLS port, the handshake runs here, on a non-blocking
 *            socket, one step per event (tls.h), then the A-ASSOCIATE-RQ
 *            is read through the session; plain DICOM or anything that is
 *            not a ClientHello is dropped at once. A silent or half-sent
 *            handshake only holds a pending slot until its deadline.
 * The certificate binding of the caller's rule (tls_only, fingerprint,
 * subject) is checked with the rest of the refusals.
 *
 * Out of descriptors (EMFILE, ENFILE): the loop stops watching the
 * listener for a growing pause (SCP_FD_PAUSE_MIN_MS .. _MAX_MS) instead of
 * spinning on it, logs one line per SCP_FD_LOG_INTERVAL_S with the count,
 * and spends its reserve descriptor to accept one waiting connection,
 * refuse it with A-ASSOCIATE-RJ transient "local limit exceeded" and
 * close it, so callers hear a clean refusal rather than nothing.
 */
#include "scp_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <new>
#include <vector>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcuid.h"

#include "base/log.h"
#include "base/util.h"
#include "proxy.h"
#include "scp_rq.h"
#include "tls.h"

/* Longest wait in epoll_wait() before the stop flag is looked at again. */
#define SCP_POLL_MS 1000
/* Connections accepted per wake-up of the listener. */
#define SCP_ACCEPT_BATCH 32
/* Bytes read and dropped from a closing socket per event. */
#define SCP_DRAIN_MAX (256u * 1024u)
/* The pause of the listener when descriptors run out, doubling up to the
 * maximum while it lasts. */
#define SCP_FD_PAUSE_MIN_MS 50
#define SCP_FD_PAUSE_MAX_MS 1000
/* At most one log line per this many seconds about running out. */
#define SCP_FD_LOG_INTERVAL_S 10
/* Events taken from epoll_wait() at once. */
#define SCP_EVENTS 64

/* A-ASSOCIATE-RJ and A-ABORT fields (PS3.8 Tables 9-21, 9-26). */
#define RJ_PERMANENT 1
#define RJ_TRANSIENT 2
#define RJ_SOURCE_ACSE 2
#define RJ_SOURCE_PRESENTATION 3
#define RJ_SOURCE_USER 1
#define RJ_REASON_NONE 1
#define RJ_REASON_APP_CONTEXT 2
#define RJ_REASON_CALLING_AE 3
#define RJ_REASON_CALLED_AE 7
#define RJ_REASON_PROTOCOL_VERSION 2
#define RJ_REASON_CONGESTION 1
#define RJ_REASON_LOCAL_LIMIT 2
#define AB_SOURCE_PROVIDER 2
#define AB_REASON_INVALID_PARAMETER 6

enum net_kind { NET_LISTEN = 1, NET_WAKE, NET_PENDING, NET_CLOSING };

struct net_pending {
    int fd;
    unsigned char addr[16];          /* the caller's, IPv4 mapped */
    char peer[64];                   /* its text: dotted IPv4 or IPv6 */
    char via[64];                    /* the proxy it came through, or "" */
    bool tls;                        /* accepted on the TLS port */
    bool need_proxy;                 /* from a trusted proxy, header not read */
    struct scp_tls_session *session; /* TLS: owned until handed over */
    uint64_t since_ms;
    uint64_t deadline_ms;
    size_t want; /* bytes needed: 6, then the whole PDU */
    bool have_head;
    bool peer_done; /* the peer shut its side (EPOLLRDHUP) */
};

struct net_closing {
    int fd;
    uint64_t deadline_ms;
};

struct net_loop {
    struct scp *scp;
    int epoll_fd;
    std::vector<net_pending> pending;
    std::vector<net_closing> closing;
    std::vector<unsigned char> buf; /* one A-ASSOCIATE-RQ at a time */
    size_t closing_max;
    uint64_t close_wait_ms;
    unsigned long next_number;
    bool listening; /* the listener is in the epoll set */
    bool stopping;
    int reserve_fd; /* spent to refuse when out of fds */
    uint64_t listen_resume_ms;
    unsigned pause_ms;
    unsigned long fd_failures; /* since the last log line */
    unsigned long fd_refused;
    uint64_t fd_logged_ms;
    bool fd_short; /* in a stretch of failures */
};

static uint64_t net_tag(enum net_kind kind, int fd)
{
    return ((uint64_t)kind << 32) | (uint32_t)fd;
}

static void net_watch(struct net_loop *loop, enum net_kind kind, int fd,
                      uint32_t events, int op)
{
    struct epoll_event ev;

    memset(&ev, 0, sizeof(ev));
    ev.events = events;
    ev.data.u64 = net_tag(kind, fd);
    if (epoll_ctl(loop->epoll_fd, op, fd, &ev) < 0 && op != EPOLL_CTL_DEL)
        log_err("event=scp-failed reason=\"epoll_ctl() failed: %s\", "
                "ignoring",
                strerror(errno));
}

static void net_unwatch(struct net_loop *loop, int fd)
{
    (void)epoll_ctl(loop->epoll_fd, EPOLL_CTL_DEL, fd, NULL);
}

/* Sends a 10-byte PDU without ever blocking the loop. */
static void net_send_pdu(int fd, unsigned char type, unsigned char b7,
                         unsigned char b8, unsigned char b9)
{
    const unsigned char pdu[10] = { type, 0, 0, 0, 0, 4, 0, b7, b8, b9 };

    (void)!send(fd, pdu, sizeof(pdu), MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void net_send_reject(int fd, unsigned char result, unsigned char source,
                            unsigned char reason)
{
    net_send_pdu(fd, 0x03, result, source, reason);
}

void scp__send_abort(int fd, unsigned char source, unsigned char reason)
{
    net_send_pdu(fd, 0x07, 0, source, reason);
}

/* Reads and drops @len bytes already known to be buffered (the request
 * we peeked at), so that closing later sends FIN and not RST. */
static void net_consume(struct net_loop *loop, int fd, size_t len)
{
    while (len > 0) {
        size_t n = len < loop->buf.size() ? len : loop->buf.size();
        ssize_t r = recv(fd, loop->buf.data(), n, MSG_DONTWAIT);
        if (r <= 0)
            return;
        len -= (size_t)r;
    }
}

static void net_close(struct net_loop *loop, int fd)
{
    net_unwatch(loop, fd);
    (void)close(fd);
}

/* Puts @fd (write side about to be shut) in the closing set; when the set
 * is full its oldest member is closed at once. */
static void net_close_later(struct net_loop *loop, int fd)
{
    (void)shutdown(fd, SHUT_WR);
    if (loop->stopping) {
        net_close(loop, fd);
        return;
    }
    if (loop->closing.size() >= loop->closing_max) {
        net_close(loop, loop->closing.front().fd);
        loop->closing.erase(loop->closing.begin());
    }
    net_closing c;
    c.fd = fd;
    c.deadline_ms = util_now_monotonic_ms() + loop->close_wait_ms;
    loop->closing.push_back(c);
    /* A refused pending connection is in the set already; a socket handed
     * back is not. */
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = net_tag(NET_CLOSING, fd);
    if (epoll_ctl(loop->epoll_fd, EPOLL_CTL_MOD, fd, &ev) < 0)
        net_watch(loop, NET_CLOSING, fd, EPOLLIN | EPOLLRDHUP, EPOLL_CTL_ADD);
}

static void net_set_pending_count(struct net_loop *loop)
{
    pthread_mutex_lock(&loop->scp->lock);
    loop->scp->pending = (unsigned)loop->pending.size();
    pthread_mutex_unlock(&loop->scp->lock);
}

/* ------------------------------------------------------------------ */
/* Pending connections                                                 */
/* ------------------------------------------------------------------ */

static void net_drop_pending(struct net_loop *loop, size_t i, const char *why)
{
    net_pending *p = &loop->pending[i];

    if (p->tls && p->session != NULL && scp__tls_session_ready(p->session)) {
        const struct scp_tls_identity *id = scp__tls_peer(p->session);
        log_warning("event=dropped from=%s port=tls cert_sha256=%s "
                    "cert_subject=\"%s\" reason=\"%s\"",
                    p->peer, id->present ? id->sha256_display : "none",
                    id->subject, why);
    } else {
        log_warning("event=dropped from=%s%s%s reason=\"%s\"", p->peer,
                    p->via[0] != '\0' ? " via=" : "", p->via, why);
    }
    scp__tls_session_free(p->session);
    net_close(loop, p->fd);
    loop->pending.erase(loop->pending.begin() + (long)i);
}

/*
 * Makes room for one more pending connection from @addr: evicts the
 * oldest of @addr's own when it holds its share, else, when the set is
 * full, the oldest of the address holding the most.
 */
static void net_make_room(struct net_loop *loop)
{
    size_t victim = SIZE_MAX;
    size_t best = 0;

    /* Only a full set evicts: many handshakes at once from one PACS (or
     * one load balancer) are fine while there is room. */
    if (loop->pending.size() < loop->scp->max_pending)
        return;
    for (size_t i = 0; i < loop->pending.size(); i++) {
        size_t count = 0;
        for (const net_pending &p : loop->pending)
            count += memcmp(p.addr, loop->pending[i].addr, 16) == 0;
        if (count > best) { /* the first one is the oldest */
            best = count;
            victim = i;
        }
    }
    if (victim == SIZE_MAX)
        return;
    char why[192];
    snprintf(why, sizeof(why),
             "evicted: the oldest of %zu connections still sending their "
             "association request (dicom.max_pending %u full; %zu of them "
             "from this address, the most of any)",
             loop->pending.size(), loop->scp->max_pending, best);
    net_drop_pending(loop, victim, why);
}

/* What a pending connection's bytes say so far. */
enum net_step { NET_WAIT, NET_DROP, NET_READY };

/*
 * A step found nothing new: NET_WAIT, or NET_DROP (with @closed or
 * @timeout in @why) once the peer closed or failed or the deadline
 * passed.
 */
static enum net_step net_idle(net_pending *p, uint64_t now, const char *closed,
                              const char *timeout, char *why, size_t why_len)
{
    unsigned char c;
    ssize_t n = recv(p->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);

    /* Nothing more will come once the peer has closed or failed. */
    if (n == 0 || p->peer_done) {
        snprintf(why, why_len, "%s", closed);
        return NET_DROP;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        snprintf(why, why_len, "recv() failed: %s", strerror(errno));
        return NET_DROP;
    }
    if (now >= p->deadline_ms) {
        snprintf(why, why_len, "%s", timeout);
        return NET_DROP;
    }
    return NET_WAIT;
}

/*
 * The PROXY header a trusted proxy sends first: peeked until whole, then
 * consumed exactly; its source address becomes @p's. NET_READY once read.
 */
static enum net_step net_proxy_step(struct net_loop *loop, net_pending *p,
                                    char *why, size_t why_len)
{
    int avail = 0;
    struct proxy_header h;
    char pwhy[96];

    if (ioctl(p->fd, FIONREAD, &avail) < 0 || avail <= 0)
        return NET_WAIT;
    size_t n =
        (size_t)avail < PROXY_HEADER_MAX ? (size_t)avail : PROXY_HEADER_MAX;
    ssize_t got = recv(p->fd, loop->buf.data(), n, MSG_PEEK | MSG_DONTWAIT);
    if (got <= 0)
        return NET_WAIT;
    switch (
        proxy_parse(loop->buf.data(), (size_t)got, &h, pwhy, sizeof(pwhy))) {
    case PROXY_NEED_MORE:
        return NET_WAIT;
    case PROXY_NOT_PROXY:
        snprintf(why, why_len,
                 "no PROXY header from a trusted proxy "
                 "(dicom.proxy_protocol.trusted_proxies)");
        return NET_DROP;
    case PROXY_INVALID:
        snprintf(why, why_len, "malformed PROXY header: %s", pwhy);
        return NET_DROP;
    case PROXY_OK:
        break;
    }
    got = recv(p->fd, loop->buf.data(), h.len, MSG_DONTWAIT);
    if (got != (ssize_t)h.len) {
        snprintf(why, why_len, "PROXY header could not be read");
        return NET_DROP;
    }
    if (!h.local) {
        snprintf(p->via, sizeof(p->via), "%s", p->peer);
        memcpy(p->addr, h.src, sizeof(p->addr));
        snprintf(p->peer, sizeof(p->peer), "%s", h.src_text);
    }
    p->need_proxy = false;
    return NET_READY;
}

/*
 * The TLS port: the first bytes must be a ClientHello (anything else is
 * named and dropped), then the handshake and the request are read
 * through the session, never blocking. NET_READY once the request is in.
 */
static enum net_step net_tls_step(struct net_loop *loop, net_pending *p,
                                  char *why, size_t why_len)
{
    if (p->session == NULL) {
        unsigned char first[16];
        struct proxy_header h;
        ssize_t n = recv(p->fd, first, sizeof(first), MSG_PEEK | MSG_DONTWAIT);

        if (n <= 0)
            return NET_WAIT;
        if (first[0] != 0x16) { /* TLS record: handshake */
            enum proxy_verdict v = proxy_parse(first, (size_t)n, &h, NULL, 0);
            if (v == PROXY_NEED_MORE && (size_t)n < sizeof(first))
                return NET_WAIT;
            if (v != PROXY_NOT_PROXY)
                snprintf(why, why_len,
                         "PROXY header from an address not in "
                         "dicom.proxy_protocol.trusted_proxies");
            else if (first[0] == 0x01)
                snprintf(why, why_len,
                         "plain DICOM (an A-ASSOCIATE-RQ) on the TLS port");
            else
                snprintf(why, why_len,
                         "not a TLS handshake (first byte 0x%02x)", first[0]);
            return NET_DROP;
        }
        int flags = fcntl(p->fd, F_GETFL);
        if (flags < 0 || fcntl(p->fd, F_SETFL, flags | O_NONBLOCK) < 0) {
            snprintf(why, why_len, "fcntl() failed: %s", strerror(errno));
            return NET_DROP;
        }
        p->session = scp__tls_session_new(loop->scp->tls, p->fd);
        if (p->session == NULL) {
            snprintf(why, why_len, "out of memory for a TLS session");
            return NET_DROP;
        }
    }
    int r = scp__tls_session_step(p->session, SCP_MAX_RQ_PDU, why, why_len);
    if (r < 0)
        return NET_DROP;
    return r == 0 ? NET_WAIT : NET_READY;
}

/*
 * Looks at what @p has buffered: the PROXY header if one is due, then on
 * the TLS port the handshake and request (net_tls_step()), else, without
 * reading it, the PDU header first, then whether the whole PDU is there.
 * On NET_READY the PDU is in loop->buf (plain) or the session (TLS). On
 * NET_DROP @why says why.
 */
static enum net_step net_pending_step(struct net_loop *loop, net_pending *p,
                                      uint64_t now, char *why, size_t why_len)
{
    int avail = 0;
    unsigned char head[6];
    ssize_t n;

    if (p->need_proxy) {
        enum net_step step = net_proxy_step(loop, p, why, why_len);
        if (step == NET_DROP)
            return step;
        if (step == NET_WAIT)
            return net_idle(
                p, now, "closed by the proxy before its PROXY header",
                "no PROXY header from a trusted proxy (timeout)", why, why_len);
    }
    if (p->tls) {
        enum net_step step = net_tls_step(loop, p, why, why_len);
        if (step != NET_WAIT)
            return step;
        bool up = p->session != NULL && scp__tls_session_ready(p->session);
        return net_idle(p, now,
                        up ? "closed by the peer before an association "
                             "request"
                           : "closed by the peer during the TLS handshake",
                        up ? "no association request over TLS (timeout)"
                           : "TLS handshake not completed (timeout)",
                        why, why_len);
    }
    if (ioctl(p->fd, FIONREAD, &avail) < 0)
        avail = 0;
    if (!p->have_head && avail >= 6) {
        n = recv(p->fd, head, sizeof(head), MSG_PEEK | MSG_DONTWAIT);
        if (n == (ssize_t)sizeof(head)) {
            uint32_t len = ((uint32_t)head[2] << 24) |
                           ((uint32_t)head[3] << 16) |
                           ((uint32_t)head[4] << 8) | (uint32_t)head[5];
            struct proxy_header h;
            if (head[0] != 0x01 && proxy_parse(head, sizeof(head), &h, NULL,
                                               0) != PROXY_NOT_PROXY) {
                snprintf(why, why_len,
                         "PROXY header from an address not in "
                         "dicom.proxy_protocol.trusted_proxies");
                return NET_DROP;
            }
            if (head[0] == 0x16 && head[1] == 0x03) {
                snprintf(why, why_len, "a TLS handshake on the plain port");
                return NET_DROP;
            }
            if (head[0] != 0x01) {
                snprintf(why, why_len,
                         "not an A-ASSOCIATE-RQ (PDU type 0x%02x)", head[0]);
                return NET_DROP;
            }
            if (len > SCP_MAX_RQ_PDU) {
                snprintf(why, why_len,
                         "A-ASSOCIATE-RQ of %u bytes, more than %u", len,
                         SCP_MAX_RQ_PDU);
                return NET_DROP;
            }
            p->have_head = true;
            p->want = sizeof(head) + len;
        }
    }
    if (p->have_head && (size_t)avail >= p->want) {
        n = recv(p->fd, loop->buf.data(), p->want, MSG_PEEK | MSG_DONTWAIT);
        if (n == (ssize_t)p->want)
            return NET_READY;
    }
    return net_idle(p, now,
                    p->have_head
                        ? "closed by the peer in the middle of its "
                          "A-ASSOCIATE-RQ"
                        : "closed by the peer before an association request",
                    p->have_head ? "incomplete A-ASSOCIATE-RQ (timeout)"
                                 : "no association request (timeout)",
                    why, why_len);
}

/* The calling and called AE titles of @rq, printable ("?" if not). */
static void net_titles(const struct scp_rq *rq, char calling[17],
                       char called[17])
{
    if (util_trim_copy(calling, 17, rq->calling_ae) < 0 ||
        !util_ae_title_valid(calling))
        (void)snprintf(calling, 17, "?");
    if (util_trim_copy(called, 17, rq->called_ae) < 0 ||
        !util_ae_title_valid(called))
        (void)snprintf(called, 17, "?");
}

/* The binding of the rule scp__caller_allowed() decides by: the first
 * matching the calling AE title and the address; NULL when none does (or
 * no list). */
static const struct scp_caller_rule *
net_rule_for(const struct scp *scp, const char *calling, const char *peer)
{
    if (scp->bindings.size() != scp->caller_count)
        return NULL;
    for (size_t i = 0; i < scp->caller_count; i++) {
        const struct scp_caller_rule *rule = &scp->callers[i];
        bool host_ok = rule->host_count == 0;

        if (rule->ae_title != NULL && strcmp(rule->ae_title, calling) != 0)
            continue;
        for (size_t h = 0; h < rule->host_count && !host_ok; h++)
            host_ok = util_ipv4_net_contains(&rule->hosts[h], peer);
        if (host_ok)
            return &scp->bindings[i]->rule;
    }
    return NULL;
}

/*
 * What a well-formed request is refused for before it may take a slot
 * (the association thread checks the same on DCMTK's parse): another
 * application context, a called AE title not ours, a calling AE title
 * that is invalid or not allowed, a maximum PDU length too small to carry
 * our responses. Returns NULL, or the reason with the A-ASSOCIATE-RJ
 * reason in @ret_reason (permanent, service user).
 */
static const char *net_refusal(struct net_loop *loop, const struct scp_rq *rq,
                               const char *calling, const char *called,
                               const net_pending *p, unsigned char *ret_reason,
                               char *buf, size_t buf_len)
{
    const char *peer = p->peer;
    struct scp *scp = loop->scp;
    bool find = false;

    if (strcmp(rq->app_context, UID_StandardApplicationContext) != 0) {
        *ret_reason = RJ_REASON_APP_CONTEXT;
        return "application context name not supported";
    }
    if (strcmp(called, scp->ae_title) != 0) {
        *ret_reason = RJ_REASON_CALLED_AE;
        return "called AE title not recognized";
    }
    if (strcmp(calling, "?") == 0) {
        *ret_reason = RJ_REASON_CALLING_AE;
        return "calling AE title empty or invalid";
    }
    if (!scp__caller_allowed(scp, calling, peer, &find)) {
        *ret_reason = RJ_REASON_CALLING_AE;
        return "caller not in dicom.allowed_callers";
    }
    const struct scp_caller_rule *rule = net_rule_for(scp, calling, peer);
    if (rule != NULL) {
        const char *why = scp__tls_rule_refusal(
            rule, p->tls, p->session ? scp__tls_peer(p->session) : NULL, buf,
            buf_len);
        if (why != NULL) {
            *ret_reason = RJ_REASON_CALLING_AE;
            return why;
        }
    }
    if (rq->max_pdu > 0 && rq->max_pdu < SCP_MIN_PEER_PDU) {
        *ret_reason = RJ_REASON_NONE;
        snprintf(buf, buf_len,
                 "the caller's maximum PDU length of %u bytes cannot carry "
                 "our responses (at least %u, or 0 for no limit)",
                 (unsigned)rq->max_pdu, SCP_MIN_PEER_PDU);
        return buf;
    }
    return NULL;
}

/*
 * Answers @p with a 10-byte PDU (A-ASSOCIATE-RJ 03H or A-ABORT 07H) and
 * closes it later: on a plain socket the peeked request is consumed
 * first; on TLS the PDU goes through the session, which then sends
 * close_notify and is freed.
 */
static void net_refuse(struct net_loop *loop, net_pending *p,
                       unsigned char type, unsigned char b7, unsigned char b8,
                       unsigned char b9)
{
    if (p->session != NULL) {
        const unsigned char pdu[10] = { type, 0, 0, 0, 0, 4, 0, b7, b8, b9 };
        (void)scp__tls_write(p->session, pdu, sizeof(pdu));
        scp__tls_session_free(p->session);
        p->session = NULL;
    } else {
        net_consume(loop, p->fd, p->want);
        net_send_pdu(p->fd, type, b7, b8, b9);
    }
    net_close_later(loop, p->fd);
}

/* Puts @p's TLS session (if any) where the association's transport layer
 * will take it, the socket blocking again. Returns 0 or a positive
 * errno. */
static int net_hand_session(struct net_loop *loop, net_pending *p)
{
    struct scp *scp = loop->scp;
    int r = 0;

    if (p->session == NULL)
        return 0;
    int flags = fcntl(p->fd, F_GETFL);
    if (flags < 0 || fcntl(p->fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
        return errno;
    pthread_mutex_lock(&scp->lock);
    try {
        scp->tls_handoff[p->fd] = p->session;
    } catch (...) {
        r = ENOMEM;
    }
    pthread_mutex_unlock(&scp->lock);
    return r;
}

struct scp_tls_session *scp__take_tls_session(struct scp *scp, int fd)
{
    struct scp_tls_session *s = NULL;

    pthread_mutex_lock(&scp->lock);
    auto it = scp->tls_handoff.find(fd);
    if (it != scp->tls_handoff.end()) {
        s = it->second;
        scp->tls_handoff.erase(it);
    }
    pthread_mutex_unlock(&scp->lock);
    return s;
}

/* A whole A-ASSOCIATE-RQ is in loop->buf: refuse it here, or take a slot
 * and start its association thread. Refusals never take a slot or a
 * thread, so a flood of them cannot crowd out a real caller. */
static void net_request(struct net_loop *loop, net_pending *p)
{
    struct scp *scp = loop->scp;
    struct scp_rq rq;
    char why[256];
    char calling[17];
    char called[17];
    char cert[256];
    unsigned long number = ++loop->next_number;
    const unsigned char *pdu = loop->buf.data();
    size_t pdu_len = p->want;

    cert[0] = '\0';
    if (p->session != NULL) {
        const struct scp_tls_identity *id = scp__tls_peer(p->session);
        pdu = scp__tls_request(p->session, &pdu_len);
        snprintf(cert, sizeof(cert), "%s",
                 id->present ? id->sha256_display : "none");
    }
    enum scp_rq_verdict verdict =
        scp_rq_check(pdu, pdu_len, &rq, why, sizeof(why));

    net_titles(&rq, calling, called);
    if (verdict != SCP_RQ_OK) {
        log_warning("event=dropped assoc=%lu from=%s@%s reason=\"malformed "
                    "A-ASSOCIATE-RQ: %s\"",
                    number, calling, p->peer, why);
        if (verdict == SCP_RQ_PROTOCOL_VERSION)
            net_refuse(loop, p, 0x03, RJ_PERMANENT, RJ_SOURCE_ACSE,
                       RJ_REASON_PROTOCOL_VERSION);
        else
            net_refuse(loop, p, 0x07, 0, AB_SOURCE_PROVIDER,
                       AB_REASON_INVALID_PARAMETER);
        return;
    }

    unsigned char reason = 0;
    const char *refusal =
        net_refusal(loop, &rq, calling, called, p, &reason, why, sizeof(why));
    if (refusal != NULL) {
        if (p->tls)
            log_warning("event=rejected assoc=%lu from=%s@%s called=%s "
                        "port=tls cert_sha256=%s cert_subject=\"%s\" "
                        "reason=\"%s\"",
                        number, calling, p->peer, called, cert,
                        p->session ? scp__tls_peer(p->session)->subject : "",
                        refusal);
        else
            log_warning("event=rejected assoc=%lu from=%s@%s called=%s "
                        "reason=\"%s\"",
                        number, calling, p->peer, called, refusal);
        net_refuse(loop, p, 0x03, RJ_PERMANENT, RJ_SOURCE_USER, reason);
        return;
    }

    pthread_mutex_lock(&scp->lock);
    bool full = scp->active >= scp->max_associations;
    if (!full)
        scp->active++;
    pthread_mutex_unlock(&scp->lock);
    if (full) {
        log_warning("event=rejected assoc=%lu from=%s@%s called=%s "
                    "reason=\"local limit exceeded (%u associations)\"",
                    number, calling, p->peer, called, scp->max_associations);
        net_refuse(loop, p, 0x03, RJ_TRANSIENT, RJ_SOURCE_PRESENTATION,
                   RJ_REASON_LOCAL_LIMIT);
        return;
    }
    if (p->session != NULL) {
        char proto[96];
        scp__tls_describe(p->session, proto, sizeof(proto));
        log_info("event=tls-accepted assoc=%lu from=%s@%s protocol=\"%s\" "
                 "cert_sha256=%s cert_subject=\"%s\"",
                 number, calling, p->peer, proto, cert,
                 scp__tls_peer(p->session)->subject);
    }

    struct scp_conn *conn = new (std::nothrow) scp_conn();
    int r = ENOMEM;
    net_unwatch(loop, p->fd);
    if (conn != NULL) {
        conn->scp = scp;
        conn->fd = p->fd;
        conn->number = number;
        snprintf(conn->peer, sizeof(conn->peer), "%s", p->peer);
        r = net_hand_session(loop, p);
        if (r == 0)
            r = scp__start_association(conn);
    }
    if (r == 0) {
        p->session = NULL; /* the thread's now */
        return;
    }
    if (p->session != NULL)
        (void)scp__take_tls_session(scp, p->fd);
    delete conn;
    scp__association_done(scp);
    log_err("event=rejected assoc=%lu from=%s@%s reason=\"cannot start a "
            "thread: %s\"",
            number, calling, p->peer, strerror(r));
    net_refuse(loop, p, 0x03, RJ_TRANSIENT, RJ_SOURCE_PRESENTATION,
               RJ_REASON_CONGESTION);
}

/* Advances the pending connection at @i; returns false if it left the
 * set. */
static bool net_pending_event(struct net_loop *loop, size_t i, uint64_t now,
                              uint32_t events)
{
    char why[160];

    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        loop->pending[i].peer_done = true;
    enum net_step step =
        net_pending_step(loop, &loop->pending[i], now, why, sizeof(why));

    if (step == NET_WAIT)
        return true;
    if (step == NET_DROP) {
        net_drop_pending(loop, i, why);
    } else {
        net_pending p = loop->pending[i];
        loop->pending.erase(loop->pending.begin() + (long)i);
        net_request(loop, &p);
    }
    net_set_pending_count(loop);
    return false;
}

/* ------------------------------------------------------------------ */
/* The listener                                                        */
/* ------------------------------------------------------------------ */

static void net_listen_on(struct net_loop *loop, bool on)
{
    if (on == loop->listening)
        return;
    if (loop->scp->listen_fd >= 0)
        net_watch(loop, NET_LISTEN, loop->scp->listen_fd, EPOLLIN,
                  on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL);
    if (loop->scp->tls_listen_fd >= 0)
        net_watch(loop, NET_LISTEN, loop->scp->tls_listen_fd, EPOLLIN,
                  on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL);
    loop->listening = on;
}

static void net_fd_log(struct net_loop *loop, uint64_t now, int err)
{
    log_warning("event=accept-failed reason=\"accept() failed: %s\" "
                "count=%lu refused=%lu interval_s=%d, pausing accepts",
                strerror(err), loop->fd_failures, loop->fd_refused,
                SCP_FD_LOG_INTERVAL_S);
    loop->fd_failures = 0;
    loop->fd_refused = 0;
    loop->fd_logged_ms = now;
}

/* Out of descriptors: refuse one waiting caller with the reserve, pause
 * the listener, log at most once per interval. */
static void net_out_of_fds(struct net_loop *loop, int listen_fd, int err,
                           uint64_t now)
{
    loop->fd_failures++;
    if (loop->reserve_fd >= 0) {
        (void)close(loop->reserve_fd);
        loop->reserve_fd = -1;
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        /* A TLS caller cannot read a clear refusal: it is closed. */
        if (fd >= 0 && listen_fd == loop->scp->tls_listen_fd) {
            (void)close(fd);
            loop->fd_refused++;
        } else if (fd >= 0) {
            net_send_reject(fd, RJ_TRANSIENT, RJ_SOURCE_PRESENTATION,
                            RJ_REASON_LOCAL_LIMIT);
            (void)close(fd);
            loop->fd_refused++;
        }
        loop->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    loop->pause_ms = loop->pause_ms == 0 ? SCP_FD_PAUSE_MIN_MS
                     : loop->pause_ms * 2 > SCP_FD_PAUSE_MAX_MS
                         ? SCP_FD_PAUSE_MAX_MS
                         : loop->pause_ms * 2;
    loop->listen_resume_ms = now + loop->pause_ms;
    net_listen_on(loop, false);
    if (!loop->fd_short ||
        now - loop->fd_logged_ms >= (uint64_t)SCP_FD_LOG_INTERVAL_S * 1000u)
        net_fd_log(loop, now, err);
    loop->fd_short = true;
}

/* Descriptors are back: say how many failures the last stretch had. */
static void net_fds_back(struct net_loop *loop)
{
    if (!loop->fd_short)
        return;
    log_notice("event=accept-recovered count=%lu refused=%lu "
               "reason=\"file descriptors available again\"",
               loop->fd_failures, loop->fd_refused);
    loop->fd_short = false;
    loop->fd_failures = 0;
    loop->fd_refused = 0;
    loop->pause_ms = 0;
}

/* The caller's address of @sa in 16-byte form. */
static void net_addr_of(const struct sockaddr_storage *sa,
                        unsigned char ret[16])
{
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        proxy_addr_from_ipv4((const unsigned char *)&in->sin_addr, ret);
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        memcpy(ret, &in6->sin6_addr, 16);
    } else {
        memset(ret, 0, 16);
    }
}

static bool net_trusted_proxy(const struct scp *scp,
                              const unsigned char addr[16])
{
    for (const proxy_net &net : scp->trusted_proxies)
        if (proxy_net_contains(&net, addr))
            return true;
    return false;
}

static void net_accept(struct net_loop *loop, int listen_fd, uint64_t now)
{
    struct scp *scp = loop->scp;

    for (int i = 0; i < SCP_ACCEPT_BATCH; i++) {
        struct sockaddr_storage addr;
        socklen_t addr_len = sizeof(addr);
        int one = 1;
        int fd = accept4(listen_fd, (struct sockaddr *)&addr, &addr_len,
                         SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == EINTR || e == ECONNABORTED)
                continue;
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM)
                net_out_of_fds(loop, listen_fd, e, now);
            else if (e != EAGAIN && e != EWOULDBLOCK)
                log_warning("event=accept-failed reason=\"accept() failed: "
                            "%s\", ignoring",
                            strerror(e));
            return;
        }
        net_fds_back(loop);
        /* Nagle off: without it a C-STORE stream crawls. */
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

        net_pending p;
        char text[PROXY_ADDR_TEXT];
        memset(&p, 0, sizeof(p));
        p.fd = fd;
        net_addr_of(&addr, p.addr);
        proxy_addr_text(p.addr, text);
        snprintf(p.peer, sizeof(p.peer), "%s", text);
        p.tls = listen_fd == scp->tls_listen_fd;
        p.need_proxy = net_trusted_proxy(scp, p.addr);
        p.session = NULL;
        p.since_ms = now;
        p.deadline_ms = now + (uint64_t)scp->timeout_s * 1000u;
        p.want = 6;
        net_make_room(loop);
        try {
            loop->pending.push_back(p);
        } catch (...) {
            (void)close(fd);
            return;
        }
        /* TLS may have to write during its handshake. */
        net_watch(loop, NET_PENDING, fd,
                  EPOLLIN | EPOLLRDHUP | EPOLLET | (p.tls ? EPOLLOUT : 0u),
                  EPOLL_CTL_ADD);
        /* Bytes that came with the connection raise no new edge. */
        (void)net_pending_event(loop, loop->pending.size() - 1, now, 0);
        net_set_pending_count(loop);
    }
}

/* ------------------------------------------------------------------ */
/* Closing sockets and sockets handed back                             */
/* ------------------------------------------------------------------ */

/* Reads what the peer still sends; returns false once it is done (closed,
 * reset, or sending without end). */
static bool net_drain(struct net_loop *loop, int fd)
{
    size_t total = 0;

    while (total < SCP_DRAIN_MAX) {
        ssize_t n = recv(fd, loop->buf.data(), loop->buf.size(), MSG_DONTWAIT);
        if (n > 0) {
            total += (size_t)n;
            continue;
        }
        if (n < 0 &&
            (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return true;
        return false;
    }
    return true;
}

static void net_closing_event(struct net_loop *loop, int fd)
{
    for (size_t i = 0; i < loop->closing.size(); i++) {
        if (loop->closing[i].fd != fd)
            continue;
        if (!net_drain(loop, fd)) {
            net_close(loop, fd);
            loop->closing.erase(loop->closing.begin() + (long)i);
        }
        return;
    }
}

static void net_take_handoffs(struct net_loop *loop)
{
    std::vector<int> fds;
    uint64_t value;

    while (read(loop->scp->wake_fd, &value, sizeof(value)) > 0)
        ;
    pthread_mutex_lock(&loop->scp->lock);
    fds.swap(loop->scp->handoff);
    pthread_mutex_unlock(&loop->scp->lock);
    for (int fd : fds)
        net_close_later(loop, fd);
}

void scp__hand_back(struct scp *scp, int fd)
{
    const uint64_t one = 1;
    bool queued = true;

    /* A session DCMTK never took (it failed before making a
     * connection of the socket) dies with it. */
    scp__tls_session_free(scp__take_tls_session(scp, fd));

    pthread_mutex_lock(&scp->lock);
    try {
        scp->handoff.push_back(fd);
    } catch (...) {
        queued = false;
    }
    pthread_mutex_unlock(&scp->lock);
    if (!queued) {
        (void)shutdown(fd, SHUT_WR);
        (void)close(fd);
        return;
    }
    (void)!write(scp->wake_fd, &one, sizeof(one));
}

void scp__association_done(struct scp *scp)
{
    const uint64_t one = 1;

    pthread_mutex_lock(&scp->lock);
    scp->active--;
    pthread_mutex_unlock(&scp->lock);
    (void)!write(scp->wake_fd, &one, sizeof(one));
}

/* ------------------------------------------------------------------ */
/* The loop                                                            */
/* ------------------------------------------------------------------ */

/* Closes pending and closing sockets whose deadline passed, and
 * returns the time to wait for the next deadline (at most SCP_POLL_MS). */
static int net_deadlines(struct net_loop *loop, uint64_t now)
{
    uint64_t next = now + SCP_POLL_MS;

    for (size_t i = loop->pending.size(); i-- > 0;) {
        if (now >= loop->pending[i].deadline_ms)
            (void)net_pending_event(loop, i, now, 0);
        else if (loop->pending[i].deadline_ms < next)
            next = loop->pending[i].deadline_ms;
    }
    for (size_t i = loop->closing.size(); i-- > 0;) {
        if (now >= loop->closing[i].deadline_ms) {
            net_close(loop, loop->closing[i].fd);
            loop->closing.erase(loop->closing.begin() + (long)i);
        } else if (loop->closing[i].deadline_ms < next) {
            next = loop->closing[i].deadline_ms;
        }
    }
    if (!loop->stopping && !loop->listening) {
        if (now >= loop->listen_resume_ms)
            net_listen_on(loop, true);
        else if (loop->listen_resume_ms < next)
            next = loop->listen_resume_ms;
    }
    return (int)(next > now ? next - now : 0);
}

static void net_dispatch(struct net_loop *loop, const struct epoll_event *ev,
                         uint64_t now)
{
    enum net_kind kind = (enum net_kind)(ev->data.u64 >> 32);
    int fd = (int)(uint32_t)ev->data.u64;

    switch (kind) {
    case NET_LISTEN:
        if (loop->listening)
            net_accept(loop, fd, now);
        break;
    case NET_WAKE:
        net_take_handoffs(loop);
        break;
    case NET_PENDING:
        for (size_t i = 0; i < loop->pending.size(); i++)
            if (loop->pending[i].fd == fd) {
                (void)net_pending_event(loop, i, now, ev->events);
                break;
            }
        break;
    case NET_CLOSING:
        net_closing_event(loop, fd);
        break;
    }
}

/* Stop: nothing new is accepted and pending connections are dropped;
 * sockets handed back are still closed as usual. */
static void net_begin_stop(struct net_loop *loop)
{
    loop->stopping = true;
    net_listen_on(loop, false);
    for (const net_pending &p : loop->pending) {
        scp__tls_session_free(p.session);
        net_close(loop, p.fd);
    }
    loop->pending.clear();
    net_set_pending_count(loop);
}

static void net_loop_free(struct net_loop *loop)
{
    for (const net_pending &p : loop->pending) {
        scp__tls_session_free(p.session);
        (void)close(p.fd);
    }
    for (const net_closing &c : loop->closing)
        (void)close(c.fd);
    loop->pending.clear();
    loop->closing.clear();
    net_set_pending_count(loop);
    if (loop->reserve_fd >= 0)
        (void)close(loop->reserve_fd);
    if (loop->epoll_fd >= 0)
        (void)close(loop->epoll_fd);
}

static unsigned net_active(const struct scp *scp)
{
    pthread_mutex_lock(&((struct scp *)scp)->lock);
    unsigned n = scp->active;
    pthread_mutex_unlock(&((struct scp *)scp)->lock);
    return n;
}

int scp__serve(struct scp *scp, unsigned grace_s)
{
    struct net_loop loop;
    struct epoll_event events[SCP_EVENTS];
    uint64_t stop_deadline = 0;
    int result = 0;

    loop.scp = scp;
    loop.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    loop.buf.resize(SCP_MAX_RQ_PDU + 6);
    loop.closing_max =
        scp__closing_max(scp->max_associations, scp->max_pending);
    loop.close_wait_ms = (uint64_t)(scp->timeout_s < SCP_CLOSE_WAIT_MAX_S
                                        ? scp->timeout_s
                                        : SCP_CLOSE_WAIT_MAX_S) *
                         1000u;
    loop.next_number = 0;
    loop.listening = false;
    loop.stopping = false;
    loop.reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    loop.listen_resume_ms = 0;
    loop.pause_ms = 0;
    loop.fd_failures = 0;
    loop.fd_refused = 0;
    loop.fd_logged_ms = 0;
    loop.fd_short = false;
    if (loop.epoll_fd < 0) {
        int e = errno;
        log_err("event=scp-failed reason=\"epoll_create1() failed: %s\"",
                strerror(e));
        net_loop_free(&loop);
        return -e;
    }
    net_watch(&loop, NET_WAKE, scp->wake_fd, EPOLLIN, EPOLL_CTL_ADD);
    net_listen_on(&loop, true);

    for (;;) {
        uint64_t now = util_now_monotonic_ms();

        if (!loop.stopping && scp->should_stop(scp->stop_ctx)) {
            net_begin_stop(&loop);
            stop_deadline = now + (uint64_t)grace_s * 1000u;
        }
        if (loop.stopping) {
            unsigned active = net_active(scp);
            if (active == 0)
                break;
            if (now >= stop_deadline) {
                log_warning("event=shutdown-timeout associations=%u "
                            "grace_s=%u",
                            active, grace_s);
                result = -ETIMEDOUT;
                break;
            }
        }
        /* Spent or taken by another thread: get it back when we can. */
        if (loop.reserve_fd < 0)
            loop.reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        int wait_ms = net_deadlines(&loop, now);
        if (loop.stopping && (uint64_t)wait_ms > stop_deadline - now)
            wait_ms = (int)(stop_deadline - now);
        int n = epoll_wait(loop.epoll_fd, events, SCP_EVENTS, wait_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            result = -errno;
            log_err("event=scp-failed reason=\"epoll_wait() failed: %s\"",
                    strerror(errno));
            break;
        }
        now = util_now_monotonic_ms();
        for (int i = 0; i < n; i++)
            net_dispatch(&loop, &events[i], now);
    }
    net_take_handoffs(&loop);
    net_loop_free(&loop);
    return result;
}

int scp__open_listener(const char *bind_address, uint16_t port, int *ret_fd,
                       char *err, size_t err_len)
{
    struct sockaddr_storage addr;
    socklen_t addr_len;
    int one = 1;
    int zero = 0;
    int family = AF_INET6;
    int fd;

    memset(&addr, 0, sizeof(addr));
    if (bind_address != NULL && bind_address[0] != '\0') {
        struct sockaddr_in *in = (struct sockaddr_in *)&addr;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&addr;
        if (inet_pton(AF_INET, bind_address, &in->sin_addr) == 1) {
            family = AF_INET;
        } else if (inet_pton(AF_INET6, bind_address, &in6->sin6_addr) != 1) {
            if (err != NULL)
                snprintf(err, err_len,
                         "dicom.bind_address '%s' is not an IPv4 or IPv6 "
                         "address",
                         bind_address);
            return -EINVAL;
        }
    }
    fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 && family == AF_INET6 &&
        (bind_address == NULL || bind_address[0] == '\0') &&
        errno == EAFNOSUPPORT) {
        family = AF_INET; /* no IPv6 on this host: every IPv4 address */
        fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    }
    if (fd < 0) {
        int e = errno;
        if (err != NULL)
            snprintf(err, err_len, "socket() failed: %s", strerror(e));
        return -e;
    }
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&addr;
        bool any = bind_address == NULL || bind_address[0] == '\0';
        /* Every address means IPv4 too (mapped); a given IPv6 address
         * means that one only. */
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, any ? &zero : &one,
                         sizeof(int));
        in6->sin6_family = AF_INET6;
        if (any)
            in6->sin6_addr = in6addr_any;
        in6->sin6_port = htons(port);
        addr_len = sizeof(*in6);
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)&addr;
        in->sin_family = AF_INET;
        if (bind_address == NULL || bind_address[0] == '\0')
            in->sin_addr.s_addr = htonl(INADDR_ANY);
        in->sin_port = htons(port);
        addr_len = sizeof(*in);
    }
    if (bind(fd, (struct sockaddr *)&addr, addr_len) < 0 ||
        listen(fd, 128) < 0) {
        int e = errno;
        if (err != NULL)
            snprintf(err, err_len, "cannot listen on %s port %u: %s",
                     bind_address != NULL && bind_address[0] != '\0'
                         ? bind_address
                         : "every address,",
                     (unsigned)port, strerror(e));
        (void)close(fd);
        return -e;
    }
    *ret_fd = fd;
    return 0;
}

int scp__net_setup(struct scp *scp, const struct scp_params *params, char *err,
                   size_t err_len)
{
    int r;

    for (size_t i = 0; i < params->caller_count; i++) {
        const struct scp_caller_rule *in = &params->callers[i];
        std::unique_ptr<scp_caller_binding> b(new scp_caller_binding());

        for (size_t k = 0; k < in->certificate_sha256_count; k++)
            b->sha256.push_back(in->certificate_sha256[k]);
        for (const std::string &text : b->sha256)
            b->sha256_ptrs.push_back(text.c_str());
        memset(&b->rule, 0, sizeof(b->rule));
        b->rule.certificate_sha256 = b->sha256_ptrs.data();
        b->rule.certificate_sha256_count = b->sha256_ptrs.size();
        if (in->certificate_subject != NULL) {
            b->subject = in->certificate_subject;
            b->rule.certificate_subject = b->subject.c_str();
        }
        b->rule.tls_only = in->tls_only;
        scp->bindings.push_back(std::move(b));
    }
    for (size_t i = 0; i < params->trusted_proxy_count; i++) {
        proxy_net net;
        if (proxy_net_parse(params->trusted_proxies[i], &net) < 0) {
            snprintf(err, err_len,
                     "dicom.proxy_protocol.trusted_proxies[%zu]: '%s' is "
                     "not an address or network",
                     i, params->trusted_proxies[i]);
            return -EINVAL;
        }
        scp->trusted_proxies.push_back(net);
    }
    if (params->port == 0 && params->tls == NULL) {
        snprintf(err, err_len,
                 "no listener: dicom.port is 0 and TLS is not configured");
        return -EINVAL;
    }
    if (params->tls != NULL && params->tls->port == params->port) {
        snprintf(err, err_len,
                 "dicom.tls.port %u is also dicom.port: the TLS port must "
                 "differ (PS3.15 B.1)",
                 (unsigned)params->port);
        return -EINVAL;
    }
    if (params->tls != NULL) {
        r = scp__tls_new(params->tls, &scp->tls, err, err_len);
        if (r < 0)
            return r;
        scp->tls_port = params->tls->port;
    }
    if (params->port != 0) {
        r = scp__open_listener(params->bind_address, params->port,
                               &scp->listen_fd, err, err_len);
        if (r < 0)
            return r;
    }
    if (params->tls != NULL) {
        r = scp__open_listener(params->bind_address, params->tls->port,
                               &scp->tls_listen_fd, err, err_len);
        if (r < 0)
            return r;
    }
    return 0;
}

void scp__net_teardown(struct scp *scp)
{
    for (auto &entry : scp->tls_handoff)
        scp__tls_session_free(entry.second);
    scp->tls_handoff.clear();
    if (scp->tls_listen_fd >= 0)
        (void)close(scp->tls_listen_fd);
    scp->tls_listen_fd = -1;
    scp__tls_free(scp->tls);
    scp->tls = NULL;
}

extern "C" int scp_tls_reload(struct scp *scp, char *err, size_t err_len)
{
    char sha[96];
    char subject[256];

    if (scp->tls == NULL) {
        snprintf(err, err_len, "no TLS listener");
        return -ENOENT;
    }
    int r = scp__tls_reload(scp->tls, err, err_len);
    if (r < 0) {
        log_err("event=tls-reload-failed reason=\"%s\", keeping the "
                "certificate in use",
                err);
        return r;
    }
    scp__tls_server_identity(scp->tls, sha, sizeof(sha), subject,
                             sizeof(subject));
    log_notice("event=tls-reloaded cert_sha256=%s cert_subject=\"%s\"", sha,
               subject);
    return 0;
}
