/* SPDX-License-Identifier: Apache-2.0 */
/*
 * study_cmd - see study_cmd.h. The ledger knows what was delivered and
 * every commitment transaction; the spool knows what is still queued or
 * failed (meta/). Both are read without locks: what moves meanwhile is
 * seen in one place or the other.
 */
#include "study_cmd.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "base/util.h"
#include "config/config.h"
#include "dicom/redact.h"
#include "ledger/ledger.h"
#include "params.h"
#include "servertext.h"
#include "spool/spool.h"
#include "spool/txn.h"

#define STUDY_EXIT_RUNTIME 1
#define STUDY_EXIT_USAGE 2
/* Most commitment transactions `commit list` shows. */
#define STUDY_LIST_MAX 200

int study_ledger_path(const struct cfg *cfg, char *buf, size_t len)
{
    return params_ledger_path(cfg, buf, len); /* the daemon's rule */
}

/* ISO 8601 UTC of @ms, or "-" for 0. */
static const char *iso(int64_t ms, char buf[32])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    if (ms <= 0 || gmtime_r(&t, &tm) == NULL)
        return "-";
    (void)strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

/* Prints @o as indented JSON and a newline (nothing if out of memory). */
static void print_json(const cJSON *o)
{
    char *text = cJSON_Print(o);

    if (text != NULL)
        printf("%s\n", text);
    free(text);
}

/* Opens the ledger read-only; NULL (said why on stderr) if it cannot. */
static struct ledger *open_ledger(const struct cfg *cfg)
{
    struct ledger_params lp;
    struct ledger *lg = NULL;
    char path[4096];
    char err[512];
    int r;

    if (study_ledger_path(cfg, path, sizeof(path)) < 0)
        return NULL;
    memset(&lp, 0, sizeof(lp));
    lp.path = path;
    lp.flags = LEDGER_OPEN_READONLY;
    r = ledger_open(&lp, &lg, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "stowbridge: no delivery ledger: %s\n", err);
        return NULL;
    }
    return lg;
}

static const char *basis_name(enum ledger_commit_basis b)
{
    switch (b) {
    case LEDGER_BASIS_DELIVERED:
        return "delivered";
    case LEDGER_BASIS_SERVER:
        return "server";
    case LEDGER_BASIS_FAILED_ENTRY:
        return "failed-entry";
    case LEDGER_BASIS_DEADLINE:
        return "deadline";
    case LEDGER_BASIS_OTHER:
        return "other";
    case LEDGER_BASIS_NONE:
        break;
    }
    return "-";
}

static const char *result_name(enum ledger_item_result r)
{
    return r == LEDGER_ITEM_COMMITTED ? "committed"
           : r == LEDGER_ITEM_FAILED  ? "failed"
                                      : "pending";
}

/* ------------------------------------------------------------------ */
/* study                                                               */
/* ------------------------------------------------------------------ */

struct study_ctx {
    cJSON *root;
    cJSON *received;
    cJSON *commits;
};

static int on_source(void *ctx, const struct ledger_study_source *s)
{
    struct study_ctx *sc = ctx;
    cJSON *o = cJSON_CreateObject();
    char a[32];
    char b[32];

    if (o == NULL)
        return -ENOMEM;
    cJSON_AddStringToObject(o, "calling_ae", s->calling_ae);
    cJSON_AddNumberToObject(o, "instances", (double)s->instances);
    cJSON_AddNumberToObject(o, "deliveries", (double)s->deliveries);
    cJSON_AddStringToObject(o, "first_arrival", iso(s->first_arrived_ms, a));
    cJSON_AddStringToObject(o, "last_arrival", iso(s->last_arrived_ms, b));
    cJSON_AddItemToArray(sc->received, o);
    return 0;
}

