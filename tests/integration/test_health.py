"""Health for the probes: gRPC grpc.health.v1 on control, HTTP /livez and
/readyz on control, gateways and the HTTP proxy. Readiness is true only when
the process can do its job, and every flip is checked here against real
processes: NATS down and back, control down and back, a gateway's drain
(unready at once, before any client is closed)."""
import os
import signal
import sys
import threading
import unittest
import urllib.error
import urllib.request

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Cluster, parse_args, wait_until  # noqa: E402

ARGS, UNITTEST_ARGV = parse_args()
sys.path.insert(0, os.path.join(ARGS.source_dir, "tests", "bench"))
from bench import Generator, SECRET  # noqa: E402

SERVING, NOT_SERVING, SERVICE_UNKNOWN = 1, 2, 3


def http_get(port, path):
    """(status, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def health_request(service):
    """HealthCheckRequest{service} encoded (field 1, a string)."""
    name = service.encode()
    return b"\x0a" + bytes([len(name)]) + name if name else b""


def health_status(resp):
    """HealthCheckResponse's status (field 1, a varint); proto3 leaves out 0."""
    return resp[1] if resp[:1] == b"\x08" else 0


def grpc_health(port, service=""):
    """The serving status control's grpc.health.v1 Check gives (0 if unknown)."""
    with grpc.insecure_channel("127.0.0.1:%d" % port) as ch:
        check = ch.unary_unary("/grpc.health.v1.Health/Check")
        return health_status(check(health_request(service), timeout=5))


class HealthWatch:
    """A grpc.health.v1 Watch stream read on a thread of its own: every
    status it has sent so far, in order."""

    def __init__(self, port, service=""):
        self.channel = grpc.insecure_channel("127.0.0.1:%d" % port)
        self.call = self.channel.unary_stream("/grpc.health.v1.Health/Watch")(health_request(service), timeout=120)
        self.statuses = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for resp in self.call:
                with self.lock:
                    self.statuses.append(health_status(resp))
        except grpc.RpcError:
            pass

    def seen(self):
        with self.lock:
            return list(self.statuses)

    def close(self):
        self.call.cancel()
        self.thread.join(timeout=10)
        self.channel.close()


