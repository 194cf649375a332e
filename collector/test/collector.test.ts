import { describe, expect, it, vi } from 'vitest';
import { beaconUrl, init, randomPageId, type Host, type VitalMetric } from '../src/index';

const ENDPOINT = 'https://rum.example/api/v1/observability/web-vitals';

/** A page: its events, its transport, and the metric stream web-vitals would report. */
function fakePage(over: Partial<Host> = {}) {
  const win = new EventTarget();
  const doc = Object.assign(new EventTarget(), { visibilityState: 'visible' as DocumentVisibilityState });
  let report: (m: VitalMetric) => void = () => {
    throw new Error('not observed');
  };
  const sendBeacon = vi.fn((_url: string, _body: string) => true);
  const fetch = vi.fn((_url: string, _init: RequestInit) => Promise.resolve({}));
  const host: Host = {
    window: win as unknown as Host['window'],
    document: doc as unknown as Host['document'],
    path: '/product/12345/reviews',
    random: () => 0,
    sendBeacon,
    fetch,
    observe: (r) => {
      report = r;
    },
    ...over,
  };
  const beacons = () =>
    [...sendBeacon.mock.calls, ...fetch.mock.calls.map(([url, i]) => [url, i.body as string])].map(
      ([, body]) => JSON.parse(body as string),
    );
  return {
    host,
    sendBeacon,
    fetch,
    beacons,
    metric: (name: string, value: number, id = `v6-${name}`) =>
      report({ name, value, id, rating: 'good', navigationType: 'navigate' }),
    /** A metric as web-vitals reports it, any field. */
    report: (m: VitalMetric) => report(m),
    hide: () => {
      win.dispatchEvent(new Event('pagehide'));
      doc.visibilityState = 'hidden';
      doc.dispatchEvent(new Event('visibilitychange'));
    },
    show: () => {
      doc.visibilityState = 'visible';
      doc.dispatchEvent(new Event('visibilitychange'));
    },
  };
}

describe('sampling', () => {
  it('measures everything or nothing, decided once per page load', () => {
    const random = vi.fn(() => 0.3);
    const page = fakePage({ random });
    expect(init({ site: 'shop', endpoint: ENDPOINT, sampleRate: 0.25 }, page.host)).toBeUndefined();
    expect(random).toHaveBeenCalledTimes(1);
    expect(() => page.metric('LCP', 1000)).toThrow('not observed');
    page.hide();
    expect(page.sendBeacon).not.toHaveBeenCalled();
    expect(page.fetch).not.toHaveBeenCalled();
  });

  it('keeps a page load whose draw is under the rate, and sends the rate', () => {
    const page = fakePage({ random: () => 0.2 });
    expect(init({ site: 'shop', endpoint: ENDPOINT, sampleRate: 0.25 }, page.host)).toBeDefined();
    page.metric('LCP', 1000);
    page.metric('CLS', 0.3);
    page.hide();
    const [beacon] = page.beacons();
    expect(beacon.sample_rate).toBe(0.25);
    expect(beacon.metrics.map((m: VitalMetric) => m.name)).toEqual(['LCP', 'CLS']);
  });

  it('keeps about the configured share of page loads', () => {
    let kept = 0;
    for (let i = 0; i < 1000; i++) {
      if (init({ site: 's', endpoint: ENDPOINT, sampleRate: 0.1 }, fakePage({ random: Math.random }).host)) kept++;
    }
    expect(kept).toBeGreaterThan(50);
    expect(kept).toBeLessThan(150);
  });

  it('raises a rate under the ingest floor to the floor, so its beacons are not refused', () => {
    const page = fakePage({ random: () => 0 });
    init({ site: 'shop', endpoint: ENDPOINT, sampleRate: 0.00001 }, page.host);
    page.metric('FCP', 800);
    page.hide();
    expect(page.beacons()[0].sample_rate).toBe(0.0001);
  });

  it('defaults to every page load in development and ignores rates outside (0, 1]', () => {
    const page = fakePage({ random: () => 0.99 });
    init({ site: 'shop', endpoint: ENDPOINT, sampleRate: 7 }, page.host);
    page.metric('FCP', 800);
    page.hide();
    expect(page.beacons()[0].sample_rate).toBe(1);
  });
});

