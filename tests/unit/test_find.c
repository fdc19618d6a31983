/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_find - the C-FIND provider with a scripted QIDO-RS fetch (DIMSE
 * matching itself: test_match.c): the URLs it asks per level and profile,
 * paging, the cap, de-duplication, C-CANCEL, PATIENT-level grouping, and
 * every failure mapped to its status.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/find.h"
#include "dicom/dataset.h"
#include "dicom/tags.h"
#include "tap.h"
#include "web/qido.h"

/* ------------------------------------------------------------------ */
/* A scripted server                                                   */
/* ------------------------------------------------------------------ */

enum fake_mode {
    FAKE_OK,
    FAKE_DOWN,
    FAKE_500,
    FAKE_GARBAGE,
    FAKE_NO_TOKEN,
    FAKE_204
};

struct fake {
    enum fake_mode mode;
    unsigned total;        /* studies 0..total-1 */
    unsigned duplicate_at; /* offset shift after the first page, or 0 */
    unsigned requests;
    char last_url[2048];
    char first_url[2048];
    bool patients;  /* 3 studies per patient */
    bool server_ae; /* the server answers a Retrieve AE Title of its own */
};

static void fake_study(char *buf, size_t len, unsigned i, bool patients,
                       bool server_ae)
{
    unsigned patient = patients ? i / 3 : i;

    snprintf(buf, len,
             "{%s\"0020000D\": {\"vr\": \"UI\", \"Value\": [\"1.2.3.%u\"]},"
             "\"00100010\": {\"vr\": \"PN\", \"Value\": [{\"Alphabetic\": "
             "\"NAME^%04u\"}]},"
             "\"00100020\": {\"vr\": \"LO\", \"Value\": [\"ID%04u\"]},"
             "\"00080020\": {\"vr\": \"DA\", \"Value\": [\"2020%02u%02u\"]},"
             "\"00201206\": {\"vr\": \"IS\", \"Value\": [2]},"
             "\"00201208\": {\"vr\": \"IS\", \"Value\": [5]}}",
             server_ae ? "\"00080054\": {\"vr\": \"AE\", \"Value\": "
                         "[\"SERVERAE\"]}, \"0020000E\": {\"vr\": \"UI\", "
                         "\"Value\": [\"1.2.3.1.1\"]}, \"00080018\": {\"vr\": "
                         "\"UI\", \"Value\": [\"1.2.3.1.1.1\"]}, "
                       : "",
             i, patient, patient, 1 + i % 12, 1 + i % 28);
}

static unsigned long url_number(const char *url, const char *name)
{
    const char *p = strstr(url, name);

    return p != NULL ? strtoul(p + strlen(name), NULL, 10) : 0;
}

static int fake_fetch(void *ctx, const char *path, struct find_reply *reply)
{
    struct fake *f = ctx;
    unsigned long limit = url_number(path, "limit=");
    unsigned long offset = url_number(path, "offset=");
    size_t cap = 1024 + limit * 700;
    size_t n = 0;

    if (f->requests == 0)
        snprintf(f->first_url, sizeof(f->first_url), "%s", path);
    f->requests++;
    snprintf(f->last_url, sizeof(f->last_url), "%s", path);
    memset(reply, 0, sizeof(*reply));
    switch (f->mode) {
    case FAKE_DOWN:
        snprintf(reply->error, sizeof(reply->error), "Couldn't connect");
        return -ECONNREFUSED;
    case FAKE_NO_TOKEN:
        reply->token_failed = true;
        snprintf(reply->error, sizeof(reply->error), "endpoint down");
        return -EAGAIN;
    case FAKE_500:
        reply->http_status = 500;
        return 0;
    case FAKE_GARBAGE:
        reply->http_status = 200;
        reply->body = strdup("[{\"0020000D\": ");
        reply->body_len = strlen(reply->body);
        return 0;
    case FAKE_204:
        reply->http_status = 204;
        return 0;
    case FAKE_OK:
        break;
    }
    if (f->duplicate_at != 0 && offset > 0)
        offset -= f->duplicate_at; /* a new study shifted everything */
    reply->http_status = 200;
    reply->body = malloc(cap);
    n += (size_t)snprintf(reply->body + n, cap - n, "[");
    for (unsigned long i = offset; i < offset + limit && i < f->total; i++) {
        char one[700];
        fake_study(one, sizeof(one), (unsigned)i, f->patients, f->server_ae);
        n += (size_t)snprintf(reply->body + n, cap - n, "%s%s",
                              i > offset ? "," : "", one);
    }
    n += (size_t)snprintf(reply->body + n, cap - n, "]");
    reply->body_len = n;
    return 0;
}

