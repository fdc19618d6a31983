/*
 * test_config - the configuration parser: defaults, every key, comments,
 * every error path with its message, the dump round trip, and the sample
 * file kept identical to cfg_write_sample().
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "tap.h"

static char err[1024];

static int parse(const char *text, struct cfg **ret)
{
    err[0] = '\0';
    return cfg_parse(text, strlen(text), ret, err, sizeof(err));
}

/* The text must be refused, with every one of @needles in the message. */
static void expect_error(const char *text, const char *needle1,
                         const char *needle2)
{
    struct cfg *cfg = NULL;
    int r = parse(text, &cfg);

    CHECK_MSG(r == -EINVAL, "accepted: %s", text);
    CHECK_MSG(cfg == NULL, "cfg set on error: %s", text);
    CHECK_MSG(strncmp(err, "config: ", 8) == 0, "prefix: %s", err);
    CHECK_MSG(strstr(err, needle1) != NULL, "'%s' not in '%s'", needle1, err);
    if (needle2 != NULL)
        CHECK_MSG(strstr(err, needle2) != NULL, "'%s' not in '%s'", needle2,
                  err);
    cfg_free(cfg);
}

static void test_defaults(void)
{
    struct cfg *cfg = NULL;

    CHECK(parse("{}", &cfg) == 0);
    CHECK(strcmp(cfg->dicom.ae_title, "STOWBRIDGE") == 0);
    CHECK(cfg->dicom.port == 11112);
    CHECK(cfg->dicom.max_associations == 16);
    CHECK(cfg->dicom.max_pdu == 116794);
    CHECK(cfg->dicom.timeout_s == 30);
    CHECK(cfg->dicom.allowed_caller_count == 0);
    CHECK(strcmp(cfg->spool.dir, "/var/spool/stowbridge") == 0);
    CHECK(cfg->spool.min_free_mb == 512);
    CHECK(cfg->log.level == LOG_LEVEL_INFO);
    cfg_free(cfg);
    cfg_free(NULL);
}

static void test_every_key(void)
{
    struct cfg *cfg = NULL;
    const char *text =
        "// a comment at the top\n"
        "{\n"
        "  /* block\n     comment */\n"
        "  \"dicom\": {\n"
        "    \"ae_title\": \"  GATEWAY \",  // trailing comment\n"
        "    \"port\": 104,\n"
        "    \"max_associations\": 1024,\n"
        "    \"max_pdu\": 4096,\n"
        "    \"timeout_s\": 3600,\n"
        "    \"allowed_callers\": [\n"
        "      {\"ae_title\": \"CT1\", \"hosts\": [\"10.0.0.0/8\", "
        "\"192.0.2.7\"]},\n"
        "      {\"ae_title\": \"PACS\"},\n"
        "      {\"hosts\": [\"0.0.0.0/0\"]}\n"
        "    ]\n"
        "  },\n"
        "  \"spool\": {\"dir\": \"/srv/spool // not a comment\", "
        "\"min_free_mb\": 0},\n"
        "  \"log\": {\"level\": \"debug\"}\n"
        "}\n";

    CHECK_MSG(parse(text, &cfg) == 0, "%s", err);
    if (cfg == NULL)
        return;
    CHECK(strcmp(cfg->dicom.ae_title, "GATEWAY") == 0);
    CHECK(cfg->dicom.port == 104);
    CHECK(cfg->dicom.max_associations == 1024);
    CHECK(cfg->dicom.max_pdu == 4096);
    CHECK(cfg->dicom.timeout_s == 3600);
    CHECK(cfg->dicom.allowed_caller_count == 3);
    CHECK(strcmp(cfg->dicom.allowed_callers[0].ae_title, "CT1") == 0);
    CHECK(cfg->dicom.allowed_callers[0].host_count == 2);
    CHECK(util_ipv4_net_contains(&cfg->dicom.allowed_callers[0].hosts[0],
                                 "10.9.8.7"));
    CHECK(util_ipv4_net_contains(&cfg->dicom.allowed_callers[0].hosts[1],
                                 "192.0.2.7"));
    CHECK(!util_ipv4_net_contains(&cfg->dicom.allowed_callers[0].hosts[1],
                                  "192.0.2.8"));
    CHECK(strcmp(cfg->dicom.allowed_callers[1].ae_title, "PACS") == 0);
    CHECK(cfg->dicom.allowed_callers[1].host_count == 0);
    CHECK(cfg->dicom.allowed_callers[2].ae_title == NULL);
    CHECK(cfg->dicom.allowed_callers[2].host_count == 1);
    CHECK(strcmp(cfg->spool.dir, "/srv/spool // not a comment") == 0);
    CHECK(cfg->spool.min_free_mb == 0);
    CHECK(cfg->log.level == LOG_LEVEL_DEBUG);
    cfg_free(cfg);

    CHECK(parse("{\"log\": {\"level\": \"error\"}}", &cfg) == 0);
    CHECK(cfg != NULL && cfg->log.level == LOG_LEVEL_ERR);
    cfg_free(cfg);
    CHECK(parse("{\"dicom\": {\"allowed_callers\": []}}", &cfg) == 0);
    CHECK(cfg != NULL && cfg->dicom.allowed_caller_count == 0);
    cfg_free(cfg);
}

