/* SPDX-License-Identifier: Apache-2.0 */
/*
 * scp - the DIMSE service provider: C-ECHO, C-STORE into the spool,
 * C-FIND handed to a C callback, Storage Commitment (N-ACTION handed
 * to a C callback, the N-EVENT-REPORT sent on an association we open;
 * see "Storage Commitment" below), and C-MOVE and C-GET whose instances a
 * C callback hands over as files (see "C-MOVE and C-GET" below)
 * (docs/architecture.md). The only C++
 * module; this header is plain C and no C++ type or exception crosses it.
 *
 * Built on DCMTK's ASC_/DIMSE_ API with our own accept loop (DcmSCPPool
 * leaks a thread stack per association and DcmSCPConfig cannot take all
 * 186 storage SOP classes in 3.6.7). The loop owns every socket until its
 * A-ASSOCIATE-RQ is complete and well-formed (scp_rq.h) and again once its
 * association ended; one detached thread serves each association, at most
 * max_associations at once; beyond that a request is rejected as
 * transient "local limit exceeded". Connections still sending their
 * request count against max_pending, not max_associations; requests
 * refused for their called AE, caller, application context or PDU size
 * never take a slot.
 *
 * Negotiation: Verification; storage for DCMTK 3.6.7's storage SOP
 * classes, every UID under 1.2.840.10008.5.1.4.1.1. (unless
 * accept_unknown_storage_classes is false) and extra_storage; C-FIND
 * when offered and allowed for the caller. The refused abstract syntaxes
 * are logged once per association, with the reason. A peer announcing a
 * maximum PDU length below 14 bytes (0 aside) is rejected: DCMTK could not
 * send it one response.
 *
 * C-STORE: admission (free space) -> receive into spool tmp/ -> validate
 * the file against the command -> spool_commit() -> only then 0000.
 * Failure statuses (A700, A900, C000) never abort the association. A
 * C-CANCEL-RQ with nothing in progress is ignored.
 *
 * Listeners: the plain port and the DICOM TLS port (scp_tls_params), on
 * bind_address or every IPv4 and IPv6 address; we own the sockets, so
 * DCMTK never listens itself. TLS handshakes and PROXY protocol headers
 * (scp_params.trusted_proxies) are read by the connection loop without
 * ever blocking it (see scp_net.cc and tls.cc).
 *
 * Thread safety: scp_run() runs the accept loop on the calling thread;
 * association threads and the loop poll the caller's stop predicate at
 * least every two seconds, so it must be cheap and thread-safe (an atomic
 * load).
 * Errors: 0 or a negative errno, with a reason in @err where given.
 */
#ifndef STOWBRIDGE_SCP_H
#define STOWBRIDGE_SCP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/util.h"

