/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_jwt_assertion - certificate credentials (jwt_assertion.h) against
 * keys and certificates made here with the openssl command: the header
 * and claims decoded and compared with what openssl itself says of the
 * certificate; the signature verified with OpenSSL with the PSS salt of
 * the digest length (RFC 7518 3.5), and a signature made with OpenSSL's
 * default salt shown to fail that same verification; RS256; the errors
 * (unreadable, not PEM, DER, not RSA, too short, encrypted, mismatch,
 * expired) and the validity reading for `check`; the assertion form.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "cred_test_util.h"
#include "tap.h"
#include "web/credential.h"
#include "web/jwt_assertion.h"

static char dir[512];
static char err[1024];

static const char *path(const char *name)
{
    static char buf[8][640];
    static int next;
    char *p = buf[next++ % 8];

    snprintf(p, sizeof(buf[0]), "%s/%s", dir, name);
    return p;
}

/* The colon-separated hex after '=' of `openssl x509 -fingerprint`, as
 * bytes, base64url-encoded; and as plain upper-case hex in @hex. */
static char *openssl_thumbprint(const char *cert, const char *digest, char *hex,
                                size_t hex_len)
{
    char out[640];
    unsigned char bytes[64];
    size_t n = 0;
    char *text;
    char *p;

    snprintf(out, sizeof(out), "%s.%s.txt", cert, digest);
    if (ctu_sh("openssl x509 -in '%s' -noout -fingerprint -%s > '%s'", cert,
               digest, out) != 0)
        return NULL;
    text = ctu_read(out, NULL);
    if (text == NULL || (p = strchr(text, '=')) == NULL) {
        free(text);
        return NULL;
    }
    for (p++; *p != '\0' && *p != '\n' && n < sizeof(bytes); p++) {
        if (*p == ':')
            continue;
        unsigned v;
        if (sscanf(p, "%2x", &v) != 1)
            break;
        bytes[n++] = (unsigned char)v;
        p++;
    }
    free(text);
    if (hex != NULL) {
        hex[0] = '\0';
        for (size_t i = 0; i < n && 2 * i + 2 < hex_len; i++)
            sprintf(hex + 2 * i, "%02X", bytes[i]);
    }
    return ctu_b64url_encode(bytes, n);
}

static int make_keys(void)
{
#define REQ                                                       \
    "openssl req -x509 -newkey %s -nodes -keyout '%s' -out '%s' " \
    "-days 30 -subj '/CN=%s' 2>/dev/null"
    int r = 0;

    r |= ctu_sh(REQ, "rsa:2048", path("key.pem"), path("cert.pem"),
                "stowbridge-test");
    r |= ctu_sh(REQ, "rsa:3072", path("key2.pem"), path("cert2.pem"), "other");
    r |= ctu_sh("openssl req -x509 -newkey ec -pkeyopt "
                "ec_paramgen_curve:P-256 -nodes -keyout '%s' -out '%s' "
                "-days 30 -subj /CN=ec 2>/dev/null",
                path("ec_key.pem"), path("ec_cert.pem"));
    r |= ctu_sh("openssl genpkey -algorithm RSA -pkeyopt "
                "rsa_keygen_bits:1024 -out '%s' 2>/dev/null",
                path("small.pem"));
    r |= ctu_sh("openssl pkey -in '%s' -aes256 -passout pass:secret "
                "-out '%s'",
                path("key.pem"), path("enc.pem"));
    r |= ctu_sh("openssl pkey -in '%s' -traditional -out '%s'", path("key.pem"),
                path("pkcs1.pem"));
    r |= ctu_sh("openssl x509 -in '%s' -outform DER -out '%s'",
                path("cert.pem"), path("cert.der"));
    r |= ctu_sh("cat '%s' '%s' > '%s'", path("cert.pem"), path("key.pem"),
                path("both.pem"));
    r |= ctu_sh("cat '%s' '%s' > '%s'", path("cert.pem"), path("cert2.pem"),
                path("chain.pem"));
    r |= ctu_write(path("text.txt"), "just some text\n", 0600);
    return r;
}

