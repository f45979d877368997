/* The command engine; see commands.h.
 *
 * State here is only what this node drives: for every device connected
 * here (by device id, with its channel) the commands this node is sending
 * to it, each with a timer on the broker's wheel. The store is the truth:
 * every send, time-out and reply goes through it, and its guards (still
 * unfinished, device still on this channel) stop a second node or a stale
 * timer from acting twice. A local entry is dropped when the device
 * disconnects; the device's next node picks the command up from the store
 * and goes on from next_ms with the attempts already counted.
 *
 * Store callbacks carry ids, not pointers, and look the entry up again:
 * the device may have gone while Redis answered. Loop thread only. */
#include "cluster/commands.h"

#include <event2/event.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "broker/broker_api.h"
#include "broker/topic.h"
#include "common/clock.h"
#include "common/hashmap.h"
#include "common/log.h"
#include "common/timer_wheel.h"
#include "http/command_api.h"
#include "http/metrics.h"
#include "http/peer_client.h"

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
    X(store_errors, "operations the store (Redis) could not do")

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

struct local_dev {
    uint64_t channel;
    char channel_id[CHANNEL_ID_MAX];
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
    struct counters n;
};

/* ---- topics ---- */

static void
tmpl_init(struct topic_tmpl *t, const char *text)
{
    const char *at = strstr(text, "{device}");
    t->text = text;
    t->has_device = at != NULL;
    t->prefix_len = at ? (size_t)(at - text) : strlen(text);
    t->suffix = at ? at + 8 : "";
    t->suffix_len = strlen(t->suffix);
}

bool
commands_topic_for(const char *tmpl, const char *device, char *out, size_t len)
{
    struct topic_tmpl t;
    tmpl_init(&t, tmpl);
    int n = t.has_device ? snprintf(out, len, "%.*s%s%s", (int)t.prefix_len, tmpl, device,
                                    t.suffix)
                         : snprintf(out, len, "%s", tmpl);
    return n > 0 && (size_t)n < len && n <= 65535 && topic_name_valid(out, (size_t)n);
}

/* True if topic is the reply topic of device. */
static bool
is_reply_topic(const struct topic_tmpl *t, const char *topic, size_t len, const char *device)
{
    if (!t->has_device)
        return len == t->prefix_len && memcmp(topic, t->text, len) == 0;
    size_t dlen = strlen(device);
    return len == t->prefix_len + dlen + t->suffix_len &&
           memcmp(topic, t->text, t->prefix_len) == 0 &&
           memcmp(topic + t->prefix_len, device, dlen) == 0 &&
           memcmp(topic + t->prefix_len + dlen, t->suffix, t->suffix_len) == 0;
}

static const char *
device_of(const struct commands *cm, const char *client_id, const char *username)
{
    if (cm->cfg->device_by_username && username && *username)
        return username;
    return client_id;
}

/* ---- local entries ---- */

static void
local_drop(struct commands *cm, struct local_cmd *lc)
{
    timer_entry_cancel(&lc->timer);
    hashmap_remove(cm->active, lc->id, strlen(lc->id));
    if (lc->tag)
        hashmap_remove(cm->tags, &lc->tag, sizeof(lc->tag));
    struct local_cmd **pp = &lc->dev->cmds;
    while (*pp && *pp != lc)
        pp = &(*pp)->next;
    if (*pp)
        *pp = lc->next;
    free(lc);
}

static struct local_cmd *
local_find(struct commands *cm, const char *id)
{
    return hashmap_get(cm->active, id, strlen(id));
}

static void free_dev(void *v);

static void on_timer(struct timer_entry *e, uint64_t now);

/* Arms lc for wall time at_ms (now if past). */
static void
arm(struct local_cmd *lc, uint64_t at_ms)
{
    struct commands *cm = lc->cm;
    uint64_t wall = clock_wall_ms();
    uint64_t delay = at_ms > wall ? at_ms - wall : 0;
    timer_entry_cancel(&lc->timer);
    timer_wheel_schedule(broker_api_wheel(cm->broker), &lc->timer,
                         broker_api_now(cm->broker) + delay);
}

static void wake_waiters(struct commands *cm, const char *id);
static void tell_waiting_node(struct commands *cm, const struct command *cmd);

/* ---- sending ---- */

