"""The whole cluster with TLS on every link, certificates made here with the
openssl CLI (a throwaway CA): NATS (tls://), control's gRPC (gateways, the
CLI, grpcio, switchboard-http all verify it), wss:// and https:// on the
gateways, HTTPS on switchboard-http. Clients: centrifuge-js over wss, curl
with --cacert, grpcio with the CA. Plaintext attempts are refused."""
import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Cluster, Driver, Proc, load_stubs, parse_args, wait_until  # noqa: E402

ARGS = None
API_KEY = (("authorization", "apikey test-api-key-1234"),)


def make_certs(d):
    """A CA and a server certificate for 127.0.0.1 / localhost (ECDSA P-256)."""
    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True, cwd=d)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=switchboard test CA")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return {"ca": os.path.join(d, "ca.pem"), "cert": os.path.join(d, "server.pem"),
            "key": os.path.join(d, "server.key")}


def setUpModule():
    global cluster, driver, pb, stub, channel, certs
    load_stubs(ARGS.source_dir)
    from switchboard.v1 import control_pb2, control_pb2_grpc
    pb = control_pb2
    certs = make_certs(tempfile.mkdtemp(prefix="switchboard-certs-"))
    # Connections from 127.0.0.50 (haproxy's source address in
    # test_a_proxy_protocol_header_comes_before_the_tls_handshake) are a
    # trusted proxy's; nobody else's are.
    cluster = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=2, tls=certs,
                      gateway_extra={"trusted_proxies": "[127.0.0.50]", "proxy_protocol": "true"})
    driver = Driver(os.path.join(ARGS.source_dir, "tests/integration/node"), env={"NODE_EXTRA_CA_CERTS": certs["ca"]})
    with open(certs["ca"], "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    channel = grpc.secure_channel("127.0.0.1:%d" % cluster.control_port, creds)
    stub = control_pb2_grpc.ControlStub(channel)


def tearDownModule():
    channel.close()
    driver.stop()
    cluster.close()


def curl(*args):
    out = subprocess.run(["curl", "-sS", "--cacert", certs["ca"]] + list(args), capture_output=True, text=True,
                         timeout=15)
    return out.returncode, out.stdout


def wss_upgrade(port, src=None):
    """A raw WebSocket upgrade over TLS (the test CA, name localhost) on the
    Centrifugo endpoint, from `src` if given; its 101 read byte by byte."""
    import ssl
    raw = socket.socket()
    if src:
        raw.bind((src, 0))
    raw.settimeout(10)
    raw.connect(("127.0.0.1", port))
    s = ssl.create_default_context(cafile=certs["ca"]).wrap_socket(raw, server_hostname="localhost")
    s.sendall(("GET /connection/websocket HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
               % base64.b64encode(os.urandom(16)).decode()).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert b" 101 " in head.split(b"\r\n")[0], head
    return s


class TlsEverywhereTest(unittest.TestCase):
    def test_clients_work_over_tls_on_every_link(self):
        names, clients = [], set()
        for gw in ("gw-1", "gw-2"):
            self.assertTrue(cluster.ws_url(gw).startswith("wss://"))
            name = "tls-" + gw
            driver.send(op="centrifuge", name=name, url=cluster.ws_url(gw), token=cluster.token("600"))
            clients.add(driver.wait_event(name, "connected")["client"])
            names.append(name)
        # grpcio over TLS; both gateways reached control over TLS and answer over tls:// NATS.
        res = stub.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id="600"), metadata=API_KEY,
                                   timeout=5).result
        self.assertTrue(res.complete)
        self.assertEqual(set(res.connections), clients)
        # switchboard-http over HTTPS, talking TLS to control.
        rc, body = curl("-H", "X-API-Key: test-api-key-1234", "-d", '{"user": "600"}',
                        "https://127.0.0.1:%d/api/user_connections" % cluster.http_port)
        self.assertEqual(rc, 0, body)
        self.assertEqual(set(json.loads(body)["result"]["connections"]), clients)
        # The uni stream over https.
        port = cluster.gateways["gw-1"][1]
        uni = Proc("curl-tls", ["curl", "-sN", "--cacert", certs["ca"], "-X", "POST", "--data-binary",
                                json.dumps({"token": cluster.token("600")}),
                                "https://127.0.0.1:%d/connection/uni_http_stream" % port])
        try:
            wait_until(lambda: any('"connect"' in l for l in uni.lines), 10, "uni stream connect over https")
            # The CLI (TLS from the config) terminates them all.
            out = json.loads(cluster.ctl("terminate", "--user", "600"))
            self.assertEqual(out["closed"], 3)
            for name in names:
                self.assertEqual(driver.wait_event(name, "disconnected")["code"], 3503)
            wait_until(lambda: uni.p.poll() is not None, 10, "uni stream ended")
        finally:
            uni.stop()

    def test_uni_stream_over_https_is_line_delimited_json_with_every_curl_protocol_choice(self):
        # HTTP/2 is not offered (ALPN: http/1.1 only): HTTP/1.1 chunked framing
        # written into an h2 body broke every line reader. Each curl variant
        # gets a stream whose every line is JSON.
        port = cluster.gateways["gw-1"][1]
        for flags in ((), ("--http2",), ("--http1.1",)):
            uni = Proc("curl-uni-%s" % "-".join(flags or ("default",)).strip("-"),
                       ["curl", "-sS", "-N", "--cacert", certs["ca"]] + list(flags) + [
                           "-X", "POST", "--data-binary", json.dumps({"token": cluster.token("601")}),
                           "https://127.0.0.1:%d/connection/uni_http_stream" % port])
            try:
                wait_until(lambda: any('"connect"' in l for l in uni.lines), 10, "connect line (%s)" % (flags,))
                cluster.ctl("terminate", "--user", "601")
                wait_until(lambda: uni.p.poll() is not None, 10, "uni stream ended (%s)" % (flags,))
            finally:
                uni.stop()
            lines = [l for l in uni.lines if l.strip()]
            self.assertGreaterEqual(len(lines), 2, (flags, uni.lines))
            for line in lines:
                json.loads(line)  # every line is a JSON object, nothing else
            self.assertIn("disconnect", json.loads(lines[-1]), (flags, lines))
        # What is offered, said by the TLS handshake itself.
        out = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-alpn", "h2,http/1.1",
                              "-CAfile", certs["ca"]], input="", capture_output=True, text=True, timeout=15)
        self.assertIn("ALPN protocol: http/1.1", out.stdout)

    def test_chromium_reads_the_uni_stream_over_https_line_by_line(self):
        # Headless Chromium trusting the test certificate by its public key.
        der = subprocess.run(["openssl", "x509", "-in", certs["cert"], "-noout", "-pubkey"], capture_output=True,
                             check=True).stdout
        der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=der, capture_output=True,
                             check=True).stdout
        spki = base64.b64encode(hashlib.sha256(der).digest()).decode()
        node_dir = os.path.abspath(os.path.join(ARGS.source_dir, "tests/integration/node"))
        port = cluster.gateways["gw-2"][1]
        browser = Proc("chromium-uni", ["node", os.path.join(node_dir, "browser_uni_stream.js"),
                                        "https://127.0.0.1:%d" % port, cluster.token("602"), spki], cwd=node_dir)
        try:
            def events(kind):
                out = []
                for line in list(browser.lines):
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        continue
                    if ev.get("event") == kind:
                        out.append(ev)
                return out
            wait_until(lambda: events("error") or browser.p.poll() is not None or
                       any("connect" in e["line"] for e in events("line")), 60, "Chromium's connect line")
            self.assertEqual(events("error"), [])
            self.assertEqual(json.loads(cluster.ctl("terminate", "--user", "602"))["closed"], 1)
            wait_until(lambda: events("end") or events("error"), 30, "the stream's end in Chromium")
            self.assertEqual(events("error"), [])
            self.assertEqual(events("bad"), [])
            lines = [e["line"] for e in events("line")]
            self.assertIn("connect", lines[0])
            self.assertEqual(lines[-1]["disconnect"]["code"], 3503)
            self.assertEqual(events("end")[0]["protocol"], "http/1.1")
        finally:
            browser.stop()

    def test_a_forbidden_frame_over_wss_is_closed_1002(self):
        # The frame guard reads what OpenSSL decrypted (SSL_read) as it reads
        # plain sockets (recv): an unmasked frame and a 200-byte ping get the
        # 1002 close RFC 6455 asks for, over TLS too.
        import ssl
        for what, frame in (("unmasked", b"\x81\x08not json"),
                            ("long ping", b"\x89\xfe\x00\xc8\x00\x00\x00\x00" + b"p" * 200)):
            with self.subTest(what):
                s = wss_upgrade(cluster.gateways["gw-1"][1])
                s.sendall(frame)
                data = b""
                while True:
                    try:
                        chunk = s.recv(4096)
                    except (ssl.SSLError, ConnectionResetError):
                        break
                    if not chunk:
                        break
                    data += chunk
                s.close()
                self.assertTrue(data.startswith(b"\x88"), data)
                self.assertEqual(int.from_bytes(data[2:4], "big"), 1002, data)

    def test_a_proxy_protocol_header_comes_before_the_tls_handshake(self):
        # A TCP load balancer in front of wss:// (haproxy send-proxy-v2, as
        # an NLB): the header precedes the TLS handshake, which OpenSSL reads
        # with read(); the gateway takes it off there, and the session's
        # remote_addr is the client's.
        from test_proxies import free_port, listening, start_haproxy
        port = free_port()
        haproxy = start_haproxy(tempfile.mkdtemp(prefix="switchboard-haproxy-"), (
            "frontend v2\n  mode tcp\n  bind 127.0.0.1:%d\n  default_backend gw\n"
            "backend gw\n  mode tcp\n  server gw 127.0.0.1:%d send-proxy-v2 source 127.0.0.50\n")
            % (port, cluster.gateways["gw-1"][1]))
        try:
            wait_until(lambda: listening(port), 15, "haproxy listening")
            s = wss_upgrade(port, src="127.0.0.7")
            payload = json.dumps({"id": 1, "connect": {"token": cluster.token("tls-proxied")}}).encode()
            s.sendall(bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big") + b"\0\0\0\0" + payload
                      if len(payload) >= 126 else bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            self.assertIn(b'"connect"', s.recv(4096))
            res = stub.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id="tls-proxied"),
                                       metadata=API_KEY, timeout=5).result
            self.assertEqual([c.remote_addr for c in res.connections.values()], ["127.0.0.7"])
            s.close()
        finally:
            haproxy.stop()

    def test_the_load_generator_speaks_wss_and_verifies_the_certificate(self):
        # switchboard-loadgen --tls: what benchmarks and the multi-host run
        # use against a wss:// gateway. A CA that did not sign the gateway's
        # certificate fails every session (verification is on).
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
        from bench import Generator
        port = cluster.gateways["gw-2"][1]
        args = ["--targets", "127.0.0.1:%d" % port, "--sessions", "50", "--users", "5",
                "--secret", "demo-secret-for-tests", "--tls", "--hold", "0.5"]
        gen = Generator(ARGS.build_dir, args + ["--ca_file", certs["ca"]])
        try:
            ready = gen.wait("ready", timeout=60)
            self.assertEqual((ready["connected"], ready["failed"]), (50, 0), ready)
        finally:
            gen.stop()
        other = make_certs(tempfile.mkdtemp(prefix="switchboard-other-ca-"))
        gen = Generator(ARGS.build_dir, args[:2] + ["--sessions", "3"] + args[4:] + ["--ca_file", other["ca"]])
        try:
            ready = gen.wait("ready", timeout=60)
            self.assertEqual((ready["connected"], ready["failed"]), (0, 3), ready)
        finally:
            gen.stop()

    def test_plaintext_is_refused_on_every_link(self):
        # gRPC without TLS.
        with grpc.insecure_channel("127.0.0.1:%d" % cluster.control_port) as ch:
            from switchboard.v1 import control_pb2_grpc
            with self.assertRaises(grpc.RpcError) as e:
                control_pb2_grpc.ControlStub(ch).ListGateways(pb.ListGatewaysRequest(), metadata=API_KEY, timeout=3)
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
        # ws:// and http:// to a gateway, http:// to switchboard-http.
        driver.send(op="raw", name="plain-ws", url="ws://127.0.0.1:%d/connection/websocket" %
                    cluster.gateways["gw-1"][1], frames=[])
        ev = wait_until(lambda: next((e for e in driver.events("plain-ws") if e["event"] in ("raw_error", "raw_close")),
                                     None), 10, "plain ws refused")
        self.assertNotEqual(ev.get("event"), "raw_open")
        self.assertFalse([e for e in driver.events("plain-ws") if e["event"] == "raw_open"])
        # (Go's TLS server answers a plaintext request with a 400 and nothing else.)
        rc, out = curl("-o", "/dev/null", "-w", "%{http_code}", "-H", "X-API-Key: test-api-key-1234", "-d", "{}",
                       "http://127.0.0.1:%d/api/info" % cluster.http_port)
        self.assertEqual(out, "400")
        # NATS demands TLS before anything else.
        s = socket.create_connection(("127.0.0.1", cluster.nats_port), timeout=5)
        info = json.loads(s.makefile("rb").readline().decode().split(" ", 1)[1])
        s.close()
        self.assertTrue(info.get("tls_required"))