/* A copy of cert.pem that expired yesterday, signed with key.pem (the
 * openssl command of Debian 12 cannot back-date a certificate). */
static int make_expired(void)
{
    FILE *f = fopen(path("cert.pem"), "r");
    FILE *k = fopen(path("key.pem"), "r");
    X509 *x = f != NULL ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    EVP_PKEY *key = k != NULL ? PEM_read_PrivateKey(k, NULL, NULL, NULL) : NULL;
    FILE *out;
    int r = -1;

    if (f != NULL)
        fclose(f);
    if (k != NULL)
        fclose(k);
    if (x != NULL && key != NULL &&
        X509_gmtime_adj(X509_getm_notBefore(x), -2 * 86400) != NULL &&
        X509_gmtime_adj(X509_getm_notAfter(x), -86400) != NULL &&
        X509_sign(x, key, EVP_sha256()) > 0 &&
        (out = fopen(path("expired.pem"), "w")) != NULL) {
        r = PEM_write_X509(out, x) == 1 ? 0 : -1;
        fclose(out);
    }
    X509_free(x);
    EVP_PKEY_free(key);
    return r;
}

static EVP_PKEY *cert_public_key(const char *file)
{
    FILE *f = fopen(file, "r");
    X509 *x = f != NULL ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    EVP_PKEY *key = x != NULL ? X509_get_pubkey(x) : NULL;

    if (f != NULL)
        fclose(f);
    X509_free(x);
    return key;
}

static EVP_PKEY *private_key(const char *file)
{
    FILE *f = fopen(file, "r");
    EVP_PKEY *key = f != NULL ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;

    if (f != NULL)
        fclose(f);
    return key;
}

/* Verifies @sig over @input; @saltlen for PSS, or 0 for PKCS#1 v1.5. */
static bool verify(EVP_PKEY *pub, const char *input, const unsigned char *sig,
                   size_t sig_len, bool pss, int saltlen)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    bool ok = false;

    if (EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), NULL, pub) == 1) {
        if (pss) {
            EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
            EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, saltlen);
        } else {
            EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING);
        }
        ok = EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)input,
                              strlen(input)) == 1;
    }
    EVP_MD_CTX_free(md);
    ERR_clear_error();
    return ok;
}

/* Signs @input with PSS and OpenSSL's default salt (nothing set). */
static unsigned char *sign_default_salt(EVP_PKEY *key, const char *input,
                                        size_t *ret_len)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char *sig = NULL;
    size_t len = 0;

    if (EVP_DigestSignInit(md, &pctx, EVP_sha256(), NULL, key) == 1 &&
        EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
        EVP_DigestSign(md, NULL, &len, (const unsigned char *)input,
                       strlen(input)) == 1 &&
        (sig = malloc(len)) != NULL &&
        EVP_DigestSign(md, sig, &len, (const unsigned char *)input,
                       strlen(input)) != 1) {
        free(sig);
        sig = NULL;
    }
    EVP_MD_CTX_free(md);
    *ret_len = len;
    return sig;
}

struct parts {
    cJSON *header;
    cJSON *claims;
    char *input; /* header.claims */
    unsigned char *sig;
    size_t sig_len;
};

static bool split(const char *jwt, struct parts *p)
{
    const char *d1 = strchr(jwt, '.');
    const char *d2 = d1 != NULL ? strchr(d1 + 1, '.') : NULL;
    unsigned char *h;
    unsigned char *c;

    memset(p, 0, sizeof(*p));
    if (d2 == NULL || strchr(d2 + 1, '.') != NULL)
        return false;
    h = ctu_b64url_decode(jwt, (size_t)(d1 - jwt), NULL);
    c = ctu_b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), NULL);
    p->header = h != NULL ? cJSON_Parse((char *)h) : NULL;
    p->claims = c != NULL ? cJSON_Parse((char *)c) : NULL;
    free(h);
    free(c);
    p->input = strndup(jwt, (size_t)(d2 - jwt));
    p->sig = ctu_b64url_decode(d2 + 1, strlen(d2 + 1), &p->sig_len);
    return p->header != NULL && p->claims != NULL && p->sig != NULL;
}

