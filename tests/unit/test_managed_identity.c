/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_managed_identity - Azure managed identity (managed_identity.h)
 * against scripted endpoints (identity_server.py): the VM instance
 * metadata service (Metadata header, api-version, resource, client_id,
 * string and number lifetimes, expires_on, its errors and the ones to
 * retry, a redirect not followed, an oversized answer, a description
 * carrying a token-shaped string) and the Azure Arc challenge (the key
 * file sent back; refused: a file outside the token directory, a path
 * escaping it, not .key, over 4096 bytes, a symbolic link, a directory,
 * a file this user cannot read, no challenge header, a key refused);
 * detection from the environment as the Azure SDKs do it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cred_test_util.h"
#include "tap.h"
#include "web/credential.h"
#include "web/managed_identity.h"

static char dir[512];
static char tokens[600];
static int port;
static char err[1024];
static const struct mi_env no_env;

static const char *path(const char *name)
{
    static char buf[4][700];
    static int next;
    char *p = buf[next++ % 4];

    snprintf(p, sizeof(buf[0]), "%s/%s", tokens, name);
    return p;
}

static const char *endpoint(const char *kind, const char *scenario)
{
    static char buf[4][200];
    static int next;
    char *p = buf[next++ % 4];

    snprintf(p, sizeof(buf[0]),
             "http://127.0.0.1:%d/%s/%s/metadata/identity/oauth2/token", port,
             kind, scenario);
    return p;
}

/* One token request; the token (or NULL) in @ret_token. */
static int get(enum mi_flavor flavor, const char *scenario,
               const char *client_id, const char *token_dir,
               struct cred_token *ret_token)
{
    struct mi_params p = {
        .flavor = flavor,
        .client_id = client_id,
        .endpoint = endpoint(flavor == MI_ARC ? "arc" : "imds", scenario),
        .arc_token_dir = token_dir,
        .timeout_s = 20,
    };

    err[0] = '\0';
    ret_token->access_token = NULL;
    ret_token->expires_in_s = 0;
    return mi_get_token(&p, &no_env, (int64_t)time(NULL), ret_token, err,
                        sizeof(err));
}

