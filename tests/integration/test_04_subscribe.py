"""SUBSCRIBE / UNSUBSCRIBE: granted codes, wildcards, overlapping
subscriptions, $-topics, topics a publisher must not use, and a topic
published again after each kind of subscription change."""
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

T = h.Tests()


def drain_until(c, sentinel_topic):
    """Topics received before the sentinel PUBLISH, then checks nothing follows."""
    topics = []
    while True:
        p = c.recv_publish()
        if p.topic == sentinel_topic:
            c.expect_nothing(timeout=0.3, what="after the sentinel")
            return topics
        topics.append(p.topic)


@T.case
def suback_grants_requested_qos_and_0x80_for_invalid_filters(b):
    # The spec lets a server refuse one filter (0x80) or close; RelayMQ answers
    # 0x80 and keeps the valid filters of the same SUBSCRIBE. Mosquitto closes.
    h.relaymq_only("SUBACK 0x80 for an invalid filter")
    r = h.uid("sa")
    filters = [(r + "/a", 0), (r + "/a/#/b", 1), (r + "/c/+", 1), (r + "/a+/b", 2), ("", 1),
               (r + "/d/#", 2), (r + "/x#", 0), (r + "/+x", 1), (r + "/#/", 0)]
    c = h.raw_connected(b.port)
    codes = c.subscribe(filters, pid=0x0102)
    h.check_eq(codes, [0, 0x80, 1, 0x80, 0x80, 2, 0x80, 0x80, 0x80], "SUBACK return codes")
    pub = h.raw_connected(b.port)
    for topic in (r + "/a", r + "/c/z", r + "/d/e/f"):
        pub.publish(topic, b"v", qos=1, pid=5)
        h.check_eq(c.recv_publish().topic, topic, "delivery through a valid filter")
    c.expect_nothing(what="after the three valid filters")
    c.send(h.PINGREQ_PACKET)
    c.expect(h.PINGRESP, what="connection still open after 0x80 codes")
    c.disconnect()
    pub.disconnect()


@T.case
def suback_grants_each_requested_qos(b):
    r = h.uid("g")
    c = h.raw_connected(b.port)
    h.check_eq(c.subscribe([(r + "/0", 0), (r + "/1", 1), (r + "/2", 2)], pid=65535), [0, 1, 2],
               "granted QoS")
    c.disconnect()


@T.case
def unsubscribe_gets_unsuback_and_stops_delivery(b):
    topic = h.uid("un") + "/t"
    m = b.metrics()
    base = m.fresh("broker/subscriptions/count")
    sub = h.raw_connected(b.port)
    pub = h.raw_connected(b.port)
    h.check_eq(sub.subscribe([(topic, 1)]), [1], "SUBACK")
    m.wait_for("broker/subscriptions/count", lambda v: v == base + 1, what="subscriptions gauge +1")
    pub.publish(topic, b"before", qos=1, pid=1)
    h.check_eq(sub.recv_publish().payload, b"before", "delivery before UNSUBSCRIBE")
    sub.send(h.unsubscribe_packet(0x0A0B, [topic]))
    ack = sub.expect(h.UNSUBACK)
    h.check_eq((ack.flags, ack.body), (0, b"\x0a\x0b"), "UNSUBACK flags and body")
    m.wait_for("broker/subscriptions/count", lambda v: v == base, what="subscriptions gauge back")
    pub.publish(topic, b"after", qos=1, pid=2)
    sub.expect_nothing(what="delivery after UNSUBSCRIBE")
    # Unsubscribing a filter that was never subscribed still gets its UNSUBACK.
    sub.send(h.unsubscribe_packet(3, [topic + "/never", topic]))
    h.check_eq(sub.expect(h.UNSUBACK).pid, 3, "UNSUBACK for unknown filters")
    sub.disconnect()
    pub.disconnect()


@T.case
def unsubscribe_with_paho_and_mosquitto_sub(b):
    for version in h.VERSIONS:
        topic = h.uid("pu") + "/t"
        with h.Paho(b.port, version=version) as sub, h.Paho(b.port, version=version) as pub:
            sub.subscribe(topic, 1)
            pub.publish(topic, b"1", 1)
            h.check_eq(sub.get().payload, b"1", "before unsubscribe")
            sub.unsubscribe(topic)
            pub.publish(topic, b"2", 1)
            sub.expect_nothing(what="paho level %d after unsubscribe" % version)
    # mosquitto_sub -U unsubscribes from a topic right after subscribing.
    topic = h.uid("mu") + "/t"
    with h.MosqSub(b.port, [topic, topic + "/other"], qos=1,
                   extra=["-U", topic + "/other"]) as sub:
        h.wait_until(lambda: any("received UNSUBACK" in line for line in sub.lines),
                     what="mosquitto_sub UNSUBACK")
        h.mosq_pub(b.port, topic + "/other", "no", qos=1)
        h.mosq_pub(b.port, topic, "yes", qos=1)
        h.check_eq([m.payload for m in sub.take(1)], [b"yes"], "only the kept subscription")
        sub.expect_nothing(what="unsubscribed topic")


