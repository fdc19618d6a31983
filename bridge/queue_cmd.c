/* SPDX-License-Identifier: Apache-2.0 */
/*
 * queue_cmd - `stowbridge queue list|show|retry|delete|resume`: what an
 * operator sees and does with spool entries. Every action is one atomic
 * rename or unlink through the spool, so it is safe while the daemon runs
 * (a lost race with the uploader is reported, never harmful). `resume`
 * and `retry` also remove the spool's pause file, which the daemon reads
 * before each scheduling pass, so a pause ends at once.
 *
 * Program code: prints to stdout, problems to stderr; returns the process
 * exit status.
 */
#include "queue_cmd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/util.h"
#include "config/config.h"
#include "dicom/redact.h"
#include "servertext.h"
#include "spool/spool.h"
#include "web/stow.h"

static const enum spool_state queue_states[] = {
    SPOOL_INCOMING,
    SPOOL_ACTIVE,
    SPOOL_DEFERRED,
    SPOOL_FAILED,
};

#define QUEUE_STATE_COUNT (sizeof(queue_states) / sizeof(queue_states[0]))

static void queue_usage(void)
{
    fprintf(stderr,
            "usage: stowbridge queue list [STATE] --config FILE\n"
            "       stowbridge queue show ID --config FILE\n"
            "       stowbridge queue retry ID|--all-failed --config FILE\n"
            "       stowbridge queue delete ID --config FILE\n"
            "       stowbridge queue resume --config FILE\n"
            "STATE is incoming, active, deferred or failed.\n");
}

/* Finds the state that holds @id; -ENOENT if none. */
static int queue_find(struct spool *spool, const char *id,
                      enum spool_state *ret_state)
{
    char path[4096];

    for (size_t i = 0; i < QUEUE_STATE_COUNT; i++) {
        if (spool_entry_path(spool, queue_states[i], id, path, sizeof(path)) <
            0)
            continue;
        if (access(path, F_OK) == 0) {
            *ret_state = queue_states[i];
            return 0;
        }
    }
    return -ENOENT;
}

/*
 * The last error of entry @id in @state as it may be shown: the server's
 * words in it were redacted when the daemon wrote them, and are checked
 * again against the entry's own identifying values here (a meta/ file
 * written by an older version may hold them).
 */
static const char *queue_last_error(struct spool *spool, enum spool_state state,
                                    const char *id,
                                    const struct spool_meta *meta, char *buf,
                                    size_t len)
{
    char ids[1][SPOOL_ID_MAX];
    struct redact *hide;

    if (meta->last_error[0] == '\0')
        return "-";
    snprintf(ids[0], sizeof(ids[0]), "%s", id);
    hide = servertext_for_entries(
        spool, state, (const char(*)[SPOOL_ID_MAX])ids, 1, NULL, NULL);
    redact_text(hide, meta->last_error, strlen(meta->last_error),
                sizeof(meta->last_error), buf, len);
    redact_free(hide);
    return buf;
}

static int queue_list(struct spool *spool, const char *state_name)
{
    int64_t now = (int64_t)util_now_realtime_us();
    char err[256];
    size_t shown = 0;

    printf("%-35s %-9s %10s %8s  %-40s %s\n", "ID", "STATE", "BYTES", "AGE_S",
           "SOP", "LAST_ERROR");
    for (size_t s = 0; s < QUEUE_STATE_COUNT; s++) {
        struct spool_entry *entries = NULL;
        size_t count = 0;

        if (state_name != NULL &&
            strcmp(state_name, spool_state_name(queue_states[s])) != 0)
            continue;
        if (spool_list(spool, queue_states[s], &entries, &count, err,
                       sizeof(err)) < 0) {
            fprintf(stderr, "stowbridge: %s\n", err);
            return 1;
        }
        for (size_t i = 0; i < count; i++) {
            struct spool_meta meta;
            uint64_t arrival = 0;
            char last_error[sizeof(meta.last_error) + 8];

            if (spool_meta_read(spool, entries[i].id, &meta) < 0)
                memset(&meta, 0, sizeof(meta));
            (void)spool_id_arrival_us(entries[i].id, &arrival);
            char held[SPOOL_ID_MAX + 32];
            snprintf(held, sizeof(held), "(copy of %s)", meta.copy_of);
            printf("%-35s %-9s %10llu %8lld  %-40s %s\n", entries[i].id,
                   spool_state_name(queue_states[s]),
                   (unsigned long long)entries[i].size,
                   (long long)((now - (int64_t)arrival) / 1000000),
                   meta.sop_uid[0] ? meta.sop_uid : "-",
                   meta.last_error[0]
                       ? queue_last_error(spool, queue_states[s], entries[i].id,
                                          &meta, last_error, sizeof(last_error))
                   : meta.copy_of[0] ? held
                                     : "-");
            shown++;
        }
        free(entries);
    }
    printf("%zu entries\n", shown);
    return 0;
}

