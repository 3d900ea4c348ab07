#!/usr/bin/env python3
"""Checks the Kubernetes manifests offline, as the README's test command runs
them (ctest k8s_manifests):

1. every overlay renders with `kubectl kustomize` (production with the
   .example secret files standing in for the real ones);
2. every object validates against the Kubernetes API schemas, unknown fields
   rejected (validate.js);
3. policy: every container has readiness and liveness probes, CPU and memory
   requests and limits, runs as non-root without privilege escalation, and
   pins its image tag; every Service, PDB and HPA selects or targets a
   workload that exists; every Ingress backend is a Service port; every
   ConfigMap/Secret a pod references exists with the key it names; every
   ${VAR} the config needs for a role is in that role's environment;
   container ports match the config's listen addresses; the NATS users'
   permissions are what `switchboardctl nats-config` prints for the same
   config; nats.conf parses (nats-server -t) with the NATS pod's environment
   for passwords nats-server would misread unquoted (12345, true, 0-1Z) and
   the NATS Secret's values are of the allowed alphabet; the gateway's grace
   period covers preStop and the drain; the control address gateways
   resolve is a headless Service that lists not-ready replicas; production
   never runs in dev mode (SWITCHBOARD_DEV, --dev: placeholder secrets);
4. two installs in one namespace (production with instance-selectors, and
   overlays/second-install) share no name, no selector of one takes the
   other's pods, each talks to its own Services, each has its own TLS Secret.

--self-test breaks rendered objects in known ways and checks that each
policy catches its break (a check that cannot fail is no check).

  check.py --build-dir BUILD --source-dir SRC [--self-test]
"""
import argparse
import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
K8S = os.path.dirname(HERE)
# production-api-ingress: production with the optional component that
# publishes the HTTP API through an Ingress of its own (made in the work tree).
OVERLAYS = ["dev", "production", "production-api-ingress", "production-instances", "second-install",
            "production-monitoring"]
# The labels every object carries (Kubernetes' recommended set).
RECOMMENDED_LABELS = ["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
                      "app.kubernetes.io/part-of", "app.kubernetes.io/version", "app.kubernetes.io/managed-by"]
# The ports clients use (WebSocket, uni stream); nothing else may face them.
CLIENT_PORTS = {"ws", "wss"}

# What each role reads from the environment (ConfigRole in common/config.h);
# the config writes the others as ${VAR:-}.
ROLE_ENV = {
    "control": {"SWITCHBOARD_APP_SECRET", "SWITCHBOARD_API_KEY", "SWITCHBOARD_CLUSTER_TOKEN",
                "SWITCHBOARD_HTTP_PROXY_TOKEN", "SWITCHBOARD_NATS_CONTROL_PASSWORD"},
    "gateway": {"SWITCHBOARD_APP_SECRET", "SWITCHBOARD_CLUSTER_TOKEN", "SWITCHBOARD_NATS_GATEWAY_PASSWORD"},
    "http": {"SWITCHBOARD_HTTP_PROXY_TOKEN"},
    "nats": {"NATS_ROUTE_PASSWORD", "SWITCHBOARD_NATS_GATEWAY_PASSWORD", "SWITCHBOARD_NATS_CONTROL_PASSWORD"},
}
# Secrets a role must never get (least privilege).
ROLE_FORBIDDEN_ENV = {
    "gateway": {"SWITCHBOARD_API_KEY", "SWITCHBOARD_HTTP_PROXY_TOKEN", "SWITCHBOARD_NATS_CONTROL_PASSWORD"},
    "http": {"SWITCHBOARD_API_KEY", "SWITCHBOARD_CLUSTER_TOKEN", "SWITCHBOARD_APP_SECRET"},
}


