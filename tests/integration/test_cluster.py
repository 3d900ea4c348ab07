"""Integration tests: real nats-server, control and gateway processes, real
centrifuge-js clients (node), and this Python process as a gRPC client
(grpcio, stubs generated at test time)."""
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Proc, parse_args, Cluster, Driver, cpu_seconds, health_stubs, load_stubs, wait_until  # noqa: E402

ARGS = None
API_KEY = (("authorization", "apikey test-api-key-1234"),)


def setUpModule():
    global cluster, driver, pb, stub_mod, channel, stub
    load_stubs(ARGS.source_dir)
    from switchboard.v1 import control_pb2 as pb_mod, control_pb2_grpc
    pb, stub_mod = pb_mod, control_pb2_grpc
    cluster = Cluster(ARGS.build_dir, ARGS.source_dir)
    driver = Driver(os.path.join(ARGS.source_dir, "tests/integration/node"))
    channel = grpc.insecure_channel("127.0.0.1:%d" % cluster.control_port)
    stub = stub_mod.ControlStub(channel)
    wait_until(lambda: len(list_gateways().gateways) == 2, 10, "both gateways attached")


def tearDownModule():
    driver.stop()
    cluster.close()


def list_gateways():
    return stub.ListGateways(pb.ListGatewaysRequest(), metadata=API_KEY, timeout=5)


def user_connections(user, app="demo", timeout=2):
    return stub.UserConnections(pb.UserConnectionsRequest(app_id=app, user_id=user),
                                metadata=API_KEY, timeout=timeout).result


_seq = [0]


