/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tls - the DICOM TLS side of the SCP (PS3.15 B.9-B.11), inside scp/
 * only: the server's TLS material (certificate, key, CAs, CRL, DCMTK's
 * BCP 195 profile on its SSL_CTX), one TLS session per connection, the
 * checks of the peer certificate after the handshake and its binding to
 * the calling AE title (dicom.allowed_callers).
 *
 * Sessions: the connection loop (scp_net.cc) creates a session on the
 * socket, drives its handshake and the reading of the A-ASSOCIATE-RQ
 * without ever blocking (the socket is non-blocking meanwhile), then
 * hands it over with the socket; the association thread reads and writes
 * through it (scp_pdu.cc). A session is used by one thread at a time and
 * keeps the material it started with, so a reload (scp__tls_reload())
 * never touches a running association.
 *
 * Identity: the SHA-256 fingerprint of the client certificate (hex,
 * lowercase, no colons, and a display form with colons), its subject and
 * the names that certificate_subject may match (each CN, each DNS and URI
 * subjectAltName; names of more than SCP_TLS_NAME_MAX bytes, or beyond
 * SCP_TLS_NAMES_MAX, are never matched).
 *
 * Thread safety: scp__tls_reload() and session creation may race; the
 * material is swapped under a lock. Errors: 0 or a negative errno, with
 * a reason in @err/@why where given.
 */
#ifndef STOWBRIDGE_SCP_TLS_H
#define STOWBRIDGE_SCP_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

struct scp;
struct scp_caller_rule;
struct scp_tls_params;
struct scp_tls;
struct scp_tls_session;

#define SCP_TLS_NAMES_MAX 16
#define SCP_TLS_NAME_MAX 255

/* Who the peer's certificate says it is. */
struct scp_tls_identity {
    bool present;                       /* a client certificate */
    char sha256[65];                    /* lowercase hex */
    char sha256_display[96];            /* "AB:CD:..." */
    char subject[SCP_TLS_NAME_MAX + 1]; /* one line, RFC 2253 */
    char names[SCP_TLS_NAMES_MAX][SCP_TLS_NAME_MAX + 1];
    size_t name_count;
};

/*
 * Fills @ret_id from the certificate in @path (PEM or DER). For tests and
 * `tls-fingerprint`. Returns 0 or a negative errno with @err.
 */
int scp__tls_identity_from_file(const char *path,
                                struct scp_tls_identity *ret_id, char *err,
                                size_t err_len);

/*
 * The certificate binding of @rule against @id (NULL or !present: no
 * certificate, or the plain port when @tls is false): tls_only, the
 * fingerprint list and the subject. Returns NULL when it holds, else the
 * reason, written in @buf when needed.
 */
const char *scp__tls_rule_refusal(const struct scp_caller_rule *rule, bool tls,
                                  const struct scp_tls_identity *id, char *buf,
                                  size_t buf_len);

/* Builds @scp's TLS state from @params (files read and checked).
 * Returns 0 or a negative errno with @err naming the file and reason. */
int scp__tls_new(const struct scp_tls_params *params, struct scp_tls **ret_tls,
                 char *err, size_t err_len);
void scp__tls_free(struct scp_tls *tls);

/* Reads the files again; on failure the old material stays. */
int scp__tls_reload(struct scp_tls *tls, char *err, size_t err_len);

/* The display fingerprint and subject of the server certificate now in
 * use, for logs. */
void scp__tls_server_identity(struct scp_tls *tls, char *sha256,
                              size_t sha256_len, char *subject,
                              size_t subject_len);

/* A session in server mode on @fd (not owned). NULL on out-of-memory. */
struct scp_tls_session *scp__tls_session_new(struct scp_tls *tls, int fd);

/*
 * Advances the handshake and then the reading of the A-ASSOCIATE-RQ
 * (PDU type 01H, at most @max_rq bytes of body), never blocking.
 * Returns 0 while more bytes are needed, 1 once the handshake is done and
 * the whole request is in the session (scp__tls_request()), or -1 with
 * @why. The checks of the peer certificate run once the handshake ends.
 */
int scp__tls_session_step(struct scp_tls_session *s, size_t max_rq, char *why,
                          size_t why_len);

/* True once the handshake has completed. */
bool scp__tls_session_ready(const struct scp_tls_session *s);

/* The request read by scp__tls_session_step() (header included). */
const unsigned char *scp__tls_request(const struct scp_tls_session *s,
                                      size_t *ret_len);

/* The peer's identity, valid once the handshake is done. */
const struct scp_tls_identity *scp__tls_peer(const struct scp_tls_session *s);

/* "TLSv1.3 TLS_AES_256_GCM_SHA384", for logs. */
void scp__tls_describe(const struct scp_tls_session *s, char *buf, size_t len);

/*
 * Reads for DCMTK: first what is left of the buffered request, then
 * records from the socket (blocking). Returns bytes, 0 when the peer
 * closed, -1 with errno.
 */
ssize_t scp__tls_read(struct scp_tls_session *s, void *buf, size_t len);

/* Writes all of @len bytes; returns @len or -1 with errno. On a
 * non-blocking socket (the loop's refusals) it gives up rather than
 * wait. */
ssize_t scp__tls_write(struct scp_tls_session *s, const void *buf, size_t len);

/* True if bytes are buffered in the session (not on the socket). */
bool scp__tls_buffered(const struct scp_tls_session *s);

/* Sends close_notify (best effort, never waits) and frees @s; the socket
 * stays open. Accepts NULL. */
void scp__tls_session_free(struct scp_tls_session *s);

#ifdef __cplusplus
}
#endif

#endif
