/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ledger - opening, the schema, moving an unusable file aside, closing
 * and the counters. The queue and the writer thread are in queue.c, the
 * writer's SQL in write.c, the read API in read.c.
 */
#include "ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ledger_int.h"

/*
 * Schema version 1 (ledger/README.md explains each choice).
 * name       interned SOP classes (kind 1), AE titles (2), destinations (3)
 * study      study UIDs (packed)
 * series     series UIDs (packed) with their study
 * delivery   one row per delivery; id = delivered_ms << 12 | sequence;
 *            arrival = delivered - wait_ms; outcome 1 stored, 2 existed
 * commit_tx  commitment transactions (uid packed); reported_ms and
 *            event_type NULL until the report was sent
 * commit_item the instances of a transaction in request order (pos);
 *            result 0 pending, 1 committed, 2 failed (reason)
 */
static const char ledger__schema_sql[] =
    "CREATE TABLE name(id INTEGER PRIMARY KEY, kind INTEGER NOT NULL,"
    " value TEXT NOT NULL, UNIQUE(kind, value));"
    "CREATE TABLE study(id INTEGER PRIMARY KEY, uid NOT NULL UNIQUE);"
    "CREATE TABLE series(id INTEGER PRIMARY KEY,"
    " study_id INTEGER NOT NULL, uid NOT NULL, UNIQUE(study_id, uid));"
    "CREATE TABLE delivery(id INTEGER PRIMARY KEY,"
    " sop_key INTEGER NOT NULL, sop_uid NOT NULL,"
    " series_id INTEGER NOT NULL, class_id INTEGER NOT NULL,"
    " ae_id INTEGER NOT NULL, dest_id INTEGER NOT NULL,"
    " wait_ms INTEGER NOT NULL, bytes INTEGER NOT NULL,"
    " outcome INTEGER NOT NULL);"
    "CREATE INDEX delivery_sop ON delivery(sop_key);"
    "CREATE INDEX delivery_series ON delivery(series_id);"
    "CREATE TABLE commit_tx(id INTEGER PRIMARY KEY, uid NOT NULL,"
    " ae_id INTEGER NOT NULL, received_ms INTEGER NOT NULL,"
    " n_items INTEGER NOT NULL, reported_ms INTEGER, event_type INTEGER);"
    "CREATE INDEX commit_tx_uid ON commit_tx(uid);"
    "CREATE INDEX commit_tx_received ON commit_tx(received_ms);"
    "CREATE TABLE commit_item(tx_id INTEGER NOT NULL,"
    " sop_key INTEGER NOT NULL, pos INTEGER NOT NULL, sop_uid NOT NULL,"
    " class_id INTEGER NOT NULL, study_id INTEGER,"
    " result INTEGER NOT NULL DEFAULT 0, reason INTEGER NOT NULL DEFAULT 0,"
    " basis INTEGER NOT NULL DEFAULT 0, resolved_ms INTEGER,"
    " PRIMARY KEY(tx_id, sop_key, pos)) WITHOUT ROWID;"
    "CREATE INDEX commit_item_study ON commit_item(study_id)"
    " WHERE study_id IS NOT NULL;";

void ledger__err(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || err_len == 0)
        return;
    va_start(ap, fmt);
    (void)vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

int ledger__errno(sqlite3 *db, int rc)
{
    int sys;

    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return 0;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_READONLY:
        return -EROFS;
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return -EUCLEAN;
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return -EACCES;
    default:
        sys = db != NULL ? sqlite3_system_errno(db) : 0;
        return sys > 0 ? -sys : -EIO;
    }
}

/* Runs @sql (no result rows wanted); 0 or a negative errno with @err. */
static int ledger__exec(sqlite3 *db, const char *path, const char *sql,
                        char *err, size_t err_len)
{
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);

    if (rc == SQLITE_OK)
        return 0;
    ledger__err(err, err_len, "ledger '%s': %s: %s", path, sql,
                sqlite3_errmsg(db));
    return ledger__errno(db, rc);
}

