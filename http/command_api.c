/* Device-command endpoints; see command_api.h and docs/api.md.
 *
 * A handler validates on the HTTP thread and posts a job; the job runs on
 * the loop and hands itself to the command service as the answer's
 * argument, so the job (and the deferred request it holds) lives until the
 * service answers, however late (?wait, Redis round trips). */
#include "http/command_api.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/log.h"
#include "http/http_body.h"

#define LIST_DEFAULT 50
#define LIST_MAX 1000
#define IDEMPOTENCY_KEY_MAX 200
#define DEVICE_MAX 256
#define WAIT_MAX_S 300
#define RETRIES_MAX 100
#define INTERVAL_MIN_MS 100u
#define INTERVAL_MAX_MS 86400000u
#define TTL_MIN_MS 1000u
#define TTL_MAX_MS 2592000000u

struct command_api {
    struct inbox *inbox;
    const struct command_service *svc;
    struct http_route internal[2];
};

enum job_kind { JOB_SUBMIT, JOB_GET, JOB_LIST, JOB_CANCEL, JOB_DISPATCH, JOB_FINISHED };

struct cmd_job {
    struct http_job base;
    struct command_api *api;
    enum job_kind kind;
    struct command_request req; /* submit */
    char *id;                   /* get, cancel, dispatch */
    char *device;               /* list, dispatch */
    char *cursor;
    size_t limit;
};

json_t *
command_api_error(const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
}

void
command_request_clear(struct command_request *r)
{
    free(r->device);
    json_decref(r->payload);
    free(r->idempotency_key);
    memset(r, 0, sizeof(*r));
}

/* ---- parsing (pure) ---- */

/* A duration given as "10s"/"500ms" or as a number of seconds. */
static bool
parse_duration(const json_t *v, uint64_t *out)
{
    if (json_is_string(v))
        return config_parse_duration_ms(json_string_value(v), out) == RMQ_OK;
    if (!json_is_number(v))
        return false;
    double s = json_number_value(v);
    if (!(s >= 0 && s <= 1e9))
        return false;
    *out = (uint64_t)(s * 1000.0 + 0.5);
    return true;
}

/* "field: problem" into err; false, for `return bad(...)`. */
static bool
bad(char *err, size_t len, const char *field, const char *problem)
{
    snprintf(err, len, "%s: %s", field, problem);
    return false;
}

bool
command_api_parse(json_t *body, struct command_request *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->qos = -1;
    out->retries = -1;
    json_t *payload = json_object_get(body, "payload");
    if (!json_is_object(payload))
        return bad(err, errlen, "payload", "required, a JSON object");
    json_t *v = json_object_get(body, "qos");
    if (v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 2)
            return bad(err, errlen, "qos", "must be 0, 1 or 2");
        out->qos = (int)json_integer_value(v);
    }
    if ((v = json_object_get(body, "retries"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > RETRIES_MAX)
            return bad(err, errlen, "retries", "must be an integer from 0 to 100");
        out->retries = json_integer_value(v);
    }
    if ((v = json_object_get(body, "interval")) &&
        (!parse_duration(v, &out->interval_ms) || out->interval_ms < INTERVAL_MIN_MS ||
         out->interval_ms > INTERVAL_MAX_MS))
        return bad(err, errlen, "interval", "a duration from 100ms to 24h (\"10s\" or seconds)");
    if ((v = json_object_get(body, "ttl")) &&
        (!parse_duration(v, &out->ttl_ms) || out->ttl_ms < TTL_MIN_MS ||
         out->ttl_ms > TTL_MAX_MS))
        return bad(err, errlen, "ttl", "a duration from 1s to 30 days (\"1h\" or seconds)");
    if ((v = json_object_get(body, "idempotency_key"))) {
        size_t n = json_is_string(v) ? strlen(json_string_value(v)) : 0;
        if (n == 0 || n > IDEMPOTENCY_KEY_MAX)
            return bad(err, errlen, "idempotency_key", "a non-empty string of at most 200 bytes");
        if (!(out->idempotency_key = strdup(json_string_value(v))))
            return bad(err, errlen, "idempotency_key", "out of memory");
    }
    out->payload = json_incref(payload);
    return true;
}

