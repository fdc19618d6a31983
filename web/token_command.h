/* SPDX-License-Identifier: Apache-2.0 */
/*
 * token_command - auth.type "command": a program prints the access token
 * (the Azure documents' recipes: `az account get-access-token --resource
 * https://dicom.healthcareapis.azure.com --output json`, PowerShell's
 * `Get-AzAccessToken | ConvertTo-Json`, or any script printing an OAuth2
 * token answer).
 *
 * Running it: argv[0] is looked up in PATH and executed directly (no
 * shell: no quoting, no expansion), with stdin from /dev/null, stdout and
 * stderr read through pipes (stdout at most TOKEN_COMMAND_MAX_OUTPUT
 * bytes, stderr's first TOKEN_COMMAND_MAX_STDERR kept), the environment
 * of the daemon, default signal dispositions and an empty signal mask,
 * in a process group of its own. When the timeout passes, the whole
 * group is killed (SIGKILL) and reaped. The command is done when its
 * first process exits; helpers it left behind holding the pipes are not
 * waited for.
 *
 * What it may print (one JSON object; a UTF-8 BOM is skipped):
 * - Azure CLI: "accessToken", and "expires_on" (epoch seconds, a number
 *   or a numeric string, newer CLIs) or "expiresOn" ("2026-12-02
 *   14:03:11.000000", the local time zone of this machine);
 * - PowerShell: "Token", "ExpiresOn" as ConvertTo-Json writes a
 *   DateTimeOffset: ISO 8601 with an offset ("2026-12-02T14:03:11+01:00",
 *   fraction allowed; without offset: local time), "/Date(1700000000000)/"
 *   (milliseconds, an offset suffix allowed), or an object with
 *   "UtcTicks", "UtcDateTime" or "value". A Token that is a SecureString
 *   (Az.Accounts 5 and later by default) is refused with the fix;
 * - OAuth2 (RFC 6749 5.1): "access_token" and "expires_in" (a number or a
 *   numeric string), or "expires_on".
 * No expiry at all gives expires_in_s = -1 (the caller's default).
 *
 * The token is never put into an error or a log. A failing command's
 * error holds its exit status (or signal) and the first non-empty line of
 * its stderr, scrubbed with cred_redact_line() (credential.h).
 *
 * Thread safety: reentrant (waitpid() on its own child only). Ownership:
 * see credential.h. Errors: 0 or a negative errno with a reason in @err:
 * -ENOENT/-EACCES the program cannot be run (configuration);
 * -ETIMEDOUT it did not finish in time (killed); -EAGAIN it failed (a
 * non-zero exit or a signal: an outage); -EFBIG it printed too much;
 * -EBADMSG its output is not one of the forms above, or a SecureString;
 * -EKEYEXPIRED the token it printed has expired; -EINVAL no argv;
 * -ENOMEM, or another errno of pipe2()/posix_spawnp().
 */
#ifndef STOWBRIDGE_TOKEN_COMMAND_H
#define STOWBRIDGE_TOKEN_COMMAND_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cred_token;

#define TOKEN_COMMAND_MAX_OUTPUT (64 * 1024)
#define TOKEN_COMMAND_MAX_STDERR (16 * 1024)
#define TOKEN_COMMAND_DEFAULT_TIMEOUT_S 60

struct token_command_params {
    const char *const *argv; /* NULL-terminated; argv[0] searched in PATH */
    unsigned timeout_s;      /* 0: TOKEN_COMMAND_DEFAULT_TIMEOUT_S */
};

/*
 * Runs the command and parses what it printed (token_command_parse(),
 * at the wall-clock time when it exited) into @ret_token.
 */
int token_command_run(const struct token_command_params *params,
                      struct cred_token *ret_token, char *err, size_t err_len);

/*
 * Parses the output @out (@len bytes) of a token command at wall-clock
 * time @now_s into @ret_token.
 */
int token_command_parse(const char *out, size_t len, int64_t now_s,
                        struct cred_token *ret_token, char *err,
                        size_t err_len);

#ifdef __cplusplus
}
#endif

#endif
