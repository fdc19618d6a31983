/* SPDX-License-Identifier: Apache-2.0 */
/*
 * retrieve - C-MOVE and C-GET through QIDO-RS and WADO-RS (see
 * retrieve.h).
 *
 * One operation is one session:
 *   begin()   plans the listing (retrieve_plan()), takes what the spool
 *             still holds of it, lists the rest with QIDO-RS (all pages,
 *             de-duplicated), sorts the instances by study and series and
 *             starts the fetch thread;
 *   fetch     thread: one WADO-RS request per series (per instance at
 *             IMAGE level) into a partfile sink under the byte budget;
 *             each whole file is matched to its listed instance by the
 *             SOP Instance UID in its header and queued; what a request
 *             did not deliver is queued as failed;
 *   next()    pops the queue (waiting on a condition variable);
 *   release() removes the file and gives its bytes back to the budget,
 *             which resumes a paused transfer.
 * Every listed instance is queued exactly once (file or failure), so the
 * association thread's counts add up to the total.
 */
#include "retrieve.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"
#include "dicom/dataset.h"
#include "dicom/part10.h"
#include "spool/spool.h"
#include "web/oauth.h"
#include "web/partfile.h"
#include "web/qido.h"
#include "web/wado.h"

#define STATUS_OUT_OF_RESOURCES_MATCHES 0xA701
#define STATUS_IDENTIFIER_MISMATCH 0xA900
#define STATUS_UNREACHABLE 0xC001
#define STATUS_HTTP_ERROR 0xC002
#define STATUS_BAD_ANSWER 0xC003
#define STATUS_NO_TOKEN 0xC004

/* Azure takes at most 200 results a page. */
#define RETRIEVE_PAGE_MAX 200
/* Most instances one operation lists (the counts are 16 bits). */
#define RETRIEVE_MAX_INSTANCES 65535u
/* Most UIDs in one list of the identifier. */
#define RETRIEVE_MAX_KEYS 4096u

#define TAG_PATIENT_ID DS_TAG(0x0010, 0x0020)
#define TAG_LEVEL DS_TAG(0x0008, 0x0052)
#define TAG_STUDY_UID DS_TAG(0x0020, 0x000D)
#define TAG_SERIES_UID DS_TAG(0x0020, 0x000E)
#define TAG_SOP_UID DS_TAG(0x0008, 0x0018)
#define TAG_SOP_CLASS DS_TAG(0x0008, 0x0016)

static void set_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || err_len == 0)
        return;
    va_start(ap, fmt);
    (void)vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ */
/* Planning (pure)                                                     */
/* ------------------------------------------------------------------ */

static void free_list(char **list, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(list[i]);
    free(list);
}

void retrieve_plan_free(struct retrieve_plan *plan)
{
    free(plan->patient_id);
    free_list(plan->studies, plan->study_count);
    free_list(plan->series, plan->series_count);
    free_list(plan->instances, plan->instance_count);
    free_list(plan->resources, plan->resource_count);
    memset(plan, 0, sizeof(*plan));
}

/*
 * Splits the UID list of @tag in @id ('\'-separated, spaces around each
 * value dropped) into *@ret (count in @ret_count). -EINVAL when absent or
 * empty, a value is not a UID, or more than @max values.
 */
static int split_uids(const struct ds *id, uint32_t tag, size_t max,
                      char ***ret, size_t *ret_count)
{
    const char *v = ds_value(id, tag);
    char **list;
    size_t n = 0, cap = 1;

    *ret = NULL;
    *ret_count = 0;
    if (v == NULL || v[0] == '\0')
        return -EINVAL;
    for (const char *p = v; *p; p++)
        cap += *p == '\\';
    if (cap > max)
        return -EINVAL;
    list = calloc(cap, sizeof(*list));
    if (list == NULL)
        return -ENOMEM;
    for (const char *p = v;;) {
        const char *end = strchr(p, '\\');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        char buf[UTIL_UID_MAX + 2];

        while (len > 0 && (p[0] == ' ' || p[0] == '\0')) {
            p++;
            len--;
        }
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\0'))
            len--;
        if (len == 0 || len > UTIL_UID_MAX) {
            free_list(list, n);
            return -EINVAL;
        }
        memcpy(buf, p, len);
        buf[len] = '\0';
        if (!util_uid_valid(buf)) {
            free_list(list, n);
            return -EINVAL;
        }
        list[n] = strdup(buf);
        if (list[n] == NULL) {
            free_list(list, n);
            return -ENOMEM;
        }
        n++;
        if (end == NULL)
            break;
        p = end + 1;
    }
    *ret = list;
    *ret_count = n;
    return 0;
}

