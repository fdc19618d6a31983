/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_spool - the spool: layout and modes, the owner lock, the receive
 * path (create, write, commit, discard), every state transition, start-up
 * recovery, statistics, IDs, concurrent commits, and fault injection on
 * every write, fsync, rename, link, label and close of a commit, on both
 * receive paths (O_TMPFILE + linkat, and tmp/ + rename); the label that
 * replaces the receiver's meta/ sidecar; the group commit of concurrent
 * commits (shared directory fsyncs, each commit returning only after an
 * fsync that started after its own link succeeded, and a failing shared
 * fsync failing exactly the commits it covered).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "spool/spool.h"
#include "spool/spool_int.h"
#include "tap.h"

static char root[64];
static char err[512];

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

static void write_file(const char *sub, const char *name, const char *data)
{
    char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s/%s", root, sub, name);
    f = fopen(path, "w");
    if (f != NULL) {
        fputs(data, f);
        fclose(f);
    }
}

/* Creates, fills and commits one entry; returns 0 or the commit result. */
static int commit_one(struct spool *spool, const char *data,
                      char id[SPOOL_ID_MAX])
{
    int fd;
    int r = spool_tmp_create(spool, id, &fd, err, sizeof(err));

    if (r < 0)
        return r;
    r = spool_write_all(fd, data, strlen(data));
    if (r < 0) {
        spool_discard(spool, id, fd);
        return r;
    }
    return spool_commit(spool, id, fd, err, sizeof(err));
}

static void test_layout_and_lock(void)
{
    static const char *const subdirs[] = {
        "tmp", "incoming", "active", "deferred", "failed", "lost+found",
    };
    struct spool *owner = NULL;
    struct spool *second = NULL;
    struct spool *reader = NULL;
    char path[256];
    struct stat st;

    snprintf(path, sizeof(path), "%s/spool", root);
    CHECK(spool_open(path, 0, &reader, err, sizeof(err)) == -ENOENT);
    CHECK_MSG(strstr(err, "does not exist") != NULL, "%s", err);

    CHECK_MSG(spool_open(path, SPOOL_OPEN_OWNER, &owner, err, sizeof(err)) == 0,
              "%s", err);
    strcat(root, "/spool");
    for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", root, subdirs[i]);
        CHECK_MSG(stat(path, &st) == 0 && S_ISDIR(st.st_mode) &&
                      (st.st_mode & 07777) == 0700,
                  "%s", path);
    }
    CHECK(strcmp(spool_dir(owner), root) == 0);

    /* A second owner (another daemon) is refused while the lock is held. */
    CHECK(spool_open(root, SPOOL_OPEN_OWNER, &second, err, sizeof(err)) ==
          -EWOULDBLOCK);
    CHECK_MSG(strstr(err, "in use by another stowbridge process") != NULL, "%s",
              err);
    CHECK(second == NULL);
    /* Tools open it without the lock. */
    CHECK(spool_open(root, 0, &reader, err, sizeof(err)) == 0);
    spool_close(reader);
    spool_close(owner);
    CHECK(spool_open(root, SPOOL_OPEN_OWNER, &second, err, sizeof(err)) == 0);
    spool_close(second);
    spool_close(NULL);

    /* A spool directory others may write to is refused. */
    snprintf(path, sizeof(path), "%s/failed", root);
    chmod(path, 0777);
    CHECK(spool_open(root, SPOOL_OPEN_OWNER, &second, err, sizeof(err)) ==
          -EPERM);
    CHECK_MSG(strstr(err, "failed") != NULL && strstr(err, "0777") != NULL,
              "%s", err);
    chmod(path, 0700);
}

