/*
 * webcfg - see webcfg.h.
 */
#include "webcfg.h"

#include <string.h>

#include "config/config.h"
#include "base/log.h"
#include "web/oauth.h"
#include "web/stow.h"

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
    else if (strcmp(auth->type, "managed_identity") == 0)
        ret->kind = OAUTH_MANAGED_IDENTITY;
    else if (strcmp(auth->type, "command") == 0)
        ret->kind = OAUTH_COMMAND;
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
    ret->client_certificate_file = webcfg_or_null(auth->client_certificate_file);
    ret->client_key_file = webcfg_or_null(auth->client_key_file);
    ret->assertion_alg = strcmp(auth->assertion_alg, "RS256") == 0
                             ? OAUTH_ASSERTION_RS256
                             : OAUTH_ASSERTION_PS256;
    ret->client_assertion_file = webcfg_or_null(auth->client_assertion_file);
    ret->endpoint = webcfg_or_null(auth->endpoint);
    ret->command = (const char *const *)auth->command;
    ret->command_timeout_s = auth->command_timeout_s;
    /* The daemon's workers never wait for a refresh (main.c's `token`
     * and `check` fetch once and do not care). */
    ret->background_refresh = true;
    if (ret->kind == OAUTH_MANAGED_IDENTITY)
        ret->client_id = webcfg_or_null(auth->client_id);
    if (ret->kind == OAUTH_CLIENT_CREDENTIALS &&
        (ret->client_certificate_file != NULL ||
         ret->client_assertion_file != NULL))
        ret->client_secret = NULL;
}

void webcfg_stow_params(const struct cfg *cfg, struct stow_params *ret)
{
    memset(ret, 0, sizeof(*ret));
    ret->base_url = cfg->upload.url;
    ret->ca_file = webcfg_or_null(cfg->upload.ca_file);
    ret->timeout_s = cfg->upload.timeout_s;
}
