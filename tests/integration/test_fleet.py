"""A fleet you can trust, with real processes: only the cluster's gateways
can attach and none can displace a live member; forwarded HTTP metadata
counts only from switchboard-http; a restarted control replica never claims a
complete answer it cannot have, and its terminates always go out; a frozen
gateway leaves the fleet within its lease and comes back after."""
import hashlib
import hmac
import os
import signal
import sys
import threading
import time
import unittest

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import (CLUSTER_TOKEN, HTTP_PROXY_TOKEN, NATS_CONTROL, NATS_GATEWAY, Cluster, Driver,  # noqa: E402
                     NatsSession, load_stubs, parse_args, wait_until)

ARGS = None
API_KEY = (("authorization", "apikey test-api-key-1234"),)
SECRET = "demo-secret-for-tests"


def setUpModule():
    global cluster, driver, pb, rpb, stub, reg_stub, channel
    load_stubs(ARGS.source_dir)
    from switchboard.v1 import control_pb2, control_pb2_grpc, registry_pb2, registry_pb2_grpc
    pb, rpb = control_pb2, registry_pb2
    cluster = Cluster(ARGS.build_dir, ARGS.source_dir, http=False)
    driver = Driver(os.path.join(ARGS.source_dir, "tests/integration/node"))
    channel = grpc.insecure_channel("127.0.0.1:%d" % cluster.control_port)
    stub = control_pb2_grpc.ControlStub(channel)
    reg_stub = registry_pb2_grpc.RegistryStub(channel)


def tearDownModule():
    channel.close()
    driver.stop()
    cluster.close()


def gateways(s=None):
    return {g.id: g.sessions for g in (s or stub).ListGateways(pb.ListGatewaysRequest(), metadata=API_KEY,
                                                                 timeout=5).gateways}


_seq = [0]


def open_client(user, gw):
    _seq[0] += 1
    name = "f%d" % _seq[0]
    driver.send(op="centrifuge", name=name, url=cluster.ws_url(gw), token=cluster.token(user))
    return name, driver.wait_event(name, "connected")["client"]


def dropped(name):
    return [e for e in driver.events(name) if e["event"] == "disconnected"
            or (e["event"] == "connecting" and e["code"] != 0)]


def attach(gateway_id, metadata):
    """Attaches as a gateway would; returns the status code the stream ended with
    (OK when it was accepted and we hung up)."""
    stop = threading.Event()

    def messages():
        yield rpb.GatewayMessage(hello=rpb.GatewayHello(gateway_id=gateway_id, version="evil"))
        stop.wait(5)

    call = reg_stub.Attach(messages(), metadata=metadata, timeout=5)
    try:
        next(call)  # the welcome, if accepted
        stop.set()
        call.cancel()
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        stop.set()
        return e.code()


class AttachAuthTest(unittest.TestCase):
    def test_unauthenticated_attach_is_refused_and_cannot_displace_a_member(self):
        name, cid = open_client("300", "gw-1")
        wait_until(lambda: gateways().get("gw-1") == 1, 10, "gw-1 counted")
        self.assertEqual(attach("gw-1", ()), grpc.StatusCode.UNAUTHENTICATED)
        self.assertEqual(attach("gw-1", (("x-switchboard-cluster-token", "not-the-token-at-all"),)),
                         grpc.StatusCode.UNAUTHENTICATED)
        self.assertEqual(attach("ghost", ()), grpc.StatusCode.UNAUTHENTICATED)
        # Even with the cluster credential, a live member's ID is refused, never replaced.
        self.assertEqual(attach("gw-1", (("x-switchboard-cluster-token", CLUSTER_TOKEN),)),
                         grpc.StatusCode.ALREADY_EXISTS)
        self.assertEqual(set(gateways()), {"gw-1", "gw-2"})
        res = stub.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id="300"), metadata=API_KEY,
                                   timeout=2).result
        self.assertTrue(res.complete)
        self.assertEqual(list(res.connections), [cid])
        t = stub.TerminateUser(pb.TerminateUserRequest(app_id="demo", user_id="300"), metadata=API_KEY, timeout=2)
        self.assertEqual((t.closed, t.coverage.complete), (1, True))
        self.assertEqual(driver.wait_event(name, "disconnected")["code"], 3503)


