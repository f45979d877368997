/* Unit tests for cluster/bridge.c: rule texts (every setting, the errors
 * start-up reports for each kind of mistake), templates ({device} {topic}
 * {client_id} {node} {json.PATH}), and the script calls built for a
 * message: the rule's fields in order, the dedup key, and what invalid
 * JSON or a missing key field leads to under each on-bad-json action.
 * Random rule texts must never crash (this runs under ASan/UBSan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/bridge.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

static const struct bridge_options opts = {.prefix = "rmq:", .dead_letter = NULL};

static struct bridge_rules *
parse_ok(const char *const *texts, size_t n)
{
    char err[512] = "";
    struct bridge_rules *rs = bridge_rules_parse(texts, n, &opts, err, sizeof(err));
    if (!rs)
        fail_msg("bridge_rules_parse: %s", err);
    return rs;
}

static struct bridge_rules *
parse_one(const char *text)
{
    return parse_ok(&text, 1);
}

/* A telemetry sample from device d1 on node n1. */
static struct bridge_message
sample(const char *topic, const char *payload)
{
    return (struct bridge_message){
        .topic = topic,
        .topic_len = strlen(topic),
        .device = "d1",
        .client_id = "c1",
        .node = "n1",
        .payload = (const uint8_t *)payload,
        .payload_len = strlen(payload),
        .qos = 1,
        .ts_ms = 1700000000123ull,
    };
}

static void
check_arg(const struct bridge_entry *e, int i, const char *want)
{
    assert_true(i < e->argc);
    if (e->lens[i] != strlen(want) || memcmp(e->argv[i], want, e->lens[i]) != 0)
        fail_msg("argv[%d] is '%.*s', expected '%s'", i, (int)e->lens[i], e->argv[i], want);
    assert_int_equal(e->argv[i][e->lens[i]], '\0');
}

/* Checks the whole argument list against want (NULL-terminated). */
static void
check_args(const struct bridge_entry *e, const char *const *want)
{
    int n = 0;
    while (want[n])
        n++;
    assert_int_equal(e->argc, n);
    for (int i = 0; i < n; i++)
        check_arg(e, i, want[i]);
}

/* Applies rule 0 of a one-rule text to m; returns the verdict, *out the entry. */
static enum bridge_verdict
apply1(const char *rule, const struct bridge_message *m, struct bridge_entry **out)
{
    struct bridge_rules *rs = parse_one(rule);
    struct bridge_json json = {0};
    enum bridge_verdict v = bridge_rule_apply(rs, 0, m, &json, out);
    bridge_json_release(&json);
    bridge_rules_free(rs);
    return v;
}

/* ---- parsing ---- */

static void
test_defaults_write_every_field(void **state)
{
    struct bridge_message m = sample("telemetry/d1", "{\"t\":1}");
    struct bridge_entry *e;
    assert_int_equal(apply1("telemetry/# stream=tele", &m, &e), BRIDGE_WRITE);
    assert_non_null(e);
    static const char *const want[] = {
        "tele",          "1000000", "3600000",   "topic", "telemetry/d1", "device", "d1",
        "client_id",     "c1",      "node",      "n1",    "qos",          "1",      "ts",
        "1700000000123", "payload", "{\"t\":1}", NULL};
    check_args(e, want);
    assert_int_equal(e->nkeys, 1);
    assert_false(e->dedup);
    assert_string_equal(e->stream, "tele");
    assert_true(e->size > sizeof(*e));
    free(e);
}

static void
test_settings_are_applied(void **state)
{
    struct bridge_message m = sample("a/b", "xyz");
    m.qos = 0;
    struct bridge_entry *e;
    assert_int_equal(
        apply1("  a/+ \t stream=s:{node}:{device}  maxlen=0 fields=payload+ts,qos ", &m, &e),
        BRIDGE_WRITE);
    static const char *const want[] = {"s:n1:d1",       "0",   "3600000", "payload", "xyz", "ts",
                                       "1700000000123", "qos", "0",       NULL};
    check_args(e, want);
    free(e);
}

