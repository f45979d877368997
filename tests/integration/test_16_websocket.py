"""MQTT over WebSocket (ws:// and wss:// listeners, path /mqtt, subprotocol
mqtt): paho-mqtt's websocket transport exchanges messages both ways with
plain TCP clients, large payloads included, also over TLS and behind
HAProxy with a PROXY v2 header (the admin API shows the client's own
address). A hand-built WebSocket client checks the wire: the 101 answer and
its Sec-WebSocket-Accept, subprotocol choice, CONNECT split over fragments
with a ping between them (answered by a pong), the close handshake (and
the will it triggers), and the refusals: wrong path 404, not an upgrade
400, version 8 426, no mqtt among offered subprotocols 400, text and
unmasked frames closed with 1003/1002, silence closed at connect-timeout;
each logged and counted while the broker stays up."""
import base64
import hashlib
import http.client
import json
import os
import random
import shutil
import socket
import struct
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from haproxy_harness import HAProxy  # noqa: E402
from pki_harness import Pki  # noqa: E402

import paho.mqtt.client as mqtt  # noqa: E402

TMP = tempfile.mkdtemp(prefix="relaymq-it-ws-")
PKI = Pki(TMP)
KEY = "ws-key-" + h.uid("k")
HTTP_PORT = h.free_port()
WS, WSS, BEHIND = h.free_port(), h.free_port(), h.free_port()
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

T = h.Tests(http="%s:%d" % (h.HOST, HTTP_PORT), api_key=KEY, connect_timeout="2s",
            tls_cert=PKI.crt("server"), tls_key=PKI.key("server"),
            extra=["--listen", "ws://%s:%d" % (h.HOST, WS),
                   "--listen", "wss://%s:%d" % (h.HOST, WSS),
                   "--listen", "ws://%s:%d?proxy-protocol=v2" % (h.HOST, BEHIND)])
HAP = HAProxy({"ws": (BEHIND, "send-proxy-v2")})


# --------------------------------------------------------------------------
# helpers


class WsPaho(h.Paho):
    """harness.Paho over paho's websocket transport (path /mqtt)."""

    def __init__(self, port, tls=False, will=None, **kw):
        super().__init__(port, **kw)
        c = mqtt.Client(client_id=self.client_id, clean_session=True,
                        protocol=mqtt.MQTTv311, transport="websockets")
        c.ws_set_options(path="/mqtt")
        if tls:
            c.tls_set(ca_certs=PKI.ca)
        if will is not None:
            c.will_set(*will)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_unsubscribe = self._on_unsubscribe
        # Only the loop thread may write: paho 1.6's websocket wrapper keeps
        # one partly sent frame, and a publish() writing from the caller's
        # thread at the same time corrupts the stream (seen as a 4-byte
        # PUBACK frame swallowing a PUBLISH's fixed header). With this hook
        # set, publish() leaves the writing to loop().
        c.on_socket_register_write = lambda client, userdata, sock: None
        self.c = c


def client_json(client_id):
    conn = http.client.HTTPConnection(h.HOST, HTTP_PORT, timeout=h.WAIT)
    try:
        conn.request("GET", "/api/v1/clients/" + client_id,
                     headers={"Authorization": "Bearer " + KEY})
        r = conn.getresponse()
        body = r.read()
    finally:
        conn.close()
    h.check_eq(r.status, 200, "GET /api/v1/clients/%s (%r)" % (client_id, body[:200]))
    return json.loads(body)


