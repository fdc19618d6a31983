/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_qido - QIDO-RS URLs (percent-encoding) and DICOM JSON answers
 * turned into data sets, including every malformed shape we refuse.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dicom/dataset.h"
#include "tap.h"
#include "web/qido.h"

static void test_url_encoding(void)
{
    struct qido_url url;

    qido_url_init(&url, "/studies");
    qido_url_add(&url, "00100010", "SMITH^ANNA+B*", 0);
    qido_url_add(&url, "00080050", "A/6&7=8#9,x y%", 0);
    qido_url_add(&url, "00100010", "M\xc3\xbcller?", 0);
    qido_url_add(&url, "0020000D", "1.2.3,1.2.4", QIDO_RAW_COMMAS);
    qido_url_add(&url, "00100010", "DOE^J*", QIDO_RAW_CARET);
    qido_url_add_uint(&url, "limit", 100);
    CHECK(qido_url_error(&url) == 0);
    CHECK_MSG(strcmp(qido_url_text(&url),
                     "/studies?00100010=SMITH%5EANNA%2BB*"
                     "&00080050=A%2F6%267%3D8%239%2Cx%20y%25"
                     "&00100010=M%C3%BCller?"
                     "&0020000D=1.2.3,1.2.4"
                     "&00100010=DOE^J*&limit=100") == 0,
              "%s", qido_url_text(&url));
    qido_url_free(&url);

    /* The ceiling: a URL longer than QIDO_URL_MAX fails, and stays
     * failed. */
    {
        char *big = malloc(QIDO_URL_MAX / 2);
        int err = 0;
        CHECK(big != NULL);
        memset(big, '%', QIDO_URL_MAX / 2 - 1); /* each becomes %25 */
        big[QIDO_URL_MAX / 2 - 1] = '\0';
        qido_url_init(&url, "/studies");
        qido_url_add(&url, "00100010", big, 0);
        CHECK(qido_url_error(&url) == -E2BIG);
        qido_url_add_uint(&url, "limit", 1);
        CHECK(qido_url_error(&url) == -E2BIG &&
              strcmp(qido_url_text(&url), "") == 0);
        CHECK(qido_url_take(&url, &err) == NULL && err == -E2BIG);
        qido_url_free(&url);
        free(big);
    }
    qido_url_init(&url, "/series");
    qido_url_add(&url, "includefield", "all", 0);
    {
        int err = 0;
        char *text = qido_url_take(&url, &err);
        CHECK(text != NULL && strcmp(text, "/series?includefield=all") == 0);
        free(text);
    }
    qido_url_free(&url);

    char tag[9];
    qido_tag_text(DS_TAG(0x0008, 0x103E), tag);
    CHECK(strcmp(tag, "0008103E") == 0);
}

