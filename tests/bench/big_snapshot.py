#!/usr/bin/env python3
"""A gateway holding 19,000 sessions with 1 KB of meta each (a ~21 MB
snapshot, five times gRPC's 4 MiB message limit) re-attaches to a restarted
control: prints how long until control counts every session again, and how
long a UserConnections for a user with --fat sessions takes.
    python3 tests/bench/big_snapshot.py --build-dir build --source-dir ."""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from cluster import Cluster, Proc, wait_until  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--source-dir", default=".")
    ap.add_argument("--sessions", type=int, default=19000)
    ap.add_argument("--meta-bytes", type=int, default=1024)
    a = ap.parse_args()
    # Production ping/pong (25 s / 8 s): a loop busy with 19k connects must not
    # drop healthy clients for a late pong (the test default of 2 s would).
    cluster = Cluster(a.build_dir, a.source_dir, gateways=1, http=False, max_sessions=a.sessions, pong=8)
    load = None
    try:
        tokens = [cluster.token("u%d" % u, meta={"blob": "m" * a.meta_bytes}) for u in range(10)]
        cfg = {"urls": [cluster.ws_url("gw-1")], "tokens": tokens, "count": a.sessions, "concurrency": 200}
        load = Proc("load", ["node", os.path.join(os.path.abspath(a.source_dir), "tests/bench/load_clients.js"),
                             json.dumps(cfg)], cwd=os.path.join(a.source_dir, "tests/integration/node"), stdin=True)
        ready = json.loads(load.wait_line(r'^(\{"event":"ready".*\})$', timeout=600).group(1))
        print("sessions=%d connected=%d failed=%d connect_time_s=%.1f" %
              (a.sessions, ready["connected"], ready["failed"], ready["ms"] / 1000))

        seen = []

        def counted():
            # Control's count (snapshot + deltas) against the gateway's own
            # (its heartbeat's connections).
            out = json.loads(cluster.ctl("gateways"))
            seen[:] = [(g.get("sessions", 0), g.get("connections", 0)) for g in out.get("gateways", [])]
            return seen == [(ready["connected"], ready["connected"])]
        try:
            wait_until(counted, 60, "all sessions counted")
        except AssertionError:
            print("control counts (sessions, connections) %s" % seen)
            raise
        t0 = time.monotonic()
        cluster.restart_control()
        wait_until(counted, 120, "all sessions counted after the restart")
        print("control restart -> gateway re-attached with all %d sessions in %.2f s (snapshot ~%.1f MB)" %
              (ready["connected"], time.monotonic() - t0, ready["connected"] * (a.meta_bytes + 180) / 1e6))
        cluster.wait_ready()
        for _ in range(3):
            t0 = time.monotonic()
            out = json.loads(cluster.ctl("connections", "--user", "u0", "--timeout_ms", "5000"))
            print("UserConnections for a user with %d sessions (~%.1f MB answer): %.1f ms, complete=%s %s" %
                  (len(out["result"]["connections"]), len(out["result"]["connections"]) * (a.meta_bytes + 180) / 1e6,
                   (time.monotonic() - t0) * 1000, out["result"].get("complete", False),
                   out["result"].get("incomplete_reason", "")))
    finally:
        if load:
            load.stop()
        cluster.close()


if __name__ == "__main__":
    main()
