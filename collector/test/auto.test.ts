import { afterEach, describe, expect, it, vi } from 'vitest';

const init = vi.fn();
const initWithAttribution = vi.fn();
vi.mock('../src/index', () => ({ init }));
vi.mock('../src/with-attribution', () => ({ init: initWithAttribution }));

/** Runs a script-tag bundle's entry as a `<script>` with these data attributes. */
async function runScriptTag(dataset: Record<string, string>, entry = '../src/auto') {
  vi.resetModules();
  init.mockClear();
  initWithAttribution.mockClear();
  vi.stubGlobal('document', { currentScript: { dataset, src: 'https://rum.example/rum.js' } });
  await import(entry);
  return init.mock.calls[0]?.[0];
}

afterEach(() => {
  vi.unstubAllGlobals();
});

describe('the script tag', () => {
  it('passes data-token, data-token-expires and data-token-key as t, e and k', async () => {
    const options = await runScriptTag({
      site: 'shop',
      token: 'sig',
      tokenExpires: '1700000000',
      tokenKey: '2026-12',
    });
    expect(options.token).toEqual({ t: 'sig', e: '1700000000', k: '2026-12' });
    expect(options.endpoint).toBe('https://rum.example/api/v1/observability/web-vitals');
  });

  it('sends no k for a single token_secret, and no token without its expiry', async () => {
    expect((await runScriptTag({ site: 'shop', token: 'sig', tokenExpires: '1' })).token).toEqual({
      t: 'sig',
      e: '1',
      k: undefined,
    });
    expect((await runScriptTag({ site: 'shop', token: 'sig' })).token).toBeUndefined();
  });

  it('passes data-release, data-sample-rate and data-endpoint', async () => {
    const options = await runScriptTag({
      site: 'shop',
      release: '2026.12.1',
      sampleRate: '0.5',
      endpoint: 'https://beacons.example/rum',
    });
    expect(options).toMatchObject({
      site: 'shop',
      release: '2026.12.1',
      sampleRate: 0.5,
      endpoint: 'https://beacons.example/rum',
      reportSoftNavs: false,
    });
  });

  it('turns soft navigations on with data-report-soft-navs, present or "true", and off with "false"', async () => {
    expect((await runScriptTag({ site: 'shop', reportSoftNavs: '' })).reportSoftNavs).toBe(true);
    expect((await runScriptTag({ site: 'shop', reportSoftNavs: 'true' })).reportSoftNavs).toBe(true);
    expect((await runScriptTag({ site: 'shop', reportSoftNavs: 'false' })).reportSoftNavs).toBe(false);
  });

  it('starts nothing without data-site', async () => {
    expect(await runScriptTag({})).toBeUndefined();
    expect(init).not.toHaveBeenCalled();
  });

  it('the attribution bundle starts the attribution mode with the same options', async () => {
    await runScriptTag({ site: 'shop', release: 'r1' }, '../src/auto-attribution');
    expect(init).not.toHaveBeenCalled();
    expect(initWithAttribution.mock.calls[0][0]).toMatchObject({ site: 'shop', release: 'r1' });
  });
});
