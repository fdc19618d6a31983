/* SPDX-License-Identifier: Apache-2.0 */
/*
 * scp - the public API of the DIMSE service provider (see scp.h for the
 * contract and scp_int.h for the files of the module): initialisation,
 * scp_new(), scp_run(), and scp_free().
 *
 * Every entry point catches all C++ exceptions; none crosses scp.h.
 */
#include "scp.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <new>
#include <string>
#include <vector>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcdict.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dcmtrans.h"
#include "dcmtk/oflog/oflog.h"
#include "dcmtk/ofstd/ofstd.h"

#include "base/log.h"
#include "base/util.h"
#include "scp_int.h"

/* Copies a DIMSE UID field without the trailing spaces or NULs some SCUs
 * send; returns false if it does not fit. */
bool scp__copy_trimmed_uid(char *dst, size_t dst_size, const char *src)
{
    size_t len = strnlen(src, dst_size);
    if (len >= dst_size)
        return false;
    while (len > 0 && (src[len - 1] == ' ' || src[len - 1] == '\0'))
        len--;
    memcpy(dst, src, len);
    dst[len] = '\0';
    return true;
}

/* ------------------------------------------------------------------ */
/* Public API                                                          */
/* ------------------------------------------------------------------ */

extern "C" int scp_global_init(char *err, size_t err_len)
{
    try {
        /* DCMTK reads TCP_NODELAY from the environment when it creates a
         * socket; without it a C-STORE stream crawls (Nagle). */
        if (setenv("TCP_NODELAY", "1", 1) != 0) {
            util_err(err, err_len, "setenv() TCP_NODELAY failed: %s",
                     strerror(errno));
            return -errno;
        }
        /* DCMTK's own logger would print PHI at debug level and its own
         * format otherwise: we log every outcome ourselves. */
        OFLog::configure(OFLogger::FATAL_LOG_LEVEL);
        dcmDisableGethostbyaddr.set(OFTrue);
        if (!dcmDataDict.isDictionaryLoaded()) {
            util_err(err, err_len,
                     "DCMTK data dictionary not loaded (check DCMDICTPATH "
                     "and the libdcmtk package)");
            return -ENOENT;
        }
        return 0;
    } catch (...) {
        util_err(err, err_len, "DCMTK initialisation failed");
        return -EIO;
    }
}

/* Copies the caller rules and the extra storage classes of @params. */
static int copy_lists(struct scp *scp, const struct scp_params *params)
{
    scp->caller_count = params->caller_count;
    if (params->caller_count > 0) {
        scp->callers =
            new (std::nothrow) scp_caller_rule[params->caller_count]();
        if (scp->callers == NULL)
            return -ENOMEM;
        for (size_t i = 0; i < params->caller_count; i++) {
            const struct scp_caller_rule *in = &params->callers[i];
            struct scp_caller_rule *out = &scp->callers[i];
            if (in->ae_title != NULL) {
                out->ae_title = strdup(in->ae_title);
                if (out->ae_title == NULL)
                    return -ENOMEM;
            }
            out->host_count = in->host_count;
            out->find = in->find;
            out->commit = in->commit;
            out->retrieve = in->retrieve;
            if (in->host_count > 0) {
                util_ipv4_net *hosts =
                    new (std::nothrow) util_ipv4_net[in->host_count];
                if (hosts == NULL)
                    return -ENOMEM;
                memcpy(hosts, in->hosts, in->host_count * sizeof(*hosts));
                out->hosts = hosts;
            }
        }
    }
    for (size_t i = 0; i < params->extra_storage_count; i++)
        scp->extra_storage.push_back(params->extra_storage[i]);
    return 0;
}

