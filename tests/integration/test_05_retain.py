"""Retained messages: stored per topic, sent on SUBSCRIBE with the retain
flag, replaced, cleared by an empty retained PUBLISH, matched by wildcards,
delivered at min(stored QoS, granted QoS)."""
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

T = h.Tests()


def retained_for(b, filt, qos=2, expect=None):
    """Subscribes a fresh client to filt; returns the PUBLISHes it gets at once."""
    c = h.raw_connected(b.port)
    h.check_eq(c.subscribe([(filt, qos)]), [qos], "SUBACK for " + filt)
    got = []
    while True:
        try:
            done = expect is not None and len(got) >= expect
            got.append(c.recv_publish(timeout=0.5 if done else h.QUIET if expect is None
                                      else h.WAIT))
        except h.NoPacket:
            break
    c.disconnect()
    return got


@T.case
def retained_sent_on_subscribe_with_retain_flag_and_live_copies_without(b):
    topic = h.uid("rt") + "/t"
    live = h.raw_connected(b.port)
    live.subscribe([(topic, 1)])
    pub = h.raw_connected(b.port)
    pub.publish(topic, b"r1", qos=1, pid=1, retain=True)
    p = live.recv_publish()
    h.check_eq((p.payload, p.retain), (b"r1", False),
               "[MQTT-3.3.1-9] live delivery of a retained PUBLISH has retain 0")
    pub.publish(topic, b"plain", qos=1, pid=2)
    p = live.recv_publish()
    h.check_eq((p.payload, p.retain), (b"plain", False), "normal delivery has retain 0")
    got = retained_for(b, topic, 1, expect=1)
    h.check_eq([(p.payload, p.retain, p.topic) for p in got], [(b"r1", True, topic)],
               "a new subscriber gets the retained message (a plain PUBLISH does not replace it)")
    live.disconnect()
    pub.disconnect()


@T.case
def retained_message_is_replaced(b):
    topic = h.uid("rr") + "/t"
    pub = h.raw_connected(b.port)
    for i, qos in enumerate((0, 1, 2)):
        pub.publish(topic, b"v%d" % i, qos=qos, pid=i + 1, retain=True)
    got = retained_for(b, topic, 2, expect=1)
    h.check_eq([(p.payload, p.retain) for p in got], [(b"v2", True)], "only the last retained")
    pub.disconnect()


@T.case
def empty_retained_publish_clears_and_is_delivered_live(b):
    topic = h.uid("rc") + "/t"
    m = b.metrics()
    base = m.fresh("broker/retained messages/count")
    pub = h.raw_connected(b.port)
    pub.publish(topic, b"keep", qos=1, pid=1, retain=True)
    m.wait_for("broker/retained messages/count", lambda v: v == base + 1, what="retained gauge +1")
    live = h.raw_connected(b.port)
    live.subscribe([(topic, 1)])
    h.check_eq(live.recv_publish().payload, b"keep", "retained on subscribe")
    pub.publish(topic, b"", qos=1, pid=2, retain=True)
    p = live.recv_publish()
    h.check_eq((p.payload, p.retain), (b"", False), "the empty retained PUBLISH, delivered live")
    h.check_eq(retained_for(b, topic), [], "retained messages after clearing")
    m.wait_for("broker/retained messages/count", lambda v: v == base, what="retained gauge back")
    # Clearing with QoS 0 and via mosquitto_pub -r -n works the same way.
    pub.publish(topic, b"again", qos=0, retain=True)
    h.check_eq(len(retained_for(b, topic, expect=1)), 1, "retained again")
    h.mosq_pub(b.port, topic, null=True, retain=True, qos=1)
    h.check_eq(retained_for(b, topic), [], "retained after mosquitto_pub -r -n")
    live.disconnect()
    pub.disconnect()


