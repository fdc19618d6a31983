/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_multipart - the streamed multipart reader (web/multipart.h): media
 * type parameters; bodies fed whole, byte by byte, split at every point
 * and at every pair of points of small bodies, and at random; CRLF edge
 * cases (boundary text inside data without the CRLF "--" prefix, data
 * ending in CR, "--boundary" inside data, partial delimiters across
 * splits); missing, duplicate and absurd headers; no parts; truncation
 * everywhere; callbacks that fail; memory independent of the part size.
 */
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "web/multipart.h"

/* ------------------------------------------------------------------ */
/* A recorder of parser events                                         */
/* ------------------------------------------------------------------ */

/* Events as text: "[B idx type ts cl loc]" + the data bytes (consecutive
 * data calls joined, so a log does not depend on chunk splits) + "[E idx
 * received]". */
struct rec {
    char *log;
    size_t len;
    size_t cap;
    bool in_part;
    bool bad_call;     /* data outside a part, or of length 0 */
    int fail_begin_at; /* part index whose begin fails; -1 none */
    int fail_errno;
    size_t max_alloc_growth; /* heap growth seen inside data callbacks */
    size_t heap_base;
};

static void rec_add(struct rec *r, const void *data, size_t n)
{
    if (r->len + n + 1 > r->cap) {
        size_t cap = (r->len + n + 1) * 2;
        char *grown = realloc(r->log, cap);
        if (grown == NULL)
            abort();
        r->log = grown;
        r->cap = cap;
    }
    memcpy(r->log + r->len, data, n);
    r->len += n;
    r->log[r->len] = '\0';
}

static void rec_init(struct rec *r)
{
    memset(r, 0, sizeof(*r));
    r->fail_begin_at = -1;
    rec_add(r, "", 0);
}

static void rec_free(struct rec *r)
{
    free(r->log);
    r->log = NULL;
}

static int on_begin(void *ctx, const struct multipart_part *p, char *err,
                    size_t err_len)
{
    struct rec *r = ctx;
    char line[512];

    if (r->in_part)
        r->bad_call = true;
    if ((int)p->index == r->fail_begin_at) {
        snprintf(err, err_len, "refused part %u", p->index + 1);
        return r->fail_errno;
    }
    r->in_part = true;
    snprintf(line, sizeof(line), "[B %u %s %s %lld %s]", p->index,
             p->has_content_type ? p->content_type.type : "-",
             p->content_type.transfer_syntax[0] != '\0'
                 ? p->content_type.transfer_syntax
                 : "-",
             (long long)p->content_length,
             p->content_location != NULL ? p->content_location : "-");
    rec_add(r, line, strlen(line));
    return 0;
}

static int on_data(void *ctx, const void *data, size_t len, char *err,
                   size_t err_len)
{
    struct rec *r = ctx;

    (void)err;
    (void)err_len;
    if (!r->in_part || len == 0)
        r->bad_call = true;
    if (r->heap_base != 0) {
        struct mallinfo2 mi = mallinfo2();
        size_t growth =
            mi.uordblks > r->heap_base ? mi.uordblks - r->heap_base : 0;
        if (growth > r->max_alloc_growth)
            r->max_alloc_growth = growth;
        return 0; /* the big-part test keeps no log */
    }
    rec_add(r, data, len);
    return 0;
}

static int on_end(void *ctx, const struct multipart_part *p, char *err,
                  size_t err_len)
{
    struct rec *r = ctx;
    char line[64];

    (void)err;
    (void)err_len;
    if (!r->in_part)
        r->bad_call = true;
    r->in_part = false;
    snprintf(line, sizeof(line), "[E %u %llu]", p->index,
             (unsigned long long)p->received);
    rec_add(r, line, strlen(line));
    return 0;
}

/* The outcome of one parse. */
struct outcome {
    int feed; /* first failing feed, or 0 */
    int finish;
    unsigned parts;
    char err[256];
    struct rec rec;
};

