import { DEFAULT_ADDR, DEFAULT_OWNER, env, millis, parseAddr, randomRequestId } from './config.js';
import { asyncDispose } from './dispose.js';
import { errorFromBody, InvalidArgumentError, LockedError } from './errors.js';
import type { Hold, HoldKeeper, LockHandle } from './handle.js';
import { validateName } from './names.js';
import { type SessionSettings, type StreamRequest, StreamSession } from './session.js';

/** How to reach the server and how the session behaves. Every field has a default. All
 * durations are milliseconds. */
export interface ClientOptions {
  /** The server: `host:port`, `http://host:port` or `https://host:port`. Default:
   * `LOCKSERVER_ADDR`, else `127.0.0.1:8080`. */
  addr?: string;
  /** The client secret (sent as `Authorization: Bearer`). Default: `LOCKSERVER_SECRET`, else
   * none. */
  secret?: string;
  /** The label the server shows for this client's session and holds. Default:
   * `LOCKSERVER_OWNER`, else `host:pid:random` (unique to the process). */
  owner?: string;
  /** The session's lease: how soon the server frees this client's holds after it dies.
   * Default: the server's (2000 on a single node). */
  sessionTtl?: number;
  /** How long the session outlives a dropped connection, so a reconnect can resume it
   * (bounded by the lease). Default: the server's (0: the lease alone). */
  grace?: number;
  /** How long connecting (TCP, upgrade and `hello`) may take. Default 5000. */
  connectTimeout?: number;
  /** How long a release, renew or check may wait for its answer, and how much longer than its
   * own wait a timed acquire may (then: {@link ConnectionError}, outcome unknown).
   * Default 30000. */
  requestTimeout?: number;
  /** Moves the local lease deadline this much earlier still, so work can be stopped before the
   * server could release the hold. Default 0. */
  leaseMargin?: number;
  /** The bound on the rate difference of the client's and the server's clocks, taken off
   * every lease. Default 0.01 (1 %). */
  drift?: number;
}

/** How long to wait and how to hold; every field optional. Durations are milliseconds. */
export interface AcquireOptions {
  /**
   * How long to wait for the grant. `undefined` or `null` (the default): without a deadline.
   * `0`: try once ({@link LockedError} if held). A number: wait that long, then
   * {@link LockTimeoutError}. Never returns early; the server keeps FIFO order.
   */
  wait?: number | null;
  /** Aborting it withdraws the waiting request from the server's queue (`cancel`); if the
   * grant won the race, the hold is given back. The promise rejects with the signal's
   * reason. */
  signal?: AbortSignal;
  /** The hold's own TTL: the server releases it this long after the grant unless renewed
   * ({@link LockHandle.renew}). Default: none (the session covers it). */
  ttl?: number;
  /** After an involuntary end of the hold (TTL, session loss) nobody gets the name for this
   * long (at most 60000). Default 0. */
  lockDelay?: number;
  /** The request's idempotency key (at most 64 bytes). Repeating an acquire with the same
   * key on the same session returns the same hold, or rejoins the same place in the queue.
   * Default: a random one per call (re-sends after a reconnect always reuse it). */
  requestId?: string;
}

/** What to acquire: {@link Client.acquire}'s options. */
export interface AcquireSpec extends AcquireOptions {
  /** `lock` (default) or `semaphore`. */
  kind?: 'lock' | 'semaphore';
  /** For a lock: `exclusive` (default) or `shared`. */
  mode?: 'exclusive' | 'shared';
  /** For a semaphore: its number of permits (required). */
  limit?: number;
  /** For a semaphore: how many permits to take, 1 ≤ permits ≤ limit (default 1). */
  permits?: number;
}

/** {@link Semaphore} acquire options: {@link AcquireOptions} and the permits to take. */
export interface SemaphoreAcquireOptions extends AcquireOptions {
  /** How many permits to take, 1 ≤ permits ≤ the limit (default 1). */
  permits?: number;
}

/** Options a lock object applies to every acquire (each call may override them). */
export type HoldDefaults = Pick<AcquireOptions, 'ttl' | 'lockDelay'>;

const MAX_U32 = 0xffff_ffff;

