/* The command store of a standalone node: commands in this process's
 * memory, gone with it. Same rules as the Redis store (command.h's state
 * machine), minus the events stream and the registry: the engine knows
 * which devices are connected here.
 *
 * Every command is in `by_id` and in its device's array, ordered by id
 * (creation order). Finished commands are forgotten after the retention or
 * when the device has more than `history` of them. Every callback runs
 * before the operation returns. Loop thread only. */
#include <stdlib.h>
#include <string.h>

#include "cluster/command_store.h"
#include "common/hashmap.h"

struct mem_dev {
    struct command **cmds; /* oldest first */
    size_t n, cap;
};

struct mem_store {
    struct command_store base;
    const struct command_store_config *cfg;
    struct hashmap *by_id;   /* id -> struct command (owned) */
    struct hashmap *devices; /* device -> struct mem_dev (owned) */
};

static void
free_command(void *v)
{
    command_clear(v);
    free(v);
}

static void
free_dev(void *v)
{
    struct mem_dev *d = v;
    free(d->cmds);
    free(d);
}

static struct mem_dev *
dev_of(struct mem_store *m, const char *device, bool create)
{
    struct mem_dev *d = hashmap_get(m->devices, device, strlen(device));
    if (d || !create)
        return d;
    if (!(d = calloc(1, sizeof(*d))))
        return NULL;
    if (hashmap_put(m->devices, device, strlen(device), d, NULL) != RMQ_OK) {
        free(d);
        return NULL;
    }
    return d;
}

/* Drops cmd from its device's array and frees it. */
static void
forget(struct mem_store *m, struct command *cmd)
{
    struct mem_dev *d = dev_of(m, cmd->device, false);
    for (size_t i = 0; d && i < d->n; i++) {
        if (d->cmds[i] == cmd) {
            memmove(&d->cmds[i], &d->cmds[i + 1], (d->n - i - 1) * sizeof(*d->cmds));
            d->n--;
            break;
        }
    }
    if (d && d->n == 0)
        free_dev(hashmap_remove(m->devices, cmd->device, strlen(cmd->device)));
    free_command(hashmap_remove(m->by_id, cmd->id, strlen(cmd->id)));
}

/* Keeps at most `history` finished commands for the device, oldest go. */
static void
trim(struct mem_store *m, struct mem_dev *d)
{
    size_t finished = 0;
    for (size_t i = 0; i < d->n; i++)
        finished += command_status_final(d->cmds[i]->status);
    for (size_t i = 0; finished > m->cfg->history && i < d->n;) {
        if (command_status_final(d->cmds[i]->status)) {
            finished--;
            forget(m, d->cmds[i]); /* d stays: it still holds more than history */
        } else {
            i++;
        }
    }
}

/* Trims after a command ended (cmd may be freed: device is copied first). */
static void
trim_device(struct mem_store *m, const char *device)
{
    char *copy = strdup(device);
    struct mem_dev *d = copy ? dev_of(m, copy, false) : NULL;
    if (d)
        trim(m, d);
    free(copy);
}

static struct command *
find_idempotent(struct mem_dev *d, const char *key)
{
    for (size_t i = 0; d && key && i < d->n; i++) {
        const char *k = d->cmds[i]->idempotency_key;
        if (k && strcmp(k, key) == 0)
            return d->cmds[i];
    }
    return NULL;
}

static void
mem_create(struct command_store *s, const struct command *in, command_create_cb cb, void *arg)
{
    struct mem_store *m = (struct mem_store *)s;
    struct command_owner offline = {"", "", ""};
    struct mem_dev *d = dev_of(m, in->device, true);
    struct command *old = find_idempotent(d, in->idempotency_key);
    if (old) {
        cb(RMQ_OK, false, old, &offline, arg);
        return;
    }
    struct command *cmd = calloc(1, sizeof(*cmd));
    if (!d || !cmd || command_copy(cmd, in) != RMQ_OK)
        goto fail;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4;
        struct command **grown = realloc(d->cmds, cap * sizeof(*grown));
        if (!grown)
            goto fail;
        d->cmds = grown;
        d->cap = cap;
    }
    if (hashmap_put(m->by_id, cmd->id, strlen(cmd->id), cmd, NULL) != RMQ_OK)
        goto fail;
    d->cmds[d->n++] = cmd;
    cb(RMQ_OK, true, cmd, &offline, arg);
    trim(m, d);
    return;
fail:
    free_command(cmd);
    if (d && d->n == 0)
        free_dev(hashmap_remove(m->devices, in->device, strlen(in->device)));
    cb(RMQ_NOMEM, false, NULL, NULL, arg);
}

static struct command *
by_id(struct mem_store *m, const char *id)
{
    return hashmap_get(m->by_id, id, strlen(id));
}

static void
mem_get(struct command_store *s, const char *id, command_store_cb cb, void *arg)
{
    struct command *cmd = by_id((struct mem_store *)s, id);
    cb(cmd ? RMQ_OK : RMQ_NOT_FOUND, cmd, arg);
}

