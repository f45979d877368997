"""Telemetry to Redis streams (issue 9): bridge rules append client
PUBLISHes to streams, de-duplicated cluster-wide, buffered through Redis
outages.

One real Redis and two nodes n1, n2 with the rules in RULES (flags), shared
by the file; cases that need other settings start their own node. What is
checked, each with exact counts read back from Redis (XRANGE) and from the
nodes' /metrics:

  streams    telemetry from devices on both nodes lands once per message,
             with the documented fields; templates, field lists, trimming;
             the consumer side of docs/bridge.md (XREADGROUP, XACK) works.
  dedup      a QoS 1 re-send with DUP, and the same sample sent through the
             other node, is stored once; a replay of 1,000 samples, half
             of them stored, adds exactly the missing half.
  bad JSON   dead-letter, plain and drop, each counted.
  outages    Redis frozen (SIGSTOP): MQTT keeps flowing, the pipeline stays
             bounded, nothing is lost; Redis stopped under load from both
             nodes: nothing lost; the buffer bound (messages and bytes):
             exactly the excess is dropped, counted and logged.
  config     rules from the environment and a config file; bad rules stop
             start-up with exit status 2 and say what is wrong.

Every node must exit 0 on SIGTERM (sanitizer build). No assertion is about
timing: waits poll for a state and then the counts must be exact.
"""
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import cluster_harness as ch  # noqa: E402

KEY = "k"
DEAD = "bt:dead"
RULES = [
    "tele/# stream=bt:tele dedup={device}:{json.ts} window=1h on-bad-json=dead-letter",
    "plain/# stream=bt:plain",
    "lax/# stream=bt:lax dedup={json.ts} on-bad-json=plain",
    "strict/# stream=bt:strict dedup={json.ts} on-bad-json=drop",
    "tpl/+/+ stream=bt:tpl:{device}:{node} fields=payload,qos",
    "trim/# stream=bt:trim maxlen=10 fields=topic+payload",
]
PIPELINE = 1024  # bridge_writer.c: script calls in flight at most
SETTLE = 60.0    # generous: ASan build on a shared 2-core machine

REDIS = None
CL = None
cases, case = ch.case_list()


def bridge_flags(rules=RULES):
    out = []
    for r in rules:
        out += ["--bridge", r]
    return out + ["--bridge-dead-letter", DEAD]


# --------------------------------------------------------------------------
# reading the nodes and Redis

def call(node, path):
    conn = http.client.HTTPConnection(h.HOST, node.http_port, timeout=h.WAIT)
    try:
        conn.request("GET", path, headers={"Authorization": "Bearer " + KEY})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def stats(node):
    """relaymq_bridge_* of node's /metrics: {"matched": n, "dropped_buffer_full": n, ...}."""
    status, raw = call(node, "/metrics")
    h.check_eq(status, 200, "GET /metrics on %s" % node.node_id)
    out = {}
    for line in raw.decode().splitlines():
        if not line.startswith("relaymq_bridge_"):
            continue
        name, _, value = line.rpartition(" ")
        name = name[len("relaymq_bridge_"):].replace("_total", "")
        if name.startswith('dropped{reason="'):
            name = "dropped_" + name[len('dropped{reason="'):-2]
        out[name] = int(float(value))
    h.check("matched" in out and "dropped_buffer_full" in out,
            "no relaymq_bridge_* families on %s" % node.node_id)
    return out


DROPS = ("dropped_buffer_full", "dropped_bad_json", "dropped_error", "dropped_shutdown")


def identity_holds(s):
    """matched = written + duplicates + dead letters + dropped + buffered + in flight."""
    return s["matched"] == (s["written"] + s["duplicates"] + s["dead_letters"]
                            + sum(s[d] for d in DROPS) + s["buffered"] + s["inflight"])


def snapshot(nodes):
    return {n.node_id: stats(n) for n in nodes}


def settle(nodes, base, matched):
    """Waits until the nodes matched `matched` more messages than in base
    and hold nothing; returns the summed deltas of every counter."""
    last = {}

    def done():
        now = snapshot(nodes)
        last["now"] = now
        got = sum(now[n.node_id]["matched"] - base[n.node_id]["matched"] for n in nodes)
        idle = all(now[n.node_id]["buffered"] == 0 and now[n.node_id]["inflight"] == 0
                   for n in nodes)
        return got >= matched and idle
    try:
        h.wait_until(done, SETTLE, interval=0.2, what="bridges to match %d and drain" % matched)
    except AssertionError as e:
        raise AssertionError("%s; stats %r" % (e, last.get("now"))) from None
    now = last["now"]
    for n in nodes:
        h.check(identity_holds(now[n.node_id]),
                "counter identity broken on %s: %r" % (n.node_id, now[n.node_id]))
    delta = {k: sum(now[n.node_id][k] - base[n.node_id][k] for n in nodes)
             for k in now[nodes[0].node_id] if k not in ("redis_up", "buffer_limit")}
    h.check_eq(delta["matched"], matched, "messages matched by the bridge rules")
    return delta


