/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_config - the configuration parser: defaults, every key, comments,
 * every error path with its message, line and column of syntax errors,
 * cfg_load() on bad files, the allowed_callers rules, the dump round trip,
 * and the sample file kept identical to cfg_write_sample().
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "config/config.h"
#include "tap.h"

static char err[1024];

static int parse(const char *text, struct cfg **ret)
{
    err[0] = '\0';
    return cfg_parse(text, strlen(text), ret, err, sizeof(err));
}

/*
 * The text must be refused with -EINVAL, leaving the output alone, with a
 * message that starts with "config: " and holds @needle1 and @needle2.
 */
static void expect_error(const char *text, const char *needle1,
                         const char *needle2)
{
    struct cfg *cfg = NULL;
    int r = parse(text, &cfg);

    CHECK_MSG(r == -EINVAL, "accepted (%d): %s", r, text);
    CHECK_MSG(cfg == NULL, "cfg set on error: %s", text);
    CHECK_MSG(strncmp(err, "config: ", 8) == 0, "prefix: %s", err);
    CHECK_MSG(strstr(err, needle1) != NULL, "'%s' not in '%s'", needle1, err);
    if (needle2 != NULL)
        CHECK_MSG(strstr(err, needle2) != NULL, "'%s' not in '%s'", needle2,
                  err);
    CHECK_MSG(strchr(err, '\n') == NULL, "newline in '%s'", err);
    cfg_free(cfg);
}

/* The text must parse; returns the config (caller frees) or NULL. */
static struct cfg *expect_ok(const char *text)
{
    struct cfg *cfg = NULL;
    int r = parse(text, &cfg);

    CHECK_MSG(r == 0 && cfg != NULL, "refused (%d): %s: %s", r, err, text);
    return r == 0 ? cfg : NULL;
}

static bool str_eq(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

/* True if @a and @b hold the same values, key by key. */
static bool cfg_equal(const struct cfg *a, const struct cfg *b)
{
    if (!str_eq(a->dicom.ae_title, b->dicom.ae_title) ||
        a->dicom.port != b->dicom.port ||
        a->dicom.max_associations != b->dicom.max_associations ||
        a->dicom.max_pdu != b->dicom.max_pdu ||
        a->dicom.timeout_s != b->dicom.timeout_s ||
        a->dicom.allowed_caller_count != b->dicom.allowed_caller_count ||
        !str_eq(a->spool.dir, b->spool.dir) ||
        a->spool.min_free_mb != b->spool.min_free_mb ||
        a->log.level != b->log.level)
        return false;
    for (size_t i = 0; i < a->dicom.allowed_caller_count; i++) {
        const struct cfg_caller *ca = &a->dicom.allowed_callers[i];
        const struct cfg_caller *cb = &b->dicom.allowed_callers[i];

        if (!str_eq(ca->ae_title, cb->ae_title) ||
            ca->host_count != cb->host_count)
            return false;
        for (size_t h = 0; h < ca->host_count; h++)
            if (ca->hosts[h].addr != cb->hosts[h].addr ||
                ca->hosts[h].mask != cb->hosts[h].mask)
                return false;
    }
    return true;
}

static void test_defaults(void)
{
    struct cfg *cfg = NULL;
    struct cfg *parsed;

    CHECK(cfg_defaults(&cfg) == 0);
    if (cfg == NULL)
        return;
    CHECK(strcmp(cfg->dicom.ae_title, "STOWBRIDGE") == 0);
    CHECK(cfg->dicom.port == 11112);
    CHECK(cfg->dicom.max_associations == 16);
    CHECK(cfg->dicom.max_pdu == 116794);
    CHECK(cfg->dicom.timeout_s == 30);
    CHECK(cfg->dicom.allowed_callers == NULL);
    CHECK(cfg->dicom.allowed_caller_count == 0);
    CHECK(strcmp(cfg->spool.dir, "/var/spool/stowbridge") == 0);
    CHECK(cfg->spool.min_free_mb == 512);
    CHECK(cfg->log.level == LOG_LEVEL_INFO);

    /* "{}" and empty sections are the defaults. */
    parsed = expect_ok("{}");
    CHECK(parsed != NULL && cfg_equal(cfg, parsed));
    cfg_free(parsed);
    parsed = expect_ok("{\"dicom\": {}, \"spool\": {}, \"log\": {}}");
    CHECK(parsed != NULL && cfg_equal(cfg, parsed));
    cfg_free(parsed);
    cfg_free(cfg);
    cfg_free(NULL);
}

static void test_every_key(void)
{
    struct cfg *cfg;
    const char *text =
        "{\n"
        "  \"dicom\": {\n"
        "    \"ae_title\": \"  GATEWAY \",\n"
        "    \"port\": 104,\n"
        "    \"max_associations\": 1024,\n"
        "    \"max_pdu\": 4096,\n"
        "    \"timeout_s\": 3600,\n"
        "    \"allowed_callers\": [{\"ae_title\": \"CT1\"}]\n"
        "  },\n"
        "  \"spool\": {\"dir\": \"/srv/spool\", \"min_free_mb\": 1048576},\n"
        "  \"log\": {\"level\": \"debug\"}\n"
        "}\n";

    cfg = expect_ok(text);
    if (cfg != NULL) {
        CHECK(strcmp(cfg->dicom.ae_title, "GATEWAY") == 0);
        CHECK(cfg->dicom.port == 104);
        CHECK(cfg->dicom.max_associations == 1024);
        CHECK(cfg->dicom.max_pdu == 4096);
        CHECK(cfg->dicom.timeout_s == 3600);
        CHECK(cfg->dicom.allowed_caller_count == 1);
        CHECK(strcmp(cfg->spool.dir, "/srv/spool") == 0);
        CHECK(cfg->spool.min_free_mb == 1048576);
        CHECK(cfg->log.level == LOG_LEVEL_DEBUG);
    }
    cfg_free(cfg);

    /* The other ends of the ranges. */
    cfg = expect_ok("{\"dicom\": {\"port\": 65535, \"max_associations\": 1, "
                    "\"max_pdu\": 131072, \"timeout_s\": 1}, "
                    "\"spool\": {\"min_free_mb\": 0}}");
    if (cfg != NULL) {
        CHECK(cfg->dicom.port == 65535);
        CHECK(cfg->dicom.max_associations == 1);
        CHECK(cfg->dicom.max_pdu == 131072);
        CHECK(cfg->dicom.timeout_s == 1);
        CHECK(cfg->spool.min_free_mb == 0);
    }
    cfg_free(cfg);

    /* A number written with an exponent is fine if it is an integer. */
    cfg = expect_ok("{\"dicom\": {\"port\": 1.04e2}}");
    CHECK(cfg != NULL && cfg->dicom.port == 104);
    cfg_free(cfg);

    /* Every level name, and "error" for "err". */
    {
        static const struct {
            const char *name;
            int level;
        } levels[] = {
            { "err", LOG_LEVEL_ERR },         { "error", LOG_LEVEL_ERR },
            { "warning", LOG_LEVEL_WARNING }, { "notice", LOG_LEVEL_NOTICE },
            { "info", LOG_LEVEL_INFO },       { "debug", LOG_LEVEL_DEBUG },
        };
        for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
            char text_level[64];

            snprintf(text_level, sizeof(text_level),
                     "{\"log\": {\"level\": \"%s\"}}", levels[i].name);
            cfg = expect_ok(text_level);
            CHECK_MSG(cfg != NULL && cfg->log.level == levels[i].level,
                      "level %s", levels[i].name);
            cfg_free(cfg);
        }
    }

    /* A later valid value replaces the default, not leaking it. */
    cfg = expect_ok("{\"spool\": {\"dir\": \"/\"}}");
    CHECK(cfg != NULL && strcmp(cfg->spool.dir, "/") == 0);
    cfg_free(cfg);

    /* Text that is not NUL-terminated: only @len bytes count. */
    {
        const char buf[] = "{\"dicom\": {\"port\": 42}}garbage";
        struct cfg *c = NULL;

        CHECK(cfg_parse(buf, strlen(buf) - 7, &c, err, sizeof(err)) == 0);
        CHECK(c != NULL && c->dicom.port == 42);
        cfg_free(c);
    }
}

