/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench_ledger - the ledger at the size of a busy site (issue 12,
 * "Performance"). Run on demand through bench/bench_ledger.sh, never in CI:
 *
 *   bench_ledger PATH [ROWS] [LOOKUPS]
 *
 * 1. fill: ROWS (default 30 million) deliveries through the asynchronous
 *    writer in batches of 10 000 (enqueue, then ledger_flush()), delivery
 *    times spread like 1 million a day ending now, with the instance mix of
 *    bench/ledger_schema.py's "typical" site (60 % of the studies CT/MR
 *    with 3-8 series of 30-300 instances, 40 % with 1-2 series of 1-5);
 *    UIDs hierarchical (study root, series, instance number) in four
 *    studies of five, random 2.25.<UUID> in the fifth; skipped when
 *    PATH.bench says PATH already holds them;
 * 2. insert: 20 uploads of 1000 instances (one new study each) through the
 *    writer, each timed from the first enqueue to the end of its flush,
 *    with the caller's cost per enqueue and the process CPU per row;
 * 3. look-up: LOOKUPS (default 100 000) random SOP Instance UIDs, half
 *    present, half absent, each timed: p50, p99, max;
 * 4. study listing: 1000 studies of the fill, listing and counts, timed;
 *    then 10 000 look-ups and 100 listings again after dropping the
 *    file from the page cache (posix_fadvise, this file only: cold);
 * 5. prune: the oldest day (1 million rows) while uploads of 1000
 *    instances go on: how long the prune takes and the slowest upload;
 *    (skipped with BENCH_NO_PRUNE=1, which keeps PATH reusable);
 * 6. file size, and the process's RSS (VmRSS after each phase, VmHWM).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ledger/ledger.h"

#define FILL_BATCH 10000
#define UPLOADS 20
#define UPLOAD_SIZE 1000
#define STUDY_SAMPLES 1000
#define COLD_LOOKUPS 10000
#define SPACING_MS 86 /* ~1 million deliveries a day */

static const char *const CLASSES[] = {
    "1.2.840.10008.5.1.4.1.1.2",
    "1.2.840.10008.5.1.4.1.1.4",
    "1.2.840.10008.5.1.4.1.1.1.1",
    "1.2.840.10008.5.1.4.1.1.6.1",
};
static const char *const AES[] = { "CT_SCANNER_1", "MR_SCANNER_2", "DX_ROOM_3",
                                   "US_CART_4", "PACS" };
static const char *const DEST =
    "https://ws-dicom.dicom.azurehealthcareapis.com/v2";

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    uint64_t x = rng_state;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng_state = x;
    return x;
}

static uint64_t rng_range(uint64_t lo, uint64_t hi)
{
    return lo + rng() % (hi - lo);
}

/* A 64-bit mix of @i (splitmix64). */
static uint64_t mix(uint64_t i)
{
    i += 0x9e3779b97f4a7c15ull;
    i = (i ^ (i >> 30)) * 0xbf58476d1ce4e5b9ull;
    i = (i ^ (i >> 27)) * 0x94d049bb133111ebull;
    return i ^ (i >> 31);
}

/*
 * The shape of study @s, a function of @s alone (so that any instance's
 * UIDs can be computed again for the look-ups): series sizes, and whether
 * its UIDs are hierarchical (study root, ".series", ".instance", as most
 * modalities make them) or random 2.25.<UUID> ones (one study in five).
 */
struct layout {
    unsigned n_series;
    unsigned size[8];
    unsigned total;
    bool random_uids;
    const char *cls;
    const char *ae;
};

static void study_layout(uint64_t s, struct layout *l)
{
    uint64_t r = mix(s);
    bool big = r % 10 < 6;

    l->n_series = big ? 3 + (unsigned)(r >> 8) % 6 : 1 + (unsigned)(r >> 8) % 2;
    l->total = 0;
    for (unsigned k = 0; k < l->n_series; k++) {
        uint64_t q = mix(r + k + 1);

        l->size[k] = big ? 30 + (unsigned)(q % 270) : 1 + (unsigned)(q % 5);
        l->total += l->size[k];
    }
    l->random_uids = (r >> 20) % 5 == 0;
    l->cls = CLASSES[(r >> 24) % 4];
    l->ae = AES[(r >> 28) % 5];
}

