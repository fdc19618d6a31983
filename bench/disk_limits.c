/* SPDX-License-Identifier: Apache-2.0 */
/*
 * disk_limits - what this disk allows, measured fresh beside every receive
 * benchmark: durable writes per second of one instance-sized file by
 * several commit sequences, so a result can say how far it is from the
 * physical limit.
 *
 * usage: disk_limits DIR SIZE_BYTES COUNT [WRITERS [ROUNDS]]
 *
 * Rows (one writer each unless WRITERS > 1, which runs every row with that
 * many threads at once and sums):
 *   old-commit              what stowbridge did before issue 16: write,
 *                           fsync file, rename tmp/ -> incoming/, fsync
 *                           incoming/, fsync tmp/, then a meta/ sidecar
 *                           (create, write, rename; not fsynced)
 *   rename+fsync-both       the same without the sidecar (the full POSIX
 *                           rename sequence)
 *   rename+fsync-dir        the same without the fsync of tmp/ (enough
 *                           only where a journal makes the rename atomic)
 *   tmpfile+linkat          O_TMPFILE in incoming/, write, fsync, linkat,
 *                           fsync incoming/ (no second directory at all)
 *   tmpfile+linkat+xattr    the same with a 20-byte user xattr (the
 *                           calling AE) set before the fsync: stowbridge's
 *                           commit, the label that replaces the sidecar
 *   tmpfile+xattr-150B      the same with a 150-byte xattr (both UIDs
 *                           too: on ext4 with 256-byte inodes it no longer
 *                           fits in the inode and costs a block)
 *   prealloc+fdatasync      pwrite into a pre-allocated, pre-zeroed file,
 *                           fdatasync (a journal-style spool's cost)
 *   no-fsync                write + rename only (what storescp does)
 * ROUNDS > 1 runs all rows ROUNDS times, alternating (row 1, row 2, ...,
 * row 1, ...), so the disk's minute-to-minute swings hit every row alike;
 * each row then reports its median and its range.
 * Prints "ROW writers=W per_s=N ms_per=M [min..max]" lines. What it wrote
 * is moved into DIR/trash/, not deleted (the caller removes DIR): on ext4
 * without a journal, inode allocation skips every inode deleted in the
 * last 60-360 s, reading its inode-table block each time, which would make
 * the rows after a deletion CPU-bound.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

enum row {
    ROW_OLD_COMMIT,
    ROW_RENAME_FSYNC_BOTH,
    ROW_RENAME_FSYNC_DIR,
    ROW_TMPFILE_LINKAT,
    ROW_TMPFILE_LINKAT_XATTR,
    ROW_TMPFILE_LINKAT_XATTR_BIG,
    ROW_PREALLOC_FDATASYNC,
    ROW_NO_FSYNC,
    ROW_COUNT,
};

static const char *const row_names[ROW_COUNT] = {
    [ROW_OLD_COMMIT] = "old-commit",
    [ROW_RENAME_FSYNC_BOTH] = "rename+fsync-both",
    [ROW_RENAME_FSYNC_DIR] = "rename+fsync-dir",
    [ROW_TMPFILE_LINKAT] = "tmpfile+linkat",
    [ROW_TMPFILE_LINKAT_XATTR] = "tmpfile+linkat+xattr",
    [ROW_TMPFILE_LINKAT_XATTR_BIG] = "tmpfile+xattr-150B",
    [ROW_PREALLOC_FDATASYNC] = "prealloc+fdatasync",
    [ROW_NO_FSYNC] = "no-fsync",
};

#define MAX_ROUNDS 32

/* The label stowbridge sets (the calling AE title). */
static const char label[] = "from=MODALITY_AE_01\n";
/* A label with the UIDs as well. */
static const char big_label[] =
    "study=1.2.826.0.1.3680043.8.498.12345678901234567890123456789012345\n"
    "sop=1.2.826.0.1.3680043.8.498.98765432109876543210987654321098765\n"
    "from=MODALITY_AE_01\n";

struct job {
    const char *dir;
    unsigned run; /* this row's run, for unique names in trash/ */
    size_t size;
    unsigned count;
    unsigned writer;
    enum row row;
    unsigned char *data;
    int error;
    double elapsed; /* the commit loop only, seconds */
};

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int write_all(int fd, const unsigned char *p, size_t n, off_t at,
                     bool positional)
{
    while (n > 0) {
        ssize_t k = positional ? pwrite(fd, p, n, at) : write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
        at += k;
    }
    return 0;
}