def raw_upgrade(port, rcvbuf=None):
    """A raw socket upgraded to a WebSocket on the gateway's Centrifugo
    endpoint, its 101 read byte by byte (frames may follow at once)."""
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    s.sendall(("GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
               % base64.b64encode(os.urandom(16)).decode()).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert b" 101 " in head.split(b"\r\n")[0], head
    return s


def open_client(user, gw, app="demo", name=None, **token_kw):
    _seq[0] += 1
    name = name or "c%d" % _seq[0]
    query = "" if app == "demo" else "?app=" + app
    driver.send(op="centrifuge", name=name, url=cluster.ws_url(gw, query),
                token=cluster.token(user, app=app, **token_kw),
                client_name="app-" + name, client_version="1.2.3")
    ev = driver.wait_event(name, "connected")
    return name, ev["client"]


class UserConnectionsTest(unittest.TestCase):
    def test_lists_exactly_the_users_connections_across_gateways(self):
        a, ca = open_client("42", "gw-1", meta={"device": "phone", "plan": "pro"})
        b, cb = open_client("42", "gw-2", info={"name": "Ann"})
        open_client("7", "gw-1")
        open_client("42", "gw-2", app="other")
        res = user_connections("42")
        self.assertTrue(res.complete)
        self.assertEqual(sorted(res.gateways_asked), ["gw-1", "gw-2"])
        self.assertEqual(sorted(res.gateways_answered), ["gw-1", "gw-2"])
        self.assertEqual(list(res.gateways_missing), [])
        self.assertEqual(set(res.connections.keys()), {ca, cb})
        info = res.connections[ca]
        self.assertEqual(info.app_name, "app-" + a)
        self.assertEqual(info.app_version, "1.2.3")
        self.assertEqual(info.transport, "websocket")
        self.assertEqual(info.protocol, "json")
        self.assertEqual(info.user, "42")
        self.assertEqual(info.gateway, "gw-1")
        self.assertEqual(info.remote_addr, "127.0.0.1")
        self.assertGreater(info.connected_at.seconds, time.time() - 60)
        self.assertEqual(info.meta.struct_value["device"], "phone")
        self.assertEqual(res.connections[cb].gateway, "gw-2")
        self.assertFalse(res.connections[cb].HasField("meta"))
        # The other app's user 42 is a different user.
        self.assertEqual(len(user_connections("42", app="other").connections), 1)

    def test_meta_never_reaches_the_client(self):
        token = cluster.token("meta-user", meta={"secret": "M3TA-S3CRET"}, info={"shown": "yes"})
        driver.send(op="raw", name="raw-meta", url=cluster.ws_url("gw-1"),
                    frames=[json.dumps({"id": 1, "connect": {"token": token, "name": "raw"}})])
        ev = driver.wait_event("raw-meta", "raw_message")
        reply = json.loads(ev["data"])
        self.assertEqual(reply["id"], 1)
        self.assertTrue(reply["connect"]["client"])
        self.assertTrue(reply["connect"]["pong"])
        conns = user_connections("meta-user").connections
        self.assertEqual(list(conns.keys()), [reply["connect"]["client"]])
        self.assertEqual(conns[reply["connect"]["client"]].meta.struct_value["secret"], "M3TA-S3CRET")
        for e in driver.events("raw-meta"):
            self.assertNotIn("M3TA-S3CRET", json.dumps(e))
        driver.send(op="close", name="raw-meta")


class TerminateTest(unittest.TestCase):
    def test_terminate_closes_all_but_the_kept_and_leaves_others(self):
        a, ca = open_client("43", "gw-1")
        b, cb = open_client("43", "gw-1")
        c, cc = open_client("43", "gw-2")
        d, cd = open_client("44", "gw-2")
        resp = stub.TerminateUser(pb.TerminateUserRequest(app_id="demo", user_id="43", except_client_ids=[cb]),
                                  metadata=API_KEY, timeout=2)
        self.assertEqual(resp.closed, 2)
        self.assertEqual(dict(resp.closed_per_gateway), {"gw-1": 1, "gw-2": 1})
        self.assertTrue(resp.coverage.complete)
        for name in (a, c):
            ev = driver.wait_event(name, "disconnected")
            self.assertEqual(ev["code"], 3503)
            self.assertEqual(ev["reason"], "force disconnect")
        self.assertEqual(set(user_connections("43").connections.keys()), {cb})
        self.assertEqual(set(user_connections("44").connections.keys()), {cd})
        for name in (b, d):
            # "connecting" with code 0 is the SDK's own start; anything else means the socket dropped.
            self.assertFalse([e for e in driver.events(name)
                              if e["event"] == "disconnected" or (e["event"] == "connecting" and e["code"] != 0)])
        # The terminated clients do not come back: 3503 is terminal.
        self.assertEqual(len([e for e in driver.events(a) if e["event"] == "connected"]), 1)

    def test_terminate_everything_then_nothing_left(self):
        names = [open_client("45", gw)[0] for gw in ("gw-1", "gw-2", "gw-2")]
        resp = stub.TerminateUser(pb.TerminateUserRequest(app_id="demo", user_id="45", code=4501, reason="bye"),
                                  metadata=API_KEY, timeout=2)
        self.assertEqual(resp.closed, 3)
        for n in names:
            ev = driver.wait_event(n, "disconnected")
            self.assertEqual((ev["code"], ev["reason"]), (4501, "bye"))
        self.assertEqual(len(user_connections("45").connections), 0)
        again = stub.TerminateUser(pb.TerminateUserRequest(app_id="demo", user_id="45"), metadata=API_KEY, timeout=2)
        self.assertEqual(again.closed, 0)

    def test_disconnect_closes_one_connection(self):
        a, ca = open_client("46", "gw-1")
        b, cb = open_client("46", "gw-2")
        resp = stub.Disconnect(pb.DisconnectRequest(app_id="demo", client_id=cb), metadata=API_KEY, timeout=2)
        self.assertTrue(resp.found)
        self.assertEqual(resp.gateway, "gw-2")
        self.assertEqual(driver.wait_event(b, "disconnected")["code"], 3503)
        self.assertEqual(set(user_connections("46").connections.keys()), {ca})
        missing = stub.Disconnect(pb.DisconnectRequest(app_id="demo", client_id="no-such"), metadata=API_KEY, timeout=2)
        self.assertFalse(missing.found)


class ClientProtocolTest(unittest.TestCase):
    def raw(self, name, frames, gw="gw-1"):
        driver.send(op="raw", name=name, url=cluster.ws_url(gw), frames=frames)
        return driver.wait_event(name, "raw_close", timeout=10)

    def test_bad_token_closes_3500(self):
        driver.send(op="centrifuge", name="badtok", url=cluster.ws_url("gw-1"), token="not.a.jwt")
        ev = driver.wait_event("badtok", "disconnected")
        self.assertEqual(ev["code"], 3500)

    def test_token_signed_for_another_app_is_invalid(self):
        token = cluster.token("47", app="other")
        ev = self.raw("wrongapp", [json.dumps({"id": 1, "connect": {"token": token}})])
        self.assertEqual(ev["code"], 3500)

    def test_malformed_json_closes_3501(self):
        self.assertEqual(self.raw("badjson", ["{not json"])["code"], 3501)

    def test_first_command_must_be_connect(self):
        self.assertEqual(self.raw("noconnect", ['{"id":1,"subscribe":{"channel":"x"}}'])["code"], 3501)

    def test_frame_larger_than_the_receive_buffer_is_reassembled(self):
        # ~3 KB: above the 1 KB per-connection receive buffer, below max_message_bytes (4 KB here).
        token = cluster.token("93", meta={"blob": "x" * 2200})
        frame = json.dumps({"id": 1, "connect": {"token": token, "name": "big"}})
        self.assertGreater(len(frame), 2048)
        driver.send(op="raw", name="bigok", url=cluster.ws_url("gw-1"), frames=[frame])
        wait_until(lambda: any(e["event"] == "raw_message" and '"connect"' in e["data"]
                               for e in driver.events("bigok")), 10, "connect reply")
        self.assertEqual(len(user_connections("93").connections), 1)
        driver.send(op="close", name="bigok")

    def test_oversized_message_closes_1009(self):
        self.assertEqual(self.raw("big", ["{" + "x" * 5000 + "}"])["code"], 1009)

    def test_client_that_stops_reading_is_dropped_and_nobody_else_is(self):
        # A client that keeps asking (150 pings per frame) but never reads:
        # replies go out at once until the socket is full, then wait in lws
        # and the outbox, whose limit closes the connection as slow (3008).
        # The close frame cannot get through a full socket either: the
        # gateway must still let the connection go, and its session with it.
        import struct

        def masked(payload):
            data, mask = payload.encode(), b"\x01\x02\x03\x04"
            n = len(data)
            head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n))
            return head + mask + bytes(x ^ mask[i % 4] for i, x in enumerate(data))

        name, keep = open_client("slowpoke-ok", "gw-1")
        s = raw_upgrade(cluster.gateways["gw-1"][1], rcvbuf=4096)
        s.sendall(masked(json.dumps({"id": 1, "connect": {"token": cluster.token("slowpoke")}})))
        wait_until(lambda: len(user_connections("slowpoke").connections) == 1, 10, "the slow client's session")
        pings = masked("\n".join(json.dumps({"id": i + 2, "ping": {}}) for i in range(150)))
        s.setblocking(False)
        ended, deadline = None, time.monotonic() + 60
        while ended is None and time.monotonic() < deadline:
            try:
                s.send(pings)
            except BlockingIOError:
                time.sleep(0.01)  # pacing our sends while the gateway's side is full, not synchronising
            except (BrokenPipeError, ConnectionResetError) as e:
                ended = e
        s.close()
        self.assertIsNotNone(ended, "the gateway kept a client that never read for 60 s")
        wait_until(lambda: len(user_connections("slowpoke").connections) == 0, 10, "the slow session gone")
        cluster.gateways["gw-1"][0].wait_line(r"outbox full \(\d+ frames\), closing as slow", timeout=5)
        # The well-behaved client on the same gateway never noticed.
        self.assertEqual(list(user_connections("slowpoke-ok").connections), [keep])
        self.assertFalse(any(e["event"] == "disconnected" for e in driver.events(name)))
        driver.send(op="close", name=name)

    def test_frame_level_violations_are_closed_1002(self):
        # RFC 6455 §5.1, §5.5, §7.4.1: frames a client must never send fail
        # the connection with 1002. libwebsockets 4.1 alone read an unmasked
        # frame as if masked (then 3501) and dropped a 200-byte ping without a
        # close frame; the gateway's frame guard (gateway/frame_guard.h)
        # checks each header (a good frame before the bad one is read as
        # usual). Nobody else notices.
        name, keep = open_client("frames-ok", "gw-1")
        port = cluster.gateways["gw-1"][1]
        violations = [
            ("masked ping, 200 bytes", b"\x89\xfe\x00\xc8\x00\x00\x00\x00" + b"p" * 200),
            ("unmasked text frame", b"\x81\x08not json"),
            ("fragmented ping", b"\x09\x80\x00\x00\x00\x00"),
            ("reserved opcode 3", b"\x83\x80\x00\x00\x00\x00"),
        ]
        for what, frame in violations:
            with self.subTest(what):
                s = raw_upgrade(port)
                t0 = time.monotonic()
                s.sendall(b"\x89\x82\x00\x00\x00\x00hi" + frame)  # a good masked ping first
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                s.close()
                self.assertLess(time.monotonic() - t0, 3.0)
                if data.startswith(b"\x8a\x02hi"):
                    data = data[4:]  # the pong, when it went out before the close
                close = data
                self.assertTrue(close.startswith(b"\x88"), data)
                self.assertEqual(int.from_bytes(close[2:4], "big"), 1002, data)
                self.assertIn(b"protocol error", close)
        self.assertEqual(list(user_connections("frames-ok").connections), [keep])
        self.assertFalse(any(e["event"] == "disconnected" for e in driver.events(name)))
        driver.send(op="close", name=name)

    def test_silent_client_is_closed_as_stale(self):
        ev = self.raw("silent", [])
        self.assertEqual((ev["code"], ev["reason"]), (3502, "stale"))

    def test_expired_token_gets_error_109_then_stale(self):
        # The connect reply carries error 109 (the SDKs then fetch a new
        # token); a client that never connects again is dropped as stale.
        import jwt as pyjwt
        token = pyjwt.encode({"sub": "48", "exp": int(time.time()) - 10}, "demo-secret-for-tests", algorithm="HS256")
        closed = self.raw("expired", [json.dumps({"id": 1, "connect": {"token": token}})])
        replies = [json.loads(e["data"]) for e in driver.events("expired") if e["event"] == "raw_message"]
        self.assertEqual(replies, [{"id": 1, "error": {"code": 109, "message": "token expired"}}])
        self.assertEqual(closed["code"], 3502)


