/**
 * The streaming session: one WebSocket connection (`GET /v1/session`) that is the client's
 * session.
 *
 * Callers hand it requests without ids; it numbers them, writes them, and matches the replies
 * (which may come out of order: a waiting acquire answers when granted). It also keeps the
 * session alive (`ping` every third of the TTL), keeps the local lease deadline (send time of
 * the last answered ping + `lease_ms` − (round trip + `lease_ms` × drift) − margin) and fires
 * every hold's lost signal when it passes, turns pushed `lost` events into lost signals, and
 * reconnects after a drop: `hello{session_id}` resumes the session, and every request without
 * an answer yet is sent again under a new id (acquires keep their `request_id`, so a repeat
 * returns the same hold or rejoins the same place in the queue). A request can then be
 * answered under its old id (from the server's replay buffer) or its new one: the first
 * success counts, and an error counts only from the newest id.
 *
 * Everything here runs on the event loop: no locks, and the handle of a grant is made and
 * registered in the same turn that reads the grant, so a `lost` event right behind it in the
 * same chunk finds it.
 */

import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { debuglog } from 'node:util';

import WebSocket from 'ws';

import { parseAddr } from './config.js';
import { ConnectionError, type ErrorBody, errorFromBody, type LockError, type LostReason } from './errors.js';
import { type Hold, type HoldKeeper, LockHandle, loseHold } from './handle.js';

const debug = debuglog('lockserver');

/** What the session reads; `base` changes when a leader hint says so. @internal */
export interface SessionSettings {
  base: string;
  secret: string | undefined;
  owner: string;
  sessionTtl: number | undefined;
  grace: number | undefined;
  connectTimeout: number;
  requestTimeout: number;
  leaseMargin: number;
  drift: number;
  maxRedirects: number;
}

/** A request as the caller builds it (the session adds `id`). @internal */
export type StreamRequest = { op: 'acquire' | 'release' | 'renew' | 'check' } & Record<string, unknown>;

/** A reply of the server. @internal */
export interface StreamReply {
  id: number | null;
  ok: boolean;
  hold?: Hold;
  session_id?: string;
  ttl_ms?: number;
  grace_ms?: number;
  resumed?: boolean;
  lease_ms?: number;
  valid?: boolean;
  released?: string;
  error?: ErrorBody;
}

/** What a caller gets back: the reply, and for a granted acquire its handle. @internal */
export interface Answer {
  reply: StreamReply;
  handle?: LockHandle;
}

/** How a caller sends one request. @internal */
export interface CallOptions {
  /** An acquire's wait deadline (monotonic ms): a re-send waits only for what is left. */
  deadline?: number | null;
  /** Answer with a ConnectionError if no answer came within this many ms. */
  guard?: number | null;
  /** Withdraws a pending acquire (`cancel`); the promise rejects with the signal's reason. */
  signal?: AbortSignal | undefined;
}

type Settle = (result: { answer: Answer } | { error: unknown }) => void;

/** One request taken and not yet answered. */
interface Slot {
  request: Record<string, unknown> & { op: string };
  /** The id it was last sent under (null: not sent on the current connection). */
  latest: number | null;
  /** Every id it was sent under. */
  ids: number[];
  deadline: number | null;
  /** Null for the session's own requests (cancels, releases of abandoned grants), and once the
   * caller has gone (aborted, or its guard ran out). */
  settle: Settle | null;
  /** An acquire whose caller left: withdrawn when sent, its grant given back if it comes. */
  abandoned: boolean;
  /** A cancel's target slot (its id is looked up when the cancel is written). */
  target?: number;
  guard?: NodeJS.Timeout;
  cleanup?: () => void;
}

interface SessionInfo {
  id: string;
  ttl: number;
  grace: number;
}

type Phase = 'idle' | 'connecting' | 'hello' | 'open' | 'closing';

const MIN_BACKOFF = 50;
const MAX_BACKOFF = 1000;

const CLOSE_SESSION_ENDED = 4000;
const CLOSE_RESUMED_ELSEWHERE = 4001;

function now(): number {
  return performance.now();
}

/** The streaming session of one client. @internal */
export class StreamSession {
  readonly #settings: SessionSettings;
  readonly #keeper: HoldKeeper;

  #phase: Phase = 'idle';
  #ws: WebSocket | null = null;
  #socket: Socket | null = null;
  #session: SessionInfo | null = null;

