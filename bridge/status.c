/* SPDX-License-Identifier: Apache-2.0 */
/*
 * status - see status.h.
 */
#include "status.h"

#include <stdio.h>
#include <time.h>

#include "base/util.h"
#include "config/config.h"
#include "spool/spool.h"

/* The order of the JSON keys: the four queue states, then tmp. */
static const enum spool_state status_order[] = {
    SPOOL_INCOMING, SPOOL_ACTIVE, SPOOL_DEFERRED, SPOOL_FAILED, SPOOL_TMP,
};

#define STATUS_STATES (sizeof(status_order) / sizeof(status_order[0]))

/* Writes @text as the body of a JSON string (our own words: no control
 * characters reach here, spool_pause_read() cleaned them). */
static void status_json_string(const char *text)
{
    putchar('"');
    for (const char *p = text; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\')
            putchar('\\');
        putchar(*p);
    }
    putchar('"');
}

int status_main(const struct cfg *cfg, bool json)
{
    struct spool_state_stats stats[SPOOL_STATE_COUNT];
    struct spool *spool = NULL;
    struct spool_pause pause;
    int64_t now = (int64_t)util_now_realtime_us();
    bool paused;
    char until[32];
    char err[512];
    int r;

    r = spool_open(cfg->spool.dir, 0, &spool, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "stowbridge: %s\n", err);
        return 1;
    }
    r = spool_stats(spool, (uint64_t)now, stats, err, sizeof(err));
    paused = spool_pause_read(spool, &pause) == 0 && pause.until_us > now;
    spool_close(spool);
    if (paused) {
        time_t t = (time_t)(pause.until_us / 1000000);
        struct tm tm;
        strftime(until, sizeof(until), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
    }
    if (r < 0) {
        fprintf(stderr, "stowbridge: %s\n", err);
        return 1;
    }

    if (json) {
        printf("{");
        for (size_t i = 0; i < STATUS_STATES; i++) {
            const struct spool_state_stats *s = &stats[status_order[i]];
            printf("%s\"%s\": {\"count\": %llu, \"bytes\": %llu, "
                   "\"oldest_s\": %llu}",
                   i == 0 ? "" : ", ", spool_state_name(status_order[i]),
                   (unsigned long long)s->count, (unsigned long long)s->bytes,
                   (unsigned long long)s->oldest_s);
        }
        if (paused) {
            printf(", \"paused\": {\"remaining_s\": %lld, \"until\": \"%s\", "
                   "\"reason\": ",
                   (long long)((pause.until_us - now + 999999) / 1000000),
                   until);
            status_json_string(pause.reason);
            printf("}");
        } else {
            printf(", \"paused\": null");
        }
        printf("}\n");
    } else {
        printf("spool %s\n", cfg->spool.dir);
        printf("%-10s %10s %15s %10s\n", "state", "count", "bytes", "oldest_s");
        for (size_t i = 0; i < STATUS_STATES; i++) {
            const struct spool_state_stats *s = &stats[status_order[i]];
            printf("%-10s %10llu %15llu %10llu\n",
                   spool_state_name(status_order[i]),
                   (unsigned long long)s->count, (unsigned long long)s->bytes,
                   (unsigned long long)s->oldest_s);
        }
        if (paused)
            printf("uploads paused until %s (%lld s left): %s; "
                   "'stowbridge queue resume' ends it now\n",
                   until,
                   (long long)((pause.until_us - now + 999999) / 1000000),
                   pause.reason);
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "stowbridge: cannot write to standard output\n");
        return 1;
    }
    return 0;
}
