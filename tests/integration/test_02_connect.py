"""CONNECT handling: protocol levels and names, the first and second packet,
the connect timeout, zero-length client ids, anonymous access."""
import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

T = h.Tests()


@T.case
def both_protocol_levels_accepted_raw(b):
    for version in h.VERSIONS:
        c = h.RawClient(b.port)
        present = c.connect(h.uid("lvl"), version=version)
        h.check(not present, "session present for a new clean session (level %d)" % version)
        c.send(h.PINGREQ_PACKET)
        c.expect(h.PINGRESP, what="PINGREQ after CONNECT at level %d" % version)
        c.disconnect()


@T.case
def both_protocol_levels_work_end_to_end_with_paho(b):
    for version in h.VERSIONS:
        topic = h.uid("lvl") + "/x"
        with h.Paho(b.port, version=version) as sub, h.Paho(b.port, version=version) as pub:
            h.check_eq(sub.subscribe(topic, 1), [1], "granted QoS (paho level %d)" % version)
            pub.publish(topic, b"hello", 1)
            m = sub.get()
            h.check_eq((m.topic, m.payload), (topic, b"hello"), "delivered (level %d)" % version)


@T.case
def both_protocol_levels_work_with_mosquitto_clients(b):
    for version in h.VERSIONS:
        topic = h.uid("lvl") + "/m"
        with h.MosqSub(b.port, topic, qos=1, version=version) as sub:
            h.mosq_pub(b.port, topic, "via-%d" % version, qos=1, version=version)
            m = sub.take(1)[0]
            h.check_eq((m.topic, m.payload), (topic, b"via-%d" % version), "delivered")


@T.case
def unknown_protocol_level_gets_connack_1_then_close(b):
    m = b.metrics()
    before = m.fresh("connections_rejected")
    levels = [0, 2, 6, 0x7F] + ([5] if b.relaymq else [])  # 5 is MQTT 5, which Mosquitto speaks
    for level in levels:
        c = h.RawClient(b.port)
        c.send(h.connect_packet(h.uid("lvl"), version=level, proto_name="MQTT"))
        got = c.wait_closed()
        h.check(len(got) == 1 and got[0].type == h.CONNACK,
                "level %d: expected one CONNACK then close, got %r" % (level, got))
        h.check_eq(got[0].body[1], 0x01, "CONNACK code for protocol level %d" % level)
    m.expect_increase("connections_rejected", before, by=len(levels))


@T.case
def mismatched_protocol_name_and_level_gets_connack_1_or_close(b):
    # "MQIsdp" is level 3 only and "MQTT" level 4: a mix is an unacceptable level.
    for name, level in (("MQIsdp", 4), ("MQTT", 3)):
        c = h.RawClient(b.port)
        c.send(h.connect_packet(h.uid("mix"), version=level, proto_name=name))
        got = c.wait_closed()
        h.check(got == [] or (len(got) == 1 and got[0].type == h.CONNACK and got[0].body[1] == 1),
                "%s/%d: expected close, optionally after CONNACK 0x01; got %r" % (name, level, got))


@T.case
def wrong_protocol_name_closes(b):
    # [MQTT-3.1.2-1]: the server MAY disconnect; a CONNACK 0x01 first is tolerated.
    for name in ("MQTX", "mqtt", "", "MQTTMQTT"):
        c = h.RawClient(b.port)
        c.send(h.connect_packet(h.uid("name"), proto_name=name))
        got = c.wait_closed()
        h.check(got == [] or (len(got) == 1 and got[0].type == h.CONNACK and got[0].body[1] != 0),
                "protocol name %r: expected close, optionally after a refusing CONNACK; got %r"
                % (name, got))


@T.case
def first_packet_not_connect_closes(b):
    firsts = {
        "PINGREQ": h.PINGREQ_PACKET,
        "PUBLISH": h.publish_packet("a/b", b"x"),
        "SUBSCRIBE": h.subscribe_packet(1, [("a/b", 0)]),
        "DISCONNECT": h.DISCONNECT_PACKET,
        "CONNACK": h.packet(0x20, b"\x00\x00"),
    }
    m = b.metrics()
    before = m.fresh("protocol_errors")
    for name, data in firsts.items():
        c = h.RawClient(b.port)
        c.send(data)
        got = c.wait_closed()
        h.check_eq(got, [], "packets sent back to a first %s" % name)
    # DISCONNECT first may be counted as a plain close rather than an error.
    m.expect_increase("protocol_errors", before, by=len(firsts) - 1)


@T.case
def second_connect_closes_and_counts_protocol_error(b):
    m = b.metrics()
    before = m.fresh("protocol_errors")
    cid = h.uid("twice")
    c = h.raw_connected(b.port, cid)
    c.send(h.connect_packet(cid))
    h.check_eq(c.wait_closed(), [], "packets sent back to a second CONNECT")
    m.expect_increase("protocol_errors", before)
    # The client id is free again: a new connection with it works.
    c2 = h.raw_connected(b.port, cid)
    c2.send(h.PINGREQ_PACKET)
    c2.expect(h.PINGRESP)
    c2.disconnect()


@T.case
def connect_split_byte_by_byte_is_accepted(b):
    c = h.RawClient(b.port)
    data = h.connect_packet(h.uid("slow"), keepalive=30)
    for i in range(len(data)):
        c.send(data[i:i + 1])
        time.sleep(0.01)
    p = c.expect(h.CONNACK)
    h.check_eq(p.body, b"\x00\x00", "CONNACK body")
    c.disconnect()


