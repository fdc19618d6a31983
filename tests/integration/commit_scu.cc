/* SPDX-License-Identifier: Apache-2.0 */
/*
 * commit_scu - a Storage Commitment SCU for the tests (DCMTK 3.6.7): sends
 * one N-ACTION-RQ (Action Type 1) and, when asked, accepts the
 * association that carries the N-EVENT-REPORT (the bridge proposes the
 * SCP role) and prints the report as one JSON line.
 *
 * usage: commit_scu [options] ITEMS_FILE
 *   ITEMS_FILE  "class instance" per line ("-" for none)
 *   --port P --host H --called AE --calling AE   where the bridge is
 *   --tx UID          Transaction UID ("" leaves it out)
 *   --listen P        port to take the report on (bound before N-ACTION)
 *   --wait S          seconds to wait for the report (0: do not wait)
 *   --no-action       only wait for a report (after a restart)
 *   --action-type N   --class UID --instance UID   to craft bad requests
 *   --no-seq          leave the Referenced SOP Sequence out
 *   --report-status X answer the N-EVENT-REPORT with status X (hex)
 *                     (the first one only: a retry is answered 0000)
 *   --same-assoc S    keep the N-ACTION's association open up to S
 *                     seconds for the report on it, then release
 *   --timeout S       DIMSE/ACSE timeout (default 30)
 *   --tls KEY CERT    take the report association over DICOM TLS with
 *                     this key and certificate (PEM; no client
 *                     certificate asked for); a failed handshake is
 *                     printed as "report tls-failed reason=..." and the
 *                     next association waited for
 * Prints "action status=XXXX comment=..." and, for each report,
 * "report {json}" ("via": "same" on the N-ACTION's association, "new" on
 * one the bridge opened). Exit status: 0, 1 on a protocol failure, 2 when
 * no report came at all.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <string>
#include <vector>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcdict.h"
#include "dcmtk/dcmdata/dcsequen.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dimse.h"
#include "dcmtk/dcmnet/diutil.h"
#include "dcmtk/dcmtls/tlslayer.h"
#include "dcmtk/oflog/oflog.h"

struct item {
    std::string cls;
    std::string inst;
};

static const char *ts_list[] = {
    UID_LittleEndianExplicitTransferSyntax,
    UID_LittleEndianImplicitTransferSyntax,
};

static int same_assoc_report(T_ASC_Association *assoc, int wait_s, int timeout,
                             unsigned report_status);

static int send_action(const char *host, int port, const char *called,
                       const char *calling, const char *tx,
                       const std::vector<item> &items, int action_type,
                       const char *cls, const char *inst, bool no_seq,
                       int timeout, int same_wait, unsigned *report_status,
                       bool *ret_got)
{
    T_ASC_Network *net = NULL;
    T_ASC_Parameters *params = NULL;
    T_ASC_Association *assoc = NULL;
    char addr[300];
    OFCondition cond;

    if (ASC_initializeNetwork(NET_REQUESTOR, 0, timeout, &net).bad())
        return 1;
    ASC_createAssociationParameters(&params, ASC_DEFAULTMAXPDU);
    ASC_setAPTitles(params, calling, called, NULL);
    snprintf(addr, sizeof(addr), "%s:%d", host, port);
    ASC_setPresentationAddresses(params, "localhost", addr);
    ASC_addPresentationContext(
        params, 1, UID_StorageCommitmentPushModelSOPClass, ts_list, 2);
    cond = ASC_requestAssociation(net, params, &assoc);
    if (cond.bad()) {
        printf("action association-failed reason=\"%s\"\n", cond.text());
        ASC_dropNetwork(&net);
        return 1;
    }
    T_ASC_PresentationContextID pid = ASC_findAcceptedPresentationContextID(
        assoc, UID_StorageCommitmentPushModelSOPClass);
    if (pid == 0) {
        printf("action context-refused\n");
        ASC_releaseAssociation(assoc);
        ASC_destroyAssociation(&assoc);
        ASC_dropNetwork(&net);
        return 1;
    }
    DcmDataset ds;
    if (tx[0] != '\0')
        ds.putAndInsertString(DCM_TransactionUID, tx);
    if (!no_seq) {
        if (items.empty())
            ds.insertEmptyElement(DCM_ReferencedSOPSequence);
        for (const item &it : items) {
            DcmItem *di = NULL;
            ds.findOrCreateSequenceItem(DCM_ReferencedSOPSequence, di, -2);
            if (!it.cls.empty() && it.cls != "-")
                di->putAndInsertString(DCM_ReferencedSOPClassUID,
                                       it.cls.c_str());
            if (!it.inst.empty() && it.inst != "-")
                di->putAndInsertString(DCM_ReferencedSOPInstanceUID,
                                       it.inst.c_str());
        }
    }
    T_DIMSE_Message msg;
    memset(&msg, 0, sizeof(msg));
    msg.CommandField = DIMSE_N_ACTION_RQ;
    msg.msg.NActionRQ.MessageID = assoc->nextMsgID++;
    OFStandard::strlcpy(msg.msg.NActionRQ.RequestedSOPClassUID, cls,
                        sizeof(msg.msg.NActionRQ.RequestedSOPClassUID));
    OFStandard::strlcpy(msg.msg.NActionRQ.RequestedSOPInstanceUID, inst,
                        sizeof(msg.msg.NActionRQ.RequestedSOPInstanceUID));
    msg.msg.NActionRQ.ActionTypeID = (DIC_US)action_type;
    msg.msg.NActionRQ.DataSetType = DIMSE_DATASET_PRESENT;
    cond = DIMSE_sendMessageUsingMemoryData(assoc, pid, &msg, NULL, &ds, NULL,
                                            NULL);
    if (cond.bad()) {
        printf("action send-failed reason=\"%s\"\n", cond.text());
        ASC_abortAssociation(assoc);
        ASC_destroyAssociation(&assoc);
        ASC_dropNetwork(&net);
        return 1;
    }
    T_DIMSE_Message rsp;
    DcmDataset *detail = NULL;
    T_ASC_PresentationContextID rpid = 0;
    memset(&rsp, 0, sizeof(rsp));
    cond = DIMSE_receiveCommand(assoc, DIMSE_BLOCKING, timeout, &rpid, &rsp,
                                &detail);
    if (cond.bad() || rsp.CommandField != DIMSE_N_ACTION_RSP) {
        printf("action no-response reason=\"%s\"\n", cond.text());
        ASC_abortAssociation(assoc);
        ASC_destroyAssociation(&assoc);
        ASC_dropNetwork(&net);
        return 1;
    }
    OFString comment;
    if (detail != NULL)
        detail->findAndGetOFString(DCM_ErrorComment, comment);
    delete detail;
    printf("action status=%04X comment=\"%s\"\n",
           (unsigned)rsp.msg.NActionRSP.DimseStatus, comment.c_str());
    fflush(stdout);
    if (same_wait > 0) {
        int r = same_assoc_report(assoc, same_wait, timeout, *report_status);
        if (r == 0 || r == 3)
            *ret_got = true;
        if (r == 3) /* refused: the retry on a new association gets 0000 */
            *report_status = 0;
        if (r == 1) {
            ASC_abortAssociation(assoc);
            ASC_destroyAssociation(&assoc);
            ASC_dropNetwork(&net);
            return 1;
        }
    }
    ASC_releaseAssociation(assoc);
    ASC_destroyAssociation(&assoc);
    ASC_dropNetwork(&net);
    return 0;
}

