/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_sopindex - the copies index (bridge/sopindex.c): arrival order per
 * SOP Instance UID, duplicates and conflicts by data set digest, runs of
 * held duplicates resolved with the copy they wait for, scans that forget
 * what left the spool, and the digest of real Part 10 files (the File Meta
 * Information left out).
 */
#include "bridge/sopindex.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "tap.h"

#define ID_A "1700000000.000001-000000000000000a"
#define ID_B "1700000000.000002-000000000000000b"
#define ID_C "1700000000.000003-000000000000000c"
#define ID_D "1700000000.000004-000000000000000d"
#define STUDY "1.2.3.4"
#define SOP "1.2.3.4.5"
#define OTHER_SOP "1.2.3.4.6"

/* The digests the fake digest function hands out, by ID. */
struct fake {
    const char *ids[8];
    unsigned char bytes[8]; /* the SHA-256 is this byte, repeated */
    const char *ts[8];
    int error[8];
    unsigned calls;
};

static int fake_digest(void *ctx, const char *id, enum spool_state state,
                       struct sopindex_digest *ret)
{
    struct fake *f = ctx;

    (void)state;
    f->calls++;
    for (size_t i = 0; i < 8 && f->ids[i] != NULL; i++) {
        if (strcmp(f->ids[i], id) != 0)
            continue;
        if (f->error[i] != 0)
            return f->error[i];
        memset(ret->sha256, f->bytes[i], sizeof(ret->sha256));
        snprintf(ret->transfer_syntax, sizeof(ret->transfer_syntax), "%s",
                 f->ts[i] != NULL ? f->ts[i] : "1.2.840.10008.1.2.1");
        return 0;
    }
    return -ENOENT;
}

static enum sopindex_verdict verdict(struct sopindex *ix, const char *id,
                                     struct fake *f, bool *first)
{
    struct sopindex_judgement j;

    if (sopindex_judge(ix, id, fake_digest, f, &j) < 0)
        return (enum sopindex_verdict) - 1;
    if (first != NULL)
        *first = j.first;
    return j.verdict;
}

static void test_basics(void)
{
    struct sopindex *ix = sopindex_new();

    CHECK(ix != NULL);
    CHECK(sopindex_add(ix, ID_A, STUDY, SOP, 100, SPOOL_INCOMING) == 0);
    CHECK(sopindex_add(ix, ID_A, STUDY, SOP, 100, SPOOL_INCOMING) == -EEXIST);
    CHECK(sopindex_add(ix, "../x", STUDY, SOP, 1, SPOOL_INCOMING) == -EINVAL);
    CHECK(sopindex_add(ix, ID_B, "1.2.x", SOP, 1, SPOOL_INCOMING) == -EINVAL);
    CHECK(sopindex_add(ix, ID_B, STUDY, "", 1, SPOOL_INCOMING) == -EINVAL);
    CHECK(sopindex_count(ix) == 1);
    CHECK(sopindex_contains(ix, ID_A) && !sopindex_contains(ix, ID_B));
    CHECK(strcmp(sopindex_study(ix, ID_A), STUDY) == 0);
    CHECK(strcmp(sopindex_sop(ix, ID_A), SOP) == 0);
    CHECK(sopindex_study(ix, ID_B) == NULL && sopindex_sop(ix, ID_B) == NULL);
    sopindex_remove(ix, ID_B); /* unknown: nothing happens */
    sopindex_remove(ix, ID_A);
    CHECK(sopindex_count(ix) == 0 && !sopindex_contains(ix, ID_A));
    struct sopindex_judgement j;
    CHECK(sopindex_judge(ix, ID_A, fake_digest, NULL, &j) == -ENOENT);
    struct sopindex_member *run = NULL;
    size_t n = 7;
    CHECK(sopindex_take_run(ix, ID_A, &run, &n) == -ENOENT && run == NULL &&
          n == 0);

    /* Study UIDs are shared between entries and outlive each of them. */
    CHECK(sopindex_add(ix, ID_A, STUDY, SOP, 1, SPOOL_INCOMING) == 0);
    CHECK(sopindex_add(ix, ID_B, STUDY, OTHER_SOP, 1, SPOOL_INCOMING) == 0);
    CHECK(sopindex_add(ix, ID_C, "1.2.3.99", "1.5", 1, SPOOL_INCOMING) == 0);
    sopindex_remove(ix, ID_A);
    CHECK(sopindex_study(ix, ID_B) != NULL &&
          strcmp(sopindex_study(ix, ID_B), STUDY) == 0);
    CHECK(strcmp(sopindex_study(ix, ID_C), "1.2.3.99") == 0);
    sopindex_remove(ix, ID_B);
    CHECK(sopindex_add(ix, ID_A, STUDY, SOP, 1, SPOOL_INCOMING) == 0);
    CHECK(strcmp(sopindex_study(ix, ID_A), STUDY) == 0);
    sopindex_free(ix);
    sopindex_free(NULL);
}

