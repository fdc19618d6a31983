/* SPDX-License-Identifier: Apache-2.0 */
/*
 * metrics_catalog - every metric family stowbridge exports (issue 14),
 * decided in one place: names, types, labels, help texts, buckets and the
 * label values the code should use. The daemon calls
 * metrics_catalog_register() once at start-up and hands the family
 * pointers (or series looked up from them) to scp/, web/ and bridge/.
 *
 *   name                                          type       labels
 *   stowbridge_build_info                         gauge      version
 *   stowbridge_start_time_seconds                 gauge      -
 *   stowbridge_received_instances_total           counter    calling_ae
 *   stowbridge_received_bytes_total               counter    calling_ae
 *   stowbridge_store_refusals_total               counter    status
 *   stowbridge_associations_active                gauge      -
 *   stowbridge_delivered_instances_total          counter    -
 *   stowbridge_delivered_bytes_total              counter    -
 *   stowbridge_deferrals_total                    counter    reason
 *   stowbridge_dead_letters_total                 counter    reason
 *   stowbridge_http_responses_total               counter    service, code
 *   stowbridge_token_refreshes_total              counter    result
 *   stowbridge_token_expiry_timestamp_seconds     gauge      -
 *   stowbridge_destination_up                     gauge      -
 *   stowbridge_spool_entries                      gauge      state
 *   stowbridge_spool_bytes                        gauge      state
 *   stowbridge_spool_oldest_age_seconds           gauge      state
 *   stowbridge_spool_free_bytes                   gauge      -
 *   stowbridge_spool_commits_total                counter    path
 *   stowbridge_spool_journal_flushes_total        counter    -
 *   stowbridge_spool_journal_up                   gauge      -
 *   stowbridge_upload_request_duration_seconds    histogram  -
 *   stowbridge_cfind_duration_seconds             histogram  -
 *   stowbridge_delivery_latency_seconds           histogram  -
 *
 * Label values:
 *   calling_ae  the configured callers' AE titles (declared up front), so
 *               every other caller counts as "other"; without a caller
 *               list, the first METRICS_CATALOG_CALLERS_UNLISTED seen.
 *   status      the DIMSE status as 4 upper-case hex digits ("A700").
 *   reason      METRICS_REASON_* below.
 *   service     METRICS_SERVICE_*; code: the HTTP status ("200", "401"),
 *               or METRICS_CODE_NO_ANSWER when no HTTP answer came.
 *   result      METRICS_RESULT_OK / METRICS_RESULT_FAILED.
 *   state       METRICS_STATE_* (the spool directories that hold entries).
 *   path        METRICS_PATH_JOURNAL / METRICS_PATH_FILE (the commit).
 *
 * Thread safety and errors: as metrics.h. The catalog struct is filled
 * once and read-only afterwards.
 */
#ifndef STOWBRIDGE_METRICS_CATALOG_H
#define STOWBRIDGE_METRICS_CATALOG_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct metrics;
struct metrics_family;

/* Configured callers that get their own series at most, and the series
 * for the first callers seen when no caller list is configured. */
#define METRICS_CATALOG_CALLERS_MAX 256
#define METRICS_CATALOG_CALLERS_UNLISTED 32

/* Deferral reasons (stowbridge_deferrals_total{reason}). */
#define METRICS_REASON_NETWORK "network"           /* no HTTP answer */
#define METRICS_REASON_SERVER_ERROR "server_error" /* 5xx */
#define METRICS_REASON_THROTTLED "throttled"       /* 429, 408 */
#define METRICS_REASON_UNAUTHORIZED "unauthorized" /* 401 after a refresh */
#define METRICS_REASON_FORBIDDEN "forbidden"       /* 403 */
#define METRICS_REASON_TOKEN "token_unavailable"   /* no token to send */
#define METRICS_REASON_INSTANCE "instance_retry"   /* per-instance retry */
#define METRICS_REASON_LOCAL "local_error"         /* reading the entry */
/* Dead-letter reasons (stowbridge_dead_letters_total{reason}). */
#define METRICS_REASON_REJECTED "rejected"     /* permanent answer */
#define METRICS_REASON_EXPIRED "expired"       /* retry.max_age */
#define METRICS_REASON_UNREADABLE "unreadable" /* not a valid entry */

#define METRICS_SERVICE_STOW "stow"
#define METRICS_SERVICE_QIDO "qido"
#define METRICS_SERVICE_TOKEN "token"
#define METRICS_CODE_NO_ANSWER "none"

#define METRICS_RESULT_OK "ok"
#define METRICS_RESULT_FAILED "failed"

#define METRICS_STATE_INCOMING "incoming"
#define METRICS_STATE_ACTIVE "active"
#define METRICS_STATE_DEFERRED "deferred"
#define METRICS_STATE_FAILED "failed"

#define METRICS_PATH_JOURNAL "journal"
#define METRICS_PATH_FILE "file"

struct metrics_catalog_params {
    const char *version; /* stowbridge_build_info{version} */
    double start_time_s; /* Unix time the daemon started */
    /* The configured callers' AE titles (may be 0); each gets its own
     * calling_ae series, every other caller is "other". */
    const char *const *callers;
    size_t caller_count;
};

/* The registered families, owned by the registry. */
struct metrics_catalog {
    struct metrics_family *build_info;
    struct metrics_family *start_time;
    struct metrics_family *received_instances;
    struct metrics_family *received_bytes;
    struct metrics_family *store_refusals;
    struct metrics_family *associations_active;
    struct metrics_family *delivered_instances;
    struct metrics_family *delivered_bytes;
    struct metrics_family *deferrals;
    struct metrics_family *dead_letters;
    struct metrics_family *http_responses;
    struct metrics_family *token_refreshes;
    struct metrics_family *token_expiry;
    struct metrics_family *destination_up;
    struct metrics_family *spool_entries;
    struct metrics_family *spool_bytes;
    struct metrics_family *spool_oldest_age;
    struct metrics_family *spool_free_bytes;
    struct metrics_family *spool_commits;
    struct metrics_family *spool_journal_flushes;
    struct metrics_family *spool_journal_up;
    struct metrics_family *upload_duration;
    struct metrics_family *cfind_duration;
    struct metrics_family *delivery_latency;
};

/*
 * Registers every family above in @m, declares the callers', the spool
 * states' and both token refresh results' series (so they read 0 before
 * the first event), sets build_info to 1 and start_time, and fills
 * @ret_catalog. Returns 0, or the first metrics_family_add() error with
 * the reason in @err (a caller list longer than
 * METRICS_CATALOG_CALLERS_MAX is -EINVAL).
 */
int metrics_catalog_register(struct metrics *m,
                             const struct metrics_catalog_params *params,
                             struct metrics_catalog *ret_catalog, char *err,
                             size_t err_len);

#ifdef __cplusplus
}
#endif

#endif
