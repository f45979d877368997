/* The stream bridge's I/O: observer, buffer, pipelined writes (see
 * bridge_writer.h).
 *
 * Every entry (cluster/bridge.h: one malloc'd block, owned here) is in
 * exactly one of three FIFO queues until its answer is counted:
 *   waiting   built, not sent yet (Redis down, or the pipeline full);
 *   inflight  sent, answer awaited, in send order;
 *   lost      answered NULL (the connection went away): once nothing is
 *             in flight any more they go back to the front of waiting.
 * The link is ours alone, and hiredis answers a connection's commands in
 * order, so each answer belongs to the head of inflight (the callback
 * argument is the writer, not the entry).
 *
 * Counters keep one identity that tests and dashboards can rely on:
 *   matched = written + duplicates + dead_letters + dropped (every reason)
 *             + waiting + inflight + lost.
 * Loop thread only. */
#include "cluster/bridge_writer.h"

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "cluster/bridge.h"
#include "cluster/redis_link.h"
#include "common/clock.h"
#include "common/log.h"
#include "http/metrics.h"

#define PIPELINE 1024            /* commands in flight at most */
#define REPORT_INTERVAL_MS 10000 /* a repeated problem is logged this often at most */

enum drop_reason { DROP_BUFFER_FULL, DROP_BAD_JSON, DROP_ERROR, DROP_SHUTDOWN, DROP_COUNT };

static const char *const drop_names[DROP_COUNT] = {"buffer_full", "bad_json", "error", "shutdown"};

/* Problems that can repeat for every message: logged once, then at most
 * every REPORT_INTERVAL_MS with the number left unlogged in between. */
enum report_kind {
    REPORT_BUFFER_FULL,
    REPORT_BAD_JSON,
    REPORT_REDIS_ERROR,
    REPORT_NOMEM,
    REPORT_COUNT
};

struct report {
    uint64_t last_ms; /* monotonic; 0 = never */
    uint64_t unlogged;
};

struct queue {
    struct bridge_entry *head, *tail;
    uint64_t count;
    uint64_t bytes;
};

struct bridge_writer {
    struct event_base *base;
    struct bridge_rules *rules;
    struct redis_link *link;
    struct redis_link_events link_events;
    struct broker_observer observer;
    int script;
    char *node_id;
    bool device_by_username;
    uint64_t max_messages;
    uint64_t max_bytes;
    bool closing;
    bool draining; /* bridge_writer_drain is running the loop */
    struct queue waiting, inflight, lost;
    struct {
        uint64_t matched, written, duplicates, dead_letters, bad_json, errors, resent;
        uint64_t dropped[DROP_COUNT];
    } n;
    struct report reports[REPORT_COUNT];
};

/* ---- queues ---- */

static void
queue_push(struct queue *q, struct bridge_entry *e)
{
    e->next = NULL;
    if (q->tail)
        q->tail->next = e;
    else
        q->head = e;
    q->tail = e;
    q->count++;
    q->bytes += e->size;
}

static void
queue_push_front(struct queue *q, struct bridge_entry *e)
{
    e->next = q->head;
    q->head = e;
    if (!q->tail)
        q->tail = e;
    q->count++;
    q->bytes += e->size;
}

static struct bridge_entry *
queue_pop(struct queue *q)
{
    struct bridge_entry *e = q->head;
    if (!e)
        return NULL;
    q->head = e->next;
    if (!q->head)
        q->tail = NULL;
    q->count--;
    q->bytes -= e->size;
    e->next = NULL;
    return e;
}

/* Moves every entry of src in front of dst, keeping their order. */
static void
queue_splice_front(struct queue *dst, struct queue *src)
{
    if (!src->head)
        return;
    src->tail->next = dst->head;
    if (!dst->tail)
        dst->tail = src->tail;
    dst->head = src->head;
    dst->count += src->count;
    dst->bytes += src->bytes;
    *src = (struct queue){0};
}

static uint64_t
queue_free_all(struct queue *q)
{
    uint64_t n = q->count;
    struct bridge_entry *e;
    while ((e = queue_pop(q)) != NULL)
        free(e);
    return n;
}

static uint64_t
held(const struct bridge_writer *w)
{
    return w->waiting.count + w->inflight.count + w->lost.count;
}

/* ---- reporting ---- */

