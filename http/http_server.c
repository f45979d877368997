/* libmicrohttpd wrapper: routing, bounded bodies, JSON answers and deferred
 * answers. See http_server.h for the request life cycle.
 *
 * Threads. MHD's one polling thread runs on_request/on_completed, the gates
 * and the handlers. A deferred request may be answered from any thread. The
 * server's lock guards every request's reply state (replied, suspended,
 * resuming, the stored answer, the reference count) and the list of
 * suspended requests; MHD calls are never made by a replying thread while it
 * holds the lock, so the lock never nests inside MHD's own.
 *
 * Ownership. A request is created at the first callback and holds one
 * reference for MHD (dropped in on_completed) and one more while deferred
 * (dropped by its reply). The stored answer text belongs to the request
 * until it is handed to MHD.
 *
 * Suspension. A deferred request is suspended by the MHD thread only after
 * the handler returned and only if no answer came yet, both decided under
 * the lock; a reply resumes it only if it is suspended. So resume never
 * precedes suspend (undefined in MHD). MHD re-enters on_request after a
 * resume, where the stored answer is queued. MHD forbids stopping with
 * suspended connections: http_server_stop answers them 503 first and waits
 * until MHD has re-entered each. */
#include "http/http_server.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"

#define CONNECTION_LIMIT 1024
#define MAX_EXTRA_HEADERS 2
#define MAX_QUERY_VALUES 8
#define STOP_DRAIN_S 2 /* how long stop waits for its 503s to be sent */

/* Status codes counted one by one; anything else lands in "other". */
static const unsigned counted_codes[] = {200, 201, 202, 204, 400, 401, 403, 404, 405,
                                         408, 409, 413, 415, 429, 500, 502, 503, 504};
#define CODE_SLOTS (sizeof(counted_codes) / sizeof(counted_codes[0]) + 1)

struct http_server {
    struct http_server_config cfg;
    char *name;
    char *address;
    struct MHD_Daemon *mhd;
    uint16_t port;
    pthread_mutex_t lock;
    pthread_cond_t unsuspended;
    bool stopping;
    struct http_request *suspended; /* requests waiting for a deferred answer */
    size_t suspended_count;
    size_t draining;          /* answered by stop, not yet sent */
    size_t deferred_count;    /* deferred requests not yet answered by their owner */
    size_t live_requests;     /* created and not yet freed */
    _Atomic uint64_t *counts; /* (route_count + 1 for "unmatched") x CODE_SLOTS */
};

/* REQ_DISCARD: refused (413) with body still to come. MHD 0.9.75 takes an
 * answer only before the body or once the request is whole, and closing
 * with unread data makes the client see a reset, not the 413; so the rest
 * is read and dropped (bounded in bytes and time) and the answer queued at
 * the final call. */
enum req_state { REQ_BODY, REQ_DISCARD, REQ_WAITING, REQ_SUSPENDED, REQ_ANSWERED };

struct extra_header {
    char *name, *value;
};

struct http_request {
    struct http_server *server;
    struct MHD_Connection *conn;
    const struct http_route *route; /* NULL when no route matched */
    size_t route_index;
    struct http_params params;
    char *method, *path;
    char *body;
    size_t body_len, body_cap;
    uint64_t discarded;
    uint64_t started_ms;
    char *query_values[MAX_QUERY_VALUES];
    size_t query_count;

    enum req_state state; /* MHD thread only */

    /* Guarded by server->lock. */
    int refs;
    bool deferred;           /* http_request_defer was called */
    bool owner_done;         /* the deferred owner has answered */
    bool replied;            /* an answer is stored (or was sent) */
    bool answered_by_server; /* stop or a missing answer: the owner's reply is dropped */
    bool suspended, resuming;
    bool draining; /* answered by stop: counted until MHD is done with it */
    unsigned status;
    const char *content_type;
    char *text;
    size_t text_len;
    struct extra_header headers[MAX_EXTRA_HEADERS];
    size_t header_count;
    struct upgrade *upgrade; /* http_reply_upgrade: handed to MHD with the 101 */
    struct http_request *susp_prev, *susp_next;
};

