/* Unit tests for cluster/command_store_memory.c through the interface of
 * cluster/command_store.h: create and get, the idempotency key, listing
 * (newest first, cursor paging), cancel, the send step up to its time-out,
 * delivery acks, replies, pending commands, the sweep (TTL and retention)
 * and the per-device history. The memory store answers before each call
 * returns, so a callback records its answer (copying the borrowed command)
 * and the test reads it right after. Runs under ASan: the store must free
 * everything it holds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/command_store.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define T0 1700000000000ull

/* The last answer a callback gave. */
struct answer {
    int calls;
    enum rmq_status st;
    bool created;
    bool has_cmd;
    struct command cmd; /* a copy of the borrowed command */
    json_t *json;
    struct command *many;
    size_t n;
};

static void
answer_reset(struct answer *a)
{
    command_clear(&a->cmd);
    json_decref(a->json);
    for (size_t i = 0; i < a->n; i++)
        command_clear(&a->many[i]);
    free(a->many);
    memset(a, 0, sizeof(*a));
}

static void
keep_cmd(struct answer *a, const struct command *cmd)
{
    a->has_cmd = cmd != NULL;
    if (cmd)
        assert_int_equal(command_copy(&a->cmd, cmd), RMQ_OK);
}

static void
on_cmd(enum rmq_status st, const struct command *cmd, void *arg)
{
    struct answer *a = arg;
    answer_reset(a);
    a->calls = 1;
    a->st = st;
    keep_cmd(a, cmd);
}

static void
on_create(enum rmq_status st, bool created, const struct command *cmd,
          const struct command_owner *owner, void *arg)
{
    struct answer *a = arg;
    answer_reset(a);
    a->calls = 1;
    a->st = st;
    a->created = created;
    keep_cmd(a, cmd);
    if (st == RMQ_OK)
        assert_non_null(owner);
}

static void
on_json(enum rmq_status st, json_t *result, void *arg)
{
    struct answer *a = arg;
    answer_reset(a);
    a->calls = 1;
    a->st = st;
    a->json = result; /* ours now */
}

static void
on_many(enum rmq_status st, struct command *cmds, size_t n, void *arg)
{
    struct answer *a = arg;
    answer_reset(a);
    a->calls = 1;
    a->st = st;
    if (n) {
        a->many = calloc(n, sizeof(*a->many));
        assert_non_null(a->many);
        for (size_t i = 0; i < n; i++)
            assert_int_equal(command_copy(&a->many[i], &cmds[i]), RMQ_OK);
    }
    a->n = n;
}

struct fixture {
    struct command_store_config cfg;
    struct command_store *s;
    struct answer a;
};

/* The store under test, in *state so that teardown frees it even when a
 * check fails half-way. */
static struct fixture *
fixture_new(void **state, uint64_t retention_ms, uint32_t history)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    *state = f;
    f->cfg = (struct command_store_config){.prefix = "rmq:",
                                           .node_id = "n1",
                                           .retention_ms = retention_ms,
                                           .history = history,
                                           .stream_maxlen = 1000};
    f->s = command_store_memory_new(&f->cfg);
    assert_non_null(f->s);
    return f;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;
    if (f) {
        answer_reset(&f->a);
        if (f->s)
            f->s->ops->free(f->s);
        free(f);
    }
    *state = NULL;
    return 0;
}

/* Stores a new queued command for device created at now; its id into id. */
static enum rmq_status
create(struct fixture *f, const char *device, const char *key, uint32_t retries, uint64_t ttl_ms,
       uint64_t now, char id[COMMAND_ID_LEN + 1])
{
    struct command c = {0};
    command_new_id(c.id, now);
    c.device = strdup(device);
    c.payload = strdup("{\"op\":\"ping\"}");
    c.idempotency_key = key ? strdup(key) : NULL;
    c.node = strdup("n1");
    c.accepted_by = strdup("n1");
    assert_true(c.device && c.payload && c.node && c.accepted_by && (!key || c.idempotency_key));
    c.status = COMMAND_QUEUED;
    c.retries = retries;
    c.qos = 1;
    c.interval_ms = 1000;
    c.ttl_ms = ttl_ms;
    c.created_ms = c.updated_ms = now;
    c.expires_ms = now + ttl_ms;
    if (id)
        memcpy(id, c.id, COMMAND_ID_LEN + 1);
    answer_reset(&f->a);
    f->s->ops->create(f->s, &c, on_create, &f->a);
    command_clear(&c);
    assert_int_equal(f->a.calls, 1);
    return f->a.st;
}

