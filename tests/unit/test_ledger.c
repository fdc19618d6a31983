/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_ledger - the delivery ledger: UID packing, insert and look-up,
 * duplicates, study listing and counts, the commitment history, prune in
 * chunks (and writes going on meanwhile), input checks, a full queue
 * (counted tail drops), concurrency (several enqueuing threads, a reader
 * thread and a reader process while the writer runs), kill -9 of a
 * writing process, garbage and corrupt files (moved aside, reported), a
 * newer schema, and an unwritable directory.
 *
 * Child processes are this binary run again with a "--child-..." first
 * argument (a fresh process: SQLite handles never cross fork()).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ledger/ledger.h"
#include "ledger/ledger_int.h"
#include "tap.h"

static char root[64];
static char err[512];

/* 2026-01-01T00:00:00Z in ms: the tests' clock. */
#define T0 INT64_C(1767225600000)
#define DAY_MS INT64_C(86400000)

static const char *const DEST = "https://dicom.example.org/v2";
static const char *const CT = "1.2.840.10008.5.1.4.1.1.2";

static void path_in(char *buf, size_t len, const char *name)
{
    (void)snprintf(buf, len, "%s/%s", root, name);
}

static struct ledger *open_with(const char *name, struct ledger_params *p)
{
    char path[256];
    struct ledger *lg = NULL;
    int r;

    path_in(path, sizeof(path), name);
    p->path = path;
    r = ledger_open(p, &lg, err, sizeof(err));
    CHECK_MSG(r == 0, "open %s: %d %s", name, r, err);
    return r == 0 ? lg : NULL;
}

/* A ledger that commits at once (no batching window). */
static struct ledger *open_fast(const char *name)
{
    struct ledger_params p = { .group_wait_ms = LEDGER_GROUP_WAIT_NONE };

    return open_with(name, &p);
}

static void uid(char *buf, size_t len, const char *stem, unsigned n)
{
    (void)snprintf(buf, len, "1.2.826.0.1.3680043.8.498.%s.%u", stem, n);
}

static int record(struct ledger *lg, const char *sop, const char *study,
                  const char *series, int64_t delivered_ms,
                  enum ledger_outcome outcome)
{
    struct ledger_delivery d = {
        .sop_instance_uid = sop,
        .sop_class_uid = CT,
        .study_uid = study,
        .series_uid = series,
        .calling_ae = "CT_ROOM_1",
        .destination = DEST,
        .arrived_ms = delivered_ms - 1500,
        .delivered_ms = delivered_ms,
        .bytes = 524288,
        .outcome = outcome,
    };

    return ledger_record_delivery(lg, &d);
}

static uint64_t study_deliveries(struct ledger *lg, const char *study)
{
    struct ledger_study_counts c;

    if (ledger_study_counts(lg, study, &c) != 0)
        return 0;
    return c.deliveries;
}

/* Row count of @table, read directly (white-box checks of clean-up). */
static long long table_rows(const char *name, const char *table)
{
    char path[256];
    char sql[128];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long long n = -1;

    path_in(path, sizeof(path), name);
    (void)snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", table);
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static void test_uid_packing(void)
{
    static const char *const good[] = {
        "1",
        "12",
        "1.2",
        "1.2.840.10008.5.1.4.1.1.2",
        "0.0.0",
        "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20.21.22.23.24.25",
        "2.25.329800735698586629295641978511506172918",
    };
    unsigned char buf[LEDGER__PACKED_MAX];
    char out[LEDGER_UID_MAX + 1];
    char max64[LEDGER_UID_MAX + 2];

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        size_t len = strlen(good[i]);
        size_t n = ledger__uid_pack(good[i], buf);

        if (len > LEDGER_UID_MAX) {
            CHECK(n == 0);
            continue;
        }
        CHECK_MSG(n == (len + 1) / 2, "%s packs to %zu", good[i], n);
        CHECK(ledger__uid_unpack(buf, n, out, sizeof(out)) == 0);
        CHECK_MSG(strcmp(out, good[i]) == 0, "%s -> %s", good[i], out);
    }
    memset(max64, '7', LEDGER_UID_MAX);
    max64[LEDGER_UID_MAX] = '\0';
    CHECK(ledger__uid_pack(max64, buf) == LEDGER__PACKED_MAX);
    CHECK(ledger__uid_unpack(buf, LEDGER__PACKED_MAX, out, sizeof(out)) == 0);
    CHECK(strcmp(out, max64) == 0);
    max64[LEDGER_UID_MAX] = '7';
    max64[LEDGER_UID_MAX + 1] = '\0';
    CHECK(ledger__uid_pack(max64, buf) == 0);
    CHECK(ledger__uid_pack("", buf) == 0);
    CHECK(ledger__uid_pack("1.2.abc", buf) == 0);
    CHECK(ledger__uid_pack("1.2 ", buf) == 0);
    /* Nibbles 11-14 and a pad before the end are corruption. */
    buf[0] = 0x1b;
    CHECK(ledger__uid_unpack(buf, 1, out, sizeof(out)) == -EUCLEAN);
    buf[0] = 0xf1;
    CHECK(ledger__uid_unpack(buf, 1, out, sizeof(out)) == -EUCLEAN);
    buf[0] = 0x1f;
    buf[1] = 0x22;
    CHECK(ledger__uid_unpack(buf, 2, out, sizeof(out)) == -EUCLEAN);
    buf[0] = 0x1f;
    CHECK(ledger__uid_unpack(buf, 1, out, sizeof(out)) == 0 &&
          strcmp(out, "1") == 0);
    CHECK(ledger__uid_unpack(buf, 1, out, 1) == -EUCLEAN);
    /* The key: the same UID, the same key; one series, one high half. */
    CHECK(ledger__uid_key("1.2.3.7") == ledger__uid_key("1.2.3.7"));
    CHECK(ledger__uid_key("1.2.3.7") != ledger__uid_key("1.2.3.8"));
    CHECK(ledger__uid_key("1.2.3.7") >> 32 == ledger__uid_key("1.2.3.8") >> 32);
    CHECK(ledger__uid_key("1.2.3.7") >> 32 != ledger__uid_key("1.2.4.7") >> 32);
    /* FNV-1a of "" is 0x811c9dc5; of "7" 0x320ca3f6 (no dot: no prefix). */
    CHECK(ledger__uid_key("7") ==
          ((int64_t)0x811c9dc5u - INT64_C(4294967296)) * INT64_C(4294967296) +
              0x320ca3f6);
    CHECK(ledger__uid_key("") < 0);
}

static void test_insert_lookup(void)
{
    char path[256];
    struct ledger_instance in;
    struct ledger_study_counts c;
    struct ledger_delivery d = {
        .sop_instance_uid = "1.2.3.4.5.1",
        .sop_class_uid = CT,
        .study_uid = "1.2.3.4",
        .series_uid = "1.2.3.4.5",
        .calling_ae = "CT_ROOM_1",
        .destination = DEST,
        .arrived_ms = T0 - 2345,
        .delivered_ms = T0,
        .bytes = 524288,
        .outcome = LEDGER_STORED,
    };
    struct stat stt;
    struct ledger *lg = open_fast("basic.db");

    if (lg == NULL)
        return;
    path_in(path, sizeof(path), "basic.db");
    CHECK(stat(path, &stt) == 0 && (stt.st_mode & 0777) == 0600);
    CHECK(ledger_moved_aside(lg) == NULL);
    CHECK(strcmp(ledger_path(lg), path) == 0);
    CHECK(ledger_record_delivery(lg, &d) == 0);
    d.sop_instance_uid = "1.2.3.4.6.1";
    d.series_uid = "1.2.3.4.6";
    d.sop_class_uid = "1.2.840.10008.5.1.4.1.1.4";
    d.calling_ae = "MR_2";
    d.destination = "https://other.example.org/dicomWeb";
    d.delivered_ms = T0 + 10;
    d.arrived_ms = T0 + 5;
    d.bytes = 1000;
    d.outcome = LEDGER_ALREADY_EXISTED;
    CHECK(ledger_record_delivery(lg, &d) == 0);
    CHECK(record(lg, "1.2.9.9.9.1", "1.2.9.9", "1.2.9.9.9", T0 + 20,
                 LEDGER_STORED) == 0);
    /* Not visible before it is written. */
    CHECK(ledger_flush(lg, 10000) == 0);

    CHECK(ledger_find_instance(lg, "1.2.3.4.5.1", &in) == 0);
    CHECK(strcmp(in.sop_instance_uid, "1.2.3.4.5.1") == 0);
    CHECK(strcmp(in.sop_class_uid, CT) == 0);
    CHECK(strcmp(in.study_uid, "1.2.3.4") == 0);
    CHECK(strcmp(in.series_uid, "1.2.3.4.5") == 0);
    CHECK(strcmp(in.calling_ae, "CT_ROOM_1") == 0);
    CHECK(strcmp(in.destination, DEST) == 0);
    CHECK(in.arrived_ms == T0 - 2345 && in.delivered_ms == T0);
    CHECK(in.bytes == 524288 && in.outcome == LEDGER_STORED);

    CHECK(ledger_find_instance(lg, "1.2.3.4.6.1", &in) == 0);
    CHECK(strcmp(in.series_uid, "1.2.3.4.6") == 0);
    CHECK(strcmp(in.calling_ae, "MR_2") == 0);
    CHECK(strcmp(in.destination, "https://other.example.org/dicomWeb") == 0);
    CHECK(in.outcome == LEDGER_ALREADY_EXISTED && in.bytes == 1000);
    CHECK(in.arrived_ms == T0 + 5 && in.delivered_ms == T0 + 10);

    memset(&in, 0x55, sizeof(in));
    CHECK(ledger_find_instance(lg, "1.2.3.4.7.1", &in) == -ENOENT);
    CHECK(in.bytes == 0x5555555555555555ull); /* untouched on failure */
    CHECK(ledger_find_instance(lg, "1.2.3.4", &in) == -ENOENT);

    CHECK(ledger_study_counts(lg, "1.2.3.4", &c) == 0);
    CHECK(c.deliveries == 2 && c.instances == 2 && c.series == 2);
    CHECK(c.stored == 1 && c.already_existed == 1 && c.bytes == 525288);
    CHECK(c.first_arrived_ms == T0 - 2345 && c.last_arrived_ms == T0 + 5);
    CHECK(c.first_delivered_ms == T0 && c.last_delivered_ms == T0 + 10);
    CHECK(ledger_study_counts(lg, "1.2.3.5", &c) == -ENOENT);
    ledger_close(lg);

    /* Reopened: the same, and new rows go on after the old ones. */
    lg = open_fast("basic.db");
    if (lg == NULL)
        return;
    CHECK(ledger_find_instance(lg, "1.2.9.9.9.1", &in) == 0 &&
          in.delivered_ms == T0 + 20);
    CHECK(record(lg, "1.2.9.9.9.2", "1.2.9.9", "1.2.9.9.9", T0 + 20,
                 LEDGER_STORED) == 0);
    CHECK(ledger_flush(lg, 10000) == 0);
    CHECK(study_deliveries(lg, "1.2.9.9") == 2);
    CHECK(ledger_find_instance(lg, "1.2.9.9.9.2", &in) == 0 &&
          in.delivered_ms == T0 + 20);
    ledger_close(lg);
}

