/*
 * scp - the DIMSE service provider (see scp.h for the contract).
 *
 * Structure:
 *   scp_run()            accept loop on the calling thread: receive an
 *                        A-ASSOCIATE-RQ, check called AE, caller and the
 *                        association limit, negotiate presentation
 *                        contexts, then hand the association to a new
 *                        detached thread.
 *   serve_association()  one thread per association: C-ECHO, C-STORE,
 *                        release, abort, idle timeout, shutdown.
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

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <new>
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

#include "dataset.h"
#include "log.h"
#include "spool.h"
#include "util.h"

/* Our Implementation Class UID (PS3.7 D.3.3.2), a UUID-derived UID. */
#define SCP_IMPLEMENTATION_CLASS_UID \
    "2.25.242422315187102122747475212045372960498"
#define SCP_IMPLEMENTATION_VERSION_NAME "STOWBRIDGE_" STOWBRIDGE_VERSION

/* How long the accept loop waits for a connection before it looks at the
 * stop flag again, in milliseconds. */
#define SCP_ACCEPT_POLL_MS 1000
/* Connections still sending their A-ASSOCIATE-RQ allowed beyond
 * max_associations; more are turned away at once. */
#define SCP_PENDING_EXTRA 8
/* The largest A-ASSOCIATE-RQ we take (DCMTK's own limit is 1 MiB; a
 * proposal of 128 contexts with many syntaxes each is ~130 KiB). */
#define SCP_MAX_RQ_PDU (192u * 1024u)
/* How long an association thread waits for a command before it checks
 * the stop flag and the idle limit. */
#define SCP_COMMAND_POLL_S 1

struct scp {
    char ae_title[UTIL_AE_TITLE_MAX + 1];
    uint16_t port;
    unsigned max_associations;
    uint32_t max_pdu;
    unsigned timeout_s;
    struct scp_caller_rule *callers;
    size_t caller_count;
    struct spool *spool;
    uint64_t min_free_mb;
    const struct scp_find_handler *find;   /* NULL: no C-FIND */

    int listen_fd;              /* ours: DCMTK never accepts itself */
    T_ASC_Network *network;     /* DCMTK's, used only to parse RQs */
    scp_stop_fn should_stop;
    void *stop_ctx;

    pthread_mutex_t lock;
    pthread_cond_t idle_cond;   /* signalled when a connection ends */
    unsigned active;            /* associations being served */
    unsigned pending;           /* connections not yet associated */
    unsigned long next_assoc_no;
};

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

/*
 * True if the caller may associate; @ret_find tells whether it may also
 * query (C-FIND offered and its matching rule allows it).
 */
