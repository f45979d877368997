/* One device command as the API and the stores see it, and its state
 * machine as pure functions of the record and `now` (wall-clock ms, since
 * the record is shared by every node through Redis).
 *
 *   queued -> sent -> delivered -> succeeded | failed      (device replied)
 *                \-> (re-sent after interval_ms) ...
 *   after 1 + retries sends and one more interval: timed_out
 *   queued past expires_ms (device away): expired; any time: canceled
 *
 * The memory store (standalone mode) applies these functions directly; the
 * Redis store's scripts (command_store_redis.c) implement the same rules in
 * Lua so that every node agrees. */
#ifndef RMQ_CLUSTER_COMMAND_H
#define RMQ_CLUSTER_COMMAND_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

enum command_status {
    COMMAND_QUEUED,
    COMMAND_SENT,
    COMMAND_DELIVERED,
    COMMAND_SUCCEEDED,
    COMMAND_FAILED,
    COMMAND_TIMED_OUT,
    COMMAND_EXPIRED,
    COMMAND_CANCELED,
};

#define COMMAND_ID_LEN 24 /* 12 hex digits of wall ms, 4 of a counter, 8 random */

struct command {
    char id[COMMAND_ID_LEN + 1];
    char *device;
    enum command_status status;
    uint32_t attempts; /* sends so far */
    uint32_t retries;  /* re-sends allowed after the first send */
    uint8_t qos;
    uint64_t interval_ms, ttl_ms;
    char *payload;         /* the posted JSON object, as text, without the id field */
    char *idempotency_key; /* or NULL */
    char *reply;           /* the device's reply (JSON text), or NULL */
    char *node;            /* responsible node: accepting node while queued, sender after */
    char *accepted_by;
    char *channel_id; /* connection of the last send ("node/epoch/channel"), or NULL */
    uint64_t created_ms, updated_ms;
    uint64_t expires_ms; /* created + ttl: a queued command expires then */
    uint64_t next_ms;    /* when the next send or the time-out is due (0 = not armed) */
    bool notify;         /* an API request waits for its end on accepted_by */
    char *notify_addr;   /* set by a store on finishing: accepted_by's internal API, or NULL */
};

const char *command_status_name(enum command_status s);

/* False for an unknown name. */
bool command_status_parse(const char *name, enum command_status *out);

/* succeeded, failed, timed_out, expired, canceled */
bool command_status_final(enum command_status s);

/* Frees the strings (not the struct) and zeroes it. NULL-safe. */
void command_clear(struct command *c);

/* Deep copy. RMQ_NOMEM. */
enum rmq_status command_copy(struct command *dst, const struct command *src);

/* The API's JSON form (see docs/api.md). NULL on allocation failure. */
json_t *command_json(const struct command *c);

/* A new command id from wall time, a per-process counter and randomness;
 * ids sort in creation order (to the millisecond). */
void command_new_id(char out[COMMAND_ID_LEN + 1], uint64_t now_ms);

/* ---- transitions (pure) ---- */

/* What a due timer does to a command still in flight: true = send again,
 * false = every send is spent, time it out. */
bool command_may_send(const struct command *c);

/* Records one send from node over channel_id at now: attempts + 1, status
 * sent, next_ms = now + interval. RMQ_NOMEM. */
enum rmq_status command_mark_sent(struct command *c, const char *node, const char *channel_id,
                                  uint64_t now_ms);

/* The device acknowledged send number `attempt`: sent -> delivered. False
 * if the command is elsewhere in its life (a later send, finished). */
bool command_mark_delivered(struct command *c, uint32_t attempt, uint64_t now_ms);

/* Ends the command with a final status; reply (JSON text, may be NULL) is
 * kept. RMQ_EXISTS if it had already ended, RMQ_NOMEM. */
enum rmq_status command_finish(struct command *c, enum command_status status, const char *reply,
                               uint64_t now_ms);

/* The status a reply object gives: failed if it has an "error" member,
 * succeeded otherwise. */
enum command_status command_reply_status(const json_t *reply);

#endif
