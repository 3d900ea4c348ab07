"""What a developer in any language meets first, against a real cluster
(nats-server, control, two gateways, switchboard-http) with real
centrifuge-js clients:

- examples/: the Python (python3-grpcio, generated stubs), Go (Debian's gRPC
  Go, built offline), Node (@grpc/grpc-js) and curl programs each list a
  user's connections and terminate them with a keep-list; the clients get
  their close codes and the kept one stays. With one gateway frozen each asks
  again, then says INCOMPLETE naming that gateway and exits 3 (README: what to
  do with complete: false).
- server reflection on control: a reflection client (the protocol's stubs,
  generated from grpc-go's reflection.proto; grpcurl is not packaged in
  Debian 12) lists the services, fetches the descriptors and calls
  UserConnections with no .proto file at hand.
- GET /openapi.json on switchboard-http: valid OpenAPI 2.0 (Debian's
  swagger-spec-validator), the binary's version, every route the proxy serves
  (control.proto's HTTP rules and the proxy's own handlers) documented, and a
  real answer matching its documented schema."""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Cluster, Driver, control_api, load_stubs, parse_args, wait_until, GOOGLEAPIS  # noqa: E402

ARGS = None
KEY = "test-api-key-1234"
API_KEY = (("authorization", "apikey " + KEY),)
REFLECTION_PROTO = "/usr/share/gocode/src/google.golang.org/grpc/reflection/grpc_reflection_v1alpha/reflection.proto"


def setUpModule():
    global cluster, driver, pb, stub
    load_stubs(ARGS.source_dir)
    # A long lease: a gateway frozen for one example's retries (about 7 s)
    # stays a member, so the answers name it as missing.
    cluster = Cluster(ARGS.build_dir, ARGS.source_dir, gateways=2, http=True, lease_ms=15000)
    driver = Driver(os.path.join(ARGS.source_dir, "tests/integration/node"))
    pb, stub = control_api(cluster, 2, API_KEY)


def tearDownModule():
    driver.stop()
    cluster.close()


_clients = [0]


def open_client(user, gw):
    _clients[0] += 1
    name = "c%d" % _clients[0]
    driver.send(op="centrifuge", name=name, url=cluster.ws_url(gw), token=cluster.token(user),
                client_name="dev-example", client_version="1.0")
    return name, driver.wait_event(name, "connected")["client"]


class Example:
    def __init__(self, lang, argv):
        self.lang, self.argv = lang, argv

    def run(self, *args):
        env = dict(os.environ, SWITCHBOARD_ADDR="127.0.0.1:%d" % cluster.control_port,
                   SWITCHBOARD_HTTP="http://127.0.0.1:%d" % cluster.http_port, SWITCHBOARD_API_KEY=KEY,
                   SWITCHBOARD_APP="demo", GOOGLEAPIS=GOOGLEAPIS)
        out = subprocess.run(self.argv + list(args), capture_output=True, text=True, timeout=60, env=env)
        print("[%s %s] exit %d\n%s%s" % (self.lang, " ".join(args), out.returncode, out.stdout, out.stderr))
        return out


def examples():
    src = ARGS.source_dir
    # The stubs go to the build tree (not examples/python/gen in the
    # source tree) and reach the program through PYTHONPATH.
    stubs = os.path.join(ARGS.build_dir, "examples", "python-stubs")
    subprocess.check_call(["bash", os.path.join(src, "examples", "python", "gen_stubs.sh"), stubs],
                          stdout=subprocess.DEVNULL)
    os.environ["PYTHONPATH"] = stubs
    return [
        Example("python", ["/usr/bin/python3", os.path.join(src, "examples", "python", "sessions.py")]),
        Example("go", [os.path.join(ARGS.build_dir, "examples", "go", "sessions")]),
        Example("node", ["node", os.path.join(src, "examples", "node", "sessions.js")]),
        Example("curl", ["bash", os.path.join(src, "examples", "curl", "sessions.sh")]),
    ]