/* Reads one integer from @sql into *@ret. */
static int ledger__query_int(sqlite3 *db, const char *path, const char *sql,
                             int64_t *ret, char *err, size_t err_len)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *ret = sqlite3_column_int64(st, 0);
            rc = SQLITE_OK;
        }
    }
    if (rc != SQLITE_OK) {
        ledger__err(err, err_len, "ledger '%s': %s: %s", path, sql,
                    sqlite3_errmsg(db));
        rc = ledger__errno(db, rc);
    }
    (void)sqlite3_finalize(st);
    return rc;
}

/* Reads a text result of @sql (e.g. a PRAGMA) into @out. */
static int ledger__query_text(sqlite3 *db, const char *path, const char *sql,
                              char *out, size_t out_size, char *err,
                              size_t err_len)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

    out[0] = '\0';
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            ledger__column_text(st, 0, out, out_size);
            rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
            rc = SQLITE_OK;
        }
    }
    if (rc != SQLITE_OK) {
        ledger__err(err, err_len, "ledger '%s': %s: %s", path, sql,
                    sqlite3_errmsg(db));
        rc = ledger__errno(db, rc);
    }
    (void)sqlite3_finalize(st);
    return rc;
}

/* Creates schema version 1 in an empty database. */
static int ledger__create_schema(sqlite3 *db, const char *path, char *err,
                                 size_t err_len)
{
    char sql[sizeof(ledger__schema_sql) + 128];
    int r;

    (void)snprintf(sql, sizeof(sql),
                   "BEGIN IMMEDIATE;%sPRAGMA application_id=%d;"
                   "PRAGMA user_version=%d;COMMIT;",
                   ledger__schema_sql, LEDGER__APP_ID, LEDGER_SCHEMA_VERSION);
    r = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (r == SQLITE_OK)
        return 0;
    ledger__err(err, err_len, "ledger '%s': creating the schema failed: %s",
                path, sqlite3_errmsg(db));
    r = ledger__errno(db, r);
    (void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return r;
}

/*
 * Checks that @db is a ledger of a version we can use; creates the schema
 * in an empty database unless @readonly. -EUCLEAN: not a ledger (garbage,
 * another program's database); -EPROTONOSUPPORT: newer schema; -ENOENT:
 * empty file on a read-only open.
 */
static int ledger__check_schema(sqlite3 *db, const char *path, bool readonly,
                                char *err, size_t err_len)
{
    int64_t app = 0;
    int64_t version = 0;
    int64_t objects = 0;
    int r;

    r = ledger__query_int(db, path, "PRAGMA application_id", &app, err,
                          err_len);
    if (r == 0)
        r = ledger__query_int(db, path, "PRAGMA user_version", &version, err,
                              err_len);
    if (r == 0)
        r = ledger__query_int(db, path, "SELECT count(*) FROM sqlite_schema",
                              &objects, err, err_len);
    if (r < 0)
        return r;
    if (app == 0 && version == 0 && objects == 0) {
        if (readonly) {
            ledger__err(err, err_len,
                        "ledger '%s' is empty (the daemon has not created it "
                        "yet)",
                        path);
            return -ENOENT;
        }
        return ledger__create_schema(db, path, err, err_len);
    }
    if (app != LEDGER__APP_ID || version < 1) {
        ledger__err(err, err_len,
                    "'%s' is not a stowbridge ledger (application_id %lld, "
                    "user_version %lld)",
                    path, (long long)app, (long long)version);
        return -EUCLEAN;
    }
    if (version > LEDGER_SCHEMA_VERSION) {
        ledger__err(err, err_len,
                    "ledger '%s' has schema version %lld, newer than this "
                    "stowbridge's %d: upgrade stowbridge, or move the file "
                    "away to start a new ledger",
                    path, (long long)version, LEDGER_SCHEMA_VERSION);
        return -EPROTONOSUPPORT;
    }
    return 0;
}

/* PRAGMA quick_check; -EUCLEAN unless it says "ok". */
static int ledger__quick_check(sqlite3 *db, const char *path, char *err,
                               size_t err_len)
{
    char res[200];
    int r = ledger__query_text(db, path, "PRAGMA quick_check", res, sizeof(res),
                               err, err_len);

    if (r < 0)
        return r;
    if (strcmp(res, "ok") != 0) {
        ledger__err(err, err_len, "ledger '%s' is corrupt: quick_check: %s",
                    path, res);
        return -EUCLEAN;
    }
    return 0;
}

/* The connection settings: page cache, no mmap, WAL for the writer. */
static int ledger__configure(sqlite3 *db, const char *path, bool writer,
                             unsigned cache_kib, unsigned busy_ms, char *err,
                             size_t err_len)
{
    char sql[160];
    char mode[32];
    int r;

    (void)sqlite3_busy_timeout(db, (int)busy_ms);
    (void)snprintf(sql, sizeof(sql),
                   "PRAGMA cache_size=-%u;PRAGMA mmap_size=0;", cache_kib);
    r = ledger__exec(db, path, sql, err, err_len);
    if (r < 0 || !writer)
        return r;
    r = ledger__query_text(db, path, "PRAGMA journal_mode=WAL", mode,
                           sizeof(mode), err, err_len);
    if (r < 0)
        return r;
    if (strcmp(mode, "wal") != 0) {
        ledger__err(err, err_len,
                    "ledger '%s': cannot use WAL mode (journal_mode is '%s')",
                    path, mode);
        return -EIO;
    }
    /*
     * synchronous=NORMAL: in WAL mode a commit is not fsynced (only
     * checkpoints are); a crash of the process loses nothing committed, a
     * power cut may lose the last transactions. secure_delete=OFF: the
     * ledger holds UIDs and AE titles, no patient data, so freed pages need
     * not be zeroed (Debian builds SQLite with it on). journal_size_limit:
     * the -wal file shrinks back to 64 MiB after a checkpoint.
     */
    return ledger__exec(db, path,
                        "PRAGMA synchronous=NORMAL;PRAGMA secure_delete=OFF;"
                        "PRAGMA journal_size_limit=67108864;",
                        err, err_len);
}

/*
 * Checks that this process may create files in the directory of @path:
 * SQLite puts the -wal and -shm files there, and without them a writer
 * gets only SQLite's "attempt to write a readonly database".
 */
static int ledger__check_dir(const char *path, char *err, size_t err_len)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    size_t len = slash == NULL ? 0 : (size_t)(slash - path);

    if (slash == path)
        len = 1;
    if (len >= sizeof(dir)) {
        ledger__err(err, err_len, "ledger path '%s' too long", path);
        return -ENAMETOOLONG;
    }
    if (len == 0) {
        dir[0] = '.';
        len = 1;
    } else {
        memcpy(dir, path, len);
    }
    dir[len] = '\0';
    if (faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) < 0) {
        int e = errno;

        ledger__err(err, err_len,
                    "cannot use ledger '%s': cannot write in its "
                    "directory '%s' (the -wal and -shm files go there): %s",
                    path, dir, strerror(e));
        return -e;
    }
    return 0;
}

