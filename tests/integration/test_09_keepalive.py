"""Keepalive: PINGREQ gets PINGRESP; silence beyond 1.5 x keepalive closes
the connection; any packet counts as activity; keepalive 0 never times out."""
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

T = h.Tests()


@T.case
def pingreq_gets_pingresp_at_both_levels(b):
    for version in h.VERSIONS:
        c = h.raw_connected(b.port, version=version)
        for _ in range(3):
            c.send(h.PINGREQ_PACKET)
            p = c.expect(h.PINGRESP)
            h.check_eq((p.flags, p.body), (0, b""), "PINGRESP is exactly 0xD0 0x00")
        c.disconnect()


@T.case
def silent_client_closed_after_one_and_a_half_keepalives(b):
    m = b.metrics()
    before = m.fresh("keepalive_timeouts")
    clients = []
    for version in h.VERSIONS:  # side by side, each timed from its own CONNECT
        c = h.RawClient(b.port)
        t0 = time.monotonic()
        c.connect(h.uid("ka"), keepalive=1, version=version)
        clients.append((version, c, t0))
    for version, c, t0 in clients:
        h.check_eq(c.wait_closed(timeout=12), [], "packets before the keepalive close")
        elapsed = time.monotonic() - t0
        h.check(1.2 < elapsed < h.KEEPALIVE_LATE,
                "level %d, keepalive 1s: closed after %.2fs, expected about 1.5s"
                % (version, elapsed))
    m.expect_increase("keepalive_timeouts", before, by=2)


@T.case
def pingreqs_keep_the_connection_open(b):
    c = h.raw_connected(b.port, keepalive=1)
    end = time.monotonic() + 3.5
    while time.monotonic() < end:
        time.sleep(0.4)
        c.send(h.PINGREQ_PACKET)
        c.expect(h.PINGRESP, what="PINGREQ every 0.4s with keepalive 1s")
    c.disconnect()


@T.case
def any_packet_counts_as_activity(b):
    topic = h.uid("act") + "/t"
    c = h.raw_connected(b.port, keepalive=1)
    end = time.monotonic() + 3.5
    n = 0
    while time.monotonic() < end:
        time.sleep(0.4)
        n += 1
        c.publish(topic, b"x", qos=1, pid=n)  # no PINGREQ at all
    c.send(h.PINGREQ_PACKET)
    c.expect(h.PINGRESP, what="after 3.5s of PUBLISHes with keepalive 1s")
    c.disconnect()


@T.case
def keepalive_zero_never_times_out(b):
    c = h.raw_connected(b.port, keepalive=0)
    c.expect_nothing(timeout=4.0, what="keepalive 0 connection")
    c.send(h.PINGREQ_PACKET)
    c.expect(h.PINGRESP, what="keepalive 0 connection after 4s of silence")
    c.disconnect()


@T.case
def paho_and_mosquitto_keepalive_pings_are_answered(b):
    # Real clients ping on their own and must stay connected: paho at keepalive
    # 1s, mosquitto_sub at its minimum of 5s; all four run side by side.
    topic = h.uid("kp") + "/t"
    pahos = [h.Paho(b.port, version=v, keepalive=1) for v in h.VERSIONS]
    subs = [h.MosqSub(b.port, topic, version=v, extra=["-k", "5"]) for v in h.VERSIONS]
    try:
        for p in pahos:
            p.connect()
            p.subscribe(topic, 1)
        for s in subs:
            s.wait_for_line("received PINGRESP", timeout=15)
        for p in pahos:
            h.check(not p.disconnected.is_set(), "paho %s lost its connection" % p.client_id)
        pahos[0].publish(topic, b"still-here", 1)
        for p in pahos:
            h.check_eq(p.get().payload, b"still-here", "paho after seconds at keepalive 1")
        for s in subs:
            h.check_eq(s.take(1)[0].payload, b"still-here", "mosquitto_sub after its PINGRESP")
    finally:
        for s in subs:
            s.stop()
        for p in pahos:
            p.disconnect()


if __name__ == "__main__":
    T.main()
