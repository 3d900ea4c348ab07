"""Benchmark: UserConnections with many live sessions in the fleet.

Starts nats-server, control and 2 gateways, opens --sessions idle sessions
(raw Centrifugo JSON over WebSocket, node `ws`) spread over both gateways, then
prints: time to connect them, gateway memory per session (RSS growth / sessions),
and UserConnections latency (median of --calls, CLI) against the ListGateways
reference measured in the same run.

  /usr/bin/python3 tests/bench/many_sessions.py --build-dir build --source-dir . [--sessions 10000]

Not part of the test suite."""
import argparse
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from cluster import Cluster, Proc, wait_until  # noqa: E402


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def median_of(cluster, args):
    out = subprocess.run([cluster.bin("cli/switchboardctl"), "--config", cluster.config] + args,
                         capture_output=True, text=True, timeout=300, check=True)
    return float(re.search(r"median_ms=([\d.]+)", out.stderr).group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--source-dir", default=".")
    ap.add_argument("--sessions", type=int, default=10000)
    ap.add_argument("--users", type=int, default=1000, help="distinct users among the sessions")
    ap.add_argument("--calls", type=int, default=100)
    a = ap.parse_args()
    cluster = Cluster(a.build_dir, a.source_dir, gateways=2, http=False, max_sessions=18000)
    load = None
    try:
        gws = [cluster.gateways["gw-1"], cluster.gateways["gw-2"]]
        before = [rss_kib(p.p.pid) for p, _ in gws]
        tokens = [cluster.token(str(u)) for u in range(a.users)]
        cfg = {"urls": [cluster.ws_url("gw-1"), cluster.ws_url("gw-2")], "tokens": tokens,
               "count": a.sessions, "concurrency": 200}
        load = Proc("load", ["node", os.path.join(os.path.abspath(a.source_dir), "tests/bench/load_clients.js"),
                             json.dumps(cfg)], cwd=os.path.join(a.source_dir, "tests/integration/node"), stdin=True)
        m = load.wait_line(r'^\{"event":"ready".*\}$', timeout=600)
        ready = json.loads(m.group(0))
        after = [rss_kib(p.p.pid) for p, _ in gws]
        per_session = sum(x - y for x, y in zip(after, before)) * 1024 / max(1, ready["connected"])
        print("sessions=%d connected=%d failed=%d connect_time_s=%.1f" %
              (a.sessions, ready["connected"], ready["failed"], ready["ms"] / 1000))
        print("gateway RSS: before %s KiB, after %s KiB, %.0f bytes/session" % (before, after, per_session))
        # User "0" holds sessions/users sessions, half on each gateway.
        for r in range(3):
            uc = median_of(cluster, ["connections", "--user", "0", "--repeat", str(a.calls)])
            ref = median_of(cluster, ["gateways", "--repeat", str(a.calls)])
            print("round %d: UserConnections median=%.3f ms | ListGateways (reference) median=%.3f ms | ratio=%.2f"
                  % (r + 1, uc, ref, uc / ref))
    finally:
        if load:
            load.stop()
        cluster.close()


if __name__ == "__main__":
    main()