/*
 * Makes sure @path exists as a regular file of ours: creates it with
 * O_EXCL|O_NOFOLLOW and mode 0600 if missing (so SQLite's -wal and -shm
 * files get that mode too), refuses symlinks and other file types.
 */
static int ledger__ensure_file(const char *path, char *err, size_t err_len)
{
    struct stat stt;
    int fd =
        open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);

    if (fd >= 0) {
        if (close(fd) < 0) {
            int e = errno;

            ledger__err(err, err_len, "close() '%s' failed: %s", path,
                        strerror(e));
            return -e;
        }
        return 0;
    }
    if (errno != EEXIST) {
        int e = errno;

        ledger__err(err, err_len, "cannot create ledger '%s': %s", path,
                    strerror(e));
        return -e;
    }
    if (lstat(path, &stt) < 0) {
        int e = errno;

        ledger__err(err, err_len, "lstat() '%s' failed: %s", path, strerror(e));
        return -e;
    }
    if (S_ISLNK(stt.st_mode)) {
        ledger__err(err, err_len, "ledger '%s' is a symbolic link", path);
        return -ELOOP;
    }
    if (!S_ISREG(stt.st_mode)) {
        ledger__err(err, err_len, "ledger '%s' is not a regular file", path);
        return -EINVAL;
    }
    return 0;
}

