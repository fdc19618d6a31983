/* SPDX-License-Identifier: Apache-2.0 */
/*
 * spool - the durable on-disk queue between the DIMSE receiver and the
 * uploaders (docs/architecture.md section 4).
 *
 * Layout under the spool directory (mode 0700, owned by the service user):
 *   tmp/       being received, where the file system has no O_TMPFILE
 *              (elsewhere a receive is an anonymous O_TMPFILE inode of
 *              incoming/ until its commit); never acknowledged; emptied
 *              at start
 *   incoming/  acknowledged, waiting for the first upload attempt
 *   active/    claimed for an upload in progress; moved back at start
 *   deferred/  last attempt failed transiently (mtime = not-before time)
 *   failed/    dead letter, kept until an operator acts
 *   lost+found/ files found in the spool that are not valid entries
 *   meta/      one small text file per entry (UIDs, attempts, last error),
 *              named by the ID, written by the uploader; its loss does no
 *              harm (the UIDs can be read again from the entry, the
 *              counters restart). The receiver writes none: what it knows
 *              (Study and SOP Instance UIDs, calling AE) is the entry's
 *              label, the extended attribute "user.stowbridge" set before
 *              the commit's fsync, which spool_meta_read() returns when
 *              meta/<id> does not exist. Only where the file system
 *              refuses the label does the receiver write meta/<id>.
 *   .lock      flock(2)ed by the one daemon that owns the spool
 *   pause      present while the daemon pauses every upload (a 429/503
 *              with Retry-After, or the destination down): the not-before
 *              time and why (spool_pause_*); operator tools remove it to
 *              resume at once, and the daemon reads it before each
 *              scheduling pass. Its loss does no harm (sending resumes).
 *
 * An entry is one Part 10 file, "<id>.dcm", exactly as received. The ID
 * does not depend on any UID: "<seconds>.<microseconds>-<16 hex>", where
 * the time is the arrival time (so the ID sorts by arrival and tells the
 * entry's age in every state), e.g. "1763855999.123456-9f1c2b3a4d5e6f70".
 *
 * Durability contract: spool_commit() returns 0 only after the instance
 * is on stable storage and will be incoming/<id>.dcm (with its label)
 * after any crash. With the intake journal (spool_journal_start(), the
 * daemon's default): its bytes and label are appended as a checksummed
 * record to a pre-allocated journal segment and fdatasync()ed (one
 * flush), then the file is linked into incoming/; its own fsyncs are
 * deferred to the journal's checkpoint (one syncfs() a second), and
 * spool_recover() re-creates from the journal any entry a crash lost or
 * damaged since. Without it (or for an instance bigger than
 * spool.journal_max_kb, or while the journal has no room): with O_TMPFILE
 * (probed at spool_open()), fsync of the file, linkat() into incoming/, fsync
 * of the file again (its inode's new link count: a file system without a
 * journal does not write it with the directory), fsync of incoming/;
 * without, fsync of the file, rename from tmp/, fsync of incoming/ and of
 * tmp/.
 * Commits running at the same time on several threads share each
 * fdatasync of the journal and each directory fsync (group commit): one
 * flush started after an entry's record was written (or its link or
 * rename) covers it, and each caller returns only once such a flush
 * succeeded. A failing flush is never retried and the entry is dropped
 * (every entry that flush covered): the caller must then refuse the
 * instance (A700), never acknowledge it. A journal that failed once takes
 * no more records until restart (commits go file by file).
 *
 * All state changes are atomic renames within the spool. A rename that
 * fails with ENOENT lost a race with another actor (daemon or operator
 * tool) and is reported as -ENOENT so callers can ignore it.
 *
 * Thread safety: after spool_open(), every function may be called from any
 * thread at the same time; the spool keeps no mutable in-memory state
 * other than its directory fds (read-only after open), the group
 * commit's queue of waiting commits (under its own mutex) and the
 * journal's (journal.h; it runs one checkpoint thread).
 * The spool parses no DICOM and does no HTTP.
 *
 * Errors: functions return 0 or a negative errno; when an @err buffer is
 * given, a human-readable reason naming the failed call and path is
 * written there (never patient data).
 */
#ifndef STOWBRIDGE_SPOOL_H
#define STOWBRIDGE_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

struct spool;
struct spool_meta;

