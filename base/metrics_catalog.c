/* SPDX-License-Identifier: Apache-2.0 */
/*
 * metrics_catalog - see metrics_catalog.h.
 */
#include "metrics_catalog.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "metrics.h"

#define CATALOG_REASONS_MAX 16
#define CATALOG_HTTP_SERIES_MAX 64
#define CATALOG_STATUS_MAX 16

static const char *const label_calling_ae[] = { "calling_ae" };
static const char *const label_status[] = { "status" };
static const char *const label_reason[] = { "reason" };
static const char *const label_service_code[] = { "service", "code" };
static const char *const label_result[] = { "result" };
static const char *const label_state[] = { "state" };
static const char *const label_version[] = { "version" };
static const char *const label_path[] = { "path" };

/* Seconds. An upload request: one STOW-RS batch. */
static const double buckets_upload[] = { 0.05, 0.1, 0.25, 0.5, 1,  2.5,
                                         5,    10,  30,   60,  120 };
/* A C-FIND: the whole QIDO-RS exchange, all pages. */
static const double buckets_cfind[] = { 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                        1,    2.5,   5,    10,  30 };
/* Arrival (acknowledged) to delivered, retries included. */
static const double buckets_latency[] = { 1,   5,   15,   30,    60,
                                          300, 900, 3600, 14400, 86400 };

static const char *const spool_states[] = { METRICS_STATE_INCOMING,
                                            METRICS_STATE_ACTIVE,
                                            METRICS_STATE_DEFERRED,
                                            METRICS_STATE_FAILED };

struct family_def {
    size_t offset; /* of the family pointer in struct metrics_catalog */
    struct metrics_family_params p;
};

#define DEF(field, ...)                          \
    {                                            \
        offsetof(struct metrics_catalog, field), \
            (struct metrics_family_params)       \
        {                                        \
            __VA_ARGS__                          \
        }                                        \
    }
#define LABELS(a) .label_names = (a), .label_count = sizeof(a) / sizeof(a[0])
#define BUCKETS(a) .buckets = (a), .bucket_count = sizeof(a) / sizeof(a[0])

static const struct family_def defs[] = {
    DEF(build_info, .name = "stowbridge_build_info",
        .help = "Always 1; the version label tells which build runs.",
        .type = METRICS_GAUGE, LABELS(label_version), .max_series = 1),
    DEF(start_time, .name = "stowbridge_start_time_seconds",
        .help = "Unix time the daemon started.", .type = METRICS_GAUGE),
    DEF(received_instances, .name = "stowbridge_received_instances_total",
        .help = "Instances received and acknowledged (C-STORE 0000), by "
                "calling AE title.",
        .type = METRICS_COUNTER, LABELS(label_calling_ae)),
    DEF(received_bytes, .name = "stowbridge_received_bytes_total",
        .help = "Bytes of acknowledged instances, by calling AE title.",
        .type = METRICS_COUNTER, LABELS(label_calling_ae)),
    DEF(store_refusals, .name = "stowbridge_store_refusals_total",
        .help = "C-STORE requests answered with a failure, by DIMSE status.",
        .type = METRICS_COUNTER, LABELS(label_status),
        .max_series = CATALOG_STATUS_MAX),
    DEF(associations_active, .name = "stowbridge_associations_active",
        .help = "DICOM associations open now.", .type = METRICS_GAUGE),
    DEF(delivered_instances, .name = "stowbridge_delivered_instances_total",
        .help = "Instances the DICOMweb server stored (or already had).",
        .type = METRICS_COUNTER),
    DEF(delivered_bytes, .name = "stowbridge_delivered_bytes_total",
        .help = "Bytes of delivered instances.", .type = METRICS_COUNTER),
    DEF(deferrals, .name = "stowbridge_deferrals_total",
        .help = "Instances put back for a later attempt, by reason.",
        .type = METRICS_COUNTER, LABELS(label_reason),
        .max_series = CATALOG_REASONS_MAX),
    DEF(dead_letters, .name = "stowbridge_dead_letters_total",
        .help = "Instances moved to failed/ (dead letters), by reason.",
        .type = METRICS_COUNTER, LABELS(label_reason),
        .max_series = CATALOG_REASONS_MAX),
    DEF(http_responses, .name = "stowbridge_http_responses_total",
        .help = "HTTP answers from the DICOMweb and token servers, by "
                "service and status code (none: no answer).",
        .type = METRICS_COUNTER, LABELS(label_service_code),
        .max_series = CATALOG_HTTP_SERIES_MAX),
    DEF(token_refreshes, .name = "stowbridge_token_refreshes_total",
        .help = "Access token requests, by result.", .type = METRICS_COUNTER,
        LABELS(label_result), .max_series = 2),
    DEF(token_expiry, .name = "stowbridge_token_expiry_timestamp_seconds",
        .help = "Unix time the current access token expires (0: none).",
        .type = METRICS_GAUGE),
    DEF(destination_up, .name = "stowbridge_destination_up",
        .help = "1 if the last request reached the DICOMweb server with a "
                "valid token, else 0.",
        .type = METRICS_GAUGE),
    DEF(spool_entries, .name = "stowbridge_spool_entries",
        .help = "Entries in the spool, by state.", .type = METRICS_GAUGE,
        LABELS(label_state), .max_series = 4),
    DEF(spool_bytes, .name = "stowbridge_spool_bytes",
        .help = "Bytes of the entries in the spool, by state.",
        .type = METRICS_GAUGE, LABELS(label_state), .max_series = 4),
    DEF(spool_oldest_age, .name = "stowbridge_spool_oldest_age_seconds",
        .help = "Age since arrival of the oldest entry, by state (0: none).",
        .type = METRICS_GAUGE, LABELS(label_state), .max_series = 4),
    DEF(spool_free_bytes, .name = "stowbridge_spool_free_bytes",
        .help = "Free bytes on the spool's file system for the service.",
        .type = METRICS_GAUGE),
    DEF(spool_commits, .name = "stowbridge_spool_commits_total",
        .help = "Instances made durable before their success, by path: "
                "the intake journal (one shared flush) or file by file.",
        .type = METRICS_COUNTER, LABELS(label_path), .max_series = 2),
    DEF(spool_journal_flushes, .name = "stowbridge_spool_journal_flushes_total",
        .help = "The intake journal's flushes (fdatasync), each shared by "
                "the commits that wrote meanwhile.",
        .type = METRICS_COUNTER),
    DEF(spool_journal_up, .name = "stowbridge_spool_journal_up",
        .help = "1 if the intake journal takes records; 0 if it is off "
                "(spool.journal_mb 0, no room at start) or failed (see the "
                "log: event=spool-journal-error).",
        .type = METRICS_GAUGE),
    DEF(upload_duration, .name = "stowbridge_upload_request_duration_seconds",
        .help = "Time of one STOW-RS request, from connect to the last "
                "byte of the answer.",
        .type = METRICS_HISTOGRAM, BUCKETS(buckets_upload)),
    DEF(cfind_duration, .name = "stowbridge_cfind_duration_seconds",
        .help = "Time to answer one C-FIND, QIDO-RS pages included.",
        .type = METRICS_HISTOGRAM, BUCKETS(buckets_cfind)),
    DEF(delivery_latency, .name = "stowbridge_delivery_latency_seconds",
        .help = "Time from an instance's arrival to its delivery.",
        .type = METRICS_HISTOGRAM, BUCKETS(buckets_latency)),
};

