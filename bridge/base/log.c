/*
 * log - see log.h.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static atomic_int log_max_level = LOG_LEVEL_INFO;

static const struct {
    const char *name;
    enum log_level level;
} log_level_names[] = {
    { "err", LOG_LEVEL_ERR },
    { "error", LOG_LEVEL_ERR },
    { "warning", LOG_LEVEL_WARNING },
    { "notice", LOG_LEVEL_NOTICE },
    { "info", LOG_LEVEL_INFO },
    { "debug", LOG_LEVEL_DEBUG },
};

void log_set_level(enum log_level level)
{
    atomic_store(&log_max_level, (int)level);
}

bool log_enabled(enum log_level level)
{
    return (int)level <= atomic_load(&log_max_level);
}

int log_level_parse(const char *name, enum log_level *ret_level)
{
    for (size_t i = 0; i < sizeof(log_level_names) / sizeof(log_level_names[0]);
         i++) {
        if (strcmp(name, log_level_names[i].name) == 0) {
            *ret_level = log_level_names[i].level;
            return 0;
        }
    }
    return -EINVAL;
}

const char *log_level_name(enum log_level level)
{
    for (size_t i = 0; i < sizeof(log_level_names) / sizeof(log_level_names[0]);
         i++) {
        if (log_level_names[i].level == level)
            return log_level_names[i].name;
    }
    return "info";
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    char line[LOG_LINE_MAX + 8];
    int saved_errno = errno;
    int prefix;
    int n;
    va_list ap;

    if (!log_enabled(level))
        return;

    prefix = snprintf(line, sizeof(line), "<%d>", (int)level);
    va_start(ap, fmt);
    n = vsnprintf(line + prefix, LOG_LINE_MAX - (size_t)prefix, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= LOG_LINE_MAX - (size_t)prefix) {
        n = LOG_LINE_MAX - prefix - 1;
        memcpy(line + prefix + n - 3, "...", 3);
    }
    n += prefix;
    line[n++] = '\n';

    /* One write per line; a short write to stderr is not worth retrying. */
    (void)!write(STDERR_FILENO, line, (size_t)n);
    errno = saved_errno;
}
