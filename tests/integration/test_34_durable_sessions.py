#!/usr/bin/env python3
"""Durable sessions (--durable-sessions): a node killed with kill -9 loses
no QoS 1 message for the persistent sessions whose clients reconnect.

A real redis-server and two nodes n1, n2, every node with
--durable-sessions; each case starts its own victim node and kills it.

  unacked_and_queued_messages_survive_kill9
      a connected persistent subscriber on the victim holds 20 messages
      unacknowledged and 10 queued; Redis tracks exactly what it still
      owes as acknowledgements come; after kill -9 the client reconnects
      to n2 and gets exactly the 25 it had not acknowledged, in order.
  node_killed_under_qos1_load_loses_nothing_for_sessions_that_reconnect
      a publisher on n1 sends 2,000 QoS 1 messages while two persistent
      subscribers on the victim receive them; the victim is killed part
      way; one subscriber reconnects to n2 at once (its session restored
      from Redis), the other after the victim was reaped (its session
      adopted by a survivor); both end up with every message (duplicates
      allowed: QoS 1), and a clean subscriber on n2 gets each once, in
      order.
  restarted_node_keeps_new_sessions_survivors_adopt_old_ones
      a node killed and restarted at once: a survivor adopts the offline
      session of its previous life; its announcement replayed once the new
      life holds a session of its own adopts another old-life session and
      leaves the new life's where it is.
  durable_sessions_need_redis
      a standalone node refuses the option with a clear error.
"""
import os
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import cluster_harness as ch  # noqa: E402
import routing_harness as rh  # noqa: E402

KEY = rh.KEY
TTL_S = 3.0
REAP_SLACK_S = 12.0
RESCUED_OUT = 'relaymq_forward_rescued_total{direction="out"}'

REDIS = None
CL = None
cases, case = ch.case_list()


def victim(name):
    return ch.Node(name, REDIS, api_key=KEY, durable_sessions="true").start()


def queue_len(cid):
    return int(REDIS.cli("LLEN", ch.PREFIX + "sess:" + cid + ":queue"))


def wait_queue_len(cid, n, what):
    h.wait_until(lambda: queue_len(cid) == n, h.WAIT, interval=0.05,
                 what="%s: %ssess:%s:queue holds %d (has %d)"
                 % (what, ch.PREFIX, cid, n, queue_len(cid)))


def wait_reaped(node_id):
    h.wait_until(lambda: not REDIS.exists("routes:" + node_id)
                 and node_id not in REDIS.smembers("nodes"),
                 TTL_S + REAP_SLACK_S, interval=0.2, what="node %s reaped" % node_id)


@case
def unacked_and_queued_messages_survive_kill9():
    rh.REDIS, rh.CL = REDIS, CL
    n1, n2 = CL.node("n1"), CL.node("n2")
    v = victim("v1")
    tag = h.uid("dur")
    topic = tag + "/t"
    cid = h.uid("keep")
    sub = pub = again = None
    try:
        sub = h.RawClient(v.port)
        h.check(not sub.connect(cid, clean=False), "a new session is not present")
        h.check_eq(sub.subscribe([(tag + "/#", 1)]), [1], "SUBACK")
        rh.wait_route("v1", tag + "/#")
        rh.wait_replicas(rh.live_nodes() + [v])
        pub = rh.raw_publisher(n1)
        rh.publish_all(pub, [(topic, "m-%d" % i) for i in range(30)], 1)
        # The window is 20 (--max-inflight): 20 arrive, none acknowledged.
        first = [sub.recv_publish(ack=False) for _ in range(20)]
        h.check_eq([p.payload for p in first], [b"m-%d" % i for i in range(20)],
                   "the first 20 deliveries")
        wait_queue_len(cid, 30, "every message owed, sent or queued")
        for p in first[:5]:
            sub.send(h.ack_packet(h.PUBACK, p.pid))
        # Each PUBACK takes one out of the copy and lets one more out.
        more = [sub.recv_publish(ack=False) for _ in range(5)]
        h.check_eq([p.payload for p in more], [b"m-%d" % i for i in range(20, 25)],
                   "deliveries after 5 acknowledgements")
        wait_queue_len(cid, 25, "after 5 acknowledgements")
        v.kill9()
        sub.close()
        again = h.Paho(n2.port, client_id=cid, clean=False)
        h.check(again.connect(), "CONNACK on n2 does not say session present")
        got = again.take(25, 30)
        h.check_eq([m.payload for m in got], [b"m-%d" % i for i in range(5, 30)],
                   "the 25 messages not acknowledged before the kill, in order")
        again.expect_nothing(what="nothing acknowledged comes back")
        h.check_eq(REDIS.hgetall("sess:" + cid).get("node"), "n2", "session holder")
        wait_queue_len(cid, 0, "all acknowledged on n2")
        wait_reaped("v1")
        v.remove_files()
        return "25 of 30 re-delivered on n2"
    finally:
        ch.stop_quietly(sub, pub, again)
        v.kill()


