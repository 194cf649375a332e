// The page-load state: the latest value of each metric, what was already sent, and the beacon.

/** A metric as web-vitals reports it (the fields the beacon needs). */
export interface VitalMetric {
  name: string;
  value: number;
  id: string;
  rating?: string;
  navigationType?: string;
}

/** A metric in beacon v1 (schemas/beacon.v1.schema.json). */
export interface BeaconMetric {
  name: string;
  value: number;
  id: string;
  rating?: string;
}

/** Beacon v1: one page load, several metrics. */
export interface Beacon {
  site: string;
  route: string;
  device?: 'mobile' | 'desktop';
  nav_type?: string;
  sample_rate: number;
  metrics: BeaconMetric[];
}

/** What a page load's beacons say besides the metrics. */
export interface PageContext {
  site: string;
  route: string;
  device?: 'mobile' | 'desktop';
  sampleRate: number;
}

/** How a beacon leaves the page: `sendBeacon`, then `fetch` with `keepalive` when the browser refuses. */
export interface Transport {
  sendBeacon?: (url: string, body: string) => boolean;
  fetch?: (url: string, init: RequestInit) => Promise<unknown>;
}

/** Queues metrics and sends each value once; later changes (e.g. CLS) go in a later beacon. */
export class PageLoad {
  private readonly latest = new Map<string, VitalMetric>();
  private readonly sent = new Map<string, number>();

  constructor(
    private readonly context: PageContext,
    private readonly url: string,
    private readonly transport: Transport,
  ) {}

  /** Remembers the latest value of a metric (keyed by web-vitals' metric id). */
  add(metric: VitalMetric): void {
    this.latest.set(metric.id, metric);
  }

  /** The beacon of every metric whose value changed since it was last sent, or nothing. */
  pending(): Beacon | undefined {
    const fresh = [...this.latest.values()].filter((m) => this.sent.get(m.id) !== m.value);
    if (!fresh.length) return undefined;
    const { site, route, device, sampleRate } = this.context;
    return {
      site,
      route,
      ...(device && { device }),
      ...(fresh[0].navigationType && { nav_type: fresh[0].navigationType }),
      sample_rate: sampleRate,
      metrics: fresh.map(({ name, value, id, rating }) => ({ name, value, id, rating })),
    };
  }

  /** Sends what changed; returns whether a beacon left. Called when the page becomes hidden. */
  flush(): boolean {
    const beacon = this.pending();
    if (!beacon) return false;
    const body = JSON.stringify(beacon);
    if (!send(this.url, body, this.transport)) return false;
    for (const m of beacon.metrics) this.sent.set(m.id, m.value);
    return true;
  }
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
