/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ledger - the durable record of delivered instances and the history of
 * Storage Commitment transactions (issue 12 item 4; docs/architecture.md
 * section 10). SQLite behind a plain C API: nothing outside ledger/ sees SQL.
 *
 * The ledger is NOT the spool. Losing it, or finding it corrupt, loses no
 * image: commitment then falls back to a QIDO-RS look-up. So it must never
 * block or fail the delivery path:
 *   - writes are asynchronous: ledger_record_*() copies the row into a
 *     bounded queue under one mutex and returns; one writer thread commits
 *     the queue in group transactions (WAL, synchronous=NORMAL);
 *   - when the queue is full the NEWEST row (the one being offered) is
 *     refused with -ENOBUFS and counted (tail drop): the caller learns
 *     synchronously which row was not recorded (the commitment provider
 *     will look that instance up by QIDO), rows already accepted are never
 *     silently discarded, and the queue stays a contiguous, ordered
 *     stream, so a commitment "received" event is never lost while its
 *     later "resolved" events are kept;
 *   - every function accepts a NULL ledger and returns -ENODEV, so a daemon
 *     whose ledger could not be opened keeps the handle NULL and carries
 *     on without any special case.
 *
 * Opening. ledger_open() with LEDGER_OPEN_RECOVER moves a file that is not
 * a ledger (garbage, another program's database, corrupt pages found at
 * open) aside to "<path>.corrupt-<UTC time>" together with its -wal file,
 * starts a new empty ledger and says so through ledger_moved_aside(). A
 * ledger written by a newer stowbridge (PRAGMA user_version greater than
 * LEDGER_SCHEMA_VERSION) is never moved: the open fails with
 * -EPROTONOSUPPORT. Readers in other processes (the CLI while the daemon
 * runs) open with LEDGER_OPEN_READONLY: WAL lets them read while the
 * writer writes.
 *
 * Storage (ledger/README.md has the measurements): SOP class, AE title and
 * destination are interned in a small table; study and series UIDs are
 * interned once per series; UIDs are stored packed two characters per
 * byte; the SOP Instance UID is found through a 64-bit key whose high half
 * hashes the UID without its last component, so that the instances of a
 * series sit together in the index (one upload touches a few index pages);
 * the row key is the delivery time (milliseconds << 12 | a sequence
 * number), so retention deletes a key range and needs no time index.
 * Measured: 114 bytes per delivery for a CT/MR-heavy site, 3.4 GB for 30
 * million; look-up p99 0.3 ms at that size.
 *
 * Times are milliseconds since the Unix epoch (wall clock) everywhere in
 * this API and are given by the caller, never read by the ledger.
 * At most 4096 deliveries are stored with the same millisecond; more are
 * stored with the next millisecond (read back 1 ms later).
 *
 * Thread safety: after ledger_open() every function may be called from any
 * thread at the same time, except ledger_close(). Read functions share one
 * read-only connection per handle under a mutex, so reads are serialised
 * (each look-up takes well under a millisecond); a callback passed to a
 * read function runs with that mutex held and must not call this ledger
 * again (-EDEADLK if it does). Each process opens its own handle; never
 * carry a handle across fork().
 *
 * Resources: one writer thread, two SQLite connections (one in read-only
 * mode), a page cache of params.cache_kib per connection, no mmap, and
 * the queue (at most params.queue_max entries and params.queue_bytes_max
 * bytes).
 *
 * Errors: functions return 0 or a negative errno; when an @err buffer is
 * given, a human-readable reason naming the file is written there (UIDs and
 * AE titles only, never patient data). The codes mean:
 *   -ENODEV       the ledger handle is NULL (running without a ledger)
 *   -ENOBUFS      queue full: this row was dropped and counted
 *   -EINVAL       a value is missing, too long or out of range
 *   -EROFS        a write call on a read-only handle
 *   -ENOENT       not found (look-ups), or no ledger file (read-only open)
 *   -EUCLEAN      the file is not a ledger or is corrupt
 *   -EPROTONOSUPPORT  the ledger was written by a newer schema version
 *   -EACCES, -EROFS, -ENOSPC, -EIO, ...  from the file system
 *   -EBUSY        another connection held the database lock too long
 *   -ETIMEDOUT    ledger_flush()/ledger_prune_wait() ran out of time
 *   -EDEADLK      a read callback called back into the same ledger
 *   -ENOMEM       out of memory
 */
#ifndef STOWBRIDGE_LEDGER_H
#define STOWBRIDGE_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ledger;

