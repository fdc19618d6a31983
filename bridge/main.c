/* SPDX-License-Identifier: Apache-2.0 */
/*
 * main - the stowbridge program and its subcommands (docs/architecture.md
 * section 9).
 *
 *   stowbridge run --config FILE            the daemon, in the foreground
 *   stowbridge status --config FILE [--json]
 *   stowbridge check --config FILE [--dump]
 *   stowbridge token --config FILE [--raw]
 *   stowbridge queue list [STATE] | show ID | retry ID|--all-failed |
 *                    delete ID | resume  --config FILE
 *   stowbridge study UID [--json] --config FILE
 *   stowbridge commit list | show TXUID [--json] --config FILE
 *   stowbridge sample-config
 *
 * Exit status: 0 success, 1 runtime failure, 2 usage or configuration
 * error.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "base/log.h"
#include "base/util.h"
#include "config/config.h"
#include "daemon.h"
#include "dicom/redact.h"
#include "monitor.h"
#include "params.h"
#include "queue_cmd.h"
#include "scp/scp.h"
#include "servertext.h"
#include "spool/spool.h"
#include "status.h"
#include "study_cmd.h"
#include "web/dicomweb.h"
#include "web/federated_token.h"
#include "web/jwt_assertion.h"
#include "web/managed_identity.h"
#include "web/oauth.h"
#include "web/stow.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
/* `check` warns this long before a certificate or secret expires. */
#define MAIN_EXPIRY_WARNING_S (30 * 86400)

struct main_cmd {
    const char *name;
    const char *usage;
    const char *summary;
};

static const struct main_cmd main_cmds[] = {
    { "run", "run --config FILE",
      "Run the daemon in the foreground (systemd Type=notify): receive\n"
      "  C-ECHO and C-STORE into the spool. SIGTERM/SIGINT stop it\n"
      "  gracefully." },
    { "status", "status --config FILE [--json]",
      "Print count, bytes and oldest age (seconds) of each spool state.\n"
      "  Safe while the daemon runs." },
    { "check", "check --config FILE [--dump]",
      "Validate the configuration, then try each dependency and say which\n"
      "  one fails and why: the spool (writable, free space), the DICOM\n"
      "  port, the token endpoint, the DICOMweb server. --dump prints the\n"
      "  effective configuration (secrets masked)." },
    { "token", "token --config FILE [--raw]",
      "Fetch a token as the uploader would and print its decoded header\n"
      "  and claims, its expiry and a diagnosis of common mistakes (wrong\n"
      "  audience, tenant, clock). The token itself only with --raw." },
    { "queue",
      "queue list [STATE] | show ID | retry ID|--all-failed | "
      "delete ID | resume  --config FILE",
      "Inspect and act on spool entries (STATE: incoming, active,\n"
      "  deferred, failed): list them with their last error, show one,\n"
      "  send a deferred or failed one again, or delete one; resume ends\n"
      "  a pause of uploads and makes deferred entries due now. Safe\n"
      "  while the daemon runs." },
    { "study", "study UID [--json] --config FILE",
      "Reconcile one study: instances received (by calling AE, first and\n"
      "  last arrival), delivered, queued by state, failed with reasons,\n"
      "  and the Storage Commitment transactions that named it. Safe while\n"
      "  the daemon runs." },
    { "commit", "commit list | show TXUID [--json] --config FILE",
      "The Storage Commitment transactions, newest first, or one with\n"
      "  every instance, its result and Failure Reason. Safe while the\n"
      "  daemon runs." },
    { "sample-config", "sample-config",
      "Print the documented sample configuration with every key and\n"
      "  its default." },
    { "tls-fingerprint", "tls-fingerprint FILE",
      "Print the SHA-256 fingerprint, subject and expiry of the\n"
      "  certificate in FILE (PEM or DER), for certificate_sha256 in\n"
      "  dicom.allowed_callers." },
};

