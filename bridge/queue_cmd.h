/* SPDX-License-Identifier: Apache-2.0 */
/*
 * queue_cmd - `stowbridge queue ...`: list, show, retry and delete spool
 * entries, safe while the daemon runs. Program code: prints; returns the
 * process exit status (0, 1 runtime failure, 2 usage).
 */
#ifndef STOWBRIDGE_QUEUE_CMD_H
#define STOWBRIDGE_QUEUE_CMD_H

struct cfg;

/* @argv holds the words after "queue" (the action and its argument). */
int queue_main(const struct cfg *cfg, int argc, char **argv);

#endif
