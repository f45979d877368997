"""Admin API answering for the whole cluster (issue 4: "any node answers for
the whole cluster"). One real Redis and three nodes n1..n3 (node TTL 3 s,
internal API, cluster secret, admin API with key "k"), shared by the file;
every assertion about a client is made through the admin API of a node
OTHER than the one holding the client:

  nodes      GET /api/v1/nodes: every node alive with its internal address
             and connection count; a node killed with SIGKILL is reported
             alive false once its record lapses, and is gone once reaped.
  clients    GET /api/v1/clients: every node's clients, ?node= filter,
             pagination with a small limit following `next` to null;
             GET /api/v1/clients/{id} read from the owner's internal API;
             DELETE /api/v1/clients/{id} closes the connection on the owner
             (EOF, offline event reason kicked, will published there).
  redis      Redis stopped: /readyz 503 not_ready on every node, the API 503
             redis_unavailable; Redis back: /readyz 200 again.

Every node started here must exit 0 on SIGTERM (sanitizer build); nodes
killed with SIGKILL on purpose are exempt.
"""
import os
import sys
import time
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import cluster_harness as ch  # noqa: E402
from api_client import expect, request  # noqa: E402

KEY = "k"
TTL_S = 3.0          # --node-ttl of every node here
REAP_SLACK_S = 12.0  # beyond the TTL, for dead-node detection on a busy machine

REDIS = None
CL = None
EV = None
cases = []


def case(fn):
    cases.append(fn)
    return fn


# --------------------------------------------------------------------------
# HTTP


def call(node, method, path, key=KEY):
    """One admin API request to node on a fresh connection."""
    return request(node.http_port, method, path, key=key)


def post(node, path, doc, key=KEY):
    """One admin API POST with a JSON body."""
    return request(node.http_port, "POST", path, body=doc, key=key)


def metric(node, sample):
    """The value of one sample line of node's /metrics, e.g.
    'relaymq_redis_up' or 'relaymq_forwarded_requests_total{outcome="ok"}'."""
    r = call(node, "GET", "/metrics")
    h.check_eq(r.status, 200, "GET /metrics on %s" % node.node_id)
    for line in r.raw.decode().splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    raise AssertionError("no sample %s in /metrics of %s" % (sample, node.node_id))


def client_path(cid):
    return "/api/v1/clients/" + urllib.parse.quote(cid, safe="")


def nodes_view(node):
    """{node_id: entry} from node's GET /api/v1/nodes."""
    doc = expect(call(node, "GET", "/api/v1/nodes"), 200, what="GET /api/v1/nodes on %s"
                 % node.node_id)
    out = {}
    for n in doc["nodes"]:
        h.check(n["node_id"] not in out, "node %s listed twice" % n["node_id"])
        out[n["node_id"]] = n
    return out


def all_clients(node, query="", limit=1000):
    """Every page of GET /api/v1/clients on node; returns (entries, pages)."""
    entries, pages, cursor = [], [], None
    while True:
        q = "limit=%d" % limit + ("&" + query if query else "")
        if cursor is not None:
            q += "&cursor=" + urllib.parse.quote(cursor, safe="")
        doc = expect(call(node, "GET", "/api/v1/clients?" + q), 200,
                     what="GET /api/v1/clients?%s on %s" % (q, node.node_id))
        h.check(isinstance(doc.get("clients"), list) and "next" in doc,
                "page shape {clients, next}: %r" % doc)
        pages.append(doc["clients"])
        entries += doc["clients"]
        cursor = doc["next"]
        if cursor is None:
            return entries, pages
        h.check(isinstance(cursor, str) and cursor, "next is a non-empty string: %r" % cursor)
        h.check(len(pages) < 500, "pagination does not end (%d pages)" % len(pages))


# --------------------------------------------------------------------------
# clients

def peer_of(raw):
    return "%s:%d" % raw.sock.getsockname()[:2]


def connect_raw(node, cid, **kw):
    c = h.RawClient(node.port)
    c.connect(cid, **kw)
    c.node_id, c.client_id = node.node_id, cid
    return c


def other(node_id):
    """A node that is not node_id (the next one round)."""
    ids = [n.node_id for n in CL.nodes]
    return CL.nodes[(ids.index(node_id) + 1) % len(ids)]


def wait_listed(cids, via, what="clients listed"):
    """Waits until via's GET /api/v1/clients lists every id in cids."""
    want = set(cids)
    last = {}

    def probe():
        entries, _ = all_clients(via)
        last["ids"] = {e["client_id"] for e in entries}
        return want <= last["ids"]
    try:
        h.wait_until(probe, interval=0.1, what=what)
    except AssertionError as e:
        raise AssertionError("%s; missing %s" % (e, sorted(want - last.get("ids", set()))))


