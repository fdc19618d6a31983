/*
 * main - the stowbridge program and its subcommands (DESIGN.md section 9).
 *
 *   stowbridge run --config FILE            the daemon, in the foreground
 *   stowbridge status --config FILE [--json]
 *   stowbridge check --config FILE [--dump]
 *   stowbridge sample-config
 *
 * Exit status: 0 success, 1 runtime failure, 2 usage or configuration
 * error.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "daemon.h"
#include "log.h"
#include "scp.h"
#include "spool.h"
#include "status.h"
#include "util.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

struct main_cmd {
    const char *name;
    const char *usage;
    const char *summary;
};

static const struct main_cmd main_cmds[] = {
    { "run", "run --config FILE",
      "Run the daemon in the foreground (systemd Type=notify): receive\n"
      "  C-ECHO and C-STORE into the spool. SIGTERM/SIGINT stop it\n"
      "  gracefully." },
    { "status", "status --config FILE [--json]",
      "Print count, bytes and oldest age (seconds) of each spool state.\n"
      "  Safe while the daemon runs." },
    { "check", "check --config FILE [--dump]",
      "Validate the configuration, open the spool and check that it is\n"
      "  writable, and that the DICOM port can be bound. --dump prints\n"
      "  the effective configuration (secrets masked)." },
    { "sample-config", "sample-config",
      "Print the documented sample configuration with every key and\n"
      "  its default." },
};

#define MAIN_CMD_COUNT (sizeof(main_cmds) / sizeof(main_cmds[0]))

static void main_usage(FILE *out)
{
    fprintf(out, "stowbridge %s - DICOM DIMSE to DICOMweb bridge\n\n"
                 "Usage:\n", STOWBRIDGE_VERSION);
    for (size_t i = 0; i < MAIN_CMD_COUNT; i++)
        fprintf(out, "  stowbridge %s\n  %s\n\n", main_cmds[i].usage,
                main_cmds[i].summary);
    fprintf(out, "  stowbridge --version | --help\n\n"
                 "Exit status: 0 success, 1 runtime failure, "
                 "2 usage or configuration error.\n");
}

struct main_opts {
    const char *config_path;
    bool json;
    bool dump;
};

/* Parses the options after the subcommand. Returns 0, 1 for --help, or
 * -EINVAL after printing the problem. */
static int main_parse_opts(const char *cmd, int argc, char **argv,
                           struct main_opts *opts)
{
    static const struct option long_opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "json", no_argument, NULL, 'j' },
        { "dump", no_argument, NULL, 'd' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;

    memset(opts, 0, sizeof(*opts));
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "c:h", long_opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            opts->config_path = optarg;
            break;
        case 'j':
            if (strcmp(cmd, "status") != 0)
                goto bad_option;
            opts->json = true;
            break;
        case 'd':
            if (strcmp(cmd, "check") != 0)
                goto bad_option;
            opts->dump = true;
            break;
        case 'h':
            return 1;
        default:
            goto bad_option;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "stowbridge %s: unexpected argument '%s'\n", cmd,
                argv[optind]);
        return -EINVAL;
    }
    return 0;

bad_option:
    fprintf(stderr, "stowbridge %s: unknown or misplaced option '%s'\n", cmd,
            argv[optind - 1]);
    return -EINVAL;
}

static int main_load_config(const struct main_opts *opts, const char *cmd,
                            struct cfg **ret_cfg)
{
    char err[1024];

    if (opts->config_path == NULL) {
        fprintf(stderr, "stowbridge %s: --config FILE is required\n", cmd);
        return -EINVAL;
    }
    if (cfg_load(opts->config_path, ret_cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "stowbridge: %s\n", err);
        return -EINVAL;
    }
    return 0;
}

