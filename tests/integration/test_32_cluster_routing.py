"""Cross-node message routing (issue 6, first part): the replicated route
table (P routes:{node} sets, the P routes channel), forwarding over
node-to-node streams (POST /internal/v1/link, test_35), retained messages cluster-wide (the
P retained hash) and which $SYS topics travel. docs/cluster.md is the
contract under test.

One real Redis and three nodes n1..n3 (node TTL 3 s, admin API key "k" for
/metrics) shared by the file; the retained case restarts all three, the
join case adds n4, the crash cases add k1 and s1 and kill them with
SIGKILL, the back-pressure cases add q1 and q2 (--max-queued-messages 100,
--backpressure-timeout 30s), and one case restarts Redis empty.

Counts are exact: every subscriber gets each message once, in publish
order, at min(publish QoS, subscription QoS); forwarding counters on the
publisher's node and on the receivers grow by exactly one copy per node
(never one per subscriber). Times are only generous upper bounds.

Route replication is asynchronous (docs/cluster.md: "a subscription made on
node B is known to node A a few milliseconds later"). Before publishing,
cases wait until every node's replica holds every other node's filters
(relaymq_routes_remote_filters equals the sum of the other nodes' sets in
Redis); the late-subscriber case instead relies on the documented window
and gives it a 300 ms settle after SUBACK.

Every node started here must exit 0 on SIGTERM (sanitizer build); nodes
killed with SIGKILL on purpose are exempt.
"""
import os
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import cluster_harness as ch  # noqa: E402
import routing_harness as rh  # noqa: E402
from routing_harness import (  # noqa: E402
    KEY, OUT_SENT, OUT_FAILED, IN_ROUTED, FROM_PEERS, REMOTE_NODES, RETAINED_LOADED, metric,
    wait_metric, live_nodes, routes_of, wait_replicas, wait_route, subscriber, publisher,
    raw_publisher, publish_all, expect_messages, check_sequence, no_more, retained_field, barrier,
)

TTL_S = 3.0           # --node-ttl of every node here
REAP_SLACK_S = 12.0   # beyond the TTL, for dead-node detection on a busy machine
SETTLE_S = 0.3        # the documented route-replication window, generously
N = 200               # messages per QoS level in the ordering case

REDIS = None
CL = None
EV = None
cases, case = ch.case_list()


# --------------------------------------------------------------------------
# 1. ordering and exact counts at every QoS


@case
def remote_subscribers_get_every_message_once_in_order_at_each_qos():
    n1, n2, n3 = CL.node("n1"), CL.node("n2"), CL.node("n3")
    tag = h.uid("ord")
    topics = {q: "%s/q%d" % (tag, q) for q in (0, 1, 2)}
    subs = []
    pub = None
    try:
        # n2 subscribes at QoS 2, n3 at QoS 1: deliveries at min(pub, sub).
        for q, t in topics.items():
            subs.append((q, 2, subscriber(n2, t, 2)))
            subs.append((q, 1, subscriber(n3, t, 1)))
        wait_replicas()
        before = {n.node_id: (metric(n, OUT_SENT), metric(n, IN_ROUTED), metric(n, FROM_PEERS))
                  for n in (n1, n2, n3)}
        pub = raw_publisher(n1)
        for q, t in topics.items():
            publish_all(pub, [(t, "m%d-%04d" % (q, i)) for i in range(N)], q)
        for q, sq, s in subs:
            want = [(topics[q], ("m%d-%04d" % (q, i)).encode(), min(q, sq)) for i in range(N)]
            expect_messages(s, want, "QoS %d publish to a QoS %d subscriber on %s"
                            % (q, sq, s.node_id))
        no_more([s for _, _, s in subs], what="after %d messages per topic" % N)
        # One copy per node, not one per subscriber or per publish QoS flow step.
        total = 3 * N
        wait_metric(n1, OUT_SENT, before["n1"][0] + 2 * total, "n1 forwarded 2 x %d" % total)
        for n in (n2, n3):
            wait_metric(n, IN_ROUTED, before[n.node_id][1] + total,
                        "%s routed %d forwarded messages" % (n.node_id, total), quiet=0)
            h.check_eq(metric(n, FROM_PEERS), before[n.node_id][2] + total,
                       "%s %s" % (n.node_id, FROM_PEERS))
            h.check_eq(metric(n, OUT_SENT), before[n.node_id][0],
                       "%s forwarded messages it received from a peer" % n.node_id)
        h.check_eq(metric(n1, IN_ROUTED), before["n1"][1], "n1 got its own messages back")
    finally:
        ch.stop_quietly(pub, *[s for _, _, s in subs])


# --------------------------------------------------------------------------
# 2. wildcards, several subscribers per node, the publisher's own node


