/* SPDX-License-Identifier: Apache-2.0 */
/*
 * daemon - see daemon.h.
 *
 * Order of start-up (docs/architecture.md section 9): lock the spool, recover
 * it, and only then open the DIMSE port, so nothing is received into a spool
 * that has not been checked. READY=1 goes to systemd once the port is
 * bound. SIGTERM/SIGINT set a flag that the SCP polls; associations in
 * flight finish their current C-STORE (answered as usual) before they are
 * closed.
 *
 * SIGHUP (daemon_reload()): the configuration file is read again with its
 * secret files; the token source takes the new credential material (the
 * secret, the certificate and key, the assertion file, the token command)
 * for its next fetch, and the current token stays in use until its
 * refresh, so uploads in flight never notice. A file that does not load
 * leaves the old material in place and the log says why. Other keys need
 * a restart. The reload runs on the SCP's loop thread, where the stop
 * predicate is polled, never in the signal handler.
 */
#include "daemon.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"
#include "commit.h"
#include "config/config.h"
#include "find.h"
#include "monitor.h"
#include "params.h"
#include "retrieve.h"
#include "scp/scp.h"
#include "spool/spool.h"
#include "uploader.h"
#include "web/dicomweb.h"
#include "web/oauth.h"

/* Extra seconds beyond dicom.timeout_s that a stop waits for
 * associations still receiving a data set. */
#define DAEMON_GRACE_EXTRA_S 5
/* Descriptors the daemon holds besides the SCP's and the uploader's:
 * standard streams, the spool's lock and directories, the notify socket,
 * DNS and token requests. */
#define DAEMON_BASE_FDS 32
/* Per upload worker, besides its batch's files: its connections. */
#define DAEMON_WORKER_FDS 4

static atomic_bool daemon_stop_requested;
static atomic_bool daemon_stopping_announced;
static atomic_int daemon_stop_signal;
static atomic_bool daemon_hup_seen;
/* The thread that runs the SCP's accept loop: its polls are the daemon
 * loop's heartbeat (/healthz, the systemd watchdog). */
static pthread_t daemon_loop_thread;

/* The running SCP, for tls_reload() (set before scp_run()). */
static struct scp *daemon_scp;
static bool daemon_tls_on;

/*
 * SIGHUP's TLS part: re-reads the TLS certificate, key, CA and CRL files;
 * new associations use them, running ones keep theirs; a broken file
 * keeps the old material (scp_tls_reload() logs either outcome).
 */
static void tls_reload(void)
{
    char err[512];

    if (daemon_scp == NULL || !daemon_tls_on)
        return;
    (void)scp_tls_reload(daemon_scp, err, sizeof(err));
}

/* What a reload needs, handed to the SCP's stop predicate. */
struct daemon_ctx {
    const char *config_path;
    struct oauth_source *tokens; /* NULL: receive-only */
    unsigned reloads;
    struct monitor *monitor; /* the daemon loop's heartbeat */
};

static void daemon_on_signal(int sig)
{
    if (sig == SIGHUP) {
        atomic_store(&daemon_hup_seen, true);
        return;
    }
    atomic_store(&daemon_stop_signal, sig);
    atomic_store(&daemon_stop_requested, true);
}

/*
 * SIGHUP: re-reads the configuration file and the credential files it
 * names, and hands the new material to the token source. Everything that
 * fails keeps what was there, and is logged once here.
 */
