"""Real client addresses behind load balancers (issue 22 point 6), with
Debian's haproxy in front of the gateway: PROXY protocol v2 and v1 (what AWS
NLBs and haproxy's send-proxy send) and X-Forwarded-For (haproxy in HTTP
mode), each believed only from the configured trusted proxies. Checked:
remote_addr in UserConnections is the client's; the per-address cap applies
per client, not to the proxy; a spoofed PROXY header or X-Forwarded-For from
an untrusted peer changes nothing, and a trusted peer without its header is
refused. Clients are raw sockets bound to their own 127.0.0.x address."""
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Cluster, Proc, parse_args, wait_until  # noqa: E402

ARGS = None
LB = "127.0.0.50"      # haproxy's source address towards the gateway (trusted)
HTTP_LB = "127.0.0.51"  # the HTTP-mode haproxy's (trusted by the second gateway)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def masked(payload):
    data, mask = payload.encode(), b"\x01\x02\x03\x04"
    n = len(data)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n))
    return head + mask + bytes(x ^ mask[i % 4] for i, x in enumerate(data))


def upgrade(port, src, extra_headers="", preamble=b""):
    """A WebSocket upgrade from `src`; returns (socket, HTTP status or 0 when closed)."""
    s = socket.socket()
    s.bind((src, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    s.sendall(preamble + ("GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          "Sec-WebSocket-Version: 13\r\n%s\r\n" % extra_headers).encode())
    head = b""
    try:
        while b"\r\n\r\n" not in head:
            chunk = s.recv(1)
            if not chunk:
                break
            head += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.") else 0
    return s, status


def connect_session(cluster, port, src, user, **kw):
    s, status = upgrade(port, src, **kw)
    assert status == 101, (src, status)
    s.sendall(masked(json.dumps({"id": 1, "connect": {"token": cluster.token(user)}})))
    reply = s.recv(4096)
    assert b'"connect"' in reply, reply
    return s


def addresses(cluster, user):
    out = json.loads(cluster.ctl("connections", "--user", user))["result"]
    return sorted(c.get("remote_addr", "") for c in out.get("connections", {}).values())


def start_haproxy(tmp, sections):
    cfg = os.path.join(tmp, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write("global\n  maxconn 1000\ndefaults\n  timeout connect 5s\n  timeout client 60s\n"
                "  timeout server 60s\n  timeout tunnel 60s\n" + sections)
    check = subprocess.run(["haproxy", "-c", "-f", cfg], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    return Proc("haproxy", ["haproxy", "-db", "-f", cfg])


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class ProxyProtocolTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=1, http=False, gateway_extra={
            "trusted_proxies": "[%s/32]" % LB, "proxy_protocol": "true", "max_connections_per_ip": 2})
        cls.gw_port = cls.c.gateways["gw-1"][1]
        cls.v2, cls.v1 = free_port(), free_port()
        cls.tmp = tempfile.mkdtemp(prefix="switchboard-haproxy-")
        cls.haproxy = start_haproxy(cls.tmp, (
            "frontend v2\n  mode tcp\n  bind 127.0.0.1:%d\n  default_backend gw_v2\n"
            "backend gw_v2\n  mode tcp\n  server gw 127.0.0.1:%d send-proxy-v2 source %s\n"
            "frontend v1\n  mode tcp\n  bind 127.0.0.1:%d\n  default_backend gw_v1\n"
            "backend gw_v1\n  mode tcp\n  server gw 127.0.0.1:%d send-proxy source %s\n")
            % (cls.v2, cls.gw_port, LB, cls.v1, cls.gw_port, LB))
        wait_until(lambda: listening(cls.v2) and listening(cls.v1), 15, "haproxy listening")

    @classmethod
    def tearDownClass(cls):
        cls.haproxy.stop()
        cls.c.close()

    def test_remote_addr_is_the_clients_through_v2_and_v1(self):
        a = connect_session(self.c, self.v2, "127.0.0.7", "px-a")
        b = connect_session(self.c, self.v1, "127.0.0.8", "px-a")
        try:
            self.assertEqual(addresses(self.c, "px-a"), ["127.0.0.7", "127.0.0.8"])
        finally:
            a.close()
            b.close()

    def test_the_per_address_cap_is_per_client_not_per_proxy(self):
        held = []
        try:
            for _ in range(2):
                s, status = upgrade(self.v2, "127.0.0.9")
                held.append(s)
                self.assertEqual(status, 101)
            s, status = upgrade(self.v2, "127.0.0.9")  # a third from the same client: over its cap
            held.append(s)
            self.assertEqual(status, 503)
            for src in ("127.0.0.10", "127.0.0.11", "127.0.0.12"):  # everyone else still gets in
                s, status = upgrade(self.v2, src)
                held.append(s)
                self.assertEqual(status, 101, src)
        finally:
            for s in held:
                s.close()

    def test_spoofed_headers_from_an_untrusted_peer_change_nothing(self):
        # A PROXY header straight to the gateway from an untrusted address is
        # just a bad request; X-Forwarded-For from it is ignored.
        s, status = upgrade(self.gw_port, "127.0.0.13", preamble=b"PROXY TCP4 6.6.6.6 10.0.0.1 1 2\r\n")
        if status == 101:  # lws skips the line it cannot read: the session is the peer's, as it is
            s.sendall(masked(json.dumps({"id": 1, "connect": {"token": self.c.token("px-spoof")}})))
            self.assertIn(b'"connect"', s.recv(4096))
            self.assertEqual(addresses(self.c, "px-spoof"), ["127.0.0.13"])
        s.close()
        wait_until(lambda: addresses(self.c, "px-spoof") == [], 10, "the first session gone")
        s = connect_session(self.c, self.gw_port, "127.0.0.13", "px-spoof", extra_headers="X-Forwarded-For: 6.6.6.6\r\n")
        try:
            self.assertEqual(addresses(self.c, "px-spoof"), ["127.0.0.13"])
        finally:
            s.close()

    def test_a_trusted_peer_without_its_header_is_refused(self):
        s, status = upgrade(self.gw_port, LB)
        s.close()
        self.assertEqual(status, 0)  # closed before any answer
        self.c.gateways["gw-1"][0].wait_line(r"did not start with a valid PROXY header \(not a PROXY header\)")
        # And the gateway goes on serving everyone.
        a = connect_session(self.c, self.v2, "127.0.0.14", "px-after")
        a.close()


class ForwardedForTest(unittest.TestCase):
    def test_x_forwarded_for_from_a_trusted_http_proxy_names_the_client(self):
        c = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=1, http=False,
                    gateway_extra={"trusted_proxies": "[%s]" % HTTP_LB})
        tmp = tempfile.mkdtemp(prefix="switchboard-haproxy-")
        port = free_port()
        haproxy = start_haproxy(tmp, (
            "frontend web\n  mode http\n  bind 127.0.0.1:%d\n  option forwardfor\n  default_backend gw\n"
            "backend gw\n  mode http\n  server gw 127.0.0.1:%d source %s\n") % (port, c.gateways["gw-1"][1], HTTP_LB))
        try:
            wait_until(lambda: listening(port), 15, "haproxy listening")
            # The client writes its own X-Forwarded-For: haproxy appends the
            # address it saw, and only that one is believed.
            s = connect_session(c, port, "127.0.0.21", "xff", extra_headers="X-Forwarded-For: 6.6.6.6\r\n")
            try:
                self.assertEqual(addresses(c, "xff"), ["127.0.0.21"])
            finally:
                s.close()
        finally:
            haproxy.stop()
            c.close()


if __name__ == "__main__":
    ARGS, argv = parse_args()
    unittest.main(argv=argv, verbosity=2)