struct run_result {
    unsigned answers;
    uint16_t status;
    char comment[65];
    struct ds *first;
};

/* Runs one C-FIND to the end (or cancels after @cancel_after answers). */
static void run_find(struct find_service *svc, enum scp_find_model model,
                     const struct ds *identifier, unsigned cancel_after,
                     struct run_result *ret)
{
    struct scp_find_handler h;
    struct scp_find_status st;
    void *session;

    memset(ret, 0, sizeof(*ret));
    find_handler_init(svc, &h);
    session = h.begin(h.ctx, model, identifier, "TESTSCU", &st);
    if (session == NULL) {
        ret->status = st.status;
        snprintf(ret->comment, sizeof(ret->comment), "%s", st.comment);
        return;
    }
    for (;;) {
        struct ds *answer = NULL;
        bool cancel = cancel_after > 0 && ret->answers >= cancel_after;
        if (h.next(session, cancel, &answer, &st) <= 0)
            break;
        ret->answers++;
        if (ret->first == NULL)
            ret->first = answer;
        else
            ds_free(answer);
    }
    ret->status = st.status;
    snprintf(ret->comment, sizeof(ret->comment), "%s", st.comment);
    h.end(session);
}

static struct find_service *service(struct fake *f, enum find_profile p,
                                    unsigned page, unsigned max)
{
    struct find_params params = { p, page, max, fake_fetch, f, NULL };

    return find_service_new(&params);
}

static struct ds *study_query(const char *name)
{
    struct ds *q = ds_new();

    ds_put(q, DCM_TAG_QueryRetrieveLevel, "CS", "STUDY");
    ds_put(q, DCM_TAG_StudyInstanceUID, "UI", NULL);
    ds_put(q, DCM_TAG_PatientName, "PN", name);
    ds_put(q, DCM_TAG_PatientID, "LO", NULL);
    ds_put(q, DCM_TAG_SpecificCharacterSet, "CS", "ISO_IR 192");
    return q;
}

