/*
 * config - see config.h.
 *
 * One table row per key (cfg_keys[]) drives parsing, defaults, the dump
 * and the sample file. Comments are blanked out (newlines kept) before
 * cJSON parses the text, so cJSON's error position maps to the right line
 * and column of the original file.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "log.h"

#define CFG_FILE_MAX (1024 * 1024)

enum cfg_type {
    CFG_STRING,     /* char * */
    CFG_UINT,       /* unsigned */
    CFG_LEVEL,      /* int, enum log_level */
    CFG_CALLERS,    /* struct cfg_caller *, with a count after it */
};

enum cfg_check {
    CFG_CHECK_NONE,
    CFG_CHECK_AE_TITLE,
    CFG_CHECK_ABS_PATH,
};

struct cfg_key {
    const char *section;
    const char *name;
    enum cfg_type type;
    size_t offset;
    const char *def_string;
    unsigned def_uint;
    unsigned min;
    unsigned max;
    enum cfg_check check;
    bool secret;
    const char *doc;
};

#define CFG_OFF(field) offsetof(struct cfg, field)

static const struct cfg_key cfg_keys[] = {
    { "dicom", "ae_title", CFG_STRING, CFG_OFF(dicom.ae_title), "STOWBRIDGE",
      0, 0, 0, CFG_CHECK_AE_TITLE, false,
      "Our AE title (1-16 characters, no backslash). Associations that call "
      "another title are rejected." },
    { "dicom", "port", CFG_UINT, CFG_OFF(dicom.port), NULL, 11112, 1, 65535,
      CFG_CHECK_NONE, false,
      "TCP port of the DIMSE service. DCMTK 3.6.7 listens on IPv4 only, on "
      "every interface." },
    { "dicom", "max_associations", CFG_UINT, CFG_OFF(dicom.max_associations),
      NULL, 16, 1, 1024, CFG_CHECK_NONE, false,
      "Associations served at once; one more is rejected as transient "
      "(local limit exceeded)." },
    { "dicom", "max_pdu", CFG_UINT, CFG_OFF(dicom.max_pdu), NULL, 116794,
      4096, 131072, CFG_CHECK_NONE, false,
      "Maximum PDU length we receive." },
    { "dicom", "timeout_s", CFG_UINT, CFG_OFF(dicom.timeout_s), NULL, 30, 1,
      3600, CFG_CHECK_NONE, false,
      "ACSE, DIMSE and socket timeout, and the idle limit of an "
      "association, in seconds." },
    { "dicom", "allowed_callers", CFG_CALLERS,
      CFG_OFF(dicom.allowed_callers), NULL, 0, 0, 0, CFG_CHECK_NONE, false,
      "Who may associate: a list of {\"ae_title\": \"CT1\", \"hosts\": "
      "[\"10.0.0.0/8\", \"192.0.2.7\"]}. A caller is accepted when one entry "
      "matches its calling AE title (if the entry names one) and its IPv4 "
      "address (if the entry lists hosts). Empty: anyone." },
    { "spool", "dir", CFG_STRING, CFG_OFF(spool.dir), "/var/spool/stowbridge",
      0, 0, 0, CFG_CHECK_ABS_PATH, false,
      "The spool directory (absolute path; created 0700 if missing)." },
    { "spool", "min_free_mb", CFG_UINT, CFG_OFF(spool.min_free_mb), NULL, 512,
      0, 1048576, CFG_CHECK_NONE, false,
      "Below this much free space (MiB) on the spool's file system, every "
      "C-STORE is refused with A700 (out of resources)." },
    { "log", "level", CFG_LEVEL, CFG_OFF(log.level), "info", 0, 0, 0,
      CFG_CHECK_NONE, false,
      "Most verbose level logged: err, warning, notice, info or debug." },
};

#define CFG_KEY_COUNT (sizeof(cfg_keys) / sizeof(cfg_keys[0]))

static const char *const cfg_sections[] = { "dicom", "spool", "log" };