/* The payload object with the id added, as compact JSON (malloc'd). */
static char *
wire_payload(const struct commands *cm, const struct command *cmd)
{
    json_t *obj = json_loads(cmd->payload, 0, NULL);
    char *text = NULL;
    if (json_is_object(obj) && json_object_set_new(obj, cm->cfg->id_field, json_string(cmd->id)) == 0)
        text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    return text;
}

/* Publishes cmd to the device's connection and arms the next step. */
static void
publish(struct local_cmd *lc, const struct command *cmd)
{
    struct commands *cm = lc->cm;
    char topic[TOPIC_MAX];
    char *payload = wire_payload(cm, cmd);
    if (!payload || !commands_topic_for(cm->cfg->topic, lc->dev->device, topic, sizeof(topic))) {
        log_warn("command %s: cannot build the message for device %s", cmd->id, lc->dev->device);
        free(payload);
        local_drop(cm, lc);
        return;
    }
    if (lc->tag)
        hashmap_remove(cm->tags, &lc->tag, sizeof(lc->tag));
    lc->tag = ++cm->next_tag;
    lc->attempts = cmd->attempts;
    if (hashmap_put(cm->tags, &lc->tag, sizeof(lc->tag), lc, NULL) != RMQ_OK)
        lc->tag = 0;
    enum rmq_status st = broker_api_deliver(cm->broker, lc->dev->channel, topic, strlen(topic),
                                            payload, strlen(payload), cmd->qos, false, lc->tag);
    free(payload);
    if (st != RMQ_OK) {
        log_info("command %s: device %s is gone from this node (%s)", cmd->id, lc->dev->device,
                 st == RMQ_NOT_FOUND ? "disconnected" : "refused");
        local_drop(cm, lc);
        return;
    }
    if (cmd->attempts == 1)
        cm->n.sent++;
    else
        cm->n.resent++;
    log_debug("command %s: send %u of %u to %s", cmd->id, cmd->attempts, cmd->retries + 1,
              lc->dev->device);
    arm(lc, cmd->next_ms);
}

struct id_ctx {
    struct commands *cm;
    char id[COMMAND_ID_LEN + 1];
};

static struct id_ctx *
id_ctx_new(struct commands *cm, const char *id)
{
    struct id_ctx *x = malloc(sizeof(*x));
    if (x) {
        x->cm = cm;
        snprintf(x->id, sizeof(x->id), "%s", id);
    }
    return x;
}

static void
on_sent(enum rmq_status st, const struct command *cmd, void *arg)
{
    struct id_ctx *x = arg;
    struct commands *cm = x->cm;
    struct local_cmd *lc = local_find(cm, x->id);
    free(x);
    if (!lc || cm->closing)
        return;
    lc->busy = false;
    switch (st) {
    case RMQ_OK:
        if (cmd)
            publish(lc, cmd);
        else
            local_drop(cm, lc);
        return;
    case RMQ_LIMIT:
        cm->n.timed_out++;
        log_info("command %s: no reply after %u sends, timed out", lc->id, lc->attempts);
        wake_waiters(cm, lc->id);
        if (cmd)
            tell_waiting_node(cm, cmd);
        local_drop(cm, lc);
        return;
    case RMQ_NOT_FOUND: /* finished, or the device moved on */
        local_drop(cm, lc);
        return;
    default:
        cm->n.store_errors++;
        arm(lc, clock_wall_ms() + STORE_RETRY_MS);
        return;
    }
}

/* The store decides: send again, or time out. */
static void
step(struct local_cmd *lc)
{
    struct commands *cm = lc->cm;
    struct id_ctx *x = id_ctx_new(cm, lc->id);
    if (!x) {
        arm(lc, clock_wall_ms() + STORE_RETRY_MS);
        return;
    }
    lc->busy = true;
    cm->store->ops->send(cm->store, lc->id, cm->cfg->node_id, lc->dev->channel_id,
                         clock_wall_ms(), on_sent, x);
}

static void
on_timer(struct timer_entry *e, uint64_t now)
{
    (void)now;
    struct local_cmd *lc = (struct local_cmd *)e;
    if (!lc->busy)
        step(lc);
}

/* Takes charge of cmd for dev: a queued command with sends left goes out
 * now; one already in flight continues at its next_ms. */