static void test_comments(void)
{
    struct cfg *cfg;
    const char *text =
        "// a comment at the top\n"
        "/* a block\n"
        "   over lines */ {\n"
        "  \"dicom\" /* between */ : /* name and value */ {\n"
        "    \"ae_title\": \"GW\", // trailing\n"
        "    \"port\": 104// no space before it\n"
        "    /**/ , \"timeout_s\": /* * / ** */ 10 /*/ odd */\n"
        "  },\n"
        "  \"spool\": {\n"
        "    \"dir\": \"/srv/a // not a comment /* nor this */\"\n"
        "  },\n"
        "  \"log\": {\"level\": \"debug\"} /* last */\n"
        "} // no newline at the end";

    cfg = expect_ok(text);
    if (cfg != NULL) {
        CHECK(strcmp(cfg->dicom.ae_title, "GW") == 0);
        CHECK(cfg->dicom.port == 104);
        CHECK(cfg->dicom.timeout_s == 10);
        CHECK(strcmp(cfg->spool.dir,
                     "/srv/a // not a comment /* nor this */") == 0);
        CHECK(cfg->log.level == LOG_LEVEL_DEBUG);
    }
    cfg_free(cfg);

    /* An escaped quote does not end the string: the // stays inside. */
    cfg = expect_ok("{\"spool\": {\"dir\": \"/a\\\"//b\\\\\"} // c\n}");
    CHECK(cfg != NULL && strcmp(cfg->spool.dir, "/a\"//b\\") == 0);
    cfg_free(cfg);

    /* CRLF line ends. */
    cfg = expect_ok("{\r\n  // c\r\n  \"dicom\": {\"port\": 7}\r\n}\r\n");
    CHECK(cfg != NULL && cfg->dicom.port == 7);
    cfg_free(cfg);

    /* Unterminated block comments name the line they start on. */
    expect_error("{\n\n/* never closed\n", "line 3", "unterminated /* comment");
    expect_error("{} /*", "line 1", "unterminated");
    expect_error("{}\n/* almost *", "line 2", "unterminated");
    /* Comment markers inside strings are not comments. */
    expect_error("{\"spool\": {\"dir\": \"/*\"}}\n/* x", "line 2",
                 "unterminated");
    /* Only a comment: empty. */
    expect_error("  // only a comment\n", "empty", NULL);
    expect_error("/* only */ \n\t", "empty", NULL);
}

/* Numbers cJSON takes (strtod) but JSON does not: refused with the line. */
static void test_non_json_numbers(void)
{
    struct cfg *cfg;

    expect_error("{\n  \"dicom\": {\n    \"port\": 018510\n  }\n}",
                 "config: line 3, column 13: '018510' is not a JSON number",
                 "leading zeros");
    expect_error("{\"dicom\": {\"port\": 00}}", "column 20: '00'",
                 "leading zeros");
    expect_error("{\"dicom\": {\"port\": -0104}}", "'-0104'", "leading zeros");
    expect_error("{\"dicom\": {\"port\": 104.}}", "'104.' is not a JSON",
                 "fraction");
    expect_error("{\"upload\": {\"timeout_s\": 1.e1}}", "'1.e1'", NULL);
    expect_error("{\"upload\": {\"timeout_s\": -.5}}", "'-.5'", NULL);
    expect_error("{\"upload\": {\"workers\": 1E+}}", "line 1", NULL);
    /* After comments and strings that look like numbers, the right place;
     * columns count characters. */
    expect_error("{ // 0123 \n \"spool\": {\"dir\": \"/tmp/01\\\"x\"},\n"
                 " \"d\xc3\xa9\": 1, \"dicom\": {\"port\": 0104}}",
                 "line 3, column 29: '0104'", NULL);
    /* Valid JSON numbers are still taken. */
    cfg = expect_ok("{\"dicom\": {\"port\": 104, \"max_pdu\": 16384}, "
                    "\"upload\": {\"timeout_s\": 1e1}}");
    if (cfg != NULL) {
        CHECK(cfg->upload.timeout_s == 10);
        cfg_free(cfg);
    }
}

static void test_syntax_errors(void)
{
    /* A trailing comma: the '}' after it, line 4 column 3. */
    expect_error("{\n  \"dicom\": {\n    \"port\": 104,\n  }\n}",
                 "config: line 4, column 3: syntax error near '}", NULL);
    /* A missing comma: the second member, line 3 column 5. */
    expect_error("{\"dicom\": {\n    \"port\": 104\n    \"max_pdu\": 4096}}",
                 "line 3, column 5: syntax error near '\"max_pdu\"", NULL);
    /* Comments before the error do not shift its position. */
    expect_error("/* one\n two */ { // three\n  \"dicom\": {\"port\": x}}",
                 "line 3, column 21: syntax error near 'x}}'", NULL);
    /* An unquoted name. */
    expect_error("{ dicom: {} }", "line 1, column 3", "near 'dicom: {} }'");
    /* Trailing text. */
    expect_error("{\"dicom\": {}} trailing", "line 1, column 15",
                 "near 'trailing'");
    /* The end of the file. */
    expect_error("{\"dicom\": {\n", "line 2, column 1",
                 "at the end of the file");
    /* Columns count characters, not bytes. */
    expect_error("{\"\xc3\xa9\xc3\xa9\": x}", "line 1, column 8", NULL);
    /* At most ~20 characters of the text are quoted. */
    expect_error("{\"dicom\": {}} 0123456789abcdefghijKLMNOP",
                 "near '0123456789abcdefghij...'", NULL);
    CHECK_MSG(strstr(err, "KLM") == NULL, "%s", err);
    /* Quoted text stops at the end of the line and hides control bytes. */
    expect_error("{\"dicom\": {}} x\x01y\nsecond line", "near 'x?y'", NULL);
    /* cJSON skips control bytes like spaces. */
    expect_error("{\"a\": \x01}", "line 1, column 8", "near '}'");
    /* A NUL byte. */
    {
        const char text[] = "{}\0{}";
        struct cfg *cfg = NULL;

        CHECK(cfg_parse(text, sizeof(text) - 1, &cfg, err, sizeof(err)) ==
              -EINVAL);
        CHECK(cfg == NULL);
        CHECK_MSG(strstr(err, "NUL") != NULL, "%s", err);
    }
}