static enum rmq_status
get(struct fixture *f, const char *id)
{
    answer_reset(&f->a);
    f->s->ops->get(f->s, id, on_cmd, &f->a);
    assert_int_equal(f->a.calls, 1);
    return f->a.st;
}

static enum command_status
status_of(struct fixture *f, const char *id)
{
    assert_int_equal(get(f, id), RMQ_OK);
    assert_true(f->a.has_cmd);
    return f->a.cmd.status;
}

static enum rmq_status
cancel(struct fixture *f, const char *id, uint64_t now)
{
    answer_reset(&f->a);
    f->s->ops->cancel(f->s, id, now, on_cmd, &f->a);
    assert_int_equal(f->a.calls, 1);
    return f->a.st;
}

static enum rmq_status
send_step(struct fixture *f, const char *id, uint64_t now)
{
    answer_reset(&f->a);
    f->s->ops->send(f->s, id, "n2", "n2/1/7", now, on_cmd, &f->a);
    assert_int_equal(f->a.calls, 1);
    return f->a.st;
}

static enum rmq_status
reply(struct fixture *f, const char *id, const char *device, const char *text,
      enum command_status st, uint64_t now)
{
    answer_reset(&f->a);
    f->s->ops->reply(f->s, id, device, text, st, now, on_cmd, &f->a);
    assert_int_equal(f->a.calls, 1);
    return f->a.st;
}

/* Lists one page; the ids (newest first) into ids, the cursor into next
 * ("" at the end). Returns how many. */
static size_t
list_page(struct fixture *f, const char *device, const char *cursor, size_t limit,
          char ids[][COMMAND_ID_LEN + 1], size_t max, char next[COMMAND_ID_LEN + 1])
{
    answer_reset(&f->a);
    f->s->ops->list(f->s, device, cursor, limit, on_json, &f->a);
    assert_int_equal(f->a.calls, 1);
    assert_int_equal(f->a.st, RMQ_OK);
    json_t *cmds = json_object_get(f->a.json, "commands");
    assert_true(json_is_array(cmds));
    json_t *n = json_object_get(f->a.json, "next");
    assert_true(json_is_null(n) || json_is_string(n));
    size_t count = json_array_size(cmds);
    assert_true(count <= limit && count <= max);
    for (size_t i = 0; i < count; i++) {
        json_t *c = json_array_get(cmds, i);
        assert_string_equal(json_string_value(json_object_get(c, "device")), device);
        const char *id = json_string_value(json_object_get(c, "id"));
        assert_non_null(id);
        assert_int_equal(strlen(id), COMMAND_ID_LEN);
        memcpy(ids[i], id, COMMAND_ID_LEN + 1);
    }
    snprintf(next, COMMAND_ID_LEN + 1, "%s", json_is_string(n) ? json_string_value(n) : "");
    return count;
}

/* Lists everything in one page; checks it is exactly want (newest first). */
static void
check_listed(struct fixture *f, const char *device, const char *const *want, size_t n_want)
{
    char ids[16][COMMAND_ID_LEN + 1], next[COMMAND_ID_LEN + 1];
    size_t n = list_page(f, device, NULL, 16, ids, 16, next);
    for (size_t i = 0; i < n_want && i < n; i++) {
        if (strcmp(ids[i], want[i]) != 0)
            fail_msg("listed[%zu] is %s, expected %s", i, ids[i], want[i]);
    }
    if (n != n_want)
        fail_msg("%zu commands listed for %s, expected %zu", n, device, n_want);
    assert_string_equal(next, "");
}

