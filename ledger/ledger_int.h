/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ledger_int - declarations shared only inside ledger/: the handle, the
 * queue entries, the writer's and the reader's statements, UID packing
 * and the SQLite error mapping.
 *
 * Files: ledger.c (open, schema, move aside, close, stats), queue.c (the
 * record calls, the queue and the writer thread), write.c (the writer's
 * SQL: group transactions and prune chunks), read.c (the read API),
 * uid.c (packing UIDs and their look-up key).
 *
 * Locking: lg->qlock guards the queue, the counters in lg->stats and the
 * flush/prune/stop state. lg->w is touched only by the writer thread once
 * it runs (and by ledger_open()/ledger_close() before and after). lg->rlock
 * guards the read connection and its statements.
 */
#ifndef STOWBRIDGE_LEDGER_INT_H
#define STOWBRIDGE_LEDGER_INT_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ledger.h"

/* "SBLG": PRAGMA application_id of a stowbridge ledger. */
#define LEDGER__APP_ID 0x53424c47

/* A packed UID: two characters per byte, so 64 characters fit in 32. */
#define LEDGER__PACKED_MAX 32

/* Delivery row key: delivered_ms << LEDGER__SEQ_BITS | sequence. */
#define LEDGER__SEQ_BITS 12
#define LEDGER__SEQ_MASK ((INT64_C(1) << LEDGER__SEQ_BITS) - 1)
/* The greatest delivered_ms whose key fits a signed 64-bit integer. */
#define LEDGER__MS_MAX ((INT64_MAX >> LEDGER__SEQ_BITS) - 1024)

/* Kinds of the interned names (table "name"). */
enum ledger__name_kind {
    LEDGER__NAME_CLASS = 1,
    LEDGER__NAME_AE = 2,
    LEDGER__NAME_DEST = 3,
    LEDGER__NAME_KINDS = 3,
};

enum ledger__kind {
    LEDGER__DELIVERY = 1,
    LEDGER__COMMIT_RECEIVED,
    LEDGER__COMMIT_RESOLVED,
    LEDGER__COMMIT_REPORTED,
};

struct ledger__item {
    const char *sop_class_uid;
    const char *sop_uid;
};

/*
 * One queued entry: a single allocation holding the struct, then the item
 * array (commit received), then every string. @size is what it counts
 * against params.queue_bytes_max.
 */
struct ledger__entry {
    enum ledger__kind kind;
    size_t size;
    union {
        struct {
            const char *sop_uid;
            const char *sop_class_uid;
            const char *study_uid;
            const char *series_uid;
            const char *calling_ae;
            const char *destination;
            int64_t arrived_ms;
            int64_t delivered_ms;
            uint64_t bytes;
            int outcome;
        } d;
        struct {
            const char *tx_uid;
            const char *calling_ae;
            int64_t received_ms;
            size_t n_items;
            struct ledger__item *items;
        } rx;
        struct {
            const char *tx_uid;
            const char *sop_uid;
            const char *study_uid;
            int result;
            uint16_t reason;
            int basis;
            int64_t resolved_ms;
        } res;
        struct {
            const char *tx_uid;
            unsigned event_type;
            int64_t reported_ms;
        } rep;
    } u;
};

/* The writer connection's statements (write.c). */
enum ledger__wstmt {
    LEDGER__W_BEGIN,
    LEDGER__W_COMMIT,
    LEDGER__W_ROLLBACK,
    LEDGER__W_NAME_GET,
    LEDGER__W_NAME_ADD,
    LEDGER__W_STUDY_GET,
    LEDGER__W_STUDY_ADD,
    LEDGER__W_SERIES_GET,
    LEDGER__W_SERIES_ADD,
    LEDGER__W_KEY_MAX,
    LEDGER__W_DELIVERY_ADD,
    LEDGER__W_SOP_STUDY,
    LEDGER__W_TX_ADD,
    LEDGER__W_ITEM_ADD,
    LEDGER__W_TX_GET,
    LEDGER__W_ITEM_RESOLVE,
    LEDGER__W_TX_REPORT,
    LEDGER__P_DEL_SCAN,
    LEDGER__P_DEL_RANGE,
    LEDGER__P_SERIES_STUDY,
    LEDGER__P_SERIES_DEL,
    LEDGER__P_STUDY_DEL,
    LEDGER__P_TX_OLDEST,
    LEDGER__P_ITEM_SCAN,
    LEDGER__P_ITEM_DEL,
    LEDGER__P_TX_DEL,
    LEDGER__W_COUNT,
};

/* The read connection's statements (read.c). */
enum ledger__rstmt {
    LEDGER__R_BEGIN,
    LEDGER__R_END,
    LEDGER__R_FIND,
    LEDGER__R_STUDY_ROWS,
    LEDGER__R_STUDY_COUNTS,
    LEDGER__R_STUDY_SOURCES,
    LEDGER__R_TX_FIND,
    LEDGER__R_TX_BY_ID,
    LEDGER__R_TX_LIST,
    LEDGER__R_ITEMS,
    LEDGER__R_STUDY_TXS,
    LEDGER__R_COUNT,
};

/* A few recently used name IDs per kind, so most rows need no look-up. */
#define LEDGER__NAME_CACHE 4

struct ledger__name_slot {
    char *value;
    int64_t id;
};