static void
take_charge(struct commands *cm, struct local_dev *dev, const struct command *cmd)
{
    if (command_status_final(cmd->status) || local_find(cm, cmd->id))
        return;
    struct local_cmd *lc = calloc(1, sizeof(*lc));
    if (!lc || hashmap_put(cm->active, cmd->id, strlen(cmd->id), lc, NULL) != RMQ_OK) {
        free(lc);
        log_warn("command %s: out of memory, left for later", cmd->id);
        return;
    }
    timer_entry_init(&lc->timer, on_timer);
    lc->cm = cm;
    lc->dev = dev;
    lc->attempts = cmd->attempts;
    memcpy(lc->id, cmd->id, sizeof(lc->id));
    lc->next = dev->cmds;
    dev->cmds = lc;
    if (cmd->status == COMMAND_QUEUED && command_may_send(cmd))
        step(lc);
    else if (cmd->next_ms)
        arm(lc, cmd->next_ms);
    else /* re-queued with every send spent: one more wait for a late reply */
        arm(lc, clock_wall_ms() + cmd->interval_ms);
}

/* ---- the broker's observer ---- */

static void
free_dev(void *v)
{
    struct local_dev *dev = v;
    if (!dev)
        return;
    while (dev->cmds) {
        struct local_cmd *lc = dev->cmds;
        dev->cmds = lc->next;
        timer_entry_cancel(&lc->timer);
        free(lc);
    }
    free(dev);
}

struct pickup_ctx {
    struct commands *cm;
    uint64_t channel;
    char device[];
};

static void
on_pending(enum rmq_status st, struct command *cmds, size_t n, void *arg)
{
    struct pickup_ctx *x = arg;
    struct commands *cm = x->cm;
    struct local_dev *dev = hashmap_get(cm->devices, x->device, strlen(x->device));
    if (st != RMQ_OK)
        cm->n.store_errors++;
    if (dev && dev->channel == x->channel && !cm->closing) {
        if (n > 0)
            log_info("device %s: %zu pending command(s) picked up", x->device, n);
        for (size_t i = 0; i < n; i++)
            take_charge(cm, dev, &cmds[i]);
    }
    free(x);
}

/* Forgets what this node was sending to device (and its entry). */
static void
forget_device(struct commands *cm, const char *device)
{
    struct local_dev *dev = hashmap_get(cm->devices, device, strlen(device));
    if (!dev)
        return;
    while (dev->cmds)
        local_drop(cm, dev->cmds);
    free_dev(hashmap_remove(cm->devices, device, strlen(device)));
}

static void
on_connected(void *ctx, const struct broker_client_info *info)
{
    struct commands *cm = ctx;
    const char *device = device_of(cm, info->client_id, info->username);
    size_t len = strlen(device);
    forget_device(cm, device); /* a takeover on this node: the old connection's entries go */
    struct local_dev *dev = calloc(1, sizeof(*dev) + len + 1);
    struct pickup_ctx *x = malloc(sizeof(*x) + len + 1);
    if (!dev || !x || hashmap_put(cm->devices, device, len, dev, NULL) != RMQ_OK) {
        free(dev);
        free(x);
        log_warn("device %s: out of memory, its pending commands wait", device);
        return;
    }
    memcpy(dev->device, device, len + 1);
    dev->channel = info->channel;
    snprintf(dev->channel_id, sizeof(dev->channel_id), "%s/%" PRIu64 "/%" PRIu64,
             cm->cfg->node_id, cm->cfg->epoch, info->channel);
    x->cm = cm;
    x->channel = info->channel;
    memcpy(x->device, device, len + 1);
    cm->store->ops->pending(cm->store, device, on_pending, x);
}

static void
on_disconnected(void *ctx, const struct broker_client_info *info, enum close_reason reason)
{
    (void)reason;
    struct commands *cm = ctx;
    const char *device = device_of(cm, info->client_id, info->username);
    struct local_dev *dev = hashmap_get(cm->devices, device, strlen(device));
    if (dev && dev->channel == info->channel)
        forget_device(cm, device);
}

static void
on_acked(void *ctx, uint64_t channel, uint64_t tag)
{
    struct commands *cm = ctx;
    struct local_cmd *lc = hashmap_get(cm->tags, &tag, sizeof(tag));
    if (!lc || lc->dev->channel != channel)
        return;
    cm->n.delivered++;
    cm->store->ops->delivered(cm->store, lc->id, lc->attempts, clock_wall_ms());
}