static void test_resolve(void)
{
    struct mi_params p = { .flavor = MI_DETECT };
    struct mi_env env;
    enum mi_flavor flavor = MI_DETECT;
    char *url = NULL;

    CHECK(mi_resolve(&p, &no_env, &flavor, &url, err, sizeof(err)) == 0);
    CHECK(flavor == MI_IMDS);
    CHECK_MSG(url != NULL &&
                  strcmp(url,
                         "http://169.254.169.254/metadata/identity/"
                         "oauth2/token?api-version=2018-02-01&resource="
                         "https%3A%2F%2Fdicom.healthcareapis.azure.com") == 0,
              "%s", url);
    free(url);
    url = NULL;
    p.client_id = "0b5ed7c2-1111-2222-3333-444444444444";
    p.resource = "https://other.example/";
    CHECK(mi_resolve(&p, &no_env, &flavor, &url, err, sizeof(err)) == 0);
    CHECK_MSG(url != NULL &&
                  strstr(url, "?api-version=2018-02-01&resource=https%3A%2F%2F"
                              "other.example%2F&client_id=0b5ed7c2-1111-2222-"
                              "3333-444444444444") != NULL,
              "%s", url);
    free(url);
    url = NULL;

    /* Arc: both variables, as the agent sets them. */
    memset(&env, 0, sizeof(env));
    env.identity_endpoint = "http://localhost:40342/metadata/identity/oauth2/"
                            "token";
    env.imds_endpoint = "http://localhost:40342";
    p.client_id = NULL;
    p.resource = NULL;
    CHECK(mi_resolve(&p, &env, &flavor, &url, err, sizeof(err)) == 0);
    CHECK(flavor == MI_ARC);
    CHECK_MSG(url != NULL &&
                  strcmp(url, "http://127.0.0.1:40342/metadata/identity/oauth2/"
                              "token?api-version=2020-06-01&resource=https%3A"
                              "%2F%2Fdicom.healthcareapis.azure.com") == 0,
              "%s", url);
    free(url);
    url = NULL;
    /* Arc is system-assigned only. */
    p.client_id = "some-user-assigned";
    CHECK(mi_resolve(&p, &env, &flavor, &url, err, sizeof(err)) == -EINVAL);
    CHECK(strstr(err, "system-assigned") != NULL &&
          strstr(err, "auth.client_id") != NULL);
    p.client_id = NULL;
    /* Only IDENTITY_ENDPOINT: not Arc (it is App Service's half). */
    env.imds_endpoint = NULL;
    CHECK(mi_resolve(&p, &env, &flavor, &url, err, sizeof(err)) == 0);
    CHECK(flavor == MI_IMDS);
    free(url);
    url = NULL;
    /* The agent installed, no variables (a unit without them). */
    memset(&env, 0, sizeof(env));
    env.arc_agent_installed = true;
    CHECK(mi_resolve(&p, &env, &flavor, &url, err, sizeof(err)) == 0);
    CHECK(flavor == MI_ARC && url != NULL &&
          strncmp(url, MI_ARC_URL "?api-version=2020-06-01", 70) == 0);
    free(url);
    url = NULL;
    /* Host kinds not served, said so. */
    memset(&env, 0, sizeof(env));
    env.identity_endpoint = "http://127.0.0.1:8081/msi/token";
    env.identity_header = "abc";
    CHECK(mi_resolve(&p, &env, &flavor, &url, err, sizeof(err)) == -EINVAL);
    CHECK(strstr(err, "App Service") != NULL);
    memset(&env, 0, sizeof(env));
    env.msi_endpoint = "http://localhost:50342/oauth2/token";
    CHECK(mi_resolve(&p, &env, &flavor, &url, err, sizeof(err)) == -EINVAL);
    CHECK(strstr(err, "Cloud Shell") != NULL);
    /* An endpoint override with a query of its own. */
    p.flavor = MI_IMDS;
    p.endpoint = "http://127.0.0.1:9/token?x=1";
    CHECK(mi_resolve(&p, &no_env, &flavor, &url, err, sizeof(err)) == 0);
    CHECK(url != NULL &&
          strncmp(url, "http://127.0.0.1:9/token?x=1&api-version=", 41) == 0);
    free(url);

    /* From the process environment. */
    setenv("IDENTITY_ENDPOINT", "http://localhost:40342/x", 1);
    setenv("IMDS_ENDPOINT", "http://localhost:40342", 1);
    setenv("IDENTITY_HEADER", "", 1);
    mi_env_from_process(&env);
    CHECK(env.identity_endpoint != NULL &&
          strcmp(env.identity_endpoint, "http://localhost:40342/x") == 0);
    CHECK(env.imds_endpoint != NULL && env.identity_header == NULL);
    unsetenv("IDENTITY_ENDPOINT");
    unsetenv("IMDS_ENDPOINT");
    unsetenv("IDENTITY_HEADER");
    mi_env_from_process(&env);
    CHECK(env.identity_endpoint == NULL && env.imds_endpoint == NULL);
}

