/* SPDX-License-Identifier: Apache-2.0 */
/*
 * partfile - see partfile.h.
 */
#include "partfile.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "base/util.h"
#include "multipart.h"

/* "<prefix>-" + 16 hex + ".dcm" + NUL */
#define PARTFILE_NAME_MAX (PARTFILE_PREFIX_MAX + 1 + 16 + 4 + 1)

struct partfile_sink {
    char *dir;
    int dir_fd;
    char prefix[PARTFILE_PREFIX_MAX + 1];
    uint64_t budget;
    partfile_file_fn on_file;
    void *ctx;

    /* The open part (producer thread only). */
    int fd; /* -1 when no part is open */
    char name[PARTFILE_NAME_MAX];
    char *path; /* dir/name */
    uint64_t written;
    unsigned index;
    char content_type[MULTIPART_TYPE_MAX + 1];
    char transfer_syntax[MULTIPART_UID_MAX + 1];
    char *content_location;

    /* The budget, under lock. */
    pthread_mutex_t lock;
    pthread_cond_t released;
    uint64_t handed;  /* handed out, not yet released */
    uint64_t current; /* bytes of the open part */
    uint64_t files;
    uint64_t bytes;
    uint64_t peak;
    partfile_wake_fn wake;
    void *wake_ctx;
};

/* "call() 'path' failed: reason"; returns -@errnum. */
static int pf_syserr(char *err, size_t err_len, int errnum, const char *call,
                     const char *path)
{
    char buf[128];

    util_err(err, err_len, "%s() '%s' failed: %s", call, path,
             strerror_r(errnum, buf, sizeof(buf)));
    return -errnum;
}

static bool pf_prefix_valid(const char *p)
{
    size_t n = strlen(p);

    return n > 0 && n <= PARTFILE_PREFIX_MAX &&
           strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "0123456789-_") == n;
}

int partfile_new(const struct partfile_params *params,
                 struct partfile_sink **ret_sink, char *err, size_t err_len)
{
    const char *prefix = params->prefix != NULL ? params->prefix : "part";
    struct partfile_sink *s;
    pthread_condattr_t attr;

    if (!pf_prefix_valid(prefix)) {
        util_err(err, err_len,
                 "file name prefix must be 1..%d letters, digits, "
                 "'-' or '_'",
                 PARTFILE_PREFIX_MAX);
        return -EINVAL;
    }
    if (params->on_file == NULL || params->dir == NULL) {
        util_err(err, err_len, "a directory and a file callback are required");
        return -EINVAL;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    s->fd = -1;
    s->dir_fd = -1;
    s->dir = strdup(params->dir);
    if (s->dir == NULL) {
        free(s);
        return -ENOMEM;
    }
    memcpy(s->prefix, prefix, strlen(prefix) + 1);
    s->budget = params->budget_bytes;
    s->on_file = params->on_file;
    s->ctx = params->ctx;
    s->dir_fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->dir_fd < 0) {
        int r = pf_syserr(err, err_len, errno, "open", s->dir);
        free(s->dir);
        free(s);
        return r;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&s->released, &attr);
    pthread_condattr_destroy(&attr);
    *ret_sink = s;
    return 0;
}

/* Forgets the names of the part that was open (its path and
 * Content-Location). */
static void pf_forget_part(struct partfile_sink *s)
{
    free(s->path);
    s->path = NULL;
    free(s->content_location);
    s->content_location = NULL;
}

/* Closes and removes the open part's file; gives back its bytes. */
static void pf_drop(struct partfile_sink *s)
{
    if (s->fd < 0)
        return;
    (void)close(s->fd);
    (void)unlinkat(s->dir_fd, s->name, 0);
    s->fd = -1;
    pf_forget_part(s);
    pthread_mutex_lock(&s->lock);
    s->current = 0;
    pthread_cond_broadcast(&s->released);
    pthread_mutex_unlock(&s->lock);
}

void partfile_free(struct partfile_sink *sink)
{
    if (sink == NULL)
        return;
    pf_drop(sink);
    if (sink->dir_fd >= 0)
        (void)close(sink->dir_fd);
    pthread_cond_destroy(&sink->released);
    pthread_mutex_destroy(&sink->lock);
    free(sink->dir);
    free(sink);
}

void partfile_abort(struct partfile_sink *sink)
{
    pf_drop(sink);
}

int partfile_begin(struct partfile_sink *s, const struct multipart_part *part,
                   char *err, size_t err_len)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char rnd[8];
    int fd = -1;

    if (s->fd >= 0) {
        util_err(err, err_len, "part %u begun while part %u is open",
                 part->index + 1, s->index + 1);
        return -EBUSY;
    }
    for (int attempt = 0; attempt < 8 && fd < 0; attempt++) {
        char *p = s->name;
        if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
            return pf_syserr(err, err_len, errno != 0 ? errno : EIO,
                             "getrandom", s->dir);
        p += snprintf(p, sizeof(s->name), "%s-", s->prefix);
        for (size_t i = 0; i < sizeof(rnd); i++) {
            *p++ = hex[rnd[i] >> 4];
            *p++ = hex[rnd[i] & 15];
        }
        memcpy(p, ".dcm", 5);
        fd = openat(s->dir_fd, s->name,
                    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        int errnum = errno;
        char buf[128];
        util_err(err, err_len, "open() '%s/%s' failed: %s", s->dir, s->name,
                 strerror_r(errnum, buf, sizeof(buf)));
        return -errnum;
    }
    if (asprintf(&s->path, "%s/%s", s->dir, s->name) < 0) {
        s->path = NULL;
        goto out_nomem;
    }
    s->content_location = NULL;
    if (part->content_location != NULL) {
        s->content_location = strdup(part->content_location);
        if (s->content_location == NULL)
            goto out_nomem;
    }
    s->fd = fd;
    s->written = 0;
    s->index = part->index;
    memcpy(s->content_type, part->content_type.type, sizeof(s->content_type));
    memcpy(s->transfer_syntax, part->content_type.transfer_syntax,
           sizeof(s->transfer_syntax));
    if (!part->has_content_type)
        s->content_type[0] = '\0';
    return 0;

out_nomem:
    free(s->path);
    s->path = NULL;
    (void)close(fd);
    (void)unlinkat(s->dir_fd, s->name, 0);
    return -ENOMEM;
}

