/* SPDX-License-Identifier: Apache-2.0 */
/*
 * oauth - OAuth2 token responses and access-token claims (RFC 6749 5.1 and
 * 5.2, RFC 7519), docs/architecture.md section 7.
 *
 * A token source (struct oauth_source) hands out Bearer tokens to every
 * upload worker: one cached token, refreshed ahead of expiry (5 minutes
 * or 10% of its lifetime, whichever is less; with background_refresh in
 * a thread of its own while callers keep the current token), with one
 * fetch in flight while the other callers wait for it; a token a server refused
 * (401) is invalidated only if it is still the current one. A failed fetch is
 * remembered for OAUTH_FAILURE_HOLD_MS so that waiting callers do not
 * stampede a token endpoint that is down, and whatever the answers say,
 * token requests are at least OAUTH_MIN_FETCH_INTERVAL_MS apart: a caller
 * that needs a new token sooner (a token refused right after it came)
 * waits for the rest of the interval, the others wait for its fetch.
 *
 * Lifetimes: expires_in (a number or a numeric string) is used when it is
 * a whole number of seconds from 1 to OAUTH_MAX_LIFETIME_S (a fraction is
 * dropped). Absent, the token is used for OAUTH_DEFAULT_LIFETIME_S.
 * Anything else - negative, zero, not a number, 1e30, a value that would
 * wrap - is no lifetime: the token is used for OAUTH_FALLBACK_LIFETIME_S
 * and the params' notice callback is told what was received.
 *
 * Credentials (issue 13): OAUTH_CLIENT_CREDENTIALS authenticates with a
 * client secret, with a certificate (an RFC 7523 private_key_jwt
 * assertion signed for every request, jwt_assertion.h) or with a
 * federated token file read on every request (workload identity,
 * federated_token.h); OAUTH_MANAGED_IDENTITY asks the Azure VM or Azure
 * Arc identity endpoint (managed_identity.h); OAUTH_COMMAND runs a program
 * that prints a token (token_command.h). Every kind shares the cache, the
 * refresh ahead of expiry and the 401 invalidation. An Entra error answer
 * gets its plain sentence (entra_errors.h) appended to @err.
 *
 * Rotation: oauth_source_reload() swaps the credential material (secret,
 * certificate and key, assertion file, command) for the next fetch; the
 * current token stays in use until its refresh. New material that does
 * not load leaves the old one in place.
 *
 * Server texts: what a token endpoint says (error, error_description, a
 * body, a Location) is cut to its first line and REDACT_TEXT_MAX bytes,
 * and the source's secrets (client secret, static token, the HTTP Basic
 * credentials) are hidden in it (redact.h) before it reaches @err; the
 * AADSTS code and the OAuth error code stay readable.
 *
 * The rest is pure: parsing what a token endpoint answers, decoding the
 * claims of a JWT access token (without verifying its signature: only the
 * resource server can, and we only need to explain its answers), and the
 * plain-language diagnosis logged when a DICOMweb server answers 403.
 *
 * Never log or print an access token or a client secret; the claims are
 * identities and permissions, safe to show.
 *
 * Ownership: structs filled here own their strings; release them with the
 * matching _free function, which accepts zeroed or half-filled structs.
 * Thread safety: an oauth_source may be used from any number of threads;
 * curl_global_init() must have run first. The rest is reentrant. Errors: 0 or a
 * negative errno with a reason in @err; -EBADMSG for answers that are not what
 * the RFCs say.
 */
#ifndef STOWBRIDGE_OAUTH_H
#define STOWBRIDGE_OAUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The largest token endpoint answer or token we accept. */
#define OAUTH_MAX_RESPONSE (64 * 1024)
/* How long a failed fetch answers for the source before the next try. */
#define OAUTH_FAILURE_HOLD_MS 2000
/* The least time between two token requests of one source. */
#define OAUTH_MIN_FETCH_INTERVAL_MS 1000
/* The lifetime of a token whose answer had no expires_in (RFC 6749 5.1
 * only recommends it). */
#define OAUTH_DEFAULT_LIFETIME_S 300
/* The lifetime of a token whose expires_in was no lifetime. */
#define OAUTH_FALLBACK_LIFETIME_S 60
/* The longest expires_in taken as it is (366 days). */
#define OAUTH_MAX_LIFETIME_S (366 * 86400)

enum oauth_kind {
    OAUTH_NONE = 0,           /* no Authorization header */
    OAUTH_STATIC,             /* a fixed Bearer token (testing) */
    OAUTH_CLIENT_CREDENTIALS, /* RFC 6749 4.4: a client secret, a
                                 certificate or a federated token */
    OAUTH_MANAGED_IDENTITY,   /* Azure VM (IMDS) or Azure Arc */
    OAUTH_COMMAND,            /* a program prints the token */
};

