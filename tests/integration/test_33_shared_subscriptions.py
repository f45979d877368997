"""Shared subscriptions: "$share/{group}/{filter}" and "$queue/{filter}"
(a group of its own), standalone and across a cluster.

The contract under test:
  - each message matching a group's filter goes to exactly ONE member of
    that group, cluster-wide; the publishing node picks a member node in
    turn (round-robin among the nodes that have members, itself included)
    and that node picks one of its local members in turn (a connected one
    first); standalone, the node picks among its members in turn;
  - different groups on the same filter each get every message once, and an
    ordinary subscriber to the same filter gets every message too;
  - retained messages are not sent on the SUBACK of a shared subscription;
  - a clean-session member that disconnects with unacknowledged or queued
    QoS 1/2 messages of the group has them re-dispatched to another member
    that stayed on the same node (relaymq_shared_redispatched_total,
    $SYS/broker/metrics/shared_redispatched);
  - counters: relaymq_shared_deliveries_total, and
    relaymq_forward_shared_total{direction="out"|"in"|"lost"}.

One real Redis and three nodes n1..n3 (admin API key "k" for /metrics)
shared by the file; the standalone case starts its own harness.Broker.
Every group key is unique to its case (the publisher's turn counters are
kept per group key), so the splits are exact. Publishing is done with a
RawClient pipelined burst (paho's publish from the test thread can reorder),
ended by PINGREQ/PINGRESP so the node has routed them all.

Route replication is asynchronous: after the SUBACKs a case waits until the
group key is in every member node's P routes:{node} set, then 500 ms more
before publishing. Times are only generous upper bounds.
"""
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import cluster_harness as ch  # noqa: E402
from routing_harness import KEY, metrics, publish_all, raw_publisher  # noqa: E402

SETTLE_S = 0.5  # route replication after SUBACK, generously

SH_OUT = 'relaymq_forward_shared_total{direction="out"}'
SH_IN = 'relaymq_forward_shared_total{direction="in"}'
SH_LOST = 'relaymq_forward_shared_total{direction="lost"}'
SH_DELIV = "relaymq_shared_deliveries_total"
SH_REDISP = "relaymq_shared_redispatched_total"

REDIS = None
CL = None
EV = None
cases, case = ch.case_list()


# --------------------------------------------------------------------------
# helpers


def snap(nodes, samples=(SH_OUT, SH_IN, SH_LOST, SH_DELIV, SH_REDISP)):
    """{node_id: {sample: int}} for the shared-subscription counters."""
    out = {}
    for n in nodes:
        m = metrics(n)
        for s in samples:
            h.check(s in m, "no sample %s in /metrics of %s" % (s, n.node_id))
        out[n.node_id] = {s: int(m[s]) for s in samples}
    return out


def deltas(before, nodes):
    after = snap(nodes)
    return {nid: {s: after[nid][s] - v for s, v in vals.items()} for nid, vals in before.items()}


def routes_of(node_id):
    return REDIS.smembers("routes:" + node_id)


def wait_route(node_id, filt, present=True, timeout=h.WAIT):
    h.wait_until(lambda: (filt in routes_of(node_id)) == present, timeout, interval=0.05,
                 what="%r %s %sroutes:%s" % (filt, "in" if present else "gone from",
                                              ch.PREFIX, node_id))


def settle(key, node_ids):
    """The group key is in each member node's route set; then the documented
    replication window, generously."""
    for nid in sorted(set(node_ids)):
        wait_route(nid, key)
    time.sleep(SETTLE_S)


def member(node, key, qos=1, **kw):
    """A paho client (acknowledges everything) subscribed to key on node."""
    p = h.Paho(node.port, client_id=h.uid("m"), **kw)
    p.connect()
    granted = p.subscribe(key, qos)
    h.check_eq(granted, [qos], "SUBACK of %r on %s" % (key, getattr(node, "node_id", "")))
    p.node_id = getattr(node, "node_id", "standalone")
    return p


def payloads(n, tag):
    return ["%s-%04d" % (tag, i) for i in range(n)]


