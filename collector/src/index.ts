// The collector: Core Web Vitals from `web-vitals`, one beacon v1 per page load when the page is hidden.

import { onCLS, onFCP, onINP, onLCP, onTTFB } from 'web-vitals';
import { PageLoad, type Transport, type VitalMetric } from './collector';
import { normalizeRoute } from './route';

export { normalizeRoute } from './route';
export { PageLoad } from './collector';
export type { Beacon, BeaconMetric, PageContext, Transport, VitalMetric } from './collector';

/** The beacon endpoint's path on the ingest (a contract). */
export const BEACON_PATH = '/api/v1/observability/web-vitals';

declare const __RUM_DEV__: boolean | undefined;

/** The smallest share of sampled page loads the ingest accepts (`rum_schemas::limits::MIN_SAMPLE_RATE`). */
export const MIN_SAMPLE_RATE = 0.0001;

/** The default share of sampled page loads: all in development, a quarter in production builds. */
export const DEFAULT_SAMPLE_RATE = typeof __RUM_DEV__ !== 'undefined' && !__RUM_DEV__ ? 0.25 : 1;

/**
 * A signed token from `rum token` (`site=S&t=...&e=...&k=...`), sent as the `t`, `e` and `k` query
 * parameters. `k` is the key id: required when the site's keys are `token_secrets` (ids, for a
 * rotation), absent with a single `token_secret`.
 */
export interface SignedToken {
  t: string;
  e: string | number;
  k?: string;
}

/** The collector's settings. */
export interface CollectorOptions {
  /** The site the page belongs to (`[a-z0-9._-]`, at most 64 characters). */
  site: string;
  /** The beacon URL, e.g. `https://rum.example/api/v1/observability/web-vitals`. */
  endpoint: string;
  /** The share of page loads measured, in (0, 1]; decided once per page load. */
  sampleRate?: number;
  /** Required when the site is configured with a token secret. */
  token?: SignedToken;
  /** The route; the page's path by default. Normalized into a slug here, as on the server. */
  route?: string;
}

/** What the collector touches in the browser; tests pass their own. */
export interface Host extends Transport {
  window: Pick<Window, 'addEventListener'>;
  document: Pick<Document, 'addEventListener' | 'visibilityState'>;
  path: string;
  mobile?: boolean;
  random: () => number;
  /** Subscribes to the metrics (web-vitals with `reportAllChanges` in the browser). */
  observe: (report: (metric: VitalMetric) => void) => void;
}

/** The real browser. */
export function browserHost(): Host {
  const nav = navigator as Navigator & { userAgentData?: { mobile?: boolean } };
  return {
    window,
    document,
    path: location.pathname,
    mobile: nav.userAgentData?.mobile,
    random: Math.random,
    sendBeacon: nav.sendBeacon && ((url, body) => nav.sendBeacon(url, body)),
    fetch: typeof fetch === 'function' ? (url, init) => fetch(url, init) : undefined,
    observe: (report) => {
      const opts = { reportAllChanges: true };
      for (const on of [onTTFB, onFCP, onLCP, onCLS, onINP]) on(report, opts);
    },
  };
}

/** The beacon URL with the token's query parameters. */
export function beaconUrl(endpoint: string, token?: SignedToken): string {
  if (!token) return endpoint;
  let query = `t=${encodeURIComponent(token.t)}&e=${encodeURIComponent(String(token.e))}`;
  if (token.k) query += `&k=${encodeURIComponent(token.k)}`;
  return endpoint + (endpoint.includes('?') ? '&' : '?') + query;
}

/**
 * Starts measuring this page load. Returns the page load when it is sampled, `undefined` when not
 * (then nothing is observed or sent: sampling is all or nothing, and never by rating).
 */
export function init(options: CollectorOptions, host: Host = browserHost()): PageLoad | undefined {
  const rate = options.sampleRate ?? DEFAULT_SAMPLE_RATE;
  // The ingest refuses a rate under MIN_SAMPLE_RATE (each sample would weigh over 10,000 page loads).
  const sampleRate = rate > 0 && rate <= 1 ? Math.max(rate, MIN_SAMPLE_RATE) : DEFAULT_SAMPLE_RATE;
  if (host.random() >= sampleRate) return undefined;
  const page = new PageLoad(
    {
      site: options.site,
      route: normalizeRoute(options.route ?? host.path),
      device: host.mobile === undefined ? undefined : host.mobile ? 'mobile' : 'desktop',
      sampleRate,
    },
    beaconUrl(options.endpoint, options.token),
    host,
  );
  host.observe((metric) => page.add(metric));
  // On document: web-vitals listens on window in the capture phase, so its final reports come first.
  host.document.addEventListener('visibilitychange', () => {
    if (host.document.visibilityState === 'hidden') page.flush();
  });
  host.window.addEventListener('pagehide', () => page.flush());
  return page;
}
