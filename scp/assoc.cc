/* SPDX-License-Identifier: Apache-2.0 */
/*
 * assoc - one thread per association (see scp.h for the contract,
 * scp_int.h for the module's files):
 *   serve_connection()   DCMTK parses the A-ASSOCIATE-RQ the connection
 *                        loop (scp_net.cc) checked; then
 *   accept_association() application context, called AE, caller, peer
 *                        PDU size and the negotiation of presentation
 *                        contexts; then
 *   serve_commands()     release, abort, idle timeout and shutdown, and
 *                        every command handed to its service by the
 *                        table scp_services[] (echo.cc, store.cc,
 *                        find.cc, commit.cc, retrieve.cc); and
 *   end_association()    frees the DCMTK association without waiting for
 *                        the peer and hands the socket back to the loop;
 *                        connection_thread() then frees the slot, last.
 *
 * A new DIMSE service is one file with its scp__<service>_serve() and one
 * row in scp_services[], plus its SOP classes in classify_syntax().
 */
#include "scp_int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <exception>
#include <memory>
#include <string>
#include <vector>

#include <openssl/crypto.h>

#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dimse.h"
#include "dcmtk/dcmnet/diutil.h"
#include "dcmtk/dcmnet/dul.h"
#include "dcmtk/ofstd/ofstd.h"

#include "base/log.h"
#include "base/util.h"
#include "commit_int.h"

/* How long an association thread waits for a command before it checks
 * the stop flag and the idle limit. */
#define SCP_COMMAND_POLL_S 1
/* The refused abstract syntaxes of one association are logged in one
 * line of at most this many characters of names (then "and N more"). */
#define SCP_REFUSED_TEXT_MAX 480

pthread_mutex_t scp__handover_lock = PTHREAD_MUTEX_INITIALIZER;

/* ------------------------------------------------------------------ */
/* Association negotiation                                             */
/* ------------------------------------------------------------------ */

/* Transfer syntaxes for storage, in order of preference. For each
 * proposed context, ASC_acceptContextsWithPreferredTransferSyntaxes()
 * picks the first of these that the SCU offered:
 *   1. lossless encapsulated syntaxes: the object arrives exactly as the
 *      modality holds it, smaller, and nothing is lost whichever way it
 *      was stored (DCMTK's storescu cannot even decode every one of them);
 *   2. explicit VR little endian (implicit VR makes Azure answer 202 with
 *      warning 45063);
 *   3. lossy encapsulated syntaxes: taken when the SCU offers nothing
 *      uncompressed, so lossy data is never recompressed at our request;
 *   4. deflate, implicit VR little endian, and the retired big endian.
 * We never transcode on receive: the data set is stored as sent. */
static const char *storage_transfer_syntaxes[] = {
    UID_RLELosslessTransferSyntax,
    UID_JPEGProcess14SV1TransferSyntax,
    UID_JPEGProcess14TransferSyntax,
    UID_JPEGLSLosslessTransferSyntax,
    UID_JPEG2000LosslessOnlyTransferSyntax,
    UID_JPEG2000Part2MulticomponentImageCompressionLosslessOnlyTransferSyntax,
    UID_JPEGProcess15TransferSyntax,
    UID_JPEGProcess28TransferSyntax,
    UID_JPEGProcess29TransferSyntax,
    UID_LittleEndianExplicitTransferSyntax,
    UID_JPEGProcess1TransferSyntax,
    UID_JPEGProcess2_4TransferSyntax,
    UID_JPEGProcess3_5TransferSyntax,
    UID_JPEGProcess6_8TransferSyntax,
    UID_JPEGProcess7_9TransferSyntax,
    UID_JPEGProcess10_12TransferSyntax,
    UID_JPEGProcess11_13TransferSyntax,
    UID_JPEGProcess16_18TransferSyntax,
    UID_JPEGProcess17_19TransferSyntax,
    UID_JPEGProcess20_22TransferSyntax,
    UID_JPEGProcess21_23TransferSyntax,
    UID_JPEGProcess24_26TransferSyntax,
    UID_JPEGProcess25_27TransferSyntax,
    UID_JPEGLSLossyTransferSyntax,
    UID_JPEG2000TransferSyntax,
    UID_JPEG2000Part2MulticomponentImageCompressionTransferSyntax,
    UID_MPEG2MainProfileAtMainLevelTransferSyntax,
    UID_MPEG2MainProfileAtHighLevelTransferSyntax,
    UID_MPEG4HighProfileLevel4_1TransferSyntax,
    UID_MPEG4BDcompatibleHighProfileLevel4_1TransferSyntax,
    UID_MPEG4HighProfileLevel4_2_For2DVideoTransferSyntax,
    UID_MPEG4HighProfileLevel4_2_For3DVideoTransferSyntax,
    UID_MPEG4StereoHighProfileLevel4_2TransferSyntax,
    UID_HEVCMainProfileLevel5_1TransferSyntax,
    UID_HEVCMain10ProfileLevel5_1TransferSyntax,
    UID_DeflatedExplicitVRLittleEndianTransferSyntax,
    UID_LittleEndianImplicitTransferSyntax,
    UID_BigEndianExplicitTransferSyntax,
};

