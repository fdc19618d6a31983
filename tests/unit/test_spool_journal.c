/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_spool_journal - the spool's intake journal (spool/journal.h):
 * commits through it (contents and labels exactly as without it, the
 * file path for instances too big for it); replay at start of entries a
 * crash lost or damaged (missing, truncated, overwritten, in another
 * state), and nothing replayed after a checkpoint or a clean close; a
 * torn last record never replayed; segments reused round the ring with
 * no stale record coming back; resize and removal; the group commit of
 * concurrent commits (shared fdatasyncs); and fault injection on every
 * new call: pwrite, pread, fdatasync, syncfs (the commit refused, nothing
 * in incoming/, the journal stops and commits go file by file, the
 * daemon's next start restores what the files lack); instances held in
 * memory (spool_commit_held(), spool_publish_held()): durable before
 * their entry exists, restored after a crash or a failed entry write.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "spool/journal.h"
#include "spool/spool.h"
#include "spool/spool_int.h"
#include "tap.h"

static char root[64];
static char err[512];

static void reset_root(void)
{
    char cmd[200];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'; mkdir -m 0700 '%s'", root, root);
    (void)!system(cmd);
}

/* A deterministic body of @len bytes for entry number @k. */
static unsigned char *body_at(unsigned char *b, unsigned k, size_t len)
{
    uint32_t x = 2166136261u ^ k;

    for (size_t i = 0; b != NULL && i < len; i++) {
        x = x * 16777619u + 7u;
        b[i] = (unsigned char)(x >> 24);
    }
    return b;
}

static unsigned char *body(unsigned k, size_t len)
{
    return body_at(malloc(len), k, len);
}

/* The same on a page boundary, as an association's receive buffer is
 * (the journal writes such data in place). */
static unsigned char *body_aligned(unsigned k, size_t len)
{
    void *b = NULL;

    if (posix_memalign(&b, 4096, len > 0 ? len : 1) != 0)
        return NULL;
    return body_at(b, k, len);
}

/* Opens as the daemon does: open, recover, start the journal. */
static struct spool *open_daemon(unsigned journal_mb,
                                 struct spool_recovery *rec)
{
    struct spool *spool = NULL;
    struct spool_recovery dummy;

    if (spool_open(root, SPOOL_OPEN_OWNER, &spool, err, sizeof(err)) < 0) {
        CHECK_MSG(0, "open: %s", err);
        return NULL;
    }
    if (spool_recover(spool, rec != NULL ? rec : &dummy, err, sizeof(err)) <
        0) {
        CHECK_MSG(0, "recover: %s", err);
        spool_close(spool);
        return NULL;
    }
    /* Only the tests' own calls (and a full quarter) checkpoint. */
    if (spool_journal_start(spool, journal_mb, 3600u * 1000u, 0, err,
                            sizeof(err)) < 0) {
        CHECK_MSG(0, "journal: %s", err);
        spool_close(spool);
        return NULL;
    }
    return spool;
}

/* Commits entry number @k (@len bytes), labelled with a SOP UID that
 * names it. */
static int commit_body(struct spool *spool, unsigned k, size_t len,
                       char id[SPOOL_ID_MAX])
{
    struct spool_meta label;
    unsigned char *b = body(k, len);
    int fd, r;

    if (b == NULL)
        return -ENOMEM;
    memset(&label, 0, sizeof(label));
    snprintf(label.study_uid, sizeof(label.study_uid), "1.2.3");
    snprintf(label.sop_uid, sizeof(label.sop_uid), "1.2.3.%u", k);
    snprintf(label.calling_ae, sizeof(label.calling_ae), "MODALITY");
    r = spool_tmp_create(spool, id, &fd, err, sizeof(err));
    if (r == 0) {
        r = spool_write_all(fd, b, len);
        if (r < 0)
            spool_discard(spool, id, fd);
        else
            r = spool_commit_labelled(spool, id, fd, &label, err, sizeof(err));
    }
    free(b);
    return r;
}

static char *entry_path(enum spool_state state, const char *id)
{
    static char path[256];

    snprintf(path, sizeof(path), "%.63s/%.15s/%.47s.dcm", root,
             spool_state_name(state), id);
    return path;
}

/* True if entry @id in @state holds exactly body @k of @len bytes and its
 * label names SOP 1.2.3.<k>. */
static bool entry_is(struct spool *spool, enum spool_state state,
                     const char *id, unsigned k, size_t len)
{
    unsigned char *want = body(k, len);
    unsigned char *got = malloc(len + 1);
    struct spool_meta meta;
    char sop[32];
    bool same = false;
    FILE *f = fopen(entry_path(state, id), "rb");

    if (f != NULL && want != NULL && got != NULL) {
        size_t n = fread(got, 1, len + 1, f);
        same = n == len && memcmp(got, want, len) == 0;
    }
    if (f != NULL)
        fclose(f);
    free(want);
    free(got);
    snprintf(sop, sizeof(sop), "1.2.3.%u", k);
    return same && spool_meta_read(spool, id, &meta) == 0 &&
           strcmp(meta.sop_uid, sop) == 0 &&
           strcmp(meta.calling_ae, "MODALITY") == 0;
}

/* Closes @spool as a crash would leave it: no final checkpoint. */
static void crash_close(struct spool *spool)
{
    spool__journal_crash_on_close = true;
    spool_close(spool);
    spool__journal_crash_on_close = false;
}

static unsigned count_files(const char *sub)
{
    char cmd[256];
    unsigned n = 0;
    FILE *p;

    snprintf(cmd, sizeof(cmd), "ls -A '%s/%s' 2>/dev/null | wc -l", root, sub);
    p = popen(cmd, "r");
    if (p == NULL)
        return 9999;
    if (fscanf(p, "%u", &n) != 1)
        n = 9999;
    pclose(p);
    return n;
}

/* Commits go through the journal; contents and labels as without it. */
static void test_commit(void)
{
    struct spool *spool;
    char id[4][SPOOL_ID_MAX];
    static const size_t sizes[4] = { 1, 4096, 526 * 1024, 1536 * 1024 };
    uint64_t records, flushes, ckpts;
    struct stat st;
    char path[300];

    reset_root();
    spool = open_daemon(8, NULL);
    if (spool == NULL)
        return;
    CHECK(spool_uses_journal(spool));
    snprintf(path, sizeof(path), "%s/journal/seg.0", root);
    CHECK_MSG(stat(path, &st) == 0 && st.st_size == 2 * 1024 * 1024,
              "8 MiB: four segments of 2 MiB");
    for (unsigned k = 0; k < 4; k++)
        CHECK_MSG(commit_body(spool, k, sizes[k], id[k]) == 0, "%u: %s", k,
                  err);
    for (unsigned k = 0; k < 4; k++)
        CHECK_MSG(entry_is(spool, SPOOL_INCOMING, id[k], k, sizes[k]),
                  "entry %u intact with its label", k);
    spool__journal_counts_of(spool, &records, &flushes, &ckpts);
    CHECK_MSG(records == 2,
              "two through the journal (a file over 256 KiB is not copied "
              "into it: the file path), got %llu",
              (unsigned long long)records);
    CHECK_MSG(flushes == 2, "one fdatasync each, got %llu",
              (unsigned long long)flushes);
    struct spool_commit_stats cs;
    spool_commit_counts(spool, &cs);
    CHECK(cs.journal_up && cs.journal_commits == 2 && cs.file_commits == 2 &&
          cs.journal_flushes == 2);
    CHECK(count_files("meta") == 0 && count_files("tmp") == 0);
    spool_close(spool);

    /* A clean close checkpointed: nothing to replay. */
    struct spool_recovery rec;
    spool = open_daemon(8, &rec);
    CHECK_MSG(rec.journal_records == 0 && rec.journal_restored == 0,
              "clean close: %u records replayed", rec.journal_records);
    spool_close(spool);

    /* Without a journal (journal_mb 0) the directory goes. */
    spool = open_daemon(0, NULL);
    CHECK(spool != NULL && !spool_uses_journal(spool));
    snprintf(path, sizeof(path), "%s/journal", root);
    CHECK(access(path, F_OK) < 0 && errno == ENOENT);
    for (unsigned k = 0; k < 4; k++)
        CHECK(spool != NULL &&
              entry_is(spool, SPOOL_INCOMING, id[k], k, sizes[k]));
    spool_close(spool);
}

/* A crash before the checkpoint: what the files lack comes back. */
static void test_replay(void)
{
    enum { N = 6 };
    struct spool *spool;
    struct spool_recovery rec;
    char id[N][SPOOL_ID_MAX];
    const size_t len = 100000;
    char cmd[600];

    reset_root();
    spool = open_daemon(8, NULL);
    if (spool == NULL)
        return;
    for (unsigned k = 0; k < N; k++)
        CHECK_MSG(commit_body(spool, k, len, id[k]) == 0, "%s", err);
    /* Moved on by the uploader before the crash. */
    CHECK(spool_move(spool, id[3], SPOOL_INCOMING, SPOOL_DEFERRED, err,
                     sizeof(err)) == 0);
    crash_close(spool);

    /* What a power cut can leave: a name with no data, a short file, a
     * file with other bytes, a lost name (also in another state). */
    (void)!truncate(entry_path(SPOOL_INCOMING, id[0]), 0);
    (void)!truncate(entry_path(SPOOL_INCOMING, id[1]), 5000);
    snprintf(cmd, sizeof(cmd),
             "dd if=/dev/zero of='%s' bs=1 count=100 seek=2000 "
             "conv=notrunc 2>/dev/null",
             entry_path(SPOOL_DEFERRED, id[3]));
    (void)!system(cmd);
    (void)unlink(entry_path(SPOOL_INCOMING, id[4]));
    spool = open_daemon(8, &rec);
    if (spool == NULL)
        return;
    CHECK_MSG(rec.journal_records == N, "%u records newer than the checkpoint",
              rec.journal_records);
    CHECK_MSG(rec.journal_restored == 4, "4 entries restored, got %u",
              rec.journal_restored);
    CHECK(rec.set_aside == 0);
    for (unsigned k = 0; k < N; k++)
        CHECK_MSG(entry_is(spool, k == 3 ? SPOOL_DEFERRED : SPOOL_INCOMING,
                           id[k], k, len),
                  "entry %u intact after the replay", k);
    CHECK(count_files("incoming") == N - 1 && count_files("deferred") == 1);
    CHECK(count_files("tmp") == 0);
    crash_close(spool);

    /* The replay checkpointed: a second crash replays nothing. */
    spool = open_daemon(8, &rec);
    CHECK_MSG(rec.journal_records == 0, "replayed again: %u",
              rec.journal_records);
    /* An entry delivered (removed) after that, then a checkpoint: gone
     * for good, never resurrected. */
    CHECK(spool_remove(spool, id[5], SPOOL_INCOMING, err, sizeof(err)) == 0);
    CHECK(commit_body(spool, 99, 10, id[5]) == 0);
    CHECK(spool__journal_checkpoint(spool) == 0);
    (void)unlink(entry_path(SPOOL_INCOMING, id[5]));
    crash_close(spool);
    spool = open_daemon(8, &rec);
    CHECK(rec.journal_records == 0 && count_files("incoming") == N - 2);
    spool_close(spool);
}

/* A torn last record (never acknowledged) is not replayed. */
static void test_torn_record(void)
{
    struct spool *spool;
    struct spool_recovery rec;
    char id[3][SPOOL_ID_MAX];
    char path[300];
    const size_t len = 10000; /* 4096 + 12288 bytes per record */
    int fd;

    reset_root();
    spool = open_daemon(8, NULL);
    if (spool == NULL)
        return;
    for (unsigned k = 0; k < 3; k++)
        CHECK(commit_body(spool, k, len, id[k]) == 0);
    crash_close(spool);
    for (unsigned k = 0; k < 3; k++)
        (void)unlink(entry_path(SPOOL_INCOMING, id[k]));
    /* Damage the third record's data, as a write cut by the power. */
    snprintf(path, sizeof(path), "%s/journal/seg.0", root);
    fd = open(path, O_WRONLY);
    CHECK(fd >= 0 && pwrite(fd, "torn", 4, 2 * 16384 + 4096 + 100) == 4);
    if (fd >= 0)
        close(fd);
    spool = open_daemon(8, &rec);
    if (spool == NULL)
        return;
    CHECK_MSG(rec.journal_records == 2 && rec.journal_restored == 2,
              "two whole records replayed, the torn one not: %u/%u",
              rec.journal_records, rec.journal_restored);
    CHECK(entry_is(spool, SPOOL_INCOMING, id[0], 0, len));
    CHECK(entry_is(spool, SPOOL_INCOMING, id[1], 1, len));
    CHECK(access(entry_path(SPOOL_INCOMING, id[2]), F_OK) < 0);
    spool_close(spool);
}

/* Round the ring several times: checkpoints free segments, a full journal
 * sends commits the file's way, no stale record ever comes back. */
static void test_ring(void)
{
    enum { N = 60 };
    struct spool *spool;
    struct spool_recovery rec;
    char id[N][SPOOL_ID_MAX];
    const size_t len = 300 * 1024; /* 8 MiB journal: ~26 records a round */
    uint64_t records, flushes, ckpts;
    unsigned intact = 0;

    reset_root();
    spool = open_daemon(8, NULL);
    if (spool == NULL)
        return;
    /* Records of 300 KiB from files, as held instances make them. */
    spool__journal_file_max = UINT64_MAX;
    for (unsigned k = 0; k < N; k++)
        CHECK_MSG(commit_body(spool, k, len, id[k]) == 0, "%u: %s", k, err);
    spool__journal_counts_of(spool, &records, &flushes, &ckpts);
    CHECK_MSG(records > 26 && ckpts > 0,
              "%llu records, %llu checkpoints: the ring went round",
              (unsigned long long)records, (unsigned long long)ckpts);
    printf("# ring: %d commits, %llu through the journal, %llu checkpoints\n",
           N, (unsigned long long)records, (unsigned long long)ckpts);
    crash_close(spool);
    /* Lose every file: only records after the last checkpoint return. */
    for (unsigned k = 0; k < N; k++)
        (void)unlink(entry_path(SPOOL_INCOMING, id[k]));
    spool = open_daemon(8, &rec);
    if (spool == NULL)
        return;
    for (unsigned k = 0; k < N; k++)
        if (access(entry_path(SPOOL_INCOMING, id[k]), F_OK) == 0) {
            CHECK_MSG(entry_is(spool, SPOOL_INCOMING, id[k], k, len),
                      "restored entry %u intact", k);
            intact++;
        }
    CHECK_MSG(intact == rec.journal_restored &&
                  rec.journal_restored == rec.journal_records &&
                  rec.journal_records < 26,
              "%u restored of %u records", rec.journal_restored,
              rec.journal_records);
    spool_close(spool);

    /* Resize: the segments follow spool.journal_mb. */
    spool = open_daemon(16, NULL);
    if (spool != NULL) {
        struct stat st;
        char path[300];
        snprintf(path, sizeof(path), "%s/journal/seg.3", root);
        CHECK(stat(path, &st) == 0 && st.st_size == 4 * 1024 * 1024);
        CHECK(commit_body(spool, 7, 1536 * 1024, id[0]) == 0);
        spool__journal_counts_of(spool, &records, &flushes, &ckpts);
        CHECK_MSG(records == 1, "1.5 MiB fits half of a 4 MiB segment");
        spool_close(spool);
    }
    /* A size whose quarter is no whole MiB: segments of exactly that. */
    spool = open_daemon(10, NULL);
    if (spool != NULL) {
        struct stat st;
        char path[300];
        snprintf(path, sizeof(path), "%s/journal/seg.1", root);
        CHECK_MSG(stat(path, &st) == 0 && st.st_size == 2621440,
                  "10 MiB: segments of 2.5 MiB");
        spool_close(spool);
    }
    spool__journal_file_max = 256u * 1024u;
}

/* ---- group commit ---------------------------------------------------- */

#define GROUP_THREADS 8
#define GROUP_COMMITS 40

static int slow_fdatasync(int fd)
{
    usleep(3000); /* a disk flush */
    return fdatasync(fd);
}

struct group_worker {
    struct spool *spool;
    pthread_barrier_t *start;
    unsigned base;
    int failures;
};

static void *group_main(void *arg)
{
    struct group_worker *w = arg;
    char id[SPOOL_ID_MAX];

    pthread_barrier_wait(w->start);
    for (unsigned i = 0; i < GROUP_COMMITS; i++)
        if (commit_body(w->spool, w->base + i, 2000, id) < 0)
            w->failures++;
    return NULL;
}

static void test_group_commit(void)
{
    struct group_worker workers[GROUP_THREADS];
    pthread_t threads[GROUP_THREADS];
    pthread_barrier_t start;
    uint64_t records, flushes, ckpts;
    struct spool *spool;

    reset_root();
    spool = open_daemon(8, NULL);
    if (spool == NULL)
        return;
    spool__io.fdatasync = slow_fdatasync;
    pthread_barrier_init(&start, NULL, GROUP_THREADS);
    for (int t = 0; t < GROUP_THREADS; t++) {
        workers[t].spool = spool;
        workers[t].start = &start;
        workers[t].base = (unsigned)t * 1000u;
        workers[t].failures = 0;
        pthread_create(&threads[t], NULL, group_main, &workers[t]);
    }
    for (int t = 0; t < GROUP_THREADS; t++) {
        pthread_join(threads[t], NULL);
        CHECK(workers[t].failures == 0);
    }
    pthread_barrier_destroy(&start);
    spool__io_reset();
    spool__journal_counts_of(spool, &records, &flushes, &ckpts);
    CHECK(count_files("incoming") == GROUP_THREADS * GROUP_COMMITS);
    CHECK_MSG(records == GROUP_THREADS * GROUP_COMMITS &&
                  flushes * 2 <= records,
              "%llu fdatasyncs for %llu records: not shared",
              (unsigned long long)flushes, (unsigned long long)records);
    printf("# journal group commit: %llu fdatasyncs for %llu records\n",
           (unsigned long long)flushes, (unsigned long long)records);
    spool_close(spool);
}

/* ---- faults ------------------------------------------------------------ */

enum fault_op { F_NONE, F_PWRITE, F_PREAD, F_FDATASYNC, F_SYNCFS };
static enum fault_op fault_op;
static int fault_errno;

static ssize_t f_pwrite(int fd, const void *b, size_t n, off_t off)
{
    if (fault_op == F_PWRITE) {
        errno = fault_errno;
        return -1;
    }
    return pwrite(fd, b, n, off);
}

static ssize_t f_pwritev(int fd, const struct iovec *iov, int count, off_t off)
{
    if (fault_op == F_PWRITE) {
        errno = fault_errno;
        return -1;
    }
    return pwritev(fd, iov, count, off);
}

static ssize_t f_pread(int fd, void *b, size_t n, off_t off)
{
    if (fault_op == F_PREAD) {
        errno = fault_errno;
        return -1;
    }
    return pread(fd, b, n, off);
}

static int f_fdatasync(int fd)
{
    if (fault_op == F_FDATASYNC) {
        errno = fault_errno;
        return -1;
    }
    return fdatasync(fd);
}

/* Without a file-system journal the journal flushes with fsync(). */
static int f_fsync(int fd)
{
    if (fault_op == F_FDATASYNC) {
        errno = fault_errno;
        return -1;
    }
    return fsync(fd);
}

static int f_linkat(int olddirfd, const char *oldpath, int newdirfd,
                    const char *newpath, int flags)
{
    (void)olddirfd;
    (void)oldpath;
    (void)newdirfd;
    (void)newpath;
    (void)flags;
    errno = ENOSPC;
    return -1;
}

static int f_syncfs(int fd)
{
    if (fault_op == F_SYNCFS) {
        errno = fault_errno;
        return -1;
    }
    return syncfs(fd);
}

static void test_faults_in(enum spool__fs_mode mode)
{
    static const struct {
        enum fault_op op;
        const char *what;
    } cases[] = {
        { F_PWRITE, "pwrite" },
        { F_PREAD, "pread" },
        { F_FDATASYNC, "fdatasync" },
    };
    uint64_t records, flushes, ckpts;
    struct spool_recovery rec;
    char id[SPOOL_ID_MAX], id2[SPOOL_ID_MAX];
    struct spool *spool;

    spool__fs_mode = mode;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        reset_root();
        spool = open_daemon(8, NULL);
        if (spool == NULL)
            return;
        spool__io.pwrite = f_pwrite;
        spool__io.pread = f_pread;
        spool__io.fdatasync = f_fdatasync;
        spool__io.fsync = f_fsync;
        fault_op = cases[i].op;
        fault_errno = EIO;
        int r = commit_body(spool, 1, 5000, id);
        CHECK_MSG(r == -EIO, "%s fails: the commit is refused (%d)",
                  cases[i].what, r);
        CHECK_MSG(count_files("incoming") == 0 && count_files("tmp") == 0,
                  "%s: nothing in incoming/", cases[i].what);
        CHECK_MSG(strstr(err, cases[i].op == F_FDATASYNC ? "fdatasync"
                                                         : "record") != NULL,
                  "%s: the reason says so: %s", cases[i].what, err);
        /* The journal stopped: the next commit goes file by file. */
        fault_op = F_NONE;
        CHECK_MSG(commit_body(spool, 2, 5000, id2) == 0, "%s: then %s",
                  cases[i].what, err);
        spool__journal_counts_of(spool, &records, &flushes, &ckpts);
        CHECK_MSG(records == 1, "%s: no second record", cases[i].what);
        struct spool_commit_stats cs;
        spool_commit_counts(spool, &cs);
        CHECK_MSG(
            !cs.journal_up && cs.journal_commits == 0 && cs.file_commits == 1,
            "%s: the journal is down, one commit file by file", cases[i].what);
        CHECK(entry_is(spool, SPOOL_INCOMING, id2, 2, 5000));
        spool__io_reset();
        spool_close(spool);
        /* The next start: the healthy journal again, the entry there. */
        spool = open_daemon(8, &rec);
        CHECK(spool != NULL && spool_uses_journal(spool));
        CHECK(spool != NULL && entry_is(spool, SPOOL_INCOMING, id2, 2, 5000));
        CHECK(count_files("incoming") == 1);
        spool_close(spool);
    }

    /* syncfs fails at a checkpoint: the journal keeps its records (the
     * files may lack data), stops taking new ones, and the next start
     * verifies and restores. */
    reset_root();
    spool = open_daemon(8, NULL);
    if (spool == NULL)
        return;
    CHECK(commit_body(spool, 3, 7000, id) == 0);
    spool__io.syncfs = f_syncfs;
    fault_op = F_SYNCFS;
    fault_errno = EIO;
    CHECK(spool__journal_checkpoint(spool) == -EIO);
    fault_op = F_NONE;
    CHECK(commit_body(spool, 4, 7000, id2) == 0);
    spool__journal_counts_of(spool, &records, &flushes, &ckpts);
    CHECK_MSG(records == 1 && ckpts == 0, "after a failed syncfs: %llu/%llu",
              (unsigned long long)records, (unsigned long long)ckpts);
    spool__io_reset();
    spool_close(spool); /* its final checkpoint is skipped: broken */
    (void)!truncate(entry_path(SPOOL_INCOMING, id), 0);
    spool = open_daemon(8, &rec);
    CHECK_MSG(rec.journal_records == 1 && rec.journal_restored == 1,
              "the entry the failed syncfs may have lost is restored");
    CHECK(spool != NULL && entry_is(spool, SPOOL_INCOMING, id, 3, 7000));
    CHECK(spool != NULL && entry_is(spool, SPOOL_INCOMING, id2, 4, 7000));
    spool_close(spool);

    /* The link fails after the record is durable: refused, and its
     * record invalidated, so that no replay brings it back. */
    spool = open_daemon(8, NULL);
    spool__io.linkat = f_linkat;
    CHECK(commit_body(spool, 6, 7000, id) == -ENOSPC);
    spool__io_reset();
    CHECK(access(entry_path(SPOOL_INCOMING, id), F_OK) < 0);
    crash_close(spool);
    spool = open_daemon(8, &rec);
    CHECK_MSG(rec.journal_records == 0 &&
                  access(entry_path(SPOOL_INCOMING, id), F_OK) < 0,
              "a refused instance is not replayed (%u)", rec.journal_records);
    spool_close(spool);

    /* A replay that cannot write refuses the start (nothing is lost: the
     * records stay for the next attempt). */
    spool = open_daemon(8, NULL);
    CHECK(commit_body(spool, 5, 7000, id) == 0);
    crash_close(spool);
    (void)unlink(entry_path(SPOOL_INCOMING, id));
    {
        struct spool *s2 = NULL;
        CHECK(spool_open(root, SPOOL_OPEN_OWNER, &s2, err, sizeof(err)) == 0);
        spool__io.syncfs = f_syncfs;
        fault_op = F_SYNCFS;
        CHECK(spool_recover(s2, &rec, err, sizeof(err)) == -EIO);
        CHECK_MSG(strstr(err, "syncfs") != NULL, "%s", err);
        fault_op = F_NONE;
        spool__io_reset();
        spool_close(s2);
    }
    spool = open_daemon(8, &rec);
    CHECK_MSG(rec.journal_records == 1, "replayed on the next attempt");
    CHECK(spool != NULL && entry_is(spool, SPOOL_INCOMING, id, 5, 7000));
    spool_close(spool);
    spool__fs_mode = SPOOL__FS_DETECT;
}

