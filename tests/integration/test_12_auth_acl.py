"""Authentication by password file (relaymq passwd and mosquitto_passwd
files), anonymous access, ACLs (per-user rules, %c/%u patterns, deny by
default, SUBACK 0x80, denied publishes acknowledged but dropped), and bad
files stopping start-up with file:line."""
import os
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

T = h.Tests()
TMP = tempfile.mkdtemp(prefix="relaymq-it-auth-")


def tmp(name, text=None):
    path = os.path.join(TMP, name)
    if text is not None:
        with open(path, "w") as f:
            f.write(text)
    return path


def passwd(*args, stdin=None):
    return subprocess.run([h.relaymq_bin(), "passwd"] + list(args), input=stdin,
                          capture_output=True, text=True, timeout=30, env=h.broker_env())


def make_pwfile(name):
    """alice/wonder (relaymq passwd -c -b), bob/builder (stdin), carol/c4
    (mosquitto_passwd) in one file."""
    path = tmp(name)
    r = passwd("-c", "-b", path, "alice", "wonder")
    h.check_eq(r.returncode, 0, "relaymq passwd -c -b: %s" % r.stderr)
    r = passwd(path, "bob", stdin="builder\n")
    h.check_eq(r.returncode, 0, "relaymq passwd from stdin: %s" % r.stderr)
    subprocess.run(["mosquitto_passwd", "-b", path, "carol", "c4"], check=True, timeout=30)
    h.check_eq(os.stat(path).st_mode & 0o777, 0o600, "password file mode")
    return path


def connack(port, **kw):
    c = h.RawClient(port)
    c.send(h.connect_packet(h.uid("auth"), **kw))
    code = c.expect(h.CONNACK).body[1]
    c.close()
    return code


@T.case
def relaymq_passwd_and_mosquitto_passwd_files_accepted(b):
    h.relaymq_only("--password-file")
    pw = make_pwfile("pw1")
    with h.Broker(password_file=pw, allow_anonymous=False) as nb:
        for user, password in (("alice", "wonder"), ("bob", "builder"), ("carol", "c4")):
            h.check_eq(connack(nb.port, username=user, password=password), 0, "CONNACK " + user)
        # A password file made by relaymq passwd works with mosquitto_passwd too.
        subprocess.run(["mosquitto_passwd", "-b", pw, "alice", "again"], check=True, timeout=30)


@T.case
def bad_credentials_get_0x04_and_are_counted(b):
    h.relaymq_only("--password-file")
    pw = make_pwfile("pw2")
    with h.Broker(password_file=pw, allow_anonymous=True) as nb:
        m = nb.metrics()  # anonymous reader: allowed here
        before = m.fresh("auth_failures")
        h.check_eq(connack(nb.port, username="alice", password="wrong"), 4, "wrong password")
        h.check_eq(connack(nb.port, username="nobody", password="wonder"), 4, "unknown user")
        h.check_eq(connack(nb.port, username="alice"), 4, "no password")
        h.check_eq(connack(nb.port), 0, "anonymous with allow-anonymous true")
        m.expect_increase("auth_failures", before, by=3)
        h.check("wonder" not in nb.log_text() and "wrong" not in nb.log_text().replace(
            "wrong password", ""), "a password appears in the log")


@T.case
def anonymous_refused_0x05_without_allow_anonymous(b):
    h.relaymq_only("--password-file")
    pw = make_pwfile("pw3")
    with h.Broker(password_file=pw, allow_anonymous=False) as nb:
        h.check_eq(connack(nb.port), 5, "anonymous with allow-anonymous false")
        h.check_eq(connack(nb.port, username="bob", password="builder"), 0, "bob")


@T.case
def passwd_delete_removes_the_user(b):
    h.relaymq_only("relaymq passwd")
    pw = make_pwfile("pw4")
    r = passwd("-D", pw, "bob")
    h.check_eq(r.returncode, 0, "passwd -D: %s" % r.stderr)
    r = passwd("-D", pw, "bob")
    h.check(r.returncode != 0 and "not found" in r.stderr, "second -D: %r" % r.stderr)
    with h.Broker(password_file=pw, allow_anonymous=False) as nb:
        h.check_eq(connack(nb.port, username="bob", password="builder"), 4, "deleted bob")
        h.check_eq(connack(nb.port, username="alice", password="wonder"), 0, "alice kept")


ACL = """# anonymous clients: the metrics reader only
topic read $SYS/#

user alice
topic readwrite alice/#
topic read shared/#
topic read clients/#
topic write needs/will

user bob
topic write shared/news

pattern readwrite devices/%u/#
pattern write clients/%c/out
"""


def acl_broker():
    return h.Broker(password_file=make_pwfile("pw-acl"), acl_file=tmp("acl", ACL),
                    allow_anonymous=True)


def user(port, name, client_id=None):
    password = {"alice": "wonder", "bob": "builder", "carol": "c4"}[name]
    return h.raw_connected(port, client_id, username=name, password=password)


