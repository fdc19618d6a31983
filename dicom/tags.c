/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tags - see tags.h. The table is DICOM_TAG_LIST, sorted by tag (a unit
 * test checks the order), searched by bisection.
 */
#include "dicom/tags.h"

#include <stdio.h>
#include <string.h>

#define DICOM_TAG_TABLE_ROW(keyword, group, element, vr) \
    { DICOM_TAG(group, element), #keyword, vr },
static const struct dicom_tag_info dicom_tags[] = { DICOM_TAG_LIST(
    DICOM_TAG_TABLE_ROW) };
#undef DICOM_TAG_TABLE_ROW

#define DICOM_TAG_COUNT (sizeof(dicom_tags) / sizeof(dicom_tags[0]))

const struct dicom_tag_info *dicom_tag_lookup(uint32_t tag)
{
    size_t lo = 0;
    size_t hi = DICOM_TAG_COUNT;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (dicom_tags[mid].tag == tag)
            return &dicom_tags[mid];
        if (dicom_tags[mid].tag < tag)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const char *dicom_tag_keyword(uint32_t tag)
{
    const struct dicom_tag_info *info = dicom_tag_lookup(tag);

    return info != NULL ? info->keyword : NULL;
}

uint32_t dicom_tag_by_keyword(const char *keyword)
{
    for (size_t i = 0; i < DICOM_TAG_COUNT; i++)
        if (strcmp(dicom_tags[i].keyword, keyword) == 0)
            return dicom_tags[i].tag;
    return 0;
}

void dicom_tag_json_key(uint32_t tag, char ret_key[9])
{
    snprintf(ret_key, 9, "%08X", (unsigned)tag);
}

const char *dicom_tag_describe(uint32_t tag, char *buf, size_t len)
{
    const char *keyword = dicom_tag_keyword(tag);

    if (keyword != NULL)
        snprintf(buf, len, "%s (%04X,%04X)", keyword, (unsigned)(tag >> 16),
                 (unsigned)(tag & 0xFFFF));
    else
        snprintf(buf, len, "(%04X,%04X)", (unsigned)(tag >> 16),
                 (unsigned)(tag & 0xFFFF));
    return buf;
}
