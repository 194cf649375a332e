// The collector without web-vitals: options, the browser host and `start`. `index.ts` binds it to
// `web-vitals`, `with-attribution.ts` to `web-vitals/attribution`.

import type { BeaconAttribution } from './attribution';
import { PageLoad, type Transport, type VitalMetric } from './collector';
import { normalizeRoute } from './route';

/** The beacon endpoint's path on the ingest (a contract). */
export const BEACON_PATH = '/api/v1/observability/web-vitals';

declare const __RUM_DEV__: boolean | undefined;

/** The smallest share of sampled page loads the ingest accepts (`rum_schemas::limits::MIN_SAMPLE_RATE`). */
export const MIN_SAMPLE_RATE = 0.0001;

/** The default share of sampled page loads: all in development, a quarter in production builds. */
export const DEFAULT_SAMPLE_RATE = typeof __RUM_DEV__ !== 'undefined' && !__RUM_DEV__ ? 0.25 : 1;

/** A release the ingest accepts: printable ASCII, 1 to 64 characters, no space at either end. */
const RELEASE = /^[!-~]([ -~]{0,62}[!-~])?$/;

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
  /**
   * The site's release (version, build): printable ASCII, at most 64 characters. Sent as `release`;
   * one the ingest would refuse (it would refuse the whole beacon) is left out.
   */
  release?: string;
  /**
   * web-vitals 6's `reportSoftNavs`: in browsers that detect soft navigations (Chromium 151+), each one
   * is a page view with beacons of its own, routed by its URL, `nav_type` `soft-navigation`.
   */
  reportSoftNavs?: boolean;
}

/** What the collector touches in the browser; tests pass their own. */
export interface Host extends Transport {
  window: Pick<Window, 'addEventListener'>;
  document: Pick<Document, 'addEventListener' | 'visibilityState'>;
  path: string;
  mobile?: boolean;
  random: () => number;
  /** A random page-load id (`[A-Za-z0-9_-]`), or nothing without a random source. */
  randomId?: () => string | undefined;
  /** The network's round-trip time in ms, when the browser says. */
  rtt?: () => number | undefined;
  /** Subscribes to the metrics (web-vitals with `reportAllChanges` in the browser). */
  observe: (report: (metric: VitalMetric) => void) => void;
}

/** A web-vitals metric function (`onLCP`, ...), of either build. */
type OnMetric = (
  report: (metric: ReportedMetric) => void,
  opts?: { reportAllChanges?: boolean; reportSoftNavs?: boolean },
) => void;

/** The metric functions of a web-vitals build. */
export interface WebVitals {
  onTTFB: OnMetric;
  onFCP: OnMetric;
  onLCP: OnMetric;
  onCLS: OnMetric;
  onINP: OnMetric;
}

/** A metric of either web-vitals build, as it reaches the collector. */
export interface ReportedMetric extends Omit<VitalMetric, 'attribution'> {
  attribution?: unknown;
}

/** 16 random bytes in URL-safe base64 (22 characters): a page-load id no one can guess or link. */
export function randomPageId(): string | undefined {
  if (typeof crypto === 'undefined' || !crypto.getRandomValues) return undefined;
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return btoa(String.fromCharCode(...bytes))
    .replace(/\+/g, '-')
    .replace(/\//g, '_')
    .replace(/=+$/, '');
}

/**
 * The real browser, measured by `vitals`. `attribute` maps an attribution build's `attribution` to
 * the beacon's few fields; without it no attribution is sent.
 */
export function browserHost(
  vitals: WebVitals,
  options: Pick<CollectorOptions, 'reportSoftNavs'> = {},
  attribute?: (name: string, attribution: unknown) => BeaconAttribution | undefined,
): Host {
  const nav = navigator as Navigator & { userAgentData?: { mobile?: boolean }; connection?: { rtt?: number } };
  return {
    window,
    document,
    path: location.pathname,
    mobile: nav.userAgentData?.mobile,
    random: Math.random,
    randomId: randomPageId,
    rtt: () => nav.connection?.rtt,
    sendBeacon: nav.sendBeacon && ((url, body) => nav.sendBeacon(url, body)),
    fetch: typeof fetch === 'function' ? (url, init) => fetch(url, init) : undefined,
    observe: (report) => {
      const opts = { reportAllChanges: true, reportSoftNavs: !!options.reportSoftNavs };
      // Only named fields go on: web-vitals' own attribution holds DOM nodes and performance entries.
      const each = (m: ReportedMetric) =>
        report({
          name: m.name,
          value: m.value,
          id: m.id,
          rating: m.rating,
          navigationType: m.navigationType,
          navigationId: m.navigationId,
          navigationURL: m.navigationURL,
          attribution: attribute?.(m.name, m.attribution),
        });
      for (const on of [vitals.onTTFB, vitals.onFCP, vitals.onLCP, vitals.onCLS, vitals.onINP]) {
        on(each, opts);
      }
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
 * Starts measuring this page load on `host`. Returns the page load when it is sampled, `undefined`
 * when not (then nothing is observed or sent: sampling is all or nothing, and never by rating).
 */
export function start(options: CollectorOptions, host: Host): PageLoad | undefined {
  const rate = options.sampleRate ?? DEFAULT_SAMPLE_RATE;
  // The ingest refuses a rate under MIN_SAMPLE_RATE (each sample would weigh over 10,000 page loads).
  const sampleRate = rate > 0 && rate <= 1 ? Math.max(rate, MIN_SAMPLE_RATE) : DEFAULT_SAMPLE_RATE;
  if (host.random() >= sampleRate) return undefined;
  const release = options.release?.trim();
  const page = new PageLoad(
    {
      site: options.site,
      route: normalizeRoute(options.route ?? host.path),
      device: host.mobile === undefined ? undefined : host.mobile ? 'mobile' : 'desktop',
      sampleRate,
      pageId: host.randomId?.(),
      release: release && RELEASE.test(release) ? release : undefined,
      rtt: host.rtt,
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
