/* SPDX-License-Identifier: Apache-2.0 */
/*
 * scp_int - declarations shared by the files of the scp module (C++ only,
 * never included outside scp/), laid out by DIMSE service as DCMTK's
 * dcmnet is:
 *   scp.cc      the public API: scp_global_init(), scp_new(), scp_run(),
 *               scp_free();
 *   assoc.cc    one thread per association: negotiation, the command
 *               loop and its dispatch table scp_services[];
 *   echo.cc     C-ECHO;
 *   store.cc    C-STORE, into the spool;
 *   find.cc     C-FIND, handed to the C handler of scp_params.find;
 *   retrieve.cc C-MOVE and C-GET, handed to the C handler of
 *               scp_params.retrieve, sent on a sub-association
 *               (outbound.cc) or the caller's association;
 *   charset.cc  the character sets of C-FIND identifiers;
 *   commit.cc   Storage Commitment's N-ACTION and N-EVENT-REPORT, and
 *   outbound.cc associations we open (commit_int.h);
 *   scp_net.cc  the connection loop on the scp_run() thread: accept,
 *               the wait for a whole A-ASSOCIATE-RQ, its structural check
 *               (scp_rq.h), the association limit, and the closing of
 *               every socket whose association has ended;
 *   scp_pdu.cc  the transport layer DCMTK reads through: it splits a
 *               P-DATA-TF PDU of several PDVs into one PDU per PDV, and
 *               reads and writes through the connection's TLS session;
 *   tls.cc      DICOM TLS (tls.h); proxy.c the PROXY header (proxy.h).
 *
 * Ownership of a connection's socket: the loop owns it until
 * scp__start_association() succeeds; then the association thread, and
 * DCMTK inside it through a scp_pdu.cc connection, owns it; when DCMTK
 * closes that connection, it hands the socket back with scp__hand_back(),
 * and the loop closes it once the peer has closed its side or the closing
 * deadline passed.
 *
 * A TLS connection's session (tls.h) travels with its socket: the loop
 * puts it in scp->tls_handoff under the socket's number before starting
 * the thread, the transport layer takes it out when DCMTK makes a
 * connection of that socket, and scp__hand_back() frees one never taken.
 *
 * Locking: scp->lock guards active, pending, handoff and tls_handoff.
 * Everything else
 * in struct scp is set before scp_run() starts and read-only afterwards.
 */
#ifndef STOWBRIDGE_SCP_INT_H
#define STOWBRIDGE_SCP_INT_H

#include <pthread.h>
#include <stdint.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dimse.h"
#include "dcmtk/ofstd/ofstring.h"

#include "base/util.h"
#include "commit_int.h"
#include "proxy.h"
#include "scp.h"

struct scp_tls;
struct scp_tls_session;
class DcmItem;
class DcmTransportConnection;
class DcmTransportLayer;

/* The largest A-ASSOCIATE-RQ we take (DCMTK's own limit is 1 MiB; a
 * proposal of 128 contexts with many syntaxes each is ~130 KiB). */
#define SCP_MAX_RQ_PDU (192u * 1024u)
/* How long a socket whose association ended may wait for the peer to
 * close it: dicom.timeout_s, and never more than this (seconds). */
#define SCP_CLOSE_WAIT_MAX_S 10
/* The smallest maximum PDU length a peer may announce (0 aside: no
 * limit). DCMTK 3.6.7 cannot send a P-DATA-TF PDU to a peer announcing
 * less than 14 bytes ("receiver's max PDU size ... is illegal (must be >
 * 12)", dulfsm.cc sendPDataTCP(): it reserves 12 bytes for the PDU and PDV
 * headers); with 14 every response still goes out, two bytes a PDU
 * (measured in tests/integration/scp_it.py, max_pdu). */
#define SCP_MIN_PEER_PDU 14u

/* How many sockets may wait in the closing set at once; beyond, the
 * oldest is closed at once. */
static inline size_t scp__closing_max(unsigned max_associations,
                                      unsigned max_pending)
{
    return 2 * ((size_t)max_associations + max_pending) + 16;
}

/* The certificate binding of caller rule i (tls_only, certificate_sha256,
 * certificate_subject), copied by scp__net_setup(); rule points into the
 * strings here. */
