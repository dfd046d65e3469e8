/**
 * The errors this package throws: one class per error code of the server, so callers can
 * `catch (e) { if (e instanceof LockTimeoutError) … }` or switch on `e.code`.
 *
 * Only {@link LockTimeoutError} and {@link LockedError} mean "not acquired, certainly".
 * {@link OutcomeUnknownError} (and its {@link ConnectionError}) means the request may or may
 * not have taken effect: the client never reports a grant it cannot prove, and it gives back
 * whatever the request may have created (by its `request_id`, or by its session ending).
 *
 * @packageDocumentation
 */

/** The stable error codes of the server (API.md), plus the client's own. */
export type ErrorCode =
  | 'invalid_argument'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'locked'
  | 'timeout'
  | 'cancelled'
  | 'conflict'
  | 'limit_exceeded'
  | 'not_leader'
  | 'unavailable'
  | 'internal'
  /** The hold is gone (client-side code). */
  | 'lost'
  /** Transport failure or no answer in time: the outcome is unknown (client-side code). */
  | 'connection'
  /** A fencing token lower than one already admitted (client-side code, {@link Fence}). */
  | 'stale_token';

/** Why a hold was lost: the server's `lost` event reasons, plus the client's own deadline. */
export type LostReason =
  /** Its own TTL ran out on the server. */
  | 'expired'
  /** Its session ended (lease ran out, the client closed, or it could not be resumed). */
  | 'session'
  /** An administrator force-released it. */
  | 'admin'
  /** The server could not deliver the grant and gave it back. */
  | 'undeliverable'
  /**
   * The client's local lease deadline passed without a renewed lease: the server may release
   * the hold at any moment after it, so the client stops trusting it first.
   */
  | 'lease_deadline';

/** The base class of every error this package throws. */
export class LockError extends Error {
  /** The server's error code, or the client's own (`lost`, `connection`, `stale_token`). */
  readonly code: ErrorCode;
  /** The HTTP status, when the error came from an HTTP answer. */
  readonly status?: number;

  /** @param code - the error code; `options.cause` the underlying error, `options.status` the
   * HTTP status it came with. */
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; status?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    if (options?.status !== undefined) this.status = options.status;
    this.name = new.target.name;
  }

  /** Whether the outcome is unknown: the request may or may not have taken effect. */
  get outcomeUnknown(): boolean {
    return false;
  }
}

/** Waited the whole `wait` without a grant (code `timeout`). Certainly not acquired. */
export class LockTimeoutError extends LockError {
  /** The wait that ran out, in milliseconds. */
  readonly waitMs: number | undefined;

  constructor(message: string, waitMs?: number, options?: { status?: number }) {
    super('timeout', message, options);
    this.waitMs = waitMs;
  }
}

/** A try (`wait: 0`) found the name held (code `locked`). Certainly not acquired. */
export class LockedError extends LockError {
  constructor(message = 'not acquired: the name is held', options?: { status?: number }) {
    super('locked', message, options);
  }
}

/**
 * The waiting request was cancelled by the server (code `cancelled`): an administrator
 * force-released the name, or a `cancel` withdrew it.
 */
export class CancelledError extends LockError {
  constructor(message: string, options?: { status?: number }) {
    super('cancelled', message, options);
  }
}

/** The hold is gone (code `lost`): expired, force-released, its session ended, or the local
 * lease deadline passed. `reason` says which, when the client knows. */
export class LockLostError extends LockError {
  /** Why the hold was lost. */
  readonly reason: LostReason;
  /** The lock name, when known. */
  readonly lockName: string | undefined;
  /** The hold's id, when known. */
  readonly holdId: string | undefined;

  constructor(reason: LostReason, lockName?: string, holdId?: string) {
    const what = lockName === undefined ? 'the hold' : `the hold of ${JSON.stringify(lockName)}`;
    super('lost', `${what} is lost (${describeLost(reason)})`);
    this.reason = reason;
    this.lockName = lockName;
    this.holdId = holdId;
  }
}

function describeLost(reason: LostReason): string {
  switch (reason) {
    case 'expired':
      return 'its ttl ran out';
    case 'session':
      return 'its session ended';
    case 'admin':
      return 'force-released by an administrator';
    case 'undeliverable':
      return 'the grant could not be delivered';
    case 'lease_deadline':
      return 'the local lease deadline passed';
  }
}

