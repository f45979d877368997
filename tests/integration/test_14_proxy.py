"""PROXY protocol listeners behind a real HAProxy (send-proxy = v1,
send-proxy-v2 = v2): the admin API shows the client's own address and
source port (not HAProxy's), MQTT flows through unchanged; headers by hand
(split into pieces, IPv6, v2 LOCAL, TLVs, the CONNECT in the same write);
and every connection without a valid header (none, the wrong version,
garbage, too long, too slow) is closed without a CONNACK, logged and
counted in proxy_errors while the broker stays up."""
import http.client
import json
import os
import random
import re
import socket
import struct
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from haproxy_harness import HAProxy  # noqa: E402

KEY = "proxy-key-" + h.uid("k")
HTTP_PORT = h.free_port()
V1, V2, ANY = h.free_port(), h.free_port(), h.free_port()
SIG = b"\r\n\r\n\x00\r\nQUIT\n"

T = h.Tests(http="%s:%d" % (h.HOST, HTTP_PORT), api_key=KEY, connect_timeout="2s",
            extra=["--listen", "tcp://%s:%d?proxy-protocol=v1" % (h.HOST, V1),
                   "--listen", "tcp://%s:%d?proxy-protocol=v2" % (h.HOST, V2),
                   "--listen", "%s:%d?proxy-protocol=on" % (h.HOST, ANY)])
HAP = HAProxy({"v1": (V1, "send-proxy"), "v2": (V2, "send-proxy-v2")})


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


def v2_header(cmd=0x21, fam=0x11, body=b""):
    return SIG + bytes([cmd, fam]) + struct.pack("!H", len(body)) + body


def v2_inet(src, sport, dst="127.0.0.1", dport=1883):
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)


def refused(port, data, what):
    """Sends data, expects the broker to close with no packet at all."""
    c = h.RawClient(port)
    try:
        if data:
            c.send(data)
        got = c.wait_closed()
    finally:
        c.close()
    h.check_eq(got, [], "%s: packets before the close" % what)


def through_haproxy(b, route, version):
    h.relaymq_only("PROXY protocol")
    cid = h.uid("hap%d" % version)
    c = h.RawClient(HAP.port[route])
    src = c.sock.getsockname()[1]
    c.connect(cid)
    doc = client_json(cid)
    h.check_eq(doc["peer"], "%s:%d" % (h.HOST, src), "peer in the admin API")
    # The socket the broker accepted is HAProxy's, from another port.
    m = re.search(r"client 127\.0\.0\.1:%d through proxy 127\.0\.0\.1:(\d+) \(PROXY v(\d)\)"
                  % src, b.log_text())
    h.check(m, "no log line naming the client and the proxy")
    h.check(int(m.group(1)) != src, "proxy port equals the client's")
    h.check_eq(int(m.group(2)), version, "PROXY version in the log")
    # The bytes after the header are MQTT, untouched both ways.
    topic = "proxy/%s" % cid
    h.check_eq(c.subscribe([(topic, 1)]), [1], "SUBACK")
    c.publish(topic, b"through haproxy", qos=1)
    p = c.recv_publish()
    h.check_eq((p.topic, p.payload), (topic, b"through haproxy"), "own publish back")
    c.disconnect()


@T.case
def haproxy_send_proxy_v1_gives_client_address(b):
    through_haproxy(b, "v1", 1)


@T.case
def haproxy_send_proxy_v2_gives_client_address(b):
    through_haproxy(b, "v2", 2)


@T.case
def mosquitto_clients_through_haproxy(b):
    h.relaymq_only("PROXY protocol")
    topic = "proxy/mosq/" + h.uid()
    with h.MosqSub(HAP.port["v2"], topic, qos=1) as sub:
        h.mosq_pub(HAP.port["v1"], topic, "hello via v1", qos=1)
        h.check_eq(sub.take(1)[0].payload, b"hello via v1", "mosquitto_sub via v2")


@T.case
def connection_without_header_refused_logged_counted(b):
    h.relaymq_only("PROXY protocol")
    m = b.metrics()
    before = m.fresh("proxy_errors")
    connect = h.connect_packet(h.uid("nohdr"))
    for port in (V1, V2, ANY):
        refused(port, connect, "CONNECT without a header on %d" % port)
    m.expect_increase("proxy_errors", before, by=3)
    h.check("no valid PROXY header on a PROXY protocol listener" in b.log_text(),
            "refusal not logged")
    # The plain listener of the same broker is not affected.
    h.raw_connected(b.port).disconnect()


