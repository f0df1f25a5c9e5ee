/*
 * health.h — active health checks, on the control thread (see health.c).
 */
#ifndef PT_CONTROL_HEALTH_H
#define PT_CONTROL_HEALTH_H

#include "gateway/generation.h"
#include "proxy/pool.h"

struct pt_health_checks;

struct pt_health_checks *pt_health_new(struct pt_loop *loop, struct pt_outbound *ob);
/* Rebuilds the probes for generation g (the one just published) and
 * points the passive/breaker sweep at it: call before the previous
 * generation can be freed. 0 or -ENOMEM. */
int pt_health_sync(struct pt_health_checks *h, const struct pt_generation *g);
void pt_health_free(struct pt_health_checks *h);

#endif
