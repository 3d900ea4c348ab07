#!/usr/bin/env python3
"""Runs what the production overlay renders on several "hosts" of this
machine, without a Kubernetes cluster, and checks the fleet on it.

Each pod gets its own network namespace on one bridge (its own IP); each
container starts from the built image (deploy/images/build.sh) with exactly
the command, args, env, volumes, user and security settings the rendered
manifest gives it (Secrets and ConfigMaps resolved as the kubelet would,
$(VAR) expanded in args). A ClusterIP Service is a stable virtual address
(iptables DNAT to the ready pods behind it, as kube-proxy does); a headless
Service is a DNS name with every selected pod's address, and StatefulSet
pods have their own names (dnsmasq on the bridge). NetworkPolicies are
enforced as a CNI would (iptables on the bridge, br_netfilter: a new
connection to a selected pod is dropped unless an ingress rule admits its
source pod, by pod and namespace labels, and port; the node itself, hence
the kubelet's probes and this test's own clients, is not subject to them). Probes are run as the
kubelet runs them; a terminating pod leaves its Services first, gets its
preStop hook, then SIGTERM and SIGKILL after its grace period.

First, when deploy/images/build.sh --previous made images of the previous
commit: the fleet starts on them and is upgraded to this commit's images,
Deployment by Deployment in the README's order, with every answer checked
against the known sessions (0 failed, 0 complete-but-wrong). Then, on it:
clients (switchboard-loadgen, centrifuge protocol) on three gateways
on three hosts; UserConnections and TerminateUser complete through both
control replicas and through switchboard-http; one host's link cut gives a
partial answer naming its gateway within the lease, and healing it rejoins;
a rolling restart of the gateways loses no API call and every client of a
restarted gateway gets a reconnect code; one NATS node down changes nothing.

Needs root, podman and the images. Run by scripts/test.sh after
deploy/images/build.sh:
  tests/k8s/multihost.py --build-dir build --source-dir .
"""
import argparse
import base64
import copy
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

import grpc
from google.protobuf import struct_pb2
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
sys.path.insert(0, os.path.join(SRC, "tests", "bench"))
from cluster import Driver, Proc, load_stubs, wait_until  # noqa: E402
from bench import Generator  # noqa: E402

BRIDGE = "sbk8s0"
NET = "10.231.0"      # pods: .10 and up; the host side of the bridge: .1
VIPS = "10.231.1"     # ClusterIP Services
CHAIN = "SBK8S"
POLICY_CHAIN = "SBK8SNP"  # NetworkPolicies (filter table, FORWARD)
NS_PREFIX = "sbk-"
IMAGE_PREFIX = "localhost/switchboard/"


def sh(*argv, check=True, **kw):
    out = subprocess.run(list(argv), capture_output=True, text=True, **kw)
    if check and out.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), out.returncode, out.stderr.strip()))
    return out


def podman(*argv, check=True):
    return sh("podman", *argv, check=check, timeout=120)


def log(msg):
    print("[multihost %6.1f s] %s" % (time.monotonic() - T0, msg), flush=True)


T0 = time.monotonic()


class Pod:
    def __init__(self, name, workload, index, ip):
        self.name = name
        self.workload = workload  # the rendered Deployment/StatefulSet
        self.spec = workload["spec"]["template"]["spec"]
        self.labels = workload["spec"]["template"]["metadata"].get("labels", {})
        self.index = index
        self.ip = ip
        self.netns = NS_PREFIX + "p%d" % index
        self.veth = "sbv%d" % index
        self.container = "sbk-" + name
        self.ready = False
        self.terminating = False
        self.namespace = None  # the Cluster's
        self.secret_dirs = {}  # Secret name -> the volume directory it fills

    def c(self):
        return self.spec["containers"][0]


class NetnsDriver(Driver):
    """The node driver (tests/integration/node) run in a network namespace."""

    def __init__(self, netns, node_dir, env=None):
        Proc.__init__(self, "driver-" + netns, ["ip", "netns", "exec", netns, "node",
                                                os.path.join(node_dir, "driver.js")], cwd=node_dir, stdin=True, env=env)
        self.wait_line(r'"event":"ready"')


class ClientPod:
    """A pod of someone else's (a backend): a network namespace with labels,
    in a namespace with labels, whose processes this test runs itself."""

    def __init__(self, name, labels, namespace, index, ip):
        self.name, self.labels, self.namespace = name, labels, namespace
        self.ip = ip
        self.netns = NS_PREFIX + "p%d" % index
        self.veth = "sbv%d" % index
        self.terminating = False


