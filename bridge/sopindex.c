/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sopindex - see sopindex.h.
 *
 * Chained hash tables (FNV-1a, doubled when the load passes 1): entries by
 * ID, lines by SOP Instance UID, and Study Instance UIDs (kept once, with
 * a count of the entries that name them). A line is a doubly linked list
 * of its entries in ID order; it is freed with its last entry. Lines are
 * short (one entry, almost always), so inserting in order walks the list.
 * What only copies with twins need (digest, last comparison) is allocated
 * at their first judgement, so an entry costs about 250 bytes.
 */
#include "sopindex.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#define SOPINDEX_MIN_BUCKETS 256
/* Bytes read at a time when computing a digest. */
#define SOPINDEX_READ_CHUNK (64 * 1024)
/* Longest File Meta Information element value we accept. */
#define SOPINDEX_META_VALUE_MAX (1024 * 1024)

struct sopindex_line;

/* A Study Instance UID, shared by the entries that name it. */
struct sopindex_study {
    struct sopindex_study *next; /* chain in the study table */
    size_t refs;
    char uid[UTIL_UID_MAX + 1];
};

/* What an entry keeps once it is compared with another copy. */
struct sopindex_twin {
    struct sopindex_digest digest;
    bool have_digest;
    bool error_reported;        /* a digest failure was reported */
    char against[SPOOL_ID_MAX]; /* last compared with ("" none) */
    bool against_same;          /* ... and found the same */
};

struct sopindex_entry {
    char id[SPOOL_ID_MAX];
    struct sopindex_study *study;
    uint64_t size;
    enum spool_state state;
    bool in_flight;
    bool seen;
    struct sopindex_twin *twin; /* NULL until compared */
    struct sopindex_entry *id_next;
    struct sopindex_line *line;
    struct sopindex_entry *prev; /* same SOP Instance UID, earlier */
    struct sopindex_entry *next; /* same SOP Instance UID, later */
};

struct sopindex_line {
    char sop[UTIL_UID_MAX + 1];
    struct sopindex_entry *first;
    struct sopindex_line *next; /* chain in the line table */
};

struct sopindex {
    struct sopindex_entry **ids;
    size_t id_buckets;
    size_t count;
    struct sopindex_line **lines;
    size_t line_buckets;
    size_t line_count;
    struct sopindex_study **studies;
    size_t study_buckets;
    size_t study_count;
};

static uint64_t sopindex_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;

    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

struct sopindex *sopindex_new(void)
{
    struct sopindex *ix = calloc(1, sizeof(*ix));

    if (ix == NULL)
        return NULL;
    ix->id_buckets = SOPINDEX_MIN_BUCKETS;
    ix->line_buckets = SOPINDEX_MIN_BUCKETS;
    ix->study_buckets = SOPINDEX_MIN_BUCKETS;
    ix->ids = calloc(ix->id_buckets, sizeof(*ix->ids));
    ix->lines = calloc(ix->line_buckets, sizeof(*ix->lines));
    ix->studies = calloc(ix->study_buckets, sizeof(*ix->studies));
    if (ix->ids == NULL || ix->lines == NULL || ix->studies == NULL) {
        sopindex_free(ix);
        return NULL;
    }
    return ix;
}

void sopindex_free(struct sopindex *ix)
{
    if (ix == NULL)
        return;
    for (size_t b = 0; ix->ids != NULL && b < ix->id_buckets; b++) {
        struct sopindex_entry *e = ix->ids[b];
        while (e != NULL) {
            struct sopindex_entry *next = e->id_next;
            free(e->twin);
            free(e);
            e = next;
        }
    }
    for (size_t b = 0; ix->studies != NULL && b < ix->study_buckets; b++) {
        struct sopindex_study *st = ix->studies[b];
        while (st != NULL) {
            struct sopindex_study *next = st->next;
            free(st);
            st = next;
        }
    }
    for (size_t b = 0; ix->lines != NULL && b < ix->line_buckets; b++) {
        struct sopindex_line *l = ix->lines[b];
        while (l != NULL) {
            struct sopindex_line *next = l->next;
            free(l);
            l = next;
        }
    }
    free(ix->ids);
    free(ix->lines);
    free(ix->studies);
    free(ix);
}