/* What http_reply_upgrade asked for, until MHD hands over the socket. */
struct upgrade {
    http_upgrade_fn fn;
    void *arg;
    bool called; /* MHD thread */
};

/* ---- route matching ---- */

static int
hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

char *
http_percent_decode(const char *text, size_t len)
{
    char *out = malloc(len + 1);
    size_t n = 0;
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '%') {
            int hi = len - i >= 3 ? hex_digit(text[i + 1]) : -1;
            int lo = len - i >= 3 ? hex_digit(text[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                goto fail;
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        if (c == '\0')
            goto fail; /* would cut the C string short */
        out[n++] = c;
    }
    out[n] = '\0';
    return out;
fail:
    free(out);
    return NULL;
}

void
http_params_clear(struct http_params *p)
{
    for (size_t i = 0; i < p->count; i++)
        free(p->values[i]);
    *p = (struct http_params){0};
}

/* Length of the segment starting at s (up to '/' or the end). */
static size_t
segment_len(const char *s)
{
    const char *slash = strchr(s, '/');
    return slash ? (size_t)(slash - s) : strlen(s);
}

bool
http_route_match(const char *pattern, const char *path, struct http_params *out)
{
    *out = (struct http_params){0};
    if (*pattern != '/' || *path != '/')
        return false;
    const char *p = pattern + 1, *u = path + 1;
    for (;;) {
        size_t pl = segment_len(p), ul = segment_len(u);
        if (pl >= 2 && p[0] == '{' && p[pl - 1] == '}') {
            char *value = ul ? http_percent_decode(u, ul) : NULL;
            if (!value || out->count == HTTP_MAX_PARAMS) {
                free(value);
                goto fail;
            }
            out->names[out->count] = p + 1;
            out->name_lens[out->count] = pl - 2;
            out->values[out->count++] = value;
        } else if (pl != ul || memcmp(p, u, pl) != 0) {
            goto fail;
        }
        p += pl;
        u += ul;
        if (!*p || !*u)
            break;
        p++, u++;
    }
    if (!*p && !*u)
        return true;
fail:
    http_params_clear(out);
    return false;
}

/* ---- request lifetime ---- */

static void
request_free(struct http_request *req)
{
    http_params_clear(&req->params);
    for (size_t i = 0; i < req->query_count; i++)
        free(req->query_values[i]);
    for (size_t i = 0; i < req->header_count; i++) {
        free(req->headers[i].name);
        free(req->headers[i].value);
    }
    free(req->method);
    free(req->path);
    free(req->body);
    free(req->text);
    if (req->upgrade && !req->upgrade->called) /* the connection ended before its 101 */
        req->upgrade->fn(req->upgrade->arg, -1, NULL, 0, NULL);
    free(req->upgrade);
    free(req);
}

/* Drops one reference; frees on the last. Takes the lock. */
static void
request_unref(struct http_request *req)
{
    struct http_server *s = req->server;
    pthread_mutex_lock(&s->lock);
    bool last = --req->refs == 0;
    if (last)
        s->live_requests--;
    pthread_mutex_unlock(&s->lock);
    if (last)
        request_free(req);
}

/* Takes the request off the suspended list. Lock held. */
static void
unsuspend_locked(struct http_request *req)
{
    struct http_server *s = req->server;
    if (!req->suspended)
        return;
    req->suspended = false;
    if (req->susp_prev)
        req->susp_prev->susp_next = req->susp_next;
    else
        s->suspended = req->susp_next;
    if (req->susp_next)
        req->susp_next->susp_prev = req->susp_prev;
    req->susp_prev = req->susp_next = NULL;
    s->suspended_count--;
    pthread_cond_broadcast(&s->unsuspended);
}

/* Stores an answer. Lock held. Returns false if one was stored already. */
static bool
store_answer_locked(struct http_request *req, unsigned status, const char *content_type, char *text,
                    size_t len)
{
    if (req->replied) {
        free(text);
        return false;
    }
    req->replied = true;
    req->status = status;
    req->content_type = content_type;
    req->text = text;
    req->text_len = len;
    return true;
}

/* Every answer ends here: store it, wake the connection if it sleeps, and
 * drop the deferred owner's reference. */
static void
answer(struct http_request *req, unsigned status, const char *content_type, char *text, size_t len)
{
    struct http_server *s = req->server;
    bool resume = false, release = false;
    pthread_mutex_lock(&s->lock);
    if (!store_answer_locked(req, status, content_type, text, len) && !req->answered_by_server)
        log_error("http %s: %s %s answered twice; second answer (%u) dropped", s->name, req->method,
                  req->path, status);
    if (req->suspended && !req->resuming) {
        req->resuming = true;
        resume = true;
    }
    if (req->deferred && !req->owner_done) {
        req->owner_done = true;
        s->deferred_count--;
        release = true;
    }
    pthread_mutex_unlock(&s->lock);
    /* Safe without the lock: a suspended connection is not closed by MHD, and
     * our reference keeps req alive. */
    if (resume)
        MHD_resume_connection(req->conn);
    if (release)
        request_unref(req);
}

struct http_request *
http_request_defer(struct http_request *req)
{
    struct http_server *s = req->server;
    pthread_mutex_lock(&s->lock);
    if (!req->deferred) {
        req->deferred = true;
        req->refs++;
        s->deferred_count++;
    }
    pthread_mutex_unlock(&s->lock);
    return req;
}

/* ---- answers ---- */

void
http_reply_text(struct http_request *req, unsigned status, const char *content_type, char *text,
                size_t len)
{
    answer(req, status, content_type, text, len);
}

void
http_reply_json(struct http_request *req, unsigned status, json_t *body)
{
    char *text = NULL;
    if (body) {
        text = json_dumps(body, JSON_COMPACT | JSON_ENSURE_ASCII);
        json_decref(body);
        if (!text) {
            log_error("http: out of memory encoding a JSON answer");
            answer(req, 500, "application/json", NULL, 0);
            return;
        }
    }
    answer(req, status, "application/json", text, text ? strlen(text) : 0);
}

void
http_reply_error(struct http_request *req, unsigned status, const char *code, const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    json_t *body = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
    http_reply_json(req, status, body);
}

void
http_reply_header(struct http_request *req, const char *name, const char *value)
{
    struct http_server *s = req->server;
    char *n = strdup(name), *v = strdup(value);
    pthread_mutex_lock(&s->lock);
    if (n && v && req->header_count < MAX_EXTRA_HEADERS && !req->replied) {
        req->headers[req->header_count++] = (struct extra_header){n, v};
        n = v = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    free(n);
    free(v);
}

bool
http_reply_upgrade(struct http_request *req, const char *protocol, http_upgrade_fn fn, void *arg)
{
    struct http_server *s = req->server;
    struct upgrade *u = calloc(1, sizeof(*u));
    if (u)
        *u = (struct upgrade){fn, arg, false};
    http_reply_header(req, MHD_HTTP_HEADER_UPGRADE, protocol);
    pthread_mutex_lock(&s->lock);
    if (u && !req->replied && !req->deferred && !req->upgrade && req->header_count > 0) {
        req->upgrade = u;
        u = NULL;
        store_answer_locked(req, 101, NULL, NULL, 0);
    }
    pthread_mutex_unlock(&s->lock);
    if (u || !req->upgrade) {
        free(u);
        http_reply_error(req, 500, "internal", "cannot switch protocols");
        return false;
    }
    return true;
}

/* MHD thread: the 101 is sent; the socket is the upgrade's owner's now. */
static void
on_upgraded(void *cls, struct MHD_Connection *conn, void *req_cls, const char *extra,
            size_t extra_len, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
    (void)conn;
    (void)req_cls;
    struct upgrade *u = cls;
    u->called = true;
    u->fn(u->arg, sock, extra, extra_len, (struct http_upgraded *)urh);
}

void
http_upgraded_close(struct http_upgraded *conn)
{
    MHD_upgrade_action((struct MHD_UpgradeResponseHandle *)conn, MHD_UPGRADE_ACTION_CLOSE);
}

/* ---- request accessors ---- */

const char *
http_request_method(const struct http_request *req)
{
    return req->method;
}

const char *
http_request_path(const struct http_request *req)
{
    return req->path;
}

const struct http_route *
http_request_route(const struct http_request *req)
{
    return req->route;
}

const char *
http_request_param(const struct http_request *req, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < req->params.count; i++)
        if (req->params.name_lens[i] == len && memcmp(req->params.names[i], name, len) == 0)
            return req->params.values[i];
    return NULL;
}

const char *
http_request_query(struct http_request *req, const char *name)
{
    /* Values arrive still escaped (see keep_escaped) with '+' already a space. */
    const char *raw = MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
    if (!raw || req->query_count == MAX_QUERY_VALUES)
        return NULL;
    char *value = http_percent_decode(raw, strlen(raw));
    if (value)
        req->query_values[req->query_count++] = value;
    return value;
}

const char *
http_request_header(struct http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *
http_request_body(const struct http_request *req, size_t *len)
{
    *len = req->body_len;
    return req->body ? req->body : "";
}

/* ---- MHD glue (MHD thread) ---- */

static size_t
code_slot(unsigned status)
{
    for (size_t i = 0; i + 1 < CODE_SLOTS; i++)
        if (counted_codes[i] == status)
            return i;
    return CODE_SLOTS - 1;
}

/* Hands the stored answer to MHD. */
static enum MHD_Result
queue_answer(struct http_request *req)
{
    struct http_server *s = req->server;
    pthread_mutex_lock(&s->lock);
    char *text = req->text;
    size_t len = req->text_len;
    unsigned status = req->status;
    struct upgrade *upgrade = req->upgrade; /* stays the request's; freed with it */
    req->text = NULL;
    req->state = REQ_ANSWERED;
    pthread_mutex_unlock(&s->lock);

    struct MHD_Response *resp =
        upgrade ? MHD_create_response_for_upgrade(on_upgraded, upgrade)
        : text  ? MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE)
                : MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(text);
        return MHD_NO; /* MHD closes the connection */
    }
    if (text)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, req->content_type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    for (size_t i = 0; i < req->header_count; i++)
        MHD_add_response_header(resp, req->headers[i].name, req->headers[i].value);
    enum MHD_Result rc = MHD_queue_response(req->conn, status, resp);
    MHD_destroy_response(resp);
    atomic_fetch_add_explicit(&s->counts[req->route_index * CODE_SLOTS + code_slot(status)], 1,
                              memory_order_relaxed);
    return rc;
}

