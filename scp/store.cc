/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store - the C-STORE service (see scp.h for the contract, scp_int.h for
 * the module's files).
 *
 * scp__store_serve(): admission, receive into spool tmp/ through
 * SpoolConsumer, validate the file against the command, commit, respond.
 *
 * Received data reaches the disk only through spool_write_all(), so every
 * write, fsync and rename passes the spool's checks (and its fault hooks in
 * tests). DCMTK's own file writer is not used: it neither fsyncs nor
 * checks close().
 */
#include "scp_int.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcistrmb.h"
#include "dcmtk/dcmdata/dcmetinf.h"
#include "dcmtk/dcmdata/dcostrma.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dimse.h"
#include "dcmtk/ofstd/ofstd.h"

#include "base/log.h"
#include "base/util.h"
#include "spool/spool.h"

/* Our Implementation Class UID (PS3.7 D.3.3.2), a UUID-derived UID. */
#define SCP_IMPLEMENTATION_CLASS_UID \
    "2.25.242422315187102122747475212045372960498"
#define SCP_IMPLEMENTATION_VERSION_NAME "STOWBRIDGE_" STOWBRIDGE_VERSION

/* Tests only (scp.h): read by association threads. */
static std::atomic<bool> big_hold_off{ false };

void scp__set_big_hold_off(bool off)
{
    big_hold_off.store(off);
}

/*
 * A DcmConsumer that collects the received file in the association's
 * receive buffer (@sa->write_buffer, SCP_WRITE_BUFFER bytes; DCMTK hands
 * over one PDV fragment at a time, often ~10 KB: one write(2) each would
 * cost more than the fsync).
 *
 * With a file (@fd >= 0) it writes the buffer out through
 * spool_write_all() whenever it fills. Without one (@fd < 0: the spool
 * takes instances held in memory, up to @hold_max bytes) it keeps
 * everything in memory: in the association's buffer, then, if the file
 * outgrows it, @hold_max allows and the SCP's big-hold buffer is free, in
 * that one (what came so far copied over; @sa->big_hold set, given back
 * by scp__store_serve() when the C-STORE ends). Once the file outgrows
 * what it may hold it creates the spool file (spool_tmp_create(), which
 * gives it a new ID) and goes on as above. After the first failure it
 * accepts nothing more and remembers the errno, so the caller answers
 * A700 whatever DCMTK made of the short write. finish() must be called at
 * the end.
 */
class SpoolConsumer : public DcmConsumer {
public:
    SpoolConsumer(struct scp_assoc *sa, int fd, char *id, size_t hold_max)
        : sa_(sa), spool_(sa->scp->spool), fd_(fd), id_(id), error_(0),
          failed_call_("write"), bytes_(0), buffer_(sa->write_buffer), used_(0),
          cap_(SCP_WRITE_BUFFER), hold_max_(hold_max)
    {
    }

    OFBool good() const override { return error_ == 0; }
    OFCondition status() const override
    {
        return error_ == 0 ? EC_Normal : EC_InvalidStream;
    }
    OFBool isFlushed() const override { return used_ == 0 || held(); }
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
            size_t room = cap_ - used_;
            size_t n = left < room ? left : room;
            memcpy(buffer_ + used_, p, n);
            used_ += n;
            p += n;
            left -= n;
            if (used_ == cap_ && left > 0 && !grow() && !drain())
                return 0;
        }
        bytes_ += (uint64_t)buflen;
        return buflen;
    }
    /* Called by DCMTK between elements: a held file stays in memory. */
    void flush() override
    {
        if (fd_ >= 0)
            (void)drain();
    }

    /* The end of the data set: a held file stays in the buffer, anything
     * else is written out. False (and error() set) on failure. */
    bool finish() { return held() || drain(); }
    /* A held file after all: written out to a new spool file (fd()),
     * as when it outgrows the buffer. False (and error() set) on failure. */
    bool to_file()
    {
        hold_max_ = 0;
        return drain();
    }
    /* True if the whole file is in held_data() and no file was made. */
    bool held() const { return error_ == 0 && fd_ < 0 && used_ <= hold_max_; }
    const unsigned char *held_data() const { return buffer_; }
    size_t held_len() const { return used_; }
    int fd() const { return fd_; }
    int error() const { return error_; }
    const char *failed_call() const { return failed_call_; }
    uint64_t bytes() const { return bytes_; }

