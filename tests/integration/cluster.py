"""Starts a real Switchboard cluster for tests: nats-server, control, gateways
on OS-chosen ports, and the node driver for real client SDKs. Every wait has a
deadline; every process is stopped by its PID."""
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

GOOGLEAPIS = "/usr/share/gocode/src/github.com/grpc-ecosystem/grpc-gateway/third_party/googleapis"


def parse_args():
    """--build-dir and --source-dir for a test module; the rest goes to unittest."""
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--source-dir", required=True)
    args, rest = ap.parse_known_args()
    return args, [sys.argv[0]] + rest


def cpu_seconds(pid):
    """CPU time (user + system) a process has used so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.01)
    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))


class Proc:
    """A child process whose stdout/stderr lines are collected (and copied to
    a log file of its own: processes of the same name, such as each cluster's
    gw-1, do not share one)."""

    _started = itertools.count(1)

    def __init__(self, name, argv, cwd=None, stdin=False, env=None):
        self.name = name
        self.argv = argv
        self.lines = []
        self.cond = threading.Condition()
        self.log = open(os.path.join(tempfile.gettempdir(), "sb-%s-%d-%d.log" % (name, os.getpid(),
                                                                                next(Proc._started))), "w")
        self.p = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, text=True, bufsize=1,
                                  env=None if env is None else dict(os.environ, **env))
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            self.log.write(line)
            self.log.flush()
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait_line(self, regex, timeout=15):
        rx = re.compile(regex)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    m = rx.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or self.p.poll() is not None and not self._pending():
                    raise AssertionError("%s: no line matching %r (exit=%s); log %s" %
                                         (self.name, regex, self.p.poll(), self.log.name))
                self.cond.wait(min(left, 0.2))

    def _pending(self):
        return self.t.is_alive()

    def signal(self, sig):
        if self.p.poll() is None:
            os.kill(self.p.pid, sig)
            if sig == signal.SIGSTOP:
                self.wait_stopped()

    def wait_stopped(self, timeout=10):
        """kill(SIGSTOP) returns before every thread has stopped: on a busy
        machine a thread that its socket woke (a gateway's NATS thread with a
        request in hand) can still run, and answer, for milliseconds. A
        frozen process is one whose every thread is in state T."""
        deadline = time.monotonic() + timeout
        while True:
            states = []
            try:
                for tid in os.listdir("/proc/%d/task" % self.p.pid):
                    with open("/proc/%d/task/%s/stat" % (self.p.pid, tid)) as f:
                        stat = f.read()
                    states.append(stat[stat.rfind(")") + 2])
            except FileNotFoundError:
                continue  # a thread ended while listed: look again
            if states and all(st in "Tt" for st in states):
                return
            if time.monotonic() > deadline:
                raise AssertionError("%s: not stopped %.0f s after SIGSTOP (thread states %s)"
                                     % (self.name, timeout, "".join(states)))
            time.sleep(0.001)

    def stop(self, timeout=20):
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.p.pid, signal.SIGKILL)
                self.p.wait(5)
        self.t.join(5)
        if not self.t.is_alive():
            self.log.close()
            self.p.stdout.close()
            if self.p.stdin:
                self.p.stdin.close()
        return self.p.returncode


class Driver(Proc):
    """The node process that runs real client SDKs."""

    def __init__(self, node_dir, env=None):
        node_dir = os.path.abspath(node_dir)
        super().__init__("driver", ["node", os.path.join(node_dir, "driver.js")], cwd=node_dir, stdin=True, env=env)
        self.wait_line(r'"event":"ready"')

    def send(self, **cmd):
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()

    def events(self, name=None):
        with self.cond:
            out = []
            for line in self.lines:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if name is None or ev.get("name") == name:
                    out.append(ev)
            return out

    def wait_event(self, name, event, timeout=10, **match):
        def find():
            for ev in self.events(name):
                if ev.get("event") == event and all(ev.get(k) == v for k, v in match.items()):
                    return ev
            return None
        return wait_until(find, timeout, "%s %s %s" % (name, event, match))


def control_api(cluster, gateways, metadata):
    """control's gRPC API once `gateways` gateways have attached: the
    control_pb2 module and a ControlStub (load_stubs first)."""
    import grpc
    from switchboard.v1 import control_pb2, control_pb2_grpc
    stub = control_pb2_grpc.ControlStub(grpc.insecure_channel("127.0.0.1:%d" % cluster.control_port))
    wait_until(lambda: len(stub.ListGateways(control_pb2.ListGatewaysRequest(), metadata=metadata,
                                             timeout=5).gateways) == gateways,
               10, "%d gateways attached" % gateways)
    return control_pb2, stub


def load_stubs(source_dir):
    """Generates the Python gRPC stubs into a fresh directory on sys.path, so
    `from switchboard.v1 import control_pb2, ...` works."""
    gen_stubs(source_dir, tempfile.mkdtemp(prefix="switchboard-stubs-"))


def gen_stubs(source_dir, out_dir):
    protos = ["switchboard/v1/%s.proto" % n for n in ("bus", "client", "config", "control", "registry")]
    subprocess.check_call(["protoc", "-I", os.path.join(source_dir, "proto"), "-I", GOOGLEAPIS,
                           "--python_out=" + out_dir, "--grpc_out=" + out_dir,
                           "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin"] + protos)
    subprocess.check_call(["protoc", "-I", GOOGLEAPIS, "--python_out=" + out_dir,
                           "google/api/annotations.proto", "google/api/http.proto"])
    # No __init__.py under google/: it must merge with the system google.protobuf namespace.
    for d in ("switchboard", "switchboard/v1"):
        open(os.path.join(out_dir, d, "__init__.py"), "a").close()
    sys.path.insert(0, out_dir)


def health_stubs():
    """grpc.health.v1 stubs from proto/grpc/health/v1/health.proto, generated
    under a module path of their own (`grpc.health...` would shadow grpcio)."""
    out = tempfile.mkdtemp(prefix="switchboard-health-")
    os.makedirs(os.path.join(out, "sbhealth"))
    shutil.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto", "grpc", "health", "v1",
                             "health.proto"), os.path.join(out, "sbhealth", "health.proto"))
    subprocess.check_call(["protoc", "-I", out, "--python_out=" + out, "--grpc_out=" + out,
                           "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin", "sbhealth/health.proto"])
    open(os.path.join(out, "sbhealth", "__init__.py"), "w").close()
    sys.path.insert(0, out)
    from sbhealth import health_pb2, health_pb2_grpc
    return health_pb2, health_pb2_grpc


CLUSTER_TOKEN = "test-cluster-token-0123456789"
HTTP_PROXY_TOKEN = "test-http-proxy-token-0123456789"
NATS_GATEWAY = ("sb-gateway", "test-nats-gateway-password")
NATS_CONTROL = ("sb-control", "test-nats-control-password")

CONFIG = """
cluster: {cluster}
nats_url: {nats_scheme}://127.0.0.1:{nats_port}
{tls_block}
default_app: demo
apps:
  - {{id: demo, key: demo-key, secret: demo-secret-for-tests}}
  - {{id: other, key: other-key, secret: other-secret-for-tests}}
