// The browser half of the end-to-end test (tests/browser_e2e.rs runs it): Debian's Chromium, driven by
// playwright-core, loads a product page that embeds the collector from the ingest, shifts its layout,
// takes a click whose handler blocks for 150 ms, then closes for real so the beacon leaves.
//
// Env: RUM_E2E_INGEST (the ingest's base URL, required), RUM_E2E_PAGE_PORT (a free port for the page
// server, required), RUM_E2E_CHROMIUM (default /usr/bin/chromium), RUM_E2E_SITE (default e2e).
// Prints one JSON line on stdout: what the page itself observed, for the test to check against.
import { existsSync } from 'node:fs';
import { createServer } from 'node:http';
import { chromium } from 'playwright-core';

const PAGE_PATH = '/product/12345/reviews';

function env(name, fallback) {
  const value = process.env[name] ?? fallback;
  if (!value) fail(`${name} is not set`);
  return value;
}

function fail(message) {
  console.error(`e2e/run.mjs: ${message}`);
  process.exit(1);
}

const ingest = env('RUM_E2E_INGEST').replace(/\/$/, '');
const pagePort = Number(env('RUM_E2E_PAGE_PORT'));
const executablePath = env('RUM_E2E_CHROMIUM', '/usr/bin/chromium');
const site = env('RUM_E2E_SITE', 'e2e');
if (!existsSync(executablePath)) {
  fail(`no Chromium at ${executablePath}: install Debian's package (apt-get install -y chromium); never a downloaded browser`);
}

const pageHtml = () => `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Product 12345: reviews</title>
  <script src="${ingest}/rum.js" data-site="${site}" data-endpoint="${ingest}/api/v1/observability/web-vitals" data-sample-rate="1"></script>
  <style>body { font: 16px sans-serif; margin: 0 } #banner { height: 240px; background: #fc0 } h1 { font-size: 48px }</style>
</head>
<body>
  <div id="slot"></div>
  <h1>Product 12345</h1>
  <p id="text">${'A review of product 12345. '.repeat(40)}</p>
  <button id="buy">Buy</button>
  <script>
    window.__seen = { shift: 0, interactions: 0, mobile: navigator.userAgentData ? navigator.userAgentData.mobile : null };
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) if (!e.hadRecentInput) window.__seen.shift += e.value;
    }).observe({ type: 'layout-shift', buffered: true });
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) if (e.interactionId) window.__seen.interactions++;
    }).observe({ type: 'event', buffered: true, durationThreshold: 16 });
    // A late banner pushes the content down: a layout shift without recent input.
    addEventListener('load', () => setTimeout(() => {
      const banner = document.createElement('div');
      banner.id = 'banner';
      document.getElementById('slot').appendChild(banner);
      window.__shifted = true;
    }, 200));
    // A slow handler: the interaction takes ~150 ms to paint (INP).
    document.getElementById('buy').addEventListener('click', () => {
      const until = performance.now() + 150;
      while (performance.now() < until) {}
      document.getElementById('buy').textContent = 'Bought';
    });
  </script>
</body>
</html>`;

const server = createServer((req, res) => {
  if (req.method === 'GET' && req.url.split('?')[0] === PAGE_PATH) {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(pageHtml());
  } else if (req.url === '/favicon.ico') {
    res.writeHead(204).end();
  } else {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  }
});
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(pagePort, '127.0.0.1', resolve);
});

const browser = await chromium.launch({
  executablePath,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
let result;
try {
  // The ingest drops beacons of headless browsers as bots: this one plays a person, so it sends the
  // User-Agent of the same Chromium with a screen (client hints are left as they are).
  const probe = await browser.newPage();
  const headless = await probe.evaluate(() => navigator.userAgent);
  await probe.close();
  const context = await browser.newContext({ userAgent: headless.replace('HeadlessChrome/', 'Chrome/') });
  const tab = await context.newPage();
  tab.on('console', (m) => m.type() === 'error' && console.error(`page: ${m.text()}`));
  const loaded = await tab.goto(`http://127.0.0.1:${pagePort}${PAGE_PATH}`, { waitUntil: 'load' });
  if (!loaded?.ok()) fail(`the page did not load: ${loaded?.status()}`);
  await tab.waitForFunction(() => window.__shifted === true);
  await tab.waitForTimeout(500); // let the shift and LCP be painted and reported
  await tab.click('#buy');
  await tab.waitForFunction(() => window.__seen.interactions > 0, null, { timeout: 5_000 }).catch(() => {});
  await tab.waitForTimeout(1_500); // web-vitals processes interactions when idle
  const seen = await tab.evaluate(() => window.__seen);
  const closed = new Promise((resolve) => tab.once('close', resolve));
  // Only a real close (or a navigation) makes the page hidden, which sends the beacon.
  await tab.close({ runBeforeUnload: true });
  await closed;
  await new Promise((resolve) => setTimeout(resolve, 1_000)); // the beacon leaves after the page
  result = {
    page: PAGE_PATH,
    layout_shift: seen.shift,
    interaction: seen.interactions > 0,
    device: seen.mobile === null ? null : seen.mobile ? 'mobile' : 'desktop',
  };
} finally {
  await browser.close();
  server.close();
}
console.log(JSON.stringify(result));
