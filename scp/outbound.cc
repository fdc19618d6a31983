/* SPDX-License-Identifier: Apache-2.0 */
/*
 * outbound - associations we open to a remote AE (commit_int.h): one
 * NET_REQUESTOR network per association (no shared state between
 * threads), our AE title as calling AE, the remote's as called AE, the
 * given presentation contexts with SCP/SCU role selection where asked.
 * Used for Storage Commitment reports and C-MOVE sub-associations.
 * DICOM TLS (scp__outbound_open_tls()): a DcmTLSTransportLayer of our
 * own per association, as requestor: the profile of dicom.tls.profile,
 * the remote's chain verified against dicom.tls.ca_file, our client
 * certificate when one is configured, the OpenSSL security level; and,
 * since DCMTK 3.6.7 checks no host name and sends no SNI, an optional
 * SHA-256 pin of the remote's certificate compared after the handshake.
 */
#include "commit_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <string>

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "dcmtk/dcmnet/cond.h"
#include "dcmtk/dcmnet/dul.h"
#include "dcmtk/dcmtls/tlslayer.h"

#include "base/util.h"

static void out_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void out_err(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || err_len == 0)
        return;
    va_start(ap, fmt);
    (void)vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

/* The errno a failed ASC_requestAssociation() most likely stands for:
 * DCMTK gives the socket error only as text. */
static int out_errno_of(const OFCondition &cond)
{
    const char *t = cond.text();

    if (cond == DUL_ASSOCIATIONREJECTED)
        return -EPROTO;
    if (strstr(t, "refused") != NULL)
        return -ECONNREFUSED;
    if (strstr(t, "timed out") != NULL || strstr(t, "Timeout") != NULL ||
        strstr(t, "timeout") != NULL)
        return -ETIMEDOUT;
    if (strstr(t, "unreachable") != NULL)
        return -EHOSTUNREACH;
    if (strstr(t, "unknown host") != NULL ||
        strstr(t, "Name or service") != NULL || strstr(t, "not known") != NULL)
        return -ENOENT;
    return -EIO;
}

/* Reads the first line of the password file @path into @ret. */
static int out_read_password(const std::string &path, std::string &ret,
                             char *err, size_t err_len)
{
    FILE *f = fopen(path.c_str(), "re");
    char buf[1024];

    if (f == NULL) {
        int r = -errno;
        out_err(err, err_len, "cannot open %s: %s", path.c_str(),
                strerror(errno));
        return r;
    }
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    ret.assign(buf, n);
    explicit_bzero(buf, sizeof(buf));
    return 0;
}

/* A requestor TLS layer with the material of @tls; NULL with @err. */
static DcmTLSTransportLayer *out_tls_layer(const struct scp_out_tls *tls,
                                           char *err, size_t err_len)
{
    DcmTLSTransportLayer *layer =
        new (std::nothrow) DcmTLSTransportLayer(NET_REQUESTOR, NULL, OFFalse);
    OFCondition cond;

    if (layer == NULL || layer->getNativeHandle() == NULL) {
        out_err(err, err_len, "cannot create the TLS context");
        delete layer;
        return NULL;
    }
    DcmTLSSecurityProfile profile =
        tls->profile == SCP_TLS_BCP195            ? TSP_Profile_BCP195
        : tls->profile == SCP_TLS_BCP195_EXTENDED ? TSP_Profile_BCP195_Extended
                                                  : TSP_Profile_BCP195_ND;
    cond = layer->setTLSProfile(profile);
    if (cond.good())
        cond = layer->activateCipherSuites();
    if (cond.bad()) {
        out_err(err, err_len, "TLS profile: %s", cond.text());
        delete layer;
        return NULL;
    }
    cond = layer->addTrustedCertificateFile(tls->ca_file.c_str(),
                                            DCF_Filetype_PEM);
    if (cond.bad()) {
        out_err(err, err_len, "cannot read the CA file %s: %s",
                tls->ca_file.c_str(), cond.text());
        delete layer;
        return NULL;
    }
    layer->setCertificateVerification(DCV_requireCertificate);
    if (!tls->certificate_file.empty()) {
        std::string password;
        if (!tls->private_key_password_file.empty()) {
            if (out_read_password(tls->private_key_password_file, password, err,
                                  err_len) < 0) {
                delete layer;
                return NULL;
            }
            layer->setPrivateKeyPasswd(password.c_str());
        }
        cond = layer->setPrivateKeyFile(tls->private_key_file.c_str(),
                                        DCF_Filetype_PEM);
        explicit_bzero(&password[0], password.size());
        if (cond.good())
            cond = layer->setCertificateFile(tls->certificate_file.c_str(),
                                             DCF_Filetype_PEM);
        if (cond.bad() || !layer->checkPrivateKeyMatchesCertificate()) {
            out_err(err, err_len,
                    "cannot use the client certificate %s with its key: %s",
                    tls->certificate_file.c_str(),
                    cond.bad() ? cond.text() : "they do not match");
            delete layer;
            return NULL;
        }
    }
    SSL_CTX_set_security_level(layer->getNativeHandle(),
                               (int)tls->security_level);
    return layer;
}

