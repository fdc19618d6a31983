/* SPDX-License-Identifier: Apache-2.0 */
/*
 * commit_int - declarations of the Storage Commitment side of scp/ (C++
 * only, never included outside scp/):
 *   commit.cc    the N-ACTION-RQ of the Push Model SCP and the
 *                N-EVENT-REPORT sent back (scp.h, Storage Commitment);
 *   outbound.cc  associations we open to a remote AE, proposing given
 *                contexts with role selection (reports now, C-MOVE
 *                sub-associations later).
 * Thread safety: every function may run on any association thread.
 */
#ifndef STOWBRIDGE_SCP_COMMIT_INT_H
#define STOWBRIDGE_SCP_COMMIT_INT_H

#include <stddef.h>
#include <stdint.h>

#include <string>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dimse.h"

#include "scp.h"

struct scp;
class DcmTransportLayer;

/* True if the caller may ask for Storage Commitment (commitment offered
 * and its matching dicom.allowed_callers rule allows it). */
bool scp__caller_may_commit(const struct scp *scp, const char *calling_ae,
                            const char *peer_ip);

/* Answers one N-ACTION-RQ of association @number on @assoc (see scp.h,
 * Storage Commitment). Returns a bad condition only when the association
 * failed (the caller then aborts it). With @ret_report_here (capacity
 * UTIL_UID_MAX + 1; NULL: never), the Transaction UID of a request
 * accepted with report_here goes there ("" otherwise): the caller then
 * owes the handler its report_done(). */
OFCondition scp__commit_action(struct scp *scp, T_ASC_Association *assoc,
                               unsigned long number, const char *calling_ae,
                               const char *peer,
                               T_ASC_PresentationContextID pres_id,
                               T_DIMSE_N_ActionRQ *req, char *ret_report_here);

/* One presentation context to propose on an outbound association. */
struct scp_out_context {
    const char *abstract_syntax;
    const char *const *transfer_syntaxes;
    size_t transfer_syntax_count;
    T_ASC_SC_ROLE role; /* ASC_SC_ROLE_DEFAULT: no role selection item */
};

/* An open outbound association; scp__outbound_close() ends it. */
struct scp_outbound {
    T_ASC_Network *net;
    T_ASC_Association *assoc;
    DcmTransportLayer *tls_layer; /* ours, outbound TLS only */
};

/* Outbound DICOM TLS material (scp_params.outbound_tls), copied. */
struct scp_out_tls {
    bool on = false;
    std::string ca_file;
    std::string certificate_file; /* "": no client certificate */
    std::string private_key_file;
    std::string private_key_password_file; /* "": not encrypted */
    enum scp_tls_profile profile = SCP_TLS_BCP195_ND;
    unsigned security_level = 2;
};

/*
 * Opens an association from @our_ae to @remote proposing @contexts (at
 * most 128), with our maximum PDU @max_pdu, connect and ACSE bounded by
 * @timeout_s: plain TCP, or DICOM TLS when @tls is not NULL and
 * @remote->tls is set. Over TLS the remote's certificate is verified
 * against tls->ca_file and, when @remote->certificate_sha256 is set, its
 * SHA-256 compared (-EPERM on a mismatch, the association aborted); our
 * client certificate is sent when tls->certificate_file is set; one TLS
 * layer per call. On success *@ret is open and at least one context was
 * accepted (check each with scp__outbound_context()). Errors:
 * -ECONNREFUSED, -ETIMEDOUT, -EHOSTUNREACH, -ENOENT (host unknown), -EIO
 * (other network failures), -EPROTO (rejected: the reason in @err),
 * -EPERM, -ENOMEM.
 */
int scp__outbound_open_tls(const char *our_ae, const struct scp_remote *remote,
                           const struct scp_out_tls *tls,
                           const struct scp_out_context *contexts,
                           size_t context_count, uint32_t max_pdu,
                           unsigned timeout_s, struct scp_outbound *ret,
                           char *err, size_t err_len);

/*
 * The accepted context for @abstract_syntax whose accepted role is @role
 * (or SCU/SCP), or 0 when there is none.
 */
T_ASC_PresentationContextID scp__outbound_context(const struct scp_outbound *ob,
                                                  const char *abstract_syntax,
                                                  T_ASC_SC_ROLE role);

/* Releases (A-RELEASE; or A-ABORT when @abort) and frees. Accepts a
 * zeroed struct. */
void scp__outbound_close(struct scp_outbound *ob, bool abort);

#endif