static void test_errors(void)
{
    /* Unknown keys, with a suggestion when one is close. */
    expect_error("{\"dicom\": {\"prot\": 1}}", "unknown key 'dicom.prot'",
                 "(did you mean 'dicom.port'?)");
    expect_error("{\"dicom\": {\"timeout\": 1}}", "unknown key 'dicom.timeout'",
                 "did you mean 'dicom.timeout_s'");
    expect_error("{\"log\": {\"levle\": \"info\"}}", "'log.levle'",
                 "did you mean 'log.level'");
    expect_error("{\"dicom\": {\"colour\": 1}}", "unknown key 'dicom.colour'",
                 NULL);
    CHECK_MSG(strstr(err, "did you mean") == NULL, "%s", err);
    expect_error("{\"spool\": {\"ae_title\": \"X\"}}",
                 "unknown key 'spool.ae_title'", NULL);
    expect_error("{\"dicon\": {}}", "unknown key 'dicon'",
                 "did you mean 'dicom'");
    expect_error("{\"uploads\": {}}", "unknown key 'uploads'", "'upload'");
    expect_error("{\"port\": 104}", "unknown key 'port'", NULL);
    /* Names are quoted safely: control characters hidden, long ones cut. */
    expect_error("{\"dicom\": {\"po\\nrt\": 1}}", "unknown key 'dicom.po?rt'",
                 NULL);
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"a\\tb\": 1}]}}",
                 "unknown key 'dicom.allowed_callers[0].a?b'", NULL);
    expect_error("{\"dicom\": {\"0123456789012345678901234567890123456789"
                 "TAIL\": 1}}",
                 "unknown key 'dicom.0123456789012345678901234567890123...'",
                 NULL);
    /* Unknown keys are found even after valid ones. */
    expect_error("{\"dicom\": {\"port\": 104, \"ae_titel\": \"X\"}}",
                 "'dicom.ae_titel'", "'dicom.ae_title'");

    /* Wrong types. */
    expect_error("{\"dicom\": {\"port\": \"104\"}}", "dicom.port: ",
                 "expected an integer from 1 to 65535, got a string");
    expect_error("{\"dicom\": {\"port\": true}}", "dicom.port",
                 "got a boolean");
    expect_error("{\"dicom\": {\"port\": null}}", "dicom.port", "got null");
    expect_error("{\"dicom\": {\"max_pdu\": [4096]}}", "dicom.max_pdu",
                 "got a list");
    expect_error("{\"dicom\": {\"timeout_s\": {}}}", "dicom.timeout_s",
                 "got an object");
    expect_error("{\"dicom\": {\"ae_title\": 5}}",
                 "dicom.ae_title: ", "got a number");
    expect_error("{\"spool\": {\"dir\": false}}",
                 "spool.dir: ", "expected an absolute path, got a boolean");
    expect_error("{\"log\": {\"level\": 7}}", "log.level: ", "got a number");
    expect_error("{\"dicom\": []}",
                 "dicom: ", "expected an object, got a list");
    expect_error("{\"log\": \"debug\"}", "log: ", "expected an object");

    /* Out of range, negative, not an integer. */
    expect_error("{\"dicom\": {\"port\": 70000}}", "dicom.port: ",
                 "expected an integer from 1 to 65535, got 70000");
    expect_error("{\"dicom\": {\"port\": 0}}", "dicom.port",
                 "from 1 to 65535, got 0");
    expect_error("{\"dicom\": {\"port\": -5}}", "dicom.port", "got -5");
    expect_error("{\"spool\": {\"min_free_mb\": -1}}", "spool.min_free_mb",
                 "from 0 to 1048576, got -1");
    expect_error("{\"dicom\": {\"timeout_s\": 1.5}}", "dicom.timeout_s",
                 "expected an integer from 1 to 3600, got 1.5");
    expect_error("{\"dicom\": {\"timeout_s\": 3600.25}}", "dicom.timeout_s",
                 "got 3600.25");
    expect_error("{\"dicom\": {\"timeout_s\": 3601}}", "dicom.timeout_s",
                 "got 3601");
    expect_error("{\"dicom\": {\"max_pdu\": 4095}}", "dicom.max_pdu",
                 "from 4096 to 131072, got 4095");
    expect_error("{\"dicom\": {\"max_pdu\": 131073}}", "dicom.max_pdu",
                 "got 131073");
    expect_error("{\"dicom\": {\"max_associations\": 0}}",
                 "dicom.max_associations", "from 1 to 1024, got 0");
    expect_error("{\"dicom\": {\"max_associations\": 1025}}",
                 "dicom.max_associations", "got 1025");
    expect_error("{\"spool\": {\"min_free_mb\": 99999999}}",
                 "spool.min_free_mb", "got 99999999");
    expect_error("{\"spool\": {\"min_free_mb\": 1e300}}", "spool.min_free_mb",
                 "got 1e+300");
    expect_error("{\"dicom\": {\"port\": 4294967400}}", "dicom.port",
                 "got 4294967400");

    /* Strings with a shape. */
    expect_error("{\"dicom\": {\"ae_title\": \"WAY_TOO_LONG_AE_TITLE\"}}",
                 "dicom.ae_title: ", "expected an AE title");
    expect_error("{\"dicom\": {\"ae_title\": \"A\\\\B\"}}", "dicom.ae_title",
                 "backslash");
    expect_error("{\"dicom\": {\"ae_title\": \"A\\tB\"}}", "dicom.ae_title",
                 "got \"A?B\"");
    expect_error("{\"dicom\": {\"ae_title\": \"A\\nB\"}}", "dicom.ae_title",
                 "got \"A?B\"");
    expect_error("{\"dicom\": {\"ae_title\": \"   \"}}", "dicom.ae_title",
                 NULL);
    expect_error("{\"dicom\": {\"ae_title\": \"\"}}", "dicom.ae_title", NULL);
    expect_error("{\"spool\": {\"dir\": \"relative/path\"}}", "spool.dir: ",
                 "expected an absolute path, got \"relative/path\"");
    expect_error("{\"spool\": {\"dir\": \"\"}}", "spool.dir",
                 "expected an absolute path");
    expect_error("{\"log\": {\"level\": \"verbose\"}}", "log.level: ",
                 "expected one of \"err\", \"warning\", \"notice\", "
                 "\"info\", \"debug\", got \"verbose\"");
    expect_error("{\"log\": {\"level\": \"INFO\"}}", "log.level", NULL);

    /* Duplicates, at every level. */
    expect_error("{\"dicom\": {\"port\": 1}, \"dicom\": {}}",
                 "duplicate key 'dicom'", NULL);
    expect_error("{\"dicom\": {\"port\": 1, \"port\": 2}}",
                 "duplicate key 'dicom.port'", NULL);
    expect_error("{\"spool\": {\"dir\": \"/a\", \"dir\": \"/b\"}}",
                 "duplicate key 'spool.dir'", NULL);
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"ae_title\": \"A\"}], "
                 "\"allowed_callers\": [{\"ae_title\": \"B\"}]}}",
                 "duplicate key 'dicom.allowed_callers'", NULL);

    /* The top level. */
    expect_error("[]", "expected a JSON object at the top level", "got a list");
    expect_error("\"text\"", "top level", "got a string");
    expect_error("42", "top level", "got a number");
    expect_error("null", "top level", "got null");
    expect_error("", "the file is empty", NULL);
    expect_error(" \n\t\r\n", "the file is empty", NULL);

    /* No message buffer is fine too. */
    {
        struct cfg *cfg = NULL;

        CHECK(cfg_parse("[]", 2, &cfg, NULL, 0) == -EINVAL);
        CHECK(cfg == NULL);
    }
}