describe('beacons', () => {
  it('queues metrics and sends one beacon v1 when the page is hidden', () => {
    const page = fakePage({ mobile: true });
    init({ site: 'shop', endpoint: ENDPOINT }, page.host);
    page.metric('TTFB', 120.5);
    page.metric('FCP', 800);
    page.metric('LCP', 900);
    page.metric('LCP', 1500); // a later LCP candidate replaces the first
    expect(page.sendBeacon).not.toHaveBeenCalled();
    page.hide();
    expect(page.sendBeacon).toHaveBeenCalledTimes(1);
    const [url, body] = page.sendBeacon.mock.calls[0];
    expect(url).toBe(ENDPOINT);
    expect(typeof body).toBe('string'); // a string goes as text/plain: no preflight
    expect(JSON.parse(body)).toEqual({
      site: 'shop',
      route: 'product-id-reviews',
      device: 'mobile',
      nav_type: 'navigate',
      sample_rate: 1,
      metrics: [
        { name: 'TTFB', value: 120.5, id: 'v6-TTFB', rating: 'good' },
        { name: 'FCP', value: 800, id: 'v6-FCP', rating: 'good' },
        { name: 'LCP', value: 1500, id: 'v6-LCP', rating: 'good' },
      ],
    });
  });

  it('flushes on pagehide alone and on visibilitychange to hidden alone', () => {
    const page = fakePage();
    init({ site: 'shop', endpoint: ENDPOINT }, page.host);
    page.metric('FCP', 800);
    (page.host.window as unknown as EventTarget).dispatchEvent(new Event('pagehide'));
    expect(page.sendBeacon).toHaveBeenCalledTimes(1);
    page.metric('LCP', 900);
    page.show(); // visible: nothing
    expect(page.sendBeacon).toHaveBeenCalledTimes(1);
    page.hide();
    expect(page.beacons().map((b) => b.metrics.map((m: VitalMetric) => m.name))).toEqual([['FCP'], ['LCP']]);
  });

  it('does not send a metric twice when both flush events fire', () => {
    const page = fakePage();
    init({ site: 'shop', endpoint: ENDPOINT }, page.host);
    page.metric('LCP', 900);
    page.metric('CLS', 0.1);
    page.hide(); // pagehide, then visibilitychange
    page.hide();
    expect(page.sendBeacon).toHaveBeenCalledTimes(1);
  });

  it('sends a metric again, with the same id, only when its value changed', () => {
    const page = fakePage();
    init({ site: 'shop', endpoint: ENDPOINT }, page.host);
    page.metric('LCP', 900);
    page.metric('CLS', 0.1);
    page.hide();
    page.show();
    page.metric('CLS', 0.1); // reported again, same value
    page.metric('CLS', 0.35);
    page.hide();
    const beacons = page.beacons();
    expect(beacons).toHaveLength(2);
    expect(beacons[1].metrics).toEqual([{ name: 'CLS', value: 0.35, id: 'v6-CLS', rating: 'good', resend: true }]);
  });

  it('says resend: true on a metric id sent before, and no resend key at all on a first send', () => {
    const page = fakePage();
    init({ site: 'shop', endpoint: ENDPOINT }, page.host);
    page.metric('LCP', 900);
    page.metric('CLS', 0.1);
    page.hide();
    page.show();
    page.metric('CLS', 0.35); // grown since it was sent
    page.metric('INP', 200); // first sent now
    page.hide();
    const bodies = page.sendBeacon.mock.calls.map(([, body]) => body);
    expect(bodies).toHaveLength(2);
    expect(bodies[0]).not.toContain('resend'); // not even resend: false: bytes matter
    const metrics = JSON.parse(bodies[1]).metrics;
    expect(metrics).toEqual([
      { name: 'CLS', value: 0.35, id: 'v6-CLS', rating: 'good', resend: true },
      { name: 'INP', value: 200, id: 'v6-INP', rating: 'good' },
    ]);
    expect(metrics[1]).not.toHaveProperty('resend');
    // The wire form, key order included.
    expect(bodies[1]).toContain('{"name":"CLS","value":0.35,"id":"v6-CLS","rating":"good","resend":true}');
    // Grown again: still a resend.
    page.show();
    page.metric('CLS', 0.5);
    page.hide();
    expect(page.beacons()[2].metrics).toEqual([{ name: 'CLS', value: 0.5, id: 'v6-CLS', rating: 'good', resend: true }]);
  });

  it('does not say resend for a metric whose earlier beacon could not leave', () => {
    let accept = false;
    const page = fakePage({ sendBeacon: vi.fn(() => accept), fetch: undefined });
    init({ site: 'shop', endpoint: ENDPOINT }, page.host);
    page.metric('CLS', 0.1);
    page.hide(); // refused: nothing sent
    accept = true;
    page.show();
    page.metric('CLS', 0.2);
    page.hide();
    const sent = (page.host.sendBeacon as ReturnType<typeof vi.fn>).mock.results
      .map((r, i) => [r.value, (page.host.sendBeacon as ReturnType<typeof vi.fn>).mock.calls[i][1]])
      .filter(([ok]) => ok)
      .map(([, body]) => JSON.parse(body as string));
    expect(sent.map((b) => b.metrics)).toEqual([[{ name: 'CLS', value: 0.2, id: 'v6-CLS', rating: 'good' }]]);
  });

  it('says resend on a metric of the page load finalized after a soft navigation began', () => {
    const page = fakePage();
    init({ site: 'shop', endpoint: ENDPOINT, reportSoftNavs: true }, page.host);
    const view = { rating: 'good', navigationType: 'navigate', navigationId: 1 };
    page.report({ name: 'CLS', value: 0.02, id: 'v6-CLS', ...view });
    // The soft navigation's first metric sends the load's metrics.
    page.report({ name: 'TTFB', value: 0, id: 'v6-TTFB-2', rating: 'good', navigationType: 'soft-navigation', navigationId: 2 });
    page.report({ name: 'CLS', value: 0.04, id: 'v6-CLS', ...view });
    page.hide();
    expect(page.beacons().map((b) => b.metrics.map((m: { id: string; resend?: true }) => [m.id, m.resend ?? false]))).toEqual([
      [['v6-CLS', false]],
      [['v6-TTFB-2', false]],
      [['v6-CLS', true]],
    ]);
  });

  it('falls back to fetch with keepalive when sendBeacon returns false', () => {
    const page = fakePage({ sendBeacon: vi.fn(() => false) });
    init({ site: 'shop', endpoint: ENDPOINT }, page.host);
    page.metric('INP', 160);
    page.hide();
    expect(page.fetch).toHaveBeenCalledTimes(1);
    const [url, request] = page.fetch.mock.calls[0];
    expect(url).toBe(ENDPOINT);
    expect(request).toMatchObject({
      method: 'POST',
      keepalive: true,
      headers: { 'content-type': 'text/plain' },
    });
    expect(JSON.parse(request.body as string).metrics[0]).toMatchObject({ name: 'INP', value: 160 });
  });

  it('falls back to fetch when sendBeacon is missing or throws', () => {
    for (const sendBeacon of [
      undefined,
      () => {
        throw new TypeError('refused');
      },
    ]) {
      const page = fakePage({ sendBeacon });
      init({ site: 'shop', endpoint: ENDPOINT }, page.host);
      page.metric('FCP', 800);
      page.hide();
      expect(page.fetch).toHaveBeenCalledTimes(1);
    }
  });

  it('sends nothing when there is nothing new', () => {
    const page = fakePage();
    init({ site: 'shop', endpoint: ENDPOINT }, page.host);
    page.hide();
    expect(page.sendBeacon).not.toHaveBeenCalled();
    expect(page.fetch).not.toHaveBeenCalled();
  });

  it('names the device only when the browser says so', () => {
    for (const [mobile, device] of [
      [true, 'mobile'],
      [false, 'desktop'],
      [undefined, undefined],
    ] as const) {
      const page = fakePage({ mobile });
      init({ site: 'shop', endpoint: ENDPOINT }, page.host);
      page.metric('FCP', 800);
      page.hide();
      expect(page.beacons()[0].device).toBe(device);
    }
  });

  it('normalizes a configured route like the server', () => {
    const page = fakePage();
    init({ site: 'shop', endpoint: ENDPOINT, route: '/users/550e8400-e29b-41d4-a716-446655440000/settings' }, page.host);
    page.metric('FCP', 800);
    page.hide();
    expect(page.beacons()[0].route).toBe('users-id-settings');
  });
});