static void test_paging(void)
{
    struct fake f = { .mode = FAKE_OK, .total = 250 };
    struct find_service *svc = service(&f, FIND_PROFILE_STANDARD, 100, 5000);
    struct ds *q = study_query("NAME*");
    struct run_result r;

    run_find(svc, SCP_FIND_STUDY_ROOT, q, 0, &r);
    CHECK_MSG(r.answers == 250 && r.status == 0x0000, "%u %04x", r.answers,
              r.status);
    CHECK(f.requests == 3);
    /* Exactly the requested keys and the level; no charset (scp/ adds). */
    CHECK(r.first != NULL && r.first->count == 4 &&
          strcmp(ds_value(r.first, DCM_TAG_QueryRetrieveLevel), "STUDY") == 0 &&
          strcmp(ds_value(r.first, DCM_TAG_PatientID), "ID0000") == 0 &&
          ds_get(r.first, DCM_TAG_SpecificCharacterSet) == NULL);
    ds_free(r.first);
    CHECK_MSG(strstr(f.first_url, "/studies?00100010=NAME*&includefield=") ==
                  f.first_url,
              "%s", f.first_url);
    CHECK(strstr(f.first_url, "=&") == NULL); /* never "key=" */

    /* De-duplication when offsets shift between pages. */
    f = (struct fake){ .mode = FAKE_OK, .total = 250, .duplicate_at = 1 };
    run_find(svc, SCP_FIND_STUDY_ROOT, q, 0, &r);
    CHECK_MSG(r.answers == 250 && r.status == 0, "%u", r.answers);
    ds_free(r.first);

    /* The local filter narrows what the server returned. */
    ds_put(q, DCM_TAG_PatientName, "PN", "NAME^00?5");
    f = (struct fake){ .mode = FAKE_OK, .total = 250 };
    run_find(svc, SCP_FIND_STUDY_ROOT, q, 0, &r);
    CHECK_MSG(r.answers == 10, "%u", r.answers);
    ds_free(r.first);

    /* C-CANCEL after 5 answers: FE00, no second page. */
    ds_put(q, DCM_TAG_PatientName, "PN", NULL);
    f = (struct fake){ .mode = FAKE_OK, .total = 250 };
    run_find(svc, SCP_FIND_STUDY_ROOT, q, 5, &r);
    CHECK(r.answers == 5 && r.status == 0xFE00 && f.requests == 1);
    ds_free(r.first);
    find_service_free(svc);

    /* A cap: 120 of 250, then A700 with a comment. */
    svc = service(&f, FIND_PROFILE_STANDARD, 100, 120);
    f = (struct fake){ .mode = FAKE_OK, .total = 250 };
    run_find(svc, SCP_FIND_STUDY_ROOT, q, 0, &r);
    CHECK_MSG(r.answers == 120 && r.status == 0xA700 &&
                  strstr(r.comment, "incomplete") != NULL,
              "%u %04x %s", r.answers, r.status, r.comment);
    CHECK(strstr(f.last_url, "limit=1&offset=120") != NULL);
    ds_free(r.first);
    /* Exactly at the cap: complete. */
    f = (struct fake){ .mode = FAKE_OK, .total = 120 };
    run_find(svc, SCP_FIND_STUDY_ROOT, q, 0, &r);
    CHECK(r.answers == 120 && r.status == 0x0000);
    ds_free(r.first);
    find_service_free(svc);
    ds_free(q);
}

static void test_failures(void)
{
    static const struct {
        enum fake_mode mode;
        uint16_t status;
    } cases[] = {
        { FAKE_DOWN, 0xC001 },    { FAKE_500, 0xC002 },
        { FAKE_GARBAGE, 0xC003 }, { FAKE_NO_TOKEN, 0xC004 },
        { FAKE_204, 0x0000 },
    };
    struct ds *q = study_query("X*");

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fake f = { .mode = cases[i].mode, .total = 5 };
        struct find_service *svc =
            service(&f, FIND_PROFILE_STANDARD, 100, 5000);
        struct run_result r;

        run_find(svc, SCP_FIND_STUDY_ROOT, q, 0, &r);
        CHECK_MSG(r.answers == 0 && r.status == cases[i].status &&
                      (cases[i].status == 0 || r.comment[0] != '\0'),
                  "case %zu: %04x '%s'", i, r.status, r.comment);
        ds_free(r.first);
        find_service_free(svc);
    }
    ds_free(q);

    /* Identifiers that do not fit the model. */
    struct fake f = { .mode = FAKE_OK, .total = 5 };
    struct find_service *svc = service(&f, FIND_PROFILE_STANDARD, 100, 5000);
    struct run_result r;
    struct ds *bad = ds_new();
    ds_put(bad, DCM_TAG_PatientName, "PN", "X");
    run_find(svc, SCP_FIND_STUDY_ROOT, bad, 0, &r);
    CHECK(r.status == 0xA900);
    ds_put(bad, DCM_TAG_QueryRetrieveLevel, "CS", "PATIENT");
    run_find(svc, SCP_FIND_STUDY_ROOT, bad, 0, &r);
    CHECK(r.status == 0xA900);
    ds_put(bad, DCM_TAG_QueryRetrieveLevel, "CS", "FRAME");
    run_find(svc, SCP_FIND_PATIENT_ROOT, bad, 0, &r);
    CHECK(r.status == 0xA900 && f.requests == 0);
    ds_free(bad);

    /* A key too long for a QIDO-RS URL: refused, nothing asked. */
    {
        size_t n = 100 * 1024; /* 300 KiB once percent-encoded */
        char *big = malloc(n + 1);
        CHECK(big != NULL);
        memset(big, '&', n);
        big[n] = '\0';
        bad = study_query(big);
        run_find(svc, SCP_FIND_STUDY_ROOT, bad, 0, &r);
        CHECK_MSG(r.status == 0xA700 && strstr(r.comment, "too long") != NULL &&
                      f.requests == 0,
                  "%04x '%s'", r.status, r.comment);
        ds_free(bad);
        /* Just under the ceiling it is asked. */
        big[QIDO_URL_MAX / 3 - 1024] = '\0';
        bad = study_query(big);
        run_find(svc, SCP_FIND_STUDY_ROOT, bad, 0, &r);
        CHECK_MSG(r.status == 0x0000 && f.requests == 1, "%04x '%s'", r.status,
                  r.comment);
        ds_free(r.first);
        ds_free(bad);
        free(big);
    }
    find_service_free(svc);
}

