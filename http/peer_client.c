/* Signed node-to-node HTTP calls over libevent's evhttp client; see
 * peer_client.h for the limits.
 *
 * Ownership. The client owns its peers (a hashmap by address) and each
 * peer its evhttp connections. Every accepted request is a struct pending
 * on the client's list until both its callback has run and evhttp has
 * released its evhttp_request (evhttp frees the request itself after our
 * completion callback; a cancelled one is freed inside evhttp_cancel_request).
 *
 * libevent 2.1 has one timeout for connect and I/O, so the connect limit is
 * ours: a timer per request checks at connect_timeout whether the
 * connection's socket has a peer yet (getpeername), then fires again at the
 * request deadline. evhttp's own timeout is set to the request timeout as a
 * backstop. An evhttp connection is never freed with requests on it (it
 * would free them without a callback): they are cancelled first.
 *
 * Loop thread only. */
#include "http/peer_client.h"

#include "http/metrics.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <inttypes.h>
#include <openssl/rand.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "common/clock.h"
#include "common/hashmap.h"
#include "common/log.h"
#include "http/hmac.h"

#define MAX_CONNECTIONS 16
#define IDLE_REOPEN_MS 15000 /* below the servers' idle timeout: reopen rather than race it */
#define MAX_ANSWER (16u * 1024u * 1024u)

struct peer {
    struct peer_client *pc;
    char *address;
    char host[256];
    uint16_t port;
    struct evhttp_connection *conns[MAX_CONNECTIONS];
    unsigned busy[MAX_CONNECTIONS]; /* requests queued or running on each */
    uint64_t last_used_ms[MAX_CONNECTIONS];
    unsigned in_flight;
    uint64_t down_until_ms;
};

struct pending {
    struct peer_client *pc;
    struct peer *peer;
    int conn;                   /* index in peer->conns, -1 if never sent */
    struct evhttp_request *req; /* NULL once evhttp let go of it */
    struct event timer;
    bool timer_armed;
    bool connect_checked;
    bool done; /* callback delivered */
    bool have_error;
    enum evhttp_request_error error;
    enum peer_error early; /* failure decided before sending (busy, down) */
    peer_client_cb cb;
    void *arg;
    struct pending *prev, *next;
};

struct peer_client {
    struct event_base *base;
    struct evdns_base *dns; /* NULL: evhttp resolves names blocking (fallback) */
    char *node_id;
    char *secret;
    struct peer_client_config cfg;
    struct hashmap *peers;
    struct pending *pending;
    bool freeing;
    uint64_t outcomes[PEER_CANCELLED + 1]; /* requests answered, by enum peer_error */
};

const char *
peer_error_name(enum peer_error e)
{
    static const char *const names[] = {
        [PEER_OK] = "ok",     [PEER_UNREACHABLE] = "unreachable", [PEER_TIMEOUT] = "timeout",
        [PEER_BUSY] = "busy", [PEER_BROKEN] = "broken",           [PEER_CANCELLED] = "cancelled",
    };
    return (unsigned)e < sizeof(names) / sizeof(names[0]) ? names[e] : "unknown";
}

char *
peer_client_escape(const char *segment)
{
    return evhttp_uriencode(segment, -1, 0);
}

/* ---- peers ---- */

static void
peer_free(void *value)
{
    struct peer *p = value;
    for (size_t i = 0; i < MAX_CONNECTIONS; i++)
        if (p->conns[i])
            evhttp_connection_free(p->conns[i]);
    free(p->address);
    free(p);
}

static enum rmq_status
split_host_port(const char *address, char *host, size_t hostlen, uint16_t *port)
{
    const char *colon = strrchr(address, ':');
    if (!colon || colon == address)
        return RMQ_INVALID;
    char *end;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (*end || p == 0 || p > 65535)
        return RMQ_INVALID;
    const char *h = address;
    size_t hl = (size_t)(colon - address);
    if (h[0] == '[') {
        if (hl < 2 || h[hl - 1] != ']')
            return RMQ_INVALID;
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= hostlen)
        return RMQ_INVALID;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (uint16_t)p;
    return RMQ_OK;
}

static struct peer *
peer_get(struct peer_client *pc, const char *address)
{
    struct peer *p = hashmap_get(pc->peers, address, strlen(address));
    if (p)
        return p;
    p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->pc = pc;
    p->address = strdup(address);
    if (!p->address || split_host_port(address, p->host, sizeof(p->host), &p->port) != RMQ_OK ||
        hashmap_put(pc->peers, p->address, strlen(p->address), p, NULL) != RMQ_OK) {
        free(p->address);
        free(p);
        return NULL;
    }
    return p;
}