#define CFG_SECTION_COUNT (sizeof(cfg_sections) / sizeof(cfg_sections[0]))

static void cfg_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void cfg_err(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || err_len == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

static void *cfg_field(struct cfg *cfg, const struct cfg_key *key)
{
    return (char *)cfg + key->offset;
}

static const void *cfg_cfield(const struct cfg *cfg, const struct cfg_key *key)
{
    return (const char *)cfg + key->offset;
}

static size_t *cfg_caller_count(struct cfg *cfg)
{
    return &cfg->dicom.allowed_caller_count;
}

static void cfg_free_callers(struct cfg_caller *callers, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        free(callers[i].ae_title);
        free(callers[i].hosts);
    }
    free(callers);
}

void cfg_free(struct cfg *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < CFG_KEY_COUNT; i++) {
        const struct cfg_key *key = &cfg_keys[i];
        if (key->type == CFG_STRING)
            free(*(char **)cfg_field(cfg, key));
    }
    cfg_free_callers(cfg->dicom.allowed_callers,
                     cfg->dicom.allowed_caller_count);
    free(cfg);
}

int cfg_defaults(struct cfg **ret_cfg)
{
    struct cfg *cfg = calloc(1, sizeof(*cfg));

    if (cfg == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < CFG_KEY_COUNT; i++) {
        const struct cfg_key *key = &cfg_keys[i];
        enum log_level level;

        switch (key->type) {
        case CFG_STRING:
            *(char **)cfg_field(cfg, key) = strdup(key->def_string);
            if (*(char **)cfg_field(cfg, key) == NULL) {
                cfg_free(cfg);
                return -ENOMEM;
            }
            break;
        case CFG_UINT:
            *(unsigned *)cfg_field(cfg, key) = key->def_uint;
            break;
        case CFG_LEVEL:
            (void)log_level_parse(key->def_string, &level);
            *(int *)cfg_field(cfg, key) = (int)level;
            break;
        case CFG_CALLERS:
            break;
        }
    }
    *ret_cfg = cfg;
    return 0;
}

/* Levenshtein distance of two short strings, capped at 9. */
static unsigned cfg_distance(const char *a, const char *b)
{
    size_t la = strlen(a);
    size_t lb = strlen(b);
    unsigned row[64];

    if (la >= 63 || lb >= 63)
        return 9;
    for (size_t j = 0; j <= lb; j++)
        row[j] = (unsigned)j;
    for (size_t i = 1; i <= la; i++) {
        unsigned prev = row[0];
        row[0] = (unsigned)i;
        for (size_t j = 1; j <= lb; j++) {
            unsigned cur = row[j];
            unsigned best = prev + (a[i - 1] == b[j - 1] ? 0 : 1);
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            prev = cur;
        }
    }
    return row[lb] > 9 ? 9 : row[lb];
}

static void cfg_unknown_key(const char *path, char *err, size_t err_len)
{
    const char *best = NULL;
    char best_path[96];
    unsigned best_d = 3;

    for (size_t i = 0; i < CFG_KEY_COUNT; i++) {
        char candidate[96];
        snprintf(candidate, sizeof(candidate), "%s.%s", cfg_keys[i].section,
                 cfg_keys[i].name);
        unsigned d = cfg_distance(path, candidate);
        if (d < best_d) {
            best_d = d;
            snprintf(best_path, sizeof(best_path), "%s", candidate);
            best = best_path;
        }
    }
    for (size_t i = 0; i < CFG_SECTION_COUNT; i++) {
        unsigned d = cfg_distance(path, cfg_sections[i]);
        if (d < best_d) {
            best_d = d;
            snprintf(best_path, sizeof(best_path), "%s", cfg_sections[i]);
            best = best_path;
        }
    }
    if (best != NULL)
        cfg_err(err, err_len, "config: unknown key '%s' (did you mean '%s'?)",
                path, best);
    else
        cfg_err(err, err_len, "config: unknown key '%s'", path);
}