#define MAIN_CMD_COUNT (sizeof(main_cmds) / sizeof(main_cmds[0]))

static void main_usage(FILE *out)
{
    fprintf(out,
            "stowbridge %s - DICOM DIMSE to DICOMweb bridge\n\n"
            "Usage:\n",
            STOWBRIDGE_VERSION);
    for (size_t i = 0; i < MAIN_CMD_COUNT; i++)
        fprintf(out, "  stowbridge %s\n  %s\n\n", main_cmds[i].usage,
                main_cmds[i].summary);
    fprintf(out, "  stowbridge --version | --help\n\n"
                 "Exit status: 0 success, 1 runtime failure, "
                 "2 usage or configuration error.\n");
}

struct main_opts {
    const char *config_path;
    bool json;
    bool dump;
    bool raw;
};

/* Parses the options after the subcommand. Returns 0, 1 for --help, or
 * -EINVAL after printing the problem. */
static int main_parse_opts(const char *cmd, int argc, char **argv,
                           struct main_opts *opts)
{
    static const struct option long_opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "json", no_argument, NULL, 'j' },
        { "dump", no_argument, NULL, 'd' },
        { "raw", no_argument, NULL, 'r' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;

    memset(opts, 0, sizeof(*opts));
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "c:h", long_opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            opts->config_path = optarg;
            break;
        case 'j':
            if (strcmp(cmd, "status") != 0)
                goto bad_option;
            opts->json = true;
            break;
        case 'd':
            if (strcmp(cmd, "check") != 0)
                goto bad_option;
            opts->dump = true;
            break;
        case 'r':
            if (strcmp(cmd, "token") != 0)
                goto bad_option;
            opts->raw = true;
            break;
        case 'h':
            return 1;
        default:
            goto bad_option;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "stowbridge %s: unexpected argument '%s'\n", cmd,
                argv[optind]);
        return -EINVAL;
    }
    return 0;

bad_option:
    fprintf(stderr, "stowbridge %s: unknown or misplaced option '%s'\n", cmd,
            argv[optind - 1]);
    return -EINVAL;
}

/* Loads the configuration; @with_secrets for the commands that fetch
 * tokens (run, check, token). */
static int main_load_config(const struct main_opts *opts, const char *cmd,
                            bool with_secrets, struct cfg **ret_cfg)
{
    char err[1024];

    if (opts->config_path == NULL) {
        fprintf(stderr, "stowbridge %s: --config FILE is required\n", cmd);
        return -EINVAL;
    }
    if ((with_secrets ? cfg_load(opts->config_path, ret_cfg, err, sizeof(err))
                      : cfg_load_without_secrets(opts->config_path, ret_cfg,
                                                 err, sizeof(err))) < 0) {
        fprintf(stderr, "stowbridge: %s\n", err);
        return -EINVAL;
    }
    if (monitor_config_check(
            (*ret_cfg)->admin.listen, (*ret_cfg)->admin.token_file,
            (*ret_cfg)->admin.allow_actions, err, sizeof(err)) < 0) {
        fprintf(stderr, "stowbridge: %s: config: %s\n", opts->config_path, err);
        cfg_free(*ret_cfg);
        *ret_cfg = NULL;
        return -EINVAL;
    }
    return 0;
}

/* A token source's notice (an expires_in that is no lifetime), for the
 * operator running `token` or `check`. */
static void main_token_notice(void *ctx, const char *message)
{
    printf("%s: warning: %s\n", (const char *)ctx, message);
}

