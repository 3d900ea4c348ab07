"""HTTP API through the real switchboard-http proxy (grpc-gateway), with curl
as the HTTP client, Pusher signatures computed here (not by the code under
test), the official `pusher` server SDK, and centrifuge-js clients whose
sockets must close."""
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import parse_args, Cluster, Driver, wait_until  # noqa: E402

ARGS = None
API_KEY = "test-api-key-1234"
APPS = {"demo": ("demo-key", "demo-secret-for-tests"), "other": ("other-key", "other-secret-for-tests")}
EMPTY_MD5 = hashlib.md5(b"").hexdigest()


def setUpModule():
    global cluster, driver
    cluster = Cluster(ARGS.build_dir, ARGS.source_dir)
    driver = Driver(os.path.join(ARGS.source_dir, "tests/integration/node"))
    wait_until(lambda: curl("GET", "/gateways", headers=["Authorization: apikey " + API_KEY])[1].get("gateways", [])
               .__len__() == 2, 10, "both gateways attached")


def tearDownModule():
    driver.stop()
    cluster.close()


def curl(method, path, query="", body=None, headers=(), port=None):
    url = "http://127.0.0.1:%d%s%s" % (port or cluster.http_port, path, "?" + query if query else "")
    args = ["curl", "-sS", "-X", method, "-o", "-", "-w", "\n%{http_code}", url]
    for h in headers:
        args += ["-H", h]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", body]
    out = subprocess.run(args, capture_output=True, text=True, timeout=15)
    if out.returncode != 0:
        raise AssertionError("curl failed: %s" % out.stderr)
    text, _, code = out.stdout.rpartition("\n")
    return int(code), (json.loads(text) if text.strip() else None)


def signed_query(method, path, body, app="demo", key=None, secret=None, ts=None, drop=(), md5=None,
                 sign_md5=True):
    """Pusher Channels REST auth, computed independently of the code under test."""
    k, s = APPS[app]
    params = {"auth_key": key or k, "auth_timestamp": str(int(time.time()) if ts is None else ts),
              "auth_version": "1.0"}
    if sign_md5 and (method != "GET" or body):
        params["body_md5"] = md5 or hashlib.md5(body.encode()).hexdigest()
    joined = "&".join("%s=%s" % (name, params[name]) for name in sorted(params))
    sig = hmac.new((secret or s).encode(), ("%s\n%s\n%s" % (method, path, joined)).encode(),
                   hashlib.sha256).hexdigest()
    params["auth_signature"] = sig
    return "&".join("%s=%s" % (name, v) for name, v in params.items() if name not in drop)


_seq = [0]


def open_client(user, gw, app="demo"):
    _seq[0] += 1
    name = "h%d" % _seq[0]
    query = "" if app == "demo" else "?app=" + app
    driver.send(op="centrifuge", name=name, url=cluster.ws_url(gw, query), token=cluster.token(user, app=app),
                client_name="http-test", client_version="9.9")
    return name, driver.wait_event(name, "connected")["client"]


def still_connected(name):
    return not [e for e in driver.events(name)
                if e["event"] == "disconnected" or (e["event"] == "connecting" and e["code"] != 0)]


def terminate_path(user, app="demo"):
    return "/apps/%s/users/%s/terminate_connections" % (app, user)