static int add_resource(struct retrieve_plan *plan, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int add_resource(struct retrieve_plan *plan, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    char **grown;

    va_start(ap, fmt);
    (void)vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    grown =
        realloc(plan->resources, (plan->resource_count + 1) * sizeof(*grown));
    if (grown == NULL)
        return -ENOMEM;
    plan->resources = grown;
    grown[plan->resource_count] = strdup(buf);
    if (grown[plan->resource_count] == NULL)
        return -ENOMEM;
    plan->resource_count++;
    return 0;
}

/* Reads the level of @id into @ret. */
static int plan_level(const struct ds *id, enum scp_find_model model,
                      enum retrieve_level *ret, char *err, size_t err_len)
{
    const char *v = ds_value(id, TAG_LEVEL);
    char level[17];

    if (v == NULL || util_trim_copy(level, sizeof(level), v) < 0) {
        set_err(err, err_len, "QueryRetrieveLevel (0008,0052) missing");
        return -EINVAL;
    }
    if (strcmp(level, "PATIENT") == 0 && model == SCP_FIND_PATIENT_ROOT)
        *ret = RETRIEVE_PATIENT;
    else if (strcmp(level, "STUDY") == 0)
        *ret = RETRIEVE_STUDY;
    else if (strcmp(level, "SERIES") == 0)
        *ret = RETRIEVE_SERIES;
    else if (strcmp(level, "IMAGE") == 0)
        *ret = RETRIEVE_IMAGE;
    else {
        set_err(err, err_len,
                "QueryRetrieveLevel not valid for this information model");
        return -EINVAL;
    }
    return 0;
}

int retrieve_plan(const struct ds *identifier, enum scp_find_model model,
                  struct retrieve_plan *ret_plan, char *err, size_t err_len)
{
    struct retrieve_plan plan;
    int r;

    memset(&plan, 0, sizeof(plan));
    memset(ret_plan, 0, sizeof(*ret_plan));
    r = plan_level(identifier, model, &plan.level, err, err_len);
    if (r < 0)
        return r;
    if (plan.level == RETRIEVE_PATIENT) {
        const char *pid = ds_value(identifier, TAG_PATIENT_ID);
        char buf[65];

        if (pid == NULL || util_trim_copy(buf, sizeof(buf), pid) < 0 ||
            buf[0] == '\0' || strchr(buf, '\\') != NULL ||
            strchr(buf, '*') != NULL || strchr(buf, '?') != NULL) {
            set_err(err, err_len,
                    "PATIENT level needs one Patient ID (0010,0020)");
            return -EINVAL;
        }
        plan.patient_id = strdup(buf);
        if (plan.patient_id == NULL || add_resource(&plan, "/instances") < 0) {
            retrieve_plan_free(&plan);
            return -ENOMEM;
        }
        *ret_plan = plan;
        return 0;
    }
    /* Patient Root: the Patient ID is the unique key of the level above
     * (PS3.4 C.4.2.2.1); a study of another patient matches nothing. */
    if (model == SCP_FIND_PATIENT_ROOT) {
        const char *pid = ds_value(identifier, TAG_PATIENT_ID);
        char buf[65];

        if (pid != NULL && (util_trim_copy(buf, sizeof(buf), pid) < 0 ||
                            strpbrk(buf, "\\*?") != NULL)) {
            set_err(err, err_len, "Patient ID (0010,0020) must be one value");
            return -EINVAL;
        }
        if (pid != NULL && buf[0] != '\0') {
            plan.patient_id = strdup(buf);
            if (plan.patient_id == NULL)
                return -ENOMEM;
        }
    }
    size_t max_studies = plan.level == RETRIEVE_STUDY ? RETRIEVE_MAX_KEYS : 1;
    r = split_uids(identifier, TAG_STUDY_UID, max_studies, &plan.studies,
                   &plan.study_count);
    if (r < 0) {
        if (r == -EINVAL)
            set_err(err, err_len,
                    plan.level == RETRIEVE_STUDY
                        ? "STUDY level needs Study Instance UIDs (0020,000D)"
                        : "%s level needs one Study Instance UID (0020,000D)",
                    plan.level == RETRIEVE_SERIES ? "SERIES" : "IMAGE");
        retrieve_plan_free(&plan);
        return r;
    }
    if (plan.level == RETRIEVE_STUDY) {
        for (size_t i = 0; i < plan.study_count; i++)
            if (add_resource(&plan, "/studies/%s/instances", plan.studies[i]) <
                0) {
                retrieve_plan_free(&plan);
                return -ENOMEM;
            }
        *ret_plan = plan;
        return 0;
    }
    size_t max_series = plan.level == RETRIEVE_SERIES ? RETRIEVE_MAX_KEYS : 1;
    r = split_uids(identifier, TAG_SERIES_UID, max_series, &plan.series,
                   &plan.series_count);
    if (r < 0) {
        if (r == -EINVAL)
            set_err(err, err_len,
                    plan.level == RETRIEVE_SERIES
                        ? "SERIES level needs Series Instance UIDs "
                          "(0020,000E)"
                        : "IMAGE level needs one Series Instance UID "
                          "(0020,000E)");
        retrieve_plan_free(&plan);
        return r;
    }
    if (plan.level == RETRIEVE_IMAGE) {
        r = split_uids(identifier, TAG_SOP_UID, RETRIEVE_MAX_KEYS,
                       &plan.instances, &plan.instance_count);
        if (r < 0) {
            if (r == -EINVAL)
                set_err(err, err_len,
                        "IMAGE level needs SOP Instance UIDs (0008,0018)");
            retrieve_plan_free(&plan);
            return r;
        }
    }
    for (size_t i = 0; i < plan.series_count; i++)
        if (add_resource(&plan, "/studies/%s/series/%s/instances",
                         plan.studies[0], plan.series[i]) < 0) {
            retrieve_plan_free(&plan);
            return -ENOMEM;
        }
    *ret_plan = plan;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Service                                                             */
/* ------------------------------------------------------------------ */

struct retrieve_service {
    struct retrieve_params p;
    char tmp_dir[4096];
    atomic_uint running;
};

struct retrieve_service *retrieve_service_new(const struct retrieve_params *p)
{
    struct retrieve_service *svc = calloc(1, sizeof(*svc));

    if (svc == NULL)
        return NULL;
    svc->p = *p;
    if (svc->p.page_size == 0 || svc->p.page_size > RETRIEVE_PAGE_MAX)
        svc->p.page_size = RETRIEVE_PAGE_MAX;
    if (svc->p.max_parallel == 0)
        svc->p.max_parallel = 1;
    (void)snprintf(svc->tmp_dir, sizeof(svc->tmp_dir), "%s/%s",
                   spool_dir(p->spool), spool_state_name(SPOOL_TMP));
    atomic_init(&svc->running, 0);
    return svc;
}

void retrieve_service_free(struct retrieve_service *svc)
{
    free(svc);
}

unsigned retrieve_service_running(struct retrieve_service *svc)
{
    return atomic_load(&svc->running);
}

/* ------------------------------------------------------------------ */
/* Sessions                                                            */
/* ------------------------------------------------------------------ */

enum item_state {
    ITEM_LISTED = 0, /* waiting for its fetch */
    ITEM_QUEUED,     /* file ready, or failed: in the queue */
    ITEM_HANDED,     /* handed out by next() */
    ITEM_DONE,       /* released */
};

struct rt_item {
    char study[PART10_UID_MAX];
    char series[PART10_UID_MAX];
    char sop[PART10_UID_MAX];
    char sop_class[PART10_UID_MAX];
    char ts[PART10_UID_MAX];
    char *path; /* the file, once fetched */
    uint64_t size;
    enum item_state state;
    bool from_spool; /* a hard link, outside the sink's budget */
    bool invalid;    /* listed with an invalid Study/Series UID: failed */
    char why[160];   /* failed: why */
};

struct rt_session {
    struct retrieve_service *svc;
    enum scp_retrieve_kind kind;
    struct retrieve_plan plan;
    char caller[UTIL_AE_TITLE_MAX + 1];

    struct rt_item *items;
    size_t count, cap;
    size_t *index; /* open addressing by SOP UID: item + 1, 0 empty */
    size_t index_cap;
    char **classes; /* distinct SOP classes listed */
    size_t class_count;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    size_t *queue; /* ring of item indices, capacity count */
    size_t q_head, q_len;
    size_t handed;
    atomic_bool cancel;
    bool thread_started;
    pthread_t thread;
    struct partfile_sink *sink;
    struct wado_client *wado;
    bool forbidden_logged;
    uint64_t started_ms;
    unsigned spool_served;
    size_t invalid_listed; /* listed with invalid UIDs (logged once) */
};

static uint64_t uid_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */

    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

/* The item of SOP UID @sop, or NULL. */
static struct rt_item *find_item(struct rt_session *s, const char *sop)
{
    if (s->index_cap == 0)
        return NULL;
    for (size_t i = uid_hash(sop) & (s->index_cap - 1);;
         i = (i + 1) & (s->index_cap - 1)) {
        if (s->index[i] == 0)
            return NULL;
        if (strcmp(s->items[s->index[i] - 1].sop, sop) == 0)
            return &s->items[s->index[i] - 1];
    }
}

static int rebuild_index(struct rt_session *s, size_t cap)
{
    size_t *index = calloc(cap, sizeof(*index));

    if (index == NULL)
        return -ENOMEM;
    free(s->index);
    s->index = index;
    s->index_cap = cap;
    for (size_t k = 0; k < s->count; k++) {
        size_t i = uid_hash(s->items[k].sop) & (cap - 1);
        while (index[i] != 0)
            i = (i + 1) & (cap - 1);
        index[i] = k + 1;
    }
    return 0;
}

/* Adds an instance unless its SOP UID is known: 1 added, 0 known,
 * -ENOMEM, -E2BIG (too many). */
static int add_item(struct rt_session *s, const char *study, const char *series,
                    const char *sop, const char *cls)
{
    struct rt_item *it;

    if (find_item(s, sop) != NULL)
        return 0;
    if (s->count >= RETRIEVE_MAX_INSTANCES)
        return -E2BIG;
    if (s->count == s->cap) {
        size_t cap = s->cap == 0 ? 64 : s->cap * 2;
        struct rt_item *grown = realloc(s->items, cap * sizeof(*grown));
        if (grown == NULL)
            return -ENOMEM;
        s->items = grown;
        s->cap = cap;
    }
    it = &s->items[s->count];
    memset(it, 0, sizeof(*it));
    snprintf(it->study, sizeof(it->study), "%s", study);
    snprintf(it->series, sizeof(it->series), "%s", series);
    snprintf(it->sop, sizeof(it->sop), "%s", sop);
    snprintf(it->sop_class, sizeof(it->sop_class), "%s", cls);
    s->count++;
    if ((s->count + 1) * 2 > s->index_cap)
        return rebuild_index(s, s->index_cap == 0 ? 128 : s->index_cap * 2) < 0
                   ? -ENOMEM
                   : 1;
    size_t i = uid_hash(sop) & (s->index_cap - 1);
    while (s->index[i] != 0)
        i = (i + 1) & (s->index_cap - 1);
    s->index[i] = s->count;
    return 1;
}

/* Queues item @k (file ready or failed); the lock is held. */
static void push_locked(struct rt_session *s, size_t k)
{
    s->items[k].state = ITEM_QUEUED;
    s->queue[(s->q_head + s->q_len) % s->count] = k;
    s->q_len++;
    pthread_cond_broadcast(&s->cond);
}

static void fail_item_locked(struct rt_session *s, size_t k, const char *why)
{
    if (s->items[k].state != ITEM_LISTED)
        return;
    snprintf(s->items[k].why, sizeof(s->items[k].why), "%s", why);
    push_locked(s, k);
}

/* ------------------------------------------------------------------ */
/* Listing                                                             */
/* ------------------------------------------------------------------ */

static bool plan_wants_instance(const struct retrieve_plan *plan,
                                const char *sop)
{
    if (plan->level != RETRIEVE_IMAGE)
        return true;
    for (size_t i = 0; i < plan->instance_count; i++)
        if (strcmp(plan->instances[i], sop) == 0)
            return true;
    return false;
}

/* True if @value reaches a server that does not percent-decode (query.
 * profile orthanc) as itself: the rule of find_plan.c. */
static bool survives_without_decoding(const char *value)
{
    for (const char *p = value; *p; p++) {
        char c = *p;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
              c == '~' || c == '^'))
            return false;
    }
    return true;
}

