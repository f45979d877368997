/* Tests for http/peer_client.c against real servers on loopback ports: a
 * test server (http_server + an HMAC verifier) checks that what the client
 * signs verifies; then the failure modes: refused connection and the
 * fail-fast window after it, connect timeout (a listener whose backlog is
 * full), request timeout, the in-flight bound, and cancellation at free.
 * Last, node to node: a peer client calling a real broker's internal API,
 * including the takeover hook closing a live connection there.
 * Everything runs on one event loop, as in the broker. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker/broker.h"
#include "common/clock.h"
#include "http/hmac.h"
#include "http/http_body.h"
#include "http/http_server.h"
#include "http/internal_api.h"
#include "http/peer_client.h"

#define SECRET "peer-test-secret-0123456789"
#define MAX_HELD 8

/* ---- the test server: verifies signatures, echoes, or holds requests ---- */

struct test_server {
    struct http_server *http;
    struct hmac_verifier *verifier;
    struct http_request *held[MAX_HELD];
    size_t held_count;
    pthread_mutex_t lock;
};

static bool
verify(struct http_request *req, void *ctx)
{
    struct test_server *ts = ctx;
    size_t len;
    const char *body = http_request_body(req, &len);
    struct hmac_message m = {.method = http_request_method(req),
                             .path = http_request_path(req),
                             .node = http_request_header(req, HMAC_HEADER_NODE),
                             .nonce = http_request_header(req, HMAC_HEADER_NONCE),
                             .body = body,
                             .body_len = len};
    enum hmac_result r =
        hmac_verify(ts->verifier, &m, http_request_header(req, HMAC_HEADER_TIMESTAMP),
                    http_request_header(req, HMAC_HEADER_SIGNATURE), clock_wall_ms());
    if (r == HMAC_OK)
        return true;
    http_reply_error(req, 401, "unauthorized", "%s", hmac_result_name(r));
    return false;
}

static void
h_echo(struct http_request *req, void *ctx)
{
    json_t *doc = http_request_json_object(req);
    if (!doc)
        return;
    json_object_set_new(doc, "node", json_string(http_request_header(req, HMAC_HEADER_NODE)));
    json_object_set_new(doc, "path", json_string(http_request_path(req)));
    http_reply_json(req, 200, doc);
}

static void
h_hold(struct http_request *req, void *ctx)
{
    struct test_server *ts = ctx;
    pthread_mutex_lock(&ts->lock);
    if (ts->held_count < MAX_HELD) {
        ts->held[ts->held_count++] = http_request_defer(req);
        pthread_mutex_unlock(&ts->lock);
        return;
    }
    pthread_mutex_unlock(&ts->lock);
    http_reply_error(req, 503, "full", "too many held");
}

static const struct http_route test_routes[] = {
    {"POST", "/echo/{id}", h_echo, "echo", 0, NULL},
    {"GET", "/hold", h_hold, "hold", 0, NULL},
};

static void
server_start(struct test_server *ts)
{
    memset(ts, 0, sizeof(*ts));
    pthread_mutex_init(&ts->lock, NULL);
    ts->verifier = hmac_verifier_new(SECRET, strlen(SECRET), 30000, 1024);
    struct http_server_config cfg = {.name = "peer-test",
                                     .address = "127.0.0.1:0",
                                     .max_body = 65536,
                                     .timeout_ms = 10000,
                                     .routes = test_routes,
                                     .route_count = 2,
                                     .check_request = verify,
                                     .ctx = ts};
    ts->http = http_server_new(&cfg);
    assert_non_null(ts->http);
}

static void
server_stop(struct test_server *ts)
{
    http_server_stop(ts->http);
    for (size_t i = 0; i < ts->held_count; i++)
        http_reply_json(ts->held[i], 200, NULL); /* dropped: the server answered 503 */
    http_server_free(ts->http);
    hmac_verifier_free(ts->verifier);
    pthread_mutex_destroy(&ts->lock);
}

/* ---- the loop and results ---- */

struct outcome {
    enum peer_error error;
    int status;
    json_t *body;
    uint64_t at_ms;
    bool done;
};