static void
test_create_get(void **state)
{
    struct fixture *f = fixture_new(state, 60000, 10);
    char id[COMMAND_ID_LEN + 1];
    assert_int_equal(create(f, "d1", NULL, 2, 30000, T0, id), RMQ_OK);
    assert_true(f->a.created);
    assert_true(f->a.has_cmd);
    assert_string_equal(f->a.cmd.id, id);
    assert_int_equal(f->a.cmd.status, COMMAND_QUEUED);

    assert_int_equal(get(f, id), RMQ_OK);
    const struct command *c = &f->a.cmd;
    assert_string_equal(c->id, id);
    assert_string_equal(c->device, "d1");
    assert_string_equal(c->payload, "{\"op\":\"ping\"}");
    assert_null(c->idempotency_key);
    assert_null(c->reply);
    assert_int_equal(c->status, COMMAND_QUEUED);
    assert_int_equal(c->attempts, 0);
    assert_int_equal(c->retries, 2);
    assert_int_equal(c->ttl_ms, 30000);
    assert_int_equal(c->created_ms, T0);
    assert_int_equal(c->expires_ms, T0 + 30000);
    assert_string_equal(c->accepted_by, "n1");

    char other[COMMAND_ID_LEN + 1];
    command_new_id(other, T0);
    assert_int_equal(get(f, other), RMQ_NOT_FOUND);
    assert_int_equal(get(f, "nope"), RMQ_NOT_FOUND);
}

static void
test_idempotency_key(void **state)
{
    struct fixture *f = fixture_new(state, 60000, 10);
    char first[COMMAND_ID_LEN + 1], again[COMMAND_ID_LEN + 1], other[COMMAND_ID_LEN + 1];
    assert_int_equal(create(f, "d1", "k1", 1, 30000, T0, first), RMQ_OK);
    assert_true(f->a.created);

    assert_int_equal(create(f, "d1", "k1", 5, 30000, T0 + 10, again), RMQ_OK);
    assert_false(f->a.created);
    assert_true(f->a.has_cmd);
    assert_string_equal(f->a.cmd.id, first); /* the original, not the new one */
    assert_int_equal(f->a.cmd.retries, 1);
    assert_string_equal(f->a.cmd.idempotency_key, "k1");
    assert_int_equal(get(f, again), RMQ_NOT_FOUND);

    /* Another key, or the same key on another device, is a new command. */
    assert_int_equal(create(f, "d1", "k2", 1, 30000, T0 + 20, other), RMQ_OK);
    assert_true(f->a.created);
    assert_string_equal(f->a.cmd.id, other);
    assert_int_equal(create(f, "d2", "k1", 1, 30000, T0 + 30, other), RMQ_OK);
    assert_true(f->a.created);
    assert_string_equal(f->a.cmd.id, other);
    assert_string_equal(f->a.cmd.device, "d2");

    char ids[8][COMMAND_ID_LEN + 1], next[COMMAND_ID_LEN + 1];
    assert_int_equal(list_page(f, "d1", NULL, 8, ids, 8, next), 2);
}

static void
test_list_paging(void **state)
{
    struct fixture *f = fixture_new(state, 60000, 100);
    enum { N = 7 };
    char made[N][COMMAND_ID_LEN + 1];
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(create(f, "d1", NULL, 1, 30000, T0 + i, made[i]), RMQ_OK);
        /* Another device's commands interleaved must not show up. */
        assert_int_equal(create(f, "d2", NULL, 1, 30000, T0 + i, NULL), RMQ_OK);
    }

    const char *all[N];
    for (size_t i = 0; i < N; i++)
        all[i] = made[N - 1 - i];
    check_listed(f, "d1", all, N);

    /* Pages of 1..N+1: together they hold every command once, newest first. */
    for (size_t limit = 1; limit <= N + 1; limit++) {
        char seen[N + 1][COMMAND_ID_LEN + 1];
        char cursor[COMMAND_ID_LEN + 1] = "", next[COMMAND_ID_LEN + 1];
        size_t total = 0, pages = 0;
        do {
            char ids[N + 1][COMMAND_ID_LEN + 1];
            size_t n = list_page(f, "d1", pages ? cursor : NULL, limit, ids, N + 1, next);
            if (n == 0)
                fail_msg("empty page %zu with limit %zu", pages, limit);
            if (next[0] && n != limit)
                fail_msg("short page (%zu of %zu) with a next cursor", n, limit);
            for (size_t i = 0; i < n && total < N + 1; i++)
                memcpy(seen[total++], ids[i], COMMAND_ID_LEN + 1);
            memcpy(cursor, next, sizeof(cursor));
            pages++;
            assert_true(pages <= N + 1);
        } while (cursor[0]);
        if (total != N)
            fail_msg("limit %zu: %zu commands over %zu pages, expected %d", limit, total, pages, N);
        for (size_t i = 0; i < N; i++)
            assert_string_equal(seen[i], all[i]);
        assert_int_equal(pages, (N + limit - 1) / limit);
    }

    char ids[4][COMMAND_ID_LEN + 1], next[COMMAND_ID_LEN + 1];
    assert_int_equal(list_page(f, "nobody", NULL, 4, ids, 4, next), 0);
    assert_string_equal(next, "");
}