static void test_urls(void)
{
    struct fake f = { .mode = FAKE_OK, .total = 0 };
    struct find_service *std = service(&f, FIND_PROFILE_STANDARD, 50, 5000);
    struct find_service *az = service(&f, FIND_PROFILE_AZURE, 200, 5000);
    struct find_service *orth = service(&f, FIND_PROFILE_ORTHANC, 50, 5000);
    struct run_result r;
    struct ds *q = ds_new();

    ds_put(q, DCM_TAG_QueryRetrieveLevel, "CS", "STUDY");
    ds_put(q, DCM_TAG_PatientName, "PN", "M\xc3\xbcller*");
    ds_put(q, DCM_TAG_StudyDate, "DA", "20200101-20201231");
    ds_put(q, DCM_TAG_StudyTime, "TM", "0800-1200");
    ds_put(q, DCM_TAG_AccessionNumber, "SH", "A+1");
    ds_put(q, DCM_TAG_StudyInstanceUID, "UI", "1.2.3\\1.2.4");
    ds_put(q, DCM_TAG_ProcedureCodeSequence, "SQ", NULL);

    run_find(std, SCP_FIND_STUDY_ROOT, q, 0, &r);
    CHECK_MSG(strcmp(f.last_url,
                     "/studies?00100010=M%C3%BCller*&00080020=20200101-"
                     "20201231&00080030=0800-1200&00080050=A%2B1"
                     "&0020000D=1.2.3,1.2.4&includefield=00100010,00080020,"
                     "00080030,00080050,0020000D,00081032&limit=50&offset=0") ==
                  0,
              "%s", f.last_url);
    /* Azure: no wildcard, no time, no UID list; includefield=all. */
    run_find(az, SCP_FIND_STUDY_ROOT, q, 0, &r);
    CHECK_MSG(strcmp(f.last_url,
                     "/studies?00080020=20200101-20201231&00080050=A%2B1"
                     "&includefield=all&limit=200&offset=0") == 0,
              "%s", f.last_url);
    /* Orthanc: only values that need no percent-encoding. */
    run_find(orth, SCP_FIND_STUDY_ROOT, q, 0, &r);
    CHECK_MSG(strncmp(f.last_url,
                      "/studies?00080020=20200101-20201231&00080030=0800-1200"
                      "&0020000D=1.2.3,1.2.4&includefield=",
                      86) == 0,
              "%s", f.last_url);

    /* SERIES under one study: the nested resource. */
    ds_free(q);
    q = ds_new();
    ds_put(q, DCM_TAG_QueryRetrieveLevel, "CS", "SERIES");
    ds_put(q, DCM_TAG_StudyInstanceUID, "UI", "1.2.3");
    ds_put(q, DCM_TAG_SeriesInstanceUID, "UI", NULL);
    ds_put(q, DCM_TAG_Modality, "CS", "CT");
    run_find(std, SCP_FIND_STUDY_ROOT, q, 0, &r);
    CHECK_MSG(strncmp(f.last_url, "/studies/1.2.3/series?00080060=CT&", 34) ==
                  0,
              "%s", f.last_url);
    /* IMAGE under study and series. */
    ds_put(q, DCM_TAG_QueryRetrieveLevel, "CS", "IMAGE");
    ds_put(q, DCM_TAG_SeriesInstanceUID, "UI", "1.2.3.4");
    ds_put(q, DCM_TAG_SOPInstanceUID, "UI", NULL);
    ds_remove(q, DCM_TAG_Modality);
    run_find(az, SCP_FIND_STUDY_ROOT, q, 0, &r);
    CHECK_MSG(strcmp(f.last_url, "/studies/1.2.3/series/1.2.3.4/instances?"
                                 "includefield=all&limit=200&offset=0") == 0,
              "%s", f.last_url);
    /* IMAGE without a single study UID: /instances. */
    ds_put(q, DCM_TAG_StudyInstanceUID, "UI", NULL);
    run_find(std, SCP_FIND_STUDY_ROOT, q, 0, &r);
    CHECK_MSG(strncmp(f.last_url, "/instances?0020000E=1.2.3.4&", 28) == 0,
              "%s", f.last_url);
    ds_free(q);
    find_service_free(std);
    find_service_free(az);
    find_service_free(orth);
}