static void test_receive_path(void)
{
    struct spool *spool = NULL;
    char id[SPOOL_ID_MAX];
    char path[256];
    char buf[64];
    struct stat st;
    FILE *f;
    int fd;

    CHECK(spool_open(root, SPOOL_OPEN_OWNER, &spool, err, sizeof(err)) == 0);
    CHECK(commit_one(spool, "DICM bytes", id) == 0);
    CHECK(spool_id_valid(id));
    CHECK(count_files("incoming") == 1);
    CHECK(count_files("tmp") == 0);
    CHECK(spool_entry_path(spool, SPOOL_INCOMING, id, path, sizeof(path)) == 0);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 07777) == 0600);
    f = fopen(path, "r");
    CHECK(f != NULL && fgets(buf, sizeof(buf), f) != NULL &&
          strcmp(buf, "DICM bytes") == 0);
    if (f != NULL)
        fclose(f);
    CHECK(spool_entry_path(spool, SPOOL_INCOMING, id, path, 8) ==
          -ENAMETOOLONG);

    /* Discard removes the temp file (an O_TMPFILE one has no name at
     * all: it is readable by the path the spool gives, and goes with its
     * fd). */
    CHECK(spool_uses_tmpfile(spool)); /* this test runs on ext4 or tmpfs */
    CHECK(spool_tmp_create(spool, id, &fd, err, sizeof(err)) == 0);
    CHECK(count_files("tmp") == 0 && count_files("incoming") == 1);
    CHECK(spool_write_all(fd, "abc", 3) == 0);
    CHECK(spool_tmp_path(spool, id, fd, path, sizeof(path)) == 0);
    f = fopen(path, "r");
    CHECK(f != NULL && fgets(buf, sizeof(buf), f) != NULL &&
          strcmp(buf, "abc") == 0);
    if (f != NULL)
        fclose(f);
    CHECK(spool_tmp_path(spool, id, fd, path, 4) == -ENAMETOOLONG);
    spool_discard(spool, id, fd);
    CHECK(count_files("tmp") == 0 && count_files("incoming") == 1);
    spool_close(spool);

    /* Without O_TMPFILE: a named file in tmp/. */
    spool__no_tmpfile = true;
    CHECK(spool_open(root, SPOOL_OPEN_OWNER, &spool, err, sizeof(err)) == 0);
    spool__no_tmpfile = false;
    CHECK(!spool_uses_tmpfile(spool));
    CHECK(spool_tmp_create(spool, id, &fd, err, sizeof(err)) == 0);
    CHECK(count_files("tmp") == 1);
    CHECK(spool_tmp_path(spool, id, fd, path, sizeof(path)) == 0 &&
          strstr(path, "/tmp/") != NULL && access(path, F_OK) == 0);
    spool_discard(spool, id, fd);
    CHECK(count_files("tmp") == 0);
    CHECK(commit_one(spool, "y", id) == 0);
    CHECK(count_files("tmp") == 0 && count_files("incoming") == 2);
    CHECK(spool_remove(spool, id, SPOOL_INCOMING, err, sizeof(err)) == 0);

    /* Transitions between every pair of states; ENOENT is a lost race. */
    CHECK(commit_one(spool, "x", id) == 0);
    enum spool_state at = SPOOL_INCOMING;
    for (int to = SPOOL_INCOMING; to < SPOOL_STATE_COUNT; to++) {
        if (to == (int)at)
            continue;
        CHECK_MSG(spool_move(spool, id, at, (enum spool_state)to, err,
                             sizeof(err)) == 0,
                  "%s", err);
        at = (enum spool_state)to;
    }
    CHECK(spool_move(spool, id, SPOOL_INCOMING, SPOOL_ACTIVE, err,
                     sizeof(err)) == -ENOENT);
    CHECK(spool_move(spool, "../../etc", SPOOL_INCOMING, SPOOL_ACTIVE, err,
                     sizeof(err)) == -EINVAL);
    CHECK(spool_move(spool, id, at, SPOOL_INCOMING, err, sizeof(err)) == 0);
    spool_close(spool);
}

static void test_ids(void)
{
    uint64_t us;
    enum spool_state state;

    CHECK(spool_id_valid("1763855999.123456-9f1c2b3a4d5e6f70"));
    CHECK(!spool_id_valid(""));
    CHECK(!spool_id_valid("1763855999.123456-9f1c2b3a4d5e6f7"));
    CHECK(!spool_id_valid("1763855999.123456-9f1c2b3a4d5e6f700"));
    CHECK(!spool_id_valid("1763855999.12345-9f1c2b3a4d5e6f70"));
    CHECK(!spool_id_valid("1763855999.123456-9F1C2B3A4D5E6F70"));
    CHECK(!spool_id_valid("1763855999.123456_9f1c2b3a4d5e6f70"));
    CHECK(!spool_id_valid("x1763855999.123456-9f1c2b3a4d5e6f70"));
    CHECK(!spool_id_valid("1763855999.123456-9f1c2b3a4d5e6f70.dcm"));
    CHECK(!spool_id_valid("../1763855999.123456-9f1c2b3a4d5e6f7"));
    CHECK(spool_id_arrival_us("1763855999.123456-9f1c2b3a4d5e6f70", &us) == 0);
    CHECK(us == UINT64_C(1763855999123456));
    CHECK(spool_id_arrival_us("junk", &us) == -EINVAL);
    CHECK(spool_state_parse("deferred", &state) == 0 &&
          state == SPOOL_DEFERRED);
    CHECK(spool_state_parse("lost", &state) == -EINVAL);
    CHECK(strcmp(spool_state_name(SPOOL_FAILED), "failed") == 0);
}

