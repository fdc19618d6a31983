/* SPDX-License-Identifier: Apache-2.0 */
/*
 * events - a bounded ring of the most recent events for the status page:
 * the logging side pushes one line per event, the status snapshot copies
 * the newest ones out.
 *
 * Each event keeps its time, its syslog level and at most
 * ADMIN_EVENT_TEXT_MAX - 1 bytes of text, cut at a UTF-8 character
 * boundary; control characters become spaces and bytes that are not
 * well-formed UTF-8 become '?', so what is kept is one printable line.
 * The ring never grows: the oldest event is overwritten. It stores what
 * it is given: feed it log lines, which never carry patient data
 * (STYLE.md), and nothing else.
 *
 * Thread safety: every function may be called from any thread; a short
 * mutex guards the ring (one memcpy of a line per push).
 * Ownership: text is copied in and out; nothing is borrowed.
 */
#ifndef STOWBRIDGE_ADMIN_EVENTS_H
#define STOWBRIDGE_ADMIN_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct admin_events;

#define ADMIN_EVENT_TEXT_MAX 320
#define ADMIN_EVENTS_CAPACITY_MAX 4096

struct admin_event {
    int64_t time_s; /* Unix time */
    int level;      /* syslog priority: 3 err .. 7 debug */
    char text[ADMIN_EVENT_TEXT_MAX];
};

/* A ring of @capacity events (1..ADMIN_EVENTS_CAPACITY_MAX), or NULL
 * (out of memory, or a capacity out of range). */
struct admin_events *admin_events_new(size_t capacity);

/* Frees the ring. Accepts NULL. */
void admin_events_free(struct admin_events *ring);

/* Adds one event (text cleaned and cut as described above). */
void admin_events_push(struct admin_events *ring, int64_t time_s, int level,
                       const char *text);

/*
 * Adds a line as the log module writes it: an optional "<N>" syslog
 * prefix (level N; 6 when absent) and a trailing newline, both removed.
 */
void admin_events_push_line(struct admin_events *ring, int64_t time_s,
                            const char *line);

/* Copies up to @max events, newest first, into @out; returns how many. */
size_t admin_events_copy(struct admin_events *ring, struct admin_event *out,
                         size_t max);

/* Events pushed since the ring was made (kept or overwritten). */
uint64_t admin_events_pushed(struct admin_events *ring);

#ifdef __cplusplus
}
#endif

#endif
