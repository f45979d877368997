/* The internal node API; see internal_api.h.
 *
 * Threads: the gates and handlers run on the server's MHD thread: they
 * verify the signature, parse and validate, then post a job to the broker
 * loop, which does the work through broker_api and answers. The verifier
 * and the failure counters are safe from any thread.
 *
 * Ownership: the API owns its server, its verifier and its route table (the
 * built-in routes followed by a copy of the caller's extra routes). A job
 * owns its parsed request data and is freed when it answers. */
#include "http/internal_api.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "broker/broker_api.h"
#include "common/clock.h"
#include "common/log.h"
#include "http/hmac.h"
#include "http/http_body.h"
#include "http/metrics.h"

#define REPLAY_CAPACITY 16384

struct internal_api {
    struct http_server *http;
    struct hmac_verifier *verifier;
    struct broker *broker;
    struct http_route *routes;
    size_t route_count;
    _Atomic uint64_t refused[HMAC_RESULT_COUNT];
};

struct internal_job {
    struct http_job base;
    struct internal_api *api;
    uint64_t channel;
    uint64_t epoch; /* close: the run the channel belongs to, 0 = any */
    enum close_reason reason;
    char *client_id;
    struct http_message msg;
};

/* ---- signature gates ---- */

static void
refuse(struct internal_api *api, struct http_request *req, enum hmac_result r)
{
    atomic_fetch_add_explicit(&api->refused[r], 1, memory_order_relaxed);
    const char *node = http_request_header(req, HMAC_HEADER_NODE);
    log_info("internal: %s %s from node %s refused: %s", http_request_method(req),
             http_request_path(req), node ? node : "(none)", hmac_result_name(r));
    if (r == HMAC_CACHE_FULL)
        http_reply_error(req, 503, "busy", "too many signed requests to remember; retry");
    else
        http_reply_error(req, 401, "unauthorized", "request signature refused: %s",
                         hmac_result_name(r));
}

/* Before the body: a request without the headers is refused unread. */
static bool
check_headers(struct http_request *req, void *ctx)
{
    if (http_request_header(req, HMAC_HEADER_NODE) &&
        http_request_header(req, HMAC_HEADER_TIMESTAMP) &&
        http_request_header(req, HMAC_HEADER_NONCE) &&
        http_request_header(req, HMAC_HEADER_SIGNATURE))
        return true;
    refuse(ctx, req, HMAC_MISSING);
    return false;
}

static bool
check_signature(struct http_request *req, void *ctx)
{
    struct internal_api *api = ctx;
    size_t len;
    const char *body = http_request_body(req, &len);
    struct hmac_message msg = {
        .method = http_request_method(req),
        .path = http_request_path(req),
        .nonce = http_request_header(req, HMAC_HEADER_NONCE),
        .node = http_request_header(req, HMAC_HEADER_NODE),
        .body = body,
        .body_len = len,
    };
    enum hmac_result r =
        hmac_verify(api->verifier, &msg, http_request_header(req, HMAC_HEADER_TIMESTAMP),
                    http_request_header(req, HMAC_HEADER_SIGNATURE), clock_wall_ms());
    if (r == HMAC_OK)
        return true;
    refuse(api, req, r);
    return false;
}

/* ---- jobs (loop thread) ---- */

static void
job_destroy(struct http_job *base)
{
    struct internal_job *job = (struct internal_job *)base;
    free(job->client_id);
    http_message_clear(&job->msg);
    free(job);
}

static struct internal_job *
job_new(struct internal_api *api)
{
    struct internal_job *job = calloc(1, sizeof(*job));
    if (job)
        job->api = api;
    return job;
}

static void
post(struct internal_job *job, struct http_request *req, http_job_fn run)
{
    http_job_post(broker_inbox(job->api->broker), req, &job->base, run, job_destroy);
}

static void
run_close(struct http_job *base)
{
    struct internal_job *job = (struct internal_job *)base;
    uint64_t channel = job->channel;
    /* A channel number of another run of this node names someone else. */
    bool stale = job->epoch && job->epoch != broker_epoch(job->api->broker);
    if (stale || !broker_close_channel(job->api->broker, channel, job->reason)) {
        http_job_reply_error(base, 404, "channel_not_found", "no connection %" PRIu64, channel);
        return;
    }
    http_job_reply_json(base, 200,
                        json_pack("{s:b,s:I,s:s}", "closed", 1, "channel", (json_int_t)channel,
                                  "reason", close_reason_name(job->reason)));
}