/* ---- instances held in memory ------------------------------------------ */

enum held_fault { H_NONE, H_OPEN, H_WRITE, H_LINK, H_RENAME, H_CLOSE, H_LABEL };
static enum held_fault held_fault;

static int h_openat(int dirfd, const char *path, int flags, mode_t mode)
{
    if (held_fault == H_OPEN) {
        errno = EMFILE;
        return -1;
    }
    return openat(dirfd, path, flags, mode);
}

static ssize_t h_write(int fd, const void *b, size_t n)
{
    if (held_fault == H_WRITE) {
        errno = EIO;
        return -1;
    }
    return write(fd, b, n);
}

static int h_linkat(int olddirfd, const char *oldpath, int newdirfd,
                    const char *newpath, int flags)
{
    if (held_fault == H_LINK) {
        errno = ENOSPC;
        return -1;
    }
    return linkat(olddirfd, oldpath, newdirfd, newpath, flags);
}

static int h_renameat(int olddirfd, const char *oldpath, int newdirfd,
                      const char *newpath)
{
    if (held_fault == H_RENAME) {
        errno = EIO;
        return -1;
    }
    return renameat(olddirfd, oldpath, newdirfd, newpath);
}

static int h_close(int fd)
{
    int r = close(fd);
    if (held_fault == H_CLOSE) {
        errno = EIO;
        return -1;
    }
    return r;
}

