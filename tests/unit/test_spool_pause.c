/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_spool_pause - the spool's pause control file (written by the
 * daemon, read before each scheduling pass, removed by operator tools)
 * and the copy_of field of meta/ files.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spool/spool.h"
#include "tap.h"

static char root[64];
static char err[512];

static void write_text(const char *name, const char *text)
{
    char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", root, name);
    f = fopen(path, "w");
    if (f != NULL) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_pause(void)
{
    struct spool *owner = NULL;
    struct spool *tool = NULL;
    struct spool_pause p;
    struct spool_pause got;
    struct stat st;
    char path[256];

    CHECK(spool_open(root, SPOOL_OPEN_OWNER, &owner, err, sizeof(err)) == 0);
    CHECK(spool_open(root, 0, &tool, err, sizeof(err)) == 0);
    CHECK(spool_pause_read(tool, &got) == -ENOENT);
    CHECK(spool_pause_clear(tool, err, sizeof(err)) == -ENOENT);

    memset(&p, 0, sizeof(p));
    p.until_us = 1800000000123456;
    p.since_us = 1799999999000000;
    snprintf(p.reason, sizeof(p.reason), "HTTP 429 with\nRetry-After 5 s");
    CHECK_MSG(spool_pause_write(owner, &p, err, sizeof(err)) == 0, "%s", err);
    snprintf(path, sizeof(path), "%s/pause", root);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    memset(&got, 0xff, sizeof(got));
    CHECK(spool_pause_read(tool, &got) == 0);
    CHECK(got.until_us == p.until_us && got.since_us == p.since_us);
    CHECK_MSG(strcmp(got.reason, "HTTP 429 with Retry-After 5 s") == 0,
              "no newline reaches the file: '%s'", got.reason);
    snprintf(path, sizeof(path), "%s/.pause.tmp", root);
    CHECK_MSG(access(path, F_OK) != 0, "the temporary file was renamed");

    /* A newer pause replaces the old one whole. */
    p.until_us = 5;
    p.reason[0] = '\0';
    CHECK(spool_pause_write(owner, &p, err, sizeof(err)) == 0);
    CHECK(spool_pause_read(tool, &got) == 0 && got.until_us == 5 &&
          got.reason[0] == '\0');

    /* An operator tool (no lock) ends it. */
    CHECK(spool_pause_clear(tool, err, sizeof(err)) == 0);
    CHECK(spool_pause_read(owner, &got) == -ENOENT);

    /* A file that is not a pause: not read as one, still removable. */
    write_text("pause", "until_us=soon\n");
    CHECK(spool_pause_read(owner, &got) == -EINVAL);
    write_text("pause", "reason=x\n");
    CHECK(spool_pause_read(owner, &got) == -EINVAL);
    CHECK(spool_pause_clear(tool, err, sizeof(err)) == 0);

    /* Start-up recovery leaves it alone (it is not an entry). */
    CHECK(spool_pause_write(owner, &p, err, sizeof(err)) == 0);
    struct spool_recovery rec;
    CHECK(spool_recover(owner, &rec, err, sizeof(err)) == 0);
    CHECK(rec.set_aside == 0 && spool_pause_read(tool, &got) == 0);
    CHECK(spool_pause_clear(owner, err, sizeof(err)) == 0);

    spool_close(tool);
    spool_close(owner);
}

static void test_meta_copy_of(void)
{
    struct spool *spool = NULL;
    struct spool_meta meta;
    struct spool_meta got;
    const char *id = "1700000000.000002-0000000000000002";

    CHECK(spool_open(root, SPOOL_OPEN_OWNER, &spool, err, sizeof(err)) == 0);
    memset(&meta, 0, sizeof(meta));
    snprintf(meta.study_uid, sizeof(meta.study_uid), "1.2.3");
    snprintf(meta.sop_uid, sizeof(meta.sop_uid), "1.2.3.4");
    snprintf(meta.copy_of, sizeof(meta.copy_of),
             "1700000000.000001-0000000000000001");
    snprintf(meta.last_error, sizeof(meta.last_error),
             "conflicting duplicate of 1700000000.000001-0000000000000001");
    CHECK(spool_meta_write(spool, id, &meta, err, sizeof(err)) == 0);
    CHECK(spool_meta_read(spool, id, &got) == 0);
    CHECK(strcmp(got.copy_of, meta.copy_of) == 0);
    CHECK(strcmp(got.last_error, meta.last_error) == 0);
    CHECK(strcmp(got.sop_uid, "1.2.3.4") == 0);

    /* Only an entry ID is taken as copy_of. */
    char path[256];
    snprintf(path, sizeof(path), "meta/%s", id);
    write_text(path, "study=1.2.3\nsop=1.2.3.4\ncopy_of=../../etc\n");
    CHECK(spool_meta_read(spool, id, &got) == 0 && got.copy_of[0] == '\0');
    /* A file from before copy_of existed reads as none. */
    write_text(path, "study=1.2.3\nsop=1.2.3.4\nattempts=2\n");
    CHECK(spool_meta_read(spool, id, &got) == 0 && got.copy_of[0] == '\0' &&
          got.attempts == 2);
    spool_close(spool);
}

int main(void)
{
    char cmd[128];

    snprintf(root, sizeof(root), "/tmp/test_spool_pause-%d", (int)getpid());
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    if (system(cmd) != 0)
        return 1;
    umask(077);
    test_pause();
    test_meta_copy_of();
    if (system(cmd) != 0)
        return 1;
    return tap_done();
}
