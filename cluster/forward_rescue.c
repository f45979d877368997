/* Node-to-node forwarding, durable sessions: rescuing what a node that left
 * did not take; see forwarder.h.
 *
 * When a node leaves, the frames still waiting on its link are taken off
 * it into a struct rescue. After RESCUE_DELAY_MS, once survivors have
 * adopted its sessions, they are re-sent as rescued frames (stamped with
 * when they were routed, from the link's marks) to every node, and each
 * delivers them to the sessions restored from the dead node. Loop thread
 * only. */
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "broker/broker_api.h"
#include "cluster/forward_codec.h"
#include "cluster/forwarder_internal.h"
#include "cluster/routes.h"
#include "common/clock.h"
#include "common/hashmap.h"
#include "common/log.h"

#define RESCUE_DELAY_MS 1500 /* a dead node's sessions are restored well within this */

/* What was waiting for a node that left, re-sent as rescued frames once
 * its sessions have been restored elsewhere. */
struct rescue {
    struct forwarder *f;
    struct rescue *next;
    struct event *timer;
    uint8_t *buf;
    size_t len, pos, done;
    struct mark *marks; /* offsets into buf */
    size_t mark_count, mark_at;
    uint64_t paused_since; /* monotonic ms, 0 = not waiting */
    char node[];
};

static void
rescue_free(struct rescue *r)
{
    if (r->timer)
        event_free(r->timer);
    free(r->buf);
    free(r->marks);
    free(r);
}

/* When the frame at off was routed (0 if unknown: the receivers then treat
 * it as older than any restore, and deliver it). */
static uint64_t
rescue_time(struct rescue *r, size_t off)
{
    while (r->mark_at + 1 < r->mark_count && r->marks[r->mark_at + 1].off <= off)
        r->mark_at++;
    return r->mark_count && r->marks[r->mark_at].off <= off ? r->marks[r->mark_at].ms : 0;
}

/* routes_node_fn: the current rescued frame to every other node. */
static void
append_rescued(void *arg, const char *node, const char *addr)
{
    struct forwarder *f = arg;
    append_to(f, node, addr);
    f->rescued_out++;
}

/* Re-sends one frame meant for the dead node: to the sessions restored
 * from it, wherever they are now (every node checks its own), or to
 * another member of its shared group. A redirect to one of its sessions
 * cannot be placed any more: counted as lost. */
static void
rescue_frame(struct forwarder *f, const char *dead, uint64_t routed_ms,
             const struct forward_frame *fr)
{
    if (fr->target && !fr->group) {
        f->rescue_lost++;
        return;
    }
    struct broker_message m = {.topic = fr->topic,
                               .topic_len = fr->topic_len,
                               .payload = fr->payload,
                               .payload_len = fr->payload_len,
                               .qos = fr->qos,
                               .retain = fr->retain};
    if (fr->group) {
        forward_shared(f, &m, fr->target, fr->target_len);
        return;
    }
    if (broker_api_route_rescued(f->broker, dead, routed_ms, fr->topic, fr->topic_len,
                                 fr->payload, fr->payload_len, fr->qos, fr->retain))
        f->rescued_in++;
    size_t n = strlen(dead);
    char target[FORWARD_RESCUE_TIME + 256];
    if (n >= sizeof(target) - FORWARD_RESCUE_TIME) {
        f->rescue_lost++;
        return;
    }
    for (unsigned i = 0; i < FORWARD_RESCUE_TIME; i++)
        target[i] = (char)(routed_ms >> (56 - 8 * i));
    memcpy(target + FORWARD_RESCUE_TIME, dead, n);
    struct forward_frame out = *fr;
    out.target = target;
    out.target_len = FORWARD_RESCUE_TIME + n;
    out.rescued = true;
    f->frame = &out;
    if (f->routes)
        routes_foreach_node(f->routes, append_rescued, f);
    f->frame = NULL;
}