static void
run_deliver(struct http_job *base)
{
    struct internal_job *job = (struct internal_job *)base;
    const struct http_message *m = &job->msg;
    enum rmq_status st = broker_api_deliver(job->api->broker, job->channel, m->topic, m->topic_len,
                                            m->payload, m->payload_len, m->qos, m->retain, 0);
    if (st == RMQ_NOT_FOUND) {
        http_job_reply_error(base, 404, "channel_not_found", "no connected client on %" PRIu64,
                             job->channel);
        return;
    }
    if (st != RMQ_OK) {
        http_job_reply_error(base, 400, "invalid_topic", "the message was refused");
        return;
    }
    http_job_reply_json(
        base, 200, json_pack("{s:b,s:I}", "delivered", 1, "channel", (json_int_t)job->channel));
}

/* A publish another node's admin API accepted: delivered to this node's
 * subscribers only (the sender reaches every node itself). Until routes are
 * replicated between nodes this is how an API publish crosses the cluster. */
static void
run_publish(struct http_job *base)
{
    const struct http_message *m = &((struct internal_job *)base)->msg;
    struct broker *b = ((struct internal_job *)base)->api->broker;
    if (broker_api_publish(b, m->topic, m->topic_len, m->payload, m->payload_len, m->qos,
                           m->retain) != RMQ_OK) {
        http_job_reply_error(base, 400, "invalid_topic", "the message was refused");
        return;
    }
    http_job_reply_json(base, 200, json_pack("{s:b}", "published", 1));
}

static void
handle_publish(struct http_request *req, void *ctx)
{
    json_t *doc = http_request_json_object(req);
    if (!doc)
        return;
    struct internal_job *job = job_new(ctx);
    if (!job) {
        json_decref(doc);
        http_reply_error(req, 500, "internal", "out of memory");
        return;
    }
    bool ok = http_request_message(req, doc, true, &job->msg);
    json_decref(doc);
    if (!ok) {
        job_destroy(&job->base);
        return;
    }
    post(job, req, run_publish);
}

static void
run_client(struct http_job *base)
{
    struct internal_job *job = (struct internal_job *)base;
    json_t *doc = broker_api_client_json(job->api->broker, job->client_id);
    if (!doc) {
        http_job_reply_error(base, 404, "client_not_found", "no session for client %s here",
                             job->client_id);
        return;
    }
    http_job_reply_json(base, 200, doc);
}

/* ---- handlers (HTTP thread) ---- */

static bool
channel_param(struct http_request *req, uint64_t *out)
{
    const char *text = http_request_param(req, "channel");
    char *end;
    if (text && *text >= '0' && *text <= '9') {
        unsigned long long v = strtoull(text, &end, 10);
        if (!*end) {
            *out = v;
            return true;
        }
    }
    http_reply_error(req, 400, "bad_parameter", "the channel must be a decimal number");
    return false;
}

static void
handle_close(struct http_request *req, void *ctx)
{
    uint64_t channel;
    if (!channel_param(req, &channel))
        return;
    json_t *doc = http_request_json_object(req);
    if (!doc)
        return;
    const char *reason = json_string_value(json_object_get(doc, "reason"));
    json_t *epoch = json_object_get(doc, "epoch");
    if (epoch && (!json_is_integer(epoch) || json_integer_value(epoch) < 0)) {
        json_decref(doc);
        http_reply_error(req, 400, "bad_field", "\"epoch\" must be a non-negative integer");
        return;
    }
    uint64_t epoch_value = epoch ? (uint64_t)json_integer_value(epoch) : 0;
    enum close_reason why = CLOSE_KICKED;
    bool ok = true;
    if (reason && strcmp(reason, "takeover") == 0)
        why = CLOSE_TAKEOVER;
    else if (!reason || strcmp(reason, "kicked") != 0)
        ok = false;
    json_decref(doc);
    if (!ok) {
        http_reply_error(req, 400, "bad_field", "\"reason\" must be \"takeover\" or \"kicked\"");
        return;
    }
    struct internal_job *job = job_new(ctx);
    if (!job) {
        http_reply_error(req, 500, "internal", "out of memory");
        return;
    }
    job->channel = channel;
    job->epoch = epoch_value;
    job->reason = why;
    post(job, req, run_close);
}