def collect(subs, total, what, timeout=30, quiet=h.QUIET):
    """Reads every sub's queue until `total` messages came in all together,
    then watches `quiet` seconds more for extra ones. Returns
    {sub: [Message]} (the extras included, so duplicates show)."""
    got = {s: [] for s in subs}
    deadline = time.monotonic() + timeout
    while sum(len(v) for v in got.values()) < total:
        progressed = False
        for s in subs:
            while not s.messages.empty():
                got[s].append(s.messages.get_nowait())
                progressed = True
        if time.monotonic() >= deadline:
            raise AssertionError("%s: %d of %d messages within %.0fs (per member %s)"
                                 % (what, sum(len(v) for v in got.values()), total, timeout,
                                    counts(got)))
        if not progressed:
            time.sleep(0.02)
    time.sleep(quiet)
    for s in subs:
        got[s] += s.drain(0.05)
    return got


def counts(got):
    return {"%s/%s" % (getattr(s, "node_id", "?"), s.client_id): len(v) for s, v in got.items()}


def check_exactly_once(got, want_payloads, what, qos=None):
    """Across all members of one group: each wanted payload exactly once."""
    seen = [m.payload.decode() for msgs in got.values() for m in msgs]
    dups = sorted({p for p in seen if seen.count(p) > 1})
    missing = sorted(set(want_payloads) - set(seen))
    extra = sorted(set(seen) - set(want_payloads))
    if dups or missing or extra or len(seen) != len(want_payloads):
        raise AssertionError("%s: %d received for %d sent; duplicates %s; missing %s; "
                             "unexpected %s; per member %s"
                             % (what, len(seen), len(want_payloads), dups[:20], missing[:20],
                                extra[:20], counts(got)))
    flagged = [m for msgs in got.values() for m in msgs if m.retain]
    h.check(not flagged, "%s: deliveries with RETAIN set: %r" % (what, flagged[:3]))
    if qos is not None:
        wrong = [m for msgs in got.values() for m in msgs if m.qos != qos]
        h.check(not wrong, "%s: deliveries not at QoS %d: %r" % (what, qos, wrong[:3]))


def per_node(got):
    out = {}
    for s, msgs in got.items():
        out[s.node_id] = out.get(s.node_id, 0) + len(msgs)
    return out


# --------------------------------------------------------------------------
# 1. standalone


@case
def standalone_group_round_robin_other_group_and_plain_subscriber():
    tag = h.uid("sa")
    filt = tag + "/#"
    topic = tag + "/t"
    g1, g2 = "$share/g1/" + filt, "$share/g2/" + filt
    n = 100
    with h.Broker(log_level="info") as b:
        subs = []
        pub = None
        try:
            # A retained message under the filter before anyone subscribes.
            rp = h.raw_connected(b.port)
            rp.publish(tag + "/r", b"kept", 1, retain=True)
            rp.disconnect()
            plain = member(b, filt, 1)
            subs.append(plain)
            m = plain.get()
            h.check((m.topic, m.payload, m.retain) == (tag + "/r", b"kept", True),
                    "retained message to the ordinary subscriber: %r" % m)
            a1, a2 = member(b, g1, 1), member(b, g1, 1)
            c1, c2, c3 = member(b, g2, 1), member(b, g2, 1), member(b, g2, 1)
            subs += [a1, a2, c1, c2, c3]
            for s in (a1, a2, c1, c2, c3):
                s.expect_nothing(0.3, what="retained message on the SUBACK of a shared "
                                 "subscription (none match the $share string)")
            met = b.metrics()
            deliv0 = met.fresh("shared_deliveries")
            pub = raw_publisher(b)
            want = payloads(n, "s")
            publish_all(pub, [(topic, p) for p in want], 1)
            got1 = collect([a1, a2], n, "group g1")
            got2 = collect([c1, c2, c3], n, "group g2", quiet=0.1)
            check_exactly_once(got1, want, "group g1 (2 members)", qos=1)
            check_exactly_once(got2, want, "group g2 (3 members)", qos=1)
            h.check_eq(sorted(len(v) for v in got1.values()), [50, 50],
                       "g1 split between its 2 members (round-robin)")
            h.check_eq(sorted(len(v) for v in got2.values()), [33, 33, 34],
                       "g2 split between its 3 members (round-robin)")
            plain_got = [m.payload.decode() for m in plain.take(n, 30)]
            h.check_eq(plain_got, want, "the ordinary subscriber's messages, in order")
            plain.expect_nothing(0.2, what="a duplicate to the ordinary subscriber")
            met.expect_increase("shared_deliveries", deliv0, by=2 * n)
            h.check_eq(met.fresh("shared_deliveries"), deliv0 + 2 * n,
                       "$SYS/broker/metrics/shared_deliveries after 2 groups x %d" % n)
        finally:
            ch.stop_quietly(pub, *subs)
    return "g1 %s g2 %s" % (sorted(len(v) for v in got1.values()),
                            sorted(len(v) for v in got2.values()))


