/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tags - the one set of DICOM tag constants of the project, with their
 * keywords and VRs (PS3.6), for the tags stowbridge itself reads, writes,
 * matches or queries. Everything else stays a number.
 *
 * DCM_TAG_<Keyword> is (group << 16 | element), the keyword as PS3.6
 * writes it (DCMTK names the same constants DCM_<Keyword>). Prose and logs
 * write "Keyword (GGGG,EEEE)" (dicom_tag_describe()).
 *
 * Thread safety: constant data only.
 */
#ifndef STOWBRIDGE_DICOM_TAGS_H
#define STOWBRIDGE_DICOM_TAGS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DICOM_TAG(group, element) \
    (((uint32_t)(group) << 16) | (uint32_t)(element))

/* X(Keyword, group, element, VR) for every known tag, in tag order. */
#define DICOM_TAG_LIST(X)                                    \
    X(TransferSyntaxUID, 0x0002, 0x0010, "UI")               \
    X(SourceApplicationEntityTitle, 0x0002, 0x0016, "AE")    \
    X(SpecificCharacterSet, 0x0008, 0x0005, "CS")            \
    X(ImageType, 0x0008, 0x0008, "CS")                       \
    X(SOPClassUID, 0x0008, 0x0016, "UI")                     \
    X(SOPInstanceUID, 0x0008, 0x0018, "UI")                  \
    X(StudyDate, 0x0008, 0x0020, "DA")                       \
    X(SeriesDate, 0x0008, 0x0021, "DA")                      \
    X(AcquisitionDate, 0x0008, 0x0022, "DA")                 \
    X(ContentDate, 0x0008, 0x0023, "DA")                     \
    X(StudyTime, 0x0008, 0x0030, "TM")                       \
    X(SeriesTime, 0x0008, 0x0031, "TM")                      \
    X(AcquisitionTime, 0x0008, 0x0032, "TM")                 \
    X(ContentTime, 0x0008, 0x0033, "TM")                     \
    X(AccessionNumber, 0x0008, 0x0050, "SH")                 \
    X(IssuerOfAccessionNumberSequence, 0x0008, 0x0051, "SQ") \
    X(QueryRetrieveLevel, 0x0008, 0x0052, "CS")              \
    X(RetrieveAETitle, 0x0008, 0x0054, "AE")                 \
    X(InstanceAvailability, 0x0008, 0x0056, "CS")            \
    X(FailedSOPInstanceUIDList, 0x0008, 0x0058, "UI")        \
    X(Modality, 0x0008, 0x0060, "CS")                        \
    X(ModalitiesInStudy, 0x0008, 0x0061, "CS")               \
    X(SOPClassesInStudy, 0x0008, 0x0062, "UI")               \
    X(Manufacturer, 0x0008, 0x0070, "LO")                    \
    X(InstitutionName, 0x0008, 0x0080, "LO")                 \
    X(ReferringPhysicianName, 0x0008, 0x0090, "PN")          \
    X(TimezoneOffsetFromUTC, 0x0008, 0x0201, "SH")           \
    X(StationName, 0x0008, 0x1010, "SH")                     \
    X(StudyDescription, 0x0008, 0x1030, "LO")                \
    X(ProcedureCodeSequence, 0x0008, 0x1032, "SQ")           \
    X(SeriesDescription, 0x0008, 0x103E, "LO")               \
    X(NameOfPhysiciansReadingStudy, 0x0008, 0x1060, "PN")    \
    X(OperatorsName, 0x0008, 0x1070, "PN")                   \
    X(AdmittingDiagnosesDescription, 0x0008, 0x1080, "LO")   \
    X(ManufacturerModelName, 0x0008, 0x1090, "LO")           \
    X(ReferencedStudySequence, 0x0008, 0x1110, "SQ")         \
    X(ReferencedSOPClassUID, 0x0008, 0x1150, "UI")           \
    X(ReferencedSOPInstanceUID, 0x0008, 0x1155, "UI")        \
    X(RetrieveURL, 0x0008, 0x1190, "UR")                     \
    X(TransactionUID, 0x0008, 0x1195, "UI")                  \
    X(WarningReason, 0x0008, 0x1196, "US")                   \
    X(FailureReason, 0x0008, 0x1197, "US")                   \
    X(FailedSOPSequence, 0x0008, 0x1198, "SQ")               \
    X(ReferencedSOPSequence, 0x0008, 0x1199, "SQ")           \
    X(OtherFailuresSequence, 0x0008, 0x119A, "SQ")           \
    X(PatientName, 0x0010, 0x0010, "PN")                     \
    X(PatientID, 0x0010, 0x0020, "LO")                       \
    X(IssuerOfPatientID, 0x0010, 0x0021, "LO")               \
    X(TypeOfPatientID, 0x0010, 0x0022, "CS")                 \
    X(PatientBirthDate, 0x0010, 0x0030, "DA")                \
    X(PatientBirthTime, 0x0010, 0x0032, "TM")                \
    X(PatientSex, 0x0010, 0x0040, "CS")                      \
    X(OtherPatientIDs, 0x0010, 0x1000, "LO")                 \
    X(OtherPatientNames, 0x0010, 0x1001, "PN")               \
    X(OtherPatientIDsSequence, 0x0010, 0x1002, "SQ")         \
    X(PatientBirthName, 0x0010, 0x1005, "PN")                \
    X(PatientAge, 0x0010, 0x1010, "AS")                      \
    X(PatientSize, 0x0010, 0x1020, "DS")                     \
    X(PatientWeight, 0x0010, 0x1030, "DS")                   \
    X(PatientAddress, 0x0010, 0x1040, "LO")                  \
    X(PatientMotherBirthName, 0x0010, 0x1060, "PN")          \
    X(MedicalRecordLocator, 0x0010, 0x1090, "LO")            \
    X(PatientTelephoneNumbers, 0x0010, 0x2154, "SH")         \
    X(EthnicGroup, 0x0010, 0x2160, "SH")                     \
    X(Occupation, 0x0010, 0x2180, "SH")                      \
    X(AdditionalPatientHistory, 0x0010, 0x21B0, "LT")        \
    X(ResponsiblePerson, 0x0010, 0x2297, "PN")               \
    X(PatientComments, 0x0010, 0x4000, "LT")                 \
    X(BodyPartExamined, 0x0018, 0x0015, "CS")                \
    X(ProtocolName, 0x0018, 0x1030, "LO")                    \
    X(StudyInstanceUID, 0x0020, 0x000D, "UI")                \
    X(SeriesInstanceUID, 0x0020, 0x000E, "UI")               \
    X(StudyID, 0x0020, 0x0010, "SH")                         \
    X(SeriesNumber, 0x0020, 0x0011, "IS")                    \
    X(InstanceNumber, 0x0020, 0x0013, "IS")                  \
    X(Laterality, 0x0020, 0x0060, "CS")                      \
    X(NumberOfPatientRelatedStudies, 0x0020, 0x1200, "IS")   \
    X(NumberOfPatientRelatedSeries, 0x0020, 0x1202, "IS")    \
    X(NumberOfPatientRelatedInstances, 0x0020, 0x1204, "IS") \
    X(NumberOfStudyRelatedSeries, 0x0020, 0x1206, "IS")      \
    X(NumberOfStudyRelatedInstances, 0x0020, 0x1208, "IS")   \
    X(NumberOfSeriesRelatedInstances, 0x0020, 0x1209, "IS")  \
    X(NumberOfFrames, 0x0028, 0x0008, "IS")                  \
    X(Rows, 0x0028, 0x0010, "US")                            \
    X(Columns, 0x0028, 0x0011, "US")                         \
    X(BitsAllocated, 0x0028, 0x0100, "US")                   \
    X(RequestingPhysician, 0x0032, 0x1032, "PN")             \
    X(RequestedProcedureDescription, 0x0032, 0x1060, "LO")   \
    X(PerformedProcedureStepStartDate, 0x0040, 0x0244, "DA") \
    X(PerformedProcedureStepStartTime, 0x0040, 0x0245, "TM") \
    X(RequestAttributesSequence, 0x0040, 0x0275, "SQ")       \
    X(PixelData, 0x7FE0, 0x0010, "OB")

