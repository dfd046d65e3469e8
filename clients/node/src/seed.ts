/**
 * The API of the original `lockserver-client` 0.1.3 for Node, kept so existing code runs
 * unchanged: `new LockserverClient({addr, owner, secret})`, `acquire(resource, blocking,
 * expire)` and `release(resource)`, over the original routes (`POST /acquire`,
 * `POST /release`; the identity is the owner), which every Lockserver serves.
 *
 * Better than the original:
 * - a blocking acquire waits on the server (the `wait_ms` extension of `/acquire`, re-issued
 *   until granted), so it is granted the moment the lock is free, in FIFO order, instead of
 *   polling every 200 ms (it falls back to 200 ms polling only against a server that answers
 *   at once, as the original server does);
 * - every request has a timeout, and a transport failure or timeout is a
 *   {@link ConnectionError} (outcome unknown), never "not acquired";
 * - the constructor works without arguments; there is no default secret (the original sent
 *   `changeme`), and the default owner is unique to the process;
 * - no third-party HTTP library: Node's own `fetch`.
 */

import { setTimeout as sleep } from 'node:timers/promises';

import { DEFAULT_ADDR, DEFAULT_OWNER, env, millis, parseAddr } from './config.js';
import {
  AuthError,
  ConflictError,
  ConnectionError,
  InvalidArgumentError,
  LockError,
  NotFoundError,
  OutcomeUnknownError,
} from './errors.js';
import { validateName } from './names.js';

/** The options of {@link LockserverClient}; all optional. */
export interface LockserverClientOptions {
  /** `host:port` (or `http://host:port`). Default: `LOCKSERVER_ADDR`, else `127.0.0.1:8080`. */
  addr?: string;
  /** The identity of this client's locks. Default: `LOCKSERVER_OWNER`, else unique to the
   * process. */
  owner?: string;
  /** The shared secret (sent as `X-LOCKSERVER-SECRET`). Default: `LOCKSERVER_SECRET`, else
   * none. */
  secret?: string;
  /** How long a request may take beyond the server-side wait it asked for, in ms (default
   * 30000). */
  timeout?: number;
  /** How long one server-side wait of a blocking acquire lasts before it is re-issued, in ms
   * (default 30000; at most the server's `--max-wait-ms`). */
  waitChunk?: number;
}

const POLL_INTERVAL_MS = 200;

/**
 * A client of the original Lockserver API: one lock per resource, identified by
 * (resource, owner).
 *
 * ```js
 * const { LockserverClient } = require('lockserver-client');
 * const client = new LockserverClient({ addr: '127.0.0.1:8080', owner: 'worker1' });
 * await client.acquire('s3-upload-lock');          // waits on the server until granted
 * try { await upload(); } finally { await client.release('s3-upload-lock'); }
 * ```
 */
export class LockserverClient {
  /** The server address as given (`host:port`). */
  readonly addr: string;
  /** The identity of this client's locks. */
  readonly owner: string;
  /** The secret sent, if any. */
  readonly secret: string | undefined;
  /** The server's base URL (`http://host:port`). */
  readonly baseUrl: string;
  readonly #timeout: number;
  readonly #waitChunk: number;

  /** @param options - `{addr, owner, secret}` as the original; every field optional. */
  constructor(options: LockserverClientOptions = {}) {
    const { addr, owner, secret } = options ?? {};
    this.addr = addr || env('LOCKSERVER_ADDR') || DEFAULT_ADDR;
    this.owner = owner || env('LOCKSERVER_OWNER') || DEFAULT_OWNER;
    this.secret = secret || env('LOCKSERVER_SECRET') || undefined;
    this.baseUrl = parseAddr(this.addr);
    this.#timeout = millis('timeout', options?.timeout ?? 30_000, 1);
    this.#waitChunk = millis('waitChunk', options?.waitChunk ?? 30_000, 1);
  }

  /**
   * Acquires a lock on `resource`.
   * @param resource - the lock name (1–255 bytes of UTF-8, no control characters).
   * @param blocking - wait until granted (default true), or answer at once.
   * @param expire - the lock's expiry in seconds after the grant (default: none).
   * @returns true once acquired; false if `blocking` is false and the lock is held.
   * @throws {@link ConnectionError} the server could not be reached or did not answer in
   * time: the outcome is unknown.
   * @throws {@link AuthError} a missing or wrong secret.
   */
  async acquire(resource: string, blocking = true, expire?: number | null): Promise<boolean> {
    validateName(resource);
    const body: Record<string, unknown> = { resource, owner: this.owner };
    if (expire !== undefined) body.expire = expire;
    const waitMs = blocking ? this.#waitChunk : 0;
    if (blocking) body.wait_ms = waitMs;
    for (;;) {
      const started = performance.now();
      const { status, text } = await this.#post('/acquire', body, waitMs);
      if (status === 200) return true;
      if (status !== 409) throw seedError(status, text);
      if (!blocking) return false;
      // A 409 before the wait ran out was not a wait ending (an older server that answers at
      // once, or a refusal such as this owner holding it already): poll as the original did.
      if (performance.now() - started < waitMs) await sleep(POLL_INTERVAL_MS);
    }
  }

  /**
   * Releases this owner's lock on `resource`.
   * @throws {@link NotFoundError} the resource is not locked; {@link ConflictError} another
   * owner holds it; {@link ConnectionError} the outcome is unknown.
   */
  async release(resource: string): Promise<void> {
    validateName(resource);
    const { status, text } = await this.#post('/release', { resource, owner: this.owner }, 0);
    if (status !== 200) throw seedError(status, text);
  }

  async #post(route: string, body: unknown, waitMs: number): Promise<{ status: number; text: string }> {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (this.secret !== undefined) headers['x-lockserver-secret'] = this.secret;
    const limit = waitMs + this.#timeout;
    try {
      const response = await fetch(`${this.baseUrl}${route}`, {
        method: 'POST',
        headers,
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(limit),
      });
      return { status: response.status, text: await response.text() };
    } catch (error) {
      const name = (error as { name?: string } | null)?.name;
      if (name === 'TimeoutError' || name === 'AbortError') {
        throw new ConnectionError(`no answer from ${this.baseUrl}${route} within ${limit} ms`, { cause: error });
      }
      const cause = (error as { cause?: { message?: string } } | null)?.cause?.message;
      const message = cause ?? (error instanceof Error ? error.message : String(error));
      throw new ConnectionError(`cannot reach ${this.baseUrl}${route}: ${message}`, { cause: error });
    }
  }
}

/** The error of a non-2xx answer (the original surface answers in plain text). */
function seedError(status: number, text: string): LockError {
  const message = text.trim() || `HTTP ${status}`;
  const options = { status };
  switch (status) {
    case 401:
      return new AuthError('unauthorized', message, options);
    case 403:
      return new AuthError('forbidden', message, options);
    case 400:
    case 413:
      return new InvalidArgumentError(message, options);
    case 409:
      return message.includes('not found')
        ? new NotFoundError(message, options)
        : new ConflictError(message, options);
    default:
      return new OutcomeUnknownError(status === 503 ? 'unavailable' : 'internal', message, options);
  }
}
