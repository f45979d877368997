"""Interoperability with real clients: mosquitto_pub/sub and paho at MQTT 3.1
and 3.1.1 and every QoS, crossed; 100 KB payloads intact; 1000 messages in
order with no loss or duplicates at QoS 1 and 2; our load generator's
`connect --threads` (every connection accepted once, no client id shared
between its threads)."""
import os
import random
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

T = h.Tests()


@T.case
def mosquitto_pub_to_mosquitto_sub_across_levels_and_qos(b):
    topic = h.uid("mx")
    subs = {(v, q): h.MosqSub(b.port, "%s/%d/%d" % (topic, v, q), qos=q, version=v)
            for v in h.VERSIONS for q in (0, 1, 2)}
    try:
        for (sv, q), sub in subs.items():
            for pv in h.VERSIONS:
                h.mosq_pub(b.port, "%s/%d/%d" % (topic, sv, q), "from-%d" % pv, qos=q, version=pv)
            got = sub.take(2)
            h.check_eq(sorted((m.payload, m.qos) for m in got),
                       [(b"from-3", q), (b"from-4", q)],
                       "mosquitto_sub level %d QoS %d from both publisher levels" % (sv, q))
    finally:
        for s in subs.values():
            s.stop()


@T.case
def paho_to_paho_across_levels_and_qos(b):
    for sv in h.VERSIONS:
        for pv in h.VERSIONS:
            topic = h.uid("px") + "/t"
            with h.Paho(b.port, version=sv) as sub, h.Paho(b.port, version=pv) as pub:
                sub.subscribe(topic, 2)
                for q in (0, 1, 2):
                    pub.publish(topic, b"q%d" % q, q)
                got = sorted((m.payload, m.qos) for m in sub.take(3))
                h.check_eq(got, [(b"q0", 0), (b"q1", 1), (b"q2", 2)],
                           "paho level %d -> paho level %d" % (pv, sv))
                sub.expect_nothing(timeout=0.3, what="duplicates")


@T.case
def paho_and_mosquitto_clients_interoperate(b):
    for v in h.VERSIONS:
        for q in (0, 1, 2):
            topic = h.uid("pm") + "/t"
            with h.Paho(b.port, version=v) as p, h.MosqSub(b.port, topic, qos=q, version=v) as ms:
                p.subscribe(topic, q)
                p.publish(topic, b"from-paho", q)
                h.mosq_pub(b.port, topic, "from-mosquitto", qos=q, version=v)
                h.check_eq(sorted((m.payload, m.qos) for m in ms.take(2)),
                           [(b"from-mosquitto", q), (b"from-paho", q)],
                           "mosquitto_sub level %d QoS %d" % (v, q))
                h.check_eq(sorted((m.payload, m.qos) for m in p.take(2)),
                           [(b"from-mosquitto", q), (b"from-paho", q)],
                           "paho level %d QoS %d" % (v, q))


@T.case
def payloads_of_100_kb_arrive_intact(b):
    rng = random.Random(100)
    binary = rng.randbytes(100 * 1024)
    for v in h.VERSIONS:
        topic = h.uid("big") + "/t"
        with h.Paho(b.port, version=v) as sub, h.Paho(b.port, version=v) as pub:
            sub.subscribe(topic, 2)
            for q in (0, 1, 2):
                pub.publish(topic, binary, q)
                m = sub.get()
                h.check(m.payload == binary, "paho level %d QoS %d: 100 KB payload changed "
                        "(got %d bytes)" % (v, q, len(m.payload)))
    # mosquitto_pub -s sends stdin as one message; printable so mosquitto_sub can print it.
    text = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(100 * 1024))
    for v in h.VERSIONS:
        topic = h.uid("bigm") + "/t"
        with h.MosqSub(b.port, topic, qos=1, version=v) as sub:
            h.mosq_pub(b.port, topic, text, qos=1, version=v)
            m = sub.take(1)[0]
            h.check_eq(m.length, len(text), "mosquitto level %d payload length" % v)
            h.check(m.payload == text, "mosquitto level %d: 100 KB payload changed" % v)


