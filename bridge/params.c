/* SPDX-License-Identifier: Apache-2.0 */
/*
 * params - see params.h.
 */
#include "params.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "commit.h"
#include "config/config.h"
#include "find.h"
#include "monitor.h"
#include "retrieve.h"
#include "scp/scp.h"
#include "uploader.h"
#include "web/dicomweb.h"
#include "web/oauth.h"

static const char *params_or_null(const char *s)
{
    return s != NULL && s[0] != '\0' ? s : NULL;
}

/* The token source's notices, in the daemon's log. */
static void params_token_notice(void *ctx, const char *message)
{
    (void)ctx;
    log_warning("event=token-lifetime reason=\"%s\"", message);
}

bool params_uploading(const struct cfg *cfg)
{
    return cfg->upload.url[0] != '\0';
}

int params_scp_callers(const struct cfg *cfg,
                       struct scp_caller_rule **ret_rules)
{
    size_t n = cfg->dicom.allowed_caller_count;
    struct scp_caller_rule *rules;

    *ret_rules = NULL;
    if (n == 0)
        return 0;
    rules = calloc(n, sizeof(*rules));
    if (rules == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        rules[i].ae_title = cfg->dicom.allowed_callers[i].ae_title;
        rules[i].hosts = cfg->dicom.allowed_callers[i].hosts;
        rules[i].host_count = cfg->dicom.allowed_callers[i].host_count;
        rules[i].find = cfg->dicom.allowed_callers[i].find;
        rules[i].commit = cfg->dicom.allowed_callers[i].commit;
        rules[i].retrieve = cfg->dicom.allowed_callers[i].retrieve;
        rules[i].certificate_sha256 =
            (const char *const *)cfg->dicom.allowed_callers[i]
                .certificate_sha256;
        rules[i].certificate_sha256_count =
            cfg->dicom.allowed_callers[i].certificate_sha256_count;
        rules[i].certificate_subject =
            cfg->dicom.allowed_callers[i].certificate_subject;
        rules[i].tls_only = cfg->dicom.allowed_callers[i].tls_only;
    }
    *ret_rules = rules;
    return 0;
}

void params_scp(const struct cfg *cfg, struct spool *spool,
                const struct scp_caller_rule *rules, struct scp_params *ret)
{
    memset(ret, 0, sizeof(*ret));
    ret->ae_title = cfg->dicom.ae_title;
    ret->port = (uint16_t)cfg->dicom.port;
    ret->max_associations = cfg->dicom.max_associations;
    ret->max_pdu = cfg->dicom.max_pdu;
    ret->timeout_s = cfg->dicom.timeout_s;
    ret->callers = rules;
    ret->caller_count = rules != NULL ? cfg->dicom.allowed_caller_count : 0;
    ret->spool = spool;
    ret->min_free_mb = cfg->spool.min_free_mb;
    ret->max_pending = cfg->dicom.max_pending;
    ret->accept_unknown_storage_classes =
        cfg->dicom.accept_unknown_storage_classes;
    ret->extra_storage = (const char *const *)cfg->dicom.extra_storage_classes;
    ret->extra_storage_count = cfg->dicom.extra_storage_class_count;
}

void params_oauth(const struct cfg *cfg, struct oauth_params *ret)
{
    const struct cfg_auth *auth = &cfg->auth;

    memset(ret, 0, sizeof(*ret));
    if (strcmp(auth->type, "static") == 0)
        ret->kind = OAUTH_STATIC;
    else if (strcmp(auth->type, "client_credentials") == 0 ||
             strcmp(auth->type, "azure") == 0)
        ret->kind = OAUTH_CLIENT_CREDENTIALS;
    else if (strcmp(auth->type, "managed_identity") == 0)
        ret->kind = OAUTH_MANAGED_IDENTITY;
    else if (strcmp(auth->type, "command") == 0)
        ret->kind = OAUTH_COMMAND;
    else
        ret->kind = OAUTH_NONE;
    ret->token_url = auth->token_url;
    ret->client_id = auth->client_id;
    ret->client_secret = auth->client_secret;
    ret->scope = params_or_null(auth->scope);
    ret->resource = params_or_null(auth->resource);
    ret->client_auth = strcmp(auth->client_auth, "basic") == 0
                           ? OAUTH_AUTH_BASIC
                           : OAUTH_AUTH_BODY;
    ret->static_token = auth->token;
    ret->ca_file = params_or_null(cfg->upload.ca_file);
    ret->timeout_s = cfg->upload.timeout_s;
    ret->notice = params_token_notice;
    /* Issue 13: certificate, federated token, managed identity, command. */
    ret->client_certificate_file =
        params_or_null(auth->client_certificate_file);
    ret->client_key_file = params_or_null(auth->client_key_file);
    ret->assertion_alg = strcmp(auth->assertion_alg, "RS256") == 0
                             ? OAUTH_ASSERTION_RS256
                             : OAUTH_ASSERTION_PS256;
    ret->client_assertion_file = params_or_null(auth->client_assertion_file);
    ret->endpoint = params_or_null(auth->endpoint);
    ret->command = (const char *const *)auth->command;
    ret->command_timeout_s = auth->command_timeout_s;
    /* The daemon's workers never wait for a refresh (`token` and `check`
     * fetch once and do not care). */
    ret->background_refresh = true;
    if (ret->kind == OAUTH_MANAGED_IDENTITY)
        ret->client_id = params_or_null(auth->client_id);
    if (ret->kind == OAUTH_CLIENT_CREDENTIALS &&
        (ret->client_certificate_file != NULL ||
         ret->client_assertion_file != NULL))
        ret->client_secret = NULL;
}

