/* Unit tests for broker/listener_spec.c: listener URLs with and without a
 * scheme, global defaults and per-listener overrides, and every refusal
 * with the message that names it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "broker/listener_spec.h"
#include "broker/proxy_proto.h"

static const struct listener_options TLS_DEFAULTS = {
    .tls_cert = "/etc/s.crt",
    .tls_key = "/etc/s.key",
    .tls_ca_file = "/etc/ca.crt",
    .tls_compact_sessions = true,
    .tls_session_tickets = 1,
    .tls_ticket_key_file = "/etc/tickets.key",
};

static void
assert_parses(const char *url, const struct listener_options *o, struct listener_spec *s)
{
    char err[256] = "";
    enum rmq_status st = listener_spec_parse(url, o, s, err, sizeof(err));
    if (st != RMQ_OK)
        fail_msg("%s: %s", url, err);
}

/* Parsing fails and the message contains want. */
static void
assert_refused(const char *url, const struct listener_options *o, const char *want)
{
    char err[256] = "";
    struct listener_spec s;
    assert_int_equal(listener_spec_parse(url, o, &s, err, sizeof(err)), RMQ_INVALID);
    if (!strstr(err, want))
        fail_msg("%s: message '%s' lacks '%s'", url, err, want);
    listener_spec_free(&s);
}

static void
test_plain_forms(void **state)
{
    (void)state;
    struct listener_spec s;
    char kind[32];
    assert_parses("127.0.0.1:1883", NULL, &s);
    assert_false(s.tls);
    assert_int_equal(s.proxy, 0);
    assert_string_equal(s.host, "127.0.0.1");
    assert_string_equal(s.port, "1883");
    assert_string_equal(listener_spec_kind(&s, kind, sizeof(kind)), "tcp");
    listener_spec_free(&s);
    assert_parses("tcp://[::1]:0", NULL, &s);
    assert_string_equal(s.host, "::1");
    assert_string_equal(s.port, "0");
    listener_spec_free(&s);
    assert_parses("0.0.0.0:1883?proxy-protocol=v2", NULL, &s);
    assert_int_equal(s.proxy, PROXY_PROTO_ACCEPT_V2);
    assert_string_equal(listener_spec_kind(&s, kind, sizeof(kind)), "tcp+proxy-v2");
    listener_spec_free(&s);
}

static void
test_global_proxy_default_and_override(void **state)
{
    (void)state;
    struct listener_options o = {.proxy_protocol = "on"};
    struct listener_spec s;
    assert_parses("127.0.0.1:1883", &o, &s);
    assert_int_equal(s.proxy, PROXY_PROTO_ACCEPT_ANY);
    listener_spec_free(&s);
    assert_parses("127.0.0.1:1883?proxy-protocol=off", &o, &s);
    assert_int_equal(s.proxy, 0);
    listener_spec_free(&s);
    assert_parses("127.0.0.1:1883?proxy-protocol=v1", &o, &s);
    assert_int_equal(s.proxy, PROXY_PROTO_ACCEPT_V1);
    listener_spec_free(&s);
    o.proxy_protocol = "sometimes";
    assert_refused("127.0.0.1:1883", &o, "proxy-protocol: 'sometimes'");
}

