/* SPDX-License-Identifier: Apache-2.0 */
/*
 * scp_rq - see scp_rq.h.
 *
 * The PDU is walked once, item by item. Offsets in messages are counted
 * from the first byte of the PDU (its type), as a packet capture shows
 * them. Every length is checked against what remains of its enclosing
 * item before anything inside it is read.
 */
#include "scp_rq.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* DCMTK's DUL_SUBITEM buffer: a UID or name of more is refused by DCMTK
 * (and some of those refusals leak). */
#define RQ_UID_MAX 64
/* Implementation Version Name (PS3.7 D.3.3.2.3): 1-16 characters. */
#define RQ_VERSION_NAME_MAX 16
/* User Identity Type values defined by PS3.7 D.3.3.7.1. */
#define RQ_IDENTITY_TYPE_MAX 5
/* User Identity Type 2: username and passcode, the only type with a
 * secondary field. */
#define RQ_IDENTITY_USER_PASSCODE 2

/* Item and sub-item types (PS3.8 9.3.2, PS3.7 D.3.3). */
enum {
    RQ_APP_CONTEXT = 0x10,
    RQ_PC_RQ = 0x20,
    RQ_PC_AC = 0x21,
    RQ_ABSTRACT_SYNTAX = 0x30,
    RQ_TRANSFER_SYNTAX = 0x40,
    RQ_USER_INFO = 0x50,
    RQ_MAX_LENGTH = 0x51,
    RQ_IMPL_CLASS_UID = 0x52,
    RQ_ASYNC_OPS = 0x53,
    RQ_ROLE_SELECTION = 0x54,
    RQ_IMPL_VERSION = 0x55,
    RQ_EXT_NEG = 0x56,
    RQ_USER_IDENTITY_RQ = 0x58,
    RQ_USER_IDENTITY_AC = 0x59,
};

/* One walk over a PDU. */
struct rq_walk {
    const unsigned char *pdu;
    char *why;
    size_t why_len;
    unsigned char ids[256]; /* presentation context IDs seen */
};

static enum scp_rq_verdict rq_fail(struct rq_walk *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static enum scp_rq_verdict rq_fail(struct rq_walk *w, const char *fmt, ...)
{
    va_list ap;

    if (w->why != NULL && w->why_len > 0) {
        va_start(ap, fmt);
        (void)vsnprintf(w->why, w->why_len, fmt, ap);
        va_end(ap);
    }
    return SCP_RQ_MALFORMED;
}

static unsigned rq_be16(const unsigned char *p)
{
    return ((unsigned)p[0] << 8) | p[1];
}

static uint32_t rq_be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | p[3];
}

static size_t rq_offset(const struct rq_walk *w, const unsigned char *p)
{
    return (size_t)(p - w->pdu);
}

/* Copies a 16-byte AE title field, trailing spaces and NULs cut. */
static void rq_ae_title(char dst[17], const unsigned char *src)
{
    size_t n = 16;

    memcpy(dst, src, 16);
    dst[16] = '\0';
    while (n > 0 && (dst[n - 1] == ' ' || dst[n - 1] == '\0'))
        dst[--n] = '\0';
}

/*
 * Reads the header of the (sub-)item at @p, with @left bytes left in the
 * enclosing item: its type and length, checked to fit. Returns false on
 * a truncated header or a length past the end.
 */
static bool rq_item(struct rq_walk *w, const unsigned char *p, size_t left,
                    const char *what, unsigned *ret_type, size_t *ret_len,
                    enum scp_rq_verdict *ret_verdict)
{
    size_t len;

    if (left < 4) {
        *ret_verdict = rq_fail(w,
                               "%s header truncated at byte %zu (%zu "
                               "bytes left)",
                               what, rq_offset(w, p), left);
        return false;
    }
    len = rq_be16(p + 2);
    if (len > left - 4) {
        *ret_verdict = rq_fail(w,
                               "%s 0x%02x at byte %zu claims %zu bytes, "
                               "%zu remain",
                               what, p[0], rq_offset(w, p), len, left - 4);
        return false;
    }
    *ret_type = p[0];
    *ret_len = len;
    return true;
}