class Collector:
    """A persistent QoS 1 subscriber whose connections come and go; it
    keeps every payload received over all of them."""

    def __init__(self, cid, filt):
        self.cid, self.filt = cid, filt
        self.payloads = []
        self.paho = None

    def attach(self, node, new=False):
        self.harvest()
        self.paho = h.Paho(node.port, client_id=self.cid, clean=False)
        present = self.paho.connect()
        if new:
            h.check_eq(self.paho.subscribe(self.filt, 1), [1], "SUBACK for %s" % self.cid)
        else:
            h.check(present, "%s: CONNACK on %s does not say session present"
                    % (self.cid, node.node_id))
        return self

    def harvest(self):
        if self.paho is not None:
            self.payloads += [m.payload for m in self.paho.drain(0)]

    def seqs(self):
        self.harvest()
        return [int(p.split(b"-")[1]) for p in self.payloads]


@case
def node_killed_under_qos1_load_loses_nothing_for_sessions_that_reconnect():
    rh.REDIS, rh.CL = REDIS, CL
    n1, n2 = CL.node("n1"), CL.node("n2")
    v = victim("v2")
    tag = h.uid("load")
    topic = tag + "/t"
    count, burst = 2000, 50
    s1 = Collector(h.uid("s1"), tag + "/#")
    s2 = Collector(h.uid("s2"), tag + "/#")
    clean = pub = None
    done = threading.Event()
    failure = []
    try:
        s1.attach(v, new=True)
        s2.attach(v, new=True)
        clean = rh.subscriber(n2, tag + "/#", 1)
        rh.wait_route("v2", tag + "/#")
        rh.wait_route("n2", tag + "/#")
        rh.wait_replicas(rh.live_nodes() + [v])
        pub = rh.raw_publisher(n1)

        def publish():
            try:
                for start in range(0, count, burst):
                    rh.publish_all(pub, [(topic, "m-%d" % i)
                                          for i in range(start, start + burst)], 1)
                    time.sleep(0.2)  # about 8 s in all: past the reaping
            except Exception as e:  # noqa: BLE001 - reported by the case
                failure.append(e)
            finally:
                done.set()
        thread = threading.Thread(target=publish, daemon=True)
        thread.start()
        h.wait_until(lambda: len(s1.seqs()) >= 300, 30, interval=0.02,
                     what="300 messages at s1 before the kill")
        v.kill9()
        killed_at = len(s1.seqs())
        s1.attach(n2)  # at once: the holder is dead, the copy in Redis is used
        wait_reaped("v2")
        time.sleep(0.5)
        s2.attach(n2)  # after the reaping: a survivor adopted it meanwhile
        thread.join(120)
        h.check(done.is_set() and not failure, "publisher: %r" % (failure or "still running"))
        for s in (s1, s2):
            try:
                h.wait_until(lambda: set(s.seqs()) >= set(range(count)), 30, interval=0.1,
                             what="%s to have every message" % s.cid)
            except AssertionError as e:
                missing = sorted(set(range(count)) - set(s.seqs()))
                raise AssertionError("%s: %d missing: %s" % (e, len(missing), missing[:40]))
        rh.check_sequence([int(m.payload.split(b"-")[1]) for m in clean.take(count, 30)],
                           count, "clean subscriber on n2")
        rh.no_more([clean])
        dups = [len(s.seqs()) - count for s in (s1, s2)]
        rescued = rh.metric(n1, RESCUED_OUT)
        v.remove_files()
        return ("killed after %d; duplicates s1 %d, s2 %d; %d rescued by n1"
                % (killed_at, dups[0], dups[1], rescued))
    finally:
        for s in (s1, s2):
            ch.stop_quietly(s.paho)
        ch.stop_quietly(clean, pub)
        v.kill()


