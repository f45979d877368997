"""Client-id takeover: a second connection with the same client id closes the
first, publishes the first's will, and works; a persistent session moves to
the new connection."""
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

T = h.Tests()


def works_end_to_end(b, c, topic):
    h.check_eq(c.subscribe([(topic, 1)], pid=11), [1], "SUBACK on the new connection")
    c.publish(topic, b"alive", qos=1, pid=12)
    h.check_eq(c.recv_publish().payload, b"alive", "the new connection receives")


@T.case
def second_connection_closes_the_first_and_works(b):
    m = b.metrics()
    before = m.fresh("takeovers")
    cid = h.uid("tk")
    first = h.raw_connected(b.port, cid)
    second = h.raw_connected(b.port, cid)
    h.check_eq(first.wait_closed(), [], "packets sent to the first connection when taken over")
    works_end_to_end(b, second, h.uid("tk") + "/t")
    m.expect_increase("takeovers", before)
    second.disconnect()


@T.case
def takeover_publishes_the_first_connections_will(b):
    topic = h.uid("tw") + "/status"
    w = h.raw_connected(b.port)
    w.subscribe([(topic, 1)])
    for version in h.VERSIONS:
        cid = h.uid("tw")
        first = h.Paho(b.port, client_id=cid, version=version, will=(topic, b"replaced", 1, False))
        first.connect()
        second = h.Paho(b.port, client_id=cid, version=version)
        second.connect()
        h.check(first.disconnected.wait(h.WAIT), "paho level %d: first connection not closed"
                % version)
        p = w.recv_publish()
        h.check_eq((p.topic, p.payload), (topic, b"replaced"), "will of the taken-over connection")
        topic2 = h.uid("tw") + "/data"
        second.subscribe(topic2, 1)
        second.publish(topic2, b"ok", 1)
        h.check_eq(second.get().payload, b"ok", "the new paho connection works")
        second.disconnect()
    w.expect_nothing(what="a will from the clean DISCONNECTs")
    w.disconnect()


@T.case
def takeover_across_protocol_levels(b):
    cid = h.uid("tl")
    first = h.raw_connected(b.port, cid, version=h.MQTTV31)
    second = h.raw_connected(b.port, cid, version=h.MQTTV311)
    h.check_eq(first.wait_closed(), [], "3.1 connection taken over by 3.1.1")
    third = h.raw_connected(b.port, cid, version=h.MQTTV31)
    h.check_eq(second.wait_closed(), [], "3.1.1 connection taken over by 3.1")
    works_end_to_end(b, third, h.uid("tl") + "/t")
    third.disconnect()


@T.case
def persistent_session_moves_to_the_new_connection(b):
    cid, topic = h.uid("tp"), h.uid("tp") + "/t"
    first = h.RawClient(b.port)
    first.connect(cid, clean=False)
    first.subscribe([(topic, 1)])
    pub = h.raw_connected(b.port)
    pub.publish(topic, b"in-flight", qos=1, pid=1)
    p1 = first.recv_publish(ack=False)
    second = h.RawClient(b.port)
    h.check_eq(second.connect(cid, clean=False), True, "session present after a takeover")
    h.check_eq(first.wait_closed(), [], "packets to the taken-over connection")
    p2 = second.expect(h.PUBLISH)
    h.check_eq((p2.payload, p2.pid, p2.dup), (b"in-flight", p1.pid, True),
               "unacknowledged message re-sent on the new connection")
    second.send(h.ack_packet(h.PUBACK, p2.pid))
    pub.publish(topic, b"next", qos=1, pid=2)
    h.check_eq(second.recv_publish().payload, b"next", "subscription kept by the new connection")
    second.disconnect()
    pub.disconnect()


@T.case
def clean_takeover_starts_a_new_session(b):
    cid, topic = h.uid("tc"), h.uid("tc") + "/t"
    first = h.RawClient(b.port)
    first.connect(cid, clean=False)
    first.subscribe([(topic, 1)])
    second = h.RawClient(b.port)
    h.check_eq(second.connect(cid, clean=True), False, "session present with clean session 1")
    h.check_eq(first.wait_closed(), [], "packets to the taken-over connection")
    pub = h.raw_connected(b.port)
    pub.publish(topic, b"old-sub", qos=1, pid=1)
    second.expect_nothing(what="the discarded session's subscription")
    second.disconnect()
    pub.disconnect()


@T.case
def rapid_repeated_takeovers_leave_only_the_last(b):
    m = b.metrics()
    before = m.fresh("takeovers")
    base = m.fresh("broker/clients/connected")
    cid = h.uid("tr")
    conns = [h.raw_connected(b.port, cid) for _ in range(10)]
    for i, c in enumerate(conns[:-1]):
        h.check_eq(c.wait_closed(), [], "connection %d of 10" % i)
    works_end_to_end(b, conns[-1], h.uid("tr") + "/t")
    m.expect_increase("takeovers", before, by=9)
    m.wait_for("broker/clients/connected", lambda v: v == base + 1, what="one client left")
    conns[-1].disconnect()


if __name__ == "__main__":
    T.main()
