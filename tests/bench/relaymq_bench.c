/* relaymq-bench: MQTT 3.1/3.1.1 load generator for RelayMQ and other
 * brokers. Parses the command line, raises the open-file limit, ignores
 * SIGPIPE and runs one scenario on one libevent loop (`connect --threads N`:
 * one per thread); the scenarios
 * live in bench_flow.c (pairs, fanin, fanout, latency) and bench_connect.c
 * (connect, idle). Run `relaymq-bench --help` for the options. */
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>

#include "tests/bench/bench_conn.h"
#include "tests/bench/bench_connect.h"
#include "tests/bench/bench_flow.h"
#include "tests/bench/bench_mqtt.h"
#include "tests/bench/bench_opts.h"

/* Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft
 * limit. */
static rlim_t
raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur;
}

/* Sockets needed at once by the scenario, to fail early on a low limit. */
static uint64_t
sockets_needed(const struct bench_opts *o)
{
    switch (o->scenario) {
    case BENCH_PAIRS:
    case BENCH_LATENCY:
        return 2ull * o->clients;
    case BENCH_FANIN:
    case BENCH_FANOUT:
        return (uint64_t)o->clients + 1;
    case BENCH_CONNECT:
        return o->concurrency < o->clients ? o->concurrency : o->clients;
    case BENCH_IDLE:
        return o->clients;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    struct bench_opts o;
    int rc = bench_opts_parse(&o, argc, argv);
    if (rc != 0)
        return rc > 0 ? BENCH_EXIT_OK : BENCH_EXIT_USAGE;
    signal(SIGPIPE, SIG_IGN);
    if (o.tls && bconn_tls_init() != 0) {
        fprintf(stderr, "relaymq-bench: cannot create a TLS client context\n");
        return BENCH_EXIT_USAGE;
    }
    rlim_t limit = raise_nofile();
    if (limit != RLIM_INFINITY && sockets_needed(&o) + 16 > limit) {
        fprintf(stderr, "relaymq-bench: %s needs %llu sockets, open-file limit is %llu\n",
                o.scenario_name, (unsigned long long)sockets_needed(&o), (unsigned long long)limit);
        return BENCH_EXIT_USAGE;
    }
    switch (o.scenario) {
    case BENCH_CONNECT:
        return bench_connect_run(&o);
    case BENCH_IDLE:
        return bench_connect_idle_run(&o);
    default:
        return bench_flow_run(&o);
    }
}