/* Opens a connection to @path; on failure closes it and says why. */
static int ledger__connect(const char *path, bool readonly, sqlite3 **ret_db,
                           char *err, size_t err_len)
{
    int flags = SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_NOMUTEX |
                (readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE);
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, flags, NULL);
    int r;

    if (rc == SQLITE_OK) {
        (void)sqlite3_extended_result_codes(db, 1);
        *ret_db = db;
        return 0;
    }
    r = ledger__errno(db, rc);
    if (readonly && access(path, F_OK) < 0 && errno == ENOENT) {
        ledger__err(err, err_len, "no ledger at '%s' (the daemon creates it)",
                    path);
        r = -ENOENT;
    } else {
        ledger__err(err, err_len, "cannot open ledger '%s': %s", path,
                    db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    }
    (void)sqlite3_close(db);
    return r;
}

/*
 * Opens, configures and checks the main connection (the writer's, or the
 * only one of a read-only handle).
 */
static int ledger__open_main(struct ledger *lg, sqlite3 **ret_db, char *err,
                             size_t err_len)
{
    unsigned cache = lg->readonly ? lg->p.read_cache_kib : lg->p.cache_kib;
    sqlite3 *db = NULL;
    int r;

    if (!lg->readonly) {
        r = ledger__check_dir(lg->path, err, err_len);
        if (r == 0)
            r = ledger__ensure_file(lg->path, err, err_len);
        if (r < 0)
            return r;
    }
    r = ledger__connect(lg->path, lg->readonly, &db, err, err_len);
    if (r < 0)
        return r;
    /* The schema check first: it is what reads a garbage file's header. */
    (void)sqlite3_busy_timeout(db, (int)lg->p.busy_timeout_ms);
    r = ledger__check_schema(db, lg->path, lg->readonly, err, err_len);
    if (r == 0)
        r = ledger__configure(db, lg->path, !lg->readonly, cache,
                              lg->p.busy_timeout_ms, err, err_len);
    if (r == 0 && (lg->p.flags & LEDGER_OPEN_CHECK))
        r = ledger__quick_check(db, lg->path, err, err_len);
    if (r == 0 && lg->readonly)
        r = ledger__exec(db, lg->path, "PRAGMA query_only=1", err, err_len);
    if (r == -EROFS && lg->readonly)
        ledger__err(err, err_len,
                    "cannot read ledger '%s': its -shm file is missing and "
                    "cannot be created here (run as the service's user, or "
                    "while the daemon runs)",
                    lg->path);
    if (r < 0) {
        (void)sqlite3_close(db);
        return r;
    }
    *ret_db = db;
    return 0;
}

/* The UTC time stamp used in the moved-aside name. */
static void ledger__stamp(char *buf, size_t len)
{
    time_t now = time(NULL);
    struct tm tm;

    if (gmtime_r(&now, &tm) == NULL ||
        strftime(buf, len, "%Y%m%dT%H%M%SZ", &tm) == 0)
        (void)snprintf(buf, len, "%lld", (long long)now);
}

/* Renames @from to @to unless @to exists: 0, -EEXIST or another errno. */
static int ledger__rename_new(const char *from, const char *to)
{
    struct stat stt;

    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS)
        return -errno;
    /* A file system without RENAME_NOREPLACE. */
    if (lstat(to, &stt) == 0)
        return -EEXIST;
    return rename(from, to) == 0 ? 0 : -errno;
}

