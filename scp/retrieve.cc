/* SPDX-License-Identifier: Apache-2.0 */
/*
 * retrieve - the C-MOVE and C-GET providers (see scp.h, "C-MOVE and
 * C-GET", for the contract; scp_int.h for the module's files).
 *
 * One operation: receive the identifier, check the Move Destination
 * (C-MOVE: dicom.remote_aes, else A801), hand the identifier to the C
 * handler, then take its sub-operations one at a time and send each:
 *   C-MOVE  on one sub-association to the destination, opened when the
 *           first file is ready (so the stored transfer syntaxes of what
 *           is ready then are proposed with the listing's SOP classes);
 *   C-GET   on the caller's association, on a storage context it
 *           negotiated with the SCP role.
 * Between sub-operations, and while waiting for the next one, a C-CANCEL
 * is looked for; a pending response with the four counts follows every
 * sub-operation. The final response: 0000, B000 with the Failed SOP
 * Instance UID List (0008,0058), A702 when all failed, FE00 after a
 * C-CANCEL (counts of what was done, Remaining of what was not).
 *
 * Sending a file: DIMSE_storeUser() re-encodes the data set into the
 * accepted context's transfer syntax (DCMTK 3.6.7 is not bit-preserving,
 * protocol-facts-2.md 2.5), so the context is picked first: the stored
 * syntax if accepted; else an uncompressed one, when the file is
 * uncompressed or DCMTK has a decoder for it (JPEG, JPEG-LS, RLE:
 * registered once here); else the sub-operation fails with a log line
 * (JPEG 2000 has no decoder in DCMTK).
 */
#include "scp_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "dcmtk/dcmdata/dccodec.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcrledrg.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmdata/dcxfer.h"
#include "dcmtk/dcmjpeg/djdecode.h"
#include "dcmtk/dcmjpls/djdecode.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dimse.h"
#include "dcmtk/ofstd/ofstd.h"

#include "base/log.h"
#include "base/util.h"
#include "commit_int.h"
#include "dicom/dataset.h"

/* How long one wait for the next sub-operation lasts before a C-CANCEL
 * and the stop flag are looked at again. */
#define RETRIEVE_WAIT_MS 200
/* While the fetch is slow, a pending response with unchanged counts
 * goes out this often, so an SCU with a DIMSE timeout keeps waiting. */
#define RETRIEVE_KEEPALIVE_MS 10000u
/* Our maximum receive PDU on sub-associations. */
#define RETRIEVE_OUT_PDU 116794u
/* A requestor may propose at most 128 presentation contexts (odd IDs
 * 1 to 255, PS3.8 9.3.2.2). */
#define RETRIEVE_MAX_CONTEXTS 128
/* Files gathered before the sub-association is opened: their stored
 * transfer syntaxes are proposed. */
#define RETRIEVE_PEEK_MAX 64
/* Counts are US (16 bits) in the command set. */
#define RETRIEVE_COUNT_MAX 65535u

static const char *retrieve_sop_classes[] = {
    UID_MOVEPatientRootQueryRetrieveInformationModel,
    UID_MOVEStudyRootQueryRetrieveInformationModel,
    UID_GETPatientRootQueryRetrieveInformationModel,
    UID_GETStudyRootQueryRetrieveInformationModel,
};

bool scp__is_retrieve_class(const char *uid)
{
    for (const char *c : retrieve_sop_classes)
        if (strcmp(c, uid) == 0)
            return true;
    return false;
}

int scp__retrieve_setup(struct scp *scp, const struct scp_params *params,
                        char *err, size_t err_len)
{
    scp->retrieve = params->retrieve;
    for (size_t i = 0; i < params->remote_count; i++) {
        const struct scp_remote *in = &params->remotes[i];
        scp_remote_entry e;

        if (in->ae_title == NULL || in->host == NULL || in->port == 0) {
            snprintf(err, err_len, "remote AE %zu incomplete", i);
            return -EINVAL;
        }
        if (in->tls && params->outbound_tls == NULL) {
            snprintf(err, err_len,
                     "remote AE %s needs TLS but no outbound TLS is set",
                     in->ae_title);
            return -EINVAL;
        }
        e.ae_title = in->ae_title;
        e.host = in->host;
        e.port = in->port;
        e.tls = in->tls;
        if (in->certificate_sha256 != NULL)
            e.certificate_sha256 = in->certificate_sha256;
        scp->remotes.push_back(e);
    }
    if (params->outbound_tls != NULL) {
        const struct scp_outbound_tls *t = params->outbound_tls;

        if (t->ca_file == NULL) {
            snprintf(err, err_len, "outbound TLS needs a CA file");
            return -EINVAL;
        }
        scp->out_tls.on = true;
        scp->out_tls.ca_file = t->ca_file;
        if (t->certificate_file != NULL)
            scp->out_tls.certificate_file = t->certificate_file;
        if (t->private_key_file != NULL)
            scp->out_tls.private_key_file = t->private_key_file;
        if (t->private_key_password_file != NULL)
            scp->out_tls.private_key_password_file =
                t->private_key_password_file;
        scp->out_tls.profile = t->profile;
        scp->out_tls.security_level = t->security_level;
    }
    return 0;
}