class Health(unittest.TestCase):
    def setUp(self):
        self.cluster = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=1, http=True,
                               gateway_args=["--drain_delay_ms", "1500"])
        self.gw, self.gw_port = self.cluster.gateways["gw-1"]
        self.gens = []

    def tearDown(self):
        for g in self.gens:
            g.stop()
        self.cluster.close()

    def ports(self):
        # The gateway's reasons are on its operator listener; its clients'
        # port says the status alone (test_the_clients_port_tells_no_reasons).
        return {"gateway": self.cluster.operator_ports["gw-1"], "control": self.cluster.control_health_ports[0],
                "http": self.cluster.http_port}

    def ready(self, what):
        return http_get(self.ports()[what], "/readyz")

    def wait_ready(self, what, want, contains="", timeout=15):
        def check():
            status, body = self.ready(what)
            return (status, body) if status == want and contains in body else None
        return wait_until(check, timeout, "%s /readyz %d %r (last: %s)" % (what, want, contains, self.ready(what)))

    def assert_all_live(self):
        for what, port in self.ports().items():
            self.assertEqual(http_get(port, "/livez")[0], 200, what)

    def test_everything_ready_once_up(self):
        # Control is ready one lease after its start, and its gRPC health
        # (what the proxy asks) follows within half a heartbeat: the cluster
        # may be up a moment before that.
        for what in ("gateway", "control", "http"):
            status, body = self.wait_ready(what, 200)
            self.assertEqual(body.strip(), "ready", what)
        self.assertEqual(grpc_health(self.cluster.control_port), SERVING)
        # Each of control's services by name too; a name it does not know is
        # NOT_FOUND for Check and SERVICE_UNKNOWN (stream left open) for Watch.
        for service in ("switchboard.v1.Control", "switchboard.v1.Registry"):
            self.assertEqual(grpc_health(self.cluster.control_port, service), SERVING, service)
        with self.assertRaises(grpc.RpcError) as err:
            grpc_health(self.cluster.control_port, "no.such.Service")
        self.assertEqual(err.exception.code(), grpc.StatusCode.NOT_FOUND)
        unknown = HealthWatch(self.cluster.control_port, "no.such.Service")
        try:
            wait_until(lambda: unknown.seen() == [SERVICE_UNKNOWN], 10, "Watch SERVICE_UNKNOWN")
        finally:
            unknown.close()
        self.assert_all_live()
        self.assertEqual(http_get(self.gw_port, "/nope")[0], 404)

    def test_the_clients_port_tells_no_reasons(self):
        # Issue 22 point 4: the clients' port answers /readyz and /livez for
        # a load balancer, with the status alone; control addresses and
        # session counts are for the operator's listener.
        self.wait_ready("gateway", 200)
        self.assertEqual(http_get(self.gw_port, "/readyz"), (200, "ready\n"))
        self.assertEqual(http_get(self.gw_port, "/livez"), (200, "ok\n"))
        addr = self.cluster.control_addrs[0]

        def while_down():
            status, body = self.wait_ready("gateway", 503, "not attached to any control replica")
            self.assertIn(addr, body)
            self.assertEqual(http_get(self.gw_port, "/readyz"), (503, "not ready\n"))
            self.assertEqual(http_get(self.gw_port, "/livez"), (200, "ok\n"))
        self.cluster.restart_control(while_down=while_down)
        self.wait_ready("gateway", 200)
        # Nothing but the probes there: no metrics, no API.
        for path in ("/metrics", "/api", "/gateways"):
            self.assertEqual(http_get(self.gw_port, path)[0], 404, path)

    def test_nats_down_makes_gateway_and_control_unready_until_it_is_back(self):
        # A Watch opened while serving hears each flip, in order.
        self.wait_ready("control", 200)
        wait_until(lambda: grpc_health(self.cluster.control_port) == SERVING, 10, "gRPC health SERVING")
        watch = HealthWatch(self.cluster.control_port)
        self.addCleanup(watch.close)
        wait_until(lambda: watch.seen() == [SERVING], 10, "Watch SERVING")
        self.cluster.stop_nats()
        self.wait_ready("gateway", 503, "NATS disconnected")
        self.wait_ready("control", 503, "bus connection is down")
        wait_until(lambda: grpc_health(self.cluster.control_port) == NOT_SERVING, 10, "gRPC health NOT_SERVING")
        self.wait_ready("http", 503, "NOT_SERVING")
        self.assert_all_live()  # alive all the same: restarting them would not help
        self.cluster.restart_nats()
        self.wait_ready("gateway", 200)
        # Control waits one lease after its bus is back (gateways re-announce).
        self.wait_ready("control", 200)
        wait_until(lambda: grpc_health(self.cluster.control_port) == SERVING, 10, "gRPC health SERVING")
        self.wait_ready("http", 200)
        wait_until(lambda: watch.seen() == [SERVING, NOT_SERVING, SERVING], 10,
                   "Watch SERVING, NOT_SERVING, SERVING")

    def test_control_down_makes_the_gateway_unready_naming_the_replica(self):
        addr = self.cluster.control_addrs[0]

        def while_down():
            status, body = self.wait_ready("gateway", 503, "not attached to any control replica")
            self.assertIn(addr, body)
            self.wait_ready("http", 503, "unreachable")
        self.cluster.restart_control(while_down=while_down)
        # A fresh replica: not ready before its first lease is over.
        status, body = self.ready("control")
        if status != 200:
            self.assertIn("started", body)
        self.wait_ready("gateway", 200)
        self.wait_ready("control", 200)
        self.wait_ready("http", 200)

    def test_draining_gateway_is_unready_before_it_closes_anyone(self):
        gen = Generator(ARGS.build_dir, ["--targets", "127.0.0.1:%d" % self.gw_port, "--sources", "127.0.9.1",
                                         "--sessions", "50", "--users", "5", "--secret", SECRET, "--log_closes"])
        self.gens.append(gen)
        ready = gen.wait("ready", timeout=30)
        self.assertEqual((ready["connected"], ready["failed"]), (50, 0), ready)
        self.wait_ready("gateway", 200)
        self.gw.signal(signal.SIGTERM)
        self.wait_ready("gateway", 503, "draining", timeout=5)
        # Unready while every client is still connected (the drain waits 1.5 s
        # after turning unready), and still alive.
        self.assertEqual(gen.closes(), [])
        self.assertEqual(http_get(self.gw_port, "/livez")[0], 200)
        wait_until(lambda: len(gen.closes()) == 50, 20, "every client closed")
        self.assertEqual({c["code"] for c in gen.closes()}, {3001})
        self.assertEqual(self.gw.p.wait(timeout=30), 0)


