/* Unit tests for http/http_server.c: the pure parts (route matching,
 * percent-decoding) directly, and the request life cycle against a
 * live server on a loopback port driven by a raw-socket client: 404/405
 * with Allow, 413 by Content-Length and while a chunked body arrives,
 * gates, JSON errors, answers deferred to another thread, a handler that
 * forgets to answer, per-route counters, and a stop while a request is
 * suspended (answered 503, the late owner's answer dropped, nothing leaked:
 * the test build runs under AddressSanitizer), and a switch of protocols
 * (101, the socket handed over and closed through the server). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "http/http_body.h"
#include "http/http_server.h"

/* ---- pure helpers ---- */

static void
test_route_match(void **state)
{
    struct http_params p;
    assert_true(http_route_match("/healthz", "/healthz", &p));
    assert_int_equal(p.count, 0);
    assert_false(http_route_match("/healthz", "/healthz/", &p));
    assert_false(http_route_match("/healthz", "/health", &p));
    assert_false(http_route_match("/a/b", "/a", &p));
    assert_false(http_route_match("/a", "/a/b", &p));
    assert_false(http_route_match("/a", "", &p));

    assert_true(http_route_match("/api/v1/clients/{id}", "/api/v1/clients/dev%2F7%20x", &p));
    assert_int_equal(p.count, 1);
    assert_int_equal(p.name_lens[0], 2);
    assert_memory_equal(p.names[0], "id", 2);
    assert_string_equal(p.values[0], "dev/7 x");
    http_params_clear(&p);

    assert_true(http_route_match("/c/{channel}/close", "/c/42/close", &p));
    assert_string_equal(p.values[0], "42");
    http_params_clear(&p);
    assert_false(http_route_match("/c/{channel}/close", "/c/42/open", &p));
    assert_int_equal(p.count, 0); /* nothing left allocated after a miss */
    assert_false(http_route_match("/c/{channel}/close", "/c//close", &p));
    assert_false(http_route_match("/c/{id}", "/c/%zz", &p));
    assert_false(http_route_match("/c/{id}", "/c/%00", &p));
    assert_false(http_route_match("/c/{id}", "/c/%4", &p));

    assert_true(http_route_match("/{a}/{b}", "/x/y", &p));
    assert_int_equal(p.count, 2);
    assert_string_equal(p.values[1], "y");
    http_params_clear(&p);
    assert_false(http_route_match("/{a}/{b}/{c}/{d}/{e}", "/1/2/3/4/5", &p));
}

static void
test_percent_decode(void **state)
{
    char *s = http_percent_decode("a%41%2f%7E+", 11);
    assert_string_equal(s, "aA/~+");
    free(s);
    assert_null(http_percent_decode("%", 1));
    assert_null(http_percent_decode("%4", 2));
    assert_null(http_percent_decode("%g1", 3));
    assert_null(http_percent_decode("a%00b", 5));
    s = http_percent_decode("", 0);
    assert_string_equal(s, "");
    free(s);
}

/* ---- a live server ---- */

struct later_arg {
    struct http_request *req;
};

static struct http_request *held;
static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;

static void
h_sync(struct http_request *req, void *ctx)
{
    http_reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

static void
h_item(struct http_request *req, void *ctx)
{
    http_reply_json(req, 200,
                    json_pack("{s:s,s:s}", "id", http_request_param(req, "id"), "method",
                              http_request_method(req)));
}

static void
h_echo(struct http_request *req, void *ctx)
{
    json_t *doc = http_request_json_object(req);
    if (doc)
        http_reply_json(req, 200, doc);
}

static void
h_query(struct http_request *req, void *ctx)
{
    const char *v = http_request_query(req, "name");
    http_reply_json(req, 200, json_pack("{s:s?}", "name", v));
}

static void *
answer_later(void *arg)
{
    struct http_request *req = arg;
    usleep(50 * 1000);
    http_reply_json(req, 200, json_pack("{s:b}", "later", 1));
    return NULL;
}

static void
h_later(struct http_request *req, void *ctx)
{
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, answer_later, http_request_defer(req)), 0);
    pthread_detach(t);
}

