/* SPDX-License-Identifier: Apache-2.0 */
/*
 * journal - the spool's intake journal (journal.h has the contract).
 *
 * Record sequence numbers order everything. A record goes through:
 *   reserved  (a place in the current segment, under the mutex)
 *   written   (header and data pwrite()n, outside the mutex)
 *   durable   (an fdatasync() that started after every record up to it
 *              was written: written_upto is the contiguous prefix)
 *   finished  (its commit is over: entry linked, or given up)
 *   retired   (a syncfs() that started after it finished succeeded and
 *              the checkpoint names it: its segment space may be reused)
 * Acknowledging only a contiguous durable prefix matters for replay: the
 * replay reads each segment from its start and stops at the first record
 * that is not valid, so no acknowledged record may lie behind a torn one.
 */
#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"
#include "spool_int.h"

#define JOURNAL_BLOCK 4096u
#define JOURNAL_RING 4096u /* records between finished_upto and the newest */
#define JOURNAL_COPY_CHUNK (64u * 1024u) /* from the heap, not mmap */
/* The aligned buffer a record is written from (O_DIRECT wants buffer,
 * offset and length aligned; JOURNAL_BLOCK covers every logical block
 * size in use): a whole record up to this size, else chunks of it. */
#define JOURNAL_WRITE_CHUNK (1024u * 1024u)
#define JOURNAL_CHECKPOINT_NAME "checkpoint"
#define JOURNAL_RECORD_MAGIC 0x3130434552424a53ull /* "SJBREC01" */
#define JOURNAL_CKPT_MAGIC 0x3130544b43424a53ull   /* "SJBCKT01" */

/* Offsets in a record's 4096-byte header (little-endian host order: the
 * journal never leaves the machine that wrote it). */
#define HDR_MAGIC 0
#define HDR_SEQ 8
#define HDR_DATA_LEN 16
#define HDR_LABEL_LEN 24
#define HDR_DATA_CRC 28
#define HDR_ID 32    /* 48 bytes, NUL-padded */
#define HDR_LABEL 80 /* up to 512 bytes */
#define HDR_LABEL_MAX 512u
#define HDR_CRC (JOURNAL_BLOCK - 4) /* CRC-32C of bytes [0, HDR_CRC) */

enum { RING_WRITTEN = 1, RING_FINISHED = 2 };

/* A record between its reservation and its retirement. */
struct journal_slot {
    unsigned char flags; /* RING_WRITTEN | RING_FINISHED */
    unsigned seg;
    uint64_t offset;
};

struct journal_segment {
    int fd;
    uint64_t max_seq; /* newest record placed in it (0: none) */
};

struct spool_journal {
    char *spool_dir; /* for messages */
    int spool_dir_fd;
    int dir_fd;
    int ckpt_fd;
    unsigned ckpt_slot; /* the slot the next checkpoint writes */
    unsigned nseg;
    uint64_t seg_size;
    unsigned interval_ms; /* checkpoint at least this often */
    uint64_t max_record;  /* bytes of data; bigger instances: file path */
    bool inode_flush;     /* futimens() + fsync() instead of fdatasync() */
    _Atomic bool direct;  /* the segments are open with O_DIRECT */
    struct journal_segment seg[SPOOL_JOURNAL_SEGMENTS];

    pthread_mutex_t mutex;
    pthread_cond_t cond;        /* any progress; broadcast */
    pthread_cond_t ckpt_wakeup; /* the checkpoint thread's */
    unsigned cur_seg;
    uint64_t cur_off;
    uint64_t next_seq; /* newest handed out */
    uint64_t written_upto;
    uint64_t durable_upto;
    uint64_t finished_upto;
    uint64_t retired_upto;
    struct journal_slot ring[JOURNAL_RING];
    bool flushing;
    uint64_t broken_seq; /* 0: healthy; else records >= it never durable */
    char broken_reason[256];
    uint64_t bytes_since_ckpt;
    bool space_wanted;
    bool stopping;
    bool thread_started;
    pthread_t thread;

    uint64_t records;
    uint64_t flushes;
    uint64_t checkpoints;
};

/* ------------------------------------------------------------------ */
/* CRC-32C                                                             */
/* ------------------------------------------------------------------ */

static uint32_t crc32c_table[8][256];
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;

static void crc32c_init_table(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        crc32c_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc32c_table[t][i] = (crc32c_table[t - 1][i] >> 8) ^
                                 crc32c_table[0][crc32c_table[t - 1][i] & 0xff];
}

/* Slicing-by-8: about 1.5 GB/s, where the CPU has no CRC32 instruction. */
static uint32_t crc32c_soft(uint32_t crc, const unsigned char *p, size_t len)
{
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        v ^= crc;
        crc = crc32c_table[7][v & 0xff] ^ crc32c_table[6][(v >> 8) & 0xff] ^
              crc32c_table[5][(v >> 16) & 0xff] ^
              crc32c_table[4][(v >> 24) & 0xff] ^
              crc32c_table[3][(v >> 32) & 0xff] ^
              crc32c_table[2][(v >> 40) & 0xff] ^
              crc32c_table[1][(v >> 48) & 0xff] ^ crc32c_table[0][v >> 56];
        p += 8;
        len -= 8;
    }
    while (len-- > 0)
        crc = (crc >> 8) ^ crc32c_table[0][(crc ^ *p++) & 0xff];
    return crc;
}

#if defined(__x86_64__)
/* SSE4.2's CRC32 instruction computes exactly CRC-32C: ~8 GB/s. */
__attribute__((target("sse4.2"))) static uint32_t
crc32c_hw(uint32_t crc, const unsigned char *p, size_t len)
{
    uint64_t c = crc;
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        len -= 8;
    }
    while (len-- > 0)
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    return (uint32_t)c;
}
#endif

