import { afterEach, describe, expect, it, vi } from 'vitest';
import { beaconAttribution, MAX_SELECTOR_LEN, MAX_URL_LEN, stripUrl } from '../src/attribution';
import { browserHost, start, type VitalMetric, type WebVitals } from '../src/with-attribution';
import { browserHost as plainHost } from '../src/index';

/** A DOM node and a performance entry stand-in: what must never reach a beacon. */
const node = { nodeType: 1, parentNode: null, outerHTML: '<img>' };
const entry = { entryType: 'largest-contentful-paint', element: node, toJSON: () => ({}) };

describe('beaconAttribution', () => {
  it('keeps the LCP target, its resource without query string, and the four subparts', () => {
    expect(
      beaconAttribution('LCP', {
        target: 'main>img.hero',
        url: 'https://cdn.example/hero.jpg?w=1200&token=secret#x',
        timeToFirstByte: 120.5,
        resourceLoadDelay: 30,
        resourceLoadDuration: 800.25,
        elementRenderDelay: 12,
        navigationEntry: entry,
        lcpResourceEntry: entry,
        lcpEntry: entry,
      }),
    ).toEqual({
      target: 'main>img.hero',
      url: 'https://cdn.example/hero.jpg',
      timeToFirstByte: 120.5,
      resourceLoadDelay: 30,
      resourceLoadDuration: 800.25,
      elementRenderDelay: 12,
    });
  });

  it('keeps the INP target, type, three phases and the longest script (web-vitals 5+ longestScript)', () => {
    const script = {
      entryType: 'script',
      invoker: 'BUTTON#buy.onclick',
      invokerType: 'event-listener',
      sourceURL: 'https://shop.example/static/app.js?v=42',
      sourceFunctionName: 'buy',
      window: {},
    };
    expect(
      beaconAttribution('INP', {
        interactionTarget: '#buy',
        interactionType: 'pointer',
        interactionTime: 1000,
        nextPaintTime: 1200,
        inputDelay: 3,
        processingDuration: 150,
        presentationDelay: 20.5,
        loadState: 'complete',
        processedEventEntries: [entry],
        longAnimationFrameEntries: [entry],
        longestScript: { entry: script, subpart: 'processing-duration', intersectingDuration: 150 },
        totalScriptDuration: 150,
      }),
    ).toEqual({
      interactionTarget: '#buy',
      interactionType: 'pointer',
      inputDelay: 3,
      processingDuration: 150,
      presentationDelay: 20.5,
      scriptUrl: 'https://shop.example/static/app.js',
      scriptInvoker: 'BUTTON#buy.onclick',
    });
  });

  it('strips the query string of an invoker that is a script URL, and keeps an id selector whole', () => {
    const inp = (invoker: string) =>
      beaconAttribution('INP', { longestScript: { entry: { invoker, sourceURL: '' } } })?.scriptInvoker;
    expect(inp('https://shop.example/app.js?session=abc')).toBe('https://shop.example/app.js');
    expect(inp('IMG#hero.onload')).toBe('IMG#hero.onload');
    expect(inp('x'.repeat(300))).toHaveLength(128);
  });

  it('keeps the CLS largest shift target', () => {
    expect(
      beaconAttribution('CLS', {
        largestShiftTarget: '#banner',
        largestShiftTime: 300,
        largestShiftValue: 0.2,
        largestShiftEntry: entry,
        largestShiftSource: { node },
        loadState: 'complete',
      }),
    ).toEqual({ largestShiftTarget: '#banner' });
  });

  it('sends nothing for FCP and TTFB, nor for a metric whose attribution is empty or missing', () => {
    expect(beaconAttribution('FCP', { timeToFirstByte: 10, firstByteToFCP: 20 })).toBeUndefined();
    expect(beaconAttribution('TTFB', { waitingDuration: 1 })).toBeUndefined();
    expect(beaconAttribution('LCP', {})).toBeUndefined();
    expect(beaconAttribution('LCP', undefined)).toBeUndefined();
    expect(beaconAttribution('CLS', null)).toBeUndefined();
    // web-vitals sets an absent target as undefined, an element removed from the DOM as ''.
    expect(beaconAttribution('INP', { interactionTarget: '' })).toBeUndefined();
  });

  it('leaves out, one by one, the fields the ingest would refuse (it would drop the whole metric)', () => {
    expect(
      beaconAttribution('LCP', {
        target: 'div\u0000.x',
        url: 'https://a.example/\nimg.png',
        timeToFirstByte: -1,
        resourceLoadDelay: Number.NaN,
        resourceLoadDuration: Infinity,
        elementRenderDelay: 600_001,
      }),
    ).toBeUndefined();
    expect(beaconAttribution('LCP', { target: 42, url: {}, timeToFirstByte: '12', elementRenderDelay: 5 })).toEqual({
      elementRenderDelay: 5,
    });
  });

  it('cuts long selectors and URLs at the ingest bounds, never inside a character', () => {
    const long = beaconAttribution('LCP', { target: '\u{1F600}'.repeat(300), url: `https://a.example/${'p'.repeat(3000)}` })!;
    expect(Array.from(long.target!)).toHaveLength(MAX_SELECTOR_LEN);
    expect(long.target!.endsWith('\u{1F600}')).toBe(true);
    expect(long.url).toHaveLength(MAX_URL_LEN);
  });
});

