// The script tag's settings: `<script src=".../rum.js" data-site="shop" data-endpoint="..."
// data-sample-rate="0.5" data-release="2026.12.1" data-report-soft-navs>`, with a signed token
// (`rum token`) in `data-token`, `data-token-expires` and `data-token-key` (its `t`, `e`, `k`).

import { BEACON_PATH, type CollectorOptions } from './init';

/** The options of the script element that loaded the bundle, or `undefined` without `data-site`. */
export function scriptOptions(script: HTMLScriptElement | null | undefined): CollectorOptions | undefined {
  const data = script?.dataset;
  if (!data?.site) return undefined;
  return {
    site: data.site,
    // Without data-endpoint, the beacon goes to the server the script came from.
    endpoint: data.endpoint || new URL(BEACON_PATH, script!.src).href,
    sampleRate: data.sampleRate ? Number(data.sampleRate) : undefined,
    token: data.token && data.tokenExpires ? { t: data.token, e: data.tokenExpires, k: data.tokenKey } : undefined,
    release: data.release,
    // A boolean attribute: present (empty or "true") is on, "false" is off.
    reportSoftNavs: data.reportSoftNavs !== undefined && data.reportSoftNavs !== 'false',
  };
}
