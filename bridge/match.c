/* SPDX-License-Identifier: Apache-2.0 */
/*
 * match - see match.h.
 */
#include "match.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dicom/dataset.h"

bool match_vr_is(const char *vr, const char *name)
{
    return vr[0] == name[0] && vr[1] == name[1];
}

static bool vr_is_numeric(const char *vr)
{
    static const char *const numeric[] = { "IS", "DS", "US", "UL", "SS",
                                           "SL", "FL", "FD", "UV", "SV" };

    for (size_t i = 0; i < sizeof(numeric) / sizeof(numeric[0]); i++)
        if (match_vr_is(vr, numeric[i]))
            return true;
    return false;
}

/* VRs where * and ? are ordinary characters, and ranges (DA/TM/DT). */
static bool vr_no_wildcards(const char *vr)
{
    return match_vr_is(vr, "DA") || match_vr_is(vr, "TM") ||
           match_vr_is(vr, "DT") || match_vr_is(vr, "UI") ||
           match_vr_is(vr, "AT") || vr_is_numeric(vr);
}

static bool vr_is_temporal(const char *vr)
{
    return match_vr_is(vr, "DA") || match_vr_is(vr, "TM") ||
           match_vr_is(vr, "DT");
}

/* Copies @src[0..n) without leading and trailing spaces into @dst. */
static void trim_into(char *dst, size_t dst_size, const char *src, size_t n)
{
    while (n > 0 && (*src == ' ' || *src == '\t')) {
        src++;
        n--;
    }
    while (n > 0 &&
           (src[n - 1] == ' ' || src[n - 1] == '\t' || src[n - 1] == '\0'))
        n--;
    if (n >= dst_size)
        n = dst_size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/*
 * A PN value as it is compared: only the alphabetic group unless
 * @keep_groups, trailing '^' of the group and trailing empty groups
 * dropped.
 */
static void pn_normalize(char *pn, bool keep_groups)
{
    char *end;

    if (!keep_groups) {
        char *eq = strchr(pn, '=');
        if (eq != NULL)
            *eq = '\0';
    }
    end = pn + strlen(pn);
    while (end > pn && (end[-1] == '^' || end[-1] == '=' || end[-1] == ' '))
        *--end = '\0';
}

/* Length of the UTF-8 sequence starting with byte @c (1 for bad bytes). */
static size_t utf8_len(unsigned char c)
{
    if (c >= 0xF0 && c < 0xF8)
        return 4;
    if (c >= 0xE0)
        return c < 0xF0 ? 3 : 1;
    if (c >= 0xC0)
        return 2;
    return 1;
}

static bool chars_equal(const char *a, const char *b, size_t n, bool fold)
{
    if (!fold)
        return memcmp(a, b, n) == 0;
    for (size_t i = 0; i < n; i++)
        if (tolower((unsigned char)a[i]) != tolower((unsigned char)b[i]))
            return false;
    return true;
}

/*
 * Wildcard match of @text against @pattern: '*' any run of characters,
 * '?' exactly one character (a whole UTF-8 sequence). @fold: ASCII case
 * folded (PN). Iterative with one backtrack point: linear enough for
 * identifiers of at most a few hundred bytes.
 */
static bool wildcard_match(const char *pattern, const char *text, bool fold)
{
    const char *star = NULL;
    const char *star_text = NULL;

    while (*text != '\0') {
        size_t n = utf8_len((unsigned char)*text);
        if (*pattern == '*') {
            star = pattern++;
            star_text = text;
            continue;
        }
        if (*pattern == '?') {
            pattern++;
            text += n;
            continue;
        }
        if (*pattern != '\0' && utf8_len((unsigned char)*pattern) == n &&
            strnlen(text, n) == n && chars_equal(pattern, text, n, fold)) {
            pattern += n;
            text += n;
            continue;
        }
        if (star == NULL)
            return false;
        pattern = star + 1;
        star_text += utf8_len((unsigned char)*star_text);
        text = star_text;
    }
    while (*pattern == '*')
        pattern++;
    return *pattern == '\0';
}

/*
 * Normalises a DA, TM or DT value for comparison: separators dropped
 * (old "HH:MM:SS" and "YYYY.MM.DD" forms), a DT time zone offset dropped,
 * then padded to full precision with @pad ('0' for a lower bound, '9' for
 * an upper bound) so that a partial value covers its whole period.
 */
static void temporal_normalize(const char *vr, const char *in, char pad,
                               char *out, size_t out_size)
{
    size_t full = match_vr_is(vr, "DA") ? 8 : match_vr_is(vr, "TM") ? 13 : 21;
    size_t n = 0;

    for (const char *p = in; *p != '\0' && n + 1 < out_size; p++) {
        if (*p == ':' || (*p == '.' && !match_vr_is(vr, "TM") && n < 8 &&
                          match_vr_is(vr, "DA")))
            continue;
        if (match_vr_is(vr, "DT") && (*p == '+' || *p == '-') && n >= 4)
            break;
        out[n++] = *p;
    }
    /* TM and DT carry a fraction after '.'; pad the seconds first. */
    if (!match_vr_is(vr, "DA")) {
        size_t whole = match_vr_is(vr, "TM") ? 6 : 14;
        char *dot = memchr(out, '.', n);
        size_t int_len = dot != NULL ? (size_t)(dot - out) : n;
        if (dot == NULL && int_len < whole) {
            while (n < whole && n + 1 < out_size)
                out[n++] = pad;
        }
        if (memchr(out, '.', n) == NULL && n + 1 < out_size)
            out[n++] = '.';
    }
    while (n < full && n + 1 < out_size)
        out[n++] = pad;
    out[n] = '\0';
}

/* Range or single-value match of one DA/TM/DT entity value. */
static bool temporal_matches(const char *vr, const char *key, const char *value)
{
    char lower[40];
    char upper[40];
    char val[40];
    char low_in[40];
    char up_in[40];
    const char *dash = NULL;

    /* A DT key's time zone offset also uses '-': the range separator of
     * a DT key is the '-' not followed by exactly four digits and the
     * end of a bound. Simple rule: DT ranges with offsets are taken
     * literally as far as they can be. */
    if (match_vr_is(vr, "DT")) {
        for (const char *p = key; *p != '\0'; p++) {
            if (*p != '-')
                continue;
            if (p == key || (size_t)(p - key) < 4 ||
                !(strspn(p + 1, "0123456789") == 4 &&
                  (p[5] == '\0' || p[5] == '-'))) {
                dash = p;
                break;
            }
        }
    } else {
        dash = strchr(key, '-');
    }
    temporal_normalize(vr, value, '0', val, sizeof(val));
    if (dash == NULL) {
        temporal_normalize(vr, key, '0', lower, sizeof(lower));
        temporal_normalize(vr, key, '9', upper, sizeof(upper));
    } else {
        size_t n = (size_t)(dash - key);
        if (n >= sizeof(low_in))
            n = sizeof(low_in) - 1;
        memcpy(low_in, key, n);
        low_in[n] = '\0';
        snprintf(up_in, sizeof(up_in), "%s", dash + 1);
        if (low_in[0] != '\0')
            temporal_normalize(vr, low_in, '0', lower, sizeof(lower));
        else
            lower[0] = '\0';
        if (up_in[0] != '\0')
            temporal_normalize(vr, up_in, '9', upper, sizeof(upper));
        else
            snprintf(upper, sizeof(upper), "~"); /* above any digit */
    }
    return strcmp(val, lower) >= 0 && strcmp(val, upper) <= 0;
}

/* One key value against one entity value. */
static bool single_matches(const char *vr, const char *key, const char *value)
{
    char k[1024];
    char v[1024];
    bool pn = match_vr_is(vr, "PN");

    trim_into(k, sizeof(k), key, strlen(key));
    trim_into(v, sizeof(v), value, strlen(value));
    if (vr_is_temporal(vr))
        return temporal_matches(vr, k, v);
    if (vr_is_numeric(vr)) {
        char *end_k;
        char *end_v;
        double dk = strtod(k, &end_k);
        double dv = strtod(v, &end_v);
        if (*end_k == '\0' && *end_v == '\0' && end_k != k && end_v != v)
            return dk == dv;
        return strcmp(k, v) == 0;
    }
    if (pn) {
        bool groups = strchr(k, '=') != NULL;
        pn_normalize(k, groups);
        pn_normalize(v, groups);
    }
    if (!vr_no_wildcards(vr) && strpbrk(k, "*?") != NULL)
        return wildcard_match(k, v, pn);
    if (pn)
        return strlen(k) == strlen(v) && chars_equal(k, v, strlen(k), true);
    return strcmp(k, v) == 0;
}

bool match_value(const char *vr, const char *key, const char *value)
{
    const char *kp = key;

    if (key == NULL || key[0] == '\0' || strcmp(key, "*") == 0)
        return true; /* universal */
    if (value == NULL || value[0] == '\0')
        return false;
    /* Several key values (a UID list, or values a modality lists) match
     * when any one does; several entity values, when any one does. */
    for (;;) {
        size_t klen = strcspn(kp, "\\");
        char one_key[1024];
        const char *vp = value;

        trim_into(one_key, sizeof(one_key), kp, klen);
        for (;;) {
            size_t vlen = strcspn(vp, "\\");
            char one_value[1024];

            trim_into(one_value, sizeof(one_value), vp, vlen);
            if (one_key[0] == '\0' || (one_value[0] != '\0' &&
                                       single_matches(vr, one_key, one_value)))
                return true;
            if (vp[vlen] == '\0')
                break;
            vp += vlen + 1;
        }
        if (kp[klen] == '\0')
            return false;
        kp += klen + 1;
    }
}

bool match_key_has_condition(const struct ds_attr *key)
{
    if (match_vr_is(key->vr, "SQ")) {
        if (key->item_count == 0)
            return false;
        for (size_t i = 0; i < key->items[0]->count; i++)
            if (match_key_has_condition(&key->items[0]->attrs[i]))
                return true;
        return false;
    }
    return key->value != NULL && key->value[0] != '\0' &&
           strcmp(key->value, "*") != 0;
}

static bool match_item(const struct ds *key_item, const struct ds *entity);

bool match_key(const struct ds_attr *key, const struct ds *entity,
               bool server_matched)
{
    const struct ds_attr *attr;

    if (!match_key_has_condition(key))
        return true;
    attr = ds_get(entity, key->tag);
    if (match_vr_is(key->vr, "SQ")) {
        /* Sequence matching (C.2.2.2.6): some item matches every key of
         * the key's (first) item. */
        if (attr == NULL || attr->item_count == 0)
            return server_matched;
        for (size_t i = 0; i < attr->item_count; i++)
            if (match_item(key->items[0], attr->items[i]))
                return true;
        return false;
    }
    if (attr == NULL || attr->value == NULL || attr->value[0] == '\0')
        return server_matched;
    return match_value(key->vr, key->value, attr->value);
}

static bool match_item(const struct ds *key_item, const struct ds *entity)
{
    for (size_t i = 0; i < key_item->count; i++)
        if (!match_key(&key_item->attrs[i], entity, false))
            return false;
    return true;
}