/* The signature of a certificate's client assertion (jwt_assertion.h). */
enum oauth_assertion_alg {
    OAUTH_ASSERTION_PS256 = 0, /* Entra's current format */
    OAUTH_ASSERTION_RS256,     /* the older one, with x5t */
};

enum oauth_client_auth {
    OAUTH_AUTH_BODY = 0, /* client_id and client_secret in the form */
    OAUTH_AUTH_BASIC,    /* HTTP Basic, ID and secret URL-encoded */
};

/* What a token source needs; strings are copied (secrets wiped on free). */
struct oauth_params {
    enum oauth_kind kind;
    const char *token_url;
    const char *client_id;
    const char *client_secret; /* secret */
    const char *scope;         /* NULL: none sent */
    const char *resource;      /* NULL: none sent (v1-style servers) */
    enum oauth_client_auth client_auth;
    const char *static_token; /* secret; OAUTH_STATIC only */
    const char *ca_file;      /* NULL: the system's CA store */
    unsigned timeout_s;       /* connect, stall and whole-request
                                 limit of a token request (http.h) */
    /* Told (one line, no lock held, from the fetching thread) when a
     * token answer needs an operator's eye: an expires_in that is no
     * lifetime. NULL: nobody is told. */
    void (*notice)(void *ctx, const char *message);
    void *notice_ctx;
    /* OAUTH_CLIENT_CREDENTIALS with a certificate instead of a secret:
     * PEM files (the key NULL: in the certificate file). */
    const char *client_certificate_file;
    const char *client_key_file;
    enum oauth_assertion_alg assertion_alg;
    /* OAUTH_CLIENT_CREDENTIALS with a federated token (workload
     * identity): the file, read on every request. */
    const char *client_assertion_file;
    /* OAUTH_MANAGED_IDENTITY: resource (NULL: the Azure DICOM service),
     * client_id (NULL: the system-assigned identity) and this URL (NULL:
     * detected from the environment as the Azure SDKs do). */
    const char *endpoint;
    /* OAUTH_COMMAND: NULL-terminated argv (no shell), and its timeout
     * (0: token_command.h's default). */
    const char *const *command;
    unsigned command_timeout_s;
    /* A refresh due while the token is still valid runs in a thread of
     * its own and callers go on with the current token, so that token
     * requests never hold up an upload (the daemon). false: the caller
     * that finds it due fetches. */
    bool background_refresh;
    /* Told after every token request (from the fetching thread, the
     * source's lock held: quick, and never calling back into the source):
     * whether a token came, its expiry as Unix time (0 on failure) and
     * the reason of a failure (no secret in it). NULL: nobody is told. */
    void (*fetched)(void *ctx, bool ok, int64_t expires_s, const char *error);
    void *fetched_ctx;
};

struct oauth_source;
struct redact;

/* NULL on out-of-memory or credential material that does not load
 * (use oauth_source_open() to know why). */
struct oauth_source *oauth_source_new(const struct oauth_params *params);

/*
 * Makes a token source into @ret_source, loading its credential material
 * now: the certificate and key are read and checked to match. -EINVAL
 * for parameters that do not go together, the errors of
 * jwt_assertion.h for a certificate, -ENOMEM; the reason in @err.
 */
int oauth_source_open(const struct oauth_params *params,
                      struct oauth_source **ret_source, char *err,
                      size_t err_len);

/*
 * Replaces the credential material of @source with @params' (the same
 * kind; for SIGHUP): the next fetch uses it, the current token stays in
 * use until its refresh. On any error (the new certificate or key does
 * not load, another kind: -EINVAL) the old material stays; the reason
 * is in @err.
 */
int oauth_source_reload(struct oauth_source *source,
                        const struct oauth_params *params, char *err,
                        size_t err_len);

/* Wipes the secrets and frees. Accepts NULL. */
void oauth_source_free(struct oauth_source *source);

/*
 * Hands out the token to use at monotonic time @now_ms: a new string in
 * @ret_token (NULL for OAUTH_NONE; the caller wipes and frees it) and the
 * token's generation in @ret_generation (for oauth_source_invalidate()).
 * Fetches when there is no token or it is due for refresh (waiting, in
 * real time, for what remains of OAUTH_MIN_FETCH_INTERVAL_MS after the
 * last request); if a refresh fails while the old token is still valid,
 * the old one is handed out.
 * -EACCES: the endpoint refused the client (configuration); -EAGAIN: the
 * endpoint is down or answered nonsense (retry later); reason in @err.
 */