@case
def wildcards_match_remotely_and_each_node_gets_one_copy():
    n1, n2, n3 = CL.node("n1"), CL.node("n2"), CL.node("n3")
    tag = h.uid("wc")
    ab, xyz = "%s/a/b" % tag, "%s/x/y/z" % tag
    subs = {}
    pub = None
    try:
        subs["n2 +"] = subscriber(n2, "%s/+/b" % tag, 1)      # ab only
        subs["n2 #"] = subscriber(n2, "%s/#" % tag, 1)        # both
        subs["n3 +/+"] = subscriber(n3, "%s/+/y/+" % tag, 2)  # xyz only
        subs["n1 local"] = subscriber(n1, ab, 1)               # ab, on the publisher's node
        wait_replicas()
        before = {n.node_id: (metric(n, OUT_SENT), metric(n, IN_ROUTED)) for n in (n1, n2, n3)}
        pub = raw_publisher(n1)
        k = 50
        items = []
        for i in range(k):
            items += [(ab, "ab-%03d" % i), (xyz, "xyz-%03d" % i)]
        publish_all(pub, items, 1)
        want_ab = [(ab, ("ab-%03d" % i).encode(), 1) for i in range(k)]
        want_xyz = [(xyz, ("xyz-%03d" % i).encode(), 1) for i in range(k)]
        expect_messages(subs["n2 +"], want_ab, "n2 subscriber to +/b")
        expect_messages(subs["n2 #"], [(t, p.encode(), 1) for t, p in items], "n2 subscriber to #")
        expect_messages(subs["n3 +/+"], want_xyz, "n3 subscriber to +/y/+")
        expect_messages(subs["n1 local"], want_ab, "subscriber on the publisher's node n1")
        no_more(subs.values())
        # n2 gets each message once although two of its subscribers match it;
        # n3 only the topic its filter matches.
        wait_metric(n1, OUT_SENT, before["n1"][0] + 2 * k + k,
                    "n1 forwarded ab to n2 and xyz to n2 and n3")
        h.check_eq(metric(n2, IN_ROUTED) - before["n2"][1], 2 * k, "messages routed in on n2")
        h.check_eq(metric(n3, IN_ROUTED) - before["n3"][1], k, "messages routed in on n3")
        h.check_eq(metric(n1, IN_ROUTED) - before["n1"][1], 0, "messages routed in on n1")
    finally:
        ch.stop_quietly(pub, *subs.values())


# --------------------------------------------------------------------------
# 3. route changes


@case
def unsubscribed_node_is_no_longer_sent_messages():
    n1, n2 = CL.node("n1"), CL.node("n2")
    topic = h.uid("rc") + "/t"
    s1 = s2 = pub = None
    try:
        s1 = subscriber(n2, topic, 1)
        s2 = subscriber(n2, topic, 1)
        wait_route("n2", topic)
        wait_replicas()
        pub = raw_publisher(n1)
        sent0 = metric(n1, OUT_SENT)
        publish_all(pub, [(topic, "a%d" % i) for i in range(10)], 1)
        want = [(topic, ("a%d" % i).encode(), 1) for i in range(10)]
        expect_messages(s1, want, "first subscriber on n2")
        expect_messages(s2, want, "second subscriber on n2")
        wait_metric(n1, OUT_SENT, sent0 + 10, "n1 forwarded 10 (one copy for two subscribers)")
        # One of two subscribers leaves: the route stays, the other still gets them.
        s1.unsubscribe(topic)
        time.sleep(SETTLE_S)
        h.check(topic in routes_of("n2"), "the filter left %sroutes:n2 while a second "
                "subscriber on n2 still holds it" % ch.PREFIX)
        publish_all(pub, [(topic, "b%d" % i) for i in range(10)], 1)
        expect_messages(s2, [(topic, ("b%d" % i).encode(), 1) for i in range(10)],
                        "remaining subscriber on n2")
        wait_metric(n1, OUT_SENT, sent0 + 20, "n1 forwarded 10 more")
        # The last one leaves (its connection closes): the route goes.
        s2.disconnect()
        wait_route("n2", topic, present=False)
        wait_replicas()
        in0 = metric(n2, IN_ROUTED)
        publish_all(pub, [(topic, "c%d" % i) for i in range(20)], 1)
        time.sleep(1.0)
        h.check_eq(metric(n1, OUT_SENT), sent0 + 20,
                   "n1 forward counter after publishing with no remote subscriber")
        h.check_eq(metric(n2, IN_ROUTED), in0, "messages routed in on n2 with no subscriber")
        s1.expect_nothing(what="the unsubscribed client on n2")
    finally:
        ch.stop_quietly(pub, s1, s2)


