/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_scp_faults - the SCP and the spool together, in one process, with
 * DCMTK's real storescu as the modality: the N-th write, fsync, rename or
 * close of a C-STORE fails with EIO or ENOSPC, and the test checks that
 * storescu is answered A700 (never 0000), that nothing is left in
 * incoming/ or tmp/, and that the next C-STORE on a healthy disk succeeds.
 * The spool's O_TMPFILE + linkat path is tested, or, with the environment
 * variable STOWBRIDGE_TEST_NO_TMPFILE=1 (the second CTest entry), its
 * tmp/ + rename path; a refused label (fsetxattr) still stores, with the
 * meta/ file instead; with the intake journal, a failed write of the
 * entry after 0000 (the record restores it at the next start).
 * Also: the free-space admission check (A700), a data set without
 * StudyInstanceUID (A900), and an association whose peer keeps its socket
 * after A-RELEASE-RP: its slot is free at once (DCMTK's
 * ASC_dropSCPAssociation() held it for 180 s), the socket closed within
 * dicom.timeout_s.
 *
 * Needs dump2dcm and storescu (Debian package dcmtk) on PATH.
 */
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "scp/scp.h"
#include "spool/spool.h"
#include "spool/spool_int.h"
#include "tap.h"

enum fault_op {
    FAULT_NONE,
    FAULT_OPEN,
    FAULT_WRITE,
    FAULT_FSYNC,
    FAULT_RENAME,
    FAULT_LINK,
    FAULT_LABEL,
    FAULT_CLOSE
};

/* Armed by the main thread, read by association threads: atomic, since
 * what orders the two (storescu, another process) is invisible to TSan. */
static struct {
    atomic_int op;  /* enum fault_op */
    atomic_int nth; /* fail the nth call of op (1-based) */
    atomic_int error;
    atomic_int calls;
    atomic_int fired;
} fault;

static int (*real_openat)(int, const char *, int, mode_t);
static ssize_t (*real_write)(int, const void *, size_t);
static int (*real_fsync)(int);
static int (*real_renameat)(int, const char *, int, const char *);
static int (*real_close)(int);
static int (*real_linkat)(int, const char *, int, const char *, int);
static int (*real_fsetxattr)(int, const char *, const void *, size_t, int);

static bool fault_hit(enum fault_op op)
{
    if (atomic_load(&fault.op) != (int)op)
        return false;
    if (atomic_fetch_add(&fault.calls, 1) + 1 != atomic_load(&fault.nth))
        return false;
    atomic_fetch_add(&fault.fired, 1);
    return true;
}

static int fault_openat(int dirfd, const char *path, int flags, mode_t mode)
{
    if (fault_hit(FAULT_OPEN)) {
        errno = atomic_load(&fault.error);
        return -1;
    }
    return real_openat(dirfd, path, flags, mode);
}

static ssize_t fault_write(int fd, const void *buf, size_t len)
{
    if (fault_hit(FAULT_WRITE)) {
        errno = atomic_load(&fault.error);
        return -1;
    }
    return real_write(fd, buf, len);
}

static int fault_fsync(int fd)
{
    if (fault_hit(FAULT_FSYNC)) {
        errno = atomic_load(&fault.error);
        return -1;
    }
    return real_fsync(fd);
}

static int fault_renameat(int a, const char *b, int c, const char *d)
{
    if (fault_hit(FAULT_RENAME)) {
        errno = atomic_load(&fault.error);
        return -1;
    }
    return real_renameat(a, b, c, d);
}

static int fault_linkat(int a, const char *b, int c, const char *d, int f)
{
    if (fault_hit(FAULT_LINK)) {
        errno = atomic_load(&fault.error);
        return -1;
    }
    return real_linkat(a, b, c, d, f);
}

static int fault_fsetxattr(int fd, const char *name, const void *value,
                           size_t size, int flags)
{
    if (fault_hit(FAULT_LABEL)) {
        errno = atomic_load(&fault.error);
        return -1;
    }
    return real_fsetxattr(fd, name, value, size, flags);
}

static int fault_close(int fd)
{
    if (fault_hit(FAULT_CLOSE)) {
        /* A failed close still releases the descriptor (Linux). */
        real_close(fd);
        errno = atomic_load(&fault.error);
        return -1;
    }
    return real_close(fd);
}

