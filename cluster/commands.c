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
 * the device may have gone while Redis answered. The endpoints' side (and
 * the ?wait requests) is command_service.c. Loop thread only. */
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

#include "cluster/commands_internal.h"

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

void
commands_local_drop(struct commands *cm, struct local_cmd *lc)
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

struct local_cmd *
commands_local_find(struct commands *cm, const char *id)
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
        commands_local_drop(cm, lc);
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
        commands_local_drop(cm, lc);
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


struct id_ctx *
commands_id_ctx_new(struct commands *cm, const char *id)
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
    struct local_cmd *lc = commands_local_find(cm, x->id);
    free(x);
    if (!lc || cm->closing)
        return;
    lc->busy = false;
    switch (st) {
    case RMQ_OK:
        if (cmd)
            publish(lc, cmd);
        else
            commands_local_drop(cm, lc);
        return;
    case RMQ_LIMIT:
        cm->n.timed_out++;
        log_info("command %s: no reply after %u sends, timed out", lc->id, lc->attempts);
        commands_wake_waiters(cm, lc->id);
        if (cmd)
            commands_tell_waiting_node(cm, cmd);
        commands_local_drop(cm, lc);
        return;
    case RMQ_NOT_FOUND: /* finished, or the device moved on */
        commands_local_drop(cm, lc);
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
    struct id_ctx *x = commands_id_ctx_new(cm, lc->id);
    if (!x) {
        arm(lc, clock_wall_ms() + STORE_RETRY_MS);
        return;
    }
    lc->busy = true;
    char channel_id[CHANNEL_ID_MAX];
    commands_channel_id(cm, lc->dev, channel_id);
    cm->store->ops->send(cm->store, lc->id, cm->cfg->node_id, channel_id, clock_wall_ms(),
                         on_sent, x);
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
void
commands_take_charge(struct commands *cm, struct local_dev *dev, const struct command *cmd)
{
    if (command_status_final(cmd->status) || commands_local_find(cm, cmd->id))
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
            commands_take_charge(cm, dev, &cmds[i]);
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
        commands_local_drop(cm, dev->cmds);
    free_dev(hashmap_remove(cm->devices, device, strlen(device)));
}

void
commands_channel_id(const struct commands *cm, const struct local_dev *dev,
                    char out[CHANNEL_ID_MAX])
{
    snprintf(out, CHANNEL_ID_MAX, "%s/%" PRIu64 "/%" PRIu64, cm->cfg->node_id, cm->cfg->epoch,
             dev->channel);
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
    /* Without node-to-node calls a command created elsewhere meanwhile
     * reaches the device only through this look-up: it always runs. */
    bool none_pending = cm->peers && cm->hint.channel == info->channel &&
                        cm->hint.count == 0 && cm->hint.mark == cm->routed_here;
    cm->hint.count = -1; /* used up */
    if (none_pending) {
        cm->n.pickups_skipped++; /* none pending at the claim, none routed here since */
        free(x);
        return;
    }
    cm->n.pickups++;
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
        struct local_cmd *lc = commands_local_find(cm, x->id);
        if (lc && !lc->busy)
            commands_local_drop(cm, lc);
        commands_wake_waiters(cm, x->id);
        commands_tell_waiting_node(cm, cmd);
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
    struct id_ctx *x = id && strlen(id) == COMMAND_ID_LEN ? commands_id_ctx_new(cm, id) : NULL;
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

/* ---- life cycle ---- */

static void
on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct commands *cm = arg;
    cm->store->ops->sweep(cm->store, clock_wall_ms());
}

static uint64_t
claim_mark(void *ctx)
{
    struct commands *cm = ctx;
    return cm->routed_here;
}

static void
claim_hint(void *ctx, uint64_t channel, uint64_t mark, long long count)
{
    struct commands *cm = ctx;
    cm->hint.channel = channel;
    cm->hint.mark = mark;
    cm->hint.count = count;
}

const struct cluster_pending_watch *
commands_pending_watch(struct commands *cm)
{
    return &cm->watch;
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
    cm->hint.count = -1;
    cm->watch = (struct cluster_pending_watch){.mark = claim_mark, .hint = claim_hint, .ctx = cm};
    cm->store_cfg = cfg->store;
    cm->store_cfg.device_online = device_online;
    cm->store_cfg.device_online_ctx = cm;
    cm->store = link ? command_store_redis_new(link, &cm->store_cfg)
                     : command_store_memory_new(&cm->store_cfg);
    cm->devices = hashmap_new(free_dev);
    cm->active = hashmap_new(NULL);
    cm->tags = hashmap_new(NULL);
    cm->poll_ev = event_new(base, -1, EV_PERSIST, commands_poll, cm);
    cm->sweep_ev = event_new(base, -1, EV_PERSIST, on_sweep, cm);
    struct timeval sweep = {SWEEP_MS / 1000, 0};
    cm->observer = (struct broker_observer){
        .ctx = cm,
        .connected = on_connected,
        .disconnected = on_disconnected,
        .published = on_published,
        .acked = on_acked,
    };
    commands_service_init(cm);
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
        commands_waiter_answer(cm, cm->waiters, 503,
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
