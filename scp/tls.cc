/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tls - see tls.h.
 *
 * The material: an SSL_CTX made by DCMTK's DcmTLSTransportLayer (acceptor;
 * it sets ECDH, the server's cipher preference and no session cache),
 * with the profile applied by setTLSProfile() + activateCipherSuites()
 * as DCMTK 3.6.7 defines it, then through its native handle: the
 * certificate chain, the key (with its password), the CAs and CRL, peer
 * verification, the security level, and no TLS 1.3 session tickets (no
 * resumption, and nothing written after the handshake).
 *
 * The peer checks after the handshake (OpenSSL's level alone lets an
 * RSA-1024 client certificate through DCMTK's setup, measured): every
 * certificate of the verified chain needs an RSA/DSA/DH key of at least
 * 2048 bits or an EC key of at least 224, and every one but the trust
 * anchor a signature not made with SHA-1 or MD5; unless the security
 * level was lowered below 2.
 */
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmtls/tlslayer.h"

#include "base/util.h"
#include "scp.h"

/* The longest password file we read. */
#define TLS_PASSWORD_MAX 1024
/* The smallest peer keys accepted at security level 2 and above. */
#define TLS_MIN_RSA_BITS 2048
#define TLS_MIN_EC_BITS 224

namespace {

struct tls_material {
    DcmTLSTransportLayer *layer = nullptr; /* owns the SSL_CTX */
    SSL_CTX *ctx = nullptr;
    std::string sha256_display;
    std::string subject;
    ~tls_material() { delete layer; }
};

struct tls_config {
    std::string certificate_file;
    std::string private_key_file;
    std::string password_file;
    std::string ca_file;
    std::string crl_file;
    enum scp_tls_client_cert client_certificate;
    enum scp_tls_profile profile;
    unsigned security_level;
};

/* The oldest OpenSSL error queued, as text, and the queue cleared. */
std::string ssl_error_text()
{
    unsigned long e = ERR_get_error();
    char buf[256];

    if (e == 0)
        return "unknown error";
    ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    const char *reason = ERR_reason_error_string(e);
    return reason != NULL ? std::string(reason) : std::string(buf);
}

/* A readable regular file; for a key, not readable by others. */
int check_file(const char *what, const std::string &path, bool secret,
               char *err, size_t err_len)
{
    struct stat st;

    if (stat(path.c_str(), &st) < 0) {
        int e = errno;
        util_err(err, err_len, "%s '%s': %s", what, path.c_str(), strerror(e));
        return -e;
    }
    if (!S_ISREG(st.st_mode)) {
        util_err(err, err_len, "%s '%s': not a regular file", what,
                 path.c_str());
        return -EINVAL;
    }
    if (secret && (st.st_mode & 0007) != 0) {
        util_err(err, err_len,
                 "%s '%s' is readable by others (mode %04o); chmod 0600 or "
                 "0640 it",
                 what, path.c_str(), (unsigned)(st.st_mode & 07777));
        return -EPERM;
    }
    if (access(path.c_str(), R_OK) < 0) {
        int e = errno;
        util_err(err, err_len, "%s '%s': %s", what, path.c_str(), strerror(e));
        return -e;
    }
    return 0;
}

/* Reads the first line of the password file into @ret. */
int read_password(const std::string &path, std::string *ret, char *err,
                  size_t err_len)
{
    char buf[TLS_PASSWORD_MAX + 1];
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    size_t len = 0;

    if (fd < 0) {
        int e = errno;
        util_err(err, err_len, "dicom.tls.private_key_password_file '%s': %s",
                 path.c_str(), strerror(e));
        return -e;
    }
    while (len < sizeof(buf)) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    (void)close(fd);
    if (len > TLS_PASSWORD_MAX) {
        explicit_bzero(buf, sizeof(buf));
        util_err(err, err_len,
                 "dicom.tls.private_key_password_file '%s': longer than %d "
                 "bytes",
                 path.c_str(), TLS_PASSWORD_MAX);
        return -EINVAL;
    }
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    ret->assign(buf, len);
    explicit_bzero(buf, sizeof(buf));
    return 0;
}

int password_cb(char *buf, int size, int rwflag, void *userdata)
{
    const std::string *pw = (const std::string *)userdata;

    (void)rwflag;
    if (pw == NULL || (int)pw->size() >= size)
        return -1;
    memcpy(buf, pw->data(), pw->size());
    return (int)pw->size();
}

void hex_fingerprint(X509 *x, char *hex, size_t hex_len, char *display,
                     size_t display_len)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    size_t h = 0;
    size_t d = 0;

    if (hex_len > 0)
        hex[0] = '\0';
    if (display_len > 0)
        display[0] = '\0';
    if (X509_digest(x, EVP_sha256(), md, &n) != 1)
        return;
    for (unsigned i = 0; i < n; i++) {
        if (h + 3 <= hex_len)
            h += (size_t)snprintf(hex + h, hex_len - h, "%02x", md[i]);
        if (d + 4 <= display_len)
            d += (size_t)snprintf(display + d, display_len - d, "%s%02X",
                                  i > 0 ? ":" : "", md[i]);
    }
}

void one_line_subject(X509 *x, char *buf, size_t len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL;

    if (len > 0)
        buf[0] = '\0';
    if (bio == NULL)
        return;
    if (X509_NAME_print_ex(bio, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) >=
        0) {
        long n = BIO_get_mem_data(bio, &data);
        if (n > 0 && data != NULL)
            (void)snprintf(buf, len, "%.*s", (int)n, data);
    }
    BIO_free(bio);
}

void add_name(struct scp_tls_identity *id, const unsigned char *data, int len)
{
    if (len <= 0 || len > SCP_TLS_NAME_MAX ||
        id->name_count >= SCP_TLS_NAMES_MAX ||
        memchr(data, '\0', (size_t)len) != NULL)
        return;
    memcpy(id->names[id->name_count], data, (size_t)len);
    id->names[id->name_count][len] = '\0';
    id->name_count++;
}

void identity_of(X509 *x, struct scp_tls_identity *id)
{
    X509_NAME *name = X509_get_subject_name(x);
    int i = -1;

    memset(id, 0, sizeof(*id));
    id->present = true;
    hex_fingerprint(x, id->sha256, sizeof(id->sha256), id->sha256_display,
                    sizeof(id->sha256_display));
    one_line_subject(x, id->subject, sizeof(id->subject));
    while ((i = X509_NAME_get_index_by_NID(name, NID_commonName, i)) >= 0) {
        ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
        unsigned char *utf8 = NULL;
        int n = ASN1_STRING_to_UTF8(&utf8, s);
        if (n > 0)
            add_name(id, utf8, n);
        OPENSSL_free(utf8);
    }
    GENERAL_NAMES *sans =
        (GENERAL_NAMES *)X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int k = 0; sans != NULL && k < sk_GENERAL_NAME_num(sans); k++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, k);
        if (g->type == GEN_DNS || g->type == GEN_URI) {
            ASN1_IA5STRING *s = g->type == GEN_DNS
                                    ? g->d.dNSName
                                    : g->d.uniformResourceIdentifier;
            add_name(id, ASN1_STRING_get0_data(s), ASN1_STRING_length(s));
        }
    }
    GENERAL_NAMES_free(sans);
}