static void fault_arm(enum fault_op op, int nth, int error)
{
    atomic_store(&fault.op, (int)op);
    atomic_store(&fault.nth, nth);
    atomic_store(&fault.error, error);
    atomic_store(&fault.calls, 0);
    atomic_store(&fault.fired, 0);
}

static atomic_bool stop_flag;

static bool should_stop(void *ctx)
{
    (void)ctx;
    return atomic_load(&stop_flag);
}

struct server {
    struct scp *scp;
    pthread_t thread;
};

static void *server_main(void *arg)
{
    struct server *srv = arg;
    (void)scp_run(srv->scp, should_stop, NULL, 10);
    return NULL;
}

static int free_port(void)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof(addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port = -1;

    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0 &&
        getsockname(fd, (struct sockaddr *)&addr, &len) == 0)
        port = ntohs(addr.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static unsigned count_entries(const char *dir, const char *sub)
{
    char path[4096];
    unsigned n = 0;
    struct dirent *de;
    DIR *d;
    int len;

    len = snprintf(path, sizeof(path), "%s/%s", dir, sub);
    if (len < 0 || (size_t)len >= sizeof(path))
        return 9999;
    d = opendir(path);
    if (d == NULL)
        return 9999;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* The ID of one entry in @sub (there is exactly one). */
static int first_entry_id(const char *dir, const char *sub,
                          char ret_id[SPOOL_ID_MAX])
{
    char path[8400];
    struct dirent *de;
    int r = -ENOENT;
    DIR *d;

    snprintf(path, sizeof(path), "%s/%s", dir, sub);
    d = opendir(path);
    if (d == NULL)
        return -errno;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (de->d_name[0] == '.' || len <= 4 || len - 4 >= SPOOL_ID_MAX)
            continue;
        memcpy(ret_id, de->d_name, len - 4);
        ret_id[len - 4] = '\0';
        r = 0;
        break;
    }
    closedir(d);
    return r;
}

static void empty_dir(const char *dir, const char *sub)
{
    char cmd[8600];
    snprintf(cmd, sizeof(cmd), "rm -f '%s/%s'/*", dir, sub);
    (void)!system(cmd);
}

/* Writes a small CT image with dump2dcm; @with_study false leaves out
 * StudyInstanceUID. */
/* A CT instance of @rows x @columns 16-bit pixels. */
static int make_dicom(const char *dir, const char *name, const char *sop_uid,
                      bool with_study, unsigned rows, unsigned columns,
                      char *ret_path, size_t len)
{
    char dump[4096];
    char cmd[16384];
    FILE *f;

    snprintf(dump, sizeof(dump), "%s/%s.txt", dir, name);
    snprintf(ret_path, len, "%s/%s.dcm", dir, name);
    f = fopen(dump, "w");
    if (f == NULL)
        return -errno;
    fprintf(f,
            "(0008,0016) UI =CTImageStorage\n"
            "(0008,0018) UI [%s]\n"
            "(0008,0060) CS [CT]\n"
            "(0010,0010) PN [Test^Patient]\n"
            "(0010,0020) LO [TEST0001]\n",
            sop_uid);
    if (with_study)
        fprintf(f, "(0020,000d) UI [1.2.826.0.1.3680043.2.1125.1.1]\n");
    fprintf(f,
            "(0020,000e) UI [1.2.826.0.1.3680043.2.1125.1.2]\n"
            "(0028,0002) US 1\n"
            "(0028,0004) CS [MONOCHROME2]\n"
            "(0028,0010) US %u\n"
            "(0028,0011) US %u\n"
            "(0028,0100) US 16\n"
            "(0028,0101) US 12\n"
            "(0028,0102) US 11\n"
            "(0028,0103) US 0\n",
            rows, columns);
    fclose(f);
    snprintf(cmd, sizeof(cmd),
             "head -c %u /dev/urandom > '%s/%s.raw' && "
             "echo '(7fe0,0010) OW =%s/%s.raw' >> '%s' && "
             "dump2dcm -q +te '%s' '%s'",
             rows * columns * 2, dir, name, dir, name, dump, dump, ret_path);
    return system(cmd) == 0 ? 0 : -EIO;
}

/* Runs @cmd; returns its combined output (caller frees). */
static char *run_capture(const char *cmd)
{
    char *out = NULL;
    size_t cap = 0;
    size_t len = 0;
    char buf[4096];
    size_t n;
    FILE *p;

    p = popen(cmd, "r");
    if (p == NULL)
        return strdup("");
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) {
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            out = realloc(out, cap);
            if (out == NULL) {
                pclose(p);
                return strdup("");
            }
        }
        memcpy(out + len, buf, n);
        len += n;
    }
    pclose(p);
    if (out == NULL)
        return strdup("");
    out[len] = '\0';
    return out;
}