static void
h_forgot(struct http_request *req, void *ctx)
{
}

static void
h_held(struct http_request *req, void *ctx)
{
    pthread_mutex_lock(&held_lock);
    held = http_request_defer(req);
    pthread_mutex_unlock(&held_lock);
}

/* The upgraded connection, handed over on the MHD thread. */
static struct {
    pthread_mutex_t lock;
    int fd;
    struct http_upgraded *conn;
    char extra[64];
} upgraded = {PTHREAD_MUTEX_INITIALIZER, -1, NULL, ""};

static void
on_upgraded(void *arg, int fd, const char *extra, size_t extra_len, struct http_upgraded *conn)
{
    assert_ptr_equal(arg, &upgraded);
    pthread_mutex_lock(&upgraded.lock);
    upgraded.fd = fd;
    upgraded.conn = conn;
    snprintf(upgraded.extra, sizeof(upgraded.extra), "%.*s", (int)extra_len, extra);
    pthread_mutex_unlock(&upgraded.lock);
}

static void
h_upgrade(struct http_request *req, void *ctx)
{
    assert_true(http_reply_upgrade(req, "echo", on_upgraded, &upgraded));
}

static bool
gate(struct http_request *req, void *ctx)
{
    const char *key = http_request_header(req, "X-Key");
    if (http_request_route(req)->flags & HTTP_ROUTE_PUBLIC || (key && strcmp(key, "yes") == 0))
        return true;
    http_reply_header(req, "WWW-Authenticate", "Test");
    http_reply_error(req, 401, "unauthorized", "no key");
    return false;
}

static const struct http_route routes[] = {
    {"GET", "/sync", h_sync, "sync", HTTP_ROUTE_PUBLIC, NULL},
    {"GET", "/items/{id}", h_item, "item_get", HTTP_ROUTE_PUBLIC, NULL},
    {"DELETE", "/items/{id}", h_item, "item_delete", HTTP_ROUTE_PUBLIC, NULL},
    {"POST", "/echo", h_echo, "echo", HTTP_ROUTE_PUBLIC, NULL},
    {"GET", "/q", h_query, "query", HTTP_ROUTE_PUBLIC, NULL},
    {"GET", "/later", h_later, "later", HTTP_ROUTE_PUBLIC, NULL},
    {"GET", "/forgot", h_forgot, "forgot", HTTP_ROUTE_PUBLIC, NULL},
    {"GET", "/held", h_held, "held", HTTP_ROUTE_PUBLIC, NULL},
    {"GET", "/secret", h_sync, "secret", 0, NULL},
    {"POST", "/up", h_upgrade, "up", HTTP_ROUTE_PUBLIC, NULL},
};

static struct http_server *
start(void)
{
    struct http_server_config cfg = {
        .name = "test",
        .address = "127.0.0.1:0",
        .max_body = 64,
        .timeout_ms = 5000,
        .routes = routes,
        .route_count = sizeof(routes) / sizeof(routes[0]),
        .check_headers = gate,
    };
    struct http_server *s = http_server_new(&cfg);
    assert_non_null(s);
    assert_true(http_server_port(s) > 0);
    return s;
}

struct reply {
    int status;
    char head[2048];
    char body[4096];
};

/* Sends raw (which should ask for Connection: close) and reads to EOF. */
static void
call(uint16_t port, const char *raw, struct reply *out)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    struct timeval tv = {5, 0};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(send(fd, raw, strlen(raw), MSG_NOSIGNAL), (ssize_t)strlen(raw));
    char buf[8192];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof(buf) - 1 && (n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0)) > 0)
        len += (size_t)n;
    close(fd);
    buf[len] = '\0';
    memset(out, 0, sizeof(*out));
    assert_int_equal(sscanf(buf, "HTTP/1.1 %d", &out->status), 1);
    char *sep = strstr(buf, "\r\n\r\n");
    assert_non_null(sep);
    snprintf(out->head, sizeof(out->head), "%.*s", (int)(sep - buf), buf);
    snprintf(out->body, sizeof(out->body), "%s", sep + 4);
}