describe('beaconUrl', () => {
  it('adds a signed token as t and e', () => {
    expect(beaconUrl(ENDPOINT)).toBe(ENDPOINT);
    expect(beaconUrl(ENDPOINT, { t: 'a+b/c', e: 1700000000 })).toBe(`${ENDPOINT}?t=a%2Bb%2Fc&e=1700000000`);
    expect(beaconUrl(`${ENDPOINT}?site=shop`, { t: 'x', e: '1' })).toBe(`${ENDPOINT}?site=shop&t=x&e=1`);
  });

  it('adds the key id as k, as `rum token` prints it for token_secrets', () => {
    expect(beaconUrl(ENDPOINT, { t: 'sig', e: 42, k: '2026-12' })).toBe(`${ENDPOINT}?t=sig&e=42&k=2026-12`);
    expect(beaconUrl(ENDPOINT, { t: 'sig', e: 42, k: 'a&b' })).toBe(`${ENDPOINT}?t=sig&e=42&k=a%26b`);
    expect(beaconUrl(ENDPOINT, { t: 'sig', e: 42, k: '' })).toBe(`${ENDPOINT}?t=sig&e=42`);
  });

  it('sends the beacon to the signed URL', () => {
    const page = fakePage();
    init({ site: 'shop', endpoint: ENDPOINT, token: { t: 'sig', e: 42 } }, page.host);
    page.metric('FCP', 800);
    page.hide();
    expect(page.sendBeacon.mock.calls[0][0]).toBe(`${ENDPOINT}?t=sig&e=42`);
  });
});