static void test_imds(void)
{
    struct cred_token t;
    int64_t now;
    int r;

    r = get(MI_IMDS, "ok", NULL, NULL, &t);
    CHECK_MSG(r == 0, "%s", err);
    CHECK(t.access_token != NULL &&
          strcmp(t.access_token, "imds.system.https%3A%2F%2Fdicom."
                                 "healthcareapis.azure.com") == 0);
    CHECK(t.expires_in_s == 86399);
    cred_token_free(&t);
    r = get(MI_IMDS, "ok", "my-identity", NULL, &t);
    CHECK_MSG(r == 0 && t.access_token != NULL &&
                  strncmp(t.access_token, "imds.my-identity.", 17) == 0,
              "%d %s", r, err);
    cred_token_free(&t);
    r = get(MI_IMDS, "numbers", NULL, NULL, &t);
    CHECK(r == 0 && t.expires_in_s == 3600);
    cred_token_free(&t);
    now = (int64_t)time(NULL);
    r = get(MI_IMDS, "expires-on", NULL, NULL, &t);
    CHECK(r == 0 && t.expires_in_s > 1700 && t.expires_in_s <= 1800 + 5);
    (void)now;
    cred_token_free(&t);

    r = get(MI_IMDS, "expired", NULL, NULL, &t);
    CHECK(r == -EBADMSG && t.access_token == NULL &&
          strstr(err, "already expired") != NULL);
    r = get(MI_IMDS, "noidentity", NULL, NULL, &t);
    CHECK_MSG(r == -EACCES && strstr(err, "HTTP 400") != NULL &&
                  strstr(err, "Identity not found") != NULL &&
                  strstr(err, "no managed identity is assigned") != NULL,
              "%s", err);
    r = get(MI_IMDS, "secretdesc", NULL, NULL, &t);
    CHECK_MSG(r == -EACCES && strstr(err, "eyJ") == NULL &&
                  strstr(err, "[redacted]") != NULL,
              "%s", err);
    r = get(MI_IMDS, "updating", NULL, NULL, &t);
    CHECK(r == -EAGAIN && strstr(err, "HTTP 410") != NULL &&
          strstr(err, "70 s") != NULL);
    r = get(MI_IMDS, "busy", NULL, NULL, &t);
    CHECK(r == -EAGAIN && strstr(err, "HTTP 429") != NULL);
    r = get(MI_IMDS, "down", NULL, NULL, &t);
    CHECK(r == -EAGAIN && strstr(err, "HTTP 503") != NULL);
    r = get(MI_IMDS, "garbage", NULL, NULL, &t);
    CHECK(r == -EBADMSG && strstr(err, "not a JSON object") != NULL);
    r = get(MI_IMDS, "notoken", NULL, NULL, &t);
    CHECK(r == -EBADMSG && strstr(err, "access_token") != NULL);
    r = get(MI_IMDS, "redirect", NULL, NULL, &t);
    CHECK_MSG(r == -EAGAIN && strstr(err, "HTTP 302") != NULL, "%s", err);
    r = get(MI_IMDS, "big", NULL, NULL, &t);
    CHECK_MSG(r == -EAGAIN && strstr(err, "larger than") != NULL, "%s", err);
    r = get(MI_IMDS, "nosuch", NULL, NULL, &t);
    CHECK(r == -EAGAIN && strstr(err, "HTTP 404") != NULL);
    CHECK(t.access_token == NULL);

    /* Nobody listening. */
    struct mi_params p = {
        .flavor = MI_IMDS,
        .endpoint = "http://127.0.0.1:1/metadata/identity/oauth2/token",
        .timeout_s = 5,
    };
    r = mi_get_token(&p, &no_env, 0, &t, err, sizeof(err));
    CHECK_MSG(r == -EAGAIN && strstr(err, "unreachable") != NULL &&
                  strstr(err, "not an Azure VM") != NULL,
              "%s", err);
}

/* Runs the "perm" scenario as a user that may not read the key file.
 * Returns the result; the reason in err. */
static int get_unprivileged(void)
{
    struct cred_token t = { NULL, 0 };
    int fds[2];
    pid_t pid;
    int status;
    int r = 1;

    if (geteuid() != 0)
        return get(MI_ARC, "perm", NULL, tokens, &t);
    if (pipe(fds) < 0)
        return 1;
    pid = fork();
    if (pid == 0) {
        (void)close(fds[0]);
        if (setgid(65534) < 0 || setuid(65534) < 0)
            _exit(3);
        r = get(MI_ARC, "perm", NULL, tokens, &t);
        if (write(fds[1], &r, sizeof(r)) != sizeof(r) ||
            write(fds[1], err, sizeof(err)) != sizeof(err))
            _exit(4);
        _exit(0);
    }
    (void)close(fds[1]);
    if (read(fds[0], &r, sizeof(r)) != sizeof(r) ||
        read(fds[0], err, sizeof(err)) != sizeof(err))
        r = 1;
    (void)close(fds[0]);
    (void)waitpid(pid, &status, 0);
    return r;
}

