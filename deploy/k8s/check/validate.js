// Validates Kubernetes objects offline against the API's schemas (the
// validators compiled into the npm package kubernetes-models), and rejects
// fields the schemas do not know: every object is wrapped in a Proxy that
// records which properties the validator reads, and a property it never
// read (of an object it did not iterate as a map) is unknown to the schema.
//
//   node validate.js < objects.json    (a JSON array of objects)
// Prints one line per problem; exit 1 if any.
"use strict";
const fs = require("fs");
const path = require("path");

const schemas = path.join(path.dirname(require.resolve("kubernetes-models/package.json")), "_schemas");
// cert-manager's CRDs (the optional Certificate for the gateway's TLS).
const certManagerSchemas = path.join(
  path.dirname(require.resolve("@kubernetes-models/cert-manager/package.json")), "_schemas");
// prometheus-operator's CRDs (the optional ServiceMonitor and PrometheusRule).
const prometheusOperatorSchemas = path.join(
  path.dirname(require.resolve("@kubernetes-models/prometheus-operator/package.json")), "_schemas");

function validatorFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["core", apiVersion];
  const V = version[0].toUpperCase() + version.slice(1);
  const g = group.replace(/\.k8s\.io$/, "").split(".").map((s) => s[0].toUpperCase() + s.slice(1)).join("");
  const crd = group.split(/[.-]/).map((s) => s[0].toUpperCase() + s.slice(1)).join("");
  for (const file of [path.join(schemas, `IoK8sApi${g}${V}${kind}.js`),
                      path.join(certManagerSchemas, `${crd}${V}${kind}.js`),
                      path.join(prometheusOperatorSchemas, `${crd}${V}${kind}.js`)]) {
    if (fs.existsSync(file)) return require(file).validate;
  }
  return null;
}

// Wraps `value`; `seen` collects "path" for every object and which of its
// keys were read (or all of them, when the validator iterated it).
function track(value, where, seen) {
  if (value === null || typeof value !== "object") return value;
  const entry = { obj: value, read: new Set(), iterated: false };
  seen.set(where, entry);
  return new Proxy(value, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof prop !== "string" || !Object.prototype.hasOwnProperty.call(target, prop)) return v;
      entry.read.add(prop);
      return track(v, `${where}/${prop}`, seen);
    },
    ownKeys(target) {
      entry.iterated = true;
      return Reflect.ownKeys(target);
    },
  });
}

function check(obj) {
  const name = `${obj.kind}/${(obj.metadata || {}).name}`;
  const problems = [];
  const validate = validatorFor(obj.apiVersion || "", obj.kind || "");
  if (!validate) return [`${name}: no schema for ${obj.apiVersion} ${obj.kind}`];
  const seen = new Map();
  const ok = validate(track(obj, "", seen));
  if (!ok) {
    for (const e of validate.errors || []) problems.push(`${name}: ${e.instancePath || "/"} ${e.keyword} ${JSON.stringify(e.params)}`);
  }
  for (const [where, { obj: o, read, iterated }] of seen) {
    if (Array.isArray(o) || iterated) continue;
    for (const key of Object.keys(o)) {
      if (!read.has(key)) problems.push(`${name}: ${where}/${key}: unknown field`);
    }
  }
  return problems;
}

const objects = JSON.parse(fs.readFileSync(0, "utf8"));
const problems = objects.flatMap(check);
for (const p of problems) console.log(p);
console.error(`validate: ${objects.length} objects, ${problems.length} problems`);
process.exit(problems.length ? 1 : 0);
