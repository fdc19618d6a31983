/* SPDX-License-Identifier: Apache-2.0 */
/*
 * part10 - see part10.h.
 *
 * Structure: a byte source (a file read in chunks, or a buffer, with an
 * optional raw-inflate stage for the deflated transfer syntax) under an
 * element reader that knows the three encodings, and a walk of the top
 * level that copies the requested values and skips everything else.
 */
#include "dicom/part10.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "base/util.h"

#define P10_CHUNK 65536u
#define P10_UNDEFINED 0xFFFFFFFFu
#define P10_TAG(g, e) (((uint32_t)(g) << 16) | (uint32_t)(e))
#define P10_ITEM P10_TAG(0xFFFE, 0xE000)
#define P10_ITEM_END P10_TAG(0xFFFE, 0xE00D)
#define P10_SEQUENCE_END P10_TAG(0xFFFE, 0xE0DD)
#define P10_PIXEL_DATA P10_TAG(0x7FE0, 0x0010)
#define P10_TRANSFER_SYNTAX P10_TAG(0x0002, 0x0010)

#define P10_TS_IMPLICIT_LE "1.2.840.10008.1.2"
#define P10_TS_EXPLICIT_BE "1.2.840.10008.1.2.2"
#define P10_TS_DEFLATED "1.2.840.10008.1.2.1.99"

/* Where bytes come from. */
struct p10_src {
    int fd; /* -1: memory */
    const unsigned char *mem;
    size_t mem_len;
    size_t mem_pos;
    unsigned char *raw; /* file chunk, P10_CHUNK bytes */
    size_t raw_len;
    size_t raw_pos;
    bool raw_eof;

    bool inflating;
    z_stream zs;
    unsigned char *zin; /* deflated input, P10_CHUNK bytes */
    unsigned char *out; /* inflated chunk, P10_CHUNK bytes */
    size_t out_len;
    size_t out_pos;
    bool out_eof;

    uint64_t offset; /* bytes consumed from the stream */
    char *err;
    size_t err_len;
};

/* How the elements being read are encoded. */
struct p10_enc {
    bool implicit;
    bool big_endian;
};

/* The first element of a data set that claims explicit VR but carries no
 * VR is read as implicit VR, and so is the rest of the data set: files
 * written so exist (pydicom's SC_rgb_jpeg.dcm), and DCMTK and pydicom
 * both read them that way. */
struct p10_guess {
    struct p10_enc *enc; /* the data set's encoding, switched here */
    bool first;          /* only the first element decides */
};

