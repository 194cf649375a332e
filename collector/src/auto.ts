// The script-tag bundle: `<script src=".../rum.js" data-site="shop" data-endpoint="..." data-sample-rate="0.5">`,
// with a signed token (`rum token`) in `data-token`, `data-token-expires` and `data-token-key` (its `t`, `e`, `k`).

import { BEACON_PATH, init } from './index';

const script = document.currentScript as HTMLScriptElement | null;
const data = script?.dataset;
if (data?.site) {
  const rate = data.sampleRate ? Number(data.sampleRate) : undefined;
  init({
    site: data.site,
    // Without data-endpoint, the beacon goes to the server the script came from.
    endpoint: data.endpoint || new URL(BEACON_PATH, script!.src).href,
    sampleRate: rate,
    token: data.token && data.tokenExpires ? { t: data.token, e: data.tokenExpires, k: data.tokenKey } : undefined,
  });
}
