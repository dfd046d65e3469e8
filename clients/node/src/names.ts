import { InvalidNameError } from './errors.js';

const encoder = new TextEncoder();

/**
 * Checks a lock name as the server does: 1 to 255 bytes of UTF-8 and no control characters
 * (C0, DEL, C1). Throws {@link InvalidNameError} so a bad name fails before any request.
 */
export function validateName(name: unknown): asserts name is string {
  if (typeof name !== 'string') {
    throw new InvalidNameError(`a name is a string, not ${typeof name}`);
  }
  const bytes = encoder.encode(name).length;
  if (bytes === 0 || bytes > 255) {
    throw new InvalidNameError(`a name is 1 to 255 bytes of UTF-8, this one is ${bytes}`);
  }
  // Lone surrogates cannot be sent as UTF-8 (TextEncoder would silently replace them).
  if (!isWellFormed(name)) {
    throw new InvalidNameError('a name is valid UTF-8 (this one has a lone surrogate)');
  }
  if (/[\u0000-\u001f\u007f-\u009f]/u.test(name)) {
    throw new InvalidNameError('a name has no control characters');
  }
}

function isWellFormed(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit >= 0xd800 && unit <= 0xdbff) {
      const next = text.charCodeAt(i + 1);
      if (!(next >= 0xdc00 && next <= 0xdfff)) return false;
      i++;
    } else if (unit >= 0xdc00 && unit <= 0xdfff) {
      return false;
    }
  }
  return true;
}

/** A name as exactly one URL path segment: everything but the unreserved bytes
 * percent-encoded (`a/b` → `a%2Fb`). */
export function encodeName(name: string): string {
  return encodeURIComponent(name).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}
