/* SPDX-License-Identifier: Apache-2.0 */
/*
 * page - the status page (see admin_int.h): one self-contained HTML
 * document rendered from a snapshot. Inline CSS only, no script, no
 * external asset; it refreshes itself with <meta http-equiv="refresh">.
 * Every value from the snapshot goes through admin__append_html(); numbers
 * and times are formatted here. The element ids (backlog-incoming,
 * failed, events, ...) are part of the contract with the browser test.
 */
#include "admin_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const char page_css[] =
    ":root{color-scheme:light dark;--bg:#fff;--fg:#1b1f24;--mut:#57606a;"
    "--line:#d0d7de;--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;"
    "--card:#f6f8fa}"
    "@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;"
    "--mut:#9198a1;--line:#30363d;--ok:#3fb950;--bad:#f85149;"
    "--warn:#d29922;--card:#161b22}}"
    "*{box-sizing:border-box}"
    "body{margin:0;padding:12px;background:var(--bg);color:var(--fg);"
    "font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}"
    "main{max-width:1100px;margin:0 auto}"
    "h1{font-size:1.35em;margin:0}"
    "h2{font-size:1.1em;margin:20px 0 6px}"
    ".sub{color:var(--mut);font-size:.88em;margin:2px 0 8px}"
    ".banner{padding:8px 12px;border-radius:6px;border:1px solid var(--line);"
    "background:var(--card);margin:8px 0}"
    ".banner ul{margin:4px 0 0;padding-left:20px}"
    ".ok{color:var(--ok)}.bad{color:var(--bad)}.warn{color:var(--warn)}"
    "b.ok,b.bad,b.warn{font-weight:700}"
    ".scroll{overflow-x:auto}"
    "table{border-collapse:collapse;width:100%;font-size:.92em}"
    "th,td{text-align:left;padding:4px 8px;border-bottom:1px solid "
    "var(--line);vertical-align:top}"
    "th{color:var(--mut);font-weight:600;white-space:nowrap}"
    "td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;"
    "white-space:nowrap}"
    "td.t{white-space:nowrap}"
    ".mono{font-family:ui-monospace,'DejaVu Sans Mono',monospace;"
    "font-size:.88em;overflow-wrap:anywhere}"
    "dl{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px;"
    "margin:0}"
    "dt{color:var(--mut)}dd{margin:0;overflow-wrap:anywhere}"
    ".grid{display:grid;grid-template-columns:repeat(auto-fit,"
    "minmax(300px,1fr));gap:0 24px}"
    ".empty{color:var(--mut);font-style:italic}"
    "footer{margin-top:24px;color:var(--mut);font-size:.85em}"
    "@media (max-width:600px){body{padding:8px;font-size:14px}"
    ".wide{display:none}table{font-size:.86em}th,td{padding:3px 4px}}";

static const char *const backlog_names[ADMIN_BACKLOG_COUNT] = {
    "incoming", "active", "deferred", "failed"
};
static const char *const backlog_doc[ADMIN_BACKLOG_COUNT] = {
    "waiting for the first attempt", "being sent now",
    "waiting to be tried again", "dead letters: an operator must act"
};

/* ---- formats ------------------------------------------------------------ */