private:
    /* The association's buffer is full and more is coming: go on in the
     * SCP's big-hold buffer if the file may be held that big and no other
     * C-STORE has it. */
    bool grow()
    {
        struct scp *scp = sa_->scp;

        if (fd_ >= 0 || buffer_ != sa_->write_buffer ||
            hold_max_ <= SCP_WRITE_BUFFER || scp->big_hold_buffer == nullptr ||
            big_hold_off.load() || scp->big_hold_busy.exchange(true))
            return false;
        memcpy(scp->big_hold_buffer, buffer_, used_);
        buffer_ = scp->big_hold_buffer;
        cap_ = SCP_BIG_HOLD;
        sa_->big_hold = true;
        return true;
    }
    bool drain()
    {
        if (error_ != 0)
            return false;
        if (fd_ < 0) {
            /* Too big to hold: from here on a file, under a new ID. */
            char err[256];
            int r = spool_tmp_create(spool_, id_, &fd_, err, sizeof(err));
            if (r < 0) {
                error_ = -r;
                failed_call_ = "open";
                fd_ = -1;
                return false;
            }
        }
        if (used_ == 0)
            return true;
        int r = spool_write_all(fd_, buffer_, used_);
        used_ = 0;
        if (buffer_ != sa_->write_buffer) {
            /* A file after all: the big-hold buffer is not needed. */
            buffer_ = sa_->write_buffer;
            cap_ = SCP_WRITE_BUFFER;
            sa_->big_hold = false;
            sa_->scp->big_hold_busy.store(false);
        }
        if (r < 0) {
            error_ = -r;
            return false;
        }
        return true;
    }

    struct scp_assoc *sa_;
    struct spool *spool_;
    int fd_;
    char *id_; /* SPOOL_ID_MAX bytes, the caller's */
    int error_;
    const char *failed_call_;
    uint64_t bytes_;
    unsigned char *buffer_; /* the association's or the big-hold buffer */
    size_t used_;
    size_t cap_; /* buffer_'s size */
    size_t hold_max_;
};

/* DcmOutputStream's constructor is protected: this is the usual shim. */
class SpoolOutputStream : public DcmOutputStream {
public:
    explicit SpoolOutputStream(SpoolConsumer *consumer)
        : DcmOutputStream(consumer)
    {
    }
};

/* ------------------------------------------------------------------ */
/* C-STORE                                                             */
/* ------------------------------------------------------------------ */

struct store_result {
    DIC_US status;
    char comment[128]; /* Error Comment (0000,0902), at most 64 sent */
    /* Committed through the journal from memory: the entry is written
     * after the answer (spool_publish_held()). */
    bool publish;
    uint64_t seq;
    char id[SPOOL_ID_MAX];
    const unsigned char
        *held_data; /* the association's or the big-hold buffer */
    size_t held_len;
    struct spool_meta label;
};

static void store_fail(struct store_result *res, DIC_US status, const char *fmt,
                       ...) __attribute__((format(printf, 3, 4)));

static void store_fail(struct store_result *res, DIC_US status, const char *fmt,
                       ...)
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
static bool write_meta_header(DcmOutputStream &stream, const char *sop_class,
                              const char *sop_instance,
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
                                SCP_IMPLEMENTATION_CLASS_UID)
            .bad() ||
        meta.putAndInsertString(DCM_ImplementationVersionName,
                                SCP_IMPLEMENTATION_VERSION_NAME)
            .bad() ||
        meta.putAndInsertString(DCM_SourceApplicationEntityTitle, calling_ae)
            .bad())
        return false;
    if (meta.putAndInsertUint32(DCM_FileMetaInformationGroupLength, 0).bad())
        return false;
    if (meta.computeGroupLengthAndPadding(EGL_withGL, EPD_noChange,
                                          EXS_LittleEndianExplicit,
                                          EET_ExplicitLength)
            .bad())
        return false;
    meta.transferInit();
    OFCondition cond =
        meta.write(stream, EXS_LittleEndianExplicit, EET_ExplicitLength, NULL);
    meta.transferEnd();
    return cond.good() && stream.good();
}

