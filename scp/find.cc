/* SPDX-License-Identifier: Apache-2.0 */
/*
 * find - the C-FIND service (see scp.h for the contract, scp_int.h for
 * the module's files).
 *
 * scp__find_serve(): receive the identifier, convert it to UTF-8
 * (charset.cc), hand it to the C handler of scp_params.find as a struct
 * ds, then send the handler's matches one pending response at a time,
 * looking for a C-CANCEL-RQ before each, and end with its final status.
 * DCMTK objects are held by std::unique_ptr (or owned by their DCMTK
 * parent): nothing on this path is freed by hand.
 */
#include "scp_int.h"

#include <string.h>

#include <memory>

#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcsequen.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dimse.h"
#include "dcmtk/ofstd/ofstd.h"

#include "base/log.h"
#include "base/util.h"
#include "dicom/dataset.h"

/* ------------------------------------------------------------------ */
/* C-FIND                                                              */
/* ------------------------------------------------------------------ */

/* VRs DCMTK can build an element of from a two-letter name. */
static bool vr_name_usable(const char *vr)
{
    DcmVR dvr(vr);

    return vr[0] != '\0' && dvr.isStandard() && dvr.getEVR() != EVR_UNKNOWN &&
           dvr.getEVR() != EVR_UNKNOWN2B && dvr.getEVR() != EVR_SQ;
}

/* Copies the DCMTK item @item into @out (values as text). Returns false
 * on out-of-memory. */
bool scp__item_to_ds(DcmItem *item, struct ds *out)
{
    for (unsigned long i = 0; i < item->card(); i++) {
        DcmElement *el = item->getElement(i);
        const DcmTag &tag = el->getTag();
        uint32_t key = DS_TAG(tag.getGTag(), tag.getETag());
        char vr[3] = { 'U', 'N', '\0' };
        const char *name = tag.getVR().getValidVRName();

        if (name != NULL && strlen(name) == 2)
            memcpy(vr, name, 3);
        if (el->ident() == EVR_SQ) {
            DcmSequenceOfItems *seq = OFstatic_cast(DcmSequenceOfItems *, el);
            struct ds_attr *attr = ds_put(out, key, "SQ", NULL);
            if (attr == NULL)
                return false;
            for (unsigned long j = 0; j < seq->card(); j++) {
                struct ds *sub = ds_add_item(attr);
                if (sub == NULL || !scp__item_to_ds(seq->getItem(j), sub))
                    return false;
            }
            continue;
        }
        OFString value;
        bool has_value =
            el->getLength() > 0 && el->getOFStringArray(value).good();
        if (ds_put(out, key, vr, has_value ? value.c_str() : NULL) == NULL)
            return false;
    }
    return true;
}

/* Builds DCMTK elements from @in into @item. */
static bool ds_to_item(const struct ds *in, DcmItem *item)
{
    for (size_t i = 0; i < in->count; i++) {
        const struct ds_attr *attr = &in->attrs[i];
        DcmTag tag((Uint16)(attr->tag >> 16), (Uint16)(attr->tag & 0xFFFF));

        if (attr->vr[0] == 'S' && attr->vr[1] == 'Q') {
            /* Each item, then the sequence, is ours until its parent
             * takes it (DCMTK leaves it to us when append() or insert()
             * fails). */
            auto seq = std::make_unique<DcmSequenceOfItems>(tag);
            for (size_t j = 0; j < attr->item_count; j++) {
                auto sub = std::make_unique<DcmItem>();
                if (!ds_to_item(attr->items[j], sub.get()) ||
                    seq->append(sub.get()).bad())
                    return false;
                (void)sub.release();
            }
            if (item->insert(seq.get(), OFTrue).bad())
                return false;
            (void)seq.release();
            continue;
        }
        if (vr_name_usable(attr->vr))
            tag.setVR(DcmVR(attr->vr));
        if (item->putAndInsertString(tag,
                                     attr->value != NULL ? attr->value : "")
                .bad())
            return false;
    }
    return true;
}

/* The DCMTK identifier for @answer, in the character set charset.cc
 * chooses for @charset (the SCU's); NULL on failure. */
static std::unique_ptr<DcmDataset> make_answer(struct scp_assoc *sa,
                                               const struct ds *answer,
                                               const OFString &charset)
{
    auto dset = std::make_unique<DcmDataset>();

    if (!ds_to_item(answer, dset.get()))
        return nullptr;
    return scp__charset_answer(sa, answer, std::move(dset), charset);
}