static void put_bytes(struct buf *b, double v)
{
    static const char *const units[] = {
        "B", "KiB", "MiB", "GiB", "TiB", "PiB"
    };
    size_t u = 0;

    while (v >= 1024.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        buf_appendf(b, "%.0f B", v);
    else
        buf_appendf(b, "%.*f %s", v < 10 ? 2 : v < 100 ? 1 : 0, v, units[u]);
}

/* "45 s", "3 min 20 s", "2 h 5 min", "4 d 3 h". */
static void put_duration(struct buf *b, uint64_t s)
{
    if (s < 60)
        buf_appendf(b, "%" PRIu64 " s", s);
    else if (s < 3600)
        buf_appendf(b, "%" PRIu64 " min %" PRIu64 " s", s / 60, s % 60);
    else if (s < 86400)
        buf_appendf(b, "%" PRIu64 " h %" PRIu64 " min", s / 3600,
                    s % 3600 / 60);
    else
        buf_appendf(b, "%" PRIu64 " d %" PRIu64 " h", s / 86400,
                    s % 86400 / 3600);
}

/* "2026-12-02 10:15:03 UTC". */
static void put_time(struct buf *b, int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    char text[40];

    if (gmtime_r(&tt, &tm) == NULL ||
        strftime(text, sizeof(text), "%Y-%m-%d %H:%M:%S UTC", &tm) == 0) {
        buf_appendf(b, "%" PRId64, t);
        return;
    }
    buf_append_str(b, text);
}

/* The time, then "(3 min ago)" or "(in 5 min)"; "never" for 0. */
static void put_when(struct buf *b, int64_t t, int64_t now)
{
    if (t <= 0) {
        buf_append_str(b, "never");
        return;
    }
    put_time(b, t);
    buf_append_str(b, t <= now ? " (" : " (in ");
    put_duration(b, (uint64_t)(t <= now ? now - t : t - now));
    buf_append_str(b, t <= now ? " ago)" : ")");
}

/* For table cells: "3 min ago" (or "in 5 min"), the full time as the
 * element's title; "never" for 0. */
static void put_ago(struct buf *b, int64_t t, int64_t now)
{
    if (t <= 0) {
        buf_append_str(b, "never");
        return;
    }
    buf_append_str(b, "<span title=\"");
    put_time(b, t);
    buf_append_str(b, t <= now ? "\">" : "\">in ");
    put_duration(b, (uint64_t)(t <= now ? now - t : t - now));
    buf_append_str(b, t <= now ? " ago</span>" : "</span>");
}

static void put_rate(struct buf *b, struct admin_rate_value count,
                     struct admin_rate_value bytes, uint32_t window_s)
{
    if (count.span_s == 0) {
        buf_append_str(b, "<span class=\"empty\">no data yet</span>");
        return;
    }
    buf_appendf(b, "%.1f /min", count.per_s * 60.0);
    if (bytes.span_s != 0) {
        buf_append_str(b, " &middot; ");
        put_bytes(b, bytes.per_s);
        buf_append_str(b, "/s");
    }
    if (count.span_s + 30 < window_s) {
        buf_append_str(b, " <span class=\"sub\">(over ");
        put_duration(b, count.span_s);
        buf_append_str(b, ")</span>");
    }
}

static void put_text_or(struct buf *b, const char *text, const char *none)
{
    if (text[0] == '\0')
        buf_appendf(b, "<span class=\"empty\">%s</span>", none);
    else
        admin__append_html(b, text);
}

/* ---- sections ------------------------------------------------------------ */

static void render_head(struct buf *b, const struct admin_status *st,
                        const struct admin__page_opts *o)
{
    buf_append_str(b, "<!DOCTYPE html>\n<html lang=\"en\"><head>"
                      "<meta charset=\"utf-8\">"
                      "<meta name=\"viewport\" content=\"width=device-width,"
                      "initial-scale=1\">");
    buf_appendf(b, "<meta http-equiv=\"refresh\" content=\"%u\">",
                (unsigned)o->refresh_s);
    buf_append_str(b, "<title>stowbridge");
    if (st->node[0]) {
        buf_append_str(b, " &middot; ");
        admin__append_html(b, st->node);
    }
    buf_append_str(b, "</title><style>");
    buf_append_str(b, page_css);
    buf_append_str(b, "</style></head><body><main>\n");
}

static void render_title(struct buf *b, const struct admin_status *st,
                         int64_t now, const struct admin__page_opts *o)
{
    struct admin__ready_verdict v;
    bool ready = admin__ready_verdict(&st->ready, now, &v);

    buf_append_str(b, "<header><h1>stowbridge");
    if (st->node[0]) {
        buf_append_str(b, " &middot; ");
        admin__append_html(b, st->node);
    }
    buf_append_str(b, "</h1><p class=\"sub\">");
    if (st->version[0]) {
        buf_append_str(b, "version ");
        admin__append_html(b, st->version);
        buf_append_str(b, " &middot; ");
    }
    if (st->started_s > 0 && st->started_s <= now) {
        buf_append_str(b, "up ");
        put_duration(b, (uint64_t)(now - st->started_s));
        buf_append_str(b, " &middot; ");
    }
    buf_append_str(b, "as of ");
    put_time(b, now);
    buf_appendf(b, " &middot; refreshes every %u s</p>",
                (unsigned)o->refresh_s);
    buf_append_str(b, "<div id=\"readiness\" class=\"banner\">");
    if (ready) {
        buf_append_str(b, "<b class=\"ok\">Ready</b>: the DICOM port "
                          "listens, the spool has room, the destination "
                          "answers.");
    } else {
        buf_append_str(b, "<b class=\"bad\">Not ready</b><ul>");
        for (int i = 0; i < ADMIN__READY_CHECKS; i++) {
            if (v.problem[i][0] == '\0')
                continue;
            buf_append_str(b, "<li>");
            admin__append_html(b, v.problem[i]);
            buf_append_str(b, "</li>");
        }
        buf_append_str(b, "</ul>");
    }
    buf_append_str(b, "</div></header>\n");
}

static void render_backlog(struct buf *b, const struct admin_status *st)
{
    buf_append_str(b, "<section id=\"backlog\"><h2>Backlog</h2>"
                      "<div class=\"scroll\"><table><thead><tr>"
                      "<th>State</th><th class=\"n\">Entries</th>"
                      "<th class=\"n\">Size</th><th class=\"n\">Oldest</th>"
                      "<th class=\"wide\">Meaning</th></tr></thead><tbody>");
    for (int i = 0; i < ADMIN_BACKLOG_COUNT; i++) {
        const struct admin_backlog *q = &st->backlog[i];
        const char *cls = "";
        if (i == ADMIN_BACKLOG_FAILED && q->count > 0)
            cls = " class=\"bad\"";
        buf_appendf(b,
                    "<tr id=\"backlog-%s\"><td%s>%s</td>"
                    "<td class=\"n\">%" PRIu64 "</td><td class=\"n\">",
                    backlog_names[i], cls, backlog_names[i], q->count);
        put_bytes(b, (double)q->bytes);
        buf_append_str(b, "</td><td class=\"n\">");
        if (q->count == 0)
            buf_append_str(b, "&ndash;");
        else
            put_duration(b, q->oldest_age_s);
        buf_appendf(b, "</td><td class=\"wide\">%s</td></tr>", backlog_doc[i]);
    }
    buf_append_str(b, "</tbody></table></div></section>\n");
}

static void render_rates(struct buf *b, const struct admin_status *st)
{
    const struct admin_throughput *t = &st->throughput;

    buf_append_str(b, "<section id=\"rates\"><h2>Throughput</h2>"
                      "<div class=\"scroll\"><table><thead><tr><th></th>"
                      "<th>Last 5 minutes</th><th>Last hour</th>"
                      "<th class=\"n\">Since start</th></tr></thead><tbody>"
                      "<tr id=\"rate-received\"><td>Received</td><td>");
    put_rate(b, t->received_5m, t->received_bytes_5m, 300);
    buf_append_str(b, "</td><td>");
    put_rate(b, t->received_1h, t->received_bytes_1h, 3600);
    buf_appendf(b,
                "</td><td class=\"n\">%" PRIu64 "</td></tr>"
                "<tr id=\"rate-delivered\"><td>Delivered</td><td>",
                t->received_total);
    put_rate(b, t->delivered_5m, t->delivered_bytes_5m, 300);
    buf_append_str(b, "</td><td>");
    put_rate(b, t->delivered_1h, t->delivered_bytes_1h, 3600);
    buf_appendf(b,
                "</td><td class=\"n\">%" PRIu64 "</td></tr>"
                "</tbody></table></div></section>\n",
                t->delivered_total);
}

static void render_destination(struct buf *b, const struct admin_status *st,
                               int64_t now)
{
    const struct admin_destination *d = &st->destination;
    const struct admin_token_state *k = &st->token;

    buf_append_str(b, "<div class=\"grid\"><section id=\"destination\">"
                      "<h2>Destination</h2><dl><dt>Server</dt>"
                      "<dd class=\"mono\">");
    put_text_or(b, d->url, "not configured");
    buf_appendf(b, "</dd><dt>State</dt><dd>%s</dd>",
                d->up ? "<b class=\"ok\">up</b>" : "<b class=\"bad\">down</b>");
    buf_append_str(b, "<dt>Last success</dt><dd>");
    put_when(b, d->last_success_s, now);
    buf_append_str(b, "</dd><dt>Last failure</dt><dd>");
    put_when(b, d->last_failure_s, now);
    if (d->last_failure_s > 0 && d->last_error[0]) {
        buf_append_str(b, ": ");
        admin__append_html(b, d->last_error);
    }
    buf_append_str(b, "</dd></dl></section>\n<section id=\"token\">"
                      "<h2>Access token</h2><dl><dt>Source</dt><dd>");
    put_text_or(b, k->source, "none");
    buf_append_str(b, "</dd><dt>Token</dt><dd>");
    if (!k->have_token) {
        buf_append_str(b, "<b class=\"bad\">none</b>");
    } else if (k->expires_s > 0) {
        bool expired = k->expires_s <= now;
        buf_append_str(b, expired ? "<b class=\"bad\">expired</b> "
                                  : "<b class=\"ok\">valid</b>, expires ");
        put_when(b, k->expires_s, now);
    } else {
        buf_append_str(b, "<b class=\"ok\">present</b>, no expiry known");
    }
    buf_append_str(b, "</dd><dt>Last refresh</dt><dd>");
    put_when(b, k->last_refresh_s, now);
    if (k->last_refresh_s > 0) {
        buf_append_str(b, k->last_refresh_ok ? " <b class=\"ok\">ok</b>"
                                             : " <b class=\"bad\">failed</b>");
        if (!k->last_refresh_ok && k->last_refresh_error[0]) {
            buf_append_str(b, ": ");
            admin__append_html(b, k->last_refresh_error);
        }
    }
    buf_append_str(b, "</dd><dt>Last 401/403</dt><dd id=\"last-denied\">");
    if (k->last_denied_s <= 0) {
        buf_append_str(b, "never");
    } else {
        buf_appendf(b, "<b class=\"bad\">%d</b> ", k->last_denied_status);
        put_when(b, k->last_denied_s, now);
        if (k->last_denied_diagnosis[0]) {
            buf_append_str(b, ": ");
            admin__append_html(b, k->last_denied_diagnosis);
        }
    }
    buf_append_str(b, "</dd></dl></section></div>\n");
}

static void render_failed(struct buf *b, const struct admin_status *st,
                          int64_t now)
{
    uint64_t total = st->backlog[ADMIN_BACKLOG_FAILED].count;
    size_t n = st->failed_count < ADMIN_FAILED_MAX ? st->failed_count
                                                   : ADMIN_FAILED_MAX;

    buf_append_str(b, "<section id=\"failed\"><h2>Failed entries");
    if (total > n)
        buf_appendf(b, " (newest %zu of %" PRIu64 ")", n, total);
    else if (n > 0)
        buf_appendf(b, " (%zu)", n);
    buf_append_str(b, "</h2>");
    if (n == 0) {
        buf_append_str(b, "<p class=\"empty\">No failed entries.</p>"
                          "</section>\n");
        return;
    }
    buf_append_str(b, "<div class=\"scroll\"><table><thead><tr>"
                      "<th>Entry</th><th>Caller</th><th>Reason</th>"
                      "<th class=\"wide\">Study / SOP Instance UID</th>"
                      "<th class=\"n wide\">Size</th><th class=\"wide\">"
                      "Failed</th></tr></thead><tbody>");
    for (size_t i = 0; i < n; i++) {
        const struct admin_failed_entry *f = &st->failed[i];
        buf_append_str(b, "<tr class=\"failed-entry\"><td class=\"mono\">");
        admin__append_html(b, f->id);
        buf_append_str(b, "</td><td>");
        admin__append_html(b, f->calling_ae);
        buf_append_str(b, "</td><td class=\"reason\">");
        put_text_or(b, f->reason, "no reason recorded");
        buf_append_str(b, "</td><td class=\"mono wide\">");
        admin__append_html(b, f->study_uid);
        if (f->sop_uid[0]) {
            buf_append_str(b, "<br>");
            admin__append_html(b, f->sop_uid);
        }
        buf_append_str(b, "</td><td class=\"n wide\">");
        put_bytes(b, (double)f->bytes);
        buf_append_str(b, "</td><td class=\"t wide\">");
        put_ago(b, f->failed_s, now);
        buf_append_str(b, "</td></tr>");
    }
    buf_append_str(b, "</tbody></table></div></section>\n");
}

static void render_studies(struct buf *b, const struct admin_status *st,
                           int64_t now)
{
    size_t n = st->study_count < ADMIN_STUDIES_MAX ? st->study_count
                                                   : ADMIN_STUDIES_MAX;
    uint64_t total = st->studies_total > n ? st->studies_total : n;

    buf_append_str(b, "<section id=\"studies\"><h2>Studies in flight");
    if (total > n)
        buf_appendf(b, " (most recent %zu of %" PRIu64 ")", n, total);
    else if (n > 0)
        buf_appendf(b, " (%zu)", n);
    buf_append_str(b, "</h2>");
    if (n == 0) {
        buf_append_str(b, "<p class=\"empty\">No study is waiting to be "
                          "delivered.</p></section>\n");
        return;
    }
    buf_append_str(b, "<div class=\"scroll\"><table><thead><tr>"
                      "<th>Study Instance UID</th><th>Caller</th>"
                      "<th class=\"n\">Received</th>"
                      "<th class=\"n\">Delivered</th>"
                      "<th class=\"n\">Failed</th>"
                      "<th class=\"wide\">Last activity</th></tr></thead>"
                      "<tbody>");
    for (size_t i = 0; i < n; i++) {
        const struct admin_study *s = &st->studies[i];
        buf_append_str(b, "<tr><td class=\"mono\">");
        admin__append_html(b, s->study_uid);
        buf_append_str(b, "</td><td>");
        admin__append_html(b, s->calling_ae);
        buf_appendf(b,
                    "</td><td class=\"n\">%" PRIu64 "</td>"
                    "<td class=\"n\">%" PRIu64 "</td>"
                    "<td class=\"n%s\">%" PRIu64 "</td>"
                    "<td class=\"t wide\">",
                    s->received, s->delivered, s->failed ? " bad" : "",
                    s->failed);
        put_ago(b, s->last_s, now);
        buf_append_str(b, "</td></tr>");
    }
    buf_append_str(b, "</tbody></table></div></section>\n");
}

static void render_events(struct buf *b, const struct admin_status *st)
{
    static const char *const levels[8] = {
        "emerg", "alert", "crit", "error", "warning", "notice", "info", "debug"
    };
    size_t n =
        st->event_count < ADMIN_EVENTS_MAX ? st->event_count : ADMIN_EVENTS_MAX;

    buf_append_str(b, "<section id=\"events\"><h2>Recent events</h2>");
    if (n == 0) {
        buf_append_str(b, "<p class=\"empty\">No events yet.</p>"
                          "</section>\n");
        return;
    }
    buf_append_str(b, "<div class=\"scroll\"><table><thead><tr>"
                      "<th>Time (UTC)</th><th>Level</th><th>Event</th>"
                      "</tr></thead><tbody>");
    for (size_t i = 0; i < n; i++) {
        const struct admin_event *e = &st->events[i];
        int lvl = e->level >= 0 && e->level <= 7 ? e->level : 6;
        time_t tt = (time_t)e->time_s;
        struct tm tm;
        char when[32] = "";
        if (gmtime_r(&tt, &tm) != NULL)
            (void)strftime(when, sizeof(when), "%m-%d %H:%M:%S", &tm);
        buf_appendf(b,
                    "<tr><td class=\"t\">%s</td><td%s>%s</td>"
                    "<td class=\"mono\">",
                    when,
                    lvl <= 3   ? " class=\"bad\""
                    : lvl == 4 ? " class=\"warn\""
                               : "",
                    levels[lvl]);
        admin__append_html(b, e->text);
        buf_append_str(b, "</td></tr>");
    }
    buf_append_str(b, "</tbody></table></div></section>\n");
}

static void render_footer(struct buf *b, const struct admin__page_opts *o)
{
    buf_append_str(b, "<footer id=\"actions\"><p>");
    if (o->actions) {
        buf_append_str(b, "Actions (POST with the bearer token; a browser "
                          "form cannot send it):<br><code>curl -X POST -H "
                          "\"Authorization: Bearer $(cat TOKEN_FILE)\" ");
        admin__append_html(b, o->base_url);
        buf_append_str(b, "/actions/retry?id=ENTRY</code> retries one failed "
                          "entry;<br><code>curl -X POST -H \"Authorization: "
                          "Bearer $(cat TOKEN_FILE)\" ");
        admin__append_html(b, o->base_url);
        buf_append_str(b, "/actions/retry-all</code> retries them all.");
    } else {
        buf_append_str(b, "Actions are off (admin.allow_actions). "
                          "<code>stowbridge queue retry</code> works on the "
                          "host.");
    }
    buf_append_str(b, "</p><p>Machine-readable: <a href=\"/metrics\">"
                      "/metrics</a> &middot; <a href=\"/healthz\">/healthz"
                      "</a> &middot; <a href=\"/readyz\">/readyz</a></p>"
                      "</footer>\n");
}

void admin__render_page(struct buf *b, const struct admin_status *st,
                        int64_t now_s, const struct admin__page_opts *opts)
{
    render_head(b, st, opts);
    render_title(b, st, now_s, opts);
    render_backlog(b, st);
    render_rates(b, st);
    render_destination(b, st, now_s);
    render_failed(b, st, now_s);
    render_studies(b, st, now_s);
    render_events(b, st);
    render_footer(b, opts);
    buf_append_str(b, "</main></body></html>\n");
}