def listed(ex, stdout):
    """Client ID -> gateway, from an example's listing."""
    if ex.lang == "curl":
        answers = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        return {cid: c["gateway"] for cid, c in answers[0].get("connections", {}).items()}
    return dict(re.findall(r"^  (\S+) app=dev-example 1\.0 transport=websocket/json gateway=(gw-\d)$", stdout, re.M))


class ExamplesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.examples = examples()

    def test_each_lists_then_terminates_with_a_keep_list(self):
        for ex in self.examples:
            with self.subTest(ex.lang):
                user = "dev-%s" % ex.lang
                clients = [open_client(user, gw) for gw in ("gw-1", "gw-1", "gw-2")]
                want = {cid: gw for (_, cid), gw in zip(clients, ("gw-1", "gw-1", "gw-2"))}
                out = ex.run(user)
                self.assertEqual(out.returncode, 0, out.stderr)
                self.assertEqual(listed(ex, out.stdout), want)
                if ex.lang != "curl":
                    self.assertIn("user %s in app demo: 3 connection(s), complete" % user, out.stdout)
                keep_name, keep = clients[2]
                out = ex.run(user, "--terminate", "--keep", keep)
                self.assertEqual(out.returncode, 0, out.stderr)
                if ex.lang == "curl":
                    answers = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
                    self.assertEqual(answers[1]["closed"], 2, answers)
                    self.assertTrue(answers[1]["coverage"]["complete"])
                    self.assertEqual(list(answers[2]["connections"]), [keep])
                else:
                    self.assertIn("terminated: closed 2 connection(s), kept 1, complete", out.stdout)
                for name, _ in clients[:2]:
                    self.assertEqual(driver.wait_event(name, "disconnected")["code"], 3503)
                self.assertFalse([e for e in driver.events(keep_name) if e["event"] == "disconnected"])
                left = stub.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id=user),
                                            metadata=API_KEY, timeout=5).result
                self.assertEqual((list(left.connections), left.complete), ([keep], True))

    def test_each_says_incomplete_and_names_the_frozen_gateway(self):
        gw2 = cluster.gateways["gw-2"][0]
        for ex in self.examples:
            with self.subTest(ex.lang):
                user = "dev-frozen-%s" % ex.lang
                (_, a), (_, b) = open_client(user, "gw-1"), open_client(user, "gw-2")
                gw2.signal(signal.SIGSTOP)
                try:
                    t0 = time.monotonic()
                    out = ex.run(user)
                    took = time.monotonic() - t0
                finally:
                    gw2.signal(signal.SIGCONT)
                self.assertEqual(out.returncode, 3, out.stdout + out.stderr)
                # Asked three times: two pauses announced on stderr.
                self.assertIn("incomplete (attempt 1 of 3)", out.stderr)
                self.assertIn("incomplete (attempt 2 of 3)", out.stderr)
                self.assertGreater(took, 3.0)
                if ex.lang == "curl":
                    answers = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
                    self.assertEqual(len(answers), 3)
                    self.assertFalse(answers[-1].get("complete", False))
                    self.assertEqual(answers[-1]["gateways_missing"], ["gw-2"])
                    self.assertIn("INCOMPLETE", out.stderr)
                else:
                    self.assertIn("user %s in app demo: 1 connection(s), INCOMPLETE: missing gw-2 (" % user,
                                  out.stdout)
                    self.assertIn("a session there may not be listed", out.stdout)
                self.assertEqual(listed(ex, out.stdout), {a: "gw-1"})
                # Thawed: complete again, both sessions.
                wait_until(lambda: stub.UserConnections(pb.UserConnectionsRequest(app_id="demo", user_id=user),
                                                        metadata=API_KEY, timeout=5).result.complete,
                           10, "complete again")
                out = ex.run(user)
                self.assertEqual(out.returncode, 0, out.stderr)
                self.assertEqual(listed(ex, out.stdout), {a: "gw-1", b: "gw-2"})

    def test_bad_arguments_and_a_wrong_key_are_clear_errors(self):
        for ex in self.examples:
            with self.subTest(ex.lang):
                out = ex.run()
                self.assertEqual(out.returncode, 2, out.stdout + out.stderr)
                self.assertIn("usage", out.stdout.lower() + out.stderr.lower())
                env_key = os.environ.get("SWITCHBOARD_API_KEY")
                os.environ["SWITCHBOARD_API_KEY"] = "wrong"
                try:
                    env = dict(os.environ)
                    env.update(SWITCHBOARD_ADDR="127.0.0.1:%d" % cluster.control_port,
                               SWITCHBOARD_HTTP="http://127.0.0.1:%d" % cluster.http_port, GOOGLEAPIS=GOOGLEAPIS)
                    out = subprocess.run(ex.argv + ["42"], capture_output=True, text=True, timeout=60, env=env)
                finally:
                    if env_key is None:
                        del os.environ["SWITCHBOARD_API_KEY"]
                    else:
                        os.environ["SWITCHBOARD_API_KEY"] = env_key
                self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
                if ex.lang == "curl":
                    self.assertIn("HTTP 401", out.stderr)
                    self.assertIn('"status":"UNAUTHENTICATED"', out.stdout.replace(" ", ""))
                else:
                    self.assertIn("error: UNAUTHENTICATED: ", out.stderr)