/* Runs storescu on @file; returns its combined output (caller frees). */
static char *run_storescu(int port, const char *file)
{
    char cmd[8600];

    snprintf(cmd, sizeof(cmd),
             "timeout 60 storescu -v -aet FAULTSCU -aec STOWBRIDGE "
             "127.0.0.1 %d '%s' 2>&1",
             port, file);
    return run_capture(cmd);
}

/* Runs craft_scu in @mode on @file; returns its output (caller frees). */
static char *run_craft_scu(int port, const char *mode, const char *file)
{
    char cmd[8600];

    snprintf(cmd, sizeof(cmd), "timeout 60 '%s' %d %s '%s' 2>&1", CRAFT_SCU,
             port, mode, file);
    return run_capture(cmd);
}

static bool refused_out_of_resources(const char *out)
{
    return strstr(out, "Refused: OutOfResources") != NULL ||
           strstr(out, "0xa700") != NULL || strstr(out, "A700") != NULL;
}

static bool stored_ok(const char *out)
{
    return strstr(out, "Received Store Response (Success)") != NULL;
}

/* Appends an item (type, reserved, 2-byte length, value) to @p. */
static size_t put_item(unsigned char *p, unsigned type, const char *value,
                       size_t len)
{
    p[0] = (unsigned char)type;
    p[1] = 0;
    p[2] = (unsigned char)(len >> 8);
    p[3] = (unsigned char)len;
    memcpy(p + 4, value, len);
    return 4 + len;
}

/* Connects and sends an A-ASSOCIATE-RQ for Verification; returns the
 * socket once an A-ASSOCIATE-AC came, or -1. */
static int raw_associate(int port)
{
    unsigned char pdu[512];
    unsigned char pc[128];
    unsigned char ui[64];
    size_t n = 6;
    size_t pcl = 4;
    size_t uil = 0;
    struct sockaddr_in addr;
    struct timeval tv = { 10, 0 };
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(pdu, 0, sizeof(pdu));
    pdu[0] = 0x01;
    pdu[n + 1] = 1; /* protocol version */
    memcpy(pdu + n + 4, "STOWBRIDGE      ", 16);
    memcpy(pdu + n + 20, "RELEASEHOLD     ", 16);
    n += 68;
    n += put_item(pdu + n, 0x10, "1.2.840.10008.3.1.1.1", 21);
    memset(pc, 0, 4);
    pc[0] = 1;
    pcl += put_item(pc + pcl, 0x30, "1.2.840.10008.1.1", 17);
    pcl += put_item(pc + pcl, 0x40, "1.2.840.10008.1.2", 17);
    n += put_item(pdu + n, 0x20, (const char *)pc, pcl);
    uil += put_item(ui + uil, 0x51, "\0\0\x40\0", 4);
    n += put_item(pdu + n, 0x50, (const char *)ui, uil);
    pdu[2] = (unsigned char)((n - 6) >> 24);
    pdu[3] = (unsigned char)((n - 6) >> 16);
    pdu[4] = (unsigned char)((n - 6) >> 8);
    pdu[5] = (unsigned char)(n - 6);

    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((uint16_t)port);
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        send(fd, pdu, n, 0) != (ssize_t)n ||
        recv(fd, pdu, sizeof(pdu), 0) < 1 || pdu[0] != 0x02) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * With max_associations 1: a peer releases and keeps its socket open.
 * The slot must be free at once (the next storescu served) and the
 * socket closed by the SCP within dicom.timeout_s.
 */