/* ---- jobs ---- */

static void
job_destroy(struct http_job *base)
{
    struct cmd_job *job = (struct cmd_job *)base;
    command_request_clear(&job->req);
    free(job->id);
    free(job->device);
    free(job->cursor);
    free(job);
}

static void
on_answer(unsigned status, json_t *body, void *arg)
{
    struct http_job *job = arg;
    if (!body)
        http_job_reply_error(job, 500, "internal", "out of memory");
    else
        http_job_reply_json(job, status, body);
}

static void
run_job(struct http_job *base)
{
    struct cmd_job *job = (struct cmd_job *)base;
    const struct command_service *svc = job->api->svc;
    switch (job->kind) {
    case JOB_SUBMIT:
        svc->submit(svc->ctx, &job->req, on_answer, job);
        break;
    case JOB_GET:
        svc->get(svc->ctx, job->id, on_answer, job);
        break;
    case JOB_LIST:
        svc->list(svc->ctx, job->device, job->cursor, job->limit, on_answer, job);
        break;
    case JOB_CANCEL:
        svc->cancel(svc->ctx, job->id, on_answer, job);
        break;
    case JOB_DISPATCH:
        svc->dispatch(svc->ctx, job->id, job->device, on_answer, job);
        break;
    case JOB_FINISHED:
        svc->finished(svc->ctx, job->id, on_answer, job);
        break;
    }
}

static struct cmd_job *
job_new(struct command_api *api, struct http_request *req, enum job_kind kind)
{
    struct cmd_job *job = calloc(1, sizeof(*job));
    if (!job) {
        http_reply_error(req, 500, "internal", "out of memory");
        return NULL;
    }
    job->api = api;
    job->kind = kind;
    return job;
}

/* Copies a path parameter into *out; answers 500 and destroys the job on
 * failure. */
static bool
take_param(struct http_request *req, struct cmd_job *job, const char *name, char **out)
{
    const char *v = http_request_param(req, name);
    if (v && (*out = strdup(v)))
        return true;
    job_destroy(&job->base);
    http_reply_error(req, 500, "internal", "out of memory");
    return false;
}

static void
post(struct cmd_job *job, struct http_request *req)
{
    http_job_post(job->api->inbox, req, &job->base, run_job, job_destroy);
}

static bool
device_ok(struct http_request *req, const char *device)
{
    if (strlen(device) > DEVICE_MAX) {
        http_reply_error(req, 400, "bad_parameter", "device id longer than %d bytes", DEVICE_MAX);
        return false;
    }
    return true;
}

/* ?wait=SECONDS: 0..300, decimals allowed. */
static bool
parse_wait(struct http_request *req, uint64_t *out)
{
    const char *text = http_request_query(req, "wait");
    *out = 0;
    if (!text)
        return true;
    char *end;
    double s = isdigit((unsigned char)text[0]) ? strtod(text, &end) : -1;
    if (!(s >= 0 && s <= WAIT_MAX_S) || *end) {
        http_reply_error(req, 400, "bad_parameter", "wait must be a number of seconds from 0 to %d",
                         WAIT_MAX_S);
        return false;
    }
    *out = (uint64_t)(s * 1000.0 + 0.5);
    return true;
}

void
command_api_post(struct http_request *req, void *ctx)
{
    const char *device = http_request_param(req, "device");
    uint64_t wait_ms;
    if (!device_ok(req, device) || !parse_wait(req, &wait_ms))
        return;
    json_t *body = http_request_json_object(req);
    if (!body)
        return;
    struct cmd_job *job = job_new(ctx, req, JOB_SUBMIT);
    char err[256];
    if (job && !command_api_parse(body, &job->req, err, sizeof(err))) {
        json_decref(body);
        job_destroy(&job->base);
        http_reply_error(req, 400, "bad_field", "%s", err);
        return;
    }
    json_decref(body);
    if (!job || !take_param(req, job, "device", &job->req.device))
        return;
    job->req.wait_ms = wait_ms;
    post(job, req);
}

