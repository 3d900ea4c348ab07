"""Client protocols at the gateway, with the clients products ship unchanged:
pusher-js (Pusher Channels protocol 7), centrifuge-js in its JSON and protobuf
builds, and curl on the unidirectional HTTP stream. Real nats-server, control
and two gateways; Python is the gRPC backend (grpcio)."""
import json
import os
import signal
import subprocess
import sys
import time
import unittest

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Cluster, Driver, Proc, control_api, load_stubs, parse_args, wait_until  # noqa: E402

ARGS = None
API_KEY = (("authorization", "apikey test-api-key-1234"),)
KEY, SECRET = "demo-key", "demo-secret-for-tests"


def setUpModule():
    global cluster, driver, pb, stub
    load_stubs(ARGS.source_dir)
    cluster = Cluster(ARGS.build_dir, ARGS.source_dir, http=False)
    driver = Driver(os.path.join(ARGS.source_dir, "tests/integration/node"))
    pb, stub = control_api(cluster, 2, API_KEY)


def tearDownModule():
    driver.stop()
    cluster.close()


def user_connections(user):
    return stub.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id=user), metadata=API_KEY,
                                timeout=2).result


_seq = [0]


def next_name(prefix):
    _seq[0] += 1
    return "%s%d" % (prefix, _seq[0])


def gw_port(gw):
    return cluster.gateways[gw][1]


def centrifuge(user, gw, protobuf=False, **token_kw):
    name = next_name("pb" if protobuf else "cj")
    driver.send(op="centrifuge", name=name, url=cluster.ws_url(gw), token=cluster.token(user, **token_kw),
                client_name="centrifuge-" + ("protobuf" if protobuf else "json"), client_version="5.7.4",
                protobuf=protobuf)
    return name, driver.wait_event(name, "connected")["client"]


def pusher(user, gw, user_info=None, signin=True, bad_signature=False):
    name = next_name("pu")
    user_data = {"id": user}
    if user_info is not None:
        user_data["user_info"] = user_info
    driver.send(op="pusher", name=name, key=KEY, secret=SECRET, port=gw_port(gw), user_data=user_data,
                signin=signin, bad_signature=bad_signature)
    socket_id = driver.wait_event(name, "pusher_connected")["socket_id"]
    if signin and not bad_signature:
        driver.wait_event(name, "pusher_signin_success")
    return name, socket_id


class UniStream:
    """curl -N as a client of POST /connection/uni_http_stream."""

    def __init__(self, user, gw, body=None):
        self.body = body if body is not None else json.dumps(
            {"token": cluster.token(user), "name": "curl", "version": "8.0"})
        url = "http://127.0.0.1:%d/connection/uni_http_stream" % gw_port(gw)
        self.proc = Proc(next_name("curl"), ["curl", "-sN", "-X", "POST", "-H", "Content-Type: application/json",
                                             "--data-binary", self.body, url])

    def messages(self):
        with self.proc.cond:
            return [json.loads(line) for line in self.proc.lines if line.strip()]

    def wait_message(self, key, timeout=10):
        return wait_until(lambda: next((m[key] for m in self.messages() if key in m), None), timeout,
                          "uni stream %s" % key)

    def ended(self):
        return self.proc.p.poll() is not None

    def close(self):
        self.proc.stop()


def pusher_close(socket_id, timeout=10):
    def find():
        return next((e for e in driver.events() if e.get("event") == "pusher_ws_close"
                     and e.get("socket_id") == socket_id), None)
    return wait_until(find, timeout, "pusher socket %s closed" % socket_id)


def centrifuge_dropped(name):
    return [e for e in driver.events(name)
            if e["event"] == "disconnected" or (e["event"] == "connecting" and e["code"] != 0)]


