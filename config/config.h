/* SPDX-License-Identifier: Apache-2.0 */
/*
 * config - the stowbridge configuration file (docs/architecture.md section 9).
 *
 * The file is one JSON object with sections "dicom", "spool", "log",
 * "upload", "auth", "retry", "query", "commit", "ledger" and "admin".
 * Comments (// to end of line and C-style blocks) are allowed outside
 * strings. One table row per key
 * (path, type, default, range, doc) drives the parser, the defaults, the
 * dump and the sample file, so they can never disagree.
 *
 * Every problem is an error that names the key path ("dicom.port"), says
 * what was expected, and for syntax errors gives the line and column:
 *   unknown key, wrong type, value out of range, bad AE title, bad network,
 *   bad URL, a value not among the choices, a key an auth.type requires.
 *
 * Ownership: cfg_load()/cfg_parse() hand the caller a struct cfg that only
 * cfg_free() releases. All strings inside belong to it.
 * Thread safety: a loaded struct cfg is immutable and may be read from any
 * thread. The functions keep no global state.
 * Errors: 0 or a negative errno; -EINVAL for a bad file, with the reason in
 * @err.
 */
#ifndef STOWBRIDGE_CONFIG_H
#define STOWBRIDGE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/util.h"

/* One entry of dicom.allowed_callers. */
struct cfg_caller {
    /* Trimmed AE title; NULL when the entry has no "ae_title" (any AE). */
    char *ae_title;
    /* Networks from "hosts"; host_count 0 means any address. */
    struct util_ipv4_net *hosts;
    size_t host_count;
    /* "find": may this caller query (C-FIND)? Default true. */
    bool find;
    /* "commit": may this caller ask for Storage Commitment? Default true. */
    bool commit;
    /* "retrieve": may this caller C-MOVE and C-GET? Default true. */
    bool retrieve;
    /* "certificate_sha256": fingerprints of the client certificates it
     * may present, normalised to 64 lowercase hex digits; none: any. */
    char **certificate_sha256;
    size_t certificate_sha256_count;
    /* "certificate_subject": NULL, or the CN or DNS/URI name it needs. */
    char *certificate_subject;
    /* "tls_only": refused on the plain port. Default false. */
    bool tls_only;
};

/* One entry of dicom.remote_aes: where a remote AE listens (Storage
 * Commitment reports; C-MOVE destinations later). */
struct cfg_remote_ae {
    char *ae_title; /* trimmed, 1..16 characters */
    char *host;     /* IPv4 address or host name */
    unsigned port;  /* 1..65535 */
    bool tls;       /* false: plain TCP; true: DICOM TLS (dicom.tls.*) */
    /* "certificate_sha256": NULL, or the SHA-256 fingerprint the remote's
     * certificate must have (64 lowercase hex digits); TLS only. */
    char *certificate_sha256;
};

/* dicom.tls: the DICOM TLS listener; off while certificate_file is "". */
struct cfg_tls {
    unsigned port;                   /* 2762 */
    char *certificate_file;          /* "": no TLS listener */
    char *private_key_file;          /* "": $CREDENTIALS_DIRECTORY/tls_key */
    char *private_key_password_file; /* "": the key is not encrypted */
    char *ca_file;                   /* CAs of client certificates */
    char *crl_file;                  /* "": no CRL */
    char *client_certificate;        /* "required" | "optional" | "none" */
    char *profile;           /* "bcp195-nd" | "bcp195" | "bcp195-extended" */
    unsigned security_level; /* 2, 0..5 */
};

/* dicom.proxy_protocol */
struct cfg_proxy_protocol {
    char **trusted_proxies; /* addresses or CIDR networks */
    size_t trusted_proxy_count;
};

struct cfg_dicom {
    char *ae_title;                     /* "STOWBRIDGE" */
    unsigned port;                      /* 11112, 0..65535; 0: no plain port */
    char *bind_address;                 /* "": every IPv4 and IPv6 address */
    unsigned max_associations;          /* 16, 1..1024 */
    unsigned max_pdu;                   /* 116794, 4096..131072 */
    unsigned timeout_s;                 /* 30, 1..3600: ACSE, DIMSE, idle */
    struct cfg_caller *allowed_callers; /* none = accept any caller */
    size_t allowed_caller_count;
    unsigned max_pending;                /* 32, 1..1024: RQs still arriving */
    bool accept_unknown_storage_classes; /* true: the storage root */
    char **extra_storage_classes;        /* valid UIDs; none by default */
    size_t extra_storage_class_count;
    struct cfg_remote_ae *remote_aes; /* none by default */
    size_t remote_ae_count;
    struct cfg_tls tls;
    struct cfg_proxy_protocol proxy_protocol;
};

struct cfg_spool {
    char *dir;                      /* "/var/spool/stowbridge" */
    unsigned min_free_mb;           /* 512, 0..1048576 */
    unsigned journal_mb;            /* 256, 0..65536; 0: no intake journal */
    unsigned journal_checkpoint_ms; /* 1000, 100..600000 */
    unsigned journal_max_kb;        /* 1024, 4..1048576 */
};

struct cfg_log {
    int level; /* enum log_level; "info" */
};

/* Where to send (docs/architecture.md section 6). An empty url means
 * receive-only. */
struct cfg_upload {
    char *url;                    /* "": receive-only; http(s)://... */
    unsigned workers;             /* 4, 1..64 */
    unsigned batch_max_instances; /* 50, 1..1000 */
    unsigned batch_max_mb;        /* 100, 1..4096 */
    unsigned timeout_s;           /* 60, 1..3600: connect, and longest stall */
    char *ca_file;                /* "": the system's CA store */
    char *on_conflict;            /* "keep-first" | "send": a later copy of
                                     a SOP Instance UID that differs */
};