@T.case
def acl_subscribe_denied_filter_gets_0x80_allowed_one_granted(b):
    h.relaymq_only("--acl-file")
    with acl_broker() as nb:
        m = nb.metrics()
        before = m.fresh("acl_denied")
        a = user(nb.port, "alice")
        codes = a.subscribe([("alice/x", 1), ("bob/x", 1), ("devices/alice/#", 2),
                             ("devices/bob/#", 0), ("shared/#", 1), ("#", 0)])
        h.check_eq(codes, [1, 0x80, 2, 0x80, 1, 0x80], "SUBACK codes")
        m.expect_increase("acl_denied", before, by=3)
        h.check("denied by the ACL" in nb.log_text(), "denial not logged")
        a.disconnect()


@T.case
def acl_denied_publish_acknowledged_dropped_and_counted(b):
    h.relaymq_only("--acl-file")
    with acl_broker() as nb:
        m = nb.metrics()
        a = user(nb.port, "alice")
        h.check_eq(a.subscribe([("shared/#", 1), ("clients/#", 1)]), [1, 1], "SUBACK")
        bob = user(nb.port, "bob", client_id="bobdev")
        before = m.fresh("acl_denied")
        bob.publish("shared/news", b"ok", qos=1)
        p = a.recv_publish()
        h.check_eq((p.topic, p.payload), ("shared/news", b"ok"), "allowed publish")
        # Denied: still PUBACK / PUBREC+PUBCOMP (RawClient.publish checks), never delivered.
        bob.publish("shared/other", b"no", qos=1, pid=2)
        bob.publish("shared/other", b"no", qos=2, pid=3)
        bob.publish("shared/other", b"no", qos=0)
        bob.publish("clients/bobdev/out", b"mine", qos=1, pid=4)  # %c pattern
        p = a.recv_publish()
        h.check_eq((p.topic, p.payload), ("clients/bobdev/out", b"mine"), "pattern %c publish")
        bob.publish("clients/other/out", b"no", qos=1, pid=5)
        a.expect_nothing(what="denied publishes")
        m.expect_increase("acl_denied", before, by=4)
        # Anonymous clients are denied by default (no rules for them but $SYS).
        anon = h.raw_connected(nb.port)
        h.check_eq(anon.subscribe([("shared/#", 0), ("$SYS/broker/metrics/+", 0)]),
                   [0x80, 0], "anonymous SUBACK")
        anon.publish("shared/news", b"anon", qos=1)
        a.expect_nothing(what="anonymous publish")
        for c in (a, bob, anon):
            c.disconnect()


@T.case
def acl_pattern_username_substitution(b):
    h.relaymq_only("--acl-file")
    with acl_broker() as nb:
        carol = user(nb.port, "carol")  # no user section: patterns only
        h.check_eq(carol.subscribe([("devices/carol/#", 1), ("devices/+/x", 1)]), [1, 0x80],
                   "carol SUBACK")
        alice = user(nb.port, "alice")
        alice.publish("devices/carol/cmd", b"go", qos=1)  # alice may not write there
        alice.publish("devices/alice/cmd", b"x", qos=1)
        carol.expect_nothing(what="alice writing into carol's devices/")
        carol.publish("devices/carol/t", b"self", qos=1)
        p = carol.recv_publish()
        h.check_eq((p.topic, p.payload), ("devices/carol/t", b"self"), "own pattern tree")
        for c in (alice, carol):
            c.disconnect()


@T.case
def acl_denied_will_topic_refused_0x05(b):
    h.relaymq_only("--acl-file")
    with acl_broker() as nb:
        h.check_eq(connack(nb.port, username="bob", password="builder",
                           will=("alice/fake", b"x", 0, False)), 5, "will into alice/")
        h.check_eq(connack(nb.port, username="alice", password="wonder",
                           will=("needs/will", b"x", 0, False)), 0, "allowed will")


def start_fails(what, args, want):
    r = subprocess.run([h.relaymq_bin(), "--listen", "127.0.0.1:%d" % h.free_port(),
                        "--http", ""] + args, capture_output=True, text=True, timeout=30,
                       env=h.broker_env())
    h.check(r.returncode != 0, "%s: broker started (exit %d)" % (what, r.returncode))
    h.check(want in r.stderr, "%s: %r not in %r" % (what, want, r.stderr[-400:]))


@T.case
def bad_password_or_acl_file_stops_start_up_naming_file_line(b):
    h.relaymq_only("file errors")
    pw = tmp("bad-pw", "# ok\nalice:$7$101$notbase64!$AAAA\n")
    start_fails("password file", ["--password-file", pw], pw + ":2:")
    acl = tmp("bad-acl", "user a\ntopic read x\n\ntopic sometimes x/y\n")
    start_fails("acl file", ["--acl-file", acl], acl + ":4:")
    start_fails("missing file", ["--acl-file", tmp("absent")], tmp("absent") + ":")


if __name__ == "__main__":
    try:
        T.main()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
