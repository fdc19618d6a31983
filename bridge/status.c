/*
 * status - see status.h.
 */
#include "status.h"

#include <stdio.h>

#include "config.h"
#include "spool.h"
#include "util.h"

/* The order of the JSON keys: the four queue states, then tmp. */
static const enum spool_state status_order[] = {
    SPOOL_INCOMING, SPOOL_ACTIVE, SPOOL_DEFERRED, SPOOL_FAILED, SPOOL_TMP,
};

#define STATUS_STATES (sizeof(status_order) / sizeof(status_order[0]))

int status_main(const struct cfg *cfg, bool json)
{
    struct spool_state_stats stats[SPOOL_STATE_COUNT];
    struct spool *spool = NULL;
    char err[512];
    int r;

    r = spool_open(cfg->spool.dir, 0, &spool, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "stowbridge: %s\n", err);
        return 1;
    }
    r = spool_stats(spool, util_now_realtime_us(), stats, err, sizeof(err));
    spool_close(spool);
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
                   (unsigned long long)s->count,
                   (unsigned long long)s->bytes,
                   (unsigned long long)s->oldest_s);
        }
        printf("}\n");
    } else {
        printf("spool %s\n", cfg->spool.dir);
        printf("%-10s %10s %15s %10s\n", "state", "count", "bytes",
               "oldest_s");
        for (size_t i = 0; i < STATUS_STATES; i++) {
            const struct spool_state_stats *s = &stats[status_order[i]];
            printf("%-10s %10llu %15llu %10llu\n",
                   spool_state_name(status_order[i]),
                   (unsigned long long)s->count,
                   (unsigned long long)s->bytes,
                   (unsigned long long)s->oldest_s);
        }
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "stowbridge: cannot write to standard output\n");
        return 1;
    }
    return 0;
}