static const char *verification_transfer_syntaxes[] = {
    UID_LittleEndianExplicitTransferSyntax,
    UID_LittleEndianImplicitTransferSyntax,
    UID_BigEndianExplicitTransferSyntax,
};

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

const struct scp_caller_rule *scp__caller_rule(const struct scp *scp,
                                               const char *calling_ae,
                                               const char *peer_ip)
{
    for (size_t i = 0; i < scp->caller_count; i++) {
        const struct scp_caller_rule *rule = &scp->callers[i];
        bool host_ok = rule->host_count == 0;

        if (rule->ae_title != NULL && strcmp(rule->ae_title, calling_ae) != 0)
            continue;
        for (size_t h = 0; h < rule->host_count && !host_ok; h++)
            host_ok = util_ipv4_net_contains(&rule->hosts[h], peer_ip);
        if (host_ok)
            return rule;
    }
    return NULL;
}

bool scp__caller_allowed(const struct scp *scp, const char *calling_ae,
                         const char *peer_ip, bool *ret_find)
{
    const struct scp_caller_rule *rule;

    *ret_find = scp->find != NULL;
    if (scp->caller_count == 0)
        return true;
    rule = scp__caller_rule(scp, calling_ae, peer_ip);
    if (rule == NULL)
        return false;
    *ret_find = scp->find != NULL && rule->find;
    return true;
}

bool scp__caller_may_retrieve(const struct scp *scp, const char *calling_ae,
                              const char *peer_ip)
{
    const struct scp_caller_rule *rule;

    if (scp->retrieve == NULL)
        return false;
    if (scp->caller_count == 0)
        return true;
    rule = scp__caller_rule(scp, calling_ae, peer_ip);
    return rule != NULL && rule->retrieve;
}

static void reject_association(T_ASC_Association *assoc,
                               T_ASC_RejectParametersResult result,
                               T_ASC_RejectParametersSource source,
                               T_ASC_RejectParametersReason reason)
{
    T_ASC_RejectParameters rej;

    rej.result = result;
    rej.source = source;
    rej.reason = reason;
    OFCondition cond = ASC_rejectAssociation(assoc, &rej);
    if (cond.bad())
        log_debug("event=reject-send-failed reason=\"%s\"", cond.text());
}

static const char *find_sop_classes[] = {
    UID_FINDPatientRootQueryRetrieveInformationModel,
    UID_FINDStudyRootQueryRetrieveInformationModel,
};

/* True if the association request proposes a C-FIND SOP class. */
static bool proposes_find(T_ASC_Association *assoc)
{
    int n = ASC_countPresentationContexts(assoc->params);

    for (int i = 0; i < n; i++) {
        T_ASC_PresentationContext pc;
        if (ASC_getPresentationContext(assoc->params, i, &pc).bad())
            continue;
        for (size_t j = 0; j < ARRAY_LEN(find_sop_classes); j++)
            if (strcmp(pc.abstractSyntax, find_sop_classes[j]) == 0)
                return true;
    }
    return false;
}

/* Everything under this root is a storage SOP class (PS3.6 Annex A),
 * except a few Inventory classes of 2022 (...201.2 to ...201.6, a query,
 * retrieve and creation service): accepted by this rule too, they take
 * C-STORE only here. */
#define SCP_STORAGE_ROOT "1.2.840.10008.5.1.4.1.1."

static bool uid_in(const char *uid, const char *const *list, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (strcmp(uid, list[i]) == 0)
            return true;
    return false;
}

