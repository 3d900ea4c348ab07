"""Benchmark: latency of one UserConnections call across 2 gateways, with the
CLI (`switchboardctl connections --repeat N`), against a reference measured in
the same run: ListGateways (`switchboardctl gateways --repeat N`), one control
round trip without the NATS fan-out. Prints medians and the ratio.

  /usr/bin/python3 tests/bench/user_connections.py --build-dir build --source-dir . [--sessions 200] [--calls 100]

Not part of the test suite (it measures, it does not judge)."""
import argparse
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from cluster import Cluster, Driver  # noqa: E402


def median_of(cluster, args):
    out = subprocess.run([cluster.bin("cli/switchboardctl"), "--config", cluster.config] + args,
                         capture_output=True, text=True, timeout=120, check=True)
    m = re.search(r"median_ms=([\d.]+) p90_ms=([\d.]+) p99_ms=([\d.]+)", out.stderr)
    return tuple(float(x) for x in m.groups())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--source-dir", default=".")
    ap.add_argument("--sessions", type=int, default=200, help="idle sessions spread over both gateways")
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    cluster = Cluster(a.build_dir, a.source_dir, gateways=2, http=False)
    driver = Driver(os.path.join(a.source_dir, "tests/integration/node"))
    try:
        for i in range(a.sessions):
            gw = "gw-%d" % (i % 2 + 1)
            # User 42 holds 2 sessions (one per gateway); the rest belong to others.
            user = "42" if i < 2 else "u%d" % i
            driver.send(op="centrifuge", name="b%d" % i, url=cluster.ws_url(gw), token=cluster.token(user))
        for i in range(a.sessions):
            driver.wait_event("b%d" % i, "connected", timeout=60)
        print("sessions=%d gateways=2 calls=%d" % (a.sessions, a.calls))
        for r in range(a.rounds):
            uc = median_of(cluster, ["connections", "--user", "42", "--repeat", str(a.calls)])
            ref = median_of(cluster, ["gateways", "--repeat", str(a.calls)])
            print("round %d: UserConnections median=%.3f ms p90=%.3f p99=%.3f | ListGateways (reference) "
                  "median=%.3f ms | ratio=%.2f" % (r + 1, uc[0], uc[1], uc[2], ref[0], uc[0] / ref[0]))
    finally:
        driver.stop()
        cluster.close()


if __name__ == "__main__":
    main()