/* Finds the route; answers 404 or 405 itself when there is none. */
static bool
resolve_route(struct http_request *req)
{
    struct http_server *s = req->server;
    char allow[128] = "";
    for (size_t i = 0; i < s->cfg.route_count; i++) {
        const struct http_route *r = &s->cfg.routes[i];
        struct http_params params;
        if (!http_route_match(r->pattern, req->path, &params))
            continue;
        if (strcmp(r->method, req->method) == 0) {
            req->route = r;
            req->route_index = i;
            req->params = params;
            return true;
        }
        http_params_clear(&params);
        size_t used = strlen(allow);
        snprintf(allow + used, sizeof(allow) - used, "%s%s", used ? ", " : "", r->method);
    }
    if (allow[0]) {
        http_reply_header(req, "Allow", allow);
        http_reply_error(req, 405, "method_not_allowed", "%s is not allowed on %s (allowed: %s)",
                         req->method, req->path, allow);
    } else {
        http_reply_error(req, 404, "not_found", "no such endpoint: %s", req->path);
    }
    return false;
}

static struct http_request *
request_new(struct http_server *s, struct MHD_Connection *conn, const char *url, const char *method)
{
    struct http_request *req = calloc(1, sizeof(*req));
    if (!req)
        return NULL;
    req->server = s;
    req->conn = conn;
    req->route_index = s->cfg.route_count; /* "unmatched" until resolved */
    req->method = strdup(method);
    req->path = strdup(url);
    req->started_ms = clock_monotonic_ms();
    req->refs = 1; /* MHD's, dropped in on_completed */
    req->state = REQ_BODY;
    if (!req->method || !req->path) {
        request_free(req);
        return NULL;
    }
    pthread_mutex_lock(&s->lock);
    s->live_requests++;
    pthread_mutex_unlock(&s->lock);
    return req;
}

