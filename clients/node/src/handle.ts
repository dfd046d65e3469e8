import { EventEmitter } from 'node:events';

import { asyncDispose } from './dispose.js';
import { LockLostError, type LostReason, NotFoundError } from './errors.js';

/** A hold as the server describes it (the wire object of API.md). */
export interface Hold {
  /** The lock or semaphore name. */
  name: string;
  /** The hold's id: what release, renew and the admin routes use. */
  hold_id: string;
  /** `lock` or `semaphore`. */
  kind: 'lock' | 'semaphore';
  /** `exclusive` or `shared` for a lock. */
  mode: 'exclusive' | 'shared' | null;
  /** Permits taken (1 for a lock). */
  permits: number;
  /** The semaphore's limit (null for a lock). */
  limit: number | null;
  /** The label of the holder. */
  owner: string;
  /** The session the hold belongs to, if any. */
  session: string | null;
  /** The fencing token: unique, rising with every grant, below 2^53. */
  token: number;
  /** Wall-clock Unix ms of the grant (for display only). */
  granted_at_ms: number;
  /** Milliseconds until the hold's own TTL ends, when the server answered; null: no expiry. */
  expires_in_ms: number | null;
}

/** What a handle needs from the client that made it. @internal */
export interface HoldKeeper {
  releaseHold(holdId: string): Promise<void>;
  renewHold(holdId: string, ttl: number | null | undefined): Promise<Hold>;
  checkToken(name: string, token: number): Promise<boolean>;
}

let markLost: (handle: LockHandle, reason: LostReason) => void;

/** Fires a handle's lost signal (the first reason wins). Not exported from the package.
 * @internal */
export function loseHold(handle: LockHandle, reason: LostReason): void {
  markLost(handle, reason);
}

/** The events of a {@link LockHandle}. */
export interface LockHandleEvents {
  /** The hold was lost (emitted once). */
  lost: [reason: LostReason, error: LockLostError];
}

/**
 * One hold: a lock, a read or write lock, or semaphore permits.
 *
 * Keep it while you use the resource and send {@link LockHandle.token} with every write to
 * it. Stop when the hold is lost: the handle emits `lost` (with the reason), its
 * {@link LockHandle.signal} aborts (pass it to `fetch`, streams, child processes…), and
 * {@link LockHandle.isLost} turns true. End it with `await handle.release()` (in a `finally`)
 * or let `await using` do it.
 *
 * ```ts
 * await using handle = await client.lock('reports').acquire({ wait: 5000 });
 * handle.on('lost', (reason) => console.error('lock lost:', reason));
 * await writeReport({ token: handle.token, signal: handle.signal });
 * ```
 */
export class LockHandle extends EventEmitter<LockHandleEvents> {
  #hold: Hold;
  readonly #keeper: HoldKeeper;
  readonly #controller = new AbortController();
  #lostReason: LostReason | null = null;
  #released = false;
  #releasing: Promise<void> | undefined;

  /** @internal */
  constructor(hold: Hold, keeper: HoldKeeper) {
    super();
    this.#hold = hold;
    this.#keeper = keeper;
  }

  /** The lock or semaphore name. */
  get name(): string {
    return this.#hold.name;
  }

  /** The hold's id (what the admin routes and `GET /v1/locks/{name}` show). */
  get holdId(): string {
    return this.#hold.hold_id;
  }

  /** The fencing token of the grant: a number, exact (tokens stay below 2^53). */
  get token(): number {
    return this.#hold.token;
  }

  /** `lock` or `semaphore`. */
  get kind(): 'lock' | 'semaphore' {
    return this.#hold.kind;
  }

  /** `exclusive` or `shared` for a lock; null for a semaphore. */
  get mode(): 'exclusive' | 'shared' | null {
    return this.#hold.mode ?? null;
  }

  /** Permits held (1 for a lock). */
  get permits(): number {
    return this.#hold.permits;
  }

  /** The hold as the server last described it (after the grant or the last renew). */
  get hold(): Readonly<Hold> {
    return this.#hold;
  }

  /** An `AbortSignal` that aborts (with a {@link LockLostError} as its reason) when the hold
   * is lost. It never aborts after a release. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** Whether the hold has been lost. */
  get isLost(): boolean {
    return this.#lostReason !== null;
  }

  /** Why the hold was lost, or null while it is not. */
  get lostReason(): LostReason | null {
    return this.#lostReason;
  }

  /** Whether {@link LockHandle.release} has completed (or the hold was disposed). */
  get released(): boolean {
    return this.#released;
  }

  /**
   * Releases the hold and waits for the server to confirm. Releasing again is a no-op.
   * @throws {@link LockLostError} if the hold was already gone (lost) on the server.
   * @throws {@link ConnectionError} if the outcome is unknown (the client could not reach
   * the server; the session's end releases the hold at the latest).
   */
  release(): Promise<void> {
    if (this.#released) return Promise.resolve();
    this.#releasing ??= this.#release().finally(() => {
      this.#releasing = undefined;
    });
    return this.#releasing;
  }

  async #release(): Promise<void> {
    try {
      await this.#keeper.releaseHold(this.#hold.hold_id);
      this.#released = true;
    } catch (error) {
      if (error instanceof NotFoundError) {
        this.#released = true;
        throw new LockLostError(this.#lostReason ?? 'expired', this.name, this.holdId);
      }
      throw error;
    }
  }

  /**
   * Renews the hold's own TTL: `renew()` for its current TTL again, `renew(ms)` for a new
   * one, `renew(null)` to remove the expiry (the session still covers it).
   * @returns the hold as the server describes it now.
   * @throws {@link LockLostError} if the hold is gone.
   */
  async renew(ttl?: number | null): Promise<Hold> {
    try {
      const hold = await this.#keeper.renewHold(this.#hold.hold_id, ttl);
      this.#hold = hold;
      return hold;
    } catch (error) {
      if (error instanceof NotFoundError) {
        throw new LockLostError(this.#lostReason ?? 'expired', this.name, this.holdId);
      }
      throw error;
    }
  }

  /** Asks the server whether this hold's token is still current (the `check` op). */
  check(): Promise<boolean> {
    return this.#keeper.checkToken(this.name, this.token);
  }

  /** Throws the {@link LockLostError} if the hold was lost; a cheap guard before each step of
   * work. */
  throwIfLost(): void {
    if (this.#lostReason !== null) throw this.#controller.signal.reason as LockLostError;
  }

  /**
   * Releases the hold unless it is released or lost already; never throws for a lost hold.
   * What `await using` calls at the end of the block.
   */
  async dispose(): Promise<void> {
    if (this.#released) return;
    try {
      await this.release();
    } catch (error) {
      if (error instanceof LockLostError) return;
      throw error;
    }
  }

  /** `await using handle = …` releases the hold at the end of the block. */
  [asyncDispose](): Promise<void> {
    return this.dispose();
  }

  static {
    markLost = (handle, reason) => handle.#markLost(reason);
  }

  /** Marks the hold lost (the first reason wins). */
  #markLost(reason: LostReason): void {
    if (this.#lostReason !== null || this.#released) return;
    this.#lostReason = reason;
    const error = new LockLostError(reason, this.name, this.holdId);
    this.#controller.abort(error);
    this.emit('lost', reason, error);
  }

  /** @internal */
  get [Symbol.toStringTag](): string {
    return 'LockHandle';
  }
}
