/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cred_test_util - what the credential tests share: a temporary
 * directory, running openssl and other commands, small files, a peer
 * server process (Python or Node.js) that prints "PORT <n>" on its
 * stdout once it listens, and a base64url decoder independent of the
 * code under test (OpenSSL's EVP_DecodeBlock).
 */
#ifndef STOWBRIDGE_CRED_TEST_UTIL_H
#define STOWBRIDGE_CRED_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Creates a fresh directory under $TMPDIR or /tmp into @buf. 0 or -1. */
int ctu_tmpdir(char *buf, size_t len);

/* Removes the directory tree @dir (rm -rf). */
void ctu_rmtree(const char *dir);

/* Runs @fmt (printf-style) through /bin/sh; prints it when it fails.
 * Returns the exit status (0 success). */
int ctu_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Writes @text to @path (mode @mode). 0 or -1. */
int ctu_write(const char *path, const char *text, unsigned mode);

/* Reads @path into a new NUL-terminated string, or NULL. */
char *ctu_read(const char *path, size_t *ret_len);

/* A server process started from @argv, listening on @port. */
struct ctu_server {
    pid_t pid;
    int port;
    int stdout_fd;
};

/* Starts @argv and waits up to @timeout_s for its "PORT <n>" line.
 * 0 or -1 (the process is then stopped). */
int ctu_server_start(struct ctu_server *server, const char *const *argv,
                     unsigned timeout_s);

/* SIGTERM, then SIGKILL after a while; reaps. */
void ctu_server_stop(struct ctu_server *server);

/* Decodes base64url (padding optional) into a new NUL-terminated buffer;
 * NULL on bad input. */
unsigned char *ctu_b64url_decode(const char *in, size_t len, size_t *ret_len);

/* Base64url (no padding) of @data into a new string. */
char *ctu_b64url_encode(const unsigned char *data, size_t len);

/* Whether a process @pid exists and is not a zombie. */
bool ctu_process_alive(pid_t pid);

#endif