static void
test_cancel(void **state)
{
    struct fixture *f = fixture_new(state, 60000, 10);
    char id[COMMAND_ID_LEN + 1];
    assert_int_equal(create(f, "d1", NULL, 1, 30000, T0, id), RMQ_OK);
    assert_int_equal(cancel(f, id, T0 + 100), RMQ_OK);
    assert_true(f->a.has_cmd);
    assert_int_equal(f->a.cmd.status, COMMAND_CANCELED);
    assert_int_equal(f->a.cmd.updated_ms, T0 + 100);
    assert_int_equal(status_of(f, id), COMMAND_CANCELED);

    assert_int_equal(cancel(f, id, T0 + 200), RMQ_EXISTS);
    assert_true(f->a.has_cmd); /* the command as it is */
    assert_int_equal(f->a.cmd.status, COMMAND_CANCELED);
    assert_int_equal(f->a.cmd.updated_ms, T0 + 100);

    char unknown[COMMAND_ID_LEN + 1];
    command_new_id(unknown, T0 + 300);
    assert_int_equal(cancel(f, unknown, T0 + 300), RMQ_NOT_FOUND);
    /* A cancelled command is not sent. */
    assert_int_equal(send_step(f, id, T0 + 400), RMQ_NOT_FOUND);
    assert_int_equal(status_of(f, id), COMMAND_CANCELED);
}

static void
test_send_until_timed_out(void **state)
{
    struct fixture *f = fixture_new(state, 60000, 10);
    const uint32_t retries = 2;
    char id[COMMAND_ID_LEN + 1];
    assert_int_equal(create(f, "d1", NULL, retries, 30000, T0, id), RMQ_OK);
    for (uint32_t i = 1; i <= retries + 1; i++) {
        uint64_t now = T0 + 1000 * i;
        if (send_step(f, id, now) != RMQ_OK)
            fail_msg("send %u of %u answered %s", i, retries + 1, rmq_status_str(f->a.st));
        assert_true(f->a.has_cmd);
        assert_int_equal(f->a.cmd.attempts, i);
        assert_int_equal(f->a.cmd.status, COMMAND_SENT);
        assert_string_equal(f->a.cmd.node, "n2");
        assert_string_equal(f->a.cmd.channel_id, "n2/1/7");
        assert_int_equal(f->a.cmd.next_ms, now + 1000);
        assert_int_equal(get(f, id), RMQ_OK);
        assert_int_equal(f->a.cmd.attempts, i);
    }
    assert_int_equal(send_step(f, id, T0 + 9000), RMQ_LIMIT);
    assert_true(f->a.has_cmd);
    assert_int_equal(f->a.cmd.status, COMMAND_TIMED_OUT);
    assert_int_equal(f->a.cmd.attempts, retries + 1);
    assert_int_equal(status_of(f, id), COMMAND_TIMED_OUT);
    assert_int_equal(send_step(f, id, T0 + 10000), RMQ_NOT_FOUND);
    assert_int_equal(status_of(f, id), COMMAND_TIMED_OUT);

    char unknown[COMMAND_ID_LEN + 1];
    command_new_id(unknown, T0);
    assert_int_equal(send_step(f, unknown, T0 + 10000), RMQ_NOT_FOUND);

    /* retries 0: one send, then the time-out. */
    assert_int_equal(create(f, "d1", NULL, 0, 30000, T0 + 20000, id), RMQ_OK);
    assert_int_equal(send_step(f, id, T0 + 20001), RMQ_OK);
    assert_int_equal(f->a.cmd.attempts, 1);
    assert_int_equal(send_step(f, id, T0 + 21001), RMQ_LIMIT);
    assert_int_equal(f->a.cmd.status, COMMAND_TIMED_OUT);
}

