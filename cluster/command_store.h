/* Where commands live: Redis in cluster mode (every node sees every
 * command; every change is one script, atomic, and appended to the
 * {prefix}commands stream), or this process's memory standalone. The
 * command engine (commands.c) talks to both through this table.
 *
 * Every operation answers through its callback exactly once, possibly
 * before it returns (the memory store always does). The command handed to
 * a callback is borrowed for the call. Loop thread only. */
#ifndef RMQ_CLUSTER_COMMAND_STORE_H
#define RMQ_CLUSTER_COMMAND_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/command.h"
#include "common/status.h"

struct command_store;
struct redis_link;

/* Where the device is connected according to the registry (cluster mode). */
struct command_owner {
    const char *node;       /* "" if the device is offline */
    const char *addr;       /* its internal API */
    const char *channel_id; /* "node/epoch/channel" */
};

/* st: RMQ_OK, RMQ_IO (store unreachable), RMQ_NOMEM, or as each op says. */
typedef void (*command_store_cb)(enum rmq_status st, const struct command *cmd, void *arg);
typedef void (*command_create_cb)(enum rmq_status st, bool created, const struct command *cmd,
                                  const struct command_owner *owner, void *arg);
/* list: {"commands": [...], "next": cursor|null}; pending: an array of
 * commands. Both new references the callee owns, NULL unless RMQ_OK. */
typedef void (*command_json_cb)(enum rmq_status st, json_t *result, void *arg);
typedef void (*command_many_cb)(enum rmq_status st, struct command *cmds, size_t n, void *arg);

struct command_store_ops {
    /* Stores a new command (status queued), unless the device already has
     * one with the same idempotency key: then created is false and cmd is
     * that one. owner says where the device is connected now. */
    void (*create)(struct command_store *s, const struct command *cmd, command_create_cb cb,
                   void *arg);
    /* RMQ_NOT_FOUND for an unknown (or forgotten) id. */
    void (*get)(struct command_store *s, const char *id, command_store_cb cb, void *arg);
    /* Newest first; cursor NULL for the first page. RMQ_INVALID: bad cursor. */
    void (*list)(struct command_store *s, const char *device, const char *cursor, size_t limit,
                 command_json_cb cb, void *arg);
    /* RMQ_OK canceled; RMQ_EXISTS already final (cmd as it is); RMQ_NOT_FOUND. */
    void (*cancel)(struct command_store *s, const char *id, uint64_t now, command_store_cb cb,
                   void *arg);
    /* The send step of a due command whose device is on channel_id: RMQ_OK
     * sent (cmd carries the new attempt); RMQ_LIMIT every send was spent, so
     * it timed out; RMQ_NOT_FOUND finished, unknown, or the device is no
     * longer on channel_id (cluster mode) - drop it. */
    void (*send)(struct command_store *s, const char *id, const char *node,
                 const char *channel_id, uint64_t now, command_store_cb cb, void *arg);
    /* Send number `attempt` was acknowledged. No answer. */
    void (*delivered)(struct command_store *s, const char *id, uint32_t attempt, uint64_t now);
    /* A reply from device: RMQ_OK finished with status; RMQ_NOT_FOUND unknown
     * id; RMQ_EXISTS already final; RMQ_INVALID another device's command. */
    void (*reply)(struct command_store *s, const char *id, const char *device,
                  const char *reply, enum command_status status, uint64_t now,
                  command_store_cb cb, void *arg);
    /* The device's unfinished commands, oldest first. */
    void (*pending)(struct command_store *s, const char *device, command_many_cb cb, void *arg);
    /* Expires queued commands past their TTL (and sent ones whose device
     * stayed away past it) and forgets finished ones past retention. */
    void (*sweep)(struct command_store *s, uint64_t now);
    void (*free)(struct command_store *s);
};

struct command_store {
    const struct command_store_ops *ops;
};

struct command_store_config {
    const char *prefix;       /* Redis key prefix */
    const char *node_id;
    uint64_t retention_ms;    /* finished commands stay readable this long */
    uint32_t history;         /* commands listed per device */
    int64_t stream_maxlen;    /* {prefix}commands, approximate */
    /* Memory store only: whether a device is connected (the sweep expires
     * commands in flight to a device away past their TTL). NULL = never. */
    bool (*device_online)(void *ctx, const char *device);
    void *device_online_ctx;
};

/* Standalone. Borrows cfg. NULL on allocation failure. */
struct command_store *command_store_memory_new(const struct command_store_config *cfg);

/* Cluster mode, on a link owned by the caller (it must outlive the store;
 * register before the link's first connect completes). Borrows cfg. */
struct command_store *command_store_redis_new(struct redis_link *link,
                                              const struct command_store_config *cfg);

#endif
