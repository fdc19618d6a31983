/* SPDX-License-Identifier: Apache-2.0 */
/*
 * identity_dump - prints what dicom/identity reads of each file given, for
 * identity_check.py: per file a line "FILE path", then one line per value,
 * "GGGGEEEE VR value" (a sequence item's as "GGGGEEEE[i].GGGGEEEE ..."),
 * or "ERROR n".
 */
#include <stdio.h>
#include <string.h>

#include "dicom/dataset.h"
#include "dicom/identity.h"

static void dump(const struct ds *ds, const char *prefix)
{
    for (size_t i = 0; i < ds->count; i++) {
        const struct ds_attr *a = &ds->attrs[i];
        if (strcmp(a->vr, "SQ") == 0) {
            for (size_t k = 0; k < a->item_count; k++) {
                char sub[64];
                snprintf(sub, sizeof(sub), "%s%08X[%zu].", prefix,
                         (unsigned)a->tag, k);
                dump(a->items[k], sub);
            }
            continue;
        }
        printf("%s%08X %s %s\n", prefix, (unsigned)a->tag, a->vr,
               a->value != NULL ? a->value : "");
    }
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        struct ds *id = NULL;
        int r = identity_read_file(argv[i], &id);

        printf("FILE %s\n", argv[i]);
        if (r < 0) {
            printf("ERROR %d\n", r);
            continue;
        }
        dump(id, "");
        ds_free(id);
    }
    return 0;
}
