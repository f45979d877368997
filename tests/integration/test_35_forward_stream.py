#!/usr/bin/env python3
"""Node-to-node streams (docs/cluster.md, "Forwarding"): how nodes forward
messages to each other, spoken here by hand as a peer node does, and
between two real nodes when the stream breaks.

A real redis-server and two nodes n1, n2 (node TTL 30 s, so a node stopped
for a few seconds is not reaped).

  stream_needs_a_signed_upgrade_request
      unsigned -> 401; signed without "Upgrade: relaymq-link" -> 400
      upgrade_required; a malformed link id or position -> 400 bad_link;
      a good one -> 101 Switching Protocols.
  frames_are_routed_acknowledged_and_never_routed_twice
      three frames on a stream starting at position 1000 reach a local
      subscriber in order and are acknowledged up to 1000 + their bytes; a
      second stream of the same link from 1000 again, with the same three
      frames and a fourth, delivers only the fourth (the receiver skips
      what it had routed) and acknowledges everything.
  malformed_frames_close_the_stream_and_are_counted
      bad flags, and a topic with a wildcard, each close the stream and
      add one to relaymq_forward_batches_total{direction="in",
      outcome="malformed"}; the node goes on serving.
  stream_broken_by_a_stalled_node_loses_and_repeats_nothing
      a publisher on n1 sends 300 QoS 1 messages at 40/s to a subscriber
      on n2; n2 is stopped (SIGSTOP) for 7 s in between, so n1 gives up on
      the unacknowledged stream (5 s) and opens a new one; the subscriber
      gets each message exactly once, in order, and n1 counts a second
      stream.
"""
import os
import signal
import socket
import struct
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import cluster_harness as ch  # noqa: E402
import internal_sign  # noqa: E402
import routing_harness as rh  # noqa: E402

KEY = rh.KEY
STREAMS_OUT = 'relaymq_forward_streams_total{direction="out"}'
STREAMS_IN = 'relaymq_forward_streams_total{direction="in"}'
MALFORMED = 'relaymq_forward_batches_total{direction="in",outcome="malformed"}'

REDIS = None
CL = None
cases, case = ch.case_list()


# --------------------------------------------------------------------------
# A stream spoken by hand


def frame(topic, payload, qos=1, flags=None):
    """One frame of cluster/forward_codec.h, untargeted."""
    t = topic.encode()
    f = qos if flags is None else flags
    return bytes([f]) + struct.pack(">H", len(t)) + t + struct.pack(">I", len(payload)) + payload


def link_request(node, link_id, seq, signed=True, upgrade=True):
    """Opens a connection to node's internal API and asks for a stream.
    Returns (socket, status line, bytes after the answer's headers)."""
    path = "/internal/v1/link/%s/%s" % (link_id, seq)
    headers = {"Host": node.internal, "Content-Length": "0"}
    if upgrade:
        headers.update({"Connection": "Upgrade", "Upgrade": "relaymq-link"})
    if signed:
        headers.update(internal_sign.sign("POST", path, secret=ch.SECRET, node="hand"))
    s = socket.create_connection((h.HOST, node.internal_port), timeout=h.WAIT)
    s.sendall(("POST %s HTTP/1.1\r\n" % path + "".join(
        "%s: %s\r\n" % kv for kv in headers.items()) + "\r\n").encode())
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(4096)
        h.check(chunk, "the node closed before answering %s" % path)
        got += chunk
    head, rest = got.split(b"\r\n\r\n", 1)
    return s, head.split(b"\r\n", 1)[0].decode(), rest


def open_stream(node, link_id, seq):
    s, status, rest = link_request(node, link_id, seq)
    h.check(status.startswith("HTTP/1.1 101"), "stream refused: %s" % status)
    h.check_eq(rest, b"", "bytes after the 101")
    return s


def read_acks_until(s, want, what):
    """Reads 8-byte acknowledgements until one says want; returns them."""
    acks, buf = [], b""
    deadline = time.monotonic() + h.WAIT
    while not acks or acks[-1] < want:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            chunk = s.recv(4096)
        except socket.timeout:
            chunk = None
        h.check(chunk, "%s: acknowledgements %r, waiting for %d" % (what, acks, want))
        buf += chunk
        while len(buf) >= 8:
            acks.append(struct.unpack(">Q", buf[:8])[0])
            buf = buf[8:]
    h.check_eq(acks[-1], want, "%s: last acknowledgement" % what)
    return acks