/* One commitment transaction as a JSON object; NULL: out of memory. */
static cJSON *tx_json(const struct ledger_commit *c)
{
    cJSON *o = cJSON_CreateObject();
    char a[32];
    char b[32];

    if (o == NULL)
        return NULL;
    cJSON_AddStringToObject(o, "tx", c->tx_uid);
    cJSON_AddStringToObject(o, "calling_ae", c->calling_ae);
    cJSON_AddStringToObject(o, "received", iso(c->received_ms, a));
    cJSON_AddStringToObject(o, "reported", iso(c->reported_ms, b));
    cJSON_AddNumberToObject(o, "event_type", c->event_type);
    cJSON_AddNumberToObject(o, "items", (double)c->items);
    cJSON_AddNumberToObject(o, "committed", (double)c->committed);
    cJSON_AddNumberToObject(o, "failed", (double)c->failed);
    cJSON_AddNumberToObject(o, "pending", (double)c->pending);
    return o;
}

static int on_study_commit(void *ctx, const struct ledger_commit *c,
                           const struct ledger_commit_study *s)
{
    struct study_ctx *sc = ctx;
    cJSON *o = tx_json(c);

    if (o == NULL)
        return -ENOMEM;
    cJSON_AddNumberToObject(o, "study_items", (double)s->items);
    cJSON_AddNumberToObject(o, "study_committed", (double)s->committed);
    cJSON_AddNumberToObject(o, "study_failed", (double)s->failed);
    cJSON_AddItemToArray(sc->commits, o);
    return 0;
}

/* The spool's entries of @study: queued counts by state, failed ones. */
static int study_spool(const struct cfg *cfg, const char *study, cJSON *queued,
                       cJSON *failed)
{
    static const enum spool_state states[] = {
        SPOOL_INCOMING,
        SPOOL_ACTIVE,
        SPOOL_DEFERRED,
        SPOOL_FAILED,
    };
    struct spool *spool = NULL;
    char err[512];

    if (spool_open(cfg->spool.dir, 0, &spool, err, sizeof(err)) < 0) {
        fprintf(stderr, "stowbridge: %s\n", err);
        return -EIO;
    }
    for (size_t s = 0; s < sizeof(states) / sizeof(states[0]); s++) {
        struct spool_entry *e = NULL;
        size_t count = 0;
        unsigned n = 0;

        if (spool_list(spool, states[s], &e, &count, err, sizeof(err)) < 0)
            continue;
        for (size_t i = 0; i < count; i++) {
            struct spool_meta meta;

            if (spool_meta_read(spool, e[i].id, &meta) < 0 ||
                strcmp(meta.study_uid, study) != 0)
                continue;
            n++;
            if (states[s] == SPOOL_FAILED) {
                cJSON *o = cJSON_CreateObject();
                char ids[1][SPOOL_ID_MAX];
                char why[sizeof(meta.last_error) + 8];
                struct redact *hide;

                if (o == NULL)
                    continue;
                snprintf(ids[0], sizeof(ids[0]), "%s", e[i].id);
                hide = servertext_for_entries(spool, SPOOL_FAILED,
                                              (const char(*)[SPOOL_ID_MAX])ids,
                                              1, NULL, NULL);
                redact_text(hide, meta.last_error, strlen(meta.last_error),
                            sizeof(meta.last_error), why, sizeof(why));
                redact_free(hide);
                cJSON_AddStringToObject(o, "id", e[i].id);
                cJSON_AddStringToObject(o, "sop", meta.sop_uid);
                cJSON_AddStringToObject(o, "calling_ae", meta.calling_ae);
                cJSON_AddNumberToObject(o, "http_status",
                                        (double)meta.last_http_status);
                cJSON_AddNumberToObject(o, "failure_reason", meta.last_reason);
                cJSON_AddStringToObject(o, "reason", why);
                cJSON_AddItemToArray(failed, o);
            }
        }
        free(e);
        if (states[s] != SPOOL_FAILED)
            cJSON_AddNumberToObject(queued, spool_state_name(states[s]), n);
    }
    spool_close(spool);
    return 0;
}