/* One copy: sent, and never read for a digest. */
static void test_single_copy_never_hashed(void)
{
    struct sopindex *ix = sopindex_new();
    struct fake f = { .ids = { ID_A }, .bytes = { 1 } };

    CHECK(sopindex_add(ix, ID_A, STUDY, SOP, 10, SPOOL_INCOMING) == 0);
    CHECK(sopindex_add(ix, ID_B, STUDY, OTHER_SOP, 10, SPOOL_DEFERRED) == 0);
    CHECK(verdict(ix, ID_A, &f, NULL) == SOPINDEX_SEND);
    CHECK(verdict(ix, ID_B, &f, NULL) == SOPINDEX_SEND);
    CHECK_MSG(f.calls == 0, "%u digests for copies without twins", f.calls);
    sopindex_free(ix);
}

/* The earlier copy is sent first, whatever order the index learnt them
 * in; the later one never while the earlier one is there. */
static void test_arrival_order(void)
{
    struct sopindex *ix = sopindex_new();
    struct fake f = { .ids = { ID_A, ID_B }, .bytes = { 1, 2 } };
    bool first = false;

    CHECK(sopindex_add(ix, ID_B, STUDY, SOP, 20, SPOOL_INCOMING) == 0);
    CHECK(verdict(ix, ID_B, &f, NULL) == SOPINDEX_SEND);
    CHECK(sopindex_add(ix, ID_A, STUDY, SOP, 10, SPOOL_DEFERRED) == 0);
    CHECK(verdict(ix, ID_A, &f, NULL) == SOPINDEX_SEND);
    CHECK(verdict(ix, ID_B, &f, &first) == SOPINDEX_CONFLICT && first);
    CHECK(verdict(ix, ID_B, &f, &first) == SOPINDEX_CONFLICT && !first);
    CHECK_MSG(f.calls == 2, "digests cached: %u calls", f.calls);

    struct sopindex_judgement j;
    CHECK(sopindex_judge(ix, ID_B, fake_digest, &f, &j) == 0);
    CHECK(strcmp(j.other_id, ID_A) == 0 && j.other_state == SPOOL_DEFERRED);
    CHECK(j.size == 20 && j.other_size == 10);
    CHECK(j.digest.sha256[0] == 2 && j.other_digest.sha256[0] == 1);

    /* A in flight: B waits still, and so does an earlier copy that shows
     * up while B's twin is on its way. */
    sopindex_set_in_flight(ix, ID_A, true);
    CHECK(verdict(ix, ID_B, &f, NULL) == SOPINDEX_CONFLICT);
    /* A delivered: B is now the first copy. */
    struct sopindex_member *run = NULL;
    size_t n = 9;
    CHECK(sopindex_take_run(ix, ID_A, &run, &n) == 0 && n == 0 && run == NULL);
    CHECK(verdict(ix, ID_B, &f, NULL) == SOPINDEX_SEND);
    sopindex_set_in_flight(ix, ID_B, true);
    CHECK(sopindex_add(ix, ID_A, STUDY, SOP, 10, SPOOL_INCOMING) == 0);
    CHECK_MSG(verdict(ix, ID_A, &f, NULL) == SOPINDEX_WAIT,
              "no two copies of one SOP Instance UID in flight at once");
    /* B's worker reported (deferred); the next listing shows where. */
    sopindex_set_in_flight(ix, ID_B, false);
    sopindex_scan_begin(ix);
    CHECK(sopindex_scan_seen(ix, ID_A, SPOOL_INCOMING) &&
          sopindex_scan_seen(ix, ID_B, SPOOL_DEFERRED));
    CHECK(sopindex_scan_end(ix, NULL, false) == 0);
    CHECK(verdict(ix, ID_A, &f, NULL) == SOPINDEX_SEND);
    sopindex_free(ix);
}

