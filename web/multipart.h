/* SPDX-License-Identifier: Apache-2.0 */
/*
 * multipart - a push parser for multipart bodies (RFC 2046 5.1, RFC 2387
 * multipart/related) as DICOMweb servers send them in WADO-RS answers
 * (PS3.18 8.6.1.2): fed arbitrary chunks as they arrive, it hands out
 * each part's start (its parsed headers), its data in pieces, and its end.
 *
 * What it accepts:
 *   - the boundary from the Content-Type value, quoted or not, parameters
 *     in any order, names in any case, with or without "type=";
 *   - a preamble (up to MULTIPART_PREAMBLE_MAX bytes) and an epilogue
 *     (any length), both ignored; transport padding (spaces and tabs)
 *     after a boundary;
 *   - part headers up to MULTIPART_HEADER_MAX bytes per part, lines ended
 *     by CRLF (or a bare LF), folded lines joined; Content-Type,
 *     Content-Length, Content-Location and Content-Transfer-Encoding are
 *     read, the others ignored;
 *   - parts with Content-Length (exactly that many bytes are data, and the
 *     delimiter must follow them) and parts without (the data ends at the
 *     next CRLF "--" boundary, found across any chunk split).
 * What it refuses (-EBADMSG, the reason in @err): a Content-Type without a
 * usable boundary, no boundary in the first MULTIPART_PREAMBLE_MAX bytes,
 * a boundary line followed by anything but padding and CRLF or "--",
 * header blocks over the limit, header lines without ':', a duplicated
 * Content-Type, Content-Length or Content-Location, a Content-Length that
 * is not a decimal number, a Content-Transfer-Encoding other than binary,
 * 8bit or 7bit (PS3.18 sends binary parts), a part whose Content-Length
 * bytes are not followed by the delimiter. A body that ends before the
 * close delimiter is -ENODATA from multipart_finish() (truncated), with
 * the place named in @err: never a silently short part; a body with bytes
 * but no boundary at all is -EBADMSG there (not multipart).
 *
 * Memory is bounded by the boundary length and MULTIPART_HEADER_MAX, not
 * by part sizes: data is handed out as it arrives, never gathered.
 *
 * Callbacks: part_begin() after a part's header block, part_data() zero
 * or more times with the part's bytes (never with length 0), part_end()
 * once its closing delimiter line is complete. A callback returns 0, or a
 * negative errno (with its reason in @err) that stops the parse: the
 * parser fails with that code from then on. A part that was begun and
 * never ended (parse failure, truncation, or the caller giving up) gets
 * no part_end(): the consumer drops what it has of it.
 *
 * Thread safety: a parser belongs to one thread. The media type parser
 * is reentrant. Library code: never logs.
 */
#ifndef STOWBRIDGE_MULTIPART_H
#define STOWBRIDGE_MULTIPART_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* RFC 2046 allows 70 characters; a longer boundary (up to this) is still
 * taken, since refusing it would gain nothing. */
#define MULTIPART_BOUNDARY_MAX 200
/* "type/subtype", and the type= parameter (RFC 6838 4.2: 127 + 1 + 127). */
#define MULTIPART_TYPE_MAX 255
/* A transfer-syntax parameter is a UID (PS3.5 9.1). */
#define MULTIPART_UID_MAX 64
/* The whole header block of one part, CRLFs included. */
#define MULTIPART_HEADER_MAX 16384
/* Bytes before the first boundary that are skipped before giving up. */
#define MULTIPART_PREAMBLE_MAX 65536

/* A parsed Content-Type value (RFC 2045 5.1). Names are matched in any
 * case; the type, subtype and type= value are lower-cased. */
struct multipart_media_type {
    char type[MULTIPART_TYPE_MAX + 1];         /* "application/dicom" */
    char boundary[MULTIPART_BOUNDARY_MAX + 1]; /* "" when absent */
    char related_type[MULTIPART_TYPE_MAX + 1]; /* type=; "" when absent */
    /* transfer-syntax= (PS3.18 8.7.3.5.2) when it is UID-shaped (digits
     * and dots, at most 64); "" when absent or not a UID: the part's
     * (0002,0010) is what counts anyway (PS3.18 8.7.9). */
    char transfer_syntax[MULTIPART_UID_MAX + 1];
};

/* One part, as part_begin() and part_end() see it. */
struct multipart_part {
    unsigned index;        /* 0 for the first part of the body */
    bool has_content_type; /* false: no Content-Type header */
    struct multipart_media_type content_type;
    int64_t content_length; /* -1 when absent */
    /* The Content-Location value, or NULL; borrowed until part_end()
     * (or the failure) of this part. */
    const char *content_location;
    uint64_t received; /* data bytes handed out so far */
};

struct multipart_callbacks {
    int (*part_begin)(void *ctx, const struct multipart_part *part, char *err,
                      size_t err_len);
    int (*part_data)(void *ctx, const void *data, size_t len, char *err,
                     size_t err_len);
    int (*part_end)(void *ctx, const struct multipart_part *part, char *err,
                    size_t err_len);
    void *ctx;
};

struct multipart_parser;

/*
 * Parses a Content-Type header value into @ret_type: "type/subtype"
 * followed by parameters "; name=value" (value a token or a quoted
 * string with backslash escapes). Unknown parameters are skipped.
 * Returns 0, or -EBADMSG (no "type/subtype", a value or the type longer
 * than its field, a duplicated boundary, type or transfer-syntax
 * parameter, an unterminated quoted string, a boundary that is empty,
 * ends in a space or holds a character outside printable ASCII).
 */
int multipart_media_type_parse(const char *value,
                               struct multipart_media_type *ret_type, char *err,
                               size_t err_len);

/*
 * Creates a parser for a body whose Content-Type header value is
 * @content_type: a multipart/ type with a boundary. @callbacks is
 * copied. Returns 0 and the parser in *@ret_parser, -EBADMSG for a
 * Content-Type that is not multipart or has no usable boundary (reason in
 * @err), or -ENOMEM.
 */
int multipart_new(const char *content_type,
                  const struct multipart_callbacks *callbacks,
                  struct multipart_parser **ret_parser, char *err,
                  size_t err_len);

/* Accepts NULL. Calls no callback. */
void multipart_free(struct multipart_parser *parser);

/*
 * Feeds the next @len bytes of the body. Returns 0, a callback's negative
 * errno, or -EBADMSG for a malformed body (reason in @err). After a
 * failure every call returns the same code and the parser ignores the
 * data. Bytes after the close delimiter are ignored.
 */
int multipart_feed(struct multipart_parser *parser, const void *data,
                   size_t len, char *err, size_t err_len);

/*
 * Tells the parser the body is complete. Returns 0 when the close
 * delimiter was seen, the parser's earlier failure if any, -EBADMSG when
 * bytes came but no boundary among them, or -ENODATA for a truncated
 * body, with where it ended in @err ("inside part 3 after 1024 data
 * bytes", "before the first boundary" for an empty body, ...).
 */
int multipart_finish(struct multipart_parser *parser, char *err,
                     size_t err_len);

/* Parts completely received (part_end() called) so far. */
unsigned multipart_parts_done(const struct multipart_parser *parser);

/* True once the close delimiter has been seen. */
bool multipart_closed(const struct multipart_parser *parser);

#ifdef __cplusplus
}
#endif

#endif
