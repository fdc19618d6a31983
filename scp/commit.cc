/* SPDX-License-Identifier: Apache-2.0 */
/*
 * commit - the Storage Commitment Push Model SCP (PS3.4 Annex J; scp.h):
 * the N-ACTION-RQ checked and handed to the provider, which makes it
 * durable before we answer 0000, and the N-EVENT-REPORT sent back on an
 * association of our own (outbound.cc) with the SCP role, over DICOM TLS
 * when the remote AE's entry says "tls" (the material C-MOVE uses).
 *
 * N-ACTION-RSP statuses (PS3.7 10.1.4.1.10, PS3.4 J.3.2.1.3):
 *   0118 Requested SOP Class is not Storage Commitment Push Model, or the
 *        request came on another presentation context;
 *   0112 Requested SOP Instance is not the well-known instance;
 *   0123 Action Type ID is not 1;
 *   0115 no action information, TransactionUID (0008,1195) missing or not
 *        a UID, ReferencedSOPSequence (0008,1199) missing or empty, an item
 *        without a valid ReferencedSOPClassUID (0008,1150) or
 *        ReferencedSOPInstanceUID (0008,1155);
 *   0213 more than SCP_COMMIT_ITEMS_MAX items, or the spool is full;
 *   0110 the Transaction UID is active with other items (PS3.4 J.3.2.1.2:
 *        it is unique per request), or the request could not be made
 *        durable.
 * A request repeated with the same Transaction UID and items (an SCU that
 * lost our first answer) is answered 0000 again and reported once.
 *
 * commit.same_association (the handler offers report_take): a request
 * accepted on a context where we hold the SCP role (the requestor did not
 * take the SCP role alone; PS3.4 J.3.3: the SCP may send the
 * N-EVENT-REPORT on the association of the N-ACTION while it is open) is
 * remembered on the association; while the association is idle its
 * thread asks about once a second whether the report is ready and sends
 * it there, on the N-ACTION's context, waiting up to dicom.timeout_s for
 * the response. A failed attempt, or the association ending first, hands
 * the report back to the provider, which sends it on a new association.
 * A command the SCU sends while we wait for its N-EVENT-REPORT-RSP cannot
 * be served: the association is aborted (logged) and the report goes on
 * a new association.
 */
#include "commit_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <new>
#include <string>
#include <vector>

#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcitem.h"
#include "dcmtk/dcmdata/dcsequen.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmnet/diutil.h"
#include "dcmtk/ofstd/ofstd.h"

#include "base/log.h"
#include "base/util.h"
#include "scp_int.h"

/* Our maximum receive PDU on report associations. */
#define SCP_COMMIT_OUT_PDU 116794u

/* A request whose report is to be tried on its own association. */
struct scp_commit_wait {
    std::string tx_uid;
    T_ASC_PresentationContextID pres_id; /* the N-ACTION's context */
};

struct scp_commit_waiting {
    std::vector<scp_commit_wait> txs;
};

bool scp__caller_may_commit(const struct scp *scp, const char *calling_ae,
                            const char *peer_ip)
{
    if (scp->commit == NULL)
        return false;
    if (scp->caller_count == 0)
        return true;
    for (size_t i = 0; i < scp->caller_count; i++) {
        const struct scp_caller_rule *rule = &scp->callers[i];
        bool host_ok = rule->host_count == 0;

        if (rule->ae_title != NULL && strcmp(rule->ae_title, calling_ae) != 0)
            continue;
        for (size_t h = 0; h < rule->host_count && !host_ok; h++)
            host_ok = util_ipv4_net_contains(&rule->hosts[h], peer_ip);
        if (host_ok)
            return rule->commit;
    }
    return false;
}

