/* SPDX-License-Identifier: Apache-2.0 */
/*
 * credential - what the credential modules of web/ share (issue 13):
 * the token they hand back, the client_credentials form that carries a
 * client assertion (RFC 7523 2.2, for certificate and workload identity
 * credentials), and the scrubbing of token-shaped text out of a line that
 * is about to be logged or shown.
 *
 * The modules built on it: jwt_assertion.h (certificate credentials),
 * federated_token.h (workload identity), managed_identity.h (Azure VM and
 * Azure Arc), token_command.h (auth.type "command"), entra_errors.h (what
 * an Entra ID error code means), cred_http.h (their HTTP requests).
 *
 * Ownership: a struct cred_token owns its string; cred_token_free() wipes
 * and frees it and accepts zeroed or half-filled structs. Thread safety:
 * reentrant. Errors: 0 or a negative errno (-EINVAL, -ENOMEM).
 */
#ifndef STOWBRIDGE_CREDENTIAL_H
#define STOWBRIDGE_CREDENTIAL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* RFC 7523 2.2: the client_assertion_type of a JWT client assertion. */
#define CRED_ASSERTION_TYPE_JWT \
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

/* The audience of tokens for the Azure Health Data Services DICOM service:
 * the default resource of managed identity requests. */
#define CRED_AZURE_DICOM_RESOURCE "https://dicom.healthcareapis.azure.com"

/* An access token obtained by one of the credential modules. */
struct cred_token {
    char *access_token;   /* secret: never log */
    int64_t expires_in_s; /* lifetime from when it was obtained; -1 unknown */
};

/* Wipes the token and frees it. Accepts NULL. */
void cred_token_free(struct cred_token *token);

/* The parts of a client_credentials request authenticated by a client
 * assertion. Strings are borrowed. */
struct cred_assertion_form {
    const char *client_id; /* required */
    const char *assertion; /* required; secret (a signed JWT) */
    const char *scope;     /* NULL or "": not sent */
    const char *resource;  /* NULL or "": not sent (Entra v1 endpoints) */
};

/*
 * Builds the application/x-www-form-urlencoded body of the token request
 * (RFC 6749 4.4.2 with RFC 7523 2.2):
 * grant_type=client_credentials&client_id=...&client_assertion_type=
 * urn%3Aietf%3A...%3Ajwt-bearer&client_assertion=...[&scope=...]
 * [&resource=...], every value percent-encoded (all but A-Z a-z 0-9 - . _
 * ~). The new string in @ret_body holds the assertion: the caller wipes
 * (explicit_bzero) and frees it. -EINVAL without client_id or assertion.
 */
int cred_assertion_form_build(const struct cred_assertion_form *form,
                              char **ret_body);

/*
 * Copies the first non-empty line of @text (@len bytes, not necessarily
 * NUL-terminated) into @buf (capacity @buf_len, always NUL-terminated,
 * truncated with "..." when longer), for a log line or an error: bytes
 * outside printable ASCII become '?', and every run of token characters
 * (A-Z a-z 0-9 + / _ ~ . -, and '=' as trailing padding: "name=value"
 * is two runs) that looks like a credential becomes
 * "[redacted]": one of 16 or more characters containing "eyJ" (the start
 * of a base64url JSON object: a JWT), one with 32 or more hex digits in a
 * row, or one of 24 or more characters mixing at least 3 upper-case
 * letters, 3 lower-case letters and 2 digits (base64, client secrets).
 * Paths, URLs, GUIDs and AADSTS codes survive.
 */
void cred_redact_line(const char *text, size_t len, char *buf, size_t buf_len);

#ifdef __cplusplus
}
#endif

#endif
