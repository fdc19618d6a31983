/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_scp_rq - the structural check of A-ASSOCIATE-RQ PDUs (scp_rq.h):
 * a well-formed request passes and yields its AE titles, context count
 * and maximum PDU length; every kind of damage that makes DCMTK 3.6.7
 * fail its own parse (and leak) is refused, with a reason that names the
 * item; the PS3.8 limits (odd unique IDs, 128 contexts) hold; item types
 * the standard does not define are skipped.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "scp/scp_rq.h"
#include "tap.h"

/* A PDU being built. */
struct buf {
    unsigned char data[200000];
    size_t len;
};

static void put(struct buf *b, const void *p, size_t n)
{
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void put_u8(struct buf *b, unsigned v)
{
    b->data[b->len++] = (unsigned char)v;
}

static void put_u16(struct buf *b, unsigned v)
{
    put_u8(b, (v >> 8) & 0xff);
    put_u8(b, v & 0xff);
}

static void put_u32(struct buf *b, uint32_t v)
{
    put_u16(b, v >> 16);
    put_u16(b, v & 0xffff);
}

/* An item or sub-item: type, reserved, 2-byte length, value. */
static void put_item(struct buf *b, unsigned type, const void *v, size_t n)
{
    put_u8(b, type);
    put_u8(b, 0);
    put_u16(b, (unsigned)n);
    put(b, v, n);
}

static void put_text_item(struct buf *b, unsigned type, const char *s)
{
    put_item(b, type, s, strlen(s));
}

/* A presentation context item with one abstract and one transfer syntax. */
static void put_pc(struct buf *b, unsigned id, const char *abstract,
                   const char *transfer)
{
    struct buf v = { .len = 0 };
    put_u8(&v, id);
    put_u8(&v, 0);
    put_u8(&v, 0);
    put_u8(&v, 0);
    put_text_item(&v, 0x30, abstract);
    if (transfer != NULL)
        put_text_item(&v, 0x40, transfer);
    put_item(b, 0x20, v.data, v.len);
}

/* A User Information item: maximum length, implementation class UID, then
 * @extra sub-items as given. */
static void put_user(struct buf *b, uint32_t max_pdu, const struct buf *extra)
{
    struct buf v = { .len = 0 };
    struct buf m = { .len = 0 };
    put_u32(&m, max_pdu);
    put_item(&v, 0x51, m.data, 4);
    put_text_item(&v, 0x52, "1.2.826.0.1.3680043.9.7156.1");
    if (extra != NULL)
        put(&v, extra->data, extra->len);
    put_item(b, 0x50, v.data, v.len);
}

/* Starts a PDU: header (length patched by finish()) and fixed fields. */
static void start(struct buf *b, const char *called, const char *calling)
{
    char ae[16];

    b->len = 0;
    put_u8(b, 0x01);
    put_u8(b, 0);
    put_u32(b, 0);
    put_u16(b, 1);
    put_u16(b, 0);
    memset(ae, ' ', 16);
    memcpy(ae, called, strlen(called));
    put(b, ae, 16);
    memset(ae, ' ', 16);
    memcpy(ae, calling, strlen(calling));
    put(b, ae, 16);
    for (int i = 0; i < 32; i++)
        put_u8(b, 0);
}

static void finish(struct buf *b)
{
    uint32_t n = (uint32_t)(b->len - 6);
    b->data[2] = (unsigned char)(n >> 24);
    b->data[3] = (unsigned char)(n >> 16);
    b->data[4] = (unsigned char)(n >> 8);
    b->data[5] = (unsigned char)n;
}

#define APP "1.2.840.10008.3.1.1.1"
#define VERIFICATION "1.2.840.10008.1.1"
#define IMPLICIT "1.2.840.10008.1.2"

/* The usual good request, with @user as its user information (NULL: the
 * standard one, maximum length 16384). */
static void good(struct buf *b, const struct buf *extra_user)
{
    start(b, "STOWBRIDGE", "CT1");
    put_text_item(b, 0x10, APP);
    put_pc(b, 1, VERIFICATION, IMPLICIT);
    put_pc(b, 3, "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1");
    put_user(b, 16384, extra_user);
    finish(b);
}

static enum scp_rq_verdict check(const struct buf *b, char *why, size_t len)
{
    struct scp_rq rq;
    return scp_rq_check(b->data, b->len, &rq, why, len);
}

/* Expects MALFORMED with @needle in the reason. */
static void expect_malformed(const char *what, const struct buf *b,
                             const char *needle)
{
    char why[256] = "";
    enum scp_rq_verdict v = check(b, why, sizeof(why));
    CHECK_MSG(v == SCP_RQ_MALFORMED && strstr(why, needle) != NULL,
              "%s: verdict %d, reason \"%s\" (wanted \"%s\")", what, (int)v,
              why, needle);
}

static void test_good(void)
{
    struct buf b;
    struct scp_rq rq;
    char why[256] = "x";

    good(&b, NULL);
    CHECK(scp_rq_check(b.data, b.len, &rq, why, sizeof(why)) == SCP_RQ_OK);
    CHECK(why[0] == '\0');
    CHECK(strcmp(rq.called_ae, "STOWBRIDGE") == 0);
    CHECK(strcmp(rq.calling_ae, "CT1") == 0);
    CHECK(rq.contexts == 2);
    CHECK(rq.max_pdu == 16384);
    CHECK(strcmp(rq.app_context, APP) == 0);

    /* Every optional sub-item, well formed, and an undefined item type at
     * the top level and in the user information: all accepted. */
    struct buf extra = { .len = 0 };
    struct buf v = { .len = 0 };
    put_item(&extra, 0x53, "\0\1\0\1", 4); /* async ops */
    put_u16(&v, (unsigned)strlen(VERIFICATION));
    put(&v, VERIFICATION, strlen(VERIFICATION));
    put_u8(&v, 1);
    put_u8(&v, 0);
    put_item(&extra, 0x54, v.data, v.len);    /* role */
    put_text_item(&extra, 0x55, "RAWPEER_1"); /* version */
    v.len = 0;
    put_u16(&v, (unsigned)strlen(VERIFICATION));
    put(&v, VERIFICATION, strlen(VERIFICATION));
    put(&v, "\1\0", 2);
    put_item(&extra, 0x56, v.data, v.len); /* ext neg */
    v.len = 0;
    put_u8(&v, 2); /* user+pass */
    put_u8(&v, 0);
    put_u16(&v, 4);
    put(&v, "user", 4);
    put_u16(&v, 6);
    put(&v, "secret", 6);
    put_item(&extra, 0x58, v.data, v.len); /* identity */
    put_item(&extra, 0x5f, "\1\2\3", 3);   /* undefined */
    good(&b, &extra);
    CHECK_MSG(check(&b, why, sizeof(why)) == SCP_RQ_OK, "all sub-items: %s",
              why);

    start(&b, "STOWBRIDGE", "CT1");
    put_text_item(&b, 0x10, APP);
    put_item(&b, 0x7e, "whatever", 8);
    put_pc(&b, 1, VERIFICATION, IMPLICIT);
    put_user(&b, 0, NULL);
    finish(&b);
    CHECK(scp_rq_check(b.data, b.len, &rq, why, sizeof(why)) == SCP_RQ_OK);
    CHECK(rq.max_pdu == 0);

    /* A UID padded with NUL (PS3.5 9.1) and trailing spaces: cut. */
    start(&b, "STOWBRIDGE", "CT1");
    put_item(&b, 0x10, APP "\0", strlen(APP) + 1);
    put_pc(&b, 1, VERIFICATION, IMPLICIT);
    put_user(&b, 16384, NULL);
    finish(&b);
    CHECK(scp_rq_check(b.data, b.len, &rq, why, sizeof(why)) == SCP_RQ_OK);
    CHECK(strcmp(rq.app_context, APP) == 0);

    /* 128 contexts, IDs 1, 3, ... 255: the most PS3.8 allows. */
    start(&b, "STOWBRIDGE", "CT1");
    put_text_item(&b, 0x10, APP);
    for (unsigned id = 1; id <= 255; id += 2)
        put_pc(&b, id, VERIFICATION, IMPLICIT);
    put_user(&b, 16384, NULL);
    finish(&b);
    CHECK(scp_rq_check(b.data, b.len, &rq, why, sizeof(why)) == SCP_RQ_OK);
    CHECK(rq.contexts == 128);
}

static void test_limits(void)
{
    struct buf b;

    /* 200 contexts: IDs must repeat or be even. */
    start(&b, "STOWBRIDGE", "CT1");
    put_text_item(&b, 0x10, APP);
    for (unsigned i = 0; i < 200; i++)
        put_pc(&b, (2 * i + 1) & 0xff, VERIFICATION, IMPLICIT);
    put_user(&b, 16384, NULL);
    finish(&b);
    expect_malformed("200 contexts", &b, "more than 128");

    start(&b, "STOWBRIDGE", "CT1");
    put_text_item(&b, 0x10, APP);
    put_pc(&b, 2, VERIFICATION, IMPLICIT);
    put_user(&b, 16384, NULL);
    finish(&b);
    expect_malformed("even ID", &b, "not an odd number");

    start(&b, "STOWBRIDGE", "CT1");
    put_text_item(&b, 0x10, APP);
    put_pc(&b, 5, VERIFICATION, IMPLICIT);
    put_pc(&b, 5, VERIFICATION, IMPLICIT);
    put_user(&b, 16384, NULL);
    finish(&b);
    expect_malformed("duplicate ID", &b, "ID 5 proposed twice");
}

static void test_structure(void)
{
    struct buf b;
    struct buf v;
    char why[256];

    /* The fixed part only, or a header that disagrees with the length. */
    good(&b, NULL);
    b.len = SCP_RQ_FIXED_LEN - 1;
    expect_malformed("short", &b, "not a whole A-ASSOCIATE-RQ");
    good(&b, NULL);
    b.data[5] ^= 1;
    expect_malformed("length mismatch", &b, "not a whole A-ASSOCIATE-RQ");

    good(&b, NULL);
    b.data[6] = 0;
    b.data[7] = 2;
    CHECK(check(&b, why, sizeof(why)) == SCP_RQ_PROTOCOL_VERSION);
    CHECK(strstr(why, "protocol version 0x0002") != NULL);

    /* Missing items. */
    start(&b, "STOWBRIDGE", "CT1");
    put_pc(&b, 1, VERIFICATION, IMPLICIT);
    put_user(&b, 16384, NULL);
    finish(&b);
    expect_malformed("no application context", &b, "no Application Context");
    start(&b, "STOWBRIDGE", "CT1");
    put_text_item(&b, 0x10, APP);
    put_user(&b, 16384, NULL);
    finish(&b);
    expect_malformed("no context", &b, "no Presentation Context");
    start(&b, "STOWBRIDGE", "CT1");
    put_text_item(&b, 0x10, APP);
    put_pc(&b, 1, VERIFICATION, IMPLICIT);
    finish(&b);
    expect_malformed("no user information", &b, "no User Information");

    /* An item header cut, and an item running past the end. */
    good(&b, NULL);
    b.len -= 2;
    finish(&b);
    expect_malformed("truncated user information", &b, "claims");
    good(&b, NULL);
    b.data[b.len++] = 0x50;
    b.data[b.len++] = 0;
    finish(&b);
    expect_malformed("item header cut", &b, "header truncated");

    /* A presentation context without transfer syntax, with two abstract
     * syntaxes, with an unknown sub-item, a UID of 65 bytes, an empty one,
     * and an A-ASSOCIATE-AC context item. */
    start(&b, "STOWBRIDGE", "CT1");
    put_text_item(&b, 0x10, APP);
    put_pc(&b, 1, VERIFICATION, NULL);
    put_user(&b, 16384, NULL);
    finish(&b);
    expect_malformed("no transfer syntax", &b, "0 Transfer Syntax");

    v.len = 0;
    put(&v, "\1\0\0\0", 4);
    put_text_item(&v, 0x30, VERIFICATION);
    put_text_item(&v, 0x30, VERIFICATION);
    put_text_item(&v, 0x40, IMPLICIT);
    start(&b, "STOWBRIDGE", "CT1");
    put_text_item(&b, 0x10, APP);
    put_item(&b, 0x20, v.data, v.len);
    put_user(&b, 16384, NULL);
    finish(&b);
    expect_malformed("two abstract syntaxes", &b, "two Abstract Syntax");

    v.len = 0;
    put(&v, "\1\0\0\0", 4);
    put_text_item(&v, 0x30, VERIFICATION);
    put_text_item(&v, 0x40, IMPLICIT);
    put_text_item(&v, 0x41, IMPLICIT);
    start(&b, "STOWBRIDGE", "CT1");
    put_text_item(&b, 0x10, APP);
    put_item(&b, 0x20, v.data, v.len);
    put_user(&b, 16384, NULL);
    finish(&b);
    expect_malformed("unknown sub-item", &b, "sub-item of type 0x41");

    char long_uid[66];
    memset(long_uid, '1', 65);
    long_uid[65] = '\0';
    start(&b, "STOWBRIDGE", "CT1");
    put_text_item(&b, 0x10, APP);
    put_pc(&b, 1, VERIFICATION, long_uid);
    put_user(&b, 16384, NULL);
    finish(&b);
    expect_malformed("65-byte UID", &b, "is 65 bytes long (1-64)");
    start(&b, "STOWBRIDGE", "CT1");
    put_text_item(&b, 0x10, long_uid);
    put_pc(&b, 1, VERIFICATION, IMPLICIT);
    put_user(&b, 16384, NULL);
    finish(&b);
    expect_malformed("65-byte application context", &b,
                     "Application Context Name");
    start(&b, "STOWBRIDGE", "CT1");
    put_text_item(&b, 0x10, APP);
    put_pc(&b, 1, "", IMPLICIT);
    put_user(&b, 16384, NULL);
    finish(&b);
    expect_malformed("empty abstract syntax", &b, "is 0 bytes long");

    v.len = 0;
    put(&v, "\1\0\0\0", 4);
    put_text_item(&v, 0x40, IMPLICIT);
    start(&b, "STOWBRIDGE", "CT1");
    put_text_item(&b, 0x10, APP);
    put_item(&b, 0x21, v.data, v.len);
    put_pc(&b, 3, VERIFICATION, IMPLICIT);
    put_user(&b, 16384, NULL);
    finish(&b);
    expect_malformed("AC context item", &b, "(0x21)");

    v.len = 0;
    put(&v, "\1\0", 2);
    start(&b, "STOWBRIDGE", "CT1");
    put_text_item(&b, 0x10, APP);
    put_item(&b, 0x20, v.data, v.len);
    put_user(&b, 16384, NULL);
    finish(&b);
    expect_malformed("context of 2 bytes", &b, "at least 4");
}

/* A user information item holding exactly @extra (no maximum length unless
 * @extra has one). */
static void user_only(struct buf *b, const struct buf *extra)
{
    start(b, "STOWBRIDGE", "CT1");
    put_text_item(b, 0x10, APP);
    put_pc(b, 1, VERIFICATION, IMPLICIT);
    put_item(b, 0x50, extra->data, extra->len);
    finish(b);
}

static void test_user_info(void)
{
    struct buf b;
    struct buf e;
    struct buf v;

    e.len = 0;
    put_text_item(&e, 0x52, "1.2.3");
    user_only(&b, &e);
    expect_malformed("no maximum length", &b, "no Maximum Length");

    e.len = 0;
    put_item(&e, 0x51, "\0\0\x40", 3);
    user_only(&b, &e);
    expect_malformed("maximum length of 3 bytes", &b, "(4)");

    e.len = 0;
    put_item(&e, 0x51, "\0\0\x40\0", 4);
    put_item(&e, 0x51, "\0\0\x40\0", 4);
    user_only(&b, &e);
    expect_malformed("two maximum lengths", &b, "appears twice");

    e.len = 0;
    put_item(&e, 0x51, "\0\0\x40\0", 4);
    put_item(&e, 0x53, "\0\1", 2);
    user_only(&b, &e);
    expect_malformed("async ops of 2 bytes", &b, "Asynchronous Operations");

    e.len = 0;
    put_item(&e, 0x51, "\0\0\x40\0", 4);
    put_text_item(&e, 0x55, "A_VERSION_NAME_OF_17");
    user_only(&b, &e);
    expect_malformed("long version name", &b, "(1-16)");

    /* Role selection: the UID length must fit the item exactly. */
    v.len = 0;
    put_u16(&v, 30);
    put(&v, VERIFICATION, strlen(VERIFICATION));
    put(&v, "\1\1", 2);
    e.len = 0;
    put_item(&e, 0x51, "\0\0\x40\0", 4);
    put_item(&e, 0x54, v.data, v.len);
    user_only(&b, &e);
    expect_malformed("role UID length", &b, "Role Selection");

    /* Extended negotiation: a UID longer than the item. */
    v.len = 0;
    put_u16(&v, 200);
    put(&v, "1.2", 3);
    e.len = 0;
    put_item(&e, 0x51, "\0\0\x40\0", 4);
    put_item(&e, 0x56, v.data, v.len);
    user_only(&b, &e);
    expect_malformed("ext neg UID length", &b, "Extended Negotiation");

    /* User identity: a primary field past the end, a secondary field for
     * a type without one, two of them, a server response, type 0. */
    v.len = 0;
    put_u8(&v, 1);
    put_u8(&v, 0);
    put_u16(&v, 30);
    put(&v, "abc", 3);
    e.len = 0;
    put_item(&e, 0x51, "\0\0\x40\0", 4);
    put_item(&e, 0x58, v.data, v.len);
    user_only(&b, &e);
    expect_malformed("identity primary", &b, "primary field of 30");

    v.len = 0;
    put_u8(&v, 1);
    put_u8(&v, 0);
    put_u16(&v, 3);
    put(&v, "abc", 3);
    put_u16(&v, 2);
    put(&v, "xy", 2);
    e.len = 0;
    put_item(&e, 0x51, "\0\0\x40\0", 4);
    put_item(&e, 0x58, v.data, v.len);
    user_only(&b, &e);
    expect_malformed("identity secondary for type 1", &b, "secondary field");

    v.len = 0;
    put_u8(&v, 1);
    put_u8(&v, 0);
    put_u16(&v, 3);
    put(&v, "abc", 3);
    put_u16(&v, 0);
    e.len = 0;
    put_item(&e, 0x51, "\0\0\x40\0", 4);
    put_item(&e, 0x58, v.data, v.len);
    put_item(&e, 0x58, v.data, v.len);
    user_only(&b, &e);
    expect_malformed("two identities", &b, "0x58 appears twice");

    e.len = 0;
    put_item(&e, 0x51, "\0\0\x40\0", 4);
    put_item(&e, 0x59, "\0\0", 2);
    user_only(&b, &e);
    expect_malformed("identity AC in a request", &b, "0x59");

    v.data[0] = 0;
    e.len = 0;
    put_item(&e, 0x51, "\0\0\x40\0", 4);
    put_item(&e, 0x58, v.data, v.len);
    user_only(&b, &e);
    expect_malformed("identity type 0", &b, "User Identity Type 0");
}

/* Every truncation of a good request, lengths patched to match, fails
 * cleanly (and never reads past the end: ASan would say so). */
static void test_every_cut(void)
{
    struct buf b;
    struct buf cut;
    unsigned ok = 0;

    good(&b, NULL);
    for (size_t n = 0; n < b.len; n++) {
        char why[256];
        memcpy(cut.data, b.data, n);
        cut.len = n;
        if (n >= 6)
            finish(&cut);
        if (check(&cut, why, sizeof(why)) == SCP_RQ_OK)
            ok++;
    }
    /* Cutting after a whole item can leave a well-formed request only
     * when what is cut off is optional: here nothing is. */
    CHECK_MSG(ok == 0, "%u truncations passed", ok);
}

int main(void)
{
    test_good();
    test_limits();
    test_structure();
    test_user_info();
    test_every_cut();
    return tap_done();
}
