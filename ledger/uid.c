/* SPDX-License-Identifier: Apache-2.0 */
/*
 * uid - how the ledger stores UIDs: packed two characters per byte ('0'-'9'
 * as 0-9, '.' as 10, a final odd character padded with 15), which halves
 * the largest column, and a 64-bit look-up key for SOP Instance UIDs:
 * high 32 bits a hash of the UID without its last component, low 32 bits
 * a hash of the whole UID. The instances of one series (which share all
 * but their last component with hierarchical UIDs) so sit side by side in
 * the key index, and one upload touches a few index pages instead of one
 * per instance; the low half keeps keys of any UID shape (2.25.<UUID>,
 * one counter under one root) as distinct as a plain 32-bit hash would.
 * A value that is not a plain UID (other characters, empty) is stored as
 * TEXT; SQLite never finds a TEXT value equal to a BLOB, so both kinds
 * are looked up the same way.
 */
#include "ledger_int.h"

#include <errno.h>
#include <string.h>

#define LEDGER__NIBBLE_DOT 10
#define LEDGER__NIBBLE_PAD 15

size_t ledger__uid_pack(const char *uid, unsigned char out[LEDGER__PACKED_MAX])
{
    size_t len = strlen(uid);
    size_t i;

    if (len == 0 || len > LEDGER_UID_MAX)
        return 0;
    for (i = 0; i < len; i++) {
        char c = uid[i];
        unsigned nib;

        if (c >= '0' && c <= '9')
            nib = (unsigned)(c - '0');
        else if (c == '.')
            nib = LEDGER__NIBBLE_DOT;
        else
            return 0;
        if (i % 2 == 0)
            out[i / 2] = (unsigned char)(nib << 4);
        else
            out[i / 2] |= (unsigned char)nib;
    }
    if (len % 2 != 0)
        out[len / 2] |= LEDGER__NIBBLE_PAD;
    return (len + 1) / 2;
}

/* The character of nibble @nib, or 0 if it is none. */
static char ledger__nibble_char(unsigned nib)
{
    if (nib <= 9)
        return (char)('0' + nib);
    if (nib == LEDGER__NIBBLE_DOT)
        return '.';
    return 0;
}

int ledger__uid_unpack(const unsigned char *in, size_t len, char *out,
                       size_t out_size)
{
    size_t n = 0;

    if (out_size == 0)
        return -EINVAL;
    out[0] = '\0';
    if (len == 0 || len > LEDGER__PACKED_MAX || out_size < 2 * len + 1)
        return -EUCLEAN;
    for (size_t i = 0; i < len; i++) {
        char hi = ledger__nibble_char(in[i] >> 4);
        unsigned lo_nib = in[i] & 0x0fu;
        char lo = ledger__nibble_char(lo_nib);

        if (hi == 0)
            goto out_bad;
        out[n++] = hi;
        if (lo_nib == LEDGER__NIBBLE_PAD && i == len - 1)
            break;
        if (lo == 0)
            goto out_bad;
        out[n++] = lo;
    }
    out[n] = '\0';
    return 0;

out_bad:
    out[0] = '\0';
    return -EUCLEAN;
}

/* 32-bit FNV-1a of the @len bytes at @p. */
static uint32_t ledger__fnv32(const char *p, size_t len)
{
    uint32_t h = 0x811c9dc5u;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x01000193u;
    }
    return h;
}

int64_t ledger__uid_key(const char *uid)
{
    const char *dot = strrchr(uid, '.');
    uint32_t hi = ledger__fnv32(uid, dot != NULL ? (size_t)(dot - uid) : 0);
    uint32_t lo = ledger__fnv32(uid, strlen(uid));
    /* hi as a signed value, so the key spans the int64_t range exactly. */
    int64_t top = hi <= (uint32_t)INT32_MAX ? (int64_t)hi
                                            : (int64_t)hi - INT64_C(4294967296);

    return top * INT64_C(4294967296) + (int64_t)lo;
}

int ledger__bind_uid(sqlite3_stmt *st, int idx, const char *uid)
{
    unsigned char buf[LEDGER__PACKED_MAX];
    size_t n = ledger__uid_pack(uid, buf);

    if (n > 0)
        return sqlite3_bind_blob(st, idx, buf, (int)n, SQLITE_TRANSIENT);
    return sqlite3_bind_text(st, idx, uid, -1, SQLITE_TRANSIENT);
}

int ledger__column_uid(sqlite3_stmt *st, int col, char *out, size_t size)
{
    switch (sqlite3_column_type(st, col)) {
    case SQLITE_BLOB:
        return ledger__uid_unpack(sqlite3_column_blob(st, col),
                                  (size_t)sqlite3_column_bytes(st, col), out,
                                  size);
    case SQLITE_NULL:
        if (size > 0)
            out[0] = '\0';
        return 0;
    default:
        ledger__column_text(st, col, out, size);
        return 0;
    }
}

void ledger__column_text(sqlite3_stmt *st, int col, char *out, size_t size)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    size_t n;

    if (size == 0)
        return;
    if (t == NULL) {
        out[0] = '\0';
        return;
    }
    n = (size_t)sqlite3_column_bytes(st, col);
    if (n >= size)
        n = size - 1;
    memcpy(out, t, n);
    out[n] = '\0';
}
