/* SPDX-License-Identifier: Apache-2.0 */
/*
 * health - the readiness verdict and the JSON bodies of /healthz and
 * /readyz (see admin_int.h).
 */
#include "admin_int.h"

#include <inttypes.h>
#include <stdio.h>

unsigned admin__render_healthz(struct buf *b, uint64_t age_ms,
                               uint64_t limit_ms)
{
    bool ok = age_ms <= limit_ms;

    buf_appendf(b,
                "{\"status\":\"%s\",\"heartbeat_age_s\":%.3f,"
                "\"limit_s\":%.3f",
                ok ? "ok" : "stale", (double)age_ms / 1000.0,
                (double)limit_ms / 1000.0);
    if (!ok) {
        char why[128];
        (void)snprintf(why, sizeof(why),
                       "the daemon loop has not run for "
                       "%.1f s (limit %.1f s)",
                       (double)age_ms / 1000.0, (double)limit_ms / 1000.0);
        buf_append_str(b, ",\"error\":");
        admin__append_json(b, why);
    }
    buf_append_str(b, "}\n");
    return ok ? 200 : 503;
}

const char *const admin__ready_check_names[ADMIN__READY_CHECKS] = {
    "dicom_port", "spool", "destination"
};

bool admin__ready_verdict(const struct admin_ready *r, int64_t now_s,
                          struct admin__ready_verdict *v)
{
    bool ready = true;

    for (int i = 0; i < ADMIN__READY_CHECKS; i++)
        v->problem[i][0] = '\0';
    if (!r->dicom_listening)
        (void)snprintf(v->problem[0], sizeof(v->problem[0]),
                       "the DICOM port %u is not listening",
                       (unsigned)r->dicom_port);
    if (!r->spool_writable)
        (void)snprintf(v->problem[1], sizeof(v->problem[1]),
                       "the spool is not writable%s%s",
                       r->spool_error[0] ? ": " : "", r->spool_error);
    else if (r->spool_free_bytes < r->spool_min_free_bytes)
        (void)snprintf(v->problem[1], sizeof(v->problem[1]),
                       "%" PRIu64 " MiB free on the spool, below "
                       "spool.min_free_mb (%" PRIu64 " MiB)",
                       r->spool_free_bytes / 1048576u,
                       r->spool_min_free_bytes / 1048576u);
    if (r->receive_only)
        ; /* nothing to reach */
    else if (r->destination_ok_s <= 0)
        (void)snprintf(v->problem[2], sizeof(v->problem[2]),
                       "no request has reached the DICOMweb server with a "
                       "valid token yet");
    else if (now_s - r->destination_ok_s > (int64_t)r->window_s)
        (void)snprintf(v->problem[2], sizeof(v->problem[2]),
                       "the DICOMweb server last answered a request with a "
                       "valid token %" PRId64 " s ago (admin.ready_window_s "
                       "is %u)",
                       now_s - r->destination_ok_s, (unsigned)r->window_s);
    for (int i = 0; i < ADMIN__READY_CHECKS; i++)
        if (v->problem[i][0] != '\0')
            ready = false;
    return ready;
}

unsigned admin__render_readyz(struct buf *b, const struct admin_ready *r,
                              int64_t now_s)
{
    struct admin__ready_verdict v;
    bool ready = admin__ready_verdict(r, now_s, &v);

    buf_appendf(b, "{\"ready\":%s,\"checks\":{", ready ? "true" : "false");
    for (int i = 0; i < ADMIN__READY_CHECKS; i++) {
        if (i > 0)
            buf_append_str(b, ",");
        admin__append_json(b, admin__ready_check_names[i]);
        buf_append_str(b, ":");
        admin__append_json(b, v.problem[i][0] ? v.problem[i] : "ok");
    }
    buf_append_str(b, "}}\n");
    return ready ? 200 : 503;
}