class ProxyMetadataTest(unittest.TestCase):
    def test_forwarded_http_metadata_is_refused_on_direct_grpc(self):
        name, cid = open_client("301", "gw-2")
        path = "/apps/demo/users/301/terminate_connections"
        params = "auth_key=demo-key&auth_timestamp=%d&auth_version=1.0&body_md5=%s" % (
            int(time.time()), hashlib.md5(b"{}").hexdigest())
        sig = hmac.new(SECRET.encode(), ("POST\n%s\n%s" % (path, params)).encode(), hashlib.sha256).hexdigest()
        forwarded = (("x-switchboard-http-method", "POST"), ("x-switchboard-http-path", path),
                     ("x-switchboard-http-query", params + "&auth_signature=" + sig),
                     ("x-switchboard-http-body-md5", hashlib.md5(b"{}").hexdigest()))
        req = pb.TerminateUserRequest(app_id="demo", user_id="301", code=4999, reason="replayed")
        for extra in ((), (("x-switchboard-proxy-token", "guessed-proxy-token-000"),)):
            with self.assertRaises(grpc.RpcError) as e:
                stub.TerminateUser(req, metadata=forwarded + extra, timeout=2)
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        # Nor may an API-key caller smuggle it in.
        with self.assertRaises(grpc.RpcError) as e:
            stub.TerminateUser(req, metadata=forwarded + API_KEY, timeout=2)
        self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        self.assertEqual(dropped(name), [])
        # The proxy's own credential makes the same request valid.
        t = stub.TerminateUser(req, metadata=forwarded + (("x-switchboard-proxy-token", HTTP_PROXY_TOKEN),),
                               timeout=2)
        self.assertEqual(t.closed, 1)


class NatsPermissionsTest(unittest.TestCase):
    def test_bus_refuses_strangers_and_roles_outside_their_permissions(self):
        subject = "switchboard.%s.gateways" % cluster.cluster
        # No credentials, or wrong ones: refused at CONNECT.
        for creds in (None, (NATS_GATEWAY[0], "wrong-password-123")):
            n = NatsSession(cluster.nats_port, creds)
            self.assertIn("Authorization Violation", n.line())
            n.close()
        replies = "switchboard.%s.replies" % cluster.cluster
        # A gateway's credential can neither send requests nor read replies,
        # and it publishes nowhere but under the replies prefix.
        n = NatsSession(cluster.nats_port, NATS_GATEWAY)
        self.assertEqual(n.line(), "PONG")
        self.assertIn("Permissions Violation for Publish", n.send("PUB %s 5\r\nhello" % subject))
        self.assertIn("Permissions Violation for Publish", n.send("PUB _INBOX.x 5\r\nhello"))
        self.assertIn("Permissions Violation for Subscription", n.send("SUB %s.> 1" % replies))
        self.assertIn("Permissions Violation for Subscription", n.send("SUB _INBOX.> 1"))
        self.assertEqual(n.send("PUB %s.x.y 5\r\nhello" % replies), "")
        n.close()
        # Control's credential cannot listen to the requests (user IDs, meta)
        # nor to anything but replies.
        n = NatsSession(cluster.nats_port, NATS_CONTROL)
        self.assertEqual(n.line(), "PONG")
        self.assertIn("Permissions Violation for Subscription", n.send("SUB %s 1" % subject))
        self.assertIn("Permissions Violation for Subscription", n.send("SUB _INBOX.> 1"))
        self.assertIn("Permissions Violation for Publish", n.send("PUB %s.x.y 5\r\nhello" % replies))
        n.close()
        # The real components still work under these rules.
        name, cid = open_client("302", "gw-1")
        res = stub.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id="302"), metadata=API_KEY,
                                   timeout=2).result
        self.assertEqual((list(res.connections), res.complete), ([cid], True))