static void test_patient_level(void)
{
    struct fake f = { .mode = FAKE_OK, .total = 30, .patients = true };
    struct find_service *svc = service(&f, FIND_PROFILE_STANDARD, 7, 5000);
    struct ds *q = ds_new();
    struct run_result r;

    ds_put(q, DCM_TAG_QueryRetrieveLevel, "CS", "PATIENT");
    ds_put(q, DCM_TAG_PatientName, "PN", "*");
    ds_put(q, DCM_TAG_PatientID, "LO", NULL);
    ds_put(q, DCM_TAG_NumberOfPatientRelatedStudies, "IS", NULL);
    ds_put(q, DCM_TAG_NumberOfPatientRelatedInstances, "IS", NULL);
    run_find(svc, SCP_FIND_PATIENT_ROOT, q, 0, &r);
    CHECK_MSG(r.answers == 10 && r.status == 0, "%u", r.answers);
    CHECK(
        r.first != NULL &&
        strcmp(ds_value(r.first, DCM_TAG_NumberOfPatientRelatedStudies), "3") ==
            0 &&
        strcmp(ds_value(r.first, DCM_TAG_NumberOfPatientRelatedInstances),
               "15") == 0 &&
        strcmp(ds_value(r.first, DCM_TAG_QueryRetrieveLevel), "PATIENT") == 0 &&
        ds_get(r.first, DCM_TAG_StudyInstanceUID) == NULL);
    CHECK(f.requests == 5); /* every page before the first answer */
    ds_free(r.first);
    /* A count key with a value selects on the computed count. */
    ds_put(q, DCM_TAG_NumberOfPatientRelatedStudies, "IS", "4");
    run_find(svc, SCP_FIND_PATIENT_ROOT, q, 0, &r);
    CHECK(r.answers == 0 && r.status == 0);
    ds_free(q);
    find_service_free(svc);
}

/* The Retrieve AE Title of @r's first answer: NULL absent, "" zero
 * length. Frees the answer. */
static const char *first_retrieve_ae(struct run_result *r, char *buf,
                                     size_t len)
{
    const struct ds_attr *a =
        r->first != NULL ? ds_get(r->first, DCM_TAG_RetrieveAETitle) : NULL;
    const char *out = NULL;

    if (a != NULL) {
        snprintf(buf, len, "%s", a->value != NULL ? a->value : "");
        out = buf;
        CHECK(strcmp(a->vr, "AE") == 0);
    }
    ds_free(r->first);
    r->first = NULL;
    return out;
}

