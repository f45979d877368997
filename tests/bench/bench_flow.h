/* Message-flow scenarios of relaymq-bench: pairs, fanin, fanout, latency.
 * Publishers send pre-encoded PUBLISH packets carrying (publisher id,
 * sequence number, send time); subscribers check every delivery for loss,
 * duplicates, reordering and misrouting and record end-to-end latency. */
#ifndef RMQ_TESTS_BENCH_FLOW_H
#define RMQ_TESTS_BENCH_FLOW_H

#include "tests/bench/bench_opts.h"

/* Runs the scenario in o on its own event loop, prints the human line and
 * the RESULT line on stdout, and returns an exit status (enum bench_exit). */
int bench_flow_run(const struct bench_opts *o);

#endif