# --------------------------------------------------------------------------
# nodes

@case
def nodes_lists_every_node_with_address_and_connections():
    counts = {"n1": 1, "n2": 2, "n3": 3}
    clients = [connect_raw(CL.node(nid), h.uid("nc"))
               for nid, k in counts.items() for _ in range(k)]
    try:
        last = {}

        def conns_match(via):
            view = nodes_view(via)
            last["view"] = view
            return {k: v["connections"] for k, v in view.items()} == counts

        for via in CL.nodes:
            try:
                # conns is refreshed with each heartbeat (TTL / 3).
                h.wait_until(lambda: conns_match(via), interval=0.2,
                             what="connections %r on %s" % (counts, via.node_id))
            except AssertionError as e:
                raise AssertionError("%s; got %r" % (e, last.get("view"))) from None
            view = last["view"]
            h.check_eq(sorted(view), ["n1", "n2", "n3"], "nodes listed by %s" % via.node_id)
            for n in CL.nodes:
                e = view[n.node_id]
                what = "%s as seen by %s" % (n.node_id, via.node_id)
                h.check_eq(e["alive"], True, "%s alive" % what)
                h.check_eq(e["address"], n.internal, "%s address" % what)
                h.check(isinstance(e["uptime_seconds"], int) and 0 <= e["uptime_seconds"] < 600,
                        "%s uptime_seconds %r" % (what, e["uptime_seconds"]))
                h.check(isinstance(e["version"], str) and e["version"],
                        "%s version %r" % (what, e.get("version")))
    finally:
        ch.stop_quietly(*clients)


@case
def nodes_entry_local_marks_the_answering_node():
    # docs/api.md's /api/v1/nodes example and the standalone answer carry
    # "local": true for the node that answers; in a cluster the others are
    # then "local": false.
    for via in CL.nodes:
        view = nodes_view(via)
        got = {nid: view[nid].get("local", "<missing>") for nid in sorted(view)}
        want = {n.node_id: n.node_id == via.node_id for n in CL.nodes}
        h.check_eq(got, want, "\"local\" of each node in GET /api/v1/nodes on %s" % via.node_id)


@case
def killed_node_is_reported_dead_then_reaped():
    n4 = ch.Node("n4", REDIS, api_key=KEY)
    n4.start()
    victim = None
    try:
        via = CL.node("n1")
        h.wait_until(lambda: nodes_view(via).get("n4", {}).get("alive") is True, interval=0.1,
                     what="n4 alive in n1's /api/v1/nodes")
        h.check_eq(nodes_view(via)["n4"]["address"], n4.internal, "n4 address")
        cid = h.uid("n4c")
        victim = connect_raw(n4, cid)
        doc = expect(call(via, "GET", client_path(cid)), 200, what="n4's client read from n1")
        h.check_eq((doc["node"], doc["online"]), ("n4", True), "n4's client")

        n4.kill9()
        killed_at = time.monotonic()
        # Its registry entry remains until a survivor reaps n4: the owner does
        # not answer, which the API reports as node_unavailable.
        expect(call(via, "GET", client_path(cid)), 503, "node_unavailable",
                 "GET a client of the dead node before it is reaped")
        expect(call(via, "DELETE", client_path(cid)), 503, "node_unavailable",
                 "DELETE a client of the dead node before it is reaped")

        # The record lapses after the TTL (alive false, no address), then a
        # survivor's heartbeat reaps it (gone). Track every state seen.
        states, dead_entry = [], None
        deadline = killed_at + TTL_S + REAP_SLACK_S
        while True:
            e = nodes_view(via).get("n4")
            state = "absent" if e is None else "alive" if e["alive"] else "dead"
            if state == "dead":
                dead_entry = e
            if not states or states[-1][0] != state:
                states.append((state, round(time.monotonic() - killed_at, 2)))
            if state == "absent":
                break
            h.check(time.monotonic() < deadline,
                    "n4 still listed %.0fs after SIGKILL: %r" % (deadline - killed_at, states))
            time.sleep(0.05)
        order = [s for s, _ in states]
        h.check(order in (["alive", "dead", "absent"], ["alive", "absent"], ["dead", "absent"]),
                "states of n4 after SIGKILL: %r" % states)
        # Its last heartbeat (every TTL / 3) set the record's TTL at most
        # TTL / 3 before the kill.
        h.check(states[-1][1] >= TTL_S * 2 / 3 - 0.2,
                "n4 gone %.1fs after SIGKILL, before its %.0fs TTL could run out"
                % (states[-1][1], TTL_S))
        if dead_entry is not None:
            h.check_eq((dead_entry["alive"], dead_entry["address"]), (False, None),
                       "a lapsed node's entry (alive, address)")
        # Reaped: its client is gone from the cluster too.
        expect(call(via, "GET", client_path(cid)), 404, "client_not_found",
               "GET the reaped node's client")
        h.check_eq(all_clients(via, "node=n4")[0], [], "clients of the reaped node")
        for n in CL.nodes:
            h.check_eq(sorted(nodes_view(n)), ["n1", "n2", "n3"], "nodes on %s" % n.node_id)
        return "states seen %s" % " -> ".join("%s@%.1fs" % s for s in states)
    finally:
        ch.stop_quietly(victim)
        n4.kill()


