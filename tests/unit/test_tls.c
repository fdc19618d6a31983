/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_tls - the certificate identity and its binding to a caller rule
 * (scp/tls.h): SHA-256 fingerprints, subject CN and DNS/URI
 * subjectAltNames, tls_only; certificates made by openssl in a temp dir.
 */
#include "scp/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scp/scp.h"
#include "tap.h"

static char dir[64];

/* Runs "cd DIR && @what". */
static int in_dir(const char *what)
{
    char cmd[1024];

    snprintf(cmd, sizeof(cmd), "cd %s && %s", dir, what);
    return system(cmd);
}

/* A self-signed certificate @name.pem with @subject and @san ("" none). */
static int make_cert(const char *name, const char *subject, const char *san)
{
    char cmd[1024];

    snprintf(cmd, sizeof(cmd),
             "cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout "
             "%s.key -out %s.pem -days 2 -subj '%s' %s%s%s >/dev/null 2>&1",
             dir, name, name, subject, san[0] ? "-addext 'subjectAltName=" : "",
             san, san[0] ? "'" : "");
    return system(cmd);
}

static void fingerprint_of(const char *name, char *out, size_t len)
{
    char cmd[512];
    char line[256] = "";
    FILE *p;

    snprintf(cmd, sizeof(cmd),
             "openssl x509 -in %s/%s.pem -noout -fingerprint -sha256", dir,
             name);
    p = popen(cmd, "r");
    if (p != NULL) {
        if (fgets(line, sizeof(line), p) == NULL)
            line[0] = '\0';
        pclose(p);
    }
    line[strcspn(line, "\n")] = '\0';
    const char *eq = strchr(line, '=');
    snprintf(out, len, "%s", eq ? eq + 1 : "");
}

static void lower_no_colons(const char *in, char *out)
{
    size_t n = 0;

    for (; *in && n < 64; in++)
        if (*in != ':')
            out[n++] = (char)(*in >= 'A' && *in <= 'F' ? *in + 32 : *in);
    out[n] = '\0';
}

int main(void)
{
    struct scp_tls_identity id;
    struct scp_caller_rule rule;
    char path[128];
    char err[256];
    char display[96];
    char hex[65];
    char buf[128];

    snprintf(dir, sizeof(dir), "/tmp/test_tls.XXXXXX");
    if (mkdtemp(dir) == NULL)
        return 1;
    CHECK(make_cert("ct01", "/O=Hospital/CN=CT01",
                    "DNS:ct01.example,URI:urn:dicom:ct01,IP:192.0.2.1") == 0);
    CHECK(make_cert("plain", "/CN=PLAIN", "") == 0);

    snprintf(path, sizeof(path), "%s/ct01.pem", dir);
    CHECK(scp__tls_identity_from_file(path, &id, err, sizeof(err)) == 0);
    fingerprint_of("ct01", display, sizeof(display));
    lower_no_colons(display, hex);
    CHECK(id.present);
    CHECK_MSG(strcmp(id.sha256_display, display) == 0, "%s vs %s",
              id.sha256_display, display);
    CHECK(strcmp(id.sha256, hex) == 0);
    CHECK_MSG(strcmp(id.subject, "CN=CT01,O=Hospital") == 0, "subject %s",
              id.subject);
    CHECK(id.name_count == 3); /* the CN, the DNS and URI names */

    const char *fps[] = {
        "0000000000000000000000000000000000000000000000000000000000000000", hex
    };
    memset(&rule, 0, sizeof(rule));
    CHECK(scp__tls_rule_refusal(&rule, false, NULL, buf, sizeof(buf)) == NULL);
    CHECK(scp__tls_rule_refusal(&rule, true, &id, buf, sizeof(buf)) == NULL);
    rule.tls_only = true;
    CHECK(scp__tls_rule_refusal(&rule, false, NULL, buf, sizeof(buf)) != NULL);
    CHECK(scp__tls_rule_refusal(&rule, true, NULL, buf, sizeof(buf)) == NULL);
    rule.tls_only = false;
    rule.certificate_sha256 = fps;
    rule.certificate_sha256_count = 1;
    CHECK(scp__tls_rule_refusal(&rule, true, &id, buf, sizeof(buf)) != NULL);
    rule.certificate_sha256_count = 2;
    CHECK(scp__tls_rule_refusal(&rule, true, &id, buf, sizeof(buf)) == NULL);
    CHECK(scp__tls_rule_refusal(&rule, false, NULL, buf, sizeof(buf)) != NULL);
    CHECK(scp__tls_rule_refusal(&rule, true, NULL, buf, sizeof(buf)) != NULL);
    rule.certificate_sha256_count = 0;
    const char *subjects_ok[] = { "CT01", "ct01.example", "urn:dicom:ct01" };
    const char *subjects_bad[] = { "ct01",      "CT0",     "Hospital",
                                   "192.0.2.1", "CN=CT01", "ct01.example." };
    for (size_t i = 0; i < 3; i++) {
        rule.certificate_subject = subjects_ok[i];
        CHECK_MSG(scp__tls_rule_refusal(&rule, true, &id, buf, sizeof(buf)) ==
                      NULL,
                  "subject %s matches", subjects_ok[i]);
    }
    for (size_t i = 0; i < 6; i++) {
        rule.certificate_subject = subjects_bad[i];
        CHECK_MSG(scp__tls_rule_refusal(&rule, true, &id, buf, sizeof(buf)) !=
                      NULL,
                  "subject %s does not match", subjects_bad[i]);
    }
    /* Both given: both must hold. */
    rule.certificate_subject = "CT01";
    rule.certificate_sha256_count = 1;
    CHECK(scp__tls_rule_refusal(&rule, true, &id, buf, sizeof(buf)) != NULL);

    snprintf(path, sizeof(path), "%s/plain.pem", dir);
    CHECK(scp__tls_identity_from_file(path, &id, err, sizeof(err)) == 0);
    CHECK(id.name_count == 1 && strcmp(id.names[0], "PLAIN") == 0);

    /* DER works too; a key file or a missing file is refused, named. */
    CHECK(in_dir("openssl x509 -in plain.pem -outform DER -out plain.der") ==
          0);
    snprintf(path, sizeof(path), "%s/plain.der", dir);
    CHECK(scp__tls_identity_from_file(path, &id, err, sizeof(err)) == 0);
    snprintf(path, sizeof(path), "%s/plain.key", dir);
    CHECK(scp__tls_identity_from_file(path, &id, err, sizeof(err)) < 0);
    CHECK(strstr(err, "plain.key") != NULL);
    snprintf(path, sizeof(path), "%s/none.pem", dir);
    CHECK(scp__tls_identity_from_file(path, &id, err, sizeof(err)) < 0);
    CHECK(strstr(err, "none.pem") != NULL);

    (void)in_dir("rm -f ct01.* plain.*");
    (void)rmdir(dir);
    return tap_done();
}