def selects(selector, labels):
    """A LabelSelector (matchLabels, matchExpressions In/NotIn/Exists/DoesNotExist); {} selects all."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        have = e["key"] in labels
        op = e["operator"]
        if (op == "In" and labels.get(e["key"]) not in e["values"]) or \
                (op == "NotIn" and labels.get(e["key"]) in e["values"]) or \
                (op == "Exists" and not have) or (op == "DoesNotExist" and have):
            return False
    return True


class Cluster:
    """The rendered objects, running on network namespaces and podman."""

    def __init__(self, objects, build_dir):
        self.objects = objects
        self.build_dir = build_dir
        self.tmp = tempfile.mkdtemp(prefix="switchboard-multihost-")
        self.pods = []
        self.next_index = 10
        self.vips = {}
        self.dns = None
        self.by_kind = {}
        for o in objects:
            self.by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
        self.namespace = next((o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")),
                              "default")
        self.clients = []
        # Namespace labels, with the one Kubernetes sets on every namespace.
        self.ns_labels = {}
        for ns in self.by_kind.get("Namespace", {}).values():
            self.ns_labels[ns["metadata"]["name"]] = dict(ns["metadata"].get("labels") or {})
        self.ns_labels.setdefault(self.namespace, {})
        for name, labels in self.ns_labels.items():
            labels["kubernetes.io/metadata.name"] = name

    # -- network ---------------------------------------------------------
    def net_up(self):
        self.remove_containers()
        self.net_down()
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", NET + ".1/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write("1")
        # Bridged and routed pod traffic is allowed (docker may set FORWARD DROP).
        sh("iptables", "-I", "FORWARD", "-i", BRIDGE, "-j", "ACCEPT")
        sh("iptables", "-I", "FORWARD", "-o", BRIDGE, "-j", "ACCEPT")
        # NetworkPolicies see bridged pod-to-pod traffic only with
        # br_netfilter passing it to iptables, as bridge CNIs need too.
        if not os.path.exists("/proc/sys/net/bridge/bridge-nf-call-iptables"):
            sh("modprobe", "br_netfilter")
        with open("/proc/sys/net/bridge/bridge-nf-call-iptables", "w") as f:
            f.write("1")
        sh("iptables", "-N", POLICY_CHAIN)
        sh("iptables", "-I", "FORWARD", "-j", POLICY_CHAIN)  # first, before the ACCEPTs
        sh("iptables", "-t", "nat", "-N", CHAIN)
        sh("iptables", "-t", "nat", "-I", "PREROUTING", "-j", CHAIN)
        sh("iptables", "-t", "nat", "-I", "OUTPUT", "-d", VIPS + ".0/24", "-j", CHAIN)
        # Replies to Service traffic come back through the host, as with kube-proxy.
        sh("iptables", "-t", "nat", "-I", "POSTROUTING", "-s", NET + ".0/24", "-d", NET + ".0/24",
           "-m", "conntrack", "--ctstate", "DNAT", "-j", "MASQUERADE")
        for i, svc in enumerate(sorted(self.by_kind.get("Service", {}).values(), key=lambda s: s["metadata"]["name"])):
            if svc["spec"].get("clusterIP") != "None":
                self.vips[svc["metadata"]["name"]] = "%s.%d" % (VIPS, 10 + i)
        self.start_dns()

    def net_down(self):
        for ns in sh("ip", "netns", "list", check=False).stdout.split("\n"):
            name = ns.split(" ")[0]
            if name.startswith(NS_PREFIX):
                sh("ip", "netns", "del", name, check=False)
        if os.path.isdir("/etc/netns"):
            for name in os.listdir("/etc/netns"):
                if name.startswith(NS_PREFIX):
                    shutil.rmtree(os.path.join("/etc/netns", name), ignore_errors=True)
        sh("ip", "link", "del", BRIDGE, check=False)
        for args in (["-D", "FORWARD", "-i", BRIDGE, "-j", "ACCEPT"], ["-D", "FORWARD", "-o", BRIDGE, "-j", "ACCEPT"],
                     ["-D", "FORWARD", "-j", POLICY_CHAIN], ["-F", POLICY_CHAIN], ["-X", POLICY_CHAIN],
                     ["-t", "nat", "-D", "PREROUTING", "-j", CHAIN],
                     ["-t", "nat", "-D", "OUTPUT", "-d", VIPS + ".0/24", "-j", CHAIN],
                     ["-t", "nat", "-D", "POSTROUTING", "-s", NET + ".0/24", "-d", NET + ".0/24", "-m", "conntrack",
                      "--ctstate", "DNAT", "-j", "MASQUERADE"],
                     ["-t", "nat", "-F", CHAIN], ["-t", "nat", "-X", CHAIN]):
            while sh("iptables", *args, check=False).returncode == 0 and "-D" in args:
                pass

    def add_netns(self, pod):
        sh("ip", "netns", "add", pod.netns)
        sh("ip", "link", "add", pod.veth, "type", "veth", "peer", "name", "eth0", "netns", pod.netns)
        sh("ip", "link", "set", pod.veth, "master", BRIDGE, "up")
        for cmd in (["ip", "addr", "add", pod.ip + "/24", "dev", "eth0"], ["ip", "link", "set", "eth0", "up"],
                    ["ip", "link", "set", "lo", "up"], ["ip", "route", "add", "default", "via", NET + ".1"]):
            sh("ip", "netns", "exec", pod.netns, *cmd)

    def cut(self, pod, down=True):
        sh("ip", "link", "set", pod.veth, "down" if down else "up")

    # -- Services and DNS ------------------------------------------------
    def endpoints(self, svc):
        sel = svc["spec"].get("selector") or {}
        pods = [p for p in self.pods if all(p.labels.get(k) == v for k, v in sel.items()) and not p.terminating]
        if not svc["spec"].get("publishNotReadyAddresses"):
            pods = [p for p in pods if p.ready]
        return pods

    def target_port(self, pod, port):
        tp = port.get("targetPort", port["port"])
        if isinstance(tp, int):
            return tp
        for cp in pod.c().get("ports", []):
            if cp.get("name") == tp:
                return cp["containerPort"]
        raise AssertionError("%s has no port %s" % (pod.name, tp))

    def has_port(self, pod, port):
        try:
            self.target_port(pod, port)
            return True
        except AssertionError:
            return False

    def sync_services(self):
        """kube-proxy and the cluster DNS: rules and names for the pods as they are now."""
        rules = []  # the chain's new contents, swapped in at once (iptables-restore), as kube-proxy does
        hosts = []
        for name, svc in self.by_kind.get("Service", {}).items():
            eps = self.endpoints(svc)
            names = [name, "%s.%s" % (name, self.namespace), "%s.%s.svc" % (name, self.namespace),
                     "%s.%s.svc.cluster.local" % (name, self.namespace)]
            if name in self.vips:
                vip = self.vips[name]
                hosts += ["%s %s" % (vip, n) for n in names]
                for port in svc["spec"]["ports"]:
                    # A pod without the named target port is no endpoint of
                    # it (a pod of the previous release during an upgrade).
                    eps = [p for p in self.endpoints(svc) if self.has_port(p, port)]
                    for i, p in enumerate(eps):
                        rule = "-A %s -d %s/32 -p tcp --dport %d" % (CHAIN, vip, port["port"])
                        left = len(eps) - i
                        if left > 1:
                            rule += " -m statistic --mode random --probability %.5f" % (1.0 / left)
                        rules.append(rule + " -j DNAT --to-destination %s:%d" % (p.ip, self.target_port(p, port)))
            else:
                hosts += ["%s %s" % (p.ip, n) for p in eps for n in names]
        for sts in self.by_kind.get("StatefulSet", {}).values():
            svc = sts["spec"]["serviceName"]
            for p in self.pods:
                if p.workload is sts and not p.terminating:
                    for n in ("%s.%s" % (p.name, svc), "%s.%s.%s.svc.cluster.local" % (p.name, svc, self.namespace)):
                        hosts.append("%s %s" % (p.ip, n))
        sh("iptables-restore", "--noflush", input="*nat\n:%s - [0:0]\n%s\nCOMMIT\n*filter\n:%s - [0:0]\n%s\nCOMMIT\n" % (
            CHAIN, "\n".join(rules), POLICY_CHAIN, "\n".join(self.policy_rules())))
        with open(os.path.join(self.tmp, "hosts"), "w") as f:
            f.write("\n".join(hosts) + "\n")
        if self.dns and self.dns.poll() is None:
            self.dns.send_signal(1)  # SIGHUP: dnsmasq reads the hosts file again

    def peer_matches(self, peer, q, policy_ns):
        """A NetworkPolicyPeer: podSelector alone is the policy's namespace;
        with namespaceSelector, those namespaces."""
        if "namespaceSelector" in peer:
            ns_ok = selects(peer["namespaceSelector"], self.ns_labels.get(q.namespace or self.namespace, {}))
        else:
            ns_ok = (q.namespace or self.namespace) == policy_ns
        return ns_ok and ("podSelector" not in peer or selects(peer["podSelector"], q.labels))

    def policy_rules(self):
        """The NetworkPolicies (Ingress) for the pods as they are now: a new
        connection to a pod some policy selects is let through only if a
        rule of one of them admits its source and port."""
        rules = ["-A %s -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN" % POLICY_CHAIN]
        # A terminating pod still runs (and drains): it keeps its policies,
        # both ways, until it is gone.
        everyone = self.pods + self.clients
        for pod in self.pods:
            policies = [np for np in self.by_kind.get("NetworkPolicy", {}).values()
                        if "Ingress" in np["spec"].get("policyTypes", ["Ingress"])
                        and np["metadata"].get("namespace", self.namespace) == self.namespace
                        and selects(np["spec"].get("podSelector"), pod.labels)]
            if not policies:
                continue
            for np in policies:
                policy_ns = np["metadata"].get("namespace", self.namespace)
                for rule in np["spec"].get("ingress") or []:
                    peers = rule.get("from")
                    sources = everyone if not peers else [q for q in everyone
                                                          if any(self.peer_matches(x, q, policy_ns) for x in peers)]
                    ports = []
                    for port in rule.get("ports") or []:
                        number = port.get("port")
                        if isinstance(number, str):
                            number = next((cp["containerPort"] for cp in pod.c().get("ports", [])
                                           if cp.get("name") == number), None)
                            if number is None:
                                continue  # a named port this pod does not have admits nothing
                        ports.append(number)
                    if rule.get("ports") and not ports:
                        continue
                    for q in sources:
                        for port in ports or [None]:
                            rules.append("-A %s -s %s/32 -d %s/32 -p tcp%s -j RETURN" % (
                                POLICY_CHAIN, q.ip, pod.ip, "" if port is None else " --dport %d" % port))
            rules.append("-A %s -s %s.0/24 -d %s/32 -j DROP" % (POLICY_CHAIN, NET, pod.ip))
        return rules

    def add_client_pod(self, name, labels, namespace, namespace_labels=None):
        """Someone else's pod (a backend), in `namespace` (its labels as given)."""
        idx = self.next_index
        self.next_index += 1
        pod = ClientPod(name, labels, namespace, idx, "%s.%d" % (NET, idx))
        if namespace != self.namespace:
            self.ns_labels[namespace] = dict(namespace_labels or {}, **{"kubernetes.io/metadata.name": namespace})
        self.add_netns(pod)
        self.clients.append(pod)
        self.sync_services()
        return pod

    def start_dns(self):
        # A run that was killed leaves its dnsmasq holding the address.
        sh("pkill", "-f", "^dnsmasq .*--listen-address=%s.1 " % NET, check=False)
        wait_until(lambda: sh("pgrep", "-f", "^dnsmasq .*--listen-address=%s.1 " % NET, check=False).returncode != 0,
                   10, "the old dnsmasq to exit")
        open(os.path.join(self.tmp, "hosts"), "w").close()
        log_path = os.path.join(self.tmp, "dnsmasq.log")
        with open(log_path, "w") as log_file:
            self.dns = subprocess.Popen(["dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--bind-interfaces",
                                         "--listen-address=" + NET + ".1", "--port=53", "--addn-hosts=" +
                                         os.path.join(self.tmp, "hosts"), "--local-ttl=1", "--log-facility=-",
                                         "--pid-file=" + os.path.join(self.tmp, "dnsmasq.pid")],
                                        stdout=subprocess.DEVNULL, stderr=log_file)

        def started():
            with open(log_path) as f:
                text = f.read()
            if self.dns.poll() is not None:
                raise AssertionError("dnsmasq exited: %s" % text.strip())
            return "started" in text
        wait_until(started, 10, "dnsmasq to start")

    # -- pods ------------------------------------------------------------
    def secret_value(self, name, key):
        s = self.by_kind["Secret"][name]
        if key in (s.get("stringData") or {}):
            return s["stringData"][key]
        return base64.b64decode(s["data"][key].replace("\n", "")).decode()

    def env_of(self, pod):
        env = {}
        for e in pod.c().get("env", []):
            if "value" in e:
                env[e["name"]] = self.expand(e["value"], env)  # $(VAR) of earlier entries, as the kubelet
                continue
            ref = e["valueFrom"]
            if "secretKeyRef" in ref:
                env[e["name"]] = self.secret_value(ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
            elif "configMapKeyRef" in ref:
                cm = self.by_kind["ConfigMap"][ref["configMapKeyRef"]["name"]]
                env[e["name"]] = cm["data"][ref["configMapKeyRef"]["key"]]
            elif "resourceFieldRef" in ref:
                # As the kubelet: the limit in whole cores, rounded up.
                r = ref["resourceFieldRef"]
                assert r["resource"] == "limits.cpu", r
                limit = pod.c()["resources"]["limits"]["cpu"]
                cores = float(limit[:-1]) / 1000 if str(limit).endswith("m") else float(limit)
                env[e["name"]] = str(max(1, int(-(-cores // 1))))
            elif "fieldRef" in ref:
                path = ref["fieldRef"]["fieldPath"]
                if path.startswith("metadata.labels['") and path.endswith("']"):
                    env[e["name"]] = pod.labels.get(path[len("metadata.labels['"):-2], "")
                else:
                    env[e["name"]] = {"metadata.name": pod.name, "status.podIP": pod.ip,
                                      "metadata.namespace": self.namespace}[path]
            else:
                raise AssertionError("unsupported env source %s" % ref)
        return env

    @staticmethod
    def expand(s, env):
        # Kubernetes: $(VAR) from the container's env; $$ escapes.
        return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), s)

    def start_pod(self, workload, name=None):
        idx = self.next_index
        self.next_index += 1
        kind = workload["kind"]
        if name is None:
            if kind == "StatefulSet":
                n = sum(1 for p in self.pods if p.workload is workload)
                name = "%s-%d" % (workload["metadata"]["name"], n)
            else:
                name = "%s-%s" % (workload["metadata"]["name"], secrets.token_hex(3))
        pod = Pod(name, workload, idx, "%s.%d" % (NET, idx))
        self.add_netns(pod)
        c = pod.c()
        env = self.env_of(pod)
        pod_sc = pod.spec.get("securityContext") or {}
        sc = c.get("securityContext") or {}
        user = sc.get("runAsUser", pod_sc.get("runAsUser"))
        group = sc.get("runAsGroup", pod_sc.get("runAsGroup", user))
        argv = ["run", "-d", "--name", pod.container, "--hostname", pod.name,
                "--network", "ns:/run/netns/" + pod.netns, "--dns", NET + ".1", "--log-driver", "k8s-file"]
        if user is not None:
            argv += ["--user", "%d:%d" % (user, group)]
        if sc.get("readOnlyRootFilesystem"):
            argv += ["--read-only"]
        if sc.get("allowPrivilegeEscalation") is False:
            argv += ["--security-opt", "no-new-privileges"]
        for cap in (sc.get("capabilities") or {}).get("drop", []):
            argv += ["--cap-drop", cap]
        volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
        for m in c.get("volumeMounts", []):
            v = volumes[m["name"]]
            d = os.path.join(self.tmp, "vol-%s-%s" % (pod.name, m["name"]))
            if "configMap" in v:
                data = self.by_kind["ConfigMap"][v["configMap"]["name"]]["data"]
            else:
                s = v["secret"]["secretName"]
                data = {k: self.secret_value(s, k) for k in self.by_kind["Secret"][s]["data"]}
                pod.secret_dirs[s] = d
            self.write_volume(d, data)
            argv += ["-v", "%s:%s:%s" % (d, m["mountPath"], "ro" if m.get("readOnly") else "rw")]
        for k, v in env.items():
            argv += ["-e", "%s=%s" % (k, v)]
        if c.get("command"):
            argv += ["--entrypoint", json.dumps([self.expand(x, env) for x in c["command"]])]
        image = c["image"]
        assert image.startswith(IMAGE_PREFIX), image
        argv += [image] + [self.expand(a, env) for a in c.get("args", [])]
        podman(*argv)
        self.pods.append(pod)
        self.sync_services()
        return pod

    @staticmethod
    def write_volume(d, data):
        """A volume's files as the kubelet's atomic writer lays them out: the
        data in a directory of its own, `..data` a symlink to it, each key a
        symlink through `..data`; an update writes a new directory and swaps
        `..data` in one rename, so a reader never sees half of it."""
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o755)
        gen = "..%d_%s" % (time.time_ns(), secrets.token_hex(3))
        os.makedirs(os.path.join(d, gen))
        for k, val in data.items():
            with open(os.path.join(d, gen, k), "w") as f:
                f.write(val)
            os.chmod(os.path.join(d, gen, k), 0o644)
        os.chmod(os.path.join(d, gen), 0o755)
        old = os.readlink(os.path.join(d, "..data")) if os.path.islink(os.path.join(d, "..data")) else None
        os.symlink(gen, os.path.join(d, "..data_tmp"))
        os.replace(os.path.join(d, "..data_tmp"), os.path.join(d, "..data"))
        for k in data:
            if not os.path.islink(os.path.join(d, k)):
                os.symlink(os.path.join("..data", k), os.path.join(d, k))
        if old:
            shutil.rmtree(os.path.join(d, old), ignore_errors=True)

    # -- cert-manager ------------------------------------------------------
    def issue_certificates(self):
        """What cert-manager does with each Certificate: a key and a
        certificate for its dnsNames, signed by this run's CA, in the Secret
        it names (type kubernetes.io/tls). Returns the CA file."""
        if not os.path.exists(os.path.join(self.tmp, "ca.pem")):
            sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
               "-keyout", os.path.join(self.tmp, "ca.key"), "-out", os.path.join(self.tmp, "ca.pem"), "-days", "2",
               "-subj", "/CN=multihost test CA")
        for cert in self.by_kind.get("Certificate", {}).values():
            self.issue(cert)
        return os.path.join(self.tmp, "ca.pem")

    def issue(self, cert):
        d = tempfile.mkdtemp(dir=self.tmp, prefix="issue-")
        names = cert["spec"]["dnsNames"]
        sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
           "-keyout", os.path.join(d, "tls.key"), "-out", os.path.join(d, "csr"), "-subj", "/CN=" + names[0])
        with open(os.path.join(d, "ext"), "w") as f:
            f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
                    % ",".join("DNS:" + n for n in names))
        sh("openssl", "x509", "-req", "-in", os.path.join(d, "csr"), "-CA", os.path.join(self.tmp, "ca.pem"),
           "-CAkey", os.path.join(self.tmp, "ca.key"), "-CAcreateserial", "-out", os.path.join(d, "tls.crt"),
           "-days", "2", "-extfile", os.path.join(d, "ext"))
        data = {}
        for k in ("tls.crt", "tls.key"):
            with open(os.path.join(d, k), "rb") as f:
                data[k] = base64.b64encode(f.read()).decode()
        name = cert["spec"]["secretName"]
        self.by_kind.setdefault("Secret", {})[name] = {
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": self.namespace}, "data": data}
        return base64.b64decode(data["tls.crt"])

    def renew(self, cert_name):
        """A renewal (rotationPolicy Always: a new key): the Secret changes,
        and the kubelet updates the volume of every pod that mounts it.
        Returns the new certificate (PEM)."""
        cert = self.by_kind["Certificate"][cert_name]
        pem = self.issue(cert)
        s = cert["spec"]["secretName"]
        for pod in self.pods:
            if s in pod.secret_dirs:
                self.write_volume(pod.secret_dirs[s], {k: self.secret_value(s, k)
                                                       for k in self.by_kind["Secret"][s]["data"]})
        return pem

    def probe(self, pod, which):
        p = pod.c().get(which)
        if p is None:
            return True
        try:
            if "httpGet" in p:
                port = p["httpGet"]["port"]
                if not isinstance(port, int):
                    port = next(cp["containerPort"] for cp in pod.c()["ports"] if cp.get("name") == port)
                url = "http://%s:%d%s" % (pod.ip, port, p["httpGet"]["path"])
                with urllib.request.urlopen(url, timeout=p.get("timeoutSeconds", 1)) as r:
                    return 200 <= r.status < 400
            if "grpc" in p:
                with grpc.insecure_channel("%s:%d" % (pod.ip, p["grpc"]["port"])) as ch:
                    resp = ch.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=p.get("timeoutSeconds", 1))
                return resp[:2] == b"\x08\x01"
            if "exec" in p:
                return podman("exec", pod.container, *p["exec"]["command"], check=False).returncode == 0
        except (OSError, urllib.error.URLError, grpc.RpcError):
            return False
        raise AssertionError("unsupported probe %s" % p)

    def state(self, pod):
        return podman("inspect", "--format", "{{.State.Status}} exit {{.State.ExitCode}}", pod.container,
                      check=False).stdout.strip()

    def wait_ready(self, pod, timeout=60):
        def ready():
            if self.probe(pod, "readinessProbe"):
                return True
            if self.state(pod).startswith("exited"):
                raise AssertionError("%s exited" % pod.name)
            return False
        try:
            wait_until(ready, timeout, "%s ready" % pod.name)
        except AssertionError as e:
            out = podman("logs", pod.container, check=False)
            lines = (out.stdout.strip().split("\n") + out.stderr.strip().split("\n"))[-30:]
            raise AssertionError("%s; container %s: %s; its last log lines:\n%s" % (
                e, pod.container, self.state(pod), "\n".join(lines))) from None
        pod.ready = True
        self.sync_services()

    def terminate(self, pod, on_sigterm=None):
        """As the kubelet: out of the Services at once, preStop, SIGTERM, and
        SIGKILL after terminationGracePeriodSeconds (counted from the start)."""
        pod.terminating = True
        self.sync_services()
        grace = pod.spec.get("terminationGracePeriodSeconds", 30)
        start = time.monotonic()
        pre = ((pod.c().get("lifecycle") or {}).get("preStop") or {}).get("exec")
        if pre:
            # As the kubelet, whatever the hook's exit (a hook that waits for
            # the process, as NATS's lame duck one, ends with the container).
            podman("exec", pod.container, *pre["command"], check=False)
        if on_sigterm:
            on_sigterm()
        left = max(1, int(grace - (time.monotonic() - start)))
        podman("stop", "--time", str(left), pod.container)
        code = int(podman("inspect", "--format", "{{.State.ExitCode}}", pod.container).stdout.strip())
        self.pods.remove(pod)
        return code, time.monotonic() - start

    def logs(self, pod):
        return podman("logs", pod.container, check=False).stderr

    @staticmethod
    def remove_containers():
        """Ours, including those a run that was killed left behind."""
        for name in podman("ps", "-a", "--format", "{{.Names}}", check=False).stdout.split():
            if name.startswith("sbk-"):
                podman("rm", "-f", "-t", "0", name, check=False)

    def close(self):
        for pod in list(self.pods):
            podman("rm", "-f", "-t", "0", pod.container, check=False)
        self.remove_containers()
        if self.dns:
            self.dns.terminate()
            self.dns.wait()
        self.net_down()
        shutil.rmtree(self.tmp, ignore_errors=True)


