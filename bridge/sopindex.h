/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sopindex - the scheduler's in-memory index of the unresolved spool
 * entries (incoming/, active/, deferred/), by entry ID and by SOP Instance
 * UID, and the rules that keep the copies of one SOP Instance UID in
 * arrival order (README "Sending", "Several copies of one instance").
 *
 * For each entry it keeps the Study and SOP Instance UIDs, the size, the
 * state it was last listed in and whether it is in flight; the entries of
 * one SOP Instance UID form a "line" in ID order, which is arrival order.
 * The rules (sopindex_judge()):
 *   - a copy may be sent only when no earlier copy is in the line (every
 *     earlier one is resolved: delivered, failed or deleted) and no copy of
 *     that SOP Instance UID is in flight;
 *   - a copy with an earlier copy is compared with the copy just before it
 *     by the SHA-256 of its data set (the bytes after the File Meta
 *     Information, whose Source AE may differ) and its transfer syntax:
 *     the same is a duplicate, held and resolved with that copy
 *     (sopindex_take_run()); anything else is a conflict, for the caller's
 *     policy to decide.
 * Digests are computed only then, through the caller's function, and kept:
 * an entry with no other copy is never read.
 *
 * The index is a cache: the spool is the truth. It is rebuilt by listing
 * the spool (sopindex_scan_begin/seen/end, sopindex_add) and loses nothing
 * that matters when the process dies.
 *
 * Thread safety: none; one thread (the scheduler) owns an index.
 * Ownership: strings are copied in; returned strings are borrowed until
 * the entry is removed.
 * Errors: 0 or a negative errno (-EINVAL bad argument, -EEXIST known ID,
 * -ENOENT unknown ID, -ENOMEM); sopindex_digest_file() also -EIO and the
 * errno of open/read, with a reason in @err.
 */
#ifndef STOWBRIDGE_SOPINDEX_H
#define STOWBRIDGE_SOPINDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/util.h"
#include "spool/spool.h"

#define SOPINDEX_SHA256_LEN 32
/* Hex characters of a digest shown in logs and reasons. */
#define SOPINDEX_HEX_SHOWN 16

struct sopindex;

/* What two copies are compared by. */
struct sopindex_digest {
    unsigned char sha256[SOPINDEX_SHA256_LEN]; /* of the data set bytes */
    char transfer_syntax[UTIL_UID_MAX + 1];    /* (0002,0010); "" if none */
};

/* Computes the digest of entry @id, which was last listed in @state. */
typedef int (*sopindex_digest_fn)(void *ctx, const char *id,
                                  enum spool_state state,
                                  struct sopindex_digest *ret_digest);

enum sopindex_verdict {
    SOPINDEX_SEND,      /* no earlier copy, none in flight: send it now */
    SOPINDEX_WAIT,      /* hold: a copy is in flight, or no digest yet */
    SOPINDEX_DUPLICATE, /* same as the copy before it: hold, resolve with it */
    SOPINDEX_CONFLICT,  /* differs from the copy before it */
};

struct sopindex_judgement {
    enum sopindex_verdict verdict;
    /* DUPLICATE, CONFLICT, or WAIT with an error: the first judgement of
     * this kind for this pair (so the caller logs it once). */
    bool first;
    /* WAIT: a digest could not be computed (negative errno), else 0. */
    int error;
    /* DUPLICATE and CONFLICT: the copy compared with, and both sizes and
     * digests. */
    char other_id[SPOOL_ID_MAX];
    enum spool_state other_state;
    uint64_t size;
    uint64_t other_size;
    struct sopindex_digest digest;
    struct sopindex_digest other_digest;
};

/* One held duplicate handed back by sopindex_take_run(). */
struct sopindex_member {
    char id[SPOOL_ID_MAX];
    enum spool_state state;
};

/* An empty index; NULL on out-of-memory. */
struct sopindex *sopindex_new(void);

/* Accepts NULL. */
void sopindex_free(struct sopindex *ix);

/* Number of entries. */
size_t sopindex_count(const struct sopindex *ix);

/*
 * Adds entry @id (a valid spool ID) with its UIDs (valid UIDs), size and
 * state; it counts as seen by the scan in progress and, if @state is
 * SPOOL_ACTIVE, as in flight.
 */
int sopindex_add(struct sopindex *ix, const char *id, const char *study_uid,
                 const char *sop_uid, uint64_t size, enum spool_state state);

/* Removes @id if known. */
void sopindex_remove(struct sopindex *ix, const char *id);

/* True if @id is known. */
bool sopindex_contains(const struct sopindex *ix, const char *id);

/* The Study/SOP Instance UID of @id, or NULL if unknown. */
const char *sopindex_study(const struct sopindex *ix, const char *id);
const char *sopindex_sop(const struct sopindex *ix, const char *id);

/*
 * Marks @id in flight (moved to active/ for an upload) or not (its worker
 * reported the outcome). An in-flight entry holds its line and survives a
 * scan that does not list it.
 */
void sopindex_set_in_flight(struct sopindex *ix, const char *id,
                            bool in_flight);

/*
 * A scan: sopindex_scan_begin(), then sopindex_scan_seen() for each listed
 * entry (false: unknown, add it with sopindex_add()), then
 * sopindex_scan_end(), which removes the entries that were not listed, as
 * long as their ID sorts before @limit_id (NULL: every entry; a scan that
 * stopped early passes the first ID it did not look at). In-flight ones
 * are kept unless @drop_in_flight. Returns how many were removed.
 */
void sopindex_scan_begin(struct sopindex *ix);
bool sopindex_scan_seen(struct sopindex *ix, const char *id,
                        enum spool_state state);
size_t sopindex_scan_end(struct sopindex *ix, const char *limit_id,
                         bool drop_in_flight);

/*
 * Decides whether @id may be sent now (the rules above), computing the
 * digests it needs with @digest_fn. A digest that cannot be computed gives
 * SOPINDEX_WAIT with @ret->error set (retried at the next judgement).
 * Returns 0, or -ENOENT if @id is unknown.
 */
int sopindex_judge(struct sopindex *ix, const char *id,
                   sopindex_digest_fn digest_fn, void *ctx,
                   struct sopindex_judgement *ret);

/*
 * @id was resolved (delivered or failed): removes it, and with it the run
 * of copies right after it that were judged duplicates of it (each of the
 * one before), which share its fate. The run goes to *@ret_members (caller
 * frees; NULL when empty) and its length to *@ret_count. -ENOENT if @id is
 * unknown; -ENOMEM (then only @id was removed).
 */
int sopindex_take_run(struct sopindex *ix, const char *id,
                      struct sopindex_member **ret_members, size_t *ret_count);

/*
 * The digest of the Part 10 file at @path: SHA-256 (OpenSSL EVP) of every
 * byte after the File Meta Information group (0002,xxxx), read in pieces
 * (memory stays flat), and its TransferSyntaxUID (0002,0010). -EINVAL when
 * the file is not Part 10 (no "DICM" at 128) or its meta group is broken.
 */
int sopindex_digest_file(const char *path, struct sopindex_digest *ret_digest,
                         char *err, size_t err_len);

/* The first SOPINDEX_HEX_SHOWN hex characters of @digest's SHA-256. */
void sopindex_digest_hex(const struct sopindex_digest *digest,
                         char buf[SOPINDEX_HEX_SHOWN + 1]);

#endif