static void
test_filter_setting_form(void **state)
{
    /* A config file takes a bare '#' after a blank for a comment. */
    struct bridge_message m = sample("x/y/z", "1");
    struct bridge_entry *e;
    assert_int_equal(apply1("filter=# stream=all fields=topic", &m, &e), BRIDGE_WRITE);
    static const char *const want[] = {"all", "1000000", "3600000", "topic", "x/y/z", NULL};
    check_args(e, want);
    free(e);
}

static void
test_no_match(void **state)
{
    struct bridge_entry *e = (void *)1;
    struct bridge_message m = sample("other/d1", "{}");
    assert_int_equal(apply1("telemetry/# stream=tele", &m, &e), BRIDGE_NO_MATCH);
    assert_null(e);
    /* MQTT: '#' does not match $ topics. */
    m = sample("$SYS/x", "{}");
    assert_int_equal(apply1("# stream=tele", &m, &e), BRIDGE_NO_MATCH);
    m = sample("telemetry", "{}"); /* '#' matches the parent level */
    assert_int_equal(apply1("telemetry/# stream=tele", &m, &e), BRIDGE_WRITE);
    free(e);
}

struct bad_case {
    const char *text;
    const char *want; /* substring of the error */
};

static void
test_errors_name_rule_and_problem(void **state)
{
    static const struct bad_case cases[] = {
        {"", "empty rule"},
        {"   ", "empty rule"},
        {"a/#", "no stream=NAME (in RELAYMQ_BRIDGE commas"},
        {"a/# maxlen=5", "no stream=NAME"},
        {"a/#/b stream=x", "'a/#/b' is not a valid MQTT topic filter"},
        {"a/b+ stream=x", "not a valid MQTT topic filter"},
        {"filter= stream=x", "'' is not a valid MQTT topic filter"},
        {"a stream=", "stream: empty"},
        {"a stream=x stream=y", "stream= is given twice"},
        {"a filter=b stream=x", "filter= is given twice"},
        {"a stream=x maxlen=abc", "maxlen: 'abc' is not a number"},
        {"a stream=x maxlen=-1", "maxlen: '-1'"},
        {"a stream=x maxlen=99999999999999999999", "maxlen:"},
        {"a stream=x fields=topic,bogus", "unknown field 'bogus'"},
        {"a stream=x fields=topic+topic", "'topic' is listed twice"},
        {"a stream=x fields=topic,,qos", "fields: empty name"},
        {"a stream=x fields=", "fields: empty name"},
        {"a stream=x dedup={foo}", "dedup: unknown placeholder {foo} (use {device}, {topic}, "
                                   "{client_id}, {node} or {json.PATH})"},
        {"a stream={json.x}", "stream: {json.x}: JSON fields are only allowed in dedup="},
        {"a stream={nope}", "stream: unknown placeholder {nope} (use {device}, {topic}, "
                            "{client_id}, {node})"},
        {"a stream=x dedup={device", "dedup: unclosed '{'"},
        {"a stream=x dedup={de{vice}", "unclosed '{'"},
        {"a stream=x dedup=dev}", "dedup: '}' without '{'"},
        {"a stream=x dedup={json.}", "dedup: empty step in {json.}"},
        {"a stream=x dedup={json.a..b}", "empty step in {json.a..b}"},
        {"a stream=x dedup=", "dedup: empty"},
        {"a stream=x window=10s", "window= needs dedup="},
        {"a stream=x dedup={json.ts} window=0", "window: '0' is not a duration"},
        {"a stream=x dedup={json.ts} window=soon", "window: 'soon'"},
        {"a stream=x dedup={device} on-bad-json=drop", "on-bad-json= needs a dedup= template"},
        {"a stream=x on-bad-json=drop", "on-bad-json= needs"},
        {"a stream=x dedup={json.ts} on-bad-json=maybe", "'maybe' is not plain, dead-letter or "
                                                         "drop"},
        {"a stream=x color=red", "unknown setting 'color' (stream, maxlen, fields, dedup, "
                                 "window, on-bad-json)"},
        {"a stream=x junk", "'junk' is not NAME=VALUE"},
    };
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        char err[512] = "";
        const char *text = cases[i].text;
        struct bridge_rules *rs = bridge_rules_parse(&text, 1, &opts, err, sizeof(err));
        if (rs)
            fail_msg("'%s' was accepted", text);
        char prefix[256];
        snprintf(prefix, sizeof(prefix), "bridge rule 1 '%s': ", text);
        if (strncmp(err, prefix, strlen(prefix)) != 0 || !strstr(err, cases[i].want))
            fail_msg("'%s': error '%s' lacks '%s'", text, err, cases[i].want);
    }
}

