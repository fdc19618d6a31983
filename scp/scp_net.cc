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
 *            the oldest pending one of the address holding the most (an
 *            address holding a quarter of the set loses its own oldest):
 *            a trickling flood keeps being replaced by newcomers while a
 *            real SCU, whose request arrives at once, gets through.
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
#include "scp_rq.h"
#include "base/util.h"

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
    uint32_t addr;              /* IPv4, network order */
    char peer[64];
    uint64_t since_ms;
    uint64_t deadline_ms;
    size_t want;                /* bytes needed: 6, then the whole PDU */
    bool have_head;
    bool peer_done;             /* the peer shut its side (EPOLLRDHUP) */
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
    std::vector<unsigned char> buf;   /* one A-ASSOCIATE-RQ at a time */
    size_t closing_max;
    uint64_t close_wait_ms;
    unsigned long next_number;
    bool listening;                   /* the listener is in the epoll set */
    bool stopping;
    int reserve_fd;                   /* spent to refuse when out of fds */
    uint64_t listen_resume_ms;
    unsigned pause_ms;
    unsigned long fd_failures;        /* since the last log line */
    unsigned long fd_refused;
    uint64_t fd_logged_ms;
    bool fd_short;                    /* in a stretch of failures */
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

static void net_send_reject(int fd, unsigned char result,
                            unsigned char source, unsigned char reason)
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

static void net_drop_pending(struct net_loop *loop, size_t i,
                             const char *why)
{
    log_warning("event=dropped from=%s reason=\"%s\"", loop->pending[i].peer,
                why);
    net_close(loop, loop->pending[i].fd);
    loop->pending.erase(loop->pending.begin() + (long)i);
}

/*
 * Makes room for one more pending connection from @addr: evicts the
 * oldest of @addr's own when it holds its share, else, when the set is
 * full, the oldest of the address holding the most.
 */
static void net_make_room(struct net_loop *loop, uint32_t addr)
{
    unsigned share = loop->scp->max_pending / 4;
    size_t victim = SIZE_MAX;
    size_t same = 0;

    if (share == 0)
        share = 1;
    for (const net_pending &p : loop->pending)
        same += p.addr == addr;
    if (same >= share) {
        for (size_t i = 0; i < loop->pending.size() && victim == SIZE_MAX;
             i++)
            if (loop->pending[i].addr == addr)
                victim = i;
    } else if (loop->pending.size() >= loop->scp->max_pending) {
        size_t best = 0;
        for (size_t i = 0; i < loop->pending.size(); i++) {
            size_t count = 0;
            for (const net_pending &p : loop->pending)
                count += p.addr == loop->pending[i].addr;
            if (count > best) {   /* the first one is the oldest */
                best = count;
                victim = i;
            }
        }
    }
    if (victim == SIZE_MAX)
        return;
    char why[192];
    snprintf(why, sizeof(why),
             "evicted: the oldest of %zu connections still sending their "
             "association request (dicom.max_pending %u, at most %u from "
             "one address)",
             loop->pending.size(), loop->scp->max_pending, share);
    net_drop_pending(loop, victim, why);
}

/* What a pending connection's bytes say so far. */
enum net_step { NET_WAIT, NET_DROP, NET_READY };

/*
 * Looks at what @p has buffered, without reading it: the PDU header
 * first, then whether the whole PDU is there. On NET_READY the PDU is in
 * loop->buf. On NET_DROP @why says why.
 */
