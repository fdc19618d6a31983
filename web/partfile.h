/* SPDX-License-Identifier: Apache-2.0 */
/*
 * partfile - the consumer side of a streamed multipart body: each part is
 * written into a new file of its own under a given directory (for
 * retrieve: the spool's temporary area), and each finished file is
 * handed to a callback, within a byte budget that bounds how much the
 * fetch may get ahead of whoever sends the files on.
 *
 * Files are created with openat(O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC),
 * mode 0600, named "<prefix>-<16 hex digits>.dcm" (random; a clash is
 * retried), written as the data comes, closed at the part's end. They are
 * not fsynced: they are a cache for sending now, and the spool empties its
 * temporary area at start. A part that does not end (parse failure,
 * truncation, transport error, a full disk, a refusing callback) has its
 * file removed: partfile_abort(), or partfile_free() with a part open.
 *
 * Ownership: the file handed to on_file() belongs to the consumer once
 * on_file() returns 0: the consumer removes it when done and gives its
 * size back with partfile_release(). When on_file() fails, the sink
 * removes the file itself.
 *
 * The budget counts the bytes of files handed out and not yet released,
 * plus the part being written. The sink is over budget when that reaches
 * budget_bytes while at least one handed-out file is unreleased: waiting
 * can then help. A single part larger than the budget is still written
 * whole once everything before it is released (an instance cannot be sent
 * in pieces), so the disk use is at most max(budget + one write, the
 * largest part). The producer asks partfile_over_budget() before feeding
 * more data and pauses (wado.c returns CURL_WRITEFUNC_PAUSE) or blocks in
 * partfile_wait_budget(); a waker set with partfile_set_waker() is called
 * on every release, so a paused fetch resumes without polling.
 *
 * Thread safety: partfile_begin/_write/_end/_abort belong to one producer
 * thread (on_file() runs there); partfile_release, _over_budget,
 * _wait_budget, _stats and _set_waker may be called from any thread.
 * Errors: 0 or a negative errno with the reason in @err (a failed system
 * call named with its path), or the negative errno on_file() returned.
 * Library code: never logs.
 */
#ifndef STOWBRIDGE_PARTFILE_H
#define STOWBRIDGE_PARTFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct multipart_part;
struct partfile_sink;

/* Longest file name prefix (letters, digits, '-' and '_'). */
#define PARTFILE_PREFIX_MAX 32

/* A finished part, as on_file() sees it; strings borrowed for the call. */
struct partfile_file {
    const char *path; /* "<dir>/<prefix>-<hex>.dcm" */
    uint64_t size;
    unsigned index;               /* the part's place in the body, from 0 */
    const char *content_type;     /* lower case; "" when the part had none */
    const char *transfer_syntax;  /* its transfer-syntax= UID, or "" */
    const char *content_location; /* NULL when absent */
};

/* Takes a finished file: returns 0 (the file is now the consumer's), or a
 * negative errno with a reason in @err (the sink removes the file and the
 * producer stops). Runs on the producer thread, inside the transfer: hand
 * the file over (a queue) and return; sending it here would hold the
 * transfer and count toward its stall timeout. */
typedef int (*partfile_file_fn)(void *ctx, const struct partfile_file *file,
                                char *err, size_t err_len);

/* Called on every partfile_release(), on the releasing thread, with the
 * sink's lock held: keep it short and do not call back into the sink. */
typedef void (*partfile_wake_fn)(void *ctx);

struct partfile_params {
    const char *dir;          /* an existing directory; copied */
    const char *prefix;       /* NULL: "part"; copied */
    uint64_t budget_bytes;    /* 0: no budget */
    partfile_file_fn on_file; /* required */
    void *ctx;
};

/* Counters, for logs and tests. */
struct partfile_stats {
    uint64_t files;            /* handed out so far */
    uint64_t bytes;            /* their total size */
    uint64_t outstanding;      /* unreleased + the part being written */
    uint64_t peak_outstanding; /* the most outstanding ever was */
};

/*
 * Opens @params->dir (O_DIRECTORY) and creates a sink. Returns 0, -EINVAL
 * for a bad prefix or a missing callback, -ENOMEM, or the errno of
 * open() with the reason in @err.
 */
int partfile_new(const struct partfile_params *params,
                 struct partfile_sink **ret_sink, char *err, size_t err_len);

/* Removes the file of a part still open, closes the directory, frees.
 * Accepts NULL. Files already handed out are left alone. */
void partfile_free(struct partfile_sink *sink);

/* Starts a new file for @part. Returns 0, -EBUSY if a part is already
 * open (a programmer error), or the errno of openat()/getrandom(). */
int partfile_begin(struct partfile_sink *sink,
                   const struct multipart_part *part, char *err,
                   size_t err_len);

/* Appends @len bytes to the open part's file. Returns 0 or the errno of
 * write() (-ENOSPC on a full disk); on failure the file is removed. */
int partfile_write(struct partfile_sink *sink, const void *data, size_t len,
                   char *err, size_t err_len);

/* Closes the open part's file and hands it to on_file(). Returns 0, the
 * errno of close(), or what on_file() returned; on failure the file is
 * removed. */
int partfile_end(struct partfile_sink *sink, char *err, size_t err_len);

/* Removes the open part's file, if any. */
void partfile_abort(struct partfile_sink *sink);

/* The consumer is done with @bytes of handed-out files. */
void partfile_release(struct partfile_sink *sink, uint64_t bytes);

/* True if the producer should wait before feeding more (see above). */
bool partfile_over_budget(struct partfile_sink *sink);

/* Waits until the sink is not over budget: 0, or -ETIMEDOUT after
 * @timeout_ms. */
int partfile_wait_budget(struct partfile_sink *sink, unsigned timeout_ms);

/* Sets (or with NULL clears) the function called on every release. */
void partfile_set_waker(struct partfile_sink *sink, partfile_wake_fn wake,
                        void *ctx);

void partfile_get_stats(struct partfile_sink *sink,
                        struct partfile_stats *ret_stats);

#ifdef __cplusplus
}
#endif

#endif