#define DICOM_TAG_ENUM_ROW(keyword, group, element, vr) \
    DCM_TAG_##keyword = DICOM_TAG(group, element),
enum dicom_tag { DICOM_TAG_LIST(DICOM_TAG_ENUM_ROW) };
#undef DICOM_TAG_ENUM_ROW

/* What PS3.6 says of a tag in the list. */
struct dicom_tag_info {
    uint32_t tag;
    const char *keyword; /* "PatientName" */
    const char *vr;      /* "PN" */
};

/* The entry for @tag, or NULL for a tag not in the list. */
const struct dicom_tag_info *dicom_tag_lookup(uint32_t tag);

/* The keyword of @tag, or NULL. */
const char *dicom_tag_keyword(uint32_t tag);

/* The tag named @keyword (exact, case-sensitive), or 0. */
uint32_t dicom_tag_by_keyword(const char *keyword);

/* "GGGGEEEE" (uppercase hex), the DICOM JSON key of @tag (PS3.18 F.2). */
void dicom_tag_json_key(uint32_t tag, char ret_key[9]);

/*
 * "Keyword (GGGG,EEEE)" or, for a tag not in the list, "(GGGG,EEEE)",
 * into @buf (capacity @len, at least 12). Returns @buf.
 */
const char *dicom_tag_describe(uint32_t tag, char *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif
