/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_retrieve - the C-MOVE/C-GET provider (bridge/retrieve.h) without a
 * network: retrieve_plan() table-driven (every level, both models, every
 * refusal); the handler with a scripted QIDO-RS server (paging with
 * limit and offset, de-duplication, includefield, every listing failure
 * and its status, max_parallel -> A701, zero matches), a WADO-RS server
 * that is not there (every listed instance handed out once, as failed,
 * with the reason), the spool's undelivered instances served from a
 * hard link; and the config keys of issue 15 with their params.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "bridge/params.h"
#include "bridge/retrieve.h"
#include "config/config.h"
#include "dicom/dataset.h"
#include "scp/scp.h"
#include "spool/spool.h"
#include "tap.h"

#define STUDY "1.2.826.0.1.3680043.10.1"
#define SERIES_A "1.2.826.0.1.3680043.10.1.1"
#define SERIES_B "1.2.826.0.1.3680043.10.1.2"
#define CT "1.2.840.10008.5.1.4.1.1.2"
#define MR "1.2.840.10008.5.1.4.1.1.4"

/* ------------------------------------------------------------------ */
/* Identifiers and plans                                               */
/* ------------------------------------------------------------------ */

static struct ds *ident(const char *level, const char *patient,
                        const char *study, const char *series, const char *sop)
{
    struct ds *ds = ds_new();

    if (level != NULL)
        ds_put(ds, DS_TAG(0x0008, 0x0052), "CS", level);
    if (patient != NULL)
        ds_put(ds, DS_TAG(0x0010, 0x0020), "LO", patient);
    if (study != NULL)
        ds_put(ds, DS_TAG(0x0020, 0x000D), "UI", study);
    if (series != NULL)
        ds_put(ds, DS_TAG(0x0020, 0x000E), "UI", series);
    if (sop != NULL)
        ds_put(ds, DS_TAG(0x0008, 0x0018), "UI", sop);
    return ds;
}

struct plan_case {
    enum scp_find_model model;
    const char *level, *patient, *study, *series, *sop;
    int result;
    size_t resources;
    const char *first_resource; /* or the error's words */
};

static void test_plans(void)
{
    static const struct plan_case cases[] = {
        { SCP_FIND_STUDY_ROOT, "STUDY", NULL, STUDY, NULL, NULL, 0, 1,
          "/studies/" STUDY "/instances" },
        { SCP_FIND_STUDY_ROOT, "STUDY ", NULL, STUDY "\\1.2.3", NULL, NULL, 0,
          2, "/studies/" STUDY "/instances" },
        { SCP_FIND_PATIENT_ROOT, "STUDY", "P1", STUDY, NULL, NULL, 0, 1,
          "/studies/" STUDY "/instances" },
        { SCP_FIND_STUDY_ROOT, "SERIES", NULL, STUDY, SERIES_A "\\" SERIES_B,
          NULL, 0, 2, "/studies/" STUDY "/series/" SERIES_A "/instances" },
        { SCP_FIND_STUDY_ROOT, "IMAGE", NULL, STUDY, SERIES_A, "1.2.3\\1.2.4",
          0, 1, "/studies/" STUDY "/series/" SERIES_A "/instances" },
        { SCP_FIND_PATIENT_ROOT, "PATIENT", "P1", NULL, NULL, NULL, 0, 1,
          "/instances" },
        /* Refusals. */
        { SCP_FIND_STUDY_ROOT, "PATIENT", "P1", NULL, NULL, NULL, -EINVAL, 0,
          "not valid" },
        { SCP_FIND_STUDY_ROOT, NULL, NULL, STUDY, NULL, NULL, -EINVAL, 0,
          "missing" },
        { SCP_FIND_STUDY_ROOT, "FRAME", NULL, STUDY, NULL, NULL, -EINVAL, 0,
          "not valid" },
        { SCP_FIND_STUDY_ROOT, "STUDY", NULL, NULL, NULL, NULL, -EINVAL, 0,
          "Study Instance UIDs" },
        { SCP_FIND_STUDY_ROOT, "STUDY", NULL, "1.2.03", NULL, NULL, -EINVAL, 0,
          "Study Instance UIDs" },
        { SCP_FIND_STUDY_ROOT, "STUDY", NULL, "1.2.*", NULL, NULL, -EINVAL, 0,
          "Study Instance UIDs" },
        { SCP_FIND_STUDY_ROOT, "SERIES", NULL, STUDY "\\1.2.3", SERIES_A, NULL,
          -EINVAL, 0, "one Study Instance UID" },
        { SCP_FIND_STUDY_ROOT, "SERIES", NULL, STUDY, NULL, NULL, -EINVAL, 0,
          "Series Instance UIDs" },
        { SCP_FIND_STUDY_ROOT, "IMAGE", NULL, STUDY, SERIES_A "\\" SERIES_B,
          "1.2.3", -EINVAL, 0, "one Series Instance UID" },
        { SCP_FIND_STUDY_ROOT, "IMAGE", NULL, STUDY, SERIES_A, NULL, -EINVAL, 0,
          "SOP Instance UIDs" },
        { SCP_FIND_PATIENT_ROOT, "PATIENT", NULL, NULL, NULL, NULL, -EINVAL, 0,
          "one Patient ID" },
        { SCP_FIND_PATIENT_ROOT, "PATIENT", "P*", NULL, NULL, NULL, -EINVAL, 0,
          "one Patient ID" },
        { SCP_FIND_PATIENT_ROOT, "PATIENT", "P1\\P2", NULL, NULL, NULL, -EINVAL,
          0, "one Patient ID" },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct plan_case *c = &cases[i];
        struct ds *id =
            ident(c->level, c->patient, c->study, c->series, c->sop);
        struct retrieve_plan plan;
        char err[256] = "";
        int r = retrieve_plan(id, c->model, &plan, err, sizeof(err));

        CHECK_MSG(r == c->result, "case %zu: %d", i, r);
        if (r == 0) {
            CHECK_MSG(plan.resource_count == c->resources, "case %zu: %zu", i,
                      plan.resource_count);
            CHECK_MSG(plan.resource_count > 0 &&
                          strcmp(plan.resources[0], c->first_resource) == 0,
                      "case %zu: %s", i,
                      plan.resource_count > 0 ? plan.resources[0] : "-");
        } else {
            CHECK_MSG(strstr(err, c->first_resource) != NULL, "case %zu: '%s'",
                      i, err);
        }
        retrieve_plan_free(&plan);
        ds_free(id);
    }
}

