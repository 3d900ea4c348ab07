// Drives real client SDKs for the Python integration tests.
// Reads one JSON command per line on stdin, writes one JSON event per line on
// stdout. Commands:
//   {"op":"centrifuge","name":N,"url":U,"token":T,"client_name":..,"client_version":..}
//   {"op":"raw","name":N,"url":U,"frames":["...", ...]}   plain ws, records every frame
//   {"op":"close","name":N}
//   {"op":"centrifuge",...,"protobuf":true}                 the protobuf build of the SDK
//   {"op":"centrifuge",...,"get_token":{"secret":S,"sub":U,"ttl":T}}
//        a getToken callback that signs a fresh HS256 token (exp = now + T s)
//        each time the SDK asks, as an app backend would; emits "get_token"
//   {"op":"pusher","name":N,"key":K,"secret":S,"port":P,"user_data":{...}[,"signin":false][,"bad_signature":true][,"tls":true][,"host":H]}
//   {"op":"pusher_send","name":N,"event":E,"data":D[,"channel":C]}, {"op":"pusher_subscribe","name":N,"channel":C}
//   {"op":"pusher_terminate","name":N,"app_id":..,"key":..,"secret":..,"port":P,"user":U}
//   {"op":"cent","name":N,"url":U,"api_key":K,"call":M,"params":P}   cent.js (Centrifugo's server API client):
//        M is a CentClient method (getInfo, disconnect, ...) or "pipeline" with P a list of {method, params}
'use strict';
const readline = require('readline');
const WebSocket = require('ws');
const crypto = require('crypto');
const { Centrifuge } = require('centrifuge');
const CentrifugeProtobuf = require('centrifuge/build/protobuf').Centrifuge;
const PusherJs = require('pusher-js');

// Record every pusher-js socket's close code, keyed by its socket_id.
const origCreateWebSocket = PusherJs.Runtime.createWebSocket;
PusherJs.Runtime.createWebSocket = function (url) {
  const ws = origCreateWebSocket.call(this, url);
  let socketId = null;
  ws.addEventListener('message', (m) => {
    try {
      const msg = JSON.parse(m.data);
      if (msg.event === 'pusher:connection_established') socketId = JSON.parse(msg.data).socket_id;
    } catch (e) { /* not ours to judge */ }
  });
  ws.addEventListener('close', (e) => emit({ event: 'pusher_ws_close', socket_id: socketId, code: e.code, reason: e.reason }));
  return ws;
};

const clients = new Map();

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function b64url(buf) {
  return Buffer.from(buf).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
}

// An HS256 JWT, as the app's backend would mint it for getToken.
function signToken(secret, claims) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = b64url(crypto.createHmac('sha256', secret).update(`${head}.${body}`).digest());
  return `${head}.${body}.${sig}`;
}

