/* SPDX-License-Identifier: Apache-2.0 */
/*
 * status - `stowbridge status`: per-state counts, bytes and oldest age of
 * the spool, read without the daemon's lock (safe while it runs).
 *
 * Program code: it prints to stdout and reports errors on stderr. Returns
 * the process exit status.
 */
#ifndef STOWBRIDGE_STATUS_H
#define STOWBRIDGE_STATUS_H

#include <stdbool.h>

struct cfg;

/*
 * Prints the spool's state: a table, or with @json exactly
 * {"incoming": {"count": N, "bytes": B, "oldest_s": S}, "active": ...,
 *  "deferred": ..., "failed": ..., "tmp": ...,
 *  "paused": null | {"remaining_s": N, "until": "ISO 8601 UTC",
 *                    "reason": "..."}}
 * where "paused" is the pause of every upload in effect (the spool's pause
 * file), if any.
 */
int status_main(const struct cfg *cfg, bool json);

#endif