size_t sopindex_count(const struct sopindex *ix)
{
    return ix->count;
}

static struct sopindex_entry *sopindex_find(const struct sopindex *ix,
                                            const char *id)
{
    struct sopindex_entry *e = ix->ids[sopindex_hash(id) % ix->id_buckets];

    while (e != NULL && strcmp(e->id, id) != 0)
        e = e->id_next;
    return e;
}

static struct sopindex_line *sopindex_find_line(const struct sopindex *ix,
                                                const char *sop)
{
    struct sopindex_line *l = ix->lines[sopindex_hash(sop) % ix->line_buckets];

    while (l != NULL && strcmp(l->sop, sop) != 0)
        l = l->next;
    return l;
}

/* Doubles the ID table when it is full; a failure keeps the old one. */
static void sopindex_grow_ids(struct sopindex *ix)
{
    size_t n = ix->id_buckets * 2;
    struct sopindex_entry **t;

    if (ix->count < ix->id_buckets)
        return;
    t = calloc(n, sizeof(*t));
    if (t == NULL)
        return;
    for (size_t b = 0; b < ix->id_buckets; b++) {
        struct sopindex_entry *e = ix->ids[b];
        while (e != NULL) {
            struct sopindex_entry *next = e->id_next;
            size_t k = sopindex_hash(e->id) % n;
            e->id_next = t[k];
            t[k] = e;
            e = next;
        }
    }
    free(ix->ids);
    ix->ids = t;
    ix->id_buckets = n;
}

static void sopindex_grow_lines(struct sopindex *ix)
{
    size_t n = ix->line_buckets * 2;
    struct sopindex_line **t;

    if (ix->line_count < ix->line_buckets)
        return;
    t = calloc(n, sizeof(*t));
    if (t == NULL)
        return;
    for (size_t b = 0; b < ix->line_buckets; b++) {
        struct sopindex_line *l = ix->lines[b];
        while (l != NULL) {
            struct sopindex_line *next = l->next;
            size_t k = sopindex_hash(l->sop) % n;
            l->next = t[k];
            t[k] = l;
            l = next;
        }
    }
    free(ix->lines);
    ix->lines = t;
    ix->line_buckets = n;
}

static void sopindex_grow_studies(struct sopindex *ix)
{
    size_t n = ix->study_buckets * 2;
    struct sopindex_study **t;

    if (ix->study_count < ix->study_buckets)
        return;
    t = calloc(n, sizeof(*t));
    if (t == NULL)
        return;
    for (size_t b = 0; b < ix->study_buckets; b++) {
        struct sopindex_study *st = ix->studies[b];
        while (st != NULL) {
            struct sopindex_study *next = st->next;
            size_t k = sopindex_hash(st->uid) % n;
            st->next = t[k];
            t[k] = st;
            st = next;
        }
    }
    free(ix->studies);
    ix->studies = t;
    ix->study_buckets = n;
}

/* The shared copy of @uid, one more reference; NULL on out-of-memory. */
static struct sopindex_study *sopindex_study_get(struct sopindex *ix,
                                                 const char *uid)
{
    struct sopindex_study *st =
        ix->studies[sopindex_hash(uid) % ix->study_buckets];
    size_t k;

    while (st != NULL && strcmp(st->uid, uid) != 0)
        st = st->next;
    if (st == NULL) {
        st = calloc(1, sizeof(*st));
        if (st == NULL)
            return NULL;
        memcpy(st->uid, uid, strlen(uid) + 1);
        sopindex_grow_studies(ix);
        k = sopindex_hash(uid) % ix->study_buckets;
        st->next = ix->studies[k];
        ix->studies[k] = st;
        ix->study_count++;
    }
    st->refs++;
    return st;
}