/* The schema version this build writes (PRAGMA user_version). */
#define LEDGER_SCHEMA_VERSION 1

/* Value limits: UIDs (PS3.5 9.1), AE titles, destination URLs. */
#define LEDGER_UID_MAX 64
#define LEDGER_AE_MAX 16
#define LEDGER_URL_MAX 1024

/* Defaults for the zero fields of struct ledger_params. */
#define LEDGER_QUEUE_MAX_DEFAULT 16384
#define LEDGER_QUEUE_BYTES_MAX_DEFAULT (16u * 1024 * 1024)
#define LEDGER_GROUP_MAX_DEFAULT 2000
#define LEDGER_GROUP_WAIT_MS_DEFAULT 100
#define LEDGER_CACHE_KIB_DEFAULT 8192
#define LEDGER_READ_CACHE_KIB_DEFAULT 2048
#define LEDGER_PRUNE_CHUNK_DEFAULT 2000
#define LEDGER_BUSY_TIMEOUT_MS_DEFAULT 5000
/* Largest group_max and prune_chunk ledger_open() accepts (-EINVAL). */
#define LEDGER_CHUNK_MAX 100000
/* The retention the configuration key ledger.keep_days defaults to. */
#define LEDGER_KEEP_DAYS_DEFAULT 30

enum ledger_open_flags {
    /*
     * Readers (the CLI, other processes): no writer thread, nothing is
     * created; the file must exist (-ENOENT otherwise). Write calls return
     * -EROFS.
     */
    LEDGER_OPEN_READONLY = 1u << 0,
    /*
     * The daemon: a file that is not a ledger or is found corrupt at open
     * is moved aside and a new ledger is created (see
     * ledger_moved_aside()). Without it such a file gives -EUCLEAN and is
     * left alone. Ignored with LEDGER_OPEN_READONLY.
     */
    LEDGER_OPEN_RECOVER = 1u << 1,
    /*
     * Runs PRAGMA quick_check at open, which reads the whole file (about
     * 10 s per GB not in the page cache): corruption anywhere is then
     * found at open instead of by the first statement that reads it.
     */
    LEDGER_OPEN_CHECK = 1u << 2,
};

/* How a ledger is opened. Zero fields take the defaults above. */
struct ledger_params {
    const char *path;       /* the database file; required */
    unsigned flags;         /* enum ledger_open_flags */
    unsigned queue_max;     /* entries waiting for the writer */
    size_t queue_bytes_max; /* bytes of those entries */
    unsigned group_max;     /* entries per write transaction */
    /*
     * Batching window: the writer waits up to this long after the first
     * queued entry before it commits, so that a quiet site writes one
     * transaction per window instead of one per row. Entries become
     * visible to readers at most this much later. ledger_flush() and
     * ledger_close() skip the wait. 0 takes the default; to commit at
     * once set LEDGER_GROUP_WAIT_NONE.
     */
    unsigned group_wait_ms;
    unsigned cache_kib;       /* writer connection's page cache */
    unsigned read_cache_kib;  /* read connection's page cache */
    unsigned prune_chunk;     /* rows deleted per prune transaction */
    unsigned busy_timeout_ms; /* waiting for another connection's lock */
};

/* group_wait_ms value meaning "no batching window". */
#define LEDGER_GROUP_WAIT_NONE UINT32_MAX

/*
 * Opens (creating if needed, mode 0600, never through a symlink) the ledger
 * at params->path, checks its application ID and schema version, sets WAL
 * mode, synchronous=NORMAL, the page cache size and mmap_size=0, and starts
 * the writer thread (not with LEDGER_OPEN_READONLY). On success *@ret_ledger
 * owns the handle.
 */
int ledger_open(const struct ledger_params *params, struct ledger **ret_ledger,
                char *err, size_t err_len);

/*
 * Stops the writer after it has committed every queued entry (a running
 * prune stops after its current chunk), joins it and closes the
 * connections. Accepts NULL. No other call may run on @lg meanwhile.
 */
void ledger_close(struct ledger *lg);

/* The path given to ledger_open(); borrowed. */
const char *ledger_path(const struct ledger *lg);

/*
 * Where ledger_open() moved an unusable file (LEDGER_OPEN_RECOVER), or
 * NULL if it moved nothing; borrowed. ledger_moved_aside_reason() says why.
 */
const char *ledger_moved_aside(const struct ledger *lg);
const char *ledger_moved_aside_reason(const struct ledger *lg);