int partfile_write(struct partfile_sink *s, const void *data, size_t len,
                   char *err, size_t err_len)
{
    const unsigned char *p = data;
    size_t left = len;

    if (s->fd < 0) {
        util_err(err, err_len, "data without an open part");
        return -EBADF;
    }
    while (left > 0) {
        ssize_t n = write(s->fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int r =
                pf_syserr(err, err_len, n < 0 ? errno : EIO, "write", s->path);
            pf_drop(s);
            return r;
        }
        p += n;
        left -= (size_t)n;
    }
    s->written += len;
    pthread_mutex_lock(&s->lock);
    s->current += len;
    if (s->handed + s->current > s->peak)
        s->peak = s->handed + s->current;
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int partfile_end(struct partfile_sink *s, char *err, size_t err_len)
{
    struct partfile_file file;
    int r;

    if (s->fd < 0) {
        util_err(err, err_len, "end without an open part");
        return -EBADF;
    }
    r = close(s->fd);
    s->fd = -1;
    if (r < 0) {
        r = pf_syserr(err, err_len, errno, "close", s->path);
        goto out_remove;
    }
    /* Counted as handed out before the callback: the consumer may
     * release it from another thread before on_file() even returns. */
    pthread_mutex_lock(&s->lock);
    s->current = 0;
    s->handed += s->written;
    s->files++;
    s->bytes += s->written;
    pthread_mutex_unlock(&s->lock);

    file.path = s->path;
    file.size = s->written;
    file.index = s->index;
    file.content_type = s->content_type;
    file.transfer_syntax = s->transfer_syntax;
    file.content_location = s->content_location;
    r = s->on_file(s->ctx, &file, err, err_len);
    if (r < 0) {
        pthread_mutex_lock(&s->lock);
        s->handed -= s->written;
        s->files--;
        s->bytes -= s->written;
        pthread_cond_broadcast(&s->released);
        pthread_mutex_unlock(&s->lock);
        goto out_remove;
    }
    pf_forget_part(s);
    return 0;

out_remove:
    (void)unlinkat(s->dir_fd, s->name, 0);
    pf_forget_part(s);
    pthread_mutex_lock(&s->lock);
    s->current = 0;
    pthread_mutex_unlock(&s->lock);
    return r;
}

void partfile_release(struct partfile_sink *s, uint64_t bytes)
{
    pthread_mutex_lock(&s->lock);
    /* Releasing more than was handed out is a consumer bug: clamp. */
    s->handed = bytes > s->handed ? 0 : s->handed - bytes;
    pthread_cond_broadcast(&s->released);
    if (s->wake != NULL)
        s->wake(s->wake_ctx);
    pthread_mutex_unlock(&s->lock);
}

static bool pf_over_budget_locked(const struct partfile_sink *s)
{
    return s->budget > 0 && s->handed > 0 &&
           s->handed + s->current >= s->budget;
}

bool partfile_over_budget(struct partfile_sink *s)
{
    pthread_mutex_lock(&s->lock);
    bool over = pf_over_budget_locked(s);
    pthread_mutex_unlock(&s->lock);
    return over;
}

int partfile_wait_budget(struct partfile_sink *s, unsigned timeout_ms)
{
    struct timespec deadline;
    int r = 0;

    util_deadline_ms(CLOCK_MONOTONIC, timeout_ms, &deadline);
    pthread_mutex_lock(&s->lock);
    while (pf_over_budget_locked(s)) {
        int w = pthread_cond_timedwait(&s->released, &s->lock, &deadline);
        if (w == ETIMEDOUT) {
            r = pf_over_budget_locked(s) ? -ETIMEDOUT : 0;
            break;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return r;
}

void partfile_set_waker(struct partfile_sink *s, partfile_wake_fn wake,
                        void *ctx)
{
    pthread_mutex_lock(&s->lock);
    s->wake = wake;
    s->wake_ctx = ctx;
    pthread_mutex_unlock(&s->lock);
}

void partfile_get_stats(struct partfile_sink *s,
                        struct partfile_stats *ret_stats)
{
    pthread_mutex_lock(&s->lock);
    ret_stats->files = s->files;
    ret_stats->bytes = s->bytes;
    ret_stats->outstanding = s->handed + s->current;
    ret_stats->peak_outstanding = s->peak;
    pthread_mutex_unlock(&s->lock);
}
