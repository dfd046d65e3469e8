/**
 * The `Symbol.asyncDispose` of this runtime (Node ≥ 20 has one; on Node 18 the well-known
 * registry symbol that TypeScript's `await using` helpers and polyfills use). Handles and
 * clients implement it, so `await using handle = await lock.acquire()` releases the hold at
 * the end of the block.
 */
export const asyncDispose: typeof Symbol.asyncDispose =
  (Symbol as { asyncDispose?: typeof Symbol.asyncDispose }).asyncDispose ??
  (Symbol.for('Symbol.asyncDispose') as typeof Symbol.asyncDispose);