/* Copies @src without trailing spaces/NULs (DCMTK leaves UI padding). */
static void commit_trim(char *dst, size_t dst_size, const char *src)
{
    size_t len = strnlen(src, dst_size - 1);

    while (len > 0 && (src[len - 1] == ' ' || src[len - 1] == '\0'))
        len--;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

/* Reads UID @key of @item into @dst (capacity UTIL_UID_MAX + 1); false
 * when absent, longer than 64 characters or not a UID. */
static bool commit_get_uid(DcmItem *item, const DcmTagKey &key, char *dst,
                           size_t dst_size)
{
    OFString value;
    size_t len;

    if (item->findAndGetOFString(key, value).bad())
        return false;
    len = value.length();
    while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\0'))
        len--;
    if (len == 0 || len >= dst_size)
        return false;
    memcpy(dst, value.c_str(), len);
    dst[len] = '\0';
    return util_uid_valid(dst);
}

/* The reason text of a status, for the log and the Error Comment. */
static void commit_set(uint16_t *status, char *comment, size_t len,
                       uint16_t value, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void commit_set(uint16_t *status, char *comment, size_t len,
                       uint16_t value, const char *fmt, ...)
{
    va_list ap;

    *status = value;
    va_start(ap, fmt);
    (void)vsnprintf(comment, len, fmt, ap);
    va_end(ap);
}

static OFCondition commit_respond(T_ASC_Association *assoc,
                                  T_ASC_PresentationContextID pres_id,
                                  const T_DIMSE_N_ActionRQ *req,
                                  uint16_t status, const char *comment)
{
    T_DIMSE_Message rsp;
    DcmDataset detail;
    DcmDataset *detail_ptr = NULL;
    T_DIMSE_N_ActionRSP *a = &rsp.msg.NActionRSP;

    memset(&rsp, 0, sizeof(rsp));
    rsp.CommandField = DIMSE_N_ACTION_RSP;
    a->MessageIDBeingRespondedTo = req->MessageID;
    a->DimseStatus = status;
    a->DataSetType = DIMSE_DATASET_NULL;
    OFStandard::strlcpy(a->AffectedSOPClassUID,
                        UID_StorageCommitmentPushModelSOPClass,
                        sizeof(a->AffectedSOPClassUID));
    OFStandard::strlcpy(a->AffectedSOPInstanceUID,
                        UID_StorageCommitmentPushModelSOPInstance,
                        sizeof(a->AffectedSOPInstanceUID));
    a->opts = O_NACTION_AFFECTEDSOPCLASSUID | O_NACTION_AFFECTEDSOPINSTANCEUID;
    if (status == STATUS_N_Success) {
        a->ActionTypeID = req->ActionTypeID;
        a->opts |= O_NACTION_ACTIONTYPEID;
    }
    if (status != STATUS_N_Success && comment != NULL && comment[0] != '\0') {
        char text[65];
        size_t n = 0;

        for (const char *p = comment; *p != '\0' && n + 1 < sizeof(text); p++)
            text[n++] = (*p >= 0x20 && *p < 0x7F) ? *p : '?';
        text[n] = '\0';
        if (detail.putAndInsertString(DCM_ErrorComment, text).good())
            detail_ptr = &detail;
    }
    return DIMSE_sendMessageUsingMemoryData(assoc, pres_id, &rsp, detail_ptr,
                                            NULL, NULL, NULL);
}

/*
 * Checks the command and the action information; fills @tx_uid and
 * @items, or sets a failure @status with its @comment.
 */
static void commit_validate(struct scp *scp, T_ASC_Association *assoc,
                            T_ASC_PresentationContextID pres_id,
                            const T_DIMSE_N_ActionRQ *req, DcmDataset *info,
                            char tx_uid[UTIL_UID_MAX + 1],
                            std::vector<scp_commit_ref> &items,
                            uint16_t *status, char *comment, size_t len)
{
    T_ASC_PresentationContext pc;
    char uid[UTIL_UID_MAX + 1];
    DcmSequenceOfItems *seq = NULL;

    *status = STATUS_N_Success;
    commit_trim(uid, sizeof(uid), req->RequestedSOPClassUID);
    if (scp->commit == NULL ||
        ASC_findAcceptedPresentationContext(assoc->params, pres_id, &pc)
            .bad() ||
        strcmp(pc.abstractSyntax, UID_StorageCommitmentPushModelSOPClass) !=
            0 ||
        strcmp(uid, UID_StorageCommitmentPushModelSOPClass) != 0) {
        commit_set(status, comment, len, STATUS_N_NoSuchSOPClass,
                   "Requested SOP Class %s not supported on this context",
                   util_uid_valid(uid) ? uid : "-");
        return;
    }
    commit_trim(uid, sizeof(uid), req->RequestedSOPInstanceUID);
    if (strcmp(uid, UID_StorageCommitmentPushModelSOPInstance) != 0) {
        commit_set(status, comment, len, STATUS_N_NoSuchSOPInstance,
                   "Requested SOP Instance is not %s",
                   UID_StorageCommitmentPushModelSOPInstance);
        return;
    }
    if (req->ActionTypeID != 1) {
        commit_set(status, comment, len, STATUS_N_NoSuchAction,
                   "Action Type ID %u (only 1 is defined)",
                   (unsigned)req->ActionTypeID);
        return;
    }
    if (info == NULL) {
        commit_set(status, comment, len, STATUS_N_InvalidArgumentValue,
                   "no Action Information");
        return;
    }
    if (!commit_get_uid(info, DCM_TransactionUID, tx_uid, UTIL_UID_MAX + 1)) {
        commit_set(status, comment, len, STATUS_N_InvalidArgumentValue,
                   "TransactionUID (0008,1195) missing or not a UID");
        return;
    }
    if (info->findAndGetSequence(DCM_ReferencedSOPSequence, seq).bad() ||
        seq == NULL || seq->card() == 0) {
        commit_set(status, comment, len, STATUS_N_InvalidArgumentValue,
                   "ReferencedSOPSequence (0008,1199) missing or empty");
        return;
    }
    if (seq->card() > SCP_COMMIT_ITEMS_MAX) {
        commit_set(status, comment, len, STATUS_N_ResourceLimitation,
                   "%lu items, more than %d", (unsigned long)seq->card(),
                   SCP_COMMIT_ITEMS_MAX);
        return;
    }
    try {
        items.reserve(seq->card());
    } catch (const std::bad_alloc &) {
        commit_set(status, comment, len, STATUS_N_ResourceLimitation,
                   "out of memory");
        return;
    }
    for (unsigned long i = 0; i < seq->card(); i++) {
        DcmItem *item = seq->getItem(i);
        scp_commit_ref ref;

        if (item == NULL ||
            !commit_get_uid(item, DCM_ReferencedSOPClassUID, ref.sop_class_uid,
                            sizeof(ref.sop_class_uid))) {
            commit_set(status, comment, len, STATUS_N_InvalidArgumentValue,
                       "item %lu: ReferencedSOPClassUID (0008,1150) missing "
                       "or not a UID",
                       i + 1);
            return;
        }
        if (!commit_get_uid(item, DCM_ReferencedSOPInstanceUID,
                            ref.sop_instance_uid,
                            sizeof(ref.sop_instance_uid))) {
            commit_set(status, comment, len, STATUS_N_InvalidArgumentValue,
                       "item %lu: ReferencedSOPInstanceUID (0008,1155) "
                       "missing or not a UID",
                       i + 1);
            return;
        }
        items.push_back(ref);
    }
}

/* True when we hold the SCP role of accepted context @pres_id: the
 * requestor did not take the SCP role alone (role selection). */
static bool commit_we_are_scp(T_ASC_Association *assoc,
                              T_ASC_PresentationContextID pres_id)
{
    T_ASC_PresentationContext pc;

    return ASC_findAcceptedPresentationContext(assoc->params, pres_id, &pc)
               .good() &&
           pc.acceptedRole != ASC_SC_ROLE_SCP;
}

OFCondition scp__commit_action(struct scp *scp, T_ASC_Association *assoc,
                               unsigned long number, const char *calling_ae,
                               const char *peer,
                               T_ASC_PresentationContextID pres_id,
                               T_DIMSE_N_ActionRQ *req, char *ret_report_here)
{
    T_ASC_PresentationContextID data_pres_id = pres_id;
    DcmDataset *info = NULL;
    std::vector<scp_commit_ref> items;
    char tx_uid[UTIL_UID_MAX + 1] = "";
    char comment[256] = "";
    uint16_t status = STATUS_N_Success;
    OFCondition cond;

    if (ret_report_here != NULL)
        ret_report_here[0] = '\0';
    if (req->DataSetType != DIMSE_DATASET_NULL) {
        cond = DIMSE_receiveDataSetInMemory(assoc, DIMSE_BLOCKING,
                                            (int)scp->timeout_s, &data_pres_id,
                                            &info, NULL, NULL);
        if (cond.bad()) {
            log_warning("event=commit-aborted assoc=%lu from=%s@%s "
                        "reason=\"%s\"",
                        number, calling_ae, peer, cond.text());
            delete info;
            return cond;
        }
    }
    if (data_pres_id != pres_id) {
        commit_set(&status, comment, sizeof(comment),
                   STATUS_N_InvalidArgumentValue,
                   "data set on another presentation context");
    } else {
        commit_validate(scp, assoc, pres_id, req, info, tx_uid, items, &status,
                        comment, sizeof(comment));
    }
    delete info;
    if (status == STATUS_N_Success &&
        !scp__caller_may_commit(scp, calling_ae, peer)) {
        commit_set(&status, comment, sizeof(comment), STATUS_N_NoSuchSOPClass,
                   "Storage Commitment is not offered to this caller");
    }
    if (status == STATUS_N_Success) {
        struct scp_commit_request rq;
        char why[256] = "";
        int r;

        rq.tx_uid = tx_uid;
        rq.calling_ae = calling_ae;
        rq.peer = peer;
        rq.items = items.data();
        rq.item_count = items.size();
        rq.report_here = ret_report_here != NULL &&
                         scp->commit->report_take != NULL &&
                         scp->commit->report_done != NULL &&
                         commit_we_are_scp(assoc, pres_id);
        r = scp->commit->request(scp->commit->ctx, &rq, why, sizeof(why));
        if (r == 0 && rq.report_here)
            OFStandard::strlcpy(ret_report_here, tx_uid, UTIL_UID_MAX + 1);
        if (r == -EALREADY) {
            log_notice("event=commit-repeated assoc=%lu from=%s@%s tx=%s "
                       "items=%zu reason=\"same Transaction UID and items "
                       "as an active request; it will be reported once\"",
                       number, calling_ae, peer, tx_uid, items.size());
        } else if (r == -EEXIST) {
            commit_set(&status, comment, sizeof(comment),
                       STATUS_N_ProcessingFailure,
                       "Transaction UID in use by another request");
        } else if (r == -ENOSPC) {
            commit_set(&status, comment, sizeof(comment),
                       STATUS_N_ResourceLimitation,
                       "cannot keep the request: %s", why);
        } else if (r < 0) {
            commit_set(&status, comment, sizeof(comment),
                       STATUS_N_ProcessingFailure,
                       "cannot keep the request: %s", why);
        }
    }
    if (status == STATUS_N_Success)
        log_info("event=commit-request assoc=%lu from=%s@%s tx=%s items=%zu "
                 "status=0000",
                 number, calling_ae, peer, tx_uid, items.size());
    else
        log_warning("event=commit-refused assoc=%lu from=%s@%s tx=%s "
                    "status=%04X reason=\"%s\"",
                    number, calling_ae, peer, tx_uid[0] ? tx_uid : "-",
                    (unsigned)status, comment);
    cond = commit_respond(assoc, pres_id, req, status, comment);
    if (cond.bad())
        log_warning("event=response-failed assoc=%lu from=%s@%s tx=%s "
                    "reason=\"%s\"",
                    number, calling_ae, peer, tx_uid[0] ? tx_uid : "-",
                    cond.text());
    return cond;
}

OFCondition scp__commit_serve(struct scp_assoc *sa,
                              T_ASC_PresentationContextID pres_id,
                              T_DIMSE_Message *msg)
{
    char here[UTIL_UID_MAX + 1] = "";
    OFCondition cond =
        scp__commit_action(sa->scp, sa->assoc, sa->number, sa->calling_ae,
                           sa->peer, pres_id, &msg->msg.NActionRQ, here);

    if (here[0] != '\0') {
        /* The request is durable and answered: remember it here. Out of
         * memory only means the report goes on a new association. */
        try {
            if (sa->commit_waiting == NULL)
                sa->commit_waiting = new scp_commit_waiting;
            sa->commit_waiting->txs.push_back(scp_commit_wait{ here, pres_id });
        } catch (const std::bad_alloc &) {
            sa->scp->commit->report_done(sa->scp->commit->ctx, here, false,
                                         "out of memory");
        }
    }
    return cond;
}

/* Builds the N-EVENT-REPORT's Event Information (PS3.4 J.3.3.1.2). */
static bool commit_event_info(const struct scp_commit_report *report,
                              DcmDataset *ds, unsigned *ret_event_type)
{
    bool failures = false;

    if (ds->putAndInsertString(DCM_TransactionUID, report->tx_uid).bad())
        return false;
    if (report->retrieve_ae != NULL && report->retrieve_ae[0] != '\0' &&
        ds->putAndInsertString(DCM_RetrieveAETitle, report->retrieve_ae).bad())
        return false;
    for (size_t i = 0; i < report->item_count; i++) {
        const struct scp_commit_result *r = &report->items[i];
        DcmItem *item = NULL;
        bool fail = r->failure_reason != 0;

        if (fail)
            failures = true;
        if (ds->findOrCreateSequenceItem(fail ? DCM_FailedSOPSequence
                                              : DCM_ReferencedSOPSequence,
                                         item, -2)
                .bad() ||
            item == NULL)
            return false;
        if (item->putAndInsertString(DCM_ReferencedSOPClassUID,
                                     r->sop_class_uid)
                .bad() ||
            item->putAndInsertString(DCM_ReferencedSOPInstanceUID,
                                     r->sop_instance_uid)
                .bad())
            return false;
        if (fail &&
            item->putAndInsertUint16(DCM_FailureReason, r->failure_reason)
                .bad())
            return false;
    }
    *ret_event_type = failures ? 2 : 1;
    return true;
}

/* How one N-EVENT-REPORT exchange ended. */
enum commit_exchange_end {
    EXCHANGE_ANSWERED = 0, /* a response came: its status is the answer */
    EXCHANGE_FAILED,       /* the association cannot go on: abort it */
    EXCHANGE_RELEASED,     /* the peer released (acknowledged) instead */
};

/*
 * Sends the N-EVENT-REPORT-RQ with @info on context @pres_id of @assoc
 * and waits up to @timeout_s for its response (status in *@ret_status).
 */
static enum commit_exchange_end
commit_exchange(T_ASC_Association *assoc, T_ASC_PresentationContextID pres_id,
                DcmDataset *info, unsigned event_type, unsigned timeout_s,
                uint16_t *ret_status, char *err, size_t err_len)
{
    T_ASC_PresentationContextID rsp_pres_id = 0;
    T_DIMSE_Message msg;
    T_DIMSE_Message rsp;
    DcmDataset *detail = NULL;
    OFCondition cond;

    memset(&msg, 0, sizeof(msg));
    msg.CommandField = DIMSE_N_EVENT_REPORT_RQ;
    msg.msg.NEventReportRQ.MessageID = assoc->nextMsgID++;
    OFStandard::strlcpy(msg.msg.NEventReportRQ.AffectedSOPClassUID,
                        UID_StorageCommitmentPushModelSOPClass,
                        sizeof(msg.msg.NEventReportRQ.AffectedSOPClassUID));
    OFStandard::strlcpy(msg.msg.NEventReportRQ.AffectedSOPInstanceUID,
                        UID_StorageCommitmentPushModelSOPInstance,
                        sizeof(msg.msg.NEventReportRQ.AffectedSOPInstanceUID));
    msg.msg.NEventReportRQ.DataSetType = DIMSE_DATASET_PRESENT;
    msg.msg.NEventReportRQ.EventTypeID = (DIC_US)event_type;
    cond = DIMSE_sendMessageUsingMemoryData(assoc, pres_id, &msg, NULL, info,
                                            NULL, NULL);
    if (cond.bad()) {
        (void)snprintf(err, err_len, "sending N-EVENT-REPORT-RQ: %s",
                       cond.text());
        return EXCHANGE_FAILED;
    }
    memset(&rsp, 0, sizeof(rsp));
    cond = DIMSE_receiveCommand(assoc, DIMSE_BLOCKING, (int)timeout_s,
                                &rsp_pres_id, &rsp, &detail);
    delete detail;
    if (cond == DUL_PEERREQUESTEDRELEASE) {
        (void)ASC_acknowledgeRelease(assoc);
        (void)snprintf(err, err_len,
                       "the peer released the association "
                       "instead of answering");
        return EXCHANGE_RELEASED;
    }
    if (cond.bad() || rsp.CommandField != DIMSE_N_EVENT_REPORT_RSP ||
        rsp.msg.NEventReportRSP.MessageIDBeingRespondedTo !=
            msg.msg.NEventReportRQ.MessageID) {
        (void)snprintf(err, err_len, "no N-EVENT-REPORT-RSP: %s",
                       cond.bad() ? cond.text() : "another message came");
        return EXCHANGE_FAILED;
    }
    if (rsp.msg.NEventReportRSP.DataSetType != DIMSE_DATASET_NULL) {
        DcmDataset *reply = NULL;
        (void)DIMSE_receiveDataSetInMemory(assoc, DIMSE_BLOCKING,
                                           (int)timeout_s, &rsp_pres_id, &reply,
                                           NULL, NULL);
        delete reply;
    }
    *ret_status = rsp.msg.NEventReportRSP.DimseStatus;
    return EXCHANGE_ANSWERED;
}

int scp_commit_send_report(const char *our_ae, const struct scp_remote *to,
                           const struct scp_outbound_tls *tls,
                           const struct scp_commit_report *report,
                           unsigned timeout_s, uint16_t *ret_status, char *err,
                           size_t err_len)
{
    static const char *const ts[] = {
        UID_LittleEndianExplicitTransferSyntax,
        UID_LittleEndianImplicitTransferSyntax,
    };
    struct scp_out_context ctx;
    struct scp_outbound ob;
    T_ASC_PresentationContextID pres_id;
    DcmDataset info;
    unsigned event_type = 0;
    enum commit_exchange_end end;
    struct scp_out_tls out_tls;
    int r;

    if (!commit_event_info(report, &info, &event_type)) {
        (void)snprintf(err, err_len, "cannot build the event information");
        return -ENOMEM;
    }
    if (tls != NULL && tls->ca_file != NULL) {
        out_tls.on = true;
        out_tls.ca_file = tls->ca_file;
        if (tls->certificate_file != NULL)
            out_tls.certificate_file = tls->certificate_file;
        if (tls->private_key_file != NULL)
            out_tls.private_key_file = tls->private_key_file;
        if (tls->private_key_password_file != NULL)
            out_tls.private_key_password_file = tls->private_key_password_file;
        out_tls.profile = tls->profile;
        out_tls.security_level = tls->security_level;
    }
    ctx.abstract_syntax = UID_StorageCommitmentPushModelSOPClass;
    ctx.transfer_syntaxes = ts;
    ctx.transfer_syntax_count = 2;
    ctx.role = ASC_SC_ROLE_SCP;
    r = scp__outbound_open_tls(our_ae, to, to->tls ? &out_tls : NULL, &ctx, 1,
                               SCP_COMMIT_OUT_PDU, timeout_s, &ob, err,
                               err_len);
    if (r < 0)
        return r;
    pres_id = scp__outbound_context(&ob, UID_StorageCommitmentPushModelSOPClass,
                                    ASC_SC_ROLE_SCP);
    if (pres_id == 0)
        /* No role selection item in the answer: the default roles. Many
         * SCUs accept the report that way; try rather than never report. */
        pres_id = scp__outbound_context(
            &ob, UID_StorageCommitmentPushModelSOPClass, ASC_SC_ROLE_DEFAULT);
    if (pres_id == 0) {
        (void)snprintf(err, err_len,
                       "%s refused Storage Commitment with the SCP role",
                       to->ae_title);
        scp__outbound_close(&ob, false);
        return -EPROTO;
    }
    end = commit_exchange(ob.assoc, pres_id, &info, event_type, timeout_s,
                          ret_status, err, err_len);
    if (end != EXCHANGE_ANSWERED) {
        scp__outbound_close(&ob, end == EXCHANGE_FAILED);
        return -EPROTO;
    }
    scp__outbound_close(&ob, false);
    return 0;
}

int scp__commit_idle(struct scp_assoc *sa)
{
    struct scp_commit_waiting *w = sa->commit_waiting;
    const struct scp_commit_handler *h = sa->scp->commit;
    int ended = 0;

    if (w == NULL || w->txs.empty() || h == NULL)
        return 0;
    for (size_t i = 0; i < w->txs.size() && ended == 0;) {
        struct scp_commit_report report;
        DcmDataset info;
        std::string tx;
        T_ASC_PresentationContextID pres_id = w->txs[i].pres_id;
        unsigned event_type = 0;
        uint16_t status = 0;
        char err[256] = "";
        bool sent = false;
        int r;

        /* The SCU sent something: the command loop serves it first. */
        if (ASC_dataWaiting(sa->assoc, 0))
            break;
        r = h->report_take(h->ctx, w->txs[i].tx_uid.c_str(), &report);
        if (r == 0) {
            i++;
            continue;
        }
        tx.swap(w->txs[i].tx_uid);
        w->txs.erase(w->txs.begin() + (long)i);
        if (r < 0)
            continue;
        if (!commit_event_info(&report, &info, &event_type)) {
            (void)snprintf(err, sizeof(err),
                           "cannot build the event information");
        } else {
            enum commit_exchange_end end =
                commit_exchange(sa->assoc, pres_id, &info, event_type,
                                sa->scp->timeout_s, &status, err, sizeof(err));

            if (end == EXCHANGE_ANSWERED && status == 0)
                sent = true;
            else if (end == EXCHANGE_ANSWERED)
                (void)snprintf(err, sizeof(err), "the SCU answered status %04X",
                               (unsigned)status);
            else
                ended = end == EXCHANGE_RELEASED ? 1 : -1;
        }
        h->report_done(h->ctx, tx.c_str(), sent, sent ? NULL : err);
        if (ended > 0)
            log_info("event=released assoc=%lu from=%s@%s stores=%lu "
                     "reason=\"during the N-EVENT-REPORT of tx=%s\"",
                     sa->number, sa->calling_ae, sa->peer, sa->stores,
                     tx.c_str());
        else if (ended < 0)
            log_warning("event=dropped assoc=%lu from=%s@%s stores=%lu "
                        "reason=\"N-EVENT-REPORT of tx=%s: %s\"",
                        sa->number, sa->calling_ae, sa->peer, sa->stores,
                        tx.c_str(), err);
    }
    return ended;
}

void scp__commit_assoc_end(struct scp_assoc *sa)
{
    struct scp_commit_waiting *w = sa->commit_waiting;

    if (w == NULL)
        return;
    for (const scp_commit_wait &wt : w->txs)
        sa->scp->commit->report_done(sa->scp->commit->ctx, wt.tx_uid.c_str(),
                                     false, NULL);
    delete w;
    sa->commit_waiting = NULL;
}
