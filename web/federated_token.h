/* SPDX-License-Identifier: Apache-2.0 */
/*
 * federated_token - workload identity federation (protocol-facts-2.md
 * 4.2): a token issued by another identity provider (a Kubernetes service
 * account token projected into a file, a GitHub OIDC token...) is the
 * client assertion of a client_credentials request. The bridge does not
 * sign it; it reads it from auth.client_assertion_file on EVERY token
 * request, because the kubelet rotates the file behind our back, and
 * sends it as client_assertion (RFC 7523 2.2) with client_assertion_type
 * urn:ietf:params:oauth:client-assertion-type:jwt-bearer.
 *
 * Entra ID matches the token's iss and sub exactly against a federated
 * identity credential of the app, with the audience
 * api://AzureADTokenExchange; none of that is checked here (Entra says
 * what did not match: AADSTS70021, entra_errors.h). Checked here: the
 * file is a regular file of at most FEDERATED_MAX_TOKEN bytes holding one
 * JWT (surrounding white space, such as a final newline, is trimmed), and
 * the JWT has not expired (an expired file means nobody refreshes it).
 *
 * Thread safety: reentrant. Ownership: returned strings are the caller's,
 * secret: wipe (explicit_bzero) and free them. Errors: 0 or a negative
 * errno with a reason in @err naming the file: -ENOENT/-EACCES... cannot
 * read; -EFBIG too large; -ENODATA empty; -EBADMSG not a JWT;
 * -EKEYEXPIRED its exp is past; -ENOMEM.
 */
#ifndef STOWBRIDGE_FEDERATED_TOKEN_H
#define STOWBRIDGE_FEDERATED_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The largest federated token file read (Kubernetes tokens are ~1 KiB). */
#define FEDERATED_MAX_TOKEN (16 * 1024)
/* The variable the AKS workload identity webhook and the Azure SDKs use. */
#define FEDERATED_TOKEN_ENV "AZURE_FEDERATED_TOKEN_FILE"

/*
 * Which file holds the federated token: @configured
 * (auth.client_assertion_file) when set and non-empty; else, only when
 * @auth_type is "azure", @env_value (the value of
 * AZURE_FEDERATED_TOKEN_FILE, or NULL) when non-empty; else NULL: no
 * workload identity. A borrowed pointer to one of the arguments.
 */
const char *federated_token_path(const char *configured, const char *auth_type,
                                 const char *env_value);

/*
 * Reads the federated token at @path now (never cached) into a new
 * string in @ret_token, checked at wall-clock time @now_s.
 */
int federated_token_read(const char *path, int64_t now_s, char **ret_token,
                         char *err, size_t err_len);

/*
 * Reads the token at @path (federated_token_read()) and builds the token
 * request body with it (cred_assertion_form_build(), credential.h):
 * grant_type=client_credentials, @client_id, the assertion type, the
 * token, and @scope / @resource when non-NULL and non-empty. The new
 * string in @ret_form holds the token: wipe and free it.
 */
int federated_token_form(const char *path, const char *client_id,
                         const char *scope, const char *resource, int64_t now_s,
                         char **ret_form, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif

#endif