static void test_callers(void)
{
    const struct cfg_caller *c;
    struct cfg *cfg;

    /* AE title only, hosts only, both. */
    cfg = expect_ok("{\"dicom\": {\"allowed_callers\": [\n"
                    "  {\"ae_title\": \" PACS  \"},\n"
                    "  {\"hosts\": [\"192.0.2.7\"]},\n"
                    "  {\"ae_title\": \"CT1\", \"hosts\": [\"10.0.0.0/8\", "
                    "\"172.16.5.4/32\", \"192.168.1.77/24\"]}\n"
                    "]}}");
    if (cfg != NULL && cfg->dicom.allowed_caller_count == 3) {
        c = &cfg->dicom.allowed_callers[0];
        CHECK(strcmp(c->ae_title, "PACS") == 0);
        CHECK(c->host_count == 0 && c->hosts == NULL);

        c = &cfg->dicom.allowed_callers[1];
        CHECK(c->ae_title == NULL);
        CHECK(c->host_count == 1);
        CHECK(c->hosts[0].addr == 0xc0000207u);
        CHECK(c->hosts[0].mask == 0xffffffffu);
        CHECK(util_ipv4_net_contains(&c->hosts[0], "192.0.2.7"));
        CHECK(!util_ipv4_net_contains(&c->hosts[0], "192.0.2.8"));

        c = &cfg->dicom.allowed_callers[2];
        CHECK(strcmp(c->ae_title, "CT1") == 0);
        CHECK(c->host_count == 3);
        CHECK(c->hosts[0].addr == 0x0a000000u &&
              c->hosts[0].mask == 0xff000000u);
        CHECK(util_ipv4_net_contains(&c->hosts[0], "10.9.8.7"));
        CHECK(!util_ipv4_net_contains(&c->hosts[0], "11.0.0.1"));
        /* /32 is one address. */
        CHECK(c->hosts[1].addr == 0xac100504u &&
              c->hosts[1].mask == 0xffffffffu);
        /* Host bits beyond the prefix are cleared. */
        CHECK(c->hosts[2].addr == 0xc0a80100u &&
              c->hosts[2].mask == 0xffffff00u);
    } else {
        CHECK_MSG(false, "three callers expected");
    }
    cfg_free(cfg);

    /* /0 is every address. */
    cfg = expect_ok("{\"dicom\": {\"allowed_callers\": "
                    "[{\"hosts\": [\"0.0.0.0/0\"]}]}}");
    if (cfg != NULL && cfg->dicom.allowed_caller_count == 1) {
        c = &cfg->dicom.allowed_callers[0];
        CHECK(c->hosts[0].addr == 0 && c->hosts[0].mask == 0);
        CHECK(util_ipv4_net_contains(&c->hosts[0], "203.0.113.9"));
    }
    cfg_free(cfg);

    /* Absent or [] accepts any caller. */
    cfg = expect_ok("{\"dicom\": {\"allowed_callers\": []}}");
    CHECK(cfg != NULL && cfg->dicom.allowed_caller_count == 0 &&
          cfg->dicom.allowed_callers == NULL);
    cfg_free(cfg);

    /* Bad entries. */
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"hosts\": "
                 "[\"10.0.0.0/33\"]}]}}",
                 "dicom.allowed_callers[0].hosts[0]: ",
                 "got \"10.0.0.0/33\" (the prefix length");
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"hosts\": "
                 "[\"10.0.0.0/\"]}]}}",
                 "hosts[0]", "prefix length");
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"hosts\": "
                 "[\"10.0.0.0/8\", \"pacs.example.org\"]}]}}",
                 "dicom.allowed_callers[0].hosts[1]: ",
                 "host names are not accepted: DCMTK 3.6.7 listens on IPv4 "
                 "only, so only IPv4 addresses and CIDR networks are "
                 "accepted");
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"hosts\": "
                 "[\"localhost\"]}]}}",
                 "hosts[0]", "DCMTK 3.6.7 listens on IPv4 only");
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"hosts\": "
                 "[\"::1\"]}]}}",
                 "dicom.allowed_callers[0].hosts[0]: ",
                 "IPv6 is not accepted: DCMTK 3.6.7 listens on IPv4 only");
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"hosts\": "
                 "[\"2001:db8::/32\"]}]}}",
                 "hosts[0]", "IPv6");
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"hosts\": "
                 "[\"::ffff:10.0.0.1\"]}]}}",
                 "hosts[0]", "IPv6");
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"hosts\": "
                 "[\"300.1.2.3\"]}]}}",
                 "hosts[0]", "got \"300.1.2.3\"");
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"hosts\": "
                 "[\"\"]}]}}",
                 "hosts[0]", "expected an IPv4 address");
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"hosts\": [7]}]}}",
                 "hosts[0]", "as a string, got a number");
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"hosts\": "
                 "\"10.0.0.0/8\"}]}}",
                 "dicom.allowed_callers[0].hosts: ", "got a string");
    expect_error(
        "{\"dicom\": {\"allowed_callers\": [{\"hosts\": []}]}}",
        "dicom.allowed_callers[0].hosts: ", "expected a non-empty list");
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"ae_title\": \"X\", "
                 "\"hosts\": []}]}}",
                 "dicom.allowed_callers[0].hosts", "got []");
    expect_error("{\"dicom\": {\"allowed_callers\": [{}]}}",
                 "dicom.allowed_callers[0]: ", "an entry needs");
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"ae_title\": \"A\"}, "
                 "{\"hosts\": [\"10.0.0.1\"]}, {\"hostz\": []}]}}",
                 "unknown key 'dicom.allowed_callers[2].hostz'", NULL);
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"ae_title\": "
                 "\"BAD\\\\AE\"}]}}",
                 "dicom.allowed_callers[0].ae_title: ", "AE title");
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"ae_title\": 3}]}}",
                 "dicom.allowed_callers[0].ae_title", "got a number");
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"ae_title\": \"X\", "
                 "\"ae_title\": \"Y\"}]}}",
                 "duplicate key 'dicom.allowed_callers[0].ae_title'", NULL);
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"hosts\": "
                 "[\"10.0.0.1\"], \"hosts\": [\"10.0.0.2\"]}]}}",
                 "duplicate key 'dicom.allowed_callers[0].hosts'", NULL);
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"ae_title\": \"A\"}, "
                 "\"B\"]}}",
                 "dicom.allowed_callers[1]: ",
                 "expected an object with \"ae_title\" and/or \"hosts\", "
                 "got a string");
    expect_error("{\"dicom\": {\"allowed_callers\": {\"ae_title\": \"A\"}}}",
                 "dicom.allowed_callers: ", "expected a list");
    expect_error("{\"dicom\": {\"allowed_callers\": \"any\"}}",
                 "dicom.allowed_callers", "got a string");
}

