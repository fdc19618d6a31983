/*
 * oauth - OAuth2 token responses and access-token claims (RFC 6749 5.1 and
 * 5.2, RFC 7519), DESIGN.md section 7.
 *
 * This part is pure: it parses what a token endpoint answers, decodes the
 * claims of a JWT access token (without verifying its signature: only the
 * resource server can, and we only need to explain its answers), and
 * builds the plain-language diagnosis logged when a DICOMweb server
 * answers 403. The token cache and the HTTP fetch arrive with the
 * uploader.
 *
 * Never log or print an access token or a client secret; the claims are
 * identities and permissions, safe to show.
 *
 * Ownership: structs filled here own their strings; release them with the
 * matching _free function, which accepts zeroed or half-filled structs.
 * Thread safety: reentrant. Errors: 0 or a negative errno with a reason
 * in @err; -EBADMSG for answers that are not what the RFCs say.
 */
#ifndef STOWBRIDGE_OAUTH_H
#define STOWBRIDGE_OAUTH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The largest token endpoint answer or token we accept. */
#define OAUTH_MAX_RESPONSE (64 * 1024)

struct oauth_token {
    char *access_token;     /* secret: never log */
    char *token_type;       /* "Bearer" (case-insensitive) */
    int64_t expires_in_s;   /* -1 when the endpoint did not say */
};

/* Claims of a JWT access token that explain an authorization answer;
 * each string is NULL when absent. List claims are joined with ' '. */
struct oauth_claims {
    char *aud;       /* audience: the resource the token is for */
    char *iss;
    char *tid;       /* Entra tenant */
    char *oid;       /* object ID of the identity (service principal) */
    char *appid;     /* client ID (Entra v1 tokens) */
    char *azp;       /* client ID (v2 tokens) */
    char *idtyp;     /* "app" for client_credentials, "user" otherwise */
    char *roles;     /* app roles granted */
    char *scp;       /* delegated scopes */
    int64_t exp;     /* expiry, seconds since the epoch; 0 if absent */
    int64_t iat;
};

/*
 * Parses a token endpoint answer. 200 with {"access_token", "token_type",
 * "expires_in"} (a number or a numeric string) fills @ret_token. An error
 * answer ({"error", "error_description"}) gives -EACCES for
 * invalid_client/unauthorized_client/invalid_grant/invalid_scope/
 * unauthorized (configuration problems) and -EAGAIN for anything else
 * (temporarily_unavailable, 5xx, garbage: retry later), with the server's
 * error and description in @err.
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