struct loop {
    struct event_base *base;
    struct event *guard;
    int expected, seen;
};

static struct loop loop;

static void
on_result(const struct peer_result *res, void *arg)
{
    struct outcome *o = arg;
    assert_false(o->done);
    o->done = true;
    o->error = res->error;
    o->status = res->status;
    o->body = res->body ? json_incref(res->body) : NULL;
    o->at_ms = clock_monotonic_ms();
    if (++loop.seen >= loop.expected)
        event_base_loopbreak(loop.base);
}

static void
on_guard(evutil_socket_t fd, short what, void *arg)
{
    event_base_loopbreak(loop.base);
}

/* Runs the loop until `count` more results arrived (or 10 s passed). */
static void
wait_results(int count)
{
    loop.expected = loop.seen + count;
    struct timeval tv = {10, 0};
    evtimer_add(loop.guard, &tv);
    event_base_dispatch(loop.base);
    evtimer_del(loop.guard);
    assert_int_equal(loop.seen, loop.expected);
}

static int
setup(void **state)
{
    evthread_use_pthreads();
    loop.base = event_base_new();
    loop.guard = evtimer_new(loop.base, on_guard, NULL);
    loop.seen = loop.expected = 0;
    return loop.base && loop.guard ? 0 : -1;
}

static int
teardown(void **state)
{
    event_free(loop.guard);
    event_base_free(loop.base);
    return 0;
}

static struct peer_client *
client(const char *secret, uint64_t request_timeout_ms, unsigned max_in_flight)
{
    struct peer_client_config cfg = {.node_id = "node-a",
                                     .secret = secret,
                                     .connect_timeout_ms = 200,
                                     .request_timeout_ms = request_timeout_ms,
                                     .down_ms = 1000,
                                     .max_in_flight = max_in_flight};
    struct peer_client *pc = peer_client_new(loop.base, &cfg);
    assert_non_null(pc);
    return pc;
}

static void
address_of(uint16_t port, char *out, size_t len)
{
    snprintf(out, len, "127.0.0.1:%u", (unsigned)port);
}

/* ---- tests ---- */

static void
test_signed_requests_verify(void **state)
{
    struct test_server ts;
    server_start(&ts);
    char addr[64];
    address_of(http_server_port(ts.http), addr, sizeof(addr));
    struct peer_client *pc = client(SECRET, 2000, 8);
    struct outcome o[3] = {0};
    json_t *body = json_pack("{s:i}", "x", 1);
    char *esc = peer_client_escape("dev/1 x");
    assert_string_equal(esc, "dev%2F1%20x");
    char path[128];
    snprintf(path, sizeof(path), "/echo/%s", esc);
    free(esc);
    for (int i = 0; i < 3; i++)
        assert_int_equal(peer_client_request(pc, addr, "POST", path, body, on_result, &o[i]),
                         RMQ_OK);
    json_decref(body);
    assert_false(o[0].done); /* never inside the call */
    wait_results(3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(o[i].error, PEER_OK);
        assert_int_equal(o[i].status, 200);
        assert_int_equal(json_integer_value(json_object_get(o[i].body, "x")), 1);
        assert_string_equal(json_string_value(json_object_get(o[i].body, "node")), "node-a");
        assert_string_equal(json_string_value(json_object_get(o[i].body, "path")), path);
        json_decref(o[i].body);
    }
    peer_client_free(pc);

    /* Another secret: the server refuses the signature. */
    pc = client("not-the-secret", 2000, 8);
    struct outcome bad = {0};
    assert_int_equal(peer_client_request(pc, addr, "POST", "/echo/x", NULL, on_result, &bad),
                     RMQ_OK);
    wait_results(1);
    assert_int_equal(bad.error, PEER_OK);
    assert_int_equal(bad.status, 401);
    json_decref(bad.body);
    assert_int_equal(peer_client_request(pc, "no-port", "GET", "/x", NULL, on_result, &bad),
                     RMQ_INVALID);
    assert_int_equal(peer_client_request(pc, addr, "PATCH", "/x", NULL, on_result, &bad),
                     RMQ_INVALID);
    peer_client_free(pc);
    server_stop(&ts);
}

