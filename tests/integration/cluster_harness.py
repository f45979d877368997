"""Helpers for cluster tests: a real Redis, RelayMQ nodes joined through it,
and readers of the Redis state (through redis-cli) and of the events.

Builds on harness.py (its Broker asserts a clean SIGTERM exit under the
sanitizers). What lives here:
  RedisServer  a throw-away `redis-server` on a free loopback port, in a temp
               dir, no persistence; killable and restartable on the same port
               with an empty dataset. cli() runs redis-cli --json.
  Node         one relaymq cluster node (a harness.Broker with the cluster
               flags); kill9() and restarted() for crash tests.
  Cluster      N nodes n1..nN on one Redis.
  Events       reads the `rmq:events` stream (XRANGE) as dicts.
  SysEvents    a subscriber to one node's $SYS/brokers/{node}/clients/# JSON.

Only processes started here are ever signalled, each by its own PID.
"""
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

PREFIX = "rmq:"
SECRET = "s3cret"
NODE_TTL = "3s"


class RedisServer:
    """redis-server --port P --save '' --appendonly no, in its own temp dir."""

    def __init__(self, port=None):
        self.port = port or h.free_port()
        self.dir = tempfile.mkdtemp(prefix="relaymq-it-redis-")
        self.proc = None
        self.url = "redis://%s:%d" % (h.HOST, self.port)

    def start(self, timeout=h.WAIT, keep_data=False):
        """Starts (or restarts, on the same port) with an empty dataset, or
        with keep_data the one a SAVE left in dump.rdb."""
        dump = os.path.join(self.dir, "dump.rdb")
        if not keep_data and os.path.exists(dump):
            os.unlink(dump)
        self._log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", h.HOST, "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        h.wait_until(lambda: self.proc.poll() is not None or self._pong(), timeout,
                     what="redis-server on port %d" % self.port)
        h.check(self.proc.poll() is None, "redis-server exited %r" % self.proc.returncode)
        return self

    def _pong(self):
        r = subprocess.run(["redis-cli", "-h", h.HOST, "-p", str(self.port), "PING"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        return r.stdout.strip() == b"PONG"

    def save(self):
        """SAVE: writes dump.rdb (with --save '' nothing is saved otherwise)."""
        h.check_eq(self.cli("SAVE"), "OK", "redis SAVE")

    def kill(self):
        """SIGKILL: Redis vanishes without a goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None:
            self._log.close()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(h.WAIT)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc is not None:
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def cli(self, *args):
        """One command through `redis-cli --json`; returns the decoded reply."""
        r = subprocess.run(["redis-cli", "--json", "-h", h.HOST, "-p", str(self.port)]
                           + [str(a) for a in args],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=15)
        out = r.stdout.decode("utf-8", "replace").strip()
        if r.returncode != 0 or out.startswith("(error)") or out.startswith("Could not"):
            raise AssertionError("redis-cli %s: rc %d: %s %s"
                                 % (" ".join(map(str, args)), r.returncode, out,
                                    r.stderr.decode("utf-8", "replace").strip()))
        try:
            return json.loads(out)
        except ValueError:
            raise AssertionError("redis-cli %s: not JSON: %r" % (args, out[:200])) from None

    # Typed readers (keys are given without the prefix).
    def hgetall(self, key):
        return self.cli("HGETALL", PREFIX + key)

    def pttl(self, key):
        return self.cli("PTTL", PREFIX + key)

    def exists(self, key):
        return self.cli("EXISTS", PREFIX + key) == 1

    def smembers(self, key):
        return set(self.cli("SMEMBERS", PREFIX + key))

    def flushall(self):
        self.cli("FLUSHALL")


class Node(h.Broker):
    """A relaymq cluster node on a free MQTT port:
    --redis URL --node-id ID --internal 127.0.0.1:IPORT --cluster-secret s3cret
    --node-ttl 3s --http 127.0.0.1:HPORT --allow-anonymous true --sys-interval 1s."""

    def __init__(self, node_id, redis, node_ttl=NODE_TTL, port=None, internal_port=None,
                 http_port=None, extra=(), **options):
        self.node_id = node_id
        self.redis = redis
        self.internal_port = internal_port or h.free_port()
        self.http_port = http_port or h.free_port()
        self.node_ttl = node_ttl
        self.internal = "%s:%d" % (h.HOST, self.internal_port)
        opts = dict(redis=redis.url, node_id=node_id, internal=self.internal,
                    cluster_secret=SECRET, node_ttl=node_ttl,
                    http="%s:%d" % (h.HOST, self.http_port))
        opts.update(options)
        self._init_args = (extra, opts)
        super().__init__(extra=extra, port=port, **opts)

    def restarted(self):
        """A new process for the same node (same id, ports and options); not started."""
        extra, opts = self._init_args
        return Node(self.node_id, self.redis, port=self.port, internal_port=self.internal_port,
                    http_port=self.http_port, extra=extra,
                    **{k: v for k, v in opts.items() if k not in (
                        "redis", "node_id", "internal", "cluster_secret", "http")})

    def kill9(self):
        """SIGKILL: the node dies without cleaning anything up."""
        h.check(self.alive(), "node %s is not running" % self.node_id)
        self.proc.kill()
        self.proc.wait()
        self._log.close()

    def log_has(self, text):
        return text in self.log_text()


class Cluster:
    """Nodes n1..nN sharing one Redis."""

    def __init__(self, redis, n=3, **options):
        self.redis = redis
        self.nodes = [Node("n%d" % (i + 1), redis, **options) for i in range(n)]

    def start(self):
        for node in self.nodes:
            node.start()
        return self

    def node(self, node_id):
        return next(n for n in self.nodes if n.node_id == node_id)

    def __getitem__(self, i):
        return self.nodes[i]

    def stop(self):
        """SIGTERMs every node; returns the errors (non-zero exits) as strings."""
        errors = []
        for node in self.nodes:
            try:
                node.stop()
            except AssertionError as e:
                errors.append("%s: %s" % (node.node_id, str(e).splitlines()[0]))
        return errors


class Events:
    """The events stream, XRANGE'd: each entry is a dict of its fields plus
    '_id' (the stream id)."""

    def __init__(self, redis):
        self.redis = redis

    def last_id(self):
        got = self.redis.cli("XREVRANGE", PREFIX + "events", "+", "-", "COUNT", 1)
        return got[0][0] if got else "0-0"

    def since(self, start_id="0-0"):
        """Entries after start_id (exclusive), oldest first."""
        out = []
        for entry_id, fields in self.redis.cli("XRANGE", PREFIX + "events",
                                               "(" + start_id if start_id != "0-0" else "-",
                                               "+"):
            d = dict(zip(fields[0::2], fields[1::2]))
            d["_id"] = entry_id
            out.append(d)
        return out

    def for_device(self, device, start_id="0-0", event=None):
        return [e for e in self.since(start_id)
                if e.get("device") == device and (event is None or e.get("event") == event)]

    def wait_for(self, device, event, start_id="0-0", n=1, timeout=h.WAIT):
        """Waits for at least n events of that kind for device; returns them all."""
        return h.wait_until(lambda: (lambda got: got if len(got) >= n else None)(
            self.for_device(device, start_id, event)), timeout,
            what="%d %s event(s) for %s in %sevents" % (n, event, device, PREFIX))


class SysEvents:
    """One paho subscriber to $SYS/brokers/{node}/clients/# on that node;
    messages decoded as (topic, dict)."""

    def __init__(self, node):
        self.node = node
        self.paho = h.Paho(node.port, client_id=h.uid("sysev"))
        self.paho.connect()
        self.paho.subscribe("$SYS/brokers/%s/clients/#" % node.node_id, 0)
        self.seen = []

    def _pump(self, timeout):
        try:
            m = self.paho.messages.get(timeout=timeout)
        except queue.Empty:
            return False
        try:
            body = json.loads(m.payload.decode("utf-8"))
        except ValueError:
            body = {"_raw": m.payload}
        self.seen.append((m.topic, body))
        return True

    def wait_for(self, topic, timeout=h.WAIT):
        """The JSON of the first message on exactly this topic."""
        deadline = time.monotonic() + timeout
        while True:
            for t, body in self.seen:
                if t == topic:
                    return body
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no message on %s within %.0fs (seen topics: %s)"
                                     % (topic, timeout, sorted({t for t, _ in self.seen})[-10:]))
            self._pump(min(left, 0.5))

    def close(self):
        self.paho.disconnect()


def stop_quietly(*things):
    """Best-effort clean-up of clients (RawClient, Paho, MosqSub) after a case."""
    for t in things:
        if t is None:
            continue
        try:
            if isinstance(t, h.RawClient):
                t.close()
            elif isinstance(t, h.Paho):
                t.disconnect()
            else:
                t.stop()
        except Exception:  # noqa: BLE001 - clean-up must not hide the case's error
            pass


# --------------------------------------------------------------------------
# Running a cluster test file


def case_list():
    """A file's list of cases and the decorator that adds to it:
    `cases, case = ch.case_list()`, then `@case` on each case."""
    cases = []

    def case(fn):
        cases.append(fn)
        return fn
    return cases, case


def stop_cluster(cluster):
    """A file's final check: every node of cluster exits 0 on SIGTERM."""
    errors = cluster.stop()
    h.check(not errors, "nodes did not exit 0 on SIGTERM: %s" % errors)


def _run_case(cluster, name, fn):
    """Runs one case; a case may return a short note for its PASS line."""
    t0 = time.monotonic()
    try:
        note = fn()
    except Exception as e:  # noqa: BLE001 - any error fails the case, and is shown
        sys.stderr.write("---- %s\n%s" % (name, traceback.format_exc()))
        for n in cluster.nodes:
            n.show_log("node %s log at the failure of %s" % (n.node_id, name), n=15)
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        return False, "%s: %s" % (type(e).__name__, msg)
    return True, "%.1fs%s" % (time.monotonic() - t0, "; " + note if note else "")


def run_suite(cases, final, bind, nodes=3, **cluster_options):
    """Runs a cluster test file: a real redis-server and `nodes` nodes, then
    every case in order, then `final` (name, fn), which stops the nodes and
    checks how they went. bind(redis, events, cluster) hands the fixtures to
    the file's cases before the cluster starts. Prints one line per case
    and "N passed, N failed"; returns the exit status."""
    if not h.RELAYMQ:
        print("cluster tests are RelayMQ-only: 0 passed, 0 failed")
        return 0
    print("broker under test: %s" % h.relaymq_bin(), flush=True)
    redis = RedisServer().start()
    cluster = Cluster(redis, nodes, **cluster_options)
    bind(redis, Events(redis), cluster)
    try:
        cluster.start()
    except AssertionError as e:
        print("FAIL start cluster: %s" % str(e).splitlines()[0], flush=True)
        for n in cluster.nodes:
            n.kill()
        redis.stop()
        print("0 passed, 1 failed", flush=True)
        return 1
    passed = failed = 0
    for name, fn in [(fn.__name__, fn) for fn in cases] + [final]:
        ok, info = _run_case(cluster, name, fn)
        print("%s %s%s" % ("PASS" if ok else "FAIL", name,
                           ("  (%s)" % info) if ok else ": " + info), flush=True)
        passed += ok
        failed += not ok
    for n in cluster.nodes:
        n.kill()
        if failed == 0:
            n.remove_files()
    redis.stop()
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 0 if failed == 0 else 1