describe('page views', () => {
  const PAGE_ID = 'AbCdEfGhIjKlMnOpQrStUv';
  const load = (m: Partial<VitalMetric> & { name: string; value: number }): VitalMetric => ({
    id: `v6-${m.name}`,
    rating: 'good',
    navigationType: 'navigate',
    navigationId: 1,
    navigationURL: 'https://shop.example/product/12345/reviews',
    ...m,
  });
  const soft = (m: Partial<VitalMetric> & { name: string; value: number }, n = 7): VitalMetric =>
    load({
      id: `v6-${m.name}-soft${n}`,
      navigationType: 'soft-navigation',
      navigationId: n,
      navigationURL: `https://shop.example/cart/${n}?step=2#top`,
      ...m,
    });

  it('carries the page id, the release and the rtt in every beacon of the page load', () => {
    const page = fakePage({ randomId: () => PAGE_ID, rtt: () => 150 });
    init({ site: 'shop', endpoint: ENDPOINT, release: ' 2026.12.1 ' }, page.host);
    page.metric('LCP', 900);
    page.hide();
    page.show();
    page.metric('CLS', 0.2);
    page.hide();
    const beacons = page.beacons();
    expect(beacons).toHaveLength(2);
    for (const b of beacons) expect(b).toMatchObject({ page_id: PAGE_ID, release: '2026.12.1', rtt: 150 });
  });

  it('draws the page id once per page load', () => {
    const randomId = vi.fn(() => PAGE_ID);
    const page = fakePage({ randomId });
    init({ site: 'shop', endpoint: ENDPOINT }, page.host);
    page.metric('LCP', 900);
    page.hide();
    page.metric('CLS', 0.2);
    page.hide();
    expect(randomId).toHaveBeenCalledTimes(1);
  });

  it('leaves out a release the ingest would refuse, which would cost the whole beacon', () => {
    for (const release of ['', '   ', 'r\u00e9lease', 'a\nb', 'x'.repeat(65)]) {
      const page = fakePage();
      init({ site: 'shop', endpoint: ENDPOINT, release }, page.host);
      page.metric('FCP', 800);
      page.hide();
      expect(page.beacons()[0], JSON.stringify(release)).not.toHaveProperty('release');
    }
    const page = fakePage();
    init({ site: 'shop', endpoint: ENDPOINT, release: 'v1.2.3 (build 7)' }, page.host);
    page.metric('FCP', 800);
    page.hide();
    expect(page.beacons()[0].release).toBe('v1.2.3 (build 7)');
  });

  it('reads the rtt when the beacon leaves and sends it only within 0..60000 ms', () => {
    let rtt: number | undefined = 50;
    const page = fakePage({ rtt: () => rtt });
    init({ site: 'shop', endpoint: ENDPOINT }, page.host);
    page.metric('FCP', 800);
    rtt = 300;
    page.hide();
    for (const [value, sent] of [
      [undefined, undefined],
      [-1, undefined],
      [60_001, undefined],
      [Number.NaN, undefined],
      [0, 0],
      [60_000, 60_000],
    ] as const) {
      rtt = value;
      page.show();
      page.metric('CLS', Math.random());
      page.hide();
      expect(page.beacons().at(-1)!.rtt, String(value)).toBe(sent);
    }
    expect(page.beacons()[0].rtt).toBe(300);
  });

  it('sends a soft navigation in a beacon of its own: its route, nav_type soft-navigation, its page id', () => {
    const page = fakePage({ randomId: () => PAGE_ID });
    init({ site: 'shop', endpoint: ENDPOINT, reportSoftNavs: true }, page.host);
    page.report(load({ name: 'LCP', value: 900 }));
    page.report(load({ name: 'CLS', value: 0 }));
    expect(page.sendBeacon).not.toHaveBeenCalled();
    // The soft navigation's first metric: the page load's metrics leave now, in their own beacon.
    page.report(soft({ name: 'TTFB', value: 0 }));
    expect(page.beacons()).toHaveLength(1);
    // web-vitals finalizes the page load's CLS after the soft navigation began.
    page.report(load({ name: 'CLS', value: 0.05 }));
    page.report(soft({ name: 'LCP', value: 350 }));
    page.hide();
    const beacons = page.beacons();
    expect(beacons.map((b) => [b.route, b.nav_type, b.page_id, b.metrics.map((m: VitalMetric) => `${m.name}=${m.value}`)])).toEqual([
      ['product-id-reviews', 'navigate', PAGE_ID, ['LCP=900', 'CLS=0']],
      ['product-id-reviews', 'navigate', PAGE_ID, ['CLS=0.05']],
      ['cart-id', 'soft-navigation', `${PAGE_ID}-7`, ['TTFB=0', 'LCP=350']],
    ]);
  });

  it('keeps each soft navigation apart from the next', () => {
    const page = fakePage({ randomId: () => PAGE_ID });
    init({ site: 'shop', endpoint: ENDPOINT, reportSoftNavs: true }, page.host);
    page.report(soft({ name: 'LCP', value: 300 }, 7));
    page.report(soft({ name: 'LCP', value: 400 }, 8));
    page.report(soft({ name: 'LCP', value: 500, navigationURL: 'https://shop.example/users/jane@example.com' }, 9));
    page.hide();
    expect(page.beacons().map((b) => [b.route, b.page_id, b.metrics[0].value])).toEqual([
      ['cart-id', `${PAGE_ID}-7`, 300],
      ['cart-id', `${PAGE_ID}-8`, 400],
      ['users-id', `${PAGE_ID}-9`, 500],
    ]);
  });

  it('keeps a back/forward cache restore apart from the load it restores', () => {
    const page = fakePage();
    init({ site: 'shop', endpoint: ENDPOINT }, page.host);
    page.report(load({ name: 'LCP', value: 900 }));
    page.report(load({ name: 'LCP', value: 40, id: 'v6-bf', navigationType: 'back-forward-cache' }));
    page.hide();
    expect(page.beacons().map((b) => b.nav_type)).toEqual(['navigate', 'back-forward-cache']);
  });

  it('remembers a bounded number of sent metric ids', () => {
    const page = fakePage();
    init({ site: 'shop', endpoint: ENDPOINT, reportSoftNavs: true }, page.host);
    for (let n = 1; n <= 200; n++) page.report(soft({ name: 'LCP', value: n }, n));
    page.hide();
    expect(page.beacons()).toHaveLength(200);
    // The most recent ids are remembered: the same value again sends nothing.
    page.show();
    page.report(soft({ name: 'LCP', value: 200 }, 200));
    page.hide();
    expect(page.beacons()).toHaveLength(200);
  });

  it('sends the attribution it was given, and none for a metric without', () => {
    const page = fakePage();
    init({ site: 'shop', endpoint: ENDPOINT }, page.host);
    page.report(load({ name: 'LCP', value: 900, attribution: { target: 'img#hero', resourceLoadDuration: 400 } }));
    page.report(load({ name: 'FCP', value: 500 }));
    page.hide();
    expect(page.beacons()[0].metrics).toEqual([
      { name: 'LCP', value: 900, id: 'v6-LCP', rating: 'good', attribution: { target: 'img#hero', resourceLoadDuration: 400 } },
      { name: 'FCP', value: 500, id: 'v6-FCP', rating: 'good' },
    ]);
  });
});

describe('randomPageId', () => {
  it('is 16 random bytes in URL-safe base64, within the ingest bounds', () => {
    const ids = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const id = randomPageId()!;
      expect(id).toMatch(/^[A-Za-z0-9_-]{22}$/);
      ids.add(id);
    }
    expect(ids.size).toBe(1000);
  });
});