static void parts_free(struct parts *p)
{
    cJSON_Delete(p->header);
    cJSON_Delete(p->claims);
    free(p->input);
    free(p->sig);
}

static const char *str(const cJSON *o, const char *name)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(o, name);

    return cJSON_IsString(item) ? item->valuestring : NULL;
}

static double num(const cJSON *o, const char *name)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(o, name);

    return cJSON_IsNumber(item) ? item->valuedouble : -1;
}

static bool is_uuid_v4(const char *s)
{
    if (s == NULL || strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash != (s[i] == '-'))
            return false;
        if (!dash && strchr("0123456789abcdef", s[i]) == NULL)
            return false;
    }
    return s[14] == '4' && strchr("89ab", s[19]) != NULL;
}

static void test_ps256(struct jwt_credential *cred, EVP_PKEY *pub,
                       EVP_PKEY *priv)
{
    const char *aud = "https://login.microsoftonline.com/"
                      "72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token";
    struct jwt_assertion_params params = {
        .alg = JWT_ALG_PS256,
        .client_id = "11111111-2222-3333-4444-555555555555",
        .audience = aud,
    };
    char *x5t_s256 = openssl_thumbprint(path("cert.pem"), "sha256", NULL, 0);
    int64_t now = 1764680000;
    struct parts p;
    char *jwt = NULL;
    char *jwt2 = NULL;

    CHECK(x5t_s256 != NULL);
    CHECK_MSG(jwt_assertion_sign(cred, &params, now, &jwt, err, sizeof(err)) ==
                  0,
              "%s", err);
    CHECK(jwt_assertion_sign(cred, &params, now, &jwt2, err, sizeof(err)) == 0);
    if (jwt == NULL || jwt2 == NULL || !split(jwt, &p)) {
        CHECK(!"PS256 assertion made and split");
        free(jwt);
        free(jwt2);
        free(x5t_s256);
        return;
    }
    /* RFC 7515: base64url, no padding. */
    CHECK(strpbrk(jwt, "=+/ \n") == NULL);
    /* Header: exactly alg, typ, x5t#S256 (no SHA-1 x5t in PS256). */
    CHECK(cJSON_GetArraySize(p.header) == 3);
    CHECK(str(p.header, "alg") && strcmp(str(p.header, "alg"), "PS256") == 0);
    CHECK(str(p.header, "typ") && strcmp(str(p.header, "typ"), "JWT") == 0);
    CHECK_MSG(str(p.header, "x5t#S256") && x5t_s256 &&
                  strcmp(str(p.header, "x5t#S256"), x5t_s256) == 0,
              "x5t#S256 %s, openssl says %s", str(p.header, "x5t#S256"),
              x5t_s256);
    CHECK(strcmp(jwt_credential_x5t_s256(cred), x5t_s256) == 0);
    /* Claims: aud, iss = sub = client ID, jti, nbf = iat = now, exp. */
    CHECK(cJSON_GetArraySize(p.claims) == 7);
    CHECK(str(p.claims, "aud") && strcmp(str(p.claims, "aud"), aud) == 0);
    CHECK(str(p.claims, "iss") &&
          strcmp(str(p.claims, "iss"), params.client_id) == 0);
    CHECK(str(p.claims, "sub") &&
          strcmp(str(p.claims, "sub"), params.client_id) == 0);
    CHECK(is_uuid_v4(str(p.claims, "jti")));
    CHECK(num(p.claims, "nbf") == (double)now);
    CHECK(num(p.claims, "iat") == (double)now);
    CHECK(num(p.claims, "exp") == (double)(now + 600));
    /* A new jti on every call. */
    CHECK(strcmp(jwt, jwt2) != 0);

    /* The signature: RSASSA-PSS, SHA-256, salt = digest length. */
    CHECK(p.sig_len == 256);
    CHECK(verify(pub, p.input, p.sig, p.sig_len, true, RSA_PSS_SALTLEN_DIGEST));
    CHECK(verify(pub, p.input, p.sig, p.sig_len, true, 32));
    CHECK(verify(pub, p.input, p.sig, p.sig_len, true, RSA_PSS_SALTLEN_AUTO));
    /* Not the largest salt (256 - 32 - 2 = 222 bytes), not PKCS#1. */
    CHECK(!verify(pub, p.input, p.sig, p.sig_len, true, 222));
    CHECK(!verify(pub, p.input, p.sig, p.sig_len, false, 0));

    /* The trap: OpenSSL's default PSS salt makes a valid signature that
     * a JOSE verifier (salt = digest length) refuses. */
    size_t bad_len = 0;
    unsigned char *bad = sign_default_salt(priv, p.input, &bad_len);
    CHECK(bad != NULL);
    if (bad != NULL) {
        CHECK(verify(pub, p.input, bad, bad_len, true, RSA_PSS_SALTLEN_AUTO));
        CHECK(
            !verify(pub, p.input, bad, bad_len, true, RSA_PSS_SALTLEN_DIGEST));
    }
    free(bad);
    parts_free(&p);
    explicit_bzero(jwt, strlen(jwt));
    free(jwt);
    free(jwt2);
    free(x5t_s256);
}