class ApiErrorsTest(unittest.TestCase):
    def code_of(self, fn, *args, **kw):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args, **kw)
        return cm.exception.code()

    def test_no_api_key_is_unauthenticated(self):
        req = pb.UserConnectionsRequest(app_id="demo", user_id="42")
        self.assertEqual(self.code_of(stub.UserConnections, req, timeout=2), grpc.StatusCode.UNAUTHENTICATED)
        self.assertEqual(self.code_of(stub.UserConnections, req, timeout=2,
                                      metadata=(("authorization", "apikey wrong-key-xxxx"),)),
                         grpc.StatusCode.UNAUTHENTICATED)
        self.assertEqual(self.code_of(stub.TerminateUser, pb.TerminateUserRequest(app_id="demo", user_id="42"),
                                      timeout=2), grpc.StatusCode.UNAUTHENTICATED)

    def test_unknown_app_is_not_found(self):
        self.assertEqual(self.code_of(stub.UserConnections, pb.UserConnectionsRequest(app_id="nope", user_id="1"),
                                      metadata=API_KEY, timeout=2), grpc.StatusCode.NOT_FOUND)

    def test_bad_arguments_are_invalid(self):
        for req in (pb.UserConnectionsRequest(app_id="demo", user_id=""),
                    pb.UserConnectionsRequest(app_id="demo", user_id="x" * 300)):
            self.assertEqual(self.code_of(stub.UserConnections, req, metadata=API_KEY, timeout=2),
                             grpc.StatusCode.INVALID_ARGUMENT)
        # Only the application range of RFC 6455 (3000-4999) may be asked for.
        for code in (17, 1000, 1005, 1006, 2999, 5000):
            self.assertEqual(self.code_of(stub.TerminateUser, pb.TerminateUserRequest(app_id="demo", user_id="1",
                                                                                      code=code),
                                          metadata=API_KEY, timeout=2), grpc.StatusCode.INVALID_ARGUMENT, code)
            self.assertEqual(self.code_of(stub.Disconnect, pb.DisconnectRequest(app_id="demo", client_id="c",
                                                                                code=code),
                                          metadata=API_KEY, timeout=2), grpc.StatusCode.INVALID_ARGUMENT, code)


class GatewayFailureTest(unittest.TestCase):
    def test_killed_gateway_gives_partial_answer_naming_it(self):
        proc, _ = cluster.add_gateway("gw-3")
        wait_until(lambda: "gw-3" in [g.id for g in list_gateways().gateways], 10, "gw-3 attached")
        name, cid = open_client("49", "gw-1")
        # Freeze gw-3, then kill it once the request has been delivered to it:
        # the call is then surely in flight when the gateway dies.
        conn_name = "switchboard-gateway gw-3"
        delivered = cluster.nats_out_msgs(conn_name)
        proc.signal(signal.SIGSTOP)

        def stopped():
            # kill() returns before the threads have stopped: each stops when
            # it next gets a CPU. Every one of them must be, or gw-3 may yet
            # answer.
            states = []
            for tid in os.listdir("/proc/%d/task" % proc.p.pid):
                with open("/proc/%d/task/%s/stat" % (proc.p.pid, tid)) as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            return all(st == "T" for st in states)
        wait_until(stopped, 5, "every thread of gw-3 stopped")
        result = {}

        def call():
            t0 = time.monotonic()
            result["res"] = user_connections("49", timeout=1.5)
            result["secs"] = time.monotonic() - t0
        t = threading.Thread(target=call)
        t.start()
        wait_until(lambda: cluster.nats_out_msgs(conn_name) > delivered, 5, "request delivered to gw-3")
        proc.signal(signal.SIGKILL)
        t.join(5)
        self.assertFalse(t.is_alive())
        res = result["res"]
        self.assertFalse(res.complete)
        self.assertEqual(list(res.gateways_missing), ["gw-3"])
        self.assertEqual(set(res.connections.keys()), {cid})
        self.assertLess(result["secs"], 1.5)
        wait_until(lambda: "gw-3" not in [g.id for g in list_gateways().gateways], 10, "gw-3 left the fleet")
        # A killed gateway is still awaited (and named) until its presence on
        # the bus runs out, one lease after its last announcement.
        wait_until(lambda: user_connections("49").complete, cluster.lease_ms / 1000.0 + 5, "complete without gw-3")

    def test_control_sleeps_while_calls_wait_for_a_frozen_gateway(self):
        # Control's bus thread polls without sleeping for a moment after each
        # answer while a call waits (control.bus_busy_poll_us): a call left
        # waiting on a gateway that never answers must not keep it spinning.
        proc, _ = cluster.add_gateway("gw-4")
        wait_until(lambda: "gw-4" in [g.id for g in list_gateways().gateways], 10, "gw-4 attached")
        proc.signal(signal.SIGSTOP)
        ctl = cluster.controls[0].p.pid
        cpu0, t0 = cpu_seconds(ctl), time.monotonic()
        for _ in range(2):
            res = user_connections("50", timeout=1.0)
            self.assertEqual(list(res.gateways_missing), ["gw-4"])
        busy = (cpu_seconds(ctl) - cpu0) / (time.monotonic() - t0)
        proc.signal(signal.SIGKILL)
        self.assertLess(busy, 0.3, "control used %.0f%% of a CPU while its calls waited" % (100 * busy))
        wait_until(lambda: "gw-4" not in [g.id for g in list_gateways().gateways], 10, "gw-4 left the fleet")