static void
on_replied(enum rmq_status st, const struct command *cmd, void *arg)
{
    struct id_ctx *x = arg;
    struct commands *cm = x->cm;
    if (st == RMQ_OK && cmd) {
        if (cmd->status == COMMAND_FAILED)
            cm->n.failed++;
        else
            cm->n.succeeded++;
        log_info("command %s: device %s answered, %s after %u send(s)", cmd->id, cmd->device,
                 command_status_name(cmd->status), cmd->attempts);
        struct local_cmd *lc = local_find(cm, x->id);
        if (lc && !lc->busy)
            local_drop(cm, lc);
        wake_waiters(cm, x->id);
        tell_waiting_node(cm, cmd);
    } else if (st == RMQ_IO || st == RMQ_NOMEM) {
        cm->n.store_errors++;
        log_warn("command %s: the reply could not be recorded (store unavailable)", x->id);
    } else {
        cm->n.reply_unknown++;
        log_debug("reply to command %s ignored: %s", x->id,
                  st == RMQ_EXISTS ? "already finished"
                  : st == RMQ_INVALID ? "another device's command"
                                      : "unknown id");
    }
    free(x);
}

static void
on_published(void *ctx, const struct broker_publish_info *m)
{
    struct commands *cm = ctx;
    const char *device = device_of(cm, m->client_id, m->username);
    if (!is_reply_topic(&cm->reply, m->topic, m->topic_len, device))
        return;
    json_t *reply = json_loadb((const char *)m->payload, m->payload_len, 0, NULL);
    const char *id = json_string_value(json_object_get(reply, cm->cfg->id_field));
    char *text = json_is_object(reply) ? json_dumps(reply, JSON_COMPACT) : NULL;
    struct id_ctx *x = id && strlen(id) == COMMAND_ID_LEN ? id_ctx_new(cm, id) : NULL;
    if (!x || !text) {
        if (!json_is_object(reply) || !id)
            cm->n.reply_invalid++;
        else
            cm->n.reply_unknown++;
        free(x);
    } else {
        cm->store->ops->reply(cm->store, id, device, text, command_reply_status(reply),
                              clock_wall_ms(), on_replied, x);
    }
    free(text);
    json_decref(reply);
}

/* ---- waiting requests (?wait) ---- */

static void
waiter_answer(struct commands *cm, struct waiter *w, unsigned status, json_t *body)
{
    struct waiter **pp = &cm->waiters;
    while (*pp && *pp != w)
        pp = &(*pp)->next;
    if (*pp)
        *pp = w->next;
    w->cb(status, body, w->arg);
    free(w);
    if (!cm->waiters && cm->poll_ev)
        event_del(cm->poll_ev);
}

struct waiter_ctx {
    struct commands *cm;
    struct waiter *w;
    bool force; /* answer even if unfinished (deadline, shutdown) */
};

static void
on_waiter_get(enum rmq_status st, const struct command *cmd, void *arg)
{
    struct waiter_ctx *x = arg;
    struct waiter *w = x->w;
    w->busy = false;
    if (st == RMQ_OK && cmd && (x->force || command_status_final(cmd->status)))
        waiter_answer(x->cm, w, command_status_final(cmd->status) ? 200 : 202,
                      command_json(cmd));
    else if (st != RMQ_OK && x->force)
        waiter_answer(x->cm, w, st == RMQ_NOT_FOUND ? 404 : 503,
                      command_api_error(st == RMQ_NOT_FOUND ? "command_not_found"
                                                            : "redis_unavailable",
                                        "command %s: %s", w->id,
                                        st == RMQ_NOT_FOUND ? "no longer known"
                                                            : "the store is unreachable"));
    free(x);
}

static void
waiter_check(struct commands *cm, struct waiter *w, bool force)
{
    if (w->busy)
        return;
    struct waiter_ctx *x = malloc(sizeof(*x));
    if (!x)
        return;
    *x = (struct waiter_ctx){cm, w, force};
    w->busy = true;
    cm->store->ops->get(cm->store, w->id, on_waiter_get, x);
}

static void
wake_waiters(struct commands *cm, const char *id)
{
    for (struct waiter *w = cm->waiters, *next; w; w = next) {
        next = w->next;
        if (strcmp(w->id, id) == 0)
            waiter_check(cm, w, false);
    }
}

static void
on_told(const struct peer_result *res, void *arg)
{
    (void)res;
    (void)arg;
}

/* A request waits for cmd on the node that accepted it: tell that node it
 * ended (its polling would notice within WAIT_POLL_MS anyway). */
