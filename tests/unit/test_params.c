/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_params - the configuration mapped to each module's params
 * (bridge/params.h): every field from its key, empty optional strings as
 * NULL, the auth type and profile names as enums, MiB as bytes, the
 * caller rules borrowing the config, receive-only without upload.url, and
 * the Storage Commitment provider's params with the ledger's path.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/commit.h"
#include "bridge/find.h"
#include "bridge/params.h"
#include "bridge/uploader.h"
#include "config/config.h"
#include "scp/scp.h"
#include "tap.h"
#include "web/dicomweb.h"
#include "web/oauth.h"

static struct cfg *parse(const char *text)
{
    struct cfg *cfg = NULL;
    char err[512];

    if (cfg_parse(text, strlen(text), &cfg, err, sizeof(err)) < 0) {
        CHECK_MSG(false, "refused: %s: %s", err, text);
        return NULL;
    }
    return cfg;
}

static const char full_text[] =
    "{\"dicom\": {\"ae_title\": \"GATEWAY\", \"port\": 104, "
    "\"max_associations\": 7, \"max_pdu\": 16384, \"timeout_s\": 9, "
    "\"max_pending\": 5, \"accept_unknown_storage_classes\": false, "
    "\"extra_storage_classes\": [\"1.2.3.4\"], "
    "\"allowed_callers\": [{\"ae_title\": \"CT1\", \"hosts\": "
    "[\"10.1.2.0/24\"]}, {\"ae_title\": \"PACS\", \"find\": false}]}, "
    "\"spool\": {\"dir\": \"/srv/spool\", \"min_free_mb\": 77}, "
    "\"upload\": {\"url\": \"https://pacs.example/dicomweb\", "
    "\"workers\": 3, \"batch_max_instances\": 11, \"batch_max_mb\": 5, "
    "\"timeout_s\": 42, \"ca_file\": \"/etc/ca.pem\", "
    "\"on_conflict\": \"send\"}, "
    "\"auth\": {\"type\": \"client_credentials\", "
    "\"token_url\": \"https://login.example/token\", "
    "\"client_id\": \"bridge\", \"client_secret\": \"s3cret\", "
    "\"scope\": \"dicom\", \"client_auth\": \"basic\"}, "
    "\"retry\": {\"min_s\": 2, \"max_s\": 90, \"max_pause_s\": 30, "
    "\"max_age_h\": 12}, "
    "\"query\": {\"profile\": \"orthanc\", \"page_size\": 50, "
    "\"max_results\": 900}}";

static void test_scp(void)
{
    struct cfg *cfg = parse(full_text);
    struct scp_caller_rule *rules = NULL;
    struct scp_params p;
    struct spool *spool = (struct spool *)&p; /* only compared */

    if (cfg == NULL)
        return;
    CHECK(params_scp_callers(cfg, &rules) == 0);
    CHECK(rules != NULL);
    params_scp(cfg, spool, rules, &p);
    CHECK(strcmp(p.ae_title, "GATEWAY") == 0);
    CHECK(p.port == 104);
    CHECK(p.max_associations == 7);
    CHECK(p.max_pdu == 16384);
    CHECK(p.timeout_s == 9);
    CHECK(p.max_pending == 5);
    CHECK(p.spool == spool);
    CHECK(p.min_free_mb == 77);
    CHECK(!p.accept_unknown_storage_classes);
    CHECK(p.extra_storage_count == 1 &&
          strcmp(p.extra_storage[0], "1.2.3.4") == 0);
    CHECK(p.find == NULL);
    CHECK(p.callers == rules && p.caller_count == 2);
    if (rules != NULL) {
        CHECK(strcmp(rules[0].ae_title, "CT1") == 0);
        CHECK(rules[0].host_count == 1);
        CHECK(rules[0].hosts == cfg->dicom.allowed_callers[0].hosts);
        CHECK(rules[0].find);
        CHECK(strcmp(rules[1].ae_title, "PACS") == 0);
        CHECK(rules[1].host_count == 0);
        CHECK(!rules[1].find);
    }
    /* Without rules (stowbridge check): anyone, whatever the config. */
    params_scp(cfg, spool, NULL, &p);
    CHECK(p.callers == NULL && p.caller_count == 0);
    free(rules);
    cfg_free(cfg);

    /* No list: no rules, not an error. */
    cfg = parse("{}");
    if (cfg == NULL)
        return;
    rules = (struct scp_caller_rule *)&p;
    CHECK(params_scp_callers(cfg, &rules) == 0);
    CHECK(rules == NULL);
    params_scp(cfg, NULL, rules, &p);
    CHECK(p.caller_count == 0 && p.port == 11112);
    CHECK(p.accept_unknown_storage_classes);
    CHECK(p.extra_storage_count == 0);
    cfg_free(cfg);
}