static void test_recovery_and_stats(void)
{
    struct spool_state_stats stats[SPOOL_STATE_COUNT];
    struct spool_recovery rec;
    struct spool *spool = NULL;
    char path[256];

    /* Leave a mess behind, as a crash or an operator would. */
    write_file("tmp", "1700000000.000001-0000000000000001.dcm", "partial");
    write_file("tmp", "junk.tmp", "?");
    write_file("active", "1700000000.000002-0000000000000002.dcm", "claimed");
    write_file("active", "1700000000.000003-0000000000000003.dcm", "claimed");
    write_file("incoming", "notes.txt", "operator notes");
    write_file("deferred", "1700000000.000004-0000000000000004.dcm", "");
    write_file("failed", "1700000000.000005-0000000000000005.dcm", "dead");
    snprintf(path, sizeof(path), "%s/deferred/subdir", root);
    mkdir(path, 0700);

    CHECK(spool_open(root, SPOOL_OPEN_OWNER, &spool, err, sizeof(err)) == 0);
    CHECK_MSG(spool_recover(spool, &rec, err, sizeof(err)) == 0, "%s", err);
    CHECK_MSG(rec.tmp_removed == 2, "tmp_removed %u", rec.tmp_removed);
    CHECK_MSG(rec.active_requeued == 2, "requeued %u", rec.active_requeued);
    /* notes.txt, the empty entry and the subdirectory. */
    CHECK_MSG(rec.set_aside == 3, "set aside %u", rec.set_aside);
    CHECK(count_files("tmp") == 0);
    CHECK(count_files("active") == 0);
    CHECK(count_files("lost+found") == 3);
    /* The two entries from test_receive_path plus the two requeued. */
    CHECK(count_files("incoming") == 4);

    /* Setting aside never overwrites. */
    write_file("incoming", "notes.txt", "more notes");
    CHECK(spool_recover(spool, &rec, err, sizeof(err)) == 0);
    CHECK(rec.set_aside == 1);
    CHECK(count_files("lost+found") == 4);

    /* Stats: ages come from the IDs (arrival), not from mtimes. */
    uint64_t now = UINT64_C(1700000100) * 1000000u;
    CHECK(spool_stats(spool, now, stats, err, sizeof(err)) == 0);
    CHECK(stats[SPOOL_INCOMING].count == 4);
    CHECK(stats[SPOOL_INCOMING].bytes ==
          strlen("DICM bytes") + strlen("x") + 2 * strlen("claimed"));
    CHECK(stats[SPOOL_FAILED].count == 1 && stats[SPOOL_FAILED].bytes == 4);
    CHECK(stats[SPOOL_FAILED].oldest_s == 99);
    CHECK(stats[SPOOL_ACTIVE].count == 0 && stats[SPOOL_ACTIVE].oldest_s == 0);
    /* Entries from "the future" (today's IDs) count as age 0; the
     * oldest is the requeued one from 1700000000.000002. */
    CHECK(stats[SPOOL_INCOMING].oldest_s == 99);

    uint64_t free_mb = 0;
    CHECK(spool_free_mb(spool, &free_mb) == 0 && free_mb > 0);
    spool_close(spool);

    /* A reader sees the same numbers while the owner is away. */
    CHECK(spool_open(root, 0, &spool, err, sizeof(err)) == 0);
    CHECK(spool_stats(spool, now, stats, err, sizeof(err)) == 0);
    CHECK(stats[SPOOL_INCOMING].count == 4);
    spool_close(spool);
}

/* Fault injection: the N-th call of one operation fails with an errno. */
enum fault_op { OP_NONE, OP_WRITE, OP_FSYNC, OP_RENAME, OP_LINK, OP_CLOSE };
static enum fault_op fault_op;
static int fault_nth;
static int fault_errno;
static int fault_calls;

static bool fault_now(enum fault_op op)
{
    return fault_op == op && ++fault_calls == fault_nth;
}

static ssize_t f_write(int fd, const void *b, size_t n)
{
    if (fault_now(OP_WRITE)) {
        errno = fault_errno;
        return -1;
    }
    /* A short write first, to prove the loop completes it. */
    return write(fd, b, n > 3 ? n - 3 : n);
}

static int f_fsync(int fd)
{
    if (fault_now(OP_FSYNC)) {
        errno = fault_errno;
        return -1;
    }
    return fsync(fd);
}

static int f_renameat(int a, const char *b, int c, const char *d)
{
    if (fault_now(OP_RENAME)) {
        errno = fault_errno;
        return -1;
    }
    return renameat(a, b, c, d);
}