@T.case
def one_clients_unsubscribe_leaves_others_subscribed(b):
    topic = h.uid("uo")
    a, c = h.raw_connected(b.port), h.raw_connected(b.port)
    for x in (a, c):
        h.check_eq(x.subscribe([(topic + "/+", 1)]), [1], "SUBACK")
    a.send(h.unsubscribe_packet(2, [topic + "/+"]))
    a.expect(h.UNSUBACK)
    pub = h.raw_connected(b.port)
    pub.publish(topic + "/x", b"still", qos=1, pid=1)
    h.check_eq(c.recv_publish().payload, b"still", "the other subscriber of the same filter")
    a.expect_nothing(what="the unsubscribed client")
    for x in (a, c, pub):
        x.disconnect()


@T.case
def resubscribing_replaces_the_subscription(b):
    topic = h.uid("re") + "/t"
    c = h.raw_connected(b.port)
    h.check_eq(c.subscribe([(topic, 2)], pid=1), [2], "first SUBACK")
    h.check_eq(c.subscribe([(topic, 0)], pid=2), [0], "second SUBACK")
    pub = h.raw_connected(b.port)
    pub.publish(topic, b"x", qos=2, pid=1)
    p = c.recv_publish()
    h.check_eq((p.payload, p.qos), (b"x", 0), "one delivery at the new QoS")
    c.expect_nothing(what="a second copy from a replaced subscription")
    c.disconnect()
    pub.disconnect()


@T.case
def a_topic_published_again_sees_every_subscription_change(b):
    # RelayMQ remembers which subscriptions a recent topic matched (until
    # the next SUBSCRIBE or UNSUBSCRIBE anywhere): each publish below repeats
    # one topic right after a change, and must reflect it. Clients that
    # leave with a clean session lose their subscriptions the same way.
    r = h.uid("mc")
    topic = r + "/a/b"
    pub = h.raw_connected(b.port)
    seq = [0]

    def publish_and_expect(want, what):
        """want: {client: qos or None}; publishes one QoS 2 message on topic."""
        seq[0] += 1
        payload = b"%d" % seq[0]
        pub.publish(topic, payload, qos=2, pid=seq[0])
        for c, qos in want.items():
            if qos is None:
                continue
            p = c.recv_publish()
            h.check_eq((p.topic, p.payload, p.qos), (topic, payload, qos),
                       "%s: delivery to %s" % (what, c.name))
        for c, qos in want.items():
            c.expect_nothing(timeout=0.3, what="%s: nothing more for %s" % (what, c.name))

    a = h.raw_connected(b.port)
    a.name = "a (%s, QoS 2)" % topic
    h.check_eq(a.subscribe([(topic, 2)]), [2], "SUBACK a")
    publish_and_expect({a: 2}, "one subscriber")
    publish_and_expect({a: 2}, "the same again")
    c = h.raw_connected(b.port)
    c.name = "c (%s/#, QoS 1)" % r
    h.check_eq(c.subscribe([(r + "/#", 1)]), [1], "SUBACK c")
    publish_and_expect({a: 2, c: 1}, "after a second subscriber")
    h.check_eq(a.subscribe([(topic, 0)], pid=2), [0], "SUBACK a, downgraded")
    publish_and_expect({a: 0, c: 1}, "after a QoS change")
    # More subscribers than RelayMQ remembers per topic (8), then fewer.
    many = []
    for i in range(9):
        m = h.raw_connected(b.port)
        m.name = "m%d (%s/+/b)" % (i, r)
        h.check_eq(m.subscribe([(r + "/+/b", 1)]), [1], "SUBACK m%d" % i)
        many.append(m)
    eleven = {a: 0, c: 1, **{m: 1 for m in many}}
    publish_and_expect(eleven, "eleven subscribers")
    publish_and_expect(eleven, "eleven again")
    gauge = b.metrics()
    subs = gauge.fresh("broker/subscriptions/count")
    for m in many[1:]:
        m.disconnect()  # clean sessions: their subscriptions go with them
    gauge.wait_for("broker/subscriptions/count", lambda v: v == subs - 8,
                   what="eight subscriptions gone")
    publish_and_expect({a: 0, c: 1, many[0]: 1}, "after eight clients left")
    c.send(h.unsubscribe_packet(3, [r + "/#"]))
    c.expect(h.UNSUBACK)
    publish_and_expect({a: 0, c: None, many[0]: 1}, "after an UNSUBSCRIBE")
    for x in (a, c, many[0], pub):
        x.disconnect()