/* Parses @body (@len bytes) cut at the sorted points @cuts[0..ncuts). */
static void parse_cuts(const char *ct, const char *body, size_t len,
                       const size_t *cuts, size_t ncuts, struct outcome *out)
{
    struct multipart_callbacks cb = { on_begin, on_data, on_end, NULL };
    struct multipart_parser *p = NULL;
    size_t at = 0;

    memset(out, 0, sizeof(*out));
    rec_init(&out->rec);
    cb.ctx = &out->rec;
    if (multipart_new(ct, &cb, &p, out->err, sizeof(out->err)) < 0) {
        out->feed = -1000;
        return;
    }
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : len;
        int r =
            multipart_feed(p, body + at, to - at, out->err, sizeof(out->err));
        if (r < 0 && out->feed == 0)
            out->feed = r;
        at = to;
    }
    out->finish = multipart_finish(p, out->err, sizeof(out->err));
    out->parts = multipart_parts_done(p);
    multipart_free(p);
}

static void parse_whole(const char *ct, const char *body, size_t len,
                        struct outcome *out)
{
    parse_cuts(ct, body, len, NULL, 0, out);
}

static bool same_outcome(const struct outcome *a, const struct outcome *b)
{
    return a->feed == b->feed && a->finish == b->finish &&
           a->parts == b->parts && a->rec.len == b->rec.len &&
           memcmp(a->rec.log, b->rec.log, a->rec.len) == 0 &&
           !a->rec.bad_call && !b->rec.bad_call;
}

static void outcome_free(struct outcome *o)
{
    rec_free(&o->rec);
}

/* How thoroughly check_splits() cuts a body. */
enum splits {
    SPLITS_RANDOM, /* byte by byte and random cuts */
    SPLITS_SINGLE, /* ...and every single cut */
    SPLITS_PAIRS,  /* ...and every pair of cuts */
};

/* Checks that splits of @body give the outcome of the whole parse. */
static void check_splits(const char *what, const char *ct, const char *body,
                         size_t len, enum splits mode)
{
    struct outcome whole;
    struct outcome got;
    size_t mismatches = 0;
    bool pairs = mode == SPLITS_PAIRS;

    parse_whole(ct, body, len, &whole);
    for (size_t i = 0; mode != SPLITS_RANDOM && i <= len; i++) {
        parse_cuts(ct, body, len, &i, 1, &got);
        if (!same_outcome(&whole, &got))
            mismatches++;
        outcome_free(&got);
        for (size_t j = i; pairs && j <= len; j++) {
            size_t cuts[2] = { i, j };
            parse_cuts(ct, body, len, cuts, 2, &got);
            if (!same_outcome(&whole, &got))
                mismatches++;
            outcome_free(&got);
        }
    }
    size_t *every = malloc((len + 1) * sizeof(*every));
    for (size_t i = 0; i < len; i++)
        every[i] = i;
    parse_cuts(ct, body, len, every, len, &got);
    CHECK_MSG(same_outcome(&whole, &got), "%s: byte by byte", what);
    outcome_free(&got);

    /* Random splits, reproducible. */
    uint32_t seed = 12345;
    for (int round = 0; round < 300; round++) {
        size_t n = 0;
        for (size_t i = 1; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            if ((seed >> 16) % 7 == 0)
                every[n++] = i;
        }
        parse_cuts(ct, body, len, every, n, &got);
        if (!same_outcome(&whole, &got))
            mismatches++;
        outcome_free(&got);
    }
    free(every);
    CHECK_MSG(mismatches == 0, "%s: %zu splits differ", what, mismatches);
    outcome_free(&whole);
}

#define CT "multipart/related; type=\"application/dicom\"; boundary=XyZ"

/* ------------------------------------------------------------------ */
/* Media types                                                         */
/* ------------------------------------------------------------------ */

