/* SPDX-License-Identifier: Apache-2.0 */
/*
 * monitor - the daemon's side of the admin endpoint (issue 14): it owns
 * the metrics registry (base/metrics_catalog.h), the event ring and the
 * rate windows, keeps the summaries the status page and /readyz show,
 * and runs the admin HTTP server (admin/admin.h) with the provider
 * callbacks that copy those summaries.
 *
 * The hot paths (SCP, upload workers, token source, C-FIND) report what
 * happened through the monitor_*() hooks below: each is a few relaxed
 * atomic adds or a short mutex, never I/O on the caller's thread (except
 * monitor_delivered(), which stats the entry it is told about). Every
 * hook accepts a NULL monitor, so a component may be run without one.
 *
 * The spool is never scanned per request: a thread of its own
 * ("sb-monitor") refreshes the spool summary (counts, bytes, oldest age
 * per state, the newest failed entries with their reason, free space, a
 * write probe) at most every MONITOR_REFRESH_MIN_MS, and less often when
 * a scan takes long (a 100 000-entry spool), and records the rates. It
 * also keeps systemd's STATUS= line current (sent when it changes), and
 * when nothing proved the destination reachable for half of
 * admin.ready_window_s, asks it a QIDO-RS point look-up itself. The daemon loop
 * calls monitor_heartbeat(), which marks /healthz alive and sends WATCHDOG=1 to
 * systemd at half of WatchdogSec= (sd_notify(3), no libsystemd).
 *
 * Program code: it logs its own start-up problems, nothing per request.
 * Thread safety: the hooks may be called from any thread once
 * monitor_new() returned; monitor_start()/monitor_free() by the daemon
 * only. Errors: 0 or a negative errno with a reason in @err.
 */
#ifndef STOWBRIDGE_MONITOR_H
#define STOWBRIDGE_MONITOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "find.h"