enum spool_state {
    SPOOL_TMP = 0,
    SPOOL_INCOMING,
    SPOOL_ACTIVE,
    SPOOL_DEFERRED,
    SPOOL_FAILED,
    SPOOL_STATE_COUNT,
};

/* Room for an ID plus its NUL ("<10>.<6>-<16>" is 34 characters). */
#define SPOOL_ID_MAX 48

/* Flags for spool_open(). */
enum spool_open_flags {
    /*
     * Owner mode (the daemon): create missing directories, take the
     * exclusive lock (-EWOULDBLOCK if another process holds it).
     */
    SPOOL_OPEN_OWNER = 1u << 0,
};

struct spool_state_stats {
    uint64_t count;
    uint64_t bytes;
    /* Age in seconds of the oldest entry by arrival time (its ID); 0 if
     * the state is empty. */
    uint64_t oldest_s;
};

struct spool_recovery {
    unsigned tmp_removed;      /* partial receives deleted from tmp/ */
    unsigned active_requeued;  /* active/ entries moved back to incoming/ */
    unsigned set_aside;        /* foreign files moved to lost+found/ */
    unsigned meta_removed;     /* meta/ files whose entry is gone */
    unsigned journal_records;  /* journal records newer than its checkpoint */
    unsigned journal_restored; /* entries re-created or repaired from them */
};

/* The directory name of @state ("tmp", "incoming", ...). */
const char *spool_state_name(enum spool_state state);

/* Parses a state name; returns 0 or -EINVAL. */
int spool_state_parse(const char *name, enum spool_state *ret_state);

/* True if @id has the shape of an entry ID (safe to put in a path). */
bool spool_id_valid(const char *id);

/*
 * Opens the spool at @dir. With SPOOL_OPEN_OWNER, creates @dir and its
 * subdirectories (mode 0700) if missing, checks they are directories owned
 * by the current user and not writable by others, and takes the exclusive
 * lock; a second owner gets -EWOULDBLOCK with a message naming the lock.
 * Without it (operator tools, status), nothing is created or locked.
 * The owner probes once whether an O_TMPFILE file can be created in
 * incoming/ and linked by linkat() (via /proc/self/fd); if not (and
 * always without SPOOL_OPEN_OWNER), receives go through tmp/ and a
 * rename.
 */
int spool_open(const char *dir, unsigned flags, struct spool **ret_spool,
               char *err, size_t err_len);

/* Releases the lock and fds. Accepts NULL. */
void spool_close(struct spool *spool);

/* The spool directory as given to spool_open(); borrowed. */
const char *spool_dir(const struct spool *spool);

/*
 * Start-up recovery, owner only, before any receive or upload: empties
 * tmp/, moves active/ back to incoming/, moves files that are not valid
 * entries (bad name, not a regular file, empty) to lost+found/, and fsyncs
 * the directories it changed.
 */
int spool_recover(struct spool *spool, struct spool_recovery *ret_recovery,
                  char *err, size_t err_len);

/*
 * Owner only, after spool_recover(): commits go through the intake
 * journal of @size_mb MiB (at least 8) under <dir>/journal/, created
 * (written with zeros) or resized here, checkpointed every @checkpoint_ms
 * (0: 1000), for instances up to @max_record_kb KiB (0: up to an eighth of
 * the journal; bigger ones commit file by file); @size_mb 0 removes any
 * journal and commits go file by file. See "Durability contract" and
 * docs/architecture.md section 4.
 */
int spool_journal_start(struct spool *spool, unsigned size_mb,
                        unsigned checkpoint_ms, unsigned max_record_kb,
                        char *err, size_t err_len);

/* True if commits go through the intake journal. */
bool spool_uses_journal(const struct spool *spool);

/* How instances were made durable since spool_open() (for metrics). */
struct spool_commit_stats {
    bool journal_up;          /* the journal takes records (on, not failed) */
    uint64_t journal_commits; /* instances made durable through it */
    uint64_t file_commits;    /* instances committed file by file */
    uint64_t journal_flushes; /* its fdatasyncs (shared by group commits) */
};

void spool_commit_counts(const struct spool *spool,
                         struct spool_commit_stats *ret_stats);

/*
 * Receive path, step 1: creates a new empty entry file under a fresh ID:
 * an anonymous file in incoming/ (O_TMPFILE, mode 0600) where the file
 * system has O_TMPFILE, else tmp/<id>.dcm (O_CREAT|O_EXCL|O_NOFOLLOW).
 * Returns its ID in @ret_id and an fd open for reading and writing in
 * @ret_fd.
 */