def client_frame(opcode, payload, fin=True, masked=True):
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    m = 0x80 if masked else 0
    if n < 126:
        head += bytes([m | n])
    elif n <= 0xffff:
        head += bytes([m | 126]) + struct.pack("!H", n)
    else:
        head += bytes([m | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    return head + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(payload))


class RawWs:
    """A hand-built WebSocket client: handshake, frames in, frames out."""

    def __init__(self, port, path="/mqtt", protocol="mqtt", version="13", extra_headers="",
                 upgrade=True):
        self.sock = socket.create_connection((h.HOST, port), timeout=h.WAIT)
        self.key = base64.b64encode(os.urandom(16)).decode()
        req = "GET %s HTTP/1.1\r\nHost: %s:%d\r\n" % (path, h.HOST, port)
        if upgrade:
            req += "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        req += "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: %s\r\n" % (self.key, version)
        if protocol:
            req += "Sec-WebSocket-Protocol: %s\r\n" % protocol
        self.request = (req + extra_headers + "\r\n").encode()
        self.buf = b""

    def handshake(self, trailing=b""):
        """Sends the request (with trailing bytes right behind it); returns
        (status line, headers dict lower-cased)."""
        self.sock.sendall(self.request + trailing)
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise h.Closed("closed during the handshake: %r" % self.buf)
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
        return lines[0], headers

    def expected_accept(self):
        return base64.b64encode(hashlib.sha1((self.key + GUID).encode()).digest()).decode()

    def send(self, data):
        self.sock.sendall(data)

    def recv_frame(self, timeout=h.WAIT):
        """(opcode, payload) of the next server frame; raises Closed at EOF."""
        deadline = time.monotonic() + timeout

        def need(n):
            while len(self.buf) < n:
                self.sock.settimeout(max(0.05, deadline - time.monotonic()))
                try:
                    chunk = self.sock.recv(65536)
                except socket.timeout:
                    raise TimeoutError("no frame") from None
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    raise h.Closed("closed by broker")
                self.buf += chunk
        need(2)
        h.check(not self.buf[1] & 0x80, "server frame is masked")
        n, at = self.buf[1] & 0x7f, 2
        if n == 126:
            need(4)
            n, at = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            need(10)
            n, at = struct.unpack("!Q", self.buf[2:10])[0], 10
        need(at + n)
        opcode, payload = self.buf[0] & 0x0f, self.buf[at:at + n]
        h.check(self.buf[0] & 0x80, "server frame without FIN")
        self.buf = self.buf[at + n:]
        return opcode, payload

    def mqtt_packet(self):
        """The next MQTT packet from binary frames (gathering across them)."""
        data = b""
        while True:
            if len(data) >= 2:
                length, mult, i = 0, 1, 1
                while i < len(data):
                    length += (data[i] & 0x7f) * mult
                    mult *= 128
                    i += 1
                    if not data[i - 1] & 0x80:
                        break
                if len(data) >= i + length:
                    h.check_eq(len(data), i + length, "bytes after the packet in its frames")
                    return h.Packet(data[0], data[i:i + length])
            op, payload = self.recv_frame()
            h.check_eq(op, 2, "opcode of a frame carrying MQTT")
            data += payload

    def wait_closed(self, timeout=h.WAIT):
        """Frames until EOF; returns them."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                got.append(self.recv_frame(max(0.05, deadline - time.monotonic())))
            except h.Closed:
                return got
            except TimeoutError:
                raise AssertionError("WebSocket still open after %.0fs (%r)"
                                     % (timeout, got)) from None

    def close(self):
        self.sock.close()


def refused_with(b, raw, status, what):
    line, headers = raw.handshake()
    h.check(line.startswith("HTTP/1.1 %d " % status), "%s: answer %r" % (what, line))
    raw.wait_closed()
    raw.close()
    return headers


# --------------------------------------------------------------------------
# cases


@T.case
def paho_over_websocket_both_ways(b):
    h.relaymq_only("WebSocket listeners")
    topic = "ws/both/" + h.uid()
    big = bytes(random.Random(16).getrandbits(8) for _ in range(200 * 1024))
    with WsPaho(WS) as ws, h.Paho(b.port) as tcp:
        ws.subscribe(topic + "/down", 1)
        tcp.subscribe(topic + "/up", 1)
        # Plain TCP -> WebSocket, small and large (a copy per WebSocket client).
        tcp.publish(topic + "/down", b"to the browser", qos=1)
        tcp.publish(topic + "/down", big, qos=1)
        got = ws.take(2)
        h.check_eq(got[0].payload, b"to the browser", "small payload over ws")
        h.check(got[1].payload == big, "200 KiB payload over ws differs")
        # WebSocket -> plain TCP, the large one gathered across frames and reads.
        ws.publish(topic + "/up", big, qos=1)
        ws.publish(topic + "/up", b"from the browser", qos=0)
        got = tcp.take(2)
        h.check(got[0].payload == big, "200 KiB payload from ws differs")
        h.check_eq(got[1].payload, b"from the browser", "small payload from ws")


@T.case
def paho_over_wss(b):
    h.relaymq_only("WebSocket listeners")
    topic = "ws/tls/" + h.uid()
    with WsPaho(WSS, tls=True) as ws:
        ws.subscribe(topic, 1)
        h.mosq_pub(b.port, topic, "over wss", qos=1)
        h.check_eq(ws.get().payload, b"over wss", "message over wss")
    h.check("WebSocket established on /mqtt" in b.log_text(), "upgrade not logged")


@T.case
def websocket_behind_haproxy_with_proxy_v2(b):
    h.relaymq_only("WebSocket listeners")
    cid = h.uid("wshap")
    raw = RawWs(HAP.port["ws"])
    src = raw.sock.getsockname()[1]
    line, _ = raw.handshake(trailing=client_frame(2, h.connect_packet(cid)))
    h.check(line.startswith("HTTP/1.1 101 "), "answer %r" % line)
    h.check_eq(raw.mqtt_packet().type, h.CONNACK, "CONNACK through HAProxy")
    h.check_eq(client_json(cid)["peer"], "%s:%d" % (h.HOST, src), "peer through HAProxy")
    raw.send(client_frame(2, h.DISCONNECT_PACKET))
    raw.close()


@T.case
def handshake_answer_and_subprotocol_choice(b):
    h.relaymq_only("WebSocket listeners")
    for offered, chosen in (("mqtt", "mqtt"), ("mqttv3.1", "mqttv3.1"),
                            ("chat, mqtt", "mqtt"), (None, None)):
        raw = RawWs(WS, protocol=offered)
        line, headers = raw.handshake()
        h.check(line.startswith("HTTP/1.1 101 "), "status line %r" % line)
        h.check_eq(headers.get("upgrade", "").lower(), "websocket", "Upgrade")
        h.check_eq(headers.get("sec-websocket-accept"), raw.expected_accept(),
                   "Sec-WebSocket-Accept")
        h.check_eq(headers.get("sec-websocket-protocol"), chosen, "subprotocol for %r" % offered)
        raw.close()


@T.case
def connect_in_fragments_with_ping_and_close_handshake_publishes_will(b):
    h.relaymq_only("WebSocket listeners")
    topic = "ws/will/" + h.uid()
    watcher = h.raw_connected(b.port)
    h.check_eq(watcher.subscribe([(topic, 1)]), [1], "SUBACK")
    raw = RawWs(WS)
    h.check(raw.handshake()[0].startswith("HTTP/1.1 101 "), "no 101")
    packet = h.connect_packet(h.uid("frag"), will=(topic, b"ws client gone", 1, False))
    raw.send(client_frame(2, packet[:3], fin=False))
    raw.send(client_frame(9, b"are you there", fin=True))
    raw.send(client_frame(0, packet[3:10], fin=False))
    raw.send(client_frame(0, packet[10:], fin=True))
    op, payload = raw.recv_frame()
    h.check_eq((op, payload), (0xa, b"are you there"), "pong with the ping's payload")
    p = raw.mqtt_packet()
    h.check_eq((p.type, p.body[1]), (h.CONNACK, 0), "CONNACK")
    # PINGREQ inside a frame, PINGRESP back inside one.
    raw.send(client_frame(2, h.PINGREQ_PACKET))
    h.check_eq(raw.mqtt_packet().type, h.PINGRESP, "PINGRESP")
    # Close without DISCONNECT: the close is echoed, the will published.
    raw.send(client_frame(8, struct.pack("!H", 1000) + b"bye"))
    frames = raw.wait_closed()
    h.check(frames and frames[-1][0] == 8, "close frame not echoed: %r" % frames)
    p = watcher.recv_publish()
    h.check_eq((p.topic, p.payload), (topic, b"ws client gone"), "will")
    raw.close()
    watcher.disconnect()


@T.case
def handshake_refusals_answered_logged_counted(b):
    h.relaymq_only("WebSocket listeners")
    m = b.metrics()
    before = m.fresh("ws_handshake_errors")
    refused_with(b, RawWs(WS, path="/other"), 404, "wrong path")
    refused_with(b, RawWs(WS, upgrade=False), 400, "not an upgrade")
    headers = refused_with(b, RawWs(WS, version="8"), 426, "version 8")
    h.check_eq(headers.get("sec-websocket-version"), "13", "426 names the version")
    refused_with(b, RawWs(WS, protocol="chat"), 400, "no mqtt subprotocol")
    # Plain MQTT on a WebSocket port, and silence: closed, no answer.
    c = h.RawClient(WS)
    c.send(h.connect_packet(h.uid("plain")))
    h.check_eq(c.wait_closed(), [], "plain MQTT on ws")
    c.close()
    c = h.RawClient(WS)
    h.check_eq(c.wait_closed(), [], "silence on ws")
    c.close()
    m.expect_increase("ws_handshake_errors", before, by=6)
    log = b.log_text()
    h.check("WebSocket handshake refused: no WebSocket endpoint at that path" in log,
            "404 not logged")
    h.check("no complete WebSocket handshake within 2000 ms" in log, "timeout not logged")
    h.check(b.alive(), "broker died")


@T.case
def bad_frames_closed_with_their_codes(b):
    h.relaymq_only("WebSocket listeners")
    m = b.metrics()
    before = m.fresh("protocol_errors")
    for frame, code in ((client_frame(1, b"text is not MQTT"), 1003),
                        (client_frame(2, h.connect_packet("x"), masked=False), 1002),
                        (b"\xc2\x80abcd", 1002),
                        (client_frame(0, b"orphan continuation"), 1002)):
        raw = RawWs(WS)
        h.check(raw.handshake()[0].startswith("HTTP/1.1 101 "), "no 101")
        raw.send(frame)
        frames = raw.wait_closed()
        h.check(frames and frames[-1][0] == 8, "no close frame: %r" % frames)
        h.check_eq(struct.unpack("!H", frames[-1][1][:2])[0], code, "close code")
        raw.close()
    m.expect_increase("protocol_errors", before, by=4)
    h.check("WebSocket protocol error: text frame" in b.log_text(), "not logged")
    # Still serving.
    with WsPaho(WS) as ws:
        ws.subscribe("ws/alive", 0)


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