struct listing {
    unsigned n;
    char sops[8][LEDGER_UID_MAX + 1];
    int64_t times[8];
    char series[8][LEDGER_UID_MAX + 1];
    unsigned stop_after;
};

static int collect_instance(void *ctx, const struct ledger_instance *i)
{
    struct listing *l = ctx;

    if (l->n < 8) {
        (void)snprintf(l->sops[l->n], sizeof(l->sops[0]), "%s",
                       i->sop_instance_uid);
        (void)snprintf(l->series[l->n], sizeof(l->series[0]), "%s",
                       i->series_uid);
        l->times[l->n] = i->delivered_ms;
    }
    l->n++;
    return l->stop_after != 0 && l->n == l->stop_after ? 42 : 0;
}

struct sources {
    unsigned n;
    struct ledger_study_source s[4];
};

static int collect_source(void *ctx, const struct ledger_study_source *s)
{
    struct sources *l = ctx;

    if (l->n < 4)
        l->s[l->n] = *s;
    l->n++;
    return 0;
}

static void test_duplicates_and_study(void)
{
    struct ledger_instance in;
    struct ledger_study_counts c;
    struct listing l = { 0 };
    struct sources src = { 0 };
    struct ledger_delivery d = {
        .sop_instance_uid = "1.5.1.1.1",
        .study_uid = "1.5",
        .series_uid = "1.5.1",
        .calling_ae = "US_CART",
        .destination = DEST,
        .arrived_ms = T0 - 100,
        .delivered_ms = T0 + 3000,
        .outcome = LEDGER_STORED,
    };
    struct ledger *lg = open_fast("dup.db");

    if (lg == NULL)
        return;
    /* The later delivery is queued first: the latest is by time. */
    CHECK(ledger_record_delivery(lg, &d) == 0);
    CHECK(record(lg, "1.5.1.1.1", "1.5", "1.5.1", T0 + 1000,
                 LEDGER_ALREADY_EXISTED) == 0);
    CHECK(record(lg, "1.5.1.1.2", "1.5", "1.5.1", T0 + 2000, LEDGER_STORED) ==
          0);
    CHECK(record(lg, "1.5.2.1.1", "1.5", "1.5.2", T0 + 500, LEDGER_STORED) ==
          0);
    CHECK(ledger_flush(lg, 10000) == 0);

    CHECK(ledger_find_instance(lg, "1.5.1.1.1", &in) == 0);
    CHECK(in.delivered_ms == T0 + 3000 &&
          strcmp(in.calling_ae, "US_CART") == 0);
    CHECK(strcmp(in.sop_class_uid, "") == 0); /* NULL is stored as "" */
    CHECK(ledger_study_counts(lg, "1.5", &c) == 0);
    CHECK(c.deliveries == 4 && c.instances == 3 && c.series == 2);
    CHECK(c.stored == 3 && c.already_existed == 1);

    CHECK(ledger_study_instances(lg, "1.5", collect_instance, &l) == 0);
    CHECK(l.n == 4);
    /* Grouped by series, each in delivery order. */
    CHECK(strcmp(l.series[0], l.series[1]) == 0 || l.n != 4);
    for (unsigned i = 1; i < 4 && l.n == 4; i++) {
        if (strcmp(l.series[i], l.series[i - 1]) == 0)
            CHECK(l.times[i] > l.times[i - 1]);
    }
    {
        unsigned dups = 0;

        for (unsigned i = 0; i < 4; i++)
            dups += strcmp(l.sops[i], "1.5.1.1.1") == 0;
        CHECK(dups == 2);
    }
    /* A callback's non-zero result stops the walk and is returned. */
    memset(&l, 0, sizeof(l));
    l.stop_after = 2;
    CHECK(ledger_study_instances(lg, "1.5", collect_instance, &l) == 42);
    CHECK(l.n == 2);
    memset(&l, 0, sizeof(l));
    CHECK(ledger_study_instances(lg, "9.9", collect_instance, &l) == 0);
    CHECK(l.n == 0);

    CHECK(ledger_study_sources(lg, "1.5", collect_source, &src) == 0);
    CHECK(src.n == 2);
    if (src.n == 2) {
        /* Sorted by AE title: CT_ROOM_1, then US_CART. */
        CHECK(strcmp(src.s[0].calling_ae, "CT_ROOM_1") == 0);
        CHECK(src.s[0].instances == 3 && src.s[0].deliveries == 3);
        CHECK(src.s[0].first_arrived_ms == T0 - 1000);
        CHECK(src.s[0].last_arrived_ms == T0 + 500);
        CHECK(strcmp(src.s[1].calling_ae, "US_CART") == 0);
        CHECK(src.s[1].instances == 1 && src.s[1].deliveries == 1);
        CHECK(src.s[1].first_arrived_ms == T0 - 100);
    }
    ledger_close(lg);
}

/* More than 4096 deliveries in one millisecond, and times out of order. */
static void test_same_millisecond(void)
{
    struct ledger_study_counts c;
    struct ledger_instance in;
    char sop[80];
    struct ledger *lg = open_fast("ms.db");
    int bad = 0;

    if (lg == NULL)
        return;
    for (unsigned i = 0; i < 5000; i++) {
        uid(sop, sizeof(sop), "ms", i);
        bad += record(lg, sop, "1.7", "1.7.1", T0 + 50, LEDGER_STORED) != 0;
    }
    /* Earlier and later times after the burst. */
    bad +=
        record(lg, "1.7.1.99999", "1.7", "1.7.1", T0 + 10, LEDGER_STORED) != 0;
    bad +=
        record(lg, "1.7.1.99998", "1.7", "1.7.1", T0 + 50, LEDGER_STORED) != 0;
    CHECK(bad == 0);
    CHECK(ledger_flush(lg, 30000) == 0);
    CHECK(ledger_study_counts(lg, "1.7", &c) == 0);
    CHECK(c.deliveries == 5002 && c.instances == 5002);
    CHECK(c.first_delivered_ms == T0 + 10);
    CHECK(c.last_delivered_ms == T0 + 51 || c.last_delivered_ms == T0 + 52);
    uid(sop, sizeof(sop), "ms", 0);
    CHECK(ledger_find_instance(lg, sop, &in) == 0 &&
          in.delivered_ms == T0 + 50);
    uid(sop, sizeof(sop), "ms", 4095);
    CHECK(ledger_find_instance(lg, sop, &in) == 0 &&
          in.delivered_ms == T0 + 50);
    uid(sop, sizeof(sop), "ms", 4096);
    CHECK(ledger_find_instance(lg, sop, &in) == 0 &&
          in.delivered_ms == T0 + 51);
    CHECK(ledger_find_instance(lg, "1.7.1.99999", &in) == 0 &&
          in.delivered_ms == T0 + 10);
    ledger_close(lg);
}