static void
tell_waiting_node(struct commands *cm, const struct command *cmd)
{
    if (!cmd->notify_addr || !cmd->accepted_by || !cm->peers ||
        strcmp(cmd->accepted_by, cm->cfg->node_id) == 0)
        return;
    char path[128];
    snprintf(path, sizeof(path), "/internal/v1/commands/%s/finished", cmd->id);
    peer_client_request(cm->peers, cmd->notify_addr, "POST", path, NULL, on_told, NULL);
}

static void
svc_finished(void *ctx, const char *id, command_answer_fn cb, void *arg)
{
    struct commands *cm = ctx;
    wake_waiters(cm, id);
    cb(202, json_pack("{s:s}", "id", id), arg);
}

/* Every WAIT_POLL_MS while requests wait: the command may finish on
 * another node, which only the store tells. */
static void
on_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct commands *cm = arg;
    uint64_t now = clock_monotonic_ms();
    for (struct waiter *w = cm->waiters, *next; w; w = next) {
        next = w->next;
        waiter_check(cm, w, now >= w->deadline);
    }
}

static void
wait_for(struct commands *cm, const char *id, uint64_t wait_ms, command_answer_fn cb, void *arg,
         json_t *now_body, unsigned now_status)
{
    struct waiter *w = calloc(1, sizeof(*w));
    struct timeval tv = {WAIT_POLL_MS / 1000, (WAIT_POLL_MS % 1000) * 1000};
    if (!w || (!cm->waiters && event_add(cm->poll_ev, &tv) != 0)) {
        free(w);
        cb(now_status, now_body, arg); /* cannot wait: answer as it stands */
        return;
    }
    json_decref(now_body);
    w->cb = cb;
    w->arg = arg;
    w->deadline = clock_monotonic_ms() + wait_ms;
    snprintf(w->id, sizeof(w->id), "%s", id);
    w->next = cm->waiters;
    cm->waiters = w;
}

/* ---- the service (admin and internal endpoints) ---- */

static unsigned
error_status(enum rmq_status st)
{
    return st == RMQ_NOT_FOUND ? 404 : st == RMQ_IO ? 503 : 500;
}

static json_t *
store_error(enum rmq_status st, const char *id)
{
    if (st == RMQ_NOT_FOUND)
        return command_api_error("command_not_found", "no command %s", id ? id : "");
    if (st == RMQ_IO)
        return command_api_error("redis_unavailable", "the command store (Redis) is unreachable");
    return command_api_error("internal", "out of memory");
}

struct submit_ctx {
    struct commands *cm;
    command_answer_fn cb;
    void *arg;
    uint64_t wait_ms;
};

static void
on_forwarded(const struct peer_result *res, void *arg)
{
    struct id_ctx *x = arg;
    if (res->error != PEER_OK || res->status >= 300) {
        x->cm->n.forward_failed++;
        log_info("command %s: hand-over to the device's node failed (%s, HTTP %d); it waits "
                 "for the device to reconnect",
                 x->id, peer_error_name(res->error), res->status);
    }
    free(x);
}

/* Sends the command to where the device is: here, another node, or
 * nowhere (it stays queued for the device's next connection). */
static void
route_command(struct commands *cm, const struct command *cmd, const struct command_owner *owner)
{
    struct local_dev *dev = hashmap_get(cm->devices, cmd->device, strlen(cmd->device));
    if (dev && (!owner || !*owner->node || strcmp(owner->channel_id, dev->channel_id) == 0)) {
        take_charge(cm, dev, cmd);
        return;
    }
    if (!owner || !*owner->node || strcmp(owner->node, cm->cfg->node_id) == 0)
        return; /* offline (or connecting here: the pickup finds it) */
    if (!cm->peers || !*owner->addr) {
        cm->n.forward_failed++;
        log_warn("command %s: device %s is on node %s, which this node cannot reach (no "
                 "--internal/--cluster-secret here or no address there)",
                 cmd->id, cmd->device, owner->node);
        return;
    }
    char path[128];
    snprintf(path, sizeof(path), "/internal/v1/commands/%s/dispatch", cmd->id);
    json_t *body = json_pack("{s:s}", "device", cmd->device);
    struct id_ctx *x = body ? id_ctx_new(cm, cmd->id) : NULL;
    if (x && peer_client_request(cm->peers, owner->addr, "POST", path, body, on_forwarded, x) ==
                 RMQ_OK) {
        cm->n.forwarded++;
    } else {
        free(x);
        cm->n.forward_failed++;
    }
    json_decref(body);
}