/*
 * The PatientID parameter of a PATIENT-level listing into @buf: the
 * Patient ID itself, or, when the server cannot match it exactly (orthanc
 * profile: a character that needs percent-decoding), a wildcard prefix up
 * to the first such character ("" when there is none: no filter). Every
 * result is matched exactly afterwards (patient_matches()). Returns true
 * if the server was asked for the exact value.
 */
static bool patient_filter(const struct retrieve_params *p, const char *pid,
                           char *buf, size_t len)
{
    size_t n = 0;

    if (!p->qido_raw_caret || survives_without_decoding(pid)) {
        snprintf(buf, len, "%s", pid);
        return true;
    }
    while (pid[n] != '\0') {
        char one[2] = { pid[n], '\0' };
        if (!survives_without_decoding(one))
            break;
        n++;
    }
    if (n == 0)
        buf[0] = '\0';
    else
        snprintf(buf, len, "%.*s*", (int)n, pid);
    return false;
}

/*
 * True if a listed instance's Patient ID @value is the plan's: exact and
 * case-sensitive after trimming spaces (PS3.4 C.2.2.2.1), whatever the
 * server matched (Azure folds case). An instance without one is taken
 * only when the server was asked to match the exact value.
 */
static bool patient_matches(const struct retrieve_plan *plan, const char *value,
                            bool server_exact)
{
    char pid[65];

    if (plan->patient_id == NULL)
        return true;
    if (value == NULL || value[0] == '\0')
        return server_exact && plan->level == RETRIEVE_PATIENT;
    return util_trim_copy(pid, sizeof(pid), value) == 0 &&
           strcmp(pid, plan->patient_id) == 0;
}