#ifdef __cplusplus
extern "C" {
#endif

struct metrics_catalog;
struct monitor;
struct spool;
struct spool_meta;
struct scp_find_handler;
struct scp_observer;
struct oauth_params;

/* The quickest and slowest spool summary refresh. */
#define MONITOR_REFRESH_MIN_MS 2000
#define MONITOR_REFRESH_MAX_MS 60000
/* Studies the in-flight table follows at most (the oldest finished ones
 * are forgotten first). */
#define MONITOR_STUDIES_TRACKED 1024

/* The services of stowbridge_http_responses_total{service}. */
enum monitor_service {
    MONITOR_STOW = 0,
    MONITOR_QIDO,
    MONITOR_TOKEN,
};

struct monitor_params {
    const char *version;
    const char *node;           /* our AE title */
    const char *const *callers; /* configured calling AE titles */
    size_t caller_count;
    struct spool *spool; /* borrowed */
    const char *spool_dir;
    uint64_t spool_min_free_bytes; /* spool.min_free_mb in bytes */
    uint16_t dicom_port;
    const char *destination_url; /* "": receive-only */
    const char *token_source;    /* auth.type */
    /* admin.* */
    const char *listen;     /* "": no HTTP endpoint */
    const char *token_file; /* "": no token */
    bool allow_actions;
    uint32_t ready_window_s;
    /* Sends a state line to systemd (sd_notify(3), e.g. daemon_notify());
     * NULL: none sent. */
    int (*notify)(const char *state);
};

/*
 * Checks the admin.* rules of a configuration (admin.listen parses; any
 * address but loopback, and admin.allow_actions, need admin.token_file)
 * for `check` and the start of every command. Returns 0 or -EINVAL with
 * a message naming the key in @err.
 */
int monitor_config_check(const char *listen, const char *token_file,
                         bool allow_actions, char *err, size_t err_len);

/* Creates the registry and the summaries (no thread, no socket yet).
 * Copies what it keeps from @params. */
int monitor_new(const struct monitor_params *params,
                struct monitor **ret_monitor, char *err, size_t err_len);

/*
 * Reads admin.token_file, binds admin.listen and starts the HTTP server
 * and the refresh thread. Returns 0, -EINVAL or -EPERM (the token file),
 * -ENOMEM; reason in @err. An address that cannot be bound is logged and
 * the daemon runs on without the endpoint (monitor_admin_port() is 0).
 */
int monitor_start(struct monitor *monitor, char *err, size_t err_len);

/*
 * Stops the refresh and probe threads and the HTTP server, and waits for
 * them: afterwards the monitor touches nothing it was given (the spool,
 * the readiness probe's QIDO-RS client, the SCP), so those may be freed.
 * The hooks stay callable until monitor_free(). Idempotent; accepts NULL.
 */
void monitor_stop(struct monitor *monitor);

/* monitor_stop(), then frees. Accepts NULL. Call only once every
 * component that reports to it stopped. */
void monitor_free(struct monitor *monitor);

/* The registered metric families (for tests; read-only). */
const struct metrics_catalog *monitor_catalog(const struct monitor *monitor);

/* The admin endpoint's port (0 when off). */
uint16_t monitor_admin_port(const struct monitor *monitor);

/* The daemon loop is alive: /healthz, WATCHDOG=1. Cheap; call it from
 * the loop's thread only. */
void monitor_heartbeat(struct monitor *monitor);

/* The DICOM port is bound and served (true) or no more (false). */
void monitor_set_listening(struct monitor *monitor, bool listening);

/* ---- hooks ----------------------------------------------------------- */

/* An instance was committed to the spool. */
void monitor_received(struct monitor *monitor, const char *calling_ae,
                      const char *study_uid, uint64_t bytes);
/* A C-STORE was answered with the failure @status (A700, A900, C000...). */
void monitor_refused(struct monitor *monitor, uint16_t status);
/* An association began (+1) or ended (-1). */
void monitor_association(struct monitor *monitor, int delta);

/* Entry @id (in active/, described by @meta) was delivered: call before
 * it is removed, so its size can be read. */
void monitor_delivered(struct monitor *monitor, struct spool *spool,
                       const char *id, const struct spool_meta *meta);
/* Entry @id was deferred after HTTP @status (0: none) with STOW Failure
 * Reason @reason (0: none) because of @why. */
void monitor_deferred(struct monitor *monitor, long status, uint16_t reason,
                      const char *why);
/* Entry @id went to failed/ (a dead letter) because of @why. */
void monitor_dead_letter(struct monitor *monitor, long status,
                         const struct spool_meta *meta, const char *why);

/*
 * A request to @service ended with HTTP @status (0: no answer) after
 * @seconds. For STOW and QIDO, any answer but 401/403 proves the
 * destination reachable with a valid token; no answer or a 5xx marks it
 * down, with @error (our words, no secrets) as the reason.
 */
void monitor_http(struct monitor *monitor, enum monitor_service service,
                  long status, double seconds, const char *error);

/*
 * A token request ended: @ok, @status the token endpoint's HTTP answer
 * (0: none, -1: not an HTTP exchange, a token command), @expires_s the
 * new token's expiry (Unix time, 0: unknown), @error the reason when it
 * failed (our words).
 */
void monitor_token_fetch(struct monitor *monitor, bool ok, long status,
                         int64_t expires_s, const char *error);

/* The SCP's observer (scp.h) that calls the three hooks above. */
void monitor_scp_observer(struct monitor *monitor,
                          struct scp_observer *ret_observer);

/* Sets the token source's fetched observer (web/oauth.h) of @params to
 * monitor_token_fetch(). */
void monitor_oauth_observer(struct monitor *monitor,
                            struct oauth_params *params);

/*
 * Wraps a C-FIND handler so each C-FIND's duration is observed
 * (stowbridge_cfind_duration_seconds): fills @ret_handler with
 * callbacks that call @inner's (which must outlive the monitor).
 */
void monitor_wrap_find(struct monitor *monitor,
                       const struct scp_find_handler *inner,
                       struct scp_find_handler *ret_handler);

/*
 * A find_fetch_fn that calls @inner_fetch(@inner_ctx) and reports each
 * QIDO-RS answer through monitor_http(): set it up with
 * monitor_wrap_fetch(), then pass monitor_fetch and the monitor as
 * find_params.fetch and fetch_ctx.
 */
void monitor_wrap_fetch(struct monitor *monitor, find_fetch_fn inner_fetch,
                        void *inner_ctx);
int monitor_fetch(void *monitor, const char *path_and_query,
                  struct find_reply *ret_reply);

#ifdef __cplusplus
}
#endif

#endif
