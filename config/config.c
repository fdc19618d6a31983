/* SPDX-License-Identifier: Apache-2.0 */
/*
 * config - see config.h.
 *
 * One row of cfg_keys[] per key ("dicom.port": type, offset into struct
 * cfg, default, range, check, secret flag, doc) drives everything: the
 * parser looks keys up in it, cfg_defaults() fills from it, cfg_dump() and
 * cfg_write_sample() walk it. Sections are the path prefixes in table
 * order, so a key in a new section ("upload.workers") is one new row and
 * one new struct member.
 *
 * Comments are blanked out (replaced with spaces, newlines kept) before
 * cJSON parses the text, so the position cJSON reports for a syntax error
 * is the line and column of the original file. Columns count characters
 * (UTF-8 sequences count once), from 1.
 *
 * cJSON keeps duplicate members; every object is checked for them, and
 * unknown names are refused before the duplicate check, so that check only
 * ever scans known, distinct names.
 *
 * cfg_dump() writes each caller network in its effective form "a.b.c.d/len"
 * with the host bits cleared: "192.0.2.7" comes back as "192.0.2.7/32" and
 * "10.1.2.3/24" as "10.1.2.0/24". Secret strings are written as "********"
 * when set and as "" when empty.
 *
 * A key of three parts ("dicom.tls.port") lives in a nested object
 * ("dicom": {"tls": {"port": ...}}); the rows of one such object are
 * contiguous in the table.
 *
 * Nothing here logs: every failure is a return code and a message in @err.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <cjson/cJSON.h>

#include "base/log.h"
#include "base/util.h"

/* Largest file cfg_load() reads. */
#define CFG_FILE_MAX (1024 * 1024)
/* First read buffer of cfg_load() when the size is not known. */
#define CFG_READ_CHUNK 4096
/* At most this many bytes of the text are quoted in a message. */
#define CFG_QUOTE_MAX 20
/* At most this many bytes of an unknown key's name. */
#define CFG_NAME_MAX 40
/* Suggest a known key at most this many edits away from an unknown one. */
#define CFG_SUGGEST_DISTANCE 2
/* Width of the text of a // comment in the sample file. */
#define CFG_COMMENT_WIDTH 68
/* Most UIDs in one CFG_UIDS list. */
#define CFG_UIDS_MAX 256
/* Most words in one CFG_ARGV list, and the longest word. */
#define CFG_ARGV_MAX 64
#define CFG_ARGV_WORD_MAX 4096
/* What a secret looks like in the dump. */
#define CFG_SECRET_MASK "\"********\""

#define CFG_LEVEL_NAMES "\"err\", \"warning\", \"notice\", \"info\", \"debug\""
#define CFG_NET_EXAMPLE "such as \"192.0.2.7\" or \"10.0.0.0/8\""
#define CFG_IPV4_ONLY                                                    \
    "DCMTK 3.6.7 listens on IPv4 only, so only IPv4 addresses and CIDR " \
    "networks are accepted"

enum cfg_type {
    CFG_STRING,  /* char *, never NULL once loaded */
    CFG_UINT,    /* unsigned, min..max */
    CFG_LEVEL,   /* int holding an enum log_level */
    CFG_CALLERS, /* struct cfg_caller *, count at count_offset */
    CFG_BOOL,    /* bool */
    CFG_UIDS,    /* char ** of valid UIDs, count at count_offset */
    CFG_REMOTES, /* struct cfg_remote_ae *, count at count_offset */
    CFG_ARGV,    /* char ** of non-empty strings and a NULL, count at
                    count_offset (a command line, no shell) */
    CFG_NETS,    /* char ** of IPv4/IPv6 addresses or networks, count at
                  * count_offset */
};

/* Extra validation of a CFG_STRING value. */
enum cfg_check {
    CFG_CHECK_NONE,
    CFG_CHECK_AE_TITLE, /* util_ae_title_valid(), stored trimmed */
    CFG_CHECK_ABS_PATH, /* non-empty, starts with '/' */
    CFG_CHECK_URL,      /* "" or http:// or https://, no spaces */
    CFG_CHECK_CHOICE,   /* one of the '|'-separated .choices */
    CFG_CHECK_OPT_PATH, /* "" or starts with '/' */
};

struct cfg_key {
    const char *path;       /* "section.name" */
    enum cfg_type type;     /* how the value is read, stored and written */
    size_t offset;          /* of the value in struct cfg */
    size_t count_offset;    /* CFG_CALLERS, CFG_UIDS, CFG_REMOTES: of its
                               size_t count */
    const char *def_string; /* CFG_STRING and CFG_LEVEL */
    unsigned def_uint;      /* CFG_UINT; CFG_BOOL: 0 or 1 */
    unsigned min;           /* CFG_UINT */
    unsigned max;           /* CFG_UINT */
    enum cfg_check check;   /* CFG_STRING */
    bool secret;            /* masked by cfg_dump() */
    const char *doc;        /* what it means, for the sample file */
    const char *example;    /* sample file: a commented-out value */
    const char *choices;    /* CFG_CHECK_CHOICE: "a|b|c" */
    bool zero_ok;           /* CFG_UINT: 0 also parses (below min); its
                             * meaning is checked by cfg_validate() */
};

#define CFG_OFF(field) offsetof(struct cfg, field)

