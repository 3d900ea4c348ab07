// Headless Chromium (Debian's, driven by puppeteer-core) reads the uni stream
// over HTTPS with fetch() and a stream reader, as a web page would, and
// prints every line it got, parsed, one per stdout line:
//   {"event":"line","line":{...}}   each JSON line of the stream
//   {"event":"bad","text":"..."}    anything that is not a JSON line
//   {"event":"end","protocol":"http/1.1"}  when the stream ends
// Usage: node browser_uni_stream.js BASE_URL TOKEN SPKI_SHA256_BASE64
// The certificate is trusted by its public key only (no blanket ignore).
const puppeteer = require('puppeteer-core');

async function main() {
  const [base, token, spki] = process.argv.slice(2);
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--ignore-certificate-errors-spki-list=' + spki],
  });
  try {
    const page = await browser.newPage();
    page.on('console', (m) => process.stdout.write(JSON.stringify({event: 'console', text: m.text()}) + '\n'));
    await page.exposeFunction('report', (ev) => process.stdout.write(JSON.stringify(ev) + '\n'));
    const resp = await page.goto(base + '/livez');
    const protocol = resp.securityDetails() ? resp.securityDetails().protocol() : '';
    await page.evaluate(async (token) => {
      const r = await fetch('/connection/uni_http_stream', {method: 'POST', body: JSON.stringify({token})});
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let pending = '';
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        pending += value;
        let nl;
        while ((nl = pending.indexOf('\n')) >= 0) {
          const text = pending.slice(0, nl);
          pending = pending.slice(nl + 1);
          if (text.trim() === '') continue;
          try {
            await window.report({event: 'line', line: JSON.parse(text)});
          } catch (e) {
            await window.report({event: 'bad', text});
          }
        }
      }
      if (pending.trim() !== '') await window.report({event: 'bad', text: pending});
    }, token);
    const alpn = await page.evaluate(() => {
      const e = performance.getEntriesByType('resource').find((x) => x.name.endsWith('/uni_http_stream'));
      return e ? e.nextHopProtocol : '';
    });
    process.stdout.write(JSON.stringify({event: 'end', protocol: alpn, tls: protocol}) + '\n');
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({event: 'error', message: String(e && e.stack || e)}) + '\n');
  process.exit(1);
});