/* Why the key or signature of @x is too weak, or NULL. */
const char *weak_certificate(X509 *x, bool check_signature, char *buf,
                             size_t len)
{
    EVP_PKEY *key = X509_get0_pubkey(x);

    if (key == NULL)
        return "certificate without a usable public key";
    int bits = EVP_PKEY_get_bits(key);
    int type = EVP_PKEY_get_base_id(key);
    if ((type == EVP_PKEY_RSA || type == EVP_PKEY_RSA_PSS ||
         type == EVP_PKEY_DSA || type == EVP_PKEY_DH) &&
        bits < TLS_MIN_RSA_BITS) {
        snprintf(buf, len, "%d-bit %s key, less than %d bits", bits,
                 type == EVP_PKEY_DSA  ? "DSA"
                 : type == EVP_PKEY_DH ? "DH"
                                       : "RSA",
                 TLS_MIN_RSA_BITS);
        return buf;
    }
    if (type == EVP_PKEY_EC && bits < TLS_MIN_EC_BITS) {
        snprintf(buf, len, "%d-bit EC key, less than %d bits", bits,
                 TLS_MIN_EC_BITS);
        return buf;
    }
    if (check_signature) {
        int md = NID_undef;
        int pk = NID_undef;
        if (OBJ_find_sigid_algs(X509_get_signature_nid(x), &md, &pk) == 1 &&
            (md == NID_sha1 || md == NID_md5 || md == NID_md5_sha1)) {
            snprintf(buf, len, "certificate signed with %s", OBJ_nid2sn(md));
            return buf;
        }
    }
    return NULL;
}