/* Values that are not plain UIDs are kept as text, exactly. */
static void test_text_values(void)
{
    struct ledger_instance in;
    struct ledger_study_counts c;
    struct ledger_delivery d = {
        .sop_instance_uid = "1.2.3.X-not-a-uid",
        .study_uid = "",
        .series_uid = NULL,
        .sop_class_uid = "1.2.840.10008.5.1.4.1.1.2",
        .calling_ae = "",
        .destination = "",
        .arrived_ms = 0,
        .delivered_ms = 7,
        .bytes = 0,
        .outcome = LEDGER_STORED,
    };
    char sop64[LEDGER_UID_MAX + 1];
    struct ledger *lg = open_fast("text.db");

    if (lg == NULL)
        return;
    memset(sop64, '9', LEDGER_UID_MAX);
    sop64[LEDGER_UID_MAX] = '\0';
    CHECK(ledger_record_delivery(lg, &d) == 0);
    d.sop_instance_uid = sop64;
    d.study_uid = "text study";
    CHECK(ledger_record_delivery(lg, &d) == 0);
    CHECK(ledger_flush(lg, 10000) == 0);
    CHECK(ledger_find_instance(lg, "1.2.3.X-not-a-uid", &in) == 0);
    CHECK(strcmp(in.sop_instance_uid, "1.2.3.X-not-a-uid") == 0);
    CHECK(strcmp(in.study_uid, "") == 0 && strcmp(in.series_uid, "") == 0);
    CHECK(in.delivered_ms == 7 && in.arrived_ms == 0);
    CHECK(ledger_find_instance(lg, sop64, &in) == 0);
    CHECK(strcmp(in.sop_instance_uid, sop64) == 0);
    CHECK(strcmp(in.study_uid, "text study") == 0);
    CHECK(ledger_study_counts(lg, "", &c) == 0 && c.deliveries == 1);
    ledger_close(lg);
}

static void test_invalid_input(void)
{
    struct ledger_commit_ref ref = { CT, "1.2.3" };
    struct ledger_commit_resolution res = {
        .tx_uid = "1.9",
        .sop_instance_uid = "1.2.3",
        .result = LEDGER_ITEM_COMMITTED,
        .basis = LEDGER_BASIS_DELIVERED,
        .resolved_ms = T0,
    };
    struct ledger_delivery d = {
        .sop_instance_uid = "1.2.3",
        .delivered_ms = T0,
        .arrived_ms = T0,
        .outcome = LEDGER_STORED,
    };
    struct ledger_instance in;
    struct ledger_stats st;
    char long_uid[LEDGER_UID_MAX + 2];
    char long_url[LEDGER_URL_MAX + 2];
    struct ledger *lg = open_fast("invalid.db");
    struct ledger_params p = { 0 };
    struct ledger *none = NULL;

    /* A NULL ledger (the daemon runs without one): -ENODEV everywhere. */
    CHECK(ledger_record_delivery(NULL, &d) == -ENODEV);
    CHECK(ledger_record_commit_received(NULL, "1.9", "AE", T0, &ref, 1) ==
          -ENODEV);
    CHECK(ledger_record_commit_resolved(NULL, &res) == -ENODEV);
    CHECK(ledger_record_commit_reported(NULL, "1.9", 1, T0) == -ENODEV);
    CHECK(ledger_flush(NULL, 0) == -ENODEV);
    CHECK(ledger_prune(NULL, T0) == -ENODEV);
    CHECK(ledger_prune_wait(NULL, 0) == -ENODEV);
    CHECK(ledger_stats(NULL, &st) == -ENODEV);
    CHECK(ledger_find_instance(NULL, "1.2.3", &in) == -ENODEV);
    CHECK(ledger_study_counts(NULL, "1.2", NULL) == -ENODEV);
    CHECK(ledger_path(NULL) == NULL && ledger_moved_aside(NULL) == NULL);
    ledger_close(NULL);
    CHECK(ledger_open(NULL, &none, err, sizeof(err)) == -EINVAL);
    CHECK(ledger_open(&p, &none, err, sizeof(err)) == -EINVAL && none == NULL);
    p.path = "/tmp/never-opened.db";
    p.prune_chunk = LEDGER_CHUNK_MAX + 1;
    CHECK(ledger_open(&p, &none, err, sizeof(err)) == -EINVAL && none == NULL);
    CHECK(access(p.path, F_OK) < 0);
    if (lg == NULL)
        return;

    memset(long_uid, '1', sizeof(long_uid) - 1);
    long_uid[sizeof(long_uid) - 1] = '\0';
    memset(long_url, 'a', sizeof(long_url) - 1);
    long_url[sizeof(long_url) - 1] = '\0';
    CHECK(ledger_record_delivery(lg, NULL) == -EINVAL);
    d.sop_instance_uid = NULL;
    CHECK(ledger_record_delivery(lg, &d) == -EINVAL);
    d.sop_instance_uid = "";
    CHECK(ledger_record_delivery(lg, &d) == -EINVAL);
    d.sop_instance_uid = long_uid;
    CHECK(ledger_record_delivery(lg, &d) == -EINVAL);
    d.sop_instance_uid = "1.2.3";
    d.study_uid = long_uid;
    CHECK(ledger_record_delivery(lg, &d) == -EINVAL);
    d.study_uid = NULL;
    d.calling_ae = "SEVENTEEN_CHARS_X";
    CHECK(ledger_record_delivery(lg, &d) == -EINVAL);
    d.calling_ae = "SIXTEEN_CHARS_XX";
    d.destination = long_url;
    CHECK(ledger_record_delivery(lg, &d) == -EINVAL);
    d.destination = NULL;
    d.outcome = 0;
    CHECK(ledger_record_delivery(lg, &d) == -EINVAL);
    d.outcome = LEDGER_STORED;
    d.delivered_ms = -1;
    CHECK(ledger_record_delivery(lg, &d) == -EINVAL);
    d.delivered_ms = INT64_MAX / 2;
    CHECK(ledger_record_delivery(lg, &d) == -EINVAL);
    d.delivered_ms = T0;
    d.arrived_ms = -5;
    CHECK(ledger_record_delivery(lg, &d) == -EINVAL);
    d.arrived_ms = T0;
    CHECK(ledger_record_delivery(lg, &d) == 0); /* the 16-char AE is fine */

    CHECK(ledger_record_commit_received(lg, "", "AE", T0, &ref, 1) == -EINVAL);
    CHECK(ledger_record_commit_received(lg, "1.9", "AE", T0, &ref, 0) ==
          -EINVAL);
    CHECK(ledger_record_commit_received(lg, "1.9", "AE", T0, NULL, 1) ==
          -EINVAL);
    ref.sop_instance_uid = long_uid;
    CHECK(ledger_record_commit_received(lg, "1.9", "AE", T0, &ref, 1) ==
          -EINVAL);
    res.result = LEDGER_ITEM_PENDING;
    CHECK(ledger_record_commit_resolved(lg, &res) == -EINVAL);
    res.result = LEDGER_ITEM_FAILED;
    res.basis = 99;
    CHECK(ledger_record_commit_resolved(lg, &res) == -EINVAL);
    res.basis = LEDGER_BASIS_SERVER;
    res.sop_instance_uid = NULL;
    CHECK(ledger_record_commit_resolved(lg, &res) == -EINVAL);
    CHECK(ledger_record_commit_reported(lg, "1.9", 3, T0) == -EINVAL);
    CHECK(ledger_record_commit_reported(lg, "1.9", 0, T0) == -EINVAL);
    CHECK(ledger_find_instance(lg, "", &in) == -EINVAL);
    CHECK(ledger_find_instance(lg, NULL, &in) == -EINVAL);
    CHECK(ledger_flush(lg, 10000) == 0);
    CHECK(ledger_stats(lg, &st) == 0);
    CHECK(st.queued == 1 && st.written == 1 && st.dropped == 0);
    ledger_close(lg);

    /* Read-only handles refuse writes. */
    {
        struct ledger_params rp = { .flags = LEDGER_OPEN_READONLY };
        struct ledger *ro = open_with("invalid.db", &rp);

        if (ro != NULL) {
            d.calling_ae = NULL;
            CHECK(ledger_record_delivery(ro, &d) == -EROFS);
            CHECK(ledger_record_commit_reported(ro, "1.9", 1, T0) == -EROFS);
            CHECK(ledger_prune(ro, T0) == -EROFS);
            CHECK(ledger_flush(ro, 0) == 0);
            CHECK(ledger_find_instance(ro, "1.2.3", &in) == 0);
            CHECK(strcmp(in.calling_ae, "SIXTEEN_CHARS_XX") == 0);
            ledger_close(ro);
        }
    }
}

/* --- Commitment history ---------------------------------------------- */

struct items {
    unsigned n;
    struct ledger_commit_item it[8];
};

static int collect_item(void *ctx, const struct ledger_commit_item *i)
{
    struct items *l = ctx;

    if (l->n < 8)
        l->it[l->n] = *i;
    l->n++;
    return 0;
}

struct commits {
    unsigned n;
    struct ledger_commit c[8];
    struct ledger_commit_study s[8];
};

static int collect_commit(void *ctx, const struct ledger_commit *c)
{
    struct commits *l = ctx;

    if (l->n < 8)
        l->c[l->n] = *c;
    l->n++;
    return 0;
}

static int collect_study_commit(void *ctx, const struct ledger_commit *c,
                                const struct ledger_commit_study *s)
{
    struct commits *l = ctx;

    if (l->n < 8) {
        l->c[l->n] = *c;
        l->s[l->n] = *s;
    }
    l->n++;
    return 0;
}

static void resolve(struct ledger *lg, const char *tx, const char *sop,
                    const char *study, enum ledger_item_result result,
                    uint16_t reason, enum ledger_commit_basis basis, int64_t ms)
{
    struct ledger_commit_resolution r = {
        .tx_uid = tx,
        .sop_instance_uid = sop,
        .study_uid = study,
        .result = result,
        .failure_reason = reason,
        .basis = basis,
        .resolved_ms = ms,
    };

    CHECK(ledger_record_commit_resolved(lg, &r) == 0);
}