static const char *cfg_json_type(const cJSON *item)
{
    if (cJSON_IsString(item))
        return "a string";
    if (cJSON_IsNumber(item))
        return "a number";
    if (cJSON_IsBool(item))
        return "a boolean";
    if (cJSON_IsNull(item))
        return "null";
    if (cJSON_IsArray(item))
        return "a list";
    if (cJSON_IsObject(item))
        return "an object";
    return "something else";
}

/* True if the object @obj has two members named like @item. */
static bool cfg_duplicate(const cJSON *obj, const cJSON *item)
{
    for (const cJSON *c = obj->child; c != item; c = c->next)
        if (strcmp(c->string, item->string) == 0)
            return true;
    return false;
}

/* Reads an exact non-negative integer from a JSON number. */
static bool cfg_json_uint(const cJSON *item, unsigned long long *ret)
{
    double v;

    if (!cJSON_IsNumber(item))
        return false;
    v = item->valuedouble;
    if (v < 0 || v > 1e15 || v != (double)(unsigned long long)v)
        return false;
    *ret = (unsigned long long)v;
    return true;
}

static int cfg_parse_callers(struct cfg *cfg, const cJSON *list,
                             char *err, size_t err_len)
{
    size_t n = (size_t)cJSON_GetArraySize(list);
    struct cfg_caller *callers;
    size_t index = 0;
    const cJSON *item;

    if (!cJSON_IsArray(list)) {
        cfg_err(err, err_len,
                "config: dicom.allowed_callers: expected a list of "
                "{\"ae_title\": ..., \"hosts\": [...]} objects, got %s",
                cfg_json_type(list));
        return -EINVAL;
    }
    if (n == 0)
        return 0;
    callers = calloc(n, sizeof(*callers));
    if (callers == NULL)
        return -ENOMEM;
    cfg->dicom.allowed_callers = callers;

    cJSON_ArrayForEach(item, list) {
        struct cfg_caller *caller = &callers[index];
        const cJSON *member;
        bool has_ae = false;
        bool has_hosts = false;

        *cfg_caller_count(cfg) = ++index;
        if (!cJSON_IsObject(item)) {
            cfg_err(err, err_len,
                    "config: dicom.allowed_callers[%zu]: expected an object "
                    "with \"ae_title\" and/or \"hosts\", got %s",
                    index - 1, cfg_json_type(item));
            return -EINVAL;
        }
        cJSON_ArrayForEach(member, item) {
            if (cfg_duplicate(item, member)) {
                cfg_err(err, err_len,
                        "config: duplicate key 'dicom.allowed_callers[%zu].%s'",
                        index - 1, member->string);
                return -EINVAL;
            }
            if (strcmp(member->string, "ae_title") == 0) {
                char trimmed[UTIL_AE_TITLE_MAX + 1];
                if (!cJSON_IsString(member) ||
                    !util_ae_title_valid(member->valuestring)) {
                    cfg_err(err, err_len,
                            "config: dicom.allowed_callers[%zu].ae_title: "
                            "expected an AE title (1-16 characters, no "
                            "backslash or control characters)",
                            index - 1);
                    return -EINVAL;
                }
                (void)util_trim_copy(trimmed, sizeof(trimmed),
                                     member->valuestring);
                caller->ae_title = strdup(trimmed);
                if (caller->ae_title == NULL)
                    return -ENOMEM;
                has_ae = true;
            } else if (strcmp(member->string, "hosts") == 0) {
                size_t hn = (size_t)cJSON_GetArraySize(member);
                const cJSON *host;
                if (!cJSON_IsArray(member)) {
                    cfg_err(err, err_len,
                            "config: dicom.allowed_callers[%zu].hosts: "
                            "expected a list of IPv4 addresses or networks, "
                            "got %s",
                            index - 1, cfg_json_type(member));
                    return -EINVAL;
                }
                if (hn > 0) {
                    caller->hosts = calloc(hn, sizeof(*caller->hosts));
                    if (caller->hosts == NULL)
                        return -ENOMEM;
                }
                cJSON_ArrayForEach(host, member) {
                    size_t h = caller->host_count;
                    if (!cJSON_IsString(host) ||
                        util_ipv4_net_parse(host->valuestring,
                                            &caller->hosts[h]) < 0) {
                        cfg_err(err, err_len,
                                "config: dicom.allowed_callers[%zu].hosts[%zu]: "
                                "expected an IPv4 address or network such as "
                                "\"192.0.2.7\" or \"10.0.0.0/8\" (DCMTK 3.6.7 "
                                "listens on IPv4 only; host names are not "
                                "accepted)",
                                index - 1, h);
                        return -EINVAL;
                    }
                    caller->host_count++;
                }
                has_hosts = hn > 0;
            } else {
                cfg_err(err, err_len,
                        "config: unknown key 'dicom.allowed_callers[%zu].%s' "
                        "(an entry takes \"ae_title\" and \"hosts\")",
                        index - 1, member->string);
                return -EINVAL;
            }
        }
        if (!has_ae && !has_hosts) {
            cfg_err(err, err_len,
                    "config: dicom.allowed_callers[%zu]: an entry needs "
                    "\"ae_title\" or a non-empty \"hosts\" list",
                    index - 1);
            return -EINVAL;
        }
    }
    return 0;
}

