/* SPDX-License-Identifier: Apache-2.0 */
/*
 * scp_pdu - the transport layer under DCMTK that splits every P-DATA-TF
 * PDU of several PDVs into one PDU per PDV (see scp_int.h).
 *
 * Why: DCMTK 3.6.7's DUL_NextPDV() (dul.cc, unchanged at DCMTK's HEAD in
 * 2025) moves its pointer to the next PDV by the length of the *next* PDV
 * instead of the current one. From the third PDV of a PDU on, unless all
 * have the same length, it reads lengths and data from the wrong place:
 * a peer sending one P-DATA-TF with a command and two data set fragments
 * of different sizes (legal, PS3.8 9.3.5) makes the receive fail, and with
 * two C-STOREs packed in one PDU the daemon crashed (SEGV in DUL_NextPDV,
 * found by tests/fuzz/dimse_fuzz.py). A PDU of one PDV never takes that
 * path, so DCMTK reads the split stream correctly; PS3.8 gives the same
 * meaning to PDVs in one PDU or in consecutive ones.
 *
 * What it changes: only a P-DATA-TF PDU of at most the maximum length we
 * receive, whose PDV lengths are each at least 2 and add up exactly, with
 * two PDVs or more. Anything else (other PDU types, a P-DATA-TF that is
 * too long or whose PDVs do not add up) passes unchanged, and DCMTK
 * refuses it as before. Reads are exact (a header, then that PDU's body),
 * so no byte beyond the current PDU is ever taken from the socket, and
 * networkDataAvailable() needs to know only about the PDUs split and not
 * yet handed over.
 *
 * The connection also owns the end of the socket: when DCMTK closes it
 * (ASC_dropAssociation(), or its state machine on a peer abort or a
 * timeout), it sends our A-ABORT if scp__abort_on_close() asked for one
 * and hands the descriptor to the connection loop (scp__hand_back()),
 * which waits for the peer and closes it. So no duplicate descriptor is
 * needed and DCMTK never closes a socket under the loop's feet.
 *
 * TLS: a socket handed over with a TLS session (scp__take_tls_session())
 * is read and written through it: first the A-ASSOCIATE-RQ the loop read
 * during its checks, then records; closing sends close_notify first.
 */
#include "scp_int.h"

#include "tls.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include <new>
#include <vector>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmnet/dcmlayer.h"
#include "dcmtk/dcmnet/dcmtrans.h"

namespace {

const unsigned char PDU_P_DATA = 0x04;

/* The descriptor the last createConnection() of this thread took over
 * (ASC_receiveAssociation() runs on the association's own thread). */
thread_local int split_taken = -1;

class SplitConnection : public DcmTCPConnection {
public:
    SplitConnection(DcmNativeSocketType sock, struct scp *scp, uint32_t max_pdu,
                    struct scp_tls_session *tls)
        : DcmTCPConnection(sock), scp_(scp), max_pdu_(max_pdu), pos_(0),
          pass_(0), abort_(false), tls_(tls)
    {
    }

    ~SplitConnection() override { release(); }

    void close() override { release(); }
    void closeTransportConnection() override { release(); }

    void abort_on_close() { abort_ = true; }

    ssize_t read(void *buf, size_t nbyte) override
    {
        if (nbyte == 0)
            return 0;
        if (pos_ < out_.size())
            return hand_over(buf, nbyte);
        if (pass_ > 0) {
            size_t n = nbyte < pass_ ? nbyte : pass_;
            ssize_t r = raw_recv(buf, n);
            if (r > 0)
                pass_ -= (size_t)r;
            return r;
        }
        /* At a PDU boundary: its header, then, for a P-DATA-TF we may
         * split, its whole body. */
        unsigned char head[6];
        ssize_t r = recv_all(head, sizeof(head));
        if (r <= 0)
            return r;
        size_t len = ((size_t)head[2] << 24) | ((size_t)head[3] << 16) |
                     ((size_t)head[4] << 8) | head[5];
        out_.assign(head, head + sizeof(head));
        pos_ = 0;
        if (head[0] != PDU_P_DATA || len > max_pdu_ || len == 0) {
            pass_ = len;
            return hand_over(buf, nbyte);
        }
        out_.resize(sizeof(head) + len);
        r = recv_all(out_.data() + sizeof(head), len);
        if (r <= 0) {
            out_.clear();
            return r;
        }
        split();
        return hand_over(buf, nbyte);
    }

    OFBool networkDataAvailable(int timeout) override
    {
        if (pos_ < out_.size())
            return OFTrue;
        if (tls_ != NULL && scp__tls_buffered(tls_))
            return OFTrue;
        return DcmTCPConnection::networkDataAvailable(timeout);
    }

    ssize_t write(void *buf, size_t nbyte) override
    {
        if (tls_ != NULL)
            return scp__tls_write(tls_, buf, nbyte);
        return DcmTCPConnection::write(buf, nbyte);
    }