static int f_linkat(int a, const char *b, int c, const char *d, int flags)
{
    if (fault_now(OP_LINK)) {
        errno = fault_errno;
        return -1;
    }
    return linkat(a, b, c, d, flags);
}

static int f_close(int fd)
{
    if (fault_now(OP_CLOSE)) {
        close(fd);
        errno = fault_errno;
        return -1;
    }
    return close(fd);
}

struct fault_case {
    enum fault_op op;
    int nth;
    const char *what;
};

/* Every write, fsync, link or rename and close of one commit fails in
 * turn, with EIO and ENOSPC: the commit fails with that errno and leaves
 * nothing in incoming/ or tmp/. */
static void test_faults_on(bool tmpfile, bool journaled_fs)
{
    /* On a file system with a journal of its own there is no inode fsync
     * after the link (spool_fs_journaled()). */
    static const struct fault_case journaled_cases[] = {
        { OP_WRITE, 1, "first write" }, { OP_WRITE, 2, "second write" },
        { OP_FSYNC, 1, "file fsync" },  { OP_FSYNC, 2, "incoming/ fsync" },
        { OP_LINK, 1, "linkat" },       { OP_CLOSE, 1, "close" },
    };
    static const struct fault_case tmpfile_cases[] = {
        { OP_WRITE, 1, "first write" },
        { OP_WRITE, 2, "second write" },
        { OP_FSYNC, 1, "file fsync" },
        { OP_FSYNC, 2, "file fsync after linkat" },
        { OP_FSYNC, 3, "incoming/ fsync" },
        { OP_LINK, 1, "linkat" },
        { OP_CLOSE, 1, "close" },
    };
    static const struct fault_case rename_cases[] = {
        { OP_WRITE, 1, "first write" }, { OP_WRITE, 2, "second write" },
        { OP_FSYNC, 1, "file fsync" },  { OP_FSYNC, 2, "incoming/ fsync" },
        { OP_FSYNC, 3, "tmp/ fsync" },  { OP_RENAME, 1, "rename" },
        { OP_CLOSE, 1, "close" },
    };
    const struct fault_case *cases = !tmpfile       ? rename_cases
                                     : journaled_fs ? journaled_cases
                                                    : tmpfile_cases;
    size_t ncases = !tmpfile ? sizeof(rename_cases) / sizeof(rename_cases[0])
                    : journaled_fs
                        ? sizeof(journaled_cases) / sizeof(journaled_cases[0])
                        : sizeof(tmpfile_cases) / sizeof(tmpfile_cases[0]);
    static const int errnos[] = { EIO, ENOSPC };
    struct spool *spool = NULL;
    char id[SPOOL_ID_MAX];
    unsigned before;

    spool__no_tmpfile = !tmpfile;
    spool__fs_mode = journaled_fs ? SPOOL__FS_JOURNALED : SPOOL__FS_UNJOURNALED;
    CHECK(spool_open(root, SPOOL_OPEN_OWNER, &spool, err, sizeof(err)) == 0);
    spool__no_tmpfile = false;
    spool__fs_mode = SPOOL__FS_DETECT;
    CHECK(spool_uses_tmpfile(spool) == tmpfile);
    before = count_files("incoming");
    spool__io.write = f_write;
    spool__io.fsync = f_fsync;
    spool__io.renameat = f_renameat;
    spool__io.linkat = f_linkat;
    spool__io.close = f_close;

    for (size_t i = 0; i < ncases; i++) {
        for (size_t e = 0; e < 2; e++) {
            fault_op = cases[i].op;
            fault_nth = cases[i].nth;
            fault_errno = errnos[e];
            fault_calls = 0;
            int r = commit_one(spool, "0123456789abcdef", id);
            CHECK_MSG(r == -errnos[e], "%s/%s/%d: got %d",
                      tmpfile ? "tmpfile" : "rename", cases[i].what, errnos[e],
                      r);
            CHECK_MSG(count_files("incoming") == before,
                      "%s: incoming/ changed", cases[i].what);
            CHECK_MSG(count_files("tmp") == 0, "%s: tmp/ not empty",
                      cases[i].what);
        }
    }

    /* Healthy again: the short-write loop still completes the data. */
    fault_op = OP_NONE;
    CHECK(commit_one(spool, "0123456789abcdef", id) == 0);
    CHECK(count_files("incoming") == before + 1);
    spool__io_reset();
    CHECK(spool_move(spool, id, SPOOL_INCOMING, SPOOL_FAILED, err,
                     sizeof(err)) == 0);
    spool_close(spool);
}

static void test_faults(void)
{
    test_faults_on(true, false);
    test_faults_on(true, true);
    test_faults_on(false, false);
}

