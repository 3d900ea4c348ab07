"""A real Prometheus (Debian's `prometheus`) scrapes every process of a test
cluster (two gateways, control, switchboard-http) every second, with the
alerting rules loaded. Through its HTTP query API: sessions, calls and
incomplete answers move as real clients (centrifuge-js) connect and a gateway
is frozen; every query of the Grafana dashboard (deploy/grafana) returns
data; the prometheus-adapter rule behind the gateway HPA answers per pod; the
rules load with no error."""
import json
import os
import signal
import socket
import sys
import tempfile
import unittest
import urllib.parse
import urllib.request

import grpc
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Cluster, Driver, Proc, load_stubs, parse_args, wait_until  # noqa: E402

ARGS = None
API_KEY = (("authorization", "apikey test-api-key-1234"),)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def setUpModule():
    global cluster, driver, pb, stub, prom, prom_port, tmp
    load_stubs(ARGS.source_dir)
    from switchboard.v1 import control_pb2 as pb_mod, control_pb2_grpc
    pb = pb_mod
    cluster = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=2, http=True)
    driver = Driver(os.path.join(ARGS.source_dir, "tests/integration/node"))
    stub = control_pb2_grpc.ControlStub(grpc.insecure_channel("127.0.0.1:%d" % cluster.control_port))
    tmp = tempfile.mkdtemp(prefix="switchboard-prometheus-")
    with open(os.path.join(ARGS.source_dir, "deploy/k8s/components/monitoring/prometheus-rule.yaml")) as f:
        rule = yaml.safe_load(f)
    with open(os.path.join(tmp, "switchboard-rules.yaml"), "w") as f:
        yaml.safe_dump(rule["spec"], f)

    def target(port, pod):
        return {"targets": ["127.0.0.1:%d" % port], "labels": {"namespace": "switchboard", "pod": pod}}
    # Jobs named as the ServiceMonitor's Services name them (the alerts match
    # on them); namespace and pod as the operator's relabelling sets them.
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "rule_files": [os.path.join(tmp, "switchboard-rules.yaml")],
        "scrape_configs": [
            {"job_name": "switchboard-gateway-metrics",
             "static_configs": [target(cluster.operator_ports["gw-1"], "gw-1"),
                                target(cluster.operator_ports["gw-2"], "gw-2")]},
            {"job_name": "switchboard-control-metrics",
             "static_configs": [target(cluster.control_health_ports[0], "control-0")]},
            {"job_name": "switchboard-http-metrics",
             "static_configs": [target(cluster.http_operator_port, "http-0")]},
        ],
    }
    with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
        yaml.safe_dump(config, f)
    prom_port = free_port()
    prom = Proc("prometheus", ["prometheus", "--config.file=" + os.path.join(tmp, "prometheus.yml"),
                               "--storage.tsdb.path=" + os.path.join(tmp, "data"),
                               "--web.listen-address=127.0.0.1:%d" % prom_port, "--log.level=warn"])
    wait_until(lambda: ready(), 60, "Prometheus ready")


def tearDownModule():
    prom.stop()
    driver.stop()
    cluster.close()


def ready():
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/-/ready" % prom_port, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def api(path, **params):
    url = "http://127.0.0.1:%d/api/v1/%s?%s" % (prom_port, path, urllib.parse.urlencode(params))
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.loads(r.read().decode())
    assert body["status"] == "success", body
    return body["data"]


def query(expr):
    """The instant vector `expr` evaluates to: [(labels, value)]."""
    data = api("query", query=expr)
    assert data["resultType"] == "vector", data
    return [(s["metric"], float(s["value"][1])) for s in data["result"]]


def scalar(expr):
    """The one value of a single-series `expr` (None when it is empty)."""
    r = query(expr)
    return r[0][1] if r else None


_seq = [0]


def open_client(user, gw):
    _seq[0] += 1
    name = "p%d" % _seq[0]
    driver.send(op="centrifuge", name=name, url=cluster.ws_url(gw), token=cluster.token(user))
    return name, driver.wait_event(name, "connected")["client"]


