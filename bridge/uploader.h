/*
 * uploader - the scheduler and the upload workers (DESIGN.md section 6).
 *
 * One scheduler thread claims entries from incoming/ and from deferred/
 * whose not-before time has come (alternating, so a backlog of retries
 * never starves new images), groups them by study into batches within
 * batch_max_instances and batch_max_bytes, moves them to active/ and hands
 * the batches to a fixed pool of workers. Each worker has its own STOW-RS
 * client (its connection is reused) and takes tokens from the shared
 * token source. Per instance, the answer decides (stow.h):
 *   delivered  -> removed from the spool;
 *   retry      -> deferred/ with exponential backoff and jitter between
 *                 retry.min_s and retry.max_s, at least Retry-After;
 *   rejected   -> failed/ with the HTTP status, Failure Reason and its
 *                 meaning in meta/.
 * 400/413/415 for a batch: each instance is sent alone; one that still
 * gets it is rejected. 401: the token is invalidated and the batch
 * replayed once. 403: deferred for retry.max_s, never failed, with a
 * diagnosis of the token's identity logged. 429/503 with Retry-After
 * pause every worker. An entry whose attempt fails when it is older than
 * retry.max_age_h goes to failed/ as expired (one that can still be
 * delivered is delivered, however old). Nothing is ever removed without
 * the server saying it has it.
 *
 * Program code: it logs (one line per instance outcome, no patient data).
 * Thread safety: uploader_start/stop from one thread; the rest is internal.
 */
#ifndef STOWBRIDGE_UPLOADER_H
#define STOWBRIDGE_UPLOADER_H

#include <stdint.h>

struct oauth_source;
struct spool;
struct stow_params;
struct uploader;

struct uploader_params {
    struct spool *spool;              /* borrowed */
    struct oauth_source *tokens;      /* borrowed, shared */
    const char *url;                  /* DICOMweb base, for messages */
    const char *ca_file;              /* NULL: system CAs */
    unsigned timeout_s;
    unsigned workers;
    unsigned batch_max_instances;
    uint64_t batch_max_bytes;
    unsigned retry_min_s;
    unsigned retry_max_s;
    unsigned max_age_h;
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