class ConfigFileTest(unittest.TestCase):
    def test_bad_file_exits_2_with_one_line_naming_the_field(self):
        bad = os.path.join(cluster.tmp, "bad.yaml")
        with open(bad, "w") as f:
            f.write("cluster: x\nnats_url: nats://127.0.0.1:1\napps: [{id: a, key: k, secret: short}]\n"
                    "api_keys: [12345678]\n")
        for binary in ("control/switchboard-control", "gateway/switchboard-gateway"):
            out = subprocess.run([cluster.bin(binary), "--config", bad], capture_output=True, text=True, timeout=20)
            self.assertEqual(out.returncode, 2, binary)
            lines = [l for l in (out.stdout + out.stderr).splitlines() if l.strip()]
            self.assertEqual(len(lines), 1, lines)
            self.assertIn("apps[0].secret", lines[0])


    def test_placeholder_secrets_are_refused_outside_dev_mode(self):
        # The values the repository publishes (config/switchboard.yaml's
        # "…-change-me" defaults, the production examples' "REPLACE-with-…")
        # would let anyone sign tokens or call the API: each server refuses
        # each one it uses, in one line naming the field, unless started in
        # dev mode (--dev or SWITCHBOARD_DEV=1, as scripts/run.sh does).
        import yaml
        with open(cluster.config) as f:
            base = yaml.safe_load(f)

        def with_secret(field, value):
            c = json.loads(json.dumps(base))
            if field == "apps[0].secret":
                c["apps"][0]["secret"] = value
            elif field == "api_keys[0]":
                c["api_keys"][0] = value
            elif "." in field:
                part, key = field.split(".")
                c[part][key] = value
            else:
                c[field] = value
            path = os.path.join(cluster.tmp, "placeholder.yaml")
            with open(path, "w") as f:
                yaml.safe_dump(c, f)
            return path

        used = {"control/switchboard-control": ["apps[0].secret", "api_keys[0]", "cluster_token", "http_proxy_token",
                                                "nats_control.password"],
                "gateway/switchboard-gateway": ["apps[0].secret", "cluster_token", "nats_gateway.password"]}
        placeholders = ["dev-%s-change-me-0123456789", "REPLACE-with-a-%s-0123456789"]
        for binary, fields in used.items():
            for field in fields:
                for value in placeholders:
                    path = with_secret(field, value % field.split(".")[0].split("[")[0])
                    out = subprocess.run([cluster.bin(binary), "--config", path], capture_output=True, text=True,
                                         timeout=20)
                    self.assertEqual(out.returncode, 2, (binary, field, out.stdout + out.stderr))
                    lines = [l for l in (out.stdout + out.stderr).splitlines() if l.strip()]
                    self.assertEqual(len(lines), 1, lines)
                    self.assertIn(field + ": a placeholder", lines[0])
        # Dev mode: accepted with a warning, and the server runs.
        path = with_secret("apps[0].secret", "demo-secret-change-me")
        p = Proc("control-dev", [cluster.bin("control/switchboard-control"), "--dev", "--config", path,
                                 "--listen", "127.0.0.1:0", "--health_listen", "127.0.0.1:0"])
        try:
            p.wait_line(r"dev mode: placeholder secrets accepted \(apps\[0\]\.secret\)")
            p.wait_line(r"READY port=")
        finally:
            p.stop()
        self.assertEqual(p.p.returncode, 0)
        gw = Proc("gw-dev", [cluster.bin("gateway/switchboard-gateway"), "--config", path, "--port", "0",
                             "--workers", "1", "--id", "gw-dev"], env={"SWITCHBOARD_DEV": "1"})
        try:
            gw.wait_line(r"dev mode: placeholder secrets accepted")
        finally:
            gw.stop()
        # switchboard-http: its token towards control.
        http = cluster.bin("deploy/http-proxy/switchboard-http")
        env = dict(os.environ, SWITCHBOARD_HTTP_PROXY_TOKEN="dev-http-proxy-token-change-me")
        out = subprocess.run([http, "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=20, env=env)
        self.assertEqual(out.returncode, 2, out.stdout + out.stderr)
        self.assertIn("SWITCHBOARD_HTTP_PROXY_TOKEN: a placeholder", out.stderr)
        hp = Proc("http-dev", [http, "--dev", "--listen", "127.0.0.1:0"], env={
            "SWITCHBOARD_HTTP_PROXY_TOKEN": "dev-http-proxy-token-change-me"})
        try:
            hp.wait_line(r"READY port=")
        finally:
            hp.stop()


class ControlShutdownTest(unittest.TestCase):
    def test_stopping_answers_calls_in_flight_and_exits_cleanly(self):
        # A frozen gateway keeps fleet calls waiting; some callers give up at
        # once. On SIGTERM control drains: it takes no new call, and the calls
        # in flight are answered as they would have been (here: complete, once
        # the gateway thaws), not failed, so a rolling restart of control
        # fails no call; then it exits 0 (under ASan: no leak, no use after
        # free). The lease is long enough that the frozen gateway stays a
        # member through all of it on a loaded machine (with the default
        # 1.5 s, an ASan build under load saw it evicted, the calls then
        # answered incomplete before the SIGTERM; with 4 s, a CI run beside a
        # clang analysis saw one answered early, so the lease is 15 s).
        c = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=1, http=False, lease_ms=15000)
        ch = grpc.insecure_channel("127.0.0.1:%d" % c.control_port)
        gw, _ = c.gateways["gw-1"]
        try:
            s = stub_mod.ControlStub(ch)
            wait_until(lambda: [g.id for g in s.ListGateways(pb.ListGatewaysRequest(), metadata=API_KEY,
                                                              timeout=2).gateways] == ["gw-1"], 10, "gw-1 attached")
            delivered = c.nats_out_msgs("switchboard-gateway gw-1")
            gw.signal(signal.SIGSTOP)
            req = pb.UserConnectionsRequest(app_id="demo", user_id="93")
            waiting = [s.UserConnections.future(req, metadata=API_KEY, timeout=30) for _ in range(10)]
            # Each is waiting once its request has gone out to the gateway.
            wait_until(lambda: c.nats_out_msgs("switchboard-gateway gw-1") >= delivered + 10, 10,
                       "10 requests delivered to the frozen gateway")
            for f in [s.UserConnections.future(req, metadata=API_KEY, timeout=30) for _ in range(10)]:
                f.cancel()
            # Calls that do not wait on the fleet are answered meanwhile.
            self.assertEqual(len(s.ListGateways(pb.ListGatewaysRequest(), metadata=API_KEY, timeout=2).gateways), 1)
            c.controls[0].signal(signal.SIGTERM)
            c.controls[0].wait_line(r"signal 15: stopping", 10)
            early = [f.exception() or f.result() for f in waiting if f.done()]
            self.assertFalse(early, "answered before the gateway thawed")
            gw.signal(signal.SIGCONT)
            for f in waiting:
                r = f.result(timeout=10).result
                self.assertTrue(r.complete, r)
                self.assertEqual(list(r.gateways_answered), ["gw-1"])
            self.assertEqual(c.controls[0].stop(), 0)
        finally:
            gw.signal(signal.SIGCONT)
            ch.close()
            c.close()

    def test_a_client_that_watches_health_loses_no_call_when_a_replica_stops(self):
        # Two replicas; callers on one channel balancing over both with gRPC
        # health checking (README: "Calling control"). SIGTERM one: it goes
        # NOT_SERVING for shutdown_delay_ms while still answering, the
        # channel stops sending it calls, then it stops: no call fails.
        # (Without the delay, calls sent as it stops are cancelled by gRPC.)
        c = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=1, http=False, controls=2,
                    control_extra={"shutdown_delay_ms": 500})
        config = json.dumps({"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}})
        ch = grpc.insecure_channel("ipv4:" + ",".join("127.0.0.1:%d" % p for p in c.control_ports),
                                   options=[("grpc.service_config", config)])
        stop = threading.Event()
        results = {"ok": 0, "incomplete": [], "failed": []}
        try:
            s = stub_mod.ControlStub(ch)
            c.wait_ready()

            def caller():
                while not stop.is_set():
                    try:
                        r = s.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id="1"),
                                              metadata=API_KEY, timeout=3).result
                        if r.complete:
                            results["ok"] += 1
                        else:
                            results["incomplete"].append(r.incomplete_reason)
                    except grpc.RpcError as e:
                        results["failed"].append("%s: %s" % (e.code(), e.details()))
            threads = [threading.Thread(target=caller) for _ in range(4)]
            for t in threads:
                t.start()
            wait_until(lambda: results["ok"] >= 100, 10, "calls flowing")
            c.controls[0].signal(signal.SIGTERM)
            self.assertEqual(c.controls[0].stop(), 0)
            before = results["ok"]
            wait_until(lambda: results["ok"] >= before + 100, 10, "calls answered by the other replica")
            stop.set()
            for t in threads:
                t.join()
            self.assertEqual(results["failed"], [])
            self.assertEqual(results["incomplete"], [])
        finally:
            stop.set()
            ch.close()
            c.close()

    def test_stopping_ends_the_gateways_streams_at_once(self):
        # On SIGTERM control ends every Attach stream itself, with UNAVAILABLE
        # and why, and refuses new ones: the gateways move on at once and the
        # server's shutdown does not wait for its deadline to cancel them.
        c = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=2, http=False)
        ch = grpc.insecure_channel("127.0.0.1:%d" % c.control_port)
        try:
            s = stub_mod.ControlStub(ch)
            wait_until(lambda: sorted(g.id for g in s.ListGateways(pb.ListGatewaysRequest(), metadata=API_KEY,
                                                                   timeout=2).gateways) == ["gw-1", "gw-2"],
                       10, "both gateways attached")
            # A health Watch is open too (a load balancer's, grpcurl's): it is
            # ended as well, not left for the server's 2-s shutdown deadline.
            hpb, hgrpc = health_stubs()
            watch = hgrpc.HealthStub(ch).Watch(hpb.HealthCheckRequest())
            self.assertEqual(next(watch).status, hpb.HealthCheckResponse.SERVING)
            t0 = time.monotonic()
            c.controls[0].signal(signal.SIGTERM)
            self.assertEqual(c.controls[0].stop(), 0)
            self.assertLess(time.monotonic() - t0, 1.0)
            for gw_id in ("gw-1", "gw-2"):
                c.gateways[gw_id][0].wait_line(r"detached: this control replica is stopping", 10)
            with self.assertRaises(grpc.RpcError) as e:
                for update in watch:
                    self.assertEqual(update.status, hpb.HealthCheckResponse.NOT_SERVING)
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
        finally:
            ch.close()
            c.close()


