"""Connection token lifecycle over real time, with the unmodified centrifuge-js
SDK: refresh before expiry on the same connection, error 109 for a token that
expired before connect (the SDK calls getToken and connects), and the 3005
close only after the grace period for a client that never refreshes, on
WebSocket and on the unidirectional HTTP stream. Real nats-server, control and
a gateway; grace is 3 s here (25 s by default)."""
import json
import os
import sys
import time
import unittest


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Cluster, Driver, Proc, control_api, load_stubs, parse_args, wait_until  # noqa: E402

ARGS = None
API_KEY = (("authorization", "apikey test-api-key-1234"),)
SECRET = "demo-secret-for-tests"
GRACE = 3
LONG_RUN_S = 30
TOKEN_TTL_S = 4


def setUpModule():
    global cluster, driver, pb, stub, long_started
    load_stubs(ARGS.source_dir)
    cluster = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=1, http=False, grace=GRACE)
    driver = Driver(os.path.join(ARGS.source_dir, "tests/integration/node"))
    pb, stub = control_api(cluster, 1, API_KEY)
    # The long-lived client starts first; the other tests run while it lives.
    driver.send(op="centrifuge", name="long", url=cluster.ws_url("gw-1"),
                token=cluster.token("long-user", ttl=str(TOKEN_TTL_S)), client_name="refresher",
                get_token={"secret": SECRET, "sub": "long-user", "ttl": TOKEN_TTL_S})
    driver.wait_event("long", "connected")
    long_started = time.monotonic()


def tearDownModule():
    driver.stop()
    cluster.close()


def connections(user):
    return stub.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id=user), metadata=API_KEY,
                                timeout=2).result.connections


def dropped(name):
    return [e for e in driver.events(name)
            if e["event"] == "disconnected" or (e["event"] == "connecting" and e["code"] != 0)]


def signed(sub, exp):
    """A token with exactly this exp (the CLI takes a ttl in whole seconds from now)."""
    import jwt  # python3-jwt, installed by scripts/setup.sh
    return jwt.encode({"sub": sub, "exp": exp}, SECRET, algorithm="HS256")


class ExpiredAtConnectTest(unittest.TestCase):
    def check(self, protobuf):
        name = "late-pb" if protobuf else "late-json"
        driver.send(op="centrifuge", name=name, url=cluster.ws_url("gw-1"), protobuf=protobuf,
                    token=signed(name, int(time.time()) - 5), client_name=name,
                    get_token={"secret": SECRET, "sub": name, "ttl": 600})
        err = driver.wait_event(name, "error", type="connect")
        self.assertEqual(err["code"], 109, err)
        driver.wait_event(name, "get_token")
        client = driver.wait_event(name, "connected")["client"]
        self.assertEqual(list(connections(name)), [client])
        self.assertEqual([e for e in driver.events(name) if e["event"] == "disconnected"], [])
        driver.send(op="close", name=name)

    def test_json_sdk_gets_109_calls_get_token_and_connects(self):
        self.check(protobuf=False)

    def test_protobuf_sdk_gets_109_calls_get_token_and_connects(self):
        self.check(protobuf=True)


class NoRefreshTest(unittest.TestCase):
    def test_websocket_client_that_never_refreshes_is_closed_with_3005_after_the_grace(self):
        exp = int(time.time()) + 2
        frame = json.dumps({"id": 1, "connect": {"token": signed("lazy", exp), "name": "raw"}})
        driver.send(op="raw", name="lazy", url=cluster.ws_url("gw-1"), frames=[frame])
        reply = json.loads(wait_until(lambda: next((e["data"] for e in driver.events("lazy")
                                                    if e["event"] == "raw_message"), None), 10, "connect reply"))
        self.assertTrue(reply["connect"]["expires"])
        self.assertLessEqual(reply["connect"]["ttl"], 2)
        ev = driver.wait_event("lazy", "raw_close", timeout=exp + GRACE + 10 - time.time())
        closed_at = time.time()
        self.assertEqual((ev["code"], ev["reason"]), (3005, "connection expired"))
        # Not at exp: only once the grace has run out.
        self.assertGreaterEqual(closed_at, exp + GRACE - 0.5)
        self.assertEqual(dict(connections("lazy")), {})

    def test_uni_stream_ends_with_the_expiry_disconnect_after_the_grace(self):
        exp = int(time.time()) + 2
        body = json.dumps({"token": signed("uni", exp), "name": "curl"})
        url = "http://127.0.0.1:%d/connection/uni_http_stream" % cluster.gateways["gw-1"][1]
        curl = Proc("curl-uni", ["curl", "-sN", "-X", "POST", "--data-binary", body, url])
        try:
            def lines():
                with curl.cond:
                    return [json.loads(x) for x in curl.lines if x.strip()]
            connect = wait_until(lambda: next((m["connect"] for m in lines() if "connect" in m), None), 10, "connect")
            self.assertTrue(connect["expires"])
            self.assertLessEqual(connect.get("ttl", 0), 2)  # 0 (under a second left) is left out
            disconnect = wait_until(lambda: next((m["disconnect"] for m in lines() if "disconnect" in m), None),
                                    exp + GRACE + 10 - time.time(), "disconnect line")
            self.assertGreaterEqual(time.time(), exp + GRACE - 0.5)
            self.assertEqual(disconnect["code"], 3005)
            wait_until(lambda: curl.p.poll() is not None, 10, "stream ends")
        finally:
            curl.stop()

    def test_expired_token_on_uni_stream_ends_at_once_with_3005(self):
        body = json.dumps({"token": signed("uni-late", int(time.time()) - 5)})
        url = "http://127.0.0.1:%d/connection/uni_http_stream" % cluster.gateways["gw-1"][1]
        curl = Proc("curl-late", ["curl", "-sN", "-X", "POST", "--data-binary", body, url])
        try:
            wait_until(lambda: curl.p.poll() is not None, 10, "stream ends")
            with curl.cond:
                msgs = [json.loads(x) for x in curl.lines if x.strip()]
            self.assertEqual(msgs, [{"disconnect": {"code": 3005, "reason": "connection expired"}}])
        finally:
            curl.stop()


class ZLongRunTest(unittest.TestCase):
    """Runs last (unittest orders by name): the client started in setUpModule."""

    def test_sdk_with_4s_tokens_stays_connected_30s_through_refreshes(self):
        client = driver.wait_event("long", "connected")["client"]
        left = LONG_RUN_S - (time.monotonic() - long_started)
        # Wake on every event the driver prints; a drop ends the wait early.
        with driver.cond:
            driver.cond.wait_for(lambda: dropped("long"), timeout=max(0, left))
        self.assertEqual(dropped("long"), [])
        tokens = driver.events("long")
        refreshes = [e for e in tokens if e["event"] == "get_token"]
        # A 4 s token over 30 s: at least five refreshes, on the same connection.
        self.assertGreaterEqual(len(refreshes), 5, refreshes)
        self.assertEqual([e["client"] for e in driver.events("long") if e["event"] == "connected"], [client])
        self.assertEqual(list(connections("long-user")), [client])


if __name__ == "__main__":
    ARGS, argv = parse_args()
    unittest.main(argv=argv, verbosity=2)