/* Re-sends the rescue's frames. The sessions restored here take theirs
 * at once, so a local subscriber backed up past the publishers' pause mark
 * pauses the rescue (as a received batch pauses), for at most the
 * receivers' bound in all; other nodes pace their part themselves. */
static void
on_rescue(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct rescue *r = arg;
    struct forwarder *f = r->f;
    uint64_t stall = f->cfg->max_stall_ms < MAX_HOLD_MS ? f->cfg->max_stall_ms : MAX_HOLD_MS;
    size_t pos = r->pos;
    struct forward_frame fr;
    f->appended = false;
    while (forward_frame_next_trusted(r->buf, r->len, &pos, &fr) == RMQ_OK) {
        bool held = r->paused_since && clock_monotonic_ms() - r->paused_since >= stall;
        if (!held && !fr.target &&
            broker_api_remote_backed_up(f->broker, fr.topic, fr.topic_len, fr.qos)) {
            if (!r->paused_since)
                r->paused_since = clock_monotonic_ms();
            struct timeval tv = {0, RECV_PAUSE_MS * 1000};
            evtimer_add(r->timer, &tv);
            if (f->appended)
                schedule_flush(f);
            return;
        }
        rescue_frame(f, r->node, rescue_time(r, r->pos), &fr);
        r->pos = pos;
        r->done++;
        r->paused_since = 0;
    }
    log_info("forward: %zu message(s) that node %s did not take re-sent to its sessions' new "
             "nodes",
             r->done, r->node);
    if (f->appended)
        schedule_flush(f);
    struct rescue **pp = &f->rescues;
    while (*pp != r)
        pp = &(*pp)->next;
    *pp = r->next;
    rescue_free(r);
}

/* routes_on_node_left (durable): what was waiting for the node is taken
 * off its link and rescued after RESCUE_DELAY_MS, once survivors have
 * adopted its sessions and returning clients restored theirs. */
void
rescue_on_node_left(void *ctx, const char *node, uint64_t since_ms)
{
    (void)since_ms; /* what waits on the link was sent to whichever life */
    struct forwarder *f = ctx;
    struct link *l = hashmap_get(f->links, node, strlen(node));
    if (!l || l->head == l->len)
        return;
    size_t n = strlen(node) + 1, len = l->len - l->head;
    struct rescue *r = calloc(1, sizeof(*r) + n);
    if (r && (r->buf = malloc(len)) && (r->timer = evtimer_new(f->base, on_rescue, r))) {
        r->f = f;
        memcpy(r->node, node, n);
        memcpy(r->buf, l->buf + l->head, len);
        r->len = len;
        marks_forget(l, l->head, l->head);
        if (l->mark_count && (r->marks = malloc(l->mark_count * sizeof(*r->marks)))) {
            memcpy(r->marks, l->marks, l->mark_count * sizeof(*r->marks));
            r->mark_count = l->mark_count;
        }
        struct timeval tv = {RESCUE_DELAY_MS / 1000, (RESCUE_DELAY_MS % 1000) * 1000};
        evtimer_add(r->timer, &tv);
        r->next = f->rescues;
        f->rescues = r;
        log_info("forward: node %s left with %zu message(s) not taken; rescuing them in %d ms",
                 node, l->frames, RESCUE_DELAY_MS);
    } else {
        f->dropped_failed += l->frames;
        if (r)
            rescue_free(r);
    }
    /* Its stream (if any) goes; what it held is the rescue's now. */
    link_disconnect(l);
    evtimer_del(l->retry);
    l->seq_head += l->len - l->head;
    l->head = l->sent = l->len = 0;
    l->frames = 0;
    l->tries = 0;
    l->down = false;
    l->mark_count = 0;
    maybe_resume(f);
}

void
rescue_abandon_all(struct forwarder *f)
{
    while (f->rescues) {
        struct rescue *r = f->rescues;
        f->rescues = r->next;
        log_info("forward: rescue of node %s's messages abandoned at shutdown", r->node);
        rescue_free(r);
    }
}