    OFBool isTransparentConnection() override { return OFFalse; }

private:
    /* Our A-ABORT if one was asked for, then the socket to the loop. */
    void release()
    {
        int sock = (int)getSocket();

        if (sock < 0)
            return;
        setSocket((DcmNativeSocketType)-1);
        if (tls_ != NULL) {
            if (abort_) {
                const unsigned char pdu[10] = {
                    0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0
                };
                (void)scp__tls_write(tls_, pdu, sizeof(pdu));
            }
            scp__tls_session_free(tls_);
            tls_ = NULL;
        } else if (abort_) {
            scp__send_abort(sock, 0, 0);
        }
        scp__hand_back(scp_, sock);
    }

    ssize_t raw_recv(void *p, size_t len)
    {
        if (tls_ != NULL)
            return scp__tls_read(tls_, p, len);
        return ::recv(getSocket(), p, len, 0);
    }

    /* Reads exactly @len bytes; returns @len, 0 when the peer closed, or
     * -1 (errno set) as recv() does. */
    ssize_t recv_all(unsigned char *p, size_t len)
    {
        size_t got = 0;

        while (got < len) {
            ssize_t r = raw_recv(p + got, len - got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                return r;
            got += (size_t)r;
        }
        return (ssize_t)len;
    }

    /* out_ holds one whole P-DATA-TF PDU: rewrites it as one PDU per PDV
     * when its PDVs are well formed and there are several. */
    void split()
    {
        const unsigned char *body = out_.data() + 6;
        size_t len = out_.size() - 6;
        size_t off = 0;
        size_t count = 0;

        while (off + 4 <= len) {
            size_t pdv = ((size_t)body[off] << 24) |
                         ((size_t)body[off + 1] << 16) |
                         ((size_t)body[off + 2] << 8) | body[off + 3];
            if (pdv < 2 || pdv > len - off - 4)
                return; /* DCMTK refuses it as it stands */
            off += 4 + pdv;
            count++;
        }
        if (off != len || count < 2)
            return;
        std::vector<unsigned char> split;
        split.reserve(out_.size() + 6 * count);
        for (off = 0; off < len;) {
            size_t pdv = ((size_t)body[off] << 24) |
                         ((size_t)body[off + 1] << 16) |
                         ((size_t)body[off + 2] << 8) | body[off + 3];
            size_t item = 4 + pdv;
            const unsigned char head[6] = {
                PDU_P_DATA,
                0,
                (unsigned char)(item >> 24),
                (unsigned char)(item >> 16),
                (unsigned char)(item >> 8),
                (unsigned char)item,
            };
            split.insert(split.end(), head, head + sizeof(head));
            split.insert(split.end(), body + off, body + off + item);
            off += item;
        }
        out_.swap(split);
    }

    ssize_t hand_over(void *buf, size_t nbyte)
    {
        size_t n = out_.size() - pos_;
        if (n > nbyte)
            n = nbyte;
        memcpy(buf, out_.data() + pos_, n);
        pos_ += n;
        if (pos_ == out_.size()) {
            out_.clear();
            pos_ = 0;
        }
        return (ssize_t)n;
    }

    struct scp *scp_;
    uint32_t max_pdu_;
    std::vector<unsigned char> out_; /* bytes for DCMTK, from pos_ */
    size_t pos_;
    size_t pass_; /* body bytes to pass through */
    bool abort_;
    struct scp_tls_session *tls_; /* owned; NULL: plain TCP */
};

class SplitLayer : public DcmTransportLayer {
public:
    SplitLayer(struct scp *scp, uint32_t max_pdu) : scp_(scp), max_pdu_(max_pdu)
    {
    }

    DcmTransportConnection *createConnection(DcmNativeSocketType sock,
                                             OFBool secure) override
    {
        if (secure)
            return NULL;
        /* Taken over even when out of memory: DCMTK then closes it. */
        split_taken = (int)sock;
        struct scp_tls_session *tls = scp__take_tls_session(scp_, (int)sock);
        SplitConnection *conn =
            new (std::nothrow) SplitConnection(sock, scp_, max_pdu_, tls);
        if (conn == NULL)
            scp__tls_session_free(tls);
        return conn;
    }

private:
    struct scp *scp_;
    uint32_t max_pdu_;
};

} // namespace

DcmTransportLayer *scp__split_layer_new(struct scp *scp, uint32_t max_pdu)
{
    return new (std::nothrow) SplitLayer(scp, max_pdu);
}

int scp__split_taken(void)
{
    int fd = split_taken;

    split_taken = -1;
    return fd;
}

void scp__abort_on_close(DcmTransportConnection *conn)
{
    SplitConnection *split = dynamic_cast<SplitConnection *>(conn);

    if (split != NULL)
        split->abort_on_close();
}

void scp__split_layer_free(DcmTransportLayer *layer)
{
    delete layer;
}