static int label_errno;
static int f_fsetxattr(int fd, const char *name, const void *value, size_t n,
                       int flags)
{
    if (label_errno != 0) {
        errno = label_errno;
        return -1;
    }
    return fsetxattr(fd, name, value, n, flags);
}

/* Creates, fills and commits one labelled entry. */
static int commit_labelled(struct spool *spool, const struct spool_meta *label,
                           char id[SPOOL_ID_MAX])
{
    int fd;
    int r = spool_tmp_create(spool, id, &fd, err, sizeof(err));

    if (r < 0)
        return r;
    r = spool_write_all(fd, "DICM", 4);
    if (r < 0) {
        spool_discard(spool, id, fd);
        return r;
    }
    return spool_commit_labelled(spool, id, fd, label, err, sizeof(err));
}

/* The label: no meta/ file on the receive path, the UIDs and the calling
 * AE read back through spool_meta_read() in every state; meta/ wins once
 * written; where the file system refuses the label, meta/ as before. */
static void test_label(void)
{
    static const int refusals[] = { ENOTSUP, ENOSPC, EIO };
    struct spool_meta label;
    struct spool_meta back;
    struct spool *spool = NULL;
    char id[SPOOL_ID_MAX];
    char path[512];
    char raw[600];
    unsigned meta_before = count_files("meta");

    memset(&label, 0, sizeof(label));
    strcpy(label.study_uid, "1.2.840.99.1");
    strcpy(label.sop_uid, "1.2.840.99.1.2\nsop=9.9");
    strcpy(label.calling_ae, "CT_ROOM_1");
    for (int tmpfile = 1; tmpfile >= 0; tmpfile--) {
        spool__no_tmpfile = !tmpfile;
        CHECK(spool_open(root, SPOOL_OPEN_OWNER, &spool, err, sizeof(err)) ==
              0);
        spool__no_tmpfile = false;
        CHECK_MSG(commit_labelled(spool, &label, id) == 0, "%s", err);
        CHECK(count_files("meta") == meta_before);
        CHECK(spool_entry_path(spool, SPOOL_INCOMING, id, path, sizeof(path)) ==
              0);
        ssize_t n = getxattr(path, "user.stowbridge", raw, sizeof(raw) - 1);
        CHECK(n > 0);
        raw[n > 0 ? n : 0] = '\0';
        CHECK_MSG(strcmp(raw, "study=1.2.840.99.1\nsop=1.2.840.99.1.2 sop=9.9\n"
                              "from=CT_ROOM_1\n") == 0,
                  "label %s", raw);
        for (int state = SPOOL_INCOMING; state < SPOOL_STATE_COUNT; state++) {
            if (state != SPOOL_INCOMING)
                CHECK(spool_move(spool, id, (enum spool_state)(state - 1),
                                 (enum spool_state)state, err,
                                 sizeof(err)) == 0);
            memset(&back, 0x55, sizeof(back));
            CHECK_MSG(spool_meta_read(spool, id, &back) == 0, "state %d",
                      state);
            CHECK(strcmp(back.study_uid, "1.2.840.99.1") == 0 &&
                  strcmp(back.sop_uid, "1.2.840.99.1.2 sop=9.9") == 0 &&
                  strcmp(back.calling_ae, "CT_ROOM_1") == 0 &&
                  back.attempts == 0 && back.last_error[0] == '\0' &&
                  back.copy_of[0] == '\0');
        }
        /* The uploader's meta/ file, once written, is what is read. */
        back.attempts = 2;
        CHECK(spool_meta_write(spool, id, &back, err, sizeof(err)) == 0);
        CHECK(spool_meta_read(spool, id, &back) == 0 && back.attempts == 2 &&
              strcmp(back.calling_ae, "CT_ROOM_1") == 0);
        CHECK(spool_remove(spool, id, SPOOL_FAILED, err, sizeof(err)) == 0);
        CHECK(spool_meta_read(spool, id, &back) == -ENOENT);

        /* Refused label: the commit succeeds, meta/ keeps the values. */
        spool__io.fsetxattr = f_fsetxattr;
        for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
            label_errno = refusals[i];
            CHECK_MSG(commit_labelled(spool, &label, id) == 0, "%s", err);
            CHECK(count_files("meta") == meta_before + 1);
            CHECK(spool_entry_path(spool, SPOOL_INCOMING, id, path,
                                   sizeof(path)) == 0);
            CHECK(getxattr(path, "user.stowbridge", raw, sizeof(raw)) < 0);
            CHECK(spool_meta_read(spool, id, &back) == 0 &&
                  strcmp(back.sop_uid, "1.2.840.99.1.2 sop=9.9") == 0 &&
                  strcmp(back.calling_ae, "CT_ROOM_1") == 0);
            CHECK(spool_remove(spool, id, SPOOL_INCOMING, err, sizeof(err)) ==
                  0);
        }
        label_errno = 0;
        spool__io_reset();
        /* No label asked for: neither an xattr nor meta/. */
        CHECK(commit_one(spool, "plain", id) == 0);
        CHECK(spool_meta_read(spool, id, &back) == -ENOENT);
        CHECK(spool_remove(spool, id, SPOOL_INCOMING, err, sizeof(err)) == 0);
        spool_close(spool);
    }
}

