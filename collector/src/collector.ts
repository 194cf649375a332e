// The page-load state: the latest value of each metric, what was already sent, and the beacons.

import type { BeaconAttribution } from './attribution';
import { normalizeRoute } from './route';

/** A metric as web-vitals reports it (the fields the beacon needs), its attribution already mapped. */
export interface VitalMetric {
  name: string;
  value: number;
  id: string;
  rating?: string;
  navigationType?: string;
  /** web-vitals 6: the navigation the metric belongs to (a soft navigation has its own). */
  navigationId?: number;
  /** web-vitals 6: the URL of that navigation (a soft navigation's route comes from it). */
  navigationURL?: string;
  attribution?: BeaconAttribution;
}

/** A metric in beacon v1 (schemas/beacon.v1.schema.json). */
export interface BeaconMetric {
  name: string;
  value: number;
  id: string;
  rating?: string;
  /** This metric id was sent before, with another value (absent, not false, on the first send). */
  resend?: true;
  attribution?: BeaconAttribution;
}

/** Beacon v1: one page view, several metrics. */
export interface Beacon {
  site: string;
  route: string;
  device?: 'mobile' | 'desktop';
  nav_type?: string;
  sample_rate: number;
  page_id?: string;
  release?: string;
  rtt?: number;
  metrics: BeaconMetric[];
}

/** What a page load's beacons say besides the metrics. */
export interface PageContext {
  site: string;
  route: string;
  device?: 'mobile' | 'desktop';
  sampleRate: number;
  /** The page load's random id; a soft navigation's beacons carry `<pageId>-<navigationId>`. */
  pageId?: string;
  release?: string;
  /** The network's round-trip time in ms when the beacon leaves (`navigator.connection.rtt`). */
  rtt?: () => number | undefined;
}

/** How a beacon leaves the page: `sendBeacon`, then `fetch` with `keepalive` when the browser refuses. */
export interface Transport {
  sendBeacon?: (url: string, body: string) => boolean;
  fetch?: (url: string, init: RequestInit) => Promise<unknown>;
}

/** The soft navigation's `navigationType` in web-vitals 6 (`reportSoftNavs`). */
export const SOFT_NAVIGATION = 'soft-navigation';
/** The ingest's bounds of `page_id` and `rtt`. */
export const MAX_PAGE_ID_LEN = 64;
export const MAX_RTT_MS = 60_000;
/** Metric ids remembered as sent: a long single-page session must not grow without end. */
export const MAX_SENT_IDS = 64;

/** The page view a metric belongs to: its navigation type and, for web-vitals 6, its navigation id. */
const viewOf = (m: VitalMetric): string => `${m.navigationType ?? ''} ${m.navigationId ?? ''}`;

/**
 * Queues metrics and sends each value once; later changes (e.g. CLS) go in a later beacon. Each page
 * view (the page load, a soft navigation, a back/forward cache restore) has beacons of its own.
 */
export class PageLoad {
  /** Metrics whose latest value was not sent yet, by web-vitals' metric id. */
  private readonly queued = new Map<string, VitalMetric>();
  /** The last value sent of each metric id (the most recent MAX_SENT_IDS ids). */
  private readonly sent = new Map<string, number>();

  constructor(
    private readonly context: PageContext,
    private readonly url: string,
    private readonly transport: Transport,
  ) {}

  /**
   * Remembers the latest value of a metric. The first metric of a soft navigation sends what the
   * earlier views still hold: web-vitals has finalized them, and a long session must not pile up.
   */
  add(metric: VitalMetric): void {
    const view = viewOf(metric);
    if (
      metric.navigationType === SOFT_NAVIGATION &&
      [...this.queued.values()].some((m) => viewOf(m) !== view)
    ) {
      this.flush((m) => viewOf(m) !== view);
    }
    if (this.sent.get(metric.id) === metric.value) this.queued.delete(metric.id);
    else this.queued.set(metric.id, metric);
  }

  /** The beacons of every metric whose value changed since it was last sent, one per page view. */
  pending(only: (m: VitalMetric) => boolean = () => true): Beacon[] {
    const views = new Map<string, VitalMetric[]>();
    for (const m of this.queued.values()) {
      if (!only(m)) continue;
      const view = viewOf(m);
      views.set(view, [...(views.get(view) ?? []), m]);
    }
    return [...views.values()].map((metrics) => this.beacon(metrics));
  }

  /** The beacon of the metrics of one page view. */
  private beacon(metrics: VitalMetric[]): Beacon {
    const { site, device, sampleRate, pageId, release } = this.context;
    const first = metrics[0];
    const soft = first.navigationType === SOFT_NAVIGATION;
    const rtt = this.context.rtt?.();
    return {
      site,
      route: soft && first.navigationURL ? normalizeRoute(first.navigationURL) : this.context.route,
      ...(device && { device }),
      ...(first.navigationType && { nav_type: first.navigationType }),
      sample_rate: sampleRate,
      ...(pageId && { page_id: soft ? softPageId(pageId, first.navigationId) : pageId }),
      ...(release && { release }),
      ...(rtt !== undefined && rtt >= 0 && rtt <= MAX_RTT_MS && { rtt }),
      metrics: metrics.map(({ name, value, id, rating, attribution }) => ({
        name,
        value,
        id,
        rating,
        // The ingest's consumer replaces the value it stored for this id.
        ...(this.sent.has(id) && { resend: true as const }),
        ...(attribution && { attribution }),
      })),
    };
  }

  /**
   * Sends what changed (of the metrics `only` selects); returns whether a beacon left. Called when
   * the page becomes hidden, and by `add` when a soft navigation begins.
   */
  flush(only?: (m: VitalMetric) => boolean): boolean {
    let left = false;
    for (const beacon of this.pending(only)) {
      if (!send(this.url, JSON.stringify(beacon), this.transport)) continue;
      left = true;
      for (const m of beacon.metrics) {
        this.queued.delete(m.id);
        this.sent.delete(m.id); // re-inserted last: the map's order is the order of sending
        this.sent.set(m.id, m.value);
      }
    }
    while (this.sent.size > MAX_SENT_IDS) this.sent.delete(this.sent.keys().next().value as string);
    return left;
  }
}

/** A soft navigation is a page view of its own: the load's id and its navigation id, within the bound. */
function softPageId(pageId: string, navigationId: number | undefined): string {
  const suffix = navigationId === undefined ? '' : String(navigationId).replace(/[^A-Za-z0-9_-]/g, '').slice(0, 16);
  return suffix ? `${pageId.slice(0, MAX_PAGE_ID_LEN - 1 - suffix.length)}-${suffix}` : pageId;
}

function send(url: string, body: string, transport: Transport): boolean {
  // A string body goes as text/plain: no CORS preflight, which a closing page could not wait for.
  try {
    if (transport.sendBeacon?.(url, body)) return true;
  } catch {
    // sendBeacon throws on some browsers for cross-origin or oversized bodies: fall back.
  }
  if (!transport.fetch) return false;
  transport
    .fetch(url, {
      method: 'POST',
      keepalive: true,
      body,
      headers: { 'content-type': 'text/plain' },
    })
    .catch(() => {});
  return true;
}