/* Identical copies form a run that shares the first one's fate; the run
 * stops at the first copy that differs or was not judged. */
static void test_duplicate_runs(void)
{
    struct sopindex *ix = sopindex_new();
    struct fake f = { .ids = { ID_A, ID_B, ID_C, ID_D },
                      .bytes = { 7, 7, 9, 7 } };
    struct sopindex_member *run = NULL;
    size_t n = 0;
    bool first = false;

    CHECK(sopindex_add(ix, ID_A, STUDY, SOP, 10, SPOOL_ACTIVE) == 0);
    CHECK(sopindex_add(ix, ID_B, STUDY, SOP, 11, SPOOL_INCOMING) == 0);
    CHECK(sopindex_add(ix, ID_C, STUDY, SOP, 12, SPOOL_DEFERRED) == 0);
    CHECK(sopindex_add(ix, ID_D, STUDY, SOP, 13, SPOOL_INCOMING) == 0);
    CHECK(verdict(ix, ID_B, &f, &first) == SOPINDEX_DUPLICATE && first);
    CHECK(verdict(ix, ID_B, &f, &first) == SOPINDEX_DUPLICATE && !first);
    CHECK(verdict(ix, ID_C, &f, &first) == SOPINDEX_CONFLICT && first);
    CHECK(verdict(ix, ID_D, &f, &first) == SOPINDEX_CONFLICT && first);

    CHECK(sopindex_take_run(ix, ID_A, &run, &n) == 0);
    CHECK_MSG(n == 1 && strcmp(run[0].id, ID_B) == 0 &&
                  run[0].state == SPOOL_INCOMING,
              "run of A: %zu members", n);
    free(run);
    CHECK(!sopindex_contains(ix, ID_A) && !sopindex_contains(ix, ID_B));
    /* C (different) is first now; D, identical to A but not to C, is
     * still a conflict with C (already reported) and waits its turn. */
    CHECK(verdict(ix, ID_C, &f, NULL) == SOPINDEX_SEND);
    CHECK(verdict(ix, ID_D, &f, &first) == SOPINDEX_CONFLICT && !first);
    sopindex_set_in_flight(ix, ID_C, true);
    CHECK(sopindex_take_run(ix, ID_C, &run, &n) == 0 && n == 0);
    CHECK(verdict(ix, ID_D, &f, NULL) == SOPINDEX_SEND);
    sopindex_free(ix);

    /* A chain A = B = C: both go with A. A follower in flight or never
     * judged is not part of the run. */
    ix = sopindex_new();
    struct fake g = { .ids = { ID_A, ID_B, ID_C, ID_D },
                      .bytes = { 3, 3, 3, 3 } };
    CHECK(sopindex_add(ix, ID_A, STUDY, SOP, 10, SPOOL_ACTIVE) == 0);
    CHECK(sopindex_add(ix, ID_B, STUDY, SOP, 10, SPOOL_DEFERRED) == 0);
    CHECK(sopindex_add(ix, ID_C, STUDY, SOP, 10, SPOOL_INCOMING) == 0);
    CHECK(sopindex_add(ix, ID_D, STUDY, SOP, 10, SPOOL_INCOMING) == 0);
    CHECK(verdict(ix, ID_C, &g, NULL) == SOPINDEX_DUPLICATE);
    CHECK(verdict(ix, ID_B, &g, NULL) == SOPINDEX_DUPLICATE);
    CHECK(sopindex_take_run(ix, ID_A, &run, &n) == 0);
    CHECK_MSG(n == 2 && strcmp(run[0].id, ID_B) == 0 &&
                  run[0].state == SPOOL_DEFERRED &&
                  strcmp(run[1].id, ID_C) == 0,
              "run of the chain: %zu members", n);
    free(run);
    CHECK_MSG(sopindex_contains(ix, ID_D) && sopindex_count(ix) == 1,
              "D was never judged: it stays, to be sent");
    CHECK(verdict(ix, ID_D, &g, NULL) == SOPINDEX_SEND);
    sopindex_free(ix);
}

