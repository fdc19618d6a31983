/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_spool_txn - the spool's commit/ area (spool/txn.h): durable whole
 * writes, exclusive creation, listing without temporary files, removal,
 * name validation, and a failing fsync that must not leave a file behind.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spool/spool.h"
#include "spool/spool_int.h"
#include "spool/txn.h"
#include "tap.h"

static char root[64];
static char err[512];
static int fsync_calls;
static int fsync_fail_at;

static int failing_fsync(int fd)
{
    if (++fsync_calls == fsync_fail_at) {
        errno = EIO;
        return -1;
    }
    return fsync(fd);
}

int main(void)
{
    struct spool *spool = NULL;
    char **names = NULL;
    size_t count = 0;
    char *data = NULL;
    size_t len = 0;
    char path[256];

    snprintf(root, sizeof(root), "/tmp/sb-txn-XXXXXX");
    CHECK(mkdtemp(root) != NULL);
    CHECK(spool_open(root, SPOOL_OPEN_OWNER, &spool, err, sizeof(err)) == 0);

    /* No commit/ yet: an empty list, a read that finds nothing. */
    CHECK(spool_txn_list(spool, &names, &count, err, sizeof(err)) == 0);
    CHECK(count == 0 && names == NULL);
    CHECK(spool_txn_read(spool, "1.2.3.req", &data, &len) == -ENOENT);

    /* Leftover temporary file from a crash is removed by prepare. */
    snprintf(path, sizeof(path), "%s/commit", root);
    CHECK(mkdir(path, 0700) == 0);
    snprintf(path, sizeof(path), "%s/commit/.tmp-1.2.3.req-1-0", root);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0);
    if (fd >= 0)
        close(fd);
    CHECK(spool_txn_prepare(spool, err, sizeof(err)) == 0);
    CHECK(access(path, F_OK) < 0 && errno == ENOENT);

    CHECK(spool_txn_write(spool, "1.2.3.req", "abc\n", 4, SPOOL_TXN_EXCL, err,
                          sizeof(err)) == 0);
    CHECK(spool_txn_exists(spool, "1.2.3.req"));
    CHECK(spool_txn_write(spool, "1.2.3.req", "x", 1, SPOOL_TXN_EXCL, err,
                          sizeof(err)) == -EEXIST);
    CHECK(strstr(err, "exists") != NULL);
    CHECK(spool_txn_read(spool, "1.2.3.req", &data, &len) == 0);
    CHECK(len == 4 && data != NULL && strcmp(data, "abc\n") == 0);
    free(data);
    data = NULL;
    /* Without EXCL: replaced whole. */
    CHECK(spool_txn_write(spool, "1.2.3.req", "defg", 4, 0, err, sizeof(err)) ==
          0);
    CHECK(spool_txn_read(spool, "1.2.3.req", &data, &len) == 0);
    CHECK(len == 4 && data != NULL && strcmp(data, "defg") == 0);
    free(data);
    data = NULL;
    struct stat st;
    snprintf(path, sizeof(path), "%s/commit/1.2.3.req", root);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);

    CHECK(spool_txn_write(spool, "1.2.1.rep", "r", 1, 0, err, sizeof(err)) ==
          0);
    CHECK(spool_txn_list(spool, &names, &count, err, sizeof(err)) == 0);
    CHECK(count == 2 && strcmp(names[0], "1.2.1.rep") == 0 &&
          strcmp(names[1], "1.2.3.req") == 0);
    spool_txn_list_free(names, count);

    /* Names that could leave commit/ or hide are refused. */
    CHECK(!spool_txn_name_valid("../x"));
    CHECK(!spool_txn_name_valid(".hidden"));
    CHECK(!spool_txn_name_valid(""));
    CHECK(!spool_txn_name_valid("a/b"));
    CHECK(spool_txn_write(spool, "../escape", "x", 1, 0, err, sizeof(err)) ==
          -EINVAL);

    /* A failing fsync of the file: an error, no file, no temp left. */
    spool__io.fsync = failing_fsync;
    fsync_calls = 0;
    fsync_fail_at = 2; /* commit/ itself first, then the file */
    CHECK(spool_txn_write(spool, "9.9.req", "x", 1, SPOOL_TXN_EXCL, err,
                          sizeof(err)) == -EIO);
    CHECK(strstr(err, "fsync") != NULL);
    CHECK(!spool_txn_exists(spool, "9.9.req"));
    /* A failing fsync of the directory after the rename: taken back. */
    fsync_calls = 0;
    fsync_fail_at = 3;
    CHECK(spool_txn_write(spool, "9.9.req", "x", 1, SPOOL_TXN_EXCL, err,
                          sizeof(err)) == -EIO);
    CHECK(!spool_txn_exists(spool, "9.9.req"));
    spool__io_reset();
    CHECK(spool_txn_list(spool, &names, &count, err, sizeof(err)) == 0);
    CHECK(count == 2);
    spool_txn_list_free(names, count);

    CHECK(spool_txn_remove(spool, "1.2.3.req", err, sizeof(err)) == 0);
    CHECK(spool_txn_remove(spool, "1.2.3.req", err, sizeof(err)) == -ENOENT);
    CHECK(!spool_txn_exists(spool, "1.2.3.req"));

    spool_close(spool);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
    CHECK(system(cmd) == 0);
    return tap_done();
}