static void sopindex_study_put(struct sopindex *ix, struct sopindex_study *st)
{
    if (--st->refs > 0)
        return;
    struct sopindex_study **ps =
        &ix->studies[sopindex_hash(st->uid) % ix->study_buckets];
    while (*ps != st)
        ps = &(*ps)->next;
    *ps = st->next;
    ix->study_count--;
    free(st);
}

/* Frees @e, already out of the ID table and its line. */
static void sopindex_free_entry(struct sopindex *ix, struct sopindex_entry *e)
{
    sopindex_study_put(ix, e->study);
    free(e->twin);
    free(e);
    ix->count--;
}

int sopindex_add(struct sopindex *ix, const char *id, const char *study_uid,
                 const char *sop_uid, uint64_t size, enum spool_state state)
{
    struct sopindex_entry *e;
    struct sopindex_line *line;
    size_t k;

    if (!spool_id_valid(id) || !util_uid_valid(study_uid) ||
        !util_uid_valid(sop_uid))
        return -EINVAL;
    if (sopindex_find(ix, id) != NULL)
        return -EEXIST;
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        return -ENOMEM;
    e->study = sopindex_study_get(ix, study_uid);
    if (e->study == NULL) {
        free(e);
        return -ENOMEM;
    }
    line = sopindex_find_line(ix, sop_uid);
    if (line == NULL) {
        line = calloc(1, sizeof(*line));
        if (line == NULL) {
            sopindex_study_put(ix, e->study);
            free(e);
            return -ENOMEM;
        }
        memcpy(line->sop, sop_uid, strlen(sop_uid) + 1);
        sopindex_grow_lines(ix);
        k = sopindex_hash(sop_uid) % ix->line_buckets;
        line->next = ix->lines[k];
        ix->lines[k] = line;
        ix->line_count++;
    }
    memcpy(e->id, id, strlen(id) + 1);
    e->size = size;
    e->state = state;
    e->in_flight = state == SPOOL_ACTIVE;
    e->seen = true;
    e->line = line;

    /* Into the line, in ID (arrival) order. */
    struct sopindex_entry *after = NULL;
    for (struct sopindex_entry *p = line->first;
         p != NULL && strcmp(p->id, id) < 0; p = p->next)
        after = p;
    e->prev = after;
    e->next = after != NULL ? after->next : line->first;
    if (e->next != NULL)
        e->next->prev = e;
    if (after != NULL)
        after->next = e;
    else
        line->first = e;

    sopindex_grow_ids(ix);
    k = sopindex_hash(id) % ix->id_buckets;
    e->id_next = ix->ids[k];
    ix->ids[k] = e;
    ix->count++;
    return 0;
}

/* Unlinks @e from its line (freeing the line when it empties). */
static void sopindex_unlink_line(struct sopindex *ix, struct sopindex_entry *e)
{
    struct sopindex_line *line = e->line;

    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        line->first = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    e->prev = e->next = NULL;
    if (line->first == NULL) {
        struct sopindex_line **pl =
            &ix->lines[sopindex_hash(line->sop) % ix->line_buckets];
        while (*pl != line)
            pl = &(*pl)->next;
        *pl = line->next;
        ix->line_count--;
        free(line);
    }
}

void sopindex_remove(struct sopindex *ix, const char *id)
{
    struct sopindex_entry **pe = &ix->ids[sopindex_hash(id) % ix->id_buckets];

    while (*pe != NULL && strcmp((*pe)->id, id) != 0)
        pe = &(*pe)->id_next;
    if (*pe == NULL)
        return;
    struct sopindex_entry *e = *pe;
    *pe = e->id_next;
    sopindex_unlink_line(ix, e);
    sopindex_free_entry(ix, e);
}

bool sopindex_contains(const struct sopindex *ix, const char *id)
{
    return sopindex_find(ix, id) != NULL;
}

const char *sopindex_study(const struct sopindex *ix, const char *id)
{
    const struct sopindex_entry *e = sopindex_find(ix, id);

    return e != NULL ? e->study->uid : NULL;
}

const char *sopindex_sop(const struct sopindex *ix, const char *id)
{
    const struct sopindex_entry *e = sopindex_find(ix, id);

    return e != NULL ? e->line->sop : NULL;
}