def render_production(source_dir, work, values=None):
    """The production overlay with fresh random secrets in a copy of deploy/k8s
    (or the given ones: the previous commit's overlay is rendered with the same
    secrets, as an upgrade keeps them). Returns (objects, values)."""
    tree = os.path.join(work, "k8s")
    shutil.copytree(os.path.join(source_dir, "deploy", "k8s"), tree,
                    ignore=shutil.ignore_patterns("node_modules", "check"))
    prod = os.path.join(tree, "overlays", "production")
    # NATS passwords nats-server would misread were they unquoted in its config
    # (a number, a negative number, a date): every run starts NATS with such.
    if values is None:
        values = {"route-password": "%030d" % secrets.randbelow(10 ** 30),
                  "gateway-password": "-" + secrets.token_urlsafe(24),
                  "control-password": "2026-11-26T" + secrets.token_hex(12)}
    for name in ("secrets.env", "nats-secrets.env"):
        with open(os.path.join(prod, name + ".example")) as f, open(os.path.join(prod, name), "w") as out:
            for line in f:
                if "=" in line and not line.startswith("#"):
                    key = line.split("=", 1)[0]
                    if key not in values:
                        values[key] = secrets.token_urlsafe(24)
                    out.write("%s=%s\n" % (key, values[key]))
    out = sh("kubectl", "kustomize", prod)
    return [d for d in yaml.safe_load_all(out.stdout) if d], values


