/* SPDX-License-Identifier: Apache-2.0 */
/*
 * txn - the spool's commit/ area: small files that must survive a crash
 * but are not spool entries, namely Storage Commitment transactions
 * (issue 12: a request is durable before its N-ACTION-RSP 0000, and a
 * report before its first delivery attempt). The spool's entry path
 * (spool.h) is not involved; this module only shares the directory.
 *
 * Layout: <spool dir>/commit/<name>, mode 0600, written whole through a
 * temporary ".tmp-..." name, fsync of the file, renameat2() and fsync of
 * commit/ (so a reader sees the old content or the new, never half, and
 * after a crash the file either exists whole or not at all). Names are
 * 1..SPOOL_TXN_NAME_MAX characters of [A-Za-z0-9._-] not starting with a
 * dot. Files are at most SPOOL_TXN_FILE_MAX bytes.
 *
 * Thread safety: every function may be called from any thread; there is
 * no in-memory state. Two writers of one name: the last rename wins (or,
 * with SPOOL_TXN_EXCL, the first, the other gets -EEXIST).
 * Errors: 0 or a negative errno, with the failed call and path in @err
 * where given; -EINVAL for a bad name, -EFBIG for a file too large.
 */
#ifndef STOWBRIDGE_SPOOL_TXN_H
#define STOWBRIDGE_SPOOL_TXN_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct spool;

#define SPOOL_TXN_DIR "commit"
#define SPOOL_TXN_NAME_MAX 96
#define SPOOL_TXN_FILE_MAX (8u * 1024 * 1024)

/* Flags for spool_txn_write(). */
enum spool_txn_flags {
    SPOOL_TXN_EXCL = 1u << 0, /* -EEXIST if @name exists already */
};

/* True if @name may name a file of the commit/ area. */
bool spool_txn_name_valid(const char *name);

/*
 * Creates commit/ if missing (mode 0700) and removes temporary files a
 * crash left there. For the owner (daemon) at start.
 */
int spool_txn_prepare(struct spool *spool, char *err, size_t err_len);

/* Writes @len bytes of @data as commit/@name, durably (see above). */
int spool_txn_write(struct spool *spool, const char *name, const void *data,
                    size_t len, unsigned flags, char *err, size_t err_len);

/*
 * Reads commit/@name into a new NUL-terminated buffer (caller frees) of
 * @ret_len bytes. -ENOENT when there is none.
 */
int spool_txn_read(const struct spool *spool, const char *name, char **ret_data,
                   size_t *ret_len);

/* True if commit/@name exists. */
bool spool_txn_exists(const struct spool *spool, const char *name);

/*
 * Lists the names in commit/ (temporary files left out), sorted, as a new
 * array of new strings; free with spool_txn_list_free(). No commit/
 * directory is an empty list.
 */
int spool_txn_list(const struct spool *spool, char ***ret_names,
                   size_t *ret_count, char *err, size_t err_len);
void spool_txn_list_free(char **names, size_t count);

/* Removes commit/@name and fsyncs commit/. -ENOENT if it is not there. */
int spool_txn_remove(struct spool *spool, const char *name, char *err,
                     size_t err_len);

#ifdef __cplusplus
}
#endif

#endif
