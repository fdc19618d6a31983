/* SPDX-License-Identifier: Apache-2.0 */
/*
 * events - see events.h.
 */
#include "events.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "admin_int.h"
#include "base/util.h"

struct admin_events {
    pthread_mutex_t lock;
    size_t capacity;
    size_t next; /* slot of the next push */
    uint64_t pushed;
    struct admin_event slots[];
};

struct admin_events *admin_events_new(size_t capacity)
{
    struct admin_events *r;

    if (capacity < 1 || capacity > ADMIN_EVENTS_CAPACITY_MAX)
        return NULL;
    r = calloc(1, sizeof(*r) + capacity * sizeof(r->slots[0]));
    if (r == NULL)
        return NULL;
    if (pthread_mutex_init(&r->lock, NULL) != 0) {
        free(r);
        return NULL;
    }
    r->capacity = capacity;
    return r;
}

void admin_events_free(struct admin_events *r)
{
    if (r == NULL)
        return;
    (void)pthread_mutex_destroy(&r->lock);
    free(r);
}

/*
 * Copies @text into @dst (capacity @cap >= 1) as one printable line: cut
 * at a character boundary, controls to spaces, broken UTF-8 to '?'.
 */
static void clean_copy(char *dst, size_t cap, const char *text)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t len = 0;

    while (*p) {
        size_t n = util_utf8_sequence(p);
        if (n == 0) {
            if (len + 1 >= cap)
                break;
            dst[len++] = '?';
            p++;
            continue;
        }
        if (len + n >= cap)
            break;
        if (n == 1 && (*p < 0x20 || *p == 0x7f)) {
            dst[len++] = ' ';
        } else {
            memcpy(dst + len, p, n);
            len += n;
        }
        p += n;
    }
    dst[len] = '\0';
}

void admin_events_push(struct admin_events *r, int64_t time_s, int level,
                       const char *text)
{
    struct admin_event e;

    e.time_s = time_s;
    e.level = level;
    clean_copy(e.text, sizeof(e.text), text ? text : "");
    pthread_mutex_lock(&r->lock);
    r->slots[r->next] = e;
    r->next = (r->next + 1) % r->capacity;
    r->pushed++;
    pthread_mutex_unlock(&r->lock);
}

void admin_events_push_line(struct admin_events *r, int64_t time_s,
                            const char *line)
{
    char text[ADMIN_EVENT_TEXT_MAX];
    int level = 6;
    size_t len;

    if (line[0] == '<' && line[1] >= '0' && line[1] <= '7' && line[2] == '>') {
        level = line[1] - '0';
        line += 3;
    }
    len = strlen(line);
    if (len > 0 && line[len - 1] == '\n')
        len--;
    if (len >= sizeof(text))
        len = sizeof(text) - 1;
    memcpy(text, line, len);
    text[len] = '\0';
    admin_events_push(r, time_s, level, text);
}

size_t admin_events_copy(struct admin_events *r, struct admin_event *out,
                         size_t max)
{
    size_t have;
    size_t n;

    pthread_mutex_lock(&r->lock);
    have = r->pushed < r->capacity ? (size_t)r->pushed : r->capacity;
    n = have < max ? have : max;
    for (size_t i = 0; i < n; i++)
        out[i] = r->slots[(r->next + r->capacity - 1 - i) % r->capacity];
    pthread_mutex_unlock(&r->lock);
    return n;
}

uint64_t admin_events_pushed(struct admin_events *r)
{
    uint64_t n;

    pthread_mutex_lock(&r->lock);
    n = r->pushed;
    pthread_mutex_unlock(&r->lock);
    return n;
}
