/*
 * lint.h — `portico lint FILE [--strict]`: a config that loads may still
 * be shaped in a way that bites later. Each rule below names one such
 * anti-pattern; docs/operations.md ("Linting a config") gives the exact
 * trigger of each, and lint.c implements them in the same words.
 *
 * A warning reads "file:line:col: warning: <message> [rule-name]" at the
 * node concerned. Runs on the main thread of the `portico lint` process
 * only; nothing here is used by a running gateway.
 */
#ifndef PT_CONTROL_LINT_H
#define PT_CONTROL_LINT_H

#include "control/config.h"

#include <stdbool.h>

struct pt_ynode;

/*
 * Runs every rule over `root`, the file's YAML tree as config_yaml.c
 * builds it (positions kept, `${ENV}` expanded, aliases resolved). Every
 * rule reads what was written, so a tree the loader would refuse today
 * (body transforms, not in this build yet) can be linted too: the unit
 * tests do. Warnings are added to `out` in file order, each prefixed with
 * `file`. Returns how many were added.
 */
size_t pt_lint_tree(const char *file, const struct pt_ynode *root, struct pt_diag *out);

/*
 * The command: loads `path` with the normal loader (errors are printed to
 * `err` and make it exit 1), then prints the warnings to `err` and a
 * one-line summary to `out`. Returns the exit status: 0, or 1 on a config
 * error or, with `strict`, on any warning.
 */
int pt_lint_main(const char *path, bool strict, FILE *out, FILE *err);

#endif
