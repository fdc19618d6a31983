/* SPDX-License-Identifier: Apache-2.0 */
/*
 * daemon - the `stowbridge run` lifecycle: signals, spool recovery, the
 * SCP, systemd notification, graceful stop, and SIGHUP rotation of the
 * credentials (secret, certificate and key, assertion file, token
 * command) without a restart.
 *
 * Program code: it logs. Returns the process exit status (0 on a clean
 * stop, 1 when it cannot start or the network fails).
 */
#ifndef STOWBRIDGE_DAEMON_H
#define STOWBRIDGE_DAEMON_H

#include <stdbool.h>

struct cfg;
struct scp_tls_params;
struct scp_params;

/* Runs the daemon in the foreground until SIGTERM or SIGINT. On SIGHUP,
 * daemon_reload() reads @config_path (the file @cfg came from) again. */
int daemon_run(const struct cfg *cfg, const char *config_path);

/*
 * Sends @state (e.g. "READY=1") to systemd when $NOTIFY_SOCKET is set
 * (sd_notify(3) protocol). Async-signal-safe. Returns 0 when sent or not
 * under systemd, a negative errno otherwise.
 */
int daemon_notify(const char *state);

/*
 * Fills @ret from dicom.tls (paths borrowed from @cfg). Returns false when
 * TLS is not configured (no certificate_file).
 */
bool daemon_tls_params(const struct cfg *cfg, struct scp_tls_params *ret);

/* Fills the listener part of @params from @cfg: the plain port, the bind
 * address, @tls (filled when configured) and the trusted proxies. */
void daemon_listen_params(const struct cfg *cfg, struct scp_params *params,
                          struct scp_tls_params *tls);

#endif
