#!/usr/bin/env python3
"""Users kept in Redis (--users-redis): every node agrees on them.

A real redis-server and two nodes, both --users-redis with anonymous access
off; n1 also has a password file with one user of its own. Hashes are made
with `relaymq passwd -H` and written with redis-cli, as the docs say.

  user_in_redis_connects_on_both_nodes_and_traffic_crosses
  wrong_unknown_and_missing_passwords_get_0x04_on_both_nodes
  password_file_user_still_works_and_is_not_looked_up
  a_new_hash_takes_effect_at_once_and_a_deleted_user_is_refused
  malformed_hash_is_refused_with_a_log_line
  anonymous_client_gets_0x05
  redis_down_gives_0x03_then_users_work_again
  counters_moved_exactly_and_no_password_was_logged
  users_redis_needs_redis (a standalone node refuses the option)
"""
import os
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import cluster_harness as ch  # noqa: E402
import routing_harness as rh  # noqa: E402

KEY = rh.KEY
PASSWORDS = {"alice": "al1ce-pw", "bob": "b0b-pw", "filer": "f1ler-pw"}
LOGGED_SECRETS = list(PASSWORDS.values()) + ["wrong-pw-7", "changed-pw-9"]
FOUND = 'relaymq_auth_redis_lookups_total{result="found"}'
NOT_FOUND = 'relaymq_auth_redis_lookups_total{result="not_found"}'
ERRORS = 'relaymq_auth_redis_lookups_total{result="error"}'
AUTH_FAILURES = "relaymq_auth_failures_total"

REDIS = None
CL = None
PWFILE = None
START = {}
cases, case = ch.case_list()


def make_hash(password):
    r = subprocess.run([h.relaymq_bin(), "passwd", "-H"], input=password + "\n",
                       capture_output=True, text=True, timeout=h.WAIT)
    h.check_eq(r.returncode, 0, "relaymq passwd -H exit status (%s)" % r.stderr.strip())
    out = r.stdout.strip()
    h.check(out.startswith("$7$101$") and "\n" not in out, "passwd -H printed %r" % out)
    return out


def set_user(name, password):
    h.check_eq(REDIS.cli("SET", ch.PREFIX + "users:" + name, make_hash(password)), "OK",
               "SET users:" + name)


def connect(node, user=None, password=None, rc=0):
    c = h.RawClient(node.port)
    try:
        c.connect(h.uid("u"), rc=rc, username=user, password=password)
    except Exception:
        c.close()
        raise
    if rc != 0:
        c.wait_closed()
        c.close()
        return None
    return c


def metric(node, name):
    return rh.metric(node, name)


@case
def user_in_redis_connects_on_both_nodes_and_traffic_crosses():
    rh.REDIS, rh.CL = REDIS, CL
    for n in CL.nodes:
        START[n.node_id] = {m: metric(n, m) for m in (FOUND, NOT_FOUND, ERRORS, AUTH_FAILURES)}
    set_user("alice", PASSWORDS["alice"])
    set_user("bob", PASSWORDS["bob"])
    n1, n2 = CL.node("n1"), CL.node("n2")
    sub = connect(n2, "bob", PASSWORDS["bob"])
    pub = connect(n1, "alice", PASSWORDS["alice"])
    try:
        topic = h.uid("usr") + "/t"
        h.check_eq(sub.subscribe([(topic, 1)]), [1], "SUBACK on n2")
        rh.wait_route("n2", topic)
        rh.wait_replicas()
        pub.publish(topic, b"hello", 1)
        got = sub.recv_publish()
        h.check_eq((got.topic, got.payload), (topic, b"hello"), "message from n1 to n2")
    finally:
        ch.stop_quietly(sub, pub)
    # 2 lookups found so far (bob on n2, alice on n1)


@case
def wrong_unknown_and_missing_passwords_get_0x04_on_both_nodes():
    for n in CL.nodes:
        connect(n, "alice", "wrong-pw-7", rc=4)
        connect(n, "nobody", "whatever", rc=4)
        connect(n, "alice", None, rc=4)
    # per node: 2 found (wrong, missing password), 1 not found; 3 auth failures


@case
def password_file_user_still_works_and_is_not_looked_up():
    n1 = CL.node("n1")
    before = metric(n1, FOUND) + metric(n1, NOT_FOUND)
    ch.stop_quietly(connect(n1, "filer", PASSWORDS["filer"]))
    connect(n1, "filer", "wrong-pw-7", rc=4)  # the file decides: no fall-through
    h.check_eq(metric(n1, FOUND) + metric(n1, NOT_FOUND), before,
               "Redis lookups for a user of the password file")
    # n2 has no password file: there the name is just unknown in Redis
    connect(CL.node("n2"), "filer", PASSWORDS["filer"], rc=4)
    # n1: 1 auth failure; n2: 1 not found, 1 auth failure


