/* Unit tests for cluster/command.c: status names both ways, which statuses
 * are final, the id format and its creation order, and the state machine's
 * pure transitions (may_send, mark_sent, mark_delivered, finish), each
 * checked on the fields command.h promises; then the deep copy and the
 * API's JSON form. Runs under ASan: a shallow copy or a leak shows up. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/command.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

static const struct {
    enum command_status status;
    const char *name;
    bool final;
} statuses[] = {
    {COMMAND_QUEUED, "queued", false},       {COMMAND_SENT, "sent", false},
    {COMMAND_DELIVERED, "delivered", false}, {COMMAND_SUCCEEDED, "succeeded", true},
    {COMMAND_FAILED, "failed", true},        {COMMAND_TIMED_OUT, "timed_out", true},
    {COMMAND_EXPIRED, "expired", true},      {COMMAND_CANCELED, "canceled", true},
};

static char *
xstrdup(const char *s)
{
    char *d = strdup(s);
    assert_non_null(d);
    return d;
}

/* A queued command for device d1 accepted by n1, every string owned. */
static void
make_cmd(struct command *c, uint32_t retries, uint64_t interval_ms)
{
    memset(c, 0, sizeof(*c));
    command_new_id(c->id, 1700000000123ull);
    c->device = xstrdup("d1");
    c->status = COMMAND_QUEUED;
    c->retries = retries;
    c->qos = 1;
    c->interval_ms = interval_ms;
    c->ttl_ms = 60000;
    c->payload = xstrdup("{\"op\":\"reboot\",\"delay\":2}");
    c->node = xstrdup("n1");
    c->accepted_by = xstrdup("n1");
    c->created_ms = c->updated_ms = 1700000000123ull;
    c->expires_ms = c->created_ms + c->ttl_ms;
}

static void
test_status_names(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ELEMS(statuses); i++) {
        assert_string_equal(command_status_name(statuses[i].status), statuses[i].name);
        enum command_status out = COMMAND_QUEUED;
        if (statuses[i].status == COMMAND_QUEUED)
            out = COMMAND_CANCELED; /* so that a no-op parse cannot pass */
        assert_true(command_status_parse(statuses[i].name, &out));
        assert_int_equal(out, statuses[i].status);
    }
    const char *unknown[] = {"",        "QUEUED", "Sent",    "cancelled", "timed-out",
                             "queued ", " sent",  "succeed", "done",      "?"};
    for (size_t i = 0; i < N_ELEMS(unknown); i++) {
        enum command_status out;
        if (command_status_parse(unknown[i], &out))
            fail_msg("'%s' parsed as a status", unknown[i]);
    }
}

static void
test_status_final(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ELEMS(statuses); i++) {
        if (command_status_final(statuses[i].status) != statuses[i].final)
            fail_msg("final(%s) should be %d", statuses[i].name, statuses[i].final);
    }
}

static bool
all_lower_hex(const char *s)
{
    for (; *s; s++) {
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return false;
    }
    return true;
}

