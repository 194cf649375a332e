// The attribution mode: the collector measured by `web-vitals/attribution`, each LCP, INP and CLS
// beacon metric with the few fields that say what caused it (`src/attribution.ts`).

import * as webVitals from 'web-vitals/attribution';
import { beaconAttribution } from './attribution';
import type { PageLoad } from './collector';
import { browserHost, start, type CollectorOptions, type Host } from './init';

export { normalizeRoute } from './route';
export { PageLoad } from './collector';
export type { Beacon, BeaconMetric, PageContext, Transport, VitalMetric } from './collector';
export { beaconAttribution, stripUrl, type BeaconAttribution } from './attribution';
export * from './init';

/** Starts measuring this page load, with attribution (see `init` in `index.ts`). */
export function init(
  options: CollectorOptions,
  host: Host = browserHost(webVitals, options, beaconAttribution),
): PageLoad | undefined {
  return start(options, host);
}