int ledger_move_aside(const char *path, char *ret_path, size_t path_len,
                      char *err, size_t err_len)
{
    char stamp[32];
    char aside[PATH_MAX + 64];
    char from[PATH_MAX + 8];
    char to[sizeof(aside) + 8];
    int r = -EEXIST;

    if (path == NULL || path[0] == '\0')
        return -EINVAL;
    if (strlen(path) >= PATH_MAX) {
        ledger__err(err, err_len, "ledger path too long");
        return -ENAMETOOLONG;
    }
    ledger__stamp(stamp, sizeof(stamp));
    for (unsigned n = 0; n < 100 && r == -EEXIST; n++) {
        int len = n == 0 ? snprintf(aside, sizeof(aside), "%s.corrupt-%s", path,
                                    stamp)
                         : snprintf(aside, sizeof(aside), "%s.corrupt-%s-%u",
                                    path, stamp, n);

        if (len < 0 || (size_t)len >= sizeof(aside))
            return -ENAMETOOLONG;
        r = ledger__rename_new(path, aside);
    }
    if (r < 0) {
        ledger__err(err, err_len, "rename() '%s' to '%s' failed: %s", path,
                    aside, strerror(-r));
        return r;
    }
    /*
     * The -wal file belongs to the old content: left in place, SQLite
     * would replay it into the new ledger.
     */
    (void)snprintf(from, sizeof(from), "%s-wal", path);
    (void)snprintf(to, sizeof(to), "%s-wal", aside);
    if (rename(from, to) < 0 && errno != ENOENT) {
        r = -errno;
        ledger__err(err, err_len, "rename() '%s' to '%s' failed: %s", from, to,
                    strerror(-r));
        return r;
    }
    (void)snprintf(from, sizeof(from), "%s-shm", path);
    if (unlink(from) < 0 && errno != ENOENT) {
        r = -errno;
        ledger__err(err, err_len, "unlink() '%s' failed: %s", from,
                    strerror(-r));
        return r;
    }
    if (ret_path != NULL && path_len > 0)
        (void)snprintf(ret_path, path_len, "%s", aside);
    return 0;
}

/* Fills the zero fields of @p with the defaults. */
static void ledger__defaults(struct ledger_params *p)
{
    if (p->queue_max == 0)
        p->queue_max = LEDGER_QUEUE_MAX_DEFAULT;
    if (p->queue_bytes_max == 0)
        p->queue_bytes_max = LEDGER_QUEUE_BYTES_MAX_DEFAULT;
    if (p->group_max == 0)
        p->group_max = LEDGER_GROUP_MAX_DEFAULT;
    if (p->group_wait_ms == 0)
        p->group_wait_ms = LEDGER_GROUP_WAIT_MS_DEFAULT;
    else if (p->group_wait_ms == LEDGER_GROUP_WAIT_NONE)
        p->group_wait_ms = 0;
    if (p->cache_kib == 0)
        p->cache_kib = LEDGER_CACHE_KIB_DEFAULT;
    if (p->read_cache_kib == 0)
        p->read_cache_kib = LEDGER_READ_CACHE_KIB_DEFAULT;
    if (p->prune_chunk == 0)
        p->prune_chunk = LEDGER_PRUNE_CHUNK_DEFAULT;
    if (p->busy_timeout_ms == 0)
        p->busy_timeout_ms = LEDGER_BUSY_TIMEOUT_MS_DEFAULT;
}

/* Allocates the handle and its locks; NULL on out-of-memory. */
static struct ledger *ledger__new(const struct ledger_params *params)
{
    struct ledger *lg = calloc(1, sizeof(*lg));
    pthread_condattr_t ca;

    if (lg == NULL)
        return NULL;
    lg->p = *params;
    ledger__defaults(&lg->p);
    lg->readonly = (lg->p.flags & LEDGER_OPEN_READONLY) != 0;
    lg->path = strdup(params->path);
    lg->ring = lg->readonly ? NULL : calloc(lg->p.queue_max, sizeof(*lg->ring));
    if (lg->path == NULL || (!lg->readonly && lg->ring == NULL)) {
        free(lg->path);
        free(lg->ring);
        free(lg);
        return NULL;
    }
    lg->p.path = lg->path;
    atomic_init(&lg->broken, false);
    (void)pthread_mutex_init(&lg->rlock, NULL);
    (void)pthread_mutex_init(&lg->qlock, NULL);
    (void)pthread_condattr_init(&ca);
    (void)pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    (void)pthread_cond_init(&lg->work, &ca);
    (void)pthread_cond_init(&lg->done, &ca);
    (void)pthread_condattr_destroy(&ca);
    return lg;
}

