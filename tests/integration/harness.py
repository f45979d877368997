"""Shared helpers for RelayMQ's black-box integration tests.

Each tests/integration/test_<NN>_<feature>.py is one ctest test, run as
`/usr/bin/python3 FILE` with RELAYMQ_BIN (the broker binary), RELAYMQ_BENCH
and RELAYMQ_SOURCE_DIR in its environment. It prints one line per case and
ends with "N passed, N failed"; it exits 0 only when nothing failed.

What lives here:
  Tests       the tiny runner: cases, a shared broker per file, the summary.
  Broker      starts a broker on a free loopback port, captures its log,
              stops it with SIGTERM and asserts a clean exit (the test build
              uses AddressSanitizer/LeakSanitizer, which exit non-zero).
  RawClient   hand-built MQTT packets over a plain socket, for exact wire
              checks and for input no real client would send (mqtt_raw.py,
              re-exported here with harness_base.py's settings and checks).
  Paho        a thin synchronous wrapper over paho-mqtt 1.6.
  MosqSub, mosq_pub
              the real mosquitto_sub / mosquitto_pub command-line clients.
  Metrics     reads the broker's counters from $SYS/broker/metrics/<name>.

RELAYMQ_TEST_BROKER=mosquitto runs the same tests against Mosquitto to
validate them. Only checks of RelayMQ-only features (its counters, its CLI,
its connect timeout, its choices where the spec allows either) are skipped in
that mode; in the default mode nothing is ever skipped.

Only processes started here are ever signalled, each by its own PID.
"""
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import paho.mqtt.client as mqtt  # noqa: E402  (Debian's python3-paho-mqtt 1.6)

from harness_base import (  # noqa: F401  (re-exported for the tests)
    check, check_eq, HOST, KEEPALIVE_LATE, MODE, MQTTV31, MQTTV311, QUIET, RELAYMQ, relaymq_only,
    Skip, uid, VERSION_NAMES, VERSIONS, WAIT, wait_until,
)
from mqtt_raw import (  # noqa: F401  (re-exported for the tests)
    ack_packet, Closed, CONNACK, CONNECT, connect_packet, DISCONNECT, DISCONNECT_PACKET, mqtt_str,
    NoPacket, Packet, packet, PINGREQ, PINGREQ_PACKET, PINGRESP, PUBACK, PUBCOMP, PUBLISH,
    publish_packet, PUBREC, PUBREL, raw_connected, RawClient, SUBACK, SUBSCRIBE, subscribe_packet,
    TYPE_NAMES, UNSUBACK, UNSUBSCRIBE, unsubscribe_packet, varint,
)

# --------------------------------------------------------------------------
# Broker process


_PORTS_GIVEN = set()


def _ephemeral_low():
    """The lowest port the kernel hands out as a connection's source port."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PORT_LOW = 10000


def free_port():
    """A loopback port nothing listens on, never one this process handed out
    before: the kernel may offer a just-closed port again, and two nodes of
    one cluster given the same port make the second fail to listen while the
    first answers its readiness probe. Taken below the ephemeral range when
    there is room: a node restarted on its old port must not find it taken
    as the source port of some client's connection meanwhile."""
    high = _ephemeral_low() - 1
    for _ in range(200):
        s = socket.socket()
        try:
            if high - _PORT_LOW >= 1000:
                s.bind((HOST, random.randint(_PORT_LOW, high)))
            else:
                s.bind((HOST, 0))
            port = s.getsockname()[1]
        except OSError:
            continue  # taken: try another
        finally:
            s.close()
        if port not in _PORTS_GIVEN:
            break
    else:
        s = socket.socket()
        s.bind((HOST, 0))
        port = s.getsockname()[1]
        s.close()
    _PORTS_GIVEN.add(port)
    return port


def port_open(port, host=HOST):
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def _size_bytes(text):
    text = str(text).strip().lower()
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1:], 1)
    return int(text[:-1] if text[-1:] in "kmg" else text) * mult


