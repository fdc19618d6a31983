/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_multipart - libFuzzer target for web/multipart.c.
 *
 * Input: byte 0 picks the Content-Type (three boundaries, one of a single
 * character so that delimiters come often), byte 1 seeds the chunk
 * splits, the rest is the body. The body is parsed whole and again cut
 * into pieces (byte by byte for one value in four); both parses must give
 * the same events, the same results and keep the contract: begin and end
 * paired, data only inside a part and never empty, a counted part ending
 * with exactly its Content-Length, a 0 from multipart_finish() only after
 * the close delimiter. The same bytes, as a string, go through the media
 * type parser, whose answers must respect its limits. Any breach traps.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "web/multipart.h"

#define CHECK(cond)                                                     \
    do {                                                                \
        if (!(cond)) {                                                  \
            fprintf(stderr, "broken: %s (line %d)\n", #cond, __LINE__); \
            __builtin_trap();                                           \
        }                                                               \
    } while (0)

struct rec {
    unsigned char *log;
    size_t len;
    size_t cap;
    bool in_part;
    unsigned ends;
};

static void rec_add(struct rec *r, const void *data, size_t n)
{
    if (r->len + n > r->cap) {
        size_t cap = (r->len + n) * 2 + 64;
        unsigned char *grown = realloc(r->log, cap);
        CHECK(grown != NULL);
        r->log = grown;
        r->cap = cap;
    }
    memcpy(r->log + r->len, data, n);
    r->len += n;
}

static int on_begin(void *ctx, const struct multipart_part *p, char *err,
                    size_t err_len)
{
    struct rec *r = ctx;
    char line[128];

    (void)err;
    (void)err_len;
    CHECK(!r->in_part);
    CHECK(p->received == 0);
    CHECK(strlen(p->content_type.boundary) <= MULTIPART_BOUNDARY_MAX);
    r->in_part = true;
    int n = snprintf(line, sizeof(line), "[B%u %d %lld]", p->index,
                     p->has_content_type, (long long)p->content_length);
    rec_add(r, line, (size_t)n);
    if (p->content_location != NULL)
        rec_add(r, p->content_location, strlen(p->content_location));
    return 0;
}

static int on_data(void *ctx, const void *data, size_t len, char *err,
                   size_t err_len)
{
    struct rec *r = ctx;

    (void)err;
    (void)err_len;
    CHECK(r->in_part);
    CHECK(len > 0);
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
    CHECK(r->in_part);
    CHECK(p->content_length < 0 || (uint64_t)p->content_length == p->received);
    r->in_part = false;
    r->ends++;
    int n = snprintf(line, sizeof(line), "[E%u %llu]", p->index,
                     (unsigned long long)p->received);
    rec_add(r, line, (size_t)n);
    return 0;
}

struct outcome {
    int feed;
    int finish;
    unsigned parts;
    bool closed;
    struct rec rec;
};

/* Parses @body whole (@split 0), byte by byte (1) or in random pieces
 * drawn from @seed (2). */
static void parse(const char *ct, const uint8_t *body, size_t len, int split,
                  uint32_t seed, struct outcome *out)
{
    struct multipart_callbacks cb = { on_begin, on_data, on_end, NULL };
    struct multipart_parser *p = NULL;
    char err[256];

    memset(out, 0, sizeof(*out));
    cb.ctx = &out->rec;
    CHECK(multipart_new(ct, &cb, &p, err, sizeof(err)) == 0);
    for (size_t at = 0; at < len;) {
        size_t n = len - at;
        if (split == 1) {
            n = 1;
        } else if (split == 2) {
            seed = seed * 1103515245u + 12345u;
            n = (seed & 3) == 0 ? 1 : 1 + (seed >> 16) % 64;
            if (n > len - at)
                n = len - at;
        }
        int r = multipart_feed(p, body + at, n, err, sizeof(err));
        if (r < 0 && out->feed == 0)
            out->feed = r;
        if (r < 0)
            CHECK(err[0] != '\0');
        at += n;
    }
    out->finish = multipart_finish(p, err, sizeof(err));
    out->parts = multipart_parts_done(p);
    out->closed = multipart_closed(p);
    CHECK(out->parts == out->rec.ends);
    CHECK(out->finish != 0 || out->closed);
    CHECK(out->finish == 0 || err[0] != '\0');
    multipart_free(p);
}

static void media_type(const uint8_t *data, size_t size)
{
    struct multipart_media_type t;
    char text[600];
    char err[256];
    size_t n = size < sizeof(text) - 1 ? size : sizeof(text) - 1;

    memcpy(text, data, n);
    text[n] = '\0';
    if (multipart_media_type_parse(text, &t, err, sizeof(err)) != 0) {
        CHECK(err[0] != '\0');
        return;
    }
    CHECK(strchr(t.type, '/') != NULL);
    CHECK(strlen(t.type) <= MULTIPART_TYPE_MAX);
    size_t b = strlen(t.boundary);
    CHECK(b <= MULTIPART_BOUNDARY_MAX);
    for (size_t i = 0; i < b; i++)
        CHECK(t.boundary[i] >= 0x20 && t.boundary[i] <= 0x7e);
    CHECK(b == 0 || t.boundary[b - 1] != ' ');
    CHECK(strlen(t.transfer_syntax) <= MULTIPART_UID_MAX);
    CHECK(strspn(t.transfer_syntax, "0123456789.") ==
          strlen(t.transfer_syntax));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const types[] = {
        "multipart/related; boundary=b",
        "multipart/related; type=\"application/dicom\"; boundary=XyZ",
        "Multipart/Related; BOUNDARY=\"a b\"",
    };
    struct outcome whole;
    struct outcome cut;

    media_type(data, size);
    if (size < 2)
        return 0;
    const char *ct = types[data[0] % 3];
    int split = data[1] % 4 == 0 ? 1 : 2;
    parse(ct, data + 2, size - 2, 0, 0, &whole);
    parse(ct, data + 2, size - 2, split, data[1], &cut);
    CHECK(whole.feed == cut.feed);
    CHECK(whole.finish == cut.finish);
    CHECK(whole.parts == cut.parts);
    CHECK(whole.rec.len == cut.rec.len);
    CHECK(whole.rec.len == 0 ||
          memcmp(whole.rec.log, cut.rec.log, whole.rec.len) == 0);
    free(whole.rec.log);
    free(cut.rec.log);
    return 0;
}