/* ------------------------------------------------------------------ */
/* Group commit                                                        */
/* ------------------------------------------------------------------ */

/* The hooks of the group commit test, called from several threads. */
static atomic_uint_fast64_t dir_fsync_starts; /* directory fsyncs begun */
static atomic_uint_fast64_t last_ok_start;    /* latest begun and succeeded */
static atomic_int dir_fail_every;             /* 0: never */
static atomic_uint_fast64_t dir_failures;
static _Thread_local uint64_t my_link_seq;

static bool is_dir(int fd)
{
    struct stat st;

    return fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
}

static int g_fsync(int fd)
{
    if (!is_dir(fd))
        return fsync(fd);
    uint64_t seq = atomic_fetch_add(&dir_fsync_starts, 1) + 1;
    /* A slow flush, so that commits pile up behind it. */
    usleep(3000);
    int every = atomic_load(&dir_fail_every);
    if (every > 0 && seq % (uint64_t)every == 0) {
        atomic_fetch_add(&dir_failures, 1);
        errno = EIO;
        return -1;
    }
    int r = fsync(fd);
    if (r == 0) {
        uint64_t prev = atomic_load(&last_ok_start);
        while (prev < seq &&
               !atomic_compare_exchange_weak(&last_ok_start, &prev, seq))
            ;
    }
    return r;
}

static int g_link(int a, const char *b, int c, const char *d, int flags)
{
    int r = linkat(a, b, c, d, flags);
    /* Every directory fsync begun after this point may cover the link. */
    my_link_seq = atomic_load(&dir_fsync_starts);
    return r;
}

static int g_rename(int a, const char *b, int c, const char *d)
{
    int r = renameat(a, b, c, d);
    my_link_seq = atomic_load(&dir_fsync_starts);
    return r;
}

#define GROUP_THREADS 8
#define GROUP_COMMITS 40

struct group_worker {
    struct spool *spool;
    pthread_barrier_t *start;
    char ids[GROUP_COMMITS][SPOOL_ID_MAX];
    int results[GROUP_COMMITS];
    bool covered[GROUP_COMMITS]; /* a good fsync began after the link */
};

static void *group_main(void *arg)
{
    struct group_worker *w = arg;
    char my_err[256];

    pthread_barrier_wait(w->start);
    for (int i = 0; i < GROUP_COMMITS; i++) {
        int fd;
        w->results[i] =
            spool_tmp_create(w->spool, w->ids[i], &fd, my_err, sizeof(my_err));
        if (w->results[i] < 0)
            continue;
        (void)spool_write_all(fd, "data", 4);
        my_link_seq = UINT64_MAX;
        w->results[i] =
            spool_commit(w->spool, w->ids[i], fd, my_err, sizeof(my_err));
        w->covered[i] = my_link_seq != UINT64_MAX &&
                        atomic_load(&last_ok_start) > my_link_seq;
    }
    return NULL;
}