def wait_bridge_down(node):
    h.wait_until(lambda: stats(node)["redis_up"] == 0, what="%s's bridge to see Redis gone"
                 % node.node_id)


def check_seq(got, want, what):
    """check_eq for long lists: names the lengths and the first difference."""
    if got == want:
        return
    i = next((k for k, (g, w) in enumerate(zip(got, want)) if g != w), min(len(got), len(want)))
    raise AssertionError("%s: %d items, expected %d; first difference at %d: got %r, expected %r"
                         % (what, len(got), len(want), i, got[i:i + 3], want[i:i + 3]))


def entries(stream, device=None):
    """XRANGE of stream as dicts (plus '_id'), optionally one device's."""
    out = []
    for entry_id, fields in REDIS.cli("XRANGE", stream, "-", "+"):
        d = dict(zip(fields[0::2], fields[1::2]))
        d["_id"] = entry_id
        if device is None or d.get("device") == device:
            out.append(d)
    return out


def field_names(stream, entry_id):
    got = REDIS.cli("XRANGE", stream, entry_id, entry_id)
    return got[0][1][0::2]


# --------------------------------------------------------------------------
# publishing

def connect(node, device):
    c = h.RawClient(node.port)
    c.connect(device)
    return c


def publish_all(client, msgs, qos=1, batch=100):
    """msgs: [(topic, payload)]. QoS 1 in pipelined batches (every PUBACK
    checked); QoS 0 then a PINGREQ round trip, so the broker has read them."""
    pid = 0
    for start in range(0, len(msgs), batch):
        chunk = msgs[start:start + batch]
        pids = []
        data = b""
        for topic, payload in chunk:
            pid = pid % 65535 + 1
            pids.append(pid)
            data += h.publish_packet(topic, payload, qos, pid if qos else None)
        client.send(data)
        if qos == 1:
            got = [client.expect(h.PUBACK, stash_publish=True).pid for _ in chunk]
            h.check_eq(got, pids, "PUBACK packet ids")
    if qos == 0:
        client.send(h.PINGREQ_PACKET)
        client.expect(h.PINGRESP, stash_publish=True)


def sample(ts, **extra):
    doc = {"ts": ts, "temp": 20 + ts % 7}
    doc.update(extra)
    return json.dumps(doc, separators=(",", ":"))


def check_now(value, what):
    h.check(str(value).isdigit() and abs(int(value) - time.time() * 1000) < 120_000,
            "%s: %r is not a time near now" % (what, value))


# --------------------------------------------------------------------------
# streams

@case
def telemetry_from_both_nodes_lands_once_per_message():
    n1, n2 = CL.nodes
    a, b = h.uid("ta"), h.uid("tb")
    ca, cb = connect(n1, a), connect(n2, b)
    try:
        base = snapshot(CL.nodes)
        for c, dev in ((ca, a), (cb, b)):
            publish_all(c, [("tele/%s" % dev, sample(i)) for i in range(60)], qos=1)
            publish_all(c, [("tele/%s" % dev, sample(i)) for i in range(60, 100)], qos=0)
            publish_all(c, [("plain/%s" % dev, "p%d" % i) for i in range(100)], qos=1)
        d = settle(CL.nodes, base, 400)
        h.check_eq((d["written"], d["duplicates"], d["bad_json"], d["dead_letters"],
                    sum(d[k] for k in DROPS)), (400, 0, 0, 0, 0),
                   "(written, duplicates, bad JSON, dead letters, dropped)")
        for dev, node in ((a, "n1"), (b, "n2")):
            tele = entries("bt:tele", dev)
            check_seq(sorted(json.loads(e["payload"])["ts"] for e in tele), list(range(100)),
                       "samples of %s in bt:tele (once each)" % dev)
            for e in tele:
                ts = json.loads(e["payload"])["ts"]
                h.check_eq((e["topic"], e["client_id"], e["node"], e["qos"]),
                           ("tele/%s" % dev, dev, node, "1" if ts < 60 else "0"),
                           "fields of sample %d of %s" % (ts, dev))
                check_now(e["ts"], "receive time")
            h.check_eq(field_names("bt:tele", tele[0]["_id"]),
                       ["topic", "device", "client_id", "node", "qos", "ts", "payload"],
                       "default fields, in order")
            plain = entries("bt:plain", dev)
            check_seq([e["payload"] for e in plain], ["p%d" % i for i in range(100)],
                       "payloads of %s in bt:plain, in order" % dev)
            key = ch.PREFIX + "dedup:bt:tele:%s:7" % dev
            h.check_eq(REDIS.cli("GET", key),
                       next(e["_id"] for e in tele if json.loads(e["payload"])["ts"] == 7),
                       "the dedup key %s holds the entry id" % key)
            ttl = REDIS.cli("PTTL", key)
            h.check(0 < ttl <= 3_600_000, "PTTL of %s is %r, window 1h" % (key, ttl))
        return "2 x 200 messages"
    finally:
        ch.stop_quietly(ca, cb)