static void test_media_types(void)
{
    struct multipart_media_type t;
    char err[256];

    CHECK(multipart_media_type_parse(CT, &t, err, sizeof(err)) == 0);
    CHECK(strcmp(t.type, "multipart/related") == 0);
    CHECK(strcmp(t.boundary, "XyZ") == 0);
    CHECK(strcmp(t.related_type, "application/dicom") == 0);

    /* Any order, any case, quoted or not, spaces, unknown parameters. */
    CHECK(multipart_media_type_parse(
              " Multipart/Related ;BOUNDARY = \"a b:c=d\" ; Type=Application/"
              "DICOM; start=\"<x@y>\";",
              &t, err, sizeof(err)) == 0);
    CHECK(strcmp(t.type, "multipart/related") == 0);
    CHECK_MSG(strcmp(t.boundary, "a b:c=d") == 0, "%s", t.boundary);
    CHECK(strcmp(t.related_type, "application/dicom") == 0);

    /* Azure: a GUID, no type=. */
    CHECK(multipart_media_type_parse(
              "multipart/related; boundary=3f0d8a1e-5b7c-4c1e-9a63-"
              "0f4b2c7e9d11",
              &t, err, sizeof(err)) == 0);
    CHECK(strcmp(t.boundary, "3f0d8a1e-5b7c-4c1e-9a63-0f4b2c7e9d11") == 0);
    CHECK(t.related_type[0] == '\0');

    /* Unquoted values with '=' (seen from Java servers). */
    CHECK(multipart_media_type_parse("multipart/related;boundary=--=_Part_1",
                                     &t, err, sizeof(err)) == 0);
    CHECK(strcmp(t.boundary, "--=_Part_1") == 0);

    /* Escapes inside a quoted string. */
    CHECK(multipart_media_type_parse(
              "multipart/related; boundary=\"a\\\"b\\\\c\"", &t, err,
              sizeof(err)) == 0);
    CHECK_MSG(strcmp(t.boundary, "a\"b\\c") == 0, "%s", t.boundary);

    /* A part's type with its transfer syntax, quoted or not. */
    CHECK(multipart_media_type_parse(
              "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.80", &t,
              err, sizeof(err)) == 0);
    CHECK(strcmp(t.type, "application/dicom") == 0);
    CHECK(strcmp(t.transfer_syntax, "1.2.840.10008.1.2.4.80") == 0);
    CHECK(multipart_media_type_parse(
              "application/dicom;Transfer-Syntax=\"1.2.840.10008.1.2.1\"", &t,
              err, sizeof(err)) == 0);
    CHECK(strcmp(t.transfer_syntax, "1.2.840.10008.1.2.1") == 0);
    /* Not a UID: ignored (the data set's (0002,0010) counts). */
    CHECK(multipart_media_type_parse("application/dicom; transfer-syntax=*", &t,
                                     err, sizeof(err)) == 0);
    CHECK(t.transfer_syntax[0] == '\0');
    CHECK(multipart_media_type_parse("application/dicom", &t, err,
                                     sizeof(err)) == 0);
    CHECK(t.boundary[0] == '\0' && t.transfer_syntax[0] == '\0');

    /* Refused, with a reason. */
    static const char *const bad[] = {
        "",
        "multipart",
        "/related",
        "multipart/",
        "multipart/related; boundary=a; boundary=b",
        "multipart/related; type=a/b; TYPE=c/d",
        "multipart/related; boundary=\"\"",
        "multipart/related; boundary=\"ab \"",
        "multipart/related; boundary=\"abc",
        "multipart/related; boundary=\"a\001b\"",
        "multipart/related boundary=abc",
        "multipart/related; boundary=abc def",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        CHECK_MSG(multipart_media_type_parse(bad[i], &t, err, sizeof(err)) ==
                          -EBADMSG &&
                      err[0] != '\0',
                  "'%s' accepted", bad[i]);
    }
    char longb[300];
    memset(longb, 0, sizeof(longb));
    strcpy(longb, "multipart/related; boundary=");
    memset(longb + strlen(longb), 'x', MULTIPART_BOUNDARY_MAX + 1);
    CHECK(multipart_media_type_parse(longb, &t, err, sizeof(err)) == -EBADMSG);
    CHECK(strstr(err, "longer") != NULL);
    longb[strlen(longb) - 1] = '\0'; /* exactly the maximum */
    CHECK(multipart_media_type_parse(longb, &t, err, sizeof(err)) == 0);
    CHECK(strlen(t.boundary) == MULTIPART_BOUNDARY_MAX);
}

