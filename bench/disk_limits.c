/* SPDX-License-Identifier: Apache-2.0 */
/*
 * disk_limits - what this disk allows, measured fresh beside every receive
 * benchmark: durable writes per second of one instance-sized file by
 * several commit sequences, so a result can say how far it is from the
 * physical limit.
 *
 * usage: disk_limits DIR SIZE_BYTES COUNT [WRITERS]
 *
 * Rows (one writer each unless WRITERS > 1, which runs every row with that
 * many threads at once and sums):
 *   rename+fsync-dir        write, fsync file, rename tmp/ -> incoming/,
 *                           fsync incoming/
 *   rename+fsync-both       the same, then fsync tmp/ (the full POSIX
 *                           sequence stowbridge used before)
 *   tmpfile+linkat          O_TMPFILE in incoming/, write, fsync, linkat,
 *                           fsync incoming/
 *   prealloc+fdatasync      pwrite into a pre-allocated, pre-zeroed file,
 *                           fdatasync (a journal-style spool's cost)
 *   no-fsync                write + rename only (what storescp does)
 * Prints "ROW per_s=N ms_per=M" lines, then removes what it wrote.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum row {
    ROW_RENAME_FSYNC_DIR,
    ROW_RENAME_FSYNC_BOTH,
    ROW_TMPFILE_LINKAT,
    ROW_PREALLOC_FDATASYNC,
    ROW_NO_FSYNC,
    ROW_COUNT,
};

static const char *const row_names[ROW_COUNT] = {
    "rename+fsync-dir",   "rename+fsync-both", "tmpfile+linkat",
    "prealloc+fdatasync", "no-fsync",
};

struct job {
    const char *dir;
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

static void *run_job(void *arg)
{
    struct job *j = arg;
    int tmp = open_dir(j->dir, "tmp");
    int in = open_dir(j->dir, "incoming");
    char name[64];
    char fdpath[64];

    if (tmp < 0 || in < 0) {
        j->error = errno;
        goto out;
    }
    if (j->row == ROW_PREALLOC_FDATASYNC) {
        snprintf(name, sizeof(name), "segment-%u", j->writer);
        int fd = openat(in, name, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
        off_t total = (off_t)j->size * j->count;
        if (fd < 0 || posix_fallocate(fd, 0, total) != 0) {
            j->error = errno;
            goto out;
        }
        /* Pre-zero so that each later write overwrites allocated,
         * initialised blocks: no extent or size change to journal. */
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
        (void)unlinkat(in, name, 0);
        goto out;
    }
    double t0 = now_s();
    for (unsigned i = 0; i < j->count; i++) {
        int fd;
        snprintf(name, sizeof(name), "w%u-%u.dcm", j->writer, i);
        if (j->row == ROW_TMPFILE_LINKAT) {
            fd = openat(in, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
            if (fd < 0 || write_all(fd, j->data, j->size, 0, false) < 0 ||
                fsync(fd) < 0) {
                j->error = errno;
                break;
            }
            snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", fd);
            if (linkat(AT_FDCWD, fdpath, in, name, AT_SYMLINK_FOLLOW) < 0 ||
                fsync(in) < 0) {
                j->error = errno;
                (void)close(fd);
                break;
            }
            (void)close(fd);
            continue;
        }
        fd = openat(tmp, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
        if (fd < 0 || write_all(fd, j->data, j->size, 0, false) < 0) {
            j->error = errno;
            break;
        }
        if (j->row != ROW_NO_FSYNC && fsync(fd) < 0) {
            j->error = errno;
            break;
        }
        (void)close(fd);
        if (renameat(tmp, name, in, name) < 0) {
            j->error = errno;
            break;
        }
        if (j->row != ROW_NO_FSYNC && fsync(in) < 0) {
            j->error = errno;
            break;
        }
        if (j->row == ROW_RENAME_FSYNC_BOTH && fsync(tmp) < 0) {
            j->error = errno;
            break;
        }
    }
    j->elapsed = now_s() - t0;
    for (unsigned i = 0; i < j->count; i++) {
        snprintf(name, sizeof(name), "w%u-%u.dcm", j->writer, i);
        (void)unlinkat(in, name, 0);
        (void)unlinkat(tmp, name, 0);
    }
out:
    if (tmp >= 0)
        (void)close(tmp);
    if (in >= 0)
        (void)close(in);
    return NULL;
}

int main(int argc, char **argv)
{
    char path[4096];

    if (argc < 4) {
        fprintf(stderr, "usage: disk_limits DIR SIZE_BYTES COUNT [WRITERS]\n");
        return 2;
    }
    const char *dir = argv[1];
    size_t size = (size_t)strtoull(argv[2], NULL, 10);
    unsigned count = (unsigned)strtoul(argv[3], NULL, 10);
    unsigned writers = argc > 4 ? (unsigned)strtoul(argv[4], NULL, 10) : 1;
    if (size == 0 || count == 0 || writers == 0 || writers > 64) {
        fprintf(stderr, "disk_limits: bad arguments\n");
        return 2;
    }
    snprintf(path, sizeof(path), "%s/tmp", dir);
    (void)mkdir(dir, 0700);
    (void)mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/incoming", dir);
    (void)mkdir(path, 0700);

    unsigned char *data = malloc(size);
    if (data == NULL)
        return 1;
    for (size_t i = 0; i < size; i++)
        data[i] = (unsigned char)(i * 2654435761u >> 13);

    for (int row = 0; row < ROW_COUNT; row++) {
        struct job *jobs = calloc(writers, sizeof(*jobs));
        pthread_t *threads = calloc(writers, sizeof(*threads));
        if (jobs == NULL || threads == NULL)
            return 1;
        /* Each writer times its own commit loop (setup such as the
         * pre-allocation is not commit cost); writers start together, so
         * the rate is the total over the slowest writer's time. */
        for (unsigned w = 0; w < writers; w++) {
            jobs[w] =
                (struct job){ dir, size, count, w, (enum row)row, data, 0, 0 };
            if (pthread_create(&threads[w], NULL, run_job, &jobs[w]) != 0)
                return 1;
        }
        for (unsigned w = 0; w < writers; w++)
            pthread_join(threads[w], NULL);
        double elapsed = 0;
        int error = 0;
        for (unsigned w = 0; w < writers; w++) {
            if (jobs[w].error != 0)
                error = jobs[w].error;
            if (jobs[w].elapsed > elapsed)
                elapsed = jobs[w].elapsed;
        }
        if (error != 0) {
            printf("%-20s error=%s\n", row_names[row], strerror(error));
        } else {
            double total = (double)count * writers;
            printf("%-20s writers=%u per_s=%.0f ms_per=%.3f\n", row_names[row],
                   writers, total / elapsed, elapsed * 1000.0 / (double)count);
        }
        fflush(stdout);
        free(jobs);
        free(threads);
    }
    free(data);
    return 0;
}