static void test_errors(void)
{
    /* Unknown keys, with a suggestion when one is close. */
    expect_error("{\"dicom\": {\"prot\": 1}}", "unknown key 'dicom.prot'",
                 "did you mean 'dicom.port'");
    expect_error("{\"dicom\": {\"colour\": 1}}", "unknown key 'dicom.colour'",
                 NULL);
    expect_error("{\"dicon\": {}}", "unknown key 'dicon'", "'dicom'");
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"hostz\": []}]}}",
                 "dicom.allowed_callers[0].hostz", NULL);
    /* Types. */
    expect_error("{\"dicom\": {\"port\": \"104\"}}", "dicom.port",
                 "expected an integer from 1 to 65535, got a string");
    expect_error("{\"dicom\": {\"ae_title\": 5}}", "dicom.ae_title",
                 "expected a string");
    expect_error("{\"dicom\": []}", "dicom", "expected an object");
    expect_error("{\"log\": {\"level\": \"verbose\"}}", "log.level",
                 "\"debug\"");
    expect_error("{\"dicom\": {\"allowed_callers\": {}}}",
                 "dicom.allowed_callers", "expected a list");
    expect_error("{\"dicom\": {\"allowed_callers\": [5]}}",
                 "dicom.allowed_callers[0]", "expected an object");
    /* Ranges and integers. */
    expect_error("{\"dicom\": {\"port\": 70000}}", "dicom.port", "70000");
    expect_error("{\"dicom\": {\"port\": 0}}", "dicom.port", "from 1");
    expect_error("{\"dicom\": {\"port\": -5}}", "dicom.port", NULL);
    expect_error("{\"dicom\": {\"timeout_s\": 1.5}}", "dicom.timeout_s",
                 "integer");
    expect_error("{\"dicom\": {\"max_pdu\": 1000}}", "dicom.max_pdu",
                 "4096 to 131072");
    expect_error("{\"dicom\": {\"max_associations\": 0}}",
                 "dicom.max_associations", NULL);
    expect_error("{\"spool\": {\"min_free_mb\": 99999999}}",
                 "spool.min_free_mb", NULL);
    /* Values with a shape. */
    expect_error("{\"dicom\": {\"ae_title\": \"WAY_TOO_LONG_AE_TITLE\"}}",
                 "dicom.ae_title", "AE title");
    expect_error("{\"dicom\": {\"ae_title\": \"A\\\\B\"}}", "dicom.ae_title",
                 NULL);
    expect_error("{\"dicom\": {\"ae_title\": \"   \"}}", "dicom.ae_title",
                 NULL);
    expect_error("{\"spool\": {\"dir\": \"relative/path\"}}", "spool.dir",
                 "absolute path");
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"hosts\": "
                 "[\"10.0.0.0/33\"]}]}}",
                 "dicom.allowed_callers[0].hosts[0]", "IPv4");
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"hosts\": "
                 "[\"pacs.example.org\"]}]}}",
                 "dicom.allowed_callers[0].hosts[0]", "host names");
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"hosts\": "
                 "[\"::1\"]}]}}",
                 "hosts[0]", "IPv4 only");
    expect_error("{\"dicom\": {\"allowed_callers\": [{}]}}",
                 "dicom.allowed_callers[0]", "needs");
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"ae_title\": \"X\", "
                 "\"ae_title\": \"Y\"}]}}",
                 "duplicate key", NULL);
    /* Structure. */
    expect_error("{\"dicom\": {\"port\": 1}, \"dicom\": {}}",
                 "duplicate key 'dicom'", NULL);
    expect_error("{\"dicom\": {\"port\": 1, \"port\": 2}}",
                 "duplicate key 'dicom.port'", NULL);
    expect_error("[]", "expected a JSON object", NULL);
    expect_error("", "empty", NULL);
    expect_error("  // only a comment\n", "empty", NULL);
    expect_error("{\n  \"dicom\": {\n    \"port\": 104,\n  }\n}",
                 "line 4", "syntax error");
    expect_error("{\"dicom\": {}} trailing", "line 1", "syntax error");
    expect_error("{\n\n/* never closed\n", "line 3", "unterminated");
}

