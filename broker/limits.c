/* Connection and publish limits of one broker loop.
 *
 * At accept: the node's --max-connections, the listener's max-connections=
 * and its max-connection-rate (a fixed one-second window) decide whether a
 * new socket is kept; a refused one is closed at once, before any MQTT
 * (counted; logged at most once a second so a flood cannot flood the log).
 *
 * Per client: two token buckets (PUBLISH packets and payload bytes), each
 * holding up to one second of its rate. A PUBLISH is always routed; when it
 * leaves a bucket in debt the client's input is paused until the debt is
 * repaid, so a fast publisher is slowed, never dropped, and other clients
 * are not held up. Tokens are kept x1000 so refills per millisecond stay
 * integers. Loop thread only. */
#include <stdlib.h>

#include "broker/broker_internal.h"
#include "common/log.h"

#define TOKEN 1000 /* one message or one byte, in bucket units */

static void
log_limited(struct broker *b, const struct listener_slot *l, const char *what)
{
    uint64_t now = broker_now(b);
    if (b->limit_log_ms && now - b->limit_log_ms < 1000)
        return;
    b->limit_log_ms = now;
    log_warn("listener %s: %s reached, closing new connections", l->address, what);
}

/* Counts this accept in the listener's current one-second window; false
 * if the window is already full. */
static bool
rate_allows(struct broker *b, struct listener_slot *l)
{
    uint64_t now = broker_now(b);
    if (now - l->rate_window_ms >= 1000 || l->rate_count == 0) {
        l->rate_window_ms = now;
        l->rate_count = 0;
    }
    if (l->rate_count >= l->spec.max_connection_rate)
        return false;
    l->rate_count++;
    return true;
}

bool
limits_admit(struct broker *b, struct listener_slot *l)
{
    uint32_t node_max = b->cfg->max_connections;
    if ((node_max && b->conn_count >= node_max) ||
        (l->spec.max_connections && l->conn_count >= l->spec.max_connections)) {
        b->metrics.connections_limited++;
        log_limited(b, l, "max-connections");
        return false;
    }
    if (l->spec.max_connection_rate && !rate_allows(b, l)) {
        b->metrics.connections_rate_limited++;
        log_limited(b, l, "max-connection-rate");
        return false;
    }
    return true;
}

void
limits_conn_opened(struct conn *c, const struct listener_slot *l)
{
    struct broker *b = c->broker;
    c->listener_idx = (size_t)(l - b->listeners) + 1;
    b->listeners[c->listener_idx - 1].conn_count++;
}

void
limits_conn_closed(struct conn *c)
{
    struct broker *b = c->broker;
    if (c->rate) {
        timer_entry_cancel(&c->rate->timer);
        free(c->rate);
        c->rate = NULL;
    }
    /* After broker_stop_listening the slots are gone: nothing to count. */
    if (c->listener_idx && c->listener_idx <= b->listener_count)
        b->listeners[c->listener_idx - 1].conn_count--;
    c->listener_idx = 0;
}

static void
on_rate_timer(struct timer_entry *entry, uint64_t now_ms)
{
    (void)now_ms;
    struct conn_rate *r = (struct conn_rate *)((char *)entry - offsetof(struct conn_rate, timer));
    struct conn *c = r->conn;
    c->rate_paused = false;
    if (!c->forward_paused) /* the forwarder resumes it when its buffer drains */
        conn_resume_input(c);
}

/* Adds what elapsed since the last refill, up to one second's worth. */
static int64_t
refill(int64_t tokens, uint64_t rate, uint64_t elapsed_ms)
{
    int64_t cap = (int64_t)(rate * TOKEN);
    if (!rate || tokens >= cap)
        return tokens;
    uint64_t room = (uint64_t)(cap - tokens);
    uint64_t add = elapsed_ms >= room / rate + 1 ? room : elapsed_ms * rate;
    return tokens + (int64_t)add;
}

/* Milliseconds until a bucket in debt is back at zero. */
static uint64_t
repay_ms(int64_t tokens, uint64_t rate)
{
    if (!rate || tokens >= 0)
        return 0;
    return ((uint64_t)-tokens + rate - 1) / rate;
}

void
limits_charge_publish(struct conn *c, size_t payload_len)
{
    struct broker *b = c->broker;
    uint64_t mrate = b->cfg->max_publish_rate, brate = b->cfg->max_publish_bytes_rate;
    if (!mrate && !brate)
        return;
    uint64_t now = broker_now(b);
    struct conn_rate *r = c->rate;
    if (!r) {
        if (!(r = malloc(sizeof(*r))))
            return; /* out of memory: this one goes through unlimited */
        *r = (struct conn_rate){.conn = c,
                                .refill_ms = now,
                                .msgs = (int64_t)(mrate * TOKEN),
                                .bytes = (int64_t)(brate * TOKEN)};
        timer_entry_init(&r->timer, on_rate_timer);
        c->rate = r;
    }
    uint64_t elapsed = now - r->refill_ms;
    r->refill_ms = now;
    r->msgs = refill(r->msgs, mrate, elapsed);
    r->bytes = refill(r->bytes, brate, elapsed);
    if (mrate)
        r->msgs -= TOKEN;
    if (brate)
        r->bytes -= (int64_t)((uint64_t)payload_len * TOKEN);
    uint64_t wait = repay_ms(r->msgs, mrate);
    uint64_t wait_bytes = repay_ms(r->bytes, brate);
    if (wait_bytes > wait)
        wait = wait_bytes;
    if (!wait || c->rate_paused)
        return;
    c->rate_paused = true;
    b->metrics.publish_rate_limited++;
    conn_pause_input(c);
    timer_wheel_schedule(b->wheel, &r->timer, now + wait);
}
