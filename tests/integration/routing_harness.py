"""Helpers for the cluster routing tests (test_32 and the files built on
it: test_18, test_34, test_35, test_36): a node's /metrics, waiting for the
route replicas to converge, paho and raw subscribers and publishers, an
ordered pipelined burst of publishes, and checks that name exactly which
message went missing, came twice or out of order.

A test file hands them its Redis and cluster (cluster_harness) with
bind(), or by setting REDIS and CL; the helpers read CL (live nodes) and
REDIS (the route sets). KEY is the admin API key the files start their
nodes with, which metrics() sends.
"""
import http.client
import time

import harness as h
import cluster_harness as ch

KEY = "k"

OUT_SENT = 'relaymq_forward_messages_total{direction="out",outcome="sent"}'
OUT_FAILED = 'relaymq_forward_messages_total{direction="out",outcome="dropped_link_failed"}'
IN_ROUTED = 'relaymq_forward_messages_total{direction="in",outcome="routed"}'
FROM_PEERS = "relaymq_messages_from_peers_total"
REMOTE_FILTERS = "relaymq_routes_remote_filters"
REMOTE_NODES = "relaymq_routes_remote_nodes"
RETAINED_LOADED = 'relaymq_retained_redis_total{event="loaded"}'

REDIS = None
CL = None


def bind(redis, events, cluster):
    """cluster_harness.run_suite's bind hook (the event log is not used here)."""
    global REDIS, CL
    REDIS, CL = redis, cluster


def metrics(node):
    """Every sample of node's /metrics as {sample: float}."""
    conn = http.client.HTTPConnection(h.HOST, node.http_port, timeout=h.WAIT)
    try:
        conn.request("GET", "/metrics", headers={"Authorization": "Bearer " + KEY})
        r = conn.getresponse()
        body = r.read().decode()
        h.check_eq(r.status, 200, "GET /metrics on %s" % node.node_id)
    finally:
        conn.close()
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def metric(node, sample):
    m = metrics(node)
    h.check(sample in m, "no sample %s in /metrics of %s" % (sample, node.node_id))
    return int(m[sample])


def wait_metric(node, sample, want, what, timeout=h.WAIT, quiet=0.5):
    """Waits until sample == want on node, then checks it stays there for
    `quiet` seconds (a counter that overshoots fails at once)."""
    last = {}

    def probe():
        last["v"] = metric(node, sample)
        h.check(last["v"] <= want, "%s: %s on %s is %d, more than %d"
                % (what, sample, node.node_id, last["v"], want))
        return last["v"] == want
    try:
        h.wait_until(probe, timeout, interval=0.1, what=what)
    except AssertionError as e:
        raise AssertionError("%s (%s on %s is %r, expected %d)"
                             % (e, sample, node.node_id, last.get("v"), want)) from None
    if quiet:
        time.sleep(quiet)
        h.check_eq(metric(node, sample), want, "%s after %.1fs more" % (what, quiet))


def live_nodes():
    return [n for n in CL.nodes if n.alive()]


def routes_of(node_id):
    return REDIS.smembers("routes:" + node_id)


def wait_replicas(nodes=None, timeout=h.WAIT):
    """Every node's replica holds exactly the other nodes' filters: its
    relaymq_routes_remote_filters equals the sum of the others' sets."""
    nodes = nodes or live_nodes()
    state = {}

    def probe():
        sizes = {n.node_id: len(routes_of(n.node_id)) for n in nodes}
        state.clear()
        for n in nodes:
            want = sum(v for k, v in sizes.items() if k != n.node_id)
            got = metric(n, REMOTE_FILTERS)
            if got != want:
                state[n.node_id] = (got, want)
        return not state
    try:
        h.wait_until(probe, timeout, interval=0.1, what="route replicas to converge")
    except AssertionError as e:
        raise AssertionError("%s: (replica, expected) per node %r" % (e, state)) from None


def wait_route(node_id, filt, present=True, timeout=h.WAIT):
    h.wait_until(lambda: (filt in routes_of(node_id)) == present, timeout, interval=0.05,
                 what="%r %s %sroutes:%s" % (filt, "in" if present else "gone from",
                                              ch.PREFIX, node_id))


def subscriber(node, filt, qos=1, **kw):
    p = h.Paho(node.port, client_id=h.uid("s"), **kw)
    p.connect()
    granted = p.subscribe(filt, qos)
    h.check_eq(granted, [qos], "SUBACK of %r on %s" % (filt, node.node_id))
    p.node_id = node.node_id
    return p


def publisher(node, **kw):
    """A paho client for single, acknowledged publishes (publish(..., wait=True))."""
    p = h.Paho(node.port, client_id=h.uid("p"), **kw)
    p.connect()
    return p


