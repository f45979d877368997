/* A broker loop: one libevent event_base on one thread that owns its
 * listeners, connections, sessions, subscription tree, retained store and
 * timer wheel outright. Nothing here is shared with other threads; work from
 * other threads will arrive through an inbox (a later addition).
 *
 * main() fills a struct broker_config, creates the broker, runs it until a
 * signal stops it, and frees it. */
#ifndef RMQ_BROKER_BROKER_H
#define RMQ_BROKER_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/metrics.h"
#include "common/status.h"

struct event_base;
struct broker;
struct inbox;

struct broker_config {
    const char *const *listen; /* "HOST:PORT", "[v6]:PORT" or "tcp://HOST:PORT" */
    size_t listen_count;
    const char *node_id;
    bool allow_anonymous;
    uint32_t max_packet_size;     /* bytes; incoming packets above it close the connection */
    uint16_t max_inflight;        /* outgoing QoS 1/2 messages awaiting ack, per client */
    uint32_t max_queued_messages; /* per session, beyond the inflight window */
    uint64_t max_output_buffer;   /* bytes buffered for a client before QoS 0 is dropped */
    uint64_t connect_timeout_ms;  /* time allowed between accept and CONNECT */
    uint64_t sys_interval_ms;     /* $SYS publication period, 0 = off */
};

/* Creates a broker on base and binds every listener. Borrows cfg and base,
 * which must outlive the broker. NULL on failure (logged). */
struct broker *broker_new(struct event_base *base, const struct broker_config *cfg);

/* Closes every connection (without publishing wills: the broker is going
 * away on purpose), frees sessions, subscriptions and retained messages.
 * NULL-safe. */
void broker_free(struct broker *broker);

/* The loop's inbox: other threads post work here (see common/inbox.h);
 * items run on the loop thread with full access to the broker. */
struct inbox *broker_inbox(struct broker *broker);

/* Stops accepting new connections (for shutdown). */
void broker_stop_listening(struct broker *broker);

/* Copies the broker's counters. */
void broker_metrics_get(const struct broker *broker, struct broker_metrics *out);

#endif
