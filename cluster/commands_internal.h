/* State shared by the command engine (commands.c: local entries, sending,
 * the broker's observer, life cycle) and the command service
 * (command_service.c: the admin and internal endpoints and the requests
 * waiting with ?wait). Loop thread only. */
#ifndef RMQ_CLUSTER_COMMANDS_INTERNAL_H
#define RMQ_CLUSTER_COMMANDS_INTERNAL_H

#include <event2/util.h>
#include <stdbool.h>
#include <stdint.h>

#include "broker/broker.h"
#include "cluster/command_store.h"
#include "cluster/commands.h"
#include "cluster/cluster.h"
#include "common/timer_wheel.h"
#include "http/command_api.h"

#define WAIT_POLL_MS 100
#define SWEEP_MS 1000
#define STORE_RETRY_MS 1000 /* a send Redis could not take is tried again after this */
#define TOPIC_MAX 1024
#define CHANNEL_ID_MAX 256

#define COMMAND_COUNTERS(X)                                                          \
    X(accepted, "commands stored")                                                   \
    X(duplicate, "posts that returned an existing command (idempotency key)")        \
    X(forwarded, "commands handed to the node holding the device")                   \
    X(forward_failed, "hand-overs that failed (the command waits for the device)")   \
    X(sent, "first sends to a device")                                               \
    X(resent, "re-sends after an unanswered interval")                               \
    X(delivered, "sends the device acknowledged (QoS 1/2)")                          \
    X(succeeded, "commands the device answered")                                     \
    X(failed, "commands the device answered with an error")                          \
    X(timed_out, "commands unanswered after every send")                             \
    X(canceled, "commands canceled through the API")                                 \
    X(reply_unknown, "replies to unknown, finished or other devices' commands")       \
    X(reply_invalid, "messages on a reply topic that are not a JSON object with an id") \
    X(store_errors, "operations the store (Redis) could not do")                   \
    X(pickups, "look-ups of a connecting device's pending commands")               \
    X(pickups_skipped, "look-ups skipped: the device's claim saw none pending")

struct counters {
#define X(name, help) uint64_t name;
    COMMAND_COUNTERS(X)
#undef X
};

/* A topic template split at its {device}: prefix + device + suffix. */
struct topic_tmpl {
    const char *text;
    size_t prefix_len; /* the whole template when there is no {device} */
    const char *suffix;
    size_t suffix_len;
    bool has_device;
};

struct local_dev;

struct local_cmd {
    struct timer_entry timer; /* first: the callback gets the entry */
    struct commands *cm;
    struct local_dev *dev;
    struct local_cmd *next; /* in dev->cmds */
    uint64_t tag;           /* of the last send, for its acknowledgement */
    uint32_t attempts;      /* as of the last send */
    bool busy;              /* a store call for it is out */
    char id[COMMAND_ID_LEN + 1];
};

/* One per device connected here: kept small, every connection has one. */
struct local_dev {
    uint64_t channel; /* its channel id is commands_channel_id() */
    struct local_cmd *cmds;
    char device[]; /* the map's key */
};

struct waiter {
    struct waiter *next;
    command_answer_fn cb;
    void *arg;
    uint64_t deadline; /* monotonic ms */
    bool busy;
    char id[COMMAND_ID_LEN + 1];
};

struct commands {
    struct event_base *base;
    struct broker *broker;
    const struct commands_config *cfg;
    struct command_store_config store_cfg; /* cfg->store plus our callback */
    struct command_store *store;
    struct peer_client *peers;
    struct broker_observer observer;
    struct command_service service;
    struct topic_tmpl topic, reply;
    struct hashmap *devices; /* device -> struct local_dev (owned) */
    struct hashmap *active;  /* id -> struct local_cmd (borrowed from its dev) */
    struct hashmap *tags;    /* tag (8 bytes) -> struct local_cmd */
    uint64_t next_tag;
    struct waiter *waiters;
    struct event *poll_ev, *sweep_ev;
    bool closing;
    /* Commands routed to a device on this node (it may be connecting, and
     * miss them): a claim's "none pending" holds only if none came since. */
    uint64_t routed_here;
    struct {
        uint64_t channel, mark;
        long long count; /* -1: unknown */
    } hint; /* the last claim's, for the CONNACK that follows it */
    struct cluster_pending_watch watch;
    struct counters n;
};


struct id_ctx {
    struct commands *cm;
    char id[COMMAND_ID_LEN + 1];
};

/* ---- commands.c ---- */

struct local_cmd *commands_local_find(struct commands *cm, const char *id);
void commands_local_drop(struct commands *cm, struct local_cmd *lc);
/* Takes charge of cmd for dev: sends a queued one now, or continues one in
 * flight at its next_ms. */
void commands_take_charge(struct commands *cm, struct local_dev *dev, const struct command *cmd);
struct id_ctx *commands_id_ctx_new(struct commands *cm, const char *id);

/* ---- command_service.c ---- */

/* Fills cm->service. */
void commands_service_init(struct commands *cm);
/* Answers a waiting request (and forgets it). */
void commands_waiter_answer(struct commands *cm, struct waiter *w, unsigned status, json_t *body);
/* Lets the requests waiting for id see its current state. */
void commands_wake_waiters(struct commands *cm, const char *id);
/* Tells the node holding a ?wait request for cmd that it ended. */
void commands_tell_waiting_node(struct commands *cm, const struct command *cmd);
/* The 100 ms poll of waiting requests (an event callback; arg is cm). */
void commands_poll(evutil_socket_t fd, short what, void *arg);

/* The registry's channel id of dev's connection ("node/epoch/channel") in
 * out (CHANNEL_ID_MAX bytes). */
void commands_channel_id(const struct commands *cm, const struct local_dev *dev,
                         char out[CHANNEL_ID_MAX]);

#endif
