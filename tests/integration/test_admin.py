"""The admin page (switchboard-http /admin on its operator listener) in
Debian's headless Chromium, driven by puppeteer-core as an operator would:
a wrong API key shows an error; the right one shows the fleet; user 42 with
connections on two gateways shows every connection and the coverage; one
device is disconnected and the rest but one kept are terminated with a code
and a reason, each after a confirmation, the list updating after each; the
real centrifuge-js clients get their close codes; a `meta` value holding
markup is shown as text and nothing runs; each action's audit record is
checked field by field. Screenshots: BUILD/test-artifacts/admin-*.png."""
import json
import os
import subprocess
import sys
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Cluster, Driver, control_api, load_stubs, parse_args, wait_until  # noqa: E402

ARGS = None
API_KEY = (("authorization", "apikey test-api-key-1234"),)
XSS = "<script>window.__pwned=true</script><img src=x onerror=\"window.__pwned=true\">"


def setUpModule():
    global cluster, driver, pb, stub
    load_stubs(ARGS.source_dir)
    cluster = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=2, http=True, log_format="json")
    driver = Driver(os.path.join(ARGS.source_dir, "tests/integration/node"))
    pb, stub = control_api(cluster, 2, API_KEY)


def tearDownModule():
    driver.stop()
    cluster.close()


def open_client(name, user, gw, **token_kw):
    driver.send(op="centrifuge", name=name, url=cluster.ws_url(gw), token=cluster.token(user, **token_kw),
                client_name="admin-test", client_version="1.0")
    return driver.wait_event(name, "connected")["client"]


def audits():
    out = []
    with cluster.control.cond:
        lines = list(cluster.control.lines)
    for line in lines:
        if line.startswith("READY "):
            continue
        o = json.loads(line)
        if "audit" in o:
            out.append(o["audit"])
    return out