static int cfg_parse_value(struct cfg *cfg, const struct cfg_key *key,
                           const cJSON *item, char *err, size_t err_len)
{
    unsigned long long v;
    enum log_level level;
    char trimmed[UTIL_AE_TITLE_MAX + 1];
    char **str;

    switch (key->type) {
    case CFG_STRING:
        if (!cJSON_IsString(item)) {
            cfg_err(err, err_len, "config: %s.%s: expected a string, got %s",
                    key->section, key->name, cfg_json_type(item));
            return -EINVAL;
        }
        str = (char **)cfg_field(cfg, key);
        if (key->check == CFG_CHECK_AE_TITLE) {
            if (!util_ae_title_valid(item->valuestring)) {
                cfg_err(err, err_len,
                        "config: %s.%s: expected an AE title (1-16 "
                        "characters, no backslash or control characters)",
                        key->section, key->name);
                return -EINVAL;
            }
            (void)util_trim_copy(trimmed, sizeof(trimmed), item->valuestring);
            free(*str);
            *str = strdup(trimmed);
        } else {
            if (key->check == CFG_CHECK_ABS_PATH &&
                item->valuestring[0] != '/') {
                cfg_err(err, err_len,
                        "config: %s.%s: expected an absolute path, got '%s'",
                        key->section, key->name, item->valuestring);
                return -EINVAL;
            }
            free(*str);
            *str = strdup(item->valuestring);
        }
        return *str == NULL ? -ENOMEM : 0;
    case CFG_UINT:
        if (!cJSON_IsNumber(item)) {
            cfg_err(err, err_len,
                    "config: %s.%s: expected an integer from %u to %u, got %s",
                    key->section, key->name, key->min, key->max,
                    cfg_json_type(item));
            return -EINVAL;
        }
        if (!cfg_json_uint(item, &v) || v < key->min || v > key->max) {
            cfg_err(err, err_len,
                    "config: %s.%s: expected an integer from %u to %u, got %g",
                    key->section, key->name, key->min, key->max,
                    item->valuedouble);
            return -EINVAL;
        }
        *(unsigned *)cfg_field(cfg, key) = (unsigned)v;
        return 0;
    case CFG_LEVEL:
        if (!cJSON_IsString(item) ||
            log_level_parse(item->valuestring, &level) < 0) {
            cfg_err(err, err_len,
                    "config: %s.%s: expected one of \"err\", \"warning\", "
                    "\"notice\", \"info\", \"debug\"",
                    key->section, key->name);
            return -EINVAL;
        }
        *(int *)cfg_field(cfg, key) = (int)level;
        return 0;
    case CFG_CALLERS:
        return cfg_parse_callers(cfg, item, err, err_len);
    }
    return -EINVAL;
}

