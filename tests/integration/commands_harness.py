"""Helpers for the device-command tests (test_50, test_51): calls to the
admin API with its key, posting and polling commands, checks of a command's
fields, and Device, a paho client that records every copy of a command it
receives and answers (or not) as a case tells it.

A test file hands them its Redis and cluster (cluster_harness) with
bind(); NODE_OPTIONS are the options the files start their nodes with
(the admin API key, a 1 s command retry interval).
"""
import datetime
import json
import os
import re
import threading
import time
import urllib.parse

import api_client
from api_client import expect  # noqa: F401  (re-exported for test_50)
import harness as h
import cluster_harness as ch

KEY = "k"
INTERVAL_S = 1.0            # --command-retry-interval of every node here
DEFAULT_RETRIES = 3         # --command-max-retries left at its default
DEFAULT_TTL_MS = 3600_000   # --command-ttl left at its default (1h)
NODE_OPTIONS = dict(api_key=KEY, command_retry_interval="1s")
FINAL = {"succeeded", "failed", "timed_out", "expired", "canceled"}
STATUSES = FINAL | {"queued", "sent", "delivered"}
SLOW = 15.0                 # upper bound for anything that should take a few intervals
SIM = os.path.join(os.environ.get("RELAYMQ_SOURCE_DIR")
                   or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."),
                   "scripts", "device-sim")

REDIS = None
CL = None


def bind(redis, events, cluster):
    """cluster_harness.run_suite's bind hook (the event log is not used here)."""
    global REDIS, CL
    REDIS, CL = redis, cluster


def stop_all():
    ch.stop_cluster(CL)


# --------------------------------------------------------------------------
# HTTP


def call(node, method, path, body=None, key=KEY, timeout=h.WAIT):
    """One admin API request to node on a fresh connection; body: a JSON
    value (sent encoded), or str/bytes sent as they are, as JSON too."""
    return api_client.request(node.http_port, method, path, body=body, key=key,
                              content_type="application/json" if body is not None else None,
                              timeout=timeout)


def q(s):
    return urllib.parse.quote(s, safe="")


def cmd_path(cmd_id):
    return "/api/v1/commands/" + q(cmd_id)


def dev_path(device):
    return "/api/v1/devices/%s/commands" % q(device)


def post_command(node, device, payload, status=202, query="", timeout=h.WAIT, **fields):
    """POSTs a command (fields: qos, retries, interval, ttl, idempotency_key);
    expects `status`; returns the command."""
    body = dict(fields)
    body["payload"] = payload
    r = call(node, "POST", dev_path(device) + query, body, timeout=timeout)
    doc = expect(r, status, what="POST a command for %s to %s%s" % (device, node_name(node),
                                                                   query))
    check_command(doc, "POST answer")
    return doc


def get_command(node, cmd_id):
    doc = expect(call(node, "GET", cmd_path(cmd_id)), 200,
                 what="GET command %s on %s" % (cmd_id, node_name(node)))
    check_command(doc, "GET answer")
    return doc


def wait_command(node, cmd_id, pred, what, timeout=SLOW):
    """Polls GET on node until pred(command) holds; returns the command."""
    last = {}

    def probe():
        last["c"] = get_command(node, cmd_id)
        return last["c"] if pred(last["c"]) else None
    try:
        return h.wait_until(probe, timeout, interval=0.05, what=what)
    except AssertionError as e:
        raise AssertionError("%s; last seen %r" % (e, last.get("c"))) from None


def wait_final(node, cmd_id, timeout=SLOW):
    return wait_command(node, cmd_id, lambda c: c["status"] in FINAL,
                        "command %s to reach a final status" % cmd_id, timeout)


def node_name(node):
    return getattr(node, "node_id", "standalone")


ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")
COMMAND_FIELDS = {"id", "device", "status", "attempts", "retries", "interval_ms", "ttl_ms",
                  "qos", "payload", "idempotency_key", "reply", "node", "accepted_by",
                  "created_at", "updated_at", "created_at_ms", "updated_at_ms", "expires_at_ms"}