static void test_release_hold(struct server *srv, int port, unsigned timeout_s,
                              const char *file)
{
    static const unsigned char rq[10] = { 0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0 };
    unsigned char buf[64];
    int fd = raw_associate(port);
    double start;
    double closed_after = -1;
    char *out;

    CHECK_MSG(fd >= 0, "raw association accepted");
    if (fd < 0)
        return;
    CHECK(send(fd, rq, sizeof(rq), 0) == (ssize_t)sizeof(rq));
    CHECK_MSG(recv(fd, buf, sizeof(buf), 0) >= 1 && buf[0] == 0x06,
              "A-RELEASE-RP received");
    start = now_s();
    while (scp_active_associations(srv->scp) > 0 && now_s() - start < 5)
        usleep(20000);
    CHECK_MSG(scp_active_associations(srv->scp) == 0,
              "slot free %.2f s after A-RELEASE-RP, peer still connected",
              now_s() - start);
    out = run_storescu(port, file);
    CHECK_MSG(stored_ok(out), "the next caller is served at once: %s", out);
    free(out);
    /* The SCP closes its end: a byte we send is then answered by a reset,
     * which the next send reports. */
    while (now_s() - start < timeout_s + 5) {
        if (send(fd, "x", 1, MSG_NOSIGNAL) < 0) {
            closed_after = now_s() - start;
            break;
        }
        usleep(100000);
    }
    CHECK_MSG(closed_after >= 0 && closed_after <= timeout_s + 1.5,
              "socket closed by the SCP after %.1f s (dicom.timeout_s %u)",
              closed_after, timeout_s);
    close(fd);
}

/*
 * With the intake journal (the daemon's default), an instance that fits
 * in memory is answered 0000 once its journal record is durable and its
 * entry is written after the answer. When that write fails, the answer
 * stands: the journal stops (the next C-STORE is committed file by file)
 * and the next start writes the entry from its record.
 */
static atomic_int pwritev_calls;

static ssize_t counting_pwritev(int fd, const struct iovec *iov, int count,
                                off_t off)
{
    atomic_fetch_add(&pwritev_calls, 1);
    return pwritev(fd, iov, count, off);
}

/*
 * Opens @spool_dir as the daemon does, with an 8 MiB intake journal taking
 * records up to @max_record_kb (0: its own limit), and starts an SCP on
 * it (@base's settings, a free port) in @srv. False (and a failed check)
 * if any of it fails; nothing is left open then.
 */
static bool journal_server_start(const char *spool_dir, unsigned max_record_kb,
                                 const struct scp_params *base,
                                 struct spool **ret_spool, struct server *srv,
                                 struct scp_params *ret_params)
{
    char err[512];
    struct spool_recovery rec;
    struct spool *spool = NULL;

    if (spool_open(spool_dir, SPOOL_OPEN_OWNER, &spool, err, sizeof(err)) < 0 ||
        spool_recover(spool, &rec, err, sizeof(err)) < 0 ||
        spool_journal_start(spool, 8, 3600u * 1000u, max_record_kb, err,
                            sizeof(err)) < 0) {
        CHECK_MSG(0, "journal spool: %s", err);
        spool_close(spool);
        return false;
    }
    *ret_params = *base;
    ret_params->port = (uint16_t)free_port();
    ret_params->spool = spool;
    ret_params->min_free_mb = 0;
    ret_params->max_associations = 4;
    ret_params->timeout_s = 10;
    atomic_store(&stop_flag, false);
    if (scp_new(ret_params, &srv->scp, err, sizeof(err)) < 0) {
        CHECK_MSG(0, "%s", err);
        spool_close(spool);
        return false;
    }
    CHECK(pthread_create(&srv->thread, NULL, server_main, srv) == 0);
    *ret_spool = spool;
    return true;
}

/* Stops what journal_server_start() started and closes the spool. */
static void journal_server_stop(struct spool *spool, struct server *srv)
{
    atomic_store(&stop_flag, true);
    pthread_join(srv->thread, NULL);
    scp_free(srv->scp);
    spool_close(spool);
}

/*
 * An instance over 256 KiB is held in memory (its journal record written
 * in place from the SCP's big-hold buffer: one pwritev) while no other
 * C-STORE has that buffer, and each C-STORE gives it back; while it is
 * taken the instance goes through a spool file, stored all the same.
 */