static void
test_second_rule_is_named(void **state)
{
    const char *texts[] = {"a stream=x", "b stream=y maxlen=z"};
    char err[512] = "";
    assert_null(bridge_rules_parse(texts, 2, &opts, err, sizeof(err)));
    assert_non_null(strstr(err, "bridge rule 2 'b stream=y maxlen=z': maxlen: 'z'"));
}

static void
test_describe_and_dead_letter_name(void **state)
{
    const char *texts[] = {"t/# stream=tele dedup={device}:{json.ts} window=10m "
                           "on-bad-json=dead-letter",
                           "u/# stream=u maxlen=0 fields=payload"};
    struct bridge_rules *rs = parse_ok(texts, 2);
    assert_int_equal(bridge_rules_count(rs), 2);
    char text[512];
    bridge_rule_describe(rs, 0, text, sizeof(text));
    assert_string_equal(text, "t/# -> stream tele, maxlen ~1000000, fields "
                              "topic,device,client_id,node,qos,ts,payload, dedup "
                              "{device}:{json.ts} for 600000 ms, bad JSON: dead-letter");
    bridge_rule_describe(rs, 1, text, sizeof(text));
    assert_string_equal(text, "u/# -> stream u, maxlen ~0 (untrimmed), fields payload");
    assert_string_equal(bridge_dead_letter(rs), "rmq:bridge:dead-letter");
    bridge_rules_free(rs);

    struct bridge_options own = {.prefix = "p:", .dead_letter = "dl"};
    char err[256];
    rs = bridge_rules_parse(texts, 2, &own, err, sizeof(err));
    assert_non_null(rs);
    assert_string_equal(bridge_dead_letter(rs), "dl");
    bridge_rules_free(rs);
    assert_int_equal(bridge_rules_count(NULL), 0);
    bridge_rules_free(NULL);
}

/* ---- de-duplication ---- */

static void
test_dedup_key_from_json(void **state)
{
    struct bridge_message m =
        sample("t/d1", "{\"ts\":1700000000,\"meta\":{\"seq\":[5,\"x\"]},\"f\":1.5,\"ok\":true}");
    struct bridge_entry *e;
    assert_int_equal(apply1("t/# stream=tele:{device} fields=qos "
                            "dedup={device}/{topic}/{json.ts}/{json.meta.seq.1}/{json.f}/"
                            "{json.ok}/{client_id} window=90s",
                            &m, &e),
                     BRIDGE_WRITE);
    static const char *const want[] = {
        "tele:d1", "rmq:dedup:tele:d1:d1/t/d1/1700000000/x/1.5/true/c1",
        "1000000", "90000",
        "qos",     "1",
        NULL};
    check_args(e, want);
    assert_int_equal(e->nkeys, 2);
    assert_true(e->dedup);
    free(e);

    m = sample("t/d1", "{\"meta\":{\"seq\":[7]}}");
    assert_int_equal(apply1("t/# stream=s fields=qos dedup=k{json.meta.seq.0}", &m, &e),
                     BRIDGE_WRITE);
    check_arg(e, 1, "rmq:dedup:s:k7");
    free(e);
}

struct json_case {
    const char *payload;
    const char *reason; /* NULL: the key can be built */
};