class PusherRoutesTest(unittest.TestCase):
    def test_signed_terminate_closes_the_users_connections(self):
        a, _ = open_client("60", "gw-1")
        b, _ = open_client("60", "gw-2")
        c, cc = open_client("61", "gw-1")
        path = terminate_path("60")
        status, body = curl("POST", path, signed_query("POST", path, "{}"), "{}")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["closed"], 2)
        for n in (a, b):
            self.assertEqual(driver.wait_event(n, "disconnected")["code"], 3503)
        self.assertTrue(still_connected(c))

    def test_signed_get_connections(self):
        _, ca = open_client("62", "gw-1")
        _, cb = open_client("62", "gw-2")
        path = "/apps/demo/users/62/connections"
        status, body = curl("GET", path, signed_query("GET", path, ""))
        self.assertEqual(status, 200, body)
        self.assertNotIn("result", body)  # native answers carry no envelope
        conns = body["connections"]
        self.assertEqual(set(conns), {ca, cb})
        self.assertEqual(conns[ca]["app_name"], "http-test")
        self.assertEqual(conns[ca]["app_version"], "9.9")
        self.assertTrue(body["complete"])

    def test_pusher_server_sdk_terminates(self):
        a, _ = open_client("63", "gw-1")
        b, _ = open_client("63", "gw-2")
        key, secret = APPS["demo"]
        driver.send(op="pusher_terminate", name="sdk", app_id="demo", key=key, secret=secret,
                    port=cluster.http_port, user="63")
        res = driver.wait_event("sdk", "pusher_result")
        self.assertEqual(res["status"], 200, res)
        for n in (a, b):
            self.assertEqual(driver.wait_event(n, "disconnected")["code"], 3503)

    def test_every_bad_signature_is_refused_and_nothing_is_terminated(self):
        victim, cid = open_client("64", "gw-1")
        path = terminate_path("64")
        now = int(time.time())
        cases = [
            ("no credentials", 401, "", "{}"),
            ("wrong key", 401, signed_query("POST", path, "{}", key="not-a-key"), "{}"),
            ("other app's key and secret", 401, signed_query("POST", path, "{}", app="other"), "{}"),
            ("demo key, other app's secret", 401,
             signed_query("POST", path, "{}", secret=APPS["other"][1]), "{}"),
            ("stale timestamp", 401, signed_query("POST", path, "{}", ts=now - 700), "{}"),
            ("future timestamp", 401, signed_query("POST", path, "{}", ts=now + 700), "{}"),
            ("body differs from body_md5", 401, signed_query("POST", path, "{}"), '{"x": 1}'),
            ("md5 of the wrong body", 401, signed_query("POST", path, "{}", md5=EMPTY_MD5), "{}"),
            ("tampered path (signed for user 65)", 401, signed_query("POST", terminate_path("65"), "{}"), "{}"),
            ("missing auth_timestamp", 400, signed_query("POST", path, "{}", drop=("auth_timestamp",)), "{}"),
            ("missing body_md5", 400, signed_query("POST", path, "{}", drop=("body_md5",)), "{}"),
            ("missing auth_signature", 400, signed_query("POST", path, "{}", drop=("auth_signature",)), "{}"),
            ("missing auth_key", 400, signed_query("POST", path, "{}", drop=("auth_key",)), "{}"),
        ]
        for what, want, query, body in cases:
            status, resp = curl("POST", path, query, body)
            self.assertEqual(status, want, "%s: %s" % (what, resp))
            self.assertIsInstance(resp.get("error"), str, what)
        # A signature for app "other" presented on other's path works there, never on demo.
        opath = terminate_path("64", app="other")
        status, resp = curl("POST", opath, signed_query("POST", opath, "{}", app="other"), "{}")
        self.assertEqual((status, resp["closed"]), (200, 0))
        res = curl("GET", "/apps/demo/users/64/connections", "", headers=["X-API-Key: " + API_KEY])[1]
        self.assertEqual(list(res["connections"]), [cid])
        self.assertTrue(still_connected(victim))

    def test_empty_body_terminate_without_body_md5(self):
        # Sockudo: body_md5 "might be omitted" when the body is empty.
        a, _ = open_client("66", "gw-1")
        b, _ = open_client("67", "gw-1")
        path = terminate_path("66")
        now = int(time.time())
        for what, query in [("path signed for user 67", signed_query("POST", terminate_path("67"), "", sign_md5=False)),
                            ("wrong key", signed_query("POST", path, "", key="other-key", sign_md5=False)),
                            ("stale timestamp", signed_query("POST", path, "", ts=now - 700, sign_md5=False))]:
            status, resp = curl("POST", path, query, "")
            self.assertEqual(status, 401, "%s: %s" % (what, resp))
        self.assertTrue(still_connected(a))
        status, resp = curl("POST", path, signed_query("POST", path, "", sign_md5=False), "")
        self.assertEqual(status, 200, resp)
        self.assertIsInstance(resp, dict)
        self.assertEqual(resp["closed"], 1)
        self.assertEqual(driver.wait_event(a, "disconnected")["code"], 3503)
        self.assertTrue(still_connected(b))
        # Without body_md5 a non-empty body is refused.
        status, resp = curl("POST", path, signed_query("POST", path, "{}", sign_md5=False), "{}")
        self.assertEqual(status, 400, resp)

    def test_unknown_app_is_404(self):
        path = terminate_path("1", app="nope")
        status, resp = curl("POST", path, signed_query("POST", path, "{}"), "{}")
        self.assertEqual(status, 404, resp)
        self.assertIn("nope", resp["error"])

    def test_an_oversized_or_non_utf8_user_id_is_400_with_the_reason(self):
        for user, why in (("u" * 10000, "longer than"), ("%ff%fe", "UTF-8"), ("u" * 300, "longer than 256")):
            for method, path in (("GET", "/apps/demo/users/%s/connections" % user),
                                 ("POST", "/apps/demo/users/%s/terminate_connections" % user)):
                body = "{}" if method == "POST" else None
                status, resp = curl(method, path, signed_query(method, path, body or ""), body)
                self.assertEqual(status, 400, (path[:60], resp))
                self.assertIn(why, resp["error"])
        # The Centrifugo API form: Centrifugo's error shape (HTTP 200, error 107 "bad request").
        status, resp = curl("POST", "/api/user_connections", body=json.dumps({"user": "u" * 10000}),
                            headers=("Authorization: apikey test-api-key-1234",))
        self.assertEqual((status, resp["error"]["code"]), (200, 107), resp)
        self.assertIn("longer than 256", resp["error"]["message"])


