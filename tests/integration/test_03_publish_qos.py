"""PUBLISH at QoS 0, 1 and 2 in both directions: the exact acknowledgement
flows on the wire, exactly-once for QoS 2 re-sends, QoS downgrade to the
granted QoS, the in-flight window, and the same with real clients."""
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

T = h.Tests()


def subscriber(b, topic, qos):
    c = h.raw_connected(b.port)
    h.check_eq(c.subscribe([(topic, qos)]), [qos], "SUBACK for %s at QoS %d" % (topic, qos))
    return c


@T.case
def qos0_publish_is_not_acknowledged_and_is_delivered(b):
    topic = h.uid("q0") + "/t"
    sub = subscriber(b, topic, 2)
    pub = h.raw_connected(b.port)
    pub.send(h.publish_packet(topic, b"zero", qos=0))
    p = sub.expect(h.PUBLISH)
    h.check_eq((p.topic, p.payload, p.qos, p.dup, p.retain), (topic, b"zero", 0, False, False),
               "QoS 0 delivery")
    h.check_eq(p.pid, None, "QoS 0 PUBLISH carries no packet id")
    pub.expect_nothing(what="publisher of a QoS 0 message")
    sub.expect_nothing(what="subscriber after one QoS 0 message")
    pub.disconnect()
    sub.disconnect()


@T.case
def qos1_puback_flow_both_directions(b):
    topic = h.uid("q1") + "/t"
    sub = subscriber(b, topic, 1)
    pub = h.raw_connected(b.port)
    pub.send(h.publish_packet(topic, b"one", qos=1, pid=0x1234))
    ack = pub.expect(h.PUBACK)
    h.check_eq((ack.flags, ack.body), (0, b"\x12\x34"), "PUBACK flags and body")
    p = sub.expect(h.PUBLISH)
    h.check_eq((p.payload, p.qos, p.dup, p.retain), (b"one", 1, False, False), "QoS 1 delivery")
    h.check(p.pid != 0, "outgoing QoS 1 packet id must be non-zero")
    sub.send(h.ack_packet(h.PUBACK, p.pid))
    sub.expect_nothing(what="subscriber after PUBACK")
    pub.expect_nothing(what="publisher after PUBACK")
    pub.disconnect()
    sub.disconnect()


@T.case
def qos2_pubrec_pubrel_pubcomp_flow_both_directions(b):
    topic = h.uid("q2") + "/t"
    sub = subscriber(b, topic, 2)
    pub = h.raw_connected(b.port)
    pub.send(h.publish_packet(topic, b"two", qos=2, pid=77))
    rec = pub.expect(h.PUBREC)
    h.check_eq((rec.flags, rec.pid, len(rec.body)), (0, 77, 2), "PUBREC flags, id, length")
    pub.send(h.ack_packet(h.PUBREL, 77))
    comp = pub.expect(h.PUBCOMP)
    h.check_eq((comp.flags, comp.pid, len(comp.body)), (0, 77, 2), "PUBCOMP flags, id, length")

    p = sub.expect(h.PUBLISH)
    h.check_eq((p.payload, p.qos, p.dup), (b"two", 2, False), "QoS 2 delivery")
    h.check(p.pid != 0, "outgoing QoS 2 packet id must be non-zero")
    sub.send(h.ack_packet(h.PUBREC, p.pid))
    rel = sub.expect(h.PUBREL)
    h.check_eq((rel.flags, rel.pid, len(rel.body)), (0x2, p.pid, 2),
               "PUBREL to subscriber: flags 0b0010, same id")
    sub.send(h.ack_packet(h.PUBCOMP, p.pid))
    sub.expect_nothing(what="subscriber after PUBCOMP")
    pub.disconnect()
    sub.disconnect()


