/*
 * find - C-FIND through QIDO-RS (see find.h).
 *
 * One C-FIND is one session:
 *   find_begin()  checks the identifier against the information model,
 *                 picks the QIDO-RS resource and splits the keys into
 *                 those the server matches (URL parameters) and those
 *                 matched here. Every key with a value is matched here
 *                 again on each result, so answers follow PS3.4 C.2.2.2
 *                 whatever the server does; a key the server matched
 *                 but did not return is taken on its word.
 *   find_next()   hands out one match at a time, fetching the next page
 *                 only when the current one is used up (so a C-CANCEL
 *                 stops further requests), dropping duplicates by unique
 *                 key. PATIENT level reads every page first, then groups
 *                 studies into patients.
 */
#include "find.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dicom/dataset.h"
#include "base/log.h"
#include "web/dicomweb.h"
#include "web/qido.h"
#include "dicom/redact.h"
#include "web/stow.h"
#include "base/util.h"

#define TAG_SPECIFIC_CHARSET DS_TAG(0x0008, 0x0005)
#define TAG_SOP_CLASS_UID DS_TAG(0x0008, 0x0016)
#define TAG_SOP_INSTANCE_UID DS_TAG(0x0008, 0x0018)
#define TAG_QR_LEVEL DS_TAG(0x0008, 0x0052)
#define TAG_RETRIEVE_AE DS_TAG(0x0008, 0x0054)
#define TAG_PATIENT_NAME DS_TAG(0x0010, 0x0010)
#define TAG_PATIENT_ID DS_TAG(0x0010, 0x0020)
#define TAG_ISSUER_OF_PATIENT_ID DS_TAG(0x0010, 0x0021)
#define TAG_STUDY_UID DS_TAG(0x0020, 0x000D)
#define TAG_SERIES_UID DS_TAG(0x0020, 0x000E)
#define TAG_PATIENT_STUDIES DS_TAG(0x0020, 0x1200)
#define TAG_PATIENT_SERIES DS_TAG(0x0020, 0x1202)
#define TAG_PATIENT_INSTANCES DS_TAG(0x0020, 0x1204)
#define TAG_STUDY_SERIES DS_TAG(0x0020, 0x1206)
#define TAG_STUDY_INSTANCES DS_TAG(0x0020, 0x1208)

#define STATUS_SUCCESS 0x0000
#define STATUS_CANCEL 0xFE00
#define STATUS_OUT_OF_RESOURCES 0xA700
#define STATUS_IDENTIFIER_MISMATCH 0xA900
#define STATUS_UNREACHABLE 0xC001
#define STATUS_HTTP_ERROR 0xC002
#define STATUS_BAD_ANSWER 0xC003
#define STATUS_NO_TOKEN 0xC004

/* Idle connections kept for the next C-FIND. */
#define FIND_WEB_POOL 8

enum find_level {
    LEVEL_PATIENT = 0,
    LEVEL_STUDY,
    LEVEL_SERIES,
    LEVEL_IMAGE,
};

static const char *const find_level_names[] = { "PATIENT", "STUDY", "SERIES",
                                                "IMAGE" };

/* Where an attribute lives (PS3.4 C.6 key tables), and whether the Azure
 * DICOM service can search it (protocol-facts 3.4). */
struct find_attr_info {
    uint32_t tag;
    enum find_level level;
    bool azure_searchable;
};

static const struct find_attr_info find_attrs[] = {
    { DS_TAG(0x0010, 0x0010), LEVEL_PATIENT, true },  /* PatientName */
    { DS_TAG(0x0010, 0x0020), LEVEL_PATIENT, true },  /* PatientID */
    { DS_TAG(0x0010, 0x0021), LEVEL_PATIENT, false }, /* Issuer */
    { DS_TAG(0x0010, 0x0022), LEVEL_PATIENT, false },
    { DS_TAG(0x0010, 0x0030), LEVEL_PATIENT, true },  /* BirthDate */
    { DS_TAG(0x0010, 0x0032), LEVEL_PATIENT, false },
    { DS_TAG(0x0010, 0x0040), LEVEL_PATIENT, false },
    { DS_TAG(0x0010, 0x1000), LEVEL_PATIENT, false },
    { DS_TAG(0x0010, 0x1001), LEVEL_PATIENT, false },
    { DS_TAG(0x0010, 0x1002), LEVEL_PATIENT, false },
    { DS_TAG(0x0010, 0x2160), LEVEL_PATIENT, false },
    { DS_TAG(0x0010, 0x4000), LEVEL_PATIENT, false },
    { DS_TAG(0x0020, 0x1200), LEVEL_PATIENT, false },
    { DS_TAG(0x0020, 0x1202), LEVEL_PATIENT, false },
    { DS_TAG(0x0020, 0x1204), LEVEL_PATIENT, false },
    { DS_TAG(0x0008, 0x0020), LEVEL_STUDY, true },    /* StudyDate */
    { DS_TAG(0x0008, 0x0030), LEVEL_STUDY, false },
    { DS_TAG(0x0008, 0x0050), LEVEL_STUDY, true },    /* Accession */
    { DS_TAG(0x0008, 0x0061), LEVEL_STUDY, true },    /* Modalities */
    { DS_TAG(0x0008, 0x0062), LEVEL_STUDY, false },
    { DS_TAG(0x0008, 0x0090), LEVEL_STUDY, true },    /* Referring */
    { DS_TAG(0x0008, 0x0201), LEVEL_STUDY, false },
    { DS_TAG(0x0008, 0x1030), LEVEL_STUDY, true },    /* StudyDescr. */
    { DS_TAG(0x0008, 0x1032), LEVEL_STUDY, false },
    { DS_TAG(0x0008, 0x1060), LEVEL_STUDY, false },
    { DS_TAG(0x0008, 0x1080), LEVEL_STUDY, false },
    { DS_TAG(0x0010, 0x1010), LEVEL_STUDY, false },
    { DS_TAG(0x0010, 0x1020), LEVEL_STUDY, false },
    { DS_TAG(0x0010, 0x1030), LEVEL_STUDY, false },
    { DS_TAG(0x0010, 0x2180), LEVEL_STUDY, false },
    { DS_TAG(0x0010, 0x21B0), LEVEL_STUDY, false },
    { DS_TAG(0x0020, 0x000D), LEVEL_STUDY, true },    /* StudyUID */
    { DS_TAG(0x0020, 0x0010), LEVEL_STUDY, false },
    { DS_TAG(0x0020, 0x1206), LEVEL_STUDY, false },
    { DS_TAG(0x0020, 0x1208), LEVEL_STUDY, false },
    { DS_TAG(0x0032, 0x1032), LEVEL_STUDY, false },
    { DS_TAG(0x0032, 0x1060), LEVEL_STUDY, false },
    { DS_TAG(0x0008, 0x0021), LEVEL_SERIES, false },
    { DS_TAG(0x0008, 0x0031), LEVEL_SERIES, false },
    { DS_TAG(0x0008, 0x0060), LEVEL_SERIES, true },   /* Modality */
    { DS_TAG(0x0008, 0x0070), LEVEL_SERIES, false },
    { DS_TAG(0x0008, 0x103E), LEVEL_SERIES, false },
    { DS_TAG(0x0008, 0x1090), LEVEL_SERIES, true },   /* ModelName */
    { DS_TAG(0x0018, 0x0015), LEVEL_SERIES, false },
    { DS_TAG(0x0018, 0x1030), LEVEL_SERIES, false },
    { DS_TAG(0x0020, 0x000E), LEVEL_SERIES, true },   /* SeriesUID */
    { DS_TAG(0x0020, 0x0011), LEVEL_SERIES, false },
    { DS_TAG(0x0020, 0x0060), LEVEL_SERIES, false },
    { DS_TAG(0x0020, 0x1209), LEVEL_SERIES, false },
    { DS_TAG(0x0040, 0x0244), LEVEL_SERIES, true },   /* PPS date */
    { DS_TAG(0x0040, 0x0245), LEVEL_SERIES, false },
    { DS_TAG(0x0040, 0x0275), LEVEL_SERIES, false },
    { DS_TAG(0x0008, 0x0008), LEVEL_IMAGE, false },
    { DS_TAG(0x0008, 0x0016), LEVEL_IMAGE, false },
    { DS_TAG(0x0008, 0x0018), LEVEL_IMAGE, true },    /* SOPInstUID */
    { DS_TAG(0x0008, 0x0022), LEVEL_IMAGE, false },
    { DS_TAG(0x0008, 0x0023), LEVEL_IMAGE, false },
    { DS_TAG(0x0008, 0x0032), LEVEL_IMAGE, false },
    { DS_TAG(0x0008, 0x0033), LEVEL_IMAGE, false },
    { DS_TAG(0x0020, 0x0013), LEVEL_IMAGE, false },
    { DS_TAG(0x0028, 0x0008), LEVEL_IMAGE, false },
    { DS_TAG(0x0028, 0x0010), LEVEL_IMAGE, false },
    { DS_TAG(0x0028, 0x0011), LEVEL_IMAGE, false },
    { DS_TAG(0x0028, 0x0100), LEVEL_IMAGE, false },
};