/* The writer's connection and statements; closed again on failure. */
static int ledger__open_writer(struct ledger *lg, char *err, size_t err_len)
{
    int r = ledger__open_main(lg, &lg->w.db, err, err_len);

    if (r == 0)
        r = ledger__writer_prepare(lg, err, err_len);
    if (r < 0) {
        ledger__writer_finalize(lg);
        (void)sqlite3_close(lg->w.db);
        lg->w.db = NULL;
    }
    return r;
}

/*
 * Opens the writer; with LEDGER_OPEN_RECOVER, moves a file that is not a
 * ledger or is found corrupt aside once and tries again.
 */
static int ledger__open_recovering(struct ledger *lg, char *err, size_t err_len)
{
    char aside[PATH_MAX + 64];
    char why[sizeof(lg->moved_reason)] = "";
    int r = ledger__open_writer(lg, why, sizeof(why));

    if (r != -EUCLEAN || (lg->p.flags & LEDGER_OPEN_RECOVER) == 0) {
        ledger__err(err, err_len, "%s", why);
        return r;
    }
    (void)snprintf(lg->moved_reason, sizeof(lg->moved_reason), "%s", why);
    r = ledger_move_aside(lg->path, aside, sizeof(aside), err, err_len);
    if (r < 0)
        return r;
    lg->moved_aside = strdup(aside);
    if (lg->moved_aside == NULL) {
        ledger__err(err, err_len, "out of memory");
        return -ENOMEM;
    }
    return ledger__open_writer(lg, err, err_len);
}

int ledger_open(const struct ledger_params *params, struct ledger **ret_ledger,
                char *err, size_t err_len)
{
    struct ledger *lg;
    int r;

    if (params == NULL || params->path == NULL || params->path[0] == '\0' ||
        ret_ledger == NULL) {
        ledger__err(err, err_len, "no ledger path given");
        return -EINVAL;
    }
    if (params->group_max > LEDGER_CHUNK_MAX ||
        params->prune_chunk > LEDGER_CHUNK_MAX) {
        ledger__err(err, err_len, "group_max and prune_chunk are at most %d",
                    LEDGER_CHUNK_MAX);
        return -EINVAL;
    }
    if (sqlite3_threadsafe() == 0) {
        ledger__err(err, err_len, "SQLite was built without thread support");
        return -ENOTSUP;
    }
    lg = ledger__new(params);
    if (lg == NULL) {
        ledger__err(err, err_len, "out of memory");
        return -ENOMEM;
    }
    if (lg->readonly) {
        r = ledger__open_main(lg, &lg->rdb, err, err_len);
    } else {
        r = ledger__open_recovering(lg, err, err_len);
        if (r == 0)
            r = ledger__connect(lg->path, true, &lg->rdb, err, err_len);
        if (r == 0)
            r = ledger__configure(lg->rdb, lg->path, false,
                                  lg->p.read_cache_kib, lg->p.busy_timeout_ms,
                                  err, err_len);
        if (r == 0)
            r = ledger__exec(lg->rdb, lg->path, "PRAGMA query_only=1", err,
                             err_len);
    }
    if (r == 0)
        r = ledger__reader_prepare(lg, err, err_len);
    if (r == 0 && !lg->readonly)
        r = ledger__writer_start(lg, err, err_len);
    if (r == 0 && !lg->readonly) {
        struct stat st;

        if (stat(lg->path, &st) == 0) {
            lg->file_dev = st.st_dev;
            lg->file_ino = st.st_ino;
        }
    }
    if (r < 0) {
        ledger_close(lg);
        return r;
    }
    *ret_ledger = lg;
    return 0;
}

