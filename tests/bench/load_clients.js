// Opens many raw Centrifugo-protocol WebSocket sessions for benchmarks.
//   node load_clients.js '{"urls":[...],"tokens":[...],"count":N,"concurrency":200}'
// Connects `count` sessions round-robin over `urls`, session i using
// tokens[i % tokens.length]; answers server pings; prints
// {"event":"ready","connected":N,"failed":M,"ms":T} once all have answered
// connect, then stays until stdin closes. Once every session has closed it
// prints {"event":"all_closed","codes":{"<close code>":N,...},"errors":E}
// (E counts sockets that failed with an error such as a TCP reset).
'use strict';
// The test clients' node_modules (installed by scripts/setup.sh).
const WebSocket = require(require('path').join(__dirname, '../integration/node/node_modules/ws'));

const cfg = JSON.parse(process.argv[2]);
const sockets = [];
let connected = 0;
let failed = 0;
let started = 0;
let closedCount = 0;
let errors = 0;
const codes = {};
const t0 = Date.now();

function openOne(i) {
  const ws = new WebSocket(cfg.urls[i % cfg.urls.length]);
  sockets.push(ws);
  let done = false;
  const finish = (ok) => {
    if (done) return;
    done = true;
    if (ok) connected++; else failed++;
    if (started < cfg.count) openOne(started++);
    if (connected + failed === cfg.count) {
      process.stdout.write(JSON.stringify({ event: 'ready', connected, failed, ms: Date.now() - t0 }) + '\n');
    }
  };
  ws.on('open', () => ws.send(JSON.stringify({ id: 1, connect: { token: cfg.tokens[i % cfg.tokens.length], name: 'bench' } })));
  ws.on('message', (data) => {
    const text = data.toString();
    if (text === '{}') { ws.send('{}'); return; }
    finish(text.includes('"connect"'));
  });
  ws.on('error', () => { errors++; finish(false); });
  ws.on('close', (code) => {
    finish(false);
    codes[code] = (codes[code] || 0) + 1;
    if (++closedCount === cfg.count) {
      process.stdout.write(JSON.stringify({ event: 'all_closed', codes, errors }) + '\n');
    }
  });
}

for (; started < Math.min(cfg.concurrency || 200, cfg.count); started++) openOne(started);
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
