/* SPDX-License-Identifier: Apache-2.0 */
/*
 * token_command - see token_command.h.
 */
#include "token_command.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "base/util.h"
#include "cred_int.h"
#include "credential.h"

extern char **environ;

/* ------------------------------------------------------------------ */
/* Parsing                                                             */
/* ------------------------------------------------------------------ */

/* Reads exactly @n digits at @*p into @ret. */
static bool tc_digits(const char **p, int n, int *ret)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *ret = v;
    return true;
}

/*
 * Parses "YYYY-MM-DD[T ]HH:MM:SS[.fraction]" at @s into @tm; @ret_rest
 * points after it (an offset may follow).
 */
static bool tc_datetime(const char *s, struct tm *tm, const char **ret_rest)
{
    const char *p = s;
    int year, mon, day, hour, min, sec;

    if (!tc_digits(&p, 4, &year) || *p++ != '-' || !tc_digits(&p, 2, &mon) ||
        *p++ != '-' || !tc_digits(&p, 2, &day) || (*p != 'T' && *p != ' '))
        return false;
    p++;
    if (!tc_digits(&p, 2, &hour) || *p++ != ':' || !tc_digits(&p, 2, &min) ||
        *p++ != ':' || !tc_digits(&p, 2, &sec))
        return false;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return false;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 ||
        sec > 60)
        return false;
    memset(tm, 0, sizeof(*tm));
    tm->tm_year = year - 1900;
    tm->tm_mon = mon - 1;
    tm->tm_mday = day;
    tm->tm_hour = hour;
    tm->tm_min = min;
    tm->tm_sec = sec;
    tm->tm_isdst = -1;
    *ret_rest = p;
    return true;
}

/* "2026-12-02 14:03:11.000000" in the local time zone (the Azure CLI's
 * expiresOn). */
static bool tc_local_time(const char *s, int64_t *ret)
{
    const char *rest;
    struct tm tm;
    time_t t;

    if (!tc_datetime(s, &tm, &rest) || *rest != '\0')
        return false;
    t = mktime(&tm);
    if (t == (time_t)-1)
        return false;
    *ret = (int64_t)t;
    return true;
}

/* ISO 8601 with "Z", "+HH:MM", "-HH:MM", "+HHMM", or nothing (local). */
static bool tc_iso_time(const char *s, int64_t *ret)
{
    const char *p;
    struct tm tm;
    int sign;
    int oh;
    int om;

    if (!tc_datetime(s, &tm, &p))
        return false;
    if (*p == '\0')
        return tc_local_time(s, ret);
    if (p[0] == 'Z' && p[1] == '\0') {
        *ret = (int64_t)timegm(&tm);
        return true;
    }
    if (*p != '+' && *p != '-')
        return false;
    sign = *p++ == '+' ? 1 : -1;
    if (!tc_digits(&p, 2, &oh))
        return false;
    if (*p == ':')
        p++;
    if (!tc_digits(&p, 2, &om) || *p != '\0' || oh > 23 || om > 59)
        return false;
    *ret = (int64_t)timegm(&tm) - sign * (oh * 3600 + om * 60);
    return true;
}

/* "/Date(1700000000000)/" or "/Date(1700000000000+0100)/": milliseconds
 * since the epoch, UTC; the offset only says where it was shown. */
static bool tc_ms_date(const char *s, int64_t *ret)
{
    static const char prefix[] = "/Date(";
    const char *p = s;
    long long ms;
    char *end;

    if (strncmp(p, prefix, sizeof(prefix) - 1) != 0)
        return false;
    p += sizeof(prefix) - 1;
    errno = 0;
    ms = strtoll(p, &end, 10);
    if (end == p || errno != 0)
        return false;
    p = end;
    if (*p == '+' || *p == '-') {
        int hhmm;
        p++;
        if (!tc_digits(&p, 4, &hhmm))
            return false;
    }
    if (strcmp(p, ")/") != 0)
        return false;
    /* Floor division: a negative time keeps its second. */
    *ret = (int64_t)(ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000));
    return true;
}

/* 100-ns ticks from 0001-01-01 to the Unix epoch (.NET DateTime). */
#define TC_TICKS_AT_EPOCH 621355968000000000LL