#define FIND_ATTR_COUNT (sizeof(find_attrs) / sizeof(find_attrs[0]))

static const struct find_attr_info *find_attr_info(uint32_t tag)
{
    for (size_t i = 0; i < FIND_ATTR_COUNT; i++)
        if (find_attrs[i].tag == tag)
            return &find_attrs[i];
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Matching (PS3.4 C.2.2.2)                                            */
/* ------------------------------------------------------------------ */

static bool vr_is(const char *vr, const char *name)
{
    return vr[0] == name[0] && vr[1] == name[1];
}

static bool vr_is_numeric(const char *vr)
{
    static const char *const numeric[] = { "IS", "DS", "US", "UL", "SS",
                                           "SL", "FL", "FD", "UV", "SV" };

    for (size_t i = 0; i < sizeof(numeric) / sizeof(numeric[0]); i++)
        if (vr_is(vr, numeric[i]))
            return true;
    return false;
}

/* VRs where * and ? are ordinary characters, and ranges (DA/TM/DT). */
static bool vr_no_wildcards(const char *vr)
{
    return vr_is(vr, "DA") || vr_is(vr, "TM") || vr_is(vr, "DT") ||
           vr_is(vr, "UI") || vr_is(vr, "AT") || vr_is_numeric(vr);
}

static bool vr_is_temporal(const char *vr)
{
    return vr_is(vr, "DA") || vr_is(vr, "TM") || vr_is(vr, "DT");
}

/* Copies @src[0..n) without leading and trailing spaces into @dst. */
static void trim_into(char *dst, size_t dst_size, const char *src, size_t n)
{
    while (n > 0 && (*src == ' ' || *src == '\t')) {
        src++;
        n--;
    }
    while (n > 0 && (src[n - 1] == ' ' || src[n - 1] == '\t' ||
                     src[n - 1] == '\0'))
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
    size_t full = vr_is(vr, "DA") ? 8 : vr_is(vr, "TM") ? 13 : 21;
    size_t n = 0;

    for (const char *p = in; *p != '\0' && n + 1 < out_size; p++) {
        if (*p == ':' || (*p == '.' && !vr_is(vr, "TM") && n < 8 &&
                          vr_is(vr, "DA")))
            continue;
        if (vr_is(vr, "DT") && (*p == '+' || *p == '-') && n >= 4)
            break;
        out[n++] = *p;
    }
    /* TM and DT carry a fraction after '.'; pad the seconds first. */
    if (!vr_is(vr, "DA")) {
        size_t whole = vr_is(vr, "TM") ? 6 : 14;
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
static bool temporal_matches(const char *vr, const char *key,
                             const char *value)
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
    if (vr_is(vr, "DT")) {
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
            snprintf(upper, sizeof(upper), "~");   /* above any digit */
    }
    return strcmp(val, lower) >= 0 && strcmp(val, upper) <= 0;
}

/* One key value against one entity value. */
static bool single_matches(const char *vr, const char *key,
                           const char *value)
{
    char k[1024];
    char v[1024];
    bool pn = vr_is(vr, "PN");

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

bool find_value_matches(const char *vr, const char *key, const char *value)
{
    const char *kp = key;

    if (key == NULL || key[0] == '\0' || strcmp(key, "*") == 0)
        return true;   /* universal */
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
            if (one_key[0] == '\0' ||
                (one_value[0] != '\0' &&
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

/* True if @key has a value to match (not universal). */
static bool key_has_condition(const struct ds_attr *key)
{
    if (vr_is(key->vr, "SQ")) {
        if (key->item_count == 0)
            return false;
        for (size_t i = 0; i < key->items[0]->count; i++)
            if (key_has_condition(&key->items[0]->attrs[i]))
                return true;
        return false;
    }
    return key->value != NULL && key->value[0] != '\0' &&
           strcmp(key->value, "*") != 0;
}

static bool item_matches(const struct ds *key_item, const struct ds *entity);

/*
 * One key against @entity. @server_matched: the server was asked to
 * match this key, so an entity that lacks the attribute is taken on the
 * server's word.
 */
static bool key_matches(const struct ds_attr *key, const struct ds *entity,
                        bool server_matched)
{
    const struct ds_attr *attr;

    if (!key_has_condition(key))
        return true;
    attr = ds_get(entity, key->tag);
    if (vr_is(key->vr, "SQ")) {
        /* Sequence matching (C.2.2.2.6): some item matches every key of
         * the key's (first) item. */
        if (attr == NULL || attr->item_count == 0)
            return server_matched;
        for (size_t i = 0; i < attr->item_count; i++)
            if (item_matches(key->items[0], attr->items[i]))
                return true;
        return false;
    }
    if (attr == NULL || attr->value == NULL || attr->value[0] == '\0')
        return server_matched;
    return find_value_matches(key->vr, key->value, attr->value);
}

static bool item_matches(const struct ds *key_item, const struct ds *entity)
{
    for (size_t i = 0; i < key_item->count; i++)
        if (!key_matches(&key_item->attrs[i], entity, false))
            return false;
    return true;
}

/* ------------------------------------------------------------------ */
/* A set of unique keys (de-duplication across pages)                  */
/* ------------------------------------------------------------------ */

struct key_set {
    char **slots;
    size_t cap;       /* power of two */
    size_t count;
};

static uint64_t key_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;   /* FNV-1a */

    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

/* Adds @key; returns 1 if it was new, 0 if present, -ENOMEM. */
static int key_set_add(struct key_set *set, const char *key)
{
    size_t i;

    if ((set->count + 1) * 2 > set->cap) {
        size_t cap = set->cap == 0 ? 64 : set->cap * 2;
        char **slots = calloc(cap, sizeof(*slots));
        if (slots == NULL)
            return -ENOMEM;
        for (size_t j = 0; j < set->cap; j++) {
            if (set->slots[j] == NULL)
                continue;
            i = key_hash(set->slots[j]) & (cap - 1);
            while (slots[i] != NULL)
                i = (i + 1) & (cap - 1);
            slots[i] = set->slots[j];
        }
        free(set->slots);
        set->slots = slots;
        set->cap = cap;
    }
    i = key_hash(key) & (set->cap - 1);
    while (set->slots[i] != NULL) {
        if (strcmp(set->slots[i], key) == 0)
            return 0;
        i = (i + 1) & (set->cap - 1);
    }
    set->slots[i] = strdup(key);
    if (set->slots[i] == NULL)
        return -ENOMEM;
    set->count++;
    return 1;
}

static void key_set_free(struct key_set *set)
{
    for (size_t i = 0; i < set->cap; i++)
        free(set->slots[i]);
    free(set->slots);
    memset(set, 0, sizeof(*set));
}

/* ------------------------------------------------------------------ */
/* Service and sessions                                                */
/* ------------------------------------------------------------------ */

struct find_service {
    struct find_params params;
    atomic_ulong requests;
};

/* One patient (PATIENT level): the first study seen and the sums. */
struct find_patient {
    struct ds *entity;
    unsigned long studies;
    unsigned long series;
    unsigned long instances;
};

struct find_session {
    struct find_service *svc;
    enum scp_find_model model;
    enum find_level level;
    char caller[UTIL_AE_TITLE_MAX + 1];
    struct ds *request;            /* the identifier, UTF-8 */
    /* Keys matched by the server: index into request->attrs. */
    bool *server_matched;
    char *query_base;              /* resource + match parameters */
    uint32_t unique_tag;

    unsigned long offset;          /* next offset to ask */
    unsigned long fetched;         /* results read from the server */
    unsigned long sent;            /* matches handed out */
    unsigned long requests;
    bool server_done;
    bool capped;
    struct ds **page;
    size_t page_count;
    size_t page_pos;
    struct key_set seen;

    struct find_patient *patients; /* PATIENT level */
    size_t patient_count;
    size_t patient_pos;
    bool patients_ready;
    uint64_t started_ms;
};

static void set_status(struct scp_find_status *st, uint16_t status,
                       const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_status(struct scp_find_status *st, uint16_t status,
                       const char *fmt, ...)
{
    va_list ap;

    st->status = status;
    st->comment[0] = '\0';
    if (fmt == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(st->comment, sizeof(st->comment), fmt, ap);
    va_end(ap);
}

struct find_service *find_service_new(const struct find_params *params)
{
    struct find_service *svc = calloc(1, sizeof(*svc));

    if (svc == NULL)
        return NULL;
    svc->params = *params;
    if (svc->params.page_size == 0)
        svc->params.page_size = 100;
    if (svc->params.max_results == 0)
        svc->params.max_results = 5000;
    atomic_init(&svc->requests, 0);
    return svc;
}

void find_service_free(struct find_service *svc)
{
    free(svc);
}

unsigned long find_service_requests(struct find_service *svc)
{
    return atomic_load(&svc->requests);
}

void find_reply_free(struct find_reply *reply)
{
    free(reply->body);
    reply->body = NULL;
    reply->body_len = 0;
    redact_free(reply->secrets);
    reply->secrets = NULL;
}

/* What a server's text about a page of @s may echo and must not show:
 * the identifier's values and the exchange's secrets. NULL (out of
 * memory, or secrets not gathered): redact_text() withholds the text. */
static struct redact *page_redact(const struct find_session *s,
                                  const struct find_reply *reply)
{
    struct redact *hide;

    if (reply->unchecked)
        return NULL;
    hide = redact_new();
    if (hide != NULL) {
        (void)redact_add_dataset(hide, s->request);
        (void)redact_merge(hide, reply->secrets);
    }
    return hide;
}

static bool level_from_text(const char *text, enum find_level *ret)
{
    char trimmed[32];

    if (text == NULL)
        return false;
    trim_into(trimmed, sizeof(trimmed), text, strlen(text));
    for (size_t i = 0; i < 4; i++) {
        if (strcmp(trimmed, find_level_names[i]) == 0) {
            *ret = (enum find_level)i;
            return true;
        }
    }
    return false;
}

/* The key's value if it is one single UID (no list, no wildcard). */
static const char *single_uid(const struct ds *request, uint32_t tag)
{
    const char *v = ds_value(request, tag);

    if (v == NULL || strchr(v, '\\') != NULL || !util_uid_valid(v))
        return NULL;
    return v;
}

/* The level an attribute belongs to; unknown ones to @query_level. */
static enum find_level attr_level(uint32_t tag, enum find_level query_level)
{
    const struct find_attr_info *info = find_attr_info(tag);

    return info != NULL ? info->level : query_level;
}

/*
 * Azure's QIDO-RS accepts a match parameter only for its searchable
 * attributes, at levels the resource allows, and only as one exact value
 * or a date range (protocol-facts 3.4).
 */
static bool azure_sendable(const struct ds_attr *key, int allowed_levels)
{
    const struct find_attr_info *info = find_attr_info(key->tag);
    enum find_level level;
    const char *v = key->value;

    if (info == NULL || !info->azure_searchable)
        return false;
    level = info->level == LEVEL_PATIENT ? LEVEL_STUDY : info->level;
    if ((allowed_levels & (1 << level)) == 0)
        return false;
    if (strpbrk(v, "*?\\\"") != NULL)
        return false;
    if (vr_is(key->vr, "DA")) {
        /* yyyyMMdd, or a range of them; "-" alone is refused. */
        size_t n = strlen(v);
        const char *dash = strchr(v, '-');
        if (n == 8)
            return strspn(v, "0123456789") == 8;
        if (dash == NULL || n > 17 || n < 9)
            return false;
        for (const char *p = v; *p; p++)
            if (*p != '-' && (*p < '0' || *p > '9'))
                return false;
        return (dash - v == 0 || dash - v == 8) &&
               (strlen(dash + 1) == 0 || strlen(dash + 1) == 8);
    }
    return true;
}

/* True if @value reaches a server that does not percent-decode (Orthanc
 * 1.10 with DICOMweb 1.7) intact: only characters sent as they are, plus
 * '^', which such servers take raw. */
static bool survives_without_decoding(const char *value)
{
    for (const char *p = value; *p; p++) {
        char c = *p;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
              c == '~' || c == '*' || c == '?' || c == '^'))
            return false;
    }
    return true;
}

/* Whether a key may be sent to a standard QIDO-RS server. */
static bool standard_sendable(const struct ds_attr *key,
                              enum find_level query_level,
                              int nested_levels)
{
    enum find_level level = attr_level(key->tag, query_level);

    if (vr_is(key->vr, "SQ"))
        return false;   /* sequence matching: here, on the results */
    if (key->tag == TAG_PATIENT_STUDIES || key->tag == TAG_PATIENT_SERIES ||
        key->tag == TAG_PATIENT_INSTANCES || key->tag == TAG_STUDY_SERIES ||
        key->tag == TAG_STUDY_INSTANCES ||
        key->tag == DS_TAG(0x0020, 0x1209))
        return false;   /* computed counts */
    if (strchr(key->value, '\\') != NULL && !vr_is(key->vr, "UI"))
        return false;   /* several values: only UID lists are QIDO-RS */
    if (level == LEVEL_PATIENT)
        level = LEVEL_STUDY;
    /* A nested resource (/studies/{uid}/series) filters its own level
     * only: keys of the levels named in the path are implied. */
    if ((nested_levels & (1 << level)) != 0)
        return false;
    return true;
}

static void session_free(struct find_session *s)
{
    if (s == NULL)
        return;
    ds_free(s->request);
    free(s->server_matched);
    free(s->query_base);
    qido_results_free(s->page, s->page_count);
    key_set_free(&s->seen);
    for (size_t i = 0; i < s->patient_count; i++)
        ds_free(s->patients[i].entity);
    free(s->patients);
    free(s);
}

/* Whether @tag is one of ours (not asked of the server). */
static bool tag_is_local(uint32_t tag)
{
    return tag == TAG_QR_LEVEL || tag == TAG_SPECIFIC_CHARSET ||
           (tag >> 16) <= 0x0002 || tag == TAG_RETRIEVE_AE ||
           tag == TAG_PATIENT_STUDIES || tag == TAG_PATIENT_SERIES ||
           tag == TAG_PATIENT_INSTANCES;
}

/* Appends @tag to the comma-separated list in @list, once. */
static int tag_list_add(char **list, size_t *len, uint32_t tag)
{
    char text[9];
    char *grown;

    qido_tag_text(tag, text);
    if (*list != NULL) {
        for (const char *p = *list; *p; p += p[8] == ',' ? 9 : 8)
            if (strncmp(p, text, 8) == 0)
                return 0;
    }
    grown = realloc(*list, *len + 10);
    if (grown == NULL)
        return -ENOMEM;
    *list = grown;
    if (*len > 0)
        (*list)[(*len)++] = ',';
    memcpy(*list + *len, text, 9);
    *len += 8;
    return 0;
}

/*
 * The includefield list of a standard request: every key asked for, the
 * unique key of the level, and at PATIENT level what grouping and the
 * patient counts need. NULL when empty; -ENOMEM via @ret_err.
 */
static char *includefield_list(const struct find_session *s, int *ret_err)
{
    char *list = NULL;
    size_t len = 0;
    int r = 0;

    for (size_t i = 0; i < s->request->count && r == 0; i++)
        if (!tag_is_local(s->request->attrs[i].tag))
            r = tag_list_add(&list, &len, s->request->attrs[i].tag);
    if (r == 0)
        r = tag_list_add(&list, &len, s->unique_tag);
    if (r == 0 && s->level == LEVEL_PATIENT) {
        r = tag_list_add(&list, &len, TAG_PATIENT_ID);
        if (r == 0)
            r = tag_list_add(&list, &len, TAG_ISSUER_OF_PATIENT_ID);
        if (r == 0 && ds_get(s->request, TAG_PATIENT_SERIES) != NULL)
            r = tag_list_add(&list, &len, TAG_STUDY_SERIES);
        if (r == 0 && ds_get(s->request, TAG_PATIENT_INSTANCES) != NULL)
            r = tag_list_add(&list, &len, TAG_STUDY_INSTANCES);
    }
    if (r < 0) {
        free(list);
        list = NULL;
    }
    *ret_err = r;
    return list;
}

/*
 * Builds the resource and the parameters shared by every request of this
 * session (all but limit and offset), and marks the keys the server is
 * asked to match. Returns 0 or -ENOMEM.
 */
static int session_plan(struct find_session *s, enum find_profile profile)
{
    bool azure = profile == FIND_PROFILE_AZURE;
    const char *study = single_uid(s->request, TAG_STUDY_UID);
    const char *series = single_uid(s->request, TAG_SERIES_UID);
    struct qido_url url;
    char path[256];
    char tag_text[9];
    int nested = 0;             /* levels implied by the path */
    int azure_levels;           /* levels Azure filters there */
    int r = 0;

    switch (s->level) {
    case LEVEL_PATIENT:
    case LEVEL_STUDY:
        snprintf(path, sizeof(path), "/studies");
        azure_levels = 1 << LEVEL_STUDY;
        s->unique_tag = TAG_STUDY_UID;
        break;
    case LEVEL_SERIES:
        if (study != NULL) {
            snprintf(path, sizeof(path), "/studies/%s/series", study);
            nested = 1 << LEVEL_STUDY;
            azure_levels = 1 << LEVEL_SERIES;
        } else {
            snprintf(path, sizeof(path), "/series");
            azure_levels = 1 << LEVEL_STUDY | 1 << LEVEL_SERIES;
        }
        s->unique_tag = TAG_SERIES_UID;
        break;
    case LEVEL_IMAGE:
    default:
        if (study != NULL && series != NULL) {
            snprintf(path, sizeof(path), "/studies/%s/series/%s/instances",
                     study, series);
            nested = 1 << LEVEL_STUDY | 1 << LEVEL_SERIES;
            azure_levels = 1 << LEVEL_IMAGE;
        } else if (study != NULL) {
            snprintf(path, sizeof(path), "/studies/%s/instances", study);
            nested = 1 << LEVEL_STUDY;
            azure_levels = 1 << LEVEL_SERIES | 1 << LEVEL_IMAGE;
        } else {
            snprintf(path, sizeof(path), "/instances");
            azure_levels = 1 << LEVEL_STUDY | 1 << LEVEL_SERIES |
                           1 << LEVEL_IMAGE;
        }
        s->unique_tag = TAG_SOP_INSTANCE_UID;
        break;
    }

    s->server_matched = calloc(s->request->count + 1, sizeof(bool));
    if (s->server_matched == NULL)
        return -ENOMEM;
    qido_url_init(&url, path);
    for (size_t i = 0; i < s->request->count; i++) {
        const struct ds_attr *key = &s->request->attrs[i];
        enum find_level level = attr_level(key->tag, s->level);
        bool send;

        if (tag_is_local(key->tag))
            continue;
        if (level == LEVEL_PATIENT)
            level = LEVEL_STUDY;
        /* The UIDs named in the path are matched by the path. */
        if ((nested & (1 << level)) != 0 &&
            (key->tag == TAG_STUDY_UID || key->tag == TAG_SERIES_UID)) {
            s->server_matched[i] = true;
            continue;
        }
        if (!key_has_condition(key))
            continue;
        send = azure ? !vr_is(key->vr, "SQ") &&
                           azure_sendable(key, azure_levels)
                     : standard_sendable(key, s->level, nested);
        if (send && profile == FIND_PROFILE_ORTHANC)
            send = survives_without_decoding(key->value) ||
                   (vr_is(key->vr, "UI") &&
                    strspn(key->value, "0123456789.\\") ==
                        strlen(key->value));
        if (!send)
            continue;
        qido_tag_text(key->tag, tag_text);
        if (vr_is(key->vr, "UI") && strchr(key->value, '\\') != NULL) {
            /* A UID list: comma-separated in QIDO-RS (8.3.4.1). */
            char *list = strdup(key->value);
            if (list == NULL) {
                qido_url_free(&url);
                return -ENOMEM;
            }
            for (char *p = list; *p; p++)
                if (*p == '\\')
                    *p = ',';
            qido_url_add(&url, tag_text, list, QIDO_RAW_COMMAS);
            free(list);
        } else {
            qido_url_add(&url, tag_text, key->value,
                         profile == FIND_PROFILE_ORTHANC ? QIDO_RAW_CARET
                                                         : 0);
        }
        s->server_matched[i] = true;
    }

    /* What to return: every key asked for (standard), or everything
     * (Azure, whose includefield names are a narrower list and answer 400
     * for any other). */
    if (azure) {
        qido_url_add(&url, "includefield", "all", 0);
    } else {
        char *list = includefield_list(s, &r);
        if (list != NULL)
            qido_url_add(&url, "includefield", list, QIDO_RAW_COMMAS);
        free(list);
    }
    if (r < 0 || url.failed) {
        qido_url_free(&url);
        return -ENOMEM;
    }
    s->query_base = url.text;   /* ownership moves */
    return 0;
}

/* ------------------------------------------------------------------ */
/* Requests                                                            */
/* ------------------------------------------------------------------ */

/* The resource path of the session, for logs (no parameter: those may
 * hold patient data). */
static void session_resource(const struct find_session *s, char *buf,
                             size_t len)
{
    size_t n = strcspn(s->query_base, "?");

    if (n >= len)
        n = len - 1;
    memcpy(buf, s->query_base, n);
    buf[n] = '\0';
}

/*
 * GETs one page: @limit results from @offset. Returns 0 with the results
 * (possibly none), or -EIO with a failure status in @st.
 */
static int fetch_page(struct find_session *s, unsigned long limit,
                      unsigned long offset, struct ds ***ret_results,
                      size_t *ret_count, bool *ret_more,
                      struct scp_find_status *st)
{
    struct find_service *svc = s->svc;
    struct find_reply reply;
    struct redact *hide = NULL;
    char resource[160];
    char err[256];
    char text[REDACT_TEXT_MAX + 8];
    char *url = NULL;
    int r;

    *ret_results = NULL;
    *ret_count = 0;
    *ret_more = false;
    if (asprintf(&url, "%s%climit=%lu&offset=%lu", s->query_base,
                 strchr(s->query_base, '?') != NULL ? '&' : '?', limit,
                 offset) < 0) {
        set_status(st, STATUS_OUT_OF_RESOURCES, "out of memory");
        return -EIO;
    }
    memset(&reply, 0, sizeof(reply));
    r = svc->params.fetch(svc->params.fetch_ctx, url, &reply);
    free(url);
    atomic_fetch_add(&svc->requests, 1);
    s->requests++;
    session_resource(s, resource, sizeof(resource));

    if (r < 0 || reply.http_status == 0) {
        /* Our words, libcurl's, or the token endpoint's (its secrets
         * already hidden): checked for the identifier's values too. */
        char why[sizeof(reply.error) + 8];
        hide = page_redact(s, &reply);
        redact_text(hide, reply.error, strlen(reply.error),
                    sizeof(reply.error), why, sizeof(why));
        if (reply.token_failed) {
            set_status(st, STATUS_NO_TOKEN, "no token: %s", why);
            log_warning("event=find-failed from=%s resource=%s "
                        "reason=\"no token: %s\"",
                        s->caller, resource, why);
        } else {
            set_status(st, STATUS_UNREACHABLE, "QIDO-RS unreachable: %s",
                       why);
            log_warning("event=find-failed from=%s resource=%s "
                        "reason=\"QIDO-RS server unreachable: %s\"",
                        s->caller, resource, why);
        }
        redact_free(hide);
        find_reply_free(&reply);
        return -EIO;
    }
    if (reply.http_status == 204) {
        find_reply_free(&reply);
        return 0;
    }
    if (reply.http_status != 200) {
        hide = page_redact(s, &reply);
        if (reply.http_status == 403)
            set_status(st, STATUS_HTTP_ERROR,
                       "QIDO-RS 403 Forbidden: identity lacks a role");
        else if (reply.http_status == 401)
            set_status(st, STATUS_HTTP_ERROR,
                       "QIDO-RS 401: token refused twice");
        else
            set_status(st, STATUS_HTTP_ERROR, "QIDO-RS answered HTTP %ld",
                       reply.http_status);
        if (stow_request_action(reply.http_status) == STOW_REDIRECTED) {
            /* Never followed: the token stays with the configured
             * server, and the operator is told where it points. */
            redact_text(hide, reply.location, strlen(reply.location),
                        REDACT_TEXT_MAX, text, sizeof(text));
            log_warning("event=find-failed from=%s resource=%s status=%ld "
                        "reason=\"QIDO-RS answered HTTP %ld, a redirect to "
                        "'%s': upload.url should change (redirects are not "
                        "followed)\"",
                        s->caller, resource, reply.http_status,
                        reply.http_status, text);
        } else {
            /* What the server says about it (Azure explains its 400s),
             * without what it may echo of the query. */
            redact_text(hide, reply.body, reply.body_len, REDACT_TEXT_MAX,
                        text, sizeof(text));
            log_warning("event=find-failed from=%s resource=%s status=%ld "
                        "reason=\"QIDO-RS answered HTTP %ld\" "
                        "diagnosis=\"%s\" body=\"%s\"",
                        s->caller, resource, reply.http_status,
                        reply.http_status, reply.error, text);
        }
        redact_free(hide);
        find_reply_free(&reply);
        return -EIO;
    }
    r = qido_parse_results(reply.body != NULL ? reply.body : "",
                           reply.body_len, ret_results, ret_count, err,
                           sizeof(err));
    *ret_more = reply.more_results;
    if (r < 0 && r != -ENOMEM) {
        hide = page_redact(s, &reply);
        redact_text(hide, err, strlen(err), REDACT_TEXT_MAX, text,
                    sizeof(text));
        redact_free(hide);
    }
    find_reply_free(&reply);
    if (r == -ENOMEM) {
        set_status(st, STATUS_OUT_OF_RESOURCES, "out of memory");
        return -EIO;
    }
    if (r < 0) {
        set_status(st, STATUS_BAD_ANSWER, "QIDO-RS answer is not DICOM "
                   "JSON");
        log_warning("event=find-failed from=%s resource=%s status=200 "
                    "reason=\"QIDO-RS answer is not DICOM JSON: %s\"",
                    s->caller, resource, text);
        return -EIO;
    }
    return 0;
}

/*
 * Reads the next page into the session. Sets server_done when the server
 * has no more, capped when max_results were read and more exist.
 * Returns 0 or -EIO with a failure status.
 */
static int next_page(struct find_session *s, struct scp_find_status *st)
{
    unsigned long max = s->svc->params.max_results;
    unsigned long limit = s->svc->params.page_size;
    struct ds **results;
    size_t count;
    bool more;
    int r;

    qido_results_free(s->page, s->page_count);
    s->page = NULL;
    s->page_count = 0;
    s->page_pos = 0;

    if (s->fetched >= max) {
        /* At the cap: one result more tells whether the list is whole. */
        r = fetch_page(s, 1, s->offset, &results, &count, &more, st);
        if (r < 0)
            return r;
        qido_results_free(results, count);
        s->capped = count > 0;
        s->server_done = true;
        return 0;
    }
    if (limit > max - s->fetched)
        limit = max - s->fetched;
    r = fetch_page(s, limit, s->offset, &results, &count, &more, st);
    if (r < 0)
        return r;
    s->page = results;
    s->page_count = count;
    s->fetched += count;
    s->offset += count;
    /* Fewer than asked means the end, unless the server warned that more
     * results can be requested (PS3.18 8.3.4.4). */
    if (count == 0 || (count < limit && !more))
        s->server_done = true;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Answers                                                             */
/* ------------------------------------------------------------------ */

/* Copies the items of entity sequence @src into @dst, keeping only the
 * keys of @key_item when it names any. */
static int copy_sequence(struct ds_attr *dst, const struct ds_attr *src,
                         const struct ds *key_item)
{
    for (size_t i = 0; i < src->item_count; i++) {
        struct ds *item = ds_add_item(dst);
        if (item == NULL)
            return -ENOMEM;
        if (key_item == NULL || key_item->count == 0) {
            for (size_t j = 0; j < src->items[i]->count; j++)
                if (ds_put_copy(item, &src->items[i]->attrs[j]) < 0)
                    return -ENOMEM;
            continue;
        }
        for (size_t j = 0; j < key_item->count; j++) {
            const struct ds_attr *key = &key_item->attrs[j];
            const struct ds_attr *attr = ds_get(src->items[i], key->tag);
            struct ds_attr *out;

            if (attr != NULL && vr_is(attr->vr, "SQ") && vr_is(key->vr, "SQ")) {
                out = ds_put(item, key->tag, "SQ", NULL);
                if (out == NULL ||
                    copy_sequence(out, attr,
                                  key->item_count > 0 ? key->items[0]
                                                      : NULL) < 0)
                    return -ENOMEM;
                continue;
            }
            out = ds_put(item, key->tag, key->vr,
                         attr != NULL ? attr->value : NULL);
            if (out == NULL)
                return -ENOMEM;
        }
    }
    return 0;
}

/*
 * The response identifier for @entity: exactly the keys asked for, with
 * the entity's values (zero length when it has none), and the
 * QueryRetrieveLevel. NULL on out-of-memory.
 */
static struct ds *build_answer(const struct find_session *s,
                               const struct ds *entity)
{
    struct ds *answer = ds_new();

    if (answer == NULL)
        return NULL;
    for (size_t i = 0; i < s->request->count; i++) {
        const struct ds_attr *key = &s->request->attrs[i];
        const struct ds_attr *attr;
        struct ds_attr *out;
        const char *vr = key->vr;

        if (key->tag == TAG_SPECIFIC_CHARSET || (key->tag >> 16) <= 0x0002)
            continue;
        if (key->tag == TAG_QR_LEVEL) {
            if (ds_put(answer, TAG_QR_LEVEL, "CS",
                       find_level_names[s->level]) == NULL)
                goto oom;
            continue;
        }
        attr = ds_get(entity, key->tag);
        if (vr_is(key->vr, "SQ")) {
            out = ds_put(answer, key->tag, "SQ", NULL);
            if (out == NULL)
                goto oom;
            if (attr != NULL && vr_is(attr->vr, "SQ") &&
                copy_sequence(out, attr,
                              key->item_count > 0 ? key->items[0] : NULL) < 0)
                goto oom;
            continue;
        }
        if ((vr_is(vr, "UN") || vr[0] == '\0') && attr != NULL)
            vr = attr->vr;
        if (attr != NULL && vr_is(attr->vr, "SQ"))
            attr = NULL;   /* the server says SQ, the key does not */
        if (ds_put(answer, key->tag, vr, attr != NULL ? attr->value : NULL) ==
            NULL)
            goto oom;
    }
    if (ds_get(answer, TAG_QR_LEVEL) == NULL &&
        ds_put(answer, TAG_QR_LEVEL, "CS", find_level_names[s->level]) == NULL)
        goto oom;
    return answer;
oom:
    ds_free(answer);
    return NULL;
}

/* True if @entity satisfies every key of the request. @computed_only:
 * only the patient count keys (after grouping); otherwise every key but
 * those. */
static bool entity_matches(const struct find_session *s,
                           const struct ds *entity, bool computed_only)
{
    for (size_t i = 0; i < s->request->count; i++) {
        const struct ds_attr *key = &s->request->attrs[i];
        bool computed = key->tag == TAG_PATIENT_STUDIES ||
                        key->tag == TAG_PATIENT_SERIES ||
                        key->tag == TAG_PATIENT_INSTANCES;

        if (key->tag == TAG_QR_LEVEL || key->tag == TAG_SPECIFIC_CHARSET ||
            key->tag == TAG_RETRIEVE_AE || (key->tag >> 16) <= 0x0002)
            continue;
        if (computed != computed_only)
            continue;
        /* At PATIENT level only patient keys select patients. */
        if (s->level == LEVEL_PATIENT && !computed &&
            attr_level(key->tag, LEVEL_PATIENT) != LEVEL_PATIENT)
            continue;
        if (!key_matches(key, entity, s->server_matched[i]))
            return false;
    }
    return true;
}

/* ------------------------------------------------------------------ */
/* PATIENT level                                                       */
/* ------------------------------------------------------------------ */

static unsigned long value_ulong(const struct ds *ds, uint32_t tag)
{
    const char *v = ds_value(ds, tag);

    return v != NULL ? strtoul(v, NULL, 10) : 0;
}

/* Adds a matching study to its patient (Patient ID + Issuer). */
static int add_study_to_patients(struct find_session *s, struct ds *study)
{
    const char *id = ds_value(study, TAG_PATIENT_ID);
    const char *issuer = ds_value(study, TAG_ISSUER_OF_PATIENT_ID);
    struct find_patient *p = NULL;

    if (id == NULL)
        id = "";
    if (issuer == NULL)
        issuer = "";
    for (size_t i = 0; i < s->patient_count; i++) {
        const struct ds *e = s->patients[i].entity;
        const char *eid = ds_value(e, TAG_PATIENT_ID);
        const char *eissuer = ds_value(e, TAG_ISSUER_OF_PATIENT_ID);
        if (strcmp(eid != NULL ? eid : "", id) == 0 &&
            strcmp(eissuer != NULL ? eissuer : "", issuer) == 0) {
            p = &s->patients[i];
            break;
        }
    }
    if (p == NULL) {
        struct find_patient *grown =
            realloc(s->patients, (s->patient_count + 1) * sizeof(*grown));
        if (grown == NULL)
            return -ENOMEM;
        s->patients = grown;
        p = &s->patients[s->patient_count];
        memset(p, 0, sizeof(*p));
        p->entity = ds_copy(study);
        if (p->entity == NULL)
            return -ENOMEM;
        s->patient_count++;
    }
    p->studies++;
    p->series += value_ulong(study, TAG_STUDY_SERIES);
    p->instances += value_ulong(study, TAG_STUDY_INSTANCES);
    return 0;
}

/* Reads every page and groups the studies into patients. */
static int collect_patients(struct find_session *s, struct scp_find_status *st)
{
    char number[32];

    while (!s->server_done) {
        int r = next_page(s, st);
        if (r < 0)
            return r;
        for (size_t i = 0; i < s->page_count; i++) {
            const char *uid = ds_value(s->page[i], TAG_STUDY_UID);
            if (!entity_matches(s, s->page[i], false))
                continue;
            if (uid != NULL && key_set_add(&s->seen, uid) == 0)
                continue;   /* the same study on two pages */
            if (add_study_to_patients(s, s->page[i]) < 0) {
                set_status(st, STATUS_OUT_OF_RESOURCES, "out of memory");
                return -EIO;
            }
        }
    }
    for (size_t i = 0; i < s->patient_count; i++) {
        struct find_patient *p = &s->patients[i];
        snprintf(number, sizeof(number), "%lu", p->studies);
        if (ds_put(p->entity, TAG_PATIENT_STUDIES, "IS", number) == NULL)
            goto oom;
        snprintf(number, sizeof(number), "%lu", p->series);
        if (ds_put(p->entity, TAG_PATIENT_SERIES, "IS", number) == NULL)
            goto oom;
        snprintf(number, sizeof(number), "%lu", p->instances);
        if (ds_put(p->entity, TAG_PATIENT_INSTANCES, "IS", number) == NULL)
            goto oom;
    }
    s->patients_ready = true;
    return 0;
oom:
    set_status(st, STATUS_OUT_OF_RESOURCES, "out of memory");
    return -EIO;
}

/* ------------------------------------------------------------------ */
/* The handler                                                         */
/* ------------------------------------------------------------------ */

static void log_done(const struct find_session *s,
                     const struct scp_find_status *st)
{
    log_info("event=find-done from=%s level=%s matches=%lu read=%lu "
             "requests=%lu ms=%llu status=%04x",
             s->caller, find_level_names[s->level], s->sent, s->fetched,
             s->requests,
             (unsigned long long)(util_now_monotonic_ms() - s->started_ms),
             (unsigned)st->status);
}

/* The final status once every match was handed out. */
static int finish(struct find_session *s, struct scp_find_status *st)
{
    if (s->capped) {
        set_status(st, STATUS_OUT_OF_RESOURCES,
                   "incomplete: over %u matches, narrow the query",
                   s->svc->params.max_results);
        log_warning("event=find-capped from=%s level=%s sent=%lu "
                    "max_results=%u reason=\"more matches than "
                    "query.max_results; the list ends with A700\"",
                    s->caller, find_level_names[s->level], s->sent,
                    s->svc->params.max_results);
    } else {
        set_status(st, STATUS_SUCCESS, NULL);
    }
    log_done(s, st);
    return 0;
}

static int find_next(void *session, bool cancelled, struct ds **ret_answer,
                     struct scp_find_status *ret_status)
{
    struct find_session *s = session;

    *ret_answer = NULL;
    if (cancelled) {
        set_status(ret_status, STATUS_CANCEL, NULL);
        log_info("event=find-cancelled from=%s level=%s sent=%lu "
                 "requests=%lu",
                 s->caller, find_level_names[s->level], s->sent, s->requests);
        return 0;
    }
    if (s->level == LEVEL_PATIENT) {
        if (!s->patients_ready && collect_patients(s, ret_status) < 0) {
            log_done(s, ret_status);
            return 0;
        }
        while (s->patient_pos < s->patient_count) {
            const struct ds *e = s->patients[s->patient_pos++].entity;
            if (!entity_matches(s, e, true))
                continue;
            *ret_answer = build_answer(s, e);
            if (*ret_answer == NULL) {
                set_status(ret_status, STATUS_OUT_OF_RESOURCES,
                           "out of memory");
                return 0;
            }
            s->sent++;
            return 1;
        }
        return finish(s, ret_status);
    }

    for (;;) {
        while (s->page_pos < s->page_count) {
            const struct ds *e = s->page[s->page_pos++];
            const char *uid = ds_value(e, s->unique_tag);
            int added;

            if (!entity_matches(s, e, false))
                continue;
            if (uid == NULL) {
                log_debug("event=find-skip from=%s reason=\"a result without "
                          "its unique key\"",
                          s->caller);
                continue;
            }
            added = key_set_add(&s->seen, uid);
            if (added == 0)
                continue;   /* already sent from an earlier page */
            *ret_answer = added > 0 ? build_answer(s, e) : NULL;
            if (*ret_answer == NULL) {
                set_status(ret_status, STATUS_OUT_OF_RESOURCES,
                           "out of memory");
                return 0;
            }
            s->sent++;
            return 1;
        }
        if (s->server_done)
            return finish(s, ret_status);
        if (next_page(s, ret_status) < 0) {
            log_done(s, ret_status);
            return 0;
        }
    }
}

static void *find_begin(void *ctx, enum scp_find_model model,
                        const struct ds *identifier, const char *caller,
                        struct scp_find_status *ret_status)
{
    struct find_service *svc = ctx;
    struct find_session *s = calloc(1, sizeof(*s));
    const char *level_text;

    if (s == NULL) {
        set_status(ret_status, STATUS_OUT_OF_RESOURCES, "out of memory");
        return NULL;
    }
    s->svc = svc;
    s->model = model;
    s->started_ms = util_now_monotonic_ms();
    snprintf(s->caller, sizeof(s->caller), "%s", caller);
    level_text = ds_value(identifier, TAG_QR_LEVEL);
    if (!level_from_text(level_text, &s->level)) {
        set_status(ret_status, STATUS_IDENTIFIER_MISMATCH,
                   "QueryRetrieveLevel (0008,0052) missing or unknown");
        log_warning("event=find-refused from=%s reason=\"QueryRetrieveLevel "
                    "missing or unknown\"",
                    s->caller);
        session_free(s);
        return NULL;
    }
    if (s->level == LEVEL_PATIENT && model == SCP_FIND_STUDY_ROOT) {
        set_status(ret_status, STATUS_IDENTIFIER_MISMATCH,
                   "PATIENT level is not in the Study Root model");
        log_warning("event=find-refused from=%s reason=\"PATIENT level in a "
                    "Study Root query\"",
                    s->caller);
        session_free(s);
        return NULL;
    }
    s->request = ds_copy(identifier);
    if (s->request == NULL || session_plan(s, svc->params.profile) < 0) {
        set_status(ret_status, STATUS_OUT_OF_RESOURCES, "out of memory");
        session_free(s);
        return NULL;
    }
    {
        char resource[160];
        session_resource(s, resource, sizeof(resource));
        log_info("event=find from=%s model=%s level=%s keys=%zu "
                 "resource=%s",
                 s->caller,
                 model == SCP_FIND_PATIENT_ROOT ? "patient-root"
                                                : "study-root",
                 find_level_names[s->level], s->request->count, resource);
    }
    return s;
}

static void find_end(void *session)
{
    session_free(session);
}

void find_handler_init(struct find_service *service,
                       struct scp_find_handler *ret_handler)
{
    ret_handler->ctx = service;
    ret_handler->begin = find_begin;
    ret_handler->next = find_next;
    ret_handler->end = find_end;
}

/* ------------------------------------------------------------------ */
/* The real fetch: the DICOMweb client (tokens, 401, 403, pool)        */
/* ------------------------------------------------------------------ */

struct find_web {
    struct dicomweb *client;
};

struct find_web *find_web_new(const char *base_url, const char *ca_file,
                              unsigned timeout_s, struct oauth_source *tokens)
{
    struct dicomweb_params params = {
        .base_url = base_url,
        .ca_file = ca_file,
        .timeout_s = timeout_s,
        .tokens = tokens,
        .pool_size = FIND_WEB_POOL,
    };
    struct find_web *web = calloc(1, sizeof(*web));

    if (web == NULL)
        return NULL;
    web->client = dicomweb_new(&params);
    if (web->client == NULL) {
        free(web);
        return NULL;
    }
    return web;
}

void find_web_free(struct find_web *web)
{
    if (web == NULL)
        return;
    dicomweb_free(web->client);
    free(web);
}

int find_web_fetch(void *ctx, const char *path_and_query,
                   struct find_reply *ret_reply)
{
    struct find_web *web = ctx;
    struct dicomweb_reply reply;
    size_t n;
    int r;

    memset(ret_reply, 0, sizeof(*ret_reply));
    r = dicomweb_search(web->client, path_and_query, &reply);
    ret_reply->http_status = reply.http_status;
    ret_reply->more_results = reply.more_results;
    ret_reply->token_failed = reply.token_failed;
    ret_reply->unchecked = reply.secrets_missing;
    memcpy(ret_reply->location, reply.location, sizeof(reply.location));
    ret_reply->secrets = reply.secrets;
    reply.secrets = NULL;
    if (r < 0) {
        snprintf(ret_reply->error, sizeof(ret_reply->error), "%s",
                 reply.error);
    } else if (reply.http_status == 403) {
        /* The reply keeps the start of it; the log has it whole. */
        n = strnlen(reply.diagnosis, sizeof(ret_reply->error) - 1);
        memcpy(ret_reply->error, reply.diagnosis, n);
        ret_reply->error[n] = '\0';
        if (reply.diagnosis_due)
            log_err("event=forbidden url=%s service=qido diagnosis=\"%s\"",
                    dicomweb_base_url(web->client), reply.diagnosis);
    } else {
        ret_reply->body = reply.body;
        ret_reply->body_len = reply.body_len;
        reply.body = NULL;
    }
    dicomweb_reply_free(&reply);
    return r;
}