static void report(struct bridge_writer *w, enum report_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
report(struct bridge_writer *w, enum report_kind kind, const char *fmt, ...)
{
    struct report *r = &w->reports[kind];
    uint64_t now = clock_monotonic_ms();
    if (r->last_ms && now - r->last_ms < REPORT_INTERVAL_MS) {
        r->unlogged++;
        return;
    }
    char text[512], more[96] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (r->unlogged)
        snprintf(more, sizeof(more), " (and %" PRIu64 " more since the last report)", r->unlogged);
    log_warn("bridge: %s%s", text, more);
    r->last_ms = now;
    r->unlogged = 0;
}

static void
drop(struct bridge_writer *w, struct bridge_entry *e, enum drop_reason why)
{
    w->n.dropped[why]++;
    free(e);
}

/* ---- sending ---- */

static void on_reply(struct redisReply *reply, void *arg);

#define MAX_CALL_ARGS 40

/* An entry without a dedup key needs no script: XADD stream [MAXLEN ~ N] *
 * field value ... (its argv is [stream, maxlen, window, field, value, ...]). */
static enum rmq_status
send_xadd(struct bridge_writer *w, const struct bridge_entry *e)
{
    const char *argv[MAX_CALL_ARGS];
    size_t lens[MAX_CALL_ARGS];
    int n = 0;
    if (e->argc < 3 || e->argc + 4 > MAX_CALL_ARGS)
        return RMQ_INVALID;
    argv[n] = "XADD", lens[n++] = 4;
    argv[n] = e->argv[0], lens[n++] = e->lens[0];
    if (!(e->lens[1] == 1 && e->argv[1][0] == '0')) {
        argv[n] = "MAXLEN", lens[n++] = 6;
        argv[n] = "~", lens[n++] = 1;
        argv[n] = e->argv[1], lens[n++] = e->lens[1];
    }
    argv[n] = "*", lens[n++] = 1;
    for (int i = 3; i < e->argc; i++)
        argv[n] = e->argv[i], lens[n++] = e->lens[i];
    return redis_link_argv(w->link, on_reply, w, n, argv, lens);
}

/* The script with its body (after a NOSCRIPT, which also caches it again). */
static enum rmq_status
send_eval(struct bridge_writer *w, const struct bridge_entry *e)
{
    const char *argv[MAX_CALL_ARGS];
    size_t lens[MAX_CALL_ARGS];
    char nkeys[8];
    if (e->argc + 3 > MAX_CALL_ARGS)
        return RMQ_INVALID;
    snprintf(nkeys, sizeof(nkeys), "%d", e->nkeys);
    argv[0] = "EVAL", lens[0] = 4;
    argv[1] = bridge_script_lua, lens[1] = strlen(bridge_script_lua);
    argv[2] = nkeys, lens[2] = strlen(nkeys);
    memcpy(argv + 3, e->argv, (size_t)e->argc * sizeof(*argv));
    memcpy(lens + 3, e->lens, (size_t)e->argc * sizeof(*lens));
    return redis_link_argv(w->link, on_reply, w, e->argc + 3, argv, lens);
}

/* One entry to Redis: a plain XADD, or the script (EVALSHA; EVAL with
 * body). On RMQ_OK it is in flight. */
static enum rmq_status
send_entry(struct bridge_writer *w, struct bridge_entry *e, bool body)
{
    enum rmq_status st;
    if (!e->dedup)
        st = send_xadd(w, e);
    else if (!body)
        st = redis_link_eval(w->link, w->script, on_reply, w, e->nkeys, e->argc, e->argv, e->lens);
    else
        st = send_eval(w, e);
    if (st == RMQ_OK)
        queue_push(&w->inflight, e);
    return st;
}

/* Sends waiting entries while Redis is up and the pipeline has room
 * (limit: how many may be in flight). */
static void
pump(struct bridge_writer *w, uint64_t limit)
{
    while (w->waiting.head && w->inflight.count < limit && redis_link_is_up(w->link)) {
        struct bridge_entry *e = queue_pop(&w->waiting);
        enum rmq_status st = send_entry(w, e, false);
        if (st == RMQ_INVALID) { /* a call that can never be sent must not block the rest */
            report(w, REPORT_REDIS_ERROR, "entry for stream '%s' cannot be sent (dropped)",
                   e->stream);
            drop(w, e, DROP_ERROR);
        } else if (st != RMQ_OK) {
            queue_push_front(&w->waiting, e); /* the link is going down: keep it */
            return;
        }
    }
}

static void
count_answer(struct bridge_writer *w, struct bridge_entry *e, const struct redisReply *reply)
{
    if (reply->type == REDIS_REPLY_ERROR) {
        w->n.errors++;
        report(w, REPORT_REDIS_ERROR, "Redis refused an entry for stream '%s' (dropped): %s",
               e->stream, reply->str);
        drop(w, e, DROP_ERROR);
        return;
    }
    if (reply->type == REDIS_REPLY_NIL)
        w->n.duplicates++;
    else if (e->verdict == BRIDGE_DEAD_LETTER)
        w->n.dead_letters++;
    else
        w->n.written++;
    free(e);
}

/* The answer for the head of inflight. NULL: the connection is gone; the
 * entry waits to be sent again (its first try may have been written:
 * with a dedup key the second then counts as a duplicate). */
static void
on_reply(struct redisReply *reply, void *arg)
{
    struct bridge_writer *w = arg;
    struct bridge_entry *e = queue_pop(&w->inflight);
    if (!e)
        return;
    if (w->closing) {
        free(e);
        return;
    }
    if (!reply && w->draining) {
        queue_push(&w->lost, e); /* the drain is over: counted as not written */
        return;
    }
    if (!reply) {
        queue_push(&w->lost, e);
        if (w->inflight.count == 0) {
            w->n.resent += w->lost.count;
            queue_splice_front(&w->waiting, &w->lost);
        }
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOSCRIPT", 8) == 0 &&
        send_entry(w, e, true) == RMQ_OK)
        return;
    count_answer(w, e, reply);
    pump(w, PIPELINE);
    if (w->draining && held(w) == 0)
        event_base_loopbreak(w->base);
}

static void
on_link_up(void *ctx)
{
    struct bridge_writer *w = ctx;
    if (w->waiting.count)
        log_info("bridge: Redis is back; writing %" PRIu64 " buffered entries", w->waiting.count);
    pump(w, PIPELINE);
}

static void
on_link_down(void *ctx)
{
    struct bridge_writer *w = ctx;
    if (w->draining)
        event_base_loopbreak(w->base);
    log_warn("bridge: Redis unreachable; buffering up to %" PRIu64 " entries (%" PRIu64 " bytes)",
             w->max_messages, w->max_bytes);
}

/* ---- the observer ---- */

static void
enqueue(struct bridge_writer *w, struct bridge_entry *e)
{
    uint64_t count = held(w);
    uint64_t bytes = w->waiting.bytes + w->inflight.bytes + w->lost.bytes;
    if (count >= w->max_messages || bytes + e->size > w->max_bytes) {
        report(w, REPORT_BUFFER_FULL,
               "buffer full (%" PRIu64 " entries, %" PRIu64 " bytes held%s): "
               "entry for stream '%s' dropped",
               count, bytes, redis_link_is_up(w->link) ? "" : ", Redis unreachable", e->stream);
        drop(w, e, DROP_BUFFER_FULL);
        return;
    }
    queue_push(&w->waiting, e);
}

static void
bad_json(struct bridge_writer *w, const struct bridge_message *m, const char *what)
{
    w->n.bad_json++;
    report(w, REPORT_BAD_JSON,
           "message of device '%s' on '%.*s' lacks the JSON its dedup key needs: %s", m->device,
           (int)(m->topic_len > 200 ? 200 : m->topic_len), m->topic, what);
}

static void
on_published(void *ctx, const struct broker_publish_info *info)
{
    struct bridge_writer *w = ctx;
    if (w->closing)
        return;
    bool by_user = w->device_by_username && info->username && info->username[0];
    struct bridge_message m = {
        .topic = info->topic,
        .topic_len = info->topic_len,
        .device = by_user ? info->username : info->client_id,
        .client_id = info->client_id,
        .node = w->node_id,
        .payload = info->payload,
        .payload_len = info->payload_len,
        .qos = info->qos,
        .ts_ms = clock_wall_ms(),
    };
    struct bridge_json json = {0};
    for (size_t i = 0; i < bridge_rules_count(w->rules); i++) {
        struct bridge_entry *e;
        enum bridge_verdict v = bridge_rule_apply(w->rules, i, &m, &json, &e);
        if (v == BRIDGE_NO_MATCH)
            continue;
        w->n.matched++;
        switch (v) {
        case BRIDGE_WRITE:
            enqueue(w, e);
            break;
        case BRIDGE_WRITE_PLAIN:
            bad_json(w, &m, "written without de-duplication");
            enqueue(w, e);
            break;
        case BRIDGE_DEAD_LETTER:
            bad_json(w, &m, "sent to the dead-letter stream");
            enqueue(w, e);
            break;
        case BRIDGE_DROP_BAD_JSON:
            bad_json(w, &m, "dropped");
            w->n.dropped[DROP_BAD_JSON]++;
            break;
        case BRIDGE_NOMEM:
            report(w, REPORT_NOMEM, "out of memory: message on '%.*s' dropped",
                   (int)(m.topic_len > 200 ? 200 : m.topic_len), m.topic);
            w->n.dropped[DROP_ERROR]++;
            break;
        case BRIDGE_NO_MATCH:
            break;
        }
    }
    bridge_json_release(&json);
    pump(w, PIPELINE);
}

/* ---- life cycle ---- */

static struct bridge_rules *
parse_rules(const struct bridge_writer_config *cfg, char *err, size_t errlen)
{
    struct bridge_options opts = {.prefix = cfg->prefix, .dead_letter = cfg->dead_letter};
    return bridge_rules_parse(cfg->rules, cfg->rule_count, &opts, err, errlen);
}

enum rmq_status
bridge_writer_check(const struct bridge_writer_config *cfg, char *err, size_t errlen)
{
    struct bridge_rules *rules = parse_rules(cfg, err, errlen);
    if (!rules)
        return RMQ_INVALID;
    bridge_rules_free(rules);
    return RMQ_OK;
}

static void
log_rules(const struct bridge_writer *w)
{
    log_info(
        "bridge: %zu rule(s); buffer %" PRIu64 " entries, %" PRIu64 " bytes; dead letters to '%s'",
        bridge_rules_count(w->rules), w->max_messages, w->max_bytes, bridge_dead_letter(w->rules));
    for (size_t i = 0; i < bridge_rules_count(w->rules); i++) {
        char text[768];
        bridge_rule_describe(w->rules, i, text, sizeof(text));
        log_info("bridge rule %zu: %s", i + 1, text);
    }
}

struct bridge_writer *
bridge_writer_new(struct event_base *base, struct broker *broker,
                  const struct bridge_writer_config *cfg)
{
    char err[512];
    struct bridge_writer *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->base = base;
    w->device_by_username = cfg->device_by_username;
    w->max_messages = cfg->buffer_messages;
    w->max_bytes = cfg->buffer_bytes;
    if (!(w->node_id = strdup(cfg->node_id)))
        goto fail;
    if (!(w->rules = parse_rules(cfg, err, sizeof(err)))) {
        log_error("%s", err);
        goto fail;
    }
    w->link_events = (struct redis_link_events){.up = on_link_up, .down = on_link_down, .ctx = w};
    if (!(w->link = redis_link_new(base, cfg->redis_url, &w->link_events)))
        goto fail;
    if ((w->script = redis_link_script(w->link, bridge_script_lua)) < 0)
        goto fail;
    w->observer = (struct broker_observer){.ctx = w, .published = on_published};
    if (broker_add_observer(broker, &w->observer) != RMQ_OK) {
        log_error("bridge: the broker takes no more observers");
        goto fail;
    }
    log_rules(w);
    return w;
fail:
    bridge_writer_free(w);
    return NULL;
}

static void
log_totals(const struct bridge_writer *w)
{
    uint64_t dropped = 0;
    for (int i = 0; i < DROP_COUNT; i++)
        dropped += w->n.dropped[i];
    log_info("bridge: %" PRIu64 " matched, %" PRIu64 " written, %" PRIu64 " duplicates, %" PRIu64
             " dead letters, %" PRIu64 " dropped (buffer full %" PRIu64 ", bad JSON %" PRIu64
             ", error %" PRIu64 ", shutdown %" PRIu64 ")",
             w->n.matched, w->n.written, w->n.duplicates, w->n.dead_letters, dropped,
             w->n.dropped[DROP_BUFFER_FULL], w->n.dropped[DROP_BAD_JSON], w->n.dropped[DROP_ERROR],
             w->n.dropped[DROP_SHUTDOWN]);
}

static void
on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    event_base_loopbreak(arg);
}

