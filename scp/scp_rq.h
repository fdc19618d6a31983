/* SPDX-License-Identifier: Apache-2.0 */
/*
 * scp_rq - the structural check of an A-ASSOCIATE-RQ PDU (PS3.8 9.3.2,
 * PS3.7 D.3.3), made by the SCP on the bytes it peeked from the socket
 * before DCMTK sees them.
 *
 * Why it exists: DCMTK 3.6.7 leaks memory on its own parse errors of an
 * A-ASSOCIATE-RQ, all inside ASC_receiveAssociation() where no caller can
 * free it (measured with LeakSanitizer, 32-144 bytes a request):
 *   - a presentation context item that fails after its transfer syntax
 *     list was created (a truncated or over-long transfer syntax, a length
 *     past the end): parsePresentationContext() frees the item, not the
 *     list;
 *   - a presentation context without a transfer syntax
 *     (translatePresentationContextList() fails and AE_6 returns without
 *     destroying the parsed lists);
 *   - a SOP Class Extended Negotiation sub-item whose lengths do not fit
 *     (parseExtNeg() fails, the new object is dropped);
 *   - a second User Identity sub-item (the first is overwritten).
 * A request that passes scp_rq_check() reaches none of those paths: every
 * length DCMTK reads is consistent, every UID fits its 64-byte buffer, each
 * context has one abstract and at least one transfer syntax, and the
 * sub-items DCMTK keeps appear once. So the SCP answers a malformed
 * request itself and never hands it over.
 *
 * Beyond what DCMTK needs, the check enforces what PS3.8 makes definite
 * and what the SCP relies on: odd presentation context IDs 1-255, each
 * once (so at most 128 contexts), exactly one Application Context and one
 * User Information item with exactly one Maximum Length sub-item of four
 * bytes. Item types the standard does not define are skipped, as DCMTK
 * does, when their length fits.
 *
 * Thread safety: none needed; the functions only read their arguments.
 * Ownership: nothing is allocated; @ret_rq is filled in place.
 */
#ifndef STOWBRIDGE_SCP_RQ_H
#define STOWBRIDGE_SCP_RQ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The most presentation contexts one association may propose (PS3.8
 * 9.3.2.2: odd IDs 1-255). */
#define SCP_RQ_MAX_CONTEXTS 128
/* The fixed part of an A-ASSOCIATE-RQ, PDU header included. */
#define SCP_RQ_FIXED_LEN (6 + 68)

enum scp_rq_verdict {
    SCP_RQ_OK = 0,
    /* The structure is broken: answer with an A-ABORT (invalid PDU
     * parameter value), never give it to DCMTK. */
    SCP_RQ_MALFORMED,
    /* Protocol version bit 0 is not set: A-ASSOCIATE-RJ, permanent,
     * protocol version not supported. */
    SCP_RQ_PROTOCOL_VERSION,
};

/* What the SCP learns from a well-formed request. */
struct scp_rq {
    char called_ae[17]; /* the 16 bytes as sent, trailing spaces cut */
    char calling_ae[17];
    char app_context[65]; /* Application Context Name, trailing NULs and
                           * spaces cut */
    unsigned contexts;    /* presentation context items */
    uint32_t max_pdu;     /* Maximum Length Received; 0: unlimited */
};

/*
 * Checks the @len bytes at @pdu, one whole A-ASSOCIATE-RQ PDU with its
 * 6-byte header (type 01H, PDU length = @len - 6). Fills @ret_rq (also
 * on failure, as far as it got) and returns the verdict; for anything but
 * SCP_RQ_OK, @why (if given) says what is wrong, naming the item and its
 * byte offset in the PDU.
 */
enum scp_rq_verdict scp_rq_check(const unsigned char *pdu, size_t len,
                                 struct scp_rq *ret_rq, char *why,
                                 size_t why_len);

#ifdef __cplusplus
}
#endif

#endif
