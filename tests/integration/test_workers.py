"""One gateway instance on several event-loop processes (`--workers N`): every
worker is a fleet member "<id>-w<i>" on the same port (SO_REUSEPORT), the
kernel spreads connections over them, answers cover all of them, a killed
worker is started again by the supervisor and rejoins, and SIGTERM drains
every worker (each client gets 3001) before the instance exits 0."""
import json
import os
import signal
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Cluster, parse_args, wait_until  # noqa: E402

ARGS, UNITTEST_ARGV = parse_args()
sys.path.insert(0, os.path.join(ARGS.source_dir, "tests", "bench"))
from bench import Generator, SECRET  # noqa: E402


def children(pid):
    out = []
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
            out += [int(x) for x in f.read().split()]
    return out


class Workers(unittest.TestCase):
    def setUp(self):
        self.cluster = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=1, http=False, workers=2, max_sessions=2000)
        self.sup, self.port = self.cluster.gateways["gw-1"]
        self.gens = []

    def tearDown(self):
        for g in self.gens:
            g.stop()
        self.cluster.close()

    def members(self):
        return {g["id"]: g for g in json.loads(self.cluster.ctl("gateways")).get("gateways", [])}

    def load(self, sessions, prefix, extra=()):
        gen = Generator(ARGS.build_dir, ["--targets", "127.0.0.1:%d" % self.port, "--sources", "127.0.8.1-127.0.8.8",
                                         "--sessions", str(sessions), "--users", "10", "--user_prefix", prefix,
                                         "--secret", SECRET, "--log_closes"] + list(extra))
        self.gens.append(gen)
        ready = gen.wait("ready", timeout=60)
        self.assertEqual((ready["connected"], ready["failed"]), (sessions, 0), ready)
        return gen

    def test_workers_share_the_port_and_answer_as_one_instance(self):
        self.assertEqual(set(self.members()), {"gw-1-w0", "gw-1-w1"})
        self.load(600, "a")
        members = wait_until(lambda: (lambda m: m if sum(g.get("sessions", 0) for g in m.values()) == 600 else None)(
            self.members()), 10, "600 sessions counted by the fleet")
        for gid, g in members.items():
            self.assertEqual(g["address"], "127.0.0.1:%d" % self.port)
            self.assertGreater(g.get("sessions", 0), 100, "the kernel gave %s almost nothing: %s" % (gid, members))
        res = json.loads(self.cluster.ctl("connections", "--user", "a3"))["result"]
        self.assertTrue(res["complete"], res)
        self.assertEqual(len(res["connections"]), 60)
        self.assertEqual(set(res["gateways_answered"]), {"gw-1-w0", "gw-1-w1"})

    def test_dead_worker_is_restarted_and_rejoins(self):
        gen = self.load(200, "b")
        before = self.members()
        pids = children(self.sup.p.pid)
        self.assertEqual(len(pids), 2)
        os.kill(pids[0], signal.SIGKILL)
        # Its clients lose the socket; the supervisor starts a new worker with
        # the same ID, which attaches again.
        wait_until(lambda: set(children(self.sup.p.pid)) - set(pids), 10, "a new worker process")

        def rejoined():
            m = self.members()
            return len(m) == 2 and any(m[g]["started_at"] != before[g]["started_at"] for g in m)
        wait_until(rejoined, 15, "the restarted worker back in the fleet")
        self.load(100, "c")  # both workers accept again
        res = json.loads(self.cluster.ctl("connections", "--user", "c1"))["result"]
        self.assertTrue(res["complete"], res)
        self.assertEqual(len(res["connections"]), 10)
        self.assertIsNone(self.sup.p.poll())
        lost = [c for c in gen.closes()]
        self.assertTrue(all(c["code"] == -1 for c in lost), lost)  # a killed process sends no close frame

    def test_sigterm_drains_every_worker(self):
        gen = self.load(300, "d")
        self.sup.signal(signal.SIGTERM)
        wait_until(lambda: len(gen.closes()) == 300, 20, "every client closed")
        self.assertEqual({c["code"] for c in gen.closes()}, {3001})
        self.assertEqual(self.sup.p.wait(timeout=30), 0)


if __name__ == "__main__":
    unittest.main(argv=UNITTEST_ARGV, verbosity=2)