class SendRoutesTest(unittest.TestCase):
    def test_send_to_user_and_to_one_client_over_http(self):
        a, ca = open_client("sendhttp", "gw-1")
        b, cb = open_client("sendhttp", "gw-2")
        key = ["X-API-Key: " + API_KEY]
        status, body = curl("POST", "/apps/demo/users/sendhttp/send", body='{"event": "note", "data": {"a": [1, 2]}}',
                            headers=key)
        self.assertEqual(status, 200, body)
        self.assertEqual((body["delivered"], body["delivered_per_gateway"], body["coverage"]["complete"]),
                         (2, {"gw-1": 1, "gw-2": 1}, True), body)
        for n in (a, b):
            ev = driver.wait_event(n, "publication")
            self.assertEqual((ev["channel"], ev["data"]), ("#sendhttp", {"a": [1, 2]}))
        status, body = curl("POST", "/apps/demo/connections/%s/send" % cb, body='{"event": "e", "data": "only b"}',
                            headers=key)
        self.assertEqual((status, body["found"], body["gateway"], body["delivered"]), (200, True, "gw-2", True), body)
        driver.wait_event(b, "publication", data="only b")
        # Bad input: a clear error, nothing sent.
        for what, payload, want in (("no event", '{"data": 1}', 400), ("not JSON", "{", 400),
                                    ("wrong type", '{"event": 5}', 400)):
            status, body = curl("POST", "/apps/demo/users/sendhttp/send", body=payload, headers=key)
            self.assertEqual(status, want, "%s: %s" % (what, body))
            self.assertIn("error", body, what)
        status, body = curl("POST", "/apps/demo/users/sendhttp/send", body='{"event": "e"}')
        self.assertEqual(status, 401, body)
        self.assertEqual(len([e for e in driver.events(a) if e["event"] == "publication"]), 1)