/* ------------------------------------------------------------------ */
/* A scripted QIDO-RS server                                           */
/* ------------------------------------------------------------------ */

struct qido_script {
    int fail;         /* 0, or what to play: see below */
    size_t instances; /* in the listing */
    size_t dup_every; /* every Nth result repeats the one before */
    size_t page;      /* the server's page size (it honours limit) */
    /* Patient ID of instance k: pids[k % pid_count]; none: not listed. */
    const char *const *pids;
    size_t pid_count;
    const char *study; /* Study UID listed for odd k (NULL: STUDY) */
    int bad; /* instance 0: 1 a 66-character Series UID, 2 no valid SOP UID */
    char paths[16][512];
    size_t calls;
};

static char *instance_json(const struct qido_script *q, size_t k,
                           const char *series)
{
    char *out = NULL;
    char pid[128] = "";

    if (q->pid_count > 0)
        snprintf(pid, sizeof(pid),
                 ",\"00100020\":{\"vr\":\"LO\",\"Value\":[\"%s\"]}",
                 q->pids[k % q->pid_count]);
    if (k == 0 && q->bad == 1)
        series =
            "1.2.826.0.1.3680043.10.1.1.11111111111111111111111111111111111"
            "111";
    if (asprintf(&out,
                 "{\"00080016\":{\"vr\":\"UI\",\"Value\":[\"%s\"]},"
                 "\"00080018\":{\"vr\":\"UI\",\"Value\":[\"1.2.%s%zu\"]},"
                 "\"0020000D\":{\"vr\":\"UI\",\"Value\":[\"%s\"]},"
                 "\"0020000E\":{\"vr\":\"UI\",\"Value\":[\"%s\"]}%s}",
                 k % 2 ? MR : CT, k == 0 && q->bad == 2 ? "x." : "3.", k + 1,
                 q->study != NULL && k % 2 ? q->study : STUDY, series, pid) < 0)
        return NULL;
    return out;
}

static int fake_qido(void *ctx, const char *path_and_query,
                     struct find_reply *reply)
{
    struct qido_script *q = ctx;
    const char *off = strstr(path_and_query, "offset=");
    const char *lim = strstr(path_and_query, "limit=");
    size_t offset = off != NULL ? (size_t)strtoul(off + 7, NULL, 10) : 0;
    size_t limit = lim != NULL ? (size_t)strtoul(lim + 6, NULL, 10) : 0;
    size_t page = limit > 0 && limit < q->page ? limit : q->page;
    size_t cap = 64, len = 0;
    char *body;

    memset(reply, 0, sizeof(*reply));
    if (q->calls < 16)
        snprintf(q->paths[q->calls], sizeof(q->paths[0]), "%s", path_and_query);
    q->calls++;
    if (q->fail == 1) { /* no answer */
        snprintf(reply->error, sizeof(reply->error), "refused");
        return -ECONNREFUSED;
    }
    if (q->fail == 2) { /* no token */
        reply->token_failed = true;
        return -EACCES;
    }
    if (q->fail == 3) { /* 500 */
        reply->http_status = 500;
        return 0;
    }
    reply->http_status = 200;
    if (q->fail == 4) { /* not JSON */
        reply->body = strdup("<html>");
        reply->body_len = 6;
        return 0;
    }
    body = malloc(cap);
    body[len++] = '[';
    for (size_t i = 0; i < page && offset + i < q->instances; i++) {
        size_t k = offset + i;
        if (q->dup_every > 0 && k > 0 && k % q->dup_every == 0)
            k--;
        char *one =
            instance_json(q, k, k < q->instances / 2 ? SERIES_A : SERIES_B);
        size_t n = strlen(one);
        while (len + n + 4 > cap) {
            cap *= 2;
            body = realloc(body, cap);
        }
        if (i > 0)
            body[len++] = ',';
        memcpy(body + len, one, n);
        len += n;
        free(one);
    }
    body[len++] = ']';
    body[len] = '\0';
    reply->body = body;
    reply->body_len = len;
    return 0;
}

/* ------------------------------------------------------------------ */
/* A spool with one undelivered instance                               */
/* ------------------------------------------------------------------ */

static void put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

/* Appends an explicit VR LE element with a short value. */
static size_t element(unsigned char *p, unsigned group, unsigned elem,
                      const char *vr, const char *value, char pad)
{
    size_t n = strlen(value), padded = n + (n & 1);

    put16(p, group);
    put16(p + 2, elem);
    p[4] = (unsigned char)vr[0];
    p[5] = (unsigned char)vr[1];
    put16(p + 6, (unsigned)padded);
    memcpy(p + 8, value, n);
    if (padded > n)
        p[8 + n] = (unsigned char)pad;
    return 8 + padded;
}

