/*
 * scp - the DIMSE service provider (see scp.h for the contract).
 *
 * Structure (the connection loop is in scp_net.cc, see scp_int.h):
 *   serve_connection()   one thread per association: DCMTK parses the
 *                        A-ASSOCIATE-RQ the loop checked; called AE,
 *                        caller, peer PDU size, negotiation; then
 *   serve_commands()     C-ECHO, C-STORE, C-FIND, C-CANCEL, release,
 *                        abort, idle timeout, shutdown; and
 *   end_association()    frees the DCMTK association without waiting for
 *                        the peer, hands the socket back to the loop and
 *                        frees the slot at once.
 *   handle_store()       admission, receive into spool tmp/ through
 *                        SpoolConsumer, validate, commit, respond.
 *
 * Received data reaches the disk only through spool_write_all(), so every
 * write, fsync and rename passes the spool's checks (and its fault hooks in
 * tests). DCMTK's own file writer is not used: it neither fsyncs nor
 * checks close().
 *
 * Every entry point catches all C++ exceptions; none crosses scp.h.
 */
#include "scp.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <new>
#include <string>
#include <vector>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdict.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcmetinf.h"
#include "dcmtk/dcmdata/dcostrma.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dcmtrans.h"
#include "dcmtk/dcmnet/dimse.h"
#include "dcmtk/dcmnet/dul.h"
#include "dcmtk/dcmnet/diutil.h"
#include "dcmtk/oflog/oflog.h"
#include "dcmtk/ofstd/ofstd.h"

#include "dicom/dataset.h"
#include "base/log.h"
#include "scp_int.h"
#include "spool/spool.h"
#include "base/util.h"

/* Our Implementation Class UID (PS3.7 D.3.3.2), a UUID-derived UID. */
#define SCP_IMPLEMENTATION_CLASS_UID \
    "2.25.242422315187102122747475212045372960498"
#define SCP_IMPLEMENTATION_VERSION_NAME "STOWBRIDGE_" STOWBRIDGE_VERSION

/* How long an association thread waits for a command before it checks
 * the stop flag and the idle limit. */
#define SCP_COMMAND_POLL_S 1
/* The refused abstract syntaxes of one association are logged in one
 * line of at most this many characters of names (then "and N more"). */
#define SCP_REFUSED_TEXT_MAX 480

/* dcmExternalSocketHandle is one process-wide variable: the hand-over of
 * a connection to DCMTK is serialised. It never waits on the network,
 * since the whole A-ASSOCIATE-RQ is already buffered by then. */
static pthread_mutex_t scp_handover_lock = PTHREAD_MUTEX_INITIALIZER;

/* One association being served, owned by its thread. */
struct scp_assoc {
    struct scp *scp;
    T_ASC_Association *assoc;
    unsigned char *write_buffer;   /* SCP_WRITE_BUFFER bytes */
    unsigned long number;
    char calling_ae[UTIL_AE_TITLE_MAX + 1];
    char peer[64];
    unsigned long finds;
};

static void set_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || err_len == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

/*
 * A DcmConsumer that writes to a spool fd through spool_write_all(), in
 * chunks of SCP_WRITE_BUFFER bytes (DCMTK hands over one PDV fragment at a
 * time, often ~10 KB: one write(2) each would cost more than the fsync).
 * After the first failure it accepts nothing more and remembers the errno,
 * so the caller answers A700 whatever DCMTK made of the short write.
 * finish() must be called at the end: it writes what is buffered.
 */
#define SCP_WRITE_BUFFER (256u * 1024u)

class SpoolConsumer : public DcmConsumer {
public:
    SpoolConsumer(int fd, unsigned char *buffer)
        : fd_(fd), error_(0), bytes_(0), buffer_(buffer), used_(0) {}

    OFBool good() const override { return error_ == 0; }
    OFCondition status() const override
    {
        return error_ == 0 ? EC_Normal : EC_InvalidStream;
    }
    OFBool isFlushed() const override { return used_ == 0; }
    offile_off_t avail() const override
    {
        return error_ == 0 ? (offile_off_t)(1 << 30) : 0;
    }
    offile_off_t write(const void *buf, offile_off_t buflen) override
    {
        const unsigned char *p = (const unsigned char *)buf;
        size_t left = (size_t)buflen;

        if (error_ != 0 || buflen <= 0)
            return 0;
        while (left > 0) {
            size_t room = SCP_WRITE_BUFFER - used_;
            size_t n = left < room ? left : room;
            memcpy(buffer_ + used_, p, n);
            used_ += n;
            p += n;
            left -= n;
            if (used_ == SCP_WRITE_BUFFER && !drain())
                return 0;
        }
        bytes_ += (uint64_t)buflen;
        return buflen;
    }
    void flush() override { (void)drain(); }

    /* Writes out what is buffered; false (and error() set) on failure. */
    bool finish() { return drain(); }
    int error() const { return error_; }
    uint64_t bytes() const { return bytes_; }

private:
    bool drain()
    {
        if (error_ != 0)
            return false;
        if (used_ == 0)
            return true;
        int r = spool_write_all(fd_, buffer_, used_);
        used_ = 0;
        if (r < 0) {
            error_ = -r;
            return false;
        }
        return true;
    }

    int fd_;
    int error_;
    uint64_t bytes_;
    unsigned char *buffer_;
    size_t used_;
};

/* DcmOutputStream's constructor is protected: this is the usual shim. */
class SpoolOutputStream : public DcmOutputStream {
public:
    explicit SpoolOutputStream(SpoolConsumer *consumer)
        : DcmOutputStream(consumer) {}
};

/* Copies a DIMSE UID field without the trailing spaces or NULs some SCUs
 * send; returns false if it does not fit. */
static bool copy_trimmed_uid(char *dst, size_t dst_size, const char *src)
{
    size_t len = strnlen(src, dst_size);
    if (len >= dst_size)
        return false;
    while (len > 0 && (src[len - 1] == ' ' || src[len - 1] == '\0'))
        len--;
    memcpy(dst, src, len);
    dst[len] = '\0';
    return true;
}

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

bool scp__caller_allowed(const struct scp *scp, const char *calling_ae,
                         const char *peer_ip, bool *ret_find)
{
    *ret_find = scp->find != NULL;
    if (scp->caller_count == 0)
        return true;
    for (size_t i = 0; i < scp->caller_count; i++) {
        const struct scp_caller_rule *rule = &scp->callers[i];
        bool host_ok = rule->host_count == 0;

        if (rule->ae_title != NULL && strcmp(rule->ae_title, calling_ae) != 0)
            continue;
        for (size_t h = 0; h < rule->host_count && !host_ok; h++)
            host_ok = util_ipv4_net_contains(&rule->hosts[h], peer_ip);
        if (host_ok) {
            *ret_find = scp->find != NULL && rule->find;
            return true;
        }
    }
    return false;
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
    case REFUSE_TRANSFER_SYNTAX:
        return "no proposed transfer syntax is accepted";
    case REFUSE_NONE:
        break;
    }
    return "refused";
}