static void test_new(void)
{
    struct multipart_callbacks cb = { NULL, NULL, NULL, NULL };
    struct multipart_parser *p = NULL;
    char err[256];

    CHECK(multipart_new("application/dicom", &cb, &p, err, sizeof(err)) ==
          -EBADMSG);
    CHECK(strstr(err, "not multipart") != NULL);
    CHECK(multipart_new("multipart/related; type=\"application/dicom\"", &cb,
                        &p, err, sizeof(err)) == -EBADMSG);
    CHECK(strstr(err, "no boundary") != NULL);
    CHECK(multipart_new("text/html; charset=utf-8", &cb, &p, err,
                        sizeof(err)) == -EBADMSG);
    CHECK(multipart_new("multipart/related; boundary=b", &cb, &p, err,
                        sizeof(err)) == 0);
    multipart_free(p);
    multipart_free(NULL);
}

/* ------------------------------------------------------------------ */
/* Bodies                                                              */
/* ------------------------------------------------------------------ */

static void test_basic(void)
{
    static const char body[] =
        "--XyZ\r\n"
        "Content-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
        "\r\nContent-Length: 4\r\n"
        "Content-Location: /studies/1/series/2/instances/3\r\n"
        "\r\n"
        "ABCD\r\n"
        "--XyZ\r\n"
        "content-type: Application/DICOM\r\n"
        "\r\n"
        "efgh\r\n"
        "--XyZ--\r\n";
    static const char expected[] =
        "[B 0 application/dicom 1.2.840.10008.1.2.1 4 "
        "/studies/1/series/2/instances/3]ABCD[E 0 4]"
        "[B 1 application/dicom - -1 -]efgh[E 1 4]";
    struct outcome o;

    parse_whole(CT, body, sizeof(body) - 1, &o);
    CHECK(o.feed == 0 && o.finish == 0 && o.parts == 2);
    CHECK_MSG(strcmp(o.rec.log, expected) == 0, "%s", o.rec.log);
    CHECK(!o.rec.bad_call);
    outcome_free(&o);
    check_splits("basic", CT, body, sizeof(body) - 1, SPLITS_PAIRS);
}

/* Data that looks like delimiters but is not one. */
static void test_crlf_edges(void)
{
    static const char body[] =
        "preamble text --XyZ mid-line\r\n" /* in the preamble */
        "--XyZ  \t\r\n"                    /* padding after the boundary */
        "Content-Type: application/dicom\r\n\r\n"
        "--XyZ at the start of data\r\n"  /* no CRLF before it */
        "a line\r\n-XyZ\r\n--XyQ\r\n--Xy" /* partial delimiters */
        "\r\r\n--X\n--XyZZ not a CRLF-- boundary: it has more after"
        "--XyZ--" /* no CRLF before: data */
        "\r"      /* the data ends in CR */
        "\r\n--XyZ\r\n"
        "\r\n"          /* a part without headers */
        "\r\n--XyZ\r\n" /* ...and without data */
        "Content-Type: application/dicom\r\n"
        "Content-Length: 16\r\n\r\n"
        "\r\n--XyZ\r\n--XyZ--" /* counted: all data */
        "\r\n--XyZ--   \r\nepilogue\r\n--XyZ\r\nignored";
    struct outcome o;

    parse_whole(CT, body, sizeof(body) - 1, &o);
    CHECK_MSG(o.feed == 0 && o.finish == 0 && o.parts == 3, "%d %d %u %s",
              o.feed, o.finish, o.parts, o.err);
    static const char data0[] =
        "--XyZ at the start of data\r\n"
        "a line\r\n-XyZ\r\n--XyQ\r\n--Xy"
        "\r\r\n--X\n--XyZZ not a CRLF-- boundary: it has more after"
        "--XyZ--\r";
    char expected[1024];
    snprintf(expected, sizeof(expected),
             "[B 0 application/dicom - -1 -]%s[E 0 %zu]"
             "[B 1 - - -1 -][E 1 0]"
             "[B 2 application/dicom - 16 -]\r\n--XyZ\r\n--XyZ--[E 2 16]",
             data0, sizeof(data0) - 1);
    CHECK_MSG(strcmp(o.rec.log, expected) == 0, "%s", o.rec.log);
    outcome_free(&o);
    check_splits("crlf edges", CT, body, sizeof(body) - 1, SPLITS_PAIRS);

    /* "--XyZZ" right after CRLF is a delimiter followed by garbage. */
    static const char longer[] =
        "--XyZ\r\n\r\nabc\r\n--XyZZ\r\n\r\n\r\n--XyZ--";
    parse_whole(CT, longer, sizeof(longer) - 1, &o);
    CHECK(o.feed == -EBADMSG);
    CHECK_MSG(strstr(o.err, "after part 1") != NULL &&
                  strstr(o.err, "0x5a") != NULL,
              "%s", o.err);
    outcome_free(&o);
}

