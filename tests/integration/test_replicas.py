"""Several control replicas behind one DNS name, as a Kubernetes headless
Service gives them: a real DNS server (dnsmasq, on loopback) answers the name
with every replica's address; gateways attach to each, follow the name when a
third replica appears or one goes, and every replica answers completely."""
import os
import signal
import socket
import sys
import tempfile
import unittest

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Cluster, Driver, Proc, load_stubs, parse_args, wait_until  # noqa: E402

ARGS = None
API_KEY = (("authorization", "apikey test-api-key-1234"),)
NAME = "replicas.switchboard.test"


def free_port():
    """A port free for both UDP and TCP now (dnsmasq listens on both). Another
    process may still take it before dnsmasq binds: Dns retries."""
    while True:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()


class Dns:
    """dnsmasq serving NAME from a hosts file we rewrite (SIGHUP re-reads it)."""

    def __init__(self, tmp, addresses):
        self.hosts = os.path.join(tmp, "replicas.hosts")
        self.set(addresses, reload=False)
        # The port can be taken between choosing it and dnsmasq binding it
        # (other tests open many sockets at once): then another port.
        for attempt in range(5):
            self.port = free_port()
            self.proc = Proc("dnsmasq", ["dnsmasq", "--no-daemon", "-C", "/dev/null", "--port=%d" % self.port,
                                         "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
                                         "--no-hosts", "--addn-hosts=" + self.hosts, "--local-ttl=0", "--user=root",
                                         "--pid-file=" + os.path.join(tmp, "dnsmasq.pid"), "--log-queries"])
            try:
                self.proc.wait_line(r"started, version")
                break
            except AssertionError:
                self.proc.stop()
                if attempt == 4 or not any("Address already in use" in l for l in self.proc.lines):
                    raise
        self.reads = 1

    def set(self, addresses, reload=True):
        with open(self.hosts, "w") as f:
            f.write("".join("%s %s\n" % (a, NAME) for a in addresses))
        if reload:
            self.proc.signal(signal.SIGHUP)
            self.reads += 1
            # dnsmasq logs each read of the hosts file.
            wait_until(lambda: sum("read " + self.hosts in l for l in self.proc.lines) >= self.reads, 10,
                       "dnsmasq re-read its hosts")

    def stop(self):
        self.proc.stop()


def setUpModule():
    global pb, pbg
    load_stubs(ARGS.source_dir)
    from switchboard.v1 import control_pb2, control_pb2_grpc
    pb, pbg = control_pb2, control_pb2_grpc


class DnsReplicasTest(unittest.TestCase):
    def test_two_then_three_replicas_behind_one_name_all_answer_completely(self):
        tmp = tempfile.mkdtemp(prefix="switchboard-dns-")
        dns = Dns(tmp, ["127.0.0.1", "127.0.0.2"])
        c = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=2, http=False, replica_hosts=["127.0.0.1", "127.0.0.2"],
                    dns_name=NAME, dns_server="127.0.0.1:%d" % dns.port)
        driver = Driver(os.path.join(ARGS.source_dir, "tests/integration/node"))
        channels = []
        try:
            def stub(addr):
                ch = grpc.insecure_channel(addr)
                channels.append(ch)
                return pbg.ControlStub(ch)

            def fleet(s):
                return sorted(g.id for g in s.ListGateways(pb.ListGatewaysRequest(), metadata=API_KEY,
                                                           timeout=5).gateways)

            clients = set()
            for gw in ("gw-1", "gw-2"):
                driver.send(op="centrifuge", name=gw, url=c.ws_url(gw), token=c.token("500"))
                clients.add(driver.wait_event(gw, "connected")["client"])

            def answers_completely(s):
                res = s.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id="500"), metadata=API_KEY,
                                        timeout=2).result
                return res.complete and set(res.connections) == clients

            stubs = [stub(a) for a in c.control_addrs]
            for s in stubs:
                wait_until(lambda: fleet(s) == ["gw-1", "gw-2"], 15, "both gateways on every replica")
                wait_until(lambda: answers_completely(s), 15, "a complete answer from every replica")

            # A third replica appears behind the name: the gateways find it.
            _, addr3 = c.add_control("127.0.0.3")
            dns.set(["127.0.0.1", "127.0.0.2", "127.0.0.3"])
            s3 = stub(addr3)
            wait_until(lambda: fleet(s3) == ["gw-1", "gw-2"], 15, "both gateways attach to the third replica")
            c.wait_ready([addr3])
            self.assertTrue(answers_completely(s3))
            for s in stubs:
                self.assertTrue(answers_completely(s))

            # One leaves the name: the gateways detach from it.
            dns.set(["127.0.0.1", "127.0.0.3"])
            wait_until(lambda: fleet(stubs[1]) == [], 15, "gateways left the replica dropped from DNS")
            self.assertTrue(answers_completely(stubs[0]))
            self.assertTrue(answers_completely(s3))
        finally:
            for ch in channels:
                ch.close()
            driver.stop()
            c.close()
            dns.stop()


if __name__ == "__main__":
    ARGS, argv = parse_args()
    unittest.main(argv=argv, verbosity=2)
