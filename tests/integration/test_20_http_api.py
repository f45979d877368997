"""Admin REST API (--http) of one node: health and readiness, API keys
(flags, key file, none configured), nodes, clients (list with pagination and
node filter, details, kick with the will published), publish (text and
base64, received by real subscribers, retained), /metrics moving with
traffic, and every error code (400 bad_json/bad_field/invalid_topic/
bad_parameter, 401, 404, 405 with Allow, 413, slow bodies cut off). Each
broker runs under the sanitizers and must exit 0 on SIGTERM."""
import base64
import http.client
import os
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from api_client import expect, request  # noqa: E402

KEY = "test-key-" + h.uid("k")
HTTP_PORT = h.free_port()
NODE = "node-http"

T = h.Tests(http="%s:%d" % (h.HOST, HTTP_PORT), api_key=KEY, node_id=NODE,
            http_max_body="4k")


# --------------------------------------------------------------------------
# HTTP helpers


def call(method, path, body=None, key=KEY, port=None, headers=None):
    """One request on a fresh connection; body: dict (sent as JSON), str or bytes."""
    return request(port or HTTP_PORT, method, path, body=body, key=key, headers=headers)


def metrics(port=None, key=KEY):
    """The /metrics samples as {"name{labels}": value}."""
    r = call("GET", "/metrics", port=port, key=key)
    expect(r, 200, what="/metrics")
    h.check(r.headers.get("Content-Type", "").startswith("text/plain; version=0.0.4"),
            "metrics content type %r" % r.headers.get("Content-Type"))
    out = {}
    for line in r.raw.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def http_broker(**options):
    """A broker of its own with an admin API on a free port (returned too)."""
    port = h.free_port()
    options.setdefault("node_id", NODE)
    return h.Broker(http="%s:%d" % (h.HOST, port), **options), port


# --------------------------------------------------------------------------
# Health, keys, routing


@T.case
def healthz_and_readyz_need_no_key(b):
    for path in ("/healthz", "/readyz"):
        for key in (None, "wrong"):
            doc = expect(call("GET", path, key=key), 200, what=path)
            h.check_eq(doc["node"], NODE, "%s node" % path)
    h.check_eq(call("GET", "/healthz").json["status"], "ok", "healthz status")
    h.check_eq(call("GET", "/readyz").json["status"], "ready", "readyz status")


@T.case
def api_requests_without_a_valid_key_are_401(b):
    for key, what in ((None, "no header"), ("wrong", "wrong key"), (KEY + "x", "longer key"),
                      ("", "empty bearer")):
        for method, path in (("GET", "/api/v1/nodes"), ("GET", "/metrics"),
                             ("DELETE", "/api/v1/clients/x"), ("POST", "/api/v1/publish")):
            r = call(method, path, key=key, body={"topic": "a"} if method == "POST" else None)
            expect(r, 401, "unauthorized", "%s %s with %s" % (method, path, what))
            h.check("Bearer" in r.headers.get("WWW-Authenticate", ""), "WWW-Authenticate header")
    r = call("GET", "/api/v1/nodes", key=None, headers={"Authorization": "Basic " + KEY})
    expect(r, 401, "unauthorized", "Basic scheme")
    r = call("GET", "/api/v1/nodes", key=None, headers={"Authorization": "bearer " + KEY})
    expect(r, 200, what="scheme name is case-insensitive")


@T.case
def keys_from_a_file_and_several_flags(b):
    path = os.path.join(b.dir, "keys.txt")
    with open(path, "w") as f:
        f.write("# admin keys\n\n  file-key-1  \nfile-key-2\r\n")
    broker, port = http_broker(api_key_file=path, extra=["--api-key", "flag-1",
                                                         "--api-key", "flag-2"])
    with broker:
        for key in ("file-key-1", "file-key-2", "flag-1", "flag-2"):
            expect(call("GET", "/api/v1/nodes", key=key, port=port), 200, what="key %s" % key)
        for key in ("# admin keys", "file-key", "flag-3"):
            expect(call("GET", "/api/v1/nodes", key=key, port=port), 401, "unauthorized", key)