@case
def templates_fields_and_trimming():
    n1, n2 = CL.nodes
    a, b = h.uid("fa"), h.uid("fb")
    ca, cb = connect(n1, a), connect(n2, b)
    try:
        base = snapshot(CL.nodes)
        publish_all(ca, [("tpl/x/y", "one"), ("tpl/x/z", "two")], qos=1)
        publish_all(cb, [("tpl/q/r", "three")], qos=0)
        publish_all(ca, [("trim/%s" % a, "m%d" % i) for i in range(300)], qos=0)
        settle(CL.nodes, base, 303)
        got_a = REDIS.cli("XRANGE", "bt:tpl:%s:n1" % a, "-", "+")
        h.check_eq([f for _, f in got_a], [["payload", "one", "qos", "1"],
                                           ["payload", "two", "qos", "1"]],
                   "bt:tpl:{device}:{node} entries of %s (fields=payload,qos)" % a)
        got_b = REDIS.cli("XRANGE", "bt:tpl:%s:n2" % b, "-", "+")
        h.check_eq([f for _, f in got_b], [["payload", "three", "qos", "0"]],
                   "bt:tpl entries of %s" % b)
        n = REDIS.cli("XLEN", "bt:trim")
        h.check(10 <= n < 300, "bt:trim (maxlen=10, approximate) holds %d of 300" % n)
        last = REDIS.cli("XREVRANGE", "bt:trim", "+", "-", "COUNT", 1)[0][1]
        h.check_eq(last, ["topic", "trim/%s" % a, "payload", "m299"], "newest bt:trim entry")
        return "bt:trim kept %d of 300" % n
    finally:
        ch.stop_quietly(ca, cb)


@case
def consumer_group_reads_each_entry_once():
    """The redis-cli side of docs/bridge.md."""
    n1 = CL.nodes[0]
    dev, group = h.uid("cg"), h.uid("grp")
    c = connect(n1, dev)
    try:
        h.check_eq(REDIS.cli("XGROUP", "CREATE", "bt:plain", group, "$", "MKSTREAM"), "OK",
                   "XGROUP CREATE")
        base = snapshot(CL.nodes)
        publish_all(c, [("plain/%s" % dev, "c%d" % i) for i in range(10)], qos=1)
        settle(CL.nodes, base, 10)
        got = REDIS.cli("XREADGROUP", "GROUP", group, "w1", "COUNT", 100, "STREAMS",
                        "bt:plain", ">")
        h.check_eq(list(got), ["bt:plain"], "XREADGROUP streams")
        read = got["bt:plain"]
        h.check_eq([dict(zip(f[0::2], f[1::2]))["payload"] for _, f in read],
                   ["c%d" % i for i in range(10)], "entries read by the group")
        h.check_eq(REDIS.cli("XACK", "bt:plain", group, *[i for i, _ in read]), 10, "XACK")
        h.check_eq(REDIS.cli("XPENDING", "bt:plain", group)[0], 0, "pending after XACK")
        again = REDIS.cli("XREADGROUP", "GROUP", group, "w2", "COUNT", 100, "STREAMS",
                          "bt:plain", ">")
        h.check(not again, "a second worker got entries already read: %r" % (again,))
    finally:
        ch.stop_quietly(c)
        REDIS.cli("XGROUP", "DESTROY", "bt:plain", group)


# --------------------------------------------------------------------------
# de-duplication

@case
def qos1_dup_resend_and_other_node_store_once():
    n1, n2 = CL.nodes
    dev = h.uid("dd")
    topic = "tele/%s" % dev
    s1 = sample(1795000000, seq=1)
    base = snapshot(CL.nodes)
    c = connect(n1, dev)
    try:
        c.publish(topic, s1, qos=1, pid=7)
        c.publish(topic, s1, qos=1, pid=7, dup=True)  # the same packet again, DUP set
    finally:
        c.disconnect()
    d = settle(CL.nodes, base, 2)
    h.check_eq((d["written"], d["duplicates"]), (1, 1), "n1: (written, duplicates)")
    base = snapshot(CL.nodes)
    c = connect(n2, dev)  # the device moved to the other node
    try:
        c.publish(topic, s1, qos=1, pid=1)
        c.publish(topic, sample(1795000001, seq=2), qos=1, pid=2)
    finally:
        c.disconnect()
    d = settle(CL.nodes, base, 2)
    h.check_eq((d["written"], d["duplicates"]), (1, 1), "n2: (written, duplicates)")
    now = snapshot(CL.nodes)
    h.check_eq(now["n2"]["duplicates"] - base["n2"]["duplicates"], 1,
               "duplicates seen on n2 (the sample n1 stored)")
    got = entries("bt:tele", dev)
    h.check_eq([(json.loads(e["payload"])["seq"], e["node"]) for e in got], [(1, "n1"), (2, "n2")],
               "entries of %s: each sample once, the first where it first arrived" % dev)