/* The storage SOP classes of non-patient objects (PS3.3 Annex A: Color
 * Palette, Hanging Protocol, implant templates, defined procedure
 * protocols; DCMTK's dcmNonPatientStorageSOPClassUIDs, not exported by
 * 3.6.7): they have no Study Instance UID, so STOW-RS to a study cannot
 * take them. */
static const char *non_patient_classes[] = {
    UID_ColorPaletteStorage,
    UID_CTDefinedProcedureProtocolStorage,
    UID_GenericImplantTemplateStorage,
    UID_HangingProtocolStorage,
    UID_ImplantAssemblyTemplateStorage,
    UID_ImplantTemplateGroupStorage,
    UID_ProtocolApprovalStorage,
    UID_XADefinedProcedureProtocolStorage,
};

/* Why a proposed abstract syntax is refused (logged per association). */
enum refusal {
    REFUSE_NONE = 0,
    REFUSE_UNSUPPORTED,
    REFUSE_UNKNOWN_STORAGE,
    REFUSE_NON_PATIENT,
    REFUSE_FIND_OFF,
    REFUSE_FIND_CALLER,
    REFUSE_COMMIT_OFF,
    REFUSE_COMMIT_CALLER,
    REFUSE_RETRIEVE_OFF,
    REFUSE_RETRIEVE_CALLER,
    REFUSE_TRANSFER_SYNTAX,
};

static const char *refusal_text(enum refusal why)
{
    switch (why) {
    case REFUSE_UNSUPPORTED:
        return "not supported";
    case REFUSE_UNKNOWN_STORAGE:
        return "unknown storage class, not in dicom.extra_storage_classes "
               "and dicom.accept_unknown_storage_classes false";
    case REFUSE_NON_PATIENT:
        return "not supported: a non-patient object, no study to send it "
               "to";
    case REFUSE_FIND_OFF:
        return "not supported: C-FIND is off, query.enabled false or no "
               "upload.url";
    case REFUSE_FIND_CALLER:
        return "not allowed for this caller: find false in "
               "dicom.allowed_callers";
    case REFUSE_COMMIT_OFF:
        return "not supported: Storage Commitment is off, commit.enabled "
               "false or no upload.url";
    case REFUSE_COMMIT_CALLER:
        return "not allowed for this caller: commit false in "
               "dicom.allowed_callers";
    case REFUSE_RETRIEVE_OFF:
        return "not supported: C-MOVE and C-GET need upload.url";
    case REFUSE_RETRIEVE_CALLER:
        return "not allowed for this caller (retrieve false)";
    case REFUSE_TRANSFER_SYNTAX:
        return "no proposed transfer syntax is accepted";
    case REFUSE_NONE:
        break;
    }
    return "refused";
}

/*
 * What we do with the proposed abstract syntax @uid: REFUSE_NONE and
 * *@ret_group (0 Verification and Storage Commitment, 1 C-FIND, 2
 * storage) when we accept it. Storage Commitment when offered
 * (scp_params.commit) and @commit_allowed for the caller.
 * Storage: DCMTK 3.6.7's list, every UID under SCP_STORAGE_ROOT unless
 * dicom.accept_unknown_storage_classes is false, and the UIDs of
 * dicom.extra_storage_classes.
 */
static enum refusal classify_syntax(const struct scp *scp, const char *uid,
                                    bool find_allowed, bool commit_allowed,
                                    bool retrieve_allowed, int *ret_group)
{
    size_t root_len = strlen(SCP_STORAGE_ROOT);

    if (strcmp(uid, UID_VerificationSOPClass) == 0) {
        *ret_group = 0;
        return REFUSE_NONE;
    }
    if (strcmp(uid, UID_StorageCommitmentPushModelSOPClass) == 0) {
        *ret_group = 0;
        if (scp->commit == NULL)
            return REFUSE_COMMIT_OFF;
        return commit_allowed ? REFUSE_NONE : REFUSE_COMMIT_CALLER;
    }
    if (uid_in(uid, find_sop_classes, ARRAY_LEN(find_sop_classes))) {
        *ret_group = 1;
        if (scp->find == NULL)
            return REFUSE_FIND_OFF;
        return find_allowed ? REFUSE_NONE : REFUSE_FIND_CALLER;
    }
    if (scp__is_retrieve_class(uid)) {
        *ret_group = 1;
        if (scp->retrieve == NULL)
            return REFUSE_RETRIEVE_OFF;
        return retrieve_allowed ? REFUSE_NONE : REFUSE_RETRIEVE_CALLER;
    }
    *ret_group = 2;
    for (const std::string &extra : scp->extra_storage)
        if (extra == uid)
            return REFUSE_NONE;
    if (uid_in(uid, non_patient_classes, ARRAY_LEN(non_patient_classes)))
        return REFUSE_NON_PATIENT;
    if (uid_in(uid, dcmAllStorageSOPClassUIDs,
               (size_t)numberOfDcmAllStorageSOPClassUIDs))
        return REFUSE_NONE;
    if (strncmp(uid, SCP_STORAGE_ROOT, root_len) == 0 &&
        uid[root_len] != '\0' && util_uid_valid(uid))
        return scp->accept_unknown_storage ? REFUSE_NONE
                                           : REFUSE_UNKNOWN_STORAGE;
    return REFUSE_UNSUPPORTED;
}

