/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_entra_errors - what the Entra ID errors mean (entra_errors.h):
 * every code of issue 13 found in an Entra-shaped answer (error_codes[]
 * and the "AADSTS..." description) gives one sentence that keeps the code
 * and names the fix; codes that share a prefix (700021 / 7000215 /
 * 70021) are not confused; an unknown code points to Entra's lookup
 * page; a non-Entra "invalid_client" is explained by the credential in
 * use; nothing to say gives false.
 */
#include <stdio.h>
#include <string.h>

#include "tap.h"
#include "web/entra_errors.h"

/* An answer as Entra's v2 token endpoint writes it. */
static const char *entra_body(unsigned long code, const char *text)
{
    static char body[1024];

    snprintf(body, sizeof(body),
             "{\"error\":\"invalid_client\",\"error_description\":"
             "\"AADSTS%lu: %s\\r\\nTrace ID: 0e8b9c2a-1111-2222-3333-"
             "444444444444\\r\\nCorrelation ID: 5f1e7a3b-aaaa-bbbb-cccc-"
             "dddddddddddd\\r\\nTimestamp: 2026-12-02 10:00:00Z\","
             "\"error_codes\":[%lu],\"timestamp\":\"2026-12-02 10:00:00Z\","
             "\"trace_id\":\"0e8b9c2a\",\"correlation_id\":\"5f1e7a3b\","
             "\"error_uri\":\"https://login.microsoftonline.com/error?code="
             "%lu\"}",
             code, text, code, code);
    return body;
}

struct expectation {
    unsigned long code;
    const char *entra_text; /* the start of Entra's own message */
    const char *fix;        /* a phrase the sentence must have */
};

static const struct expectation cases[] = {
    { 700016,
      "Application with identifier 'x' was not found in the "
      "directory 'y'.",
      "auth.client_id" },
    { 700021,
      "Client assertion application identifier doesn't match "
      "'client_id' parameter.",
      "Application (client) ID" },
    { 700023,
      "Client assertion audience claim does not match Realm "
      "issuer.",
      "auth.tenant" },
    { 700024, "Client assertion is not within its valid time range.", "clock" },
    { 700027, "Client assertion failed signature validation.",
      "Certificates & secrets" },
    { 7000215, "Invalid client secret provided.", "Value" },
    { 7000222, "The provided client secret keys for app 'x' are expired.",
      "create a new one" },
    { 70011,
      "The provided value for the input parameter 'scope' is not "
      "valid.",
      "/.default" },
    { 500011,
      "The resource principal named https://dicom.healthcareapis."
      "azure.com was not found in the tenant named y.",
      "auth.scope" },
    { 90002, "Tenant 'contoso' not found.", "Directory (tenant) ID" },
    { 70021,
      "No matching federated identity record found for presented "
      "assertion.",
      "api://AzureADTokenExchange" },
};

static void test_each_code(void)
{
    char buf[1024];
    char prefix[32];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct expectation *e = &cases[i];
        const char *body = entra_body(e->code, e->entra_text);
        unsigned long code = 0;

        CHECK(entra_error_code(body, strlen(body)) == e->code);
        CHECK(entra_error_advice(e->code) != NULL);
        CHECK(entra_explain(body, strlen(body), ENTRA_CRED_UNKNOWN, buf,
                            sizeof(buf), &code));
        snprintf(prefix, sizeof(prefix), "AADSTS%lu: ", e->code);
        CHECK_MSG(code == e->code &&
                      strncmp(buf, prefix, strlen(prefix)) == 0 &&
                      strstr(buf, e->fix) != NULL,
                  "%lu: %s", e->code, buf);
        /* One sentence: one line. */
        CHECK(strchr(buf, '\n') == NULL);
        CHECK(entra_error_transient(e->code) == (e->code == 70021));
    }
}

