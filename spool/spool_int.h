/* SPDX-License-Identifier: Apache-2.0 */
/*
 * spool_int.h - declarations shared only inside the spool module and with
 * its tests: the I/O hooks used for fault injection, the switches that
 * force the tmp/ + rename receive path (spool__no_tmpfile) and make the
 * journal take no record, as when it is full (spool__journal_refuses),
 * and the group commit's counters.
 *
 * The spool performs its receive-file creation (openat), write, fsync,
 * rename, link, label (fsetxattr) and close calls, and the journal its
 * pwrite, pwritev, pread, fdatasync and syncfs calls, through spool__io. Tests
 * replace entries to make the N-th call fail with a chosen errno (EIO, ENOSPC)
 * and check that nothing is acknowledged and nothing is left in incoming/.
 * Production code never changes spool__io, spool__no_tmpfile or
 * spool__journal_refuses.
 */
#ifndef STOWBRIDGE_SPOOL_INT_H
#define STOWBRIDGE_SPOOL_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "spool.h"

struct spool__io_ops {
    /* The receive path's file creation (spool_tmp_create()). */
    int (*openat)(int dirfd, const char *path, int flags, mode_t mode);
    ssize_t (*write)(int fd, const void *buf, size_t len);
    int (*fsync)(int fd);
    int (*renameat)(int olddirfd, const char *oldpath, int newdirfd,
                    const char *newpath);
    int (*linkat)(int olddirfd, const char *oldpath, int newdirfd,
                  const char *newpath, int flags);
    int (*fsetxattr)(int fd, const char *name, const void *value, size_t size,
                     int flags);
    int (*close)(int fd);
    ssize_t (*pwrite)(int fd, const void *buf, size_t len, off_t off);
    ssize_t (*pwritev)(int fd, const struct iovec *iov, int count, off_t off);
    ssize_t (*pread)(int fd, void *buf, size_t len, off_t off);
    int (*fdatasync)(int fd);
    int (*syncfs)(int fd);
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

/* The journal's counters (spool.journal_mb > 0): records appended,
 * fdatasyncs issued, checkpoints made; all 0 without a journal. */
void spool__journal_counts_of(const struct spool *spool, uint64_t *ret_records,
                              uint64_t *ret_flushes, uint64_t *ret_checkpoints);

/* Checkpoints the journal now (what its thread does every second). */
int spool__journal_checkpoint(struct spool *spool);

/* Before spool_open(): SPOOL__FS_DETECT (what production does) or a
 * forced answer to "has the file system a journal of its own?". Without
 * one: an inode fsync after each link, futimens() + fsync() instead of
 * fdatasync() for the intake journal. */
enum spool__fs_mode {
    SPOOL__FS_DETECT = 0,
    SPOOL__FS_JOURNALED,
    SPOOL__FS_UNJOURNALED,
};
extern enum spool__fs_mode spool__fs_mode;

/* When true, the journal takes no record (-EAGAIN), as when it is full:
 * spool_commit_held() refuses and spool_commit_labelled() commits file by
 * file. */
extern _Atomic bool spool__journal_refuses;

/*
 * The biggest file whose record the journal copies from the file (and up
 * to spool.journal_max_kb), 256 KiB: above it the copy through memory
 * costs more than the flushes it saves (docs/architecture.md §4), so held
 * instances (spool_commit_held(), written in place) are the only bigger
 * records. Tests raise it to give the journal big records from files.
 */
extern uint64_t spool__journal_file_max;

/* When true, spool_close() leaves the journal as a crash would: no final
 * checkpoint, so the next spool_recover() replays it. */
extern bool spool__journal_crash_on_close;

#endif