static void json_str(std::string &out, const char *s)
{
    out += '"';
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            out += '\\';
        out += *s;
    }
    out += '"';
}

static int read_report(T_ASC_Association *assoc, int timeout,
                       unsigned report_status, const std::string &roles,
                       const char *via, T_DIMSE_Message *msg,
                       T_ASC_PresentationContextID pid);

/* Serves one report association; 0 when a report was read and answered. */
static int serve_report(T_ASC_Association *assoc, int timeout,
                        unsigned report_status)
{
    int n = ASC_countPresentationContexts(assoc->params);
    std::string roles;

    for (int i = 0; i < n; i++) {
        T_ASC_PresentationContext pc;
        ASC_getPresentationContext(assoc->params, i, &pc);
        if (strcmp(pc.abstractSyntax, UID_StorageCommitmentPushModelSOPClass) ==
            0) {
            ASC_acceptPresentationContext(
                assoc->params, pc.presentationContextID,
                pc.proposedTransferSyntaxes[0], pc.proposedRole);
            roles += pc.proposedRole == ASC_SC_ROLE_SCP ? "scp" : "other";
        } else {
            ASC_refusePresentationContext(assoc->params,
                                          pc.presentationContextID,
                                          ASC_P_ABSTRACTSYNTAXNOTSUPPORTED);
        }
    }
    if (ASC_acknowledgeAssociation(assoc).bad())
        return 1;
    T_DIMSE_Message msg;
    T_ASC_PresentationContextID pid = 0;
    memset(&msg, 0, sizeof(msg));
    OFCondition cond =
        DIMSE_receiveCommand(assoc, DIMSE_BLOCKING, timeout, &pid, &msg, NULL);
    if (cond.bad() || msg.CommandField != DIMSE_N_EVENT_REPORT_RQ) {
        printf("report bad-command reason=\"%s\"\n", cond.text());
        return 1;
    }
    int r = read_report(assoc, timeout, report_status, roles, "new", &msg, pid);
    if (r == 1)
        return 1;
    /* Wait for the release. */
    memset(&msg, 0, sizeof(msg));
    cond =
        DIMSE_receiveCommand(assoc, DIMSE_BLOCKING, timeout, &pid, &msg, NULL);
    if (cond == DUL_PEERREQUESTEDRELEASE)
        ASC_acknowledgeRelease(assoc);
    return r;
}

