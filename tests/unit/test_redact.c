/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_redact - hiding known values in server texts: secrets in every
 * form they travel in, person names in their usual renderings (also
 * non-ASCII, also case-folded), IDs, birth dates as people write them,
 * C-FIND identifiers by VR, the codes that must stay readable, the cut,
 * the one-line cleaning and the fail-safe.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dicom/dataset.h"
#include "dicom/redact.h"
#include "tap.h"

static char out[1024];

/* Redacts @text with @r into out; returns out. */
static const char *hide(const struct redact *r, const char *text)
{
    redact_text(r, text, strlen(text), 600, out, sizeof(out));
    return out;
}

static void test_secrets(void)
{
    struct redact *r = redact_new();

    CHECK(r != NULL);
    CHECK(redact_add_literal(r, "pa55+word/x") == 0);
    CHECK(strcmp(hide(r, "bad secret pa55+word/x given"),
                 "bad secret [redacted] given") == 0);
    /* As the form body carries it, and as a JSON writer escapes it. */
    CHECK_MSG(strcmp(hide(r, "body: client_secret=pa55%2Bword%2Fx&a=b"),
                     "body: client_secret=[redacted]&a=b") == 0,
              "%s", out);
    CHECK_MSG(strcmp(hide(r, "{\"s\": \"pa55%2bword%2fx\"}"),
                     "{'s': '[redacted]'}") == 0,
              "%s", out);
    /* Inside a longer word too (4 bytes or more). */
    CHECK(strstr(hide(r, "xxpa55+word/xyy"), "pa55") == NULL);
    redact_free(r);

    /* A value longer than REDACT_VALUE_MAX is hidden piece by piece. */
    size_t n = REDACT_VALUE_MAX + 100;
    char *big = malloc(n + 1);
    CHECK(big != NULL);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + i % 26);
    big[n] = '\0';
    r = redact_new();
    CHECK(redact_add_literal(r, big) == 0);
    redact_text(r, big, n, 600, out, sizeof(out));
    CHECK_MSG(strstr(out, "abcdef") == NULL, "%s", out);
    redact_free(r);
    free(big);
}

static void test_person_names(void)
{
    struct redact *r = redact_new();
    const char *forms[] = {
        "PatientName DOE^JOHN is wrong",
        "patient Doe John",
        "patient John Doe",
        "patient doe, john",
        "patient JOHN DOE.",
        "q=PatientName=DOE%5EJOHN&limit=1",
        "{\"Alphabetic\": \"DOE\\u005eJOHN\"}",
        "name:\\nDOE",
    };

    CHECK(redact_add_value(r, "PN", "DOE^JOHN^^^") == 0);
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        hide(r, forms[i]);
        CHECK_MSG(
            strstr(out, "DOE") == NULL && strstr(out, "JOHN") == NULL &&
                strstr(out, "Doe") == NULL && strstr(out, "John") == NULL &&
                strstr(out, "doe") == NULL && strstr(out, "john") == NULL &&
                strstr(out, REDACT_MARK) != NULL,
            "%s -> %s", forms[i], out);
    }
    /* Codes and words around stay. */
    CHECK_MSG(strcmp(hide(r, "HTTP 400: PatientName DOE^JOHN invalid"),
                     "HTTP 400: PatientName [redacted] invalid") == 0,
              "%s", out);
    CHECK_MSG(strcmp(hide(r, "HTTP 400: DOE^J. JOHN"),
                     "HTTP 400: [redacted]^J. [redacted]") == 0,
              "%s", out);
    redact_free(r);

    /* Non-ASCII: UTF-8, percent-encoded, JSON-escaped; Latin-1 letters
     * case-insensitively. */
    r = redact_new();
    CHECK(redact_add_value(r, "PN",
                           "M\xc3\xbcller^J\xc3\xbcrgen=\xe5\xb1\xb1"
                           "\xe7\x94\xb0^\xe5\xa4\xaa\xe9\x83\x8e") == 0);
    CHECK_MSG(strcmp(hide(r, "name M\xc3\x9cLLER J\xc3\x9cRGEN"),
                     "name [redacted] [redacted]") == 0,
              "%s", out);
    CHECK_MSG(strcmp(hide(r, "\xe5\xb1\xb1\xe7\x94\xb0\xe5\xa4\xaa\xe9\x83"
                             "\x8e"),
                     "[redacted][redacted]") == 0,
              "%s", out);
    CHECK_MSG(strcmp(hide(r, "PatientName=%E5%B1%B1%E7%94%B0"),
                     "PatientName=[redacted]") == 0,
              "%s", out);
    CHECK_MSG(strcmp(hide(r, "\"\\u5c71\\u7530\""), "'[redacted]'") == 0, "%s",
              out);
    redact_free(r);

    /* Words of a component: a double family name. */
    r = redact_new();
    CHECK(redact_add_person_name(r, "Smith-Jones^Mary Ann") == 0);
    CHECK_MSG(strcmp(hide(r, "Jones, Ann"), "[redacted], [redacted]") == 0,
              "%s", out);
    redact_free(r);
}