static void
test_bad_json_actions(void **state)
{
    static const struct json_case cases[] = {
        {"{\"ts\":1}", NULL},
        {"{\"ts\":\"2024-01-01\"}", NULL},
        {"not json", "invalid_json"},
        {"", "invalid_json"},
        {"{\"ts\":1", "invalid_json"},
        {"{\"other\":1}", "missing_field"},
        {"{\"ts\":null}", "missing_field"},
        {"{\"ts\":{\"a\":1}}", "missing_field"},
        {"{\"ts\":[1]}", "missing_field"},
        {"[1,2]", "missing_field"},
        {"42", "missing_field"},
    };
    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct bridge_message m = sample("t/x", cases[i].payload);
        struct bridge_entry *e;
        const char *why = cases[i].reason;

        enum bridge_verdict v = apply1("t/# stream=s dedup={json.ts}", &m, &e);
        assert_int_equal(v, why ? BRIDGE_WRITE_PLAIN : BRIDGE_WRITE);
        assert_int_equal(e->nkeys, why ? 1 : 2);
        assert_int_equal(e->dedup, !why);
        check_arg(e, 0, "s");
        free(e);

        v = apply1("t/# stream=s dedup={json.ts} on-bad-json=drop", &m, &e);
        assert_int_equal(v, why ? BRIDGE_DROP_BAD_JSON : BRIDGE_WRITE);
        if (why)
            assert_null(e);
        free(e);

        v = apply1("t/# stream=s:{device} fields=ts dedup={json.ts} on-bad-json=dead-letter", &m,
                   &e);
        assert_int_equal(v, why ? BRIDGE_DEAD_LETTER : BRIDGE_WRITE);
        if (why) {
            const char *want[] = {"rmq:bridge:dead-letter",
                                  "1000000",
                                  "0",
                                  "topic",
                                  "t/x",
                                  "device",
                                  "d1",
                                  "client_id",
                                  "c1",
                                  "node",
                                  "n1",
                                  "qos",
                                  "1",
                                  "ts",
                                  "1700000000123",
                                  "payload",
                                  cases[i].payload,
                                  "reason",
                                  why,
                                  "stream",
                                  "s:d1",
                                  NULL};
            check_args(e, want);
            assert_int_equal(e->nkeys, 1);
            assert_string_equal(e->stream, "rmq:bridge:dead-letter");
        }
        free(e);
    }
}

static void
test_json_parsed_once_for_all_rules(void **state)
{
    const char *texts[] = {"t/# stream=a dedup={json.ts}", "t/# stream=b dedup={json.id}",
                           "t/# stream=c"};
    struct bridge_rules *rs = parse_ok(texts, 3);
    struct bridge_message m = sample("t/1", "{\"ts\":3,\"id\":\"q\"}");
    struct bridge_json json = {0};
    struct bridge_entry *e;
    assert_int_equal(bridge_rule_apply(rs, 0, &m, &json, &e), BRIDGE_WRITE);
    check_arg(e, 1, "rmq:dedup:a:3");
    free(e);
    assert_true(json.parsed);
    void *doc = json.doc;
    assert_non_null(doc);
    assert_int_equal(bridge_rule_apply(rs, 1, &m, &json, &e), BRIDGE_WRITE);
    check_arg(e, 1, "rmq:dedup:b:q");
    assert_ptr_equal(json.doc, doc);
    free(e);
    assert_int_equal(bridge_rule_apply(rs, 2, &m, &json, &e), BRIDGE_WRITE);
    assert_int_equal(e->nkeys, 1);
    free(e);
    bridge_json_release(&json);
    assert_false(json.parsed);
    assert_null(json.doc);
    bridge_rules_free(rs);
}

static void
test_dedup_without_json_needs_no_parse(void **state)
{
    const char *text = "t/# stream=s dedup={device}:{topic}";
    struct bridge_rules *rs = parse_ok(&text, 1);
    struct bridge_message m = sample("t/1", "\x01\x02 not json");
    struct bridge_json json = {0};
    struct bridge_entry *e;
    assert_int_equal(bridge_rule_apply(rs, 0, &m, &json, &e), BRIDGE_WRITE);
    check_arg(e, 1, "rmq:dedup:s:d1:t/1");
    assert_false(json.parsed);
    free(e);
    bridge_rules_free(rs);
}