void sopindex_set_in_flight(struct sopindex *ix, const char *id, bool in_flight)
{
    struct sopindex_entry *e = sopindex_find(ix, id);

    if (e == NULL)
        return;
    e->in_flight = in_flight;
    if (in_flight)
        e->state = SPOOL_ACTIVE;
}

void sopindex_scan_begin(struct sopindex *ix)
{
    for (size_t b = 0; b < ix->id_buckets; b++)
        for (struct sopindex_entry *e = ix->ids[b]; e != NULL; e = e->id_next)
            e->seen = false;
}

bool sopindex_scan_seen(struct sopindex *ix, const char *id,
                        enum spool_state state)
{
    struct sopindex_entry *e = sopindex_find(ix, id);

    if (e == NULL)
        return false;
    e->seen = true;
    e->state = state;
    return true;
}

size_t sopindex_scan_end(struct sopindex *ix, const char *limit_id,
                         bool drop_in_flight)
{
    size_t removed = 0;

    for (size_t b = 0; b < ix->id_buckets; b++) {
        struct sopindex_entry **pe = &ix->ids[b];
        while (*pe != NULL) {
            struct sopindex_entry *e = *pe;
            if (e->seen || (e->in_flight && !drop_in_flight) ||
                (limit_id != NULL && strcmp(e->id, limit_id) >= 0)) {
                pe = &e->id_next;
                continue;
            }
            *pe = e->id_next;
            sopindex_unlink_line(ix, e);
            sopindex_free_entry(ix, e);
            removed++;
        }
    }
    return removed;
}

/* Gives @e its twin record (-ENOMEM) and its digest through @fn, unless
 * it has them. */
static int sopindex_need_digest(struct sopindex_entry *e, sopindex_digest_fn fn,
                                void *ctx)
{
    struct sopindex_digest d;
    int r;

    if (e->twin == NULL) {
        e->twin = calloc(1, sizeof(*e->twin));
        if (e->twin == NULL)
            return -ENOMEM;
    }
    if (e->twin->have_digest)
        return 0;
    memset(&d, 0, sizeof(d));
    r = fn(ctx, e->id, e->state, &d);
    if (r < 0)
        return r;
    e->twin->digest = d;
    e->twin->have_digest = true;
    return 0;
}

static bool sopindex_same(const struct sopindex_digest *a,
                          const struct sopindex_digest *b)
{
    return memcmp(a->sha256, b->sha256, sizeof(a->sha256)) == 0 &&
           strcmp(a->transfer_syntax, b->transfer_syntax) == 0;
}

/* True if another copy in @e's line is in flight. */
static bool sopindex_line_busy(const struct sopindex_entry *e)
{
    for (const struct sopindex_entry *p = e->line->first; p != NULL;
         p = p->next)
        if (p != e && (p->in_flight || p->state == SPOOL_ACTIVE))
            return true;
    return false;
}

int sopindex_judge(struct sopindex *ix, const char *id,
                   sopindex_digest_fn digest_fn, void *ctx,
                   struct sopindex_judgement *ret)
{
    struct sopindex_entry *e = sopindex_find(ix, id);
    struct sopindex_entry *prev;
    int r;

    if (e == NULL)
        return -ENOENT;
    memset(ret, 0, sizeof(*ret));
    ret->size = e->size;
    prev = e->prev;
    if (prev == NULL) {
        ret->verdict = e->in_flight || sopindex_line_busy(e) ? SOPINDEX_WAIT
                                                             : SOPINDEX_SEND;
        return 0;
    }
    r = sopindex_need_digest(e, digest_fn, ctx);
    if (r == 0)
        r = sopindex_need_digest(prev, digest_fn, ctx);
    if (r < 0) {
        ret->verdict = SOPINDEX_WAIT;
        ret->error = r;
        ret->first = e->twin == NULL || !e->twin->error_reported;
        if (e->twin != NULL)
            e->twin->error_reported = true;
        return 0;
    }
    struct sopindex_twin *t = e->twin;
    t->error_reported = false;

