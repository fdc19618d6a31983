/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nofsync - an LD_PRELOAD library for the receive benchmark only: fsync,
 * fdatasync, syncfs and sync_file_range return 0 at once (what eatmydata
 * does), to show what durability costs. Never run the service with it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <unistd.h>

int fsync(int fd)
{
    (void)fd;
    return 0;
}

int fdatasync(int fd)
{
    (void)fd;
    return 0;
}

int syncfs(int fd)
{
    (void)fd;
    return 0;
}

int sync_file_range(int fd, off64_t offset, off64_t nbytes, unsigned int flags)
{
    (void)fd;
    (void)offset;
    (void)nbytes;
    (void)flags;
    return 0;
}