void
bridge_writer_drain(struct bridge_writer *w, uint64_t timeout_ms)
{
    if (!w || held(w) == 0 || !redis_link_is_up(w->link))
        return;
    struct event *timer = evtimer_new(w->base, on_drain_timeout, w->base);
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};
    if (!timer || evtimer_add(timer, &tv) != 0) {
        if (timer)
            event_free(timer);
        return;
    }
    uint64_t before = held(w);
    log_info("bridge: writing %" PRIu64 " held entries before stopping", before);
    w->draining = true;
    queue_splice_front(&w->waiting, &w->lost);
    pump(w, PIPELINE);
    event_base_dispatch(w->base); /* until drained, the link is lost, the timeout, or a signal */
    w->draining = false;
    event_free(timer);
    log_info("bridge: %" PRIu64 " of %" PRIu64 " held entries answered before stopping",
             before - held(w), before);
}

void
bridge_writer_free(struct bridge_writer *w)
{
    if (!w)
        return;
    uint64_t left = held(w);
    if (left) {
        w->n.dropped[DROP_SHUTDOWN] += left;
        log_warn("bridge: %" PRIu64 " held entries not confirmed written at shutdown (%s)", left,
                 redis_link_is_up(w->link) ? "Redis did not answer in time" : "Redis unreachable");
    }
    if (w->rules)
        log_totals(w);
    w->closing = true;
    redis_link_free(w->link); /* in-flight answers come back NULL and are freed */
    queue_free_all(&w->inflight);
    queue_free_all(&w->waiting);
    queue_free_all(&w->lost);
    bridge_rules_free(w->rules);
    free(w->node_id);
    free(w);
}