static bool caller_allowed(const struct scp *scp, const char *calling_ae,
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

static void drop_association(T_ASC_Association **assoc)
{
    (void)ASC_dropSCPAssociation(*assoc);
    (void)ASC_destroyAssociation(assoc);
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

/*
 * Accepts Verification, every storage SOP class DCMTK knows and, when
 * @find, the Patient Root and Study Root C-FIND models (other contexts
 * are refused as abstract syntax not supported). Returns the number of
 * accepted presentation contexts, or -1.
 */
static int negotiate_contexts(T_ASC_Association *assoc, bool find)
{
    const char *verification = UID_VerificationSOPClass;
    OFCondition cond;

    if (find) {
        cond = ASC_acceptContextsWithPreferredTransferSyntaxes(
            assoc->params, find_sop_classes, (int)ARRAY_LEN(find_sop_classes),
            verification_transfer_syntaxes,
            (int)ARRAY_LEN(verification_transfer_syntaxes));
        if (cond.bad())
            return -1;
    }

    cond = ASC_acceptContextsWithPreferredTransferSyntaxes(
        assoc->params, &verification, 1, verification_transfer_syntaxes,
        (int)ARRAY_LEN(verification_transfer_syntaxes));
    if (cond.good())
        cond = ASC_acceptContextsWithPreferredTransferSyntaxes(
            assoc->params, dcmAllStorageSOPClassUIDs,
            numberOfDcmAllStorageSOPClassUIDs, storage_transfer_syntaxes,
            (int)ARRAY_LEN(storage_transfer_syntaxes));
    if (cond.bad())
        return -1;
    return ASC_countAcceptedPresentationContexts(assoc->params);
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
            cond = DIMSE_checkForCancelRQ(sa->assoc, pres_id, req->MessageID);
            if (cond.good()) {
                cancelled = true;
            } else if (cond != DIMSE_NODATAAVAILABLE) {
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

/* ------------------------------------------------------------------ */
/* Connections: accept, wait for the whole A-ASSOCIATE-RQ, hand over   */
/* ------------------------------------------------------------------ */

/* One accepted TCP connection, owned by its thread. */
struct scp_conn {
    struct scp *scp;
    int fd;
    char peer[64];
};

/* Answers a connection we will not even read with an A-ASSOCIATE-RJ PDU
 * (PS3.8 9.3.4): rejected-transient, service provider (presentation),
 * local limit exceeded. Best effort: the socket is closed anyway. */
static void send_raw_reject_limit(int fd)
{
    static const unsigned char rj[10] = {
        0x03, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x02, 0x03, 0x02,
    };
    (void)!send(fd, rj, sizeof(rj), MSG_NOSIGNAL | MSG_DONTWAIT);
}

/*
 * Waits, within dicom.timeout_s, until the peer has sent a complete
 * A-ASSOCIATE-RQ PDU, leaving it unread in the socket (MSG_PEEK) for DCMTK.
 * DCMTK reads the body of the first PDU with a three-minute timeout of
 * its own, so without this a peer that sends half a PDU would stall it.
 * Returns NULL when the PDU is complete, or why the connection is dropped.
 */
static const char *await_associate_rq(struct scp *scp, int fd, char *why,
                                      size_t why_len)
{
    uint64_t deadline = util_now_monotonic_ms() +
                        (uint64_t)scp->timeout_s * 1000u;
    unsigned char head[6];
    size_t want = sizeof(head);
    bool have_head = false;
    std::vector<unsigned char> peek;

    for (;;) {
        peek.resize(want);
        ssize_t n = recv(fd, peek.data(), want, MSG_PEEK | MSG_DONTWAIT);
        if (n == 0)
            return "closed by the peer before an association request";
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
            errno != EINTR) {
            snprintf(why, why_len, "recv() failed: %s", strerror(errno));
            return why;
        }
        if (n >= (ssize_t)sizeof(head) && !have_head) {
            memcpy(head, peek.data(), sizeof(head));
            uint32_t len = ((uint32_t)head[2] << 24) |
                           ((uint32_t)head[3] << 16) |
                           ((uint32_t)head[4] << 8) | (uint32_t)head[5];
            if (head[0] != 0x01) {
                snprintf(why, why_len,
                         "not an A-ASSOCIATE-RQ (PDU type 0x%02x)", head[0]);
                return why;
            }
            if (len > SCP_MAX_RQ_PDU) {
                snprintf(why, why_len,
                         "A-ASSOCIATE-RQ of %u bytes, more than %u", len,
                         SCP_MAX_RQ_PDU);
                return why;
            }
            have_head = true;
            want = sizeof(head) + len;
            continue;
        }
        if (have_head && n >= (ssize_t)want)
            return NULL;

        uint64_t now = util_now_monotonic_ms();
        if (now >= deadline)
            return have_head ? "incomplete A-ASSOCIATE-RQ (timeout)"
                             : "no association request (timeout)";
        if (scp->should_stop(scp->stop_ctx))
            return "shutting down";
        struct pollfd pfd = { fd, POLLIN, 0 };
        uint64_t wait_ms = deadline - now < 1000 ? deadline - now : 1000;
        /* More data may already be buffered than was asked for last
         * time: only sleep when the buffer did not grow. */
        if (n > 0 && (size_t)n < want)
            (void)poll(&pfd, 1, 50);
        else
            (void)poll(&pfd, 1, (int)wait_ms);
    }
}

static void connection_done(struct scp *scp, bool was_pending)
{
    pthread_mutex_lock(&scp->lock);
    if (was_pending)
        scp->pending--;
    pthread_cond_broadcast(&scp->idle_cond);
    pthread_mutex_unlock(&scp->lock);
}

static void association_done(struct scp *scp)
{
    pthread_mutex_lock(&scp->lock);
    scp->active--;
    pthread_cond_broadcast(&scp->idle_cond);
    pthread_mutex_unlock(&scp->lock);
}

static void serve_commands(struct scp_assoc *sa)
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
            (void)ASC_abortAssociation(sa->assoc);
            return;
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
                (void)ASC_abortAssociation(sa->assoc);
                return;
            }
            continue;
        }
        if (cond == DUL_PEERREQUESTEDRELEASE) {
            (void)ASC_acknowledgeRelease(sa->assoc);
            log_info("event=released assoc=%lu from=%s@%s stores=%lu",
                     sa->number, sa->calling_ae, sa->peer, stores);
            return;
        }
        if (cond == DUL_PEERABORTEDASSOCIATION) {
            log_notice("event=aborted-by-peer assoc=%lu from=%s@%s "
                       "stores=%lu",
                       sa->number, sa->calling_ae, sa->peer, stores);
            return;
        }
        if (cond.bad()) {
            log_warning("event=dropped assoc=%lu from=%s@%s stores=%lu "
                        "reason=\"%s\"",
                        sa->number, sa->calling_ae, sa->peer, stores,
                        cond.text());
            (void)ASC_abortAssociation(sa->assoc);
            return;
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
        default:
            log_warning("event=dropped assoc=%lu from=%s@%s "
                        "reason=\"unsupported DIMSE command 0x%04x\"",
                        sa->number, sa->calling_ae, sa->peer,
                        (unsigned)msg.CommandField);
            cond = DIMSE_BADCOMMANDTYPE;
            break;
        }
        if (cond.bad()) {
            (void)ASC_abortAssociation(sa->assoc);
            return;
        }
        idle_since = util_now_monotonic_ms();
    }
}