/* Replaces comments outside strings with spaces, keeping newlines.
 * Returns 0, or -EINVAL for an unterminated block comment. */
static int cfg_blank_comments(char *text, size_t len, size_t *ret_line)
{
    bool in_string = false;
    size_t line = 1;

    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '\n')
            line++;
        if (in_string) {
            if (c == '\\' && i + 1 < len)
                i++;
            else if (c == '"')
                in_string = false;
            continue;
        }
        if (c == '"') {
            in_string = true;
        } else if (c == '/' && i + 1 < len && text[i + 1] == '/') {
            while (i < len && text[i] != '\n')
                text[i++] = ' ';
            i--;
        } else if (c == '/' && i + 1 < len && text[i + 1] == '*') {
            size_t start_line = line;
            text[i] = text[i + 1] = ' ';
            i += 2;
            while (i + 1 < len && !(text[i] == '*' && text[i + 1] == '/')) {
                if (text[i] == '\n')
                    line++;
                else
                    text[i] = ' ';
                i++;
            }
            if (i + 1 >= len) {
                *ret_line = start_line;
                return -EINVAL;
            }
            text[i] = text[i + 1] = ' ';
            i++;
        }
    }
    return 0;
}

int cfg_parse(const char *text, size_t len, struct cfg **ret_cfg, char *err,
              size_t err_len)
{
    struct cfg *cfg = NULL;
    cJSON *root = NULL;
    const char *end = NULL;
    const cJSON *section;
    size_t bad_line = 0;
    char *copy;
    int r;

    copy = malloc(len + 1);
    if (copy == NULL)
        return -ENOMEM;
    memcpy(copy, text, len);
    copy[len] = '\0';
    if (strlen(copy) != len) {
        cfg_err(err, err_len, "config: the file contains a NUL byte");
        r = -EINVAL;
        goto out;
    }
    if (cfg_blank_comments(copy, len, &bad_line) < 0) {
        cfg_err(err, err_len, "config: line %zu: unterminated /* comment",
                bad_line);
        r = -EINVAL;
        goto out;
    }
    root = cJSON_ParseWithOpts(copy, &end, true);
    if (root == NULL) {
        size_t pos = end != NULL && end >= copy ? (size_t)(end - copy) : 0;
        size_t line = 1;
        size_t col = 1;
        bool blank = true;

        for (size_t i = 0; i < len; i++)
            if (copy[i] != ' ' && copy[i] != '\n' && copy[i] != '\t' &&
                copy[i] != '\r')
                blank = false;
        if (blank) {
            cfg_err(err, err_len, "config: the file is empty (expected a "
                                  "JSON object, at least {})");
            r = -EINVAL;
            goto out;
        }
        if (pos > len)
            pos = len;
        for (size_t i = 0; i < pos; i++) {
            if (copy[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        cfg_err(err, err_len, "config: line %zu, column %zu: syntax error "
                              "near '%.20s'",
                line, col, copy + pos);
        r = -EINVAL;
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        cfg_err(err, err_len, "config: expected a JSON object at the top "
                              "level, got %s", cfg_json_type(root));
        r = -EINVAL;
        goto out;
    }
    r = cfg_defaults(&cfg);
    if (r < 0)
        goto out;

    cJSON_ArrayForEach(section, root) {
        const cJSON *item;
        bool known = false;

        for (size_t s = 0; s < CFG_SECTION_COUNT; s++)
            known = known || strcmp(section->string, cfg_sections[s]) == 0;
        if (!known) {
            cfg_unknown_key(section->string, err, err_len);
            r = -EINVAL;
            goto out;
        }
        if (cfg_duplicate(root, section)) {
            cfg_err(err, err_len, "config: duplicate key '%s'",
                    section->string);
            r = -EINVAL;
            goto out;
        }
        if (!cJSON_IsObject(section)) {
            cfg_err(err, err_len, "config: %s: expected an object, got %s",
                    section->string, cfg_json_type(section));
            r = -EINVAL;
            goto out;
        }
        cJSON_ArrayForEach(item, section) {
            const struct cfg_key *key = NULL;
            char path[160];

            snprintf(path, sizeof(path), "%s.%s", section->string,
                     item->string);
            for (size_t k = 0; k < CFG_KEY_COUNT && key == NULL; k++)
                if (strcmp(cfg_keys[k].section, section->string) == 0 &&
                    strcmp(cfg_keys[k].name, item->string) == 0)
                    key = &cfg_keys[k];
            if (key == NULL) {
                cfg_unknown_key(path, err, err_len);
                r = -EINVAL;
                goto out;
            }
            if (cfg_duplicate(section, item)) {
                cfg_err(err, err_len, "config: duplicate key '%s'", path);
                r = -EINVAL;
                goto out;
            }
            r = cfg_parse_value(cfg, key, item, err, err_len);
            if (r < 0)
                goto out;
        }
    }
    *ret_cfg = cfg;
    cfg = NULL;
    r = 0;

out:
    cfg_free(cfg);
    cJSON_Delete(root);
    free(copy);
    return r;
}

int cfg_load(const char *path, struct cfg **ret_cfg, char *err,
             size_t err_len)
{
    char inner[768];
    struct stat st;
    char *text = NULL;
    size_t len = 0;
    int fd;
    int r;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        r = -errno;
        cfg_err(err, err_len, "%s: cannot open: %s", path, strerror(-r));
        return r;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        cfg_err(err, err_len, "%s: not a regular file", path);
        close(fd);
        return -EINVAL;
    }
    if (st.st_size > CFG_FILE_MAX) {
        cfg_err(err, err_len, "%s: file too large (over %d bytes)", path,
                CFG_FILE_MAX);
        close(fd);
        return -EFBIG;
    }
    text = malloc((size_t)st.st_size + 1);
    if (text == NULL) {
        close(fd);
        return -ENOMEM;
    }
    while (len < (size_t)st.st_size) {
        ssize_t n = read(fd, text + len, (size_t)st.st_size - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            r = n < 0 ? -errno : -EIO;
            cfg_err(err, err_len, "%s: cannot read: %s", path, strerror(-r));
            free(text);
            close(fd);
            return r;
        }
        len += (size_t)n;
    }
    close(fd);

    inner[0] = '\0';
    r = cfg_parse(text, len, ret_cfg, inner, sizeof(inner));
    free(text);
    if (r < 0) {
        const char *msg = strncmp(inner, "config: ", 8) == 0 ? inner + 8
                                                             : inner;
        cfg_err(err, err_len, "%s: %s", path, msg);
    }
    return r;
}

static void cfg_put_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(out, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(out, "\\u%04x", (unsigned char)*s);
        else
            fputc(*s, out);
    }
    fputc('"', out);
}

static void cfg_put_net(FILE *out, const struct util_ipv4_net *net)
{
    unsigned prefix = 0;

    for (uint32_t m = net->mask; m & 0x80000000u; m <<= 1)
        prefix++;
    fprintf(out, "\"%u.%u.%u.%u/%u\"", net->addr >> 24, (net->addr >> 16) & 255,
            (net->addr >> 8) & 255, net->addr & 255, prefix);
}

static void cfg_put_callers(FILE *out, const struct cfg *cfg)
{
    fputc('[', out);
    for (size_t i = 0; i < cfg->dicom.allowed_caller_count; i++) {
        const struct cfg_caller *c = &cfg->dicom.allowed_callers[i];
        fprintf(out, "%s{", i == 0 ? "" : ", ");
        if (c->ae_title != NULL) {
            fputs("\"ae_title\": ", out);
            cfg_put_string(out, c->ae_title);
        }
        if (c->host_count > 0) {
            fprintf(out, "%s\"hosts\": [", c->ae_title != NULL ? ", " : "");
            for (size_t h = 0; h < c->host_count; h++) {
                if (h > 0)
                    fputs(", ", out);
                cfg_put_net(out, &c->hosts[h]);
            }
            fputc(']', out);
        }
        fputc('}', out);
    }
    fputc(']', out);
}

static void cfg_put_value(FILE *out, const struct cfg *cfg,
                          const struct cfg_key *key)
{
    switch (key->type) {
    case CFG_STRING:
        if (key->secret)
            fputs("\"********\"", out);
        else
            cfg_put_string(out, *(char *const *)cfg_cfield(cfg, key));
        break;
    case CFG_UINT:
        fprintf(out, "%u", *(const unsigned *)cfg_cfield(cfg, key));
        break;
    case CFG_LEVEL:
        cfg_put_string(out, log_level_name(
                                (enum log_level)*(const int *)cfg_cfield(
                                    cfg, key)));
        break;
    case CFG_CALLERS:
        cfg_put_callers(out, cfg);
        break;
    }
}

int cfg_dump(const struct cfg *cfg, FILE *out)
{
    fputs("{\n", out);
    for (size_t s = 0; s < CFG_SECTION_COUNT; s++) {
        bool first = true;
        fprintf(out, "    \"%s\": {\n", cfg_sections[s]);
        for (size_t k = 0; k < CFG_KEY_COUNT; k++) {
            const struct cfg_key *key = &cfg_keys[k];
            if (strcmp(key->section, cfg_sections[s]) != 0)
                continue;
            fprintf(out, "%s        \"%s\": ", first ? "" : ",\n", key->name);
            cfg_put_value(out, cfg, key);
            first = false;
        }
        fprintf(out, "\n    }%s\n", s + 1 < CFG_SECTION_COUNT ? "," : "");
    }
    fputs("}\n", out);
    return ferror(out) ? -EIO : 0;
}

/* Writes @text as // comment lines of at most ~76 columns, indented. */
static void cfg_put_comment(FILE *out, const char *indent, const char *text)
{
    while (*text) {
        size_t len = strlen(text);
        size_t cut = len;
        if (len > 68) {
            cut = 68;
            while (cut > 0 && text[cut] != ' ')
                cut--;
            if (cut == 0)
                cut = 68;
        }
        fprintf(out, "%s// %.*s\n", indent, (int)cut, text);
        text += cut;
        while (*text == ' ')
            text++;
    }
}

int cfg_write_sample(FILE *out)
{
    struct cfg *defaults = NULL;
    int r = cfg_defaults(&defaults);

    if (r < 0)
        return r;
    fputs("// stowbridge configuration. JSON with // and /* */ comments.\n"
          "// Every key is shown with its default; delete what you do not\n"
          "// change. Unknown keys are errors. Generated by\n"
          "// 'stowbridge sample-config'.\n"
          "{\n", out);
    for (size_t s = 0; s < CFG_SECTION_COUNT; s++) {
        bool first = true;
        fprintf(out, "    \"%s\": {\n", cfg_sections[s]);
        for (size_t k = 0; k < CFG_KEY_COUNT; k++) {
            const struct cfg_key *key = &cfg_keys[k];
            char range[96];
            if (strcmp(key->section, cfg_sections[s]) != 0)
                continue;
            if (!first)
                fputs(",\n", out);
            cfg_put_comment(out, "        ", key->doc);
            if (key->type == CFG_UINT) {
                snprintf(range, sizeof(range), "Integer %u-%u, default %u.",
                         key->min, key->max, key->def_uint);
                cfg_put_comment(out, "        ", range);
            } else if (key->type == CFG_CALLERS) {
                cfg_put_comment(out, "        ",
                                "Example: [{\"ae_title\": \"CT1\", \"hosts\": "
                                "[\"10.1.2.0/24\"]}, {\"ae_title\": "
                                "\"PACS\"}]");
            }
            fprintf(out, "        \"%s\": ", key->name);
            cfg_put_value(out, defaults, key);
            first = false;
        }
        fprintf(out, "\n    }%s\n", s + 1 < CFG_SECTION_COUNT ? "," : "");
    }
    fputs("}\n", out);
    cfg_free(defaults);
    return ferror(out) ? -EIO : 0;
}