/* The least busy connection, opened (or reopened when idle long) on demand. */
static int
peer_pick(struct peer *p, uint64_t now)
{
    struct peer_client *pc = p->pc;
    int best = 0;
    for (int i = 1; i < (int)pc->cfg.connections; i++)
        if (p->busy[i] < p->busy[best])
            best = i;
    if (p->conns[best] && p->busy[best] == 0 && now - p->last_used_ms[best] > IDLE_REOPEN_MS) {
        evhttp_connection_free(p->conns[best]);
        p->conns[best] = NULL;
    }
    if (!p->conns[best]) {
        struct evhttp_connection *c =
            evhttp_connection_base_new(pc->base, pc->dns, p->host, p->port);
        if (!c)
            return -1;
        struct timeval tv = {(time_t)(pc->cfg.request_timeout_ms / 1000),
                             (suseconds_t)(pc->cfg.request_timeout_ms % 1000) * 1000};
        evhttp_connection_set_timeout_tv(c, &tv);
        evhttp_connection_set_retries(c, 0);
        evhttp_connection_set_max_body_size(c, MAX_ANSWER);
        p->conns[best] = c;
    }
    p->last_used_ms[best] = now;
    return best;
}

/* ---- requests ---- */

static void
arm(struct pending *pd, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(&pd->timer, &tv);
    pd->timer_armed = true;
}

/* Frees pd once its callback ran and evhttp let go of the request. */
static void
pending_release(struct pending *pd)
{
    if (!pd->done || pd->req)
        return;
    event_del(&pd->timer);
    struct peer_client *pc = pd->pc;
    if (pd->prev)
        pd->prev->next = pd->next;
    else
        pc->pending = pd->next;
    if (pd->next)
        pd->next->prev = pd->prev;
    free(pd);
}

/* Runs the callback once; the request no longer counts against the peer. */
static void
deliver_raw(struct pending *pd, enum peer_error e, int status, json_t *body, const uint8_t *raw,
            size_t raw_len)
{
    if (pd->done)
        return;
    pd->done = true;
    event_del(&pd->timer);
    pd->timer_armed = false;
    if (pd->conn >= 0) {
        pd->peer->busy[pd->conn]--;
        pd->peer->in_flight--;
    }
    if (e == PEER_UNREACHABLE && pd->conn >= 0) /* a real attempt, not a fail-fast */
        pd->peer->down_until_ms = clock_monotonic_ms() + pd->pc->cfg.down_ms;
    else if (e == PEER_OK)
        pd->peer->down_until_ms = 0;
    pd->pc->outcomes[e]++;
    struct peer_result r = {
        .error = e, .status = status, .body = body, .raw = raw, .raw_len = raw_len};
    pd->cb(&r, pd->arg);
}

static void
deliver(struct pending *pd, enum peer_error e, int status, json_t *body)
{
    deliver_raw(pd, e, status, body, NULL, 0);
}

/* Gives up on a request evhttp still holds. */
static void
fail_now(struct pending *pd, enum peer_error e)
{
    struct evhttp_request *req = pd->req;
    pd->req = NULL;
    if (req)
        evhttp_cancel_request(req); /* frees req; our on_done is not called */
    deliver(pd, e, 0, NULL);
    pending_release(pd);
}

static bool
connected(const struct pending *pd)
{
    struct evhttp_connection *c = pd->peer->conns[pd->conn];
    struct bufferevent *bev = c ? evhttp_connection_get_bufferevent(c) : NULL;
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    return fd >= 0 && getpeername(fd, (struct sockaddr *)&ss, &len) == 0;
}

static void
on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct pending *pd = arg;
    struct peer_client *pc = pd->pc;
    pd->timer_armed = false;
    if (pd->early != PEER_OK) {
        deliver(pd, pd->early, 0, NULL);
        pending_release(pd);
    } else if (!pd->connect_checked) {
        pd->connect_checked = true;
        if (connected(pd))
            arm(pd, pc->cfg.request_timeout_ms - pc->cfg.connect_timeout_ms);
        else
            fail_now(pd, PEER_UNREACHABLE);
    } else {
        fail_now(pd, PEER_TIMEOUT);
    }
}

static void
on_error(enum evhttp_request_error error, void *arg)
{
    struct pending *pd = arg;
    pd->have_error = true;
    pd->error = error;
}

/* The answer's bytes (contiguous), and *json parsed from them if they are
 * JSON. */