static const struct cfg_key cfg_keys[] = {
    {
        .path = "dicom.ae_title",
        .type = CFG_STRING,
        .offset = CFG_OFF(dicom.ae_title),
        .def_string = "STOWBRIDGE",
        .check = CFG_CHECK_AE_TITLE,
        .doc = "Our AE title. Associations that call another title are "
               "rejected.",
    },
    {
        .path = "dicom.port",
        .type = CFG_UINT,
        .offset = CFG_OFF(dicom.port),
        .def_uint = 11112,
        .min = 1,
        .max = 65535,
        .zero_ok = true,
        .doc = "TCP port of the plain (unencrypted) DIMSE service; 0: no "
               "plain port (then dicom.tls is needed).",
    },
    {
        .path = "dicom.bind_address",
        .type = CFG_STRING,
        .offset = CFG_OFF(dicom.bind_address),
        .def_string = "",
        .doc = "The IPv4 or IPv6 address both DICOM ports listen on; \"\": "
               "every IPv4 and IPv6 address.",
        .example = "\"192.0.2.10\"",
    },
    {
        .path = "dicom.max_associations",
        .type = CFG_UINT,
        .offset = CFG_OFF(dicom.max_associations),
        .def_uint = 16,
        .min = 1,
        .max = 1024,
        .doc = "Associations served at once; one more is rejected as "
               "transient (local limit exceeded).",
    },
    {
        .path = "dicom.max_pdu",
        .type = CFG_UINT,
        .offset = CFG_OFF(dicom.max_pdu),
        .def_uint = 116794,
        .min = 4096,
        .max = 131072,
        .doc = "Maximum PDU length we receive, in bytes.",
    },
    {
        .path = "dicom.timeout_s",
        .type = CFG_UINT,
        .offset = CFG_OFF(dicom.timeout_s),
        .def_uint = 30,
        .min = 1,
        .max = 3600,
        .doc = "ACSE, DIMSE and socket timeout, and the idle limit of an "
               "association, in seconds; also the deadline for a whole "
               "association request, and the longest an ended "
               "association's socket waits for the peer to close (10 at "
               "most).",
    },
    {
        .path = "dicom.allowed_callers",
        .type = CFG_CALLERS,
        .offset = CFG_OFF(dicom.allowed_callers),
        .count_offset = CFG_OFF(dicom.allowed_caller_count),
        .doc = "Who may associate. Each entry has an \"ae_title\", a list "
               "of \"hosts\" (IPv4 addresses or CIDR networks), or both. A "
               "caller is accepted when one entry matches its calling AE "
               "title (if the entry names one) and its IPv4 address (if the "
               "entry lists hosts); the first such entry decides. Host names "
               "and IPv6 networks are not accepted in \"hosts\". An empty "
               "list accepts any caller. \"find\": false lets that caller "
               "store but not query (C-FIND); \"commit\": false, store but "
               "not ask for Storage Commitment; \"retrieve\": false, not "
               "C-MOVE or C-GET; all default to true. Over "
               "TLS, \"certificate_sha256\" (a list of SHA-256 "
               "fingerprints, hex, colons optional) and "
               "\"certificate_subject\" (the exact CN or a DNS/URI "
               "subjectAltName) bind the entry to client certificates; "
               "\"tls_only\": true refuses it on the plain port.",
        .example = "[\n"
                   "    {\"ae_title\": \"CT1\", \"hosts\": [\"10.1.2.0/24\", "
                   "\"192.0.2.7\"]},\n"
                   "    {\"ae_title\": \"MR1\", \"tls_only\": true,\n"
                   "     \"certificate_sha256\": [\"3F:A2:...\"]},\n"
                   "    {\"ae_title\": \"PACS\", \"find\": false, "
                   "\"commit\": false},\n"
                   "    {\"hosts\": [\"127.0.0.1\"]}\n"
                   "]",
    },
    {
        .path = "dicom.max_pending",
        .type = CFG_UINT,
        .offset = CFG_OFF(dicom.max_pending),
        .def_uint = 32,
        .min = 1,
        .max = 1024,
        .doc = "Connections still sending their association request, each "
               "within dicom.timeout_s; they do not count against "
               "max_associations. When full, a new connection drops the "
               "oldest of the address holding the most (one address may "
               "hold a quarter).",
    },
    {
        .path = "dicom.accept_unknown_storage_classes",
        .type = CFG_BOOL,
        .offset = CFG_OFF(dicom.accept_unknown_storage_classes),
        .def_uint = 1,
        .doc = "Accept as storage every proposed abstract syntax under the "
               "storage root 1.2.840.10008.5.1.4.1.1., not only the storage "
               "SOP classes DCMTK 3.6.7 knows (instances are stored bit for "
               "bit, so a newer class needs nothing more).",
    },
    {
        .path = "dicom.extra_storage_classes",
        .type = CFG_UIDS,
        .offset = CFG_OFF(dicom.extra_storage_classes),
        .count_offset = CFG_OFF(dicom.extra_storage_class_count),
        .doc = "More storage SOP classes to accept, such as a vendor's "
               "private ones (their instances still need a Study Instance "
               "UID).",
        .example = "[\"1.2.826.0.1.3680043.9.7156.1.1\"]",
    },
    {
        .path = "dicom.remote_aes",
        .type = CFG_REMOTES,
        .offset = CFG_OFF(dicom.remote_aes),
        .count_offset = CFG_OFF(dicom.remote_ae_count),
        .doc = "Where remote AEs listen, for the associations we open: a "
               "Storage Commitment report goes to the calling AE's entry "
               "(a caller without one gets no report, which is logged), "
               "and a C-MOVE's Move Destination must be one of them (else "
               "A801). Each entry has \"ae_title\", \"host\" (an IPv4 "
               "address or a host name) and \"port\"; \"tls\": true "
               "opens DICOM TLS, verified against dicom.tls.ca_file, with "
               "dicom.tls.certificate_file as our client certificate; "
               "\"certificate_sha256\" (hex, colons optional) pins the "
               "remote's certificate, since DCMTK checks no host name.",
        .example =
            "[\n"
            "    {\"ae_title\": \"CT1\", \"host\": \"10.1.2.3\", "
            "\"port\": 104},\n"
            "    {\"ae_title\": \"PACS\", \"host\": \"pacs.example\", "
            "\"port\": 2762,\n"
            "     \"tls\": true, \"certificate_sha256\": \"3F:A2:...\"}\n"
            "]",
    },
    {
        .path = "dicom.tls.port",
        .type = CFG_UINT,
        .offset = CFG_OFF(dicom.tls.port),
        .def_uint = 2762,
        .min = 1,
        .max = 65535,
        .doc = "TCP port of DICOM TLS (PS3.15 B.1: 2762, dicom-tls), served "
               "with the plain port when certificate_file is set.",
    },
    {
        .path = "dicom.tls.certificate_file",
        .type = CFG_STRING,
        .offset = CFG_OFF(dicom.tls.certificate_file),
        .def_string = "",
        .check = CFG_CHECK_OPT_PATH,
        .doc = "PEM server certificate, followed by its chain; \"\": no TLS "
               "listener.",
        .example = "\"/etc/stowbridge/tls/server.pem\"",
    },
    {
        .path = "dicom.tls.private_key_file",
        .type = CFG_STRING,
        .offset = CFG_OFF(dicom.tls.private_key_file),
        .def_string = "",
        .check = CFG_CHECK_OPT_PATH,
        .doc = "PEM private key of the certificate, not readable by others; "
               "\"\": the systemd credential tls_key (LoadCredential=).",
        .example = "\"/etc/stowbridge/tls/server.key\"",
    },
    {
        .path = "dicom.tls.private_key_password_file",
        .type = CFG_STRING,
        .offset = CFG_OFF(dicom.tls.private_key_password_file),
        .def_string = "",
        .check = CFG_CHECK_OPT_PATH,
        .doc = "File holding the key's password (first line), not readable "
               "by others; \"\": the key is not encrypted.",
    },
    {
        .path = "dicom.tls.ca_file",
        .type = CFG_STRING,
        .offset = CFG_OFF(dicom.tls.ca_file),
        .def_string = "",
        .check = CFG_CHECK_OPT_PATH,
        .doc = "PEM CA certificates trusted for client certificates (needed "
               "unless client_certificate is \"none\").",
        .example = "\"/etc/stowbridge/tls/modalities-ca.pem\"",
    },
    {
        .path = "dicom.tls.crl_file",
        .type = CFG_STRING,
        .offset = CFG_OFF(dicom.tls.crl_file),
        .def_string = "",
        .check = CFG_CHECK_OPT_PATH,
        .doc = "PEM certificate revocation list(s) of those CAs; \"\": "
               "none.",
    },
    {
        .path = "dicom.tls.client_certificate",
        .type = CFG_STRING,
        .offset = CFG_OFF(dicom.tls.client_certificate),
        .def_string = "required",
        .check = CFG_CHECK_CHOICE,
        .choices = "required|optional|none",
        .doc = "Whether a TLS caller must present a certificate signed by "
               "ca_file (\"optional\": verified when sent).",
    },
    {
        .path = "dicom.tls.profile",
        .type = CFG_STRING,
        .offset = CFG_OFF(dicom.tls.profile),
        .def_string = "bcp195-nd",
        .check = CFG_CHECK_CHOICE,
        .choices = "bcp195-nd|bcp195|bcp195-extended",
        .doc = "DICOM TLS profile as DCMTK 3.6.7 implements it: "
               "\"bcp195-nd\" (Non-Downgrading BCP 195, TLS 1.2 and 1.3), "
               "\"bcp195\", \"bcp195-extended\" (TLS 1.2 only).",
    },
    {
        .path = "dicom.tls.security_level",
        .type = CFG_UINT,
        .offset = CFG_OFF(dicom.tls.security_level),
        .def_uint = 2,
        .min = 0,
        .max = 5,
        .doc = "OpenSSL security level. Below 2 (logged as a warning) it "
               "also lifts our refusal of peer keys under 2048 bits "
               "(RSA/DH) or 224 (EC) and of SHA-1 signatures.",
    },
    {
        .path = "dicom.proxy_protocol.trusted_proxies",
        .type = CFG_NETS,
        .offset = CFG_OFF(dicom.proxy_protocol.trusted_proxies),
        .count_offset = CFG_OFF(dicom.proxy_protocol.trusted_proxy_count),
        .doc = "Load balancers (IPv4/IPv6 addresses or CIDR networks) whose "
               "connections start with a PROXY v1 or v2 header "
               "(send-proxy, send-proxy-v2); the address it carries is the "
               "caller's. Their connections without one, and PROXY headers "
               "from anyone else, are dropped.",
        .example = "[\"10.0.0.5\", \"fd00::/64\"]",
    },
    {
        .path = "spool.dir",
        .type = CFG_STRING,
        .offset = CFG_OFF(spool.dir),
        .def_string = "/var/spool/stowbridge",
        .check = CFG_CHECK_ABS_PATH,
        .doc = "The spool directory (created 0700 if missing).",
    },
    {
        .path = "spool.min_free_mb",
        .type = CFG_UINT,
        .offset = CFG_OFF(spool.min_free_mb),
        .def_uint = 512,
        .min = 0,
        .max = 1048576,
        .doc = "Below this much free space (MiB) on the spool's file "
               "system, every C-STORE is refused with A700 (out of "
               "resources).",
    },
    {
        .path = "spool.journal_mb",
        .type = CFG_UINT,
        .offset = CFG_OFF(spool.journal_mb),
        .def_uint = 256,
        .min = 0,
        .max = 65536,
        .doc =
            "Size (MiB, at least 8) of the spool's intake journal "
            "(<spool.dir>/journal/, written with zeros once): each "
            "received instance up to spool.journal_max_kb is made durable "
            "with one flush there before its success is answered, and "
            "its file in incoming/ later by a checkpoint (spool.journal_checkpoint_ms). "
            "0: every instance is made durable file by file (two "
            "flushes in a row).",
    },
    {
        .path = "spool.journal_max_kb",
        .type = CFG_UINT,
        .offset = CFG_OFF(spool.journal_max_kb),
        .def_uint = 1024,
        .min = 4,
        .max = 1048576,
        .doc = "Instances up to this size (KiB; and up to an eighth of "
               "spool.journal_mb) are received into memory and go through "
               "the intake journal, over 256 KiB one C-STORE at a time; "
               "every other instance is committed file by file (copying a "
               "file into the journal costs more than the flush it saves).",
    },
    {
        .path = "spool.journal_checkpoint_ms",
        .type = CFG_UINT,
        .offset = CFG_OFF(spool.journal_checkpoint_ms),
        .def_uint = 1000,
        .min = 100,
        .max = 600000,
        .doc = "How often (ms) the intake journal's checkpoint makes the "
               "files received since the last one durable with one "
               "syncfs() (sooner when a quarter of the journal was "
               "written). Longer: fewer flushes, more to replay after a "
               "crash, and an entry delivered within it may be sent again "
               "after one.",
    },
    {
        .path = "log.level",
        .type = CFG_LEVEL,
        .offset = CFG_OFF(log.level),
        .def_string = "info",
        .doc = "Most verbose level logged (\"error\" is accepted for "
               "\"err\").",
    },
    {
        .path = "upload.url",
        .type = CFG_STRING,
        .offset = CFG_OFF(upload.url),
        .def_string = "",
        .check = CFG_CHECK_URL,
        .doc = "The DICOMweb base URL; instances are sent to "
               "{url}/studies/{StudyInstanceUID}. Empty: receive-only (the "
               "spool fills, nothing is sent).",
        .example = "\"https://myws-mydicom.dicom.azurehealthcareapis.com/v2\"",
    },
    {
        .path = "upload.workers",
        .type = CFG_UINT,
        .offset = CFG_OFF(upload.workers),
        .def_uint = 4,
        .min = 1,
        .max = 64,
        .doc = "Upload workers, each with its own connection.",
    },
    {
        .path = "upload.batch_max_instances",
        .type = CFG_UINT,
        .offset = CFG_OFF(upload.batch_max_instances),
        .def_uint = 50,
        .min = 1,
        .max = 1000,
        .doc = "Most instances of one study sent in one STOW-RS request.",
    },
    {
        .path = "upload.batch_max_mb",
        .type = CFG_UINT,
        .offset = CFG_OFF(upload.batch_max_mb),
        .def_uint = 100,
        .min = 1,
        .max = 4096,
        .doc = "Most MiB in one STOW-RS request (a single larger instance "
               "is still sent, alone).",
    },
    {
        .path = "upload.on_conflict",
        .type = CFG_STRING,
        .offset = CFG_OFF(upload.on_conflict),
        .def_string = "keep-first",
        .check = CFG_CHECK_CHOICE,
        .choices = "keep-first|send",
        .doc = "A later copy of a SOP Instance UID whose data set differs "
               "from the copy before it, while that one is still queued. "
               "keep-first: the later copy goes to failed/ as a "
               "\"conflicting duplicate\" (queue list/show), the first is "
               "sent. send: it is sent too, after the earlier one is "
               "resolved, and the server decides. Copies are always sent "
               "in arrival order; an identical copy is sent once.",
    },
    {
        .path = "upload.timeout_s",
        .type = CFG_UINT,
        .offset = CFG_OFF(upload.timeout_s),
        .def_uint = 60,
        .min = 1,
        .max = 3600,
        .doc = "Connect timeout, and the longest a transfer may stall "
               "(move less than 1 KiB/s), in seconds. A QIDO-RS or token "
               "request ends after this long in all, a STOW-RS request "
               "after 2 x this + its body size / 16 KiB/s.",
    },
    {
        .path = "upload.ca_file",
        .type = CFG_STRING,
        .offset = CFG_OFF(upload.ca_file),
        .def_string = "",
        .check = CFG_CHECK_OPT_PATH,
        .doc = "PEM file of the CAs to trust for the DICOMweb and token "
               "servers (a self-signed server: its certificate). Empty: "
               "the system's CA store.",
    },
    {
        .path = "auth.type",
        .type = CFG_STRING,
        .offset = CFG_OFF(auth.type),
        .def_string = "none",
        .check = CFG_CHECK_CHOICE,
        .choices = "none|client_credentials|azure|static|managed_identity|"
                   "command",
        .doc = "How to get a Bearer token: none; client_credentials (OAuth2: "
               "token_url, client_id, and a secret, a certificate or a "
               "federated token file; usually scope); azure (Microsoft "
               "Entra ID: tenant, client_id, and a secret, a certificate "
               "or a federated token file; fills the token URL and the "
               "DICOM service scope); managed_identity (the Azure VM or "
               "Azure Arc identity: no secret); command (a program such as "
               "the Azure CLI prints the token); static (a fixed token, for "
               "testing).",
    },
    {
        .path = "auth.token_url",
        .type = CFG_STRING,
        .offset = CFG_OFF(auth.token_url),
        .def_string = "",
        .check = CFG_CHECK_URL,
        .doc = "OAuth2 token endpoint (client_credentials).",
    },
    {
        .path = "auth.client_id",
        .type = CFG_STRING,
        .offset = CFG_OFF(auth.client_id),
        .def_string = "",
        .doc = "OAuth2 client ID (the Entra application ID for azure; for "
               "managed_identity, a user-assigned identity's client ID, "
               "empty for the system-assigned one).",
    },
    {
        .path = "auth.client_secret",
        .type = CFG_STRING,
        .offset = CFG_OFF(auth.client_secret),
        .def_string = "",
        .secret = true,
        .doc = "The client secret, inline. Prefer client_secret_file or "
               "the systemd credential client_secret (LoadCredential=).",
    },
    {
        .path = "auth.client_secret_file",
        .type = CFG_STRING,
        .offset = CFG_OFF(auth.client_secret_file),
        .def_string = "",
        .check = CFG_CHECK_OPT_PATH,
        .doc = "A file holding the client secret (not readable by others).",
    },
    {
        .path = "auth.client_secret_expires",
        .type = CFG_STRING,
        .offset = CFG_OFF(auth.client_secret_expires),
        .def_string = "",
        .doc = "The expiry date Entra stated for the client secret "
               "(YYYY-MM-DD, UTC), so that 'stowbridge check' warns 30 days "
               "ahead and says when it has passed. Empty: not known.",
        .example = "\"2027-06-30\"",
    },
    {
        .path = "auth.scope",
        .type = CFG_STRING,
        .offset = CFG_OFF(auth.scope),
        .def_string = "",
        .doc = "Scope requested (azure: "
               "https://dicom.healthcareapis.azure.com/.default when empty).",
    },
    {
        .path = "auth.resource",
        .type = CFG_STRING,
        .offset = CFG_OFF(auth.resource),
        .def_string = "",
        .doc = "Resource requested, for v1-style token servers; for "
               "managed_identity the audience of the token "
               "(https://dicom.healthcareapis.azure.com when empty).",
    },
    {
        .path = "auth.client_auth",
        .type = CFG_STRING,
        .offset = CFG_OFF(auth.client_auth),
        .def_string = "body",
        .check = CFG_CHECK_CHOICE,
        .choices = "body|basic",
        .doc = "How the client authenticates to the token endpoint: ID and "
               "secret in the form body, or HTTP Basic.",
    },
    {
        .path = "auth.tenant",
        .type = CFG_STRING,
        .offset = CFG_OFF(auth.tenant),
        .def_string = "",
        .doc = "azure: the directory (tenant) ID or domain.",
    },
    {
        .path = "auth.client_certificate_file",
        .type = CFG_STRING,
        .offset = CFG_OFF(auth.client_certificate_file),
        .def_string = "",
        .check = CFG_CHECK_OPT_PATH,
        .doc = "client_credentials and azure: authenticate with this "
               "certificate (PEM, the one uploaded to the app) instead of a "
               "secret: a private_key_jwt client assertion (RFC 7523) signed "
               "for every token request.",
    },
    {
        .path = "auth.client_key_file",
        .type = CFG_STRING,
        .offset = CFG_OFF(auth.client_key_file),
        .def_string = "",
        .check = CFG_CHECK_OPT_PATH,
        .doc = "The certificate's RSA private key (PEM, unencrypted, not "
               "readable by others). Empty: the systemd credential "
               "client_key (LoadCredential=), else the certificate file.",
    },
    {
        .path = "auth.assertion_alg",
        .type = CFG_STRING,
        .offset = CFG_OFF(auth.assertion_alg),
        .def_string = "PS256",
        .check = CFG_CHECK_CHOICE,
        .choices = "PS256|RS256",
        .doc = "Signature of the certificate's client assertion: PS256 "
               "(Entra's current format, x5t#S256) or RS256 (the older one, "
               "with x5t too).",
    },
    {
        .path = "auth.client_assertion_file",
        .type = CFG_STRING,
        .offset = CFG_OFF(auth.client_assertion_file),
        .def_string = "",
        .check = CFG_CHECK_OPT_PATH,
        .doc = "client_credentials and azure: workload identity: a file "
               "holding a federated token (audience "
               "api://AzureADTokenExchange), read on every token request. "
               "Empty with azure: $AZURE_FEDERATED_TOKEN_FILE when set and "
               "no secret or certificate is configured.",
    },
    {
        .path = "auth.endpoint",
        .type = CFG_STRING,
        .offset = CFG_OFF(auth.endpoint),
        .def_string = "",
        .check = CFG_CHECK_URL,
        .doc = "managed_identity: the identity endpoint's URL. Empty: "
               "detected as the Azure SDKs do (Azure Arc agent, else the "
               "VM's instance metadata endpoint).",
    },
    {
        .path = "auth.command",
        .type = CFG_ARGV,
        .offset = CFG_OFF(auth.command),
        .count_offset = CFG_OFF(auth.command_count),
        .doc = "command: the program and its arguments, run without a shell "
               "(the first word is looked up in PATH). It prints the Azure "
               "CLI's, PowerShell's or an OAuth2 token answer as JSON.",
        .example = "[\"az\", \"account\", \"get-access-token\", "
                   "\"--resource\",\n"
                   "    \"https://dicom.healthcareapis.azure.com\", "
                   "\"--output\", \"json\"]",
    },
    {
        .path = "auth.command_timeout_s",
        .type = CFG_UINT,
        .offset = CFG_OFF(auth.command_timeout_s),
        .def_uint = 60,
        .min = 1,
        .max = 600,
        .doc = "command: seconds the command may take; then it is killed "
               "and the attempt counts as an outage.",
    },
    {
        .path = "auth.token",
        .type = CFG_STRING,
        .offset = CFG_OFF(auth.token),
        .def_string = "",
        .secret = true,
        .doc = "static: the Bearer token.",
    },
    {
        .path = "retry.min_s",
        .type = CFG_UINT,
        .offset = CFG_OFF(retry.min_s),
        .def_uint = 5,
        .min = 1,
        .max = 3600,
        .doc = "First wait after a transient failure, in seconds; it "
               "doubles (with jitter) after each one.",
    },
    {
        .path = "retry.max_s",
        .type = CFG_UINT,
        .offset = CFG_OFF(retry.max_s),
        .def_uint = 600,
        .min = 1,
        .max = 86400,
        .doc = "Longest wait between attempts, in seconds (at least "
               "retry.min_s).",
    },
    {
        .path = "retry.max_pause_s",
        .type = CFG_UINT,
        .offset = CFG_OFF(retry.max_pause_s),
        .def_uint = 600,
        .min = 1,
        .max = 86400,
        .doc = "Longest pause of every upload that a 429 or 503 with "
               "Retry-After can ask for, in seconds; a longer Retry-After "
               "is cut to this (both are logged). 'stowbridge queue "
               "resume' ends a pause at once.",
    },
    {
        .path = "retry.max_age_h",
        .type = CFG_UINT,
        .offset = CFG_OFF(retry.max_age_h),
        .def_uint = 168,
        .min = 1,
        .max = 8760,
        .doc = "An entry still not delivered this many hours after arrival "
               "goes to failed/ as expired.",
    },
    {
        .path = "query.enabled",
        .type = CFG_BOOL,
        .offset = CFG_OFF(query.enabled),
        .def_uint = 1,
        .doc = "Answer C-FIND (Patient Root and Study Root) by translating "
               "it to QIDO-RS against upload.url, with the same token. "
               "Needs upload.url; a caller's \"find\": false in "
               "dicom.allowed_callers refuses it for that caller.",
    },
    {
        .path = "query.profile",
        .type = CFG_STRING,
        .offset = CFG_OFF(query.profile),
        .def_string = "standard",
        .check = CFG_CHECK_CHOICE,
        .choices = "standard|azure|orthanc",
        .doc = "What the QIDO-RS server can match. standard: every key is "
               "sent as a QIDO-RS parameter. azure: only what the Azure "
               "DICOM service accepts is sent (no wildcards, UID lists, time "
               "ranges or unsupported attributes); the rest is matched "
               "here on the results. orthanc: like standard, but a value "
               "that needs percent-encoding (non-ASCII, space, + & = # %% "
               ",) is matched here, since Orthanc (1.10 with DICOMweb 1.7) "
               "does not decode it. Every way, the answers follow DIMSE "
               "matching rules.",
    },
    {
        .path = "query.page_size",
        .type = CFG_UINT,
        .offset = CFG_OFF(query.page_size),
        .def_uint = 100,
        .min = 1,
        .max = 1000,
        .doc = "Results asked per QIDO-RS request (limit); further pages "
               "follow with offset. At most 200 with query.profile azure.",
    },
    {
        .path = "query.max_results",
        .type = CFG_UINT,
        .offset = CFG_OFF(query.max_results),
        .def_uint = 5000,
        .min = 1,
        .max = 1000000,
        .doc = "Most results read from the server for one C-FIND. When more "
               "exist, the answers sent end with status A700 and an error "
               "comment saying the list is incomplete, and the log says so.",
    },
    {
        .path = "commit.enabled",
        .type = CFG_BOOL,
        .offset = CFG_OFF(commit.enabled),
        .def_uint = 1,
        .doc = "Offer Storage Commitment Push Model (1.2.840.10008.1.20.1) "
               "as SCP: an instance is committed only once the DICOMweb "
               "server has it (README, Storage Commitment). Needs "
               "upload.url; a caller's \"commit\": false in "
               "dicom.allowed_callers refuses it for that caller.",
    },
    {
        .path = "commit.max_wait_h",
        .type = CFG_UINT,
        .offset = CFG_OFF(commit.max_wait_h),
        .def_uint = 24,
        .min = 1,
        .max = 8760,
        .doc = "Hours a commitment request waits for its instances to be "
               "delivered; then those still queued are reported as failed "
               "(0110 processing failure, or 0213 resource limitation when "
               "the spool is below spool.min_free_mb). The report itself "
               "is retried until max_wait_h + 24 hours after the request.",
    },
    {
        .path = "commit.report_retry_max_s",
        .type = CFG_UINT,
        .offset = CFG_OFF(commit.report_retry_max_s),
        .def_uint = 300,
        .min = 1,
        .max = 86400,
        .doc = "Longest pause between two attempts to deliver a report "
               "(the pause starts at 2 s and doubles), in seconds.",
    },
    {
        .path = "commit.same_association",
        .type = CFG_BOOL,
        .offset = CFG_OFF(commit.same_association),
        .def_uint = 0,
        .doc = "Try each report first on the association that carried its "
               "request, while the modality keeps it open (PS3.4 J.3.3); "
               "if it is gone or the attempt fails, the report goes on a "
               "new association as always. Off: many modalities release "
               "right after the N-ACTION response.",
    },
    {
        .path = "retrieve.max_temp_mb",
        .type = CFG_UINT,
        .offset = CFG_OFF(retrieve.max_temp_mb),
        .def_uint = 256,
        .min = 1,
        .max = 1048576,
        .doc = "MiB of instances one C-MOVE or C-GET may have fetched "
               "(WADO-RS, into the spool's tmp/) ahead of sending them; the "
               "fetch pauses beyond it. One instance larger than this is "
               "still fetched whole. Retrieve is offered only with "
               "upload.url.",
    },
    {
        .path = "retrieve.max_parallel",
        .type = CFG_UINT,
        .offset = CFG_OFF(retrieve.max_parallel),
        .def_uint = 4,
        .min = 1,
        .max = 64,
        .doc = "C-MOVE and C-GET operations served at once; one more is "
               "refused at once with A701 and an Error Comment (not "
               "queued).",
    },
    {
        .path = "ledger.path",
        .type = CFG_STRING,
        .offset = CFG_OFF(ledger.path),
        .def_string = "",
        .check = CFG_CHECK_OPT_PATH,
        .doc = "The delivery ledger (SQLite, WAL mode): every delivered "
               "instance and every commitment transaction. \"\" puts it at "
               "<spool.dir>/ledger.db. Losing it loses no image: "
               "commitment then asks the server.",
    },
    {
        .path = "ledger.keep_days",
        .type = CFG_UINT,
        .offset = CFG_OFF(ledger.keep_days),
        .def_uint = 30,
        .min = 1,
        .max = 3650,
        .doc = "Days deliveries and commitment transactions are kept in "
               "the ledger (pruned hourly).",
    },
    {
        .path = "admin.listen",
        .type = CFG_STRING,
        .offset = CFG_OFF(admin.listen),
        .def_string = "127.0.0.1:9475",
        .doc = "Address and port of the admin HTTP endpoint: Prometheus "
               "metrics at /metrics, /healthz, /readyz and the status page "
               "at /. A numeric address, IPv6 in brackets "
               "(\"[::1]:9475\"). Empty: no endpoint. Any address other "
               "than loopback needs admin.token_file.",
    },
    {
        .path = "admin.token_file",
        .type = CFG_STRING,
        .offset = CFG_OFF(admin.token_file),
        .def_string = "",
        .check = CFG_CHECK_OPT_PATH,
        .doc = "File holding the admin bearer token (one line, not "
               "readable by others). With it, / and /metrics need "
               "\"Authorization: Bearer <token>\" (or Basic with the token "
               "as password, for a browser); /healthz and /readyz stay "
               "open. Empty: no token, allowed on loopback only.",
        .example = "\"/etc/stowbridge/admin-token\"",
    },
    {
        .path = "admin.allow_actions",
        .type = CFG_BOOL,
        .offset = CFG_OFF(admin.allow_actions),
        .def_uint = 0,
        .doc = "Offer the status page's actions (retry a failed entry, "
               "retry every failed entry) as POSTs with the bearer token. "
               "Needs admin.token_file.",
    },
    {
        .path = "admin.ready_window_s",
        .type = CFG_UINT,
        .offset = CFG_OFF(admin.ready_window_s),
        .def_uint = 600,
        .min = 10,
        .max = 86400,
        .doc = "/readyz answers 503 unless the DICOMweb server answered a "
               "request sent with a valid token within this many seconds "
               "(the daemon asks it when nothing was sent meanwhile).",
    },
};

