#!/usr/bin/env python3
"""Switchboard benchmarks, each with its reference measured in the same run.
Not part of the test suite: they measure, they do not judge. `scripts/bench.sh`
builds everything and calls this.

  bench.py process  [--sessions 19000] [--window 30]
      One gateway process vs the plain lws server (switchboard-lws-reference,
      same Debian lws, same libuv loop): connects per second in buckets of
      1,000 (first, last, overall), CPU ms per 1,000 connects, idle CPU over
      --window seconds, RSS per idle session.
  bench.py latency  [--gateways 2,4,8] [--per-gateway 10000] [--calls 1000]
      UserConnections and TerminateUser (until the last client has its close
      frame) p50/p99 against K gateway processes x N sessions, vs ListGateways
      + a NATS.c scatter-gather with K repliers (switchboard-nats-scatter-ref),
      once in one go each and once in 9 interleaved rounds (median round);
      and, to explain the gap, the same with 300 us of idle before each call.
      First, how often the host takes a CPU away (switchboard-hiccup) and what
      waking a sleeping process costs here (switchboard-wakecost).
  bench.py instance [--workers 2] [--sessions 38000] [--window 30]
      One gateway instance with N workers sharing a port (SO_REUSEPORT):
      sessions held, spread per worker, idle CPU of all workers.
  bench.py fleet    [--gateways 6] [--sessions 102000] [--churn 1000] [--hold 60]
      Many sessions on the box over several gateway processes and load
      generators; UserConnections p50/p99 while the generators churn
      (--churn connects/s in all), sessions lost while held.

Every run starts its own cluster (nats-server with auth, control, gateways) and
stops it. Load comes from switchboard-loadgen (C++, epoll), spread over
127.0.0.x source addresses."""
import argparse
import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from cluster import NATS_CONTROL, Cluster, cpu_seconds, load_stubs  # noqa: E402

SECRET = "demo-secret-for-tests"  # the demo app's secret in cluster.py's config
MAX_PER_GENERATOR = 19000  # descriptors per process are capped at 20,000 here
# The control link's timing as deployed (config defaults): the test cluster's
# fast heartbeats and DNS refreshes (300 ms) are for tests that wait on them.
DEPLOYED_TIMING = {"heartbeat_ms": 1000, "lease_ms": 3000, "resolve_ms": 5000}
# `latency` measures again in this many rounds, UserConnections and its
# reference in turn (the host's speed drifts within a run).
INTERLEAVED_ROUNDS = 9
# `latency` also measures every call after this much idle time (an explanation
# beside the target's back-to-back figures).
PACED_PAUSE_US = 300


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))