static const uint8_t *
answer_body(struct evhttp_request *req, size_t *len, json_t **json)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    *len = in ? evbuffer_get_length(in) : 0;
    *json = NULL;
    if (!*len)
        return NULL;
    const uint8_t *data = evbuffer_pullup(in, -1);
    if (data && (data[0] == '{' || data[0] == '['))
        *json = json_loadb((const char *)data, *len, 0, NULL);
    return data;
}

/* evhttp is done with the request (it frees it after we return). */
static void
on_done(struct evhttp_request *req, void *arg)
{
    struct pending *pd = arg;
    pd->req = NULL;
    int code = req ? evhttp_request_get_response_code(req) : 0;
    if (code > 0) {
        json_t *body;
        size_t len;
        const uint8_t *raw = answer_body(req, &len, &body);
        deliver_raw(pd, PEER_OK, code, body, raw, raw ? len : 0);
        json_decref(body);
    } else if (!pd->have_error) {
        deliver(pd, PEER_UNREACHABLE, 0, NULL); /* connect failed: no error code is given */
    } else {
        deliver(pd, pd->error == EVREQ_HTTP_TIMEOUT ? PEER_TIMEOUT : PEER_BROKEN, 0, NULL);
    }
    pending_release(pd);
}

static bool
method_type(const char *method, enum evhttp_cmd_type *type)
{
    static const struct {
        const char *name;
        enum evhttp_cmd_type type;
    } methods[] = {{"GET", EVHTTP_REQ_GET},
                   {"POST", EVHTTP_REQ_POST},
                   {"PUT", EVHTTP_REQ_PUT},
                   {"DELETE", EVHTTP_REQ_DELETE}};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (strcmp(methods[i].name, method) == 0) {
            *type = methods[i].type;
            return true;
        }
    }
    return false;
}

/* Headers, signature and body of one request. */
/* A request body and its type. */
struct body {
    const void *data; /* NULL: no body */
    size_t len;
    const char *type;
};

/* The signature headers' values for one request. */
struct signature {
    char nonce[17], ts[24], sig[HMAC_HEX_LEN + 1];
};

static enum rmq_status
sign(const struct peer_client *pc, const char *method, const char *path, const void *body,
     size_t body_len, struct signature *out)
{
    uint8_t random[8];
    if (RAND_bytes(random, sizeof(random)) != 1)
        return RMQ_NOMEM;
    for (size_t i = 0; i < sizeof(random); i++)
        snprintf(out->nonce + 2 * i, 3, "%02x", random[i]);
    struct hmac_message msg = {
        .method = method,
        .path = path,
        .timestamp_ms = clock_wall_ms(),
        .nonce = out->nonce,
        .node = pc->node_id,
        .body = body,
        .body_len = body ? body_len : 0,
    };
    if (hmac_sign(pc->secret, strlen(pc->secret), &msg, out->sig) != RMQ_OK)
        return RMQ_INVALID;
    snprintf(out->ts, sizeof(out->ts), "%llu", (unsigned long long)msg.timestamp_ms);
    return RMQ_OK;
}

enum rmq_status
peer_client_sign_headers(const struct peer_client *pc, const char *method, const char *path,
                         char *out, size_t cap)
{
    struct signature sg;
    enum rmq_status st = sign(pc, method, path, NULL, 0, &sg);
    if (st != RMQ_OK)
        return st;
    int n = snprintf(out, cap, "%s: %s\r\n%s: %s\r\n%s: %s\r\n%s: %s\r\n", HMAC_HEADER_NODE,
                     pc->node_id, HMAC_HEADER_TIMESTAMP, sg.ts, HMAC_HEADER_NONCE, sg.nonce,
                     HMAC_HEADER_SIGNATURE, sg.sig);
    return n < 0 || (size_t)n >= cap ? RMQ_LIMIT : RMQ_OK;
}

enum rmq_status
peer_client_split_address(const char *address, char *host, size_t hostlen, uint16_t *port)
{
    return split_host_port(address, host, hostlen, port);
}