static int
cmp_ids(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void
test_new_id(void **state)
{
    (void)state;
    /* Later ms sort after, including across digit and byte boundaries. */
    const uint64_t times[] = {0,
                              1,
                              2,
                              15,
                              16,
                              255,
                              256,
                              999,
                              1000,
                              1700000000000ull,
                              1700000000001ull,
                              1700000000999ull,
                              0xfffffffffffull,
                              0x1000000000000ull - 1};
    char prev[COMMAND_ID_LEN + 1] = "";
    for (size_t i = 0; i < N_ELEMS(times); i++) {
        char id[COMMAND_ID_LEN + 1];
        memset(id, 'x', sizeof(id));
        command_new_id(id, times[i]);
        assert_int_equal(strlen(id), COMMAND_ID_LEN);
        if (!all_lower_hex(id))
            fail_msg("id '%s' is not lowercase hex", id);
        if (i > 0 && strcmp(prev, id) >= 0)
            fail_msg("id for %llu ms ('%s') does not sort after '%s'", (unsigned long long)times[i],
                     id, prev);
        memcpy(prev, id, sizeof(id));
    }
    /* Many ids in the same ms are all different. */
    enum { N = 2000 };
    char(*ids)[COMMAND_ID_LEN + 1] = calloc(N, sizeof(*ids));
    assert_non_null(ids);
    for (size_t i = 0; i < N; i++) {
        command_new_id(ids[i], 1700000000555ull);
        assert_int_equal(strlen(ids[i]), COMMAND_ID_LEN);
        assert_true(all_lower_hex(ids[i]));
    }
    qsort(ids, N, sizeof(*ids), cmp_ids);
    for (size_t i = 1; i < N; i++) {
        if (strcmp(ids[i - 1], ids[i]) == 0)
            fail_msg("two ids in the same ms are equal: %s", ids[i]);
    }
    free(ids);
}

static void
test_may_send(void **state)
{
    (void)state;
    struct command c;
    make_cmd(&c, 2, 1000);
    /* 1 + retries sends are allowed, whatever non-final status it is in. */
    const enum command_status live[] = {COMMAND_QUEUED, COMMAND_SENT, COMMAND_DELIVERED};
    for (size_t s = 0; s < N_ELEMS(live); s++) {
        c.status = live[s];
        for (uint32_t a = 0; a <= c.retries + 1; a++) {
            c.attempts = a;
            bool want = a < c.retries + 1;
            if (command_may_send(&c) != want)
                fail_msg("may_send(status %s, attempts %u, retries %u) should be %d",
                         command_status_name(live[s]), a, c.retries, want);
        }
    }
    c.retries = 0; /* one send only */
    c.status = COMMAND_QUEUED;
    c.attempts = 0;
    assert_true(command_may_send(&c));
    c.status = COMMAND_SENT;
    c.attempts = 1;
    assert_false(command_may_send(&c));
    /* A finished command is never sent, even with sends left. */
    c.retries = 5;
    c.attempts = 0;
    for (size_t i = 0; i < N_ELEMS(statuses); i++) {
        if (!statuses[i].final)
            continue;
        c.status = statuses[i].status;
        if (command_may_send(&c))
            fail_msg("may_send true for final status %s", statuses[i].name);
    }
    command_clear(&c);
}

static void
test_mark_sent(void **state)
{
    (void)state;
    struct command c;
    make_cmd(&c, 3, 5000);
    char node[] = "n2";
    char channel[] = "n2/7/42";
    assert_int_equal(command_mark_sent(&c, node, channel, 1700000001000ull), RMQ_OK);
    assert_int_equal(c.attempts, 1);
    assert_int_equal(c.status, COMMAND_SENT);
    assert_int_equal(c.next_ms, 1700000006000ull);
    assert_int_equal(c.updated_ms, 1700000001000ull);
    /* Copied, not borrowed. */
    node[1] = '9';
    channel[1] = '9';
    assert_string_equal(c.node, "n2");
    assert_string_equal(c.channel_id, "n2/7/42");
    assert_string_equal(c.accepted_by, "n1");
    assert_int_equal(c.created_ms, 1700000000123ull);

    /* A re-send from another node replaces node and channel. */
    c.status = COMMAND_DELIVERED;
    assert_int_equal(command_mark_sent(&c, "n3", "n3/1/5", 1700000010000ull), RMQ_OK);
    assert_int_equal(c.attempts, 2);
    assert_int_equal(c.status, COMMAND_SENT);
    assert_int_equal(c.next_ms, 1700000015000ull);
    assert_string_equal(c.node, "n3");
    assert_string_equal(c.channel_id, "n3/1/5");
    command_clear(&c);
    /* command_clear zeroes the struct. */
    assert_null(c.device);
    assert_null(c.node);
    assert_int_equal(c.attempts, 0);
    command_clear(NULL);
}

static void
test_mark_delivered(void **state)
{
    (void)state;
    struct command c;
    make_cmd(&c, 3, 1000);
    assert_false(command_mark_delivered(&c, 0, 1700000001000ull)); /* still queued */
    assert_false(command_mark_delivered(&c, 1, 1700000001000ull));
    assert_int_equal(c.status, COMMAND_QUEUED);

    assert_int_equal(command_mark_sent(&c, "n1", "n1/1/1", 1700000001000ull), RMQ_OK);
    assert_int_equal(command_mark_sent(&c, "n1", "n1/1/1", 1700000002000ull), RMQ_OK);
    /* The ack of an earlier or later send does not count. */
    assert_false(command_mark_delivered(&c, 1, 1700000002500ull));
    assert_false(command_mark_delivered(&c, 3, 1700000002500ull));
    assert_int_equal(c.status, COMMAND_SENT);
    assert_int_equal(c.updated_ms, 1700000002000ull);

    assert_true(command_mark_delivered(&c, 2, 1700000002600ull));
    assert_int_equal(c.status, COMMAND_DELIVERED);
    assert_int_equal(c.updated_ms, 1700000002600ull);
    assert_int_equal(c.attempts, 2);
    /* A duplicate ack changes nothing. */
    assert_false(command_mark_delivered(&c, 2, 1700000002700ull));
    assert_int_equal(c.status, COMMAND_DELIVERED);
    assert_int_equal(c.updated_ms, 1700000002600ull);

    /* Finished: no ack revives it. */
    c.status = COMMAND_SENT;
    assert_int_equal(command_finish(&c, COMMAND_SUCCEEDED, "{}", 1700000003000ull), RMQ_OK);
    assert_false(command_mark_delivered(&c, 2, 1700000003100ull));
    assert_int_equal(c.status, COMMAND_SUCCEEDED);
    command_clear(&c);
}

static void
test_finish(void **state)
{
    (void)state;
    struct command c;
    make_cmd(&c, 1, 1000);
    assert_int_equal(command_mark_sent(&c, "n1", "n1/1/1", 1700000001000ull), RMQ_OK);
    assert_int_not_equal(c.next_ms, 0);
    char reply[] = "{\"ok\":true}";
    assert_int_equal(command_finish(&c, COMMAND_SUCCEEDED, reply, 1700000001500ull), RMQ_OK);
    reply[2] = 'X'; /* copied, not borrowed */
    assert_int_equal(c.status, COMMAND_SUCCEEDED);
    assert_string_equal(c.reply, "{\"ok\":true}");
    assert_int_equal(c.updated_ms, 1700000001500ull);
    assert_int_equal(c.next_ms, 0); /* nothing left to be due */
    assert_int_equal(c.attempts, 1);

    /* A second ending is refused and changes nothing. */
    assert_int_equal(command_finish(&c, COMMAND_FAILED, "{\"error\":\"late\"}", 1700000002000ull),
                     RMQ_EXISTS);
    assert_int_equal(c.status, COMMAND_SUCCEEDED);
    assert_string_equal(c.reply, "{\"ok\":true}");
    assert_int_equal(c.updated_ms, 1700000001500ull);
    assert_int_equal(command_finish(&c, COMMAND_CANCELED, NULL, 1700000003000ull), RMQ_EXISTS);
    assert_int_equal(c.status, COMMAND_SUCCEEDED);
    assert_string_equal(c.reply, "{\"ok\":true}");
    command_clear(&c);

    /* Every final status refuses a later ending; a cancel keeps no reply. */
    for (size_t i = 0; i < N_ELEMS(statuses); i++) {
        if (!statuses[i].final)
            continue;
        make_cmd(&c, 1, 1000);
        assert_int_equal(command_finish(&c, statuses[i].status, NULL, 1700000001000ull), RMQ_OK);
        assert_int_equal(c.status, statuses[i].status);
        assert_null(c.reply);
        assert_int_equal(command_finish(&c, COMMAND_SUCCEEDED, "{}", 1700000002000ull), RMQ_EXISTS);
        assert_int_equal(c.status, statuses[i].status);
        assert_null(c.reply);
        assert_int_equal(c.updated_ms, 1700000001000ull);
        command_clear(&c);
    }
}

static void
check_reply_status(const char *text, enum command_status want)
{
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    enum command_status got = command_reply_status(j);
    if (got != want)
        fail_msg("reply %s gives %s, expected %s", text, command_status_name(got),
                 command_status_name(want));
    json_decref(j);
}

static void
test_reply_status(void **state)
{
    (void)state;
    check_reply_status("{}", COMMAND_SUCCEEDED);
    check_reply_status("{\"result\":{\"rebooted\":true}}", COMMAND_SUCCEEDED);
    check_reply_status("{\"errors\":[1]}", COMMAND_SUCCEEDED);
    check_reply_status("{\"error\":\"disk full\"}", COMMAND_FAILED);
    check_reply_status("{\"error\":{\"code\":3}}", COMMAND_FAILED);
    check_reply_status("{\"result\":1,\"error\":null}", COMMAND_FAILED); /* the member is there */
}

static void
test_copy_is_deep(void **state)
{
    (void)state;
    struct command src, dst;
    make_cmd(&src, 4, 2500);
    src.idempotency_key = xstrdup("key-1");
    src.reply = xstrdup("{\"ok\":1}");
    src.channel_id = xstrdup("n1/3/9");
    src.attempts = 3;
    src.status = COMMAND_DELIVERED;
    src.next_ms = 1700000009999ull;
    src.notify = true;
    src.notify_addr = xstrdup("127.0.0.1:8081");
    assert_int_equal(command_copy(&dst, &src), RMQ_OK);
    char id[COMMAND_ID_LEN + 1];
    memcpy(id, src.id, sizeof(id));
    assert_ptr_not_equal(dst.device, src.device);
    assert_ptr_not_equal(dst.payload, src.payload);
    command_clear(&src); /* the copy must not share anything with it */
    assert_string_equal(dst.id, id);
    assert_string_equal(dst.device, "d1");
    assert_string_equal(dst.payload, "{\"op\":\"reboot\",\"delay\":2}");
    assert_string_equal(dst.idempotency_key, "key-1");
    assert_string_equal(dst.reply, "{\"ok\":1}");
    assert_string_equal(dst.node, "n1");
    assert_string_equal(dst.accepted_by, "n1");
    assert_string_equal(dst.channel_id, "n1/3/9");
    assert_true(dst.notify);
    assert_string_equal(dst.notify_addr, "127.0.0.1:8081");
    assert_int_equal(dst.status, COMMAND_DELIVERED);
    assert_int_equal(dst.attempts, 3);
    assert_int_equal(dst.retries, 4);
    assert_int_equal(dst.qos, 1);
    assert_int_equal(dst.interval_ms, 2500);
    assert_int_equal(dst.ttl_ms, 60000);
    assert_int_equal(dst.created_ms, 1700000000123ull);
    assert_int_equal(dst.expires_ms, 1700000060123ull);
    assert_int_equal(dst.next_ms, 1700000009999ull);

    /* Absent strings stay absent. */
    struct command again;
    free(dst.reply);
    free(dst.idempotency_key);
    free(dst.channel_id);
    free(dst.notify_addr);
    dst.reply = dst.idempotency_key = dst.channel_id = dst.notify_addr = NULL;
    assert_int_equal(command_copy(&again, &dst), RMQ_OK);
    assert_null(again.reply);
    assert_null(again.idempotency_key);
    assert_null(again.channel_id);
    assert_null(again.notify_addr);
    assert_string_equal(again.device, "d1");
    command_clear(&dst);
    command_clear(&again);
}

static void
test_json(void **state)
{
    (void)state;
    struct command c;
    make_cmd(&c, 2, 1000);
    c.attempts = 1;
    c.status = COMMAND_SENT;
    json_t *j = command_json(&c);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "id")), c.id);
    assert_string_equal(json_string_value(json_object_get(j, "device")), "d1");
    assert_string_equal(json_string_value(json_object_get(j, "status")), "sent");
    json_t *attempts = json_object_get(j, "attempts");
    assert_true(json_is_integer(attempts));
    assert_int_equal(json_integer_value(attempts), 1);
    json_t *payload = json_object_get(j, "payload");
    assert_true(json_is_object(payload)); /* the text parsed back, not a string */
    assert_string_equal(json_string_value(json_object_get(payload, "op")), "reboot");
    assert_int_equal(json_integer_value(json_object_get(payload, "delay")), 2);
    assert_true(json_is_null(json_object_get(j, "reply")));
    assert_true(json_is_null(json_object_get(j, "idempotency_key")));
    const char *created = json_string_value(json_object_get(j, "created_at"));
    assert_non_null(created);
    assert_string_equal(created, "2023-11-14T22:13:20.123Z");
    assert_int_equal(created[strlen(created) - 1], 'Z');
    json_decref(j);

    assert_int_equal(command_finish(&c, COMMAND_FAILED, "{\"error\":\"busy\"}", 1700000001000ull),
                     RMQ_OK);
    c.idempotency_key = xstrdup("abc");
    j = command_json(&c);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "failed");
    json_t *reply = json_object_get(j, "reply");
    assert_true(json_is_object(reply));
    assert_string_equal(json_string_value(json_object_get(reply, "error")), "busy");
    assert_string_equal(json_string_value(json_object_get(j, "idempotency_key")), "abc");
    const char *updated = json_string_value(json_object_get(j, "updated_at"));
    assert_non_null(updated);
    assert_string_equal(updated, "2023-11-14T22:13:21.000Z");
    json_decref(j);
    command_clear(&c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_names), cmocka_unit_test(test_status_final),
        cmocka_unit_test(test_new_id),       cmocka_unit_test(test_may_send),
        cmocka_unit_test(test_mark_sent),    cmocka_unit_test(test_mark_delivered),
        cmocka_unit_test(test_finish),       cmocka_unit_test(test_reply_status),
        cmocka_unit_test(test_copy_is_deep), cmocka_unit_test(test_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