class PrometheusTest(unittest.TestCase):
    def test_the_fleet_as_prometheus_sees_it(self):
        wait_until(lambda: len([v for _, v in query('up{job=~"switchboard-.*"}') if v == 1]) == 4, 30,
                   "all four targets up")
        # Sessions move with real clients.
        a, _ = open_client("42", "gw-1")
        b, b_id = open_client("42", "gw-1")
        c, _ = open_client("42", "gw-2")
        wait_until(lambda: scalar("sum(switchboard_gateway_sessions)") == 3, 15, "3 sessions in Prometheus")
        per_gw = {m["pod"]: v for m, v in query("sum by (pod) (switchboard_gateway_sessions)")}
        self.assertEqual(per_gw, {"gw-1": 2, "gw-2": 1})

        # Calls move: gRPC and through the HTTP proxy.
        resp = stub.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id="42"), metadata=API_KEY,
                                    timeout=5)
        self.assertTrue(resp.result.complete)
        self.assertEqual(len(resp.result.connections), 3)
        req = urllib.request.Request("http://127.0.0.1:%d/apps/demo/users/42/connections" % cluster.http_port,
                                     headers={"Authorization": "apikey test-api-key-1234"})
        with urllib.request.urlopen(req, timeout=10) as r:
            self.assertEqual(r.status, 200)
        wait_until(lambda: (scalar('sum(switchboard_control_calls_total{method="UserConnections",code="OK"})')
                            or 0) >= 2, 15, "both calls counted")
        wait_until(lambda: (scalar('sum(switchboard_http_requests_total{route="user_connections",code="200"})')
                            or 0) >= 1, 15, "the proxy's request counted")
        # Terminate all but one: closes by code.
        resp = stub.TerminateUser(pb.TerminateUserRequest(app_id="demo", user_id="42", except_client_ids=[b_id],
                                                          code=4501, reason="bye"), metadata=API_KEY, timeout=5)
        self.assertEqual(resp.closed, 2)
        wait_until(lambda: scalar('sum(switchboard_gateway_closes_total{code="4501"})') == 2, 15,
                   "two closes with 4501")
        wait_until(lambda: scalar("sum(switchboard_gateway_sessions)") == 1, 15, "one session left")

        # A frozen gateway: named missing, counted incomplete, its target down.
        gw2 = cluster.gateways["gw-2"][0]
        # (Counted from here: an earlier answer may have been incomplete on a
        # loaded machine, a replica that noticed a stall says so.)
        incomplete0 = scalar("sum(switchboard_control_incomplete_answers_total)") or 0
        missing0 = scalar("sum(switchboard_control_gateways_missing_total)") or 0
        gw2.signal(signal.SIGSTOP)
        try:
            resp = stub.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id="42"), metadata=API_KEY,
                                        timeout=5)
            self.assertFalse(resp.result.complete)
            self.assertIn("gw-2", resp.result.gateways_missing)
            wait_until(lambda: (scalar("sum(switchboard_control_incomplete_answers_total)") or 0) >= incomplete0 + 1,
                       15, "the incomplete answer counted")
            wait_until(lambda: (scalar("sum(switchboard_control_gateways_missing_total)") or 0) >= missing0 + 1, 15,
                       "the missing gateway counted")
            wait_until(lambda: scalar('up{pod="gw-2"}') == 0, 15, "the frozen gateway's target down")
        finally:
            gw2.signal(signal.SIGCONT)
        wait_until(lambda: scalar('up{pod="gw-2"}') == 1, 30, "gw-2 back")

        # Every dashboard query returns data from this Prometheus.
        with open(os.path.join(ARGS.source_dir, "deploy/grafana/switchboard.json")) as f:
            dash = json.load(f)
        exprs = [(panel["title"], t["expr"].replace("$__rate_interval", "1m"))
                 for panel in dash["panels"] for t in panel["targets"]]

        def without_data():
            return [("%s: %s" % (title, expr)) for title, expr in exprs if not query(expr)]
        # A rate needs two scrapes after its series' last change: polled.
        empty = []
        try:
            wait_until(lambda: not without_data(), 15, "every dashboard query with data")
        except AssertionError:
            empty = without_data()
        self.assertEqual(empty, [], "dashboard queries without data")
        count = len(exprs)
        print("dashboard: %d panels, %d queries, all with data" % (len(dash["panels"]), count))

        # The prometheus-adapter rule behind the gateway HPA, as the adapter
        # would run it for the gateway pods.
        with open(os.path.join(ARGS.source_dir, "deploy/k8s/components/monitoring/prometheus-adapter-rules.yaml")) as f:
            adapter = yaml.safe_load(f)
        rule = yaml.safe_load(adapter["data"]["rules.yaml"])["rules"][0]
        series = rule["seriesQuery"].split("{")[0]
        expr = (rule["metricsQuery"].replace("<<.Series>>", series)
                .replace("<<.LabelMatchers>>", 'namespace="switchboard",pod=~"gw-1|gw-2"')
                .replace("<<.GroupBy>>", "pod"))
        per_pod = {m["pod"]: v for m, v in query(expr)}
        self.assertEqual(per_pod.get("gw-1"), 1, per_pod)
        self.assertIn(rule["seriesQuery"].split("{")[0], [m["__name__"] for m in api(
            "series", **{"match[]": rule["seriesQuery"]})])

        # The alerting rules load and evaluate.
        groups = api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"] if r["type"] == "alerting"]
        self.assertEqual(len(rules), 8)
        self.assertEqual([r["name"] for r in rules if r["health"] != "ok"], [])
        for n in (a, b, c):
            driver.send(op="close", name=n)


if __name__ == "__main__":
    ARGS, argv = parse_args()
    unittest.main(argv=argv, verbosity=2)