static void test_rs256(struct jwt_credential *cred, EVP_PKEY *pub)
{
    struct jwt_assertion_params params = {
        .alg = JWT_ALG_RS256,
        .client_id = "app \"quoted\" \\ id",
        .audience = "http://127.0.0.1:1/token",
        .lifetime_s = 300,
    };
    char *x5t = openssl_thumbprint(path("cert.pem"), "sha1", NULL, 0);
    char *x5t_s256 = openssl_thumbprint(path("cert.pem"), "sha256", NULL, 0);
    struct parts p;
    char *jwt = NULL;

    CHECK(jwt_assertion_sign(cred, &params, 1700000000, &jwt, err,
                             sizeof(err)) == 0);
    if (jwt == NULL || !split(jwt, &p)) {
        CHECK(!"RS256 assertion made and split");
        free(jwt);
        free(x5t);
        free(x5t_s256);
        return;
    }
    CHECK(cJSON_GetArraySize(p.header) == 4);
    CHECK(str(p.header, "alg") && strcmp(str(p.header, "alg"), "RS256") == 0);
    CHECK(str(p.header, "x5t") && x5t &&
          strcmp(str(p.header, "x5t"), x5t) == 0);
    CHECK(str(p.header, "x5t#S256") && x5t_s256 &&
          strcmp(str(p.header, "x5t#S256"), x5t_s256) == 0);
    /* JSON escaping of odd client IDs. */
    CHECK(str(p.claims, "iss") &&
          strcmp(str(p.claims, "iss"), params.client_id) == 0);
    CHECK(num(p.claims, "exp") == 1700000300.0);
    CHECK(verify(pub, p.input, p.sig, p.sig_len, false, 0));
    CHECK(!verify(pub, p.input, p.sig, p.sig_len, true, RSA_PSS_SALTLEN_AUTO));
    parts_free(&p);
    free(jwt);
    free(x5t);
    free(x5t_s256);
}

static int load(const char *cert, const char *key, struct jwt_credential **ret)
{
    err[0] = '\0';
    return jwt_credential_from_files(path(cert), path(key), ret, err,
                                     sizeof(err));
}