/* A UID or name sub-item value of 1..@max bytes. */
static enum scp_rq_verdict rq_text(struct rq_walk *w, const unsigned char *p,
                                   size_t len, size_t max, const char *what)
{
    if (len == 0 || len > max)
        return rq_fail(w, "%s at byte %zu is %zu bytes long (1-%zu)", what,
                       rq_offset(w, p), len, max);
    return SCP_RQ_OK;
}

/* One Presentation Context item (PS3.8 9.3.2.2), @p at its header. */
static enum scp_rq_verdict rq_context(struct rq_walk *w, const unsigned char *p,
                                      size_t len, struct scp_rq *rq)
{
    const unsigned char *sub = p + 8;
    size_t left;
    unsigned abstract = 0;
    unsigned transfer = 0;
    unsigned id;
    enum scp_rq_verdict v = SCP_RQ_OK;

    if (len < 4)
        return rq_fail(w,
                       "Presentation Context item at byte %zu is %zu "
                       "bytes long (at least 4)",
                       rq_offset(w, p), len);
    id = p[4];
    if (++rq->contexts > SCP_RQ_MAX_CONTEXTS)
        return rq_fail(w,
                       "more than %d Presentation Context items "
                       "(PS3.8 allows %d)",
                       SCP_RQ_MAX_CONTEXTS, SCP_RQ_MAX_CONTEXTS);
    if (id % 2 == 0)
        return rq_fail(w,
                       "Presentation Context ID %u at byte %zu is not an "
                       "odd number from 1 to 255",
                       id, rq_offset(w, p));
    if (w->ids[id]++)
        return rq_fail(w,
                       "Presentation Context ID %u proposed twice (byte "
                       "%zu)",
                       id, rq_offset(w, p));
    left = len - 4;
    while (left > 0) {
        unsigned type;
        size_t sub_len;

        if (!rq_item(w, sub, left, "Presentation Context sub-item", &type,
                     &sub_len, &v))
            return v;
        if (type == RQ_ABSTRACT_SYNTAX) {
            if (abstract++)
                return rq_fail(w,
                               "Presentation Context %u has two Abstract "
                               "Syntax sub-items",
                               id);
            v = rq_text(w, sub, sub_len, RQ_UID_MAX, "Abstract Syntax");
        } else if (type == RQ_TRANSFER_SYNTAX) {
            transfer++;
            v = rq_text(w, sub, sub_len, RQ_UID_MAX, "Transfer Syntax");
        } else {
            v = rq_fail(w,
                        "Presentation Context %u has a sub-item of type "
                        "0x%02x at byte %zu",
                        id, type, rq_offset(w, sub));
        }
        if (v != SCP_RQ_OK)
            return v;
        sub += 4 + sub_len;
        left -= 4 + sub_len;
    }
    if (abstract == 0 || transfer == 0)
        return rq_fail(w,
                       "Presentation Context %u has %u Abstract Syntax "
                       "and %u Transfer Syntax sub-items (1 and at least "
                       "1)",
                       id, abstract, transfer);
    return SCP_RQ_OK;
}

/* SCP/SCU Role Selection (PS3.7 D.3.3.4): UID length, UID, two roles. */
static enum scp_rq_verdict rq_role(struct rq_walk *w, const unsigned char *p,
                                   size_t len)
{
    size_t uid_len;

    if (len < 4)
        return rq_fail(w,
                       "Role Selection sub-item at byte %zu is %zu bytes "
                       "long (at least 4)",
                       rq_offset(w, p), len);
    uid_len = rq_be16(p + 4);
    if (uid_len == 0 || uid_len > RQ_UID_MAX || uid_len + 4 != len)
        return rq_fail(w,
                       "Role Selection sub-item at byte %zu: a UID of "
                       "%zu bytes in %zu (1-64 and 4 more)",
                       rq_offset(w, p), uid_len, len);
    return SCP_RQ_OK;
}

/* SOP Class Extended Negotiation (PS3.7 D.3.3.5): UID length, UID, then
 * the service class application information. */