static int h_fsetxattr(int fd, const char *name, const void *value, size_t size,
                       int flags)
{
    (void)fd;
    (void)name;
    (void)value;
    (void)size;
    (void)flags;
    errno = ENOTSUP;
    return -1;
}

/* Entry number @k (@len bytes) made durable from memory; *ret_body is the
 * caller's to publish and free. */
static int commit_held_body(struct spool *spool, unsigned k, size_t len,
                            char id[SPOOL_ID_MAX], uint64_t *ret_seq,
                            struct spool_meta *label, unsigned char **ret_body)
{
    int r;

    memset(label, 0, sizeof(*label));
    snprintf(label->study_uid, sizeof(label->study_uid), "1.2.3");
    snprintf(label->sop_uid, sizeof(label->sop_uid), "1.2.3.%u", k);
    snprintf(label->calling_ae, sizeof(label->calling_ae), "MODALITY");
    *ret_body = body_aligned(k, len);
    if (*ret_body == NULL || spool_new_id(id) < 0)
        return -ENOMEM;
    r = spool_commit_held(spool, id, *ret_body, len, label, ret_seq, err,
                          sizeof(err));
    if (r < 0) {
        free(*ret_body);
        *ret_body = NULL;
    }
    return r;
}

/* A held instance is durable before its entry exists; the entry comes
 * after (spool_publish_held()); a stop or crash between the two loses
 * nothing; one too big for the journal is not taken. */