static void study_print_text(const cJSON *root)
{
    const cJSON *d = cJSON_GetObjectItem(root, "delivered");
    const cJSON *q = cJSON_GetObjectItem(root, "queued");
    const cJSON *x;

    printf("study %s\n", cJSON_GetObjectItem(root, "study")->valuestring);
    printf("received:\n");
    cJSON_ArrayForEach(x, cJSON_GetObjectItem(root, "received"))
        printf("  from %s: %d instances, first %s, last %s\n",
               cJSON_GetObjectItem(x, "calling_ae")->valuestring,
               cJSON_GetObjectItem(x, "instances")->valueint,
               cJSON_GetObjectItem(x, "first_arrival")->valuestring,
               cJSON_GetObjectItem(x, "last_arrival")->valuestring);
    printf("delivered: %d instances in %d series (%d deliveries, %d "
           "already on the server), %.0f bytes, first %s, last %s\n",
           cJSON_GetObjectItem(d, "instances")->valueint,
           cJSON_GetObjectItem(d, "series")->valueint,
           cJSON_GetObjectItem(d, "deliveries")->valueint,
           cJSON_GetObjectItem(d, "already_existed")->valueint,
           cJSON_GetObjectItem(d, "bytes")->valuedouble,
           cJSON_GetObjectItem(d, "first")->valuestring,
           cJSON_GetObjectItem(d, "last")->valuestring);
    printf("queued: incoming %d, active %d, deferred %d\n",
           cJSON_GetObjectItem(q, "incoming")->valueint,
           cJSON_GetObjectItem(q, "active")->valueint,
           cJSON_GetObjectItem(q, "deferred")->valueint);
    printf("failed:%s\n",
           cJSON_GetArraySize(cJSON_GetObjectItem(root, "failed")) ? ""
                                                                   : " none");
    cJSON_ArrayForEach(x, cJSON_GetObjectItem(root, "failed"))
        printf("  %s sop=%s from=%s status=%d reason=%04X: %s\n",
               cJSON_GetObjectItem(x, "id")->valuestring,
               cJSON_GetObjectItem(x, "sop")->valuestring,
               cJSON_GetObjectItem(x, "calling_ae")->valuestring,
               cJSON_GetObjectItem(x, "http_status")->valueint,
               (unsigned)cJSON_GetObjectItem(x, "failure_reason")->valueint,
               cJSON_GetObjectItem(x, "reason")->valuestring);
    printf("commitments:%s\n",
           cJSON_GetArraySize(cJSON_GetObjectItem(root, "commitments"))
               ? ""
               : " none");
    cJSON_ArrayForEach(x, cJSON_GetObjectItem(root, "commitments"))
        printf("  %s from %s received %s: %d of its %d items in this study "
               "(%d committed, %d failed); whole transaction %d committed, "
               "%d failed, %d pending; report %s (event type %d)\n",
               cJSON_GetObjectItem(x, "tx")->valuestring,
               cJSON_GetObjectItem(x, "calling_ae")->valuestring,
               cJSON_GetObjectItem(x, "received")->valuestring,
               cJSON_GetObjectItem(x, "study_items")->valueint,
               cJSON_GetObjectItem(x, "items")->valueint,
               cJSON_GetObjectItem(x, "study_committed")->valueint,
               cJSON_GetObjectItem(x, "study_failed")->valueint,
               cJSON_GetObjectItem(x, "committed")->valueint,
               cJSON_GetObjectItem(x, "failed")->valueint,
               cJSON_GetObjectItem(x, "pending")->valueint,
               cJSON_GetObjectItem(x, "reported")->valuestring,
               cJSON_GetObjectItem(x, "event_type")->valueint);
}

