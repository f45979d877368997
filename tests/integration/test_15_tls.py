"""MQTT over TLS (tls:// listeners). Certificates are made at test time
with the openssl command (pki_harness.py): a CA, server certificates for
127.0.0.1, a client certificate (CN device-42) and one from a CA the broker
does not trust.

Shows: mosquitto_pub/sub with --cafile (one-way) and with --cert/--key
(mutual); clients without a certificate, or with an untrusted one, refused
where one is required (logged, counted in tls_handshake_errors, nothing
delivered); the certificate's CN as the username (admin API, ACL, password
not checked), and refused without a certificate; large packets and many
by-reference payloads intact over TLS; TLS behind HAProxy with a PROXY v2
header; min-version 1.3 refusing a TLS 1.2 client; garbage, plain MQTT and
silence on a TLS port closed cleanly with the broker alive; compact TLS 1.3
sessions (OpenSSL's session freed after the handshake) carrying large and
small messages, resuming with their tickets, counted in
tls_compact_sessions; no session tickets and no resumption by default,
resumption (TLS 1.3 and 1.2, counted in tls_sessions_resumed, keeping the
certificate's CN as the username) where session-tickets= asks for it,
across nodes given one --tls-ticket-key-file (and not across others; a
key file of the wrong size stops start-up); a forged record closing the connection (logged,
counted), a slow subscriber with a small window getting a whole burst
intact, while TLS 1.2 and compact-sessions=false stay with OpenSSL and
work the same; SIGHUP loading a
new certificate for new connections while open ones carry on, and keeping
the old one when the new files are bad."""
import http.client
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from haproxy_harness import HAProxy  # noqa: E402
from pki_harness import Pki  # noqa: E402

TMP = tempfile.mkdtemp(prefix="relaymq-it-tls-")
KEY = "tls-key-" + h.uid("k")
HTTP_PORT = h.free_port()
ONEWAY, MUTUAL, IDENTITY, BEHIND, TLS13, OPENSSL_ONLY, RESUME, IDENTITY_RESUME = (
    h.free_port() for _ in range(8))
PKI = Pki(TMP)
path = PKI.path
CA = PKI.ca
CLIENT = ["--cert", path("client.crt"), "--key", path("client.key")]

T = h.Tests(http="%s:%d" % (h.HOST, HTTP_PORT), api_key=KEY, connect_timeout="2s",
            tls_cert=path("server.crt"), tls_key=path("server.key"), tls_ca_file=CA,
            extra=["--listen", "tls://%s:%d" % (h.HOST, ONEWAY),
                   "--listen", "tls://%s:%d?require-certificate=true" % (h.HOST, MUTUAL),
                   "--listen", "tls://%s:%d?require-certificate=true&use-identity-as-username=true"
                   % (h.HOST, IDENTITY),
                   "--listen", "tls://%s:%d?proxy-protocol=v2" % (h.HOST, BEHIND),
                   "--listen", "tls://%s:%d?min-version=1.3" % (h.HOST, TLS13),
                   "--listen", "tls://%s:%d?compact-sessions=false" % (h.HOST, OPENSSL_ONLY),
                   "--listen", "tls://%s:%d?session-tickets=2" % (h.HOST, RESUME),
                   "--listen", "tls://%s:%d?require-certificate=true&use-identity-as-username=true"
                   "&session-tickets=1" % (h.HOST, IDENTITY_RESUME)])
HAP = HAProxy({"tls": (BEHIND, "send-proxy-v2")})


# --------------------------------------------------------------------------
# helpers