static void test_finding_the_code(void)
{
    const char *t;
    char buf[512];
    unsigned long code = 1;

    /* Only in the text (an older or hand-made answer). */
    t = "{\"error\":\"invalid_client\",\"error_description\":\"AADSTS7000215: "
        "Invalid client secret provided.\"}";
    CHECK(entra_error_code(t, strlen(t)) == 7000215);
    t = "{\"error\":\"invalid_request\",\"error_description\":\"AADSTS700021: "
        "Client assertion application identifier doesn't match\"}";
    CHECK(entra_error_code(t, strlen(t)) == 700021);
    t = "AADSTS70021: No matching federated identity record";
    CHECK(entra_error_code(t, strlen(t)) == 70021);
    /* error_codes[] wins over the text. */
    t = "{\"error_description\":\"AADSTS90002: x\",\"error_codes\":[700016]}";
    CHECK(entra_error_code(t, strlen(t)) == 700016);
    /* Not a code. */
    t = "{\"error_description\":\"AADSTS: nothing\"}";
    CHECK(entra_error_code(t, strlen(t)) == 0);
    CHECK(entra_error_code(NULL, 0) == 0);
    /* Not NUL-terminated: the length counts. */
    CHECK(entra_error_code("AADSTS700027 and more", 8) == 70);

    /* Unknown codes: Entra's own lookup page. */
    t = "{\"error\":\"invalid_grant\",\"error_codes\":[53003]}";
    CHECK(entra_explain(t, strlen(t), ENTRA_CRED_SECRET, buf, sizeof(buf),
                        &code));
    CHECK_MSG(code == 53003 &&
                  strstr(buf, "AADSTS53003: see https://login.microsoftonline"
                              ".com/error?code=53003") != NULL,
              "%s", buf);
    CHECK(entra_error_advice(53003) == NULL);
}

static void test_without_code(void)
{
    const char *t = "{\"error\":\"invalid_client\",\"error_description\":"
                    "\"client authentication failed\"}";
    unsigned long code = 0;
    char buf[512];

    CHECK(entra_explain(t, strlen(t), ENTRA_CRED_CERTIFICATE, buf, sizeof(buf),
                        &code));
    CHECK_MSG(
        code == 700027 &&
            strncmp(buf, "invalid_client (as Entra's AADSTS700027): ", 42) == 0,
        "%s", buf);
    CHECK(entra_explain(t, strlen(t), ENTRA_CRED_SECRET, buf, sizeof(buf),
                        &code));
    CHECK(code == 7000215 && strstr(buf, "AADSTS7000215") != NULL &&
          strstr(buf, "auth.client_secret_file") != NULL);
    CHECK(entra_explain(t, strlen(t), ENTRA_CRED_FEDERATED, buf, sizeof(buf),
                        &code));
    CHECK(code == 70021 && strstr(buf, "federated") != NULL);
    /* Unknown credential, another error, no error: nothing to say. */
    CHECK(!entra_explain(t, strlen(t), ENTRA_CRED_UNKNOWN, buf, sizeof(buf),
                         &code));
    CHECK(buf[0] == '\0' && code == 0);
    t = "{\"error\":\"temporarily_unavailable\"}";
    CHECK(!entra_explain(t, strlen(t), ENTRA_CRED_CERTIFICATE, buf, sizeof(buf),
                         NULL));
    t = "<html>502 Bad Gateway</html>";
    CHECK(!entra_explain(t, strlen(t), ENTRA_CRED_CERTIFICATE, buf, sizeof(buf),
                         NULL));
    CHECK(!entra_explain(NULL, 0, ENTRA_CRED_CERTIFICATE, buf, sizeof(buf),
                         NULL));
    /* A short buffer is still a string. */
    t = entra_body(700027, "x");
    CHECK(entra_explain(t, strlen(t), ENTRA_CRED_CERTIFICATE, buf, 16, NULL));
    CHECK(strlen(buf) == 15);
}

int main(void)
{
    test_each_code();
    test_finding_the_code();
    test_without_code();
    return tap_done();
}