@T.case
def overlapping_subscriptions_deliver_at_the_maximum_qos(b):
    r = h.uid("ov")
    c = h.raw_connected(b.port)
    h.check_eq(c.subscribe([(r + "/#", 0), (r + "/+/c", 2), (r + "/b/c", 1)]), [0, 2, 1], "SUBACK")
    pub = h.raw_connected(b.port)
    pub.publish(r + "/b/c", b"ov", qos=2, pid=1)
    copies = [c.recv_publish()]
    while True:
        try:
            copies.append(c.recv_publish(timeout=1.0))
        except h.NoPacket:
            break
    h.check(1 <= len(copies) <= 3, "expected 1 to 3 copies, got %r" % copies)
    h.check(all(p.payload == b"ov" and p.topic == r + "/b/c" for p in copies),
            "copies: %r" % copies)
    # [MQTT-3.3.5-1]: delivered respecting the maximum QoS of all matching
    # subscriptions. (Mosquitto 2.0.11 sends one copy at QoS 1 here: a known
    # deviation, so this one check is RelayMQ's only.)
    if b.relaymq:
        h.check_eq(max(p.qos for p in copies), 2, "highest delivered QoS among %d copies"
                   % len(copies))
    c.disconnect()
    pub.disconnect()


WILDCARD_TABLE = [
    # filter (under the root)  topics (under the root) that must match; the rest must not
    ("a/#", {"a", "a/b", "a/b/c", "a/", "a//c"}),
    ("a/+", {"a/b", "a/"}),
    ("a/+/c", {"a/b/c", "a//c"}),
    ("+/b", {"a/b", "x/b"}),
    ("a/b", {"a/b"}),
    ("A/b", set()),
    ("+", {"a"}),
    ("#", {"a", "a/b", "a/b/c", "a/", "a//c", "b/c/d", "x/b"}),
    ("+/+/+", {"a/b/c", "a//c", "b/c/d"}),
]
WILDCARD_TOPICS = ["a", "a/b", "a/b/c", "a/", "a//c", "b/c/d", "x/b"]


@T.case
def plus_and_hash_wildcards_match_per_spec(b):
    root = h.uid("wc")
    subs = []
    for i, (filt, _) in enumerate(WILDCARD_TABLE):
        c = h.raw_connected(b.port)
        full = root + "/" + filt
        h.check_eq(c.subscribe([(full, 1), ("%s-end/%d" % (root, i), 1)]), [1, 1], "SUBACK " + full)
        subs.append(c)
    pub = h.raw_connected(b.port)
    for n, topic in enumerate(WILDCARD_TOPICS):
        pub.publish(root + "/" + topic, b"w", qos=1, pid=n + 1)
    for i, c in enumerate(subs):
        pub.publish("%s-end/%d" % (root, i), b"end", qos=1, pid=100 + i)
    for i, (filt, expected) in enumerate(WILDCARD_TABLE):
        got = drain_until(subs[i], "%s-end/%d" % (root, i))
        want = sorted(root + "/" + t for t in expected)
        h.check_eq(sorted(got), want, "topics matched by filter %r" % filt)
        subs[i].disconnect()
    pub.disconnect()


@T.case
def hash_alone_and_parent_level(b):
    # "sport/#" also matches "sport" itself; "+" matches one whole level only.
    r = h.uid("sp")
    c = h.raw_connected(b.port)
    h.check_eq(c.subscribe([(r + "/#", 0)]), [0], "SUBACK")
    pub = h.raw_connected(b.port)
    pub.publish(r, b"parent", qos=1, pid=1)
    p = c.recv_publish()
    h.check_eq((p.topic, p.payload), (r, b"parent"), "'R/#' matches 'R'")
    pub.publish(r + "x/y", b"sibling", qos=1, pid=2)
    c.expect_nothing(what="'R/#' must not match 'Rx/y'")
    c.disconnect()
    pub.disconnect()


@T.case
def leading_and_trailing_slashes_are_empty_levels(b):
    name = h.uid("sl")
    c = h.raw_connected(b.port)
    h.check_eq(c.subscribe([("/" + name, 1), ("+/%s/+" % name, 1)]), [1, 1], "SUBACK")
    pub = h.raw_connected(b.port)
    for n, topic in enumerate(("/" + name, "/%s/" % name, name, name + "/")):
        pub.publish(topic, topic.encode(), qos=1, pid=n + 1)
    got = sorted(c.recv_publish().topic for _ in range(2))
    h.check_eq(got, sorted(["/" + name, "/%s/" % name]), "topics with empty first/last levels")
    c.expect_nothing(what="'%s' and '%s/' must not match" % (name, name))
    c.disconnect()
    pub.disconnect()