static void test_arc(void)
{
    struct mi_params p = {
        .flavor = MI_DETECT,
        .arc_token_dir = tokens,
        .timeout_s = 20,
    };
    struct mi_env env;
    struct cred_token t = { NULL, 0 };
    int r;

    /* Detected from the variables, end to end. */
    memset(&env, 0, sizeof(env));
    env.identity_endpoint = endpoint("arc", "ok");
    env.imds_endpoint = "http://127.0.0.1:1";
    r = mi_get_token(&p, &env, (int64_t)time(NULL), &t, err, sizeof(err));
    CHECK_MSG(r == 0 && t.access_token != NULL &&
                  strcmp(t.access_token, "arc.ok") == 0 &&
                  t.expires_in_s == 3600,
              "%d %s", r, err);
    cred_token_free(&t);
    r = get(MI_ARC, "quoted", NULL, tokens, &t);
    CHECK_MSG(r == 0 && t.access_token != NULL, "%d %s", r, err);
    cred_token_free(&t);

    r = get(MI_ARC, "ok", "user-assigned", tokens, &t);
    CHECK(r == -EINVAL && strstr(err, "system-assigned") != NULL);
    r = get(MI_ARC, "oversize", NULL, tokens, &t);
    CHECK_MSG(r == -EPERM && strstr(err, "larger than 4096") != NULL, "%s",
              err);
    r = get(MI_ARC, "wrongdir", NULL, tokens, &t);
    CHECK_MSG(r == -EPERM && strstr(err, "/tmp/elsewhere/stolen.key") &&
                  strstr(err, "which is not in") != NULL,
              "%s", err);
    r = get(MI_ARC, "escape", NULL, tokens, &t);
    CHECK_MSG(r == -EPERM && strstr(err, "not a .key file directly") != NULL,
              "%s", err);
    r = get(MI_ARC, "notkey", NULL, tokens, &t);
    CHECK_MSG(r == -EPERM && strstr(err, "secret.txt") != NULL &&
                  strstr(err, ".key") != NULL,
              "%s", err);
    r = get(MI_ARC, "symlink", NULL, tokens, &t);
    CHECK_MSG(r == -EPERM && strstr(err, "symbolic link") != NULL, "%s", err);
    r = get(MI_ARC, "dir", NULL, tokens, &t);
    CHECK_MSG(r == -EPERM && strstr(err, "not a regular file") != NULL, "%s",
              err);
    r = get(MI_ARC, "noheader", NULL, tokens, &t);
    CHECK_MSG(r == -EBADMSG && strstr(err, "WWW-Authenticate") != NULL, "%s",
              err);
    r = get(MI_ARC, "rotated", NULL, tokens, &t);
    CHECK_MSG(r == -EAGAIN && strstr(err, "refused the key") != NULL, "%s",
              err);
    CHECK(strstr(err, "arc-secret") == NULL);
    /* The real token directory is the default: a file elsewhere is
     * refused even when the test's directory holds it. */
    r = get(MI_ARC, "ok", NULL, NULL, &t);
    CHECK_MSG(r == -EPERM && strstr(err, MI_ARC_TOKEN_DIR) != NULL, "%s", err);
    r = get_unprivileged();
    CHECK_MSG(r == -EACCES && strstr(err, "Permission denied") != NULL &&
                  strstr(err, "himds") != NULL,
              "%d %s", r, err);
    CHECK(t.access_token == NULL);
}

static void test_challenge_parsing(void)
{
    char value[800];
    char *key = NULL;

    snprintf(value, sizeof(value), "basic REALM=%s", path("ok.key"));
    CHECK(mi_arc_read_challenge(value, tokens, &key, err, sizeof(err)) == 0);
    /* Trailing newline trimmed: the header value must be one word. */
    CHECK(key != NULL && strcmp(key, "arc-secret-ok") == 0);
    free(key);
    key = NULL;
    snprintf(value, sizeof(value), "Basic realm=%s", path("spaced.key"));
    CHECK(mi_arc_read_challenge(value, tokens, &key, err, sizeof(err)) ==
          -EBADMSG);
    CHECK(strstr(err, "printable word") != NULL);
    snprintf(value, sizeof(value), "Basic realm=%s", path("empty.key"));
    CHECK(mi_arc_read_challenge(value, tokens, &key, err, sizeof(err)) ==
          -EBADMSG);
    snprintf(value, sizeof(value), "Basic realm=%s", path("none.key"));
    CHECK(mi_arc_read_challenge(value, tokens, &key, err, sizeof(err)) ==
          -EAGAIN);
    snprintf(value, sizeof(value), "Basic realm=%s/.key", tokens);
    CHECK(mi_arc_read_challenge(value, tokens, &key, err, sizeof(err)) ==
          -EPERM);
    snprintf(value, sizeof(value), "Basic realm=%s.key", tokens);
    CHECK(mi_arc_read_challenge(value, tokens, &key, err, sizeof(err)) ==
          -EPERM);
    CHECK(mi_arc_read_challenge("Bearer realm=x", tokens, &key, err,
                                sizeof(err)) == -EBADMSG);
    CHECK(mi_arc_read_challenge(NULL, tokens, &key, err, sizeof(err)) ==
          -EBADMSG);
    CHECK(key == NULL);
}