static enum scp_rq_verdict rq_ext_neg(struct rq_walk *w, const unsigned char *p,
                                      size_t len)
{
    size_t uid_len;

    if (len < 2)
        return rq_fail(w,
                       "Extended Negotiation sub-item at byte %zu is %zu "
                       "bytes long (at least 2)",
                       rq_offset(w, p), len);
    uid_len = rq_be16(p + 4);
    if (uid_len == 0 || uid_len > RQ_UID_MAX || uid_len > len - 2)
        return rq_fail(w,
                       "Extended Negotiation sub-item at byte %zu: a UID "
                       "of %zu bytes in %zu",
                       rq_offset(w, p), uid_len, len);
    return SCP_RQ_OK;
}

/* User Identity Negotiation, request (PS3.7 D.3.3.7.1): type, positive
 * response requested, primary field, secondary field (type 2 only). The
 * lengths must add up exactly: DCMTK does not read a secondary field of
 * another type and would lose its place in the PDU. */
static enum scp_rq_verdict rq_identity(struct rq_walk *w,
                                       const unsigned char *p, size_t len)
{
    size_t primary;
    size_t secondary;
    unsigned type;

    if (len < 6)
        return rq_fail(w,
                       "User Identity sub-item at byte %zu is %zu bytes "
                       "long (at least 6)",
                       rq_offset(w, p), len);
    type = p[4];
    primary = rq_be16(p + 6);
    if (type == 0 || type > RQ_IDENTITY_TYPE_MAX)
        return rq_fail(w, "User Identity Type %u at byte %zu (1-%d)", type,
                       rq_offset(w, p), RQ_IDENTITY_TYPE_MAX);
    if (primary > len - 6)
        return rq_fail(w,
                       "User Identity sub-item at byte %zu: a primary "
                       "field of %zu bytes in %zu",
                       rq_offset(w, p), primary, len);
    secondary = rq_be16(p + 8 + primary);
    if (secondary != len - 6 - primary ||
        (type != RQ_IDENTITY_USER_PASSCODE && secondary != 0))
        return rq_fail(w,
                       "User Identity sub-item at byte %zu: a secondary "
                       "field of %zu bytes for type %u in %zu",
                       rq_offset(w, p), secondary, type, len);
    return SCP_RQ_OK;
}

/* The User Information item (PS3.8 9.3.2.3, PS3.7 D.3.3). */
static enum scp_rq_verdict rq_user_info(struct rq_walk *w,
                                        const unsigned char *p, size_t len,
                                        struct scp_rq *rq)
{
    const unsigned char *sub = p + 4;
    size_t left = len;
    unsigned seen[256];
    enum scp_rq_verdict v = SCP_RQ_OK;

    memset(seen, 0, sizeof(seen));
    while (left > 0) {
        unsigned type;
        size_t sub_len;

        if (!rq_item(w, sub, left, "User Information sub-item", &type, &sub_len,
                     &v))
            return v;
        seen[type]++;
        switch (type) {
        case RQ_MAX_LENGTH:
            if (sub_len != 4)
                return rq_fail(w,
                               "Maximum Length sub-item at byte %zu is "
                               "%zu bytes long (4)",
                               rq_offset(w, sub), sub_len);
            rq->max_pdu = rq_be32(sub + 4);
            break;
        case RQ_IMPL_CLASS_UID:
            v = rq_text(w, sub, sub_len, RQ_UID_MAX,
                        "Implementation Class UID");
            break;
        case RQ_ASYNC_OPS:
            if (sub_len != 4)
                v = rq_fail(w,
                            "Asynchronous Operations sub-item at byte "
                            "%zu is %zu bytes long (4)",
                            rq_offset(w, sub), sub_len);
            break;
        case RQ_ROLE_SELECTION:
            v = rq_role(w, sub, sub_len);
            break;
        case RQ_IMPL_VERSION:
            v = rq_text(w, sub, sub_len, RQ_VERSION_NAME_MAX,
                        "Implementation Version Name");
            break;
        case RQ_EXT_NEG:
            v = rq_ext_neg(w, sub, sub_len);
            break;
        case RQ_USER_IDENTITY_RQ:
            v = rq_identity(w, sub, sub_len);
            break;
        case RQ_USER_IDENTITY_AC:
            v = rq_fail(w,
                        "User Identity server response (0x59) at byte "
                        "%zu in a request",
                        rq_offset(w, sub));
            break;
        default:
            /* Common Extended Negotiation (0x57) and types the standard
             * may add: DCMTK skips them by their length, so do we. */
            break;
        }
        if (v != SCP_RQ_OK)
            return v;
        if (seen[type] > 1 &&
            (type == RQ_MAX_LENGTH || type == RQ_IMPL_CLASS_UID ||
             type == RQ_ASYNC_OPS || type == RQ_IMPL_VERSION ||
             type == RQ_USER_IDENTITY_RQ))
            return rq_fail(w,
                           "User Information sub-item 0x%02x appears "
                           "twice (byte %zu)",
                           type, rq_offset(w, sub));
        sub += 4 + sub_len;
        left -= 4 + sub_len;
    }
    if (seen[RQ_MAX_LENGTH] == 0)
        return rq_fail(w,
                       "User Information item at byte %zu has no "
                       "Maximum Length sub-item",
                       rq_offset(w, p));
    return SCP_RQ_OK;
}