static void
test_binary_payload_kept_whole(void **state)
{
    static const uint8_t bin[] = {0, 1, 0xff, 0, '{'};
    struct bridge_message m = sample("t/b", "");
    m.payload = bin;
    m.payload_len = sizeof(bin);
    struct bridge_entry *e;
    assert_int_equal(apply1("t/# stream=s fields=payload", &m, &e), BRIDGE_WRITE);
    assert_int_equal(e->lens[4], sizeof(bin));
    assert_memory_equal(e->argv[4], bin, sizeof(bin));
    free(e);
}

/* Rule texts built at random from plausible tokens, then sometimes
 * mutated byte by byte, must parse or fail cleanly: no crash, no leak,
 * an error message when refused. */
static void
test_random_rules_never_crash(void **state)
{
    static const char *const filters[] = {"a/#", "#", "+/b", "a/+", "a/b", "filter=#", "a/#/b"};
    static const char *const keys[] = {"stream", "maxlen",      "fields", "dedup",
                                       "window", "on-bad-json", "filter", "bogus"};
    static const char *const values[] = {
        "s",          "s:{device}", "{topic}", "{json.x}",    "{device}:{json.x}",
        "{json.a.0}", "12",         "0",       "topic+qos",   "payload,ts",
        "1s",         "drop",       "plain",   "dead-letter", "",
        "{",          "}",          "{json.}",
    };
    static const char alphabet[] = "{}.,+=#/ ajson0";
    int accepted = 0, written = 0;
    srand(12345);
    for (int round = 0; round < 20000; round++) {
        char text[512];
        size_t o =
            (size_t)snprintf(text, sizeof(text), "%s", filters[rand() % (int)N_ELEMS(filters)]);
        if (rand() % 8)
            o += (size_t)snprintf(text + o, sizeof(text) - o, " stream=%s", values[rand() % 6]);
        for (int k = rand() % 4; k > 0; k--)
            o += (size_t)snprintf(text + o, sizeof(text) - o, " %s=%s",
                                  keys[rand() % (int)N_ELEMS(keys)],
                                  values[rand() % (int)N_ELEMS(values)]);
        for (int k = rand() % 3 == 0 ? rand() % 3 + 1 : 0; k > 0 && o > 0; k--)
            text[rand() % (int)o] = alphabet[rand() % (int)(sizeof(alphabet) - 1)];
        const char *t = text;
        char err[512] = "";
        struct bridge_rules *rs = bridge_rules_parse(&t, 1, &opts, err, sizeof(err));
        if (!rs) {
            if (!err[0])
                fail_msg("'%s' refused without a message", text);
            continue;
        }
        accepted++;
        const char *payloads[] = {"{\"x\":1,\"a\":[2]}", "nope", "{}"};
        struct bridge_message m = sample(rand() % 2 ? "a/b" : "x/y", payloads[rand() % 3]);
        struct bridge_json json = {0};
        struct bridge_entry *e;
        if (bridge_rule_apply(rs, 0, &m, &json, &e) != BRIDGE_NO_MATCH && e)
            written++;
        free(e);
        bridge_json_release(&json);
        bridge_rules_free(rs);
    }
    /* The mix reaches the writing path, not only the errors. */
    if (accepted < 1000 || written < 500)
        fail_msg("only %d random rules accepted, %d wrote", accepted, written);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_write_every_field),
        cmocka_unit_test(test_settings_are_applied),
        cmocka_unit_test(test_filter_setting_form),
        cmocka_unit_test(test_no_match),
        cmocka_unit_test(test_errors_name_rule_and_problem),
        cmocka_unit_test(test_second_rule_is_named),
        cmocka_unit_test(test_describe_and_dead_letter_name),
        cmocka_unit_test(test_dedup_key_from_json),
        cmocka_unit_test(test_bad_json_actions),
        cmocka_unit_test(test_json_parsed_once_for_all_rules),
        cmocka_unit_test(test_dedup_without_json_needs_no_parse),
        cmocka_unit_test(test_binary_payload_kept_whole),
        cmocka_unit_test(test_random_rules_never_crash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
