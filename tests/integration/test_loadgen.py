"""Smoke run of the benchmark tools (tests/bench): switchboard-loadgen opens
real sessions on a real gateway from several source addresses, answers pings,
sees the close frames a TerminateUser sends and churns sessions; the plain lws
reference server counts connects in raw mode; the NATS.c scatter-gather
reference gets all its answers. Small numbers: this checks the tools work, the
benchmarks themselves (tests/bench/bench.py) are not part of the suite."""
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Cluster, parse_args, wait_until  # noqa: E402

ARGS, UNITTEST_ARGV = parse_args()
sys.path.insert(0, os.path.join(ARGS.source_dir, "tests", "bench"))
from bench import Generator, SECRET  # noqa: E402


class LoadGenSmoke(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # Pings every second so the generator must answer several in the run.
        cls.cluster = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=2, http=False, ping=1, pong=2)

    @classmethod
    def tearDownClass(cls):
        cls.cluster.close()

    def targets(self):
        return ",".join("127.0.0.1:%d" % port for _, port in self.cluster.gateways.values())

    def test_sessions_pings_terminate_and_churn(self):
        gen = Generator(ARGS.build_dir, ["--targets", self.targets(), "--sources", "127.0.9.1-127.0.9.4",
                                         "--sessions", "400", "--users", "40", "--user_prefix", "lg",
                                         "--secret", SECRET, "--log_closes", "--report", "0.5"])
        try:
            ready = gen.wait("ready", timeout=60)
            self.assertEqual((ready["connected"], ready["failed"]), (400, 0), ready)
            # Buckets of 1,000 only come with more sessions; the rates are there.
            self.assertGreater(ready["rate_overall"], 0)
            counts = json.loads(self.cluster.ctl("connections", "--user", "lg7"))["result"]
            self.assertTrue(counts["complete"])
            self.assertEqual(len(counts["connections"]), 10)  # sessions 7, 47, ..., 387
            # Pings answered: nobody is dropped for a missing pong over 3+ pings.
            wait_until(lambda: any(e.get("event") == "status" and e["pings"] >= 1200 for e in gen.events), 20,
                       "every session answered three pings")
            # The benchmark's way: users one per line, a JSON line per call.
            ctl = subprocess.Popen([self.cluster.bin("cli/switchboardctl"), "--config", self.cluster.config,
                                    "terminate", "--users_from_stdin"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
            out, _ = ctl.communicate("lg7\n", timeout=20)
            self.assertEqual(ctl.returncode, 0)
            res = json.loads(out)
            self.assertEqual((res["user"], res["ok"], res["closed"], res["complete"]), ("lg7", True, 10, True), res)
            self.assertGreater(res["t0_us"], 0)
            closes = wait_until(lambda: [c for c in gen.closes() if c["user"] == "lg7"] if len(
                [c for c in gen.closes() if c["user"] == "lg7"]) == 10 else None, 10, "10 close frames for lg7")
            self.assertEqual({c["code"] for c in closes}, {3503})
            self.assertEqual(len(gen.closes()), 10)  # nobody else closed
        finally:
            done = gen.stop()
        self.assertEqual(done["open"], 390)
        self.assertEqual(done["closed_by_server"], {"3503": 10})

    def test_churn_reopens_sessions(self):
        gen = Generator(ARGS.build_dir, ["--targets", self.targets(), "--sources", "127.0.9.5", "--sessions", "100",
                                         "--users", "10", "--user_prefix", "ch", "--secret", SECRET,
                                         "--churn", "200", "--report", "0.2"])
        try:
            gen.wait("ready", timeout=60)
            status = wait_until(lambda: next((e for e in reversed(gen.events) if e.get("event") == "status"
                                              and e["churned"] >= 200), None), 20, "200 sessions churned")
            self.assertGreater(status["reconnect_p50_ms"], 0)
        finally:
            done = gen.stop()
        self.assertEqual(done["closed_by_server"], {})
        self.assertEqual(done["failed"], 0)
        self.assertGreaterEqual(done["open"], 90)  # a few may be reconnecting at the stop

    def test_bad_token_counts_as_failed(self):
        gen = Generator(ARGS.build_dir, ["--targets", self.targets(), "--sessions", "20", "--secret", "wrong-secret",
                                         "--hold", "0.1"])
        ready = gen.wait("ready", timeout=30)
        gen.stop()
        self.assertEqual((ready["connected"], ready["failed"]), (0, 20))

    def test_plain_lws_reference(self):
        ref = subprocess.Popen([os.path.join(ARGS.build_dir, "tests/bench/switchboard-lws-reference"), "--port", "0"],
                               stdout=subprocess.PIPE, text=True)
        try:
            port = int(ref.stdout.readline().split()[1])
            gen = Generator(ARGS.build_dir, ["--mode", "raw", "--targets", "127.0.0.1:%d" % port,
                                             "--sources", "127.0.9.6-127.0.9.7", "--sessions", "1500", "--hold", "0.1"])
            ready = gen.wait("ready", timeout=60)
            gen.stop()
            self.assertEqual((ready["connected"], ready["failed"]), (1500, 0))
            self.assertGreater(ready["rate_first"], 0)  # one bucket of 1,000
        finally:
            ref.terminate()
            self.assertEqual(ref.wait(timeout=10), 0)
            ref.stdout.close()

    def test_nats_scatter_reference(self):
        out = subprocess.run([os.path.join(ARGS.build_dir, "tests/bench/switchboard-nats-scatter-ref"), "--url",
                              "nats://127.0.0.1:%d" % self.cluster.nats_port, "--repliers", "3", "--calls", "50"],
                             capture_output=True, text=True, timeout=60)
        # The cluster's NATS requires a user: the reference must say so, not hang.
        self.assertNotEqual(out.returncode, 0)
        nats = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", "-1"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            port = None
            for line in nats.stdout:
                if "Listening for client connections on" in line:
                    port = int(line.rsplit(":", 1)[1])
                    break
            out = subprocess.run([os.path.join(ARGS.build_dir, "tests/bench/switchboard-nats-scatter-ref"), "--url",
                                  "nats://127.0.0.1:%d" % port, "--repliers", "3", "--calls", "50"],
                                 capture_output=True, text=True, timeout=60, check=True)
            res = json.loads(out.stdout)
            self.assertEqual((res["repliers"], res["calls"], res["missing"]), (3, 50, 0))
        finally:
            nats.terminate()
            nats.wait()
            nats.stdout.close()


if __name__ == "__main__":
    unittest.main(argv=UNITTEST_ARGV)
