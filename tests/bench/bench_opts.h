/* Command line of relaymq-bench: one scenario name followed by options.
 * The option names are a contract with scripts/bench.sh, BENCHMARKS.md and
 * docs/bench-tool.md;
 * bench_opts_usage() prints the authoritative list. */
#ifndef RMQ_TESTS_BENCH_OPTS_H
#define RMQ_TESTS_BENCH_OPTS_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum bench_scenario {
    BENCH_PAIRS,
    BENCH_FANIN,
    BENCH_FANOUT,
    BENCH_LATENCY,
    BENCH_CONNECT,
    BENCH_IDLE,
};

struct bench_opts {
    enum bench_scenario scenario;
    const char *scenario_name;
    const char *host;
    uint16_t port;
    uint16_t sub_port;           /* subscribers' port (0 = port): another node of a cluster */
    struct sockaddr_in addr;     /* host:port resolved */
    struct sockaddr_in sub_addr; /* host:sub_port resolved */
    uint8_t protocol;        /* 3 = MQTT 3.1, 4 = MQTT 3.1.1 */
    const char *username;    /* NULL = none */
    const char *password;    /* NULL = none */
    const char *client_prefix;
    uint16_t keepalive; /* seconds */
    double duration;    /* measured seconds (after warmup) */
    double warmup;      /* seconds of traffic before measuring */
    uint64_t messages;  /* per publisher; 0 = run for duration */
    uint8_t qos;
    uint32_t payload;     /* bytes, >= BENCH_PAYLOAD_MIN */
    uint32_t clients;     /* pairs / publishers / subscribers / connections */
    uint32_t inflight;    /* QoS 1/2 window per publisher */
    double rate;          /* aggregate msgs/s; 0 = as fast as possible */
    uint32_t concurrency; /* connect, idle: handshakes at once */
    uint32_t threads;     /* connect: event loops sharing clients and concurrency */
    double hold;          /* idle: seconds to hold the connections */
    double drain;         /* seconds without progress before giving up the drain */
    int broker_pid;       /* idle: read VmRSS of this process; 0 = none */
    bool check;           /* exit 3 on loss/duplicates that the QoS forbids */
    bool tls;             /* connect over TLS (no certificate check) */
    bool verbose;         /* progress every second on stderr */
};

/* Most --threads. */
#define BENCH_MAX_THREADS 64

/* Publisher id (4) + sequence number (8) + send time (8). */
#define BENCH_PAYLOAD_MIN 20

/* Parses argv into o (defaults first, then scenario defaults, then flags).
 * Returns 0 to run, 1 when --help was printed, -1 on a usage error (already
 * reported on stderr). */
int bench_opts_parse(struct bench_opts *o, int argc, char **argv);

/* Prints the help text. */
void bench_opts_usage(FILE *out);

#endif
