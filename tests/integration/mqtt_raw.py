"""Hand-built MQTT 3.1/3.1.1 packets over a plain socket.

For exact wire checks and for input no real client would send: packet
builders (CONNECT, PUBLISH, SUBSCRIBE, ...), a Packet parser and RawClient,
a blocking client that sends bytes and reads whole packets. harness.py
re-exports all of it (`h.RawClient`, `h.connect_packet`, ...).
"""
import socket
import struct
import time

from harness_base import HOST, MQTTV31, MQTTV311, QUIET, WAIT, check, check_eq, uid


CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = range(8, 15)
TYPE_NAMES = {1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
              7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
              12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT"}


def varint(n):
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_str(s):
    b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
    return struct.pack("!H", len(b)) + b


def packet(first_byte, body=b""):
    return bytes([first_byte]) + varint(len(body)) + body


def connect_packet(client_id="", clean=True, keepalive=60, version=MQTTV311, will=None,
                   username=None, password=None, proto_name=None, flags=None):
    """will: (topic, payload, qos, retain). flags overrides the computed flags byte."""
    if proto_name is None:
        proto_name = "MQIsdp" if version == MQTTV31 else "MQTT"
    f = 0x02 if clean else 0
    payload = mqtt_str(client_id)
    if will is not None:
        topic, msg, qos, retain = will
        f |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += mqtt_str(topic) + mqtt_str(msg)
    if username is not None:
        f |= 0x80
        payload += mqtt_str(username)
    if password is not None:
        f |= 0x40
        payload += mqtt_str(password)
    if flags is not None:
        f = flags
    body = mqtt_str(proto_name) + bytes([version, f]) + struct.pack("!H", keepalive) + payload
    return packet(0x10, body)


def publish_packet(topic, payload=b"", qos=0, pid=None, retain=False, dup=False):
    if isinstance(payload, str):
        payload = payload.encode()
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = mqtt_str(topic)
    if qos:
        body += struct.pack("!H", pid)
    return packet(first, body + payload)


def subscribe_packet(pid, filters, first=0x82):
    """filters: [(filter, qos)]; a filter may be bytes (sent as is)."""
    body = struct.pack("!H", pid)
    for f, q in filters:
        body += mqtt_str(f) + bytes([q])
    return packet(first, body)


def unsubscribe_packet(pid, filters):
    return packet(0xA2, struct.pack("!H", pid) + b"".join(mqtt_str(f) for f in filters))


def ack_packet(kind, pid):
    """PUBACK, PUBREC, PUBREL (flags 0b0010) or PUBCOMP for pid."""
    first = {PUBACK: 0x40, PUBREC: 0x50, PUBREL: 0x62, PUBCOMP: 0x70}[kind]
    return packet(first, struct.pack("!H", pid))


PINGREQ_PACKET = packet(0xC0)
DISCONNECT_PACKET = packet(0xE0)


class Closed(Exception):
    """The broker closed the connection."""


class NoPacket(AssertionError):
    """An expected packet did not arrive in time (a failed expectation)."""


class Packet:
    def __init__(self, first, body):
        self.type = first >> 4
        self.flags = first & 0x0F
        self.body = body
        self.dup = bool(self.flags & 0x08)
        self.qos = (self.flags >> 1) & 0x03
        self.retain = bool(self.flags & 0x01)
        self.topic = None
        self.pid = None
        self.payload = None
        if self.type == PUBLISH:
            n = struct.unpack("!H", body[:2])[0]
            self.topic = body[2:2 + n].decode("utf-8")
            rest = body[2 + n:]
            if self.qos:
                self.pid = struct.unpack("!H", rest[:2])[0]
                rest = rest[2:]
            self.payload = rest
        elif self.type in (PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK) and len(body) >= 2:
            self.pid = struct.unpack("!H", body[:2])[0]

    @property
    def name(self):
        return TYPE_NAMES.get(self.type, "type%d" % self.type)

    def __repr__(self):
        if self.type == PUBLISH:
            return "PUBLISH(topic=%r qos=%d dup=%d retain=%d pid=%r payload=%r)" % (
                self.topic, self.qos, self.dup, self.retain, self.pid, self.payload[:40])
        return "%s(flags=0x%x body=%s)" % (self.name, self.flags, self.body[:40].hex())


class RawClient:
    """A plain socket speaking hand-built MQTT. Not thread-safe."""

    def __init__(self, port, host=HOST, timeout=WAIT, rcvbuf=None):
        """rcvbuf: a small receive buffer makes a slow reader (set before connecting)."""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.closed = False
        self.stash = []  # PUBLISHes that arrived while an ack was awaited

    def send(self, data):
        self.sock.sendall(data)

    def _read_some(self, deadline):
        if self.closed:
            raise Closed("connection already closed")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no packet")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no packet") from None
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.closed = True
            raise Closed("closed by broker")
        self.buf += data

    def recv_packet(self, timeout=WAIT):
        """Next whole packet; raises Closed on EOF/RST, TimeoutError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                length, mult, i = 0, 1, 1
                while i < len(self.buf) and i <= 4:
                    b = self.buf[i]
                    length += (b & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        if len(self.buf) >= i + length:
                            first, body = self.buf[0], self.buf[i:i + length]
                            self.buf = self.buf[i + length:]
                            return Packet(first, body)
                        break
            self._read_some(deadline)

    def expect(self, kind, timeout=WAIT, what="", stash_publish=False):
        """The next packet, which must be of type kind. With stash_publish, a
        PUBLISH arriving first is kept for recv_publish (a client subscribed to
        its own topic gets its message and its ack in either order)."""
        if kind == PUBLISH and self.stash:
            return self.stash.pop(0)
        try:
            p = self.recv_packet(timeout)
            while stash_publish and kind != PUBLISH and p.type == PUBLISH:
                self.stash.append(p)
                p = self.recv_packet(timeout)
        except Closed:
            raise AssertionError("%sexpected %s, the broker closed the connection"
                                 % (what + ": " if what else "", TYPE_NAMES[kind])) from None
        except TimeoutError:
            raise NoPacket("%sexpected %s, nothing arrived within %.0fs"
                           % (what + ": " if what else "", TYPE_NAMES[kind], timeout)) from None
        if p.type != kind:
            raise AssertionError("%sexpected %s, got %r" % (what + ": " if what else "",
                                                            TYPE_NAMES[kind], p))
        return p

    def expect_nothing(self, timeout=QUIET, what="no packet"):
        """Fails if a packet (or a close) arrives within timeout."""
        check(not self.stash, "%s: expected nothing, got %r" % (what, self.stash))
        try:
            p = self.recv_packet(timeout)
        except TimeoutError:
            return
        except Closed:
            raise AssertionError("%s: expected nothing, the broker closed the connection" % what)
        raise AssertionError("%s: expected nothing, got %r" % (what, p))

    def wait_closed(self, timeout=WAIT):
        """Reads until EOF/RST. Returns the packets received before the close;
        fails the case if the connection stays open for timeout."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            try:
                got.append(self.recv_packet(max(0.0, deadline - time.monotonic())))
            except Closed:
                return got
            except TimeoutError:
                raise AssertionError("connection still open after %.0fs (received %r)"
                                     % (timeout, got)) from None

    def connect(self, client_id="", rc=0, **kw):
        """Sends CONNECT, expects a CONNACK with return code rc; returns session-present."""
        self.send(connect_packet(client_id, **kw))
        p = self.expect(CONNACK, what="CONNECT %r" % client_id)
        check_eq(len(p.body), 2, "CONNACK remaining length")
        check_eq(p.body[1], rc, "CONNACK return code")
        return bool(p.body[0] & 0x01)

    def subscribe(self, filters, pid=1):
        """filters: [(filter, qos)] or a single filter string (QoS 0). Returns SUBACK codes."""
        if isinstance(filters, str):
            filters = [(filters, 0)]
        self.send(subscribe_packet(pid, filters))
        p = self.expect(SUBACK, what="SUBSCRIBE")
        check_eq(p.pid, pid, "SUBACK packet id")
        return list(p.body[2:])

    def publish(self, topic, payload=b"", qos=0, pid=1, retain=False, dup=False):
        """Publishes and completes the QoS flow (PUBACK, or PUBREC/PUBREL/PUBCOMP)."""
        self.send(publish_packet(topic, payload, qos, pid, retain, dup))
        if qos == 1:
            check_eq(self.expect(PUBACK, stash_publish=True).pid, pid, "PUBACK packet id")
        elif qos == 2:
            check_eq(self.expect(PUBREC, stash_publish=True).pid, pid, "PUBREC packet id")
            self.send(ack_packet(PUBREL, pid))
            check_eq(self.expect(PUBCOMP, stash_publish=True).pid, pid, "PUBCOMP packet id")

    def recv_publish(self, timeout=WAIT, ack=True):
        """The next PUBLISH; with ack, completes its QoS flow as a receiver."""
        p = self.expect(PUBLISH, timeout)
        if ack and p.qos == 1:
            self.send(ack_packet(PUBACK, p.pid))
        elif ack and p.qos == 2:
            self.send(ack_packet(PUBREC, p.pid))
            check_eq(self.expect(PUBREL, stash_publish=True).pid, p.pid, "PUBREL packet id")
            self.send(ack_packet(PUBCOMP, p.pid))
        return p

    def disconnect(self):
        try:
            self.send(DISCONNECT_PACKET)
        except OSError:
            pass
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
        self.closed = True


def raw_connected(port, client_id=None, **kw):
    """A RawClient that has completed CONNECT/CONNACK 0."""
    c = RawClient(port)
    c.connect(uid("raw") if client_id is None else client_id, **kw)
    return c
