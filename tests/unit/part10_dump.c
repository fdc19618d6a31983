/* SPDX-License-Identifier: Apache-2.0 */
/*
 * part10_dump FILE TAG... - prints what dicom/part10 reads from FILE, for
 * part10_check.py to compare with pydicom: "ts=UID" and "offset=N", then
 * per tag (GGGGEEEE in hex) "GGGGEEEE=" and the value's bytes in hex, or
 * "GGGGEEEE absent" / "GGGGEEEE long"; on error "error: reason", exit 1.
 */
#include <stdio.h>
#include <stdlib.h>

#include "dicom/part10.h"

int main(int argc, char **argv)
{
    struct part10_field fields[32] = { { 0 } };
    struct part10_info info;
    char err[256] = "";
    size_t n = 0;

    if (argc < 2 || argc - 2 > 32) {
        fprintf(stderr, "usage: part10_dump FILE TAG...\n");
        return 2;
    }
    for (int i = 2; i < argc; i++)
        fields[n++].tag = (uint32_t)strtoul(argv[i], NULL, 16);
    int r = part10_read_file(argv[1], fields, n, &info, err, sizeof(err));
    if (r < 0) {
        printf("error: %s\n", err);
        return 1;
    }
    printf("ts=%s\noffset=%llu\n", info.transfer_syntax,
           (unsigned long long)info.dataset_offset);
    for (size_t i = 0; i < n; i++) {
        if (!fields[i].found) {
            printf("%08X absent\n", (unsigned)fields[i].tag);
            continue;
        }
        if (fields[i].value == NULL) {
            printf("%08X long\n", (unsigned)fields[i].tag);
            continue;
        }
        printf("%08X=", (unsigned)fields[i].tag);
        for (size_t k = 0; k < fields[i].length; k++)
            printf("%02x", (unsigned char)fields[i].value[k]);
        printf("\n");
    }
    part10_fields_clear(fields, n);
    return 0;
}