/* One refused abstract syntax, once per association. */
struct refused_syntax {
    std::string uid;
    enum refusal why;
};

static void note_refusal(std::vector<refused_syntax> &refused, const char *uid,
                         enum refusal why)
{
    for (const refused_syntax &r : refused)
        if (r.uid == uid)
            return;
    refused.push_back(refused_syntax{ uid, why });
}

/*
 * Accepts Verification, the storage SOP classes of classify_syntax() and,
 * when @find_allowed, the Patient Root and Study Root C-FIND models, and
 * when @retrieve_allowed their MOVE and GET models (a storage context
 * proposed with the SCP role for C-GET is then accepted with the role
 * proposed); every other context is refused (abstract syntax not
 * supported, or transfer syntaxes not supported). The refused abstract syntaxes
 * go to @refused with the reason. Returns the number of accepted presentation
 * contexts, or -1.
 */
static int negotiate_contexts(const struct scp *scp, T_ASC_Association *assoc,
                              bool find_allowed, bool commit_allowed,
                              bool retrieve_allowed,
                              std::vector<refused_syntax> &refused)
{
    std::vector<std::string> groups[3];
    std::vector<const char *> uids;
    int n = ASC_countPresentationContexts(assoc->params);
    static const char **transfer[3] = {
        verification_transfer_syntaxes,
        verification_transfer_syntaxes,
        storage_transfer_syntaxes,
    };
    static const int transfer_count[3] = {
        (int)ARRAY_LEN(verification_transfer_syntaxes),
        (int)ARRAY_LEN(verification_transfer_syntaxes),
        (int)ARRAY_LEN(storage_transfer_syntaxes),
    };

    for (int i = 0; i < n; i++) {
        T_ASC_PresentationContext pc;
        int group = -1;
        if (ASC_getPresentationContext(assoc->params, i, &pc).bad())
            return -1;
        enum refusal why =
            classify_syntax(scp, pc.abstractSyntax, find_allowed,
                            commit_allowed, retrieve_allowed, &group);
        if (why != REFUSE_NONE) {
            note_refusal(refused, pc.abstractSyntax, why);
            continue;
        }
        bool seen = false;
        for (const std::string &g : groups[group])
            seen = seen || g == pc.abstractSyntax;
        if (!seen)
            groups[group].push_back(pc.abstractSyntax);
    }
    for (int g = 0; g < 3; g++) {
        if (groups[g].empty())
            continue;
        uids.clear();
        for (const std::string &uid : groups[g])
            uids.push_back(uid.c_str());
        OFCondition cond = ASC_acceptContextsWithPreferredTransferSyntaxes(
            assoc->params, uids.data(), (int)uids.size(), transfer[g],
            transfer_count[g]);
        if (cond.bad())
            return -1;
    }
    /* Contexts none of the calls above accepted: refused with the right
     * result by DCMTK (abstract or transfer syntax not supported). */
    int accepted = 0;
    for (int i = 0; i < n; i++) {
        T_ASC_PresentationContext pc;
        if (ASC_getPresentationContext(assoc->params, i, &pc).bad())
            return -1;
        if (pc.resultReason == ASC_P_ACCEPTANCE) {
            accepted++;
            /* C-GET: the SCU takes the SCP role of storage contexts so
             * that we send C-STORE on this association. */
            int group = -1;
            if (retrieve_allowed && scp->retrieve != NULL &&
                (pc.proposedRole == ASC_SC_ROLE_SCP ||
                 pc.proposedRole == ASC_SC_ROLE_SCUSCP) &&
                classify_syntax(scp, pc.abstractSyntax, false, false, false,
                                &group) == REFUSE_NONE &&
                group == 2 &&
                ASC_acceptPresentationContext(
                    assoc->params, pc.presentationContextID,
                    pc.acceptedTransferSyntax, pc.proposedRole)
                    .bad())
                return -1;
        } else if (pc.resultReason == ASC_P_NOTYETNEGOTIATED) {
            if (ASC_refusePresentationContext(assoc->params,
                                              pc.presentationContextID,
                                              ASC_P_ABSTRACTSYNTAXNOTSUPPORTED)
                    .bad())
                return -1;
        } else if (pc.resultReason == ASC_P_TRANSFERSYNTAXESNOTSUPPORTED) {
            note_refusal(refused, pc.abstractSyntax, REFUSE_TRANSFER_SYNTAX);
        }
    }
    return accepted;
}