static int p10_fail(struct p10_src *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int p10_fail(struct p10_src *s, const char *fmt, ...)
{
    va_list ap;
    char what[160];

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (s->err != NULL && s->err_len > 0)
        snprintf(s->err, s->err_len, "%s at byte %llu", what,
                 (unsigned long long)s->offset);
    return -EINVAL;
}

/* Makes at least one unread raw byte available unless at the end.
 * Returns 0, or a negative errno from read(). */
static int raw_fill(struct p10_src *s)
{
    if (s->fd < 0 || s->raw_pos < s->raw_len || s->raw_eof)
        return 0;
    for (;;) {
        ssize_t n = read(s->fd, s->raw, P10_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            if (s->err != NULL && s->err_len > 0)
                snprintf(s->err, s->err_len, "read() failed: %s", strerror(e));
            return -e;
        }
        s->raw_len = (size_t)n;
        s->raw_pos = 0;
        s->raw_eof = n == 0;
        return 0;
    }
}

/* Up to @n raw bytes into @dst (NULL: skip them); returns how many, or a
 * negative errno. Fewer than @n only at the end. */
static ssize_t raw_read(struct p10_src *s, unsigned char *dst, size_t n)
{
    size_t done = 0;

    if (s->fd < 0) {
        size_t left = s->mem_len - s->mem_pos;
        size_t k = n < left ? n : left;
        if (dst != NULL)
            memcpy(dst, s->mem + s->mem_pos, k);
        s->mem_pos += k;
        return (ssize_t)k;
    }
    while (done < n) {
        if (s->raw_pos == s->raw_len) {
            /* A long skip past the buffer: seek instead of reading. */
            if (dst == NULL && n - done > P10_CHUNK) {
                off_t to = lseek(s->fd, (off_t)(n - done), SEEK_CUR);
                off_t end = to < 0 ? -1 : lseek(s->fd, 0, SEEK_END);
                if (to >= 0 && end >= 0) {
                    if (end >= to) {
                        (void)lseek(s->fd, to, SEEK_SET);
                        return (ssize_t)n;
                    }
                    /* Past the end: what was there, and the end. */
                    size_t got = (size_t)(n - done) - (size_t)(to - end);
                    s->raw_eof = true;
                    return (ssize_t)(done + got);
                }
            }
            int r = raw_fill(s);
            if (r < 0)
                return r;
            if (s->raw_eof)
                break;
        }
        size_t left = s->raw_len - s->raw_pos;
        size_t k = n - done < left ? n - done : left;
        if (dst != NULL)
            memcpy(dst + done, s->raw + s->raw_pos, k);
        s->raw_pos += k;
        done += k;
    }
    return (ssize_t)done;
}

/* Peeks at the next two raw bytes; false at the end. */
static bool raw_peek2(struct p10_src *s, unsigned char ret[2])
{
    if (s->fd < 0) {
        if (s->mem_len - s->mem_pos < 2)
            return false;
        memcpy(ret, s->mem + s->mem_pos, 2);
        return true;
    }
    if (s->raw_len - s->raw_pos < 2 && !s->raw_eof) {
        size_t left = s->raw_len - s->raw_pos;
        memmove(s->raw, s->raw + s->raw_pos, left);
        s->raw_len = left;
        s->raw_pos = 0;
        while (s->raw_len < 2 && !s->raw_eof) {
            ssize_t n =
                read(s->fd, s->raw + s->raw_len, P10_CHUNK - s->raw_len);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                s->raw_eof = true;
            else
                s->raw_len += (size_t)n;
        }
    }
    if (s->raw_len - s->raw_pos < 2)
        return false;
    memcpy(ret, s->raw + s->raw_pos, 2);
    return true;
}

/* Inflates more output into s->out; 0, or -EINVAL for a corrupt stream.
 * s->out_len stays 0 only at the end of the stream. */
static int out_fill(struct p10_src *s)
{
    s->out_pos = 0;
    s->out_len = 0;
    while (s->out_len == 0 && !s->out_eof) {
        bool input_ended = false;
        if (s->zs.avail_in == 0) {
            ssize_t n = raw_read(s, s->zin, P10_CHUNK);
            if (n < 0)
                return (int)n;
            s->zs.next_in = s->zin;
            s->zs.avail_in = (uInt)n;
            input_ended = n == 0;
        }
        s->zs.next_out = s->out;
        s->zs.avail_out = P10_CHUNK;
        int zr = inflate(&s->zs, Z_NO_FLUSH);
        s->out_len = P10_CHUNK - s->zs.avail_out;
        if (zr == Z_STREAM_END)
            s->out_eof = true;
        else if (zr == Z_BUF_ERROR && input_ended)
            s->out_eof = true; /* cut short: the reader says where */
        else if (zr != Z_OK && zr != Z_BUF_ERROR)
            return p10_fail(s, "deflated data set is corrupt (%s)",
                            s->zs.msg != NULL ? s->zs.msg : "zlib error");
    }
    return 0;
}

/* Up to @n bytes of the stream (inflated if need be); returns how many
 * or a negative errno. */
static ssize_t src_read(struct p10_src *s, unsigned char *dst, size_t n)
{
    size_t done = 0;

    if (!s->inflating) {
        ssize_t k = raw_read(s, dst, n);
        if (k > 0)
            s->offset += (uint64_t)k;
        return k;
    }
    while (done < n) {
        if (s->out_pos == s->out_len) {
            if (s->out_eof)
                break;
            int r = out_fill(s);
            if (r < 0)
                return r;
            if (s->out_len == 0)
                break;
        }
        size_t left = s->out_len - s->out_pos;
        size_t k = n - done < left ? n - done : left;
        if (dst != NULL)
            memcpy(dst + done, s->out + s->out_pos, k);
        s->out_pos += k;
        done += k;
    }
    s->offset += done;
    return (ssize_t)done;
}

/* Exactly @n bytes, or -EINVAL naming @what when the input ends. */
static int src_need(struct p10_src *s, unsigned char *dst, size_t n,
                    const char *what)
{
    ssize_t k = src_read(s, dst, n);

    if (k < 0)
        return (int)k;
    if ((size_t)k < n)
        return p10_fail(s, "truncated in %s", what);
    return 0;
}

static uint16_t get16(const unsigned char *p, bool be)
{
    return be ? (uint16_t)(p[0] << 8 | p[1]) : (uint16_t)(p[1] << 8 | p[0]);
}

static uint32_t get32(const unsigned char *p, bool be)
{
    if (be)
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
               (uint32_t)p[2] << 8 | p[3];
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 |
           p[0];
}

/* VRs whose explicit encoding has two reserved bytes and a 32-bit
 * length (PS3.5 7.1.2). */
static bool vr_has_long_length(const char vr[2])
{
    static const char long_vrs[][3] = { "OB", "OD", "OF", "OL", "OV",
                                        "OW", "SQ", "SV", "UC", "UN",
                                        "UR", "UT", "UV" };

    for (size_t i = 0; i < sizeof(long_vrs) / sizeof(long_vrs[0]); i++)
        if (vr[0] == long_vrs[i][0] && vr[1] == long_vrs[i][1])
            return true;
    return false;
}

/* One element header. At the end of the input before any byte of it,
 * *@ret_end is set and 0 returned. */
struct p10_elem {
    uint32_t tag;
    char vr[3];
    uint32_t length;
};

static int read_elem_guess(struct p10_src *s, const struct p10_enc *enc,
                           struct p10_elem *e, bool *ret_end,
                           struct p10_guess *guess)
{
    unsigned char b[8];
    ssize_t k;
    int r;

    *ret_end = false;
    k = src_read(s, b, 4);
    if (k < 0)
        return (int)k;
    if (k == 0) {
        *ret_end = true;
        return 0;
    }
    if (k < 4)
        return p10_fail(s, "truncated in an element tag");
    e->tag = P10_TAG(get16(b, enc->big_endian), get16(b + 2, enc->big_endian));
    e->vr[0] = '\0';
    /* Items and delimiters never carry a VR (PS3.5 7.5). */
    if ((e->tag >> 16) == 0xFFFE || enc->implicit) {
        r = src_need(s, b, 4, "an element length");
        if (r < 0)
            return r;
        e->length = get32(b, enc->big_endian);
        return 0;
    }
    r = src_need(s, b, 4, "an element header");
    if (r < 0)
        return r;
    bool vr_ok = b[0] >= 'A' && b[0] <= 'Z' && b[1] >= 'A' && b[1] <= 'Z';
    if (guess != NULL && guess->first) {
        guess->first = false;
        if (!vr_ok) {
            guess->enc->implicit = true;
            e->length = get32(b, enc->big_endian);
            return 0;
        }
    }
    if (!vr_ok)
        return p10_fail(s, "element (%04X,%04X) has no valid VR",
                        (unsigned)(e->tag >> 16), (unsigned)(e->tag & 0xFFFF));
    e->vr[0] = (char)b[0];
    e->vr[1] = (char)b[1];
    e->vr[2] = '\0';
    if (vr_has_long_length(e->vr)) {
        r = src_need(s, b, 4, "an element length");
        if (r < 0)
            return r;
        e->length = get32(b, enc->big_endian);
    } else {
        e->length = get16(b + 2, enc->big_endian);
    }
    return 0;
}

static int read_elem(struct p10_src *s, const struct p10_enc *enc,
                     struct p10_elem *e, bool *ret_end)
{
    return read_elem_guess(s, enc, e, ret_end, NULL);
}

static int skip_value(struct p10_src *s, const struct p10_enc *enc,
                      const struct p10_elem *e, int depth);

/* The elements of an item of undefined length, to its delimiter. */
static int skip_item_elements(struct p10_src *s, const struct p10_enc *enc,
                              int depth)
{
    for (;;) {
        struct p10_elem e;
        bool end;
        int r = read_elem(s, enc, &e, &end);
        if (r < 0)
            return r;
        if (end)
            return p10_fail(s, "truncated in an item");
        if (e.tag == P10_ITEM_END)
            return 0;
        if (e.tag == P10_ITEM || e.tag == P10_SEQUENCE_END)
            return p10_fail(s, "misplaced item or delimiter");
        r = skip_value(s, enc, &e, depth);
        if (r < 0)
            return r;
    }
}

/* Items (or encapsulated fragments) to the sequence delimiter. */
static int skip_sequence(struct p10_src *s, const struct p10_enc *enc,
                         int depth)
{
    if (depth > PART10_MAX_DEPTH)
        return p10_fail(s, "sequences nested deeper than %d", PART10_MAX_DEPTH);
    for (;;) {
        struct p10_elem e;
        bool end;
        int r = read_elem(s, enc, &e, &end);
        if (r < 0)
            return r;
        if (end)
            return p10_fail(s, "truncated in a sequence");
        if (e.tag == P10_SEQUENCE_END)
            return 0;
        if (e.tag != P10_ITEM)
            return p10_fail(s,
                            "element (%04X,%04X) where an item was "
                            "expected",
                            (unsigned)(e.tag >> 16),
                            (unsigned)(e.tag & 0xFFFF));
        if (e.length != P10_UNDEFINED) {
            ssize_t k = src_read(s, NULL, e.length);
            if (k < 0)
                return (int)k;
            if ((size_t)k < e.length)
                return p10_fail(s, "truncated in an item");
            continue;
        }
        r = skip_item_elements(s, enc, depth + 1);
        if (r < 0)
            return r;
    }
}

static int skip_value(struct p10_src *s, const struct p10_enc *enc,
                      const struct p10_elem *e, int depth)
{
    if (e->length != P10_UNDEFINED) {
        ssize_t k = src_read(s, NULL, e->length);
        if (k < 0)
            return (int)k;
        if ((size_t)k < e->length)
            return p10_fail(s, "truncated in element (%04X,%04X)",
                            (unsigned)(e->tag >> 16),
                            (unsigned)(e->tag & 0xFFFF));
        return 0;
    }
    if (strcmp(e->vr, "UN") == 0) {
        /* PS3.5 6.2.2: implicit VR little endian inside. */
        struct p10_enc inner = { true, false };
        return skip_sequence(s, &inner, depth + 1);
    }
    /* SQ, an encapsulated OB/OW, or a sequence in implicit VR. */
    if (e->vr[0] != '\0' && strcmp(e->vr, "SQ") != 0 &&
        strcmp(e->vr, "OB") != 0 && strcmp(e->vr, "OW") != 0)
        return p10_fail(s, "undefined length on VR %s", e->vr);
    return skip_sequence(s, enc, depth + 1);
}

static struct part10_field *field_for(struct part10_field *fields, size_t count,
                                      uint32_t tag)
{
    for (size_t i = 0; i < count; i++)
        if (fields[i].tag == tag)
            return &fields[i];
    return NULL;
}

/* Reads the value of @e into @f (or only marks it found when too long). */
static int take_value(struct p10_src *s, const struct p10_enc *enc,
                      const struct p10_elem *e, struct part10_field *f)
{
    f->found = true;
    memcpy(f->vr, e->vr, sizeof(f->vr));
    if (e->length == P10_UNDEFINED || e->length > PART10_VALUE_MAX)
        return skip_value(s, enc, e, 0);
    char *v = malloc((size_t)e->length + 1);
    if (v == NULL)
        return -ENOMEM;
    int r = src_need(s, (unsigned char *)v, e->length, "an element value");
    if (r < 0) {
        free(v);
        return r;
    }
    size_t n = e->length;
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\0'))
        n--;
    v[n] = '\0';
    free(f->value);
    f->value = v;
    f->length = n;
    return 0;
}

/* Whether the stream has reached @end (a defined length's end), or
 * -EINVAL if it went past it. */
static int reached(struct p10_src *s, uint64_t end, bool *ret_reached)
{
    if (s->offset > end)
        return p10_fail(s, "an element runs past the end of its item or "
                           "sequence");
    *ret_reached = s->offset == end;
    return 0;
}

/* One item of the sequence read by take_items(): its elements, to its
 * delimiter or its defined @length, with @f->item_tag's value kept in
 * *@ret_value. */
static int take_item(struct p10_src *s, const struct p10_enc *enc,
                     uint32_t length, const struct part10_field *f,
                     char **ret_value)
{
    uint64_t end = s->offset + length;

    for (;;) {
        struct p10_elem e;
        bool end_reached = false;
        bool eof;
        int r;

        if (length != P10_UNDEFINED) {
            r = reached(s, end, &end_reached);
            if (r < 0)
                return r;
            if (end_reached)
                return 0;
        }
        r = read_elem(s, enc, &e, &eof);
        if (r < 0)
            return r;
        if (eof)
            return p10_fail(s, "truncated in an item");
        if (e.tag == P10_ITEM_END && length == P10_UNDEFINED)
            return 0;
        if ((e.tag >> 16) == 0xFFFE)
            return p10_fail(s, "misplaced item or delimiter");
        if (e.tag == f->item_tag && ret_value != NULL) {
            struct part10_field one = { .tag = e.tag };
            r = take_value(s, enc, &e, &one);
            free(*ret_value);
            *ret_value = one.value;
        } else {
            r = skip_value(s, enc, &e, 1);
        }
        if (r < 0)
            return r;
    }
}

/*
 * Reads the sequence @e into @f: the value of f->item_tag in each item.
 * An element of VR UN holds implicit VR little endian (PS3.5 6.2.2);
 * one of another explicit VR is no sequence: found, without items.
 */
static int take_items(struct p10_src *s, const struct p10_enc *enc,
                      const struct p10_elem *e, struct part10_field *f)
{
    struct p10_enc inner = *enc;
    uint64_t end = s->offset + e->length;

    f->found = true;
    memcpy(f->vr, e->vr, sizeof(f->vr));
    if (strcmp(e->vr, "UN") == 0) {
        inner.implicit = true;
        inner.big_endian = false;
    } else if (e->vr[0] != '\0' && strcmp(e->vr, "SQ") != 0) {
        return skip_value(s, enc, e, 0);
    }
    for (;;) {
        struct p10_elem item;
        bool end_reached = false;
        bool eof;
        int r;

        if (e->length != P10_UNDEFINED) {
            r = reached(s, end, &end_reached);
            if (r < 0)
                return r;
            if (end_reached)
                return 0;
        }
        r = read_elem(s, &inner, &item, &eof);
        if (r < 0)
            return r;
        if (eof)
            return p10_fail(s, "truncated in a sequence");
        if (item.tag == P10_SEQUENCE_END && e->length == P10_UNDEFINED)
            return 0;
        if (item.tag != P10_ITEM)
            return p10_fail(s,
                            "element (%04X,%04X) where an item was "
                            "expected",
                            (unsigned)(item.tag >> 16),
                            (unsigned)(item.tag & 0xFFFF));
        char **slot = NULL;
        if (f->item_count < PART10_ITEMS_MAX) {
            char **grown =
                realloc(f->items, (f->item_count + 1) * sizeof(*grown));
            if (grown == NULL)
                return -ENOMEM;
            f->items = grown;
            slot = &f->items[f->item_count++];
            *slot = NULL;
        }
        r = take_item(s, &inner, item.length, f, slot);
        if (r < 0)
            return r;
    }
}

static bool all_found(const struct part10_field *fields, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (!fields[i].found)
            return false;
    return true;
}

static uint32_t last_wanted(const struct part10_field *fields, size_t count)
{
    uint32_t last = 0;

    for (size_t i = 0; i < count; i++)
        if (fields[i].tag > last)
            last = fields[i].tag;
    return last;
}

/* The File Meta Information: explicit VR little endian, group 0002. */
static int read_meta(struct p10_src *s, struct part10_field *fields,
                     size_t count, struct part10_info *info)
{
    const struct p10_enc meta_enc = { false, false };
    unsigned char peek[2];
    bool have_ts = false;

    while (raw_peek2(s, peek) && get16(peek, false) == 0x0002) {
        struct p10_elem e;
        bool end;
        int r = read_elem(s, &meta_enc, &e, &end);
        if (r < 0)
            return r;
        if (end)
            break;
        if (e.length == P10_UNDEFINED)
            return p10_fail(s, "undefined length in the File Meta "
                               "Information");
        struct part10_field *f = field_for(fields, count, e.tag);
        if (e.tag == P10_TRANSFER_SYNTAX) {
            struct part10_field ts = { .tag = e.tag };
            r = take_value(s, &meta_enc, &e, &ts);
            if (r < 0)
                return r;
            if (ts.value == NULL ||
                ts.length >= sizeof(info->transfer_syntax)) {
                free(ts.value);
                return p10_fail(s, "TransferSyntaxUID (0002,0010) is not a "
                                   "UID");
            }
            memcpy(info->transfer_syntax, ts.value, ts.length + 1);
            have_ts = true;
            if (f != NULL) {
                free(f->value);
                *f = ts;
            } else {
                free(ts.value);
            }
            continue;
        }
        r = f != NULL ? take_value(s, &meta_enc, &e, f)
                      : skip_value(s, &meta_enc, &e, 0);
        if (r < 0)
            return r;
    }
    if (!have_ts)
        return p10_fail(s, "no TransferSyntaxUID (0002,0010) in the File "
                           "Meta Information");
    return 0;
}

static int read_dataset(struct p10_src *s, struct p10_enc *enc,
                        struct part10_field *fields, size_t count)
{
    uint32_t last = last_wanted(fields, count);
    struct p10_guess guess = { enc, !enc->implicit };

    while (!all_found(fields, count)) {
        struct p10_elem e;
        bool end;
        int r = read_elem_guess(s, enc, &e, &end, &guess);
        if (r < 0)
            return r;
        if (end)
            return 0;
        if ((e.tag >> 16) == 0xFFFE)
            return p10_fail(s, "item or delimiter at the top level");
        /* Tags ascend: past PixelData or the last tag asked for, there is
         * nothing more to find. */
        if (e.tag >= P10_PIXEL_DATA || e.tag > last)
            return 0;
        if ((e.tag >> 16) == 0x0002)
            return p10_fail(s, "File Meta element in the data set");
        struct part10_field *f = field_for(fields, count, e.tag);
        if (f == NULL)
            r = skip_value(s, enc, &e, 0);
        else if (f->item_tag != 0)
            r = take_items(s, enc, &e, f);
        else
            r = take_value(s, enc, &e, f);
        if (r < 0)
            return r;
    }
    return 0;
}

static int read_all(struct p10_src *s, struct part10_field *fields,
                    size_t count, struct part10_info *ret_info)
{
    unsigned char head[132];
    struct part10_info info;
    struct p10_enc enc = { false, false };
    int r;

    memset(&info, 0, sizeof(info));
    r = src_need(s, head, sizeof(head), "the preamble");
    if (r < 0)
        return r;
    if (memcmp(head + 128, "DICM", 4) != 0)
        return p10_fail(s, "no \"DICM\" prefix: not a Part 10 file");
    r = read_meta(s, fields, count, &info);
    if (r < 0)
        return r;
    info.dataset_offset = s->offset;
    if (strcmp(info.transfer_syntax, P10_TS_IMPLICIT_LE) == 0) {
        enc.implicit = true;
    } else if (strcmp(info.transfer_syntax, P10_TS_EXPLICIT_BE) == 0) {
        enc.big_endian = true;
    } else if (strcmp(info.transfer_syntax, P10_TS_DEFLATED) == 0) {
        info.deflated = true;
        s->out = malloc(P10_CHUNK);
        s->zin = malloc(P10_CHUNK);
        if (s->out == NULL || s->zin == NULL)
            return -ENOMEM;
        memset(&s->zs, 0, sizeof(s->zs));
        if (inflateInit2(&s->zs, -MAX_WBITS) != Z_OK)
            return -ENOMEM;
        s->inflating = true;
    }
    r = read_dataset(s, &enc, fields, count);
    if (r < 0)
        return r;
    info.implicit_vr = enc.implicit;
    info.big_endian = enc.big_endian;
    if (ret_info != NULL)
        *ret_info = info;
    return 0;
}

static void src_release(struct p10_src *s)
{
    if (s->inflating)
        (void)inflateEnd(&s->zs);
    free(s->out);
    free(s->zin);
    free(s->raw);
}

void part10_fields_clear(struct part10_field *fields, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        for (size_t k = 0; k < fields[i].item_count; k++)
            free(fields[i].items[k]);
        free(fields[i].items);
        fields[i].items = NULL;
        fields[i].item_count = 0;
        free(fields[i].value);
        fields[i].value = NULL;
        fields[i].length = 0;
        fields[i].found = false;
        fields[i].vr[0] = '\0';
    }
}

