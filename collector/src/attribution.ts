// What a metric's web-vitals attribution adds to the beacon: a few named fields, copied one by one and
// bounded as the ingest bounds them (schemas/beacon.v1.schema.json). The attribution object itself is
// never sent: it holds DOM nodes and performance entries.

/** A metric's attribution in beacon v1: only the fields the ingest reads, each optional. */
export interface BeaconAttribution {
  /** LCP: the largest element's selector. */
  target?: string;
  /** LCP: the largest element's resource, without query string and fragment. */
  url?: string;
  timeToFirstByte?: number;
  resourceLoadDelay?: number;
  resourceLoadDuration?: number;
  elementRenderDelay?: number;
  /** INP: the selector of the element interacted with. */
  interactionTarget?: string;
  /** INP: `pointer` or `keyboard`. */
  interactionType?: string;
  inputDelay?: number;
  processingDuration?: number;
  presentationDelay?: number;
  /** INP: the source URL of the longest script (Long Animation Frames), without query string and fragment. */
  scriptUrl?: string;
  /** INP: what invoked the longest script, e.g. `BUTTON#buy.onclick`. */
  scriptInvoker?: string;
  /** CLS: the selector of the first element of the largest layout shift. */
  largestShiftTarget?: string;
}

/** The ingest's bounds (`rum_schemas::limits`): a longer or otherwise invalid field is left out. */
export const MAX_SELECTOR_LEN = 256;
export const MAX_INVOKER_LEN = 128;
/** The ingest keeps 512 characters of a URL once its query string and fragment are gone. */
export const MAX_URL_LEN = 512;
/** A phase of a metric's time is at most the metric's own maximum, 10 minutes. */
export const MAX_PHASE_MS = 600_000;

// Controls anywhere make the ingest drop the whole metric (invalid_attribution).
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const URL_SCHEME = /^[a-z][a-z0-9+.-]*:/i;

/** Cut to `max` characters (code points, as the ingest counts), never inside a surrogate pair. */
function cut(s: string, max: number): string {
  return s.length <= max ? s : Array.from(s).slice(0, max).join('');
}

/** A selector or name: trimmed, no control characters, at most `max` characters; else nothing. */
function text(value: unknown, max: number): string | undefined {
  if (typeof value !== 'string' || CONTROL.test(value)) return undefined;
  const s = value.trim();
  return s ? cut(s, max) : undefined;
}

/**
 * A URL without its query string and fragment (they can hold personal data) and without credentials;
 * `data:` and `blob:` URLs are named by their scheme only (an inline image can be megabytes).
 */
export function stripUrl(value: unknown): string | undefined {
  if (typeof value !== 'string' || CONTROL.test(value)) return undefined;
  const s = value.trim();
  const scheme = /^(data|blob):/i.exec(s);
  if (scheme) return scheme[1].toLowerCase() + ':';
  let url = s.split(/[?#]/)[0];
  const authority = /^([a-z][a-z0-9+.-]*:\/\/)([^/]*@)/i.exec(url);
  if (authority) url = authority[1] + url.slice(authority[0].length);
  return url ? cut(url, MAX_URL_LEN) : undefined;
}

/** A phase in milliseconds: a finite number from 0 to the metric's maximum; else nothing. */
function phase(value: unknown): number | undefined {
  return typeof value === 'number' && value >= 0 && value <= MAX_PHASE_MS ? value : undefined;
}

/** The invoker of a script: a script's own URL (classic or module script) loses its query string too. */
function invoker(value: unknown): string | undefined {
  const s = text(value, Infinity);
  if (s === undefined) return undefined;
  return cut(URL_SCHEME.test(s) ? (stripUrl(s) ?? '') : s, MAX_INVOKER_LEN) || undefined;
}

/** Drops the absent fields, so that a metric without attribution sends none. */
function defined(fields: BeaconAttribution): BeaconAttribution | undefined {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) out[k] = v;
  return Object.keys(out).length ? (out as BeaconAttribution) : undefined;
}

type Fields = Record<string, unknown> | undefined;

/**
 * The beacon fields of a metric's attribution (web-vitals' attribution build), or `undefined` when it
 * has none. LCP, INP and CLS have fields; FCP and TTFB none.
 */
export function beaconAttribution(name: string, attribution: unknown): BeaconAttribution | undefined {
  if (typeof attribution !== 'object' || attribution === null) return undefined;
  const a = attribution as Record<string, unknown>;
  switch (name) {
    case 'LCP':
      return defined({
        target: text(a.target, MAX_SELECTOR_LEN),
        url: stripUrl(a.url),
        timeToFirstByte: phase(a.timeToFirstByte),
        resourceLoadDelay: phase(a.resourceLoadDelay),
        resourceLoadDuration: phase(a.resourceLoadDuration),
        elementRenderDelay: phase(a.elementRenderDelay),
      });
    case 'INP': {
      // web-vitals 5+: the longest Long Animation Frame script, a PerformanceScriptTiming entry.
      const script = (a.longestScript as Fields)?.entry as Fields;
      return defined({
        interactionTarget: text(a.interactionTarget, MAX_SELECTOR_LEN),
        interactionType: text(a.interactionType, MAX_SELECTOR_LEN),
        inputDelay: phase(a.inputDelay),
        processingDuration: phase(a.processingDuration),
        presentationDelay: phase(a.presentationDelay),
        scriptUrl: stripUrl(script?.sourceURL),
        scriptInvoker: invoker(script?.invoker),
      });
    }
    case 'CLS':
      return defined({ largestShiftTarget: text(a.largestShiftTarget, MAX_SELECTOR_LEN) });
    default:
      return undefined;
  }
}