def open_pusher(user, gw):
    _seq[0] += 1
    name = "hp%d" % _seq[0]
    key, secret = APPS["demo"]
    driver.send(op="pusher", name=name, key=key, secret=secret, port=cluster.gateways[gw][1],
                user_data={"id": user})
    socket_id = driver.wait_event(name, "pusher_connected")["socket_id"]
    driver.wait_event(name, "pusher_subscription", channel="#server-to-user-" + user)
    return name, socket_id


def pusher_api(**kw):
    _seq[0] += 1
    name = "api%d" % _seq[0]
    key, secret = APPS["demo"]
    driver.send(op="pusher_api", name=name, app_id="demo", key=key, secret=secret, port=cluster.http_port, **kw)
    return driver.wait_event(name, "pusher_result")


def user_events(name):
    return [(e["event_name"], e["data"]) for e in driver.events(name) if e["event"] == "pusher_user_event"]


class PusherEventsTest(unittest.TestCase):
    """The pusher server SDK's sendToUser, trigger and triggerBatch through
    switchboard-http, signed as Pusher signs them, reaching pusher-js's
    pusher.user.bind on every device of the user and never another's."""

    def test_send_to_user_reaches_every_device_and_nobody_else(self):
        a, _ = open_pusher("pu-1", "gw-1")
        b, sock_b = open_pusher("pu-1", "gw-2")
        c, _ = open_client("pu-1", "gw-1")  # a centrifuge-js session of the same user
        other, _ = open_pusher("pu-2", "gw-1")
        res = pusher_api(call="sendToUser", user="pu-1", event_name="revoked", data={"why": "password changed"})
        self.assertEqual(res["status"], 200, res)
        body = json.loads(res["body"])
        self.assertEqual((body["delivered"], body["coverage"]["complete"]), (3, True), body)
        for n in (a, b):
            driver.wait_event(n, "pusher_user_event", event_name="revoked")
            self.assertEqual(user_events(n), [("revoked", {"why": "password changed"})])
        ev = driver.wait_event(c, "publication")
        self.assertEqual((ev["channel"], ev["data"]), ("#pu-1", {"why": "password changed"}))
        # POST /apps/demo/events with socket_id (the SDK's trigger refuses '#'
        # names itself; Pusher's REST API takes them): the sender's own
        # socket is left out.
        body = json.dumps({"name": "typing", "channels": ["#server-to-user-pu-1"], "data": "on",
                           "socket_id": sock_b})
        status, resp = curl("POST", "/apps/demo/events", signed_query("POST", "/apps/demo/events", body), body)
        self.assertEqual((status, resp["delivered"]), (200, 2), resp)
        driver.wait_event(a, "pusher_user_event", event_name="typing")
        # triggerBatch: two users at once.
        res = pusher_api(call="triggerBatch", batch=[
            {"channel": "#server-to-user-pu-1", "name": "batch", "data": "1"},
            {"channel": "#server-to-user-pu-2", "name": "batch", "data": "2"}])
        self.assertEqual(res["status"], 200, res)
        self.assertEqual([x["delivered"] for x in json.loads(res["body"])["batch"]], [3, 1])
        driver.wait_event(b, "pusher_user_event", event_name="batch")
        driver.wait_event(other, "pusher_user_event", event_name="batch")
        self.assertEqual(user_events(b), [("revoked", {"why": "password changed"}), ("batch", 1)])
        self.assertEqual(user_events(other), [("batch", 2)])

    def test_other_channels_and_bad_requests_get_pusher_errors_and_send_nothing(self):
        a, _ = open_pusher("pu-3", "gw-1")
        res = pusher_api(call="trigger", channels=["news"], event_name="e", data="x")
        self.assertEqual(res["status"], 400, res)
        self.assertIn("news", json.loads(res["body"])["error"])
        for what, body in (("a bad socket_id", {"name": "e", "channels": ["#server-to-user-pu-3"], "data": "x",
                                                "socket_id": "not-a-socket"}),
                           ("an empty user", {"name": "e", "channels": ["#server-to-user-"], "data": "x"}),
                           ("no name", {"channels": ["#server-to-user-pu-3"], "data": "x"}),
                           ("no channel", {"name": "e", "data": "x"}),
                           ("101 channels", {"name": "e", "channels": ["#server-to-user-pu-3"] * 101, "data": "x"}),
                           ("a batch of 11", {"batch": [{"channel": "#server-to-user-pu-3", "name": "e"}] * 11})):
            path = "/apps/demo/batch_events" if "batch" in body else "/apps/demo/events"
            text = json.dumps(body)
            status, resp = curl("POST", path, signed_query("POST", path, text), text)
            self.assertEqual(status, 400, "%s: %s" % (what, resp))
            self.assertIsInstance(resp.get("error"), str, what)
        # Signed with the wrong secret: 401.
        _seq[0] += 1
        driver.send(op="pusher_api", name="bad-secret", app_id="demo", key=APPS["demo"][0], secret="wrong",
                    port=cluster.http_port, call="sendToUser", user="pu-3", event_name="e", data="x")
        self.assertEqual(driver.wait_event("bad-secret", "pusher_result")["status"], 401)
        res = pusher_api(call="sendToUser", user="pu-3", event_name="after", data="ok")
        self.assertEqual(res["status"], 200, res)
        driver.wait_event(a, "pusher_user_event", event_name="after")
        self.assertEqual(user_events(a), [("after", "ok")])
        # Text that is a JSON string literal reaches pusher-js as Pusher's
        # does: with its quotes on the wire, so pusher-js parses it to the
        # string "123", not the number 123.
        res = pusher_api(call="sendToUser", user="pu-3", event_name="quoted", data='"123"')
        self.assertEqual(res["status"], 200, res)
        driver.wait_event(a, "pusher_user_event", event_name="quoted")
        self.assertEqual(user_events(a)[-1], ("quoted", "123"))