const scp_remote_entry *scp__find_remote(const struct scp *scp,
                                         const char *ae_title)
{
    for (const scp_remote_entry &e : scp->remotes)
        if (e.ae_title == ae_title)
            return &e;
    return NULL;
}

/* DCMTK's decoders, registered once (the codec list is process-wide and
 * locked by DCMTK). */
static void register_decoders(void)
{
    static std::once_flag once;

    std::call_once(once, []() {
        DJDecoderRegistration::registerCodecs();
        DJLSDecoderRegistration::registerCodecs();
        DcmRLEDecoderRegistration::registerCodecs();
    });
}

/* ------------------------------------------------------------------ */
/* Responses                                                           */
/* ------------------------------------------------------------------ */

/* The counts of one operation. */
struct retrieve_counts {
    unsigned total;
    unsigned completed;
    unsigned failed;
    unsigned warning;
};

static DIC_US count16(unsigned n)
{
    return (DIC_US)(n > RETRIEVE_COUNT_MAX ? RETRIEVE_COUNT_MAX : n);
}

static unsigned remaining_of(const struct retrieve_counts *c)
{
    unsigned done = c->completed + c->failed + c->warning;

    return c->total > done ? c->total - done : 0;
}

/* Keeps printable ASCII only: an Error Comment is LO. */
static void retrieve_ascii(char *dst, size_t dst_size, const char *src)
{
    size_t n = 0;

    for (; src != NULL && *src != '\0' && n + 1 < dst_size; src++)
        dst[n++] = (*src >= 0x20 && *src < 0x7F) ? *src : '?';
    dst[n] = '\0';
}

/* One operation in progress, as the responses need it. */
struct retrieve_op {
    struct scp_assoc *sa;
    T_ASC_PresentationContextID pres_id;
    enum scp_retrieve_kind kind;
    T_DIMSE_C_MoveRQ move_rq;
    T_DIMSE_C_GetRQ get_rq;
    DIC_US msg_id;
    char level[17];
    char destination[UTIL_AE_TITLE_MAX + 1];
    struct retrieve_counts counts;
    std::string failed_uids; /* '\'-separated */
};

static OFCondition send_response(struct retrieve_op *op, uint16_t status,
                                 const char *comment, bool with_failed)
{
    DcmDataset detail;
    DcmDataset *detail_ptr = NULL;
    DcmDataset ids;
    DcmDataset *ids_ptr = NULL;
    const struct retrieve_counts *c = &op->counts;

    if (comment != NULL && comment[0] != '\0') {
        char text[65];
        retrieve_ascii(text, sizeof(text), comment);
        if (detail.putAndInsertString(DCM_ErrorComment, text).good())
            detail_ptr = &detail;
    }
    if (with_failed && !op->failed_uids.empty() &&
        ids.putAndInsertString(DCM_FailedSOPInstanceUIDList,
                               op->failed_uids.c_str())
            .good())
        ids_ptr = &ids;
    if (op->kind == SCP_RETRIEVE_MOVE) {
        T_DIMSE_C_MoveRSP rsp;

        memset(&rsp, 0, sizeof(rsp));
        rsp.DimseStatus = status;
        rsp.NumberOfRemainingSubOperations = count16(remaining_of(c));
        rsp.NumberOfCompletedSubOperations = count16(c->completed);
        rsp.NumberOfFailedSubOperations = count16(c->failed);
        rsp.NumberOfWarningSubOperations = count16(c->warning);
        return DIMSE_sendMoveResponse(op->sa->assoc, op->pres_id, &op->move_rq,
                                      &rsp, ids_ptr, detail_ptr);
    }
    T_DIMSE_C_GetRSP rsp;

    memset(&rsp, 0, sizeof(rsp));
    rsp.DimseStatus = status;
    rsp.NumberOfRemainingSubOperations = count16(remaining_of(c));
    rsp.NumberOfCompletedSubOperations = count16(c->completed);
    rsp.NumberOfFailedSubOperations = count16(c->failed);
    rsp.NumberOfWarningSubOperations = count16(c->warning);
    return DIMSE_sendGetResponse(op->sa->assoc, op->pres_id, &op->get_rq, &rsp,
                                 ids_ptr, detail_ptr);
}

/* A refusal before any sub-operation: no counts but zeros. */
static OFCondition refuse(struct retrieve_op *op, uint16_t status,
                          const char *comment)
{
    return send_response(op, status, comment, false);
}

static const char *kind_name(enum scp_retrieve_kind kind)
{
    return kind == SCP_RETRIEVE_MOVE ? "move" : "get";
}

static void log_done(const struct retrieve_op *op, uint16_t status,
                     const char *reason)
{
    const struct retrieve_counts *c = &op->counts;

    if (reason == NULL)
        log_notice("event=retrieve_done kind=%s assoc=%lu calling_ae=%s "
                   "peer=%s destination=%s level=%s total=%u completed=%u "
                   "failed=%u warning=%u status=%04x",
                   kind_name(op->kind), op->sa->number, op->sa->calling_ae,
                   op->sa->peer, op->destination[0] ? op->destination : "-",
                   op->level[0] ? op->level : "-", c->total, c->completed,
                   c->failed, c->warning, (unsigned)status);
    else
        log_notice("event=retrieve_done kind=%s assoc=%lu calling_ae=%s "
                   "peer=%s destination=%s level=%s total=%u completed=%u "
                   "failed=%u warning=%u status=%04x reason=\"%s\"",
                   kind_name(op->kind), op->sa->number, op->sa->calling_ae,
                   op->sa->peer, op->destination[0] ? op->destination : "-",
                   op->level[0] ? op->level : "-", c->total, c->completed,
                   c->failed, c->warning, (unsigned)status, reason);
}

