/* SPDX-License-Identifier: Apache-2.0 */
/*
 * part10 - a plain-C reader of DICOM Part 10 file headers (PS3.10 7.1).
 *
 * Reads the preamble, the File Meta Information (group 0002, always
 * explicit VR little endian) and then the top-level elements of the data
 * set in its transfer syntax — implicit VR little endian, explicit VR
 * little endian (and every encapsulated syntax, whose header is encoded
 * so), explicit VR big endian (retired), and deflated explicit VR little
 * endian (raw deflate, RFC 1951, through zlib) — until every requested
 * element is found, or PixelData (7FE0,0010) or the end is reached. The
 * pixel data is never read. Sequences are skipped without being decoded
 * (but for one element of each item of a sequence asked for, item_tag),
 * whether of defined or undefined length (items nested to
 * PART10_MAX_DEPTH); an element of VR UN with undefined length holds
 * implicit VR little endian data (PS3.5 6.2.2) and is skipped as such.
 *
 * No data dictionary is needed: an element of defined length is skipped
 * by its length whatever it holds.
 *
 * Values are returned raw (the bytes of the element, so a string keeps
 * its character set; trailing spaces and NULs removed) and bounded by
 * PART10_VALUE_MAX: a longer element is reported found but without a
 * value.
 *
 * Thread safety: reentrant; nothing global.
 * Errors: 0, or -EINVAL when the input is not a well-formed Part 10 file up
 * to the point read (with the offset and the reason in @err), -ENOMEM,
 * or the negative errno of open/read.
 */
#ifndef STOWBRIDGE_DICOM_PART10_H
#define STOWBRIDGE_DICOM_PART10_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Longest value returned; longer elements are found but not copied. */
#define PART10_VALUE_MAX 65536u
/* Deepest nesting of sequences skipped. */
#define PART10_MAX_DEPTH 32
/* Most items of a sequence whose values are returned (item_tag). */
#define PART10_ITEMS_MAX 256u
/* Room for a UID and its NUL. */
#define PART10_UID_MAX 65

/* One element asked for: a tag of group 0002 or a top-level data set tag,
 * written (group << 16 | element). */
struct part10_field {
    uint32_t tag; /* in */
    /* in: 0, or a tag wanted in each item of the sequence @tag (read at
     * the first level of its items only): then @items is filled, not
     * @value. */
    uint32_t item_tag;
    bool found;    /* out: the element is present */
    char vr[3];    /* out: explicit VR, or "" in implicit VR */
    char *value;   /* out: malloc()ed, NUL-terminated; NULL if
                      absent or longer than PART10_VALUE_MAX */
    size_t length; /* out: bytes in value */
    /* out, with @item_tag: the value of @item_tag in each item, in order
     * (malloc()ed like @value, NULL where an item lacks it), for the first
     * PART10_ITEMS_MAX items; @item_count of them. */
    char **items;
    size_t item_count;
};

/* What the header says about the file itself. */
struct part10_info {
    char transfer_syntax[PART10_UID_MAX]; /* TransferSyntaxUID (0002,0010) */
    uint64_t dataset_offset; /* first byte of the data set in the file */
    bool deflated;           /* the data set is deflate-compressed */
    bool big_endian;
    bool implicit_vr;
};

/*
 * Reads the header of the Part 10 file at @path and fills @fields
 * (@count of them, in any order) and, if not NULL, @ret_info. On error
 * the fields are left cleared (part10_fields_clear()).
 */
int part10_read_file(const char *path, struct part10_field *fields,
                     size_t count, struct part10_info *ret_info, char *err,
                     size_t err_len);

/* The same for a file held in memory (@len bytes at @data). */
int part10_read_buffer(const void *data, size_t len,
                       struct part10_field *fields, size_t count,
                       struct part10_info *ret_info, char *err, size_t err_len);

/* Frees the values in @fields and marks them not found (the inputs tag
 * and item_tag stay). */
void part10_fields_clear(struct part10_field *fields, size_t count);

/*
 * Reads StudyInstanceUID (0020,000D) and SOPInstanceUID (0008,0018) of
 * the Part 10 file at @path into @ret_study and @ret_sop (written only on
 * success), for a spool entry whose meta/ file was lost. Returns 0,
 * -EINVAL when the file is not a well-formed Part 10 file up to them or a
 * UID is missing or not a valid UID (util_uid_valid(): the reason in
 * @err), -ENOMEM, or the negative errno of open/read.
 */
int part10_read_instance_uids(const char *path, char ret_study[PART10_UID_MAX],
                              char ret_sop[PART10_UID_MAX], char *err,
                              size_t err_len);

#ifdef __cplusplus
}
#endif

#endif