# --------------------------------------------------------------------------
# clients

@case
def clients_of_every_node_listed_filtered_and_paged():
    prefix = h.uid("pg")
    cids = ["%s-%02d" % (prefix, i) for i in range(25)]
    home = {cid: CL.nodes[i % 3].node_id for i, cid in enumerate(cids)}
    clients = {cid: connect_raw(CL.node(home[cid]), cid) for cid in cids}
    try:
        wait_listed(cids, CL.node("n1"), "all 25 clients listed")
        # The whole list from each node, checked for the clients of the others.
        for via in CL.nodes:
            entries, _ = all_clients(via)
            ids = [e["client_id"] for e in entries]
            h.check_eq(len(ids), len(set(ids)), "no client twice on %s" % via.node_id)
            mine = {e["client_id"]: e for e in entries if e["client_id"] in home}
            h.check_eq(sorted(mine), cids, "our clients listed by %s" % via.node_id)
            for cid, e in mine.items():
                what = "%s listed by %s" % (cid, via.node_id)
                h.check_eq(e["node"], home[cid], "%s: node" % what)
                h.check_eq(e["peer"], peer_of(clients[cid]), "%s: peer" % what)
                h.check_eq(e["clean_session"], True, "%s: clean_session" % what)
                h.check(isinstance(e.get("channel"), int), "%s: channel %r" % (what,
                                                                               e.get("channel")))

        # ?node= filters, asked of another node.
        for nid in ("n1", "n2", "n3"):
            via = other(nid)
            entries, _ = all_clients(via, "node=" + nid)
            h.check_eq(sorted({e["node"] for e in entries}), [nid],
                       "nodes in ?node=%s on %s" % (nid, via.node_id))
            h.check_eq(sorted(e["client_id"] for e in entries if e["client_id"] in home),
                       sorted(c for c in cids if home[c] == nid),
                       "?node=%s on %s" % (nid, via.node_id))
        entries, _ = all_clients(CL.node("n1"), "node=nobody")
        h.check_eq(entries, [], "?node= of an unknown node")

        # Pagination with a small limit: every client exactly once.
        notes = []
        for via, query, limit in ((CL.node("n3"), "", 4), (CL.node("n2"), "", 1),
                                  (CL.node("n1"), "node=n2", 2)):
            entries, pages = all_clients(via, query, limit)
            ids = [e["client_id"] for e in entries]
            want = sorted(c for c in cids if not query or home[c] == query[5:])
            h.check_eq(sorted(i for i in ids if i in home), want,
                       "limit=%d %s pages on %s" % (limit, query, via.node_id))
            h.check_eq(len(ids), len(set(ids)),
                       "limit=%d %s: a client on two pages" % (limit, query))
            notes.append("limit=%d%s: %d pages, largest %d" % (
                limit, " " + query if query else "", len(pages), max(map(len, pages))))
            if limit < len(want):
                h.check(len(pages) > 1, "limit=%d %s: one page of %d" % (limit, query, len(ids)))
        expect(call(CL.node("n1"), "GET", "/api/v1/clients?cursor=abc"), 400, "bad_parameter",
               "a cursor the cluster directory never gave")
        expect(call(CL.node("n1"), "GET", "/api/v1/clients?limit=0"), 400, "bad_parameter",
               "limit=0")
        return "; ".join(notes)
    finally:
        ch.stop_quietly(*clients.values())