class AllProtocolsTest(unittest.TestCase):
    def test_every_protocol_is_listed_and_terminated_with_its_own_close(self):
        user = "80"
        cj = [centrifuge(user, gw) for gw in ("gw-1", "gw-2")]
        cp = [centrifuge(user, gw, protobuf=True) for gw in ("gw-2", "gw-1")]
        pu = [pusher(user, gw, user_info={"plan": "gold"}) for gw in ("gw-1", "gw-2")]
        uni = [UniStream(user, gw) for gw in ("gw-2", "gw-1")]
        uni_ids = [u.wait_message("connect")["client"] for u in uni]
        other_c = centrifuge("81", "gw-1")
        other_p = pusher("81", "gw-2")
        unsigned = pusher(user, "gw-1", signin=False)

        res = user_connections(user)
        self.assertTrue(res.complete)
        conns = res.connections
        want = {}
        for _, cid in cj:
            want[cid] = ("websocket", "json", "centrifuge-json", "5.7.4")
        for _, cid in cp:
            want[cid] = ("websocket", "protobuf", "centrifuge-protobuf", "5.7.4")
        for _, sid in pu:
            want[sid] = ("websocket", "pusher", "js", "8.6.0")
        for cid in uni_ids:
            want[cid] = ("uni_http_stream", "json", "curl", "8.0")
        self.assertEqual(set(conns), set(want))  # unsigned pusher connections are not sessions
        for cid, (transport, protocol, app_name, app_version) in want.items():
            info = conns[cid]
            self.assertEqual((info.transport, info.protocol, info.app_name, info.app_version),
                             (transport, protocol, app_name, app_version), cid)
        self.assertEqual(dict(conns[pu[0][1]].meta.struct_value), {"plan": "gold"})

        # Keep one of each, terminate the rest.
        keep = [cj[0][1], cp[0][1], pu[0][1], uni_ids[0]]
        resp = stub.TerminateUser(pb.TerminateUserRequest(app_id="demo", user_id=user, except_client_ids=keep),
                                  metadata=API_KEY, timeout=2)
        self.assertEqual(resp.closed, 4)
        self.assertTrue(resp.coverage.complete)
        for name, _ in (cj[1], cp[1]):
            ev = driver.wait_event(name, "disconnected")
            self.assertEqual((ev["code"], ev["reason"]), (3503, "force disconnect"))
        closed = pusher_close(pu[1][1])
        self.assertEqual(closed["code"], 4009)
        err = driver.wait_event(pu[1][0], "pusher_error_event")
        self.assertEqual(err["data"]["code"], 4009)
        self.assertTrue(err["data"]["message"])
        self.assertEqual(uni[1].wait_message("disconnect"), {"code": 3503, "reason": "force disconnect"})
        wait_until(uni[1].ended, 10, "terminated curl stream ends")

        self.assertEqual(set(user_connections(user).connections), set(keep))
        self.assertEqual(set(user_connections("81").connections), {other_c[1], other_p[1]})
        self.assertFalse(centrifuge_dropped(cj[0][0]))
        self.assertFalse(centrifuge_dropped(cp[0][0]))
        self.assertFalse(centrifuge_dropped(other_c[0]))
        self.assertFalse(uni[0].ended())
        for name, sid in (pu[0], other_p, unsigned):
            self.assertFalse([e for e in driver.events() if e.get("event") == "pusher_ws_close"
                              and e.get("socket_id") == sid], name)
        # pusher-js does not come back after 4009.
        self.assertEqual([e["current"] for e in driver.events(pu[1][0]) if e["event"] == "pusher_state"][-1],
                         "disconnected")
        self.assertEqual(len([e for e in driver.events(pu[1][0]) if e["event"] == "pusher_connected"]), 1)

        # A reconnect-style terminate: Pusher gets 4200 and comes back at once.
        resp = stub.TerminateUser(pb.TerminateUserRequest(app_id="demo", user_id=user, code=3001, reason="move"),
                                  metadata=API_KEY, timeout=2)
        self.assertEqual(resp.closed, 4)
        self.assertEqual(pusher_close(pu[0][1])["code"], 4200)
        wait_until(lambda: len([e for e in driver.events(pu[0][0]) if e["event"] == "pusher_connected"]) == 2,
                   10, "pusher-js reconnected after 4200")
        ev = driver.wait_event(cj[0][0], "connecting", code=3001)
        self.assertEqual(ev["reason"], "move")
        self.assertEqual(uni[0].wait_message("disconnect")["code"], 3001)
        for u in uni:
            u.close()
        for name in [n for n, _ in cj + cp + pu] + [other_c[0], other_p[0], unsigned[0]]:
            driver.send(op="close", name=name)


