/* SPDX-License-Identifier: Apache-2.0 */
/*
 * txn - see txn.h. Opens commit/ by path for each call (relative to the
 * spool directory's path): these files are few and small, and the spool's
 * own descriptors stay untouched.
 */
#include "txn.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/util.h"
#include "spool.h"
#include "spool_int.h"

#define SPOOL_TXN_TMP_PREFIX ".tmp-"

static atomic_ulong spool_txn_counter;

static int txn_syserr(char *err, size_t err_len, int error, const char *call,
                      const struct spool *spool, const char *name)
{
    char buf[128];

    util_err(err, err_len, "%s() '%s/" SPOOL_TXN_DIR "%s%s' failed: %s", call,
             spool_dir(spool), name != NULL ? "/" : "",
             name != NULL ? name : "", util_strerror(-error, buf, sizeof(buf)));
    return -error;
}

bool spool_txn_name_valid(const char *name)
{
    size_t n = 0;

    if (name == NULL || name[0] == '\0' || name[0] == '.')
        return false;
    for (; name[n] != '\0'; n++) {
        char c = name[n];
        if (n >= SPOOL_TXN_NAME_MAX)
            return false;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* Opens commit/ (creating it when @create). */
static int txn_open_dir(const struct spool *spool, bool create, int *ret_fd,
                        char *err, size_t err_len)
{
    int top =
        open(spool_dir(spool), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int fd;

    if (top < 0)
        return txn_syserr(err, err_len, errno, "open", spool, NULL);
    if (create && mkdirat(top, SPOOL_TXN_DIR, 0700) < 0 && errno != EEXIST) {
        int r = txn_syserr(err, err_len, errno, "mkdir", spool, NULL);
        (void)close(top);
        return r;
    }
    fd = openat(top, SPOOL_TXN_DIR,
                O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int r = -errno;
        if (r != -ENOENT)
            (void)txn_syserr(err, err_len, -r, "open", spool, NULL);
        (void)close(top);
        return r;
    }
    if (create && spool__io.fsync(top) < 0) {
        int r = txn_syserr(err, err_len, errno, "fsync", spool, NULL);
        (void)close(fd);
        (void)close(top);
        return r;
    }
    (void)close(top);
    *ret_fd = fd;
    return 0;
}

int spool_txn_prepare(struct spool *spool, char *err, size_t err_len)
{
    DIR *d;
    struct dirent *de;
    int fd;
    int r = txn_open_dir(spool, true, &fd, err, err_len);

    if (r < 0)
        return r;
    d = fdopendir(fd);
    if (d == NULL) {
        r = txn_syserr(err, err_len, errno, "fdopendir", spool, NULL);
        (void)close(fd);
        return r;
    }
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, SPOOL_TXN_TMP_PREFIX,
                    strlen(SPOOL_TXN_TMP_PREFIX)) == 0)
            (void)unlinkat(dirfd(d), de->d_name, 0);
    }
    (void)closedir(d);
    return 0;
}

int spool_txn_write(struct spool *spool, const char *name, const void *data,
                    size_t len, unsigned flags, char *err, size_t err_len)
{
    char tmp[SPOOL_TXN_NAME_MAX + 64];
    int dfd = -1;
    int fd = -1;
    int r;

    if (!spool_txn_name_valid(name)) {
        util_err(err, err_len, "invalid commit/ file name");
        return -EINVAL;
    }
    if (len > SPOOL_TXN_FILE_MAX) {
        util_err(err, err_len, "commit/%s: %zu bytes is more than %u", name,
                 len, SPOOL_TXN_FILE_MAX);
        return -EFBIG;
    }
    r = txn_open_dir(spool, true, &dfd, err, err_len);
    if (r < 0)
        return r;
    (void)snprintf(tmp, sizeof(tmp), SPOOL_TXN_TMP_PREFIX "%s-%ld-%lu", name,
                   (long)getpid(), atomic_fetch_add(&spool_txn_counter, 1));
    fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                0600);
    if (fd < 0) {
        r = txn_syserr(err, err_len, errno, "open", spool, tmp);
        goto out_close_dir;
    }
    r = spool_write_all(fd, data, len);
    if (r < 0) {
        (void)txn_syserr(err, err_len, -r, "write", spool, tmp);
        goto out_unlink;
    }
    if (spool__io.fsync(fd) < 0) {
        r = txn_syserr(err, err_len, errno, "fsync", spool, tmp);
        goto out_unlink;
    }
    r = spool__io.close(fd);
    fd = -1;
    if (r < 0) {
        r = txn_syserr(err, err_len, errno, "close", spool, tmp);
        goto out_unlink;
    }
    if (flags & SPOOL_TXN_EXCL)
        r = renameat2(dfd, tmp, dfd, name, RENAME_NOREPLACE);
    else
        r = spool__io.renameat(dfd, tmp, dfd, name);
    if (r < 0) {
        r = -errno;
        if (r != -EEXIST)
            (void)txn_syserr(err, err_len, -r, "rename", spool, name);
        else
            util_err(err, err_len, "commit/%s exists already", name);
        goto out_unlink;
    }
    if (spool__io.fsync(dfd) < 0) {
        /* The file may not survive a crash: say so, and take it back so
         * the caller never reports a durability it does not have. */
        r = txn_syserr(err, err_len, errno, "fsync", spool, NULL);
        (void)unlinkat(dfd, name, 0);
        goto out_close_dir;
    }
    (void)close(dfd);
    return 0;