struct scp_caller_binding {
    std::vector<std::string> sha256;
    std::vector<const char *> sha256_ptrs;
    std::string subject;
    struct scp_caller_rule rule;
};

/* One entry of scp_params.remotes, copied. */
struct scp_remote_entry {
    std::string ae_title;
    std::string host;
    uint16_t port = 0;
    bool tls = false;
    std::string certificate_sha256; /* "": no pin */
};

struct scp {
    char ae_title[UTIL_AE_TITLE_MAX + 1];
    uint16_t port;
    unsigned max_associations;
    unsigned max_pending;
    uint32_t max_pdu;
    unsigned timeout_s;
    struct scp_caller_rule *callers;
    size_t caller_count;
    struct spool *spool;
    uint64_t min_free_mb;
    const struct scp_find_handler *find;     /* NULL: no C-FIND */
    const struct scp_commit_handler *commit; /* NULL: no commitment */
    const struct scp_retrieve_handler *retrieve = nullptr; /* NULL: none */
    std::vector<scp_remote_entry> remotes;
    struct scp_out_tls out_tls; /* on: outbound TLS material */
    bool accept_unknown_storage;
    std::vector<std::string> extra_storage;
    struct scp_observer observer;

    int listen_fd;          /* ours: DCMTK never accepts itself;
                             * -1 when dicom.port is 0 */
    int tls_listen_fd = -1; /* the TLS port, or -1 */
    uint16_t tls_port = 0;
    struct scp_tls *tls = nullptr; /* NULL: no TLS listener */
    std::vector<proxy_net> trusted_proxies;
    std::map<int, scp_tls_session *> tls_handoff;
    /* One per entry of callers, in order. */
    std::vector<std::unique_ptr<scp_caller_binding>> bindings;
    int wake_fd;              /* eventfd: wakes the loop */
    T_ASC_Network *network;   /* DCMTK's, used only to parse RQs */
    DcmTransportLayer *layer; /* scp_pdu.cc's, set on the network */
    scp_stop_fn should_stop;
    void *stop_ctx;

    /* SCP_BIG_HOLD bytes, mapped (NULL: none), and whether a C-STORE
     * has it (store.cc). */
    unsigned char *big_hold_buffer = nullptr;
    std::atomic<bool> big_hold_busy{ false };

    pthread_mutex_t lock;
    unsigned active;          /* associations holding a slot */
    unsigned pending;         /* connections still sending their RQ */
    std::vector<int> handoff; /* sockets handed back, to be closed */
};

/* One connection the loop hands to a new association thread. */
struct scp_conn {
    struct scp *scp;
    int fd;
    unsigned long number; /* the association number in the log */
    char peer[64];        /* dotted IPv4 or IPv6 */
};

/*
 * The C-STORE receive buffers (store.cc), mapped (page aligned, so the
 * journal writes a held instance from them in place; only the pages an
 * instance used count in RSS):
 *   SCP_WRITE_BUFFER  each association's, for its whole life. An instance
 *                     up to this size (and spool.journal_max_kb) is held
 *                     here whole and committed from memory; anything
 *                     bigger goes to a spool file, written out each time
 *                     the buffer fills (DCMTK hands over one PDV fragment
 *                     at a time, often ~10 KB, and one write(2) each would
 *                     cost more than the fsync);
 *   SCP_BIG_HOLD      the SCP's one bigger buffer (a CT or MR image fits),
 *                     taken by one C-STORE at a time whose instance
 *                     outgrows its association's buffer (what it received
 *                     is copied over), given back when that C-STORE ends:
 *                     a bigger instance is held while it is free, else it
 *                     goes to a spool file.
 */
#define SCP_WRITE_BUFFER (256u * 1024u)
#define SCP_BIG_HOLD (1024u * 1024u)