def client_ctx(cert=None, ca=CA, max_version=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    if cert:
        ctx.load_cert_chain(path(cert + ".crt"), path(cert + ".key"))
    if max_version:
        ctx.maximum_version = max_version
    return ctx


class TlsClient(h.RawClient):
    """RawClient over TLS (python's ssl), verifying the server against CA."""

    def __init__(self, port, cert=None, ctx=None, timeout=h.WAIT, session=None, rcvbuf=None):
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:  # before connect: it sets the TCP window offered
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(timeout)
        raw.connect((h.HOST, port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = (ctx or client_ctx(cert)).wrap_socket(raw, server_hostname=h.HOST,
                                                              session=session)
        except Exception:
            raw.close()
            raise
        self.buf = b""
        self.closed = False
        self.stash = []

    def _read_some(self, deadline):
        try:
            super()._read_some(deadline)
        except ssl.SSLError as e:  # an alert from the broker: it closed
            self.closed = True
            raise h.Closed("TLS alert: %s" % e) from None


def tls_connected(port, client_id=None, cert=None, **kw):
    c = TlsClient(port, cert=cert)
    c.connect(client_id or h.uid("tls"), **kw)
    return c


def client_json(client_id, port=HTTP_PORT):
    conn = http.client.HTTPConnection(h.HOST, port, timeout=h.WAIT)
    try:
        conn.request("GET", "/api/v1/clients/" + client_id,
                     headers={"Authorization": "Bearer " + KEY})
        r = conn.getresponse()
        body = r.read()
    finally:
        conn.close()
    h.check_eq(r.status, 200, "GET /api/v1/clients/%s (%r)" % (client_id, body[:200]))
    return json.loads(body)


def mosq(tool, port, topic, extra, message="x"):
    """mosquitto_pub/_sub run to completion; returns (exit status, output)."""
    cmd = [tool, "-h", h.HOST, "-p", str(port), "-t", topic, "-i", h.uid("mt"), "-q", "1"]
    cmd += ["-m", message] if tool == "mosquitto_pub" else ["-C", "1", "-W", "3"]
    r = subprocess.run(cmd + list(extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    return r.returncode, r.stdout.decode("utf-8", "replace")


def closed_without_mqtt(port, data, what, timeout=h.WAIT):
    """Sends data over plain TCP, reads to EOF/RST; fails if it stays open
    or if an MQTT CONNACK (0x20) comes back."""
    s = socket.create_connection((h.HOST, port), timeout=timeout)
    got = b""
    try:
        if data:
            s.sendall(data)
        deadline = time.monotonic() + timeout
        while True:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                chunk = s.recv(4096)
            except (ConnectionResetError, BrokenPipeError):
                break
            except socket.timeout:
                raise AssertionError("%s: still open after %.0fs" % (what, timeout)) from None
            if not chunk:
                break
            got += chunk
    finally:
        s.close()
    h.check(not got.startswith(b"\x20\x02"), "%s: answered with a CONNACK" % what)
    return got


# --------------------------------------------------------------------------
# cases


@T.case
def mosquitto_one_way_tls_with_cafile(b):
    h.relaymq_only("TLS listeners")
    topic = "tls/oneway/" + h.uid()
    with h.MosqSub(ONEWAY, topic, qos=1, extra=["--cafile", CA]) as sub:
        h.mosq_pub(ONEWAY, topic, "over tls", qos=1, extra=["--cafile", CA])
        h.mosq_pub(ONEWAY, topic, "over tls 1.2", qos=1,
                   extra=["--cafile", CA, "--tls-version", "tlsv1.2"])
        got = sorted(m.payload for m in sub.take(2))
        h.check_eq(got, [b"over tls", b"over tls 1.2"], "messages over one-way TLS")
    h.check("TLS established (TLSv1.3" in b.log_text(), "no TLSv1.3 session logged")


@T.case
def mosquitto_mutual_tls_with_cert_and_key(b):
    h.relaymq_only("TLS listeners")
    topic = "tls/mutual/" + h.uid()
    with h.MosqSub(MUTUAL, topic, qos=1, extra=["--cafile", CA] + CLIENT) as sub:
        h.mosq_pub(MUTUAL, topic, "mutual", qos=1, extra=["--cafile", CA] + CLIENT)
        h.check_eq(sub.take(1)[0].payload, b"mutual", "message over mutual TLS")


@T.case
def client_without_or_with_untrusted_certificate_refused(b):
    h.relaymq_only("TLS listeners")
    m = b.metrics()
    before = m.fresh("tls_handshake_errors")
    topic = "tls/refused/" + h.uid()
    watcher = h.raw_connected(b.port)
    h.check_eq(watcher.subscribe([(topic, 1)]), [1], "SUBACK")
    rc, out = mosq("mosquitto_pub", MUTUAL, topic, ["--cafile", CA], "no certificate")
    h.check(rc != 0, "mosquitto_pub without a certificate exited 0: %s" % out)
    rogue = ["--cafile", CA, "--cert", path("rogue.crt"), "--key", path("rogue.key")]
    rc, out = mosq("mosquitto_pub", MUTUAL, topic, rogue, "untrusted certificate")
    h.check(rc != 0, "mosquitto_pub with an untrusted certificate exited 0: %s" % out)
    # python's client too, at the TLS level.
    for cert in (None, "rogue"):
        try:
            c = TlsClient(MUTUAL, cert=cert)
            c.send(h.connect_packet(h.uid("nocert")))
            c.wait_closed()
            c.close()
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            pass
    watcher.expect_nothing(what="publishes of refused clients")
    m.expect_increase("tls_handshake_errors", before, by=4)
    log = b.log_text()
    h.check("TLS handshake failed" in log and "peer did not return a certificate" in log,
            "refusal without a certificate not logged")
    h.check("certificate: unable to get local issuer certificate" in log
            or "certificate verify failed" in log, "untrusted certificate not logged")
    watcher.disconnect()


@T.case
def certificate_cn_is_the_username(b):
    h.relaymq_only("TLS listeners")
    cid = h.uid("cn")
    # The CONNECT's own username and password are not looked at.
    c = tls_connected(IDENTITY, cid, cert="client", username="somebody-else", password="x")
    src = c.sock.getsockname()[1]
    doc = client_json(cid)
    h.check_eq(doc["username"], "device-42", "username in the admin API")
    h.check_eq(doc["peer"], "%s:%d" % (h.HOST, src), "peer in the admin API")
    c.disconnect()
    rc, out = mosq("mosquitto_pub", IDENTITY, "tls/cn", ["--cafile", CA] + CLIENT)
    h.check_eq(rc, 0, "mosquitto_pub with a certificate on the identity listener: %s" % out)


@T.case
def identity_with_password_file_and_acl(b):
    h.relaymq_only("TLS listeners")
    pw = path("passwd")
    subprocess.run([h.relaymq_bin(), "passwd", "-c", "-b", pw, "alice", "wonder"], check=True,
                   timeout=30, env=h.broker_env(), capture_output=True)
    acl = path("acl")
    with open(acl, "w") as f:
        f.write("user device-42\ntopic readwrite dev/device-42/#\n")
    ident, optional = h.free_port(), h.free_port()
    extra = ["--listen", "tls://%s:%d?use-identity-as-username=true&require-certificate=true"
             % (h.HOST, ident),
             "--listen", "tls://%s:%d?use-identity-as-username=true" % (h.HOST, optional)]
    with h.Broker(allow_anonymous=False, password_file=pw, acl_file=acl,
                  tls_cert=path("server.crt"), tls_key=path("server.key"), tls_ca_file=CA,
                  extra=extra) as nb:
        # No username, no password: the certificate is the credential.
        c = tls_connected(ident, h.uid("acl"), cert="client")
        h.check_eq(c.subscribe([("dev/device-42/#", 1), ("dev/other/#", 1)]), [1, 0x80],
                   "SUBACK under the CN's ACL")
        c.disconnect()
        # Without a certificate (not required on this listener): 0x05.
        c = TlsClient(optional)
        c.connect(h.uid("nocn"), rc=5, username="alice", password="wonder")
        c.close()
        h.check("no client certificate with a CN" in nb.log_text(), "refusal not logged")
        # The plain listener still checks passwords.
        p = h.RawClient(nb.port)
        p.connect(h.uid("pw"), rc=4, username="device-42", password="x")
        p.close()


@T.case
def large_and_fanned_out_payloads_intact_over_tls(b):
    h.relaymq_only("TLS listeners")
    topic = "tls/bulk/" + h.uid()
    subs = [tls_connected(ONEWAY) for _ in range(3)]
    for s in subs:
        h.check_eq(s.subscribe([(topic, 1)]), [1], "SUBACK")
    pub = tls_connected(ONEWAY)
    rnd = random.Random(15)
    # 300 KiB (gathered beyond the 64 KiB read buffer), then many 2 KiB
    # payloads (queued by reference for each subscriber).
    payloads = [bytes(rnd.getrandbits(8) for _ in range(300 * 1024))]
    payloads += [bytes([i]) * 2048 for i in range(40)]
    for i, p in enumerate(payloads):
        pub.publish(topic, p, qos=1, pid=i + 1)
    for s in subs:
        for i, want in enumerate(payloads):
            got = s.recv_publish()
            h.check(got.payload == want, "payload %d differs (%d bytes, want %d)"
                    % (i, len(got.payload), len(want)))
        s.disconnect()
    pub.disconnect()


def round_trip(port, ctx=None, session=None):
    """A TLS client subscribes, publishes 70 KiB and small messages to itself
    at QoS 1 and gets them back; returns its TLS version, session and
    whether that session was resumed."""
    c = TlsClient(port, ctx=ctx, session=session)
    c.connect(h.uid("compact"))
    topic = "tls/compact/" + h.uid()
    h.check_eq(c.subscribe([(topic, 1)]), [1], "SUBACK")
    payloads = [os.urandom(70 * 1024)] + [b"m%d" % i for i in range(20)]
    for i, p in enumerate(payloads):
        c.publish(topic, p, qos=1, pid=i + 1)
    for i, want in enumerate(payloads):
        h.check(c.recv_publish().payload == want, "payload %d came back changed" % i)
    seen = (c.sock.version(), c.sock.session, c.sock.session_reused)
    c.disconnect()
    return seen


@T.case
def compact_sessions_carry_data_resume_and_step_aside(b):
    h.relaymq_only("TLS listeners")
    m = b.metrics()
    before = m.fresh("tls_compact_sessions")
    # OpenSSL keeps TLS 1.2 sessions, and TLS 1.3 ones where compact
    # sessions are off; both carry traffic as before.
    round_trip(ONEWAY, ctx=client_ctx(max_version=ssl.TLSVersion.TLSv1_2))
    round_trip(OPENSSL_ONLY)
    m.expect_unchanged("tls_compact_sessions", before)
    # TLS 1.3: the session leaves OpenSSL after the handshake; its
    # ticket resumes a second one, which goes compact too.
    ctx = client_ctx()
    version, session, _ = round_trip(RESUME, ctx=ctx)
    h.check_eq(version, "TLSv1.3", "TLS version")
    _, _, reused = round_trip(RESUME, ctx=ctx, session=session)
    h.check(reused, "the second connection resumed the first one's session")
    m.expect_increase("tls_compact_sessions", before, by=2)
    # mosquitto's clients (OpenSSL as well) over a compact session.
    rc, out = mosq("mosquitto_pub", ONEWAY, "tls/compact/mosq", ["--cafile", CA, "-q", "1"])
    h.check_eq(rc, 0, "mosquitto_pub over a compact session: %s" % out)
    # A forged record (written under the TLS layer, straight to the
    # socket): the broker closes, logs it and counts a socket error.
    errors = m.fresh("socket_errors")
    c = tls_connected(ONEWAY)
    os.write(c.sock.fileno(), b"\x17\x03\x03\x00\x28" + b"\xab" * 40)
    c.wait_closed()
    m.expect_increase("socket_errors", errors, by=1)
    h.check("TLS error after the handshake" in b.log_text(), "the forged record is logged")
    round_trip(ONEWAY)  # and the broker goes on


@T.case
def resumption_only_where_session_tickets_ask_for_it(b):
    """By default no ticket is sent and nothing resumes, in TLS 1.3 or 1.2;
    session-tickets=N resumes both, counted in tls_sessions_resumed, and a
    resumed session keeps the client certificate's CN as the username."""
    h.relaymq_only("TLS listeners")
    m = b.metrics()
    before = m.fresh("tls_sessions_resumed")
    tls12 = dict(max_version=ssl.TLSVersion.TLSv1_2)
    # The default listener: a TLS 1.3 client gets no ticket, and neither a
    # TLS 1.3 nor a TLS 1.2 session is resumed (no cache, no ticket).
    for kw in ({}, tls12):
        ctx = client_ctx(**kw)
        version, session, _ = round_trip(ONEWAY, ctx=ctx)
        if not kw:
            h.check_eq(version, "TLSv1.3", "TLS version")
            h.check(not session.has_ticket, "no session ticket by default")
        _, _, reused = round_trip(ONEWAY, ctx=ctx, session=session)
        h.check(not reused, "%s session resumed without session-tickets" % version)
    m.expect_unchanged("tls_sessions_resumed", before)
    # session-tickets=2: both versions resume.
    for kw in ({}, tls12):
        ctx = client_ctx(**kw)
        version, session, _ = round_trip(RESUME, ctx=ctx)
        h.check(session.has_ticket, "%s: a session ticket with session-tickets=2" % version)
        _, _, reused = round_trip(RESUME, ctx=ctx, session=session)
        h.check(reused, "%s session not resumed with session-tickets=2" % version)
    m.expect_increase("tls_sessions_resumed", before, by=2)
    h.check(", resumed)" in b.log_text(), "a resumed handshake is logged as one")
    # A resumed session with a client certificate (TLS 1.3 and 1.2): still
    # its CN, not the CONNECT's username.
    for kw in ({}, tls12):
        ctx = client_ctx("client", **kw)
        first = TlsClient(IDENTITY_RESUME, ctx=ctx)
        first.connect(h.uid("cn"))
        session = first.sock.session
        version = first.sock.version()
        first.disconnect()
        h.check(session.has_ticket, "%s: a ticket on the identity listener" % version)
        cid = h.uid("cn")
        c = TlsClient(IDENTITY_RESUME, ctx=ctx, session=session)
        c.connect(cid, username="somebody-else", password="x")
        h.check(c.sock.session_reused, "%s: the identity listener resumed the session" % version)
        h.check_eq(client_json(cid)["username"], "device-42",
                   "%s: username after resumption" % version)
        c.disconnect()
    m.expect_increase("tls_sessions_resumed", before, by=4)
    if h.RELAYMQ:
        h.check_eq(m.fresh("tls_sessions_resumed"), before + 4, "resumptions counted once")


def tls_node(key_file, tls_port, mutual_port=None):
    """A broker with a TLS listener sending a session ticket, sealed with
    key_file (None: its own random key), and optionally a second one that
    requires a client certificate."""
    opts = dict(tls_cert=path("server.crt"), tls_key=path("server.key"), tls_ca_file=CA,
                tls_session_tickets=1, http="%s:%d" % (h.HOST, h.free_port()))
    if key_file:
        opts["tls_ticket_key_file"] = key_file
    extra = ["--listen", "tls://%s:%d" % (h.HOST, tls_port)]
    if mutual_port:
        extra += ["--listen", "tls://%s:%d?require-certificate=true" % (h.HOST, mutual_port)]
    return h.Broker(extra=extra, **opts)


@T.case
def a_shared_ticket_key_resumes_on_another_node(b):
    """Nodes given the same --tls-ticket-key-file resume each other's
    sessions (TLS 1.3 and 1.2); a node with its own key makes a full
    handshake instead, and the client still gets in. A session made
    without a client certificate does not resume on a listener that
    requires one, though it shares the key: the client is refused."""
    h.relaymq_only("TLS ticket keys")
    shared, other = path("tickets.key"), path("other-tickets.key")
    for name in (shared, other):
        with open(name, "wb") as f:
            f.write(os.urandom(80))
    ports = [h.free_port() for _ in range(4)]
    with tls_node(shared, ports[0]), tls_node(shared, ports[1], mutual_port=ports[3]), \
            tls_node(other, ports[2]):
        for kw in ({}, dict(max_version=ssl.TLSVersion.TLSv1_2)):
            ctx = client_ctx(**kw)
            first = TlsClient(ports[0], ctx=ctx)
            first.connect(h.uid("tk"))
            session, version = first.sock.session, first.sock.version()
            first.disconnect()
            h.check(session.has_ticket, "%s: a ticket from the first node" % version)
            for port, want in ((ports[1], True), (ports[2], False)):
                c = TlsClient(port, ctx=ctx, session=session)
                c.connect(h.uid("tk"))
                h.check_eq(c.sock.session_reused, want,
                           "%s: resumed on the node with %s key" % (
                               version, "the same" if want else "another"))
                c.disconnect()
            resumed = False
            try:  # refused: no certificate, and the session does not resume here
                c = TlsClient(ports[3], ctx=ctx, session=session)
                resumed = c.sock.session_reused
                c.send(h.connect_packet(h.uid("tk")))
                c.wait_closed()
                c.close()
            except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
                pass
            h.check(not resumed, "%s: a session without a certificate resumed on a listener "
                    "that requires one" % version)
    # A key file that is not 80 bytes stops start-up with a clear message.
    short = path("short-tickets.key")
    with open(short, "wb") as f:
        f.write(os.urandom(79))
    r = subprocess.run([h.relaymq_bin(), "--listen", "tls://%s:%d" % (h.HOST, h.free_port()),
                        "--tls-cert", path("server.crt"), "--tls-key", path("server.key"),
                        "--tls-session-tickets", "1", "--tls-ticket-key-file", short,
                        "--http", "", "--allow-anonymous", "true"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=15,
                       env=h.broker_env())
    out = r.stdout.decode("utf-8", "replace")
    h.check_eq(r.returncode, 1, "exit status with a 79-byte ticket key (%s)" % out[-300:])
    h.check("must hold exactly 80 bytes" in out, "the message names the size: %s" % out[-300:])


@T.case
def slow_subscriber_gets_everything_without_pinging(b):
    """A burst to a subscriber with a small TCP window that reads nothing for
    a second: the broker's sends stay partial and records wait sealed in the
    compact session; all of it arrives intact once the subscriber reads,
    without the subscriber sending anything (QoS 0, no keepalive)."""
    h.relaymq_only("TLS listeners")
    topic = "tls/slow/" + h.uid()
    sub = TlsClient(ONEWAY, rcvbuf=4096)  # a small window: the broker's sends stay partial
    sub.connect(h.uid("slow"), keepalive=0)
    h.check_eq(sub.subscribe([(topic, 0)]), [0], "SUBACK")
    pub = tls_connected(ONEWAY)
    payloads = [os.urandom(200 * 1024) for _ in range(30)]
    for p in payloads:  # one burst
        pub.publish(topic, p, qos=0)
    time.sleep(1)  # nothing read meanwhile: the sockets fill up
    for i, want in enumerate(payloads):
        got = sub.recv_publish()
        h.check(got.payload == want, "payload %d differs" % i)
    sub.disconnect()
    pub.disconnect()


@T.case
def tls_behind_haproxy_with_proxy_v2(b):
    h.relaymq_only("TLS listeners")
    cid = h.uid("haptls")
    c = tls_connected(HAP.port["tls"], cid, cert="client")
    src = c.sock.getsockname()[1]
    h.check_eq(client_json(cid)["peer"], "%s:%d" % (h.HOST, src), "peer through HAProxy")
    c.disconnect()
    rc, out = mosq("mosquitto_pub", HAP.port["tls"], "tls/hap", ["--cafile", CA])
    h.check_eq(rc, 0, "mosquitto_pub over TLS through HAProxy: %s" % out)


@T.case
def min_version_13_refuses_tls12_client(b):
    h.relaymq_only("TLS listeners")
    m = b.metrics()
    before = m.fresh("tls_handshake_errors")
    try:
        TlsClient(TLS13, ctx=client_ctx(max_version=ssl.TLSVersion.TLSv1_2)).close()
        raise AssertionError("a TLS 1.2 client got through min-version=1.3")
    except (ssl.SSLError, ConnectionResetError):
        pass
    m.expect_increase("tls_handshake_errors", before, by=1)
    tls_connected(TLS13).disconnect()


@T.case
def garbage_plain_mqtt_and_silence_closed_cleanly(b):
    h.relaymq_only("TLS listeners")
    m = b.metrics()
    before = m.fresh("tls_handshake_errors")
    rnd = random.Random(7)
    closed_without_mqtt(ONEWAY, h.connect_packet(h.uid("plain")), "plain CONNECT")
    closed_without_mqtt(ONEWAY, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP request")
    closed_without_mqtt(MUTUAL, bytes(rnd.getrandbits(8) for _ in range(2000)), "random bytes")
    closed_without_mqtt(ONEWAY, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc" + b"\x00" * 64,
                        "a truncated ClientHello, then silence")
    closed_without_mqtt(IDENTITY, b"", "silence")
    m.expect_increase("tls_handshake_errors", before, by=5)
    h.check("TLS handshake not finished within 2000 ms" in b.log_text(), "timeout not logged")
    h.check(b.alive(), "broker died")
    tls_connected(ONEWAY).disconnect()


def server_cn(port):
    c = TlsClient(port)
    cert = c.sock.getpeercert()
    c.close()
    return dict(x[0] for x in cert["subject"])["commonName"]


@T.case
def sighup_reloads_certificate_for_new_connections(b):
    h.relaymq_only("SIGHUP reload")
    d = tempfile.mkdtemp(prefix="relaymq-it-tls-reload-", dir=TMP)
    crt, key = os.path.join(d, "live.crt"), os.path.join(d, "live.key")
    shutil.copy(path("server.crt"), crt)
    shutil.copy(path("server.key"), key)
    port = h.free_port()
    with h.Broker(tls_cert=crt, tls_key=key, tls_ca_file=CA,
                  extra=["--listen", "tls://%s:%d" % (h.HOST, port)]) as nb:
        h.check_eq(server_cn(port), "relaymq-test-server", "certificate before the reload")
        topic = "tls/reload/" + h.uid()
        old = tls_connected(port)
        h.check_eq(old.subscribe([(topic, 1)]), [1], "SUBACK")
        shutil.copy(path("server2.crt"), crt)
        shutil.copy(path("server2.key"), key)
        os.kill(nb.proc.pid, signal.SIGHUP)
        h.wait_until(lambda: "certificate, key, CA and ticket key files reloaded" in nb.log_text(),
                     what="reload logged")
        h.check_eq(server_cn(port), "relaymq-test-server-2", "certificate after the reload")
        # The connection opened before the reload carries on.
        h.mosq_pub(port, topic, "after reload", qos=1, extra=["--cafile", CA])
        h.check_eq(old.recv_publish().payload, b"after reload", "old connection's delivery")
        # Bad files: the listener keeps what it had.
        with open(key, "w") as f:
            f.write("not a key\n")
        os.kill(nb.proc.pid, signal.SIGHUP)
        h.wait_until(lambda: "keeps its previous certificate" in nb.log_text(),
                     what="failed reload logged")
        h.check_eq(server_cn(port), "relaymq-test-server-2", "certificate after a bad reload")
        old.disconnect()


def main():
    if h.RELAYMQ:
        HAP.start()
    try:
        T.main()
    finally:
        HAP.stop()
        shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
