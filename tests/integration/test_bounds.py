"""Sizes past the transports' limits still give whole answers: a user with
2,000 sessions carrying 2.5 KB of meta each (about 5 MB) is listed completely
(the gateway's answer crosses NATS in parts), the gateway re-attaches to a
restarted control with a snapshot larger than gRPC's 4 MiB message limit
(sent in chunks), and a request too large for the bus is INVALID_ARGUMENT.
Real nats-server, control and gateway; node opens the sessions."""
import json
import os
import subprocess
import sys
import unittest

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Cluster, Driver, Proc, load_stubs, parse_args, wait_until  # noqa: E402

ARGS = None
API_KEY = (("authorization", "apikey test-api-key-1234"),)
N = 2000


def setUpModule():
    global cluster, pb, stub, channel, load
    load_stubs(ARGS.source_dir)
    from switchboard.v1 import control_pb2, control_pb2_grpc
    pb = control_pb2
    cluster = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=1, http=True, max_sessions=N + 100)
    # Callers of big answers raise their receive limit, as any gRPC client may.
    channel = grpc.insecure_channel("127.0.0.1:%d" % cluster.control_port,
                                    options=[("grpc.max_receive_message_length", 64 << 20)])
    stub = control_pb2_grpc.ControlStub(channel)
    token = cluster.token("big", meta={"blob": "m" * 2500})
    cfg = {"urls": [cluster.ws_url("gw-1")], "tokens": [token], "count": N, "concurrency": 200}
    load = Proc("load-big", ["node", os.path.join(ARGS.source_dir, "tests/bench/load_clients.js"), json.dumps(cfg)],
                stdin=True)
    ready = json.loads(load.wait_line(r'^(\{"event":"ready".*)$', timeout=90).group(1))
    assert (ready["connected"], ready["failed"]) == (N, 0), ready


def tearDownModule():
    load.stop()
    channel.close()
    cluster.close()


def connections():
    return stub.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id="big"), metadata=API_KEY,
                                timeout=10).result


class BigAnswersTest(unittest.TestCase):
    def test_a_user_with_2000_fat_sessions_is_listed_completely(self):
        res = connections()
        self.assertTrue(res.complete, res.incomplete_reason)
        self.assertEqual(len(res.connections), N)
        self.assertGreater(res.ByteSize(), 4 << 20)  # really past NATS's 1 MiB, and gRPC's default 4 MiB

    def test_the_projects_own_clients_read_it_and_pages_list_each_connection_once(self):
        # switchboardctl reads past gRPC's default 4 MiB, in one answer or in pages.
        whole = json.loads(cluster.ctl("connections", "--user", "big"))["result"]
        self.assertEqual((len(whole["connections"]), whole["complete"]), (N, True))
        paged = json.loads(cluster.ctl("connections", "--user", "big", "--page_size", "300"))["result"]
        self.assertEqual(set(paged["connections"]), set(whole["connections"]))
        # grpcio with its default limits, page by page: every connection once.
        with grpc.insecure_channel("127.0.0.1:%d" % cluster.control_port) as ch:
            from switchboard.v1 import control_pb2_grpc
            s = control_pb2_grpc.ControlStub(ch)
            seen, token, pages = [], "", 0
            while True:
                r = s.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id="big", page_size=700,
                                                                page_token=token), metadata=API_KEY,
                                      timeout=10).result
                self.assertTrue(r.complete, r.incomplete_reason)
                self.assertLessEqual(len(r.connections), 700)
                self.assertLess(r.ByteSize(), 4 << 20)
                seen += list(r.connections)
                pages += 1
                token = r.next_page_token
                if not token:
                    break
            self.assertEqual(pages, 3)
            self.assertEqual(len(seen), N)
            self.assertEqual(set(seen), set(whole["connections"]))
            with self.assertRaises(grpc.RpcError) as e:
                s.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id="big", page_size=10,
                                                            page_token="not a token"), metadata=API_KEY, timeout=10)
            self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        # switchboard-http reads it too (it answered 429 before: gRPC's size
        # error is RESOURCE_EXHAUSTED, which grpc-gateway maps to "slow down").
        out = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-H", "X-API-Key: test-api-key-1234",
                              "-d", json.dumps({"user": "big"}),
                              "http://127.0.0.1:%d/api/user_connections" % cluster.http_port],
                             capture_output=True, text=True, timeout=60)
        text, _, code = out.stdout.rpartition("\n")
        self.assertEqual(code, "200", text[:300])
        self.assertEqual(len(json.loads(text)["result"]["connections"]), N)

    def test_snapshot_past_4_mib_reattaches_after_a_control_restart(self):
        cluster.restart_control()
        cluster.wait_ready()

        def counted():
            gws = stub.ListGateways(pb.ListGatewaysRequest(), metadata=API_KEY, timeout=5).gateways
            return [g.sessions for g in gws] == [N]
        wait_until(counted, 30, "gw-1 re-attached with all %d sessions" % N)
        self.assertEqual(len(connections().connections), N)

    def test_zz_request_too_large_for_the_bus_is_invalid_argument(self):
        req = pb.TerminateUserRequest(app_id="demo", user_id="big",
                                      except_client_ids=["x" * 250 + str(i) for i in range(5000)])
        with self.assertRaises(grpc.RpcError) as e:
            stub.TerminateUser(req, metadata=API_KEY, timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("bus", e.exception.details())
        self.assertEqual(len(connections().connections), N)  # nothing was closed
        t = stub.TerminateUser(pb.TerminateUserRequest(app_id="demo", user_id="big"), metadata=API_KEY, timeout=10)
        self.assertEqual((t.closed, t.coverage.complete), (N, True))


class SessionDataCapTest(unittest.TestCase):
    def test_a_5_mb_pusher_user_info_is_refused_and_the_gateway_stays_in_the_fleet(self):
        # Frames up to 16 MiB are allowed here; what one session keeps is not
        # (gateway.max_session_bytes, 8 KiB by default). Before the cap, such
        # a session made the gateway's snapshot too large for control, which
        # refused it on every re-attach: its other users were answered empty.
        c = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=1, http=False, max_message_bytes=16 << 20)
        driver = Driver(os.path.join(ARGS.source_dir, "tests/integration/node"))
        try:
            port = c.gateways["gw-1"][1]
            driver.send(op="pusher", name="fat", key="demo-key", secret="demo-secret-for-tests", port=port,
                        user_data={"id": "fat", "user_info": {"blob": "x" * (5 << 20)}})
            err = driver.wait_event("fat", "pusher_error_event", timeout=30)
            self.assertIn("user_info is larger than 8192 bytes", json.dumps(err["data"]))
            driver.send(op="pusher", name="slim", key="demo-key", secret="demo-secret-for-tests", port=port,
                        user_data={"id": "slim", "user_info": {"plan": "gold"}})
            driver.wait_event("slim", "pusher_signin_success")
            c.restart_control()
            c.wait_ready()
            res = json.loads(c.ctl("connections", "--user", "slim"))["result"]
            self.assertTrue(res["complete"], res)
            self.assertEqual(len(res["connections"]), 1)
            self.assertEqual(json.loads(c.ctl("connections", "--user", "fat"))["result"].get("connections", {}), {})
        finally:
            driver.stop()
            c.close()


if __name__ == "__main__":
    ARGS, argv = parse_args()
    unittest.main(argv=argv, verbosity=2)