/*
 * Logs, once per association, the abstract syntaxes refused at
 * negotiation: by DCMTK's name when it has one, else the UID, each with
 * its reason; at most SCP_REFUSED_TEXT_MAX characters, then how many more.
 */
static void log_refused(unsigned long number, const char *calling,
                        const char *peer,
                        const std::vector<refused_syntax> &refused)
{
    std::string text;
    size_t shown = 0;

    if (refused.empty())
        return;
    for (const refused_syntax &r : refused) {
        const char *name = util_uid_valid(r.uid.c_str())
                               ? dcmFindNameOfUID(r.uid.c_str(), NULL)
                               : NULL;
        std::string entry = name != NULL                    ? name
                            : util_uid_valid(r.uid.c_str()) ? r.uid
                                                            : "(not a UID)";
        entry += " (";
        entry += refusal_text(r.why);
        entry += ")";
        if (shown > 0 && text.size() + entry.size() + 2 > SCP_REFUSED_TEXT_MAX)
            break;
        if (shown > 0)
            text += "; ";
        text += entry;
        shown++;
    }
    if (shown < refused.size())
        text += "; and " + std::to_string(refused.size() - shown) + " more";
    log_notice("event=contexts-refused assoc=%lu from=%s@%s count=%zu "
               "syntaxes=\"%s\"",
               number, calling, peer, refused.size(), text.c_str());
}

/* ------------------------------------------------------------------ */
/* Association threads                                                 */
/* ------------------------------------------------------------------ */

/* How serve_commands() ended, and so what the socket still needs. */
enum assoc_end {
    END_RELEASED,   /* A-RELEASE-RP sent */
    END_PEER_ABORT, /* the peer aborted or closed: nothing to send */
    END_ABORT,      /* we abort: send A-ABORT */
};

/*
 * Ends a connection DCMTK holds: asks for our A-ABORT if @send_abort (our
 * own 10 bytes: DCMTK's ASC_abortAssociation() would then wait for the
 * peer to close, holding this thread and its slot), and lets DCMTK free
 * the association without ASC_dropSCPAssociation()'s wait of up to 180 s
 * for the peer. DCMTK's close of the connection hands the socket to the
 * connection loop (scp_pdu.cc), which closes it once the peer has closed
 * or within dicom.timeout_s. Then frees the slot, at once.
 */
static void end_association(T_ASC_Association **passoc, bool send_abort)
{
    if (send_abort && *passoc != NULL && (*passoc)->DULassociation != NULL)
        scp__abort_on_close(
            DUL_getTransportConnection((*passoc)->DULassociation));
    (void)ASC_dropAssociation(*passoc);
    (void)ASC_destroyAssociation(passoc);
}

/*
 * A C-CANCEL-RQ with nothing in progress: one that crossed our final
 * response (PS3.7 9.3.2.3 lets it arrive late), or one for a message ID
 * long answered. There is nothing to cancel.
 */
static OFCondition ignore_cancel(struct scp_assoc *sa,
                                 T_ASC_PresentationContextID pres_id,
                                 T_DIMSE_Message *msg)
{
    (void)pres_id;
    log_debug("event=cancel-ignored assoc=%lu from=%s@%s msg_id=%u "
              "reason=\"no operation in progress\"",
              sa->number, sa->calling_ae, sa->peer,
              (unsigned)msg->msg.CCancelRQ.MessageIDBeingRespondedTo);
    return EC_Normal;
}

/* The DIMSE services, by the command field of their request: a command
 * not in this table aborts the association. */
struct scp_service {
    T_DIMSE_Command command;
    scp_service_fn serve;
};