/* Distinct entries of @v[0..n). */
static size_t distinct(const char *const *v, size_t n)
{
    size_t count = 0;

    for (size_t i = 0; i < n; i++) {
        size_t j;
        for (j = 0; j < i; j++)
            if (strcmp(v[i], v[j]) == 0)
                break;
        if (j == i)
            count++;
    }
    return count;
}

int metrics_catalog_register(struct metrics *m,
                             const struct metrics_catalog_params *params,
                             struct metrics_catalog *ret_catalog, char *err,
                             size_t err_len)
{
    struct metrics_catalog cat;
    size_t callers;
    int r;

    if (params->caller_count > METRICS_CATALOG_CALLERS_MAX) {
        if (err != NULL && err_len > 0)
            (void)snprintf(err, err_len,
                           "%zu callers: at most %d get their "
                           "own metric series",
                           params->caller_count, METRICS_CATALOG_CALLERS_MAX);
        return -EINVAL;
    }
    callers = params->caller_count
                  ? distinct(params->callers, params->caller_count)
                  : METRICS_CATALOG_CALLERS_UNLISTED;
    memset(&cat, 0, sizeof(cat));
    for (size_t i = 0; i < sizeof(defs) / sizeof(defs[0]); i++) {
        struct metrics_family_params p = defs[i].p;
        struct metrics_family **slot =
            (struct metrics_family **)((char *)&cat + defs[i].offset);
        if (p.label_count == 1 && p.label_names == label_calling_ae)
            p.max_series = callers;
        r = metrics_family_add(m, &p, slot, err, err_len);
        if (r < 0)
            return r;
    }
    for (size_t i = 0; i < params->caller_count; i++) {
        (void)METRICS_SERIES(cat.received_instances, params->callers[i]);
        (void)METRICS_SERIES(cat.received_bytes, params->callers[i]);
    }
    for (size_t i = 0; i < sizeof(spool_states) / sizeof(spool_states[0]);
         i++) {
        (void)METRICS_SERIES(cat.spool_entries, spool_states[i]);
        (void)METRICS_SERIES(cat.spool_bytes, spool_states[i]);
        (void)METRICS_SERIES(cat.spool_oldest_age, spool_states[i]);
    }
    (void)METRICS_SERIES(cat.spool_commits, METRICS_PATH_JOURNAL);
    (void)METRICS_SERIES(cat.spool_commits, METRICS_PATH_FILE);
    /* Both results exist from the start, so a rule can compare them. */
    (void)METRICS_SERIES(cat.token_refreshes, METRICS_RESULT_OK);
    (void)METRICS_SERIES(cat.token_refreshes, METRICS_RESULT_FAILED);
    metrics_gauge_set(METRICS_SERIES(cat.build_info, params->version
                                                         ? params->version
                                                         : "unknown"),
                      1);
    metrics_gauge_set(metrics_series(cat.start_time, NULL),
                      params->start_time_s);
    *ret_catalog = cat;
    return 0;
}
