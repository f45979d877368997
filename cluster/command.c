/* The command record and its state machine (see command.h). Pure: no I/O,
 * time comes in as an argument; any thread. */
#include "cluster/command.h"

#include <openssl/rand.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"

static const char *const status_names[] = {
    [COMMAND_QUEUED] = "queued",       [COMMAND_SENT] = "sent",
    [COMMAND_DELIVERED] = "delivered", [COMMAND_SUCCEEDED] = "succeeded",
    [COMMAND_FAILED] = "failed",       [COMMAND_TIMED_OUT] = "timed_out",
    [COMMAND_EXPIRED] = "expired",     [COMMAND_CANCELED] = "canceled",
};

const char *
command_status_name(enum command_status s)
{
    return (unsigned)s < sizeof(status_names) / sizeof(status_names[0]) ? status_names[s] : "?";
}

bool
command_status_parse(const char *name, enum command_status *out)
{
    for (size_t i = 0; i < sizeof(status_names) / sizeof(status_names[0]); i++) {
        if (name && strcmp(name, status_names[i]) == 0) {
            *out = (enum command_status)i;
            return true;
        }
    }
    return false;
}

bool
command_status_final(enum command_status s)
{
    return s >= COMMAND_SUCCEEDED;
}

void
command_clear(struct command *c)
{
    if (!c)
        return;
    free(c->device);
    free(c->payload);
    free(c->idempotency_key);
    free(c->reply);
    free(c->node);
    free(c->accepted_by);
    free(c->channel_id);
    free(c->notify_addr);
    memset(c, 0, sizeof(*c));
}

/* Replaces *slot with a copy of text (NULL allowed). */
static enum rmq_status
set_text(char **slot, const char *text)
{
    char *copy = NULL;
    if (text && !(copy = strdup(text)))
        return RMQ_NOMEM;
    free(*slot);
    *slot = copy;
    return RMQ_OK;
}

enum rmq_status
command_copy(struct command *dst, const struct command *src)
{
    *dst = *src;
    dst->device = dst->payload = dst->idempotency_key = dst->reply = NULL;
    dst->node = dst->accepted_by = dst->channel_id = dst->notify_addr = NULL;
    if (set_text(&dst->device, src->device) != RMQ_OK ||
        set_text(&dst->payload, src->payload) != RMQ_OK ||
        set_text(&dst->idempotency_key, src->idempotency_key) != RMQ_OK ||
        set_text(&dst->reply, src->reply) != RMQ_OK || set_text(&dst->node, src->node) != RMQ_OK ||
        set_text(&dst->accepted_by, src->accepted_by) != RMQ_OK ||
        set_text(&dst->channel_id, src->channel_id) != RMQ_OK ||
        set_text(&dst->notify_addr, src->notify_addr) != RMQ_OK) {
        command_clear(dst);
        return RMQ_NOMEM;
    }
    return RMQ_OK;
}

static json_t *
time_json(uint64_t ms)
{
    char text[40];
    return ms && clock_iso8601(ms, text, sizeof(text)) ? json_string(text) : json_null();
}

/* Stored JSON text back as a value; text that does not parse (it always
 * should) is shown as a string rather than lost. */
static json_t *
stored_json(const char *text)
{
    if (!text)
        return json_null();
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    return v ? v : json_string(text);
}

json_t *
command_json(const struct command *c)
{
    json_t *j = json_object();
    if (!j)
        return NULL;
    int bad = 0;
    bad |= json_object_set_new(j, "id", json_string(c->id));
    bad |= json_object_set_new(j, "device", json_string(c->device ? c->device : ""));
    bad |= json_object_set_new(j, "status", json_string(command_status_name(c->status)));
    bad |= json_object_set_new(j, "attempts", json_integer(c->attempts));
    bad |= json_object_set_new(j, "retries", json_integer(c->retries));
    bad |= json_object_set_new(j, "interval_ms", json_integer((json_int_t)c->interval_ms));
    bad |= json_object_set_new(j, "ttl_ms", json_integer((json_int_t)c->ttl_ms));
    bad |= json_object_set_new(j, "qos", json_integer(c->qos));
    bad |= json_object_set_new(j, "payload", stored_json(c->payload));
    bad |= json_object_set_new(j, "idempotency_key", c->idempotency_key
                                                         ? json_string(c->idempotency_key)
                                                         : json_null());
    bad |= json_object_set_new(j, "reply", stored_json(c->reply));
    bad |= json_object_set_new(j, "node", c->node ? json_string(c->node) : json_null());
    bad |= json_object_set_new(j, "accepted_by",
                               c->accepted_by ? json_string(c->accepted_by) : json_null());
    bad |= json_object_set_new(j, "created_at", time_json(c->created_ms));
    bad |= json_object_set_new(j, "updated_at", time_json(c->updated_ms));
    bad |= json_object_set_new(j, "created_at_ms", json_integer((json_int_t)c->created_ms));
    bad |= json_object_set_new(j, "updated_at_ms", json_integer((json_int_t)c->updated_ms));
    bad |= json_object_set_new(j, "expires_at_ms", json_integer((json_int_t)c->expires_ms));
    if (bad) {
        json_decref(j);
        return NULL;
    }
    return j;
}

void
command_new_id(char out[COMMAND_ID_LEN + 1], uint64_t now_ms)
{
    static atomic_uint counter;
    unsigned n = atomic_fetch_add(&counter, 1u) & 0xffffu;
    uint32_t rnd = 0;
    if (RAND_bytes((unsigned char *)&rnd, sizeof(rnd)) != 1)
        rnd = (uint32_t)clock_monotonic_ms() ^ (uint32_t)(uintptr_t)&rnd;
    snprintf(out, COMMAND_ID_LEN + 1, "%012llx%04x%08x",
             (unsigned long long)(now_ms & 0xffffffffffffull), n, (unsigned)rnd);
}

bool
command_may_send(const struct command *c)
{
    return !command_status_final(c->status) && c->attempts < c->retries + 1u;
}

enum rmq_status
command_mark_sent(struct command *c, const char *node, const char *channel_id, uint64_t now_ms)
{
    if (set_text(&c->node, node) != RMQ_OK || set_text(&c->channel_id, channel_id) != RMQ_OK)
        return RMQ_NOMEM;
    c->attempts++;
    c->status = COMMAND_SENT;
    c->updated_ms = now_ms;
    c->next_ms = now_ms + c->interval_ms;
    return RMQ_OK;
}

bool
command_mark_delivered(struct command *c, uint32_t attempt, uint64_t now_ms)
{
    if (c->status != COMMAND_SENT || c->attempts != attempt)
        return false;
    c->status = COMMAND_DELIVERED;
    c->updated_ms = now_ms;
    return true;
}

enum rmq_status
command_finish(struct command *c, enum command_status status, const char *reply, uint64_t now_ms)
{
    if (command_status_final(c->status))
        return RMQ_EXISTS;
    if (reply && set_text(&c->reply, reply) != RMQ_OK)
        return RMQ_NOMEM;
    c->status = status;
    c->updated_ms = now_ms;
    c->next_ms = 0;
    return RMQ_OK;
}

enum command_status
command_reply_status(const json_t *reply)
{
    return json_object_get(reply, "error") ? COMMAND_FAILED : COMMAND_SUCCEEDED;
}
