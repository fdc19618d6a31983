/*
 * scp - the DIMSE service provider: C-ECHO and C-STORE into the spool
 * (DESIGN.md section 4). The only C++ module; this header is plain C and
 * no C++ type or exception crosses it.
 *
 * Built on DCMTK's ASC_/DIMSE_ API with our own accept loop (DcmSCPPool
 * leaks a thread stack per association and DcmSCPConfig cannot take all
 * 186 storage SOP classes in 3.6.7). One detached thread per association,
 * at most max_associations at once; beyond that an association is rejected
 * as transient "local limit exceeded".
 *
 * C-STORE: admission (free space) -> receive into spool tmp/ -> validate
 * the file against the command -> spool_commit() -> only then 0000.
 * Failure statuses (A700, A900, C000) never abort the association.
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

#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

struct scp;
struct spool;

/* Returns true once the provider should stop; called from many threads. */
typedef bool (*scp_stop_fn)(void *ctx);

/* One allow-list rule: a caller matches when both parts match. */
struct scp_caller_rule {
    const char *ae_title;               /* NULL: any calling AE title */
    const struct util_ipv4_net *hosts;  /* host_count 0: any address */
    size_t host_count;
};

struct scp_params {
    const char *ae_title;        /* our AE title; other called AEs rejected */
    uint16_t port;
    unsigned max_associations;
    uint32_t max_pdu;            /* our maximum receive PDU length */
    unsigned timeout_s;          /* ACSE and DIMSE timeout, idle limit */
    const struct scp_caller_rule *callers; /* caller_count 0: anyone */
    size_t caller_count;
    struct spool *spool;         /* borrowed; must outlive the scp */
    uint64_t min_free_mb;        /* below this, C-STORE answers A700 */
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

/* Number of associations being served right now. */
unsigned scp_active_associations(const struct scp *scp);

/*
 * Reads StudyInstanceUID (0020,000D) and SOPInstanceUID (0008,0018) of
 * the Part 10 file at @path (parsing stops before the pixel data), for an
 * entry whose meta/ file was lost. Returns 0, or -EINVAL when the file
 * cannot be parsed or a UID is missing or invalid.
 */
int scp_read_entry_uids(const char *path, char ret_study[UTIL_UID_MAX + 1],
                        char ret_sop[UTIL_UID_MAX + 1]);

/* Closes the listening socket and frees @scp. Accepts NULL. */
void scp_free(struct scp *scp);

#ifdef __cplusplus
}
#endif

#endif
