/* SPDX-License-Identifier: Apache-2.0 */
/*
 * spool - see spool.h for the contract.
 *
 * Every state is a directory opened once (O_DIRECTORY) at spool_open();
 * all operations are relative to those fds (openat, renameat, linkat,
 * unlinkat, fstatat, fsync of the directory fd). The openat (of a
 * received file), write, fsync, renameat, linkat, fsetxattr and close
 * calls on the receive path go through spool__io so that tests can make
 * them fail (spool_int.h).
 *
 * Group commit (spool_dir_sync()): a commit takes a ticket after its link
 * or rename and waits until an fsync of the directory that started after
 * its ticket has finished; whichever waiting commit finds no fsync running
 * issues the next one for every ticket handed out so far, then hands the
 * result to each commit it covered. One association never waits (there is
 * nobody to share with); several share one directory flush.
 */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "base/util.h"
#include "journal.h"
#include "spool_int.h"

#define SPOOL_LOST_FOUND "lost+found"
#define SPOOL_META "meta"
#define SPOOL_LOCK_NAME ".lock"
#define SPOOL_PAUSE_NAME "pause"
#define SPOOL_PAUSE_TMP ".pause.tmp"
#define SPOOL_SUFFIX ".dcm"
#define SPOOL_NAME_MAX (SPOOL_ID_MAX + sizeof(SPOOL_SUFFIX))
/* The entry's label (spool_commit_labelled()). */
#define SPOOL_LABEL_XATTR "user.stowbridge"
#define SPOOL_LABEL_MAX 512
/* Where spool_open() tries linkat() of an O_TMPFILE file (tmp/ is emptied
 * at start, so a crash during the probe leaves nothing behind). */
#define SPOOL_PROBE_NAME ".tmpfile-probe"

static int spool_fsetxattr(int fd, const char *name, const void *value,
                           size_t size, int flags)
{
    return fsetxattr(fd, name, value, size, flags);
}

/* openat() is variadic: the hook has a fixed signature. */
static int spool_openat(int dirfd, const char *path, int flags, mode_t mode)
{
    return openat(dirfd, path, flags, mode);
}

struct spool__io_ops spool__io = {
    .openat = spool_openat,
    .write = write,
    .fsync = fsync,
    .renameat = renameat,
    .linkat = linkat,
    .fsetxattr = spool_fsetxattr,
    .close = close,
    .pwrite = pwrite,
    .pwritev = pwritev,
    .pread = pread,
    .fdatasync = fdatasync,
    .syncfs = syncfs,
};

bool spool__no_tmpfile = false;
bool spool__journal_crash_on_close = false;
enum spool__fs_mode spool__fs_mode = SPOOL__FS_DETECT;
_Atomic bool spool__journal_refuses;
uint64_t spool__journal_file_max = 256u * 1024u;

void spool__io_reset(void)
{
    spool__io.openat = spool_openat;
    spool__io.write = write;
    spool__io.fsync = fsync;
    spool__io.renameat = renameat;
    spool__io.linkat = linkat;
    spool__io.fsetxattr = spool_fsetxattr;
    spool__io.close = close;
    spool__io.pwrite = pwrite;
    spool__io.pwritev = pwritev;
    spool__io.pread = pread;
    spool__io.fdatasync = fdatasync;
    spool__io.syncfs = syncfs;
}

/* A commit waiting for a directory fsync (on its own stack). */
struct spool_sync_waiter {
    uint64_t ticket;
    int result; /* 0 or -errno of the fsync that covered the ticket */
    bool done;
    struct spool_sync_waiter *next;
};

/* The group commit of one directory. */
struct spool_dirsync {
    pthread_mutex_t mutex;
    pthread_cond_t done_cond;
    uint64_t tickets; /* handed out so far */
    bool running;     /* an fsync is in progress */
    struct spool_sync_waiter *waiters;
    uint64_t fsyncs; /* counters for tests (spool__dirsync_counts()) */
    uint64_t entries;
};

struct spool {
    char *dir;
    int dir_fd;
    int state_fd[SPOOL_STATE_COUNT];
    int lost_found_fd;
    int meta_fd;
    int lock_fd;
    bool tmpfile;          /* receives are O_TMPFILE files of incoming/ */
    bool fs_journaled;     /* spool_fs_journaled(): no inode fsyncs needed */
    bool datasync_flushes; /* spool_datasync_flushes(): fdatasync() of an
                            * overwrite reaches the disk */
    bool sync_ready;
    bool recovered;                /* spool_recover() ran */
    struct spool_journal *journal; /* NULL: commits file by file */
    _Atomic uint64_t journal_commits;
    _Atomic uint64_t file_commits;
    struct spool_dirsync sync[SPOOL_STATE_COUNT];
};

static const char *const spool_state_names[SPOOL_STATE_COUNT] = {
    [SPOOL_TMP] = "tmp",       [SPOOL_INCOMING] = "incoming",
    [SPOOL_ACTIVE] = "active", [SPOOL_DEFERRED] = "deferred",
    [SPOOL_FAILED] = "failed",
};

/* "<call>() '<what>' failed: <strerror>" and returns -errno. */
static int spool_syserr(char *err, size_t err_len, int error, const char *call,
                        const char *dir, const char *name)
{
    char buf[128];

    util_err(err, err_len, "%s() '%s%s%s' failed: %s", call, dir,
             name != NULL ? "/" : "", name != NULL ? name : "",
             util_strerror(-error, buf, sizeof(buf)));
    return -error;
}

const char *spool_state_name(enum spool_state state)
{
    if ((unsigned)state >= SPOOL_STATE_COUNT)
        return "?";
    return spool_state_names[state];
}

int spool_state_parse(const char *name, enum spool_state *ret_state)
{
    for (int i = 0; i < SPOOL_STATE_COUNT; i++) {
        if (strcmp(name, spool_state_names[i]) == 0) {
            *ret_state = (enum spool_state)i;
            return 0;
        }
    }
    return -EINVAL;
}

