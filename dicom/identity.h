/* SPDX-License-Identifier: Apache-2.0 */
/*
 * identity - what identifies the patient in a Part 10 file, in UTF-8, for
 * redact_add_dataset(): the values a server may echo and that must then
 * be hidden. Read with part10 (stopping before the pixel data) and
 * converted by charset; never log them.
 *
 * Read: PatientName, OtherPatientNames, PatientBirthName,
 * PatientMotherBirthName, ResponsiblePerson (PN); PatientID,
 * OtherPatientIDs, the PatientID of each OtherPatientIDsSequence item,
 * PatientAddress, MedicalRecordLocator (LO); AccessionNumber,
 * PatientTelephoneNumbers (SH); PatientBirthDate (DA). Absent or empty
 * ones are left out. A value that cannot be converted from the file's
 * Specific Character Set is kept as it is when it is valid UTF-8, else
 * read as Latin-1 (the most common undeclared one).
 *
 * Thread safety: reentrant.
 * Errors: -EINVAL when the file cannot be read as Part 10 (a missing
 * file included), -ENOMEM.
 */
#ifndef STOWBRIDGE_DICOM_IDENTITY_H
#define STOWBRIDGE_DICOM_IDENTITY_H

#ifdef __cplusplus
extern "C" {
#endif

struct ds;

/* Reads the identifying values of the Part 10 file at @path into a new
 * data set (dataset.h) in *@ret_identity; the caller frees it with
 * ds_free(). */
int identity_read_file(const char *path, struct ds **ret_identity);

#ifdef __cplusplus
}
#endif

#endif
