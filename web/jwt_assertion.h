/* SPDX-License-Identifier: Apache-2.0 */
/*
 * jwt_assertion - certificate credentials: the RFC 7523 private_key_jwt
 * client assertion that authenticates the bridge to a token endpoint
 * with an X.509 certificate and its RSA private key instead of a secret
 * (Entra ID "certificate credentials"; protocol-facts.md 4.3,
 * protocol-facts-2.md 4.1).
 *
 * A struct jwt_credential is a loaded certificate and key, checked to
 * belong together. From it, jwt_assertion_sign() makes a JWS:
 *   header  {"alg":"PS256","typ":"JWT","x5t#S256":"<SHA-256 of the DER
 *           certificate>"}; RS256 adds "x5t" (its SHA-1: older Entra);
 *   claims  {"aud": token URL, "iss" = "sub" = client ID, "jti": random
 *           UUID, "nbf" = "iat" = now, "exp": now + 10 minutes};
 *   PS256 is RSASSA-PSS with SHA-256, MGF1-SHA-256 and a salt of the
 *   digest length (RFC 7518 3.5; OpenSSL's default, the largest salt,
 *   fails a conformant verifier); RS256 is RSASSA-PKCS1-v1_5;
 *   every segment base64url without padding (RFC 7515).
 *
 * Keys must be unencrypted PEM (PKCS#8 "PRIVATE KEY" or PKCS#1 "RSA
 * PRIVATE KEY"), RSA of at least 2048 bits (RFC 7518 3.3 and 3.5).
 * The certificate file may hold a chain: the first certificate is the
 * client's. Certificate and key may be in one file.
 *
 * Thread safety: a credential is immutable once made, and may sign from
 * any number of threads at once. Ownership: jwt_credential_free()
 * releases it (the key is cleared by OpenSSL); buffers holding key text
 * are wiped here after use. Errors: 0 or a negative errno with a reason
 * in @err that names the file or what is wrong and how to fix it:
 * -ENOENT/-EACCES... file unreadable; -EBADMSG not PEM or no such block;
 * -ENOKEY key encrypted; -EKEYREJECTED key not RSA or too short, or not
 * the certificate's; -EKEYEXPIRED certificate expired (on signing);
 * -EINVAL bad parameters; -ENOMEM; -EPROTO an OpenSSL failure.
 */
#ifndef STOWBRIDGE_JWT_ASSERTION_H
#define STOWBRIDGE_JWT_ASSERTION_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The largest certificate (chain) file and key file read. */
#define JWT_MAX_CERT_FILE (256 * 1024)
#define JWT_MAX_KEY_FILE (64 * 1024)
/* The assertion's lifetime: Entra's guidance is 5 to 10 minutes. */
#define JWT_ASSERTION_LIFETIME_S 600
/* The smallest RSA key accepted (RFC 7518 3.3). */
#define JWT_MIN_RSA_BITS 2048

enum jwt_alg {
    JWT_ALG_PS256 = 0, /* the default: Entra's current format */
    JWT_ALG_RS256,     /* the older format, with x5t (SHA-1) */
};

struct jwt_credential;

/*
 * Makes a credential from PEM text: @cert_pem (@cert_len bytes) and
 * @key_pem (@key_len bytes, e.g. read from a LoadCredential= file by the
 * caller; this function does not wipe it). Checks that the key is RSA,
 * long enough and the private half of the certificate's public key. An
 * expired certificate loads (see jwt_credential_validity()), but does not
 * sign. @cert_name and @key_name (e.g. paths) name the inputs in @err.
 */
int jwt_credential_from_pem(const char *cert_pem, size_t cert_len,
                            const char *cert_name, const char *key_pem,
                            size_t key_len, const char *key_name,
                            struct jwt_credential **ret_cred, char *err,
                            size_t err_len);

/* Like jwt_credential_from_pem(), from the files at @cert_path and
 * @key_path (regular files; the key text is wiped after use). */
int jwt_credential_from_files(const char *cert_path, const char *key_path,
                              struct jwt_credential **ret_cred, char *err,
                              size_t err_len);

/* Frees. Accepts NULL. */
void jwt_credential_free(struct jwt_credential *cred);

/* The certificate's validity, in seconds since the epoch. */
void jwt_credential_validity(const struct jwt_credential *cred,
                             int64_t *ret_not_before, int64_t *ret_not_after);

enum jwt_validity {
    JWT_VALID = 0,
    JWT_EXPIRES_SOON, /* within @soon_s */
    JWT_EXPIRED,
    JWT_NOT_YET_VALID, /* notBefore is after now: the clock? */
};

/*
 * For `stowbridge check`: where the certificate stands at @now_s, with a
 * sentence in @buf (e.g. "the client certificate expires in 12 days, on
 * 2026-12-14 10:00:00 UTC: upload a new one ...").
 */
enum jwt_validity
jwt_credential_check_validity(const struct jwt_credential *cred, int64_t now_s,
                              int64_t soon_s, char *buf, size_t len);

/*
 * Writes what identifies the certificate into @buf: its subject, its
 * SHA-1 thumbprint in upper-case hex (what the Azure portal lists under
 * Certificates & secrets) and its validity. No key material.
 */
void jwt_credential_describe(const struct jwt_credential *cred, char *buf,
                             size_t len);

/* The "x5t#S256" value: base64url SHA-256 of the DER certificate.
 * Borrowed for the credential's lifetime. */
const char *jwt_credential_x5t_s256(const struct jwt_credential *cred);

/* What to sign. Strings are borrowed. */
struct jwt_assertion_params {
    enum jwt_alg alg;
    const char *client_id; /* iss and sub; required */
    const char *audience;  /* aud: the token endpoint URL; required */
    unsigned lifetime_s;   /* 0: JWT_ASSERTION_LIFETIME_S */
};

/*
 * Signs a new assertion valid from @now_s (seconds since the epoch, wall
 * clock) into a new string in @ret_jwt (secret while valid: the caller
 * wipes and frees it). Every call draws a new jti.
 */
int jwt_assertion_sign(const struct jwt_credential *cred,
                       const struct jwt_assertion_params *params, int64_t now_s,
                       char **ret_jwt, char *err, size_t err_len);

/* "PS256" or "RS256". */
const char *jwt_alg_name(enum jwt_alg alg);

/* Parses "PS256" or "RS256" (exactly, as JWA writes them). -EINVAL else. */
int jwt_alg_parse(const char *name, enum jwt_alg *ret_alg);

#ifdef __cplusplus
}
#endif

#endif