/* `check`: each dependency in turn, saying which one fails and why. */
static int main_check(const struct cfg *cfg, bool dump)
{
    struct spool *spool = NULL;
    struct scp *scp = NULL;
    struct scp_params params;
    char err[512];
    char id[SPOOL_ID_MAX];
    uint64_t free_mb = 0;
    int failures = 0;
    int fd;
    int r;

    printf("config: ok\n");
    if (dump && cfg_dump(cfg, stdout) < 0)
        failures++;

    r = spool_open(cfg->spool.dir, SPOOL_OPEN_OWNER, &spool, err, sizeof(err));
    if (r == -EWOULDBLOCK) {
        /* The daemon owns it: check it read-only instead. */
        printf("spool: %s is in use by the running daemon (ok)\n",
               cfg->spool.dir);
        r = spool_open(cfg->spool.dir, 0, &spool, err, sizeof(err));
    }
    if (r < 0) {
        printf("spool: FAILED: %s\n", err);
        failures++;
    } else {
        r = spool_tmp_create(spool, id, &fd, err, sizeof(err));
        if (r < 0) {
            printf("spool: FAILED: not writable: %s\n", err);
            failures++;
        } else {
            spool_discard(spool, id, fd);
            if (spool_free_mb(spool, &free_mb) == 0 &&
                free_mb < cfg->spool.min_free_mb) {
                printf("spool: FAILED: %llu MiB free, below spool.min_free_mb "
                       "(%u): every C-STORE would be refused with A700\n",
                       (unsigned long long)free_mb, cfg->spool.min_free_mb);
                failures++;
            } else {
                printf("spool: ok (%s, %llu MiB free)\n", cfg->spool.dir,
                       (unsigned long long)free_mb);
            }
        }
    }

    r = scp_global_init(err, sizeof(err));
    if (r == 0 && spool != NULL) {
        memset(&params, 0, sizeof(params));
        params.ae_title = cfg->dicom.ae_title;
        params.port = (uint16_t)cfg->dicom.port;
        params.max_associations = cfg->dicom.max_associations;
        params.max_pdu = cfg->dicom.max_pdu;
        params.timeout_s = cfg->dicom.timeout_s;
        params.spool = spool;
        r = scp_new(&params, &scp, err, sizeof(err));
    }
    if (r < 0) {
        printf("dicom: FAILED: %s\n", err);
        failures++;
    } else if (scp != NULL) {
        printf("dicom: ok (port %u can be bound, AE title %s)\n",
               cfg->dicom.port, cfg->dicom.ae_title);
    }
    scp_free(scp);
    spool_close(spool);

    printf("upload: not configured: receive-only (uploads are not built "
           "yet)\n");
    return failures == 0 ? 0 : EXIT_RUNTIME;
}

int main(int argc, char **argv)
{
    struct main_opts opts;
    struct cfg *cfg = NULL;
    const char *cmd;
    int status;
    int r;

    if (argc < 2) {
        main_usage(stderr);
        return EXIT_USAGE;
    }
    cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 ||
        strcmp(cmd, "help") == 0) {
        main_usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("stowbridge %s\n", STOWBRIDGE_VERSION);
        return 0;
    }

    r = main_parse_opts(cmd, argc - 1, argv + 1, &opts);
    if (r == 1) {
        main_usage(stdout);
        return 0;
    }
    if (r < 0)
        return EXIT_USAGE;

    if (strcmp(cmd, "sample-config") == 0)
        return cfg_write_sample(stdout) == 0 ? 0 : EXIT_RUNTIME;

    if (strcmp(cmd, "run") != 0 && strcmp(cmd, "status") != 0 &&
        strcmp(cmd, "check") != 0) {
        fprintf(stderr, "stowbridge: unknown command '%s' (see "
                        "'stowbridge --help')\n", cmd);
        return EXIT_USAGE;
    }
    if (main_load_config(&opts, cmd, &cfg) < 0)
        return EXIT_USAGE;

    if (strcmp(cmd, "run") == 0)
        status = daemon_run(cfg);
    else if (strcmp(cmd, "status") == 0)
        status = status_main(cfg, opts.json);
    else
        status = main_check(cfg, opts.dump);
    cfg_free(cfg);
    return status;
}