/* Compares the SHA-256 of the remote's certificate with @pin (64
 * lowercase hex digits). */
static int out_check_pin(T_ASC_Association *assoc, const char *pin, char *err,
                         size_t err_len)
{
    unsigned long len = ASC_getPeerCertificateLength(assoc);
    std::string der(len, '\0');
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    char hex[2 * EVP_MAX_MD_SIZE + 1];

    if (len == 0 || ASC_getPeerCertificate(assoc, &der[0], len) != len) {
        out_err(err, err_len, "the remote presented no certificate");
        return -EPERM;
    }
    if (EVP_Digest(der.data(), der.size(), md, &md_len, EVP_sha256(), NULL) !=
        1) {
        out_err(err, err_len, "cannot hash the remote's certificate");
        return -EIO;
    }
    for (unsigned int i = 0; i < md_len; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    if (strcmp(hex, pin) != 0) {
        out_err(err, err_len,
                "the remote's certificate (SHA-256 %.16s...) is not the "
                "pinned one (certificate_sha256 %.16s...)",
                hex, pin);
        return -EPERM;
    }
    return 0;
}

int scp__outbound_open_tls(const char *our_ae, const struct scp_remote *remote,
                           const struct scp_out_tls *tls,
                           const struct scp_out_context *contexts,
                           size_t context_count, uint32_t max_pdu,
                           unsigned timeout_s, struct scp_outbound *ret,
                           char *err, size_t err_len)
{
    DcmTLSTransportLayer *layer = NULL;
    T_ASC_Network *net = NULL;
    T_ASC_Parameters *params = NULL;
    T_ASC_Association *assoc = NULL;
    char address[300];
    OFCondition cond;
    int r;

    memset(ret, 0, sizeof(*ret));
    if (context_count == 0 || context_count > 128) {
        out_err(err, err_len, "%zu presentation contexts (1 to 128)",
                context_count);
        return -EINVAL;
    }
    if (snprintf(address, sizeof(address), "%s:%u", remote->host,
                 (unsigned)remote->port) >= (int)sizeof(address)) {
        out_err(err, err_len, "host name too long");
        return -EINVAL;
    }
    /* The connect timeout is a DCMTK global (dul.h); every outbound use
     * sets the same kind of bound, so a race only swaps like for like. */
    dcmConnectionTimeout.set((Sint32)timeout_s);
    if (remote->tls && (tls == NULL || !tls->on)) {
        out_err(err, err_len, "%s needs TLS and no TLS material is set",
                remote->ae_title);
        return -EINVAL;
    }
    if (remote->tls) {
        layer = out_tls_layer(tls, err, err_len);
        if (layer == NULL)
            return -EINVAL;
    }
    cond = ASC_initializeNetwork(NET_REQUESTOR, 0, (int)timeout_s, &net);
    if (cond.bad()) {
        out_err(err, err_len, "cannot set up the network: %s", cond.text());
        delete layer;
        return -EIO;
    }
    if (layer != NULL)
        cond = ASC_setTransportLayer(net, layer, 0);
    if (cond.good())
        cond = ASC_createAssociationParameters(&params, (long)max_pdu);
    if (cond.bad()) {
        out_err(err, err_len, "%s", cond.text());
        (void)ASC_dropNetwork(&net);
        delete layer;
        return -ENOMEM;
    }
    if (layer != NULL)
        (void)ASC_setTransportLayerType(params, OFTrue);
    (void)ASC_setAPTitles(params, our_ae, remote->ae_title, NULL);
    (void)ASC_setPresentationAddresses(params, "localhost", address);
    for (size_t i = 0; i < context_count; i++) {
        const struct scp_out_context *c = &contexts[i];
        const char *ts[8];
        size_t n = c->transfer_syntax_count < 8 ? c->transfer_syntax_count : 8;

        for (size_t k = 0; k < n; k++)
            ts[k] = c->transfer_syntaxes[k];
        cond = ASC_addPresentationContext(
            params, (T_ASC_PresentationContextID)(2 * i + 1),
            c->abstract_syntax, ts, (int)n, c->role);
        if (cond.bad()) {
            out_err(err, err_len, "%s", cond.text());
            (void)ASC_destroyAssociationParameters(&params);
            (void)ASC_dropNetwork(&net);
            delete layer;
            return -EINVAL;
        }
    }
    cond = ASC_requestAssociation(net, params, &assoc);
    if (cond.bad()) {
        r = out_errno_of(cond);
        if (cond == DUL_ASSOCIATIONREJECTED) {
            T_ASC_RejectParameters rej;
            OFString text;

            (void)ASC_getRejectParameters(params, &rej);
            (void)ASC_printRejectParameters(text, &rej);
            out_err(err, err_len, "association rejected by %s@%s: %s",
                    remote->ae_title, address, text.c_str());
        } else {
            out_err(err, err_len, "no association with %s@%s: %s",
                    remote->ae_title, address, cond.text());
        }
        if (assoc != NULL) {
            (void)ASC_dropAssociation(assoc);
            (void)ASC_destroyAssociation(&assoc);
        } else {
            (void)ASC_destroyAssociationParameters(&params);
        }
        (void)ASC_dropNetwork(&net);
        delete layer;
        return r;
    }
    ret->net = net;
    ret->assoc = assoc;
    ret->tls_layer = layer;
    if (layer != NULL && remote->certificate_sha256 != NULL) {
        r = out_check_pin(assoc, remote->certificate_sha256, err, err_len);
        if (r < 0) {
            scp__outbound_close(ret, true);
            return r;
        }
    }
    if (ASC_countAcceptedPresentationContexts(assoc->params) == 0) {
        out_err(err, err_len, "%s@%s accepted no presentation context",
                remote->ae_title, address);
        scp__outbound_close(ret, false);
        return -EPROTO;
    }
    return 0;
}

T_ASC_PresentationContextID scp__outbound_context(const struct scp_outbound *ob,
                                                  const char *abstract_syntax,
                                                  T_ASC_SC_ROLE role)
{
    int n = ASC_countPresentationContexts(ob->assoc->params);

    for (int i = 0; i < n; i++) {
        T_ASC_PresentationContext pc;

        if (ASC_getPresentationContext(ob->assoc->params, i, &pc).bad())
            return 0;
        if (pc.resultReason != ASC_P_ACCEPTANCE ||
            strcmp(pc.abstractSyntax, abstract_syntax) != 0)
            continue;
        if (role == ASC_SC_ROLE_DEFAULT || pc.acceptedRole == role ||
            pc.acceptedRole == ASC_SC_ROLE_SCUSCP)
            return pc.presentationContextID;
    }
    return 0;
}

void scp__outbound_close(struct scp_outbound *ob, bool abort)
{
    if (ob->assoc != NULL) {
        if (abort || ASC_releaseAssociation(ob->assoc).bad())
            (void)ASC_abortAssociation(ob->assoc);
        (void)ASC_dropAssociation(ob->assoc);
        (void)ASC_destroyAssociation(&ob->assoc);
    }
    if (ob->net != NULL)
        (void)ASC_dropNetwork(&ob->net);
    delete ob->tls_layer;
    ob->assoc = NULL;
    ob->net = NULL;
    ob->tls_layer = NULL;
}