int spool_tmp_create(struct spool *spool, char ret_id[SPOOL_ID_MAX],
                     int *ret_fd, char *err, size_t err_len);

/*
 * A path by which the file being received (@id, @fd from
 * spool_tmp_create()) can be opened for reading before its commit:
 * "/proc/self/fd/<fd>" for an anonymous file, else tmp/<id>.dcm.
 * Returns 0 or -ENAMETOOLONG.
 */
int spool_tmp_path(const struct spool *spool, const char *id, int fd, char *buf,
                   size_t len);

/* True if receives are anonymous O_TMPFILE files (see spool_open()). */
bool spool_uses_tmpfile(const struct spool *spool);

/*
 * Writes all @len bytes of @buf to @fd (retrying short writes and EINTR).
 * Returns 0 or a negative errno (e.g. -ENOSPC, -EIO).
 */
int spool_write_all(int fd, const void *buf, size_t len);

/*
 * Receive path, step 2: makes the received file durable as
 * incoming/<id>.dcm (the sequence under "Durability contract" above).
 * Always consumes @fd. On any failure the file is removed and the entry
 * does not exist; nothing is left in incoming/ or tmp/.
 */
int spool_commit(struct spool *spool, const char *id, int fd, char *err,
                 size_t err_len);

/*
 * spool_commit() that first labels the file with @label's study_uid,
 * sop_uid and calling_ae (the "user.stowbridge" extended attribute, set
 * before the fsync, so it is as durable as the data). Where the file
 * system refuses the label (no user xattrs, no room), the commit goes on
 * and writes meta/<id> with those values after it, as before; neither is
 * load-bearing.
 */
int spool_commit_labelled(struct spool *spool, const char *id, int fd,
                          const struct spool_meta *label, char *err,
                          size_t err_len);

/*
 * The receive path for an instance held whole in memory (the default for
 * instances up to spool.journal_max_kb, which fit the receive buffer):
 *
 *   spool_held_max()     the biggest file (meta header included) it takes:
 *                        0 without a journal or once it failed;
 *   spool_new_id()       the entry's ID, made at arrival;
 *   spool_commit_held()  step 2 for @data (@len bytes, the whole Part 10
 *                        file): appends it and @label to the journal and
 *                        returns once the record is durable, so 0000 may be
 *                        answered; *ret_seq is for spool_publish_held();
 *   spool_publish_held() after the answer: writes the entry itself,
 *                        incoming/<id>.dcm, labelled, with no flush (the
 *                        journal's checkpoint makes it durable, as for
 *                        every journal commit). Must follow every
 *                        successful spool_commit_held(), even if the
 *                        answer could not be sent. If it fails the entry is
 *                        not lost: the journal keeps its record, stops
 *                        (event=spool-journal-error) and the next start
 *                        restores the entry from it.
 *
 * -EAGAIN from spool_commit_held(): the journal does not take it now
 * (full, failed, too big); nothing was done: commit it through a file
 * (spool_tmp_create(), spool_write_all(), spool_commit_labelled()). Any
 * other error: not durable, refuse the instance.
 */
size_t spool_held_max(const struct spool *spool);
int spool_new_id(char ret_id[SPOOL_ID_MAX]);
int spool_commit_held(struct spool *spool, const char *id, const void *data,
                      size_t len, const struct spool_meta *label,
                      uint64_t *ret_seq, char *err, size_t err_len);
int spool_publish_held(struct spool *spool, const char *id, uint64_t seq,
                       const void *data, size_t len,
                       const struct spool_meta *label, char *err,
                       size_t err_len);

/*
 * Receive path, abandon: closes @fd (if >= 0), which frees an O_TMPFILE
 * file, and removes tmp/<id>.dcm (the other path). Never fails visibly: a
 * leftover temp file is removed at next start.
 */
void spool_discard(struct spool *spool, const char *id, int fd);

/*
 * Writes the path of entry @id in @state into @buf (capacity @len).
 * Returns 0 or -ENAMETOOLONG.
 */
int spool_entry_path(const struct spool *spool, enum spool_state state,
                     const char *id, char *buf, size_t len);

