/* SPDX-License-Identifier: Apache-2.0 */
/*
 * craft_scu - a test SCU that sends C-STOREs no well-behaved SCU would,
 * to prove the SCP's refusals:
 *
 *   craft_scu PORT mismatch FILE   the data set of FILE, sent as is, under a
 *                                  command whose Affected SOP Instance UID
 *                                  differs from the data set's  (-> A900)
 *   craft_scu PORT garbage FILE    a truncated element as the data set, under
 * the command FILE would get       (-> C000)
 *
 * The data set bytes go out as raw P-DATA PDVs (DUL_WritePDVs), so nothing
 * in DCMTK's sending path fixes them. Prints "status=0xNNNN" of the
 * C-STORE-RSP and exits 0 when a response arrived, 1 otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcostrmb.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dimse.h"
#include "dcmtk/dcmnet/dul.h"

static int fail(const char *what, const OFCondition &cond)
{
    fprintf(stderr, "craft_scu: %s: %s\n", what, cond.text());
    return 1;
}

/* Serialises @ds in @xfer into @out. */
static bool encode(DcmDataset &ds, E_TransferSyntax xfer,
                   std::vector<unsigned char> &out)
{
    ds.computeGroupLengthAndPadding(EGL_withGL, EPD_noChange, xfer,
                                    EET_ExplicitLength);
    Uint32 len = ds.calcElementLength(xfer, EET_ExplicitLength) + 16;
    out.resize(len);
    DcmOutputBufferStream stream(out.data(), len);
    ds.transferInit();
    OFCondition cond = ds.write(stream, xfer, EET_ExplicitLength, NULL);
    ds.transferEnd();
    if (cond.bad())
        return false;
    void *buf = NULL;
    offile_off_t filled = 0;
    stream.flushBuffer(buf, filled);
    out.resize((size_t)filled);
    return true;
}

/* Sends @bytes as PDVs of @type, split to fit the peer's max PDU. */
static OFCondition send_pdvs(T_ASC_Association *assoc,
                             T_ASC_PresentationContextID pres_id,
                             DUL_DATAPDV type,
                             const std::vector<unsigned char> &bytes)
{
    size_t chunk = assoc->sendPDVLength;
    size_t off = 0;

    do {
        size_t n = bytes.size() - off < chunk ? bytes.size() - off : chunk;
        DUL_PDV pdv;
        DUL_PDVLIST list;
        pdv.fragmentLength = (unsigned long)n;
        pdv.presentationContextID = pres_id;
        pdv.pdvType = type;
        pdv.lastPDV = off + n == bytes.size() ? OFTrue : OFFalse;
        pdv.data = (void *)(bytes.data() + off);
        list.count = 1;
        list.pdv = &pdv;
        OFCondition cond = DUL_WritePDVs(&assoc->DULassociation, &list);
        if (cond.bad())
            return cond;
        off += n;
    } while (off < bytes.size());
    return EC_Normal;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: craft_scu PORT mismatch|garbage FILE\n");
        return 2;
    }
    int port = atoi(argv[1]);
    bool garbage = strcmp(argv[2], "garbage") == 0;

    DcmFileFormat file;
    OFCondition cond = file.loadFile(argv[3]);
    if (cond.bad())
        return fail("loadFile", cond);
    DcmDataset *ds = file.getDataset();
    OFString sop_class;
    OFString sop_instance;
    ds->findAndGetOFString(DCM_SOPClassUID, sop_class);
    ds->findAndGetOFString(DCM_SOPInstanceUID, sop_instance);

    std::vector<unsigned char> data;
    if (garbage) {
        /* SOPClassUID (0008,0016), VR UI, claiming 0xFFF0 bytes of value
         * where 64 follow: no parser can make a data set of this. */
        static const unsigned char head[] = { 0x08, 0x00, 0x16, 0x00,
                                              'U',  'I',  0xf0, 0xff };
        data.assign(head, head + sizeof(head));
        for (size_t i = 0; i < 64; i++)
            data.push_back((unsigned char)('1' + i % 9));
    } else if (!encode(*ds, EXS_LittleEndianExplicit, data)) {
        fprintf(stderr, "craft_scu: cannot encode the data set\n");
        return 1;
    }
    /* A valid UID that is not the data set's. */
    OFString command_instance =
        garbage ? sop_instance : OFString("1.2.826.0.1.3680043.2.1125.99.1");

    T_ASC_Network *net = NULL;
    T_ASC_Parameters *params = NULL;
    T_ASC_Association *assoc = NULL;
    cond = ASC_initializeNetwork(NET_REQUESTOR, 0, 10, &net);
    if (cond.bad())
        return fail("network", cond);
    cond = ASC_createAssociationParameters(&params, ASC_DEFAULTMAXPDU);
    if (cond.bad())
        return fail("parameters", cond);
    ASC_setAPTitles(params, "CRAFTSCU", "STOWBRIDGE", NULL);
    char peer[64];
    snprintf(peer, sizeof(peer), "127.0.0.1:%d", port);
    ASC_setPresentationAddresses(params, "localhost", peer);
    const char *ts[] = { UID_LittleEndianExplicitTransferSyntax };
    ASC_addPresentationContext(params, 1, sop_class.c_str(), ts, 1);
    cond = ASC_requestAssociation(net, params, &assoc);
    if (cond.bad())
        return fail("association", cond);
    T_ASC_PresentationContextID pres_id =
        ASC_findAcceptedPresentationContextID(assoc, sop_class.c_str());
    if (pres_id == 0) {
        fprintf(stderr, "craft_scu: presentation context not accepted\n");
        return 1;
    }

    /* The C-STORE-RQ command set (PS3.7 9.3.1.1), implicit VR LE. */
    DcmDataset command;
    command.putAndInsertString(DCM_AffectedSOPClassUID, sop_class.c_str());
    command.putAndInsertUint16(DCM_CommandField, 0x0001);
    command.putAndInsertUint16(DCM_MessageID, 1);
    command.putAndInsertUint16(DCM_Priority, 0);
    command.putAndInsertUint16(DCM_CommandDataSetType, 0x0000);
    command.putAndInsertString(DCM_AffectedSOPInstanceUID,
                               command_instance.c_str());
    std::vector<unsigned char> command_bytes;
    if (!encode(command, EXS_LittleEndianImplicit, command_bytes)) {
        fprintf(stderr, "craft_scu: cannot encode the command\n");
        return 1;
    }
    cond = send_pdvs(assoc, pres_id, DUL_COMMANDPDV, command_bytes);
    if (cond.good())
        cond = send_pdvs(assoc, pres_id, DUL_DATASETPDV, data);
    if (cond.bad())
        return fail("send", cond);

    T_DIMSE_Message rsp;
    DcmDataset *detail = NULL;
    T_ASC_PresentationContextID rsp_pres = 0;
    memset(&rsp, 0, sizeof(rsp));
    cond = DIMSE_receiveCommand(assoc, DIMSE_BLOCKING, 0, &rsp_pres, &rsp,
                                &detail);
    if (cond.bad() || rsp.CommandField != DIMSE_C_STORE_RSP)
        return fail("response", cond);
    OFString comment;
    if (detail != NULL)
        detail->findAndGetOFString(DCM_ErrorComment, comment);
    printf("status=0x%04X comment=%s\n", rsp.msg.CStoreRSP.DimseStatus,
           comment.c_str());
    delete detail;
    ASC_releaseAssociation(assoc);
    ASC_destroyAssociation(&assoc);
    ASC_dropNetwork(&net);
    return 0;
}