api_keys: [test-api-key-1234]
api_key_names: [backend-tests]
cluster_token: {cluster_token}
http_proxy_token: {http_proxy_token}
nats_gateway: {{user: {nats_gateway_user}, password: {nats_gateway_password}}}
nats_control: {{user: {nats_control_user}, password: {nats_control_password}}}
control:
  listen: 127.0.0.1:0
  addresses: [{control_addresses}]
  dns_server: "{dns_server}"
  resolve_interval_ms: {resolve}
  default_timeout_ms: 1000
  heartbeat_interval_ms: {heartbeat}
  lease_ms: {lease}
{control_extra}gateway:
  listen_host: 127.0.0.1
  port: 0
  ping_interval_s: {ping}
  pong_timeout_s: {pong}
  connect_timeout_ms: 1500
  max_message_bytes: {max_message_bytes}
  max_sessions: {max_sessions}
  client_expired_close_delay_s: {grace}
{gateway_extra}"""


class Cluster:
    def __init__(self, build_dir, source_dir, gateways=2, ping=25, http=True, max_sessions=1000, controls=1,
                 grace=25, heartbeat_ms=300, lease_ms=1500, gateway_extra=None, replica_hosts=None,
                 dns_name=None, dns_server="", tls=None, pong=2, gateway_bin=None, workers=1, gateway_args=(),
                 resolve_ms=300, nats_extra="", max_message_bytes=4096, control_extra=None, log_format=None):
        """replica_hosts: run one control per loopback address, all on the same
        port, and give gateways `dns_name` (resolved by `dns_server`) instead
        of a static list. nats_extra: more lines for nats-server's config."""
        self.build_dir = os.path.abspath(build_dir)
        self.source_dir = source_dir
        self.tmp = tempfile.mkdtemp(prefix="switchboard-test-")
        self.procs = []
        self.gateways = {}
        self.operator_ports = {}  # gateway ID -> its operator listener (/livez, /readyz with reasons)
        self.ping = ping
        self.max_sessions = max_sessions
        self.max_message_bytes = max_message_bytes
        self.grace = grace
        self.heartbeat_ms = heartbeat_ms
        self.lease_ms = lease_ms
        self.resolve_ms = resolve_ms
        self.gateway_extra = "".join("  %s: %s\n" % kv for kv in (gateway_extra or {}).items())
        self.control_extra = "".join("  %s: %s\n" % kv for kv in (control_extra or {}).items())
        self.dns_name = dns_name
        self.dns_server = dns_server
        self.tls = tls  # {"ca": path, "cert": path, "key": path}: TLS on every link
        self.pong = pong
        self.workers = workers  # event-loop processes per gateway instance
        self.gateway_args = list(gateway_args)  # more flags for every gateway
        # --log_format for every process (None: their default, text).
        self.log_args = ["--log_format", log_format] if log_format else []
        self.gateway_args += self.log_args
        self.gateway_bin = gateway_bin or self.bin("gateway/switchboard-gateway")
        self.cluster = "t%d" % os.getpid()
        # NATS runs with one user per role, its authorization printed by the
        # CLI from the same config the components read.
        self.nats_port = 0
        self.config = os.path.join(self.tmp, "switchboard.yaml")
        self._write_config([0])
        self.nats_conf = os.path.join(self.tmp, "nats.conf")
        with open(self.nats_conf, "w") as f:
            f.write(self.ctl("nats-config") + nats_extra)
        self.nats = self._start("nats", ["nats-server", "-c", self.nats_conf, "-a", "127.0.0.1", "-p", "-1",
                                         "-m", "-1"])
        m = self.nats.wait_line(r"Listening for client connections on [\d.]+:(\d+)")
        self.nats_port = int(m.group(1))
        self.nats_monitor_port = int(self.nats.wait_line(r"Starting http monitor on [\d.]+:(\d+)").group(1))
        self._write_config([0])
        # Replicas: every gateway attaches to each (config control.addresses).
        self.controls = []
        self.control_ports = []
        self.control_addrs = []
        self.control_health_ports = []  # HTTP /livez, /readyz of each replica
        if replica_hosts:
            for host in replica_hosts:
                self.add_control(host)
        else:
            for i in range(controls):
                p = self._start("control" if i == 0 else "control-r%d" % i,
                                [self.bin("control/switchboard-control"), "--config", self.config,
                                 "--health_listen", "127.0.0.1:0"] + self.log_args)
                self.controls.append(p)
                m = p.wait_line(r"READY port=(\d+) health_port=(\d+)")
                self.control_ports.append(int(m.group(1)))
                self.control_health_ports.append(int(m.group(2)))
                self.control_addrs.append("127.0.0.1:%d" % self.control_ports[-1])
        self.control = self.controls[0]
        self.control_port = self.control_ports[0]
        self._write_config(self.control_ports)
        for i in range(gateways):
            self.add_gateway("gw-%d" % (i + 1))
        self.http = None
        self.http_port = None
        if http:
            tls_args = ["--control_ca", self.tls["ca"], "--tls_cert", self.tls["cert"],
                        "--tls_key", self.tls["key"]] if self.tls else []
            self.http = self._start("http", [self.bin("deploy/http-proxy/switchboard-http"), "--listen",
                                             "127.0.0.1:0", "--control", "127.0.0.1:%d" % self.control_port,
                                             "--operator_listen", "127.0.0.1:0"] + tls_args + self.log_args,
                                    env={"SWITCHBOARD_HTTP_PROXY_TOKEN": HTTP_PROXY_TOKEN})
            m = self.http.wait_line(r"READY port=(\d+) control=\S+ operator_port=(\d+)")
            self.http_port = int(m.group(1))
            self.http_operator_port = int(m.group(2))  # /metrics, /livez, /readyz
        self.wait_ready()

    def add_control(self, host):
        """Starts a replica on `host`, on the port of the first replica (the OS
        picks that one)."""
        port = self.control_ports[0] if self.control_ports else 0
        p = self._start("control-%s" % host, [self.bin("control/switchboard-control"), "--config", self.config,
                                               "--listen", "%s:%d" % (host, port), "--health_listen", "%s:0" % host]
                        + self.log_args)
        m = p.wait_line(r"READY port=(\d+) health_port=(\d+)")
        port = int(m.group(1))
        self.control_health_ports.append(int(m.group(2)))
        self.controls.append(p)
        self.control_ports.append(port)
        self.control_addrs.append("%s:%d" % (host, port))
        return p, "%s:%d" % (host, port)

    def wait_ready(self, addrs=None, timeout=15):
        """Waits until every control replica is past its first lease: before
        that it answers complete=false by design."""
        for addr in addrs or self.control_addrs:
            def complete():
                out = subprocess.run([self.bin("cli/switchboardctl"), "--config", self.config, "--control",
                                      addr, "connections", "--user", "readiness-probe"],
                                     capture_output=True, text=True, timeout=20)
                return out.returncode == 0 and json.loads(out.stdout)["result"].get("complete") is True
            wait_until(complete, timeout, "control %s past its first lease" % addr)

    def nats_connections(self):
        """nats-server's client connections, as its monitor lists them (connz)."""
        url = "http://127.0.0.1:%d/connz?limit=1024" % self.nats_monitor_port
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r).get("connections", [])

    def nats_out_msgs(self, conn_name):
        """Messages nats-server has delivered to the named client connection."""
        return sum(c.get("out_msgs", 0) for c in self.nats_connections() if c.get("name") == conn_name)

    def stop_nats(self):
        self.nats.stop()

    def restart_nats(self):
        """Starts nats-server again on the same port (clients reconnect by themselves)."""
        self._restarts = getattr(self, "_restarts", 0) + 1
        self.nats = self._start("nats-%d" % self._restarts,
                                ["nats-server", "-c", self.nats_conf, "-a", "127.0.0.1", "-p", str(self.nats_port),
                                 "-m", "-1"])
        self.nats.wait_line(r"Server is ready")
        self.nats_monitor_port = int(self.nats.wait_line(r"Starting http monitor on [\d.]+:(\d+)").group(1))

    def restart_control(self, while_down=None):
        """Stops control and starts it again on the same port (gateways re-attach
        by themselves); `while_down()` runs in between."""
        self.control.stop()
        if while_down:
            while_down()
        self._restarts = getattr(self, "_restarts", 0) + 1
        self.control = self._start("control-%d" % self._restarts, [
            self.bin("control/switchboard-control"), "--config", self.config,
            "--listen", "127.0.0.1:%d" % self.control_port, "--health_listen", "127.0.0.1:0"])
        m = self.control.wait_line(r"READY port=(\d+) health_port=(\d+)")
        self.control_health_ports[0] = int(m.group(2))
        self.controls[0] = self.control

    def bin(self, rel):
        return os.path.join(self.build_dir, rel)

    def _write_config(self, control_ports):
        if self.dns_name and control_ports and control_ports[0]:
            addresses = "%s:%d" % (self.dns_name, control_ports[0])
        else:
            addresses = ", ".join("127.0.0.1:%d" % p for p in control_ports)
        with open(self.config, "w") as f:
            f.write(CONFIG.format(cluster=self.cluster, nats_port=self.nats_port,
                                  control_addresses=addresses, ping=self.ping, pong=self.pong,
                                  dns_server=self.dns_server,
                                  nats_scheme="tls" if self.tls else "nats",
                                  tls_block=("tls: {ca_file: %(ca)s, cert_file: %(cert)s, key_file: %(key)s}"
                                             % self.tls) if self.tls else "",
                                  max_sessions=self.max_sessions, grace=self.grace,
                                  max_message_bytes=self.max_message_bytes,
                                  cluster_token=CLUSTER_TOKEN, http_proxy_token=HTTP_PROXY_TOKEN,
                                  heartbeat=self.heartbeat_ms, lease=self.lease_ms, resolve=self.resolve_ms,
                                  gateway_extra=self.gateway_extra, control_extra=self.control_extra,
                                  nats_gateway_user=NATS_GATEWAY[0], nats_gateway_password=NATS_GATEWAY[1],
                                  nats_control_user=NATS_CONTROL[0], nats_control_password=NATS_CONTROL[1]))

    def _start(self, name, argv, **kw):
        p = Proc(name, argv, **kw)
        self.procs.append(p)
        return p

    def add_gateway(self, gw_id, args=(), control_addresses=None, env=None):
        """Starts a gateway with more flags (`args`) and, if given, other
        control addresses than the cluster's (a gateway cut from control)."""
        config = self.config
        if control_addresses is not None:
            config = os.path.join(self.tmp, "switchboard-%s.yaml" % gw_id)
            with open(self.config) as f:
                text = re.sub(r"(?m)^  addresses: .*$", "  addresses: [%s]" % ", ".join(control_addresses), f.read())
            with open(config, "w") as f:
                f.write(text)
        p = self._start(gw_id, [self.gateway_bin, "--config", config,
                                "--id", gw_id, "--workers", str(self.workers),
                                "--operator_listen", "127.0.0.1:0"] + self.gateway_args + list(args), env=env)
        m = p.wait_line(r"READY gateway_id=\S+ port=(\d+)(?: operator_port=(\d+))?")
        port = int(m.group(1))
        self.gateways[gw_id] = (p, port)
        self.operator_ports[gw_id] = int(m.group(2) or 0)
        return p, port

    def ws_url(self, gw_id, query=""):
        return "%s://127.0.0.1:%d/connection/websocket%s" % ("wss" if self.tls else "ws", self.gateways[gw_id][1],
                                                             query)

    def ctl(self, *args):
        out = subprocess.run([self.bin("cli/switchboardctl"), "--config", self.config] + list(args),
                             capture_output=True, text=True, timeout=20)
        if out.returncode != 0:
            raise AssertionError("switchboardctl %s failed: %s" % (args, out.stderr))
        return out.stdout

    def token(self, user, app="demo", **kw):
        args = ["gentoken", "--raw", "--user", user, "--app", app]
        for k, v in kw.items():
            args += ["--" + k, v if isinstance(v, str) else json.dumps(v)]
        return self.ctl(*args).strip()

    def close(self):
        """Stops everything; our own binaries that were still running must exit 0
        on SIGTERM (under ASan a leak or a memory error makes that fail)."""
        bad = []
        for p in reversed(self.procs):
            was_running = p.p.poll() is None
            rc = p.stop()
            ours = p.argv[0].startswith(self.build_dir)
            if ours and was_running and rc != 0:
                bad.append("%s exited %s (log %s)" % (p.name, rc, p.log.name))
        shutil.rmtree(self.tmp, ignore_errors=True)
        if bad:
            raise AssertionError("unclean exit: " + "; ".join(bad))


class NatsSession:
    """A bare NATS protocol client (the server's own text protocol), to try
    what a stranger on the bus could do."""

    def __init__(self, port, creds=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.f = self.sock.makefile("rb")
        self.f.readline()  # INFO
        opts = {"verbose": False, "pedantic": False, "name": "intruder", "lang": "python", "version": "0",
                "protocol": 1}
        if creds:
            opts.update(user=creds[0], **{"pass": creds[1]})
        self.sock.sendall(("CONNECT %s\r\nPING\r\n" % json.dumps(opts)).encode())

    def line(self):
        return self.f.readline().decode().strip()

    def send(self, text):
        """Sends one protocol op and returns what the server said before its PONG."""
        return self.send_bytes(text.encode())

    def send_bytes(self, data):
        """As send, for an op whose payload is binary (a PUB of a protobuf)."""
        self.sock.sendall(data + b"\r\nPING\r\n")
        said = []
        while True:
            line = self.line()
            if line in ("PONG", ""):
                return " ".join(said)
            said.append(line)

    def close(self):
        self.f.close()
        self.sock.close()
