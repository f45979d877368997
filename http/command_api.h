/* The device-command endpoints of the admin API (POST, GET, list, DELETE)
 * and the internal dispatch endpoint a node uses to hand a command to the
 * node holding the device. See docs/api.md.
 *
 * Handlers run on the HTTP thread: they parse and validate, then post a job
 * to the broker loop, where a command service (the cluster's command
 * engine, cluster/commands.h) does the work and answers. */
#ifndef RMQ_HTTP_COMMAND_API_H
#define RMQ_HTTP_COMMAND_API_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/http_server.h"

struct inbox;
struct command_api;

/* A POSTed command, validated. Unset optional fields are -1 / 0 / NULL:
 * the service applies its defaults. */
struct command_request {
    char *device;
    json_t *payload; /* a JSON object */
    int qos;         /* -1 = default (1) */
    int64_t retries; /* -1 = default */
    uint64_t interval_ms, ttl_ms; /* 0 = default */
    char *idempotency_key;
    uint64_t wait_ms; /* ?wait, 0 = answer at once */
};

/* How the service answers: an HTTP status and a JSON body (a command, a
 * list, or {"error": {"code", "message"}}), owned by the callee. */
typedef void (*command_answer_fn)(unsigned status, json_t *body, void *arg);

/* Loop thread; each call answers exactly once, now or later. */
struct command_service {
    void *ctx;
    void (*submit)(void *ctx, const struct command_request *req, command_answer_fn cb, void *arg);
    void (*get)(void *ctx, const char *id, command_answer_fn cb, void *arg);
    void (*list)(void *ctx, const char *device, const char *cursor, size_t limit,
                 command_answer_fn cb, void *arg);
    void (*cancel)(void *ctx, const char *id, command_answer_fn cb, void *arg);
    /* Internal: start delivering command id, for a device said to be here. */
    void (*dispatch)(void *ctx, const char *id, const char *device, command_answer_fn cb,
                     void *arg);
    /* Internal: command id ended on another node; requests waiting here
     * for it may be answered. */
    void (*finished)(void *ctx, const char *id, command_answer_fn cb, void *arg);
};

/* {"error": {"code": code, "message": message}}; NULL on allocation failure. */
json_t *command_api_error(const char *code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Borrows inbox and svc (they must outlive it). NULL on allocation failure. */
struct command_api *command_api_new(struct inbox *inbox, const struct command_service *svc);
void command_api_free(struct command_api *api);

/* Admin handlers: ctx must be the command_api. */
void command_api_post(struct http_request *req, void *ctx);
void command_api_get(struct http_request *req, void *ctx);
void command_api_list(struct http_request *req, void *ctx);
void command_api_cancel(struct http_request *req, void *ctx);

/* The internal API's extra routes (POST /internal/v1/commands/{id}/dispatch
 * and .../finished), whose arg is api. Valid while api lives. */
const struct http_route *command_api_internal_routes(struct command_api *api, size_t *count);

/* Parses a POST body. On a problem fills err (naming the field) and
 * returns false. Pure; exposed for unit tests. out->device is not set. */
bool command_api_parse(json_t *body, struct command_request *out, char *err, size_t errlen);

void command_request_clear(struct command_request *r);

#endif