/* Keeps printable ASCII only: an Error Comment is LO in the default
 * repertoire. */
static void ascii_comment(char *dst, size_t dst_size, const char *src)
{
    size_t n = 0;

    for (; *src != '\0' && n + 1 < dst_size; src++)
        dst[n++] = (*src >= 0x20 && *src < 0x7F) ? *src : '?';
    dst[n] = '\0';
}

static OFCondition send_find_response(struct scp_assoc *sa,
                                      T_ASC_PresentationContextID pres_id,
                                      T_DIMSE_C_FindRQ *req, uint16_t status,
                                      const char *comment,
                                      DcmDataset *identifier)
{
    T_DIMSE_C_FindRSP rsp;
    DcmDataset detail;
    DcmDataset *detail_ptr = NULL;

    memset(&rsp, 0, sizeof(rsp));
    rsp.MessageIDBeingRespondedTo = req->MessageID;
    rsp.DimseStatus = status;
    rsp.DataSetType =
        identifier != NULL ? DIMSE_DATASET_PRESENT : DIMSE_DATASET_NULL;
    OFStandard::strlcpy(rsp.AffectedSOPClassUID, req->AffectedSOPClassUID,
                        sizeof(rsp.AffectedSOPClassUID));
    rsp.opts = O_FIND_AFFECTEDSOPCLASSUID;
    if (comment != NULL && comment[0] != '\0') {
        char text[65];
        ascii_comment(text, sizeof(text), comment);
        if (detail.putAndInsertString(DCM_ErrorComment, text).good())
            detail_ptr = &detail;
    }
    return DIMSE_sendFindResponse(sa->assoc, pres_id, req, &rsp, identifier,
                                  detail_ptr);
}

/*
 * Looks, without waiting, for a C-CANCEL-RQ of the C-FIND @msg_id; sets
 * *@cancelled when one came. A C-CANCEL for another message ID (one we
 * answered already) is dropped, as PS3.7 9.3.2.3 lets a cancel cross the
 * final response; on any context, since the message ID says what it
 * means. Any other command is a protocol error here (no asynchronous
 * operations are negotiated): the association is aborted.
 */
static OFCondition check_for_cancel(struct scp_assoc *sa, DIC_US msg_id,
                                    bool *cancelled)
{
    for (;;) {
        T_ASC_PresentationContextID pres_id = 0;
        T_DIMSE_Message msg;

        memset(&msg, 0, sizeof(msg));
        OFCondition cond = DIMSE_receiveCommand(sa->assoc, DIMSE_NONBLOCKING, 0,
                                                &pres_id, &msg, NULL);
        if (cond == DIMSE_NODATAAVAILABLE)
            return EC_Normal;
        if (cond.bad())
            return cond;
        if (msg.CommandField != DIMSE_C_CANCEL_RQ)
            return makeDcmnetCondition(
                DIMSEC_UNEXPECTEDREQUEST, OF_error,
                "DIMSE: another command during C-FIND (no asynchronous "
                "operations negotiated)");
        if (msg.msg.CCancelRQ.MessageIDBeingRespondedTo == msg_id) {
            *cancelled = true;
            return EC_Normal;
        }
        log_debug("event=cancel-ignored assoc=%lu from=%s@%s msg_id=%u "
                  "reason=\"not the C-FIND in progress\"",
                  sa->number, sa->calling_ae, sa->peer,
                  (unsigned)msg.msg.CCancelRQ.MessageIDBeingRespondedTo);
    }
}

/* A struct ds of dataset.h, freed by ds_free(). */
struct ds_deleter {
    void operator()(struct ds *ds) const { ds_free(ds); }
};
typedef std::unique_ptr<struct ds, ds_deleter> ds_ptr;

/*
 * One C-FIND: receive the identifier, convert it to UTF-8, then hand out
 * the handler's matches one pending response at a time, looking for a
 * C-CANCEL before each, and end with the handler's final status.
 */