@case
def late_subscriber_gets_everything_published_after_suback_and_settle():
    # A publisher on n1 runs throughout; a subscriber on n3 subscribes while
    # it does. Route replication is asynchronous (a few ms, documented), so
    # messages published in the first moments may or may not reach it; every
    # message published from SUBACK + 300 ms on must, once, in order.
    n1, n3 = CL.node("n1"), CL.node("n3")
    topic = h.uid("late") + "/t"
    state = {"next": 0, "stop": False, "error": None}
    pub = h.RawClient(n1.port)
    pub.connect(h.uid("lp"))
    late = None

    def run():
        try:
            pid = 1
            while not state["stop"]:
                seq = state["next"]
                pub.publish(topic, b"%06d" % seq, qos=1, pid=pid)
                state["next"] = seq + 1
                pid = pid % 65535 + 1
                time.sleep(0.005)
        except Exception as e:  # noqa: BLE001 - reported by the case
            state["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        h.wait_until(lambda: state["next"] > 30 or state["error"], what="the publisher running")
        late = subscriber(n3, topic, 1)
        time.sleep(SETTLE_S)
        first_due = state["next"]
        h.wait_until(lambda: state["next"] > first_due + 100 or state["error"],
                     what="100 more publishes")
        state["stop"] = True
        t.join(h.WAIT)
        h.check(state["error"] is None, "publisher failed: %r" % state["error"])
        last = state["next"] - 1
        got = [int(m.payload) for m in late.take(last - first_due + 1, 30)]
        got += [int(m.payload) for m in late.drain(h.QUIET)]
        h.check(got, "nothing received")
        h.check(got[0] <= first_due, "first message received %d, but %d was published after "
                "SUBACK + %.1fs" % (got[0], first_due, SETTLE_S))
        h.check_eq(got, list(range(got[0], last + 1)),
                   "sequence received on n3 (a gap-free, duplicate-free run to the last)")
        return "published %d, received from %d (due from %d)" % (last + 1, got[0], first_due)
    finally:
        state["stop"] = True
        t.join(h.WAIT)
        ch.stop_quietly(pub, late)


# --------------------------------------------------------------------------
# 4. retained messages cluster-wide


@case
def retained_is_cluster_wide_cleared_anywhere_and_survives_restart_of_all_nodes():
    tag = h.uid("ret")
    r1, r2, r3 = "%s/one" % tag, "%s/two" % tag, "%s/three" % tag
    bar = "%s/barrier" % tag
    clients = []
    try:
        n1, n2, n3 = CL.node("n1"), CL.node("n2"), CL.node("n3")
        bars = {n.node_id: subscriber(n, bar, 1) for n in (n1, n2, n3)}
        clients += bars.values()
        wait_replicas()
        p1, p2 = publisher(n1), publisher(n2)
        clients += [p1, p2]
        # Published on n1 (nobody subscribes to it but "live" on n3): every node keeps it.
        live = subscriber(n3, r1, 2)
        clients.append(live)
        wait_replicas()
        p1.publish(r1, "keep-1", 1, retain=True)
        barrier(p1, bars.values(), bar, "after-r1")
        m = live.get()
        h.check_eq((m.topic, m.payload, m.qos, m.retain), (r1, b"keep-1", 1, False),
                   "retained publish delivered to an established subscription on n3 "
                   "(RETAIN is off on such deliveries [MQTT-3.3.1-9])")
        h.check_eq(retained_field(r1), "1keep-1", "%sretained field %s" % (ch.PREFIX, r1))
        for n in (n3, n2, n1):
            s = subscriber(n, "%s/#" % tag, 2)
            clients.append(s)
            m = s.get()
            h.check_eq((m.topic, m.payload, m.qos, m.retain), (r1, b"keep-1", 1, True),
                       "retained message for a new subscriber on %s" % n.node_id)
            s.expect_nothing(timeout=0.3, what="a second retained message on %s" % n.node_id)
            s.disconnect()
        # An empty retained publish on n2 clears it on every node and in Redis.
        p2.publish(r1, b"", 1, retain=True)
        barrier(p2, bars.values(), bar, "after-clear")
        # The zero-byte retained message is delivered like any other [MQTT-3.3.1-10].
        m = live.get()
        h.check_eq((m.topic, m.payload, m.qos, m.retain), (r1, b"", 1, False),
                   "empty retained publish of n2 delivered to the established "
                   "subscription on n3")
        live.disconnect()
        h.check_eq(retained_field(r1), None, "%sretained field %s after the clear"
                   % (ch.PREFIX, r1))
        fresh = [subscriber(n, r1, 1) for n in (n1, n2, n3)]
        clients += fresh
        no_more(fresh, what="retained %s after an empty retained publish on n2" % r1)
        # Two more, then every node stops (SIGTERM) and starts again.
        p1.publish(r2, "two\tpayload with spaces", 2, retain=True)
        p2.publish(r3, "three", 0, retain=True)
        barrier(p1, bars.values(), bar, "after-r2")
        barrier(p2, bars.values(), bar, "after-r3")
        h.check_eq(retained_field(r2), "2two\tpayload with spaces", "Redis field of %s" % r2)
        h.check_eq(retained_field(r3), "0three", "Redis field of %s" % r3)
        ch.stop_quietly(*clients)
        clients = []
        errors = CL.stop()
        h.check(not errors, "nodes did not exit 0 on SIGTERM: %s" % errors)
        h.check_eq(REDIS.cli("KEYS", ch.PREFIX + "routes:*"), [],
                   "route sets left after every node stopped cleanly")
        for i, n in enumerate(CL.nodes):
            n.remove_files()
            CL.nodes[i] = n.restarted()
        for n in CL.nodes:
            n.start()
        stored = REDIS.cli("HLEN", ch.PREFIX + "retained")
        h.check(stored >= 2, "%sretained has %d fields" % (ch.PREFIX, stored))
        # Loading the hash is asynchronous to accepting clients: wait for it.
        for n in CL.nodes:
            wait_metric(n, RETAINED_LOADED, stored, "%s loaded the retained hash" % n.node_id,
                        quiet=0)
        for n in CL.nodes:
            s = subscriber(n, "%s/#" % tag, 2)
            clients.append(s)
            got = sorted((m.topic, m.payload, m.qos, m.retain) for m in s.take(2))
            h.check_eq(got, sorted([(r2, b"two\tpayload with spaces", 2, True),
                                    (r3, b"three", 0, True)]),
                       "retained messages on the restarted %s" % n.node_id)
        no_more(clients, what="retained messages after the restart")
    finally:
        ch.stop_quietly(*clients)


# --------------------------------------------------------------------------
# 5. a node joining later


@case
def joining_node_gets_the_whole_route_table_and_the_retained_messages():
    n1, n2 = CL.node("n1"), CL.node("n2")
    tag = h.uid("join")
    topic = "%s/t" % tag
    n4 = None
    clients = []
    ok = False
    try:
        old = subscriber(n1, topic, 1)
        clients.append(old)
        wait_route("n1", topic)
        n4 = ch.Node("n4", REDIS, api_key=KEY).start()
        # The full table: n4's replica holds every filter of n1..n3.
        wait_replicas(live_nodes() + [n4])
        h.check_eq(metric(n4, REMOTE_NODES), 3, "other nodes in n4's route table")
        for n in CL.nodes:
            h.check_eq(metric(n, REMOTE_NODES), 3, "other nodes in %s's route table"
                       % n.node_id)
        pub = raw_publisher(n4)
        clients.append(pub)
        publish_all(pub, [(topic, "from-n4-%02d" % i) for i in range(20)], 1)
        expect_messages(old, [(topic, ("from-n4-%02d" % i).encode(), 1) for i in range(20)],
                        "subscriber on n1 (existed before n4 joined)")
        # The other way: n4's routes reach the old nodes.
        back = subscriber(n4, "%s/back" % tag, 2)
        clients.append(back)
        wait_replicas(live_nodes() + [n4])
        p2 = raw_publisher(n2)
        clients.append(p2)
        publish_all(p2, [("%s/back" % tag, "b%d" % i) for i in range(10)], 2)
        expect_messages(back, [("%s/back" % tag, ("b%d" % i).encode(), 2) for i in range(10)],
                        "subscriber on n4, publisher on n2")
        no_more([old, back])
        # The retained messages of the cluster were loaded from Redis.
        stored = REDIS.cli("HLEN", ch.PREFIX + "retained")
        wait_metric(n4, RETAINED_LOADED, stored, "n4 loaded the retained hash", quiet=0)
        ch.stop_quietly(*clients)
        clients = []
        n4.stop()
        h.check(not REDIS.exists("routes:n4"), "%sroutes:n4 left after n4 stopped"
                % ch.PREFIX)
        for n in CL.nodes:
            h.wait_until(lambda: metric(n, REMOTE_NODES) == 2, h.WAIT, interval=0.1,
                         what="%s to drop the stopped n4 from its route table" % n.node_id)
        wait_replicas()
        ok = True
    finally:
        ch.stop_quietly(*clients)
        if n4 is not None:
            if not ok:
                n4.show_log("node n4")
            n4.kill()
            if ok:
                n4.remove_files()


# --------------------------------------------------------------------------
# 6. a node killed with SIGKILL


@case
def killed_node_routes_are_dropped_after_reaping_and_survivors_keep_routing():
    n1, n2 = CL.node("n1"), CL.node("n2")
    topic = h.uid("k9") + "/t"
    k1 = ch.Node("k1", REDIS, api_key=KEY).start()
    clients = []
    try:
        on_k1 = subscriber(k1, topic, 1)
        on_n2 = subscriber(n2, topic, 1)
        clients += [on_k1, on_n2]
        wait_route("k1", topic)
        wait_replicas(live_nodes() + [k1])
        pub = raw_publisher(n1)
        clients.append(pub)
        sent0 = metric(n1, OUT_SENT)
        publish_all(pub, [(topic, "before-%d" % i) for i in range(5)], 1)
        for s in (on_k1, on_n2):
            expect_messages(s, [(topic, ("before-%d" % i).encode(), 1) for i in range(5)],
                            "subscriber on %s before the kill" % s.node_id)
        wait_metric(n1, OUT_SENT, sent0 + 10, "n1 forwarded 5 to k1 and 5 to n2", quiet=0)
        t0 = time.monotonic()
        k1.kill9()
        ch.stop_quietly(on_k1)
        h.wait_until(lambda: not REDIS.exists("routes:k1") and "k1" not in REDIS.smembers("nodes"),
                     TTL_S + REAP_SLACK_S, interval=0.2,
                     what="%sroutes:k1 and k1's node-set entry removed by the reaper" % ch.PREFIX)
        reaped = time.monotonic() - t0
        for n in CL.nodes:
            h.wait_until(lambda: metric(n, REMOTE_NODES) == 2, h.WAIT, interval=0.1,
                         what="%s to drop k1 from its route table" % n.node_id)
        wait_replicas()
        failed0 = metric(n1, OUT_FAILED)
        sent1 = metric(n1, OUT_SENT)
        publish_all(pub, [(topic, "after-%d" % i) for i in range(20)], 1)
        expect_messages(on_n2, [(topic, ("after-%d" % i).encode(), 1) for i in range(20)],
                        "subscriber on n2 after k1 was reaped")
        no_more([on_n2])
        wait_metric(n1, OUT_SENT, sent1 + 20, "n1 forwarded 20, to n2 only")
        h.check_eq(metric(n1, OUT_FAILED), failed0,
                   "n1 messages dropped for a failed link after k1 left the table")
        k1.remove_files()
        return "k1's routes gone %.1fs after kill -9" % reaped
    finally:
        ch.stop_quietly(*clients)
        k1.kill()


@case
def node_restarted_before_being_reaped_forgets_its_previous_routes():
    # s1 (node TTL 10 s, so no survivor reaps it) is killed and started
    # again at once: the filters of its previous life must leave Redis and
    # every replica; the new life's filters are routed.
    n1 = CL.node("n1")
    tag = h.uid("rs")
    t_old, t_new = tag + "/old", tag + "/new"
    s1 = ch.Node("s1", REDIS, api_key=KEY, node_ttl="10s").start()
    s1b = None
    clients = []
    try:
        old = subscriber(s1, t_old, 1)
        clients.append(old)
        wait_route("s1", t_old)
        wait_replicas(live_nodes() + [s1])
        s1.kill9()
        ch.stop_quietly(old)
        s1b = s1.restarted().start()
        fresh = subscriber(s1b, t_new, 1)
        clients.append(fresh)
        h.wait_until(lambda: routes_of("s1") == {t_new}, h.WAIT, interval=0.1,
                     what="%sroutes:s1 to hold only the new life's filter" % ch.PREFIX)
        wait_replicas(live_nodes() + [s1b])
        pub = raw_publisher(n1)
        clients.append(pub)
        sent0 = metric(n1, OUT_SENT)
        publish_all(pub, [(t, "x%d" % i) for i in range(5) for t in (t_old, t_new)], 1)
        expect_messages(fresh, [(t_new, ("x%d" % i).encode(), 1) for i in range(5)],
                        "subscriber on the restarted s1")
        no_more([fresh])
        wait_metric(n1, OUT_SENT, sent0 + 5, "n1 forwarded only the new filter's messages to s1")
    finally:
        ch.stop_quietly(*clients)
        if s1b is None:
            s1.kill()
        else:
            s1b.stop()
            s1b.remove_files()
            s1.remove_files()


# --------------------------------------------------------------------------
# 7. wills


@case
def will_of_a_client_on_n1_reaches_subscribers_on_every_node():
    n1, n2, n3 = CL.node("n1"), CL.node("n2"), CL.node("n3")
    tag = h.uid("will")
    wt, rt = "%s/dev/status" % tag, "%s/dev/last" % tag
    clients = []
    try:
        s2 = subscriber(n2, wt, 1)
        s3 = subscriber(n3, "%s/+/status" % tag, 2)
        s1 = subscriber(n1, "%s/#" % tag, 1)
        clients += [s1, s2, s3]
        wait_replicas()
        dying = h.Paho(n1.port, client_id=h.uid("wd"), will=(wt, "gone", 1, False))
        dying.connect()
        dying2 = h.Paho(n1.port, client_id=h.uid("wr"), will=(rt, "last-words", 2, True))
        dying2.connect()
        dying.abort()
        for s, what in ((s2, "n2"), (s3, "n3, wildcard"), (s1, "n1, the will's node")):
            m = s.get()
            h.check_eq((m.topic, m.payload, m.qos, m.retain), (wt, b"gone", 1, False),
                       "will on %s" % what)
        no_more(clients, what="after the will")
        # A retained will: every node keeps it.
        dying2.abort()
        m = s1.get()
        h.check_eq((m.topic, m.payload), (rt, b"last-words"), "retained will on n1")
        h.wait_until(lambda: retained_field(rt) == "2last-words", h.WAIT, interval=0.1,
                     what="the retained will in %sretained" % ch.PREFIX)
        no_more([s2, s3], what="retained will (no matching subscription there)")
        late = subscriber(n3, rt, 2)
        clients.append(late)
        m = late.get()
        h.check_eq((m.topic, m.payload, m.qos, m.retain), (rt, b"last-words", 2, True),
                   "retained will for a new subscriber on n3")
        p = publisher(n2)
        clients.append(p)
        p.publish(rt, b"", 1, retain=True)
        h.wait_until(lambda: retained_field(rt) is None, h.WAIT, interval=0.1,
                     what="the retained will cleared")
    finally:
        ch.stop_quietly(*clients)


# --------------------------------------------------------------------------
# batches: large and binary payloads


@case
def large_and_binary_payloads_cross_intact_and_in_order():
    # A frame larger than one 64 KiB batch goes alone; the small ones around
    # it must neither overtake it nor be lost.
    n1, n2 = CL.node("n1"), CL.node("n2")
    topic = h.uid("big") + "/\u00fcn\u00efc\u00f8de topic/x"
    sizes = [0, 1, 70000, 5, 65530, 200000, 3, 65536, 900000, 7]  # under --max-packet-size 1m
    payloads = [bytes(random_bytes(n, seed=i)) for i, n in enumerate(sizes)]
    sub = pub = None
    try:
        sub = subscriber(n2, topic, 1)
        wait_replicas()
        pub = raw_publisher(n1)
        publish_all(pub, [(topic, p) for p in payloads], 1)
        got = sub.take(len(payloads), 30)
        h.check_eq([len(m.payload) for m in got], sizes, "payload sizes received on n2")
        for i, (m, want) in enumerate(zip(got, payloads)):
            h.check(m.payload == want, "payload %d (%d bytes) altered on its way to n2"
                    % (i, len(want)))
            h.check_eq((m.topic, m.qos), (topic, 1), "topic and QoS of message %d" % i)
        no_more([sub])
    finally:
        ch.stop_quietly(pub, sub)


def random_bytes(n, seed):
    """n deterministic pseudo-random bytes, zeros and 0xff included."""
    out = bytearray(n)
    x = seed * 2654435761 + 1
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out[i] = (x >> 16) & 0xFF
    return out


# --------------------------------------------------------------------------
# back-pressure


def slow_remote_subscriber(node_id, hold_s, count=300, size=20000):
    """A publisher on n1, a QoS 1 subscriber on an extra node (node_id, with
    --max-queued-messages 100 and --backpressure-timeout 30s) that does not
    read. Once half its queue bound (50) is used, the node must hold the
    batch (its answer waits) while the subscriber stays backed up, up to
    30 s, "as it would pause a local publisher"; n1's backlog for it then
    passes 2 MiB and n1 pauses the publisher. The subscriber stays silent
    hold_s more seconds (well below 30 s), then reads: all `count` messages
    arrive in order, once, nothing is dropped, the publisher completes."""
    n1 = CL.node("n1")
    topic = h.uid("bp") + "/t"
    paused = 'relaymq_forward_batches_total{direction="in",outcome="paused"}'
    dropped = "relaymq_messages_dropped_total"
    q = ch.Node(node_id, REDIS, api_key=KEY, max_queued_messages=100,
                backpressure_timeout="30s").start()
    slow = pub = t = None
    result = {}
    ok = False
    try:
        slow = h.RawClient(q.port)
        slow.connect(h.uid("slow"))
        h.check_eq(slow.subscribe([(topic, 1)]), [1], "SUBACK of the slow subscriber")
        wait_replicas(live_nodes() + [q])
        pauses0 = metric(n1, "relaymq_forward_pauses_total")
        h.check_eq((metric(q, paused), metric(q, dropped)), (0, 0),
                   "%s paused batches and dropped messages at the start" % node_id)
        pub = raw_publisher(n1)
        items = [(topic, b"%05d" % i + b"." * (size - 5)) for i in range(count)]

        def run():
            try:
                publish_all(pub, items, 1)
                result["ok"] = True
            except Exception as e:  # noqa: BLE001 - reported by the case
                result["error"] = e
        t = threading.Thread(target=run, daemon=True)
        t.start()
        h.wait_until(lambda: metric(q, paused) > 0, h.WAIT, interval=0.05,
                     what="%s to pause a batch for its slow subscriber" % node_id)
        h.wait_until(lambda: metric(n1, "relaymq_forward_pauses_total") > pauses0,
                     h.WAIT, interval=0.05, what="n1 to pause its publisher")
        time.sleep(hold_s)
        held = {k: metric(q, k) for k in (IN_ROUTED, dropped, paused)}
        h.check_eq(held[dropped], 0, "messages %s dropped while it should hold the batch for "
                   "its backed-up subscriber (%d of %d routed in, %d pauses)"
                   % (node_id, held[IN_ROUTED], count, held[paused]))
        h.check("ok" not in result, "the publisher finished while n1 should have paused it")
        seqs = []
        for _ in range(count):
            p = slow.recv_publish(timeout=30)
            h.check_eq((p.topic, p.qos, len(p.payload)), (topic, 1, size),
                       "message %d to the slow subscriber" % len(seqs))
            seqs.append(int(p.payload[:5]))
        try:
            while True:  # anything beyond count (duplicates) is counted too
                seqs.append(int(slow.recv_publish(timeout=h.QUIET).payload[:5]))
        except AssertionError:
            pass
        t.join(30)
        h.check(result.get("ok"), "the publisher did not complete: %r" % result.get("error"))
        check_sequence(seqs, count, "sequence received by the slow subscriber")
        h.check_eq(metric(q, dropped), 0, "messages dropped on %s" % node_id)
        ok = True
        return "%d pauses on %s" % (metric(q, paused), node_id)
    finally:
        ch.stop_quietly(slow, pub)  # also unblocks a publisher stuck on a paused n1
        if not ok:
            q.show_log("node %s" % node_id)
        try:
            q.stop()
        finally:
            q.kill()
        if ok:
            q.remove_files()


@case
def backed_up_remote_subscriber_holds_the_batch_and_nothing_is_lost():
    return slow_remote_subscriber("q1", hold_s=1.0)


@case
def batch_held_longer_than_the_peer_request_timeout_is_not_delivered_twice():
    # The sender gives a peer request 5 s (http/peer_client.c); the receiver
    # may hold a batch for --backpressure-timeout (30 s here). A hold of 6 s
    # is normal operation (a slow subscriber), where docs/cluster.md promises
    # no duplicate: the sender must not re-send a batch the receiver is
    # still working through.
    return slow_remote_subscriber("q2", hold_s=6.0)


# --------------------------------------------------------------------------
# Redis restarting empty


@case
def routes_are_rewritten_when_redis_comes_back_empty():
    # Forwarding needs no Redis; route changes made while it is away are
    # local until it returns, then each node rewrites its set and the
    # replicas reload.
    n1, n2, n3 = CL.node("n1"), CL.node("n2"), CL.node("n3")
    tag = h.uid("rr")
    t_old, t_gone, t_new = tag + "/old", tag + "/gone", tag + "/new"
    clients = []
    try:
        s_old = subscriber(n2, t_old, 1)
        s_gone = subscriber(n2, t_gone, 1)
        clients += [s_old, s_gone]
        # More filters than one rewrite chunk (500) on n2.
        many = ["%s/many/%d/+" % (tag, i) for i in range(1200)]
        bulk = h.Paho(n2.port, client_id=h.uid("bulk"))
        bulk.connect()
        clients.append(bulk)
        h.check_eq(bulk.subscribe([(f, 0) for f in many]), [0] * len(many),
                   "SUBACK of %d filters" % len(many))
        wait_route("n2", t_gone)
        wait_replicas()
        want_n2 = {t_old, t_gone} | set(many)
        h.check_eq(routes_of("n2"), want_n2, "%sroutes:n2 before the outage" % ch.PREFIX)
        pub = raw_publisher(n1)
        clients.append(pub)
        lost = {n.node_id: n.log_text().count("connection lost") for n in CL.nodes}
        REDIS.kill()
        h.wait_until(lambda: all(n.log_text().count("connection lost") > lost[n.node_id]
                                 for n in CL.nodes), h.WAIT, interval=0.05,
                     what="every node to notice Redis is gone")
        publish_all(pub, [(t_old, "down-%d" % i) for i in range(5)], 1)
        expect_messages(s_old, [(t_old, ("down-%d" % i).encode(), 1) for i in range(5)],
                        "subscriber on n2 while Redis is down")
        s_new = subscriber(n3, t_new, 1)
        clients.append(s_new)
        s_gone.unsubscribe(t_gone)
        REDIS.start()
        h.wait_until(lambda: t_old in routes_of("n2") and t_gone not in routes_of("n2")
                     and t_new in routes_of("n3"), h.WAIT, interval=0.1,
                     what="n2 and n3 to rewrite their route sets")
        wait_replicas(timeout=15)
        h.check_eq(routes_of("n2"), want_n2 - {t_gone}, "%sroutes:n2 rewritten" % ch.PREFIX)
        h.check_eq((routes_of("n1"), routes_of("n3")), (set(), {t_new}),
                   "%sroutes:n1 and routes:n3 rewritten" % ch.PREFIX)
        probe = "%s/many/1199/x" % tag
        publish_all(pub, [(probe, "last-chunk")], 0)
        m = bulk.get()
        h.check_eq((m.topic, m.payload), (probe, b"last-chunk"),
                   "a message for a filter of n2's last rewrite chunk")
        # The probe's batch is counted when n2's answer reaches n1, which can
        # be just after the subscriber saw it: let that settle first.
        time.sleep(0.5)
        sent0 = metric(n1, OUT_SENT)
        items = [(t, "up-%d" % i) for i in range(5) for t in (t_old, t_new, t_gone)]
        publish_all(pub, items, 1)
        expect_messages(s_old, [(t_old, ("up-%d" % i).encode(), 1) for i in range(5)],
                        "old subscriber on n2 after Redis came back")
        expect_messages(s_new, [(t_new, ("up-%d" % i).encode(), 1) for i in range(5)],
                        "subscriber made on n3 while Redis was down")
        no_more([s_old, s_new, s_gone], what="after Redis came back")
        wait_metric(n1, OUT_SENT, sent0 + 10, "n1 forwarded old to n2 and new to n3 only")
    finally:
        ch.stop_quietly(*clients)
        if REDIS.proc.poll() is not None:
            REDIS.start()


# --------------------------------------------------------------------------
# 8. $SYS


def sys_values(sub, topic, seconds):
    """Messages on topic seen by sub within seconds: [(int value, retain)]."""
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for m in sub.drain(0.1):
            if m.topic == topic:
                out.append((int(m.payload.split()[0]), m.retain))
    return out


@case
def node_local_sys_stats_stay_local_and_cluster_events_travel():
    n1, n2 = CL.node("n1"), CL.node("n2")
    topic = "$SYS/broker/clients/connected"
    extra = []
    subs = []
    try:
        # n1 gets 8 more connections than n2: its count cannot pass for n2's.
        extra = [h.raw_connected(n1.port, h.uid("x")) for _ in range(8)]
        on1 = subscriber(n1, topic, 0)
        on2 = subscriber(n2, topic, 0)
        up2 = subscriber(n2, "$SYS/broker/uptime", 0)
        subs += [on1, on2, up2]
        wait_replicas()
        # Counts change while these clients connect: look from one interval on.
        time.sleep(1.2)
        early1 = sys_values(on1, topic, 0.05)
        early2 = sys_values(on2, topic, 0.05)
        v1 = early1 + sys_values(on1, topic, 2.5)
        v2 = early2 + sys_values(on2, topic, 0.1)
        h.check_eq(sum(1 for _, r in v2 if r), 1, "retained messages on n2's %s" % topic)
        h.check(v2[0][1], "n2's first message on %s is not the retained one" % topic)
        # Live publications only, and only those after the clients connected.
        live1 = [v for v, r in v1[len(early1):] if not r]
        live2 = [v for v, r in v2[len(early2):] if not r]
        h.check(len(live1) >= 2 and len(live2) >= 2, "too few live $SYS publications "
                "(n1 %r, n2 %r)" % (v1, v2))
        h.check_eq(len(set(live1)), 1, "live values of %s seen on n1 %r" % (topic, v1))
        h.check_eq(len(set(live2)), 1, "live values of %s seen on n2 %r (n1's count is %d)"
                   % (topic, v2, live1[0]))
        h.check(live1[0] >= 9 and live1[0] != live2[0], "n1 counts %d connections, n2 %d"
                % (live1[0], live2[0]))
        ups = up2.drain(0.1)
        h.check_eq(sum(1 for m in ups if m.retain), 1,
                   "retained $SYS/broker/uptime messages on n2 (%r)" % ups)
        fields = REDIS.cli("HKEYS", ch.PREFIX + "retained")
        h.check_eq([f for f in fields if f.startswith("$SYS/broker/")], [],
                   "node-local $SYS fields in %sretained" % ch.PREFIX)
        # "#" does not match topics starting with "$" [MQTT-4.7.2-1], in the
        # replicas either: n1's connection events are not forwarded to it.
        everything = subscriber(n2, "#", 0)
        subs.append(everything)
        wait_replicas()
        everything.drain(0.5)  # retained messages of earlier cases
        sent0 = metric(n1, OUT_SENT)
        h.raw_connected(n1.port, h.uid("evq")).disconnect()
        time.sleep(1.0)
        h.check_eq(metric(n1, OUT_SENT), sent0,
                   "n1 messages forwarded while only '#' subscribes elsewhere")
        h.check_eq([m for m in everything.drain(0.1) if not m.retain], [],
                   "live messages to a '#' subscriber on n2")
        everything.disconnect()
        # Cluster events under $SYS/brokers/{node}/ do travel.
        ev = subscriber(n2, "$SYS/brokers/n1/clients/+/connected", 0)
        subs.append(ev)
        wait_replicas()
        cid = h.uid("evc")
        c = h.raw_connected(n1.port, cid)
        extra.append(c)
        m = ev.get()
        h.check_eq(m.topic, "$SYS/brokers/n1/clients/%s/connected" % cid,
                   "n1's connected event seen on n2")
        ev.expect_nothing(what="a second connected event on n2")
    finally:
        ch.stop_quietly(*extra, *subs)


# --------------------------------------------------------------------------
# persistent sessions moving between live nodes


@case
def persistent_session_moves_to_another_live_node_with_its_offline_messages():
    """A clean-session-0 subscriber on n1 goes offline; 30 QoS 1 messages are
    published on n3 meanwhile (n1 keeps the route and queues them); the
    client reconnects to n2: session present, its subscription works there,
    and the 30 arrive once each in order; n1 no longer holds it."""
    n1, n2, n3 = CL.node("n1"), CL.node("n2"), CL.node("n3")
    tag = h.uid("mv")
    topic = "%s/x" % tag
    cid = h.uid("mvc")
    first = h.Paho(n1.port, client_id=cid, clean=False)
    first.connect()
    h.check_eq(first.subscribe("%s/#" % tag, 1), [1], "SUBACK on n1")
    wait_route("n1", "%s/#" % tag)
    first.disconnect()
    h.wait_until(lambda: REDIS.hgetall("sess:" + cid).get("online") == "0", h.WAIT,
                 what="n1 to write the offline session")
    pub = raw_publisher(n3)
    second = None
    try:
        publish_all(pub, [(topic, "off-%d" % i) for i in range(30)], 1)
        h.wait_until(lambda: int(REDIS.cli("LLEN", ch.PREFIX + "sess:" + cid + ":queue")) == 30,
                     h.WAIT, what="the 30 queued messages in the session's copy")
        second = h.Paho(n2.port, client_id=cid, clean=False)
        present = second.connect()
        h.check(present, "CONNACK on n2 does not say session present")
        expect_messages(second, [(topic, ("off-%d" % i).encode(), 1) for i in range(30)],
                        "queued messages after the move to n2")
        h.check_eq(REDIS.hgetall("sess:" + cid).get("node"), "n2", "session holder")
        wait_route("n2", "%s/#" % tag)
        wait_route("n1", "%s/#" % tag, present=False)
        time.sleep(0.5)
        publish_all(pub, [(topic, "on-%d" % i) for i in range(5)], 1)
        expect_messages(second, [(topic, ("on-%d" % i).encode(), 1) for i in range(5)],
                        "live messages on n2 after the move")
    finally:
        ch.stop_quietly(pub, first, *([second] if second else []))


# --------------------------------------------------------------------------
# 9. clean shutdown


def stop_all():
    ch.stop_cluster(CL)
    h.check_eq(REDIS.cli("KEYS", ch.PREFIX + "routes:*"), [],
               "route sets left after every node stopped cleanly")


def bind(redis, events, cluster):
    global REDIS, EV, CL
    REDIS, EV, CL = redis, events, cluster
    rh.bind(redis, events, cluster)


def main():
    return ch.run_suite(cases, ("every_node_exits_0_on_sigterm", stop_all), bind, api_key=KEY)


if __name__ == "__main__":
    sys.exit(main())
