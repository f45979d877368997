/* The device-command engine of one node: accepts commands (admin API),
 * stores them (Redis in cluster mode, memory standalone), hands each to the
 * node that holds the device's connection, publishes it there on the
 * command topic and re-sends it on the broker's timer wheel until the
 * device replies on its reply topic, the retries run out, or it is
 * canceled. Pending commands belong to the device: whichever node the
 * device connects to picks them up from the store and carries on.
 *
 * Installs itself as a broker observer (connections, replies, acks) and
 * serves the admin and internal endpoints through a command_service
 * (http/command_api.h). Loop thread only. */
#ifndef RMQ_CLUSTER_COMMANDS_H
#define RMQ_CLUSTER_COMMANDS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cluster/command_store.h"

struct event_base;
struct broker;
struct redis_link;
struct peer_client;
struct command_service;
struct commands;
struct cluster_pending_watch;

struct commands_config {
    const char *node_id;
    uint64_t epoch;          /* the broker's: channel ids are "node/epoch/channel" */
    bool device_by_username; /* as the registry names devices */
    uint64_t retry_interval_ms;
    uint32_t max_retries;
    uint64_t ttl_ms;
    const char *topic;       /* template with at most one {device} */
    const char *reply_topic; /* same */
    const char *id_field;
    struct command_store_config store;
};

/* link NULL: standalone (memory store). With a link (the cluster's; it
 * must outlive the engine and its first connect must not have completed
 * yet), commands live in Redis. Borrows everything. NULL on failure or a
 * bad topic template (logged). */
struct commands *commands_new(struct event_base *base, struct broker *broker,
                              const struct commands_config *cfg, struct redis_link *link);

/* Waiting ?wait requests are answered with the command as it stands.
 * Call after the Redis link and the peer client are freed (their last
 * callbacks still reach the engine) and before the broker. NULL-safe. */
void commands_free(struct commands *cm);

/* Forwarding to the node that holds a device (cluster mode). Borrowed. */
void commands_set_peers(struct commands *cm, struct peer_client *peers);

/* The hints a cluster gives about a connecting device's pending commands
 * (cluster_set_pending_watch): with them, a device with none skips the
 * look-up. Owned by the engine. */
const struct cluster_pending_watch *commands_pending_watch(struct commands *cm);

/* The service the admin and internal endpoints call. */
const struct command_service *commands_service(struct commands *cm);

/* A /metrics source: relaymq_commands_total{event=...}, active timers,
 * waiting requests. arg is the engine. */
void commands_write_metrics(FILE *out, void *arg);

/* Formats a topic template for a device: true if the result is a valid
 * topic name (no wildcards, fits out). Pure; for tests. */
bool commands_topic_for(const char *tmpl, const char *device, char *out, size_t len);

#endif