# The service config the README recommends to backends: every replica,
# round robin over those SERVING, reads asked again (at most 3 attempts) when
# their replica dies under them. TerminateUser is not retried by gRPC: a
# replica that dies during it may have run it.
BACKEND_SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": ""},
    "methodConfig": [{
        "name": [{"service": "switchboard.v1.Control", "method": m} for m in ("UserConnections", "ListGateways")],
        "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.05s", "maxBackoff": "0.5s", "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"]},
    }],
}

PREVIOUS_TAG = "previous"
UPGRADED = ("switchboard-control", "switchboard-gateway", "switchboard-http")


def previous_release(source_dir, work, values):
    """The previous commit's workloads (deploy/images/build.sh --previous made
    their images): its own overlay rendered with the same secrets, each image
    retagged to :previous. None, with the reason, when the images are not there."""
    revs = set()
    for name in UPGRADED:
        image = IMAGE_PREFIX + name.split("-", 1)[1] + ":" + PREVIOUS_TAG
        out = podman("image", "inspect", "--format", '{{index .Labels "org.opencontainers.image.revision"}}', image,
                     check=False)
        if out.returncode != 0:
            return None, "no image %s (deploy/images/build.sh --previous)" % image
        revs.add(out.stdout.strip())
    if len(revs) != 1 or not re.fullmatch(r"[0-9a-f]{40}", next(iter(revs))):
        return None, "the :previous images are of different commits %s" % sorted(revs)
    rev = revs.pop()
    tree = os.path.join(work, "previous")
    os.makedirs(tree)
    archive = subprocess.run(["git", "-C", source_dir, "archive", rev], capture_output=True, check=True).stdout
    sh("tar", "-x", "-C", tree, input=archive.decode("latin-1"), encoding="latin-1")
    objects, _ = render_production(tree, tree, values)
    for o in objects:
        if o["kind"] == "Deployment" and o["metadata"]["name"] in UPGRADED:
            for c in o["spec"]["template"]["spec"]["containers"]:
                c["image"] = c["image"].rsplit(":", 1)[0] + ":" + PREVIOUS_TAG
    return (rev, objects), None