static void test_web(void)
{
    struct cfg *cfg = parse(full_text);
    struct oauth_params op;
    struct dicomweb_params sp;

    if (cfg == NULL)
        return;
    CHECK(params_uploading(cfg));
    params_oauth(cfg, &op);
    CHECK(op.kind == OAUTH_CLIENT_CREDENTIALS);
    CHECK(strcmp(op.token_url, "https://login.example/token") == 0);
    CHECK(strcmp(op.client_id, "bridge") == 0);
    CHECK(strcmp(op.client_secret, "s3cret") == 0);
    CHECK(op.scope != NULL && strcmp(op.scope, "dicom") == 0);
    CHECK(op.resource == NULL); /* "" */
    CHECK(op.client_auth == OAUTH_AUTH_BASIC);
    CHECK(op.ca_file != NULL && strcmp(op.ca_file, "/etc/ca.pem") == 0);
    CHECK(op.timeout_s == 42);
    CHECK(op.notice != NULL);
    params_dicomweb(cfg, &sp);
    CHECK(strcmp(sp.base_url, "https://pacs.example/dicomweb") == 0);
    CHECK(sp.ca_file == op.ca_file);
    CHECK(sp.timeout_s == 42);
    CHECK(sp.cancelled == NULL);
    cfg_free(cfg);

    /* Each auth type as its kind; the default CA store as NULL. */
    static const struct {
        const char *text;
        enum oauth_kind kind;
    } kinds[] = {
        { "{\"upload\": {\"url\": \"http://127.0.0.1:1\"}}", OAUTH_NONE },
        { "{\"upload\": {\"url\": \"http://127.0.0.1:1\"}, \"auth\": "
          "{\"type\": \"static\", \"token\": \"t\"}}",
          OAUTH_STATIC },
        { "{\"upload\": {\"url\": \"http://127.0.0.1:1\"}, \"auth\": "
          "{\"type\": \"azure\", \"tenant\": \"contoso.example\", "
          "\"client_id\": \"c\", \"client_secret\": \"s\"}}",
          OAUTH_CLIENT_CREDENTIALS },
    };
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        cfg = parse(kinds[i].text);
        if (cfg == NULL)
            continue;
        params_oauth(cfg, &op);
        CHECK_MSG(op.kind == kinds[i].kind, "row %zu: kind %d", i,
                  (int)op.kind);
        CHECK(op.client_auth == OAUTH_AUTH_BODY);
        CHECK(op.ca_file == NULL);
        params_dicomweb(cfg, &sp);
        CHECK(sp.ca_file == NULL && sp.timeout_s == 60);
        cfg_free(cfg);
    }
}

static void test_find(void)
{
    static const struct {
        const char *text;
        bool enabled;
        enum find_profile profile;
    } rows[] = {
        { "{}", false, FIND_PROFILE_STANDARD }, /* no upload.url */
        { "{\"upload\": {\"url\": \"http://127.0.0.1:1\"}}", true,
          FIND_PROFILE_STANDARD },
        { "{\"upload\": {\"url\": \"http://127.0.0.1:1\"}, \"query\": "
          "{\"enabled\": false}}",
          false, FIND_PROFILE_STANDARD },
        { "{\"upload\": {\"url\": \"http://127.0.0.1:1\"}, \"query\": "
          "{\"profile\": \"azure\"}}",
          true, FIND_PROFILE_AZURE },
        { full_text, true, FIND_PROFILE_ORTHANC },
    };
    struct find_params fp;

    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct cfg *cfg = parse(rows[i].text);
        if (cfg == NULL)
            continue;
        CHECK_MSG(params_find_enabled(cfg) == rows[i].enabled, "row %zu", i);
        params_find(cfg, &fp);
        CHECK_MSG(fp.profile == rows[i].profile, "row %zu: profile %d", i,
                  (int)fp.profile);
        CHECK(fp.fetch == NULL && fp.fetch_ctx == NULL);
        CHECK(fp.page_size == cfg->query.page_size);
        /* Retrieve AE Title: ours whenever retrieve is offered (it needs
         * upload.url, as C-FIND does), else none. */
        if (params_retrieve_enabled(cfg))
            CHECK(fp.retrieve_ae != NULL &&
                  strcmp(fp.retrieve_ae, cfg->dicom.ae_title) == 0);
        else
            CHECK(fp.retrieve_ae == NULL);
        CHECK_MSG(params_retrieve_enabled(cfg) == (i > 0), "row %zu", i);
        cfg_free(cfg);
    }
    struct cfg *cfg = parse(full_text);
    if (cfg != NULL) {
        params_find(cfg, &fp);
        CHECK(fp.page_size == 50 && fp.max_results == 900);
    }
    cfg_free(cfg);
}

