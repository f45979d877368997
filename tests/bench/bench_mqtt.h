/* MQTT client helpers shared by the scenarios of relaymq-bench: client ids,
 * queueing CONNECT/SUBSCRIBE/acks on a connection, the clock, the broker's
 * memory, and the RESULT line. Single-threaded like the rest of the tool. */
#ifndef RMQ_TESTS_BENCH_MQTT_H
#define RMQ_TESTS_BENCH_MQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tests/bench/bench_conn.h"
#include "tests/bench/bench_opts.h"
#include "tests/bench/bench_stats.h"

/* Exit statuses of the tool (also in --help). */
enum bench_exit {
    BENCH_EXIT_OK = 0,
    BENCH_EXIT_FAILURE = 1, /* connection refused/reset, broker error, timeout */
    BENCH_EXIT_USAGE = 2,
    BENCH_EXIT_CHECK = 3, /* --check: loss or duplicates the QoS forbids */
};

/* Room for any client id this tool builds. */
#define BENCH_CLIENT_ID_MAX 64

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t bench_now_ns(void);

/* "<prefix>-<pid in hex>-<role><index>"; MQTT 3.1 allows only 23 bytes, so
 * it is shortened from the front of the prefix when protocol is 3. */
void bench_client_id(const struct bench_opts *o, char role, uint32_t index,
                     char out[BENCH_CLIENT_ID_MAX]);

/* Queues a CONNECT (clean session) on c. false if the output has no room. */
bool bench_queue_connect(struct bconn *c, const struct bench_opts *o, const char *client_id);

/* Queues a SUBSCRIBE to one filter. false if no room. */
bool bench_queue_subscribe(struct bconn *c, uint16_t packet_id, const char *filter, uint8_t qos);

/* Queues a 4-byte ack (PUBACK, PUBREC, PUBREL, PUBCOMP). false if no room. */
bool bench_queue_ack(struct bconn *c, enum mqtt_type type, uint16_t packet_id);

/* Queues a 2-byte packet (PINGREQ, DISCONNECT). false if no room. */
bool bench_queue_empty(struct bconn *c, enum mqtt_type type);

/* Checks a CONNACK packet: RMQ_OK when accepted, else reports why on
 * stderr (once per run) and returns RMQ_PROTOCOL. */
enum rmq_status bench_check_connack(const struct mqtt_packet *p);

/* VmRSS of pid in KiB, or -1 if it cannot be read. */
long bench_rss_kib(int pid);

/* Process CPU time (user + system) in seconds. */
double bench_cpu_seconds(void);

/* Appends " p50_us=.. p90_us=.. p99_us=.. p999_us=.. max_us=.." for h to
 * buf (which holds n bytes). */
void bench_format_percentiles(const struct latency_hist *h, char *buf, size_t n);

#endif