function openCentrifuge(cmd) {
  const Impl = cmd.protobuf ? CentrifugeProtobuf : Centrifuge;
  let tokens = 0;
  const getToken = cmd.get_token ? () => {
    tokens += 1;
    const g = cmd.get_token;
    const exp = Math.floor(Date.now() / 1000) + g.ttl;
    emit({ event: 'get_token', name: cmd.name, count: tokens, exp });
    return Promise.resolve(signToken(g.secret, { sub: g.sub, exp }));
  } : undefined;
  // local_address: the client's source address (127.0.0.x), for per-address caps.
  const Ws = cmd.local_address
    ? class extends WebSocket { constructor(u, p) { super(u, p, { localAddress: cmd.local_address }); } }
    : WebSocket;
  const options = {
    websocket: Ws,
    token: cmd.token || '',
    name: cmd.client_name || 'js',
    version: cmd.client_version || '',
    minReconnectDelay: 100,
    maxReconnectDelay: 500,
  };
  if (getToken) options.getToken = getToken;
  const c = new Impl(cmd.url, options);
  c.on('connected', (ctx) => emit({ event: 'connected', name: cmd.name, client: ctx.client }));
  c.on('connecting', (ctx) => emit({ event: 'connecting', name: cmd.name, code: ctx.code, reason: ctx.reason }));
  c.on('disconnected', (ctx) => emit({ event: 'disconnected', name: cmd.name, code: ctx.code, reason: ctx.reason }));
  c.on('error', (ctx) => emit({ event: 'error', name: cmd.name, type: ctx.type, code: ctx.error && ctx.error.code,
                                message: String(ctx.error && ctx.error.message) }));
  // Server-side subscriptions (the user's personal channel) and what is
  // published on them; the protobuf build hands data over as bytes.
  c.on('subscribed', (ctx) => emit({ event: 'server_subscribed', name: cmd.name, channel: ctx.channel }));
  c.on('publication', (ctx) => emit({
    event: 'publication', name: cmd.name, channel: ctx.channel,
    data: ctx.data instanceof Uint8Array ? JSON.parse(Buffer.from(ctx.data).toString()) : ctx.data,
  }));
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

// pusher-js, signing in through a userAuthentication custom handler that signs
// with the app secret the test hands over.
function openPusher(cmd) {
  const p = new PusherJs(cmd.key, {
    wsHost: cmd.host || '127.0.0.1', wsPort: cmd.port, wssPort: cmd.port, forceTLS: !!cmd.tls, enabledTransports: ['ws'],
    disableStats: true, cluster: 'local',
    userAuthentication: {
      customHandler: (params, callback) => {
        const userData = JSON.stringify(cmd.user_data);
        const secret = cmd.bad_signature ? 'not-the-secret' : cmd.secret;
        const sig = crypto.createHmac('sha256', secret).update(`${params.socketId}::user::${userData}`).digest('hex');
        callback(null, { auth: `${cmd.key}:${sig}`, user_data: userData });
      },
    },
  });
  const name = cmd.name;
  p.connection.bind('state_change', (s) => emit({ event: 'pusher_state', name, previous: s.previous, current: s.current }));
  p.connection.bind('connected', () => {
    emit({ event: 'pusher_connected', name, socket_id: p.connection.socket_id });
    if (cmd.signin !== false) p.signin();
  });
  p.connection.bind('error', (e) => emit({ event: 'pusher_error', name, data: e && e.data ? e.data : null }));
  p.bind('pusher:signin_success', (data) => emit({ event: 'pusher_signin_success', name, data }));
  p.bind('pusher:error', (data) => emit({ event: 'pusher_error_event', name, data }));
  // Events sent to the signed-in user (pusher.user.bind), and what the
  // server says about subscriptions (the user's #server-to-user channel).
  p.user.bind_global((eventName, data) => emit({ event: 'pusher_user_event', name, event_name: eventName, data }));
  p.connection.bind('message', (m) => {
    if (m.event === 'pusher_internal:subscription_succeeded' || m.event === 'pusher:subscription_error') {
      emit({ event: 'pusher_subscription', name, result: m.event, channel: m.channel, data: m.data });
    }
  });
  if (cmd.subscribe) {
    const ch = p.subscribe(cmd.subscribe);
    ch.bind('pusher:subscription_error', (e) => emit({ event: 'pusher_channel_error', name, channel: cmd.subscribe, data: e }));
  }
  clients.set(name, { close: () => p.disconnect(), pusher: p });
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

// The Pusher server SDK's events API: sendToUser, trigger (with params such
// as socket_id) and triggerBatch, pointed at switchboard-http.
function pusherApi(cmd) {
  const Pusher = require('pusher');
  const p = new Pusher({
    appId: cmd.app_id, key: cmd.key, secret: cmd.secret,
    host: '127.0.0.1', port: String(cmd.port), useTLS: false,
  });
  let call;
  try {
    if (cmd.call === 'sendToUser') call = p.sendToUser(cmd.user, cmd.event_name, cmd.data);
    else if (cmd.call === 'trigger') call = p.trigger(cmd.channels, cmd.event_name, cmd.data, cmd.params || {});
    else call = p.triggerBatch(cmd.batch);
  } catch (e) {
    emit({ event: 'pusher_result', name: cmd.name, status: 0, body: '', error: String(e.message) });
    return;
  }
  call
    .then((res) => res.text().then((body) => emit({ event: 'pusher_result', name: cmd.name, status: res.status, body })))
    .catch((e) => emit({ event: 'pusher_result', name: cmd.name, status: e.status || 0, body: String(e.body || ''),
                         error: String(e.message) }));
}

// cent.js, the Centrifugo HTTP API client, pointed at switchboard-http's /api.
function centCall(cmd) {
  const { CentClient } = require('cent.js');
  const client = new CentClient({ url: cmd.url, apiKey: cmd.api_key });
  const done = (ok, value) => emit({ event: 'cent_result', name: cmd.name, ok, value });
  let p;
  if (cmd.call === 'pipeline') p = client.pipeline(cmd.params);
  else p = client[cmd.call](cmd.params);
  p.then((v) => done(true, v)).catch((e) => done(false, { message: String(e && e.message), error: e && e.code !== undefined ? { code: e.code, message: e.message } : null }));
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
    else if (cmd.op === 'pusher_api') pusherApi(cmd);
    else if (cmd.op === 'raw') openRaw(cmd);
    else if (cmd.op === 'send') clients.get(cmd.name).ws.send(cmd.frame);
    else if (cmd.op === 'pusher_terminate') pusherTerminate(cmd);
    else if (cmd.op === 'cent') centCall(cmd);
    else if (cmd.op === 'pusher') openPusher(cmd);
    else if (cmd.op === 'pusher_send') clients.get(cmd.name).pusher.send_event(cmd.event, cmd.data, cmd.channel);
    else if (cmd.op === 'pusher_subscribe') {
      const ch = clients.get(cmd.name).pusher.subscribe(cmd.channel);
      ch.bind('pusher:subscription_error', (e) => emit({ event: 'pusher_subscription_error', name: cmd.name, data: e }));
    }
    else if (cmd.op === 'close') { const c = clients.get(cmd.name); if (c) c.close(); }
    else emit({ event: 'driver_error', message: 'unknown op ' + cmd.op });
  } catch (e) {
    emit({ event: 'driver_error', message: String(e && e.message) });
  }
});
rl.on('close', () => process.exit(0));
emit({ event: 'ready' });