extern "C" int scp_new(const struct scp_params *params, struct scp **ret_scp,
                       char *err, size_t err_len)
{
    struct scp *scp = NULL;

    try {
        if (params->spool == NULL || params->max_associations == 0) {
            util_err(err, err_len, "invalid SCP parameters");
            return -EINVAL;
        }
        scp = new (std::nothrow) struct scp();
        if (scp == NULL)
            return -ENOMEM;
        scp->listen_fd = -1;
        scp->wake_fd = -1;
        pthread_mutex_init(&scp->lock, NULL);
        /* Untouched until an instance needs it (none: nothing is held
         * over SCP_WRITE_BUFFER). */
        void *big = mmap(NULL, SCP_BIG_HOLD, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        scp->big_hold_buffer =
            big == MAP_FAILED ? nullptr : static_cast<unsigned char *>(big);
        if (util_trim_copy(scp->ae_title, sizeof(scp->ae_title),
                           params->ae_title) < 0 ||
            !util_ae_title_valid(scp->ae_title)) {
            util_err(err, err_len, "invalid AE title");
            scp_free(scp);
            return -EINVAL;
        }
        scp->port = params->port;
        scp->max_associations = params->max_associations;
        scp->max_pending = params->max_pending > 0 ? params->max_pending
                                                   : SCP_DEFAULT_MAX_PENDING;
        scp->max_pdu = params->max_pdu;
        scp->timeout_s = params->timeout_s;
        scp->spool = params->spool;
        scp->min_free_mb = params->min_free_mb;
        scp->find = params->find;
        scp->commit = params->commit;
        scp->accept_unknown_storage = params->accept_unknown_storage_classes;
        scp->observer = params->observer;

        int r = copy_lists(scp, params);
        if (r < 0) {
            scp_free(scp);
            return r;
        }
        r = scp__retrieve_setup(scp, params, err, err_len);
        if (r < 0) {
            scp_free(scp);
            return r;
        }
        scp->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (scp->wake_fd < 0) {
            r = -errno;
            util_err(err, err_len, "eventfd() failed: %s", strerror(errno));
            scp_free(scp);
            return r;
        }

        /* Socket timeouts bound every read and write on an association. */
        dcmSocketSendTimeout.set((Sint32)params->timeout_s);
        dcmSocketReceiveTimeout.set((Sint32)params->timeout_s);

        r = scp__net_setup(scp, params, err, err_len);
        if (r < 0) {
            scp_free(scp);
            return r;
        }

        /* DCMTK's network is only a parser of association requests: with
         * an external socket set, it neither binds nor listens. */
        pthread_mutex_lock(&scp__handover_lock);
        dcmExternalSocketHandle.set(scp->listen_fd >= 0 ? scp->listen_fd
                                                        : scp->tls_listen_fd);
        OFCondition cond = ASC_initializeNetwork(
            NET_ACCEPTOR, 0, (int)params->timeout_s, &scp->network);
        dcmExternalSocketHandle.set(-1);
        pthread_mutex_unlock(&scp__handover_lock);
        if (cond.bad()) {
            util_err(err, err_len, "DCMTK network initialisation failed: %s",
                     cond.text());
            scp_free(scp);
            return -EIO;
        }
        scp->layer = scp__split_layer_new(scp, scp->max_pdu);
        if (scp->layer == NULL) {
            scp_free(scp);
            return -ENOMEM;
        }
        cond = ASC_setTransportLayer(scp->network, scp->layer, 0);
        if (cond.bad()) {
            util_err(err, err_len, "DCMTK transport layer failed: %s",
                     cond.text());
            scp_free(scp);
            return -EIO;
        }
        *ret_scp = scp;
        return 0;
    } catch (...) {
        util_err(err, err_len, "SCP initialisation failed");
        scp_free(scp);
        return -EIO;
    }
}

extern "C" int scp_run(struct scp *scp, scp_stop_fn should_stop, void *ctx,
                       unsigned grace_s)
{
    try {
        scp->should_stop = should_stop;
        scp->stop_ctx = ctx;
        return scp__serve(scp, grace_s);
    } catch (...) {
        log_err("event=scp-failed reason=\"unexpected exception\"");
        return -EIO;
    }
}

extern "C" unsigned scp_active_associations(const struct scp *scp)
{
    unsigned active;

    pthread_mutex_lock(&((struct scp *)scp)->lock);
    active = scp->active + scp->pending;
    pthread_mutex_unlock(&((struct scp *)scp)->lock);
    return active;
}

extern "C" unsigned scp_fds_needed(const struct scp_params *params)
{
    unsigned pending =
        params->max_pending > 0 ? params->max_pending : SCP_DEFAULT_MAX_PENDING;

    /* An association: its socket and the spool file it writes; a
     * pending connection: its socket; the closing set of scp_net.cc; and
     * the listener, epoll, eventfd and the reserve descriptor. */
    return 2 * params->max_associations + pending +
           (unsigned)scp__closing_max(params->max_associations, pending) + 4;
}

extern "C" void scp_free(struct scp *scp)
{
    if (scp == NULL)
        return;
    try {
        if (scp->network != NULL)
            (void)ASC_dropNetwork(&scp->network);
        scp__split_layer_free(scp->layer);
    } catch (...) {
    }
    if (scp->listen_fd >= 0)
        (void)close(scp->listen_fd);
    scp__net_teardown(scp);
    if (scp->wake_fd >= 0)
        (void)close(scp->wake_fd);
    for (int fd : scp->handoff)
        (void)close(fd);
    if (scp->callers != NULL) {
        for (size_t i = 0; i < scp->caller_count; i++) {
            free((void *)scp->callers[i].ae_title);
            delete[] scp->callers[i].hosts;
        }
        delete[] scp->callers;
    }
    if (scp->big_hold_buffer != nullptr)
        (void)munmap(scp->big_hold_buffer, SCP_BIG_HOLD);
    pthread_mutex_destroy(&scp->lock);
    delete scp;
}