def iso_ms(text):
    d = datetime.datetime.strptime(text.rstrip("Z").split(".")[0], "%Y-%m-%dT%H:%M:%S")
    frac = text.rstrip("Z").split(".")[1] if "." in text else "0"
    return int(d.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000) + \
        int(round(float("0." + frac) * 1000))


def check_command(c, what):
    """The documented shape of a command (types, timestamps, consistency)."""
    h.check(isinstance(c, dict), "%s: a command object, got %r" % (what, c))
    missing = COMMAND_FIELDS - set(c)
    h.check(not missing, "%s: command without %s: %r" % (what, sorted(missing), c))
    h.check(isinstance(c["id"], str) and c["id"], "%s: id %r" % (what, c["id"]))
    h.check(c["status"] in STATUSES, "%s: status %r" % (what, c["status"]))
    for k in ("attempts", "retries", "interval_ms", "ttl_ms", "qos", "created_at_ms",
              "updated_at_ms", "expires_at_ms"):
        h.check(isinstance(c[k], int) and not isinstance(c[k], bool) and c[k] >= 0,
                "%s: %s %r is not a non-negative integer" % (what, k, c[k]))
    h.check(isinstance(c["payload"], dict), "%s: payload %r" % (what, c["payload"]))
    h.check(c["reply"] is None or isinstance(c["reply"], dict), "%s: reply %r" % (what, c["reply"]))
    h.check(c["idempotency_key"] is None or isinstance(c["idempotency_key"], str),
            "%s: idempotency_key %r" % (what, c["idempotency_key"]))
    h.check(isinstance(c["node"], str) and c["node"], "%s: node %r" % (what, c["node"]))
    h.check(isinstance(c["accepted_by"], str) and c["accepted_by"],
            "%s: accepted_by %r" % (what, c["accepted_by"]))
    for k in ("created_at", "updated_at"):
        h.check(isinstance(c[k], str) and ISO_RE.match(c[k]),
                "%s: %s %r is not ISO 8601 UTC" % (what, k, c[k]))
        h.check(abs(iso_ms(c[k]) - c[k + "_ms"]) < 1000,
                "%s: %s %r disagrees with %s %r" % (what, k, c[k], k + "_ms", c[k + "_ms"]))
    h.check(abs(c["created_at_ms"] - time.time() * 1000) < 120_000,
            "%s: created_at_ms %d is not near now" % (what, c["created_at_ms"]))
    h.check(c["updated_at_ms"] >= c["created_at_ms"], "%s: updated before created: %r" % (what, c))
    h.check_eq(c["expires_at_ms"], c["created_at_ms"] + c["ttl_ms"],
               "%s: expires_at_ms (created_at_ms + ttl_ms)" % what)
    h.check(c["attempts"] <= c["retries"] + 1, "%s: attempts %d > 1 + retries %d"
            % (what, c["attempts"], c["retries"]))
    h.check("cmd_id" not in c["payload"], "%s: payload carries cmd_id: %r" % (what, c["payload"]))


def samples(node):
    """node's /metrics as {"name{labels}": value}."""
    r = call(node, "GET", "/metrics")
    h.check_eq(r.status, 200, "GET /metrics on %s" % node_name(node))
    out = {}
    for line in r.raw.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def commands_counter(nodes, event):
    """relaymq_commands_total{event=...} summed over nodes (absent = 0)."""
    name = 'relaymq_commands_total{event="%s"}' % event
    return sum(samples(n).get(name, 0.0) for n in nodes)


# --------------------------------------------------------------------------
# devices


class Copy:
    """One command message a device received."""

    def __init__(self, t, node, topic, qos, body):
        self.t, self.node, self.topic, self.qos, self.body = t, node, topic, qos, body
        self.cmd_id = body.get("cmd_id") if isinstance(body, dict) else None

    def __repr__(self):
        return "Copy(+%.2f on %s qos %d %r)" % (self.t, self.node, self.qos, self.body)


