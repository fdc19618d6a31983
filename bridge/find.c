/* SPDX-License-Identifier: Apache-2.0 */
/*
 * find - C-FIND through QIDO-RS (see find.h).
 *
 * One C-FIND is one session:
 *   find_begin()  checks the identifier against the information model
 *                 and plans the QIDO-RS requests (find_plan.c): the
 *                 resource, and the keys the server matches (URL
 *                 parameters) and those matched here (match.h). Every
 *                 key with a value is matched here again on each
 *                 result, so answers follow PS3.4 C.2.2.2 whatever the
 *                 server does; a key the server matched but did not
 *                 return is taken on its word.
 *   find_next()   hands out one match at a time, fetching the next page
 *                 only when the current one is used up (so a C-CANCEL
 *                 stops further requests), dropping duplicates by unique
 *                 key. PATIENT level reads every page first, then groups
 *                 studies into patients.
 */
#include "find.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"
#include "dicom/dataset.h"
#include "dicom/redact.h"
#include "dicom/tags.h"
#include "find_int.h"
#include "match.h"
#include "web/dicomweb.h"
#include "web/qido.h"
#include "web/stow.h"

#define STATUS_SUCCESS 0x0000
#define STATUS_CANCEL 0xFE00
#define STATUS_OUT_OF_RESOURCES 0xA700
#define STATUS_IDENTIFIER_MISMATCH 0xA900
#define STATUS_UNREACHABLE 0xC001
#define STATUS_HTTP_ERROR 0xC002
#define STATUS_BAD_ANSWER 0xC003
#define STATUS_NO_TOKEN 0xC004

/* Idle connections kept for the next C-FIND. */
#define FIND_WEB_POOL 8

/* ------------------------------------------------------------------ */
/* A set of unique keys (de-duplication across pages)                  */
/* ------------------------------------------------------------------ */

struct key_set {
    char **slots;
    size_t cap; /* power of two */
    size_t count;
};

static uint64_t key_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */

    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

/* Adds @key; returns 1 if it was new, 0 if present, -ENOMEM. */
static int key_set_add(struct key_set *set, const char *key)
{
    size_t i;

    if ((set->count + 1) * 2 > set->cap) {
        size_t cap = set->cap == 0 ? 64 : set->cap * 2;
        char **slots = calloc(cap, sizeof(*slots));
        if (slots == NULL)
            return -ENOMEM;
        for (size_t j = 0; j < set->cap; j++) {
            if (set->slots[j] == NULL)
                continue;
            i = key_hash(set->slots[j]) & (cap - 1);
            while (slots[i] != NULL)
                i = (i + 1) & (cap - 1);
            slots[i] = set->slots[j];
        }
        free(set->slots);
        set->slots = slots;
        set->cap = cap;
    }
    i = key_hash(key) & (set->cap - 1);
    while (set->slots[i] != NULL) {
        if (strcmp(set->slots[i], key) == 0)
            return 0;
        i = (i + 1) & (set->cap - 1);
    }
    set->slots[i] = strdup(key);
    if (set->slots[i] == NULL)
        return -ENOMEM;
    set->count++;
    return 1;
}

static void key_set_free(struct key_set *set)
{
    for (size_t i = 0; i < set->cap; i++)
        free(set->slots[i]);
    free(set->slots);
    memset(set, 0, sizeof(*set));
}

/* ------------------------------------------------------------------ */
/* Service and sessions                                                */
/* ------------------------------------------------------------------ */

struct find_service {
    struct find_params params;
    char retrieve_ae[UTIL_AE_TITLE_MAX + 1]; /* "": retrieve not offered */
    atomic_ulong requests;
};

/* One patient (PATIENT level): the first study seen and the sums. */
struct find_patient {
    struct ds *entity;
    unsigned long studies;
    unsigned long series;
    unsigned long instances;
};

struct find_session {
    struct find_service *svc;
    enum scp_find_model model;
    enum find_level level;
    char caller[UTIL_AE_TITLE_MAX + 1];
    struct ds *request;    /* the identifier, UTF-8 */
    struct find_plan plan; /* resource, keys the server matches */