/* The first boundary with a preamble, at offset 0, and with CRLF first. */
static void test_first_boundary(void)
{
    static const char *const bodies[] = {
        "--XyZ\r\n\r\nA\r\n--XyZ--",
        "\r\n--XyZ\r\n\r\nA\r\n--XyZ--",
        "junk\r\n\r\n--XyZ\r\n\r\nA\r\n--XyZ--\r\n",
        "-\r\r\n--XyZ\r\n\r\nA\r\n--XyZ--",
        "--XyZ\n\nA\r\n--XyZ--", /* bare LF line ends */
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        struct outcome o;
        parse_whole(CT, bodies[i], strlen(bodies[i]), &o);
        CHECK_MSG(o.feed == 0 && o.finish == 0 && o.parts == 1 &&
                      strcmp(o.rec.log, "[B 0 - - -1 -]A[E 0 1]") == 0,
                  "body %zu: %s / %s", i, o.rec.log, o.err);
        outcome_free(&o);
        check_splits("first boundary", CT, bodies[i], strlen(bodies[i]),
                     SPLITS_PAIRS);
    }
}

static void test_no_parts(void)
{
    struct outcome o;

    parse_whole(CT, "--XyZ--", 7, &o);
    CHECK(o.feed == 0 && o.finish == 0 && o.parts == 0 && o.rec.len == 0);
    outcome_free(&o);
    parse_whole(CT, "preamble\r\n--XyZ--\r\n", 19, &o);
    CHECK(o.finish == 0 && o.parts == 0);
    outcome_free(&o);

    parse_whole(CT, "", 0, &o);
    CHECK(o.finish == -ENODATA);
    CHECK_MSG(strstr(o.err, "before the first boundary") != NULL, "%s", o.err);
    outcome_free(&o);

    /* Garbage: no boundary at all. */
    size_t n = MULTIPART_PREAMBLE_MAX + 10;
    char *junk = malloc(n);
    memset(junk, 'x', n);
    parse_whole(CT, junk, n, &o);
    CHECK(o.feed == -EBADMSG);
    CHECK_MSG(strstr(o.err, "no boundary in the first") != NULL, "%s", o.err);
    outcome_free(&o);
    free(junk);
    static const char html[] = "<html><body>Service Unavailable</body></html>";
    parse_whole(CT, html, sizeof(html) - 1, &o);
    CHECK(o.feed == 0 && o.finish == -EBADMSG && o.parts == 0);
    CHECK_MSG(strstr(o.err, "no boundary in the 45 bytes") != NULL, "%s",
              o.err);
    outcome_free(&o);
}

