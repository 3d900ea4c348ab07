"""Logs and the audit trail (issue "See the fleet", points 2 and 3), on a
cluster started with --log_format=json: every line every process writes is
one JSON object (ts in UTC, level, component, msg), libwebsockets' own lines
included; each TerminateUser and Disconnect (gRPC, the HTTP API, Centrifugo's
API, refused ones too) is one audit record on control, checked field by
field; its request ID comes back to the caller and is on each gateway's line
about its part."""
import json
import os
import re
import sys
import unittest
import urllib.error
import urllib.request

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Cluster, Driver, control_api, load_stubs, parse_args, wait_until  # noqa: E402

ARGS = None
API_KEY = (("authorization", "apikey test-api-key-1234"),)
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def setUpModule():
    global cluster, driver, pb, stub
    load_stubs(ARGS.source_dir)
    cluster = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=2, http=True, log_format="json")
    driver = Driver(os.path.join(ARGS.source_dir, "tests/integration/node"))
    pb, stub = control_api(cluster, 2, API_KEY)


def tearDownModule():
    driver.stop()
    cluster.close()


def log_objects(proc):
    """Every line the process wrote, parsed; the READY line on stdout is its
    start handshake, not a log line."""
    out = []
    with proc.cond:
        lines = list(proc.lines)
    for line in lines:
        if line.startswith("READY "):
            continue
        obj = json.loads(line)  # raises on a line that is not JSON
        assert isinstance(obj, dict), line
        out.append(obj)
    return out


def audits():
    return [o["audit"] for o in log_objects(cluster.control) if "audit" in o]


def audit_for(request_id):
    return wait_until(lambda: next((a for a in audits() if a["request_id"] == request_id), None), 10,
                      "the audit record of %s" % request_id)


_seq = [0]


def open_client(user, gw):
    _seq[0] += 1
    name = "l%d" % _seq[0]
    driver.send(op="centrifuge", name=name, url=cluster.ws_url(gw), token=cluster.token(user))
    return name, driver.wait_event(name, "connected")["client"]