static size_t make_part10(unsigned char *buf, const char *sop)
{
    unsigned char meta[128];
    size_t m = 0, n = 0;

    m += element(meta + m, 0x0002, 0x0010, "UI", "1.2.840.10008.1.2.1", 0);
    memset(buf, 0, 128);
    memcpy(buf + 128, "DICM", 4);
    n = 132;
    put16(buf + n, 2);
    put16(buf + n + 2, 0);
    buf[n + 4] = 'U';
    buf[n + 5] = 'L';
    put16(buf + n + 6, 4);
    buf[n + 8] = (unsigned char)m;
    buf[n + 9] = buf[n + 10] = buf[n + 11] = 0;
    n += 12;
    memcpy(buf + n, meta, m);
    n += m;
    n += element(buf + n, 0x0008, 0x0016, "UI", CT, 0);
    n += element(buf + n, 0x0008, 0x0018, "UI", sop, 0);
    n += element(buf + n, 0x0010, 0x0020, "LO", "P1", ' ');
    n += element(buf + n, 0x0020, 0x000D, "UI", STUDY, 0);
    n += element(buf + n, 0x0020, 0x000E, "UI", SERIES_A, 0);
    return n;
}

static char spool_dir_path[256];

static struct spool *spool_with_instance(const char *sop)
{
    struct spool *spool = NULL;
    unsigned char buf[1024];
    char id[SPOOL_ID_MAX];
    char err[256];
    int fd = -1;
    size_t n = make_part10(buf, sop);

    snprintf(spool_dir_path, sizeof(spool_dir_path),
             "/tmp/test_retrieve.XXXXXX");
    CHECK(mkdtemp(spool_dir_path) != NULL);
    strcat(spool_dir_path, "/spool");
    CHECK(spool_open(spool_dir_path, SPOOL_OPEN_OWNER, &spool, err,
                     sizeof(err)) == 0);
    CHECK(spool_tmp_create(spool, id, &fd, err, sizeof(err)) == 0);
    CHECK(spool_write_all(fd, buf, n) == 0);
    CHECK(spool_commit(spool, id, fd, err, sizeof(err)) == 0);
    return spool;
}

static unsigned count_dir(const char *dir)
{
    char cmd[512];
    unsigned n = 0;

    snprintf(cmd, sizeof(cmd), "ls -A %s | wc -l", dir);
    FILE *p = popen(cmd, "r");
    if (p != NULL) {
        if (fscanf(p, "%u", &n) != 1)
            n = 0;
        pclose(p);
    }
    return n;
}

static void remove_tree(void)
{
    char cmd[600];
    char *slash = strrchr(spool_dir_path, '/');

    *slash = '\0';
    snprintf(cmd, sizeof(cmd), "rm -rf %s", spool_dir_path);
    CHECK(system(cmd) == 0);
}

/* ------------------------------------------------------------------ */
/* The handler                                                         */
/* ------------------------------------------------------------------ */

static struct retrieve_params base_params(struct spool *spool,
                                          struct qido_script *q)
{
    struct retrieve_params p;

    memset(&p, 0, sizeof(p));
    p.spool = spool;
    p.max_temp_bytes = 1 << 20;
    p.max_parallel = 1;
    p.page_size = 200;
    p.qido = fake_qido;
    p.qido_ctx = q;
    p.base_url = "http://127.0.0.1:1/dicom-web"; /* nobody listens */
    p.timeout_s = 5;
    return p;
}

/* Drains a session: counts of files and failures, each UID once. */
static void drain(const struct scp_retrieve_handler *h, void *session,
                  unsigned total, unsigned *ret_files, unsigned *ret_failed,
                  const char *want_why)
{
    unsigned files = 0, failed = 0, spins = 0;

    for (;;) {
        struct scp_retrieve_item item;
        int r = h->next(session, 200, &item);
        if (r == 0)
            break;
        if (r == -EAGAIN) {
            CHECK_MSG(++spins < 300, "next() waits forever");
            if (spins >= 300)
                break;
            continue;
        }
        CHECK(r == 1);
        CHECK(item.sop_instance_uid != NULL && item.sop_instance_uid[0]);
        if (item.path != NULL) {
            files++;
            CHECK(access(item.path, R_OK) == 0);
        } else {
            failed++;
            CHECK_MSG(want_why == NULL || strstr(item.why, want_why) != NULL,
                      "why: %s", item.why);
        }
        h->release(session, &item);
    }
    CHECK_MSG(files + failed == total, "%u + %u of %u", files, failed, total);
    *ret_files = files;
    *ret_failed = failed;
}