/* The body ends early, at every place it can. */
static void test_truncated(void)
{
    static const struct {
        const char *body;
        const char *where;
    } cases[] = {
        { "--XyZ", "boundary line at the first boundary" },
        { "--XyZ\r", "boundary line at the first boundary" },
        { "--XyZ\r\nContent-Type: application/dicom\r\n", "headers of part 1" },
        { "--XyZ\r\n\r\nabc", "inside part 1 after 3 data bytes" },
        { "--XyZ\r\n\r\nabc\r\n--Xy", "inside part 1 after 3 data bytes" },
        { "--XyZ\r\n\r\nabc\r\n--XyZ", "boundary line after part 1" },
        { "--XyZ\r\n\r\nabc\r\n--XyZ-", "boundary line after part 1" },
        { "--XyZ\r\n\r\nabc\r\n--XyZ\r\n", "headers of part 2" },
        { "--XyZ\r\nContent-Length: 10\r\n\r\nabc",
          "inside part 1 after 3 of its 10 bytes" },
        { "--XyZ\r\nContent-Length: 3\r\n\r\nabc\r\n-",
          "after the data of part 1" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct outcome o;
        parse_whole(CT, cases[i].body, strlen(cases[i].body), &o);
        CHECK_MSG(o.feed == 0 && o.finish == -ENODATA &&
                      strstr(o.err, cases[i].where) != NULL &&
                      strncmp(o.err, "truncated", 9) == 0,
                  "case %zu: %d %d %s", i, o.feed, o.finish, o.err);
        /* Nothing of the cut part was ended. */
        CHECK_MSG(o.parts == (i == 7 ? 1u : 0u), "case %zu: %u", i, o.parts);
        outcome_free(&o);
        check_splits("truncated", CT, cases[i].body, strlen(cases[i].body),
                     SPLITS_PAIRS);
    }
}

static void test_content_length(void)
{
    struct outcome o;

    /* The Content-Length bytes are data even when they hold delimiters. */
    static const char counted[] =
        "--XyZ\r\nContent-Length: 9\r\n\r\n\r\n--XyZ--\r\n--XyZ--";
    parse_whole(CT, counted, sizeof(counted) - 1, &o);
    CHECK(o.finish == 0 && o.parts == 1);
    CHECK_MSG(strcmp(o.rec.log, "[B 0 - - 9 -]\r\n--XyZ--[E 0 9]") == 0, "%s",
              o.rec.log);
    outcome_free(&o);
    check_splits("counted", CT, counted, sizeof(counted) - 1, SPLITS_PAIRS);

    /* The boundary must follow the counted bytes. */
    static const char *const wrong[] = {
        "--XyZ\r\nContent-Length: 2\r\n\r\nabc\r\n--XyZ--",
        "--XyZ\r\nContent-Length: 4\r\n\r\nabc\r\n--XyZ--",
        "--XyZ\r\nContent-Length: 3\r\n\r\nabc--XyZ--",
    };
    for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
        parse_whole(CT, wrong[i], strlen(wrong[i]), &o);
        CHECK_MSG(o.feed == -EBADMSG &&
                      strstr(o.err, "not followed by the boundary") != NULL,
                  "%zu: %s", i, o.err);
        outcome_free(&o);
    }
    /* Zero length. */
    parse_whole(CT, "--XyZ\r\nContent-Length: 0\r\n\r\n\r\n--XyZ--", 37, &o);
    CHECK(o.finish == 0 && o.parts == 1);
    CHECK(strcmp(o.rec.log, "[B 0 - - 0 -][E 0 0]") == 0);
    outcome_free(&o);
}

