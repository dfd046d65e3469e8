/**
 * `lockserver-client`: the Node.js client of Lockserver.
 *
 * - {@link Client}: the native API over one streaming session — exclusive and shared locks,
 *   semaphores, try / timed / unbounded waits, cancellation with an `AbortSignal`, fencing
 *   tokens, lost-lock signals, keepalive, the local lease deadline, reconnect and resume.
 * - {@link LockserverClient}: the original `lockserver-client` API (`acquire(resource,
 *   blocking, expire)` / `release(resource)`), kept so existing code runs unchanged.
 * - {@link Fence}: the resource-side fencing rule.
 * - Errors: {@link LockError} and one subclass per error code.
 *
 * Layout: `client.ts` (Client and the lock objects) · `session.ts` (the WebSocket session:
 * ids, replies, pings, lease deadline, resume) · `handle.ts` (LockHandle) · `seed.ts`
 * (LockserverClient) · `errors.ts` · `fence.ts` · `names.ts` · `config.ts` · `dispose.ts`.
 *
 * @packageDocumentation
 */

import { Client, Lock, ReaderWriterLock, Semaphore } from './client.js';
import { DEFAULT_ADDR, DEFAULT_OWNER } from './config.js';
import { asyncDispose } from './dispose.js';
import {
  AuthError,
  CancelledError,
  ConflictError,
  ConnectionError,
  InvalidArgumentError,
  InvalidNameError,
  LimitExceededError,
  LockedError,
  LockError,
  LockLostError,
  LockTimeoutError,
  NotFoundError,
  OutcomeUnknownError,
  StaleTokenError,
} from './errors.js';
import { Fence } from './fence.js';
import { LockHandle } from './handle.js';
import { encodeName, validateName } from './names.js';
import { LockserverClient } from './seed.js';

export type { AcquireOptions, AcquireSpec, ClientOptions, HoldDefaults, SemaphoreAcquireOptions } from './client.js';
export type { ErrorCode, LostReason } from './errors.js';
export type { Hold, LockHandleEvents } from './handle.js';
export type { LockserverClientOptions } from './seed.js';

export {
  asyncDispose,
  AuthError,
  CancelledError,
  Client,
  ConflictError,
  ConnectionError,
  DEFAULT_ADDR,
  DEFAULT_OWNER,
  encodeName,
  Fence,
  InvalidArgumentError,
  InvalidNameError,
  LimitExceededError,
  Lock,
  LockedError,
  LockError,
  LockHandle,
  LockLostError,
  LockserverClient,
  LockTimeoutError,
  NotFoundError,
  OutcomeUnknownError,
  ReaderWriterLock,
  Semaphore,
  StaleTokenError,
  validateName,
};

/**
 * Every export in one object, so `import lockserver from 'lockserver-client'` works as it did
 * with the original CommonJS package (`lockserver.LockserverClient`).
 */
const lockserver = {
  asyncDispose,
  AuthError,
  CancelledError,
  Client,
  ConflictError,
  ConnectionError,
  DEFAULT_ADDR,
  DEFAULT_OWNER,
  encodeName,
  Fence,
  InvalidArgumentError,
  InvalidNameError,
  LimitExceededError,
  Lock,
  LockedError,
  LockError,
  LockHandle,
  LockLostError,
  LockserverClient,
  LockTimeoutError,
  NotFoundError,
  OutcomeUnknownError,
  ReaderWriterLock,
  Semaphore,
  StaleTokenError,
  validateName,
};

export default lockserver;
