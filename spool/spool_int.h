/* SPDX-License-Identifier: Apache-2.0 */
/*
 * spool_int.h - declarations shared only inside the spool module and with
 * its tests: the I/O hooks used for fault injection, the switch that
 * forces the tmp/ + rename receive path, and the group commit's counters.
 *
 * The spool performs its write, fsync, rename, link, label (fsetxattr)
 * and close calls through spool__io. Tests replace entries to make the
 * N-th call fail with a chosen errno (EIO, ENOSPC) and check that nothing
 * is acknowledged and nothing is left in incoming/. Production code never
 * changes spool__io or spool__no_tmpfile.
 */
#ifndef STOWBRIDGE_SPOOL_INT_H
#define STOWBRIDGE_SPOOL_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "spool.h"

struct spool__io_ops {
    ssize_t (*write)(int fd, const void *buf, size_t len);
    int (*fsync)(int fd);
    int (*renameat)(int olddirfd, const char *oldpath, int newdirfd,
                    const char *newpath);
    int (*linkat)(int olddirfd, const char *oldpath, int newdirfd,
                  const char *newpath, int flags);
    int (*fsetxattr)(int fd, const char *name, const void *value, size_t size,
                     int flags);
    int (*close)(int fd);
};

/* The hooks in use; initialised to the libc functions. */
extern struct spool__io_ops spool__io;

/* Restores the libc functions. */
void spool__io_reset(void);

/* When true before spool_open(), the spool does not use O_TMPFILE (as on
 * a file system without it): receives go through tmp/ and a rename. */
extern bool spool__no_tmpfile;

/*
 * The group commit of @state's directory so far: fsyncs issued and
 * entries they covered (entries > fsyncs when commits shared one).
 */
void spool__dirsync_counts(const struct spool *spool, enum spool_state state,
                           uint64_t *ret_fsyncs, uint64_t *ret_entries);

#endif