@case
def list_entries_have_the_documented_form():
    # docs/api.md's list example and the standalone node answer "protocol"
    # as "3.1.1" / "3.1" (as the details do).
    c311 = connect_raw(CL.node("n2"), h.uid("f4"))
    c31 = connect_raw(CL.node("n2"), h.uid("f3"), version=h.MQTTV31, clean=False)
    try:
        wait_listed([c311.client_id, c31.client_id], CL.node("n1"))
        entries = {e["client_id"]: e for e in all_clients(CL.node("n1"), "node=n2")[0]}
        got = {(entries[c.client_id]["protocol"], entries[c.client_id]["clean_session"])
               for c in (c311, c31)}
        h.check_eq(got, {("3.1.1", True), ("3.1", False)},
                   "(protocol, clean_session) of a 3.1.1 and a 3.1 client in the list")
    finally:
        ch.stop_quietly(c311, c31)


@case
def client_details_read_from_the_owning_node():
    cid = h.uid("det") + "/a b"  # '/' and ' ' travel percent-encoded, twice
    owner = CL.node("n2")
    c = h.Paho(owner.port, client_id=cid, version=h.MQTTV31, clean=False, keepalive=42,
               username="alice")
    try:
        c.connect()
        c.subscribe("det/+/x", 1)
        c.subscribe("det/#", 2)
        peer = "%s:%d" % c.c.socket().getsockname()[:2]
        channel = int(REDIS.hgetall("dev:" + cid)["channel"])
        for via in (CL.node("n1"), CL.node("n3")):
            what = "client on n2 read from %s" % via.node_id
            doc = expect(call(via, "GET", client_path(cid)), 200, what=what)
            h.check_eq((doc["client_id"], doc["online"], doc["node"], doc["peer"]),
                       (cid, True, "n2", peer), "%s: identity" % what)
            h.check_eq((doc["protocol"], doc["protocol_level"], doc["clean_session"],
                        doc["keepalive"], doc["username"], doc["channel"]),
                       ("3.1", 3, False, 42, "alice", channel), "%s: connection" % what)
            h.check_eq(sorted((s["filter"], s["qos"]) for s in doc["subscriptions"]),
                       [("det/#", 2), ("det/+/x", 1)], "%s: subscriptions" % what)
        for via in CL.nodes:
            expect(call(via, "GET", client_path(h.uid("nobody"))), 404, "client_not_found",
                   "unknown client on %s" % via.node_id)
    finally:
        ch.stop_quietly(c)


@case
def offline_persistent_session_is_shown_by_its_node():
    # docs/api.md, GET /api/v1/clients/{id}: "A persistent session whose
    # client is offline is shown with "online": false" (the standalone node
    # does, test_20); in a cluster its own node still holds the session.
    cid = h.uid("off")
    owner = CL.node("n3")
    c = connect_raw(owner, cid, clean=False)
    c.subscribe([("off/#", 1)])
    c.disconnect()
    h.wait_until(lambda: not REDIS.exists("dev:" + cid), what="dev:%s released" % cid)
    doc = expect(call(owner, "GET", client_path(cid)), 200,
                 what="offline persistent session on its own node n3")
    h.check_eq((doc["online"], doc["node"], len(doc["subscriptions"])), (False, "n3", 1),
               "offline session fields")


@case
def kick_through_another_node_closes_on_the_owner():
    owner = CL.node("n2")
    via = CL.node("n3")
    cid = h.uid("kick")
    will_topic = h.uid("kw") + "/status"
    watcher = h.Paho(owner.port)
    victim = None
    try:
        watcher.connect()
        watcher.subscribe(will_topic, 1)
        start = EV.last_id()
        victim = connect_raw(owner, cid, will=(will_topic, b"gone", 1, False))
        EV.wait_for(cid, "online", start)
        doc = expect(call(via, "DELETE", client_path(cid)), 200, what="kick from n3")
        h.check_eq(doc, {"client_id": cid, "node": "n2", "kicked": True}, "kick answer")
        victim.wait_closed()  # EOF on the owner's connection
        off = EV.wait_for(cid, "offline", start)
        h.check_eq(len(off), 1, "one offline event")
        h.check_eq((off[0]["reason"], off[0]["node"]), ("kicked", "n2"), "offline event")
        m = watcher.get()
        h.check_eq((m.topic, m.payload, m.qos), (will_topic, b"gone", 1),
                   "will published on the owning node")
        # The release precedes the event on n2's Redis connection: gone now.
        expect(call(via, "DELETE", client_path(cid)), 404, "client_not_found", "kick again")
        expect(call(CL.node("n1"), "GET", client_path(cid)), 404, "client_not_found",
               "GET the kicked clean-session client")
        expect(call(via, "DELETE", client_path(h.uid("nobody"))), 404, "client_not_found",
               "kick unknown")
    finally:
        ch.stop_quietly(victim, watcher)


