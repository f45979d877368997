"""Publisher back-pressure: a connected subscriber whose queue backs up pauses
its publishers instead of dropping QoS 1/2 messages, bounded by
--backpressure-timeout; and the pause survives the publisher or the
subscriber going away (regressions: a taken-over paused publisher once left
its subscriber on the broker's list, giving a use-after-free or a hang)."""
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

T = h.Tests()

OPTS = dict(max_inflight=1, max_queued_messages=10, backpressure_timeout="10s")


def send_burst(pub, topic, n, first_pid=1):
    """Sends n QoS 1 publishes without waiting for their PUBACKs."""
    for i in range(n):
        pub.send(h.publish_packet(topic, b"%03d" % i, qos=1, pid=first_pid + i))


def pause_a_publisher(b, topic):
    """A subscriber that never acknowledges, and a publisher paused by it."""
    sub = h.raw_connected(b.port)
    sub.subscribe([(topic, 1)])
    cid = h.uid("bp")
    pub = h.raw_connected(b.port, cid)
    send_burst(pub, topic, 12)
    time.sleep(0.5)
    return sub, pub, cid


def broker_answers(b):
    c = h.raw_connected(b.port)
    c.send(h.packet(0xC0))
    h.check_eq(c.expect(h.PINGRESP, timeout=5).name, "PINGRESP", "PINGRESP from the broker")
    c.disconnect()


@T.case
def slow_subscriber_pauses_publisher_and_loses_nothing(b):
    with h.Broker(**OPTS) as b2:
        topic = h.uid("bp") + "/t"
        m = b2.metrics()
        before = m.fresh("messages_dropped")
        sub = h.raw_connected(b2.port)
        sub.subscribe([(topic, 1)])
        pub = h.raw_connected(b2.port)
        send_burst(pub, topic, 40)
        got = []
        while len(got) < 40:
            p = sub.recv_publish(timeout=10, ack=True)
            got.append(int(p.payload))
        h.check_eq(got, list(range(40)), "every message, in order, with a queue of 10")
        m.wait_for("messages_dropped", lambda v: v == before, what="no drop")
        sub.disconnect()
        pub.disconnect()


@T.case
def paused_publisher_taken_over_then_subscriber_leaves(b):
    with h.Broker(**OPTS) as b2:
        topic = h.uid("bp") + "/t"
        sub, pub, cid = pause_a_publisher(b2, topic)
        again = h.raw_connected(b2.port, cid)   # takes the paused publisher over
        pub.wait_closed()
        sub.close()                             # its clean session is freed
        time.sleep(0.5)                         # the tick looks at paused sessions
        broker_answers(b2)
        again.disconnect()


@T.case
def paused_publisher_taken_over_then_new_connection_publishes(b):
    with h.Broker(**OPTS) as b2:
        topic = h.uid("bp") + "/t"
        sub, pub, cid = pause_a_publisher(b2, topic)
        again = h.raw_connected(b2.port, cid)
        pub.wait_closed()
        send_burst(again, topic, 12, first_pid=100)  # pauses again on the same subscriber
        time.sleep(0.5)
        broker_answers(b2)
        sub.close()
        again.close()


@T.case
def stalled_subscriber_releases_publishers_after_the_timeout(b):
    with h.Broker(max_inflight=1, max_queued_messages=10, backpressure_timeout="1s") as b2:
        topic = h.uid("bp") + "/t"
        sub = h.raw_connected(b2.port)
        sub.subscribe([(topic, 1)])
        pub = h.raw_connected(b2.port)
        start = time.monotonic()
        for i in range(30):       # waits for each PUBACK: blocks while paused
            pub.publish(topic, b"x", qos=1, pid=i + 1)
        h.check(time.monotonic() - start < 8, "publisher released within the timeout's order")
        sub.close()
        pub.disconnect()


if __name__ == "__main__":
    T.main()