#define CFG_KEY_COUNT (sizeof(cfg_keys) / sizeof(cfg_keys[0]))

/*
 * Copies at most @max bytes of @text (@len bytes long) into @buf for a
 * message: control characters become '?', and "..." marks a cut. @buf
 * holds at least @max + 4 bytes.
 */
static const char *cfg_quote(char *buf, size_t buf_size, const char *text,
                             size_t len, size_t max)
{
    size_t n = 0;

    while (n < len && n < max && n + 4 < buf_size) {
        unsigned char c = (unsigned char)text[n];

        buf[n++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    if (n < len && n + 3 < buf_size) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
    return buf;
}

/* cfg_quote() for a NUL-terminated string. */
static const char *cfg_quote_str(char *buf, size_t buf_size, const char *s)
{
    return cfg_quote(buf, buf_size, s, strlen(s), buf_size - 4);
}

/* Length of the section part of @key's path. */
static size_t cfg_section_len(const struct cfg_key *key)
{
    return (size_t)(strchr(key->path, '.') - key->path);
}

/* The name of @key inside its section. */
static const char *cfg_key_name(const struct cfg_key *key)
{
    return key->path + cfg_section_len(key) + 1;
}

/* True if @key belongs to the section named @section. */
static bool cfg_in_section(const struct cfg_key *key, const char *section)
{
    size_t len = cfg_section_len(key);

    return strncmp(key->path, section, len) == 0 && section[len] == '\0';
}

/* True if cfg_keys[@i] is the first row of its section. */
static bool cfg_section_first(size_t i)
{
    size_t len = cfg_section_len(&cfg_keys[i]);

    for (size_t j = 0; j < i; j++)
        if (cfg_section_len(&cfg_keys[j]) == len &&
            strncmp(cfg_keys[j].path, cfg_keys[i].path, len) == 0)
            return false;
    return true;
}

static bool cfg_section_known(const char *section)
{
    for (size_t i = 0; i < CFG_KEY_COUNT; i++)
        if (cfg_in_section(&cfg_keys[i], section))
            return true;
    return false;
}

static const struct cfg_key *cfg_key_find(const char *section, const char *name)
{
    for (size_t i = 0; i < CFG_KEY_COUNT; i++)
        if (cfg_in_section(&cfg_keys[i], section) &&
            strcmp(cfg_key_name(&cfg_keys[i]), name) == 0)
            return &cfg_keys[i];
    return NULL;
}

static void *cfg_field(struct cfg *cfg, size_t offset)
{
    return (char *)cfg + offset;
}

static const void *cfg_cfield(const struct cfg *cfg, size_t offset)
{
    return (const char *)cfg + offset;
}

static void cfg_free_remotes(struct cfg_remote_ae *remotes, size_t count)
{
    if (remotes == NULL)
        return;
    for (size_t i = 0; i < count; i++) {
        free(remotes[i].ae_title);
        free(remotes[i].host);
        free(remotes[i].certificate_sha256);
    }
    free(remotes);
}

static void cfg_free_uids(char **uids, size_t count)
{
    if (uids == NULL)
        return;
    for (size_t i = 0; i < count; i++)
        free(uids[i]);
    free(uids);
}

static void cfg_free_callers(struct cfg_caller *callers, size_t count)
{
    if (callers == NULL)
        return;
    for (size_t i = 0; i < count; i++) {
        free(callers[i].ae_title);
        free(callers[i].hosts);
        cfg_free_uids(callers[i].certificate_sha256,
                      callers[i].certificate_sha256_count);
        free(callers[i].certificate_subject);
    }
    free(callers);
}

void cfg_free(struct cfg *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < CFG_KEY_COUNT; i++) {
        const struct cfg_key *key = &cfg_keys[i];

        switch (key->type) {
        case CFG_STRING: {
            char *str = *(char **)cfg_field(cfg, key->offset);
            if (key->secret && str != NULL)
                explicit_bzero(str, strlen(str));
            free(str);
            break;
        }
        case CFG_CALLERS:
            cfg_free_callers(*(struct cfg_caller **)cfg_field(cfg, key->offset),
                             *(size_t *)cfg_field(cfg, key->count_offset));
            break;
        case CFG_UIDS:
        case CFG_ARGV:
        case CFG_NETS:
            cfg_free_uids(*(char ***)cfg_field(cfg, key->offset),
                          *(size_t *)cfg_field(cfg, key->count_offset));
            break;
        case CFG_REMOTES:
            cfg_free_remotes(
                *(struct cfg_remote_ae **)cfg_field(cfg, key->offset),
                *(size_t *)cfg_field(cfg, key->count_offset));
            break;
        case CFG_UINT:
        case CFG_LEVEL:
        case CFG_BOOL:
            break;
        }
    }
    free(cfg);
}

int cfg_defaults(struct cfg **ret_cfg)
{
    struct cfg *cfg = calloc(1, sizeof(*cfg));

    if (cfg == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < CFG_KEY_COUNT; i++) {
        const struct cfg_key *key = &cfg_keys[i];
        enum log_level level = LOG_LEVEL_INFO;
        char **str;

        switch (key->type) {
        case CFG_STRING:
            str = cfg_field(cfg, key->offset);
            *str = strdup(key->def_string);
            if (*str == NULL) {
                cfg_free(cfg);
                return -ENOMEM;
            }
            break;
        case CFG_UINT:
            *(unsigned *)cfg_field(cfg, key->offset) = key->def_uint;
            break;
        case CFG_LEVEL:
            (void)log_level_parse(key->def_string, &level);
            *(int *)cfg_field(cfg, key->offset) = (int)level;
            break;
        case CFG_CALLERS:
        case CFG_UIDS:
        case CFG_REMOTES:
        case CFG_ARGV:
        case CFG_NETS:
            /* calloc: an empty list. */
            break;
        case CFG_BOOL:
            *(bool *)cfg_field(cfg, key->offset) = key->def_uint != 0;
            break;
        }
    }
    *ret_cfg = cfg;
    return 0;
}

/* Levenshtein distance of @a and @b, or a large number if either is long. */
static unsigned cfg_distance(const char *a, const char *b)
{
    enum { CFG_DISTANCE_LEN = 64, CFG_DISTANCE_FAR = 99 };
    unsigned row[CFG_DISTANCE_LEN + 1];
    size_t la = strlen(a);
    size_t lb = strlen(b);

    if (la > CFG_DISTANCE_LEN || lb > CFG_DISTANCE_LEN)
        return CFG_DISTANCE_FAR;
    for (size_t j = 0; j <= lb; j++)
        row[j] = (unsigned)j;
    for (size_t i = 1; i <= la; i++) {
        unsigned diag = row[0];

        row[0] = (unsigned)i;
        for (size_t j = 1; j <= lb; j++) {
            unsigned up = row[j];
            unsigned best = diag + (a[i - 1] == b[j - 1] ? 0 : 1);

            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/*
 * Reports the unknown key @name, in @section (NULL: at the top level),
 * suggesting the closest known key or section within
 * CFG_SUGGEST_DISTANCE edits.
 */
static void cfg_unknown_key(const char *section, const char *name, char *err,
                            size_t err_len)
{
    char quoted[CFG_NAME_MAX + 4];
    char path[160];
    char best[96];
    unsigned best_d = CFG_SUGGEST_DISTANCE + 1;

    if (section != NULL)
        (void)snprintf(path, sizeof(path), "%s.%s", section, name);
    else
        (void)snprintf(path, sizeof(path), "%s", name);
    for (size_t i = 0; i < CFG_KEY_COUNT; i++) {
        const struct cfg_key *key = &cfg_keys[i];
        char candidate[96];
        unsigned d;

        if (section != NULL) {
            (void)snprintf(candidate, sizeof(candidate), "%s", key->path);
        } else {
            if (!cfg_section_first(i))
                continue;
            (void)snprintf(candidate, sizeof(candidate), "%.*s",
                           (int)cfg_section_len(key), key->path);
        }
        d = cfg_distance(path, candidate);
        if (d < best_d) {
            best_d = d;
            memcpy(best, candidate, sizeof(best));
        }
    }
    (void)cfg_quote_str(quoted, sizeof(quoted), path);
    if (best_d <= CFG_SUGGEST_DISTANCE)
        util_err(err, err_len, "config: unknown key '%s' (did you mean '%s'?)",
                 quoted, best);
    else
        util_err(err, err_len, "config: unknown key '%s'", quoted);
}

/* "a string", "a number", ... for "got ..." in messages. */
static const char *cfg_json_type(const cJSON *item)
{
    if (cJSON_IsString(item))
        return "a string";
    if (cJSON_IsNumber(item))
        return "a number";
    if (cJSON_IsBool(item))
        return "a boolean";
    if (cJSON_IsNull(item))
        return "null";
    if (cJSON_IsArray(item))
        return "a list";
    if (cJSON_IsObject(item))
        return "an object";
    return "an unknown value";
}

/* Writes @v as it would be written in JSON: integers in full. */
static const char *cfg_number_text(char *buf, size_t buf_size, double v)
{
    /* The range check first: only then is the cast defined. */
    if (v > -1e17 && v < 1e17 && v == (double)(long long)v) {
        (void)snprintf(buf, buf_size, "%lld", (long long)v);
        return buf;
    }
    for (int precision = 1; precision <= 17; precision++) {
        (void)snprintf(buf, buf_size, "%.*g", precision, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    return buf;
}

/* True if the object @obj has a member named like @item before it. */
static bool cfg_duplicate(const cJSON *obj, const cJSON *item)
{
    for (const cJSON *c = obj->child; c != NULL && c != item; c = c->next)
        if (strcmp(c->string, item->string) == 0)
            return true;
    return false;
}

/* Reads an AE title into a new trimmed string. @path names it. */
static int cfg_parse_ae_title(const cJSON *item, const char *path,
                              char **ret_ae, char *err, size_t err_len)
{
    char trimmed[UTIL_AE_TITLE_MAX + 1];
    char quoted[CFG_QUOTE_MAX + 4];
    char *ae;

    if (!cJSON_IsString(item)) {
        util_err(err, err_len,
                 "config: %s: expected an AE title (a string of 1-16 "
                 "characters), got %s",
                 path, cfg_json_type(item));
        return -EINVAL;
    }
    if (!util_ae_title_valid(item->valuestring)) {
        util_err(err, err_len,
                 "config: %s: expected an AE title (1-16 characters, not "
                 "all spaces, no backslash or control characters), got "
                 "\"%s\"",
                 path,
                 cfg_quote_str(quoted, sizeof(quoted), item->valuestring));
        return -EINVAL;
    }
    (void)util_trim_copy(trimmed, sizeof(trimmed), item->valuestring);
    ae = strdup(trimmed);
    if (ae == NULL)
        return -ENOMEM;
    *ret_ae = ae;
    return 0;
}

/* Says why @text is not an IPv4 address or network, for a message. */
static const char *cfg_net_why(const char *text)
{
    const char *slash = strchr(text, '/');
    struct util_ipv4_net net;

    if (strchr(text, ':') != NULL)
        return " (IPv6 is not accepted: " CFG_IPV4_ONLY ")";
    if (slash != NULL) {
        char *addr = strndup(text, (size_t)(slash - text));
        bool addr_ok = addr != NULL && util_ipv4_net_parse(addr, &net) == 0;

        free(addr);
        if (addr_ok)
            return " (the prefix length after '/' must be 0 to 32)";
    }
    for (const char *p = text; *p; p++)
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))
            return " (host names are not accepted: " CFG_IPV4_ONLY ")";
    return "";
}

/* Parses the "hosts" list of entry @index of list @lpath into @caller. */
static int cfg_parse_hosts(struct cfg_caller *caller, const cJSON *list,
                           const char *lpath, size_t index, char *err,
                           size_t err_len)
{
    size_t n = (size_t)cJSON_GetArraySize(list);
    const cJSON *host;

    if (!cJSON_IsArray(list) || n == 0) {
        util_err(err, err_len,
                 "config: %s[%zu].hosts: expected a non-empty list of IPv4 "
                 "addresses or networks " CFG_NET_EXAMPLE " (leave \"hosts\" "
                 "out to accept any address), got %s",
                 lpath, index,
                 cJSON_IsArray(list) ? "[]" : cfg_json_type(list));
        return -EINVAL;
    }
    caller->hosts = calloc(n, sizeof(*caller->hosts));
    if (caller->hosts == NULL)
        return -ENOMEM;
    cJSON_ArrayForEach(host, list)
    {
        size_t h = caller->host_count;
        char quoted[CFG_QUOTE_MAX + 4];

        if (!cJSON_IsString(host)) {
            util_err(err, err_len,
                     "config: %s[%zu].hosts[%zu]: expected an IPv4 address or "
                     "network " CFG_NET_EXAMPLE " as a string, got %s",
                     lpath, index, h, cfg_json_type(host));
            return -EINVAL;
        }
        if (util_ipv4_net_parse(host->valuestring, &caller->hosts[h]) < 0) {
            util_err(err, err_len,
                     "config: %s[%zu].hosts[%zu]: expected an IPv4 address or "
                     "network " CFG_NET_EXAMPLE ", got \"%s\"%s",
                     lpath, index, h,
                     cfg_quote_str(quoted, sizeof(quoted), host->valuestring),
                     cfg_net_why(host->valuestring));
            return -EINVAL;
        }
        caller->host_count++;
    }
    return 0;
}

/* A SHA-256 fingerprint in hex, with or without colons, any case, as 64
 * lowercase hex digits into @hex. Returns 0 or -EINVAL. */
static int cfg_parse_one_fingerprint(const char *text, char hex[65])
{
    size_t len = 0;

    for (const char *c = text; *c; c++) {
        if (*c == ':')
            continue;
        if (len == 64 ||
            !((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f') ||
              (*c >= 'A' && *c <= 'F')))
            return -EINVAL;
        hex[len++] = (char)(*c >= 'A' && *c <= 'F' ? *c - 'A' + 'a' : *c);
    }
    hex[len] = '\0';
    return len == 64 ? 0 : -EINVAL;
}

/*
 * Parses the "certificate_sha256" list of entry @index: each a SHA-256
 * fingerprint in hex, with or without colons, any case; stored as 64
 * lowercase hex digits.
 */
static int cfg_parse_fingerprints(struct cfg_caller *caller, const cJSON *list,
                                  const char *lpath, size_t index, char *err,
                                  size_t err_len)
{
    size_t n = (size_t)cJSON_GetArraySize(list);
    const cJSON *item;

    if (!cJSON_IsArray(list) || n == 0 || n > CFG_UIDS_MAX) {
        util_err(err, err_len,
                 "config: %s[%zu].certificate_sha256: expected a non-empty "
                 "list of SHA-256 fingerprints, got %s",
                 lpath, index,
                 cJSON_IsArray(list) ? "[] or a longer list"
                                     : cfg_json_type(list));
        return -EINVAL;
    }
    caller->certificate_sha256 = calloc(n, sizeof(char *));
    if (caller->certificate_sha256 == NULL)
        return -ENOMEM;
    cJSON_ArrayForEach(item, list)
    {
        size_t k = caller->certificate_sha256_count;
        char hex[65];

        if (!cJSON_IsString(item) ||
            cfg_parse_one_fingerprint(item->valuestring, hex) < 0) {
            util_err(err, err_len,
                     "config: %s[%zu].certificate_sha256[%zu]: expected a "
                     "SHA-256 fingerprint (64 hex digits, colons allowed), as "
                     "'stowbridge tls-fingerprint FILE' prints it",
                     lpath, index, k);
            return -EINVAL;
        }
        caller->certificate_sha256[k] = strdup(hex);
        if (caller->certificate_sha256[k] == NULL)
            return -ENOMEM;
        caller->certificate_sha256_count++;
    }
    return 0;
}

/* Parses entry @index of the caller list @lpath into @caller. */
static int cfg_parse_caller(struct cfg_caller *caller, const cJSON *item,
                            const char *lpath, size_t index, char *err,
                            size_t err_len)
{
    const cJSON *member;
    int r;

    caller->find = true;
    caller->commit = true;
    caller->retrieve = true;
    if (!cJSON_IsObject(item)) {
        util_err(err, err_len,
                 "config: %s[%zu]: expected an object with \"ae_title\" "
                 "and/or \"hosts\", got %s",
                 lpath, index, cfg_json_type(item));
        return -EINVAL;
    }
    cJSON_ArrayForEach(member, item)
    {
        bool is_ae = strcmp(member->string, "ae_title") == 0;
        bool is_hosts = strcmp(member->string, "hosts") == 0;
        bool is_find = strcmp(member->string, "find") == 0;
        bool is_commit = strcmp(member->string, "commit") == 0;
        bool is_retrieve = strcmp(member->string, "retrieve") == 0;
        bool is_sha = strcmp(member->string, "certificate_sha256") == 0;
        bool is_subject = strcmp(member->string, "certificate_subject") == 0;
        bool is_tls_only = strcmp(member->string, "tls_only") == 0;

        if (!is_ae && !is_hosts && !is_find && !is_commit && !is_retrieve &&
            !is_sha && !is_subject && !is_tls_only) {
            char quoted[CFG_NAME_MAX + 4];

            util_err(err, err_len,
                     "config: unknown key '%s[%zu].%s' (an entry takes "
                     "\"ae_title\", \"hosts\", \"find\", \"commit\", "
                     "\"retrieve\", \"certificate_sha256\", "
                     "\"certificate_subject\" and "
                     "\"tls_only\")",
                     lpath, index,
                     cfg_quote_str(quoted, sizeof(quoted), member->string));
            return -EINVAL;
        }
        if (cfg_duplicate(item, member)) {
            util_err(err, err_len, "config: duplicate key '%s[%zu].%s'", lpath,
                     index, member->string);
            return -EINVAL;
        }
        if (is_find || is_commit || is_retrieve) {
            if (!cJSON_IsBool(member)) {
                util_err(err, err_len,
                         "config: %s[%zu].%s: expected true or false, got %s",
                         lpath, index, member->string, cfg_json_type(member));
                return -EINVAL;
            }
            if (is_find)
                caller->find = cJSON_IsTrue(member);
            else if (is_commit)
                caller->commit = cJSON_IsTrue(member);
            else
                caller->retrieve = cJSON_IsTrue(member);
            continue;
        }
        if (is_tls_only) {
            if (!cJSON_IsBool(member)) {
                util_err(err, err_len,
                         "config: %s[%zu].tls_only: expected true or false, "
                         "got %s",
                         lpath, index, cfg_json_type(member));
                return -EINVAL;
            }
            caller->tls_only = cJSON_IsTrue(member);
            continue;
        }
        if (is_subject) {
            if (!cJSON_IsString(member) || member->valuestring[0] == '\0' ||
                strlen(member->valuestring) > 255) {
                util_err(err, err_len,
                         "config: %s[%zu].certificate_subject: expected the "
                         "certificate's CN or a DNS/URI name (1-255 "
                         "characters), got %s",
                         lpath, index,
                         cJSON_IsString(member) ? "an empty or longer string"
                                                : cfg_json_type(member));
                return -EINVAL;
            }
            caller->certificate_subject = strdup(member->valuestring);
            if (caller->certificate_subject == NULL)
                return -ENOMEM;
            continue;
        }
        if (is_sha) {
            r = cfg_parse_fingerprints(caller, member, lpath, index, err,
                                       err_len);
            if (r < 0)
                return r;
            continue;
        }
        if (is_ae) {
            char path[128];

            (void)snprintf(path, sizeof(path), "%s[%zu].ae_title", lpath,
                           index);
            r = cfg_parse_ae_title(member, path, &caller->ae_title, err,
                                   err_len);
        } else {
            r = cfg_parse_hosts(caller, member, lpath, index, err, err_len);
        }
        if (r < 0)
            return r;
    }
    if (caller->ae_title == NULL && caller->host_count == 0) {
        util_err(err, err_len,
                 "config: %s[%zu]: an entry needs \"ae_title\", \"hosts\" "
                 "or both, got an empty object",
                 lpath, index);
        return -EINVAL;
    }
    return 0;
}

/*
 * Parses the CFG_CALLERS value @list into @cfg. The list and its count are
 * set before each entry is parsed, so cfg_free() releases a half-built
 * list.
 */
static int cfg_parse_callers(struct cfg *cfg, const struct cfg_key *key,
                             const cJSON *list, char *err, size_t err_len)
{
    struct cfg_caller **callers = cfg_field(cfg, key->offset);
    size_t *count = cfg_field(cfg, key->count_offset);
    size_t n = (size_t)cJSON_GetArraySize(list);
    const cJSON *item;
    int r;

    if (!cJSON_IsArray(list)) {
        util_err(err, err_len,
                 "config: %s: expected a list of {\"ae_title\": ..., "
                 "\"hosts\": [...]} objects, got %s",
                 key->path, cfg_json_type(list));
        return -EINVAL;
    }
    if (n == 0)
        return 0;
    *callers = calloc(n, sizeof(**callers));
    if (*callers == NULL)
        return -ENOMEM;
    cJSON_ArrayForEach(item, list)
    {
        size_t index = *count;

        *count = index + 1;
        r = cfg_parse_caller(&(*callers)[index], item, key->path, index, err,
                             err_len);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Parses entry @index of the remote AE list @lpath into @remote. */
static int cfg_parse_remote(struct cfg_remote_ae *remote, const cJSON *item,
                            const char *lpath, size_t index, char *err,
                            size_t err_len)
{
    const cJSON *member;
    char quoted[CFG_NAME_MAX + 4];
    char path[128];
    bool has_port = false;
    int r;

    if (!cJSON_IsObject(item)) {
        util_err(err, err_len,
                 "config: %s[%zu]: expected an object with \"ae_title\", "
                 "\"host\" and \"port\", got %s",
                 lpath, index, cfg_json_type(item));
        return -EINVAL;
    }
    cJSON_ArrayForEach(member, item)
    {
        const char *name = member->string;

        if (cfg_duplicate(item, member)) {
            util_err(err, err_len, "config: duplicate key '%s[%zu].%s'", lpath,
                     index, name);
            return -EINVAL;
        }
        (void)snprintf(path, sizeof(path), "%s[%zu].%s", lpath, index, name);
        if (strcmp(name, "ae_title") == 0) {
            r = cfg_parse_ae_title(member, path, &remote->ae_title, err,
                                   err_len);
            if (r < 0)
                return r;
        } else if (strcmp(name, "host") == 0) {
            const char *h = cJSON_IsString(member) ? member->valuestring : "";
            size_t n = strlen(h);
            bool ok = n > 0 && n <= 253;

            for (size_t i = 0; ok && i < n; i++)
                ok = (h[i] >= 'a' && h[i] <= 'z') ||
                     (h[i] >= 'A' && h[i] <= 'Z') ||
                     (h[i] >= '0' && h[i] <= '9') || h[i] == '.' || h[i] == '-';
            if (!ok) {
                util_err(err, err_len,
                         "config: %s: expected an IPv4 address or a host "
                         "name (letters, digits, '.' and '-'), got %s%s%s",
                         path, cJSON_IsString(member) ? "\"" : "",
                         cJSON_IsString(member)
                             ? cfg_quote_str(quoted, sizeof(quoted), h)
                             : cfg_json_type(member),
                         cJSON_IsString(member) ? "\"" : "");
                return -EINVAL;
            }
            remote->host = strdup(h);
            if (remote->host == NULL)
                return -ENOMEM;
        } else if (strcmp(name, "port") == 0) {
            if (!cJSON_IsNumber(member) || member->valuedouble < 1 ||
                member->valuedouble > 65535 ||
                member->valuedouble != (double)(int)member->valuedouble) {
                util_err(err, err_len,
                         "config: %s: expected a port from 1 to 65535, got %s",
                         path,
                         cJSON_IsNumber(member) ? "another number"
                                                : cfg_json_type(member));
                return -EINVAL;
            }
            remote->port = (unsigned)member->valuedouble;
            has_port = true;
        } else if (strcmp(name, "tls") == 0) {
            if (!cJSON_IsBool(member)) {
                util_err(err, err_len,
                         "config: %s: expected true or false, got %s", path,
                         cfg_json_type(member));
                return -EINVAL;
            }
            remote->tls = cJSON_IsTrue(member);
        } else if (strcmp(name, "certificate_sha256") == 0) {
            char hex[65];

            if (!cJSON_IsString(member) ||
                cfg_parse_one_fingerprint(member->valuestring, hex) < 0) {
                util_err(err, err_len,
                         "config: %s: expected a SHA-256 fingerprint (64 hex "
                         "digits, colons allowed), as 'stowbridge "
                         "tls-fingerprint FILE' prints it",
                         path);
                return -EINVAL;
            }
            remote->certificate_sha256 = strdup(hex);
            if (remote->certificate_sha256 == NULL)
                return -ENOMEM;
        } else {
            util_err(err, err_len,
                     "config: unknown key '%s[%zu].%s' (an entry takes "
                     "\"ae_title\", \"host\", \"port\", \"tls\" and "
                     "\"certificate_sha256\")",
                     lpath, index, cfg_quote_str(quoted, sizeof(quoted), name));
            return -EINVAL;
        }
    }
    if (remote->ae_title == NULL || remote->host == NULL || !has_port) {
        util_err(err, err_len,
                 "config: %s[%zu]: an entry needs \"ae_title\", \"host\" "
                 "and \"port\"",
                 lpath, index);
        return -EINVAL;
    }
    return 0;
}

/* Parses the CFG_REMOTES value @list into @cfg (half-built lists are
 * released by cfg_free(), as for callers); AE titles must be unique. */
static int cfg_parse_remotes(struct cfg *cfg, const struct cfg_key *key,
                             const cJSON *list, char *err, size_t err_len)
{
    struct cfg_remote_ae **remotes = cfg_field(cfg, key->offset);
    size_t *count = cfg_field(cfg, key->count_offset);
    size_t n = (size_t)cJSON_GetArraySize(list);
    const cJSON *item;
    int r;

    if (!cJSON_IsArray(list)) {
        util_err(err, err_len,
                 "config: %s: expected a list of {\"ae_title\": ..., "
                 "\"host\": ..., \"port\": ...} objects, got %s",
                 key->path, cfg_json_type(list));
        return -EINVAL;
    }
    if (n == 0)
        return 0;
    *remotes = calloc(n, sizeof(**remotes));
    if (*remotes == NULL)
        return -ENOMEM;
    cJSON_ArrayForEach(item, list)
    {
        size_t index = *count;

        *count = index + 1;
        r = cfg_parse_remote(&(*remotes)[index], item, key->path, index, err,
                             err_len);
        if (r < 0)
            return r;
        for (size_t j = 0; j < index; j++) {
            if (strcmp((*remotes)[j].ae_title, (*remotes)[index].ae_title) ==
                0) {
                util_err(err, err_len,
                         "config: %s[%zu].ae_title: \"%s\" is already "
                         "listed at [%zu]",
                         key->path, index, (*remotes)[index].ae_title, j);
                return -EINVAL;
            }
        }
    }
    return 0;
}

/*
 * Parses the CFG_UIDS value @list (a list of valid UIDs, at most
 * CFG_UIDS_MAX) into @cfg. The list and its count are set as entries are
 * added, so cfg_free() releases a half-built list.
 */
static int cfg_parse_uids(struct cfg *cfg, const struct cfg_key *key,
                          const cJSON *list, char *err, size_t err_len)
{
    char ***uids = cfg_field(cfg, key->offset);
    size_t *count = cfg_field(cfg, key->count_offset);
    size_t n = (size_t)cJSON_GetArraySize(list);
    const cJSON *item;

    if (!cJSON_IsArray(list) || n > CFG_UIDS_MAX) {
        util_err(err, err_len,
                 "config: %s: expected a list of at most %d UIDs, got %s",
                 key->path, CFG_UIDS_MAX,
                 cJSON_IsArray(list) ? "a longer list" : cfg_json_type(list));
        return -EINVAL;
    }
    if (n == 0)
        return 0;
    *uids = calloc(n, sizeof(**uids));
    if (*uids == NULL)
        return -ENOMEM;
    cJSON_ArrayForEach(item, list)
    {
        char quoted[CFG_QUOTE_MAX + 4];

        if (!cJSON_IsString(item) || !util_uid_valid(item->valuestring)) {
            util_err(
                err, err_len,
                "config: %s[%zu]: expected a UID (digits and dots, at "
                "most 64 characters), got %s%s%s",
                key->path, *count,
                cJSON_IsString(item) ? "\"" : cfg_json_type(item),
                cJSON_IsString(item)
                    ? cfg_quote_str(quoted, sizeof(quoted), item->valuestring)
                    : "",
                cJSON_IsString(item) ? "\"" : "");
            return -EINVAL;
        }
        (*uids)[*count] = strdup(item->valuestring);
        if ((*uids)[*count] == NULL)
            return -ENOMEM;
        (*count)++;
    }
    return 0;
}

/* True if @text is an IPv4 or IPv6 address, with an optional /prefix. */
static bool cfg_net_valid(const char *text)
{
    char host[64];
    unsigned char buf[16];
    const char *slash = strchr(text, '/');
    size_t len = slash != NULL ? (size_t)(slash - text) : strlen(text);
    unsigned max;

    if (len == 0 || len >= sizeof(host))
        return false;
    memcpy(host, text, len);
    host[len] = '\0';
    if (inet_pton(AF_INET, host, buf) == 1)
        max = 32;
    else if (inet_pton(AF_INET6, host, buf) == 1)
        max = 128;
    else
        return false;
    if (slash == NULL)
        return true;
    const char *d = slash + 1;
    unsigned v = 0;
    if (*d == '\0' || strlen(d) > 3 || (d[0] == '0' && d[1] != '\0'))
        return false;
    for (; *d; d++) {
        if (*d < '0' || *d > '9')
            return false;
        v = v * 10 + (unsigned)(*d - '0');
    }
    return v <= max;
}

/*
 * Parses the CFG_NETS value @list (addresses or networks, at most
 * CFG_UIDS_MAX) into @cfg, as cfg_parse_uids() does for UIDs.
 */
static int cfg_parse_nets(struct cfg *cfg, const struct cfg_key *key,
                          const cJSON *list, char *err, size_t err_len)
{
    char ***nets = cfg_field(cfg, key->offset);
    size_t *count = cfg_field(cfg, key->count_offset);
    size_t n = (size_t)cJSON_GetArraySize(list);
    const cJSON *item;

    if (!cJSON_IsArray(list) || n > CFG_UIDS_MAX) {
        util_err(err, err_len,
                 "config: %s: expected a list of at most %d addresses or "
                 "networks, got %s",
                 key->path, CFG_UIDS_MAX,
                 cJSON_IsArray(list) ? "a longer list" : cfg_json_type(list));
        return -EINVAL;
    }
    if (n == 0)
        return 0;
    *nets = calloc(n, sizeof(**nets));
    if (*nets == NULL)
        return -ENOMEM;
    cJSON_ArrayForEach(item, list)
    {
        char quoted[CFG_QUOTE_MAX + 4];

        if (!cJSON_IsString(item) || !cfg_net_valid(item->valuestring)) {
            util_err(
                err, err_len,
                "config: %s[%zu]: expected an IPv4 or IPv6 address or "
                "CIDR network such as \"10.0.0.5\", \"10.0.0.0/8\" or "
                "\"fd00::/64\", got %s%s%s",
                key->path, *count,
                cJSON_IsString(item) ? "\"" : cfg_json_type(item),
                cJSON_IsString(item)
                    ? cfg_quote_str(quoted, sizeof(quoted), item->valuestring)
                    : "",
                cJSON_IsString(item) ? "\"" : "");
            return -EINVAL;
        }
        (*nets)[*count] = strdup(item->valuestring);
        if ((*nets)[*count] == NULL)
            return -ENOMEM;
        (*count)++;
    }
    return 0;
}

/*
 * Parses the CFG_ARGV value @list (at most CFG_ARGV_MAX non-empty strings
 * of at most CFG_ARGV_WORD_MAX bytes) into @cfg, NULL-terminated. As with
 * cfg_parse_uids(), cfg_free() releases a half-built list.
 */
static int cfg_parse_argv(struct cfg *cfg, const struct cfg_key *key,
                          const cJSON *list, char *err, size_t err_len)
{
    char ***words = cfg_field(cfg, key->offset);
    size_t *count = cfg_field(cfg, key->count_offset);
    size_t n = (size_t)cJSON_GetArraySize(list);
    const cJSON *item;

    if (!cJSON_IsArray(list) || n > CFG_ARGV_MAX) {
        util_err(err, err_len,
                 "config: %s: expected a list of at most %d strings (the "
                 "program and its arguments, no shell), got %s",
                 key->path, CFG_ARGV_MAX,
                 cJSON_IsArray(list) ? "a longer list" : cfg_json_type(list));
        return -EINVAL;
    }
    if (n == 0)
        return 0;
    *words = calloc(n + 1, sizeof(**words));
    if (*words == NULL)
        return -ENOMEM;
    cJSON_ArrayForEach(item, list)
    {
        if (!cJSON_IsString(item) || item->valuestring[0] == '\0' ||
            strlen(item->valuestring) > CFG_ARGV_WORD_MAX) {
            util_err(
                err, err_len,
                "config: %s[%zu]: expected a non-empty string of at most "
                "%d bytes, got %s",
                key->path, *count, CFG_ARGV_WORD_MAX,
                cJSON_IsString(item)
                    ? (item->valuestring[0] == '\0' ? "\"\"" : "a longer one")
                    : cfg_json_type(item));
            return -EINVAL;
        }
        (*words)[*count] = strdup(item->valuestring);
        if ((*words)[*count] == NULL)
            return -ENOMEM;
        (*count)++;
    }
    return 0;
}

/* True if @value is one of the '|'-separated @choices. */
static bool cfg_is_choice(const char *choices, const char *value)
{
    size_t len = strlen(value);

    for (const char *p = choices; *p != '\0';) {
        size_t n = strcspn(p, "|");
        if (n == len && strncmp(p, value, n) == 0)
            return true;
        p += n;
        if (*p == '|')
            p++;
    }
    return false;
}

/* True if @url is http:// or https:// with a host and no white space. */
static bool cfg_url_valid(const char *url)
{
    const char *rest;

    if (strncmp(url, "https://", 8) == 0)
        rest = url + 8;
    else if (strncmp(url, "http://", 7) == 0)
        rest = url + 7;
    else
        return false;
    if (*rest == '\0' || *rest == '/')
        return false;
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p == 0x7f)
            return false;
    return true;
}

/* The per-key checks of a string value (not AE titles). */
static int cfg_check_string(const struct cfg_key *key, const char *value,
                            char *err, size_t err_len)
{
    char quoted[CFG_QUOTE_MAX + 4];

    switch (key->check) {
    case CFG_CHECK_ABS_PATH:
        if (value[0] != '/') {
            util_err(err, err_len,
                     "config: %s: expected an absolute path, got \"%s\"",
                     key->path, cfg_quote_str(quoted, sizeof(quoted), value));
            return -EINVAL;
        }
        break;
    case CFG_CHECK_OPT_PATH:
        if (value[0] != '\0' && value[0] != '/') {
            util_err(err, err_len,
                     "config: %s: expected an absolute path (or \"\"), got "
                     "\"%s\"",
                     key->path, cfg_quote_str(quoted, sizeof(quoted), value));
            return -EINVAL;
        }
        break;
    case CFG_CHECK_URL:
        if (value[0] != '\0' && !cfg_url_valid(value)) {
            util_err(err, err_len,
                     "config: %s: expected an http:// or https:// URL (or "
                     "\"\"), got \"%s\"",
                     key->path, cfg_quote_str(quoted, sizeof(quoted), value));
            return -EINVAL;
        }
        break;
    case CFG_CHECK_CHOICE:
        if (!cfg_is_choice(key->choices, value)) {
            char choices[128];
            size_t j = 0;
            for (const char *p = key->choices; *p && j + 4 < sizeof(choices);
                 p++) {
                if (*p == '|') {
                    choices[j++] = ',';
                    choices[j++] = ' ';
                } else {
                    choices[j++] = *p;
                }
            }
            choices[j] = '\0';
            util_err(err, err_len, "config: %s: expected one of %s, got \"%s\"",
                     key->path, choices,
                     cfg_quote_str(quoted, sizeof(quoted), value));
            return -EINVAL;
        }
        break;
    case CFG_CHECK_AE_TITLE:
    case CFG_CHECK_NONE:
        break;
    }
    return 0;
}

static int cfg_parse_string(struct cfg *cfg, const struct cfg_key *key,
                            const cJSON *item, char *err, size_t err_len)
{
    char **str = cfg_field(cfg, key->offset);
    char *value = NULL;
    int r;

    switch (key->check) {
    case CFG_CHECK_AE_TITLE:
        r = cfg_parse_ae_title(item, key->path, &value, err, err_len);
        if (r < 0)
            return r;
        break;
    case CFG_CHECK_ABS_PATH:
    case CFG_CHECK_OPT_PATH:
    case CFG_CHECK_URL:
    case CFG_CHECK_CHOICE:
    case CFG_CHECK_NONE:
        if (!cJSON_IsString(item)) {
            util_err(err, err_len, "config: %s: expected %s, got %s", key->path,
                     key->check == CFG_CHECK_ABS_PATH ? "an absolute path"
                     : key->check == CFG_CHECK_URL    ? "an http(s) URL"
                                                      : "a string",
                     cfg_json_type(item));
            return -EINVAL;
        }
        r = cfg_check_string(key, item->valuestring, err, err_len);
        if (r < 0)
            return r;
        value = strdup(item->valuestring);
        if (value == NULL)
            return -ENOMEM;
        break;
    }
    free(*str);
    *str = value;
    return 0;
}

static int cfg_parse_uint(struct cfg *cfg, const struct cfg_key *key,
                          const cJSON *item, char *err, size_t err_len)
{
    char number[40];
    double v;

    if (!cJSON_IsNumber(item)) {
        util_err(err, err_len,
                 "config: %s: expected an integer from %u to %u, got %s",
                 key->path, key->min, key->max, cfg_json_type(item));
        return -EINVAL;
    }
    v = item->valuedouble;
    /* The range check first: only then is the cast defined. */
    if (!((v >= key->min && v <= key->max) || (key->zero_ok && v == 0)) ||
        v != (double)(unsigned)v) {
        util_err(err, err_len,
                 "config: %s: expected an integer from %u to %u, got %s",
                 key->path, key->min, key->max,
                 cfg_number_text(number, sizeof(number), v));
        return -EINVAL;
    }
    *(unsigned *)cfg_field(cfg, key->offset) = (unsigned)v;
    return 0;
}

static int cfg_parse_level(struct cfg *cfg, const struct cfg_key *key,
                           const cJSON *item, char *err, size_t err_len)
{
    char quoted[CFG_QUOTE_MAX + 4];
    enum log_level level;

    if (!cJSON_IsString(item)) {
        util_err(err, err_len,
                 "config: %s: expected one of " CFG_LEVEL_NAMES ", got %s",
                 key->path, cfg_json_type(item));
        return -EINVAL;
    }
    if (log_level_parse(item->valuestring, &level) < 0) {
        util_err(err, err_len,
                 "config: %s: expected one of " CFG_LEVEL_NAMES ", got \"%s\"",
                 key->path,
                 cfg_quote_str(quoted, sizeof(quoted), item->valuestring));
        return -EINVAL;
    }
    *(int *)cfg_field(cfg, key->offset) = (int)level;
    return 0;
}

static int cfg_parse_bool(struct cfg *cfg, const struct cfg_key *key,
                          const cJSON *item, char *err, size_t err_len)
{
    if (!cJSON_IsBool(item)) {
        util_err(err, err_len, "config: %s: expected true or false, got %s",
                 key->path, cfg_json_type(item));
        return -EINVAL;
    }
    *(bool *)cfg_field(cfg, key->offset) = cJSON_IsTrue(item);
    return 0;
}

static int cfg_parse_value(struct cfg *cfg, const struct cfg_key *key,
                           const cJSON *item, char *err, size_t err_len)
{
    switch (key->type) {
    case CFG_BOOL:
        return cfg_parse_bool(cfg, key, item, err, err_len);
    case CFG_STRING:
        return cfg_parse_string(cfg, key, item, err, err_len);
    case CFG_UINT:
        return cfg_parse_uint(cfg, key, item, err, err_len);
    case CFG_LEVEL:
        return cfg_parse_level(cfg, key, item, err, err_len);
    case CFG_CALLERS:
        return cfg_parse_callers(cfg, key, item, err, err_len);
    case CFG_UIDS:
        return cfg_parse_uids(cfg, key, item, err, err_len);
    case CFG_REMOTES:
        return cfg_parse_remotes(cfg, key, item, err, err_len);
    case CFG_ARGV:
        return cfg_parse_argv(cfg, key, item, err, err_len);
    case CFG_NETS:
        return cfg_parse_nets(cfg, key, item, err, err_len);
    }
    return -EINVAL;
}

/*
 * Replaces comments outside strings in @text with spaces, keeping
 * newlines. Returns 0, or -EINVAL for an unterminated block comment, with
 * the line it starts on in @ret_line.
 */
static int cfg_blank_comments(char *text, size_t len, size_t *ret_line)
{
    bool in_string = false;
    size_t line = 1;
    size_t i = 0;

    while (i < len) {
        char c = text[i];

        if (in_string) {
            /* A raw newline ends a (bad) string: cJSON reports it. */
            if (c == '\\' && i + 1 < len && text[i + 1] != '\n')
                i++;
            else if (c == '"' || c == '\n')
                in_string = false;
            if (c == '\n')
                line++;
            i++;
        } else if (c == '/' && i + 1 < len && text[i + 1] == '/') {
            while (i < len && text[i] != '\n')
                text[i++] = ' ';
        } else if (c == '/' && i + 1 < len && text[i + 1] == '*') {
            size_t start_line = line;

            text[i] = ' ';
            text[i + 1] = ' ';
            i += 2;
            while (i < len &&
                   !(text[i] == '*' && i + 1 < len && text[i + 1] == '/')) {
                if (text[i] == '\n')
                    line++;
                else
                    text[i] = ' ';
                i++;
            }
            if (i >= len) {
                *ret_line = start_line;
                return -EINVAL;
            }
            text[i] = ' ';
            text[i + 1] = ' ';
            i += 2;
        } else {
            if (c == '"')
                in_string = true;
            else if (c == '\n')
                line++;
            i++;
        }
    }
    return 0;
}

/* True if @text holds nothing but JSON whitespace. */
static bool cfg_blank(const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (text[i] != ' ' && text[i] != '\n' && text[i] != '\t' &&
            text[i] != '\r')
            return false;
    return true;
}

/*
 * True if byte @pos of the comment-free JSON @text is where an object
 * expects a member name: after its '{' or a ','. Scans from the start,
 * tracking strings and the open brackets (up to CJSON_NESTING_LIMIT,
 * beyond which cJSON gives up anyway).
 */
static bool cfg_at_member_name(const char *text, size_t pos)
{
    bool is_object[CJSON_NESTING_LIMIT + 1];
    bool in_string = false;
    size_t depth = 0;
    char last = '\0';

    for (size_t i = 0; i < pos; i++) {
        char c = text[i];

        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
            continue;
        }
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
            continue;
        if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            if (depth > CJSON_NESTING_LIMIT)
                return false;
            is_object[depth++] = c == '{';
        } else if ((c == '}' || c == ']') && depth > 0) {
            depth--;
        }
        last = c;
    }
    return !in_string && depth > 0 && is_object[depth - 1] &&
           (last == '{' || last == ',');
}

/*
 * Reports a syntax error at byte @pos of @text with its line and column.
 * cJSON points one byte past a member name that does not start with '"'
 * ("{ x }", a trailing comma before '}'); that case is moved back.
 */
static void cfg_syntax_error(const char *text, size_t len, size_t pos,
                             char *err, size_t err_len)
{
    char quoted[CFG_QUOTE_MAX + 4];
    size_t line = 1;
    size_t col = 1;
    size_t eol;

    if (pos > len)
        pos = len;
    if (pos > 0 && !cfg_blank(text + pos - 1, 1) &&
        cfg_at_member_name(text, pos - 1))
        pos--;
    for (size_t i = 0; i < pos; i++) {
        if (text[i] == '\n') {
            line++;
            col = 1;
        } else if (((unsigned char)text[i] & 0xc0) != 0x80) {
            col++;
        }
    }
    eol = pos;
    while (eol < len && text[eol] != '\n' && text[eol] != '\r')
        eol++;
    if (pos == len)
        util_err(err, err_len,
                 "config: line %zu, column %zu: syntax error at the end of "
                 "the file",
                 line, col);
    else if (eol == pos)
        util_err(err, err_len,
                 "config: line %zu, column %zu: syntax error at the end of "
                 "the line",
                 line, col);
    else
        util_err(err, err_len,
                 "config: line %zu, column %zu: syntax error near '%s'", line,
                 col,
                 cfg_quote(quoted, sizeof(quoted), text + pos, eol - pos,
                           CFG_QUOTE_MAX));
}

/* Length of the JSON number (RFC 8259 6) at @s, or 0 if @s (@n bytes)
 * does not start with one. */
static size_t cfg_json_number_len(const char *s, size_t n)
{
    size_t i = 0;
    size_t digits;

    if (i < n && s[i] == '-')
        i++;
    if (i < n && s[i] == '0') {
        i++;
    } else {
        for (digits = 0; i < n && s[i] >= '0' && s[i] <= '9'; digits++)
            i++;
        if (digits == 0)
            return 0;
    }
    if (i < n && s[i] == '.') {
        i++;
        for (digits = 0; i < n && s[i] >= '0' && s[i] <= '9'; digits++)
            i++;
        if (digits == 0)
            return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        for (digits = 0; i < n && s[i] >= '0' && s[i] <= '9'; digits++)
            i++;
        if (digits == 0)
            return 0;
    }
    return i;
}

/*
 * cJSON reads numbers with strtod() and so takes what JSON does not:
 * leading zeros ("port": 018510), "1.", "-.5", "1.e5". Every number of
 * the comment-free @text (outside strings) that cJSON parsed is checked
 * against the JSON grammar; the first that fails is an error with its
 * line and column. Returns 0 or -EINVAL.
 */
static int cfg_check_numbers(const char *text, size_t len, char *err,
                             size_t err_len)
{
    bool in_string = false;
    size_t line = 1;
    size_t col = 1;

    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        size_t run;
        size_t ok;

        if (in_string) {
            if (c == '\\' && i + 1 < len && text[i + 1] != '\n') {
                i++;
                col++;
            } else if (c == '"' || c == '\n') {
                in_string = false;
            }
        } else if (c == '"') {
            in_string = true;
        } else if (c == '-' || c == '.' || (c >= '0' && c <= '9')) {
            /* The token as strtod() would see it. */
            for (run = 0; i + run < len &&
                          strchr("0123456789+-.eE", text[i + run]) != NULL &&
                          text[i + run] != '\0';
                 run++)
                ;
            ok = cfg_json_number_len(text + i, run);
            if (ok != run) {
                char quoted[CFG_QUOTE_MAX + 4];
                bool zero = run > 1 && text[i + (c == '-')] == '0' &&
                            i + (c == '-') + 1 < len &&
                            text[i + (c == '-') + 1] >= '0' &&
                            text[i + (c == '-') + 1] <= '9';
                util_err(err, err_len,
                         "config: line %zu, column %zu: '%s' is not a JSON "
                         "number (%s)",
                         line, col,
                         cfg_quote(quoted, sizeof(quoted), text + i, run,
                                   CFG_QUOTE_MAX),
                         zero ? "no leading zeros: write it without them"
                              : "digits, then an optional fraction '.5' and "
                                "exponent 'e3'");
                return -EINVAL;
            }
            i += run - 1;
            col += run;
            continue;
        }
        if (c == '\n') {
            line++;
            col = 1;
        } else if (((unsigned char)c & 0xc0) != 0x80) {
            col++;
        }
    }
    return 0;
}

/* Parses the members of section object @section into @cfg. */
/* True if some key of @section is in its nested object @name. */
static bool cfg_subsection_known(const char *section, const char *name)
{
    size_t len = strlen(name);

    for (size_t i = 0; i < CFG_KEY_COUNT; i++)
        if (cfg_in_section(&cfg_keys[i], section) &&
            strncmp(cfg_key_name(&cfg_keys[i]), name, len) == 0 &&
            cfg_key_name(&cfg_keys[i])[len] == '.')
            return true;
    return false;
}

/* Parses the nested object @sub ("tls") of @section ("dicom"). */
static int cfg_parse_subsection(struct cfg *cfg, const char *section,
                                const cJSON *sub, char *err, size_t err_len)
{
    const cJSON *item;
    char name[128];
    int r;

    cJSON_ArrayForEach(item, sub)
    {
        (void)snprintf(name, sizeof(name), "%s.%s", sub->string, item->string);
        const struct cfg_key *key = cfg_key_find(section, name);

        if (key == NULL) {
            cfg_unknown_key(section, name, err, err_len);
            return -EINVAL;
        }
        if (cfg_duplicate(sub, item)) {
            util_err(err, err_len, "config: duplicate key '%s'", key->path);
            return -EINVAL;
        }
        r = cfg_parse_value(cfg, key, item, err, err_len);
        if (r < 0)
            return r;
    }
    return 0;
}

static int cfg_parse_section(struct cfg *cfg, const cJSON *section, char *err,
                             size_t err_len)
{
    const cJSON *item;
    int r;

    cJSON_ArrayForEach(item, section)
    {
        const struct cfg_key *key = cfg_key_find(section->string, item->string);

        if (key == NULL &&
            cfg_subsection_known(section->string, item->string)) {
            if (cfg_duplicate(section, item)) {
                util_err(err, err_len, "config: duplicate key '%s.%s'",
                         section->string, item->string);
                return -EINVAL;
            }
            if (!cJSON_IsObject(item)) {
                util_err(err, err_len,
                         "config: %s.%s: expected an object, got %s",
                         section->string, item->string, cfg_json_type(item));
                return -EINVAL;
            }
            r = cfg_parse_subsection(cfg, section->string, item, err, err_len);
            if (r < 0)
                return r;
            continue;
        }
        if (key == NULL) {
            cfg_unknown_key(section->string, item->string, err, err_len);
            return -EINVAL;
        }
        if (cfg_duplicate(section, item)) {
            util_err(err, err_len, "config: duplicate key '%s'", key->path);
            return -EINVAL;
        }
        r = cfg_parse_value(cfg, key, item, err, err_len);
        if (r < 0)
            return r;
    }
    return 0;
}

/* The error for a key that @type needs but that is empty. */
static int cfg_needs(const char *value, const char *type, const char *path,
                     const char *why, char *err, size_t err_len)
{
    if (value[0] != '\0')
        return 0;
    util_err(err, err_len, "config: auth.type \"%s\" needs %s%s", type, path,
             why);
    return -EINVAL;
}

static int cfg_set_string(char **field, const char *value)
{
    char *copy = strdup(value);

    if (copy == NULL)
        return -ENOMEM;
    free(*field);
    *field = copy;
    return 0;
}

/* True if @tenant looks like an Entra tenant ID or domain. */
static bool cfg_tenant_valid(const char *tenant)
{
    size_t len = strlen(tenant);

    if (len == 0 || len > 128)
        return false;
    for (const char *p = tenant; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'))
            return false;
    return true;
}

/* The first of @keys (NULL-terminated paths into auth) that is set in
 * @auth, or NULL. */
static const char *cfg_first_set(const struct cfg_auth *auth,
                                 const char *const *keys)
{
    for (size_t i = 0; keys[i] != NULL; i++) {
        const char *name = keys[i] + strlen("auth.");
        if (strcmp(name, "client_secret") == 0 && auth->client_secret[0])
            return keys[i];
        if (strcmp(name, "client_secret_file") == 0 &&
            auth->client_secret_file[0])
            return keys[i];
        if (strcmp(name, "client_certificate_file") == 0 &&
            auth->client_certificate_file[0])
            return keys[i];
        if (strcmp(name, "client_key_file") == 0 && auth->client_key_file[0])
            return keys[i];
        if (strcmp(name, "client_assertion_file") == 0 &&
            auth->client_assertion_file[0])
            return keys[i];
        if (strcmp(name, "endpoint") == 0 && auth->endpoint[0])
            return keys[i];
        if (strcmp(name, "command") == 0 && auth->command_count > 0)
            return keys[i];
    }
    return NULL;
}

/*
 * The credential keys (issue 13): a secret, a certificate and a
 * federated token file exclude each other (the error names both keys);
 * a key without its certificate, and keys of another auth.type, are
 * errors too.
 */
static int cfg_validate_credentials(const struct cfg *cfg, char *err,
                                    size_t err_len)
{
    static const char *const secret_keys[] = {
        "auth.client_secret",
        "auth.client_secret_file",
        NULL,
    };
    static const char *const cert_keys[] = {
        "auth.client_certificate_file",
        "auth.client_key_file",
        NULL,
    };
    static const char *const assertion_keys[] = {
        "auth.client_assertion_file",
        NULL,
    };
    static const char *const mi_keys[] = { "auth.endpoint", NULL };
    static const char *const command_keys[] = { "auth.command", NULL };
    const struct cfg_auth *auth = &cfg->auth;
    const char *type = auth->type;
    bool oauth =
        strcmp(type, "client_credentials") == 0 || strcmp(type, "azure") == 0;
    const char *secret = cfg_first_set(auth, secret_keys);
    const char *cert = cfg_first_set(auth, cert_keys);
    const char *assertion = cfg_first_set(auth, assertion_keys);
    const char *a = NULL;
    const char *b = NULL;

    if (secret != NULL && cert != NULL) {
        a = secret;
        b = cert;
    } else if (secret != NULL && assertion != NULL) {
        a = secret;
        b = assertion;
    } else if (cert != NULL && assertion != NULL) {
        a = cert;
        b = assertion;
    }
    if (a != NULL) {
        util_err(err, err_len,
                 "config: %s and %s exclude each other: authenticate with a "
                 "secret, a certificate or a federated token file, one of "
                 "them",
                 a, b);
        return -EINVAL;
    }
    if (auth->client_secret_expires[0] != '\0') {
        struct tm tm;
        const char *end;
        char quoted[CFG_QUOTE_MAX + 4];

        memset(&tm, 0, sizeof(tm));
        end = strptime(auth->client_secret_expires, "%Y-%m-%d", &tm);
        if (end == NULL || *end != '\0' ||
            strlen(auth->client_secret_expires) != 10) {
            util_err(err, err_len,
                     "config: auth.client_secret_expires: expected a date "
                     "YYYY-MM-DD, got \"%s\"",
                     cfg_quote_str(quoted, sizeof(quoted),
                                   auth->client_secret_expires));
            return -EINVAL;
        }
    }
    if (auth->client_key_file[0] != '\0' &&
        auth->client_certificate_file[0] == '\0') {
        util_err(err, err_len,
                 "config: auth.client_key_file needs "
                 "auth.client_certificate_file (the certificate it belongs "
                 "to)");
        return -EINVAL;
    }
    if (!oauth && (cert != NULL || assertion != NULL)) {
        util_err(err, err_len,
                 "config: %s is for auth.type \"client_credentials\" or "
                 "\"azure\", not \"%s\"",
                 cert != NULL ? cert : assertion, type);
        return -EINVAL;
    }
    a = cfg_first_set(auth, mi_keys);
    if (a != NULL && strcmp(type, "managed_identity") != 0) {
        util_err(err, err_len,
                 "config: %s is for auth.type \"managed_identity\", not "
                 "\"%s\"",
                 a, type);
        return -EINVAL;
    }
    a = cfg_first_set(auth, command_keys);
    if (a != NULL && strcmp(type, "command") != 0) {
        util_err(err, err_len,
                 "config: %s is for auth.type \"command\", not \"%s\"", a,
                 type);
        return -EINVAL;
    }
    if ((strcmp(type, "managed_identity") == 0 ||
         strcmp(type, "command") == 0) &&
        (secret != NULL || auth->token[0] != '\0')) {
        util_err(err, err_len,
                 "config: auth.type \"%s\" uses no secret: remove %s", type,
                 secret != NULL ? secret : "auth.token");
        return -EINVAL;
    }
    return 0;
}

/*
 * Checks across keys, after every key was read: what each auth.type needs
 * and the retry range. For "azure", fills in the Entra v2 token URL and
 * the DICOM service scope.
 */
/*
 * True if the credential file @path exists and holds only whitespace: the
 * unit's fallback (SetCredential=tls_key:\n) when the file its
 * LoadCredential= names is missing. A PEM key starts within 64 bytes.
 */
static bool cfg_credential_blank(const char *path)
{
    char buf[64];
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

    if (fd < 0)
        return false;
    n = read(fd, buf, sizeof(buf));
    (void)close(fd);
    return n >= 0 && cfg_blank(buf, (size_t)n);
}

/*
 * The DICOM listeners: a bind address that parses, at least one port,
 * distinct ports, what TLS needs, and certificate bindings only with TLS.
 * The key itself is cfg_resolve_tls_key()'s (cfg_load() only).
 */
static int cfg_validate_dicom(struct cfg *cfg, char *err, size_t err_len)
{
    struct cfg_dicom *d = &cfg->dicom;
    struct cfg_tls *tls = &d->tls;
    bool on = tls->certificate_file[0] != '\0';
    unsigned char buf[16];
    char quoted[CFG_QUOTE_MAX + 4];

    if (d->bind_address[0] != '\0' &&
        inet_pton(AF_INET, d->bind_address, buf) != 1 &&
        inet_pton(AF_INET6, d->bind_address, buf) != 1) {
        util_err(err, err_len,
                 "config: dicom.bind_address: expected an IPv4 or IPv6 "
                 "address (or \"\" for all), got \"%s\"",
                 cfg_quote_str(quoted, sizeof(quoted), d->bind_address));
        return -EINVAL;
    }
    if (d->port == 0 && !on) {
        util_err(err, err_len,
                 "config: dicom.port: expected an integer from 1 to 65535, "
                 "got 0 (0, no plain port, needs dicom.tls.certificate_file: "
                 "nothing would listen)");
        return -EINVAL;
    }
    if (on && d->port == tls->port) {
        util_err(err, err_len,
                 "config: dicom.tls.port must differ from dicom.port (both "
                 "%u)",
                 d->port);
        return -EINVAL;
    }
    if (on && tls->ca_file[0] == '\0' &&
        strcmp(tls->client_certificate, "none") != 0) {
        util_err(err, err_len,
                 "config: dicom.tls.ca_file is needed to verify client "
                 "certificates (dicom.tls.client_certificate \"%s\")",
                 tls->client_certificate);
        return -EINVAL;
    }
    for (size_t i = 0; i < d->remote_ae_count; i++) {
        const struct cfg_remote_ae *ra = &d->remote_aes[i];

        if (ra->certificate_sha256 != NULL && !ra->tls) {
            util_err(err, err_len,
                     "config: dicom.remote_aes[%zu]: certificate_sha256 needs "
                     "\"tls\": true",
                     i);
            return -EINVAL;
        }
        if (ra->tls && tls->ca_file[0] == '\0') {
            util_err(err, err_len,
                     "config: dicom.remote_aes[%zu]: \"tls\": true needs "
                     "dicom.tls.ca_file to verify the remote's certificate",
                     i);
            return -EINVAL;
        }
    }
    for (size_t i = 0; i < d->allowed_caller_count; i++) {
        const struct cfg_caller *c = &d->allowed_callers[i];
        bool bound =
            c->certificate_sha256_count > 0 || c->certificate_subject != NULL;

        if ((bound || c->tls_only) && !on) {
            util_err(err, err_len,
                     "config: dicom.allowed_callers[%zu]: certificate_sha256, "
                     "certificate_subject and tls_only need TLS "
                     "(dicom.tls.certificate_file)",
                     i);
            return -EINVAL;
        }
        if (bound && strcmp(tls->client_certificate, "none") == 0) {
            util_err(err, err_len,
                     "config: dicom.allowed_callers[%zu]: a certificate "
                     "binding needs client certificates "
                     "(dicom.tls.client_certificate is \"none\")",
                     i);
            return -EINVAL;
        }
    }
    return 0;
}

static int cfg_validate(struct cfg *cfg, char *err, size_t err_len)
{
    struct cfg_auth *auth = &cfg->auth;
    const char *type = auth->type;
    char quoted[CFG_QUOTE_MAX + 4];
    char url[256];
    int r = 0;

    if (strcmp(cfg->query.profile, "azure") == 0 &&
        cfg->query.page_size > 200) {
        util_err(err, err_len,
                 "config: query.page_size: the Azure DICOM service takes at "
                 "most 200 results a page (limit), got %u",
                 cfg->query.page_size);
        return -EINVAL;
    }
    r = cfg_validate_dicom(cfg, err, err_len);
    if (r < 0)
        return r;
    if (cfg->retry.min_s > cfg->retry.max_s) {
        util_err(err, err_len,
                 "config: retry.min_s (%u) must not exceed retry.max_s (%u)",
                 cfg->retry.min_s, cfg->retry.max_s);
        return -EINVAL;
    }
    r = cfg_validate_credentials(cfg, err, err_len);
    if (r < 0)
        return r;
    if (strcmp(type, "client_credentials") == 0 || strcmp(type, "azure") == 0) {
        if (auth->client_secret[0] != '\0' &&
            auth->client_secret_file[0] != '\0') {
            util_err(err, err_len,
                     "config: set auth.client_secret or "
                     "auth.client_secret_file, not both");
            return -EINVAL;
        }
        r = cfg_needs(auth->client_id, type, "auth.client_id", "", err,
                      err_len);
    }
    if (r == 0 && strcmp(type, "command") == 0 && auth->command_count == 0) {
        util_err(err, err_len,
                 "config: auth.type \"command\" needs auth.command (the "
                 "program and its arguments, such as [\"az\", \"account\", "
                 "\"get-access-token\", ...])");
        r = -EINVAL;
    }
    if (r == 0 && strcmp(type, "client_credentials") == 0)
        r = cfg_needs(auth->token_url, type, "auth.token_url",
                      " (the OAuth2 token endpoint)", err, err_len);
    if (r == 0 && strcmp(type, "azure") == 0) {
        r = cfg_needs(auth->tenant, type, "auth.tenant",
                      " (the directory (tenant) ID)", err, err_len);
        if (r == 0 && !cfg_tenant_valid(auth->tenant)) {
            util_err(err, err_len,
                     "config: auth.tenant: expected a directory (tenant) ID "
                     "or domain, got \"%s\"",
                     cfg_quote_str(quoted, sizeof(quoted), auth->tenant));
            r = -EINVAL;
        }
        if (r == 0 && auth->token_url[0] == '\0') {
            snprintf(url, sizeof(url),
                     "https://login.microsoftonline.com/%s/oauth2/v2.0/token",
                     auth->tenant);
            r = cfg_set_string(&auth->token_url, url);
        }
        if (r == 0 && auth->scope[0] == '\0')
            r = cfg_set_string(&auth->scope, "https://dicom.healthcareapis."
                                             "azure.com/.default");
    }
    if (r == 0 && strcmp(type, "managed_identity") == 0 &&
        auth->resource[0] == '\0')
        r = cfg_set_string(&auth->resource,
                           "https://dicom.healthcareapis.azure.com");
    if (r == 0 && strcmp(type, "static") == 0)
        r = cfg_needs(auth->token, type, "auth.token", "", err, err_len);
    return r;
}

int cfg_parse(const char *text, size_t len, struct cfg **ret_cfg, char *err,
              size_t err_len)
{
    struct cfg *cfg = NULL;
    cJSON *root = NULL;
    const char *end = NULL;
    const cJSON *section;
    size_t bad_line = 0;
    char *copy;
    int r;

    copy = malloc(len + 1);
    if (copy == NULL)
        return -ENOMEM;
    if (len > 0)
        memcpy(copy, text, len);
    copy[len] = '\0';
    if (memchr(copy, '\0', len) != NULL) {
        util_err(err, err_len, "config: the file contains a NUL byte");
        r = -EINVAL;
        goto out_free;
    }
    if (cfg_blank_comments(copy, len, &bad_line) < 0) {
        util_err(err, err_len, "config: line %zu: unterminated /* comment",
                 bad_line);
        r = -EINVAL;
        goto out_free;
    }
    if (cfg_blank(copy, len)) {
        util_err(err, err_len,
                 "config: the file is empty (expected a JSON object, at "
                 "least {})");
        r = -EINVAL;
        goto out_free;
    }
    root = cJSON_ParseWithOpts(copy, &end, true);
    if (root == NULL) {
        size_t pos = end != NULL && end >= copy ? (size_t)(end - copy) : 0;

        cfg_syntax_error(copy, len, pos, err, err_len);
        r = -EINVAL;
        goto out_free;
    }
    /* What cJSON took may still hold numbers JSON does not allow. */
    r = cfg_check_numbers(copy, len, err, err_len);
    if (r < 0)
        goto out_free;
    if (!cJSON_IsObject(root)) {
        util_err(err, err_len,
                 "config: expected a JSON object at the top level, got %s",
                 cfg_json_type(root));
        r = -EINVAL;
        goto out_free;
    }
    r = cfg_defaults(&cfg);
    if (r < 0)
        goto out_free;

    cJSON_ArrayForEach(section, root)
    {
        if (!cfg_section_known(section->string)) {
            cfg_unknown_key(NULL, section->string, err, err_len);
            r = -EINVAL;
            goto out_free;
        }
        if (cfg_duplicate(root, section)) {
            util_err(err, err_len, "config: duplicate key '%s'",
                     section->string);
            r = -EINVAL;
            goto out_free;
        }
        if (!cJSON_IsObject(section)) {
            util_err(err, err_len, "config: %s: expected an object, got %s",
                     section->string, cfg_json_type(section));
            r = -EINVAL;
            goto out_free;
        }
        r = cfg_parse_section(cfg, section, err, err_len);
        if (r < 0)
            goto out_free;
    }
    r = cfg_validate(cfg, err, err_len);
    if (r < 0)
        goto out_free;
    *ret_cfg = cfg;
    cfg = NULL;
    r = 0;

out_free:
    cfg_free(cfg);
    cJSON_Delete(root);
    free(copy);
    return r;
}

/*
 * Reads all of @path into a new buffer (NUL-terminated), at most
 * CFG_FILE_MAX bytes. Works for pipes too; refuses directories.
 */
static int cfg_read_file(const char *path, char **ret_text, size_t *ret_len,
                         char *err, size_t err_len)
{
    char ebuf[128];
    struct stat st;
    size_t cap = CFG_READ_CHUNK;
    size_t len = 0;
    char *text = NULL;
    int fd;
    int r;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        r = -errno;
        util_err(err, err_len, "%s: cannot open: %s", path,
                 util_strerror(r, ebuf, sizeof(ebuf)));
        return r;
    }
    if (fstat(fd, &st) < 0) {
        r = -errno;
        util_err(err, err_len, "%s: cannot stat: %s", path,
                 util_strerror(r, ebuf, sizeof(ebuf)));
        goto out_close;
    }
    if (S_ISDIR(st.st_mode)) {
        r = -EISDIR;
        util_err(err, err_len, "%s: cannot read: %s", path,
                 util_strerror(r, ebuf, sizeof(ebuf)));
        goto out_close;
    }
    if (S_ISREG(st.st_mode) && st.st_size > CFG_FILE_MAX)
        goto out_too_large;
    /* Room for the NUL and for the read that sees the end of the file. */
    if (S_ISREG(st.st_mode))
        cap = (size_t)st.st_size + 2;

    text = malloc(cap);
    if (text == NULL) {
        r = -ENOMEM;
        goto out_close;
    }
    for (;;) {
        ssize_t n;

        if (len + 1 >= cap) {
            size_t new_cap =
                cap * 2 > CFG_FILE_MAX + 2 ? CFG_FILE_MAX + 2 : cap * 2;
            char *bigger = realloc(text, new_cap);

            if (bigger == NULL) {
                r = -ENOMEM;
                goto out_free;
            }
            text = bigger;
            cap = new_cap;
        }
        n = read(fd, text + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = -errno;
            util_err(err, err_len, "%s: cannot read: %s", path,
                     util_strerror(r, ebuf, sizeof(ebuf)));
            goto out_free;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > CFG_FILE_MAX)
            goto out_too_large;
    }
    text[len] = '\0';
    (void)close(fd);
    *ret_text = text;
    *ret_len = len;
    return 0;

out_too_large:
    r = -EFBIG;
    util_err(err, err_len, "%s: file too large (the limit is %d bytes)", path,
             CFG_FILE_MAX);
out_free:
    free(text);
out_close:
    (void)close(fd);
    return r;
}

/* Reads a secret from @path: trailing white space (a final newline) is
 * not part of it. @check_mode refuses files readable by others. */
static int cfg_read_secret(const char *path, bool check_mode, char **ret,
                           char *err, size_t err_len)
{
    struct stat st;
    char *text = NULL;
    size_t len = 0;
    int r;

    if (stat(path, &st) < 0) {
        r = -errno;
        util_err(err, err_len,
                 "config: auth.client_secret_file: cannot "
                 "read '%s': %s",
                 path, strerror(-r));
        return r;
    }
    if (!S_ISREG(st.st_mode)) {
        util_err(err, err_len,
                 "config: auth.client_secret_file: '%s' is not "
                 "a regular file",
                 path);
        return -EINVAL;
    }
    if (check_mode && (st.st_mode & 0007) != 0) {
        util_err(err, err_len,
                 "config: auth.client_secret_file: '%s' is readable by others "
                 "(mode %04o); chmod 0600 or 0640 it",
                 path, (unsigned)(st.st_mode & 07777));
        return -EPERM;
    }
    r = cfg_read_file(path, &text, &len, err, err_len);
    if (r < 0)
        return r;
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' ||
                       text[len - 1] == ' ' || text[len - 1] == '\t'))
        text[--len] = '\0';
    if (len == 0 || memchr(text, '\0', len) != NULL ||
        memchr(text, '\n', len) != NULL) {
        explicit_bzero(text, len);
        free(text);
        util_err(err, err_len,
                 "config: the client secret in '%s' is empty "
                 "or not one line",
                 path);
        return -EINVAL;
    }
    *ret = text;
    return 0;
}

/*
 * For a certificate or a federated token instead of a secret: the key
 * file from the systemd credential client_key when none is configured
 * (else the certificate file), checked not readable by others; for
 * "azure" without any credential, $AZURE_FEDERATED_TOKEN_FILE. Returns 0
 * when one of them is the credential, 1 when a secret is needed, or a
 * negative errno.
 */
static int cfg_resolve_other_credentials(struct cfg *cfg, char *err,
                                         size_t err_len)
{
    struct cfg_auth *auth = &cfg->auth;
    const char *creds = getenv("CREDENTIALS_DIRECTORY");
    const char *env = getenv("AZURE_FEDERATED_TOKEN_FILE");
    char path[4096];
    bool from_creds = false;
    struct stat st;

    if (auth->client_certificate_file[0] != '\0') {
        if (auth->client_key_file[0] == '\0' && creds != NULL &&
            creds[0] == '/') {
            snprintf(path, sizeof(path), "%s/client_key", creds);
            if (access(path, F_OK) == 0) {
                if (cfg_set_string(&auth->client_key_file, path) < 0)
                    return -ENOMEM;
                from_creds = true;
            }
        }
        /* systemd's credentials are the service's alone whatever their
         * mode says. */
        if (auth->client_key_file[0] != '\0' && !from_creds &&
            stat(auth->client_key_file, &st) == 0 && (st.st_mode & 0007) != 0) {
            util_err(err, err_len,
                     "config: auth.client_key_file: '%s' is readable by "
                     "others (mode %04o); chmod 0600 or 0640 it",
                     auth->client_key_file, (unsigned)(st.st_mode & 07777));
            return -EPERM;
        }
        return 0;
    }
    if (auth->client_assertion_file[0] != '\0')
        return 0;
    if (strcmp(auth->type, "azure") == 0 && env != NULL && env[0] == '/' &&
        auth->client_secret[0] == '\0' && auth->client_secret_file[0] == '\0') {
        if (cfg_set_string(&auth->client_assertion_file, env) < 0)
            return -ENOMEM;
        return 0;
    }
    return 1;
}

/*
 * Fills auth.client_secret from auth.client_secret_file, or when no
 * secret is configured, from the systemd credential "client_secret";
 * then checks that a type that needs a secret has one.
 */
static int cfg_resolve_secret(struct cfg *cfg, char *err, size_t err_len)
{
    struct cfg_auth *auth = &cfg->auth;
    const char *creds = getenv("CREDENTIALS_DIRECTORY");
    char path[4096];
    char *secret = NULL;
    int r;

    if (strcmp(auth->type, "client_credentials") != 0 &&
        strcmp(auth->type, "azure") != 0)
        return 0;
    r = cfg_resolve_other_credentials(cfg, err, err_len);
    if (r <= 0)
        return r;
    if (auth->client_secret_file[0] != '\0') {
        r = cfg_read_secret(auth->client_secret_file, true, &secret, err,
                            err_len);
        if (r < 0)
            return r;
    } else if (auth->client_secret[0] == '\0' && creds != NULL &&
               creds[0] == '/') {
        snprintf(path, sizeof(path), "%s/client_secret", creds);
        if (access(path, F_OK) == 0) {
            r = cfg_read_secret(path, false, &secret, err, err_len);
            if (r < 0)
                return r;
        }
    }
    if (secret != NULL) {
        explicit_bzero(auth->client_secret, strlen(auth->client_secret));
        free(auth->client_secret);
        auth->client_secret = secret;
    }
    if (auth->client_secret[0] == '\0') {
        util_err(err, err_len,
                 "config: auth.type \"%s\" needs a client secret: "
                 "auth.client_secret_file (preferred), auth.client_secret, or "
                 "the systemd credential client_secret",
                 auth->type);
        return -EINVAL;
    }
    return 0;
}

/*
 * A TLS key left empty is the systemd credential tls_key when present and
 * not blank; cfg_load() only, so that status and queue (which never open
 * the TLS port) run without the credential only the service has.
 */
static int cfg_resolve_tls_key(struct cfg *cfg, char *err, size_t err_len)
{
    struct cfg_tls *tls = &cfg->dicom.tls;

    if (tls->certificate_file[0] != '\0' && tls->private_key_file[0] == '\0') {
        const char *dir = getenv("CREDENTIALS_DIRECTORY");
        char path[4096];
        bool blank = false;

        if (dir != NULL && dir[0] == '/') {
            (void)snprintf(path, sizeof(path), "%s/tls_key", dir);
            blank = cfg_credential_blank(path);
            if (!blank && access(path, F_OK) == 0 &&
                cfg_set_string(&tls->private_key_file, path) < 0)
                return -ENOMEM;
        }
        if (blank) {
            util_err(err, err_len,
                     "config: dicom.tls.private_key_file is \"\" and the "
                     "systemd credential tls_key is empty: the key file the "
                     "unit's LoadCredential=tls_key: names is missing");
            return -EINVAL;
        }
        if (tls->private_key_file[0] == '\0') {
            util_err(err, err_len,
                     "config: dicom.tls.private_key_file is needed with "
                     "dicom.tls.certificate_file (or the systemd credential "
                     "tls_key, LoadCredential=)");
            return -EINVAL;
        }
    }
    return 0;
}

static int cfg_load_file(const char *path, bool with_secrets,
                         struct cfg **ret_cfg, char *err, size_t err_len)
{
    static const char prefix[] = "config: ";
    char inner[1024];
    char *text = NULL;
    size_t len = 0;
    int r;

    r = cfg_read_file(path, &text, &len, err, err_len);
    if (r < 0)
        return r;
    inner[0] = '\0';
    r = cfg_parse(text, len, ret_cfg, inner, sizeof(inner));
    free(text);
    if (r == 0 && with_secrets) {
        r = cfg_resolve_secret(*ret_cfg, inner, sizeof(inner));
        if (r == 0)
            r = cfg_resolve_tls_key(*ret_cfg, inner, sizeof(inner));
        if (r < 0) {
            cfg_free(*ret_cfg);
            *ret_cfg = NULL;
        }
    }
    if (r < 0) {
        const char *msg = inner;

        if (strncmp(msg, prefix, sizeof(prefix) - 1) == 0)
            msg += sizeof(prefix) - 1;
        util_err(err, err_len, "%s: %s", path,
                 r == -ENOMEM ? "out of memory" : msg);
    }
    return r;
}

int cfg_load(const char *path, struct cfg **ret_cfg, char *err, size_t err_len)
{
    return cfg_load_file(path, true, ret_cfg, err, err_len);
}

int cfg_load_without_secrets(const char *path, struct cfg **ret_cfg, char *err,
                             size_t err_len)
{
    return cfg_load_file(path, false, ret_cfg, err, err_len);
}

/* Writes @s as a JSON string. */
static void cfg_put_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

/* Writes @net as "a.b.c.d/len". */
static void cfg_put_net(FILE *out, const struct util_ipv4_net *net)
{
    unsigned prefix = 0;

    for (uint32_t m = net->mask; m & 0x80000000u; m <<= 1)
        prefix++;
    fprintf(out, "\"%u.%u.%u.%u/%u\"", net->addr >> 24,
            (net->addr >> 16) & 255u, (net->addr >> 8) & 255u, net->addr & 255u,
            prefix);
}

/* Writes a UID list on one line. */
static void cfg_put_uids(FILE *out, char *const *uids, size_t count)
{
    fputc('[', out);
    for (size_t i = 0; i < count; i++) {
        if (i > 0)
            fputs(", ", out);
        cfg_put_string(out, uids[i]);
    }
    fputc(']', out);
}

/* Writes a caller list, one entry a line, indented by @indent. */
static void cfg_put_callers(FILE *out, const struct cfg_caller *callers,
                            size_t count, const char *indent)
{
    if (count == 0) {
        fputs("[]", out);
        return;
    }
    fputs("[\n", out);
    for (size_t i = 0; i < count; i++) {
        const struct cfg_caller *c = &callers[i];

        fprintf(out, "%s    {", indent);
        if (c->ae_title != NULL) {
            fputs("\"ae_title\": ", out);
            cfg_put_string(out, c->ae_title);
        }
        if (c->host_count > 0) {
            fprintf(out, "%s\"hosts\": [", c->ae_title != NULL ? ", " : "");
            for (size_t h = 0; h < c->host_count; h++) {
                if (h > 0)
                    fputs(", ", out);
                cfg_put_net(out, &c->hosts[h]);
            }
            fputc(']', out);
        }
        if (!c->find)
            fputs(", \"find\": false", out);
        if (!c->commit)
            fputs(", \"commit\": false", out);
        if (!c->retrieve)
            fputs(", \"retrieve\": false", out);
        if (c->tls_only)
            fputs(", \"tls_only\": true", out);
        if (c->certificate_subject != NULL) {
            fputs(", \"certificate_subject\": ", out);
            cfg_put_string(out, c->certificate_subject);
        }
        if (c->certificate_sha256_count > 0) {
            fputs(", \"certificate_sha256\": ", out);
            cfg_put_uids(out, c->certificate_sha256,
                         c->certificate_sha256_count);
        }
        fprintf(out, "}%s\n", i + 1 < count ? "," : "");
    }
    fprintf(out, "%s]", indent);
}

/* Writes the remote AE list, one entry a line. */
static void cfg_put_remotes(FILE *out, const struct cfg_remote_ae *remotes,
                            size_t count, const char *indent)
{
    if (count == 0) {
        fputs("[]", out);
        return;
    }
    fputs("[\n", out);
    for (size_t i = 0; i < count; i++) {
        const struct cfg_remote_ae *r = &remotes[i];

        fprintf(out, "%s    {\"ae_title\": ", indent);
        cfg_put_string(out, r->ae_title);
        fputs(", \"host\": ", out);
        cfg_put_string(out, r->host);
        fprintf(out, ", \"port\": %u, \"tls\": %s", r->port,
                r->tls ? "true" : "false");
        if (r->certificate_sha256 != NULL) {
            fputs(", \"certificate_sha256\": ", out);
            cfg_put_string(out, r->certificate_sha256);
        }
        fprintf(out, "}%s\n", i + 1 < count ? "," : "");
    }
    fprintf(out, "%s]", indent);
}

/* Writes the value of @key in @cfg; secrets masked if @mask. */
static void cfg_put_value(FILE *out, const struct cfg *cfg,
                          const struct cfg_key *key, bool mask,
                          const char *indent)
{
    const char *s;
    int level;

    switch (key->type) {
    case CFG_STRING:
        s = *(char *const *)cfg_cfield(cfg, key->offset);
        if (mask && key->secret && s[0] != '\0')
            fputs(CFG_SECRET_MASK, out);
        else
            cfg_put_string(out, s);
        break;
    case CFG_UINT:
        fprintf(out, "%u", *(const unsigned *)cfg_cfield(cfg, key->offset));
        break;
    case CFG_LEVEL:
        level = *(const int *)cfg_cfield(cfg, key->offset);
        cfg_put_string(out, log_level_name((enum log_level)level));
        break;
    case CFG_CALLERS:
        cfg_put_callers(
            out, *(struct cfg_caller *const *)cfg_cfield(cfg, key->offset),
            *(const size_t *)cfg_cfield(cfg, key->count_offset), indent);
        break;
    case CFG_BOOL:
        fputs(*(const bool *)cfg_cfield(cfg, key->offset) ? "true" : "false",
              out);
        break;
    case CFG_UIDS:
    case CFG_ARGV:
    case CFG_NETS:
        cfg_put_uids(out, *(char **const *)cfg_cfield(cfg, key->offset),
                     *(const size_t *)cfg_cfield(cfg, key->count_offset));
        break;
    case CFG_REMOTES:
        cfg_put_remotes(
            out, *(struct cfg_remote_ae *const *)cfg_cfield(cfg, key->offset),
            *(const size_t *)cfg_cfield(cfg, key->count_offset), indent);
        break;
    }
}

/* Writes @text as // comment lines of at most CFG_COMMENT_WIDTH. */
static void cfg_put_comment(FILE *out, const char *indent, const char *text)
{
    /* Nested objects are indented deeper: their lines keep 80 columns. */
    size_t extra = strlen(indent) > 8 ? strlen(indent) - 8 : 0;
    size_t width = CFG_COMMENT_WIDTH - extra;

    while (*text) {
        size_t len = strlen(text);
        size_t cut = len;

        if (len > width) {
            cut = width;
            while (cut > 0 && text[cut] != ' ')
                cut--;
            if (cut == 0)
                cut = width;
        }
        fprintf(out, "%s// %.*s\n", indent, (int)cut, text);
        text += cut;
        while (*text == ' ')
            text++;
    }
}

/* Describes the type, range and default of @key in one sentence. */
static void cfg_describe(const struct cfg_key *key, char *buf, size_t len)
{
    const char *what = "String";

    switch (key->type) {
    case CFG_STRING:
        if (key->check == CFG_CHECK_AE_TITLE)
            what = "AE title, 1-16 characters";
        else if (key->check == CFG_CHECK_ABS_PATH)
            what = "Absolute path";
        (void)snprintf(buf, len, "%s%s; default \"%s\".", what,
                       key->secret ? ", secret" : "", key->def_string);
        break;
    case CFG_UINT:
        (void)snprintf(buf, len, "Integer from %u to %u; default %u.", key->min,
                       key->max, key->def_uint);
        break;
    case CFG_LEVEL:
        (void)snprintf(buf, len, "One of " CFG_LEVEL_NAMES "; default \"%s\".",
                       key->def_string);
        break;
    case CFG_CALLERS:
        (void)snprintf(buf, len,
                       "List of {\"ae_title\", \"hosts\", \"find\", "
                       "\"commit\"} entries; default [] (any caller).");
        break;
    case CFG_BOOL:
        (void)snprintf(buf, len, "true or false; default %s.",
                       key->def_uint ? "true" : "false");
        break;
    case CFG_UIDS:
        (void)snprintf(buf, len, "List of at most %d UIDs; default [].",
                       CFG_UIDS_MAX);
        break;
    case CFG_REMOTES:
        (void)snprintf(buf, len,
                       "List of {\"ae_title\", \"host\", \"port\", "
                       "\"tls\"} entries; default [].");
        break;
    case CFG_ARGV:
        (void)snprintf(buf, len, "List of at most %d strings; default [].",
                       CFG_ARGV_MAX);
        break;
    case CFG_NETS:
        (void)snprintf(buf, len,
                       "List of at most %d addresses or networks; default "
                       "[].",
                       CFG_UIDS_MAX);
        break;
    }
}

/* Writes @key's example as commented-out lines. */
static void cfg_put_example(FILE *out, const char *indent,
                            const struct cfg_key *key)
{
    const char *line = key->example;

    fprintf(out, "%s// Example:\n", indent);
    fprintf(out, "%s// \"%s\": ", indent, strrchr(key->path, '.') + 1);
    while (*line) {
        const char *nl = strchr(line, '\n');
        size_t n = nl != NULL ? (size_t)(nl - line) : strlen(line);

        fprintf(out, "%.*s\n", (int)n, line);
        line += n;
        if (*line == '\n')
            line++;
        if (*line)
            fprintf(out, "%s// ", indent);
    }
}

/*
 * Writes every section and key of @cfg as JSON. With @sample, each key is
 * preceded by its documentation and secrets are not masked (@cfg then
 * holds the defaults).
 */
static int cfg_write(const struct cfg *cfg, FILE *out, bool sample)
{
    const char *indent = "        ";
    bool first_section = true;

    fputs("{\n", out);
    for (size_t s = 0; s < CFG_KEY_COUNT; s++) {
        const struct cfg_key *skey = &cfg_keys[s];
        size_t section_len = cfg_section_len(skey);
        bool first = true;

        if (!cfg_section_first(s))
            continue;
        fprintf(out, "%s    \"%.*s\": {\n", first_section ? "" : ",\n",
                (int)section_len, skey->path);
        first_section = false;
        const char *sub = NULL; /* the nested object being written */
        size_t sub_len = 0;
        bool sub_first = true;
        for (size_t k = s; k < CFG_KEY_COUNT; k++) {
            const struct cfg_key *key = &cfg_keys[k];
            const char *name = cfg_key_name(key);
            const char *dot = strchr(name, '.');
            const char *in = indent;
            char about[160];

            if (cfg_section_len(key) != section_len ||
                strncmp(key->path, skey->path, section_len) != 0)
                continue;
            bool same = dot != NULL && sub != NULL &&
                        (size_t)(dot - name) == sub_len &&
                        strncmp(name, sub, sub_len) == 0;
            if (sub != NULL && !same) {
                fprintf(out, "\n%s}", indent);
                sub = NULL;
            }
            if (dot != NULL && !same) {
                if (!first)
                    fputs(",\n", out);
                first = false;
                sub = name;
                sub_len = (size_t)(dot - name);
                sub_first = true;
                fprintf(out, "%s\"%.*s\": {\n", indent, (int)sub_len, name);
            }
            if (sub != NULL) {
                in = "            ";
                if (!sub_first)
                    fputs(",\n", out);
                sub_first = false;
            } else {
                if (!first)
                    fputs(",\n", out);
                first = false;
            }
            if (sample) {
                cfg_put_comment(out, in, key->doc);
                cfg_describe(key, about, sizeof(about));
                cfg_put_comment(out, in, about);
                if (key->example != NULL)
                    cfg_put_example(out, in, key);
            }
            fprintf(out, "%s\"%s\": ", in, sub != NULL ? dot + 1 : name);
            cfg_put_value(out, cfg, key, !sample, in);
        }
        if (sub != NULL)
            fprintf(out, "\n%s}", indent);
        fputs("\n    }", out);
    }
    fputs("\n}\n", out);
    if (fflush(out) != 0 || ferror(out))
        return -EIO;
    return 0;
}

int cfg_dump(const struct cfg *cfg, FILE *out)
{
    return cfg_write(cfg, out, false);
}

int cfg_write_sample(FILE *out)
{
    struct cfg *defaults = NULL;
    int r;

    r = cfg_defaults(&defaults);
    if (r < 0)
        return r;
    fputs("// stowbridge configuration file (JSON; // and /* */ comments are\n"
          "// allowed). Every key is shown with its meaning and its "
          "default;\n"
          "// a key left out takes its default. Unknown keys are errors.\n"
          "// Check a file with 'stowbridge check --config FILE'; this "
          "sample\n"
          "// is the output of 'stowbridge sample-config'.\n",
          out);
    r = cfg_write(defaults, out, true);
    cfg_free(defaults);
    return r;
}
