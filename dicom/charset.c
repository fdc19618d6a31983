/* SPDX-License-Identifier: Apache-2.0 */
/*
 * charset - see charset.h.
 *
 * A value is cut into runs of one state of G0 and G1; each run is copied
 * into a buffer in one iconv encoding (the Japanese sets together as
 * EUC-JP: JIS X 0208 bytes with their high bit set, JIS X 0212 behind
 * 0x8F, JIS X 0201 katakana behind 0x8E) and converted to UTF-8.
 */
#include "dicom/charset.h"

#include <errno.h>
#include <iconv.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CS_ESC 0x1B

/* What a character set is when designated. */
enum cs_kind {
    CS_G0_ASCII,   /* ISO 646 (IR 6), and JIS X 0201 romaji (IR 14) */
    CS_G0_JIS0208, /* two bytes 0x21-0x7E each */
    CS_G0_JIS0212,
    CS_G1_KATAKANA, /* JIS X 0201 katakana, 0xA1-0xDF */
    CS_G1,          /* a G1 set read by iconv as it is: ISO 8859, EUC */
};

struct cs_set {
    const char *ir;     /* the number of "ISO_IR n", "ISO 2022 IR n" */
    const char *escape; /* what follows ESC to designate it */
    enum cs_kind kind;
    const char *iconv_name; /* CS_G1: the encoding of its runs */
};

static const struct cs_set cs_sets[] = {
    { "6", "(B", CS_G0_ASCII, NULL },      { "14", "(J", CS_G0_ASCII, NULL },
    { "13", ")I", CS_G1_KATAKANA, NULL },  { "87", "$B", CS_G0_JIS0208, NULL },
    { "159", "$(D", CS_G0_JIS0212, NULL }, { "149", "$)C", CS_G1, "EUC-KR" },
    { "58", "$)A", CS_G1, "GB2312" },      { "100", "-A", CS_G1, "ISO-8859-1" },
    { "101", "-B", CS_G1, "ISO-8859-2" },  { "109", "-C", CS_G1, "ISO-8859-3" },
    { "110", "-D", CS_G1, "ISO-8859-4" },  { "144", "-L", CS_G1, "ISO-8859-5" },
    { "127", "-G", CS_G1, "ISO-8859-6" },  { "126", "-F", CS_G1, "ISO-8859-7" },
    { "138", "-H", CS_G1, "ISO-8859-8" },  { "148", "-M", CS_G1, "ISO-8859-9" },
    { "203", "-b", CS_G1, "ISO-8859-15" }, { "166", "-T", CS_G1, "TIS-620" },
};

#define CS_SET_COUNT (sizeof(cs_sets) / sizeof(cs_sets[0]))

/* The G0 and G1 sets in force. */
struct cs_state {
    enum cs_kind g0;         /* a CS_G0_* kind */
    const struct cs_set *g1; /* NULL: none */
};

/* The output and the run being gathered. */
struct cs_out {
    char *text; /* UTF-8 so far */
    size_t len;
    size_t cap;
    unsigned char *run; /* the run, in run_encoding */
    size_t run_len;
    const char *run_encoding;
    bool jis0212_second; /* the next JIS X 0212 byte ends a pair */
};

/* Removes the spaces around @term[0..@len) (DICOM pads with them). */
static void cs_trim(const char **term, size_t *len)
{
    while (*len > 0 && (*term)[0] == ' ') {
        (*term)++;
        (*len)--;
    }
    while (*len > 0 && ((*term)[*len - 1] == ' ' || (*term)[*len - 1] == 0))
        (*len)--;
}

/* The set named by @term ("ISO_IR n" or "ISO 2022 IR n"), NULL if none;
 * *@ret_extension says which form. */
static const struct cs_set *cs_find_term(const char *term, size_t len,
                                         bool *ret_extension)
{
    static const char plain[] = "ISO_IR ";
    static const char extension[] = "ISO 2022 IR ";
    size_t skip;

    if (len > strlen(extension) &&
        memcmp(term, extension, strlen(extension)) == 0) {
        skip = strlen(extension);
        *ret_extension = true;
    } else if (len > strlen(plain) && memcmp(term, plain, strlen(plain)) == 0) {
        skip = strlen(plain);
        *ret_extension = false;
    } else {
        return NULL;
    }
    for (size_t i = 0; i < CS_SET_COUNT; i++)
        if (strlen(cs_sets[i].ir) == len - skip &&
            memcmp(cs_sets[i].ir, term + skip, len - skip) == 0)
            return &cs_sets[i];
    return NULL;
}

