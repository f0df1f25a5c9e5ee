/*
 * main.c — the command line:
 *   portico -c FILE | portico run -c FILE    run the gateway
 *     [--log-level debug|info|warn|error]    overrides `log_level` of the file
 *   portico validate FILE                    check a config, print errors
 *   portico lint FILE [--strict]             validate, then warn about
 *                                            anti-patterns (control/lint.h)
 *   portico version
 */
#include "control/config.h"
#include "control/lint.h"
#include "control/runtime.h"
#include "core/log.h"
#include "core/version.h"

#include <stdio.h>
#include <string.h>

static int usage(void)
{
    fprintf(stderr, "usage: portico -c FILE [--log-level LEVEL]       run the gateway\n"
                    "       portico run -c FILE [--log-level LEVEL]   same\n"
                    "       portico validate FILE                     check a configuration file\n"
                    "       portico lint FILE [--strict]              check it, and warn about "
                    "anti-patterns\n"
                    "       portico version\n"
                    "LEVEL is debug, info, warn or error (overrides `log_level`).\n");
    return 2;
}

static int validate(const char *path)
{
    struct pt_diag diag;
    pt_diag_init(&diag);
    struct pt_generation *g = pt_config_load(path, 1, &diag);
    if (!g) {
        pt_diag_print(&diag, stderr);
        pt_diag_free(&diag);
        return 1;
    }
    printf("%s: ok (%u routes, %u upstreams, %u listeners)\n", path, g->nroutes, g->nupstreams,
           g->nlisteners);
    pt_generation_free(g);
    pt_diag_free(&diag);
    return 0;
}

int main(int argc, char **argv)
{
    int i = 1;
    if (argc < 2)
        return usage();
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("portico %s\n", PT_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "validate") == 0)
        return argc == 3 ? validate(argv[2]) : usage();
    if (strcmp(argv[1], "lint") == 0) {
        if (argc == 3 && strcmp(argv[2], "--strict") != 0)
            return pt_lint_main(argv[2], false, stdout, stderr);
        if (argc == 4 && (strcmp(argv[2], "--strict") == 0 || strcmp(argv[3], "--strict") == 0))
            return pt_lint_main(argv[strcmp(argv[2], "--strict") == 0 ? 3 : 2], true, stdout,
                                stderr);
        return usage();
    }
    if (strcmp(argv[1], "run") == 0)
        i = 2;
    const char *config = NULL;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc && !config) {
            config = argv[++i];
        } else if (strcmp(argv[i], "--log-level") == 0 && i + 1 < argc) {
            if (pt_log_pin_level(argv[++i]) < 0) {
                fprintf(stderr, "--log-level must be debug, info, warn or error\n");
                return 2;
            }
        } else {
            return usage();
        }
    }
    return config ? pt_runtime_run(config) : usage();
}