class CentrifugoPublishTest(unittest.TestCase):
    """cent.js publish and broadcast to personal channels."""

    def cent(self, call, params):
        _seq[0] += 1
        name = "cent%d" % _seq[0]
        driver.send(op="cent", name=name, url="http://127.0.0.1:%d/api" % cluster.http_port, api_key=API_KEY,
                    call=call, params=params)
        return driver.wait_event(name, "cent_result")

    def test_publish_and_broadcast_with_cent_js(self):
        a, _ = open_client("cp-1", "gw-1")
        b, _ = open_client("cp-1", "gw-2")
        c, _ = open_client("cp-2", "gw-1")
        res = self.cent("publish", {"channel": "#cp-1", "data": {"n": 1}})
        self.assertTrue(res["ok"], res)
        for n in (a, b):
            ev = driver.wait_event(n, "publication")
            self.assertEqual((ev["channel"], ev["data"]), ("#cp-1", {"n": 1}))
        res = self.cent("broadcast", {"channels": ["#cp-1", "#cp-2"], "data": {"n": 2}})
        self.assertTrue(res["ok"], res)
        for n, ch in ((a, "#cp-1"), (b, "#cp-1"), (c, "#cp-2")):
            driver.wait_event(n, "publication", channel=ch, data={"n": 2})
        # A broadcast takes each channel on its own, as Centrifugo's does: a
        # channel that is not a personal one, or an empty one, gets its own
        # error in its place (102, 107) and the others are published; cent.js
        # resolves with the replies.
        res = self.cent("broadcast", {"channels": ["news", "#cp-2", ""], "data": {"n": 3}})
        self.assertTrue(res["ok"], res)
        replies = res["value"]["responses"]
        self.assertEqual(len(replies), 3, res)
        self.assertEqual((replies[0]["error"]["code"], "result" in replies[0]), (102, False), res)
        self.assertEqual((replies[1]["result"]["delivered"], "error" in replies[1]), (1, False), res)
        self.assertTrue(replies[1]["result"]["coverage"]["complete"], res)
        self.assertEqual((replies[2]["error"]["code"], "result" in replies[2]), (107, False), res)
        driver.wait_event(c, "publication", channel="#cp-2", data={"n": 3})
        status, resp = curl("POST", "/api/broadcast", body='{"channels": ["nope", ":#x"], "data": {}}',
                            headers=["X-API-Key: " + API_KEY])
        self.assertEqual((status, [r["error"]["code"] for r in resp["result"]["responses"]]), (200, [102, 102]), resp)
        status, resp = curl("POST", "/api/broadcast", body='{"channels": [], "data": {}}',
                            headers=["X-API-Key: " + API_KEY])
        self.assertEqual((status, resp["error"]["code"]), (200, 107), resp)
        # Any other channel: Centrifugo's 102 unknown channel (cent.js throws;
        # the code, read with curl).
        res = self.cent("publish", {"channel": "news", "data": {}})
        self.assertFalse(res["ok"], res)
        status, resp = curl("POST", "/api/publish", body='{"channel": "news", "data": {}}',
                            headers=["X-API-Key: " + API_KEY])
        self.assertEqual((status, resp["error"]["code"]), (200, 102), resp)
        status, resp = curl("POST", "/api/publish", body='{"channel": "#cp-2", "b64data": "eA=="}',
                            headers=["X-API-Key: " + API_KEY])
        self.assertEqual((status, resp["error"]["code"]), (200, 107), resp)
        self.assertEqual([e["data"] for e in driver.events(c) if e["event"] == "publication"], [{"n": 2}, {"n": 3}])


