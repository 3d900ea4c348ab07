// A demo client for the README's quick start: the real centrifuge SDK.
//   node tests/integration/node/client.js URL TOKEN [NAME [VERSION]]
// Prints one JSON line per event; exits when the server closes the session
// for good (terminal code), e.g. after TerminateUser.
'use strict';
const WebSocket = require('ws');
const { Centrifuge } = require('centrifuge');

const [url, token, name = 'demo-client', version = '1.0'] = process.argv.slice(2);
if (!url || !token) {
  console.error('usage: node client.js URL TOKEN [NAME [VERSION]]');
  process.exit(2);
}
const c = new Centrifuge(url, { websocket: WebSocket, token, name, version });
const log = (event, ctx) => console.log(JSON.stringify({ event, ...ctx }));
c.on('connected', (ctx) => log('connected', { client: ctx.client }));
c.on('connecting', (ctx) => log('connecting', { code: ctx.code, reason: ctx.reason }));
c.on('disconnected', (ctx) => {
  log('disconnected', { code: ctx.code, reason: ctx.reason });
  process.exit(0);
});
c.on('error', (ctx) => log('error', { message: String(ctx.error && ctx.error.message) }));
process.on('SIGINT', () => { c.disconnect(); process.exit(0); });
c.connect();