/* The same bytes in another transfer syntax are another data set. */
static void test_transfer_syntax_counts(void)
{
    struct sopindex *ix = sopindex_new();
    struct fake f = { .ids = { ID_A, ID_B },
                      .bytes = { 5, 5 },
                      .ts = { "1.2.840.10008.1.2.1", "1.2.840.10008.1.2" } };
    struct sopindex_judgement j;

    CHECK(sopindex_add(ix, ID_A, STUDY, SOP, 10, SPOOL_INCOMING) == 0);
    CHECK(sopindex_add(ix, ID_B, STUDY, SOP, 10, SPOOL_INCOMING) == 0);
    CHECK(sopindex_judge(ix, ID_B, fake_digest, &f, &j) == 0);
    CHECK(j.verdict == SOPINDEX_CONFLICT);
    CHECK(strcmp(j.digest.transfer_syntax, "1.2.840.10008.1.2") == 0 &&
          strcmp(j.other_digest.transfer_syntax, "1.2.840.10008.1.2.1") == 0);
    sopindex_free(ix);
}

/* A digest that cannot be computed holds the copy (reported once) and is
 * tried again at the next judgement. */
static void test_digest_error(void)
{
    struct sopindex *ix = sopindex_new();
    struct fake f = { .ids = { ID_A, ID_B },
                      .bytes = { 1, 1 },
                      .error = { -EIO, 0 } };
    struct sopindex_judgement j;

    CHECK(sopindex_add(ix, ID_A, STUDY, SOP, 10, SPOOL_INCOMING) == 0);
    CHECK(sopindex_add(ix, ID_B, STUDY, SOP, 10, SPOOL_INCOMING) == 0);
    CHECK(sopindex_judge(ix, ID_B, fake_digest, &f, &j) == 0);
    CHECK(j.verdict == SOPINDEX_WAIT && j.error == -EIO && j.first);
    CHECK(sopindex_judge(ix, ID_B, fake_digest, &f, &j) == 0);
    CHECK(j.verdict == SOPINDEX_WAIT && j.error == -EIO && !j.first);
    f.error[0] = 0;
    CHECK(sopindex_judge(ix, ID_B, fake_digest, &f, &j) == 0);
    CHECK(j.verdict == SOPINDEX_DUPLICATE && j.error == 0 && j.first);
    sopindex_free(ix);
}

/* A scan forgets entries that are no longer listed, except in-flight ones
 * (their worker has not reported yet) and those past the scan's limit. */
static void test_scan(void)
{
    struct sopindex *ix = sopindex_new();
    struct fake f = { .ids = { ID_A, ID_B }, .bytes = { 1, 2 } };

    CHECK(sopindex_add(ix, ID_A, STUDY, SOP, 10, SPOOL_INCOMING) == 0);
    CHECK(sopindex_add(ix, ID_B, STUDY, SOP, 10, SPOOL_INCOMING) == 0);
    CHECK(sopindex_add(ix, ID_C, STUDY, OTHER_SOP, 10, SPOOL_INCOMING) == 0);
    CHECK(sopindex_add(ix, ID_D, STUDY, "1.9", 10, SPOOL_INCOMING) == 0);
    sopindex_set_in_flight(ix, ID_A, true);

    sopindex_scan_begin(ix);
    CHECK(sopindex_scan_seen(ix, ID_B, SPOOL_DEFERRED));
    CHECK(!sopindex_scan_seen(ix, "1700000000.000009-0000000000000009",
                              SPOOL_INCOMING));
    CHECK(sopindex_scan_end(ix, ID_D, false) == 1);
    CHECK_MSG(sopindex_contains(ix, ID_A), "in flight: kept");
    CHECK(sopindex_contains(ix, ID_B));
    CHECK_MSG(!sopindex_contains(ix, ID_C), "not listed: forgotten");
    CHECK_MSG(sopindex_contains(ix, ID_D), "past the limit: kept");
    struct sopindex_judgement j;
    CHECK(sopindex_judge(ix, ID_B, fake_digest, &f, &j) == 0 &&
          j.verdict == SOPINDEX_CONFLICT && j.other_state == SPOOL_ACTIVE);

    sopindex_scan_begin(ix);
    CHECK(sopindex_scan_end(ix, NULL, true) == 3);
    CHECK(sopindex_count(ix) == 0);
    /* The lines went with their entries: a new copy is alone again. */
    CHECK(sopindex_add(ix, ID_B, STUDY, SOP, 10, SPOOL_INCOMING) == 0);
    CHECK(verdict(ix, ID_B, &f, NULL) == SOPINDEX_SEND);
    sopindex_free(ix);
}