/*
 * What we do with the proposed abstract syntax @uid: REFUSE_NONE and
 * *@ret_group (0 Verification, 1 C-FIND, 2 storage) when we accept it.
 * Storage: DCMTK 3.6.7's list, every UID under SCP_STORAGE_ROOT unless
 * dicom.accept_unknown_storage_classes is false, and the UIDs of
 * dicom.extra_storage_classes.
 */
static enum refusal classify_syntax(const struct scp *scp, const char *uid,
                                    bool find_allowed, int *ret_group)
{
    size_t root_len = strlen(SCP_STORAGE_ROOT);

    if (strcmp(uid, UID_VerificationSOPClass) == 0) {
        *ret_group = 0;
        return REFUSE_NONE;
    }
    if (uid_in(uid, find_sop_classes, ARRAY_LEN(find_sop_classes))) {
        *ret_group = 1;
        if (scp->find == NULL)
            return REFUSE_FIND_OFF;
        return find_allowed ? REFUSE_NONE : REFUSE_FIND_CALLER;
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

static void note_refusal(std::vector<refused_syntax> &refused,
                         const char *uid, enum refusal why)
{
    for (const refused_syntax &r : refused)
        if (r.uid == uid)
            return;
    refused.push_back(refused_syntax{ uid, why });
}

/*
 * Accepts Verification, the storage SOP classes of classify_syntax() and,
 * when @find_allowed, the Patient Root and Study Root C-FIND models; every
 * other context is refused (abstract syntax not supported, or transfer
 * syntaxes not supported). The refused abstract syntaxes go to @refused
 * with the reason. Returns the number of accepted presentation contexts,
 * or -1.
 */
static int negotiate_contexts(const struct scp *scp, T_ASC_Association *assoc,
                              bool find_allowed,
                              std::vector<refused_syntax> &refused)
{
    std::vector<std::string> groups[3];
    std::vector<const char *> uids;
    int n = ASC_countPresentationContexts(assoc->params);
    static const char **transfer[3] = {
        verification_transfer_syntaxes, verification_transfer_syntaxes,
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
            classify_syntax(scp, pc.abstractSyntax, find_allowed, &group);
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
        } else if (pc.resultReason == ASC_P_NOTYETNEGOTIATED) {
            if (ASC_refusePresentationContext(
                    assoc->params, pc.presentationContextID,
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
        std::string entry = name != NULL ? name
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
/* C-STORE                                                             */
/* ------------------------------------------------------------------ */

struct store_result {
    DIC_US status;
    char comment[128];   /* Error Comment (0000,0902), at most 64 sent */
};

static void store_fail(struct store_result *res, DIC_US status,
                       const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void store_fail(struct store_result *res, DIC_US status,
                       const char *fmt, ...)
{
    va_list ap;

    res->status = status;
    va_start(ap, fmt);
    vsnprintf(res->comment, sizeof(res->comment), fmt, ap);
    va_end(ap);
}

/*
 * Writes the Part 10 preamble and File Meta Information built from the
 * command (PS3.10 7.1) through @stream.
 */
static bool write_meta_header(DcmOutputStream &stream,
                              const char *sop_class, const char *sop_instance,
                              const char *transfer_syntax,
                              const char *calling_ae)
{
    DcmMetaInfo meta;
    const Uint8 version[2] = { 0x00, 0x01 };

    if (meta.putAndInsertUint8Array(DCM_FileMetaInformationVersion, version, 2)
            .bad() ||
        meta.putAndInsertString(DCM_MediaStorageSOPClassUID, sop_class).bad() ||
        meta.putAndInsertString(DCM_MediaStorageSOPInstanceUID, sop_instance)
            .bad() ||
        meta.putAndInsertString(DCM_TransferSyntaxUID, transfer_syntax).bad() ||
        meta.putAndInsertString(DCM_ImplementationClassUID,
                                SCP_IMPLEMENTATION_CLASS_UID).bad() ||
        meta.putAndInsertString(DCM_ImplementationVersionName,
                                SCP_IMPLEMENTATION_VERSION_NAME).bad() ||
        meta.putAndInsertString(DCM_SourceApplicationEntityTitle, calling_ae)
            .bad())
        return false;
    if (meta.putAndInsertUint32(DCM_FileMetaInformationGroupLength, 0).bad())
        return false;
    if (meta.computeGroupLengthAndPadding(EGL_withGL, EPD_noChange,
                                          EXS_LittleEndianExplicit,
                                          EET_ExplicitLength).bad())
        return false;
    meta.transferInit();
    OFCondition cond = meta.write(stream, EXS_LittleEndianExplicit,
                                  EET_ExplicitLength, NULL);
    meta.transferEnd();
    return cond.good() && stream.good();
}

/*
 * Checks the received file against the command (DESIGN.md section 4,
 * step 3): it parses as Part 10; SOPClassUID (0008,0016) and
 * SOPInstanceUID (0008,0018) equal the command's; StudyInstanceUID
 * (0020,000D) is present and valid. Reads only up to the pixel data.
 */
static bool validate_received(const char *path, const char *sop_class,
                              const char *sop_instance,
                              char study_uid[UTIL_UID_MAX + 1],
                              struct store_result *res)
{
    DcmFileFormat file;
    OFString value;
    char trimmed[UTIL_UID_MAX + 2];
    OFCondition cond;

    cond = file.loadFileUntilTag(path, EXS_Unknown, EGL_noChange,
                                 DCM_MaxReadLength, ERM_fileOnly,
                                 DCM_PixelData);
    if (cond.bad()) {
        store_fail(res, STATUS_STORE_Error_CannotUnderstand,
                   "data set cannot be parsed: %s", cond.text());
        return false;
    }
    DcmDataset *ds = file.getDataset();

    if (ds->findAndGetOFStringArray(DCM_SOPClassUID, value).bad() ||
        !copy_trimmed_uid(trimmed, sizeof(trimmed), value.c_str()) ||
        strcmp(trimmed, sop_class) != 0) {
        store_fail(res, STATUS_STORE_Error_DataSetDoesNotMatchSOPClass,
                   "SOPClassUID (0008,0016) differs from the command's");
        return false;
    }
    if (ds->findAndGetOFStringArray(DCM_SOPInstanceUID, value).bad() ||
        !copy_trimmed_uid(trimmed, sizeof(trimmed), value.c_str()) ||
        strcmp(trimmed, sop_instance) != 0) {
        store_fail(res, STATUS_STORE_Error_DataSetDoesNotMatchSOPClass,
                   "SOPInstanceUID (0008,0018) differs from the command's");
        return false;
    }
    if (ds->findAndGetOFStringArray(DCM_StudyInstanceUID, value).bad() ||
        !copy_trimmed_uid(trimmed, sizeof(trimmed), value.c_str()) ||
        !util_uid_valid(trimmed)) {
        store_fail(res, STATUS_STORE_Error_DataSetDoesNotMatchSOPClass,
                   "StudyInstanceUID (0020,000D) missing or not a valid UID");
        return false;
    }
    memcpy(study_uid, trimmed, strlen(trimmed) + 1);
    return true;
}

/* Reads and drops the data set that follows a command we refuse early. */
static OFCondition skip_data_set(struct scp_assoc *sa)
{
    DIC_UL bytes = 0;
    DIC_UL pdvs = 0;

    return DIMSE_ignoreDataSet(sa->assoc, DIMSE_NONBLOCKING,
                               (int)sa->scp->timeout_s, &bytes, &pdvs);
}

/*
 * Receives one C-STORE data set into the spool and fills @res. Returns
 * a bad condition only when the association itself is broken (network
 * failure, abort), in which case no response can be sent.
 */
static OFCondition receive_store(struct scp_assoc *sa,
                                 T_ASC_PresentationContextID pres_id,
                                 const char *sop_class,
                                 const char *sop_instance,
                                 struct store_result *res)
{
    struct scp *scp = sa->scp;
    T_ASC_PresentationContext pc;
    char id[SPOOL_ID_MAX];
    char path[4096];
    char err[512];
    char study_uid[UTIL_UID_MAX + 1];
    uint64_t free_mb = 0;
    int fd = -1;
    int r;

    /* 1. Admission. */
    r = spool_free_mb(scp->spool, &free_mb);
    if (r < 0 || free_mb < scp->min_free_mb) {
        OFCondition cond = skip_data_set(sa);
        if (r < 0)
            store_fail(res, STATUS_STORE_Refused_OutOfResources,
                       "cannot check free space on the spool");
        else
            store_fail(res, STATUS_STORE_Refused_OutOfResources,
                       "spool has %llu MiB free, below %llu MiB",
                       (unsigned long long)free_mb,
                       (unsigned long long)scp->min_free_mb);
        return cond;
    }
    if (ASC_findAcceptedPresentationContext(sa->assoc->params, pres_id, &pc)
            .bad()) {
        OFCondition cond = skip_data_set(sa);
        store_fail(res, STATUS_STORE_Refused_OutOfResources,
                   "no accepted presentation context %d", (int)pres_id);
        return cond;
    }

    /* 2. Receive straight into a new file in tmp/. */
    r = spool_tmp_create(scp->spool, id, &fd, err, sizeof(err));
    if (r < 0) {
        OFCondition cond = skip_data_set(sa);
        log_err("event=spool-error assoc=%lu reason=\"%s\"", sa->number, err);
        store_fail(res, STATUS_STORE_Refused_OutOfResources,
                   "cannot create spool file");
        return cond;
    }

    SpoolConsumer consumer(fd, sa->write_buffer);
    SpoolOutputStream stream(&consumer);
    T_ASC_PresentationContextID data_pres_id = pres_id;
    OFCondition cond = EC_Normal;

    if (!write_meta_header(stream, sop_class, sop_instance,
                           pc.acceptedTransferSyntax, sa->calling_ae)) {
        cond = skip_data_set(sa);
        if (consumer.error() == 0) {
            /* DCMTK could not build the meta header: not a disk error. */
            spool_discard(scp->spool, id, fd);
            store_fail(res, STATUS_STORE_Refused_OutOfResources,
                       "cannot build the file meta information");
            return cond;
        }
    } else {
        cond = DIMSE_receiveDataSetInFile(sa->assoc, DIMSE_NONBLOCKING,
                                          (int)scp->timeout_s, &data_pres_id,
                                          &stream, NULL, NULL);
        if (cond.good() && consumer.finish())
            /* Start writeback now so that it overlaps the validation
             * below; spool_commit()'s fsync then has little left to do. */
            (void)sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    }

    if (consumer.error() != 0) {
        char errbuf[128];
        log_err("event=spool-error assoc=%lu id=%s reason=\"write() failed: %s\"",
                sa->number, id,
                util_strerror(-consumer.error(), errbuf, sizeof(errbuf)));
        spool_discard(scp->spool, id, fd);
        store_fail(res, STATUS_STORE_Refused_OutOfResources,
                   "cannot write spool file: %s",
                   util_strerror(-consumer.error(), errbuf, sizeof(errbuf)));
        /* DCMTK drained the rest unless the network failed as well. */
        return cond == DIMSE_OUTOFRESOURCES ? EC_Normal : cond;
    }
    if (cond.bad()) {
        /* The network failed mid data set: nothing can be answered. */
        spool_discard(scp->spool, id, fd);
        return cond;
    }
    if (data_pres_id != pres_id) {
        spool_discard(scp->spool, id, fd);
        store_fail(res, STATUS_STORE_Error_CannotUnderstand,
                   "data set sent on another presentation context");
        return EC_Normal;
    }

    /* 3. Validate against the command. */
    r = spool_entry_path(scp->spool, SPOOL_TMP, id, path, sizeof(path));
    if (r < 0 || !validate_received(path, sop_class, sop_instance, study_uid,
                                    res)) {
        if (r < 0)
            store_fail(res, STATUS_STORE_Refused_OutOfResources,
                       "spool path too long");
        spool_discard(scp->spool, id, fd);
        return EC_Normal;
    }

    /* 4. Commit: fsync, rename into incoming/, fsync directories. */
    uint64_t bytes = consumer.bytes();
    r = spool_commit(scp->spool, id, fd, err, sizeof(err));
    if (r < 0) {
        log_err("event=spool-error assoc=%lu id=%s reason=\"%s\"", sa->number,
                id, err);
        store_fail(res, STATUS_STORE_Refused_OutOfResources,
                   "cannot commit spool file");
        return EC_Normal;
    }

    /* What the uploader will need, kept beside the entry; losing it does
     * no harm (the UIDs can be read from the file again). */
    struct spool_meta meta;
    memset(&meta, 0, sizeof(meta));
    OFStandard::strlcpy(meta.study_uid, study_uid, sizeof(meta.study_uid));
    OFStandard::strlcpy(meta.sop_uid, sop_instance, sizeof(meta.sop_uid));
    OFStandard::strlcpy(meta.calling_ae, sa->calling_ae,
                        sizeof(meta.calling_ae));
    if (spool_meta_write(scp->spool, id, &meta, err, sizeof(err)) < 0)
        log_warning("event=meta-failed id=%s reason=\"%s\", ignoring", id,
                    err);

    /* 5. Only now is it safe to say success. */
    res->status = STATUS_Success;
    res->comment[0] = '\0';
    log_info("id=%s event=received from=%s@%s sop=%s study=%s bytes=%llu",
             id, sa->calling_ae, sa->peer, sop_instance, study_uid,
             (unsigned long long)bytes);
    return EC_Normal;
}

static OFCondition handle_store(struct scp_assoc *sa,
                                T_ASC_PresentationContextID pres_id,
                                T_DIMSE_C_StoreRQ *req)
{
    struct store_result res;
    char sop_class[UTIL_UID_MAX + 1];
    char sop_instance[UTIL_UID_MAX + 1];
    OFCondition cond;

    memset(&res, 0, sizeof(res));
    res.status = STATUS_STORE_Refused_OutOfResources;

    if (!copy_trimmed_uid(sop_class, sizeof(sop_class),
                          req->AffectedSOPClassUID) ||
        !copy_trimmed_uid(sop_instance, sizeof(sop_instance),
                          req->AffectedSOPInstanceUID) ||
        !util_uid_valid(sop_class) || !util_uid_valid(sop_instance)) {
        cond = skip_data_set(sa);
        store_fail(&res, STATUS_STORE_Error_DataSetDoesNotMatchSOPClass,
                   "Affected SOP Class/Instance UID is not a valid UID");
        strcpy(sop_instance, "-");
    } else {
        cond = receive_store(sa, pres_id, sop_class, sop_instance, &res);
    }
    if (cond.bad()) {
        log_warning("event=store-aborted assoc=%lu from=%s@%s sop=%s "
                    "reason=\"%s\"",
                    sa->number, sa->calling_ae, sa->peer, sop_instance,
                    cond.text());
        return cond;
    }

    if (res.status != STATUS_Success)
        log_warning("event=refused assoc=%lu from=%s@%s sop=%s "
                    "status=%04X reason=\"%s\"",
                    sa->number, sa->calling_ae, sa->peer, sop_instance,
                    (unsigned)res.status, res.comment);

    T_DIMSE_C_StoreRSP rsp;
    memset(&rsp, 0, sizeof(rsp));
    rsp.MessageIDBeingRespondedTo = req->MessageID;
    rsp.DimseStatus = res.status;
    rsp.DataSetType = DIMSE_DATASET_NULL;
    OFStandard::strlcpy(rsp.AffectedSOPClassUID, req->AffectedSOPClassUID,
                        sizeof(rsp.AffectedSOPClassUID));
    OFStandard::strlcpy(rsp.AffectedSOPInstanceUID,
                        req->AffectedSOPInstanceUID,
                        sizeof(rsp.AffectedSOPInstanceUID));
    rsp.opts = O_STORE_AFFECTEDSOPCLASSUID | O_STORE_AFFECTEDSOPINSTANCEUID;

    DcmDataset detail;
    DcmDataset *detail_ptr = NULL;
    if (res.status != STATUS_Success && res.comment[0] != '\0') {
        /* Error Comment is LO: at most 64 characters. */
        char comment[65];
        OFStandard::strlcpy(comment, res.comment, sizeof(comment));
        if (detail.putAndInsertString(DCM_ErrorComment, comment).good())
            detail_ptr = &detail;
    }
    cond = DIMSE_sendStoreResponse(sa->assoc, pres_id, req, &rsp, detail_ptr);
    if (cond.bad())
        log_warning("event=response-failed assoc=%lu from=%s@%s sop=%s "
                    "reason=\"%s\"",
                    sa->number, sa->calling_ae, sa->peer, sop_instance,
                    cond.text());
    return cond;
}

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
static bool item_to_ds(DcmItem *item, struct ds *out)
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
                if (sub == NULL || !item_to_ds(seq->getItem(j), sub))
                    return false;
            }
            continue;
        }
        OFString value;
        bool has_value = el->getLength() > 0 &&
                         el->getOFStringArray(value).good();
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
            DcmSequenceOfItems *seq = new DcmSequenceOfItems(tag);
            for (size_t j = 0; j < attr->item_count; j++) {
                DcmItem *sub = new DcmItem();
                if (!ds_to_item(attr->items[j], sub) ||
                    seq->append(sub).bad()) {
                    delete sub;
                    delete seq;
                    return false;
                }
            }
            if (item->insert(seq, OFTrue).bad()) {
                delete seq;
                return false;
            }
            continue;
        }
        if (vr_name_usable(attr->vr))
            tag.setVR(DcmVR(attr->vr));
        if (item->putAndInsertString(tag, attr->value != NULL ? attr->value
                                                              : "")
                .bad())
            return false;
    }
    return true;
}

static bool ds_has_non_ascii(const struct ds *ds)
{
    for (size_t i = 0; i < ds->count; i++) {
        const struct ds_attr *attr = &ds->attrs[i];
        for (const char *p = attr->value; p != NULL && *p; p++)
            if ((unsigned char)*p >= 0x80)
                return true;
        for (size_t j = 0; j < attr->item_count; j++)
            if (ds_has_non_ascii(attr->items[j]))
                return true;
    }
    return false;
}

/*
 * The DCMTK identifier for @answer (UTF-8): converted to the SCU's
 * @charset when it asked for one and every character can be represented
 * there; otherwise UTF-8 with (0008,0005) "ISO_IR 192" (never a silently
 * garbled name). Pure ASCII answers to an SCU that named no character set
 * carry none. NULL on failure.
 */
static DcmDataset *make_answer(struct scp_assoc *sa, const struct ds *answer,
                               const OFString &charset)
{
    DcmDataset *dset = new DcmDataset();
    bool non_ascii = ds_has_non_ascii(answer);

    if (!ds_to_item(answer, dset)) {
        delete dset;
        return NULL;
    }
    if (!non_ascii) {
        if (!charset.empty())
            (void)dset->putAndInsertString(DCM_SpecificCharacterSet,
                                           charset.c_str());
        return dset;
    }
    (void)dset->putAndInsertString(DCM_SpecificCharacterSet, "ISO_IR 192");
    if (charset.empty() || charset == "ISO_IR 192")
        return dset;
    DcmDataset *converted = new DcmDataset(*dset);
    OFCondition cond = converted->convertCharacterSet(charset, 0);
    if (cond.good()) {
        delete dset;
        return converted;
    }
    delete converted;
    log_notice("event=find-charset assoc=%lu from=%s@%s asked=\"%s\" "
               "reason=\"an answer cannot be represented in the requested "
               "character set; sent as ISO_IR 192 (UTF-8)\"",
               sa->number, sa->calling_ae, sa->peer, charset.c_str());
    return dset;
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
    rsp.DataSetType = identifier != NULL ? DIMSE_DATASET_PRESENT
                                         : DIMSE_DATASET_NULL;
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
        OFCondition cond = DIMSE_receiveCommand(sa->assoc, DIMSE_NONBLOCKING,
                                                0, &pres_id, &msg, NULL);
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

/*
 * One C-FIND: receive the identifier, convert it to UTF-8, then hand out
 * the handler's matches one pending response at a time, looking for a
 * C-CANCEL before each, and end with the handler's final status.
 */
static OFCondition handle_find(struct scp_assoc *sa,
                               T_ASC_PresentationContextID pres_id,
                               T_DIMSE_C_FindRQ *req)
{
    struct scp *scp = sa->scp;
    const struct scp_find_handler *find = scp->find;
    T_ASC_PresentationContextID data_pres_id = 0;
    T_ASC_PresentationContext pc;
    DcmDataset *identifier = NULL;
    struct scp_find_status st;
    enum scp_find_model model;
    struct ds *request = NULL;
    void *session = NULL;
    OFString charset;
    OFCondition cond;
    bool cancelled = false;

    memset(&st, 0, sizeof(st));
    cond = DIMSE_receiveDataSetInMemory(sa->assoc, DIMSE_BLOCKING,
                                        (int)scp->timeout_s, &data_pres_id,
                                        &identifier, NULL, NULL);
    if (cond.bad()) {
        log_warning("event=find-aborted assoc=%lu from=%s@%s reason=\"%s\"",
                    sa->number, sa->calling_ae, sa->peer, cond.text());
        delete identifier;
        return cond;
    }

    char sop_class[UTIL_UID_MAX + 1] = "";
    (void)copy_trimmed_uid(sop_class, sizeof(sop_class),
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
        delete identifier;
        log_warning("event=find-refused assoc=%lu from=%s@%s "
                    "reason=\"SOP class %s not supported on this context\"",
                    sa->number, sa->calling_ae, sa->peer,
                    sop_class[0] ? sop_class : "-");
        return send_find_response(sa, pres_id, req,
                                  STATUS_FIND_Refused_SOPClassNotSupported,
                                  "SOP class not supported", NULL);
    }
    model = strcmp(sop_class,
                   UID_FINDPatientRootQueryRetrieveInformationModel) == 0
                ? SCP_FIND_PATIENT_ROOT
                : SCP_FIND_STUDY_ROOT;

    (void)identifier->findAndGetOFStringArray(DCM_SpecificCharacterSet,
                                              charset);
    {
        size_t first = charset.find_first_not_of(' ');
        size_t last = charset.find_last_not_of(' ');
        charset = first == OFString_npos
                      ? OFString()
                      : charset.substr(first, last - first + 1);
    }
    if (!charset.empty() && charset != "ISO_IR 192" &&
        identifier->convertToUTF8().bad()) {
        delete identifier;
        log_warning("event=find-refused assoc=%lu from=%s@%s charset=\"%s\" "
                    "reason=\"cannot read the identifier's character set\"",
                    sa->number, sa->calling_ae, sa->peer, charset.c_str());
        return send_find_response(sa, pres_id, req,
                                  STATUS_FIND_Failed_UnableToProcess,
                                  "unsupported Specific Character Set", NULL);
    }
    request = ds_new();
    if (request == NULL || !item_to_ds(identifier, request)) {
        delete identifier;
        ds_free(request);
        return send_find_response(sa, pres_id, req,
                                  STATUS_FIND_Refused_OutOfResources,
                                  "out of memory", NULL);
    }
    delete identifier;

    session = find->begin(find->ctx, model, request, sa->calling_ae, &st);
    if (session == NULL) {
        ds_free(request);
        return send_find_response(sa, pres_id, req, st.status, st.comment,
                                  NULL);
    }
    for (;;) {
        struct ds *answer = NULL;

        if (!cancelled) {
            cond = check_for_cancel(sa, req->MessageID, &cancelled);
            if (cond.bad()) {
                log_warning("event=find-aborted assoc=%lu from=%s@%s "
                            "reason=\"%s\"",
                            sa->number, sa->calling_ae, sa->peer,
                            cond.text());
                break;
            }
        }
        if (scp->should_stop(scp->stop_ctx)) {
            cond = send_find_response(sa, pres_id, req,
                                      STATUS_FIND_Refused_OutOfResources,
                                      "stowbridge is shutting down", NULL);
            break;
        }
        int more = find->next(session, cancelled, &answer, &st);
        if (more <= 0) {
            cond = send_find_response(sa, pres_id, req, st.status, st.comment,
                                      NULL);
            break;
        }
        DcmDataset *dset = make_answer(sa, answer, charset);
        ds_free(answer);
        if (dset == NULL) {
            cond = send_find_response(sa, pres_id, req,
                                      STATUS_FIND_Failed_UnableToProcess,
                                      "cannot encode an answer", NULL);
            break;
        }
        cond = send_find_response(sa, pres_id, req,
                                  STATUS_FIND_Pending_MatchesAreContinuing,
                                  NULL, dset);
        delete dset;
        if (cond.bad())
            break;
    }
    find->end(session);
    ds_free(request);
    if (cond.bad())
        log_warning("event=response-failed assoc=%lu from=%s@%s "
                    "reason=\"%s\"",
                    sa->number, sa->calling_ae, sa->peer, cond.text());
    return cond;
}

/* ------------------------------------------------------------------ */
/* Association threads                                                 */
/* ------------------------------------------------------------------ */

/* How serve_commands() ended, and so what the socket still needs. */
enum assoc_end {
    END_RELEASED,      /* A-RELEASE-RP sent */
    END_PEER_ABORT,    /* the peer aborted or closed: nothing to send */
    END_ABORT,         /* we abort: send A-ABORT */
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
static void end_association(struct scp *scp, T_ASC_Association **passoc,
                            bool send_abort)
{
    if (send_abort && *passoc != NULL && (*passoc)->DULassociation != NULL)
        scp__abort_on_close(
            DUL_getTransportConnection((*passoc)->DULassociation));
    (void)ASC_dropAssociation(*passoc);
    (void)ASC_destroyAssociation(passoc);
    scp__association_done(scp);
}

static enum assoc_end serve_commands(struct scp_assoc *sa)
{
    struct scp *scp = sa->scp;
    uint64_t idle_since = util_now_monotonic_ms();
    unsigned long stores = 0;

    for (;;) {
        T_ASC_PresentationContextID pres_id = 0;
        T_DIMSE_Message msg;
        DcmDataset *status_detail = NULL;
        OFCondition cond;

        if (scp->should_stop(scp->stop_ctx)) {
            log_info("event=closing assoc=%lu from=%s@%s stores=%lu "
                     "reason=shutdown",
                     sa->number, sa->calling_ae, sa->peer, stores);
            return END_ABORT;
        }
        memset(&msg, 0, sizeof(msg));
        cond = DIMSE_receiveCommand(sa->assoc, DIMSE_NONBLOCKING,
                                    SCP_COMMAND_POLL_S, &pres_id, &msg,
                                    &status_detail);
        delete status_detail;
        if (cond == DIMSE_NODATAAVAILABLE) {
            if (util_now_monotonic_ms() - idle_since >
                (uint64_t)scp->timeout_s * 1000u) {
                log_notice("event=closing assoc=%lu from=%s@%s stores=%lu "
                           "reason=idle-timeout",
                           sa->number, sa->calling_ae, sa->peer, stores);
                return END_ABORT;
            }
            continue;
        }
        if (cond == DUL_PEERREQUESTEDRELEASE) {
            (void)ASC_acknowledgeRelease(sa->assoc);
            log_info("event=released assoc=%lu from=%s@%s stores=%lu",
                     sa->number, sa->calling_ae, sa->peer, stores);
            return END_RELEASED;
        }
        if (cond == DUL_PEERABORTEDASSOCIATION) {
            log_notice("event=aborted-by-peer assoc=%lu from=%s@%s "
                       "stores=%lu",
                       sa->number, sa->calling_ae, sa->peer, stores);
            return END_PEER_ABORT;
        }
        if (cond.bad()) {
            log_warning("event=dropped assoc=%lu from=%s@%s stores=%lu "
                        "reason=\"%s\"",
                        sa->number, sa->calling_ae, sa->peer, stores,
                        cond.text());
            return END_ABORT;
        }

        switch (msg.CommandField) {
        case DIMSE_C_ECHO_RQ:
            cond = DIMSE_sendEchoResponse(sa->assoc, pres_id,
                                          &msg.msg.CEchoRQ, STATUS_Success,
                                          NULL);
            log_debug("event=echo assoc=%lu from=%s@%s", sa->number,
                      sa->calling_ae, sa->peer);
            break;
        case DIMSE_C_STORE_RQ:
            cond = handle_store(sa, pres_id, &msg.msg.CStoreRQ);
            stores++;
            break;
        case DIMSE_C_FIND_RQ:
            cond = handle_find(sa, pres_id, &msg.msg.CFindRQ);
            sa->finds++;
            break;
        case DIMSE_C_CANCEL_RQ:
            /* Nothing is in progress: a C-CANCEL that crossed our final
             * response (PS3.7 9.3.2.3 lets it arrive late), or one for a
             * message ID long answered. There is nothing to cancel. */
            log_debug("event=cancel-ignored assoc=%lu from=%s@%s msg_id=%u "
                      "reason=\"no operation in progress\"",
                      sa->number, sa->calling_ae, sa->peer,
                      (unsigned)msg.msg.CCancelRQ.MessageIDBeingRespondedTo);
            break;
        default:
            log_warning("event=dropped assoc=%lu from=%s@%s "
                        "reason=\"unsupported DIMSE command 0x%04x\"",
                        sa->number, sa->calling_ae, sa->peer,
                        (unsigned)msg.CommandField);
            cond = DIMSE_BADCOMMANDTYPE;
            break;
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
        strcpy(called, "?");
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
    } else if (negotiate_contexts(scp, assoc, find_allowed, refused) < 0) {
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
        log_warning("event=dropped assoc=%lu from=%s@%s reason=\"%s\"",
                    number, calling, peer, cond.text());
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
 * back. The loop took the association slot; end_association() frees it.
 */
static void serve_connection(struct scp_conn *conn)
{
    struct scp *scp = conn->scp;
    T_ASC_Association *assoc = NULL;
    struct scp_assoc sa;
    OFCondition cond;

    /* DCMTK takes the socket over through a connection of our transport
     * layer (scp_pdu.cc), which hands it back to the loop when closed. */
    pthread_mutex_lock(&scp_handover_lock);
    dcmExternalSocketHandle.set(conn->fd);
    (void)scp__split_taken();
    cond = ASC_receiveAssociation(scp->network, &assoc, (int)scp->max_pdu,
                                  NULL, NULL, OFFalse, DUL_NOBLOCK,
                                  (int)scp->timeout_s);
    int taken = scp__split_taken();
    dcmExternalSocketHandle.set(-1);
    pthread_mutex_unlock(&scp_handover_lock);

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
        end_association(scp, &assoc, true);
        return;
    }

    memset(&sa, 0, sizeof(sa));
    sa.scp = scp;
    sa.number = conn->number;
    OFStandard::strlcpy(sa.peer, conn->peer, sizeof(sa.peer));
    if (!accept_association(scp, assoc, conn->number, sa.calling_ae,
                            sizeof(sa.calling_ae), sa.peer)) {
        end_association(scp, &assoc, false);
        return;
    }

    enum assoc_end how = END_ABORT;
    sa.assoc = assoc;
    sa.write_buffer = (unsigned char *)malloc(SCP_WRITE_BUFFER);
    if (sa.write_buffer == NULL)
        log_err("event=dropped assoc=%lu from=%s@%s reason=\"out of memory\"",
                sa.number, sa.calling_ae, sa.peer);
    else
        how = serve_commands(&sa);
    free(sa.write_buffer);
    end_association(scp, &sa.assoc, how == END_ABORT);
}

static void *connection_thread(void *arg)
{
    struct scp_conn *conn = (struct scp_conn *)arg;

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

/* ------------------------------------------------------------------ */
/* Public API                                                          */
/* ------------------------------------------------------------------ */

extern "C" int scp_global_init(char *err, size_t err_len)
{
    try {
        /* DCMTK reads TCP_NODELAY from the environment when it creates a
         * socket; without it a C-STORE stream crawls (Nagle). */
        if (setenv("TCP_NODELAY", "1", 1) != 0) {
            set_err(err, err_len, "setenv() TCP_NODELAY failed: %s",
                    strerror(errno));
            return -errno;
        }
        /* DCMTK's own logger would print PHI at debug level and its own
         * format otherwise: we log every outcome ourselves. */
        OFLog::configure(OFLogger::FATAL_LOG_LEVEL);
        dcmDisableGethostbyaddr.set(OFTrue);
        if (!dcmDataDict.isDictionaryLoaded()) {
            set_err(err, err_len,
                    "DCMTK data dictionary not loaded (check DCMDICTPATH "
                    "and the libdcmtk package)");
            return -ENOENT;
        }
        return 0;
    } catch (...) {
        set_err(err, err_len, "DCMTK initialisation failed");
        return -EIO;
    }
}

/* Copies the caller rules and the extra storage classes of @params. */
static int copy_lists(struct scp *scp, const struct scp_params *params)
{
    scp->caller_count = params->caller_count;
    if (params->caller_count > 0) {
        scp->callers =
            new (std::nothrow) scp_caller_rule[params->caller_count]();
        if (scp->callers == NULL)
            return -ENOMEM;
        for (size_t i = 0; i < params->caller_count; i++) {
            const struct scp_caller_rule *in = &params->callers[i];
            struct scp_caller_rule *out = &scp->callers[i];
            if (in->ae_title != NULL) {
                out->ae_title = strdup(in->ae_title);
                if (out->ae_title == NULL)
                    return -ENOMEM;
            }
            out->host_count = in->host_count;
            out->find = in->find;
            if (in->host_count > 0) {
                util_ipv4_net *hosts =
                    new (std::nothrow) util_ipv4_net[in->host_count];
                if (hosts == NULL)
                    return -ENOMEM;
                memcpy(hosts, in->hosts, in->host_count * sizeof(*hosts));
                out->hosts = hosts;
            }
        }
    }
    for (size_t i = 0; i < params->extra_storage_count; i++)
        scp->extra_storage.push_back(params->extra_storage[i]);
    return 0;
}

extern "C" int scp_new(const struct scp_params *params, struct scp **ret_scp,
                       char *err, size_t err_len)
{
    struct scp *scp = NULL;

    try {
        if (params->spool == NULL || params->max_associations == 0) {
            set_err(err, err_len, "invalid SCP parameters");
            return -EINVAL;
        }
        scp = new (std::nothrow) struct scp();
        if (scp == NULL)
            return -ENOMEM;
        scp->listen_fd = -1;
        scp->wake_fd = -1;
        pthread_mutex_init(&scp->lock, NULL);
        if (util_trim_copy(scp->ae_title, sizeof(scp->ae_title),
                           params->ae_title) < 0 ||
            !util_ae_title_valid(scp->ae_title)) {
            set_err(err, err_len, "invalid AE title");
            scp_free(scp);
            return -EINVAL;
        }
        scp->port = params->port;
        scp->max_associations = params->max_associations;
        scp->max_pending = params->max_pending > 0 ? params->max_pending
                                                   : SCP_DEFAULT_MAX_PENDING;
        scp->max_pdu = params->max_pdu;
        scp->timeout_s = params->timeout_s;
        scp->spool = params->spool;
        scp->min_free_mb = params->min_free_mb;
        scp->find = params->find;
        scp->accept_unknown_storage = params->accept_unknown_storage_classes;

        int r = copy_lists(scp, params);
        if (r < 0) {
            scp_free(scp);
            return r;
        }
        scp->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (scp->wake_fd < 0) {
            r = -errno;
            set_err(err, err_len, "eventfd() failed: %s", strerror(errno));
            scp_free(scp);
            return r;
        }

        /* Socket timeouts bound every read and write on an association. */
        dcmSocketSendTimeout.set((Sint32)params->timeout_s);
        dcmSocketReceiveTimeout.set((Sint32)params->timeout_s);

        r = scp__net_setup(scp, params, err, err_len);
        if (r < 0) {
            scp_free(scp);
            return r;
        }

        /* DCMTK's network is only a parser of association requests: with
         * an external socket set, it neither binds nor listens. */
        pthread_mutex_lock(&scp_handover_lock);
        dcmExternalSocketHandle.set(scp->listen_fd >= 0 ? scp->listen_fd
                                                        : scp->tls_listen_fd);
        OFCondition cond = ASC_initializeNetwork(
            NET_ACCEPTOR, 0, (int)params->timeout_s, &scp->network);
        dcmExternalSocketHandle.set(-1);
        pthread_mutex_unlock(&scp_handover_lock);
        if (cond.bad()) {
            set_err(err, err_len, "DCMTK network initialisation failed: %s",
                    cond.text());
            scp_free(scp);
            return -EIO;
        }
        scp->layer = scp__split_layer_new(scp, scp->max_pdu);
        if (scp->layer == NULL) {
            scp_free(scp);
            return -ENOMEM;
        }
        cond = ASC_setTransportLayer(scp->network, scp->layer, 0);
        if (cond.bad()) {
            set_err(err, err_len, "DCMTK transport layer failed: %s",
                    cond.text());
            scp_free(scp);
            return -EIO;
        }
        *ret_scp = scp;
        return 0;
    } catch (...) {
        set_err(err, err_len, "SCP initialisation failed");
        scp_free(scp);
        return -EIO;
    }
}

extern "C" int scp_run(struct scp *scp, scp_stop_fn should_stop, void *ctx,
                       unsigned grace_s)
{
    try {
        scp->should_stop = should_stop;
        scp->stop_ctx = ctx;
        return scp__serve(scp, grace_s);
    } catch (...) {
        log_err("event=scp-failed reason=\"unexpected exception\"");
        return -EIO;
    }
}

extern "C" unsigned scp_active_associations(const struct scp *scp)
{
    unsigned active;

    pthread_mutex_lock(&((struct scp *)scp)->lock);
    active = scp->active + scp->pending;
    pthread_mutex_unlock(&((struct scp *)scp)->lock);
    return active;
}

extern "C" unsigned scp_fds_needed(const struct scp_params *params)
{
    unsigned pending = params->max_pending > 0 ? params->max_pending
                                               : SCP_DEFAULT_MAX_PENDING;

    /* An association: its socket and the spool file it writes; a
     * pending connection: its socket; the closing set of scp_net.cc; and
     * the listener, epoll, eventfd and the reserve descriptor. */
    return 2 * params->max_associations + pending +
           (unsigned)scp__closing_max(params->max_associations, pending) + 4;
}

extern "C" void scp_free(struct scp *scp)
{
    if (scp == NULL)
        return;
    try {
        if (scp->network != NULL)
            (void)ASC_dropNetwork(&scp->network);
        scp__split_layer_free(scp->layer);
    } catch (...) {
    }
    if (scp->listen_fd >= 0)
        (void)close(scp->listen_fd);
    scp__net_teardown(scp);
    if (scp->wake_fd >= 0)
        (void)close(scp->wake_fd);
    for (int fd : scp->handoff)
        (void)close(fd);
    if (scp->callers != NULL) {
        for (size_t i = 0; i < scp->caller_count; i++) {
            free((void *)scp->callers[i].ae_title);
            delete[] scp->callers[i].hosts;
        }
        delete[] scp->callers;
    }
    pthread_mutex_destroy(&scp->lock);
    delete scp;
}

extern "C" int scp_read_entry_uids(const char *path,
                                   char ret_study[UTIL_UID_MAX + 1],
                                   char ret_sop[UTIL_UID_MAX + 1])
{
    try {
        DcmFileFormat file;
        OFString study;
        OFString sop;
        char s1[UTIL_UID_MAX + 2];
        char s2[UTIL_UID_MAX + 2];

        if (file.loadFileUntilTag(path, EXS_Unknown, EGL_noChange,
                                  DCM_MaxReadLength, ERM_fileOnly,
                                  DCM_PixelData)
                .bad())
            return -EINVAL;
        DcmDataset *ds = file.getDataset();
        if (ds->findAndGetOFStringArray(DCM_StudyInstanceUID, study).bad() ||
            ds->findAndGetOFStringArray(DCM_SOPInstanceUID, sop).bad() ||
            !copy_trimmed_uid(s1, sizeof(s1), study.c_str()) ||
            !copy_trimmed_uid(s2, sizeof(s2), sop.c_str()) ||
            !util_uid_valid(s1) || !util_uid_valid(s2))
            return -EINVAL;
        memcpy(ret_study, s1, strlen(s1) + 1);
        memcpy(ret_sop, s2, strlen(s2) + 1);
        return 0;
    } catch (...) {
        return -EINVAL;
    }
}

/* The attributes scp_read_entry_identity() reads, with the VR that says
 * how their values are hidden (redact.h). */
static const struct {
    DcmTagKey key;
    const char *vr;
} identity_tags[] = {
    { DCM_PatientName, "PN" },
    { DCM_OtherPatientNames, "PN" },
    { DCM_PatientBirthName, "PN" },
    { DCM_PatientMotherBirthName, "PN" },
    { DCM_ResponsiblePerson, "PN" },
    { DCM_PatientID, "LO" },
    { DCM_RETIRED_OtherPatientIDs, "LO" },
    { DCM_PatientBirthDate, "DA" },
    { DCM_AccessionNumber, "SH" },
    { DCM_PatientAddress, "LO" },
    { DCM_PatientTelephoneNumbers, "SH" },
    { DCM_RETIRED_MedicalRecordLocator, "LO" },
};

/* @raw as UTF-8: as it is when it is valid UTF-8 (converted, or ASCII),
 * else read as Latin-1 (a file whose character set could not be
 * converted: the most common undeclared one). */
static OFString identity_utf8(const OFString &raw)
{
    const unsigned char *p =
        reinterpret_cast<const unsigned char *>(raw.c_str());
    size_t n = raw.length();
    bool valid = true;

    for (size_t i = 0; i < n && valid;) {
        size_t len = p[i] < 0x80 ? 1 : p[i] >= 0xC2 && p[i] <= 0xDF ? 2
                                     : p[i] >= 0xE0 && p[i] <= 0xEF ? 3
                                     : p[i] >= 0xF0 && p[i] <= 0xF4 ? 4
                                                                   : 0;
        if (len == 0 || i + len > n)
            valid = false;
        for (size_t k = 1; valid && k < len; k++)
            valid = (p[i + k] & 0xC0) == 0x80;
        i += len > 0 ? len : 1;
    }
    if (valid)
        return raw;
    OFString out;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < 0x80) {
            out += static_cast<char>(p[i]);
        } else {
            out += static_cast<char>(0xC0 | (p[i] >> 6));
            out += static_cast<char>(0x80 | (p[i] & 0x3F));
        }
    }
    return out;
}

/* Puts @key of @item into @out as @vr (UTF-8), if it has a value. */
static bool identity_put(DcmItem *item, const DcmTagKey &key, uint32_t tag,
                         const char *vr, struct ds *out)
{
    OFString value;

    if (item->findAndGetOFStringArray(key, value).bad() || value.empty())
        return true;
    return ds_put(out, tag, vr, identity_utf8(value).c_str()) != NULL;
}

extern "C" int scp_read_entry_identity(const char *path,
                                       struct ds **ret_identity)
{
    struct ds *out = NULL;

    try {
        DcmFileFormat file;

        if (file.loadFileUntilTag(path, EXS_Unknown, EGL_noChange,
                                  DCM_MaxReadLength, ERM_fileOnly,
                                  DCM_PixelData)
                .bad())
            return -EINVAL;
        DcmDataset *dset = file.getDataset();
        /* Values as the server will echo them: UTF-8. A character set
         * that cannot be converted leaves the values as they are. */
        (void)dset->convertToUTF8();
        out = ds_new();
        if (out == NULL)
            return -ENOMEM;
        for (const auto &t : identity_tags) {
            uint32_t tag = DS_TAG(t.key.getGroup(), t.key.getElement());
            if (!identity_put(dset, t.key, tag, t.vr, out))
                goto out_nomem;
        }
        /* OtherPatientIDsSequence (0010,1002): each item's PatientID. */
        DcmSequenceOfItems *seq = NULL;
        if (dset->findAndGetSequence(DCM_OtherPatientIDsSequence, seq)
                .good() &&
            seq != NULL) {
            struct ds_attr *attr =
                ds_put(out, DS_TAG(0x0010, 0x1002), "SQ", NULL);
            if (attr == NULL)
                goto out_nomem;
            for (unsigned long j = 0; j < seq->card(); j++) {
                struct ds *sub = ds_add_item(attr);
                if (sub == NULL ||
                    !identity_put(seq->getItem(j), DCM_PatientID,
                                  DS_TAG(0x0010, 0x0020), "LO", sub))
                    goto out_nomem;
            }
        }
        *ret_identity = out;
        return 0;
    } catch (...) {
        ds_free(out);
        return -ENOMEM;
    }
out_nomem:
    ds_free(out);
    return -ENOMEM;
}