static void test_listing(void)
{
    struct spool *spool = spool_with_instance("1.2.3.999");
    struct qido_script q = { .instances = 450, .dup_every = 100, .page = 1000 };
    struct retrieve_params p = base_params(spool, &q);
    struct retrieve_service *svc = retrieve_service_new(&p);
    struct scp_retrieve_handler h;
    struct scp_retrieve_info info;
    struct scp_retrieve_status st;
    unsigned files = 0, failed = 0;
    char tmp[300];

    retrieve_handler_init(svc, &h);
    struct ds *id = ident("STUDY", NULL, STUDY, NULL, NULL);
    void *s = h.begin(h.ctx, SCP_RETRIEVE_MOVE, SCP_FIND_STUDY_ROOT, id,
                      "MOVESCU", "DEST", &info, &st);
    CHECK(s != NULL);
    /* 450 results, 4 repeats (100, 200, 300, 400), and the spool's. */
    CHECK_MSG(info.total == 447, "total %u", info.total);
    CHECK(info.sop_class_count == 2);
    CHECK(q.calls == 3);
    CHECK(strstr(q.paths[0], "/studies/" STUDY "/instances?") == q.paths[0]);
    CHECK(strstr(q.paths[0], "includefield=00080016") != NULL);
    CHECK(strstr(q.paths[0], "limit=200") != NULL);
    CHECK(strstr(q.paths[0], "offset") == NULL);
    CHECK(strstr(q.paths[1], "offset=200") != NULL);
    CHECK(strstr(q.paths[2], "offset=400") != NULL);
    CHECK(retrieve_service_running(svc) == 1);

    /* max_parallel 1: a second operation is refused with A701. */
    struct scp_retrieve_info info2;
    void *s2 = h.begin(h.ctx, SCP_RETRIEVE_GET, SCP_FIND_STUDY_ROOT, id,
                       "GETSCU", NULL, &info2, &st);
    CHECK(s2 == NULL && st.status == 0xA701);
    CHECK(strstr(st.comment, "retrieve.max_parallel") != NULL);

    /* The spool's instance first (a file), the rest fail: no server. */
    struct scp_retrieve_item first;
    CHECK(h.next(s, 1000, &first) == 1);
    CHECK(first.path != NULL &&
          strcmp(first.sop_instance_uid, "1.2.3.999") == 0);
    CHECK(strcmp(first.transfer_syntax, "1.2.840.10008.1.2.1") == 0);
    CHECK(strcmp(first.sop_class_uid, CT) == 0);
    CHECK(first.size > 132);
    h.release(s, &first);
    drain(&h, s, info.total - 1, &files, &failed, "WADO-RS transport");
    CHECK(files == 0 && failed == info.total - 1);
    h.end(s);
    CHECK(retrieve_service_running(svc) == 0);
    snprintf(tmp, sizeof(tmp), "%s/tmp", spool_dir_path);
    CHECK_MSG(count_dir(tmp) == 0, "tmp/ holds %u", count_dir(tmp));
    /* The spool entry itself stays for the uploader. */
    snprintf(tmp, sizeof(tmp), "%s/incoming", spool_dir_path);
    CHECK(count_dir(tmp) == 1);
    ds_free(id);

    /* IMAGE level: only the SOP Instance UIDs asked (one not listed). */
    q.calls = 0;
    id = ident("IMAGE", NULL, STUDY, SERIES_A, "1.2.3.5\\1.2.3.7\\9.9.9");
    s = h.begin(h.ctx, SCP_RETRIEVE_GET, SCP_FIND_STUDY_ROOT, id, "GETSCU",
                NULL, &info, &st);
    CHECK(s != NULL && info.total == 2);
    drain(&h, s, info.total, &files, &failed, NULL);
    h.end(s);
    ds_free(id);

    /* Cancel: what remains is handed out as failed, quickly. */
    id = ident("STUDY", NULL, STUDY, NULL, NULL);
    s = h.begin(h.ctx, SCP_RETRIEVE_MOVE, SCP_FIND_STUDY_ROOT, id, "MOVESCU",
                "DEST", &info, &st);
    CHECK(s != NULL);
    h.cancel(s);
    drain(&h, s, info.total, &files, &failed, NULL);
    CHECK(failed >= info.total - 1);
    h.end(s);
    ds_free(id);

    retrieve_service_free(svc);
    spool_close(spool);
    remove_tree();
}

struct fail_case {
    int fail;
    uint16_t status;
    const char *words;
};

static void test_listing_failures(void)
{
    static const struct fail_case cases[] = {
        { 1, 0xC001, "unreachable" },
        { 2, 0xC004, "no token" },
        { 3, 0xC002, "HTTP 500" },
        { 4, 0xC003, "not DICOM JSON" },
    };
    struct spool *spool = spool_with_instance("1.2.3.999");

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct qido_script q = { .fail = cases[i].fail, .page = 200 };
        struct retrieve_params p = base_params(spool, &q);
        struct retrieve_service *svc = retrieve_service_new(&p);
        struct scp_retrieve_handler h;
        struct scp_retrieve_info info;
        struct scp_retrieve_status st;
        struct ds *id = ident("SERIES", NULL, STUDY, SERIES_B, NULL);

        retrieve_handler_init(svc, &h);
        void *s = h.begin(h.ctx, SCP_RETRIEVE_MOVE, SCP_FIND_STUDY_ROOT, id,
                          "MOVESCU", "DEST", &info, &st);
        CHECK_MSG(s == NULL && st.status == cases[i].status, "case %zu: %04x",
                  i, st.status);
        CHECK_MSG(strstr(st.comment, cases[i].words) != NULL, "case %zu: %s", i,
                  st.comment);
        CHECK(retrieve_service_running(svc) == 0);
        ds_free(id);
        retrieve_service_free(svc);
    }

    /* Zero matches: a session with nothing to hand out. */
    {
        struct qido_script q = { .instances = 0, .page = 200 };
        struct retrieve_params p = base_params(spool, &q);
        struct retrieve_service *svc = retrieve_service_new(&p);
        struct scp_retrieve_handler h;
        struct scp_retrieve_info info;
        struct scp_retrieve_status st;
        struct scp_retrieve_item item;
        struct ds *id = ident("SERIES", NULL, STUDY, SERIES_B, NULL);

        retrieve_handler_init(svc, &h);
        void *s = h.begin(h.ctx, SCP_RETRIEVE_MOVE, SCP_FIND_STUDY_ROOT, id,
                          "MOVESCU", "DEST", &info, &st);
        CHECK(s != NULL && info.total == 0);
        CHECK(h.next(s, 0, &item) == 0);
        h.end(s);
        ds_free(id);
        retrieve_service_free(svc);
    }
    /* A bad identifier: A900 with the reason. */
    {
        struct qido_script q = { .page = 200 };
        struct retrieve_params p = base_params(spool, &q);
        struct retrieve_service *svc = retrieve_service_new(&p);
        struct scp_retrieve_handler h;
        struct scp_retrieve_info info;
        struct scp_retrieve_status st;
        struct ds *id = ident("SERIES", NULL, STUDY, NULL, NULL);

        retrieve_handler_init(svc, &h);
        CHECK(h.begin(h.ctx, SCP_RETRIEVE_GET, SCP_FIND_STUDY_ROOT, id,
                      "GETSCU", NULL, &info, &st) == NULL);
        CHECK(st.status == 0xA900 && strstr(st.comment, "Series") != NULL);
        CHECK(q.calls == 0);
        ds_free(id);
        retrieve_service_free(svc);
    }
    spool_close(spool);
    remove_tree();
}

