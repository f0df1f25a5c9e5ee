/*
 * main.c — the command line:
 *   portico -c FILE | portico run -c FILE    run the gateway
 *   portico validate FILE                    check a config, print errors
 *   portico lint FILE                        same checks (alias, for CI use)
 *   portico version
 */
#include "control/config.h"
#include "control/runtime.h"
#include "core/log.h"
#include "core/version.h"

#include <stdio.h>
#include <string.h>

static int usage(void)
{
    fprintf(stderr, "usage: portico -c FILE           run the gateway\n"
                    "       portico run -c FILE       same\n"
                    "       portico validate FILE     check a configuration file\n"
                    "       portico lint FILE         same as validate\n"
                    "       portico version\n");
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
    if (strcmp(argv[1], "validate") == 0 || strcmp(argv[1], "lint") == 0)
        return argc == 3 ? validate(argv[2]) : usage();
    if (strcmp(argv[1], "run") == 0)
        i = 2;
    if (argc == i + 2 && strcmp(argv[i], "-c") == 0)
        return pt_runtime_run(argv[i + 1]);
    return usage();
}