static void test_parse(void)
{
    struct cred_token t = { NULL, 0 };
    const char *b;

    b = "{\"access_token\":\"x\",\"expires_in\":\"3599\"}";
    CHECK(mi_parse_answer(200, b, strlen(b), 0, "e", &t, err, sizeof(err)) ==
              0 &&
          t.expires_in_s == 3599);
    cred_token_free(&t);
    b = "{\"access_token\":\"x\"}";
    CHECK(mi_parse_answer(200, b, strlen(b), 0, "e", &t, err, sizeof(err)) ==
              0 &&
          t.expires_in_s == -1);
    cred_token_free(&t);
    b = "{\"access_token\":\"x\",\"expires_in\":\"0\"}";
    CHECK(mi_parse_answer(200, b, strlen(b), 0, "e", &t, err, sizeof(err)) ==
          -EBADMSG);
    b = "{\"access_token\":\"a b\",\"expires_in\":60}";
    CHECK(mi_parse_answer(200, b, strlen(b), 0, "e", &t, err, sizeof(err)) ==
          -EBADMSG);
    b = "{\"access_token\":\"x\",\"expires_in\":\"soon\","
        "\"expires_on\":\"1000\"}";
    CHECK(mi_parse_answer(200, b, strlen(b), 400, "e", &t, err, sizeof(err)) ==
              0 &&
          t.expires_in_s == 600);
    cred_token_free(&t);
    CHECK(t.access_token == NULL);
}

static int make_files(void)
{
    char big[5001];
    int r = 0;

    memset(big, 'k', 5000);
    big[5000] = '\0';
    snprintf(tokens, sizeof(tokens), "%s/tokens", dir);
    /* Traversable by the unprivileged user of the permission test. */
    r |= chmod(dir, 0755);
    r |= mkdir(tokens, 0755);
    r |= ctu_write(path("ok.key"), "arc-secret-ok\n", 0640);
    r |= ctu_write(path("big.key"), big, 0640);
    r |= ctu_write(path("secret.txt"), "not-a-key", 0640);
    r |= ctu_write(path("locked.key"), "arc-secret-locked",
                   geteuid() == 0 ? 0600 : 0000);
    r |= ctu_write(path("spaced.key"), "two words\n", 0640);
    r |= ctu_write(path("empty.key"), "\n", 0640);
    r |= symlink(path("ok.key"), path("link.key"));
    r |= mkdir(path("adir.key"), 0755);
    return r;
}

int main(void)
{
    struct ctu_server server;
    const char *argv[4];

    if (ctu_tmpdir(dir, sizeof(dir)) < 0 || make_files() != 0) {
        fprintf(stderr, "cannot make the test files\n");
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    test_resolve();
    test_parse();
    test_challenge_parsing();
    argv[0] = PYTHON3;
    argv[1] = SB_SOURCE_DIR "/tests/unit/identity_server.py";
    argv[2] = tokens;
    argv[3] = NULL;
    if (ctu_server_start(&server, argv, 30) != 0) {
        CHECK(!"identity_server.py started");
    } else {
        port = server.port;
        test_imds();
        test_arc();
    }
    ctu_server_stop(&server);
    curl_global_cleanup();
    ctu_rmtree(dir);
    return tap_done();
}