static const struct scp_service scp_services[] = {
    { DIMSE_C_ECHO_RQ, scp__echo_serve },
    { DIMSE_C_STORE_RQ, scp__store_serve },
    { DIMSE_C_FIND_RQ, scp__find_serve },
    { DIMSE_N_ACTION_RQ, scp__commit_serve },
    { DIMSE_C_MOVE_RQ, scp__move_serve },
    { DIMSE_C_GET_RQ, scp__get_serve },
    { DIMSE_C_CANCEL_RQ, ignore_cancel },
};

static const struct scp_service *find_service(T_DIMSE_Command command)
{
    for (const struct scp_service &service : scp_services)
        if (service.command == command)
            return &service;
    return NULL;
}

/* Serves the commands of @sa until the association ends (see
 * enum assoc_end). */
static enum assoc_end serve_commands(struct scp_assoc *sa)
{
    struct scp *scp = sa->scp;
    uint64_t idle_since = util_now_monotonic_ms();

    for (;;) {
        T_ASC_PresentationContextID pres_id = 0;
        T_DIMSE_Message msg;
        DcmDataset *status_detail = NULL;
        OFCondition cond;

        if (scp->should_stop(scp->stop_ctx)) {
            log_info("event=closing assoc=%lu from=%s@%s stores=%lu "
                     "reason=shutdown",
                     sa->number, sa->calling_ae, sa->peer, sa->stores);
            return END_ABORT;
        }
        memset(&msg, 0, sizeof(msg));
        cond = DIMSE_receiveCommand(sa->assoc, DIMSE_NONBLOCKING,
                                    SCP_COMMAND_POLL_S, &pres_id, &msg,
                                    &status_detail);
        delete status_detail;
        if (cond == DIMSE_NODATAAVAILABLE) {
            int sent = scp__commit_idle(sa); /* commit.same_association */
            if (sent != 0)
                return sent > 0 ? END_RELEASED : END_ABORT;
            if (util_now_monotonic_ms() - idle_since >
                (uint64_t)scp->timeout_s * 1000u) {
                log_notice("event=closing assoc=%lu from=%s@%s stores=%lu "
                           "reason=idle-timeout",
                           sa->number, sa->calling_ae, sa->peer, sa->stores);
                return END_ABORT;
            }
            continue;
        }
        if (cond == DUL_PEERREQUESTEDRELEASE) {
            (void)ASC_acknowledgeRelease(sa->assoc);
            log_info("event=released assoc=%lu from=%s@%s stores=%lu",
                     sa->number, sa->calling_ae, sa->peer, sa->stores);
            return END_RELEASED;
        }
        if (cond == DUL_PEERABORTEDASSOCIATION) {
            log_notice("event=aborted-by-peer assoc=%lu from=%s@%s "
                       "stores=%lu",
                       sa->number, sa->calling_ae, sa->peer, sa->stores);
            return END_PEER_ABORT;
        }
        if (cond.bad()) {
            log_warning("event=dropped assoc=%lu from=%s@%s stores=%lu "
                        "reason=\"%s\"",
                        sa->number, sa->calling_ae, sa->peer, sa->stores,
                        cond.text());
            return END_ABORT;
        }

        const struct scp_service *service = find_service(msg.CommandField);
        if (service != NULL) {
            cond = service->serve(sa, pres_id, &msg);
        } else {
            log_warning("event=dropped assoc=%lu from=%s@%s "
                        "reason=\"unsupported DIMSE command 0x%04x\"",
                        sa->number, sa->calling_ae, sa->peer,
                        (unsigned)msg.CommandField);
            cond = DIMSE_BADCOMMANDTYPE;
        }
        if (cond.bad())
            return END_ABORT;
        idle_since = util_now_monotonic_ms();
    }
}

/*
 * Decides on one received association request: the application context,
 * the called AE, the caller and the peer's maximum PDU length, then
 * negotiates the presentation contexts and acknowledges. Returns true
 * when the association was accepted; otherwise it has been rejected (or
 * could not be acknowledged) and the caller ends it.
 */
