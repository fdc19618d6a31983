/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dataset - a plain-C DICOM data set for C-FIND identifiers and QIDO-RS
 * results, the shape in which scp/ (DCMTK), web/ (DICOM JSON) and
 * bridge/find.c exchange them without knowing each other's types.
 *
 * An attribute is a tag, a two-letter VR and its value as UTF-8 text:
 * several values are joined with a backslash (DICOM's own separator); a
 * PN value keeps its component groups joined with '='. A NULL value means
 * zero length. A sequence (VR "SQ") has items instead of a value; each
 * item is itself a struct ds. Attributes stay in insertion order; a tag
 * appears at most once per data set (ds_put() replaces).
 *
 * Thread safety: a struct ds belongs to one thread at a time.
 * Errors: functions that allocate return NULL or -ENOMEM on
 * out-of-memory; nothing else fails.
 */
#ifndef STOWBRIDGE_DATASET_H
#define STOWBRIDGE_DATASET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DS_TAG(group, element) (((uint32_t)(group) << 16) | (uint32_t)(element))

struct ds;

struct ds_attr {
    uint32_t tag;
    char vr[3];        /* "PN", "DA", "SQ", ... */
    char *value;       /* UTF-8; NULL: zero length (not for SQ) */
    struct ds **items; /* SQ only */
    size_t item_count;
};

struct ds {
    struct ds_attr *attrs;
    size_t count;
    size_t cap;
};

/* An empty data set; NULL on out-of-memory. */
struct ds *ds_new(void);

/* Frees @ds with every attribute and item. Accepts NULL. */
void ds_free(struct ds *ds);

/* The attribute with @tag, or NULL. */
const struct ds_attr *ds_get(const struct ds *ds, uint32_t tag);
struct ds_attr *ds_get_mut(struct ds *ds, uint32_t tag);

/* The value of @tag: NULL when absent or zero length. */
const char *ds_value(const struct ds *ds, uint32_t tag);

/*
 * Sets @tag to @value (copied; NULL for zero length) with @vr, replacing
 * an existing attribute with that tag (and its items). Returns the
 * attribute, or NULL on out-of-memory.
 */
struct ds_attr *ds_put(struct ds *ds, uint32_t tag, const char *vr,
                       const char *value);

/* Appends a new empty item to sequence @attr; NULL on out-of-memory. */
struct ds *ds_add_item(struct ds_attr *attr);

/* A deep copy of @src; NULL on out-of-memory. */
struct ds *ds_copy(const struct ds *src);

/*
 * Copies attribute @src (with its items) into @dst, replacing any
 * attribute with the same tag. Returns 0 or -ENOMEM.
 */
int ds_put_copy(struct ds *dst, const struct ds_attr *src);

/* Removes @tag if present. */
void ds_remove(struct ds *ds, uint32_t tag);

/* Sorts the attributes by tag (DICOM order), recursively. */
void ds_sort(struct ds *ds);

#ifdef __cplusplus
}
#endif

#endif
