/* The admin REST API; see admin_api.h and docs/api.md.
 *
 * Threads. The key gate and the handlers run on the server's MHD thread:
 * they check the key, parse the query or body, and post a job to the broker
 * loop. Jobs, the directory and the peer client run on the loop thread and
 * answer from there. The key digests and configuration are immutable after
 * admin_api_new, so the MHD thread reads them without a lock.
 *
 * Ownership. The API owns its server, the key digests and a copy of the
 * node id and advertised address; it borrows the broker, the directory and
 * the peer client. A job owns its parsed request data, and is freed by the
 * reply that ends it. A job handed to the directory or the peer client (as
 * their callback argument) must not be touched after the call that hands it
 * over: the answer may already have freed it.
 *
 * Without a directory the API answers from this node alone through the
 * local directory below (ctx = the API). */
#include "http/admin_api.h"
#include "http/command_api.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "broker/broker_api.h"
#include "common/log.h"
#include "http/http_body.h"
#include "http/http_server.h"
#include "http/internal_api.h"
#include "http/peer_client.h"

#define KEY_DIGEST 32
#define MAX_SOURCES 16
#define LIST_DEFAULT 100
#define LIST_MAX 1000
#define PROMETHEUS_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct admin_api {
    struct http_server *http;
    struct broker *broker;
    char *node_id;
    char *advertise;
    uint8_t (*keys)[KEY_DIGEST];
    size_t key_count;
    struct admin_directory local; /* used when the config gives none */
    const struct admin_directory *dir;
    struct peer_client *peers;
    struct internal_api *internal;
    struct command_api *commands;
    struct metrics_source sources[MAX_SOURCES];
    size_t source_count;
};

struct admin_job {
    struct http_job base;
    struct admin_api *api;
    char *client_id;
    char *node; /* list filter, or the owner node of a remote client */
    char *cursor;
    size_t limit;
    struct http_message msg;
};

/* ---- API keys ---- */

static bool
digest(const char *key, size_t len, uint8_t out[KEY_DIGEST])
{
    unsigned int n = 0;
    return EVP_Digest(key, len, out, &n, EVP_sha256(), NULL) && n == KEY_DIGEST;
}

static enum rmq_status
add_key(struct admin_api *api, const char *key, size_t len)
{
    if (len == 0)
        return RMQ_OK;
    uint8_t(*keys)[KEY_DIGEST] = realloc(api->keys, (api->key_count + 1) * sizeof(*keys));
    if (!keys)
        return RMQ_NOMEM;
    api->keys = keys;
    if (!digest(key, len, api->keys[api->key_count]))
        return RMQ_NOMEM;
    api->key_count++;
    return RMQ_OK;
}

/* One key per line; blank lines and lines starting with '#' are skipped,
 * surrounding white space is not part of a key. */
static enum rmq_status
load_key_file(struct admin_api *api, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        log_error("admin API: cannot read api-key-file %s: %s", path, strerror(errno));
        return RMQ_IO;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    enum rmq_status st = RMQ_OK;
    while (st == RMQ_OK && (n = getline(&line, &cap, f)) >= 0) {
        char *s = line, *e = line + n;
        while (s < e && isspace((unsigned char)*s))
            s++;
        while (e > s && isspace((unsigned char)e[-1]))
            e--;
        if (s < e && *s != '#')
            st = add_key(api, s, (size_t)(e - s));
    }
    OPENSSL_cleanse(line, cap);
    free(line);
    fclose(f);
    return st;
}

bool
admin_api_key_valid(const struct admin_api *api, const char *key)
{
    uint8_t d[KEY_DIGEST];
    if (!key || !digest(key, strlen(key), d))
        return false;
    int match = 0;
    for (size_t i = 0; i < api->key_count; i++) /* no early exit: same time for every key */
        match |= CRYPTO_memcmp(d, api->keys[i], KEY_DIGEST) == 0;
    return match != 0;
}

/* The token of "Bearer <token>" (scheme case-insensitive), or NULL. */
static const char *
bearer_token(const char *auth)
{
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return NULL;
    auth += 7;
    while (*auth == ' ')
        auth++;
    return *auth ? auth : NULL;
}