/* State of the writer thread (write.c). */
struct ledger__writer {
    sqlite3 *db;
    sqlite3_stmt *st[LEDGER__W_COUNT];
    int64_t last_key; /* greatest delivery key written (a bound) */
    struct ledger__name_slot names[LEDGER__NAME_KINDS][LEDGER__NAME_CACHE];
    unsigned name_next[LEDGER__NAME_KINDS];
    bool series_cached;
    char study_uid[LEDGER_UID_MAX + 1];
    char series_uid[LEDGER_UID_MAX + 1];
    int64_t study_id;
    int64_t series_id;
    struct ledger__entry **batch; /* the group being written */
    int64_t *scratch;             /* prune: series/study IDs of one chunk */
    size_t scratch_len;
    char errtext[160]; /* sqlite3_errmsg() of the last failure */
};

struct ledger {
    struct ledger_params p; /* defaults applied; p.path is lg->path */
    char *path;
    char *moved_aside; /* NULL or where a bad file went */
    char moved_reason[256];
    bool readonly;
    dev_t file_dev; /* the file the writer opened (ledger_check_file()) */
    ino_t file_ino;

    /* Reading. */
    pthread_mutex_t rlock;
    sqlite3 *rdb;
    sqlite3_stmt *rst[LEDGER__R_COUNT];

    /* The queue and the writer's shared state, under qlock. */
    pthread_mutex_t qlock;
    pthread_cond_t work; /* the writer waits for entries or requests */
    pthread_cond_t done; /* flushers and prune waiters wait */
    struct ledger__entry **ring;
    size_t head;
    size_t count;
    uint64_t first_queued_ms; /* monotonic time the oldest waiting entry came */
    uint64_t seq_queued;      /* entries accepted so far */
    uint64_t seq_done;        /* entries the writer has finished */
    /*
     * Entries lost with a failed group and not yet reported by a
     * ledger_flush(): sequence numbers lost_lo..lost_hi (0: none), and the
     * error. Entry N is the Nth accepted since open (1-based).
     */
    uint64_t lost_lo;
    uint64_t lost_hi;
    int lost_code;
    unsigned flushers;
    bool stop;
    int64_t prune_cutoff;
    int prune_error;
    struct ledger_stats stats;
    atomic_bool broken;

    pthread_t thread;
    bool thread_started;
    struct ledger__writer w;
};

/* uid.c */

/*
 * Packs @uid ('0'-'9' and '.', 1..64 characters) two characters per byte
 * into @out; returns the packed length, or 0 if @uid cannot be packed (it
 * is then stored as text).
 */
size_t ledger__uid_pack(const char *uid, unsigned char out[LEDGER__PACKED_MAX]);

/* Unpacks @len bytes into @out (capacity @out_size); 0 or -EUCLEAN. */
int ledger__uid_unpack(const unsigned char *in, size_t len, char *out,
                       size_t out_size);

/*
 * The look-up key of SOP Instance UID @uid: FNV-1a of @uid without its
 * last component (high 32 bits, signed) and of all of @uid (low 32 bits).
 */
int64_t ledger__uid_key(const char *uid);

/* Binds @uid packed (a BLOB) or, if it cannot be packed, as TEXT. */
int ledger__bind_uid(sqlite3_stmt *st, int idx, const char *uid);

/* Reads a UID column written by ledger__bind_uid() ("" for NULL). */
int ledger__column_uid(sqlite3_stmt *st, int col, char *out, size_t size);

/* Copies a TEXT column into @out ("" for NULL), truncating. */
void ledger__column_text(sqlite3_stmt *st, int col, char *out, size_t size);

/* ledger.c */

/* A negative errno for SQLite result code @rc on @db (may be NULL). */
int ledger__errno(sqlite3 *db, int rc);

/* snprintf() into @err if it is given. */
void ledger__err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* write.c */

/* Prepares the writer's statements and reads its starting state. */
int ledger__writer_prepare(struct ledger *lg, char *err, size_t err_len);

/* Finalises the writer's statements and frees its caches. */
void ledger__writer_finalize(struct ledger *lg);

/*
 * Writes @n entries in one transaction. Returns 0, or the error that
 * rolled it back (every entry is then lost). *@ret_ignored counts commit
 * events that named nothing known.
 */
int ledger__write_group(struct ledger *lg, struct ledger__entry **entries,
                        size_t n, uint64_t *ret_ignored);

/*
 * One prune transaction for @cutoff_ms. *@ret_more is true while rows
 * older than the cutoff may remain; *@ret_deleted whether this one deleted
 * anything; the deliveries and transactions deleted are added to *@ret_*.
 */
int ledger__prune_chunk(struct ledger *lg, int64_t cutoff_ms, bool *ret_more,
                        uint64_t *ret_deliveries, uint64_t *ret_commits,
                        bool *ret_deleted);

/* queue.c */

/* Starts the writer thread. */
int ledger__writer_start(struct ledger *lg, char *err, size_t err_len);

/* Asks the writer to drain the queue and stop, and joins it. */
void ledger__writer_stop(struct ledger *lg);

/* read.c */

/* Prepares the read connection's statements. */
int ledger__reader_prepare(struct ledger *lg, char *err, size_t err_len);

/* Finalises them. */
void ledger__reader_finalize(struct ledger *lg);

#endif
