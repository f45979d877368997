/* The command service: what the admin endpoints (submit, get, list,
 * cancel) and the internal ones (dispatch, finished) ask of the command
 * engine, and the API requests waiting (?wait) for a command to end, which
 * the engine wakes when a command ends here and a 100 ms poll of the store
 * covers when it ends elsewhere. See commands.h. Loop thread only. */
#include <event2/event.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/commands_internal.h"
#include "common/clock.h"
#include "common/hashmap.h"
#include "common/log.h"
#include "http/peer_client.h"

/* ---- waiting requests (?wait) ---- */

void
commands_waiter_answer(struct commands *cm, struct waiter *w, unsigned status, json_t *body)
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
        commands_waiter_answer(x->cm, w, command_status_final(cmd->status) ? 200 : 202,
                      command_json(cmd));
    else if (st != RMQ_OK && x->force)
        commands_waiter_answer(x->cm, w, st == RMQ_NOT_FOUND ? 404 : 503,
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

void
commands_wake_waiters(struct commands *cm, const char *id)
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
void
commands_tell_waiting_node(struct commands *cm, const struct command *cmd)
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
    commands_wake_waiters(cm, id);
    cb(202, json_pack("{s:s}", "id", id), arg);
}

/* Every WAIT_POLL_MS while requests wait: the command may finish on
 * another node, which only the store tells. */
void
commands_poll(evutil_socket_t fd, short what, void *arg)
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
    char channel_id[CHANNEL_ID_MAX];
    if (dev)
        commands_channel_id(cm, dev, channel_id);
    if (dev && (!owner || !*owner->node || strcmp(owner->channel_id, channel_id) == 0)) {
        commands_take_charge(cm, dev, cmd);
        return;
    }
    if (owner && *owner->node && strcmp(owner->node, cm->cfg->node_id) == 0)
        cm->routed_here++; /* connecting here: the pickup must look */
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
    struct id_ctx *x = body ? commands_id_ctx_new(cm, cmd->id) : NULL;
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
        struct local_cmd *lc = commands_local_find(cm, x->id);
        if (lc && !lc->busy)
            commands_local_drop(cm, lc);
        x->cb(200, command_json(cmd), x->arg);
        commands_wake_waiters(cm, x->id);
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
        commands_take_charge(cm, dev, cmd);
        x->cb(202, json_pack("{s:s,s:s}", "id", cmd->id, "node", cm->cfg->node_id), x->arg);
    }
    free(x);
}

static void
svc_dispatch(void *ctx, const char *id, const char *device, command_answer_fn cb, void *arg)
{
    struct commands *cm = ctx;
    (void)device; /* the stored command names its device */
    cm->routed_here++; /* the device may be connecting: its pickup must look */
    if (!id_valid(id)) {
        cb(404, store_error(RMQ_NOT_FOUND, id), arg);
        return;
    }
    struct answer_ctx *x = answer_ctx_new(cm, cb, arg, id);
    if (x)
        cm->store->ops->get(cm->store, id, on_dispatch_got, x);
}

void
commands_service_init(struct commands *cm)
{
    cm->service = (struct command_service){
        .ctx = cm,
        .submit = svc_submit,
        .get = svc_get,
        .list = svc_list,
        .cancel = svc_cancel,
        .dispatch = svc_dispatch,
        .finished = svc_finished,
    };
}