static bool accept_association(struct scp *scp, T_ASC_Association *assoc,
                               unsigned long number, char *calling,
                               size_t calling_len, const char *peer)
{
    bool find_allowed = false;
    char called[UTIL_AE_TITLE_MAX + 2];
    char raw_called[UTIL_AE_TITLE_MAX + 2] = "";
    char raw_calling[UTIL_AE_TITLE_MAX + 2] = "";
    char app_context[UTIL_UID_MAX + 2] = "";
    char why_buf[160];
    const char *why = NULL;
    std::vector<refused_syntax> refused;
    long peer_pdu = assoc->params->theirMaxPDUReceiveSize;

    (void)ASC_getAPTitles(assoc->params, raw_calling, sizeof(raw_calling),
                          raw_called, sizeof(raw_called), NULL, 0);
    (void)ASC_getApplicationContextName(assoc->params, app_context,
                                        sizeof(app_context));
    if (util_trim_copy(called, sizeof(called), raw_called) < 0 ||
        !util_ae_title_valid(called))
        OFStandard::strlcpy(called, "?", sizeof(called));
    if (util_trim_copy(calling, calling_len, raw_calling) < 0 ||
        !util_ae_title_valid(calling))
        OFStandard::strlcpy(calling, "?", calling_len);

    if (strcmp(app_context, UID_StandardApplicationContext) != 0) {
        reject_association(assoc, ASC_RESULT_REJECTEDPERMANENT,
                           ASC_SOURCE_SERVICEUSER,
                           ASC_REASON_SU_APPCONTEXTNAMENOTSUPPORTED);
        why = "application context name not supported";
    } else if (strcmp(called, scp->ae_title) != 0) {
        reject_association(assoc, ASC_RESULT_REJECTEDPERMANENT,
                           ASC_SOURCE_SERVICEUSER,
                           ASC_REASON_SU_CALLEDAETITLENOTRECOGNIZED);
        why = "called AE title not recognized";
    } else if (strcmp(calling, "?") == 0) {
        /* Empty or not an AE title: DCMTK could not even acknowledge it
         * ("Illegal service parameter: Calling AP Title"). */
        reject_association(assoc, ASC_RESULT_REJECTEDPERMANENT,
                           ASC_SOURCE_SERVICEUSER,
                           ASC_REASON_SU_CALLINGAETITLENOTRECOGNIZED);
        why = "calling AE title empty or invalid";
    } else if (!scp__caller_allowed(scp, calling, peer, &find_allowed)) {
        reject_association(assoc, ASC_RESULT_REJECTEDPERMANENT,
                           ASC_SOURCE_SERVICEUSER,
                           ASC_REASON_SU_CALLINGAETITLENOTRECOGNIZED);
        why = "caller not in dicom.allowed_callers";
    } else if (peer_pdu > 0 && (unsigned long)peer_pdu < SCP_MIN_PEER_PDU) {
        /* Its instances could be stored, but not one response sent: the
         * SCU would send them all again. */
        reject_association(assoc, ASC_RESULT_REJECTEDPERMANENT,
                           ASC_SOURCE_SERVICEUSER, ASC_REASON_SU_NOREASON);
        snprintf(why_buf, sizeof(why_buf),
                 "the caller's maximum PDU length of %ld bytes cannot carry "
                 "our responses (at least %u, or 0 for no limit)",
                 peer_pdu, SCP_MIN_PEER_PDU);
        why = why_buf;
    } else if (negotiate_contexts(scp, assoc, find_allowed,
                                  scp__caller_may_commit(scp, calling, peer),
                                  scp__caller_may_retrieve(scp, calling, peer),
                                  refused) < 0) {
        reject_association(assoc, ASC_RESULT_REJECTEDPERMANENT,
                           ASC_SOURCE_SERVICEUSER, ASC_REASON_SU_NOREASON);
        why = "presentation context negotiation failed";
    }
    if (why != NULL) {
        log_warning("event=rejected assoc=%lu from=%s@%s called=%s "
                    "reason=\"%s\"",
                    number, calling, peer, called, why);
        return false;
    }

    if (!find_allowed && proposes_find(assoc))
        log_notice("event=find-refused assoc=%lu from=%s@%s reason=\"%s\"",
                   number, calling, peer,
                   scp->find == NULL
                       ? "C-FIND is not offered (query.enabled false or "
                         "no upload.url)"
                       : "this caller may not query (\"find\": false in "
                         "dicom.allowed_callers)");
    log_refused(number, calling, peer, refused);
    int accepted = ASC_countAcceptedPresentationContexts(assoc->params);
    OFCondition cond = ASC_acknowledgeAssociation(assoc);
    if (cond.bad()) {
        log_warning("event=dropped assoc=%lu from=%s@%s reason=\"%s\"", number,
                    calling, peer, cond.text());
        return false;
    }
    if (accepted == 0)
        log_warning("event=accepted assoc=%lu from=%s@%s contexts=0 "
                    "reason=\"no proposed presentation context is "
                    "supported\"",
                    number, calling, peer);
    else
        log_info("event=accepted assoc=%lu from=%s@%s contexts=%d", number,
                 calling, peer, accepted);
    return true;
}