/* How to authenticate (docs/architecture.md section 7). Strings are "" when
 * unset. After cfg_load(), client_secret holds the secret from wherever it came
 * (inline, client_secret_file, or $CREDENTIALS_DIRECTORY/client_secret)
 * and, for "azure", token_url and scope are filled in. */
struct cfg_auth {
    char *type; /* "none" | "client_credentials" | "azure" |
                   "static" | "managed_identity" |
                   "command" */
    char *token_url;
    char *client_id;
    char *client_secret; /* secret */
    char *client_secret_file;
    char *client_secret_expires; /* "YYYY-MM-DD" as Entra stated, or "" */
    char *scope;
    char *resource;
    char *client_auth; /* "body" | "basic" */
    char *tenant;      /* "azure": directory (tenant) ID or domain */
    char *token;       /* secret; "static" */
    /* Certificate credentials (client_credentials, azure); after
     * cfg_load(), client_key_file names the key wherever it came from. */
    char *client_certificate_file;
    char *client_key_file;
    char *assertion_alg; /* "PS256" | "RS256" */
    /* Workload identity; after cfg_load(), for "azure", also
     * $AZURE_FEDERATED_TOKEN_FILE. */
    char *client_assertion_file;
    char *endpoint; /* managed_identity: "" detected */
    char **command; /* "command": argv, NULL-terminated */
    size_t command_count;
    unsigned command_timeout_s; /* 60, 1..600 */
};

struct cfg_retry {
    unsigned min_s;       /* 5: first backoff */
    unsigned max_s;       /* 600: longest backoff */
    unsigned max_pause_s; /* 600: longest pause a Retry-After gets */
    unsigned max_age_h;   /* 168: older entries go to failed/ */
};

/* C-FIND through QIDO-RS (docs/architecture.md section 8). */
struct cfg_query {
    bool enabled;         /* true; needs upload.url */
    char *profile;        /* "standard" | "azure" | "orthanc" */
    unsigned page_size;   /* 100, 1..1000 (azure: ..200) */
    unsigned max_results; /* 5000 */
};

/* Storage Commitment (issue 12). */
struct cfg_commit {
    bool enabled;                /* true; needs upload.url */
    unsigned max_wait_h;         /* 24: then still-queued instances fail */
    unsigned report_retry_max_s; /* 300: longest pause between attempts */
    bool same_association;       /* false: try the request's association */
};

/* C-MOVE and C-GET through QIDO-RS and WADO-RS (issue 15). */
struct cfg_retrieve {
    unsigned max_temp_mb;  /* 256: fetched ahead of the sending, on disk */
    unsigned max_parallel; /* 4: C-MOVE/C-GET at once; more get A701 */
};

/* The delivery ledger (ledger/ledger.h). */
struct cfg_ledger {
    char *path;         /* "": <spool.dir>/ledger.db */
    unsigned keep_days; /* 30 */
};

/* The admin HTTP endpoint (issue 14; admin/admin.h). */
struct cfg_admin {
    char *listen;            /* "127.0.0.1:9475"; "": off */
    char *token_file;        /* "": no token (loopback only) */
    bool allow_actions;      /* false; needs token_file */
    unsigned ready_window_s; /* 600, 10..86400 */
};

struct cfg {
    struct cfg_dicom dicom;
    struct cfg_spool spool;
    struct cfg_log log;
    struct cfg_upload upload;
    struct cfg_auth auth;
    struct cfg_retry retry;
    struct cfg_query query;
    struct cfg_commit commit;
    struct cfg_retrieve retrieve;
    struct cfg_ledger ledger;
    struct cfg_admin admin;
};

/*
 * Reads and parses the file at @path, then resolves the auth secrets:
 * auth.client_secret_file is read (it must be a regular file not readable
 * by others), or, when no secret is configured, the systemd credential
 * $CREDENTIALS_DIRECTORY/client_secret (LoadCredential=). Errors name the
 * file, and for syntax errors the line. -ENOENT/-EACCES etc. when it
 * cannot be read.
 */
int cfg_load(const char *path, struct cfg **ret_cfg, char *err, size_t err_len);

/*
 * Like cfg_load(), without reading or requiring the auth secret: for the
 * commands that never authenticate (status, queue), so an operator can run
 * them without access to a secret that only the service can read
 * (LoadCredential=). auth.client_secret is then whatever the file holds
 * inline, possibly "".
 */
int cfg_load_without_secrets(const char *path, struct cfg **ret_cfg, char *err,
                             size_t err_len);

/*
 * Parses @len bytes of @text (need not be NUL-terminated), including the
 * checks across keys (what each auth.type requires, retry.min_s <=
 * retry.max_s). Reads no file: secrets from files are cfg_load()'s job.
 */
int cfg_parse(const char *text, size_t len, struct cfg **ret_cfg, char *err,
              size_t err_len);

/* A configuration with every default (as if the file were "{}"). */
int cfg_defaults(struct cfg **ret_cfg);

/* Releases @cfg. Accepts NULL. */
void cfg_free(struct cfg *cfg);

/* Writes the effective configuration as JSON to @out, secrets masked. */
int cfg_dump(const struct cfg *cfg, FILE *out);

/*
 * Writes the documented sample configuration (every key, its default and
 * its meaning as comments) to @out. config/stowbridge.sample.json is this
 * output; a test keeps them identical.
 */
int cfg_write_sample(FILE *out);

#endif