enum scp_rq_verdict scp_rq_check(const unsigned char *pdu, size_t len,
                                 struct scp_rq *ret_rq, char *why,
                                 size_t why_len)
{
    struct rq_walk w;
    const unsigned char *p;
    size_t left;
    unsigned app = 0;
    unsigned user = 0;
    enum scp_rq_verdict v = SCP_RQ_OK;

    memset(ret_rq, 0, sizeof(*ret_rq));
    memset(&w, 0, sizeof(w));
    w.pdu = pdu;
    w.why = why;
    w.why_len = why_len;
    if (why != NULL && why_len > 0)
        why[0] = '\0';

    if (len < SCP_RQ_FIXED_LEN || pdu[0] != 0x01 || rq_be32(pdu + 2) != len - 6)
        return rq_fail(&w,
                       "not a whole A-ASSOCIATE-RQ (%zu bytes, at "
                       "least %d)",
                       len, SCP_RQ_FIXED_LEN);
    rq_ae_title(ret_rq->called_ae, pdu + 10);
    rq_ae_title(ret_rq->calling_ae, pdu + 26);
    if ((rq_be16(pdu + 6) & 1) == 0) {
        (void)rq_fail(&w, "protocol version 0x%04x (bit 0 must be set)",
                      rq_be16(pdu + 6));
        return SCP_RQ_PROTOCOL_VERSION;
    }

    p = pdu + SCP_RQ_FIXED_LEN;
    left = len - SCP_RQ_FIXED_LEN;
    while (left > 0) {
        unsigned type;
        size_t item_len;

        if (!rq_item(&w, p, left, "item", &type, &item_len, &v))
            return v;
        switch (type) {
        case RQ_APP_CONTEXT:
            if (app++)
                return rq_fail(&w,
                               "two Application Context items (byte "
                               "%zu)",
                               rq_offset(&w, p));
            v = rq_text(&w, p, item_len, RQ_UID_MAX,
                        "Application Context Name");
            if (v == SCP_RQ_OK) {
                size_t n = item_len;
                memcpy(ret_rq->app_context, p + 4, n);
                while (n > 0 && (ret_rq->app_context[n - 1] == '\0' ||
                                 ret_rq->app_context[n - 1] == ' '))
                    n--;
                ret_rq->app_context[n] = '\0';
            }
            break;
        case RQ_PC_RQ:
            v = rq_context(&w, p, item_len, ret_rq);
            break;
        case RQ_PC_AC:
            v = rq_fail(&w,
                        "an A-ASSOCIATE-AC Presentation Context item "
                        "(0x21) at byte %zu",
                        rq_offset(&w, p));
            break;
        case RQ_USER_INFO:
            if (user++)
                return rq_fail(&w, "two User Information items (byte %zu)",
                               rq_offset(&w, p));
            v = rq_user_info(&w, p, item_len, ret_rq);
            break;
        default:
            /* An item type PS3.8 does not define: skipped by its length,
             * as DCMTK does. */
            break;
        }
        if (v != SCP_RQ_OK)
            return v;
        p += 4 + item_len;
        left -= 4 + item_len;
    }
    if (app == 0)
        return rq_fail(&w, "no Application Context item");
    if (ret_rq->contexts == 0)
        return rq_fail(&w, "no Presentation Context item");
    if (user == 0)
        return rq_fail(&w, "no User Information item");
    return SCP_RQ_OK;
}