@T.case
def packets_pipelined_in_one_write_are_all_handled(b):
    topic = h.uid("pipe") + "/t"
    c = h.RawClient(b.port)
    c.send(h.connect_packet(h.uid("pipe")) + h.subscribe_packet(1, [(topic, 1)])
           + h.publish_packet(topic, b"piped", qos=1, pid=5) + h.PINGREQ_PACKET)
    h.check_eq(c.expect(h.CONNACK).body, b"\x00\x00", "CONNACK")
    h.check_eq(c.expect(h.SUBACK).body, b"\x00\x01\x01", "SUBACK")
    got = sorted((p.type, p.pid) for p in (c.recv_packet(), c.recv_packet(), c.recv_packet()))
    h.check_eq([t for t, _ in got], [h.PUBLISH, h.PUBACK, h.PINGRESP], "rest of the answers")
    h.check_eq(got[1][1], 5, "PUBACK id")
    c.disconnect()


@T.case
def connect_timeout_closes_silent_and_half_connect_sockets(b):
    h.relaymq_only("--connect-timeout")
    with h.Broker(connect_timeout="1s") as b2:
        m = b2.metrics()
        before = m.fresh("connect_timeouts")
        silent = h.RawClient(b2.port)
        half = h.RawClient(b2.port)
        half.send(h.connect_packet(h.uid("half"))[:7])
        t0 = time.monotonic()
        h.check_eq(silent.wait_closed(timeout=8), [], "packets sent to a silent socket")
        h.check_eq(half.wait_closed(timeout=8), [], "packets sent to a half CONNECT")
        elapsed = time.monotonic() - t0
        h.check(elapsed > 0.7, "closed after %.2fs, before the 1s connect timeout" % elapsed)
        m.expect_increase("connect_timeouts", before, by=2)
        # A client that connects in time is not affected by the timer.
        c = h.raw_connected(b2.port)
        time.sleep(1.8)
        c.send(h.PINGREQ_PACKET)
        c.expect(h.PINGRESP, what="connected client after the connect timeout passed")
        c.disconnect()


@T.case
def zero_length_client_id_with_clean_session_works_end_to_end(b):
    topic = h.uid("anon") + "/t"
    a = h.RawClient(b.port)
    a.connect("", clean=True)
    c = h.RawClient(b.port)
    c.connect("", clean=True)
    # Two such clients get different ids: neither takes the other over.
    h.check_eq(a.subscribe([(topic, 1)]), [1], "SUBACK of first anonymous-id client")
    h.check_eq(c.subscribe([(topic, 1)], pid=7), [1], "SUBACK of second anonymous-id client")
    c.publish(topic, b"both", qos=1, pid=3)
    for who in (a, c):
        p = who.recv_publish()
        h.check_eq((p.topic, p.payload, p.qos), (topic, b"both", 1), "delivered to both")
    a.disconnect()
    c.disconnect()
    # mosquitto_pub without -i cannot send an empty id, paho can.
    with h.Paho(b.port, client_id="", clean=True) as p:
        h.check_eq(p.subscribe(topic, 0), [0], "paho with empty client id")
        p.publish(topic, b"self", 0)
        h.check_eq(p.get().payload, b"self", "paho with empty client id received")


@T.case
def zero_length_client_id_without_clean_session_gets_connack_2(b):
    m = b.metrics()
    before = m.fresh("connections_rejected")
    c = h.RawClient(b.port)
    c.send(h.connect_packet("", clean=False))
    got = c.wait_closed()
    h.check(len(got) == 1 and got[0].type == h.CONNACK, "expected CONNACK then close, got %r" % got)
    h.check_eq(got[0].body[1], 0x02, "CONNACK code for empty id with clean session 0")
    m.expect_increase("connections_rejected", before)


@T.case
def zero_length_client_id_at_mqtt31_gets_connack_2(b):
    # MQTT 3.1 requires a client id of 1 to 23 characters.
    c = h.RawClient(b.port)
    c.send(h.connect_packet("", clean=True, version=h.MQTTV31))
    got = c.wait_closed()
    h.check(len(got) == 1 and got[0].type == h.CONNACK and got[0].body[1] == 0x02,
            "expected CONNACK 0x02 then close, got %r" % got)


@T.case
def anonymous_refused_when_not_allowed(b):
    with h.Broker(allow_anonymous=False) as b2:
        for version in h.VERSIONS:
            c = h.RawClient(b2.port)
            c.send(h.connect_packet(h.uid("anon"), version=version))
            got = c.wait_closed()
            h.check(len(got) == 1 and got[0].type == h.CONNACK,
                    "level %d: expected CONNACK then close, got %r" % (version, got))
            h.check_eq(got[0].body[1], 0x05, "CONNACK code for an anonymous CONNECT")
        p = h.Paho(b2.port)
        p.connect(rc=5)
        r = subprocess.run(["mosquitto_pub", "-h", h.HOST, "-p", str(b2.port), "-t", "a",
                              "-m", "x"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             timeout=30)
        h.check(r.returncode != 0, "mosquitto_pub succeeded against allow-anonymous false")
        h.check(b"not authorised" in r.stdout.lower() or b"not authorized" in r.stdout.lower(),
                "mosquitto_pub's error names authorisation: %r" % r.stdout)


@T.case
def connected_clients_gauge_follows_connections(b):
    m = b.metrics()
    base = m.fresh("broker/clients/connected")
    clients = [h.raw_connected(b.port) for _ in range(3)]
    m.wait_for("broker/clients/connected", lambda v: v == base + 3,
               what="gauge with 3 more clients")
    for c in clients:
        c.disconnect()
    m.wait_for("broker/clients/connected", lambda v: v == base, what="gauge back to base")


if __name__ == "__main__":
    T.main()