@case
def api_publish_on_one_node_reaches_subscribers_on_every_node():
    topic = h.uid("ap") + "/t"
    subs = []
    try:
        for n in CL.nodes:
            p = h.Paho(n.port)
            p.connect()
            p.subscribe(topic, 1)
            subs.append(p)
        expect(post(CL.node("n1"), "/api/v1/publish", {"topic": topic, "payload": "hi",
                                                       "qos": 1}), 202, what="publish on n1")
        for p, n in zip(subs, CL.nodes):
            m = p.get()
            h.check_eq((m.topic, m.payload), (topic, b"hi"), "delivery on %s" % n.node_id)
            p.expect_nothing(what="a second copy on %s" % n.node_id)
    finally:
        ch.stop_quietly(*subs)


@case
def metrics_show_redis_and_forwarding_figures():
    n1, n3 = CL.node("n1"), CL.node("n3")
    h.check_eq(metric(n1, "relaymq_redis_up"), 1.0, "relaymq_redis_up on n1")
    cmds = metric(n1, "relaymq_redis_commands_total")
    ok = metric(n3, 'relaymq_forwarded_requests_total{outcome="ok"}')
    cid = h.uid("mx")
    c = connect_raw(n1, cid)
    try:
        wait_listed([cid], n3)
        expect(call(n3, "GET", client_path(cid)), 200, what="remote read from n3")
        h.check(metric(n3, 'relaymq_forwarded_requests_total{outcome="ok"}') > ok,
                "n3 counted its forwarded request")
        h.check(metric(n1, "relaymq_redis_commands_total") > cmds,
                "n1 counted the Redis commands of a claim")
        h.check(metric(n1, "relaymq_redis_latency_seconds_sum") > 0, "Redis latency summed")
    finally:
        ch.stop_quietly(c)


# --------------------------------------------------------------------------
# Redis outage (last: Redis comes back empty)

@case
def redis_down_is_503_everywhere_and_ready_again_after():
    stay = {n.node_id: connect_raw(n, h.uid("stay")) for n in CL.nodes}
    try:
        wait_listed([c.client_id for c in stay.values()], CL.node("n1"))
        REDIS.kill()
        try:
            for n in CL.nodes:
                h.wait_until(lambda: call(n, "GET", "/readyz", key=None).status == 503,
                             interval=0.1, what="/readyz 503 on %s" % n.node_id)
                expect(call(n, "GET", "/readyz", key=None), 503, "not_ready",
                       "/readyz on %s with Redis down" % n.node_id)
                expect(call(n, "GET", "/healthz", key=None), 200,
                       what="/healthz on %s with Redis down" % n.node_id)
                for method, path in (("GET", "/api/v1/clients"),
                                     ("GET", "/api/v1/clients?node=n1&limit=5"),
                                     ("GET", "/api/v1/nodes"),
                                     ("GET", client_path(h.uid("x"))),
                                     ("DELETE", client_path(h.uid("x")))):
                    expect(call(n, method, path), 503, "redis_unavailable",
                           "%s %s on %s with Redis down" % (method, path, n.node_id))
        finally:
            REDIS.start()
        for n in CL.nodes:
            h.wait_until(lambda: call(n, "GET", "/readyz", key=None).status == 200,
                         interval=0.1, what="/readyz 200 on %s after Redis restarted" % n.node_id)
            h.check_eq(call(n, "GET", "/readyz", key=None).json,
                       {"status": "ready", "node": n.node_id}, "/readyz body")
        # Every node re-registers and re-asserts the clients it kept serving.
        for n in CL.nodes:
            h.wait_until(lambda: sorted(k for k, v in nodes_view(n).items() if v["alive"])
                         == ["n1", "n2", "n3"], interval=0.2,
                         what="three alive nodes on %s after Redis restarted" % n.node_id)
        for nid, c in stay.items():
            via = other(nid)
            doc = expect(call(via, "GET", client_path(c.client_id)), 200,
                         what="a client of %s kept through the outage, read from %s"
                         % (nid, via.node_id))
            h.check_eq(doc["node"], nid, "its node")
    finally:
        ch.stop_quietly(*stay.values())
        if REDIS.proc.poll() is not None:
            REDIS.start()


# --------------------------------------------------------------------------
# runner

def stop_all():
    errors = CL.stop()
    h.check(not errors, "nodes did not exit 0 on SIGTERM: %s" % errors)


def bind(redis, events, cluster):
    global REDIS, EV, CL
    REDIS, EV, CL = redis, events, cluster


def main():
    return ch.run_suite(cases, ("every_node_exits_0_on_sigterm", stop_all), bind, api_key=KEY)


if __name__ == "__main__":
    sys.exit(main())
