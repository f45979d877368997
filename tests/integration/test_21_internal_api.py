"""Internal node API (--internal): requests signed here in Python exactly as
docs/api.md specifies (HMAC-SHA256 under --cluster-secret) are served;
unsigned, badly signed, tampered, stale, future and replayed requests get 401
and bump relaymq_internal_auth_failures_total{reason}. The endpoints: close a
connection by channel (kicked or takeover; the will is published), deliver a
message to one connection only, read a local client. Two nodes sharing a
secret accept each other's signatures; a node with another secret does not.
(The C test tests/unit/test_peer_client.c sends from the broker's own peer
client to a real internal API.)"""
import base64
import http.client
import json
import os
import secrets
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import internal_sign  # noqa: E402

SECRET = "it-secret-" + secrets.token_hex(8)
KEY = "it-key"
INTERNAL_PORT = h.free_port()
HTTP_PORT = h.free_port()
NODE = "node-b"

T = h.Tests(internal="%s:%d" % (h.HOST, INTERNAL_PORT), cluster_secret=SECRET,
            internal_max_skew="5s", http="%s:%d" % (h.HOST, HTTP_PORT), api_key=KEY,
            node_id=NODE)


# --------------------------------------------------------------------------
# Signing, as a peer node does


def sign(method, path, body=b"", secret=SECRET, **kw):
    """The four headers of a signed request (docs/api.md, "Signing")."""
    return internal_sign.sign(method, path, body, secret=secret, **kw)


class Reply:
    def __init__(self, status, raw):
        self.status, self.raw = status, raw
        try:
            self.json = json.loads(raw) if raw else None
        except ValueError:
            self.json = None

    def error_code(self):
        return (self.json or {}).get("error", {}).get("code")

    def __repr__(self):
        return "Reply(%d, %r)" % (self.status, self.raw[:300])


