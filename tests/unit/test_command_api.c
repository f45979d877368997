/* Unit tests for http/command_api.c's pure part, command_api_parse: the
 * defaults a bare payload gets, and each field's accepted and refused
 * values (payload, qos, retries, interval, ttl, idempotency_key), the
 * refusal naming the field. The HTTP handlers need a live server; the
 * integration tests' command cases exercise them. Runs under ASan: the
 * request must own its payload and command_request_clear free it all. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/command_api.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* Parses the body text (which must be valid JSON); the body is released
 * before returning, so the request must hold its own references. */
static bool
parse_text(const char *text, struct command_request *req, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *body = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (!body)
        fail_msg("bad test JSON %s: %s", text, jerr.text);
    err[0] = '\0';
    bool ok = command_api_parse(body, req, err, errlen);
    json_decref(body);
    return ok;
}

static void
accept_body(const char *text, struct command_request *req)
{
    char err[256];
    if (!parse_text(text, req, err, sizeof(err)))
        fail_msg("%s refused: %s", text, err);
}

/* The body is refused, err naming field. */
static void
refuse_body(const char *text, const char *field)
{
    struct command_request req;
    char err[256];
    if (parse_text(text, &req, err, sizeof(err))) {
        command_request_clear(&req);
        fail_msg("%s accepted", text);
    }
    if (!strstr(err, field))
        fail_msg("refusing %s, err '%s' does not name %s", text, err, field);
    command_request_clear(&req); /* safe after a refusal */
}

static void
test_defaults(void **state)
{
    (void)state;
    struct command_request req;
    accept_body("{\"payload\":{\"op\":\"reboot\",\"args\":[1,2]}}", &req);
    assert_int_equal(req.qos, -1);
    assert_int_equal(req.retries, -1);
    assert_int_equal(req.interval_ms, 0);
    assert_int_equal(req.ttl_ms, 0);
    assert_null(req.idempotency_key);
    assert_null(req.device);
    assert_int_equal(req.wait_ms, 0);
    /* The payload outlives the body (parse_text released it). */
    assert_true(json_is_object(req.payload));
    assert_string_equal(json_string_value(json_object_get(req.payload, "op")), "reboot");
    assert_int_equal(json_array_size(json_object_get(req.payload, "args")), 2);
    command_request_clear(&req);

    accept_body("{\"payload\":{}}", &req); /* an empty object is still an object */
    assert_true(json_is_object(req.payload));
    assert_int_equal(json_object_size(req.payload), 0);
    command_request_clear(&req);
}

static void
test_all_fields(void **state)
{
    (void)state;
    struct command_request req;
    accept_body("{\"payload\":{\"a\":1},\"qos\":2,\"retries\":7,\"interval\":\"3s\",\"ttl\":\"2h\","
                "\"idempotency_key\":\"order-42\"}",
                &req);
    assert_int_equal(req.qos, 2);
    assert_int_equal(req.retries, 7);
    assert_int_equal(req.interval_ms, 3000);
    assert_int_equal(req.ttl_ms, 7200000);
    assert_string_equal(req.idempotency_key, "order-42");
    assert_int_equal(json_integer_value(json_object_get(req.payload, "a")), 1);
    /* clear frees everything, device included, and zeroes the request. */
    req.device = strdup("d1");
    assert_non_null(req.device);
    command_request_clear(&req);
    assert_null(req.device);
    assert_null(req.payload);
    assert_null(req.idempotency_key);
}

static void
test_payload(void **state)
{
    (void)state;
    const char *bad[] = {
        "{}",
        "{\"payload\":null}",
        "{\"payload\":\"{\\\"op\\\":1}\"}",
        "{\"payload\":[{\"op\":1}]}",
        "{\"payload\":[]}",
        "{\"payload\":5}",
        "{\"payload\":true}",
        "{\"Payload\":{\"op\":1}}",
        "[{\"payload\":{}}]", /* the body itself is not an object */
        "\"payload\"",
    };
    for (size_t i = 0; i < N_ELEMS(bad); i++)
        refuse_body(bad[i], "payload");
}

static void
test_qos(void **state)
{
    (void)state;
    for (int q = 0; q <= 2; q++) {
        char text[64];
        snprintf(text, sizeof(text), "{\"payload\":{},\"qos\":%d}", q);
        struct command_request req;
        accept_body(text, &req);
        assert_int_equal(req.qos, q);
        command_request_clear(&req);
    }
    const char *bad[] = {"3", "-1", "\"1\"", "1.5", "null", "true", "[1]", "256"};
    for (size_t i = 0; i < N_ELEMS(bad); i++) {
        char text[64];
        snprintf(text, sizeof(text), "{\"payload\":{},\"qos\":%s}", bad[i]);
        refuse_body(text, "qos");
    }
}