/* Writes @len bytes of @text to a new file @path. */
static void write_bytes(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "w");

    CHECK_MSG(f != NULL, "cannot create %s", path);
    if (f == NULL)
        return;
    CHECK(fwrite(text, 1, len, f) == len);
    CHECK(fclose(f) == 0);
}

static void write_text(const char *path, const char *text)
{
    write_bytes(path, text, strlen(text));
}

static void test_load(void)
{
    char dir_tmpl[] = "/tmp/stowbridge-cfg-XXXXXX";
    char path[512];
    struct cfg *cfg = NULL;
    char *dir = mkdtemp(dir_tmpl);
    char *big;
    size_t big_len = 1024 * 1024;
    int r;

    CHECK(dir != NULL);
    if (dir == NULL)
        return;

    /* Missing: the path and strerror. */
    snprintf(path, sizeof(path), "%s/missing.json", dir);
    r = cfg_load(path, &cfg, err, sizeof(err));
    CHECK(r == -ENOENT && cfg == NULL);
    CHECK_MSG(strncmp(err, path, strlen(path)) == 0, "%s", err);
    CHECK_MSG(strstr(err, strerror(ENOENT)) != NULL, "%s", err);

    /* A directory. */
    r = cfg_load(dir, &cfg, err, sizeof(err));
    CHECK(r == -EISDIR && cfg == NULL);
    CHECK_MSG(strncmp(err, dir, strlen(dir)) == 0 &&
                  strstr(err, strerror(EISDIR)) != NULL,
              "%s", err);

    /* Unreadable (root reads anything, so only checked as a user). */
    snprintf(path, sizeof(path), "%s/secret.json", dir);
    write_text(path, "{}");
    CHECK(chmod(path, 0) == 0);
    if (geteuid() != 0) {
        r = cfg_load(path, &cfg, err, sizeof(err));
        CHECK(r == -EACCES && cfg == NULL);
        CHECK_MSG(strstr(err, path) != NULL &&
                      strstr(err, strerror(EACCES)) != NULL,
                  "%s", err);
    }

    /* Exactly 1 MiB is fine; one byte more is too large. */
    big = malloc(big_len + 1);
    CHECK(big != NULL);
    if (big != NULL) {
        memset(big, ' ', big_len + 1);
        big[0] = '{';
        big[big_len - 2] = '}';
        big[big_len - 1] = '\n';
        snprintf(path, sizeof(path), "%s/limit.json", dir);
        write_bytes(path, big, big_len);
        r = cfg_load(path, &cfg, err, sizeof(err));
        CHECK_MSG(r == 0 && cfg != NULL, "%d %s", r, err);
        cfg_free(cfg);
        cfg = NULL;

        snprintf(path, sizeof(path), "%s/big.json", dir);
        write_bytes(path, big, big_len + 1);
        r = cfg_load(path, &cfg, err, sizeof(err));
        CHECK(r == -EFBIG && cfg == NULL);
        CHECK_MSG(strncmp(err, path, strlen(path)) == 0 &&
                      strstr(err, "file too large") != NULL,
                  "%s", err);
        free(big);
    }

    /* A pipe has no size: the limit still holds while reading. */
    {
        int fds[2];

        CHECK(pipe(fds) == 0);
        snprintf(path, sizeof(path), "/dev/fd/%d", fds[0]);
        CHECK(write(fds[1], "{\"dicom\": {\"port\": 77}}", 23) == 23);
        CHECK(close(fds[1]) == 0);
        r = cfg_load(path, &cfg, err, sizeof(err));
        CHECK_MSG(r == 0 && cfg != NULL && cfg->dicom.port == 77, "%s", err);
        cfg_free(cfg);
        cfg = NULL;
        CHECK(close(fds[0]) == 0);
    }

    /* A bad value: the message starts with the path instead of config:. */
    snprintf(path, sizeof(path), "%s/bad.json", dir);
    write_text(path, "{\n  \"dicom\": {\"port\": 99999}\n}\n");
    r = cfg_load(path, &cfg, err, sizeof(err));
    CHECK(r == -EINVAL && cfg == NULL);
    CHECK_MSG(strncmp(err, path, strlen(path)) == 0 &&
                  strstr(err, ": dicom.port: expected an integer from 1 to "
                              "65535, got 99999") != NULL &&
                  strstr(err, "config:") == NULL,
              "%s", err);

    /* A syntax error: the path and the line. */
    snprintf(path, sizeof(path), "%s/syntax.json", dir);
    write_text(path, "{\n  \"dicom\": {\n    \"port\": 104,\n  }\n}\n");
    r = cfg_load(path, &cfg, err, sizeof(err));
    CHECK(r == -EINVAL && cfg == NULL);
    CHECK_MSG(strncmp(err, path, strlen(path)) == 0 &&
                  strstr(err, ": line 4, column 3: syntax error") != NULL,
              "%s", err);

    /* An empty file. */
    snprintf(path, sizeof(path), "%s/empty.json", dir);
    write_text(path, "");
    r = cfg_load(path, &cfg, err, sizeof(err));
    CHECK(r == -EINVAL && cfg == NULL);
    CHECK_MSG(strstr(err, "empty") != NULL, "%s", err);

    /* A good file. */
    snprintf(path, sizeof(path), "%s/good.json", dir);
    write_text(path, "// ok\n{\"dicom\": {\"port\": 4242}}\n");
    r = cfg_load(path, &cfg, err, sizeof(err));
    CHECK_MSG(r == 0 && cfg != NULL && cfg->dicom.port == 4242, "%s", err);
    cfg_free(cfg);

    snprintf(path, sizeof(path), "rm -rf '%s'", dir);
    CHECK(system(path) == 0);
}