/**
 * A Lockserver client: locks, reader-writer locks and semaphores over one streaming session.
 *
 * The session (a WebSocket to `/v1/session`) opens on first use and lives until
 * {@link Client.close}: it is kept alive by pings, resumed after a dropped connection, and
 * when it ends every hold of it is released by the server — so a crashed process never leaves
 * a lock behind for longer than the session's TTL. The connection keeps the process alive
 * while a request is pending or a hold is held; an idle client does not.
 *
 * ```ts
 * import { Client } from 'lockserver-client';
 *
 * const client = new Client({ addr: '127.0.0.1:8080' });   // or new Client() (env, defaults)
 * const handle = await client.lock('invoices').acquire({ wait: 5000 });
 * try {
 *   await writeInvoices({ token: handle.token, signal: handle.signal });
 * } finally {
 *   await handle.release();
 * }
 * await client.close();
 * ```
 */
export class Client {
  readonly #settings: SessionSettings;
  readonly #session: StreamSession;

  /** @param options - see {@link ClientOptions}; everything has a default. */
  constructor(options: ClientOptions = {}) {
    const secret = options.secret ?? env('LOCKSERVER_SECRET');
    if (secret !== undefined && /[\u0000-\u001f\u007f]/.test(secret)) {
      throw new InvalidArgumentError('the secret has control characters');
    }
    const drift = options.drift ?? 0.01;
    if (typeof drift !== 'number' || !(drift >= 0 && drift < 0.5)) {
      throw new InvalidArgumentError('drift must be in [0, 0.5)');
    }
    const owner = options.owner ?? env('LOCKSERVER_OWNER') ?? DEFAULT_OWNER;
    if (typeof owner !== 'string') throw new InvalidArgumentError('owner must be a string');
    this.#settings = {
      base: parseAddr(options.addr ?? env('LOCKSERVER_ADDR') ?? DEFAULT_ADDR),
      secret: secret === '' ? undefined : secret,
      owner,
      sessionTtl: options.sessionTtl === undefined ? undefined : millis('sessionTtl', options.sessionTtl, 1),
      grace: options.grace === undefined ? undefined : millis('grace', options.grace),
      connectTimeout: millis('connectTimeout', options.connectTimeout ?? 5000, 1),
      requestTimeout: millis('requestTimeout', options.requestTimeout ?? 30_000, 1),
      leaseMargin: millis('leaseMargin', options.leaseMargin ?? 0),
      drift,
      maxRedirects: 3,
    };
    const keeper: HoldKeeper = {
      releaseHold: (holdId) => this.#releaseHold(holdId),
      renewHold: (holdId, ttl) => this.#renewHold(holdId, ttl),
      checkToken: (name, token) => this.check(name, token),
    };
    this.#session = new StreamSession(this.#settings, keeper);
  }

  /** The server's base URL (`http://host:port`); a leader hint can change it. */
  get addr(): string {
    return this.#settings.base;
  }

  /** The owner label this client sends. */
  get owner(): string {
    return this.#settings.owner;
  }

  /** The current session's id, or null before the first request and after it ended. */
  get sessionId(): string | null {
    return this.#session.sessionId;
  }

  /** An exclusive lock named `name`. */
  lock(name: string, defaults: HoldDefaults = {}): Lock {
    return new Lock(this, name, defaults);
  }

  /** A reader-writer lock named `name`: many readers (`shared`) or one writer. */
  rwLock(name: string, defaults: HoldDefaults = {}): ReaderWriterLock {
    return new ReaderWriterLock(this, name, defaults);
  }

  /** A counting semaphore named `name` with `limit` permits. */
  semaphore(name: string, limit: number, defaults: HoldDefaults = {}): Semaphore {
    return new Semaphore(this, name, limit, defaults);
  }

  /**
   * Acquires `name` as `spec` says (a lock by default, exclusive, waiting without deadline).
   * The lock objects ({@link Client.lock}, {@link Client.rwLock}, {@link Client.semaphore})
   * are shorthands for it.
   *
   * @throws {@link LockedError} a try (`wait: 0`) found it held.
   * @throws {@link LockTimeoutError} the wait ran out.
   * @throws {@link InvalidNameError} / {@link InvalidArgumentError} before anything is sent.
   * @throws {@link ConflictError} a kind/limit mismatch, or this client already holds or waits
   * on the name (locks are not re-entrant).
   * @throws {@link ConnectionError} the outcome is unknown (whatever the request may have
   * created is given back by its session).
   * @throws the signal's reason when `spec.signal` aborts.
   */
  async acquire(name: string, spec: AcquireSpec = {}): Promise<LockHandle> {
    validateName(name);
    const request = buildAcquire(name, spec);
    const wait = request.wait_ms as number | null;
    const deadline = wait === null || wait === 0 ? null : performance.now() + wait;
    const guard = wait === null ? null : wait + this.#settings.requestTimeout;
    const answer = await this.#session.call(request, { deadline, guard, signal: spec.signal });
    if (answer.handle) return answer.handle;
    throw errorFromBody(answer.reply.error, { waitMs: wait });
  }

  /** Takes `name` if it is free now (as {@link Client.acquire} with `wait: 0`); null if held. */
  async tryAcquire(name: string, spec: Omit<AcquireSpec, 'wait'> = {}): Promise<LockHandle | null> {
    try {
      return await this.acquire(name, { ...spec, wait: 0 });
    } catch (error) {
      if (error instanceof LockedError) return null;
      throw error;
    }
  }

  /** Whether `token` is the token of a live hold of `name` (the server's CheckSequencer).
   * Call it right before acting where the resource cannot keep a {@link Fence}. */
  async check(name: string, token: number): Promise<boolean> {
    validateName(name);
    if (typeof token !== 'number' || !Number.isSafeInteger(token) || token < 0) {
      throw new InvalidArgumentError(`a fencing token is a non-negative safe integer, not ${String(token)}`);
    }
    const answer = await this.#session.call(
      { op: 'check', name, token },
      { guard: this.#settings.requestTimeout },
    );
    if (answer.reply.ok && typeof answer.reply.valid === 'boolean') return answer.reply.valid;
    throw errorFromBody(answer.reply.error);
  }

  /**
   * Ends the session now (a clean close: the server releases its holds at once, with no
   * lock-delay, and their `lost` events fire with reason `session`); pending requests fail.
   * The client opens a new session if it is used again.
   */
  close(): Promise<void> {
    return this.#session.close();
  }

  /** `await using client = new Client()` closes it at the end of the block. */
  [asyncDispose](): Promise<void> {
    return this.close();
  }

  async #releaseHold(holdId: string): Promise<void> {
    const answer = await this.#session.call(
      { op: 'release', hold_id: holdId },
      { guard: this.#settings.requestTimeout },
    );
    if (!answer.reply.ok) throw errorFromBody(answer.reply.error);
  }

  async #renewHold(holdId: string, ttl: number | null | undefined): Promise<Hold> {
    const request: StreamRequest = { op: 'renew', hold_id: holdId };
    if (ttl === null) request.ttl_ms = null;
    else if (ttl !== undefined) request.ttl_ms = millis('ttl', ttl, 1);
    const answer = await this.#session.call(request, { guard: this.#settings.requestTimeout });
    if (answer.reply.ok && answer.reply.hold) return answer.reply.hold;
    throw errorFromBody(answer.reply.error);
  }
}