OFCondition scp__find_serve(struct scp_assoc *sa,
                            T_ASC_PresentationContextID pres_id,
                            T_DIMSE_Message *msg)
{
    T_DIMSE_C_FindRQ *req = &msg->msg.CFindRQ;
    struct scp *scp = sa->scp;
    const struct scp_find_handler *find = scp->find;
    T_ASC_PresentationContextID data_pres_id = 0;
    T_ASC_PresentationContext pc;
    DcmDataset *received = NULL;
    struct scp_find_status st;
    enum scp_find_model model;
    void *session = NULL;
    OFString charset;
    OFCondition cond;
    bool cancelled = false;

    sa->finds++;
    memset(&st, 0, sizeof(st));
    cond = DIMSE_receiveDataSetInMemory(sa->assoc, DIMSE_BLOCKING,
                                        (int)scp->timeout_s, &data_pres_id,
                                        &received, NULL, NULL);
    std::unique_ptr<DcmDataset> identifier(received);
    if (cond.bad()) {
        log_warning("event=find-aborted assoc=%lu from=%s@%s reason=\"%s\"",
                    sa->number, sa->calling_ae, sa->peer, cond.text());
        return cond;
    }

    char sop_class[UTIL_UID_MAX + 1] = "";
    (void)scp__copy_trimmed_uid(sop_class, sizeof(sop_class),
                                req->AffectedSOPClassUID);
    bool context_ok =
        ASC_findAcceptedPresentationContext(sa->assoc->params, pres_id, &pc)
            .good() &&
        strcmp(pc.abstractSyntax, sop_class) == 0;
    if (find == NULL || !context_ok ||
        (strcmp(sop_class, UID_FINDPatientRootQueryRetrieveInformationModel) !=
             0 &&
         strcmp(sop_class, UID_FINDStudyRootQueryRetrieveInformationModel) !=
             0)) {
        log_warning("event=find-refused assoc=%lu from=%s@%s "
                    "reason=\"SOP class %s not supported on this context\"",
                    sa->number, sa->calling_ae, sa->peer,
                    sop_class[0] ? sop_class : "-");
        return send_find_response(sa, pres_id, req,
                                  STATUS_FIND_Refused_SOPClassNotSupported,
                                  "SOP class not supported", NULL);
    }
    model =
        strcmp(sop_class, UID_FINDPatientRootQueryRetrieveInformationModel) == 0
            ? SCP_FIND_PATIENT_ROOT
            : SCP_FIND_STUDY_ROOT;

    if (!scp__charset_request_to_utf8(identifier.get(), charset)) {
        log_warning("event=find-refused assoc=%lu from=%s@%s charset=\"%s\" "
                    "reason=\"cannot read the identifier's character set\"",
                    sa->number, sa->calling_ae, sa->peer, charset.c_str());
        return send_find_response(sa, pres_id, req,
                                  STATUS_FIND_Failed_UnableToProcess,
                                  "unsupported Specific Character Set", NULL);
    }
    ds_ptr request(ds_new());
    if (!request || !scp__item_to_ds(identifier.get(), request.get()))
        return send_find_response(sa, pres_id, req,
                                  STATUS_FIND_Refused_OutOfResources,
                                  "out of memory", NULL);
    identifier.reset();

    session = find->begin(find->ctx, model, request.get(), sa->calling_ae, &st);
    if (session == NULL)
        return send_find_response(sa, pres_id, req, st.status, st.comment,
                                  NULL);
    for (;;) {
        struct ds *next = NULL;

        if (!cancelled) {
            cond = check_for_cancel(sa, req->MessageID, &cancelled);
            if (cond.bad()) {
                log_warning("event=find-aborted assoc=%lu from=%s@%s "
                            "reason=\"%s\"",
                            sa->number, sa->calling_ae, sa->peer, cond.text());
                break;
            }
        }
        if (scp->should_stop(scp->stop_ctx)) {
            cond = send_find_response(sa, pres_id, req,
                                      STATUS_FIND_Refused_OutOfResources,
                                      "stowbridge is shutting down", NULL);
            break;
        }
        int more = find->next(session, cancelled, &next, &st);
        ds_ptr answer(next);
        if (more <= 0) {
            cond = send_find_response(sa, pres_id, req, st.status, st.comment,
                                      NULL);
            break;
        }
        std::unique_ptr<DcmDataset> dset =
            make_answer(sa, answer.get(), charset);
        answer.reset();
        if (!dset) {
            cond = send_find_response(sa, pres_id, req,
                                      STATUS_FIND_Failed_UnableToProcess,
                                      "cannot encode an answer", NULL);
            break;
        }
        cond = send_find_response(sa, pres_id, req,
                                  STATUS_FIND_Pending_MatchesAreContinuing,
                                  NULL, dset.get());
        if (cond.bad())
            break;
    }
    find->end(session);
    if (cond.bad())
        log_warning("event=response-failed assoc=%lu from=%s@%s "
                    "reason=\"%s\"",
                    sa->number, sa->calling_ae, sa->peer, cond.text());
    return cond;
}
