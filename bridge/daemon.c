/*
 * daemon - see daemon.h.
 *
 * Order of start-up (docs/architecture.md section 9): lock the spool, recover it,
 * and only then open the DIMSE port, so nothing is received into a spool
 * that has not been checked. READY=1 goes to systemd once the port is
 * bound. SIGTERM/SIGINT set a flag that the SCP polls; associations in
 * flight finish their current C-STORE (answered as usual) before they are
 * closed.
 */
#include "daemon.h"

#include <errno.h>
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

#include "config/config.h"
#include "find.h"
#include "params.h"
#include "base/log.h"
#include "web/oauth.h"
#include "web/stow.h"
#include "scp/scp.h"
#include "spool/spool.h"
#include "uploader.h"
#include "base/util.h"

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

static void daemon_on_signal(int sig)
{
    if (sig == SIGHUP) {
        atomic_store(&daemon_hup_seen, true);
        return;
    }
    atomic_store(&daemon_stop_signal, sig);
    atomic_store(&daemon_stop_requested, true);
}

/* The SCP's stop predicate; also the place that reports what signals
 * arrived, since a signal handler must not log. */
static bool daemon_should_stop(void *ctx)
{
    (void)ctx;
    if (atomic_exchange(&daemon_hup_seen, false))
        log_notice("event=sighup reason=\"configuration reload is not "
                   "supported yet; restart the service to apply changes\", "
                   "ignoring");
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
        addr.sun_path[0] = '\0';  /* abstract namespace */
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

/*
 * Raises the soft RLIMIT_NOFILE to the hard limit (systemd's LimitNOFILE=
 * sets both; a shell may have a lower soft one) and says whether what the
 * configuration may hold at once fits: associations, pending connections
 * and closing sockets (scp_fds_needed()), each upload worker's batch of
 * files and connections, and the daemon's own. When it does not fit the
 * daemon still runs: out of descriptors, the SCP pauses accepting and
 * refuses callers cleanly (event=accept-failed).
 */
static void daemon_size_fds(const struct cfg *cfg,
                            const struct scp_params *params, bool uploading)
{
    unsigned long long need = DAEMON_BASE_FDS + scp_fds_needed(params);
    struct rlimit rl;
    char err[128];

    if (uploading)
        need += (unsigned long long)cfg->upload.workers *
                (cfg->upload.batch_max_instances + DAEMON_WORKER_FDS);
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
                 rl.rlim_cur == RLIM_INFINITY
                     ? 0ull
                     : (unsigned long long)rl.rlim_cur,
                 need);
}

int daemon_run(const struct cfg *cfg)
{
    struct spool_recovery recovery;
    struct scp_caller_rule *rules = NULL;
    struct scp_params params;
    struct spool *spool = NULL;
    struct scp *scp = NULL;
    struct oauth_source *tokens = NULL;
    struct uploader *uploader = NULL;
    struct find_service *finder = NULL;
    struct find_web *find_web = NULL;
    struct scp_find_handler find_handler;
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
        log_err("event=start-failed reason=\"spool recovery failed: %s\"",
                err);
        goto out;
    }
    log_notice("event=spool-recovered dir=%s tmp_removed=%u "
               "active_requeued=%u set_aside=%u",
               cfg->spool.dir, recovery.tmp_removed,
               recovery.active_requeued, recovery.set_aside);
    if (recovery.set_aside > 0)
        log_warning("event=spool-foreign-files count=%u dir=%s/lost+found "
                    "reason=\"files that are not spool entries were moved "
                    "aside; inspect them\"",
                    recovery.set_aside, cfg->spool.dir);

    if (params_scp_callers(cfg, &rules) < 0) {
        log_err("event=start-failed reason=\"out of memory\"");
        goto out;
    }
    params_scp(cfg, spool, rules, &params);
    daemon_size_fds(cfg, &params, params_uploading(cfg));

    if (params_uploading(cfg)) {
        struct oauth_params oauth;

        params_oauth(cfg, &oauth);
        tokens = oauth_source_new(&oauth);
        if (tokens == NULL) {
            log_err("event=start-failed reason=\"out of memory\"");
            goto out;
        }
    }
    if (tokens != NULL && params_find_enabled(cfg)) {
        struct stow_params web;
        struct find_params fp;

        params_stow(cfg, &web);
        find_web = find_web_new(web.base_url, web.ca_file, web.timeout_s,
                                tokens);
        params_find(cfg, &fp);
        fp.fetch = find_web_fetch;
        fp.fetch_ctx = find_web;
        finder = find_web != NULL ? find_service_new(&fp) : NULL;
        if (finder == NULL) {
            log_err("event=start-failed reason=\"out of memory\"");
            goto out;
        }
        find_handler_init(finder, &find_handler);
        params.find = &find_handler;
    }

    r = scp_new(&params, &scp, err, sizeof(err));
    if (r < 0) {
        log_err("event=start-failed reason=\"%s\"", err);
        goto out;
    }

    if (tokens != NULL) {
        struct uploader_params up;

        params_uploader(cfg, spool, tokens, &up);
        uploader = uploader_start(&up);
        if (uploader == NULL) {
            log_err("event=start-failed reason=\"cannot start the "
                    "uploader\"");
            goto out;
        }
    }
    log_notice("event=started version=%s ae=%s port=%u spool=%s "
               "max_associations=%u callers=%s mode=%s find=%s",
               STOWBRIDGE_VERSION, cfg->dicom.ae_title, cfg->dicom.port,
               cfg->spool.dir, cfg->dicom.max_associations,
               cfg->dicom.allowed_caller_count > 0 ? "allow-list" : "any",
               uploader != NULL ? "upload" : "receive-only",
               finder == NULL ? "off" : cfg->query.profile);
    if (finder == NULL && cfg->query.enabled)
        log_notice("event=find-off reason=\"C-FIND needs upload.url (the "
                   "QIDO-RS server)\"");
    if (uploader == NULL)
        log_notice("event=receive-only reason=\"no upload.url: instances "
                   "stay in the spool's incoming/\"");
    (void)daemon_notify(uploader != NULL ? "READY=1\nSTATUS=receiving and "
                                           "uploading"
                                         : "READY=1\nSTATUS=receiving");

    r = scp_run(scp, daemon_should_stop, NULL,
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
    /* After the SCP: nothing new arrives; transfers in flight are cut and
     * their entries go back to incoming/. */
    uploader_stop(uploader);
    if (status == 0)
        log_notice("event=stopped");
    /* Association threads still running (grace expired) keep using the
     * spool and SCP: leave them to process exit rather than free them. */
    if (scp == NULL || scp_active_associations(scp) == 0) {
        scp_free(scp);
        spool_close(spool);
        find_service_free(finder);
        find_web_free(find_web);
        oauth_source_free(tokens);
    }
    free(rules);
    return status;
}