def reflection_stubs():
    out = tempfile.mkdtemp(prefix="switchboard-reflection-")
    inc = os.path.dirname(os.path.dirname(REFLECTION_PROTO))
    subprocess.check_call(["protoc", "-I", inc, "--python_out=" + out, "--grpc_out=" + out,
                           "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin",
                           "grpc_reflection_v1alpha/reflection.proto"])
    open(os.path.join(out, "grpc_reflection_v1alpha", "__init__.py"), "w").close()
    sys.path.insert(0, out)
    from grpc_reflection_v1alpha import reflection_pb2, reflection_pb2_grpc
    return reflection_pb2, reflection_pb2_grpc


class ReflectionTest(unittest.TestCase):
    """What `grpcurl list`, `grpcurl describe` and a call by name do."""

    @classmethod
    def setUpClass(cls):
        cls.rpb, rgrpc = reflection_stubs()
        cls.channel = grpc.insecure_channel("127.0.0.1:%d" % cluster.control_port)
        cls.reflect = rgrpc.ServerReflectionStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()

    def ask(self, *requests):
        return list(self.reflect.ServerReflectionInfo(iter(requests), metadata=API_KEY, timeout=5))

    def test_list_describe_and_call_without_proto_files(self):
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
        [resp] = self.ask(self.rpb.ServerReflectionRequest(list_services=""))
        services = sorted(s.name for s in resp.list_services_response.service)
        print("services:", services)
        for want in ("switchboard.v1.Control", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"):
            self.assertIn(want, services)
        [resp] = self.ask(self.rpb.ServerReflectionRequest(file_containing_symbol="switchboard.v1.Control"))
        files = [descriptor_pb2.FileDescriptorProto.FromString(b)
                 for b in resp.file_descriptor_response.file_descriptor_proto]
        names = [f.name for f in files]
        self.assertIn("switchboard/v1/control.proto", names)
        # A pool of its own, fed only what reflection sent (dependencies
        # first): nothing from the generated stubs.
        pool = descriptor_pool.DescriptorPool()
        by_name = {f.name: f for f in files}
        added = set()

        def add(name):
            if name in added:
                return
            if name not in by_name:  # sent earlier in the stream or well known: ask for it
                [r] = self.ask(self.rpb.ServerReflectionRequest(file_by_filename=name))
                for b in r.file_descriptor_response.file_descriptor_proto:
                    f = descriptor_pb2.FileDescriptorProto.FromString(b)
                    by_name.setdefault(f.name, f)
            for dep in by_name[name].dependency:
                add(dep)
            pool.Add(by_name[name])
            added.add(name)
        add("switchboard/v1/control.proto")
        service = pool.FindServiceByName("switchboard.v1.Control")
        methods = {m.name: (m.input_type.full_name, m.output_type.full_name) for m in service.methods}
        print("describe switchboard.v1.Control:", methods)
        self.assertEqual(methods["UserConnections"],
                         ("switchboard.v1.UserConnectionsRequest", "switchboard.v1.UserConnectionsResponse"))
        self.assertIn("TerminateUser", methods)
        self.assertIn("except_client_ids", pool.FindMessageTypeByName("switchboard.v1.TerminateUserRequest")
                      .fields_by_name)
        # A call built from those descriptors alone.
        factory = message_factory.MessageFactory(pool)
        req_cls = factory.GetPrototype(pool.FindMessageTypeByName("switchboard.v1.UserConnectionsRequest"))
        resp_cls = factory.GetPrototype(pool.FindMessageTypeByName("switchboard.v1.UserConnectionsResponse"))
        _, cid = open_client("dev-reflect", "gw-2")
        call = self.channel.unary_unary("/switchboard.v1.Control/UserConnections",
                                        request_serializer=lambda m: m.SerializeToString(),
                                        response_deserializer=resp_cls.FromString)
        r = call(req_cls(app_id="demo", user_id="dev-reflect"), metadata=API_KEY, timeout=5)
        self.assertEqual(list(r.result.connections), [cid])
        self.assertEqual(r.result.connections[cid].gateway, "gw-2")
        self.assertTrue(r.result.complete)

    def test_unknown_symbol_is_not_found(self):
        [resp] = self.ask(self.rpb.ServerReflectionRequest(file_containing_symbol="no.such.Service"))
        self.assertEqual(resp.error_response.error_code, grpc.StatusCode.NOT_FOUND.value[0])
        [resp] = self.ask(self.rpb.ServerReflectionRequest(file_by_filename="../../etc/passwd"))
        self.assertEqual(resp.error_response.error_code, grpc.StatusCode.NOT_FOUND.value[0])


def http_get(port, path, key=KEY):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), headers={"X-API-Key": key} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def served_routes():
    """(method or None, path) for every route switchboard-http serves: the
    HTTP rules of control.proto (which grpc-gateway serves) and the paths
    main.go hands to its ServeMuxes."""
    routes = set()
    with open(os.path.join(ARGS.source_dir, "proto", "switchboard", "v1", "control.proto")) as f:
        for method, path in re.findall(r'^\s*(get|post|put|delete|patch):\s*"([^"]+)"', f.read(), re.M):
            routes.add((method, path))
    with open(os.path.join(ARGS.source_dir, "deploy", "http-proxy", "main.go")) as f:
        for path in re.findall(r'\b(?:root|op)\.Handle(?:Func)?\("([^"]+)"', f.read()):
            if path in ("/", "/apps/", "/api/", "/admin/"):  # prefixes of routes listed above or by the rules
                continue
            routes.add((None, path))
    return routes