/* Designates @set in @st. */
static void cs_designate(struct cs_state *st, const struct cs_set *set)
{
    if (set->kind == CS_G1_KATAKANA || set->kind == CS_G1)
        st->g1 = set;
    else
        st->g0 = set->kind;
}

/* Converts @len bytes of @in from @encoding and appends them to @out. */
static int cs_iconv_append(struct cs_out *out, const char *encoding,
                           const unsigned char *in, size_t len)
{
    iconv_t cd;
    char *src = (char *)in;
    size_t src_left = len;
    char *dst = out->text + out->len;
    size_t dst_left = out->cap - out->len - 1;
    int r = 0;

    if (len == 0)
        return 0;
    cd = iconv_open("UTF-8", encoding);
    if (cd == (iconv_t)-1)
        return errno == ENOMEM ? -ENOMEM : -EINVAL;
    /* The output has room for four bytes per input byte, more than any of
     * these encodings needs: E2BIG cannot happen. */
    if (iconv(cd, &src, &src_left, &dst, &dst_left) == (size_t)-1 ||
        iconv(cd, NULL, NULL, &dst, &dst_left) == (size_t)-1)
        r = -EINVAL;
    (void)iconv_close(cd);
    if (r == 0)
        out->len = (size_t)(dst - out->text);
    return r;
}

/* Converts the run gathered so far and starts a new one. */
static int cs_flush(struct cs_out *out)
{
    int r = 0;

    if (out->run_len > 0)
        r = cs_iconv_append(out, out->run_encoding, out->run, out->run_len);
    out->run_len = 0;
    out->jis0212_second = false;
    return r;
}

/* The encoding the runs of @st are gathered in. */
static const char *cs_run_encoding(const struct cs_state *st)
{
    if (st->g0 != CS_G0_ASCII ||
        (st->g1 != NULL && st->g1->kind == CS_G1_KATAKANA))
        return "EUC-JP";
    return st->g1 != NULL ? st->g1->iconv_name : "ASCII";
}

/* Adds the byte @b, read in @st, to the run. */
static int cs_add(struct cs_out *out, const struct cs_state *st,
                  unsigned char b)
{
    const char *encoding = cs_run_encoding(st);

    if (out->run_len > 0 && strcmp(encoding, out->run_encoding) != 0) {
        int r = cs_flush(out);
        if (r < 0)
            return r;
    }
    out->run_encoding = encoding;
    if (strcmp(encoding, "EUC-JP") != 0) {
        out->run[out->run_len++] = b;
        return 0;
    }
    if (b >= 0x80) {
        if (st->g1 == NULL || st->g1->kind != CS_G1_KATAKANA || b < 0xA1 ||
            b > 0xDF)
            return -EINVAL;
        out->run[out->run_len++] = 0x8E;
        out->run[out->run_len++] = b;
        return 0;
    }
    if (st->g0 == CS_G0_ASCII || b < 0x21 || b > 0x7E) {
        out->run[out->run_len++] = b;
        return 0;
    }
    if (st->g0 == CS_G0_JIS0212 && !out->jis0212_second)
        out->run[out->run_len++] = 0x8F;
    if (st->g0 == CS_G0_JIS0212)
        out->jis0212_second = !out->jis0212_second;
    out->run[out->run_len++] = (unsigned char)(b | 0x80);
    return 0;
}

/* Reads the escape sequence at @p (after its ESC) and designates its set
 * in @st; returns the bytes it took, or -EINVAL. */
static int cs_escape(const unsigned char *p, size_t left, struct cs_state *st)
{
    size_t n = 0;

    while (n < left && p[n] >= 0x20 && p[n] <= 0x2F)
        n++;
    if (n == 0 || n >= left || p[n] < 0x30 || p[n] > 0x7E)
        return -EINVAL;
    n++;
    for (size_t i = 0; i < CS_SET_COUNT; i++) {
        if (strlen(cs_sets[i].escape) == n &&
            memcmp(cs_sets[i].escape, p, n) == 0) {
            cs_designate(st, &cs_sets[i]);
            return (int)n;
        }
    }
    return -EINVAL;
}