/* One association being served, owned by its thread. */
struct scp_assoc {
    struct scp *scp;
    T_ASC_Association *assoc;
    unsigned char *write_buffer; /* SCP_WRITE_BUFFER bytes, mapped */
    bool big_hold; /* its C-STORE has scp->big_hold_buffer (store.cc) */
    unsigned long number;
    char calling_ae[UTIL_AE_TITLE_MAX + 1];
    char peer[64];
    unsigned long stores;    /* C-STORE-RQs served */
    unsigned long finds;     /* C-FIND-RQs served */
    unsigned long retrieves; /* C-MOVE-RQs and C-GET-RQs served */
    /* commit.cc: reports to try on this association; NULL: none. */
    struct scp_commit_waiting *commit_waiting;
};

/*
 * One DIMSE service: the request @msg arrived on context @pres_id of
 * @sa (a context we accepted, or one the service must check). The
 * service answers it, counts it in @sa, and logs its own outcome. Returns
 * a bad condition only when the association cannot go on (network
 * failure, abort, protocol error): the caller then aborts it.
 */
typedef OFCondition (*scp_service_fn)(struct scp_assoc *sa,
                                      T_ASC_PresentationContextID pres_id,
                                      T_DIMSE_Message *msg);

/* echo.cc, store.cc, find.cc: the services of the dispatch table. */
OFCondition scp__echo_serve(struct scp_assoc *sa,
                            T_ASC_PresentationContextID pres_id,
                            T_DIMSE_Message *msg);
OFCondition scp__store_serve(struct scp_assoc *sa,
                             T_ASC_PresentationContextID pres_id,
                             T_DIMSE_Message *msg);
OFCondition scp__find_serve(struct scp_assoc *sa,
                            T_ASC_PresentationContextID pres_id,
                            T_DIMSE_Message *msg);
/* retrieve.cc: C-MOVE-RQ and C-GET-RQ. */
OFCondition scp__move_serve(struct scp_assoc *sa,
                            T_ASC_PresentationContextID pres_id,
                            T_DIMSE_Message *msg);
OFCondition scp__get_serve(struct scp_assoc *sa,
                           T_ASC_PresentationContextID pres_id,
                           T_DIMSE_Message *msg);

/* True for the Patient Root and Study Root MOVE and GET SOP classes. */
bool scp__is_retrieve_class(const char *uid);

/* Copies the retrieve handler, the remote AEs and the outbound TLS
 * material of @params into @scp (scp_new()). */
int scp__retrieve_setup(struct scp *scp, const struct scp_params *params,
                        char *err, size_t err_len);

/* The remote AE called @ae_title, or NULL. */
const scp_remote_entry *scp__find_remote(const struct scp *scp,
                                         const char *ae_title);

/* find.cc: copies the DCMTK item @item into @out (values as text);
 * false on out-of-memory. */
bool scp__item_to_ds(DcmItem *item, struct ds *out);

/* commit.cc: N-ACTION-RQ of Storage Commitment (commit_int.h). */
OFCondition scp__commit_serve(struct scp_assoc *sa,
                              T_ASC_PresentationContextID pres_id,
                              T_DIMSE_Message *msg);
/* commit.cc, commit.same_association: while @sa is idle, sends the
 * reports that are ready on it. 0 go on; 1 the SCU released meanwhile
 * (acknowledged); -1 the association failed (abort it). */
int scp__commit_idle(struct scp_assoc *sa);
/* commit.cc: @sa ended; its reports not sent go on new associations. */
void scp__commit_assoc_end(struct scp_assoc *sa);

/* charset.cc */

/* True if a value of @ds (or of its items) is not ASCII. */
bool scp__ds_has_non_ascii(const struct ds *ds);

/*
 * Reads the Specific Character Set (0008,0005) of the C-FIND identifier
 * @identifier, without surrounding spaces, into @ret_charset ("" when
 * absent), and converts @identifier to UTF-8 unless it is already. False
 * when DCMTK cannot convert it (@ret_charset is set for the log).
 */
bool scp__charset_request_to_utf8(DcmDataset *identifier,
                                  OFString &ret_charset);

/*
 * Gives the answer @dset (values in UTF-8, built from @answer) the
 * character set the SCU asked for (@charset, "" for none): pure ASCII
 * answers carry @charset as is, or none; others are converted to
 * @charset when every character can be represented there, else sent in
 * UTF-8 with (0008,0005) "ISO_IR 192" (logged once per answer).
 */