def sign_server_cert(ca_dir, out_dir, key_from=None):
    """A new server certificate for 127.0.0.1 / localhost from the module's CA,
    with a new key (or the key in `key_from`: a pair that does not match)."""
    os.makedirs(out_dir)
    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True, cwd=out_dir)
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "tls.key",
        "-out", "server.csr", "-subj", "/CN=localhost")
    with open(os.path.join(out_dir, "ext.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "server.csr", "-CA", os.path.join(ca_dir, "ca.pem"), "-CAkey",
        os.path.join(ca_dir, "ca.key"), "-CAcreateserial", "-out", "tls.crt", "-days", "2", "-extfile", "ext.cnf")
    if key_from:
        shutil.copy(os.path.join(key_from, "tls.key"), os.path.join(out_dir, "tls.key"))
    with open(os.path.join(out_dir, "tls.crt"), "rb") as f:
        return hashlib.sha256(ssl_der(f.read())).hexdigest()


def ssl_der(pem):
    import ssl
    return ssl.PEM_cert_to_DER_cert(pem.decode())


def served_fingerprint(port):
    import ssl
    ctx = ssl.create_default_context(cafile=certs["ca"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()


class CertificateRotationTest(unittest.TestCase):
    def test_a_renewed_certificate_is_served_to_new_clients_and_nobody_is_dropped(self):
        # Clients' TLS of its own (gateway.tls_cert_file/key_file, as from a
        # Kubernetes TLS Secret, internal links plain): the files are swapped
        # as the kubelet swaps a Secret volume (one symlink, atomically); new
        # handshakes get the new certificate, the centrifuge-js and pusher-js
        # sessions already open stay. A pair that does not match is refused
        # and the current one kept.
        ca_dir = os.path.dirname(certs["ca"])
        root = tempfile.mkdtemp(prefix="switchboard-rotate-")
        first = sign_server_cert(ca_dir, os.path.join(root, "v1"))
        current = os.path.join(root, "current")
        os.symlink(os.path.join(root, "v1"), current)

        def swap(to):
            tmp = os.path.join(root, "next")
            os.symlink(os.path.join(root, to), tmp)
            os.replace(tmp, current)

        c = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=1, http=False, gateway_extra={
            "tls_cert_file": os.path.join(current, "tls.crt"), "tls_key_file": os.path.join(current, "tls.key"),
            "tls_reload_check_ms": 200})
        names = []
        try:
            gw, port = c.gateways["gw-1"]
            url = "wss://127.0.0.1:%d/connection/websocket" % port
            self.assertEqual(served_fingerprint(port), first)
            driver.send(op="centrifuge", name="rot-c", url=url, token=c.token("rot"))
            driver.wait_event("rot-c", "connected")
            driver.send(op="pusher", name="rot-p", key="demo-key", secret="demo-secret-for-tests", port=port,
                        tls=True, user_data={"id": "rot"})
            driver.wait_event("rot-p", "pusher_signin_success", timeout=15)
            names += ["rot-c", "rot-p"]
            self.assertEqual(len(json.loads(c.ctl("connections", "--user", "rot"))["result"]["connections"]), 2)
            # Renewed.
            second = sign_server_cert(ca_dir, os.path.join(root, "v2"))
            swap("v2")
            gw.wait_line(r"TLS: certificate reloaded from .*tls\.crt \(/CN=localhost, valid until")
            self.assertEqual(served_fingerprint(port), second)
            driver.send(op="centrifuge", name="rot-new", url=url, token=c.token("rot"))
            driver.wait_event("rot-new", "connected")
            names.append("rot-new")
            # A broken renewal (a key of another pair) is refused; the
            # current certificate stays.
            sign_server_cert(ca_dir, os.path.join(root, "v3"), key_from=os.path.join(root, "v1"))
            swap("v3")
            gw.wait_line(r"TLS: .*tls\.crt changed, but the key does not match the certificate")
            self.assertEqual(served_fingerprint(port), second)
            # Nobody was dropped.
            self.assertEqual(len(json.loads(c.ctl("connections", "--user", "rot"))["result"]["connections"]), 3)
            # The same bad pair at start: one line naming it, exit 2.
            import yaml
            with open(c.config) as f:
                bad = yaml.safe_load(f)
            bad["gateway"]["tls_cert_file"] = os.path.join(root, "v3", "tls.crt")
            bad["gateway"]["tls_key_file"] = os.path.join(root, "v3", "tls.key")
            with open(os.path.join(root, "bad.yaml"), "w") as f:
                yaml.safe_dump(bad, f)
            out = subprocess.run([c.bin("gateway/switchboard-gateway"), "--config", os.path.join(root, "bad.yaml"),
                                  "--workers", "1"], capture_output=True, text=True, timeout=20)
            lines = [l for l in (out.stdout + out.stderr).splitlines() if l.strip()]
            self.assertEqual(out.returncode, 2, lines)
            self.assertEqual(len(lines), 1, lines)
            self.assertIn("the key does not match the certificate", lines[0])
            self.assertFalse([e for e in driver.events("rot-c") if e["event"] == "disconnected"])
            self.assertFalse([e for e in driver.events("rot-p") if e["event"] == "pusher_state"
                              and e["current"] != "connected" and e["previous"] == "connected"])
        finally:
            for n in names:
                driver.send(op="close", name=n)
            c.close()


if __name__ == "__main__":
    ARGS, argv = parse_args()
    unittest.main(argv=argv, verbosity=2)
