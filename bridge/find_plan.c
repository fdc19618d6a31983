/* SPDX-License-Identifier: Apache-2.0 */
/*
 * find_plan - QIDO-RS planning for C-FIND (see find_int.h): where each
 * attribute lives (PS3.4 C.6 key tables) and what each server profile can
 * match, so that a C-FIND identifier becomes one QIDO-RS resource with
 * the match parameters the server is asked to apply and the includefield
 * list of what to return. Everything else is matched in find.c on the
 * results (match.h).
 *
 *   standard  every key with a value but sequences, computed counts and
 *             multi-valued keys other than UID lists; keys of the levels
 *             a nested resource names are implied by its path;
 *             includefield lists every key asked for;
 *   azure     only Azure's searchable attributes, at the levels the
 *             resource filters, as one exact value or a date range
 *             (protocol-facts 3.4); includefield=all;
 *   orthanc   the standard keys whose values need no percent-decoding.
 */
#include "find_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/util.h"
#include "dicom/dataset.h"
#include "dicom/tags.h"
#include "match.h"
#include "web/qido.h"

/* The longest includefield list (9 bytes a tag). */
#define FIND_INCLUDEFIELD_MAX (64 * 1024)

const char *const find__level_names[4] = { "PATIENT", "STUDY", "SERIES",
                                           "IMAGE" };

/* Where an attribute lives (PS3.4 C.6 key tables), and whether the Azure
 * DICOM service can search it (protocol-facts 3.4). */
struct find_attr_info {
    uint32_t tag;
    enum find_level level;
    bool azure_searchable;
};