@T.case
def no_key_configured_refuses_every_api_request(b):
    broker, port = http_broker()
    with broker:
        r = call("GET", "/api/v1/clients", port=port, key="anything")
        expect(r, 401, "unauthorized", "no key configured")
        h.check("no API key is configured" in r.json["error"]["message"], "message says why")
        expect(call("GET", "/metrics", port=port, key=None), 401, "unauthorized", "/metrics")
        expect(call("GET", "/healthz", port=port, key=None), 200, what="healthz")
        h.check("no API key configured" in broker.log_text(), "start-up warning logged")


@T.case
def unknown_routes_are_404_and_wrong_methods_405(b):
    for path in ("/", "/api/v1", "/api/v1/clients/", "/api/v2/nodes", "/metrics/x"):
        expect(call("GET", path), 404, "not_found", "GET %s" % path)
    r = call("POST", "/api/v1/nodes", body={})
    expect(r, 405, "method_not_allowed", "POST /api/v1/nodes")
    h.check_eq(r.headers.get("Allow"), "GET", "Allow header")
    r = call("PUT", "/api/v1/clients/x", body={})
    expect(r, 405, "method_not_allowed", "PUT on a client")
    h.check_eq(r.headers.get("Allow"), "GET, DELETE", "Allow header for a client")
    expect(call("GET", "/api/v1/publish"), 405, "method_not_allowed", "GET publish")


@T.case
def bodies_above_http_max_body_are_413(b):
    big = {"topic": "t/big", "payload": "x" * 5000}
    expect(call("POST", "/api/v1/publish", body=big), 413, "body_too_large", "5 KB body")
    # A chunked body, with no length announced, is cut at the limit too.
    conn = http.client.HTTPConnection(h.HOST, HTTP_PORT, timeout=h.WAIT)
    chunks = iter([b'{"topic":"t/big","payload":"', b"y" * 3000, b"z" * 3000, b'"}'])
    conn.request("POST", "/api/v1/publish", body=chunks, encode_chunked=True,
                 headers={"Authorization": "Bearer " + KEY, "Transfer-Encoding": "chunked"})
    r = conn.getresponse()
    h.check_eq(r.status, 413, "chunked 6 KB body")
    conn.close()
    expect(call("POST", "/api/v1/publish", body={"topic": "t/ok", "payload": "x" * 3000}), 202,
           what="3 KB body under the 4 KB limit")