class CentrifugoRoutesTest(unittest.TestCase):
    def test_user_connections_with_both_header_forms(self):
        _, ca = open_client("70", "gw-1")
        _, cb = open_client("70", "gw-2")
        open_client("70", "gw-1", app="other")
        for header in ("Authorization: apikey " + API_KEY, "X-API-Key: " + API_KEY):
            status, body = curl("POST", "/api/user_connections", body='{"user": "70"}', headers=[header])
            self.assertEqual(status, 200, body)
            conns = body["result"]["connections"]  # Centrifugo's shape
            self.assertEqual(set(conns), {ca, cb})  # the default app only
            info = conns[ca]
            for field in ("app_name", "app_version", "transport", "protocol"):
                self.assertIn(field, info)
            self.assertEqual((info["transport"], info["protocol"]), ("websocket", "json"))

    def test_disconnect_with_whitelist_and_code(self):
        a, ca = open_client("71", "gw-1")
        b, cb = open_client("71", "gw-2")
        c, cc = open_client("71", "gw-2")
        body = json.dumps({"user": "71", "whitelist": [cb], "disconnect": {"code": 4501, "reason": "suspended"}})
        status, resp = curl("POST", "/api/disconnect", body=body, headers=["X-API-Key: " + API_KEY])
        self.assertEqual(status, 200, resp)
        self.assertEqual(resp["result"]["closed"], 2)
        for n in (a, c):
            ev = driver.wait_event(n, "disconnected")
            self.assertEqual((ev["code"], ev["reason"]), (4501, "suspended"))
        self.assertTrue(still_connected(b))
        # One client of the user.
        status, resp = curl("POST", "/api/disconnect", body=json.dumps({"user": "71", "client": cb}),
                            headers=["X-API-Key: " + API_KEY])
        self.assertEqual((status, resp["result"]["closed"]), (200, 1))
        self.assertEqual(driver.wait_event(b, "disconnected")["code"], 3503)

    def test_errors_in_centrifugo_shape_and_status(self):
        key = ["X-API-Key: " + API_KEY]
        cases = [
            ("no key", 401, 101, "/api/user_connections", '{"user": "1"}', []),
            ("wrong key", 401, 101, "/api/user_connections", '{"user": "1"}', ["X-API-Key: wrong-key-123"]),
            ("wrong scheme", 401, 101, "/api/user_connections", '{"user": "1"}', ["Authorization: Bearer " + API_KEY]),
            ("not JSON", 400, 107, "/api/user_connections", '{"user": ', key),
            ("no such method", 404, 104, "/api/nothing_here", "{}", key),
            # Errors of the call itself: 200 with the Centrifugo code, as Centrifugo does.
            ("empty user", 200, 107, "/api/user_connections", '{"user": ""}', key),
            ("wrong type", 200, 107, "/api/disconnect", '{"user": "1", "whitelist": 5}', key),
            ("bad close code", 200, 107, "/api/disconnect", '{"user": "1", "disconnect": {"code": 7}}', key),
            ("close code 1006", 200, 107, "/api/disconnect", '{"user": "1", "disconnect": {"code": 1006}}', key),
            ("method form, unknown method", 200, 104, "/api", '{"method": "history", "params": {}}', key),
            ("method form, not JSON", 400, 107, "/api", '{"method": ', key),
            ("method form, no key", 401, 101, "/api", '{"method": "info", "params": {}}', []),
        ]
        for what, want, code, path, body, headers in cases:
            status, resp = curl("POST", path, body=body, headers=headers)
            self.assertEqual(status, want, "%s: %s" % (what, resp))
            self.assertEqual(resp["error"]["code"], code, "%s: %s" % (what, resp))
            self.assertIsInstance(resp["error"]["message"], str, what)
            self.assertNotIn("result", resp, what)

    def test_method_and_params_form_from_the_centrifugo_docs(self):
        _, ca = open_client("72", "gw-1")
        _, cb = open_client("72", "gw-2")
        # The Centrifugo seed's own curl.
        status, body = curl("POST", "/api", body='{"method": "user_connections", "params": {"user": "72"}}',
                            headers=["Authorization: apikey " + API_KEY])
        self.assertEqual(status, 200, body)
        self.assertEqual(set(body["result"]["connections"]), {ca, cb})
        self.assertTrue(body["result"]["complete"])

    def test_info_lists_the_live_gateways_as_nodes(self):
        open_client("73", "gw-2")

        def nodes_once_counted():
            # Session counts reach control with the gateways' deltas, a moment later.
            status, body = curl("POST", "/api/info", body="{}", headers=["X-API-Key: " + API_KEY])
            self.assertEqual(status, 200, body)
            nodes = {n["uid"]: n for n in body["result"]["nodes"]}
            return nodes if nodes.get("gw-2", {}).get("num_clients", 0) >= 1 else None
        nodes = wait_until(nodes_once_counted, 10, "gw-2 counted")
        self.assertEqual(set(nodes), {"gw-1", "gw-2"})
        self.assertEqual(nodes["gw-1"]["name"], "gw-1")
        self.assertGreaterEqual(nodes["gw-2"]["num_clients"], 1)
        for n in nodes.values():
            self.assertIn("version", n)
            self.assertIn("uptime", n)

    def test_batch(self):
        _, c = open_client("74", "gw-1")
        body = json.dumps({"commands": [{"user_connections": {"user": "74"}}, {"history": {"channel": "x"}},
                                        {"info": {}}]})
        status, resp = curl("POST", "/api/batch", body=body, headers=["X-API-Key: " + API_KEY])
        self.assertEqual(status, 200, resp)
        replies = resp["replies"]
        self.assertEqual(len(replies), 3)
        self.assertEqual(list(replies[0]["user_connections"]["connections"]), [c])
        self.assertEqual(replies[1]["error"]["code"], 104)
        self.assertEqual(len(replies[2]["info"]["nodes"]), 2)

    def cent(self, call, params):
        _seq[0] += 1
        name = "cent%d" % _seq[0]
        driver.send(op="cent", name=name, url="http://127.0.0.1:%d/api" % cluster.http_port, api_key=API_KEY,
                    call=call, params=params)
        return driver.wait_event(name, "cent_result")

    def test_cent_js_calls_and_pipeline(self):
        a, ca = open_client("75", "gw-1")
        b, cb = open_client("75", "gw-2")
        res = self.cent("getInfo", {})
        self.assertTrue(res["ok"], res)
        self.assertEqual({n["uid"] for n in res["value"]["nodes"]}, {"gw-1", "gw-2"})
        # cent.js's pipeline: newline-separated {method, params}, one result per line.
        res = self.cent("pipeline", [{"method": "user_connections", "params": {"user": "75"}},
                                     {"method": "info", "params": {}}])
        self.assertTrue(res["ok"], res)
        self.assertEqual(set(res["value"][0]["connections"]), {ca, cb})
        self.assertEqual(len(res["value"][1]["nodes"]), 2)
        res = self.cent("disconnect", {"user": "75", "client": cb})
        self.assertTrue(res["ok"], res)
        self.assertEqual(driver.wait_event(b, "disconnected")["code"], 3503)
        self.assertTrue(still_connected(a))
        # An error reply makes cent.js throw.
        res = self.cent("disconnect", {"user": ""})
        self.assertFalse(res["ok"], res)