class PusherProtocolTest(unittest.TestCase):
    def raw(self, name, path, frames, gw="gw-1"):
        driver.send(op="raw", name=name, url="ws://127.0.0.1:%d%s" % (gw_port(gw), path), frames=frames)

    def raw_messages(self, name):
        return [json.loads(e["data"]) for e in driver.events(name) if e["event"] == "raw_message"]

    def test_connection_established_ping_pong(self):
        self.raw("praw", "/app/%s?protocol=7&client=raw&version=1" % KEY,
                 [json.dumps({"event": "pusher:ping", "data": {}})])
        wait_until(lambda: len(self.raw_messages("praw")) >= 2, 10, "established + pong")
        est, pong = self.raw_messages("praw")[:2]
        self.assertEqual(est["event"], "pusher:connection_established")
        data = json.loads(est["data"])
        self.assertRegex(data["socket_id"], r"^\d+\.\d+$")
        self.assertEqual(data["activity_timeout"], 25)
        self.assertEqual(pong["event"], "pusher:pong")
        driver.send(op="close", name="praw")

    def test_unknown_app_key_is_closed_with_4001(self):
        self.raw("pnokey", "/app/no-such-key?protocol=7", [])
        ev = driver.wait_event("pnokey", "raw_close")
        self.assertEqual(ev["code"], 4001)
        msgs = self.raw_messages("pnokey")
        self.assertEqual((msgs[0]["event"], msgs[0]["data"]["code"]), ("pusher:error", 4001))

    def test_bad_signature_gets_an_error_and_stays_unsigned(self):
        name, sid = pusher("82", "gw-2", bad_signature=True)
        err = driver.wait_event(name, "pusher_error_event")
        self.assertIn("signature", err["data"]["message"])
        self.assertEqual(len(user_connections("82").connections), 0)
        self.assertFalse([e for e in driver.events() if e.get("event") == "pusher_ws_close"
                          and e.get("socket_id") == sid])
        # Unsigned connections are never terminated.
        self.assertEqual(stub.TerminateUser(pb.TerminateUserRequest(app_id="demo", user_id="82"),
                                            metadata=API_KEY, timeout=2).closed, 0)
        driver.send(op="close", name=name)

    def test_unsupported_events_get_clear_errors(self):
        name, sid = pusher("83", "gw-1")
        driver.send(op="pusher_subscribe", name=name, channel="news")
        sub_err = driver.wait_event(name, "pusher_subscription_error")
        self.assertEqual(sub_err["data"]["status"], 501)
        driver.send(op="pusher_send", name=name, event="client-typing", data={"x": 1}, channel="news")
        wait_until(lambda: any("Client events" in e["data"]["message"]
                               for e in driver.events(name) if e["event"] == "pusher_error_event"),
                   10, "client event refused")
        # Still a session.
        self.assertEqual(list(user_connections("83").connections), [sid])
        driver.send(op="close", name=name)

    def test_malformed_frames_get_an_error_not_a_crash(self):
        self.raw("pbad", "/app/%s" % KEY, ["{not json", "[1,2]", '{"event": 5}'])
        wait_until(lambda: len([m for m in self.raw_messages("pbad") if m["event"] == "pusher:error"]) == 3,
                   10, "three errors")
        driver.send(op="close", name="pbad")
        # The gateway is fine.
        pusher("84", "gw-1")