int build_material(const tls_config &c, std::shared_ptr<tls_material> *ret,
                   char *err, size_t err_len)
{
    std::string password;
    int r;

    r = check_file("dicom.tls.certificate_file", c.certificate_file, false, err,
                   err_len);
    if (r == 0)
        r = check_file("dicom.tls.private_key_file", c.private_key_file, true,
                       err, err_len);
    if (r == 0 && !c.password_file.empty())
        r = check_file("dicom.tls.private_key_password_file", c.password_file,
                       true, err, err_len);
    if (r == 0 && !c.ca_file.empty())
        r = check_file("dicom.tls.ca_file", c.ca_file, false, err, err_len);
    if (r == 0 && !c.crl_file.empty())
        r = check_file("dicom.tls.crl_file", c.crl_file, false, err, err_len);
    if (r < 0)
        return r;
    if (!c.password_file.empty()) {
        r = read_password(c.password_file, &password, err, err_len);
        if (r < 0)
            return r;
    }

    std::shared_ptr<tls_material> m = std::make_shared<tls_material>();
    ERR_clear_error();
    m->layer =
        new (std::nothrow) DcmTLSTransportLayer(NET_ACCEPTOR, NULL, OFFalse);
    if (m->layer == NULL || m->layer->getNativeHandle() == NULL) {
        explicit_bzero(&password[0], password.size());
        util_err(err, err_len, "cannot create the TLS context: %s",
                 ssl_error_text().c_str());
        return -ENOMEM;
    }
    SSL_CTX *ctx = m->layer->getNativeHandle();
    m->ctx = ctx;

    DcmTLSSecurityProfile profile =
        c.profile == SCP_TLS_BCP195            ? TSP_Profile_BCP195
        : c.profile == SCP_TLS_BCP195_EXTENDED ? TSP_Profile_BCP195_Extended
                                               : TSP_Profile_BCP195_ND;
    OFCondition cond = m->layer->setTLSProfile(profile);
    if (cond.good())
        cond = m->layer->activateCipherSuites();
    if (cond.bad()) {
        explicit_bzero(&password[0], password.size());
        util_err(err, err_len, "dicom.tls.profile: %s", cond.text());
        return -EINVAL;
    }
    SSL_CTX_set_security_level(ctx, (int)c.security_level);
    SSL_CTX_set_num_tickets(ctx, 0);

    if (SSL_CTX_use_certificate_chain_file(ctx, c.certificate_file.c_str()) !=
        1) {
        explicit_bzero(&password[0], password.size());
        util_err(err, err_len, "dicom.tls.certificate_file '%s': %s",
                 c.certificate_file.c_str(), ssl_error_text().c_str());
        return -EINVAL;
    }
    SSL_CTX_set_default_passwd_cb(ctx, password_cb);
    SSL_CTX_set_default_passwd_cb_userdata(ctx, &password);
    int ok = SSL_CTX_use_PrivateKey_file(ctx, c.private_key_file.c_str(),
                                         SSL_FILETYPE_PEM);
    SSL_CTX_set_default_passwd_cb(ctx, NULL);
    SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
    explicit_bzero(&password[0], password.size());
    if (ok != 1 &&
        ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
        ERR_clear_error();
        util_err(err, err_len,
                 "dicom.tls.private_key_file '%s' does not match "
                 "dicom.tls.certificate_file '%s'",
                 c.private_key_file.c_str(), c.certificate_file.c_str());
        return -EINVAL;
    }
    if (ok != 1) {
        util_err(err, err_len, "dicom.tls.private_key_file '%s': %s%s",
                 c.private_key_file.c_str(), ssl_error_text().c_str(),
                 c.password_file.empty() ? "" : " (check the password file)");
        return -EINVAL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        util_err(err, err_len,
                 "dicom.tls.private_key_file '%s' does not match "
                 "dicom.tls.certificate_file '%s': %s",
                 c.private_key_file.c_str(), c.certificate_file.c_str(),
                 ssl_error_text().c_str());
        return -EINVAL;
    }
    X509 *own = SSL_CTX_get0_certificate(ctx);
    if (own == NULL) {
        util_err(err, err_len,
                 "dicom.tls.certificate_file '%s': no "
                 "certificate",
                 c.certificate_file.c_str());
        return -EINVAL;
    }
    if (X509_cmp_current_time(X509_get0_notAfter(own)) <= 0) {
        util_err(err, err_len, "dicom.tls.certificate_file '%s': expired",
                 c.certificate_file.c_str());
        return -EINVAL;
    }
    {
        struct scp_tls_identity id;
        identity_of(own, &id);
        m->sha256_display = id.sha256_display;
        m->subject = id.subject;
    }

    if (!c.ca_file.empty()) {
        if (SSL_CTX_load_verify_locations(ctx, c.ca_file.c_str(), NULL) != 1) {
            util_err(err, err_len, "dicom.tls.ca_file '%s': %s",
                     c.ca_file.c_str(), ssl_error_text().c_str());
            return -EINVAL;
        }
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(c.ca_file.c_str());
        if (names != NULL)
            SSL_CTX_set_client_CA_list(ctx, names);
        ERR_clear_error();
    }
    if (!c.crl_file.empty()) {
        X509_STORE *store = SSL_CTX_get_cert_store(ctx);
        FILE *f = fopen(c.crl_file.c_str(), "re");
        int added = 0;
        X509_CRL *crl;

        if (f == NULL) {
            int e = errno;
            util_err(err, err_len, "dicom.tls.crl_file '%s': %s",
                     c.crl_file.c_str(), strerror(e));
            return -e;
        }
        while ((crl = PEM_read_X509_CRL(f, NULL, NULL, NULL)) != NULL) {
            added += X509_STORE_add_crl(store, crl) == 1;
            X509_CRL_free(crl);
        }
        (void)fclose(f);
        ERR_clear_error();
        if (added == 0) {
            util_err(err, err_len, "dicom.tls.crl_file '%s': no PEM CRL in it",
                     c.crl_file.c_str());
            return -EINVAL;
        }
        (void)X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
    }
    int mode = SSL_VERIFY_NONE;
    if (c.client_certificate == SCP_TLS_CLIENT_REQUIRED)
        mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    else if (c.client_certificate == SCP_TLS_CLIENT_OPTIONAL)
        mode = SSL_VERIFY_PEER;
    SSL_CTX_set_verify(ctx, mode, NULL);
    *ret = m;
    return 0;
}

} // namespace

