/* SPDX-License-Identifier: Apache-2.0 */
/*
 * metrics_sample - prints the exposition text of the full metrics
 * catalog with realistic values (and label values that need escaping,
 * NaN and infinities), for `promtool check metrics`
 * (test_metrics_promtool) and for a look by eye.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/metrics.h"
#include "base/metrics_catalog.h"

static double free_bytes(void *ctx)
{
    (void)ctx;
    return 52613349376.0;
}

int main(void)
{
    static const char *const callers[] = { "CT_SCANNER_1", "MR02", "US-3" };
    static const char *const label_v[] = { "value" };
    struct metrics_catalog_params p = { .version = "0.1.0",
                                        .start_time_s = 1764000000,
                                        .callers = callers,
                                        .caller_count = 3 };
    struct metrics_catalog cat;
    struct metrics_family *odd = NULL;
    struct metrics *m = metrics_new();
    char err[256] = "";
    char *text = NULL;
    size_t len = 0;

    if (m == NULL ||
        metrics_catalog_register(m, &p, &cat, err, sizeof(err)) < 0) {
        fprintf(stderr, "metrics_sample: %s\n", err);
        return 1;
    }
    metrics_counter_add(METRICS_SERIES(cat.received_instances, "MR02"), 1200);
    metrics_counter_add(METRICS_SERIES(cat.received_bytes, "MR02"), 634000000);
    metrics_counter_add(METRICS_SERIES(cat.received_instances, "STRANGER"), 3);
    metrics_counter_add(METRICS_SERIES(cat.store_refusals, "A700"), 2);
    metrics_counter_add(METRICS_SERIES(cat.store_refusals, "A900"), 1);
    metrics_counter_add(metrics_series(cat.delivered_instances, NULL), 1180);
    metrics_counter_add(metrics_series(cat.delivered_bytes, NULL), 620000000);
    metrics_counter_add(
        METRICS_SERIES(cat.deferrals, METRICS_REASON_SERVER_ERROR), 7);
    metrics_counter_add(
        METRICS_SERIES(cat.dead_letters, METRICS_REASON_REJECTED), 2);
    metrics_counter_add(
        METRICS_SERIES(cat.http_responses, METRICS_SERVICE_STOW, "200"), 118);
    metrics_counter_add(
        METRICS_SERIES(cat.http_responses, METRICS_SERVICE_STOW, "503"), 7);
    metrics_counter_add(
        METRICS_SERIES(cat.http_responses, METRICS_SERVICE_TOKEN, "200"), 4);
    metrics_counter_add(METRICS_SERIES(cat.http_responses, METRICS_SERVICE_QIDO,
                                       METRICS_CODE_NO_ANSWER),
                        1);
    metrics_counter_add(METRICS_SERIES(cat.token_refreshes, METRICS_RESULT_OK),
                        4);
    metrics_gauge_set(metrics_series(cat.token_expiry, NULL), 1764003600);
    metrics_gauge_set(metrics_series(cat.destination_up, NULL), 1);
    metrics_gauge_set(metrics_series(cat.associations_active, NULL), 2);
    metrics_gauge_set(METRICS_SERIES(cat.spool_entries, METRICS_STATE_INCOMING),
                      20);
    metrics_gauge_set(METRICS_SERIES(cat.spool_bytes, METRICS_STATE_INCOMING),
                      14000000);
    metrics_gauge_set(
        METRICS_SERIES(cat.spool_oldest_age, METRICS_STATE_INCOMING), 12.5);
    metrics_gauge_set_fn(metrics_series(cat.spool_free_bytes, NULL), free_bytes,
                         NULL);
    for (int i = 0; i < 100; i++) {
        metrics_histogram_observe(metrics_series(cat.upload_duration, NULL),
                                  0.02 * i);
        metrics_histogram_observe(metrics_series(cat.cfind_duration, NULL),
                                  0.003 * i);
        metrics_histogram_observe(metrics_series(cat.delivery_latency, NULL),
                                  1.7 * i);
    }

    /* Not in the catalog: values that need escaping, and odd floats. */
    if (metrics_family_add(m,
                           &(struct metrics_family_params){
                               .name = "stowbridge_sample_odd_values",
                               .help = "Sample only: escapes \\ and odd "
                                       "floats.",
                               .type = METRICS_GAUGE,
                               .label_names = label_v,
                               .label_count = 1,
                               .max_series = 8 },
                           &odd, err, sizeof(err)) < 0) {
        fprintf(stderr, "metrics_sample: %s\n", err);
        return 1;
    }
    metrics_gauge_set(METRICS_SERIES(odd, "quote\" backslash\\ newline\n"), 1);
    metrics_gauge_set(METRICS_SERIES(odd, "\xc3\xa9\xe2\x82\xac"), 0.1);
    metrics_gauge_set(METRICS_SERIES(odd, "nan"), NAN);
    metrics_gauge_set(METRICS_SERIES(odd, "inf"), INFINITY);
    metrics_gauge_set(METRICS_SERIES(odd, "-inf"), -INFINITY);
    metrics_gauge_set(METRICS_SERIES(odd, "tiny"), 5e-324);

    if (metrics_render(m, 1u << 20, &text, &len) < 0) {
        fprintf(stderr, "metrics_sample: render failed\n");
        return 1;
    }
    fwrite(text, 1, len, stdout);
    free(text);
    metrics_free(m);
    return 0;
}