static void
test_retries(void **state)
{
    (void)state;
    const int good[] = {0, 1, 100};
    for (size_t i = 0; i < N_ELEMS(good); i++) {
        char text[64];
        snprintf(text, sizeof(text), "{\"payload\":{},\"retries\":%d}", good[i]);
        struct command_request req;
        accept_body(text, &req);
        assert_int_equal(req.retries, good[i]);
        command_request_clear(&req);
    }
    const char *bad[] = {"101", "-1", "\"3\"", "2.5", "null", "4294967297"};
    for (size_t i = 0; i < N_ELEMS(bad); i++) {
        char text[64];
        snprintf(text, sizeof(text), "{\"payload\":{},\"retries\":%s}", bad[i]);
        refuse_body(text, "retries");
    }
}

struct duration_case {
    const char *json;
    uint64_t ms;
};

static void
check_durations(const char *field, const struct duration_case *good, size_t n_good,
                const char *const *bad, size_t n_bad)
{
    for (size_t i = 0; i < n_good; i++) {
        char text[128];
        snprintf(text, sizeof(text), "{\"payload\":{},\"%s\":%s}", field, good[i].json);
        struct command_request req;
        accept_body(text, &req);
        uint64_t got = strcmp(field, "ttl") == 0 ? req.ttl_ms : req.interval_ms;
        uint64_t other = strcmp(field, "ttl") == 0 ? req.interval_ms : req.ttl_ms;
        if (got != good[i].ms)
            fail_msg("%s %s gave %llu ms, expected %llu", field, good[i].json,
                     (unsigned long long)got, (unsigned long long)good[i].ms);
        assert_int_equal(other, 0);
        command_request_clear(&req);
    }
    for (size_t i = 0; i < n_bad; i++) {
        char text[128];
        snprintf(text, sizeof(text), "{\"payload\":{},\"%s\":%s}", field, bad[i]);
        refuse_body(text, field);
    }
}

static void
test_interval(void **state)
{
    (void)state;
    const struct duration_case good[] = {
        {"\"10s\"", 10000}, {"\"500ms\"", 500},   {"2", 2000},           {"0.5", 500},
        {"\"100ms\"", 100}, {"0.1", 100},         {"\"24h\"", 86400000}, {"86400", 86400000},
        {"\"1m\"", 60000},  {"\"1d\"", 86400000},
    };
    const char *bad[] = {"\"abc\"",  "\"50ms\"", "\"2d\"",    "true", "\"\"",    "null",
                         "\"99ms\"", "0.05",     "0",         "-1",   "86400.5", "\"25h\"",
                         "\"-1s\"",  "\"10 s\"", "[\"10s\"]", "1e300"};
    check_durations("interval", good, N_ELEMS(good), bad, N_ELEMS(bad));
}

static void
test_ttl(void **state)
{
    (void)state;
    const struct duration_case good[] = {
        {"\"1s\"", 1000},           {"1", 1000},
        {"\"1h\"", 3600000},        {"1.5", 1500},
        {"\"30d\"", 2592000000ull}, {"2592000", 2592000000ull},
        {"\"1000ms\"", 1000},
    };
    const char *bad[] = {"\"abc\"", "\"999ms\"", "0.5", "0",      "\"31d\"", "2592000.001", "true",
                         "null",    "\"\"",      "-60", "\"0s\"", "{}",      "1e300"};
    check_durations("ttl", good, N_ELEMS(good), bad, N_ELEMS(bad));
}

static void
test_idempotency_key(void **state)
{
    (void)state;
    char key[202];
    memset(key, 'k', sizeof(key) - 1);
    key[200] = '\0';
    char text[300];
    snprintf(text, sizeof(text), "{\"payload\":{},\"idempotency_key\":\"%s\"}", key);
    struct command_request req;
    accept_body(text, &req);
    assert_string_equal(req.idempotency_key, key);
    command_request_clear(&req);

    accept_body("{\"payload\":{},\"idempotency_key\":\"a\"}", &req);
    assert_string_equal(req.idempotency_key, "a");
    command_request_clear(&req);

    key[200] = 'k';
    key[201] = '\0'; /* 201 bytes */
    snprintf(text, sizeof(text), "{\"payload\":{},\"idempotency_key\":\"%s\"}", key);
    refuse_body(text, "idempotency_key");
    const char *bad[] = {"\"\"", "5", "null", "true", "[\"a\"]", "{\"k\":1}"};
    for (size_t i = 0; i < N_ELEMS(bad); i++) {
        snprintf(text, sizeof(text), "{\"payload\":{},\"idempotency_key\":%s}", bad[i]);
        refuse_body(text, "idempotency_key");
    }
}

/* A refusal fits whatever err buffer it is given. */
static void
test_small_err(void **state)
{
    (void)state;
    struct command_request req;
    char err[8];
    memset(err, 'x', sizeof(err));
    assert_false(parse_text("{\"payload\":{},\"idempotency_key\":\"\"}", &req, err, sizeof(err)));
    assert_non_null(memchr(err, '\0', sizeof(err)));
    command_request_clear(&req);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),  cmocka_unit_test(test_all_fields),
        cmocka_unit_test(test_payload),   cmocka_unit_test(test_qos),
        cmocka_unit_test(test_retries),   cmocka_unit_test(test_interval),
        cmocka_unit_test(test_ttl),       cmocka_unit_test(test_idempotency_key),
        cmocka_unit_test(test_small_err),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
