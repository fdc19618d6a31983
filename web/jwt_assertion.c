/* SPDX-License-Identifier: Apache-2.0 */
/*
 * jwt_assertion - see jwt_assertion.h.
 */
#include "jwt_assertion.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "base/util.h"
#include "cred_int.h"

struct jwt_credential {
    X509 *cert;
    EVP_PKEY *key;
    char *x5t;         /* base64url SHA-1 of the DER certificate */
    char *x5t_s256;    /* base64url SHA-256 */
    char sha1_hex[41]; /* the thumbprint the Azure portal shows */
    int64_t not_before;
    int64_t not_after;
};

static const char *jwt_openssl_reason(const char *fallback);

void jwt_credential_free(struct jwt_credential *cred)
{
    if (cred == NULL)
        return;
    X509_free(cred->cert);
    EVP_PKEY_free(cred->key);
    free(cred->x5t);
    free(cred->x5t_s256);
    free(cred);
}

const char *jwt_alg_name(enum jwt_alg alg)
{
    return alg == JWT_ALG_RS256 ? "RS256" : "PS256";
}

int jwt_alg_parse(const char *name, enum jwt_alg *ret_alg)
{
    if (name != NULL && strcmp(name, "PS256") == 0) {
        *ret_alg = JWT_ALG_PS256;
        return 0;
    }
    if (name != NULL && strcmp(name, "RS256") == 0) {
        *ret_alg = JWT_ALG_RS256;
        return 0;
    }
    return -EINVAL;
}

/* Whether @text holds a PEM block whose label contains @label. */
static bool jwt_has_pem_label(const char *text, size_t len, const char *label)
{
    const char *p = text;
    const char *end = text + len;
    size_t label_len = strlen(label);

    while (p < end) {
        const char *begin = memmem(p, (size_t)(end - p), "-----BEGIN ", 11);
        const char *eol;

        if (begin == NULL)
            return false;
        begin += 11;
        eol = memchr(begin, '\n', (size_t)(end - begin));
        if (eol == NULL)
            eol = end;
        if (memmem(begin, (size_t)(eol - begin), label, label_len) != NULL)
            return true;
        p = eol;
    }
    return false;
}

/* Explains why @text (named @name) holds no PEM block of @what. */
static int jwt_not_pem(const char *text, size_t len, const char *name,
                       const char *what, const char *label, char *err,
                       size_t err_len)
{
    if (len > 0 && (unsigned char)text[0] == 0x30) {
        util_err(err, err_len,
                 "%s is binary (DER or a PKCS#12 .pfx file), not PEM: "
                 "convert it, e.g. 'openssl pkcs12 -in file.pfx -nokeys "
                 "-out cert.pem' and 'openssl pkcs12 -in file.pfx "
                 "-nocerts -nodes -out key.pem', or 'openssl x509 -inform "
                 "der -in file.cer -out cert.pem'",
                 name);
    } else if (memmem(text, len, "-----BEGIN ", 11) == NULL) {
        util_err(err, err_len,
                 "%s is not PEM: no '-----BEGIN' line (a %s "
                 "is expected)",
                 name, what);
    } else if (!jwt_has_pem_label(text, len, label)) {
        util_err(err, err_len, "%s holds no %s (no PEM block '%s')", name, what,
                 label);
    } else {
        util_err(err, err_len, "%s: its %s cannot be read: %s", name, what,
                 jwt_openssl_reason("damaged PEM"));
    }
    ERR_clear_error();
    return -EBADMSG;
}

struct jwt_pw_state {
    bool asked;
};

/* The key must be unencrypted: note that a pass phrase was wanted. */
static int jwt_no_password(char *buf, int size, int rwflag, void *arg)
{
    struct jwt_pw_state *state = arg;

    (void)buf;
    (void)size;
    (void)rwflag;
    state->asked = true;
    return -1;
}

/* OpenSSL's reason for its last error, never NULL. */
static const char *jwt_openssl_reason(const char *fallback)
{
    unsigned long e = ERR_peek_last_error();
    const char *why = e != 0 ? ERR_reason_error_string(e) : NULL;

    return why != NULL ? why : fallback;
}