@case
def history_replay_adds_exactly_the_missing_half():
    n1, n2 = CL.nodes
    dev = h.uid("hr")
    topic = "tele/%s" % dev
    t0 = 1795000000000
    c = connect(n1, dev)
    try:
        base = snapshot(CL.nodes)
        publish_all(c, [(topic, sample(t0 + i)) for i in range(0, 1000, 2)], qos=1)
        d = settle(CL.nodes, base, 500)
        h.check_eq((d["written"], d["duplicates"]), (500, 0), "first half: (written, duplicates)")
    finally:
        c.disconnect()
    c = connect(n2, dev)  # the replay comes through the other node
    try:
        base = snapshot(CL.nodes)
        publish_all(c, [(topic, sample(t0 + i, replay=True)) for i in range(1000)], qos=1)
        d = settle(CL.nodes, base, 1000)
        h.check_eq((d["written"], d["duplicates"], sum(d[k] for k in DROPS)), (500, 500, 0),
                   "replay of 1000: (written, duplicates, dropped)")
    finally:
        c.disconnect()
    got = entries("bt:tele", dev)
    h.check_eq(len(got), 1000, "entries of %s after the replay" % dev)
    check_seq(sorted(json.loads(e["payload"])["ts"] - t0 for e in got), list(range(1000)),
               "each sample once")
    replayed = sorted(json.loads(e["payload"])["ts"] - t0 for e in got
                      if json.loads(e["payload"]).get("replay"))
    check_seq(replayed, list(range(1, 1000, 2)), "samples the replay added: the odd half")
    h.check(all(e["node"] == ("n2" if json.loads(e["payload"]).get("replay") else "n1")
                for e in got), "node field of original and replayed entries")


# --------------------------------------------------------------------------
# bad JSON

@case
def bad_json_dead_letter_plain_and_drop():
    n1 = CL.nodes[0]
    dev = h.uid("bj")
    c = connect(n1, dev)
    bad = ["not json", '{"ts":', '{"no_ts":1}', '{"ts":null}', "[1,2]"]
    try:
        base = snapshot(CL.nodes)
        publish_all(c, [("tele/%s" % dev, p) for p in bad], qos=1)
        publish_all(c, [("lax/%s" % dev, p) for p in bad + bad], qos=1)
        publish_all(c, [("lax/%s" % dev, sample(5))] * 2, qos=1)
        publish_all(c, [("strict/%s" % dev, p) for p in bad], qos=1)
        publish_all(c, [("strict/%s" % dev, sample(6))] * 3, qos=1)
        d = settle(CL.nodes, base, 5 + 10 + 2 + 5 + 3)
    finally:
        c.disconnect()
    h.check_eq((d["bad_json"], d["dead_letters"], d["dropped_bad_json"], d["written"],
                d["duplicates"]), (20, 5, 5, 10 + 1 + 1, 1 + 2),
               "(bad JSON, dead letters, dropped bad JSON, written, duplicates)")
    dead = entries(DEAD, dev)
    h.check_eq([(e["payload"], e["reason"], e["stream"], e["topic"]) for e in dead],
               [("not json", "invalid_json", "bt:tele", "tele/%s" % dev),
                ('{"ts":', "invalid_json", "bt:tele", "tele/%s" % dev),
                ('{"no_ts":1}', "missing_field", "bt:tele", "tele/%s" % dev),
                ('{"ts":null}', "missing_field", "bt:tele", "tele/%s" % dev),
                ("[1,2]", "missing_field", "bt:tele", "tele/%s" % dev)],
               "dead letters of %s" % dev)
    h.check_eq(entries("bt:tele", dev), [], "bad samples in bt:tele")
    h.check_eq([e["payload"] for e in entries("bt:lax", dev)], bad + bad + [sample(5)],
               "bt:lax: bad JSON written plainly each time, good JSON once")
    h.check_eq([e["payload"] for e in entries("bt:strict", dev)], [sample(6)],
               "bt:strict: bad JSON dropped, good JSON once")
    h.check(n1.log_has("lacks the JSON its dedup key needs"), "bad JSON not logged")


# --------------------------------------------------------------------------
# configuration

def run_binary(args, env_extra=None):
    env = h.broker_env()
    env.update(env_extra or {})
    r = subprocess.run([h.relaymq_bin()] + args, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env=env, timeout=30)
    return r.returncode, r.stdout.decode("utf-8", "replace")


