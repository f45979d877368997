/* An HTTP/1.1 server on libmicrohttpd with a route table, bounded bodies,
 * JSON replies and replies that may come later from another thread.
 *
 * MHD runs one internal polling thread per server (epoll where available).
 * For every request the server:
 *   1. matches the path against the route table ({name} segments capture a
 *      percent-decoded parameter); no path match is 404 "not_found", a path
 *      match with another method is 405 "method_not_allowed" with an Allow
 *      header;
 *   2. refuses a body above max_body with 413 "body_too_large" (from
 *      Content-Length at once, or while it arrives);
 *   3. runs the optional check_headers gate (before the body is read) and
 *      check_request gate (after), which may answer instead of the handler;
 *   4. calls the route's handler on the MHD thread with the whole body.
 *
 * A handler answers exactly once: either with http_reply_*() before it
 * returns, or it calls http_request_defer() and answers later from any
 * thread (the MHD connection is suspended meanwhile and resumed by the
 * reply). A handler that does neither gets a 500 and a log line.
 *
 * Every answer is counted per route and status code; see
 * http_server_write_metrics(). */
#ifndef RMQ_HTTP_HTTP_SERVER_H
#define RMQ_HTTP_HTTP_SERVER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/inbox.h"
#include "common/status.h"

struct http_server;
struct http_request;

typedef void (*http_handler_fn)(struct http_request *req, void *ctx);

enum http_route_flags {
    HTTP_ROUTE_PUBLIC = 1, /* for the gates: needs no credentials */
};

struct http_route {
    const char *method;  /* "GET", "POST", "DELETE", ... */
    const char *pattern; /* "/api/v1/clients/{id}": literal or {name} segments */
    http_handler_fn handler;
    const char *name; /* metrics label, e.g. "clients_get" */
    unsigned flags;   /* enum http_route_flags */
    void *arg;        /* free for the handler (http_request_route(req)->arg) */
};

/* A gate returns true to let the request go on, or answers it (with
 * http_reply_*) and returns false. MHD thread. */
typedef bool (*http_gate_fn)(struct http_request *req, void *ctx);

struct http_server_config {
    const char *name;                /* "admin", "internal": logs and the metrics label */
    const char *address;             /* HOST:PORT or [v6]:PORT; port 0 picks a free port */
    uint64_t max_body;               /* bytes */
    uint64_t timeout_ms;             /* idle limit, and the limit for receiving one request */
    const struct http_route *routes; /* borrowed; must outlive the server */
    size_t route_count;
    http_gate_fn check_headers; /* optional */
    http_gate_fn check_request; /* optional */
    void *ctx;                  /* passed to handlers and gates */
};

/* Binds and starts the server thread. Borrows cfg's strings and routes.
 * NULL on failure (logged). */
struct http_server *http_server_new(const struct http_server_config *cfg);

/* Stops taking requests: every deferred request still waiting is answered
 * 503 "shutting_down", then the MHD thread is stopped and every connection
 * closed. Deferred handles stay valid (replies to them are dropped) until
 * their owners reply. Any thread except the MHD thread. Idempotent. */
void http_server_stop(struct http_server *s);

/* Stops (if needed) and frees. Every deferred request must have been
 * replied to first (a forgotten one is logged and the server leaked rather
 * than freed under it). NULL-safe. */
void http_server_free(struct http_server *s);

/* The bound port (useful with port 0). */
uint16_t http_server_port(const struct http_server *s);

/* Writes one Prometheus sample per (route, code) seen:
 * relaymq_http_requests_total{server="...",route="...",code="..."} N.
 * HELP/TYPE lines are the caller's. Any thread. */
void http_server_write_metrics(const struct http_server *s, FILE *out);

/* ---- the request (valid until it is answered, or while deferred) ---- */

const char *http_request_method(const struct http_request *req);

/* The path as sent, percent-encoding kept, without the query string. */
const char *http_request_path(const struct http_request *req);

const struct http_route *http_request_route(const struct http_request *req);

/* A {name} segment of the route's pattern, percent-decoded; NULL if the
 * pattern has no such segment. */
const char *http_request_param(const struct http_request *req, const char *name);

/* A query argument, percent-decoded; NULL if absent. MHD thread only
 * (it reads MHD's connection). */
const char *http_request_query(struct http_request *req, const char *name);

/* A request header (case-insensitive name); NULL if absent. MHD thread only. */
const char *http_request_header(struct http_request *req, const char *name);