/* ---- metrics ---- */

static void
counter(FILE *out, const char *name, const char *help, uint64_t value)
{
    metrics_family(out, name, "counter", help);
    fprintf(out, "%s %" PRIu64 "\n", name, value);
}

static void
gauge(FILE *out, const char *name, const char *help, uint64_t value)
{
    metrics_family(out, name, "gauge", help);
    fprintf(out, "%s %" PRIu64 "\n", name, value);
}

void
bridge_writer_write_metrics(FILE *out, void *arg)
{
    const struct bridge_writer *w = arg;
    gauge(out, "relaymq_bridge_redis_up", "1 while the bridge's Redis link is up",
          redis_link_is_up(w->link) ? 1 : 0);
    counter(out, "relaymq_bridge_matched_total",
            "messages matched by a bridge rule (once per matching rule)", w->n.matched);
    counter(out, "relaymq_bridge_written_total", "entries appended to their rule's stream",
            w->n.written);
    counter(out, "relaymq_bridge_duplicates_total",
            "messages not written: their dedup key was seen within the window", w->n.duplicates);
    counter(out, "relaymq_bridge_dead_letters_total", "entries appended to the dead-letter stream",
            w->n.dead_letters);
    counter(out, "relaymq_bridge_bad_json_total",
            "messages whose dedup key needed JSON the payload lacks (whatever on-bad-json did)",
            w->n.bad_json);
    metrics_family(out, "relaymq_bridge_dropped_total", "counter",
                   "messages not written, by reason");
    for (int i = 0; i < DROP_COUNT; i++)
        fprintf(out, "relaymq_bridge_dropped_total{reason=\"%s\"} %" PRIu64 "\n", drop_names[i],
                w->n.dropped[i]);
    counter(out, "relaymq_bridge_errors_total", "error answers from Redis (the entry is dropped)",
            w->n.errors);
    counter(out, "relaymq_bridge_resent_total",
            "entries sent again after the connection was lost before Redis answered", w->n.resent);
    gauge(out, "relaymq_bridge_buffered", "entries waiting to be sent",
          w->waiting.count + w->lost.count);
    gauge(out, "relaymq_bridge_inflight", "entries sent, Redis's answer awaited",
          w->inflight.count);
    gauge(out, "relaymq_bridge_buffered_bytes", "bytes held by waiting and in-flight entries",
          w->waiting.bytes + w->lost.bytes + w->inflight.bytes);
    gauge(out, "relaymq_bridge_buffer_limit", "most entries held (--bridge-buffer)",
          w->max_messages);
}
