/* SPDX-License-Identifier: Apache-2.0 */
/*
 * entra_errors - what the Entra ID (Azure AD) errors a bridge operator
 * meets mean, one plain sentence each that says what to fix, for
 * `stowbridge token`, `stowbridge check` and the log (issue 13, item 6;
 * protocol-facts.md 4.3, protocol-facts-2.md 4.2).
 *
 * The code comes from the token endpoint's answer: the first number of
 * its "error_codes" array (Entra's JSON), else the first "AADSTS<digits>"
 * in its text. Known codes: 700016, 700021, 700023, 700024, 700027,
 * 7000215, 7000222, 70011, 500011, 90002, 70021. An unknown AADSTS code
 * gets Entra's own error lookup page. A server that is not Entra says only
 * "invalid_client": that is explained by the credential in use, as the
 * Entra code it would most likely be (e.g. a refused client assertion as
 * AADSTS700027).
 *
 * Thread safety: reentrant; the tables are constant. No text of the
 * answer other than the code is copied (it may name tenants and apps,
 * never secrets, but the sentence is what the operator needs).
 */
#ifndef STOWBRIDGE_ENTRA_ERRORS_H
#define STOWBRIDGE_ENTRA_ERRORS_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* How the bridge authenticated, to explain an answer without a code. */
enum entra_credential {
    ENTRA_CRED_UNKNOWN = 0,
    ENTRA_CRED_SECRET,      /* client_secret */
    ENTRA_CRED_CERTIFICATE, /* a client assertion we signed */
    ENTRA_CRED_FEDERATED,   /* a federated token as the assertion */
};

/* The first Entra code in the answer @body (@len bytes), or 0. */
unsigned long entra_error_code(const char *body, size_t len);

/* The sentence for a known @code (without the code), or NULL. */
const char *entra_error_advice(unsigned long code);

/* Whether @code is usually cured by waiting (a new federated credential
 * still propagating: 70021), so the caller retries instead of stopping. */
bool entra_error_transient(unsigned long code);

/*
 * Writes into @buf (always NUL-terminated) one line explaining the token
 * endpoint's error answer @body: "AADSTS700027: <sentence>" for a code
 * found in it, or for an OAuth "invalid_client" without a code, the
 * sentence of the Entra code that @cred would most likely produce,
 * introduced as "invalid_client (as Entra's AADSTS700027): ". The code
 * used goes in @ret_code (may be NULL). Returns false (and "" in @buf)
 * when there is nothing to explain.
 */
bool entra_explain(const char *body, size_t len, enum entra_credential cred,
                   char *buf, size_t buf_len, unsigned long *ret_code);

#ifdef __cplusplus
}
#endif

#endif