/* PowerShell's ExpiresOn in any ConvertTo-Json form. */
static bool tc_ps_time(const cJSON *item, int64_t *ret)
{
    const cJSON *field;
    int64_t ticks;

    if (cJSON_IsString(item))
        return tc_ms_date(item->valuestring, ret) ||
               tc_iso_time(item->valuestring, ret);
    if (!cJSON_IsObject(item))
        return false;
    field = cJSON_GetObjectItemCaseSensitive(item, "UtcTicks");
    if (cred__json_int(field, &ticks) && ticks > TC_TICKS_AT_EPOCH) {
        *ret = (ticks - TC_TICKS_AT_EPOCH) / 10000000;
        return true;
    }
    field = cJSON_GetObjectItemCaseSensitive(item, "UtcDateTime");
    if (cJSON_IsString(field))
        return tc_ps_time(field, ret);
    field = cJSON_GetObjectItemCaseSensitive(item, "value");
    if (cJSON_IsString(field))
        return tc_ps_time(field, ret);
    return false;
}

/* Whether @s is one printable word (usable in an Authorization header). */
static bool tc_token_usable(const char *s)
{
    if (s[0] == '\0')
        return false;
    for (; *s != '\0'; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

enum tc_expiry {
    TC_NONE, /* not said */
    TC_AT,   /* an absolute time */
    TC_IN,   /* a lifetime */
    TC_BAD,  /* said, but not understood */
};

/*
 * Finds the token in the token command's output @root, in one of three
 * forms (Azure CLI, PowerShell, an OAuth2 answer): the token's member in
 * *@ret_token, the form's name in *@ret_form, and what the output says of
 * the expiry in *@ret_expiry and *@ret_value. -EBADMSG with a reason for
 * none of them, or for PowerShell's SecureString.
 */
static int tc_find_token(const cJSON *root, const cJSON **ret_token,
                         const char **ret_form, enum tc_expiry *ret_expiry,
                         int64_t *ret_value, char *err, size_t err_len)
{
    enum tc_expiry expiry = TC_NONE;
    const cJSON *token;
    const cJSON *item;
    const char *form;
    int64_t value = 0;

    if ((token = cJSON_GetObjectItemCaseSensitive(root, "accessToken"))) {
        form = "Azure CLI";
        item = cJSON_GetObjectItemCaseSensitive(root, "expires_on");
        if (item != NULL) {
            expiry = cred__json_int(item, &value) ? TC_AT : TC_BAD;
        } else if ((item =
                        cJSON_GetObjectItemCaseSensitive(root, "expiresOn"))) {
            expiry =
                cJSON_IsString(item) && tc_local_time(item->valuestring, &value)
                    ? TC_AT
                    : TC_BAD;
        }
    } else if ((token = cJSON_GetObjectItemCaseSensitive(root, "Token"))) {
        form = "PowerShell";
        if (!cJSON_IsString(token) ||
            strcmp(token->valuestring, "System.Security.SecureString") == 0) {
            util_err(err, err_len,
                     "the PowerShell token is a SecureString, which "
                     "ConvertTo-Json cannot show (Az.Accounts 5 and later): "
                     "print it as text, e.g. $t = Get-AzAccessToken "
                     "-ResourceUrl https://dicom.healthcareapis.azure.com; "
                     "@{Token = ($t.Token | ConvertFrom-SecureString "
                     "-AsPlainText); ExpiresOn = $t.ExpiresOn} | "
                     "ConvertTo-Json");
            return -EBADMSG;
        }
        item = cJSON_GetObjectItemCaseSensitive(root, "ExpiresOn");
        if (item != NULL)
            expiry = tc_ps_time(item, &value) ? TC_AT : TC_BAD;
    } else if ((token =
                    cJSON_GetObjectItemCaseSensitive(root, "access_token"))) {
        form = "OAuth2";
        item = cJSON_GetObjectItemCaseSensitive(root, "expires_in");
        if (item != NULL) {
            expiry = cred__json_int(item, &value) ? TC_IN : TC_BAD;
        } else if ((item =
                        cJSON_GetObjectItemCaseSensitive(root, "expires_on"))) {
            expiry = cred__json_int(item, &value) ? TC_AT : TC_BAD;
        }
    } else {
        util_err(err, err_len,
                 "the token command printed JSON without \"accessToken\" "
                 "(Azure CLI), \"Token\" (PowerShell) or \"access_token\" "
                 "(OAuth2)");
        return -EBADMSG;
    }
    *ret_token = token;
    *ret_form = form;
    *ret_expiry = expiry;
    *ret_value = value;
    return 0;
}

int token_command_parse(const char *out, size_t len, int64_t now_s,
                        struct cred_token *ret_token, char *err, size_t err_len)
{
    enum tc_expiry expiry = TC_NONE;
    const cJSON *token = NULL;
    const char *form = NULL;
    int64_t value = 0;
    int64_t lifetime;
    cJSON *root;
    int r;

    if (len >= 3 && memcmp(out, "\xEF\xBB\xBF", 3) == 0) {
        out += 3;
        len -= 3;
    }
    root = cJSON_ParseWithLength(out, len);
    if (!cJSON_IsObject(root)) {
        util_err(err, err_len,
                 "the token command's output (%zu bytes) is not a JSON "
                 "object: it must print the Azure CLI's JSON (--output "
                 "json), PowerShell's (ConvertTo-Json) or an OAuth2 token "
                 "answer",
                 len);
        r = -EBADMSG;
        goto out;
    }
    r = tc_find_token(root, &token, &form, &expiry, &value, err, err_len);
    if (r < 0)
        goto out;
    if (!cJSON_IsString(token) || !tc_token_usable(token->valuestring)) {
        util_err(err, err_len,
                 "the token in the %s output of the token "
                 "command is empty or not one printable word",
                 form);
        r = -EBADMSG;
        goto out;
    }
    if (expiry == TC_BAD) {
        util_err(err, err_len,
                 "the expiry time in the %s output of the "
                 "token command is not understood",
                 form);
        r = -EBADMSG;
        goto out;
    }
    lifetime = expiry == TC_AT ? value - now_s : expiry == TC_IN ? value : -1;
    if (expiry != TC_NONE && lifetime <= 0) {
        util_err(err, err_len,
                 "the token command printed a token that expired %lld s "
                 "ago%s",
                 (long long)-lifetime,
                 strcmp(form, "OAuth2") != 0
                     ? " (sign in again: 'az login' or Connect-AzAccount; "
                       "or check this machine's clock and time zone)"
                     : "");
        r = -EKEYEXPIRED;
        goto out;
    }
    r = cred__token_set(ret_token, token->valuestring, lifetime);
out:
    /* The tree holds the token: wipe it before it goes. */
    if (root != NULL) {
        token = cJSON_GetObjectItemCaseSensitive(root, "accessToken");
        if (token == NULL)
            token = cJSON_GetObjectItemCaseSensitive(root, "Token");
        if (token == NULL)
            token = cJSON_GetObjectItemCaseSensitive(root, "access_token");
        if (cJSON_IsString(token))
            explicit_bzero(token->valuestring, strlen(token->valuestring));
    }
    cJSON_Delete(root);
    return r;
}

/* ------------------------------------------------------------------ */
/* Running                                                             */
/* ------------------------------------------------------------------ */

struct tc_pipe {
    int fd; /* read end, -1 once closed */
    char *data;
    size_t len;
    size_t cap;    /* what is kept */
    bool overflow; /* more came than is kept */
};

static uint64_t tc_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Reads what is available on @p; closes it at end of file. */
static void tc_drain(struct tc_pipe *p)
{
    char chunk[4096];

    while (p->fd >= 0) {
        ssize_t n = read(p->fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0) {
            (void)close(p->fd);
            p->fd = -1;
            break;
        }
        size_t keep = (size_t)n;
        if (p->len + keep > p->cap) {
            keep = p->cap - p->len;
            p->overflow = true;
        }
        memcpy(p->data + p->len, chunk, keep);
        p->len += keep;
        p->data[p->len] = '\0';
    }
    explicit_bzero(chunk, sizeof(chunk));
}

/* A close-on-exec pipe whose ends are not 0, 1 or 2, read end
 * non-blocking. */
static int tc_pipe_open(int fds[2])
{
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -errno;
    for (int i = 0; i < 2; i++) {
        if (fds[i] <= 2) {
            int moved = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
            if (moved < 0) {
                int r = -errno;
                (void)close(fds[0]);
                (void)close(fds[1]);
                return r;
            }
            (void)close(fds[i]);
            fds[i] = moved;
        }
    }
    if (fcntl(fds[0], F_SETFL, O_NONBLOCK) < 0) {
        int r = -errno;
        (void)close(fds[0]);
        (void)close(fds[1]);
        return r;
    }
    return 0;
}

static int tc_spawn(const char *const *argv, int out_fd, int err_fd,
                    pid_t *ret_pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none;
    sigset_t all;
    int r;

    sigemptyset(&none);
    sigfillset(&all);
    r = posix_spawn_file_actions_init(&fa);
    if (r != 0)
        return -r;
    r = posix_spawnattr_init(&attr);
    if (r != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return -r;
    }
    if ((r = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY,
                                              0)) == 0 &&
        (r = posix_spawn_file_actions_adddup2(&fa, out_fd, 1)) == 0 &&
        (r = posix_spawn_file_actions_adddup2(&fa, err_fd, 2)) == 0 &&
        (r = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP |
                                                 POSIX_SPAWN_SETSIGMASK |
                                                 POSIX_SPAWN_SETSIGDEF)) == 0 &&
        (r = posix_spawnattr_setpgroup(&attr, 0)) == 0 &&
        (r = posix_spawnattr_setsigmask(&attr, &none)) == 0 &&
        (r = posix_spawnattr_setsigdefault(&attr, &all)) == 0)
        r = posix_spawnp(ret_pid, argv[0], &fa, &attr, (char *const *)argv,
                         environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return -r;
}

static int tc_reap(pid_t pid, int *ret_status, bool block)
{
    for (;;) {
        pid_t got = waitpid(pid, ret_status, block ? 0 : WNOHANG);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return -errno;
        return got == pid ? 1 : 0;
    }
}

/*
 * Waits for @pid to exit while reading @out and @errp, until @deadline_ms.
 * Returns 1 exited (@ret_status), 0 timed out (not reaped), or a negative
 * errno of waitpid() or poll() (not reaped).
 */
static int tc_wait(pid_t pid, struct tc_pipe *out, struct tc_pipe *errp,
                   uint64_t deadline_ms, int *ret_status)
{
    int pidfd = (int)pidfd_open(pid, 0);
    int r;

    for (;;) {
        struct pollfd fds[3];
        nfds_t n = 0;
        uint64_t now = tc_now_ms();
        int wait_ms;

        r = tc_reap(pid, ret_status, false);
        if (r != 0)
            break;
        if (now >= deadline_ms) {
            r = 0;
            break;
        }
        wait_ms = (int)(deadline_ms - now);
        if (out->fd >= 0)
            fds[n++] = (struct pollfd){ .fd = out->fd, .events = POLLIN };
        if (errp->fd >= 0)
            fds[n++] = (struct pollfd){ .fd = errp->fd, .events = POLLIN };
        if (pidfd >= 0)
            fds[n++] = (struct pollfd){ .fd = pidfd, .events = POLLIN };
        else if (wait_ms > 20)
            wait_ms = 20; /* no pidfd (old kernel): poll for the exit */
        if (poll(fds, n, wait_ms) < 0 && errno != EINTR) {
            r = -errno;
            break;
        }
        tc_drain(out);
        tc_drain(errp);
    }
    if (pidfd >= 0)
        (void)close(pidfd);
    if (r == 1) {
        /* What the command wrote before it exited is in the pipes. */
        tc_drain(out);
        tc_drain(errp);
    }
    return r;
}

static const char *tc_basename(const char *path)
{
    const char *slash = strrchr(path, '/');

    return slash != NULL ? slash + 1 : path;
}

/* ": <first stderr line, scrubbed>" or "" into @buf. */
static void tc_stderr_line(const struct tc_pipe *errp, char *buf, size_t len)
{
    char line[256];

    cred_redact_line(errp->data, errp->len, line, sizeof(line));
    if (line[0] != '\0')
        snprintf(buf, len, ": %s", line);
    else
        snprintf(buf, len, " (nothing on stderr)");
}

/*
 * Waits for the token command @pid (@name, for messages) at most
 * @timeout_s while reading its output into @out and @errp, kills its
 * process group if it overstays, and judges how it ended. Returns 0 when
 * it exited with 0 and printed something within the limit, else a
 * negative errno with the reason: -ETIMEDOUT, -EAGAIN (it failed), -EFBIG
 * (too much output), -EBADMSG (nothing), or what waiting failed with.
 */
static int tc_finish(pid_t pid, const char *name, unsigned timeout_s,
                     struct tc_pipe *out, struct tc_pipe *errp, char *err,
                     size_t err_len)
{
    char why[300];
    int status = 0;
    int r;

    r = tc_wait(pid, out, errp, tc_now_ms() + (uint64_t)timeout_s * 1000u,
                &status);
    if (r < 0) {
        /* E.g. ECHILD when SIGCHLD is ignored: the kernel reaped it. */
        (void)kill(-pid, SIGKILL);
        (void)tc_reap(pid, &status, true);
        util_err(err, err_len,
                 "waiting for the token command '%s' "
                 "failed: %s",
                 name, strerror(-r));
        return r;
    }
    if (r == 0) {
        /* The whole group: az runs Python, which may have children. */
        (void)kill(-pid, SIGKILL);
        (void)tc_reap(pid, &status, true);
        tc_drain(errp);
        tc_stderr_line(errp, why, sizeof(why));
        util_err(err, err_len,
                 "the token command '%s' did not finish within %u s "
                 "(auth.command_timeout_s) and was killed%s",
                 name, timeout_s, why);
        return -ETIMEDOUT;
    }
    if (WIFSIGNALED(status) || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        tc_stderr_line(errp, why, sizeof(why));
        if (WIFSIGNALED(status))
            util_err(err, err_len,
                     "the token command '%s' was killed by "
                     "signal %d (%s)%s",
                     name, WTERMSIG(status), strsignal(WTERMSIG(status)), why);
        else
            util_err(err, err_len,
                     "the token command '%s' exited with "
                     "status %d%s",
                     name, WEXITSTATUS(status), why);
        return -EAGAIN;
    }
    if (out->overflow) {
        util_err(err, err_len,
                 "the token command '%s' printed more than "
                 "%d bytes",
                 name, TOKEN_COMMAND_MAX_OUTPUT);
        return -EFBIG;
    }
    if (out->len == 0) {
        tc_stderr_line(errp, why, sizeof(why));
        util_err(err, err_len,
                 "the token command '%s' exited with status "
                 "0 but printed nothing%s",
                 name, why);
        return -EBADMSG;
    }
    return 0;
}

int token_command_run(const struct token_command_params *params,
                      struct cred_token *ret_token, char *err, size_t err_len)
{
    unsigned timeout_s = params->timeout_s > 0
                             ? params->timeout_s
                             : TOKEN_COMMAND_DEFAULT_TIMEOUT_S;
    struct tc_pipe out = { -1, NULL, 0, TOKEN_COMMAND_MAX_OUTPUT, false };
    struct tc_pipe errp = { -1, NULL, 0, TOKEN_COMMAND_MAX_STDERR, false };
    int out_fds[2] = { -1, -1 };
    int err_fds[2] = { -1, -1 };
    const char *name;
    pid_t pid;
    int r;

    if (params->argv == NULL || params->argv[0] == NULL ||
        params->argv[0][0] == '\0') {
        util_err(err, err_len, "auth.command is empty");
        return -EINVAL;
    }
    name = tc_basename(params->argv[0]);
    out.data = malloc(out.cap + 1);
    errp.data = malloc(errp.cap + 1);
    if (out.data == NULL || errp.data == NULL) {
        r = -ENOMEM;
        goto out_free;
    }
    out.data[0] = errp.data[0] = '\0';
    r = tc_pipe_open(out_fds);
    if (r == 0)
        r = tc_pipe_open(err_fds);
    if (r < 0) {
        util_err(err, err_len, "pipe2() failed: %s", strerror(-r));
        goto out_close;
    }
    r = tc_spawn(params->argv, out_fds[1], err_fds[1], &pid);
    (void)close(out_fds[1]);
    (void)close(err_fds[1]);
    out_fds[1] = err_fds[1] = -1;
    out.fd = out_fds[0];
    errp.fd = err_fds[0];
    out_fds[0] = err_fds[0] = -1;
    if (r < 0) {
        util_err(err, err_len, "cannot run the token command '%s': %s%s",
                 params->argv[0], strerror(-r),
                 r == -ENOENT ? " (not found in PATH; give the full path "
                                "in auth.command)"
                              : "");
        goto out_close;
    }
    r = tc_finish(pid, name, timeout_s, &out, &errp, err, err_len);
    if (r < 0)
        goto out_close;
    r = token_command_parse(out.data, out.len, (int64_t)time(NULL), ret_token,
                            err, err_len);
out_close:
    for (int i = 0; i < 2; i++) {
        if (out_fds[i] >= 0)
            (void)close(out_fds[i]);
        if (err_fds[i] >= 0)
            (void)close(err_fds[i]);
    }
    if (out.fd >= 0)
        (void)close(out.fd);
    if (errp.fd >= 0)
        (void)close(errp.fd);
out_free:
    cred__free_secret_n(out.data, out.cap + 1);
    cred__free_secret_n(errp.data, errp.cap + 1);
    return r;
}