@T.case
def thousand_messages_in_order_with_paho_at_qos_1_and_2(b):
    for v in h.VERSIONS:
        for q in (1, 2):
            topic = h.uid("seq") + "/t"
            with h.Paho(b.port, version=v) as sub, h.Paho(b.port, version=v) as pub:
                sub.subscribe(topic, q)
                infos = [pub.publish(topic, b"%04d" % i, q, wait=False) for i in range(1000)]
                for info in infos:
                    info.wait_for_publish(h.WAIT)
                    h.check(info.is_published(), "publish %d not acknowledged" % info.mid)
                got = [m.payload for m in sub.take(1000, timeout=60)]
                h.check_eq(got, [b"%04d" % i for i in range(1000)],
                           "paho level %d QoS %d: 1000 messages in order" % (v, q))
                sub.expect_nothing(timeout=0.5, what="a 1001st message (duplicate)")


@T.case
def thousand_messages_in_order_with_mosquitto_clients(b):
    lines = ["%04d" % i for i in range(1000)]
    for v, q in ((h.MQTTV31, 1), (h.MQTTV311, 2)):
        topic = h.uid("seqm") + "/t"
        with h.MosqSub(b.port, topic, qos=q, version=v) as sub:
            h.mosq_pub(b.port, topic, qos=q, version=v, stdin_lines=lines, timeout=120)
            msgs = sub.take(1000, timeout=60)
            h.check_eq([m.payload.decode() for m in msgs], lines,
                       "mosquitto level %d QoS %d: 1000 messages in order" % (v, q))
            h.check_eq({m.qos for m in msgs}, {q}, "delivered QoS")
            sub.expect_nothing(timeout=0.5, what="a 1001st message (duplicate)")


@T.case
def four_hundred_concurrent_clients_get_a_fan_out(b):
    topic = h.uid("fan")
    clients = [h.raw_connected(b.port) for _ in range(400)]
    try:
        for c in clients:
            c.subscribe([(topic + "/#", 1)])
        pub = h.raw_connected(b.port)
        for i in range(5):
            pub.publish(topic + "/x", b"%d" % i, qos=1, pid=i + 1)
        for n, c in enumerate(clients):
            got = [c.recv_publish().payload for _ in range(5)]
            h.check_eq(got, [b"0", b"1", b"2", b"3", b"4"], "client %d of 400" % n)
        pub.disconnect()
    finally:
        for n, c in enumerate(clients):  # half leave cleanly, half just vanish
            if n % 2:
                c.disconnect()
            else:
                c.close()


@T.case
def load_generator_threads_share_connect_without_sharing_client_ids(b):
    """relaymq-bench connect --threads 3: 301 handshakes, 13 at once, split
    unevenly over three event loops; each CONNACK counted once, and no
    client id used twice (the broker would count a takeover)."""
    bench = os.environ.get("RELAYMQ_BENCH")
    h.check(bench and os.access(bench, os.X_OK), "RELAYMQ_BENCH names the load generator")
    m = b.metrics()
    accepted, takeovers = m.fresh("connections_accepted"), m.fresh("takeovers")
    r = subprocess.run([bench, "connect", "--port", str(b.port), "--clients", "301",
                        "--concurrency", "13", "--threads", "3", "--keepalive", "0"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = r.stdout.decode("utf-8", "replace")
    h.check_eq(r.returncode, 0, "relaymq-bench exit status (%s)" % out)
    result = dict(kv.split("=", 1) for kv in out.split("RESULT ", 1)[1].split() if "=" in kv)
    h.check_eq((result["status"], result["threads"], result["connections"], result["errors"]),
               ("ok", "3", "301", "0"), "RESULT line")
    m.expect_increase("connections_accepted", accepted, by=301)
    m.expect_unchanged("takeovers", takeovers)
    if h.RELAYMQ:
        h.check_eq(m.fresh("connections_accepted"), accepted + 301, "connections accepted")
    r = subprocess.run([bench, "idle", "--port", str(b.port), "--threads", "2"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    h.check_eq(r.returncode, 2, "--threads with idle is a usage error")
    h.check("connect scenario only" in r.stdout.decode(), "the usage error says why")


if __name__ == "__main__":
    T.main()