/*
 * Checks the received file against the command (step 3 of
 * receive_store()): it parses as Part 10; SOPClassUID (0008,0016) and
 * SOPInstanceUID (0008,0018) equal the command's; StudyInstanceUID
 * (0020,000D) is present and valid. Reads only up to the pixel data, from
 * @held (@held_len bytes) when the file is held in memory, else from @path.
 */
static bool validate_received(const char *path, const unsigned char *held,
                              size_t held_len, const char *sop_class,
                              const char *sop_instance,
                              char study_uid[UTIL_UID_MAX + 1],
                              struct store_result *res)
{
    DcmFileFormat file;
    OFString value;
    char trimmed[UTIL_UID_MAX + 2];
    OFCondition cond;

    if (held != NULL) {
        DcmInputBufferStream in;
        in.setBuffer(held, (offile_off_t)held_len);
        in.setEos();
        file.setReadMode(ERM_fileOnly);
        file.transferInit();
        cond = file.readUntilTag(in, EXS_Unknown, EGL_noChange,
                                 DCM_MaxReadLength, DCM_PixelData);
        file.transferEnd();
        in.releaseBuffer();
    } else {
        cond = file.loadFileUntilTag(path, EXS_Unknown, EGL_noChange,
                                     DCM_MaxReadLength, ERM_fileOnly,
                                     DCM_PixelData);
    }
    if (cond.bad()) {
        store_fail(res, STATUS_STORE_Error_CannotUnderstand,
                   "data set cannot be parsed: %s", cond.text());
        return false;
    }
    DcmDataset *ds = file.getDataset();

