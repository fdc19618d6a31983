/*
 * params - see params.h.
 */
#include "params.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "config/config.h"
#include "find.h"
#include "scp/scp.h"
#include "uploader.h"
#include "web/oauth.h"
#include "web/stow.h"

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
    ret->extra_storage =
        (const char *const *)cfg->dicom.extra_storage_classes;
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
}

void params_stow(const struct cfg *cfg, struct stow_params *ret)
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
}

void params_uploader(const struct cfg *cfg, struct spool *spool,
                     struct oauth_source *tokens,
                     struct uploader_params *ret)
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