/*
 * Whether the file @lg writes is still at its path and still a ledger,
 * looked at without SQLite (which goes on writing into a removed file and
 * may not read the header again for a long time): 0 it is; -ENOENT it was
 * removed; -ESTALE another file is at the path now; -EUCLEAN its header is
 * no longer SQLite's, or names another application; -EIO it cannot be
 * read; -ENODEV NULL or read-only handle. The reason goes to @err. One
 * open, fstat and 100-byte read: for a daemon's periodic look, which then
 * ledger_close()s, moves a corrupt file aside and opens again.
 */
int ledger_check_file(struct ledger *lg, char *err, size_t err_len);

/*
 * Moves the ledger file @path and its -wal file aside to
 * "<path>.corrupt-<YYYYmmddTHHMMSSZ>[-N]" (and removes its -shm file), so a
 * new ledger can be created there. For a daemon whose writer reported
 * corruption (struct ledger_stats.broken): ledger_close(), this, then
 * ledger_open() again. The new name is written to @ret_path (capacity
 * @path_len) when given. No ledger may be open on @path in this process.
 */
int ledger_move_aside(const char *path, char *ret_path, size_t path_len,
                      char *err, size_t err_len);

/*
 * --- Writing (asynchronous) ------------------------------------------------
 * Each ledger_record_*() validates and copies its arguments (nothing is
 * kept), then queues them under the queue mutex and returns: 0 queued,
 * -ENOBUFS dropped (queue full, counted), -EINVAL, -EROFS, -ENODEV.
 * Entries are written in the order they were queued.
 */

/* What the STOW-RS answer said about the instance. */
enum ledger_outcome {
    LEDGER_STORED = 1,          /* listed as stored (with or without warning) */
    LEDGER_ALREADY_EXISTED = 2, /* the server already held it */
};

/* One delivered instance. Strings are borrowed for the call. */
struct ledger_delivery {
    const char *sop_instance_uid; /* required, 1..64 characters */
    const char *sop_class_uid;    /* NULL or "" if unknown; <= 64 */
    const char *study_uid;        /* NULL or "" if unknown; <= 64 */
    const char *series_uid;       /* NULL or "" if unknown; <= 64 */
    const char *calling_ae;       /* <= 16 */
    const char *destination;      /* the DICOMweb base URL; <= 1024 */
    int64_t arrived_ms;           /* when the C-STORE was acknowledged */
    int64_t delivered_ms;         /* when the STOW-RS answer came; >= 0 */
    uint64_t bytes;               /* the instance's size */
    enum ledger_outcome outcome;
};

/*
 * Records one delivery. The same SOP Instance UID may be recorded any
 * number of times: each delivery is kept.
 */
int ledger_record_delivery(struct ledger *lg, const struct ledger_delivery *d);

/* One instance named by a Storage Commitment request. */
struct ledger_commit_ref {
    const char *sop_class_uid;    /* Referenced SOP Class UID; <= 64 */
    const char *sop_instance_uid; /* Referenced SOP Instance UID; 1..64 */
};

/*
 * Event "transaction received" (after the N-ACTION-RSP): the transaction
 * and every instance it names, in request order (an instance named twice
 * is kept twice). Each item starts pending; the writer links it to its
 * study when the ledger knows the instance. Transaction UID 1..64
 * characters; @n_items >= 1. The whole request is one queue entry counted
 * against params.queue_bytes_max (about 150 bytes per item).
 */
int ledger_record_commit_received(struct ledger *lg, const char *tx_uid,
                                  const char *calling_ae, int64_t received_ms,
                                  const struct ledger_commit_ref *items,
                                  size_t n_items);

enum ledger_item_result {
    LEDGER_ITEM_PENDING = 0,
    LEDGER_ITEM_COMMITTED = 1,
    LEDGER_ITEM_FAILED = 2, /* with a Failure Reason (0008,1197) */
};

/* What decided an item's result (the rule of issue 12 item 2). */
enum ledger_commit_basis {
    LEDGER_BASIS_NONE = 0,         /* pending */
    LEDGER_BASIS_DELIVERED = 1,    /* delivered by us (the ledger or spool) */
    LEDGER_BASIS_SERVER = 2,       /* QIDO-RS look-up on the server */
    LEDGER_BASIS_FAILED_ENTRY = 3, /* the instance is in the spool's failed/ */
    LEDGER_BASIS_DEADLINE = 4,     /* commit.max_wait_h passed */
    LEDGER_BASIS_OTHER = 5,
};