class ControlReplicasTest(unittest.TestCase):
    def test_every_replica_sees_the_whole_fleet_and_answers(self):
        c = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=2, http=False, controls=2)
        channels = [grpc.insecure_channel("127.0.0.1:%d" % p) for p in c.control_ports]
        try:
            stubs = [stub_mod.ControlStub(ch) for ch in channels]
            for s in stubs:
                wait_until(lambda: sorted(g.id for g in s.ListGateways(pb.ListGatewaysRequest(), metadata=API_KEY,
                                                                       timeout=2).gateways) == ["gw-1", "gw-2"],
                           10, "both gateways attached to the replica")
            ids = []
            for i, gw in enumerate(("gw-1", "gw-2")):
                name = "replica%d" % i
                driver.send(op="centrifuge", name=name, url=c.ws_url(gw), token=c.token("92"))
                ids.append(driver.wait_event(name, "connected")["client"])
            for s in stubs:
                res = s.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id="92"), metadata=API_KEY,
                                        timeout=2).result
                self.assertTrue(res.complete)
                self.assertEqual(set(res.connections), set(ids))
            # Either replica can terminate; the answer counts every gateway once.
            resp = stubs[1].TerminateUser(pb.TerminateUserRequest(app_id="demo", user_id="92"), metadata=API_KEY,
                                          timeout=2)
            self.assertEqual((resp.closed, resp.coverage.complete), (2, True))
            for i in range(2):
                self.assertEqual(driver.wait_event("replica%d" % i, "disconnected")["code"], 3503)
        finally:
            for ch in channels:
                ch.close()
            c.close()