/* First call, headers only: route, declared size, header gate. Returns
 * false if the request has been answered (to queue now). */
static bool
admit(struct http_request *req)
{
    struct http_server *s = req->server;
    if (!resolve_route(req))
        return false;
    const char *cl = http_request_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
    unsigned long long declared = cl ? strtoull(cl, NULL, 10) : 0;
    if (declared > s->cfg.max_body) {
        http_reply_error(req, 413, "body_too_large", "the body is larger than %llu bytes",
                         (unsigned long long)s->cfg.max_body);
        /* A body within the discard allowance is read and dropped, so the
         * client reads the 413 instead of a reset; a larger one is not. */
        if (declared <= 2 * s->cfg.max_body) {
            req->state = REQ_DISCARD;
            return true;
        }
        return false;
    }
    if (s->cfg.check_headers && !s->cfg.check_headers(req, s->cfg.ctx))
        return false;
    return true;
}

enum body_result { BODY_OK, BODY_REFUSED, BODY_ABORT };

static bool
too_slow(const struct http_request *req)
{
    return clock_monotonic_ms() - req->started_ms > req->server->cfg.timeout_ms;
}

/* A chunk of the body: kept, refused (an answer is stored), or too slow
 * (the connection is dropped: a slow sender gets no more of our time). */