static void test_commit_history(void)
{
    static const char *const tx = "1.2.826.0.1.3680043.8.498.77.1";
    struct ledger_commit_ref refs[4] = {
        { CT, "1.8.1.1" }, /* delivered: linked to study 1.8 */
        { CT, "1.8.1.2" }, /* named twice */
        { CT, "1.8.1.2" },
        { CT, "4.4.4.4" }, /* never received */
    };
    struct ledger_commit c;
    struct items items = { 0 };
    struct commits list = { 0 };
    struct ledger_stats st;
    struct ledger *lg = open_fast("commit.db");

    if (lg == NULL)
        return;
    CHECK(record(lg, "1.8.1.1", "1.8", "1.8.1", T0, LEDGER_STORED) == 0);
    CHECK(ledger_record_commit_received(lg, tx, "CT_ROOM_1", T0 + 100, refs,
                                        4) == 0);
    CHECK(ledger_flush(lg, 10000) == 0);
    CHECK(ledger_commit_find(lg, tx, &c) == 0);
    CHECK(strcmp(c.tx_uid, tx) == 0 && strcmp(c.calling_ae, "CT_ROOM_1") == 0);
    CHECK(c.received_ms == T0 + 100 && c.reported_ms == 0 && c.event_type == 0);
    CHECK(c.items == 4 && c.pending == 4 && c.committed == 0 && c.failed == 0);

    /* 1.8.1.2 is delivered after the request came. */
    CHECK(record(lg, "1.8.1.2", "1.8", "1.8.1", T0 + 200, LEDGER_STORED) == 0);
    resolve(lg, tx, "1.8.1.1", NULL, LEDGER_ITEM_COMMITTED, 0,
            LEDGER_BASIS_DELIVERED, T0 + 300);
    resolve(lg, tx, "1.8.1.2", NULL, LEDGER_ITEM_COMMITTED, 0,
            LEDGER_BASIS_DELIVERED, T0 + 301);
    resolve(lg, tx, "4.4.4.4", "4.4", LEDGER_ITEM_FAILED, 0x0112,
            LEDGER_BASIS_SERVER, T0 + 302);
    /* Events naming nothing known are counted and ignored. */
    resolve(lg, "9.9.9", "1.8.1.1", NULL, LEDGER_ITEM_COMMITTED, 0,
            LEDGER_BASIS_DELIVERED, T0 + 303);
    resolve(lg, tx, "5.5.5.5", NULL, LEDGER_ITEM_COMMITTED, 0,
            LEDGER_BASIS_DELIVERED, T0 + 303);
    CHECK(ledger_record_commit_reported(lg, "9.9.9", 1, T0 + 400) == 0);
    CHECK(ledger_record_commit_reported(lg, tx, 2, T0 + 500) == 0);
    CHECK(ledger_flush(lg, 10000) == 0);
    CHECK(ledger_stats(lg, &st) == 0 && st.ignored == 3);

    CHECK(ledger_commit_find(lg, tx, &c) == 0);
    CHECK(c.items == 4 && c.committed == 3 && c.failed == 1 && c.pending == 0);
    CHECK(c.reported_ms == T0 + 500 && c.event_type == 2);
    CHECK(ledger_commit_find(lg, "9.9.9", &c) == -ENOENT);

    CHECK(ledger_commit_items(lg, tx, collect_item, &items) == 0);
    CHECK(items.n == 4);
    if (items.n == 4) {
        for (unsigned i = 0; i < 4; i++) {
            CHECK(items.it[i].pos == i);
            CHECK(strcmp(items.it[i].sop_instance_uid,
                         refs[i].sop_instance_uid) == 0);
            CHECK(strcmp(items.it[i].sop_class_uid, CT) == 0);
        }
        CHECK(items.it[0].result == LEDGER_ITEM_COMMITTED);
        CHECK(items.it[0].basis == LEDGER_BASIS_DELIVERED);
        CHECK(items.it[0].resolved_ms == T0 + 300);
        CHECK(strcmp(items.it[0].study_uid, "1.8") == 0);
        CHECK(items.it[1].result == LEDGER_ITEM_COMMITTED &&
              items.it[2].result == LEDGER_ITEM_COMMITTED);
        CHECK(strcmp(items.it[1].study_uid, "1.8") == 0 &&
              strcmp(items.it[2].study_uid, "1.8") == 0);
        CHECK(items.it[3].result == LEDGER_ITEM_FAILED);
        CHECK(items.it[3].failure_reason == 0x0112);
        CHECK(items.it[3].basis == LEDGER_BASIS_SERVER);
        CHECK(strcmp(items.it[3].study_uid, "4.4") == 0);
    }
    CHECK(ledger_commit_items(lg, "9.9.9", collect_item, &items) == -ENOENT);

    /* The same transaction UID used again later: the latest is shown. */
    CHECK(ledger_record_commit_received(lg, tx, "CT_ROOM_2", T0 + 1000, refs,
                                        1) == 0);
    CHECK(ledger_record_commit_received(lg, "1.99", "MR_2", T0 + 2000, refs + 3,
                                        1) == 0);
    CHECK(ledger_flush(lg, 10000) == 0);
    CHECK(ledger_commit_find(lg, tx, &c) == 0);
    CHECK(c.items == 1 && c.pending == 1 && c.received_ms == T0 + 1000);
    CHECK(strcmp(c.calling_ae, "CT_ROOM_2") == 0);

    CHECK(ledger_commit_list(lg, 0, 0, collect_commit, &list) == 0);
    CHECK(list.n == 3);
    if (list.n == 3) {
        CHECK(strcmp(list.c[0].tx_uid, "1.99") == 0);
        CHECK(list.c[1].received_ms == T0 + 1000);
        CHECK(list.c[2].received_ms == T0 + 100 && list.c[2].event_type == 2);
    }
    memset(&list, 0, sizeof(list));
    CHECK(ledger_commit_list(lg, 0, 2, collect_commit, &list) == 0);
    CHECK(list.n == 2);
    memset(&list, 0, sizeof(list));
    CHECK(ledger_commit_list(lg, T0 + 1000, 0, collect_commit, &list) == 0);
    CHECK(list.n == 2);

    /* Which transactions named instances of study 1.8, and 4.4. */
    memset(&list, 0, sizeof(list));
    CHECK(ledger_study_commits(lg, "1.8", collect_study_commit, &list) == 0);
    CHECK(list.n == 2);
    if (list.n == 2) {
        CHECK(list.c[0].received_ms == T0 + 100 && list.c[0].items == 4);
        CHECK(list.s[0].items == 3 && list.s[0].committed == 3);
        CHECK(list.s[0].failed == 0 && list.s[0].pending == 0);
        CHECK(list.c[1].received_ms == T0 + 1000);
        CHECK(list.s[1].items == 1 && list.s[1].pending == 1);
    }
    memset(&list, 0, sizeof(list));
    CHECK(ledger_study_commits(lg, "4.4", collect_study_commit, &list) == 0);
    CHECK(list.n == 1 && list.s[0].failed == 1);
    memset(&list, 0, sizeof(list));
    CHECK(ledger_study_commits(lg, "7.7", collect_study_commit, &list) == 0);
    CHECK(list.n == 0);
    ledger_close(lg);
}

/* A read callback that calls the same ledger gets -EDEADLK. */
struct reenter {
    struct ledger *lg;
    int inner;
};

static int reenter_cb(void *ctx, const struct ledger_instance *i)
{
    struct reenter *re = ctx;
    struct ledger_instance again;

    re->inner = ledger_find_instance(re->lg, i->sop_instance_uid, &again);
    return 0;
}

static void test_reentry(void)
{
    struct ledger *lg = open_fast("reenter.db");
    struct reenter re = { lg, 0 };
    struct ledger_instance in;

    if (lg == NULL)
        return;
    CHECK(record(lg, "1.6.1.1", "1.6", "1.6.1", T0, LEDGER_STORED) == 0);
    CHECK(ledger_flush(lg, 10000) == 0);
    CHECK(ledger_study_instances(lg, "1.6", reenter_cb, &re) == 0);
    CHECK(re.inner == -EDEADLK);
    CHECK(ledger_find_instance(lg, "1.6.1.1", &in) == 0);
    ledger_close(lg);
}

/* --- Retention ---------------------------------------------------------- */

