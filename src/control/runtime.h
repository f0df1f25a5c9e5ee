/*
 * runtime.h — the main thread's job (DESIGN.md §2, §7): load the first
 * generation, start the workers and the access logger, then run the
 * control loop: signals (SIGHUP reloads, a bad file is rejected and the
 * running generation keeps serving; SIGUSR1 reopens the log files;
 * SIGTERM/SIGINT drain and exit), the
 * admin API, and freeing retired generations once no worker can still see
 * them. Shared per-target state (proxy/state.h) is attached to each
 * generation here.
 */
#ifndef PT_CONTROL_RUNTIME_H
#define PT_CONTROL_RUNTIME_H

#include "core/loop.h"
#include "proxy/pool.h"
#include "proxy/state.h"

/* Runs the gateway on `config_path` until a shutdown signal. Returns the
 * process exit code. */
int pt_runtime_run(const char *config_path);

/* For control-plane code (health checker, fetchers), on the control thread
 * only, while pt_runtime_run runs; NULL otherwise. The control thread's
 * event loop (epoll), its outbound pools (on that loop, with their own
 * buffer pool), and the shared state registry. */
struct pt_loop *pt_runtime_loop(void);
struct pt_outbound *pt_runtime_outbound(void);
struct pt_state_registry *pt_runtime_state(void);

#endif