def closed_by_peer(s, timeout=h.WAIT):
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(4096):
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


# --------------------------------------------------------------------------
# cases


@case
def stream_needs_a_signed_upgrade_request():
    n2 = CL[1]
    link = os.urandom(8).hex()
    for signed, upgrade, lid, seq, want in [
            (False, True, link, "0", "401"),
            (True, False, link, "0", "400"),
            (True, True, "xyz", "0", "400"),
            (True, True, link + "00", "0", "400"),
            (True, True, link, "-1", "400"),
            (True, True, link, "0", "101")]:
        s, status, _ = link_request(n2, lid, seq, signed=signed, upgrade=upgrade)
        s.close()
        h.check(status.split(" ")[1] == want,
                "signed=%s upgrade=%s id=%s seq=%s: expected %s, got %s"
                % (signed, upgrade, lid, seq, want, status))


@case
def frames_are_routed_acknowledged_and_never_routed_twice():
    n2 = CL[1]
    topic = h.uid("fs") + "/t"
    sub = h.raw_connected(n2.port)
    try:
        h.check_eq(sub.subscribe([(topic, 1)]), [1], "SUBACK")
        streams_before = rh.metric(n2, STREAMS_IN)
        link = os.urandom(8).hex()
        first = [frame(topic, b"m%d" % i) for i in range(3)]
        s = open_stream(n2, link, 1000)
        s.sendall(b"".join(first))
        end = 1000 + sum(len(f) for f in first)
        read_acks_until(s, end, "first stream")
        got = [sub.recv_publish().payload for _ in range(3)]
        h.check_eq(got, [b"m0", b"m1", b"m2"], "first stream's messages")
        s.close()

        # The same link again from 1000: the three are skipped, the fourth routed.
        s = open_stream(n2, link, 1000)
        fourth = frame(topic, b"m3")
        s.sendall(b"".join(first) + fourth)
        read_acks_until(s, end + len(fourth), "second stream")
        h.check_eq(sub.recv_publish().payload, b"m3", "second stream's new message")
        sub.expect_nothing(what="a message routed twice")
        s.close()
        h.check_eq(rh.metric(n2, STREAMS_IN) - streams_before, 2, "streams opened on n2")
    finally:
        sub.close()


@case
def malformed_frames_close_the_stream_and_are_counted():
    n2 = CL[1]
    for what, data in [("flags 0xC0", frame("a/b", b"x", flags=0xC0)),
                       ("a wildcard topic", frame("a/+", b"x"))]:
        before = rh.metric(n2, MALFORMED)
        s = open_stream(n2, os.urandom(8).hex(), 0)
        s.sendall(data)
        h.check(closed_by_peer(s), "%s: the stream was not closed" % what)
        s.close()
        h.check_eq(rh.metric(n2, MALFORMED) - before, 1, "%s: malformed counter" % what)
    probe = h.raw_connected(n2.port)
    probe.disconnect()


@case
def stream_broken_by_a_stalled_node_loses_and_repeats_nothing():
    n1, n2 = CL[0], CL[1]
    topic = h.uid("stall") + "/t"
    count = 300
    sub = rh.subscriber(n2, topic, qos=1)
    pub = rh.raw_publisher(n1)
    try:
        rh.wait_replicas()
        streams_before = rh.metric(n1, STREAMS_OUT)

        def publish():
            for i in range(count):
                pub.publish(topic, b"%d" % i, qos=1, pid=i % 65535 + 1)
                time.sleep(0.025)

        th = threading.Thread(target=publish)
        th.start()
        time.sleep(1.5)
        os.kill(n2.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(7.0)
        finally:
            os.kill(n2.proc.pid, signal.SIGCONT)
        th.join()
        got = sub.take(count, 40)
        rh.check_sequence([int(m.payload) for m in got], count,
                           "messages across the broken stream")
        rh.no_more([sub], what="after the %d messages" % count)
        h.check(rh.metric(n1, STREAMS_OUT) - streams_before >= 1,
                "n1 opened no new stream after the stall")
    finally:
        ch.stop_quietly(sub, pub)


def stop_all():
    ch.stop_cluster(CL)


def bind(redis, events, cluster):
    global REDIS, CL
    REDIS, CL = redis, cluster
    rh.bind(redis, events, cluster)


def main():
    return ch.run_suite(cases, ("every_node_exits_0_on_sigterm", stop_all), bind, nodes=2,
                        api_key=KEY, node_ttl="30s")


if __name__ == "__main__":
    sys.exit(main())