static void
test_delivered(void **state)
{
    struct fixture *f = fixture_new(state, 60000, 10);
    char id[COMMAND_ID_LEN + 1];
    assert_int_equal(create(f, "d1", NULL, 3, 30000, T0, id), RMQ_OK);
    f->s->ops->delivered(f->s, id, 0, T0 + 1);
    f->s->ops->delivered(f->s, id, 1, T0 + 1);
    assert_int_equal(status_of(f, id), COMMAND_QUEUED); /* never sent */

    assert_int_equal(send_step(f, id, T0 + 1000), RMQ_OK);
    assert_int_equal(send_step(f, id, T0 + 2000), RMQ_OK); /* attempt 2 */
    f->s->ops->delivered(f->s, id, 1, T0 + 2100);          /* a stale ack */
    f->s->ops->delivered(f->s, id, 3, T0 + 2100);
    assert_int_equal(status_of(f, id), COMMAND_SENT);
    f->s->ops->delivered(f->s, id, 2, T0 + 2200);
    assert_int_equal(status_of(f, id), COMMAND_DELIVERED);
    assert_int_equal(f->a.cmd.updated_ms, T0 + 2200);
    assert_int_equal(f->a.cmd.attempts, 2);

    /* Finished: an ack changes nothing; unknown ids are ignored. */
    assert_int_equal(reply(f, id, "d1", "{}", COMMAND_SUCCEEDED, T0 + 2300), RMQ_OK);
    assert_int_equal(send_step(f, id, T0 + 2400), RMQ_NOT_FOUND);
    f->s->ops->delivered(f->s, id, 2, T0 + 2500);
    assert_int_equal(status_of(f, id), COMMAND_SUCCEEDED);
    char unknown[COMMAND_ID_LEN + 1];
    command_new_id(unknown, T0);
    f->s->ops->delivered(f->s, unknown, 1, T0 + 2500);
}

static void
test_reply(void **state)
{
    struct fixture *f = fixture_new(state, 60000, 10);
    char ok[COMMAND_ID_LEN + 1], bad[COMMAND_ID_LEN + 1];
    assert_int_equal(create(f, "d1", NULL, 1, 30000, T0, ok), RMQ_OK);
    assert_int_equal(create(f, "d1", NULL, 1, 30000, T0 + 1, bad), RMQ_OK);
    assert_int_equal(send_step(f, ok, T0 + 10), RMQ_OK);

    /* Another device's reply is refused and changes nothing. */
    assert_int_equal(reply(f, ok, "d2", "{\"x\":1}", COMMAND_SUCCEEDED, T0 + 20), RMQ_INVALID);
    assert_int_equal(status_of(f, ok), COMMAND_SENT);
    assert_null(f->a.cmd.reply);

    assert_int_equal(reply(f, ok, "d1", "{\"rebooted\":true}", COMMAND_SUCCEEDED, T0 + 30), RMQ_OK);
    assert_true(f->a.has_cmd);
    assert_int_equal(f->a.cmd.status, COMMAND_SUCCEEDED);
    assert_int_equal(get(f, ok), RMQ_OK);
    assert_int_equal(f->a.cmd.status, COMMAND_SUCCEEDED);
    assert_string_equal(f->a.cmd.reply, "{\"rebooted\":true}");
    assert_int_equal(f->a.cmd.updated_ms, T0 + 30);

    /* A second reply: already final, the first one stays. */
    assert_int_equal(reply(f, ok, "d1", "{\"error\":\"again\"}", COMMAND_FAILED, T0 + 40),
                     RMQ_EXISTS);
    assert_int_equal(get(f, ok), RMQ_OK);
    assert_int_equal(f->a.cmd.status, COMMAND_SUCCEEDED);
    assert_string_equal(f->a.cmd.reply, "{\"rebooted\":true}");
    assert_int_equal(f->a.cmd.updated_ms, T0 + 30);

    /* A failure reply to a command never sent (queued) is still its end. */
    assert_int_equal(reply(f, bad, "d1", "{\"error\":\"busy\"}", COMMAND_FAILED, T0 + 50), RMQ_OK);
    assert_int_equal(get(f, bad), RMQ_OK);
    assert_int_equal(f->a.cmd.status, COMMAND_FAILED);
    assert_string_equal(f->a.cmd.reply, "{\"error\":\"busy\"}");

    char unknown[COMMAND_ID_LEN + 1];
    command_new_id(unknown, T0);
    assert_int_equal(reply(f, unknown, "d1", "{}", COMMAND_SUCCEEDED, T0 + 60), RMQ_NOT_FOUND);
}

