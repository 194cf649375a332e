// The route label: the same slug the server computes (schemas/src/route.rs, pinned by
// schemas/testdata/routes.json, which test/route.test.ts runs in full).

/** The longest route slug. */
export const MAX_ROUTE_LEN = 32;

// Rust's `str::trim` set (Unicode White_Space), which differs from JS `trim` (U+FEFF, U+0085).
const EDGE_SPACE =
  /^[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+|[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$/g;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const ID_TOKEN = /^(\d+|(?=[a-f]*\d)[0-9a-f]{16,})$/;

// ASCII only, as on the server: `toLowerCase` would turn e.g. U+212A (Kelvin) into `k`.
const asciiLower = (s: string): string => s.replace(/[A-Z]+/g, (c) => c.toLowerCase());

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
  for (const segment of path.split('/')) {
    const tokens = UUID.test(segment) ? ['id'] : segment.split(/[^a-z0-9]+/);
    for (let token of tokens) {
      if (!token) continue;
      if (ID_TOKEN.test(token)) token = 'id';
      if (!slug) {
        // Only a first token can be too long on its own: cut it, then check it again.
        const cut = token.slice(0, MAX_ROUTE_LEN);
        slug = ID_TOKEN.test(cut) ? 'id' : cut;
      } else if (slug.length + 1 + token.length <= MAX_ROUTE_LEN) {
        slug += '-' + token;
      } else {
        return slug;
      }
    }
  }
  return slug || 'root';
}
