/* SPDX-License-Identifier: Apache-2.0 */
/*
 * uploader - the scheduler and the upload workers (docs/architecture.md section
 * 6).
 *
 * One scheduler thread claims entries from incoming/ and from deferred/
 * whose not-before time has come (alternating, so a backlog of retries
 * never starves new images), groups them by study into batches within
 * batch_max_instances and batch_max_bytes, round-robin between studies
 * (the pure planner, plan.h), moves them to active/ and hands the batches
 * to a fixed pool of workers. Each worker has its own STOW-RS client (its
 * connection is reused) and takes tokens from the shared token source.
 * Per instance, the answer decides (the outcome table, outcome.h):
 *   delivered  -> removed from the spool;
 *   retry      -> deferred/ with exponential backoff and jitter between
 *                 retry.min_s and retry.max_s, at least Retry-After;
 *   rejected   -> failed/ with the HTTP status, Failure Reason and its
 *                 meaning in meta/.
 * 400/413/415 for a batch: each instance is sent alone; one that still
 * gets it is rejected. 401: the token is invalidated and the batch
 * replayed once. 403: deferred for retry.max_s, never failed, with a
 * diagnosis of the token's identity logged. 429/503 with Retry-After
 * pause every worker, for at most max_pause_s; the pause (and the one
 * after many connection failures in a row) is kept in the spool's pause
 * file, read before each scheduling pass, so an operator ends it with
 * `stowbridge queue resume` while the daemon runs. An entry whose attempt
 * fails when it is older than retry.max_age_h goes to failed/ as expired
 * (one that can still be delivered is delivered, however old). Nothing is
 * ever removed without the server saying it has it, or (a held identical
 * copy) it has an identical copy.
 *
 * Copies of one SOP Instance UID (sopindex.h): sent one at a time in
 * arrival order, a later one only when every earlier one is resolved. An
 * identical later copy (same data set bytes and transfer syntax) is
 * logged event=duplicate once and held: removed when the copy before it
 * is delivered, failed with it (naming it) when it fails, sent if it
 * disappears otherwise (queue delete). A different later copy is logged
 * event=conflict once; with on_conflict_send it waits its turn and is
 * sent, else it goes to failed/ as a "conflicting duplicate" at once.
 * The scheduler keeps the index in memory, built from the spool (meta/
 * read once per entry) and rebuilt after a restart.
 *
 * Program code: it logs (one line per instance outcome, no patient data).
 * Thread safety: uploader_start/stop from one thread; the rest is internal.
 */
#ifndef STOWBRIDGE_UPLOADER_H
#define STOWBRIDGE_UPLOADER_H

#include <stdbool.h>
#include <stdint.h>

struct monitor;
struct oauth_source;
struct spool;
struct uploader;
struct spool_meta;

/* Told of each delivered instance by the worker that delivered it, while
 * the entry is still in active/; @already: the server had it. Must be
 * quick and thread-safe. */
typedef void (*uploader_delivered_fn)(void *ctx, const char *id,
                                      const struct spool_meta *meta,
                                      bool already);

struct uploader_params {
    struct spool *spool;         /* borrowed */
    struct oauth_source *tokens; /* borrowed, shared */
    const char *url;             /* DICOMweb base, for messages */
    const char *ca_file;         /* NULL: system CAs */
    unsigned timeout_s;
    unsigned workers;
    unsigned batch_max_instances;
    uint64_t batch_max_bytes;
    unsigned retry_min_s;
    unsigned retry_max_s;
    unsigned max_age_h;
    unsigned max_pause_s;               /* cap on Retry-After, >= 1 */
    bool on_conflict_send;              /* false: keep-first */
    uploader_delivered_fn on_delivered; /* NULL: nobody is told */
    void *on_delivered_ctx;
    struct monitor *monitor; /* borrowed; NULL: not counted */
};

/* Starts the scheduler and the workers. NULL on failure (logged). */
struct uploader *uploader_start(const struct uploader_params *params);

/*
 * Stops: no new batch is claimed, transfers in flight are aborted and
 * their entries go back to incoming/ (nothing is lost: they were not
 * acknowledged by the server), threads are joined. Accepts NULL.
 */
void uploader_stop(struct uploader *uploader);

#endif