/* Where the token of @cfg comes from, for a line of `token` or `check`. */
static void main_auth_where(const struct cfg *cfg, char *buf, size_t len)
{
    const struct cfg_auth *auth = &cfg->auth;

    if (strcmp(auth->type, "managed_identity") == 0) {
        snprintf(buf, len, "the managed identity endpoint %s",
                 auth->endpoint[0] != '\0' ? auth->endpoint : "(detected)");
    } else if (strcmp(auth->type, "command") == 0) {
        snprintf(buf, len, "the command '%s'",
                 auth->command_count > 0 ? auth->command[0] : "");
    } else if (strcmp(auth->type, "static") == 0) {
        snprintf(buf, len, "the configuration");
    } else {
        snprintf(buf, len, "%s with %s", auth->token_url,
                 auth->client_certificate_file[0] != '\0'
                     ? "a certificate (private_key_jwt)"
                 : auth->client_assertion_file[0] != '\0' ? "a federated token"
                                                          : "a client secret");
    }
}

/* Fetches a token as the uploader would. Prints why on failure. With
 * @ret_secrets, also hands out what a server must not be seen echoing
 * (the source's secrets and the token). */
static int main_fetch_token(const struct cfg *cfg, const char *what,
                            char **ret_token, struct redact **ret_secrets)
{
    struct oauth_params params;
    struct oauth_source *source;
    uint64_t generation;
    char err[512];
    int r;

    char where[600];

    main_auth_where(cfg, where, sizeof(where));
    params_oauth(cfg, &params);
    params.notice = main_token_notice;
    params.notice_ctx = (void *)what;
    r = oauth_source_open(&params, &source, err, sizeof(err));
    if (r < 0) {
        printf("%s: FAILED: %s\n", what, err);
        return r;
    }
    r = oauth_source_token(source, util_now_monotonic_ms(), ret_token,
                           &generation, err, sizeof(err));
    if (r == 0 && ret_secrets != NULL) {
        *ret_secrets = redact_new();
        if (*ret_secrets != NULL &&
            oauth_source_add_secrets(source, *ret_secrets) < 0) {
            redact_free(*ret_secrets);
            *ret_secrets = NULL;
        }
    }
    oauth_source_free(source);
    if (r < 0)
        printf("%s: FAILED: %s (%s)\n", what, err, where);
    return r;
}

static void main_free_token(char *token)
{
    if (token != NULL) {
        explicit_bzero(token, strlen(token));
        free(token);
    }
}

/* `check`, the send side: the token endpoint, then the DICOMweb server. */
static int main_check_upload(const struct cfg *cfg)
{
    struct dicomweb_params params;
    struct oauth_params fetched = { .kind = OAUTH_NONE };
    struct oauth_source *source;
    struct dicomweb *client;
    struct dicomweb_reply reply;
    struct redact *secrets = NULL;
    char *token = NULL;
    int failures = 0;
    int r;

    if (!params_uploading(cfg)) {
        printf("upload: not configured (no upload.url): receive-only, "
               "instances stay in the spool\n");
        return 0;
    }
    printf("upload: %s\n", cfg->upload.url);
    if (strcmp(cfg->auth.type, "none") == 0) {
        printf("auth: none (no Authorization header)\n");
        secrets = redact_new();
    } else {
        char where[600];

        r = main_fetch_token(cfg, "auth", &token, &secrets);
        if (r < 0)
            return 1;
        main_auth_where(cfg, where, sizeof(where));
        printf("auth: ok (%s token obtained from %s)\n", cfg->auth.type, where);
    }

    /* The probe sends the token just fetched (a source holding it). */
    if (token != NULL) {
        fetched.kind = OAUTH_STATIC;
        fetched.static_token = token;
    }
    source = oauth_source_new(&fetched);
    params_dicomweb(cfg, &params);
    params.tokens = source;
    client = source != NULL ? dicomweb_new(&params) : NULL;
    if (client == NULL) {
        oauth_source_free(source);
        redact_free(secrets);
        main_free_token(token);
        return 1;
    }
    r = dicomweb_probe(client, &reply);
    if (r < 0) {
        printf("dicomweb: FAILED: %s unreachable: %s\n", cfg->upload.url,
               reply.error);
        failures++;
    } else if (reply.http_status == 401) {
        printf("dicomweb: FAILED: HTTP 401: the server does not accept the "
               "token (wrong audience or issuer? see 'stowbridge token')\n");
        failures++;
    } else if (reply.http_status == 403) {
        printf("dicomweb: FAILED: %s\n", reply.diagnosis);
        failures++;
    } else if (reply.http_status >= 200 && reply.http_status < 300) {
        printf("dicomweb: ok (HTTP %ld from %s/studies)\n", reply.http_status,
               cfg->upload.url);
    } else if (stow_request_action(reply.http_status) == STOW_REDIRECTED) {
        char why[768];
        servertext_redirect(secrets, reply.http_status, reply.location, why,
                            sizeof(why));
        printf("dicomweb: FAILED: %s/studies answered %s\n", cfg->upload.url,
               why);
        failures++;
    } else {
        printf("dicomweb: FAILED: HTTP %ld from %s/studies\n",
               reply.http_status, cfg->upload.url);
        failures++;
    }
    dicomweb_reply_free(&reply);
    dicomweb_free(client);
    oauth_source_free(source);
    redact_free(secrets);
    main_free_token(token);
    return failures;
}