/*
 * One association, from the whole A-ASSOCIATE-RQ the loop checked to the
 * end: DCMTK parses it, we accept or reject, serve, and hand the socket
 * back. The loop took the association slot; connection_thread() frees it.
 */
static void serve_connection(struct scp_conn *conn)
{
    struct scp *scp = conn->scp;
    T_ASC_Association *assoc = NULL;
    struct scp_assoc sa;
    OFCondition cond;

    /* DCMTK takes the socket over through a connection of our transport
     * layer (scp_pdu.cc), which hands it back to the loop when closed. */
    pthread_mutex_lock(&scp__handover_lock);
    dcmExternalSocketHandle.set(conn->fd);
    (void)scp__split_taken();
    cond =
        ASC_receiveAssociation(scp->network, &assoc, (int)scp->max_pdu, NULL,
                               NULL, OFFalse, DUL_NOBLOCK, (int)scp->timeout_s);
    int taken = scp__split_taken();
    dcmExternalSocketHandle.set(-1);
    pthread_mutex_unlock(&scp__handover_lock);

    if (cond.bad()) {
        log_warning("event=dropped assoc=%lu from=%s reason=\"bad association "
                    "request: %s\"",
                    conn->number, conn->peer, cond.text());
        /* DCMTK failed before making a connection of the socket (a peer
         * gone before getpeername()): it is still ours to close. */
        if (taken != conn->fd) {
            scp__send_abort(conn->fd, 0, 0);
            scp__hand_back(scp, conn->fd);
        }
        end_association(&assoc, true);
        return;
    }

    memset(&sa, 0, sizeof(sa));
    sa.scp = scp;
    sa.number = conn->number;
    OFStandard::strlcpy(sa.peer, conn->peer, sizeof(sa.peer));
    if (!accept_association(scp, assoc, conn->number, sa.calling_ae,
                            sizeof(sa.calling_ae), sa.peer)) {
        end_association(&assoc, false);
        return;
    }

    enum assoc_end how = END_ABORT;
    sa.assoc = assoc;
    if (scp->observer.association != NULL)
        scp->observer.association(scp->observer.ctx, 1);
    void *buffer = mmap(NULL, SCP_WRITE_BUFFER, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    sa.write_buffer =
        buffer == MAP_FAILED ? NULL : static_cast<unsigned char *>(buffer);
    if (sa.write_buffer == NULL)
        log_err("event=dropped assoc=%lu from=%s@%s reason=\"out of memory\"",
                sa.number, sa.calling_ae, sa.peer);
    else
        how = serve_commands(&sa);
    scp__commit_assoc_end(&sa);
    if (sa.write_buffer != NULL)
        (void)munmap(sa.write_buffer, SCP_WRITE_BUFFER);
    if (scp->observer.association != NULL)
        scp->observer.association(scp->observer.ctx, -1);
    end_association(&sa.assoc, how == END_ABORT);
}

static void *connection_thread(void *arg)
{
    struct scp_conn *conn = (struct scp_conn *)arg;
    struct scp *scp = conn->scp;

    try {
        serve_connection(conn);
    } catch (const std::exception &e) {
        log_err("event=dropped from=%s reason=\"exception: %s\"", conn->peer,
                e.what());
    } catch (...) {
        log_err("event=dropped from=%s reason=\"unknown exception\"",
                conn->peer);
    }
    delete conn;
    /* OpenSSL's per-thread state (the error queue) goes before the slot:
     * once the last slot is free the daemon may exit, and a detached
     * thread still on its way out would leave it behind (LeakSanitizer
     * saw it in it_tls_rejects). */
    OPENSSL_thread_stop();
    scp__association_done(scp);
    return NULL;
}

int scp__start_association(struct scp_conn *conn)
{
    pthread_attr_t attr;
    pthread_t thread;
    int r = pthread_attr_init(&attr);

    if (r != 0)
        return r;
    (void)pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    r = pthread_create(&thread, &attr, connection_thread, conn);
    (void)pthread_attr_destroy(&attr);
    return r;
}
