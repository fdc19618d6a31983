/* SPDX-License-Identifier: Apache-2.0 */
// find_scu - benchmark SCU: one association, N identical STUDY-level
// C-FINDs (Study Root), each timed from request to final response.
// usage: find_scu HOST PORT CALLED_AE N PATIENT_ID
// Prints one line per query: "<microseconds> <matches> <final status>".
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmnet/scu.h"
#include "dcmtk/oflog/oflog.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>

int main(int argc, char **argv)
{
    if (argc != 6) {
        std::fprintf(stderr, "usage: find_scu HOST PORT AE N PATIENT_ID\n");
        return 2;
    }
    OFLog::configure(OFLogger::WARN_LOG_LEVEL);
    // DCMTK turns Nagle off only when TCP_NODELAY is set: without it each
    // C-FIND-RQ waits ~40 ms for a delayed ACK on the SCU's side.
    setenv("TCP_NODELAY", "1", 1);
    DcmSCU scu;
    scu.setPeerHostName(argv[1]);
    scu.setPeerPort((Uint16)std::atoi(argv[2]));
    scu.setPeerAETitle(argv[3]);
    scu.setAETitle("BENCHSCU");
    OFList<OFString> ts;
    ts.push_back(UID_LittleEndianExplicitTransferSyntax);
    scu.addPresentationContext(UID_FINDStudyRootQueryRetrieveInformationModel,
                               ts);
    if (scu.initNetwork().bad() || scu.negotiateAssociation().bad()) {
        std::fprintf(stderr, "association failed\n");
        return 1;
    }
    T_ASC_PresentationContextID pc = scu.findPresentationContextID(
        UID_FINDStudyRootQueryRetrieveInformationModel, "");
    int n = std::atoi(argv[4]);
    for (int i = 0; i < n; i++) {
        DcmDataset q;
        q.putAndInsertString(DCM_QueryRetrieveLevel, "STUDY");
        q.putAndInsertString(DCM_PatientID, argv[5]);
        q.putAndInsertString(DCM_StudyInstanceUID, "");
        q.putAndInsertString(DCM_StudyDate, "");
        q.putAndInsertString(DCM_PatientName, "");
        q.putAndInsertString(DCM_AccessionNumber, "");
        OFList<QRResponse *> responses;
        auto t0 = std::chrono::steady_clock::now();
        OFCondition cond = scu.sendFINDRequest(pc, &q, &responses);
        auto t1 = std::chrono::steady_clock::now();
        unsigned matches = 0;
        unsigned status = 0xFFFF;
        for (QRResponse *r : responses) {
            if (r->m_dataset != NULL)
                matches++;
            status = r->m_status;
            delete r;
        }
        if (cond.bad()) {
            std::fprintf(stderr, "C-FIND failed: %s\n", cond.text());
            return 1;
        }
        std::printf(
            "%lld %u %04x\n",
            (long long)std::chrono::duration_cast<std::chrono::microseconds>(
                t1 - t0)
                .count(),
            matches, status);
    }
    scu.releaseAssociation();
    return 0;
}