static int open_dir(const char *dir, const char *sub)
{
    char path[4096];

    snprintf(path, sizeof(path), "%s/%s", dir, sub);
    return open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/* Moves @name from @dirfd into DIR/trash/ under a unique name. */
static void trash(const struct job *j, int dirfd, const char *name)
{
    char path[4096];

    snprintf(path, sizeof(path), "%s/trash/r%u-w%u-%s", j->dir, j->run,
             j->writer, name);
    (void)renameat(dirfd, name, AT_FDCWD, path);
}

/* The old receive path's meta/ sidecar: temp name, write, rename. */
static int write_sidecar(int meta, const char *name)
{
    char tmp[80];
    int fd;

    snprintf(tmp, sizeof(tmp), ".%s", name);
    fd = openat(meta, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if (write_all(fd, (const unsigned char *)big_label, sizeof(big_label) - 1,
                  0, false) < 0) {
        (void)close(fd);
        return -1;
    }
    if (close(fd) < 0)
        return -1;
    return renameat(meta, tmp, meta, name);
}

static void run_prealloc(struct job *j, int in)
{
    char name[64];
    int fd;

    snprintf(name, sizeof(name), "segment-%u", j->writer);
    fd = openat(in, name, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    off_t total = (off_t)j->size * j->count;
    if (fd < 0 || posix_fallocate(fd, 0, total) != 0) {
        j->error = errno != 0 ? errno : EIO;
        if (fd >= 0)
            (void)close(fd);
        return;
    }
    /* Pre-zero so that each later write overwrites allocated, initialised
     * blocks: no extent or size change to write back. */
    unsigned char *zero = calloc(1, j->size);
    for (unsigned i = 0; zero != NULL && i < j->count; i++)
        (void)write_all(fd, zero, j->size, (off_t)j->size * i, true);
    free(zero);
    (void)fsync(fd);
    double t0 = now_s();
    for (unsigned i = 0; i < j->count; i++) {
        if (write_all(fd, j->data, j->size, (off_t)j->size * i, true) < 0 ||
            fdatasync(fd) < 0) {
            j->error = errno;
            break;
        }
    }
    j->elapsed = now_s() - t0;
    (void)close(fd);
    trash(j, in, name);
}

/* One commit of the O_TMPFILE rows. */
static int commit_tmpfile(const struct job *j, int in, const char *name)
{
    char fdpath[64];
    int fd = openat(in, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);

    if (fd < 0)
        return -1;
    if (write_all(fd, j->data, j->size, 0, false) < 0 ||
        (j->row == ROW_TMPFILE_LINKAT_XATTR &&
         fsetxattr(fd, "user.stowbridge", label, sizeof(label) - 1, 0) < 0) ||
        (j->row == ROW_TMPFILE_LINKAT_XATTR_BIG &&
         fsetxattr(fd, "user.stowbridge", big_label, sizeof(big_label) - 1, 0) <
             0) ||
        fsync(fd) < 0) {
        (void)close(fd);
        return -1;
    }
    snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", fd);
    if (linkat(AT_FDCWD, fdpath, in, name, AT_SYMLINK_FOLLOW) < 0 ||
        fsync(in) < 0) {
        (void)close(fd);
        return -1;
    }
    return close(fd);
}

/* One commit of the rename rows. */
static int commit_rename(const struct job *j, int tmp, int in, int meta,
                         const char *name)
{
    bool durable = j->row != ROW_NO_FSYNC;
    int fd = openat(tmp, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);

    if (fd < 0)
        return -1;
    if (write_all(fd, j->data, j->size, 0, false) < 0 ||
        (durable && fsync(fd) < 0)) {
        (void)close(fd);
        return -1;
    }
    if (close(fd) < 0 || renameat(tmp, name, in, name) < 0)
        return -1;
    if (durable && fsync(in) < 0)
        return -1;
    if ((j->row == ROW_RENAME_FSYNC_BOTH || j->row == ROW_OLD_COMMIT) &&
        fsync(tmp) < 0)
        return -1;
    if (j->row == ROW_OLD_COMMIT && write_sidecar(meta, name) < 0)
        return -1;
    return 0;
}

static void *run_job(void *arg)
{
    struct job *j = arg;
    int tmp = open_dir(j->dir, "tmp");
    int in = open_dir(j->dir, "incoming");
    int meta = open_dir(j->dir, "meta");
    char name[64];

    if (tmp < 0 || in < 0 || meta < 0) {
        j->error = errno;
        goto out;
    }
    if (j->row == ROW_PREALLOC_FDATASYNC) {
        run_prealloc(j, in);
        goto out;
    }
    double t0 = now_s();
    for (unsigned i = 0; i < j->count; i++) {
        int r;
        snprintf(name, sizeof(name), "w%u-%u.dcm", j->writer, i);
        if (j->row == ROW_TMPFILE_LINKAT ||
            j->row == ROW_TMPFILE_LINKAT_XATTR ||
            j->row == ROW_TMPFILE_LINKAT_XATTR_BIG)
            r = commit_tmpfile(j, in, name);
        else
            r = commit_rename(j, tmp, in, meta, name);
        if (r < 0) {
            j->error = errno != 0 ? errno : EIO;
            break;
        }
    }
    j->elapsed = now_s() - t0;
    for (unsigned i = 0; i < j->count; i++) {
        char side[80];
        snprintf(name, sizeof(name), "w%u-%u.dcm", j->writer, i);
        snprintf(side, sizeof(side), "m-%s", name);
        trash(j, in, name);
        trash(j, tmp, name);
        if (renameat(meta, name, meta, side) == 0)
            trash(j, meta, side);
    }
out:
    if (tmp >= 0)
        (void)close(tmp);
    if (in >= 0)
        (void)close(in);
    if (meta >= 0)
        (void)close(meta);
    return NULL;
}

/* Runs @row once with @writers threads; the rate per second, or < 0. */
static double run_row(const char *dir, size_t size, unsigned count,
                      unsigned writers, enum row row, unsigned char *data,
                      int *ret_error)
{
    static unsigned runs;
    unsigned run = ++runs;
    struct job *jobs = calloc(writers, sizeof(*jobs));
    pthread_t *threads = calloc(writers, sizeof(*threads));
    double elapsed = 0;
    int error = 0;

    if (jobs == NULL || threads == NULL) {
        free(jobs);
        free(threads);
        *ret_error = ENOMEM;
        return -1;
    }
    /* Each writer times its own commit loop (setup such as the
     * pre-allocation is not commit cost); writers start together, so the
     * rate is the total over the slowest writer's time. */
    for (unsigned w = 0; w < writers; w++) {
        jobs[w] = (struct job){ dir, run, size, count, w, row, data, 0, 0 };
        if (pthread_create(&threads[w], NULL, run_job, &jobs[w]) != 0) {
            writers = w;
            error = EAGAIN;
            break;
        }
    }
    for (unsigned w = 0; w < writers; w++)
        pthread_join(threads[w], NULL);
    for (unsigned w = 0; w < writers; w++) {
        if (jobs[w].error != 0)
            error = jobs[w].error;
        if (jobs[w].elapsed > elapsed)
            elapsed = jobs[w].elapsed;
    }
    free(jobs);
    free(threads);
    *ret_error = error;
    if (error != 0 || elapsed <= 0)
        return -1;
    return (double)count * writers / elapsed;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;

    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    static double rates[ROW_COUNT][MAX_ROUNDS];
    static int errors[ROW_COUNT];
    char path[4096];

    if (argc < 4) {
        fprintf(stderr,
                "usage: disk_limits DIR SIZE_BYTES COUNT [WRITERS [ROUNDS]]\n");
        return 2;
    }
    const char *dir = argv[1];
    size_t size = (size_t)strtoull(argv[2], NULL, 10);
    unsigned count = (unsigned)strtoul(argv[3], NULL, 10);
    unsigned writers = argc > 4 ? (unsigned)strtoul(argv[4], NULL, 10) : 1;
    unsigned rounds = argc > 5 ? (unsigned)strtoul(argv[5], NULL, 10) : 1;
    if (size == 0 || count == 0 || writers == 0 || writers > 64 ||
        rounds == 0 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "disk_limits: bad arguments\n");
        return 2;
    }
    (void)mkdir(dir, 0700);
    static const char *const subs[] = { "tmp", "incoming", "meta", "trash" };
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, subs[i]);
        (void)mkdir(path, 0700);
    }

    unsigned char *data = malloc(size);
    if (data == NULL)
        return 1;
    for (size_t i = 0; i < size; i++)
        data[i] = (unsigned char)(i * 2654435761u >> 13);

    for (unsigned round = 0; round < rounds; round++)
        for (int row = 0; row < ROW_COUNT; row++) {
            int error = 0;
            rates[row][round] =
                run_row(dir, size, count, writers, (enum row)row, data, &error);
            if (error != 0)
                errors[row] = error;
        }

    for (int row = 0; row < ROW_COUNT; row++) {
        if (errors[row] != 0) {
            printf("%-22s writers=%u error=%s\n", row_names[row], writers,
                   strerror(errors[row]));
            continue;
        }
        double sorted[MAX_ROUNDS];
        memcpy(sorted, rates[row], rounds * sizeof(double));
        qsort(sorted, rounds, sizeof(double), cmp_double);
        double median = rounds % 2
                            ? sorted[rounds / 2]
                            : (sorted[rounds / 2 - 1] + sorted[rounds / 2]) / 2;
        printf("%-22s writers=%u per_s=%.0f ms_per=%.3f [%.0f..%.0f]\n",
               row_names[row], writers, median, 1000.0 * writers / median,
               sorted[0], sorted[rounds - 1]);
    }
    fflush(stdout);
    free(data);
    return 0;
}