static void
on_created(enum rmq_status st, bool created, const struct command *cmd,
           const struct command_owner *owner, void *arg)
{
    struct submit_ctx *x = arg;
    struct commands *cm = x->cm;
    if (st != RMQ_OK || !cmd) {
        cm->n.store_errors += st == RMQ_IO;
        x->cb(error_status(st), store_error(st, NULL), x->arg);
        free(x);
        return;
    }
    json_t *body = command_json(cmd);
    unsigned status = created ? 202 : 200;
    if (created) {
        cm->n.accepted++;
        log_info("command %s for device %s accepted (qos %u, %u retries every %" PRIu64 " ms)",
                 cmd->id, cmd->device, cmd->qos, cmd->retries, cmd->interval_ms);
    } else {
        cm->n.duplicate++;
    }
    if (!command_status_final(cmd->status) && !cm->closing)
        route_command(cm, cmd, owner);
    if (x->wait_ms > 0 && !command_status_final(cmd->status) && body)
        wait_for(cm, cmd->id, x->wait_ms, x->cb, x->arg, body, status);
    else
        x->cb(command_status_final(cmd->status) ? 200 : status, body, x->arg);
    free(x);
}

static void
svc_submit(void *ctx, const struct command_request *req, command_answer_fn cb, void *arg)
{
    struct commands *cm = ctx;
    const struct commands_config *cfg = cm->cfg;
    char topic[TOPIC_MAX];
    if (!commands_topic_for(cfg->topic, req->device, topic, sizeof(topic)) ||
        !commands_topic_for(cfg->reply_topic, req->device, topic, sizeof(topic))) {
        cb(400, command_api_error("bad_parameter",
                                  "device '%s' does not make a valid topic name (no + or #)",
                                  req->device),
           arg);
        return;
    }
    uint64_t now = clock_wall_ms();
    struct command cmd = {
        .device = req->device,
        .status = COMMAND_QUEUED,
        .retries = req->retries >= 0 ? (uint32_t)req->retries : cfg->max_retries,
        .qos = req->qos >= 0 ? (uint8_t)req->qos : 1,
        .interval_ms = req->interval_ms ? req->interval_ms : cfg->retry_interval_ms,
        .ttl_ms = req->ttl_ms ? req->ttl_ms : cfg->ttl_ms,
        .idempotency_key = req->idempotency_key,
        .notify = req->wait_ms > 0,
        .node = (char *)cfg->node_id,
        .accepted_by = (char *)cfg->node_id,
        .created_ms = now,
        .updated_ms = now,
    };
    cmd.expires_ms = now + cmd.ttl_ms;
    command_new_id(cmd.id, now);
    cmd.payload = json_dumps(req->payload, JSON_COMPACT);
    struct submit_ctx *x = malloc(sizeof(*x));
    if (!cmd.payload || !x) {
        free(cmd.payload);
        free(x);
        cb(500, command_api_error("internal", "out of memory"), arg);
        return;
    }
    *x = (struct submit_ctx){cm, cb, arg, req->wait_ms};
    cm->store->ops->create(cm->store, &cmd, on_created, x);
    free(cmd.payload);
}

struct answer_ctx {
    struct commands *cm;
    command_answer_fn cb;
    void *arg;
    char id[COMMAND_ID_LEN + 1];
};

static struct answer_ctx *
answer_ctx_new(struct commands *cm, command_answer_fn cb, void *arg, const char *id)
{
    struct answer_ctx *x = malloc(sizeof(*x));
    if (!x) {
        cb(500, command_api_error("internal", "out of memory"), arg);
        return NULL;
    }
    *x = (struct answer_ctx){.cm = cm, .cb = cb, .arg = arg};
    snprintf(x->id, sizeof(x->id), "%s", id ? id : "");
    return x;
}

static void
on_got(enum rmq_status st, const struct command *cmd, void *arg)
{
    struct answer_ctx *x = arg;
    if (st == RMQ_OK && cmd)
        x->cb(200, command_json(cmd), x->arg);
    else
        x->cb(error_status(st), store_error(st, x->id), x->arg);
    free(x);
}

