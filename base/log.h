/* SPDX-License-Identifier: Apache-2.0 */
/*
 * log - structured one-line events on stderr for journald.
 *
 * Every line starts with a syslog priority prefix "<N>" (sd-daemon(3)
 * convention), so journald files it at the right level; time stamps come
 * from journald. Each call writes its line with a single write(2), so lines
 * from different threads never interleave. Lines longer than
 * LOG_LINE_MAX are cut and end in "...".
 *
 * Only program code logs (main, scheduler, workers, the SCP adapter);
 * library modules return error codes. Never pass patient data, secrets or
 * tokens to these functions.
 *
 * One event, one line, no forged events: every "%s" argument is escaped
 * here, whatever its source (DCMTK texts, AE titles and other values a
 * peer chose, server bodies, our own messages alike):
 *   backslash -> \\, double quote -> \", newline -> \n, carriage
 *   return -> \r, tab -> \t, other control characters, DEL and bytes
 *   that are not well-formed UTF-8 -> \xNN;
 * and where the "%s" stands outside double quotes in the format string
 * (an unquoted value such as from=%s), also space -> \x20 and
 * "=" -> \x3d. So a key=value pair outside quotes is always one that
 * our own format wrote, and a quoted value always ends at our own closing
 * quote: `grep 'event=failed'` over the part before the first quote only
 * ever finds our own events. Free text belongs inside quotes
 * (reason="%s"). Other conversions (%d, %u, %x, %zu, %c, ...) are ours
 * and written as printf would; "%n" is not supported.
 *
 * Thread safety: all functions may be called from any thread.
 */
#ifndef STOWBRIDGE_LOG_H
#define STOWBRIDGE_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Syslog priorities, the same numbers as <syslog.h>. */
enum log_level {
    LOG_LEVEL_ERR = 3,
    LOG_LEVEL_WARNING = 4,
    LOG_LEVEL_NOTICE = 5,
    LOG_LEVEL_INFO = 6,
    LOG_LEVEL_DEBUG = 7,
};

#define LOG_LINE_MAX 2048

/* Sets the most verbose level that is still written (default INFO). */
void log_set_level(enum log_level level);

/* True if a message at @level would be written. */
bool log_enabled(enum log_level level);

/*
 * Parses a level name ("err", "error", "warning", "notice", "info",
 * "debug") into @ret_level. Returns 0, or -EINVAL for an unknown name.
 */
int log_level_parse(const char *name, enum log_level *ret_level);

/* The canonical name of @level ("err", "warning", ...). */
const char *log_level_name(enum log_level level);

/*
 * Typedef for a log observer: called after each line written, on the
 * logging thread, with the line as written ("<N>" prefix, escaped values,
 * trailing newline, NUL-terminated) and its length. It must be quick, must not
 * log, and only sees what the log sees (never patient data).
 */
typedef void (*log_observer_fn)(void *ctx, enum log_level level,
                                const char *line, size_t len);

/*
 * Sets the one observer (NULL: none). Set it before threads log and clear
 * it only once they stopped: a call in flight may still use the old one.
 */
void log_set_observer(log_observer_fn fn, void *ctx);

/* Writes one line at @level; printf-style format, no trailing newline. */
void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * The formatter behind log_msg(), for tests and for messages built the
 * same way: formats @fmt with @ap into @buf (capacity @len, always
 * NUL-terminated when @len > 0), escaping "%s" arguments as described
 * above. A result that does not fit is cut and ends in "...". Returns the
 * length written (excluding the NUL).
 */
size_t log_vformat(char *buf, size_t len, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#define log_err(...) log_msg(LOG_LEVEL_ERR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_LEVEL_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

#ifdef __cplusplus
}
#endif

#endif
