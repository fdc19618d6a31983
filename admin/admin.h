/* SPDX-License-Identifier: Apache-2.0 */
/*
 * admin - the bridge's HTTP endpoint for people and monitoring (issue 14,
 * docs/architecture.md section 10): /metrics, /healthz, /readyz, the status
 * page at /, and two POST actions. It reads only what the daemon hands it: a
 * metrics registry and the callbacks of struct admin_provider. It never touches
 * the spool, the ledger or DCMTK.
 *
 * Endpoints (GET and HEAD; anything else is 405 with Allow):
 *   /metrics   the registry in the Prometheus text format 0.0.4
 *   /healthz   200 while the daemon's heartbeat (admin_heartbeat()) is
 *              younger than healthz_stale_s, else 503; small JSON body
 *   /readyz    200 when the DICOM port listens, the spool is writable and
 *              above its minimum free space, and the destination answered
 *              a request sent with a valid token within window_s; else
 *              503; the JSON body says which check fails and why
 *   /          the status page: self-contained HTML (inline CSS, no
 *              script, no external asset), refreshing itself, readable on
 *              a phone, every value HTML-escaped
 * POST only, and only with allow_actions and the bearer token:
 *   /actions/retry?id=<entry id>   retry one failed entry
 *   /actions/retry-all             retry every failed entry
 *
 * Access rules:
 *   - Without a token (only allowed on a loopback address) every GET is
 *     open, but the Host header must name a loopback address or
 *     "localhost" (DNS rebinding: a web page cannot read the endpoint
 *     through a name of its own), and there are no actions.
 *   - With a token, / and /metrics need "Authorization: Bearer <token>",
 *     or HTTP Basic with the token as password (so a browser can show the
 *     page); /healthz and /readyz stay open for probes.
 *   - Actions need allow_actions, a POST, "Authorization: Bearer <token>"
 *     (never Basic: a browser attaches Basic credentials to cross-site
 *     requests by itself, it never attaches a Bearer header, and an HTML
 *     form cannot set one), and no Origin or Sec-Fetch-Site that says
 *     cross-site. No cookies are ever set or read. The token is compared
 *     in constant time.
 *
 * Threads and load: the server runs on its own thread (libmicrohttpd
 * with external epoll polling driven by that thread), never on a DIMSE
 * or upload thread, with all signals blocked and a lower CPU priority
 * (nice + ADMIN_NICE) so a flood of requests yields to the DICOM side.
 * Bounded: at most connection_limit connections (more wait in the listen
 * queue), per_ip_limit per client address (more are closed at once),
 * every request must be complete within request_timeout_s of its
 * connection opening or of the previous response (slow clients are cut
 * off: no slowloris), 16 KiB of request headers, no request body (413),
 * responses of bounded size.
 *
 * Callbacks (struct admin_provider) run on the admin thread, one at a
 * time. They must be quick (milliseconds: copy a summary the daemon keeps
 * current, never scan the spool) and must not call admin_free(). Actions
 * that are long (retry all of 100 000 entries) should be handed to a
 * daemon thread and return at once.
 *
 * Errors: functions return 0 or a negative errno with a reason in @err
 * (-EINVAL for a bad parameter or configuration, -EADDRINUSE and friends
 * from bind(2), -ENOMEM). The server never logs (library module); what it
 * refuses it answers with a status and a short text.
 */
#ifndef STOWBRIDGE_ADMIN_H
#define STOWBRIDGE_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "events.h"
#include "rate.h"