class AdminPageTest(unittest.TestCase):
    def test_an_operator_finds_user_42_disconnects_a_device_and_terminates_the_rest(self):
        phone = open_client("phone", "42", "gw-1", meta={"device": "phone", "note": XSS})
        laptop = open_client("laptop", "42", "gw-1", meta={"device": "laptop"})
        tablet = open_client("tablet", "42", "gw-2", meta={"device": "tablet"})
        other = open_client("other", "43", "gw-2")
        out_dir = os.path.abspath(os.path.join(ARGS.build_dir, "test-artifacts"))
        os.makedirs(out_dir, exist_ok=True)
        for f in ("admin-fleet.png", "admin-user.png"):
            if os.path.exists(os.path.join(out_dir, f)):
                os.remove(os.path.join(out_dir, f))
        url = "http://127.0.0.1:%d/admin" % cluster.http_operator_port
        node_dir = os.path.abspath(os.path.join(ARGS.source_dir, "tests/integration/node"))
        run = subprocess.run(["node", os.path.join(node_dir, "admin_page.js"), url,
                              "test-api-key-1234", "demo", "42", laptop, phone, out_dir],
                             cwd=node_dir, capture_output=True,
                             text=True, timeout=120)
        events = {}
        for line in run.stdout.splitlines():
            ev = json.loads(line)
            events.setdefault(ev["event"], ev)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertNotIn("pageerror", events, events.get("pageerror"))

        loaded = events["loaded"]
        self.assertEqual(loaded["status"], 200)
        self.assertIn("script-src 'sha256-", loaded["csp"])
        self.assertNotIn("unsafe-inline'; connect", loaded["csp"].split("script-src")[1].split(";")[0])
        # A wrong key: an error, nothing shown.
        self.assertEqual(events["wrong_key"]["error"], "Wrong API key.")
        self.assertFalse(events["wrong_key"]["signed_in"])
        # The fleet: both gateways, serving, with their sessions.
        fleet = {r[0]: r for r in events["fleet"]["rows"]}
        self.assertEqual(set(fleet), {"gw-1", "gw-2"})
        self.assertEqual(fleet["gw-1"][4], "serving")
        self.assertTrue(events["fleet"]["key_field_empty"])
        # User 42: three connections on two gateways, complete.
        user = events["user"]
        rows = {r["client"]: r for r in user["rows"]}
        self.assertEqual(set(rows), {phone, laptop, tablet})
        self.assertEqual(rows[tablet]["cells"][7], "gw-2")
        self.assertEqual(rows[phone]["cells"][7], "gw-1")
        self.assertEqual((rows[phone]["cells"][2], rows[phone]["cells"][4]), ("admin-test", "websocket"))
        self.assertIn("Complete", user["coverage"])
        # The meta's markup is text: shown literally, escaped in the DOM, nothing ran.
        self.assertEqual(json.loads(rows[phone]["cells"][6])["note"], XSS)
        self.assertIn("&lt;script&gt;", rows[phone]["metaHtml"])
        self.assertFalse(user["pwned"])
        self.assertEqual(user["scripts"], 1)
        # Disconnect one device: confirmed, the list updated, the client closed.
        d = events["disconnected"]
        self.assertEqual({r["client"] for r in d["rows"]}, {phone, tablet})
        self.assertIn("Disconnect %s?" % laptop, d["dialogs"])
        self.assertEqual(d["result"], "Disconnect %s: closed on gw-1" % laptop)
        self.assertEqual(driver.wait_event("laptop", "disconnected")["code"], 3503)
        # Terminate the rest but the kept phone: code and reason, confirmed.
        t = events["terminated"]
        self.assertEqual([r["client"] for r in t["rows"]], [phone])
        self.assertTrue(any(m.startswith("Terminate every connection of 42 except 1 kept") for m in t["dialogs"]))
        self.assertIn("1 closed", t["result"])
        self.assertFalse(t["pwned"])
        ev = driver.wait_event("tablet", "disconnected")
        self.assertEqual((ev["code"], ev["reason"]), (4501, "signed out by support"))
        # The kept phone and user 43 are untouched.
        resp = stub.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id="42"), metadata=API_KEY, timeout=5)
        self.assertEqual(set(resp.result.connections), {phone})
        resp = stub.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id="43"), metadata=API_KEY, timeout=5)
        self.assertEqual(set(resp.result.connections), {other})
        # Screenshots of the fleet and the user.
        for f in ("admin-fleet.png", "admin-user.png"):
            with open(os.path.join(out_dir, f), "rb") as png:
                self.assertEqual(png.read(8), b"\x89PNG\r\n\x1a\n")
        # The audit trail: one record per action, field by field.
        recs = wait_until(lambda: [a for a in audits() if a.get("user") == "42" or a.get("client_id") == laptop]
                          if len([a for a in audits() if a.get("user") == "42" or a.get("client_id") == laptop]) >= 2
                          else None, 10, "two audit records")
        dis = next(a for a in recs if a["action"] == "Disconnect")
        self.assertEqual((dis["app"], dis["client_id"], dis["api_key"], dis["address"]),
                         ("demo", laptop, "backend-tests", "127.0.0.1"))
        self.assertEqual(dis["via"], "http POST /apps/demo/connections/%s/disconnect" % laptop)
        self.assertEqual((dis["outcome"]["status"], dis["outcome"]["closed"], dis["outcome"]["complete"]),
                         ("OK", 1, True))
        term = next(a for a in recs if a["action"] == "TerminateUser")
        self.assertEqual((term["app"], term["user"], term["except"], term["code"], term["reason"]),
                         ("demo", "42", [phone], 4501, "signed out by support"))
        self.assertEqual(term["via"], "http POST /apps/demo/users/42/terminate_connections")
        self.assertEqual((term["api_key"], term["address"]), ("backend-tests", "127.0.0.1"))
        self.assertEqual((term["outcome"]["status"], term["outcome"]["closed"], term["outcome"]["complete"]),
                         ("OK", 1, True))
        self.assertEqual({k: v for k, v in term["outcome"]["closed_per_gateway"].items() if v}, {"gw-2": 1})
        for n in ("phone", "other"):
            driver.send(op="close", name=n)

    def test_the_page_is_on_the_operator_listener_only(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/admin" % cluster.http_operator_port, timeout=5) as r:
            self.assertEqual(r.status, 200)
            self.assertEqual(r.headers["X-Content-Type-Options"], "nosniff")
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/admin" % cluster.http_port, timeout=5)
            self.fail("the API's port serves /admin")
        except urllib.error.HTTPError as e:
            self.assertEqual(e.code, 404)


if __name__ == "__main__":
    ARGS, argv = parse_args()
    unittest.main(argv=argv, verbosity=2)