/* Reads the data set of N-EVENT-REPORT-RQ @msg, prints the report and
 * answers @report_status: 0 answered 0000, 3 answered another status, 1
 * on a failure. */
static int read_report(T_ASC_Association *assoc, int timeout,
                       unsigned report_status, const std::string &roles,
                       const char *via, T_DIMSE_Message *msg,
                       T_ASC_PresentationContextID pid)
{
    OFCondition cond;
    DcmDataset *ds = NULL;
    T_ASC_PresentationContextID dpid = 0;
    cond = DIMSE_receiveDataSetInMemory(assoc, DIMSE_BLOCKING, timeout, &dpid,
                                        &ds, NULL, NULL);
    if (cond.bad() || ds == NULL) {
        printf("report no-dataset reason=\"%s\"\n", cond.text());
        return 1;
    }
    T_DIMSE_N_EventReportRQ *rq = &msg->msg.NEventReportRQ;
    OFString tx;
    OFString retrieve;
    ds->findAndGetOFString(DCM_TransactionUID, tx);
    ds->findAndGetOFString(DCM_RetrieveAETitle, retrieve);
    std::string out = "{\"event_type\": " + std::to_string(rq->EventTypeID);
    out += ", \"class\": ";
    json_str(out, rq->AffectedSOPClassUID);
    out += ", \"instance\": ";
    json_str(out, rq->AffectedSOPInstanceUID);
    out += ", \"role\": ";
    json_str(out, roles.c_str());
    out += ", \"via\": ";
    json_str(out, via);
    out += ", \"tx\": ";
    json_str(out, tx.c_str());
    out += ", \"retrieve_ae\": ";
    json_str(out, retrieve.c_str());
    const DcmTagKey seqs[2] = { DCM_ReferencedSOPSequence,
                                DCM_FailedSOPSequence };
    const char *names[2] = { "committed", "failed" };
    for (int s = 0; s < 2; s++) {
        DcmSequenceOfItems *seq = NULL;
        out += std::string(", \"") + names[s] + "\": [";
        if (ds->findAndGetSequence(seqs[s], seq).good() && seq != NULL) {
            for (unsigned long i = 0; i < seq->card(); i++) {
                DcmItem *it = seq->getItem(i);
                OFString c, u;
                Uint16 reason = 0;
                it->findAndGetOFString(DCM_ReferencedSOPClassUID, c);
                it->findAndGetOFString(DCM_ReferencedSOPInstanceUID, u);
                if (i > 0)
                    out += ", ";
                out += "[";
                json_str(out, c.c_str());
                out += ", ";
                json_str(out, u.c_str());
                if (s == 1) {
                    it->findAndGetUint16(DCM_FailureReason, reason);
                    out += ", " + std::to_string(reason);
                }
                out += "]";
            }
        }
        out += "]";
    }
    out += "}";
    delete ds;

    T_DIMSE_Message rsp;
    memset(&rsp, 0, sizeof(rsp));
    rsp.CommandField = DIMSE_N_EVENT_REPORT_RSP;
    T_DIMSE_N_EventReportRSP *r = &rsp.msg.NEventReportRSP;
    r->MessageIDBeingRespondedTo = rq->MessageID;
    OFStandard::strlcpy(r->AffectedSOPClassUID, rq->AffectedSOPClassUID,
                        sizeof(r->AffectedSOPClassUID));
    OFStandard::strlcpy(r->AffectedSOPInstanceUID, rq->AffectedSOPInstanceUID,
                        sizeof(r->AffectedSOPInstanceUID));
    r->DimseStatus = (DIC_US)report_status;
    r->DataSetType = DIMSE_DATASET_NULL;
    r->EventTypeID = rq->EventTypeID;
    r->opts = O_NEVENTREPORT_AFFECTEDSOPCLASSUID |
              O_NEVENTREPORT_AFFECTEDSOPINSTANCEUID |
              O_NEVENTREPORT_EVENTTYPEID;
    cond = DIMSE_sendMessageUsingMemoryData(assoc, pid, &rsp, NULL, NULL, NULL,
                                            NULL);
    if (cond.bad()) {
        printf("report rsp-failed reason=\"%s\"\n", cond.text());
        return 1;
    }
    printf("report %s\n", out.c_str());
    fflush(stdout);
    return report_status == 0 ? 0 : 3;
}