/* A 2.25 UID (a UUID as a decimal number) made from @seed. */
static void random_uid(char *buf, size_t len, uint64_t seed)
{
    (void)snprintf(buf, len, "2.25.%llu%019llu",
                   (unsigned long long)(mix(seed) % 10000000000000000000ull),
                   (unsigned long long)(mix(~seed) % 10000000000000000000ull));
}

static void study_uid(char *buf, size_t len, uint64_t s, const struct layout *l)
{
    if (l->random_uids)
        random_uid(buf, len, s * 3);
    else
        (void)snprintf(
            buf, len, "1.2.826.0.1.3680043.8.498.1.%014llu.%llu",
            (unsigned long long)(mix(s ^ 0xabcdefull) % 100000000000000ull),
            (unsigned long long)s);
}

static void series_uid(char *buf, size_t len, uint64_t s, unsigned k,
                       const struct layout *l)
{
    char study[80];

    if (l->random_uids) {
        random_uid(buf, len, s * 3 + 1 + ((uint64_t)k << 40));
        return;
    }
    study_uid(study, sizeof(study), s, l);
    if (snprintf(buf, len, "%s.%u", study, k + 1) >= (int)len)
        abort();
}

static void sop_uid(char *buf, size_t len, uint64_t s, unsigned k, unsigned j,
                    const struct layout *l)
{
    char series[80];

    if (l->random_uids) {
        random_uid(buf, len,
                   s * 3 + 2 + ((uint64_t)k << 40) + ((uint64_t)j << 44));
        return;
    }
    series_uid(series, sizeof(series), s, k, l);
    if (snprintf(buf, len, "%s.%u", series, j + 1) >= (int)len)
        abort(); /* the UIDs made here are at most 60 characters */
}

/* First row of every study of the fill (for the look-ups). */
static uint64_t *first_row;
static size_t n_studies;
static size_t cap_studies;

static int note_study(uint64_t first)
{
    if (n_studies == cap_studies) {
        size_t cap = cap_studies ? 2 * cap_studies : 65536;
        uint64_t *p = realloc(first_row, cap * sizeof(*p));

        if (p == NULL)
            return -ENOMEM;
        first_row = p;
        cap_studies = cap;
    }
    first_row[n_studies++] = first;
    return 0;
}

/* The SOP Instance UID of row @i of the fill. */
static void fill_sop_uid(char *buf, size_t len, uint64_t i)
{
    size_t lo = 0;
    size_t hi = n_studies;
    struct layout l;
    uint64_t off;
    unsigned k = 0;

    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;

        if (first_row[mid] <= i)
            lo = mid;
        else
            hi = mid;
    }
    study_layout(lo, &l);
    off = i - first_row[lo];
    while (k + 1 < l.n_series && off >= l.size[k])
        off -= l.size[k++];
    sop_uid(buf, len, lo, k, (unsigned)off, &l);
}