static void daemon_reload(struct daemon_ctx *ctx)
{
    struct oauth_params oauth;
    struct cfg *fresh = NULL;
    char err[1024];
    int r;

    ctx->reloads++;
    r = cfg_load(ctx->config_path, &fresh, err, sizeof(err));
    if (r < 0) {
        log_warning("event=reload-failed reason=\"%s\", keeping the "
                    "current configuration and credentials",
                    err);
        return;
    }
    if (ctx->tokens != NULL) {
        params_oauth(fresh, &oauth);
        r = oauth_source_reload(ctx->tokens, &oauth, err, sizeof(err));
        if (r < 0) {
            log_warning("event=reload-failed what=credentials reason=\"%s\", "
                        "keeping the current credentials",
                        err);
            cfg_free(fresh);
            return;
        }
    }
    /* The DIMSE side's TLS certificate and key are re-read after this by
     * tls_reload(); its failure keeps the old files the same way. */
    log_notice("event=reloaded reload=%u auth=%s credentials=%s "
               "reason=\"new credentials are used from the next token "
               "request; the current token stays until its refresh; other "
               "keys need a restart\"",
               ctx->reloads, fresh->auth.type,
               ctx->tokens != NULL ? "replaced" : "unused");
    cfg_free(fresh);
}

/* The SCP's stop predicate; also the place that reports what signals
 * arrived, since a signal handler must not log. */
static bool daemon_should_stop(void *arg)
{
    struct daemon_ctx *ctx = arg;

    if (pthread_equal(pthread_self(), daemon_loop_thread))
        monitor_heartbeat(ctx->monitor);
    if (atomic_exchange(&daemon_hup_seen, false)) {
        log_notice("event=sighup reason=\"reloading the credentials and the "
                   "TLS files; other configuration changes need a restart\"");
        daemon_reload(ctx);
        tls_reload();
    }
    if (!atomic_load(&daemon_stop_requested))
        return false;
    if (!atomic_exchange(&daemon_stopping_announced, true)) {
        log_notice("event=stopping signal=%s",
                   atomic_load(&daemon_stop_signal) == SIGINT ? "SIGINT"
                                                              : "SIGTERM");
        (void)daemon_notify("STOPPING=1");
    }
    return true;
}

int daemon_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un addr;
    size_t path_len;
    socklen_t addr_len;
    int fd;
    int r = 0;

    if (path == NULL || path[0] == '\0')
        return 0;
    path_len = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || path_len >= sizeof(addr.sun_path))
        return -EINVAL;

    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path, path_len);
    if (path[0] == '@')
        addr.sun_path[0] = '\0'; /* abstract namespace */
    addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_len);

    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (sendto(fd, state, strlen(state), MSG_NOSIGNAL,
               (const struct sockaddr *)&addr, addr_len) < 0)
        r = -errno;
    (void)close(fd);
    return r;
}

static int daemon_install_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = daemon_on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0 ||
        sigaction(SIGHUP, &sa, NULL) < 0)
        return -errno;
    /* A peer that closes its socket must not kill the process. */
    sa.sa_handler = SIG_IGN;
    if (sigaction(SIGPIPE, &sa, NULL) < 0)
        return -errno;
    return 0;
}

bool daemon_tls_params(const struct cfg *cfg, struct scp_tls_params *ret)
{
    const struct cfg_tls *t = &cfg->dicom.tls;

    memset(ret, 0, sizeof(*ret));
    if (t->certificate_file[0] == '\0')
        return false;
    ret->port = (uint16_t)t->port;
    ret->certificate_file = t->certificate_file;
    ret->private_key_file = t->private_key_file;
    ret->private_key_password_file =
        t->private_key_password_file[0] ? t->private_key_password_file : NULL;
    ret->ca_file = t->ca_file[0] ? t->ca_file : NULL;
    ret->crl_file = t->crl_file[0] ? t->crl_file : NULL;
    ret->client_certificate =
        strcmp(t->client_certificate, "optional") == 0 ? SCP_TLS_CLIENT_OPTIONAL
        : strcmp(t->client_certificate, "none") == 0   ? SCP_TLS_CLIENT_NONE
                                                     : SCP_TLS_CLIENT_REQUIRED;
    ret->profile = strcmp(t->profile, "bcp195") == 0 ? SCP_TLS_BCP195
                   : strcmp(t->profile, "bcp195-extended") == 0
                       ? SCP_TLS_BCP195_EXTENDED
                       : SCP_TLS_BCP195_ND;
    ret->security_level = t->security_level;
    return true;
}