/* Many entries and lines: the tables grow and shrink consistently. */
static void test_many(void)
{
    enum { N = 20000 };
    struct sopindex *ix = sopindex_new();
    char id[SPOOL_ID_MAX];
    char sop[UTIL_UID_MAX + 1];
    size_t ok = 0;

    for (unsigned i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "1700000000.%06u-%016x", i % 1000000, i);
        snprintf(sop, sizeof(sop), "1.2.3.%u", i / 2);
        char study[UTIL_UID_MAX + 1];
        snprintf(study, sizeof(study), "1.2.9.%u", i / 50);
        ok += sopindex_add(ix, id, study, sop, i, SPOOL_INCOMING) == 0;
    }
    CHECK(ok == N && sopindex_count(ix) == N);
    size_t send = 0;
    size_t held = 0;
    struct fake f = { .calls = 0 };
    for (unsigned i = 0; i < N; i++) {
        struct sopindex_judgement j;
        snprintf(id, sizeof(id), "1700000000.%06u-%016x", i % 1000000, i);
        if (sopindex_judge(ix, id, fake_digest, &f, &j) < 0)
            continue;
        send += j.verdict == SOPINDEX_SEND;
        held += j.verdict == SOPINDEX_WAIT; /* the fake knows no IDs */
    }
    CHECK_MSG(send == N / 2 && held == N / 2, "%zu sent, %zu held", send, held);
    for (unsigned i = 0; i < N; i += 2) {
        snprintf(id, sizeof(id), "1700000000.%06u-%016x", i % 1000000, i);
        sopindex_remove(ix, id);
    }
    CHECK(sopindex_count(ix) == N / 2);
    snprintf(id, sizeof(id), "1700000000.%06u-%016x", 1u, 1u);
    CHECK(verdict(ix, id, &f, NULL) == SOPINDEX_SEND);
    snprintf(id, sizeof(id), "1700000000.%06u-%016x", 12345u, 12345u);
    CHECK(sopindex_study(ix, id) != NULL &&
          strcmp(sopindex_study(ix, id), "1.2.9.246") == 0);
    sopindex_scan_begin(ix);
    CHECK(sopindex_scan_end(ix, NULL, false) == N / 2);
    CHECK(sopindex_count(ix) == 0);
    sopindex_free(ix);
}

/* ------------------------------------------------------------------ */
/* Digests of Part 10 files                                            */
/* ------------------------------------------------------------------ */

struct buf {
    unsigned char *p;
    size_t len;
};

static void put(struct buf *b, const void *data, size_t len)
{
    if (len == 0)
        return;
    b->p = realloc(b->p, b->len + len);
    memcpy(b->p + b->len, data, len);
    b->len += len;
}

/* An explicit VR little endian element with a short (2-byte) length. */
static void put_short(struct buf *b, uint16_t group, uint16_t element,
                      const char *vr, const void *value, uint16_t len)
{
    unsigned char h[8] = {
        (unsigned char)group,   (unsigned char)(group >> 8),
        (unsigned char)element, (unsigned char)(element >> 8),
        (unsigned char)vr[0],   (unsigned char)vr[1],
        (unsigned char)len,     (unsigned char)(len >> 8)
    };
    put(b, h, sizeof(h));
    put(b, value, len);
}