static int queue_show(struct spool *spool, const char *id)
{
    enum spool_state state;
    struct spool_meta meta;
    uint64_t arrival = 0;
    char path[4096];
    char when[64];
    char last_error[sizeof(meta.last_error) + 8];
    struct stat st;
    time_t t;

    if (queue_find(spool, id, &state) < 0) {
        fprintf(stderr, "stowbridge: no entry %s in the spool\n", id);
        return 1;
    }
    (void)spool_entry_path(spool, state, id, path, sizeof(path));
    if (spool_meta_read(spool, id, &meta) < 0)
        memset(&meta, 0, sizeof(meta));
    (void)spool_id_arrival_us(id, &arrival);
    t = (time_t)(arrival / 1000000);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
    printf("id:           %s\n", id);
    printf("state:        %s\n", spool_state_name(state));
    printf("file:         %s\n", path);
    if (stat(path, &st) == 0)
        printf("bytes:        %lld\n", (long long)st.st_size);
    printf("arrived:      %s\n", when);
    if (state == SPOOL_DEFERRED && stat(path, &st) == 0) {
        t = st.st_mtim.tv_sec;
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
        printf("not before:   %s\n", when);
    }
    printf("study:        %s\n", meta.study_uid[0] ? meta.study_uid : "-");
    printf("sop:          %s\n", meta.sop_uid[0] ? meta.sop_uid : "-");
    printf("from:         %s\n", meta.calling_ae[0] ? meta.calling_ae : "-");
    printf("attempts:     %u\n", meta.attempts);
    if (meta.last_attempt_us > 0) {
        t = (time_t)(meta.last_attempt_us / 1000000);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
        printf("last attempt: %s\n", when);
    }
    if (meta.last_http_status != 0)
        printf("last status:  HTTP %ld\n", meta.last_http_status);
    if (meta.last_reason != 0)
        printf("last reason:  %04X (%s)\n", meta.last_reason,
               stow_reason_text(meta.last_reason));
    printf("last error:   %s\n",
           queue_last_error(spool, state, id, &meta, last_error,
                            sizeof(last_error)));
    if (meta.copy_of[0] != '\0') {
        enum spool_state other;
        if (queue_find(spool, meta.copy_of, &other) == 0)
            printf("copy of:      %s (same SOP Instance UID, in %s/)\n",
                   meta.copy_of, spool_state_name(other));
        else
            printf("copy of:      %s (same SOP Instance UID; no longer in "
                   "the spool: delivered or deleted)\n",
                   meta.copy_of);
    }
    return 0;
}

/* Removes the pause file, if a pause is in effect; says so. */
static void queue_lift_pause(struct spool *spool)
{
    int64_t now = (int64_t)util_now_realtime_us();
    struct spool_pause pause;
    char err[256];
    bool active = spool_pause_read(spool, &pause) == 0 && pause.until_us > now;
    int r = spool_pause_clear(spool, err, sizeof(err));

    if (r < 0 && r != -ENOENT) {
        fprintf(stderr, "stowbridge: cannot lift the pause: %s\n", err);
        return;
    }
    if (active)
        printf("pause lifted (%lld s were left: %s)\n",
               (long long)((pause.until_us - now + 999999) / 1000000),
               pause.reason);
}

/* Ends a pause and makes every deferred entry due now. */
static int queue_resume(struct spool *spool)
{
    int64_t now = (int64_t)util_now_realtime_us();
    struct spool_entry *entries = NULL;
    size_t count = 0;
    size_t due = 0;
    char err[256];
    int status = 0;
    struct spool_pause pause;

    if (spool_pause_read(spool, &pause) < 0 || pause.until_us <= now)
        printf("no pause in effect\n");
    queue_lift_pause(spool);
    if (spool_list(spool, SPOOL_DEFERRED, &entries, &count, err, sizeof(err)) <
        0) {
        fprintf(stderr, "stowbridge: %s\n", err);
        return 1;
    }
    for (size_t i = 0; i < count; i++) {
        if (entries[i].mtime_us <= now)
            continue;
        int r = spool_defer(spool, entries[i].id, SPOOL_DEFERRED, now, err,
                            sizeof(err));
        if (r == 0) {
            due++;
        } else if (r != -ENOENT) { /* ENOENT: taken by the daemon */
            fprintf(stderr, "stowbridge: %s: %s\n", entries[i].id, err);
            status = 1;
        }
    }
    free(entries);
    printf("%zu deferred entries are due now\n", due);
    return status;
}