class UniStreamTest(unittest.TestCase):
    def test_bad_token_ends_with_3500(self):
        u = UniStream("x", "gw-1", body=json.dumps({"token": "bad.token.here"}))
        self.assertEqual(u.wait_message("disconnect")["code"], 3500)
        wait_until(u.ended, 10, "stream ends")

    def test_malformed_body_ends_with_3501(self):
        u = UniStream("x", "gw-2", body="{nope")
        self.assertEqual(u.wait_message("disconnect")["code"], 3501)
        wait_until(u.ended, 10, "stream ends")

    def test_http2_on_plain_http_is_refused_cleanly_and_http1_works(self):
        url = "http://127.0.0.1:%d/connection/uni_http_stream" % gw_port("gw-1")
        body = json.dumps({"token": cluster.token("720")})
        # An h2c upgrade (curl --http2): a 400 in HTTP/1.1 saying what to use,
        # never a 101 followed by a broken stream.
        out = subprocess.run(["curl", "-sS", "--http2", "--max-time", "5", "-w", "\n%{http_code} %{http_version}",
                              "-X", "POST", "--data-binary", body, url], capture_output=True, text=True, timeout=20)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("h2c", out.stdout)
        self.assertTrue(out.stdout.rstrip().endswith("400 1"), out.stdout)  # HTTP/1.x, 400
        # HTTP/2 with prior knowledge: the connection is closed at once (an h2
        # client cannot read an HTTP/1.1 answer), not held.
        start = time.monotonic()
        out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--max-time", "5", "-X", "POST",
                              "--data-binary", body, url], capture_output=True, text=True, timeout=20)
        self.assertNotEqual(out.returncode, 0)
        self.assertNotEqual(out.returncode, 28, "held until curl's timeout")
        self.assertLess(time.monotonic() - start, 4)
        # The same stream over HTTP/1.1 is JSON lines.
        u = UniStream("720", "gw-1")
        self.assertIn("client", u.wait_message("connect"))
        u.close()


class CentrifugeJsonBatchTest(unittest.TestCase):
    def test_several_commands_in_one_frame(self):
        token = cluster.token("85")
        frame = "\n".join([json.dumps({"id": 1, "connect": {"token": token, "name": "batch"}}),
                           json.dumps({"id": 2, "ping": {}}), json.dumps({"id": 3, "ping": {}})])
        driver.send(op="raw", name="batch", url=cluster.ws_url("gw-1"), frames=[frame])

        def replies():
            out = []
            for e in driver.events("batch"):
                if e["event"] == "raw_message":
                    out += [json.loads(line) for line in e["data"].split("\n") if line.strip()]
            return out
        wait_until(lambda: len(replies()) >= 3, 10, "three replies")
        self.assertEqual([r.get("id") for r in replies()[:3]], [1, 2, 3])
        self.assertIn("client", replies()[0]["connect"])
        driver.send(op="close", name="batch")


class PusherActivityTimeoutTest(unittest.TestCase):
    def test_silent_client_is_closed_with_4201(self):
        c = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=1, ping=1, http=False)
        try:
            driver.send(op="raw", name="psilent", url="ws://127.0.0.1:%d/app/%s" % (c.gateways["gw-1"][1], KEY),
                        frames=[])
            ev = driver.wait_event("psilent", "raw_close", timeout=15)
            self.assertEqual(ev["code"], 4201)
            events = [json.loads(e["data"])["event"] for e in driver.events("psilent") if e["event"] == "raw_message"]
            self.assertEqual(events[:2], ["pusher:connection_established", "pusher:ping"])
        finally:
            c.close()



def publications(name):
    return [(e["channel"], e["data"]) for e in driver.events(name) if e["event"] == "publication"]