static void test_held(void)
{
    struct spool *spool;
    struct spool_recovery rec;
    struct spool_meta label;
    struct spool_commit_stats cs;
    char id[3][SPOOL_ID_MAX];
    unsigned char *b;
    uint64_t seq, records, flushes, ckpts;

    reset_root();
    spool = open_daemon(8, NULL);
    if (spool == NULL)
        return;
    size_t max = spool_held_max(spool);
    CHECK_MSG(max > 1000 * 1024 && max <= 1024 * 1024,
              "an 8 MiB journal holds instances up to 1 MiB: %zu", max);
    CHECK(commit_held_body(spool, 1, 5000, id[0], &seq, &label, &b) == 0);
    CHECK_MSG(count_files("incoming") == 0,
              "durable in the journal, no entry yet");
    CHECK(spool_publish_held(spool, id[0], seq, b, 5000, &label, err,
                             sizeof(err)) == 0);
    free(b);
    CHECK(entry_is(spool, SPOOL_INCOMING, id[0], 1, 5000));
    CHECK(count_files("tmp") == 0 && count_files("meta") == 0);
    spool_commit_counts(spool, &cs);
    CHECK(cs.journal_up && cs.journal_commits == 1 && cs.file_commits == 0);

    /* Not taken: too big (nothing written), or no data ID. */
    b = body(9, max + 1);
    CHECK(spool_new_id(id[2]) == 0);
    CHECK(b != NULL && spool_commit_held(spool, id[2], b, max + 1, &label, &seq,
                                         err, sizeof(err)) == -EAGAIN);
    CHECK(spool_commit_held(spool, "../x", b, 10, &label, &seq, err,
                            sizeof(err)) == -EINVAL);
    free(b);
    spool__journal_counts_of(spool, &records, &flushes, &ckpts);
    CHECK_MSG(records == 1, "one record, got %llu",
              (unsigned long long)records);

    /* Acknowledged, then a crash before the entry was written. */
    CHECK(commit_held_body(spool, 2, 70000, id[1], &seq, &label, &b) == 0);
    free(b);
    crash_close(spool);
    spool = open_daemon(8, &rec);
    if (spool == NULL)
        return;
    CHECK_MSG(rec.journal_restored == 1, "the unwritten entry is restored: %u",
              rec.journal_restored);
    CHECK(entry_is(spool, SPOOL_INCOMING, id[0], 1, 5000));
    CHECK(entry_is(spool, SPOOL_INCOMING, id[1], 2, 70000));

    /* Data of whole blocks (no partial last block), and data that is not
     * on a block boundary in memory (copied into an aligned buffer),
     * acknowledged and lost before their entries: both restored. */
    {
        char whole_id[SPOOL_ID_MAX], odd_id[SPOOL_ID_MAX];
        unsigned char *raw = malloc(9001);
        CHECK(commit_held_body(spool, 6, 8192, whole_id, &seq, &label, &b) ==
              0);
        free(b);
        CHECK(raw != NULL && spool_new_id(odd_id) == 0);
        snprintf(label.sop_uid, sizeof(label.sop_uid), "1.2.3.7");
        if (raw != NULL) {
            body_at(raw + 1, 7, 9000);
            CHECK(spool_commit_held(spool, odd_id, raw + 1, 9000, &label, &seq,
                                    err, sizeof(err)) == 0);
        }
        free(raw);
        crash_close(spool);
        spool = open_daemon(8, &rec);
        if (spool == NULL)
            return;
        CHECK_MSG(rec.journal_restored == 2 &&
                      entry_is(spool, SPOOL_INCOMING, whole_id, 6, 8192) &&
                      entry_is(spool, SPOOL_INCOMING, odd_id, 7, 9000),
                  "whole blocks and unaligned data restored (%u)",
                  rec.journal_restored);
    }

    /* A clean stop between the two: the checkpoint keeps the record. */
    CHECK(commit_held_body(spool, 3, 3000, id[2], &seq, &label, &b) == 0);
    free(b);
    spool_close(spool);
    spool = open_daemon(8, &rec);
    CHECK(spool != NULL && rec.journal_restored == 1 &&
          entry_is(spool, SPOOL_INCOMING, id[2], 3, 3000));

    /* No room for the label: the entry is written, its label in meta/. */
    spool__io.fsetxattr = h_fsetxattr;
    CHECK(commit_held_body(spool, 4, 3000, id[0], &seq, &label, &b) == 0);
    CHECK(spool_publish_held(spool, id[0], seq, b, 3000, &label, err,
                             sizeof(err)) == 0);
    free(b);
    spool__io_reset();
    CHECK(count_files("meta") == 1 &&
          entry_is(spool, SPOOL_INCOMING, id[0], 4, 3000));
    spool_close(spool);

    /* The record's write or flush fails: not durable, refused (the
     * caller answers A700), nothing in incoming/, the journal stops. */
    static const enum fault_op record_faults[] = { F_PWRITE, F_FDATASYNC };
    for (size_t i = 0; i < 2; i++) {
        unsigned before;
        reset_root();
        spool = open_daemon(8, NULL);
        if (spool == NULL)
            return;
        before = count_files("incoming");
        spool__io.pwrite = f_pwrite;
        spool__io.pwritev = f_pwritev;
        spool__io.fdatasync = f_fdatasync;
        spool__io.fsync = f_fsync;
        fault_op = record_faults[i];
        fault_errno = EIO;
        CHECK_MSG(commit_held_body(spool, 5, 4000, id[1], &seq, &label, &b) ==
                      -EIO,
                  "held, %s fails: refused", i == 0 ? "pwrite" : "fdatasync");
        fault_op = F_NONE;
        spool__io_reset();
        spool_commit_counts(spool, &cs);
        CHECK(count_files("incoming") == before && !cs.journal_up &&
              spool_held_max(spool) == 0 && cs.journal_commits == 0);
        crash_close(spool);
        spool = open_daemon(8, &rec);
        CHECK_MSG(rec.journal_restored == 0 && count_files("incoming") == 0,
                  "a refused record is never replayed (%u)",
                  rec.journal_restored);
        spool_close(spool);
    }
}