void
command_api_get(struct http_request *req, void *ctx)
{
    struct cmd_job *job = job_new(ctx, req, JOB_GET);
    if (job && take_param(req, job, "id", &job->id))
        post(job, req);
}

void
command_api_cancel(struct http_request *req, void *ctx)
{
    struct cmd_job *job = job_new(ctx, req, JOB_CANCEL);
    if (job && take_param(req, job, "id", &job->id))
        post(job, req);
}

void
command_api_list(struct http_request *req, void *ctx)
{
    const char *device = http_request_param(req, "device");
    const char *limit = http_request_query(req, "limit");
    const char *cursor = http_request_query(req, "cursor");
    char *end = NULL;
    unsigned long n = LIST_DEFAULT;
    if (limit)
        n = isdigit((unsigned char)limit[0]) ? strtoul(limit, &end, 10) : 0;
    if (n < 1 || n > LIST_MAX || (end && *end)) {
        http_reply_error(req, 400, "bad_parameter", "limit must be a number from 1 to %d",
                         LIST_MAX);
        return;
    }
    if (!device_ok(req, device))
        return;
    struct cmd_job *job = job_new(ctx, req, JOB_LIST);
    if (!job || !take_param(req, job, "device", &job->device))
        return;
    job->limit = n;
    if (cursor && *cursor && !(job->cursor = strdup(cursor))) {
        job_destroy(&job->base);
        http_reply_error(req, 500, "internal", "out of memory");
        return;
    }
    post(job, req);
}

/* POST /internal/v1/commands/{id}/dispatch {"device": "..."} */
static void
handle_dispatch(struct http_request *req, void *ctx)
{
    (void)ctx;
    struct command_api *api = http_request_route(req)->arg;
    json_t *body = http_request_json_object(req);
    if (!body)
        return;
    const char *device = json_string_value(json_object_get(body, "device"));
    if (!device || !*device) {
        json_decref(body);
        http_reply_error(req, 400, "bad_field", "device: required, a string");
        return;
    }
    struct cmd_job *job = job_new(api, req, JOB_DISPATCH);
    if (!job || !take_param(req, job, "id", &job->id)) {
        json_decref(body);
        return;
    }
    job->device = strdup(device);
    json_decref(body);
    if (!job->device) {
        job_destroy(&job->base);
        http_reply_error(req, 500, "internal", "out of memory");
        return;
    }
    post(job, req);
}

/* POST /internal/v1/commands/{id}/finished (no body needed) */
static void
handle_finished(struct http_request *req, void *ctx)
{
    (void)ctx;
    struct command_api *api = http_request_route(req)->arg;
    struct cmd_job *job = job_new(api, req, JOB_FINISHED);
    if (job && take_param(req, job, "id", &job->id))
        post(job, req);
}

struct command_api *
command_api_new(struct inbox *inbox, const struct command_service *svc)
{
    struct command_api *api = calloc(1, sizeof(*api));
    if (!api)
        return NULL;
    api->inbox = inbox;
    api->svc = svc;
    api->internal[0] = (struct http_route){"POST", "/internal/v1/commands/{id}/dispatch",
                                           handle_dispatch, "commands_dispatch", 0, api};
    api->internal[1] = (struct http_route){"POST", "/internal/v1/commands/{id}/finished",
                                           handle_finished, "commands_finished", 0, api};
    return api;
}

void
command_api_free(struct command_api *api)
{
    free(api);
}

const struct http_route *
command_api_internal_routes(struct command_api *api, size_t *count)
{
    *count = sizeof(api->internal) / sizeof(api->internal[0]);
    return api->internal;
}