static void test_uploader(void)
{
    struct cfg *cfg = parse(full_text);
    struct uploader_params up;
    struct spool *spool = (struct spool *)&up; /* only compared */
    struct oauth_source *tokens = (struct oauth_source *)&cfg; /* same */

    if (cfg == NULL)
        return;
    params_uploader(cfg, spool, tokens, &up);
    CHECK(up.spool == spool && up.tokens == tokens);
    CHECK(strcmp(up.url, "https://pacs.example/dicomweb") == 0);
    CHECK(up.ca_file != NULL && strcmp(up.ca_file, "/etc/ca.pem") == 0);
    CHECK(up.timeout_s == 42);
    CHECK(up.workers == 3);
    CHECK(up.batch_max_instances == 11);
    CHECK(up.batch_max_bytes == (uint64_t)5 << 20);
    CHECK(up.retry_min_s == 2 && up.retry_max_s == 90);
    CHECK(up.max_pause_s == 30 && up.max_age_h == 12);
    CHECK(up.on_conflict_send);
    cfg_free(cfg);

    /* Defaults: keep-first, the system CAs, 100 MiB batches. */
    cfg = parse("{\"upload\": {\"url\": \"http://127.0.0.1:1\"}}");
    if (cfg == NULL)
        return;
    params_uploader(cfg, NULL, NULL, &up);
    CHECK(!up.on_conflict_send);
    CHECK(up.ca_file == NULL);
    CHECK(up.batch_max_bytes == (uint64_t)cfg->upload.batch_max_mb << 20);
    CHECK(up.workers == cfg->upload.workers);
    cfg_free(cfg);

    /* Receive-only. */
    cfg = parse("{\"upload\": {\"url\": \"\"}}");
    CHECK(cfg != NULL && !params_uploading(cfg));
    cfg_free(cfg);
}

static void test_commit(void)
{
    struct cfg *cfg = parse(
        "{\"dicom\": {\"ae_title\": \"GATEWAY\", \"timeout_s\": 9, "
        "\"remote_aes\": [{\"ae_title\": \"CT1\", \"host\": \"10.1.2.3\", "
        "\"port\": 104}, {\"ae_title\": \"MR1\", \"host\": \"mr.example\", "
        "\"port\": 11112, \"tls\": true, \"certificate_sha256\": \""
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"}], "
        "\"tls\": {\"ca_file\": \"/etc/ca.pem\"}}, \"spool\": {\"dir\": \"/srv/spool\", "
        "\"min_free_mb\": 77}, \"upload\": {\"url\": \"https://p.example\"}, "
        "\"commit\": {\"max_wait_h\": 5, \"report_retry_max_s\": 60, "
        "\"same_association\": true}, \"ledger\": {\"keep_days\": 3}}");
    struct commit_params cp;
    struct commit_remote *remotes = NULL;
    char path[64];
    char tiny[8];

    if (cfg == NULL)
        return;
    CHECK(params_commit(cfg, path, sizeof(path), &remotes, &cp) == 0);
    CHECK(cp.ledger_path == path && strcmp(path, "/srv/spool/ledger.db") == 0);
    CHECK(strcmp(cp.our_ae, "GATEWAY") == 0);
    CHECK(strcmp(cp.destination, "https://p.example") == 0);
    CHECK(cp.remote_count == 2 && cp.remotes == remotes && remotes != NULL);
    if (remotes != NULL) {
        CHECK(strcmp(remotes[0].ae_title, "CT1") == 0 &&
              strcmp(remotes[0].host, "10.1.2.3") == 0 &&
              remotes[0].port == 104);
        CHECK(remotes[1].ae_title == cfg->dicom.remote_aes[1].ae_title &&
              remotes[1].port == 11112);
        /* TLS and the pin, for the report (the material comes from
         * params_scp_remotes()). */
        CHECK(!remotes[0].tls && remotes[0].certificate_sha256 == NULL);
        CHECK(remotes[1].tls && remotes[1].certificate_sha256 != NULL &&
              strncmp(remotes[1].certificate_sha256, "00112233", 8) == 0);
    }
    CHECK(cp.outbound_tls == NULL);
    CHECK(cp.max_wait_h == 5 && cp.report_retry_max_s == 60);
    CHECK(cp.timeout_s == 9 && cp.min_free_mb == 77 && cp.keep_days == 3);
    CHECK(cp.same_association);
    CHECK(cp.spool == NULL && cp.web == NULL);
    free(remotes);
    /* A path that does not fit: no ledger. */
    CHECK(params_commit(cfg, tiny, sizeof(tiny), &remotes, &cp) == 0);
    CHECK(cp.ledger_path == NULL);
    CHECK(params_ledger_path(cfg, tiny, sizeof(tiny)) == -ENAMETOOLONG);
    free(remotes);
    cfg_free(cfg);

    /* Defaults: no remote AEs, same_association off, ledger.path kept. */
    cfg = parse("{\"ledger\": {\"path\": \"/var/lib/l.db\"}}");
    if (cfg == NULL)
        return;
    CHECK(params_commit(cfg, path, sizeof(path), &remotes, &cp) == 0);
    CHECK(remotes == NULL && cp.remotes == NULL && cp.remote_count == 0);
    CHECK(!cp.same_association && cp.max_wait_h == 24);
    CHECK(cp.ledger_path != NULL && strcmp(path, "/var/lib/l.db") == 0);
    cfg_free(cfg);
}

int main(void)
{
    test_scp();
    test_web();
    test_find();
    test_uploader();
    test_commit();
    return tap_done();
}