/*
 * Looks, without waiting, for a C-CANCEL-RQ of the operation; sets
 * *@cancelled when one came. A C-CANCEL for another message ID is
 * dropped (PS3.7 9.3.2.3); any other command is a protocol error (no
 * asynchronous operations are negotiated).
 */
static OFCondition check_cancel(struct retrieve_op *op, bool *cancelled)
{
    for (;;) {
        T_ASC_PresentationContextID pres_id = 0;
        T_DIMSE_Message msg;

        memset(&msg, 0, sizeof(msg));
        OFCondition cond = DIMSE_receiveCommand(
            op->sa->assoc, DIMSE_NONBLOCKING, 0, &pres_id, &msg, NULL);
        if (cond == DIMSE_NODATAAVAILABLE)
            return EC_Normal;
        if (cond.bad())
            return cond;
        if (msg.CommandField != DIMSE_C_CANCEL_RQ)
            return makeDcmnetCondition(
                DIMSEC_UNEXPECTEDREQUEST, OF_error,
                "DIMSE: another command during C-MOVE/C-GET (no "
                "asynchronous operations negotiated)");
        if (msg.msg.CCancelRQ.MessageIDBeingRespondedTo == op->msg_id) {
            *cancelled = true;
            return EC_Normal;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Picking a presentation context for one file                         */
/* ------------------------------------------------------------------ */

static bool is_uncompressed(E_TransferSyntax x)
{
    return x == EXS_LittleEndianExplicit || x == EXS_LittleEndianImplicit ||
           x == EXS_BigEndianExplicit || x == EXS_DeflatedLittleEndianExplicit;
}

/*
 * The accepted context of @assoc to send a file of @sop_class stored in
 * @ts through: the stored syntax if accepted, else Explicit or Implicit
 * VR Little Endian when the file can be decoded to it. @need_scp: the
 * context's accepted role must let us be the SCU of C-STORE on the
 * caller's association (C-GET: the SCU took the SCP role). Returns 0 with
 * the reason in @why when there is none.
 */
static T_ASC_PresentationContextID pick_context(T_ASC_Association *assoc,
                                                const char *sop_class,
                                                const char *ts, bool need_scp,
                                                std::string &why)
{
    int n = ASC_countPresentationContexts(assoc->params);
    T_ASC_PresentationContextID exact = 0, explicit_le = 0, implicit_le = 0;
    bool class_seen = false, role_refused = false;
    std::string other_ts;
    E_TransferSyntax from = DcmXfer(ts).getXfer();

    for (int i = 0; i < n; i++) {
        T_ASC_PresentationContext pc;

        if (ASC_getPresentationContext(assoc->params, i, &pc).bad())
            break;
        if (pc.resultReason != ASC_P_ACCEPTANCE ||
            strcmp(pc.abstractSyntax, sop_class) != 0)
            continue;
        if (need_scp && pc.acceptedRole != ASC_SC_ROLE_SCP &&
            pc.acceptedRole != ASC_SC_ROLE_SCUSCP) {
            role_refused = true;
            continue;
        }
        class_seen = true;
        if (strcmp(pc.acceptedTransferSyntax, ts) == 0 && exact == 0)
            exact = pc.presentationContextID;
        else if (strcmp(pc.acceptedTransferSyntax,
                        UID_LittleEndianExplicitTransferSyntax) == 0 &&
                 explicit_le == 0)
            explicit_le = pc.presentationContextID;
        else if (strcmp(pc.acceptedTransferSyntax,
                        UID_LittleEndianImplicitTransferSyntax) == 0 &&
                 implicit_le == 0)
            implicit_le = pc.presentationContextID;
        else
            other_ts = pc.acceptedTransferSyntax;
    }
    if (exact != 0)
        return exact;
    if (!class_seen) {
        why = role_refused ? "the SOP class was negotiated without the SCP "
                             "role for us to send it (C-GET)"
                           : "the SOP class was not accepted";
        return 0;
    }
    T_ASC_PresentationContextID plain =
        explicit_le != 0 ? explicit_le : implicit_le;
    if (plain == 0) {
        why = "only " + other_ts + " was accepted for the SOP class";
        return 0;
    }
    if (from == EXS_Unknown) {
        why = "the stored transfer syntax is unknown to DCMTK";
        return 0;
    }
    if (is_uncompressed(from))
        return plain;
    E_TransferSyntax to =
        explicit_le != 0 ? EXS_LittleEndianExplicit : EXS_LittleEndianImplicit;
    if (DcmCodecList::canChangeCoding(from, to))
        return plain;
    why = std::string("only uncompressed syntaxes were accepted and DCMTK "
                      "has no decoder for ") +
          DcmXfer(from).getXferName();
    return 0;
}

/* ------------------------------------------------------------------ */
/* The C-MOVE sub-association                                          */
/* ------------------------------------------------------------------ */

static bool list_has(const std::vector<std::string> &list, const std::string &s)
{
    for (const std::string &x : list)
        if (x == s)
            return true;
    return false;
}

static const char *const plain_syntaxes[] = {
    UID_LittleEndianExplicitTransferSyntax,
    UID_LittleEndianImplicitTransferSyntax,
};

/* Stored syntaxes proposed for every SOP class beyond those of the files
 * at hand (a file fetched after the sub-association opened may be in one
 * of them), most common in archives first. */
static const char *const common_syntaxes[] = {
    UID_JPEGProcess14SV1TransferSyntax,
    UID_JPEGLSLosslessTransferSyntax,
    UID_JPEG2000LosslessOnlyTransferSyntax,
    UID_JPEGProcess1TransferSyntax,
    UID_JPEG2000TransferSyntax,
    UID_RLELosslessTransferSyntax,
    UID_JPEGProcess2_4TransferSyntax,
    UID_JPEGLSLossyTransferSyntax,
    UID_DeflatedExplicitVRLittleEndianTransferSyntax,
    UID_MPEG2MainProfileAtMainLevelTransferSyntax,
    UID_MPEG4HighProfileLevel4_1TransferSyntax,
    UID_HEVCMainProfileLevel5_1TransferSyntax,
};

static void add_pair(std::vector<std::pair<std::string, std::string>> &pairs,
                     const std::string &c, const std::string &t)
{
    std::pair<std::string, std::string> p(c, t);

    for (const auto &q : pairs)
        if (q == p)
            return;
    pairs.push_back(p);
}

/*
 * The contexts to propose, at most 128: each SOP class (of the listing
 * and of the files at hand) with Explicit and Implicit VR Little Endian;
 * then each (SOP class, stored syntax) pair of the files at hand; then,
 * syntax by syntax (those seen first, then common_syntaxes[]), that
 * syntax for every class, while room remains. A destination accepts what
 * it takes; a file whose stored syntax it did not accept is decoded or
 * fails (pick_context()).
 */
static void
build_contexts(const struct scp_retrieve_info *info,
               const std::vector<scp_retrieve_item> &ready,
               std::vector<std::string> &classes,
               std::vector<std::pair<std::string, std::string>> &compressed)
{
    std::vector<std::string> syntaxes;

    for (size_t i = 0; i < info->sop_class_count; i++)
        if (!list_has(classes, info->sop_classes[i]))
            classes.push_back(info->sop_classes[i]);
    for (const scp_retrieve_item &it : ready) {
        if (it.path == NULL)
            continue;
        if (!list_has(classes, it.sop_class_uid))
            classes.push_back(it.sop_class_uid);
        E_TransferSyntax x = DcmXfer(it.transfer_syntax).getXfer();
        if (x == EXS_LittleEndianExplicit || x == EXS_LittleEndianImplicit)
            continue;
        if (!list_has(syntaxes, it.transfer_syntax))
            syntaxes.push_back(it.transfer_syntax);
        add_pair(compressed, it.sop_class_uid, it.transfer_syntax);
    }
    for (const char *t : common_syntaxes)
        if (!list_has(syntaxes, t))
            syntaxes.push_back(t);
    if (classes.size() > RETRIEVE_MAX_CONTEXTS)
        classes.resize(RETRIEVE_MAX_CONTEXTS);
    size_t room = RETRIEVE_MAX_CONTEXTS - classes.size();
    for (const std::string &t : syntaxes)
        for (const std::string &c : classes)
            if (compressed.size() < room)
                add_pair(compressed, c, t);
    if (compressed.size() > room)
        compressed.resize(room);
}

static int open_sub_association(struct retrieve_op *op,
                                const scp_remote_entry *dest,
                                const struct scp_retrieve_info *info,
                                const std::vector<scp_retrieve_item> &ready,
                                struct scp_outbound *ob, char *err,
                                size_t err_len)
{
    std::vector<std::string> classes;
    std::vector<std::pair<std::string, std::string>> compressed;
    std::vector<scp_out_context> contexts;
    std::vector<const char *> one_ts;
    struct scp_remote remote;

    build_contexts(info, ready, classes, compressed);
    one_ts.reserve(compressed.size());
    for (const std::string &c : classes) {
        scp_out_context ctx;
        ctx.abstract_syntax = c.c_str();
        ctx.transfer_syntaxes = plain_syntaxes;
        ctx.transfer_syntax_count = 2;
        ctx.role = ASC_SC_ROLE_DEFAULT;
        contexts.push_back(ctx);
    }
    for (const auto &p : compressed) {
        scp_out_context ctx;
        one_ts.push_back(p.second.c_str());
        ctx.abstract_syntax = p.first.c_str();
        ctx.transfer_syntaxes = &one_ts.back();
        ctx.transfer_syntax_count = 1;
        ctx.role = ASC_SC_ROLE_DEFAULT;
        contexts.push_back(ctx);
    }
    if (contexts.empty()) {
        snprintf(err, err_len, "no SOP class to propose");
        return -EINVAL;
    }
    remote.ae_title = dest->ae_title.c_str();
    remote.host = dest->host.c_str();
    remote.port = dest->port;
    remote.tls = dest->tls;
    remote.certificate_sha256 = dest->certificate_sha256.empty()
                                    ? NULL
                                    : dest->certificate_sha256.c_str();
    return scp__outbound_open_tls(op->sa->scp->ae_title, &remote,
                                  dest->tls ? &op->sa->scp->out_tls : NULL,
                                  contexts.data(), contexts.size(),
                                  RETRIEVE_OUT_PDU, op->sa->scp->timeout_s, ob,
                                  err, err_len);
}

/* ------------------------------------------------------------------ */
/* Sub-operations                                                      */
/* ------------------------------------------------------------------ */

enum sub_result {
    SUB_COMPLETED,
    SUB_WARNING,
    SUB_FAILED,
    SUB_BROKEN, /* the association it went on failed: stop */
};

static void note_failed(struct retrieve_op *op, const char *uid)
{
    op->counts.failed++;
    if (!op->failed_uids.empty())
        op->failed_uids += '\\';
    op->failed_uids += uid;
}

/*
 * Sends the file of @item on @assoc (the sub-association, or the caller's
 * for C-GET). Returns what became of it; @cancelled is set when a
 * C-CANCEL arrived while waiting for the C-STORE-RSP (C-GET).
 */
static enum sub_result send_item(struct retrieve_op *op,
                                 T_ASC_Association *assoc,
                                 const scp_retrieve_item *item,
                                 DIC_US message_id, bool *cancelled)
{
    std::string why;
    T_ASC_PresentationContextID pc =
        pick_context(assoc, item->sop_class_uid, item->transfer_syntax,
                     op->kind == SCP_RETRIEVE_GET, why);
    if (pc == 0) {
        log_warning("event=retrieve-sub-failed kind=%s assoc=%lu "
                    "destination=%s sop_class=%s transfer_syntax=%s "
                    "reason=\"%s\"",
                    kind_name(op->kind), op->sa->number,
                    op->destination[0] ? op->destination : op->sa->calling_ae,
                    item->sop_class_uid, item->transfer_syntax, why.c_str());
        return SUB_FAILED;
    }

    T_DIMSE_C_StoreRQ req;
    T_DIMSE_C_StoreRSP rsp;
    T_DIMSE_DetectedCancelParameters cancel;
    DcmDataset *detail = NULL;

    memset(&req, 0, sizeof(req));
    memset(&rsp, 0, sizeof(rsp));
    memset(&cancel, 0, sizeof(cancel));
    req.MessageID = message_id;
    OFStandard::strlcpy(req.AffectedSOPClassUID, item->sop_class_uid,
                        sizeof(req.AffectedSOPClassUID));
    OFStandard::strlcpy(req.AffectedSOPInstanceUID, item->sop_instance_uid,
                        sizeof(req.AffectedSOPInstanceUID));
    req.DataSetType = DIMSE_DATASET_PRESENT;
    req.Priority = DIMSE_PRIORITY_MEDIUM;
    if (op->kind == SCP_RETRIEVE_MOVE) {
        req.opts = O_STORE_MOVEORIGINATORAETITLE | O_STORE_MOVEORIGINATORID;
        OFStandard::strlcpy(req.MoveOriginatorApplicationEntityTitle,
                            op->sa->calling_ae,
                            sizeof(req.MoveOriginatorApplicationEntityTitle));
        req.MoveOriginatorID = op->msg_id;
    }
    /* A compressed file going out uncompressed is decoded here: DIMSE
     * re-encodes a data set but never changes its pixel representation. */
    T_ASC_PresentationContext accepted;
    std::unique_ptr<DcmFileFormat> decoded;
    if (ASC_findAcceptedPresentationContext(assoc->params, pc, &accepted)
            .good() &&
        strcmp(accepted.acceptedTransferSyntax, item->transfer_syntax) != 0 &&
        DcmXfer(item->transfer_syntax).isEncapsulated()) {
        E_TransferSyntax to =
            DcmXfer(accepted.acceptedTransferSyntax).getXfer();
        decoded.reset(new (std::nothrow) DcmFileFormat());
        OFCondition dc = decoded ? decoded->loadFile(item->path)
                                 : OFCondition(EC_MemoryExhausted);
        if (dc.good())
            dc = decoded->getDataset()->chooseRepresentation(to, NULL);
        if (dc.good() && !decoded->getDataset()->canWriteXfer(to))
            dc = makeOFCondition(0, 1, OF_error, "cannot write the syntax");
        if (dc.bad()) {
            log_warning("event=retrieve-sub-failed kind=%s assoc=%lu "
                        "destination=%s sop_class=%s transfer_syntax=%s "
                        "reason=\"cannot decode to %s: %s\"",
                        kind_name(op->kind), op->sa->number,
                        op->destination[0] ? op->destination
                                           : op->sa->calling_ae,
                        item->sop_class_uid, item->transfer_syntax,
                        accepted.acceptedTransferSyntax, dc.text());
            return SUB_FAILED;
        }
    }
    OFCondition cond =
        DIMSE_storeUser(assoc, pc, &req, decoded ? NULL : item->path,
                        decoded ? decoded->getDataset() : NULL, NULL, NULL,
                        DIMSE_NONBLOCKING, (int)op->sa->scp->timeout_s, &rsp,
                        &detail, op->kind == SCP_RETRIEVE_GET ? &cancel : NULL,
                        decoded ? 0 : (long)item->size);
    delete detail;
    if (cancel.cancelEncountered &&
        cancel.req.MessageIDBeingRespondedTo == op->msg_id)
        *cancelled = true;
    if (cond.bad()) {
        bool broken = cond != DIMSE_SENDFAILED;
        log_warning("event=retrieve-sub-failed kind=%s assoc=%lu "
                    "destination=%s sop_class=%s transfer_syntax=%s "
                    "reason=\"%s\"",
                    kind_name(op->kind), op->sa->number,
                    op->destination[0] ? op->destination : op->sa->calling_ae,
                    item->sop_class_uid, item->transfer_syntax, cond.text());
        return broken ? SUB_BROKEN : SUB_FAILED;
    }
    if (rsp.DimseStatus == STATUS_Success)
        return SUB_COMPLETED;
    if ((rsp.DimseStatus & 0xF000) == 0xB000)
        return SUB_WARNING;
    log_warning("event=retrieve-sub-failed kind=%s assoc=%lu destination=%s "
                "sop_class=%s status=%04x reason=\"C-STORE refused\"",
                kind_name(op->kind), op->sa->number,
                op->destination[0] ? op->destination : op->sa->calling_ae,
                item->sop_class_uid, (unsigned)rsp.DimseStatus);
    return SUB_FAILED;
}

/* ------------------------------------------------------------------ */
/* One C-MOVE or C-GET                                                 */
/* ------------------------------------------------------------------ */

/* The handler's session, ended in every case. */
struct session_guard {
    const struct scp_retrieve_handler *h;
    void *session;
    ~session_guard()
    {
        if (session != NULL)
            h->end(session);
    }
};

static void read_level(DcmDataset *ids, char *level, size_t level_len)
{
    OFString v;

    level[0] = '\0';
    if (ids->findAndGetOFString(DCM_QueryRetrieveLevel, v).good()) {
        size_t n = 0;
        for (size_t i = 0; i < v.length() && n + 1 < level_len; i++)
            if (v[i] >= 'A' && v[i] <= 'Z')
                level[n++] = v[i];
        level[n] = '\0';
    }
}

static OFCondition serve_retrieve(struct retrieve_op *op,
                                  const char *sop_class_raw,
                                  const char *move_destination)
{
    struct scp_assoc *sa = op->sa;
    struct scp *scp = sa->scp;
    const struct scp_retrieve_handler *h = scp->retrieve;
    T_ASC_PresentationContextID data_pres_id = 0;
    T_ASC_PresentationContext pc;
    DcmDataset *received = NULL;
    char sop_class[UTIL_UID_MAX + 1] = "";
    OFCondition cond;

    cond = DIMSE_receiveDataSetInMemory(sa->assoc, DIMSE_BLOCKING,
                                        (int)scp->timeout_s, &data_pres_id,
                                        &received, NULL, NULL);
    std::unique_ptr<DcmDataset> identifier(received);
    if (cond.bad()) {
        log_warning("event=retrieve-aborted kind=%s assoc=%lu from=%s@%s "
                    "reason=\"%s\"",
                    kind_name(op->kind), sa->number, sa->calling_ae, sa->peer,
                    cond.text());
        return cond;
    }
    read_level(identifier.get(), op->level, sizeof(op->level));
    (void)scp__copy_trimmed_uid(sop_class, sizeof(sop_class), sop_class_raw);
    bool context_ok =
        ASC_findAcceptedPresentationContext(sa->assoc->params, op->pres_id, &pc)
            .good() &&
        strcmp(pc.abstractSyntax, sop_class) == 0;
    bool patient_root =
        strcmp(sop_class, UID_MOVEPatientRootQueryRetrieveInformationModel) ==
            0 ||
        strcmp(sop_class, UID_GETPatientRootQueryRetrieveInformationModel) == 0;
    bool class_ok =
        op->kind == SCP_RETRIEVE_MOVE
            ? (patient_root ||
               strcmp(sop_class,
                      UID_MOVEStudyRootQueryRetrieveInformationModel) == 0)
            : (patient_root ||
               strcmp(sop_class,
                      UID_GETStudyRootQueryRetrieveInformationModel) == 0);
    if (h == NULL || !context_ok || !class_ok ||
        !scp__caller_may_retrieve(scp, sa->calling_ae, sa->peer)) {
        log_done(op, STATUS_MOVE_Refused_SOPClassNotSupported,
                 "SOP class not supported on this context");
        return refuse(op, STATUS_MOVE_Refused_SOPClassNotSupported,
                      "SOP class not supported");
    }

    const scp_remote_entry *dest = NULL;
    if (op->kind == SCP_RETRIEVE_MOVE) {
        if (util_trim_copy(op->destination, sizeof(op->destination),
                           move_destination) < 0)
            op->destination[0] = '\0';
        dest = op->destination[0] != '\0'
                   ? scp__find_remote(scp, op->destination)
                   : NULL;
        if (dest == NULL) {
            char comment[65];
            snprintf(comment, sizeof(comment),
                     "Move Destination %s unknown (dicom.remote_aes)",
                     op->destination[0] ? op->destination : "(empty)");
            log_done(op, STATUS_MOVE_Refused_MoveDestinationUnknown,
                     "move destination not in dicom.remote_aes");
            return refuse(op, STATUS_MOVE_Refused_MoveDestinationUnknown,
                          comment);
        }
    }

    OFString charset;
    if (!scp__charset_request_to_utf8(identifier.get(), charset)) {
        log_done(op, STATUS_MOVE_Failed_UnableToProcess,
                 "cannot read the identifier's character set");
        return refuse(op, STATUS_MOVE_Failed_UnableToProcess,
                      "unsupported Specific Character Set");
    }
    struct ds *request = ds_new();
    if (request == NULL || !scp__item_to_ds(identifier.get(), request)) {
        ds_free(request);
        log_done(op, STATUS_MOVE_Refused_OutOfResourcesNumberOfMatches,
                 "out of memory");
        return refuse(op, STATUS_MOVE_Refused_OutOfResourcesNumberOfMatches,
                      "out of memory");
    }
    identifier.reset();

    struct scp_retrieve_info info;
    struct scp_retrieve_status st;
    memset(&info, 0, sizeof(info));
    memset(&st, 0, sizeof(st));
    session_guard guard{ h, NULL };
    guard.session = h->begin(
        h->ctx, op->kind,
        patient_root ? SCP_FIND_PATIENT_ROOT : SCP_FIND_STUDY_ROOT, request,
        sa->calling_ae, op->kind == SCP_RETRIEVE_MOVE ? op->destination : NULL,
        &info, &st);
    ds_free(request);
    if (guard.session == NULL) {
        log_done(op, st.status, st.comment);
        return refuse(op, st.status, st.comment);
    }
    op->counts.total = info.total;
    register_decoders();

    /* The sub-operations. */
    struct scp_outbound ob;
    memset(&ob, 0, sizeof(ob));
    bool ob_failed = false;
    char ob_err[512] = "";
    bool cancelled = false, stopping = false, broken = false;
    std::vector<scp_retrieve_item> ready; /* taken, not yet sent */
    size_t ready_pos = 0;
    bool handed_all = info.total == 0;
    DIC_US next_message_id = 1;
    uint64_t last_response_ms = util_now_monotonic_ms();
    uint16_t final_status = STATUS_Success;
    const char *final_comment = NULL;
    char comment[65] = "";

    while (!broken) {
        /* Next item: the ones gathered already, else the handler's. */
        scp_retrieve_item item;
        bool have = false;

        if (ready_pos < ready.size()) {
            item = ready[ready_pos++];
            have = true;
        } else if (!handed_all) {
            memset(&item, 0, sizeof(item));
            int r = h->next(guard.session, RETRIEVE_WAIT_MS, &item);
            if (r == 1) {
                have = true;
            } else if (r == 0) {
                handed_all = true;
            }
        }
        if (!have && handed_all)
            break;
        if (!cancelled) {
            cond = check_cancel(op, &cancelled);
            if (cond.bad()) {
                if (have)
                    h->release(guard.session, &item);
                broken = true;
                break;
            }
        }
        if (!stopping && scp->should_stop(scp->stop_ctx))
            stopping = true;
        if (cancelled || stopping) {
            if (have)
                h->release(guard.session, &item);
            break;
        }
        if (!have) {
            if (util_now_monotonic_ms() - last_response_ms >=
                RETRIEVE_KEEPALIVE_MS) {
                cond = send_response(op, STATUS_Pending, NULL, false);
                if (cond.bad()) {
                    broken = true;
                    break;
                }
                last_response_ms = util_now_monotonic_ms();
            }
            continue;
        }

        /* C-MOVE: the sub-association, once, when the first file is
         * here (with whatever else is ready by then). */
        if (op->kind == SCP_RETRIEVE_MOVE && ob.assoc == NULL && !ob_failed &&
            item.path != NULL) {
            ready.erase(ready.begin(), ready.begin() + (long)ready_pos);
            ready.insert(ready.begin(), item);
            ready_pos = 0;
            while (!handed_all && ready.size() < RETRIEVE_PEEK_MAX) {
                scp_retrieve_item more;
                memset(&more, 0, sizeof(more));
                int r = h->next(guard.session, 0, &more);
                if (r == 0)
                    handed_all = true;
                if (r != 1)
                    break;
                ready.push_back(more);
            }
            int r = open_sub_association(op, dest, &info, ready, &ob, ob_err,
                                         sizeof(ob_err));
            if (r < 0) {
                ob_failed = true;
                log_warning("event=retrieve-destination-failed kind=move "
                            "assoc=%lu destination=%s reason=\"%s\"",
                            sa->number, op->destination, ob_err);
                /* Nothing can be sent: what remains fails at once. */
                h->cancel(guard.session);
            } else {
                log_info(
                    "event=retrieve-sub-association assoc=%lu "
                    "destination=%s contexts=%d accepted=%d",
                    sa->number, op->destination,
                    ASC_countPresentationContexts(ob.assoc->params),
                    ASC_countAcceptedPresentationContexts(ob.assoc->params));
            }
            continue; /* take it again from ready */
        }

        enum sub_result res = SUB_FAILED;
        if (item.path == NULL) {
            /* The fetch logged the failure once for its whole request. */
            log_debug("event=retrieve-sub-failed kind=%s assoc=%lu "
                      "reason=\"%s\"",
                      kind_name(op->kind), sa->number,
                      item.why != NULL ? item.why : "not fetched");
        } else if (op->kind == SCP_RETRIEVE_MOVE && ob_failed) {
            res = SUB_FAILED;
        } else {
            res = send_item(
                op, op->kind == SCP_RETRIEVE_MOVE ? ob.assoc : sa->assoc, &item,
                next_message_id++, &cancelled);
        }
        if (res == SUB_COMPLETED)
            op->counts.completed++;
        else if (res == SUB_WARNING)
            op->counts.warning++;
        else
            note_failed(op, item.sop_instance_uid);
        h->release(guard.session, &item);
        if (res == SUB_BROKEN) {
            if (op->kind == SCP_RETRIEVE_GET) {
                broken = true;
                break;
            }
            /* The sub-association failed: the rest fails. */
            scp__outbound_close(&ob, true);
            ob_failed = true;
            snprintf(ob_err, sizeof(ob_err), "the sub-association failed");
            h->cancel(guard.session);
        }
        if (cancelled)
            break;
        if (remaining_of(&op->counts) > 0) {
            cond = send_response(op, STATUS_Pending, NULL, false);
            if (cond.bad()) {
                broken = true;
                break;
            }
            last_response_ms = util_now_monotonic_ms();
        }
    }
    /* Files taken but not sent. */
    for (; ready_pos < ready.size(); ready_pos++)
        h->release(guard.session, &ready[ready_pos]);
    if (ob.assoc != NULL)
        scp__outbound_close(&ob, broken || cancelled || stopping);

    if (broken) {
        log_done(op, 0xFFFF, "the association failed");
        log_warning("event=retrieve-aborted kind=%s assoc=%lu from=%s@%s "
                    "reason=\"%s\"",
                    kind_name(op->kind), sa->number, sa->calling_ae, sa->peer,
                    cond.bad() ? cond.text() : "network failure");
        return cond.bad() ? cond : DIMSE_SENDFAILED;
    }
    bool with_failed = false;
    if (cancelled) {
        final_status =
            STATUS_MOVE_Cancel_SubOperationsTerminatedDueToCancelIndication;
        final_comment = NULL;
        with_failed = true;
    } else if (stopping) {
        final_status = STATUS_MOVE_Refused_OutOfResourcesSubOperations;
        final_comment = "stowbridge is shutting down";
        /* What was not done counts as failed. */
        op->counts.failed += remaining_of(&op->counts);
        with_failed = true;
    } else if (op->counts.failed == 0 && op->counts.warning == 0) {
        final_status = STATUS_Success;
    } else if (op->counts.completed == 0 && op->counts.warning == 0) {
        final_status = STATUS_MOVE_Refused_OutOfResourcesSubOperations;
        if (ob_failed && op->kind == SCP_RETRIEVE_MOVE) {
            snprintf(comment, sizeof(comment),
                     "cannot send to Move Destination %s", op->destination);
            final_comment = comment;
        } else {
            final_comment = "no sub-operation succeeded";
        }
        with_failed = true;
    } else {
        final_status =
            STATUS_MOVE_Warning_SubOperationsCompleteOneOrMoreFailures;
        with_failed = true;
    }
    cond = send_response(op, final_status, final_comment, with_failed);
    log_done(op, final_status,
             cancelled ? "cancelled"
                       : (ob_failed && op->kind == SCP_RETRIEVE_MOVE ? ob_err
                                                                     : NULL));
    if (cond.bad())
        log_warning("event=response-failed assoc=%lu from=%s@%s reason=\"%s\"",
                    sa->number, sa->calling_ae, sa->peer, cond.text());
    return cond;
}

OFCondition scp__move_serve(struct scp_assoc *sa,
                            T_ASC_PresentationContextID pres_id,
                            T_DIMSE_Message *msg)
{
    std::unique_ptr<retrieve_op> op(new (std::nothrow) retrieve_op());

    if (!op)
        return EC_MemoryExhausted;
    op->sa = sa;
    op->pres_id = pres_id;
    op->kind = SCP_RETRIEVE_MOVE;
    op->move_rq = msg->msg.CMoveRQ;
    op->msg_id = msg->msg.CMoveRQ.MessageID;
    sa->retrieves++;
    return serve_retrieve(op.get(), msg->msg.CMoveRQ.AffectedSOPClassUID,
                          msg->msg.CMoveRQ.MoveDestination);
}

OFCondition scp__get_serve(struct scp_assoc *sa,
                           T_ASC_PresentationContextID pres_id,
                           T_DIMSE_Message *msg)
{
    std::unique_ptr<retrieve_op> op(new (std::nothrow) retrieve_op());

    if (!op)
        return EC_MemoryExhausted;
    op->sa = sa;
    op->pres_id = pres_id;
    op->kind = SCP_RETRIEVE_GET;
    op->get_rq = msg->msg.CGetRQ;
    op->msg_id = msg->msg.CGetRQ.MessageID;
    sa->retrieves++;
    return serve_retrieve(op.get(), msg->msg.CGetRQ.AffectedSOPClassUID, NULL);
}