# --------------------------------------------------------------------------
# 2. across the cluster: one member node per message, in turn


@case
def cluster_group_exactly_once_split_by_node_in_turn():
    n1, n2, n3 = CL.node("n1"), CL.node("n2"), CL.node("n3")
    tag = h.uid("cl")
    key = "$share/grp/%s/+" % tag
    topic = tag + "/x"
    n = 90
    subs, pub = [], None
    try:
        m1 = member(n1, key)
        m2a, m2b = member(n2, key), member(n2, key)
        m3 = member(n3, key)
        subs = [m1, m2a, m2b, m3]
        settle(key, ["n1", "n2", "n3"])
        before = snap(CL.nodes)
        pub = raw_publisher(n1)
        want = payloads(n, "c")
        publish_all(pub, [(topic, p) for p in want], 1)
        got = collect(subs, n, "group across 3 nodes")
        check_exactly_once(got, want, "group across 3 nodes", qos=1)
        h.check_eq(per_node(got), {"n1": 30, "n2": 30, "n3": 30}, "messages per member node")
        h.check_eq(sorted([len(got[m2a]), len(got[m2b])]), [15, 15],
                   "n2's 30 split between its two members")
        d = deltas(before, CL.nodes)
        h.check_eq(d["n1"][SH_OUT], 60, "n1 %s" % SH_OUT)
        h.check_eq(d["n1"][SH_DELIV], 30, "n1 %s" % SH_DELIV)
        for nid in ("n2", "n3"):
            h.check_eq(d[nid][SH_IN], 30, "%s %s" % (nid, SH_IN))
            h.check_eq(d[nid][SH_DELIV], 30, "%s %s" % (nid, SH_DELIV))
            h.check_eq(d[nid][SH_OUT], 0, "%s %s (it published nothing)" % (nid, SH_OUT))
        for nid in ("n1", "n2", "n3"):
            h.check_eq(d[nid][SH_LOST], 0, "%s %s" % (nid, SH_LOST))
    finally:
        ch.stop_quietly(pub, *subs)
    return "per member %s" % sorted(len(v) for v in got.values())


# --------------------------------------------------------------------------
# 3. $queue/{filter}


@case
def queue_subscription_across_two_nodes_exactly_once():
    n1, n2, n3 = CL.node("n1"), CL.node("n2"), CL.node("n3")
    tag = h.uid("q")
    key = "$queue/%s/#" % tag
    n = 40
    subs, pub = [], None
    try:
        subs = [member(n2, key), member(n3, key)]
        settle(key, ["n2", "n3"])
        before = snap(CL.nodes)
        pub = raw_publisher(n1)
        want = payloads(n, "q")
        publish_all(pub, [("%s/a/%d" % (tag, i % 3), p) for i, p in enumerate(want)], 1)
        got = collect(subs, n, "$queue across n2 and n3")
        check_exactly_once(got, want, "$queue across n2 and n3", qos=1)
        h.check_eq(per_node(got), {"n2": 20, "n3": 20}, "messages per member node")
        d = deltas(before, CL.nodes)
        h.check_eq(d["n1"][SH_OUT], n, "n1 %s" % SH_OUT)
        h.check_eq(d["n1"][SH_DELIV], 0, "n1 %s (no member there)" % SH_DELIV)
    finally:
        ch.stop_quietly(pub, *subs)