static int jwt_load_key(const char *key_pem, size_t key_len,
                        const char *key_name, EVP_PKEY **ret_key, char *err,
                        size_t err_len)
{
    struct jwt_pw_state pw = { false };
    EVP_PKEY *key;
    BIO *bio;

    if (key_len > JWT_MAX_KEY_FILE || key_len > (size_t)INT32_MAX) {
        util_err(err, err_len, "%s is larger than %d bytes", key_name,
                 JWT_MAX_KEY_FILE);
        return -EFBIG;
    }
    bio = BIO_new_mem_buf(key_pem, (int)key_len);
    if (bio == NULL)
        return -ENOMEM;
    key = PEM_read_bio_PrivateKey(bio, NULL, jwt_no_password, &pw);
    BIO_free(bio);
    if (key == NULL && pw.asked) {
        ERR_clear_error();
        util_err(err, err_len,
                 "%s is encrypted with a pass phrase: stowbridge needs an "
                 "unencrypted key (protect it with file permissions or "
                 "systemd's LoadCredential=/LoadCredentialEncrypted=); "
                 "decrypt it with 'openssl pkey -in key.pem -out "
                 "plain.pem'",
                 key_name);
        return -ENOKEY;
    }
    if (key == NULL)
        return jwt_not_pem(key_pem, key_len, key_name, "private key",
                           "PRIVATE KEY", err, err_len);
    if (!EVP_PKEY_is_a(key, "RSA")) {
        util_err(err, err_len,
                 "%s holds a %s key, not an RSA key: PS256 and RS256 "
                 "assertions need RSA (Entra ID accepts only RSA "
                 "certificates); make one with 'openssl req -x509 "
                 "-newkey rsa:2048 ...'",
                 key_name,
                 EVP_PKEY_get0_type_name(key) != NULL
                     ? EVP_PKEY_get0_type_name(key)
                     : "non-RSA");
        EVP_PKEY_free(key);
        return -EKEYREJECTED;
    }
    if (EVP_PKEY_get_bits(key) < JWT_MIN_RSA_BITS) {
        util_err(err, err_len,
                 "%s holds a %d-bit RSA key: at least %d bits are needed "
                 "(RFC 7518 3.3)",
                 key_name, EVP_PKEY_get_bits(key), JWT_MIN_RSA_BITS);
        EVP_PKEY_free(key);
        return -EKEYREJECTED;
    }
    *ret_key = key;
    return 0;
}

static int64_t jwt_asn1_time(const ASN1_TIME *t)
{
    struct tm tm;

    memset(&tm, 0, sizeof(tm));
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

/* The certificate's digests: x5t, x5t#S256 and the portal thumbprint. */
static int jwt_thumbprints(struct jwt_credential *cred)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;

    if (X509_digest(cred->cert, EVP_sha1(), md, &md_len) != 1)
        return -EPROTO;
    for (unsigned i = 0; i < md_len && i < 20; i++)
        snprintf(cred->sha1_hex + 2 * i, 3, "%02X", md[i]);
    cred->x5t = cred__base64url(md, md_len);
    if (X509_digest(cred->cert, EVP_sha256(), md, &md_len) != 1)
        return -EPROTO;
    cred->x5t_s256 = cred__base64url(md, md_len);
    return cred->x5t != NULL && cred->x5t_s256 != NULL ? 0 : -ENOMEM;
}