describe('stripUrl', () => {
  it('removes query string, fragment and credentials', () => {
    expect(stripUrl('https://cdn.example/a.png?x=1#f')).toBe('https://cdn.example/a.png');
    expect(stripUrl('https://user:pw@cdn.example/a.png')).toBe('https://cdn.example/a.png');
    expect(stripUrl('/relative/a.png#f')).toBe('/relative/a.png');
    expect(stripUrl(' https://cdn.example/a@2x.png ')).toBe('https://cdn.example/a@2x.png');
  });

  it('names data: and blob: URLs by their scheme only', () => {
    expect(stripUrl(`data:image/png;base64,${'A'.repeat(100_000)}`)).toBe('data:');
    expect(stripUrl('BLOB:https://shop.example/1234')).toBe('blob:');
  });

  it('gives nothing for what is not a URL string', () => {
    for (const v of [undefined, null, 12, '', '?only=query', 'a\u0007b']) expect(stripUrl(v)).toBeUndefined();
  });
});

describe('browserHost', () => {
  afterEach(() => vi.unstubAllGlobals());

  /** A web-vitals build whose metric functions are recorded, to report through them. */
  function fakeVitals() {
    const calls: { name: string; report: (m: unknown) => void; opts: unknown }[] = [];
    const on = (name: string) => (report: (m: unknown) => void, opts?: unknown) => calls.push({ name, report, opts });
    const vitals = { onTTFB: on('TTFB'), onFCP: on('FCP'), onLCP: on('LCP'), onCLS: on('CLS'), onINP: on('INP') };
    return { vitals: vitals as unknown as WebVitals, calls };
  }

  function stubBrowser(connection?: { rtt?: number }) {
    vi.stubGlobal('window', {});
    vi.stubGlobal('document', {});
    vi.stubGlobal('location', { pathname: '/p/1' });
    vi.stubGlobal('navigator', { connection, sendBeacon: () => true });
  }

  it('subscribes to the five metrics with reportAllChanges, and reportSoftNavs when asked', () => {
    stubBrowser();
    for (const reportSoftNavs of [false, true]) {
      const { vitals, calls } = fakeVitals();
      browserHost(vitals, { reportSoftNavs }).observe(() => {});
      expect(calls.map((c) => c.name)).toEqual(['TTFB', 'FCP', 'LCP', 'CLS', 'INP']);
      for (const c of calls) expect(c.opts).toEqual({ reportAllChanges: true, reportSoftNavs });
    }
  });

  it('passes on named fields only: no entries, no DOM, the attribution mapped to its beacon fields', () => {
    stubBrowser();
    const { vitals, calls } = fakeVitals();
    const seen: VitalMetric[] = [];
    browserHost(vitals, {}, beaconAttribution).observe((m) => seen.push(m));
    calls.find((c) => c.name === 'LCP')!.report({
      name: 'LCP',
      value: 1200,
      delta: 1200,
      id: 'v6-1',
      rating: 'good',
      entries: [entry],
      navigationType: 'soft-navigation',
      navigationId: 3,
      navigationURL: 'https://shop.example/cart',
      navigationStartTime: 5000,
      attribution: { target: '#hero', url: 'https://shop.example/h.jpg?x', lcpEntry: entry, elementRenderDelay: 1200 },
    });
    expect(seen).toEqual([
      {
        name: 'LCP',
        value: 1200,
        id: 'v6-1',
        rating: 'good',
        navigationType: 'soft-navigation',
        navigationId: 3,
        navigationURL: 'https://shop.example/cart',
        attribution: { target: '#hero', url: 'https://shop.example/h.jpg', elementRenderDelay: 1200 },
      },
    ]);
  });

  it('sends web-vitals\' reports of one metric id as a first send, then resend: true, and never its delta', () => {
    const sendBeacon = vi.fn((_url: string, _body: string) => true);
    const doc = Object.assign(new EventTarget(), { visibilityState: 'visible' });
    vi.stubGlobal('window', new EventTarget());
    vi.stubGlobal('document', doc);
    vi.stubGlobal('location', { pathname: '/p/1' });
    vi.stubGlobal('navigator', { sendBeacon });
    const { vitals, calls } = fakeVitals();
    start({ site: 'shop', endpoint: 'https://rum.example/b', sampleRate: 1 }, browserHost(vitals, {}, beaconAttribution));
    const cls = calls.find((c) => c.name === 'CLS')!;
    const hide = () => {
      doc.visibilityState = 'hidden';
      doc.dispatchEvent(new Event('visibilitychange'));
      doc.visibilityState = 'visible';
    };
    // What web-vitals reports: the first time delta == value, later the change since.
    cls.report({ name: 'CLS', value: 0.05, delta: 0.05, id: 'v6-9', rating: 'good', entries: [], navigationType: 'navigate' });
    hide();
    cls.report({ name: 'CLS', value: 0.15, delta: 0.1, id: 'v6-9', rating: 'needs-improvement', entries: [], navigationType: 'navigate' });
    hide();
    const bodies = sendBeacon.mock.calls.map(([, body]) => body);
    expect(bodies).toHaveLength(2);
    for (const body of bodies) expect(body).not.toContain('delta');
    expect(bodies[0]).not.toContain('resend');
    expect(JSON.parse(bodies[1]).metrics).toEqual([
      { name: 'CLS', value: 0.15, id: 'v6-9', rating: 'needs-improvement', resend: true },
    ]);
  });

  it('sends no attribution from the plain build', () => {
    stubBrowser();
    const { vitals, calls } = fakeVitals();
    const seen: VitalMetric[] = [];
    plainHost(vitals).observe((m) => seen.push(m));
    calls[2].report({ name: 'LCP', value: 1, id: 'a', attribution: { target: '#x' } });
    expect(seen[0].attribution).toBeUndefined();
  });

  it('reads the rtt from navigator.connection when the browser has it', () => {
    stubBrowser({ rtt: 250 });
    expect(browserHost(fakeVitals().vitals).rtt!()).toBe(250);
    stubBrowser(undefined);
    expect(browserHost(fakeVitals().vitals).rtt!()).toBeUndefined();
  });
});