/*
 * Decides on one received association request: checks the limit, the
 * application context, the called AE and the caller, then negotiates the
 * presentation contexts and acknowledges. Returns true when the
 * association was accepted (it then counts as active); otherwise it has
 * been rejected or dropped and freed.
 */
static bool accept_association(struct scp *scp, T_ASC_Association **passoc,
                               unsigned long number, char *calling,
                               size_t calling_len, const char *peer)
{
    bool find_allowed = false;
    T_ASC_Association *assoc = *passoc;
    char called[UTIL_AE_TITLE_MAX + 2];
    char raw_called[UTIL_AE_TITLE_MAX + 2] = "";
    char raw_calling[UTIL_AE_TITLE_MAX + 2] = "";
    char app_context[UTIL_UID_MAX + 2] = "";
    bool over_limit;
    const char *why = NULL;

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

    pthread_mutex_lock(&scp->lock);
    over_limit = scp->active >= scp->max_associations;
    if (!over_limit)
        scp->active++;
    pthread_mutex_unlock(&scp->lock);

    if (over_limit) {
        reject_association(assoc, ASC_RESULT_REJECTEDTRANSIENT,
                           ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED,
                           ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED);
        log_warning("event=rejected assoc=%lu from=%s@%s called=%s "
                    "reason=\"local limit exceeded (%u associations)\"",
                    number, calling, peer, called, scp->max_associations);
        drop_association(passoc);
        return false;
    }
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
    } else if (!caller_allowed(scp, calling, peer, &find_allowed)) {
        reject_association(assoc, ASC_RESULT_REJECTEDPERMANENT,
                           ASC_SOURCE_SERVICEUSER,
                           ASC_REASON_SU_CALLINGAETITLENOTRECOGNIZED);
        why = "caller not in dicom.allowed_callers";
    } else if (negotiate_contexts(assoc, find_allowed) < 0) {
        reject_association(assoc, ASC_RESULT_REJECTEDPERMANENT,
                           ASC_SOURCE_SERVICEUSER, ASC_REASON_SU_NOREASON);
        why = "presentation context negotiation failed";
    }
    if (why != NULL) {
        log_warning("event=rejected assoc=%lu from=%s@%s called=%s "
                    "reason=\"%s\"",
                    number, calling, peer, called, why);
        drop_association(passoc);
        association_done(scp);
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
    int accepted = ASC_countAcceptedPresentationContexts(assoc->params);
    OFCondition cond = ASC_acknowledgeAssociation(assoc);
    if (cond.bad()) {
        log_warning("event=dropped assoc=%lu from=%s@%s reason=\"%s\"",
                    number, calling, peer, cond.text());
        drop_association(passoc);
        association_done(scp);
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
 * One connection from accept to close: wait for the A-ASSOCIATE-RQ, let
 * DCMTK parse it, accept or reject, then serve the association.
 */
static void serve_connection(struct scp_conn *conn)
{
    struct scp *scp = conn->scp;
    T_ASC_Association *assoc = NULL;
    struct scp_assoc sa;
    char why[160];
    const char *problem;
    unsigned long number;
    OFCondition cond;

    problem = await_associate_rq(scp, conn->fd, why, sizeof(why));
    if (problem != NULL) {
        log_warning("event=dropped from=%s reason=\"%s\"", conn->peer,
                    problem);
        (void)close(conn->fd);
        connection_done(scp, true);
        return;
    }

    /* DCMTK takes the socket over: from here on it closes it. */
    pthread_mutex_lock(&scp_handover_lock);
    dcmExternalSocketHandle.set(conn->fd);
    cond = ASC_receiveAssociation(scp->network, &assoc, (int)scp->max_pdu,
                                  NULL, NULL, OFFalse, DUL_NOBLOCK,
                                  (int)scp->timeout_s);
    dcmExternalSocketHandle.set(-1);
    pthread_mutex_unlock(&scp_handover_lock);

    pthread_mutex_lock(&scp->lock);
    number = ++scp->next_assoc_no;
    pthread_mutex_unlock(&scp->lock);

    if (cond.bad()) {
        log_warning("event=dropped assoc=%lu from=%s reason=\"bad association "
                    "request: %s\"",
                    number, conn->peer, cond.text());
        if (assoc != NULL)
            drop_association(&assoc);
        else
            (void)close(conn->fd);
        connection_done(scp, true);
        return;
    }
    connection_done(scp, true);

    memset(&sa, 0, sizeof(sa));
    sa.scp = scp;
    sa.number = number;
    OFStandard::strlcpy(sa.peer, conn->peer, sizeof(sa.peer));
    if (!accept_association(scp, &assoc, number, sa.calling_ae,
                            sizeof(sa.calling_ae), sa.peer))
        return;

    sa.assoc = assoc;
    sa.write_buffer = (unsigned char *)malloc(SCP_WRITE_BUFFER);
    if (sa.write_buffer == NULL) {
        log_err("event=dropped assoc=%lu from=%s@%s reason=\"out of memory\"",
                number, sa.calling_ae, sa.peer);
        (void)ASC_abortAssociation(sa.assoc);
    } else {
        serve_commands(&sa);
    }
    free(sa.write_buffer);
    drop_association(&sa.assoc);
    association_done(scp);
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

/*
 * Accepts one pending TCP connection and starts its thread, unless too
 * many connections are already waiting for their association request.
 */
static void accept_connection(struct scp *scp)
{
    struct sockaddr_in addr;
    socklen_t addr_len = sizeof(addr);
    char peer[64];
    int one = 1;
    int fd;

    fd = accept4(scp->listen_fd, (struct sockaddr *)&addr, &addr_len,
                 SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
            errno != ECONNABORTED)
            log_warning("event=accept-failed reason=\"accept() failed: %s\"",
                        strerror(errno));
        return;
    }
    if (inet_ntop(AF_INET, &addr.sin_addr, peer, sizeof(peer)) == NULL)
        strcpy(peer, "?");
    /* Nagle off: without it a C-STORE stream crawls. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    pthread_mutex_lock(&scp->lock);
    bool too_many = scp->pending + scp->active >=
                    scp->max_associations + SCP_PENDING_EXTRA;
    if (!too_many)
        scp->pending++;
    pthread_mutex_unlock(&scp->lock);
    if (too_many) {
        send_raw_reject_limit(fd);
        (void)close(fd);
        log_warning("event=rejected from=%s reason=\"local limit exceeded "
                    "(%u connections)\"",
                    peer, scp->max_associations + SCP_PENDING_EXTRA);
        return;
    }

    struct scp_conn *conn = new (std::nothrow) scp_conn();
    pthread_attr_t attr;
    pthread_t thread;
    int r = conn == NULL ? ENOMEM : pthread_attr_init(&attr);
    if (r == 0) {
        conn->scp = scp;
        conn->fd = fd;
        OFStandard::strlcpy(conn->peer, peer, sizeof(conn->peer));
        (void)pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        r = pthread_create(&thread, &attr, connection_thread, conn);
        (void)pthread_attr_destroy(&attr);
    }
    if (r != 0) {
        log_err("event=dropped from=%s reason=\"cannot start thread: %s\"",
                peer, strerror(r));
        delete conn;
        (void)close(fd);
        connection_done(scp, true);
    }
}

/* Binds and listens on @port on every IPv4 interface (as DCMTK 3.6.7
 * itself would), close-on-exec and non-blocking. */
static int open_listener(uint16_t port, int *ret_fd, char *err,
                         size_t err_len)
{
    struct sockaddr_in addr;
    int one = 1;
    int fd;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        set_err(err, err_len, "socket() failed: %s", strerror(errno));
        return -errno;
    }
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    addr.sin_port = htons(port);
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        listen(fd, 64) < 0) {
        int e = errno;
        set_err(err, err_len, "cannot listen on port %u: %s", (unsigned)port,
                strerror(e));
        (void)close(fd);
        return -e;
    }
    *ret_fd = fd;
    return 0;
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
        if (util_trim_copy(scp->ae_title, sizeof(scp->ae_title),
                           params->ae_title) < 0 ||
            !util_ae_title_valid(scp->ae_title)) {
            set_err(err, err_len, "invalid AE title");
            delete scp;
            return -EINVAL;
        }
        scp->listen_fd = -1;
        scp->port = params->port;
        scp->max_associations = params->max_associations;
        scp->max_pdu = params->max_pdu;
        scp->timeout_s = params->timeout_s;
        scp->spool = params->spool;
        scp->min_free_mb = params->min_free_mb;
        scp->find = params->find;
        pthread_mutex_init(&scp->lock, NULL);
        pthread_cond_init(&scp->idle_cond, NULL);

        scp->caller_count = params->caller_count;
        if (params->caller_count > 0) {
            scp->callers = new (std::nothrow)
                scp_caller_rule[params->caller_count]();
            if (scp->callers == NULL)
                goto out_nomem;
            for (size_t i = 0; i < params->caller_count; i++) {
                const struct scp_caller_rule *in = &params->callers[i];
                struct scp_caller_rule *out = &scp->callers[i];
                if (in->ae_title != NULL) {
                    out->ae_title = strdup(in->ae_title);
                    if (out->ae_title == NULL)
                        goto out_nomem;
                }
                out->host_count = in->host_count;
                out->find = in->find;
                if (in->host_count > 0) {
                    util_ipv4_net *hosts =
                        new (std::nothrow) util_ipv4_net[in->host_count];
                    if (hosts == NULL)
                        goto out_nomem;
                    memcpy(hosts, in->hosts,
                           in->host_count * sizeof(*hosts));
                    out->hosts = hosts;
                }
            }
        }

        /* Socket timeouts bound every read and write on an association. */
        dcmSocketSendTimeout.set((Sint32)params->timeout_s);
        dcmSocketReceiveTimeout.set((Sint32)params->timeout_s);

        int r = open_listener(params->port, &scp->listen_fd, err, err_len);
        if (r < 0) {
            scp_free(scp);
            return r;
        }

        /* DCMTK's network is only a parser of association requests: with
         * an external socket set, it neither binds nor listens. */
        pthread_mutex_lock(&scp_handover_lock);
        dcmExternalSocketHandle.set(scp->listen_fd);
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
        *ret_scp = scp;
        return 0;
    } catch (...) {
        set_err(err, err_len, "SCP initialisation failed");
        scp_free(scp);
        return -EIO;
    }

out_nomem:
    scp_free(scp);
    return -ENOMEM;
}