void params_dicomweb(const struct cfg *cfg, struct dicomweb_params *ret)
{
    memset(ret, 0, sizeof(*ret));
    ret->base_url = cfg->upload.url;
    ret->ca_file = params_or_null(cfg->upload.ca_file);
    ret->timeout_s = cfg->upload.timeout_s;
}

bool params_find_enabled(const struct cfg *cfg)
{
    return cfg->query.enabled && params_uploading(cfg);
}

void params_find(const struct cfg *cfg, struct find_params *ret)
{
    memset(ret, 0, sizeof(*ret));
    if (strcmp(cfg->query.profile, "azure") == 0)
        ret->profile = FIND_PROFILE_AZURE;
    else if (strcmp(cfg->query.profile, "orthanc") == 0)
        ret->profile = FIND_PROFILE_ORTHANC;
    else
        ret->profile = FIND_PROFILE_STANDARD;
    ret->page_size = cfg->query.page_size;
    ret->max_results = cfg->query.max_results;
    /* C-MOVE and C-GET are answered by this AE when retrieve is offered
     * (the daemon sets it up whenever it queries: both need upload.url). */
    ret->retrieve_ae =
        params_retrieve_enabled(cfg) ? cfg->dicom.ae_title : NULL;
}

bool params_retrieve_enabled(const struct cfg *cfg)
{
    return params_uploading(cfg);
}

void params_retrieve(const struct cfg *cfg, struct spool *spool,
                     struct oauth_source *tokens, struct retrieve_params *ret)
{
    memset(ret, 0, sizeof(*ret));
    ret->spool = spool;
    ret->max_temp_bytes = (uint64_t)cfg->retrieve.max_temp_mb << 20;
    ret->max_parallel = cfg->retrieve.max_parallel;
    ret->page_size = cfg->query.page_size < 200 ? cfg->query.page_size : 200;
    ret->qido_raw_caret = strcmp(cfg->query.profile, "orthanc") == 0;
    ret->base_url = cfg->upload.url;
    ret->ca_file = params_or_null(cfg->upload.ca_file);
    ret->timeout_s = cfg->upload.timeout_s;
    ret->tokens = tokens;
}

int params_scp_remotes(const struct cfg *cfg, struct scp_remote **ret_remotes,
                       struct scp_outbound_tls *ret_tls, bool *ret_has_tls)
{
    size_t n = cfg->dicom.remote_ae_count;
    const struct cfg_tls *tls = &cfg->dicom.tls;
    struct scp_remote *remotes = NULL;

    *ret_remotes = NULL;
    *ret_has_tls = false;
    memset(ret_tls, 0, sizeof(*ret_tls));
    if (n > 0) {
        remotes = calloc(n, sizeof(*remotes));
        if (remotes == NULL)
            return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const struct cfg_remote_ae *r = &cfg->dicom.remote_aes[i];

        remotes[i].ae_title = r->ae_title;
        remotes[i].host = r->host;
        remotes[i].port = (uint16_t)r->port;
        remotes[i].tls = r->tls;
        remotes[i].certificate_sha256 = r->certificate_sha256;
        *ret_has_tls = *ret_has_tls || r->tls;
    }
    ret_tls->ca_file = params_or_null(tls->ca_file);
    ret_tls->certificate_file = params_or_null(tls->certificate_file);
    ret_tls->private_key_file = params_or_null(tls->private_key_file);
    ret_tls->private_key_password_file =
        params_or_null(tls->private_key_password_file);
    ret_tls->profile = strcmp(tls->profile, "bcp195") == 0 ? SCP_TLS_BCP195
                       : strcmp(tls->profile, "bcp195-extended") == 0
                           ? SCP_TLS_BCP195_EXTENDED
                           : SCP_TLS_BCP195_ND;
    ret_tls->security_level = tls->security_level;
    *ret_remotes = remotes;
    return 0;
}