static enum rmq_status
prepare(struct peer_client *pc, struct evhttp_request *req, const char *address, const char *method,
        const char *path, const struct body *body)
{
    struct signature sg;
    enum rmq_status st = sign(pc, method, path, body->data, body->len, &sg);
    if (st != RMQ_OK)
        return st;
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    if (evhttp_add_header(h, "Host", address) ||
        evhttp_add_header(h, "Accept", "application/json") ||
        evhttp_add_header(h, HMAC_HEADER_NODE, pc->node_id) ||
        evhttp_add_header(h, HMAC_HEADER_TIMESTAMP, sg.ts) ||
        evhttp_add_header(h, HMAC_HEADER_NONCE, sg.nonce) ||
        evhttp_add_header(h, HMAC_HEADER_SIGNATURE, sg.sig))
        return RMQ_NOMEM;
    if (body->data && (evhttp_add_header(h, "Content-Type", body->type) ||
                       evbuffer_add(evhttp_request_get_output_buffer(req), body->data,
                                    body->len)))
        return RMQ_NOMEM;
    return RMQ_OK;
}

/* Requests go out whole at once (headers and body are separate writes):
 * without TCP_NODELAY, Nagle's algorithm and the peer's delayed ACK cost
 * 40 ms per request. evhttp opens the socket in make_request. */
static void
no_delay(struct evhttp_connection *conn)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(conn);
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Hands the request to evhttp on one of the peer's connections. */
static enum rmq_status
send_request(struct pending *pd, const char *method, enum evhttp_cmd_type type, const char *path,
             const struct body *body)
{
    struct peer_client *pc = pd->pc;
    struct peer *p = pd->peer;
    int i = peer_pick(p, clock_monotonic_ms());
    if (i < 0)
        return RMQ_NOMEM;
    struct evhttp_request *req = evhttp_request_new(on_done, pd);
    if (!req)
        return RMQ_NOMEM;
    evhttp_request_set_error_cb(req, on_error);
    enum rmq_status st = prepare(pc, req, p->address, method, path, body);
    if (st != RMQ_OK) {
        evhttp_request_free(req);
        return st;
    }
    if (evhttp_make_request(p->conns[i], req, type, path) != 0)
        return RMQ_IO; /* evhttp freed req */
    no_delay(p->conns[i]);
    pd->req = req;
    pd->conn = i;
    p->busy[i]++;
    p->in_flight++;
    arm(pd, pc->cfg.connect_timeout_ms);
    return RMQ_OK;
}

static struct pending *
pending_new(struct peer_client *pc, struct peer *p, peer_client_cb cb, void *arg)
{
    struct pending *pd = calloc(1, sizeof(*pd));
    if (!pd)
        return NULL;
    *pd = (struct pending){.pc = pc, .peer = p, .conn = -1, .cb = cb, .arg = arg};
    event_assign(&pd->timer, pc->base, -1, 0, on_timer, pd);
    pd->next = pc->pending;
    if (pc->pending)
        pc->pending->prev = pd;
    pc->pending = pd;
    return pd;
}

static enum rmq_status
request(struct peer_client *pc, const char *address, const char *method, const char *path,
        const struct body *body, peer_client_cb cb, void *arg)
{
    enum evhttp_cmd_type type;
    char host[256];
    uint16_t port;
    if (pc->freeing || !method_type(method, &type) || path[0] != '/' ||
        split_host_port(address, host, sizeof(host), &port) != RMQ_OK)
        return RMQ_INVALID;
    struct peer *p = peer_get(pc, address);
    struct pending *pd = p ? pending_new(pc, p, cb, arg) : NULL;
    if (!pd)
        return RMQ_NOMEM;
    if (clock_monotonic_ms() < p->down_until_ms)
        pd->early = PEER_UNREACHABLE;
    else if (p->in_flight >= pc->cfg.max_in_flight)
        pd->early = PEER_BUSY;
    else if (send_request(pd, method, type, path, body) != RMQ_OK)
        pd->early = PEER_BROKEN;
    if (pd->early != PEER_OK)
        arm(pd, 0); /* the callback must not run inside this call */
    return RMQ_OK;
}

enum rmq_status
peer_client_request(struct peer_client *pc, const char *address, const char *method,
                    const char *path, json_t *body, peer_client_cb cb, void *arg)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (body && !text)
        return RMQ_NOMEM;
    struct body b = {text, text ? strlen(text) : 0, "application/json"};
    enum rmq_status st = request(pc, address, method, path, &b, cb, arg);
    free(text);
    return st;
}

/* ---- lifetime ---- */

static uint64_t
or_default(uint64_t v, uint64_t def)
{
    return v ? v : def;
}