/*
 * Retrieve AE Title (0008,0054), PS3.4 C.4.1.1.3.2: with retrieve offered,
 * ours in every answer at every level, asked for or not, never the
 * server's; without, zero length when asked for and absent otherwise.
 */
static void test_retrieve_ae(void)
{
    struct fake f = { .mode = FAKE_OK, .total = 4, .server_ae = true };
    struct find_params params = {
        FIND_PROFILE_STANDARD, 10, 5000, fake_fetch, &f, "GATEWAY"
    };
    struct find_service *svc = find_service_new(&params);
    struct find_service *plain = service(&f, FIND_PROFILE_STANDARD, 10, 5000);
    static const char *levels[] = { "PATIENT", "STUDY", "SERIES", "IMAGE" };
    char too_long[32];
    struct run_result r;
    char buf[64];
    const char *ae;

    CHECK(svc != NULL && plain != NULL);
    if (svc == NULL || plain == NULL)
        return;
    for (size_t i = 0; i < 4; i++) {
        for (int asked = 0; asked < 2; asked++) {
            struct ds *q = ds_new();
            enum scp_find_model model =
                i == 0 ? SCP_FIND_PATIENT_ROOT : SCP_FIND_STUDY_ROOT;

            ds_put(q, DCM_TAG_QueryRetrieveLevel, "CS", levels[i]);
            ds_put(q, DCM_TAG_PatientID, "LO", NULL);
            if (i >= 2)
                ds_put(q, DCM_TAG_StudyInstanceUID, "UI", "1.2.3.1");
            if (i == 3)
                ds_put(q, DCM_TAG_SeriesInstanceUID, "UI", NULL);
            if (asked)
                ds_put(q, DCM_TAG_RetrieveAETitle, "AE", NULL);
            run_find(svc, model, q, 0, &r);
            CHECK_MSG(r.answers >= 1 && r.status == 0, "%s: %u answers %04X",
                      levels[i], r.answers, r.status);
            ae = first_retrieve_ae(&r, buf, sizeof(buf));
            CHECK_MSG(ae != NULL && strcmp(ae, "GATEWAY") == 0,
                      "%s asked=%d: Retrieve AE Title %s", levels[i], asked,
                      ae != NULL ? ae : "(absent)");
            /* Not offered: zero length when asked for, else absent. */
            run_find(plain, model, q, 0, &r);
            CHECK(r.answers >= 1 && r.status == 0);
            ae = first_retrieve_ae(&r, buf, sizeof(buf));
            if (asked)
                CHECK_MSG(ae != NULL && ae[0] == '\0', "%s: %s", levels[i],
                          ae != NULL ? ae : "(absent)");
            else
                CHECK_MSG(ae == NULL, "%s: %s", levels[i], ae);
            ds_free(q);
        }
    }
    /* The key is ours: never a match parameter nor an includefield. */
    CHECK_MSG(strstr(f.last_url, "00080054") == NULL, "%s", f.last_url);
    find_service_free(svc);
    find_service_free(plain);

    /* "" is "not offered"; a title longer than 16 is refused. */
    params.retrieve_ae = "";
    svc = find_service_new(&params);
    CHECK(svc != NULL);
    if (svc != NULL) {
        struct ds *q = study_query("*");

        ds_put(q, DCM_TAG_RetrieveAETitle, "AE", NULL);
        run_find(svc, SCP_FIND_STUDY_ROOT, q, 0, &r);
        ae = first_retrieve_ae(&r, buf, sizeof(buf));
        CHECK(ae != NULL && ae[0] == '\0');
        ds_free(q);
        find_service_free(svc);
    }
    memset(too_long, 'A', 17);
    too_long[17] = '\0';
    params.retrieve_ae = too_long;
    CHECK(find_service_new(&params) == NULL);
}

int main(void)
{
    test_paging();
    test_retrieve_ae();
    test_failures();
    test_urls();
    test_patient_level();
    return tap_done();
}