bool spool_id_valid(const char *id)
{
    const char *p = id;
    size_t digits = 0;

    while (*p >= '0' && *p <= '9') {
        p++;
        digits++;
    }
    if (digits == 0 || digits > 12 || *p++ != '.')
        return false;
    for (int i = 0; i < 6; i++, p++)
        if (*p < '0' || *p > '9')
            return false;
    if (*p++ != '-')
        return false;
    for (int i = 0; i < 16; i++, p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return *p == '\0';
}

int spool_id_arrival_us(const char *id, uint64_t *ret_us)
{
    unsigned long long sec;
    unsigned long usec;

    if (!spool_id_valid(id))
        return -EINVAL;
    if (sscanf(id, "%llu.%6lu", &sec, &usec) != 2)
        return -EINVAL;
    *ret_us = (uint64_t)sec * 1000000u + usec;
    return 0;
}

/* True if @name is "<valid id>.dcm"; the ID goes to @ret_id. */
static bool spool_entry_name(const char *name, char ret_id[SPOOL_ID_MAX])
{
    size_t len = strlen(name);
    size_t suffix = sizeof(SPOOL_SUFFIX) - 1;

    if (len <= suffix || len - suffix >= SPOOL_ID_MAX ||
        strcmp(name + len - suffix, SPOOL_SUFFIX) != 0)
        return false;
    memcpy(ret_id, name, len - suffix);
    ret_id[len - suffix] = '\0';
    return spool_id_valid(ret_id);
}

static void spool_file_name(const char *id, char buf[SPOOL_NAME_MAX])
{
    snprintf(buf, SPOOL_NAME_MAX, "%s" SPOOL_SUFFIX, id);
}

static int spool_fsync_dir(const struct spool *spool, int fd, const char *name,
                           char *err, size_t err_len)
{
    if (spool__io.fsync(fd) < 0)
        return spool_syserr(err, err_len, errno, "fsync", spool->dir, name);
    return 0;
}

/*
 * Opens (and in owner mode creates) subdirectory @name of the spool and
 * checks it is a directory owned by us and not writable by others.
 */
static int spool_open_subdir(struct spool *spool, const char *name, bool owner,
                             bool *created, int *ret_fd, char *err,
                             size_t err_len)
{
    struct stat st;
    int fd;

    bool made = false;

    if (owner) {
        if (mkdirat(spool->dir_fd, name, 0700) == 0)
            *created = made = true;
        else if (errno != EEXIST)
            return spool_syserr(err, err_len, errno, "mkdir", spool->dir, name);
    }
    fd = openat(spool->dir_fd, name,
                O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return spool_syserr(err, err_len, errno, "open", spool->dir, name);
    /* A new directory's own inode: without a journal, the parent's fsync
     * (spool_open()) does not write it (the power-loss test found
     * e2fsck clearing fresh subdirectories). */
    if (made && spool__io.fsync(fd) < 0) {
        int r = spool_syserr(err, err_len, errno, "fsync", spool->dir, name);
        close(fd);
        return r;
    }
    if (fstat(fd, &st) < 0) {
        int r = spool_syserr(err, err_len, errno, "fstat", spool->dir, name);
        close(fd);
        return r;
    }
    if (owner && (st.st_uid != geteuid() || (st.st_mode & 0022) != 0)) {
        util_err(err, err_len,
                 "spool directory '%s/%s' must be owned by uid %u and not "
                 "writable by group or others (it is uid %u, mode %04o)",
                 spool->dir, name, (unsigned)geteuid(), (unsigned)st.st_uid,
                 (unsigned)(st.st_mode & 07777));
        close(fd);
        return -EPERM;
    }
    *ret_fd = fd;
    return 0;
}

/*
 * True where the file system's own journal makes a link and its inode one
 * transaction, and an overwrite's fdatasync() a cache flush: ext4 with a
 * journal (its /sys/fs/ext4/<dev>/journal_task names a thread) and XFS.
 * Everywhere else (ext4 without a journal, other or unknown file systems)
 * the commits dirty and fsync the inode themselves: the power-loss test
 * (tests/power) lost acknowledged instances on ext4 without a journal, as
 * fsync(dir) did not write a linked file's inode and, before Linux 6.5,
 * fdatasync() of an overwrite issued no flush.
 */
static bool spool_fs_journaled(int dir_fd)
{
    char link[64], target[512], path[600], text[64];
    struct statfs sfs;
    struct stat st;
    const char *name;
    ssize_t n;
    int fd;

    if (fstatfs(dir_fd, &sfs) < 0)
        return false;
    if ((unsigned long)sfs.f_type == 0x58465342ul) /* XFS */
        return true;
    if ((unsigned long)sfs.f_type != 0xEF53ul || fstat(dir_fd, &st) < 0)
        return false;
    snprintf(link, sizeof(link), "/sys/dev/block/%u:%u", major(st.st_dev),
             minor(st.st_dev));
    n = readlink(link, target, sizeof(target) - 1);
    if (n <= 0)
        return false;
    target[n] = '\0';
    name = strrchr(target, '/');
    name = name != NULL ? name + 1 : target;
    snprintf(path, sizeof(path), "/sys/fs/ext4/%s/journal_task", name);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    n = read(fd, text, sizeof(text) - 1);
    close(fd);
    if (n <= 0)
        return false;
    text[n] = '\0';
    return strncmp(text, "<none>", 6) != 0;
}

/*
 * Whether fdatasync() of an overwrite of already allocated blocks (the
 * journal's segments) ends in a cache flush on this file system: always
 * with a file-system journal (@fs_journaled), and on ext4 without one from
 * Linux 6.5 on, where its fsync gained an unconditional flush (before, an
 * fdatasync() with no metadata to write returned before flushing; the
 * power-loss test's guest kernel, 6.1, shows it). Elsewhere the journal
 * keeps futimens() + fsync(), which writes the inode and flushes on every
 * kernel at the cost of one more write per flush.
 */
static bool spool_datasync_flushes(int dir_fd, bool fs_journaled)
{
    struct statfs sfs;
    struct utsname uts;
    unsigned major_v = 0, minor_v = 0;

    if (fs_journaled)
        return true;
    if (fstatfs(dir_fd, &sfs) < 0 || (unsigned long)sfs.f_type != 0xEF53ul ||
        uname(&uts) < 0 ||
        sscanf(uts.release, "%u.%u", &major_v, &minor_v) != 2)
        return false;
    return major_v > 6 || (major_v == 6 && minor_v >= 5);
}

/* "/proc/self/fd/<fd>": the name by which linkat() gives an O_TMPFILE
 * file its first link (AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH). */
static void spool_fd_path(int fd, char *buf, size_t len)
{
    snprintf(buf, len, "/proc/self/fd/%d", fd);
}

/*
 * True if an anonymous file can be made in incoming/ and linked into a
 * directory of the spool: O_TMPFILE is supported by the file system and
 * /proc/self/fd is there. The probe's link goes to tmp/ and is removed.
 */
static bool spool_probe_tmpfile(struct spool *spool)
{
    char path[64];
    bool ok;
    int fd = openat(spool->state_fd[SPOOL_INCOMING], ".",
                    O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

    if (fd < 0)
        return false;
    spool_fd_path(fd, path, sizeof(path));
    (void)unlinkat(spool->state_fd[SPOOL_TMP], SPOOL_PROBE_NAME, 0);
    ok = linkat(AT_FDCWD, path, spool->state_fd[SPOOL_TMP], SPOOL_PROBE_NAME,
                AT_SYMLINK_FOLLOW) == 0;
    if (ok)
        (void)unlinkat(spool->state_fd[SPOOL_TMP], SPOOL_PROBE_NAME, 0);
    (void)close(fd);
    return ok;
}

int spool_open(const char *dir, unsigned flags, struct spool **ret_spool,
               char *err, size_t err_len)
{
    bool owner = (flags & SPOOL_OPEN_OWNER) != 0;
    bool created = false;
    struct spool *spool;
    struct stat st;
    int r;

    spool = calloc(1, sizeof(*spool));
    if (spool == NULL)
        return -ENOMEM;
    for (int i = 0; i < SPOOL_STATE_COUNT; i++) {
        if (pthread_mutex_init(&spool->sync[i].mutex, NULL) != 0 ||
            pthread_cond_init(&spool->sync[i].done_cond, NULL) != 0) {
            free(spool);
            return -ENOMEM;
        }
    }
    spool->sync_ready = true;
    spool->dir_fd = -1;
    spool->lost_found_fd = -1;
    spool->meta_fd = -1;
    spool->lock_fd = -1;
    for (int i = 0; i < SPOOL_STATE_COUNT; i++)
        spool->state_fd[i] = -1;
    spool->dir = strdup(dir);
    if (spool->dir == NULL) {
        r = -ENOMEM;
        goto out_fail;
    }

    if (owner && mkdir(dir, 0700) == 0)
        created = true; /* fsynced below, with its parent */
    else if (owner && errno != EEXIST) {
        r = spool_syserr(err, err_len, errno, "mkdir", dir, NULL);
        goto out_fail;
    }
    spool->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (spool->dir_fd < 0) {
        r = -errno;
        if (r == -ENOENT)
            util_err(err, err_len,
                     "spool '%s' does not exist (the daemon creates it at "
                     "its first start)",
                     dir);
        else
            spool_syserr(err, err_len, -r, "open", dir, NULL);
        goto out_fail;
    }
    if (owner) {
        if (fstat(spool->dir_fd, &st) < 0) {
            r = spool_syserr(err, err_len, errno, "fstat", dir, NULL);
            goto out_fail;
        }
        if (st.st_uid != geteuid() || (st.st_mode & 0022) != 0) {
            util_err(err, err_len,
                     "spool directory '%s' must be owned by uid %u and not "
                     "writable by group or others (it is uid %u, mode %04o)",
                     dir, (unsigned)geteuid(), (unsigned)st.st_uid,
                     (unsigned)(st.st_mode & 07777));
            r = -EPERM;
            goto out_fail;
        }
        spool->lock_fd =
            openat(spool->dir_fd, SPOOL_LOCK_NAME,
                   O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (spool->lock_fd < 0) {
            r = spool_syserr(err, err_len, errno, "open", dir, SPOOL_LOCK_NAME);
            goto out_fail;
        }
        if (flock(spool->lock_fd, LOCK_EX | LOCK_NB) < 0) {
            r = -errno;
            if (r == -EWOULDBLOCK)
                util_err(err, err_len,
                         "spool '%s' is in use by another stowbridge process "
                         "(lock '%s/" SPOOL_LOCK_NAME "')",
                         dir, dir);
            else
                spool_syserr(err, err_len, -r, "flock", dir, SPOOL_LOCK_NAME);
            goto out_fail;
        }
    }

    for (int i = 0; i < SPOOL_STATE_COUNT; i++) {
        r = spool_open_subdir(spool, spool_state_names[i], owner, &created,
                              &spool->state_fd[i], err, err_len);
        if (r < 0)
            goto out_fail;
    }
    r = spool_open_subdir(spool, SPOOL_META, owner, &created, &spool->meta_fd,
                          err, err_len);
    if (r < 0 && owner)
        goto out_fail;
    r = spool_open_subdir(spool, SPOOL_LOST_FOUND, owner, &created,
                          &spool->lost_found_fd, err, err_len);
    if (r < 0 && owner)
        goto out_fail;
    if (created) {
        r = spool_fsync_dir(spool, spool->dir_fd, NULL, err, err_len);
        if (r < 0)
            goto out_fail;
        /* The spool directory's own name (it may be new as well). */
        int parent =
            openat(spool->dir_fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (parent >= 0) {
            (void)spool__io.fsync(parent);
            close(parent);
        }
    }
    /* Operator tools (no lock) write nothing, not even the probe. */
    spool->tmpfile = owner && !spool__no_tmpfile && spool_probe_tmpfile(spool);
    spool->fs_journaled = spool__fs_mode == SPOOL__FS_DETECT
                              ? spool_fs_journaled(spool->dir_fd)
                              : spool__fs_mode == SPOOL__FS_JOURNALED;
    spool->datasync_flushes =
        spool__fs_mode == SPOOL__FS_DETECT
            ? spool_datasync_flushes(spool->dir_fd, spool->fs_journaled)
            : spool->fs_journaled;
    *ret_spool = spool;
    return 0;

out_fail:
    spool_close(spool);
    return r;
}

void spool_close(struct spool *spool)
{
    if (spool == NULL)
        return;
    if (spool->journal != NULL && spool__journal_crash_on_close)
        spool__journal_abandon(spool->journal);
    else
        spool_journal_close(spool->journal);
    for (int i = 0; i < SPOOL_STATE_COUNT; i++)
        if (spool->state_fd[i] >= 0)
            (void)close(spool->state_fd[i]);
    if (spool->lost_found_fd >= 0)
        (void)close(spool->lost_found_fd);
    if (spool->meta_fd >= 0)
        (void)close(spool->meta_fd);
    if (spool->lock_fd >= 0)
        (void)close(spool->lock_fd); /* releases the flock */
    if (spool->dir_fd >= 0)
        (void)close(spool->dir_fd);
    if (spool->sync_ready)
        for (int i = 0; i < SPOOL_STATE_COUNT; i++) {
            pthread_mutex_destroy(&spool->sync[i].mutex);
            pthread_cond_destroy(&spool->sync[i].done_cond);
        }
    free(spool->dir);
    free(spool);
}

const char *spool_dir(const struct spool *spool)
{
    return spool->dir;
}

int spool_entry_path(const struct spool *spool, enum spool_state state,
                     const char *id, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s/%s/%s" SPOOL_SUFFIX, spool->dir,
                     spool_state_name(state), id);
    if (n < 0 || (size_t)n >= len)
        return -ENAMETOOLONG;
    return 0;
}

/* Moves @name from directory @from_fd to lost+found/, never overwriting. */
static int spool_set_aside(struct spool *spool, int from_fd, const char *name)
{
    char target[NAME_MAX + 16];

    if (spool->lost_found_fd < 0)
        return -ENOENT;
    for (int i = 0; i < 1000; i++) {
        if (i == 0)
            snprintf(target, sizeof(target), "%s", name);
        else
            snprintf(target, sizeof(target), "%.*s.%d", NAME_MAX - 6, name, i);
        if (renameat2(from_fd, name, spool->lost_found_fd, target,
                      RENAME_NOREPLACE) == 0)
            return 0;
        if (errno != EEXIST)
            return -errno;
    }
    return -EEXIST;
}

/* Removes meta/ files whose entry is in no state; returns how many. */
static unsigned spool_remove_orphan_meta(struct spool *spool)
{
    unsigned removed = 0;
    struct dirent *de;
    DIR *d;
    int fd;

    if (spool->meta_fd < 0)
        return 0;
    fd = openat(spool->meta_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return 0;
    }
    while ((de = readdir(d)) != NULL) {
        char name[SPOOL_NAME_MAX];
        bool found = false;

        if (de->d_name[0] == '.')
            continue;
        if (!spool_id_valid(de->d_name)) {
            /* A temporary name left by a crash in spool_meta_write(). */
            if (unlinkat(spool->meta_fd, de->d_name, 0) == 0)
                removed++;
            continue;
        }
        snprintf(name, sizeof(name), "%.*s" SPOOL_SUFFIX, SPOOL_ID_MAX - 1,
                 de->d_name);
        for (int state = SPOOL_INCOMING; state < SPOOL_STATE_COUNT && !found;
             state++)
            found = faccessat(spool->state_fd[state], name, F_OK,
                              AT_SYMLINK_NOFOLLOW) == 0;
        if (!found && unlinkat(spool->meta_fd, de->d_name, 0) == 0)
            removed++;
    }
    closedir(d);
    return removed;
}

static void spool_meta_parse(char *text, struct spool_meta *ret_meta);

/* Writes journal record @jr's data as @state/<name>: through tmp/ and a
 * rename (which replaces a damaged file), labelled, fsynced. */
static int spool_restore_entry(struct spool *spool,
                               const struct spool_journal_record *jr,
                               enum spool_state state, const char *name)
{
    int tmp_fd = spool->state_fd[SPOOL_TMP];
    unsigned char *buf = malloc(64u * 1024u);
    bool labelled = jr->label_len == 0;
    uint64_t done = 0;
    int fd, r = 0;

    if (buf == NULL)
        return -ENOMEM;
    fd = openat(tmp_fd, name,
                O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        free(buf);
        return -errno;
    }
    while (done < jr->data_len && r == 0) {
        uint64_t left = jr->data_len - done;
        size_t n = left < 64u * 1024u ? (size_t)left : 64u * 1024u;
        ssize_t got =
            spool__io.pread(jr->seg_fd, buf, n, jr->data_offset + (off_t)done);
        if (got <= 0)
            r = got < 0 ? -errno : -EIO;
        else
            r = spool_write_all(fd, buf, (size_t)got);
        done += got > 0 ? (uint64_t)got : 0;
    }
    free(buf);
    if (r == 0 && !labelled)
        labelled = spool__io.fsetxattr(fd, SPOOL_LABEL_XATTR, jr->label,
                                       jr->label_len, 0) == 0;
    if (r == 0 && spool__io.fsync(fd) < 0)
        r = -errno;
    if (spool__io.close(fd) < 0 && r == 0)
        r = -errno;
    if (r == 0 &&
        spool__io.renameat(tmp_fd, name, spool->state_fd[state], name) < 0)
        r = -errno;
    if (r < 0) {
        (void)unlinkat(tmp_fd, name, 0);
        return r;
    }
    if (spool__io.fsync(spool->state_fd[state]) < 0 ||
        spool__io.fsync(tmp_fd) < 0)
        return -errno;
    if (!labelled) {
        struct spool_meta meta;
        char text[sizeof(jr->label)];
        char id[SPOOL_ID_MAX];
        memcpy(text, jr->label, sizeof(text));
        spool_meta_parse(text, &meta);
        if (spool_entry_name(name, id))
            (void)spool_meta_write(spool, id, &meta, NULL, 0);
    }
    return 0;
}

struct spool_replay {
    struct spool *spool;
    struct spool_recovery *rec;
};

/* One journal record at start-up: its entry must exist, whole, in some
 * state; where it does not (a crash lost the file's data or its name
 * before the checkpoint), it is written again from the record. An entry
 * delivered and removed within the last checkpoint interval comes back
 * too and is sent again (at-least-once, as for active/). */
static int spool_replay_record(void *ctx, const struct spool_journal_record *jr)
{
    struct spool_replay *replay = ctx;
    struct spool *spool = replay->spool;
    char name[SPOOL_NAME_MAX];
    int r;

    if (!spool_id_valid(jr->id))
        return 0; /* not one of ours: nothing to restore */
    spool_file_name(jr->id, name);
    for (int state = SPOOL_INCOMING; state < SPOOL_STATE_COUNT; state++) {
        struct stat st;
        uint32_t crc = 0;
        int fd = openat(spool->state_fd[state], name,
                        O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
            continue;
        bool intact = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
                      (uint64_t)st.st_size == jr->data_len &&
                      spool_journal_crc_of(fd, 0, jr->data_len, &crc) == 0 &&
                      crc == jr->data_crc;
        (void)close(fd);
        if (intact)
            return 0;
        r = spool_restore_entry(spool, jr, (enum spool_state)state, name);
        if (r == 0)
            replay->rec->journal_restored++;
        return r;
    }
    r = spool_restore_entry(spool, jr, SPOOL_INCOMING, name);
    if (r == 0)
        replay->rec->journal_restored++;
    return r;
}

int spool_recover(struct spool *spool, struct spool_recovery *ret_recovery,
                  char *err, size_t err_len)
{
    struct spool_recovery rec = { 0, 0, 0, 0, 0, 0 };
    bool changed[SPOOL_STATE_COUNT] = { false };
    int r = 0;

    /* First what the journal holds since its checkpoint: it may re-create
     * or repair entries, which the scan below then sees as any other. */
    struct spool_replay replay = { spool, &rec };
    r = spool_journal_replay(spool->dir_fd, spool->dir, spool_replay_record,
                             &replay, &rec.journal_records, err, err_len);
    if (r < 0)
        return r;

    for (int state = 0; state < SPOOL_STATE_COUNT && r == 0; state++) {
        int fd = spool->state_fd[state];
        int scan_fd = dup(fd);
        struct dirent *de;
        DIR *d;

        if (scan_fd < 0)
            return spool_syserr(err, err_len, errno, "dup", spool->dir,
                                spool_state_names[state]);
        d = fdopendir(scan_fd);
        if (d == NULL) {
            r = spool_syserr(err, err_len, errno, "opendir", spool->dir,
                             spool_state_names[state]);
            close(scan_fd);
            break;
        }
        rewinddir(d);
        while ((de = readdir(d)) != NULL) {
            char id[SPOOL_ID_MAX];
            struct stat st;

            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            if (state == SPOOL_TMP) {
                /* Never acknowledged: a partial receive. */
                if (unlinkat(fd, de->d_name, 0) == 0) {
                    rec.tmp_removed++;
                    changed[state] = true;
                    continue;
                }
                /* A directory or so: set it aside below. */
            }
            if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                continue; /* gone meanwhile */
            if (!spool_entry_name(de->d_name, id) || !S_ISREG(st.st_mode) ||
                st.st_size == 0 || state == SPOOL_TMP) {
                if (spool_set_aside(spool, fd, de->d_name) == 0) {
                    rec.set_aside++;
                    changed[state] = true;
                }
                continue;
            }
            if (state == SPOOL_ACTIVE) {
                if (spool__io.renameat(fd, de->d_name,
                                       spool->state_fd[SPOOL_INCOMING],
                                       de->d_name) == 0) {
                    rec.active_requeued++;
                    changed[SPOOL_ACTIVE] = true;
                    changed[SPOOL_INCOMING] = true;
                } else if (errno != ENOENT) {
                    r = spool_syserr(err, err_len, errno, "rename", spool->dir,
                                     de->d_name);
                    break;
                }
            }
        }
        closedir(d);
    }
    if (rec.set_aside > 0 && spool->lost_found_fd >= 0)
        (void)spool__io.fsync(spool->lost_found_fd);
    for (int state = 0; state < SPOOL_STATE_COUNT && r == 0; state++)
        if (changed[state])
            r = spool_fsync_dir(spool, spool->state_fd[state],
                                spool_state_names[state], err, err_len);
    if (r < 0)
        return r;
    rec.meta_removed = spool_remove_orphan_meta(spool);
    spool->recovered = true;
    *ret_recovery = rec;
    return 0;
}

int spool_journal_start(struct spool *spool, unsigned size_mb,
                        unsigned checkpoint_ms, unsigned max_record_kb,
                        char *err, size_t err_len)
{
    if (spool->lock_fd < 0 || !spool->recovered || spool->journal != NULL) {
        util_err(err, err_len,
                 "the journal starts once, in the owner, after recovery");
        return -EINVAL;
    }
    if (size_mb == 0)
        return spool_journal_remove(spool->dir_fd, spool->dir, err, err_len);
    int r = spool_journal_open(
        spool->dir_fd, spool->dir, size_mb, checkpoint_ms, max_record_kb,
        !spool->datasync_flushes, &spool->journal, err, err_len);
    if (r < 0)
        /* E.g. no room for every segment: the ones made would only take
         * space from the entries (recovery ran, so none holds a record). */
        (void)spool_journal_remove(spool->dir_fd, spool->dir, NULL, 0);
    return r;
}

bool spool_uses_journal(const struct spool *spool)
{
    return spool->journal != NULL;
}

void spool_commit_counts(const struct spool *spool,
                         struct spool_commit_stats *ret_stats)
{
    uint64_t records = 0, flushes = 0, checkpoints = 0;

    if (spool->journal != NULL)
        spool__journal_counts(spool->journal, &records, &flushes, &checkpoints);
    ret_stats->journal_up =
        spool->journal != NULL && spool_journal_up(spool->journal);
    ret_stats->journal_commits = atomic_load(&spool->journal_commits);
    ret_stats->file_commits = atomic_load(&spool->file_commits);
    ret_stats->journal_flushes = flushes;
}

void spool__journal_counts_of(const struct spool *spool, uint64_t *ret_records,
                              uint64_t *ret_flushes, uint64_t *ret_checkpoints)
{
    *ret_records = *ret_flushes = *ret_checkpoints = 0;
    if (spool->journal != NULL)
        spool__journal_counts(spool->journal, ret_records, ret_flushes,
                              ret_checkpoints);
}

int spool__journal_checkpoint(struct spool *spool)
{
    return spool->journal != NULL
               ? spool_journal_checkpoint(spool->journal, NULL, 0)
               : 0;
}

int spool_new_id(char ret_id[SPOOL_ID_MAX])
{
    uint64_t now = util_now_realtime_us();
    unsigned char rnd[8];
    int r = util_random_bytes(rnd, sizeof(rnd));

    if (r < 0)
        return r;
    snprintf(ret_id, SPOOL_ID_MAX,
             "%" PRIu64 ".%06" PRIu64 "-%02x%02x%02x%02x%02x%02x%02x%02x",
             now / 1000000u, now % 1000000u, rnd[0], rnd[1], rnd[2], rnd[3],
             rnd[4], rnd[5], rnd[6], rnd[7]);
    return 0;
}

int spool_tmp_create(struct spool *spool, char ret_id[SPOOL_ID_MAX],
                     int *ret_fd, char *err, size_t err_len)
{
    char id[SPOOL_ID_MAX];
    char name[SPOOL_NAME_MAX];
    int fd = -1;

    if (spool->tmpfile) {
        int r = spool_new_id(id);
        if (r < 0)
            return spool_syserr(err, err_len, -r, "getrandom", spool->dir,
                                NULL);
        fd = spool__io.openat(spool->state_fd[SPOOL_INCOMING], ".",
                              O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd < 0)
            return spool_syserr(err, err_len, errno, "open", spool->dir,
                                "incoming/ (O_TMPFILE)");
        memcpy(ret_id, id, strlen(id) + 1);
        *ret_fd = fd;
        return 0;
    }
    for (int attempt = 0; attempt < 8; attempt++) {
        int r = spool_new_id(id);
        if (r < 0)
            return spool_syserr(err, err_len, -r, "getrandom", spool->dir,
                                NULL);
        spool_file_name(id, name);
        fd = spool__io.openat(
            spool->state_fd[SPOOL_TMP], name,
            O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0)
            break;
        if (errno != EEXIST) {
            char where[SPOOL_NAME_MAX + 8];
            snprintf(where, sizeof(where), "tmp/%s", name);
            return spool_syserr(err, err_len, errno, "open", spool->dir, where);
        }
    }
    if (fd < 0)
        return spool_syserr(err, err_len, EEXIST, "open", spool->dir, "tmp");
    memcpy(ret_id, id, strlen(id) + 1);
    *ret_fd = fd;
    return 0;
}

int spool_tmp_path(const struct spool *spool, const char *id, int fd, char *buf,
                   size_t len)
{
    int n;

    if (spool->tmpfile)
        n = snprintf(buf, len, "/proc/self/fd/%d", fd);
    else
        n = snprintf(buf, len, "%s/tmp/%s" SPOOL_SUFFIX, spool->dir, id);
    if (n < 0 || (size_t)n >= len)
        return -ENAMETOOLONG;
    return 0;
}

bool spool_uses_tmpfile(const struct spool *spool)
{
    return spool->tmpfile;
}

int spool_write_all(int fd, const void *buf, size_t len)
{
    const unsigned char *p = buf;

    while (len > 0) {
        ssize_t n = spool__io.write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/*
 * Makes every link or rename done in @state's directory before this call
 * durable: a group commit (see the top of this file). Returns 0 or the
 * negative errno of the fsync that covered this call.
 */
static int spool_dir_sync(struct spool *spool, enum spool_state state)
{
    struct spool_dirsync *s = &spool->sync[state];
    struct spool_sync_waiter me = { 0, 0, false, NULL };

    pthread_mutex_lock(&s->mutex);
    me.ticket = ++s->tickets;
    me.next = s->waiters;
    s->waiters = &me;
    while (!me.done) {
        if (s->running) {
            pthread_cond_wait(&s->done_cond, &s->mutex);
            continue;
        }
        /* Lead the next fsync: it covers every ticket handed out so far,
         * since each was taken after its link or rename returned. */
        uint64_t upto = s->tickets;
        uint64_t covered = 0;
        s->running = true;
        pthread_mutex_unlock(&s->mutex);
        int r = spool__io.fsync(spool->state_fd[state]) < 0 ? -errno : 0;
        pthread_mutex_lock(&s->mutex);
        s->running = false;
        for (struct spool_sync_waiter **pp = &s->waiters; *pp != NULL;) {
            struct spool_sync_waiter *w = *pp;
            if (w->ticket <= upto) {
                w->result = r;
                w->done = true;
                *pp = w->next;
                covered++;
            } else {
                pp = &w->next;
            }
        }
        s->fsyncs++;
        s->entries += covered;
        pthread_cond_broadcast(&s->done_cond);
    }
    pthread_mutex_unlock(&s->mutex);
    return me.result;
}

void spool__dirsync_counts(const struct spool *spool, enum spool_state state,
                           uint64_t *ret_fsyncs, uint64_t *ret_entries)
{
    struct spool_dirsync *s = (struct spool_dirsync *)&spool->sync[state];

    pthread_mutex_lock(&s->mutex);
    *ret_fsyncs = s->fsyncs;
    *ret_entries = s->entries;
    pthread_mutex_unlock(&s->mutex);
}

/* The label's text: the meta/ format, limited to what the receiver knows. */
static int spool_label_text(const struct spool_meta *label, char *buf,
                            size_t len);

/* Writes the label onto @fd; true if the file system took it. */
static bool spool_label(int fd, const struct spool_meta *label)
{
    char text[SPOOL_LABEL_MAX];
    int n = spool_label_text(label, text, sizeof(text));

    if (n < 0)
        return false;
    return spool__io.fsetxattr(fd, SPOOL_LABEL_XATTR, text, (size_t)n, 0) == 0;
}

/* Gives the O_TMPFILE file @fd its first and only name, incoming/@name
 * (@where names it in the error). */
static int spool_link_incoming(struct spool *spool, int fd, const char *name,
                               const char *where, char *err, size_t err_len)
{
    char fd_path[64];

    spool_fd_path(fd, fd_path, sizeof(fd_path));
    if (spool__io.linkat(AT_FDCWD, fd_path, spool->state_fd[SPOOL_INCOMING],
                         name, AT_SYMLINK_FOLLOW) < 0)
        return spool_syserr(err, err_len, errno, "linkat", spool->dir, where);
    return 0;
}

/*
 * The journal's commit: the record made durable (one flush, shared with
 * concurrent commits), then the entry named in incoming/ with no fsync of
 * its own (the journal's checkpoint makes it durable). -EAGAIN: the
 * journal does not take it (too big, no room now); nothing was done and
 * @fd is still open.
 */
static int spool_commit_journal(struct spool *spool, const char *name,
                                const char *id, int fd, const char *where,
                                const struct spool_meta *label, char *err,
                                size_t err_len)
{
    int incoming_fd = spool->state_fd[SPOOL_INCOMING];
    char text[SPOOL_LABEL_MAX];
    struct stat st;
    uint64_t seq = 0;
    int n = 0;
    int r;

    if (label != NULL && (n = spool_label_text(label, text, sizeof(text))) < 0)
        n = 0;
    if (fstat(fd, &st) < 0 || (uint64_t)st.st_size > spool__journal_file_max ||
        (uint64_t)st.st_size > spool_journal_max_record(spool->journal))
        return -EAGAIN;
    r = spool_journal_append(spool->journal, id, text, (size_t)n, NULL, fd,
                             (uint64_t)st.st_size, &seq, err, err_len);
    if (r == -EAGAIN)
        return r;
    if (r < 0) {
        (void)spool__io.close(fd);
        if (!spool->tmpfile)
            (void)unlinkat(spool->state_fd[SPOOL_TMP], name, 0);
        return r;
    }
    if (spool->tmpfile) {
        r = spool_link_incoming(spool, fd, name, where, err, err_len);
        if (r < 0) {
            (void)spool__io.close(fd);
            goto out;
        }
    } else if (spool__io.renameat(spool->state_fd[SPOOL_TMP], name, incoming_fd,
                                  name) < 0) {
        r = spool_syserr(err, err_len, errno, "rename", spool->dir, where);
        (void)spool__io.close(fd);
        (void)unlinkat(spool->state_fd[SPOOL_TMP], name, 0);
        goto out;
    }
    if (spool__io.close(fd) < 0) {
        r = spool_syserr(err, err_len, errno, "close", spool->dir, where);
        (void)unlinkat(incoming_fd, name, 0);
    }
out:
    if (r < 0)
        spool_journal_cancel(spool->journal, seq); /* refused: not replayed */
    else
        spool_journal_finish(spool->journal, seq);
    return r;
}

int spool_commit_labelled(struct spool *spool, const char *id, int fd,
                          const struct spool_meta *label, char *err,
                          size_t err_len)
{
    int tmp_fd = spool->state_fd[SPOOL_TMP];
    int incoming_fd = spool->state_fd[SPOOL_INCOMING];
    char name[SPOOL_NAME_MAX];
    char where[SPOOL_NAME_MAX + 32];
    bool labelled;
    int r;

    if (!spool_id_valid(id)) {
        if (fd >= 0)
            (void)spool__io.close(fd);
        util_err(err, err_len, "invalid spool entry ID");
        return -EINVAL;
    }
    spool_file_name(id, name);
    if (spool->tmpfile)
        snprintf(where, sizeof(where), "incoming/(O_TMPFILE for %s)", name);
    else
        snprintf(where, sizeof(where), "tmp/%s", name);

    /* The label rides in the inode, made durable by the same fsync. */
    labelled = label == NULL || spool_label(fd, label);
    if (spool->journal != NULL && !spool__journal_refuses) {
        r = spool_commit_journal(spool, name, id, fd, where, label, err,
                                 err_len);
        if (r != -EAGAIN) {
            if (r == 0 && !labelled)
                (void)spool_meta_write(spool, id, label, NULL, 0);
            if (r == 0)
                atomic_fetch_add(&spool->journal_commits, 1);
            return r;
        }
        /* No room in the journal now: the file's own commit. */
    }
    if (spool__io.fsync(fd) < 0) {
        r = spool_syserr(err, err_len, errno, "fsync", spool->dir, where);
        (void)spool__io.close(fd);
        goto out_unlink_tmp;
    }
    if (spool->tmpfile) {
        /* The first and only name: the entry appears whole in incoming/
         * and no other directory ever names it. */
        r = spool_link_incoming(spool, fd, name, where, err, err_len);
        if (r < 0) {
            (void)spool__io.close(fd);
            return r;
        }
        /* The link raised the inode's link count from 0 to 1, and
         * fsync(incoming/) writes the directory, not the file's inode:
         * without a journal to carry both, the entry's name could reach
         * the disk with an inode e2fsck then deletes (found by the
         * power-loss test, tests/power). futimens() marks the inode
         * dirty, so that fsync() writes it. With a journal the link and
         * the inode are one transaction, which fsync(incoming/) commits. */
        if (!spool->fs_journaled &&
            (futimens(fd, NULL) < 0 || spool__io.fsync(fd) < 0)) {
            r = spool_syserr(err, err_len, errno, "fsync", spool->dir, where);
            (void)spool__io.close(fd);
            goto out_unlink_incoming;
        }
        if (spool__io.close(fd) < 0) {
            r = spool_syserr(err, err_len, errno, "close", spool->dir, where);
            goto out_unlink_incoming;
        }
        r = spool_dir_sync(spool, SPOOL_INCOMING);
        if (r < 0) {
            r = spool_syserr(err, err_len, -r, "fsync", spool->dir, "incoming");
            goto out_unlink_incoming;
        }
    } else {
        if (spool__io.close(fd) < 0) {
            r = spool_syserr(err, err_len, errno, "close", spool->dir, where);
            goto out_unlink_tmp;
        }
        if (spool__io.renameat(tmp_fd, name, incoming_fd, name) < 0) {
            r = spool_syserr(err, err_len, errno, "rename", spool->dir, where);
            goto out_unlink_tmp;
        }
        r = spool_dir_sync(spool, SPOOL_INCOMING);
        if (r < 0) {
            r = spool_syserr(err, err_len, -r, "fsync", spool->dir, "incoming");
            goto out_unlink_incoming;
        }
        /* Without a journal that makes the rename atomic, tmp/ may still
         * name the file after a crash until tmp/ itself is durable. */
        r = spool_dir_sync(spool, SPOOL_TMP);
        if (r < 0) {
            r = spool_syserr(err, err_len, -r, "fsync", spool->dir, "tmp");
            goto out_unlink_incoming;
        }
    }
    if (!labelled) {
        /* The file system refused the label: keep it beside the entry as
         * before (not fsynced; its loss costs only a re-read). */
        (void)spool_meta_write(spool, id, label, NULL, 0);
    }
    atomic_fetch_add(&spool->file_commits, 1);
    return 0;

out_unlink_incoming:
    /* Never acknowledged: it must not be uploaded as if it were. */
    (void)unlinkat(incoming_fd, name, 0);
    return r;
out_unlink_tmp:
    if (!spool->tmpfile)
        (void)unlinkat(tmp_fd, name, 0);
    return r;
}

size_t spool_held_max(const struct spool *spool)
{
    if (spool->journal == NULL || !spool_journal_up(spool->journal))
        return 0;
    return (size_t)spool_journal_max_record(spool->journal);
}

int spool_commit_held(struct spool *spool, const char *id, const void *data,
                      size_t len, const struct spool_meta *label,
                      uint64_t *ret_seq, char *err, size_t err_len)
{
    char text[SPOOL_LABEL_MAX];
    int n = 0;
    int r;

    if (!spool_id_valid(id)) {
        util_err(err, err_len, "invalid spool entry ID");
        return -EINVAL;
    }
    if (spool->journal == NULL || spool__journal_refuses)
        return -EAGAIN;
    if (label != NULL && (n = spool_label_text(label, text, sizeof(text))) < 0)
        n = 0;
    r = spool_journal_append(spool->journal, id, text, (size_t)n, data, -1,
                             (uint64_t)len, ret_seq, err, err_len);
    if (r == 0)
        atomic_fetch_add(&spool->journal_commits, 1);
    return r;
}

int spool_publish_held(struct spool *spool, const char *id, uint64_t seq,
                       const void *data, size_t len,
                       const struct spool_meta *label, char *err,
                       size_t err_len)
{
    char made_id[SPOOL_ID_MAX];
    char name[SPOOL_NAME_MAX];
    char made[SPOOL_NAME_MAX];
    char where[SPOOL_NAME_MAX + 16];
    char why[640];
    bool labelled;
    int fd = -1;
    int r;

    /* The entry keeps the ID it was acknowledged under (the journal's
     * record names it); spool_tmp_create()'s own ID only names tmp/. */
    spool_file_name(id, name);
    snprintf(where, sizeof(where), "incoming/%s", name);
    r = spool_tmp_create(spool, made_id, &fd, why, sizeof(why));
    if (r < 0)
        goto out_keep;
    spool_file_name(made_id, made);
    r = spool_write_all(fd, data, len);
    if (r < 0) {
        spool_syserr(why, sizeof(why), -r, "write", spool->dir, where);
        goto out_close;
    }
    labelled = label == NULL || spool_label(fd, label);
    if (spool->tmpfile)
        r = spool_link_incoming(spool, fd, name, where, why, sizeof(why));
    else if (spool__io.renameat(spool->state_fd[SPOOL_TMP], made,
                                spool->state_fd[SPOOL_INCOMING], name) < 0)
        r = spool_syserr(why, sizeof(why), errno, "rename", spool->dir, where);
    if (r < 0)
        goto out_close;
    if (spool__io.close(fd) < 0) {
        /* Its data may never reach the disk: the record restores it. */
        r = spool_syserr(why, sizeof(why), errno, "close", spool->dir, where);
        (void)unlinkat(spool->state_fd[SPOOL_INCOMING], name, 0);
        goto out_keep;
    }
    if (!labelled)
        (void)spool_meta_write(spool, id, label, NULL, 0);
    spool_journal_finish(spool->journal, seq);
    return 0;

out_close:
    (void)spool__io.close(fd);
    if (!spool->tmpfile)
        (void)unlinkat(spool->state_fd[SPOOL_TMP], made, 0);
out_keep:
    util_err(err, err_len, "%s", why);
    spool_journal_keep(spool->journal, seq, why);
    return r;
}

int spool_commit(struct spool *spool, const char *id, int fd, char *err,
                 size_t err_len)
{
    return spool_commit_labelled(spool, id, fd, NULL, err, err_len);
}

void spool_discard(struct spool *spool, const char *id, int fd)
{
    char name[SPOOL_NAME_MAX];

    if (fd >= 0)
        (void)close(fd);
    if (!spool_id_valid(id))
        return;
    spool_file_name(id, name);
    (void)unlinkat(spool->state_fd[SPOOL_TMP], name, 0);
}

int spool_move(struct spool *spool, const char *id, enum spool_state from,
               enum spool_state to, char *err, size_t err_len)
{
    char name[SPOOL_NAME_MAX];

    if (!spool_id_valid(id) || (unsigned)from >= SPOOL_STATE_COUNT ||
        (unsigned)to >= SPOOL_STATE_COUNT) {
        util_err(err, err_len, "invalid spool entry or state");
        return -EINVAL;
    }
    spool_file_name(id, name);
    if (spool__io.renameat(spool->state_fd[from], name, spool->state_fd[to],
                           name) < 0) {
        if (errno == ENOENT)
            return -ENOENT;
        return spool_syserr(err, err_len, errno, "rename", spool->dir, name);
    }
    if (spool__io.fsync(spool->state_fd[to]) < 0)
        return spool_syserr(err, err_len, errno, "fsync", spool->dir,
                            spool_state_names[to]);
    if (spool__io.fsync(spool->state_fd[from]) < 0)
        return spool_syserr(err, err_len, errno, "fsync", spool->dir,
                            spool_state_names[from]);
    return 0;
}

int spool_stats(const struct spool *spool, uint64_t now_us,
                struct spool_state_stats ret_stats[SPOOL_STATE_COUNT],
                char *err, size_t err_len)
{
    struct spool_state_stats stats[SPOOL_STATE_COUNT];

    memset(stats, 0, sizeof(stats));
    for (int state = 0; state < SPOOL_STATE_COUNT; state++) {
        int fd = spool->state_fd[state];
        int scan_fd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        uint64_t oldest_us = UINT64_MAX;
        struct dirent *de;
        DIR *d;

        if (scan_fd < 0)
            return spool_syserr(err, err_len, errno, "open", spool->dir,
                                spool_state_names[state]);
        d = fdopendir(scan_fd);
        if (d == NULL) {
            int r = spool_syserr(err, err_len, errno, "opendir", spool->dir,
                                 spool_state_names[state]);
            close(scan_fd);
            return r;
        }
        while ((de = readdir(d)) != NULL) {
            char id[SPOOL_ID_MAX];
            uint64_t arrival;
            struct stat st;

            if (!spool_entry_name(de->d_name, id))
                continue;
            if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
                !S_ISREG(st.st_mode))
                continue; /* moved away during the scan */
            stats[state].count++;
            stats[state].bytes += (uint64_t)st.st_size;
            if (spool_id_arrival_us(id, &arrival) == 0 && arrival < oldest_us)
                oldest_us = arrival;
        }
        closedir(d);
        if (stats[state].count > 0 && oldest_us < now_us)
            stats[state].oldest_s = (now_us - oldest_us) / 1000000u;
    }
    memcpy(ret_stats, stats, sizeof(stats));
    return 0;
}

int spool_free_mb(const struct spool *spool, uint64_t *ret_mb)
{
    struct statvfs vfs;

    if (fstatvfs(spool->dir_fd, &vfs) < 0)
        return -errno;
    *ret_mb = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize / (1024 * 1024);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Upload support: meta/ files, listing, deferral, removal             */
/* ------------------------------------------------------------------ */

/* Copies @src into @dst (capacity @len), replacing control characters so
 * that a value can never break the line format. */
static void spool_clean_copy(char *dst, size_t len, const char *src)
{
    size_t i = 0;

    for (; src[i] != '\0' && i + 1 < len; i++)
        dst[i] = (unsigned char)src[i] < 0x20 ? ' ' : src[i];
    dst[i] = '\0';
}

int spool_meta_write(struct spool *spool, const char *id,
                     const struct spool_meta *meta, char *err, size_t err_len)
{
    char text[1024];
    char study[65];
    char sop[65];
    char ae[17];
    char error[256];
    char copy_of[SPOOL_ID_MAX];
    char tmp_name[SPOOL_ID_MAX + 8];
    int fd;
    int n;
    int r;

    if (!spool_id_valid(id) || spool->meta_fd < 0)
        return -EINVAL;
    spool_clean_copy(study, sizeof(study), meta->study_uid);
    spool_clean_copy(sop, sizeof(sop), meta->sop_uid);
    spool_clean_copy(ae, sizeof(ae), meta->calling_ae);
    spool_clean_copy(error, sizeof(error), meta->last_error);
    spool_clean_copy(copy_of, sizeof(copy_of), meta->copy_of);
    n = snprintf(text, sizeof(text),
                 "study=%s\nsop=%s\nfrom=%s\nattempts=%u\n"
                 "last_attempt_us=%lld\nlast_http_status=%ld\n"
                 "last_reason=%u\nlast_error=%s\ncopy_of=%s\n",
                 study, sop, ae, (unsigned)meta->attempts,
                 (long long)meta->last_attempt_us, meta->last_http_status,
                 (unsigned)meta->last_reason, error, copy_of);
    if (n < 0 || (size_t)n >= sizeof(text))
        return -EINVAL;
    snprintf(tmp_name, sizeof(tmp_name), ".%s", id);
    fd = openat(spool->meta_fd, tmp_name,
                O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return spool_syserr(err, err_len, errno, "open", spool->dir, "meta");
    r = spool_write_all(fd, text, (size_t)n);
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r == 0 && renameat(spool->meta_fd, tmp_name, spool->meta_fd, id) < 0)
        r = -errno;
    if (r < 0) {
        (void)unlinkat(spool->meta_fd, tmp_name, 0);
        return spool_syserr(err, err_len, -r, "write", spool->dir, "meta");
    }
    return 0;
}

static int spool_label_text(const struct spool_meta *label, char *buf,
                            size_t len)
{
    char study[65];
    char sop[65];
    char ae[17];
    int n;

    spool_clean_copy(study, sizeof(study), label->study_uid);
    spool_clean_copy(sop, sizeof(sop), label->sop_uid);
    spool_clean_copy(ae, sizeof(ae), label->calling_ae);
    n = snprintf(buf, len, "study=%s\nsop=%s\nfrom=%s\n", study, sop, ae);
    if (n < 0 || (size_t)n >= len)
        return -EINVAL;
    return n;
}

/* Parses the meta/ line format (also the label's) in @text (modified). */
static void spool_meta_parse(char *text, struct spool_meta *ret_meta)
{
    struct spool_meta meta;

    memset(&meta, 0, sizeof(meta));
    for (char *line = text; line != NULL && *line != '\0';) {
        char *next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        char *eq = strchr(line, '=');
        if (eq != NULL) {
            *eq = '\0';
            const char *v = eq + 1;
            if (strcmp(line, "study") == 0)
                spool_clean_copy(meta.study_uid, sizeof(meta.study_uid), v);
            else if (strcmp(line, "sop") == 0)
                spool_clean_copy(meta.sop_uid, sizeof(meta.sop_uid), v);
            else if (strcmp(line, "from") == 0)
                spool_clean_copy(meta.calling_ae, sizeof(meta.calling_ae), v);
            else if (strcmp(line, "attempts") == 0)
                meta.attempts = (uint32_t)strtoul(v, NULL, 10);
            else if (strcmp(line, "last_attempt_us") == 0)
                meta.last_attempt_us = strtoll(v, NULL, 10);
            else if (strcmp(line, "last_http_status") == 0)
                meta.last_http_status = strtol(v, NULL, 10);
            else if (strcmp(line, "last_reason") == 0)
                meta.last_reason = (uint16_t)strtoul(v, NULL, 10);
            else if (strcmp(line, "last_error") == 0)
                spool_clean_copy(meta.last_error, sizeof(meta.last_error), v);
            else if (strcmp(line, "copy_of") == 0 && spool_id_valid(v))
                spool_clean_copy(meta.copy_of, sizeof(meta.copy_of), v);
        }
        line = next;
    }
    *ret_meta = meta;
}

/* Reads the label of entry @id, in whichever state it is; -ENOENT if the
 * entry is gone or has no label. */
static int spool_label_read(const struct spool *spool, const char *id,
                            struct spool_meta *ret_meta)
{
    char name[SPOOL_NAME_MAX];
    char text[SPOOL_LABEL_MAX + 1];

    spool_file_name(id, name);
    for (int state = SPOOL_INCOMING; state < SPOOL_STATE_COUNT; state++) {
        int fd = openat(spool->state_fd[state], name,
                        O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
            continue; /* not in this state (or moved meanwhile) */
        ssize_t n = fgetxattr(fd, SPOOL_LABEL_XATTR, text, SPOOL_LABEL_MAX);
        (void)close(fd);
        if (n < 0)
            return -ENOENT; /* no label (or none readable) */
        text[n] = '\0';
        spool_meta_parse(text, ret_meta);
        return 0;
    }
    return -ENOENT;
}

int spool_meta_read(const struct spool *spool, const char *id,
                    struct spool_meta *ret_meta)
{
    char text[1100];
    ssize_t n;
    int fd;

    if (!spool_id_valid(id) || spool->meta_fd < 0)
        return -EINVAL;
    fd = openat(spool->meta_fd, id, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return spool_label_read(spool, id, ret_meta);
        return -errno;
    }
    n = read(fd, text, sizeof(text) - 1);
    (void)close(fd);
    if (n < 0)
        return -EIO;
    text[n] = '\0';
    spool_meta_parse(text, ret_meta);
    return 0;
}

static int spool_entry_cmp(const void *a, const void *b)
{
    return strcmp(((const struct spool_entry *)a)->id,
                  ((const struct spool_entry *)b)->id);
}

int spool_list(const struct spool *spool, enum spool_state state,
               struct spool_entry **ret_entries, size_t *ret_count, char *err,
               size_t err_len)
{
    struct spool_entry *entries = NULL;
    size_t count = 0;
    size_t cap = 0;
    struct dirent *de;
    DIR *d;
    int fd;

    if ((unsigned)state >= SPOOL_STATE_COUNT)
        return -EINVAL;
    fd =
        openat(spool->state_fd[state], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return spool_syserr(err, err_len, errno, "open", spool->dir,
                            spool_state_names[state]);
    d = fdopendir(fd);
    if (d == NULL) {
        int r = spool_syserr(err, err_len, errno, "opendir", spool->dir,
                             spool_state_names[state]);
        close(fd);
        return r;
    }
    while ((de = readdir(d)) != NULL) {
        char id[SPOOL_ID_MAX];
        struct stat st;

        if (!spool_entry_name(de->d_name, id))
            continue;
        if (fstatat(spool->state_fd[state], de->d_name, &st,
                    AT_SYMLINK_NOFOLLOW) < 0 ||
            !S_ISREG(st.st_mode))
            continue;
        if (count == cap) {
            size_t new_cap = cap == 0 ? 64 : cap * 2;
            struct spool_entry *grown =
                realloc(entries, new_cap * sizeof(*entries));
            if (grown == NULL) {
                free(entries);
                closedir(d);
                return -ENOMEM;
            }
            entries = grown;
            cap = new_cap;
        }
        memcpy(entries[count].id, id, strlen(id) + 1);
        entries[count].size = (uint64_t)st.st_size;
        entries[count].mtime_us =
            (int64_t)st.st_mtim.tv_sec * 1000000 + st.st_mtim.tv_nsec / 1000;
        count++;
    }
    closedir(d);
    if (count > 1)
        qsort(entries, count, sizeof(*entries), spool_entry_cmp);
    *ret_entries = entries;
    *ret_count = count;
    return 0;
}

int spool_defer(struct spool *spool, const char *id, enum spool_state from,
                int64_t not_before_us, char *err, size_t err_len)
{
    char name[SPOOL_NAME_MAX];
    struct timespec times[2];

    if (!spool_id_valid(id) || (unsigned)from >= SPOOL_STATE_COUNT)
        return -EINVAL;
    spool_file_name(id, name);
    times[0].tv_sec = 0;
    times[0].tv_nsec = UTIME_OMIT;
    times[1].tv_sec = (time_t)(not_before_us / 1000000);
    times[1].tv_nsec = (long)(not_before_us % 1000000) * 1000;
    if (utimensat(spool->state_fd[from], name, times, AT_SYMLINK_NOFOLLOW) <
        0) {
        if (errno == ENOENT)
            return -ENOENT;
        return spool_syserr(err, err_len, errno, "utimensat", spool->dir, name);
    }
    if (from == SPOOL_DEFERRED)
        return 0;
    return spool_move(spool, id, from, SPOOL_DEFERRED, err, err_len);
}

int spool_remove(struct spool *spool, const char *id, enum spool_state from,
                 char *err, size_t err_len)
{
    char name[SPOOL_NAME_MAX];

    if (!spool_id_valid(id) || (unsigned)from >= SPOOL_STATE_COUNT)
        return -EINVAL;
    spool_file_name(id, name);
    if (unlinkat(spool->state_fd[from], name, 0) < 0) {
        if (errno == ENOENT)
            return -ENOENT;
        return spool_syserr(err, err_len, errno, "unlink", spool->dir, name);
    }
    if (spool->meta_fd >= 0)
        (void)unlinkat(spool->meta_fd, id, 0);
    if (spool__io.fsync(spool->state_fd[from]) < 0)
        return spool_syserr(err, err_len, errno, "fsync", spool->dir,
                            spool_state_names[from]);
    return 0;
}

/* ------------------------------------------------------------------ */
/* The pause control file                                              */
/* ------------------------------------------------------------------ */

int spool_pause_write(struct spool *spool, const struct spool_pause *pause,
                      char *err, size_t err_len)
{
    char reason[sizeof(pause->reason)];
    char text[320];
    int fd;
    int n;
    int r;

    spool_clean_copy(reason, sizeof(reason), pause->reason);
    n = snprintf(text, sizeof(text),
                 "until_us=%lld\nsince_us=%lld\n"
                 "reason=%s\n",
                 (long long)pause->until_us, (long long)pause->since_us,
                 reason);
    if (n < 0 || (size_t)n >= sizeof(text))
        return -EINVAL;
    fd = openat(spool->dir_fd, SPOOL_PAUSE_TMP,
                O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return spool_syserr(err, err_len, errno, "open", spool->dir,
                            SPOOL_PAUSE_TMP);
    r = spool_write_all(fd, text, (size_t)n);
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r == 0 && renameat(spool->dir_fd, SPOOL_PAUSE_TMP, spool->dir_fd,
                           SPOOL_PAUSE_NAME) < 0)
        r = -errno;
    if (r < 0) {
        (void)unlinkat(spool->dir_fd, SPOOL_PAUSE_TMP, 0);
        return spool_syserr(err, err_len, -r, "write", spool->dir,
                            SPOOL_PAUSE_NAME);
    }
    return 0;
}

int spool_pause_read(const struct spool *spool, struct spool_pause *ret_pause)
{
    struct spool_pause pause;
    bool have_until = false;
    char text[512];
    ssize_t n;
    int fd;

    fd = openat(spool->dir_fd, SPOOL_PAUSE_NAME,
                O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    n = read(fd, text, sizeof(text) - 1);
    (void)close(fd);
    if (n < 0)
        return -EIO;
    text[n] = '\0';
    memset(&pause, 0, sizeof(pause));
    for (char *line = text; line != NULL && *line != '\0';) {
        char *next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        char *eq = strchr(line, '=');
        if (eq != NULL) {
            *eq = '\0';
            const char *v = eq + 1;
            char *end;
            if (strcmp(line, "until_us") == 0) {
                errno = 0;
                pause.until_us = strtoll(v, &end, 10);
                have_until = errno == 0 && end != v && *end == '\0';
            } else if (strcmp(line, "since_us") == 0) {
                pause.since_us = strtoll(v, NULL, 10);
            } else if (strcmp(line, "reason") == 0) {
                spool_clean_copy(pause.reason, sizeof(pause.reason), v);
            }
        }
        line = next;
    }
    if (!have_until)
        return -EINVAL;
    *ret_pause = pause;
    return 0;
}

int spool_pause_clear(struct spool *spool, char *err, size_t err_len)
{
    if (unlinkat(spool->dir_fd, SPOOL_PAUSE_NAME, 0) < 0) {
        if (errno == ENOENT)
            return -ENOENT;
        return spool_syserr(err, err_len, errno, "unlink", spool->dir,
                            SPOOL_PAUSE_NAME);
    }
    return 0;
}