/* Writing the entry fails after the answer: the record stays, the
 * journal stops (file by file from then on), the next start restores. */
static void test_held_faults_in(bool no_tmpfile)
{
    static const struct {
        enum held_fault fault;
        const char *what;
        bool tmpfile; /* the call exists on the O_TMPFILE path */
        bool rename;  /* ... on the tmp/ + rename path */
    } cases[] = {
        { H_OPEN, "open", true, true },    { H_WRITE, "write", true, true },
        { H_LINK, "linkat", true, false }, { H_RENAME, "rename", false, true },
        { H_CLOSE, "close", true, true },
    };
    struct spool *spool;
    struct spool_recovery rec;
    struct spool_meta label;
    struct spool_commit_stats cs;
    char id[SPOOL_ID_MAX], id2[SPOOL_ID_MAX];
    unsigned char *b;
    uint64_t seq;

    spool__no_tmpfile = no_tmpfile;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (no_tmpfile ? !cases[i].rename : !cases[i].tmpfile)
            continue;
        reset_root();
        spool = open_daemon(8, NULL);
        if (spool == NULL)
            break;
        CHECK(spool_uses_tmpfile(spool) == !no_tmpfile);
        CHECK(commit_held_body(spool, 5, 9000, id, &seq, &label, &b) == 0);
        spool__io.openat = h_openat;
        spool__io.write = h_write;
        spool__io.linkat = h_linkat;
        spool__io.renameat = h_renameat;
        spool__io.close = h_close;
        held_fault = cases[i].fault;
        int r = spool_publish_held(spool, id, seq, b, 9000, &label, err,
                                   sizeof(err));
        held_fault = H_NONE;
        spool__io_reset();
        free(b);
        CHECK_MSG(r < 0 && strstr(err, cases[i].what) != NULL,
                  "%s fails: said so (%d: %s)", cases[i].what, r, err);
        CHECK_MSG(count_files("incoming") == 0 && count_files("tmp") == 0,
                  "%s: no entry, nothing left in tmp/", cases[i].what);
        spool_commit_counts(spool, &cs);
        CHECK_MSG(!cs.journal_up && spool_held_max(spool) == 0,
                  "%s: the journal stopped taking records", cases[i].what);
        /* The next commit goes file by file. */
        CHECK(commit_body(spool, 6, 9000, id2) == 0);
        CHECK(entry_is(spool, SPOOL_INCOMING, id2, 6, 9000));
        spool_close(spool);
        spool = open_daemon(8, &rec);
        if (spool == NULL)
            break;
        CHECK_MSG(rec.journal_restored == 1 &&
                      entry_is(spool, SPOOL_INCOMING, id, 5, 9000),
                  "%s: the next start restores the entry (%u)", cases[i].what,
                  rec.journal_restored);
        CHECK(entry_is(spool, SPOOL_INCOMING, id2, 6, 9000));
        CHECK(count_files("incoming") == 2 && spool_held_max(spool) > 0);
        spool_close(spool);
    }
    spool__no_tmpfile = false;
}