@case
def restarted_node_keeps_new_sessions_survivors_adopt_old_ones():
    """A node that restarts reaps its previous life and announces it
    ("!\tv3\t{epoch}"); the survivors adopt the offline sessions that life
    left, never one its new life holds. (They once took every session in
    the node's set, including one a client had opened on the new life the
    moment it came up.) The race itself cannot be timed from here, so the
    case replays the announcement once the new life holds a session."""
    v = victim("v3")
    old_cid, new_cid, fake_cid = h.uid("old"), h.uid("new"), h.uid("gone")
    c = None
    try:
        c = h.RawClient(v.port)
        h.check(not c.connect(old_cid, clean=False), "a new session is not present")
        h.check_eq(c.subscribe([(h.uid("old") + "/#", 1)]), [1], "SUBACK")
        c.disconnect()
        h.wait_until(lambda: REDIS.hgetall("sess:" + old_cid).get("online") == "0",
                     interval=0.05, what="sess:%s offline on v3" % old_cid)
        old_life = REDIS.hgetall("sess:" + old_cid).get("life")
        h.check(old_life, "sess:%s names its holder's life" % old_cid)
        v.kill9()
        v = v.restarted().start()
        h.wait_until(lambda: REDIS.hgetall("sess:" + old_cid).get("node") in ("n1", "n2"),
                     h.WAIT, interval=0.05, what="the old life's session adopted by a survivor")
        # The new life holds a persistent session of its own.
        c = h.RawClient(v.port)
        h.check(not c.connect(new_cid, clean=False), "a new session is not present")
        h.check_eq(c.subscribe([(h.uid("new") + "/#", 1)]), [1], "SUBACK")
        c.disconnect()
        new_life = REDIS.hgetall("node:v3").get("epoch")
        h.wait_until(lambda: REDIS.hgetall("sess:" + new_cid).get("life") == new_life,
                     interval=0.05, what="sess:%s written by v3's new life" % new_cid)
        h.check(new_life != old_life, "a restart is a new life (%s)" % new_life)
        # One more session the old life left, then the announcement again.
        REDIS.cli("HSET", ch.PREFIX + "sess:" + fake_cid, "node", "v3", "life", old_life,
                  "online", "0", "updated_ms", "1")
        REDIS.cli("SADD", ch.PREFIX + "node:v3:sessions", fake_cid)
        REDIS.cli("PUBLISH", ch.PREFIX + "routes", "!\tv3\t" + new_life)
        h.wait_until(lambda: REDIS.hgetall("sess:" + fake_cid).get("node") in ("n1", "n2"),
                     h.WAIT, interval=0.05, what="the old life's other session adopted")
        h.check_eq(REDIS.hgetall("sess:" + new_cid).get("node"), "v3",
                   "holder of the new life's session")
        members = REDIS.smembers("node:v3:sessions")
        h.check(new_cid in members and old_cid not in members and fake_cid not in members,
                "node:v3:sessions holds the new life's session only: %r" % members)
        holder = REDIS.hgetall("sess:" + old_cid).get("node")
        v.kill()
        wait_reaped("v3")
        v.remove_files()
        return "the old life's sessions adopted (%s), the new one's kept" % holder
    finally:
        ch.stop_quietly(c)
        v.kill()


@case
def durable_sessions_need_redis():
    r = subprocess.run([h.relaymq_bin(), "--listen", "tcp://127.0.0.1:%d" % h.free_port(),
                        "--durable-sessions", "true"],
                       capture_output=True, text=True, timeout=h.WAIT)
    h.check_eq(r.returncode, 2, "exit status without --redis")
    h.check("durable-sessions: needs --redis" in r.stderr, "error: %r" % r.stderr)


def stop_all():
    ch.stop_cluster(CL)


def bind(redis, events, cluster):
    global REDIS, CL
    REDIS, CL = redis, cluster


def main():
    return ch.run_suite(cases, ("every_node_exits_0_on_sigterm", stop_all), bind, nodes=2,
                        api_key=KEY, durable_sessions="true")


if __name__ == "__main__":
    sys.exit(main())