struct scp_tls {
    tls_config config;
    std::mutex lock; /* guards current */
    std::shared_ptr<tls_material> current;
};

struct scp_tls_session {
    std::shared_ptr<tls_material> material; /* kept for the session */
    SSL *ssl = nullptr;
    int fd = -1;
    bool handshake_done = false;
    bool check_peer = true;
    std::vector<unsigned char> rq; /* the A-ASSOCIATE-RQ */
    size_t rq_want = 6;
    size_t rq_pos = 0; /* handed to DCMTK so far */
    bool rq_done = false;
    struct scp_tls_identity peer;
};

extern "C" int scp__tls_identity_from_file(const char *path,
                                           struct scp_tls_identity *ret_id,
                                           char *err, size_t err_len)
{
    FILE *f = fopen(path, "re");
    X509 *x;

    if (f == NULL) {
        int e = errno;
        util_err(err, err_len, "cannot open '%s': %s", path, strerror(e));
        return -e;
    }
    x = PEM_read_X509(f, NULL, NULL, NULL);
    if (x == NULL) {
        rewind(f);
        ERR_clear_error();
        x = d2i_X509_fp(f, NULL);
    }
    (void)fclose(f);
    if (x == NULL) {
        util_err(err, err_len, "'%s': no PEM or DER certificate: %s", path,
                 ssl_error_text().c_str());
        return -EINVAL;
    }
    identity_of(x, ret_id);
    X509_free(x);
    return 0;
}

