"""Persistent sessions (clean session 0): subscriptions and undelivered QoS 1/2
messages survive a disconnect, the session-present flag, re-sends with DUP
and resumed PUBREL on reconnect, the offline queue bound, and clean session 1
discarding all of it."""
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

T = h.Tests()


def persistent(b, cid, version=h.MQTTV311, present=None):
    """A clean-session-0 RawClient; checks the session-present flag when given."""
    c = h.RawClient(b.port)
    got = c.connect(cid, clean=False, version=version)
    if present is not None:
        h.check_eq(got, present, "session present for %s" % cid)
    return c


def drain(c, ack=True, timeout=h.QUIET):
    out = []
    while True:
        try:
            out.append(c.recv_publish(timeout=timeout, ack=ack))
        except h.NoPacket:
            return out


@T.case
def subscriptions_survive_reconnect(b):
    cid, topic = h.uid("ss"), h.uid("ss") + "/t"
    c = persistent(b, cid, present=False)
    h.check_eq(c.subscribe([(topic, 1)]), [1], "SUBACK")
    c.disconnect()
    c = persistent(b, cid, present=True)
    pub = h.raw_connected(b.port)
    pub.publish(topic, b"still-subscribed", qos=1, pid=1)
    h.check_eq(c.recv_publish().payload, b"still-subscribed", "delivery without re-subscribing")
    c.disconnect()
    pub.disconnect()


@T.case
def session_present_flag(b):
    cid = h.uid("sp")
    persistent(b, cid, present=False).disconnect()       # new session
    persistent(b, cid, present=True).disconnect()        # resumed
    c = h.RawClient(b.port)
    h.check_eq(c.connect(cid, clean=True), False, "session present with clean session 1")
    c.disconnect()
    persistent(b, cid, present=False).disconnect()       # clean=1 threw the session away
    # paho reports the same flag.
    p = h.Paho(b.port, client_id=cid, clean=False)
    h.check_eq(p.connect(), True, "paho session present on resume")
    p.disconnect()


@T.case
def session_present_never_set_for_mqtt31(b):
    # MQTT 3.1's CONNACK has no session-present flag: the byte is reserved (0).
    cid = h.uid("s31")
    persistent(b, cid, version=h.MQTTV31, present=False).disconnect()
    persistent(b, cid, version=h.MQTTV31, present=False).disconnect()


@T.case
def qos1_and_qos2_published_while_offline_are_delivered_on_reconnect(b):
    cid, r = h.uid("off"), h.uid("off")
    c = persistent(b, cid)
    h.check_eq(c.subscribe([(r + "/q2", 2), (r + "/q1", 1)]), [2, 1], "SUBACK")
    c.disconnect()
    pub = h.raw_connected(b.port)
    sent = []
    for i in range(6):
        qos = 1 + i % 2
        pub.publish(r + "/q2", b"m%d" % i, qos=qos, pid=i + 1)
        sent.append((b"m%d" % i, qos))
    pub.publish(r + "/q1", b"capped", qos=2, pid=50)
    pub.publish(r + "/q2", b"qos0", qos=0)  # a server may or may not queue QoS 0
    c = persistent(b, cid, present=True)
    got = drain(c)
    qos12 = [(p.payload, p.qos) for p in got if p.topic == r + "/q2" and p.payload != b"qos0"]
    h.check_eq(qos12, sent, "offline QoS 1/2 messages, in order, once each")
    h.check_eq([(p.payload, p.qos) for p in got if p.topic == r + "/q1"], [(b"capped", 1)],
               "offline QoS 2 message to a QoS 1 subscription")
    h.check(len([p for p in got if p.payload == b"qos0"]) <= 1, "QoS 0 copy delivered twice")
    c.disconnect()
    pub.disconnect()


@T.case
def unacknowledged_qos1_and_qos2_resent_with_dup_on_reconnect(b):
    cid, topic = h.uid("dup"), h.uid("dup") + "/t"
    c = persistent(b, cid)
    c.subscribe([(topic, 2)])
    pub = h.raw_connected(b.port)
    pub.publish(topic, b"one", qos=1, pid=1)
    pub.publish(topic, b"two", qos=2, pid=2)
    first = [c.recv_publish(ack=False), c.recv_publish(ack=False)]
    h.check_eq([(p.payload, p.qos, p.dup) for p in first], [(b"one", 1, False), (b"two", 2, False)],
               "first deliveries")
    c.close()  # no PUBACK, no PUBREC, no DISCONNECT
    c = persistent(b, cid, present=True)
    again = [c.expect(h.PUBLISH), c.expect(h.PUBLISH)]
    h.check_eq([(p.payload, p.qos, p.dup, p.pid) for p in again],
               [(b"one", 1, True, first[0].pid), (b"two", 2, True, first[1].pid)],
               "[MQTT-4.4.0-1] re-sent with DUP=1 and the original packet ids")
    c.send(h.ack_packet(h.PUBACK, again[0].pid))
    c.send(h.ack_packet(h.PUBREC, again[1].pid))
    h.check_eq(c.expect(h.PUBREL).pid, again[1].pid, "PUBREL after PUBREC")
    c.send(h.ack_packet(h.PUBCOMP, again[1].pid))
    c.expect_nothing(what="after acknowledging the re-sends")
    c.disconnect()
    # Acknowledged now: a further reconnect re-sends nothing.
    c = persistent(b, cid, present=True)
    c.expect_nothing(what="re-sends of acknowledged messages")
    c.disconnect()
    pub.disconnect()


