"""scripts/run.sh's default mode as a user runs it: Redis, three nodes and
HAProxy on loopback. Starts `scripts/run.sh --binary $RELAYMQ_BIN
--base-port P` (P: a free block of ports), waits for its ready line, checks
/readyz and /api/v1/nodes through HAProxy, connects 30 MQTT clients through
HAProxy and checks through the API that all are registered with their own
addresses (HAProxy sends PROXY v2) and spread over more than one node,
checks a publish on one node's own port reaches a subscriber there, then
SIGTERMs run.sh: it must exit 0 and leave no process of its group behind.

run.sh runs in its own session, so everything it starts is in the process
group whose id is its PID; only that group (ours) is ever signalled."""
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

ROOT = os.environ.get("RELAYMQ_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
NODES = 3
CLIENTS = 30
KEY = "it-key-41"
READY_TIMEOUT = 90  # sanitizer builds start slower


def block_free(base):
    ports = [base, base + 1, base + 2]
    for i in range(1, NODES + 1):
        ports += [base + 10 * i, base + 10 * i + 1, base + 10 * i + 2, base + 10 * i + 3]
    for p in ports:
        s = socket.socket()
        try:
            s.bind((h.HOST, p))
        except OSError:
            return False
        finally:
            s.close()
    return True


def pick_base():
    for _ in range(50):
        base = random.randrange(20000, 30000 - 10 * NODES - 4)
        if block_free(base):
            return base
    raise AssertionError("no free block of ports for the cluster")


def group_pids(pgid):
    """PIDs whose process group is pgid (from /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        # fields[0] is the state, [1] ppid, [2] pgrp
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(d))
    return out


class RunSh:
    def __init__(self):
        self.base = pick_base()
        self.lines = []
        self.ready = threading.Event()
        self.proc = None

    def start(self):
        env = dict(os.environ)
        env.pop("RELAYMQ_BIN", None)
        self.proc = subprocess.Popen(
            ["bash", os.path.join(ROOT, "scripts", "run.sh"), "--binary",
             os.path.abspath(h.relaymq_bin()), "--base-port", str(self.base),
             "--api-key", KEY, "--", "--log-level", "info"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.3)
                raise AssertionError("run.sh not ready (exit %r):\n%s"
                                     % (self.proc.poll(), self.output()))
        return self

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if "run.sh: cluster ready:" in line:
                self.ready.set()

    def output(self):
        return "\n".join(self.lines[-60:])

    @property
    def mqtt(self):
        return self.base

    @property
    def api(self):
        return "http://%s:%d" % (h.HOST, self.base + 1)

    def node_mqtt(self, i):
        return self.base + 10 * i

    def stop(self):
        """SIGTERM to run.sh alone; returns its exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def kill_group(self):
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


def get(url, key=KEY):
    req = urllib.request.Request(url)
    if key:
        req.add_header("Authorization", "Bearer " + key)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def all_clients(api):
    clients, cursor = [], None
    while True:
        url = api + "/api/v1/clients?limit=1000" + ("&cursor=" + cursor if cursor else "")
        status, body = get(url)
        h.check_eq(status, 200, "GET /api/v1/clients")
        page = json.loads(body)
        clients += page["clients"]
        cursor = page.get("next")
        if not cursor:
            return clients


def main():
    print("binary: %s" % h.relaymq_bin(), flush=True)
    results = []
    run = RunSh()
    conns = []

    def case(name, fn):
        t0 = time.monotonic()
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            sys.stderr.write("---- %s\n%s" % (name, traceback.format_exc()))
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            print("FAIL %s: %s: %s" % (name, type(e).__name__, msg), flush=True)
            results.append(False)
            return False
        print("PASS %s  (%.1fs)" % (name, time.monotonic() - t0), flush=True)
        results.append(True)
        return True

    def started():
        run.start()
        text = "\n".join(run.lines)
        h.check("127.0.0.1:%d" % run.mqtt in text, "MQTT endpoint not printed")
        h.check(run.api in text, "API endpoint not printed")
        h.check("mosquitto_sub" in text and "/api/v1/nodes" in text, "no examples printed")

    def readyz_through_haproxy():
        status, body = get(run.api + "/readyz", key=None)
        h.check_eq(status, 200, "/readyz through HAProxy")
        status, _ = get(run.api + "/api/v1/nodes", key=None)
        h.check_eq(status, 401, "/api/v1/nodes without the key")

    def three_alive_nodes():
        status, body = get(run.api + "/api/v1/nodes")
        h.check_eq(status, 200, "GET /api/v1/nodes")
        nodes = json.loads(body)["nodes"]
        h.check_eq(sorted(n["node_id"] for n in nodes if n.get("alive")), ["n1", "n2", "n3"],
                   "alive nodes")

    def clients_spread_over_nodes():
        for i in range(CLIENTS):
            conns.append(h.raw_connected(run.mqtt, client_id="lb-%02d" % i))
        want = {"lb-%02d" % i for i in range(CLIENTS)}
        # HAProxy sends PROXY v2: the registry holds each client's own address.
        want_peer = {"lb-%02d" % i: "%s:%d" % (h.HOST, c.sock.getsockname()[1])
                     for i, c in enumerate(conns)}
        got = {}
        peers = {}

        def registered():
            got.clear()
            clients = [c for c in all_clients(run.api) if c["client_id"] in want]
            got.update({c["client_id"]: c["node"] for c in clients})
            peers.update({c["client_id"]: c.get("peer") for c in clients})
            return len(got) == CLIENTS
        try:
            h.wait_until(registered, 15, what="30 clients registered")
        except AssertionError:
            raise AssertionError("registered %d of %d: %s" % (len(got), CLIENTS, got)) from None
        per_node = {}
        for node in got.values():
            per_node[node] = per_node.get(node, 0) + 1
        sys.stderr.write("clients per node: %s\n" % per_node)
        h.check(len(per_node) > 1, "all clients on one node: %s" % per_node)
        h.check(set(per_node) <= {"n1", "n2", "n3"}, "unknown nodes: %s" % per_node)
        h.check_eq(peers, want_peer, "registered peers (client addresses through HAProxy)")

    def publish_on_one_node():
        port = run.node_mqtt(2)
        sub = h.raw_connected(port, client_id="it41-sub")
        try:
            sub.send(h.subscribe_packet(1, [("it41/t", 0)]))
            p = sub.recv_packet(timeout=h.WAIT)
            h.check_eq(p.type, 9, "SUBACK type")
            h.mosq_pub(port, "it41/t", "hello")
            p = sub.recv_packet(timeout=h.WAIT)
            h.check_eq((p.type, p.topic, p.payload), (3, "it41/t", b"hello"), "PUBLISH")
        finally:
            sub.close()

    def sigterm_stops_everything():
        for c in conns:
            c.close()
        pgid = run.proc.pid
        h.check(len(group_pids(pgid)) >= 2 + NODES, "run.sh group has %s" % group_pids(pgid))
        rc = run.stop()
        h.check_eq(rc, 0, "run.sh exit status on SIGTERM")
        h.wait_until(lambda: not group_pids(pgid), 10, what="run.sh's processes gone")
        h.check(any("run.sh: stopped" in l for l in run.lines), "no 'stopped' line")
        for p in (run.mqtt, run.base + 1, run.base + 2, run.node_mqtt(1)):
            h.check(not h.port_open(p), "port %d still open" % p)

    try:
        if case("run_sh_prints_ready_and_endpoints", started):
            case("readyz_through_haproxy", readyz_through_haproxy)
            case("api_nodes_shows_three_alive", three_alive_nodes)
            case("thirty_clients_through_haproxy_spread_over_nodes", clients_spread_over_nodes)
            case("publish_reaches_subscriber_on_same_node", publish_on_one_node)
            case("sigterm_stops_every_process_and_exits_0", sigterm_stops_everything)
    finally:
        if run.proc is not None and (run.proc.poll() is None or group_pids(run.proc.pid)):
            sys.stderr.write("run.sh output:\n%s\n" % run.output())
            run.kill_group()
    if not all(results):
        sys.stderr.write("run.sh output:\n%s\n" % run.output())
    passed = sum(results)
    failed = len(results) - passed
    print("%d passed, %d failed" % (passed, failed), flush=True)
    sys.exit(0 if failed == 0 and passed > 0 else 1)


if __name__ == "__main__":
    main()