@case
def bad_rules_stop_startup_with_status_2():
    base = ["--listen", "127.0.0.1:%d" % h.free_port(), "--http", "",
            "--redis", REDIS.url, "--node-id", "x1"]
    conf = tempfile.NamedTemporaryFile("w", suffix=".conf", prefix="relaymq-it-", delete=False)
    conf.write("bridge  a/# stream=s window=5m   # a window without a key\n")
    conf.close()
    try:
        for args, env, want in (
            (base + ["--bridge", "a/# maxlen=3"], None,
             "relaymq: bridge rule 1 'a/# maxlen=3': no stream=NAME"),
            (base + ["--bridge", "a/# stream=s", "--bridge", "b/# stream=t dedup={json.ts"],
             None, "bridge rule 2 'b/# stream=t dedup={json.ts': dedup: unclosed '{'"),
            (base + ["--bridge", "a/#/b stream=s"], None, "not a valid MQTT topic filter"),
            (base + ["--bridge", "a stream=s on-bad-json=drop"], None,
             "on-bad-json= needs a dedup= template with a {json.PATH} field"),
            (base, {"RELAYMQ_BRIDGE": "a/# stream=s fields=topic,payload"},
             "bridge rule 2 'payload': no stream=NAME (in RELAYMQ_BRIDGE commas separate rules"),
            (base + ["--config", conf.name], None, "window= needs dedup="),
            (["--bridge", "a/# stream=s", "--http", ""], None,
             "bridge: rules need --redis"),
            (base + ["--bridge", "a stream=s", "--bridge-buffer", "0"], None,
             "--bridge-buffer: 0 is below the minimum 1"),
        ):
            rc, out = run_binary(args, env)
            h.check_eq(rc, 2, "exit status of relaymq %s %s" % (" ".join(args[-2:]), env or ""))
            h.check(want in out, "output %r lacks %r" % (out.strip()[-300:], want))
    finally:
        os.unlink(conf.name)


@case
def rules_from_environment_and_config_file():
    env = h.broker_env()
    env.update({"RELAYMQ_BRIDGE": "envA/# stream=bt:envA fields=topic+payload,"
                                  "envB/# stream=bt:envB fields=payload",
                "RELAYMQ_BRIDGE_BUFFER": "77"})
    d = tempfile.mkdtemp(prefix="relaymq-it-conf-")
    conf = os.path.join(d, "relaymq.conf")
    with open(conf, "w") as f:
        f.write("# bridge rules in a config file\n"
                "bridge cfg/# stream=bt:cfg fields=payload\n"
                "bridge filter=# stream=bt:cfgall fields=topic   # every topic\n"
                "bridge-buffer-bytes 1m\n")
    e1 = ch.Node("e1", REDIS, api_key=KEY, env=env)
    c1 = ch.Node("c1", REDIS, api_key=KEY, extra=["--config", conf])
    clients = []
    try:
        e1.start()
        c1.start()
        h.check(e1.log_has("bridge: 2 rule(s); buffer 77 entries"), "e1 did not log 2 rules")
        h.check(c1.log_has("bridge: 2 rule(s); buffer 100000 entries, 1048576 bytes"),
                "c1 did not log 2 rules")
        ce, cc = connect(e1, h.uid("ev")), connect(c1, h.uid("cf"))
        clients += [ce, cc]
        tag = h.uid("x")
        base = snapshot([e1, c1])
        publish_all(ce, [("envA/%s" % tag, "a"), ("envB/%s" % tag, "b")], qos=1)
        publish_all(cc, [("cfg/%s" % tag, "c"), ("zz/%s" % tag, "z")], qos=1)
        settle([e1, c1], base, 2 + 3)
        last = {s: REDIS.cli("XREVRANGE", s, "+", "-", "COUNT", 1)[0][1]
                for s in ("bt:envA", "bt:envB", "bt:cfg", "bt:cfgall")}
        h.check_eq(last, {"bt:envA": ["topic", "envA/%s" % tag, "payload", "a"],
                          "bt:envB": ["payload", "b"],
                          "bt:cfg": ["payload", "c"],
                          "bt:cfgall": ["topic", "zz/%s" % tag]},
                   "newest entries written by e1 (environment) and c1 (config file)")
    finally:
        ch.stop_quietly(*clients)
        for n in (e1, c1):
            n.stop()
            n.remove_files()