/* PATIENT level: /instances?PatientID=, '^' encoded unless the server
 * takes it raw (query.profile orthanc). */
static void test_patient_level(void)
{
    struct spool *spool = spool_with_instance("1.2.3.999");

    for (int raw = 0; raw < 2; raw++) {
        struct qido_script q = { .instances = 0, .page = 200 };
        struct retrieve_params p = base_params(spool, &q);
        struct retrieve_service *svc;
        struct scp_retrieve_handler h;
        struct scp_retrieve_info info;
        struct scp_retrieve_status st;
        struct ds *id = ident("PATIENT", "DOE^J", NULL, NULL, NULL);

        p.qido_raw_caret = raw == 1;
        svc = retrieve_service_new(&p);
        retrieve_handler_init(svc, &h);
        void *s = h.begin(h.ctx, SCP_RETRIEVE_MOVE, SCP_FIND_PATIENT_ROOT, id,
                          "MOVESCU", "DEST", &info, &st);
        CHECK(s != NULL && info.total == 0);
        CHECK(q.calls == 1);
        CHECK(strncmp(q.paths[0], "/instances?", 11) == 0);
        CHECK_MSG(strstr(q.paths[0], raw ? "PatientID=DOE^J&"
                                         : "PatientID=DOE%5EJ&") != NULL,
                  "%s", q.paths[0]);
        CHECK(strstr(q.paths[0], "includefield=0020000D") != NULL);
        if (s != NULL)
            h.end(s);
        ds_free(id);
        retrieve_service_free(svc);
    }
    spool_close(spool);
    remove_tree();
}

/* One listing of @id: the total, the first QIDO-RS path in @ret_path. */
static unsigned listed_total(struct qido_script *q, bool raw, unsigned page,
                             enum scp_find_model model, struct ds *id,
                             char *ret_path, size_t path_len)
{
    struct retrieve_params p = base_params(NULL, q);
    struct retrieve_service *svc;
    struct scp_retrieve_handler h;
    struct scp_retrieve_info info;
    struct scp_retrieve_status st;
    unsigned total = 9999;

    p.spool = spool_with_instance("1.2.3.999");
    p.qido_raw_caret = raw;
    if (page > 0)
        p.page_size = page;
    q->calls = 0;
    svc = retrieve_service_new(&p);
    retrieve_handler_init(svc, &h);
    void *s = h.begin(h.ctx, SCP_RETRIEVE_MOVE, model, id, "MOVESCU", "DEST",
                      &info, &st);
    CHECK_MSG(s != NULL, "begin: %04x %s", st.status, st.comment);
    if (s != NULL) {
        unsigned files = 0, failed = 0;
        total = info.total;
        drain(&h, s, info.total, &files, &failed, NULL);
        h.end(s);
    }
    snprintf(ret_path, path_len, "%s", q->paths[0]);
    retrieve_service_free(svc);
    spool_close(p.spool);
    remove_tree();
    ds_free(id);
    return total;
}

/* §4: the server's match is re-checked: Patient ID exact and
 * case-sensitive (Azure folds case), Study and Series UIDs exact. */
