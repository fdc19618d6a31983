/* SPDX-License-Identifier: Apache-2.0 */
/*
 * outbound - associations we open to a remote AE (commit_int.h): one
 * NET_REQUESTOR network per association (no shared state between
 * threads), our AE title as calling AE, the remote's as called AE, the
 * given presentation contexts with SCP/SCU role selection where asked.
 * Used for Storage Commitment reports; C-MOVE sub-associations will use
 * it too. Plain TCP only (dicom.remote_aes "tls": false).
 */
#include "commit_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "dcmtk/dcmnet/cond.h"
#include "dcmtk/dcmnet/dul.h"

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

int scp__outbound_open(const char *our_ae, const struct scp_remote *remote,
                       const struct scp_out_context *contexts,
                       size_t context_count, uint32_t max_pdu,
                       unsigned timeout_s, struct scp_outbound *ret, char *err,
                       size_t err_len)
{
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
    cond = ASC_initializeNetwork(NET_REQUESTOR, 0, (int)timeout_s, &net);
    if (cond.bad()) {
        out_err(err, err_len, "cannot set up the network: %s", cond.text());
        return -EIO;
    }
    cond = ASC_createAssociationParameters(&params, (long)max_pdu);
    if (cond.bad()) {
        out_err(err, err_len, "%s", cond.text());
        (void)ASC_dropNetwork(&net);
        return -ENOMEM;
    }
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
        return r;
    }
    if (ASC_countAcceptedPresentationContexts(assoc->params) == 0) {
        out_err(err, err_len, "%s@%s accepted no presentation context",
                remote->ae_title, address);
        ret->net = net;
        ret->assoc = assoc;
        scp__outbound_close(ret, false);
        return -EPROTO;
    }
    ret->net = net;
    ret->assoc = assoc;
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
    ob->assoc = NULL;
    ob->net = NULL;
}