static const struct find_attr_info find_attrs[] = {
    { DCM_TAG_PatientName, FIND_LEVEL_PATIENT, true },
    { DCM_TAG_PatientID, FIND_LEVEL_PATIENT, true },
    { DCM_TAG_IssuerOfPatientID, FIND_LEVEL_PATIENT, false },
    { DCM_TAG_TypeOfPatientID, FIND_LEVEL_PATIENT, false },
    { DCM_TAG_PatientBirthDate, FIND_LEVEL_PATIENT, true },
    { DCM_TAG_PatientBirthTime, FIND_LEVEL_PATIENT, false },
    { DCM_TAG_PatientSex, FIND_LEVEL_PATIENT, false },
    { DCM_TAG_OtherPatientIDs, FIND_LEVEL_PATIENT, false },
    { DCM_TAG_OtherPatientNames, FIND_LEVEL_PATIENT, false },
    { DCM_TAG_OtherPatientIDsSequence, FIND_LEVEL_PATIENT, false },
    { DCM_TAG_EthnicGroup, FIND_LEVEL_PATIENT, false },
    { DCM_TAG_PatientComments, FIND_LEVEL_PATIENT, false },
    { DCM_TAG_NumberOfPatientRelatedStudies, FIND_LEVEL_PATIENT, false },
    { DCM_TAG_NumberOfPatientRelatedSeries, FIND_LEVEL_PATIENT, false },
    { DCM_TAG_NumberOfPatientRelatedInstances, FIND_LEVEL_PATIENT, false },
    { DCM_TAG_StudyDate, FIND_LEVEL_STUDY, true },
    { DCM_TAG_StudyTime, FIND_LEVEL_STUDY, false },
    { DCM_TAG_AccessionNumber, FIND_LEVEL_STUDY, true },
    { DCM_TAG_ModalitiesInStudy, FIND_LEVEL_STUDY, true },
    { DCM_TAG_SOPClassesInStudy, FIND_LEVEL_STUDY, false },
    { DCM_TAG_ReferringPhysicianName, FIND_LEVEL_STUDY, true },
    { DCM_TAG_TimezoneOffsetFromUTC, FIND_LEVEL_STUDY, false },
    { DCM_TAG_StudyDescription, FIND_LEVEL_STUDY, true },
    { DCM_TAG_ProcedureCodeSequence, FIND_LEVEL_STUDY, false },
    { DCM_TAG_NameOfPhysiciansReadingStudy, FIND_LEVEL_STUDY, false },
    { DCM_TAG_AdmittingDiagnosesDescription, FIND_LEVEL_STUDY, false },
    { DCM_TAG_PatientAge, FIND_LEVEL_STUDY, false },
    { DCM_TAG_PatientSize, FIND_LEVEL_STUDY, false },
    { DCM_TAG_PatientWeight, FIND_LEVEL_STUDY, false },
    { DCM_TAG_Occupation, FIND_LEVEL_STUDY, false },
    { DCM_TAG_AdditionalPatientHistory, FIND_LEVEL_STUDY, false },
    { DCM_TAG_StudyInstanceUID, FIND_LEVEL_STUDY, true },
    { DCM_TAG_StudyID, FIND_LEVEL_STUDY, false },
    { DCM_TAG_NumberOfStudyRelatedSeries, FIND_LEVEL_STUDY, false },
    { DCM_TAG_NumberOfStudyRelatedInstances, FIND_LEVEL_STUDY, false },
    { DCM_TAG_RequestingPhysician, FIND_LEVEL_STUDY, false },
    { DCM_TAG_RequestedProcedureDescription, FIND_LEVEL_STUDY, false },
    { DCM_TAG_SeriesDate, FIND_LEVEL_SERIES, false },
    { DCM_TAG_SeriesTime, FIND_LEVEL_SERIES, false },
    { DCM_TAG_Modality, FIND_LEVEL_SERIES, true },
    { DCM_TAG_Manufacturer, FIND_LEVEL_SERIES, false },
    { DCM_TAG_SeriesDescription, FIND_LEVEL_SERIES, false },
    { DCM_TAG_ManufacturerModelName, FIND_LEVEL_SERIES, true },
    { DCM_TAG_BodyPartExamined, FIND_LEVEL_SERIES, false },
    { DCM_TAG_ProtocolName, FIND_LEVEL_SERIES, false },
    { DCM_TAG_SeriesInstanceUID, FIND_LEVEL_SERIES, true },
    { DCM_TAG_SeriesNumber, FIND_LEVEL_SERIES, false },
    { DCM_TAG_Laterality, FIND_LEVEL_SERIES, false },
    { DCM_TAG_NumberOfSeriesRelatedInstances, FIND_LEVEL_SERIES, false },
    { DCM_TAG_PerformedProcedureStepStartDate, FIND_LEVEL_SERIES, true },
    { DCM_TAG_PerformedProcedureStepStartTime, FIND_LEVEL_SERIES, false },
    { DCM_TAG_RequestAttributesSequence, FIND_LEVEL_SERIES, false },
    { DCM_TAG_ImageType, FIND_LEVEL_IMAGE, false },
    { DCM_TAG_SOPClassUID, FIND_LEVEL_IMAGE, false },
    { DCM_TAG_SOPInstanceUID, FIND_LEVEL_IMAGE, true },
    { DCM_TAG_AcquisitionDate, FIND_LEVEL_IMAGE, false },
    { DCM_TAG_ContentDate, FIND_LEVEL_IMAGE, false },
    { DCM_TAG_AcquisitionTime, FIND_LEVEL_IMAGE, false },
    { DCM_TAG_ContentTime, FIND_LEVEL_IMAGE, false },
    { DCM_TAG_InstanceNumber, FIND_LEVEL_IMAGE, false },
    { DCM_TAG_NumberOfFrames, FIND_LEVEL_IMAGE, false },
    { DCM_TAG_Rows, FIND_LEVEL_IMAGE, false },
    { DCM_TAG_Columns, FIND_LEVEL_IMAGE, false },
    { DCM_TAG_BitsAllocated, FIND_LEVEL_IMAGE, false },
};

#define FIND_ATTR_COUNT (sizeof(find_attrs) / sizeof(find_attrs[0]))

static const struct find_attr_info *find_attr_info(uint32_t tag)
{
    for (size_t i = 0; i < FIND_ATTR_COUNT; i++)
        if (find_attrs[i].tag == tag)
            return &find_attrs[i];
    return NULL;
}

/* The key's value if it is one single UID (no list, no wildcard). */
static const char *single_uid(const struct ds *request, uint32_t tag)
{
    const char *v = ds_value(request, tag);

    if (v == NULL || strchr(v, '\\') != NULL || !util_uid_valid(v))
        return NULL;
    return v;
}