static atomic_int einval_left;

static ssize_t einval_pwrite(int fd, const void *b, size_t n, off_t off)
{
    if (atomic_fetch_sub(&einval_left, 1) > 0) {
        errno = EINVAL;
        return -1;
    }
    return pwrite(fd, b, n, off);
}

static ssize_t einval_pwritev(int fd, const struct iovec *iov, int count,
                              off_t off)
{
    if (atomic_fetch_sub(&einval_left, 1) > 0) {
        errno = EINVAL;
        return -1;
    }
    return pwritev(fd, iov, count, off);
}

static atomic_int short_left;

/* The first call writes only the first piece and one block of the
 * second (block-aligned, as a direct write may stop): the caller must go
 * on from the middle of a piece. */
static ssize_t short_pwritev(int fd, const struct iovec *iov, int count,
                             off_t off)
{
    if (count >= 2 && iov[1].iov_len > 4096 &&
        atomic_fetch_sub(&short_left, 1) > 0) {
        struct iovec part[2] = { iov[0], { iov[1].iov_base, 4096 } };
        return pwritev(fd, part, 2, off);
    }
    return pwritev(fd, iov, count, off);
}

/* A held record whose pwritev() stops short is written to its end, and
 * comes back whole after a crash. */
static void test_held_short_write(void)
{
    struct spool *spool;
    struct spool_recovery rec;
    struct spool_meta label;
    char id[SPOOL_ID_MAX];
    unsigned char *b = NULL;
    uint64_t seq;

    reset_root();
    spool = open_daemon(8, NULL);
    if (spool == NULL)
        return;
    spool__io.pwritev = short_pwritev;
    atomic_store(&short_left, 1);
    CHECK_MSG(commit_held_body(spool, 11, 20000, id, &seq, &label, &b) == 0,
              "held, a short pwritev: committed (%s)", err);
    CHECK(atomic_load(&short_left) == 0);
    free(b);
    spool__io_reset();
    crash_close(spool);
    spool = open_daemon(8, &rec);
    CHECK_MSG(spool != NULL && rec.journal_restored == 1 &&
                  entry_is(spool, SPOOL_INCOMING, id, 11, 20000),
              "the record was written whole: restored intact (%u)",
              rec.journal_restored);
    spool_close(spool);
}