static enum body_result
take_body(struct http_request *req, const char *data, size_t len)
{
    struct http_server *s = req->server;
    if (too_slow(req)) {
        log_info("http %s: %s %s: body not received within %llu ms, closing", s->name, req->method,
                 req->path, (unsigned long long)s->cfg.timeout_ms);
        return BODY_ABORT;
    }
    if (len > s->cfg.max_body - req->body_len) {
        http_reply_error(req, 413, "body_too_large", "the body is larger than %llu bytes",
                         (unsigned long long)s->cfg.max_body);
        return BODY_REFUSED;
    }
    if (req->body_len + len + 1 > req->body_cap) {
        size_t cap = req->body_cap ? req->body_cap : 1024;
        while (cap < req->body_len + len + 1)
            cap *= 2;
        char *body = realloc(req->body, cap);
        if (!body) {
            http_reply_error(req, 500, "internal", "out of memory");
            return BODY_REFUSED;
        }
        req->body = body;
        req->body_cap = cap;
    }
    memcpy(req->body + req->body_len, data, len);
    req->body_len += len;
    req->body[req->body_len] = '\0';
    return BODY_OK;
}

/* The rest of a refused body: dropped, up to twice max_body and within
 * the request time limit. */
static enum MHD_Result
discard_body(struct http_request *req, size_t len)
{
    req->discarded += len;
    if (req->discarded > 2 * req->server->cfg.max_body || too_slow(req))
        return MHD_NO; /* MHD closes the connection without an answer */
    return MHD_YES;
}

/* An answer the server gives on its own. Lock held. */
static void
server_answer_locked(struct http_request *req, unsigned status, const char *code,
                     const char *message)
{
    json_t *doc = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    store_answer_locked(req, status, "application/json", text, text ? strlen(text) : 0);
}

static void
suspend_locked(struct http_request *req)
{
    struct http_server *s = req->server;
    req->state = REQ_SUSPENDED;
    req->suspended = true;
    req->susp_next = s->suspended;
    if (s->suspended)
        s->suspended->susp_prev = req;
    s->suspended = req;
    s->suspended_count++;
    MHD_suspend_connection(req->conn);
}

