/* One asynchronous Redis connection on a broker loop (hiredis async with
 * its libevent adapter). It reconnects by itself with backoff, loads the
 * registered Lua scripts on every (re)connect before reporting "up", and
 * measures command latency and errors.
 *
 * Loop thread only. Commands are sent only while the link is up; callers
 * get RMQ_AGAIN otherwise and decide whether to queue or degrade. */
#ifndef RMQ_CLUSTER_REDIS_LINK_H
#define RMQ_CLUSTER_REDIS_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

struct event_base;
struct redisReply;
struct redis_link;

/* Reply callback. reply is NULL when the command failed (link lost or
 * freed); it is owned by hiredis and valid only during the call. Called
 * exactly once for every command that was accepted. */
typedef void (*redis_link_cb)(struct redisReply *reply, void *arg);

struct redis_link_events {
    void (*up)(void *ctx);   /* connected, scripts loaded */
    void (*down)(void *ctx); /* connection lost; reconnecting */
    void *ctx;
};

struct redis_link_stats {
    uint64_t commands;
    uint64_t errors;        /* error replies and failed commands */
    uint64_t reconnects;
    uint64_t latency_us_sum; /* over `commands` */
};

/* Parses redis://HOST:PORT[/DB]; starts connecting at once. Borrows
 * events. NULL on a bad URL or allocation failure (logged). */
struct redis_link *redis_link_new(struct event_base *base, const char *url,
                                  const struct redis_link_events *events);

/* Disconnects; pending callbacks run with a NULL reply. NULL-safe. */
void redis_link_free(struct redis_link *link);

bool redis_link_is_up(const struct redis_link *link);

/* Registers a Lua script (before the first connect completes, or it is
 * loaded at the next reconnect). Returns its index for redis_link_eval. */
int redis_link_script(struct redis_link *link, const char *body);

/* A subscriber link: message callback, called for every message on the
 * channel with its bytes (borrowed for the call). */
typedef void (*redis_link_message_cb)(const char *data, size_t len, void *arg);

/* Makes link a subscriber of one channel (before its first connect
 * completes; no scripts, no commands on it): SUBSCRIBE is sent at every
 * (re)connect and "up" reports when it is confirmed. Messages published
 * while the link was down are lost: the up event is the cue to resync.
 * RMQ_INVALID if the link already has a channel or scripts. */
enum rmq_status redis_link_subscribe(struct redis_link *link, const char *channel,
                                     redis_link_message_cb cb, void *arg);

/* Sends a command built from argv. RMQ_AGAIN if the link is down (cb is
 * not called), RMQ_NOMEM on allocation failure. */
enum rmq_status redis_link_argv(struct redis_link *link, redis_link_cb cb, void *arg, int argc,
                                const char **argv, const size_t *lens);

/* EVALSHA of a registered script; argv holds the keys then the arguments. */
enum rmq_status redis_link_eval(struct redis_link *link, int script, redis_link_cb cb, void *arg,
                                int nkeys, int argc, const char **argv, const size_t *lens);

/* Writes queued commands to the socket now, waiting at most timeout_ms, so
 * that commands sent just before shutdown reach Redis. Replies are not
 * awaited. */
void redis_link_flush(struct redis_link *link, int timeout_ms);

/* At shutdown: runs the loop until every command sent so far is answered
 * (so Redis has applied them before the connection closes), timeout_ms
 * passes, or a signal arrives. No-op when the link is down. */
void redis_link_wait(struct redis_link *link, uint64_t timeout_ms);

void redis_link_stats(const struct redis_link *link, struct redis_link_stats *out);

#endif