    unsigned long offset;  /* next offset to ask */
    unsigned long fetched; /* results read from the server */
    unsigned long sent;    /* matches handed out */
    unsigned long requests;
    bool server_done;
    bool capped;
    struct ds **page;
    size_t page_count;
    size_t page_pos;
    struct key_set seen;

    struct find_patient *patients; /* PATIENT level */
    size_t patient_count;
    size_t patient_pos;
    bool patients_ready;
    uint64_t started_ms;
};

static void set_status(struct scp_find_status *st, uint16_t status,
                       const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_status(struct scp_find_status *st, uint16_t status,
                       const char *fmt, ...)
{
    va_list ap;

    st->status = status;
    st->comment[0] = '\0';
    if (fmt == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(st->comment, sizeof(st->comment), fmt, ap);
    va_end(ap);
}

struct find_service *find_service_new(const struct find_params *params)
{
    struct find_service *svc = calloc(1, sizeof(*svc));

    if (svc == NULL)
        return NULL;
    svc->params = *params;
    if (params->retrieve_ae != NULL &&
        strlen(params->retrieve_ae) >= sizeof(svc->retrieve_ae)) {
        free(svc);
        return NULL;
    }
    snprintf(svc->retrieve_ae, sizeof(svc->retrieve_ae), "%s",
             params->retrieve_ae != NULL ? params->retrieve_ae : "");
    svc->params.retrieve_ae = svc->retrieve_ae;
    if (svc->params.page_size == 0)
        svc->params.page_size = 100;
    if (svc->params.max_results == 0)
        svc->params.max_results = 5000;
    atomic_init(&svc->requests, 0);
    return svc;
}

void find_service_free(struct find_service *svc)
{
    free(svc);
}

unsigned long find_service_requests(struct find_service *svc)
{
    return atomic_load(&svc->requests);
}

void find_reply_free(struct find_reply *reply)
{
    free(reply->body);
    reply->body = NULL;
    reply->body_len = 0;
    redact_free(reply->secrets);
    reply->secrets = NULL;
}

/* What a server's text about a page of @s may echo and must not show:
 * the identifier's values and the exchange's secrets. NULL (out of
 * memory, or secrets not gathered): redact_text() withholds the text. */
static struct redact *page_redact(const struct find_session *s,
                                  const struct find_reply *reply)
{
    struct redact *hide;

    if (reply->unchecked)
        return NULL;
    hide = redact_new();
    if (hide != NULL) {
        (void)redact_add_dataset(hide, s->request);
        (void)redact_merge(hide, reply->secrets);
    }
    return hide;
}

static bool level_from_text(const char *text, enum find_level *ret)
{
    char trimmed[32];

    if (text == NULL || util_trim_copy(trimmed, sizeof(trimmed), text) < 0)
        return false;
    for (size_t i = 0; i < 4; i++) {
        if (strcmp(trimmed, find__level_names[i]) == 0) {
            *ret = (enum find_level)i;
            return true;
        }
    }
    return false;
}

static void session_free(struct find_session *s)
{
    if (s == NULL)
        return;
    ds_free(s->request);
    find__plan_free(&s->plan);
    qido_results_free(s->page, s->page_count);
    key_set_free(&s->seen);
    for (size_t i = 0; i < s->patient_count; i++)
        ds_free(s->patients[i].entity);
    free(s->patients);
    free(s);
}

/* ------------------------------------------------------------------ */
/* Requests                                                            */
/* ------------------------------------------------------------------ */

/* The resource path of the session, for logs (no parameter: those may
 * hold patient data). */
static void session_resource(const struct find_session *s, char *buf,
                             size_t len)
{
    size_t n = strcspn(s->plan.query_base, "?");

    if (n >= len)
        n = len - 1;
    memcpy(buf, s->plan.query_base, n);
    buf[n] = '\0';
}

/* No HTTP answer (transport or token failure): the status and the log
 * line, the text checked for the identifier's values too. */
static void report_no_answer(const struct find_session *s,
                             const struct find_reply *reply,
                             const char *resource, struct scp_find_status *st)
{
    /* Our words, libcurl's, or the token endpoint's (its secrets already
     * hidden). */
    char why[sizeof(reply->error) + 8];
    struct redact *hide = page_redact(s, reply);

    redact_text(hide, reply->error, strlen(reply->error), sizeof(reply->error),
                why, sizeof(why));
    redact_free(hide);
    if (reply->token_failed) {
        set_status(st, STATUS_NO_TOKEN, "no token: %s", why);
        log_warning("event=find-failed from=%s resource=%s "
                    "reason=\"no token: %s\"",
                    s->caller, resource, why);
    } else {
        set_status(st, STATUS_UNREACHABLE, "QIDO-RS unreachable: %s", why);
        log_warning("event=find-failed from=%s resource=%s "
                    "reason=\"QIDO-RS server unreachable: %s\"",
                    s->caller, resource, why);
    }
}

/* An HTTP status other than 200 and 204: the status and the log line
 * with what the server said, without what it may echo of the query. */
static void report_http_error(const struct find_session *s,
                              const struct find_reply *reply,
                              const char *resource, struct scp_find_status *st)
{
    char text[REDACT_TEXT_MAX + 8];
    struct redact *hide = page_redact(s, reply);

    if (reply->http_status == 403)
        set_status(st, STATUS_HTTP_ERROR,
                   "QIDO-RS 403 Forbidden: identity lacks a role");
    else if (reply->http_status == 401)
        set_status(st, STATUS_HTTP_ERROR, "QIDO-RS 401: token refused twice");
    else
        set_status(st, STATUS_HTTP_ERROR, "QIDO-RS answered HTTP %ld",
                   reply->http_status);
    if (stow_request_action(reply->http_status) == STOW_REDIRECTED) {
        /* Never followed: the token stays with the configured server,
         * and the operator is told where it points. */
        redact_text(hide, reply->location, strlen(reply->location),
                    REDACT_TEXT_MAX, text, sizeof(text));
        log_warning("event=find-failed from=%s resource=%s status=%ld "
                    "reason=\"QIDO-RS answered HTTP %ld, a redirect to "
                    "'%s': upload.url should change (redirects are not "
                    "followed)\"",
                    s->caller, resource, reply->http_status, reply->http_status,
                    text);
    } else {
        /* Azure explains its 400s. */
        redact_text(hide, reply->body, reply->body_len, REDACT_TEXT_MAX, text,
                    sizeof(text));
        log_warning("event=find-failed from=%s resource=%s status=%ld "
                    "reason=\"QIDO-RS answered HTTP %ld\" "
                    "diagnosis=\"%s\" body=\"%s\"",
                    s->caller, resource, reply->http_status, reply->http_status,
                    reply->error, text);
    }
    redact_free(hide);
}

/*
 * GETs one page: @limit results from @offset. Returns 0 with the results
 * (possibly none), or -EIO with a failure status in @st.
 */
static int fetch_page(struct find_session *s, unsigned long limit,
                      unsigned long offset, struct ds ***ret_results,
                      size_t *ret_count, bool *ret_more,
                      struct scp_find_status *st)
{
    struct find_service *svc = s->svc;
    struct find_reply reply;
    struct redact *hide = NULL;
    char resource[160];
    char err[256];
    char text[REDACT_TEXT_MAX + 8];
    char *url = NULL;
    int r;

    *ret_results = NULL;
    *ret_count = 0;
    *ret_more = false;
    if (asprintf(&url, "%s%climit=%lu&offset=%lu", s->plan.query_base,
                 strchr(s->plan.query_base, '?') != NULL ? '&' : '?', limit,
                 offset) < 0) {
        set_status(st, STATUS_OUT_OF_RESOURCES, "out of memory");
        return -EIO;
    }
    memset(&reply, 0, sizeof(reply));
    r = svc->params.fetch(svc->params.fetch_ctx, url, &reply);
    free(url);
    atomic_fetch_add(&svc->requests, 1);
    s->requests++;
    session_resource(s, resource, sizeof(resource));

    if (r < 0 || reply.http_status == 0) {
        report_no_answer(s, &reply, resource, st);
        find_reply_free(&reply);
        return -EIO;
    }
    if (reply.http_status == 204) {
        find_reply_free(&reply);
        return 0;
    }
    if (reply.http_status != 200) {
        report_http_error(s, &reply, resource, st);
        find_reply_free(&reply);
        return -EIO;
    }
    r = qido_parse_results(reply.body != NULL ? reply.body : "", reply.body_len,
                           ret_results, ret_count, err, sizeof(err));
    *ret_more = reply.more_results;
    if (r < 0 && r != -ENOMEM) {
        hide = page_redact(s, &reply);
        redact_text(hide, err, strlen(err), REDACT_TEXT_MAX, text,
                    sizeof(text));
        redact_free(hide);
    }
    find_reply_free(&reply);
    if (r == -ENOMEM) {
        set_status(st, STATUS_OUT_OF_RESOURCES, "out of memory");
        return -EIO;
    }
    if (r < 0) {
        set_status(st, STATUS_BAD_ANSWER,
                   "QIDO-RS answer is not DICOM "
                   "JSON");
        log_warning("event=find-failed from=%s resource=%s status=200 "
                    "reason=\"QIDO-RS answer is not DICOM JSON: %s\"",
                    s->caller, resource, text);
        return -EIO;
    }
    return 0;
}

/*
 * Reads the next page into the session. Sets server_done when the server
 * has no more, capped when max_results were read and more exist.
 * Returns 0 or -EIO with a failure status.
 */
static int next_page(struct find_session *s, struct scp_find_status *st)
{
    unsigned long max = s->svc->params.max_results;
    unsigned long limit = s->svc->params.page_size;
    struct ds **results;
    size_t count;
    bool more;
    int r;

    qido_results_free(s->page, s->page_count);
    s->page = NULL;
    s->page_count = 0;
    s->page_pos = 0;

    if (s->fetched >= max) {
        /* At the cap: one result more tells whether the list is whole. */
        r = fetch_page(s, 1, s->offset, &results, &count, &more, st);
        if (r < 0)
            return r;
        qido_results_free(results, count);
        s->capped = count > 0;
        s->server_done = true;
        return 0;
    }
    if (limit > max - s->fetched)
        limit = max - s->fetched;
    r = fetch_page(s, limit, s->offset, &results, &count, &more, st);
    if (r < 0)
        return r;
    s->page = results;
    s->page_count = count;
    s->fetched += count;
    s->offset += count;
    /* Fewer than asked means the end, unless the server warned that more
     * results can be requested (PS3.18 8.3.4.4). */
    if (count == 0 || (count < limit && !more))
        s->server_done = true;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Answers                                                             */
/* ------------------------------------------------------------------ */

/* Copies the items of entity sequence @src into @dst, keeping only the
 * keys of @key_item when it names any. */
static int copy_sequence(struct ds_attr *dst, const struct ds_attr *src,
                         const struct ds *key_item)
{
    for (size_t i = 0; i < src->item_count; i++) {
        struct ds *item = ds_add_item(dst);
        if (item == NULL)
            return -ENOMEM;
        if (key_item == NULL || key_item->count == 0) {
            for (size_t j = 0; j < src->items[i]->count; j++)
                if (ds_put_copy(item, &src->items[i]->attrs[j]) < 0)
                    return -ENOMEM;
            continue;
        }
        for (size_t j = 0; j < key_item->count; j++) {
            const struct ds_attr *key = &key_item->attrs[j];
            const struct ds_attr *attr = ds_get(src->items[i], key->tag);
            struct ds_attr *out;

            if (attr != NULL && match_vr_is(attr->vr, "SQ") &&
                match_vr_is(key->vr, "SQ")) {
                out = ds_put(item, key->tag, "SQ", NULL);
                if (out == NULL ||
                    copy_sequence(out, attr,
                                  key->item_count > 0 ? key->items[0] : NULL) <
                        0)
                    return -ENOMEM;
                continue;
            }
            out = ds_put(item, key->tag, key->vr,
                         attr != NULL ? attr->value : NULL);
            if (out == NULL)
                return -ENOMEM;
        }
    }
    return 0;
}

/*
 * The response identifier for @entity: exactly the keys asked for, with
 * the entity's values (zero length when it has none), the
 * QueryRetrieveLevel, and the Retrieve AE Title: ours when retrieve is
 * offered (asked for or not), else zero length when asked for (the
 * server's is never passed on: C-MOVE is not answered there for us).
 * NULL on out-of-memory.
 */
static struct ds *build_answer(const struct find_session *s,
                               const struct ds *entity)
{
    const char *retrieve_ae = s->svc->retrieve_ae;
    struct ds *answer = ds_new();

    if (answer == NULL)
        return NULL;
    for (size_t i = 0; i < s->request->count; i++) {
        const struct ds_attr *key = &s->request->attrs[i];
        const struct ds_attr *attr;
        struct ds_attr *out;
        const char *vr = key->vr;

        if (key->tag == DCM_TAG_SpecificCharacterSet ||
            (key->tag >> 16) <= 0x0002)
            continue;
        if (key->tag == DCM_TAG_QueryRetrieveLevel) {
            if (ds_put(answer, DCM_TAG_QueryRetrieveLevel, "CS",
                       find__level_names[s->level]) == NULL)
                goto oom;
            continue;
        }
        if (key->tag == DCM_TAG_RetrieveAETitle) {
            if (ds_put(answer, DCM_TAG_RetrieveAETitle, "AE",
                       retrieve_ae[0] != '\0' ? retrieve_ae : NULL) == NULL)
                goto oom;
            continue;
        }
        attr = ds_get(entity, key->tag);
        if (match_vr_is(key->vr, "SQ")) {
            out = ds_put(answer, key->tag, "SQ", NULL);
            if (out == NULL)
                goto oom;
            if (attr != NULL && match_vr_is(attr->vr, "SQ") &&
                copy_sequence(out, attr,
                              key->item_count > 0 ? key->items[0] : NULL) < 0)
                goto oom;
            continue;
        }
        if ((match_vr_is(vr, "UN") || vr[0] == '\0') && attr != NULL)
            vr = attr->vr;
        if (attr != NULL && match_vr_is(attr->vr, "SQ"))
            attr = NULL; /* the server says SQ, the key does not */
        if (ds_put(answer, key->tag, vr, attr != NULL ? attr->value : NULL) ==
            NULL)
            goto oom;
    }
    if (ds_get(answer, DCM_TAG_QueryRetrieveLevel) == NULL &&
        ds_put(answer, DCM_TAG_QueryRetrieveLevel, "CS",
               find__level_names[s->level]) == NULL)
        goto oom;
    if (retrieve_ae[0] != '\0' &&
        ds_get(answer, DCM_TAG_RetrieveAETitle) == NULL &&
        ds_put(answer, DCM_TAG_RetrieveAETitle, "AE", retrieve_ae) == NULL)
        goto oom;
    return answer;
oom:
    ds_free(answer);
    return NULL;
}

/* True if @entity satisfies every key of the request. @computed_only:
 * only the patient count keys (after grouping); otherwise every key but
 * those. */
static bool entity_matches(const struct find_session *s,
                           const struct ds *entity, bool computed_only)
{
    for (size_t i = 0; i < s->request->count; i++) {
        const struct ds_attr *key = &s->request->attrs[i];
        bool computed = key->tag == DCM_TAG_NumberOfPatientRelatedStudies ||
                        key->tag == DCM_TAG_NumberOfPatientRelatedSeries ||
                        key->tag == DCM_TAG_NumberOfPatientRelatedInstances;

        if (key->tag == DCM_TAG_QueryRetrieveLevel ||
            key->tag == DCM_TAG_SpecificCharacterSet ||
            key->tag == DCM_TAG_RetrieveAETitle || (key->tag >> 16) <= 0x0002)
            continue;
        if (computed != computed_only)
            continue;
        /* At PATIENT level only patient keys select patients. */
        if (s->level == FIND_LEVEL_PATIENT && !computed &&
            find__attr_level(key->tag, FIND_LEVEL_PATIENT) !=
                FIND_LEVEL_PATIENT)
            continue;
        if (!match_key(key, entity, s->plan.server_matched[i]))
            return false;
    }
    return true;
}

/* ------------------------------------------------------------------ */
/* PATIENT level                                                       */
/* ------------------------------------------------------------------ */

static unsigned long value_ulong(const struct ds *ds, uint32_t tag)
{
    const char *v = ds_value(ds, tag);

    return v != NULL ? strtoul(v, NULL, 10) : 0;
}

/* Adds a matching study to its patient (Patient ID + Issuer). */
static int add_study_to_patients(struct find_session *s, struct ds *study)
{
    const char *id = ds_value(study, DCM_TAG_PatientID);
    const char *issuer = ds_value(study, DCM_TAG_IssuerOfPatientID);
    struct find_patient *p = NULL;

    if (id == NULL)
        id = "";
    if (issuer == NULL)
        issuer = "";
    for (size_t i = 0; i < s->patient_count; i++) {
        const struct ds *e = s->patients[i].entity;
        const char *eid = ds_value(e, DCM_TAG_PatientID);
        const char *eissuer = ds_value(e, DCM_TAG_IssuerOfPatientID);
        if (strcmp(eid != NULL ? eid : "", id) == 0 &&
            strcmp(eissuer != NULL ? eissuer : "", issuer) == 0) {
            p = &s->patients[i];
            break;
        }
    }
    if (p == NULL) {
        struct find_patient *grown =
            realloc(s->patients, (s->patient_count + 1) * sizeof(*grown));
        if (grown == NULL)
            return -ENOMEM;
        s->patients = grown;
        p = &s->patients[s->patient_count];
        memset(p, 0, sizeof(*p));
        p->entity = ds_copy(study);
        if (p->entity == NULL)
            return -ENOMEM;
        s->patient_count++;
    }
    p->studies++;
    p->series += value_ulong(study, DCM_TAG_NumberOfStudyRelatedSeries);
    p->instances += value_ulong(study, DCM_TAG_NumberOfStudyRelatedInstances);
    return 0;
}

/* Reads every page and groups the studies into patients. */
static int collect_patients(struct find_session *s, struct scp_find_status *st)
{
    char number[32];

    while (!s->server_done) {
        int r = next_page(s, st);
        if (r < 0)
            return r;
        for (size_t i = 0; i < s->page_count; i++) {
            const char *uid = ds_value(s->page[i], DCM_TAG_StudyInstanceUID);
            if (!entity_matches(s, s->page[i], false))
                continue;
            if (uid != NULL && key_set_add(&s->seen, uid) == 0)
                continue; /* the same study on two pages */
            if (add_study_to_patients(s, s->page[i]) < 0) {
                set_status(st, STATUS_OUT_OF_RESOURCES, "out of memory");
                return -EIO;
            }
        }
    }
    for (size_t i = 0; i < s->patient_count; i++) {
        struct find_patient *p = &s->patients[i];
        snprintf(number, sizeof(number), "%lu", p->studies);
        if (ds_put(p->entity, DCM_TAG_NumberOfPatientRelatedStudies, "IS",
                   number) == NULL)
            goto oom;
        snprintf(number, sizeof(number), "%lu", p->series);
        if (ds_put(p->entity, DCM_TAG_NumberOfPatientRelatedSeries, "IS",
                   number) == NULL)
            goto oom;
        snprintf(number, sizeof(number), "%lu", p->instances);
        if (ds_put(p->entity, DCM_TAG_NumberOfPatientRelatedInstances, "IS",
                   number) == NULL)
            goto oom;
    }
    s->patients_ready = true;
    return 0;
oom:
    set_status(st, STATUS_OUT_OF_RESOURCES, "out of memory");
    return -EIO;
}

/* ------------------------------------------------------------------ */
/* The handler                                                         */
/* ------------------------------------------------------------------ */

static void log_done(const struct find_session *s,
                     const struct scp_find_status *st)
{
    log_info("event=find-done from=%s level=%s matches=%lu read=%lu "
             "requests=%lu ms=%llu status=%04x",
             s->caller, find__level_names[s->level], s->sent, s->fetched,
             s->requests,
             (unsigned long long)(util_now_monotonic_ms() - s->started_ms),
             (unsigned)st->status);
}

/* The final status once every match was handed out. */
static int finish(struct find_session *s, struct scp_find_status *st)
{
    if (s->capped) {
        set_status(st, STATUS_OUT_OF_RESOURCES,
                   "incomplete: over %u matches, narrow the query",
                   s->svc->params.max_results);
        log_warning("event=find-capped from=%s level=%s sent=%lu "
                    "max_results=%u reason=\"more matches than "
                    "query.max_results; the list ends with A700\"",
                    s->caller, find__level_names[s->level], s->sent,
                    s->svc->params.max_results);
    } else {
        set_status(st, STATUS_SUCCESS, NULL);
    }
    log_done(s, st);
    return 0;
}

static int find_next(void *session, bool cancelled, struct ds **ret_answer,
                     struct scp_find_status *ret_status)
{
    struct find_session *s = session;

    *ret_answer = NULL;
    if (cancelled) {
        set_status(ret_status, STATUS_CANCEL, NULL);
        log_info("event=find-cancelled from=%s level=%s sent=%lu "
                 "requests=%lu",
                 s->caller, find__level_names[s->level], s->sent, s->requests);
        return 0;
    }
    if (s->level == FIND_LEVEL_PATIENT) {
        if (!s->patients_ready && collect_patients(s, ret_status) < 0) {
            log_done(s, ret_status);
            return 0;
        }
        while (s->patient_pos < s->patient_count) {
            const struct ds *e = s->patients[s->patient_pos++].entity;
            if (!entity_matches(s, e, true))
                continue;
            *ret_answer = build_answer(s, e);
            if (*ret_answer == NULL) {
                set_status(ret_status, STATUS_OUT_OF_RESOURCES,
                           "out of memory");
                return 0;
            }
            s->sent++;
            return 1;
        }
        return finish(s, ret_status);
    }

    for (;;) {
        while (s->page_pos < s->page_count) {
            const struct ds *e = s->page[s->page_pos++];
            const char *uid = ds_value(e, s->plan.unique_tag);
            int added;

            if (!entity_matches(s, e, false))
                continue;
            if (uid == NULL) {
                log_debug("event=find-skip from=%s reason=\"a result without "
                          "its unique key\"",
                          s->caller);
                continue;
            }
            added = key_set_add(&s->seen, uid);
            if (added == 0)
                continue; /* already sent from an earlier page */
            *ret_answer = added > 0 ? build_answer(s, e) : NULL;
            if (*ret_answer == NULL) {
                set_status(ret_status, STATUS_OUT_OF_RESOURCES,
                           "out of memory");
                return 0;
            }
            s->sent++;
            return 1;
        }
        if (s->server_done)
            return finish(s, ret_status);
        if (next_page(s, ret_status) < 0) {
            log_done(s, ret_status);
            return 0;
        }
    }
}

static void *find_begin(void *ctx, enum scp_find_model model,
                        const struct ds *identifier, const char *caller,
                        struct scp_find_status *ret_status)
{
    struct find_service *svc = ctx;
    struct find_session *s = calloc(1, sizeof(*s));
    const char *level_text;
    int r;

    if (s == NULL) {
        set_status(ret_status, STATUS_OUT_OF_RESOURCES, "out of memory");
        return NULL;
    }
    s->svc = svc;
    s->model = model;
    s->started_ms = util_now_monotonic_ms();
    snprintf(s->caller, sizeof(s->caller), "%s", caller);
    level_text = ds_value(identifier, DCM_TAG_QueryRetrieveLevel);
    if (!level_from_text(level_text, &s->level)) {
        set_status(ret_status, STATUS_IDENTIFIER_MISMATCH,
                   "QueryRetrieveLevel (0008,0052) missing or unknown");
        log_warning("event=find-refused from=%s reason=\"QueryRetrieveLevel "
                    "missing or unknown\"",
                    s->caller);
        session_free(s);
        return NULL;
    }
    if (s->level == FIND_LEVEL_PATIENT && model == SCP_FIND_STUDY_ROOT) {
        set_status(ret_status, STATUS_IDENTIFIER_MISMATCH,
                   "PATIENT level is not in the Study Root model");
        log_warning("event=find-refused from=%s reason=\"PATIENT level in a "
                    "Study Root query\"",
                    s->caller);
        session_free(s);
        return NULL;
    }
    s->request = ds_copy(identifier);
    r = s->request != NULL
            ? find__plan(s->request, s->level, svc->params.profile, &s->plan)
            : -ENOMEM;
    if (r == -E2BIG) {
        set_status(ret_status, STATUS_OUT_OF_RESOURCES,
                   "identifier too long for a QIDO-RS URL");
        log_warning("event=find-refused from=%s reason=\"identifier too "
                    "long for a QIDO-RS URL\"",
                    s->caller);
        session_free(s);
        return NULL;
    }
    if (r < 0) {
        set_status(ret_status, STATUS_OUT_OF_RESOURCES, "out of memory");
        session_free(s);
        return NULL;
    }
    {
        char resource[160];
        session_resource(s, resource, sizeof(resource));
        log_info("event=find from=%s model=%s level=%s keys=%zu "
                 "resource=%s",
                 s->caller,
                 model == SCP_FIND_PATIENT_ROOT ? "patient-root" : "study-root",
                 find__level_names[s->level], s->request->count, resource);
    }
    return s;
}

static void find_end(void *session)
{
    session_free(session);
}

void find_handler_init(struct find_service *service,
                       struct scp_find_handler *ret_handler)
{
    ret_handler->ctx = service;
    ret_handler->begin = find_begin;
    ret_handler->next = find_next;
    ret_handler->end = find_end;
}

/* ------------------------------------------------------------------ */
/* The real fetch: the DICOMweb client (tokens, 401, 403, pool)        */
/* ------------------------------------------------------------------ */

struct find_web {
    struct dicomweb *client;
};

struct find_web *find_web_new(const char *base_url, const char *ca_file,
                              unsigned timeout_s, struct oauth_source *tokens)
{
    struct dicomweb_params params = {
        .base_url = base_url,
        .ca_file = ca_file,
        .timeout_s = timeout_s,
        .tokens = tokens,
        .pool_size = FIND_WEB_POOL,
    };
    struct find_web *web = calloc(1, sizeof(*web));

    if (web == NULL)
        return NULL;
    web->client = dicomweb_new(&params);
    if (web->client == NULL) {
        free(web);
        return NULL;
    }
    return web;
}

void find_web_free(struct find_web *web)
{
    if (web == NULL)
        return;
    dicomweb_free(web->client);
    free(web);
}

int find_web_fetch(void *ctx, const char *path_and_query,
                   struct find_reply *ret_reply)
{
    struct find_web *web = ctx;
    struct dicomweb_reply reply;
    size_t n;
    int r;

    memset(ret_reply, 0, sizeof(*ret_reply));
    r = dicomweb_search(web->client, path_and_query, &reply);
    ret_reply->http_status = reply.http_status;
    ret_reply->more_results = reply.more_results;
    ret_reply->token_failed = reply.token_failed;
    ret_reply->unchecked = reply.secrets_missing;
    memcpy(ret_reply->location, reply.location, sizeof(reply.location));
    ret_reply->secrets = reply.secrets;
    reply.secrets = NULL;
    if (r < 0) {
        snprintf(ret_reply->error, sizeof(ret_reply->error), "%s", reply.error);
    } else if (reply.http_status == 403) {
        /* The reply keeps the start of it; the log has it whole. */
        n = strnlen(reply.diagnosis, sizeof(ret_reply->error) - 1);
        memcpy(ret_reply->error, reply.diagnosis, n);
        ret_reply->error[n] = '\0';
        if (reply.diagnosis_due)
            log_err("event=forbidden url=%s service=qido diagnosis=\"%s\"",
                    dicomweb_base_url(web->client), reply.diagnosis);
    } else {
        ret_reply->body = reply.body;
        ret_reply->body_len = reply.body_len;
        reply.body = NULL;
    }
    dicomweb_reply_free(&reply);
    return r;
}