static void test_errors(void)
{
    struct jwt_credential *c = NULL;
    int r;

    r = load("missing.pem", "key.pem", &c);
    CHECK(r == -ENOENT && strstr(err, "missing.pem") != NULL);
    r = load("cert.pem", "missing-key.pem", &c);
    CHECK(r == -ENOENT && strstr(err, "missing-key.pem") != NULL);
    r = load("text.txt", "key.pem", &c);
    CHECK_MSG(r == -EBADMSG && strstr(err, "not PEM") != NULL, "%s", err);
    r = load("cert.der", "key.pem", &c);
    CHECK_MSG(r == -EBADMSG && strstr(err, "binary") != NULL &&
                  strstr(err, "pkcs12") != NULL,
              "%s", err);
    r = load("key.pem", "key.pem", &c);
    CHECK_MSG(r == -EBADMSG && strstr(err, "no certificate") != NULL, "%s",
              err);
    r = load("cert.pem", "cert.pem", &c);
    CHECK_MSG(r == -EBADMSG && strstr(err, "no private key") != NULL, "%s",
              err);
    r = load("ec_cert.pem", "ec_key.pem", &c);
    CHECK_MSG(r == -EKEYREJECTED && strstr(err, "not an RSA key") != NULL &&
                  strstr(err, "EC") != NULL,
              "%s", err);
    r = load("cert.pem", "small.pem", &c);
    CHECK_MSG(r == -EKEYREJECTED && strstr(err, "1024-bit") != NULL, "%s", err);
    r = load("cert.pem", "enc.pem", &c);
    CHECK_MSG(r == -ENOKEY && strstr(err, "encrypted") != NULL, "%s", err);
    r = load("cert.pem", "key2.pem", &c);
    CHECK_MSG(r == -EKEYREJECTED &&
                  strstr(err, "is not the key of the certificate") != NULL &&
                  strstr(err, "key2.pem") != NULL,
              "%s", err);
    CHECK(c == NULL);
    /* Nothing left in OpenSSL's error queue of this thread. */
    CHECK(ERR_peek_error() == 0);
}

static void test_forms_of_input(void)
{
    struct jwt_credential *c = NULL;
    char *cert;
    char *key;
    size_t cert_len;
    size_t key_len;

    CHECK_MSG(load("cert.pem", "pkcs1.pem", &c) == 0, "%s", err);
    jwt_credential_free(c);
    c = NULL;
    CHECK_MSG(load("both.pem", "both.pem", &c) == 0, "%s", err);
    jwt_credential_free(c);
    c = NULL;
    /* A chain: the first certificate is the client's. */
    CHECK_MSG(load("chain.pem", "key.pem", &c) == 0, "%s", err);
    jwt_credential_free(c);
    c = NULL;
    /* From memory, as a LoadCredential= file read by the caller. */
    cert = ctu_read(path("cert.pem"), &cert_len);
    key = ctu_read(path("key.pem"), &key_len);
    CHECK(cert != NULL && key != NULL);
    if (cert != NULL && key != NULL) {
        CHECK(jwt_credential_from_pem(cert, cert_len, "cert", key, key_len,
                                      "key", &c, err, sizeof(err)) == 0);
        jwt_credential_free(c);
        c = NULL;
        CHECK(jwt_credential_from_pem(cert, cert_len, "cert", key, 20, "key",
                                      &c, err, sizeof(err)) == -EBADMSG);
    }
    free(cert);
    free(key);
    jwt_credential_free(NULL);
}

static void test_validity(struct jwt_credential *cred)
{
    struct jwt_credential *old = NULL;
    struct jwt_assertion_params params = {
        .client_id = "c",
        .audience = "https://x/token",
    };
    int64_t nb;
    int64_t na;
    int64_t now = (int64_t)time(NULL);
    char buf[512];
    char hex[128];
    char *jwt = NULL;

    jwt_credential_validity(cred, &nb, &na);
    CHECK(nb <= now && nb > now - 3600);
    CHECK(na > now + 29 * 86400 && na <= now + 30 * 86400 + 3600);
    CHECK(jwt_credential_check_validity(cred, now, 7 * 86400, buf,
                                        sizeof(buf)) == JWT_VALID);
    CHECK(jwt_credential_check_validity(cred, now, 60 * 86400, buf,
                                        sizeof(buf)) == JWT_EXPIRES_SOON);
    snprintf(hex, sizeof(hex), "expires in %lld days",
             (long long)((na - now) / 86400));
    CHECK_MSG(strstr(buf, hex) != NULL, "%s", buf);
    CHECK(jwt_credential_check_validity(cred, nb - 600, 0, buf, sizeof(buf)) ==
          JWT_NOT_YET_VALID);
    CHECK(strstr(buf, "clock") != NULL);

    char *x5t = openssl_thumbprint(path("cert.pem"), "sha1", hex, sizeof(hex));
    CHECK(x5t != NULL);
    free(x5t);
    jwt_credential_describe(cred, buf, sizeof(buf));
    CHECK_MSG(strstr(buf, "CN=stowbridge-test") != NULL &&
                  strstr(buf, hex) != NULL,
              "%s vs %s", buf, hex);

    /* An expired certificate loads (check can report it), never signs. */
    CHECK(make_expired() == 0);
    CHECK_MSG(load("expired.pem", "key.pem", &old) == 0, "%s", err);
    if (old != NULL) {
        CHECK(jwt_credential_check_validity(old, now, 0, buf, sizeof(buf)) ==
              JWT_EXPIRED);
        CHECK(strstr(buf, "expired on") != NULL);
        CHECK(jwt_assertion_sign(old, &params, now, &jwt, err, sizeof(err)) ==
              -EKEYEXPIRED);
        CHECK(jwt == NULL && strstr(err, "expired") != NULL);
    }
    jwt_credential_free(old);
    params.client_id = "";
    CHECK(jwt_assertion_sign(cred, &params, now, &jwt, err, sizeof(err)) ==
          -EINVAL);
}

