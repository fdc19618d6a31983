/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_oauth - token endpoint answers, JWT claims, and the 403 diagnosis
 * (the "login works but the server says 403" case this product exists to
 * explain); and the one base64url decoder of web/ (cred_int.h), strict
 * for credentials, lenient for the tokens it only shows.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tap.h"
#include "web/cred_int.h"
#include "web/oauth.h"

static char err[512];

static int parse(long status, const char *body, struct oauth_token *token)
{
    err[0] = '\0';
    return oauth_parse_token_response(status, body, strlen(body), token, err,
                                      sizeof(err));
}

static void test_token_answers(void)
{
    struct oauth_token t;

    memset(&t, 0, sizeof(t));

    CHECK(parse(200,
                "{\"access_token\": \"abc.def.ghi\", \"token_type\": "
                "\"Bearer\", \"expires_in\": 3599}",
                &t) == 0);
    CHECK(t.access_token != NULL && strcmp(t.access_token, "abc.def.ghi") == 0);
    CHECK(t.expires_in_s == 3599);
    oauth_token_free(&t);
    CHECK(t.access_token == NULL);

    /* Entra v1 sends expires_in as a string; token_type in any case. */
    CHECK(parse(200,
                "{\"access_token\": \"x\", \"token_type\": \"bearer\", "
                "\"expires_in\": \"3600\", \"ext_expires_in\": "
                "\"3600\"}",
                &t) == 0);
    CHECK(t.expires_in_s == 3600);
    oauth_token_free(&t);
    /* No expires_in at all. */
    CHECK(parse(200, "{\"access_token\": \"x\"}", &t) == 0);
    CHECK(t.expires_in_s == -1 && strcmp(t.token_type, "Bearer") == 0);
    oauth_token_free(&t);
    CHECK(parse(200, "{\"access_token\": \"x\", \"expires_in\": \"soon\"}",
                &t) == 0);
    CHECK(t.expires_in_s == -1 && strcmp(t.expires_in_bad, "'soon'") == 0);
    oauth_token_free(&t);

    /* Configuration errors are permanent, with the server's words. */
    CHECK(parse(401,
                "{\"error\": \"invalid_client\", \"error_description\": "
                "\"AADSTS7000215: Invalid client secret provided.\\r\\n"
                "Trace ID: 1234\"}",
                &t) == -EACCES);
    CHECK_MSG(strstr(err, "invalid_client") != NULL &&
                  strstr(err, "AADSTS7000215") != NULL &&
                  strstr(err, "Trace ID") == NULL,
              "%s", err);
    CHECK(parse(400, "{\"error\": \"invalid_scope\"}", &t) == -EACCES);
    /* Transient: retry later. */
    CHECK(parse(503, "{\"error\": \"temporarily_unavailable\"}", &t) ==
          -EAGAIN);
    CHECK(parse(502, "<html>bad gateway</html>", &t) == -EAGAIN);
    CHECK(parse(429, "", &t) == -EAGAIN);
    CHECK(parse(404, "not here", &t) == -EACCES);
    CHECK(parse(200, "<html>login page</html>", &t) == -EAGAIN);
    CHECK(parse(200, "{\"token_type\": \"Bearer\"}", &t) == -EAGAIN &&
          strstr(err, "access_token") != NULL);
    CHECK(parse(200, "{\"access_token\": \"x\", \"token_type\": \"MAC\"}",
                &t) == -EACCES);
    CHECK(t.access_token == NULL);
}

/* expires_in that is no lifetime: refused with what was received, never
 * converted (1e30 to int64_t is undefined behaviour; UBSan checks it). */
static void test_lifetimes(void)
{
    static const struct {
        const char *value;
        int64_t want;
        const char *bad;
    } cases[] = {
        { "3599", 3599, "" },
        { "\"3599\"", 3599, "" },
        { "3599.9", 3599, "" },
        { "1", 1, "" },
        { "31622400", 31622400, "" }, /* 366 days */
        { "31622401", -1, "31622401" },
        { "-5", -1, "-5" },
        { "0", -1, "0" },
        { "\"0\"", -1, "'0'" },
        { "1e30", -1, "1e+30" },
        { "-1e30", -1, "-1e+30" },
        { "18446744073709551616", -1, "1.84467440737096e+19" },
        { "\"99999999999999999999\"", -1, "'99999999999999999999'" },
        { "9223372036854775807", -1, "9.22337203685478e+18" },
        { "\"NaN\"", -1, "'NaN'" },
        { "\"inf\"", -1, "'inf'" },
        { "\"0x100\"", -1, "'0x100'" },
        { "\"\"", -1, "''" },
        { "true", -1, "a JSON boolean" },
        { "[60]", -1, "a JSON array" },
        { "null", -1, "" },
    };
    struct oauth_token t;
    char body[256];

    memset(&t, 0, sizeof(t));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(body, sizeof(body),
                 "{\"access_token\": \"x\", \"expires_in\": %s}",
                 cases[i].value);
        CHECK_MSG(parse(200, body, &t) == 0, "%s", cases[i].value);
        CHECK_MSG(t.expires_in_s == cases[i].want &&
                      strcmp(t.expires_in_bad, cases[i].bad) == 0,
                  "%s: %lld '%s'", cases[i].value, (long long)t.expires_in_s,
                  t.expires_in_bad);
        oauth_token_free(&t);
    }
}