static void
mem_list(struct command_store *s, const char *device, const char *cursor, size_t limit,
         command_json_cb cb, void *arg)
{
    struct mem_dev *d = dev_of((struct mem_store *)s, device, false);
    json_t *list = json_array(), *out = json_object();
    size_t i = d ? d->n : 0;
    while (cursor && i > 0 && strcmp(d->cmds[i - 1]->id, cursor) >= 0)
        i--;
    for (; i > 0 && json_array_size(list) < limit; i--)
        json_array_append_new(list, command_json(d->cmds[i - 1]));
    json_t *next = i > 0 && json_array_size(list) > 0 ? json_string(d->cmds[i]->id) : json_null();
    if (!list || !out || json_object_set_new(out, "commands", list) != 0) {
        json_decref(next);
        json_decref(out);
        cb(RMQ_NOMEM, NULL, arg);
        return;
    }
    json_object_set_new(out, "next", next);
    cb(RMQ_OK, out, arg);
}

static void
mem_cancel(struct command_store *s, const char *id, uint64_t now, command_store_cb cb, void *arg)
{
    struct mem_store *m = (struct mem_store *)s;
    struct command *cmd = by_id(m, id);
    if (!cmd) {
        cb(RMQ_NOT_FOUND, NULL, arg);
        return;
    }
    cb(command_finish(cmd, COMMAND_CANCELED, NULL, now), cmd, arg);
    trim_device(m, cmd->device);
}

static void
mem_send(struct command_store *s, const char *id, const char *node, const char *channel_id,
         uint64_t now, command_store_cb cb, void *arg)
{
    struct command *cmd = by_id((struct mem_store *)s, id);
    if (!cmd || command_status_final(cmd->status)) {
        cb(RMQ_NOT_FOUND, cmd, arg);
        return;
    }
    if (!command_may_send(cmd)) {
        command_finish(cmd, COMMAND_TIMED_OUT, NULL, now);
        cb(RMQ_LIMIT, cmd, arg);
        trim_device((struct mem_store *)s, cmd->device);
        return;
    }
    cb(command_mark_sent(cmd, node, channel_id, now), cmd, arg);
}

static void
mem_delivered(struct command_store *s, const char *id, uint32_t attempt, uint64_t now)
{
    struct command *cmd = by_id((struct mem_store *)s, id);
    if (cmd)
        command_mark_delivered(cmd, attempt, now);
}

static void
mem_reply(struct command_store *s, const char *id, const char *device, const char *reply,
          enum command_status status, uint64_t now, command_store_cb cb, void *arg)
{
    struct command *cmd = by_id((struct mem_store *)s, id);
    if (!cmd)
        cb(RMQ_NOT_FOUND, NULL, arg);
    else if (strcmp(cmd->device, device) != 0)
        cb(RMQ_INVALID, NULL, arg);
    else {
        cb(command_finish(cmd, status, reply, now), cmd, arg);
        trim_device((struct mem_store *)s, cmd->device);
    }
}

static void
mem_pending(struct command_store *s, const char *device, command_many_cb cb, void *arg)
{
    struct mem_dev *d = dev_of((struct mem_store *)s, device, false);
    size_t n = 0;
    struct command *out = d ? calloc(d->n ? d->n : 1, sizeof(*out)) : NULL;
    for (size_t i = 0; out && i < d->n; i++) {
        if (command_status_final(d->cmds[i]->status))
            continue;
        if (command_copy(&out[n], d->cmds[i]) != RMQ_OK)
            break;
        n++;
    }
    cb(d && !out ? RMQ_NOMEM : RMQ_OK, out, n, arg);
    for (size_t i = 0; i < n; i++)
        command_clear(&out[i]);
    free(out);
}

static void
mem_sweep(struct command_store *s, uint64_t now)
{
    struct mem_store *m = (struct mem_store *)s;
    size_t pos = 0;
    const void *key;
    size_t len;
    void *v;
    while (hashmap_next(m->by_id, &pos, &key, &len, &v)) {
        struct command *cmd = v;
        if (command_status_final(cmd->status) || now < cmd->expires_ms)
            continue;
        const struct command_store_config *cfg = m->cfg;
        if (cmd->status == COMMAND_QUEUED || !cfg->device_online ||
            !cfg->device_online(cfg->device_online_ctx, cmd->device))
            command_finish(cmd, COMMAND_EXPIRED, NULL, now);
        /* the history bound is applied by the next create or ending */
    }
    /* Forgetting changes the map: collect first, then forget. */
    size_t n = 0, cap = hashmap_count(m->by_id);
    struct command **old = cap ? malloc(cap * sizeof(*old)) : NULL;
    for (pos = 0; old && hashmap_next(m->by_id, &pos, &key, &len, &v);) {
        struct command *cmd = v;
        if (command_status_final(cmd->status) && now >= cmd->updated_ms + m->cfg->retention_ms)
            old[n++] = cmd;
    }
    for (size_t i = 0; i < n; i++)
        forget(m, old[i]);
    free(old);
}

static void
mem_free(struct command_store *s)
{
    struct mem_store *m = (struct mem_store *)s;
    if (!m)
        return;
    hashmap_free(m->devices);
    hashmap_free(m->by_id);
    free(m);
}

static const struct command_store_ops memory_ops = {
    .create = mem_create,
    .get = mem_get,
    .list = mem_list,
    .cancel = mem_cancel,
    .send = mem_send,
    .delivered = mem_delivered,
    .reply = mem_reply,
    .pending = mem_pending,
    .sweep = mem_sweep,
    .free = mem_free,
};

struct command_store *
command_store_memory_new(const struct command_store_config *cfg)
{
    struct mem_store *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->base.ops = &memory_ops;
    m->cfg = cfg;
    m->by_id = hashmap_new(free_command);
    m->devices = hashmap_new(free_dev);
    if (!m->by_id || !m->devices) {
        mem_free(&m->base);
        return NULL;
    }
    return &m->base;
}