class LogsTest(unittest.TestCase):
    def assert_lines_are_objects(self, proc, component):
        objs = log_objects(proc)
        self.assertGreater(len(objs), 0, proc.name)
        for o in objs:
            self.assertTrue(TS.match(o.get("ts", "")), o)
            self.assertIn(o.get("level"), ("trace", "debug", "info", "warning", "warn", "error", "critical"), o)
            self.assertTrue(o.get("component", "").startswith(component), o)
            self.assertIsInstance(o.get("msg"), str, o)
        return objs

    def test_terminate_is_audited_and_traced_through_every_gateway(self):
        keep, keep_id = open_client("audit-1", "gw-1")
        go1, _ = open_client("audit-1", "gw-1")
        go2, _ = open_client("audit-1", "gw-2")
        call = stub.TerminateUser.with_call(
            pb.TerminateUserRequest(app_id="demo", user_id="audit-1", except_client_ids=[keep_id], code=4501,
                                    reason="logged out"),
            metadata=API_KEY + (("x-request-id", "caller-trace-77"),), timeout=5)
        resp, rpc = call
        self.assertEqual(resp.closed, 2)
        rid = dict(rpc.initial_metadata()).get("x-request-id")
        self.assertTrue(rid)
        a = audit_for(rid)
        self.assertEqual(a["action"], "TerminateUser")
        self.assertEqual(a["caller_request_id"], "caller-trace-77")
        self.assertEqual(a["api_key"], "backend-tests")
        self.assertNotIn("test-api-key-1234", json.dumps(a))
        self.assertRegex(a["address"], r"^ipv4:127\.0\.0\.1:\d+$")
        self.assertEqual(a["via"], "grpc TerminateUser")
        self.assertEqual((a["app"], a["user"], a["except"], a["code"], a["reason"]),
                         ("demo", "audit-1", [keep_id], 4501, "logged out"))
        o = a["outcome"]
        self.assertEqual((o["status"], o["complete"], o["closed"]), ("OK", True, 2))
        self.assertEqual({k: v for k, v in o["closed_per_gateway"].items() if v}, {"gw-1": 1, "gw-2": 1})
        self.assertEqual(o["missing"], {})
        # Exactly once.
        self.assertEqual(len([x for x in audits() if x["request_id"] == rid]), 1)
        # Each gateway's line about its part carries the same ID.
        for gw in ("gw-1", "gw-2"):
            wait_until(lambda: any(o.get("request_id") == rid and "terminate from control: closed 1" in o["msg"]
                                   for o in log_objects(cluster.gateways[gw][0])), 10, "%s's line for %s" % (gw, rid))
        driver.wait_event(go1, "disconnected")
        driver.wait_event(go2, "disconnected")
        driver.send(op="close", name=keep)

    def test_disconnect_through_the_http_api_names_the_route_and_the_address(self):
        name, client_id = open_client("audit-2", "gw-2")
        req = urllib.request.Request(
            "http://127.0.0.1:%d/apps/demo/connections/%s/disconnect" % (cluster.http_port, client_id),
            data=b"{}", method="POST",
            headers={"Authorization": "apikey test-api-key-1234", "Content-Type": "application/json",
                     "X-Request-Id": "http-caller-5"})
        with urllib.request.urlopen(req, timeout=10) as r:
            self.assertEqual(r.status, 200)
            rid = r.headers.get("X-Request-Id")
        self.assertTrue(rid)
        a = audit_for(rid)
        self.assertEqual(a["action"], "Disconnect")
        self.assertEqual(a["via"], "http POST /apps/demo/connections/%s/disconnect" % client_id)
        self.assertEqual(a["address"], "127.0.0.1")
        self.assertEqual(a["caller_request_id"], "http-caller-5")
        self.assertEqual((a["app"], a["client_id"], a["api_key"]), ("demo", client_id, "backend-tests"))
        self.assertEqual((a["outcome"]["status"], a["outcome"]["closed"]), ("OK", 1))
        driver.wait_event(name, "disconnected")

    def test_a_refused_terminate_is_audited_with_its_status(self):
        with self.assertRaises(grpc.RpcError) as e:
            stub.TerminateUser.with_call(pb.TerminateUserRequest(app_id="demo", user_id="audit-3"),
                                         metadata=(("authorization", "apikey wrong-key-123"),), timeout=5)
        rid = dict(e.exception.initial_metadata() or ()).get("x-request-id")
        self.assertTrue(rid)
        a = audit_for(rid)
        self.assertEqual((a["action"], a["api_key"], a["user"]), ("TerminateUser", "", "audit-3"))
        self.assertEqual(a["outcome"]["status"], "UNAUTHENTICATED")
        self.assertNotIn("wrong-key-123", json.dumps(a))

    def test_every_line_of_every_process_is_a_json_object(self):
        # libwebsockets' own lines go through the same logger: a gateway with
        # lws's debug logging on writes hundreds of them.
        cluster.add_gateway("gw-lws", env={"SB_LWS_DEBUG": "1"})
        name, _ = open_client("audit-4", "gw-lws")
        driver.send(op="close", name=name)
        gw = cluster.gateways["gw-lws"][0]
        wait_until(lambda: sum(o["component"] == "gateway.lws" for o in log_objects(gw)) > 20, 10,
                   "lws's own lines, as JSON")
        for gw_id in ("gw-1", "gw-2", "gw-lws"):
            self.assert_lines_are_objects(cluster.gateways[gw_id][0], "gateway")
        self.assert_lines_are_objects(cluster.control, "control")
        self.assert_lines_are_objects(cluster.http, "http")


if __name__ == "__main__":
    ARGS, argv = parse_args()
    unittest.main(argv=argv, verbosity=2)