@T.case
def dollar_topics_not_matched_by_leading_wildcards(b):
    dollar = "$" + h.uid("dl")
    everything = h.raw_connected(b.port)
    h.check_eq(everything.subscribe([("#", 0), ("+/x", 0), ("+/+", 0), ("+/#", 0)]), [0, 0, 0, 0],
               "SUBACK for leading wildcards")
    explicit = h.raw_connected(b.port)
    h.check_eq(explicit.subscribe([(dollar + "/#", 0)]), [0], "SUBACK for an explicit $ filter")
    sys_sub = h.raw_connected(b.port)
    h.check_eq(sys_sub.subscribe([("$SYS/#", 0)]), [0], "SUBACK for $SYS/#")
    pub = h.raw_connected(b.port)
    pub.publish(dollar + "/x", b"d", qos=1, pid=1)
    p = explicit.recv_publish()
    h.check_eq(p.topic, dollar + "/x", "explicit $ filter gets the message")
    # $SYS traffic flows every second: the explicit $SYS/# subscriber sees it ...
    p = sys_sub.recv_publish(timeout=5)
    h.check(p.topic.startswith("$SYS/"), "$SYS/# delivered %r" % p.topic)
    # ... and the leading-wildcard subscriber must see none of it nor the $ message.
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        try:
            p = everything.recv_publish(timeout=max(0.05, deadline - time.monotonic()))
        except h.NoPacket:
            break
        h.check(not p.topic.startswith("$"), "'#'/'+/..' matched the $ topic %r" % p.topic)
    for c in (everything, explicit, sys_sub, pub):
        c.disconnect()


@T.case
def publish_to_wildcard_topic_disconnects(b):
    m = b.metrics()
    before = m.fresh("protocol_errors")
    r = h.uid("pw")
    watcher = h.raw_connected(b.port)
    watcher.subscribe([(r + "/#", 0)])
    bad = [r + "/+/b", r + "/#", r + "/a+", r + "/#/x"]
    for topic in bad:
        c = h.raw_connected(b.port)
        c.send(h.publish_packet(topic, b"x", qos=1, pid=1))
        got = c.wait_closed()
        h.check_eq(got, [], "packets answered to PUBLISH on %r" % topic)
    watcher.expect_nothing(what="delivery of a wildcard-topic PUBLISH")
    m.expect_increase("protocol_errors", before, by=len(bad))
    watcher.disconnect()


@T.case
def invalid_utf8_or_nul_in_topic_disconnects(b):
    m = b.metrics()
    before = m.fresh("protocol_errors")
    r = h.uid("u8").encode()
    watcher = h.raw_connected(b.port)
    watcher.subscribe([(r.decode() + "/#", 0)])
    bad_topics = [r + b"/\xff\xfe", r + b"/\xc3", r + b"/\xed\xa0\x80", r + b"/a\x00b",
                  r + b"/\xc0\xaf"]
    for topic in bad_topics:
        c = h.raw_connected(b.port)
        c.send(h.publish_packet(topic, b"x", qos=0))
        h.check_eq(c.wait_closed(), [], "answer to PUBLISH topic %r" % topic)
    for filt in (r + b"/\xff", r + b"/\xed\xbf\xbf/#"):
        c = h.raw_connected(b.port)
        c.send(h.subscribe_packet(1, [(filt, 0)]))
        h.check_eq(c.wait_closed(), [], "answer to SUBSCRIBE filter %r" % filt)
    watcher.expect_nothing(what="delivery of an invalid topic")
    m.expect_increase("protocol_errors", before, by=len(bad_topics) + 2)
    # Valid multi-byte UTF-8 is fine.
    topic = r.decode() + "/caf\u00e9/\u6e29\u5ea6"
    pub = h.raw_connected(b.port)
    pub.publish(topic, b"ok", qos=1, pid=1)
    h.check_eq(watcher.recv_publish().topic, topic, "multi-byte UTF-8 topic delivered")
    pub.disconnect()
    watcher.disconnect()


@T.case
def empty_topic_name_disconnects(b):
    c = h.raw_connected(b.port)
    c.send(h.publish_packet("", b"x", qos=1, pid=1))
    h.check_eq(c.wait_closed(), [], "answer to a PUBLISH with an empty topic")


if __name__ == "__main__":
    T.main()