#ifdef __cplusplus
extern "C" {
#endif

struct admin;
struct metrics;

#define ADMIN_DEFAULT_LISTEN "127.0.0.1:9475"
#define ADMIN_DEFAULT_PORT 9475
#define ADMIN_NICE 10

/* Field sizes of the snapshot (values are cut to fit, at a UTF-8
 * character boundary, by admin_copy_text()). */
#define ADMIN_TEXT_MAX 256
#define ADMIN_URL_MAX 256
#define ADMIN_NAME_MAX 64
#define ADMIN_ID_MAX 64
#define ADMIN_AE_MAX 17
#define ADMIN_UID_MAX 65
/* List bounds of the snapshot: the status page never lists more. */
#define ADMIN_EVENTS_MAX 50
#define ADMIN_FAILED_MAX 100
#define ADMIN_STUDIES_MAX 50

/* ---- admin.listen ------------------------------------------------------ */

/* A parsed admin.listen value. */
struct admin_listen {
    bool enabled; /* false for "" (the endpoint is off) */
    bool ipv6;
    bool loopback;    /* 127.0.0.0/8, ::1 or ::ffff:127.x.y.z */
    uint8_t addr[16]; /* network byte order; 4 bytes for IPv4 */
    uint16_t port;    /* 0: any free port (tests) */
};

/*
 * Parses admin.listen: "" (off), "a.b.c.d:port", "[v6]:port". Addresses
 * are numeric (no host names), IPv6 in brackets, the port 0..65535 and
 * required. Errors: -EINVAL with the reason in @err.
 */
int admin_listen_parse(const char *text, struct admin_listen *ret_listen,
                       char *err, size_t err_len);

/*
 * The configuration rules of the admin section, for the config check:
 * admin.listen parses; an address other than loopback needs
 * admin.token_file (@have_token); admin.allow_actions needs it too.
 * Returns 0 or -EINVAL with a message that names the key.
 */
int admin_config_check(const char *listen, bool have_token, bool allow_actions,
                       char *err, size_t err_len);

/* ---- the snapshot the daemon fills ------------------------------------- */

/* What /readyz checks (and the top of the status page shows). */
struct admin_ready {
    bool dicom_listening;
    uint16_t dicom_port;
    bool spool_writable;
    char spool_error[ADMIN_TEXT_MAX]; /* why not writable, if known */
    uint64_t spool_free_bytes;
    uint64_t spool_min_free_bytes; /* spool.min_free_mb in bytes */
    /* Unix time the DICOMweb server last answered a request sent with a
     * valid token (any answer but 401/403 or none); 0: never. */
    int64_t destination_ok_s;
    uint32_t window_s; /* admin.ready_window_s */
    bool receive_only; /* no destination: that check
                          passes */
};

enum admin_backlog_state {
    ADMIN_BACKLOG_INCOMING = 0,
    ADMIN_BACKLOG_ACTIVE,
    ADMIN_BACKLOG_DEFERRED,
    ADMIN_BACKLOG_FAILED,
    ADMIN_BACKLOG_COUNT,
};

struct admin_backlog {
    uint64_t count;
    uint64_t bytes;
    uint64_t oldest_age_s; /* since arrival; 0 when empty */
};

/* Rates from struct admin_rate (instances and bytes per second). */
struct admin_throughput {
    struct admin_rate_value received_5m;
    struct admin_rate_value received_1h;
    struct admin_rate_value received_bytes_5m;
    struct admin_rate_value received_bytes_1h;
    struct admin_rate_value delivered_5m;
    struct admin_rate_value delivered_1h;
    struct admin_rate_value delivered_bytes_5m;
    struct admin_rate_value delivered_bytes_1h;
    uint64_t received_total; /* since the daemon started */
    uint64_t delivered_total;
};

struct admin_destination {
    char url[ADMIN_URL_MAX]; /* base URL, no credentials */
    bool up;                 /* as stowbridge_destination_up */
    int64_t last_success_s;  /* 0: never */
    int64_t last_failure_s;  /* 0: never */
    char last_error[ADMIN_TEXT_MAX];
};

struct admin_token_state {
    char source[ADMIN_NAME_MAX]; /* "client_credentials", "static" */
    bool have_token;
    int64_t expires_s;      /* 0: unknown or no expiry */
    int64_t last_refresh_s; /* 0: never */
    bool last_refresh_ok;
    char last_refresh_error[ADMIN_TEXT_MAX];
    int64_t last_denied_s; /* last 401/403; 0: never */
    int last_denied_status;
    char last_denied_diagnosis[ADMIN_TEXT_MAX];
};

struct admin_failed_entry {
    char id[ADMIN_ID_MAX];
    char calling_ae[ADMIN_AE_MAX];
    char study_uid[ADMIN_UID_MAX];
    char sop_uid[ADMIN_UID_MAX];
    uint64_t bytes;
    int64_t arrived_s;
    int64_t failed_s;
    char reason[ADMIN_TEXT_MAX];
};

struct admin_study {
    char study_uid[ADMIN_UID_MAX];
    char calling_ae[ADMIN_AE_MAX];
    uint64_t received;
    uint64_t delivered;
    uint64_t failed;
    int64_t first_s;
    int64_t last_s;
};

/*
 * Everything the status page shows: summaries and bounded lists, never a
 * listing of the spool. Zeroed by the server before each fill.
 */
struct admin_status {
    char version[ADMIN_NAME_MAX];
    char node[ADMIN_NAME_MAX]; /* the bridge's AE title or host */
    int64_t started_s;
    struct admin_ready ready;
    struct admin_backlog backlog[ADMIN_BACKLOG_COUNT];
    struct admin_throughput throughput;
    struct admin_destination destination;
    struct admin_token_state token;
    /* Newest first; the total is backlog[ADMIN_BACKLOG_FAILED].count. */
    struct admin_failed_entry failed[ADMIN_FAILED_MAX];
    size_t failed_count;
    /* Studies with entries in the spool, most recent activity first. */
    struct admin_study studies[ADMIN_STUDIES_MAX];
    size_t study_count;
    uint64_t studies_total;
    /* Newest first (admin_events_copy()). */
    struct admin_event events[ADMIN_EVENTS_MAX];
    size_t event_count;
};

/*
 * What the daemon provides. Each callback gets @ctx, fills the zeroed
 * struct and returns 0, or a negative errno (the endpoint then answers
 * 503). A NULL callback: /readyz and / answer 503, and that action is
 * not offered (404).
 */
struct admin_provider {
    void *ctx;
    int (*ready)(void *ctx, struct admin_ready *ret_ready);
    int (*status)(void *ctx, struct admin_status *ret_status);
    /* -ENOENT: no failed entry with this ID (404). */
    int (*retry_failed)(void *ctx, const char *id, char *err, size_t err_len);
    /* *ret_count: entries retried (or queued for retry). */
    int (*retry_all_failed)(void *ctx, uint64_t *ret_count, char *err,
                            size_t err_len);
};

/* ---- the server --------------------------------------------------------- */

struct admin_params {
    const char *listen;         /* admin.listen */
    const char *token;          /* the bearer token; NULL or "": none */
    bool allow_actions;         /* admin.allow_actions */
    uint32_t healthz_stale_s;   /* 0: 30 */
    uint32_t page_refresh_s;    /* 0: 10 */
    uint32_t connection_limit;  /* 0: 64 */
    uint32_t per_ip_limit;      /* 0: 16 */
    uint32_t request_timeout_s; /* 0: 10 */
    struct metrics *metrics;    /* borrowed; NULL: /metrics is 404 */
    struct admin_provider provider;
};

/*
 * Checks @params (admin_config_check() rules), binds the address and
 * starts the server thread. An empty listen address (off) succeeds with
 * *@ret_admin = NULL. The token is copied (and wiped at admin_free()).
 * Errors: -EINVAL (reason in @err), a bind(2)/listen(2) errno such as
 * -EADDRINUSE, -ENOMEM, or the errno of a failed thread start.
 */
int admin_new(const struct admin_params *params, struct admin **ret_admin,
              char *err, size_t err_len);

/* Stops the server (open connections are closed) and frees it. Accepts
 * NULL. Must not be called from a provider callback. */
void admin_free(struct admin *admin);

/* The port the server listens on (the chosen one when listen asked 0). */
uint16_t admin_port(const struct admin *admin);

/* Marks the daemon loop alive now (lock-free). Accepts NULL. */
void admin_heartbeat(struct admin *admin);

/*
 * Copies @src into @dst (capacity @cap >= 1), cut to fit at a UTF-8
 * character boundary; NULL copies "". For filling the snapshot.
 */
void admin_copy_text(char *dst, size_t cap, const char *src);

#ifdef __cplusplus
}
#endif

#endif