int oauth_source_token(struct oauth_source *source, uint64_t now_ms,
                       char **ret_token, uint64_t *ret_generation, char *err,
                       size_t err_len);

/* After a 401: forgets the token of @generation if it is still current. */
void oauth_source_invalidate(struct oauth_source *source, uint64_t generation);

/* Number of token requests sent so far (for logs and tests). */
unsigned oauth_source_fetches(struct oauth_source *source);

/*
 * Adds every secret @source knows to @r, so that a server's text can be
 * shown without them: the client secret, the static token, the current
 * token, and the forms they travel in (URL-encoded, the HTTP Basic
 * credentials). Returns 0 or -ENOMEM (then @r withholds every text).
 */
int oauth_source_add_secrets(struct oauth_source *source, struct redact *r);

struct oauth_token {
    char *access_token; /* secret: never log */
    char *token_type;   /* "Bearer" (case-insensitive) */
    /* 1..OAUTH_MAX_LIFETIME_S; -1 when absent or no lifetime. */
    int64_t expires_in_s;
    /* What was received when it was no lifetime (cleaned, cut: "-5",
     * "1e+30", "'soon'"); "" otherwise. */
    char expires_in_bad[48];
};

/* Claims of a JWT access token that explain an authorization answer;
 * each string is NULL when absent. List claims are joined with ' '. */
struct oauth_claims {
    char *aud; /* audience: the resource the token is for */
    char *iss;
    char *tid;   /* Entra tenant */
    char *oid;   /* object ID of the identity (service principal) */
    char *appid; /* client ID (Entra v1 tokens) */
    char *azp;   /* client ID (v2 tokens) */
    char *idtyp; /* "app" for client_credentials, "user" otherwise */
    char *roles; /* app roles granted */
    char *scp;   /* delegated scopes */
    int64_t exp; /* expiry, seconds since the epoch; 0 if absent */
    int64_t iat;
};

/*
 * Parses a token endpoint answer. 200 with {"access_token", "token_type",
 * "expires_in"} (a number or a numeric string, checked as above) fills
 * @ret_token. An error answer ({"error", "error_description"}) gives
 * -EACCES for invalid_client/unauthorized_client/invalid_grant/
 * invalid_scope/unauthorized (configuration problems) and -EAGAIN for
 * anything else (temporarily_unavailable, 5xx, garbage: retry later),
 * with the server's error and the first line of its description in @err,
 * cleaned and cut (no secrets are known here: the source hides its own).
 */
int oauth_parse_token_response(long http_status, const char *body,
                               size_t body_len, struct oauth_token *ret_token,
                               char *err, size_t err_len);

void oauth_token_free(struct oauth_token *token);

/*
 * Decodes the payload of a JWT (header.payload.signature, base64url) into
 * @ret_claims. An opaque (non-JWT) token gives -EINVAL: that is allowed,
 * it only cannot be explained.
 */
int oauth_decode_claims(const char *jwt, struct oauth_claims *ret_claims,
                        char *err, size_t err_len);

void oauth_claims_free(struct oauth_claims *claims);

/*
 * Decodes segment @index (0 header, 1 payload) of a JWT into indented JSON
 * text in a new string (caller frees). -EINVAL for a non-JWT.
 */
int oauth_jwt_segment_json(const char *jwt, int index, char **ret_json);

/*
 * Writes into @buf one line per finding about a token about to be used
 * for @url (may be NULL) at @now_s, for `stowbridge token`: expired or
 * issued in the future (clock), the audience against the Azure DICOM
 * service, the tenant against @tenant (may be NULL or ""), and whether
 * roles or scopes are present. Lines start with "ok: ", "warning: " or
 * "error: ". Returns the number of "error: " lines.
 */
int oauth_diagnose_token(const struct oauth_claims *claims, const char *url,
                         const char *tenant, int64_t now_s, char *buf,
                         size_t len);

/*
 * Writes into @buf (capacity @len) what a PACS administrator needs after
 * a 403 from @url: which identity the token carries and what to change.
 * For an Azure Health Data Services URL, that the service principal needs
 * the "DICOM Data Owner" role on the DICOM service, and when the audience
 * is not the DICOM service, which scope to request. @claims may be NULL
 * (opaque token). Always NUL-terminates; never includes the token.
 */
void oauth_diagnose_forbidden(const struct oauth_claims *claims,
                              const char *url, int64_t now_s, char *buf,
                              size_t len);

#ifdef __cplusplus
}
#endif

#endif