/* Waits up to @wait_s on the N-ACTION's association for the report: 0
 * answered 0000, 3 answered another status, 2 none came, 1 failure. */
static int same_assoc_report(T_ASC_Association *assoc, int wait_s, int timeout,
                             unsigned report_status)
{
    T_DIMSE_Message msg;
    T_ASC_PresentationContextID pid = 0;
    memset(&msg, 0, sizeof(msg));
    OFCondition cond = DIMSE_receiveCommand(assoc, DIMSE_NONBLOCKING, wait_s,
                                            &pid, &msg, NULL);
    if (cond == DIMSE_NODATAAVAILABLE) {
        printf("same-assoc none\n");
        return 2;
    }
    if (cond.bad() || msg.CommandField != DIMSE_N_EVENT_REPORT_RQ) {
        printf("same-assoc bad-command reason=\"%s\"\n", cond.text());
        return 1;
    }
    return read_report(assoc, timeout, report_status, "same", "same", &msg,
                       pid);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 11112;
    const char *called = "STOWBRIDGE";
    const char *calling = "COMMITSCU";
    const char *tx = "";
    const char *file = NULL;
    const char *cls = UID_StorageCommitmentPushModelSOPClass;
    const char *inst = UID_StorageCommitmentPushModelSOPInstance;
    int listen_port = 0;
    int wait_s = 0;
    int timeout = 30;
    int action_type = 1;
    int same_wait = 0;
    bool got_report = false;
    bool no_action = false;
    bool no_seq = false;
    unsigned report_status = 0;
    const char *tls_key = NULL;
    const char *tls_cert = NULL;
    DcmTLSTransportLayer *tls_layer = NULL;
    std::vector<item> items;

    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : "";
        if (a == "--port") {
            port = atoi(v);
            i++;
        } else if (a == "--host") {
            host = v;
            i++;
        } else if (a == "--called") {
            called = v;
            i++;
        } else if (a == "--calling") {
            calling = v;
            i++;
        } else if (a == "--tx") {
            tx = v;
            i++;
        } else if (a == "--listen") {
            listen_port = atoi(v);
            i++;
        } else if (a == "--wait") {
            wait_s = atoi(v);
            i++;
        } else if (a == "--timeout") {
            timeout = atoi(v);
            i++;
        } else if (a == "--action-type") {
            action_type = atoi(v);
            i++;
        } else if (a == "--class") {
            cls = v;
            i++;
        } else if (a == "--instance") {
            inst = v;
            i++;
        } else if (a == "--same-assoc") {
            same_wait = atoi(v);
            i++;
        } else if (a == "--report-status") {
            report_status = (unsigned)strtoul(v, NULL, 16);
            i++;
        } else if (a == "--tls" && i + 2 < argc) {
            tls_key = argv[i + 1];
            tls_cert = argv[i + 2];
            i += 2;
        } else if (a == "--no-action")
            no_action = true;
        else if (a == "--no-seq")
            no_seq = true;
        else
            file = argv[i];
    }
    OFLog::configure(OFLogger::FATAL_LOG_LEVEL);
    if (!dcmDataDict.isDictionaryLoaded()) {
        fprintf(stderr, "no DICOM dictionary\n");
        return 1;
    }
    if (file != NULL && strcmp(file, "-") != 0) {
        FILE *f = fopen(file, "r");
        char c[128], u[128];
        if (f == NULL) {
            perror(file);
            return 1;
        }
        while (fscanf(f, "%127s %127s", c, u) == 2)
            items.push_back(item{ c, u });
        fclose(f);
    }
    T_ASC_Network *lnet = NULL;
    if (listen_port > 0 &&
        ASC_initializeNetwork(NET_ACCEPTOR, listen_port, timeout, &lnet)
            .bad()) {
        fprintf(stderr, "cannot listen on %d\n", listen_port);
        return 1;
    }
    if (lnet != NULL && tls_key != NULL) {
        tls_layer = new DcmTLSTransportLayer(NET_ACCEPTOR, NULL, OFFalse);
        OFCondition c = tls_layer->setTLSProfile(TSP_Profile_BCP195_ND);
        if (c.good())
            c = tls_layer->activateCipherSuites();
        if (c.good())
            c = tls_layer->setPrivateKeyFile(tls_key, DCF_Filetype_PEM);
        if (c.good())
            c = tls_layer->setCertificateFile(tls_cert, DCF_Filetype_PEM);
        if (c.good() && !tls_layer->checkPrivateKeyMatchesCertificate())
            c = EC_IllegalCall;
        tls_layer->setCertificateVerification(DCV_ignoreCertificate);
        if (c.good())
            c = ASC_setTransportLayer(lnet, tls_layer, 0);
        if (c.bad()) {
            fprintf(stderr, "TLS set-up failed: %s\n", c.text());
            return 1;
        }
    }
    if (!no_action) {
        int r = send_action(host, port, called, calling, tx, items, action_type,
                            cls, inst, no_seq, timeout, same_wait,
                            &report_status, &got_report);
        if (r != 0)
            return r;
    }
    if (lnet == NULL || wait_s <= 0)
        return same_wait > 0 && !got_report ? 2 : 0;
    time_t deadline = time(NULL) + wait_s;
    while (time(NULL) < deadline) {
        T_ASC_Association *assoc = NULL;
        OFCondition cond = ASC_receiveAssociation(
            lnet, &assoc, ASC_DEFAULTMAXPDU, NULL, NULL,
            tls_layer != NULL ? OFTrue : OFFalse, DUL_NOBLOCK, 1);
        if (cond == DUL_NOASSOCIATIONREQUEST) {
            ASC_destroyAssociation(&assoc);
            continue;
        }
        if (cond.bad()) {
            if (tls_layer != NULL) {
                printf("report tls-failed reason=\"%s\"\n", cond.text());
                fflush(stdout);
            }
            ASC_dropAssociation(assoc);
            ASC_destroyAssociation(&assoc);
            continue;
        }
        int r = serve_report(assoc, timeout, report_status);
        ASC_dropAssociation(assoc);
        ASC_destroyAssociation(&assoc);
        if (r == 0 || r == 1) {
            ASC_dropNetwork(&lnet);
            delete tls_layer; /* after the network that used it */
            return r;
        }
        got_report = true;
        /* r == 3: refused with --report-status; wait for the retry with
         * a success answer. */
        report_status = 0;
    }
    ASC_dropNetwork(&lnet);
    delete tls_layer;
    if (got_report && report_status == 0 && same_wait > 0) {
        /* The report came on the N-ACTION's association, none after it. */
        printf("report no-more\n");
        return 0;
    }
    printf("report none\n");
    return 2;
}