/* Captures what @write_fn writes into a new string (caller frees). */
static char *capture(int (*write_fn)(const struct cfg *, FILE *),
                     const struct cfg *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    int r;

    if (f == NULL)
        return NULL;
    r = write_fn(cfg, f);
    if (fclose(f) != 0 || r != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static int write_sample(const struct cfg *cfg, FILE *out)
{
    (void)cfg;
    return cfg_write_sample(out);
}

static void test_dump_round_trip(void)
{
    static const char *const keys[] = {
        "\"dicom\"",
        "\"ae_title\"",
        "\"port\"",
        "\"max_associations\"",
        "\"max_pdu\"",
        "\"timeout_s\"",
        "\"allowed_callers\"",
        "\"spool\"",
        "\"dir\"",
        "\"min_free_mb\"",
        "\"log\"",
        "\"level\"",
    };
    struct cfg *cfg;
    struct cfg *again = NULL;
    struct cfg *defaults = NULL;
    char *dump;

    cfg = expect_ok("{\"dicom\": {\"ae_title\": \" GW \", \"port\": 4242, "
                    "\"max_associations\": 3, \"max_pdu\": 65536, "
                    "\"timeout_s\": 9, \"allowed_callers\": ["
                    "{\"ae_title\": \"CT1\", \"hosts\": [\"10.1.2.3/24\", "
                    "\"192.0.2.7\", \"0.0.0.0/0\"]}, {\"hosts\": "
                    "[\"127.0.0.1\"]}, {\"ae_title\": \"PACS\"}]}, "
                    "\"spool\": {\"dir\": \"/srv/q \\\"x\\\" \\\\ y\", "
                    "\"min_free_mb\": 0}, \"log\": {\"level\": \"notice\"}}");
    if (cfg == NULL)
        return;
    dump = capture(cfg_dump, cfg);
    CHECK(dump != NULL);
    if (dump != NULL) {
        CHECK_MSG(parse(dump, &again) == 0, "%s\n%s", err, dump);
        CHECK(again != NULL && cfg_equal(cfg, again));
        /* Networks come back in their effective form. */
        CHECK(strstr(dump, "\"10.1.2.0/24\"") != NULL);
        CHECK(strstr(dump, "\"192.0.2.7/32\"") != NULL);
        CHECK(strstr(dump, "\"0.0.0.0/0\"") != NULL);
        CHECK(strstr(dump, "\"notice\"") != NULL);
        CHECK(strstr(dump, "//") == NULL);
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
            CHECK_MSG(strstr(dump, keys[i]) != NULL, "%s missing", keys[i]);
    }
    free(dump);
    cfg_free(again);
    cfg_free(cfg);

    /* The defaults dump and parse back to the defaults. */
    again = NULL;
    CHECK(cfg_defaults(&defaults) == 0);
    dump = capture(cfg_dump, defaults);
    CHECK(dump != NULL);
    if (dump != NULL) {
        CHECK_MSG(parse(dump, &again) == 0, "%s", err);
        CHECK(again != NULL && cfg_equal(defaults, again));
        CHECK(strstr(dump, "\"allowed_callers\": []") != NULL);
    }
    free(dump);
    cfg_free(again);
    cfg_free(defaults);
}

/* Reads @path into a new string, or NULL. */
static char *read_file(const char *path)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = fopen(path, "r");
    FILE *mem;
    int c;

    if (f == NULL)
        return NULL;
    mem = open_memstream(&buf, &len);
    if (mem == NULL) {
        fclose(f);
        return NULL;
    }
    while ((c = fgetc(f)) != EOF)
        fputc(c, mem);
    fclose(f);
    if (fclose(mem) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static void test_sample_file(void)
{
    struct cfg *cfg = NULL;
    struct cfg *defaults = NULL;
    char *sample = capture(write_sample, NULL);
    char *committed = read_file(SB_SOURCE_DIR "/config/stowbridge.sample.json");

    CHECK(sample != NULL);
    CHECK_MSG(committed != NULL, "config/stowbridge.sample.json missing");
    if (sample != NULL && committed != NULL)
        CHECK_MSG(strcmp(sample, committed) == 0,
                  "config/stowbridge.sample.json differs from "
                  "'stowbridge sample-config': regenerate it");
    CHECK(cfg_defaults(&defaults) == 0);
    if (sample != NULL) {
        CHECK_MSG(parse(sample, &cfg) == 0, "sample does not parse: %s", err);
        CHECK(cfg != NULL && defaults != NULL && cfg_equal(cfg, defaults));
        /* Documented: every key with its range and default. */
        CHECK(strstr(sample, "// Integer from 1 to 65535; default 11112.") !=
              NULL);
        CHECK(strstr(sample, "default \"STOWBRIDGE\"") != NULL);
        CHECK(strstr(sample, "default \"info\"") != NULL);
        CHECK(strstr(sample, "\"allowed_callers\": []") != NULL);
        CHECK(strstr(sample, "// \"allowed_callers\": [") != NULL);
        /* No line beyond 80 columns. */
        {
            size_t longest = 0;

            for (const char *line = sample; *line;) {
                const char *nl = strchr(line, '\n');
                size_t n = nl != NULL ? (size_t)(nl - line) : strlen(line);

                if (n > longest)
                    longest = n;
                line += n + (nl != NULL);
            }
            CHECK_MSG(longest <= 80, "a sample line has %zu columns", longest);
        }
    }
    if (committed != NULL) {
        struct cfg *c = NULL;

        CHECK_MSG(parse(committed, &c) == 0, "committed sample: %s", err);
        cfg_free(c);
    }
    cfg_free(cfg);
    cfg_free(defaults);
    free(sample);
    free(committed);
}

/* The send side: upload, auth and retry keys, and the checks across keys. */
static void test_send_side(void)
{
    struct cfg *cfg = NULL;

    CHECK(parse("{}", &cfg) == 0);
    CHECK(strcmp(cfg->upload.url, "") == 0);
    CHECK(cfg->upload.workers == 4);
    CHECK(cfg->upload.batch_max_instances == 50);
    CHECK(cfg->upload.batch_max_mb == 100);
    CHECK(cfg->upload.timeout_s == 60);
    CHECK(strcmp(cfg->auth.type, "none") == 0);
    CHECK(strcmp(cfg->auth.client_auth, "body") == 0);
    CHECK(cfg->retry.min_s == 5 && cfg->retry.max_s == 600);
    CHECK(cfg->retry.max_age_h == 168);
    cfg_free(cfg);

    /* Azure: the token URL and the scope are filled in. */
    CHECK_MSG(parse("{\"upload\": {\"url\": \"https://ws-svc.dicom."
                    "azurehealthcareapis.com/v2\", \"workers\": 8},"
                    " \"auth\": {\"type\": \"azure\", \"tenant\": "
                    "\"72f988bf-86f1-41af-91ab-2d7cd011db47\", \"client_id\": "
                    "\"app-1\", \"client_secret\": \"s3cr3t\"}}",
                    &cfg) == 0,
              "%s", err);
    if (cfg != NULL) {
        CHECK(strcmp(cfg->auth.token_url,
                     "https://login.microsoftonline.com/72f988bf-86f1-41af-"
                     "91ab-2d7cd011db47/oauth2/v2.0/token") == 0);
        CHECK(strcmp(cfg->auth.scope,
                     "https://dicom.healthcareapis.azure.com/.default") == 0);
        CHECK(cfg->upload.workers == 8);
        /* The dump masks the secret. */
        char *dump = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&dump, &len);
        CHECK(cfg_dump(cfg, f) == 0);
        fclose(f);
        CHECK(dump != NULL && strstr(dump, "s3cr3t") == NULL &&
              strstr(dump, "\"client_secret\": \"********\"") != NULL);
        free(dump);
        cfg_free(cfg);
    }

    CHECK(parse("{\"auth\": {\"type\": \"client_credentials\", \"token_url\": "
                "\"http://127.0.0.1:8080/token\", \"client_id\": \"c\", "
                "\"client_secret_file\": \"/run/secret\", \"client_auth\": "
                "\"basic\", \"resource\": \"https://x\"}}",
                &cfg) == 0);
    CHECK(cfg != NULL && strcmp(cfg->auth.client_auth, "basic") == 0);
    cfg_free(cfg);
    CHECK(parse("{\"auth\": {\"type\": \"static\", \"token\": \"t\"}}", &cfg) ==
          0);
    cfg_free(cfg);

    expect_error("{\"upload\": {\"url\": \"ftp://x\"}}", "upload.url",
                 "http:// or https:// URL");
    expect_error("{\"upload\": {\"url\": \"https://\"}}", "upload.url", NULL);
    expect_error("{\"upload\": {\"url\": \"https://a b\"}}", "upload.url",
                 NULL);
    expect_error("{\"upload\": {\"workers\": 0}}", "upload.workers", "1 to 64");
    expect_error("{\"upload\": {\"ca_file\": \"certs.pem\"}}", "upload.ca_file",
                 "absolute path");
    expect_error("{\"auth\": {\"type\": \"kerberos\"}}", "auth.type",
                 "none, client_credentials, azure, static");
    expect_error("{\"auth\": {\"client_auth\": \"header\"}}",
                 "auth.client_auth", "body, basic");
    expect_error("{\"auth\": {\"type\": \"client_credentials\", \"client_id\": "
                 "\"c\", \"client_secret\": \"s\"}}",
                 "needs auth.token_url", NULL);
    expect_error("{\"auth\": {\"type\": \"azure\", \"tenant\": \"t\", "
                 "\"client_secret\": \"s\"}}",
                 "needs auth.client_id", NULL);
    expect_error("{\"auth\": {\"type\": \"azure\", \"client_id\": \"c\"}}",
                 "needs auth.tenant", NULL);
    expect_error("{\"auth\": {\"type\": \"azure\", \"client_id\": \"c\", "
                 "\"tenant\": \"a/b\"}}",
                 "auth.tenant", "tenant) ID");
    expect_error("{\"auth\": {\"type\": \"azure\", \"client_id\": \"c\", "
                 "\"tenant\": \"t\", \"client_secret\": \"s\", "
                 "\"client_secret_file\": \"/f\"}}",
                 "not both", NULL);
    expect_error("{\"auth\": {\"type\": \"static\"}}", "needs auth.token",
                 NULL);
    expect_error("{\"retry\": {\"min_s\": 100, \"max_s\": 10}}",
                 "retry.min_s (100) must not exceed retry.max_s (10)", NULL);
    expect_error("{\"retry\": {\"max_age_h\": 0}}", "retry.max_age_h", NULL);
}

/* Secrets from a file, from the systemd credentials directory, or missing. */
static void test_secret_files(void)
{
    char dir_tmpl[] = "/tmp/stowbridge-secret-XXXXXX";
    char *dir = mkdtemp(dir_tmpl);
    char conf[512];
    char secret[512];
    char text[1024];
    struct cfg *cfg = NULL;
    FILE *f;

    CHECK(dir != NULL);
    if (dir == NULL)
        return;
    snprintf(secret, sizeof(secret), "%s/secret", dir);
    snprintf(conf, sizeof(conf), "%s/c.json", dir);
    f = fopen(secret, "w");
    fputs("from-the-file\n", f);
    fclose(f);
    chmod(secret, 0600);

    f = fopen(conf, "w");
    fprintf(f,
            "{\"auth\": {\"type\": \"client_credentials\", \"token_url\": "
            "\"https://idp/token\", \"client_id\": \"c\", "
            "\"client_secret_file\": \"%s\"}}",
            secret);
    fclose(f);
    CHECK_MSG(cfg_load(conf, &cfg, err, sizeof(err)) == 0, "%s", err);
    CHECK(cfg != NULL && strcmp(cfg->auth.client_secret, "from-the-file") == 0);
    cfg_free(cfg);

    chmod(secret, 0644);
    CHECK(cfg_load(conf, &cfg, err, sizeof(err)) == -EPERM);
    CHECK_MSG(strstr(err, "readable by others") != NULL &&
                  strstr(err, "0644") != NULL,
              "%s", err);
    chmod(secret, 0600);

    /* systemd LoadCredential=: used when no secret is configured. */
    f = fopen(conf, "w");
    fputs("{\"auth\": {\"type\": \"azure\", \"tenant\": \"contoso.com\", "
          "\"client_id\": \"c\"}}",
          f);
    fclose(f);
    unsetenv("CREDENTIALS_DIRECTORY");
    CHECK(cfg_load(conf, &cfg, err, sizeof(err)) == -EINVAL);
    CHECK_MSG(strstr(err, "needs a client secret") != NULL &&
                  strstr(err, "client_secret_file") != NULL,
              "%s", err);
    /* status and queue never authenticate: they load without it. */
    CHECK_MSG(cfg_load_without_secrets(conf, &cfg, err, sizeof(err)) == 0, "%s",
              err);
    CHECK(cfg != NULL && cfg->auth.client_secret[0] == '\0');
    cfg_free(cfg);
    snprintf(text, sizeof(text), "%s/client_secret", dir);
    f = fopen(text, "w");
    fputs("from-systemd", f);
    fclose(f);
    setenv("CREDENTIALS_DIRECTORY", dir, 1);
    CHECK_MSG(cfg_load(conf, &cfg, err, sizeof(err)) == 0, "%s", err);
    CHECK(cfg != NULL && strcmp(cfg->auth.client_secret, "from-systemd") == 0);
    cfg_free(cfg);
    unsetenv("CREDENTIALS_DIRECTORY");

    /* An empty secret file. */
    f = fopen(secret, "w");
    fputs("\n", f);
    fclose(f);
    f = fopen(conf, "w");
    fprintf(f,
            "{\"auth\": {\"type\": \"client_credentials\", \"token_url\": "
            "\"https://idp/token\", \"client_id\": \"c\", "
            "\"client_secret_file\": \"%s\"}}",
            secret);
    fclose(f);
    CHECK(cfg_load(conf, &cfg, err, sizeof(err)) == -EINVAL);
    CHECK(strstr(err, "empty") != NULL);

    snprintf(text, sizeof(text), "rm -rf '%s'", dir);
    (void)!system(text);
}

/* upload.on_conflict and retry.max_pause_s (issue 9, items 1 and 10). */
static void test_copies_and_pauses(void)
{
    struct cfg *cfg = expect_ok("{}");

    if (cfg != NULL) {
        CHECK(strcmp(cfg->upload.on_conflict, "keep-first") == 0);
        CHECK(cfg->retry.max_pause_s == 600);
    }
    cfg_free(cfg);
    cfg = expect_ok("{\"upload\": {\"on_conflict\": \"send\"}, "
                    "\"retry\": {\"max_pause_s\": 86400}}");
    if (cfg != NULL) {
        CHECK(strcmp(cfg->upload.on_conflict, "send") == 0);
        CHECK(cfg->retry.max_pause_s == 86400);
    }
    cfg_free(cfg);
    cfg = expect_ok("{\"retry\": {\"max_pause_s\": 1}}");
    CHECK(cfg != NULL && cfg->retry.max_pause_s == 1);
    cfg_free(cfg);
    expect_error("{\"upload\": {\"on_conflict\": \"newest\"}}",
                 "upload.on_conflict", "one of keep-first, send");
    expect_error("{\"upload\": {\"on_conflict\": 1}}", "upload.on_conflict",
                 NULL);
    expect_error("{\"retry\": {\"max_pause_s\": 0}}", "retry.max_pause_s", "1");
    expect_error("{\"retry\": {\"max_pause_s\": 1000000000000}}",
                 "retry.max_pause_s", "86400");
}

/* Storage Commitment keys, dicom.remote_aes and the callers' "commit". */
static void test_commit_keys(void)
{
    struct cfg *cfg =
        expect_ok("{\"dicom\": {\"remote_aes\": [{\"ae_title\": \" CT1 \", "
                  "\"host\": \"127.0.0.1\", \"port\": 104, \"tls\": false}, "
                  "{\"ae_title\": \"MR\", \"host\": \"mr-1.example\", "
                  "\"port\": 11112}], \"allowed_callers\": [{\"ae_title\": "
                  "\"CT1\", \"commit\": false}, {\"ae_title\": \"MR\"}]}, "
                  "\"commit\": {\"max_wait_h\": 2}, \"ledger\": {\"path\": "
                  "\"/tmp/l.db\", \"keep_days\": 7}}");

    CHECK(cfg != NULL);
    if (cfg != NULL) {
        CHECK(cfg->dicom.remote_ae_count == 2);
        CHECK(strcmp(cfg->dicom.remote_aes[0].ae_title, "CT1") == 0);
        CHECK(cfg->dicom.remote_aes[0].port == 104);
        CHECK(strcmp(cfg->dicom.remote_aes[1].host, "mr-1.example") == 0);
        CHECK(!cfg->dicom.allowed_callers[0].commit);
        CHECK(cfg->dicom.allowed_callers[1].commit);
        CHECK(cfg->dicom.allowed_callers[1].find);
        CHECK(cfg->commit.enabled && cfg->commit.max_wait_h == 2);
        CHECK(cfg->commit.report_retry_max_s == 300);
        CHECK(!cfg->commit.same_association);
        CHECK(strcmp(cfg->ledger.path, "/tmp/l.db") == 0);
        CHECK(cfg->ledger.keep_days == 7);
        cfg_free(cfg);
    }
    cfg = expect_ok("{\"commit\": {\"same_association\": true}}");
    CHECK(cfg != NULL && cfg->commit.same_association);
    cfg_free(cfg);
    expect_error("{\"commit\": {\"same_association\": 1}}",
                 "commit.same_association", NULL);
    expect_error("{\"dicom\": {\"remote_aes\": [{\"ae_title\": \"A\", "
                 "\"host\": \"h\", \"port\": 1, \"tls\": true}]}}",
                 "dicom.remote_aes[0]", "dicom.tls.ca_file");
    expect_error("{\"dicom\": {\"remote_aes\": [{\"ae_title\": \"A\", "
                 "\"host\": \"h\"}]}}",
                 "dicom.remote_aes[0]", "\"port\"");
    expect_error("{\"dicom\": {\"remote_aes\": [{\"ae_title\": \"A\", "
                 "\"host\": \"h\", \"port\": 70000}]}}",
                 "dicom.remote_aes[0].port", "1 to 65535");
    expect_error("{\"dicom\": {\"remote_aes\": [{\"ae_title\": \"A\", "
                 "\"host\": \"h/x\", \"port\": 1}]}}",
                 "dicom.remote_aes[0].host", "host name");
    expect_error("{\"dicom\": {\"remote_aes\": [{\"ae_title\": \"A\", "
                 "\"host\": \"h\", \"port\": 1}, {\"ae_title\": \"A\", "
                 "\"host\": \"g\", \"port\": 2}]}}",
                 "dicom.remote_aes[1].ae_title", "already listed");
    expect_error("{\"dicom\": {\"remote_aes\": [{\"ae_title\": \"A\", "
                 "\"host\": \"h\", \"port\": 1, \"x\": 1}]}}",
                 "unknown key 'dicom.remote_aes[0].x'", "\"tls\"");
    expect_error("{\"dicom\": {\"allowed_callers\": [{\"ae_title\": "
                 "\"A\", \"commit\": 1}]}}",
                 "dicom.allowed_callers[0].commit", "true or false");
    expect_error("{\"commit\": {\"max_wait_h\": 0}}", "commit.max_wait_h", "1");
    expect_error("{\"ledger\": {\"path\": \"rel.db\"}}", "ledger.path", "");
}

int main(void)
{
    test_defaults();
    test_every_key();
    test_comments();
    test_syntax_errors();
    test_non_json_numbers();
    test_errors();
    test_callers();
    test_load();
    test_dump_round_trip();
    test_sample_file();
    test_send_side();
    test_secret_files();
    test_copies_and_pauses();
    test_commit_keys();
    return tap_done();
}
