import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { MAX_ROUTE_LEN, normalizeRoute } from '../src/route';

// The server's own vectors, read in place: one source of truth for both sides.
const vectorsFile = fileURLToPath(new URL('../../schemas/testdata/routes.json', import.meta.url));
const vectors: { input: string; expected: string }[] = JSON.parse(readFileSync(vectorsFile, 'utf8'));

const isSlug = (s: string) =>
  s.length > 0 && s.length <= MAX_ROUTE_LEN && /^[a-z0-9]+(-[a-z0-9]+)*$/.test(s);

describe('normalizeRoute', () => {
  it('reads the shared vectors', () => {
    expect(vectors.length).toBeGreaterThanOrEqual(20);
  });

  it.each(vectors)('matches the server on $input', ({ input, expected }) => {
    expect(normalizeRoute(input)).toBe(expected);
  });

  it('is a fixed point on every slug it produces', () => {
    for (const { input } of vectors) {
      const slug = normalizeRoute(input);
      expect(isSlug(slug), slug).toBe(true);
      expect(normalizeRoute(slug)).toBe(slug);
    }
  });

  it('lower-cases ASCII only, as the server does', () => {
    // U+212A KELVIN SIGN lower-cases to `k` in JS but is not ASCII: a separator on the server.
    expect(normalizeRoute('/\u212Aey')).toBe('ey');
    expect(normalizeRoute('/\u0130d')).toBe('d');
  });

  it('trims what the server trims and nothing else', () => {
    expect(normalizeRoute('\u00a0/trim/me\u3000')).toBe('trim-me');
    // U+FEFF is not White_Space in Rust: the scheme is not at the start, so it is part of the path.
    expect(normalizeRoute('\ufeffhttps://host/x')).toBe('https-host-x');
  });

  it('hides e-mail addresses, phone numbers and tokens whole, as the server does', () => {
    const ats = ['@', '%40', '%2540', '%252540', '\uff20', '%EF%BC%A0', '%25ef%25bc%25a0', '\ufe6b', '%ef%b9%ab'];
    for (const at of ats) {
      expect(normalizeRoute(`/u/jane.doe+news${at}example.com/orders`)).toBe('u-id-orders');
    }
    for (const phone of ['+1-202-555-0142', '(202)%20555-0142', '%2B44.20.7946.0958']) {
      expect(normalizeRoute(`/call/${phone}`)).toBe('call-id');
    }
    // A base64url token cut by `_` and `-`: no fragment of it stays.
    expect(normalizeRoute('/reset/SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c-x9')).toBe('reset-id');
  });

  it('hides letters then six digits and keeps shorter model numbers, as the server does', () => {
    expect(normalizeRoute('/profile/u8812345')).toBe('profile-id');
    expect(normalizeRoute('/order/ord1234567/track')).toBe('order-id-track');
    expect(normalizeRoute('/p/b12345')).toBe('p-b12345');
    expect(normalizeRoute('/p/rtx4090')).toBe('p-rtx4090');
    // A percent sign that escapes no at sign is no e-mail address.
    expect(normalizeRoute('/sale/100%25-off')).toBe('sale-id-id-off');
  });

  it('is a fixed point on generated paths of tricky characters', () => {
    // xorshift: the same inputs on every run.
    let state = 0x9e3779b9;
    const next = (n: number) => {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      return (state >>> 0) % n;
    };
    const alphabet = 'aZk0917/-_.@%+()4bQ2xX ';
    for (let i = 0; i < 20_000; i++) {
      let input = '';
      for (let n = next(10) * 6; n > 0; n--) input += alphabet[next(alphabet.length)];
      const slug = normalizeRoute(input);
      expect(isSlug(slug), `${JSON.stringify(input)} -> ${slug}`).toBe(true);
      expect(normalizeRoute(slug)).toBe(slug);
    }
  });

  it('stays within the length bound on odd input', () => {
    for (const input of ['/'.repeat(10_000), 'é/'.repeat(500), 'a-'.repeat(100), '\u0000\uffff']) {
      expect(isSlug(normalizeRoute(input))).toBe(true);
    }
  });
});
