/* SPDX-License-Identifier: Apache-2.0 */
/*
 * entra_errors - see entra_errors.h.
 */
#include "entra_errors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

struct entra_advice {
    unsigned long code;
    const char *sentence;
};

static const struct entra_advice entra_table[] = {
    { 700016,
      "the application (auth.client_id) was not found in the tenant "
      "(auth.tenant): copy both IDs from the app registration's Overview "
      "page; an app registered in another tenant must first be consented "
      "to in this one" },
    { 700021,
      "the client assertion was made for another application than "
      "auth.client_id: set auth.client_id to the Application (client) ID "
      "of the app registration that holds the certificate or the "
      "federated credential" },
    { 700023, "the client assertion's audience is not this tenant's token "
              "endpoint: put the tenant ID or domain in auth.tenant (not "
              "\"common\" or \"organizations\") and use the token URL of the "
              "app's cloud" },
    { 700024,
      "the client assertion is not within its valid time range: set this "
      "machine's clock right (NTP); with a federated token file, the file "
      "is stale and whatever writes it (the kubelet's projected token) "
      "must refresh it" },
    { 700027,
      "the signature of the client assertion did not verify: the "
      "certificate is not (or no longer) in the app registration's "
      "Certificates & secrets, or the key file is not the certificate's; "
      "upload the certificate's public part (.cer or .pem) there and "
      "compare its thumbprint with the one `stowbridge check` shows" },
    { 7000215,
      "the client secret is wrong: auth.client_secret_file must hold the "
      "secret's Value (shown once, when it is created), not its Secret "
      "ID" },
    { 7000222, "the client secret has expired: create a new one in the app "
               "registration (Certificates & secrets), write it to "
               "auth.client_secret_file and reload stowbridge (SIGHUP)" },
    { 70011, "the scope is not valid: client credentials need one resource's "
             "/.default scope, for the Azure DICOM service "
             "https://dicom.healthcareapis.azure.com/.default (auth.scope)" },
    { 500011,
      "the resource the token is asked for does not exist in this tenant: "
      "check auth.scope or auth.resource (https://dicom.healthcareapis."
      "azure.com for the DICOM service) and that auth.tenant is the "
      "tenant of the DICOM service" },
    { 90002,
      "the tenant was not found: check auth.tenant (the Directory (tenant) "
      "ID or a verified domain of it) and that the token URL is the "
      "tenant's cloud (e.g. login.microsoftonline.us for US Government)" },
    { 70021,
      "no federated identity credential of the app matches the presented "
      "token: its issuer and subject must equal the token's iss and sub "
      "exactly, and its audience be api://AzureADTokenExchange; a "
      "credential added minutes ago may still be propagating, so this is "
      "retried" },
};

const char *entra_error_advice(unsigned long code)
{
    for (size_t i = 0; i < sizeof(entra_table) / sizeof(entra_table[0]); i++)
        if (entra_table[i].code == code)
            return entra_table[i].sentence;
    return NULL;
}

bool entra_error_transient(unsigned long code)
{
    return code == 70021;
}

/* The number after the first "AADSTS" in @text (@len bytes), or 0. */
static unsigned long entra_code_in_text(const char *text, size_t len)
{
    static const char tag[] = "AADSTS";
    const char *p = text;
    const char *end = text + len;

    while ((size_t)(end - p) > sizeof(tag) - 1) {
        const char *at = memmem(p, (size_t)(end - p), tag, sizeof(tag) - 1);
        unsigned long code = 0;
        int digits = 0;

        if (at == NULL)
            return 0;
        p = at + sizeof(tag) - 1;
        while (p < end && *p >= '0' && *p <= '9' && digits < 9) {
            code = code * 10 + (unsigned long)(*p - '0');
            digits++;
            p++;
        }
        if (digits > 0)
            return code;
    }
    return 0;
}

unsigned long entra_error_code(const char *body, size_t len)
{
    cJSON *root;
    const cJSON *codes;
    unsigned long code = 0;

    if (body == NULL)
        return 0;
    root = cJSON_ParseWithLength(body, len);
    codes = cJSON_GetObjectItemCaseSensitive(root, "error_codes");
    if (cJSON_IsArray(codes) && cJSON_IsNumber(cJSON_GetArrayItem(codes, 0)) &&
        cJSON_GetArrayItem(codes, 0)->valuedouble > 0 &&
        cJSON_GetArrayItem(codes, 0)->valuedouble < 1e9)
        code = (unsigned long)cJSON_GetArrayItem(codes, 0)->valuedouble;
    cJSON_Delete(root);
    if (code == 0)
        code = entra_code_in_text(body, len);
    return code;
}

/* Whether the answer's OAuth "error" is @want. */
static bool entra_oauth_error_is(const char *body, size_t len, const char *want)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *error = cJSON_GetObjectItemCaseSensitive(root, "error");
    bool is = cJSON_IsString(error) && strcmp(error->valuestring, want) == 0;

    cJSON_Delete(root);
    return is;
}

bool entra_explain(const char *body, size_t len, enum entra_credential cred,
                   char *buf, size_t buf_len, unsigned long *ret_code)
{
    unsigned long code = entra_error_code(body, len);
    const char *advice;

    if (buf_len > 0)
        buf[0] = '\0';
    if (ret_code != NULL)
        *ret_code = 0;
    if (code != 0) {
        advice = entra_error_advice(code);
        if (advice != NULL)
            snprintf(buf, buf_len, "AADSTS%lu: %s", code, advice);
        else
            snprintf(buf, buf_len,
                     "AADSTS%lu: see https://login.microsoftonline.com/"
                     "error?code=%lu for what it means",
                     code, code);
        if (ret_code != NULL)
            *ret_code = code;
        return true;
    }
    if (body == NULL || !entra_oauth_error_is(body, len, "invalid_client"))
        return false;
    switch (cred) {
    case ENTRA_CRED_CERTIFICATE:
        code = 700027;
        advice = "the server refused the client assertion: most often it "
                 "does not hold this certificate for the client (Entra: the "
                 "app registration's Certificates & secrets; other servers: "
                 "the client's registered keys, jwks) or the key file is not "
                 "the certificate's; also check this machine's clock and "
                 "the token URL (the assertion's audience)";
        break;
    case ENTRA_CRED_SECRET:
        code = 7000215;
        advice = "the server refused the client ID and secret: check that "
                 "auth.client_secret_file holds the secret's value for "
                 "auth.client_id, and that it has not expired";
        break;
    case ENTRA_CRED_FEDERATED:
        code = 70021;
        advice = "the server refused the federated token: the client's "
                 "federated credential must name the token's issuer, "
                 "subject and audience exactly";
        break;
    default:
        return false;
    }
    snprintf(buf, buf_len, "invalid_client (as Entra's AADSTS%lu): %s", code,
             advice);
    if (ret_code != NULL)
        *ret_code = code;
    return true;
}
