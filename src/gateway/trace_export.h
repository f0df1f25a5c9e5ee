/*
 * trace_export.h — a worker's span exporter (trace_export.c): OTLP/HTTP
 * JSON posts of the worker's span ring, from its own loop, off the
 * request path. All on the worker's thread.
 */
#ifndef PT_GATEWAY_TRACE_EXPORT_H
#define PT_GATEWAY_TRACE_EXPORT_H

struct pt_worker;

/* The worker's generation changed (or it starts): size the ring. */
void pt_trace_worker_sync(struct pt_worker *w);
/* A span was put in the ring: arm the export timer as needed. */
void pt_trace_queued(struct pt_worker *w);
/* The worker stops: cancel a post in flight, free the ring. Before the
 * worker's outbound client goes. */
void pt_trace_worker_stop(struct pt_worker *w);

#endif