@case
def script_flushed_in_redis_is_sent_again_with_its_body():
    """SCRIPT FLUSH (an operator, a failover proxy): the next EVALSHA gets
    NOSCRIPT; the bridge sends that entry with EVAL and goes on."""
    n1 = CL.nodes[0]
    dev = h.uid("ns")
    c = connect(n1, dev)
    try:
        base = snapshot([n1])
        h.check_eq(REDIS.cli("SCRIPT", "FLUSH"), "OK", "SCRIPT FLUSH")
        publish_all(c, [("tele/%s" % dev, sample(i)) for i in range(20)], qos=1)
        publish_all(c, [("tele/%s" % dev, sample(i)) for i in range(20)], qos=1)
        d = settle([n1], base, 40)
        h.check_eq((d["written"], d["duplicates"], d["errors"], sum(d[k] for k in DROPS)),
                   (20, 20, 0, 0), "(written, duplicates, errors, dropped) after SCRIPT FLUSH")
        check_seq(sorted(json.loads(e["payload"])["ts"] for e in entries("bt:tele", dev)),
                  list(range(20)), "samples stored")
    finally:
        ch.stop_quietly(c)
        # Every node reconnects (and loads its scripts again); the bridges too.
        downs = {n.node_id: n.log_text().count("bridge: Redis unreachable") for n in CL.nodes}
        REDIS.cli("CLIENT", "KILL", "TYPE", "normal")
        for n in CL.nodes:
            h.wait_until(lambda: n.log_text().count("bridge: Redis unreachable")
                         > downs[n.node_id] and stats(n)["redis_up"] == 1,
                         what="%s's bridge to reconnect" % n.node_id)


# --------------------------------------------------------------------------
# Redis outages (last: they stop Redis)

@case
def redis_frozen_mqtt_flows_and_pipeline_stays_bounded():
    n1 = CL.nodes[0]
    dev = h.uid("fz")
    n = 2000
    pub, sub = connect(n1, dev), connect(n1, h.uid("fs"))
    frozen = False
    try:
        sub.subscribe([("plain/%s" % dev, 0)])
        base = snapshot([n1])
        REDIS.proc.send_signal(signal.SIGSTOP)
        frozen = True
        publish_all(pub, [("plain/%s" % dev, "f%d" % i) for i in range(n)], qos=0)
        got = [sub.recv_publish().payload for _ in range(n)]
        check_seq(got, [b"f%d" % i for i in range(n)], "messages delivered while Redis is frozen")
        s = h.wait_until(lambda: (lambda s: s if s["matched"] - base["n1"]["matched"] == n
                                  else None)(stats(n1)), what="n1 to match %d messages" % n)
        h.check_eq((s["written"] - base["n1"]["written"], s["buffered"] + s["inflight"]), (0, n),
                   "(written, held) while Redis is frozen")
        h.check(0 < s["inflight"] <= PIPELINE, "in flight %d, pipeline %d" % (s["inflight"],
                                                                            PIPELINE))
        REDIS.proc.send_signal(signal.SIGCONT)
        frozen = False
        d = settle([n1], base, n)
        h.check_eq((d["written"], sum(d[k] for k in DROPS)), (n, 0), "(written, dropped)")
        check_seq([e["payload"] for e in entries("bt:plain", dev)], ["f%d" % i for i in range(n)],
                   "bt:plain after the freeze")
        return "%d in flight at most" % s["inflight"]
    finally:
        if frozen:
            REDIS.proc.send_signal(signal.SIGCONT)
        ch.stop_quietly(pub, sub)


@case
def redis_killed_with_entries_in_flight_resends_them_in_order():
    """Redis frozen with a full pipeline, then killed: the entries it never
    answered come back and are sent again, ahead of the waiting ones."""
    n1 = CL.nodes[0]
    dev = h.uid("kf")
    n = 2000
    pub = connect(n1, dev)
    try:
        REDIS.save()  # what the restarted Redis loads: nothing of this case yet
        base = snapshot([n1])
        REDIS.proc.send_signal(signal.SIGSTOP)
        publish_all(pub, [("plain/%s" % dev, "k%d" % i) for i in range(n)], qos=1)
        s = h.wait_until(lambda: (lambda s: s if s["inflight"] == PIPELINE else None)(stats(n1)),
                         what="a full pipeline")
        h.check_eq(s["buffered"], n - PIPELINE, "entries waiting behind the pipeline")
        REDIS.kill()  # SIGKILL while stopped: the pipelined calls never ran
        wait_bridge_down(n1)
        REDIS.start(keep_data=True)
        d = settle([n1], base, n)
        h.check_eq((d["written"], d["duplicates"], d["resent"], sum(d[k] for k in DROPS)),
                   (n, 0, PIPELINE, 0), "(written, duplicates, resent, dropped)")
        check_seq([e["payload"] for e in entries("bt:plain", dev)], ["k%d" % i for i in range(n)],
                   "bt:plain: every message once, in publish order")
    finally:
        if REDIS.proc.poll() is None:
            REDIS.proc.send_signal(signal.SIGCONT)
        else:
            REDIS.start(keep_data=True)
        ch.stop_quietly(pub)