enum find_level find__attr_level(uint32_t tag, enum find_level query_level)
{
    const struct find_attr_info *info = find_attr_info(tag);

    return info != NULL ? info->level : query_level;
}

/*
 * Azure's QIDO-RS accepts a match parameter only for its searchable
 * attributes, at levels the resource allows, and only as one exact value
 * or a date range (protocol-facts 3.4).
 */
static bool azure_sendable(const struct ds_attr *key, int allowed_levels)
{
    const struct find_attr_info *info = find_attr_info(key->tag);
    enum find_level level;
    const char *v = key->value;

    if (info == NULL || !info->azure_searchable)
        return false;
    level = info->level == FIND_LEVEL_PATIENT ? FIND_LEVEL_STUDY : info->level;
    if ((allowed_levels & (1 << level)) == 0)
        return false;
    if (strpbrk(v, "*?\\\"") != NULL)
        return false;
    if (match_vr_is(key->vr, "DA")) {
        /* yyyyMMdd, or a range of them; "-" alone is refused. */
        size_t n = strlen(v);
        const char *dash = strchr(v, '-');
        if (n == 8)
            return strspn(v, "0123456789") == 8;
        if (dash == NULL || n > 17 || n < 9)
            return false;
        for (const char *p = v; *p; p++)
            if (*p != '-' && (*p < '0' || *p > '9'))
                return false;
        return (dash - v == 0 || dash - v == 8) &&
               (strlen(dash + 1) == 0 || strlen(dash + 1) == 8);
    }
    return true;
}

/* True if @value reaches a server that does not percent-decode (Orthanc
 * 1.10 with DICOMweb 1.7) intact: only characters sent as they are, plus
 * '^', which such servers take raw. */
static bool survives_without_decoding(const char *value)
{
    for (const char *p = value; *p; p++) {
        char c = *p;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
              c == '~' || c == '*' || c == '?' || c == '^'))
            return false;
    }
    return true;
}

/* Whether a key may be sent to a standard QIDO-RS server. */
static bool standard_sendable(const struct ds_attr *key,
                              enum find_level query_level, int nested_levels)
{
    enum find_level level = find__attr_level(key->tag, query_level);

    if (match_vr_is(key->vr, "SQ"))
        return false; /* sequence matching: here, on the results */
    if (key->tag == DCM_TAG_NumberOfPatientRelatedStudies ||
        key->tag == DCM_TAG_NumberOfPatientRelatedSeries ||
        key->tag == DCM_TAG_NumberOfPatientRelatedInstances ||
        key->tag == DCM_TAG_NumberOfStudyRelatedSeries ||
        key->tag == DCM_TAG_NumberOfStudyRelatedInstances ||
        key->tag == DCM_TAG_NumberOfSeriesRelatedInstances)
        return false; /* computed counts */
    if (strchr(key->value, '\\') != NULL && !match_vr_is(key->vr, "UI"))
        return false; /* several values: only UID lists are QIDO-RS */
    if (level == FIND_LEVEL_PATIENT)
        level = FIND_LEVEL_STUDY;
    /* A nested resource (/studies/{uid}/series) filters its own level
     * only: keys of the levels named in the path are implied. */
    if ((nested_levels & (1 << level)) != 0)
        return false;
    return true;
}

/* Whether @tag is one of ours (not asked of the server). */
static bool tag_is_local(uint32_t tag)
{
    return tag == DCM_TAG_QueryRetrieveLevel ||
           tag == DCM_TAG_SpecificCharacterSet || (tag >> 16) <= 0x0002 ||
           tag == DCM_TAG_RetrieveAETitle ||
           tag == DCM_TAG_NumberOfPatientRelatedStudies ||
           tag == DCM_TAG_NumberOfPatientRelatedSeries ||
           tag == DCM_TAG_NumberOfPatientRelatedInstances;
}

/* Appends @tag to the comma-separated list in @list, once. */
static int tag_list_add(struct buf *list, uint32_t tag)
{
    char text[9];

    qido_tag_text(tag, text);
    for (const char *p = buf_text(list); *p; p += p[8] == ',' ? 9 : 8)
        if (strncmp(p, text, 8) == 0)
            return 0;
    if (list->len > 0)
        (void)buf_append(list, ",", 1);
    return buf_append(list, text, 8);
}