void ledger_close(struct ledger *lg)
{
    if (lg == NULL)
        return;
    if (lg->thread_started)
        ledger__writer_stop(lg);
    /* Entries left when the writer never ran (a failed open). */
    while (lg->ring != NULL && lg->count > 0) {
        free(lg->ring[lg->head]);
        lg->head = (lg->head + 1) % lg->p.queue_max;
        lg->count--;
    }
    ledger__reader_finalize(lg);
    ledger__writer_finalize(lg);
    (void)sqlite3_close(lg->rdb);
    (void)sqlite3_close(lg->w.db);
    (void)pthread_cond_destroy(&lg->work);
    (void)pthread_cond_destroy(&lg->done);
    (void)pthread_mutex_destroy(&lg->qlock);
    (void)pthread_mutex_destroy(&lg->rlock);
    free(lg->ring);
    free(lg->moved_aside);
    free(lg->path);
    free(lg);
}

int ledger_check_file(struct ledger *lg, char *err, size_t err_len)
{
    static const char magic[16] = "SQLite format 3";
    unsigned char head[100];
    struct stat st;
    ssize_t n;
    uint32_t app;
    int fd;

    if (lg == NULL || lg->readonly) {
        ledger__err(err, err_len, "no ledger open for writing");
        return -ENODEV;
    }
    fd = open(lg->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;

        if (e == ENOENT) {
            ledger__err(err, err_len, "ledger '%s' was removed", lg->path);
            return -ENOENT;
        }
        if (e == ELOOP) {
            ledger__err(err, err_len, "ledger '%s' was replaced by a symlink",
                        lg->path);
            return -ESTALE;
        }
        ledger__err(err, err_len, "ledger '%s' cannot be opened: %s", lg->path,
                    strerror(e));
        /* Permissions (e.g. chmod): the open handle still works. */
        return e == EACCES || e == EPERM ? 0 : -EIO;
    }
    if (fstat(fd, &st) != 0) {
        ledger__err(err, err_len, "ledger '%s': fstat: %s", lg->path,
                    strerror(errno));
        (void)close(fd);
        return -EIO;
    }
    if (st.st_dev != lg->file_dev || st.st_ino != lg->file_ino) {
        (void)close(fd);
        ledger__err(err, err_len, "ledger '%s' was replaced by another file",
                    lg->path);
        return -ESTALE;
    }
    n = pread(fd, head, sizeof(head), 0);
    (void)close(fd);
    if (n < 0) {
        ledger__err(err, err_len, "ledger '%s': read: %s", lg->path,
                    strerror(errno));
        return -EIO;
    }
    /* A new ledger may still have its first pages in the -wal file only:
     * a short file is not wrong, a wrong header is. */
    if (n >= (ssize_t)sizeof(magic) && memcmp(head, magic, sizeof(magic))) {
        ledger__err(err, err_len,
                    "ledger '%s' was overwritten: not an SQLite header",
                    lg->path);
        return -EUCLEAN;
    }
    if (n >= 72) {
        app = (uint32_t)head[68] << 24 | (uint32_t)head[69] << 16 |
              (uint32_t)head[70] << 8 | (uint32_t)head[71];
        if (app != 0 && app != (uint32_t)LEDGER__APP_ID) {
            ledger__err(err, err_len,
                        "ledger '%s' was overwritten: application_id %#x",
                        lg->path, (unsigned)app);
            return -EUCLEAN;
        }
    }
    return 0;
}

const char *ledger_path(const struct ledger *lg)
{
    return lg != NULL ? lg->path : NULL;
}

const char *ledger_moved_aside(const struct ledger *lg)
{
    return lg != NULL ? lg->moved_aside : NULL;
}

const char *ledger_moved_aside_reason(const struct ledger *lg)
{
    return lg != NULL && lg->moved_aside != NULL ? lg->moved_reason : NULL;
}

int ledger_stats(struct ledger *lg, struct ledger_stats *ret_stats)
{
    if (lg == NULL)
        return -ENODEV;
    if (ret_stats == NULL)
        return -EINVAL;
    (void)pthread_mutex_lock(&lg->qlock);
    *ret_stats = lg->stats;
    ret_stats->queue_len = lg->count;
    ret_stats->prune_pending = lg->prune_cutoff > 0;
    ret_stats->broken = atomic_load(&lg->broken);
    (void)pthread_mutex_unlock(&lg->qlock);
    return 0;
}