/* `token`: fetch, decode, diagnose. */
static int main_token(const struct cfg *cfg, bool raw)
{
    struct oauth_claims claims;
    char diagnosis[2048];
    char err[256];
    char *token = NULL;
    char *json = NULL;
    int errors;

    if (strcmp(cfg->auth.type, "none") == 0) {
        printf("auth.type is \"none\": no token is used\n");
        return 0;
    }
    char where[600];

    if (main_fetch_token(cfg, "token", &token, NULL) < 0)
        return EXIT_RUNTIME;
    main_auth_where(cfg, where, sizeof(where));
    printf("token: obtained (%s from %s)\n", cfg->auth.type, where);
    if (oauth_jwt_segment_json(token, 0, &json) == 0) {
        printf("header:\n%s\n", json);
        free(json);
    }
    if (oauth_jwt_segment_json(token, 1, &json) == 0) {
        printf("claims:\n%s\n", json);
        free(json);
    }
    if (oauth_decode_claims(token, &claims, err, sizeof(err)) < 0) {
        printf("diagnosis:\nwarning: %s\n", err);
        errors = 0;
    } else {
        errors = oauth_diagnose_token(&claims, cfg->upload.url,
                                      cfg->auth.tenant, (int64_t)time(NULL),
                                      diagnosis, sizeof(diagnosis));
        printf("diagnosis:\n%s", diagnosis);
        oauth_claims_free(&claims);
    }
    if (raw)
        printf("access_token: %s\n", token);
    main_free_token(token);
    return errors == 0 ? 0 : EXIT_RUNTIME;
}

/* `check`, the client certificate and its key: they match, and the
 * certificate's validity. Returns the number of failures, or -1 when they
 * cannot be read at all (nothing after it is checked). */
static int main_check_certificate(const struct cfg_auth *auth, int64_t now)
{
    struct jwt_credential *cred = NULL;
    const char *key = auth->client_key_file[0] != '\0'
                          ? auth->client_key_file
                          : auth->client_certificate_file;
    char err[768];
    char text[768];
    int failures = 0;

    if (jwt_credential_from_files(auth->client_certificate_file, key, &cred,
                                  err, sizeof(err)) < 0) {
        printf("certificate: FAILED: %s\n", err);
        return -1;
    }
    jwt_credential_describe(cred, text, sizeof(text));
    printf("certificate: ok (the key matches; %s; %s)\n", text,
           auth->assertion_alg);
    switch (jwt_credential_check_validity(cred, now, MAIN_EXPIRY_WARNING_S,
                                          text, sizeof(text))) {
    case JWT_VALID:
        printf("certificate: ok (%s)\n", text);
        break;
    case JWT_EXPIRES_SOON:
        printf("certificate: warning: %s\n", text);
        break;
    case JWT_EXPIRED:
    case JWT_NOT_YET_VALID:
        printf("certificate: FAILED: %s\n", text);
        failures++;
        break;
    }
    jwt_credential_free(cred);
    return failures;
}