@T.case
def qos2_resend_with_dup_before_pubrel_is_delivered_once(b):
    topic = h.uid("dup") + "/t"
    m = b.metrics()
    before = m.fresh("messages_duplicate_qos2")
    sub = subscriber(b, topic, 2)
    pub = h.raw_connected(b.port)
    pub.send(h.publish_packet(topic, b"once", qos=2, pid=9))
    h.check_eq(pub.expect(h.PUBREC).pid, 9, "PUBREC for the first send")
    # As if the PUBREC was lost: the same id again with DUP. (Twice against
    # RelayMQ; once against Mosquitto 2.0.11, which closes on a second re-send.)
    resends = 2 if b.relaymq else 1
    for _ in range(resends):
        pub.send(h.publish_packet(topic, b"once", qos=2, pid=9, dup=True))
        h.check_eq(pub.expect(h.PUBREC).pid, 9, "PUBREC again for the DUP re-send")
    pub.send(h.ack_packet(h.PUBREL, 9))
    h.check_eq(pub.expect(h.PUBCOMP).pid, 9, "PUBCOMP")
    got = sub.recv_publish()
    h.check_eq(got.payload, b"once", "delivered payload")
    sub.expect_nothing(timeout=1.5, what="second copy of a QoS 2 message re-sent with DUP")
    m.expect_increase("messages_duplicate_qos2", before, by=resends)

    # The id is free after PUBCOMP: a new message with it is a new message.
    pub.publish(topic, b"again", qos=2, pid=9)
    h.check_eq(sub.recv_publish().payload, b"again", "new message reusing packet id 9")
    sub.expect_nothing(what="after the reused id")
    pub.disconnect()
    sub.disconnect()


@T.case
def incoming_dup_flag_is_not_propagated_and_empty_payloads_pass(b):
    # [MQTT-3.3.1-3]: the DUP flag of an incoming PUBLISH is not passed on.
    topic = h.uid("df") + "/t"
    sub = subscriber(b, topic, 2)
    pub = h.raw_connected(b.port)
    pub.publish(topic, b"first-send-flagged-dup", qos=1, pid=3, dup=True)
    p = sub.recv_publish()
    h.check_eq((p.payload, p.dup), (b"first-send-flagged-dup", False), "DUP of the delivery")
    for qos in (0, 1, 2):
        pub.publish(topic, b"", qos=qos, pid=10 + qos)
        p = sub.recv_publish()
        h.check_eq((p.payload, p.qos), (b"", qos), "empty payload at QoS %d" % qos)
    pub.disconnect()
    sub.disconnect()


@T.case
def pubrel_for_unknown_id_gets_pubcomp(b):
    # [MQTT-4.3.3]: the receiver answers every PUBREL with PUBCOMP (a resumed flow).
    c = h.raw_connected(b.port)
    c.send(h.ack_packet(h.PUBREL, 4242))
    comp = c.expect(h.PUBCOMP)
    h.check_eq(comp.pid, 4242, "PUBCOMP id")
    c.send(h.PINGREQ_PACKET)
    c.expect(h.PINGRESP, what="connection still usable")
    c.disconnect()


@T.case
def delivered_qos_is_min_of_published_and_granted(b):
    topic = h.uid("cap") + "/t"
    subs = {q: subscriber(b, topic, q) for q in (0, 1, 2)}
    pub = h.raw_connected(b.port)
    for pub_qos in (0, 1, 2):
        payload = b"p%d" % pub_qos
        pub.publish(topic, payload, qos=pub_qos, pid=100 + pub_qos)
        for sub_qos, sub in subs.items():
            p = sub.recv_publish()
            h.check_eq((p.payload, p.qos), (payload, min(pub_qos, sub_qos)),
                       "published at QoS %d, granted %d" % (pub_qos, sub_qos))
    for s in subs.values():
        s.expect_nothing(what="extra deliveries")
        s.disconnect()
    pub.disconnect()


@T.case
def own_messages_are_delivered_to_a_subscribed_publisher(b):
    topic = h.uid("self") + "/t"
    c = subscriber(b, topic, 2)
    for qos in (0, 1, 2):
        c.publish(topic, b"me%d" % qos, qos=qos, pid=qos + 1)
        p = c.recv_publish()
        h.check_eq((p.payload, p.qos), (b"me%d" % qos, qos), "own message back")
    c.disconnect()


