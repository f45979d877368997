"""Will messages: published when a connection ends without DISCONNECT (socket
closed, keepalive timeout, protocol error, takeover), never after a
DISCONNECT; the will's QoS and retain flag are honoured."""
import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

T = h.Tests()


def watcher(b, topic, qos=2):
    c = h.raw_connected(b.port)
    h.check_eq(c.subscribe([(topic, qos)]), [qos], "watcher SUBACK")
    return c


def with_will(b, topic, payload=b"gone", qos=1, retain=False, client_id=None, **kw):
    return h.raw_connected(b.port, client_id, will=(topic, payload, qos, retain), **kw)


def expect_will(w, topic, payload=b"gone", qos=1):
    p = w.recv_publish()
    h.check_eq((p.topic, p.payload, p.qos, p.retain), (topic, payload, qos, False),
               "will delivered")
    w.expect_nothing(timeout=0.5, what="a second copy of the will")


@T.case
def will_published_when_socket_closes_without_disconnect(b):
    m = b.metrics()
    before = m.fresh("wills_published")
    for version in h.VERSIONS:
        topic = h.uid("wc") + "/status"
        w = watcher(b, topic)
        c = with_will(b, topic, version=version)
        c.close()
        expect_will(w, topic)
        w.disconnect()
    m.expect_increase("wills_published", before, by=2)


@T.case
def will_published_when_paho_and_mosquitto_clients_die(b):
    for version in h.VERSIONS:
        topic = h.uid("wp") + "/status"
        w = watcher(b, topic)
        p = h.Paho(b.port, version=version, will=(topic, b"paho-dead", 2, False))
        p.connect()
        p.abort()
        expect_will(w, topic, b"paho-dead", 2)
        # mosquitto_sub killed with SIGKILL never sends DISCONNECT.
        sub = h.MosqSub(b.port, h.uid("x") + "/y", version=version,
                        extra=["--will-topic", topic, "--will-payload", "sub-dead",
                               "--will-qos", "1"])
        sub.kill()
        expect_will(w, topic, b"sub-dead", 1)
        w.disconnect()


@T.case
def will_published_on_keepalive_timeout_after_one_and_a_half_keepalives(b):
    topic = h.uid("wk") + "/status"
    m = b.metrics()
    before_ka = m.fresh("keepalive_timeouts")
    before_w = m.fresh("wills_published")
    w = watcher(b, topic)
    c = h.RawClient(b.port)
    t0 = time.monotonic()
    c.connect(h.uid("ka"), keepalive=1, will=(topic, b"silent", 1, False))
    h.check_eq(c.wait_closed(timeout=12), [], "packets sent before the keepalive close")
    elapsed = time.monotonic() - t0
    h.check(elapsed > 1.2, "closed %.2fs after CONNECT: before 1.5 x keepalive (1s)" % elapsed)
    h.check(elapsed < h.KEEPALIVE_LATE, "closed %.2fs after CONNECT: 1.5 x keepalive is 1.5s"
            % elapsed)
    expect_will(w, topic, b"silent")
    m.expect_increase("keepalive_timeouts", before_ka)
    m.expect_increase("wills_published", before_w)
    w.disconnect()


@T.case
def will_published_on_protocol_error(b):
    topic = h.uid("we") + "/status"
    m = b.metrics()
    before = m.fresh("protocol_errors")
    w = watcher(b, topic)
    c = with_will(b, topic, b"broken", qos=0)
    c.send(h.packet(0x36, h.mqtt_str("a/b") + b"\x00\x01x"))  # PUBLISH with QoS 3
    h.check_eq(c.wait_closed(), [], "answer to a QoS 3 PUBLISH")
    expect_will(w, topic, b"broken", 0)
    m.expect_increase("protocol_errors", before)
    w.disconnect()