std::unique_ptr<DcmDataset>
scp__charset_answer(struct scp_assoc *sa, const struct ds *answer,
                    std::unique_ptr<DcmDataset> dset, const OFString &charset);

/* scp.cc */

/* Copies a DIMSE UID field without the trailing spaces or NULs some SCUs
 * send; returns false if it does not fit in @dst_size. */
bool scp__copy_trimmed_uid(char *dst, size_t dst_size, const char *src);

/* scp_net.cc */

/* Binds and listens on @port of @bind_address (NULL or "": every IPv4
 * and IPv6 address), close-on-exec and non-blocking. */
int scp__open_listener(const char *bind_address, uint16_t port, int *ret_fd,
                       char *err, size_t err_len);

/* The listeners of @params (plain, TLS), the TLS material and the
 * trusted proxies, into @scp; scp_new() calls it once. */
int scp__net_setup(struct scp *scp, const struct scp_params *params, char *err,
                   size_t err_len);

/* Frees what scp__net_setup() made. */
void scp__net_teardown(struct scp *scp);

/* The session handed over with socket @fd, taken out (NULL if none). */
struct scp_tls_session *scp__take_tls_session(struct scp *scp, int fd);

/* The connection loop of scp_run(): returns as scp_run() does. */
int scp__serve(struct scp *scp, unsigned grace_s);

/* Gives the loop a socket whose association has ended (a descriptor of
 * its own: the caller keeps none). Thread-safe; never blocks. */
void scp__hand_back(struct scp *scp, int fd);

/* Releases one association slot taken by the loop. Thread-safe. */
void scp__association_done(struct scp *scp);

/* Sends an A-ABORT PDU (PS3.8 9.3.8) on @fd without blocking: @source 0
 * (service user) or 2 (service provider), with @reason. Best effort. */
void scp__send_abort(int fd, unsigned char source, unsigned char reason);

/* scp_pdu.cc */

/* The transport layer whose connections split P-DATA-TF PDUs of several
 * PDVs (up to @max_pdu bytes, the most we receive) into one PDU per PDV,
 * which works around DCMTK 3.6.7's DUL_NextPDV() (see scp_pdu.cc), and
 * hand their socket back to @scp's loop when DCMTK closes them. NULL on
 * out-of-memory. */
DcmTransportLayer *scp__split_layer_new(struct scp *scp, uint32_t max_pdu);
void scp__split_layer_free(DcmTransportLayer *layer);

/* The descriptor a connection of this thread last took over (then
 * forgotten), or -1: after a failed ASC_receiveAssociation(), -1 means
 * DCMTK never owned the socket and the caller must close it. */
int scp__split_taken(void);

/* Makes @conn (a connection of the split layer) send our A-ABORT when
 * DCMTK closes it. Accepts NULL. */
void scp__abort_on_close(DcmTransportConnection *conn);

/* assoc.cc */

/* dcmExternalSocketHandle is one process-wide variable: the hand-over of
 * a socket to DCMTK (a connection, or the listener to the network) is
 * serialised by this lock. It never waits on the network, since the whole
 * A-ASSOCIATE-RQ is already buffered by then. */
extern pthread_mutex_t scp__handover_lock;

/* The first dicom.allowed_callers rule that @calling_ae at @peer_ip
 * matches (its AE title, when the rule names one, and one of its hosts,
 * when it lists any), or NULL. */
const struct scp_caller_rule *scp__caller_rule(const struct scp *scp,
                                               const char *calling_ae,
                                               const char *peer_ip);

/* True if the caller may associate (dicom.allowed_callers); @ret_find
 * tells whether it may also query (C-FIND offered and its matching rule
 * allows it). */
bool scp__caller_allowed(const struct scp *scp, const char *calling_ae,
                         const char *peer_ip, bool *ret_find);

/* True if the caller may C-MOVE and C-GET (retrieve offered and its
 * matching dicom.allowed_callers rule allows it). */
bool scp__caller_may_retrieve(const struct scp *scp, const char *calling_ae,
                              const char *peer_ip);

/* Starts the thread that serves @conn (which it then owns). Returns 0, or
 * a positive errno when no thread could be started (@conn is still the
 * caller's). */
int scp__start_association(struct scp_conn *conn);

#endif