def send_to_user(user, data, event="note", except_ids=(), timeout=2):
    req = pb.SendToUserRequest(app_id="demo", user_id=user, event=event, except_client_ids=list(except_ids))
    req.data.CopyFrom(json_value(data))
    return stub.SendToUser(req, metadata=API_KEY, timeout=timeout)


def json_value(data):
    from google.protobuf import json_format, struct_pb2
    v = struct_pb2.Value()
    json_format.Parse(json.dumps(data), v)
    return v


class SendTest(unittest.TestCase):
    """SendToUser / SendToClient: every Centrifugo session of the user gets
    the message as a publication on its personal channel `#<user>`, to which
    the connect reply subscribed it; nobody else does; the answer counts
    what was handed to whom."""

    def test_every_session_of_the_user_and_nobody_else(self):
        user, other = "send-1", "send-2"
        (j1, j1_id), (p2, p2_id) = centrifuge(user, "gw-1"), centrifuge(user, "gw-2", protobuf=True)
        kept, kept_id = centrifuge(user, "gw-2")
        stranger, _ = centrifuge(other, "gw-1")
        uni = UniStream(user, "gw-1")
        uni_id = uni.wait_message("connect")["client"]
        self.assertEqual(uni.wait_message("connect")["subs"], {"#" + user: {}})
        for name in (j1, p2, kept):
            driver.wait_event(name, "server_subscribed", channel="#" + user)
        data = {"text": "revoked elsewhere", "n": 1, "nested": {"ok": True, "list": [1, "ü"]}}
        r = send_to_user(user, data, except_ids=[kept_id])
        self.assertTrue(r.coverage.complete, r)
        self.assertEqual(r.delivered, 3)
        self.assertEqual(dict(r.delivered_per_gateway), {"gw-1": 2, "gw-2": 1})
        self.assertEqual(dict(r.not_delivered), {})
        for name in (j1, p2):
            driver.wait_event(name, "publication")
            self.assertEqual(publications(name), [("#" + user, data)])
        pub = wait_until(lambda: next((m for m in uni.messages() if "pub" in m), None), 10, "uni stream publication")
        self.assertEqual(pub, {"channel": "#" + user, "pub": {"data": data}})
        # One connection alone; messages to a session keep their order, so
        # the kept client's first publication being this one shows it missed
        # the first.
        r = stub.SendToClient(pb.SendToClientRequest(app_id="demo", client_id=kept_id, event="e",
                                                     data=json_value([2])), metadata=API_KEY, timeout=2)
        self.assertEqual((r.found, r.gateway, r.delivered, r.coverage.complete), (True, "gw-2", True, True), r)
        driver.wait_event(kept, "publication")
        self.assertEqual(publications(kept), [("#" + user, [2])])
        r = send_to_user(other, "for the other user")
        self.assertEqual(r.delivered, 1)
        driver.wait_event(stranger, "publication")
        self.assertEqual(publications(stranger), [("#" + other, "for the other user")])
        self.assertEqual(len(publications(j1)), 1)
        # Nobody there: nothing delivered, and still complete.
        r = send_to_user("nobody-here", 1)
        self.assertEqual((r.delivered, r.coverage.complete), (0, True))
        r = stub.SendToClient(pb.SendToClientRequest(app_id="demo", client_id="no-such-client", event="e"),
                              metadata=API_KEY, timeout=2)
        self.assertEqual((r.found, r.delivered, r.coverage.complete), (False, False, True))
        self.assertIn(uni_id, user_connections(user).connections)
        uni.close()

    def test_order_per_session_and_the_cli(self):
        user = "send-order"
        name, _ = centrifuge(user, "gw-1")
        driver.wait_event(name, "server_subscribed")
        for i in range(50):
            self.assertEqual(send_to_user(user, i).delivered, 1)
        out = json.loads(cluster.ctl("send", "--user", user, "--event", "cli", "--data", '{"from": "cli"}'))
        self.assertEqual((out["delivered"], out["coverage"]["complete"]), (1, True))
        wait_until(lambda: len(publications(name)) == 51, 10, "51 publications")
        self.assertEqual([d for _, d in publications(name)], list(range(50)) + [{"from": "cli"}])

    def test_pusher_js_gets_it_through_pusher_user_bind(self):
        user = "send-pusher"
        c, _ = centrifuge(user, "gw-1")
        pu, sock = pusher(user, "gw-2")
        # pusher-js subscribes to its user's channel by itself after signin.
        sub = driver.wait_event(pu, "pusher_subscription", channel="#server-to-user-" + user)
        self.assertEqual(sub["result"], "pusher_internal:subscription_succeeded")
        other, _ = pusher("send-pusher-other", "gw-1")
        driver.wait_event(other, "pusher_subscription", channel="#server-to-user-send-pusher-other")
        r = send_to_user(user, {"text": "hello"}, event="notice")
        self.assertEqual((r.delivered, dict(r.delivered_per_gateway), dict(r.not_delivered)),
                         (2, {"gw-1": 1, "gw-2": 1}, {}), r)
        ev = driver.wait_event(pu, "pusher_user_event", event_name="notice")
        self.assertEqual(ev["data"], {"text": "hello"})
        driver.wait_event(c, "publication")
        # A string payload reaches pusher-js as that string.
        self.assertEqual(send_to_user(user, "plain text", event="s").delivered, 2)
        self.assertEqual(driver.wait_event(pu, "pusher_user_event", event_name="s")["data"], "plain text")
        # The socket excluded by its socket_id (the client ID) gets nothing.
        self.assertEqual(send_to_user(user, 3, event="x", except_ids=[sock]).delivered, 1)
        self.assertEqual(send_to_user(user, 4, event="last").delivered, 2)
        driver.wait_event(pu, "pusher_user_event", event_name="last")
        self.assertEqual([e["event_name"] for e in driver.events(pu) if e["event"] == "pusher_user_event"],
                         ["notice", "s", "last"])
        self.assertFalse([e for e in driver.events(other) if e["event"] == "pusher_user_event"])

    def test_pusher_subscriptions_other_than_its_own_user_channel_are_refused(self):
        # pusher-js refuses to subscribe to '#' names itself: a raw socket asks.
        def subscribe(name, channel):
            url = "ws://127.0.0.1:%d/app/%s?protocol=7" % (gw_port("gw-1"), KEY)
            frame = json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}})
            driver.send(op="raw", name=name, url=url, frames=[frame])

            def answer():
                for e in driver.events(name):
                    if e["event"] == "raw_message":
                        m = json.loads(e["data"])
                        if m.get("channel") == channel:
                            return m
                return None
            return wait_until(answer, 10, "%s: an answer about %s" % (name, channel))
        m = subscribe("raw-sub-before-signin", "#server-to-user-x")
        self.assertEqual((m["event"], m["data"]["status"]), ("pusher:subscription_error", 401), m)
        m = subscribe("raw-sub-public", "public-news")
        self.assertEqual((m["event"], m["data"]["status"]), ("pusher:subscription_error", 501), m)

    def test_a_frozen_gateway_is_named_missing(self):
        user = "send-frozen"
        a, _ = centrifuge(user, "gw-1")
        centrifuge(user, "gw-2")
        gw2 = cluster.gateways["gw-2"][0]
        gw2.signal(signal.SIGSTOP)
        try:
            r = send_to_user(user, "while frozen", timeout=1)
        finally:
            gw2.signal(signal.SIGCONT)
        self.assertFalse(r.coverage.complete)
        self.assertEqual(list(r.coverage.gateways_missing), ["gw-2"])
        self.assertEqual(dict(r.delivered_per_gateway), {"gw-1": 1})
        driver.wait_event(a, "publication")

    def test_a_client_that_stops_reading_is_closed_as_slow_and_counted(self):
        # A raw WebSocket client that connects, then never reads again.
        import base64
        import socket
        import struct
        user = "send-slow"
        reader, _ = centrifuge(user, "gw-1")  # a well-behaved device of the same user
        sock = socket.create_connection(("127.0.0.1", gw_port("gw-1")))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(("GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
                      % key).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        self.assertIn(b" 101 ", head.split(b"\r\n")[0])
        cmd = json.dumps({"id": 1, "connect": {"token": cluster.token(user)}}).encode()
        mask = os.urandom(4)
        frame = bytes([0x81, 0x80 | 126]) + struct.pack(">H", len(cmd)) + mask + \
            bytes(b ^ mask[i % 4] for i, b in enumerate(cmd))
        sock.sendall(frame)
        wait_until(lambda: len(user_connections(user).connections) == 2, 10, "the raw client connected")
        payload = "x" * 60000
        slow = 0
        for _ in range(1000):
            r = send_to_user(user, payload)
            slow += r.not_delivered.get("slow consumer", 0)
            if slow or len(user_connections(user).connections) == 1:
                break
        self.assertEqual(slow, 1, "the stalled client was never found slow")
        # It reads again at once: what the kernel held, then a close frame
        # with 3008 (slow).
        sock.settimeout(10)
        data = b""
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
        sock.close()
        at, close = 0, None
        while at + 2 <= len(data):
            op, n = data[at] & 0x0F, data[at + 1] & 0x7F
            at += 2
            if n == 126:
                n, at = struct.unpack(">H", data[at:at + 2])[0], at + 2
            elif n == 127:
                n, at = struct.unpack(">Q", data[at:at + 8])[0], at + 8
            if op == 0x8:
                close = struct.unpack(">H", data[at:at + 2])[0]
            at += n
        self.assertEqual(close, 3008)
        # Gone from the fleet at once; the reader kept its session and gets
        # what comes next.
        self.assertEqual(len(user_connections(user).connections), 1)
        r = send_to_user(user, "after")
        self.assertEqual((r.delivered, dict(r.not_delivered)), (1, {}))
        driver.wait_event(reader, "publication", data="after")
        self.assertFalse(centrifuge_dropped(reader))

    def test_bad_arguments_send_nothing(self):
        user = "send-bad"
        name, cid = centrifuge(user, "gw-1")
        cases = [
            ("no event", dict(app_id="demo", user_id=user, event=""), grpc.StatusCode.INVALID_ARGUMENT, "event"),
            ("long event", dict(app_id="demo", user_id=user, event="e" * 201), grpc.StatusCode.INVALID_ARGUMENT,
             "event"),
            ("no user", dict(app_id="demo", user_id="", event="e"), grpc.StatusCode.INVALID_ARGUMENT, "user_id"),
            ("unknown app", dict(app_id="nope", user_id=user, event="e"), grpc.StatusCode.NOT_FOUND, "nope"),
        ]
        for what, kw, code, text in cases:
            with self.assertRaises(grpc.RpcError, msg=what) as cm:
                stub.SendToUser(pb.SendToUserRequest(**kw), metadata=API_KEY, timeout=2)
            self.assertEqual(cm.exception.code(), code, what)
            self.assertIn(text, cm.exception.details(), what)
        with self.assertRaises(grpc.RpcError) as cm:
            send_to_user(user, "x" * 70000)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("control.max_send_bytes", cm.exception.details())
        with self.assertRaises(grpc.RpcError) as cm:
            stub.SendToUser(pb.SendToUserRequest(app_id="demo", user_id=user, event="e"), timeout=2)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        # The first publication the client gets is this one: none of the above went out.
        self.assertEqual(send_to_user(user, "after").delivered, 1)
        driver.wait_event(name, "publication")
        self.assertEqual(publications(name), [("#" + user, "after")])


if __name__ == "__main__":
    ARGS, argv = parse_args()
    unittest.main(argv=argv, verbosity=2)