/*
 * The includefield list of a standard request: every key asked for, the
 * unique key of the level, and at PATIENT level what grouping and the
 * patient counts need. Appended to @list (check its error).
 */
static void includefield_list(const struct ds *request,
                              enum find_level query_level, uint32_t unique_tag,
                              struct buf *list)
{
    for (size_t i = 0; i < request->count; i++)
        if (!tag_is_local(request->attrs[i].tag))
            (void)tag_list_add(list, request->attrs[i].tag);
    (void)tag_list_add(list, unique_tag);
    if (query_level == FIND_LEVEL_PATIENT) {
        (void)tag_list_add(list, DCM_TAG_PatientID);
        (void)tag_list_add(list, DCM_TAG_IssuerOfPatientID);
        if (ds_get(request, DCM_TAG_NumberOfPatientRelatedSeries) != NULL)
            (void)tag_list_add(list, DCM_TAG_NumberOfStudyRelatedSeries);
        if (ds_get(request, DCM_TAG_NumberOfPatientRelatedInstances) != NULL)
            (void)tag_list_add(list, DCM_TAG_NumberOfStudyRelatedInstances);
    }
}

/* Where a C-FIND is asked: the resource, the levels its path implies
 * (their keys are matched by the path), the levels Azure filters there,
 * and the unique key of the level. */
struct plan_resource {
    char path[256];
    int nested;
    int azure_levels;
    uint32_t unique_tag;
};

static void plan_resource(const struct ds *request, enum find_level query_level,
                          struct plan_resource *ret)
{
    const char *study = single_uid(request, DCM_TAG_StudyInstanceUID);
    const char *series = single_uid(request, DCM_TAG_SeriesInstanceUID);

    ret->nested = 0;
    switch (query_level) {
    case FIND_LEVEL_PATIENT:
    case FIND_LEVEL_STUDY:
        snprintf(ret->path, sizeof(ret->path), "/studies");
        ret->azure_levels = 1 << FIND_LEVEL_STUDY;
        ret->unique_tag = DCM_TAG_StudyInstanceUID;
        break;
    case FIND_LEVEL_SERIES:
        if (study != NULL) {
            snprintf(ret->path, sizeof(ret->path), "/studies/%s/series", study);
            ret->nested = 1 << FIND_LEVEL_STUDY;
            ret->azure_levels = 1 << FIND_LEVEL_SERIES;
        } else {
            snprintf(ret->path, sizeof(ret->path), "/series");
            ret->azure_levels = 1 << FIND_LEVEL_STUDY | 1 << FIND_LEVEL_SERIES;
        }
        ret->unique_tag = DCM_TAG_SeriesInstanceUID;
        break;
    case FIND_LEVEL_IMAGE:
    default:
        if (study != NULL && series != NULL) {
            snprintf(ret->path, sizeof(ret->path),
                     "/studies/%s/series/%s/instances", study, series);
            ret->nested = 1 << FIND_LEVEL_STUDY | 1 << FIND_LEVEL_SERIES;
            ret->azure_levels = 1 << FIND_LEVEL_IMAGE;
        } else if (study != NULL) {
            snprintf(ret->path, sizeof(ret->path), "/studies/%s/instances",
                     study);
            ret->nested = 1 << FIND_LEVEL_STUDY;
            ret->azure_levels = 1 << FIND_LEVEL_SERIES | 1 << FIND_LEVEL_IMAGE;
        } else {
            snprintf(ret->path, sizeof(ret->path), "/instances");
            ret->azure_levels = 1 << FIND_LEVEL_STUDY | 1 << FIND_LEVEL_SERIES |
                                1 << FIND_LEVEL_IMAGE;
        }
        ret->unique_tag = DCM_TAG_SOPInstanceUID;
        break;
    }
}

/* Whether the key @key (with a condition) is sent to a server of
 * @profile at @res. */