out_unlink:
    if (fd >= 0)
        (void)close(fd);
    (void)unlinkat(dfd, tmp, 0);
out_close_dir:
    (void)close(dfd);
    return r;
}

int spool_txn_read(const struct spool *spool, const char *name, char **ret_data,
                   size_t *ret_len)
{
    struct stat st;
    char *buf;
    size_t got = 0;
    int dfd;
    int fd;
    int r;

    if (!spool_txn_name_valid(name))
        return -EINVAL;
    r = txn_open_dir(spool, false, &dfd, NULL, 0);
    if (r < 0)
        return r;
    fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    r = fd < 0 ? -errno : 0;
    (void)close(dfd);
    if (r < 0)
        return r;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        (void)close(fd);
        return -EINVAL;
    }
    if ((uint64_t)st.st_size > SPOOL_TXN_FILE_MAX) {
        (void)close(fd);
        return -EFBIG;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        (void)close(fd);
        return -ENOMEM;
    }
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            r = n < 0 ? -errno : -EIO;
            free(buf);
            (void)close(fd);
            return r;
        }
        got += (size_t)n;
    }
    (void)close(fd);
    buf[got] = '\0';
    *ret_data = buf;
    *ret_len = got;
    return 0;
}

bool spool_txn_exists(const struct spool *spool, const char *name)
{
    struct stat st;
    char path[4096];

    if (!spool_txn_name_valid(name))
        return false;
    if (snprintf(path, sizeof(path), "%s/" SPOOL_TXN_DIR "/%s",
                 spool_dir(spool), name) >= (int)sizeof(path))
        return false;
    return lstat(path, &st) == 0;
}

static int txn_name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void spool_txn_list_free(char **names, size_t count)
{
    if (names == NULL)
        return;
    for (size_t i = 0; i < count; i++)
        free(names[i]);
    free(names);
}

int spool_txn_list(const struct spool *spool, char ***ret_names,
                   size_t *ret_count, char *err, size_t err_len)
{
    char **names = NULL;
    size_t count = 0;
    size_t cap = 0;
    struct dirent *de;
    DIR *d;
    int fd;
    int r = txn_open_dir(spool, false, &fd, err, err_len);

    if (r == -ENOENT) {
        *ret_names = NULL;
        *ret_count = 0;
        return 0;
    }
    if (r < 0)
        return r;
    d = fdopendir(fd);
    if (d == NULL) {
        r = txn_syserr(err, err_len, errno, "fdopendir", spool, NULL);
        (void)close(fd);
        return r;
    }
    while ((de = readdir(d)) != NULL) {
        if (!spool_txn_name_valid(de->d_name))
            continue;
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            char **n = realloc(names, ncap * sizeof(*names));
            if (n == NULL)
                goto out_nomem;
            names = n;
            cap = ncap;
        }
        names[count] = strdup(de->d_name);
        if (names[count] == NULL)
            goto out_nomem;
        count++;
    }
    (void)closedir(d);
    if (count > 1)
        qsort(names, count, sizeof(*names), txn_name_cmp);
    *ret_names = names;
    *ret_count = count;
    return 0;

out_nomem:
    (void)closedir(d);
    spool_txn_list_free(names, count);
    util_err(err, err_len, "out of memory");
    return -ENOMEM;
}

int spool_txn_remove(struct spool *spool, const char *name, char *err,
                     size_t err_len)
{
    int dfd;
    int r;

    if (!spool_txn_name_valid(name))
        return -EINVAL;
    r = txn_open_dir(spool, false, &dfd, err, err_len);
    if (r < 0)
        return r;
    if (unlinkat(dfd, name, 0) < 0) {
        r = -errno;
        if (r != -ENOENT)
            (void)txn_syserr(err, err_len, -r, "unlink", spool, name);
        (void)close(dfd);
        return r;
    }
    if (spool__io.fsync(dfd) < 0)
        r = txn_syserr(err, err_len, errno, "fsync", spool, NULL);
    (void)close(dfd);
    return r;
}