    bool same = sopindex_same(&t->digest, &prev->twin->digest);
    ret->verdict = same ? SOPINDEX_DUPLICATE : SOPINDEX_CONFLICT;
    ret->first = strcmp(t->against, prev->id) != 0 || t->against_same != same;
    memcpy(t->against, prev->id, sizeof(t->against));
    t->against_same = same;
    memcpy(ret->other_id, prev->id, sizeof(ret->other_id));
    ret->other_state = prev->state;
    ret->other_size = prev->size;
    ret->digest = t->digest;
    ret->other_digest = prev->twin->digest;
    return 0;
}

int sopindex_take_run(struct sopindex *ix, const char *id,
                      struct sopindex_member **ret_members, size_t *ret_count)
{
    struct sopindex_entry *e = sopindex_find(ix, id);
    struct sopindex_member *members = NULL;
    size_t count = 0;
    int r = 0;

    *ret_members = NULL;
    *ret_count = 0;
    if (e == NULL)
        return -ENOENT;
    for (struct sopindex_entry *f = e->next;
         f != NULL && e->twin != NULL && e->twin->have_digest &&
         f->twin != NULL && f->twin->have_digest && !f->in_flight &&
         f->twin->against_same && strcmp(f->twin->against, f->prev->id) == 0 &&
         sopindex_same(&f->twin->digest, &e->twin->digest);
         f = f->next)
        count++;
    if (count > 0) {
        members = calloc(count, sizeof(*members));
        if (members == NULL) {
            count = 0;
            r = -ENOMEM;
        }
    }
    for (size_t i = 0; i < count; i++) {
        struct sopindex_entry *f = e->next;
        memcpy(members[i].id, f->id, sizeof(members[i].id));
        members[i].state = f->state;
        sopindex_remove(ix, f->id);
    }
    sopindex_remove(ix, id);
    *ret_members = members;
    *ret_count = count;
    return r;
}

/* ------------------------------------------------------------------ */
/* Digests of Part 10 files                                            */
/* ------------------------------------------------------------------ */

static void sopindex_err(char *err, size_t len, const char *what,
                         const char *path, int error)
{
    char buf[128];

    if (err == NULL || len == 0)
        return;
    if (error != 0)
        snprintf(err, len, "%s '%s' failed: %s", what, path,
                 util_strerror(-error, buf, sizeof(buf)));
    else
        snprintf(err, len, "'%s': %s", path, what);
}

/* Reads up to @len bytes; returns how many (short only at end of file),
 * or a negative errno. */