int study_main(const struct cfg *cfg, int argc, char **argv)
{
    struct ledger_study_counts counts;
    struct study_ctx sc;
    struct ledger *lg;
    const char *study = NULL;
    bool json = false;
    cJSON *d;
    cJSON *queued;
    cJSON *failed;
    char a[32];
    char b[32];

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (study == NULL)
            study = argv[i];
        else
            study = "";
    }
    if (study == NULL || !util_uid_valid(study)) {
        fprintf(stderr, "usage: stowbridge study STUDY_INSTANCE_UID [--json] "
                        "--config FILE (a UID: digits and dots)\n");
        return STUDY_EXIT_USAGE;
    }
    memset(&sc, 0, sizeof(sc));
    memset(&counts, 0, sizeof(counts));
    sc.root = cJSON_CreateObject();
    if (sc.root == NULL)
        return STUDY_EXIT_RUNTIME;
    cJSON_AddStringToObject(sc.root, "study", study);
    sc.received = cJSON_AddArrayToObject(sc.root, "received");
    d = cJSON_AddObjectToObject(sc.root, "delivered");
    queued = cJSON_AddObjectToObject(sc.root, "queued");
    failed = cJSON_AddArrayToObject(sc.root, "failed");
    sc.commits = cJSON_AddArrayToObject(sc.root, "commitments");
    lg = open_ledger(cfg);
    if (lg != NULL) {
        (void)ledger_study_counts(lg, study, &counts);
        (void)ledger_study_sources(lg, study, on_source, &sc);
        (void)ledger_study_commits(lg, study, on_study_commit, &sc);
        ledger_close(lg);
    }
    cJSON_AddBoolToObject(sc.root, "ledger", lg != NULL);
    cJSON_AddNumberToObject(d, "instances", (double)counts.instances);
    cJSON_AddNumberToObject(d, "deliveries", (double)counts.deliveries);
    cJSON_AddNumberToObject(d, "series", (double)counts.series);
    cJSON_AddNumberToObject(d, "stored", (double)counts.stored);
    cJSON_AddNumberToObject(d, "already_existed",
                            (double)counts.already_existed);
    cJSON_AddNumberToObject(d, "bytes", (double)counts.bytes);
    cJSON_AddStringToObject(d, "first", iso(counts.first_delivered_ms, a));
    cJSON_AddStringToObject(d, "last", iso(counts.last_delivered_ms, b));
    if (study_spool(cfg, study, queued, failed) < 0) {
        cJSON_Delete(sc.root);
        return STUDY_EXIT_RUNTIME;
    }
    if (json)
        print_json(sc.root);
    else
        study_print_text(sc.root);
    cJSON_Delete(sc.root);
    return 0;
}

/* ------------------------------------------------------------------ */
/* commit list | show                                                  */
/* ------------------------------------------------------------------ */

struct list_ctx {
    bool json;
    cJSON *array;
    const struct cfg *cfg;
};

static void tx_print(const struct ledger_commit *c)
{
    char a[32];
    char b[32];

    printf("%s from=%s received=%s items=%llu committed=%llu failed=%llu "
           "pending=%llu reported=%s event_type=%u\n",
           c->tx_uid, c->calling_ae, iso(c->received_ms, a),
           (unsigned long long)c->items, (unsigned long long)c->committed,
           (unsigned long long)c->failed, (unsigned long long)c->pending,
           iso(c->reported_ms, b), c->event_type);
}

static int on_list(void *ctx, const struct ledger_commit *c)
{
    struct list_ctx *lc = ctx;

    if (lc->json) {
        cJSON *o = tx_json(c);
        if (o != NULL)
            cJSON_AddItemToArray(lc->array, o);
    } else {
        tx_print(c);
    }
    return 0;
}