struct peer_client *
peer_client_new(struct event_base *base, const struct peer_client_config *cfg)
{
    struct peer_client *pc = calloc(1, sizeof(*pc));
    if (!pc)
        return NULL;
    pc->base = base;
    pc->cfg = *cfg;
    pc->cfg.connect_timeout_ms = or_default(cfg->connect_timeout_ms, 2000);
    pc->cfg.request_timeout_ms = or_default(cfg->request_timeout_ms, 5000);
    if (pc->cfg.request_timeout_ms < pc->cfg.connect_timeout_ms)
        pc->cfg.request_timeout_ms = pc->cfg.connect_timeout_ms;
    pc->cfg.down_ms = or_default(cfg->down_ms, 1000);
    pc->cfg.max_in_flight = (unsigned)or_default(cfg->max_in_flight, 64);
    pc->cfg.connections = (unsigned)or_default(cfg->connections, 4);
    if (pc->cfg.connections > MAX_CONNECTIONS)
        pc->cfg.connections = MAX_CONNECTIONS;
    pc->node_id = strdup(cfg->node_id ? cfg->node_id : "");
    pc->secret = strdup(cfg->secret ? cfg->secret : "");
    pc->peers = hashmap_new(peer_free);
    if (!pc->node_id || !pc->secret || !pc->peers || !pc->secret[0]) {
        log_error("peer client: %s",
                  pc->secret && !pc->secret[0] ? "no cluster secret" : "out of memory");
        goto fail;
    }
    pc->dns =
        evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!pc->dns)
        log_warn("peer client: no DNS resolver (%s); peer names resolve blocking",
                 "cannot read resolv.conf");
    pc->cfg.node_id = pc->node_id;
    pc->cfg.secret = pc->secret;
    return pc;
fail:
    peer_client_free(pc);
    return NULL;
}

void
peer_client_free(struct peer_client *pc)
{
    if (!pc)
        return;
    pc->freeing = true;
    /* Newest first, so on each connection the queued requests go before the
     * running one (cancelling that one would reconnect for the next). */
    struct pending *pd = pc->pending;
    while (pd) {
        struct pending *next = pd->next;
        fail_now(pd, PEER_CANCELLED);
        pd = next;
    }
    hashmap_free(pc->peers);
    if (pc->dns)
        evdns_base_free(pc->dns, 0);
    if (pc->secret)
        memset(pc->secret, 0, strlen(pc->secret));
    free(pc->secret);
    free(pc->node_id);
    free(pc);
}

/* ---- closing a connection on another node ---- */

struct close_call {
    char node[64];
    uint64_t channel;
    void (*done)(void *arg, bool unreached);
    void *arg;
};

static void
close_done(const struct peer_result *res, void *arg)
{
    struct close_call *cc = arg;
    if (res->error != PEER_OK)
        log_warn("peer: closing connection %" PRIu64 " on node %s failed: %s", cc->channel,
                 cc->node, peer_error_name(res->error));
    if (cc->done)
        cc->done(cc->arg, res->error != PEER_OK && res->error != PEER_CANCELLED);
    else if (res->status != 200 && res->status != 404)
        log_warn("peer: closing connection %" PRIu64 " on node %s: HTTP %d", cc->channel, cc->node,
                 res->status);
    free(cc);
}

void
peer_client_write_metrics(FILE *out, void *arg)
{
    const struct peer_client *pc = arg;
    metrics_family(out, "relaymq_forwarded_requests_total", "counter",
                   "node-to-node requests this node made, by outcome");
    for (int e = PEER_OK; e <= PEER_CANCELLED; e++)
        fprintf(out, "relaymq_forwarded_requests_total{outcome=\"%s\"} %llu\n",
                peer_error_name((enum peer_error)e), (unsigned long long)pc->outcomes[e]);
}

void
peer_client_close_remote(void *ctx, const char *node, const char *addr, uint64_t epoch,
                         uint64_t channel, const char *reason, void (*done)(void *arg, bool unreached),
                         void *arg)
{
    struct peer_client *pc = ctx;
    char path[96];
    snprintf(path, sizeof(path), "/internal/v1/channels/%" PRIu64 "/close", channel);
    json_t *body = json_pack("{s:s,s:I}", "reason", reason, "epoch", (json_int_t)epoch);
    struct close_call *cc = calloc(1, sizeof(*cc));
    if (cc) {
        snprintf(cc->node, sizeof(cc->node), "%s", node ? node : "?");
        cc->channel = channel;
        cc->done = done;
        cc->arg = arg;
    }
    if (!body || !cc || !addr || !*addr ||
        peer_client_request(pc, addr, "POST", path, body, close_done, cc) != RMQ_OK) {
        log_warn("peer: cannot ask node %s (%s) to close connection %" PRIu64, node ? node : "?",
                 addr ? addr : "no address", channel);
        free(cc);
        if (done)
            done(arg, true);
    }
    json_decref(body);
}