/* True if the listed @uid is one of @list (@count of them). */
static bool uid_in(const char *uid, char *const *list, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (strcmp(list[i], uid) == 0)
            return true;
    return false;
}

/* Maps a failed QIDO-RS page to a refusal. */
static void listing_status(const struct find_reply *reply, int r,
                           struct scp_retrieve_status *st)
{
    if (reply->token_failed) {
        st->status = STATUS_NO_TOKEN;
        snprintf(st->comment, sizeof(st->comment),
                 "no token for the DICOMweb server");
    } else if (r < 0 || reply->http_status == 0) {
        st->status = STATUS_UNREACHABLE;
        snprintf(st->comment, sizeof(st->comment),
                 "DICOMweb server unreachable");
    } else {
        st->status = STATUS_HTTP_ERROR;
        snprintf(st->comment, sizeof(st->comment), "QIDO-RS listing: HTTP %ld",
                 reply->http_status);
    }
}

/* Lists resource @k of the plan into @s; fills @st on failure. */
static int list_resource(struct rt_session *s, size_t k,
                         struct scp_retrieve_status *st)
{
    const struct retrieve_params *p = &s->svc->p;
    const struct retrieve_plan *plan = &s->plan;
    unsigned long offset = 0;
    char pid_filter[80] = "";
    char prev_first[UTIL_UID_MAX + 2] = "";
    bool server_exact = false;

    if (plan->level == RETRIEVE_PATIENT)
        server_exact =
            patient_filter(p, plan->patient_id, pid_filter, sizeof(pid_filter));
    for (;;) {
        struct qido_url url;
        struct find_reply reply;
        struct ds **results = NULL;
        size_t n = 0, added = 0, rejected = 0;
        char err[256];
        int r;

        qido_url_init(&url, plan->resources[k]);
        if (pid_filter[0] != '\0')
            qido_url_add(&url, "PatientID", pid_filter,
                         p->qido_raw_caret ? QIDO_RAW_CARET : 0);
        qido_url_add(&url, "includefield", "00080016", 0);
        if (plan->patient_id != NULL)
            qido_url_add(&url, "includefield", "00100020", 0);
        qido_url_add(&url, "includefield", "0020000D", 0);
        qido_url_add(&url, "includefield", "0020000E", 0);
        qido_url_add_uint(&url, "limit", p->page_size);
        if (offset > 0)
            qido_url_add_uint(&url, "offset", offset);
        if (qido_url_error(&url) < 0) {
            qido_url_free(&url);
            st->status = STATUS_OUT_OF_RESOURCES_MATCHES;
            snprintf(st->comment, sizeof(st->comment), "listing URL too long");
            return -E2BIG;
        }
        memset(&reply, 0, sizeof(reply));
        r = p->qido(p->qido_ctx, qido_url_text(&url), &reply);
        qido_url_free(&url);
        if (r < 0 || reply.http_status < 200 || reply.http_status > 299) {
            listing_status(&reply, r, st);
            log_warning("event=retrieve-list-failed caller=%s http_status=%ld "
                        "reason=\"%s\"",
                        s->caller, reply.http_status,
                        reply.token_failed ? "no token"
                        : r < 0            ? "no answer"
                                           : "HTTP error status");
            find_reply_free(&reply);
            return -EIO;
        }
        r = qido_parse_results(reply.body != NULL ? reply.body : "",
                               reply.body_len, &results, &n, err, sizeof(err));
        find_reply_free(&reply);
        if (r < 0) {
            st->status = STATUS_BAD_ANSWER;
            snprintf(st->comment, sizeof(st->comment),
                     "QIDO-RS answer is not DICOM JSON");
            log_warning("event=retrieve-list-failed caller=%s "
                        "reason=\"answer not DICOM JSON\"",
                        s->caller);
            return -EBADMSG;
        }
        for (size_t i = 0; i < n; i++) {
            const char *sop = ds_value(results[i], TAG_SOP_UID);
            const char *study = ds_value(results[i], TAG_STUDY_UID);
            const char *series = ds_value(results[i], TAG_SERIES_UID);
            const char *cls = ds_value(results[i], TAG_SOP_CLASS);

            if (study == NULL && plan->study_count == 1)
                study = plan->studies[0];
            if (series == NULL && plan->series_count == 1)
                series = plan->series[0];
            bool sop_ok = sop != NULL && util_uid_valid(sop);
            bool study_ok = study != NULL && util_uid_valid(study);
            bool series_ok = series != NULL && util_uid_valid(series);

            if (!sop_ok && plan->level == RETRIEVE_IMAGE)
                continue; /* not one of the UIDs asked */
            if (sop_ok && !plan_wants_instance(plan, sop))
                continue;
            if (!study_ok)
                study = "";
            if (!series_ok)
                series = "";
            /* The server's match is not trusted (§4, §5 of issue 15): a
             * case-insensitive or broadened match never sends another
             * patient's or study's instance. */
            if (!patient_matches(plan, ds_value(results[i], TAG_PATIENT_ID),
                                 server_exact) ||
                (study_ok && plan->study_count > 0 &&
                 !uid_in(study, plan->studies, plan->study_count)) ||
                (series_ok && plan->series_count > 0 &&
                 !uid_in(series, plan->series, plan->series_count))) {
                rejected++;
                continue;
            }
            /* Nothing we could fetch it by: a failed sub-operation when
             * it has a SOP Instance UID to report (§2), else only
             * counted in the log. */
            if (!sop_ok || !study_ok || !series_ok) {
                s->invalid_listed++;
                if (!sop_ok)
                    continue;
            }
            if (cls == NULL || !util_uid_valid(cls))
                cls = "";
            r = add_item(s, study, series, sop, cls);
            if (r < 0) {
                qido_results_free(results, n);
                st->status = STATUS_OUT_OF_RESOURCES_MATCHES;
                snprintf(st->comment, sizeof(st->comment),
                         r == -E2BIG ? "more than 65535 instances"
                                     : "out of memory");
                return r;
            }
            if (r == 1 && (!study_ok || !series_ok))
                s->items[s->count - 1].invalid = true;
            added += (size_t)r;
        }
        /* A page's first result again: a server that ignores offset. */
        const char *first = n > 0 ? ds_value(results[0], TAG_SOP_UID) : NULL;
        bool repeated = first != NULL && strcmp(first, prev_first) == 0;
        snprintf(prev_first, sizeof(prev_first), "%s",
                 first != NULL ? first : "");
        qido_results_free(results, n);
        if (rejected > 0)
            log_info("event=retrieve-not-matched caller=%s instances=%zu "
                     "reason=\"listed but not matching the identifier's "
                     "keys\"",
                     s->caller, rejected);
        /* A short page is the last; a page of nothing new too (a server
         * that ignores offset), unless it held only other patients'. */
        if (n < p->page_size || repeated || (added == 0 && rejected == 0))
            return 0;
        offset += n;
    }
}

