/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_match - DIMSE matching (PS3.4 C.2.2.2, bridge/match.h), table
 * driven: single values (PN folded, other strings not), wildcards (whole
 * UTF-8 characters, none in DA/TM/DT/UI/numbers), ranges, UID lists and
 * several entity values, numbers, universal keys; then keys with a
 * condition, sequence matching (C.2.2.2.6) and what the server matched.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "bridge/match.h"
#include "dicom/dataset.h"
#include "dicom/tags.h"
#include "tap.h"

struct value_case {
    const char *vr;
    const char *key;
    const char *value;
    bool matches;
};

static const struct value_case value_cases[] = {
    /* PN: case-insensitive, wildcards, trailing '^', component groups. */
    { "PN", "DOE*", "Doe^John", true },
    { "PN", "d?e^j*", "DOE^JOHN", true },
    { "PN", "DOE^JOHN", "Doe^John^^^", true },
    { "PN", "DOE", "DOE^JOHN", false },
    { "PN", "Yamada*", "Yamada^Tarou=\xe5\xb1\xb1", true },
    { "PN", "?\xc3\xbc*", "M\xc3\xbcller", true },
    { "PN", "M?ller", "M\xc3\xbc\xc3\xbcller", false },
    /* Other strings: case-sensitive. */
    { "LO", "CT*", "CT CHEST", true },
    { "LO", "CT*", "ct abdomen", false },
    { "SH", "ACC-1 ", "ACC-1", true },
    /* Universal. */
    { "LO", "", NULL, true },
    { "LO", "*", "x", true },
    { "LO", "x", NULL, false },
    /* A lone '*' is universal (PS3.4 C.2.2.2): empty values match too;
     * a '*' with more is a wildcard, which an empty value does not. */
    { "LO", "*", NULL, true },
    { "PN", "*", NULL, true },
    { "PN", "*", "", true },
    { "PN", "**", NULL, false },
    { "LO", "A*", NULL, false },
    /* Dates, times, date-times: single values and ranges. */
    { "DA", "20200101-20201231", "20200601", true },
    { "DA", "20200101-20201231", "20210101", false },
    { "DA", "-20200101", "20200101", true },
    { "DA", "20200101-", "20991231", true },
    { "DA", "20200101", "20200101", true },
    { "DA", "2020*", "20200101", false }, /* no wildcards */
    { "TM", "0800-1200", "115959.999", true },
    { "TM", "0800-1200", "120030", true }, /* whole minute */
    { "TM", "0800-1200", "1201", false },
    { "TM", "10", "101010", true },
    { "TM", "08:00:00-09:00:00", "083000", true },
    { "DT", "20200101-20200102", "20200101235959", true },
    { "DT", "20200101-20200102", "20200103", false },
    /* UID lists and several entity values. */
    { "UI", "1.2.3\\1.2.4", "1.2.4", true },
    { "UI", "1.2.3\\1.2.4", "1.2.5", false },
    { "UI", "1.2.*", "1.2.3", false },
    { "CS", "MR", "CT\\MR", true },
    { "CS", "US\\MR", "CT\\MR", true },
    /* Numbers compare as numbers. */
    { "IS", "7", "007", true },
    { "IS", "7", "8", false },
    /* Spaces around values are not part of them. */
    { "PN", " DOE^JOHN ", "DOE^JOHN", true },
    { "LO", "CT", " CT ", true },
    /* Several wildcards, and a backtrack past a partial match. */
    { "LO", "A*B*C", "AxxBxxBxxC", true },
    { "LO", "A*B*C", "AxxBxxBxx", false },
    { "LO", "*CHEST", "CT CHEST CHEST", true },
    { "LO", "?", "", false },
    /* PN component groups: named in the key, compared whole. */
    { "PN", "Yamada^Tarou=\xe5\xb1\xb1", "Yamada^Tarou=\xe5\xb1\xb1", true },
    { "PN", "Yamada^Tarou=X", "Yamada^Tarou=\xe5\xb1\xb1", false },
    /* DA with old separators; ranges at their bounds. */
    { "DA", "2020.01.01", "20200101", true },
    { "DA", "20200101-20201231", "20201231", true },
    { "DA", "20200101-20201231", "20191231", false },
    { "DA", "-", "20200101", true },
    /* A DT time zone offset is not a range. */
    { "DT", "20200101120000+0100", "20200101120000", true },
    /* Numbers that are not numbers compare as text. */
    { "IS", "x", "x", true },
    { "DS", "1.50", "1.5", true },
    { "DS", "1.5", "1.6", false },
    /* UI: no wildcard, no case folding. */
    { "UI", "1.2.3", "1.2.3", true },
    { "UI", "1.2.?", "1.2.3", false },
    /* An empty key among several values matches anything. */
    { "CS", "CT\\", "MR", true },
};

