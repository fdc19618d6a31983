/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_tags - the tag table: sorted and unique (bisection depends on it),
 * every VR a two-letter PS3.5 VR, look-ups both ways, JSON keys and the
 * "Keyword (GGGG,EEEE)" form.
 */
#include <string.h>

#include "dicom/tags.h"
#include "tap.h"

#define ROW(keyword, group, element, vr) \
    { DICOM_TAG(group, element), #keyword, vr },
static const struct dicom_tag_info all[] = { DICOM_TAG_LIST(ROW) };
#undef ROW

int main(void)
{
    static const char vrs[] = "AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF "
                              "OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN "
                              "UR US UT UV";
    size_t n = sizeof(all) / sizeof(all[0]);
    char buf[64];
    char key[9];

    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            CHECK_MSG(all[i - 1].tag < all[i].tag, "%s out of order",
                      all[i].keyword);
        CHECK_MSG(strlen(all[i].vr) == 2 && strstr(vrs, all[i].vr) != NULL,
                  "%s: VR %s", all[i].keyword, all[i].vr);
        CHECK(dicom_tag_lookup(all[i].tag) != NULL &&
              strcmp(dicom_tag_lookup(all[i].tag)->keyword, all[i].keyword) ==
                  0);
        CHECK(dicom_tag_by_keyword(all[i].keyword) == all[i].tag);
    }
    CHECK(DCM_TAG_PatientName == 0x00100010u);
    CHECK(DCM_TAG_FailedSOPSequence == 0x00081198u);
    CHECK(dicom_tag_lookup(0x00091001u) == NULL);
    CHECK(dicom_tag_by_keyword("NoSuchKeyword") == 0);
    dicom_tag_json_key(DCM_TAG_ReferencedSOPSequence, key);
    CHECK(strcmp(key, "00081199") == 0);
    CHECK(strcmp(dicom_tag_describe(DCM_TAG_StudyInstanceUID, buf, sizeof(buf)),
                 "StudyInstanceUID (0020,000D)") == 0);
    CHECK(strcmp(dicom_tag_describe(0x0009100Au, buf, sizeof(buf)),
                 "(0009,100A)") == 0);
    return tap_done();
}
