/*
 * config - the stowbridge configuration file (DESIGN.md section 9).
 *
 * The file is one JSON object with sections "dicom", "spool", "log" (later
 * "upload", "auth", "retry", "query"). Comments (// to end of line and
 * C-style blocks) are allowed outside strings. One table row per key
 * (path, type, default, range, doc) drives the parser, the defaults, the
 * dump and the sample file, so they can never disagree.
 *
 * Every problem is an error that names the key path ("dicom.port"), says
 * what was expected, and for syntax errors gives the line and column:
 *   unknown key, wrong type, value out of range, bad AE title, bad network.
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

#include "util.h"

/* One entry of dicom.allowed_callers. */
struct cfg_caller {
    /* Trimmed AE title; NULL when the entry has no "ae_title" (any AE). */
    char *ae_title;
    /* Networks from "hosts"; host_count 0 means any address. */
    struct util_ipv4_net *hosts;
    size_t host_count;
};

struct cfg_dicom {
    char *ae_title;               /* "STOWBRIDGE" */
    unsigned port;                /* 11112, 1..65535 */
    unsigned max_associations;    /* 16, 1..1024 */
    unsigned max_pdu;             /* 116794, 4096..131072 */
    unsigned timeout_s;           /* 30, 1..3600: ACSE, DIMSE, idle */
    struct cfg_caller *allowed_callers; /* none = accept any caller */
    size_t allowed_caller_count;
};

struct cfg_spool {
    char *dir;                    /* "/var/spool/stowbridge" */
    unsigned min_free_mb;         /* 512, 0..1048576 */
};

struct cfg_log {
    int level;                    /* enum log_level; "info" */
};

struct cfg {
    struct cfg_dicom dicom;
    struct cfg_spool spool;
    struct cfg_log log;
};

/*
 * Reads and parses the file at @path. Errors name the file, and for
 * syntax errors the line. -ENOENT/-EACCES etc. when it cannot be read.
 */
int cfg_load(const char *path, struct cfg **ret_cfg, char *err,
             size_t err_len);

/* Parses @len bytes of @text (need not be NUL-terminated). */
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