static void test_big_holds(const char *dir, const char *medium,
                           const struct scp_params *base)
{
    char spool_dir[4200];
    struct spool_commit_stats cs;
    struct scp_params params;
    struct spool *spool = NULL;
    struct server srv;
    char *out;

    snprintf(spool_dir, sizeof(spool_dir), "%s/big-hold-spool", dir);
    spool__io.pwritev = counting_pwritev;
    if (!journal_server_start(spool_dir, 0, base, &spool, &srv, &params)) {
        spool__io.pwritev = pwritev;
        return;
    }
    CHECK_MSG(spool_held_max(spool) > 600 * 1024,
              "the journal takes a 524 KB instance");

    fault_arm(FAULT_NONE, 0, 0);
    for (int i = 0; i < 2; i++) {
        out = run_storescu(params.port, medium);
        CHECK_MSG(stored_ok(out), "store %d: %s", i + 1, out);
        free(out);
    }
    CHECK_MSG(atomic_load(&pwritev_calls) == 2 &&
                  count_entries(spool_dir, "incoming") == 2,
              "both held and written in place: the buffer came back (%d)",
              atomic_load(&pwritev_calls));

    scp__set_big_hold_off(true);
    out = run_storescu(params.port, medium);
    CHECK_MSG(stored_ok(out), "big-hold buffer taken: stored all the same: %s",
              out);
    free(out);
    spool_commit_counts(spool, &cs);
    CHECK_MSG(atomic_load(&pwritev_calls) == 2 &&
                  count_entries(spool_dir, "incoming") == 3 &&
                  count_entries(spool_dir, "tmp") == 0 &&
                  cs.journal_commits == 2 && cs.file_commits == 1,
              "not held: committed file by file (%d)",
              atomic_load(&pwritev_calls));
    scp__set_big_hold_off(false);
    journal_server_stop(spool, &srv);
    spool__io.pwritev = pwritev;
}

static void test_journal_entry_fault(const char *dir, const char *file,
                                     const char *big,
                                     const struct scp_params *base)
{
    char spool_dir[4200];
    char err[512];
    struct spool_recovery rec;
    struct spool_commit_stats cs;
    struct scp_params params;
    struct spool *spool = NULL;
    struct server srv;
    char *out;

    snprintf(spool_dir, sizeof(spool_dir), "%s/journal-spool", dir);
    if (!journal_server_start(spool_dir, 256, base, &spool, &srv, &params))
        return;

    fault_arm(FAULT_NONE, 0, 0);
    out = run_storescu(params.port, file);
    CHECK_MSG(stored_ok(out), "journal, healthy: %s", out);
    free(out);
    CHECK(count_entries(spool_dir, "incoming") == 1);

    /* An instance bigger than the receive buffer spills to a spool file
     * once it outgrows it: that file's creation failing refuses it. */
    fault_arm(FAULT_OPEN, 1, EMFILE);
    out = run_storescu(params.port, big);
    CHECK_MSG(atomic_load(&fault.fired) == 1 && refused_out_of_resources(out) &&
                  !stored_ok(out),
              "the spill file cannot be created: A700: %s", out);
    free(out);
    CHECK(count_entries(spool_dir, "incoming") == 1 &&
          count_entries(spool_dir, "tmp") == 0);
    fault_arm(FAULT_NONE, 0, 0);

    /* The journal does not take a held instance now (full): it is written
     * to a spool file and committed file by file, or refused if that
     * write fails. */
    spool__journal_refuses = true;
    out = run_storescu(params.port, file);
    CHECK_MSG(stored_ok(out), "journal full: through a file: %s", out);
    free(out);
    spool_commit_counts(spool, &cs);
    CHECK_MSG(count_entries(spool_dir, "incoming") == 2 &&
                  cs.file_commits == 1 && cs.journal_up,
              "the entry is there at once, committed file by file");
    fault_arm(FAULT_WRITE, 1, EIO);
    out = run_storescu(params.port, file);
    CHECK_MSG(atomic_load(&fault.fired) == 1 && refused_out_of_resources(out) &&
                  !stored_ok(out),
              "journal full, the file's write fails: A700: %s", out);
    free(out);
    CHECK(count_entries(spool_dir, "incoming") == 2 &&
          count_entries(spool_dir, "tmp") == 0);
    fault_arm(FAULT_OPEN, 1, EMFILE);
    out = run_storescu(params.port, file);
    CHECK_MSG(atomic_load(&fault.fired) == 1 && refused_out_of_resources(out) &&
                  !stored_ok(out),
              "journal full, the file cannot be created: A700: %s", out);
    free(out);
    CHECK(count_entries(spool_dir, "incoming") == 2 &&
          count_entries(spool_dir, "tmp") == 0);
    spool__journal_refuses = false;
    fault_arm(FAULT_NONE, 0, 0);

    /* The entry's write (the only write of a held instance) fails. */
    fault_arm(FAULT_WRITE, 1, EIO);
    out = run_storescu(params.port, file);
    CHECK_MSG(atomic_load(&fault.fired) == 1, "the entry write was made");
    CHECK_MSG(stored_ok(out), "durable in the journal: 0000 stands: %s", out);
    free(out);
    spool_commit_counts(spool, &cs);
    CHECK_MSG(count_entries(spool_dir, "incoming") == 2 && !cs.journal_up &&
                  cs.journal_commits == 2,
              "no entry yet, the journal stopped");

    fault_arm(FAULT_NONE, 0, 0);
    out = run_storescu(params.port, file);
    CHECK_MSG(stored_ok(out), "then file by file: %s", out);
    free(out);
    spool_commit_counts(spool, &cs);
    CHECK(count_entries(spool_dir, "incoming") == 3 && cs.file_commits == 2);
    journal_server_stop(spool, &srv);

    /* The next start: the entry written from its record. */
    spool = NULL;
    CHECK(spool_open(spool_dir, SPOOL_OPEN_OWNER, &spool, err, sizeof(err)) ==
              0 &&
          spool_recover(spool, &rec, err, sizeof(err)) == 0);
    CHECK_MSG(rec.journal_restored == 1 &&
                  count_entries(spool_dir, "incoming") == 4,
              "restored at start: %u", rec.journal_restored);
    spool_close(spool);
}