void daemon_listen_params(const struct cfg *cfg, struct scp_params *params,
                          struct scp_tls_params *tls)
{
    params->port = (uint16_t)cfg->dicom.port;
    params->bind_address = cfg->dicom.bind_address;
    params->tls = daemon_tls_params(cfg, tls) ? tls : NULL;
    params->trusted_proxies =
        (const char *const *)cfg->dicom.proxy_protocol.trusted_proxies;
    params->trusted_proxy_count = cfg->dicom.proxy_protocol.trusted_proxy_count;
}

/*
 * Raises the soft RLIMIT_NOFILE to the hard limit (systemd's LimitNOFILE=
 * sets both; a shell may have a lower soft one) and says whether what the
 * configuration may hold at once fits: associations, pending connections
 * and closing sockets (scp_fds_needed()), each upload worker's batch of
 * files and connections, and the daemon's own. When it does not fit the
 * daemon still runs: out of descriptors, the SCP pauses accepting and
 * refuses callers cleanly (event=accept-failed).
 */
/* Descriptors one C-MOVE or C-GET may hold at once. */
#define DAEMON_RETRIEVE_FDS 8

static void daemon_size_fds(const struct cfg *cfg,
                            const struct scp_params *params, bool uploading)
{
    unsigned long long need = DAEMON_BASE_FDS + scp_fds_needed(params);
    struct rlimit rl;
    char err[128];

    if (uploading)
        need += (unsigned long long)cfg->upload.workers *
                    (cfg->upload.batch_max_instances + DAEMON_WORKER_FDS) +
                /* C-MOVE/C-GET: the tmp/ directory, the part being
                 * written, the file being sent, WADO-RS and QIDO-RS
                 * sockets, the sub-association. */
                (unsigned long long)cfg->retrieve.max_parallel *
                    DAEMON_RETRIEVE_FDS;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        log_warning("event=fd-limit reason=\"getrlimit() failed: %s\", "
                    "ignoring",
                    util_strerror(-errno, err, sizeof(err)));
        return;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit raised = rl;

        raised.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
            rl = raised;
        else
            log_warning("event=fd-limit reason=\"setrlimit() failed: %s\", "
                        "ignoring",
                        util_strerror(-errno, err, sizeof(err)));
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
        log_warning("event=fd-limit limit=%llu needed=%llu reason=\"the "
                    "open file limit is below what dicom.max_associations, "
                    "dicom.max_pending and the upload workers may hold at "
                    "once; raise LimitNOFILE= of the unit (or lower them): "
                    "out of descriptors, callers are refused\"",
                    (unsigned long long)rl.rlim_cur, need);
    else
        log_info("event=fd-limit limit=%llu needed=%llu",
                 rl.rlim_cur == RLIM_INFINITY ? 0ull
                                              : (unsigned long long)rl.rlim_cur,
                 need);
}

/* The monitor (metrics, summaries, the admin endpoint) for @cfg. */
static int daemon_monitor_new(const struct cfg *cfg, struct spool *spool,
                              struct monitor **ret_monitor, char *err,
                              size_t err_len)
{
    struct monitor_params mp;
    const char **callers = NULL;
    int r;

    if (params_monitor(cfg, spool, &callers, &mp) < 0) {
        snprintf(err, err_len, "out of memory");
        return -ENOMEM;
    }
    mp.notify = daemon_notify;
    r = monitor_new(&mp, ret_monitor, err, err_len);
    free(callers);
    return r;
}