static void
test_tls_defaults_and_overrides(void **state)
{
    (void)state;
    struct listener_spec s;
    char kind[32];
    assert_parses("tls://0.0.0.0:8883", &TLS_DEFAULTS, &s);
    assert_true(s.tls);
    assert_string_equal(s.tls_cfg.cert, "/etc/s.crt");
    assert_string_equal(s.tls_cfg.ca_file, "/etc/ca.crt");
    assert_false(s.tls_cfg.require_certificate);
    assert_int_equal(s.tls_cfg.min_version, LISTENER_TLS_1_2);
    assert_null(s.tls_cfg.ciphers);
    assert_true(s.tls_cfg.compact_sessions);
    assert_int_equal(s.tls_cfg.session_tickets, 1);
    assert_string_equal(s.tls_cfg.ticket_key_file, "/etc/tickets.key");
    listener_spec_free(&s);
    struct listener_options no_key = TLS_DEFAULTS;
    no_key.tls_ticket_key_file = "";
    assert_parses("tls://0.0.0.0:8883", &no_key, &s);
    assert_null(s.tls_cfg.ticket_key_file);
    listener_spec_free(&s);

    assert_parses("tls://0.0.0.0:8883?compact-sessions=false&session-tickets=0", &TLS_DEFAULTS,
                  &s);
    assert_false(s.tls_cfg.compact_sessions);
    assert_int_equal(s.tls_cfg.session_tickets, 0);
    listener_spec_free(&s);
    assert_parses("wss://0.0.0.0:8884?session-tickets=10", &TLS_DEFAULTS, &s);
    assert_int_equal(s.tls_cfg.session_tickets, 10);
    listener_spec_free(&s);

    assert_parses("tls://0.0.0.0:8883?require-certificate=true&use-identity-as-username=yes"
                  "&cert=/x/a.crt&key=/x/a.key&min-version=1.3&ciphers=ECDHE+AESGCM"
                  "&proxy-protocol=v2",
                  &TLS_DEFAULTS, &s);
    assert_true(s.tls_cfg.require_certificate);
    assert_true(s.tls_cfg.use_identity_as_username);
    assert_string_equal(s.tls_cfg.cert, "/x/a.crt");
    assert_string_equal(s.tls_cfg.key, "/x/a.key");
    assert_int_equal(s.tls_cfg.min_version, LISTENER_TLS_1_3);
    assert_string_equal(s.tls_cfg.ciphers, "ECDHE+AESGCM");
    assert_string_equal(s.host, "0.0.0.0");
    assert_string_equal(listener_spec_kind(&s, kind, sizeof(kind)), "tls+proxy-v2");
    listener_spec_free(&s);

    struct listener_options strict = TLS_DEFAULTS;
    strict.tls_require_certificate = true;
    strict.tls_min_version = "1.3";
    assert_parses("tls://0.0.0.0:8883?require-certificate=false", &strict, &s);
    assert_false(s.tls_cfg.require_certificate);
    assert_int_equal(s.tls_cfg.min_version, LISTENER_TLS_1_3);
    listener_spec_free(&s);
}

static void
test_websocket_forms(void **state)
{
    (void)state;
    struct listener_spec s;
    char kind[32];
    assert_parses("ws://0.0.0.0:8080", NULL, &s);
    assert_true(s.ws);
    assert_false(s.tls);
    assert_string_equal(s.path, "/mqtt");
    assert_string_equal(s.port, "8080");
    assert_string_equal(listener_spec_kind(&s, kind, sizeof(kind)), "ws");
    listener_spec_free(&s);
    assert_parses("wss://0.0.0.0:8443?path=/ws/mqtt&require-certificate=true&proxy-protocol=on",
                  &TLS_DEFAULTS, &s);
    assert_true(s.ws && s.tls && s.tls_cfg.require_certificate);
    assert_string_equal(s.path, "/ws/mqtt");
    assert_string_equal(listener_spec_kind(&s, kind, sizeof(kind)), "wss+proxy");
    listener_spec_free(&s);
}

static void
test_connection_limits(void **state)
{
    (void)state;
    struct listener_options rate = {.max_connection_rate = 50};
    struct listener_spec s;
    assert_parses("127.0.0.1:1883", NULL, &s);
    assert_int_equal(s.max_connections, 0);
    assert_int_equal(s.max_connection_rate, 0);
    listener_spec_free(&s);
    assert_parses("127.0.0.1:1883", &rate, &s);
    assert_int_equal(s.max_connection_rate, 50);
    listener_spec_free(&s);
    assert_parses("ws://127.0.0.1:80?max-connections=100&max-connection-rate=0", &rate, &s);
    assert_int_equal(s.max_connections, 100);
    assert_int_equal(s.max_connection_rate, 0);
    listener_spec_free(&s);
    assert_refused("127.0.0.1:1883?max-connections=-1", NULL, "max-connections: '-1'");
    assert_refused("127.0.0.1:1883?max-connections=", NULL, "max-connections: ''");
    assert_refused("127.0.0.1:1883?max-connection-rate=10000001", NULL,
                   "max-connection-rate: '10000001' is not a count");
}