def served_certificate(ip, port, name, ca_file):
    """The certificate (DER) a TLS server gives a client asking for `name`."""
    import socket
    import ssl
    ctx = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection((ip, port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as s:
            return s.getpeercert(binary_form=True)


def close_codes(closes):
    """{close code: how many} of a loadgen's close events."""
    codes = {}
    for c in closes:
        codes[c["code"]] = codes.get(c["code"], 0) + 1
    return codes


class MultiHost(unittest.TestCase):
    """One scenario, in order (the cluster is expensive to start)."""

    @classmethod
    def setUpClass(cls):
        load_stubs(ARGS.source_dir)
        cls.stubs_dir = sys.path[0]  # where load_stubs put them, for processes run in client pods
        from switchboard.v1 import control_pb2, control_pb2_grpc
        cls.pb, cls.pbg = control_pb2, control_pb2_grpc
        cls.work = tempfile.mkdtemp(prefix="switchboard-k8s-render-")
        cls.objects, values = render_production(ARGS.source_dir, cls.work)
        cls.previous, cls.no_previous = previous_release(ARGS.source_dir, cls.work, values)
        cls.k = Cluster(cls.objects, ARGS.build_dir)
        if cls.previous:
            # The old release's ConfigMaps and Secrets exist next to the new
            # ones (their names carry a hash of their contents), as during an
            # upgrade.
            for o in cls.previous[1]:
                if o["kind"] in ("ConfigMap", "Secret"):
                    cls.k.by_kind.setdefault(o["kind"], {}).setdefault(o["metadata"]["name"], o)
        try:
            cls.start_cluster()
        except BaseException:
            cls.k.close()  # unittest runs no tearDownClass when setUpClass fails
            shutil.rmtree(cls.work, ignore_errors=True)
            raise

    @classmethod
    def start_cluster(cls):
        k = cls.k
        k.net_up()
        wl = {o["metadata"]["name"]: o for o in cls.objects if o["kind"] in ("Deployment", "StatefulSet")}
        cls.wl = wl
        # The fleet starts on the previous commit's control, gateways and
        # proxy (when its images are there: test_0 upgrades it), on this
        # commit's NATS and its configuration (an upgrade's first step).
        first = dict(wl)
        if cls.previous:
            first.update({o["metadata"]["name"]: o for o in cls.previous[1]
                          if o["kind"] == "Deployment" and o["metadata"]["name"] in UPGRADED})
            log("starting control, gateways and switchboard-http of the previous commit %s" % cls.previous[0][:12])
        else:
            log("not testing an upgrade: %s" % cls.no_previous)
        # cert-manager's part: the gateway's TLS Secret from its Certificate.
        cls.ca_file = k.issue_certificates()
        cert = next(iter(k.by_kind.get("Certificate", {}).values()), None)
        cls.gateway_dns = cert["spec"]["dnsNames"][0] if cert else None
        log("rendered %d objects; starting pods" % len(cls.objects))
        def replicas(name):
            """spec.replicas, or for a Deployment its HPA owns, the HPA's minimum (what the HPA starts it with)."""
            hpa = next((h for h in k.by_kind.get("HorizontalPodAutoscaler", {}).values()
                        if h["spec"]["scaleTargetRef"]["name"] == name), None)
            return hpa["spec"]["minReplicas"] if hpa else wl[name]["spec"].get("replicas", 1)
        nats = [k.start_pod(wl["switchboard-nats"]) for _ in range(replicas("switchboard-nats"))]
        for p in nats:
            k.wait_ready(p)
        controls = [k.start_pod(first["switchboard-control"]) for _ in range(replicas("switchboard-control"))]
        gateways = [k.start_pod(first["switchboard-gateway"]) for _ in range(replicas("switchboard-gateway"))]
        https = [k.start_pod(first["switchboard-http"]) for _ in range(replicas("switchboard-http"))]
        for p in controls + gateways + https:
            k.wait_ready(p)
        cls.nats, cls.controls, cls.gateways, cls.https = nats, controls, gateways, https
        log("all %d pods ready: %s" % (len(k.pods), ", ".join("%s=%s" % (p.name, p.ip) for p in k.pods)))
        cls.api_key = k.secret_value(next(n for n in k.by_kind["Secret"] if n.startswith("switchboard-secrets")),
                                     "api-key")
        cls.app_secret = k.secret_value(next(n for n in k.by_kind["Secret"] if n.startswith("switchboard-secrets")),
                                        "app-secret")
        cls.channels = {}
        cls.gens = []

    @classmethod
    def tearDownClass(cls):
        for g in cls.gens:
            g.stop()
        for ch in cls.channels.values():
            ch.close()
        if os.environ.get("MULTIHOST_KEEP"):
            log("left running (MULTIHOST_KEEP)")
            return
        cls.k.close()
        shutil.rmtree(cls.work, ignore_errors=True)

    # -- helpers -----------------------------------------------------------
    def stub(self, pod):
        addr = "%s:50051" % pod.ip
        if addr not in self.channels:
            self.channels[addr] = grpc.insecure_channel(addr)
        return self.pbg.ControlStub(self.channels[addr])

    def md(self):
        return (("authorization", "apikey " + self.api_key),)

    def uc(self, control, user, timeout=3):
        return self.stub(control).UserConnections(self.pb.UserConnectionsRequest(app_id="main", user_id=user),
                                                  metadata=self.md(), timeout=timeout).result

    @staticmethod
    def serves_tls(gateway):
        return any(e["name"] == "SWITCHBOARD_GATEWAY_TLS_CERT" for e in gateway.c().get("env", []))

    def load(self, gateways, sessions, users, prefix):
        tls = ["--tls", "--ca_file", self.ca_file, "--tls_name", self.gateway_dns] \
            if all(self.serves_tls(g) for g in gateways) else []
        gen = Generator(ARGS.build_dir, ["--targets", ",".join("%s:8001" % g.ip for g in gateways),
                                         "--sources", NET + ".1", "--sessions", str(sessions), "--users", str(users),
                                         "--user_prefix", prefix, "--secret", self.app_secret, "--log_closes"] + tls)
        self.gens.append(gen)
        ready = gen.wait("ready", timeout=60)
        self.assertEqual((ready["connected"], ready["failed"]), (sessions, 0), ready)
        return gen

    def client_driver(self, name):
        """centrifuge-js and pusher-js as clients on the internet see the
        fleet: in a network namespace of their own whose /etc/hosts (ip netns
        exec mounts /etc/netns/<ns>/hosts) gives the certificate's name the
        gateway Service's address, trusting this run's CA."""
        pod = self.k.add_client_pod(name, {"app": "clients"}, "clients")
        d = os.path.join("/etc/netns", pod.netns)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "hosts"), "w") as f:
            f.write("127.0.0.1 localhost\n%s %s\n" % (self.k.vips["switchboard-gateway"], self.gateway_dns))
        return NetnsDriver(pod.netns, os.path.join(ARGS.source_dir, "tests", "integration", "node"),
                           env={"NODE_EXTRA_CA_CERTS": self.ca_file})

    def gateway_url(self):
        return "wss://%s/connection/websocket" % self.gateway_dns

    def backend_channel(self):
        """A backend as the README recommends: every replica from the headless
        Service, round robin, gRPC health checking (a replica that is down or
        stopping gets no call: a stopping one says NOT_SERVING for
        shutdown_delay_ms first)."""
        return grpc.insecure_channel(
            "dns://%s.1:53/switchboard-control-headless.%s.svc.cluster.local:50051" % (NET, self.k.namespace),
            options=[("grpc.service_config", json.dumps(BACKEND_SERVICE_CONFIG)),
                     ("grpc.dns_min_time_between_resolutions_ms", 500)])

    def gateway_ids(self):
        return {g.name for g in self.gateways}

    # -- the scenario --------------------------------------------------------
    def test_0_rolling_upgrade_from_the_previous_commit(self):
        """The documented order (README: NATS configuration, control, gateways,
        switchboard-http), each Deployment as Kubernetes rolls it (maxSurge 1:
        the new pod ready before the old one goes), with UserConnections and
        TerminateUser over control's headless Service (health-checked round robin) and the HTTP API through the
        proxy's Service throughout. Every answer is checked against what is
        known to be connected: a complete one must hold every session of
        every gateway that was up during the whole call."""
        if not self.previous:
            self.skipTest(self.no_previous)
        users = ["u%d" % i for i in range(12)]
        gen = self.load(self.gateways, 120, len(users), "u")  # 10 sessions per user, on all three gateways
        truth = {}
        for u in users:
            def complete(u=u):
                r = self.uc(self.controls[0], u)
                return r if r.complete and len(r.connections) == 10 else None
            r = wait_until(complete, 15, "a complete answer for %s" % u)
            truth[u] = {}
            for c in r.connections.values():
                truth[u][c.gateway] = truth[u].get(c.gateway, 0) + 1
        leaving = {}  # gateway -> (monotonic time its termination began, time it was gone)
        stats = {"calls": 0, "grpc": 0, "http": 0, "failed": [], "incomplete": 0, "wrong": [], "reasons": [],
                 "sends": 0, "handed": 0, "sends_incomplete": 0, "not_handed": []}
        stop = threading.Event()
        control_channel = self.backend_channel()
        control = self.pbg.ControlStub(control_channel)
        http_base = "http://%s:80" % self.k.vips["switchboard-http"]
        start = time.monotonic()

        def check(u, complete, per_gateway, t0, t1, how, why):
            stats["calls"] += 1
            stats[how] += 1
            if not complete:
                stats["incomplete"] += 1
                stats["reasons"].append("%.1f s %s: %s" % (t0 - start, how, why))
                return
            for g, n in truth[u].items():
                began, gone = leaving.get(g, (float("inf"), float("inf")))
                low, high = (n, n) if t1 < began else (0, 0) if t0 > gone else (0, n)
                if not low <= per_gateway.get(g, 0) <= high:
                    stats["wrong"].append("%.1f s %s %s: %d sessions on %s, want %d..%d" % (
                        t0 - start, how, u, per_gateway.get(g, 0), g, low, high))
            for g in set(per_gateway) - set(truth[u]):
                stats["wrong"].append("%.1f s %s %s: %d sessions on %s, which never had any" % (
                    t0 - start, how, u, per_gateway[g], g))

        def caller():
            i = 0
            while not stop.is_set():
                i += 1
                u = users[i % len(users)]
                t0 = time.monotonic()
                try:
                    if i % 10 == 0:
                        t = control.TerminateUser(self.pb.TerminateUserRequest(app_id="main", user_id="nobody-%d" % i),
                                                  metadata=self.md(), timeout=3)
                        stats["calls"] += 1
                        stats["grpc"] += 1
                        if t.closed:
                            stats["wrong"].append("TerminateUser of nobody-%d closed %d" % (i, t.closed))
                        if not t.coverage.complete:
                            stats["incomplete"] += 1
                    elif i % 10 == 5:
                        # A message to every device of the user: a complete
                        # answer counts every session that was up, and every
                        # session it was handed to receives it (counted at
                        # the clients at the end).
                        r = control.SendToUser(self.pb.SendToUserRequest(
                            app_id="main", user_id=u, event="upgrade", data=struct_pb2.Value(
                                struct_value=struct_pb2.Struct(fields={"s": struct_pb2.Value(number_value=i)}))),
                            metadata=self.md(), timeout=3)
                        stats["handed"] += r.delivered
                        stats["sends"] += 1
                        if r.not_delivered:
                            stats["not_handed"].append("%.1f s %s: %s" % (t0 - start, u, dict(r.not_delivered)))
                        per = {g: n for g, n in r.delivered_per_gateway.items() if n}
                        check(u, r.coverage.complete, per, t0, time.monotonic(), "grpc",
                              "send: %s %s" % (r.coverage.incomplete_reason, list(r.coverage.gateways_missing)))
                        if not r.coverage.complete:
                            stats["sends_incomplete"] += 1
                    elif i % 3 == 0:
                        req = urllib.request.Request("%s/apps/main/users/%s/connections" % (http_base, u),
                                                     headers={"X-API-Key": self.api_key})
                        with urllib.request.urlopen(req, timeout=3) as resp:
                            body = json.load(resp)
                            # Before 0.2 the answer was wrapped in "result"
                            # (a rolling upgrade from it serves both shapes).
                            body = body.get("result", body)
                        per = {}
                        for c in body.get("connections", {}).values():
                            per[c["gateway"]] = per.get(c["gateway"], 0) + 1
                        check(u, body.get("complete", False), per, t0, time.monotonic(), "http",
                              "%s %s" % (body.get("incomplete_reason"), body.get("gateways_missing")))
                    else:
                        r = control.UserConnections(self.pb.UserConnectionsRequest(app_id="main", user_id=u),
                                                    metadata=self.md(), timeout=3).result
                        per = {}
                        for c in r.connections.values():
                            per[c.gateway] = per.get(c.gateway, 0) + 1
                        check(u, r.complete, per, t0, time.monotonic(), "grpc",
                              "%s %s" % (r.incomplete_reason, list(r.gateways_missing)))
                except grpc.RpcError as e:
                    stats["failed"].append("%.1f-%.1f s grpc: %s: %s" % (t0 - start, time.monotonic() - start,
                                                                        e.code(), e.details()))
                except (OSError, ValueError, KeyError) as e:
                    stats["failed"].append("%.1f-%.1f s http: %r" % (t0 - start, time.monotonic() - start, e))
                time.sleep(0.01)  # pacing the load, not synchronising anything

        thread = threading.Thread(target=caller, daemon=True)
        thread.start()
        steps = []
        try:
            for group, name in ((self.controls, "switchboard-control"), (self.gateways, "switchboard-gateway"),
                                (self.https, "switchboard-http")):
                for old in list(group):
                    new = self.k.start_pod(self.wl[name])
                    log("  started %s at %.1f s" % (new.name, time.monotonic() - start))
                    self.k.wait_ready(new)
                    began = time.monotonic()
                    log("  %s ready; terminating %s at %.1f s" % (new.name, old.name, began - start))
                    leaving[old.name] = (began, float("inf"))
                    code, took = self.k.terminate(old)
                    leaving[old.name] = (began, time.monotonic())
                    self.assertEqual(code, 0, "%s exited %d: %s" % (old.name, code, self.k.logs(old)[-2000:]))
                    group[group.index(old)] = new
                    steps.append("%s->%s %.1fs" % (old.name, new.name, took))
                    log("  upgraded %s to %s at %.1f s" % (old.name, new.name, time.monotonic() - start))
            # A few more calls on the upgraded fleet before stopping.
            calls = stats["calls"]
            wait_until(lambda: stats["calls"] >= calls + 20, 20, "calls on the upgraded fleet")
        finally:
            stop.set()
            thread.join()
            control_channel.close()
        closes = gen.closes()
        codes = close_codes(closes)
        log("rolling upgrade %s -> this commit in %.1f s (%s): %d calls (%d gRPC over control's headless Service, "
            "%d HTTP through the proxy's Service), %d failed, %d complete-but-wrong, %d incomplete (named); client closes %s"
            % (self.previous[0][:12], time.monotonic() - start, ", ".join(steps), stats["calls"], stats["grpc"],
               stats["http"], len(stats["failed"]), len(stats["wrong"]), stats["incomplete"], codes))
        for r in stats["reasons"][:20]:
            log("  incomplete (named, not silent): " + r)
        self.assertEqual(stats["failed"], [])
        self.assertEqual(stats["wrong"], [])
        self.assertGreater(stats["calls"], 200)
        self.assertGreater(stats["http"], 30)
        self.assertEqual(codes, {3001: 120}, "every client of an old gateway got the reconnect code")
        # Every session a message was handed to received it, once: exactly
        # the answers' count when every answer was complete (an incomplete
        # one may leave out what a missing gateway handed over).
        done = gen.stop()
        log("  SendToUser during the upgrade: %d calls (%d incomplete), handed to %d sessions, received %d, "
            "duplicates %d; not handed: %s" % (stats["sends"], stats["sends_incomplete"], stats["handed"],
                                               done["pushes"], done["push_duplicates"], stats["not_handed"][:10]))
        self.assertGreater(stats["sends"], 20)
        self.assertEqual(done["push_duplicates"], 0)
        if stats["sends_incomplete"]:
            self.assertGreaterEqual(done["pushes"], stats["handed"])
        else:
            self.assertEqual(done["pushes"], stats["handed"])
        for u in users:
            r = self.uc(self.controls[0], u)
            self.assertTrue(r.complete and len(r.connections) == 0, r)

    def test_1_complete_answers_through_both_replicas_and_the_proxy(self):
        # Round robin over 3 gateways, 25 users: each user's 12 sessions are on all three.
        self.__class__.gen = self.load(self.gateways, 300, 25, "a")
        for control in self.controls:
            def complete():
                r = self.uc(control, "a7")
                return r if r.complete and len(r.connections) == 12 else None
            r = wait_until(complete, 15, "a complete answer from %s" % control.name)
            self.assertEqual(set(r.gateways_answered), self.gateway_ids())
            self.assertEqual({c.gateway for c in r.connections.values()}, self.gateway_ids())
        # The HTTP API through its Service address, as the Ingress would reach it.
        vip = self.k.vips["switchboard-http"]
        req = urllib.request.Request("http://%s:80/api/user_connections" % vip, data=b'{"user":"a7"}',
                                     headers={"X-API-Key": self.api_key, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            body = json.load(r)
        self.assertEqual(len(body["result"]["connections"]), 12, body)
        # TerminateUser through the second replica closes every session of a user.
        t = self.stub(self.controls[1]).TerminateUser(
            self.pb.TerminateUserRequest(app_id="main", user_id="a8", code=3020, reason="multihost"),
            metadata=self.md(), timeout=3)
        self.assertTrue(t.coverage.complete, t)
        self.assertEqual(t.closed, 12)
        self.assertEqual(set(t.closed_per_gateway), self.gateway_ids())
        wait_until(lambda: len([c for c in self.gen.closes() if c["code"] == 3020]) == 12, 10, "12 clients closed")
        r = self.uc(self.controls[0], "a8")
        self.assertTrue(r.complete)
        self.assertEqual(len(r.connections), 0)
        t = self.stub(self.controls[0]).TerminateUser(
            self.pb.TerminateUserRequest(app_id="main", user_id="a9", code=3020, reason="multihost"),
            metadata=self.md(), timeout=3)
        self.assertTrue(t.coverage.complete, t)
        self.assertEqual(t.closed, 12)
        wait_until(lambda: len([c for c in self.gen.closes() if c["code"] == 3020]) == 24, 10, "24 clients closed")
        log("complete answers through both replicas and the proxy; TerminateUser closed 12 of 12 on 3 hosts through each replica")

    def test_2_a_cut_host_is_named_within_the_lease_and_rejoins(self):
        gw = self.gateways[2]
        before = self.uc(self.controls[0], "a1")
        self.assertTrue(before.complete)
        self.k.cut(gw)
        cut_at = time.monotonic()
        lease = 3.0

        def partial_naming_it():
            r = self.uc(self.controls[0], "a1", timeout=1.5)
            return r if not r.complete and gw.name in r.gateways_missing else None
        r = wait_until(partial_naming_it, lease, "a partial answer naming %s within the lease" % gw.name)
        named_after = time.monotonic() - cut_at
        self.assertIn(gw.name, r.incomplete_reason + " ".join(r.gateways_missing))
        self.k.cut(gw, down=False)
        healed_at = time.monotonic()

        def rejoined():
            r = self.uc(self.controls[0], "a1")
            return r if r.complete and gw.name in r.gateways_answered and \
                len(r.connections) == len(before.connections) else None
        wait_until(rejoined, 30, "%s back with its sessions" % gw.name)
        log("cut %s: partial answer naming it after %.2f s (lease %.0f s); healed, complete again after %.2f s"
            % (gw.name, named_after, lease, time.monotonic() - healed_at))

    def test_3_rolling_restart_loses_no_call_and_every_client_gets_a_reconnect_code(self):
        stop = threading.Event()
        stats = {"calls": 0, "failed": [], "incomplete": 0, "reasons": []}

        def caller():
            i = 0
            while not stop.is_set():
                control = self.controls[i % len(self.controls)]
                i += 1
                try:
                    if i % 10 == 0:
                        t = self.stub(control).TerminateUser(
                            self.pb.TerminateUserRequest(app_id="main", user_id="nobody-%d" % i),
                            metadata=self.md(), timeout=3)
                        complete, why = t.coverage.complete, "%s %s" % (t.coverage.incomplete_reason,
                                                                         list(t.coverage.gateways_missing))
                    else:
                        r = self.uc(control, "r%d" % (i % 30))
                        complete, why = r.complete, "%s %s" % (r.incomplete_reason, list(r.gateways_missing))
                    stats["calls"] += 1
                    if not complete:
                        stats["incomplete"] += 1
                        stats["reasons"].append("%.1f s %s: %s" % (time.monotonic() - start, control.name, why))
                except grpc.RpcError as e:
                    stats["failed"].append("%s: %s" % (e.code(), e.details()))
                time.sleep(0.02)  # pacing the load, not synchronising anything

        gen = self.load(self.gateways, 150, 30, "r")
        # centrifuge-js clients through the gateways' Service address, as
        # real clients arrive: they must come back by themselves.
        driver = self.client_driver("clients-3")
        js = ["js%d" % i for i in range(6)]
        url = self.gateway_url()
        for name in js:
            driver.send(op="centrifuge", name=name, url=url,
                        get_token={"secret": self.app_secret, "sub": "jsuser", "ttl": 3600})
        for name in js:
            driver.wait_event(name, "connected", timeout=15)
        per_gateway = {}
        start = time.monotonic()
        thread = threading.Thread(target=caller, daemon=True)
        thread.start()
        for old in list(self.gateways):
            # maxSurge 1, maxUnavailable 0: the new pod is ready before the old goes.
            new = self.k.start_pod(self.wl["switchboard-gateway"])
            self.k.wait_ready(new)
            log("  %s ready at %.1f s; terminating %s" % (new.name, time.monotonic() - start, old.name))
            clients_before = len(gen.closes())
            code, took = self.k.terminate(old)
            log("  %s gone at %.1f s" % (old.name, time.monotonic() - start))
            self.assertEqual(code, 0, "%s exited %d: %s" % (old.name, code, self.k.logs(old)[-2000:]))
            self.gateways[self.gateways.index(old)] = new
            per_gateway[old.name] = (took, len(gen.closes()) - clients_before)
        stop.set()
        thread.join()
        # Every centrifuge-js client was told to reconnect (3001), did, and the
        # fleet sees all six again.
        js_codes = {}
        for name in js:
            for e in driver.events(name):
                if e["event"] == "connecting" and e.get("code"):
                    js_codes[e["code"]] = js_codes.get(e["code"], 0) + 1

        def js_back():
            r = self.uc(self.controls[0], "jsuser")
            return r if r.complete and len(r.connections) == len(js) else None
        r = wait_until(js_back, 20, "every centrifuge-js client connected again")
        js_gateways = {c.gateway for c in r.connections.values()}
        for name in js:
            driver.send(op="close", name=name)
        driver.stop()
        log("centrifuge-js clients through the Service: reconnect codes %s, all %d back on %s"
            % (js_codes, len(js), sorted(js_gateways)))
        self.assertTrue(js_codes and set(js_codes) == {3001}, js_codes)
        self.assertTrue(js_gateways <= self.gateway_ids(), (js_gateways, self.gateway_ids()))
        closes = gen.closes()
        codes = close_codes(closes)
        log("rolling restart of %d gateways in %.1f s: %d API calls, %d failed, %d incomplete; "
            "client closes by code %s; per gateway (s, clients closed) %s"
            % (len(per_gateway), time.monotonic() - start, stats["calls"], len(stats["failed"]),
               stats["incomplete"], codes, per_gateway))
        for r in stats["reasons"]:
            log("  incomplete (named, not silent): " + r)
        self.assertEqual(stats["failed"], [])
        self.assertGreater(stats["calls"], 100)
        self.assertEqual(len(closes), 150, "every client of the restarted gateways was closed")
        self.assertEqual(set(codes), {3001}, "every client got the reconnect code")

    def test_4_one_nats_node_down_changes_nothing(self):
        gen = self.load(self.gateways, 90, 9, "n")
        victim = self.nats[1]
        code, _ = self.k.terminate(victim)
        down_at = time.monotonic()
        calls = incomplete = 0
        failed = []
        while time.monotonic() - down_at < 10:
            for control in self.controls:
                try:
                    r = self.uc(control, "n4")
                    calls += 1
                    if not (r.complete and len(r.connections) == 10):
                        incomplete += 1
                except grpc.RpcError as e:
                    failed.append(str(e.code()))
            time.sleep(0.05)  # pacing
        log("NATS node %s down: %d calls over 10 s, %d failed, %d incomplete or short" %
            (victim.name, calls, len(failed), incomplete))
        self.assertEqual(failed, [])
        self.assertEqual(incomplete, 0)
        self.assertEqual(gen.closes(), [])

    def test_6_backends_reach_the_api_with_the_label_and_only_with_it(self):
        """Issue 22 point 3: control's NetworkPolicy admits API clients (a pod
        labelled switchboard.io/api-client in any namespace, or any pod of a
        namespace labelled switchboard.io/api-clients) besides gateways and
        the proxy; nobody else, through the Service or to a pod directly."""
        k = self.k
        backends = [
            ("labelled pod, same namespace", k.add_client_pod(
                "backend-a", {"app": "backend", "switchboard.io/api-client": "true"}, k.namespace), True),
            ("unlabelled pod, same namespace", k.add_client_pod("backend-b", {"app": "backend"}, k.namespace), False),
            ("labelled pod, other namespace", k.add_client_pod(
                "backend-c", {"switchboard.io/api-client": "true"}, "shop"), True),
            ("pod of a labelled namespace", k.add_client_pod(
                "backend-d", {"app": "billing"}, "billing", {"switchboard.io/api-clients": "true"}), True),
            ("unlabelled pod, other namespace", k.add_client_pod("backend-e", {"app": "x"}, "other"), False),
        ]
        script = ("import sys, grpc\n"
                  "from switchboard.v1 import control_pb2 as pb, control_pb2_grpc as pbg\n"
                  "ch = grpc.insecure_channel(sys.argv[1])\n"
                  "try:\n"
                  "    r = pbg.ControlStub(ch).UserConnections(pb.UserConnectionsRequest(app_id='main', user_id='np'),"
                  " metadata=(('authorization', 'apikey ' + sys.argv[2]),), timeout=3).result\n"
                  "    print('OK complete=%s' % r.complete)\n"
                  "except grpc.RpcError as e:\n"
                  "    print('ERR %s' % e.code().name)\n")
        targets = [("control's Service", "%s:50051" % k.vips["switchboard-control"]),
                   ("a control pod", "%s:50051" % self.controls[0].ip)]
        seen = []
        for what, pod, admitted in backends:
            for target_name, target in targets:
                out = sh("ip", "netns", "exec", pod.netns, "/usr/bin/python3", "-c", script, target, self.api_key,
                         env=dict(os.environ, PYTHONPATH=self.stubs_dir), timeout=30).stdout.strip()
                seen.append("%s -> %s: %s" % (what, target_name, out))
                if admitted:
                    self.assertEqual(out, "OK complete=True", seen[-1])
                else:
                    self.assertIn(out, ("ERR DEADLINE_EXCEEDED", "ERR UNAVAILABLE"), seen[-1])
        log("NetworkPolicy: " + "; ".join(seen))

    def test_7_wss_through_the_service_and_a_certificate_renewal(self):
        """Issue 22 point 2: the production overlay serves wss:// at the
        gateways from the Secret cert-manager fills (emulated: this run's CA
        signs the Certificate's dnsNames). centrifuge-js and pusher-js reach
        it by its name through the gateway Service with the test CA; then
        the certificate is renewed (a new key, the Secret volume swapped as
        the kubelet does): every gateway serves the new one to new
        connections, and no session is dropped."""
        import hashlib
        import ssl
        k = self.k
        driver = self.client_driver("clients-7")
        url = self.gateway_url()
        cj = ["wss-c%d" % i for i in range(6)]
        pj = ["wss-p%d" % i for i in range(6)]
        try:
            for name in cj:
                driver.send(op="centrifuge", name=name, url=url,
                            get_token={"secret": self.app_secret, "sub": "wss-c", "ttl": 3600})
            for name in pj:
                driver.send(op="pusher", name=name, key="main", secret=self.app_secret, host=self.gateway_dns,
                            port=443, tls=True, user_data={"id": "wss-p"})
            for name in cj:
                driver.wait_event(name, "connected", timeout=20)
            for name in pj:
                driver.wait_event(name, "pusher_signin_success", timeout=20)

            def counts():
                a, b = self.uc(self.controls[0], "wss-c"), self.uc(self.controls[0], "wss-p")
                return (len(a.connections), len(b.connections)) if a.complete and b.complete else None
            self.assertEqual(wait_until(counts, 10, "both users listed"), (len(cj), len(pj)))
            before = {g.name: served_certificate(g.ip, 8001, self.gateway_dns, self.ca_file) for g in self.gateways}
            seen = {n: len(driver.events(n)) for n in cj + pj}  # what came before the renewal
            renewed = ssl.PEM_cert_to_DER_cert(k.renew("switchboard-gateway-tls").decode())
            self.assertNotIn(renewed, before.values())
            start = time.monotonic()

            def all_renewed():
                return all(served_certificate(g.ip, 8001, self.gateway_dns, self.ca_file) == renewed
                           for g in self.gateways)
            wait_until(all_renewed, 30, "every gateway serving the renewed certificate")
            took = time.monotonic() - start
            for g in self.gateways:
                self.assertIn("TLS: certificate reloaded", k.logs(g))
            # New clients get in on the new certificate; nobody was dropped.
            driver.send(op="centrifuge", name="wss-new", url=url,
                        get_token={"secret": self.app_secret, "sub": "wss-c", "ttl": 3600})
            driver.wait_event("wss-new", "connected", timeout=20)
            self.assertEqual(wait_until(lambda: (lambda c: c if c and c[0] == len(cj) + 1 else None)(counts()), 10,
                                        "the new client listed"), (len(cj) + 1, len(pj)))
            # A session dropped after the renewal shows as a state change of
            # its client (centrifuge-js: connecting or disconnected; pusher-js:
            # leaving connected).
            dropped = [e for n in cj for e in driver.events(n)[seen[n]:] if e["event"] in ("disconnected", "connecting")] + \
                [e for n in pj for e in driver.events(n)[seen[n]:] if e["event"] == "pusher_state"
                 and e["previous"] == "connected"]
            log("wss through the gateway Service: %d centrifuge-js and %d pusher-js sessions; certificate renewed "
                "(%s -> %s), served by all %d gateways %.1f s later; sessions dropped: %d" % (
                    len(cj), len(pj), hashlib.sha256(next(iter(before.values()))).hexdigest()[:12],
                    hashlib.sha256(renewed).hexdigest()[:12], len(self.gateways), took, len(dropped)))
            self.assertEqual(dropped, [])
        finally:
            for name in cj + pj + ["wss-new"]:
                driver.send(op="close", name=name)
            driver.stop()

    def test_5_a_control_replica_down_then_a_rolling_restart_of_control(self):
        """Issue 22's readiness rule on the production overlay: one control
        replica SIGKILLed and kept down, then control rolled, with API calls
        (gRPC to every replica, health-checked; HTTP through the proxy's
        Service) and new clients through the gateway Service throughout: no
        call fails, no client connect fails, the gateways stay ready, and
        every complete answer holds exactly the known sessions."""
        users = ["k%d" % i for i in range(6)]
        self.load(self.gateways, 60, len(users), "k")  # 10 per user
        stats = {"calls": 0, "failed": [], "wrong": [], "incomplete": 0, "connects": 0, "connect_failed": []}
        stop = threading.Event()
        channel = self.backend_channel()
        control = self.pbg.ControlStub(channel)
        http_base = "http://%s:80" % self.k.vips["switchboard-http"]
        start = time.monotonic()

        def caller():
            i = 0
            while not stop.is_set():
                i += 1
                u = users[i % len(users)]
                t0 = time.monotonic() - start
                try:
                    if i % 2:
                        r = control.UserConnections(self.pb.UserConnectionsRequest(app_id="main", user_id=u),
                                                    metadata=self.md(), timeout=3).result
                        complete, n, why = r.complete, len(r.connections), r.incomplete_reason
                    else:
                        req = urllib.request.Request("%s/apps/main/users/%s/connections" % (http_base, u),
                                                     headers={"X-API-Key": self.api_key})
                        with urllib.request.urlopen(req, timeout=3) as resp:
                            body = json.load(resp)
                            # Before 0.2 the answer was wrapped in "result"
                            # (a rolling upgrade from it serves both shapes).
                            body = body.get("result", body)
                        complete, n, why = body["complete"], len(body.get("connections", {})), \
                            body.get("incomplete_reason")
                    stats["calls"] += 1
                    if not complete:
                        stats["incomplete"] += 1
                    elif n != 10:
                        stats["wrong"].append("%.1f s %s: %d sessions" % (t0, u, n))
                except grpc.RpcError as e:
                    stats["failed"].append("%.1f s grpc: %s: %s" % (t0, e.code(), e.details()))
                except (OSError, ValueError, KeyError) as e:
                    stats["failed"].append("%.1f s http: %r" % (t0, e))
                time.sleep(0.01)  # pacing the load, not synchronising anything

        driver = self.client_driver("clients-5")
        url = self.gateway_url()

        def connector():
            i = 0
            while not stop.is_set():
                i += 1
                name = "new%d" % i
                driver.send(op="centrifuge", name=name, url=url,
                            get_token={"secret": self.app_secret, "sub": "newcomer", "ttl": 600})
                try:
                    driver.wait_event(name, "connected", timeout=10)
                    stats["connects"] += 1
                except AssertionError as e:
                    stats["connect_failed"].append("%.1f s: %s" % (time.monotonic() - start, e))
                driver.send(op="close", name=name)

        threads = [threading.Thread(target=caller, daemon=True), threading.Thread(target=connector, daemon=True)]
        for t in threads:
            t.start()
        try:
            # One replica SIGKILLed and kept down (crash-looping, say): the
            # kubelet finds it unready and the ClusterIP Services drop it; the
            # headless one keeps publishing it.
            dead = self.controls[0]
            podman("kill", "-s", "KILL", dead.container)
            wait_until(lambda: not self.k.probe(dead, "readinessProbe"), 10, "the killed replica unready")
            dead.ready = False
            self.k.sync_services()
            killed_at = time.monotonic()
            calls = stats["calls"]
            wait_until(lambda: stats["calls"] >= calls + 100 and time.monotonic() - killed_at > 6, 30,
                       "calls over two leases with a replica down")
            for g in self.gateways:
                self.assertTrue(self.k.probe(g, "readinessProbe"), "%s unready with one replica down" % g.name)
            log("  control %s down: gateways ready, %d calls, %d failed so far" % (
                dead.name, stats["calls"], len(stats["failed"])))
            # Then control rolled: the dead pod replaced, then the other one.
            for old in list(self.controls):
                new = self.k.start_pod(self.wl["switchboard-control"])
                self.k.wait_ready(new)
                if old is dead:
                    self.k.pods.remove(old)
                    podman("rm", "-f", "-t", "0", old.container, check=False)
                    self.k.sync_services()
                else:
                    code, _ = self.k.terminate(old)
                    self.assertEqual(code, 0)
                self.controls[self.controls.index(old)] = new
                log("  control %s replaced by %s at %.1f s" % (old.name, new.name, time.monotonic() - start))
            calls = stats["calls"]
            wait_until(lambda: stats["calls"] >= calls + 50, 20, "calls on the restarted control")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
            channel.close()
            driver.stop()
        log("control replica down then control rolled in %.1f s: %d calls, %d failed, %d complete-but-wrong, "
            "%d incomplete (named); %d client connects through the gateway Service, %d failed"
            % (time.monotonic() - start, stats["calls"], len(stats["failed"]), len(stats["wrong"]),
               stats["incomplete"], stats["connects"], len(stats["connect_failed"])))
        self.assertEqual(stats["failed"], [])
        self.assertEqual(stats["wrong"], [])
        self.assertEqual(stats["connect_failed"], [])
        self.assertGreater(stats["connects"], 10)


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--source-dir", default=SRC)
    ARGS, rest = ap.parse_known_args()
    ARGS.build_dir = os.path.abspath(ARGS.build_dir)
    if os.geteuid() != 0:
        sys.exit("multihost: needs root (network namespaces, iptables, podman)")
    os.environ.setdefault("CONTAINERS_CONF", os.path.join(ARGS.source_dir, "deploy", "images", "containers.conf"))
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