/** The wire request of an acquire (validated; a fresh `request_id` unless one is given). */
function buildAcquire(name: string, spec: AcquireSpec): StreamRequest {
  const kind = spec.kind ?? 'lock';
  const request: StreamRequest = { op: 'acquire', name, kind };
  if (kind === 'lock') {
    const mode = spec.mode ?? 'exclusive';
    if (mode !== 'exclusive' && mode !== 'shared') {
      throw new InvalidArgumentError(`mode is exclusive or shared, not ${String(mode)}`);
    }
    if (spec.limit !== undefined || spec.permits !== undefined) {
      throw new InvalidArgumentError('limit and permits are for semaphores');
    }
    request.mode = mode;
  } else if (kind === 'semaphore') {
    if (spec.mode !== undefined) throw new InvalidArgumentError('mode is for locks');
    const limit = spec.limit;
    if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > MAX_U32) {
      throw new InvalidArgumentError(`a semaphore's limit is a positive integer, not ${String(limit)}`);
    }
    const permits = spec.permits ?? 1;
    if (typeof permits !== 'number' || !Number.isInteger(permits) || permits < 1 || permits > limit) {
      throw new InvalidArgumentError(`permits must be 1 to ${limit}, not ${String(permits)}`);
    }
    request.limit = limit;
    request.permits = permits;
  } else {
    throw new InvalidArgumentError(`kind is lock or semaphore, not ${String(kind)}`);
  }
  const wait = spec.wait;
  request.wait_ms = wait === undefined || wait === null || wait === Infinity ? null : millis('wait', wait);
  if (spec.ttl !== undefined) request.ttl_ms = millis('ttl', spec.ttl, 1);
  if (spec.lockDelay !== undefined) request.lock_delay_ms = millis('lockDelay', spec.lockDelay);
  const requestId = spec.requestId ?? randomRequestId();
  if (typeof requestId !== 'string' || requestId === '' || Buffer.byteLength(requestId) > 64) {
    throw new InvalidArgumentError('requestId is 1 to 64 bytes');
  }
  request.request_id = requestId;
  return request;
}