def raw_publisher(node):
    """A raw client for ordered bulk publishing (publish_all). paho is not
    used for that: its publish() from our thread and its network thread can
    each take a queued packet and write them out of order."""
    c = h.RawClient(node.port)
    c.connect(h.uid("rp"))
    c.node_id = getattr(node, "node_id", "standalone")
    return c


def publish_all(pub, items, qos):
    """Sends [(topic, payload)] as one pipelined burst of PUBLISH packets
    (packet ids 1..n), completes every QoS flow, checks the acknowledgements
    come in order, and ends with PINGREQ/PINGRESP: once that answer is in,
    the node has routed every one of them."""
    pids = list(range(1, len(items) + 1))
    h.check(len(pids) < 65536, "too many messages for one burst")
    pub.send(b"".join(h.publish_packet(t, payload, qos, pid if qos else None)
                      for pid, (t, payload) in zip(pids, items)))
    recs, acks = [], []
    if qos == 1:
        for _ in pids:
            acks.append(pub.expect(h.PUBACK, timeout=30, what="burst PUBACK").pid)
    elif qos == 2:
        while len(acks) < len(pids):
            p = pub.recv_packet(30)
            if p.type == h.PUBREC:
                recs.append(p.pid)
                pub.send(h.ack_packet(h.PUBREL, p.pid))
            elif p.type == h.PUBCOMP:
                acks.append(p.pid)
            else:
                raise AssertionError("burst publisher on %s: unexpected %r" % (pub.node_id, p))
        h.check_eq(recs, pids, "PUBREC packet ids, in order")
    if qos:
        h.check_eq(acks, pids, "QoS %d acknowledgement packet ids, in order" % qos)
    pub.send(h.PINGREQ_PACKET)
    pub.expect(h.PINGRESP, timeout=30, what="PINGRESP after the burst")


def expect_messages(sub, want, what, timeout=30):
    """sub receives exactly want = [(topic, payload, qos)] in this order
    (no duplicate, no retain flag, no DUP)."""
    got = sub.take(len(want), timeout)
    seen = [(m.topic, m.payload, m.qos) for m in got]
    if seen != want:
        missing = [w for w in want if w not in seen]
        extra = [s for s in seen if s not in want]
        dups = len(seen) - len(set(seen))
        raise AssertionError("%s: %d messages differ from the %d expected (first difference at "
                             "%d: got %r, expected %r); missing %d, unexpected %d, duplicates %d"
                             % (what, sum(1 for a, b in zip(seen, want) if a != b), len(want),
                                next(i for i, (a, b) in enumerate(zip(seen, want)) if a != b),
                                next(a for a, b in zip(seen, want) if a != b),
                                next(b for a, b in zip(seen, want) if a != b),
                                len(missing), len(extra), dups)
                             + "; received payloads: %s" % short([p for _, p, _ in seen]))
    flagged = [m for m in got if m.retain or m.dup]
    h.check(not flagged, "%s: live deliveries with RETAIN or DUP set: %r" % (what, flagged[:3]))


def check_sequence(seqs, count, what):
    """seqs must be exactly 0..count-1; the failure names what went wrong."""
    if seqs == list(range(count)):
        return
    seen, dups = set(), []
    for v in seqs:
        if v in seen:
            dups.append(v)
        seen.add(v)
    first = next((i for i, v in enumerate(seqs) if v != i), len(seqs))
    raise AssertionError("%s: %d received; duplicates %s; missing %s; first out of place at "
                         "index %d: %s" % (what, len(seqs), dups[:20],
                                           sorted(set(range(count)) - seen)[:20], first,
                                           seqs[max(0, first - 3):first + 12]))


def short(payloads, limit=60):
    """A compact listing of received payloads for a failure message."""
    text = " ".join(p.decode("utf-8", "replace") for p in payloads[:limit])
    return text + (" ..." if len(payloads) > limit else "")


def no_more(subs, quiet=h.QUIET, what="after the expected messages"):
    """Nothing more arrives at any of subs within quiet seconds (duplicates)."""
    time.sleep(quiet)
    for s in subs:
        h.check(s.messages.empty(), "%s on %s: unexpected %r"
                % (what, getattr(s, "node_id", s.client_id), s.drain(0.1)[:3]))


def retained_field(topic):
    return REDIS.cli("HGET", ch.PREFIX + "retained", topic)


def barrier(pub, bar_subs, topic, tag):
    """Publishes one QoS 1 message on topic from pub and waits until each of
    bar_subs (one per node, the publisher's included) received it as its next
    message: whatever pub's node forwarded to their nodes before it has been
    routed there (one FIFO link per peer)."""
    pub.publish(topic, tag, 1)
    for s in bar_subs:
        m = s.get(15)
        h.check_eq((m.topic, m.payload), (topic, tag.encode()),
                   "barrier message on %s" % s.node_id)