static void test_ids_and_codes(void)
{
    struct redact *r = redact_new();

    /* Short values only where they stand alone. */
    CHECK(redact_add_value(r, "LO", "7\\P0042") == 0);
    CHECK_MSG(strcmp(hide(r, "AADSTS7000215: bad, patient 7, id P0042"),
                     "AADSTS7000215: bad, patient [redacted], id "
                     "[redacted]") == 0,
              "%s", out);
    CHECK_MSG(strcmp(hide(r, "Failure Reason 0xA700 (7)"),
                     "Failure Reason 0xA700 ([redacted])") == 0,
              "%s", out);
    /* Longer ones everywhere. */
    CHECK_MSG(strcmp(hide(r, "MRNP0042X"), "MRN[redacted]X") == 0, "%s", out);
    redact_free(r);
}

static void test_dates(void)
{
    struct redact *r = redact_new();
    const char *forms[] = {
        "19650412",
        "1965-04-12",
        "1965/04/12",
        "1965.04.12",
        "12.04.1965",
        "12/04/1965",
        "04/12/1965",
        "12-04-1965",
        "12.4.1965",
        "4/12/1965",
        "12 Apr 1965",
        "12 April 1965",
        "April 12, 1965",
        "apr 12, 1965",
        "12-APR-1965",
        "12.04.65",
        "born 1965-04-12T00:00:00",
    };

    CHECK(redact_add_value(r, "DA", "19650412") == 0);
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        hide(r, forms[i]);
        CHECK_MSG(strstr(out, "1965") == NULL && strstr(out, "65") == NULL &&
                      strstr(out, REDACT_MARK) != NULL,
                  "%s -> %s", forms[i], out);
    }
    /* A range gives both ends. */
    CHECK(redact_add_value(r, "DA", "20200101-20201231") == 0);
    CHECK_MSG(strcmp(hide(r, "from 2020-01-01 to 31.12.2020"),
                     "from [redacted] to [redacted]") == 0,
              "%s", out);
    redact_free(r);
}

static void test_dataset(void)
{
    struct redact *r = redact_new();
    struct ds *ds = ds_new();
    struct ds_attr *seq;
    struct ds *item;

    /* A C-FIND identifier: values by VR, UIDs and codes kept. */
    ds_put(ds, DS_TAG(0x0008, 0x0052), "CS", "STUDY");
    ds_put(ds, DS_TAG(0x0010, 0x0010), "PN", "DOE*");
    ds_put(ds, DS_TAG(0x0010, 0x0020), "LO", "PID-99");
    ds_put(ds, DS_TAG(0x0020, 0x000D), "UI", "1.2.3.4");
    ds_put(ds, DS_TAG(0x0008, 0x0061), "CS", "CT\\MR");
    ds_put(ds, DS_TAG(0x0008, 0x1030), "LO", "*HEAD?SCAN*");
    seq = ds_put(ds, DS_TAG(0x0010, 0x1002), "SQ", NULL);
    item = ds_add_item(seq);
    ds_put(item, DS_TAG(0x0010, 0x0020), "LO", "OTHER-1");
    CHECK(redact_add_dataset(r, ds) == 0);
    CHECK_MSG(strcmp(hide(r, "query STUDY CT MR 1.2.3.4 PatientName=DOE* "
                             "PatientID=PID-99 HEAD SCAN OTHER-1"),
                     "query STUDY CT MR 1.2.3.4 PatientName=[redacted]* "
                     "PatientID=[redacted] [redacted] [redacted] "
                     "[redacted]") == 0,
              "%s", out);

    /* Merged into another set. */
    struct redact *all = redact_new();
    CHECK(redact_add_literal(all, "tok-secret") == 0);
    CHECK(redact_merge(all, r) == 0);
    CHECK(redact_count(all) == redact_count(r) + 1);
    CHECK_MSG(strcmp(hide(all, "DOE tok-secret"), "[redacted] [redacted]") == 0,
              "%s", out);
    redact_free(all);
    redact_free(r);
    ds_free(ds);
}

