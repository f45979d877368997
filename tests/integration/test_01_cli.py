"""The command line and the config file: --help, --version, every documented
option, flags over the file, and start-up errors that name the flag or the
file and line. All of it is RelayMQ's own (skipped against Mosquitto)."""
import os
import re
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

T = h.Tests()
OPTIONS = ["listen", "allow-anonymous", "node-id", "log-level", "max-packet-size", "max-inflight",
           "max-queued-messages", "connect-timeout", "sys-interval", "config"]


def run(args, timeout=h.WAIT):
    """Runs the broker expecting it to exit by itself; returns (status, output)."""
    try:
        r = subprocess.run([h.relaymq_bin()] + args, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           env=h.broker_env(), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("relaymq %s did not exit within %.0fs" % (" ".join(args), timeout))
    return r.returncode, r.stdout.decode("utf-8", "replace")


def fails(args, *mentions, add_listen=True):
    """The broker must refuse args at start-up with a message naming each of
    mentions. add_listen: also pass a free --listen address (else a broker that
    wrongly accepts args would take the default port)."""
    if add_listen and "--listen" not in args:
        args = args + ["--listen", "127.0.0.1:%d" % h.free_port()]
    status, out = run(args, timeout=5)
    h.check(status != 0, "relaymq %s exited 0:\n%s" % (" ".join(args), out))
    h.check("AddressSanitizer" not in out and "runtime error" not in out,
            "sanitizer report on a start-up error:\n%s" % out)
    for text in mentions:
        h.check(text in out, "error for %r does not mention %r:\n%s" % (args, text, out))
    return out


def config_file(lines):
    fd, path = tempfile.mkstemp(prefix="relaymq-it-", suffix=".conf")
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def oversize_closes(port, size):
    """True if a PUBLISH with a payload of size bytes gets the connection closed."""
    c = h.raw_connected(port)
    try:
        # The broker may close as soon as it has read the fixed header,
        # while the rest is still being sent.
        c.send(h.publish_packet("cli/size", bytes(size), qos=1, pid=1))
    except (BrokenPipeError, ConnectionResetError):
        return True
    try:
        p = c.recv_packet(timeout=h.WAIT)
    except h.Closed:
        return True
    h.check_eq(p.type, h.PUBACK, "answer to a %d-byte PUBLISH" % size)
    c.disconnect()
    return False


@T.case
def help_lists_every_option_and_exits_0(b):
    h.relaymq_only("--help")
    status, out = run(["--help"])
    h.check_eq(status, 0, "exit status of --help")
    for name in OPTIONS + ["help", "version"]:
        h.check("--" + name in out or re.search(r"^\s*%s\b" % re.escape(name), out, re.M),
                "--help does not list %s:\n%s" % (name, out))


@T.case
def version_prints_the_project_version_and_exits_0(b):
    h.relaymq_only("--version")
    src = (os.environ.get("RELAYMQ_SOURCE_DIR")
           or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    with open(os.path.join(src, "CMakeLists.txt")) as f:
        version = re.search(r"project\(relaymq VERSION ([0-9.]+)", f.read()).group(1)
    status, out = run(["--version"])
    h.check_eq(status, 0, "exit status of --version")
    h.check(version in out, "--version output %r lacks %s" % (out, version))


@T.case
def unknown_option_fails_naming_it(b):
    h.relaymq_only("option errors")
    fails(["--no-such-option", "1"], "no-such-option")
    fails(["--max-packet-size"], "max-packet-size")  # value missing


@T.case
def bad_values_fail_naming_the_option(b):
    h.relaymq_only("option errors")
    for option, value in (("max-packet-size", "banana"), ("max-inflight", "many"),
                          ("max-queued-messages", "1e9x"), ("connect-timeout", "soon"),
                          ("sys-interval", "often"), ("allow-anonymous", "maybe"),
                          ("log-level", "loud"), ("max-inflight", "-1"),
                          ("max-inflight", "70000"),       # packet ids are 16 bits
                          ("max-packet-size", "4g")):      # MQTT's limit is 256 MB
        fails(["--" + option, value], option)
    for value in ("no-port", "127.0.0.1:99999", "127.0.0.1:http"):
        out = fails(["--listen", value])
        h.check("listen" in out or value in out,
                "error for --listen %s names neither the option nor the value:\n%s" % (value, out))


@T.case
def config_file_sets_options_and_flags_override_it(b):
    h.relaymq_only("--config")
    port = h.free_port()
    path = config_file(["# RelayMQ test configuration", "", "listen 127.0.0.1:%d" % port,
                        "allow-anonymous true   ", "max-packet-size 1k", "sys-interval 1s",
                        "  # indented comment", "node-id cli-test", "connect-timeout 500ms"])
    try:
        with h.Broker(argv=["--config", path], port=port) as b2:
            h.check(oversize_closes(port, 2000), "max-packet-size 1k from the file not applied")
            h.check(not oversize_closes(port, 500), "a 500-byte PUBLISH refused under 1k")
            silent = h.RawClient(port)
            h.check_eq(silent.wait_closed(timeout=5), [], "connect-timeout 500ms from the file")
            h.check(b2.alive(), "broker died")
        # A flag overrides the file, wherever --config stands.
        with h.Broker(argv=["--max-packet-size", "4k", "--config", path], port=port):
            h.check(not oversize_closes(port, 2000), "--max-packet-size 4k did not override 1k")
    finally:
        os.unlink(path)


@T.case
def bad_config_lines_fail_naming_file_and_line(b):
    h.relaymq_only("--config errors")
    bad = {
        "unknown key": ["# header", "allow-anonymous true", "no-such-key 5"],
        "bad size": ["allow-anonymous true", "", "max-packet-size banana"],
        "bad bool": ["allow-anonymous perhaps", "# trailing", ""],
        "missing value": ["# one", "# two", "# three", "max-inflight"],
    }
    for what, lines in bad.items():
        path = config_file(lines)
        line = max(i for i, text in enumerate(lines, 1) if text and not text.startswith("#"))
        try:
            fails(["--config", path], "%s:%d" % (path, line))
        except AssertionError as e:
            raise AssertionError("%s: %s" % (what, e)) from None
        finally:
            os.unlink(path)
    missing = "/nonexistent/relaymq-%d.conf" % os.getpid()
    fails(["--config", missing], missing)
    # A listen address that cannot be right fails too, naming the line or the value.
    path = config_file(["allow-anonymous true", "listen 127.0.0.1:99999"])
    try:
        out = fails(["--config", path], add_listen=False)
        h.check("%s:2" % path in out or "99999" in out,
                "error for 'listen 127.0.0.1:99999' names neither line nor value:\n%s" % out)
    finally:
        os.unlink(path)


@T.case
def environment_sets_options_between_file_and_flags(b):
    h.relaymq_only("RELAYMQ_<OPTION> variables")
    port = h.free_port()
    argv = ["--listen", "127.0.0.1:%d" % port, "--allow-anonymous", "true"]
    env = dict(h.broker_env(), RELAYMQ_MAX_PACKET_SIZE="1k")
    with h.Broker(argv=argv, port=port, env=env):
        h.check(oversize_closes(port, 2000), "RELAYMQ_MAX_PACKET_SIZE=1k not applied")
    with h.Broker(argv=argv + ["--max-packet-size", "4k"], port=port, env=env):
        h.check(not oversize_closes(port, 2000), "the flag did not override the environment")
    bad = dict(h.broker_env(), RELAYMQ_MAX_INFLIGHT="lots")
    r = subprocess.run([h.relaymq_bin()] + argv, env=bad, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=h.WAIT)
    h.check(r.returncode != 0 and b"RELAYMQ_MAX_INFLIGHT" in r.stdout,
            "bad RELAYMQ_MAX_INFLIGHT: exit %d, output %r" % (r.returncode, r.stdout))


@T.case
def repeated_listen_serves_every_address(b):
    h.relaymq_only("repeated --listen")
    p1, p2 = h.free_port(), h.free_port()
    argv = ["--listen", "127.0.0.1:%d" % p1, "--listen", "127.0.0.1:%d" % p2,
            "--allow-anonymous", "true", "--log-level", "debug"]
    with h.Broker(argv=argv, port=p1):
        h.wait_until(lambda: h.port_open(p2), what="second listener")
        topic = h.uid("two") + "/t"
        sub = h.raw_connected(p2)
        sub.subscribe([(topic, 1)])
        pub = h.raw_connected(p1)
        pub.publish(topic, b"across", qos=1, pid=1)
        h.check_eq(sub.recv_publish().payload, b"across", "message across listeners")
        sub.disconnect()
        pub.disconnect()


@T.case
def anonymous_refused_by_default(b):
    h.relaymq_only("the allow-anonymous default")
    port = h.free_port()
    with h.Broker(argv=["--listen", "127.0.0.1:%d" % port], port=port):
        c = h.RawClient(port)
        c.send(h.connect_packet(h.uid("anon")))
        got = c.wait_closed()
        h.check(len(got) == 1 and got[0].type == h.CONNACK and got[0].body[1] == 5,
                "default allow-anonymous: expected CONNACK 0x05 then close, got %r" % got)


@T.case
def sys_interval_0_turns_sys_topics_off(b):
    h.relaymq_only("--sys-interval 0")
    with h.Broker(sys_interval="0") as b2:
        c = h.raw_connected(b2.port)
        c.subscribe([("$SYS/#", 0)])
        c.expect_nothing(timeout=2.5, what="$SYS messages with --sys-interval 0")
        c.disconnect()
    # ...while the default test broker (1s) publishes them.
    c = h.raw_connected(b.port)
    c.subscribe([("$SYS/broker/metrics/#", 0)])
    p = c.recv_publish(timeout=5)
    h.check(re.fullmatch(r"\$SYS/broker/metrics/[a-z0-9_]+", p.topic) and p.payload.isdigit(),
            "a counter as decimal text: %r" % p)
    c.disconnect()


@T.case
def default_limits_packet_size_1m_and_inflight_20(b):
    h.relaymq_only("RelayMQ's defaults")
    port = h.free_port()
    with h.Broker(argv=["--listen", "127.0.0.1:%d" % port, "--allow-anonymous", "true"],
                  port=port):
        h.check(not oversize_closes(port, 1000 * 1000), "a 1,000,000-byte PUBLISH under 1m")
        h.check(oversize_closes(port, 1100 * 1000), "a 1,100,000-byte PUBLISH over 1m")
        topic = h.uid("inf") + "/t"
        sub = h.raw_connected(port)
        sub.subscribe([(topic, 1)])
        pub = h.raw_connected(port)
        for i in range(25):
            pub.publish(topic, b"%d" % i, qos=1, pid=i + 1)
        got = [sub.recv_publish(ack=False) for _ in range(20)]
        h.check_eq([int(p.payload) for p in got], list(range(20)), "first 20 in flight")
        sub.expect_nothing(timeout=1.5, what="a 21st unacknowledged message (max-inflight 20)")
        sub.close()
        pub.disconnect()


@T.case
def sigterm_with_clients_connected_exits_0(b):
    h.relaymq_only("shutdown with live clients under the sanitizers")
    with h.Broker() as b2:
        clients = [h.raw_connected(b2.port, clean=(i % 2 == 0)) for i in range(5)]
        for i, c in enumerate(clients):
            c.subscribe([("live/%d/#" % i, i % 3)])
        clients[0].publish("live/1/x", b"queued", qos=1, pid=1)
        time.sleep(0.3)
    for c in clients:
        c.close()


if __name__ == "__main__":
    T.main()
