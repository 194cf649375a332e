// The browser half of the end-to-end tests (tests/browser_e2e.rs runs it): Debian's Chromium, driven by
// playwright-core, loads a page from a page server of its own, acts on it like a person, then closes the
// tab for real so the last beacons leave. `node e2e/run.mjs SCENARIO`:
//
//   basic            a product page embeds the collector from the ingest (/rum.js), which posts to the
//                    ingest directly; its layout shifts, a click's handler blocks for 150 ms.
//   attribution      the same with the ingest serving the attribution bundle, a hero image the page
//                    server sends 1.2 s late (the LCP), a slow click handler (the INP), a release.
//   soft-navigation  an SPA home page with data-report-soft-navs: a click calls history.pushState and
//                    paints the cart (a soft navigation in Chromium 151+).
//   web-vitals       no rum collector: Google's web-vitals IIFE wired as its README shows, each Metric
//                    posted bare (no route) with navigator.sendBeacon to the page's own /rum.
//
// Except in `basic`, beacons go to the page's own origin (`/rum`), which the page server proxies to the
// ingest's /api/v1/observability/web-vitals as a first-party setup does (query string, body, and the
// Content-Type, User-Agent, Referer, Sec-Fetch-Site and Sec-CH-UA-Mobile headers), keeping each body
// and the ingest's status for the test.
//
// Env: RUM_E2E_INGEST (the ingest's base URL, required), RUM_E2E_PAGE_PORT (a free port for the page
// server, required), RUM_E2E_CHROMIUM (default /usr/bin/chromium), RUM_E2E_SITE (default e2e).
// Prints one JSON line on stdout: what the page itself observed and the beacons proxied, for the test.
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { chromium } from 'playwright-core';

const scenario = process.argv[2] ?? 'basic';
const SCENARIOS = ['basic', 'attribution', 'soft-navigation', 'web-vitals'];
if (!SCENARIOS.includes(scenario)) fail(`unknown scenario ${scenario}: one of ${SCENARIOS.join(', ')}`);

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
const origin = `http://127.0.0.1:${pagePort}`;
const HERO_DELAY_MS = 1200;
const RELEASE = 'e2e-2026.12.1';

// What the page itself measures, to check the beacons against: layout shifts without input, event
// timing entries of interactions, the last LCP entry's element id.
const observers = `
    window.__seen = { shift: 0, interactions: 0, lcpId: null, lcpTime: 0,
      mobile: navigator.userAgentData ? navigator.userAgentData.mobile : null,
      rtt: navigator.connection ? navigator.connection.rtt : null };
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) if (!e.hadRecentInput) window.__seen.shift += e.value;
    }).observe({ type: 'layout-shift', buffered: true });
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) if (e.interactionId) window.__seen.interactions++;
    }).observe({ type: 'event', buffered: true, durationThreshold: 16 });
    new PerformanceObserver((list) => {
      const last = list.getEntries().at(-1);
      window.__seen.lcpId = last.element ? last.element.id : null;
      window.__seen.lcpTime = last.startTime;
    }).observe({ type: 'largest-contentful-paint', buffered: true });`;

// A late banner pushes the content down (a layout shift without recent input), and a click on #buy
// blocks for 150 ms (INP).
const shiftAndSlowClick = `
    addEventListener('load', () => setTimeout(() => {
      const banner = document.createElement('div');
      banner.id = 'banner';
      document.getElementById('slot').appendChild(banner);
      window.__shifted = true;
    }, 200));
    document.getElementById('buy').addEventListener('click', () => {
      const until = performance.now() + 150;
      while (performance.now() < until) {}
      // A new text on every click: each one damages the page, so a frame follows and its event
      // timing entry is reported (a click that changes nothing may wait for a frame that never comes).
      window.__bought = (window.__bought || 0) + 1;
      document.getElementById('buy').textContent = 'Bought ' + window.__bought;
    });`;

const STYLE = '<style>body { font: 16px sans-serif; margin: 0 } #banner { height: 240px; background: #fc0 } h1 { font-size: 48px }</style>';

const rumTag = (extra = '') =>
  `<script src="${ingest}/rum.js" data-site="${site}" data-sample-rate="1" ${extra}></script>`;