int jwt_credential_from_pem(const char *cert_pem, size_t cert_len,
                            const char *cert_name, const char *key_pem,
                            size_t key_len, const char *key_name,
                            struct jwt_credential **ret_cred, char *err,
                            size_t err_len)
{
    struct jwt_credential *cred;
    EVP_PKEY *cert_key;
    BIO *bio;
    int r;

    cert_name = cert_name != NULL ? cert_name : "the certificate";
    key_name = key_name != NULL ? key_name : "the private key";
    if (cert_len > JWT_MAX_CERT_FILE) {
        util_err(err, err_len, "%s is larger than %d bytes", cert_name,
                 JWT_MAX_CERT_FILE);
        return -EFBIG;
    }
    cred = calloc(1, sizeof(*cred));
    if (cred == NULL)
        return -ENOMEM;
    bio = BIO_new_mem_buf(cert_pem, (int)cert_len);
    if (bio == NULL) {
        r = -ENOMEM;
        goto out_fail;
    }
    cred->cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (cred->cert == NULL) {
        r = jwt_not_pem(cert_pem, cert_len, cert_name, "certificate",
                        "CERTIFICATE", err, err_len);
        goto out_fail;
    }
    r = jwt_load_key(key_pem, key_len, key_name, &cred->key, err, err_len);
    if (r < 0)
        goto out_fail;
    cert_key = X509_get0_pubkey(cred->cert);
    if (cert_key == NULL || EVP_PKEY_eq(cert_key, cred->key) != 1) {
        ERR_clear_error();
        util_err(err, err_len,
                 "the private key in %s is not the key of the certificate "
                 "in %s: give the key the certificate was made for "
                 "(compare 'openssl x509 -noout -pubkey -in CERT' with "
                 "'openssl pkey -pubout -in KEY')",
                 key_name, cert_name);
        r = -EKEYREJECTED;
        goto out_fail;
    }
    r = jwt_thumbprints(cred);
    if (r < 0) {
        ERR_clear_error();
        util_err(err, err_len, "cannot compute the thumbprint of %s",
                 cert_name);
        goto out_fail;
    }
    cred->not_before = jwt_asn1_time(X509_get0_notBefore(cred->cert));
    cred->not_after = jwt_asn1_time(X509_get0_notAfter(cred->cert));
    /* PEM reading may leave notes of skipped blocks in the queue. */
    ERR_clear_error();
    *ret_cred = cred;
    return 0;
out_fail:
    jwt_credential_free(cred);
    return r;
}

int jwt_credential_from_files(const char *cert_path, const char *key_path,
                              struct jwt_credential **ret_cred, char *err,
                              size_t err_len)
{
    char *cert = NULL;
    char *key = NULL;
    size_t cert_len = 0;
    size_t key_len = 0;
    char cert_name[512];
    char key_name[512];
    int r;

    snprintf(cert_name, sizeof(cert_name), "the certificate file '%s'",
             cert_path);
    snprintf(key_name, sizeof(key_name), "the key file '%s'", key_path);
    r = cred__read_file(cert_path, JWT_MAX_CERT_FILE, &cert, &cert_len, err,
                        err_len);
    if (r < 0)
        return r;
    r = cred__read_file(key_path, JWT_MAX_KEY_FILE, &key, &key_len, err,
                        err_len);
    if (r == 0)
        r = jwt_credential_from_pem(cert, cert_len, cert_name, key, key_len,
                                    key_name, ret_cred, err, err_len);
    free(cert);
    cred__free_secret_n(key, key_len);
    return r;
}

void jwt_credential_validity(const struct jwt_credential *cred,
                             int64_t *ret_not_before, int64_t *ret_not_after)
{
    *ret_not_before = cred->not_before;
    *ret_not_after = cred->not_after;
}

