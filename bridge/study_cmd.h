/* SPDX-License-Identifier: Apache-2.0 */
/*
 * study_cmd - reconciliation (issue 12 item 5), read-only and safe while
 * the daemon runs (the ledger opened read-only, WAL; the spool without its
 * lock):
 *   stowbridge study UID [--json]   per study: instances received (by
 *       calling AE, first/last arrival), delivered, queued by state,
 *       failed with reasons, and the commitment transactions that named
 *       it with their outcome;
 *   stowbridge commit list [--json] | show TXUID [--json]
 *       the commitment transactions (newest first) and one with every
 *       item, its result, Failure Reason and what decided it.
 * Program code: prints to stdout, problems to stderr; returns the process
 * exit status (0, 1 runtime failure or not found, 2 usage).
 */
#ifndef STOWBRIDGE_STUDY_CMD_H
#define STOWBRIDGE_STUDY_CMD_H

#include <stddef.h>

struct cfg;

/* The ledger file of @cfg: ledger.path, or <spool.dir>/ledger.db.
 * Returns 0 or -ENAMETOOLONG. */
int study_ledger_path(const struct cfg *cfg, char *buf, size_t len);

/* @argv holds the words after "study": the UID and maybe "--json". */
int study_main(const struct cfg *cfg, int argc, char **argv);

/* @argv holds the words after "commit": list | show TXUID, "--json". */
int commit_cmd_main(const struct cfg *cfg, int argc, char **argv);

#endif
