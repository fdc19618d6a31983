/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dataset - plain-C DICOM data sets (see dataset.h).
 */
#include "dataset.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct ds *ds_new(void)
{
    return calloc(1, sizeof(struct ds));
}

static void ds_attr_clear(struct ds_attr *attr)
{
    free(attr->value);
    attr->value = NULL;
    for (size_t i = 0; i < attr->item_count; i++)
        ds_free(attr->items[i]);
    free(attr->items);
    attr->items = NULL;
    attr->item_count = 0;
}

void ds_free(struct ds *ds)
{
    if (ds == NULL)
        return;
    for (size_t i = 0; i < ds->count; i++)
        ds_attr_clear(&ds->attrs[i]);
    free(ds->attrs);
    free(ds);
}

struct ds_attr *ds_get_mut(struct ds *ds, uint32_t tag)
{
    for (size_t i = 0; i < ds->count; i++)
        if (ds->attrs[i].tag == tag)
            return &ds->attrs[i];
    return NULL;
}

const struct ds_attr *ds_get(const struct ds *ds, uint32_t tag)
{
    return ds_get_mut((struct ds *)ds, tag);
}

const char *ds_value(const struct ds *ds, uint32_t tag)
{
    const struct ds_attr *attr = ds_get(ds, tag);

    if (attr == NULL || attr->value == NULL || attr->value[0] == '\0')
        return NULL;
    return attr->value;
}

struct ds_attr *ds_put(struct ds *ds, uint32_t tag, const char *vr,
                       const char *value)
{
    char *copy = NULL;
    struct ds_attr *attr;

    if (value != NULL && (copy = strdup(value)) == NULL)
        return NULL;
    attr = ds_get_mut(ds, tag);
    if (attr == NULL) {
        if (ds->count == ds->cap) {
            size_t cap = ds->cap == 0 ? 8 : ds->cap * 2;
            struct ds_attr *grown = realloc(ds->attrs, cap * sizeof(*grown));
            if (grown == NULL) {
                free(copy);
                return NULL;
            }
            ds->attrs = grown;
            ds->cap = cap;
        }
        attr = &ds->attrs[ds->count++];
        memset(attr, 0, sizeof(*attr));
        attr->tag = tag;
    } else {
        ds_attr_clear(attr);
    }
    attr->vr[0] = vr != NULL && vr[0] != '\0' ? vr[0] : 'U';
    attr->vr[1] = vr != NULL && vr[0] != '\0' ? vr[1] : 'N';
    attr->vr[2] = '\0';
    attr->value = copy;
    return attr;
}

struct ds *ds_add_item(struct ds_attr *attr)
{
    struct ds **grown;
    struct ds *item = ds_new();

    if (item == NULL)
        return NULL;
    grown = realloc(attr->items, (attr->item_count + 1) * sizeof(*grown));
    if (grown == NULL) {
        ds_free(item);
        return NULL;
    }
    attr->items = grown;
    attr->items[attr->item_count++] = item;
    return item;
}

int ds_put_copy(struct ds *dst, const struct ds_attr *src)
{
    /* @src may live in @dst: copy what is needed before ds_put(). */
    struct ds **items = NULL;
    size_t item_count = src->item_count;
    char vr[3];
    uint32_t tag = src->tag;
    struct ds_attr *attr;

    memcpy(vr, src->vr, sizeof(vr));
    if (item_count > 0) {
        items = calloc(item_count, sizeof(*items));
        if (items == NULL)
            return -ENOMEM;
        for (size_t i = 0; i < item_count; i++) {
            items[i] = ds_copy(src->items[i]);
            if (items[i] == NULL) {
                for (size_t j = 0; j < i; j++)
                    ds_free(items[j]);
                free(items);
                return -ENOMEM;
            }
        }
    }
    attr = ds_put(dst, tag, vr, src->value);
    if (attr == NULL) {
        for (size_t i = 0; i < item_count; i++)
            ds_free(items[i]);
        free(items);
        return -ENOMEM;
    }
    attr->items = items;
    attr->item_count = item_count;
    return 0;
}

struct ds *ds_copy(const struct ds *src)
{
    struct ds *copy = ds_new();

    if (copy == NULL)
        return NULL;
    for (size_t i = 0; i < src->count; i++) {
        if (ds_put_copy(copy, &src->attrs[i]) < 0) {
            ds_free(copy);
            return NULL;
        }
    }
    return copy;
}

void ds_remove(struct ds *ds, uint32_t tag)
{
    for (size_t i = 0; i < ds->count; i++) {
        if (ds->attrs[i].tag != tag)
            continue;
        ds_attr_clear(&ds->attrs[i]);
        memmove(&ds->attrs[i], &ds->attrs[i + 1],
                (ds->count - i - 1) * sizeof(ds->attrs[0]));
        ds->count--;
        return;
    }
}

static int ds_compare_tags(const void *a, const void *b)
{
    uint32_t ta = ((const struct ds_attr *)a)->tag;
    uint32_t tb = ((const struct ds_attr *)b)->tag;

    return ta < tb ? -1 : ta > tb;
}

void ds_sort(struct ds *ds)
{
    if (ds->count > 1)
        qsort(ds->attrs, ds->count, sizeof(ds->attrs[0]), ds_compare_tags);
    for (size_t i = 0; i < ds->count; i++)
        for (size_t j = 0; j < ds->attrs[i].item_count; j++)
            ds_sort(ds->attrs[i].items[j]);
}