uint32_t spool_crc32c(uint32_t crc, const void *buf, size_t len)
{
    crc = ~crc;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2"))
        return ~crc32c_hw(crc, buf, len);
#endif
    pthread_once(&crc32c_once, crc32c_init_table);
    return ~crc32c_soft(crc, buf, len);
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static int journal_syserr(char *err, size_t err_len, int error,
                          const char *call, const char *dir, const char *name)
{
    char buf[128];

    util_err(err, err_len, "%s() '%s/" SPOOL_JOURNAL_DIR "%s%s' failed: %s",
             call, dir, name != NULL ? "/" : "", name != NULL ? name : "",
             util_strerror(-error, buf, sizeof(buf)));
    return -error;
}

static int pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
    const unsigned char *p = buf;

    while (len > 0) {
        ssize_t n = spool__io.pwrite(fd, p, len, off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

/* Writes all of @iov (@count entries, changed on a short write). */
static int pwritev_all(int fd, struct iovec *iov, int count, off_t off)
{
    while (count > 0) {
        ssize_t n = spool__io.pwritev(fd, iov, count, off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        off += n;
        while (count > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            count--;
        }
        if (count > 0) {
            iov->iov_base = (unsigned char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

/* Reads exactly @len bytes (-EIO on a short file). */
static int pread_all(int fd, void *buf, size_t len, off_t off)
{
    unsigned char *p = buf;

    while (len > 0) {
        ssize_t n = spool__io.pread(fd, p, len, off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

/* Sets or clears O_DIRECT on every segment; false if one refused. */
static bool segments_set_direct(struct spool_journal *j, bool on)
{
    bool all = true;

    for (unsigned i = 0; i < j->nseg; i++) {
        int flags = fcntl(j->seg[i].fd, F_GETFL);
        if (flags < 0 || fcntl(j->seg[i].fd, F_SETFL,
                               on ? flags | O_DIRECT : flags & ~O_DIRECT) < 0)
            all = false;
    }
    return all;
}

/* After a direct write refused with EINVAL: the journal goes on through
 * the page cache, every segment, for good. Every thread that saw the
 * EINVAL calls it (idempotent) before its retry, so none retries while
 * the flags are still set. */
static void journal_go_buffered(struct spool_journal *j)
{
    bool was_direct = atomic_exchange(&j->direct, false);

    (void)segments_set_direct(j, false);
    if (was_direct)
        log_notice("event=spool-journal-buffered dir=%s reason=\"the file "
                   "system refused a direct write (EINVAL); the journal "
                   "writes through the page cache\"",
                   j->spool_dir);
}

/*
 * pwrite_all() to a segment. With O_DIRECT a file system that does not
 * take direct writes after all answers EINVAL: the journal then goes on
 * through the page cache (every segment, for good), and the write is
 * made again that way (once: a second EINVAL is the caller's error).
 */
static int seg_pwrite(struct spool_journal *j, int seg_fd, const void *buf,
                      size_t len, uint64_t off)
{
    int r = pwrite_all(seg_fd, buf, len, (off_t)off);

    if (r == -EINVAL) {
        journal_go_buffered(j);
        r = pwrite_all(seg_fd, buf, len, (off_t)off);
    }
    return r;
}

/* seg_pwrite() for @count pieces (at most 3) written as one. */
static int seg_pwritev(struct spool_journal *j, int seg_fd,
                       const struct iovec *iov, int count, uint64_t off)
{
    struct iovec left[3];
    int r;

    memcpy(left, iov, (size_t)count * sizeof(*iov));
    r = pwritev_all(seg_fd, left, count, (off_t)off);
    if (r == -EINVAL) {
        journal_go_buffered(j);
        /* Written again from the start: a partial first try is simply
         * overwritten, the record's space is its own. */
        memcpy(left, iov, (size_t)count * sizeof(*iov));
        r = pwritev_all(seg_fd, left, count, (off_t)off);
    }
    return r;
}

static uint64_t round_block(uint64_t n)
{
    return (n + JOURNAL_BLOCK - 1) / JOURNAL_BLOCK * JOURNAL_BLOCK;
}

static void seg_name(unsigned i, char *buf, size_t len)
{
    snprintf(buf, len, "seg.%u", i);
}

/* ------------------------------------------------------------------ */
/* Checkpoint file                                                     */
/* ------------------------------------------------------------------ */

/* The newest valid checkpoint: its sequence and slot; 0 if none. */
static uint64_t ckpt_read(int fd, unsigned *ret_slot)
{
    uint64_t best = 0;
    unsigned best_slot = 1; /* so that the next write goes to slot 0 */

    for (unsigned slot = 0; slot < 2; slot++) {
        unsigned char b[JOURNAL_BLOCK];
        uint64_t magic, seq;
        uint32_t crc;

        if (pread_all(fd, b, sizeof(b), (off_t)slot * JOURNAL_BLOCK) < 0)
            continue;
        memcpy(&magic, b, 8);
        memcpy(&seq, b + 8, 8);
        memcpy(&crc, b + 16, 4);
        if (magic != JOURNAL_CKPT_MAGIC || crc != spool_crc32c(0, b, 16))
            continue;
        if (seq >= best) {
            best = seq;
            best_slot = slot;
        }
    }
    if (ret_slot != NULL)
        *ret_slot = best_slot ^ 1u;
    return best;
}

static int ckpt_write(int fd, unsigned slot, uint64_t seq)
{
    unsigned char b[JOURNAL_BLOCK];
    uint64_t magic = JOURNAL_CKPT_MAGIC;
    uint32_t crc;
    int r;

    memset(b, 0, sizeof(b));
    memcpy(b, &magic, 8);
    memcpy(b + 8, &seq, 8);
    crc = spool_crc32c(0, b, 16);
    memcpy(b + 16, &crc, 4);
    r = pwrite_all(fd, b, sizeof(b), (off_t)slot * JOURNAL_BLOCK);
    if (r == 0 && spool__io.fdatasync(fd) < 0)
        r = -errno;
    return r;
}

static int ckpt_open(int dir_fd, bool create)
{
    int fd =
        openat(dir_fd, JOURNAL_CHECKPOINT_NAME,
               O_RDWR | O_NOFOLLOW | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
    return fd < 0 ? -errno : fd;
}

/* ------------------------------------------------------------------ */
/* Replay                                                              */
/* ------------------------------------------------------------------ */

/* Parses and checks a record header; false if it is not a valid one. */
static bool header_parse(const unsigned char *h, uint64_t seg_size,
                         uint64_t offset, struct spool_journal_record *rec)
{
    uint64_t magic;
    uint32_t label_len;
    uint32_t crc;

    memcpy(&magic, h + HDR_MAGIC, 8);
    if (magic != JOURNAL_RECORD_MAGIC)
        return false;
    memcpy(&crc, h + HDR_CRC, 4);
    if (crc != spool_crc32c(0, h, HDR_CRC))
        return false;
    memset(rec, 0, sizeof(*rec));
    memcpy(&rec->seq, h + HDR_SEQ, 8);
    memcpy(&rec->data_len, h + HDR_DATA_LEN, 8);
    memcpy(&label_len, h + HDR_LABEL_LEN, 4);
    memcpy(&rec->data_crc, h + HDR_DATA_CRC, 4);
    if (label_len > HDR_LABEL_MAX || rec->seq == 0 ||
        rec->data_len > seg_size ||
        offset + JOURNAL_BLOCK + rec->data_len > seg_size)
        return false;
    memcpy(rec->id, h + HDR_ID, sizeof(rec->id));
    rec->id[sizeof(rec->id) - 1] = '\0';
    memcpy(rec->label, h + HDR_LABEL, label_len);
    rec->label[label_len] = '\0';
    rec->label_len = label_len;
    rec->data_offset = (off_t)(offset + JOURNAL_BLOCK);
    return true;
}

int spool_journal_crc_of(int fd, off_t off, uint64_t len, uint32_t *ret_crc)
{
    unsigned char *buf = malloc(JOURNAL_COPY_CHUNK);
    uint32_t crc = 0;
    int r = 0;

    if (buf == NULL)
        return -ENOMEM;
    while (len > 0 && r == 0) {
        size_t n = len < JOURNAL_COPY_CHUNK ? (size_t)len : JOURNAL_COPY_CHUNK;
        r = pread_all(fd, buf, n, off);
        if (r == 0) {
            crc = spool_crc32c(crc, buf, n);
            off += (off_t)n;
            len -= n;
        }
    }
    free(buf);
    *ret_crc = crc;
    return r;
}

struct replay_list {
    struct spool_journal_record *v;
    size_t n, cap;
};

static int cmp_seq(const void *a, const void *b)
{
    const struct spool_journal_record *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Scans one segment: valid records newer than @after go to @list; the
 * highest sequence seen (valid header) raises *max_seq. */
static int scan_segment(int fd, uint64_t after, struct replay_list *list,
                        uint64_t *max_seq)
{
    struct stat st;
    uint64_t off = 0;

    if (fstat(fd, &st) < 0)
        return -errno;
    while (off + JOURNAL_BLOCK <= (uint64_t)st.st_size) {
        unsigned char h[JOURNAL_BLOCK];
        struct spool_journal_record rec;

        if (pread_all(fd, h, sizeof(h), (off_t)off) < 0 ||
            !header_parse(h, (uint64_t)st.st_size, off, &rec))
            break;
        if (rec.seq > after) {
            uint32_t crc;
            int r =
                spool_journal_crc_of(fd, rec.data_offset, rec.data_len, &crc);
            if (r < 0 || crc != rec.data_crc)
                break; /* torn: never acknowledged, nor anything after */
            if (list->n == list->cap) {
                size_t cap = list->cap ? list->cap * 2 : 64;
                void *v = realloc(list->v, cap * sizeof(*list->v));
                if (v == NULL)
                    return -ENOMEM;
                list->v = v;
                list->cap = cap;
            }
            rec.seg_fd = fd;
            list->v[list->n++] = rec;
        }
        if (rec.seq > *max_seq)
            *max_seq = rec.seq;
        off += JOURNAL_BLOCK + round_block(rec.data_len);
    }
    return 0;
}

int spool_journal_replay(int spool_dir_fd, const char *spool_dir,
                         int (*fn)(void *ctx,
                                   const struct spool_journal_record *rec),
                         void *ctx, unsigned *ret_count, char *err,
                         size_t err_len)
{
    struct replay_list list = { NULL, 0, 0 };
    int seg_fds[64];
    unsigned nseg = 0;
    uint64_t ckpt, max_seq;
    unsigned slot;
    int dir_fd, ckpt_fd;
    int r = 0;

    *ret_count = 0;
    dir_fd = openat(spool_dir_fd, SPOOL_JOURNAL_DIR,
                    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dir_fd < 0) {
        if (errno == ENOENT)
            return 0;
        return journal_syserr(err, err_len, errno, "open", spool_dir, NULL);
    }
    ckpt_fd = ckpt_open(dir_fd, true);
    if (ckpt_fd < 0) {
        r = journal_syserr(err, err_len, -ckpt_fd, "open", spool_dir,
                           JOURNAL_CHECKPOINT_NAME);
        close(dir_fd);
        return r;
    }
    ckpt = ckpt_read(ckpt_fd, &slot);
    max_seq = ckpt;
    for (nseg = 0; nseg < 64; nseg++) {
        char name[32];
        seg_name(nseg, name, sizeof(name));
        seg_fds[nseg] = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (seg_fds[nseg] < 0)
            break;
        r = scan_segment(seg_fds[nseg], ckpt, &list, &max_seq);
        if (r < 0) {
            journal_syserr(err, err_len, -r, "read", spool_dir, name);
            nseg++;
            goto out;
        }
    }
    if (list.n > 1)
        qsort(list.v, list.n, sizeof(*list.v), cmp_seq);
    for (size_t i = 0; i < list.n; i++) {
        r = fn(ctx, &list.v[i]);
        if (r < 0) {
            char buf[128];
            util_err(err, err_len,
                     "journal replay of entry %s (record %" PRIu64
                     ") failed: %s",
                     list.v[i].id, list.v[i].seq,
                     util_strerror(r, buf, sizeof(buf)));
            goto out;
        }
    }
    *ret_count = (unsigned)list.n;
    if (max_seq > ckpt) {
        /* Everything replayed is durable as files: say so, so that the
         * next start does not replay it again. */
        if (spool__io.syncfs(spool_dir_fd) < 0)
            r = journal_syserr(err, err_len, errno, "syncfs", spool_dir, NULL);
        else if ((r = ckpt_write(ckpt_fd, slot, max_seq)) < 0)
            journal_syserr(err, err_len, -r, "write", spool_dir,
                           JOURNAL_CHECKPOINT_NAME);
    }
out:
    for (unsigned i = 0; i < nseg; i++)
        if (seg_fds[i] >= 0)
            close(seg_fds[i]);
    free(list.v);
    close(ckpt_fd);
    close(dir_fd);
    return r;
}

int spool_journal_remove(int spool_dir_fd, const char *spool_dir, char *err,
                         size_t err_len)
{
    int dir_fd = openat(spool_dir_fd, SPOOL_JOURNAL_DIR,
                        O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

    if (dir_fd < 0)
        return errno == ENOENT ? 0
                               : journal_syserr(err, err_len, errno, "open",
                                                spool_dir, NULL);
    for (unsigned i = 0; i < 64; i++) {
        char name[32];
        seg_name(i, name, sizeof(name));
        (void)unlinkat(dir_fd, name, 0);
    }
    (void)unlinkat(dir_fd, JOURNAL_CHECKPOINT_NAME, 0);
    close(dir_fd);
    if (unlinkat(spool_dir_fd, SPOOL_JOURNAL_DIR, AT_REMOVEDIR) < 0 &&
        errno != ENOENT)
        return journal_syserr(err, err_len, errno, "rmdir", spool_dir, NULL);
    if (spool__io.fsync(spool_dir_fd) < 0)
        return journal_syserr(err, err_len, errno, "fsync", spool_dir, NULL);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Open, close, checkpoint thread                                      */
/* ------------------------------------------------------------------ */

/* Creates segment @i of @size bytes, written with zeros (so that later
 * overwrites change no metadata and fdatasync() is one flush). */
static int seg_create(int dir_fd, unsigned i, uint64_t size)
{
    char name[32], tmp[40];
    unsigned char *zeros;
    int fd, r = 0;

    seg_name(i, name, sizeof(name));
    snprintf(tmp, sizeof(tmp), ".%s.new", name);
    fd = openat(dir_fd, tmp,
                O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    zeros = calloc(1, 1u << 20);
    if (zeros == NULL)
        r = -ENOMEM;
    for (uint64_t off = 0; r == 0 && off < size; off += 1u << 20) {
        uint64_t n = size - off < (1u << 20) ? size - off : (1u << 20);
        r = pwrite_all(fd, zeros, (size_t)n, (off_t)off);
    }
    free(zeros);
    if (r == 0 && spool__io.fsync(fd) < 0)
        r = -errno;
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r == 0 && renameat(dir_fd, tmp, dir_fd, name) < 0)
        r = -errno;
    if (r < 0)
        (void)unlinkat(dir_fd, tmp, 0);
    return r;
}

static void *checkpoint_thread(void *arg);

int spool_journal_open(int spool_dir_fd, const char *spool_dir,
                       unsigned size_mb, unsigned checkpoint_ms,
                       unsigned max_record_kb, bool inode_flush,
                       struct spool_journal **ret_journal, char *err,
                       size_t err_len)
{
    struct spool_journal *j;
    uint64_t seg_size;
    bool created = false;
    int r;

    if (size_mb < SPOOL_JOURNAL_MIN_MB)
        size_mb = SPOOL_JOURNAL_MIN_MB;
    seg_size = (uint64_t)size_mb * 1024u * 1024u / SPOOL_JOURNAL_SEGMENTS;
    seg_size = seg_size / JOURNAL_BLOCK * JOURNAL_BLOCK;
    j = calloc(1, sizeof(*j));
    if (j == NULL)
        return -ENOMEM;
    j->spool_dir_fd = spool_dir_fd;
    j->dir_fd = j->ckpt_fd = -1;
    j->nseg = SPOOL_JOURNAL_SEGMENTS;
    j->seg_size = seg_size;
    j->interval_ms = checkpoint_ms > 0 ? checkpoint_ms : 1000u;
    j->inode_flush = inode_flush;
    /* Half a segment at most: a big instance never takes a whole one. */
    j->max_record = seg_size / 2 - JOURNAL_BLOCK;
    if (max_record_kb > 0 && (uint64_t)max_record_kb * 1024u < j->max_record)
        j->max_record = (uint64_t)max_record_kb * 1024u;
    for (unsigned i = 0; i < j->nseg; i++)
        j->seg[i].fd = -1;
    pthread_mutex_init(&j->mutex, NULL);
    pthread_cond_init(&j->cond, NULL);
    pthread_cond_init(&j->ckpt_wakeup, NULL);
    j->spool_dir = strdup(spool_dir);
    if (j->spool_dir == NULL) {
        r = -ENOMEM;
        goto fail;
    }

    if (mkdirat(spool_dir_fd, SPOOL_JOURNAL_DIR, 0700) == 0)
        created = true;
    else if (errno != EEXIST) {
        r = journal_syserr(err, err_len, errno, "mkdir", spool_dir, NULL);
        goto fail;
    }
    j->dir_fd = openat(spool_dir_fd, SPOOL_JOURNAL_DIR,
                       O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (j->dir_fd < 0) {
        r = journal_syserr(err, err_len, errno, "open", spool_dir, NULL);
        goto fail;
    }
    for (unsigned i = 0; i < j->nseg; i++) {
        char name[32];
        struct stat st;
        seg_name(i, name, sizeof(name));
        int fd = openat(j->dir_fd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
                        (uint64_t)st.st_size != seg_size)) {
            close(fd); /* another size: spool.journal_mb changed */
            fd = -1;
        }
        if (fd < 0) {
            r = seg_create(j->dir_fd, i, seg_size);
            if (r < 0) {
                journal_syserr(err, err_len, -r, "create", spool_dir, name);
                goto fail;
            }
            created = true;
            fd = openat(j->dir_fd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0) {
                r = journal_syserr(err, err_len, errno, "open", spool_dir,
                                   name);
                goto fail;
            }
        }
        j->seg[i].fd = fd;
    }
    /* Records go straight to the disk, not through the page cache: the
     * segments are written once and read only by a replay, and cached
     * they would take 256 MiB of memory and their writeback the flush's
     * CPU (issue 16, 64 KB, 5 alternating pairs: +8 % one association, +5 %
     * four). Where the file system does not take O_DIRECT, the page cache
     * (seg_pwrite()). */
    bool direct = segments_set_direct(j, true);
    if (!direct)
        (void)segments_set_direct(j, false);
    atomic_store(&j->direct, direct);
    /* Segments beyond the count (an older, larger layout) are unused. */
    for (unsigned i = j->nseg; i < 64; i++) {
        char name[32];
        seg_name(i, name, sizeof(name));
        if (unlinkat(j->dir_fd, name, 0) == 0)
            created = true;
    }
    r = ckpt_open(j->dir_fd, true);
    if (r < 0) {
        journal_syserr(err, err_len, -r, "open", spool_dir,
                       JOURNAL_CHECKPOINT_NAME);
        goto fail;
    }
    j->ckpt_fd = r;
    if (created) {
        if (spool__io.fsync(j->dir_fd) < 0 ||
            spool__io.fsync(spool_dir_fd) < 0) {
            r = journal_syserr(err, err_len, errno, "fsync", spool_dir, NULL);
            goto fail;
        }
    }
    /* spool_journal_replay() ran first and checkpointed every record it
     * saw: new records continue after the checkpoint. */
    j->next_seq = ckpt_read(j->ckpt_fd, &j->ckpt_slot);
    j->written_upto = j->durable_upto = j->finished_upto = j->retired_upto =
        j->next_seq;
    if (pthread_create(&j->thread, NULL, checkpoint_thread, j) != 0) {
        r = -EAGAIN;
        util_err(err, err_len, "cannot start the journal's checkpoint thread");
        goto fail;
    }
    j->thread_started = true;
    *ret_journal = j;
    return 0;

fail:
    spool_journal_close(j);
    return r;
}

bool spool_journal_up(struct spool_journal *j)
{
    bool up;

    pthread_mutex_lock(&j->mutex);
    up = j->broken_seq == 0;
    pthread_mutex_unlock(&j->mutex);
    return up;
}

uint64_t spool_journal_max_record(const struct spool_journal *journal)
{
    return journal->max_record;
}

/* Marks the journal broken from record @seq on (mutex held). */
static void journal_break(struct spool_journal *j, uint64_t seq,
                          const char *reason)
{
    if (j->broken_seq == 0 || seq < j->broken_seq) {
        if (j->broken_seq == 0) {
            util_err(j->broken_reason, sizeof(j->broken_reason), "%s", reason);
            log_err("event=spool-journal-error dir=%s reason=\"%s\" "
                    "action=\"receives commit file by file until restart\"",
                    j->spool_dir, reason);
        }
        j->broken_seq = seq;
    }
}

/* Sets @flag for @seq and advances the contiguous prefixes (mutex held). */
static void ring_mark(struct spool_journal *j, uint64_t seq, unsigned char flag)
{
    j->ring[seq % JOURNAL_RING].flags |= flag;
    while (j->written_upto < j->next_seq &&
           (j->ring[(j->written_upto + 1) % JOURNAL_RING].flags & RING_WRITTEN))
        j->written_upto++;
    while (
        j->finished_upto < j->written_upto &&
        (j->ring[(j->finished_upto + 1) % JOURNAL_RING].flags & RING_FINISHED))
        j->finished_upto++;
    pthread_cond_broadcast(&j->cond);
}

/* Zeroes record @seq's header (mutex not held), so that no replay brings
 * back an instance that was refused. Best effort, never flushed: after a
 * crash before its space is reused the refused instance may come back,
 * whole (it is exactly what the caller sent, and sent again). */
static void record_invalidate(struct spool_journal *j, uint64_t seq)
{
    static _Alignas(JOURNAL_BLOCK) const unsigned char zeros[JOURNAL_BLOCK];
    unsigned seg;
    uint64_t off;

    pthread_mutex_lock(&j->mutex);
    seg = j->ring[seq % JOURNAL_RING].seg;
    off = j->ring[seq % JOURNAL_RING].offset;
    pthread_mutex_unlock(&j->mutex);
    (void)seg_pwrite(j, j->seg[seg].fd, zeros, sizeof(zeros), off);
}

void spool_journal_cancel(struct spool_journal *journal, uint64_t seq)
{
    record_invalidate(journal, seq);
    spool_journal_finish(journal, seq);
}

void spool_journal_keep(struct spool_journal *journal, uint64_t seq,
                        const char *reason)
{
    char why[320];

    snprintf(why, sizeof(why),
             "record %" PRIu64
             " is kept, its entry restored from it at the next start: %s",
             seq, reason);
    pthread_mutex_lock(&journal->mutex);
    /* Past every record appended so far: those still waiting for their
     * flush complete, nothing new is taken, nothing is retired. */
    journal_break(journal, journal->next_seq + 1, why);
    pthread_mutex_unlock(&journal->mutex);
}

void spool_journal_finish(struct spool_journal *journal, uint64_t seq)
{
    pthread_mutex_lock(&journal->mutex);
    ring_mark(journal, seq, RING_FINISHED);
    pthread_mutex_unlock(&journal->mutex);
}

/* Fills the record header for @seq in @hdr (JOURNAL_BLOCK bytes). */
static void header_fill(unsigned char *hdr, uint64_t seq, const char *id,
                        const char *label, size_t label_len, uint64_t data_len,
                        uint32_t data_crc)
{
    uint64_t magic = JOURNAL_RECORD_MAGIC;
    uint32_t hcrc, llen = (uint32_t)label_len;

    memset(hdr, 0, JOURNAL_BLOCK);
    memcpy(hdr + HDR_MAGIC, &magic, 8);
    memcpy(hdr + HDR_SEQ, &seq, 8);
    memcpy(hdr + HDR_DATA_LEN, &data_len, 8);
    memcpy(hdr + HDR_LABEL_LEN, &llen, 4);
    memcpy(hdr + HDR_DATA_CRC, &data_crc, 4);
    memcpy(hdr + HDR_ID, id, strnlen(id, 47));
    memcpy(hdr + HDR_LABEL, label, label_len);
    hcrc = spool_crc32c(0, hdr, HDR_CRC);
    memcpy(hdr + HDR_CRC, &hcrc, 4);
}

/*
 * Writes a record whose @data (@data_len bytes) starts on a block
 * boundary in memory (an instance held in one of the SCP's page-aligned
 * receive buffers) without copying it: the header block, the data's whole
 * blocks where they are and its last partial block copied and padded
 * with zeros, in one pwritev().
 */
static int record_write_in_place(struct spool_journal *j, int seg_fd,
                                 uint64_t off, uint64_t seq, const char *id,
                                 const char *label, size_t label_len,
                                 const void *data, uint64_t data_len)
{
    size_t whole_blocks = (size_t)(data_len / JOURNAL_BLOCK * JOURNAL_BLOCK);
    size_t rest = (size_t)data_len - whole_blocks;
    unsigned char *blocks = NULL; /* the header, then the last block */
    struct iovec iov[3];
    int count = 0;
    int r;

    if (posix_memalign((void **)&blocks, JOURNAL_BLOCK, 2 * JOURNAL_BLOCK) != 0)
        return -ENOMEM;
    header_fill(blocks, seq, id, label, label_len, data_len,
                spool_crc32c(0, data, (size_t)data_len));
    iov[count++] = (struct iovec){ blocks, JOURNAL_BLOCK };
    if (whole_blocks > 0)
        iov[count++] = (struct iovec){ (void *)data, whole_blocks };
    if (rest > 0) {
        memcpy(blocks + JOURNAL_BLOCK,
               (const unsigned char *)data + whole_blocks, rest);
        memset(blocks + JOURNAL_BLOCK + rest, 0, JOURNAL_BLOCK - rest);
        iov[count++] = (struct iovec){ blocks + JOURNAL_BLOCK, JOURNAL_BLOCK };
    }
    r = seg_pwritev(j, seg_fd, iov, count, off);
    free(blocks);
    return r;
}

/*
 * Writes record @seq at @off of segment @seg_fd (outside the mutex), its
 * data from @data if it is not NULL, else the first @data_len bytes of
 * @data_fd, in whole blocks from aligned memory (the record's space is
 * JOURNAL_BLOCK + round_block(@data_len), so the padding stays inside
 * it). Data in memory on a block boundary is written in place
 * (record_write_in_place()); other data in memory that fits
 * JOURNAL_WRITE_CHUNK with its header is copied and written at once;
 * otherwise the data goes first, chunk by chunk through a copy, and the
 * header, which holds the data's CRC, last.
 */
static int record_write(struct spool_journal *j, int seg_fd, uint64_t off,
                        uint64_t seq, const char *id, const char *label,
                        size_t label_len, const void *data, int data_fd,
                        uint64_t data_len)
{
    uint64_t whole = JOURNAL_BLOCK + round_block(data_len);
    size_t cap =
        whole < JOURNAL_WRITE_CHUNK ? (size_t)whole : JOURNAL_WRITE_CHUNK;
    unsigned char *buf = NULL;
    uint32_t crc = 0;
    uint64_t done = 0;
    int r = 0;

    if (data != NULL && (uintptr_t)data % JOURNAL_BLOCK == 0)
        return record_write_in_place(j, seg_fd, off, seq, id, label, label_len,
                                     data, data_len);
    if (posix_memalign((void **)&buf, JOURNAL_BLOCK, cap) != 0)
        return -ENOMEM;
    if (data != NULL && whole <= JOURNAL_WRITE_CHUNK) {
        crc = spool_crc32c(0, data, (size_t)data_len);
        header_fill(buf, seq, id, label, label_len, data_len, crc);
        memcpy(buf + JOURNAL_BLOCK, data, (size_t)data_len);
        memset(buf + JOURNAL_BLOCK + data_len, 0,
               (size_t)(whole - JOURNAL_BLOCK - data_len));
        r = seg_pwrite(j, seg_fd, buf, (size_t)whole, off);
        free(buf);
        return r;
    }
    while (done < data_len && r == 0) {
        uint64_t left = data_len - done;
        size_t n = left < cap ? (size_t)left : cap;
        size_t padded = (size_t)round_block(n);
        if (data != NULL)
            memcpy(buf, (const unsigned char *)data + done, n);
        else
            r = pread_all(data_fd, buf, n, (off_t)done);
        if (r == 0) {
            crc = spool_crc32c(crc, buf, n);
            memset(buf + n, 0, padded - n);
            r = seg_pwrite(j, seg_fd, buf, padded, off + JOURNAL_BLOCK + done);
        }
        done += n;
    }
    if (r == 0) {
        header_fill(buf, seq, id, label, label_len, data_len, crc);
        r = seg_pwrite(j, seg_fd, buf, JOURNAL_BLOCK, off);
    }
    free(buf);
    return r;
}

/* fdatasyncs every segment holding records after durable_upto, up to
 * @target; mutex held on entry and exit, released during the flush. */
static int journal_flush(struct spool_journal *j, uint64_t target)
{
    int fds[SPOOL_JOURNAL_SEGMENTS];
    unsigned n = 0;
    int r = 0;

    for (unsigned i = 0; i < j->nseg; i++)
        if (j->seg[i].max_seq > j->durable_upto)
            fds[n++] = j->seg[i].fd;
    j->flushing = true;
    pthread_mutex_unlock(&j->mutex);
    for (unsigned i = 0; i < n && r == 0; i++) {
        /* Without a file-system journal, ext4 before Linux 6.5 issues no
         * cache flush for an fdatasync() that has no metadata to write
         * (an overwrite): give it the mtime to write (spool.c,
         * spool_datasync_flushes()). */
        if (j->inode_flush)
            r = futimens(fds[i], NULL) < 0 || spool__io.fsync(fds[i]) < 0
                    ? -errno
                    : 0;
        else if (spool__io.fdatasync(fds[i]) < 0)
            r = -errno;
    }
    pthread_mutex_lock(&j->mutex);
    j->flushing = false;
    j->flushes++;
    if (r == 0) {
        if (target > j->durable_upto)
            j->durable_upto = target;
    } else {
        char buf[128], why[192];
        snprintf(why, sizeof(why),
                 "fdatasync() of a journal segment failed: %s",
                 util_strerror(r, buf, sizeof(buf)));
        journal_break(j, j->durable_upto + 1, why);
    }
    pthread_cond_broadcast(&j->cond);
    return r;
}

int spool_journal_append(struct spool_journal *j, const char *id,
                         const char *label, size_t label_len, const void *data,
                         int data_fd, uint64_t data_len, uint64_t *ret_seq,
                         char *err, size_t err_len)
{
    uint64_t reclen = JOURNAL_BLOCK + round_block(data_len);
    uint64_t seq, off;
    unsigned segi;
    int r;

    if (label_len > HDR_LABEL_MAX || data_len > spool_journal_max_record(j))
        return -EAGAIN;
    pthread_mutex_lock(&j->mutex);
    if (j->broken_seq != 0 || j->stopping ||
        j->next_seq + 1 - j->finished_upto >= JOURNAL_RING) {
        pthread_mutex_unlock(&j->mutex);
        return -EAGAIN;
    }
    if (j->cur_off + reclen > j->seg_size) {
        unsigned next = (j->cur_seg + 1) % j->nseg;
        if (j->seg[next].max_seq > j->retired_upto) {
            /* Not checkpointed yet: the file path for this one. */
            j->space_wanted = true;
            pthread_cond_signal(&j->ckpt_wakeup);
            pthread_mutex_unlock(&j->mutex);
            return -EAGAIN;
        }
        j->cur_seg = next;
        j->cur_off = 0;
    }
    seq = ++j->next_seq;
    segi = j->cur_seg;
    off = j->cur_off;
    j->cur_off += reclen;
    j->seg[segi].max_seq = seq;
    j->ring[seq % JOURNAL_RING].flags = 0;
    j->ring[seq % JOURNAL_RING].seg = segi;
    j->ring[seq % JOURNAL_RING].offset = off;
    j->records++;
    j->bytes_since_ckpt += reclen;
    if (j->bytes_since_ckpt >= j->seg_size)
        pthread_cond_signal(&j->ckpt_wakeup);
    pthread_mutex_unlock(&j->mutex);

    r = record_write(j, j->seg[segi].fd, off, seq, id, label, label_len, data,
                     data_fd, data_len);

    pthread_mutex_lock(&j->mutex);
    if (r < 0) {
        char buf[128], why[192];
        snprintf(why, sizeof(why), "writing a journal record failed: %s",
                 util_strerror(r, buf, sizeof(buf)));
        journal_break(j, seq, why);
    }
    ring_mark(j, seq, RING_WRITTEN);
    while (r == 0 && j->durable_upto < seq) {
        if (j->broken_seq != 0 && seq >= j->broken_seq) {
            r = -EIO;
            break;
        }
        if (!j->flushing && j->written_upto >= seq) {
            uint64_t target = j->written_upto;
            if (j->broken_seq != 0 && target >= j->broken_seq)
                target = j->broken_seq - 1;
            (void)journal_flush(j, target);
            continue;
        }
        pthread_cond_wait(&j->cond, &j->mutex);
    }
    if (r < 0) {
        util_err(err, err_len, "%s", j->broken_reason);
        pthread_mutex_unlock(&j->mutex);
        record_invalidate(j, seq);
        spool_journal_finish(j, seq);
        return r;
    }
    pthread_mutex_unlock(&j->mutex);
    *ret_seq = seq;
    return 0;
}

int spool_journal_checkpoint(struct spool_journal *j, char *err, size_t err_len)
{
    uint64_t upto;
    unsigned slot;
    int r;

    pthread_mutex_lock(&j->mutex);
    upto = j->finished_upto;
    slot = j->ckpt_slot;
    if (upto <= j->retired_upto || j->broken_seq != 0) {
        pthread_mutex_unlock(&j->mutex);
        return 0;
    }
    j->bytes_since_ckpt = 0;
    pthread_mutex_unlock(&j->mutex);

    /* Every entry whose commit finished is now a linked file: one syncfs
     * makes all of them (data, label, directory entries) durable. */
    char why[256];
    if (spool__io.syncfs(j->spool_dir_fd) < 0)
        r = journal_syserr(why, sizeof(why), errno, "syncfs", j->spool_dir,
                           NULL);
    else if ((r = ckpt_write(j->ckpt_fd, slot, upto)) < 0)
        journal_syserr(why, sizeof(why), -r, "write", j->spool_dir,
                       JOURNAL_CHECKPOINT_NAME);
    if (r < 0)
        util_err(err, err_len, "%s", why);
    pthread_mutex_lock(&j->mutex);
    if (r == 0) {
        j->retired_upto = upto;
        j->ckpt_slot ^= 1u;
        j->checkpoints++;
    } else {
        /* The records stay: the next start replays and verifies them. */
        journal_break(j, j->next_seq + 1, why);
    }
    pthread_cond_broadcast(&j->cond);
    pthread_mutex_unlock(&j->mutex);
    return r;
}

/* An absolute CLOCK_REALTIME time @ms from now. */
static struct timespec deadline_in_ms(unsigned ms)
{
    struct timespec until;
    uint64_t ns = (uint64_t)ms * 1000000u;

    clock_gettime(CLOCK_REALTIME, &until);
    ns += (uint64_t)until.tv_nsec;
    until.tv_sec += (time_t)(ns / 1000000000u);
    until.tv_nsec = (long)(ns % 1000000000u);
    return until;
}

/*
 * Checkpoints every interval_ms (spool.journal_checkpoint_ms) when anything
 * finished since the last one, and at once when a quarter of the journal
 * was written or a commit found no room. A checkpoint that could retire
 * nothing yet (the records' commits are still running) is retried after
 * 10 ms, not at once; a broken journal is never checkpointed again.
 */
static void *checkpoint_thread(void *arg)
{
    struct spool_journal *j = arg;
    bool retry_soon = false;

    (void)pthread_setname_np(pthread_self(), "sb-journal");
    pthread_mutex_lock(&j->mutex);
    while (!j->stopping) {
        bool due = !retry_soon && !j->broken_seq &&
                   (j->space_wanted || j->bytes_since_ckpt >= j->seg_size);

        if (!due) {
            struct timespec until =
                deadline_in_ms(retry_soon ? 10u : j->interval_ms);
            int w = pthread_cond_timedwait(&j->ckpt_wakeup, &j->mutex, &until);
            if (j->stopping)
                break;
            retry_soon = false;
            due = !j->broken_seq &&
                  (j->space_wanted || j->bytes_since_ckpt >= j->seg_size ||
                   (w == ETIMEDOUT && j->finished_upto > j->retired_upto));
            if (!due)
                continue;
        }
        uint64_t retired_before = j->retired_upto;
        j->space_wanted = false;
        pthread_mutex_unlock(&j->mutex);
        char err[256];
        (void)spool_journal_checkpoint(j, err, sizeof(err));
        pthread_mutex_lock(&j->mutex);
        retry_soon = j->retired_upto == retired_before;
    }
    pthread_mutex_unlock(&j->mutex);
    return NULL;
}

static void journal_close(struct spool_journal *j, bool final_checkpoint)
{
    char err[256];

    if (j == NULL)
        return;
    if (j->thread_started) {
        pthread_mutex_lock(&j->mutex);
        j->stopping = true;
        pthread_cond_signal(&j->ckpt_wakeup);
        pthread_mutex_unlock(&j->mutex);
        pthread_join(j->thread, NULL);
        /* A clean stop leaves nothing to replay. */
        if (final_checkpoint &&
            spool_journal_checkpoint(j, err, sizeof(err)) < 0)
            log_warning("event=spool-journal-error dir=%s reason=\"%s\" "
                        "action=\"the next start replays the journal\"",
                        j->spool_dir, err);
    }
    for (unsigned i = 0; i < j->nseg; i++)
        if (j->seg[i].fd >= 0)
            close(j->seg[i].fd);
    if (j->ckpt_fd >= 0)
        close(j->ckpt_fd);
    if (j->dir_fd >= 0)
        close(j->dir_fd);
    pthread_cond_destroy(&j->ckpt_wakeup);
    pthread_cond_destroy(&j->cond);
    pthread_mutex_destroy(&j->mutex);
    free(j->spool_dir);
    free(j);
}

void spool_journal_close(struct spool_journal *journal)
{
    journal_close(journal, true);
}

void spool__journal_abandon(struct spool_journal *journal)
{
    journal_close(journal, false);
}

void spool__journal_counts(const struct spool_journal *journal,
                           uint64_t *ret_records, uint64_t *ret_flushes,
                           uint64_t *ret_checkpoints)
{
    struct spool_journal *j = (struct spool_journal *)journal;

    pthread_mutex_lock(&j->mutex);
    *ret_records = j->records;
    *ret_flushes = j->flushes;
    *ret_checkpoints = j->checkpoints;
    pthread_mutex_unlock(&j->mutex);
}