static bool plan_sendable(const struct ds_attr *key,
                          enum find_level query_level,
                          enum find_profile profile,
                          const struct plan_resource *res)
{
    bool send;

    if (profile == FIND_PROFILE_AZURE)
        return !match_vr_is(key->vr, "SQ") &&
               azure_sendable(key, res->azure_levels);
    send = standard_sendable(key, query_level, res->nested);
    if (send && profile == FIND_PROFILE_ORTHANC)
        send = survives_without_decoding(key->value) ||
               (match_vr_is(key->vr, "UI") &&
                strspn(key->value, "0123456789.\\") == strlen(key->value));
    return send;
}

/* Appends @key as a match parameter; a UID list is comma-separated in
 * QIDO-RS (PS3.18 8.3.4.1). Returns 0 or -ENOMEM. */
static int plan_add_match(struct qido_url *url, const struct ds_attr *key,
                          enum find_profile profile)
{
    char tag_text[9];
    char *list;

    qido_tag_text(key->tag, tag_text);
    if (!match_vr_is(key->vr, "UI") || strchr(key->value, '\\') == NULL) {
        qido_url_add(url, tag_text, key->value,
                     profile == FIND_PROFILE_ORTHANC ? QIDO_RAW_CARET : 0);
        return 0;
    }
    list = strdup(key->value);
    if (list == NULL)
        return -ENOMEM;
    for (char *p = list; *p; p++)
        if (*p == '\\')
            *p = ',';
    qido_url_add(url, tag_text, list, QIDO_RAW_COMMAS);
    free(list);
    return 0;
}

/* What to return: every key asked for (standard), or everything (Azure,
 * whose includefield names are a narrower list and answer 400 for any
 * other). Returns 0, -ENOMEM or -E2BIG. */
static int plan_add_includefield(struct qido_url *url, const struct ds *request,
                                 enum find_level query_level,
                                 enum find_profile profile, uint32_t unique_tag)
{
    struct buf list;
    int r;

    if (profile == FIND_PROFILE_AZURE) {
        qido_url_add(url, "includefield", "all", 0);
        return 0;
    }
    buf_init(&list, FIND_INCLUDEFIELD_MAX);
    includefield_list(request, query_level, unique_tag, &list);
    r = buf_error(&list);
    if (r == 0 && list.len > 0)
        qido_url_add(url, "includefield", buf_text(&list), QIDO_RAW_COMMAS);
    buf_free(&list);
    return r;
}

int find__plan(const struct ds *request, enum find_level query_level,
               enum find_profile profile, struct find_plan *ret_plan)
{
    struct find_plan plan = { NULL, NULL, 0 };
    struct plan_resource res;
    struct qido_url url;
    int r = 0;

    plan_resource(request, query_level, &res);
    plan.unique_tag = res.unique_tag;
    plan.server_matched = calloc(request->count + 1, sizeof(bool));
    if (plan.server_matched == NULL)
        return -ENOMEM;
    qido_url_init(&url, res.path);
    for (size_t i = 0; i < request->count && r == 0; i++) {
        const struct ds_attr *key = &request->attrs[i];
        enum find_level level = find__attr_level(key->tag, query_level);

        if (tag_is_local(key->tag))
            continue;
        if (level == FIND_LEVEL_PATIENT)
            level = FIND_LEVEL_STUDY;
        /* The UIDs named in the path are matched by the path. */
        if ((res.nested & (1 << level)) != 0 &&
            (key->tag == DCM_TAG_StudyInstanceUID ||
             key->tag == DCM_TAG_SeriesInstanceUID)) {
            plan.server_matched[i] = true;
            continue;
        }
        if (!match_key_has_condition(key) ||
            !plan_sendable(key, query_level, profile, &res))
            continue;
        r = plan_add_match(&url, key, profile);
        plan.server_matched[i] = r == 0;
    }
    if (r == 0)
        r = plan_add_includefield(&url, request, query_level, profile,
                                  plan.unique_tag);
    if (r == 0)
        plan.query_base = qido_url_take(&url, &r);
    qido_url_free(&url);
    if (plan.query_base == NULL) {
        free(plan.server_matched);
        return r < 0 ? r : -ENOMEM;
    }
    *ret_plan = plan;
    return 0;
}

void find__plan_free(struct find_plan *plan)
{
    free(plan->query_base);
    free(plan->server_matched);
    memset(plan, 0, sizeof(*plan));
}