#ifdef __cplusplus
extern "C" {
#endif

struct scp;
struct spool;
struct ds;

/* Returns true once the provider should stop; called from many threads. */
typedef bool (*scp_stop_fn)(void *ctx);

/* One allow-list rule: a caller matches when both parts match. The
 * first matching rule decides; its certificate binding then applies. */
struct scp_caller_rule {
    const char *ae_title;              /* NULL: any calling AE title */
    const struct util_ipv4_net *hosts; /* host_count 0: any address */
    size_t host_count;
    bool find;     /* may query with C-FIND */
    bool commit;   /* may ask Storage Commitment */
    bool retrieve; /* may C-MOVE and C-GET */
    /* SHA-256 fingerprints of the client certificates this caller may
     * present (64 lowercase hex digits each); count 0: any. */
    const char *const *certificate_sha256;
    size_t certificate_sha256_count;
    /* NULL, or the exact subject CN or a DNS/URI subjectAltName the
     * client certificate must carry. */
    const char *certificate_subject;
    bool tls_only; /* refused on the plain port */
};

enum scp_tls_client_cert {
    SCP_TLS_CLIENT_REQUIRED = 0,
    SCP_TLS_CLIENT_OPTIONAL,
    SCP_TLS_CLIENT_NONE,
};

/* DCMTK 3.6.7's BCP 195 profiles (PS3.15 B.9-B.11). */
enum scp_tls_profile {
    SCP_TLS_BCP195_ND = 0,
    SCP_TLS_BCP195,
    SCP_TLS_BCP195_EXTENDED,
};

/* The DICOM TLS listener (dicom.tls.*). Files are read by scp_new() and
 * again by scp_tls_reload(); paths are copied. */
struct scp_tls_params {
    uint16_t port;
    const char *certificate_file;          /* PEM, the chain after it */
    const char *private_key_file;          /* PEM; not readable by others */
    const char *private_key_password_file; /* NULL: key not encrypted */
    const char *ca_file;                   /* CAs of client certificates */
    const char *crl_file;                  /* NULL: no CRL */
    enum scp_tls_client_cert client_certificate;
    enum scp_tls_profile profile;
    /* OpenSSL security level; below 2 also lifts our own checks of peer
     * keys (RSA/DH >= 2048, EC >= 224 bits) and of SHA-1 signatures. */
    unsigned security_level;
};

/* The Query/Retrieve information model of a C-FIND. */
enum scp_find_model {
    SCP_FIND_PATIENT_ROOT = 0,
    SCP_FIND_STUDY_ROOT,
};

/* A C-FIND response status (PS3.4 C.4.1.1.4) with its Error Comment
 * (0000,0902; at most 64 characters are sent). */
struct scp_find_status {
    uint16_t status;
    char comment[65];
};

/*
 * Who answers C-FIND: scp/ calls these from the association's thread,
 * with data sets in UTF-8 (dataset.h); it converts character sets on the
 * way in and out.
 *   begin: one C-FIND starts with @identifier (owned by the caller, valid
 *          until end). Returns a session, or NULL with a failure status in
 *          @ret_status.
 *   next:  the next match as a new data set in *@ret_answer (the keys to
 *          send, without (0008,0005)) and returns 1; or returns 0 with the
 *          final status (0000, FE00 after @cancelled, A700, Cxxx) in
 *          @ret_status. @cancelled is true once the SCU sent C-CANCEL.
 *   end:   releases the session.
 */
struct scp_find_handler {
    void *ctx;
    void *(*begin)(void *ctx, enum scp_find_model model,
                   const struct ds *identifier, const char *caller,
                   struct scp_find_status *ret_status);
    int (*next)(void *session, bool cancelled, struct ds **ret_answer,
                struct scp_find_status *ret_status);
    void (*end)(void *session);
};

/*
 * --- Storage Commitment Push Model (PS3.4 Annex J) ------------------------
 * scp/commit.cc validates an N-ACTION-RQ (Action Type 1) and hands the
 * request to the handler, which must make it durable before it returns 0;
 * only then is N-ACTION-RSP 0000 sent. The report (N-EVENT-REPORT) goes
 * out later, on an association we open (scp_commit_send_report()), or
 * first on the request's own association while the SCU keeps it open,
 * when the handler offers report_take (commit.same_association).
 */

/* Most Referenced SOP Sequence items one request may name; more is
 * refused with 0213 (resource limitation). */
#define SCP_COMMIT_ITEMS_MAX 50000

/* One instance named by a request: Referenced SOP Class UID (0008,1150)
 * and Referenced SOP Instance UID (0008,1155), validated UIDs. */
struct scp_commit_ref {
    char sop_class_uid[UTIL_UID_MAX + 1];
    char sop_instance_uid[UTIL_UID_MAX + 1];
};

/* A validated request; everything borrowed for the call. */
struct scp_commit_request {
    const char *tx_uid; /* Transaction UID (0008,1195) */
    const char *calling_ae;
    const char *peer;                   /* dotted IPv4 */
    const struct scp_commit_ref *items; /* in request order, >= 1 */
    size_t item_count;
    /* scp/ will ask report_take() for this request's report while its
     * association stays open (the handler offers it and we hold the SCP
     * role of the context there); report_done() ends that. */
    bool report_here;
};

struct scp_commit_report;

/*
 * Who takes commitment requests: called from association threads.
 * request() returns 0 once @rq is durable (then 0000 is sent); -EALREADY
 * when the same Transaction UID is active with the same items (also 0000:
 * a retried N-ACTION, reported once); -EEXIST when it is active with other
 * items (0110, "Transaction UID in use"); -ENOSPC (0213); anything else
 * 0110. A reason goes in @err (UIDs and AE titles only).
 */
struct scp_commit_handler {
    void *ctx;
    int (*request)(void *ctx, const struct scp_commit_request *rq, char *err,
                   size_t err_len);
    /*
     * Optional (NULL: reports only go out on new associations). For a
     * request accepted with report_here, the association thread asks
     * about once a second while the association is idle: 1 the report is
     * ready and *@ret_report is filled (valid until report_done()); 0 not
     * yet; < 0 it will not be sent here (scp/ stops asking).
     */
    int (*report_take)(void *ctx, const char *tx_uid,
                       struct scp_commit_report *ret_report);
    /*
     * Ends report_here for @tx_uid, once: @sent when the SCU answered the
     * N-EVENT-REPORT with 0000 on this association; otherwise @why says
     * why the attempt failed, or is NULL when the association ended before
     * the report was taken. Unless @sent, the provider sends the report on
     * a new association.
     */
    void (*report_done)(void *ctx, const char *tx_uid, bool sent,
                        const char *why);
};

/* A remote AE we open associations to (dicom.remote_aes). */
struct scp_remote {
    const char *ae_title;
    const char *host; /* IPv4 address or host name */
    uint16_t port;
    bool tls; /* DICOM TLS with scp_params.outbound_tls */
    /* NULL, or the SHA-256 of the certificate the remote must present
     * (64 lowercase hex digits), checked after the handshake. */
    const char *certificate_sha256;
};

/* Our side of outbound DICOM TLS (dicom.tls.*): the CAs that verify a
 * remote's certificate and our client certificate. Paths are copied. */
struct scp_outbound_tls {
    const char *ca_file;                   /* required */
    const char *certificate_file;          /* NULL: no client certificate */
    const char *private_key_file;          /* with certificate_file */
    const char *private_key_password_file; /* NULL: not encrypted */
    enum scp_tls_profile profile;
    unsigned security_level;
};

/* One instance of a report: @failure_reason 0 is committed; otherwise a
 * Failure Reason (0008,1197) such as 0x0110, 0x0112, 0x0119, 0x0213. */
struct scp_commit_result {
    const char *sop_class_uid;
    const char *sop_instance_uid;
    uint16_t failure_reason;
};

/* An N-EVENT-REPORT: Event Type 1 when no item failed, else 2. */
struct scp_commit_report {
    const char *tx_uid;
    const char *retrieve_ae; /* Retrieve AE Title (0008,0054) */
    const struct scp_commit_result *items;
    size_t item_count;
};

/*
 * Opens an association from @our_ae to @to proposing Storage Commitment
 * Push Model with the SCP role (SCU-role 0, SCP-role 1), Explicit and
 * Implicit VR Little Endian, sends the N-EVENT-REPORT-RQ and waits for its
 * response, then releases. When @to->tls, over DICOM TLS with @tls (NULL:
 * plain only; a remote with tls then gets -EINVAL), as C-MOVE does: the
 * remote's certificate verified against tls->ca_file, its SHA-256 compared
 * with @to->certificate_sha256 when set (-EPERM on a mismatch, the
 * association aborted before anything is sent), our client certificate
 * when tls->certificate_file is set. Every step is bounded by @timeout_s.
 * Returns 0 with the response status in *@ret_status (0000 success; any
 * other status is the peer's answer); -ECONNREFUSED, -ETIMEDOUT,
 * -EHOSTUNREACH, -EIO (an untrusted certificate among them) etc. when no
 * association could be had; -EPROTO when it was rejected, the context or
 * the role refused, or no response came; with the reason in @err.
 * Thread-safe (one network and one TLS layer per call).
 */
int scp_commit_send_report(const char *our_ae, const struct scp_remote *to,
                           const struct scp_outbound_tls *tls,
                           const struct scp_commit_report *report,
                           unsigned timeout_s, uint16_t *ret_status, char *err,
                           size_t err_len);

/*
 * --- C-MOVE and C-GET (PS3.4 C.4.2, C.4.3) ----------------------------
 * Offered (Patient Root and Study Root MOVE and GET) when
 * scp_params.retrieve is set, to callers whose rule allows "retrieve".
 * scp/retrieve.cc receives the identifier, checks the Move Destination
 * against scp_params.remotes (unknown: A801), hands the identifier to the
 * handler and then sends each instance the handler hands out as a file:
 * C-MOVE on one sub-association to the destination (at most 128
 * presentation contexts: each SOP class with Explicit and Implicit VR
 * Little Endian, plus the stored transfer syntaxes seen), C-GET on the
 * caller's own association through the storage contexts it negotiated
 * with the SCP role. An instance stored in a syntax the other side did
 * not accept is decoded (JPEG, JPEG-LS, RLE) to an uncompressed one it
 * did accept, or counted failed. Pending responses carry the four counts;
 * the final one is 0000, B000 with the Failed SOP Instance UID List, A702
 * when every sub-operation failed, or FE00 after C-CANCEL. One
 * event=retrieve_done line is logged per operation (UIDs of nothing, AE
 * titles and counts only).
 */
enum scp_retrieve_kind {
    SCP_RETRIEVE_MOVE = 0,
    SCP_RETRIEVE_GET,
};

/* A refusal of begin(): status (A701, A900, Cxxx ...) and Error
 * Comment (at most 64 characters are sent). */
struct scp_retrieve_status {
    uint16_t status;
    char comment[65];
};

/* What begin() found; borrowed from the session until end(). */
struct scp_retrieve_info {
    unsigned total; /* sub-operations: every instance next() hands out */
    /* The distinct SOP classes among them (for the sub-association). */
    const char *const *sop_classes;
    size_t sop_class_count;
};

/* One sub-operation, as next() hands it out; strings valid until its
 * release(). */
struct scp_retrieve_item {
    const char *path;             /* Part 10 file; NULL: failed, see why */
    const char *sop_class_uid;    /* "" when not known (failed item) */
    const char *sop_instance_uid; /* always set */
    const char *transfer_syntax;  /* of the file; "" when failed */
    const char *why;              /* path NULL: why it could not be had */
    uint64_t size;                /* bytes of the file */
    void *ref;                    /* the handler's */
};

/*
 * Who answers C-MOVE and C-GET, from the association's thread:
 *   begin:   one operation of @kind for @caller; @destination is the
 *            Move Destination (C-MOVE) or NULL. Fills @ret_info and
 *            returns a session, or NULL with a refusal in @ret_status.
 *   next:    waits up to @wait_ms for the next sub-operation: 1 with
 *            *@ret_item filled, -EAGAIN when none is ready yet (the
 *            caller checks for C-CANCEL and asks again), 0 once all
 *            ret_info->total were handed out. Every instance comes out
 *            once, as a file or as a failure.
 *   release: the caller is done with @item (sent or not): the file goes.
 *   cancel:  stop fetching; next() then hands out what remains as
 *            failures, quickly.
 *   end:     releases the session (and any file not yet handed out).
 */
struct scp_retrieve_handler {
    void *ctx;
    void *(*begin)(void *ctx, enum scp_retrieve_kind kind,
                   enum scp_find_model model, const struct ds *identifier,
                   const char *caller, const char *destination,
                   struct scp_retrieve_info *ret_info,
                   struct scp_retrieve_status *ret_status);
    int (*next)(void *session, unsigned wait_ms,
                struct scp_retrieve_item *ret_item);
    void (*release)(void *session, const struct scp_retrieve_item *item);
    void (*cancel)(void *session);
    void (*end)(void *session);
};

/*
 * Who is told what the SCP did (the daemon's metrics), from association
 * threads: each callback must be quick and thread-safe; any may be NULL.
 *   stored:      an instance was committed to the spool (before its
 *                success response goes out);
 *   refused:     a C-STORE was answered with failure @status;
 *   association: an accepted association began (+1) or ended (-1).
 */
struct scp_observer {
    void *ctx;
    void (*stored)(void *ctx, const char *calling_ae, const char *study_uid,
                   uint64_t bytes);
    void (*refused)(void *ctx, uint16_t status);
    void (*association)(void *ctx, int delta);
};

/* max_pending when scp_params leaves it 0. */
#define SCP_DEFAULT_MAX_PENDING 32

struct scp_params {
    const char *ae_title; /* our AE title; other called AEs rejected */
    uint16_t port;        /* plain DICOM; 0: no plain listener */
    /* An IPv4 or IPv6 address to listen on; NULL or "": every IPv4 and
     * IPv6 address. */
    const char *bind_address;
    const struct scp_tls_params *tls; /* NULL: no TLS listener */
    /* Addresses or networks ("10.0.0.0/8", "::1") whose connections start
     * with a PROXY v1/v2 header; count 0: none. Copied. */
    const char *const *trusted_proxies;
    size_t trusted_proxy_count;
    unsigned max_associations;
    /* Connections still sending their A-ASSOCIATE-RQ (0: the default);
     * when full, the oldest of the address holding the most is dropped;
     * while there is room, nobody is. */
    unsigned max_pending;
    uint32_t max_pdu;   /* our maximum receive PDU length */
    unsigned timeout_s; /* ACSE and DIMSE timeout, idle limit */
    const struct scp_caller_rule *callers; /* caller_count 0: anyone */
    size_t caller_count;
    struct spool *spool;  /* borrowed; must outlive the scp */
    uint64_t min_free_mb; /* below this, C-STORE answers A700 */
    /* NULL: C-FIND is not offered (its presentation contexts are
     * refused). Borrowed; must outlive the scp. */
    const struct scp_find_handler *find;
    /* NULL: Storage Commitment is not offered. Borrowed; must outlive the
     * scp. */
    const struct scp_commit_handler *commit;
    /* NULL: C-MOVE and C-GET are not offered. Borrowed; must outlive
     * the scp. */
    const struct scp_retrieve_handler *retrieve;
    /* Move destinations and commitment report targets
     * (dicom.remote_aes); copied. */
    const struct scp_remote *remotes;
    size_t remote_count;
    /* NULL: no remote may have tls set. Copied. */
    const struct scp_outbound_tls *outbound_tls;
    /* Accept every abstract syntax under the storage root
     * 1.2.840.10008.5.1.4.1.1. as storage, not only DCMTK 3.6.7's list. */
    bool accept_unknown_storage_classes;
    /* More storage SOP classes to accept (valid UIDs), copied. */
    const char *const *extra_storage;
    size_t extra_storage_count;
    struct scp_observer observer; /* copied; all NULL: nobody told */
};

/*
 * Sets process-wide DCMTK state: TCP_NODELAY (Nagle off), socket
 * timeouts, the data dictionary check, DCMTK's own logging quieted.
 * Call once, before any thread starts. Returns -ENOENT if DCMTK's data
 * dictionary cannot be loaded.
 */
int scp_global_init(char *err, size_t err_len);

/*
 * Creates the provider and binds its listening port (so a port in use is
 * reported here, before READY=1). Copies everything it keeps from @params.
 */
int scp_new(const struct scp_params *params, struct scp **ret_scp, char *err,
            size_t err_len);

/*
 * Serves associations until @should_stop(@ctx) is true, then stops accepting,
 * lets associations in flight finish their current C-STORE (answered as
 * usual), releases idle ones, and waits up to @grace_s seconds for all of
 * them to end. Returns 0, or a negative errno if the network failed.
 */
int scp_run(struct scp *scp, scp_stop_fn should_stop, void *ctx,
            unsigned grace_s);

/* Number of associations being served right now, plus connections still
 * sending their association request. */
unsigned scp_active_associations(const struct scp *scp);

/*
 * The file descriptors an SCP with @params may hold at once at most:
 * associations (socket, spool file), pending connections, sockets waiting
 * to be closed and its own few. For
 * sizing RLIMIT_NOFILE; the SCP survives running out (it pauses accepting
 * and refuses callers cleanly) but serves fewer.
 */
unsigned scp_fds_needed(const struct scp_params *params);

/*
 * Reads the TLS files of @scp's parameters again (SIGHUP): associations
 * that start afterwards use them, running ones keep theirs. On failure
 * the old material stays in use and @err says why. -ENOENT when @scp has
 * no TLS listener. Thread-safe.
 */
int scp_tls_reload(struct scp *scp, char *err, size_t err_len);

/* What scp_tls_inspect() tells about a certificate file. */
struct scp_tls_cert_info {
    char sha256[96];     /* "AB:CD:..." (32 bytes, colons) */
    char subject[256];   /* one-line RFC 2253 subject */
    long long not_after; /* seconds since the epoch */
};

/*
 * Reads the first certificate of the PEM (or DER) file at @path.
 * Returns 0, or a negative errno with @err naming the file and reason.
 */
int scp_tls_inspect(const char *path, struct scp_tls_cert_info *ret_info,
                    char *err, size_t err_len);

/*
 * Validates every TLS file of @params as scp_new() would (readable,
 * key matching the certificate, key not readable by others, CA and CRL
 * parse, profile applies) and fills @ret_info with the server
 * certificate. Returns 0 or a negative errno with @err.
 */
int scp_tls_validate(const struct scp_tls_params *params,
                     struct scp_tls_cert_info *ret_info, char *err,
                     size_t err_len);

/* Closes the listening sockets and frees @scp. Accepts NULL. */
void scp_free(struct scp *scp);

/*
 * Tests only: @off true keeps the SCP's bigger receive buffer (store.cc,
 * an instance over 256 KiB held in memory, one C-STORE at a time) from
 * being used, as while another C-STORE has it. Production code never
 * calls it.
 */
void scp__set_big_hold_off(bool off);

#ifdef __cplusplus
}
#endif

#endif