/* A loopback port nobody listens on. */
static uint16_t
closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    getsockname(fd, (struct sockaddr *)&sa, &len);
    close(fd);
    return ntohs(sa.sin_port);
}

static void
test_refused_peer_fails_fast(void **state)
{
    char addr[64];
    address_of(closed_port(), addr, sizeof(addr));
    struct peer_client *pc = client(SECRET, 2000, 8);
    struct outcome first = {0}, second = {0};
    assert_int_equal(peer_client_request(pc, addr, "GET", "/x", NULL, on_result, &first), RMQ_OK);
    wait_results(1);
    assert_int_equal(first.error, PEER_UNREACHABLE);
    uint64_t t0 = clock_monotonic_ms();
    assert_int_equal(peer_client_request(pc, addr, "GET", "/x", NULL, on_result, &second), RMQ_OK);
    wait_results(1);
    assert_int_equal(second.error, PEER_UNREACHABLE);
    assert_true(second.at_ms - t0 < 100);
    peer_client_free(pc);
}

static void
test_connect_timeout(void **state)
{
    /* A listener that never accepts, its backlog filled: further SYNs are
     * dropped, so a connect hangs. */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(lfd, 0), 0);
    getsockname(lfd, (struct sockaddr *)&sa, &len);
    int fillers[4];
    for (int i = 0; i < 4; i++) {
        fillers[i] = socket(AF_INET, SOCK_STREAM, 0);
        fcntl(fillers[i], F_SETFL, O_NONBLOCK);
        connect(fillers[i], (struct sockaddr *)&sa, sizeof(sa));
    }
    usleep(100 * 1000);
    char addr[64];
    address_of(ntohs(sa.sin_port), addr, sizeof(addr));
    struct peer_client *pc = client(SECRET, 3000, 8);
    struct outcome o = {0};
    uint64_t t0 = clock_monotonic_ms();
    assert_int_equal(peer_client_request(pc, addr, "GET", "/x", NULL, on_result, &o), RMQ_OK);
    wait_results(1);
    assert_int_equal(o.error, PEER_UNREACHABLE);
    assert_true(o.at_ms - t0 >= 150 && o.at_ms - t0 < 1500); /* the 200 ms connect limit */
    peer_client_free(pc);
    for (int i = 0; i < 4; i++)
        close(fillers[i]);
    close(lfd);
}

static void
test_timeout_busy_and_cancel(void **state)
{
    struct test_server ts;
    server_start(&ts);
    char addr[64];
    address_of(http_server_port(ts.http), addr, sizeof(addr));

    struct peer_client *pc = client(SECRET, 400, 2);
    struct outcome slow = {0};
    uint64_t t0 = clock_monotonic_ms();
    assert_int_equal(peer_client_request(pc, addr, "GET", "/hold", NULL, on_result, &slow), RMQ_OK);
    wait_results(1);
    assert_int_equal(slow.error, PEER_TIMEOUT);
    assert_true(slow.at_ms - t0 >= 350 && slow.at_ms - t0 < 2000);
    peer_client_free(pc);

    pc = client(SECRET, 5000, 2);
    struct outcome o[3] = {0};
    for (int i = 0; i < 3; i++)
        assert_int_equal(peer_client_request(pc, addr, "GET", "/hold", NULL, on_result, &o[i]),
                         RMQ_OK);
    wait_results(1);
    assert_true(o[2].done);
    assert_int_equal(o[2].error, PEER_BUSY);
    assert_false(o[0].done);
    peer_client_free(pc); /* the two running ones are cancelled */
    assert_true(o[0].done && o[1].done);
    assert_int_equal(o[0].error, PEER_CANCELLED);
    assert_int_equal(o[1].error, PEER_CANCELLED);
    server_stop(&ts);
}

static void
on_closed(evutil_socket_t fd, short what, void *arg)
{
    char buf[16];
    if (recv(fd, buf, sizeof(buf), 0) <= 0) { /* EOF: the broker closed it */
        *(bool *)arg = true;
        event_base_loopbreak(loop.base);
    }
}