/* `check`, the federated token file. Returns the number of failures. */
static int main_check_federated(const struct cfg_auth *auth, int64_t now)
{
    char *token = NULL;
    char err[768];

    if (federated_token_read(auth->client_assertion_file, now, &token, err,
                             sizeof(err)) < 0) {
        printf("federated token: FAILED: %s\n", err);
        return 1;
    }
    printf("federated token: ok (%s, read again for every token "
           "request)\n",
           auth->client_assertion_file);
    explicit_bzero(token, strlen(token));
    free(token);
    return 0;
}

/* `check`, the managed identity endpoint. Returns the number of
 * failures. */
static int main_check_managed_identity(const struct cfg_auth *auth)
{
    struct mi_params mp;
    struct mi_env env;
    enum mi_flavor flavor;
    char *url = NULL;
    char err[768];

    memset(&mp, 0, sizeof(mp));
    mp.resource = auth->resource;
    mp.client_id = auth->client_id;
    mp.endpoint = auth->endpoint;
    mi_env_from_process(&env);
    if (mi_resolve(&mp, &env, &flavor, &url, err, sizeof(err)) < 0) {
        printf("managed identity: FAILED: %s\n", err);
        return 1;
    }
    printf("managed identity: %s, %s\n",
           flavor == MI_ARC ? "Azure Arc" : "Azure VM (IMDS)", url);
    free(url);
    return 0;
}

/* `check`, the client secret's expiry as auth.client_secret_expires
 * states it. Returns the number of failures. */
static int main_check_secret_expiry(const struct cfg_auth *auth, int64_t now)
{
    struct tm tm;
    int64_t at;

    memset(&tm, 0, sizeof(tm));
    if (strptime(auth->client_secret_expires, "%Y-%m-%d", &tm) == NULL)
        return 0;
    at = (int64_t)timegm(&tm);
    if (at <= now) {
        printf("secret: FAILED: the client secret expired on %s "
               "(as auth.client_secret_expires states; Entra "
               "answers AADSTS7000222): create a new secret under "
               "the app's Certificates & secrets, put it in the "
               "secret file and send SIGHUP (systemctl kill -s HUP "
               "stowbridge)\n",
               auth->client_secret_expires);
        return 1;
    }
    if (at - now <= MAIN_EXPIRY_WARNING_S)
        printf("secret: warning: the client secret expires in %lld "
               "days, on %s: create a new one, put it in the secret "
               "file and send SIGHUP before then\n",
               (long long)((at - now) / 86400), auth->client_secret_expires);
    else
        printf("secret: ok (expires on %s)\n", auth->client_secret_expires);
    return 0;
}

/*
 * `check`, the credential files: the certificate and key (they match, the
 * certificate's validity), the federated token file, the managed identity
 * endpoint, the secret's stated expiry. Returns the number of failures.
 */
static int main_check_credentials(const struct cfg *cfg)
{
    const struct cfg_auth *auth = &cfg->auth;
    int64_t now = (int64_t)time(NULL);
    int failures = 0;

    if (auth->client_certificate_file[0] != '\0') {
        int r = main_check_certificate(auth, now);

        if (r < 0)
            return 1;
        failures += r;
    }
    if (auth->client_assertion_file[0] != '\0')
        failures += main_check_federated(auth, now);
    if (strcmp(auth->type, "managed_identity") == 0)
        failures += main_check_managed_identity(auth);
    if (auth->client_secret_expires[0] != '\0' &&
        auth->client_certificate_file[0] == '\0' &&
        auth->client_assertion_file[0] == '\0')
        failures += main_check_secret_expiry(auth, now);
    return failures;
}

