/* SPDX-License-Identifier: Apache-2.0 */
/*
 * journal.h - the spool's intake journal (module-internal; spool.c is its
 * only user; docs/architecture.md section 4, "The intake journal").
 *
 * Why: on a disk whose every durable step costs one cache flush, making a
 * new file and its directory entry durable costs two flushes in a row.
 * The journal makes an instance durable with one: its bytes (and label)
 * are appended as a checksummed record to a pre-allocated, pre-zeroed
 * segment file and the segment is fdatasync()ed (no metadata changes, so
 * one flush). Commits running at the same time share that fdatasync
 * (group commit over a contiguous prefix of records).
 *
 * The entry itself is still the file incoming/<id>.dcm, linked right
 * after its record is durable and read by everyone exactly as before; only
 * its own durability is deferred: a checkpoint thread calls syncfs() on
 * the spool's file system every spool.journal_checkpoint_ms (1 s) or when
 * a quarter of the journal was written, then records the highest record
 * sequence number it covered in journal/checkpoint. Segments whose records are
 * all covered are reused.
 *
 * After a crash, spool_journal_replay() (start-up, before anything else
 * touches the spool) hands every valid record newer than the checkpoint
 * to a callback, which makes sure its entry exists intact (re-creating it
 * from the record if it is missing or damaged). A record is valid only if
 * its header and data checksums (CRC-32C) match, so a torn write (never
 * acknowledged) is never replayed.
 *
 * Layout under <spool>/journal/ (mode 0700):
 *   seg.0 ... seg.N-1   segment files, all the same size, records aligned
 *                       to 4096 bytes: a 4096-byte header (magic, sequence,
 *                       entry ID, label, lengths, CRCs) then the data
 *   checkpoint          two 4096-byte slots, written alternately; the valid
 *                       one with the higher sequence number counts
 *
 * Thread safety: append/finish from any thread; one checkpoint thread.
 * Errors: 0 or a negative errno, with a reason in @err where given.
 */
#ifndef STOWBRIDGE_SPOOL_JOURNAL_H
#define STOWBRIDGE_SPOOL_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct spool_journal;

/* The journal's directory under the spool directory. */
#define SPOOL_JOURNAL_DIR "journal"
/* The smallest spool.journal_mb, and how many segments it is cut into. */
#define SPOOL_JOURNAL_MIN_MB 8u
#define SPOOL_JOURNAL_SEGMENTS 4u

/*
 * Opens (creating or resizing if needed) the journal under @spool_dir_fd
 * with @size_mb MiB in SPOOL_JOURNAL_SEGMENTS segments, and starts its
 * checkpoint thread, which checkpoints every @checkpoint_ms (and sooner
 * when a quarter of the journal was written); it takes instances up to
 * @max_record_kb KiB (0: no limit but half a segment). @inode_flush: the
 * file system has no journal of its own, so each flush dirties the
 * segment's inode (futimens) and fsyncs it rather than fdatasync(). Call only
 * after spool_journal_replay() (a resize rewrites the segments). @spool_dir is
 * for messages only.
 */
int spool_journal_open(int spool_dir_fd, const char *spool_dir,
                       unsigned size_mb, unsigned checkpoint_ms,
                       unsigned max_record_kb, bool inode_flush,
                       struct spool_journal **ret_journal, char *err,
                       size_t err_len);

/* Checkpoints what it can, stops the thread, frees. Accepts NULL. */
void spool_journal_close(struct spool_journal *journal);

/* False once a write, flush or checkpoint failed (until restart). */
bool spool_journal_up(struct spool_journal *journal);

/* The largest instance the journal takes (bigger ones: the file path). */
uint64_t spool_journal_max_record(const struct spool_journal *journal);

/*
 * Appends a record for entry @id: @label (text, may be empty) and
 * @data_len bytes, from @data if it is not NULL (an instance held in
 * memory), else the first @data_len of @data_fd; returns once the record
 * is durable.
 * On 0, *ret_seq must later be passed to spool_journal_finish().
 * -EAGAIN: no room now (the caller commits the file's own way; nothing was
 * written). Any other error: the record is not durable (the caller refuses
 * the instance); after a write or flush error the journal stops taking
 * records (-EAGAIN from then on) and says why in @err.
 */
int spool_journal_append(struct spool_journal *journal, const char *id,
                         const char *label, size_t label_len, const void *data,
                         int data_fd, uint64_t data_len, uint64_t *ret_seq,
                         char *err, size_t err_len);

/* The commit of record @seq is over (its entry linked, or given up). */
void spool_journal_finish(struct spool_journal *journal, uint64_t seq);

/* spool_journal_finish() for a commit that was refused after its record
 * became durable (the link failed): the record is invalidated first. */
void spool_journal_cancel(struct spool_journal *journal, uint64_t seq);

/*
 * Record @seq was acknowledged but its entry could not be written
 * (@reason says why): the record must outlive this run. The journal stops
 * taking records and checkpointing (as after any journal error), so that
 * the next start's replay writes the entry from it. @seq stays unfinished.
 */
void spool_journal_keep(struct spool_journal *journal, uint64_t seq,
                        const char *reason);

/* Makes everything so far durable with one syncfs() and checkpoints it
 * (the checkpoint thread does this on its own; tests and close call it). */
int spool_journal_checkpoint(struct spool_journal *journal, char *err,
                             size_t err_len);

/* A record found by spool_journal_replay(). */
struct spool_journal_record {
    uint64_t seq;
    char id[48];
    char label[512 + 1];
    size_t label_len;
    int seg_fd;        /* read the data from here ... */
    off_t data_offset; /* ... at this offset */
    uint64_t data_len;
    uint32_t data_crc; /* CRC-32C of the data alone */
};

/*
 * Start-up: calls @fn for every valid record newer than the checkpoint, in
 * sequence order; when all succeeded, syncfs() and checkpoints them. Does
 * nothing (and succeeds) if there is no journal. @fn returns 0 or a
 * negative errno (which stops the replay and is returned).
 */
int spool_journal_replay(int spool_dir_fd, const char *spool_dir,
                         int (*fn)(void *ctx,
                                   const struct spool_journal_record *rec),
                         void *ctx, unsigned *ret_count, char *err,
                         size_t err_len);

/* Removes the journal (spool.journal_mb = 0), after a replay. */
int spool_journal_remove(int spool_dir_fd, const char *spool_dir, char *err,
                         size_t err_len);

/* CRC-32C (Castagnoli) of @len bytes, continuing from @crc (start: 0). */
uint32_t spool_crc32c(uint32_t crc, const void *buf, size_t len);

/* spool_journal_close() without the final checkpoint (tests: a crash). */
void spool__journal_abandon(struct spool_journal *journal);

/* CRC-32C of @len bytes of @fd from @off (-EIO if the file is shorter). */
int spool_journal_crc_of(int fd, off_t off, uint64_t len, uint32_t *ret_crc);

/* Counters for tests: records appended and fdatasyncs issued. */
void spool__journal_counts(const struct spool_journal *journal,
                           uint64_t *ret_records, uint64_t *ret_flushes,
                           uint64_t *ret_checkpoints);

#endif
