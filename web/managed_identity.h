/* SPDX-License-Identifier: Apache-2.0 */
/*
 * managed_identity - tokens from an Azure managed identity, with no
 * secret on disk (protocol-facts.md 4.6, protocol-facts-2.md 4.3):
 *
 * - Azure VM: GET http://169.254.169.254/metadata/identity/oauth2/token
 *   ?api-version=2018-02-01&resource=<resource>[&client_id=<id>] with
 *   "Metadata: true", never through a proxy. client_id picks a
 *   user-assigned identity.
 * - Azure Arc-enabled server: GET <IDENTITY_ENDPOINT>?api-version=
 *   2020-06-01&resource=<resource> with "Metadata: true" is answered 401
 *   with "WWW-Authenticate: Basic realm=<file>"; the file must be a
 *   regular file of at most 4096 bytes directly in
 *   /var/opt/azcmagent/tokens/ whose name ends in ".key" (anything else is
 *   refused: the endpoint must not make us read or send other files);
 *   the same GET again with "Authorization: Basic <file contents>" gets
 *   the token. Only the system-assigned identity exists there: a
 *   client_id is a configuration error. Reading the file needs root or
 *   the himds group (SupplementaryGroups=himds in the unit).
 *
 * Which one, as the Azure SDKs decide (MI_DETECT): IDENTITY_ENDPOINT with
 * IMDS_ENDPOINT set, or the agent /opt/azcmagent/bin/himds installed:
 * Arc (default endpoint http://127.0.0.1:40342/metadata/identity/oauth2/
 * token); IDENTITY_ENDPOINT with IDENTITY_HEADER (App Service, Functions,
 * Container Apps, Service Fabric) or MSI_ENDPOINT (Cloud Shell): not
 * supported, said so; otherwise the VM endpoint. auth.endpoint
 * (mi_params.endpoint) replaces the URL, for tests and unusual networks.
 *
 * Answers: 200 with access_token and expires_in and/or expires_on
 * (numbers or numeric strings; expires_on is an epoch time).
 *
 * Thread safety: reentrant (each call has its own libcurl handle);
 * curl_global_init() must have run first. Ownership: see credential.h.
 * Errors: 0 or a negative errno with a reason in @err:
 * -EINVAL  configuration (client_id with Arc, an unsupported host kind);
 * -EACCES  refused for good (no identity assigned, the identity not
 *          found, the Arc key file not readable by this user);
 * -EPERM   the Arc challenge names a file we refuse to read (outside the
 *          token directory, not .key, not a regular file, too large);
 * -EAGAIN  try again later (unreachable, timeout, 404, 410, 429, 5xx);
 * -EBADMSG an answer that is not what the endpoint documents;
 * -ENOMEM.
 */
#ifndef STOWBRIDGE_MANAGED_IDENTITY_H
#define STOWBRIDGE_MANAGED_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cred_token;

#define MI_IMDS_URL "http://169.254.169.254/metadata/identity/oauth2/token"
#define MI_IMDS_API_VERSION "2018-02-01"
#define MI_ARC_URL "http://127.0.0.1:40342/metadata/identity/oauth2/token"
#define MI_ARC_API_VERSION "2020-06-01"
#define MI_ARC_TOKEN_DIR "/var/opt/azcmagent/tokens"
#define MI_ARC_AGENT "/opt/azcmagent/bin/himds"
/* The largest Arc key file (what MSAL allows). */
#define MI_ARC_MAX_KEY 4096

enum mi_flavor {
    MI_DETECT = 0, /* from the environment (struct mi_env) */
    MI_IMDS,       /* Azure VM instance metadata service */
    MI_ARC,        /* Azure Arc-enabled server */
};

/* What the detection looks at; mi_env_from_process() fills it. Strings
 * are borrowed (from the environment); NULL when unset. */
struct mi_env {
    const char *identity_endpoint; /* IDENTITY_ENDPOINT */
    const char *imds_endpoint;     /* IMDS_ENDPOINT */
    const char *identity_header;   /* IDENTITY_HEADER */
    const char *msi_endpoint;      /* MSI_ENDPOINT */
    bool arc_agent_installed;      /* MI_ARC_AGENT exists */
};

/* Fills @ret_env from getenv() and the file system. Not thread-safe
 * against setenv(); call it at start-up or configuration load. */
void mi_env_from_process(struct mi_env *ret_env);

struct mi_params {
    enum mi_flavor flavor;
    const char *resource;      /* NULL or "": CRED_AZURE_DICOM_RESOURCE */
    const char *client_id;     /* NULL or "": the system-assigned one */
    const char *endpoint;      /* NULL or "": the flavor's URL */
    const char *arc_token_dir; /* NULL: MI_ARC_TOKEN_DIR (tests only) */
    unsigned timeout_s;        /* per request; 0: 10 s */
};

/*
 * Decides the flavor for @params in @env (MI_DETECT resolved) and the
 * URL to request, query included, into a new string in @ret_url (caller
 * frees). -EINVAL with the reason for an unsupported environment or a
 * client_id on Arc.
 */
int mi_resolve(const struct mi_params *params, const struct mi_env *env,
               enum mi_flavor *ret_flavor, char **ret_url, char *err,
               size_t err_len);

/*
 * Gets a token: resolves, requests, answers the Arc challenge. @now_s
 * (wall clock) turns an expires_on into a lifetime.
 */
int mi_get_token(const struct mi_params *params, const struct mi_env *env,
                 int64_t now_s, struct cred_token *ret_token, char *err,
                 size_t err_len);

/*
 * Parses a managed identity answer (HTTP @status, @body of @len bytes)
 * into @ret_token; @now_s as above; @what names the endpoint in @err.
 */
int mi_parse_answer(long status, const char *body, size_t len, int64_t now_s,
                    const char *what, struct cred_token *ret_token, char *err,
                    size_t err_len);

/*
 * From the value of an Arc 401's WWW-Authenticate header, reads the key
 * file it names, if it passes every check against @token_dir (NULL:
 * MI_ARC_TOKEN_DIR), into a new string in @ret_key (secret: wipe and
 * free), trailing white space removed. -EPERM for a file we refuse;
 * -EACCES when it cannot be read (permissions); -EBADMSG when there is no
 * "Basic realm=" or the contents are not one printable line.
 */
int mi_arc_read_challenge(const char *www_authenticate, const char *token_dir,
                          char **ret_key, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif

#endif