int daemon_run(const struct cfg *cfg, const char *config_path)
{
    struct daemon_ctx ctx;
    struct spool_recovery recovery;
    struct scp_caller_rule *rules = NULL;
    struct scp_params params;
    struct scp_tls_params tls_params;
    struct spool *spool = NULL;
    struct scp *scp = NULL;
    struct oauth_source *tokens = NULL;
    struct uploader *uploader = NULL;
    struct find_service *finder = NULL;
    struct find_web *find_web = NULL;
    struct scp_find_handler find_handler;
    struct find_web *commit_web = NULL;
    struct commit_service *committer = NULL;
    struct commit_remote *remotes = NULL;
    struct scp_commit_handler commit_handler;
    struct scp_find_handler find_timed;
    struct find_web *retrieve_web = NULL;
    struct retrieve_service *retriever = NULL;
    struct scp_retrieve_handler retrieve_handler;
    struct scp_remote *scp_remotes = NULL;
    struct scp_outbound_tls outbound_tls;
    bool outbound_tls_used = false;
    struct monitor *monitor = NULL;
    char err[512];
    int status = 1;
    int r;

    log_set_level((enum log_level)cfg->log.level);

    r = daemon_install_signals();
    if (r < 0) {
        log_err("event=start-failed reason=\"sigaction() failed: %s\"",
                util_strerror(r, err, sizeof(err)));
        return 1;
    }
    r = scp_global_init(err, sizeof(err));
    if (r < 0) {
        log_err("event=start-failed reason=\"%s\"", err);
        return 1;
    }

    r = spool_open(cfg->spool.dir, SPOOL_OPEN_OWNER, &spool, err, sizeof(err));
    if (r < 0) {
        log_err("event=start-failed reason=\"%s\"", err);
        goto out;
    }
    r = spool_recover(spool, &recovery, err, sizeof(err));
    if (r < 0) {
        log_err("event=start-failed reason=\"spool recovery failed: %s\"", err);
        goto out;
    }
    log_notice("event=spool-recovered dir=%s tmp_removed=%u "
               "active_requeued=%u set_aside=%u journal_records=%u "
               "journal_restored=%u",
               cfg->spool.dir, recovery.tmp_removed, recovery.active_requeued,
               recovery.set_aside, recovery.journal_records,
               recovery.journal_restored);
    if (recovery.journal_restored > 0)
        log_warning("event=spool-journal-restored count=%u dir=%s "
                    "reason=\"entries a crash had lost or damaged since the "
                    "journal's last checkpoint were written again from it\"",
                    recovery.journal_restored, cfg->spool.dir);
    r = spool_journal_start(spool, cfg->spool.journal_mb,
                            cfg->spool.journal_checkpoint_ms,
                            cfg->spool.journal_max_kb, err, sizeof(err));
    if (r < 0)
        /* E.g. no room for its segments: receiving still works, with
         * two flushes in a row per instance instead of one. */
        log_warning("event=spool-journal-unavailable dir=%s reason=\"%s\" "
                    "action=\"instances are committed file by file\"",
                    cfg->spool.dir, err);
    if (recovery.set_aside > 0)
        log_warning("event=spool-foreign-files count=%u dir=%s/lost+found "
                    "reason=\"files that are not spool entries were moved "
                    "aside; inspect them\"",
                    recovery.set_aside, cfg->spool.dir);

    r = daemon_monitor_new(cfg, spool, &monitor, err, sizeof(err));
    if (r < 0) {
        log_err("event=start-failed reason=\"%s\"", err);
        goto out;
    }

    if (params_scp_callers(cfg, &rules) < 0) {
        log_err("event=start-failed reason=\"out of memory\"");
        goto out;
    }
    params_scp(cfg, spool, rules, &params);
    daemon_listen_params(cfg, &params, &tls_params);
    monitor_scp_observer(monitor, &params.observer);
    daemon_size_fds(cfg, &params, params_uploading(cfg));

    if (params_uploading(cfg)) {
        struct oauth_params oauth;

        params_oauth(cfg, &oauth);
        monitor_oauth_observer(monitor, &oauth);
        r = oauth_source_open(&oauth, &tokens, err, sizeof(err));
        if (r < 0) {
            log_err("event=start-failed reason=\"%s\"",
                    r == -ENOMEM ? "out of memory" : err);
            goto out;
        }
    }
    if (tokens != NULL && params_find_enabled(cfg)) {
        struct dicomweb_params web;
        struct find_params fp;

        params_dicomweb(cfg, &web);
        find_web =
            find_web_new(web.base_url, web.ca_file, web.timeout_s, tokens);
        params_find(cfg, &fp);
        fp.fetch = find_web_fetch;
        fp.fetch_ctx = find_web;
        if (find_web != NULL) {
            monitor_wrap_fetch(monitor, find_web_fetch, find_web);
            fp.fetch = monitor_fetch;
            fp.fetch_ctx = monitor;
        }
        finder = find_web != NULL ? find_service_new(&fp) : NULL;
        if (finder == NULL) {
            log_err("event=start-failed reason=\"out of memory\"");
            goto out;
        }
        find_handler_init(finder, &find_handler);
        monitor_wrap_find(monitor, &find_handler, &find_timed);
        params.find = &find_timed;
    }

    if (params_scp_remotes(cfg, &scp_remotes, &outbound_tls,
                           &outbound_tls_used) < 0) {
        log_err("event=start-failed reason=\"out of memory\"");
        goto out;
    }
    params.remotes = scp_remotes;
    params.remote_count = cfg->dicom.remote_ae_count;
    params.outbound_tls = outbound_tls_used ? &outbound_tls : NULL;
    if (tokens != NULL && params_retrieve_enabled(cfg)) {
        struct retrieve_params rp;

        retrieve_web =
            find_web_new(cfg->upload.url,
                         cfg->upload.ca_file[0] ? cfg->upload.ca_file : NULL,
                         cfg->upload.timeout_s, tokens);
        params_retrieve(cfg, spool, tokens, &rp);
        rp.qido = find_web_fetch;
        rp.qido_ctx = retrieve_web;
        retriever = retrieve_web != NULL ? retrieve_service_new(&rp) : NULL;
        if (retriever == NULL) {
            log_err("event=start-failed reason=\"out of memory\"");
            goto out;
        }
        retrieve_handler_init(retriever, &retrieve_handler);
        params.retrieve = &retrieve_handler;
    }

    if (tokens != NULL) {
        struct commit_params cp;
        struct dicomweb_params web;
        char ledger_path[4096];

        params_dicomweb(cfg, &web);
        commit_web =
            find_web_new(web.base_url, web.ca_file, web.timeout_s, tokens);
        if (commit_web == NULL ||
            params_commit(cfg, ledger_path, sizeof(ledger_path), &remotes,
                          &cp) < 0) {
            log_err("event=start-failed reason=\"out of memory\"");
            goto out;
        }
        if (cp.ledger_path == NULL)
            log_warning("event=ledger-off reason=\"path too long\", "
                        "ignoring");
        /* The service opens the ledger, and opens it again when it
         * breaks. */
        cp.spool = spool;
        cp.web = commit_web;
        cp.outbound_tls = params.outbound_tls; /* as C-MOVE */
        committer = commit_start(&cp, err, sizeof(err));
        if (committer == NULL) {
            log_err("event=start-failed reason=\"storage commitment: %s\"",
                    err);
            goto out;
        }
        if (cfg->commit.enabled) {
            commit_handler_init(committer, &commit_handler);
            params.commit = &commit_handler;
        }
    }

    /* /readyz: when the uploads are quiet, the monitor asks the
     * destination itself, through C-FIND's QIDO-RS client or else the one
     * Storage Commitment uses. */
    if (find_web == NULL && commit_web != NULL)
        monitor_wrap_fetch(monitor, find_web_fetch, commit_web);

    if (params.tls != NULL && params.tls->security_level < 2)
        log_warning("event=tls-weak security_level=%u reason=\"OpenSSL "
                    "security level below 2: weak keys, SHA-1 signatures and "
                    "old protocols may be accepted\"",
                    params.tls->security_level);
    r = scp_new(&params, &scp, err, sizeof(err));
    if (r < 0) {
        log_err("event=start-failed reason=\"%s\"", err);
        goto out;
    }
    daemon_scp = scp;
    daemon_tls_on = params.tls != NULL;

    if (tokens != NULL) {
        struct uploader_params up;

        params_uploader(cfg, spool, tokens, &up);
        up.on_delivered = commit_note_delivered;
        up.on_delivered_ctx = committer;
        up.monitor = monitor;
        uploader = uploader_start(&up);
        if (uploader == NULL) {
            log_err("event=start-failed reason=\"cannot start the "
                    "uploader\"");
            goto out;
        }
    }
    log_notice("event=started version=%s ae=%s port=%u tls_port=%u "
               "spool=%s max_associations=%u callers=%s mode=%s find=%s "
               "commit=%s retrieve=%s",
               STOWBRIDGE_VERSION, cfg->dicom.ae_title, cfg->dicom.port,
               params.tls != NULL ? cfg->dicom.tls.port : 0u, cfg->spool.dir,
               cfg->dicom.max_associations,
               cfg->dicom.allowed_caller_count > 0 ? "allow-list" : "any",
               uploader != NULL ? "upload" : "receive-only",
               finder == NULL ? "off" : cfg->query.profile,
               params.commit != NULL ? "on" : "off",
               params.retrieve != NULL ? "on" : "off");
    if (finder == NULL && cfg->query.enabled)
        log_notice("event=find-off reason=\"C-FIND needs upload.url (the "
                   "QIDO-RS server)\"");
    if (uploader == NULL)
        log_notice("event=receive-only reason=\"no upload.url: instances "
                   "stay in the spool's incoming/\"");
    r = monitor_start(monitor, err, sizeof(err));
    if (r < 0) {
        log_err("event=start-failed reason=\"%s\"", err);
        goto out;
    }
    if (cfg->admin.listen[0] != '\0')
        log_notice("event=admin-listening listen=%s port=%u token=%s "
                   "actions=%s",
                   cfg->admin.listen, (unsigned)monitor_admin_port(monitor),
                   cfg->admin.token_file[0] != '\0' ? "yes" : "no",
                   cfg->admin.allow_actions ? "on" : "off");
    monitor_set_listening(monitor, true);
    (void)daemon_notify(uploader != NULL ? "READY=1\nSTATUS=receiving and "
                                           "uploading"
                                         : "READY=1\nSTATUS=receiving");

    memset(&ctx, 0, sizeof(ctx));
    ctx.config_path = config_path;
    ctx.tokens = tokens;
    ctx.monitor = monitor;
    daemon_loop_thread = pthread_self();
    r = scp_run(scp, daemon_should_stop, &ctx,
                cfg->dicom.timeout_s + DAEMON_GRACE_EXTRA_S);
    if (r == -ETIMEDOUT) {
        /* Unanswered stores are in tmp/ and never acknowledged. */
        log_warning("event=stopped-with-associations reason=\"associations "
                    "still open after the grace period; their unanswered "
                    "instances were not acknowledged\"");
        status = 0;
    } else if (r < 0) {
        log_err("event=scp-failed reason=\"%s\"",
                util_strerror(r, err, sizeof(err)));
    } else {
        status = 0;
    }

out:
    monitor_set_listening(monitor, false);
    /* After the SCP: nothing new arrives; transfers in flight are cut and
     * their entries go back to incoming/. */
    uploader_stop(uploader);
    if (status == 0)
        log_notice("event=stopped");
    /* Association threads still running (grace expired) keep using the
     * spool and SCP: leave them to process exit rather than free them. */
    if (scp == NULL || scp_active_associations(scp) == 0) {
        /* First the monitor's threads: its readiness probe uses a QIDO-RS
         * client and its refresh thread the spool, both freed below. */
        monitor_stop(monitor);
        commit_stop(committer);
        find_web_free(commit_web);
        daemon_scp = NULL;
        scp_free(scp);
        spool_close(spool);
        find_service_free(finder);
        find_web_free(find_web);
        retrieve_service_free(retriever);
        find_web_free(retrieve_web);
        oauth_source_free(tokens);
        monitor_free(monitor);
    }
    free(rules);
    free(remotes);
    free(scp_remotes);
    return status;
}