/** A bad argument: permits outside 1..limit, a bad duration, an unknown mode (code
 * `invalid_argument`). */
export class InvalidArgumentError extends LockError {
  constructor(message: string, options?: { status?: number }) {
    super('invalid_argument', message, options);
  }
}

/** The name is not 1–255 bytes of UTF-8 without control characters. Thrown before anything is
 * sent (code `invalid_argument`). */
export class InvalidNameError extends InvalidArgumentError {}

/**
 * A kind or limit mismatch on a live name, or a re-entrant acquire by a session that already
 * holds or waits on the name (code `conflict`).
 */
export class ConflictError extends LockError {
  constructor(message: string, options?: { status?: number }) {
    super('conflict', message, options);
  }
}

/** The server refused the credential (`unauthorized`) or the right (`forbidden`). */
export class AuthError extends LockError {
  constructor(code: 'unauthorized' | 'forbidden', message: string, options?: { status?: number }) {
    super(code, message, options);
  }
}

/** No live hold or session with that id (code `not_found`). */
export class NotFoundError extends LockError {
  constructor(message: string, options?: { status?: number }) {
    super('not_found', message, options);
  }
}

/** A server limit (waiters, holds, sessions, connections) would be passed (code
 * `limit_exceeded`). */
export class LimitExceededError extends LockError {
  constructor(message: string, options?: { status?: number }) {
    super('limit_exceeded', message, options);
  }
}

/**
 * The request may or may not have taken effect: the server is unavailable (`unavailable`,
 * `not_leader`), failed (`internal`), or could not be reached in time (`connection`, see
 * {@link ConnectionError}). Never read it as "not acquired".
 */
export class OutcomeUnknownError extends LockError {
  /** Always true: the request may or may not have taken effect. */
  override get outcomeUnknown(): boolean {
    return true;
  }
}

/** The server could not be reached, the connection broke, or no answer came in time (code
 * `connection`). The outcome is unknown. */
export class ConnectionError extends OutcomeUnknownError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('connection', `connection failed, outcome unknown: ${message}`, options);
  }
}

/** A fencing token lower than one the {@link Fence} has already admitted (code
 * `stale_token`). */
export class StaleTokenError extends LockError {
  /** The token that was refused. */
  readonly token: number;
  /** The highest token admitted so far. */
  readonly highest: number;

  constructor(token: number, highest: number) {
    super('stale_token', `fencing token ${token} is stale: ${highest} was already seen`);
    this.token = token;
    this.highest = highest;
  }
}

/** The `error` object of a server answer. */
export interface ErrorBody {
  code: string;
  message: string;
  leader?: string;
}

/**
 * The typed error for a server error body. `waitMs` is the wait the request carried: a
 * re-sent acquire may answer `locked` where the first try would have said `timeout`.
 * @internal
 */
export function errorFromBody(
  body: ErrorBody | undefined,
  options?: { waitMs?: number | null; status?: number },
): LockError {
  const status = options?.status;
  const httpOptions = status === undefined ? undefined : { status };
  if (body === undefined || typeof body !== 'object') {
    return new OutcomeUnknownError('internal', 'an answer with neither a result nor an error', httpOptions);
  }
  const message = String(body.message ?? '');
  const waitMs = options?.waitMs;
  switch (body.code) {
    case 'timeout':
      return new LockTimeoutError(message, waitMs ?? undefined, httpOptions);
    case 'locked':
      if (waitMs !== undefined && waitMs !== 0) {
        return new LockTimeoutError(`not acquired within the wait (${message})`, waitMs ?? undefined, httpOptions);
      }
      return new LockedError(message || undefined, httpOptions);
    case 'cancelled':
      return new CancelledError(message, httpOptions);
    case 'invalid_argument':
      return new InvalidArgumentError(message, httpOptions);
    case 'conflict':
      return new ConflictError(message, httpOptions);
    case 'unauthorized':
    case 'forbidden':
      return new AuthError(body.code, message, httpOptions);
    case 'not_found':
      return new NotFoundError(message, httpOptions);
    case 'limit_exceeded':
      return new LimitExceededError(message, httpOptions);
    case 'not_leader':
    case 'unavailable':
    case 'internal':
      return new OutcomeUnknownError(body.code, message, httpOptions);
    default:
      return new OutcomeUnknownError('internal', `${body.code}: ${message}`, httpOptions);
  }
}