/* Ids are COMMAND_ID_LEN hex digits; anything else is not one of ours. */
static bool
id_valid(const char *id)
{
    if (strlen(id) != COMMAND_ID_LEN)
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

static void
svc_get(void *ctx, const char *id, command_answer_fn cb, void *arg)
{
    struct commands *cm = ctx;
    if (!id_valid(id)) {
        cb(404, store_error(RMQ_NOT_FOUND, id), arg);
        return;
    }
    struct answer_ctx *x = answer_ctx_new(cm, cb, arg, id);
    if (x)
        cm->store->ops->get(cm->store, id, on_got, x);
}

static void
on_listed(enum rmq_status st, json_t *result, void *arg)
{
    struct answer_ctx *x = arg;
    if (st == RMQ_OK)
        x->cb(200, result, x->arg);
    else if (st == RMQ_INVALID)
        x->cb(400, command_api_error("bad_parameter", "cursor: not one this API gave"), x->arg);
    else
        x->cb(error_status(st), store_error(st, NULL), x->arg);
    free(x);
}

static void
svc_list(void *ctx, const char *device, const char *cursor, size_t limit, command_answer_fn cb,
         void *arg)
{
    struct commands *cm = ctx;
    if (cursor && !id_valid(cursor)) {
        cb(400, command_api_error("bad_parameter", "cursor: not one this API gave"), arg);
        return;
    }
    struct answer_ctx *x = answer_ctx_new(cm, cb, arg, NULL);
    if (x)
        cm->store->ops->list(cm->store, device, cursor, limit, on_listed, x);
}

static void
on_canceled(enum rmq_status st, const struct command *cmd, void *arg)
{
    struct answer_ctx *x = arg;
    struct commands *cm = x->cm;
    if (st == RMQ_OK && cmd) {
        cm->n.canceled++;
        log_info("command %s canceled", x->id);
        struct local_cmd *lc = local_find(cm, x->id);
        if (lc && !lc->busy)
            local_drop(cm, lc);
        x->cb(200, command_json(cmd), x->arg);
        wake_waiters(cm, x->id);
    } else if (st == RMQ_EXISTS && cmd) {
        json_t *err = command_api_error("command_finished", "command %s already ended: %s",
                                        x->id, command_status_name(cmd->status));
        if (err)
            json_object_set_new(err, "command", command_json(cmd));
        x->cb(409, err, x->arg);
    } else {
        x->cb(error_status(st), store_error(st, x->id), x->arg);
    }
    free(x);
}

static void
svc_cancel(void *ctx, const char *id, command_answer_fn cb, void *arg)
{
    struct commands *cm = ctx;
    if (!id_valid(id)) {
        cb(404, store_error(RMQ_NOT_FOUND, id), arg);
        return;
    }
    struct answer_ctx *x = answer_ctx_new(cm, cb, arg, id);
    if (x)
        cm->store->ops->cancel(cm->store, id, clock_wall_ms(), on_canceled, x);
}

static void
on_dispatch_got(enum rmq_status st, const struct command *cmd, void *arg)
{
    struct answer_ctx *x = arg;
    struct commands *cm = x->cm;
    struct local_dev *dev =
        cmd ? hashmap_get(cm->devices, cmd->device, strlen(cmd->device)) : NULL;
    if (st != RMQ_OK || !cmd) {
        x->cb(error_status(st), store_error(st, x->id), x->arg);
    } else if (!dev) {
        x->cb(404, command_api_error("device_not_here", "device %s is not connected to %s",
                                     cmd->device, cm->cfg->node_id),
              x->arg);
    } else {
        take_charge(cm, dev, cmd);
        x->cb(202, json_pack("{s:s,s:s}", "id", cmd->id, "node", cm->cfg->node_id), x->arg);
    }
    free(x);
}

static void
svc_dispatch(void *ctx, const char *id, const char *device, command_answer_fn cb, void *arg)
{
    struct commands *cm = ctx;
    (void)device; /* the stored command names its device */
    if (!id_valid(id)) {
        cb(404, store_error(RMQ_NOT_FOUND, id), arg);
        return;
    }
    struct answer_ctx *x = answer_ctx_new(cm, cb, arg, id);
    if (x)
        cm->store->ops->get(cm->store, id, on_dispatch_got, x);
}

/* ---- life cycle ---- */

static void
on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct commands *cm = arg;
    cm->store->ops->sweep(cm->store, clock_wall_ms());
}

static bool
device_online(void *ctx, const char *device)
{
    struct commands *cm = ctx;
    return hashmap_get(cm->devices, device, strlen(device)) != NULL;
}

