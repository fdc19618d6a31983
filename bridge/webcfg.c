/*
 * webcfg - see webcfg.h.
 */
#include "webcfg.h"

#include <string.h>

#include "config/config.h"
#include "base/log.h"
#include "web/dicomweb.h"
#include "web/oauth.h"

static const char *webcfg_or_null(const char *s)
{
    return s != NULL && s[0] != '\0' ? s : NULL;
}

/* The token source's notices, in the daemon's log. */
static void webcfg_token_notice(void *ctx, const char *message)
{
    (void)ctx;
    log_warning("event=token-lifetime reason=\"%s\"", message);
}

void webcfg_oauth_params(const struct cfg *cfg, struct oauth_params *ret)
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
    ret->scope = webcfg_or_null(auth->scope);
    ret->resource = webcfg_or_null(auth->resource);
    ret->client_auth = strcmp(auth->client_auth, "basic") == 0
                           ? OAUTH_AUTH_BASIC
                           : OAUTH_AUTH_BODY;
    ret->static_token = auth->token;
    ret->ca_file = webcfg_or_null(cfg->upload.ca_file);
    ret->timeout_s = cfg->upload.timeout_s;
    ret->notice = webcfg_token_notice;
}

void webcfg_dicomweb_params(const struct cfg *cfg,
                            struct dicomweb_params *ret)
{
    memset(ret, 0, sizeof(*ret));
    ret->base_url = cfg->upload.url;
    ret->ca_file = webcfg_or_null(cfg->upload.ca_file);
    ret->timeout_s = cfg->upload.timeout_s;
}