/*
 * Moves entry @id from state @from to state @to with renameat() and
 * fsyncs the target directory. Returns -ENOENT if the entry is not in
 * @from (a lost race, not an error for the caller).
 */
int spool_move(struct spool *spool, const char *id, enum spool_state from,
               enum spool_state to, char *err, size_t err_len);

/*
 * Arrival time of entry @id in microseconds since the epoch, read from
 * the ID. Returns 0 or -EINVAL.
 */
int spool_id_arrival_us(const char *id, uint64_t *ret_us);

/*
 * Counts entries, bytes and the oldest age for every state in one pass
 * over the directories. @now_us is the wall clock used for ages. Safe
 * while the daemon runs (entries moving during the scan are counted once
 * or not at all, never twice).
 */
int spool_stats(const struct spool *spool, uint64_t now_us,
                struct spool_state_stats ret_stats[SPOOL_STATE_COUNT],
                char *err, size_t err_len);

/*
 * Free space available to the service user on the spool's file system,
 * in MiB (statvfs f_bavail * f_frsize).
 */
int spool_free_mb(const struct spool *spool, uint64_t *ret_mb);

/* What the uploader keeps about an entry in meta/<id>. */
struct spool_meta {
    char study_uid[65]; /* "" if unknown */
    char sop_uid[65];
    char calling_ae[17];
    uint32_t attempts;       /* upload attempts so far */
    int64_t last_attempt_us; /* wall clock; 0 if never */
    long last_http_status;   /* 0 if none */
    uint16_t last_reason;    /* STOW Failure Reason, 0 if none */
    char last_error[256];    /* why the last attempt failed; "" if none */
    /* Another entry with the same SOP Instance UID that this one waits
     * for, duplicates or conflicts with; "" if none. */
    char copy_of[SPOOL_ID_MAX];
};

/* One entry as spool_list() sees it. */
struct spool_entry {
    char id[SPOOL_ID_MAX];
    uint64_t size;
    int64_t mtime_us; /* deferred/: the not-before time */
};

/*
 * Writes meta/<id> (write to a temporary name, then rename: a reader sees
 * the old or the new, never half). Not fsynced: its loss does no harm.
 * Values are sanitised: no newlines reach the file.
 */
int spool_meta_write(struct spool *spool, const char *id,
                     const struct spool_meta *meta, char *err, size_t err_len);

/* Reads meta/<id> into @ret_meta; where there is none, the entry's label
 * (only the UIDs and the calling AE then); -ENOENT when neither exists. */
int spool_meta_read(const struct spool *spool, const char *id,
                    struct spool_meta *ret_meta);

/*
 * Lists the entries of @state sorted by ID (arrival order) into a new
 * array (caller frees) of @ret_count entries. Entries that move away
 * during the scan are left out.
 */
int spool_list(const struct spool *spool, enum spool_state state,
               struct spool_entry **ret_entries, size_t *ret_count, char *err,
               size_t err_len);

/*
 * Moves entry @id from @from to deferred/ with not-before time
 * @not_before_us (kept as the file's mtime). -ENOENT: lost race.
 */
int spool_defer(struct spool *spool, const char *id, enum spool_state from,
                int64_t not_before_us, char *err, size_t err_len);

/*
 * The entry was delivered: removes it from @from and its meta/ file, and
 * fsyncs the directory. -ENOENT: lost race.
 */
int spool_remove(struct spool *spool, const char *id, enum spool_state from,
                 char *err, size_t err_len);

/* A pause of every upload, as kept in the spool's "pause" file. */
struct spool_pause {
    int64_t until_us; /* wall clock: no upload starts before it */
    int64_t since_us; /* when it was set */
    char reason[160]; /* our own words, never a server's text */
};

/*
 * Records @pause (write to a temporary name, then rename: a reader sees
 * the old or the new, never half). Not fsynced: a lost pause only means
 * sending resumes. The owner (daemon) calls it, from one thread at a time.
 */
int spool_pause_write(struct spool *spool, const struct spool_pause *pause,
                      char *err, size_t err_len);

/* Reads the pause into @ret_pause; -ENOENT when there is none (its time
 * may have passed: compare until_us with the clock). */
int spool_pause_read(const struct spool *spool, struct spool_pause *ret_pause);

/* Removes the pause (operator tools: resume now). -ENOENT if none. */
int spool_pause_clear(struct spool *spool, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif

#endif