/* Moves one entry from deferred/ or failed/ back to incoming/. */
static int queue_retry_one(struct spool *spool, const char *id)
{
    enum spool_state state;
    struct spool_meta meta;
    char err[256];
    int r;

    if (queue_find(spool, id, &state) < 0) {
        fprintf(stderr, "stowbridge: no entry %s in the spool\n", id);
        return 1;
    }
    if (state != SPOOL_FAILED && state != SPOOL_DEFERRED) {
        fprintf(stderr,
                "stowbridge: %s is in %s/: only deferred or failed "
                "entries can be retried\n",
                id, spool_state_name(state));
        return 1;
    }
    if (spool_meta_read(spool, id, &meta) == 0) {
        /* A fresh start for the backoff; the last error stays visible. */
        meta.attempts = 0;
        (void)spool_meta_write(spool, id, &meta, err, sizeof(err));
    }
    r = spool_move(spool, id, state, SPOOL_INCOMING, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "stowbridge: %s: %s\n", id,
                r == -ENOENT ? "moved by the daemon meanwhile" : err);
        return 1;
    }
    printf("%s: %s -> incoming\n", id, spool_state_name(state));
    queue_lift_pause(spool);
    return 0;
}

static int queue_retry_all_failed(struct spool *spool)
{
    struct spool_entry *entries = NULL;
    size_t count = 0;
    char err[256];
    int failures = 0;

    if (spool_list(spool, SPOOL_FAILED, &entries, &count, err, sizeof(err)) <
        0) {
        fprintf(stderr, "stowbridge: %s\n", err);
        return 1;
    }
    for (size_t i = 0; i < count; i++)
        failures += queue_retry_one(spool, entries[i].id);
    free(entries);
    printf("%zu failed entries retried\n", count - (size_t)failures);
    queue_lift_pause(spool);
    return failures == 0 ? 0 : 1;
}

static int queue_delete(struct spool *spool, const char *id)
{
    enum spool_state state;
    char err[256];
    int r;

    if (queue_find(spool, id, &state) < 0) {
        fprintf(stderr, "stowbridge: no entry %s in the spool\n", id);
        return 1;
    }
    if (state == SPOOL_ACTIVE) {
        fprintf(stderr,
                "stowbridge: %s is being uploaded right now; try "
                "again in a moment\n",
                id);
        return 1;
    }
    r = spool_remove(spool, id, state, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "stowbridge: %s: %s\n", id,
                r == -ENOENT ? "moved by the daemon meanwhile" : err);
        return 1;
    }
    printf("%s: deleted from %s/ (it will not be sent)\n", id,
           spool_state_name(state));
    return 0;
}

int queue_main(const struct cfg *cfg, int argc, char **argv)
{
    struct spool *spool = NULL;
    const char *action;
    const char *arg;
    char err[512];
    int status;

    if (argc < 1) {
        queue_usage();
        return 2;
    }
    action = argv[0];
    arg = argc > 1 ? argv[1] : NULL;
    if (argc > 2) {
        queue_usage();
        return 2;
    }
    if (strcmp(action, "list") == 0) {
        enum spool_state state;
        if (arg != NULL &&
            (spool_state_parse(arg, &state) < 0 || state == SPOOL_TMP)) {
            fprintf(stderr, "stowbridge: unknown state '%s'\n", arg);
            return 2;
        }
    } else if (strcmp(action, "resume") == 0) {
        if (arg != NULL) {
            queue_usage();
            return 2;
        }
    } else if (strcmp(action, "show") == 0 || strcmp(action, "delete") == 0 ||
               strcmp(action, "retry") == 0) {
        if (arg == NULL ||
            (!spool_id_valid(arg) && !(strcmp(action, "retry") == 0 &&
                                       strcmp(arg, "--all-failed") == 0))) {
            fprintf(stderr,
                    "stowbridge: queue %s needs an entry ID (as "
                    "'queue list' shows it)\n",
                    action);
            return 2;
        }
    } else {
        queue_usage();
        return 2;
    }

    if (spool_open(cfg->spool.dir, 0, &spool, err, sizeof(err)) < 0) {
        fprintf(stderr, "stowbridge: %s\n", err);
        return 1;
    }
    if (strcmp(action, "list") == 0)
        status = queue_list(spool, arg);
    else if (strcmp(action, "show") == 0)
        status = queue_show(spool, arg);
    else if (strcmp(action, "delete") == 0)
        status = queue_delete(spool, arg);
    else if (strcmp(action, "resume") == 0)
        status = queue_resume(spool);
    else if (strcmp(arg, "--all-failed") == 0)
        status = queue_retry_all_failed(spool);
    else
        status = queue_retry_one(spool, arg);
    spool_close(spool);
    return status;
}
