/* SPDX-License-Identifier: Apache-2.0 */
/*
 * escape - the admin module's HTML and JSON escapes, appended to a
 * base/buf buffer (see admin_int.h), and admin_copy_text() (admin.h).
 */
#include "admin_int.h"

#include <stdio.h>
#include <string.h>

#include "base/util.h"

#define REPLACEMENT "\xef\xbf\xbd" /* U+FFFD */

/* The replacement of one ASCII byte in HTML, or NULL to keep it. */
static const char *html_entity(unsigned char c)
{
    if (c == '&')
        return "&amp;";
    if (c == '<')
        return "&lt;";
    if (c == '>')
        return "&gt;";
    if (c == '"')
        return "&quot;";
    if (c == '\'')
        return "&#39;";
    if ((c < 0x20 && c != '\t' && c != '\n') || c == 0x7f)
        return REPLACEMENT;
    return NULL;
}

void admin__append_html(struct buf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *run = p;

    while (*p) {
        const char *rep = NULL;
        size_t n = util_utf8_sequence(p);

        if (n == 0)
            rep = REPLACEMENT;
        else if (n == 1)
            rep = html_entity(*p);
        if (rep == NULL) {
            p += n;
            continue;
        }
        buf_append(b, (const char *)run, (size_t)(p - run));
        buf_append_str(b, rep);
        p += n ? n : 1;
        run = p;
    }
    buf_append(b, (const char *)run, (size_t)(p - run));
}

void admin__append_json(struct buf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *run = p;
    char esc[8];

    buf_append(b, "\"", 1);
    while (*p) {
        const char *rep = NULL;
        size_t n = util_utf8_sequence(p);

        if (n == 0) {
            rep = REPLACEMENT;
        } else if (n == 1) {
            if (*p == '"')
                rep = "\\\"";
            else if (*p == '\\')
                rep = "\\\\";
            else if (*p == '\n')
                rep = "\\n";
            else if (*p < 0x20 || *p == 0x7f) {
                (void)snprintf(esc, sizeof(esc), "\\u%04x", *p);
                rep = esc;
            }
        }
        if (rep == NULL) {
            p += n;
            continue;
        }
        buf_append(b, (const char *)run, (size_t)(p - run));
        buf_append_str(b, rep);
        p += n ? n : 1;
        run = p;
    }
    buf_append(b, (const char *)run, (size_t)(p - run));
    buf_append(b, "\"", 1);
}

void admin_copy_text(char *dst, size_t cap, const char *src)
{
    const unsigned char *p = (const unsigned char *)(src ? src : "");
    size_t len = 0;

    if (cap == 0)
        return;
    while (p[len]) {
        size_t n = util_utf8_sequence(p + len);
        if (n == 0)
            n = 1; /* broken byte: kept, the renderers replace it */
        if (len + n >= cap)
            break;
        len += n;
    }
    memcpy(dst, p, len);
    dst[len] = '\0';
}
