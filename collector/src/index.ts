// The collector: Core Web Vitals from `web-vitals`, one beacon v1 per page view when the page is hidden.

import * as webVitals from 'web-vitals';
import type { PageLoad } from './collector';
import { browserHost, start, type CollectorOptions, type Host } from './init';

export { normalizeRoute } from './route';
export { PageLoad } from './collector';
export type { Beacon, BeaconMetric, PageContext, Transport, VitalMetric } from './collector';
export type { BeaconAttribution } from './attribution';
export * from './init';

/**
 * Starts measuring this page load. Returns the page load when it is sampled, `undefined` when not
 * (then nothing is observed or sent: sampling is all or nothing, and never by rating).
 */
export function init(options: CollectorOptions, host: Host = browserHost(webVitals, options)): PageLoad | undefined {
  return start(options, host);
}