def send(method, path, body=b"", headers=None, port=None):
    conn = http.client.HTTPConnection(h.HOST, port or INTERNAL_PORT, timeout=h.WAIT)
    hdrs = dict(headers or {})
    if body:
        hdrs["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=body or None, headers=hdrs)
        r = conn.getresponse()
        return Reply(r.status, r.read())
    finally:
        conn.close()


def signed(method, path, doc=None, port=None, **sign_args):
    body = json.dumps(doc).encode() if doc is not None else b""
    return send(method, path, body, sign(method, path, body, **sign_args), port=port)


def expect(reply, status, code=None, what=""):
    h.check(reply.status == status, "%s: expected %d, got %r" % (what, status, reply))
    if code is not None:
        h.check_eq(reply.error_code(), code, "%s: error code" % what)
    return reply.json


def admin(path):
    conn = http.client.HTTPConnection(h.HOST, HTTP_PORT, timeout=h.WAIT)
    try:
        conn.request("GET", path, headers={"Authorization": "Bearer " + KEY})
        r = conn.getresponse()
        raw = r.read()
        h.check_eq(r.status, 200, "admin GET %s" % path)
        return raw
    finally:
        conn.close()


def channel_of(client_id):
    return json.loads(admin("/api/v1/clients/" + client_id))["channel"]


def failures():
    """relaymq_internal_auth_failures_total by reason, from /metrics."""
    out = {}
    for line in admin("/metrics").decode().splitlines():
        if line.startswith("relaymq_internal_auth_failures_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = int(float(line.rsplit(" ", 1)[1]))
    return out


def counter(name):
    for line in admin("/metrics").decode().splitlines():
        if line.startswith(name + " "):
            return int(float(line.rsplit(" ", 1)[1]))
    raise AssertionError("%s not in /metrics" % name)


# --------------------------------------------------------------------------
# Authentication


@T.case
def valid_signatures_are_served(b):
    cid = h.uid("sig")
    with h.Paho(b.port, client_id=cid, username="bob"):
        doc = expect(signed("GET", "/internal/v1/clients/" + cid), 200, what="signed GET")
        h.check_eq((doc["client_id"], doc["node"], doc["online"], doc["username"]),
                   (cid, NODE, True, "bob"), "client details")
    expect(signed("GET", "/internal/v1/clients/" + h.uid("none")), 404, "client_not_found",
           "unknown client")
    # The signature covers the path as sent, escapes included.
    odd = h.uid("odd") + "/x y"
    with h.Paho(b.port, client_id=odd):
        raw = "/internal/v1/clients/" + odd.replace("/", "%2F").replace(" ", "%20")
        doc = expect(signed("GET", raw), 200, what="percent-encoded id")
        h.check_eq(doc["client_id"], odd, "decoded id")


@T.case
def bad_signatures_are_refused_and_counted(b):
    before = failures()
    path = "/internal/v1/clients/someone"
    expect(send("GET", path), 401, "unauthorized", "unsigned")
    hdrs = sign("GET", path)
    del hdrs["X-RelayMQ-Nonce"]
    expect(send("GET", path, headers=hdrs), 401, "unauthorized", "no nonce")

    hdrs = sign("GET", path, secret="another-secret")
    expect(send("GET", path, headers=hdrs), 401, "unauthorized", "another secret")
    hdrs = sign("GET", path)
    hdrs["X-RelayMQ-Node"] = "node-c"
    expect(send("GET", path, headers=hdrs), 401, "unauthorized", "node header swapped")
    hdrs = sign("GET", "/internal/v1/clients/other")
    expect(send("GET", path, headers=hdrs), 401, "unauthorized", "signature of another path")
    body = json.dumps({"reason": "kicked"}).encode()
    hdrs = sign("POST", "/internal/v1/channels/1/close", body)
    expect(send("POST", "/internal/v1/channels/1/close", json.dumps({"reason": "takeover"}).encode(),
                hdrs), 401, "unauthorized", "tampered body")

    hdrs = sign("GET", path)
    hdrs["X-RelayMQ-Signature"] = "zz" + hdrs["X-RelayMQ-Signature"][2:]
    expect(send("GET", path, headers=hdrs), 401, "unauthorized", "malformed signature")

    now = int(time.time() * 1000)
    expect(send("GET", path, headers=sign("GET", path, ts=now - 10000)), 401, "unauthorized",
           "10 s old with a 5 s window")
    expect(send("GET", path, headers=sign("GET", path, ts=now + 10000)), 401, "unauthorized",
           "10 s in the future")

    after = failures()
    for reason, by in (("missing", 2), ("bad_signature", 4), ("malformed", 1), ("stale", 2)):
        h.check(after.get(reason, 0) >= before.get(reason, 0) + by,
                "failures{%s}: %s -> %s" % (reason, before.get(reason), after.get(reason)))


@T.case
def an_exact_replay_is_refused(b):
    before = failures()
    path = "/internal/v1/clients/" + h.uid("rp")
    hdrs = sign("GET", path)
    expect(send("GET", path, headers=hdrs), 404, "client_not_found", "first use")
    r = send("GET", path, headers=hdrs)
    expect(r, 401, "unauthorized", "replay")
    h.check("replay" in r.json["error"]["message"], "the message says replay")
    # The same request with a new nonce is a new request.
    expect(send("GET", path, headers=sign("GET", path, ts=int(hdrs["X-RelayMQ-Timestamp"]))), 404,
           "client_not_found", "same instant, new nonce")
    h.check(failures().get("replay", 0) >= before.get("replay", 0) + 1, "replay counted")


# --------------------------------------------------------------------------
# Endpoints


@T.case
def close_by_channel_kicks_and_publishes_the_will(b):
    will = h.uid("cw") + "/will"
    with h.Paho(b.port) as watcher:
        watcher.subscribe(will, 1)
        for reason in ("kicked", "takeover"):
            cid = h.uid("cl")
            victim = h.Paho(b.port, client_id=cid, will=(will, reason.encode(), 1, False))
            victim.connect()
            ch = channel_of(cid)
            takeovers = counter("relaymq_takeovers_total")
            doc = expect(signed("POST", "/internal/v1/channels/%d/close" % ch, {"reason": reason}),
                         200, what="close (%s)" % reason)
            h.check_eq(doc, {"closed": True, "channel": ch, "reason": reason}, "close answer")
            h.check(victim.disconnected.wait(h.WAIT), "connection closed (%s)" % reason)
            h.check_eq(watcher.get().payload, reason.encode(), "will published (%s)" % reason)
            if reason == "takeover":
                h.check(counter("relaymq_takeovers_total") >= takeovers + 1, "takeovers counted")
            victim.disconnect()
            expect(signed("POST", "/internal/v1/channels/%d/close" % ch, {"reason": reason}), 404,
                   "channel_not_found", "closed twice")
    for doc, code, what in (({"reason": "bored"}, "bad_field", "unknown reason"),
                            ({}, "bad_field", "no reason")):
        expect(signed("POST", "/internal/v1/channels/1/close", doc), 400, code, what)
    expect(send("POST", "/internal/v1/channels/1/close", b"{",
                sign("POST", "/internal/v1/channels/1/close", b"{")), 400, "bad_json", "bad JSON")
    expect(signed("POST", "/internal/v1/channels/abc/close", {"reason": "kicked"}), 400,
           "bad_parameter", "channel not a number")


@T.case
def deliver_reaches_that_connection_only(b):
    topic = h.uid("dl") + "/cmd"
    with h.Paho(b.port) as target, h.Paho(b.port) as bystander:
        bystander.subscribe(topic, 1)  # subscribed, yet not the target
        ch = channel_of(target.client_id)
        payload = b"\x00\x01command\xff"
        doc = expect(signed("POST", "/internal/v1/channels/%d/deliver" % ch,
                            {"topic": topic, "payload": base64.b64encode(payload).decode(),
                             "qos": 1}), 200, what="deliver")
        h.check_eq(doc, {"delivered": True, "channel": ch}, "deliver answer")
        m = target.get()
        h.check_eq((m.topic, m.payload, m.qos, m.retain), (topic, payload, 1, False),
                   "the target (not subscribed) receives it")
        bystander.expect_nothing(what="a subscriber of the topic")
        expect(signed("POST", "/internal/v1/channels/%d/deliver" % ch,
                      {"topic": topic, "payload": "not base64!"}), 400, "bad_field", "bad base64")
        expect(signed("POST", "/internal/v1/channels/%d/deliver" % ch,
                      {"topic": "a/#", "payload": ""}), 400, "invalid_topic", "wildcard topic")
        expect(signed("POST", "/internal/v1/channels/%d/deliver" % ch,
                      {"topic": topic, "qos": 5}), 400, "bad_field", "qos 5")
    # paho's DISCONNECT reaches the broker a moment after the with block.
    h.wait_until(lambda: signed("POST", "/internal/v1/channels/%d/deliver" % ch,
                                {"topic": topic}).status == 404,
                 h.WAIT, what="channel %d to be gone after its client left" % ch)
    expect(signed("POST", "/internal/v1/channels/%d/deliver" % ch, {"topic": topic}), 404,
           "channel_not_found", "after the client left")


@T.case
def unknown_internal_routes(b):
    expect(signed("GET", "/internal/v1/nothing"), 404, "not_found", "unknown path")
    expect(signed("DELETE", "/internal/v1/clients/x"), 405, "method_not_allowed", "DELETE")


@T.case
def nodes_sharing_the_secret_trust_each_other(b):
    """Node A (this test, signing as "node-a" with the shared secret) talks to a
    second node; a third node with its own secret refuses the same request."""
    port_same, port_other = h.free_port(), h.free_port()
    same = h.Broker(internal="%s:%d" % (h.HOST, port_same), cluster_secret=SECRET,
                    node_id="node-c")
    other = h.Broker(internal="%s:%d" % (h.HOST, port_other),
                     cluster_secret="different-" + secrets.token_hex(8), node_id="node-d")
    with same, other:
        cid = h.uid("x2")
        with h.Paho(same.port, client_id=cid):
            doc = expect(signed("GET", "/internal/v1/clients/" + cid, port=port_same), 200,
                         what="node sharing the secret")
            h.check_eq(doc["node"], "node-c", "answered by that node")
        expect(signed("GET", "/internal/v1/clients/" + cid, port=port_other), 401,
               "unauthorized", "node with another secret")


@T.case
def internal_without_a_secret_does_not_start(b):
    import subprocess
    port = h.free_port()
    r = subprocess.run([h.relaymq_bin(), "--listen", "%s:%d" % (h.HOST, h.free_port()),
                        "--http", "", "--internal", "%s:%d" % (h.HOST, port)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=h.broker_env(),
                       timeout=30)
    h.check(r.returncode != 0, "exit status %d" % r.returncode)
    h.check(b"cluster-secret is required" in r.stdout, "says why: %r" % r.stdout[-300:])


if __name__ == "__main__":
    T.main()