/* Event "instance resolved". Strings are borrowed for the call. */
struct ledger_commit_resolution {
    const char *tx_uid;             /* required */
    const char *sop_instance_uid;   /* required */
    const char *study_uid;          /* NULL/"" if unknown (then the ledger's) */
    enum ledger_item_result result; /* COMMITTED or FAILED */
    uint16_t failure_reason;        /* 0x0110, 0x0112, ...; 0 if committed */
    enum ledger_commit_basis basis;
    int64_t resolved_ms;
};

/*
 * Records the result of every item of the latest transaction @r->tx_uid
 * that names @r->sop_instance_uid. An event naming an unknown transaction
 * or instance is counted in struct ledger_stats.ignored.
 */
int ledger_record_commit_resolved(struct ledger *lg,
                                  const struct ledger_commit_resolution *r);

/*
 * Event "report sent": the N-EVENT-REPORT with @event_type (1 all
 * committed, 2 failures exist) was accepted by the modality. It changes no
 * item: record each item's resolution first.
 */
int ledger_record_commit_reported(struct ledger *lg, const char *tx_uid,
                                  unsigned event_type, int64_t reported_ms);

/*
 * Waits until every entry queued before the call has been written (or
 * lost with a failed transaction), skipping the batching window. Returns
 * 0; the error of a failed transaction (e.g. -ENOSPC, -EBUSY, -EUCLEAN) if
 * entries queued before the call were lost and no earlier ledger_flush()
 * has reported that loss; or -ETIMEDOUT after @timeout_ms (< 0: no
 * limit). For tests, benchmarks and shutdown.
 */
int ledger_flush(struct ledger *lg, int timeout_ms);

/*
 * Asks the writer to delete deliveries delivered before @cutoff_ms and
 * commitment transactions received before it, with what they alone
 * referenced, in transactions of at most params.prune_chunk rows, one
 * chunk after each group of queued entries (so writers never wait for
 * more than one chunk). Returns at once. A later call with a later
 * cutoff extends a running prune. For ledger.keep_days D, the daemon
 * calls it with now_ms - D * 86400000, e.g. hourly.
 */
int ledger_prune(struct ledger *lg, int64_t cutoff_ms);

/*
 * Waits until no prune is pending. 0, -ETIMEDOUT after @timeout_ms (< 0:
 * no limit), or the error that stopped the prune.
 */
int ledger_prune_wait(struct ledger *lg, int timeout_ms);

/* Counters since ledger_open(). */
struct ledger_stats {
    uint64_t queued;  /* entries accepted */
    uint64_t written; /* entries committed */
    uint64_t dropped; /* refused with -ENOBUFS (queue full) */
    uint64_t failed;  /* lost with a failed write transaction */
    uint64_t ignored; /* commit events naming nothing known */
    uint64_t groups;  /* write transactions committed */
    uint64_t pruned_deliveries;
    uint64_t pruned_commits; /* transactions (with their items) */
    uint64_t prune_chunks;   /* prune transactions committed */
    size_t queue_len;        /* entries waiting now */
    size_t queue_bytes;
    size_t queue_high_water; /* most entries ever waiting */
    bool prune_pending;
    /*
     * The writer found the file corrupt: it writes nothing more (every
     * entry counts as failed). The daemon should log it and, when
     * convenient, close, ledger_move_aside() and open again.
     */
    bool broken;
    int last_error;            /* negative errno of the last failure; 0 */
    char last_error_text[160]; /* its reason; "" */
};

/* Fills @ret_stats. Works on read-only handles (all zero but last_error). */
int ledger_stats(struct ledger *lg, struct ledger_stats *ret_stats);

/*
 * --- Reading (synchronous, any thread) --------------------------------------
 * Reads see what the writer has committed (not what is still queued).
 * Callbacks return 0 to go on; any other value stops the iteration and is
 * returned by the read function.
 */

/* One delivery as read back. */
struct ledger_instance {
    char sop_instance_uid[LEDGER_UID_MAX + 1];
    char sop_class_uid[LEDGER_UID_MAX + 1];
    char study_uid[LEDGER_UID_MAX + 1];
    char series_uid[LEDGER_UID_MAX + 1];
    char calling_ae[LEDGER_AE_MAX + 1];
    char destination[LEDGER_URL_MAX + 1];
    int64_t arrived_ms;
    int64_t delivered_ms;
    uint64_t bytes;
    enum ledger_outcome outcome;
};