static void test_alg_names(void)
{
    enum jwt_alg alg = JWT_ALG_RS256;

    CHECK(jwt_alg_parse("PS256", &alg) == 0 && alg == JWT_ALG_PS256);
    CHECK(jwt_alg_parse("RS256", &alg) == 0 && alg == JWT_ALG_RS256);
    CHECK(jwt_alg_parse("ps256", &alg) == -EINVAL);
    CHECK(jwt_alg_parse("ES256", &alg) == -EINVAL);
    CHECK(jwt_alg_parse(NULL, &alg) == -EINVAL);
    CHECK(strcmp(jwt_alg_name(JWT_ALG_PS256), "PS256") == 0);
    CHECK(strcmp(jwt_alg_name(JWT_ALG_RS256), "RS256") == 0);
}

static void test_form(void)
{
    struct cred_assertion_form f = {
        .client_id = "id&1",
        .assertion = "aa.bb.c_-",
        .scope = "https://dicom.healthcareapis.azure.com/.default",
    };
    char *body = NULL;

    CHECK(cred_assertion_form_build(&f, &body) == 0);
    CHECK_MSG(body != NULL &&
                  strcmp(body,
                         "grant_type=client_credentials&client_id=id%261"
                         "&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth"
                         "%3Aclient-assertion-type%3Ajwt-bearer"
                         "&client_assertion=aa.bb.c_-&scope=https%3A%2F%2F"
                         "dicom.healthcareapis.azure.com%2F.default") == 0,
              "%s", body);
    free(body);
    body = NULL;
    f.scope = NULL;
    f.resource = "https://dicom.healthcareapis.azure.com";
    CHECK(cred_assertion_form_build(&f, &body) == 0);
    CHECK(body != NULL && strstr(body, "scope=") == NULL &&
          strstr(body, "&resource=https%3A%2F%2Fdicom.") != NULL);
    free(body);
    f.assertion = "";
    CHECK(cred_assertion_form_build(&f, &body) == -EINVAL);
}

int main(void)
{
    struct jwt_credential *cred = NULL;
    EVP_PKEY *pub;
    EVP_PKEY *priv;

    if (ctu_tmpdir(dir, sizeof(dir)) < 0 || make_keys() != 0) {
        fprintf(stderr, "cannot make test keys in %s\n", dir);
        return 1;
    }
    CHECK_MSG(load("cert.pem", "key.pem", &cred) == 0, "%s", err);
    pub = cert_public_key(path("cert.pem"));
    priv = private_key(path("key.pem"));
    CHECK(pub != NULL && priv != NULL);
    if (cred != NULL && pub != NULL && priv != NULL) {
        test_ps256(cred, pub, priv);
        test_rs256(cred, pub);
        test_validity(cred);
    }
    test_errors();
    test_forms_of_input();
    test_alg_names();
    test_form();
    jwt_credential_free(cred);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(priv);
    ctu_rmtree(dir);
    return tap_done();
}