enum { ON_TMPFILE = 1, ON_RENAME = 2, ON_BOTH = 3 };

struct fault_case {
    const char *name;
    enum fault_op op;
    int nth;
    int error;
    int paths;   /* the receive paths where the call exists */
    bool stores; /* the C-STORE still succeeds (0000) */
};

int main(void)
{
    static const struct fault_case cases[] = {
        { "open EMFILE", FAULT_OPEN, 1, EMFILE, ON_BOTH, false },
        { "first write ENOSPC (meta header, data set start)", FAULT_WRITE, 1,
          ENOSPC, ON_BOTH, false },
        { "second write EIO (data set)", FAULT_WRITE, 2, EIO, ON_BOTH, false },
        { "file fsync EIO", FAULT_FSYNC, 1, EIO, ON_BOTH, false },
        { "incoming/ fsync EIO", FAULT_FSYNC, 2, EIO, ON_BOTH, false },
        { "tmp/ fsync EIO", FAULT_FSYNC, 3, EIO, ON_RENAME, false },
        { "file fsync ENOSPC", FAULT_FSYNC, 1, ENOSPC, ON_BOTH, false },
        { "rename EIO", FAULT_RENAME, 1, EIO, ON_RENAME, false },
        { "linkat EIO", FAULT_LINK, 1, EIO, ON_TMPFILE, false },
        { "linkat ENOSPC", FAULT_LINK, 1, ENOSPC, ON_TMPFILE, false },
        { "close EIO", FAULT_CLOSE, 1, EIO, ON_BOTH, false },
        { "label ENOTSUP", FAULT_LABEL, 1, ENOTSUP, ON_BOTH, true },
        { "label ENOSPC", FAULT_LABEL, 1, ENOSPC, ON_BOTH, true },
    };
    const char *no_tmpfile = getenv("STOWBRIDGE_TEST_NO_TMPFILE");
    int path = no_tmpfile != NULL && strcmp(no_tmpfile, "1") == 0 ? ON_RENAME
                                                                  : ON_TMPFILE;
    char tmpl[] = "/tmp/stowbridge-scpfault-XXXXXX";
    char spool_dir[4200];
    char file[4200];
    char nostudy[4200];
    char small[4200];
    char medium[4200];
    char err[512];
    struct spool_recovery rec;
    struct spool *spool = NULL;
    struct server srv;
    struct scp_params params;
    char *dir;
    char *out;
    int port;

    dir = mkdtemp(tmpl);
    CHECK(dir != NULL);
    if (dir == NULL)
        return tap_done();
    snprintf(spool_dir, sizeof(spool_dir), "%s/spool", dir);
    log_set_level(LOG_LEVEL_DEBUG);

    /* 1.3 MB: more than any association holds in memory, written out in
     * several writes; 32 KB; 524 KB: held in memory while a big-hold slot
     * is free. */
    CHECK(make_dicom(dir, "ct", "1.2.826.0.1.3680043.2.1125.1.3", true, 1024,
                     640, file, sizeof(file)) == 0);
    CHECK(make_dicom(dir, "small", "1.2.826.0.1.3680043.2.1125.1.5", true, 128,
                     128, small, sizeof(small)) == 0);
    CHECK(make_dicom(dir, "nostudy", "1.2.826.0.1.3680043.2.1125.1.4", false,
                     1024, 640, nostudy, sizeof(nostudy)) == 0);
    CHECK(make_dicom(dir, "medium", "1.2.826.0.1.3680043.2.1125.1.6", true, 512,
                     512, medium, sizeof(medium)) == 0);

    spool__no_tmpfile = path == ON_RENAME;
    CHECK(spool_open(spool_dir, SPOOL_OPEN_OWNER, &spool, err, sizeof(err)) ==
          0);
    CHECK(spool_uses_tmpfile(spool) == (path == ON_TMPFILE));
    CHECK(spool_recover(spool, &rec, err, sizeof(err)) == 0);
    CHECK(scp_global_init(err, sizeof(err)) == 0);

    port = free_port();
    CHECK(port > 0);
    memset(&params, 0, sizeof(params));
    params.ae_title = "STOWBRIDGE";
    params.port = (uint16_t)port;
    params.max_associations = 4;
    params.max_pdu = 16384;
    params.timeout_s = 10;
    params.spool = spool;
    params.min_free_mb = 0;
    CHECK_MSG(scp_new(&params, &srv.scp, err, sizeof(err)) == 0, "%s", err);

    /* The hooks go in before the server thread starts (which orders them
     * before its reads). */
    real_openat = spool__io.openat;
    real_write = spool__io.write;
    real_fsync = spool__io.fsync;
    real_renameat = spool__io.renameat;
    real_close = spool__io.close;
    real_linkat = spool__io.linkat;
    real_fsetxattr = spool__io.fsetxattr;
    spool__io.openat = fault_openat;
    spool__io.linkat = fault_linkat;
    spool__io.fsetxattr = fault_fsetxattr;
    spool__io.write = fault_write;
    spool__io.fsync = fault_fsync;
    spool__io.renameat = fault_renameat;
    spool__io.close = fault_close;
    CHECK(pthread_create(&srv.thread, NULL, server_main, &srv) == 0);

    /* A healthy store first: the fixture and the path work. */
    fault_arm(FAULT_NONE, 0, 0);
    out = run_storescu(port, file);
    CHECK_MSG(stored_ok(out), "healthy store: %s", out);
    CHECK(count_entries(spool_dir, "incoming") == 1);
    /* No meta/ sidecar on the receive path: the entry is labelled. */
    CHECK(count_entries(spool_dir, "meta") == 0);
    {
        char id[SPOOL_ID_MAX];
        struct spool_meta label;
        CHECK(first_entry_id(spool_dir, "incoming", id) == 0 &&
              spool_meta_read(spool, id, &label) == 0 &&
              strcmp(label.study_uid, "1.2.826.0.1.3680043.2.1125.1.1") == 0 &&
              strcmp(label.sop_uid, "1.2.826.0.1.3680043.2.1125.1.3") == 0 &&
              strcmp(label.calling_ae, "FAULTSCU") == 0);
    }
    free(out);
    empty_dir(spool_dir, "incoming");

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct fault_case *fc = &cases[i];

        if ((fc->paths & path) == 0)
            continue;
        fault_arm(fc->op, fc->nth, fc->error);
        out = run_storescu(port, file);
        CHECK_MSG(atomic_load(&fault.fired) == 1, "%s: fault did not fire",
                  fc->name);
        if (fc->stores) {
            /* Not load-bearing: stored, the label kept in meta/. */
            CHECK_MSG(stored_ok(out), "%s: expected 0000, storescu said: %s",
                      fc->name, out);
            CHECK_MSG(count_entries(spool_dir, "incoming") == 1 &&
                          count_entries(spool_dir, "meta") == 1,
                      "%s: not one entry with its meta/ file", fc->name);
            free(out);
            empty_dir(spool_dir, "incoming");
            empty_dir(spool_dir, "meta");
            continue;
        }
        CHECK_MSG(refused_out_of_resources(out) && !stored_ok(out),
                  "%s: expected A700, storescu said: %s", fc->name, out);
        CHECK_MSG(count_entries(spool_dir, "incoming") == 0,
                  "%s: incoming/ not empty", fc->name);
        CHECK_MSG(count_entries(spool_dir, "tmp") == 0, "%s: tmp/ not empty",
                  fc->name);
        free(out);

        /* The same SCP keeps serving once the disk is healthy again. */
        fault_arm(FAULT_NONE, 0, 0);
        out = run_storescu(port, file);
        CHECK_MSG(stored_ok(out), "%s: store after the fault failed: %s",
                  fc->name, out);
        CHECK(count_entries(spool_dir, "incoming") == 1);
        free(out);
        empty_dir(spool_dir, "incoming");
    }

    /* A900: StudyInstanceUID missing. */
    fault_arm(FAULT_NONE, 0, 0);
    out = run_storescu(port, nostudy);
    CHECK_MSG(strstr(out, "Error: DataSetDoesNotMatchSOPClass") != NULL ||
                  strstr(out, "0xa900") != NULL,
              "missing study UID: %s", out);
    CHECK(count_entries(spool_dir, "incoming") == 0);
    CHECK(count_entries(spool_dir, "tmp") == 0);
    free(out);

    /* A900: the command names another SOP Instance UID than the data. */
    out = run_craft_scu(port, "mismatch", file);
    CHECK_MSG(strstr(out, "status=0xA900") != NULL, "mismatch: %s", out);
    CHECK(count_entries(spool_dir, "incoming") == 0);
    CHECK(count_entries(spool_dir, "tmp") == 0);
    free(out);

    /* C000: the data set cannot be parsed. */
    out = run_craft_scu(port, "garbage", file);
    CHECK_MSG(strstr(out, "status=0xC000") != NULL, "garbage: %s", out);
    CHECK(count_entries(spool_dir, "incoming") == 0);
    CHECK(count_entries(spool_dir, "tmp") == 0);
    free(out);

    /* The association-level failures did not hurt the SCP. */
    out = run_storescu(port, file);
    CHECK_MSG(stored_ok(out), "store after crafted ones: %s", out);
    free(out);
    empty_dir(spool_dir, "incoming");

    atomic_store(&stop_flag, true);
    pthread_join(srv.thread, NULL);
    scp_free(srv.scp);

    /* Admission: more free space demanded than any disk has. */
    atomic_store(&stop_flag, false);
    port = free_port();
    params.port = (uint16_t)port;
    params.min_free_mb = UINT64_C(1) << 40;
    CHECK_MSG(scp_new(&params, &srv.scp, err, sizeof(err)) == 0, "%s", err);
    CHECK(pthread_create(&srv.thread, NULL, server_main, &srv) == 0);
    out = run_storescu(port, file);
    CHECK_MSG(refused_out_of_resources(out), "admission: %s", out);
    CHECK(count_entries(spool_dir, "incoming") == 0);
    CHECK(count_entries(spool_dir, "tmp") == 0);
    free(out);
    atomic_store(&stop_flag, true);
    pthread_join(srv.thread, NULL);
    scp_free(srv.scp);

    /* An association released by a peer that keeps its socket. */
    atomic_store(&stop_flag, false);
    port = free_port();
    params.port = (uint16_t)port;
    params.min_free_mb = 0;
    params.max_associations = 1;
    params.timeout_s = 3;
    CHECK_MSG(scp_new(&params, &srv.scp, err, sizeof(err)) == 0, "%s", err);
    CHECK(pthread_create(&srv.thread, NULL, server_main, &srv) == 0);
    test_release_hold(&srv, port, params.timeout_s, file);
    atomic_store(&stop_flag, true);
    pthread_join(srv.thread, NULL);
    scp_free(srv.scp);

    spool_close(spool);
    test_journal_entry_fault(dir, small, file, &params);
    test_big_holds(dir, medium, &params);
    spool__io_reset();
    {
        char cmd[8600];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        (void)!system(cmd);
    }
    return tap_done();
}