# --------------------------------------------------------------------------
# 4. a member leaves with messages in flight: re-dispatched on its node


@case
def leaving_member_messages_redispatched_to_member_on_same_node():
    n1, n2, n3 = CL.node("n1"), CL.node("n2"), CL.node("n3")
    tag = h.uid("rd")
    key = "$share/rd/%s" % (tag + "/t")
    topic = tag + "/t"
    n = 60
    subs, pub, leaver = [], None, None
    try:
        m1 = member(n1, key)
        leaver = h.RawClient(n2.port)
        leaver.connect(h.uid("lv"), clean=True)
        h.check_eq(leaver.subscribe([(key, 1)]), [1], "leaver's SUBACK")
        stayer = member(n2, key)
        m3 = member(n3, key)
        subs = [m1, stayer, m3]
        settle(key, ["n1", "n2", "n3"])
        met2 = n2.metrics()
        sys0 = met2.fresh("shared_redispatched")
        before = snap(CL.nodes)
        pub = raw_publisher(n1)
        want = payloads(n, "r")
        publish_all(pub, [(topic, p) for p in want], 1)
        # n2 gets 20 (one node in three), 10 per member; the leaver holds its
        # 10 unacknowledged (max-inflight is 20).
        held = []
        while len(held) < 10:
            p = leaver.recv_publish(timeout=15, ack=False)
            held.append(p.payload.decode())
        leaver.expect_nothing(0.3, what="the leaver's 11th message")
        first = collect(subs, n - 10, "the members that stay, before the leave", quiet=0.3)
        h.check_eq(per_node(first), {"n1": 20, "n2": 10, "n3": 20},
                   "messages per member node before the leave (leaver holds 10)")
        # The leaver disconnects without acknowledging anything.
        leaver.disconnect()
        redo = collect([stayer], 10, "re-dispatched messages to the member on n2")
        got = {s: first[s] + (redo[s] if s is stayer else []) for s in subs}
        check_exactly_once(got, want, "group after the leave (leaver excluded)")
        redone = sorted(m.payload.decode() for m in redo[stayer])
        h.check_eq(redone, sorted(held), "the messages re-dispatched to the member on n2")
        d = deltas(before, CL.nodes)
        h.check_eq(d["n2"][SH_REDISP], 10, "n2 %s" % SH_REDISP)
        for nid in ("n1", "n3"):
            h.check_eq(d[nid][SH_REDISP], 0, "%s %s" % (nid, SH_REDISP))
        met2.expect_increase("shared_redispatched", sys0, by=10)
        h.check_eq(met2.fresh("shared_redispatched"), sys0 + 10,
                   "$SYS/broker/metrics/shared_redispatched on n2")
        # The group still works with the leaver gone: n2's turn goes to the stayer.
        more = payloads(30, "after")
        publish_all(pub, [(topic, p) for p in more], 1)
        got = collect(subs, 30, "after the leave")
        check_exactly_once(got, more, "after the leave")
        h.check_eq(per_node(got), {"n1": 10, "n2": 10, "n3": 10}, "per member node after")
    finally:
        ch.stop_quietly(pub, leaver, *subs)
        for n in (n2,):
            if n._metrics is not None:
                n._metrics.close()
                n._metrics = None


# --------------------------------------------------------------------------
# 5. members unsubscribe: their node is no longer picked