/* The whole request is in: gate, handler, then answer now or suspend. */
static enum MHD_Result
dispatch(struct http_request *req)
{
    struct http_server *s = req->server;
    if (!s->cfg.check_request || s->cfg.check_request(req, s->cfg.ctx))
        req->route->handler(req, s->cfg.ctx);

    pthread_mutex_lock(&s->lock);
    if (!req->replied && !req->deferred) {
        log_error("http %s: handler %s gave no answer", s->name, req->route->name);
        server_answer_locked(req, 500, "internal", "the handler gave no answer");
    } else if (!req->replied && s->stopping) {
        req->answered_by_server = true;
        server_answer_locked(req, 503, "shutting_down", "the node is stopping");
    } else if (!req->replied) {
        suspend_locked(req); /* the reply resumes it */
        pthread_mutex_unlock(&s->lock);
        return MHD_YES;
    }
    pthread_mutex_unlock(&s->lock);
    return queue_answer(req);
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
           const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    struct http_server *s = cls;
    struct http_request *req = *con_cls;
    if (!req) {
        req = request_new(s, conn, url, method);
        if (!req)
            return MHD_NO;
        *con_cls = req;
        return admit(req) ? MHD_YES : queue_answer(req); /* REQ_DISCARD answers later */
    }
    if (req->state == REQ_SUSPENDED) {
        pthread_mutex_lock(&s->lock);
        unsuspend_locked(req);
        pthread_mutex_unlock(&s->lock);
        return queue_answer(req);
    }
    size_t len = *upload_data_size;
    *upload_data_size = 0;
    if (req->state == REQ_DISCARD)
        return len ? discard_body(req, len) : queue_answer(req);
    if (req->state != REQ_BODY)
        return MHD_YES; /* answered at the first call: MHD refuses the body itself */
    if (len) {
        enum body_result r = take_body(req, upload_data, len);
        if (r == BODY_REFUSED)
            req->state = REQ_DISCARD;
        return r == BODY_ABORT ? MHD_NO : MHD_YES;
    }
    req->state = REQ_WAITING;
    return dispatch(req);
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
             enum MHD_RequestTerminationCode why)
{
    struct http_server *s = cls;
    struct http_request *req = *con_cls;
    if (!req)
        return;
    *con_cls = NULL;
    pthread_mutex_lock(&s->lock);
    unsuspend_locked(req); /* closed while resuming: never left hanging in the list */
    if (req->draining) {
        req->draining = false;
        s->draining--;
        pthread_cond_broadcast(&s->unsuspended);
    }
    pthread_mutex_unlock(&s->lock);
    request_unref(req);
}

/* Keeps the path and query raw: path parameters are decoded per segment
 * after routing (so "%2F" inside a client id is not a separator) and the
 * HMAC of the internal API covers the path exactly as sent. */
static size_t
keep_escaped(void *cls, struct MHD_Connection *conn, char *s)
{
    return strlen(s);
}

__attribute__((format(printf, 2, 0))) static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct http_server *s = cls;
    char line[512];
    vsnprintf(line, sizeof(line), fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    log_warn("http %s: %s", s->name, line);
}

/* ---- server lifetime ---- */

/* "HOST:PORT" or "[v6]:PORT" into a socket address. */
static enum rmq_status
resolve_address(const char *address, struct addrinfo **out)
{
    char host[256];
    const char *colon = strrchr(address, ':');
    if (!colon || colon == address || !colon[1])
        return RMQ_INVALID;
    const char *h = address;
    size_t hl = (size_t)(colon - address);
    if (h[0] == '[') {
        if (hl < 2 || h[hl - 1] != ']')
            return RMQ_INVALID;
        h++;
        hl -= 2;
    }
    char *end;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (hl >= sizeof(host) || *end || port > 65535 || colon[1] < '0' || colon[1] > '9')
        return RMQ_INVALID;
    memcpy(host, h, hl);
    host[hl] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    return getaddrinfo(host, colon + 1, &hints, out) == 0 ? RMQ_OK : RMQ_INVALID;
}