static void test_values(void)
{
    for (size_t i = 0; i < sizeof(value_cases) / sizeof(value_cases[0]); i++) {
        const struct value_case *c = &value_cases[i];
        CHECK_MSG(match_value(c->vr, c->key, c->value) == c->matches,
                  "case %zu: %s key '%s' value '%s' should%s match", i, c->vr,
                  c->key, c->value != NULL ? c->value : "(null)",
                  c->matches ? "" : " not");
    }
    CHECK(match_vr_is("PN", "PN") && !match_vr_is("PN", "LO"));
}

/* A key or an entity built from "tag=value" pairs. */
static struct ds *entity(const char *patient_name, const char *code)
{
    struct ds *e = ds_new();
    struct ds_attr *seq;
    struct ds *item;

    if (e == NULL)
        return NULL;
    if (patient_name != NULL)
        (void)ds_put(e, DCM_TAG_PatientName, "PN", patient_name);
    if (code != NULL) {
        seq = ds_put(e, DCM_TAG_ProcedureCodeSequence, "SQ", NULL);
        item = seq != NULL ? ds_add_item(seq) : NULL;
        if (item != NULL)
            (void)ds_put(item, DCM_TAG_StudyDescription, "LO", code);
        /* A second item, so that "some item" is tested. */
        item = seq != NULL ? ds_add_item(seq) : NULL;
        if (item != NULL)
            (void)ds_put(item, DCM_TAG_StudyDescription, "LO", "OTHER");
    }
    return e;
}

static void test_keys(void)
{
    struct ds *key = entity("DOE*", "HEAD*");
    struct ds *universal = entity("*", "");
    struct ds *e1 = entity("Doe^John", "HEAD CT");
    struct ds *e2 = entity("Roe^Jane", "KNEE");
    struct ds *e3 = entity(NULL, NULL);
    const struct ds_attr *name_key;
    const struct ds_attr *seq_key;

    CHECK(key != NULL && universal != NULL && e1 != NULL && e2 != NULL &&
          e3 != NULL);
    name_key = ds_get(key, DCM_TAG_PatientName);
    seq_key = ds_get(key, DCM_TAG_ProcedureCodeSequence);
    CHECK(name_key != NULL && seq_key != NULL);

    /* Conditions: a value, or a sequence item key with one. */
    CHECK(match_key_has_condition(name_key));
    CHECK(match_key_has_condition(seq_key));
    CHECK(!match_key_has_condition(ds_get(universal, DCM_TAG_PatientName)));
    CHECK(!match_key_has_condition(
        ds_get(universal, DCM_TAG_ProcedureCodeSequence)));

    CHECK(match_key(name_key, e1, false));
    CHECK(!match_key(name_key, e2, false));
    /* Sequence matching: some item matches every key of the key item. */
    CHECK(match_key(seq_key, e1, false));
    CHECK(!match_key(seq_key, e2, false));
    /* Absent in the entity: no match, unless the server matched it. */
    CHECK(!match_key(name_key, e3, false));
    CHECK(match_key(name_key, e3, true));
    CHECK(!match_key(seq_key, e3, false));
    CHECK(match_key(seq_key, e3, true));
    /* A key without a condition matches anything. */
    CHECK(match_key(ds_get(universal, DCM_TAG_PatientName), e3, false));

    ds_free(key);
    ds_free(universal);
    ds_free(e1);
    ds_free(e2);
    ds_free(e3);
}

int main(void)
{
    test_values();
    test_keys();
    return tap_done();
}