@T.case
def will_published_on_takeover(b):
    topic = h.uid("wt") + "/status"
    cid = h.uid("tk")
    w = watcher(b, topic)
    old = with_will(b, topic, b"taken-over", client_id=cid)
    new = h.raw_connected(b.port, cid, clean=True)
    h.check_eq(old.wait_closed(), [], "packets sent to the old connection")
    expect_will(w, topic, b"taken-over")
    new.send(h.PINGREQ_PACKET)
    new.expect(h.PINGRESP, what="the new connection")
    new.disconnect()
    w.disconnect()


@T.case
def will_not_published_after_disconnect(b):
    m = b.metrics()
    before = m.fresh("wills_published")
    topic = h.uid("wn") + "/status"
    w = watcher(b, topic)
    c = with_will(b, topic)
    c.disconnect()
    for version in h.VERSIONS:
        p = h.Paho(b.port, version=version, will=(topic, b"paho", 1, False))
        p.connect()
        p.disconnect()
        h.mosq_pub(b.port, h.uid("n") + "/x", "hi", version=version,
                   extra=["--will-topic", topic, "--will-payload", "pub"])
    w.expect_nothing(timeout=1.5, what="a will after a clean DISCONNECT")
    m.expect_unchanged("wills_published", before)
    w.disconnect()


@T.case
def will_retain_flag_is_honoured(b):
    r = h.uid("wr")
    w = watcher(b, r + "/#")
    kept = with_will(b, r + "/kept", b"retained-will", qos=1, retain=True)
    plain = with_will(b, r + "/plain", b"plain-will", qos=1, retain=False)
    kept.close()
    plain.close()
    got = sorted((p.topic, p.payload, p.retain) for p in (w.recv_publish(), w.recv_publish()))
    h.check_eq(got, [(r + "/kept", b"retained-will", False), (r + "/plain", b"plain-will", False)],
               "both wills delivered live with retain 0")
    late = h.raw_connected(b.port)
    late.subscribe([(r + "/#", 1)])
    p = late.recv_publish()
    h.check_eq((p.topic, p.payload, p.retain), (r + "/kept", b"retained-will", True),
               "a retained will is stored")
    late.expect_nothing(what="the non-retained will must not be stored")
    late.disconnect()
    w.disconnect()


@T.case
def will_qos_is_honoured_up_to_the_granted_qos(b):
    r = h.uid("wq")
    w2 = watcher(b, r + "/#", qos=2)
    w0 = watcher(b, r + "/#", qos=0)
    for q in (0, 1, 2):
        c = with_will(b, "%s/%d" % (r, q), b"q%d" % q, qos=q)
        c.close()
        p = w2.recv_publish()
        h.check_eq((p.payload, p.qos), (b"q%d" % q, q), "will at QoS %d, granted 2" % q)
        p = w0.recv_publish()
        h.check_eq((p.payload, p.qos), (b"q%d" % q, 0), "will at QoS %d, granted 0" % q)
    w2.disconnect()
    w0.disconnect()


@T.case
def will_of_a_killed_mosquitto_pub_v31_with_will_retain(b):
    # mosquitto_pub -l holds the connection open while it waits for stdin.
    topic = h.uid("w31") + "/status"
    w = watcher(b, topic)
    pub = h.ClientProcess(["mosquitto_pub", "-h", h.HOST, "-p", str(b.port), "-V", "mqttv31",
                           "-t", topic + "/data", "-l", "-d", "--will-topic", topic,
                           "--will-payload", "v31-dead", "--will-retain"],
                          ready="received CONNACK", stdin=subprocess.PIPE)
    pub.kill()
    p = w.recv_publish()
    h.check_eq((p.topic, p.payload, p.retain), (topic, b"v31-dead", False), "3.1 will delivered")
    late = h.raw_connected(b.port)
    late.subscribe([(topic, 0)])
    h.check_eq(late.recv_publish().retain, True, "3.1 retained will stored")
    late.disconnect()
    w.disconnect()


if __name__ == "__main__":
    T.main()