@T.case
def a_body_that_never_completes_is_cut_off(b):
    broker, port = http_broker(api_key=KEY, http_timeout="1s")
    with broker:
        s = socket.create_connection((h.HOST, port), timeout=h.WAIT)
        s.sendall(b"POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  + KEY.encode() + b"\r\nContent-Length: 100\r\n\r\n{\"topic\"")
        t0 = time.monotonic()
        s.settimeout(h.WAIT)
        data = s.recv(4096)
        while data and not data.startswith(b"HTTP/1.1 408"):
            data = s.recv(4096)
        elapsed = time.monotonic() - t0
        s.close()
        h.check(elapsed < 5, "connection closed %.1fs after the body stalled" % elapsed)
        expect(call("GET", "/healthz", port=port, key=None), 200, what="server still serves")


# --------------------------------------------------------------------------
# Nodes and clients


@T.case
def nodes_lists_this_node(b):
    with h.Paho(b.port):
        doc = expect(call("GET", "/api/v1/nodes"), 200, what="nodes")
        h.check_eq(len(doc["nodes"]), 1, "one node in standalone mode")
        n = doc["nodes"][0]
        h.check_eq((n["node_id"], n["alive"], n["local"]), (NODE, True, True), "node fields")
        h.check(n["connections"] >= 1, "connections counts the paho client: %r" % n)
        h.check(isinstance(n["uptime_seconds"], int), "uptime_seconds")
        h.check("address" in n and "version" in n, "address and version present")


@T.case
def client_details_cover_the_connection_and_session(b):
    cid = h.uid("det") + "/a b"  # '/' and ' ' travel percent-encoded
    quoted = "/api/v1/clients/" + cid.replace("/", "%2F").replace(" ", "%20")
    with h.Paho(b.port, client_id=cid, version=h.MQTTV31, clean=False, keepalive=42,
                username="alice") as c:
        c.subscribe("det/+/x", 1)
        c.subscribe("det/#", 2)
        doc = expect(call("GET", quoted), 200, what="client details")
        h.check_eq((doc["client_id"], doc["online"], doc["node"]), (cid, True, NODE), "identity")
        h.check_eq((doc["protocol"], doc["protocol_level"], doc["clean_session"],
                    doc["keepalive"], doc["username"]), ("3.1", 3, False, 42, "alice"),
                   "connection fields")
        h.check(doc["peer"].startswith("127.0.0.1:"), "peer %r" % doc["peer"])
        h.check(abs(doc["connected_at_ms"] / 1000 - time.time()) < 60, "connected_at_ms")
        h.check(doc["connected_at"].endswith("Z") and "T" in doc["connected_at"], "ISO time")
        h.check(isinstance(doc["channel"], int), "channel")
        h.check_eq(sorted((s["filter"], s["qos"]) for s in doc["subscriptions"]),
                   [("det/#", 2), ("det/+/x", 1)], "subscriptions")
    # Offline persistent session: still known, online false, subscriptions kept.
    doc = expect(call("GET", quoted), 200, what="offline session")
    h.check_eq((doc["online"], doc["peer"], len(doc["subscriptions"])), (False, None, 2),
               "offline session fields")
    expect(call("GET", "/api/v1/clients/" + h.uid("nobody")), 404, "client_not_found", "unknown")
    expect(call("GET", "/api/v1/clients/bad%zzescape"), 404, "not_found", "bad escape")


@T.case
def clients_are_listed_in_pages(b):
    prefix = h.uid("pg")
    names = ["%s-%d" % (prefix, i) for i in range(5)]
    clients = [h.Paho(b.port, client_id=n) for n in names]
    try:
        for c in clients:
            c.connect()
        seen, cursor, pages = [], None, 0
        while True:
            path = "/api/v1/clients?limit=2" + ("&cursor=" + cursor if cursor else "")
            doc = expect(call("GET", path), 200, what="page %d" % pages)
            h.check(len(doc["clients"]) <= 2, "page size")
            seen += [c["client_id"] for c in doc["clients"]]
            pages += 1
            cursor = doc["next"]
            if cursor is None:
                break
        ours = [s for s in seen if s.startswith(prefix)]
        h.check_eq(ours, names, "every client once, in id order")
        h.check_eq(seen, sorted(seen), "pages are ordered by client id")
        h.check_eq(len(seen), len(set(seen)), "no client twice")
        entry = next(c for c in expect(call("GET", "/api/v1/clients?limit=1000"), 200)["clients"]
                     if c["client_id"] == names[0])
        h.check_eq(entry["node"], NODE, "entry node")
        h.check(entry["peer"].startswith("127.0.0.1:"), "entry peer")
        mine = expect(call("GET", "/api/v1/clients?node=%s&limit=1000" % NODE), 200)["clients"]
        h.check(set(names) <= {c["client_id"] for c in mine}, "node filter: this node")
        other = expect(call("GET", "/api/v1/clients?node=elsewhere"), 200)
        h.check_eq((other["clients"], other["next"]), ([], None), "node filter: another node")
    finally:
        for c in clients:
            c.disconnect()
    for bad in ("limit=0", "limit=1001", "limit=x", "limit=-1", "limit="):
        expect(call("GET", "/api/v1/clients?" + bad), 400, "bad_parameter", bad)
    expect(call("GET", "/api/v1/clients?cursor=***"), 400, "bad_parameter", "bad cursor")


@T.case
def kick_closes_the_connection_and_publishes_the_will(b):
    will_topic = h.uid("kw") + "/status"
    cid = h.uid("kick")
    with h.Paho(b.port) as watcher:
        watcher.subscribe(will_topic, 1)
        victim = h.Paho(b.port, client_id=cid, will=(will_topic, b"gone", 1, False))
        victim.connect()
        doc = expect(call("DELETE", "/api/v1/clients/" + cid), 200, what="kick")
        h.check_eq(doc, {"client_id": cid, "node": NODE, "kicked": True}, "kick answer")
        h.check(victim.disconnected.wait(h.WAIT), "the kicked client's connection closed")
        m = watcher.get()
        h.check_eq((m.topic, m.payload), (will_topic, b"gone"), "will published on kick")
        victim.disconnect()
    expect(call("DELETE", "/api/v1/clients/" + cid), 404, "client_not_found", "kick again")
    expect(call("DELETE", "/api/v1/clients/" + h.uid("nobody")), 404, "client_not_found",
           "kick unknown")
    h.check("kicked" in b.log_text(), "the kick is logged")


# --------------------------------------------------------------------------
# Publish


@T.case
def publish_reaches_real_subscribers(b):
    topic = h.uid("pub") + "/cmd"
    with h.Paho(b.port) as sub, h.MosqSub(b.port, topic, qos=1) as msub:
        sub.subscribe(topic, 2)
        doc = expect(call("POST", "/api/v1/publish",
                          body={"topic": topic, "payload": "hello", "qos": 1}), 202,
                     what="publish text")
        h.check_eq(doc, {"topic": topic, "qos": 1, "retain": False, "payload_bytes": 5}, "answer")
        m = sub.get()
        h.check_eq((m.topic, m.payload, m.qos, m.retain), (topic, b"hello", 1, False),
                   "paho receives")
        h.check_eq(msub.take(1)[0].payload, b"hello", "mosquitto_sub receives")

        binary = bytes(range(256))
        expect(call("POST", "/api/v1/publish",
                    body={"topic": topic, "payload": base64.b64encode(binary).decode(),
                          "encoding": "base64", "qos": 2}), 202, what="publish base64")
        m = sub.get()
        h.check_eq((m.payload, m.qos), (binary, 2), "binary payload at QoS 2")

        expect(call("POST", "/api/v1/publish", body={"topic": topic}), 202, what="defaults")
        m = sub.get()
        h.check_eq((m.payload, m.qos), (b"", 0), "empty payload at QoS 0 by default")


@T.case
def published_retained_messages_are_kept(b):
    topic = h.uid("ret") + "/state"
    expect(call("POST", "/api/v1/publish",
                body={"topic": topic, "payload": "on", "retain": True, "qos": 1}), 202,
           what="retained publish")
    with h.Paho(b.port) as late:
        late.subscribe(topic, 1)
        m = late.get()
        h.check_eq((m.payload, m.retain), (b"on", True), "a later subscriber gets it retained")
    expect(call("POST", "/api/v1/publish", body={"topic": topic, "payload": "", "retain": True}),
           202, what="clear retained")
    with h.Paho(b.port) as later:
        later.subscribe(topic, 1)
        later.expect_nothing(what="retained message cleared")


@T.case
def publish_validates_its_body(b):
    cases = [
        ("{", "bad_json", "truncated JSON"),
        ("[1]", "bad_json", "not an object"),
        ("", "bad_json", "empty body"),
        ('{"topic":"a","topic":"b"}', "bad_json", "duplicate keys"),
        ({"payload": "x"}, "bad_field", "no topic"),
        ({"topic": 5}, "bad_field", "topic not a string"),
        ({"topic": "a/#"}, "invalid_topic", "wildcard #"),
        ({"topic": "a/+/b"}, "invalid_topic", "wildcard +"),
        ({"topic": ""}, "invalid_topic", "empty topic"),
        ({"topic": "a\u0000b"}, "bad_json", "NUL in a JSON string"),
        ({"topic": "t", "qos": 3}, "bad_field", "qos 3"),
        ({"topic": "t", "qos": -1}, "bad_field", "qos -1"),
        ({"topic": "t", "qos": "1"}, "bad_field", "qos as text"),
        ({"topic": "t", "retain": 1}, "bad_field", "retain not a bool"),
        ({"topic": "t", "payload": 7}, "bad_field", "payload not a string"),
        ({"topic": "t", "payload": "%%%", "encoding": "base64"}, "bad_field", "bad base64"),
        ({"topic": "t", "payload": "x", "encoding": "hex"}, "bad_field", "unknown encoding"),
    ]
    for body, code, what in cases:
        expect(call("POST", "/api/v1/publish", body=body), 400, code, what)


# --------------------------------------------------------------------------
# Metrics


@T.case
def metrics_move_with_traffic(b):
    before = metrics()
    for name in ("relaymq_messages_received_total", "relaymq_connected_clients",
                 "relaymq_subscriptions", "relaymq_retained_messages", "relaymq_bytes_sent_total",
                 "relaymq_messages_dropped_total", "relaymq_messages_sent_qos1_total"):
        h.check(name in before, "%s is exported" % name)
    topic = h.uid("met") + "/t"
    with h.Paho(b.port) as sub, h.Paho(b.port) as pub:
        sub.subscribe(topic, 1)
        for _ in range(3):
            pub.publish(topic, b"x" * 100, 1)
        sub.take(3)
        expect(call("POST", "/api/v1/publish", body={"topic": topic, "qos": 1}), 202)
        sub.get()
        expect(call("GET", "/api/v1/clients/" + h.uid("none")), 404)
        after = metrics()
        h.check(after["relaymq_connected_clients"] >= before["relaymq_connected_clients"] + 2,
                "connected clients gauge")
        h.check(after["relaymq_subscriptions"] >= before["relaymq_subscriptions"] + 1,
                "subscriptions gauge")
    for name, by in (("relaymq_messages_received_qos1_total", 4),
                     ("relaymq_messages_sent_qos1_total", 4),
                     ("relaymq_bytes_received_total", 300),
                     ("relaymq_bytes_sent_total", 300)):
        h.check(after[name] >= before[name] + by,
                "%s grew by %d: %s -> %s" % (name, by, before[name], after[name]))
    label = 'relaymq_http_requests_total{server="admin",route="%s",code="%s"}'
    h.check(after.get(label % ("publish", "202"), 0) >= before.get(label % ("publish", "202"), 0)
            + 1, "publish 202 counted")
    h.check(after.get(label % ("client_get", "404"), 0) >= 1, "client_get 404 counted")
    h.check(after.get(label % ("metrics", "200"), 0) >= 1, "metrics 200 counted")


# --------------------------------------------------------------------------
# Start-up


@T.case
def admin_port_taken_does_not_stop_the_node(b):
    taken = socket.socket()
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    taken.bind((h.HOST, 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        with h.Broker(http="%s:%d" % (h.HOST, port)) as broker:
            with h.Paho(broker.port) as c:
                c.subscribe("x", 0)
            h.check("admin API on" in broker.log_text(), "the failure is logged")
    finally:
        taken.close()


@T.case
def http_can_be_disabled(b):
    with h.Broker(http="") as broker:
        with h.Paho(broker.port):
            pass
        h.check("relaymq 0.1.0 node" in broker.log_text() or "ready" in broker.log_text(),
                "the node started")
        h.check("http admin" not in broker.log_text(), "no admin server started")


if __name__ == "__main__":
    T.main()