static void
get(uint16_t port, const char *method, const char *path, struct reply *out)
{
    char raw[512];
    snprintf(raw, sizeof(raw), "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", method,
             path);
    call(port, raw, out);
}

static void
test_routing_and_errors(void **state)
{
    struct http_server *s = start();
    uint16_t port = http_server_port(s);
    struct reply r;

    get(port, "GET", "/sync", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"ok\":true}");
    assert_non_null(strstr(r.head, "Content-Type: application/json"));

    get(port, "GET", "/items/a%2Fb", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"id\":\"a/b\",\"method\":\"GET\"}");

    get(port, "GET", "/nowhere", &r);
    assert_int_equal(r.status, 404);
    assert_non_null(strstr(r.body, "\"code\":\"not_found\""));

    get(port, "PUT", "/items/x", &r);
    assert_int_equal(r.status, 405);
    assert_non_null(strstr(r.head, "Allow: GET, DELETE"));
    assert_non_null(strstr(r.body, "\"code\":\"method_not_allowed\""));

    get(port, "GET", "/secret", &r);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.head, "WWW-Authenticate: Test"));
    call(port, "GET /secret HTTP/1.1\r\nHost: t\r\nX-Key: yes\r\nConnection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 200);

    get(port, "GET", "/q?name=a%20b+c", &r);
    assert_string_equal(r.body, "{\"name\":\"a b c\"}");
    get(port, "GET", "/q", &r);
    assert_string_equal(r.body, "{\"name\":null}");

    get(port, "GET", "/forgot", &r);
    assert_int_equal(r.status, 500);
    http_server_free(s);
}

static void
test_bodies(void **state)
{
    struct http_server *s = start();
    uint16_t port = http_server_port(s);
    struct reply r;

    call(port,
         "POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 7\r\n\r\n"
         "{\"a\":1}",
         &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"a\":1}");

    call(port,
         "POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 5\r\n\r\n"
         "{\"a\":",
         &r);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "\"code\":\"bad_json\""));

    call(port,
         "POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 2\r\n\r\n"
         "[]",
         &r);
    assert_int_equal(r.status, 400);

    /* Announced above the limit: the body is read and dropped, then 413. */
    char raw[1024];
    snprintf(raw, sizeof(raw),
             "POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 100\r\n\r\n"
             "%0100d",
             0);
    call(port, raw, &r);
    assert_int_equal(r.status, 413);
    assert_non_null(strstr(r.body, "\"code\":\"body_too_large\""));
    /* Far above it: refused at once, nothing read. */
    call(port, "POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 999\r\n\r\n",
         &r);
    assert_int_equal(r.status, 413);

    /* No length announced: the limit is found while the chunks arrive. */
    snprintf(raw, sizeof(raw),
             "POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
             "Transfer-Encoding: chunked\r\n\r\n28\r\n%040d\r\n28\r\n%040d\r\n0\r\n\r\n",
             0, 0);
    call(port, raw, &r);
    assert_int_equal(r.status, 413);
    http_server_free(s);
}

static void
test_deferred_answer_and_metrics(void **state)
{
    struct http_server *s = start();
    uint16_t port = http_server_port(s);
    struct reply r;
    for (int i = 0; i < 3; i++) {
        get(port, "GET", "/later", &r);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "{\"later\":true}");
    }
    get(port, "GET", "/nowhere", &r);

    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    http_server_write_metrics(s, out);
    fclose(out);
    assert_non_null(strstr(
        text, "relaymq_http_requests_total{server=\"test\",route=\"later\",code=\"200\"} 3\n"));
    assert_non_null(strstr(
        text, "relaymq_http_requests_total{server=\"test\",route=\"unmatched\",code=\"404\"} 1\n"));
    assert_null(strstr(text, "route=\"sync\""));
    free(text);
    http_server_free(s);
}

struct client_arg {
    uint16_t port;
    struct reply reply;
};