def _seconds(text):
    text = str(text).strip().lower()
    for suffix, mult in (("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * mult
    return float(text)


def relaymq_bin():
    path = os.environ.get("RELAYMQ_BIN")
    if not path:
        sys.exit("RELAYMQ_BIN is not set (run through ctest, or export it)")
    return path


def broker_env():
    """The broker's environment: ours without RELAYMQ_* variables, since the
    broker reads its options from RELAYMQ_<OPTION> and the test driver's own
    RELAYMQ_BIN etc. must not be taken for configuration."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RELAYMQ_")}


class Broker:
    """One broker process on a free loopback port.

    Options are RelayMQ's flags with underscores (max_packet_size="1k",
    max_inflight=5, max_queued_messages=10, connect_timeout="1s",
    sys_interval="1s", allow_anonymous=False); `extra` is a list of raw
    RelayMQ flags. In Mosquitto mode the options Mosquitto has are written
    to its config file and the rest are ignored (the tests skip what needs them).
    """

    def __init__(self, extra=(), env=None, argv=None, port=None, **options):
        """argv (RelayMQ only): the whole argument list instead of the one built
        from options; port is then where the test made it listen."""
        self.kind = MODE
        self.port = port or free_port()
        self.argv = argv
        self.options = {"allow_anonymous": True, "sys_interval": "1s", "log_level": "debug"}
        self.options.update(options)
        self.extra = list(extra)
        self.env = env
        self.dir = tempfile.mkdtemp(prefix="relaymq-it-%s-" % self.kind)
        self.log_path = os.path.join(self.dir, "broker.log")
        self.proc = None
        self._metrics = None
        self.exit_code = None

    @property
    def relaymq(self):
        return self.kind == "relaymq"

    def command(self):
        if self.argv is not None:
            return [relaymq_bin()] + list(self.argv)
        if self.relaymq:
            cmd = [relaymq_bin(), "--listen", "%s:%d" % (HOST, self.port)]
            for key, value in self.options.items():
                if isinstance(value, bool):
                    value = "true" if value else "false"
                cmd += ["--" + key.replace("_", "-"), str(value)]
            return cmd + self.extra
        conf = os.path.join(self.dir, "mosquitto.conf")
        o = self.options
        lines = ["listener %d %s" % (self.port, HOST),
                 "allow_anonymous %s" % ("true" if o["allow_anonymous"] else "false"),
                 "persistence false", "log_dest stderr", "log_type all",
                 "sys_interval %d" % max(1, int(_seconds(o["sys_interval"])))]
        if "max_packet_size" in o:
            lines.append("max_packet_size %d" % _size_bytes(o["max_packet_size"]))
        if "max_inflight" in o:
            lines.append("max_inflight_messages %d" % int(o["max_inflight"]))
        if "max_queued_messages" in o:
            lines.append("max_queued_messages %d" % int(o["max_queued_messages"]))
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        return [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", conf]

    def start(self, timeout=WAIT):
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env or broker_env(),
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self._answers_connect():
                return self
            time.sleep(0.05)
        rc = self.proc.poll()
        self.kill()
        raise AssertionError("broker did not start on port %d (exit %r):\n%s"
                             % (self.port, rc, self.log_tail()))

    def _answers_connect(self):
        """Ready means a CONNECT is answered with a CONNACK, not just an open port."""
        try:
            c = RawClient(self.port, timeout=2)
        except OSError:
            return False
        try:
            c.send(connect_packet(uid("probe"), keepalive=10))
            p = c.recv_packet(timeout=2)
            if p.type == CONNACK:
                c.send(DISCONNECT_PACKET)
            return p.type == CONNACK
        except (OSError, Closed, TimeoutError):
            return False
        finally:
            c.close()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def metrics(self):
        """The broker's Metrics reader (one subscriber kept open until stop)."""
        if self._metrics is None:
            self._metrics = Metrics(self)
        return self._metrics

    def stop(self, timeout=10.0):
        """SIGTERM, then asserts exit status 0 within timeout (sanitizers clean)."""
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError("broker did not exit within %.0fs of SIGTERM:\n%s"
                                     % (timeout, self.log_tail()))
        self._log.close()
        self.exit_code = self.proc.returncode
        if self.exit_code != 0:
            raise AssertionError("broker exited with status %r (log %s):\n%s"
                                 % (self.exit_code, self.log_path, self.log_tail()))

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=40):
        return "\n".join(self.log_text().splitlines()[-n:])

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.show_log("broker log (port %d) at the failure" % self.port)
        try:
            self.stop()
        except AssertionError:
            if exc_type is None:
                raise
            # The case already failed; keep its error and show the broker's too.
            sys.stderr.write("also: broker stop failed:\n%s\n" % self.log_tail())
            return False
        if exc_type is None:
            self.remove_files()
        return False

    def show_log(self, title, n=25):
        sys.stderr.write("---- %s, %s:\n%s\n" % (title, self.log_path, self.log_tail(n)))

    def remove_files(self):
        """Deletes the log directory (only after a clean run; failures keep it)."""
        if not os.environ.get("RELAYMQ_TEST_KEEP_LOGS"):
            shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------