  #nextId = 1;
  #nextSlot = 1;
  readonly #slots = new Map<number, Slot>();
  readonly #byId = new Map<number, number>();
  /** Live holds by hold id (a `request_id` repeat can give two handles the same hold). */
  readonly #holds = new Map<string, Set<LockHandle>>();
  /** Outstanding pings: id → send time. */
  readonly #pings = new Map<number, number>();

  /** The local lease deadline (already less the drift, round trip and margin). */
  #deadline: number | null = null;
  /** The latest the server could still hold the session (last keepalive sent + lease). */
  #leaseEnd: number | null = null;
  #droppedAt: number | null = null;
  #backoff = MIN_BACKOFF;
  #redirects = 0;
  #lastError: Error | null = null;

  #helloId = 0;
  #helloSent = 0;
  #helloTimer: NodeJS.Timeout | null = null;
  #pingTimer: NodeJS.Timeout | null = null;
  #deadlineTimer: NodeJS.Timeout | null = null;
  #reconnectTimer: NodeJS.Timeout | null = null;
  #closing: Promise<void> | null = null;

  constructor(settings: SessionSettings, keeper: HoldKeeper) {
    this.#settings = settings;
    this.#keeper = keeper;
  }

  /** The current session's id, or null before the first request / after it ended. */
  get sessionId(): string | null {
    return this.#session?.id ?? null;
  }