/* True if @b brings back the initial sets in state @st: a control
 * character (CR, LF, FF, TAB...; ESC is handled before), or while G0 is a
 * one-byte set, the value and PN delimiters. */
static bool cs_resets(const struct cs_state *st, unsigned char b)
{
    if (b < 0x20)
        return true;
    return st->g0 == CS_G0_ASCII && (b == '\\' || b == '^' || b == '=');
}

/* The value with code extensions; @initial is the first term's set, or
 * NULL for the default repertoire. */
static int cs_extended(const struct cs_set *initial, const unsigned char *in,
                       size_t len, struct cs_out *out)
{
    struct cs_state start = { CS_G0_ASCII, NULL };
    struct cs_state st;
    int r;

    if (initial != NULL)
        cs_designate(&start, initial);
    st = start;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == CS_ESC) {
            r = cs_flush(out);
            if (r < 0)
                return r;
            r = cs_escape(in + i + 1, len - i - 1, &st);
            if (r < 0)
                return r;
            i += (size_t)r;
            continue;
        }
        if (cs_resets(&st, in[i]) && (st.g0 != start.g0 || st.g1 != start.g1)) {
            r = cs_flush(out);
            if (r < 0)
                return r;
            st = start;
        }
        r = cs_add(out, &st, in[i]);
        if (r < 0)
            return r;
    }
    return cs_flush(out);
}

/* The value in the single character set @charset (no code extensions). */
static int cs_single(const char *term, size_t term_len, const unsigned char *in,
                     size_t len, struct cs_out *out)
{
    static const struct {
        const char *term;
        const char *encoding;
    } whole[] = {
        { "ISO_IR 192", "UTF-8" }, { "GB18030", "GB18030" },
        { "GBK", "GBK" },          { "ISO_IR 13", "SHIFT_JIS" },
        { "ISO_IR 6", "ASCII" },
    };
    bool extension = false;

    if (term_len == 0) {
        memcpy(out->text, in, len);
        out->len = len;
        return 0;
    }
    for (size_t i = 0; i < sizeof(whole) / sizeof(whole[0]); i++)
        if (strlen(whole[i].term) == term_len &&
            memcmp(whole[i].term, term, term_len) == 0)
            return cs_iconv_append(out, whole[i].encoding, in, len);
    const struct cs_set *set = cs_find_term(term, term_len, &extension);
    if (set == NULL || set->kind != CS_G1)
        return -EINVAL;
    return cs_iconv_append(out, set->iconv_name, in, len);
}

int charset_to_utf8(const char *charset, const char *value, size_t len,
                    char **ret_utf8, size_t *ret_len)
{
    struct cs_out out;
    const char *first = charset != NULL ? charset : "";
    const char *sep = strchr(first, '\\');
    size_t first_len = sep != NULL ? (size_t)(sep - first) : strlen(first);
    bool extension = strstr(first, "ISO 2022") != NULL;
    int r;

    if (len > (SIZE_MAX - 8) / 4)
        return -ENOMEM;
    memset(&out, 0, sizeof(out));
    out.cap = 4 * len + 8;
    out.text = malloc(out.cap);
    out.run = malloc(2 * len + 8);
    if (out.text == NULL || out.run == NULL) {
        r = -ENOMEM;
        goto out_free;
    }
    cs_trim(&first, &first_len);
    if (extension) {
        bool ignored;
        const struct cs_set *initial = NULL;
        if (first_len > 0) {
            initial = cs_find_term(first, first_len, &ignored);
            if (initial == NULL) {
                r = -EINVAL;
                goto out_free;
            }
        }
        r = cs_extended(initial, (const unsigned char *)value, len, &out);
    } else {
        r = cs_single(first, first_len, (const unsigned char *)value, len,
                      &out);
    }
    if (r < 0)
        goto out_free;
    if (memchr(out.text, '\0', out.len) != NULL) {
        r = -EINVAL;
        goto out_free;
    }
    out.text[out.len] = '\0';
    free(out.run);
    *ret_utf8 = out.text;
    if (ret_len != NULL)
        *ret_len = out.len;
    return 0;

out_free:
    free(out.run);
    free(out.text);
    return r;
}