static void test_prune(void)
{
    struct ledger_params p = { .group_wait_ms = LEDGER_GROUP_WAIT_NONE,
                               .prune_chunk = 7 };
    struct ledger_commit_ref ref = { CT, "1.10.1.0" };
    struct ledger_commit c;
    struct ledger_instance in;
    struct ledger_stats st;
    char sop[80];
    char series[80];
    int bad = 0;
    struct ledger *lg = open_with("prune.db", &p);

    if (lg == NULL)
        return;
    /* 40 days ago: 50 instances in 5 series of study 1.10 (all go),
     * and study 1.11 half old, half new (it stays, with its new half). */
    for (unsigned i = 0; i < 50; i++) {
        uid(sop, sizeof(sop), "old", i);
        (void)snprintf(series, sizeof(series), "1.10.%u", i % 5);
        bad += record(lg, sop, "1.10", series, T0 - 40 * DAY_MS + i,
                      LEDGER_STORED) != 0;
    }
    for (unsigned i = 0; i < 20; i++) {
        uid(sop, sizeof(sop), "mixed", i);
        bad += record(lg, sop, "1.11", "1.11.1",
                      i < 10 ? T0 - 35 * DAY_MS + i : T0 - DAY_MS + i,
                      LEDGER_STORED) != 0;
    }
    CHECK(bad == 0);
    CHECK(ledger_record_commit_received(lg, "1.20", "CT", T0 - 40 * DAY_MS,
                                        &ref, 1) == 0);
    {
        struct ledger_commit_ref many[30];
        char uids[30][24];

        for (unsigned i = 0; i < 30; i++) {
            (void)snprintf(uids[i], sizeof(uids[i]), "3.3.%u", i);
            many[i].sop_class_uid = CT;
            many[i].sop_instance_uid = uids[i];
        }
        /* 30 items in chunks of 7; their study exists only through them. */
        CHECK(ledger_record_commit_received(lg, "1.21", "CT", T0 - 39 * DAY_MS,
                                            many, 30) == 0);
        for (unsigned i = 0; i < 30; i++)
            resolve(lg, "1.21", uids[i], "3.3", LEDGER_ITEM_FAILED, 0x0112,
                    LEDGER_BASIS_SERVER, T0 - 39 * DAY_MS);
    }
    CHECK(ledger_record_commit_received(lg, "1.22", "CT", T0 - DAY_MS, &ref,
                                        1) == 0);
    CHECK(ledger_flush(lg, 10000) == 0);
    CHECK(table_rows("prune.db", "series") == 6);
    CHECK(table_rows("prune.db", "study") == 3);

    CHECK(ledger_prune(lg, T0 - 30 * DAY_MS) == 0);
    CHECK(ledger_prune_wait(lg, 30000) == 0);
    CHECK(ledger_stats(lg, &st) == 0);
    CHECK_MSG(st.pruned_deliveries == 60, "%llu",
              (unsigned long long)st.pruned_deliveries);
    CHECK(st.pruned_commits == 2);
    /* 60 rows and 32 items in chunks of 7: never one big transaction. */
    CHECK_MSG(st.prune_chunks >= 9 + 5, "%llu chunks",
              (unsigned long long)st.prune_chunks);
    CHECK(!st.prune_pending);

    uid(sop, sizeof(sop), "old", 3);
    CHECK(ledger_find_instance(lg, sop, &in) == -ENOENT);
    CHECK(ledger_study_counts(lg, "1.10", NULL) == -EINVAL);
    CHECK(study_deliveries(lg, "1.10") == 0);
    CHECK(study_deliveries(lg, "1.11") == 10);
    uid(sop, sizeof(sop), "mixed", 15);
    CHECK(ledger_find_instance(lg, sop, &in) == 0);
    CHECK(ledger_commit_find(lg, "1.20", &c) == -ENOENT);
    CHECK(ledger_commit_find(lg, "1.21", &c) == -ENOENT);
    CHECK(ledger_commit_find(lg, "1.22", &c) == 0);
    /* What only the pruned rows referred to is gone too. */
    CHECK(table_rows("prune.db", "series") == 1);
    CHECK(table_rows("prune.db", "study") == 1);
    CHECK(table_rows("prune.db", "commit_item") == 1);

    /* Writing goes on afterwards (the writer's caches were dropped). */
    CHECK(record(lg, "1.10.9.9", "1.10", "1.10.0", T0, LEDGER_STORED) == 0);
    CHECK(ledger_flush(lg, 10000) == 0);
    CHECK(study_deliveries(lg, "1.10") == 1);
    CHECK(ledger_prune(lg, 0) == 0 && ledger_prune_wait(lg, 0) == 0);
    ledger_close(lg);
}

/* While a long prune runs, queued rows are written after one chunk. */
static void test_prune_interleaves(void)
{
    struct ledger_params p = { .group_wait_ms = LEDGER_GROUP_WAIT_NONE,
                               .prune_chunk = 100 };
    struct ledger_stats st;
    struct ledger_instance in;
    char sop[80];
    int bad = 0;
    struct ledger *lg = open_with("interleave.db", &p);

    if (lg == NULL)
        return;
    for (unsigned i = 0; i < 30000; i++) {
        uid(sop, sizeof(sop), "il", i);
        bad += record(lg, sop, "1.12", "1.12.1", T0 - 40 * DAY_MS + i,
                      LEDGER_STORED) != 0;
        if (i % 5000 == 4999)
            bad += ledger_flush(lg, 60000) != 0;
    }
    CHECK(bad == 0);
    CHECK(ledger_prune(lg, T0 - 30 * DAY_MS) == 0);
    CHECK(record(lg, "1.12.2.1", "1.12", "1.12.2", T0, LEDGER_STORED) == 0);
    CHECK(ledger_flush(lg, 60000) == 0);
    CHECK(ledger_stats(lg, &st) == 0);
    /* 300 chunks are needed; the new row did not wait for them. */
    CHECK_MSG(st.pruned_deliveries < 30000 && st.prune_pending,
              "pruned %llu before the row was written",
              (unsigned long long)st.pruned_deliveries);
    CHECK(ledger_find_instance(lg, "1.12.2.1", &in) == 0);
    CHECK(ledger_prune_wait(lg, 120000) == 0);
    CHECK(ledger_stats(lg, &st) == 0 && st.pruned_deliveries == 30000);
    CHECK(st.prune_chunks == 300);
    CHECK(study_deliveries(lg, "1.12") == 1);
    ledger_close(lg);
}

/* --- The queue ------------------------------------------------------------ */