/* `tls-fingerprint FILE`. */
static int main_tls_fingerprint(const char *path)
{
    struct scp_tls_cert_info info;
    char err[512];
    char when[64];
    time_t t;
    struct tm tm;

    if (scp_tls_inspect(path, &info, err, sizeof(err)) < 0) {
        fprintf(stderr, "stowbridge: %s\n", err);
        return EXIT_RUNTIME;
    }
    t = (time_t)info.not_after;
    if (gmtime_r(&t, &tm) == NULL ||
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(when, sizeof(when), "?");
    printf("sha256: %s\nsubject: %s\nnot_after: %s\n", info.sha256,
           info.subject, when);
    return 0;
}

/* `check`, TLS: every file as the daemon reads them; a server certificate
 * expiring within 30 days is a warning. Returns the failures. */
static int main_check_tls(const struct cfg *cfg)
{
    struct scp_tls_params tls;
    struct scp_tls_cert_info info;
    char err[512];

    if (!daemon_tls_params(cfg, &tls)) {
        printf("tls: not configured (dicom.tls.certificate_file)\n");
        return 0;
    }
    if (scp_tls_validate(&tls, &info, err, sizeof(err)) < 0) {
        printf("tls: FAILED: %s\n", err);
        return 1;
    }
    long long left = info.not_after - (long long)time(NULL);
    printf("tls: ok (port %u, certificate sha256 %s, subject %s, expires in "
           "%lld days)\n",
           cfg->dicom.tls.port, info.sha256, info.subject, left / 86400);
    if (left < 30LL * 86400)
        printf("tls: warning: the server certificate expires within 30 "
               "days\n");
    if (tls.security_level < 2)
        printf("tls: warning: dicom.tls.security_level %u lets weak keys "
               "and SHA-1 signatures through\n",
               tls.security_level);
    return 0;
}

/* `check`: each dependency in turn, saying which one fails and why. */
static int main_check(const struct cfg *cfg, bool dump)
{
    struct spool *spool = NULL;
    struct scp *scp = NULL;
    struct scp_params params;
    struct scp_tls_params tls_params;
    char err[512];
    char id[SPOOL_ID_MAX];
    uint64_t free_mb = 0;
    int failures = 0;
    int fd;
    int r;

    printf("config: ok\n");
    if (dump && cfg_dump(cfg, stdout) < 0)
        failures++;

    r = spool_open(cfg->spool.dir, SPOOL_OPEN_OWNER, &spool, err, sizeof(err));
    if (r == -EWOULDBLOCK) {
        /* The daemon owns it: check it read-only instead. */
        printf("spool: %s is in use by the running daemon (ok)\n",
               cfg->spool.dir);
        r = spool_open(cfg->spool.dir, 0, &spool, err, sizeof(err));
    }
    if (r < 0) {
        printf("spool: FAILED: %s\n", err);
        failures++;
    } else {
        r = spool_tmp_create(spool, id, &fd, err, sizeof(err));
        if (r < 0) {
            printf("spool: FAILED: not writable: %s\n", err);
            failures++;
        } else {
            spool_discard(spool, id, fd);
            if (spool_free_mb(spool, &free_mb) == 0 &&
                free_mb < cfg->spool.min_free_mb) {
                printf("spool: FAILED: %llu MiB free, below spool.min_free_mb "
                       "(%u): every C-STORE would be refused with A700\n",
                       (unsigned long long)free_mb, cfg->spool.min_free_mb);
                failures++;
            } else {
                printf("spool: ok (%s, %llu MiB free)\n", cfg->spool.dir,
                       (unsigned long long)free_mb);
            }
        }
    }

    int tls_failures = main_check_tls(cfg);
    failures += tls_failures;
    r = scp_global_init(err, sizeof(err));
    if (r == 0 && spool != NULL && tls_failures == 0) {
        /* Only whether the ports can be bound: no caller rules. */
        params_scp(cfg, spool, NULL, &params);
        daemon_listen_params(cfg, &params, &tls_params);
        r = scp_new(&params, &scp, err, sizeof(err));
    }
    if (r < 0) {
        printf("dicom: FAILED: %s\n", err);
        failures++;
    } else if (scp != NULL) {
        printf("dicom: ok (port %u%s can be bound, AE title %s)\n",
               cfg->dicom.port, params.tls != NULL ? " and the TLS port" : "",
               cfg->dicom.ae_title);
    }
    scp_free(scp);
    spool_close(spool);

    failures += main_check_credentials(cfg);
    failures += main_check_upload(cfg);
    return failures == 0 ? 0 : EXIT_RUNTIME;
}

/* A subcommand of at most @max_words (<= 4) words and --config FILE in
 * any order. */
static int main_words(int argc, char **argv, const char *name, int max_words,
                      int (*fn)(const struct cfg *, int, char **))
{
    struct main_opts opts;
    struct cfg *cfg = NULL;
    char *words[4];
    int nwords = 0;
    int status;

    memset(&opts, 0, sizeof(opts));
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            opts.config_path = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            opts.config_path = argv[i] + 9;
        } else if (nwords < max_words) {
            words[nwords++] = argv[i];
        } else {
            fprintf(stderr, "stowbridge %s: too many arguments\n", name);
            return EXIT_USAGE;
        }
    }
    if (main_load_config(&opts, name, false, &cfg) < 0)
        return EXIT_USAGE;
    status = fn(cfg, nwords, words);
    cfg_free(cfg);
    return status;
}

