/* SPDX-License-Identifier: Apache-2.0 */
/*
 * multipart - see multipart.h.
 *
 * The body is read as RFC 2046 5.1.1 describes it:
 *   preamble, then dash-boundary padding CRLF, then per part a header
 *   block, an empty line and the data; each part's data ends at a
 *   delimiter CRLF "--" boundary, followed by padding CRLF (another part)
 *   or "--" (the close delimiter, then the epilogue).
 * The parser keeps the delimiter "\r\n--boundary" and how many of its
 * bytes the input has matched so far. A boundary holds no CR (it is
 * printable ASCII), so '\r' appears in the delimiter only at position 0:
 * on a mismatch the matched bytes are all data and the scan restarts at
 * the mismatching byte, with no failure table. Matched bytes that began
 * in an earlier chunk are handed out from the delimiter itself, so
 * nothing of the input is ever copied. Treating the body as if it began
 * with CRLF lets a first boundary at offset 0 match like any other.
 */
#include "multipart.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum mp_state {
    MP_PREAMBLE = 0,  /* before the first boundary: skipped */
    MP_BOUNDARY_LINE, /* a delimiter matched: "--", padding or CRLF next */
    MP_CLOSE_DASH,    /* one '-' after the delimiter: the second next */
    MP_PADDING,       /* spaces or tabs after the delimiter */
    MP_PADDING_LF,    /* CR after the delimiter line: LF next */
    MP_HEADERS,       /* collecting a part's header block */
    MP_DATA_SCAN,     /* part data up to the next delimiter */
    MP_DATA_COUNTED,  /* part data of a known Content-Length */
    MP_COUNTED_DELIM, /* the delimiter must follow the counted data */
    MP_EPILOGUE,      /* after the close delimiter: ignored */
    MP_FAILED,
};

struct multipart_parser {
    struct multipart_callbacks cb;
    enum mp_state state;
    int error;        /* the sticky failure of MP_FAILED */
    char reason[256]; /* its text */
    char delim[4 + MULTIPART_BOUNDARY_MAX];
    size_t delim_len;
    size_t match;      /* bytes of delim matched so far */
    uint64_t preamble; /* preamble bytes skipped */
    uint64_t fed;      /* body bytes fed so far */
    char *headers;     /* MULTIPART_HEADER_MAX + 1 bytes */
    size_t header_len;
    size_t line_start;  /* where the current header line starts */
    bool in_part;       /* begun and not yet ended */
    uint64_t remaining; /* MP_DATA_COUNTED: data bytes to come */
    struct multipart_part part;
    unsigned next_index;
    unsigned parts_done;
};