static void test_parse_values(void)
{
    static const char body[] =
        "[{\"00100010\": {\"vr\": \"PN\", \"Value\": [{\"Alphabetic\": "
        "\"Yamada^Tarou\", \"Ideographic\": \"\xe5\xb1\xb1\xe7\x94\xb0^"
        "\xe5\xa4\xaa\xe9\x83\x8e\"}]},"
        " \"00080061\": {\"vr\": \"CS\", \"Value\": [\"CT\", \"SR\"]},"
        " \"00201208\": {\"vr\": \"IS\", \"Value\": [12]},"
        " \"00101030\": {\"vr\": \"DS\", \"Value\": [72.5]},"
        " \"00280010\": {\"vr\": \"US\", \"Value\": [512]},"
        " \"00081030\": {\"vr\": \"LO\"},"
        " \"00200020\": {\"vr\": \"CS\", \"Value\": [\"A\", null, \"P\"]},"
        " \"7FE00010\": {\"vr\": \"OW\", \"BulkDataURI\": \"http://x/1\"},"
        " \"00081032\": {\"vr\": \"SQ\", \"Value\": [{\"00080100\": "
        "{\"vr\": \"SH\", \"Value\": [\"X1\"]}}, {}]},"
        " \"00100020\": {\"vr\": \"LO\", \"Value\": [\"P1\"]}},"
        " {\"00100020\": {\"vr\": \"LO\", \"Value\": [\"P2\"]},"
        " \"00100010\": {\"vr\": \"PN\", \"Value\": [{\"Alphabetic\": "
        "\"Doe^John\"}]}}]";
    struct ds **results = NULL;
    size_t count = 0;
    char err[128];
    const struct ds_attr *seq;

    CHECK(qido_parse_results(body, strlen(body), &results, &count, err,
                             sizeof(err)) == 0);
    CHECK(count == 2);
    if (count != 2)
        return;
    CHECK(strcmp(ds_value(results[0], DS_TAG(0x0010, 0x0010)),
                 "Yamada^Tarou=\xe5\xb1\xb1\xe7\x94\xb0^"
                 "\xe5\xa4\xaa\xe9\x83\x8e") == 0);
    CHECK(strcmp(ds_value(results[0], DS_TAG(0x0008, 0x0061)), "CT\\SR") == 0);
    CHECK(strcmp(ds_value(results[0], DS_TAG(0x0020, 0x1208)), "12") == 0);
    CHECK(strcmp(ds_value(results[0], DS_TAG(0x0010, 0x1030)), "72.5") == 0);
    CHECK(strcmp(ds_value(results[0], DS_TAG(0x0028, 0x0010)), "512") == 0);
    CHECK(ds_get(results[0], DS_TAG(0x0008, 0x1030)) != NULL);
    CHECK(ds_value(results[0], DS_TAG(0x0008, 0x1030)) == NULL);
    CHECK(strcmp(ds_value(results[0], DS_TAG(0x0020, 0x0020)), "A\\\\P") == 0);
    CHECK(ds_value(results[0], DS_TAG(0x7FE0, 0x0010)) == NULL);
    seq = ds_get(results[0], DS_TAG(0x0008, 0x1032));
    CHECK(seq != NULL && seq->item_count == 2 &&
          strcmp(ds_value(seq->items[0], DS_TAG(0x0008, 0x0100)), "X1") == 0 &&
          seq->items[1]->count == 0);
    CHECK(strcmp(ds_value(results[1], DS_TAG(0x0010, 0x0010)), "Doe^John") ==
          0);
    qido_results_free(results, count);
}

static void test_parse_empty(void)
{
    struct ds **results = (struct ds **)1;
    size_t count = 7;
    char err[128];

    CHECK(qido_parse_results("", 0, &results, &count, err, sizeof(err)) == 0);
    CHECK(results == NULL && count == 0);
    CHECK(qido_parse_results(" \r\n", 3, &results, &count, err, sizeof(err)) ==
              0 &&
          count == 0);
    CHECK(qido_parse_results("[]", 2, &results, &count, err, sizeof(err)) ==
              0 &&
          count == 0);
}