class Generator:
    """One switchboard-loadgen process; its JSON lines are collected."""

    def __init__(self, build_dir, args, name="loadgen"):
        self.argv = [os.path.join(build_dir, "tests/bench/switchboard-loadgen")] + args
        self.events = []
        self.closes_by_user = {}  # user -> close events, for waiting on one user's closes without a scan
        self.cond = threading.Condition()
        self.p = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, bufsize=1)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.p.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                self.events.append(ev)
                if ev.get("event") == "close":
                    self.closes_by_user.setdefault(ev.get("user"), []).append(ev)
                self.cond.notify_all()

    def wait(self, event, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for ev in self.events:
                    if ev.get("event") == event:
                        return ev
                left = deadline - time.monotonic()
                if left <= 0 or self.p.poll() is not None and not any(e.get("event") == event for e in self.events):
                    raise AssertionError("loadgen: no %s event within %.0f s (%s)" % (event, timeout, self.argv))
                self.cond.wait(min(left, 0.5))

    def closes(self):
        with self.cond:
            return [e for e in self.events if e.get("event") == "close"]

    def user_closes(self, user):
        with self.cond:
            return list(self.closes_by_user.get(user, []))

    def wait_user_closes(self, user, count, timeout):
        """The first `count` closes of `user`, waiting (on the reader's
        notifications, not by polling) until there are that many."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.closes_by_user.get(user, [])) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("loadgen: %d closes of %s not seen within %.0f s" % (count, user, timeout))
                self.cond.wait(left)
            return list(self.closes_by_user[user][:count])

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
        self.reader.join(timeout=10)  # the last lines, up to EOF
        self.p.stdout.close()
        with self.cond:
            done = [e for e in self.events if e.get("event") == "done"]
        return done[-1] if done else None


def sources(i):
    """Source addresses for generator i: 8 loopback addresses of its own."""
    return "127.0.%d.1-127.0.%d.8" % (i + 1, i + 1)


def measure_process(a, name, pid, target, mode):
    """Connects --sessions to one process, then holds them idle."""
    args = ["--targets", target, "--sources", sources(0), "--sessions", str(a.sessions), "--mode", mode,
            "--concurrency", str(a.concurrency), "--users", "1000", "--secret", SECRET]
    rss0 = rss_kib(pid)
    c0 = cpu_seconds(pid)
    gen = Generator(a.build_dir, args)
    try:
        ready = gen.wait("ready", timeout=900)
        connect_cpu = cpu_seconds(pid) - c0
        time.sleep(a.settle)  # an idle window is what is measured, nothing is waited for
        rss = (rss_kib(pid) - rss0) * 1024.0 / max(1, ready["connected"])
        c1, t1 = cpu_seconds(pid), time.monotonic()
        time.sleep(a.window)
        idle = 100.0 * (cpu_seconds(pid) - c1) / (time.monotonic() - t1)
        done = gen.stop()
    finally:
        gen.stop()
    lost = sum(done["closed_by_server"].values()) if done else -1
    row = {"name": name, "connected": ready["connected"], "failed": ready["failed"],
           "rate_first": ready["rate_first"], "rate_last": ready["rate_last"], "rate_overall": ready["rate_overall"],
           "cpu_ms_per_1000": 1000.0 * connect_cpu / max(1, ready["connected"] / 1000.0),
           "idle_cpu_pct": idle, "rss_bytes_per_session": rss, "lost_while_idle": lost}
    print("%-12s connected %d (failed %d): connects/s first %.0f last %.0f (last/first %.2f) overall %.0f; "
          "%.0f CPU ms per 1,000 connects; idle CPU %.2f%% of a core over %.0f s; RSS %.0f bytes/session; "
          "lost while idle %d" % (name, row["connected"], row["failed"], row["rate_first"], row["rate_last"],
                                  row["rate_last"] / max(1, row["rate_first"]), row["rate_overall"],
                                  row["cpu_ms_per_1000"], idle, a.window, rss, lost), flush=True)
    return row


def cmd_process(a):
    ref = subprocess.Popen([os.path.join(a.build_dir, "tests/bench/switchboard-lws-reference"), "--iface",
                            "127.0.0.1", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(ref.stdout.readline().split()[1])
        r = measure_process(a, "lws plain", ref.pid, "127.0.0.1:%d" % port, "raw")
    finally:
        ref.terminate()
        ref.wait()
    cluster = Cluster(a.build_dir, a.source_dir, gateways=1, http=False, max_sessions=min(19000, a.sessions + 1000), pong=8,
                      gateway_extra={"max_unsigned": a.sessions}, **DEPLOYED_TIMING)
    try:
        gw_pid = cluster.gateways["gw-1"][0].p.pid
        g = measure_process(a, "switchboard", gw_pid, "127.0.0.1:%d" % cluster.gateways["gw-1"][1], "centrifuge")
    finally:
        cluster.close()
    print("ratios (switchboard / lws plain): overall connects/s %.2f, last bucket %.2f, RSS/session %.2f, "
          "idle CPU %.2f" % (g["rate_overall"] / max(1, r["rate_overall"]), g["rate_last"] / max(1, r["rate_last"]),
                             g["rss_bytes_per_session"] / max(1, r["rss_bytes_per_session"]),
                             g["idle_cpu_pct"] / max(0.01, r["idle_cpu_pct"])))


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class CpuMeter:
    """CPU seconds of named processes (and of waited-for children, as
    "client") over a stretch, in microseconds per call."""

    def __init__(self, pids):
        self.pids = pids  # name -> [pid, ...]
        self.start = self.read()

    def read(self):
        out = {name: sum(cpu_seconds(p) for p in pids) for name, pids in self.pids.items()}
        out["client"] = children_cpu()
        return out

    def per_call(self, calls):
        end = self.read()
        return {name: (end[name] - self.start[name]) * 1e6 / calls for name in self.start}


def cpu_text(per_call):
    return ", ".join("%s %.0f" % kv for kv in per_call.items()) + ", total %.0f us" % sum(per_call.values())


def ctl_percentiles(cluster, args):
    out = subprocess.run([cluster.bin("cli/switchboardctl"), "--config", cluster.config] + args,
                         capture_output=True, text=True, timeout=600, check=True)
    m = re.search(r"median_ms=([\d.]+) p90_ms=([\d.]+) p99_ms=([\d.]+)", out.stderr)
    return float(m.group(1)), float(m.group(3))


def start_fleet_load(a, cluster, total, users, extra=(), first_extra=()):
    """Spreads `total` sessions over generators (at most MAX_PER_GENERATOR each),
    every generator connecting to every gateway in turn."""
    targets = ",".join("127.0.0.1:%d" % port for _, port in cluster.gateways.values())
    gens = []
    n = (total + MAX_PER_GENERATOR - 1) // MAX_PER_GENERATOR
    for i in range(n):
        count = total // n + (1 if i < total % n else 0)
        gens.append(Generator(a.build_dir, ["--targets", targets, "--sources", sources(i), "--sessions", str(count),
                                            "--users", str(users), "--user_prefix", "g%du" % i, "--secret", SECRET,
                                            "--concurrency", "100"] + list(extra) + list(first_extra if i == 0 else [])))
    for g in gens:
        ready = g.wait("ready", timeout=1800)
        if ready["failed"]:
            print("warning: %d sessions failed to connect: %s" % (ready["failed"], ready["fail_reasons"]))
    return gens


def scatter_requester(a, url, k, calls, pids, extra):
    """One run of switchboard-nats-scatter-ref (waiting for `k` answers per
    call): its JSON result, plus the CPU per call of the processes in `pids`."""
    meter = CpuMeter(pids)
    out = subprocess.run([os.path.join(a.build_dir, "tests/bench/switchboard-nats-scatter-ref"), "--url", url,
                          "--repliers", str(k), "--calls", str(calls)] + list(extra),
                         capture_output=True, text=True, timeout=600, check=True)
    res = json.loads(out.stdout)
    res["cpu"] = meter.per_call(calls)
    return res


def nats_reference(a, k, calls, processes=False, pause_us=0):
    """The scatter's p50/p99, and its CPU per call (the server, and the
    process(es) holding the requester and the K repliers). With `processes`,
    each replier is a process of its own, as each gateway is; with
    `pause_us`, each round comes after that much idle time."""
    nats = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", "-1"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    ref = os.path.join(a.build_dir, "tests/bench/switchboard-nats-scatter-ref")
    repliers = []
    try:
        port = None
        for line in nats.stdout:
            m = re.search(r"Listening for client connections on [\d.]+:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        url = "nats://127.0.0.1:%d" % port
        pids = {"nats-server": [nats.pid]}
        if processes:
            for _ in range(k):
                r = subprocess.Popen([ref, "--url", url, "--role", "replier"], stdout=subprocess.PIPE, text=True)
                repliers.append(r)
                if r.stdout.readline().strip() != "ready":
                    raise RuntimeError("scatter replier did not start")
            pids["repliers"] = [r.pid for r in repliers]
        return scatter_requester(a, url, k, calls, pids, ["--pause_us", str(pause_us)] +
                                 (["--role", "requester"] if processes else []))
    finally:
        for r in repliers:
            r.kill()
            r.wait()
        nats.terminate()
        nats.wait()


def gateways_scatter(a, cluster, k, calls, user, pids):
    """The NATS.c scatter's requester asking the cluster's own gateways the
    same UserConnections query (a real BusRequest, under control's NATS user,
    replies on an inbox of its own): the fan-out without control and gRPC."""
    from switchboard.v1 import bus_pb2  # generated by load_stubs
    req = bus_pb2.BusRequest(format_version=1, request_id="bench-gateways-scatter")
    req.user_query.app_id = "demo"  # the test cluster's default app
    req.user_query.user_id = user
    payload = os.path.join(cluster.tmp, "bench_bus_request.bin")
    with open(payload, "wb") as f:
        f.write(req.SerializeToString())
    url = "nats://%s:%s@127.0.0.1:%d" % (NATS_CONTROL[0], NATS_CONTROL[1], cluster.nats_port)
    return scatter_requester(a, url, k, calls, pids,
                             ["--role", "requester", "--subject", "switchboard.%s.gateways" % cluster.cluster,
                              "--inbox", "switchboard.%s.replies.bench" % cluster.cluster, "--payload_file", payload])


def terminate_latencies(a, cluster, gens, users_per_gen, sessions_per_user, rounds):
    """TerminateUser for `rounds` users, each until its last session saw the
    close frame (the generators log closes with wall-clock stamps). The calls
    come from the same C++ client as the UserConnections figures
    (`switchboardctl terminate --users_from_stdin`, one user per line, each
    sent only after the previous user's sessions all saw their close)."""
    ctl = subprocess.Popen([cluster.bin("cli/switchboardctl"), "--config", cluster.config, "terminate",
                            "--users_from_stdin", "--timeout_ms", "5000"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def call(user):
        ctl.stdin.write(user + "\n")
        ctl.stdin.flush()
        line = ctl.stdout.readline()
        if not line:
            raise RuntimeError("switchboardctl terminate ended early")
        return json.loads(line)

    try:
        call("bench-warm-up")  # the channel's connection
        ms, rpc, gap, incomplete = [], [], [], 0
        for r in range(rounds):
            gi, u = r % len(gens), r // len(gens)
            user = "g%du%d" % (gi, u)
            before = len(gens[gi].user_closes(user))
            res = call(user)
            if not res["ok"]:
                raise RuntimeError("TerminateUser %s failed" % user)
            if not res["complete"]:
                incomplete += 1
            got = gens[gi].wait_user_closes(user, before + sessions_per_user, 10)
            last_close = (max(c["t_us"] for c in got[before:]) - res["t0_us"]) / 1000.0
            ms.append(last_close)
            rpc.append(res["ms"])
            gap.append(res["ms"] - last_close)  # the answer after (> 0) or before the last close frame
    finally:
        ctl.stdin.close()
        ctl.wait(timeout=10)
    ms.sort()
    rpc.sort()
    gap.sort()
    p99 = lambda v: v[min(len(v) - 1, len(v) * 99 // 100)]  # noqa: E731
    return ms[len(ms) // 2], p99(ms), incomplete, rpc[len(rpc) // 2], p99(rpc), gap[len(gap) // 2]


def host_stalls(a, seconds=5):
    """How often this machine takes a CPU away for a while, measured with
    nothing of ours running (switchboard-hiccup): the floor under the tails."""
    out = subprocess.run([os.path.join(a.build_dir, "tests/bench/switchboard-hiccup"), "--seconds", str(seconds)],
                         capture_output=True, text=True, timeout=seconds + 60, check=True)
    res = json.loads(out.stdout)
    print("host, %g s idle: %s" % (res["seconds"], "; ".join(
        "CPU %d lost the CPU for > 1 ms %d times (> 3 ms %d), longest %.1f ms"
        % (c["cpu"], c["gaps_over_1ms"], c["gaps_over_3ms"], c["max_ms"]) for c in res["per_cpu"])), flush=True)


def host_wakecost(a):
    """What waking a process that sleeps in a read costs on this machine, by
    how long it slept, on another CPU (as the scheduler chooses) and with both
    on one CPU (switchboard-wakecost): the unit a call's hops are paid in."""
    tool = os.path.join(a.build_dir, "tests/bench/switchboard-wakecost")
    args = [tool, "--mode", "processes", "--rounds", "1000", "--sleeps", "0,100,300,1000"]
    rows = {}
    for where, pin in (("as scheduled", None), ("one CPU", {0})):
        out = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True,
                             preexec_fn=(lambda: os.sched_setaffinity(0, pin)) if pin else None)
        rows[where] = json.loads(out.stdout)["rows"]
    print("host wake-up cost, p50 after sleeping %s us: %s" % (
        "/".join(str(r["sleep_us"]) for r in rows["as scheduled"]),
        "; ".join("%s %s us" % (where, "/".join("%.0f" % r["wake_p50_us"] for r in rs)) for where, rs in rows.items())),
        flush=True)


def gateway_metrics(cluster):
    """Every gateway's /metrics page, read once (the helpers below parse it)."""
    import urllib.request
    return [urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
            for port in cluster.operator_ports.values() if port]


def gateway_means(pages):
    """Mean of switchboard_gateway_bus_request_duration_seconds per op over
    every gateway's page, in microseconds."""
    sums, counts = {}, {}
    for text in pages:
        for m in re.finditer(r'^switchboard_gateway_bus_request_duration_seconds_(sum|count)\{op="(\w+)"\} (\S+)$',
                             text, re.M):
            d = sums if m.group(1) == "sum" else counts
            d[m.group(2)] = d.get(m.group(2), 0) + float(m.group(3))
    return {op: sums[op] / counts[op] * 1e6 for op in sorted(counts) if counts[op]}


def send_latencies(a, cluster, k, gens):
    """SendToUser beside UserConnections to the same user (4 sessions over
    the gateways), back to back and in interleaved rounds."""
    n = max(100, a.calls // INTERLEAVED_ROUNDS)
    # Issue "Reach every device": p50 within 1.1x of UserConnections', p99
    # at most 3 ms.
    uc2 = ctl_percentiles(cluster, ["connections", "--user", "g0u1", "--repeat", str(a.calls)])
    sd = ctl_percentiles(cluster, ["send", "--user", "g0u1", "--event", "bench", "--data", '{"n":1}',
                                   "--repeat", str(a.calls)])
    print("K=%d x %d sessions: SendToUser p50 %.3f ms p99 %.3f ms | UserConnections p50 %.3f ms p99 %.3f ms (just "
          "before) | p50 ratio %.2f" % (k, a.per_gateway, sd[0], sd[1], uc2[0], uc2[1], sd[0] / uc2[0]), flush=True)
    # An explanation, not the target: the same call to a user with no
    # session anywhere (every gateway answers from its NATS thread, no
    # loop and no client wakes up): what the call costs without delivering.
    none = ctl_percentiles(cluster, ["send", "--user", "nobody-here", "--event", "bench", "--data", '{"n":1}',
                                     "--repeat", str(a.calls)])
    print("K=%d SendToUser to a user with no session: p50 %.3f ms p99 %.3f ms (ratio to UserConnections p50 %.2f)"
          % (k, none[0], none[1], none[0] / uc2[0]), flush=True)
    # Where a gateway's time goes: a bus request's arrival to its answer
    # handed to NATS, mean per operation over this run's calls.
    print("K=%d gateways' own time per request (arrival to answer handed over, mean): %s" % (k, ", ".join(
        "%s %.0f us" % (op, us) for op, us in gateway_means(gateway_metrics(cluster)).items())), flush=True)
    # Also an explanation: with the client processes stopped (SIGSTOP) for
    # 200 calls (below the outbox bound; the frames wait in the sockets),
    # the CPU their wake-ups take from the call's own path is left out.
    for g in gens:
        g.p.send_signal(signal.SIGSTOP)
    try:
        uc_f = ctl_percentiles(cluster, ["connections", "--user", "g0u1", "--repeat", "200"])
        sd_f = ctl_percentiles(cluster, ["send", "--user", "g0u1", "--event", "bench", "--data", '{"n":1}',
                                         "--repeat", "200"])
    finally:
        for g in gens:
            g.p.send_signal(signal.SIGCONT)
    print("K=%d with the clients stopped (200 calls): SendToUser p50 %.3f ms p99 %.3f ms | UserConnections p50 %.3f "
          "ms | p50 ratio %.2f" % (k, sd_f[0], sd_f[1], uc_f[0], sd_f[0] / uc_f[0]), flush=True)
    # And in rounds, each round both in turn, so the host's drift
    # weighs on both alike; the median round is the figure.
    send_rounds = []
    for _ in range(INTERLEAVED_ROUNDS):
        u = ctl_percentiles(cluster, ["connections", "--user", "g0u1", "--repeat", str(n)])[0]
        s_ = ctl_percentiles(cluster, ["send", "--user", "g0u1", "--event", "bench", "--data", '{"n":1}',
                                       "--repeat", str(n)])[0]
        send_rounds.append((s_ / u, s_, u))
    send_rounds.sort()
    mid = send_rounds[len(send_rounds) // 2]
    print("K=%d interleaved, %d rounds of %d calls each: median round SendToUser p50 %.3f ms | "
          "UserConnections p50 %.3f ms | p50 ratio %.2f (rounds %.2f-%.2f)"
          % (k, INTERLEAVED_ROUNDS, n, mid[1], mid[2], mid[0], send_rounds[0][0], send_rounds[-1][0]),
          flush=True)


def cmd_latency(a):
    load_stubs(a.source_dir)
    host_stalls(a)
    host_wakecost(a)
    for k in [int(x) for x in a.gateways.split(",")]:
        total = k * a.per_gateway
        sessions_per_user = 4
        cluster = Cluster(a.build_dir, a.source_dir, gateways=k, http=False, max_sessions=min(19000, a.per_gateway + 2000),
                          ping=a.ping, pong=8, gateway_extra={"max_unsigned": a.per_gateway}, **DEPLOYED_TIMING)
        gens = []
        try:
            n_gens = (total + MAX_PER_GENERATOR - 1) // MAX_PER_GENERATOR
            users = total // n_gens // sessions_per_user
            gens = start_fleet_load(a, cluster, total, users, extra=["--log_closes"])
            pids = {"nats-server": [cluster.nats.p.pid], "control": [c.p.pid for c in cluster.controls],
                    "gateways": [p.p.pid for p, _ in cluster.gateways.values()]}
            if a.send_only:
                send_latencies(a, cluster, k, gens)
                continue
            meter = CpuMeter(pids)
            uc = ctl_percentiles(cluster, ["connections", "--user", "g0u1", "--repeat", str(a.calls)])
            uc_cpu = meter.per_call(a.calls)
            meter = CpuMeter(pids)
            lg = ctl_percentiles(cluster, ["gateways", "--repeat", str(a.calls)])
            lg_cpu = meter.per_call(a.calls)
            ref = nats_reference(a, k, a.calls)
            ref_p50 = lg[0] + ref["p50_ms"]
            print("K=%d x %d sessions: UserConnections p50 %.3f ms p99 %.3f ms | reference ListGateways p50 %.3f + "
                  "NATS.c scatter K=%d p50 %.3f (p99 %.3f) = %.3f ms | p50 ratio %.2f"
                  % (k, a.per_gateway, uc[0], uc[1], lg[0], k, ref["p50_ms"], ref["p99_ms"], ref_p50,
                     uc[0] / ref_p50), flush=True)
            print("K=%d CPU per call (us): UserConnections: %s | ListGateways: %s | scatter: %s"
                  % (k, cpu_text(uc_cpu), cpu_text(lg_cpu), cpu_text(ref["cpu"])), flush=True)
            # Not the target's reference, an explanation of it: the same
            # scatter with each replier a process of its own, as gateways are.
            refp = nats_reference(a, k, a.calls, processes=True)
            print("K=%d scatter with %d replier processes: p50 %.3f ms (p99 %.3f); ListGateways + it = %.3f ms, "
                  "UserConnections p50 ratio to that %.2f; CPU per call: %s"
                  % (k, k, refp["p50_ms"], refp["p99_ms"], lg[0] + refp["p50_ms"], uc[0] / (lg[0] + refp["p50_ms"]),
                     cpu_text(refp["cpu"])), flush=True)
            # Also an explanation: the same fan-out from a bare NATS.c
            # requester to the real gateways; what UserConnections adds to it
            # is control and gRPC.
            gs = gateways_scatter(a, cluster, k, a.calls, "g0u1",
                                  {"nats-server": pids["nats-server"], "gateways": pids["gateways"]})
            print("K=%d NATS.c scatter to the cluster's own gateways (the same query, control's NATS user): p50 %.3f ms "
                  "(p99 %.3f), missing %d; UserConnections p50 - it = %.3f ms (ListGateways alone %.3f); CPU per call: %s"
                  % (k, gs["p50_ms"], gs["p99_ms"], gs["missing"], uc[0] - gs["p50_ms"], lg[0], cpu_text(gs["cpu"])),
                  flush=True)
            # The same three measurements in rounds, each round UserConnections,
            # ListGateways and the scatter in turn, so that the host's speed
            # drifting during the run (see the hiccup line) weighs on both
            # sides alike; the median round is the figure.
            n = max(100, a.calls // INTERLEAVED_ROUNDS)
            rounds = []
            for _ in range(INTERLEAVED_ROUNDS):
                u = ctl_percentiles(cluster, ["connections", "--user", "g0u1", "--repeat", str(n)])[0]
                lgr = ctl_percentiles(cluster, ["gateways", "--repeat", str(n)])[0]
                r = nats_reference(a, k, n)["p50_ms"]
                rounds.append((u / (lgr + r), u, lgr, r))
            rounds.sort()
            mid = rounds[len(rounds) // 2]
            print("K=%d interleaved, %d rounds of %d calls each: median round UserConnections p50 %.3f ms | "
                  "ListGateways p50 %.3f + scatter p50 %.3f = %.3f ms | p50 ratio %.2f (rounds %.2f-%.2f)"
                  % (k, INTERLEAVED_ROUNDS, n, mid[1], mid[2], mid[3], mid[2] + mid[3], mid[0], rounds[0][0],
                     rounds[-1][0]), flush=True)
            # Also an explanation, not the target: the same three measurements
            # with every call made after PACED_PAUSE_US of idle time instead
            # of back to back. On this VM a thread (and a vCPU) that slept
            # longer wakes dearer; the reference's two tight loops keep their
            # few threads warm, while a UserConnections call passes through
            # six processes that each sleep between their turns.
            pace = ["--pause_us", str(PACED_PAUSE_US)]
            uc_p = ctl_percentiles(cluster, ["connections", "--user", "g0u1", "--repeat", str(a.calls)] + pace)
            lg_p = ctl_percentiles(cluster, ["gateways", "--repeat", str(a.calls)] + pace)
            ref_p = nats_reference(a, k, a.calls, pause_us=PACED_PAUSE_US)
            print("K=%d paced (%d us idle before each call): UserConnections p50 %.3f ms | ListGateways p50 %.3f + "
                  "scatter p50 %.3f = %.3f ms | p50 ratio %.2f"
                  % (k, PACED_PAUSE_US, uc_p[0], lg_p[0], ref_p["p50_ms"], lg_p[0] + ref_p["p50_ms"],
                     uc_p[0] / (lg_p[0] + ref_p["p50_ms"])), flush=True)
            send_latencies(a, cluster, k, gens)
            term = terminate_latencies(a, cluster, gens, users, sessions_per_user, a.terminates)
            print("K=%d x %d sessions: TerminateUser to the last close frame (%d sessions/user, %d users) p50 %.2f ms "
                  "p99 %.2f ms, incomplete answers %d; the call's answer p50 %.2f ms p99 %.2f ms, answer minus last "
                  "close frame p50 %+.2f ms" % (k, a.per_gateway, sessions_per_user, a.terminates, term[0], term[1],
                                                term[2], term[3], term[4], term[5]), flush=True)
        finally:
            for g in gens:
                g.stop()
            cluster.close()


def cmd_fleet(a):
    per_gateway = (a.sessions + a.gateways - 1) // a.gateways
    cluster = Cluster(a.build_dir, a.source_dir, gateways=a.gateways, http=False, max_sessions=min(19000, per_gateway + 2000),
                      pong=8, gateway_extra={"max_unsigned": per_gateway}, **DEPLOYED_TIMING)
    gens = []
    try:
        t0 = time.monotonic()
        n_gens = (a.sessions + MAX_PER_GENERATOR - 1) // MAX_PER_GENERATOR
        gens = start_fleet_load(a, cluster, a.sessions, max(1, a.sessions // n_gens // 4),
                                extra=["--churn", "%.1f" % (a.churn / n_gens), "--report", "10"])
        print("%d sessions on %d gateways connected in %.1f s" % (a.sessions, a.gateways, time.monotonic() - t0),
              flush=True)
        pids = [p.p.pid for p, _ in cluster.gateways.values()]
        c0, t1 = sum(cpu_seconds(p) for p in pids), time.monotonic()
        uc = ctl_percentiles(cluster, ["connections", "--user", "g0u1", "--repeat", str(a.calls)])
        print("UserConnections under %.0f connects/s churn: p50 %.3f ms p99 %.3f ms" % (a.churn, uc[0], uc[1]),
              flush=True)
        left = a.hold - (time.monotonic() - t1)
        if left > 0:
            time.sleep(left)  # holding the sessions is the measurement
        cpu = 100.0 * (sum(cpu_seconds(p) for p in pids) - c0) / (time.monotonic() - t1)
        lost, churned, reconnect = 0, 0, []
        for g in gens:
            done = g.stop()
            lost += sum(done["closed_by_server"].values())
            churned += done["churned"]
            reconnect.append(done["reconnect_p99_ms"])
        print("held %.0f s: gateways' CPU %.1f%% of a core in all; sessions closed by a gateway %d; churned %d; "
              "reconnect p99 (worst generator) %.1f ms" % (time.monotonic() - t1, cpu, lost, churned,
                                                            max(reconnect or [0])))
    finally:
        for g in gens:
            g.stop()
        cluster.close()


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def last_status(g):
    with g.cond:
        for ev in reversed(g.events):
            if ev.get("event") in ("status", "ready"):
                return ev
    return {}


def histogram_buckets(pages, name, labels):
    """A Prometheus histogram's cumulative buckets summed over several
    /metrics pages."""
    buckets = {}
    for text in pages:
        for line in text.splitlines():
            if not line.startswith(name + "_bucket{") or labels not in line:
                continue
            le = re.search(r'le="([^"]+)"', line).group(1)
            buckets[float(le)] = buckets.get(float(le), 0) + float(line.rsplit(" ", 1)[1])
    return buckets


def histogram_quantiles(pages, name, labels, qs=(0.5, 0.99), since=None):
    """The quantiles (upper bucket bounds, ms) of a Prometheus histogram
    summed over several /metrics pages, counting only what came after the
    `since` buckets: where the time of a call goes."""
    buckets = histogram_buckets(pages, name, labels)
    for b, v in (since or {}).items():
        buckets[b] = buckets.get(b, 0) - v
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0
    out = []
    for q in qs:
        b = next((b for b in bounds if total and buckets[b] >= q * total), float("nan"))
        out.append(b * 1000)
    return total, out


def cmd_storm(a):
    """SendToUser at a fixed rate to random users over a held fleet: every
    message counted at the clients' sockets (exactly once: pushes counted ==
    sessions the answers say it was handed to, no duplicate per session),
    call-to-socket latency, call latency, gateway memory during the storm."""
    k = int(a.gateways or 4)
    total = k * a.per_gateway
    cluster = Cluster(a.build_dir, a.source_dir, gateways=k, http=False, max_sessions=min(19000, a.per_gateway + 2000),
                      ping=a.ping, pong=8, gateway_extra={"max_unsigned": a.per_gateway}, **DEPLOYED_TIMING)
    gens = []
    try:
        n_gens = (total + MAX_PER_GENERATOR - 1) // MAX_PER_GENERATOR
        users = max(1, total // n_gens // 4)
        # --slow N: generator 0's first N sessions stop reading (users
        # g0u0..), and --hot-share of the calls go to g0u0 (one slow device
        # among its four).
        gens = start_fleet_load(a, cluster, total, users, extra=["--report", "1"], first_extra=["--slow", str(a.slow)])
        gw_pids = [p.p.pid for p, _ in cluster.gateways.values()]
        rss0 = sum(rss_bytes(p) for p in gw_pids)
        peak = [rss0]
        stop = threading.Event()

        def sample():
            while not stop.wait(0.5):
                peak[0] = max(peak[0], sum(rss_bytes(p) for p in gw_pids))
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        pids = {"nats-server": [cluster.nats.p.pid], "control": [c.p.pid for c in cluster.controls],
                "gateways": gw_pids}
        meter = CpuMeter(pids)
        lag0 = histogram_buckets(gateway_metrics(cluster), "switchboard_gateway_loop_lag_seconds", "")
        out = subprocess.run([os.path.join(a.build_dir, "tests/bench/switchboard-send-storm"), "--config",
                              cluster.config, "--rate", str(a.rate), "--seconds", str(a.hold), "--users", str(users),
                              "--user_prefixes", ",".join("g%du" % i for i in range(n_gens)),
                              "--hot_user", "g0u0", "--hot_share", str(a.hot_share), "--pad", str(a.pad)],
                             capture_output=True, text=True, timeout=a.hold + 600, check=True)
        storm = json.loads(out.stdout)
        cpu = meter.per_call(max(1, storm["calls"]))
        stop.set()
        sampler.join()
        # The answers can come back before the clients have read the frames:
        # wait (bounded) until the clients' counts stop moving.
        deadline, last, still = time.monotonic() + 30, -1, 0
        while time.monotonic() < deadline:
            counted = sum(last_status(g).get("pushes", 0) for g in gens)
            if counted >= storm["delivered"] or counted == last:
                still += 1
                if still >= 3:
                    break
            else:
                still = 0
            last = counted
            time.sleep(1)
        rss1 = sum(rss_bytes(p) for p in gw_pids)
        done = [g.stop() for g in gens]
        pushes = sum(d["pushes"] for d in done)
        dups = sum(d["push_duplicates"] for d in done)
        closed = sum(sum(d["closed_by_server"].values()) for d in done)
        print("storm, K=%d x %d sessions (%d users): %d SendToUser calls in %.0f s (asked %.0f/s, achieved %.0f/s, "
              "%d skipped as behind); answers %s, incomplete %d; call p50 %.3f ms p99 %.3f ms max %.1f ms"
              % (k, a.per_gateway, users * n_gens, storm["calls"], a.hold, a.rate, storm["rate_achieved"],
                 storm["skipped_behind"], storm["by_status"], storm["incomplete"], storm["p50_ms"], storm["p99_ms"],
                 storm["max_ms"]), flush=True)
        # Every generator's latencies as one distribution (100-us buckets).
        hist = [0] * 501
        for d in done:
            for i, n in enumerate(d.get("push_hist_100us", [])):
                hist[i] += n

        def merged(q):
            need, seen = q * sum(hist), 0
            for i, n in enumerate(hist):
                seen += n
                if n and seen >= need:
                    return (i + 1) / 10.0
            return float("nan")
        print("storm: sessions handed the message (sum of answers) %d, received at the clients %d, duplicates %d, "
              "not delivered %s, sessions closed by a gateway %d; call to client socket, all generators: p50 <= %.1f "
              "ms p99 <= %.1f ms (100-us buckets); worst generator p50 %.3f ms p99 %.3f ms max %.1f ms"
              % (storm["delivered"], pushes, dups, storm["not_delivered"], closed, merged(0.5), merged(0.99),
                 max(d["push_p50_ms"] for d in done), max(d["push_p99_ms"] for d in done),
                 max(d["push_max_ms"] for d in done)), flush=True)
        print("storm: gateways' RSS %.1f MB before, %.1f MB peak, %.1f MB after; CPU per call: %s"
              % (rss0 / 1e6, peak[0] / 1e6, rss1 / 1e6, cpu_text(cpu)), flush=True)
        # Where the time goes: the gateways' own share (a send's arrival on
        # the bus to its answer handed to NATS) and their loops' lateness.
        pages = gateway_metrics(cluster)
        n, (s50, s99) = histogram_quantiles(pages, "switchboard_gateway_bus_request_duration_seconds", 'op="send"')
        _, (l50, l99) = histogram_quantiles(pages, "switchboard_gateway_loop_lag_seconds", "", since=lag0)
        print("storm: gateways' handling of a send (bus arrival to answer handed over, %d answers) p50 <= %.2f ms "
              "p99 <= %.2f ms (bucket bounds); loop lag during the storm p50 <= %.1f ms p99 <= %.1f ms" % (n, s50, s99, l50, l99),
              flush=True)
    finally:
        for g in gens:
            g.stop()
        cluster.close()


def cmd_instance(a):
    """One gateway instance with --workers N on one port: how many sessions
    it holds, how the kernel spread them, idle CPU of all its workers."""
    per_worker = min(19000, (a.sessions + a.workers - 1) // a.workers + 500)
    cluster = Cluster(a.build_dir, a.source_dir, gateways=1, http=False, max_sessions=per_worker, pong=8,
                      workers=a.workers, gateway_extra={"max_unsigned": per_worker}, **DEPLOYED_TIMING)
    gens = []
    try:
        sup, port = cluster.gateways["gw-1"]
        t0 = time.monotonic()
        n = (a.sessions + MAX_PER_GENERATOR - 1) // MAX_PER_GENERATOR
        for i in range(n):
            count = a.sessions // n + (1 if i < a.sessions % n else 0)
            gens.append(Generator(a.build_dir, ["--targets", "127.0.0.1:%d" % port, "--sources", sources(i),
                                                "--sessions", str(count), "--users", "1000", "--user_prefix",
                                                "i%du" % i, "--secret", SECRET, "--retries", "5"]))
        ready = [g.wait("ready", timeout=900) for g in gens]
        connected = sum(r["connected"] for r in ready)
        print("instance with %d workers: %d of %d sessions connected in %.1f s (%d retried after a full worker, "
              "%d failed)" % (a.workers, connected, a.sessions, time.monotonic() - t0,
                              sum(r["retried"] for r in ready), sum(r["failed"] for r in ready)), flush=True)
        members = json.loads(cluster.ctl("gateways")).get("gateways", [])
        print("per worker: " + ", ".join("%s %d" % (m["id"], m.get("sessions", 0)) for m in members), flush=True)
        with open("/proc/%d/task/%d/children" % (sup.p.pid, sup.p.pid)) as f:
            pids = [int(x) for x in f.read().split()]
        time.sleep(a.settle)  # an idle window is what is measured
        c0, t1 = sum(cpu_seconds(p) for p in pids), time.monotonic()
        time.sleep(a.window)
        idle = 100.0 * (sum(cpu_seconds(p) for p in pids) - c0) / (time.monotonic() - t1)
        lost = 0
        for g in gens:
            done = g.stop()
            lost += sum(done["closed_by_server"].values())
        print("idle CPU of all workers %.2f%% of a core over %.0f s; sessions closed by the gateway %d"
              % (idle, a.window, lost))
    finally:
        for g in gens:
            g.stop()
        cluster.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["process", "latency", "fleet", "instance", "storm"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--source-dir", default=".")
    ap.add_argument("--sessions", type=int, default=0)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--window", type=float, default=30)
    ap.add_argument("--settle", type=float, default=5)
    ap.add_argument("--gateways", default="")
    ap.add_argument("--per-gateway", type=int, default=10000)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--terminates", type=int, default=200)
    ap.add_argument("--churn", type=float, default=1000)
    ap.add_argument("--hold", type=float, default=60)
    ap.add_argument("--rate", type=float, default=2000, help="storm: SendToUser calls per second")
    ap.add_argument("--slow", type=int, default=0, help="storm: sessions that stop reading (users g0u0..)")
    ap.add_argument("--hot-share", type=float, default=0, help="storm: share of the calls to g0u0")
    ap.add_argument("--pad", type=int, default=0, help="storm: padding bytes per message")
    ap.add_argument("--ping", type=int, default=25, help="storm, latency: the gateways' ping interval (s)")
    ap.add_argument("--send-only", action="store_true", help="latency: only SendToUser beside UserConnections")
    a = ap.parse_args()
    a.build_dir = os.path.abspath(a.build_dir)
    if a.command == "process":
        a.sessions = a.sessions or 19000
        cmd_process(a)
    elif a.command == "instance":
        a.sessions = a.sessions or 38000
        cmd_instance(a)
    elif a.command == "storm":
        cmd_storm(a)
    elif a.command == "latency":
        a.gateways = a.gateways or "2,4,8"
        cmd_latency(a)
    else:
        a.sessions = a.sessions or 102000
        a.gateways = int(a.gateways or 6)
        cmd_fleet(a)


if __name__ == "__main__":
    main()
