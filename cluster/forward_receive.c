/* Node-to-node forwarding, the receiving side; see forwarder.h.
 *
 * The internal route checks the whole batch on the HTTP thread, then the
 * broker loop routes each frame locally (never forwarding it again) and
 * answers. Loop thread only, except the route's handler. */
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "broker/broker_api.h"
#include "cluster/forward_codec.h"
#include "cluster/forwarder_internal.h"
#include "cluster/redis_link.h"
#include "common/clock.h"
#include "http/http_server.h"

struct recv_job {
    struct http_job base;
    struct forwarder *f;
    const uint8_t *body; /* the deferred request's, valid until the reply */
    size_t len, pos, routed;
    uint64_t paused_since; /* monotonic ms of the first pause, 0 = never paused */
    bool check_next;       /* look before routing the next frame (after a pause) */
    struct event *resume;
};

static void
recv_destroy(struct http_job *base)
{
    struct recv_job *job = (struct recv_job *)base;
    if (job->resume)
        event_free(job->resume);
    free(job);
}

/* Routes one frame: to the local subscribers, or to one session. */
void
deliver_frame(struct forwarder *f, const struct forward_frame *fr, bool *backed_up)
{
    *backed_up = false;
    if (!fr->target) {
        broker_api_route_remote(f->broker, fr->topic, fr->topic_len, fr->payload,
                                fr->payload_len, fr->qos, fr->retain, backed_up);
        return;
    }
    if (fr->rescued) { /* target: routed-at time, then the dead node */
        char dead[256];
        size_t n = fr->target_len - FORWARD_RESCUE_TIME;
        uint64_t routed_ms = 0;
        for (unsigned i = 0; i < FORWARD_RESCUE_TIME; i++)
            routed_ms = routed_ms << 8 | (uint8_t)fr->target[i];
        if (n < sizeof(dead)) {
            memcpy(dead, fr->target + FORWARD_RESCUE_TIME, n);
            dead[n] = '\0';
            if (broker_api_route_rescued(f->broker, dead, routed_ms, fr->topic, fr->topic_len,
                                         fr->payload, fr->payload_len, fr->qos, fr->retain))
                f->rescued_in++;
        }
        return;
    }
    if (fr->group) {
        if (broker_api_deliver_group(f->broker, fr->target, fr->target_len, fr->topic,
                                     fr->topic_len, fr->payload, fr->payload_len, fr->qos,
                                     false) == RMQ_OK)
            f->shared_in++;
        else
            f->shared_lost++; /* the group's last member here left meanwhile */
        return;
    }
    char client_id[65536];
    memcpy(client_id, fr->target, fr->target_len);
    client_id[fr->target_len] = '\0';
    if (broker_api_deliver_session(f->broker, client_id, fr->topic, fr->topic_len, fr->payload,
                                   fr->payload_len, fr->qos, fr->retain) == RMQ_OK)
        f->redirects_in++;
}

static void
recv_reply(struct recv_job *job)
{
    job->f->recv_msgs += job->routed;
    job->f->recv_batches++;
    http_job_reply_json(&job->base, 200,
                        json_pack("{s:I}", "messages", (json_int_t)job->routed));
}

/* The barrier's answer: every session write the batch caused is in Redis
 * (they went first on the same connection). */
static void
on_barrier(struct redisReply *reply, void *arg)
{
    struct recv_job *job = arg;
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        job->f->barriers_failed++;
    recv_reply(job);
}

/* Durable: the sender forgets a batch once answered, so the answer waits
 * until Redis has the persistent sessions' copies of what it delivered.
 * Without Redis there is nothing to wait for (counted). */
static void
recv_answer(struct recv_job *job)
{
    static const char *ping[] = {"PING"};
    if (job->f->cfg->durable &&
        redis_link_argv(job->f->link, on_barrier, job, 1, ping, NULL) == RMQ_OK)
        return;
    if (job->f->cfg->durable)
        job->f->barriers_failed++;
    recv_reply(job);
}

static void recv_run(struct http_job *base);

static void
on_recv_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    recv_run(arg);
}

/* Routes the batch's frames; before a frame that would go to a backed-up
 * local QoS 1/2 subscriber, pauses (the sender then waits for this answer
 * and pauses its own publishers), for at most max_stall_ms in all (kept
 * below the sender's request timeout, so a held batch is never re-sent). */
static void
recv_run(struct http_job *base)
{
    struct recv_job *job = (struct recv_job *)base;
    struct forwarder *f = job->f;
    uint64_t stall = f->cfg->max_stall_ms < MAX_HOLD_MS ? f->cfg->max_stall_ms : MAX_HOLD_MS;
    size_t pos = job->pos;
    struct forward_frame fr;
    bool backed_up = false, check = job->check_next;
    broker_api_now(f->broker); /* one clock reading for the frames routed now */
    while (forward_frame_next_trusted(job->body, job->len, &pos, &fr) == RMQ_OK) {
        /* Routing reports a subscriber past the mark; only then (and after a
         * pause) is the next frame's target looked at first. */
        bool held = job->paused_since && clock_monotonic_ms() - job->paused_since >= stall;
        /* (Rescued frames, rare, are always looked at: routing them does
         * not report.) */
        if ((check || fr.rescued) && !held && (!fr.target || fr.rescued) &&
            broker_api_remote_backed_up(f->broker, fr.topic, fr.topic_len, fr.qos)) {
            if (!job->paused_since)
                job->paused_since = clock_monotonic_ms();
            if (job->resume || (job->resume = evtimer_new(f->base, on_recv_resume, job))) {
                struct timeval tv = {0, RECV_PAUSE_MS * 1000};
                f->recv_pauses++;
                job->check_next = true;
                evtimer_add(job->resume, &tv);
                return; /* this frame is routed when the subscriber has room */
            }
        }
        deliver_frame(f, &fr, &backed_up);
        check = backed_up;
        job->pos = pos;
        job->routed++;
    }
    recv_answer(job);
}

/* HTTP thread: checks the whole batch before the loop sees it. */
void
handle_forward(struct http_request *req, void *ctx)
{
    (void)ctx;
    struct forwarder *f = http_request_route(req)->arg;
    size_t len, pos = 0;
    const uint8_t *body = (const uint8_t *)http_request_body(req, &len);
    struct forward_frame fr;
    enum rmq_status st;
    while ((st = forward_frame_next(body, len, &pos, &fr)) == RMQ_OK)
        ;
    if (st != RMQ_NOT_FOUND) {
        f->recv_bad++;
        http_reply_error(req, 400, "bad_batch", "malformed frame at byte %zu", pos);
        return;
    }
    struct recv_job *job = calloc(1, sizeof(*job));
    if (!job) {
        http_reply_error(req, 500, "internal", "out of memory");
        return;
    }
    job->f = f;
    job->body = body;
    job->len = len;
    http_job_post(broker_inbox(f->broker), req, &job->base, recv_run, recv_destroy);
}

const struct http_route *
forwarder_internal_routes(struct forwarder *f, size_t *count)
{
    *count = sizeof(f->http_routes) / sizeof(f->http_routes[0]);
    return f->http_routes;
}