static bool
check_key(struct http_request *req, void *ctx)
{
    struct admin_api *api = ctx;
    if (http_request_route(req)->flags & HTTP_ROUTE_PUBLIC)
        return true;
    const char *token = bearer_token(http_request_header(req, "Authorization"));
    if (token && admin_api_key_valid(api, token))
        return true;
    http_reply_header(req, "WWW-Authenticate", "Bearer realm=\"relaymq\"");
    if (api->key_count == 0)
        http_reply_error(req, 401, "unauthorized",
                         "no API key is configured on this node (--api-key, --api-key-file)");
    else if (!token)
        http_reply_error(req, 401, "unauthorized", "missing header Authorization: Bearer <key>");
    else
        http_reply_error(req, 401, "unauthorized", "invalid API key");
    return false;
}

/* ---- jobs ---- */

static void
job_destroy(struct http_job *base)
{
    struct admin_job *job = (struct admin_job *)base;
    free(job->client_id);
    free(job->node);
    free(job->cursor);
    http_message_clear(&job->msg);
    free(job);
}

/* A job for req, or NULL after answering 500. */
static struct admin_job *
job_new(struct admin_api *api, struct http_request *req)
{
    struct admin_job *job = calloc(1, sizeof(*job));
    if (!job) {
        http_reply_error(req, 500, "internal", "out of memory");
        return NULL;
    }
    job->api = api;
    return job;
}

static void
post(struct admin_job *job, struct http_request *req, http_job_fn run)
{
    http_job_post(broker_inbox(job->api->broker), req, &job->base, run, job_destroy);
}

/* Answers a directory failure; true if st was one. */
static bool
directory_failed(struct http_job *job, enum rmq_status st, const char *client_id)
{
    if (st == RMQ_OK)
        return false;
    if (st == RMQ_NOT_FOUND)
        http_job_reply_error(job, 404, "client_not_found", "unknown client %s",
                             client_id ? client_id : "");
    else if (st == RMQ_INVALID)
        http_job_reply_error(job, 400, "bad_parameter", "invalid cursor or node");
    else if (st == RMQ_NOMEM)
        http_job_reply_error(job, 500, "internal", "out of memory");
    else
        http_job_reply_error(job, 503, "redis_unavailable",
                             "the cluster registry cannot be reached; retry later");
    return true;
}

static bool
is_local(const struct admin_api *api, const struct admin_location *loc)
{
    return loc->local || !loc->node_id || strcmp(loc->node_id, api->node_id) == 0;
}

/* ---- the local directory: this node alone (loop thread) ---- */

/* Cursors are the last client id of a page in URL-safe base64, so they
 * survive a query string untouched. */
