/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_token_command - auth.type "command" (token_command.h) with a fake
 * `az` (tests/unit/fake_bin/az) found in PATH, as the real one would be:
 * each JSON form (Azure CLI with expires_on as a number or a string, or
 * only expiresOn in local time; PowerShell's ISO 8601 and /Date()/
 * forms; OAuth2), stdin being /dev/null, stderr ignored on success, a
 * helper process left holding stdout not waited for; a hanging command
 * killed at the timeout with its whole process group; a failing command
 * reported with its status and the first line of its stderr with the
 * token-shaped parts stripped; a signal, garbage, too much output, an
 * expired token, a PowerShell SecureString, a program not found. Then
 * the parser alone, on a fixed clock and time zone.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cred_test_util.h"
#include "tap.h"
#include "web/credential.h"
#include "web/token_command.h"

static char dir[512];
static char pidfile[600];
static char err[1024];

static const char *const az_argv[] = {
    "az",
    "account",
    "get-access-token",
    "--resource",
    "https://dicom.healthcareapis.azure.com",
    "--output",
    "json",
    NULL,
};

static int run_mode(const char *mode, unsigned timeout_s,
                    struct cred_token *ret)
{
    struct token_command_params p = { .argv = az_argv, .timeout_s = timeout_s };

    setenv("FAKE_AZ_MODE", mode, 1);
    err[0] = '\0';
    ret->access_token = NULL;
    ret->expires_in_s = 0;
    return token_command_run(&p, ret, err, sizeof(err));
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;

    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) +
           (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static void expect_token(const char *mode, const char *token, int64_t lo,
                         int64_t hi)
{
    struct cred_token t;
    int r = run_mode(mode, 30, &t);

    CHECK_MSG(r == 0 && t.access_token != NULL &&
                  strcmp(t.access_token, token) == 0 && t.expires_in_s >= lo &&
                  t.expires_in_s <= hi,
              "%s: r=%d token=%s expires_in=%lld err=%s", mode, r,
              t.access_token, (long long)t.expires_in_s, err);
    cred_token_free(&t);
}

static void test_forms(void)
{
    expect_token("cli-epoch",
                 "eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJkaWNvbSJ9.c2lnLWNsaQ", 3500,
                 3600);
    expect_token("cli-epoch-string", "cli.string", 1100, 1200);
    /* Local time, in a zone that is not UTC (TZ set in main()). */
    expect_token("cli-local", "cli.local", 1700, 1800);
    expect_token("ps-iso", "ps.iso", 2900, 3000);
    expect_token("ps-msdate", "ps.msdate", 2300, 2400);
    expect_token("oauth", "oauth.tok", 3599, 3599);
    expect_token("warn", "oauth.warn", 600, 600);
    expect_token("stdin", "oauth.stdin", 600, 600);
}

static pid_t read_pid(int index)
{
    char *text = ctu_read(pidfile, NULL);
    long a = 0;
    long b = 0;

    if (text == NULL)
        return 0;
    int n = sscanf(text, "%ld %ld", &a, &b);
    free(text);
    if (n < index + 1)
        return 0;
    return (pid_t)(index == 0 ? a : b);
}

static void test_processes(void)
{
    struct timespec t0;
    struct cred_token t;
    double took;
    pid_t shell;
    pid_t child;
    int r;

    /* A helper holding stdout open does not keep us waiting. */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    r = run_mode("leftover", 30, &t);
    took = seconds_since(&t0);
    CHECK_MSG(r == 0 && t.access_token != NULL &&
                  strcmp(t.access_token, "oauth.leftover") == 0,
              "%d %s", r, err);
    CHECK_MSG(took < 20, "leftover took %.1f s", took);
    cred_token_free(&t);
    child = read_pid(0);
    if (child > 0)
        (void)kill(child, SIGKILL);

    /* A hanging command: killed at the timeout, with its children. */
    (void)unlink(pidfile);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    r = run_mode("hang", 2, &t);
    took = seconds_since(&t0);
    CHECK_MSG(r == -ETIMEDOUT, "%d %s", r, err);
    CHECK_MSG(took >= 1.9 && took < 30, "hang took %.1f s", took);
    CHECK_MSG(strstr(err, "did not finish within 2 s") != NULL &&
                  strstr(err, "killed") != NULL &&
                  strstr(err, "Waiting for the device code login") != NULL,
              "%s", err);
    shell = read_pid(0);
    child = read_pid(1);
    CHECK(shell > 0 && child > 0);
    CHECK_MSG(!ctu_process_alive(shell), "the command %d survived", shell);
    /* The grandchild gets SIGKILL too; init reaps it soon after. */
    for (int i = 0; i < 200 && child > 0 && ctu_process_alive(child); i++)
        usleep(50000);
    CHECK_MSG(child > 0 && !ctu_process_alive(child), "its child %d survived",
              child);
    CHECK(t.access_token == NULL);
}

static void test_failures(void)
{
    struct cred_token t;
    int r;

    r = run_mode("fail", 30, &t);
    CHECK(r == -EAGAIN && t.access_token == NULL);
    CHECK_MSG(strstr(err, "the token command 'az' exited with status 1: "
                          "ERROR: AADSTS70043: refresh token expired;") != NULL,
              "%s", err);
    /* Token-shaped parts stripped, the rest (path, advice) kept. */
    CHECK_MSG(strstr(err, "eyJ") == NULL && strstr(err, "Zk8Q") == NULL &&
                  strstr(err, "cached [redacted] and secret [redacted] in "
                              "/home/u/.azure/msal_token_cache.json, run "
                              "'az login'") != NULL,
              "%s", err);
    /* Only the first line. */
    CHECK(strstr(err, "second line") == NULL);

    r = run_mode("fail-quiet", 30, &t);
    CHECK_MSG(r == -EAGAIN && strstr(err, "exited with status 2 (nothing on "
                                          "stderr)") != NULL,
              "%s", err);
    r = run_mode("signal", 30, &t);
    CHECK_MSG(r == -EAGAIN && strstr(err, "killed by signal 9") != NULL, "%s",
              err);
    r = run_mode("garbage", 30, &t);
    CHECK_MSG(r == -EBADMSG && strstr(err, "not a JSON object") != NULL &&
                  strstr(err, "secret") == NULL,
              "%s", err);
    r = run_mode("big", 30, &t);
    CHECK_MSG(r == -EFBIG && strstr(err, "more than") != NULL, "%s", err);
    r = run_mode("empty", 30, &t);
    CHECK_MSG(r == -EBADMSG && strstr(err, "printed nothing") != NULL, "%s",
              err);
    r = run_mode("expired", 30, &t);
    CHECK_MSG(r == -EKEYEXPIRED && strstr(err, "az login") != NULL &&
                  strstr(err, "cli.old") == NULL,
              "%s", err);
    r = run_mode("ps-secure", 30, &t);
    CHECK_MSG(r == -EBADMSG && strstr(err, "SecureString") != NULL &&
                  strstr(err, "ConvertFrom-SecureString") != NULL,
              "%s", err);
    CHECK(t.access_token == NULL);

    static const char *const missing[] = { "no-such-token-tool", NULL };
    struct token_command_params p = { .argv = missing };
    r = token_command_run(&p, &t, err, sizeof(err));
    CHECK_MSG(r == -ENOENT && strstr(err, "not found in PATH") != NULL, "%s",
              err);
    static const char *const none[] = { NULL };
    p.argv = none;
    CHECK(token_command_run(&p, &t, err, sizeof(err)) == -EINVAL);
}

static int parse(const char *json, int64_t now, struct cred_token *t)
{
    err[0] = '\0';
    t->access_token = NULL;
    t->expires_in_s = 0;
    return token_command_parse(json, strlen(json), now, t, err, sizeof(err));
}

/* Parses @json at @now; checks the lifetime is @want (and frees). */
static void expect_lifetime(const char *json, int64_t now, int64_t want)
{
    struct cred_token t;
    int r = parse(json, now, &t);

    CHECK_MSG(r == 0 && t.expires_in_s == want, "%s: r=%d %lld (want %lld) %s",
              json, r, (long long)t.expires_in_s, (long long)want, err);
    cred_token_free(&t);
}

static void test_parser(void)
{
    const int64_t now = 1700000000; /* 2023-11-14 22:13:20 UTC */
    struct cred_token t;

    /* Azure CLI. expires_on wins over expiresOn. */
    expect_lifetime("{\"accessToken\":\"a\",\"expires_on\":1700003600,"
                    "\"expiresOn\":\"1999-01-01 00:00:00.000000\"}",
                    now, 3600);
    expect_lifetime("{\"accessToken\":\"a\",\"expires_on\":\"1700000060\"}",
                    now, 60);
    /* TZ is UTC+05:30 here: 2023-11-15 03:43:20 local = 22:13:20 UTC. */
    expect_lifetime("{\"accessToken\":\"a\",\"expiresOn\":"
                    "\"2023-11-15 04:43:20.000000\"}",
                    now, 3600);
    expect_lifetime("{\"accessToken\":\"a\",\"expiresOn\":"
                    "\"2023-11-15 03:53:20\"}",
                    now, 600);
    /* PowerShell. */
    expect_lifetime("{\"Token\":\"p\",\"ExpiresOn\":"
                    "\"2023-11-14T23:13:20+00:00\"}",
                    now, 3600);
    expect_lifetime("{\"Token\":\"p\",\"ExpiresOn\":"
                    "\"2023-11-15T00:13:20.1234567+01:00\"}",
                    now, 3600);
    expect_lifetime("{\"Token\":\"p\",\"ExpiresOn\":"
                    "\"2023-11-14T18:13:20-05:00\"}",
                    now, 3600);
    expect_lifetime("{\"Token\":\"p\",\"ExpiresOn\":\"2023-11-14T22:23:20Z\"}",
                    now, 600);
    expect_lifetime("{\"Token\":\"p\",\"ExpiresOn\":"
                    "\"\\/Date(1700003600000)\\/\"}",
                    now, 3600);
    expect_lifetime("{\"Token\":\"p\",\"ExpiresOn\":"
                    "\"/Date(1700003600999+0100)/\"}",
                    now, 3600);
    expect_lifetime(
        "{\"Token\":\"p\",\"ExpiresOn\":{\"UtcTicks\":"
        "638373968000000000,\"DateTime\":\"x\"}}",
        now,
        0 + 0 + (638373968000000000LL - 621355968000000000LL) / 10000000 - now);
    expect_lifetime("{\"Token\":\"p\",\"ExpiresOn\":{\"value\":"
                    "\"/Date(1700000600000)/\"}}",
                    now, 600);
    expect_lifetime("{\"Token\":\"p\",\"ExpiresOn\":{\"UtcDateTime\":"
                    "\"2023-11-14T22:23:20Z\"}}",
                    now, 600);
    /* OAuth2. */
    expect_lifetime("{\"access_token\":\"o\",\"expires_in\":3599}", now, 3599);
    expect_lifetime("{\"access_token\":\"o\",\"expires_in\":\"3599\"}", now,
                    3599);
    expect_lifetime("{\"access_token\":\"o\",\"expires_on\":1700000100}", now,
                    100);
    /* No expiry said: unknown. A UTF-8 BOM (Windows PowerShell). */
    expect_lifetime("{\"access_token\":\"o\"}", now, -1);
    expect_lifetime("\xEF\xBB\xBF{\"Token\":\"p\"}", now, -1);

    CHECK(parse("{\"accessToken\":\"a\",\"expiresOn\":\"tomorrow\"}", now,
                &t) == -EBADMSG);
    CHECK(strstr(err, "expiry time") != NULL);
    CHECK(parse("{\"Token\":\"p\",\"ExpiresOn\":\"2023-13-14T00:00:00Z\"}", now,
                &t) == -EBADMSG);
    CHECK(parse("{\"Token\":\"p\",\"ExpiresOn\":\"/Date(abc)/\"}", now, &t) ==
          -EBADMSG);
    CHECK(parse("{\"access_token\":\"o\",\"expires_in\":\"soon\"}", now, &t) ==
          -EBADMSG);
    CHECK(parse("{\"access_token\":\"o\",\"expires_in\":0}", now, &t) ==
          -EKEYEXPIRED);
    CHECK(parse("{\"access_token\":\"two words\"}", now, &t) == -EBADMSG);
    CHECK(strstr(err, "two words") == NULL);
    CHECK(parse("{\"access_token\":\"\"}", now, &t) == -EBADMSG);
    CHECK(parse("{\"access_token\":42}", now, &t) == -EBADMSG);
    CHECK(parse("{\"Token\":{\"Length\":1234}}", now, &t) == -EBADMSG);
    CHECK(strstr(err, "SecureString") != NULL);
    CHECK(parse("{\"token\":\"lowercase-secret\"}", now, &t) == -EBADMSG);
    CHECK(strstr(err, "lowercase-secret") == NULL);
    CHECK(parse("[\"accessToken\"]", now, &t) == -EBADMSG);
    CHECK(parse("eyJhbGciOiJub25lIn0.e30.", now, &t) == -EBADMSG);
    CHECK(strstr(err, "eyJ") == NULL);
    CHECK(t.access_token == NULL);
}

static void test_redaction(void)
{
    char buf[200];
    const char *text;

    text = "\n\n  Error: token eyJhbGciOiJIUzI1NiJ9.eyJ4IjoxfQ.abc rejected\n"
           "second";
    cred_redact_line(text, strlen(text), buf, sizeof(buf));
    CHECK_MSG(strcmp(buf, "Error: token [redacted] rejected") == 0, "%s", buf);
    text = "key=0123456789abcdef0123456789abcdef0123 guid "
           "72f988bf-86f1-41af-91ab-2d7cd011db47 ok";
    cred_redact_line(text, strlen(text), buf, sizeof(buf));
    CHECK_MSG(strcmp(buf, "key=[redacted] guid "
                          "72f988bf-86f1-41af-91ab-2d7cd011db47 ok") == 0,
              "%s", buf);
    text = "at /usr/lib/python3/dist-packages/azure/cli/core/_profile.py:123";
    cred_redact_line(text, strlen(text), buf, sizeof(buf));
    CHECK(strcmp(buf, text) == 0);
    text = "bearer dGhpcyBpcyBhIHNlY3JldCB0b2tlbg== AADSTS7000215:x\tbell\a";
    cred_redact_line(text, strlen(text), buf, sizeof(buf));
    CHECK_MSG(strcmp(buf, "bearer [redacted] AADSTS7000215:x?bell?") == 0, "%s",
              buf);
    text = "word1 word2 word3";
    cred_redact_line(text, strlen(text), buf, 10);
    CHECK_MSG(strcmp(buf, "word1 ...") == 0, "%s", buf);
    cred_redact_line(NULL, 0, buf, sizeof(buf));
    CHECK(buf[0] == '\0');
    cred_redact_line("\n \n", 3, buf, sizeof(buf));
    CHECK(buf[0] == '\0');
}

int main(void)
{
    char path_env[4096];
    const char *old_path = getenv("PATH");

    if (ctu_tmpdir(dir, sizeof(dir)) < 0)
        return 1;
    snprintf(pidfile, sizeof(pidfile), "%s/pids", dir);
    setenv("FAKE_AZ_PIDFILE", pidfile, 1);
    snprintf(path_env, sizeof(path_env), "%s/tests/unit/fake_bin:%s",
             SB_SOURCE_DIR, old_path != NULL ? old_path : "/usr/bin:/bin");
    setenv("PATH", path_env, 1);
    /* A zone that is not UTC, for the CLI's local expiresOn (POSIX TZ:
     * "IST-5:30" is UTC+05:30, no tzdata needed). */
    setenv("TZ", "IST-5:30", 1);
    tzset();

    test_parser();
    test_redaction();
    test_forms();
    test_failures();
    test_processes();
    ctu_rmtree(dir);
    return tap_done();
}
