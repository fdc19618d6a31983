/*
 * scp - the DIMSE service provider: C-ECHO, C-STORE into the spool and
 * C-FIND handed to a C callback (docs/architecture.md). The only C++
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
 * DCMTK 3.6.7 listens on IPv4 only, on every interface.
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

/* One allow-list rule: a caller matches when both parts match. */
struct scp_caller_rule {
    const char *ae_title;               /* NULL: any calling AE title */
    const struct util_ipv4_net *hosts;  /* host_count 0: any address */
    size_t host_count;
    bool find;                          /* may query with C-FIND */
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

/* max_pending when scp_params leaves it 0. */
#define SCP_DEFAULT_MAX_PENDING 32

struct scp_params {
    const char *ae_title;        /* our AE title; other called AEs rejected */
    uint16_t port;
    unsigned max_associations;
    /* Connections still sending their A-ASSOCIATE-RQ (0: the default);
     * when full, the oldest of the address holding the most is dropped,
     * and one address may hold at most a quarter of them. */
    unsigned max_pending;
    uint32_t max_pdu;            /* our maximum receive PDU length */
    unsigned timeout_s;          /* ACSE and DIMSE timeout, idle limit */
    const struct scp_caller_rule *callers; /* caller_count 0: anyone */
    size_t caller_count;
    struct spool *spool;         /* borrowed; must outlive the scp */
    uint64_t min_free_mb;        /* below this, C-STORE answers A700 */
    /* NULL: C-FIND is not offered (its presentation contexts are
     * refused). Borrowed; must outlive the scp. */
    const struct scp_find_handler *find;
    /* Accept every abstract syntax under the storage root
     * 1.2.840.10008.5.1.4.1.1. as storage, not only DCMTK 3.6.7's list. */
    bool accept_unknown_storage_classes;
    /* More storage SOP classes to accept (valid UIDs), copied. */
    const char *const *extra_storage;
    size_t extra_storage_count;
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
 * Reads what identifies the patient in the Part 10 file at @path (parsing
 * stops before the pixel data), in UTF-8, into a new data set (dataset.h;
 * the caller frees it with ds_free()), for redact_add_dataset(): the
 * values a server may echo and that must then be hidden. PatientName,
 * OtherPatientNames, PatientBirthName, PatientMotherBirthName,
 * ResponsiblePerson (PN); PatientID, OtherPatientIDs, the PatientID of
 * each OtherPatientIDsSequence item, PatientAddress, MedicalRecordLocator
 * (LO); AccessionNumber, PatientTelephoneNumbers (SH); PatientBirthDate
 * (DA); absent ones are left out. A character set DCMTK cannot convert
 * leaves values that are not UTF-8 read as Latin-1. Never log them.
 * Returns 0, -EINVAL when the file cannot be parsed, -ENOMEM.
 */
int scp_read_entry_identity(const char *path, struct ds **ret_identity);

/* Closes the listening socket and frees @scp. Accepts NULL. */
void scp_free(struct scp *scp);

#ifdef __cplusplus
}
#endif

#endif