const pages = {
  basic: {
    path: '/product/12345/reviews',
    html: () => `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Product 12345: reviews</title>
  ${rumTag(`data-endpoint="${ingest}/api/v1/observability/web-vitals"`)}
  ${STYLE}
</head>
<body>
  <div id="slot"></div>
  <h1>Product 12345</h1>
  <p id="text">${'A review of product 12345. '.repeat(40)}</p>
  <button id="buy">Buy</button>
  <script>${observers}${shiftAndSlowClick}
  </script>
</body>
</html>`,
  },
  attribution: {
    // The query string must not reach a beacon (the INP script's URL is the page's).
    path: '/product/777/gallery',
    query: '?utm_source=newsletter&email=jane%40example.com',
    html: () => `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Product 777: gallery</title>
  ${rumTag(`data-endpoint="${origin}/rum" data-release="${RELEASE}"`)}
  ${STYLE}
</head>
<body>
  <div id="slot"></div>
  <h1>Product 777</h1>
  <img id="hero" src="/hero.png?v=3&session=abc#main" width="800" height="400" alt="Product 777">
  <button id="buy">Buy</button>
  <script>${observers}${shiftAndSlowClick}
  </script>
</body>
</html>`,
  },
  'soft-navigation': {
    path: '/shop',
    html: () => `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Shop</title>
  ${rumTag(`data-endpoint="${origin}/rum" data-report-soft-navs`)}
  ${STYLE}
</head>
<body>
  <main id="app"><h1>Shop</h1><p>${'Things to buy. '.repeat(20)}</p></main>
  <button id="to-cart">Cart</button>
  <script>${observers}
    // The SPA's router: a click changes the URL and paints the new view.
    document.getElementById('to-cart').addEventListener('click', () => {
      const until = performance.now() + 60; // the router's work: an interaction INP reports
      while (performance.now() < until) {}
      history.pushState({}, '', '/cart/42?step=1');
      document.getElementById('app').innerHTML = '<h1>Your cart</h1><p>' + 'Two items in your cart. '.repeat(30) + '</p>';
      window.__navigated = true;
    });
  </script>
</body>
</html>`,
  },
  'web-vitals': {
    path: '/blog/understanding-web-vitals',
    query: '?utm_campaign=spring',
    // web-vitals' README, "Load the standard build (using a classic script)", self-hosted as it
    // advises, each metric sent as its "Send the results to an analytics endpoint" section does.
    html: () => `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Understanding Web Vitals</title>
  <script>
    (function () {
      var script = document.createElement('script');
      script.src = '/web-vitals.iife.js';
      script.onload = function () {
        // When loading \`web-vitals\` using a classic script, all the public
        // methods can be found on the \`webVitals\` global namespace.
        webVitals.onCLS((metric) => navigator.sendBeacon('/rum?site=${site}', JSON.stringify(metric)));
        webVitals.onINP((metric) => navigator.sendBeacon('/rum?site=${site}', JSON.stringify(metric)));
        webVitals.onLCP((metric) => navigator.sendBeacon('/rum?site=${site}', JSON.stringify(metric)));
      };
      document.head.appendChild(script);
    })();
  </script>
  ${STYLE}
</head>
<body>
  <div id="slot"></div>
  <h1>Understanding Web Vitals</h1>
  <p id="text">${'Core Web Vitals measure loading, interactivity and visual stability. '.repeat(20)}</p>
  <button id="buy">Subscribe</button>
  <script>${observers}${shiftAndSlowClick}
  </script>
</body>
</html>`,
  },
};
const page = pages[scenario];

/** Beacons the page server proxied: each body as sent and the ingest's answer. */
const proxied = [];
const FORWARDED = ['content-type', 'user-agent', 'referer', 'sec-fetch-site', 'sec-ch-ua-mobile'];

async function proxy(req, res, query) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const body = Buffer.concat(chunks);
  const headers = {};
  for (const name of FORWARDED) if (req.headers[name]) headers[name] = req.headers[name];
  let status = 0;
  try {
    const answer = await fetch(`${ingest}/api/v1/observability/web-vitals${query}`, { method: 'POST', headers, body });
    status = answer.status;
    const text = await answer.text();
    if (status !== 204) console.error(`e2e/run.mjs: the ingest answered ${status}: ${text.trim()}`);
  } catch (e) {
    console.error(`e2e/run.mjs: the ingest is unreachable: ${e}`);
  }
  let json;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch {
    json = body.toString('utf8');
  }
  proxied.push({ status, referer: headers.referer ?? null, body: json });
  res.writeHead(status === 204 ? 204 : 502).end();
}