static void jwt_format_time(int64_t t, char buf[32])
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (gmtime_r(&tt, &tm) == NULL ||
        strftime(buf, 32, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        snprintf(buf, 32, "@%lld", (long long)t);
}

enum jwt_validity
jwt_credential_check_validity(const struct jwt_credential *cred, int64_t now_s,
                              int64_t soon_s, char *buf, size_t len)
{
    char when[32];

    if (now_s < cred->not_before) {
        jwt_format_time(cred->not_before, when);
        util_err(buf, len,
                 "the client certificate is not valid before %s: check "
                 "this machine's clock (NTP), or wait",
                 when);
        return JWT_NOT_YET_VALID;
    }
    jwt_format_time(cred->not_after, when);
    if (now_s >= cred->not_after) {
        util_err(buf, len,
                 "the client certificate expired on %s (%lld days ago): "
                 "make a new one, upload it to the app registration "
                 "(Certificates & secrets) and reload stowbridge",
                 when, (long long)((now_s - cred->not_after) / 86400));
        return JWT_EXPIRED;
    }
    if (cred->not_after - now_s <= soon_s) {
        util_err(buf, len,
                 "the client certificate expires in %lld days, on %s: "
                 "upload its successor to the app registration "
                 "(Certificates & secrets), install it and reload "
                 "stowbridge (SIGHUP) before then",
                 (long long)((cred->not_after - now_s) / 86400), when);
        return JWT_EXPIRES_SOON;
    }
    util_err(buf, len, "the client certificate is valid until %s", when);
    return JWT_VALID;
}

void jwt_credential_describe(const struct jwt_credential *cred, char *buf,
                             size_t len)
{
    char subject[256] = "";
    char from[32];
    char until[32];
    BIO *bio = BIO_new(BIO_s_mem());

    if (bio != NULL) {
        int n;
        X509_NAME_print_ex(bio, X509_get_subject_name(cred->cert), 0,
                           XN_FLAG_RFC2253);
        n = BIO_read(bio, subject, (int)sizeof(subject) - 1);
        subject[n > 0 ? n : 0] = '\0';
        BIO_free(bio);
    }
    ERR_clear_error();
    jwt_format_time(cred->not_before, from);
    jwt_format_time(cred->not_after, until);
    util_err(buf, len,
             "certificate subject '%s', thumbprint (SHA-1) %s, valid from "
             "%s until %s",
             subject, cred->sha1_hex, from, until);
}

const char *jwt_credential_x5t_s256(const struct jwt_credential *cred)
{
    return cred->x5t_s256;
}

/* A random (version 4) UUID, RFC 9562 5.4, in lower-case hex. */
static int jwt_uuid(char out[37])
{
    unsigned char b[16];
    int r = util_random_bytes(b, sizeof(b));

    if (r < 0)
        return r;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10],
             b[11], b[12], b[13], b[14], b[15]);
    return 0;
}

/* base64url of the compact JSON of @root; NULL on OOM. */
static char *jwt_segment(const cJSON *root)
{
    char *json = cJSON_PrintUnformatted(root);
    char *seg;

    if (json == NULL)
        return NULL;
    seg = cred__base64url((const unsigned char *)json, strlen(json));
    free(json);
    return seg;
}

static char *jwt_header(const struct jwt_credential *cred, enum jwt_alg alg)
{
    cJSON *h = cJSON_CreateObject();
    char *seg = NULL;

    if (h == NULL)
        return NULL;
    if (cJSON_AddStringToObject(h, "alg", jwt_alg_name(alg)) != NULL &&
        cJSON_AddStringToObject(h, "typ", "JWT") != NULL &&
        (alg != JWT_ALG_RS256 ||
         cJSON_AddStringToObject(h, "x5t", cred->x5t) != NULL) &&
        cJSON_AddStringToObject(h, "x5t#S256", cred->x5t_s256) != NULL)
        seg = jwt_segment(h);
    cJSON_Delete(h);
    return seg;
}

static char *jwt_claims(const struct jwt_assertion_params *params,
                        const char *jti, int64_t now_s, unsigned lifetime_s)
{
    cJSON *c = cJSON_CreateObject();
    char *seg = NULL;

    if (c == NULL)
        return NULL;
    if (cJSON_AddStringToObject(c, "aud", params->audience) != NULL &&
        cJSON_AddStringToObject(c, "iss", params->client_id) != NULL &&
        cJSON_AddStringToObject(c, "sub", params->client_id) != NULL &&
        cJSON_AddStringToObject(c, "jti", jti) != NULL &&
        cJSON_AddNumberToObject(c, "nbf", (double)now_s) != NULL &&
        cJSON_AddNumberToObject(c, "iat", (double)now_s) != NULL &&
        cJSON_AddNumberToObject(c, "exp", (double)(now_s + lifetime_s)) != NULL)
        seg = jwt_segment(c);
    cJSON_Delete(c);
    return seg;
}