static void *
client_thread(void *arg)
{
    struct client_arg *c = arg;
    get(c->port, "GET", "/held", &c->reply);
    return NULL;
}

static void
test_stop_answers_suspended_requests(void **state)
{
    struct http_server *s = start();
    struct client_arg c = {.port = http_server_port(s)};
    pthread_t t;
    held = NULL;
    assert_int_equal(pthread_create(&t, NULL, client_thread, &c), 0);
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&held_lock);
        bool got = held != NULL;
        pthread_mutex_unlock(&held_lock);
        if (got)
            break;
        usleep(10 * 1000);
    }
    assert_non_null(held);
    usleep(50 * 1000); /* let the MHD thread suspend it */

    http_server_stop(s);
    pthread_join(t, NULL);
    assert_int_equal(c.reply.status, 503);
    assert_non_null(strstr(c.reply.body, "\"code\":\"shutting_down\""));

    /* The owner answers late: dropped, and its reference released. */
    http_reply_json(held, 200, json_pack("{s:b}", "late", 1));
    held = NULL;
    http_server_free(s);
}

static void
test_bad_address(void **state)
{
    struct http_server_config cfg = {.name = "bad",
                                     .address = "nowhere",
                                     .max_body = 64,
                                     .timeout_ms = 1000,
                                     .routes = routes,
                                     .route_count = 1};
    assert_null(http_server_new(&cfg));
    cfg.address = "127.0.0.1:99999";
    assert_null(http_server_new(&cfg));
}

/* Reads exactly n bytes from a (possibly non-blocking) socket, 5 s at most. */
static void
read_exactly(int fd, char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        assert_int_equal(poll(&p, 1, 5000), 1);
        ssize_t r = recv(fd, buf + got, n - got, 0);
        assert_true(r > 0);
        got += (size_t)r;
    }
}

/* 101 Switching Protocols: the socket goes to the handler's owner, who
 * reads the bytes sent after the request (some may have come with it:
 * extra), writes, and closes it through the server. */
static void
test_upgrade(void **state)
{
    struct http_server *s = start();
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(http_server_port(s))};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    const char *req = "POST /up HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n"
                      "Content-Length: 0\r\n\r\n";
    assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    char head[1024];
    size_t len = 0;
    while (len < 4 || memcmp(head + len - 4, "\r\n\r\n", 4) != 0) {
        assert_true(len < sizeof(head) - 1);
        read_exactly(fd, head + len, 1);
        len++;
    }
    head[len] = '\0';
    assert_memory_equal(head, "HTTP/1.1 101", 12);
    assert_non_null(strstr(head, "Upgrade: echo"));

    int server_fd = -1;
    struct http_upgraded *conn = NULL;
    for (int i = 0; i < 500 && server_fd < 0; i++) {
        pthread_mutex_lock(&upgraded.lock);
        server_fd = upgraded.fd;
        conn = upgraded.conn;
        pthread_mutex_unlock(&upgraded.lock);
        if (server_fd < 0)
            usleep(10 * 1000);
    }
    assert_true(server_fd >= 0);
    assert_string_equal(upgraded.extra, "");
    char buf[4];
    assert_int_equal(send(fd, "ping", 4, MSG_NOSIGNAL), 4);
    read_exactly(server_fd, buf, 4);
    assert_memory_equal(buf, "ping", 4);
    assert_int_equal(send(server_fd, "pong", 4, MSG_NOSIGNAL), 4);
    read_exactly(fd, buf, 4);
    assert_memory_equal(buf, "pong", 4);

    http_upgraded_close(conn);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 5000), 1);
    assert_true(recv(fd, buf, sizeof(buf), 0) <= 0); /* closed by the server */
    close(fd);
    http_server_free(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_match),
        cmocka_unit_test(test_percent_decode),
        cmocka_unit_test(test_routing_and_errors),
        cmocka_unit_test(test_bodies),
        cmocka_unit_test(test_deferred_answer_and_metrics),
        cmocka_unit_test(test_stop_answers_suspended_requests),
        cmocka_unit_test(test_bad_address),
        cmocka_unit_test(test_upgrade),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
