import { afterEach, describe, expect, it, vi } from 'vitest';

const init = vi.fn();
vi.mock('../src/index', () => ({ BEACON_PATH: '/api/v1/observability/web-vitals', init }));

/** Runs the script-tag bundle's entry as a `<script>` with these data attributes. */
async function runScriptTag(dataset: Record<string, string>) {
  vi.resetModules();
  init.mockClear();
  vi.stubGlobal('document', { currentScript: { dataset, src: 'https://rum.example/rum.js' } });
  await import('../src/auto');
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
});