/* Holds the database's write lock from another connection. */
static sqlite3 *hold_write_lock(const char *name)
{
    char path[256];
    sqlite3 *db = NULL;

    path_in(path, sizeof(path), name);
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
        sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

static bool wait_queue_empty(struct ledger *lg)
{
    struct ledger_stats st;

    for (int i = 0; i < 2000; i++) {
        if (ledger_stats(lg, &st) == 0 && st.queue_len == 0)
            return true;
        (void)usleep(5000);
    }
    return false;
}

static void test_queue_full(void)
{
    struct ledger_params p = { .group_wait_ms = LEDGER_GROUP_WAIT_NONE,
                               .queue_max = 8,
                               .queue_bytes_max = 64 * 1024,
                               .busy_timeout_ms = 60000 };
    struct ledger_commit_ref refs[1000];
    struct ledger_instance in;
    struct ledger_stats st;
    char sop[80];
    sqlite3 *blocker;
    int r;
    struct ledger *lg = open_with("full.db", &p);

    if (lg == NULL)
        return;
    blocker = hold_write_lock("full.db");
    CHECK(blocker != NULL);
    /* The writer takes the first row and waits for the lock. */
    CHECK(record(lg, "1.13.0", "1.13", "1.13.1", T0, LEDGER_STORED) == 0);
    CHECK(wait_queue_empty(lg));
    for (unsigned i = 1; i <= 8; i++) {
        uid(sop, sizeof(sop), "full", i);
        r = record(lg, sop, "1.13", "1.13.1", T0 + i, LEDGER_STORED);
        CHECK_MSG(r == 0, "row %u: %d", i, r);
    }
    /* Full: the newest rows are refused at once, and counted. */
    CHECK(record(lg, "1.13.9", "1.13", "1.13.1", T0 + 9, LEDGER_STORED) ==
          -ENOBUFS);
    CHECK(ledger_record_commit_reported(lg, "1.99", 1, T0) == -ENOBUFS);
    CHECK(ledger_stats(lg, &st) == 0);
    CHECK(st.dropped == 2 && st.queue_len == 8 && st.queue_high_water == 8);
    CHECK(st.queued == 9);
    CHECK(ledger_flush(lg, 0) == -ETIMEDOUT);
    if (blocker != NULL) {
        CHECK(sqlite3_exec(blocker, "COMMIT", NULL, NULL, NULL) == SQLITE_OK);
        sqlite3_close(blocker);
    }
    CHECK(ledger_flush(lg, 60000) == 0);
    CHECK(ledger_stats(lg, &st) == 0 && st.written == 9 && st.failed == 0);
    CHECK(study_deliveries(lg, "1.13") == 9);
    CHECK(ledger_find_instance(lg, "1.13.0", &in) == 0);
    uid(sop, sizeof(sop), "full", 8);
    CHECK(ledger_find_instance(lg, sop, &in) == 0);
    CHECK(ledger_find_instance(lg, "1.13.9", &in) == -ENOENT);

    /* The byte limit counts too: 1000 items do not fit in 64 KiB. */
    for (unsigned i = 0; i < 1000; i++) {
        refs[i].sop_class_uid = CT;
        refs[i].sop_instance_uid = "1.2.826.0.1.3680043.8.498.1234567890.1";
    }
    CHECK(ledger_record_commit_received(lg, "1.98", "CT", T0, refs, 1000) ==
          -ENOBUFS);
    CHECK(ledger_record_commit_received(lg, "1.98", "CT", T0, refs, 100) == 0);
    CHECK(ledger_stats(lg, &st) == 0 && st.dropped == 3);
    CHECK(ledger_flush(lg, 60000) == 0);
    ledger_close(lg);
}

/* A write transaction that fails (lock held too long) loses its rows,
 * counts them and reports the error; the writer goes on. */
static void test_write_failure(void)
{
    struct ledger_params p = { .group_wait_ms = LEDGER_GROUP_WAIT_NONE,
                               .busy_timeout_ms = 50 };
    struct ledger_stats st;
    struct ledger_instance in;
    sqlite3 *blocker;
    struct ledger *lg = open_with("busy.db", &p);

    if (lg == NULL)
        return;
    blocker = hold_write_lock("busy.db");
    CHECK(blocker != NULL);
    CHECK(record(lg, "1.14.1", "1.14", "1.14.1", T0, LEDGER_STORED) == 0);
    CHECK(ledger_flush(lg, 60000) == -EBUSY);
    CHECK(ledger_flush(lg, 60000) == 0); /* a loss is reported once */
    CHECK(ledger_stats(lg, &st) == 0);
    CHECK(st.failed == 1 && st.written == 0 && st.last_error == -EBUSY);
    CHECK(strstr(st.last_error_text, "locked") != NULL);
    CHECK(!st.broken);
    if (blocker != NULL) {
        CHECK(sqlite3_exec(blocker, "COMMIT", NULL, NULL, NULL) == SQLITE_OK);
        sqlite3_close(blocker);
    }
    CHECK(record(lg, "1.14.2", "1.14", "1.14.1", T0, LEDGER_STORED) == 0);
    CHECK(ledger_flush(lg, 60000) == 0);
    CHECK(ledger_find_instance(lg, "1.14.2", &in) == 0);
    CHECK(ledger_find_instance(lg, "1.14.1", &in) == -ENOENT);
    ledger_close(lg);
}

/* --- Concurrency ---------------------------------------------------------- */

#define CONC_THREADS 4
#define CONC_ROWS 3000

struct conc_writer {
    struct ledger *lg;
    unsigned index;
    int bad;
};

static void *conc_write(void *arg)
{
    struct conc_writer *w = arg;
    char study[32];
    char sop[80];

    (void)snprintf(study, sizeof(study), "1.30.%u", w->index);
    for (unsigned i = 0; i < CONC_ROWS; i++) {
        (void)snprintf(sop, sizeof(sop), "1.30.%u.1.%u", w->index, i);
        /* Retry the rare full queue: this test wants every row. */
        for (int tries = 0; tries < 10000; tries++) {
            int r = record(w->lg, sop, study, "1.30.1",
                           T0 + (int64_t)i * 10 + w->index, LEDGER_STORED);

            if (r == 0)
                break;
            if (r != -ENOBUFS) {
                w->bad++;
                break;
            }
            (void)usleep(1000);
        }
    }
    return NULL;
}

struct conc_reader {
    struct ledger *lg;
    atomic_bool *stop;
    unsigned rounds;
    int bad;
};

/* Counts never go down, and the row written first is always found. */
static int conc_check_round(struct ledger *lg, uint64_t last[CONC_THREADS])
{
    struct ledger_instance in;
    char study[32];
    int bad = 0;

    if (ledger_find_instance(lg, "1.30.0.0.0", &in) != 0)
        bad++;
    for (unsigned t = 0; t < CONC_THREADS; t++) {
        uint64_t n;

        (void)snprintf(study, sizeof(study), "1.30.%u", t);
        n = study_deliveries(lg, study);
        if (n < last[t])
            bad++;
        last[t] = n;
    }
    return bad;
}

static void *conc_read(void *arg)
{
    struct conc_reader *rd = arg;
    uint64_t last[CONC_THREADS] = { 0 };

    while (!atomic_load(rd->stop)) {
        rd->bad += conc_check_round(rd->lg, last);
        rd->rounds++;
    }
    return NULL;
}

/* Child: reads with its own read-only handle until every study is full. */
static int child_reader(const char *path)
{
    struct ledger_params p = { .path = path, .flags = LEDGER_OPEN_READONLY };
    uint64_t last[CONC_THREADS] = { 0 };
    struct ledger *lg = NULL;
    time_t end = time(NULL) + 200;
    unsigned rounds = 0;
    int bad = 0;

    if (ledger_open(&p, &lg, err, sizeof(err)) != 0) {
        fprintf(stderr, "child reader: %s\n", err);
        return 2;
    }
    while (time(NULL) < end) {
        uint64_t full = 0;

        bad += conc_check_round(lg, last);
        rounds++;
        for (unsigned t = 0; t < CONC_THREADS; t++)
            full += last[t] == CONC_ROWS + (t == 0 ? 1 : 0);
        if (full == CONC_THREADS)
            break;
    }
    ledger_close(lg);
    fprintf(stderr, "child reader: %u rounds, %d bad\n", rounds, bad);
    if (bad > 0)
        return 1;
    return time(NULL) < end ? 0 : 3;
}

/* Runs this binary again as "--child-MODE PATH"; returns its pid. */
static pid_t spawn_child(const char *mode, const char *path, int out_fd)
{
    pid_t pid = fork();

    if (pid == 0) {
        if (out_fd >= 0 && dup2(out_fd, STDOUT_FILENO) < 0)
            _exit(126);
        execl("/proc/self/exe", "test_ledger", mode, path, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static int wait_child(pid_t pid)
{
    int status = 0;

    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void test_concurrency(void)
{
    struct ledger_params p = { .queue_max = 512 };
    struct conc_writer writers[CONC_THREADS];
    pthread_t wt[CONC_THREADS];
    pthread_t rt;
    atomic_bool stop;
    struct conc_reader rd;
    struct ledger_stats st;
    char path[256];
    char study[32];
    pid_t child;
    int code;
    struct ledger *lg = open_with("conc.db", &p);

    if (lg == NULL)
        return;
    path_in(path, sizeof(path), "conc.db");
    /* The row every reader looks for, committed before they start. */
    CHECK(record(lg, "1.30.0.0.0", "1.30.0", "1.30.1", T0 - 1, LEDGER_STORED) ==
          0);
    CHECK(ledger_flush(lg, 10000) == 0);
    child = spawn_child("--child-reader", path, -1);
    CHECK(child > 0);
    atomic_init(&stop, false);
    rd = (struct conc_reader){ lg, &stop, 0, 0 };
    CHECK(pthread_create(&rt, NULL, conc_read, &rd) == 0);
    for (unsigned t = 0; t < CONC_THREADS; t++) {
        writers[t] = (struct conc_writer){ lg, t, 0 };
        CHECK(pthread_create(&wt[t], NULL, conc_write, &writers[t]) == 0);
    }
    for (unsigned t = 0; t < CONC_THREADS; t++) {
        pthread_join(wt[t], NULL);
        CHECK(writers[t].bad == 0);
    }
    CHECK(ledger_flush(lg, 60000) == 0);
    atomic_store(&stop, true);
    pthread_join(rt, NULL);
    CHECK_MSG(rd.bad == 0 && rd.rounds > 0, "reader thread: %u rounds, %d bad",
              rd.rounds, rd.bad);
    code = wait_child(child);
    CHECK_MSG(code == 0, "reader process exit %d", code);
    for (unsigned t = 0; t < CONC_THREADS; t++) {
        (void)snprintf(study, sizeof(study), "1.30.%u", t);
        CHECK(study_deliveries(lg, study) == CONC_ROWS + (t == 0 ? 1 : 0));
    }
    CHECK(ledger_stats(lg, &st) == 0);
    CHECK(st.written == st.queued && st.failed == 0);
    CHECK(st.written == CONC_THREADS * CONC_ROWS + 1);
    ledger_close(lg);
}

/* --- Crash safety --------------------------------------------------------- */

#define CRASH_BATCH 200

/* Child: writes batches forever; after each flush prints its number. */
static int child_writer(const char *path)
{
    struct ledger_params p = { .path = path };
    struct ledger *lg = NULL;
    char sop[80];

    if (ledger_open(&p, &lg, err, sizeof(err)) != 0) {
        fprintf(stderr, "child writer: %s\n", err);
        return 2;
    }
    for (unsigned b = 0;; b++) {
        for (unsigned i = 0; i < CRASH_BATCH; i++) {
            uid(sop, sizeof(sop), "crash", b * CRASH_BATCH + i);
            if (record(lg, sop, "1.40", "1.40.1",
                       T0 + (int64_t)(b * CRASH_BATCH + i), LEDGER_STORED) != 0)
                return 3;
        }
        if (ledger_flush(lg, 60000) != 0)
            return 4;
        printf("%u\n", b);
        (void)fflush(stdout);
    }
}

static void test_kill9(void)
{
    struct ledger_params p = { .flags = LEDGER_OPEN_CHECK };
    struct ledger_instance in;
    char path[256];
    char sop[80];
    char line[32];
    int fds[2];
    FILE *f;
    long last = -1;
    pid_t child;
    unsigned missing = 0;
    struct ledger *lg;

    path_in(path, sizeof(path), "crash.db");
    if (pipe(fds) != 0) {
        CHECK(false);
        return;
    }
    child = spawn_child("--child-writer", path, fds[1]);
    close(fds[1]);
    f = fdopen(fds[0], "r");
    while (f != NULL && last < 12 && fgets(line, sizeof(line), f) != NULL)
        last = strtol(line, NULL, 10);
    /* Killed while it goes on writing the next batches. */
    CHECK(kill(child, SIGKILL) == 0);
    CHECK(wait_child(child) == 128 + SIGKILL);
    if (f != NULL)
        fclose(f);
    CHECK_MSG(last >= 12, "child reported %ld batches", last);

    lg = open_with("crash.db", &p);
    if (lg == NULL)
        return;
    CHECK(ledger_moved_aside(lg) == NULL);
    for (unsigned i = 0; i < (unsigned)(last + 1) * CRASH_BATCH; i++) {
        uid(sop, sizeof(sop), "crash", i);
        missing += ledger_find_instance(lg, sop, &in) != 0;
    }
    CHECK_MSG(missing == 0, "%u committed rows missing", missing);
    CHECK(study_deliveries(lg, "1.40") >= (uint64_t)(last + 1) * CRASH_BATCH);
    /* And it takes new rows. */
    CHECK(record(lg, "1.40.2.1", "1.40", "1.40.2", T0, LEDGER_STORED) == 0);
    CHECK(ledger_flush(lg, 10000) == 0);
    ledger_close(lg);
}

/* --- Bad files ------------------------------------------------------------ */

static void write_bytes(const char *path, const void *data, size_t len,
                        off_t at)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);

    CHECK(fd >= 0 && pwrite(fd, data, len, at) == (ssize_t)len);
    if (fd >= 0)
        close(fd);
}

static void garbage(unsigned char *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        seed = seed * 1103515245u + 12345u;
        buf[i] = (unsigned char)(seed >> 16);
    }
}

static bool file_equals(const char *path, const void *data, size_t len)
{
    unsigned char buf[8192];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf)) : -1;

    if (fd >= 0)
        close(fd);
    return n == (ssize_t)len && memcmp(buf, data, len) == 0;
}