class BusDownTest(unittest.TestCase):
    def test_nats_down_is_503_on_native_routes_and_error_100_on_centrifugo_routes(self):
        c = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=1)
        try:
            c.stop_nats()
            key = ["X-API-Key: " + API_KEY]

            def is_503():
                return curl("GET", "/apps/demo/users/1/connections", headers=key, port=c.http_port)[0] == 503
            wait_until(is_503, 10, "503 while NATS is down")
            status, resp = curl("GET", "/apps/demo/users/1/connections", headers=key, port=c.http_port)
            self.assertEqual(status, 503)
            self.assertIn("error", resp)
            self.assertEqual((resp["code"], resp["status"]), (14, "UNAVAILABLE"), resp)
            # Centrifugo answers a failed call with 200 and an error object.
            status, resp = curl("POST", "/api/user_connections", body='{"user": "1"}', headers=key, port=c.http_port)
            self.assertEqual((status, resp["error"]["code"]), (200, 100), resp)
        finally:
            c.close()



class ControlRestartTest(unittest.TestCase):
    def test_a_call_just_after_control_restarts_is_answered(self):
        """While control is down, calls fail (503) and switchboard-http's
        channel waits out a growing reconnect backoff; a call made the moment
        the replica is back must be answered, not failed for that backoff."""
        c = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=1)
        try:
            key = ["X-API-Key: " + API_KEY]
            path = "/apps/demo/users/1/connections"
            wait_until(lambda: curl("GET", path, headers=key, port=c.http_port)[0] == 200, 10, "200 at first")

            def while_down():
                # A short deadline each (grpc-gateway's Grpc-Timeout): the
                # proxy waits for control at most that long.
                for _ in range(3):
                    status, resp = curl("GET", path, headers=key + ["Grpc-Timeout: 300m"], port=c.http_port)
                    self.assertEqual(status, 503, resp)
            c.restart_control(while_down=while_down)
            t0 = time.monotonic()
            status, resp = curl("GET", path, headers=key, port=c.http_port)
            self.assertEqual(status, 200, resp)
            self.assertIn("complete", resp)  # an answer (incomplete until gw-1 re-attaches)
            self.assertLess(time.monotonic() - t0, 5)
        finally:
            c.close()

if __name__ == "__main__":
    ARGS, argv = parse_args()
    unittest.main(argv=argv, verbosity=2)