@case
def a_new_hash_takes_effect_at_once_and_a_deleted_user_is_refused():
    n1, n2 = CL.node("n1"), CL.node("n2")
    set_user("alice", "changed-pw-9")
    connect(n1, "alice", PASSWORDS["alice"], rc=4)
    ch.stop_quietly(connect(n2, "alice", "changed-pw-9"))
    REDIS.cli("DEL", ch.PREFIX + "users:alice")
    connect(n1, "alice", "changed-pw-9", rc=4)
    connect(n2, "alice", "changed-pw-9", rc=4)
    # n1: 1 found (old password, refused), 1 not found; 2 auth failures
    # n2: 1 found (accepted), 1 not found; 1 auth failure


@case
def malformed_hash_is_refused_with_a_log_line():
    n1 = CL.node("n1")
    REDIS.cli("SET", ch.PREFIX + "users:mal", "$6$not-what-we-store")
    connect(n1, "mal", "anything", rc=4)
    h.wait_until(lambda: n1.log_has("user 'mal': the stored password hash is malformed"),
                 h.WAIT, what="a log line naming the malformed hash")
    # n1: 1 found, 1 auth failure


@case
def anonymous_client_gets_0x05():
    for n in CL.nodes:
        connect(n, rc=5)
    # per node: 1 auth failure, no lookup


@case
def redis_down_gives_0x03_then_users_work_again():
    n1, n2 = CL.node("n1"), CL.node("n2")
    REDIS.kill()
    try:
        for n in (n1, n2):
            h.wait_until(lambda n=n: n.log_has("connection lost"), h.WAIT,
                         what="%s to see Redis go" % n.node_id)
            connect(n, "bob", PASSWORDS["bob"], rc=3)
        ch.stop_quietly(connect(n1, "filer", PASSWORDS["filer"]))  # the file needs no Redis
    finally:
        REDIS.start()
    set_user("bob", PASSWORDS["bob"])  # a restarted Redis is empty here

    def back(n):
        c = h.RawClient(n.port)
        try:
            c.connect(h.uid("u"), username="bob", password=PASSWORDS["bob"])
            return True
        except AssertionError:  # 0x03 until the node's Redis link is back
            return False
        finally:
            c.close()
    for n in (n1, n2):
        h.wait_until(lambda n=n: back(n), 20, interval=0.5,
                     what="bob accepted on %s once Redis is back" % n.node_id)
    # per node: errors (0x03, not auth failures) until the link was back, then 1 found


def counts(node_id):
    """The exact counter moves the cases above make, per node."""
    if node_id == "n1":
        return {FOUND: 1 + 2 + 1 + 1, NOT_FOUND: 1 + 1, AUTH_FAILURES: 3 + 1 + 2 + 1 + 1}
    return {FOUND: 1 + 2 + 1, NOT_FOUND: 1 + 1 + 1, AUTH_FAILURES: 3 + 1 + 1 + 1}


@case
def counters_moved_exactly_and_no_password_was_logged():
    for n in CL.nodes:
        want = counts(n.node_id)
        moved = {m: metric(n, m) - START[n.node_id][m]
                 for m in (FOUND, NOT_FOUND, ERRORS, AUTH_FAILURES)}
        # +1 found: bob once Redis was back; errors: one per attempt while it was not
        h.check_eq(moved[FOUND], want[FOUND] + 1, "%s on %s" % (FOUND, n.node_id))
        h.check_eq(moved[NOT_FOUND], want[NOT_FOUND], "%s on %s" % (NOT_FOUND, n.node_id))
        h.check_eq(moved[AUTH_FAILURES], want[AUTH_FAILURES],
                   "%s on %s" % (AUTH_FAILURES, n.node_id))
        h.check(moved[ERRORS] >= 1, "%s on %s did not move" % (ERRORS, n.node_id))
        text = n.log_text()
        for secret in LOGGED_SECRETS:
            h.check(secret not in text, "a password appears in %s's log" % n.node_id)


@case
def users_redis_needs_redis():
    r = subprocess.run([h.relaymq_bin(), "--listen", "tcp://127.0.0.1:%d" % h.free_port(),
                        "--users-redis", "true"],
                       capture_output=True, text=True, timeout=h.WAIT)
    h.check_eq(r.returncode, 2, "exit status without --redis")
    h.check("users-redis: needs --redis" in r.stderr, "error: %r" % r.stderr)


def stop_all():
    ch.stop_cluster(CL)


def bind(redis, events, cluster):
    global REDIS, CL
    REDIS, CL = redis, cluster
    cluster.nodes[0]._init_args[1]["password_file"] = PWFILE
    cluster.nodes[0].options["password_file"] = PWFILE


def main():
    global PWFILE
    tmp = tempfile.mkdtemp(prefix="relaymq-it-users-")
    PWFILE = os.path.join(tmp, "passwd")
    r = subprocess.run([h.relaymq_bin(), "passwd", "-c", "-b", PWFILE, "filer",
                        PASSWORDS["filer"]], capture_output=True, text=True, timeout=h.WAIT)
    if r.returncode != 0:
        print("FAIL relaymq passwd -c: %s" % r.stderr, flush=True)
        return 1
    return ch.run_suite(cases, ("every_node_exits_0_on_sigterm", stop_all), bind, nodes=2,
                        api_key=KEY, users_redis="true", allow_anonymous="false")


if __name__ == "__main__":
    sys.exit(main())