static void test_load(void)
{
    char dir_tmpl[] = "/tmp/stowbridge-cfg-XXXXXX";
    char path[512];
    struct cfg *cfg = NULL;
    char *dir = mkdtemp(dir_tmpl);
    FILE *f;
    int r;

    CHECK(dir != NULL);
    if (dir == NULL)
        return;

    snprintf(path, sizeof(path), "%s/missing.json", dir);
    r = cfg_load(path, &cfg, err, sizeof(err));
    CHECK(r == -ENOENT);
    CHECK_MSG(strstr(err, path) != NULL, "%s", err);

    r = cfg_load(dir, &cfg, err, sizeof(err));
    CHECK(r < 0 && cfg == NULL);
    CHECK_MSG(strstr(err, "not a regular file") != NULL, "%s", err);

    snprintf(path, sizeof(path), "%s/big.json", dir);
    f = fopen(path, "w");
    for (int i = 0; f != NULL && i < 70000; i++)
        fputs("                ", f);
    if (f != NULL)
        fclose(f);
    r = cfg_load(path, &cfg, err, sizeof(err));
    CHECK(r == -EFBIG);
    CHECK_MSG(strstr(err, "too large") != NULL, "%s", err);

    snprintf(path, sizeof(path), "%s/bad.json", dir);
    f = fopen(path, "w");
    if (f != NULL) {
        fputs("{\n  \"dicom\": {\"port\": 99999}\n}\n", f);
        fclose(f);
    }
    r = cfg_load(path, &cfg, err, sizeof(err));
    CHECK(r == -EINVAL);
    CHECK_MSG(strncmp(err, path, strlen(path)) == 0 &&
                  strstr(err, "dicom.port") != NULL,
              "%s", err);

    snprintf(path, sizeof(path), "%s/good.json", dir);
    f = fopen(path, "w");
    if (f != NULL) {
        fputs("{\"dicom\": {\"port\": 4242}}\n", f);
        fclose(f);
    }
    r = cfg_load(path, &cfg, err, sizeof(err));
    CHECK(r == 0 && cfg != NULL && cfg->dicom.port == 4242);
    cfg_free(cfg);

    snprintf(path, sizeof(path), "rm -rf '%s'", dir);
    (void)!system(path);
}

/* Captures what @write_fn writes into a new string (caller frees). */
static char *capture(int (*write_fn)(const struct cfg *, FILE *),
                     const struct cfg *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    if (f == NULL)
        return NULL;
    if (write_fn(cfg, f) != 0) {
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    return buf;
}

static int write_sample(const struct cfg *cfg, FILE *out)
{
    (void)cfg;
    return cfg_write_sample(out);
}

static void test_dump_round_trip(void)
{
    struct cfg *cfg = NULL;
    struct cfg *again = NULL;
    char *dump;

    CHECK(parse("{\"dicom\": {\"ae_title\": \"GW\", \"port\": 4242, "
                "\"allowed_callers\": [{\"ae_title\": \"CT1\", \"hosts\": "
                "[\"10.1.2.3/24\", \"192.0.2.7\"]}, {\"hosts\": "
                "[\"127.0.0.1\"]}]}, \"log\": {\"level\": \"notice\"}}",
                &cfg) == 0);
    dump = capture(cfg_dump, cfg);
    CHECK(dump != NULL);
    if (dump != NULL) {
        CHECK_MSG(parse(dump, &again) == 0, "%s\n%s", err, dump);
        CHECK(strstr(dump, "\"10.1.2.0/24\"") != NULL);
        CHECK(strstr(dump, "\"192.0.2.7/32\"") != NULL);
    }
    if (again != NULL) {
        CHECK(strcmp(again->dicom.ae_title, "GW") == 0);
        CHECK(again->dicom.port == 4242);
        CHECK(again->dicom.allowed_caller_count == 2);
        CHECK(again->dicom.allowed_callers[1].ae_title == NULL);
        CHECK(again->dicom.allowed_callers[0].hosts[0].mask ==
              cfg->dicom.allowed_callers[0].hosts[0].mask);
        CHECK(again->log.level == LOG_LEVEL_NOTICE);
    }
    free(dump);
    cfg_free(cfg);
    cfg_free(again);
}

static void test_sample_file(void)
{
    struct cfg *cfg = NULL;
    char *sample = capture(write_sample, NULL);
    char *committed = NULL;
    size_t committed_len = 0;
    FILE *f = fopen(SB_SOURCE_DIR "/config/stowbridge.sample.json", "r");

    CHECK(sample != NULL);
    CHECK_MSG(f != NULL, "config/stowbridge.sample.json missing");
    if (f != NULL) {
        FILE *mem = open_memstream(&committed, &committed_len);
        int c;
        while ((c = fgetc(f)) != EOF)
            fputc(c, mem);
        fclose(mem);
        fclose(f);
    }
    if (sample != NULL && committed != NULL)
        CHECK_MSG(strcmp(sample, committed) == 0,
                  "config/stowbridge.sample.json differs from "
                  "'stowbridge sample-config': regenerate it");
    if (sample != NULL) {
        CHECK_MSG(parse(sample, &cfg) == 0, "sample does not parse: %s", err);
        CHECK(cfg != NULL && cfg->dicom.port == 11112);
    }
    cfg_free(cfg);
    free(sample);
    free(committed);
}

int main(void)
{
    test_defaults();
    test_every_key();
    test_errors();
    test_load();
    test_dump_round_trip();
    test_sample_file();
    return tap_done();
}