let heroPng;
const server = createServer((req, res) => {
  const [path, query = ''] = req.url.split(/\?(.*)/s);
  if (req.method === 'GET' && path === page.path) {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(page.html());
  } else if (req.method === 'GET' && path === '/hero.png' && heroPng) {
    // Late: the LCP image's load duration holds the delay.
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'image/png', 'cache-control': 'no-store' });
      res.end(heroPng);
    }, HERO_DELAY_MS);
  } else if (req.method === 'GET' && path === '/web-vitals.iife.js') {
    res.writeHead(200, { 'content-type': 'text/javascript' });
    res.end(readFileSync(new URL('../node_modules/web-vitals/dist/web-vitals.iife.js', import.meta.url)));
  } else if (req.method === 'POST' && path === '/rum') {
    proxy(req, res, query ? `?${query}` : '');
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

/** A PNG of random pixels: an LCP candidate (Chromium ignores images of too little entropy). */
async function noisePng(width, height) {
  const tab = await browser.newPage();
  await tab.setContent(`<canvas width="${width}" height="${height}"></canvas>`);
  await tab.evaluate(() => {
    const canvas = document.querySelector('canvas');
    const context = canvas.getContext('2d');
    const image = context.createImageData(canvas.width, canvas.height);
    for (let i = 0; i < image.data.length; i++) image.data[i] = i % 4 === 3 ? 255 : Math.random() * 256;
    context.putImageData(image, 0, 0);
  });
  const png = await tab.locator('canvas').screenshot({ type: 'png' });
  await tab.close();
  return png;
}

let result;
try {
  if (scenario === 'attribution') heroPng = await noisePng(800, 400);
  // The ingest drops beacons of headless browsers as bots: this one plays a person, so it sends the
  // User-Agent of the same Chromium with a screen (client hints are left as they are).
  const probe = await browser.newPage();
  const headless = await probe.evaluate(() => navigator.userAgent);
  await probe.close();
  const userAgent = headless.replace('HeadlessChrome/', 'Chrome/');
  const context = await browser.newContext({ userAgent });
  const tab = await context.newPage();
  tab.on('console', (m) => m.type() === 'error' && console.error(`page: ${m.text()}`));
  const url = `${origin}${page.path}${page.query ?? ''}`;
  const loaded = await tab.goto(url, { waitUntil: 'load' });
  if (!loaded?.ok()) fail(`the page did not load: ${loaded?.status()}`);
  if (scenario === 'soft-navigation') {
    await tab.waitForTimeout(500); // the home page's LCP painted and reported
    await tab.click('#to-cart');
    await tab.waitForFunction(() => window.__navigated === true);
    // The soft navigation's paints, then its first metrics (and the home page's beacon) go out.
    await tab.waitForFunction(() => performance.getEntriesByType('soft-navigation').length > 0, null, { timeout: 5_000 });
    await tab.waitForTimeout(1_500);
  } else {
    // The hero image (attribution) is in the load event: it has painted once load has fired.
    await tab.waitForFunction(() => window.__shifted === true);
    await tab.waitForTimeout(500); // let the shift and LCP be painted and reported
    // A click whose event timing entry the page has not seen within 8 s (seen on a loaded machine)
    // is made again, at most five times: INP reports the longest of them.
    for (let attempt = 0; attempt < 5; attempt++) {
      await tab.click('#buy');
      const seenOne = await tab
        .waitForFunction(() => window.__seen.interactions > 0, null, { timeout: 8_000 })
        .then(() => true, () => false);
      if (seenOne) break;
      console.error(`e2e: click ${attempt + 1} on #buy not seen as an interaction yet`);
    }
    await tab.waitForTimeout(1_500); // web-vitals processes interactions when idle
  }
  const seen = await tab.evaluate(() => ({
    ...window.__seen,
    softNavigations: performance.getEntriesByType('soft-navigation').map((e) => e.name),
  }));
  const closed = new Promise((resolve) => tab.once('close', resolve));
  // Only a real close (or a navigation) makes the page hidden, which sends the beacon.
  await tab.close({ runBeforeUnload: true });
  await closed;
  await new Promise((resolve) => setTimeout(resolve, 1_500)); // the beacons leave after the page
  result = {
    scenario,
    page: page.path,
    url,
    origin,
    user_agent: userAgent,
    layout_shift: seen.shift,
    interaction: seen.interactions > 0,
    device: seen.mobile === null ? null : seen.mobile ? 'mobile' : 'desktop',
    rtt: seen.rtt,
    lcp_element: seen.lcpId,
    lcp_time: seen.lcpTime,
    soft_navigations: seen.softNavigations,
    hero_delay_ms: HERO_DELAY_MS,
    release: RELEASE,
    proxied,
  };
} finally {
  await browser.close();
  server.close();
}
console.log(JSON.stringify(result));
