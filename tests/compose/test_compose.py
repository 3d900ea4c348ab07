#!/usr/bin/env python3
"""deploy/compose, the way to try Switchboard without Debian: Debian's
podman-compose starts compose.yaml (nats-server, control, two gateways,
switchboard-http) on the images deploy/images/build.sh built offline, and a
real client drives it: centrifuge-js sessions of user 42 on both gateways
through the published ports, listed complete over HTTP (examples/curl) and
gRPC, then terminated with a keep-list (the clients get 3503). Also checked:
compose.yaml names the images build.sh tags, nats.conf is what
`switchboardctl nats-config` prints for the compose config.

  test_compose.py --build-dir build --source-dir .
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from cluster import Driver, load_stubs, wait_until  # noqa: E402

KEY = "dev-api-key-change-me"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url, method="GET", body=None):
    req = urllib.request.Request(url, method=method, data=body, headers={"X-API-Key": KEY,
                                                                         "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError, OSError) as e:
        return None, str(e)


def static_checks(src, build):
    bad = []
    compose_dir = os.path.join(src, "deploy", "compose")
    with open(os.path.join(compose_dir, "compose.yaml")) as f:
        doc = yaml.safe_load(f)
    with open(os.path.join(src, "CMakeLists.txt")) as f:
        import re
        version = re.search(r"project\(switchboard VERSION ([0-9.]+)", f.read()).group(1)
    if set(doc["services"]) != {"nats", "control", "gateway-1", "gateway-2", "http"}:
        bad.append("services: %s" % sorted(doc["services"]))
    for name, svc in doc["services"].items():
        image = svc.get("image", "")
        if not image.startswith("localhost/switchboard/") or not image.endswith(":" + version):
            bad.append("%s: image %s is not one build.sh tags (version %s)" % (name, image, version))
        for port in svc.get("ports", []):
            if not port.startswith("127.0.0.1:"):
                bad.append("%s publishes %s beyond loopback" % (name, port))
    want = subprocess.run([os.path.join(build, "cli", "switchboardctl"), "nats-config", "--config",
                           os.path.join(compose_dir, "switchboard.yaml")], capture_output=True, text=True,
                          check=True).stdout
    with open(os.path.join(compose_dir, "nats.conf")) as f:
        if want not in f.read():
            bad.append("nats.conf differs from switchboardctl nats-config --config deploy/compose/switchboard.yaml")
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--source-dir", required=True)
    args = ap.parse_args()
    src, build = os.path.abspath(args.source_dir), os.path.abspath(args.build_dir)
    bad = static_checks(src, build)
    if bad:
        print("\n".join(bad))
        print("0 passed, 1 failed")
        return 1

    ports = {"SWITCHBOARD_GRPC_PORT": free_port(), "SWITCHBOARD_HTTP_PORT": free_port(),
             "SWITCHBOARD_GATEWAY_1_PORT": free_port(), "SWITCHBOARD_GATEWAY_2_PORT": free_port()}
    env = dict(os.environ, CONTAINERS_CONF=os.path.join(src, "deploy", "images", "containers.conf"),
               **{k: str(v) for k, v in ports.items()})
    project = "sbcompose%d" % os.getpid()
    compose = ["podman-compose", "-p", project, "-f", os.path.join(src, "deploy", "compose", "compose.yaml")]
    http = "http://127.0.0.1:%d" % ports["SWITCHBOARD_HTTP_PORT"]
    driver = None
    t0 = time.monotonic()
    up = None
    try:
        up = subprocess.run(compose + ["up", "-d"], capture_output=True, text=True, env=env, timeout=300)
        if up.returncode != 0:
            raise AssertionError("podman-compose up: %s%s" % (up.stdout[-2000:], up.stderr[-2000:]))

        def fleet():
            status, body = http_json(http + "/gateways")
            return status == 200 and sorted(g["id"] for g in body.get("gateways", [])) == ["gw-1", "gw-2"]
        wait_until(fleet, 120, "switchboard-http answering with both gateways attached")
        print("compose: up, both gateways attached after %.1f s" % (time.monotonic() - t0))

        token = subprocess.run([os.path.join(build, "cli", "switchboardctl"), "gentoken", "--config",
                                os.path.join(src, "deploy", "compose", "switchboard.yaml"), "--raw", "--user", "42"],
                               capture_output=True, text=True, check=True).stdout.strip()
        driver = Driver(os.path.join(src, "tests", "integration", "node"))
        clients = {}
        for name, port in (("laptop", ports["SWITCHBOARD_GATEWAY_1_PORT"]),
                           ("phone", ports["SWITCHBOARD_GATEWAY_2_PORT"])):
            driver.send(op="centrifuge", name=name, url="ws://127.0.0.1:%d/connection/websocket" % port,
                        token=token, client_name="compose-test", client_version="1.0")
            clients[name] = driver.wait_event(name, "connected", timeout=30)["client"]

        # The curl example, through the published HTTP port.
        out = subprocess.run(["bash", os.path.join(src, "examples", "curl", "sessions.sh"), "42"],
                             capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, SWITCHBOARD_HTTP=http, SWITCHBOARD_API_KEY=KEY))
        print(out.stdout + out.stderr)
        answer = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")][0]
        assert out.returncode == 0, out.returncode
        assert answer["complete"] is True, answer
        assert {c: v["gateway"] for c, v in answer["connections"].items()} == \
            {clients["laptop"]: "gw-1", clients["phone"]: "gw-2"}, answer

        # gRPC on the published API port.
        import grpc
        load_stubs(src)
        from switchboard.v1 import control_pb2 as pb, control_pb2_grpc
        with grpc.insecure_channel("127.0.0.1:%d" % ports["SWITCHBOARD_GRPC_PORT"]) as ch:
            stub = control_pb2_grpc.ControlStub(ch)
            md = (("authorization", "apikey " + KEY),)
            res = stub.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id="42"), metadata=md,
                                       timeout=5).result
            assert res.complete and set(res.connections) == set(clients.values()), res
            r = stub.TerminateUser(pb.TerminateUserRequest(app_id="demo", user_id="42",
                                                           except_client_ids=[clients["laptop"]]),
                                   metadata=md, timeout=5)
            assert (r.closed, r.coverage.complete) == (1, True), r
        assert driver.wait_event("phone", "disconnected", timeout=10)["code"] == 3503
        assert not [e for e in driver.events("laptop") if e["event"] == "disconnected"]
        print("compose: listed over HTTP and gRPC, terminated with a keep-list, in %.1f s" % (time.monotonic() - t0))
        print("1 passed, 0 failed")
        return 0
    except Exception as e:  # noqa: BLE001 - report, with the containers' logs
        # What podman-compose said when it started them (a container it could
        # not start leaves no log of its own), and every container's state.
        if up is not None:
            print("podman-compose up (exit %d):\n%s%s" % (up.returncode, up.stdout[-3000:], up.stderr[-3000:]))
        ps = subprocess.run(["podman", "ps", "-a", "--filter", "name=" + project], capture_output=True, text=True,
                            env=env, timeout=60)
        print(ps.stdout + ps.stderr)
        logs = subprocess.run(compose + ["logs"], capture_output=True, text=True, env=env, timeout=60)
        print(logs.stdout[-6000:] + logs.stderr[-2000:])
        print("FAILED: %s" % e)
        print("0 passed, 1 failed")
        return 1
    finally:
        if driver:
            driver.stop()
        subprocess.run(compose + ["down"], capture_output=True, env=env, timeout=120)


if __name__ == "__main__":
    sys.exit(main())
