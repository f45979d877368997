"""Device commands (issue 5): commands posted to the admin API of any node,
published to the device wherever it is connected, re-sent until it replies,
and followed through their statuses in Redis.

One real Redis and three nodes n1..n3 (node TTL 3 s, admin API key "k",
--command-retry-interval 1s) shared by the file; the standalone case and
the node-crash case start nodes of their own. Devices are in-process paho
clients (`Device` in commands_harness.py: it records every copy of every command it gets and
answers when and how the case says) or scripts/device-sim processes.

  delivery     a command posted to one node reaches the device on another
               node with cmd_id added; the reply is stored; GET from a
               third node; QoS 0/1/2 commands go out at their QoS.
  retries      copies spaced by the interval until the device answers;
               1 + retries copies then timed_out; nothing after the end.
  offline      queued while the device is away, delivered when it connects
               (to any node); expired after its ttl if it never comes.
  moves        the device moves between nodes between copies; the node
               holding it is killed: the command follows it.
  API          ?wait, DELETE (cancel), idempotency keys, list pages, every
               error answer; error replies (failed); stray replies ignored
               and counted, still routed to ordinary subscribers.
  stream       {prefix}commands entries for each status change.
  standalone   the same API on one node without Redis.
  device-sim   the simulated devices tool (scripts/device-sim) answering.

Timing: only generous upper bounds that catch hangs, and lower bounds of
0.8 x the interval between copies. Every node started here must exit 0 on
SIGTERM (sanitizer build); nodes killed with SIGKILL on purpose are exempt.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import cluster_harness as ch  # noqa: E402
import commands_harness as cmh  # noqa: E402
from commands_harness import (  # noqa: E402
    INTERVAL_S, DEFAULT_RETRIES, DEFAULT_TTL_MS, NODE_OPTIONS, SLOW, SIM, stop_all, call, expect,
    q, cmd_path, dev_path, post_command, get_command, wait_command, wait_final, check_command,
    commands_counter, Device, check_copy, check_gaps, stop_devices,
)

REDIS = None
CL = None
EV = None
cases, case = ch.case_list()


# --------------------------------------------------------------------------
# delivery


@case
def command_posted_on_n3_reaches_device_on_n1_reply_read_on_n2():
    n1, n2, n3 = CL.nodes
    dev = Device(reply_extra={"value": 42}).connect(n1)
    try:
        payload = {"action": "reboot", "delay": 5, "nested": {"a": [1, 2]}}
        cmd = post_command(n3, dev.id, payload, qos=1)
        h.check_eq((cmd["device"], cmd["payload"], cmd["qos"], cmd["retries"],
                    cmd["interval_ms"], cmd["ttl_ms"], cmd["accepted_by"],
                    cmd["idempotency_key"]),
                   (dev.id, payload, 1, DEFAULT_RETRIES, int(INTERVAL_S * 1000), DEFAULT_TTL_MS,
                    "n3", None), "the posted command (defaults from the options)")
        h.check(cmd["status"] in ("queued", "sent", "delivered", "succeeded"),
                "status in the POST answer: %r" % cmd["status"])
        copy = dev.wait_copies(1)[0]
        check_copy(copy, cmd, "the copy on n1")
        h.check_eq(copy.qos, 1, "QoS of the copy")
        done = wait_final(n2, cmd["id"])
        h.check_eq((done["status"], done["attempts"], done["node"], done["accepted_by"]),
                   ("succeeded", 1, "n1", "n3"), "(status, attempts, node, accepted_by) on n2")
        h.check_eq(done["reply"], dev.replies[0], "the stored reply")
        h.check_eq(done["payload"], payload, "payload after the reply")
        h.check(done["updated_at_ms"] >= cmd["created_at_ms"], "updated_at_ms moved")
        # The PUBACK arrives after the reply here: it must not undo the end.
        dev.expect_no_more(1, 1.5 * INTERVAL_S, "after the reply")
        for n in CL.nodes:
            again = get_command(n, cmd["id"])
            h.check_eq((again["status"], again["attempts"], again["reply"]),
                       ("succeeded", 1, dev.replies[0]), "the command read on %s" % n.node_id)
    finally:
        stop_devices(dev)


@case
def command_qos_is_the_publish_qos():
    n1, n2, _ = CL.nodes
    dev = Device().connect(n2)
    try:
        for i, qos in enumerate((0, 2, 1)):
            cmd = post_command(n1, dev.id, {"qos_test": qos}, qos=qos)
            h.check_eq(cmd["qos"], qos, "qos of the command")
            copy = dev.wait_copies(i + 1)[i]
            check_copy(copy, cmd, "QoS %d copy" % qos)
            h.check_eq(copy.qos, qos, "QoS of the PUBLISH of a QoS %d command" % qos)
            done = wait_final(n1, cmd["id"])
            h.check_eq((done["status"], done["attempts"]), ("succeeded", 1),
                       "QoS %d command" % qos)
        dev.expect_no_more(3, 1.5 * INTERVAL_S, "after three answered commands")
    finally:
        stop_devices(dev)


# --------------------------------------------------------------------------
# retries


@case
def retried_until_the_device_answers_the_third_copy():
    n1, n2, n3 = CL.nodes
    dev = Device(ignore_first=2).connect(n2)
    try:
        cmd = post_command(n1, dev.id, {"op": "retry-me"}, retries=3)
        done = wait_final(n3, cmd["id"])
        h.check_eq((done["status"], done["attempts"], done["node"]), ("succeeded", 3, "n2"),
                   "(status, attempts, node)")
        copies = dev.wait_copies(3)
        for i, c in enumerate(copies):
            check_copy(c, cmd, "copy %d" % (i + 1))
        check_gaps(copies, "re-sends")
        h.check_eq(done["reply"], dev.replies[-1], "the stored reply")
        dev.expect_no_more(3, 2 * INTERVAL_S, "after the third copy was answered")
    finally:
        stop_devices(dev)


@case
def never_answered_times_out_after_one_plus_retries_sends():
    n1, n2, n3 = CL.nodes
    dev = Device(answer=False).connect(n3)
    try:
        cmd = post_command(n2, dev.id, {"op": "ignore-me"}, retries=2)
        h.check_eq(cmd["retries"], 2, "retries")
        first = dev.wait_copies(1)[0]
        sent = wait_command(n1, cmd["id"], lambda c: c["status"] in ("sent", "delivered"),
                            "sent or delivered after the first copy")
        h.check_eq((sent["attempts"], sent["node"]), (1, "n3"), "after the first copy")
        done = wait_final(n1, cmd["id"])
        ended = time.monotonic() - dev.t0
        h.check_eq((done["status"], done["attempts"], done["reply"]), ("timed_out", 3, None),
                   "(status, attempts, reply)")
        copies = dev.wait_copies(3)
        h.check_eq(len(copies), 3, "copies before the time-out")
        for i, c in enumerate(copies):
            check_copy(c, cmd, "copy %d" % (i + 1))
        check_gaps(copies, "re-sends")
        # send, interval, send, interval, send, interval, timed_out
        h.check(ended - first.t >= 3 * 0.8 * INTERVAL_S,
                "timed out %.2fs after the first copy, before three intervals" % (ended - first.t))
        dev.expect_no_more(3, 1.5 * INTERVAL_S, "after the time-out")
        late = dict(cmd_id=cmd["id"], result="too late")
        dev.reply(late)
        time.sleep(0.5)
        h.check_eq(get_command(n2, cmd["id"])["status"], "timed_out",
                   "a reply after the time-out changes nothing")
    finally:
        stop_devices(dev)


# --------------------------------------------------------------------------
# offline devices


@case
def offline_device_gets_queued_command_when_it_connects():
    n1, n2, n3 = CL.nodes
    dev = Device()
    try:
        cmd = post_command(n1, dev.id, {"op": "later"})
        h.check_eq((cmd["status"], cmd["attempts"], cmd["node"], cmd["accepted_by"]),
                   ("queued", 0, "n1", "n1"), "a command for an offline device")
        time.sleep(1.5 * INTERVAL_S)
        still = get_command(n3, cmd["id"])
        h.check_eq((still["status"], still["attempts"]), ("queued", 0),
                   "still queued while the device is away")
        dev.connect(n2)
        copy = dev.wait_copies(1)[0]
        check_copy(copy, cmd, "the copy on connect")
        done = wait_final(n3, cmd["id"])
        h.check_eq((done["status"], done["attempts"], done["node"], done["accepted_by"]),
                   ("succeeded", 1, "n2", "n1"), "(status, attempts, node, accepted_by)")
        h.check_eq(done["reply"], dev.replies[0], "the stored reply")
        dev.expect_no_more(1, 1.5 * INTERVAL_S, "after the answer")
    finally:
        stop_devices(dev)


@case
def several_queued_commands_all_delivered_on_connect():
    n1, n2, n3 = CL.nodes
    dev = Device()
    try:
        cmds = [post_command(n, dev.id, {"seq": i}) for i, n in enumerate((n1, n2, n3, n1))]
        dev.connect(n3)
        done = [wait_final(n2, c["id"]) for c in cmds]
        h.check_eq([(d["status"], d["attempts"], d["node"]) for d in done],
                   [("succeeded", 1, "n3")] * 4, "four queued commands")
        dev.expect_no_more(4, 1.5 * INTERVAL_S, "after four answers")
        h.check_eq(sorted(c.cmd_id for c in dev.copies), sorted(c["id"] for c in cmds),
                   "one copy of each command")
    finally:
        stop_devices(dev)


@case
def queued_command_expires_after_its_ttl():
    n1, n2, _ = CL.nodes
    dev = Device()
    try:
        cmd = post_command(n1, dev.id, {"op": "short-lived"}, ttl="1s")
        h.check_eq((cmd["ttl_ms"], cmd["expires_at_ms"] - cmd["created_at_ms"]), (1000, 1000),
                   "(ttl_ms, expires_at_ms - created_at_ms) of ttl \"1s\"")
        done = wait_final(n2, cmd["id"], timeout=SLOW + 15)
        h.check_eq((done["status"], done["attempts"]), ("expired", 0), "after its ttl")
        h.check(done["updated_at_ms"] >= cmd["expires_at_ms"],
                "expired at %d, before expires_at_ms %d" % (done["updated_at_ms"],
                                                             cmd["expires_at_ms"]))
        dev.connect(n2)
        dev.expect_no_more(0, 1.5 * INTERVAL_S, "an expired command")
    finally:
        stop_devices(dev)


# --------------------------------------------------------------------------
# moves and crashes


@case
def device_moving_between_copies_keeps_its_attempt_count():
    n1, n2, n3 = CL.nodes
    dev = Device(answer=False).connect(n1)
    try:
        cmd = post_command(n3, dev.id, {"op": "follow-me"}, retries=5)
        first = dev.wait_copies(1)[0]
        h.check_eq(first.node, "n1", "first copy's node")
        dev.disconnect()
        dev.answer = True  # answers whatever comes on n2
        dev.connect(n2)
        done = wait_final(n3, cmd["id"])
        copies = list(dev.copies)
        on_n2 = [c for c in copies if c.node == "n2"]
        h.check(on_n2, "no copy reached the device on n2: %r" % copies)
        for i, c in enumerate(copies):
            check_copy(c, cmd, "copy %d" % (i + 1))
        h.check_eq((done["status"], done["node"]), ("succeeded", "n2"), "(status, node)")
        h.check(done["attempts"] >= 2 and done["attempts"] >= len(copies),
                "attempts %d, copies seen %d: the count went on across nodes"
                % (done["attempts"], len(copies)))
        n = len(copies)
        dev.expect_no_more(n, 2 * INTERVAL_S, "after the answer on n2")
        h.check_eq(get_command(n1, cmd["id"])["attempts"], done["attempts"],
                   "attempts after the end")
        return "%d copies (%d on n2), attempts %d" % (n, len(on_n2), done["attempts"])
    finally:
        stop_devices(dev)


@case
def owner_killed_command_follows_the_device_to_n3():
    n4 = ch.Node("n4", REDIS, **NODE_OPTIONS).start()
    n1, _, n3 = CL.nodes
    dev = Device(answer=False)
    ok = False
    try:
        dev.connect(n4)
        cmd = post_command(n1, dev.id, {"op": "survive"}, retries=10)
        dev.wait_copies(1)
        wait_command(n1, cmd["id"], lambda c: c["status"] in ("sent", "delivered")
                     and c["node"] == "n4", "the command sent by n4")
        n4.kill9()
        h.wait_until(lambda: dev.paho.disconnected.is_set(), what="the device sees n4 gone")
        dev.disconnect()
        dev.answer = True
        dev.connect(n3)
        done = wait_final(n1, cmd["id"], timeout=SLOW + 10)
        copies = list(dev.copies)
        h.check([c for c in copies if c.node == "n3"], "no copy on n3: %r" % copies)
        h.check_eq((done["status"], done["node"]), ("succeeded", "n3"), "(status, node)")
        h.check(done["attempts"] >= 2, "attempts %d after a copy on n4 and one on n3"
                % done["attempts"])
        dev.expect_no_more(len(copies), 1.5 * INTERVAL_S, "after the answer on n3")
        ok = True
        return "%d copies, attempts %d" % (len(copies), done["attempts"])
    finally:
        stop_devices(dev)
        n4.kill()
        if ok:
            n4.remove_files()


# --------------------------------------------------------------------------
# API


@case
def wait_query_answers_when_the_command_ends():
    n1, n2, _ = CL.nodes
    dev = Device().connect(n1)
    away = Device()
    try:
        t0 = time.monotonic()
        doc = post_command(n2, dev.id, {"op": "quick"}, status=200, query="?wait=10", timeout=30)
        took = time.monotonic() - t0
        h.check_eq((doc["status"], doc["attempts"], doc["reply"]),
                   ("succeeded", 1, dev.replies[0]), "the ?wait=10 answer")
        h.check(took < 5.0, "?wait=10 answered after %.1fs, not when the device replied" % took)
        # Not final within the wait: 202 with the command as it is.
        t0 = time.monotonic()
        doc = post_command(n2, away.id, {"op": "nobody"}, status=202, query="?wait=1", timeout=30)
        took = time.monotonic() - t0
        h.check_eq((doc["status"], doc["attempts"]), ("queued", 0),
                   "?wait=1 for an offline device")
        h.check(0.8 <= took < 8.0, "?wait=1 answered after %.2fs" % took)
        # ?wait=0 answers at once.
        doc = post_command(n2, away.id, {"op": "nobody"}, status=202, query="?wait=0")
        h.check_eq(doc["status"], "queued", "?wait=0")
        return "answered in %.2fs" % took
    finally:
        stop_devices(dev)


@case
def delete_cancels_a_pending_command():
    n1, n2, n3 = CL.nodes
    dev = Device(answer=False).connect(n1)
    try:
        cmd = post_command(n2, dev.id, {"op": "cancel-me"}, retries=10)
        dev.wait_copies(1)
        doc = expect(call(n3, "DELETE", cmd_path(cmd["id"])), 200, what="DELETE on n3")
        check_command(doc, "DELETE answer")
        h.check_eq((doc["id"], doc["status"]), (cmd["id"], "canceled"), "DELETE answer")
        n = dev.count()
        h.check(n <= 2, "%d copies before the cancel" % n)
        dev.expect_no_more(n, 2.5 * INTERVAL_S, "after DELETE")
        for node in CL.nodes:
            h.check_eq(get_command(node, cmd["id"])["status"], "canceled",
                       "status on %s" % node.node_id)
        expect(call(n1, "DELETE", cmd_path(cmd["id"])), 409, "command_finished",
               "DELETE a canceled command")
        dev.reply({"cmd_id": cmd["id"], "result": "ok"})
        time.sleep(0.5)
        h.check_eq(get_command(n1, cmd["id"])["status"], "canceled",
                   "a reply after the cancel changes nothing")
        # A queued command is canceled too, and never sent.
        away = Device()
        queued = post_command(n1, away.id, {"op": "never"})
        doc = expect(call(n2, "DELETE", cmd_path(queued["id"])), 200, what="DELETE queued")
        h.check_eq((doc["status"], doc["attempts"]), ("canceled", 0), "a canceled queued command")
        away.connect(n3)
        try:
            away.expect_no_more(0, 1.5 * INTERVAL_S, "a command canceled before the device came")
        finally:
            stop_devices(away)
    finally:
        stop_devices(dev)


@case
def idempotency_key_returns_the_same_command_without_sending_again():
    n1, n2, n3 = CL.nodes
    dev = Device(answer=False).connect(n3)
    try:
        key = "op-" + h.uid("idem")
        first = post_command(n1, dev.id, {"op": "once"}, idempotency_key=key)
        h.check_eq(first["idempotency_key"], key, "idempotency_key")
        dev.wait_copies(1)
        again = post_command(n2, dev.id, {"op": "twice?"}, status=200, idempotency_key=key)
        h.check_eq((again["id"], again["payload"], again["idempotency_key"]),
                   (first["id"], {"op": "once"}, key), "the re-post's answer (the first command)")
        # Well within the interval: a re-post must not send by itself.
        dev.expect_no_more(1, 0.5 * INTERVAL_S, "right after the re-post")
        dev.reply({"cmd_id": first["id"], "result": "ok"})
        done = wait_final(n1, first["id"])
        h.check_eq((done["status"], done["attempts"]), ("succeeded", 1), "the keyed command")
        after = post_command(n1, dev.id, {"op": "thrice?"}, status=200, idempotency_key=key)
        h.check_eq((after["id"], after["status"], after["attempts"]),
                   (first["id"], "succeeded", 1), "a re-post after the end")
        dev.expect_no_more(1, 1.5 * INTERVAL_S, "after re-posts of a finished command")
        # The key is per device.
        other = Device()
        elsewhere = post_command(n1, other.id, {"op": "once"}, status=202, idempotency_key=key)
        h.check(elsewhere["id"] != first["id"], "the same key for another device made a new one")
    finally:
        stop_devices(dev)


@case
def bad_requests_are_json_errors():
    n1, n2, _ = CL.nodes
    device = h.uid("bad")
    path = dev_path(device)
    for body, code, what in (
            ("not json", "bad_json", "a body that is not JSON"),
            ("", "bad_json", "an empty body"),
            ("[1, 2]", "bad_json", "an array body"),
            ('"payload"', "bad_json", "a string body"),
            ('{"payload": {"a": 1}', "bad_json", "truncated JSON")):
        expect(call(n1, "POST", path, body), 400, code, what)
    for body, field, what in (
            ({}, "payload", "no payload"),
            ({"payload": None}, "payload", "payload null"),
            ({"payload": "on"}, "payload", "payload a string"),
            ({"payload": [1]}, "payload", "payload an array"),
            ({"payload": {}, "qos": 3}, "qos", "qos 3"),
            ({"payload": {}, "qos": -1}, "qos", "qos -1"),
            ({"payload": {}, "qos": "1"}, "qos", "qos a string"),
            ({"payload": {}, "retries": -1}, "retries", "retries -1"),
            ({"payload": {}, "retries": 101}, "retries", "retries 101"),
            ({"payload": {}, "retries": "2"}, "retries", "retries a string"),
            ({"payload": {}, "interval": "abc"}, "interval", "interval \"abc\""),
            ({"payload": {}, "interval": -1}, "interval", "interval -1"),
            ({"payload": {}, "interval": [1]}, "interval", "interval an array"),
            ({"payload": {}, "ttl": "abc"}, "ttl", "ttl \"abc\""),
            ({"payload": {}, "ttl": {}}, "ttl", "ttl an object"),
            ({"payload": {}, "idempotency_key": 7}, "idempotency_key", "idempotency_key 7"),
            ({"payload": {}, "idempotency_key": "x" * 201}, "idempotency_key",
             "idempotency_key of 201 characters")):
        expect(call(n2, "POST", path, body), 400, "bad_field", what, field=field)
    for query in ("?wait=abc", "?wait=-1", "?wait=301"):
        r = call(n1, "POST", path + query, {"payload": {}})
        h.check_eq(r.status, 400, "POST with %s: %r" % (query, r))
        h.check(isinstance(r.error().get("code"), str), "POST with %s: error body %r" % (query, r))
    # None of these created a command.
    listed = expect(call(n1, "GET", path), 200, what="list after bad requests")
    h.check_eq(listed, {"commands": [], "next": None}, "commands of the device")
    # Limits that are right at the edge are accepted.
    ok = post_command(n1, device, {}, qos=2, retries=100, interval=0.5, ttl="2h",
                      idempotency_key="y" * 200)
    h.check_eq((ok["qos"], ok["retries"], ok["interval_ms"], ok["ttl_ms"]),
               (2, 100, 500, 7200_000), "(qos, retries, interval_ms, ttl_ms) at the edges")
    ok = post_command(n1, device, {}, retries=0, interval="2s", ttl=90)
    h.check_eq((ok["retries"], ok["interval_ms"], ok["ttl_ms"]), (0, 2000, 90_000),
               "retries 0, interval \"2s\", ttl 90 (seconds)")
    for node in CL.nodes:
        for method in ("GET", "DELETE"):
            for cid in ("000000000000000000000000", "nope", ok["id"] + "0"):
                expect(call(node, method, cmd_path(cid)), 404, "command_not_found",
                       "%s unknown command %s on %s" % (method, cid, node.node_id))
    expect(call(n1, "GET", path + "?limit=0"), 400, what="list with limit=0")
    expect(call(n1, "GET", path + "?limit=1001"), 400, what="list with limit=1001")
    expect(call(n1, "GET", path + "?cursor=zzz-not-a-cursor"), 400,
           what="list with a cursor never given")
    expect(call(n1, "POST", path, {"payload": {}}, key="wrong"), 401, what="a wrong key")
    expect(call(n1, "GET", cmd_path(ok["id"]), key=None), 401, what="no key")


@case
def finished_command_cannot_be_deleted():
    n1, n2, _ = CL.nodes
    dev = Device().connect(n1)
    try:
        cmd = post_command(n2, dev.id, {"op": "finish"})
        done = wait_final(n2, cmd["id"])
        h.check_eq(done["status"], "succeeded", "status")
        for node in CL.nodes:
            expect(call(node, "DELETE", cmd_path(cmd["id"])), 409, "command_finished",
                   "DELETE a succeeded command on %s" % node.node_id)
        h.check_eq(get_command(n1, cmd["id"])["status"], "succeeded", "still succeeded")
    finally:
        stop_devices(dev)


@case
def error_reply_fails_the_command_and_stray_replies_are_ignored():
    n1, n2, n3 = CL.nodes
    dev = Device(reply_extra={"error": {"code": "E_BUSY", "detail": "motor busy"}}).connect(n1)
    busy = Device(answer=False).connect(n2)
    watcher = h.Paho(n3.port)
    try:
        watcher.connect()
        watcher.subscribe("devices/%s/replies" % dev.id, 1)
        cmd = post_command(n2, dev.id, {"op": "fail-me"})
        done = wait_final(n3, cmd["id"])
        h.check_eq((done["status"], done["attempts"]), ("failed", 1), "an error reply")
        h.check_eq(done["reply"], dev.replies[0], "the stored error reply")
        h.check_eq(json.loads(watcher.get().payload), dev.replies[0],
                   "the reply reached an ordinary subscriber too")

        other = post_command(n3, busy.id, {"op": "mine"}, retries=10)
        busy.wait_copies(1)
        before = commands_counter(CL.nodes, "reply_unknown")
        strays = [{"cmd_id": "000000000000000000000000", "result": "ok"},    # unknown
                  {"cmd_id": other["id"], "result": "ok"},                  # another device's
                  {"cmd_id": cmd["id"], "result": "ok", "late": True}]      # finished
        for body in strays:
            dev.reply(body)
            m = watcher.get()
            h.check_eq((m.topic, json.loads(m.payload)), (dev.reply_topic, body),
                       "a stray reply still reaches the subscriber")
        h.wait_until(lambda: commands_counter(CL.nodes, "reply_unknown") >= before + 3,
                     what="reply_unknown to count 3 stray replies (from %d)" % before)
        time.sleep(0.5)
        h.check_eq(commands_counter(CL.nodes, "reply_unknown"), before + 3,
                   "reply_unknown after 3 stray replies")
        mine = get_command(n1, other["id"])
        h.check(mine["status"] in ("sent", "delivered") and mine["reply"] is None,
                "another device's reply ended the command: %r" % mine)
        again = get_command(n1, cmd["id"])
        h.check_eq((again["status"], again["reply"]), ("failed", dev.replies[0]),
                   "a second reply to a finished command changes nothing")
        expect(call(n1, "DELETE", cmd_path(other["id"])), 200, what="clean up")
    finally:
        stop_devices(dev, busy)
        ch.stop_quietly(watcher)


@case
def device_list_is_newest_first_and_pages_cover_everything():
    n1, n2, n3 = CL.nodes
    device = h.uid("lst")
    made = []
    for i in range(5):
        made.append(post_command(CL.nodes[i % 3], device, {"n": i}))
        time.sleep(0.01)  # ids sort by creation to the millisecond
    want = [c["id"] for c in reversed(made)]
    for node in CL.nodes:
        doc = expect(call(node, "GET", dev_path(device)), 200, what="list on %s" % node.node_id)
        h.check(isinstance(doc, dict) and set(doc) >= {"commands", "next"},
                "list shape {commands, next}: %r" % doc)
        h.check_eq([c["id"] for c in doc["commands"]], want, "newest first on %s" % node.node_id)
        h.check_eq(doc["next"], None, "next of a complete list")
        for c in doc["commands"]:
            check_command(c, "listed command")
        h.check_eq([c["payload"] for c in doc["commands"]], [{"n": i} for i in (4, 3, 2, 1, 0)],
                   "payloads in the list")
    pages, cursor, got = [], None, []
    while True:
        qs = "?limit=2" + ("&cursor=" + q(cursor) if cursor is not None else "")
        doc = expect(call(CL.nodes[len(pages) % 3], "GET", dev_path(device) + qs), 200,
                     what="page %d" % (len(pages) + 1))
        pages.append([c["id"] for c in doc["commands"]])
        got += pages[-1]
        cursor = doc["next"]
        if cursor is None:
            break
        h.check(isinstance(cursor, str) and cursor, "next is a non-empty string: %r" % cursor)
        h.check(len(pages) < 10, "pagination does not end: %r" % pages)
    h.check_eq(got, want, "the pages together")
    h.check(all(len(p) <= 2 for p in pages) and len(pages) >= 3,
            "limit=2 pages of 5 commands: %r" % pages)
    h.check_eq(expect(call(n2, "GET", dev_path(h.uid("none"))), 200, what="no commands"),
               {"commands": [], "next": None}, "a device without commands")


@case
def stream_has_an_entry_for_each_status_change():
    n1, n2, _ = CL.nodes
    dev = Device(answer=False).connect(n1)
    try:
        cmd = post_command(n2, dev.id, {"op": "trace"}, qos=1)
        dev.wait_copies(1)
        # Answer only once the PUBACK has been taken in.
        wait_command(n2, cmd["id"], lambda c: c["status"] == "delivered", "status delivered")
        dev.reply({"cmd_id": cmd["id"], "result": "ok"})
        wait_final(n2, cmd["id"])

        def entries():
            out = []
            for entry_id, fields in REDIS.cli("XRANGE", ch.PREFIX + "commands", "-", "+"):
                d = dict(zip(fields[0::2], fields[1::2]))
                if d.get("id") == cmd["id"]:
                    out.append(d)
            return out
        got = h.wait_until(lambda: (lambda e: e if len(e) >= 4 else None)(entries()),
                           what="4 stream entries for %s" % cmd["id"])
        h.check_eq([(e.get("status"), e.get("device"), e.get("attempts"), e.get("node"))
                    for e in got],
                   [("queued", dev.id, "0", "n2"), ("sent", dev.id, "1", "n1"),
                    ("delivered", dev.id, "1", "n1"), ("succeeded", dev.id, "1", "n1")],
                   "(status, device, attempts, node) of the %scommands entries" % ch.PREFIX)
        for e in got:
            stamp = e.get("time", e.get("ts"))
            h.check(stamp is not None and str(stamp).isdigit()
                    and abs(int(stamp) - time.time() * 1000) < 120_000,
                    "entry time %r (fields %r)" % (stamp, sorted(e)))
        rec = REDIS.hgetall("cmd:" + cmd["id"])
        h.check_eq((rec.get("status"), rec.get("device")), ("succeeded", dev.id),
                   "the hash %scmd:%s" % (ch.PREFIX, cmd["id"]))

        # Re-sends: each send and each PUBACK is an entry, then the time-out.
        cmd = post_command(n1, dev.id, {"op": "trace-retries"}, retries=1)
        h.check_eq(wait_final(n2, cmd["id"])["status"], "timed_out", "unanswered command")
        got = h.wait_until(lambda: (lambda e: e if len(e) >= 6 else None)(entries()),
                           what="6 stream entries for %s" % cmd["id"])
        h.check_eq([(e.get("status"), e.get("attempts"), e.get("node")) for e in got],
                   [("queued", "0", "n1"), ("sent", "1", "n1"), ("delivered", "1", "n1"),
                    ("sent", "2", "n1"), ("delivered", "2", "n1"), ("timed_out", "2", "n1")],
                   "(status, attempts, node) of a command sent twice, never answered")
    finally:
        stop_devices(dev)


# --------------------------------------------------------------------------
# scripts/device-sim


class DeviceSim:
    """scripts/device-sim in the background, its event log in a temp file."""

    def __init__(self, node, *args):
        self.log_path = tempfile.mktemp(prefix="relaymq-it-sim-", suffix=".jsonl")
        self.proc = subprocess.Popen(
            [sys.executable, SIM, "--host", h.HOST, "--port", str(node.port),
             "--log", self.log_path] + [str(a) for a in args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)

    def events(self, event=None, device=None):
        try:
            with open(self.log_path) as f:
                lines = [json.loads(line) for line in f if line.strip()]
        except OSError:
            return []
        return [e for e in lines if (event is None or e["event"] == event)
                and (device is None or e["device"] == device)]

    def wait_event(self, event, n=1, device=None, timeout=h.WAIT):
        return h.wait_until(lambda: (lambda got: got if len(got) >= n else None)(
            self.events(event, device)), timeout,
            what="%d %r event(s)%s from device-sim" % (n, event,
                                                       " of " + device if device else ""))

    def stop(self):
        """SIGTERM: must exit 0 within a few seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(h.WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("device-sim did not exit within %.0fs of SIGTERM" % h.WAIT)
        err = self.proc.stderr.read().decode("utf-8", "replace")
        h.check(rc == 0, "device-sim exited %r: %s" % (rc, err[-800:]))

    def remove(self):
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


@case
def device_sim_answers_after_ignoring_the_first_copy():
    n1, n2, n3 = CL.nodes
    prefix = h.uid("sim") + "-"
    ids = ["%s%04d" % (prefix, i) for i in (1, 2, 3)]
    watcher = h.Paho(n1.port)
    sim = DeviceSim(n2, "--count", 3, "--prefix", prefix, "--ignore-first", 1,
                    "--telemetry-interval", 0.3)
    try:
        watcher.connect()
        watcher.subscribe("devices/+/telemetry", 1)
        for d in ids:
            sim.wait_event("connected", device=d)
            h.wait_until(lambda: REDIS.hgetall("dev:" + d).get("node") == "n2", interval=0.05,
                         what="dev:%s on n2" % d)
        cmds = {d: post_command(CL.nodes[i], d, {"op": "sim", "i": i}) for i, d in enumerate(ids)}
        for d, cmd in cmds.items():
            done = wait_final(n3, cmd["id"])
            h.check_eq((done["status"], done["attempts"], done["node"]), ("succeeded", 2, "n2"),
                       "command to %s" % d)
            h.check_eq(done["reply"], {"cmd_id": cmd["id"], "result": "ok", "device": d,
                                       "received": dict(cmd["payload"], cmd_id=cmd["id"])},
                       "device-sim's reply")
            got = sim.events("command", d)
            h.check_eq([(e["cmd_id"], e["ignored"]) for e in got],
                       [(cmd["id"], True), (cmd["id"], False)], "device-sim's command log of " + d)
            h.check_eq([e["cmd_id"] for e in sim.events("reply", d)], [cmd["id"]],
                       "device-sim's reply log of " + d)
        # Telemetry from each simulated device reaches an ordinary subscriber.
        seen = {}
        deadline = time.monotonic() + h.WAIT
        while set(seen) < set(ids) and time.monotonic() < deadline:
            try:
                m = watcher.messages.get(timeout=0.5)
            except Exception:  # noqa: BLE001 - queue.Empty
                continue
            body = json.loads(m.payload)
            if body.get("device") in ids:
                h.check_eq(m.topic, "devices/%s/telemetry" % body["device"], "telemetry topic")
                h.check(set(body) == {"device", "ts", "seq", "temp"}, "telemetry %r" % body)
                seen[body["device"]] = body
        h.check_eq(sorted(seen), ids, "devices heard from on their telemetry topic")
        sim.stop()
        for d in ids:
            h.check(sim.events("disconnected", d), "no disconnected event for %s" % d)
        sim.remove()
    finally:
        if sim.proc.poll() is None:
            sim.proc.kill()
            sim.proc.wait()
        ch.stop_quietly(watcher)


@case
def device_sim_fail_mode_and_reconnect_after_a_kick():
    n1, n2, n3 = CL.nodes
    device = h.uid("simf")
    sim = DeviceSim(n3, "--id", device, "--fail", "--telemetry-interval", 0, "--no-clean",
                    "--reply-delay", 0.2)
    try:
        for round_ in (1, 2):
            sim.wait_event("connected", n=round_)
            h.wait_until(lambda: REDIS.hgetall("dev:" + device).get("node") == "n3",
                         interval=0.05, what="dev:%s on n3" % device)
            cmd = post_command(n1, device, {"op": "break", "round": round_})
            done = wait_final(n2, cmd["id"])
            h.check_eq((done["status"], done["attempts"], done["reply"]),
                       ("failed", 1, {"cmd_id": cmd["id"], "error": "simulated failure"}),
                       "a --fail device's answer (connection %d)" % round_)
            if round_ == 1:
                # Kicked through the admin API: device-sim reconnects on its own.
                expect(call(n2, "DELETE", "/api/v1/clients/" + q(device)), 200, what="kick")
                sim.wait_event("disconnected")
        sim.stop()
        h.check(sim.events("disconnected"), "a disconnected event on SIGTERM")
        sim.remove()
    finally:
        if sim.proc.poll() is None:
            sim.proc.kill()
            sim.proc.wait()


# --------------------------------------------------------------------------
# standalone


@case
def standalone_node_serves_the_same_api():
    port = h.free_port()
    b = h.Broker(http="%s:%d" % (h.HOST, port), node_id="solo", **NODE_OPTIONS)
    b.http_port = port
    with b:
        dev = Device(ignore_first=1).connect(b, registered=False)
        away = Device()
        try:
            cmd = post_command(b, dev.id, {"op": "solo"})
            h.check_eq((cmd["accepted_by"], cmd["interval_ms"]), ("solo", 1000), "accepted here")
            done = wait_final(b, cmd["id"])
            h.check_eq((done["status"], done["attempts"], done["node"], done["reply"]),
                       ("succeeded", 2, "solo", dev.replies[0]), "a command answered on copy 2")
            copies = dev.wait_copies(2)
            check_copy(copies[0], cmd, "copy 1")
            check_gaps(copies, "standalone re-send")
            queued = post_command(b, away.id, {"op": "later"})
            h.check_eq((queued["status"], queued["attempts"]), ("queued", 0), "offline device")
            away.connect(b, registered=False)
            done = wait_final(b, queued["id"])
            h.check_eq((done["status"], done["attempts"]), ("succeeded", 1), "delivered on connect")
            timed = post_command(b, dev.id, {"op": "x"}, retries=0, interval="1s",
                                 idempotency_key="k1")
            same = post_command(b, dev.id, {"op": "y"}, status=200, idempotency_key="k1")
            h.check_eq(same["id"], timed["id"], "idempotent re-post")
            listed = expect(call(b, "GET", dev_path(dev.id) + "?limit=1"), 200, what="list")
            h.check_eq([c["id"] for c in listed["commands"]], [timed["id"]], "newest first")
            h.check(isinstance(listed["next"], str), "next cursor %r" % listed["next"])
            page2 = expect(call(b, "GET", dev_path(dev.id) + "?limit=1&cursor="
                                + q(listed["next"])), 200, what="page 2")
            h.check_eq([c["id"] for c in page2["commands"]], [cmd["id"]], "page 2")
            expect(call(b, "GET", cmd_path("000000000000000000000000")), 404, "command_not_found",
                   "unknown command")
            expect(call(b, "POST", dev_path(dev.id), "nope"), 400, "bad_json", "not JSON")
            wait_final(b, timed["id"])
        finally:
            stop_devices(dev, away)


# --------------------------------------------------------------------------
# runner

def bind(redis, events, cluster):
    global REDIS, EV, CL
    REDIS, EV, CL = redis, events, cluster
    cmh.bind(redis, events, cluster)


def main():
    return ch.run_suite(cases, ("every_node_exits_0_on_sigterm", stop_all), bind,
                        **NODE_OPTIONS)


if __name__ == "__main__":
    sys.exit(main())
