/* SPDX-License-Identifier: Apache-2.0 */
/*
 * commit - the Storage Commitment provider (issue 12): what commits an
 * instance, the durable transactions in the spool's commit/ area
 * (spool/txn.h), the report and its delivery, and the delivery ledger's
 * feed (ledger/ledger.h).
 *
 * The rule (README, Storage Commitment), per instance of a request:
 *   delivered by us (the uploader's hook since start, or the ledger):
 *     committed, or 0119 when we delivered it under another SOP class;
 *   in the spool's failed/ (and in no other state): 0110, logged with
 *     the entry ID;
 *   still queued (incoming/, active/, deferred/): wait;
 *   unknown to us: QIDO-RS /instances?SOPInstanceUID=..&includefield=
 *     00080016 on the server: present with the same class -> committed,
 *     another class -> 0119, absent -> 0112 (an absent answer is believed
 *     only when a second look at the spool still does not find it); a
 *     failed QIDO-RS request leaves the instance pending;
 *   pending past commit.max_wait_h: 0110, or 0213 when the spool is below
 *     spool.min_free_mb.
 * When every instance is resolved the report (every instance, Event Type
 * 1 or 2) is written durably as commit/<tx>.rep, the request file removed,
 * and the report sent to the caller's dicom.remote_aes entry on a new
 * association (DICOM TLS when the entry has "tls": the remote's
 * certificate verified and its pin compared; a failed handshake or a
 * wrong pin is a failed attempt, logged with the reason), retried with a
 * doubling pause (2 s up to commit.report_retry_max_s) until commit.max_wait_h
 * + 24 h after the request, then abandoned (logged). With
 * commit.same_association it is first offered to the request's own association
 * while that stays open (scp.h report_take/report_done). Requests and reports
 * are read back at start, so both survive a restart and kill -9.
 *
 * The ledger: opened by commit_start() from params->ledger_path and
 * owned; the engine looks at it every 2 s and, when it was removed,
 * replaced, overwritten, found corrupt or fails with I/O errors, closes
 * it (moving a corrupt file aside) and opens it again; a failed open is
 * retried after 1 s doubling up to 300 s. Deliveries never wait for it.
 *
 * Files (text, one record a line, UIDs and AE titles only):
 *   commit/<tx>.req  "stowbridge-commit 1", "tx", "caller", "peer",
 *                    "received_ms", then "item <class> <instance>" lines
 *   commit/<tx>.rep  the same, items as "item <class> <instance> <reason
 *                    hex> <basis>"; both present after a crash: .rep wins
 *
 * Program code: it logs (one line per request, resolution and report
 * attempt). Thread safety: the handler and commit_note_delivered() may be
 * called from any thread; one engine thread does the look-ups and
 * writes the reports; one thread per dicom.remote_aes entry sends that
 * AE's reports (one at a time, oldest first), so an AE that does not
 * answer delays no other AE's reports. After a failed attempt (network
 * or association) an AE gets no report for a pause doubling from 2 s up
 * to commit.report_retry_max_s.
 */
#ifndef STOWBRIDGE_BRIDGE_COMMIT_H
#define STOWBRIDGE_BRIDGE_COMMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scp/scp.h"

struct commit_service;
struct find_web;
struct spool;
struct spool_meta;

/* A remote AE (dicom.remote_aes), strings copied by commit_start(). */
struct commit_remote {
    const char *ae_title;
    const char *host;
    uint16_t port;
    bool tls; /* reports over DICOM TLS with commit_params.outbound_tls */
    /* NULL, or the SHA-256 (64 lowercase hex digits) the remote's
     * certificate must have; with tls only. */
    const char *certificate_sha256;
};

struct commit_params {
    struct spool *spool; /* borrowed, owner mode */
    /* The delivery ledger's file, opened (LEDGER_OPEN_RECOVER) and owned
     * by the service; NULL or "": no ledger. */
    const char *ledger_path;
    struct find_web *web;    /* borrowed; NULL: no QIDO-RS look-up */
    const char *our_ae;      /* Retrieve AE Title, calling AE */
    const char *destination; /* upload.url, for the ledger */
    const struct commit_remote *remotes;
    size_t remote_count;
    /* Outbound DICOM TLS (dicom.tls.*, as C-MOVE), copied; NULL: none,
     * and then no remote may have tls (commit_start() fails). */
    const struct scp_outbound_tls *outbound_tls;
    unsigned max_wait_h;         /* commit.max_wait_h */
    unsigned report_retry_max_s; /* commit.report_retry_max_s */
    unsigned timeout_s;          /* dicom.timeout_s for reports */
    uint64_t min_free_mb;        /* spool.min_free_mb */
    unsigned keep_days;          /* ledger.keep_days: hourly prune */
    /* commit.same_association: the handler offers report_take, so a
     * report is tried first on its request's association while the SCU
     * keeps it open (scp.h), then on a new one. */
    bool same_association;
};

/*
 * Reads back the transactions in commit/ (creating it if needed) and
 * starts the engine thread. NULL with a reason in @err on failure.
 */
struct commit_service *commit_start(const struct commit_params *params,
                                    char *err, size_t err_len);

/* Stops the engine (a report being sent finishes or times out) and frees.
 * Accepts NULL. The files stay for the next start. */
void commit_stop(struct commit_service *cs);

/* The handler scp/ calls for each valid N-ACTION-RQ. */
void commit_handler_init(struct commit_service *cs,
                         struct scp_commit_handler *ret_handler);

/*
 * The uploader's hook (uploader_params.on_delivered): entry @id (still in
 * active/) was delivered; @already when the server said it had it.
 * Records the delivery in the ledger (SOP class and series read from the
 * file) and resolves pending items that name it. @ctx is the service.
 */
void commit_note_delivered(void *ctx, const char *id,
                           const struct spool_meta *meta, bool already);

/* Counters for tests and the log. */
struct commit_counts {
    unsigned long requests;        /* accepted since start */
    unsigned long pending;         /* transactions not yet resolved */
    unsigned long reports_waiting; /* resolved, report not delivered */
    unsigned long reports_sent;
    unsigned long qido_lookups;
    unsigned long ledger_reopens; /* opened again after trouble */
};
void commit_get_counts(struct commit_service *cs,
                       struct commit_counts *ret_counts);

#endif