/* peer_client_close_remote (the cluster's takeover hook) closes a live
 * connection on the other node. */
static void
close_remote(struct peer_client *pc, const char *addr, uint16_t mqtt_port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(mqtt_port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    bool closed = false;
    struct event *ev = event_new(loop.base, fd, EV_READ | EV_PERSIST, on_closed, &closed);
    event_add(ev, NULL);
    struct timeval tv = {0, 100 * 1000}; /* let the broker accept: channel 1 */
    event_base_loopexit(loop.base, &tv);
    event_base_dispatch(loop.base);
    /* A close for another run of that node (the broker here has epoch 0)
     * must leave the connection alone. */
    peer_client_close_remote(pc, "node-b", addr, 12345, 1, "kicked", NULL, NULL);
    struct timeval wait = {0, 300 * 1000};
    event_base_loopexit(loop.base, &wait);
    event_base_dispatch(loop.base);
    assert_false(closed);
    peer_client_close_remote(pc, "node-b", addr, 0, 1, "kicked", NULL, NULL);
    struct timeval guard = {10, 0};
    evtimer_add(loop.guard, &guard);
    event_base_dispatch(loop.base);
    evtimer_del(loop.guard);
    assert_true(closed);
    event_free(ev);
    close(fd);
}

static void
test_node_to_node_internal_api(void **state)
{
    char mqtt[64];
    uint16_t mqtt_port = closed_port();
    address_of(mqtt_port, mqtt, sizeof(mqtt));
    const char *listen[] = {mqtt};
    struct broker_config bc = {.listen = listen,
                               .listen_count = 1,
                               .node_id = "node-b",
                               .allow_anonymous = true,
                               .max_packet_size = 65536,
                               .max_inflight = 10,
                               .max_queued_messages = 10,
                               .max_output_buffer = 65536,
                               .connect_timeout_ms = 5000};
    struct broker *b = broker_new(loop.base, &bc);
    assert_non_null(b);
    struct internal_api_config ic = {.address = "127.0.0.1:0",
                                     .max_body = 65536,
                                     .timeout_ms = 5000,
                                     .secret = SECRET,
                                     .max_skew_ms = 30000,
                                     .broker = b};
    struct internal_api *api = internal_api_new(&ic);
    assert_non_null(api);
    char addr[64];
    address_of(internal_api_port(api), addr, sizeof(addr));

    struct peer_client *pc = client(SECRET, 2000, 8);
    struct outcome o[4] = {0};
    json_t *kick = json_pack("{s:s}", "reason", "kicked");
    json_t *msg = json_pack("{s:s,s:s,s:i}", "topic", "t/1", "payload", "aGk=", "qos", 1);
    peer_client_request(pc, addr, "GET", "/internal/v1/clients/nobody", NULL, on_result, &o[0]);
    peer_client_request(pc, addr, "POST", "/internal/v1/channels/999/close", kick, on_result,
                        &o[1]);
    peer_client_request(pc, addr, "POST", "/internal/v1/channels/999/deliver", msg, on_result,
                        &o[2]);
    json_decref(kick);
    json_decref(msg);
    wait_results(3);
    const char *codes[] = {"client_not_found", "channel_not_found", "channel_not_found"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(o[i].error, PEER_OK);
        assert_int_equal(o[i].status, 404);
        json_t *err = json_object_get(o[i].body, "error");
        assert_string_equal(json_string_value(json_object_get(err, "code")), codes[i]);
        json_decref(o[i].body);
    }
    close_remote(pc, addr, mqtt_port);
    peer_client_free(pc);

    pc = client("wrong-secret", 2000, 8);
    peer_client_request(pc, addr, "GET", "/internal/v1/clients/nobody", NULL, on_result, &o[3]);
    wait_results(1);
    assert_int_equal(o[3].status, 401);
    json_decref(o[3].body);
    peer_client_free(pc);

    internal_api_stop(api);
    broker_free(b);
    internal_api_free(api);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_signed_requests_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_peer_fails_fast, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_busy_and_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_node_to_node_internal_api, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