static void test_garbage_file(void)
{
    unsigned char junk[8192];
    unsigned char wal[512];
    char path[256];
    char walpath[300];
    char moved[4200];
    struct ledger_params p = { .group_wait_ms = LEDGER_GROUP_WAIT_NONE };
    struct ledger_params ro = { .flags = LEDGER_OPEN_READONLY };
    struct ledger_instance in;
    struct ledger *lg = NULL;
    int r;

    path_in(path, sizeof(path), "garbage.db");
    garbage(junk, sizeof(junk), 7);
    (void)snprintf(walpath, sizeof(walpath), "%s-wal", path);
    garbage(wal, sizeof(wal), 8);

    /* ledger_move_aside() takes the -wal along and drops the -shm. */
    write_bytes(path, junk, sizeof(junk), 0);
    write_bytes(walpath, wal, sizeof(wal), 0);
    (void)snprintf(moved, sizeof(moved), "%s-shm", path);
    write_bytes(moved, wal, 16, 0);
    CHECK(ledger_move_aside(path, moved, sizeof(moved), err, sizeof(err)) == 0);
    CHECK(file_equals(moved, junk, sizeof(junk)));
    CHECK(strlen(moved) < sizeof(moved) - 5);
    (void)strncat(moved, "-wal", sizeof(moved) - strlen(moved) - 1);
    CHECK(file_equals(moved, wal, sizeof(wal)));
    CHECK(access(path, F_OK) < 0 && access(walpath, F_OK) < 0);
    (void)snprintf(moved, sizeof(moved), "%s-shm", path);
    CHECK(access(moved, F_OK) < 0);

    write_bytes(path, junk, sizeof(junk), 0);
    write_bytes(walpath, wal, sizeof(wal), 0);
    /* Without RECOVER: a clear error, and the file is left alone. */
    p.path = path;
    r = ledger_open(&p, &lg, err, sizeof(err));
    CHECK_MSG(r == -EUCLEAN && lg == NULL, "%d %s", r, err);
    CHECK(strstr(err, path) != NULL);
    CHECK(file_equals(path, junk, sizeof(junk)));
    ro.path = path;
    CHECK(ledger_open(&ro, &lg, err, sizeof(err)) == -EUCLEAN);

    /* With RECOVER: moved aside with its -wal, reported, a new ledger. */
    p.flags = LEDGER_OPEN_RECOVER;
    r = ledger_open(&p, &lg, err, sizeof(err));
    CHECK_MSG(r == 0, "%d %s", r, err);
    if (r != 0)
        return;
    CHECK(ledger_moved_aside(lg) != NULL);
    if (ledger_moved_aside(lg) != NULL) {
        (void)snprintf(moved, sizeof(moved), "%s", ledger_moved_aside(lg));
        CHECK(strncmp(moved, path, strlen(path)) == 0);
        CHECK(strstr(moved, ".corrupt-") != NULL);
        CHECK(file_equals(moved, junk, sizeof(junk)));
        /* SQLite itself drops a -wal next to a file that is not in WAL
         * mode; either way no old -wal is left beside the new ledger. */
        CHECK(!file_equals(walpath, wal, sizeof(wal)));
        CHECK(ledger_moved_aside_reason(lg) != NULL &&
              strstr(ledger_moved_aside_reason(lg), "not a database") != NULL);
    }
    CHECK(record(lg, "1.50.1", "1.50", "1.50.1", T0, LEDGER_STORED) == 0);
    CHECK(ledger_flush(lg, 10000) == 0);
    CHECK(ledger_find_instance(lg, "1.50.1", &in) == 0);
    ledger_close(lg);
    /* It is a ledger now: opened again, nothing moves. */
    lg = NULL;
    CHECK(ledger_open(&p, &lg, err, sizeof(err)) == 0);
    CHECK(lg != NULL && ledger_moved_aside(lg) == NULL);
    CHECK(ledger_find_instance(lg, "1.50.1", &in) == 0);
    ledger_close(lg);
}

