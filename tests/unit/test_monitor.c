/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_monitor - the daemon's monitor (bridge/monitor.h) without HTTP:
 * what each hook counts and under which label (callers bounded to the
 * configured ones plus "other", DIMSE statuses, the deferral and
 * dead-letter reasons, HTTP answers by service and code, token refreshes
 * and the token endpoint's code from the fetched observer, the
 * associations gauge, destination up/down), the admin.* config rules, and
 * a start and stop over a real spool with the endpoint off.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/metrics.h"
#include "base/metrics_catalog.h"
#include "bridge/monitor.h"
#include "spool/spool.h"
#include "tap.h"
#include "web/oauth.h"

static int notified;

static int count_notify(const char *state)
{
    (void)state;
    notified++;
    return 0;
}

static uint64_t counter(struct metrics_family *f, const char *a, const char *b)
{
    const char *values[2] = { a, b };

    return metrics_counter_get(metrics_series(f, values));
}

static double gauge(struct metrics_family *f)
{
    return metrics_gauge_get(metrics_series(f, NULL));
}

static void test_config_rules(void)
{
    char err[256];

    CHECK(monitor_config_check("127.0.0.1:9475", "", false, err, sizeof(err)) ==
          0);
    CHECK(monitor_config_check("", "", false, err, sizeof(err)) == 0);
    CHECK(monitor_config_check("0.0.0.0:9475", "", false, err, sizeof(err)) <
              0 &&
          strstr(err, "admin.token_file") != NULL);
    CHECK(monitor_config_check("0.0.0.0:9475", "/etc/t", false, err,
                               sizeof(err)) == 0);
    CHECK(monitor_config_check("127.0.0.1:9475", "", true, err, sizeof(err)) <
              0 &&
          strstr(err, "admin.allow_actions") != NULL);
    CHECK(monitor_config_check("localhost:9475", "", false, err, sizeof(err)) <
          0);
}

