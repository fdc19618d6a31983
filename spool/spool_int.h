/* SPDX-License-Identifier: Apache-2.0 */
/*
 * spool_int.h - declarations shared only inside the spool module and with
 * its tests: the I/O hooks used for fault injection.
 *
 * The spool performs its write, fsync, rename and close calls through
 * spool__io. Tests replace entries to make the N-th call fail with a chosen
 * errno (EIO, ENOSPC) and check that nothing is acknowledged and nothing is
 * left in incoming/. Production code never changes spool__io.
 */
#ifndef STOWBRIDGE_SPOOL_INT_H
#define STOWBRIDGE_SPOOL_INT_H

#include <sys/types.h>

struct spool__io_ops {
    ssize_t (*write)(int fd, const void *buf, size_t len);
    int (*fsync)(int fd);
    int (*renameat)(int olddirfd, const char *oldpath, int newdirfd,
                    const char *newpath);
    int (*close)(int fd);
};

/* The hooks in use; initialised to the libc functions. */
extern struct spool__io_ops spool__io;

/* Restores the libc functions. */
void spool__io_reset(void);

#endif