extern "C" const char *scp__tls_rule_refusal(const struct scp_caller_rule *rule,
                                             bool tls,
                                             const struct scp_tls_identity *id,
                                             char *buf, size_t buf_len)
{
    bool bound =
        rule->certificate_sha256_count > 0 || rule->certificate_subject != NULL;

    if (!tls && rule->tls_only)
        return "tls_only caller on the plain port";
    if (!bound)
        return NULL;
    if (!tls)
        return "caller bound to a certificate on the plain port";
    if (id == NULL || !id->present)
        return "caller bound to a certificate sent none";
    if (rule->certificate_sha256_count > 0) {
        bool found = false;
        for (size_t i = 0; i < rule->certificate_sha256_count && !found; i++)
            found = strcmp(rule->certificate_sha256[i], id->sha256) == 0;
        if (!found)
            return "client certificate fingerprint not in its "
                   "certificate_sha256";
    }
    if (rule->certificate_subject != NULL) {
        bool found = false;
        for (size_t i = 0; i < id->name_count && !found; i++)
            found = strcmp(rule->certificate_subject, id->names[i]) == 0;
        if (!found) {
            snprintf(buf, buf_len, "%s",
                     "client certificate has no CN or DNS/URI name equal to "
                     "its certificate_subject");
            return buf;
        }
    }
    return NULL;
}

extern "C" int scp__tls_new(const struct scp_tls_params *params,
                            struct scp_tls **ret_tls, char *err, size_t err_len)
{
    struct scp_tls *tls = new (std::nothrow) scp_tls();

    if (tls == NULL)
        return -ENOMEM;
    try {
        tls->config.certificate_file =
            params->certificate_file ? params->certificate_file : "";
        tls->config.private_key_file =
            params->private_key_file ? params->private_key_file : "";
        tls->config.password_file = params->private_key_password_file
                                        ? params->private_key_password_file
                                        : "";
        tls->config.ca_file = params->ca_file ? params->ca_file : "";
        tls->config.crl_file = params->crl_file ? params->crl_file : "";
        tls->config.client_certificate = params->client_certificate;
        tls->config.profile = params->profile;
        tls->config.security_level = params->security_level;
        if (tls->config.ca_file.empty() &&
            params->client_certificate != SCP_TLS_CLIENT_NONE) {
            util_err(err, err_len,
                     "dicom.tls.ca_file is needed to verify client "
                     "certificates (or set dicom.tls.client_certificate to "
                     "\"none\")");
            delete tls;
            return -EINVAL;
        }
        int r = build_material(tls->config, &tls->current, err, err_len);
        if (r < 0) {
            delete tls;
            return r;
        }
    } catch (...) {
        delete tls;
        util_err(err, err_len, "out of memory");
        return -ENOMEM;
    }
    *ret_tls = tls;
    return 0;
}

extern "C" void scp__tls_free(struct scp_tls *tls)
{
    delete tls;
}