/* Records are written with O_DIRECT; a file system that refuses a direct
 * write (EINVAL) has the journal go on through the page cache, with no
 * commit refused and nothing lost: a record from a file (pwrite) and one
 * held in memory, written in place (pwritev). */
static void test_direct_fallback(void)
{
    struct spool *spool;
    struct spool_recovery rec;
    struct spool_commit_stats cs;
    char id[2][SPOOL_ID_MAX];
    uint64_t records, flushes, ckpts;

    reset_root();
    spool = open_daemon(8, NULL);
    if (spool == NULL)
        return;
    spool__io.pwrite = einval_pwrite;
    atomic_store(&einval_left, 1);
    CHECK_MSG(commit_body(spool, 7, 12345, id[0]) == 0,
              "EINVAL once: written again without O_DIRECT (%s)", err);
    CHECK_MSG(commit_body(spool, 8, 300, id[1]) == 0, "then %s", err);
    spool__io_reset();
    spool__journal_counts_of(spool, &records, &flushes, &ckpts);
    spool_commit_counts(spool, &cs);
    CHECK_MSG(records == 2 && cs.journal_up && cs.journal_commits == 2,
              "both through the journal, still up (%llu)",
              (unsigned long long)records);
    crash_close(spool);
    (void)unlink(entry_path(SPOOL_INCOMING, id[0]));
    (void)unlink(entry_path(SPOOL_INCOMING, id[1]));
    spool = open_daemon(8, &rec);
    CHECK_MSG(rec.journal_restored == 2, "both restored from their records: %u",
              rec.journal_restored);
    CHECK(spool != NULL && entry_is(spool, SPOOL_INCOMING, id[0], 7, 12345) &&
          entry_is(spool, SPOOL_INCOMING, id[1], 8, 300));
    spool_close(spool);

    /* A held instance written in place: the same. */
    {
        struct spool_meta label;
        unsigned char *b = NULL;
        uint64_t seq;

        reset_root();
        spool = open_daemon(8, NULL);
        if (spool == NULL)
            return;
        spool__io.pwritev = einval_pwritev;
        atomic_store(&einval_left, 1);
        CHECK_MSG(
            commit_held_body(spool, 9, 20000, id[0], &seq, &label, &b) == 0,
            "held, EINVAL once: written again without O_DIRECT (%s)", err);
        free(b);
        spool__io_reset();
        spool_commit_counts(spool, &cs);
        CHECK(cs.journal_up && cs.journal_commits == 1);
        crash_close(spool);
        spool = open_daemon(8, &rec);
        CHECK_MSG(spool != NULL && rec.journal_restored == 1 &&
                      entry_is(spool, SPOOL_INCOMING, id[0], 9, 20000),
                  "restored from its record: %u", rec.journal_restored);
        spool_close(spool);
    }
}

/* Both flushes: fdatasync() where the file system has a journal of its
 * own, futimens() + fsync() where it has none. */
static void test_faults(void)
{
    test_faults_in(SPOOL__FS_JOURNALED);
    test_faults_in(SPOOL__FS_UNJOURNALED);
}

int main(void)
{
    char cmd[128];

    strcpy(root, "/tmp/stowbridge-journal-XXXXXX");
    if (mkdtemp(root) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    CHECK(spool_crc32c(0, "123456789", 9) == 0xe3069283u);
    test_commit();
    test_replay();
    test_torn_record();
    test_ring();
    test_group_commit();
    test_faults();
    test_held();
    test_held_faults_in(false);
    test_held_faults_in(true);
    test_direct_fallback();
    test_held_short_write();
    (void)!system(cmd);
    return tap_done();
}