# paho-mqtt

PAHO_PROTOCOLS = {MQTTV31: mqtt.MQTTv31, MQTTV311: mqtt.MQTTv311}


class Message:
    def __init__(self, topic, payload, qos, retain, dup=False):
        self.topic, self.payload, self.qos, self.retain, self.dup = topic, payload, qos, retain, dup

    def __repr__(self):
        return "Message(%r, %r, qos=%d, retain=%d)" % (self.topic, self.payload[:40], self.qos,
                                                       self.retain)


class Paho:
    """paho-mqtt with blocking connect/subscribe/publish and a message queue.

    Its network loop runs in our own thread rather than loop_start(): paho's
    thread reconnects on its own after the broker closes the connection,
    which would hide that close and fight a takeover; ours simply stops
    (and sets `disconnected`)."""

    def __init__(self, port, client_id=None, version=MQTTV311, clean=True, keepalive=60,
                 will=None, username=None):
        self.port = port
        self.client_id = uid("paho") if client_id is None else client_id
        self.c = mqtt.Client(client_id=self.client_id, clean_session=clean,
                             protocol=PAHO_PROTOCOLS[version])
        self.keepalive = keepalive
        if will is not None:
            topic, payload, qos, retain = will
            self.c.will_set(topic, payload, qos, retain)
        if username is not None:
            self.c.username_pw_set(username)
        self.messages = queue.Queue()
        self._connack = queue.Queue()
        self._subacks = {}
        self._lock = threading.Lock()
        self.disconnected = threading.Event()
        self._stop = threading.Event()
        self._thread = None
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe

    def _on_connect(self, client, userdata, flags, rc):
        self._connack.put((rc, flags.get("session present", 0)))

    def _on_message(self, client, userdata, msg):
        self.messages.put(Message(msg.topic, msg.payload, msg.qos, bool(msg.retain), bool(msg.dup)))

    def _on_subscribe(self, client, userdata, mid, granted):
        with self._lock:
            self._subacks[mid] = list(granted)

    def _on_unsubscribe(self, client, userdata, mid):
        with self._lock:
            self._subacks[mid] = "unsuback"

    def connect(self, rc=0):
        """Connects and waits for CONNACK (must carry rc); returns session-present."""
        self.c.connect(HOST, self.port, self.keepalive)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        try:
            got_rc, sp = self._connack.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError("paho %s: no CONNACK within %.0fs"
                                 % (self.client_id, WAIT)) from None
        check_eq(got_rc, rc, "paho CONNACK return code")
        return bool(sp)

    def _loop(self):
        while not self._stop.is_set():
            if self.c.loop(0.05) != mqtt.MQTT_ERR_SUCCESS:
                break
        self.disconnected.set()

    def _wait_ack(self, mid, what):
        return wait_until(lambda: self._subacks.get(mid),
                          what="%s of paho %s" % (what, self.client_id))

    def subscribe(self, topic, qos=0):
        """Subscribes and waits for SUBACK; returns the granted QoS list."""
        rc, mid = self.c.subscribe(topic, qos)
        check_eq(rc, mqtt.MQTT_ERR_SUCCESS, "paho subscribe")
        return self._wait_ack(mid, "SUBACK")

    def unsubscribe(self, topic):
        rc, mid = self.c.unsubscribe(topic)
        check_eq(rc, mqtt.MQTT_ERR_SUCCESS, "paho unsubscribe")
        self._wait_ack(mid, "UNSUBACK")

    def publish(self, topic, payload, qos=0, retain=False, wait=True):
        info = self.c.publish(topic, payload, qos, retain)
        check_eq(info.rc, mqtt.MQTT_ERR_SUCCESS, "paho publish")
        if wait:
            info.wait_for_publish(WAIT)
            check(info.is_published(), "paho publish of %r at QoS %d not completed" % (topic, qos))
        return info

    def get(self, timeout=WAIT):
        """The next message; fails the case if none arrives."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("paho %s: no message within %.0fs"
                                 % (self.client_id, timeout)) from None

    def take(self, n, timeout=WAIT):
        """Exactly n messages (waits up to timeout for them all)."""
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            try:
                out.append(self.messages.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError("paho %s: got %d of %d messages within %.0fs"
                                     % (self.client_id, len(out), n, timeout)) from None
        return out

    def expect_nothing(self, timeout=QUIET, what="no message"):
        try:
            m = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError("%s: expected nothing, got %r" % (what, m))

    def drain(self, timeout=QUIET):
        """Every message that arrives until timeout passes with nothing new."""
        out = []
        while True:
            try:
                out.append(self.messages.get(timeout=timeout))
            except queue.Empty:
                return out

    def disconnect(self):
        """Sends DISCONNECT (if still connected) and stops the network loop."""
        if not self.disconnected.is_set():
            self.c.disconnect()
            self.disconnected.wait(WAIT)
        self._halt()

    def abort(self):
        """Closes the socket without DISCONNECT (as if the device died)."""
        self._halt()
        sock = self.c.socket()
        if sock is not None:
            sock.close()

    def _halt(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(WAIT)

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        try:
            self.disconnect()
        except Exception:
            pass
        return False


# --------------------------------------------------------------------------
# mosquitto_sub / mosquitto_pub

MSG_FORMAT = "MSG|%t|%q|%r|%l|%p"


class ClientProcess:
    """A real command-line client in the background; its output lines are
    collected by a thread (stdbuf line-buffers them: -d debug lines would
    otherwise wait in a pipe buffer)."""

    def __init__(self, cmd, ready=None, stdin=subprocess.DEVNULL):
        self.proc = subprocess.Popen(["stdbuf", "-oL"] + cmd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=stdin)
        self.lines = []
        self.messages = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if ready is not None:
            self.wait_for_line(ready)

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line[:200])
            if line.startswith("MSG|"):
                _, topic, qos, retain, length, payload = line.split("|", 5)
                m = Message(topic, payload.encode(), int(qos), retain == "1")
                m.length = int(length)
                self.messages.put(m)

    def wait_for_line(self, text, timeout=WAIT):
        try:
            wait_until(lambda: any(text in line for line in self.lines), timeout,
                       what="%r from %s" % (text, self.proc.args[2]))
        except AssertionError as e:
            self.stop()
            raise AssertionError("%s; output:\n%s" % (e, "\n".join(self.lines[-20:]))) from None

    def kill(self):
        """SIGKILL: the client dies without sending DISCONNECT."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.stop()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(WAIT)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