/** An exclusive lock (made by {@link Client.lock}). */
export class Lock {
  readonly #client: Client;
  readonly #defaults: HoldDefaults;
  /** The lock's name. */
  readonly name: string;

  /** @internal */
  constructor(client: Client, name: string, defaults: HoldDefaults) {
    this.#client = client;
    this.name = name;
    this.#defaults = defaults;
  }

  /** Waits (see {@link AcquireOptions.wait}; default: without deadline) for the lock. */
  acquire(options: AcquireOptions = {}): Promise<LockHandle> {
    return this.#client.acquire(this.name, { ...this.#defaults, ...options, kind: 'lock', mode: 'exclusive' });
  }

  /** Takes the lock if it is free now; null if it is held. */
  tryAcquire(options: Omit<AcquireOptions, 'wait'> = {}): Promise<LockHandle | null> {
    return this.#client.tryAcquire(this.name, { ...this.#defaults, ...options, kind: 'lock', mode: 'exclusive' });
  }
}

/** A reader-writer lock (made by {@link Client.rwLock}): readers share, a writer is alone, and
 * a queued writer holds back later readers. */
export class ReaderWriterLock {
  readonly #client: Client;
  readonly #defaults: HoldDefaults;
  /** The lock's name. */
  readonly name: string;

  /** @internal */
  constructor(client: Client, name: string, defaults: HoldDefaults) {
    this.#client = client;
    this.name = name;
    this.#defaults = defaults;
  }

  /** Waits for a shared (read) hold. */
  acquireRead(options: AcquireOptions = {}): Promise<LockHandle> {
    return this.#client.acquire(this.name, { ...this.#defaults, ...options, kind: 'lock', mode: 'shared' });
  }

  /** Takes a shared (read) hold if possible now; null if not. */
  tryAcquireRead(options: Omit<AcquireOptions, 'wait'> = {}): Promise<LockHandle | null> {
    return this.#client.tryAcquire(this.name, { ...this.#defaults, ...options, kind: 'lock', mode: 'shared' });
  }

  /** Waits for the exclusive (write) hold. */
  acquireWrite(options: AcquireOptions = {}): Promise<LockHandle> {
    return this.#client.acquire(this.name, { ...this.#defaults, ...options, kind: 'lock', mode: 'exclusive' });
  }

  /** Takes the exclusive (write) hold if possible now; null if not. */
  tryAcquireWrite(options: Omit<AcquireOptions, 'wait'> = {}): Promise<LockHandle | null> {
    return this.#client.tryAcquire(this.name, { ...this.#defaults, ...options, kind: 'lock', mode: 'exclusive' });
  }
}

/** A counting semaphore (made by {@link Client.semaphore}). */
export class Semaphore {
  readonly #client: Client;
  readonly #defaults: HoldDefaults;
  /** The semaphore's name. */
  readonly name: string;
  /** How many permits it has. */
  readonly limit: number;

  /** @internal */
  constructor(client: Client, name: string, limit: number, defaults: HoldDefaults) {
    this.#client = client;
    this.name = name;
    this.limit = limit;
    this.#defaults = defaults;
  }

  /** Waits for `options.permits` permits (default 1; 1 ≤ permits ≤ limit). */
  acquire(options: SemaphoreAcquireOptions = {}): Promise<LockHandle> {
    return this.#client.acquire(this.name, { ...this.#defaults, ...options, kind: 'semaphore', limit: this.limit });
  }

  /** Takes `options.permits` permits if they are free now; null if not. */
  tryAcquire(options: Omit<SemaphoreAcquireOptions, 'wait'> = {}): Promise<LockHandle | null> {
    return this.#client.tryAcquire(this.name, { ...this.#defaults, ...options, kind: 'semaphore', limit: this.limit });
  }
}
