/* SPDX-License-Identifier: Apache-2.0 */
/*
 * identity - see identity.h.
 */
#include "dicom/identity.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "dicom/charset.h"
#include "dicom/dataset.h"
#include "dicom/part10.h"
#include "dicom/tags.h"

/* The values read, with the VR that says how redact.h hides them. */
static const struct {
    uint32_t tag;
    const char *vr;
} identity_tags[] = {
    { DCM_TAG_PatientName, "PN" },
    { DCM_TAG_OtherPatientNames, "PN" },
    { DCM_TAG_PatientBirthName, "PN" },
    { DCM_TAG_PatientMotherBirthName, "PN" },
    { DCM_TAG_ResponsiblePerson, "PN" },
    { DCM_TAG_PatientID, "LO" },
    { DCM_TAG_OtherPatientIDs, "LO" },
    { DCM_TAG_PatientBirthDate, "DA" },
    { DCM_TAG_AccessionNumber, "SH" },
    { DCM_TAG_PatientAddress, "LO" },
    { DCM_TAG_PatientTelephoneNumbers, "SH" },
    { DCM_TAG_MedicalRecordLocator, "LO" },
};

#define IDENTITY_TAG_COUNT (sizeof(identity_tags) / sizeof(identity_tags[0]))
/* The fields read: the values, then the character set and the sequence. */
#define IDENTITY_CHARSET IDENTITY_TAG_COUNT
#define IDENTITY_SEQUENCE (IDENTITY_TAG_COUNT + 1)
#define IDENTITY_FIELD_COUNT (IDENTITY_TAG_COUNT + 2)

static bool identity_valid_utf8(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t len = p[i] < 0x80                    ? 1
                     : p[i] >= 0xC2 && p[i] <= 0xDF ? 2
                     : p[i] >= 0xE0 && p[i] <= 0xEF ? 3
                     : p[i] >= 0xF0 && p[i] <= 0xF4 ? 4
                                                    : 0;
        if (len == 0 || i + len > n)
            return false;
        for (size_t k = 1; k < len; k++)
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
        i += len;
    }
    return true;
}

/* @raw (@len bytes) as UTF-8 from @charset; failing that, as it is when
 * valid UTF-8, else read as Latin-1. NULL on out-of-memory. */
static char *identity_utf8(const char *charset, const char *raw, size_t len)
{
    char *out = NULL;
    int r = charset_to_utf8(charset, raw, len, &out, NULL);

    if (r == 0 || r == -ENOMEM)
        return out;
    if (identity_valid_utf8((const unsigned char *)raw, len))
        return strndup(raw, len);
    out = malloc(2 * len + 1);
    if (out == NULL)
        return NULL;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)raw[i];
        if (c < 0x80) {
            out[n++] = (char)c;
        } else {
            out[n++] = (char)(0xC0 | (c >> 6));
            out[n++] = (char)(0x80 | (c & 0x3F));
        }
    }
    out[n] = '\0';
    return out;
}

/* Puts @value (@len bytes, in @charset) into @out as @tag with @vr, if it
 * is not empty. */
static int identity_put(struct ds *out, uint32_t tag, const char *vr,
                        const char *charset, const char *value, size_t len)
{
    if (value == NULL || len == 0)
        return 0;
    char *text = identity_utf8(charset, value, len);
    if (text == NULL)
        return -ENOMEM;
    struct ds_attr *attr = ds_put(out, tag, vr, text);
    free(text);
    return attr != NULL ? 0 : -ENOMEM;
}

int identity_read_file(const char *path, struct ds **ret_identity)
{
    struct part10_field fields[IDENTITY_FIELD_COUNT];
    struct part10_field *seq = &fields[IDENTITY_SEQUENCE];
    struct ds *out = NULL;
    const char *charset;
    int r;

    memset(fields, 0, sizeof(fields));
    for (size_t i = 0; i < IDENTITY_TAG_COUNT; i++)
        fields[i].tag = identity_tags[i].tag;
    fields[IDENTITY_CHARSET].tag = DCM_TAG_SpecificCharacterSet;
    seq->tag = DCM_TAG_OtherPatientIDsSequence;
    seq->item_tag = DCM_TAG_PatientID;
    r = part10_read_file(path, fields, IDENTITY_FIELD_COUNT, NULL, NULL, 0);
    if (r < 0)
        return r == -ENOMEM ? -ENOMEM : -EINVAL;
    charset = fields[IDENTITY_CHARSET].value;
    out = ds_new();
    if (out == NULL) {
        r = -ENOMEM;
        goto out_free;
    }
    for (size_t i = 0; i < IDENTITY_TAG_COUNT && r == 0; i++)
        r = identity_put(out, identity_tags[i].tag, identity_tags[i].vr,
                         charset, fields[i].value, fields[i].length);
    /* A sequence read as one (not another explicit VR): each item's
     * PatientID. */
    if (r == 0 && seq->found &&
        (seq->vr[0] == '\0' || strcmp(seq->vr, "SQ") == 0 ||
         strcmp(seq->vr, "UN") == 0)) {
        struct ds_attr *attr = ds_put(out, seq->tag, "SQ", NULL);
        if (attr == NULL)
            r = -ENOMEM;
        for (size_t k = 0; r == 0 && k < seq->item_count; k++) {
            struct ds *sub = ds_add_item(attr);
            const char *id = seq->items[k];
            r = sub == NULL
                    ? -ENOMEM
                    : identity_put(sub, DCM_TAG_PatientID, "LO", charset, id,
                                   id != NULL ? strlen(id) : 0);
        }
    }
    if (r < 0)
        goto out_free;
    part10_fields_clear(fields, IDENTITY_FIELD_COUNT);
    *ret_identity = out;
    return 0;

out_free:
    ds_free(out);
    part10_fields_clear(fields, IDENTITY_FIELD_COUNT);
    return r;
}