class Device:
    """An in-process device: a paho client whose client id is the device id,
    subscribed at QoS 2 to devices/{device}/commands. It records every copy
    of every command (time, node, QoS, decoded JSON) across reconnections,
    and answers by its mode:
      answer=True    replies {"cmd_id", "result": "ok", ...reply_extra} at once
                     (from paho's callback, so the reply leaves before the PUBACK),
                     except for the first `ignore_first` copies;
      answer=False   never on its own; the case calls reply()."""

    def __init__(self, device_id=None, answer=True, ignore_first=0, reply_extra=None):
        self.id = device_id or h.uid("dev")
        self.answer = answer
        self.ignore_first = ignore_first
        self.reply_extra = reply_extra or {}
        self.copies = []
        self.replies = []  # bodies sent
        self.cond = threading.Condition()
        self.paho = None
        self.node = None
        self.t0 = time.monotonic()

    @property
    def command_topic(self):
        return "devices/%s/commands" % self.id

    @property
    def reply_topic(self):
        return "devices/%s/replies" % self.id

    def connect(self, node, registered=True):
        """Connects to node and subscribes; with registered (cluster nodes),
        also waits until the registry shows the device on that node."""
        self.node = node
        self.paho = h.Paho(node.port, client_id=self.id)
        self.paho.c.on_message = self._on_message
        self.paho.connect()
        self.paho.subscribe(self.command_topic, 2)
        if registered and hasattr(node, "node_id") and REDIS is not None:
            h.wait_until(lambda: REDIS.hgetall("dev:" + self.id).get("node") == node.node_id,
                         interval=0.05, what="dev:%s on %s" % (self.id, node.node_id))
        return self

    def disconnect(self):
        if self.paho is not None:
            self.paho.disconnect()
            self.paho = None

    def _on_message(self, client, userdata, msg):
        try:
            body = json.loads(msg.payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            body = {"_raw": msg.payload}
        with self.cond:
            c = Copy(time.monotonic() - self.t0, node_name(self.node), msg.topic, msg.qos, body)
            self.copies.append(c)
            n = len(self.copies)
            self.cond.notify_all()
        if self.answer and n > self.ignore_first and c.cmd_id is not None:
            self._publish_reply(dict({"cmd_id": c.cmd_id, "result": "ok"}, **self.reply_extra))

    def _publish_reply(self, body):
        self.replies.append(body)
        self.paho.c.publish(self.reply_topic, json.dumps(body), 1)

    def reply(self, body):
        """Publishes body (a JSON object) on the reply topic at QoS 1, and waits
        for its PUBACK."""
        self.replies.append(body)
        self.paho.publish(self.reply_topic, json.dumps(body), 1)

    def wait_copies(self, n, timeout=SLOW):
        """Waits until at least n copies arrived; returns all so far."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.copies) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("device %s: %d of %d command copies within %.0fs: %r"
                                         % (self.id, len(self.copies), n, timeout, self.copies))
                self.cond.wait(left)
            return list(self.copies)

    def count(self):
        with self.cond:
            return len(self.copies)

    def expect_no_more(self, n, quiet, what):
        """Still exactly n copies after `quiet` seconds."""
        time.sleep(quiet)
        with self.cond:
            h.check(len(self.copies) == n, "%s: device %s got %d copies, expected %d: %r"
                    % (what, self.id, len(self.copies), n, self.copies))


def check_copy(copy, cmd, what):
    """The copy is the command's payload plus cmd_id, on the command topic."""
    h.check_eq(copy.topic, "devices/%s/commands" % cmd["device"], "%s: topic" % what)
    h.check_eq(copy.body, dict(cmd["payload"], cmd_id=cmd["id"]), "%s: message" % what)


def check_gaps(copies, what):
    for a, b in zip(copies, copies[1:]):
        h.check(b.t - a.t >= 0.8 * INTERVAL_S,
                "%s: copies %.2fs apart (interval %.1fs): %r" % (what, b.t - a.t, INTERVAL_S,
                                                                copies))


def stop_devices(*devices):
    for d in devices:
        try:
            d.disconnect()
        except Exception:  # noqa: BLE001 - clean-up must not hide the case's error
            pass