static void
handle_deliver(struct http_request *req, void *ctx)
{
    uint64_t channel;
    if (!channel_param(req, &channel))
        return;
    json_t *doc = http_request_json_object(req);
    if (!doc)
        return;
    struct internal_job *job = job_new(ctx);
    if (!job) {
        json_decref(doc);
        http_reply_error(req, 500, "internal", "out of memory");
        return;
    }
    bool ok = http_request_message(req, doc, true, &job->msg);
    json_decref(doc);
    if (!ok) {
        job_destroy(&job->base);
        return;
    }
    job->channel = channel;
    post(job, req, run_deliver);
}

static void
handle_client(struct http_request *req, void *ctx)
{
    struct internal_job *job = job_new(ctx);
    if (job)
        job->client_id = strdup(http_request_param(req, "id"));
    if (!job || !job->client_id) {
        if (job)
            job_destroy(&job->base);
        http_reply_error(req, 500, "internal", "out of memory");
        return;
    }
    post(job, req, run_client);
}

static const struct http_route builtin_routes[] = {
    {"POST", "/internal/v1/channels/{channel}/close", handle_close, "internal_close", 0, NULL},
    {"POST", "/internal/v1/channels/{channel}/deliver", handle_deliver, "internal_deliver", 0,
     NULL},
    {"GET", "/internal/v1/clients/{id}", handle_client, "internal_client", 0, NULL},
    {"POST", "/internal/v1/publish", handle_publish, "internal_publish", 0, NULL},
};
#define BUILTIN_COUNT (sizeof(builtin_routes) / sizeof(builtin_routes[0]))

/* ---- lifetime ---- */

struct internal_api *
internal_api_new(const struct internal_api_config *cfg)
{
    if (!cfg->secret || !*cfg->secret) {
        log_error("internal API: --cluster-secret is required with --internal");
        return NULL;
    }
    struct internal_api *api = calloc(1, sizeof(*api));
    if (!api)
        return NULL;
    api->broker = cfg->broker;
    api->route_count = BUILTIN_COUNT + cfg->extra_route_count;
    api->routes = calloc(api->route_count, sizeof(*api->routes));
    api->verifier =
        hmac_verifier_new(cfg->secret, strlen(cfg->secret), cfg->max_skew_ms, REPLAY_CAPACITY);
    if (!api->routes || !api->verifier) {
        log_error("internal API: out of memory");
        goto fail;
    }
    memcpy(api->routes, builtin_routes, sizeof(builtin_routes));
    if (cfg->extra_route_count)
        memcpy(api->routes + BUILTIN_COUNT, cfg->extra_routes,
               cfg->extra_route_count * sizeof(*api->routes));
    struct http_server_config hc = {
        .name = "internal",
        .address = cfg->address,
        .max_body = cfg->max_body,
        .timeout_ms = cfg->timeout_ms,
        .routes = api->routes,
        .route_count = api->route_count,
        .check_headers = check_headers,
        .check_request = check_signature,
        .ctx = api,
    };
    api->http = http_server_new(&hc);
    if (!api->http)
        goto fail;
    if (strlen(cfg->secret) < 16)
        log_warn("internal API: the cluster secret is shorter than 16 characters");
    return api;
fail:
    internal_api_free(api);
    return NULL;
}

void
internal_api_stop(struct internal_api *api)
{
    if (api)
        http_server_stop(api->http);
}

void
internal_api_free(struct internal_api *api)
{
    if (!api)
        return;
    http_server_free(api->http);
    hmac_verifier_free(api->verifier);
    free(api->routes);
    free(api);
}

uint16_t
internal_api_port(const struct internal_api *api)
{
    return http_server_port(api->http);
}

const struct http_server *
internal_api_http(const struct internal_api *api)
{
    return api->http;
}

void
internal_api_write_metrics(FILE *out, void *arg)
{
    struct internal_api *api = arg;
    metrics_family(out, "relaymq_internal_auth_failures_total", "counter",
                   "internal API requests refused for their signature, by reason");
    for (int r = HMAC_MISSING; r < HMAC_RESULT_COUNT; r++)
        fprintf(out, "relaymq_internal_auth_failures_total{reason=\"%s\"} %llu\n",
                hmac_result_name((enum hmac_result)r),
                (unsigned long long)atomic_load_explicit(&api->refused[r], memory_order_relaxed));
}