class GatewayReadinessTest(unittest.TestCase):
    """A gateway is ready when it can serve clients: one control replica down
    does not take it out of the load balancer; being near capacity does."""

    def ready(self, port):
        return http_get(port, "/readyz")

    def test_one_replica_down_keeps_the_gateway_ready_none_does_not(self):
        c = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=1, http=False, controls=2)
        try:
            gw, port = c.gateways["gw-1"]
            op = c.operator_ports["gw-1"]  # the reasons are on the operator's listener
            wait_until(lambda: self.ready(op)[0] == 200, 15, "gateway ready")
            c.controls[1].p.kill()  # SIGKILL, and it stays down
            c.controls[1].p.wait(10)
            gw.wait_line(r"cannot attach", 15)  # the gateway knows it lost that replica...
            self.assertEqual(self.ready(op), (200, "ready\n"))  # ...and still serves clients
            c.controls[0].stop()
            status, body = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(self.ready(op)), 15,
                                      "gateway unready with no replica")
            self.assertIn("not attached to any control replica (0 of 2", body)
        finally:
            c.close()

    def test_near_capacity_the_gateway_is_unready_until_well_below(self):
        c = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=1, http=False, max_sessions=20,
                    gateway_extra={"unready_at_percent": 50, "ready_again_at_percent": 25})
        gens = []
        try:
            port = c.gateways["gw-1"][1]
            op = c.operator_ports["gw-1"]
            wait_until(lambda: self.ready(op)[0] == 200, 15, "gateway ready")

            def load(n, source):
                gen = Generator(ARGS.build_dir, ["--targets", "127.0.0.1:%d" % port, "--sources", source,
                                                 "--sessions", str(n), "--users", "1", "--secret", SECRET])
                gens.append(gen)
                ready = gen.wait("ready", timeout=30)
                self.assertEqual((ready["connected"], ready["failed"]), (n, 0), ready)
                return gen

            def status_is(want):
                return wait_until(lambda: (lambda r: r if r[0] == want else None)(self.ready(op)), 15,
                                  "/readyz %d" % want)
            a, b = load(3, "127.0.9.2"), load(3, "127.0.9.3")
            self.assertEqual(self.ready(op)[0], 200)  # 6 of 20
            extra = load(4, "127.0.9.4")  # 10 of 20: the high-water mark (50%)
            self.assertIn("near capacity: 10 sessions", status_is(503)[1])
            extra.stop()  # 6: below the mark, not below the low-water mark (25%: 5)
            wait_until(lambda: "near capacity: 6 sessions" in self.ready(op)[1], 15, "6 sessions, still unready")
            b.stop()  # 3: ready again
            status_is(200)
        finally:
            for g in gens:
                g.stop()
            c.close()


if __name__ == "__main__":
    unittest.main(argv=UNITTEST_ARGV, verbosity=2)
