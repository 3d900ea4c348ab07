#!/usr/bin/env node
// Lists a user's live sessions across the whole Switchboard fleet and, with
// --terminate, logs them out everywhere except the devices in --keep.
//
//   node examples/node/sessions.js 42
//   node examples/node/sessions.js 42 --terminate --keep <client id>,<client id>
//
// Connects to SWITCHBOARD_ADDR (default 127.0.0.1:50051) with the API key in
// SWITCHBOARD_API_KEY (default: the dev key of config/switchboard.yaml). The
// .proto files are loaded at run time (@grpc/proto-loader): the repository's
// proto/ and googleapis (GOOGLEAPIS, default Debian's copy).
//
// An answer with complete=false lacks what the gateways it names hold. As the
// README recommends: ask again a couple of times with a short pause; a list
// that stays incomplete is shown as such, never as "these are all the
// sessions"; a terminate that stays incomplete may have left sessions open on
// the named gateways (calling it again closes what is left). Exit status: 0
// complete, 3 still incomplete, 1 the call failed.
"use strict";
const path = require("path");
const { parseArgs } = require("util");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const ATTEMPTS = 3;
const DEADLINE_MS = 2000;

const googleapis = process.env.GOOGLEAPIS ||
  "/usr/share/gocode/src/github.com/grpc-ecosystem/grpc-gateway/third_party/googleapis";
const definition = protoLoader.loadSync("switchboard/v1/control.proto", {
  includeDirs: [path.join(__dirname, "..", "..", "proto"), googleapis],
  keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true,
});
const { Control } = grpc.loadPackageDefinition(definition).switchboard.v1;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// "gw-2 (did not answer before the deadline), ..." for an incomplete answer.
function missing(cov) {
  const names = cov.gateways_missing.length ? cov.gateways_missing : ["?"];
  return names.map((g) => `${g} (${cov.missing_reasons[g] || cov.incomplete_reason || "no reason given"})`).join(", ");
}

// Calls until the answer is complete, at most ATTEMPTS times.
async function withRetries(what, call, coverageOf) {
  for (let attempt = 1; ; attempt++) {
    const resp = await call();
    const cov = coverageOf(resp);
    if (cov.complete || attempt === ATTEMPTS) return [resp, cov];
    const pause = 250 * attempt;
    console.error(`${what}: incomplete (attempt ${attempt} of ${ATTEMPTS}): missing ${missing(cov)}; ` +
                  `asking again in ${pause} ms`);
    await sleep(pause);
  }
}

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      app: { type: "string", default: process.env.SWITCHBOARD_APP || "demo" },
      terminate: { type: "boolean", default: false },
      keep: { type: "string", default: "" },
    },
  });
  if (positionals.length !== 1) {
    console.error("usage: node sessions.js [--app APP] [--terminate] [--keep ID,ID] USER");
    return 2;
  }
  const user = positionals[0];
  const app = values.app;
  const client = new Control(process.env.SWITCHBOARD_ADDR || "127.0.0.1:50051", grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  md.set("authorization", "apikey " + (process.env.SWITCHBOARD_API_KEY || "dev-api-key-change-me"));
  const call = (method, req) => new Promise((resolve, reject) =>
    client[method](req, md, { deadline: Date.now() + DEADLINE_MS }, (err, resp) => (err ? reject(err) : resolve(resp))));

  try {
    const [resp, cov] = await withRetries("UserConnections",
      () => call("UserConnections", { app_id: app, user_id: user }), (r) => r.result);
    const conns = resp.result.connections;
    const state = cov.complete ? "complete" : `INCOMPLETE: missing ${missing(cov)}: a session there may not be listed`;
    console.log(`user ${user} in app ${app}: ${Object.keys(conns).length} connection(s), ${state}`);
    for (const id of Object.keys(conns).sort()) {
      const c = conns[id];
      console.log(`  ${id} app=${c.app_name} ${c.app_version} transport=${c.transport}/${c.protocol} gateway=${c.gateway}`);
    }
    if (!values.terminate) return cov.complete ? 0 : 3;

    const keep = values.keep.split(",").filter((k) => k);
    let closed = 0;
    // Again until complete: a second call closes what the first could not reach.
    const [, tcov] = await withRetries("TerminateUser", async () => {
      const r = await call("TerminateUser", { app_id: app, user_id: user, except_client_ids: keep });
      closed += r.closed;
      return r;
    }, (r) => r.coverage);
    if (!tcov.complete) {
      console.log(`terminated: closed ${closed} connection(s), INCOMPLETE: missing ${missing(tcov)}: ` +
                  "sessions there may still be open");
      return 3;
    }
    console.log(`terminated: closed ${closed} connection(s), kept ${keep.length}, complete`);
    return cov.complete ? 0 : 3;
  } catch (err) {
    console.error(`error: ${grpc.status[err.code] || err.code}: ${err.details}`);
    return 1;
  } finally {
    client.close();
  }
}

main().then((code) => { process.exitCode = code; });