int main(int argc, char **argv)
{
    struct main_opts opts;
    struct cfg *cfg = NULL;
    const char *cmd;
    int status;
    int r;

    if (argc < 2) {
        main_usage(stderr);
        return EXIT_USAGE;
    }
    cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 ||
        strcmp(cmd, "help") == 0) {
        main_usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("stowbridge %s\n", STOWBRIDGE_VERSION);
        return 0;
    }

    if (strcmp(cmd, "queue") == 0)
        return main_words(argc - 2, argv + 2, "queue", 3, queue_main);
    if (strcmp(cmd, "study") == 0)
        return main_words(argc - 2, argv + 2, "study", 4, study_main);
    if (strcmp(cmd, "commit") == 0)
        return main_words(argc - 2, argv + 2, "commit", 4, commit_cmd_main);
    if (strcmp(cmd, "tls-fingerprint") == 0) {
        if (argc != 3) {
            fprintf(stderr, "stowbridge: usage: stowbridge tls-fingerprint "
                            "FILE\n");
            return EXIT_USAGE;
        }
        return main_tls_fingerprint(argv[2]);
    }

    r = main_parse_opts(cmd, argc - 1, argv + 1, &opts);
    if (r == 1) {
        main_usage(stdout);
        return 0;
    }
    if (r < 0)
        return EXIT_USAGE;

    if (strcmp(cmd, "sample-config") == 0)
        return cfg_write_sample(stdout) == 0 ? 0 : EXIT_RUNTIME;

    if (strcmp(cmd, "run") != 0 && strcmp(cmd, "status") != 0 &&
        strcmp(cmd, "check") != 0 && strcmp(cmd, "token") != 0) {
        fprintf(stderr,
                "stowbridge: unknown command '%s' (see "
                "'stowbridge --help')\n",
                cmd);
        return EXIT_USAGE;
    }
    if (main_load_config(&opts, cmd, strcmp(cmd, "status") != 0, &cfg) < 0)
        return EXIT_USAGE;

    /* Once, before any thread: the uploader's and token's HTTP client. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "stowbridge: libcurl initialisation failed\n");
        cfg_free(cfg);
        return EXIT_RUNTIME;
    }
    if (strcmp(cmd, "run") == 0)
        status = daemon_run(cfg, opts.config_path);
    else if (strcmp(cmd, "status") == 0)
        status = status_main(cfg, opts.json);
    else if (strcmp(cmd, "token") == 0)
        status = main_token(cfg, opts.raw);
    else
        status = main_check(cfg, opts.dump);
    cfg_free(cfg);
    curl_global_cleanup();
    return status;
}
