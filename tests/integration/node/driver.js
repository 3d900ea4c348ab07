// Drives real client SDKs for the Python integration tests.
// Reads one JSON command per line on stdin, writes one JSON event per line on
// stdout. Commands:
//   {"op":"centrifuge","name":N,"url":U,"token":T,"client_name":..,"client_version":..}
//   {"op":"raw","name":N,"url":U,"frames":["...", ...]}   plain ws, records every frame
//   {"op":"close","name":N}
//   {"op":"pusher_terminate","name":N,"app_id":..,"key":..,"secret":..,"port":P,"user":U}
'use strict';
const readline = require('readline');
const WebSocket = require('ws');
const { Centrifuge } = require('centrifuge');

const clients = new Map();

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function openCentrifuge(cmd) {
  const c = new Centrifuge(cmd.url, {
    websocket: WebSocket,
    token: cmd.token,
    name: cmd.client_name || 'js',
    version: cmd.client_version || '',
    minReconnectDelay: 100,
    maxReconnectDelay: 500,
  });
  c.on('connected', (ctx) => emit({ event: 'connected', name: cmd.name, client: ctx.client }));
  c.on('connecting', (ctx) => emit({ event: 'connecting', name: cmd.name, code: ctx.code, reason: ctx.reason }));
  c.on('disconnected', (ctx) => emit({ event: 'disconnected', name: cmd.name, code: ctx.code, reason: ctx.reason }));
  c.on('error', (ctx) => emit({ event: 'error', name: cmd.name, message: String(ctx.error && ctx.error.message) }));
  clients.set(cmd.name, { close: () => c.disconnect() });
  c.connect();
}

function openRaw(cmd) {
  const ws = new WebSocket(cmd.url);
  ws.on('open', () => {
    emit({ event: 'raw_open', name: cmd.name });
    for (const f of cmd.frames || []) ws.send(f);
  });
  ws.on('message', (data, isBinary) =>
    emit({ event: 'raw_message', name: cmd.name, data: isBinary ? data.toString('base64') : data.toString() }));
  ws.on('close', (code, reason) => emit({ event: 'raw_close', name: cmd.name, code, reason: reason.toString() }));
  ws.on('error', (err) => emit({ event: 'raw_error', name: cmd.name, message: String(err.message) }));
  clients.set(cmd.name, { close: () => ws.close(), ws });
}

// The official Pusher Channels server SDK, pointed at switchboard-http.
function pusherTerminate(cmd) {
  const Pusher = require('pusher');
  const p = new Pusher({
    appId: cmd.app_id, key: cmd.key, secret: cmd.secret,
    host: '127.0.0.1', port: String(cmd.port), useTLS: false,
  });
  p.terminateUserConnections(cmd.user)
    .then((res) => res.text().then((body) => emit({ event: 'pusher_result', name: cmd.name, status: res.status, body })))
    .catch((e) => emit({ event: 'pusher_result', name: cmd.name, status: e.status || 0, body: String(e.body || ''),
                         error: String(e.message) }));
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    emit({ event: 'driver_error', message: 'bad command: ' + line });
    return;
  }
  try {
    if (cmd.op === 'centrifuge') openCentrifuge(cmd);
    else if (cmd.op === 'raw') openRaw(cmd);
    else if (cmd.op === 'send') clients.get(cmd.name).ws.send(cmd.frame);
    else if (cmd.op === 'pusher_terminate') pusherTerminate(cmd);
    else if (cmd.op === 'close') { const c = clients.get(cmd.name); if (c) c.close(); }
    else emit({ event: 'driver_error', message: 'unknown op ' + cmd.op });
  } catch (e) {
    emit({ event: 'driver_error', message: String(e && e.message) });
  }
});
rl.on('close', () => process.exit(0));
emit({ event: 'ready' });