/* The whole body (NUL-terminated for convenience; len excludes the NUL). */
const char *http_request_body(const struct http_request *req, size_t *len);

/* Keeps the request open after the handler returns, to be answered from
 * any thread by one http_reply_*() call. Returns req. */
struct http_request *http_request_defer(struct http_request *req);

/* ---- answers: exactly one per request ---- */

/* Takes ownership of body (may be NULL for an empty body). */
void http_reply_json(struct http_request *req, unsigned status, json_t *body);

/* Takes ownership of text (malloc'd, len bytes). */
void http_reply_text(struct http_request *req, unsigned status, const char *content_type,
                     char *text, size_t len);

/* {"error": {"code": code, "message": <formatted>}} */
void http_reply_error(struct http_request *req, unsigned status, const char *code, const char *fmt,
                      ...) __attribute__((format(printf, 4, 5)));

/* Adds a header to the answer (e.g. WWW-Authenticate); copies both
 * strings. Call before the http_reply_*() of the same request; at most
 * two per request. */
void http_reply_header(struct http_request *req, const char *name, const char *value);

/* ---- switching protocols (HTTP/1.1 Upgrade) ---- */

/* An upgraded connection: its socket belongs to the upgrade's owner. */
struct http_upgraded;

/* Called once on the MHD thread: after the 101 is sent, with fd the
 * connection's socket (non-blocking) and extra the bytes the client sent
 * after its request (already read by MHD); the owner then reads and writes
 * fd from any thread and ends it with http_upgraded_close, never close().
 * Or, if the connection ended before the 101 went out, with fd -1 and conn
 * NULL, only to release arg. */
typedef void (*http_upgrade_fn)(void *arg, int fd, const char *extra, size_t extra_len,
                                struct http_upgraded *conn);

/* Answers 101 Switching Protocols with "Upgrade: protocol" and hands the
 * connection to fn. Only from the handler itself (not deferred), for a
 * request that asked for it ("Connection: Upgrade"). Returns true if fn
 * will be called (exactly once); false if the request was answered 500
 * instead (arg is still the caller's). */
bool http_reply_upgrade(struct http_request *req, const char *protocol, http_upgrade_fn fn,
                        void *arg);

/* Closes an upgraded connection (its socket). Any thread, once. */
void http_upgraded_close(struct http_upgraded *conn);

/* ---- work for a broker loop on behalf of a request (http/http_job.c) ---- */

struct http_job;
typedef void (*http_job_fn)(struct http_job *job);

/* Embed in the job's own struct. */
struct http_job {
    struct inbox_item item;
    struct http_request *req; /* deferred */
    http_job_fn run;          /* loop thread; answers through http_job_reply_* */
    http_job_fn destroy;      /* frees the embedding struct */
};

/* Defers req and posts the job to the loop's inbox (any thread). If the
 * inbox is freed before the job runs, req is answered 503 "shutting_down"
 * and the job destroyed. */
void http_job_post(struct inbox *inbox, struct http_request *req, struct http_job *job,
                   http_job_fn run, http_job_fn destroy);

/* Answer the job's request and destroy the job (job is invalid after). */
void http_job_reply_json(struct http_job *job, unsigned status, json_t *body);
void http_job_reply_text(struct http_job *job, unsigned status, const char *content_type,
                         char *text, size_t len);
void http_job_reply_error(struct http_job *job, unsigned status, const char *code, const char *fmt,
                          ...) __attribute__((format(printf, 4, 5)));

/* ---- route matching (pure; exposed for tests) ---- */

#define HTTP_MAX_PARAMS 4

struct http_params {
    size_t count;
    const char *names[HTTP_MAX_PARAMS]; /* point into the pattern, not NUL-terminated */
    size_t name_lens[HTTP_MAX_PARAMS];
    char *values[HTTP_MAX_PARAMS]; /* malloc'd, percent-decoded */
};

/* True if path (raw, percent-encoded, no query) matches pattern segment by
 * segment; {name} segments match one non-empty segment whose decoded value
 * holds no NUL. On a match out holds the parameters (release them with
 * http_params_clear); otherwise out is left empty. */
bool http_route_match(const char *pattern, const char *path, struct http_params *out);

void http_params_clear(struct http_params *p);

/* Decodes %XX escapes (not '+') into a malloc'd NUL-terminated string; NULL
 * on a malformed escape, an encoded NUL, or allocation failure. */
char *http_percent_decode(const char *text, size_t len);

#endif
