/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fault_io - an LD_PRELOAD library for the tests: while the file named by
 * $SB_FAULT_IO_FLAG exists, pwrite, pwrite64, write, fsync and fdatasync
 * on a file whose path contains $SB_FAULT_IO_MATCH fail with EIO, as a
 * failing disk would. Everything else goes through untouched.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off64_t);
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef int (*sync_fn)(int);

/* True while the flag file exists and @fd is a file that matches. */
static int faulty(int fd)
{
    const char *flag = getenv("SB_FAULT_IO_FLAG");
    const char *match = getenv("SB_FAULT_IO_MATCH");
    char link[64];
    char path[4096];
    struct stat st;
    ssize_t n;

    if (flag == NULL || match == NULL || match[0] == '\0' ||
        stat(flag, &st) != 0)
        return 0;
    (void)snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    n = readlink(link, path, sizeof(path) - 1);
    if (n <= 0)
        return 0;
    path[n] = '\0';
    return strstr(path, match) != NULL;
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off64_t offset)
{
    static pwrite_fn real;

    if (real == NULL)
        real = (pwrite_fn)dlsym(RTLD_NEXT, "pwrite64");
    if (faulty(fd)) {
        errno = EIO;
        return -1;
    }
    return real(fd, buf, count, offset);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)
{
    return pwrite64(fd, buf, count, (off64_t)offset);
}

ssize_t write(int fd, const void *buf, size_t count)
{
    static write_fn real;

    if (real == NULL)
        real = (write_fn)dlsym(RTLD_NEXT, "write");
    if (faulty(fd)) {
        errno = EIO;
        return -1;
    }
    return real(fd, buf, count);
}

int fsync(int fd)
{
    static sync_fn real;

    if (real == NULL)
        real = (sync_fn)dlsym(RTLD_NEXT, "fsync");
    if (faulty(fd)) {
        errno = EIO;
        return -1;
    }
    return real(fd);
}

int fdatasync(int fd)
{
    static sync_fn real;

    if (real == NULL)
        real = (sync_fn)dlsym(RTLD_NEXT, "fdatasync");
    if (faulty(fd)) {
        errno = EIO;
        return -1;
    }
    return real(fd);
}
