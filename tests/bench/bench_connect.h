/* Connection scenarios of relaymq-bench: `connect` (handshakes per second)
 * and `idle` (broker memory per idle connection). */
#ifndef RMQ_TESTS_BENCH_CONNECT_H
#define RMQ_TESTS_BENCH_CONNECT_H

#include "tests/bench/bench_opts.h"

/* `connect`: o->clients CONNECT -> CONNACK -> DISCONNECT cycles with
 * o->concurrency in progress at once, stopping early after o->duration
 * seconds; o->threads event loops on as many threads share both counts.
 * Prints the result lines; returns an exit status. */
int bench_connect_run(const struct bench_opts *o);

/* `idle`: opens o->clients connections (o->concurrency handshakes at once),
 * waits for every CONNACK, reads the broker's VmRSS (o->broker_pid) before
 * and after, holds them o->hold seconds, closes them. Returns an exit status. */
int bench_connect_idle_run(const struct bench_opts *o);

#endif