/* Signs @input with @alg into a new buffer (@ret_sig, @ret_len). */
static int jwt_sign_bytes(EVP_PKEY *key, enum jwt_alg alg, const char *input,
                          unsigned char **ret_sig, size_t *ret_len)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    int r = -EPROTO;

    if (md == NULL)
        return -ENOMEM;
    if (EVP_DigestSignInit(md, &pctx, EVP_sha256(), NULL, key) != 1)
        goto out;
    if (alg == JWT_ALG_PS256) {
        /* RFC 7518 3.5: salt as long as the hash; OpenSSL's default for
         * signing is the largest salt that fits, which conformant JOSE
         * verifiers (and RSA_PSS_SALTLEN_DIGEST) refuse. */
        if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
            EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) !=
                1 ||
            EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) != 1)
            goto out;
    } else if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1) {
        goto out;
    }
    if (EVP_DigestSign(md, NULL, &sig_len, (const unsigned char *)input,
                       strlen(input)) != 1)
        goto out;
    sig = malloc(sig_len);
    if (sig == NULL) {
        r = -ENOMEM;
        goto out;
    }
    if (EVP_DigestSign(md, sig, &sig_len, (const unsigned char *)input,
                       strlen(input)) != 1)
        goto out;
    *ret_sig = sig;
    *ret_len = sig_len;
    sig = NULL;
    r = 0;
out:
    free(sig);
    EVP_MD_CTX_free(md);
    return r;
}

int jwt_assertion_sign(const struct jwt_credential *cred,
                       const struct jwt_assertion_params *params, int64_t now_s,
                       char **ret_jwt, char *err, size_t err_len)
{
    unsigned lifetime_s =
        params->lifetime_s > 0 ? params->lifetime_s : JWT_ASSERTION_LIFETIME_S;
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    char *header = NULL;
    char *claims = NULL;
    char *input = NULL;
    char *sig_seg = NULL;
    char *jwt = NULL;
    char jti[37];
    int r;

    if (params->client_id == NULL || params->client_id[0] == '\0' ||
        params->audience == NULL || params->audience[0] == '\0') {
        util_err(err, err_len,
                 "a client assertion needs a client ID and "
                 "the token URL");
        return -EINVAL;
    }
    if (params->alg != JWT_ALG_PS256 && params->alg != JWT_ALG_RS256)
        return -EINVAL;
    if (now_s >= cred->not_after) {
        char when[32];
        jwt_format_time(cred->not_after, when);
        util_err(err, err_len,
                 "the client certificate expired on %s: the token endpoint "
                 "would refuse it; install a new certificate and key and "
                 "reload stowbridge",
                 when);
        return -EKEYEXPIRED;
    }
    r = jwt_uuid(jti);
    if (r < 0) {
        util_err(err, err_len, "getrandom() failed: %s", strerror(-r));
        return r;
    }
    header = jwt_header(cred, params->alg);
    claims = jwt_claims(params, jti, now_s, lifetime_s);
    if (header == NULL || claims == NULL) {
        r = -ENOMEM;
        goto out;
    }
    size_t input_len = strlen(header) + 1 + strlen(claims) + 1;
    input = malloc(input_len);
    if (input == NULL) {
        r = -ENOMEM;
        goto out;
    }
    snprintf(input, input_len, "%s.%s", header, claims);
    r = jwt_sign_bytes(cred->key, params->alg, input, &sig, &sig_len);
    if (r < 0) {
        util_err(err, err_len, "signing the client assertion failed: %s",
                 jwt_openssl_reason("OpenSSL error"));
        ERR_clear_error();
        goto out;
    }
    sig_seg = cred__base64url(sig, sig_len);
    size_t jwt_len =
        sig_seg != NULL ? strlen(input) + 1 + strlen(sig_seg) + 1 : 0;
    jwt = sig_seg != NULL ? malloc(jwt_len) : NULL;
    if (jwt == NULL) {
        r = -ENOMEM;
        goto out;
    }
    snprintf(jwt, jwt_len, "%s.%s", input, sig_seg);
    *ret_jwt = jwt;
    r = 0;
out:
    free(header);
    free(claims);
    free(input);
    free(sig);
    cred__free_secret(sig_seg);
    return r;
}
