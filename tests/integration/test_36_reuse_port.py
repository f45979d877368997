#!/usr/bin/env python3
"""Several nodes on one host sharing their MQTT port (--reuse-port,
docs/cluster.md "Several nodes on one host").

A real redis-server and two nodes n1, n2 started with the same --listen
port and --reuse-port true.

  both_nodes_take_connections_on_the_shared_port
      40 clients connect to the one port; Redis (dev:{id}) shows that both
      nodes hold some of them (the kernel spreads connections: all 40 on
      one node would happen by chance once in 5 * 10^11 runs).
  messages_flow_between_and_within_the_processes
      a subscriber on each node and publishers on each node: 200 QoS 1
      messages from each publisher reach both subscribers once each, in
      order, whichever node each client landed on.
  a_node_without_reuse_port_cannot_take_the_port
      a third node on the same port without --reuse-port exits with status
      1 and says why ("cannot listen on ...: Address already in use").
"""
import os
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import cluster_harness as ch  # noqa: E402
import routing_harness as rh  # noqa: E402

PORT = h.free_port()
REDIS = None
CL = None
cases, case = ch.case_list()


def node_of(client_id):
    """The node whose claim dev:{client_id} holds, once there is one."""
    found = {}

    def claimed():
        found.update(REDIS.hgetall("dev:" + client_id))
        return found.get("node")
    h.wait_until(claimed, what="dev:%s to name a node" % client_id)
    return found["node"]


def client_on(node_id, tries=60):
    """A connected RawClient that the kernel placed on node_id (clients
    placed on the other node are disconnected and tried again)."""
    for _ in range(tries):
        c = h.RawClient(PORT)
        cid = h.uid("rp")
        c.connect(cid)
        if node_of(cid) == node_id:
            return c
        c.disconnect()
    raise AssertionError("no client landed on %s in %d tries" % (node_id, tries))


@case
def both_nodes_take_connections_on_the_shared_port():
    # n2 may still be starting when n1 already answers on the port.
    h.wait_until(lambda: REDIS.exists("node:n1") and REDIS.exists("node:n2"),
                 what="both nodes registered")
    clients, placed = [], {}
    for _ in range(40):
        c = h.RawClient(PORT)
        cid = h.uid("spread")
        c.connect(cid)
        clients.append(c)
        placed[cid] = node_of(cid)
    for c in clients:
        c.disconnect()
    counts = {n: list(placed.values()).count(n) for n in ("n1", "n2")}
    h.check(counts["n1"] > 0 and counts["n2"] > 0 and sum(counts.values()) == 40,
            "connections spread over both nodes: %r" % counts)
    return "n1 %d, n2 %d" % (counts["n1"], counts["n2"])


@case
def messages_flow_between_and_within_the_processes():
    topic = "rp/" + h.uid()
    subs = [client_on("n1"), client_on("n2")]
    for s in subs:
        h.check_eq(s.subscribe([(topic, 1)]), [1], "SUBACK")
    rh.wait_replicas()  # each node knows the other's subscriber
    pubs = [client_on("n1"), client_on("n2")]
    n = 200
    for i, p in enumerate(pubs):
        for k in range(n):
            p.publish(topic, b"%d:%d" % (i, k), qos=1, pid=k + 1)
    for s in subs:
        seen = {0: [], 1: []}
        while len(seen[0]) + len(seen[1]) < 2 * n:
            i, k = (int(x) for x in s.recv_publish().payload.split(b":"))
            seen[i].append(k)
        for i in (0, 1):
            h.check_eq(seen[i], list(range(n)), "publisher %d's messages, once each, in order" % i)
    for c in subs + pubs:
        c.disconnect()


@case
def a_node_without_reuse_port_cannot_take_the_port():
    n3 = ch.Node("n3", REDIS, port=PORT)
    r = subprocess.run(n3.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, env=n3.env or h.broker_env(), timeout=h.WAIT)
    out = r.stdout.decode("utf-8", "replace")
    h.check_eq(r.returncode, 1, "exit status of a node on a taken port (output: %s)" % out[-300:])
    h.check("cannot listen on" in out and "Address already in use" in out,
            "the reason is logged: %s" % out[-300:])


def stop_all():
    ch.stop_cluster(CL)


def bind(redis, events, cluster):
    global REDIS, CL
    REDIS, CL = redis, cluster
    rh.bind(redis, events, cluster)


def main():
    return ch.run_suite(cases, ("every_node_exits_0_on_sigterm", stop_all), bind, nodes=2,
                        port=PORT, reuse_port="true", api_key=rh.KEY)


if __name__ == "__main__":
    sys.exit(main())
