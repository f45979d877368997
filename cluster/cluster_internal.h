/* State shared by the cluster folder's files (cluster.c: membership and
 * life cycle; registry.c: device claims, releases and events). */
#ifndef RMQ_CLUSTER_CLUSTER_INTERNAL_H
#define RMQ_CLUSTER_CLUSTER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "broker/broker.h"
#include "cluster/cluster.h"
#include "cluster/redis_link.h"

#define CLUSTER_KEY_MAX 512
#define CLUSTER_MAX_UP_LISTENERS 4

struct event;

struct cluster {
    const struct cluster_config *cfg;
    struct broker *broker;
    struct redis_link *redis;
    struct redis_link_events link_events;
    struct broker_hooks hooks;
    struct event *heartbeat;
    uint64_t epoch;      /* start time, ms since the Unix epoch: this life of the node */
    uint64_t started_ms; /* same clock, for uptime */
    uint64_t redis_up_since_ms; /* monotonic; reaping waits one node TTL after it */
    bool registered_once;
    bool reassert_needed;
    bool closing;
    int script_claim, script_release, script_reap, script_dead, script_purge;
    int script_dir_nodes, script_dir_clients, script_reassert;
    bool joined; /* this node's SADD to the node set answered since Redis came up */
    char key_node[CLUSTER_KEY_MAX];
    char key_nodes[CLUSTER_KEY_MAX];
    char key_my_devices[CLUSTER_KEY_MAX];
    char key_events[CLUSTER_KEY_MAX];
    cluster_close_remote_fn close_remote;
    void *close_remote_ctx;
    uint64_t remote_takeovers;
    uint64_t events_dropped;
    uint64_t nodes_reaped;
    uint64_t users_found, users_not_found, users_errors; /* --users-redis lookups */
    struct {
        void (*fn)(void *ctx);
        void *ctx;
    } up_listeners[CLUSTER_MAX_UP_LISTENERS];
    int up_listener_count;
    cluster_session_prepare_fn session_prepare;
    void *session_ctx;
    const struct cluster_pending_watch *pending_watch;
};

extern const char registry_claim_lua[];
extern const char registry_release_lua[];
extern const char registry_reassert_lua[];
extern const char directory_nodes_lua[];
extern const char directory_clients_lua[];

/* A reply callback that only lets the reply go. */
void cluster_ignore_reply(struct redisReply *reply, void *arg);

const char *registry_device_id(const struct cluster *cl, const struct broker_client_info *info);
void registry_on_claim(void *ctx, struct broker_claim *token,
                       const struct broker_client_info *info);
void registry_on_released(void *ctx, const struct broker_client_info *info,
                          enum close_reason reason);
void registry_reassert_one(void *arg, const struct broker_client_info *info);

/* users.c: the broker's lookup_user hook (--users-redis). */
void users_on_lookup(void *ctx, struct broker_claim *token, const char *username);

/* Appends to the events stream and publishes on $SYS/brokers/...; reason
 * NULL for online events. */
void registry_emit_event(struct cluster *cl, const char *type, const char *device,
                         const char *client_id, const char *username, const char *node,
                         const char *peer, const char *channel_id, const char *reason);

#endif