@T.case
def outgoing_packet_ids_unique_and_inflight_window_respected(b):
    # --max-inflight 3: a subscriber that does not ack gets 3, then one per ack.
    with h.Broker(max_inflight=3) as b2:
        topic = h.uid("win") + "/t"
        sub = subscriber(b2, topic, 1)
        pub = h.raw_connected(b2.port)
        for i in range(6):
            pub.publish(topic, b"m%d" % i, qos=1, pid=i + 1)
        first = [sub.recv_publish(ack=False) for _ in range(3)]
        h.check_eq([p.payload for p in first], [b"m0", b"m1", b"m2"], "first window, in order")
        h.check_eq(len({p.pid for p in first}), 3, "distinct packet ids in flight")
        sub.expect_nothing(timeout=1.5, what="a 4th message beyond --max-inflight 3")
        sub.send(h.ack_packet(h.PUBACK, first[0].pid))
        h.check_eq(sub.recv_publish().payload, b"m3", "next message after one PUBACK")
        for p in first[1:]:
            sub.send(h.ack_packet(h.PUBACK, p.pid))
        h.check_eq([sub.recv_publish().payload for _ in range(2)], [b"m4", b"m5"], "the rest")
        sub.expect_nothing(what="after all 6")
        pub.disconnect()
        sub.disconnect()


@T.case
def slow_qos0_subscriber_loses_messages_and_drops_are_counted(b):
    # A subscriber that does not read: its QoS 0 backlog is bounded by
    # --max-output-buffer; what does not fit is dropped and counted, in order
    # for the rest, and a fast subscriber of the same topic loses nothing.
    h.relaymq_only("--max-output-buffer")
    with h.Broker(extra=["--max-output-buffer", "64k"]) as b2:
        m = b2.metrics()
        before = m.fresh("messages_dropped")
        topic = h.uid("slow") + "/t"
        slow = h.RawClient(b2.port, rcvbuf=4096)
        slow.connect(h.uid("slow"))
        slow.subscribe([(topic, 0)])
        fast = subscriber(b2, topic, 0)
        pub = h.raw_connected(b2.port)
        n = 5000
        for i in range(n):
            pub.send(h.publish_packet(topic, b"%05d" % i + bytes(1019)))
            if i % 100 == 99:  # the fast one keeps up, and paces the publisher
                got = [int(fast.recv_publish().payload[:5]) for _ in range(100)]
                h.check_eq(got, list(range(i - 99, i + 1)), "fast subscriber")
        seen = []
        while True:
            try:
                seen.append(int(slow.recv_publish(timeout=2.0).payload[:5]))
            except h.NoPacket:
                break
        h.check(0 < len(seen) < n, "slow subscriber got %d of %d with a 64k buffer"
                % (len(seen), n))
        h.check_eq(seen, sorted(set(seen)), "what the slow subscriber got is in order, once each")
        m.wait_for("messages_dropped", lambda v: v - before == n - len(seen),
                   what="messages_dropped must count the %d not delivered" % (n - len(seen)))
        for c in (slow, fast, pub):
            c.disconnect()


@T.case
def mosquitto_clients_at_each_qos_and_version(b):
    for version in h.VERSIONS:
        for qos in (0, 1, 2):
            topic = h.uid("mq") + "/t"
            with h.MosqSub(b.port, topic, qos=qos, version=version) as sub:
                h.mosq_pub(b.port, topic, "v%d-q%d" % (version, qos), qos=qos, version=version)
                got = sub.take(1)[0]
                h.check_eq((got.payload, got.qos, got.retain), (b"v%d-q%d" % (version, qos), qos,
                                                                 False),
                           "mosquitto level %d QoS %d" % (version, qos))
                sub.expect_nothing(timeout=0.5, what="duplicate")


@T.case
def paho_at_each_qos_and_version(b):
    for version in h.VERSIONS:
        topic = h.uid("pq") + "/t"
        with h.Paho(b.port, version=version) as sub, h.Paho(b.port, version=version) as pub:
            h.check_eq(sub.subscribe(topic, 2), [2], "granted")
            for qos in (0, 1, 2):
                pub.publish(topic, b"q%d" % qos, qos)
                got = sub.get()
                h.check_eq((got.payload, got.qos, got.dup), (b"q%d" % qos, qos, False),
                           "paho level %d QoS %d" % (version, qos))
            sub.expect_nothing(timeout=0.5, what="duplicate")


if __name__ == "__main__":
    T.main()