def shutdown_redis_saving():
    """SHUTDOWN SAVE: Redis writes its data and exits; start(keep_data=True)
    brings it back with it. The test counts what the bridge loses, so what
    Redis had already stored must survive Redis's own restart."""
    subprocess.run(["redis-cli", "-h", h.HOST, "-p", str(REDIS.port), "SHUTDOWN", "SAVE"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    REDIS.proc.wait(h.WAIT)
    REDIS.kill()  # closes its log


@case
def redis_stopped_under_load_loses_nothing():
    n1, n2 = CL.nodes
    per = 1500
    devs = {"n1": h.uid("la"), "n2": h.uid("lb")}
    clients = {n.node_id: connect(n, devs[n.node_id]) for n in (n1, n2)}
    lines = {n.node_id: n.log_text().count("bridge: Redis is back") for n in (n1, n2)}
    errors = []

    def load(node_id):
        try:
            dev = devs[node_id]
            msgs = [("tele/%s" % dev, sample(i)) for i in range(per)]
            for start in range(0, per, 25):  # paced, so Redis stops in mid-load
                publish_all(clients[node_id], msgs[start:start + 25], qos=1)
                time.sleep(0.05)
        except Exception as e:  # noqa: BLE001 - reported by the case
            errors.append("%s: %r" % (node_id, e))
    base = snapshot(CL.nodes)
    threads = [threading.Thread(target=load, args=(n,)) for n in ("n1", "n2")]
    try:
        for t in threads:
            t.start()
        h.wait_until(lambda: sum(stats(n)["matched"] - base[n.node_id]["matched"]
                                 for n in (n1, n2)) >= per // 2, what="load under way")
        # Redis goes away with entries in flight and publishers still at it.
        shutdown_redis_saving()
        down_at = sum(stats(n)["matched"] - base[n.node_id]["matched"] for n in (n1, n2))
        time.sleep(3.0)
        REDIS.start(keep_data=True)
        for t in threads:
            t.join(120)
        h.check(not errors, "publishers failed: %s" % errors)
        d = settle(CL.nodes, base, 2 * per)
        h.check_eq(sum(d[k] for k in DROPS), 0, "messages dropped")
        for node_id, dev in devs.items():
            got = entries("bt:tele", dev)
            check_seq(sorted(json.loads(e["payload"])["ts"] for e in got), list(range(per)),
                       "samples of %s (via %s) in bt:tele, once each" % (dev, node_id))
        for n in (n1, n2):
            h.check(n.log_text().count("bridge: Redis is back") > lines[n.node_id],
                    "%s never wrote entries buffered during the outage" % n.node_id)
        return "Redis stopped after %d of %d messages; resent %d" % (down_at, 2 * per,
                                                                     d["resent"])
    finally:
        if REDIS.proc.poll() is not None:
            REDIS.start(keep_data=True)
        for t in threads:
            t.join(5)
        ch.stop_quietly(*clients.values())


@case
def buffer_bound_drops_exactly_the_excess():
    b1 = ch.Node("b1", REDIS, api_key=KEY,
                 extra=bridge_flags() + ["--bridge-buffer", "50", "--bridge-buffer-bytes", "64k"])
    c = None
    try:
        b1.start()
        dev = h.uid("bb")
        c = connect(b1, dev)
        h.wait_until(lambda: stats(b1)["redis_up"] == 1, what="b1's bridge link up")
        # 80 small samples while Redis is away: the first 50 wait, 30 are dropped.
        REDIS.save()
        REDIS.kill()
        wait_bridge_down(b1)
        base = snapshot([b1])
        publish_all(c, [("tele/%s" % dev, sample(i)) for i in range(80)], qos=1)
        s = stats(b1)
        h.check_eq((s["matched"] - base["b1"]["matched"], s["buffered"],
                    s["dropped_buffer_full"] - base["b1"]["dropped_buffer_full"]), (80, 50, 30),
                   "(matched, buffered, dropped buffer_full) with --bridge-buffer 50")
        h.check(b1.log_has("buffer full (50 entries"), "the full buffer was not logged")
        REDIS.start(keep_data=True)
        d = settle([b1], base, 80)
        h.check_eq((d["written"], d["dropped_buffer_full"]), (50, 30), "(written, dropped)")
        check_seq(sorted(json.loads(e["payload"])["ts"] for e in entries("bt:tele", dev)),
                  list(range(50)), "samples stored: the 50 that were buffered")

        # 20 samples of about 9 KB: 64 KiB hold 6 of them.
        dev2 = h.uid("bk")
        c2 = connect(b1, dev2)
        try:
            h.wait_until(lambda: stats(b1)["redis_up"] == 1, what="b1's bridge link up again")
            REDIS.save()
            REDIS.kill()
            wait_bridge_down(b1)
            base = snapshot([b1])
            pad = "x" * 9000
            publish_all(c2, [("tele/%s" % dev2, sample(i, pad=pad)) for i in range(20)], qos=1)
            s = stats(b1)
            dropped = s["dropped_buffer_full"] - base["b1"]["dropped_buffer_full"]
            h.check_eq((s["buffered"], dropped), (6, 14),
                       "(buffered, dropped) with --bridge-buffer-bytes 64k")
            h.check(s["buffered_bytes"] <= 65536, "buffered bytes %d" % s["buffered_bytes"])
            REDIS.start(keep_data=True)
            settle([b1], base, 20)
            h.check_eq(sorted(json.loads(e["payload"])["ts"] for e in entries("bt:tele", dev2)),
                       list(range(6)), "large samples stored")
        finally:
            ch.stop_quietly(c2)
    finally:
        ch.stop_quietly(c)
        if REDIS.proc.poll() is not None:
            REDIS.start(keep_data=True)
        b1.stop()
        b1.remove_files()


def hold_entries(node, dev, n):
    """Freezes Redis and has node hold n entries (a full pipeline, the rest waiting)."""
    c = connect(node, dev)
    REDIS.proc.send_signal(signal.SIGSTOP)
    publish_all(c, [("plain/%s" % dev, "s%d" % i) for i in range(n)], qos=1)
    st = stats(node)
    h.check_eq((st["inflight"], st["buffered"]), (PIPELINE, n - PIPELINE),
               "(in flight, waiting) on %s" % node.node_id)
    c.close()


@case
def shutdown_drains_what_it_holds_or_counts_it():
    s1, s2, s3 = (ch.Node(x, REDIS, api_key=KEY, extra=bridge_flags()) for x in ("s1", "s2", "s3"))
    n = 1500
    try:
        # Redis answers during the drain: everything held is written first.
        s1.start()
        dev = h.uid("sd")
        hold_entries(s1, dev, n)
        s1.proc.send_signal(signal.SIGTERM)
        h.wait_until(lambda: s1.log_has("bridge: writing %d held entries before stopping" % n),
                     what="s1 to start draining")
        REDIS.proc.send_signal(signal.SIGCONT)
        s1.proc.wait(h.WAIT)
        s1.stop()  # exit status 0
        h.check(s1.log_has("bridge: %d of %d held entries answered before stopping" % (n, n)),
                "s1 did not drain every entry")
        h.check(s1.log_has("bridge: %d matched, %d written, 0 duplicates" % (n, n)),
                "s1's totals")
        check_seq([e["payload"] for e in entries("bt:plain", dev)], ["s%d" % i for i in range(n)],
                  "entries s1 wrote while stopping")

        # Redis never answers: the drain gives up, and says what it held.
        s2.start()
        hold_entries(s2, h.uid("sf"), n)
        s2.stop()  # SIGTERM; exits 0 within the harness's 10 s
        REDIS.proc.send_signal(signal.SIGCONT)
        h.check(s2.log_has("bridge: 0 of %d held entries answered before stopping" % n),
                "s2's drain")
        h.check(s2.log_has("bridge: %d held entries not confirmed written at shutdown (Redis "
                           "did not answer in time)" % n), "s2 did not log what it held")
        h.check(s2.log_has("shutdown %d)" % n), "s2's totals do not count them")

        # Redis away: nothing to drain; what is held is counted and logged.
        s3.start()
        c = connect(s3, h.uid("sl"))
        h.wait_until(lambda: stats(s3)["redis_up"] == 1, what="s3's bridge link up")
        REDIS.save()
        REDIS.kill()
        wait_bridge_down(s3)
        publish_all(c, [("plain/x", "lost%d" % i) for i in range(7)], qos=1)
        h.check_eq(stats(s3)["buffered"], 7, "entries s3 holds")
        c.close()
        s3.stop()
        h.check(s3.log_has("bridge: 7 held entries not confirmed written at shutdown (Redis "
                           "unreachable)"), "s3 did not log the 7 entries it could not write")
        h.check(s3.log_has("dropped (buffer full 0, bad JSON 0, error 0, shutdown 7)"),
                "s3's totals do not count the 7 as dropped at shutdown")
        h.check(not s3.log_has("held entries before stopping"), "s3 tried to drain without Redis")
    finally:
        if REDIS.proc.poll() is None:
            REDIS.proc.send_signal(signal.SIGCONT)
        else:
            REDIS.start(keep_data=True)
        for node in (s1, s2, s3):
            node.kill()
            node.remove_files()


# --------------------------------------------------------------------------
# runner

def stop_all():
    ch.stop_cluster(CL)
    for n in CL.nodes:
        h.check(n.log_has("bridge: ") and " matched, " in n.log_text(),
                "%s did not log its bridge totals at shutdown" % n.node_id)


def bind(redis, events, cluster):
    global REDIS, CL
    REDIS, CL = redis, cluster


def main():
    return ch.run_suite(cases, ("every_node_exits_0_on_sigterm", stop_all), bind, nodes=2,
                        api_key=KEY, extra=bridge_flags())


if __name__ == "__main__":
    sys.exit(main())