def render(overlay, workdir):
    """The overlay's objects. Production's secret env files are made from the
    .example files in a copy of deploy/k8s (the real ones are never committed)."""
    tree = os.path.join(workdir, overlay, "k8s")
    if not os.path.exists(tree):
        shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("node_modules", "check"))
        # Production with an optional component, as an operator would add it.
        component = {"production-api-ingress": "api-ingress", "production-instances": "instance-selectors",
                     "production-monitoring": "monitoring"}
        if overlay in component:
            os.makedirs(os.path.join(tree, "overlays", overlay))
            with open(os.path.join(tree, "overlays", overlay, "kustomization.yaml"), "w") as f:
                f.write("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                        "resources: [../production]\ncomponents: [../../components/%s]\n" % component[overlay])
        for d in (overlay, "production"):
            for name in ("secrets.env", "nats-secrets.env"):
                example = os.path.join(tree, "overlays", d, name + ".example")
                if os.path.exists(example):
                    shutil.copy(example, os.path.join(tree, "overlays", d, name))
    out = subprocess.run(["kubectl", "kustomize", os.path.join(tree, "overlays", overlay)],
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise SystemExit("kubectl kustomize overlays/%s failed:\n%s" % (overlay, out.stderr))
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def schema_problems(objects):
    # kustomize wraps long base64 values in Secrets over lines; the API server
    # decodes them ignoring line breaks, the schema's pattern does not: join.
    objects = copy.deepcopy(objects)
    for o in objects:
        if o["kind"] == "Secret":
            for k, v in (o.get("data") or {}).items():
                o["data"][k] = v.replace("\n", "")
    out = subprocess.run(["node", os.path.join(HERE, "validate.js")], input=json.dumps(objects),
                         capture_output=True, text=True, timeout=120)
    if out.returncode not in (0, 1):
        raise SystemExit("validate.js failed: %s" % out.stderr)
    return [l for l in out.stdout.splitlines() if l.strip()]


def name_of(o):
    return "%s/%s" % (o["kind"], o["metadata"]["name"])


def workloads(objects):
    return [o for o in objects if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet")]


def role_of(workload):
    # switchboard-gateway, or blue-switchboard-gateway in a second install.
    return re.sub(r"^(?:.*-)?switchboard-", "", workload["metadata"]["name"])


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def label_selects(selector, labels):
    """A LabelSelector (matchLabels and matchExpressions) and a pod's labels."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        op, key, values = e["operator"], e["key"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def pod_env(workload, container_index=0):
    """A container's environment as far as it is known from the manifests:
    literal values with $(VAR) expanded as the kubelet does, and the
    downward API's labels and name; Secrets and resources stay unknown."""
    tmpl = workload["spec"]["template"]
    c = tmpl["spec"]["containers"][container_index]
    env = {}
    for e in c.get("env") or []:
        if "value" in e:
            env[e["name"]] = expand_dollar(e["value"], env)
        else:
            path = ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath", "")
            m = re.fullmatch(r"metadata\.labels\['([^']+)'\]", path)
            if m:
                env[e["name"]] = (tmpl["metadata"].get("labels") or {}).get(m.group(1), "")
            elif path == "metadata.name":
                env[e["name"]] = workload["metadata"]["name"] + "-0"
    return env


def expand_dollar(s, env):
    """Kubernetes' $(VAR) in env values and args; unknown ones stay as written."""
    return re.sub(r"\$\(([A-Za-z0-9_]+)\)", lambda m: env.get(m.group(1), m.group(0)), s)


def expand_config(text, env):
    """The config's ${VAR} and ${VAR:-default} as a pod with `env` reads them;
    a variable the manifests cannot know (a Secret) reads as "x"."""
    def one(m):
        name, default = m.group(1), m.group(3)
        if env.get(name):
            return env[name]
        return default if default is not None else "x"
    return re.sub(r"\$\{([A-Z0-9_]+)(:-([^}]*))?\}", one, text)


def port_of(hostport):
    return int(hostport.rsplit(":", 1)[1])


def arg_value(args, flag):
    for a in args:
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def generated(items, name):
    """The object kustomize generated as `name` (with its hash suffix)."""
    for n, o in items.items():
        if re.fullmatch(r"(?:[a-z0-9-]+-)?" + re.escape(name) + r"(?:-[a-z0-9]{10})?", n):
            return o
    return None


def policy_problems(objects, build_dir, production=True):
    p = []
    by_kind = {}
    for o in objects:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    configmaps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})
    services = by_kind.get("Service", {})
    wls = workloads(objects)

    def secret_keys(s):
        return set((s.get("data") or {}).keys()) | set((s.get("stringData") or {}).keys())

    for w in wls:
        spec = w["spec"]["template"]["spec"]
        pod_sc = spec.get("securityContext") or {}
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for c in spec.get("containers", []):
            where = "%s container %s" % (name_of(w), c["name"])
            for probe in ("readinessProbe", "livenessProbe"):
                if not c.get(probe):
                    p.append("%s: no %s" % (where, probe))
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(kind) or {}):
                        p.append("%s: no %s.%s" % (where, kind, r))
            sc = c.get("securityContext") or {}
            non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
            uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
            if non_root is not True or uid in (None, 0):
                p.append("%s: not pinned to a non-root user (runAsNonRoot and runAsUser)" % where)
            if sc.get("allowPrivilegeEscalation") is not False:
                p.append("%s: allowPrivilegeEscalation is not false" % where)
            if sc.get("privileged"):
                p.append("%s: privileged" % where)
            image = c.get("image", "")
            tag = image.rsplit("/", 1)[-1]
            if "@sha256:" not in image and (":" not in tag or tag.endswith(":latest")):
                p.append("%s: image %r has no pinned tag" % (where, image))
            # References to ConfigMaps and Secrets, with their keys.
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {})
                if "secretKeyRef" in ref:
                    r = ref["secretKeyRef"]
                    if r["name"] not in secrets:
                        p.append("%s: env %s: Secret %s does not exist" % (where, e["name"], r["name"]))
                    elif r["key"] not in secret_keys(secrets[r["name"]]):
                        p.append("%s: env %s: Secret %s has no key %s" % (where, e["name"], r["name"], r["key"]))
                if "configMapKeyRef" in ref:
                    r = ref["configMapKeyRef"]
                    if r["name"] not in configmaps or r["key"] not in (configmaps[r["name"]].get("data") or {}):
                        p.append("%s: env %s: ConfigMap %s key %s missing" % (where, e["name"], r["name"], r["key"]))
            # Dev mode accepts the placeholder secrets published with the
            # repository: the dev overlay's business, never production's.
            if production and ("SWITCHBOARD_DEV" in {e["name"] for e in c.get("env") or []} or
                                any(a == "--dev" or a.startswith("--dev=") for a in c.get("args") or [])):
                p.append("%s: runs in dev mode (SWITCHBOARD_DEV or --dev) in production" % where)
            for m in c.get("volumeMounts") or []:
                if m["name"] not in volumes:
                    p.append("%s: mounts unknown volume %s" % (where, m["name"]))
        issued = {c["spec"]["secretName"] for c in by_kind.get("Certificate", {}).values()}  # by cert-manager
        for v in volumes.values():
            if "configMap" in v and v["configMap"]["name"] not in configmaps:
                p.append("%s: volume %s: ConfigMap %s does not exist" % (name_of(w), v["name"], v["configMap"]["name"]))
            if "secret" in v and v["secret"]["secretName"] not in secrets and v["secret"]["secretName"] not in issued:
                p.append("%s: volume %s: Secret %s does not exist" % (name_of(w), v["name"], v["secret"]["secretName"]))

    def pods_matching(selector):
        return [w for w in wls if selects(selector, w["spec"]["template"]["metadata"].get("labels") or {})]

    for s in services.values():
        sel = s["spec"].get("selector")
        matched = pods_matching(sel)
        if not matched:
            p.append("%s: selects no pods (%s)" % (name_of(s), sel))
        for port in s["spec"].get("ports", []):
            tp = port.get("targetPort", port["port"])
            names = {cp.get("name") for w in matched for c in w["spec"]["template"]["spec"]["containers"]
                     for cp in c.get("ports") or []}
            numbers = {cp["containerPort"] for w in matched for c in w["spec"]["template"]["spec"]["containers"]
                       for cp in c.get("ports") or []}
            if matched and tp not in names and tp not in numbers:
                p.append("%s: targetPort %s is no container port of the pods it selects" % (name_of(s), tp))
    # Backends reach control's API by a documented label (deploy/README.md,
    # "Your backends"): some NetworkPolicy rule on control's port admits pods
    # labelled switchboard.io/api-client in any namespace.
    ctl_pods = [w for w in wls if role_of(w) == "control"]
    if ctl_pods:
        labels = ctl_pods[0]["spec"]["template"]["metadata"].get("labels") or {}
        admitted = False
        for np in by_kind.get("NetworkPolicy", {}).values():
            if not selects(np["spec"].get("podSelector", {}).get("matchLabels"), labels):
                continue
            for rule in np["spec"].get("ingress") or []:
                for peer in rule.get("from") or []:
                    # A backend's own labels are its own (name, instance):
                    # the label alone must be enough.
                    if "namespaceSelector" in peer and not (peer["namespaceSelector"] or {}) and \
                            label_selects(peer.get("podSelector"), {"switchboard.io/api-client": "true"}) and \
                            not label_selects(peer.get("podSelector"), {}):
                        admitted = True
        if not admitted:
            p.append("control: no NetworkPolicy rule admits API clients (pods labelled "
                     "switchboard.io/api-client: \"true\" in any namespace)")
    # Metrics (deploy/README.md, Metrics): Prometheus reaches each process's
    # operator-side port (gateway and http: "operator", control: "health")
    # through a NetworkPolicy rule for pods labelled switchboard.io/metrics-scraper.
    for w in wls:
        role = role_of(w)
        port_name = {"gateway": "operator", "http": "operator", "control": "health"}.get(role)
        if port_name is None:
            continue
        labels = w["spec"]["template"]["metadata"].get("labels") or {}
        c0 = w["spec"]["template"]["spec"]["containers"][0]
        port = next((cp["containerPort"] for cp in c0.get("ports") or [] if cp.get("name") == port_name), None)
        scraped = False
        for np in by_kind.get("NetworkPolicy", {}).values():
            if port is None or not selects(np["spec"].get("podSelector", {}).get("matchLabels"), labels):
                continue
            for rule in np["spec"].get("ingress") or []:
                ports = {x.get("port") for x in rule.get("ports") or []}
                if rule.get("ports") and port not in ports and port_name not in ports:
                    continue
                for peer in rule.get("from") or []:
                    if label_selects(peer.get("podSelector"), {"switchboard.io/metrics-scraper": "true"}) and \
                            not label_selects(peer.get("podSelector"), {}):
                        scraped = True
        if not scraped:
            p.append("%s: no NetworkPolicy lets Prometheus (switchboard.io/metrics-scraper) reach its %s port %s"
                     % (name_of(w), port_name, port))
    # Surfaces (issue 22 point 4): what faces clients (a LoadBalancer or
    # NodePort Service, an Ingress) reaches only the clients' ports; the
    # server API only through an Ingress marked as the API's, with TLS and a
    # class; the gateway's probes (with their reasons) use the operator port.
    def port_names(svc, port):
        tp = port.get("targetPort", port["port"])
        names = set()
        for w in pods_matching(svc["spec"].get("selector")):
            for c in w["spec"]["template"]["spec"]["containers"]:
                for cp in c.get("ports") or []:
                    if tp in (cp.get("name"), cp["containerPort"]):
                        names.add(cp.get("name"))
        return names
    for s in services.values():
        public = s["spec"].get("type") in ("LoadBalancer", "NodePort")
        gw_svc = any(role_of(w) == "gateway" for w in pods_matching(s["spec"].get("selector")))
        # The metrics Service (components/monitoring) is Prometheus's way to
        # the pods, never a client's: headless, internal, marked as such.
        if not public and s["spec"].get("clusterIP") == "None" and \
                (s["metadata"].get("labels") or {}).get("switchboard.io/metrics") == "true":
            continue
        for port in s["spec"].get("ports", []):
            names = port_names(s, port)
            if (public or gw_svc) and not names <= CLIENT_PORTS:
                p.append("%s: exposes port %s (%s), which is not a clients' port %s" % (
                    name_of(s), port.get("name", port["port"]), ", ".join(sorted(n or "?" for n in names)),
                    sorted(CLIENT_PORTS)))
    # Production clients get wss://: the gateway's public Service targets its
    # TLS port, and the pod has a certificate from a mounted Secret.
    if production:
        for s in services.values():
            if s["spec"].get("type") not in ("LoadBalancer", "NodePort"):
                continue
            pods = [w for w in pods_matching(s["spec"].get("selector")) if role_of(w) == "gateway"]
            if not pods:
                continue
            names = set().union(*(port_names(s, port) for port in s["spec"].get("ports", [])))
            c = pods[0]["spec"]["template"]["spec"]["containers"][0]
            env = {e["name"]: e.get("value", "") for e in c.get("env") or []}
            mounts = [m["mountPath"] for m in c.get("volumeMounts") or []]
            cert = env.get("SWITCHBOARD_GATEWAY_TLS_CERT", "")
            if names != {"wss"} or not cert or not any(cert.startswith(m.rstrip("/") + "/") for m in mounts):
                p.append("%s: clients get no TLS (the public Service must target the gateway's wss port, whose "
                         "certificate comes from a mounted Secret: components/gateway-tls)" % name_of(s))
    for ing in by_kind.get("Ingress", {}).values():
        api = (ing["metadata"].get("labels") or {}).get("switchboard.io/surface") == "api"
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                svc = services.get(path["backend"]["service"]["name"])
                if svc is None:
                    continue
                roles = {role_of(w) for w in pods_matching(svc["spec"].get("selector"))}
                if "http" in roles and not api:
                    p.append("%s: publishes the server API (switchboard-http) without the label "
                             "switchboard.io/surface: api (components/api-ingress)" % name_of(ing))
                if roles - {"http", "gateway"}:
                    p.append("%s: publishes %s, which is no public surface" % (name_of(ing), sorted(roles)))
        if api and (not ing["spec"].get("tls") or not ing["spec"].get("ingressClassName")):
            p.append("%s: the server API's Ingress needs tls and ingressClassName" % name_of(ing))
    for w in wls:
        if role_of(w) != "gateway":
            continue
        for c in w["spec"]["template"]["spec"]["containers"]:
            for probe in ("readinessProbe", "livenessProbe"):
                port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
                if port is not None and port != "operator":
                    p.append("%s: %s on port %s: the gateway's probes use its operator port" % (name_of(w), probe, port))
    # Manifest details that bite (issue 22 point 8).
    hpa_targets = {h["spec"]["scaleTargetRef"]["name"] for h in by_kind.get("HorizontalPodAutoscaler", {}).values()}
    pdbs = list(by_kind.get("PodDisruptionBudget", {}).values())
    for w in wls:
        spec = w["spec"]["template"]["spec"]
        if name_of(w).split("/")[-1] in hpa_targets and "replicas" in w["spec"]:
            p.append("%s: sets replicas next to its HPA (every apply scales it back, draining sessions)" % name_of(w))
        for t in spec.get("topologySpreadConstraints") or []:
            if t.get("whenUnsatisfiable") == "DoNotSchedule" and t.get("nodeTaintsPolicy") != "Honor":
                p.append("%s: a hard spread over %s without nodeTaintsPolicy: Honor (tainted nodes count: a surge "
                         "pod can stay Pending)" % (name_of(w), t.get("topologyKey")))
        if not spec.get("topologySpreadConstraints"):
            p.append("%s: no topologySpreadConstraints (its replicas may share one node)" % name_of(w))
        labels = w["spec"]["template"]["metadata"].get("labels") or {}
        if not any(selects((x["spec"].get("selector") or {}).get("matchLabels"), labels) for x in pdbs):
            p.append("%s: no PodDisruptionBudget (a node drain may take every replica at once)" % name_of(w))
        secret_vars = {e["name"] for c in spec.get("containers", []) for e in c.get("env") or []
                       if "secretKeyRef" in (e.get("valueFrom") or {})}
        for c in spec.get("containers", []):
            for a in (c.get("command") or []) + (c.get("args") or []):
                for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a):
                    if var in secret_vars:
                        p.append("%s: a secret (%s) on the command line, which any process on the node can "
                                 "read: give it through the environment or a file" % (name_of(w), var))
            for image_label in [(w["spec"]["template"]["metadata"].get("labels") or {}).get("app.kubernetes.io/version")]:
                image = c.get("image", "")
                if image.startswith("localhost/switchboard/") and image.rsplit(":", 1)[-1] != image_label:
                    p.append("%s: label app.kubernetes.io/version %s is not its image's tag (%s)"
                             % (name_of(w), image_label, image))
    for o in objects:
        have = o["metadata"].get("labels") or {}
        missing = [k for k in RECOMMENDED_LABELS if k not in have and o["kind"] != "Namespace"]
        if missing:
            p.append("%s: lacks the labels %s" % (name_of(o), ", ".join(missing)))
    for w in wls:
        have = w["spec"]["template"]["metadata"].get("labels") or {}
        missing = [k for k in RECOMMENDED_LABELS if k not in have]
        if missing:
            p.append("%s: its pods lack the labels %s" % (name_of(w), ", ".join(missing)))

    for pdb in by_kind.get("PodDisruptionBudget", {}).values():
        if not pods_matching(pdb["spec"]["selector"].get("matchLabels")):
            p.append("%s: selects no pods" % name_of(pdb))
    for w in wls:
        if not selects(w["spec"]["selector"].get("matchLabels"), w["spec"]["template"]["metadata"].get("labels") or {}):
            p.append("%s: its selector does not match its own pod template" % name_of(w))
    for hpa in by_kind.get("HorizontalPodAutoscaler", {}).values():
        # Scaling on sessions (components/monitoring) keeps CPU beside it,
        # and scales out before a pod turns unready for being full.
        kinds = [m["type"] for m in hpa["spec"].get("metrics") or []]
        sessions = [m for m in hpa["spec"].get("metrics") or [] if m["type"] == "Pods"
                    and m["pods"]["metric"]["name"] == "switchboard_gateway_sessions"]
        if sessions and "Resource" not in kinds:
            p.append("%s: scales on sessions without CPU as a second metric" % name_of(hpa))
        if sessions:
            cm0 = generated(configmaps, "switchboard-config")
            gw_cfg = yaml.safe_load(cm0["data"]["switchboard.yaml"])["gateway"] if cm0 else {}
            full = gw_cfg.get("max_sessions", 18000) * gw_cfg.get("unready_at_percent", 95) / 100
            target = float(sessions[0]["pods"]["target"]["averageValue"])
            if target >= full:
                p.append("%s: sessions target %d per pod is not below where a gateway turns unready (%d)"
                         % (name_of(hpa), target, full))
        ref = hpa["spec"]["scaleTargetRef"]
        if ref["name"] not in by_kind.get(ref["kind"], {}):
            p.append("%s: scales %s/%s, which does not exist" % (name_of(hpa), ref["kind"], ref["name"]))
    for ing in by_kind.get("Ingress", {}).values():
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                svc = path["backend"]["service"]
                s = services.get(svc["name"])
                if s is None:
                    p.append("%s: backend Service %s does not exist" % (name_of(ing), svc["name"]))
                    continue
                want = svc["port"].get("name", svc["port"].get("number"))
                if want not in {x.get("name") for x in s["spec"]["ports"]} | {x["port"] for x in s["spec"]["ports"]}:
                    p.append("%s: backend port %s is not a port of Service %s" % (name_of(ing), want, svc["name"]))

    # The config, as every Switchboard pod reads it.
    cm = generated(configmaps, "switchboard-config")
    if cm is None:
        return p + ["ConfigMap switchboard-config is missing"]
    text = cm["data"]["switchboard.yaml"]
    # As the gateway reads it (the names it talks to follow its instance).
    gw_wl = next((w for w in wls if role_of(w) == "gateway"), None)
    config = yaml.safe_load(expand_config(text, pod_env(gw_wl) if gw_wl else {}))
    body = re.sub(r"(?m)^\s*#.*$", "", text)  # comments may mention ${VAR}
    needed = set(re.findall(r"\$\{([A-Z0-9_]+)\}", body))  # no default: every reader needs it
    by_role = {role_of(w): w for w in wls}

    def container(role):
        w = by_role.get(role)
        return w["spec"]["template"]["spec"]["containers"][0] if w else None

    for role, want in ROLE_ENV.items():
        c = container(role)
        if c is None:
            p.append("no workload for %s" % role)
            continue
        have = {e["name"] for e in c.get("env") or []}
        reads_config = role in ("control", "gateway")
        for var in sorted(want | (needed if reads_config else set())):
            if var not in have:
                p.append("%s: the config needs ${%s} but the pod's environment lacks it" % (role, var))
        for var in sorted(ROLE_FORBIDDEN_ENV.get(role, set()) & have):
            p.append("%s: gets %s, a secret it never uses" % (role, var))

    def container_ports(role):
        c = container(role)
        return {cp["containerPort"] for cp in c.get("ports") or []} if c else set()

    gw_port = config["gateway"]["port"]
    if gw_port not in container_ports("gateway"):
        p.append("gateway: config gateway.port %s is not a container port %s" % (gw_port, container_ports("gateway")))
    gw_c = container("gateway")
    op = config["gateway"].get("operator_listen")
    op_port = next((cp["containerPort"] for cp in (gw_c.get("ports") or []) if cp.get("name") == "operator"),
                   None) if gw_c else None
    if not op or op_port is None or port_of(op) != op_port:
        p.append("gateway: config gateway.operator_listen %s is not the container port named operator (%s)"
                 % (op, op_port))
    for field in ("listen", "health_listen"):
        port = port_of(config["control"][field])
        if port not in container_ports("control"):
            p.append("control: config control.%s port %s is not a container port" % (field, port))
    http = container("http")
    if http is not None:
        listen = arg_value(http.get("args", []), "--listen")
        if listen is None or port_of(listen) not in container_ports("http"):
            p.append("http: --listen %s is not a container port" % listen)
        target = arg_value(http.get("args", []), "--control")
        if target is not None:
            target = expand_dollar(target, pod_env(by_role["http"]))
        if target is None or target.split(":")[0] not in services or \
                port_of(target) not in {x["port"] for x in services[target.split(":")[0]]["spec"]["ports"]}:
            p.append("http: --control %s is no Service port" % target)
    nats_url = config["nats_url"]
    nats_svc = re.match(r"nats://([^:/]+):(\d+)", nats_url)
    if not nats_svc or nats_svc.group(1) not in services or \
            int(nats_svc.group(2)) not in {x["port"] for x in services[nats_svc.group(1)]["spec"]["ports"]}:
        p.append("config nats_url %s is no Service port" % nats_url)
    for addr in config["control"]["addresses"]:
        host, port = addr.rsplit(":", 1)
        s = services.get(host)
        if s is None or s["spec"].get("clusterIP") != "None" or not s["spec"].get("publishNotReadyAddresses"):
            p.append("control.addresses %s: must be a headless Service that publishes not-ready replicas" % addr)
        elif int(port) not in {x["port"] for x in s["spec"]["ports"]}:
            p.append("control.addresses %s: no such port on the Service" % addr)

    # Gateway drain: grace period >= preStop + drain + close handshakes (10 s).
    gw = by_role.get("gateway")
    if gw is not None:
        spec = gw["spec"]["template"]["spec"]
        c = spec["containers"][0]
        pre = (((c.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command") or []
        pre_s = float(pre[-1]) if pre and pre[0].endswith("sleep") else 0
        drain_s = int(arg_value(c.get("args", []), "--drain_ms") or 2000) / 1000
        delay_s = int(arg_value(c.get("args", []), "--drain_delay_ms") or 0) / 1000
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if grace < pre_s + delay_s + drain_s + 10:
            p.append("gateway: terminationGracePeriodSeconds %s < preStop %s + drain %s + 10 s" % (grace, pre_s, drain_s))

    # Control drain: grace period >= shutdown_delay + the longest call
    # (max_timeout_ms) + 2 s, or calls in flight are cut at SIGKILL.
    ctl_wl = by_role.get("control")
    if ctl_wl is not None:
        cc = config["control"]
        need = (cc.get("shutdown_delay_ms", 0) + cc.get("max_timeout_ms", 10000)) / 1000 + 2
        grace = ctl_wl["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        if grace < need:
            p.append("control: terminationGracePeriodSeconds %s < shutdown_delay_ms + max_timeout_ms + 2 s (%s)"
                     % (grace, need))

    # NATS: lame duck mode before SIGTERM, and time for it.
    nats_wl = by_role.get("nats")
    nats_cm0 = generated(configmaps, "switchboard-nats-config")
    if nats_wl is not None and nats_cm0 is not None:
        c = nats_wl["spec"]["template"]["spec"]["containers"][0]
        pre = " ".join((((c.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command") or [])
        conf = nats_cm0["data"]["nats.conf"]
        m = re.search(r'(?m)^lame_duck_duration:\s*"?(\d+)s"?', conf)
        g = re.search(r'(?m)^lame_duck_grace_period:\s*"?(\d+)s"?', conf)
        if "--signal ldm" not in pre or m is None:
            p.append("nats: no lame duck mode on termination (preStop nats-server --signal ldm, lame_duck_duration)")
        else:
            need = int(m.group(1)) + (int(g.group(1)) if g else 10) + 10
            grace = nats_wl["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
            if grace < need:
                p.append("nats: terminationGracePeriodSeconds %s < lame_duck_duration + grace period + 10 s (%s)"
                         % (grace, need))
    # switchboard-http: its shutdown delay and in-flight calls fit the grace period.
    http_wl = by_role.get("http")
    if http_wl is not None:
        c = http_wl["spec"]["template"]["spec"]["containers"][0]
        delay = arg_value(c.get("args", []), "--shutdown_delay")
        delay_s = float(delay.rstrip("s")) if delay else 0
        grace = http_wl["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        if delay is None:
            p.append("http: no --shutdown_delay (load balancers keep sending requests to a stopping pod)")
        elif grace < delay_s + 5:
            p.append("http: terminationGracePeriodSeconds %s < --shutdown_delay %s + 5 s for calls in flight"
                     % (grace, delay))

    # NATS permissions as switchboardctl prints them for this config.
    nats_cm = generated(configmaps, "switchboard-nats-config")
    ctl = os.path.join(build_dir, "cli", "switchboardctl")
    if nats_cm is None:
        p.append("ConfigMap switchboard-nats-config is missing")
    elif not os.path.exists(ctl):
        p.append("cannot compare NATS permissions: %s is not built" % ctl)
    else:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            f.write(text)
            f.flush()
            env = dict(os.environ)
            for var in set(re.findall(r"\$\{([A-Z0-9_]+)", text)):
                if "_TLS_" not in var:  # file paths keep their default (none)
                    env[var] = "check-placeholder-%s" % var.lower()
            out = subprocess.run([ctl, "--config", f.name, "nats-config"], capture_output=True, text=True,
                                 env=env, timeout=30)
        if out.returncode != 0:
            p.append("switchboardctl nats-config on the ConfigMap's config failed: %s" % out.stderr.strip())
        else:
            def perms(conf):
                return dict(re.findall(r'user:\s*"([^"]+)".*?permissions:\s*(\{.*?\}\}+)', conf, re.S))
            want, have = perms(out.stdout), perms(nats_cm["data"]["nats.conf"])
            if not want or want != have:
                p.append("nats.conf permissions %s differ from switchboardctl nats-config %s" % (have, want))
    if nats_cm is not None:
        p += nats_conf_problems(nats_cm["data"]["nats.conf"], container("nats"), secrets)
    return p


# Passwords go into the NATS route URLs and into nats.conf: what the
# nats-secrets.env.example tells operators to use.
PASSWORD_ALPHABET = re.compile(r"^[A-Za-z0-9._~-]+$")
# Passwords of that alphabet that nats-server would read as something else
# were they put into its config unquoted: a number, a boolean, a date, a
# size suffix, a negative number.
AWKWARD_PASSWORDS = ["12345", "true", "0-1Z", "-abc", "9e9x", "1k", "no"]


def nats_conf_problems(conf, c, secrets):
    """nats.conf parses (nats-server -t) with the environment the NATS pod gets,
    for every awkward password of the allowed alphabet, and the Secret's values
    are of that alphabet."""
    p = []
    if c is None:
        return p
    server = shutil.which("nats-server")
    if server is None:
        return ["cannot check nats.conf: nats-server is not installed"]
    for e in c.get("env") or []:
        r = (e.get("valueFrom") or {}).get("secretKeyRef")
        if r and r["name"] in secrets:
            s = secrets[r["name"]]
            value = (s.get("stringData") or {}).get(r["key"])
            if value is None and r["key"] in (s.get("data") or {}):
                value = base64.b64decode(s["data"][r["key"]].replace("\n", "")).decode(errors="replace")
            if value is not None and not PASSWORD_ALPHABET.match(value):
                p.append("nats: Secret %s key %s has characters other than letters, digits and -._~" % (r["name"], r["key"]))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "nats.conf")
        with open(path, "w") as f:
            f.write(conf)
        for pw in AWKWARD_PASSWORDS:
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
            for e in c.get("env") or []:
                if "valueFrom" in e:
                    src = e["valueFrom"]
                    env[e["name"]] = pw if "secretKeyRef" in src else "1" if "resourceFieldRef" in src else "x"
                else:  # $(VAR) of an earlier entry, as the kubelet expands it
                    env[e["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                                            lambda m: env.get(m.group(1), m.group(0)), e.get("value", ""))
            out = subprocess.run([server, "-c", path, "-t"], capture_output=True, text=True, env=env, timeout=30)
            if out.returncode != 0 or "is valid" not in out.stdout + out.stderr:
                p.append("nats.conf does not parse with the password %r: %s" % (pw, (out.stdout + out.stderr).strip()))
                break
    return p


def two_install_problems(first, second):
    """Two installs in one namespace (production with instance-selectors, and
    overlays/second-install) stay apart: no object of one has the other's
    name; no selector of one (Service, workload, PDB, spread constraint,
    NetworkPolicy) takes the other's pods; the Services each install's pods
    talk to (config, --control, NATS routes) are its own; each has its own
    TLS Secret; the second renders no Namespace (deleting it must not delete
    the namespace the first one lives in)."""
    p = []
    installs = {"first": first, "second": second}
    names = {k: {(o["kind"], o["metadata"]["name"]) for o in objs if o["kind"] != "Namespace"}
             for k, objs in installs.items()}
    for kind, name in sorted(names["first"] & names["second"]):
        p.append("two installs: both have %s/%s" % (kind, name))
    if any(o["kind"] == "Namespace" for o in second):
        p.append("two installs: the second renders a Namespace (deleting it would delete the first install's)")

    def pods(objs):
        return [(name_of(w), w["spec"]["template"]["metadata"].get("labels") or {}) for w in workloads(objs)]

    def selectors(objs):
        for o in objs:
            spec = o.get("spec") or {}
            if o["kind"] == "Service" and spec.get("selector"):
                yield name_of(o), {"matchLabels": spec["selector"]}
            if o["kind"] in ("Deployment", "StatefulSet", "PodDisruptionBudget"):
                yield name_of(o), spec["selector"]
            if o["kind"] in ("Deployment", "StatefulSet"):
                for t in spec["template"]["spec"].get("topologySpreadConstraints") or []:
                    yield name_of(o) + " spread", t["labelSelector"]
            if o["kind"] == "NetworkPolicy":
                yield name_of(o), spec["podSelector"]
                for rule in spec.get("ingress") or []:
                    for peer in rule.get("from") or []:
                        if "podSelector" in peer and "namespaceSelector" not in peer:
                            yield name_of(o) + " ingress", peer["podSelector"]

    for a, b in (("first", "second"), ("second", "first")):
        for where, sel in selectors(installs[a]):
            for pod, labels in pods(installs[b]):
                if label_selects(sel, labels):
                    p.append("two installs: %s of the %s install selects %s of the %s" % (where, a, pod, b))
    for k, objs in installs.items():
        services = {o["metadata"]["name"] for o in objs if o["kind"] == "Service"}
        sts = {o["metadata"]["name"]: o["spec"].get("serviceName") for o in objs if o["kind"] == "StatefulSet"}
        wls = {role_of(w): w for w in workloads(objs)}
        cm = generated({o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap"}, "switchboard-config")
        talks_to = []
        for role in ("gateway", "control"):
            if role in wls and cm is not None:
                config = yaml.safe_load(expand_config(cm["data"]["switchboard.yaml"], pod_env(wls[role])))
                talks_to.append((role + " nats_url", re.sub(r"^nats://|:\d+$", "", config["nats_url"])))
                talks_to += [(role + " control.addresses", a.rsplit(":", 1)[0]) for a in config["control"]["addresses"]]
        if "http" in wls:
            target = arg_value(wls["http"]["spec"]["template"]["spec"]["containers"][0].get("args", []), "--control")
            talks_to.append(("http --control", expand_dollar(target or "", pod_env(wls["http"])).rsplit(":", 1)[0]))
        for where, host in talks_to:
            if host not in services:
                p.append("two installs: %s %s is not a Service of the %s install" % (where, host, k))
        if "nats" in wls:
            routes = pod_env(wls["nats"]).get("NATS_CONF_ROUTES", "")
            for pod, svc in re.findall(r"@([a-z0-9-]+)-\d+\.([a-z0-9-]+):", routes):
                if sts.get(pod) != svc or svc not in services:
                    p.append("two installs: a NATS route of the %s install names %s-N.%s, not its own pods" % (k, pod, svc))
    tls = {}
    for k, objs in installs.items():
        gw = next((w for w in workloads(objs) if role_of(w) == "gateway"), None)
        vols = gw["spec"]["template"]["spec"].get("volumes") or [] if gw else []
        tls[k] = {v["secret"]["secretName"] for v in vols if "secret" in v}
        issued = {o["spec"]["secretName"] for o in objs if o["kind"] == "Certificate"}
        for name in issued - tls[k]:
            p.append("two installs: the %s install's Certificate fills %s, which its gateways do not mount" % (k, name))
    for name in sorted(tls["first"] & tls["second"]):
        p.append("two installs: both mount the TLS Secret %s" % name)
    return p


def two_install_self_test(first, second):
    """Each way two installs can collide must be caught."""
    def obj(objs, kind, name):
        return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)

    def gw(objs):
        return next(w for w in workloads(objs) if role_of(w) == "gateway")

    breaks = [
        ("a Service selector without instance", "first",
         lambda f, s: obj(f, "Service", "switchboard-gateway")["spec"]["selector"].pop("app.kubernetes.io/instance"),
         "Service/switchboard-gateway of the first install selects"),
        ("a NetworkPolicy peer without instance", "second",
         lambda f, s: obj(s, "NetworkPolicy", "blue-switchboard-nats")["spec"]["ingress"][0]["from"][0]
         ["podSelector"]["matchLabels"].pop("app.kubernetes.io/instance"), "ingress of the second install selects"),
        ("a hard-coded NATS address", "second",
         lambda f, s: obj(s, "ConfigMap", generated({o["metadata"]["name"]: o for o in s if o["kind"] == "ConfigMap"},
                                                    "switchboard-config")["metadata"]["name"])["data"]
         .update({"switchboard.yaml": generated({o["metadata"]["name"]: o for o in s if o["kind"] == "ConfigMap"},
                                                "switchboard-config")["data"]["switchboard.yaml"]
                  .replace("${SWITCHBOARD_INSTANCE:-switchboard}-nats", "switchboard-nats")}),
         "nats_url switchboard-nats is not a Service of the second install"),
        ("shared TLS Secret", "second",
         lambda f, s: [v["secret"].update(secretName="switchboard-gateway-tls")
                       for v in gw(s)["spec"]["template"]["spec"]["volumes"] if "secret" in v],
         "both mount the TLS Secret"),
        ("the Namespace in the second install", "second",
         lambda f, s: s.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "switchboard"}}),
         "renders a Namespace"),
        ("no name prefix", "second",
         lambda f, s: obj(s, "Service", "blue-switchboard-http")["metadata"].update(name="switchboard-http"),
         "both have Service/switchboard-http"),
    ]
    failed = []
    for what, _, brk, expect in breaks:
        f, s = copy.deepcopy(first), copy.deepcopy(second)
        brk(f, s)
        problems = two_install_problems(f, s)
        if not any(expect in x for x in problems):
            failed.append("two installs, %s: not caught (got %s)" % (what, problems))
    return failed


def self_test(objects, build_dir):
    """Each break must be caught by the check named with it."""
    def find(kind, name):
        return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)

    def gw_container(objs):
        return next(o for o in objs if o["kind"] == "Deployment"
                    and o["metadata"]["name"] == "switchboard-gateway")["spec"]["template"]["spec"]["containers"][0]

    breaks = [
        ("no readiness probe", lambda o: gw_container(o).pop("readinessProbe"), "no readinessProbe"),
        ("no memory limit", lambda o: gw_container(o)["resources"]["limits"].pop("memory"), "no limits.memory"),
        ("root", lambda o: gw_container(o)["securityContext"].update(runAsNonRoot=False), "non-root"),
        ("latest tag", lambda o: gw_container(o).update(image="localhost/switchboard/gateway:latest"), "pinned tag"),
        ("unknown secret key", lambda o: gw_container(o)["env"][2]["valueFrom"]["secretKeyRef"].update(key="nope"),
         "has no key nope"),
        ("service selects nothing",
         lambda o: next(x for x in o if x["kind"] == "Service" and x["metadata"]["name"] == "switchboard-http")
         ["spec"]["selector"].update({"app.kubernetes.io/name": "nobody"}), "selects no pods"),
        ("wrong container port", lambda o: gw_container(o)["ports"][0].update(containerPort=9999),
         "gateway.port"),
        ("secret too many", lambda o: gw_container(o)["env"].append(
            {"name": "SWITCHBOARD_API_KEY", "value": "x"}), "a secret it never uses"),
        ("no way in for backends", lambda o: next(x for x in o if x["kind"] == "NetworkPolicy" and
                                                  x["metadata"]["name"] == "switchboard-control")["spec"]["ingress"][0]
         .update({"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "switchboard-gateway"}}}]}),
         "admits API clients"),
        ("metrics unreachable", lambda o: o.remove(next(x for x in o if x["kind"] == "NetworkPolicy" and
                                                       x["metadata"]["name"] == "switchboard-metrics")),
         "lets Prometheus"),
        ("operator port exposed", lambda o: next(x for x in o if x["kind"] == "Service" and
                                                 x["metadata"]["name"] == "switchboard-gateway")["spec"]["ports"]
         .append({"name": "operator", "port": 9001, "targetPort": "operator"}), "not a clients' port"),
        ("probe on the clients' port", lambda o: gw_container(o)["readinessProbe"]["httpGet"].update(port="ws"),
         "use its operator port"),
        ("API on a public Ingress", lambda o: o.append({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "oops", "namespace": "switchboard"},
            "spec": {"rules": [{"host": "x", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
                "service": {"name": "switchboard-http", "port": {"name": "http"}}}}]}}]}}),
         "without the label"),
        ("replicas next to an HPA", lambda o: next(x for x in o if x["kind"] == "Deployment" and
                                                   x["metadata"]["name"] == "switchboard-gateway")["spec"]
         .update(replicas=3), "sets replicas next to its HPA"),
        ("hard spread without taints policy", lambda o: next(x for x in o if x["kind"] == "Deployment" and
                                                             x["metadata"]["name"] == "switchboard-gateway")["spec"]
         ["template"]["spec"]["topologySpreadConstraints"][0].pop("nodeTaintsPolicy"), "nodeTaintsPolicy"),
        ("no PDB", lambda o: o.remove(next(x for x in o if x["kind"] == "PodDisruptionBudget" and
                                           x["metadata"]["name"] == "switchboard-http")), "no PodDisruptionBudget"),
        ("no spread", lambda o: next(x for x in o if x["kind"] == "Deployment" and
                                     x["metadata"]["name"] == "switchboard-http")["spec"]["template"]["spec"]
         .pop("topologySpreadConstraints"), "no topologySpreadConstraints"),
        ("a label missing", lambda o: next(x for x in o if x["kind"] == "Service" and
                                           x["metadata"]["name"] == "switchboard-gateway")["metadata"]["labels"]
         .pop("app.kubernetes.io/instance"), "lacks the labels app.kubernetes.io/instance"),
        ("version label off", lambda o: gw_container(o).update(image="localhost/switchboard/gateway:9.9.9"),
         "is not its image's tag"),
        ("secret in args", lambda o: next(x for x in o if x["kind"] == "StatefulSet")["spec"]["template"]["spec"]
         ["containers"][0]["args"].append("--routes=nats-route://route:$(NATS_ROUTE_PASSWORD)@x:6222"),
         "a secret (NATS_ROUTE_PASSWORD) on the command line"),
        ("no lame duck", lambda o: next(x for x in o if x["kind"] == "StatefulSet")["spec"]["template"]["spec"]
         ["containers"][0].pop("lifecycle"), "no lame duck mode"),
        ("short NATS grace", lambda o: next(x for x in o if x["kind"] == "StatefulSet")["spec"]["template"]["spec"]
         .update(terminationGracePeriodSeconds=30), "lame_duck_duration + grace period"),
        ("http without shutdown delay", lambda o: next(x for x in o if x["kind"] == "Deployment" and
                                                       x["metadata"]["name"] == "switchboard-http")["spec"]["template"]
         ["spec"]["containers"][0].update(args=["--listen=0.0.0.0:8080", "--control=switchboard-control:50051"]),
         "no --shutdown_delay"),
        ("no TLS for clients", lambda o: gw_container(o)["env"].pop(
            next(i for i, e in enumerate(gw_container(o)["env"]) if e["name"] == "SWITCHBOARD_GATEWAY_TLS_CERT")),
         "clients get no TLS"),
        ("dev mode", lambda o: gw_container(o)["env"].append({"name": "SWITCHBOARD_DEV", "value": "1"}),
         "runs in dev mode"),
        ("short grace", lambda o: next(x for x in o if x["kind"] == "Deployment" and
                                       x["metadata"]["name"] == "switchboard-gateway")["spec"]["template"]["spec"]
         .update(terminationGracePeriodSeconds=5), "terminationGracePeriodSeconds"),
        ("short control grace", lambda o: next(x for x in o if x["kind"] == "Deployment" and
                                               x["metadata"]["name"] == "switchboard-control")["spec"]["template"]
         ["spec"].update(terminationGracePeriodSeconds=8), "control: terminationGracePeriodSeconds"),
        ("permissions drift", lambda o: next(x for x in o if x["kind"] == "ConfigMap" and
                                             x["metadata"]["name"].startswith("switchboard-nats-config"))["data"].update(
            {"nats.conf": "authorization { users = [ {user: \"switchboard-gateway\", password: x, permissions: "
                          "{subscribe: {allow: [\">\"]}}} ] }"}), "permissions"),
        ("unquoted NATS password", lambda o: next(x for x in o if x["kind"] == "ConfigMap" and
                                                  x["metadata"]["name"].startswith("switchboard-nats-config"))["data"]
         .update({"nats.conf": next(x for x in o if x["kind"] == "ConfigMap" and
                                    x["metadata"]["name"].startswith("switchboard-nats-config"))["data"]["nats.conf"]
                  .replace("$NATS_CONF_GATEWAY_PASSWORD", "$SWITCHBOARD_NATS_GATEWAY_PASSWORD")}),
         "does not parse with the password"),
    ]
    failed = []
    for what, mutate, expect in breaks:
        objs = copy.deepcopy(objects)
        mutate(objs)
        problems = policy_problems(objs, build_dir)
        if not any(expect in x for x in problems):
            failed.append("%s: not caught (got %s)" % (what, problems))
    objs = copy.deepcopy(objects)
    gw_container(objs)["imagePullPolicyy"] = "Always"
    if not any("unknown field" in x for x in schema_problems(objs)):
        failed.append("unknown field: not caught by the schema check")
    return failed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--source-dir", default=None)
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="switchboard-k8s-check-")
    try:
        bad = 0
        rendered = {}
        for overlay in OVERLAYS:
            objects = render(overlay, work)
            rendered[overlay] = objects
            problems = schema_problems(objects) + policy_problems(objects, os.path.abspath(a.build_dir),
                                                                  production=overlay.startswith("production"))
            kinds = sorted({o["kind"] for o in objects})
            print("overlays/%s: %d objects (%s), %d problems" % (overlay, len(objects), ", ".join(kinds), len(problems)))
            for x in problems:
                print("  " + x)
            bad += len(problems)
            if a.self_test and overlay == "production":
                failed = self_test(objects, os.path.abspath(a.build_dir))
                print("self-test: %s" % ("every break caught" if not failed else "%d not caught" % len(failed)))
                for x in failed:
                    print("  " + x)
                bad += len(failed)
        problems = two_install_problems(rendered["production-instances"], rendered["second-install"])
        print("two installs in one namespace (production-instances, second-install): %d problems" % len(problems))
        for x in problems:
            print("  " + x)
        bad += len(problems)
        if a.self_test:
            failed = two_install_self_test(rendered["production-instances"], rendered["second-install"])
            print("two installs self-test: %s" % ("every break caught" if not failed else "%d not caught" % len(failed)))
            for x in failed:
                print("  " + x)
            bad += len(failed)
        return 1 if bad else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