static void test_rematch(void)
{
    static const char *const mixed[] = { "RTCASE1", "rtcase1" };
    static const char *const padded[] = { "RTCASE1 ", "RTCASE11" };
    struct qido_script q = { .instances = 6, .page = 200 };
    char path[512];
    unsigned n;

    q.pids = mixed;
    q.pid_count = 2;
    n = listed_total(&q, false, 0, SCP_FIND_PATIENT_ROOT,
                     ident("PATIENT", "RTCASE1", NULL, NULL, NULL), path,
                     sizeof(path));
    CHECK_MSG(n == 3, "case-folded match kept: %u", n);
    CHECK(strstr(path, "includefield=00100020") != NULL);
    CHECK(strstr(path, "PatientID=RTCASE1&") != NULL);
    n = listed_total(&q, false, 0, SCP_FIND_PATIENT_ROOT,
                     ident("PATIENT", "rtcase1", NULL, NULL, NULL), path,
                     sizeof(path));
    CHECK(n == 3);
    /* Trailing spaces are not significant; a longer ID is another. */
    q.pids = padded;
    n = listed_total(&q, false, 0, SCP_FIND_PATIENT_ROOT,
                     ident("PATIENT", "RTCASE1", NULL, NULL, NULL), path,
                     sizeof(path));
    CHECK_MSG(n == 3, "padded: %u", n);
    /* No Patient ID listed: the server matched the exact value. */
    q.pid_count = 0;
    n = listed_total(&q, false, 0, SCP_FIND_PATIENT_ROOT,
                     ident("PATIENT", "RTCASE1", NULL, NULL, NULL), path,
                     sizeof(path));
    CHECK(n == 6);
    /* Pages of other patients' instances do not end the listing. */
    q.pids = mixed;
    q.pid_count = 2;
    static const char *const mostly_other[] = {
        "rtcase1", "rtcase1", "rtcase1", "rtcase1", "rtcase1", "RTCASE1"
    };
    q.pids = mostly_other;
    q.pid_count = 6;
    n = listed_total(&q, false, 2, SCP_FIND_PATIENT_ROOT,
                     ident("PATIENT", "RTCASE1", NULL, NULL, NULL), path,
                     sizeof(path));
    CHECK_MSG(n == 1 && q.calls == 4, "paged: %u in %zu", n, q.calls);
    /* A result of another study (server ignored the path): left out. */
    q.pid_count = 0;
    q.study = "1.2.826.0.1.3680043.10.77";
    n = listed_total(&q, false, 0, SCP_FIND_STUDY_ROOT,
                     ident("STUDY", NULL, STUDY, NULL, NULL), path,
                     sizeof(path));
    CHECK_MSG(n == 3 + 1, "other study: %u", n); /* + the spool's */
    n = listed_total(&q, false, 0, SCP_FIND_STUDY_ROOT,
                     ident("SERIES", NULL, STUDY, SERIES_A "\\" SERIES_B, NULL),
                     path, sizeof(path));
    CHECK_MSG(n == 3 + 1, "other study at SERIES: %u", n);
}

/* §5: Patient Root above PATIENT level, the identifier's Patient ID must
 * be the listed instances' (and the spool's, Patient ID "P1"): another
 * patient's study is zero sub-operations. */
static void test_patient_root_keys(void)
{
    static const char *const one[] = { "RTPAT1" };
    struct qido_script q = { .instances = 4, .page = 200 };
    char path[512];
    unsigned n;

    q.pids = one;
    q.pid_count = 1;
    n = listed_total(&q, false, 0, SCP_FIND_PATIENT_ROOT,
                     ident("STUDY", "RTOTHER", STUDY, NULL, NULL), path,
                     sizeof(path));
    CHECK_MSG(n == 0, "STUDY of another patient: %u", n);
    CHECK(strstr(path, "includefield=00100020") != NULL);
    CHECK(strstr(path, "PatientID") == NULL);
    n = listed_total(&q, false, 0, SCP_FIND_PATIENT_ROOT,
                     ident("SERIES", "RTOTHER", STUDY, SERIES_A, NULL), path,
                     sizeof(path));
    CHECK_MSG(n == 0, "SERIES of another patient: %u", n);
    n = listed_total(&q, false, 0, SCP_FIND_PATIENT_ROOT,
                     ident("IMAGE", "rtpat1", STUDY, SERIES_A, "1.2.3.1"), path,
                     sizeof(path));
    CHECK_MSG(n == 0, "IMAGE of another patient: %u", n);
    n = listed_total(&q, false, 0, SCP_FIND_PATIENT_ROOT,
                     ident("STUDY", "RTPAT1", STUDY, NULL, NULL), path,
                     sizeof(path));
    CHECK_MSG(n == 4, "the right patient: %u", n);
    /* Not listed: cannot be checked, so nothing is sent. */
    q.pid_count = 0;
    n = listed_total(&q, false, 0, SCP_FIND_PATIENT_ROOT,
                     ident("STUDY", "RTPAT1", STUDY, NULL, NULL), path,
                     sizeof(path));
    CHECK_MSG(n == 0, "no Patient ID listed: %u", n);
    /* No or an empty Patient ID: the study alone (and no includefield). */
    n = listed_total(&q, false, 0, SCP_FIND_PATIENT_ROOT,
                     ident("STUDY", "", STUDY, NULL, NULL), path, sizeof(path));
    CHECK(n == 4 + 1 && strstr(path, "00100020") == NULL);
    /* Study Root: the Patient ID is not a key of the model. */
    q.pid_count = 1;
    n = listed_total(&q, false, 0, SCP_FIND_STUDY_ROOT,
                     ident("STUDY", "RTOTHER", STUDY, NULL, NULL), path,
                     sizeof(path));
    CHECK(n == 4 + 1);
    /* The spool's instance (Patient ID "P1") is checked too. */
    n = listed_total(&q, false, 0, SCP_FIND_PATIENT_ROOT,
                     ident("STUDY", "P1", STUDY, NULL, NULL), path,
                     sizeof(path));
    CHECK_MSG(n == 1, "the spool's only: %u", n);
    /* A list or a wildcard is no unique key: A900. */
    static const char *const bad[] = { "RT*", "RT?", "A\\B" };
    for (size_t i = 0; i < 3; i++) {
        struct retrieve_plan plan;
        char err[128] = "";
        struct ds *id = ident("STUDY", bad[i], STUDY, NULL, NULL);
        CHECK(retrieve_plan(id, SCP_FIND_PATIENT_ROOT, &plan, err,
                            sizeof(err)) == -EINVAL);
        CHECK(strstr(err, "Patient ID") != NULL);
        ds_free(id);
    }
}

/* §3: a Patient ID the orthanc profile cannot send exactly is listed by a
 * wildcard prefix (or without filter) and matched exactly here. */