@case
def node_whose_members_all_unsubscribed_gets_no_more():
    n1, n2, n3 = CL.node("n1"), CL.node("n2"), CL.node("n3")
    tag = h.uid("us")
    key = "$share/us/%s/+" % tag
    topic = tag + "/t"
    subs, pub = [], None
    try:
        m1, m2 = member(n1, key), member(n2, key)
        m3a, m3b = member(n3, key), member(n3, key)
        subs = [m1, m2, m3a, m3b]
        settle(key, ["n1", "n2", "n3"])
        pub = raw_publisher(n1)
        want = payloads(30, "u")
        publish_all(pub, [(topic, p) for p in want], 1)
        got = collect(subs, 30, "before the unsubscribes")
        check_exactly_once(got, want, "before the unsubscribes")
        h.check_eq(per_node(got), {"n1": 10, "n2": 10, "n3": 10}, "per member node before")
        # One of n3's members leaves: n3 is still a member node.
        m3a.unsubscribe(key)
        time.sleep(SETTLE_S)
        h.check(key in routes_of("n3"), "the group left %sroutes:n3 while n3 still has a "
                "member" % ch.PREFIX)
        want = payloads(30, "v")
        publish_all(pub, [(topic, p) for p in want], 1)
        got = collect([m1, m2, m3b], 30, "after one of n3's members unsubscribed")
        check_exactly_once(got, want, "after one of n3's members unsubscribed")
        h.check_eq(per_node(got), {"n1": 10, "n2": 10, "n3": 10}, "per member node")
        m3a.expect_nothing(0.1, what="n3's unsubscribed member")
        # The last one on n3 leaves too.
        m3b.unsubscribe(key)
        wait_route("n3", key, present=False)
        time.sleep(SETTLE_S)
        before = snap(CL.nodes)
        want = payloads(40, "w")
        publish_all(pub, [(topic, p) for p in want], 1)
        got = collect([m1, m2], 40, "after every member on n3 unsubscribed")
        check_exactly_once(got, want, "after every member on n3 unsubscribed")
        h.check_eq(per_node(got), {"n1": 20, "n2": 20}, "per member node after")
        m3a.expect_nothing(0.1, what="n3's first unsubscribed member")
        m3b.expect_nothing(0.1, what="n3's second unsubscribed member")
        d = deltas(before, CL.nodes)
        h.check_eq(d["n1"][SH_OUT], 20, "n1 %s (to n2 only)" % SH_OUT)
        h.check_eq(d["n3"][SH_IN], 0, "n3 %s" % SH_IN)
        h.check_eq(d["n3"][SH_LOST], 0, "n3 %s (nothing was even sent)" % SH_LOST)
        h.check_eq(d["n3"][SH_DELIV], 0, "n3 %s" % SH_DELIV)
    finally:
        ch.stop_quietly(pub, *subs)


# --------------------------------------------------------------------------
# 6. QoS 0 and QoS 2


@case
def qos0_and_qos2_through_a_group_across_nodes_exactly_once():
    n1, n2, n3 = CL.node("n1"), CL.node("n2"), CL.node("n3")
    tag = h.uid("qq")
    key = "$share/qq/%s/#" % tag
    subs, pub = [], None
    try:
        subs = [member(n1, key, 2), member(n2, key, 2), member(n3, key, 2)]
        settle(key, ["n1", "n2", "n3"])
        pub = raw_publisher(n2)
        notes = []
        for qos in (0, 2):
            want = payloads(60, "q%d" % qos)
            publish_all(pub, [("%s/q%d" % (tag, qos), p) for p in want], qos)
            got = collect(subs, 60, "QoS %d through the group" % qos)
            check_exactly_once(got, want, "QoS %d through the group" % qos, qos=qos)
            h.check_eq(per_node(got), {"n1": 20, "n2": 20, "n3": 20},
                       "QoS %d per member node" % qos)
            dup = [m for msgs in got.values() for m in msgs if m.dup]
            h.check(not dup, "QoS %d deliveries with DUP set: %r" % (qos, dup[:3]))
            notes.append("q%d ok" % qos)
    finally:
        ch.stop_quietly(pub, *subs)
    return ", ".join(notes)


# --------------------------------------------------------------------------
# 7. clean shutdown


def stop_all():
    ch.stop_cluster(CL)
    h.check_eq(REDIS.cli("KEYS", ch.PREFIX + "routes:*"), [],
               "route sets left after every node stopped cleanly")


def bind(redis, events, cluster):
    global REDIS, EV, CL
    REDIS, EV, CL = redis, events, cluster


def main():
    return ch.run_suite(cases, ("every_node_exits_0_on_sigterm", stop_all), bind, api_key=KEY)


if __name__ == "__main__":
    sys.exit(main())