static char *
cursor_encode(const char *id)
{
    char *c = http_base64_encode(id, strlen(id));
    if (!c)
        return NULL;
    char *eq = strchr(c, '=');
    if (eq)
        *eq = '\0';
    for (char *p = c; *p; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    return c;
}

static char *
cursor_decode(const char *cursor)
{
    char *std = strdup(cursor), *id = NULL;
    uint8_t *raw = NULL;
    size_t len = 0;
    if (!std)
        return NULL;
    for (char *p = std; *p; p++) {
        if (*p == '-')
            *p = '+';
        else if (*p == '_')
            *p = '/';
        else if (*p == '+' || *p == '/')
            *p = '!'; /* not in the URL-safe alphabet: refused below */
    }
    if (http_base64_decode(std, strlen(std), &raw, &len) == RMQ_OK && !memchr(raw, '\0', len))
        id = strndup((const char *)raw, len);
    free(raw);
    free(std);
    return id;
}

static bool
local_ready(void *ctx, const char **why)
{
    return true;
}

static void
local_locate(void *ctx, const char *client_id, admin_locate_cb cb, void *arg)
{
    struct admin_api *api = ctx;
    struct admin_location loc = {.node_id = api->node_id, .local = true};
    if (broker_api_has_client(api->broker, client_id))
        cb(RMQ_OK, &loc, arg);
    else
        cb(RMQ_NOT_FOUND, NULL, arg);
}

static void
local_list_clients(void *ctx, const char *node, const char *cursor, size_t limit, admin_json_cb cb,
                   void *arg)
{
    struct admin_api *api = ctx;
    char *after = NULL;
    json_t *page = NULL;
    bool more = false;
    if (cursor && !(after = cursor_decode(cursor))) {
        cb(RMQ_INVALID, NULL, arg);
        return;
    }
    if (node && strcmp(node, api->node_id) != 0)
        page = json_array(); /* another node: nothing here */
    else if (broker_api_list_clients(api->broker, after, limit, &page, &more) != RMQ_OK)
        page = NULL;
    free(after);
    json_t *next = json_null();
    if (page && more) {
        const char *last = json_string_value(
            json_object_get(json_array_get(page, json_array_size(page) - 1), "client_id"));
        char *c = last ? cursor_encode(last) : NULL;
        next = c ? json_string(c) : NULL;
        free(c);
    }
    json_t *doc = page && next ? json_pack("{s:o,s:o}", "clients", page, "next", next) : NULL;
    if (!doc) {
        json_decref(page);
        json_decref(next);
    }
    cb(doc ? RMQ_OK : RMQ_NOMEM, doc, arg);
}

static void
local_list_nodes(void *ctx, admin_json_cb cb, void *arg)
{
    struct admin_api *api = ctx;
    struct broker_gauges g;
    broker_api_gauges(api->broker, &g);
    json_t *node =
        json_pack("{s:s,s:o,s:b,s:b,s:I,s:I,s:s}", "node_id", api->node_id, "address",
                  api->advertise ? json_string(api->advertise) : json_null(), "alive", 1, "local",
                  1, "uptime_seconds", (json_int_t)g.uptime_seconds, "connections",
                  (json_int_t)g.connected_clients, "version", RELAYMQ_VERSION);
    json_t *nodes = node ? json_pack("[o]", node) : NULL;
    cb(nodes ? RMQ_OK : RMQ_NOMEM, nodes, arg);
}

/* ---- jobs on the loop: health, nodes, clients ---- */

static void
run_ready(struct http_job *base)
{
    struct admin_api *api = ((struct admin_job *)base)->api;
    const char *why = "not ready";
    if (!broker_api_listening(api->broker))
        http_job_reply_error(base, 503, "not_ready", "the MQTT listeners are not open");
    else if (api->dir->ready && !api->dir->ready(api->dir->ctx, &why))
        http_job_reply_error(base, 503, "not_ready", "%s", why);
    else
        http_job_reply_json(base, 200,
                            json_pack("{s:s,s:s}", "status", "ready", "node", api->node_id));
}

static void
nodes_done(enum rmq_status st, json_t *nodes, void *arg)
{
    struct http_job *base = arg;
    if (directory_failed(base, st, NULL))
        return;
    http_job_reply_json(base, 200, json_pack("{s:o}", "nodes", nodes));
}

static void
run_nodes(struct http_job *base)
{
    struct admin_api *api = ((struct admin_job *)base)->api;
    api->dir->list_nodes(api->dir->ctx, nodes_done, base);
}

static void
list_done(enum rmq_status st, json_t *page, void *arg)
{
    struct http_job *base = arg;
    if (directory_failed(base, st, NULL))
        return;
    http_job_reply_json(base, 200, page);
}

static void
run_list(struct http_job *base)
{
    struct admin_job *job = (struct admin_job *)base;
    const struct admin_directory *dir = job->api->dir;
    dir->list_clients(dir->ctx, job->node, job->cursor, job->limit, list_done, base);
}

/* ---- jobs on the loop: one client, here or on its node ---- */

/* Sends a signed call to the node holding the client; cb answers the job. */
static void
remote_call(struct admin_job *job, const struct admin_location *loc, const char *method,
            const char *path, json_t *body, peer_client_cb cb)
{
    struct admin_api *api = job->api;
    job->node = strdup(loc->node_id);
    if (!job->node || !api->peers || !loc->address) {
        http_job_reply_error(&job->base, 503, "node_unavailable",
                             "client %s is on node %s, which this node cannot call", job->client_id,
                             loc->node_id);
        return;
    }
    if (peer_client_request(api->peers, loc->address, method, path, body, cb, job) != RMQ_OK)
        http_job_reply_error(&job->base, 503, "node_unavailable", "cannot call node %s",
                             loc->node_id);
}

/* Answers a failed peer call; true if it failed. */
static bool
remote_failed(struct admin_job *job, const struct peer_result *res)
{
    if (res->error != PEER_OK) {
        http_job_reply_error(&job->base, 503, "node_unavailable", "node %s: %s", job->node,
                             peer_error_name(res->error));
    } else if (res->status == 404) {
        http_job_reply_error(&job->base, 404, "client_not_found",
                             "client %s is no longer connected", job->client_id);
    } else if (res->status != 200 || !json_is_object(res->body)) {
        http_job_reply_error(&job->base, 503, "node_unavailable", "node %s answered %d", job->node,
                             res->status);
    } else {
        return false;
    }
    return true;
}

static void
get_remote_done(const struct peer_result *res, void *arg)
{
    struct admin_job *job = arg;
    if (!remote_failed(job, res))
        http_job_reply_json(&job->base, 200, json_incref(res->body));
}

static void
get_located(enum rmq_status st, const struct admin_location *loc, void *arg)
{
    struct admin_job *job = arg;
    if (directory_failed(&job->base, st, job->client_id))
        return;
    if (!is_local(job->api, loc)) {
        char *id = peer_client_escape(job->client_id), path[1024];
        snprintf(path, sizeof(path), "/internal/v1/clients/%s", id ? id : "");
        free(id);
        remote_call(job, loc, "GET", path, NULL, get_remote_done);
        return;
    }
    json_t *doc = broker_api_client_json(job->api->broker, job->client_id);
    if (doc)
        http_job_reply_json(&job->base, 200, doc);
    else
        http_job_reply_error(&job->base, 404, "client_not_found", "unknown client %s",
                             job->client_id);
}

static void
run_get(struct http_job *base)
{
    struct admin_job *job = (struct admin_job *)base;
    job->api->dir->locate(job->api->dir->ctx, job->client_id, get_located, job);
}

static json_t *
kicked_json(const char *client_id, const char *node)
{
    return json_pack("{s:s,s:s,s:b}", "client_id", client_id, "node", node, "kicked", 1);
}

static void
kick_remote_done(const struct peer_result *res, void *arg)
{
    struct admin_job *job = arg;
    if (!remote_failed(job, res))
        http_job_reply_json(&job->base, 200, kicked_json(job->client_id, job->node));
}

static void
kick_located(enum rmq_status st, const struct admin_location *loc, void *arg)
{
    struct admin_job *job = arg;
    struct admin_api *api = job->api;
    if (directory_failed(&job->base, st, job->client_id))
        return;
    if (!is_local(api, loc)) {
        char path[128];
        snprintf(path, sizeof(path), "/internal/v1/channels/%" PRIu64 "/close", loc->channel);
        json_t *body = json_pack("{s:s}", "reason", "kicked");
        remote_call(job, loc, "POST", path, body, kick_remote_done);
        json_decref(body);
        return;
    }
    if (broker_api_kick_client(api->broker, job->client_id, NULL) != RMQ_OK) {
        http_job_reply_error(&job->base, 404, "client_not_found", "client %s is not connected",
                             job->client_id);
        return;
    }
    log_info("admin API: client %s kicked", job->client_id);
    http_job_reply_json(&job->base, 200, kicked_json(job->client_id, api->node_id));
}

static void
run_kick(struct http_job *base)
{
    struct admin_job *job = (struct admin_job *)base;
    job->api->dir->locate(job->api->dir->ctx, job->client_id, kick_located, job);
}

/* ---- jobs on the loop: publish, metrics ---- */

static void
run_publish(struct http_job *base)
{
    struct admin_job *job = (struct admin_job *)base;
    const struct http_message *m = &job->msg;
    if (broker_api_publish(job->api->broker, m->topic, m->topic_len, m->payload, m->payload_len,
                           m->qos, m->retain) != RMQ_OK) {
        http_job_reply_error(base, 400, "invalid_topic", "the message was refused");
        return;
    }
    /* In a cluster the broker's forwarder carries it to the other nodes. */
    http_job_reply_json(base, 202,
                        json_pack("{s:s,s:i,s:b,s:I}", "topic", m->topic, "qos", (int)m->qos,
                                  "retain", (int)m->retain, "payload_bytes",
                                  (json_int_t)m->payload_len));
}

static void
run_metrics(struct http_job *base)
{
    struct admin_api *api = ((struct admin_job *)base)->api;
    struct broker_metrics counters;
    struct broker_gauges gauges;
    size_t len = 0;
    broker_metrics_get(api->broker, &counters);
    broker_api_gauges(api->broker, &gauges);
    char *text = metrics_render(&counters, &gauges, api->sources, api->source_count, &len);
    if (!text) {
        http_job_reply_error(base, 500, "internal", "out of memory");
        return;
    }
    http_job_reply_text(base, 200, PROMETHEUS_TYPE, text, len);
}

static void
write_http_counts(FILE *out, void *arg)
{
    struct admin_api *api = arg;
    metrics_family(out, "relaymq_http_requests_total", "counter",
                   "HTTP requests answered, by server, route and status code");
    http_server_write_metrics(api->http, out);
    if (api->internal)
        http_server_write_metrics(internal_api_http(api->internal), out);
}

/* ---- handlers (HTTP thread) ---- */

static void
handle_healthz(struct http_request *req, void *ctx)
{
    struct admin_api *api = ctx;
    http_reply_json(req, 200, json_pack("{s:s,s:s}", "status", "ok", "node", api->node_id));
}

static void
post_simple(struct http_request *req, void *ctx, http_job_fn run)
{
    struct admin_job *job = job_new(ctx, req);
    if (job)
        post(job, req, run);
}

static void
handle_readyz(struct http_request *req, void *ctx)
{
    post_simple(req, ctx, run_ready);
}

static void
handle_metrics(struct http_request *req, void *ctx)
{
    post_simple(req, ctx, run_metrics);
}

static void
handle_nodes(struct http_request *req, void *ctx)
{
    post_simple(req, ctx, run_nodes);
}

static bool
parse_limit(struct http_request *req, size_t *out)
{
    const char *text = http_request_query(req, "limit");
    char *end;
    if (!text) {
        *out = LIST_DEFAULT;
        return true;
    }
    unsigned long v = isdigit((unsigned char)text[0]) ? strtoul(text, &end, 10) : 0;
    if (v < 1 || v > LIST_MAX || *end) {
        http_reply_error(req, 400, "bad_parameter", "limit must be a number from 1 to %d",
                         LIST_MAX);
        return false;
    }
    *out = v;
    return true;
}

/* A copy of a non-empty query argument, NULL if absent; false when out of memory. */
static bool
copy_query(struct http_request *req, const char *name, char **out)
{
    const char *v = http_request_query(req, name);
    *out = v && *v ? strdup(v) : NULL;
    return !(v && *v) || *out;
}

static void
handle_clients(struct http_request *req, void *ctx)
{
    size_t limit;
    if (!parse_limit(req, &limit))
        return;
    struct admin_job *job = job_new(ctx, req);
    if (!job)
        return;
    job->limit = limit;
    if (!copy_query(req, "node", &job->node) || !copy_query(req, "cursor", &job->cursor)) {
        job_destroy(&job->base);
        http_reply_error(req, 500, "internal", "out of memory");
        return;
    }
    post(job, req, run_list);
}

static void
post_for_client(struct http_request *req, void *ctx, http_job_fn run)
{
    struct admin_job *job = job_new(ctx, req);
    if (!job)
        return;
    job->client_id = strdup(http_request_param(req, "id"));
    if (!job->client_id) {
        job_destroy(&job->base);
        http_reply_error(req, 500, "internal", "out of memory");
        return;
    }
    post(job, req, run);
}

static void
handle_client_get(struct http_request *req, void *ctx)
{
    post_for_client(req, ctx, run_get);
}

static void
handle_client_kick(struct http_request *req, void *ctx)
{
    post_for_client(req, ctx, run_kick);
}

static void
handle_publish(struct http_request *req, void *ctx)
{
    json_t *doc = http_request_json_object(req);
    if (!doc)
        return;
    struct admin_job *job = job_new(ctx, req);
    bool ok = job && http_request_message(req, doc, false, &job->msg);
    json_decref(doc);
    if (!ok) {
        if (job)
            job_destroy(&job->base);
        return;
    }
    post(job, req, run_publish);
}

/* The command endpoints live in command_api.c; without the engine they
 * answer 503. */
static bool
commands_on(struct http_request *req, struct admin_api *api)
{
    if (api->commands)
        return true;
    http_reply_error(req, 503, "not_available", "device commands are not running on this node");
    return false;
}

static void
handle_command_post(struct http_request *req, void *ctx)
{
    if (commands_on(req, ctx))
        command_api_post(req, ((struct admin_api *)ctx)->commands);
}

static void
handle_command_get(struct http_request *req, void *ctx)
{
    if (commands_on(req, ctx))
        command_api_get(req, ((struct admin_api *)ctx)->commands);
}

static void
handle_command_list(struct http_request *req, void *ctx)
{
    if (commands_on(req, ctx))
        command_api_list(req, ((struct admin_api *)ctx)->commands);
}

static void
handle_command_cancel(struct http_request *req, void *ctx)
{
    if (commands_on(req, ctx))
        command_api_cancel(req, ((struct admin_api *)ctx)->commands);
}

static const struct http_route routes[] = {
    {"GET", "/healthz", handle_healthz, "healthz", HTTP_ROUTE_PUBLIC, NULL},
    {"GET", "/readyz", handle_readyz, "readyz", HTTP_ROUTE_PUBLIC, NULL},
    {"GET", "/metrics", handle_metrics, "metrics", 0, NULL},
    {"GET", "/api/v1/nodes", handle_nodes, "nodes", 0, NULL},
    {"GET", "/api/v1/clients", handle_clients, "clients_list", 0, NULL},
    {"GET", "/api/v1/clients/{id}", handle_client_get, "client_get", 0, NULL},
    {"DELETE", "/api/v1/clients/{id}", handle_client_kick, "client_kick", 0, NULL},
    {"POST", "/api/v1/publish", handle_publish, "publish", 0, NULL},
    {"POST", "/api/v1/devices/{device}/commands", handle_command_post, "commands_post", 0, NULL},
    {"GET", "/api/v1/devices/{device}/commands", handle_command_list, "commands_list", 0, NULL},
    {"GET", "/api/v1/commands/{id}", handle_command_get, "commands_get", 0, NULL},
    {"DELETE", "/api/v1/commands/{id}", handle_command_cancel, "commands_cancel", 0, NULL},
};

/* ---- lifetime ---- */

static enum rmq_status
load_keys(struct admin_api *api, const struct admin_api_config *cfg)
{
    for (size_t i = 0; i < cfg->api_key_count; i++)
        if (add_key(api, cfg->api_keys[i], strlen(cfg->api_keys[i])) != RMQ_OK)
            return RMQ_NOMEM;
    if (cfg->api_key_file && *cfg->api_key_file)
        return load_key_file(api, cfg->api_key_file);
    return RMQ_OK;
}

struct admin_api *
admin_api_new(const struct admin_api_config *cfg)
{
    struct admin_api *api = calloc(1, sizeof(*api));
    if (!api)
        return NULL;
    api->broker = cfg->broker;
    api->peers = cfg->peers;
    api->internal = cfg->internal;
    api->commands = cfg->commands;
    api->node_id = strdup(cfg->node_id);
    api->advertise = cfg->advertise && *cfg->advertise ? strdup(cfg->advertise) : NULL;
    api->local = (struct admin_directory){api, local_ready, local_locate, local_list_clients,
                                          local_list_nodes};
    api->dir = cfg->directory ? cfg->directory : &api->local;
    if (!api->node_id || load_keys(api, cfg) != RMQ_OK)
        goto fail;
    admin_api_add_metrics_source(api, write_http_counts, api);
    if (api->internal)
        admin_api_add_metrics_source(api, internal_api_write_metrics, api->internal);
    struct http_server_config hc = {
        .name = "admin",
        .address = cfg->address,
        .max_body = cfg->max_body,
        .timeout_ms = cfg->timeout_ms,
        .routes = routes,
        .route_count = sizeof(routes) / sizeof(routes[0]),
        .check_headers = check_key,
        .ctx = api,
    };
    api->http = http_server_new(&hc);
    if (!api->http)
        goto fail;
    if (api->key_count == 0)
        log_warn("admin API: no API key configured (--api-key, --api-key-file): every /api/ "
                 "and /metrics request will be refused");
    return api;
fail:
    admin_api_free(api);
    return NULL;
}

void
admin_api_set_cluster(struct admin_api *api, const struct admin_directory *dir,
                      struct peer_client *peers)
{
    api->dir = dir ? dir : &api->local;
    api->peers = peers;
}

enum rmq_status
admin_api_add_metrics_source(struct admin_api *api, metrics_source_fn fn, void *arg)
{
    if (api->source_count == MAX_SOURCES)
        return RMQ_LIMIT;
    api->sources[api->source_count++] = (struct metrics_source){fn, arg};
    return RMQ_OK;
}

void
admin_api_stop(struct admin_api *api)
{
    if (api)
        http_server_stop(api->http);
}

void
admin_api_free(struct admin_api *api)
{
    if (!api)
        return;
    http_server_free(api->http);
    if (api->keys)
        OPENSSL_cleanse(api->keys, api->key_count * sizeof(*api->keys));
    free(api->keys);
    free(api->node_id);
    free(api->advertise);
    free(api);
}

uint16_t
admin_api_port(const struct admin_api *api)
{
    return http_server_port(api->http);
}