/* Headers: missing, duplicated, absurd. */
static void test_headers(void)
{
    static const struct {
        const char *headers;
        const char *error; /* NULL: accepted */
        const char *log;
    } cases[] = {
        { "Content-Type: application/dicom\r\nContent-Type: text/plain\r\n",
          "duplicate Content-Type", NULL },
        { "Content-Length: 1\r\ncontent-length: 1\r\n",
          "duplicate content-length", NULL },
        { "Content-Location: a\r\nContent-Location: b\r\n",
          "duplicate Content-Location", NULL },
        { "Content-Length: 1a\r\n", "is not a byte count", NULL },
        { "Content-Length: -1\r\n", "is not a byte count", NULL },
        { "Content-Length:\r\n", "is not a byte count", NULL },
        { "Content-Length: 99999999999999999999\r\n", "is not a byte count",
          NULL },
        { "Content-Type application/dicom\r\n", "has no ':'", NULL },
        { ": x\r\n", "empty name", NULL },
        { " folded: at start\r\n", "continuation", NULL },
        { "Content-Type: application/\r\n", "Content-Type", NULL },
        { "Content-Transfer-Encoding: base64\r\n", "base64", NULL },
        /* Accepted. */
        { "Content-Transfer-Encoding: binary\r\nX-Other: 1\r\n", NULL,
          "[B 0 - - -1 -]DATA[E 0 4]" },
        { "Content-Type: application/dicom;\r\n transfer-syntax=1.2.3\r\n",
          NULL, "[B 0 application/dicom 1.2.3 -1 -]DATA[E 0 4]" },
        { "Content-Type : application/dicom\t \r\n"
          "Content-Length:4\r\n",
          NULL, "[B 0 application/dicom - 4 -]DATA[E 0 4]" },
        { "Content-Location:   /x y  \n", NULL,
          "[B 0 - - -1 /x y]DATA[E 0 4]" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[1024];
        struct outcome o;
        int n = snprintf(body, sizeof(body), "--XyZ\r\n%s\r\nDATA\r\n--XyZ--",
                         cases[i].headers);
        parse_whole(CT, body, (size_t)n, &o);
        if (cases[i].error != NULL) {
            CHECK_MSG(o.feed == -EBADMSG &&
                          strstr(o.err, cases[i].error) != NULL &&
                          strstr(o.err, "part 1") != NULL,
                      "case %zu: %d %s", i, o.feed, o.err);
            CHECK(o.parts == 0 && o.rec.len == 0);
        } else {
            CHECK_MSG(o.finish == 0 && strcmp(o.rec.log, cases[i].log) == 0,
                      "case %zu: %s %s", i, o.rec.log, o.err);
        }
        outcome_free(&o);
    }

    /* A header block over the limit, in one piece or many. */
    size_t n = MULTIPART_HEADER_MAX + 100;
    char *body = malloc(n + 64);
    memcpy(body, "--XyZ\r\nX-Big: ", 14);
    memset(body + 14, 'a', n - 14);
    memcpy(body + n, "\r\n\r\nDATA\r\n--XyZ--", 17);
    struct outcome o;
    parse_whole(CT, body, n + 17, &o);
    CHECK(o.feed == -EBADMSG);
    CHECK_MSG(strstr(o.err, "part 1: header block longer than 16384") != NULL,
              "%s", o.err);
    outcome_free(&o);
    size_t cuts[64];
    for (size_t i = 0; i < 64; i++)
        cuts[i] = (i + 1) * 250;
    parse_cuts(CT, body, n + 17, cuts, 64, &o);
    CHECK(o.feed == -EBADMSG && strstr(o.err, "longer than") != NULL);
    outcome_free(&o);
    /* Many short lines are counted as well. */
    size_t at = 7;
    memcpy(body, "--XyZ\r\n", 7);
    while (at < n) {
        memcpy(body + at, "X: y\r\n", 6);
        at += 6;
    }
    memcpy(body + at, "\r\nD\r\n--XyZ--", 12);
    parse_whole(CT, body, at + 12, &o);
    CHECK(o.feed == -EBADMSG && strstr(o.err, "longer than") != NULL);
    outcome_free(&o);
    free(body);

    /* A NUL in the headers. */
    static const char nul[] = "--XyZ\r\nX-A: a\0b\r\n\r\nD\r\n--XyZ--";
    parse_whole(CT, nul, sizeof(nul) - 1, &o);
    CHECK(o.feed == -EBADMSG && strstr(o.err, "NUL") != NULL);
    outcome_free(&o);
}

static void test_boundary_line(void)
{
    static const char *const bad[] = {
        "--XyZx\r\n\r\nA\r\n--XyZ--",
        "--XyZ \tx\r\n\r\nA\r\n--XyZ--",
        "--XyZ\r\r\n\r\nA\r\n--XyZ--",
        "--XyZ\r\n\r\nA\r\n--XyZ-x",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct outcome o;
        parse_whole(CT, bad[i], strlen(bad[i]), &o);
        CHECK_MSG(o.feed == -EBADMSG && strstr(o.err, "not CRLF") != NULL,
                  "%zu: %s", i, o.err);
        CHECK(o.parts == 0);
        outcome_free(&o);
    }
}

/* A callback's error stops everything and sticks. */
static void test_callback_failure(void)
{
    struct multipart_callbacks cb = { on_begin, on_data, on_end, NULL };
    struct multipart_parser *p = NULL;
    struct rec r;
    char err[256];
    static const char body[] =
        "--XyZ\r\n\r\nA\r\n--XyZ\r\n\r\nB\r\n--XyZ\r\n\r\nC\r\n--XyZ--";

    rec_init(&r);
    r.fail_begin_at = 1;
    r.fail_errno = -ENOSPC;
    cb.ctx = &r;
    CHECK(multipart_new(CT, &cb, &p, err, sizeof(err)) == 0);
    CHECK(multipart_feed(p, body, sizeof(body) - 1, err, sizeof(err)) ==
          -ENOSPC);
    CHECK(strcmp(err, "refused part 2") == 0);
    err[0] = '\0';
    CHECK(multipart_feed(p, "x", 1, err, sizeof(err)) == -ENOSPC);
    CHECK(strcmp(err, "refused part 2") == 0);
    CHECK(multipart_finish(p, err, sizeof(err)) == -ENOSPC);
    CHECK(multipart_parts_done(p) == 1);
    CHECK(!multipart_closed(p));
    CHECK(strcmp(r.log, "[B 0 - - -1 -]A[E 0 1]") == 0);
    multipart_free(p);
    rec_free(&r);
}

/* A 64 MiB part goes through without the parser allocating anything. */
static void test_big_part(void)
{
    struct multipart_callbacks cb = { on_begin, on_data, on_end, NULL };
    struct multipart_parser *p = NULL;
    struct rec r;
    char err[256];
    size_t chunk = 65536;
    char *buf = malloc(chunk);
    uint64_t total = 64ull << 20;
    int rc = 0;

    rec_init(&r);
    cb.ctx = &r;
    CHECK(multipart_new(CT, &cb, &p, err, sizeof(err)) == 0);
    rc |= multipart_feed(p, "--XyZ\r\n\r\n", 9, err, sizeof(err));
    /* Data full of CRs and near-delimiters, cut at odd places. */
    for (size_t i = 0; i < chunk; i++)
        buf[i] = (char)"\r\n--XyQ\r\r\n-"[i % 11];
    r.heap_base = mallinfo2().uordblks;
    for (uint64_t sent = 0; sent < total;) {
        size_t n = (size_t)(sent % 7919) + chunk - 7919;
        rc |= multipart_feed(p, buf, n, err, sizeof(err));
        sent += n;
    }
    r.heap_base = 0;
    rc |= multipart_feed(p, "\r\n--XyZ--", 9, err, sizeof(err));
    CHECK(rc == 0);
    CHECK(multipart_finish(p, err, sizeof(err)) == 0);
    CHECK(multipart_parts_done(p) == 1);
    CHECK(!r.bad_call);
    CHECK_MSG(r.max_alloc_growth < 1024, "heap grew by %zu bytes",
              r.max_alloc_growth);
    multipart_free(p);
    rec_free(&r);
    free(buf);
}

/* Many parts, with and without lengths, through random splits. */
static void test_many_parts(void)
{
    char *body = malloc(200000);
    size_t len = 0;
    uint32_t seed = 99;

    len += (size_t)sprintf(body + len, "preamble\r\n");
    for (int i = 0; i < 200; i++) {
        char data[600];
        size_t n = (size_t)(i * 7 % 500);
        for (size_t k = 0; k < n; k++) {
            seed = seed * 1103515245u + 12345u;
            data[k] = "\r\n-XyZ.ab"[(seed >> 16) % 9];
        }
        len += (size_t)sprintf(body + len, "--XyZ\r\n");
        if (i % 2 == 0)
            len += (size_t)sprintf(body + len, "Content-Length: %zu\r\n", n);
        len += (size_t)sprintf(body + len,
                               "Content-Type: application/dicom; "
                               "transfer-syntax=1.2.%d\r\n\r\n",
                               i);
        memcpy(body + len, data, n);
        len += n;
        len += (size_t)sprintf(body + len, "\r\n");
    }
    len += (size_t)sprintf(body + len, "--XyZ--\r\n");
    struct outcome o;
    parse_whole(CT, body, len, &o);
    CHECK_MSG(o.finish == 0 && o.parts == 200, "%d %u %s", o.finish, o.parts,
              o.err);
    outcome_free(&o);
    check_splits("many parts", CT, body, len, SPLITS_RANDOM);
    free(body);
}

int main(void)
{
    test_media_types();
    test_new();
    test_basic();
    test_crlf_edges();
    test_first_boundary();
    test_no_parts();
    test_truncated();
    test_content_length();
    test_headers();
    test_boundary_line();
    test_callback_failure();
    test_big_part();
    test_many_parts();
    return tap_done();
}