static void put_long(struct buf *b, uint16_t group, uint16_t element,
                     const char *vr, const void *value, uint32_t len)
{
    unsigned char h[12] = { (unsigned char)group,
                            (unsigned char)(group >> 8),
                            (unsigned char)element,
                            (unsigned char)(element >> 8),
                            (unsigned char)vr[0],
                            (unsigned char)vr[1],
                            0,
                            0,
                            (unsigned char)len,
                            (unsigned char)(len >> 8),
                            (unsigned char)(len >> 16),
                            (unsigned char)(len >> 24) };
    put(b, h, sizeof(h));
    put(b, value, len);
}

/* A Part 10 file: preamble, DICM, a meta group naming @source_ae (even
 * length), then @dataset. */
static struct buf part10(const char *source_ae, const char *ts,
                         const struct buf *dataset)
{
    struct buf meta = { NULL, 0 };
    struct buf file = { NULL, 0 };
    unsigned char preamble[128];
    uint32_t group_len;

    put_long(&meta, 0x0002, 0x0001, "OB", "\0\1", 2);
    put_short(&meta, 0x0002, 0x0002, "UI", "1.2.840.10008.5.1.4.1.1.7\0", 26);
    put_short(&meta, 0x0002, 0x0003, "UI", "1.2.3.4.5\0", 10);
    put_short(&meta, 0x0002, 0x0010, "UI", ts, (uint16_t)strlen(ts));
    put_short(&meta, 0x0002, 0x0012, "UI", "1.2.276.0.7230010.3.0.3.6.7\0", 28);
    put_short(&meta, 0x0002, 0x0016, "AE", source_ae,
              (uint16_t)strlen(source_ae));
    memset(preamble, 0, sizeof(preamble));
    put(&file, preamble, sizeof(preamble));
    put(&file, "DICM", 4);
    group_len = (uint32_t)meta.len;
    put_short(&file, 0x0002, 0x0000, "UL", &group_len, 4);
    put(&file, meta.p, meta.len);
    put(&file, dataset->p, dataset->len);
    free(meta.p);
    return file;
}

static int write_file(const char *path, const struct buf *b)
{
    FILE *f = fopen(path, "wb");

    if (f == NULL)
        return -1;
    if (b->len > 0 && fwrite(b->p, 1, b->len, f) != b->len) {
        fclose(f);
        return -1;
    }
    return fclose(f);
}

static void sha256_of(const struct buf *b, unsigned char out[32])
{
    unsigned int len = 0;

    EVP_Digest(b->p, b->len, out, &len, EVP_sha256(), NULL);
}