/* Server texts: cut, one line; a body nested 30 000 deep says so. */
static void test_server_texts(void)
{
    struct oauth_token t;
    static char deep[60010];
    char body[1200];

    memset(&t, 0, sizeof(t));
    char filler[1001];
    memset(filler, 'x', sizeof(filler) - 1);
    filler[sizeof(filler) - 1] = '\0';
    snprintf(body, sizeof(body),
             "{\"error\": \"invalid_client\", "
             "\"error_description\": \"AADSTS7000215: %s\"}",
             filler);
    CHECK(parse(401, body, &t) == -EACCES);
    CHECK_MSG(strstr(err, "AADSTS7000215") != NULL && strlen(err) < 320 &&
                  strstr(err, "...") != NULL,
              "%s", err);

    /* 30 000 deep: as deep as fits in OAUTH_MAX_RESPONSE. */
    for (size_t i = 0; i < 30000; i++)
        deep[i] = '[';
    for (size_t i = 0; i < 30000; i++)
        deep[30000 + i] = ']';
    CHECK(parse(200, deep, &t) == -EAGAIN);
    CHECK_MSG(strstr(err, "nested deeper than 64 levels") != NULL, "%s", err);
}

/* A JWT with header {"alg":"none"} and the payload given, base64url. */
static const char *jwt_app_no_roles =
    /* {"aud":"https://dicom.healthcareapis.azure.com","tid":"tenant-1",
     *  "oid":"sp-object-1","appid":"client-1","idtyp":"app","exp":1000} */
    "eyJhbGciOiJub25lIn0."
    "eyJhdWQiOiJodHRwczovL2RpY29tLmhlYWx0aGNhcmVhcGlzLmF6dXJlLmNvbSIsInRp"
    "ZCI6InRlbmFudC0xIiwib2lkIjoic3Atb2JqZWN0LTEiLCJhcHBpZCI6ImNsaWVudC0x"
    "IiwiaWR0eXAiOiJhcHAiLCJleHAiOjEwMDB9."
    "sig";

static const char *jwt_wrong_audience =
    /* {"aud":"https://management.azure.com","oid":"sp-2",
     *  "roles":["DICOM.Read","DICOM.Write"]} */
    "eyJhbGciOiJub25lIn0."
    "eyJhdWQiOiJodHRwczovL21hbmFnZW1lbnQuYXp1cmUuY29tIiwib2lkIjoic3AtMiIs"
    "InJvbGVzIjpbIkRJQ09NLlJlYWQiLCJESUNPTS5Xcml0ZSJdfQ."
    "sig";

static void test_claims(void)
{
    struct oauth_claims c;

    CHECK_MSG(oauth_decode_claims(jwt_app_no_roles, &c, err, sizeof(err)) == 0,
              "%s", err);
    CHECK(c.aud != NULL &&
          strcmp(c.aud, "https://dicom.healthcareapis.azure.com") == 0);
    CHECK(c.oid != NULL && strcmp(c.oid, "sp-object-1") == 0);
    CHECK(c.appid != NULL && strcmp(c.appid, "client-1") == 0);
    CHECK(c.idtyp != NULL && strcmp(c.idtyp, "app") == 0);
    CHECK(c.roles == NULL && c.scp == NULL);
    CHECK(c.exp == 1000);
    oauth_claims_free(&c);

    CHECK(oauth_decode_claims(jwt_wrong_audience, &c, err, sizeof(err)) == 0);
    CHECK(c.roles != NULL && strcmp(c.roles, "DICOM.Read DICOM.Write") == 0);
    oauth_claims_free(&c);

    CHECK(oauth_decode_claims("opaque-token", &c, err, sizeof(err)) == -EINVAL);
    CHECK(strstr(err, "opaque") != NULL);
    CHECK(oauth_decode_claims("a.%%%.c", &c, err, sizeof(err)) == -EINVAL);
    CHECK(oauth_decode_claims("a.bm90IGpzb24.c", &c, err, sizeof(err)) ==
          -EINVAL);
}

