// Drives the admin page (switchboard-http /admin) in Debian's headless
// Chromium with puppeteer-core, as an operator would, and prints one JSON
// line per step ({"event": ..., ...}); the Python test checks them and the
// real clients. Screenshots go to OUT_DIR.
//   node admin_page.js ADMIN_URL API_KEY APP USER DISCONNECT_CLIENT KEEP_CLIENT OUT_DIR
const puppeteer = require('puppeteer-core');
const path = require('path');

const say = (ev) => process.stdout.write(JSON.stringify(ev) + '\n');

async function rows(page) {
  return page.$$eval('#connections tbody tr', (trs) => trs.map((tr) => ({
    client: tr.dataset.clientId,
    cells: Array.from(tr.querySelectorAll('td')).map((td) => td.textContent),
    metaHtml: tr.querySelector('td.meta').innerHTML,
  })));
}

async function waitRows(page, n) {
  await page.waitForFunction((n) => document.querySelectorAll('#connections tbody tr').length === n,
                             {timeout: 10000}, n);
}

async function main() {
  const [url, key, app, user, disconnectClient, keepClient, outDir] = process.argv.slice(2);
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu'],
  });
  try {
    const page = await browser.newPage();
    await page.setViewport({width: 1400, height: 900});
    const dialogs = [];
    page.on('dialog', async (d) => { dialogs.push(d.message()); await d.accept(); });
    page.on('console', (m) => say({event: 'console', text: m.text()}));
    page.on('pageerror', (e) => say({event: 'pageerror', text: String(e)}));
    const resp = await page.goto(url, {waitUntil: 'load'});
    say({event: 'loaded', status: resp.status(), csp: resp.headers()['content-security-policy'] || ''});

    // A wrong key: an error, still signed out.
    await page.type('#api-key', 'not-the-key-at-all');
    await page.click('#signin-button');
    await page.waitForFunction(() => document.getElementById('signin-error').textContent !== '', {timeout: 10000});
    say({event: 'wrong_key', error: await page.$eval('#signin-error', (e) => e.textContent),
         signed_in: await page.$eval('#app', (e) => !e.hidden)});

    // The right key: the fleet.
    await page.$eval('#api-key', (e) => { e.value = ''; });
    await page.type('#api-key', key);
    await page.click('#signin-button');
    await page.waitForFunction(() => document.querySelectorAll('#fleet tbody tr').length > 0, {timeout: 10000});
    const fleet = await page.$$eval('#fleet tbody tr', (trs) => trs.map((tr) =>
      Array.from(tr.querySelectorAll('td')).map((td) => td.textContent)));
    await page.screenshot({path: path.join(outDir, 'admin-fleet.png'), fullPage: true});
    say({event: 'fleet', rows: fleet, key_field_empty: await page.$eval('#api-key', (e) => e.value === '')});

    // The user: every connection, coverage shown.
    await page.$eval('#app-id', (e) => { e.value = ''; });
    await page.type('#app-id', app);
    await page.type('#user-id', user);
    await page.click('#search-button');
    await page.waitForFunction(() => !document.getElementById('connections').hidden &&
                               document.querySelectorAll('#connections tbody tr').length > 0, {timeout: 10000});
    await page.screenshot({path: path.join(outDir, 'admin-user.png'), fullPage: true});
    say({event: 'user', rows: await rows(page), coverage: await page.$eval('#coverage', (e) => e.textContent),
         pwned: await page.evaluate(() => window.__pwned === true),
         scripts: await page.$$eval('script', (s) => s.length)});

    // Disconnect one device (confirmed), the list updates.
    const before = (await rows(page)).length;
    await page.click(`#connections tbody tr[data-client-id="${disconnectClient}"] button.disconnect`);
    await waitRows(page, before - 1);
    say({event: 'disconnected', rows: await rows(page), dialogs: dialogs.slice(),
         result: await page.$eval('#action-result', (e) => e.textContent)});

    // Terminate the rest but one, with a code and a reason (confirmed).
    await page.click(`#connections tbody tr[data-client-id="${keepClient}"] input.keep`);
    await page.type('#terminate-code', '4501');
    await page.type('#terminate-reason', 'signed out by support');
    await page.click('#terminate-button');
    await waitRows(page, 1);
    say({event: 'terminated', rows: await rows(page), dialogs: dialogs.slice(),
         result: await page.$eval('#action-result', (e) => e.textContent),
         pwned: await page.evaluate(() => window.__pwned === true)});
  } finally {
    await browser.close();
  }
}

main().catch((e) => { say({event: 'error', text: String(e && e.stack || e)}); process.exit(1); });