static enum net_step net_pending_step(struct net_loop *loop,
                                      net_pending *p, uint64_t now,
                                      char *why, size_t why_len)
{
    int avail = 0;
    unsigned char head[6];
    ssize_t n;

    if (ioctl(p->fd, FIONREAD, &avail) < 0)
        avail = 0;
    if (!p->have_head && avail >= 6) {
        n = recv(p->fd, head, sizeof(head), MSG_PEEK | MSG_DONTWAIT);
        if (n == (ssize_t)sizeof(head)) {
            uint32_t len = ((uint32_t)head[2] << 24) |
                           ((uint32_t)head[3] << 16) |
                           ((uint32_t)head[4] << 8) | (uint32_t)head[5];
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
    /* Nothing more will come once the peer has closed or failed. */
    n = recv(p->fd, head, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || p->peer_done) {
        snprintf(why, why_len, "%s",
                 p->have_head
                     ? "closed by the peer in the middle of its "
                       "A-ASSOCIATE-RQ"
                     : "closed by the peer before an association request");
        return NET_DROP;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        snprintf(why, why_len, "recv() failed: %s", strerror(errno));
        return NET_DROP;
    }
    if (now >= p->deadline_ms) {
        snprintf(why, why_len, "%s",
                 p->have_head ? "incomplete A-ASSOCIATE-RQ (timeout)"
                              : "no association request (timeout)");
        return NET_DROP;
    }
    return NET_WAIT;
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
                               const char *peer, unsigned char *ret_reason,
                               char *buf, size_t buf_len)
{
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

/* A whole A-ASSOCIATE-RQ is in loop->buf: refuse it here, or take a slot
 * and start its association thread. Refusals never take a slot or a
 * thread, so a flood of them cannot crowd out a real caller. */
static void net_request(struct net_loop *loop, const net_pending *p)
{
    struct scp *scp = loop->scp;
    struct scp_rq rq;
    char why[256];
    char calling[17];
    char called[17];
    unsigned long number = ++loop->next_number;
    enum scp_rq_verdict verdict =
        scp_rq_check(loop->buf.data(), p->want, &rq, why, sizeof(why));

    net_titles(&rq, calling, called);
    if (verdict != SCP_RQ_OK) {
        log_warning("event=dropped assoc=%lu from=%s@%s reason=\"malformed "
                    "A-ASSOCIATE-RQ: %s\"",
                    number, calling, p->peer, why);
        net_consume(loop, p->fd, p->want);
        if (verdict == SCP_RQ_PROTOCOL_VERSION)
            net_send_reject(p->fd, RJ_PERMANENT, RJ_SOURCE_ACSE,
                            RJ_REASON_PROTOCOL_VERSION);
        else
            scp__send_abort(p->fd, AB_SOURCE_PROVIDER,
                            AB_REASON_INVALID_PARAMETER);
        net_close_later(loop, p->fd);
        return;
    }

    unsigned char reason = 0;
    const char *refusal = net_refusal(loop, &rq, calling, called, p->peer,
                                      &reason, why, sizeof(why));
    if (refusal != NULL) {
        log_warning("event=rejected assoc=%lu from=%s@%s called=%s "
                    "reason=\"%s\"",
                    number, calling, p->peer, called, refusal);
        net_consume(loop, p->fd, p->want);
        net_send_reject(p->fd, RJ_PERMANENT, RJ_SOURCE_USER, reason);
        net_close_later(loop, p->fd);
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
                    number, calling, p->peer, called,
                    scp->max_associations);
        net_consume(loop, p->fd, p->want);
        net_send_reject(p->fd, RJ_TRANSIENT, RJ_SOURCE_PRESENTATION,
                        RJ_REASON_LOCAL_LIMIT);
        net_close_later(loop, p->fd);
        return;
    }

    struct scp_conn *conn = new (std::nothrow) scp_conn();
    int r = ENOMEM;
    net_unwatch(loop, p->fd);
    if (conn != NULL) {
        conn->scp = scp;
        conn->fd = p->fd;
        conn->number = number;
        snprintf(conn->peer, sizeof(conn->peer), "%s", p->peer);
        r = scp__start_association(conn);
    }
    if (r == 0)
        return;
    delete conn;
    scp__association_done(scp);
    log_err("event=rejected assoc=%lu from=%s@%s reason=\"cannot start a "
            "thread: %s\"",
            number, calling, p->peer, strerror(r));
    net_consume(loop, p->fd, p->want);
    net_send_reject(p->fd, RJ_TRANSIENT, RJ_SOURCE_PRESENTATION,
                    RJ_REASON_CONGESTION);
    net_close_later(loop, p->fd);
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
    net_watch(loop, NET_LISTEN, loop->scp->listen_fd, EPOLLIN,
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
static void net_out_of_fds(struct net_loop *loop, int err, uint64_t now)
{
    struct scp *scp = loop->scp;

    loop->fd_failures++;
    if (loop->reserve_fd >= 0) {
        (void)close(loop->reserve_fd);
        loop->reserve_fd = -1;
        int fd = accept4(scp->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
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

static void net_accept(struct net_loop *loop, uint64_t now)
{
    struct scp *scp = loop->scp;

    for (int i = 0; i < SCP_ACCEPT_BATCH; i++) {
        struct sockaddr_in addr;
        socklen_t addr_len = sizeof(addr);
        int one = 1;
        int fd = accept4(scp->listen_fd, (struct sockaddr *)&addr, &addr_len,
                         SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == EINTR || e == ECONNABORTED)
                continue;
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM)
                net_out_of_fds(loop, e, now);
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
        memset(&p, 0, sizeof(p));
        p.fd = fd;
        p.addr = addr.sin_addr.s_addr;
        if (inet_ntop(AF_INET, &addr.sin_addr, p.peer, sizeof(p.peer)) ==
            NULL)
            (void)snprintf(p.peer, sizeof(p.peer), "?");
        p.since_ms = now;
        p.deadline_ms = now + (uint64_t)scp->timeout_s * 1000u;
        p.want = 6;
        net_make_room(loop, p.addr);
        loop->pending.push_back(p);
        net_watch(loop, NET_PENDING, fd, EPOLLIN | EPOLLRDHUP | EPOLLET,
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
        ssize_t n = recv(fd, loop->buf.data(), loop->buf.size(),
                         MSG_DONTWAIT);
        if (n > 0) {
            total += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
                      errno == EINTR))
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
            net_accept(loop, now);
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
    for (const net_pending &p : loop->pending)
        net_close(loop, p.fd);
    loop->pending.clear();
    net_set_pending_count(loop);
}

static void net_loop_free(struct net_loop *loop)
{
    for (const net_pending &p : loop->pending)
        (void)close(p.fd);
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
    loop.closing_max = scp__closing_max(scp->max_associations,
                                        scp->max_pending);
    loop.close_wait_ms = (uint64_t)(scp->timeout_s < SCP_CLOSE_WAIT_MAX_S
                                        ? scp->timeout_s
                                        : SCP_CLOSE_WAIT_MAX_S) * 1000u;
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

int scp__open_listener(uint16_t port, int *ret_fd, char *err, size_t err_len)
{
    struct sockaddr_in addr;
    int one = 1;
    int fd;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        int e = errno;
        if (err != NULL)
            snprintf(err, err_len, "socket() failed: %s", strerror(e));
        return -e;
    }
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons(port);
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        listen(fd, 128) < 0) {
        int e = errno;
        if (err != NULL)
            snprintf(err, err_len, "cannot listen on port %u: %s",
                     (unsigned)port, strerror(e));
        (void)close(fd);
        return -e;
    }
    *ret_fd = fd;
    return 0;
}