static void group_run(bool tmpfile, int fail_every)
{
    static struct group_worker workers[GROUP_THREADS];
    pthread_t threads[GROUP_THREADS];
    pthread_barrier_t start;
    struct spool *spool = NULL;
    uint64_t fsyncs = 0;
    uint64_t entries = 0;
    unsigned ok = 0;
    unsigned failed = 0;
    unsigned uncovered = 0;
    unsigned misplaced = 0;
    char cmd[256];
    char path[512];

    snprintf(cmd, sizeof(cmd), "rm -f '%s'/incoming/*", root);
    (void)!system(cmd);
    spool__no_tmpfile = !tmpfile;
    CHECK(spool_open(root, SPOOL_OPEN_OWNER, &spool, err, sizeof(err)) == 0);
    spool__no_tmpfile = false;
    atomic_store(&dir_fsync_starts, 0);
    atomic_store(&last_ok_start, 0);
    atomic_store(&dir_failures, 0);
    atomic_store(&dir_fail_every, fail_every);
    spool__io.fsync = g_fsync;
    spool__io.linkat = g_link;
    spool__io.renameat = g_rename;
    pthread_barrier_init(&start, NULL, GROUP_THREADS);
    for (int t = 0; t < GROUP_THREADS; t++) {
        memset(&workers[t], 0, sizeof(workers[t]));
        workers[t].spool = spool;
        workers[t].start = &start;
        pthread_create(&threads[t], NULL, group_main, &workers[t]);
    }
    for (int t = 0; t < GROUP_THREADS; t++)
        pthread_join(threads[t], NULL);
    pthread_barrier_destroy(&start);
    spool__io_reset();

    for (int t = 0; t < GROUP_THREADS; t++)
        for (int i = 0; i < GROUP_COMMITS; i++) {
            const struct group_worker *w = &workers[t];
            bool there = spool_entry_path(spool, SPOOL_INCOMING, w->ids[i],
                                          path, sizeof(path)) == 0 &&
                         access(path, F_OK) == 0;
            if (w->results[i] == 0) {
                ok++;
                uncovered += !w->covered[i];
                misplaced += !there;
            } else {
                failed++;
                misplaced += there;
            }
        }
    spool__dirsync_counts(spool, SPOOL_INCOMING, &fsyncs, &entries);
    const char *mode = tmpfile ? "tmpfile" : "rename";
    CHECK_MSG(ok + failed == GROUP_THREADS * GROUP_COMMITS, "%s", mode);
    CHECK_MSG(count_files("incoming") == ok, "%s: %u in incoming/, %u ok", mode,
              count_files("incoming"), ok);
    CHECK_MSG(misplaced == 0, "%s: %u entries where their result says not",
              mode, misplaced);
    CHECK_MSG(uncovered == 0,
              "%s: %u commits returned before a directory fsync begun "
              "after their link had succeeded",
              mode, uncovered);
    CHECK_MSG(entries == GROUP_THREADS * GROUP_COMMITS && fsyncs * 2 <= entries,
              "%s: %llu incoming/ fsyncs for %llu commits: not shared", mode,
              (unsigned long long)fsyncs, (unsigned long long)entries);
    if (fail_every == 0)
        CHECK_MSG(failed == 0, "%s: %u failed", mode, failed);
    else
        CHECK_MSG(failed > 0 && atomic_load(&dir_failures) > 0 &&
                      failed >= atomic_load(&dir_failures),
                  "%s: %u failed commits for %llu failed fsyncs", mode, failed,
                  (unsigned long long)atomic_load(&dir_failures));
    printf("# group commit (%s, fail every %d): %llu incoming/ fsyncs for "
           "%llu commits, %u failed\n",
           mode, fail_every, (unsigned long long)fsyncs,
           (unsigned long long)entries, failed);
    spool_close(spool);
    (void)!system(cmd);
}

static void test_group_commit(void)
{
    group_run(true, 0);
    group_run(true, 4);
    group_run(false, 0);
    group_run(false, 3);
}

struct committer {
    struct spool *spool;
    int failures;
};

static void *commit_many(void *arg)
{
    struct committer *c = arg;
    char id[SPOOL_ID_MAX];
    char my_err[256];

    for (int i = 0; i < 200; i++) {
        int fd;
        if (spool_tmp_create(c->spool, id, &fd, my_err, sizeof(my_err)) < 0 ||
            spool_write_all(fd, "data", 4) < 0 ||
            spool_commit(c->spool, id, fd, my_err, sizeof(my_err)) < 0)
            c->failures++;
    }
    return NULL;
}

