// The route label: the same slug the server computes (schemas/src/route.rs, pinned by
// schemas/testdata/routes.json, which test/route.test.ts runs in full).

/** The longest route slug. */
export const MAX_ROUTE_LEN = 32;

// Rust's `str::trim` set (Unicode White_Space), which differs from JS `trim` (U+FEFF, U+0085).
const EDGE_SPACE =
  /^[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+|[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$/g;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
// A phone number: digits and + - ( ) . (or %20 %2b %28 %29, lower-cased), at least 7 digits.
const PHONE = /^(?:[0-9+().-]|%(?:20|2b|28|29))+$/;
const PHONE_ESCAPES = /%(?:20|2b|28|29)/g;
const MIN_PHONE_DIGITS = 7;
// A secret token: 16+ characters with letters and digits, or 8+ in which they alternate 3+ times.
const MIN_SECRET_LEN = 16;
const MIN_MIXED_LEN = 8;
const MIN_ALTERNATIONS = 3;
// Letters then 6+ digits is a per-user or per-order number (`u8812345`; not `b12345`, `rtx4090`).
const PREFIXED_ID = /^[a-z]*\d{6,}$/;
// An at sign (`@`, fullwidth U+FF20, small U+FE6B) in UTF-8 bytes, percent-decoded up to 3 times.
const AT_SIGN = /@|\xef\xbc\xa0|\xef\xb9\xab/;
const ESCAPE = /%([0-9a-f]{2})/g;
const MAX_DECODES = 3;

// ASCII only, as on the server: `toLowerCase` would turn e.g. U+212A (Kelvin) into `k`.
const asciiLower = (s: string): string => s.replace(/[A-Z]+/g, (c) => c.toLowerCase());

const isDigit = (c: string): boolean => c >= '0' && c <= '9';

/** Tokens are `[a-z0-9]`: a property of the token alone, so a slug never holds a new secret. */
function isSecretToken(token: string): boolean {
  let digits = 0;
  let alternations = 0;
  for (let i = 0; i < token.length; i++) {
    if (isDigit(token[i])) digits++;
    if (i > 0 && isDigit(token[i]) !== isDigit(token[i - 1])) alternations++;
  }
  return (
    (token.length >= MIN_SECRET_LEN && digits > 0 && digits < token.length) ||
    (token.length >= MIN_MIXED_LEN && alternations >= MIN_ALTERNATIONS)
  );
}

const isIdToken = (token: string): boolean =>
  /^\d+$/.test(token) || PREFIXED_ID.test(token) || isSecretToken(token);

/** The segment's UTF-8 bytes, one character each, as the server sees them. */
const utf8 = (s: string): string =>
  Array.from(new TextEncoder().encode(s), (b) => String.fromCharCode(b)).join('');

function hasAtSign(segment: string): boolean {
  let bytes = utf8(segment);
  for (let i = 0; i < MAX_DECODES; i++) {
    bytes = bytes.replace(ESCAPE, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  }
  return AT_SIGN.test(bytes);
}

/** A UUID, an e-mail address or handle, or a phone number: the whole segment is `id`. */
function isPersonalSegment(segment: string): boolean {
  if (UUID.test(segment) || hasAtSign(segment)) return true;
  if (!PHONE.test(segment)) return false;
  return segment.replace(PHONE_ESCAPES, '').replace(/\D/g, '').length >= MIN_PHONE_DIGITS;
}

/** Normalizes a path or URL into a route slug: `/product/123/reviews` -> `product-id-reviews`. */
export function normalizeRoute(raw: string): string {
  let path = raw.replace(EDGE_SPACE, '');
  for (const scheme of ['https://', 'http://', '//']) {
    if (asciiLower(path.slice(0, scheme.length)) === scheme) {
      const rest = path.slice(scheme.length);
      const at = rest.search(/[/?#]/);
      path = at < 0 ? '' : rest.slice(at);
      break;
    }
  }
  path = asciiLower(path.split(/[?#]/)[0]);
  let slug = '';
  // Appends a whole token while the slug stays within MAX_ROUTE_LEN; false when it is complete.
  const push = (token: string): boolean => {
    if (!slug) {
      // Only a first token can be too long on its own: cut it, then check it again.
      const cut = token.slice(0, MAX_ROUTE_LEN);
      slug = isIdToken(cut) ? 'id' : cut;
      return true;
    }
    if (slug.length + 1 + token.length > MAX_ROUTE_LEN) return false;
    slug += '-' + token;
    return true;
  };
  for (const segment of path.split('/')) {
    if (!segment) continue;
    if (isPersonalSegment(segment)) {
      if (!push('id')) break;
      continue;
    }
    for (const part of segment.split('.')) {
      const tokens = part.split(/[^a-z0-9]+/).filter((t) => t);
      const fits = tokens.some(isSecretToken)
        ? push('id')
        : tokens.every((t) => push(isIdToken(t) ? 'id' : t));
      if (!fits) return slug;
    }
  }
  return slug || 'root';
}