class OpenAPITest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        status, headers, body = http_get(cluster.http_port, "/openapi.json", key=None)
        assert status == 200, (status, body)
        assert headers["Content-Type"] == "application/json", headers
        cls.doc = json.loads(body)

    def test_valid_openapi_2_with_the_binary_version(self):
        from swagger_spec_validator import validator20
        validator20.validate_spec(json.loads(json.dumps(self.doc)))  # it annotates what it is given
        self.assertEqual(self.doc["swagger"], "2.0")
        version = subprocess.run([cluster.bin("deploy/http-proxy/switchboard-http"), "--version"],
                                 capture_output=True, text=True).stdout.split()[-1]
        self.assertEqual(self.doc["info"]["version"], version)
        # The operator listener serves the same document.
        status, _, body = http_get(cluster.http_operator_port, "/openapi.json", key=None)
        self.assertEqual((status, json.loads(body)), (200, self.doc))

    def test_every_served_route_is_documented_and_every_documented_route_is_served(self):
        routes = served_routes()
        self.assertGreater(len(routes), 12, routes)
        paths = self.doc["paths"]
        for method, path in sorted(routes, key=lambda r: r[1]):
            self.assertIn(path, paths, "%s is served but not in /openapi.json" % path)
            if method:
                self.assertIn(method, paths[path], "%s %s" % (method, path))
        for path, ops in paths.items():
            for method in ops:
                if method not in ("get", "post"):
                    continue
                port = cluster.http_operator_port if path in ("/metrics", "/admin") else cluster.http_port
                concrete = re.sub(r"\{[^}]+\}", "x", path.replace("{app_id}", "demo"))
                if method == "get":
                    status, _, body = http_get(port, concrete)
                else:
                    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, concrete), data=b"{}",
                                                 headers={"X-API-Key": KEY, "Content-Type": "application/json"})
                    try:
                        with urllib.request.urlopen(req, timeout=10) as resp:
                            status, body = resp.status, resp.read()
                    except urllib.error.HTTPError as e:
                        status, body = e.code, e.read()
                # Served: whatever it answers, not "no such route".
                self.assertNotEqual(status, 404, "%s %s: %s" % (method, concrete, body[:200]))
        status, _, _ = http_get(cluster.http_port, "/no/such/route")
        self.assertEqual(status, 404)

    def test_a_real_answer_matches_its_documented_schema(self):
        _, cid = open_client("dev-openapi", "gw-1")
        op = self.doc["paths"]["/apps/{app_id}/users/{user_id}/connections"]["get"]
        ref = op["responses"]["200"]["schema"]["$ref"].split("/")[-1]
        schema = self.doc["definitions"][ref]
        status, _, body = http_get(cluster.http_port, "/apps/demo/users/dev-openapi/connections")
        self.assertEqual(status, 200)
        answer = json.loads(body)
        self.assertLessEqual(set(answer), set(schema["properties"]), (answer, schema))
        self.assertEqual(list(answer["connections"]), [cid])
        # An error has the documented error shape.
        err_schema = self.doc["definitions"][op["responses"]["default"]["schema"]["$ref"].split("/")[-1]]
        status, _, body = http_get(cluster.http_port, "/apps/demo/users/dev-openapi/connections", key="wrong")
        self.assertEqual(status, 401)
        err = json.loads(body)
        self.assertEqual(set(err), set(err_schema["properties"]))
        self.assertEqual((err["code"], err["status"]), (16, "UNAUTHENTICATED"))

    def test_one_version_everywhere(self):
        with open(os.path.join(ARGS.build_dir, "generated", "version.txt")) as f:
            version = f.read().strip()
        for rel in ("control/switchboard-control", "gateway/switchboard-gateway", "cli/switchboardctl",
                    "deploy/http-proxy/switchboard-http"):
            out = subprocess.run([cluster.bin(rel), "--version"], capture_output=True, text=True, timeout=30)
            self.assertEqual(out.stdout.split()[-1], version, rel)
        # What each gateway told control in its Attach hello.
        gws = stub.ListGateways(pb.ListGatewaysRequest(), metadata=API_KEY, timeout=5).gateways
        self.assertEqual({g.version for g in gws}, {version})
        self.assertEqual(self.doc["info"]["version"], version)

    def test_only_get_and_head(self):
        req = urllib.request.Request("http://127.0.0.1:%d/openapi.json" % cluster.http_port, data=b"{}")
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(req, timeout=5)
        self.assertEqual(cm.exception.code, 405)


if __name__ == "__main__":
    ARGS, argv = parse_args()
    unittest.main(argv=argv, verbosity=2)
