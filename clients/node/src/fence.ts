import { InvalidArgumentError, StaleTokenError } from './errors.js';

/**
 * The resource-side fencing rule: remember the highest token seen, refuse any lower one.
 *
 * A lock alone cannot stop a client that paused (GC, swap, network) past its lease from
 * writing after the next holder started. The resource stops it: every write carries the
 * holder's {@link LockHandle.token}, and the resource admits it only if it is at least the
 * highest token already seen. Equal tokens are admitted (one holder makes many writes).
 * Tokens rise across every name and every restart, so one fence per resource is enough.
 *
 * ```ts
 * const fence = new Fence();            // or new Fence(highestStoredWithTheData)
 * fence.admit(7);                       // the holder of token 7 writes
 * fence.admit(9);                       // a newer holder
 * fence.admit(7);                       // throws StaleTokenError: the old holder woke up late
 * ```
 */
export class Fence {
  #highest: number;

  /** @param highest - a highest token already seen (persisted by the resource); default 0. */
  constructor(highest = 0) {
    checkToken(highest);
    this.#highest = highest;
  }

  /**
   * Admits `token` if it is at least the highest seen, and remembers it.
   * @throws {@link StaleTokenError} if a higher token was already admitted.
   */
  admit(token: number): void {
    checkToken(token);
    if (token < this.#highest) throw new StaleTokenError(token, this.#highest);
    this.#highest = token;
  }

  /** Whether `token` would be admitted now (nothing is remembered). */
  accepts(token: number): boolean {
    checkToken(token);
    return token >= this.#highest;
  }

  /** The highest token admitted so far (0 before any). */
  get highest(): number {
    return this.#highest;
  }
}

function checkToken(token: unknown): asserts token is number {
  if (typeof token !== 'number' || !Number.isSafeInteger(token) || token < 0) {
    throw new InvalidArgumentError(`a fencing token is a non-negative safe integer, not ${String(token)}`);
  }
}
