"""End to end on the native topology (issue 8): a real Redis, three nodes
n1..n3 and a real HAProxy in front of them, with 300 simulated devices
(scripts/device-sim) connected through HAProxy, and everything checked
through HAProxy's admin port.

HAProxy (configured here, not scripts/run.sh's): an MQTT frontend in TCP
mode, `balance roundrobin` over the nodes' PROXY v2 listeners
(`send-proxy-v2`; each node also keeps a plain listener for the clients a
case connects directly), and an HTTP frontend balancing the nodes' admin
APIs. Both check `/readyz` every 500 ms (`fall 2 rise 2`), and a connection
refused by a dead server is re-dispatched to another (`retries 3`,
`option redispatch 1`), so a node that dies leaves rotation in about a
second.

  spread       300 devices through HAProxy: GET /api/v1/clients (paged)
               lists all of them, each of n1, n2, n3 holds some.
  commands     a command (?wait=10) to a device on each node succeeds at
               the first send.
  kill -9      n3 killed: its devices are back through HAProxy on the
               survivors within 30 s; the registry names no device on n3
               and every one of them has an offline event for its n3
               connection in rmq:events; a command posted right after the
               kill to one of them succeeds once it is back; a persistent
               session of n3 with N queued QoS 1 messages gets them after
               reconnecting through HAProxy (session present).
  SIGTERM      n2 stopped (exit 0 within 10 s) while 2000 QoS 1 messages
               flow from n1 to a persistent subscriber on n2, which
               reconnects on n3: every message arrives at least once.
  redis        Redis killed and restarted empty on its port: messages keep
               flowing from n1 to n3, and every device's rmq:dev:* entry is
               back within seconds.

Nodes killed or stopped by a case are started again (same id and ports)
before the next case needs them. Every node running at the end must exit 0
on SIGTERM (sanitizer build). Only processes started here are signalled,
each by its own PID. RELAYMQ_TEST_LOG_LEVEL=debug runs the nodes at
--log-level debug (every connection and packet in their logs) to look into
a failure.
"""
import http.client
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import cluster_harness as ch  # noqa: E402

KEY = "k"
DEVICES = 300
PREFIX = "e2e-"
DEVICE_IDS = ["%s%04d" % (PREFIX, i + 1) for i in range(DEVICES)]
RECONNECT_BOUND = 30.0    # all devices of a dead node back through HAProxy
QUEUED_FOR_SESSION = 20   # case kill -9: messages queued for the offline session
DRAIN_MESSAGES = 2000     # case SIGTERM: messages published across the stop
DRAIN_RATE = 200.0        # per second
LOG_LEVEL = os.environ.get("RELAYMQ_TEST_LOG_LEVEL", "info")  # the nodes' --log-level
SIM = os.path.join(os.environ.get("RELAYMQ_SOURCE_DIR")
                   or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."),
                   "scripts", "device-sim")

REDIS = None
EV = None
CL = None
LB = None
DEVS = None
ACCOUNTED = []  # node processes a case killed or stopped (and checked) on purpose
RETIRED = []    # nodes replaced by a restart (their log directories)
cases, case = ch.case_list()


# --------------------------------------------------------------------------
# HAProxy