static void test_parse_refused(void)
{
    static const char *const bad[] = {
        "[{\"0010",                               /* cut short */
        "{\"00100010\": {\"vr\": \"PN\"}}",       /* not an array */
        "[1, 2]",                                 /* not objects */
        "[{\"PatientName\": {\"vr\": \"PN\"}}]",  /* not a tag */
        "[{\"00100010\": {\"Value\": [\"x\"]}}]", /* no vr */
        "[{\"00100010\": {\"vr\": \"PN\", \"Value\": \"x\"}}]",
        "[{\"00100020\": {\"vr\": \"LO\", \"Value\": [{}]}}]",
        "[{\"00100010\": {\"vr\": \"PN\", \"Value\": [7]}}]",
        "[{\"00081032\": {\"vr\": \"SQ\", \"Value\": [\"x\"]}}]",
        "<html>502 Bad Gateway</html>",
    };
    char deep[2048];
    size_t n = 0;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ds **results = NULL;
        size_t count = 0;
        char err[128] = "";
        int r = qido_parse_results(bad[i], strlen(bad[i]), &results, &count,
                                   err, sizeof(err));
        CHECK_MSG(r == -EBADMSG && err[0] != '\0' && results == NULL,
                  "case %zu: r=%d", i, r);
    }
    /* Sequences nested deeper than we accept. */
    n += (size_t)snprintf(deep + n, sizeof(deep) - n, "[");
    for (int i = 0; i < 12; i++)
        n += (size_t)snprintf(deep + n, sizeof(deep) - n,
                              "{\"00081032\": {\"vr\": \"SQ\", \"Value\": [");
    n += (size_t)snprintf(deep + n, sizeof(deep) - n, "{}");
    for (int i = 0; i < 12; i++)
        n += (size_t)snprintf(deep + n, sizeof(deep) - n, "]}}");
    n += (size_t)snprintf(deep + n, sizeof(deep) - n, "]");
    {
        struct ds **results = NULL;
        size_t count = 0;
        char err[128];
        CHECK(qido_parse_results(deep, n, &results, &count, err, sizeof(err)) ==
              -EBADMSG);
        CHECK_MSG(strstr(err, "sequences nested deeper than 8") != NULL, "%s",
                  err);
    }
    /* 100 000 levels of JSON: the depth is named. */
    {
        static char deeper[200001];
        struct ds **results = NULL;
        size_t count = 0;
        char err[128];
        memset(deeper, '[', 100000);
        memset(deeper + 100000, ']', 100000);
        CHECK(qido_parse_results(deeper, 200000, &results, &count, err,
                                 sizeof(err)) == -EBADMSG);
        CHECK_MSG(strstr(err, "nested deeper than 64 levels") != NULL, "%s",
                  err);
    }
    /* A member name that is no tag is quoted only when plain. */
    {
        static const char echo[] = "[{\"DOE^JOHN\": {\"vr\": \"PN\"}}]";
        struct ds **results = NULL;
        size_t count = 0;
        char err[128];
        CHECK(qido_parse_results(echo, strlen(echo), &results, &count, err,
                                 sizeof(err)) == -EBADMSG);
        CHECK_MSG(strstr(err, "DOE") == NULL &&
                      strstr(err, "member is not") != NULL,
                  "%s", err);
    }
}

/* PN component groups exactly as the server sent them: a trailing empty
 * group that is present stays (Orthanc answers "Wang^XiaoDong=王^小東="),
 * an absent or null one is not there. */
static void test_parse_person_names(void)
{
    static const struct {
        const char *json;
        const char *want;
    } cases[] = {
        { "{\"Alphabetic\": \"Wang^XiaoDong\", \"Ideographic\": "
          "\"\xe7\x8e\x8b^\xe5\xb0\x8f\xe6\x9d\xb1\", \"Phonetic\": \"\"}",
          "Wang^XiaoDong=\xe7\x8e\x8b^\xe5\xb0\x8f\xe6\x9d\xb1=" },
        { "{\"Alphabetic\": \"Wang^XiaoDong\", \"Ideographic\": "
          "\"\xe7\x8e\x8b^\xe5\xb0\x8f\xe6\x9d\xb1\"}",
          "Wang^XiaoDong=\xe7\x8e\x8b^\xe5\xb0\x8f\xe6\x9d\xb1" },
        { "{\"Alphabetic\": \"Wang^XiaoDong\", \"Ideographic\": \"\"}",
          "Wang^XiaoDong=" },
        { "{\"Alphabetic\": \"Wang^XiaoDong\", \"Ideographic\": null}",
          "Wang^XiaoDong" },
        { "{\"Alphabetic\": \"A\", \"Phonetic\": \"a\"}", "A==a" },
        { "{\"Ideographic\": \"\xe7\x8e\x8b\"}", "=\xe7\x8e\x8b" },
        { "{\"Alphabetic\": \"Doe^John^^^\"}", "Doe^John^^^" },
    };
    char body[512];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ds **results = NULL;
        size_t count = 0;
        char err[128];
        snprintf(body, sizeof(body),
                 "[{\"00100010\": {\"vr\": \"PN\", \"Value\": [%s]}}]",
                 cases[i].json);
        CHECK(qido_parse_results(body, strlen(body), &results, &count, err,
                                 sizeof(err)) == 0 &&
              count == 1);
        if (count == 1) {
            const char *v = ds_value(results[0], DS_TAG(0x0010, 0x0010));
            CHECK_MSG(v != NULL && strcmp(v, cases[i].want) == 0,
                      "%s: got '%s', want '%s'", cases[i].json,
                      v != NULL ? v : "(null)", cases[i].want);
        }
        qido_results_free(results, count);
    }
}

int main(void)
{
    test_url_encoding();
    test_parse_values();
    test_parse_empty();
    test_parse_refused();
    test_parse_person_names();
    return tap_done();
}