static void
test_pending(void **state)
{
    struct fixture *f = fixture_new(state, 60000, 10);
    char id[5][COMMAND_ID_LEN + 1];
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(create(f, "d1", NULL, 2, 30000, T0 + i, id[i]), RMQ_OK);
    assert_int_equal(create(f, "d2", NULL, 2, 30000, T0 + 9, NULL), RMQ_OK);
    assert_int_equal(send_step(f, id[1], T0 + 10), RMQ_OK);                            /* sent */
    assert_int_equal(cancel(f, id[2], T0 + 11), RMQ_OK);                               /* final */
    assert_int_equal(reply(f, id[3], "d1", "{}", COMMAND_SUCCEEDED, T0 + 12), RMQ_OK); /* final */

    answer_reset(&f->a);
    f->s->ops->pending(f->s, "d1", on_many, &f->a);
    assert_int_equal(f->a.calls, 1);
    assert_int_equal(f->a.st, RMQ_OK);
    assert_int_equal(f->a.n, 3);
    assert_string_equal(f->a.many[0].id, id[0]);
    assert_string_equal(f->a.many[1].id, id[1]);
    assert_string_equal(f->a.many[2].id, id[4]);
    assert_int_equal(f->a.many[0].status, COMMAND_QUEUED);
    assert_int_equal(f->a.many[1].status, COMMAND_SENT);
    assert_int_equal(f->a.many[1].attempts, 1);
    assert_string_equal(f->a.many[2].device, "d1");

    answer_reset(&f->a);
    f->s->ops->pending(f->s, "nobody", on_many, &f->a);
    assert_int_equal(f->a.calls, 1);
    assert_int_equal(f->a.st, RMQ_OK);
    assert_int_equal(f->a.n, 0);
}

static void
test_sweep(void **state)
{
    const uint64_t retention = 5000;
    struct fixture *f = fixture_new(state, retention, 10);
    char expiring[COMMAND_ID_LEN + 1], lasting[COMMAND_ID_LEN + 1];
    char canceled[COMMAND_ID_LEN + 1], sent[COMMAND_ID_LEN + 1];
    assert_int_equal(create(f, "d1", NULL, 1, 2000, T0, expiring), RMQ_OK);
    assert_int_equal(create(f, "d1", NULL, 1, 3600000, T0 + 1, lasting), RMQ_OK);
    assert_int_equal(create(f, "d1", NULL, 1, 3600000, T0 + 2, canceled), RMQ_OK);
    assert_int_equal(create(f, "d1", NULL, 100, 3600000, T0 + 3, sent), RMQ_OK);
    assert_int_equal(cancel(f, canceled, T0 + 100), RMQ_OK);
    assert_int_equal(send_step(f, sent, T0 + 100), RMQ_OK);

    /* Before its TTL a queued command stays queued. */
    f->s->ops->sweep(f->s, T0 + 1999);
    assert_int_equal(status_of(f, expiring), COMMAND_QUEUED);
    f->s->ops->sweep(f->s, T0 + 2001);
    assert_int_equal(status_of(f, expiring), COMMAND_EXPIRED);
    assert_int_equal(f->a.cmd.updated_ms, T0 + 2001);
    assert_int_equal(status_of(f, lasting), COMMAND_QUEUED);
    assert_int_equal(status_of(f, canceled), COMMAND_CANCELED);

    /* Finished commands stay readable for the retention, then go. */
    f->s->ops->sweep(f->s, T0 + 100 + retention - 1);
    assert_int_equal(status_of(f, canceled), COMMAND_CANCELED);
    f->s->ops->sweep(f->s, T0 + 100 + retention + 1);
    assert_int_equal(get(f, canceled), RMQ_NOT_FOUND);
    assert_int_equal(status_of(f, expiring), COMMAND_EXPIRED); /* its retention runs from 2001 */
    f->s->ops->sweep(f->s, T0 + 2001 + retention + 1);
    assert_int_equal(get(f, expiring), RMQ_NOT_FOUND);

    /* Unfinished ones are kept however old (within their TTL). */
    f->s->ops->sweep(f->s, T0 + 100000);
    assert_int_equal(status_of(f, lasting), COMMAND_QUEUED);
    assert_int_equal(status_of(f, sent), COMMAND_SENT);
    const char *want[] = {sent, lasting};
    check_listed(f, "d1", want, N_ELEMS(want));

    /* A forgotten command can no longer be cancelled or answered. */
    assert_int_equal(cancel(f, canceled, T0 + 100001), RMQ_NOT_FOUND);
    assert_int_equal(reply(f, expiring, "d1", "{}", COMMAND_SUCCEEDED, T0 + 100001), RMQ_NOT_FOUND);

    /* Once everything is gone, the device lists nothing. */
    assert_int_equal(cancel(f, lasting, T0 + 200000), RMQ_OK);
    assert_int_equal(cancel(f, sent, T0 + 200000), RMQ_OK);
    f->s->ops->sweep(f->s, T0 + 200000 + retention);
    assert_int_equal(get(f, lasting), RMQ_NOT_FOUND);
    assert_int_equal(get(f, sent), RMQ_NOT_FOUND);
    check_listed(f, "d1", NULL, 0);
}