static void mp_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void mp_err(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || err_len == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

/* Copies up to 40 bytes of server text into @out as printable ASCII
 * ('?' for the rest), for error messages. */
static const char *mp_show(const char *text, size_t len, char out[48])
{
    size_t n = len < 40 ? len : 40;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)text[i];
        out[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    if (len > n) {
        memcpy(out + n, "...", 4);
    } else {
        out[n] = '\0';
    }
    return out;
}

/* ------------------------------------------------------------------ */
/* Media types (RFC 2045 5.1)                                          */
/* ------------------------------------------------------------------ */

static bool mp_is_space(char c)
{
    return c == ' ' || c == '\t';
}

static const char *mp_skip_space(const char *s)
{
    while (mp_is_space(*s))
        s++;
    return s;
}

/* RFC 2045 tspecials and controls end an unquoted token. For values we
 * are more lenient: servers write unquoted boundaries with '=' or ':'. */
static bool mp_is_token_char(char c)
{
    return (unsigned char)c > 0x20 && (unsigned char)c < 0x7f &&
           strchr("()<>@,;:\\\"/[]?=", c) == NULL;
}

static bool mp_is_value_char(char c)
{
    return (unsigned char)c > 0x20 && c != ';' && c != 0x7f;
}

static void mp_lower(char *s)
{
    for (; *s != '\0'; s++) {
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
    }
}

static bool mp_uid_shaped(const char *s)
{
    size_t n = strlen(s);

    return n > 0 && n <= MULTIPART_UID_MAX && strspn(s, "0123456789.") == n;
}

/* Reads a parameter value (token or quoted string) at *@ps into @out
 * (capacity @cap). Sets *@too_long when it did not fit. Returns 0 or
 * -EBADMSG for an unterminated quoted string. */
static int mp_read_value(const char **ps, char *out, size_t cap, bool *too_long,
                         char *err, size_t err_len)
{
    const char *s = *ps;
    size_t n = 0;

    *too_long = false;
    if (*s == '"') {
        s++;
        for (;;) {
            char c = *s;
            if (c == '\0') {
                mp_err(err, err_len, "unterminated quoted string");
                return -EBADMSG;
            }
            if (c == '"') {
                s++;
                break;
            }
            if (c == '\\' && s[1] != '\0') {
                s++;
                c = *s;
            }
            if (n + 1 < cap)
                out[n++] = c;
            else
                *too_long = true;
            s++;
        }
    } else {
        while (mp_is_value_char(*s)) {
            if (n + 1 < cap)
                out[n++] = *s;
            else
                *too_long = true;
            s++;
        }
    }
    out[n] = '\0';
    *ps = s;
    return 0;
}

/* Checks a boundary value: 1..MULTIPART_BOUNDARY_MAX printable ASCII
 * characters, not ending in a space (RFC 2046 5.1.1). */
static int mp_check_boundary(const char *b, bool too_long, char *err,
                             size_t err_len)
{
    size_t n = strlen(b);

    if (too_long || n > MULTIPART_BOUNDARY_MAX) {
        mp_err(err, err_len, "boundary longer than %d characters",
               MULTIPART_BOUNDARY_MAX);
        return -EBADMSG;
    }
    if (n == 0) {
        mp_err(err, err_len, "empty boundary");
        return -EBADMSG;
    }
    for (size_t i = 0; i < n; i++) {
        if (b[i] < 0x20 || b[i] > 0x7e) {
            mp_err(err, err_len, "boundary holds byte 0x%02x",
                   (unsigned char)b[i]);
            return -EBADMSG;
        }
    }
    if (b[n - 1] == ' ') {
        mp_err(err, err_len, "boundary ends in a space");
        return -EBADMSG;
    }
    return 0;
}

/* Stores parameter @name = @value into @t. Returns 0 or -EBADMSG. */
static int mp_set_param(struct multipart_media_type *t, const char *name,
                        const char *value, bool too_long, bool seen[3],
                        char *err, size_t err_len)
{
    int which = strcasecmp(name, "boundary") == 0          ? 0
                : strcasecmp(name, "type") == 0            ? 1
                : strcasecmp(name, "transfer-syntax") == 0 ? 2
                                                           : -1;
    if (which < 0)
        return 0; /* start, start-info, charset, q...: not ours */
    if (seen[which]) {
        mp_err(err, err_len, "duplicate %s parameter", name);
        return -EBADMSG;
    }
    seen[which] = true;
    if (which == 0) {
        int r = mp_check_boundary(value, too_long, err, err_len);
        if (r < 0)
            return r;
        memcpy(t->boundary, value, strlen(value) + 1);
    } else if (which == 1) {
        if (too_long || strlen(value) > MULTIPART_TYPE_MAX) {
            mp_err(err, err_len, "type parameter longer than %d characters",
                   MULTIPART_TYPE_MAX);
            return -EBADMSG;
        }
        memcpy(t->related_type, value, strlen(value) + 1);
        mp_lower(t->related_type);
    } else if (!too_long && mp_uid_shaped(value)) {
        memcpy(t->transfer_syntax, value, strlen(value) + 1);
    }
    return 0;
}

int multipart_media_type_parse(const char *value,
                               struct multipart_media_type *ret_type, char *err,
                               size_t err_len)
{
    struct multipart_media_type t;
    bool seen[3] = { false, false, false };
    char show[48];
    const char *s = mp_skip_space(value);
    const char *start = s;
    size_t n;

    memset(&t, 0, sizeof(t));
    while (mp_is_token_char(*s))
        s++;
    if (*s != '/' || s == start) {
        mp_err(err, err_len, "'%s' is not a type/subtype",
               mp_show(value, strlen(value), show));
        return -EBADMSG;
    }
    s++;
    const char *sub = s;
    while (mp_is_token_char(*s))
        s++;
    n = (size_t)(s - start);
    if (s == sub || n > MULTIPART_TYPE_MAX) {
        mp_err(err, err_len, "'%s' is not a type/subtype",
               mp_show(value, strlen(value), show));
        return -EBADMSG;
    }
    memcpy(t.type, start, n);
    t.type[n] = '\0';
    mp_lower(t.type);

    for (;;) {
        char name[32];
        char val[MULTIPART_TYPE_MAX + 1];
        bool too_long;

        s = mp_skip_space(s);
        if (*s == '\0')
            break;
        if (*s != ';') {
            mp_err(err, err_len, "unexpected '%c' in media type '%s'", *s,
                   mp_show(value, strlen(value), show));
            return -EBADMSG;
        }
        s = mp_skip_space(s + 1);
        if (*s == ';' || *s == '\0')
            continue;
        start = s;
        while (mp_is_token_char(*s))
            s++;
        n = (size_t)(s - start);
        s = mp_skip_space(s);
        if (*s != '=' || n == 0) {
            /* Not name=value: skip this parameter. */
            while (*s != '\0' && *s != ';')
                s++;
            continue;
        }
        s = mp_skip_space(s + 1);
        if (mp_read_value(&s, val, sizeof(val), &too_long, err, err_len) < 0)
            return -EBADMSG;
        if (n >= sizeof(name))
            continue; /* longer than any name we know */
        memcpy(name, start, n);
        name[n] = '\0';
        if (mp_set_param(&t, name, val, too_long, seen, err, err_len) < 0)
            return -EBADMSG;
    }
    *ret_type = t;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Parser                                                              */
/* ------------------------------------------------------------------ */

int multipart_new(const char *content_type,
                  const struct multipart_callbacks *callbacks,
                  struct multipart_parser **ret_parser, char *err,
                  size_t err_len)
{
    struct multipart_media_type t;
    struct multipart_parser *p;
    char reason[160];

    if (multipart_media_type_parse(content_type, &t, reason, sizeof(reason)) <
        0) {
        mp_err(err, err_len, "Content-Type: %s", reason);
        return -EBADMSG;
    }
    if (strncmp(t.type, "multipart/", 10) != 0) {
        mp_err(err, err_len, "Content-Type is %s, not multipart", t.type);
        return -EBADMSG;
    }
    if (t.boundary[0] == '\0') {
        mp_err(err, err_len, "Content-Type %s has no boundary parameter",
               t.type);
        return -EBADMSG;
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    p->headers = malloc(MULTIPART_HEADER_MAX + 1);
    if (p->headers == NULL) {
        free(p);
        return -ENOMEM;
    }
    p->cb = *callbacks;
    p->delim_len = 4 + strlen(t.boundary);
    memcpy(p->delim, "\r\n--", 4);
    memcpy(p->delim + 4, t.boundary, strlen(t.boundary));
    /* As if the body began with CRLF: "--boundary" at offset 0 matches. */
    p->state = MP_PREAMBLE;
    p->match = 2;
    *ret_parser = p;
    return 0;
}

void multipart_free(struct multipart_parser *parser)
{
    if (parser == NULL)
        return;
    free(parser->headers);
    free(parser);
}

unsigned multipart_parts_done(const struct multipart_parser *parser)
{
    return parser->parts_done;
}

bool multipart_closed(const struct multipart_parser *parser)
{
    return parser->state == MP_EPILOGUE;
}

/* "part 3" (counted from 1) for messages. */
static unsigned mp_number(const struct multipart_parser *p)
{
    return p->part.index + 1;
}

/* Hands out @n data bytes of the current part (or counts preamble). */
static int mp_data(struct multipart_parser *p, const void *data, size_t n,
                   bool emit)
{
    if (n == 0)
        return 0;
    if (!emit) {
        p->preamble += n;
        if (p->preamble > MULTIPART_PREAMBLE_MAX) {
            mp_err(p->reason, sizeof(p->reason),
                   "no boundary in the first %d bytes of the body",
                   MULTIPART_PREAMBLE_MAX);
            return -EBADMSG;
        }
        return 0;
    }
    p->part.received += n;
    if (p->cb.part_data == NULL)
        return 0;
    return p->cb.part_data(p->cb.ctx, data, n, p->reason, sizeof(p->reason));
}

/*
 * Scans [*@pin, @end) for the delimiter, handing out (if @emit) or
 * skipping the bytes before it. On a full match, moves to
 * MP_BOUNDARY_LINE and leaves *@pin after it; otherwise consumes all.
 */
static int mp_scan(struct multipart_parser *p, const unsigned char **pin,
                   const unsigned char *end, bool emit)
{
    const unsigned char *in = *pin;
    const unsigned char *run;
    const unsigned char *mstart = NULL;
    const unsigned char *delim = (const unsigned char *)p->delim;
    int r;

    /* A match begun in an earlier chunk: its bytes are not in @in. */
    if (p->match > 0) {
        while (in < end && p->match < p->delim_len && *in == delim[p->match]) {
            p->match++;
            in++;
        }
        if (p->match == p->delim_len) {
            p->match = 0;
            p->state = MP_BOUNDARY_LINE;
            *pin = in;
            return 0;
        }
        if (in == end) {
            *pin = in;
            return 0;
        }
        /* Not the delimiter: the matched bytes were data. */
        r = mp_data(p, p->delim, p->match, emit);
        p->match = 0;
        if (r < 0)
            return r;
    }
    run = in;
    while (in < end) {
        if (p->match == 0) {
            const unsigned char *cr = memchr(in, '\r', (size_t)(end - in));
            if (cr == NULL) {
                in = end;
                break;
            }
            mstart = cr;
            p->match = 1;
            in = cr + 1;
        } else if (*in == delim[p->match]) {
            p->match++;
            in++;
            if (p->match == p->delim_len) {
                p->match = 0;
                p->state = MP_BOUNDARY_LINE;
                *pin = in;
                return mp_data(p, run, (size_t)(mstart - run), emit);
            }
        } else {
            /* [mstart, in) are data; look at *in afresh. */
            p->match = 0;
        }
    }
    *pin = end;
    /* A partial match at the end is held (it is a prefix of delim). */
    return mp_data(p, run, (size_t)((p->match > 0 ? mstart : end) - run), emit);
}

/* Where we are, for messages: "after part 2" or "at the first boundary". */
static void mp_where(const struct multipart_parser *p, char *out, size_t len)
{
    if (p->in_part)
        snprintf(out, len, "after part %u", mp_number(p));
    else if (p->next_index == 0)
        snprintf(out, len, "at the first boundary");
    else
        snprintf(out, len, "after part %u", p->next_index);
}

/* The boundary line is complete: ends the current part, if any. */
static int mp_end_part(struct multipart_parser *p)
{
    int r = 0;

    if (!p->in_part)
        return 0;
    p->in_part = false;
    p->parts_done++;
    if (p->cb.part_end != NULL)
        r = p->cb.part_end(p->cb.ctx, &p->part, p->reason, sizeof(p->reason));
    p->part.content_location = NULL;
    return r;
}

static int mp_boundary_garbage(struct multipart_parser *p, unsigned char c)
{
    char where[48];

    mp_where(p, where, sizeof(where));
    mp_err(p->reason, sizeof(p->reason),
           "boundary %s is followed by byte 0x%02x, not CRLF or \"--\"", where,
           c);
    return -EBADMSG;
}

/* One byte of the boundary line (after the delimiter). */
static int mp_boundary_byte(struct multipart_parser *p, unsigned char c)
{
    switch (p->state) {
    case MP_BOUNDARY_LINE:
        if (c == '-') {
            p->state = MP_CLOSE_DASH;
            return 0;
        }
        __attribute__((fallthrough)); /* padding or the line end */
    case MP_PADDING:
        if (c == ' ' || c == '\t') {
            p->state = MP_PADDING;
            return 0;
        }
        if (c == '\r') {
            p->state = MP_PADDING_LF;
            return 0;
        }
        if (c != '\n')
            return mp_boundary_garbage(p, c);
        break;
    case MP_PADDING_LF:
        if (c != '\n')
            return mp_boundary_garbage(p, c);
        break;
    case MP_CLOSE_DASH:
        if (c != '-')
            return mp_boundary_garbage(p, c);
        p->state = MP_EPILOGUE;
        return mp_end_part(p);
    default:
        break;
    }
    /* Line end: another part follows. */
    p->state = MP_HEADERS;
    p->header_len = 0;
    p->line_start = 0;
    return mp_end_part(p);
}

/* Parses a decimal Content-Length. */
static int mp_parse_length(struct multipart_parser *p, const char *v)
{
    char show[48];
    int64_t n = 0;
    size_t len = strlen(v);

    if (len == 0 || strspn(v, "0123456789") != len)
        goto out_bad;
    for (size_t i = 0; i < len; i++) {
        int d = v[i] - '0';
        if (n > (INT64_MAX - d) / 10)
            goto out_bad;
        n = n * 10 + d;
    }
    p->part.content_length = n;
    return 0;
out_bad:
    mp_err(p->reason, sizeof(p->reason),
           "part %u: Content-Length '%s' is not a byte count", mp_number(p),
           mp_show(v, len, show));
    return -EBADMSG;
}

/* One "Name: value" header line (NUL-terminated, unfolded). */
static int mp_header_line(struct multipart_parser *p, char *line, bool seen[3])
{
    char show[48];
    char reason[160];
    char *colon = strchr(line, ':');
    char *name_end;
    char *value;

    if (colon == NULL) {
        mp_err(p->reason, sizeof(p->reason),
               "part %u: header line '%s' has no ':'", mp_number(p),
               mp_show(line, strlen(line), show));
        return -EBADMSG;
    }
    name_end = colon;
    while (name_end > line && mp_is_space(name_end[-1]))
        name_end--;
    *name_end = '\0';
    if (line[0] == '\0') {
        mp_err(p->reason, sizeof(p->reason),
               "part %u: header line with an empty name", mp_number(p));
        return -EBADMSG;
    }
    value = (char *)mp_skip_space(colon + 1);
    size_t vlen = strlen(value);
    while (vlen > 0 && mp_is_space(value[vlen - 1]))
        value[--vlen] = '\0';

    int which = strcasecmp(line, "Content-Type") == 0       ? 0
                : strcasecmp(line, "Content-Length") == 0   ? 1
                : strcasecmp(line, "Content-Location") == 0 ? 2
                                                            : -1;
    if (which >= 0 && seen[which]) {
        mp_err(p->reason, sizeof(p->reason), "part %u: duplicate %s header",
               mp_number(p), line);
        return -EBADMSG;
    }
    if (which >= 0)
        seen[which] = true;
    switch (which) {
    case 0:
        if (multipart_media_type_parse(value, &p->part.content_type, reason,
                                       sizeof(reason)) < 0) {
            mp_err(p->reason, sizeof(p->reason), "part %u: Content-Type: %s",
                   mp_number(p), reason);
            return -EBADMSG;
        }
        p->part.has_content_type = true;
        return 0;
    case 1:
        return mp_parse_length(p, value);
    case 2:
        p->part.content_location = value;
        return 0;
    default:
        break;
    }
    if (strcasecmp(line, "Content-Transfer-Encoding") == 0 &&
        strcasecmp(value, "binary") != 0 && strcasecmp(value, "8bit") != 0 &&
        strcasecmp(value, "7bit") != 0) {
        mp_err(p->reason, sizeof(p->reason),
               "part %u: Content-Transfer-Encoding '%s' is not supported "
               "(DICOMweb parts are binary)",
               mp_number(p), mp_show(value, vlen, show));
        return -EBADMSG;
    }
    return 0;
}

/*
 * The header block of a part is complete in p->headers (header_len bytes,
 * the final empty line included): unfolds it, reads the headers we know
 * and begins the part.
 */
static int mp_begin_part(struct multipart_parser *p)
{
    char *h = p->headers;
    size_t len = p->header_len;
    size_t w = 0;
    bool seen[3] = { false, false, false };
    bool have_line = false;
    int r;

    memset(&p->part, 0, sizeof(p->part));
    p->part.index = p->next_index++;
    p->part.content_length = -1;

    /* Unfold in place into NUL-separated logical lines. */
    for (size_t i = 0; i < len;) {
        char *nl = memchr(h + i, '\n', len - i);
        size_t end = (size_t)(nl - h);
        size_t line_end = end;
        if (line_end > i && h[line_end - 1] == '\r')
            line_end--;
        if (line_end == i) {
            break; /* the empty line that ends the block */
        }
        if (mp_is_space(h[i])) {
            if (!have_line) {
                mp_err(p->reason, sizeof(p->reason),
                       "part %u: header block starts with a continuation "
                       "line",
                       mp_number(p));
                return -EBADMSG;
            }
            h[w - 1] = ' '; /* the previous line's NUL becomes a space */
            while (i < line_end && mp_is_space(h[i]))
                i++;
        }
        memmove(h + w, h + i, line_end - i);
        w += line_end - i;
        h[w++] = '\0';
        have_line = true;
        i = end + 1;
    }
    for (size_t i = 0; i < w;) {
        size_t n = strlen(h + i);
        r = mp_header_line(p, h + i, seen);
        if (r < 0)
            return r;
        i += n + 1;
    }
    p->in_part = true;
    if (p->cb.part_begin != NULL) {
        r = p->cb.part_begin(p->cb.ctx, &p->part, p->reason, sizeof(p->reason));
        if (r < 0)
            return r;
    }
    if (p->part.content_length >= 0) {
        p->remaining = (uint64_t)p->part.content_length;
        p->state = p->remaining > 0 ? MP_DATA_COUNTED : MP_COUNTED_DELIM;
    } else {
        p->state = MP_DATA_SCAN;
    }
    p->match = 0;
    return 0;
}

/* Collects header bytes from [*@pin, @end) up to the end of the block. */
static int mp_headers(struct multipart_parser *p, const unsigned char **pin,
                      const unsigned char *end)
{
    const unsigned char *in = *pin;

    while (in < end) {
        const unsigned char *nl = memchr(in, '\n', (size_t)(end - in));
        size_t n = (size_t)((nl != NULL ? nl + 1 : end) - in);

        if (p->header_len + n > MULTIPART_HEADER_MAX) {
            mp_err(p->reason, sizeof(p->reason),
                   "part %u: header block longer than %d bytes",
                   p->next_index + 1, MULTIPART_HEADER_MAX);
            return -EBADMSG;
        }
        if (memchr(in, '\0', n) != NULL) {
            mp_err(p->reason, sizeof(p->reason),
                   "part %u: NUL byte in the header block", p->next_index + 1);
            return -EBADMSG;
        }
        memcpy(p->headers + p->header_len, in, n);
        p->header_len += n;
        in += n;
        if (nl == NULL)
            break;
        /* A line ended: was it empty (the block's end)? */
        size_t line_len = p->header_len - p->line_start;
        p->line_start = p->header_len;
        if (line_len == 1 ||
            (line_len == 2 && p->headers[p->header_len - 2] == '\r')) {
            *pin = in;
            return mp_begin_part(p);
        }
    }
    *pin = in;
    return 0;
}

/* Part data of a known length. */
static int mp_counted(struct multipart_parser *p, const unsigned char **pin,
                      const unsigned char *end)
{
    size_t avail = (size_t)(end - *pin);
    size_t n = p->remaining < avail ? (size_t)p->remaining : avail;
    int r = mp_data(p, *pin, n, true);

    *pin += n;
    p->remaining -= n;
    if (p->remaining == 0) {
        p->state = MP_COUNTED_DELIM;
        p->match = 0;
    }
    return r;
}

/* The delimiter that must follow counted data, byte by byte. */
static int mp_counted_delim(struct multipart_parser *p,
                            const unsigned char **pin, const unsigned char *end)
{
    const unsigned char *in = *pin;

    while (in < end && p->match < p->delim_len) {
        if (*in != (unsigned char)p->delim[p->match]) {
            mp_err(p->reason, sizeof(p->reason),
                   "part %u: its Content-Length of %lld bytes is not "
                   "followed by the boundary",
                   mp_number(p), (long long)p->part.content_length);
            return -EBADMSG;
        }
        p->match++;
        in++;
    }
    if (p->match == p->delim_len) {
        p->match = 0;
        p->state = MP_BOUNDARY_LINE;
    }
    *pin = in;
    return 0;
}

static int mp_fail(struct multipart_parser *p, int r, char *err, size_t err_len)
{
    p->state = MP_FAILED;
    p->error = r;
    mp_err(err, err_len, "%s", p->reason);
    return r;
}

int multipart_feed(struct multipart_parser *p, const void *data, size_t len,
                   char *err, size_t err_len)
{
    const unsigned char *in = data;
    const unsigned char *end = in + len;
    int r = 0;

    if (p->state == MP_FAILED)
        return mp_fail(p, p->error, err, err_len);
    p->fed += len;
    while (in < end && r == 0) {
        switch (p->state) {
        case MP_PREAMBLE:
            r = mp_scan(p, &in, end, false);
            break;
        case MP_DATA_SCAN:
            r = mp_scan(p, &in, end, true);
            break;
        case MP_BOUNDARY_LINE:
        case MP_CLOSE_DASH:
        case MP_PADDING:
        case MP_PADDING_LF:
            r = mp_boundary_byte(p, *in++);
            break;
        case MP_HEADERS:
            r = mp_headers(p, &in, end);
            break;
        case MP_DATA_COUNTED:
            r = mp_counted(p, &in, end);
            break;
        case MP_COUNTED_DELIM:
            r = mp_counted_delim(p, &in, end);
            break;
        case MP_EPILOGUE:
        case MP_FAILED:
            in = end;
            break;
        }
    }
    if (r < 0)
        return mp_fail(p, r, err, err_len);
    return 0;
}

int multipart_finish(struct multipart_parser *p, char *err, size_t err_len)
{
    char where[48];

    switch (p->state) {
    case MP_EPILOGUE:
        return 0;
    case MP_FAILED:
        return mp_fail(p, p->error, err, err_len);
    case MP_PREAMBLE:
        if (p->fed > 0) {
            /* Not a short body: one that is not multipart at all. */
            mp_err(p->reason, sizeof(p->reason),
                   "no boundary in the %llu bytes of the body",
                   (unsigned long long)p->fed);
            return mp_fail(p, -EBADMSG, err, err_len);
        }
        mp_err(p->reason, sizeof(p->reason),
               "truncated: the body ended before the first boundary");
        break;
    case MP_BOUNDARY_LINE:
    case MP_CLOSE_DASH:
    case MP_PADDING:
    case MP_PADDING_LF:
        mp_where(p, where, sizeof(where));
        mp_err(p->reason, sizeof(p->reason),
               "truncated: the body ended in the boundary line %s", where);
        break;
    case MP_HEADERS:
        mp_err(p->reason, sizeof(p->reason),
               "truncated: the body ended in the headers of part %u",
               p->next_index + 1);
        break;
    case MP_DATA_SCAN:
        mp_err(p->reason, sizeof(p->reason),
               "truncated: the body ended inside part %u after %llu data "
               "bytes, without its closing boundary",
               mp_number(p), (unsigned long long)p->part.received);
        break;
    case MP_DATA_COUNTED:
        mp_err(p->reason, sizeof(p->reason),
               "truncated: the body ended inside part %u after %llu of its "
               "%lld bytes",
               mp_number(p), (unsigned long long)p->part.received,
               (long long)p->part.content_length);
        break;
    case MP_COUNTED_DELIM:
        mp_err(p->reason, sizeof(p->reason),
               "truncated: the body ended after the data of part %u, "
               "before its closing boundary",
               mp_number(p));
        break;
    }
    return mp_fail(p, -ENODATA, err, err_len);
}