int part10_read_buffer(const void *data, size_t len,
                       struct part10_field *fields, size_t count,
                       struct part10_info *ret_info, char *err, size_t err_len)
{
    struct p10_src s;
    int r;

    memset(&s, 0, sizeof(s));
    s.fd = -1;
    s.mem = data;
    s.mem_len = len;
    s.err = err;
    s.err_len = err_len;
    part10_fields_clear(fields, count);
    r = read_all(&s, fields, count, ret_info);
    src_release(&s);
    if (r < 0)
        part10_fields_clear(fields, count);
    return r;
}

int part10_read_file(const char *path, struct part10_field *fields,
                     size_t count, struct part10_info *ret_info, char *err,
                     size_t err_len)
{
    struct p10_src s;
    int r;

    memset(&s, 0, sizeof(s));
    s.err = err;
    s.err_len = err_len;
    part10_fields_clear(fields, count);
    s.fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (s.fd < 0) {
        r = -errno;
        if (err != NULL && err_len > 0)
            snprintf(err, err_len, "open() '%s' failed: %s", path,
                     strerror(-r));
        return r;
    }
    s.raw = malloc(P10_CHUNK);
    if (s.raw == NULL) {
        (void)close(s.fd);
        return -ENOMEM;
    }
    r = read_all(&s, fields, count, ret_info);
    src_release(&s);
    (void)close(s.fd);
    if (r < 0)
        part10_fields_clear(fields, count);
    return r;
}

int part10_read_instance_uids(const char *path, char ret_study[PART10_UID_MAX],
                              char ret_sop[PART10_UID_MAX], char *err,
                              size_t err_len)
{
    struct part10_field fields[2] = {
        { .tag = P10_TAG(0x0020, 0x000D) }, /* StudyInstanceUID */
        { .tag = P10_TAG(0x0008, 0x0018) }, /* SOPInstanceUID */
    };
    static const char *const names[2] = { "StudyInstanceUID",
                                          "SOPInstanceUID" };
    int r = part10_read_file(path, fields, 2, NULL, err, err_len);

    if (r < 0)
        return r;
    for (size_t i = 0; i < 2; i++) {
        if (fields[i].value == NULL || fields[i].length >= PART10_UID_MAX ||
            !util_uid_valid(fields[i].value)) {
            if (err != NULL && err_len > 0)
                snprintf(err, err_len, "%s %s", names[i],
                         fields[i].found ? "is not a valid UID" : "is missing");
            part10_fields_clear(fields, 2);
            return -EINVAL;
        }
    }
    memcpy(ret_study, fields[0].value, fields[0].length + 1);
    memcpy(ret_sop, fields[1].value, fields[1].length + 1);
    part10_fields_clear(fields, 2);
    return 0;
}
