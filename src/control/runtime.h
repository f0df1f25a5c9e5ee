/*
 * runtime.h — the main thread's job (DESIGN.md §2, §7): load the first
 * generation, start the workers and the access logger, then serve signals:
 * SIGHUP reloads (a bad file is rejected and the running generation keeps
 * serving), SIGTERM/SIGINT drain and exit. Also frees retired generations
 * once no worker can still see them.
 */
#ifndef PT_CONTROL_RUNTIME_H
#define PT_CONTROL_RUNTIME_H

/* Runs the gateway on `config_path` until a shutdown signal. Returns the
 * process exit code. */
int pt_runtime_run(const char *config_path);

#endif