static ssize_t sopindex_read_full(int fd, void *buf, size_t len)
{
    size_t got = 0;

    while (got < len) {
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

/* Explicit VR little endian VRs with a 4-byte length (PS3.5 7.1.2). */
static bool sopindex_long_vr(const unsigned char vr[2])
{
    static const char *const long_vrs[] = {
        "OB", "OD", "OF", "OL", "OV", "OW", "SQ",
        "SV", "UC", "UN", "UR", "UT", "UV",
    };

    for (size_t i = 0; i < sizeof(long_vrs) / sizeof(long_vrs[0]); i++)
        if (vr[0] == (unsigned char)long_vrs[i][0] &&
            vr[1] == (unsigned char)long_vrs[i][1])
            return true;
    return false;
}

/*
 * Reads the File Meta Information of @fd (positioned after "DICM") and
 * keeps the TransferSyntaxUID. On success, @head holds the first bytes
 * of the data set (*@head_len of them, 0 to 8) already read.
 */
static int sopindex_skip_meta(int fd, struct sopindex_digest *d,
                              unsigned char head[8], size_t *head_len)
{
    unsigned char *value = NULL;
    int r;

    for (;;) {
        ssize_t n = sopindex_read_full(fd, head, 8);
        uint32_t len;

        if (n < 0) {
            r = (int)n;
            goto out;
        }
        if (n < 2 || (head[0] | head[1] << 8) != 0x0002) {
            *head_len = (size_t)n; /* the data set starts here */
            r = 0;
            goto out;
        }
        r = -EINVAL;
        if (n < 8)
            goto out;
        uint16_t element = (uint16_t)(head[2] | head[3] << 8);
        if (sopindex_long_vr(head + 4)) {
            unsigned char l4[4];
            if (sopindex_read_full(fd, l4, 4) != 4)
                goto out;
            len = (uint32_t)l4[0] | (uint32_t)l4[1] << 8 |
                  (uint32_t)l4[2] << 16 | (uint32_t)l4[3] << 24;
        } else {
            len = (uint32_t)(head[6] | head[7] << 8);
        }
        if (len > SOPINDEX_META_VALUE_MAX)
            goto out;
        unsigned char *grown = realloc(value, len + 1);
        if (grown == NULL) {
            r = -ENOMEM;
            goto out;
        }
        value = grown;
        if (sopindex_read_full(fd, value, len) != (ssize_t)len)
            goto out;
        if (element == 0x0010 && len <= UTIL_UID_MAX) {
            while (len > 0 && (value[len - 1] == '\0' || value[len - 1] == ' '))
                len--;
            memcpy(d->transfer_syntax, value, len);
            d->transfer_syntax[len] = '\0';
        }
    }
out:
    free(value);
    return r;
}

int sopindex_digest_file(const char *path, struct sopindex_digest *ret_digest,
                         char *err, size_t err_len)
{
    struct sopindex_digest d;
    unsigned char head[8];
    size_t head_len = 0;
    unsigned char *buf = NULL;
    EVP_MD_CTX *md = NULL;
    unsigned int md_len = 0;
    int fd;
    int r;

    memset(&d, 0, sizeof(d));
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        r = -errno;
        sopindex_err(err, err_len, "open()", path, r);
        return r;
    }
    buf = malloc(SOPINDEX_READ_CHUNK);
    if (buf == NULL) {
        r = -ENOMEM;
        goto out;
    }
    if (sopindex_read_full(fd, buf, 132) != 132 ||
        memcmp(buf + 128, "DICM", 4) != 0) {
        sopindex_err(err, err_len, "not a DICOM Part 10 file", path, 0);
        r = -EINVAL;
        goto out;
    }
    r = sopindex_skip_meta(fd, &d, head, &head_len);
    if (r < 0) {
        if (r == -EINVAL)
            sopindex_err(err, err_len, "broken File Meta Information", path, 0);
        else
            sopindex_err(err, err_len, "read()", path, r);
        goto out;
    }
    md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(md, head, head_len) != 1) {
        sopindex_err(err, err_len, "SHA-256 unavailable", path, 0);
        r = -EIO;
        goto out;
    }
    for (;;) {
        ssize_t n = sopindex_read_full(fd, buf, SOPINDEX_READ_CHUNK);
        if (n < 0) {
            r = (int)n;
            sopindex_err(err, err_len, "read()", path, r);
            goto out;
        }
        if (n > 0 && EVP_DigestUpdate(md, buf, (size_t)n) != 1) {
            r = -EIO;
            sopindex_err(err, err_len, "SHA-256 failed", path, 0);
            goto out;
        }
        if (n < SOPINDEX_READ_CHUNK)
            break;
    }
    if (EVP_DigestFinal_ex(md, d.sha256, &md_len) != 1 ||
        md_len != SOPINDEX_SHA256_LEN) {
        r = -EIO;
        sopindex_err(err, err_len, "SHA-256 failed", path, 0);
        goto out;
    }
    *ret_digest = d;
    r = 0;
out:
    EVP_MD_CTX_free(md);
    free(buf);
    (void)close(fd);
    return r;
}

void sopindex_digest_hex(const struct sopindex_digest *digest,
                         char buf[SOPINDEX_HEX_SHOWN + 1])
{
    static const char hex[] = "0123456789abcdef";

    for (size_t i = 0; i < SOPINDEX_HEX_SHOWN / 2; i++) {
        buf[2 * i] = hex[digest->sha256[i] >> 4];
        buf[2 * i + 1] = hex[digest->sha256[i] & 0xf];
    }
    buf[SOPINDEX_HEX_SHOWN] = '\0';
}