class ControlRestartHonestyTest(unittest.TestCase):
    def test_right_after_a_restart_no_answer_is_complete_but_wrong_and_terminates_go_out(self):
        c = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=2, http=False)
        ch = grpc.insecure_channel("127.0.0.1:%d" % c.control_port)
        try:
            from switchboard.v1 import control_pb2_grpc
            s = control_pb2_grpc.ControlStub(ch)
            names, keep = [], []
            for gw in ("gw-1", "gw-2"):
                _seq[0] += 1
                n = "r%d" % _seq[0]
                driver.send(op="centrifuge", name=n, url=c.ws_url(gw), token=c.token("310"))
                keep.append(driver.wait_event(n, "connected")["client"])
                names.append(n)
            victims = []
            for gw in ("gw-1", "gw-2"):
                _seq[0] += 1
                n = "v%d" % _seq[0]
                driver.send(op="centrifuge", name=n, url=c.ws_url(gw), token=c.token("311"))
                driver.wait_event(n, "connected")
                victims.append(n)
            c.restart_control()
            # The very first call after the restart: the fleet is unknown, yet
            # the terminate goes out and every socket of the user closes.
            first = s.TerminateUser(pb.TerminateUserRequest(app_id="demo", user_id="311"), metadata=API_KEY,
                                    timeout=2)
            self.assertTrue(first.coverage.complete is False or first.closed == 2, first)
            if not first.coverage.complete:
                self.assertNotEqual(first.coverage.incomplete_reason, "")
            # 300 calls over the first 5 s, starting at once (the first lease
            # is 1.5 s from control's start; the victims' closes are checked
            # after): complete only when every gateway answered.
            results = [first.coverage]
            start = time.monotonic()
            while len(results) < 301:
                t = s.TerminateUser(pb.TerminateUserRequest(app_id="demo", user_id="310", except_client_ids=keep),
                                    metadata=API_KEY, timeout=2)
                results.append(t.coverage)
                pause = start + 5.0 * len(results) / 300 - time.monotonic()
                if pause > 0:
                    time.sleep(pause)  # pacing the calls over 5 s, not synchronising anything
            for n in victims:
                self.assertEqual(driver.wait_event(n, "disconnected", timeout=5)["code"], 3503)
            wrong = [r for r in results if r.complete and not {"gw-1", "gw-2"} <= set(r.gateways_answered)]
            self.assertEqual(wrong, [])
            self.assertTrue(all(r.incomplete_reason for r in results if not r.complete))
            self.assertTrue(any(not r.complete for r in results), "the first lease must be incomplete")
            self.assertTrue(any(r.complete for r in results), "complete again after the first lease")
            self.assertEqual([dropped(n) for n in names], [[], []])
        finally:
            ch.close()
            c.close()


class FrozenGatewayTest(unittest.TestCase):
    def test_sigstop_leaves_the_fleet_within_the_lease_and_sigcont_brings_it_back(self):
        proc, port = cluster.add_gateway("gw-frozen")
        wait_until(lambda: "gw-frozen" in gateways(), 10, "gw-frozen attached")
        _seq[0] += 1
        name = "z%d" % _seq[0]
        driver.send(op="centrifuge", name=name, url="ws://127.0.0.1:%d/connection/websocket" % port,
                    token=cluster.token("320"))
        cid = driver.wait_event(name, "connected")["client"]
        wait_until(lambda: gateways().get("gw-frozen") == 1, 10, "gw-frozen counted")

        def heartbeat_load():
            g = [g for g in stub.ListGateways(pb.ListGatewaysRequest(), metadata=API_KEY, timeout=5).gateways
                 if g.id == "gw-frozen"]
            return g and g[0].connections == 1 and not g[0].draining
        wait_until(heartbeat_load, 10, "gw-frozen's heartbeat reports its load")
        proc.signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            wait_until(lambda: "gw-frozen" not in gateways(), 10, "gw-frozen evicted")
            gone_after = time.monotonic() - frozen_at
            # Lease 1.5 s, swept every heartbeat/2; some slack for a loaded machine.
            self.assertLess(gone_after, cluster.lease_ms / 1000.0 + 1.5)
            # Answers no longer wait for it, and are complete.
            res = stub.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id="320"), metadata=API_KEY,
                                       timeout=2).result
            self.assertTrue(res.complete)
            self.assertNotIn("gw-frozen", res.gateways_asked)
        finally:
            proc.signal(signal.SIGCONT)
        # Back with a fresh snapshot: its session is listed again.
        wait_until(lambda: gateways().get("gw-frozen") == 1, 15, "gw-frozen back with its snapshot")
        res = stub.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id="320"), metadata=API_KEY,
                                   timeout=2).result
        self.assertEqual(list(res.connections), [cid])
        self.assertTrue(res.complete)


if __name__ == "__main__":
    ARGS, argv = parse_args()
    unittest.main(argv=argv, verbosity=2)
