/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cred_test_util - see cred_test_util.h.
 */
#include "cred_test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

int ctu_tmpdir(char *buf, size_t len)
{
    const char *base = getenv("TMPDIR");

    snprintf(buf, len, "%s/sb-cred-XXXXXX",
             base != NULL && base[0] != '\0' ? base : "/tmp");
    return mkdtemp(buf) != NULL ? 0 : -1;
}

void ctu_rmtree(const char *dir)
{
    if (dir[0] != '\0' && strstr(dir, "sb-cred-") != NULL)
        (void)ctu_sh("rm -rf '%s'", dir);
}

int ctu_sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    int status;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    status = system(cmd);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "command failed (%d): %s\n", status, cmd);
        return status == -1        ? -1
               : WIFEXITED(status) ? WEXITSTATUS(status)
                                   : 128;
    }
    return 0;
}

int ctu_write(const char *path, const char *text, unsigned mode)
{
    char tmp[4096];
    size_t len = strlen(text);
    int fd;

    /* Atomically, as a rotating writer (the kubelet) does. */
    snprintf(tmp, sizeof(tmp), "%s.tmp%d", path, (int)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if (write(fd, text, len) != (ssize_t)len) {
        (void)close(fd);
        return -1;
    }
    if (fchmod(fd, (mode_t)mode) < 0 || close(fd) < 0)
        return -1;
    return rename(tmp, path) == 0 ? 0 : -1;
}

char *ctu_read(const char *path, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    char *data = NULL;
    size_t len = 0;
    size_t cap = 0;
    size_t n;
    char chunk[4096];

    if (f == NULL)
        return NULL;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            char *grown = realloc(data, cap);
            if (grown == NULL) {
                free(data);
                fclose(f);
                return NULL;
            }
            data = grown;
        }
        memcpy(data + len, chunk, n);
        len += n;
    }
    fclose(f);
    if (data == NULL)
        data = calloc(1, 1);
    else
        data[len] = '\0';
    if (ret_len != NULL)
        *ret_len = len;
    return data;
}

int ctu_server_start(struct ctu_server *server, const char *const *argv,
                     unsigned timeout_s)
{
    char line[256];
    size_t used = 0;
    int fds[2];
    time_t deadline = time(NULL) + (time_t)timeout_s;

    server->pid = -1;
    server->port = 0;
    server->stdout_fd = -1;
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -1;
    server->pid = fork();
    if (server->pid < 0)
        return -1;
    if (server->pid == 0) {
        (void)dup2(fds[1], 1);
        (void)setpgid(0, 0);
        execv(argv[0], (char *const *)argv);
        fprintf(stderr, "execv %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    (void)close(fds[1]);
    server->stdout_fd = fds[0];
    while (time(NULL) < deadline && used + 1 < sizeof(line)) {
        struct pollfd p = { .fd = fds[0], .events = POLLIN };
        ssize_t n;

        if (poll(&p, 1, 1000) <= 0)
            continue;
        n = read(fds[0], line + used, sizeof(line) - 1 - used);
        if (n <= 0)
            break;
        used += (size_t)n;
        line[used] = '\0';
        char *at = strstr(line, "PORT ");
        if (at != NULL && strchr(at, '\n') != NULL) {
            server->port = atoi(at + 5);
            if (server->port > 0)
                return 0;
            break;
        }
    }
    fprintf(stderr, "server %s did not report its port\n", argv[1]);
    ctu_server_stop(server);
    return -1;
}

void ctu_server_stop(struct ctu_server *server)
{
    int status;

    if (server->pid > 0) {
        (void)kill(-server->pid, SIGTERM);
        (void)kill(server->pid, SIGTERM);
        for (int i = 0; i < 100; i++) {
            if (waitpid(server->pid, &status, WNOHANG) == server->pid) {
                server->pid = -1;
                break;
            }
            usleep(50000);
        }
        if (server->pid > 0) {
            (void)kill(-server->pid, SIGKILL);
            (void)kill(server->pid, SIGKILL);
            (void)waitpid(server->pid, &status, 0);
        }
        server->pid = -1;
    }
    if (server->stdout_fd >= 0)
        (void)close(server->stdout_fd);
    server->stdout_fd = -1;
}

unsigned char *ctu_b64url_decode(const char *in, size_t len, size_t *ret_len)
{
    size_t padded = (len + 3) / 4 * 4;
    char *std = malloc(padded + 1);
    unsigned char *out = malloc(padded / 4 * 3 + 1);
    int n;

    if (std == NULL || out == NULL) {
        free(std);
        free(out);
        return NULL;
    }
    for (size_t i = 0; i < padded; i++) {
        char c = i < len ? in[i] : '=';
        std[i] = c == '-' ? '+' : c == '_' ? '/' : c;
    }
    std[padded] = '\0';
    n = EVP_DecodeBlock(out, (unsigned char *)std, (int)padded);
    free(std);
    if (n < 0) {
        free(out);
        return NULL;
    }
    /* EVP_DecodeBlock counts the padding as zero bytes. */
    for (size_t i = len; i < padded; i++)
        n--;
    out[n] = '\0';
    if (ret_len != NULL)
        *ret_len = (size_t)n;
    return out;
}

char *ctu_b64url_encode(const unsigned char *data, size_t len)
{
    char *out = malloc((len + 2) / 3 * 4 + 1);
    int n;

    if (out == NULL)
        return NULL;
    n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    while (n > 0 && out[n - 1] == '=')
        n--;
    out[n] = '\0';
    for (int i = 0; i < n; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    return out;
}

bool ctu_process_alive(pid_t pid)
{
    char path[64];
    char *stat;
    char *paren;
    bool alive;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    stat = ctu_read(path, NULL);
    if (stat == NULL)
        return false;
    paren = strrchr(stat, ')');
    alive =
        paren != NULL && paren[1] == ' ' && paren[2] != 'Z' && paren[2] != 'X';
    free(stat);
    return alive;
}