class ControlRestartTest(unittest.TestCase):
    def test_gateways_reattach_with_full_snapshot_and_sockets_stay(self):
        c = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=2, http=False)
        ch = grpc.insecure_channel("127.0.0.1:%d" % c.control_port)
        try:
            s = stub_mod.ControlStub(ch)

            def fleet():
                try:
                    return {g.id: g.sessions for g in
                            s.ListGateways(pb.ListGatewaysRequest(), metadata=API_KEY, timeout=2).gateways}
                except grpc.RpcError:
                    return None
            wait_until(lambda: fleet() == {"gw-1": 0, "gw-2": 0}, 10, "both gateways attached")
            names = []
            for i, gw in enumerate(("gw-1", "gw-2", "gw-2")):
                name = "restart%d" % i
                driver.send(op="centrifuge", name=name, url=c.ws_url(gw), token=c.token("90"))
                driver.wait_event(name, "connected")
                names.append(name)
            wait_until(lambda: fleet() == {"gw-1": 1, "gw-2": 2}, 10, "deltas counted")
            c.restart_control()
            # A fresh control knows nothing until the gateways re-attach and resend their sessions.
            wait_until(lambda: fleet() == {"gw-1": 1, "gw-2": 2}, 15, "snapshots after re-attach")
            c.wait_ready()  # a restarted replica answers complete=false for one lease
            res = s.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id="90"), metadata=API_KEY,
                                    timeout=2).result
            self.assertEqual(len(res.connections), 3)
            self.assertTrue(res.complete)
            for name in names:
                self.assertFalse([e for e in driver.events(name) if e["event"] == "disconnected"
                                  or (e["event"] == "connecting" and e["code"] != 0)], name)
                driver.send(op="close", name=name)
        finally:
            ch.close()
            c.close()


class GatewayDrainTest(unittest.TestCase):
    def test_sigterm_closes_clients_with_shutdown_and_exits_0(self):
        proc, port = cluster.add_gateway("gw-drain")
        wait_until(lambda: "gw-drain" in [g.id for g in list_gateways().gateways], 10, "gw-drain attached")
        names = []
        for i in range(4):
            name = "drain%d" % i
            driver.send(op="raw", name=name, url="ws://127.0.0.1:%d/connection/websocket" % port,
                        frames=[json.dumps({"id": 1, "connect": {"token": cluster.token("91")}})])
            wait_until(lambda: any(e["event"] == "raw_message" for e in driver.events(name)), 10, name)
            names.append(name)
        proc.signal(signal.SIGTERM)
        for name in names:
            ev = driver.wait_event(name, "raw_close")
            self.assertEqual((ev["code"], ev["reason"]), (3001, "shutdown"))
        self.assertEqual(proc.p.wait(15), 0)
        wait_until(lambda: "gw-drain" not in [g.id for g in list_gateways().gateways], 10, "gw-drain left")

    def test_drain_of_2000_clients_gives_every_one_3001_and_no_reset(self):
        n = 2000
        c = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=1, http=False, max_sessions=n + 100)
        proc, port = c.gateways["gw-1"]
        cfg = {"urls": ["ws://127.0.0.1:%d/connection/websocket" % port], "tokens": [c.token("92")],
               "count": n, "concurrency": 200}
        load = Proc("load-2k", ["node", os.path.join(ARGS.source_dir, "tests/bench/load_clients.js"), json.dumps(cfg)],
                    stdin=True)
        try:
            ready = json.loads(load.wait_line(r'^(\{"event":"ready".*)$', timeout=60).group(1))
            self.assertEqual((ready["connected"], ready["failed"]), (n, 0), ready)
            proc.signal(signal.SIGTERM)
            summary = json.loads(load.wait_line(r'^(\{"event":"all_closed".*)$', timeout=60).group(1))
            # Every client got the shutdown close frame; none saw a reset or 1006.
            self.assertEqual(summary, {"event": "all_closed", "codes": {"3001": n}, "errors": 0})
            self.assertEqual(proc.p.wait(30), 0)
        finally:
            load.stop()
            c.close()