typedef int (*ledger_instance_cb)(void *ctx, const struct ledger_instance *i);

/*
 * The latest delivery (greatest delivery time) of @sop_uid into
 * @ret_instance; -ENOENT if the ledger has none.
 */
int ledger_find_instance(struct ledger *lg, const char *sop_uid,
                         struct ledger_instance *ret_instance);

/*
 * Every delivery of study @study_uid (duplicates included), grouped by
 * series, each series in delivery order. 0 also when there is none.
 */
int ledger_study_instances(struct ledger *lg, const char *study_uid,
                           ledger_instance_cb cb, void *ctx);

/* What the ledger knows of one study. */
struct ledger_study_counts {
    uint64_t deliveries; /* rows, duplicates included */
    uint64_t instances;  /* distinct SOP Instance UIDs */
    uint64_t series;
    uint64_t stored; /* deliveries by outcome */
    uint64_t already_existed;
    uint64_t bytes; /* sum over deliveries */
    int64_t first_arrived_ms;
    int64_t last_arrived_ms;
    int64_t first_delivered_ms;
    int64_t last_delivered_ms;
};

/* Counts for study @study_uid; -ENOENT if it has no delivery. */
int ledger_study_counts(struct ledger *lg, const char *study_uid,
                        struct ledger_study_counts *ret_counts);

/* The deliveries of one study from one calling AE. */
struct ledger_study_source {
    char calling_ae[LEDGER_AE_MAX + 1];
    uint64_t instances; /* distinct SOP Instance UIDs */
    uint64_t deliveries;
    int64_t first_arrived_ms;
    int64_t last_arrived_ms;
};

typedef int (*ledger_source_cb)(void *ctx, const struct ledger_study_source *s);

/* One call per calling AE that sent instances of @study_uid. */
int ledger_study_sources(struct ledger *lg, const char *study_uid,
                         ledger_source_cb cb, void *ctx);

/* A commitment transaction as the history knows it. */
struct ledger_commit {
    char tx_uid[LEDGER_UID_MAX + 1];
    char calling_ae[LEDGER_AE_MAX + 1];
    int64_t received_ms;
    int64_t reported_ms; /* 0: no report sent yet */
    unsigned event_type; /* 1 or 2; 0: no report sent yet */
    uint64_t items;
    uint64_t committed;
    uint64_t failed;
    uint64_t pending;
};

typedef int (*ledger_commit_cb)(void *ctx, const struct ledger_commit *c);

/* The latest transaction @tx_uid; -ENOENT if none. */
int ledger_commit_find(struct ledger *lg, const char *tx_uid,
                       struct ledger_commit *ret_commit);

/*
 * Transactions received at or after @since_ms (0: all), newest first, at
 * most @limit (0: no limit).
 */
int ledger_commit_list(struct ledger *lg, int64_t since_ms, unsigned limit,
                       ledger_commit_cb cb, void *ctx);

/* One instance of a commitment transaction. */
struct ledger_commit_item {
    unsigned pos; /* 0-based place in the request */
    char sop_class_uid[LEDGER_UID_MAX + 1];
    char sop_instance_uid[LEDGER_UID_MAX + 1];
    char study_uid[LEDGER_UID_MAX + 1]; /* "" if not known */
    enum ledger_item_result result;
    uint16_t failure_reason;
    enum ledger_commit_basis basis;
    int64_t resolved_ms; /* 0 while pending */
};

typedef int (*ledger_item_cb)(void *ctx, const struct ledger_commit_item *i);

/*
 * The items of the latest transaction @tx_uid in request order; -ENOENT
 * if there is no such transaction.
 */
int ledger_commit_items(struct ledger *lg, const char *tx_uid,
                        ledger_item_cb cb, void *ctx);

/* How many items of one transaction belong to one study. */
struct ledger_commit_study {
    uint64_t items;
    uint64_t committed;
    uint64_t failed;
    uint64_t pending;
};

typedef int (*ledger_study_commit_cb)(void *ctx, const struct ledger_commit *c,
                                      const struct ledger_commit_study *s);

/*
 * The transactions that named an instance of @study_uid (known to belong
 * to it by the ledger or the provider), oldest first, each with the whole
 * transaction's counts and this study's.
 */
int ledger_study_commits(struct ledger *lg, const char *study_uid,
                         ledger_study_commit_cb cb, void *ctx);

#ifdef __cplusplus
}
#endif

#endif