static int on_item(void *ctx, const struct ledger_commit_item *i)
{
    struct list_ctx *lc = ctx;
    char a[32];

    if (lc->json) {
        cJSON *o = cJSON_CreateObject();
        if (o == NULL)
            return -ENOMEM;
        cJSON_AddNumberToObject(o, "pos", i->pos);
        cJSON_AddStringToObject(o, "sop_class", i->sop_class_uid);
        cJSON_AddStringToObject(o, "sop", i->sop_instance_uid);
        cJSON_AddStringToObject(o, "study", i->study_uid);
        cJSON_AddStringToObject(o, "result", result_name(i->result));
        cJSON_AddNumberToObject(o, "failure_reason", i->failure_reason);
        cJSON_AddStringToObject(o, "basis", basis_name(i->basis));
        cJSON_AddStringToObject(o, "resolved", iso(i->resolved_ms, a));
        cJSON_AddItemToArray(lc->array, o);
    } else {
        printf("  %u %s %s %s", i->pos + 1, i->sop_class_uid,
               i->sop_instance_uid, result_name(i->result));
        if (i->result == LEDGER_ITEM_FAILED)
            printf(" reason=%04X", (unsigned)i->failure_reason);
        printf(" by=%s at=%s\n", basis_name(i->basis), iso(i->resolved_ms, a));
    }
    return 0;
}

/* `commit list`: the latest STUDY_LIST_MAX transactions. */
static int cmd_commit_list(struct ledger *lg, struct list_ctx *lc)
{
    int status = 0;

    if (ledger_commit_list(lg, 0, STUDY_LIST_MAX, on_list, lc) < 0)
        status = STUDY_EXIT_RUNTIME;
    if (lc->json)
        print_json(lc->array);
    return status;
}

/* `commit show TRANSACTION_UID`: the transaction and its instances. */
static int cmd_commit_show(struct ledger *lg, const char *tx_uid,
                           struct list_ctx *lc)
{
    struct ledger_commit c;
    int r = ledger_commit_find(lg, tx_uid, &c);

    if (r == -ENOENT) {
        fprintf(stderr,
                "stowbridge: no such commitment transaction: "
                "%s\n",
                tx_uid);
        return STUDY_EXIT_RUNTIME;
    }
    if (r < 0) {
        fprintf(stderr, "stowbridge: cannot read the ledger (%d)\n", r);
        return STUDY_EXIT_RUNTIME;
    }
    if (lc->json) {
        cJSON *o = tx_json(&c);
        (void)ledger_commit_items(lg, tx_uid, on_item, lc);
        if (o != NULL) {
            cJSON_AddItemToObject(o, "instances", lc->array);
            lc->array = NULL;
            print_json(o);
            cJSON_Delete(o);
        }
    } else {
        tx_print(&c);
        (void)ledger_commit_items(lg, tx_uid, on_item, lc);
    }
    return 0;
}

int commit_cmd_main(const struct cfg *cfg, int argc, char **argv)
{
    struct list_ctx lc;
    struct ledger *lg;
    const char *words[2] = { NULL, NULL };
    int nwords = 0;
    int status;

    memset(&lc, 0, sizeof(lc));
    lc.cfg = cfg;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            lc.json = true;
        else if (nwords < 2)
            words[nwords++] = argv[i];
        else
            nwords = 3;
    }
    if (nwords == 0 || nwords > 2 ||
        (strcmp(words[0], "list") == 0 && nwords != 1) ||
        (strcmp(words[0], "show") == 0 &&
         (nwords != 2 || !util_uid_valid(words[1]))) ||
        (strcmp(words[0], "list") != 0 && strcmp(words[0], "show") != 0)) {
        fprintf(stderr, "usage: stowbridge commit list [--json] --config "
                        "FILE\n"
                        "       stowbridge commit show TRANSACTION_UID "
                        "[--json] --config FILE\n");
        return STUDY_EXIT_USAGE;
    }
    lg = open_ledger(cfg);
    if (lg == NULL)
        return STUDY_EXIT_RUNTIME;
    lc.array = cJSON_CreateArray();
    if (lc.array == NULL) {
        ledger_close(lg);
        return STUDY_EXIT_RUNTIME;
    }
    if (strcmp(words[0], "list") == 0)
        status = cmd_commit_list(lg, &lc);
    else
        status = cmd_commit_show(lg, words[1], &lc);
    cJSON_Delete(lc.array);
    ledger_close(lg);
    return status;
}