@T.case
def version_the_listener_does_not_accept_refused(b):
    h.relaymq_only("PROXY protocol")
    m = b.metrics()
    before = m.fresh("proxy_errors")
    refused(V2, b"PROXY TCP4 10.0.0.1 10.0.0.2 1000 1883\r\n" + h.connect_packet("x"), "v1 on v2")
    refused(V1, v2_header(body=v2_inet("10.0.0.1", 1000)) + h.connect_packet("x"), "v2 on v1")
    m.expect_increase("proxy_errors", before, by=2)


@T.case
def v1_header_in_pieces_with_ipv6_address(b):
    h.relaymq_only("PROXY protocol")
    cid = h.uid("v6")
    data = b"PROXY TCP6 2001:db8::5 ::1 6000 1883\r\n" + h.connect_packet(cid)
    c = h.RawClient(ANY)
    for i in range(0, len(data), 4):
        c.send(data[i:i + 4])
        time.sleep(0.01)
    p = c.expect(h.CONNACK, what="CONNECT after a header in pieces")
    h.check_eq(p.body[1], 0, "CONNACK code")
    h.check_eq(client_json(cid)["peer"], "[2001:db8::5]:6000", "peer")
    c.disconnect()


@T.case
def v2_with_tlvs_and_connect_in_one_write(b):
    h.relaymq_only("PROXY protocol")
    cid = h.uid("tlv")
    tlvs = b"\x04\x00\x03abc" + b"\x01\x00\x02h2"  # NOOP and ALPN, skipped
    c = h.RawClient(V2)
    c.send(v2_header(body=v2_inet("198.51.100.7", 40000) + tlvs) + h.connect_packet(cid))
    h.check_eq(c.expect(h.CONNACK).body[1], 0, "CONNACK code")
    h.check_eq(client_json(cid)["peer"], "198.51.100.7:40000", "peer")
    c.disconnect()


@T.case
def v2_local_and_v1_unknown_keep_socket_address(b):
    h.relaymq_only("PROXY protocol")
    for port, header in ((V2, v2_header(cmd=0x20, fam=0x00)), (V1, b"PROXY UNKNOWN\r\n")):
        cid = h.uid("local")
        c = h.RawClient(port)
        src = c.sock.getsockname()[1]
        c.send(header + h.connect_packet(cid))
        h.check_eq(c.expect(h.CONNACK).body[1], 0, "CONNACK code")
        h.check_eq(client_json(cid)["peer"], "%s:%d" % (h.HOST, src), "peer")
        c.disconnect()


@T.case
def silent_or_slow_header_closed_at_connect_timeout(b):
    h.relaymq_only("PROXY protocol")
    m = b.metrics()
    before = m.fresh("proxy_errors")
    refused(ANY, b"", "nothing sent")
    refused(ANY, b"PROXY TCP4 10.0.0.1 ", "half a v1 header")
    refused(V2, SIG[:8], "half a v2 signature")
    m.expect_increase("proxy_errors", before, by=3)
    h.check("no complete PROXY header within 2000 ms" in b.log_text(), "timeout not logged")


@T.case
def garbage_and_oversized_headers_refused_broker_alive(b):
    h.relaymq_only("PROXY protocol")
    m = b.metrics()
    before = m.fresh("proxy_errors")
    rnd = random.Random(14)
    refused(ANY, v2_header()[:14] + b"\xff\xff" + bytes(100), "v2 length 65535")
    refused(ANY, b"PROXY " + b"A" * 200 + b"\r\n", "v1 line over 107 bytes")
    refused(ANY, b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n", "v1 port out of range")
    refused(ANY, b"\x16\x03\x01\x00\x05hello", "a TLS ClientHello")
    for _ in range(5):
        refused(ANY, bytes(rnd.getrandbits(8) for _ in range(300)).replace(b"P", b"Q")
                .replace(b"\r", b"\n"), "random bytes")
    m.expect_increase("proxy_errors", before, by=9)
    h.check(b.alive(), "broker died")
    through_haproxy(b, "v2", 2)


def main():
    if h.RELAYMQ:
        HAP.start()
    try:
        T.main()
    finally:
        HAP.stop()


if __name__ == "__main__":
    main()