@T.case
def retained_messages_matched_by_wildcards(b):
    r = h.uid("rw")
    pub = h.raw_connected(b.port)
    for i, t in enumerate(("a", "b/c", "b/d", "b/c/e")):
        pub.publish("%s/%s" % (r, t), t.encode(), qos=1, pid=i + 1, retain=True)
    expected = {
        r + "/#": {"a", "b/c", "b/d", "b/c/e"},
        r + "/+": {"a"},
        r + "/b/+": {"b/c", "b/d"},
        r + "/+/c/#": {"b/c", "b/c/e"},
        r + "/x/#": set(),
        r + "/b/c": {"b/c"},
    }
    for filt, want in expected.items():
        got = retained_for(b, filt, 1, expect=len(want))
        h.check(all(p.retain for p in got), "retain flag on every retained copy for " + filt)
        h.check_eq(sorted(p.payload.decode() for p in got), sorted(want),
                   "retained matching " + filt)
    pub.disconnect()


@T.case
def retained_delivery_qos_is_min_of_stored_and_granted(b):
    r = h.uid("rq")
    pub = h.raw_connected(b.port)
    for q in (0, 1, 2):
        pub.publish("%s/%d" % (r, q), b"s%d" % q, qos=q, pid=q + 1, retain=True)
    for granted in (0, 1, 2):
        got = retained_for(b, r + "/+", granted, expect=3)
        h.check_eq(sorted((p.payload, p.qos) for p in got),
                   [(b"s%d" % q, min(q, granted)) for q in (0, 1, 2)],
                   "retained QoS with granted QoS %d" % granted)
    pub.disconnect()


@T.case
def resubscribing_sends_retained_again(b):
    topic = h.uid("rs") + "/t"
    pub = h.raw_connected(b.port)
    pub.publish(topic, b"again", qos=1, pid=1, retain=True)
    c = h.raw_connected(b.port)
    for pid in (1, 2):
        c.subscribe([(topic, 1)], pid=pid)
        p = c.recv_publish()
        h.check_eq((p.payload, p.retain), (b"again", True), "retained after SUBSCRIBE #%d" % pid)
    c.expect_nothing(what="after the two retained copies")
    c.disconnect()
    pub.disconnect()


@T.case
def resumed_session_does_not_get_retained_again(b):
    # Retained messages go out on SUBSCRIBE, not when a session resumes.
    topic, cid = h.uid("rz") + "/t", h.uid("rz")
    pub = h.raw_connected(b.port)
    pub.publish(topic, b"once", qos=1, pid=1, retain=True)
    c = h.RawClient(b.port)
    c.connect(cid, clean=False)
    c.subscribe([(topic, 1)])
    h.check_eq(c.recv_publish().payload, b"once", "retained on SUBSCRIBE")
    c.disconnect()
    c = h.RawClient(b.port)
    h.check_eq(c.connect(cid, clean=False), True, "session present")
    c.expect_nothing(what="retained message on session resume")
    c.disconnect()
    pub.disconnect()


@T.case
def retained_with_mosquitto_clients_and_paho(b):
    for version in h.VERSIONS:
        topic = h.uid("rm") + "/t"
        h.mosq_pub(b.port, topic, "mr%d" % version, qos=1, version=version, retain=True)
        with h.MosqSub(b.port, topic, qos=2, version=version) as sub:
            m = sub.take(1)[0]
            h.check_eq((m.payload, m.retain, m.qos), (b"mr%d" % version, True, 1),
                       "mosquitto_sub level %d retained" % version)
        with h.Paho(b.port, version=version) as p:
            p.subscribe(topic, 0)
            m = p.get()
            h.check_eq((m.payload, m.retain, m.qos), (b"mr%d" % version, True, 0),
                       "paho level %d retained at granted QoS 0" % version)
            p.publish(topic, b"pr", 2, retain=True)
            m = p.get()
            h.check_eq((m.payload, m.retain), (b"pr", False), "paho live copy of its retained")
        with h.MosqSub(b.port, topic, qos=2, version=version, extra=["--retained-only"]) as sub:
            m = sub.take(1)[0]
            h.check_eq((m.payload, m.retain, m.qos), (b"pr", True, 2), "replaced by paho")


if __name__ == "__main__":
    T.main()