class LoadBalancer:
    """haproxy -db with a generated config: MQTT (TCP, roundrobin, PROXY v2 to
    each node's proxy listener) and admin (HTTP, roundrobin) frontends."""

    def __init__(self, nodes):
        self.nodes = nodes  # [(node_id, proxy_port, http_port)]
        self.mqtt_port = h.free_port()
        self.admin_port = h.free_port()
        self.dir = tempfile.mkdtemp(prefix="relaymq-it-haproxy-")
        self.cfg = os.path.join(self.dir, "haproxy.cfg")
        self.log_path = os.path.join(self.dir, "haproxy.log")
        self.proc = None

    def config(self):
        lines = [
            "global", "    maxconn 2000", "",
            "defaults", "    mode tcp", "    timeout connect 2s",
            "    timeout client 10m", "    timeout server 10m", "    timeout check 1s",
            # A connection refused by a server that has just died is tried
            # again on another one.
            "    retries 3", "    option redispatch 1",
            "    default-server inter 500 fall 2 rise 2", "",
            "frontend mqtt", "    bind %s:%d" % (h.HOST, self.mqtt_port),
            "    default_backend mqtt_nodes", "",
            "backend mqtt_nodes", "    balance roundrobin",
            "    option httpchk GET /readyz", "    http-check expect status 200"]
        lines += ["    server %s %s:%d check port %d send-proxy-v2" % (nid, h.HOST, pport, hport)
                  for nid, pport, hport in self.nodes]
        lines += ["", "frontend admin", "    bind %s:%d" % (h.HOST, self.admin_port),
                  "    mode http", "    timeout client 60s", "    default_backend admin_nodes", "",
                  "backend admin_nodes", "    mode http", "    balance roundrobin",
                  "    option httpchk GET /readyz", "    http-check expect status 200",
                  "    timeout server 60s"]
        lines += ["    server %s %s:%d check" % (nid, h.HOST, hport)
                  for nid, _, hport in self.nodes]
        return "\n".join(lines) + "\n"

    def start(self):
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        h.check(os.path.exists(binary), "haproxy not installed (scripts/deps.sh installs it)")
        with open(self.cfg, "w") as f:
            f.write(self.config())
        r = subprocess.run([binary, "-c", "-q", "-f", self.cfg], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
        h.check(r.returncode == 0, "haproxy -c rejected the config:\n%s" % r.stdout.decode())
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary, "-db", "-f", self.cfg], stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        h.wait_until(lambda: self.proc.poll() is not None or (
            h.port_open(self.mqtt_port) and h.port_open(self.admin_port)),
            what="haproxy listening")
        h.check(self.proc.poll() is None, "haproxy exited %r:\n%s"
                % (self.proc.returncode, self.log_text()))
        return self

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(h.WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------
# The admin API through HAProxy


class Reply:
    def __init__(self, status, raw):
        self.status, self.raw = status, raw
        try:
            self.json = json.loads(raw) if raw else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return "Reply(%d, %r)" % (self.status, self.raw[:400])


def api(method, path, body=None, timeout=30):
    """One admin API request through HAProxy's admin frontend."""
    conn = http.client.HTTPConnection(h.HOST, LB.admin_port, timeout=timeout)
    hdrs = {"Authorization": "Bearer " + KEY}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        return Reply(r.status, r.read())
    finally:
        conn.close()


def expect(reply, status, what):
    h.check(reply.status == status, "%s: expected %d, got %r" % (what, status, reply))
    return reply.json


def all_clients():
    """Every page of GET /api/v1/clients through HAProxy."""
    entries, cursor, pages = [], None, 0
    while True:
        q = "limit=1000" + ("&cursor=" + urllib.parse.quote(cursor, safe="") if cursor else "")
        doc = expect(api("GET", "/api/v1/clients?" + q), 200, "GET /api/v1/clients?" + q)
        h.check(isinstance(doc, dict) and isinstance(doc.get("clients"), list) and "next" in doc,
                "page shape {clients, next}: %r" % (doc,))
        entries += doc["clients"]
        cursor = doc["next"]
        pages += 1
        if not cursor:
            return entries
        h.check(pages < 500, "pagination does not end")


def device_nodes():
    """{device: node} of the simulated devices listed by the API (a device
    listed twice is an error)."""
    out = {}
    for e in all_clients():
        cid = e.get("client_id", "")
        if cid.startswith(PREFIX):
            h.check(cid not in out, "device %s listed twice: %s and %s"
                    % (cid, out.get(cid), e.get("node")))
            out[cid] = e.get("node")
    return out


def per_node(dev_nodes):
    counts = {}
    for n in dev_nodes.values():
        counts[n] = counts.get(n, 0) + 1
    return counts


def wait_devices(pred, timeout, what):
    """Polls the device list through HAProxy until pred({device: node})."""
    last = {}

    def probe():
        try:
            last["d"] = device_nodes()
        except (AssertionError, OSError) as e:  # a node leaving rotation: try again
            last["err"] = str(e)
            return None
        return last["d"] if pred(last["d"]) else None
    try:
        return h.wait_until(probe, timeout, interval=0.5, what=what)
    except AssertionError as e:
        d = last.get("d", {})
        missing = sorted(set(DEVICE_IDS) - set(d))
        raise AssertionError("%s; listed %d, per node %s, missing %s%s; last error %s"
                             % (e, len(d), per_node(d), missing[:10],
                                "..." if len(missing) > 10 else "", last.get("err")))


def post_command(device, payload, query=""):
    r = api("POST", "/api/v1/devices/%s/commands%s" % (urllib.parse.quote(device, safe=""),
                                                       query), {"payload": payload})
    h.check(r.status in (200, 202) and isinstance(r.json, dict) and r.json.get("id"),
            "POST a command for %s%s: %r" % (device, query, r))
    return r.status, r.json


def get_command(cmd_id):
    return expect(api("GET", "/api/v1/commands/" + cmd_id), 200, "GET command " + cmd_id)


# --------------------------------------------------------------------------
# Redis readers


def dev_keys_naming(node_id):
    """Devices whose rmq:dev:* entry names node_id."""
    script = ("local out = {} "
              "for _, k in ipairs(redis.call('KEYS', ARGV[1] .. 'dev:*')) do "
              "  if redis.call('HGET', k, 'node') == ARGV[2] then "
              "    table.insert(out, string.sub(k, #ARGV[1] + 5)) end end "
              "return out")
    return set(REDIS.cli("EVAL", script, 0, ch.PREFIX, node_id))


def registered_devices():
    return {k[len(ch.PREFIX) + 4:] for k in REDIS.cli("KEYS", ch.PREFIX + "dev:*")}


# --------------------------------------------------------------------------
# Simulated devices


class DeviceSim:
    """scripts/device-sim with --count DEVICES through HAProxy; its event log
    in a temp file."""

    def __init__(self, port):
        fd, self.log_path = tempfile.mkstemp(prefix="relaymq-it-sim-", suffix=".jsonl")
        os.close(fd)
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", SIM, "--host", h.HOST, "--port", str(port), "--count",
             str(DEVICES), "--prefix", PREFIX, "--telemetry-interval", "5",
             "--log", self.log_path],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)

    def events(self, event=None):
        try:
            with open(self.log_path) as f:
                lines = [json.loads(line) for line in f if line.strip()]
        except (OSError, ValueError):
            return []
        return [e for e in lines if event is None or e["event"] == event]

    def connected_since(self, t):
        """Devices with a 'connected' event at or after unix time t."""
        return {e["device"] for e in self.events("connected") if e["t"] >= t}

    def stop(self):
        """SIGTERM: must exit 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("device-sim did not exit within 30s of SIGTERM")
        err = self.proc.stderr.read().decode("utf-8", "replace")
        h.check(rc == 0, "device-sim exited %r: %s" % (rc, err[-800:]))
        os.unlink(self.log_path)


# --------------------------------------------------------------------------
# Nodes


def make_node(node_id, proxy_port):
    return ch.Node(node_id, REDIS, api_key=KEY, log_level=LOG_LEVEL,
                   extra=["--listen", "tcp://%s:%d?proxy-protocol=v2" % (h.HOST, proxy_port)])


def node(node_id):
    return CL.node(node_id)


def ensure_all_nodes():
    """Starts again (same id and ports) any node a case killed or stopped,
    and waits until HAProxy has every node back in rotation."""
    restarted, crashed = [], []
    for i, n in enumerate(CL.nodes):
        if not n.alive():
            if n not in ACCOUNTED:
                crashed.append("%s (exit %r, log %s)" % (n.node_id, n.proc.returncode,
                                                         n.log_path))
            fresh = n.restarted()
            fresh.start(timeout=30)
            CL.nodes[i] = fresh
            RETIRED.append(n)
            restarted.append(n.node_id)
    if restarted:
        def all_alive():
            doc = api("GET", "/api/v1/nodes").json or {}
            return sorted(x["node_id"] for x in doc.get("nodes", []) if x.get("alive")) == \
                ["n1", "n2", "n3"]
        h.wait_until(all_alive, 20, interval=0.2, what="n1..n3 alive after restarting %s"
                     % restarted)
        time.sleep(1.5)  # HAProxy's rise 2 x inter 500 ms for the restarted ones
    h.check(not crashed, "nodes died on their own: %s" % crashed)
    return restarted


def ranges(nums):
    """[3, 4, 5, 9] -> '3-5, 9'."""
    out = []
    for n in sorted(nums):
        if out and n == out[-1][1] + 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return ", ".join("%d" % a if a == b else "%d-%d" % (a, b) for a, b in out)


def unacknowledged(infos, timeout=20):
    """Indexes of paho publishes (MQTTMessageInfo) whose PUBACK has not come
    within timeout (one deadline for them all)."""
    deadline = time.monotonic() + timeout
    out = []
    for i, info in enumerate(infos):
        if info.rc not in (0, 4):  # MQTT_ERR_SUCCESS, MQTT_ERR_AGAIN (queued in paho)
            out.append(i)
            continue
        info.wait_for_publish(max(0.01, deadline - time.monotonic()))
        if not info.is_published():
            out.append(i)
    return out


def warm_route(pub, sub, topic):
    """Publishes probes until sub receives one (the route is known on the
    publisher's node); then empties sub's queue."""
    deadline = time.monotonic() + h.WAIT
    i = 0
    while time.monotonic() < deadline:
        pub.publish(topic, "warm-%d" % i, qos=1)
        i += 1
        try:
            sub.messages.get(timeout=0.3)
            time.sleep(0.3)
            sub.drain(timeout=0.2)
            return
        except queue.Empty:
            pass
    raise AssertionError("no probe on %s reached the subscriber within %.0fs" % (topic, h.WAIT))


# --------------------------------------------------------------------------
# Cases


@case
def devices_through_haproxy_spread_over_all_nodes():
    global DEVS
    DEVS = DeviceSim(LB.mqtt_port)
    d = wait_devices(lambda d: len(d) == DEVICES, 90, "%d devices listed" % DEVICES)
    counts = per_node(d)
    h.check(set(counts) <= {"n1", "n2", "n3"}, "devices on unknown nodes: %s" % counts)
    for n in ("n1", "n2", "n3"):
        h.check(counts.get(n, 0) >= 1, "no device on %s: %s" % (n, counts))
    regs = registered_devices()
    h.check(set(DEVICE_IDS) <= regs, "rmq:dev:* missing for %s"
            % sorted(set(DEVICE_IDS) - regs)[:10])
    return "per node %s" % dict(sorted(counts.items()))


@case
def commands_through_haproxy_reach_devices_on_every_node():
    d = wait_devices(lambda d: len(d) == DEVICES, 30, "%d devices listed" % DEVICES)
    for nid in ("n1", "n2", "n3"):
        device = next(dev for dev in sorted(d) if d[dev] == nid)
        status, cmd = post_command(device, {"op": "ping", "via": "haproxy", "node": nid},
                                   "?wait=10")
        h.check(status == 200 and cmd["status"] == "succeeded",
                "command to %s on %s: expected 200 succeeded, got %d %r" % (device, nid, status,
                                                                            cmd))
        h.check_eq(cmd["attempts"], 1, "attempts of the command to %s on %s" % (device, nid))
        h.check_eq(cmd["node"], nid, "node of the command to %s" % device)
        reply = cmd.get("reply") or {}
        h.check(reply.get("cmd_id") == cmd["id"] and reply.get("device") == device
                and reply.get("result") == "ok",
                "reply of %s stored: %r" % (device, reply))


@case
def kill_9_devices_sessions_and_commands_move_to_survivors():
    victim = node("n3")
    d = wait_devices(lambda d: len(d) == DEVICES, 30, "%d devices listed" % DEVICES)
    victim_devs = sorted(dev for dev, n in d.items() if n == victim.node_id)
    h.check(victim_devs, "no device on %s to move: %s" % (victim.node_id, per_node(d)))

    # A persistent session on the victim, offline, with N messages queued
    # for it (published through HAProxy): written to Redis as they queue.
    sid = h.uid("e2eps")
    topic = "e2e/persist/" + sid
    sub = h.Paho(victim.port, client_id=sid, clean=False)
    sub.connect()
    sub.subscribe(topic, 1)
    sub.disconnect()
    h.wait_until(lambda: REDIS.hgetall("sess:" + sid).get("online") == "0",
                 what="sess:%s online 0" % sid)
    pub = h.Paho(LB.mqtt_port)
    want = {("q-%d" % i).encode() for i in range(QUEUED_FOR_SESSION)}
    with pub:
        for i in range(QUEUED_FOR_SESSION):
            pub.publish(topic, "q-%d" % i, qos=1)
    h.wait_until(lambda: REDIS.cli("LLEN", ch.PREFIX + "sess:%s:queue" % sid)
                 >= QUEUED_FOR_SESSION, what="%d messages in rmq:sess:%s:queue"
                 % (QUEUED_FOR_SESSION, sid))

    mark = EV.last_id()
    t_kill = time.time()
    victim.kill9()
    ACCOUNTED.append(victim)
    # A command for one of its devices while it is away.
    away = victim_devs[0]
    status, cmd = post_command(away, {"op": "after-kill"})
    h.check_eq(status, 202, "POST right after the kill (%r)" % cmd)

    # Every device back through HAProxy, none on the dead node.
    d = wait_devices(lambda d: len(d) == DEVICES and victim.node_id not in per_node(d),
                     RECONNECT_BOUND, "%d devices listed, none on %s"
                     % (DEVICES, victim.node_id))
    back_after = time.time() - t_kill
    missing = set(victim_devs) - DEVS.connected_since(t_kill)
    h.check(not missing, "device-sim saw no reconnection of %s" % sorted(missing)[:10])
    h.wait_until(lambda: not dev_keys_naming(victim.node_id), 15,
                 what="no rmq:dev:* naming %s" % victim.node_id)
    h.wait_until(lambda: victim.node_id not in REDIS.smembers("nodes")
                 and not REDIS.exists("node:%s:devices" % victim.node_id), 15,
                 what="%s reaped (gone from rmq:nodes, rmq:node:%s:devices deleted)"
                 % (victim.node_id, victim.node_id))

    # The rest is checked whatever fails first, so one run shows every
    # problem: events, the command, the session.
    problems = []

    # The stream: each device of the dead node has an offline event for
    # its connection there (node_down from the reaper, or any other
    # reason), and an online event on a survivor.
    def events_missing():
        gone, back = set(), set()
        for e in EV.since(mark):
            if e.get("event") == "offline" and e.get("node") == victim.node_id:
                gone.add(e.get("device"))
            elif e.get("event") == "online" and e.get("node") != victim.node_id:
                back.add(e.get("device"))
        return set(victim_devs) - gone, set(victim_devs) - back
    try:
        h.wait_until(lambda: events_missing() == (set(), set()), 15,
                     what="offline (node %s) and online events for its %d devices"
                     % (victim.node_id, len(victim_devs)))
    except AssertionError as e:
        no_off, no_on = events_missing()
        sample = sorted(no_off or no_on)[:1]
        detail = ["%s: %s" % (dev, [(x.get("event"), x.get("node"), x.get("reason"),
                                     x.get("channel_id")) for x in EV.for_device(dev)])
                  for dev in sample]
        problems.append("%s: %d of %d devices have no offline event for %s (%s), %d no "
                        "online event elsewhere; events of %s"
                        % (e, len(no_off), len(victim_devs), victim.node_id,
                           ranges(int(x[len(PREFIX):]) for x in no_off), len(no_on), detail))

    # The command posted while the device was away.
    try:
        done = h.wait_until(lambda: (lambda c: c if c["status"] in (
            "succeeded", "failed", "timed_out", "expired", "canceled") else None)(
            get_command(cmd["id"])), 30, interval=0.2,
            what="command %s for %s to finish" % (cmd["id"], away))
        h.check(done["status"] == "succeeded"
                and (done.get("reply") or {}).get("cmd_id") == cmd["id"]
                and done["node"] != victim.node_id,
                "command for %s posted after the kill: %r" % (away, done))
    except AssertionError as e:
        problems.append(str(e))

    # The persistent session: its queued messages, through HAProxy.
    sub = h.Paho(LB.mqtt_port, client_id=sid, clean=False)
    try:
        present = sub.connect()
        h.check(present, "session present 0 after reconnecting %s through HAProxy" % sid)
        got = {m.payload for m in sub.take(QUEUED_FOR_SESSION, timeout=15)}
        h.check(want <= got, "queued messages: missing %s" % sorted(want - got))
    except AssertionError as e:
        problems.append("persistent session: %s" % e)
    finally:
        ch.stop_quietly(sub)
    if problems:
        raise AssertionError("; ".join(problems) + " (its %d devices were back in %.1fs)"
                             % (len(victim_devs), back_after))
    return "%d devices back in %.1fs; session got %d" % (len(victim_devs), back_after,
                                                         QUEUED_FOR_SESSION)


@case
def sigterm_drains_a_node_without_losing_qos1_messages():
    ensure_all_nodes()
    victim, pub_node, new_node = node("n2"), node("n1"), node("n3")
    sid = h.uid("e2edr")
    topic = "e2e/drain/" + sid
    sub = h.Paho(victim.port, client_id=sid, clean=False)
    pub = h.Paho(pub_node.port)
    sub2 = None
    problems = []
    try:
        sub.connect()
        sub.subscribe(topic, 1)
        pub.connect()
        warm_route(pub, sub, topic)

        infos = []
        sent = threading.Event()
        half = threading.Event()

        def publish():
            t0 = time.monotonic()
            for i in range(DRAIN_MESSAGES):
                infos.append(pub.c.publish(topic, str(i), 1))
                if i == DRAIN_MESSAGES // 4:
                    half.set()
                delay = t0 + (i + 1) / DRAIN_RATE - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            sent.set()
        thread = threading.Thread(target=publish, daemon=True)
        thread.start()
        h.check(half.wait(30), "publisher stuck before the stop")

        before = wait_devices(lambda d: len(d) == DEVICES, 10, "%d devices listed" % DEVICES)
        victim_devs = sorted(dev for dev, n in before.items() if n == victim.node_id)
        mark = EV.last_id()
        t_term = time.monotonic()
        victim.proc.send_signal(signal.SIGTERM)
        ACCOUNTED.append(victim)
        h.check(sub.disconnected.wait(10), "subscriber on %s not disconnected within 10s of "
                "SIGTERM" % victim.node_id)
        t_closed = time.monotonic() - t_term
        # The subscriber comes back at once on another node, as a device
        # would, with the same id and clean session 0.
        sub2 = h.Paho(new_node.port, client_id=sid, clean=False)
        present = sub2.connect()
        t_back = time.monotonic() - t_term
        if not present:
            problems.append("session present 0 when %s reconnected on %s"
                            % (sid, new_node.node_id))
        try:
            rc = victim.proc.wait(max(0.1, 10 - (time.monotonic() - t_term)))
            t_exit = time.monotonic() - t_term
            victim._log.close()
            if rc != 0:
                problems.append("%s exited %r on SIGTERM" % (victim.node_id, rc))
        except subprocess.TimeoutExpired:
            t_exit = None
            problems.append("%s did not exit within 10s of SIGTERM" % victim.node_id)
            victim.kill()

        h.check(sent.wait(60), "publisher did not finish")
        thread.join(5)
        unacked = unacknowledged(infos)
        if unacked:
            problems.append("%d publishes not acknowledged by %s: %s"
                            % (len(unacked), pub_node.node_id, ranges(unacked)))

        want = set(range(DRAIN_MESSAGES))
        got, dups = set(), 0

        def take_all():
            nonlocal dups
            for c in (sub, sub2):
                while True:
                    try:
                        m = c.messages.get_nowait()
                    except queue.Empty:
                        break
                    try:
                        n = int(m.payload)
                    except ValueError:
                        continue  # a late warm-up probe
                    dups += n in got
                    got.add(n)
            return want <= got
        try:
            h.wait_until(take_all, 20, interval=0.2, what="all %d messages" % DRAIN_MESSAGES)
        except AssertionError:
            lost = sorted(want - got)
            problems.append("lost %d of %d QoS 1 messages: %s (first copy of each; received "
                            "%d, %d duplicates; subscriber closed %.2fs after SIGTERM, back on "
                            "%s at %.2fs, %s exited at %s)"
                            % (len(lost), DRAIN_MESSAGES, ranges(lost), len(got), dups, t_closed,
                               new_node.node_id, t_back, victim.node_id,
                               "%.2fs" % t_exit if t_exit is not None else "never"))
        # The node left on its own (no survivor had to reap it), its
        # devices are back through HAProxy, each with an offline event
        # (reason shutdown) for its connection there.
        if t_exit is not None:
            try:
                h.wait_until(lambda: not REDIS.exists("node:" + victim.node_id)
                             and victim.node_id not in REDIS.smembers("nodes"), 0.5,
                             what="rmq:node:%s deleted and %s out of rmq:nodes on exit"
                             % (victim.node_id, victim.node_id))
            except AssertionError as e:
                problems.append(str(e))
        try:
            wait_devices(lambda d: len(d) == DEVICES and victim.node_id not in per_node(d),
                         RECONNECT_BOUND, "%d devices listed, none on %s"
                         % (DEVICES, victim.node_id))
        except AssertionError as e:
            problems.append(str(e))
        shut = {e.get("device") for e in EV.since(mark) if e.get("event") == "offline"
                and e.get("node") == victim.node_id and e.get("reason") == "shutdown"}
        no_event = set(victim_devs) - shut
        if no_event:
            sample = sorted(no_event)[0]
            problems.append("%d of %d devices of %s have no offline event with reason shutdown "
                            "(%s); events of %s since the SIGTERM: %s"
                            % (len(no_event), len(victim_devs), victim.node_id,
                               ranges(int(x[len(PREFIX):]) for x in no_event), sample,
                               [(x.get("event"), x.get("node"), x.get("reason"),
                                 x.get("channel_id")) for x in EV.for_device(sample, mark)]))
        if problems:
            victim.show_log("stopped node %s" % victim.node_id, n=40)
            raise AssertionError("; ".join(problems))
        return "closed at %.2fs, back at %.2fs, exit at %.2fs, %d duplicates" % (
            t_closed, t_back, t_exit, dups)
    finally:
        ch.stop_quietly(sub, sub2, pub)
        if victim.alive():
            victim.kill()


@case
def redis_restart_traffic_continues_and_registry_is_repopulated():
    ensure_all_nodes()
    pub_node, sub_node = node("n1"), node("n3")
    topic = "e2e/redis/" + h.uid("r")
    sub = h.Paho(sub_node.port)
    pub = h.Paho(pub_node.port)
    try:
        sub.connect()
        sub.subscribe(topic, 1)
        pub.connect()
        warm_route(pub, sub, topic)
        h.check(set(DEVICE_IDS) <= registered_devices(), "devices not all registered before")

        stop = threading.Event()
        sent = []

        def publish():
            i = 0
            while not stop.is_set():
                sent.append((i, time.monotonic(), pub.c.publish(topic, str(i), 1)))
                i += 1
                time.sleep(0.02)
        thread = threading.Thread(target=publish, daemon=True)
        thread.start()
        time.sleep(1.5)
        REDIS.kill()
        time.sleep(1.5)
        REDIS.start()
        t_up = time.monotonic()
        try:
            h.wait_until(lambda: set(DEVICE_IDS) <= registered_devices(), 10, interval=0.2,
                         what="rmq:dev:* back for all %d devices" % DEVICES)
        except AssertionError as e:
            missing = set(DEVICE_IDS) - registered_devices()
            raise AssertionError("%s: %d missing (%s)" % (e, len(missing), ranges(
                int(x[len(PREFIX):]) for x in missing))) from None
        t_reg = time.monotonic() - t_up
        h.wait_until(lambda: REDIS.smembers("nodes") == {"n1", "n2", "n3"}, 10,
                     what="rmq:nodes = n1..n3 again")
        time.sleep(2.0)  # traffic after the registry is back
        stop.set()
        thread.join(5)
        unacked = unacknowledged([info for _, _, info in sent])
        h.check(not unacked, "%d publishes not acknowledged: %s" % (len(unacked),
                                                                    ranges(unacked)))
        want = {i for i, _, _ in sent}
        got = set()

        def take_all():
            while True:
                try:
                    m = sub.messages.get_nowait()
                except queue.Empty:
                    break
                if not m.payload.startswith(b"warm"):
                    got.add(int(m.payload))
            return want <= got
        try:
            h.wait_until(take_all, 15, interval=0.2, what="all %d messages" % len(want))
        except AssertionError as e:
            raise AssertionError("%s: lost %s of %d (published every 20 ms; Redis killed "
                                 "about message 75, back about 150)"
                                 % (e, ranges(want - got), len(want))) from None
        # The API through HAProxy lists every device again.
        wait_devices(lambda d: len(d) == DEVICES, 20, "%d devices listed after the restart"
                     % DEVICES)
        return "registry back %.1fs after Redis; %d messages across" % (t_reg, len(want))
    finally:
        ch.stop_quietly(sub, pub)
        if REDIS.proc.poll() is not None:
            REDIS.start()


def stop_all():
    errors = []
    if DEVS is not None:
        try:
            DEVS.stop()
        except AssertionError as e:
            errors.append(str(e))
    for n in CL.nodes:
        if n in ACCOUNTED:
            continue
        try:
            n.stop()
        except AssertionError as e:
            errors.append("%s: %s" % (n.node_id, str(e).splitlines()[0]))
    h.check(not errors, "did not exit 0 on SIGTERM: %s" % errors)


# --------------------------------------------------------------------------
# Runner


def run_case(name, fn):
    t0 = time.monotonic()
    try:
        note = fn()
    except Exception as e:  # noqa: BLE001 - any error fails the case, and is shown
        sys.stderr.write("---- %s\n%s" % (name, traceback.format_exc()))
        for n in CL.nodes:
            n.show_log("node %s log at the failure of %s" % (n.node_id, name), n=15)
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        return False, "%s: %s" % (type(e).__name__, msg)
    return True, "%.1fs%s" % (time.monotonic() - t0, "; " + note if note else "")


def main():
    global REDIS, EV, CL, LB
    if not h.RELAYMQ:
        print("cluster tests are RelayMQ-only: 0 passed, 0 failed")
        return 0
    print("broker under test: %s" % h.relaymq_bin(), flush=True)
    REDIS = ch.RedisServer().start()
    EV = ch.Events(REDIS)
    CL = ch.Cluster(REDIS, 0)
    proxy_ports = {"n%d" % i: h.free_port() for i in (1, 2, 3)}
    CL.nodes = [make_node(nid, port) for nid, port in sorted(proxy_ports.items())]
    LB = LoadBalancer([(n.node_id, proxy_ports[n.node_id], n.http_port) for n in CL.nodes])
    passed = failed = 0
    try:
        try:
            CL.start()
            LB.start()
            h.wait_until(lambda: api("GET", "/readyz").status == 200, 20,
                         what="/readyz through HAProxy")
        except (AssertionError, OSError) as e:
            print("FAIL start cluster and haproxy: %s" % str(e).splitlines()[0], flush=True)
            sys.stderr.write(str(e) + "\n")
            print("0 passed, 1 failed", flush=True)
            return 1
        for name, fn in [(fn.__name__, fn) for fn in cases] + [
                ("devices_and_nodes_exit_0_on_sigterm", stop_all)]:
            ok, info = run_case(name, fn)
            print("%s %s%s" % ("PASS" if ok else "FAIL", name,
                               ("  (%s)" % info) if ok else ": " + info), flush=True)
            passed += ok
            failed += not ok
    finally:
        if DEVS is not None and DEVS.proc.poll() is None:
            DEVS.proc.kill()
            DEVS.proc.wait()
        for n in CL.nodes + RETIRED:
            n.kill()
            if failed == 0:
                n.remove_files()
        LB.stop()
        REDIS.stop()
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