extern "C" int scp__tls_reload(struct scp_tls *tls, char *err, size_t err_len)
{
    std::shared_ptr<tls_material> fresh;

    try {
        int r = build_material(tls->config, &fresh, err, err_len);
        if (r < 0)
            return r;
        std::lock_guard<std::mutex> guard(tls->lock);
        tls->current.swap(fresh);
    } catch (...) {
        util_err(err, err_len, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

extern "C" void scp__tls_server_identity(struct scp_tls *tls, char *sha256,
                                         size_t sha256_len, char *subject,
                                         size_t subject_len)
{
    std::lock_guard<std::mutex> guard(tls->lock);
    snprintf(sha256, sha256_len, "%s", tls->current->sha256_display.c_str());
    snprintf(subject, subject_len, "%s", tls->current->subject.c_str());
}

extern "C" struct scp_tls_session *scp__tls_session_new(struct scp_tls *tls,
                                                        int fd)
{
    struct scp_tls_session *s = new (std::nothrow) scp_tls_session();

    if (s == NULL)
        return NULL;
    {
        std::lock_guard<std::mutex> guard(tls->lock);
        s->material = tls->current;
    }
    s->check_peer = tls->config.security_level >= 2;
    s->fd = fd;
    s->ssl = SSL_new(s->material->ctx);
    if (s->ssl == NULL || SSL_set_fd(s->ssl, fd) != 1) {
        scp__tls_session_free(s);
        return NULL;
    }
    SSL_set_accept_state(s->ssl);
    memset(&s->peer, 0, sizeof(s->peer));
    return s;
}

/* The checks of the peer after its handshake; NULL or the reason. */
static const char *peer_refusal(struct scp_tls_session *s, char *buf,
                                size_t len)
{
    X509 *x = SSL_get0_peer_certificate(s->ssl);

    if (x == NULL)
        return NULL;
    identity_of(x, &s->peer);
    if (!s->check_peer)
        return NULL;
    STACK_OF(X509) *chain = SSL_get0_verified_chain(s->ssl);
    if (chain == NULL || sk_X509_num(chain) == 0)
        return weak_certificate(x, true, buf, len);
    int n = sk_X509_num(chain);
    for (int i = 0; i < n; i++) {
        const char *why = weak_certificate(sk_X509_value(chain, i),
                                           i < n - 1 || n == 1, buf, len);
        if (why != NULL)
            return why;
    }
    return NULL;
}

/* The text of a failed handshake, with the verification result. */
static void handshake_failure(struct scp_tls_session *s, int ret, char *why,
                              size_t why_len)
{
    int e = SSL_get_error(s->ssl, ret);
    long verify = SSL_get_verify_result(s->ssl);
    std::string text = e == SSL_ERROR_SSL ? ssl_error_text()
                       : e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN
                           ? std::string("connection closed by the peer")
                           : std::string("TLS error");
    ERR_clear_error();
    if (verify != X509_V_OK)
        snprintf(why, why_len, "TLS handshake failed: %s (certificate: %s)",
                 text.c_str(), X509_verify_cert_error_string(verify));
    else
        snprintf(why, why_len, "TLS handshake failed: %s", text.c_str());
}

extern "C" int scp__tls_session_step(struct scp_tls_session *s, size_t max_rq,
                                     char *why, size_t why_len)
{
    if (!s->handshake_done) {
        ERR_clear_error();
        int r = SSL_do_handshake(s->ssl);
        if (r != 1) {
            int e = SSL_get_error(s->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return 0;
            handshake_failure(s, r, why, why_len);
            return -1;
        }
        s->handshake_done = true;
        char buf[128];
        const char *weak = peer_refusal(s, buf, sizeof(buf));
        if (weak != NULL) {
            snprintf(why, why_len, "client certificate refused: %s", weak);
            return -1;
        }
    }
    while (!s->rq_done) {
        if (s->rq.size() < s->rq_want) {
            size_t old = s->rq.size();
            s->rq.resize(s->rq_want);
            ERR_clear_error();
            int n =
                SSL_read(s->ssl, s->rq.data() + old, (int)(s->rq_want - old));
            if (n <= 0) {
                s->rq.resize(old);
                int e = SSL_get_error(s->ssl, n);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                    return 0;
                snprintf(why, why_len, "%s",
                         old == 0 ? "closed by the peer before an association "
                                    "request"
                                  : "closed by the peer in the middle of its "
                                    "A-ASSOCIATE-RQ");
                ERR_clear_error();
                return -1;
            }
            s->rq.resize(old + (size_t)n);
            continue;
        }
        if (s->rq_want == 6) {
            const unsigned char *h = s->rq.data();
            size_t len = ((size_t)h[2] << 24) | ((size_t)h[3] << 16) |
                         ((size_t)h[4] << 8) | h[5];
            if (h[0] != 0x01) {
                snprintf(why, why_len,
                         "not an A-ASSOCIATE-RQ (PDU type 0x%02x)", h[0]);
                return -1;
            }
            if (len > max_rq) {
                snprintf(why, why_len,
                         "A-ASSOCIATE-RQ of %zu bytes, more than %zu", len,
                         max_rq);
                return -1;
            }
            s->rq_want = 6 + len;
            if (len > 0)
                continue;
        }
        s->rq_done = true;
    }
    return 1;
}

extern "C" bool scp__tls_session_ready(const struct scp_tls_session *s)
{
    return s->handshake_done;
}

extern "C" const unsigned char *
scp__tls_request(const struct scp_tls_session *s, size_t *ret_len)
{
    *ret_len = s->rq.size();
    return s->rq.data();
}

extern "C" const struct scp_tls_identity *
scp__tls_peer(const struct scp_tls_session *s)
{
    return &s->peer;
}

extern "C" void scp__tls_describe(const struct scp_tls_session *s, char *buf,
                                  size_t len)
{
    snprintf(buf, len, "%s %s", SSL_get_version(s->ssl),
             SSL_get_cipher_name(s->ssl));
}

extern "C" ssize_t scp__tls_read(struct scp_tls_session *s, void *buf,
                                 size_t len)
{
    if (s->rq_pos < s->rq.size()) {
        size_t n = s->rq.size() - s->rq_pos;
        if (n > len)
            n = len;
        memcpy(buf, s->rq.data() + s->rq_pos, n);
        s->rq_pos += n;
        if (s->rq_pos == s->rq.size()) {
            std::vector<unsigned char>().swap(s->rq);
            s->rq_pos = 0;
        }
        return (ssize_t)n;
    }
    for (;;) {
        ERR_clear_error();
        int n = SSL_read(s->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
        if (n > 0)
            return n;
        int e = SSL_get_error(s->ssl, n);
        if (e == SSL_ERROR_ZERO_RETURN)
            return 0;
        if (e == SSL_ERROR_SYSCALL && errno == EINTR)
            continue;
        ERR_clear_error();
        if (e == SSL_ERROR_SYSCALL && errno != 0)
            return -1;
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            errno = EAGAIN; /* a socket timeout (SO_RCVTIMEO) */
        else if (e == SSL_ERROR_SYSCALL)
            return 0;
        else
            errno = EPROTO;
        return -1;
    }
}

extern "C" ssize_t scp__tls_write(struct scp_tls_session *s, const void *buf,
                                  size_t len)
{
    size_t done = 0;

    while (done < len) {
        size_t chunk = len - done > INT32_MAX ? INT32_MAX : len - done;
        ERR_clear_error();
        int n =
            SSL_write(s->ssl, (const unsigned char *)buf + done, (int)chunk);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        int e = SSL_get_error(s->ssl, n);
        if (e == SSL_ERROR_SYSCALL && errno == EINTR)
            continue;
        ERR_clear_error();
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            errno = EAGAIN;
        else if (!(e == SSL_ERROR_SYSCALL && errno != 0))
            errno = EPIPE;
        return -1;
    }
    return (ssize_t)len;
}

extern "C" bool scp__tls_buffered(const struct scp_tls_session *s)
{
    return s->rq_pos < s->rq.size() || SSL_pending(s->ssl) > 0;
}

extern "C" void scp__tls_session_free(struct scp_tls_session *s)
{
    if (s == NULL)
        return;
    if (s->ssl != NULL) {
        if (s->handshake_done && s->fd >= 0) {
            /* close_notify, without waiting for the peer's. */
            int flags = fcntl(s->fd, F_GETFL);
            if (flags >= 0)
                (void)fcntl(s->fd, F_SETFL, flags | O_NONBLOCK);
            (void)SSL_shutdown(s->ssl);
            if (flags >= 0)
                (void)fcntl(s->fd, F_SETFL, flags);
        }
        ERR_clear_error();
        SSL_free(s->ssl);
    }
    delete s;
}

/* ------------------------------------------------------------------ */
/* Public: inspection and validation for `check` and `tls-fingerprint` */
/* ------------------------------------------------------------------ */

static void info_of(X509 *x, struct scp_tls_cert_info *info)
{
    struct scp_tls_identity id;
    struct tm tm;

    identity_of(x, &id);
    snprintf(info->sha256, sizeof(info->sha256), "%s", id.sha256_display);
    snprintf(info->subject, sizeof(info->subject), "%s", id.subject);
    info->not_after = 0;
    if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
        info->not_after = (long long)timegm(&tm);
}

extern "C" int scp_tls_inspect(const char *path,
                               struct scp_tls_cert_info *ret_info, char *err,
                               size_t err_len)
{
    FILE *f = fopen(path, "re");
    X509 *x;

    if (f == NULL) {
        int e = errno;
        util_err(err, err_len, "cannot open '%s': %s", path, strerror(e));
        return -e;
    }
    x = PEM_read_X509(f, NULL, NULL, NULL);
    if (x == NULL) {
        rewind(f);
        ERR_clear_error();
        x = d2i_X509_fp(f, NULL);
    }
    (void)fclose(f);
    if (x == NULL) {
        util_err(err, err_len, "'%s': no PEM or DER certificate: %s", path,
                 ssl_error_text().c_str());
        return -EINVAL;
    }
    info_of(x, ret_info);
    X509_free(x);
    return 0;
}

extern "C" int scp_tls_validate(const struct scp_tls_params *params,
                                struct scp_tls_cert_info *ret_info, char *err,
                                size_t err_len)
{
    struct scp_tls *tls = NULL;
    int r = scp__tls_new(params, &tls, err, err_len);

    if (r < 0)
        return r;
    info_of(SSL_CTX_get0_certificate(tls->current->ctx), ret_info);
    scp__tls_free(tls);
    return 0;
}