static double now_s(void)
{
    struct timespec ts;

    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t wall_ms(void)
{
    struct timespec ts;

    (void)clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double cpu_s(void)
{
    struct rusage ru;

    (void)getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* VmRSS or VmHWM of this process in KiB. */
static long proc_kib(const char *key)
{
    char line[256];
    long v = -1;
    size_t klen = strlen(key);
    FILE *f = fopen("/proc/self/status", "r");

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            v = strtol(line + klen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

/* Bytes this process has caused to be written to storage (or -1). */
static long long io_written(void)
{
    char line[256];
    long long v = -1;
    FILE *f = fopen("/proc/self/io", "r");

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "write_bytes:", 12) == 0) {
            v = strtoll(line + 12, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

static void rss(const char *phase)
{
    printf("rss %-22s VmRSS %6.1f MB  VmHWM %6.1f MB\n", phase,
           proc_kib("VmRSS") / 1024.0, proc_kib("VmHWM") / 1024.0);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;

    return (x > y) - (x < y);
}

static void report(const char *what, double *v, size_t n, double scale,
                   const char *unit)
{
    qsort(v, n, sizeof(*v), cmp_double);
    printf("%-28s n=%-6zu p50 %8.3f  p99 %8.3f  max %8.3f %s\n", what, n,
           v[n / 2] * scale, v[(n * 99) / 100] * scale, v[n - 1] * scale, unit);
}

/* Queues instance @j of series @k of study @s; retries a full queue. */
static int put(struct ledger *lg, uint64_t s, unsigned k, unsigned j,
               const struct layout *l, int64_t delivered_ms)
{
    char sop[80];
    char study[80];
    char series[96];
    struct ledger_delivery d = {
        .sop_instance_uid = sop,
        .sop_class_uid = l->cls,
        .study_uid = study,
        .series_uid = series,
        .calling_ae = l->ae,
        .destination = DEST,
        .arrived_ms = delivered_ms - (int64_t)rng_range(50, 5000),
        .delivered_ms = delivered_ms,
        .bytes = rng_range(100000, 600000),
        .outcome = LEDGER_STORED,
    };
    int r;

    sop_uid(sop, sizeof(sop), s, k, j, l);
    study_uid(study, sizeof(study), s, l);
    series_uid(series, sizeof(series), s, k, l);
    while ((r = ledger_record_delivery(lg, &d)) == -ENOBUFS)
        (void)ledger_flush(lg, -1);
    return r;
}

static int fill(struct ledger *lg, uint64_t rows, int64_t t0)
{
    double start = now_s();
    double last = start;
    uint64_t i = 0;
    int r = 0;

    for (uint64_t s = 0; i < rows && r == 0; s++) {
        struct layout l;

        study_layout(s, &l);
        r = note_study(i);
        for (unsigned k = 0; k < l.n_series && i < rows && r == 0; k++) {
            for (unsigned j = 0; j < l.size[k] && i < rows && r == 0; j++) {
                r = put(lg, s, k, j, &l, t0 + (int64_t)i * SPACING_MS);
                if (r == 0 && ++i % FILL_BATCH == 0)
                    r = ledger_flush(lg, -1);
            }
        }
        if (now_s() - last > 60) {
            last = now_s();
            printf("  fill: %llu rows, %.0f rows/s\n", (unsigned long long)i,
                   (double)i / (last - start));
            (void)fflush(stdout);
        }
    }
    if (r == 0)
        r = ledger_flush(lg, -1);
    printf("fill                         %llu rows in %.0f s: %.0f rows/s "
           "(%zu studies)\n",
           (unsigned long long)rows, now_s() - start,
           (double)rows / (now_s() - start), n_studies);
    return r;
}

/* Remembers the fill (rows, start time, studies) next to the file. */
static int save_meta(const char *path, uint64_t rows, int64_t t0)
{
    char meta[4200];
    FILE *f;

    (void)snprintf(meta, sizeof(meta), "%s.bench", path);
    f = fopen(meta, "w");
    if (f == NULL)
        return -errno;
    fprintf(f, "%llu %lld %zu\n", (unsigned long long)rows, (long long)t0,
            n_studies);
    for (size_t k = 0; k < n_studies; k++)
        fprintf(f, "%llu\n", (unsigned long long)first_row[k]);
    return fclose(f) == 0 ? 0 : -errno;
}

static bool load_meta(const char *path, uint64_t rows, int64_t *ret_t0)
{
    char meta[4200];
    unsigned long long r = 0;
    long long t0 = 0;
    size_t n = 0;
    bool ok;
    FILE *f;

    (void)snprintf(meta, sizeof(meta), "%s.bench", path);
    f = fopen(meta, "r");
    if (f == NULL)
        return false;
    ok = fscanf(f, "%llu %lld %zu", &r, &t0, &n) == 3 && r == rows;
    for (size_t k = 0; ok && k < n; k++) {
        unsigned long long v;

        ok = fscanf(f, "%llu", &v) == 1 && note_study(v) == 0;
    }
    fclose(f);
    *ret_t0 = t0;
    return ok;
}

/*
 * One upload of UPLOAD_SIZE instances (a new study of 4 series of 250,
 * hierarchical UIDs); returns its duration in s.
 */
static double upload(struct ledger *lg, uint64_t study, double *enqueue_s)
{
    struct layout l = { 4, { 250, 250, 250, 250 }, 1000, false, NULL, NULL };
    double start = now_s();
    double queued;
    int64_t t = wall_ms();

    l.cls = CLASSES[0];
    l.ae = AES[0];
    for (unsigned j = 0; j < UPLOAD_SIZE; j++) {
        if (put(lg, study, j / 250, j % 250, &l, t) < 0)
            return -1;
    }
    queued = now_s();
    if (ledger_flush(lg, -1) < 0)
        return -1;
    *enqueue_s += queued - start;
    return now_s() - start;
}

static void phase_insert(struct ledger *lg, uint64_t *next_study)
{
    double times[UPLOADS];
    double enqueue = 0;
    double cpu0 = cpu_s();
    double wall0 = now_s();
    long long io0 = io_written();

    for (int k = 0; k < UPLOADS; k++)
        times[k] = upload(lg, (*next_study)++, &enqueue);
    printf("insert                       %d x %d rows: %.0f rows/s, "
           "CPU %.1f us/row, enqueue %.2f us/row (caller), "
           "%.0f KB written per upload\n",
           UPLOADS, UPLOAD_SIZE, UPLOADS * UPLOAD_SIZE / (now_s() - wall0),
           (cpu_s() - cpu0) / (UPLOADS * UPLOAD_SIZE) * 1e6,
           enqueue / (UPLOADS * UPLOAD_SIZE) * 1e6,
           (double)(io_written() - io0) / 1024.0 / UPLOADS);
    report("insert 1000-row upload", times, UPLOADS, 1e3, "ms");
}

static void phase_lookup(struct ledger *lg, uint64_t rows, size_t n,
                         const char *label)
{
    double *hit = calloc(n, sizeof(double));
    double *miss = calloc(n, sizeof(double));
    struct ledger_instance in;
    char sop[80];
    size_t nh = 0;
    size_t nm = 0;
    unsigned wrong = 0;

    if (hit == NULL || miss == NULL)
        goto out;
    for (size_t k = 0; k < n; k++) {
        bool want = k % 2 == 0;
        double t;
        int r;

        if (want)
            fill_sop_uid(sop, sizeof(sop), rng() % rows);
        else
            (void)snprintf(sop, sizeof(sop),
                           "1.2.826.0.1.3680043.8.498.9.%llu.1.%u",
                           (unsigned long long)rng(), (unsigned)(rng() % 300));
        t = now_s();
        r = ledger_find_instance(lg, sop, &in);
        t = now_s() - t;
        if (want) {
            hit[nh++] = t;
            wrong += r != 0 || strcmp(in.sop_instance_uid, sop) != 0;
        } else {
            miss[nm++] = t;
            wrong += r != -ENOENT;
        }
    }
    printf("%s: %u wrong answers\n", label, wrong);
    report("  look-up, present", hit, nh, 1e3, "ms");
    report("  look-up, absent", miss, nm, 1e3, "ms");
out:
    free(hit);
    free(miss);
}

static int count_row(void *ctx, const struct ledger_instance *i)
{
    (void)i;
    (*(unsigned *)ctx)++;
    return 0;
}

static void phase_studies(struct ledger *lg, size_t want, const char *label)
{
    double list[STUDY_SAMPLES];
    double counts[STUDY_SAMPLES];
    struct ledger_study_counts c;
    char study[80];
    unsigned wrong = 0;
    uint64_t rows = 0;
    size_t n = 0;

    /* Studies spread over the whole fill (not the last, maybe cut). */
    for (size_t k = 0; k < want && n_studies > 1; k++) {
        uint64_t s =
            (k * (n_studies - 1) + n_studies / 3) / want % (n_studies - 1);
        unsigned got = 0;
        struct layout l;
        double t;

        study_layout(s, &l);
        study_uid(study, sizeof(study), s, &l);
        t = now_s();
        (void)ledger_study_instances(lg, study, count_row, &got);
        list[n] = now_s() - t;
        t = now_s();
        if (ledger_study_counts(lg, study, &c) != 0)
            c.deliveries = 0;
        counts[n++] = now_s() - t;
        wrong += got != l.total || c.deliveries != got;
        rows += got;
    }
    if (n == 0)
        return;
    printf("%s: %zu studies, %.0f instances each on average, %u wrong\n", label,
           n, (double)rows / (double)n, wrong);
    report("  study listing", list, n, 1e3, "ms");
    report("  study counts", counts, n, 1e3, "ms");
}

static void phase_prune(struct ledger *lg, int64_t t0, uint64_t *next_study)
{
    double times[400];
    double enqueue = 0;
    struct ledger_stats st0;
    struct ledger_stats st;
    size_t n = 0;
    double start = now_s();
    double took;

    (void)ledger_stats(lg, &st0);
    (void)ledger_prune(lg, t0 + 1000000 * (int64_t)SPACING_MS);
    do {
        times[n++] = upload(lg, (*next_study)++, &enqueue);
        (void)ledger_stats(lg, &st);
    } while (st.prune_pending && n < 400);
    (void)ledger_prune_wait(lg, -1);
    took = now_s() - start;
    (void)ledger_stats(lg, &st);
    printf("prune                        %llu rows in %.1f s (%llu chunks), "
           "%zu uploads meanwhile\n",
           (unsigned long long)(st.pruned_deliveries - st0.pruned_deliveries),
           took, (unsigned long long)(st.prune_chunks - st0.prune_chunks), n);
    report("  1000-row upload in prune", times, n, 1e3, "ms");
}

static void file_size(const char *path, uint64_t rows)
{
    char wal[4200];
    struct stat a;
    struct stat b;

    (void)snprintf(wal, sizeof(wal), "%s-wal", path);
    if (stat(path, &a) != 0)
        return;
    if (stat(wal, &b) != 0)
        b.st_size = 0;
    printf("file                         %.2f GB (+ %.1f MB -wal): %.1f "
           "bytes per row\n",
           (double)a.st_size / 1e9, (double)b.st_size / 1e6,
           (double)a.st_size / (double)rows);
}

/* Drops this file's pages from the page cache (only this file). */
static void drop_cache(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return;
    (void)fdatasync(fd);
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
}

int main(int argc, char **argv)
{
    char err[512];
    struct ledger_params p = { 0 };
    struct ledger *lg = NULL;
    uint64_t rows = argc > 2 ? strtoull(argv[2], NULL, 10) : 30000000ull;
    size_t lookups = argc > 3 ? strtoul(argv[3], NULL, 10) : 100000;
    int64_t t0 = wall_ms() - (int64_t)rows * SPACING_MS;
    uint64_t next_study = 1ull << 40;
    bool reuse;
    int r;

    if (argc < 2 || rows < 1000000 || lookups < 100) {
        fprintf(stderr, "usage: bench_ledger PATH [ROWS>=1000000] "
                        "[LOOKUPS>=100]\n");
        return 2;
    }
    reuse = load_meta(argv[1], rows, &t0);
    p.path = argv[1];
    r = ledger_open(&p, &lg, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    rss("after open");
    if (!reuse) {
        r = fill(lg, rows, t0);
        if (r == 0)
            r = save_meta(argv[1], rows, t0);
        if (r < 0) {
            fprintf(stderr, "fill failed: %s\n", strerror(-r));
            ledger_close(lg);
            return 1;
        }
        rss("after fill");
    } else {
        printf("fill                         reused %llu rows\n",
               (unsigned long long)rows);
    }
    file_size(argv[1], rows);
    phase_insert(lg, &next_study);
    rss("after insert");
    phase_lookup(lg, rows, lookups, "look-up (warm)");
    rss("after look-ups");
    phase_studies(lg, STUDY_SAMPLES, "study listing (warm)");
    rss("after study listing");
    drop_cache(argv[1]);
    phase_lookup(lg, rows, COLD_LOOKUPS,
                 "look-up (cold: file dropped "
                 "from the page cache)");
    drop_cache(argv[1]);
    phase_studies(lg, STUDY_SAMPLES / 10, "study listing (cold)");
    if (getenv("BENCH_NO_PRUNE") == NULL) {
        /* The file no longer holds what PATH.bench describes. */
        char meta[4200];

        (void)snprintf(meta, sizeof(meta), "%s.bench", argv[1]);
        (void)unlink(meta);
        phase_prune(lg, t0, &next_study);
        rss("after prune");
    }
    file_size(argv[1], rows);
    ledger_close(lg);
    rss("after close");
    free(first_row);
    return 0;
}
