// Builds dist/rum.mjs (ES module, web-vitals left to the site's bundler) and dist/rum.iife.js (the
// script tag, everything inside), and prints their gzipped sizes. `--dev` builds a development
// bundle (default sample rate 1.0 instead of 0.25, not minified).
import { build } from 'esbuild';
import { mkdirSync, readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const dev = process.argv.includes('--dev');
const COLLECTOR_BUDGET = 3 * 1024;
const common = {
  bundle: true,
  minify: !dev,
  target: 'es2020',
  define: { __RUM_DEV__: String(dev) },
  legalComments: 'none',
  logLevel: 'warning',
};

mkdirSync('dist', { recursive: true });
await build({
  ...common,
  entryPoints: ['src/index.ts'],
  format: 'esm',
  external: ['web-vitals'],
  outfile: 'dist/rum.mjs',
});
await build({
  ...common,
  entryPoints: ['src/auto.ts'],
  format: 'iife',
  outfile: 'dist/rum.iife.js',
});
// The collector alone: the script-tag bundle without web-vitals.
const alone = await build({
  ...common,
  entryPoints: ['src/auto.ts'],
  format: 'esm',
  external: ['web-vitals'],
  write: false,
});

const gz = (bytes) => gzipSync(bytes, { level: 9 }).length;
const collectorGz = gz(alone.outputFiles[0].contents);
const report = [
  ['collector (without web-vitals)', collectorGz],
  ['dist/rum.mjs', gz(readFileSync('dist/rum.mjs'))],
  ['dist/rum.iife.js (with web-vitals)', gz(readFileSync('dist/rum.iife.js'))],
];
console.log(`rum collector (${dev ? 'development' : 'production'} build), gzipped:`);
for (const [name, size] of report) console.log(`  ${name.padEnd(36)} ${size} B`);
if (collectorGz > COLLECTOR_BUDGET) {
  console.error(`the collector is ${collectorGz} B gzipped, over its ${COLLECTOR_BUDGET} B budget`);
  process.exit(1);
}