class CommandsOnTheLoopTest(unittest.TestCase):
    def test_commands_go_to_the_gateways_loops_once_every_gateway_reports_it(self):
        """Once both gateways report (load, on the attach stream) that their
        event loop hears control's beacons on the commands subject, on a
        connection of its own, control sends commands there only:
        nats-server delivers them to the loops' connections and to no other
        of the gateways'; the answer and the client are as before."""
        c = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=2, http=False)
        ch = grpc.insecure_channel("127.0.0.1:%d" % c.control_port)
        try:
            s = stub_mod.ControlStub(ch)
            wait_until(lambda: len(s.ListGateways(pb.ListGatewaysRequest(), metadata=API_KEY, timeout=2).gateways) == 2,
                       10, "both gateways attached")
            driver.send(op="centrifuge", name="onloop", url=c.ws_url("gw-1"), token=c.token("onloop-1"))
            driver.wait_event("onloop", "server_subscribed", channel="#onloop-1")

            def out_msgs():
                got = {}
                for x in c.nats_connections():
                    if x["name"].startswith("switchboard-gateway gw-1"):
                        key = "loop" if x["name"].endswith(" loop") else "other"
                        got[key] = got.get(key, 0) + x.get("out_msgs", 0)
                return got

            def send(n):
                req = pb.SendToUserRequest(app_id="demo", user_id="onloop-1", event="e")
                req.data.string_value = "m%d" % n
                return s.SendToUser(req, metadata=API_KEY, timeout=5)
            sent = [0]

            def through_the_loop():
                before = out_msgs()
                sent[0] += 1
                r = send(sent[0])
                self.assertTrue(r.coverage.complete, r)
                self.assertEqual((r.delivered, dict(r.delivered_per_gateway)), (1, {"gw-1": 1, "gw-2": 0}), r)
                after = out_msgs()
                return after.get("loop", 0) > before.get("loop", 0) and after.get("other") == before.get("other")
            # Within a few heartbeats (300 ms here) of both being live.
            wait_until(through_the_loop, 10, "a send delivered to gw-1's loop connection alone")
            for n in range(5):
                self.assertTrue(through_the_loop(), "send %d went elsewhere" % n)
            # The client got every one, once, in order.
            wait_until(lambda: len([e for e in driver.events("onloop") if e["event"] == "publication"]) == sent[0],
                       10, "every publication")
            pubs = [e["data"] for e in driver.events("onloop") if e["event"] == "publication"]
            self.assertEqual(pubs, ["m%d" % i for i in range(1, sent[0] + 1)])
            driver.send(op="close", name="onloop")
        finally:
            ch.close()
            c.close()


class SendsWhileGatewaysJoinTest(unittest.TestCase):
    def test_pipelined_sends_while_gateways_join_are_complete_and_delivered_once(self):
        """Control sends commands on the commands subject (read by each
        gateway's loop) or the gateways subject (read by its NATS thread),
        whichever every gateway asked can hear; the choice changes twice when
        a gateway joins (it reports its loop only once it hears control's
        beacon there), and a gateway is asked from the instant it attaches,
        before its welcome (with control's answer key) has reached it. One
        caller's sends, 16 in flight at once, while three gateways join:
        every answer complete, every message handed to the session received
        once. (Not their order: gRPC does not order calls in flight together
        — seen reordered under ASan with no change of subject at all; the
        order of commands control publishes in turn is the unit test's.)"""
        c = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=2, http=False)
        ch = grpc.insecure_channel("127.0.0.1:%d" % c.control_port)
        stop = threading.Event()
        try:
            s = stub_mod.ControlStub(ch)
            wait_until(lambda: len(s.ListGateways(pb.ListGatewaysRequest(), metadata=API_KEY, timeout=2).gateways) == 2,
                       10, "both gateways attached")
            driver.send(op="centrifuge", name="inorder", url=c.ws_url("gw-1"), token=c.token("inorder-1"))
            driver.wait_event("inorder", "server_subscribed", channel="#inorder-1")
            handed = []  # the sequence numbers the answers say gw-1 took
            errors, incomplete = [], []

            def sender():
                try:
                    send_all()
                except Exception as e:  # noqa: BLE001 (reported below)
                    errors.append(e)
                    stop.set()

            def send_all():
                n, window = 0, []
                while not stop.is_set() or window:
                    while not stop.is_set() and len(window) < 16:
                        n += 1
                        req = pb.SendToUserRequest(app_id="demo", user_id="inorder-1", event="e")
                        req.data.string_value = "%d" % n
                        window.append((n, s.SendToUser.future(req, metadata=API_KEY, timeout=10)))
                    m, f = window.pop(0)
                    r = f.result()
                    if not r.coverage.complete:
                        incomplete.append((m, r.coverage.incomplete_reason))
                    if r.delivered_per_gateway.get("gw-1") == 1:
                        handed.append(m)
            t = threading.Thread(target=sender)
            t.start()
            def switches():
                return [line.rsplit(" ", 1)[1] for p in c.controls for line in p.lines
                        if "bus: commands now go to" in line]
            before = len(switches())
            for i in range(3):
                c.add_gateway("gw-join-%d" % i)
                wait_until(lambda: len(s.ListGateways(pb.ListGatewaysRequest(), metadata=API_KEY,
                                                      timeout=2).gateways) == 3 + i, 10, "gw-join-%d attached" % i)
                # Until control has seen its loop proven (its beacon heard):
                # commands back on the loops' subject.
                wait_until(lambda: switches()[-1].endswith(".commands"), 10, "commands back on the loops' subject")
            stop.set()
            t.join(60)
            self.assertFalse(t.is_alive())
            self.assertEqual(errors, [])
            # A new gateway is asked from the moment it attached, before its
            # welcome (with this replica's answer key) reaches it: its
            # answers to those first calls come again, signed, once the key
            # is in, and the calls are complete (not left to their deadline).
            self.assertEqual(incomplete, [])
            self.assertGreater(len(handed), 100)
            # The joins changed the subject under the sends (to the gateways
            # subject while a new gateway's loop was unproven, and back).
            self.assertGreaterEqual(len(switches()) - before, 2, switches())
            wait_until(lambda: len([e for e in driver.events("inorder") if e["event"] == "publication"]) >= len(handed),
                       20, "every publication handed to the session")
            got = [int(e["data"]) for e in driver.events("inorder") if e["event"] == "publication"]
            # Every one handed over, once.
            self.assertEqual(len(got), len(set(got)))
            self.assertEqual(sorted(got), sorted(handed))
            driver.send(op="close", name="inorder")
        finally:
            stop.set()
            ch.close()
            c.close()


