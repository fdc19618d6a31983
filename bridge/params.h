/* SPDX-License-Identifier: Apache-2.0 */
/*
 * params - the one place where the configuration becomes the parameter
 * structs of the modules (STYLE.md "Modules get *_params structs, never
 * the config object"): the SCP's, the C-FIND provider's, the token
 * source's, the STOW-RS client's, the uploader's, the monitor's and the
 * Storage Commitment provider's. A new config key is mapped here and
 * nowhere else. Like the uploader's and the monitor's, the provider's
 * params are only filled: sb_params uses their header (bridge/commit.h),
 * never their library.
 *
 * Pure: no I/O, no logging (the token source's notices are routed to the
 * log by the callback it is given). Strings are borrowed from @cfg, which
 * must outlive the params; an empty optional string ("") becomes NULL.
 * Errors: params_scp_callers(), params_monitor() and params_commit()
 * return -ENOMEM; params_ledger_path() -ENAMETOOLONG; the rest cannot
 * fail.
 */
#ifndef STOWBRIDGE_PARAMS_H
#define STOWBRIDGE_PARAMS_H

#include <stdbool.h>
#include <stddef.h>

struct cfg;
struct commit_params;
struct commit_remote;
struct dicomweb_params;
struct find_params;
struct monitor_params;
struct oauth_params;
struct oauth_source;
struct retrieve_params;
struct scp_caller_rule;
struct scp_outbound_tls;
struct scp_remote;
struct scp_params;
struct spool;
struct uploader_params;

/* True when upload.url is set: the daemon uploads (else receive-only). */
bool params_uploading(const struct cfg *cfg);

/*
 * dicom.allowed_callers as the SCP's caller rules, in *@ret_rules (caller
 * frees with free(); NULL when the list is empty, which means anyone).
 * The rules borrow the config's strings and networks.
 */
int params_scp_callers(const struct cfg *cfg,
                       struct scp_caller_rule **ret_rules);

/*
 * dicom.* and spool.min_free_mb as the SCP's params, receiving into
 * @spool, with @rules from params_scp_callers() (NULL when it gave none).
 * No C-FIND handler: the caller sets ->find when it offers C-FIND.
 */
void params_scp(const struct cfg *cfg, struct spool *spool,
                const struct scp_caller_rule *rules, struct scp_params *ret);

/* auth.* (and upload.ca_file, upload.timeout_s) as token source params;
 * the source's notices go to the log (event=token-lifetime). */
void params_oauth(const struct cfg *cfg, struct oauth_params *ret);

/* upload.url, upload.ca_file and upload.timeout_s as DICOMweb client
 * params (STOW-RS, and the QIDO-RS side of C-FIND); no token source, no
 * cancel: the caller's. */
void params_dicomweb(const struct cfg *cfg, struct dicomweb_params *ret);

/* True when C-FIND is to be offered: query.enabled and an upload.url
 * (the QIDO-RS server is the STOW-RS one). */
bool params_find_enabled(const struct cfg *cfg);

/* query.* as the C-FIND provider's params; the fetch function is the
 * caller's to set. */
void params_find(const struct cfg *cfg, struct find_params *ret);

/* True when C-MOVE and C-GET are to be offered: an upload.url (the
 * QIDO-RS and WADO-RS server is the STOW-RS one). */
bool params_retrieve_enabled(const struct cfg *cfg);

/* retrieve.*, upload.url/ca_file/timeout_s as the retrieve provider's
 * params, fetching into @spool with tokens from @tokens; the QIDO-RS
 * fetch is the caller's to set. */
void params_retrieve(const struct cfg *cfg, struct spool *spool,
                     struct oauth_source *tokens, struct retrieve_params *ret);

/*
 * dicom.remote_aes as the SCP's remotes in *@ret_remotes (caller frees
 * with free(); NULL when there are none), and dicom.tls.* as outbound TLS
 * material in @ret_tls; *@ret_has_tls tells whether any remote uses TLS
 * (then @ret_tls is to be passed). Returns 0 or -ENOMEM.
 */
int params_scp_remotes(const struct cfg *cfg, struct scp_remote **ret_remotes,
                       struct scp_outbound_tls *ret_tls, bool *ret_has_tls);

/* upload.*, retry.* as the uploader's params, sending what is in @spool
 * with tokens from @tokens (both borrowed). */
void params_uploader(const struct cfg *cfg, struct spool *spool,
                     struct oauth_source *tokens, struct uploader_params *ret);

/*
 * dicom.*, spool.*, upload.url, auth.type and admin.* as the monitor's
 * params (monitor.h), watching @spool. The AE titles of
 * dicom.allowed_callers (its metrics' calling_ae series) go into a new
 * array in *@ret_callers that the caller frees with free() once the
 * monitor is made (NULL when there are none). Returns 0 or -ENOMEM.
 */
int params_monitor(const struct cfg *cfg, struct spool *spool,
                   const char ***ret_callers, struct monitor_params *ret);

/*
 * The delivery ledger's file: ledger.path, or <spool.dir>/ledger.db when
 * it is "" (the daemon writes it, `study` and `commit` read it), into
 * @buf (capacity @len). 0 or -ENAMETOOLONG.
 */
int params_ledger_path(const struct cfg *cfg, char *buf, size_t len);

/*
 * dicom.ae_title, dicom.remote_aes, dicom.timeout_s, upload.url,
 * spool.min_free_mb, commit.* and ledger.* as the Storage Commitment
 * provider's params (bridge/commit.h). The remote AEs go into a new array
 * in *@ret_remotes that the caller frees with free() after commit_start()
 * (NULL when there are none; they borrow the config's strings); the
 * ledger's path (params_ledger_path()) into @ledger_path (capacity
 * @path_len), ->ledger_path NULL when it does not fit. The caller sets
 * ->spool, ->web and ->outbound_tls (params_scp_remotes()'s, for the
 * remotes with tls). Returns 0 or -ENOMEM.
 */
int params_commit(const struct cfg *cfg, char *ledger_path, size_t path_len,
                  struct commit_remote **ret_remotes,
                  struct commit_params *ret);

#endif