static void test_patient_chars(void)
{
    static const char *const near[] = { "RT+PAT&2", "RT+PAT&22", "RT",
                                        "rt+pat&2" };
    struct qido_script q = { .instances = 8, .page = 200 };
    char path[512];
    unsigned n;

    q.pids = near;
    q.pid_count = 4;
    n = listed_total(&q, true, 0, SCP_FIND_PATIENT_ROOT,
                     ident("PATIENT", "RT+PAT&2", NULL, NULL, NULL), path,
                     sizeof(path));
    CHECK_MSG(n == 2, "orthanc, + and &: %u", n);
    CHECK_MSG(strstr(path, "PatientID=RT*&") != NULL, "%s", path);
    /* Standard profile: percent-encoded, exact on the server and here. */
    n = listed_total(&q, false, 0, SCP_FIND_PATIENT_ROOT,
                     ident("PATIENT", "RT+PAT&2", NULL, NULL, NULL), path,
                     sizeof(path));
    CHECK(n == 2);
    CHECK_MSG(strstr(path, "PatientID=RT%2BPAT%262&") != NULL, "%s", path);
    /* Space, '%', '=' and non-ASCII: the prefix up to the first. */
    static const char *const others[] = { "RT^PAT 1", "RT%PAT=3",
                                          "RT\xc3\x89PAT4", "RT^PAT" };
    static const char *const prefix[] = { "PatientID=RT^PAT*&",
                                          "PatientID=RT*&", "PatientID=RT*&",
                                          "PatientID=RT^PAT&" };
    q.pids = others;
    for (size_t i = 0; i < 4; i++) {
        n = listed_total(&q, true, 0, SCP_FIND_PATIENT_ROOT,
                         ident("PATIENT", others[i], NULL, NULL, NULL), path,
                         sizeof(path));
        CHECK_MSG(n == 2, "case %zu: %u", i, n);
        CHECK_MSG(strstr(path, prefix[i]) != NULL, "case %zu: %s", i, path);
    }
    /* Nothing before the first such character: no filter at all; an
     * instance without a Patient ID cannot be checked and is left out. */
    static const char *const lead[] = { " X", "+X", "X" };
    q.pids = lead;
    q.pid_count = 3;
    n = listed_total(&q, true, 0, SCP_FIND_PATIENT_ROOT,
                     ident("PATIENT", "+X", NULL, NULL, NULL), path,
                     sizeof(path));
    CHECK_MSG(n == 3, "+X: %u", n);
    CHECK_MSG(strstr(path, "PatientID") == NULL, "%s", path);
    q.pid_count = 0;
    n = listed_total(&q, true, 0, SCP_FIND_PATIENT_ROOT,
                     ident("PATIENT", "+X", NULL, NULL, NULL), path,
                     sizeof(path));
    CHECK(n == 0);
}

/* §2: an instance listed with an invalid Series UID is a failed
 * sub-operation (named by its SOP Instance UID), not dropped; one
 * without a valid SOP Instance UID cannot be named and is left out. */
static void test_invalid_uids(void)
{
    struct spool *spool = spool_with_instance("9.9.9.999");
    struct qido_script q = { .instances = 3, .page = 200, .bad = 1 };
    struct retrieve_params p = base_params(spool, &q);
    struct retrieve_service *svc = retrieve_service_new(&p);
    struct scp_retrieve_handler h;
    struct scp_retrieve_info info;
    struct scp_retrieve_status st;
    unsigned files = 0, failed = 0, invalid = 0;
    struct ds *id =
        ident("STUDY", NULL, "1.2.826.0.1.3680043.10.5", NULL, NULL);
    void *s;

    q.study = NULL;
    retrieve_handler_init(svc, &h);
    /* The listing is of another study than the spool's: 3 instances. */
    s = h.begin(h.ctx, SCP_RETRIEVE_MOVE, SCP_FIND_STUDY_ROOT, id, "MOVESCU",
                "DEST", &info, &st);
    CHECK(s != NULL);
    CHECK_MSG(s == NULL || info.total == 0, "total %u", info.total);
    if (s != NULL)
        h.end(s);
    ds_free(id);
    /* The study listed: instance 1.2.3.1 has a 66-character Series UID. */
    id = ident("STUDY", NULL, STUDY, NULL, NULL);
    s = h.begin(h.ctx, SCP_RETRIEVE_MOVE, SCP_FIND_STUDY_ROOT, id, "MOVESCU",
                "DEST", &info, &st);
    CHECK(s != NULL && info.total == 3 + 1);
    for (unsigned spins = 0; s != NULL && spins < 300;) {
        struct scp_retrieve_item item;
        int r = h.next(s, 200, &item);
        if (r == 0)
            break;
        if (r == -EAGAIN) {
            spins++;
            continue;
        }
        if (item.path != NULL)
            files++;
        else
            failed++;
        if (item.path == NULL && strcmp(item.sop_instance_uid, "1.2.3.1") == 0)
            invalid += strstr(item.why, "invalid UID") != NULL;
        h.release(s, &item);
    }
    CHECK_MSG(files == 1 && failed == 3 && invalid == 1, "%u %u %u", files,
              failed, invalid);
    if (s != NULL)
        h.end(s);
    ds_free(id);
    retrieve_service_free(svc);
    spool_close(spool);
    remove_tree();
    /* No valid SOP Instance UID: left out (and logged), the rest stay. */
    q.bad = 2;
    char path[512];
    unsigned n = listed_total(&q, false, 0, SCP_FIND_STUDY_ROOT,
                              ident("STUDY", NULL, STUDY, NULL, NULL), path,
                              sizeof(path));
    CHECK_MSG(n == 2 + 1, "no SOP UID: %u", n); /* + the spool's */
}

/* ------------------------------------------------------------------ */
/* Configuration and params                                            */
/* ------------------------------------------------------------------ */