@T.case
def unacknowledged_qos1_resent_after_disconnect_packet_too(b):
    cid, topic = h.uid("dd") + "x", h.uid("dd") + "/t"
    c = persistent(b, cid, version=h.MQTTV31)
    c.subscribe([(topic, 1)])
    pub = h.raw_connected(b.port)
    pub.publish(topic, b"keep", qos=1, pid=1)
    p1 = c.recv_publish(ack=False)
    c.disconnect()  # a clean DISCONNECT does not acknowledge anything
    c = persistent(b, cid, version=h.MQTTV31)
    p2 = c.expect(h.PUBLISH)
    h.check_eq((p2.payload, p2.pid, p2.dup), (b"keep", p1.pid, True), "re-sent at level 3")
    c.send(h.ack_packet(h.PUBACK, p2.pid))
    c.disconnect()
    pub.disconnect()


@T.case
def qos2_pubrel_resumed_on_reconnect(b):
    cid, topic = h.uid("rel"), h.uid("rel") + "/t"
    c = persistent(b, cid)
    c.subscribe([(topic, 2)])
    pub = h.raw_connected(b.port)
    pub.publish(topic, b"exactly-once", qos=2, pid=1)
    p = c.recv_publish(ack=False)
    c.send(h.ack_packet(h.PUBREC, p.pid))
    h.check_eq(c.expect(h.PUBREL).pid, p.pid, "PUBREL")
    c.close()  # without PUBCOMP
    c = persistent(b, cid, present=True)
    rel = c.expect(h.PUBREL, what="resumed flow")
    h.check_eq((rel.pid, rel.flags), (p.pid, 2), "PUBREL re-sent with the original id")
    c.send(h.ack_packet(h.PUBCOMP, rel.pid))
    c.expect_nothing(what="the PUBLISH must not come again once PUBREC was sent")
    c.disconnect()
    pub.disconnect()


@T.case
def incoming_qos2_exactly_once_across_publisher_reconnect(b):
    cid, topic = h.uid("inq"), h.uid("inq") + "/t"
    sub = h.raw_connected(b.port)
    sub.subscribe([(topic, 2)])
    pub = persistent(b, cid)
    pub.send(h.publish_packet(topic, b"once", qos=2, pid=33))
    h.check_eq(pub.expect(h.PUBREC).pid, 33, "PUBREC")
    pub.close()  # PUBREL not sent yet
    pub = persistent(b, cid, present=True)
    pub.send(h.publish_packet(topic, b"once", qos=2, pid=33, dup=True))  # its own re-send
    h.check_eq(pub.expect(h.PUBREC).pid, 33, "PUBREC for the re-send")
    pub.send(h.ack_packet(h.PUBREL, 33))
    h.check_eq(pub.expect(h.PUBCOMP).pid, 33, "PUBCOMP")
    got = drain(sub)
    h.check_eq([p.payload for p in got], [b"once"], "subscriber copies across the reconnect")
    pub.disconnect()
    sub.disconnect()


@T.case
def offline_queue_is_bounded_and_drops_are_counted(b):
    with h.Broker(max_queued_messages=10) as b2:
        cid, topic = h.uid("qb"), h.uid("qb") + "/t"
        m = b2.metrics()
        before = m.fresh("messages_dropped")
        c = persistent(b2, cid)
        c.subscribe([(topic, 1)])
        c.disconnect()
        pub = h.raw_connected(b2.port)
        for i in range(50):
            pub.publish(topic, b"%02d" % i, qos=1, pid=i + 1)
        c = persistent(b2, cid, present=True)
        got = [int(p.payload) for p in drain(c, timeout=2.0)]
        h.check(10 <= len(got) <= 10 + 20,
                "delivered %d of 50 with --max-queued-messages 10 and max-inflight 20" % len(got))
        h.check_eq(got, sorted(set(got)), "kept messages are distinct and in order")
        m.wait_for("messages_dropped", lambda v: v - before == 50 - len(got),
                   what="messages_dropped must count exactly the %d not delivered"
                   % (50 - len(got)))
        c.disconnect()
        pub.disconnect()


