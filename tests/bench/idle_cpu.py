#!/usr/bin/env python3
"""Idle CPU and resident memory per session of one gateway process holding N
authenticated sessions that only answer pings (25 s ping, production
settings), sampled from /proc over a window. With --reference-bin, the same measurement for another gateway
binary in the same run (e.g. the previous commit's).
    python3 tests/bench/idle_cpu.py --build-dir build --source-dir . --sessions 10000 [--reference-bin OLD]"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from cluster import Cluster, Proc  # noqa: E402
from bench import cpu_seconds, rss_kib  # noqa: E402


def measure(a, gateway_bin):
    cluster = Cluster(a.build_dir, a.source_dir, gateways=1, http=False, max_sessions=max(a.sessions, 1000), pong=8,
                      gateway_bin=gateway_bin)
    load = None
    try:
        pid = cluster.gateways["gw-1"][0].p.pid
        rss0 = rss_kib(pid)
        tokens = [cluster.token("u%d" % u) for u in range(100)]
        cfg = {"urls": [cluster.ws_url("gw-1")], "tokens": tokens, "count": a.sessions, "concurrency": 200}
        load = Proc("load", ["node", os.path.join(os.path.abspath(a.source_dir), "tests/bench/load_clients.js"),
                             json.dumps(cfg)], cwd=os.path.join(a.source_dir, "tests/integration/node"), stdin=True)
        ready = json.loads(load.wait_line(r'^(\{"event":"ready".*\})$', timeout=600).group(1))
        time.sleep(a.settle)  # measuring an idle window, not waiting for anything
        per_session = (rss_kib(pid) - rss0) * 1024.0 / max(1, ready["connected"])
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(a.window)
        c1, t1 = cpu_seconds(pid), time.monotonic()
        return ready, 100.0 * (c1 - c0) / (t1 - t0), per_session
    finally:
        if load:
            load.stop()
        cluster.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--source-dir", default=".")
    ap.add_argument("--sessions", type=int, default=10000)
    ap.add_argument("--window", type=float, default=30.0)
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--reference-bin", default="")
    a = ap.parse_args()
    runs = [("this build", None)]
    if a.reference_bin:
        runs.insert(0, ("reference", os.path.abspath(a.reference_bin)))
    for name, binary in runs:
        ready, pct, per_session = measure(a, binary)
        print("%-10s sessions=%d (connected %d in %.1f s): idle CPU %.1f%% of a core over %.0f s, "
              "RSS %.0f bytes/session" % (name, a.sessions, ready["connected"], ready["ms"] / 1000, pct, a.window,
                                          per_session))


if __name__ == "__main__":
    main()