static struct cfg *parse(const char *text, char *err, size_t err_len)
{
    struct cfg *cfg = NULL;

    if (cfg_parse(text, strlen(text), &cfg, err, err_len) < 0)
        return NULL;
    return cfg;
}

static void test_config(void)
{
    char err[512];
    struct cfg *cfg = parse("{}", err, sizeof(err));

    CHECK(cfg != NULL);
    if (cfg != NULL) {
        CHECK(cfg->retrieve.max_temp_mb == 256);
        CHECK(cfg->retrieve.max_parallel == 4);
        cfg_free(cfg);
    }
    cfg = parse("{\"upload\": {\"url\": \"http://x/dicom-web\"}, "
                "\"retrieve\": {\"max_temp_mb\": 8, \"max_parallel\": 2}, "
                "\"dicom\": {\"allowed_callers\": [{\"ae_title\": \"A\", "
                "\"retrieve\": false}, {\"ae_title\": \"B\"}], "
                "\"tls\": {\"ca_file\": \"/etc/ca.pem\"}, "
                "\"remote_aes\": [{\"ae_title\": \"D\", \"host\": \"h\", "
                "\"port\": 104}, {\"ae_title\": \"T\", \"host\": \"t\", "
                "\"port\": 2762, \"tls\": true, \"certificate_sha256\": "
                "\"AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:"
                "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89\"}]}}",
                err, sizeof(err));
    CHECK_MSG(cfg != NULL, "refused: %s", err);
    if (cfg != NULL) {
        struct retrieve_params rp;
        struct scp_remote *remotes = NULL;
        struct scp_outbound_tls tls;
        struct scp_caller_rule *rules = NULL;
        bool has_tls = false;

        CHECK(!cfg->dicom.allowed_callers[0].retrieve);
        CHECK(cfg->dicom.allowed_callers[1].retrieve);
        CHECK(cfg->dicom.remote_aes[1].tls);
        CHECK(strcmp(cfg->dicom.remote_aes[1].certificate_sha256,
                     "abcdef0123456789abcdef0123456789"
                     "abcdef0123456789abcdef0123456789") == 0);
        CHECK(cfg->dicom.remote_aes[0].certificate_sha256 == NULL);
        CHECK(params_retrieve_enabled(cfg));
        params_retrieve(cfg, NULL, NULL, &rp);
        CHECK(rp.max_temp_bytes == 8u << 20 && rp.max_parallel == 2);
        CHECK(rp.page_size <= 200);
        CHECK(!rp.qido_raw_caret);
        CHECK(strcmp(rp.base_url, "http://x/dicom-web") == 0);
        CHECK(params_scp_remotes(cfg, &remotes, &tls, &has_tls) == 0);
        CHECK(has_tls && remotes != NULL);
        if (remotes != NULL) {
            CHECK(!remotes[0].tls && remotes[1].tls);
            CHECK(remotes[1].port == 2762);
            CHECK(remotes[1].certificate_sha256 != NULL);
        }
        CHECK(tls.ca_file != NULL && strcmp(tls.ca_file, "/etc/ca.pem") == 0);
        CHECK(tls.certificate_file == NULL);
        free(remotes);
        CHECK(params_scp_callers(cfg, &rules) == 0 && rules != NULL);
        if (rules != NULL)
            CHECK(!rules[0].retrieve && rules[1].retrieve);
        free(rules);
        cfg_free(cfg);
    }
    /* Receive-only: no retrieve. */
    cfg = parse("{}", err, sizeof(err));
    CHECK(cfg != NULL && !params_retrieve_enabled(cfg));
    cfg_free(cfg);

    static const char *const bad[][2] = {
        { "{\"dicom\": {\"remote_aes\": [{\"ae_title\": \"T\", \"host\": "
          "\"t\", \"port\": 1, \"tls\": true}]}}",
          "dicom.tls.ca_file" },
        { "{\"dicom\": {\"remote_aes\": [{\"ae_title\": \"T\", \"host\": "
          "\"t\", \"port\": 1, \"certificate_sha256\": \""
          "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
          "\"}]}}",
          "needs \"tls\": true" },
        { "{\"dicom\": {\"remote_aes\": [{\"ae_title\": \"T\", \"host\": "
          "\"t\", \"port\": 1, \"tls\": true, \"certificate_sha256\": "
          "\"abc\"}]}}",
          "certificate_sha256" },
        { "{\"dicom\": {\"remote_aes\": [{\"ae_title\": \"T\", \"host\": "
          "\"t\", \"port\": 1, \"certificate_sha256\": 5}]}}",
          "certificate_sha256" },
        { "{\"dicom\": {\"allowed_callers\": [{\"ae_title\": \"A\", "
          "\"retrieve\": 1}]}}",
          "retrieve: expected true or false" },
        { "{\"retrieve\": {\"max_parallel\": 0}}", "retrieve.max_parallel" },
        { "{\"retrieve\": {\"max_temp_mb\": 0}}", "retrieve.max_temp_mb" },
        { "{\"retrieve\": {\"queue\": 1}}", "retrieve.queue" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cfg = parse(bad[i][0], err, sizeof(err));
        CHECK_MSG(cfg == NULL, "accepted: %s", bad[i][0]);
        CHECK_MSG(strstr(err, bad[i][1]) != NULL, "'%s' not in '%s'", bad[i][1],
                  err);
        cfg_free(cfg);
    }
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    test_plans();
    test_listing();
    test_listing_failures();
    test_patient_level();
    test_rematch();
    test_patient_root_keys();
    test_patient_chars();
    test_invalid_uids();
    test_config();
    curl_global_cleanup();
    return tap_done();
}