static int cmp_items(const void *a, const void *b)
{
    const struct rt_item *x = a, *y = b;
    int c;

    if (x->from_spool != y->from_spool)
        return x->from_spool ? -1 : 1;
    c = strcmp(x->study, y->study);
    if (c == 0)
        c = strcmp(x->series, y->series);
    return c;
}

static int collect_classes(struct rt_session *s)
{
    s->classes = calloc(s->count + 1, sizeof(*s->classes));
    if (s->classes == NULL)
        return -ENOMEM;
    for (size_t k = 0; k < s->count; k++) {
        bool seen = s->items[k].sop_class[0] == '\0';
        for (size_t j = 0; j < s->class_count && !seen; j++)
            seen = strcmp(s->classes[j], s->items[k].sop_class) == 0;
        if (!seen)
            s->classes[s->class_count++] = s->items[k].sop_class;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Fetching                                                            */
/* ------------------------------------------------------------------ */

/* The sink hands over a whole part: match it to its item and queue it. */
static int on_file(void *ctx, const struct partfile_file *file, char *err,
                   size_t err_len)
{
    struct rt_session *s = ctx;
    struct part10_field f[2] = { { .tag = TAG_SOP_UID },
                                 { .tag = TAG_SOP_CLASS } };
    struct part10_info info;
    char perr[160];
    struct rt_item *it = NULL;
    int r;

    (void)err;
    (void)err_len;
    r = part10_read_file(file->path, f, 2, &info, perr, sizeof(perr));
    pthread_mutex_lock(&s->lock);
    if (r == 0 && f[0].value != NULL)
        it = find_item(s, f[0].value);
    if (it == NULL || it->state != ITEM_LISTED) {
        /* Not a part 10 file, not listed, or a second copy: dropped. */
        pthread_mutex_unlock(&s->lock);
        if (r < 0)
            log_warning("event=retrieve-part-dropped caller=%s index=%u "
                        "reason=\"not a DICOM file: %s\"",
                        s->caller, file->index, perr);
        (void)unlink(file->path);
        partfile_release(s->sink, file->size);
        part10_fields_clear(f, 2);
        return 0;
    }
    it->path = strdup(file->path);
    if (it->path == NULL) {
        pthread_mutex_unlock(&s->lock);
        part10_fields_clear(f, 2);
        return -ENOMEM; /* the sink removes the file */
    }
    it->size = file->size;
    snprintf(it->ts, sizeof(it->ts), "%s", info.transfer_syntax);
    if (f[1].value != NULL && util_uid_valid(f[1].value))
        snprintf(it->sop_class, sizeof(it->sop_class), "%s", f[1].value);
    push_locked(s, (size_t)(it - s->items));
    pthread_mutex_unlock(&s->lock);
    part10_fields_clear(f, 2);
    return 0;
}

static bool fetch_cancelled(void *ctx)
{
    struct rt_session *s = ctx;

    return atomic_load(&s->cancel);
}

/* Logs the diagnosis of a 403, once per session. */
static void log_forbidden(struct rt_session *s, const char *token)
{
    struct oauth_claims claims;
    char diag[1024];
    char err[128];
    bool have = token != NULL &&
                oauth_decode_claims(token, &claims, err, sizeof(err)) == 0;

    if (s->forbidden_logged)
        return;
    s->forbidden_logged = true;
    oauth_diagnose_forbidden(have ? &claims : NULL, s->svc->p.base_url,
                             (int64_t)time(NULL), diag, sizeof(diag));
    if (have)
        oauth_claims_free(&claims);
    log_err("event=forbidden url=%s service=wado diagnosis=\"%s\"",
            s->svc->p.base_url, diag);
}

/* One WADO-RS request for items [@from, @to) (one series, or one
 * instance), with one replay after a 401. */
static void fetch_group(struct rt_session *s, size_t from, size_t to)
{
    const struct retrieve_params *p = &s->svc->p;
    struct wado_result res;
    int r = 0;

    memset(&res, 0, sizeof(res));
    for (int attempt = 0; attempt < 2; attempt++) {
        struct wado_request rq;
        char *token = NULL;
        uint64_t generation = 0;
        char err[256] = "";

        if (p->tokens != NULL &&
            oauth_source_token(p->tokens, util_now_monotonic_ms(), &token,
                               &generation, err, sizeof(err)) < 0) {
            memset(&res, 0, sizeof(res));
            res.failure = WADO_UNAUTHORIZED;
            snprintf(res.error, sizeof(res.error), "no token");
            r = -EACCES;
            break;
        }
        memset(&rq, 0, sizeof(rq));
        rq.study_uid = s->items[from].study;
        rq.series_uid = s->items[from].series;
        rq.instance_uid =
            s->plan.level == RETRIEVE_IMAGE ? s->items[from].sop : NULL;
        rq.bearer = token;
        rq.cancelled = fetch_cancelled;
        rq.cancel_ctx = s;
        r = wado_fetch(s->wado, &rq, s->sink, &res);
        if (r < 0 && res.failure == WADO_UNAUTHORIZED && attempt == 0 &&
            p->tokens != NULL) {
            oauth_source_invalidate(p->tokens, generation);
            if (token != NULL) {
                explicit_bzero(token, strlen(token));
                free(token);
            }
            continue;
        }
        if (r < 0 && res.failure == WADO_FORBIDDEN)
            log_forbidden(s, token);
        if (token != NULL) {
            explicit_bzero(token, strlen(token));
            free(token);
        }
        break;
    }
    char why[160];
    if (r < 0)
        snprintf(why, sizeof(why), "WADO-RS %s (HTTP %ld)",
                 wado_failure_name(res.failure), res.http_status);
    else
        snprintf(why, sizeof(why), "not in the WADO-RS answer");
    unsigned missing = 0;
    pthread_mutex_lock(&s->lock);
    for (size_t k = from; k < to; k++)
        if (s->items[k].state == ITEM_LISTED) {
            fail_item_locked(s, k, why);
            missing++;
        }
    pthread_mutex_unlock(&s->lock);
    if (missing > 0 && res.failure != WADO_CANCELLED)
        log_warning("event=retrieve-fetch-failed caller=%s instances=%zu "
                    "missing=%u failure=%s http_status=%ld parts=%u",
                    s->caller, to - from, missing,
                    wado_failure_name(r < 0 ? res.failure : WADO_OK),
                    res.http_status, res.parts);
}

static void *fetch_thread(void *arg)
{
    struct rt_session *s = arg;
    size_t k = 0;

    while (k < s->count) {
        size_t end = k + 1;

        if (s->items[k].from_spool || s->items[k].invalid) {
            k++;
            continue;
        }
        if (s->plan.level != RETRIEVE_IMAGE)
            while (end < s->count && !s->items[end].from_spool &&
                   !s->items[end].invalid &&
                   strcmp(s->items[end].study, s->items[k].study) == 0 &&
                   strcmp(s->items[end].series, s->items[k].series) == 0)
                end++;
        if (atomic_load(&s->cancel))
            break;
        fetch_group(s, k, end);
        k = end;
    }
    pthread_mutex_lock(&s->lock);
    for (size_t j = 0; j < s->count; j++)
        fail_item_locked(s, j, "cancelled");
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* The spool: instances not delivered yet                              */
/* ------------------------------------------------------------------ */

/* True if the instance in the spool file @path is one @plan names. */
static bool spool_file_matches(const struct retrieve_plan *plan,
                               const char *path, char study[PART10_UID_MAX],
                               char series[PART10_UID_MAX],
                               char sop[PART10_UID_MAX],
                               char cls[PART10_UID_MAX],
                               char ts[PART10_UID_MAX])
{
    struct part10_field f[5] = {
        { .tag = TAG_STUDY_UID },  { .tag = TAG_SERIES_UID },
        { .tag = TAG_SOP_UID },    { .tag = TAG_SOP_CLASS },
        { .tag = TAG_PATIENT_ID },
    };
    struct part10_info info;
    bool match = false;

    if (part10_read_file(path, f, 5, &info, NULL, 0) < 0)
        return false;
    for (int i = 0; i < 4; i++)
        if (f[i].value == NULL || !util_uid_valid(f[i].value))
            goto out;
    switch (plan->level) {
    case RETRIEVE_PATIENT: {
        char pid[65];
        match = f[4].value != NULL &&
                util_trim_copy(pid, sizeof(pid), f[4].value) == 0 &&
                strcmp(pid, plan->patient_id) == 0;
        break;
    }
    case RETRIEVE_STUDY:
        for (size_t i = 0; i < plan->study_count && !match; i++)
            match = strcmp(plan->studies[i], f[0].value) == 0;
        break;
    case RETRIEVE_SERIES:
        if (strcmp(plan->studies[0], f[0].value) != 0)
            break;
        for (size_t i = 0; i < plan->series_count && !match; i++)
            match = strcmp(plan->series[i], f[1].value) == 0;
        break;
    case RETRIEVE_IMAGE:
        match = strcmp(plan->studies[0], f[0].value) == 0 &&
                strcmp(plan->series[0], f[1].value) == 0 &&
                plan_wants_instance(plan, f[2].value);
        break;
    }
    /* Patient Root above PATIENT level: the Patient ID asked too. */
    if (match && plan->level != RETRIEVE_PATIENT && plan->patient_id != NULL) {
        char pid[65];
        match = f[4].value != NULL &&
                util_trim_copy(pid, sizeof(pid), f[4].value) == 0 &&
                strcmp(pid, plan->patient_id) == 0;
    }
    if (match) {
        snprintf(study, PART10_UID_MAX, "%s", f[0].value);
        snprintf(series, PART10_UID_MAX, "%s", f[1].value);
        snprintf(sop, PART10_UID_MAX, "%s", f[2].value);
        snprintf(cls, PART10_UID_MAX, "%s", f[3].value);
        snprintf(ts, PART10_UID_MAX, "%s", info.transfer_syntax);
    }
out:
    part10_fields_clear(f, 5);
    return match;
}

/*
 * Takes the spool's undelivered instances that the plan names: each a
 * hard link in tmp/ (so the uploader may deliver and remove the entry
 * meanwhile), queued at once. A study filter first reads meta/ (no file
 * is opened for another study).
 */
static int take_from_spool(struct rt_session *s)
{
    struct retrieve_service *svc = s->svc;
    static const enum spool_state states[] = { SPOOL_INCOMING, SPOOL_ACTIVE,
                                               SPOOL_DEFERRED };

    for (size_t st = 0; st < sizeof(states) / sizeof(states[0]); st++) {
        struct spool_entry *entries = NULL;
        size_t n = 0;

        if (spool_list(svc->p.spool, states[st], &entries, &n, NULL, 0) < 0)
            continue;
        for (size_t i = 0; i < n; i++) {
            char path[4200], link_path[4200];
            char study[PART10_UID_MAX], series[PART10_UID_MAX];
            char sop[PART10_UID_MAX], cls[PART10_UID_MAX], ts[PART10_UID_MAX];
            struct spool_meta meta;
            unsigned char rnd[8];

            if (s->plan.level != RETRIEVE_PATIENT &&
                spool_meta_read(svc->p.spool, entries[i].id, &meta) == 0 &&
                meta.study_uid[0] != '\0') {
                bool wanted = false;
                for (size_t k = 0; k < s->plan.study_count && !wanted; k++)
                    wanted = strcmp(s->plan.studies[k], meta.study_uid) == 0;
                if (!wanted)
                    continue;
            }
            if (spool_entry_path(svc->p.spool, states[st], entries[i].id, path,
                                 sizeof(path)) < 0 ||
                !spool_file_matches(&s->plan, path, study, series, sop, cls,
                                    ts))
                continue;
            if (find_item(s, sop) != NULL || util_random_bytes(rnd, 8) < 0)
                continue;
            snprintf(link_path, sizeof(link_path),
                     "%s/retr-spool-%02x%02x%02x%02x%02x%02x%02x%02x.dcm",
                     svc->tmp_dir, rnd[0], rnd[1], rnd[2], rnd[3], rnd[4],
                     rnd[5], rnd[6], rnd[7]);
            if (link(path, link_path) < 0)
                continue; /* delivered meanwhile: the server lists it */
            int r = add_item(s, study, series, sop, cls);
            if (r <= 0) {
                (void)unlink(link_path);
                if (r < 0) {
                    free(entries);
                    return r;
                }
                continue;
            }
            struct rt_item *it = &s->items[s->count - 1];
            it->from_spool = true;
            it->path = strdup(link_path);
            if (it->path == NULL) {
                (void)unlink(link_path);
                free(entries);
                return -ENOMEM;
            }
            snprintf(it->ts, sizeof(it->ts), "%s", ts);
            struct stat sb;
            if (stat(link_path, &sb) == 0)
                it->size = (uint64_t)sb.st_size;
            s->spool_served++;
        }
        free(entries);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* The handler                                                         */
/* ------------------------------------------------------------------ */

static void session_free(struct rt_session *s)
{
    if (s == NULL)
        return;
    if (s->thread_started) {
        atomic_store(&s->cancel, true);
        pthread_join(s->thread, NULL);
    }
    for (size_t k = 0; k < s->count; k++) {
        if (s->items[k].path != NULL && s->items[k].state != ITEM_DONE)
            (void)unlink(s->items[k].path);
        free(s->items[k].path);
    }
    partfile_free(s->sink);
    wado_client_free(s->wado);
    retrieve_plan_free(&s->plan);
    free(s->items);
    free(s->index);
    free(s->classes);
    free(s->queue);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    atomic_fetch_sub(&s->svc->running, 1);
    free(s);
}

static void *rt_begin(void *ctx, enum scp_retrieve_kind kind,
                      enum scp_find_model model, const struct ds *identifier,
                      const char *caller, const char *destination,
                      struct scp_retrieve_info *ret_info,
                      struct scp_retrieve_status *st)
{
    struct retrieve_service *svc = ctx;
    struct rt_session *s;
    char err[256] = "";
    int r;

    (void)destination;
    memset(st, 0, sizeof(*st));
    if (atomic_fetch_add(&svc->running, 1) >= svc->p.max_parallel) {
        atomic_fetch_sub(&svc->running, 1);
        st->status = STATUS_OUT_OF_RESOURCES_MATCHES;
        snprintf(st->comment, sizeof(st->comment),
                 "%u C-MOVE/C-GET already running (retrieve.max_parallel)",
                 svc->p.max_parallel);
        return NULL;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        atomic_fetch_sub(&svc->running, 1);
        st->status = STATUS_OUT_OF_RESOURCES_MATCHES;
        snprintf(st->comment, sizeof(st->comment), "out of memory");
        return NULL;
    }
    s->svc = svc;
    s->kind = kind;
    s->started_ms = util_now_monotonic_ms();
    snprintf(s->caller, sizeof(s->caller), "%s", caller);
    pthread_condattr_t cattr;
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &cattr);
    pthread_condattr_destroy(&cattr);
    atomic_init(&s->cancel, false);

    r = retrieve_plan(identifier, model, &s->plan, err, sizeof(err));
    if (r < 0) {
        st->status = r == -EINVAL ? STATUS_IDENTIFIER_MISMATCH
                                  : STATUS_OUT_OF_RESOURCES_MATCHES;
        snprintf(st->comment, sizeof(st->comment), "%s",
                 r == -EINVAL ? err : "out of memory");
        session_free(s);
        return NULL;
    }
    r = take_from_spool(s);
    for (size_t k = 0; r == 0 && k < s->plan.resource_count; k++)
        r = list_resource(s, k, st);
    if (r < 0 && (r == -ENOMEM || st->status == 0)) {
        st->status = STATUS_OUT_OF_RESOURCES_MATCHES;
        snprintf(st->comment, sizeof(st->comment), "%s",
                 r == -ENOMEM ? "out of memory" : "more than 65535 instances");
    }
    if (r < 0) {
        session_free(s);
        return NULL;
    }
    if (s->count > 1) {
        qsort(s->items, s->count, sizeof(*s->items), cmp_items);
        if (rebuild_index(s, s->index_cap) < 0)
            r = -ENOMEM;
    }
    if (r == 0)
        r = collect_classes(s);
    if (r == 0 && s->count > 0) {
        s->queue = calloc(s->count, sizeof(*s->queue));
        if (s->queue == NULL)
            r = -ENOMEM;
    }
    if (r == 0 && s->count > s->spool_served) {
        struct partfile_params pp = {
            .dir = svc->tmp_dir,
            .prefix = "retr",
            .budget_bytes = svc->p.max_temp_bytes,
            .on_file = on_file,
            .ctx = s,
        };
        struct wado_params wp = {
            .base_url = svc->p.base_url,
            .ca_file = svc->p.ca_file,
            .connect_timeout_s = svc->p.timeout_s,
            .stall_timeout_s = svc->p.timeout_s,
        };
        r = partfile_new(&pp, &s->sink, err, sizeof(err));
        if (r == 0) {
            s->wado = wado_client_new(&wp);
            if (s->wado == NULL)
                r = -ENOMEM;
        }
        if (r < 0)
            log_err("event=retrieve-failed caller=%s reason=\"%s\"", caller,
                    r == -ENOMEM ? "out of memory" : err);
    }
    if (r < 0) {
        st->status = STATUS_OUT_OF_RESOURCES_MATCHES;
        snprintf(st->comment, sizeof(st->comment), "cannot set up the fetch");
        session_free(s);
        return NULL;
    }
    /* What the spool had is ready at once. */
    for (size_t k = 0; k < s->count; k++)
        if (s->items[k].from_spool)
            push_locked(s, k);
        else if (s->items[k].invalid)
            fail_item_locked(s, k, "listed with an invalid UID");
    if (s->invalid_listed > 0)
        log_warning("event=retrieve-invalid-uids caller=%s instances=%zu "
                    "reason=\"listed with an invalid SOP, Study or Series "
                    "Instance UID: failed\"",
                    caller, s->invalid_listed);
    if (s->sink != NULL) {
        r = pthread_create(&s->thread, NULL, fetch_thread, s);
        if (r != 0) {
            st->status = STATUS_OUT_OF_RESOURCES_MATCHES;
            snprintf(st->comment, sizeof(st->comment),
                     "cannot start the fetch");
            session_free(s);
            return NULL;
        }
        s->thread_started = true;
    }
    static const char *const level_names[] = { "PATIENT", "STUDY", "SERIES",
                                               "IMAGE" };
    log_info("event=retrieve-listed kind=%s caller=%s level=%s instances=%zu "
             "from_spool=%u sop_classes=%zu",
             kind == SCP_RETRIEVE_MOVE ? "move" : "get", caller,
             level_names[s->plan.level], s->count, s->spool_served,
             s->class_count);
    ret_info->total = (unsigned)s->count;
    ret_info->sop_classes = (const char *const *)s->classes;
    ret_info->sop_class_count = s->class_count;
    return s;
}

static int rt_next(void *session, unsigned wait_ms,
                   struct scp_retrieve_item *ret)
{
    struct rt_session *s = session;
    struct timespec deadline;
    size_t k;

    memset(ret, 0, sizeof(*ret));
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += wait_ms / 1000;
    deadline.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->lock);
    while (s->q_len == 0) {
        if (s->handed >= s->count) {
            pthread_mutex_unlock(&s->lock);
            return 0;
        }
        if (wait_ms == 0 || pthread_cond_timedwait(&s->cond, &s->lock,
                                                   &deadline) == ETIMEDOUT) {
            bool empty = s->q_len == 0;
            if (empty) {
                pthread_mutex_unlock(&s->lock);
                return -EAGAIN;
            }
        }
    }
    k = s->queue[s->q_head];
    s->q_head = (s->q_head + 1) % s->count;
    s->q_len--;
    s->handed++;
    s->items[k].state = ITEM_HANDED;
    pthread_mutex_unlock(&s->lock);

    struct rt_item *it = &s->items[k];
    ret->path = it->path;
    ret->sop_class_uid = it->sop_class;
    ret->sop_instance_uid = it->sop;
    ret->transfer_syntax = it->ts;
    ret->why = it->path == NULL ? it->why : NULL;
    ret->size = it->size;
    ret->ref = it;
    return 1;
}

static void rt_release(void *session, const struct scp_retrieve_item *item)
{
    struct rt_session *s = session;
    struct rt_item *it = item->ref;

    if (it == NULL)
        return;
    if (it->path != NULL) {
        (void)unlink(it->path);
        if (!it->from_spool)
            partfile_release(s->sink, it->size);
    }
    pthread_mutex_lock(&s->lock);
    it->state = ITEM_DONE;
    pthread_mutex_unlock(&s->lock);
}

static void rt_cancel(void *session)
{
    struct rt_session *s = session;

    atomic_store(&s->cancel, true);
    /* Nothing fetched yet must wait for the thread to notice: it queues
     * the rest as failed as soon as its transfer stops. */
    if (!s->thread_started) {
        pthread_mutex_lock(&s->lock);
        for (size_t k = 0; k < s->count; k++)
            fail_item_locked(s, k, "cancelled");
        pthread_mutex_unlock(&s->lock);
    }
}

static void rt_end(void *session)
{
    struct rt_session *s = session;

    log_info("event=retrieve-session-end caller=%s instances=%zu ms=%llu",
             s->caller, s->count,
             (unsigned long long)(util_now_monotonic_ms() - s->started_ms));
    session_free(s);
}

void retrieve_handler_init(struct retrieve_service *svc,
                           struct scp_retrieve_handler *ret)
{
    memset(ret, 0, sizeof(*ret));
    ret->ctx = svc;
    ret->begin = rt_begin;
    ret->next = rt_next;
    ret->release = rt_release;
    ret->cancel = rt_cancel;
    ret->end = rt_end;
}