class MosqSub(ClientProcess):
    """mosquitto_sub printing each message as MSG|topic|qos|retain|length|payload;
    returns once its SUBACK came back (-d)."""

    def __init__(self, port, topics, qos=0, version=MQTTV311, client_id=None, clean=True,
                 extra=()):
        if isinstance(topics, str):
            topics = [topics]
        self.client_id = client_id or uid("msub")
        cmd = ["mosquitto_sub", "-h", HOST, "-p", str(port), "-V", VERSION_NAMES[version],
               "-q", str(qos), "-i", self.client_id, "-d", "-F", MSG_FORMAT]
        if not clean:
            cmd.append("-c")
        for t in topics:
            cmd += ["-t", t]
        super().__init__(cmd + list(extra), ready="received SUBACK")

    def take(self, n, timeout=WAIT):
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            try:
                out.append(self.messages.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError("mosquitto_sub: got %d of %d messages within %.0fs; "
                                     "output tail:\n%s" % (len(out), n, timeout,
                                                           "\n".join(self.lines[-10:]))) from None
        return out

    def expect_nothing(self, timeout=QUIET, what="no message"):
        try:
            m = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError("%s: expected nothing, got %r" % (what, m))


def mosq_pub(port, topic, message=None, qos=0, version=MQTTV311, retain=False, stdin_lines=None,
             null=False, extra=(), timeout=30):
    """Runs mosquitto_pub to completion and asserts it exited 0.
    stdin_lines: a list of lines sent as one message each (-l)."""
    cmd = ["mosquitto_pub", "-h", HOST, "-p", str(port), "-V", VERSION_NAMES[version],
           "-q", str(qos), "-t", topic, "-i", uid("mpub")]
    if retain:
        cmd.append("-r")
    data = None
    if stdin_lines is not None:
        cmd.append("-l")
        data = ("\n".join(stdin_lines) + "\n").encode()
    elif null:
        cmd.append("-n")
    elif isinstance(message, (bytes, bytearray)):
        cmd.append("-s")
        data = bytes(message)
    else:
        cmd += ["-m", message]
    cmd += list(extra)
    r = subprocess.run(cmd, input=data, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout)
    check(r.returncode == 0, "mosquitto_pub exited %d: %s" % (r.returncode, r.stdout[-500:]))


# --------------------------------------------------------------------------
# Counters


class Metrics:
    """Latest values of the broker's $SYS topics, from one subscriber to $SYS/#.

    Counter names are those of broker/metrics.h ("protocol_errors" reads
    $SYS/broker/metrics/protocol_errors); a name with a '/' is a full topic
    under $SYS/ ("broker/clients/connected"). In Mosquitto mode the
    RelayMQ names do not exist: every read returns None and every check passes
    after noting the skip (the tests' other assertions still run)."""

    def __init__(self, broker):
        self.enabled = broker.relaymq
        self.skipped = []
        if not self.enabled:
            return
        self.values = {}  # topic -> (int value, monotonic time received, retained flag)
        self.cond = threading.Condition()
        self.client = Paho(broker.port, client_id=uid("metrics"))
        self.client.c.on_message = self._on_message
        self.client.connect()
        self.client.subscribe("$SYS/#", 0)

    @staticmethod
    def topic(name):
        return "$SYS/" + name if "/" in name else "$SYS/broker/metrics/" + name

    def _on_message(self, client, userdata, msg):
        try:
            value = int(msg.payload.decode().strip())
        except ValueError:
            return
        with self.cond:
            self.values[msg.topic] = (value, time.monotonic(), bool(msg.retain))
            self.cond.notify_all()

    def fresh(self, name, timeout=WAIT):
        """The value from a publication made after this call (a live, not retained,
        message received later); if the broker publishes only on change and nothing
        comes within a few intervals, the last value (then still current)."""
        if not self.enabled:
            return None
        topic = self.topic(name)
        since = time.monotonic()
        deadline = since + timeout
        with self.cond:
            while True:
                v = self.values.get(topic)
                if v is not None and v[1] > since and not v[2]:
                    return v[0]
                now = time.monotonic()
                if v is not None and now - since > 3.5:
                    return v[0]
                if now >= deadline:
                    raise AssertionError("no value for %s within %.0fs (seen: %s)"
                                         % (topic, timeout, sorted(self.values)))
                self.cond.wait(min(0.2, deadline - now))

    def wait_for(self, name, pred, timeout=WAIT, what=None):
        """Waits until pred(value) holds; returns the value."""
        if not self.enabled:
            self.skipped.append(name)
            return None
        topic = self.topic(name)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                v = self.values.get(topic)
                if v is not None and pred(v[0]):
                    return v[0]
                now = time.monotonic()
                if now >= deadline:
                    raise AssertionError("%s: %s is %s after %.0fs"
                                         % (what or "counter", topic,
                                            v[0] if v else "never published", timeout))
                self.cond.wait(min(0.2, deadline - now))

    def expect_increase(self, name, before, by=1, timeout=WAIT):
        """The counter reaches before + by (at least)."""
        if not self.enabled:
            self.skipped.append(name)
            return None
        return self.wait_for(name, lambda v: v >= before + by, timeout,
                             "expected %s to grow by >= %d from %d" % (name, by, before))

    def expect_unchanged(self, name, before, settle=2.5):
        """The counter still equals before after a fresh publication (settle s)."""
        if not self.enabled:
            self.skipped.append(name)
            return
        time.sleep(settle)
        now = self.fresh(name)
        check_eq(now, before, "counter %s" % name)

    def close(self):
        if self.enabled:
            self.client.disconnect()


# --------------------------------------------------------------------------
# Runner


class Tests:
    """Cases of one test file. Each case is a function taking the file's shared
    broker (started with shared_options); a case that needs other options starts
    its own `with Broker(...) as b:` which asserts a clean exit on leaving."""

    def __init__(self, **shared_options):
        self.cases = []
        self.shared_options = shared_options
        self.broker = None
        self.failed_cases = False

    def case(self, fn):
        self.cases.append(fn)
        return fn

    def _start_shared(self):
        self.broker = Broker(**self.shared_options).start()

    def _run_one(self, name, fn):
        t0 = time.monotonic()
        try:
            fn()
        except Skip as e:
            if RELAYMQ:
                return "FAIL", "skipped against RelayMQ: %s" % e
            return "SKIP", str(e)
        except Exception as e:  # noqa: BLE001 - any error fails the case, and is shown
            detail = traceback.format_exc()
            sys.stderr.write("---- %s\n%s" % (name, detail))
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            return "FAIL", "%s: %s" % (type(e).__name__, msg)
        return "PASS", "%.1fs" % (time.monotonic() - t0)

    def main(self):
        print("broker under test: %s" % (MODE if not RELAYMQ else relaymq_bin()), flush=True)
        passed = failed = 0
        try:
            self._start_shared()
        except AssertionError as e:
            print("FAIL start shared broker: %s" % str(e).splitlines()[0], flush=True)
            sys.stderr.write(str(e) + "\n")
            print("0 passed, 1 failed", flush=True)
            sys.exit(1)

        def shared_stop():
            b, self.broker = self.broker, None
            check(b is not None, "no shared broker left to stop")
            b.stop()
            if not self.failed_cases:
                b.remove_files()

        cases = [(fn.__name__, (lambda fn=fn: self._with_shared(fn))) for fn in self.cases]
        cases.append(("broker_exits_0_on_sigterm", shared_stop))
        for name, fn in cases:
            status, info = self._run_one(name, fn)
            detail = ("  (%s)" % info) if status == "PASS" else ": " + info
            print("%s %s%s" % (status, name, detail), flush=True)
            if status == "PASS":
                passed += 1
            elif status == "FAIL":
                failed += 1
        print("%d passed, %d failed" % (passed, failed), flush=True)
        sys.exit(0 if failed == 0 else 1)

    def _with_shared(self, fn):
        if self.broker is None or not self.broker.alive():
            self._start_shared()
        b = self.broker
        try:
            fn(b)
        except Exception:
            self.failed_cases = True
            b.show_log("shared broker log at the failure")
            raise
        finally:
            if not b.alive():
                # Leave a working broker for the next case; this one's log is the evidence.
                b.kill()
                self.broker = None
                sys.stderr.write("shared broker died (log %s):\n%s\n" % (b.log_path, b.log_tail()))
                raise AssertionError("the shared broker died during the case (exit %r)"
                                     % b.proc.returncode)