static bool
tmpl_valid(const char *name, const char *tmpl)
{
    char topic[TOPIC_MAX];
    const char *at = strstr(tmpl, "{device}");
    if ((at && strstr(at + 1, "{device}")) || !commands_topic_for(tmpl, "d", topic, sizeof(topic))) {
        log_error("%s: '%s' is not a topic name with at most one {device}", name, tmpl);
        return false;
    }
    return true;
}

struct commands *
commands_new(struct event_base *base, struct broker *broker, const struct commands_config *cfg,
             struct redis_link *link)
{
    if (!tmpl_valid("command-topic", cfg->topic) ||
        !tmpl_valid("command-reply-topic", cfg->reply_topic))
        return NULL;
    if (!*cfg->id_field) {
        log_error("command-id-field: must not be empty");
        return NULL;
    }
    struct commands *cm = calloc(1, sizeof(*cm));
    if (!cm)
        return NULL;
    cm->base = base;
    cm->broker = broker;
    cm->cfg = cfg;
    tmpl_init(&cm->topic, cfg->topic);
    tmpl_init(&cm->reply, cfg->reply_topic);
    cm->store_cfg = cfg->store;
    cm->store_cfg.device_online = device_online;
    cm->store_cfg.device_online_ctx = cm;
    cm->store = link ? command_store_redis_new(link, &cm->store_cfg)
                     : command_store_memory_new(&cm->store_cfg);
    cm->devices = hashmap_new(free_dev);
    cm->active = hashmap_new(NULL);
    cm->tags = hashmap_new(NULL);
    cm->poll_ev = event_new(base, -1, EV_PERSIST, on_poll, cm);
    cm->sweep_ev = event_new(base, -1, EV_PERSIST, on_sweep, cm);
    struct timeval sweep = {SWEEP_MS / 1000, 0};
    cm->observer = (struct broker_observer){
        .ctx = cm,
        .connected = on_connected,
        .disconnected = on_disconnected,
        .published = on_published,
        .acked = on_acked,
    };
    cm->service = (struct command_service){
        .ctx = cm,
        .submit = svc_submit,
        .get = svc_get,
        .list = svc_list,
        .cancel = svc_cancel,
        .dispatch = svc_dispatch,
        .finished = svc_finished,
    };
    if (!cm->store || !cm->devices || !cm->active || !cm->tags || !cm->poll_ev ||
        !cm->sweep_ev || event_add(cm->sweep_ev, &sweep) != 0 ||
        broker_add_observer(broker, &cm->observer) != RMQ_OK) {
        log_error("commands: cannot start (out of memory or too many observers)");
        commands_free(cm);
        return NULL;
    }
    return cm;
}

void
commands_free(struct commands *cm)
{
    if (!cm)
        return;
    cm->closing = true;
    broker_remove_observer(cm->broker, &cm->observer);
    /* The Redis link may be gone already: waiting requests just end. */
    while (cm->waiters)
        waiter_answer(cm, cm->waiters, 503,
                      command_api_error("shutting_down", "the node is stopping"));
    hashmap_free(cm->devices); /* frees every local entry and cancels its timer */
    hashmap_free(cm->active);
    hashmap_free(cm->tags);
    if (cm->poll_ev)
        event_free(cm->poll_ev);
    if (cm->sweep_ev)
        event_free(cm->sweep_ev);
    if (cm->store)
        cm->store->ops->free(cm->store);
    free(cm);
}

void
commands_set_peers(struct commands *cm, struct peer_client *peers)
{
    cm->peers = peers;
}

const struct command_service *
commands_service(struct commands *cm)
{
    return &cm->service;
}

void
commands_write_metrics(FILE *out, void *arg)
{
    const struct commands *cm = arg;
    metrics_family(out, "relaymq_commands_total", "counter",
                   "device command events on this node, by event");
#define X(name, help) \
    fprintf(out, "relaymq_commands_total{event=\"" #name "\"} %" PRIu64 "\n", cm->n.name);
    COMMAND_COUNTERS(X)
#undef X
    metrics_family(out, "relaymq_commands_active", "gauge",
                   "commands this node is sending (with a retry timer)");
    fprintf(out, "relaymq_commands_active %zu\n", hashmap_count(cm->active));
    size_t waiting = 0;
    for (const struct waiter *w = cm->waiters; w; w = w->next)
        waiting++;
    metrics_family(out, "relaymq_commands_waiting_requests", "gauge",
                   "API requests waiting (?wait) for a command to finish");
    fprintf(out, "relaymq_commands_waiting_requests %zu\n", waiting);
}