static enum rmq_status
start_daemon(struct http_server *s)
{
    struct addrinfo *ai = NULL;
    if (resolve_address(s->address, &ai) != RMQ_OK) {
        log_error("http %s: address '%s': expected HOST:PORT", s->name, s->address);
        return RMQ_INVALID;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG | MHD_ALLOW_UPGRADE;
    if (MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES)
        flags |= MHD_USE_EPOLL;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    unsigned timeout_s = (unsigned)((s->cfg.timeout_ms + 999) / 1000);
    s->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER,
                              mhd_log, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                              MHD_OPTION_CONNECTION_TIMEOUT, timeout_s, MHD_OPTION_CONNECTION_LIMIT,
                              (unsigned)CONNECTION_LIMIT, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
                              s, MHD_OPTION_UNESCAPE_CALLBACK, keep_escaped, NULL, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->mhd) {
        log_error("http %s: cannot listen on %s: %s", s->name, s->address, strerror(errno));
        return RMQ_IO;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : 0;
    return RMQ_OK;
}

struct http_server *
http_server_new(const struct http_server_config *cfg)
{
    struct http_server *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->cfg = *cfg;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->unsuspended, NULL);
    s->name = strdup(cfg->name);
    s->address = strdup(cfg->address);
    s->counts = calloc((cfg->route_count + 1) * CODE_SLOTS, sizeof(*s->counts));
    if (!s->name || !s->address || !s->counts) {
        log_error("http: out of memory creating a server");
        goto fail;
    }
    if (start_daemon(s) != RMQ_OK)
        goto fail;
    log_info("http %s: listening on %s (port %u)", s->name, s->address, (unsigned)s->port);
    return s;
fail:
    http_server_free(s);
    return NULL;
}

/* The first suspended request nobody is resuming yet. Lock held. */
static struct http_request *
first_sleeping_locked(struct http_server *s)
{
    for (struct http_request *r = s->suspended; r; r = r->susp_next)
        if (!r->resuming)
            return r;
    return NULL;
}

void
http_server_stop(struct http_server *s)
{
    if (!s || !s->mhd)
        return;
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    struct http_request *r;
    while ((r = first_sleeping_locked(s)) != NULL) {
        struct MHD_Connection *conn = r->conn;
        r->answered_by_server = true;
        server_answer_locked(r, 503, "shutting_down", "the node is stopping");
        r->resuming = true;
        r->draining = true;
        s->draining++;
        pthread_mutex_unlock(&s->lock);
        MHD_resume_connection(conn);
        pthread_mutex_lock(&s->lock);
    }
    /* MHD must have taken every connection back before it may stop. */
    while (s->suspended_count)
        pthread_cond_wait(&s->unsuspended, &s->lock);
    /* Give those answers a moment to leave before the connections close. */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += STOP_DRAIN_S;
    while (s->draining && pthread_cond_timedwait(&s->unsuspended, &s->lock, &until) == 0)
        ;
    pthread_mutex_unlock(&s->lock);
    MHD_stop_daemon(s->mhd);
    s->mhd = NULL;
    log_info("http %s: stopped", s->name);
}

void
http_server_free(struct http_server *s)
{
    if (!s)
        return;
    http_server_stop(s);
    pthread_mutex_lock(&s->lock);
    size_t left = s->live_requests;
    pthread_mutex_unlock(&s->lock);
    if (left) {
        log_error("http %s: %zu deferred requests never answered; not freeing the server", s->name,
                  left);
        return;
    }
    pthread_cond_destroy(&s->unsuspended);
    pthread_mutex_destroy(&s->lock);
    free(s->counts);
    free(s->name);
    free(s->address);
    free(s);
}

uint16_t
http_server_port(const struct http_server *s)
{
    return s->port;
}

void
http_server_write_metrics(const struct http_server *s, FILE *out)
{
    for (size_t r = 0; r <= s->cfg.route_count; r++) {
        const char *route = r < s->cfg.route_count ? s->cfg.routes[r].name : "unmatched";
        for (size_t c = 0; c < CODE_SLOTS; c++) {
            uint64_t v = atomic_load_explicit(&s->counts[r * CODE_SLOTS + c], memory_order_relaxed);
            if (!v)
                continue;
            char code[16];
            if (c + 1 < CODE_SLOTS)
                snprintf(code, sizeof(code), "%u", counted_codes[c]);
            else
                snprintf(code, sizeof(code), "other");
            fprintf(out,
                    "relaymq_http_requests_total{server=\"%s\",route=\"%s\",code=\"%s\"} %llu\n",
                    s->name, route, code, (unsigned long long)v);
        }
    }
}