    if (ds->findAndGetOFStringArray(DCM_SOPClassUID, value).bad() ||
        !scp__copy_trimmed_uid(trimmed, sizeof(trimmed), value.c_str()) ||
        strcmp(trimmed, sop_class) != 0) {
        store_fail(res, STATUS_STORE_Error_DataSetDoesNotMatchSOPClass,
                   "SOPClassUID (0008,0016) differs from the command's");
        return false;
    }
    if (ds->findAndGetOFStringArray(DCM_SOPInstanceUID, value).bad() ||
        !scp__copy_trimmed_uid(trimmed, sizeof(trimmed), value.c_str()) ||
        strcmp(trimmed, sop_instance) != 0) {
        store_fail(res, STATUS_STORE_Error_DataSetDoesNotMatchSOPClass,
                   "SOPInstanceUID (0008,0018) differs from the command's");
        return false;
    }
    if (ds->findAndGetOFStringArray(DCM_StudyInstanceUID, value).bad() ||
        !scp__copy_trimmed_uid(trimmed, sizeof(trimmed), value.c_str()) ||
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
 * Step 4 of receive_store(): makes the received instance durable under
 * @id (updated if a file had to be made for it) with @res->label. A held
 * instance goes through the journal from memory, its entry written after
 * the answer (@res->publish); if the journal does not take it now, it is
 * written to a spool file and committed like any other. False: refused,
 * @res filled, nothing left behind.
 */
static bool commit_received(struct scp_assoc *sa, SpoolConsumer *consumer,
                            char id[SPOOL_ID_MAX], struct store_result *res)
{
    struct spool *spool = sa->scp->spool;
    char err[512];
    int fd = consumer->fd();
    int r;

    if (consumer->held()) {
        r = spool_commit_held(spool, id, consumer->held_data(),
                              consumer->held_len(), &res->label, &res->seq, err,
                              sizeof(err));
        if (r == 0) {
            res->publish = true;
            res->held_data = consumer->held_data();
            res->held_len = consumer->held_len();
            memcpy(res->id, id, SPOOL_ID_MAX);
            return true;
        }
        if (r == -EAGAIN) {
            /* Not through the journal now: a file, committed its way. */
            if (consumer->to_file()) {
                r = 0;
            } else {
                char why[128];
                util_err(err, sizeof(err), "%s() failed: %s",
                         consumer->failed_call(),
                         util_strerror(-consumer->error(), why, sizeof(why)));
                spool_discard(spool, id, consumer->fd());
            }
            fd = consumer->fd();
        }
        if (r < 0) {
            log_err("event=spool-error assoc=%lu id=%s reason=\"%s\"",
                    sa->number, id, err);
            store_fail(res, STATUS_STORE_Refused_OutOfResources,
                       "cannot commit spool file");
            return false;
        }
    }
    r = spool_commit_labelled(spool, id, fd, &res->label, err, sizeof(err));
    if (r < 0) {
        log_err("event=spool-error assoc=%lu id=%s reason=\"%s\"", sa->number,
                id, err);
        store_fail(res, STATUS_STORE_Refused_OutOfResources,
                   "cannot commit spool file");
        return false;
    }
    return true;
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

    /* 2. Receive: into memory where the spool takes held instances and
     * the file fits (spool_commit_held()), else straight into a new
     * spool file. */
    size_t hold_max = spool_held_max(scp->spool);
    if (hold_max > SCP_BIG_HOLD)
        hold_max = SCP_BIG_HOLD;
    if (hold_max > 0) {
        r = spool_new_id(id);
        if (r < 0)
            util_err(err, sizeof(err), "no random bytes for an entry ID");
    } else {
        r = spool_tmp_create(scp->spool, id, &fd, err, sizeof(err));
    }
    if (r < 0) {
        OFCondition cond = skip_data_set(sa);
        log_err("event=spool-error assoc=%lu reason=\"%s\"", sa->number, err);
        store_fail(res, STATUS_STORE_Refused_OutOfResources,
                   "cannot create spool file");
        return cond;
    }

    SpoolConsumer consumer(sa, fd, id, hold_max);
    SpoolOutputStream stream(&consumer);
    T_ASC_PresentationContextID data_pres_id = pres_id;
    OFCondition cond = EC_Normal;

    if (!write_meta_header(stream, sop_class, sop_instance,
                           pc.acceptedTransferSyntax, sa->calling_ae)) {
        cond = skip_data_set(sa);
        if (consumer.error() == 0) {
            /* DCMTK could not build the meta header: not a disk error. */
            spool_discard(scp->spool, id, consumer.fd());
            store_fail(res, STATUS_STORE_Refused_OutOfResources,
                       "cannot build the file meta information");
            return cond;
        }
    } else {
        cond = DIMSE_receiveDataSetInFile(sa->assoc, DIMSE_NONBLOCKING,
                                          (int)scp->timeout_s, &data_pres_id,
                                          &stream, NULL, NULL);
        if (cond.good() && consumer.finish() && !consumer.held() &&
            !spool_uses_journal(scp->spool))
            /* Start writeback now so that it overlaps the validation
             * below; spool_commit()'s fsync then has little left to do.
             * (With the journal the file's own writeback waits for the
             * checkpoint: started now it would only lengthen the
             * journal's flush.) */
            (void)sync_file_range(consumer.fd(), 0, 0, SYNC_FILE_RANGE_WRITE);
    }
    fd = consumer.fd(); /* made during the receive if the file outgrew memory */

    if (consumer.error() != 0) {
        char errbuf[128];
        log_err("event=spool-error assoc=%lu id=%s reason=\"%s() failed: %s\"",
                sa->number, id, consumer.failed_call(),
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

    /* 3. Validate against the command (a file is not linked yet: read it
     * by the path the spool gives). */
    r = consumer.held()
            ? 0
            : spool_tmp_path(scp->spool, id, fd, path, sizeof(path));
    if (r < 0 ||
        !validate_received(path, consumer.held() ? consumer.held_data() : NULL,
                           consumer.held_len(), sop_class, sop_instance,
                           study_uid, res)) {
        if (r < 0)
            store_fail(res, STATUS_STORE_Refused_OutOfResources,
                       "spool path too long");
        spool_discard(scp->spool, id, fd);
        return EC_Normal;
    }

    /* 4. Commit: labelled with what the uploader needs (UIDs, calling
     * AE); no meta/ sidecar on this path (spool.h). */
    memset(&res->label, 0, sizeof(res->label));
    OFStandard::strlcpy(res->label.study_uid, study_uid,
                        sizeof(res->label.study_uid));
    OFStandard::strlcpy(res->label.sop_uid, sop_instance,
                        sizeof(res->label.sop_uid));
    OFStandard::strlcpy(res->label.calling_ae, sa->calling_ae,
                        sizeof(res->label.calling_ae));
    if (!commit_received(sa, &consumer, id, res))
        return EC_Normal;

    /* 5. Only now is it safe to say success. */
    uint64_t bytes = consumer.bytes();
    if (scp->observer.stored != NULL)
        scp->observer.stored(scp->observer.ctx, sa->calling_ae, study_uid,
                             bytes);
    res->status = STATUS_Success;
    res->comment[0] = '\0';
    log_info("id=%s event=received from=%s@%s sop=%s study=%s bytes=%llu", id,
             sa->calling_ae, sa->peer, sop_instance, study_uid,
             (unsigned long long)bytes);
    return EC_Normal;
}

/* Gives back the big-hold buffer a C-STORE took (SpoolConsumer::grow())
 * once its data is no longer needed, however the C-STORE ends. */
class BigHoldRelease {
public:
    explicit BigHoldRelease(struct scp_assoc *sa) : sa_(sa) {}
    ~BigHoldRelease()
    {
        if (sa_->big_hold) {
            sa_->big_hold = false;
            sa_->scp->big_hold_busy.store(false);
        }
    }
    BigHoldRelease(const BigHoldRelease &) = delete;
    BigHoldRelease &operator=(const BigHoldRelease &) = delete;

private:
    struct scp_assoc *sa_;
};

/* One C-STORE-RQ: receive, answer, and count it. */
OFCondition scp__store_serve(struct scp_assoc *sa,
                             T_ASC_PresentationContextID pres_id,
                             T_DIMSE_Message *msg)
{
    BigHoldRelease release_after(sa);
    T_DIMSE_C_StoreRQ *req = &msg->msg.CStoreRQ;
    struct store_result res;
    char sop_class[UTIL_UID_MAX + 1];
    char sop_instance[UTIL_UID_MAX + 1];
    OFCondition cond;

    sa->stores++;
    memset(&res, 0, sizeof(res));
    res.status = STATUS_STORE_Refused_OutOfResources;

    if (!scp__copy_trimmed_uid(sop_class, sizeof(sop_class),
                               req->AffectedSOPClassUID) ||
        !scp__copy_trimmed_uid(sop_instance, sizeof(sop_instance),
                               req->AffectedSOPInstanceUID) ||
        !util_uid_valid(sop_class) || !util_uid_valid(sop_instance)) {
        cond = skip_data_set(sa);
        store_fail(&res, STATUS_STORE_Error_DataSetDoesNotMatchSOPClass,
                   "Affected SOP Class/Instance UID is not a valid UID");
        OFStandard::strlcpy(sop_instance, "-", sizeof(sop_instance));
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
    if (res.status != STATUS_Success && sa->scp->observer.refused != NULL)
        sa->scp->observer.refused(sa->scp->observer.ctx, res.status);

    T_DIMSE_C_StoreRSP rsp;
    memset(&rsp, 0, sizeof(rsp));
    rsp.MessageIDBeingRespondedTo = req->MessageID;
    rsp.DimseStatus = res.status;
    rsp.DataSetType = DIMSE_DATASET_NULL;
    OFStandard::strlcpy(rsp.AffectedSOPClassUID, req->AffectedSOPClassUID,
                        sizeof(rsp.AffectedSOPClassUID));
    OFStandard::strlcpy(rsp.AffectedSOPInstanceUID, req->AffectedSOPInstanceUID,
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
    if (res.publish) {
        /* Durable in the journal since before the answer; now the entry
         * itself, off the modality's wait (spool.h). */
        char err[640];
        if (spool_publish_held(sa->scp->spool, res.id, res.seq, res.held_data,
                               res.held_len, &res.label, err, sizeof(err)) < 0)
            log_err("event=spool-error assoc=%lu id=%s reason=\"%s\"",
                    sa->number, res.id, err);
    }
    return cond;
}