static void test_hooks(const char *dir)
{
    static const char *const callers[] = { "CT01", "MR02" };
    struct spool *spool = NULL;
    struct monitor *mon = NULL;
    struct oauth_params op;
    char err[256];
    int r;

    CHECK(spool_open(dir, SPOOL_OPEN_OWNER, &spool, err, sizeof(err)) == 0);
    if (spool == NULL)
        return;
    r = monitor_new(
        &(struct monitor_params){ .version = "9.9",
                                  .node = "SB",
                                  .callers = callers,
                                  .caller_count = 2,
                                  .spool = spool,
                                  .spool_dir = dir,
                                  .dicom_port = 11112,
                                  .destination_url = "http://127.0.0.1:1/dw",
                                  .token_source = "client_credentials",
                                  .listen = "",
                                  .token_file = "",
                                  .ready_window_s = 60,
                                  .notify = count_notify },
        &mon, err, sizeof(err));
    CHECK_MSG(r == 0, "%s", err);
    if (r < 0) {
        spool_close(spool);
        return;
    }
    const struct metrics_catalog *cat = monitor_catalog(mon);
    CHECK(monitor_start(mon, err, sizeof(err)) == 0);
    CHECK(monitor_admin_port(mon) == 0);

    monitor_received(mon, "CT01", "1.2.3", 100);
    monitor_received(mon, "CT01", "1.2.3", 50);
    monitor_received(mon, "XX99", "1.2.4", 7);
    monitor_received(mon, "MR02\n", "1.2.4", 7);
    CHECK(counter(cat->received_instances, "CT01", NULL) == 2);
    CHECK(counter(cat->received_bytes, "CT01", NULL) == 150);
    CHECK(counter(cat->received_instances, "MR02", NULL) == 0);
    CHECK(counter(cat->received_instances, "other", NULL) == 2);
    CHECK(counter(cat->received_instances, "XX99", NULL) == 2); /* other */

    monitor_refused(mon, 0xA700);
    monitor_refused(mon, 0xA700);
    monitor_refused(mon, 0xC000);
    CHECK(counter(cat->store_refusals, "A700", NULL) == 2);
    CHECK(counter(cat->store_refusals, "C000", NULL) == 1);

    static const struct {
        long status;
        uint16_t reason;
        const char *why;
        const char *label;
    } deferrals[] = {
        { 0, 0, "no token: token endpoint unreachable", "token_unavailable" },
        { 0, 0, "no answer from http://x: timeout", "network" },
        { 0, 0, "out of memory", "local_error" },
        { 500, 0, "HTTP 500", "server_error" },
        { 503, 0, "HTTP 503", "throttled" },
        { 429, 0, "HTTP 429", "throttled" },
        { 408, 0, "HTTP 408", "throttled" },
        { 401, 0, "HTTP 401 even with a fresh token", "unauthorized" },
        { 403, 0, "HTTP 403", "forbidden" },
        { 202, 0xA700, "HTTP 202, Failure Reason A700", "instance_retry" },
    };
    for (size_t i = 0; i < sizeof(deferrals) / sizeof(deferrals[0]); i++) {
        uint64_t before = counter(cat->deferrals, deferrals[i].label, NULL);
        monitor_deferred(mon, deferrals[i].status, deferrals[i].reason,
                         deferrals[i].why);
        CHECK_MSG(counter(cat->deferrals, deferrals[i].label, NULL) ==
                      before + 1,
                  "deferral %zu counted as %s", i, deferrals[i].label);
    }

    monitor_dead_letter(mon, 202, NULL, "HTTP 202, Failure Reason A900");
    monitor_dead_letter(mon, 0, NULL, "expired: not delivered within 1 h");
    monitor_dead_letter(mon, 0, NULL, "not a DICOM file");
    CHECK(counter(cat->dead_letters, "rejected", NULL) == 1);
    CHECK(counter(cat->dead_letters, "expired", NULL) == 1);
    CHECK(counter(cat->dead_letters, "unreadable", NULL) == 1);

    CHECK(gauge(cat->destination_up) == 1.0);
    monitor_http(mon, MONITOR_STOW, 0, 30.0, "connection refused");
    CHECK(gauge(cat->destination_up) == 0.0);
    CHECK(counter(cat->http_responses, "stow", "none") == 1);
    monitor_http(mon, MONITOR_STOW, 200, 0.25, NULL);
    monitor_http(mon, MONITOR_QIDO, 204, 0.01, NULL);
    CHECK(gauge(cat->destination_up) == 1.0);
    CHECK(counter(cat->http_responses, "stow", "200") == 1);
    CHECK(counter(cat->http_responses, "qido", "204") == 1);
    CHECK(metrics_histogram_count(metrics_series(cat->upload_duration, NULL)) ==
          2);
    monitor_http(mon, MONITOR_STOW, 403, 0.1, NULL);
    CHECK(gauge(cat->destination_up) == 1.0); /* answered: reachable */

    memset(&op, 0, sizeof(op));
    monitor_oauth_observer(mon, &op);
    CHECK(op.fetched != NULL && op.fetched_ctx == mon);
    if (op.fetched != NULL) {
        op.fetched(op.fetched_ctx, false, 0,
                   "token endpoint refused: HTTP 401, error=invalid_client");
        op.fetched(op.fetched_ctx, false, 0,
                   "token endpoint unreachable: timeout");
        op.fetched(op.fetched_ctx, true, 1900000000, NULL);
    }
    CHECK(counter(cat->token_refreshes, "failed", NULL) == 2);
    CHECK(counter(cat->token_refreshes, "ok", NULL) == 1);
    CHECK(counter(cat->http_responses, "token", "401") == 1);
    CHECK(counter(cat->http_responses, "token", "none") == 1);
    CHECK(counter(cat->http_responses, "token", "200") == 1);
    CHECK(gauge(cat->token_expiry) == 1900000000.0);

    monitor_association(mon, 1);
    monitor_association(mon, 1);
    monitor_association(mon, -1);
    CHECK(gauge(cat->associations_active) == 1.0);
    monitor_association(mon, -1);
    CHECK(gauge(cat->associations_active) == 0.0);

    /* NULL-safe: a component run without a monitor. */
    monitor_received(NULL, "CT01", "1.2.3", 1);
    monitor_deferred(NULL, 500, 0, "x");
    monitor_http(NULL, MONITOR_STOW, 200, 0.1, NULL);
    monitor_heartbeat(NULL);

    monitor_heartbeat(mon);
    CHECK(notified == 0); /* no WATCHDOG_USEC, and STATUS= only on change */
    monitor_free(mon);
    spool_close(spool);
}

int main(void)
{
    char dir[] = "/tmp/test_monitor.XXXXXX";
    char cmd[64];

    unsetenv("WATCHDOG_USEC");
    test_config_rules();
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_hooks(dir);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    (void)!system(cmd);
    return tap_done();
}
