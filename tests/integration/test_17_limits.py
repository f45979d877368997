"""Connection and publish limits (issue 7): --max-connections (node and
listener), --max-connection-rate, --max-publish-rate, --max-publish-bytes-rate
and --max-queued-bytes. Each limit has a counter; a connection over a
connection limit is closed at accept, a publisher over a rate is slowed (its
reads paused) without losing anything, and a session's queue beyond its byte
bound drops exactly the excess. All RelayMQ-only."""
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

T = h.Tests()


def closed_at_once(port, what):
    """Opens a connection, sends CONNECT, and asserts it is closed within a
    second without a CONNACK."""
    c = h.RawClient(port)
    try:
        c.send(h.connect_packet(h.uid("lim")))
    except OSError:
        pass  # already closed: the broker did not wait for CONNECT
    got = c.wait_closed(timeout=1.0)
    h.check_eq(got, [], "%s: packets before the close" % what)
    c.close()


def try_connect(port):
    """True if a CONNECT got CONNACK 0, False if the connection was closed."""
    c = h.RawClient(port)
    try:
        c.send(h.connect_packet(h.uid("lim")))
        p = c.recv_packet(timeout=2.0)
        h.check_eq(p.type, h.CONNACK, "first packet")
        return c
    except (h.Closed, OSError):
        c.close()
        return None


@T.case
def node_max_connections_closes_the_extra_one(b):
    h.relaymq_only("--max-connections")
    with h.Broker(max_connections=3) as b2:
        m = b2.metrics()  # the metrics subscriber is connection 1
        h.check_eq(m.fresh("connections_limited"), 0, "connections_limited at start")
        c1 = h.raw_connected(b2.port)
        c2 = h.raw_connected(b2.port)
        closed_at_once(b2.port, "fourth connection")
        m.wait_for("connections_limited", lambda v: v == 1, what="one limited")
        c1.disconnect()
        c3 = h.wait_until(lambda: try_connect(b2.port), what="a slot after a close")
        c3.disconnect()
        c2.disconnect()
        m.wait_for("connections_limited", lambda v: v >= 1, what="counter kept")


@T.case
def listener_max_connections_closes_the_extra_one(b):
    h.relaymq_only("max-connections=")
    port2 = h.free_port()
    with h.Broker(extra=["--listen", "%s:%d?max-connections=2" % (h.HOST, port2)]) as b2:
        m = b2.metrics()
        before = m.fresh("connections_limited")
        c1 = h.raw_connected(port2)
        c2 = h.raw_connected(port2)
        closed_at_once(port2, "third connection on the listener")
        m.wait_for("connections_limited", lambda v: v == before + 1, what="one limited")
        # The other listener is not limited by this one.
        others = [h.raw_connected(b2.port) for _ in range(3)]
        for c in others + [c1, c2]:
            c.disconnect()


@T.case
def connection_rate_closes_the_excess_within_a_second(b):
    h.relaymq_only("max-connection-rate=")
    port2 = h.free_port()
    with h.Broker(extra=["--listen", "%s:%d?max-connection-rate=3" % (h.HOST, port2)]) as b2:
        m = b2.metrics()
        before = m.fresh("connections_rate_limited")
        kept, refused = [], 0
        t0 = time.monotonic()
        for _ in range(10):  # each refused one is closed before its CONNECT is answered
            c = try_connect(port2)
            if c:
                kept.append(c)
            else:
                refused += 1
        elapsed = time.monotonic() - t0
        # A one-second window: 3 per window, at most two windows if the burst
        # (well under a second) straddled a boundary.
        h.check(elapsed < 1.0, "the burst of 10 connections took %.1fs" % elapsed)
        h.check(3 <= len(kept) <= 6, "kept %d of 10 at 3 per second" % len(kept))
        m.wait_for("connections_rate_limited", lambda v: v == before + refused,
                   what="counter equals the %d refused" % refused)
        for c in kept:
            c.disconnect()
        time.sleep(1.1)  # a new window admits again
        c = try_connect(port2)
        h.check(c is not None, "a connection in a new window is accepted")
        c.disconnect()


def rate_case(opts, n, payload, min_seconds):
    with h.Broker(**opts) as b2:
        m = b2.metrics()
        dropped = m.fresh("messages_dropped")
        paused = m.fresh("publish_rate_limited")
        topic = h.uid("rate") + "/t"
        sub = h.Paho(b2.port)
        sub.connect()
        sub.subscribe(topic, 1)
        pub = h.raw_connected(b2.port)
        t0 = time.monotonic()
        for i in range(n):
            pub.send(h.publish_packet(topic, payload(i), qos=1, pid=i + 1))
        got = sub.take(n, timeout=60)
        elapsed = time.monotonic() - t0
        sys.stderr.write("%d messages in %.2fs (lower bound %.2fs)\n" % (n, elapsed, min_seconds))
        h.check_eq([bytes(x.payload) for x in got], [payload(i) for i in range(n)],
                   "every message, in order")
        for i in range(n):  # every PUBACK came back
            h.check_eq(pub.expect(h.PUBACK).pid, i + 1, "PUBACK packet id")
        h.check(elapsed >= min_seconds,
                "%d messages took %.2fs; the rate implies at least %.2fs"
                % (n, elapsed, min_seconds))
        m.wait_for("publish_rate_limited", lambda v: v > paused, what="pauses counted")
        m.expect_unchanged("messages_dropped", dropped, settle=1.5)
        pub.disconnect()
        sub.disconnect()


@T.case
def publish_rate_slows_without_dropping(b):
    h.relaymq_only("--max-publish-rate")
    # 300 at 100/s with one second of burst: >= 2 s; 0.5 s of margin.
    rate_case(dict(max_publish_rate=100), 300, lambda i: b"%05d" % i, 1.5)


@T.case
def publish_bytes_rate_slows_without_dropping(b):
    h.relaymq_only("--max-publish-bytes-rate")
    # 300 x 100 bytes = 30000 at 10240/s with one second of burst: >= 1.93 s.
    rate_case(dict(max_publish_bytes_rate="10k"), 300, lambda i: (b"%05d" % i) * 20, 1.4)


@T.case
def max_queued_bytes_drops_the_excess_for_an_offline_session(b):
    h.relaymq_only("--max-queued-bytes")
    with h.Broker(max_queued_bytes="1k") as b2:
        m = b2.metrics()
        dropped = m.fresh("messages_dropped")
        qdropped = m.fresh("queue_bytes_dropped")
        topic = h.uid("qb") + "/t"
        cid = h.uid("qb")
        sub = h.raw_connected(b2.port, cid, clean=False)
        sub.subscribe([(topic, 1)])
        sub.disconnect()
        pub = h.raw_connected(b2.port)
        for i in range(20):  # 100 bytes each: 10 fit in 1024, 10 do not
            pub.publish(topic, b"%03d" % i + b"x" * 97, qos=1, pid=i + 1)
        pub.disconnect()
        m.wait_for("queue_bytes_dropped", lambda v: v == qdropped + 10, what="10 over the bound")
        m.wait_for("messages_dropped", lambda v: v == dropped + 10, what="10 dropped")
        sub = h.RawClient(b2.port)
        h.check(sub.connect(cid, clean=False), "session present")
        got = [int(sub.recv_publish().payload[:3]) for _ in range(10)]
        h.check_eq(got, list(range(10)), "the first 10, in order")
        sub.expect_nothing(what="nothing beyond the bound")
        sub.disconnect()
        m.expect_unchanged("queue_bytes_dropped", qdropped + 10, settle=1.5)


if __name__ == "__main__":
    T.main()