extern "C" int scp_run(struct scp *scp, scp_stop_fn should_stop, void *ctx,
                       unsigned grace_s)
{
    int result = 0;

    try {
        scp->should_stop = should_stop;
        scp->stop_ctx = ctx;
        while (!should_stop(ctx)) {
            struct pollfd pfd = { scp->listen_fd, POLLIN, 0 };
            int n = poll(&pfd, 1, SCP_ACCEPT_POLL_MS);
            if (n < 0 && errno != EINTR) {
                log_err("event=scp-failed reason=\"poll() failed: %s\"",
                        strerror(errno));
                result = -errno;
                break;
            }
            if (n > 0)
                accept_connection(scp);
        }

        /* Stop: threads see the flag within SCP_COMMAND_POLL_S once their
         * current command is answered. */
        uint64_t deadline = util_now_monotonic_ms() + (uint64_t)grace_s * 1000u;
        pthread_mutex_lock(&scp->lock);
        while (scp->active + scp->pending > 0) {
            uint64_t now = util_now_monotonic_ms();
            if (now >= deadline) {
                log_warning("event=shutdown-timeout associations=%u "
                            "grace_s=%u",
                            scp->active + scp->pending, grace_s);
                if (result == 0)
                    result = -ETIMEDOUT;
                break;
            }
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&scp->idle_cond, &scp->lock, &ts);
        }
        pthread_mutex_unlock(&scp->lock);
    } catch (...) {
        log_err("event=scp-failed reason=\"unexpected exception\"");
        result = -EIO;
    }
    return result;
}

extern "C" unsigned scp_active_associations(const struct scp *scp)
{
    unsigned active;

    pthread_mutex_lock(&((struct scp *)scp)->lock);
    active = scp->active + scp->pending;
    pthread_mutex_unlock(&((struct scp *)scp)->lock);
    return active;
}

extern "C" void scp_free(struct scp *scp)
{
    if (scp == NULL)
        return;
    try {
        if (scp->network != NULL)
            (void)ASC_dropNetwork(&scp->network);
        if (scp->listen_fd >= 0)
            (void)close(scp->listen_fd);
    } catch (...) {
    }
    if (scp->callers != NULL) {
        for (size_t i = 0; i < scp->caller_count; i++) {
            free((void *)scp->callers[i].ae_title);
            delete[] scp->callers[i].hosts;
        }
        delete[] scp->callers;
    }
    pthread_cond_destroy(&scp->idle_cond);
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