/* Runs @sql on a database file directly. */
static int sql_on(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open(path, &db);

    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

static void test_foreign_and_newer(void)
{
    struct ledger_params p = { .flags = LEDGER_OPEN_RECOVER };
    char path[256];
    struct ledger *lg = NULL;
    int r;

    /* Another program's database: not ours, moved aside. */
    path_in(path, sizeof(path), "foreign.db");
    CHECK(sql_on(path, "CREATE TABLE t(x); INSERT INTO t VALUES(1);") ==
          SQLITE_OK);
    p.path = path;
    r = ledger_open(&p, &lg, err, sizeof(err));
    CHECK_MSG(r == 0 && lg != NULL && ledger_moved_aside(lg) != NULL, "%d %s",
              r, err);
    if (lg != NULL && ledger_moved_aside(lg) != NULL)
        CHECK(strstr(ledger_moved_aside_reason(lg), "not a stowbridge") !=
              NULL);
    ledger_close(lg);

    /* A newer schema: never moved, a clear error, even with RECOVER. */
    path_in(path, sizeof(path), "newer.db");
    lg = open_fast("newer.db");
    ledger_close(lg);
    CHECK(sql_on(path, "PRAGMA user_version=2;") == SQLITE_OK);
    lg = NULL;
    r = ledger_open(&p, &lg, err, sizeof(err));
    CHECK_MSG(r == -EPROTONOSUPPORT && lg == NULL, "%d %s", r, err);
    CHECK(strstr(err, "schema version 2") != NULL);
    CHECK(strstr(err, "newer") != NULL);
    CHECK(table_rows("newer.db", "delivery") == 0); /* still there */
    {
        struct ledger_params ro = { .path = path,
                                    .flags = LEDGER_OPEN_READONLY };

        CHECK(ledger_open(&ro, &lg, err, sizeof(err)) == -EPROTONOSUPPORT);
    }
}

/* Garbage inside a valid file: found by LEDGER_OPEN_CHECK, or by the
 * statement that reads it (then the ledger says it is broken). */
static void test_corrupt_pages(void)
{
    struct ledger_params p = { .group_wait_ms = LEDGER_GROUP_WAIT_NONE,
                               .cache_kib = 64,
                               .read_cache_kib = 64 };
    unsigned char junk[4096 * 8];
    struct ledger_instance in;
    struct ledger_stats st;
    struct stat stt;
    char path[256];
    char sop[80];
    unsigned corrupt = 0;
    int bad = 0;
    int r;
    struct ledger *lg = open_with("pages.db", &p);

    if (lg == NULL)
        return;
    for (unsigned i = 0; i < 20000; i++) {
        uid(sop, sizeof(sop), "pages", i);
        bad += record(lg, sop, "1.60", "1.60.1", T0 + i, LEDGER_STORED) != 0;
        if (i % 5000 == 4999)
            bad += ledger_flush(lg, 60000) != 0;
    }
    CHECK(bad == 0);
    CHECK(ledger_flush(lg, 60000) == 0);
    ledger_close(lg); /* checkpoints: everything is in the main file */

    path_in(path, sizeof(path), "pages.db");
    CHECK(stat(path, &stt) == 0 && stt.st_size > (off_t)(4 * sizeof(junk)));
    garbage(junk, sizeof(junk), 9);
    write_bytes(path, junk, sizeof(junk), stt.st_size / 2 / 4096 * 4096);

    /* Opening does not read the middle of the file; reading it does. */
    lg = open_with("pages.db", &p);
    if (lg != NULL) {
        for (unsigned i = 0; i < 20000; i++) {
            uid(sop, sizeof(sop), "pages", i);
            r = ledger_find_instance(lg, sop, &in);
            CHECK(r == 0 || r == -EUCLEAN || r == -ENOENT);
            corrupt += r == -EUCLEAN;
        }
        CHECK_MSG(corrupt > 0, "no look-up saw the corruption");
        CHECK(ledger_stats(lg, &st) == 0 && st.broken);
        /* A broken ledger writes nothing more, and says so. */
        CHECK(record(lg, "1.60.2.1", "1.60", "1.60.2", T0, LEDGER_STORED) == 0);
        CHECK(ledger_flush(lg, 10000) == -EUCLEAN);
        CHECK(ledger_stats(lg, &st) == 0 && st.failed == 1 &&
              st.last_error == -EUCLEAN);
        ledger_close(lg);
    }

    /* With CHECK (and RECOVER) the open finds it and starts afresh. */
    p.flags = LEDGER_OPEN_CHECK | LEDGER_OPEN_RECOVER;
    lg = open_with("pages.db", &p);
    if (lg != NULL) {
        CHECK(ledger_moved_aside(lg) != NULL);
        CHECK(study_deliveries(lg, "1.60") == 0);
        ledger_close(lg);
    }
    /* ledger_move_aside() for a daemon that found it broken later. */
    {
        char aside[4200];

        CHECK(ledger_move_aside(path, aside, sizeof(aside), err, sizeof(err)) ==
              0);
        CHECK(stat(path, &stt) < 0 && errno == ENOENT);
        CHECK(stat(aside, &stt) == 0);
        CHECK(ledger_move_aside(path, aside, sizeof(aside), err, sizeof(err)) ==
              -ENOENT);
    }
}

/* Child: tries to create a ledger in @dir (as nobody when run as root). */
static int child_unwritable(const char *dir)
{
    struct ledger_params p = { 0 };
    struct ledger *lg = NULL;
    char path[300];
    int r;

    if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
        return 2;
    /* A new ledger there, then an existing one (the file is ours). */
    for (int k = 0; k < 2; k++) {
        (void)snprintf(path, sizeof(path), "%s/%s", dir,
                       k == 0 ? "ledger.db" : "existing.db");
        p.path = path;
        r = ledger_open(&p, &lg, err, sizeof(err));
        fprintf(stderr, "child: %d %s\n", r, err);
        if (r != -EACCES || strstr(err, path) == NULL ||
            strstr(err, "cannot write in its directory") == NULL ||
            strstr(err, strerror(EACCES)) == NULL)
            return 1;
    }
    return 0;
}

static void test_unwritable(void)
{
    struct ledger_params p = { 0 };
    struct ledger *lg = NULL;
    char dir[256];
    char path[300];
    int code;

    path_in(dir, sizeof(dir), "readonly-dir");
    CHECK(mkdir(dir, 0755) == 0);
    (void)snprintf(path, sizeof(path), "%s/existing.db", dir);
    p.path = path;
    CHECK(ledger_open(&p, &lg, err, sizeof(err)) == 0);
    ledger_close(lg);
    lg = NULL;
    if (geteuid() == 0)
        CHECK(chown(path, 65534, 65534) == 0);
    else
        CHECK(chmod(dir, 0555) == 0);
    code = wait_child(spawn_child("--child-unwritable", dir, -1));
    CHECK_MSG(code == 0, "unwritable directory: child exit %d", code);
    (void)chmod(dir, 0755);

    /* No such directory; a read-only open of a missing file. */
    p.flags = 0;
    (void)snprintf(path, sizeof(path), "%s/missing/ledger.db", root);
    p.path = path;
    CHECK(ledger_open(&p, &lg, err, sizeof(err)) == -ENOENT && lg == NULL);
    CHECK(strstr(err, path) != NULL);
    p.flags = LEDGER_OPEN_READONLY;
    path_in(path, sizeof(path), "never-created.db");
    CHECK(ledger_open(&p, &lg, err, sizeof(err)) == -ENOENT);
    CHECK(strstr(err, "no ledger") != NULL);
    /* A symbolic link is refused. */
    path_in(path, sizeof(path), "link.db");
    CHECK(symlink("basic.db", path) == 0);
    p.flags = 0;
    CHECK(ledger_open(&p, &lg, err, sizeof(err)) == -ELOOP);
}

/* A full disk: the rows are lost and counted, reads go on, and writing
 * resumes once there is room again (root only: a small tmpfs). */
static void test_disk_full(void)
{
    struct ledger_params p = { .group_wait_ms = LEDGER_GROUP_WAIT_NONE };
    struct ledger_instance in;
    struct ledger_stats st;
    struct ledger *lg = NULL;
    char dir[256];
    char path[300];
    char cmd[400];
    char sop[80];
    int r = 0;
    unsigned b;

    if (geteuid() != 0) {
        fprintf(stderr, "skip disk full: needs root for a small tmpfs\n");
        return;
    }
    path_in(dir, sizeof(dir), "small-fs");
    CHECK(mkdir(dir, 0700) == 0);
    (void)snprintf(cmd, sizeof(cmd),
                   "mount -t tmpfs -o size=1m,mode=0700 tmpfs '%s'", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "skip disk full: cannot mount a tmpfs here\n");
        return;
    }
    (void)snprintf(path, sizeof(path), "%s/ledger.db", dir);
    p.path = path;
    CHECK(ledger_open(&p, &lg, err, sizeof(err)) == 0);
    for (b = 0; lg != NULL && b < 200; b++) {
        for (unsigned i = 0; i < 100; i++) {
            uid(sop, sizeof(sop), "full-disk", b * 100 + i);
            CHECK(record(lg, sop, "1.70", "1.70.1", T0 + b * 100 + i,
                         LEDGER_STORED) == 0);
        }
        r = ledger_flush(lg, 60000);
        if (r < 0)
            break;
    }
    CHECK_MSG(r == -ENOSPC, "flush %d after %u batches", r, b);
    if (lg != NULL) {
        CHECK(ledger_stats(lg, &st) == 0 && st.failed > 0 &&
              st.last_error == -ENOSPC && !st.broken);
        uid(sop, sizeof(sop), "full-disk", 0);
        CHECK(ledger_find_instance(lg, sop, &in) == 0);
        (void)snprintf(cmd, sizeof(cmd), "mount -o remount,size=16m '%s'", dir);
        CHECK(system(cmd) == 0);
        CHECK(record(lg, "1.70.2.1", "1.70", "1.70.2", T0, LEDGER_STORED) == 0);
        CHECK(ledger_flush(lg, 60000) == 0);
        CHECK(ledger_find_instance(lg, "1.70.2.1", &in) == 0);
        ledger_close(lg);
    }
    (void)snprintf(cmd, sizeof(cmd), "umount '%s'", dir);
    CHECK(system(cmd) == 0);
}

/* ledger_check_file(): removed, replaced, overwritten, a read-only or
 * NULL handle, and a file that is fine. */
static void test_check_file(void)
{
    char path[256];
    char moved[300];
    struct ledger *lg = open_fast("check.db");
    struct ledger_params rp = { .flags = LEDGER_OPEN_READONLY };
    struct ledger *ro = NULL;
    int fd;

    if (lg == NULL)
        return;
    path_in(path, sizeof(path), "check.db");
    CHECK(record(lg, "1.2.3.1", "1.2.3", "1.2.3.9", T0, LEDGER_STORED) == 0);
    CHECK(ledger_flush(lg, 5000) == 0);
    CHECK_MSG(ledger_check_file(lg, err, sizeof(err)) == 0, "%s", err);
    rp.path = path;
    CHECK(ledger_open(&rp, &ro, err, sizeof(err)) == 0);
    CHECK(ledger_check_file(ro, err, sizeof(err)) == -ENODEV);
    ledger_close(ro);
    CHECK(ledger_check_file(NULL, err, sizeof(err)) == -ENODEV);
    /* chmod: the open handle still works, nothing to do. */
    CHECK(chmod(path, 0) == 0);
    CHECK(ledger_check_file(lg, err, sizeof(err)) == 0);
    CHECK(chmod(path, 0600) == 0);

    /* Overwritten in place: the header is not SQLite's. */
    fd = open(path, O_WRONLY);
    CHECK(fd >= 0 && pwrite(fd, "garbage garbage garbage", 23, 0) == 23);
    if (fd >= 0)
        close(fd);
    CHECK(ledger_check_file(lg, err, sizeof(err)) == -EUCLEAN);
    CHECK(strstr(err, "overwritten") != NULL);

    /* Replaced by another file, then removed. */
    (void)snprintf(moved, sizeof(moved), "%s.old", path);
    CHECK(rename(path, moved) == 0);
    CHECK(ledger_check_file(lg, err, sizeof(err)) == -ENOENT);
    CHECK(strstr(err, "removed") != NULL);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0);
    if (fd >= 0)
        close(fd);
    CHECK(ledger_check_file(lg, err, sizeof(err)) == -ESTALE);
    CHECK(unlink(path) == 0);
    CHECK(ledger_check_file(lg, err, sizeof(err)) == -ENOENT);
    ledger_close(lg);
    (void)unlink(moved);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--child-reader") == 0)
        return child_reader(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--child-writer") == 0)
        return child_writer(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--child-unwritable") == 0)
        return child_unwritable(argv[2]);
    (void)snprintf(root, sizeof(root), "/tmp/test_ledger.XXXXXX");
    if (mkdtemp(root) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_uid_packing();
    test_insert_lookup();
    test_duplicates_and_study();
    test_same_millisecond();
    test_text_values();
    test_invalid_input();
    test_commit_history();
    test_reentry();
    test_prune();
    test_prune_interleaves();
    test_queue_full();
    test_write_failure();
    test_concurrency();
    test_kill9();
    test_garbage_file();
    test_foreign_and_newer();
    test_corrupt_pages();
    test_unwritable();
    test_disk_full();
    test_check_file();
    {
        char cmd[128];

        (void)snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", root);
    }
    return tap_done();
}