/* The devices a fake registry says are connected (NULL-terminated). */
static bool
online(void *ctx, const char *device)
{
    for (const char *const *d = ctx; *d; d++) {
        if (strcmp(*d, device) == 0)
            return true;
    }
    return false;
}

/* Past its TTL a command in flight expires only if its device is away (a
 * connected device has this node re-sending it); a queued one expires
 * anyway. Without a device_online callback no device counts as online. */
static void
test_sweep_in_flight(void **state)
{
    struct fixture *f = fixture_new(state, 3600000, 10);
    static const char *const here[] = {"on", NULL};
    /* The store borrows cfg, so this applies from the next sweep on. */
    f->cfg.device_online = online;
    f->cfg.device_online_ctx = (void *)here;
    char q_on[COMMAND_ID_LEN + 1], s_on[COMMAND_ID_LEN + 1], s_off[COMMAND_ID_LEN + 1];
    char d_off[COMMAND_ID_LEN + 1], s_late[COMMAND_ID_LEN + 1];
    assert_int_equal(create(f, "on", NULL, 100, 1000, T0, q_on), RMQ_OK);
    assert_int_equal(create(f, "on", NULL, 100, 1000, T0, s_on), RMQ_OK);
    assert_int_equal(create(f, "off", NULL, 100, 1000, T0, s_off), RMQ_OK);
    assert_int_equal(create(f, "off", NULL, 100, 1000, T0, d_off), RMQ_OK);
    assert_int_equal(create(f, "on", NULL, 100, 3600000, T0, s_late), RMQ_OK);
    assert_int_equal(send_step(f, s_on, T0 + 10), RMQ_OK);
    assert_int_equal(send_step(f, s_off, T0 + 10), RMQ_OK);
    assert_int_equal(send_step(f, d_off, T0 + 10), RMQ_OK);
    assert_int_equal(send_step(f, s_late, T0 + 10), RMQ_OK);
    f->s->ops->delivered(f->s, d_off, 1, T0 + 20);
    assert_int_equal(status_of(f, d_off), COMMAND_DELIVERED);

    f->s->ops->sweep(f->s, T0 + 999);
    assert_int_equal(status_of(f, q_on), COMMAND_QUEUED);
    assert_int_equal(status_of(f, s_off), COMMAND_SENT);
    assert_int_equal(status_of(f, d_off), COMMAND_DELIVERED);

    f->s->ops->sweep(f->s, T0 + 1001);
    assert_int_equal(status_of(f, q_on), COMMAND_EXPIRED);
    assert_int_equal(status_of(f, s_on), COMMAND_SENT);
    assert_int_equal(status_of(f, s_off), COMMAND_EXPIRED);
    assert_int_equal(f->a.cmd.updated_ms, T0 + 1001);
    assert_int_equal(status_of(f, d_off), COMMAND_EXPIRED);
    assert_int_equal(status_of(f, s_late), COMMAND_SENT);

    f->cfg.device_online = NULL;
    f->cfg.device_online_ctx = NULL;
    f->s->ops->sweep(f->s, T0 + 1002);
    assert_int_equal(status_of(f, s_on), COMMAND_EXPIRED);
    assert_int_equal(status_of(f, s_late), COMMAND_SENT); /* its TTL is an hour */
}

