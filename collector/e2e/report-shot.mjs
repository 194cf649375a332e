// Opens a `rum report` HTML file in Debian's Chromium (playwright-core, never a downloaded browser),
// with every request other than the file itself refused and recorded, measures what rendered and
// saves a screenshot. tests/report.rs runs it; so can a person, to make docs/report.png.
//
// Env: RUM_REPORT_HTML (the report, required), RUM_REPORT_SCREENSHOT (the PNG to write, required),
// RUM_E2E_CHROMIUM (default /usr/bin/chromium), RUM_REPORT_FULL_PAGE (1: the whole page, the
// default; 0: the first screen only, RUM_REPORT_HEIGHT px high, default 1500).
// Prints one JSON line on stdout: {requests: [URLs refused], scripts: <script> elements, charts:
// [{chart, metric, width, height, lines, points, circles, bars, texts}] (lines, points and circles of
// the p75 line, bars of the ratings' colours with a size), cells: [text of every table cell holding
// code], worst: [{metric, routes}] (the first column of each worst routes table)}.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

function fail(message) {
  console.error(`e2e/report-shot.mjs: ${message}`);
  process.exit(1);
}

function env(name, fallback) {
  const value = process.env[name] ?? fallback;
  if (!value) fail(`${name} is not set`);
  return value;
}

const html = resolve(env('RUM_REPORT_HTML'));
const screenshot = resolve(env('RUM_REPORT_SCREENSHOT'));
const executablePath = env('RUM_E2E_CHROMIUM', '/usr/bin/chromium');
const fullPage = env('RUM_REPORT_FULL_PAGE', '1') !== '0';
const height = Number(env('RUM_REPORT_HEIGHT', '1500'));
if (!existsSync(html)) fail(`no report at ${html}`);
if (!existsSync(executablePath)) {
  fail(`no Chromium at ${executablePath}: install Debian's package (apt-get install -y chromium); never a downloaded browser`);
}

const browser = await chromium.launch({
  executablePath,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height } });
  const fileUrl = pathToFileURL(html).href;
  // The report must open without a network: any other request is refused and reported.
  const requests = [];
  await page.route('**/*', (route) => {
    const url = route.request().url();
    if (url === fileUrl) return route.continue();
    requests.push(url);
    return route.abort();
  });
  await page.goto(fileUrl, { waitUntil: 'load' });
  const seen = await page.evaluate(() => {
    // The report's data colours (src/report/charts.rs): the p75 line and the three ratings' bars.
    const LINE = '#1A56DB';
    const BARS = ['#0CCE6B', '#FFA400', '#FF4E42'];
    const shown = (e) => {
      const b = e.getBBox();
      return b.width > 0 && b.height > 0;
    };
    const charts = [...document.querySelectorAll('figure[data-chart]')].map((figure) => {
      const svg = figure.querySelector('svg');
      const box = svg ? svg.getBoundingClientRect() : { width: 0, height: 0 };
      const all = (selector) => (svg ? [...svg.querySelectorAll(selector)] : []);
      const lines = all('polyline').filter((l) => l.getAttribute('stroke')?.toUpperCase() === LINE);
      return {
        chart: figure.dataset.chart,
        metric: figure.dataset.metric,
        width: box.width,
        height: box.height,
        lines: lines.length,
        points: lines.reduce((n, l) => n + l.points.numberOfItems, 0),
        circles: all('circle').filter((c) => c.getAttribute('fill')?.toUpperCase() === LINE && shown(c)).length,
        bars: all('rect').filter((r) => BARS.includes(r.getAttribute('fill')?.toUpperCase())
          && r.getAttribute('opacity') === '1' && shown(r)).length,
        texts: all('text').length,
      };
    });
    return {
      scripts: document.querySelectorAll('script').length,
      charts,
      cells: [...document.querySelectorAll('td code')].map((c) => c.textContent),
      worst: [...document.querySelectorAll('section')].map((s) => ({
        metric: s.id,
        routes: [...s.querySelectorAll('table.worst tbody tr td:first-child')].map((c) => c.textContent),
      })),
    };
  });
  await page.screenshot({ path: screenshot, fullPage });
  console.log(JSON.stringify({ requests, screenshot, ...seen }));
} finally {
  await browser.close();
}