static void test_cleaning_and_cut(void)
{
    struct redact *r = redact_new();
    char small[64];

    /* One line, quotes, control characters, invalid UTF-8. */
    CHECK_MSG(strcmp(hide(r, "  line one\r\n\tline \"two\"\x01\x7f end\xff "),
                     "line one line 'two' end?") == 0,
              "%s", out);
    /* The cut counts bytes, never splits a character, says it cut. */
    redact_text(r, "abcdefghij", 10, 5, small, sizeof(small));
    CHECK_MSG(strcmp(small, "abcde...") == 0, "%s", small);
    redact_text(r, "ab\xc3\xa9\xc3\xa9", 6, 5, small, sizeof(small));
    CHECK_MSG(strcmp(small, "ab\xc3\xa9...") == 0, "%s", small);
    /* A small buffer is a cut too. */
    redact_text(r, "abcdefghij", 10, 200, small, 8);
    CHECK_MSG(strcmp(small, "abcd...") == 0, "%s", small);
    /* NUL bytes in a body. */
    redact_text(r, "a\0b", 3, 200, small, sizeof(small));
    CHECK(strcmp(small, "a b") == 0);
    redact_clean("x\ny", 3, 200, small, sizeof(small));
    CHECK(strcmp(small, "x y") == 0);
    redact_free(r);

    /* A huge blank body costs no more than the first 64 KiB, with many
     * values: nothing after them is shown. */
    size_t n = 16u * 1024 * 1024;
    char *blank = malloc(n);
    CHECK(blank != NULL);
    memset(blank, ' ', n);
    memcpy(blank + n - 8, "DOE JOHN", 8);
    r = redact_new();
    for (int i = 0; i < 1000; i++) {
        char value[16];
        snprintf(value, sizeof(value), " v%d", i);
        (void)redact_add_literal(r, value);
    }
    redact_text(r, blank, n, 200, small, sizeof(small));
    CHECK_MSG(strcmp(small, "...") == 0, "%s", small);
    redact_free(r);
    free(blank);
}

static void test_fail_safe(void)
{
    struct redact *r = redact_new();
    char value[32];
    int last = 0;

    /* NULL (a failed redact_new()) and a full set withhold the text. */
    CHECK(strcmp(hide(NULL, "DOE^JOHN"), REDACT_WITHHELD) == 0);
    for (int i = 0; i < REDACT_MAX_VALUES + 1; i++) {
        snprintf(value, sizeof(value), "value%d", i);
        last = redact_add_literal(r, value);
    }
    CHECK(last == -E2BIG);
    CHECK(strcmp(hide(r, "anything"), REDACT_WITHHELD) == 0);
    redact_free(r);

    /* Punctuation alone is not a value worth hiding. */
    r = redact_new();
    CHECK(redact_add_person_name(r, "^^=^") == 0 && redact_count(r) == 0);
    CHECK(strcmp(hide(r, "a^b=c"), "a^b=c") == 0);
    redact_free(r);
}

int main(void)
{
    test_secrets();
    test_person_names();
    test_ids_and_codes();
    test_dates();
    test_dataset();
    test_cleaning_and_cut();
    test_fail_safe();
    return tap_done();
}