void params_uploader(const struct cfg *cfg, struct spool *spool,
                     struct oauth_source *tokens, struct uploader_params *ret)
{
    memset(ret, 0, sizeof(*ret));
    ret->spool = spool;
    ret->tokens = tokens;
    ret->url = cfg->upload.url;
    ret->ca_file = params_or_null(cfg->upload.ca_file);
    ret->timeout_s = cfg->upload.timeout_s;
    ret->workers = cfg->upload.workers;
    ret->batch_max_instances = cfg->upload.batch_max_instances;
    ret->batch_max_bytes = (uint64_t)cfg->upload.batch_max_mb << 20;
    ret->retry_min_s = cfg->retry.min_s;
    ret->retry_max_s = cfg->retry.max_s;
    ret->max_age_h = cfg->retry.max_age_h;
    ret->max_pause_s = cfg->retry.max_pause_s;
    ret->on_conflict_send = strcmp(cfg->upload.on_conflict, "send") == 0;
}

int params_monitor(const struct cfg *cfg, struct spool *spool,
                   const char ***ret_callers, struct monitor_params *ret)
{
    const char **callers = NULL;
    size_t n = 0;

    if (cfg->dicom.allowed_caller_count > 0) {
        callers = calloc(cfg->dicom.allowed_caller_count, sizeof(*callers));
        if (callers == NULL)
            return -ENOMEM;
        for (size_t i = 0; i < cfg->dicom.allowed_caller_count; i++)
            if (cfg->dicom.allowed_callers[i].ae_title != NULL)
                callers[n++] = cfg->dicom.allowed_callers[i].ae_title;
    }
    memset(ret, 0, sizeof(*ret));
    ret->version = STOWBRIDGE_VERSION;
    ret->node = cfg->dicom.ae_title;
    ret->callers = callers;
    ret->caller_count = n;
    ret->spool = spool;
    ret->spool_dir = cfg->spool.dir;
    ret->spool_min_free_bytes = (uint64_t)cfg->spool.min_free_mb << 20;
    ret->dicom_port = (uint16_t)cfg->dicom.port;
    ret->destination_url = cfg->upload.url;
    ret->token_source = cfg->auth.type;
    ret->listen = cfg->admin.listen;
    ret->token_file = cfg->admin.token_file;
    ret->allow_actions = cfg->admin.allow_actions;
    ret->ready_window_s = cfg->admin.ready_window_s;
    *ret_callers = callers;
    return 0;
}

int params_ledger_path(const struct cfg *cfg, char *buf, size_t len)
{
    int r;

    if (cfg->ledger.path[0] != '\0')
        r = snprintf(buf, len, "%s", cfg->ledger.path);
    else
        r = snprintf(buf, len, "%s/ledger.db", cfg->spool.dir);
    return r < 0 || (size_t)r >= len ? -ENAMETOOLONG : 0;
}

int params_commit(const struct cfg *cfg, char *ledger_path, size_t path_len,
                  struct commit_remote **ret_remotes, struct commit_params *ret)
{
    struct commit_remote *remotes = NULL;
    size_t n = cfg->dicom.remote_ae_count;

    *ret_remotes = NULL;
    if (n > 0) {
        remotes = calloc(n, sizeof(*remotes));
        if (remotes == NULL)
            return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
            remotes[i].ae_title = cfg->dicom.remote_aes[i].ae_title;
            remotes[i].host = cfg->dicom.remote_aes[i].host;
            remotes[i].port = (uint16_t)cfg->dicom.remote_aes[i].port;
            remotes[i].tls = cfg->dicom.remote_aes[i].tls;
            remotes[i].certificate_sha256 =
                cfg->dicom.remote_aes[i].certificate_sha256;
        }
    }
    memset(ret, 0, sizeof(*ret));
    ret->ledger_path = params_ledger_path(cfg, ledger_path, path_len) == 0
                           ? ledger_path
                           : NULL;
    ret->our_ae = cfg->dicom.ae_title;
    ret->destination = cfg->upload.url;
    ret->remotes = remotes;
    ret->remote_count = n;
    ret->max_wait_h = cfg->commit.max_wait_h;
    ret->report_retry_max_s = cfg->commit.report_retry_max_s;
    ret->timeout_s = cfg->dicom.timeout_s;
    ret->min_free_mb = cfg->spool.min_free_mb;
    ret->keep_days = cfg->ledger.keep_days;
    ret->same_association = cfg->commit.same_association;
    *ret_remotes = remotes;
    return 0;
}