class NatsKeepaliveTest(unittest.TestCase):
    """Its own cluster: nats-server pings every client connection four times
    a second and drops one that misses two answers (its default: every two
    minutes). Control's and the gateways' receiving connections answer from
    their own thread (NATS.c's event-loop mode): they must keep answering."""

    def test_every_bus_connection_answers_the_servers_pings(self):
        c = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=2, http=False,
                    nats_extra='ping_interval: "250ms"\nping_max: 2\n')
        ch = grpc.insecure_channel("127.0.0.1:%d" % c.control_port)
        try:
            s = stub_mod.ControlStub(ch)
            req = pb.UserConnectionsRequest(app_id="demo", user_id="keepalive")
            wait_until(lambda: s.UserConnections(req, metadata=API_KEY, timeout=2).result.complete, 10,
                       "a complete answer")

            def conns():
                return {x["cid"]: x["name"] for x in c.nats_connections()}
            before = conns()
            # Control: one connection to publish, one to receive; each
            # gateway those two and a third its event loop reads commands
            # from, which hears control's beacons (through the least
            # permissions).
            self.assertEqual(sorted(before.values()), sorted(["switchboard-control"] * 2 +
                                                             ["switchboard-gateway gw-1"] * 2 +
                                                             ["switchboard-gateway gw-2"] * 2 +
                                                             ["switchboard-gateway gw-1 loop",
                                                              "switchboard-gateway gw-2 loop"]), before)
            for g, (p, _) in c.gateways.items():
                p.wait_line(r"control heard on the commands subject")
            # Twelve server pings (3 s, an observation window): a connection
            # that missed two would be gone and come back with a new cid.
            t0 = time.monotonic()
            wait_until(lambda: time.monotonic() - t0 >= 3.0 and conns() == before, 10,
                       "the same connections (cids) after 3 s of pings as before: %s" % before)
            self.assertTrue(s.UserConnections(req, metadata=API_KEY, timeout=2).result.complete)
            for name, proc in [("control", c.control)] + [(g, p) for g, (p, _) in c.gateways.items()]:
                self.assertFalse([l for l in list(proc.lines) if "nats: disconnected" in l], name)
        finally:
            ch.close()
            c.close()


class NatsOutageTest(unittest.TestCase):
    """Its own cluster: it takes the bus down."""

    def test_bus_down_fails_fast_keeps_sockets_and_recovers(self):
        c = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=1)
        ch = grpc.insecure_channel("127.0.0.1:%d" % c.control_port)
        try:
            s = stub_mod.ControlStub(ch)
            req = pb.UserConnectionsRequest(app_id="demo", user_id="50")
            wait_until(lambda: len(s.ListGateways(pb.ListGatewaysRequest(), metadata=API_KEY, timeout=2).gateways) == 1,
                       10, "gateway attached")
            driver.send(op="centrifuge", name="outage", url=c.ws_url("gw-1"), token=c.token("50"))
            cid = driver.wait_event("outage", "connected")["client"]
            procs = {"control": c.control.p.pid, "gw-1": c.gateways["gw-1"][0].p.pid}
            cpu0, t_down = {k: cpu_seconds(v) for k, v in procs.items()}, time.monotonic()
            c.stop_nats()
            # A gateway that starts while the bus is down: its connections
            # come up later, from NATS.c's reconnect thread.
            late, _ = c.add_gateway("gw-late")

            def unavailable():
                try:
                    s.UserConnections(req, metadata=API_KEY, timeout=2)
                    return False
                except grpc.RpcError as e:
                    return e.code() == grpc.StatusCode.UNAVAILABLE
            wait_until(unavailable, 10, "UNAVAILABLE while NATS is down")
            t0 = time.monotonic()
            with self.assertRaises(grpc.RpcError) as cm:
                s.UserConnections(req, metadata=API_KEY, timeout=2)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
            self.assertLess(time.monotonic() - t0, 1.0)  # fails fast, well inside the 2 s deadline
            # Nobody spins on the broken bus connections meanwhile (the
            # window: the outage so far, at least the late gateway's 3 s wait
            # for the bus).
            window = time.monotonic() - t_down
            for name, pid in procs.items():
                self.assertLess(cpu_seconds(pid) - cpu0[name], 0.25 * window, "%s busy while NATS was down" % name)

            c.restart_nats()
            restarted = time.monotonic()

            def recovered():
                # UNAVAILABLE until control is back on the bus; from then on
                # complete: a call published before the gateways were back on
                # the bus is asked again as each announces its return (it
                # used to wait out its deadline and come back incomplete).
                # A 5 s deadline: a gateway's reconnect may take longer than
                # 2 s on a loaded machine; the call is answered as soon as it
                # is back, not at the deadline.
                try:
                    return s.UserConnections(req, metadata=API_KEY, timeout=5).result
                except grpc.RpcError:
                    return None
            res = wait_until(recovered, 15, "UserConnections answers again")
            print("NATS back: first answer after %.2f s, complete=%s %s" % (
                time.monotonic() - restarted, res.complete, res.incomplete_reason))
            self.assertTrue(res.complete, res.incomplete_reason)
            # The socket stayed up through the outage.
            self.assertEqual(list(res.connections.keys()), [cid])
            self.assertTrue(res.complete)
            # ... and the gateway that started during it answers too.
            self.assertIn("gw-late", [g.id for g in s.ListGateways(pb.ListGatewaysRequest(), metadata=API_KEY,
                                                                          timeout=2).gateways])
            self.assertIsNone(late.p.poll())
            # A command after the outage (read by the gateway's loop from
            # its own connection once that is live again; until then handed
            # over by the NATS thread): complete, and the client has it.
            def sent():
                sreq = pb.SendToUserRequest(app_id="demo", user_id="50", event="after-outage")
                sreq.data.string_value = "bus back"
                try:
                    r = s.SendToUser(sreq, metadata=API_KEY, timeout=5)
                except grpc.RpcError:
                    return None
                return r if r.coverage.complete else None
            r = wait_until(sent, 15, "a complete SendToUser after the outage")
            self.assertEqual((r.delivered, dict(r.delivered_per_gateway)), (1, {"gw-1": 1, "gw-late": 0}), r)
            pub = driver.wait_event("outage", "publication")
            self.assertEqual((pub["channel"], pub["data"]), ("#50", "bus back"))
            self.assertFalse([e for e in driver.events("outage") if e["event"] == "disconnected"
                              or (e["event"] == "connecting" and e["code"] != 0)])
            driver.send(op="close", name="outage")
        finally:
            ch.close()
            c.close()


if __name__ == "__main__":
    ARGS, argv = parse_args()
    unittest.main(argv=argv, verbosity=2)
