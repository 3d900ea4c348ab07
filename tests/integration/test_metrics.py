"""Prometheus metrics on the operator listeners (issue "See the fleet"):
every gateway's operator port and every control replica's health port serve
GET /metrics; `promtool check metrics` passes on each; the figures move as
real clients (centrifuge-js) connect and are refused, as API calls gather,
as a gateway is frozen and named missing; nothing a client chooses (user or
client IDs, client names) becomes a label; the clients' port serves none."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.request

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Cluster, Driver, control_api, load_stubs, parse_args, wait_until  # noqa: E402

APP_SECRET = "demo-secret-for-tests"  # the demo app of the test config (cluster.py)

ARGS = None
API_KEY = (("authorization", "apikey test-api-key-1234"),)
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def setUpModule():
    global cluster, driver, pb, stub
    load_stubs(ARGS.source_dir)
    cluster = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=2, http=True)
    driver = Driver(os.path.join(ARGS.source_dir, "tests/integration/node"))
    pb, stub = control_api(cluster, 2, API_KEY)


def tearDownModule():
    driver.stop()
    cluster.close()


def get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def scrape(port):
    status, ctype, text = get(port, "/metrics")
    assert status == 200, (status, text)
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    return text


def samples(text):
    """{(name, frozenset(labels)): value} of an exposition text."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "unparseable sample line: %r" % line
        labels = frozenset(LABEL.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def value(s, name, **labels):
    """The sum over series of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in s.items() if n == name and want <= set(ls))


def gw_metrics(gw):
    return samples(scrape(cluster.operator_ports[gw]))


def control_metrics():
    return samples(scrape(cluster.control_health_ports[0]))


_seq = [0]


def open_client(user, gw, **token_kw):
    _seq[0] += 1
    name = "m%d" % _seq[0]
    driver.send(op="centrifuge", name=name, url=cluster.ws_url(gw), token=cluster.token(user, **token_kw),
                client_name="secret-client-name-%d" % _seq[0], client_version="9.9.9")
    return name, driver.wait_event(name, "connected")["client"]


class MetricsTest(unittest.TestCase):
    def test_every_endpoint_passes_promtool(self):
        ports = {"gw-1": cluster.operator_ports["gw-1"], "gw-2": cluster.operator_ports["gw-2"],
                 "control": cluster.control_health_ports[0], "http": cluster.http_operator_port}
        for who, port in ports.items():
            text = scrape(port)
            out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                                 timeout=30)
            self.assertEqual(out.returncode, 0, "%s: promtool check metrics: %s%s" % (who, out.stdout, out.stderr))
            self.assertIn("# TYPE", text)

    def test_the_clients_port_serves_no_metrics(self):
        status, _, _ = get(cluster.gateways["gw-1"][1], "/metrics")
        self.assertEqual(status, 404)
        # Nor the server API's port (an Ingress may publish it).
        status, _, _ = get(cluster.http_port, "/metrics")
        self.assertEqual(status, 404)

    def test_the_proxy_counts_requests_by_route_and_its_calls_to_control(self):
        before = samples(scrape(cluster.http_operator_port))
        req = urllib.request.Request("http://127.0.0.1:%d/apps/demo/users/nobody-here/connections" % cluster.http_port,
                                     headers={"Authorization": "apikey test-api-key-1234"})
        with urllib.request.urlopen(req, timeout=10) as r:
            self.assertEqual(r.status, 200)
        status, _, _ = get(cluster.http_port, "/apps/demo/users/nobody-here/connections")  # no key
        self.assertEqual(status, 401)
        get(cluster.http_port, "/no/such/route/for-a-secret-path")
        after = samples(scrape(cluster.http_operator_port))

        def delta(name, **labels):
            return value(after, name, **labels) - value(before, name, **labels)
        self.assertEqual(delta("switchboard_http_requests_total", route="user_connections", code="200"), 1)
        self.assertEqual(delta("switchboard_http_requests_total", route="user_connections", code="401"), 1)
        self.assertEqual(delta("switchboard_http_requests_total", route="other", code="404"), 1)
        self.assertEqual(delta("switchboard_http_request_duration_seconds_count", route="user_connections"), 2)
        self.assertEqual(delta("grpc_client_handled_total", grpc_method="UserConnections", grpc_code="OK"), 1)
        self.assertEqual(delta("grpc_client_handled_total", grpc_method="UserConnections",
                               grpc_code="Unauthenticated"), 1)
        self.assertEqual(value(after, "switchboard_http_build_info"), 1)
        self.assertNotIn("for-a-secret-path", scrape(cluster.http_operator_port))

    def test_sessions_and_connects_move_with_real_clients(self):
        before = {gw: gw_metrics(gw) for gw in ("gw-1", "gw-2")}
        names = [open_client("metrics-user-1", "gw-1")[0], open_client("metrics-user-1", "gw-1")[0],
                 open_client("metrics-user-2", "gw-2")[0]]

        def moved():
            now = {gw: gw_metrics(gw) for gw in ("gw-1", "gw-2")}
            return now if all(
                value(now[gw], "switchboard_gateway_connects_total") -
                value(before[gw], "switchboard_gateway_connects_total") == n for gw, n in (("gw-1", 2), ("gw-2", 1))
            ) else None
        now = wait_until(moved, 10, "connects counted")
        s1 = value(now["gw-1"], "switchboard_gateway_sessions", app="demo", transport="websocket")
        self.assertGreaterEqual(s1, 2)
        self.assertEqual(value(now["gw-1"], "switchboard_gateway_sessions") -
                         value(before["gw-1"], "switchboard_gateway_sessions"), 2)
        self.assertGreater(value(now["gw-1"], "switchboard_gateway_messages_received_total"),
                           value(before["gw-1"], "switchboard_gateway_messages_received_total"))
        self.assertGreater(value(now["gw-1"], "switchboard_gateway_sent_bytes_total"),
                           value(before["gw-1"], "switchboard_gateway_sent_bytes_total"))
        self.assertEqual(value(now["gw-1"], "switchboard_gateway_control_replicas_attached"), 1)
        self.assertEqual(value(now["gw-1"], "switchboard_gateway_nats_connected"), 1)
        wait_until(lambda: value(gw_metrics("gw-1"), "switchboard_gateway_commands_on_loop") == 1, 10,
                   "gw-1's loop hearing control on the commands subject")
        self.assertEqual(value(now["gw-1"], "switchboard_gateway_loop_responsive"), 1)
        self.assertGreater(value(now["gw-1"], "switchboard_gateway_loop_lag_seconds_count"), 0)
        # A client that leaves: its close handshake is the client's.
        driver.send(op="close", name=names[2])
        wait_until(lambda: value(gw_metrics("gw-2"), "switchboard_gateway_sessions") ==
                   value(before["gw-2"], "switchboard_gateway_sessions"), 10, "the session gone from gw-2")
        # Nothing a client chose is a label or a value anywhere.
        for port in (cluster.operator_ports["gw-1"], cluster.operator_ports["gw-2"], cluster.control_health_ports[0]):
            text = scrape(port)
            for secret in ("metrics-user-1", "secret-client-name", "9.9.9"):
                self.assertNotIn(secret, text)
        for n in names[:2]:
            driver.send(op="close", name=n)

    def test_a_bad_token_is_counted_as_refused(self):
        before = value(gw_metrics("gw-2"), "switchboard_gateway_connects_refused_total", reason="bad_token")
        _seq[0] += 1
        name = "bad%d" % _seq[0]
        driver.send(op="centrifuge", name=name, url=cluster.ws_url("gw-2"), token="not-a-token")
        wait_until(lambda: value(gw_metrics("gw-2"), "switchboard_gateway_connects_refused_total",
                                 reason="bad_token") == before + 1, 10, "the bad token counted")
        driver.send(op="close", name=name)

    def test_an_expired_token_is_counted_apart_from_a_bad_one(self):
        import jwt  # python3-jwt
        s0 = gw_metrics("gw-2")
        token = jwt.encode({"sub": "expired-1", "exp": int(time.time()) - 5}, APP_SECRET, algorithm="HS256")
        body = json.dumps({"token": token}).encode()
        req = urllib.request.Request("http://127.0.0.1:%d/connection/uni_http_stream" % cluster.gateways["gw-2"][1],
                                     data=body, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            self.assertIn(b"3005", r.read())
        wait_until(lambda: value(gw_metrics("gw-2"), "switchboard_gateway_connects_refused_total",
                                 reason="expired_token") ==
                   value(s0, "switchboard_gateway_connects_refused_total", reason="expired_token") + 1, 10,
                   "the expired token counted")
        self.assertEqual(value(gw_metrics("gw-2"), "switchboard_gateway_connects_refused_total", reason="bad_token"),
                         value(s0, "switchboard_gateway_connects_refused_total", reason="bad_token"))

    def test_calls_gathers_and_a_frozen_gateway_named_missing(self):
        c0 = control_metrics()
        g0 = gw_metrics("gw-1")
        keep, keep_id = open_client("metrics-user-3", "gw-1")
        go, _ = open_client("metrics-user-3", "gw-2")
        resp = stub.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id="metrics-user-3"),
                                    metadata=API_KEY, timeout=5)
        self.assertTrue(resp.result.complete)
        resp = stub.TerminateUser(pb.TerminateUserRequest(app_id="demo", user_id="metrics-user-3",
                                                          except_client_ids=[keep_id], code=4501, reason="bye"),
                                  metadata=API_KEY, timeout=5)
        self.assertTrue(resp.coverage.complete)
        driver.wait_event(go, "disconnected")
        with self.assertRaises(grpc.RpcError):
            stub.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id="x"),
                                 metadata=(("authorization", "apikey wrong"),), timeout=5)
        c1 = control_metrics()

        def delta(name, **labels):
            return value(c1, name, **labels) - value(c0, name, **labels)
        self.assertEqual(delta("switchboard_control_calls_total", method="UserConnections", code="OK"), 1)
        self.assertEqual(delta("switchboard_control_calls_total", method="TerminateUser", code="OK"), 1)
        self.assertEqual(delta("switchboard_control_calls_total", method="UserConnections", code="UNAUTHENTICATED"), 1)
        self.assertEqual(delta("switchboard_control_gathers_total", op="user_query", result="complete"), 1)
        self.assertEqual(delta("switchboard_control_gathers_total", op="terminate", result="complete"), 1)
        self.assertEqual(delta("switchboard_control_gateways_asked_total", op="user_query"), 2)
        self.assertEqual(delta("switchboard_control_gateways_answered_total", op="user_query"), 2)
        self.assertEqual(delta("switchboard_control_call_duration_seconds_count", method="UserConnections"), 2)
        self.assertEqual(value(c1, "switchboard_control_fleet_gateways", state="serving"), 2)
        self.assertEqual(value(c1, "switchboard_control_calls_in_flight"), 0)
        # The gateways heard them, and one closed a session with the code asked for.
        g2 = gw_metrics("gw-2")
        self.assertGreaterEqual(value(g2, "switchboard_gateway_closes_total", code="4501"), 1)
        g1 = gw_metrics("gw-1")
        self.assertEqual(value(g1, "switchboard_gateway_bus_requests_total", op="user_query") -
                         value(g0, "switchboard_gateway_bus_requests_total", op="user_query"), 1)
        self.assertEqual(value(g1, "switchboard_gateway_bus_requests_total", op="terminate") -
                         value(g0, "switchboard_gateway_bus_requests_total", op="terminate"), 1)

        # Frozen: the call names it missing (timeout), and the metrics say so.
        gw2 = cluster.gateways["gw-2"][0]
        gw2.signal(signal.SIGSTOP)
        try:
            resp = stub.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id="metrics-user-3"),
                                        metadata=API_KEY, timeout=5)
            self.assertFalse(resp.result.complete)
            c2 = control_metrics()
        finally:
            gw2.signal(signal.SIGCONT)
        self.assertEqual(value(c2, "switchboard_control_incomplete_answers_total", op="user_query",
                               reason="gateways_missing") -
                         value(c1, "switchboard_control_incomplete_answers_total", op="user_query",
                               reason="gateways_missing"), 1)
        # Missing for the reason the answer gives: a lease (1.5 s here) that
        # ran out during the call, or no answer by the deadline.
        why = "left_fleet" if "left the fleet" in resp.result.incomplete_reason else "timeout"
        self.assertEqual(value(c2, "switchboard_control_gateways_missing_total", op="user_query") -
                         value(c1, "switchboard_control_gateways_missing_total", op="user_query"), 1)
        self.assertEqual(value(c2, "switchboard_control_gateways_missing_total", op="user_query", reason=why) -
                         value(c1, "switchboard_control_gateways_missing_total", op="user_query", reason=why), 1)
        if why == "left_fleet":
            self.assertGreater(value(c2, "switchboard_control_lease_expiries_total"),
                               value(c1, "switchboard_control_lease_expiries_total"))
        self.assertEqual(value(c2, "switchboard_control_gathers_total", op="user_query", result="incomplete") -
                         value(c1, "switchboard_control_gathers_total", op="user_query", result="incomplete"), 1)
        driver.send(op="close", name=keep)


if __name__ == "__main__":
    ARGS, argv = parse_args()
    unittest.main(argv=argv, verbosity=2)