  /** The URL of the session endpoint. */
  get #url(): string {
    return `${this.#settings.base.replace(/^http/, 'ws')}/v1/session`;
  }

  /**
   * Sends one request and resolves with its answer (an error reply is an answer too).
   * Rejects with a {@link ConnectionError} when the outcome is unknown, and with the signal's
   * reason when the caller aborts.
   */
  call(request: StreamRequest, options: CallOptions = {}): Promise<Answer> {
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<Answer>((resolve, reject) => {
      const slotNo = this.#nextSlot++;
      const slot: Slot = {
        request,
        latest: null,
        ids: [],
        deadline: options.deadline ?? null,
        settle: null,
        abandoned: false,
      };
      slot.settle = (result) => {
        slot.settle = null;
        if (slot.guard) clearTimeout(slot.guard);
        slot.cleanup?.();
        if ('answer' in result) resolve(result.answer);
        else reject(result.error);
      };
      if (options.guard !== undefined && options.guard !== null) {
        const guard = options.guard;
        slot.guard = setTimeout(() => this.#leave(slotNo, new ConnectionError(`no answer within ${guard} ms`)), guard);
        slot.guard.unref();
      }
      if (signal) {
        const onAbort = (): void => this.#leave(slotNo, signal.reason);
        signal.addEventListener('abort', onAbort, { once: true });
        slot.cleanup = () => signal.removeEventListener('abort', onAbort);
      }
      this.#slots.set(slotNo, slot);
      this.#updateRef();
      if (this.#phase === 'open') this.#sendSlot(slotNo);
      else this.#ensureConnecting();
    });
  }

  /** Ends the session at once (a clean close: no lock-delay) and waits (briefly) for the
   * server. Every hold is lost (`session`), every pending request fails. */
  close(): Promise<void> {
    this.#closing ??= this.#close().finally(() => {
      this.#closing = null;
    });
    return this.#closing;
  }

  async #close(): Promise<void> {
    const ws = this.#ws;
    const session = this.#session;
    this.#phase = 'closing';
    this.#clearTimer('reconnect');
    // The server answers a clean WebSocket close once the session has ended (holds released,
    // committed). Without an open connection (down, waiting to resume) the session is ended
    // over HTTP instead, so that when close() resolves every hold of it is free for others.
    const open = ws !== null && ws.readyState === WebSocket.OPEN;
    if (session !== null && !open) await this.#endSession(session.id);
    if (ws !== null && ws.readyState !== WebSocket.CLOSED) {
      await new Promise<void>((resolve) => {
        const bound = setTimeout(() => {
          ws.terminate();
          resolve();
        }, 2000);
        bound.unref();
        ws.once('close', () => {
          clearTimeout(bound);
          resolve();
        });
        if (ws.readyState === WebSocket.OPEN) ws.close(1000, 'client closed');
        else if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
      });
    }
    this.#dropConnection();
    this.#clearTimer('reconnect');
    this.#loseAll('session');
    this.#session = null;
    this.#deadline = null;
    this.#leaseEnd = null;
    this.#failAll(new ConnectionError('the client was closed'));
    this.#phase = 'idle';
    this.#updateRef();
  }

  /** Ends the session over HTTP and waits for the commit (best effort). */
  async #endSession(sessionId: string): Promise<void> {
    const headers: Record<string, string> = {};
    if (this.#settings.secret !== undefined) headers.authorization = `Bearer ${this.#settings.secret}`;
    try {
      const response = await fetch(`${this.#settings.base}/v1/sessions/${sessionId}`, {
        method: 'DELETE',
        headers,
        signal: AbortSignal.timeout(Math.min(this.#settings.connectTimeout, 2000)),
      });
      await response.arrayBuffer();
      if (response.status !== 204) debug('ending the session answered HTTP %d', response.status);
    } catch (error) {
      debug('cannot end the session over HTTP: %s', error instanceof Error ? error.message : String(error));
    }
  }

  // ----- callers leaving ---------------------------------------------------------------------

  /** The caller of `slotNo` leaves (abort or guard): it gets `error`; an acquire is withdrawn
   * (or its grant given back), anything else finishes in the background. */
  #leave(slotNo: number, error: unknown): void {
    const slot = this.#slots.get(slotNo);
    if (!slot) return;
    slot.settle?.({ error });
    if (slot.request.op !== 'acquire') return;
    if (slot.latest !== null) {
      slot.abandoned = true;
      this.#internal({ op: 'cancel' }, slotNo);
    } else if (slot.ids.length === 0) {
      this.#slots.delete(slotNo);
      this.#updateRef();
    } else {
      // Sent on an earlier connection: sent again on the next one, then withdrawn.
      slot.abandoned = true;
    }
  }

  /** A request of the session's own (nobody waits for its answer). */
  #internal(request: Slot['request'], target?: number): void {
    const slotNo = this.#nextSlot++;
    const slot: Slot = { request, latest: null, ids: [], deadline: null, settle: null, abandoned: false };
    if (target !== undefined) slot.target = target;
    this.#slots.set(slotNo, slot);
    this.#updateRef();
    if (this.#phase === 'open') this.#sendSlot(slotNo);
    else this.#ensureConnecting();
  }

  // ----- writing -----------------------------------------------------------------------------

  /** Writes a slot's request under a fresh id. */
  #sendSlot(slotNo: number): void {
    const slot = this.#slots.get(slotNo);
    if (!slot) return;
    const request: Record<string, unknown> = { ...slot.request };
    if (request.op === 'cancel') {
      // A cancel follows its target to the target's newest id; a target answered meanwhile
      // needs no cancel.
      const target = slot.target === undefined ? undefined : this.#slots.get(slot.target);
      if (!target || target.latest === null) {
        this.#slots.delete(slotNo);
        this.#updateRef();
        return;
      }
      request.target = target.latest;
    }
    if (request.op === 'acquire' && slot.ids.length > 0 && slot.deadline !== null) {
      // A re-send waits only for what is left of the caller's wait.
      request.wait_ms = Math.max(0, Math.ceil(slot.deadline - now()));
    }
    const id = this.#nextId++;
    request.id = id;
    slot.latest = id;
    slot.ids.push(id);
    this.#byId.set(id, slotNo);
    this.#write(request);
    if (slot.abandoned && request.op === 'acquire') {
      // Its caller left while we were disconnected: withdraw it right away.
      this.#internal({ op: 'cancel' }, slotNo);
    }
  }

  #write(request: Record<string, unknown>): void {
    const ws = this.#ws;
    if (ws === null || ws.readyState !== WebSocket.OPEN) return;
    ws.send(JSON.stringify(request), (error) => {
      if (error) debug('write failed: %s', error.message);
    });
  }

  // ----- connecting --------------------------------------------------------------------------

  /** Whether there is anything a connection is needed for. */
  #wantsConnection(): boolean {
    return this.#session !== null || this.#slots.size > 0;
  }

  #ensureConnecting(): void {
    if (this.#phase !== 'idle' || this.#reconnectTimer !== null) return;
    this.#connect();
  }

  #connect(): void {
    this.#clearTimer('reconnect');
    if (!this.#wantsConnection()) return;
    const headers: Record<string, string> = {};
    if (this.#settings.secret !== undefined) headers.authorization = `Bearer ${this.#settings.secret}`;
    let ws: WebSocket;
    try {
      ws = new WebSocket(this.#url, {
        headers,
        handshakeTimeout: this.#settings.connectTimeout,
        perMessageDeflate: false,
        followRedirects: false,
      });
    } catch (error) {
      this.#refused(error instanceof Error ? new ConnectionError(error.message, { cause: error }) : new ConnectionError(String(error)));
      return;
    }
    this.#ws = ws;
    this.#phase = 'connecting';
    this.#lastError = null;
    ws.on('upgrade', (response) => {
      if (ws !== this.#ws) return;
      this.#socket = response.socket as Socket;
      this.#updateRef();
    });
    ws.on('unexpected-response', (_request, response) => {
      // The upgrade was answered with an HTTP status: read its (bounded) body for the error
      // code; the handshake is aborted by #dropConnection.
      const chunks: Buffer[] = [];
      let size = 0;
      response.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size <= 64 * 1024) chunks.push(chunk);
      });
      const done = (): void => {
        if (ws !== this.#ws) return;
        this.#upgradeRefused(response.statusCode ?? 0, Buffer.concat(chunks).toString('utf8'));
      };
      response.once('end', done);
      response.once('error', done);
    });
    ws.on('open', () => {
      if (ws !== this.#ws || this.#phase === 'closing') return;
      this.#phase = 'hello';
      this.#sendHello();
    });
    ws.on('message', (data: WebSocket.RawData, isBinary: boolean) => {
      if (ws !== this.#ws || isBinary) return;
      this.#onText(rawText(data));
    });
    ws.on('error', (error: Error) => {
      if (ws !== this.#ws) return;
      this.#lastError = error;
    });
    ws.on('close', (code: number, reason: Buffer) => {
      if (ws !== this.#ws) return;
      this.#onClose(code, reason.toString('utf8'));
    });
  }

  #sendHello(): void {
    const resume = this.#session?.id ?? null;
    const hello: Record<string, unknown> = { id: this.#nextId++, op: 'hello', session_id: resume };
    if (resume === null) {
      if (this.#settings.sessionTtl !== undefined) hello.ttl_ms = this.#settings.sessionTtl;
      hello.owner = this.#settings.owner;
    }
    if (this.#settings.grace !== undefined) hello.grace_ms = this.#settings.grace;
    this.#helloId = hello.id as number;
    this.#helloSent = now();
    this.#clearTimer('hello');
    const timeout = this.#settings.connectTimeout;
    this.#helloTimer = setTimeout(() => {
      this.#helloTimer = null;
      this.#connectFailed(`no answer to hello within ${timeout} ms`);
    }, timeout);
    this.#helloTimer.unref();
    this.#write(hello);
  }

  #onHelloReply(reply: StreamReply): void {
    this.#clearTimer('hello');
    if (reply.ok) {
      if (typeof reply.session_id !== 'string' || typeof reply.ttl_ms !== 'number') {
        this.#connectFailed('the hello reply has no session');
        return;
      }
      this.#session = { id: reply.session_id, ttl: reply.ttl_ms, grace: reply.grace_ms ?? 0 };
      this.#extendLease(this.#helloSent, reply.lease_ms);
      this.#phase = 'open';
      this.#droppedAt = null;
      this.#backoff = MIN_BACKOFF;
      this.#redirects = 0;
      this.#pings.clear();
      this.#schedulePing();
      // Everything not answered yet goes (again) on this connection.
      const pending = [...this.#slots.keys()].sort((a, b) => a - b);
      for (const slotNo of pending) {
        if (this.#phase !== 'open') break;
        this.#sendSlot(slotNo);
      }
      return;
    }
    const error = reply.error;
    const resuming = this.#session !== null;
    if (error?.code === 'not_found' && resuming) {
      // It ended while we were away: everything of it is gone. Open a new one.
      this.#sessionOver('the session ended while disconnected');
      this.#sendHello();
      return;
    }
    if (error?.code === 'not_leader') {
      this.#followLeader(error.leader, error.message);
      return;
    }
    if (error?.code === 'unavailable' || error?.code === 'internal' || error === undefined) {
      this.#connectFailed(`${error?.code ?? 'internal'}: ${error?.message ?? 'an error without a body'}`);
      return;
    }
    // The server answered but will not have us (credential, arguments): retrying cannot help.
    this.#refused(errorFromBody(error));
  }

  /** The upgrade was answered with an HTTP error. */
  #upgradeRefused(status: number, text: string): void {
    let body: ErrorBody | undefined;
    try {
      const parsed = JSON.parse(text) as { error?: ErrorBody };
      body = parsed?.error;
    } catch {
      body = undefined;
    }
    if (body === undefined || typeof body.code !== 'string') {
      this.#connectFailed(`the server answered HTTP ${status} to the session upgrade: ${text.slice(0, 200)}`);
      return;
    }
    if (body.code === 'not_leader') {
      this.#followLeader(body.leader, body.message);
      return;
    }
    if (['unavailable', 'internal', 'limit_exceeded'].includes(body.code)) {
      this.#connectFailed(`${body.code}: ${body.message}`);
      return;
    }
    this.#refused(errorFromBody(body, { status }));
  }

  #followLeader(leader: string | undefined, message: string): void {
    this.#dropConnection();
    if (leader !== undefined && this.#redirects < this.#settings.maxRedirects) {
      try {
        this.#settings.base = parseAddr(leader);
        this.#redirects++;
        debug('following the leader hint %s', this.#settings.base);
        this.#connect();
        return;
      } catch {
        debug('ignoring an unusable leader hint %s', leader);
      }
    }
    this.#redirects = 0;
    const why = leader === undefined ? `not the leader: ${message}` : `too many leader redirects (last: ${leader})`;
    this.#connectFailed(why);
  }

  /** The server will not have us: fail everything waiting; the next call tries again. */
  #refused(error: LockError): void {
    this.#dropConnection();
    this.#session = null;
    this.#failAll(error);
    this.#phase = 'idle';
    this.#updateRef();
  }

  /** After a failed attempt: keep trying while the session may still be resumed; otherwise
   * give up on everything waiting. */
  #connectFailed(message: string): void {
    this.#dropConnection();
    if (this.#phase === 'closing') return;
    const at = now();
    const delay = this.#backoff;
    this.#backoff = Math.min(this.#backoff * 2, MAX_BACKOFF);
    const session = this.#session;
    let resumable = false;
    if (session !== null) {
      const byGrace = this.#droppedAt === null ? null : this.#droppedAt + session.grace;
      const end = Math.max(this.#leaseEnd ?? -Infinity, byGrace ?? -Infinity);
      resumable = at < end;
    }
    if (resumable) {
      // Requests whose wait is over cannot be helped by waiting for the reconnect.
      for (const [slotNo, slot] of [...this.#slots]) {
        if (slot.settle !== null && slot.deadline !== null && slot.deadline <= at) {
          this.#slots.delete(slotNo);
          this.#forgetIds(slot);
          slot.settle({ error: new ConnectionError(message) });
        }
      }
      this.#scheduleReconnect(delay);
      return;
    }
    if (session !== null) this.#sessionOver('the session could not be resumed in time');
    this.#failAll(new ConnectionError(message));
    this.#updateRef();
    if (this.#wantsConnection()) this.#scheduleReconnect(delay);
  }

  #scheduleReconnect(delay: number): void {
    this.#clearTimer('reconnect');
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null;
      this.#connect();
    }, delay);
    this.#updateRef();
  }

  // ----- reading -----------------------------------------------------------------------------

  #onText(text: string): void {
    let message: (StreamReply & { event?: string; hold_id?: string; reason?: LostReason }) | null;
    try {
      message = JSON.parse(text) as typeof message;
    } catch {
      debug('unreadable frame from the server: %s', text.slice(0, 200));
      return;
    }
    if (message === null || typeof message !== 'object') return;
    if (message.event === 'lost') {
      const handles = typeof message.hold_id === 'string' ? this.#holds.get(message.hold_id) : undefined;
      if (handles && message.hold_id !== undefined) {
        this.#holds.delete(message.hold_id);
        for (const handle of handles) loseHold(handle, message.reason ?? 'expired');
        this.#afterHoldsChanged();
      }
      return;
    }
    if (this.#phase === 'hello') {
      if (message.id === this.#helloId) this.#onHelloReply(message);
      return;
    }
    if (typeof message.id !== 'number') {
      debug('the server could not read a request: %o', message.error);
      return;
    }
    const id = message.id;
    const sent = this.#pings.get(id);
    if (sent !== undefined) {
      this.#pings.delete(id);
      if (message.ok) this.#extendLease(sent, message.lease_ms);
      else if (message.error?.code === 'not_found') {
        this.#sessionOver('the session has ended');
        this.#dropConnection();
        this.#phase = 'idle';
        if (this.#wantsConnection()) this.#connect();
      }
      return;
    }
    const slotNo = this.#byId.get(id);
    if (slotNo === undefined) return;
    const slot = this.#slots.get(slotNo);
    if (!slot) return;
    if (!message.ok && slot.latest !== id) return; // an error under an older id: the newest one decides
    this.#slots.delete(slotNo);
    this.#forgetIds(slot);
    if (!message.ok && message.error?.code === 'not_leader' && message.error.leader !== undefined) {
      // Reconnect to the leader; the request is sent again there.
      slot.latest = null;
      this.#slots.set(slotNo, slot);
      this.#followLeader(message.error.leader, message.error.message);
      return;
    }
    this.#answer(slot, message);
  }

  /** Hands a reply to its caller (or, for an abandoned acquire, gives back its grant). */
  #answer(slot: Slot, reply: StreamReply): void {
    const op = slot.request.op;
    if (op === 'release' && (reply.ok || reply.error?.code === 'not_found')) {
      const holdId = slot.request.hold_id as string;
      if (this.#holds.delete(holdId)) this.#afterHoldsChanged();
    }
    const hold = reply.ok && op === 'acquire' ? reply.hold : undefined;
    if (hold === undefined) {
      slot.settle?.({ answer: { reply } });
      this.#updateRef();
      return;
    }
    if (slot.abandoned || slot.settle === null) {
      this.#internal({ op: 'release', hold_id: hold.hold_id });
      return;
    }
    const handle = new LockHandle(hold, this.#keeper);
    let handles = this.#holds.get(hold.hold_id);
    if (!handles) {
      handles = new Set();
      this.#holds.set(hold.hold_id, handles);
    }
    handles.add(handle);
    this.#afterHoldsChanged();
    slot.settle({ answer: { reply, handle } });
    if (this.#deadline !== null && now() >= this.#deadline) loseHold(handle, 'lease_deadline');
  }

  #forgetIds(slot: Slot): void {
    for (const id of slot.ids) this.#byId.delete(id);
  }

  // ----- the lease ---------------------------------------------------------------------------

  /** A committed keepalive sent at `sent` gave `leaseMs`: move the local deadline. */
  #extendLease(sent: number, leaseMs: number | undefined): void {
    if (typeof leaseMs !== 'number') return;
    const roundTrip = Math.max(0, now() - sent);
    const safety = roundTrip + leaseMs * this.#settings.drift + this.#settings.leaseMargin;
    const deadline = sent + Math.max(0, leaseMs - safety);
    this.#deadline = this.#deadline === null ? deadline : Math.max(this.#deadline, deadline);
    const end = sent + leaseMs;
    this.#leaseEnd = this.#leaseEnd === null ? end : Math.max(this.#leaseEnd, end);
    this.#scheduleDeadline();
  }

  #scheduleDeadline(): void {
    this.#clearTimer('deadline');
    if (this.#deadline === null || this.#holds.size === 0) return;
    const delay = Math.max(0, this.#deadline - now());
    this.#deadlineTimer = setTimeout(() => {
      this.#deadlineTimer = null;
      this.#onDeadline();
    }, Math.ceil(delay));
    this.#deadlineTimer.unref();
  }

  #onDeadline(): void {
    if (this.#deadline === null || this.#holds.size === 0) return;
    if (now() < this.#deadline) {
      this.#scheduleDeadline(); // moved while the timer ran
      return;
    }
    debug('lease deadline passed without a renewed lease; holds are lost');
    this.#loseAll('lease_deadline');
    this.#updateRef();
  }

  #schedulePing(): void {
    this.#clearTimer('ping');
    const ttl = this.#session?.ttl ?? 2000;
    this.#pingTimer = setTimeout(() => {
      this.#pingTimer = null;
      this.#ping();
    }, Math.max(1, Math.floor(ttl / 3)));
    this.#pingTimer.unref();
  }

  #ping(): void {
    if (this.#phase !== 'open') return;
    if (this.#pings.size > 0) {
      // The previous ping is still unanswered when the next is due: the connection is taken
      // for dead, however healthy the socket looks (a half-open connection), and replaced
      // while the lease still allows a resume.
      debug('no answer to the last ping within a third of the lease; reconnecting');
      this.#ws?.terminate();
      return;
    }
    const id = this.#nextId++;
    this.#pings.set(id, now());
    this.#schedulePing();
    this.#write({ id, op: 'ping' });
  }

  // ----- endings -----------------------------------------------------------------------------

  #onClose(code: number, reason: string): void {
    const phase = this.#phase;
    this.#dropConnection();
    if (phase === 'closing') return;
    if (phase === 'connecting' || phase === 'hello') {
      const cause = this.#lastError?.message ?? `closed with ${code} ${reason}`.trim();
      if (code === CLOSE_SESSION_ENDED && this.#session !== null) this.#sessionOver(reason || 'the session ended');
      this.#connectFailed(`cannot connect to ${this.#url}: ${cause}`);
      return;
    }
    // It was open: the connection is gone.
    this.#droppedAt = now();
    if (code === CLOSE_SESSION_ENDED) this.#sessionOver(reason || 'the session ended');
    else if (code === CLOSE_RESUMED_ELSEWHERE) this.#sessionOver('the session was resumed on another connection');
    else debug('the session connection dropped (%d %s)', code, reason);
    this.#updateRef();
    if (this.#wantsConnection()) this.#connect();
  }

  /** Forgets the connection (not the session): every request is to be sent again. */
  #dropConnection(): void {
    const ws = this.#ws;
    this.#ws = null;
    this.#socket = null;
    if (ws !== null && ws.readyState !== WebSocket.CLOSED) ws.terminate();
    this.#phase = this.#phase === 'closing' ? 'closing' : 'idle';
    this.#pings.clear();
    this.#clearTimer('hello');
    this.#clearTimer('ping');
    for (const slot of this.#slots.values()) slot.latest = null;
  }

  /** The session has ended: every hold is lost and every request sent on it is answered with a
   * connection error (nothing it created survives). Unsent requests wait for a new session. */
  #sessionOver(why: string): void {
    debug('session over: %s', why);
    this.#session = null;
    this.#deadline = null;
    this.#leaseEnd = null;
    this.#loseAll('session');
    for (const [slotNo, slot] of [...this.#slots]) {
      if (slot.ids.length === 0) continue;
      this.#slots.delete(slotNo);
      this.#forgetIds(slot);
      if (slot.request.op === 'release') {
        // Ending the session released it.
        slot.settle?.({ answer: { reply: { id: null, ok: true } } });
        continue;
      }
      slot.settle?.({ error: new ConnectionError(why) });
    }
    this.#updateRef();
  }

  #loseAll(reason: LostReason): void {
    const all = [...this.#holds.values()];
    this.#holds.clear();
    this.#clearTimer('deadline');
    for (const handles of all) for (const handle of handles) loseHold(handle, reason);
  }

  #failAll(error: LockError): void {
    const all = [...this.#slots.values()];
    this.#slots.clear();
    this.#byId.clear();
    for (const slot of all) slot.settle?.({ error });
  }

  #afterHoldsChanged(): void {
    this.#scheduleDeadline();
    this.#updateRef();
  }

  /**
   * The connection keeps the process alive while something is pending or held (like an open
   * server socket); an idle session does not hold the process open.
   */
  #updateRef(): void {
    const active = this.#slots.size > 0 || this.#holds.size > 0;
    if (this.#socket !== null) {
      if (active) this.#socket.ref();
      else this.#socket.unref();
    }
    if (this.#reconnectTimer !== null) {
      if (active) this.#reconnectTimer.ref();
      else this.#reconnectTimer.unref();
    }
  }

  #clearTimer(which: 'hello' | 'ping' | 'deadline' | 'reconnect'): void {
    switch (which) {
      case 'hello':
        if (this.#helloTimer) clearTimeout(this.#helloTimer);
        this.#helloTimer = null;
        break;
      case 'ping':
        if (this.#pingTimer) clearTimeout(this.#pingTimer);
        this.#pingTimer = null;
        break;
      case 'deadline':
        if (this.#deadlineTimer) clearTimeout(this.#deadlineTimer);
        this.#deadlineTimer = null;
        break;
      case 'reconnect':
        if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer);
        this.#reconnectTimer = null;
        break;
    }
  }
}

function rawText(data: WebSocket.RawData): string {
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  if (data instanceof ArrayBuffer) return Buffer.from(data).toString('utf8');
  return data.toString('utf8');
}