static void
test_refusals(void **state)
{
    (void)state;
    struct listener_options no_ca = {.tls_cert = "c", .tls_key = "k"};
    struct listener_options bad_version = TLS_DEFAULTS;
    bad_version.tls_min_version = "1.1";
    assert_refused("127.0.0.1", NULL, "expected HOST:PORT");
    assert_refused("127.0.0.1:65536", NULL, "port from 0 to 65535");
    assert_refused("127.0.0.1:x", NULL, "expected HOST:PORT");
    assert_refused(":1883", NULL, "expected HOST:PORT");
    assert_refused("[::1:1883", NULL, "expected HOST:PORT");
    assert_refused("http://127.0.0.1:80", NULL, "unknown scheme");
    assert_refused("wss://127.0.0.1:443", NULL, "a wss:// listener needs a certificate");
    assert_refused("tcp://127.0.0.1:1883?path=/mqtt", NULL, "only for ws:// and wss://");
    assert_refused("ws://127.0.0.1:80?path=mqtt", NULL, "path: 'mqtt' is not a path");
    assert_refused("ws://127.0.0.1:80?cert=x", NULL, "only for tls:// and wss://");
    assert_refused("tls://127.0.0.1:8883", NULL, "needs a certificate and a key");
    assert_refused("tls://127.0.0.1:8883?require-certificate=true", &no_ca, "needs a CA file");
    assert_refused("tls://127.0.0.1:8883?use-identity-as-username=true", &no_ca,
                   "use-identity-as-username needs a CA file");
    assert_refused("127.0.0.1:1883?require-certificate=true", &TLS_DEFAULTS,
                   "only for tls:// and wss:// listeners");
    assert_refused("tls://127.0.0.1:8883?colour=blue", &TLS_DEFAULTS,
                   "unknown parameter 'colour'");
    assert_refused("tls://127.0.0.1:8883?require-certificate", &TLS_DEFAULTS, "no '=VALUE'");
    assert_refused("tls://127.0.0.1:8883?require-certificate=maybe", &TLS_DEFAULTS,
                   "require-certificate: 'maybe' is not true or false");
    assert_refused("tls://127.0.0.1:8883?min-version=1.0", &TLS_DEFAULTS, "1.2 or 1.3");
    assert_refused("tls://127.0.0.1:8883?session-tickets=11", &TLS_DEFAULTS,
                   "session-tickets: '11' is not a count from 0 to 10");
    assert_refused("tls://127.0.0.1:8883?session-tickets=-1", &TLS_DEFAULTS,
                   "session-tickets: '-1'");
    assert_refused("tls://127.0.0.1:8883?session-tickets=", &TLS_DEFAULTS, "session-tickets: ''");
    assert_refused("127.0.0.1:1883?session-tickets=1", &TLS_DEFAULTS,
                   "only for tls:// and wss:// listeners");
    assert_refused("tls://127.0.0.1:8883", &bad_version, "tls-min-version: '1.1'");
    assert_refused("tls://127.0.0.1:8883?cert=", &TLS_DEFAULTS, "cert: '' is not a file name");
    assert_refused("127.0.0.1:1883?proxy-protocol=v3", NULL, "proxy-protocol: 'v3'");
    listener_spec_free(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_forms),
        cmocka_unit_test(test_global_proxy_default_and_override),
        cmocka_unit_test(test_tls_defaults_and_overrides),
        cmocka_unit_test(test_websocket_forms),
        cmocka_unit_test(test_connection_limits),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