static void test_diagnosis(void)
{
    const char *azure_url =
        "https://ws-dicom1.dicom.azurehealthcareapis.com/v2";
    struct oauth_claims c;
    char buf[2048];

    CHECK(oauth_decode_claims(jwt_app_no_roles, &c, err, sizeof(err)) == 0);
    oauth_diagnose_forbidden(&c, azure_url, 500, buf, sizeof(buf));
    CHECK_MSG(strstr(buf, "403") != NULL && strstr(buf, "appid=client-1") &&
                  strstr(buf, "oid=sp-object-1") && strstr(buf, "idtyp=app") &&
                  strstr(buf, "roles=[none]") &&
                  strstr(buf, "DICOM Data Owner") &&
                  strstr(buf, "retried") != NULL,
              "%s", buf);
    CHECK(strstr(buf, "not the DICOM service") == NULL);
    CHECK(strstr(buf, "expired") == NULL);
    /* A token past its expiry says to check the clock. */
    oauth_diagnose_forbidden(&c, azure_url, 1600, buf, sizeof(buf));
    CHECK(strstr(buf, "expired 600 s ago") != NULL);
    /* Generic OAuth2 server: no Azure advice. */
    oauth_diagnose_forbidden(&c, "https://pacs.example.org/dicom-web", 500, buf,
                             sizeof(buf));
    CHECK(strstr(buf, "DICOM Data Owner") == NULL &&
          strstr(buf, "grant this client") != NULL);
    oauth_claims_free(&c);

    CHECK(oauth_decode_claims(jwt_wrong_audience, &c, err, sizeof(err)) == 0);
    oauth_diagnose_forbidden(&c, azure_url, 0, buf, sizeof(buf));
    CHECK_MSG(strstr(buf, "https://management.azure.com") != NULL &&
                  strstr(buf, "not the DICOM service") != NULL &&
                  strstr(buf, "https://dicom.healthcareapis.azure.com/"
                              ".default") != NULL,
              "%s", buf);
    oauth_claims_free(&c);

    oauth_diagnose_forbidden(NULL, azure_url, 0, buf, sizeof(buf));
    CHECK(strstr(buf, "opaque") != NULL);
    /* Small buffers are cut, never overflowed. */
    oauth_diagnose_forbidden(NULL, azure_url, 0, buf, 16);
    CHECK(strlen(buf) == 15);
}

/* Decodes @in with cred__base64url_decode(); true when the result is
 * @want (NULL: refused). */
static bool b64_is(const char *in, bool lenient, const char *want)
{
    size_t len = 0;
    char *out = cred__base64url_decode(in, strlen(in), lenient, &len);
    bool same;

    if (out == NULL || want == NULL) {
        free(out);
        return out == NULL && want == NULL;
    }
    same = len == strlen(want) && strcmp(out, want) == 0;
    free(out);
    return same;
}

static void test_base64url(void)
{
    /* Both forms: the URL alphabet, no padding. */
    CHECK(b64_is("eyJhIjoxfQ", false, "{\"a\":1}"));
    CHECK(b64_is("eyJhIjoxfQ", true, "{\"a\":1}"));
    CHECK(b64_is("", false, ""));
    CHECK(b64_is("-_-_", false, "\xfb\xff\xbf"));
    /* Strict: the standard alphabet, padding and a lone trailing
     * character are refused; a NUL or a space anywhere too. */
    CHECK(b64_is("+/+/", false, NULL));
    CHECK(b64_is("eyJhIjoxfQ==", false, NULL));
    CHECK(b64_is("YWJjZGVmY", false, NULL));
    CHECK(b64_is("ey J", false, NULL));
    CHECK(cred__base64url_decode("ab\0d", 4, false, NULL) == NULL);
    /* Lenient: '+' and '/' are 62 and 63, '=' ends it, a lone trailing
     * character is dropped; anything else is still refused. */
    CHECK(b64_is("+/+/", true, "\xfb\xff\xbf"));
    CHECK(b64_is("eyJhIjoxfQ==", true, "{\"a\":1}"));
    CHECK(b64_is("eyJhIjoxfQ==junk", true, "{\"a\":1}"));
    CHECK(b64_is("YWJjZGVmY", true, "abcdef"));
    CHECK(b64_is("ey J", true, NULL));
    CHECK(cred__base64url_decode("ab\0d", 4, true, NULL) == NULL);
}

/* cred__oauth_error(): the two members of an OAuth 2.0 error answer,
 * NULL where absent or not strings. */
static void test_oauth_error_members(void)
{
    const char *error = "x";
    const char *description = "x";
    cJSON *root = cJSON_Parse("{\"error\":\"invalid_client\","
                              "\"error_description\":\"AADSTS7000215: no\"}");

    cred__oauth_error(root, &error, &description);
    CHECK(error != NULL && strcmp(error, "invalid_client") == 0);
    CHECK(description != NULL && strcmp(description, "AADSTS7000215: no") == 0);
    cJSON_Delete(root);
    root = cJSON_Parse("{\"error\":7,\"error_description\":null}");
    cred__oauth_error(root, &error, &description);
    CHECK(error == NULL && description == NULL);
    cJSON_Delete(root);
    root = cJSON_Parse("[\"error\"]");
    cred__oauth_error(root, &error, &description);
    CHECK(error == NULL && description == NULL);
    cJSON_Delete(root);
    error = description = "x";
    cred__oauth_error(NULL, &error, &description);
    CHECK(error == NULL && description == NULL);
}

int main(void)
{
    test_token_answers();
    test_lifetimes();
    test_server_texts();
    test_claims();
    test_diagnosis();
    test_base64url();
    test_oauth_error_members();
    return tap_done();
}