/* Commands created in the same millisecond still page in creation order,
 * each once (the store orders by id and pages by comparing ids). */
static void
test_list_same_ms(void **state)
{
    struct fixture *f = fixture_new(state, 60000, 100);
    enum { N = 9 };
    char made[N][COMMAND_ID_LEN + 1];
    for (size_t i = 0; i < N; i++)
        assert_int_equal(create(f, "d1", NULL, 1, 30000, T0, made[i]), RMQ_OK);
    char cursor[COMMAND_ID_LEN + 1] = "", next[COMMAND_ID_LEN + 1];
    size_t total = 0, pages = 0;
    do {
        char ids[2][COMMAND_ID_LEN + 1];
        size_t n = list_page(f, "d1", pages ? cursor : NULL, 2, ids, 2, next);
        for (size_t i = 0; i < n; i++, total++) {
            assert_true(total < N);
            if (strcmp(ids[i], made[N - 1 - total]) != 0)
                fail_msg("listed[%zu] is %s, expected %s", total, ids[i], made[N - 1 - total]);
        }
        memcpy(cursor, next, sizeof(cursor));
        pages++;
        assert_true(pages <= N);
    } while (cursor[0]);
    assert_int_equal(total, N);
}

/* history=2: when a new command comes, only the 2 newest finished ones stay
 * (unfinished ones are always kept). */
static void
test_history_on_create(void **state)
{
    struct fixture *f = fixture_new(state, 3600000, 2);
    char id[6][COMMAND_ID_LEN + 1];
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(create(f, "d1", NULL, 1, 30000, T0 + i, id[i]), RMQ_OK);
        assert_int_equal(reply(f, id[i], "d1", "{}", COMMAND_SUCCEEDED, T0 + 10 + i), RMQ_OK);
    }
    assert_int_equal(create(f, "d1", NULL, 1, 30000, T0 + 20, id[4]), RMQ_OK); /* unfinished */
    assert_int_equal(create(f, "d2", NULL, 1, 30000, T0 + 21, id[5]), RMQ_OK);
    const char *want[] = {id[4], id[3], id[2]};
    check_listed(f, "d1", want, N_ELEMS(want));
    assert_int_equal(get(f, id[0]), RMQ_NOT_FOUND);
    assert_int_equal(get(f, id[1]), RMQ_NOT_FOUND);
    assert_int_equal(status_of(f, id[2]), COMMAND_SUCCEEDED);
    const char *want2[] = {id[5]};
    check_listed(f, "d2", want2, 1);
}

/* history=2 with every command finished and no create after the last
 * ending: still only the 2 newest finished ones are listed. */
static void
test_history_after_finish(void **state)
{
    struct fixture *f = fixture_new(state, 3600000, 2);
    char id[4][COMMAND_ID_LEN + 1];
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(create(f, "d1", NULL, 1, 30000, T0 + i, id[i]), RMQ_OK);
    assert_int_equal(reply(f, id[0], "d1", "{}", COMMAND_SUCCEEDED, T0 + 10), RMQ_OK);
    assert_int_equal(cancel(f, id[1], T0 + 11), RMQ_OK);
    assert_int_equal(reply(f, id[2], "d1", "{\"error\":1}", COMMAND_FAILED, T0 + 12), RMQ_OK);
    assert_int_equal(cancel(f, id[3], T0 + 13), RMQ_OK);
    const char *want[] = {id[3], id[2]};
    check_listed(f, "d1", want, N_ELEMS(want));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_create_get, teardown),
        cmocka_unit_test_teardown(test_idempotency_key, teardown),
        cmocka_unit_test_teardown(test_list_paging, teardown),
        cmocka_unit_test_teardown(test_cancel, teardown),
        cmocka_unit_test_teardown(test_send_until_timed_out, teardown),
        cmocka_unit_test_teardown(test_delivered, teardown),
        cmocka_unit_test_teardown(test_reply, teardown),
        cmocka_unit_test_teardown(test_pending, teardown),
        cmocka_unit_test_teardown(test_sweep, teardown),
        cmocka_unit_test_teardown(test_sweep_in_flight, teardown),
        cmocka_unit_test_teardown(test_list_same_ms, teardown),
        cmocka_unit_test_teardown(test_history_on_create, teardown),
        cmocka_unit_test_teardown(test_history_after_finish, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