@T.case
def online_queue_beyond_the_inflight_window_is_bounded(b):
    # A connected subscriber that stops acknowledging: --max-inflight 3 in
    # flight, --max-queued-messages 10 waiting, the newest excess dropped.
    with h.Broker(max_inflight=3, max_queued_messages=10) as b2:
        topic = h.uid("oq") + "/t"
        m = b2.metrics()
        before = m.fresh("messages_dropped")
        c = h.raw_connected(b2.port)
        c.subscribe([(topic, 1)])
        pub = h.raw_connected(b2.port)
        for i in range(50):
            pub.publish(topic, b"%02d" % i, qos=1, pid=i + 1)
        window = [c.recv_publish(ack=False) for _ in range(3)]
        for p in window:
            c.send(h.ack_packet(h.PUBACK, p.pid))
        got = [int(p.payload) for p in window] + [int(p.payload) for p in drain(c, timeout=2.0)]
        h.check_eq(got, list(range(13)), "3 in flight + 10 queued, oldest first")
        m.wait_for("messages_dropped", lambda v: v - before == 37, what="37 dropped")
        c.disconnect()
        pub.disconnect()


@T.case
def clean_session_1_discards_subscriptions_and_messages(b):
    cid, topic = h.uid("cl"), h.uid("cl") + "/t"
    c = persistent(b, cid)
    c.subscribe([(topic, 1)])
    pub = h.raw_connected(b.port)
    pub.publish(topic, b"unacked", qos=1, pid=1)
    c.recv_publish(ack=False)
    c.disconnect()
    pub.publish(topic, b"queued", qos=1, pid=2)
    c = h.RawClient(b.port)
    h.check_eq(c.connect(cid, clean=True), False, "session present with clean session 1")
    c.expect_nothing(what="no re-send and no queued message for clean session 1")
    pub.publish(topic, b"after", qos=1, pid=3)
    c.expect_nothing(what="the old subscription is gone")
    c.disconnect()
    # And a clean-session-1 connection leaves no session behind.
    c = persistent(b, cid, present=False)
    c.expect_nothing(what="nothing kept from the clean session")
    c.disconnect()
    pub.disconnect()


@T.case
def subscriptions_gauge_drops_with_clean_sessions_only(b):
    m = b.metrics()
    base = m.fresh("broker/subscriptions/count")
    r = h.uid("sg")
    clean = h.raw_connected(b.port)
    clean.subscribe([(r + "/a", 0), (r + "/b", 1)])
    kept = persistent(b, h.uid("sg"))
    kept.subscribe([(r + "/c", 2)])
    m.wait_for("broker/subscriptions/count", lambda v: v == base + 3, what="3 more subscriptions")
    clean.disconnect()
    kept.disconnect()
    m.wait_for("broker/subscriptions/count", lambda v: v == base + 1,
               what="the persistent session's subscription stays, the clean ones go")


@T.case
def persistent_sessions_with_paho_and_mosquitto_sub(b):
    for version in h.VERSIONS:
        topic = h.uid("pp") + "/t"
        cid = h.uid("pp")
        p = h.Paho(b.port, client_id=cid, version=version, clean=False)
        p.connect()
        p.subscribe(topic, 2)
        p.disconnect()
        for i, qos in enumerate((1, 2, 1)):
            h.mosq_pub(b.port, topic, "off%d" % i, qos=qos, version=version)
        p = h.Paho(b.port, client_id=cid, version=version, clean=False)
        p.connect()
        # Sorted: paho hands a QoS 2 message over only at PUBREL, so it may
        # pass a later QoS 1 one (the wire order is checked with raw clients).
        h.check_eq(sorted(m.payload for m in p.take(3)), [b"off0", b"off1", b"off2"],
                   "paho level %d offline messages" % version)
        p.expect_nothing(timeout=0.5, what="duplicates")
        p.disconnect()

        cid = h.uid("ms")
        h.MosqSub(b.port, topic, qos=1, version=version, client_id=cid, clean=False).stop()
        for i in range(3):
            h.mosq_pub(b.port, topic, "ms%d" % i, qos=1, version=version)
        with h.MosqSub(b.port, topic, qos=1, version=version, client_id=cid, clean=False) as s:
            h.check_eq([m.payload for m in s.take(3)], [b"ms0", b"ms1", b"ms2"],
                       "mosquitto_sub -c level %d offline messages" % version)


if __name__ == "__main__":
    T.main()
