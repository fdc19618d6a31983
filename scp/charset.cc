/* SPDX-License-Identifier: Apache-2.0 */
/*
 * charset - character sets on the C-FIND path (see scp_int.h): the
 * identifier of a request is read in UTF-8 whatever Specific Character
 * Set (0008,0005) it names, and each answer goes back in the character
 * set the SCU asked for when every character fits there, else in UTF-8
 * ("ISO_IR 192"), never silently garbled. Conversions are DCMTK's
 * (convertToUTF8(), convertCharacterSet()).
 */
#include "scp_int.h"

#include <memory>

#include "dcmtk/dcmdata/dcdeftag.h"

#include "base/log.h"
#include "dicom/dataset.h"

bool scp__ds_has_non_ascii(const struct ds *ds)
{
    for (size_t i = 0; i < ds->count; i++) {
        const struct ds_attr *attr = &ds->attrs[i];
        for (const char *p = attr->value; p != NULL && *p; p++)
            if ((unsigned char)*p >= 0x80)
                return true;
        for (size_t j = 0; j < attr->item_count; j++)
            if (scp__ds_has_non_ascii(attr->items[j]))
                return true;
    }
    return false;
}

bool scp__charset_request_to_utf8(DcmDataset *identifier, OFString &ret_charset)
{
    OFString charset;

    (void)identifier->findAndGetOFStringArray(DCM_SpecificCharacterSet,
                                              charset);
    size_t first = charset.find_first_not_of(' ');
    size_t last = charset.find_last_not_of(' ');
    ret_charset = first == OFString_npos
                      ? OFString()
                      : charset.substr(first, last - first + 1);
    return ret_charset.empty() || ret_charset == "ISO_IR 192" ||
           identifier->convertToUTF8().good();
}

std::unique_ptr<DcmDataset>
scp__charset_answer(struct scp_assoc *sa, const struct ds *answer,
                    std::unique_ptr<DcmDataset> dset, const OFString &charset)
{
    if (!scp__ds_has_non_ascii(answer)) {
        if (!charset.empty())
            (void)dset->putAndInsertString(DCM_SpecificCharacterSet,
                                           charset.c_str());
        return dset;
    }
    (void)dset->putAndInsertString(DCM_SpecificCharacterSet, "ISO_IR 192");
    if (charset.empty() || charset == "ISO_IR 192")
        return dset;
    auto converted = std::make_unique<DcmDataset>(*dset);
    if (converted->convertCharacterSet(charset, 0).good())
        return converted;
    log_notice("event=find-charset assoc=%lu from=%s@%s asked=\"%s\" "
               "reason=\"an answer cannot be represented in the requested "
               "character set; sent as ISO_IR 192 (UTF-8)\"",
               sa->number, sa->calling_ae, sa->peer, charset.c_str());
    return dset;
}
