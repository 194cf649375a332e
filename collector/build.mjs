// Builds the collector, plain and with attribution, and prints their gzipped sizes:
//   dist/rum.mjs, dist/rum.iife.js                          measured by `web-vitals`
//   dist/rum.attribution.mjs, dist/rum.attribution.iife.js  measured by `web-vitals/attribution`
// The .mjs files are ES modules that leave web-vitals to the site's bundler; the .iife.js files are the
// script tags, everything inside. `--dev` builds development bundles (default sample rate 1.0 instead
// of 0.25, not minified). A production build fails when a bundle is over its budget (gzipped, level 9):
//   the collector without web-vitals          3 KB  (COLLECTOR_BUDGET)
//   its attribution mode without web-vitals   4 KB  (ATTRIBUTION_COLLECTOR_BUDGET)
//   dist/rum.attribution.iife.js, all in      9 KB  (ATTRIBUTION_BUNDLE_BUDGET)
// A development build is not minified: its sizes are printed, not held to the budgets.
import { build } from 'esbuild';
import { mkdirSync, readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const dev = process.argv.includes('--dev');
const COLLECTOR_BUDGET = 3 * 1024;
const ATTRIBUTION_COLLECTOR_BUDGET = 4 * 1024;
const ATTRIBUTION_BUNDLE_BUDGET = 9 * 1024;
const common = {
  bundle: true,
  minify: !dev,
  target: 'es2020',
  define: { __RUM_DEV__: String(dev) },
  legalComments: 'none',
  logLevel: 'warning',
};
// web-vitals and its subpath web-vitals/attribution.
const external = ['web-vitals', 'web-vitals/*'];

const gz = (bytes) => gzipSync(bytes, { level: 9 }).length;
const file = (path) => gz(readFileSync(path));

/** Builds one mode: its module, its script tag, and its collector alone (the tag without web-vitals). */
async function mode({ module, tag, mjs, iife }) {
  await build({ ...common, entryPoints: [module], format: 'esm', external, outfile: mjs });
  await build({ ...common, entryPoints: [tag], format: 'iife', outfile: iife });
  const alone = await build({ ...common, entryPoints: [tag], format: 'esm', external, write: false });
  return gz(alone.outputFiles[0].contents);
}

mkdirSync('dist', { recursive: true });
const plain = await mode({
  module: 'src/index.ts',
  tag: 'src/auto.ts',
  mjs: 'dist/rum.mjs',
  iife: 'dist/rum.iife.js',
});
const attribution = await mode({
  module: 'src/with-attribution.ts',
  tag: 'src/auto-attribution.ts',
  mjs: 'dist/rum.attribution.mjs',
  iife: 'dist/rum.attribution.iife.js',
});

const checks = [
  ['collector (without web-vitals)', plain, COLLECTOR_BUDGET],
  ['dist/rum.mjs', file('dist/rum.mjs')],
  ['dist/rum.iife.js (with web-vitals)', file('dist/rum.iife.js')],
  ['attribution collector (without web-vitals)', attribution, ATTRIBUTION_COLLECTOR_BUDGET],
  ['dist/rum.attribution.mjs', file('dist/rum.attribution.mjs')],
  ['dist/rum.attribution.iife.js (with web-vitals/attribution)', file('dist/rum.attribution.iife.js'), ATTRIBUTION_BUNDLE_BUDGET],
];
console.log(`rum collector (${dev ? 'development' : 'production'} build), gzipped:`);
for (const [name, size, budget] of checks) {
  console.log(`  ${name.padEnd(58)} ${String(size).padStart(6)} B${budget ? ` (budget ${budget} B)` : ''}`);
}
const over = dev ? [] : checks.filter(([, size, budget]) => budget && size > budget);
for (const [name, size, budget] of over) console.error(`${name} is ${size} B gzipped, over its ${budget} B budget`);
if (over.length) process.exit(1);