static void test_digest_file(void)
{
    char dir[] = "/tmp/test_sopindex-XXXXXX";
    char p1[128];
    char p2[128];
    char p3[128];
    struct buf ds = { NULL, 0 };
    struct buf other = { NULL, 0 };
    struct sopindex_digest d1;
    struct sopindex_digest d2;
    struct sopindex_digest d3;
    unsigned char want[32];
    char err[256];

    CHECK(mkdtemp(dir) != NULL);
    snprintf(p1, sizeof(p1), "%s/a.dcm", dir);
    snprintf(p2, sizeof(p2), "%s/b.dcm", dir);
    snprintf(p3, sizeof(p3), "%s/c.dcm", dir);

    /* A data set of several read chunks: patient name, UIDs, 200 KiB of
     * pixel data (OW, long length). */
    put_short(&ds, 0x0008, 0x0018, "UI", "1.2.3.4.5\0", 10);
    put_short(&ds, 0x0010, 0x0010, "PN", "Doe^Jane", 8);
    unsigned char *pixels = malloc(200 * 1024);
    for (size_t i = 0; i < 200 * 1024; i++)
        pixels[i] = (unsigned char)(i * 31 + 7);
    put_long(&ds, 0x7FE0, 0x0010, "OW", pixels, 200 * 1024);
    sha256_of(&ds, want);

    /* The same data set behind two File Meta headers whose Source AE and
     * length differ. */
    struct buf f1 = part10("CT1 ", "1.2.840.10008.1.2.1\0", &ds);
    struct buf f2 = part10("ANOTHER_MODALITY", "1.2.840.10008.1.2.1\0", &ds);
    CHECK(write_file(p1, &f1) == 0 && write_file(p2, &f2) == 0);
    CHECK_MSG(sopindex_digest_file(p1, &d1, err, sizeof(err)) == 0, "%s", err);
    CHECK_MSG(sopindex_digest_file(p2, &d2, err, sizeof(err)) == 0, "%s", err);
    CHECK_MSG(memcmp(d1.sha256, want, 32) == 0,
              "the digest is SHA-256 of the bytes after the meta group");
    CHECK(memcmp(d1.sha256, d2.sha256, 32) == 0);
    CHECK(strcmp(d1.transfer_syntax, "1.2.840.10008.1.2.1") == 0);
    char hex[SOPINDEX_HEX_SHOWN + 1];
    char want_hex[SOPINDEX_HEX_SHOWN + 1];
    sopindex_digest_hex(&d1, hex);
    for (int i = 0; i < SOPINDEX_HEX_SHOWN / 2; i++)
        snprintf(want_hex + 2 * i, 3, "%02x", want[i]);
    CHECK(strcmp(hex, want_hex) == 0 && strlen(hex) == SOPINDEX_HEX_SHOWN);

    /* One pixel differs: another digest. */
    other.p = malloc(ds.len);
    other.len = ds.len;
    memcpy(other.p, ds.p, ds.len);
    other.p[other.len - 1] ^= 1;
    struct buf f3 = part10("CT1 ", "1.2.840.10008.1.2.1\0", &other);
    CHECK(write_file(p3, &f3) == 0);
    CHECK(sopindex_digest_file(p3, &d3, err, sizeof(err)) == 0);
    CHECK(memcmp(d1.sha256, d3.sha256, 32) != 0);

    /* A data set of exactly one read chunk, and an empty one. */
    struct buf exact = { NULL, 0 };
    unsigned char *chunk = calloc(1, 64 * 1024 - 12);
    put_long(&exact, 0x7FE0, 0x0010, "OB", chunk, 64 * 1024 - 12);
    free(chunk);
    CHECK(exact.len == 64 * 1024);
    struct buf f4 = part10("CT1 ", "1.2.840.10008.1.2.1\0", &exact);
    CHECK(write_file(p3, &f4) == 0);
    sha256_of(&exact, want);
    CHECK(sopindex_digest_file(p3, &d3, err, sizeof(err)) == 0 &&
          memcmp(d3.sha256, want, 32) == 0);
    struct buf empty = { NULL, 0 };
    struct buf f5 = part10("CT1 ", "1.2.840.10008.1.2\0", &empty);
    CHECK(write_file(p3, &f5) == 0);
    EVP_Digest("", 0, want, NULL, EVP_sha256(), NULL);
    CHECK(sopindex_digest_file(p3, &d3, err, sizeof(err)) == 0 &&
          memcmp(d3.sha256, want, 32) == 0 &&
          strcmp(d3.transfer_syntax, "1.2.840.10008.1.2") == 0);

    /* Not Part 10, a meta group cut short, no file. */
    struct buf junk = { NULL, 0 };
    put(&junk, "not dicom at all", 16);
    CHECK(write_file(p3, &junk) == 0);
    CHECK(sopindex_digest_file(p3, &d3, err, sizeof(err)) == -EINVAL &&
          strstr(err, "not a DICOM Part 10 file") != NULL);
    struct buf cut = { NULL, 0 };
    put(&cut, f1.p, 132 + 12 + 14 + 5);
    CHECK(write_file(p3, &cut) == 0);
    CHECK(sopindex_digest_file(p3, &d3, err, sizeof(err)) == -EINVAL &&
          strstr(err, "File Meta") != NULL);
    CHECK(unlink(p3) == 0);
    CHECK(sopindex_digest_file(p3, &d3, err, sizeof(err)) == -ENOENT);

    unlink(p1);
    unlink(p2);
    rmdir(dir);
    free(pixels);
    free(ds.p);
    free(other.p);
    free(exact.p);
    free(junk.p);
    free(cut.p);
    free(f1.p);
    free(f2.p);
    free(f3.p);
    free(f4.p);
    free(f5.p);
}

int main(void)
{
    test_basics();
    test_single_copy_never_hashed();
    test_arrival_order();
    test_duplicate_runs();
    test_transfer_syntax_counts();
    test_digest_error();
    test_scan();
    test_many();
    test_digest_file();
    return tap_done();
}