static void test_concurrency(void)
{
    struct spool_state_stats stats[SPOOL_STATE_COUNT];
    struct committer c[4];
    pthread_t threads[4];
    struct spool *spool = NULL;
    char cmd[256];

    snprintf(cmd, sizeof(cmd), "rm -f '%s'/incoming/*", root);
    (void)!system(cmd);
    CHECK(spool_open(root, SPOOL_OPEN_OWNER, &spool, err, sizeof(err)) == 0);
    for (int i = 0; i < 4; i++) {
        c[i].spool = spool;
        c[i].failures = 0;
        pthread_create(&threads[i], NULL, commit_many, &c[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        CHECK(c[i].failures == 0);
    }
    CHECK(count_files("incoming") == 800);
    CHECK(spool_stats(spool, UINT64_MAX / 2, stats, err, sizeof(err)) == 0);
    CHECK(stats[SPOOL_INCOMING].count == 800);
    CHECK(stats[SPOOL_INCOMING].bytes == 3200);
    spool_close(spool);
}

static void test_upload_support(void)
{
    struct spool_recovery rec;
    struct spool_entry *entries = NULL;
    struct spool_meta meta;
    struct spool_meta back;
    struct spool *spool = NULL;
    char ids[3][SPOOL_ID_MAX];
    char path[512];
    size_t count = 0;
    struct stat st;
    char cmd[256];

    snprintf(cmd, sizeof(cmd),
             "rm -f '%s'/incoming/* '%s'/deferred/* "
             "'%s'/failed/*",
             root, root, root);
    (void)!system(cmd);
    CHECK(spool_open(root, SPOOL_OPEN_OWNER, &spool, err, sizeof(err)) == 0);
    for (int i = 0; i < 3; i++)
        CHECK(commit_one(spool, "entry", ids[i]) == 0);

    /* meta/: written whole, read back, control characters neutralised. */
    memset(&meta, 0, sizeof(meta));
    strcpy(meta.study_uid, "1.2.3");
    strcpy(meta.sop_uid, "1.2.3.4");
    strcpy(meta.calling_ae, "CT1");
    meta.attempts = 3;
    meta.last_attempt_us = 1700000000000000;
    meta.last_http_status = 409;
    meta.last_reason = 0xA900;
    strcpy(meta.last_error, "line one\nline=two");
    CHECK(spool_meta_write(spool, ids[0], &meta, err, sizeof(err)) == 0);
    CHECK(spool_meta_read(spool, ids[0], &back) == 0);
    CHECK(strcmp(back.study_uid, "1.2.3") == 0 &&
          strcmp(back.sop_uid, "1.2.3.4") == 0 &&
          strcmp(back.calling_ae, "CT1") == 0 && back.attempts == 3 &&
          back.last_attempt_us == 1700000000000000 &&
          back.last_http_status == 409 && back.last_reason == 0xA900);
    CHECK_MSG(strcmp(back.last_error, "line one line=two") == 0, "%s",
              back.last_error);
    CHECK(spool_meta_read(spool, ids[1], &back) == -ENOENT);
    CHECK(spool_meta_write(spool, "../x", &meta, err, sizeof(err)) == -EINVAL);

    /* Listing: arrival order, sizes. */
    CHECK(spool_list(spool, SPOOL_INCOMING, &entries, &count, err,
                     sizeof(err)) == 0);
    CHECK(count == 3);
    for (size_t i = 0; i < count && i < 3; i++)
        CHECK(strcmp(entries[i].id, ids[i]) == 0 && entries[i].size == 5);
    free(entries);

    /* Deferral keeps the not-before time as the mtime. */
    CHECK(spool_defer(spool, ids[1], SPOOL_INCOMING, 1900000000123456, err,
                      sizeof(err)) == 0);
    CHECK(spool_entry_path(spool, SPOOL_DEFERRED, ids[1], path, sizeof(path)) ==
          0);
    CHECK(stat(path, &st) == 0 && st.st_mtim.tv_sec == 1900000000 &&
          st.st_mtim.tv_nsec == 123456000);
    CHECK(spool_list(spool, SPOOL_DEFERRED, &entries, &count, err,
                     sizeof(err)) == 0);
    CHECK(count == 1 && entries[0].mtime_us == 1900000000123456);
    free(entries);
    /* Deferring again, in place. */
    CHECK(spool_defer(spool, ids[1], SPOOL_DEFERRED, 1900000001000000, err,
                      sizeof(err)) == 0);
    CHECK(spool_defer(spool, ids[1], SPOOL_INCOMING, 1, err, sizeof(err)) ==
          -ENOENT);

    /* Delivered: the entry and its meta/ file go. */
    CHECK(spool_remove(spool, ids[0], SPOOL_INCOMING, err, sizeof(err)) == 0);
    CHECK(spool_meta_read(spool, ids[0], &back) == -ENOENT);
    CHECK(spool_remove(spool, ids[0], SPOOL_INCOMING, err, sizeof(err)) ==
          -ENOENT);

    /* Orphan meta/ files (entry gone) are removed at start-up. */
    CHECK(spool_meta_write(spool, ids[2], &meta, err, sizeof(err)) == 0);
    CHECK(spool_meta_write(spool, "1700000000.000009-0000000000000009", &meta,
                           err, sizeof(err)) == 0);
    CHECK(spool_recover(spool, &rec, err, sizeof(err)) == 0);
    CHECK_MSG(rec.meta_removed == 1, "meta_removed %u", rec.meta_removed);
    CHECK(spool_meta_read(spool, ids[2], &back) == 0);
    spool_close(spool);
}

int main(void)
{
    char cmd[128];

    strcpy(root, "/tmp/stowbridge-spool-XXXXXX");
    if (mkdtemp(root) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    test_layout_and_lock();
    test_receive_path();
    test_ids();
    test_recovery_and_stats();
    test_faults();
    test_label();
    test_group_commit();
    test_concurrency();
    test_upload_support();
    (void)!system(cmd);
    return tap_done();
}
