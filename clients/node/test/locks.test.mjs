// The native API against a real server: waits, modes, semaphores, names, request ids, TTL,
// renew, check, fencing, lost-lock signals, cancellation and disposal.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  asyncDispose,
  CancelledError,
  Client,
  ConflictError,
  Fence,
  InvalidArgumentError,
  InvalidNameError,
  LockedError,
  LockError,
  LockHandle,
  LockLostError,
  LockTimeoutError,
  StaleTokenError,
} from 'lockserver-client';

import { nextEvent, startServer, uniqueName, until, within } from './helpers.mjs';

let server;
const clients = [];

/** A client of the test server (closed after the file). */
function client(options = {}) {
  const made = new Client({ addr: server.addr, ...options });
  clients.push(made);
  return made;
}

before(async () => {
  server = await startServer();
});

after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await server.stop();
});

describe('waits', () => {
  test('a try on a held lock throws LockedError at once, and tryAcquire answers null', async () => {
    const [a, b] = [client(), client()];
    const name = uniqueName('try');
    const held = await a.lock(name).acquire({ wait: 0 });
    assert.ok(held instanceof LockHandle);
    const started = performance.now();
    await assert.rejects(b.lock(name).acquire({ wait: 0 }), (error) => {
      assert.ok(error instanceof LockedError);
      assert.equal(error.code, 'locked');
      assert.equal(error.outcomeUnknown, false);
      return true;
    });
    assert.equal(await b.lock(name).tryAcquire(), null);
    assert.ok(performance.now() - started < 2000, 'a try does not wait');
    await held.release();
    const next = await b.lock(name).tryAcquire();
    assert.ok(next, 'free after the release');
    assert.ok(next.token > held.token, 'tokens rise');
    await next.release();
  });

  test('a timed wait throws LockTimeoutError after the wait, never early', async () => {
    const [a, b] = [client(), client()];
    const name = uniqueName('timed');
    const held = await a.lock(name).acquire();
    const started = performance.now();
    await assert.rejects(b.lock(name).acquire({ wait: 300 }), (error) => {
      assert.ok(error instanceof LockTimeoutError, String(error));
      assert.equal(error.code, 'timeout');
      return true;
    });
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 300, `timed out early: ${elapsed} ms`);
    assert.ok(elapsed < 3000, `timed out late: ${elapsed} ms`);
    await server.untilWaiters(name, 0);
    await held.release();
  });

  test('a timed wait is granted the moment the holder releases', async () => {
    const [a, b] = [client(), client()];
    const name = uniqueName('timed-grant');
    const held = await a.lock(name).acquire();
    const waiting = b.lock(name).acquire({ wait: 10_000 });
    await server.untilWaiters(name, 1);
    await held.release();
    const granted = await within(5000, waiting);
    assert.ok(granted.token > held.token);
    await granted.release();
  });

  test('a wait without deadline (undefined or null) waits on the server until granted', async () => {
    const [a, b, c] = [client(), client(), client()];
    const name = uniqueName('forever');
    const held = await a.lock(name).acquire();
    const first = b.lock(name).acquire();
    await server.untilWaiters(name, 1);
    const second = c.lock(name).acquire({ wait: null });
    await server.untilWaiters(name, 2);
    await held.release();
    const granted = await within(5000, first);
    assert.equal((await server.holders(name))[0].hold_id, granted.holdId);
    await granted.release();
    const next = await within(5000, second);
    assert.ok(next.token > granted.token, 'FIFO: the second waiter comes after the first');
    await next.release();
  });
});

describe('kinds', () => {
  test('shared holds coexist; an exclusive one waits for them', async () => {
    const [a, b, c] = [client(), client(), client()];
    const name = uniqueName('rw');
    const r1 = await a.rwLock(name).acquireRead({ wait: 0 });
    const r2 = await b.rwLock(name).acquireRead({ wait: 0 });
    assert.equal(r1.mode, 'shared');
    assert.equal(await c.rwLock(name).tryAcquireWrite(), null);
    const writer = c.rwLock(name).acquireWrite({ wait: 5000 });
    await server.untilWaiters(name, 1);
    // A queued writer holds back later readers.
    assert.equal(await client().rwLock(name).tryAcquireRead(), null);
    await r1.release();
    await r2.release();
    const w = await within(5000, writer);
    assert.equal(w.mode, 'exclusive');
    assert.equal(await a.rwLock(name).tryAcquireRead(), null);
    await w.release();
  });

  test('a semaphore admits up to its limit, weighted by permits', async () => {
    const [a, b, c] = [client(), client(), client()];
    const name = uniqueName('sem');
    const t1 = await a.semaphore(name, 3).acquire({ wait: 0, permits: 2 });
    assert.equal(t1.kind, 'semaphore');
    assert.equal(t1.permits, 2);
    assert.equal(t1.hold.limit, 3);
    const t2 = await b.semaphore(name, 3).acquire({ wait: 0 });
    assert.equal(await c.semaphore(name, 3).tryAcquire(), null);
    await assert.rejects(c.semaphore(name, 3).acquire({ permits: 4 }), InvalidArgumentError);
    await assert.rejects(c.semaphore(name, 3).acquire({ permits: 0 }), InvalidArgumentError);
    const waiting = c.semaphore(name, 3).acquire({ permits: 2, wait: 5000 });
    await server.untilWaiters(name, 1, 'semaphore');
    await t1.release();
    const t3 = await within(5000, waiting);
    assert.equal((await server.holders(name, 'semaphore')).length, 2);
    await t2.release();
    await t3.release();
  });

  test('a kind or limit mismatch, and a re-entrant acquire, are ConflictErrors', async () => {
    const [a, b] = [client(), client()];
    const name = uniqueName('conflict');
    const held = await a.lock(name).acquire();
    await assert.rejects(b.semaphore(name, 2).acquire({ wait: 0 }), ConflictError);
    await assert.rejects(a.lock(name).acquire(), (error) => error instanceof ConflictError && error.code === 'conflict');
    await held.release();
  });

  test('client.acquire takes the whole spec', async () => {
    const a = client();
    const name = uniqueName('spec');
    const held = await a.acquire(name, { kind: 'semaphore', limit: 2, permits: 2, wait: 0 });
    assert.equal(held.permits, 2);
    const shared = await a.tryAcquire(uniqueName('spec'), { mode: 'shared' });
    assert.equal(shared.mode, 'shared');
    await shared.release();
    await assert.rejects(a.acquire(name, { kind: 'lock', limit: 2 }), InvalidArgumentError);
    await assert.rejects(a.acquire(name, { mode: 'upgrade' }), InvalidArgumentError);
    await assert.rejects(a.acquire(name, { wait: -1 }), InvalidArgumentError);
    await held.release();
  });
});

describe('names', () => {
  test('bad names fail with InvalidNameError before anything is sent', async () => {
    // Nothing listens on port 9: a request that went out would fail with a connection error.
    const nowhere = new Client({ addr: '127.0.0.1:9' });
    for (const bad of ['', 'bell\u0007', 'x'.repeat(256), 'é'.repeat(128), 'del\u007f', 'c1\u0085', 'half\ud800']) {
      await assert.rejects(nowhere.lock(bad).acquire(), (error) => {
        assert.ok(error instanceof InvalidNameError, `${JSON.stringify(bad)}: ${error}`);
        assert.ok(error instanceof InvalidArgumentError);
        assert.equal(error.code, 'invalid_argument');
        return true;
      });
    }
    await assert.rejects(nowhere.check('', 1), InvalidNameError);
    assert.equal(nowhere.sessionId, null);
  });

  test('names with reserved bytes and 255 bytes of UTF-8 are one name', async () => {
    const a = client();
    for (const name of [`slash/percent%/é ?#-${process.pid}`, 'ü'.repeat(127) + 'x']) {
      const held = await a.lock(name).acquire({ wait: 0 });
      assert.equal(held.name, name);
      assert.equal((await server.holders(name))[0].hold_id, held.holdId);
      await held.release();
    }
  });
});

describe('request ids, ttl, renew, check, fencing', () => {
  test('the same requestId on the same session returns the same hold', async () => {
    const a = client();
    const name = uniqueName('rid');
    const first = await a.lock(name).acquire({ requestId: 'job-17' });
    const again = await a.lock(name).acquire({ requestId: 'job-17' });
    assert.equal(again.holdId, first.holdId);
    assert.equal(again.token, first.token);
    assert.equal((await server.holders(name)).length, 1);
    // A different request id is a second acquire: not re-entrant.
    await assert.rejects(a.lock(name).acquire({ requestId: 'job-18', wait: 0 }), ConflictError);
    await assert.rejects(a.lock(name).acquire({ requestId: 'x'.repeat(65) }), InvalidArgumentError);
    await first.release();
    await server.untilHolders(name, 0);
  });

  test('a hold with its own ttl is lost (expired) when it runs out, never early', async () => {
    const a = client();
    const name = uniqueName('ttl');
    const started = performance.now();
    const held = await a.lock(name).acquire({ ttl: 300 });
    assert.ok(held.hold.expires_in_ms <= 300 && held.hold.expires_in_ms > 0);
    const [reason, error] = await nextEvent(held, 'lost', 5000);
    const elapsed = performance.now() - started;
    assert.equal(reason, 'expired');
    assert.ok(error instanceof LockLostError);
    assert.equal(error.reason, 'expired');
    assert.ok(elapsed >= 300, `expired early: ${elapsed} ms`);
    assert.ok(held.isLost);
    assert.equal(held.lostReason, 'expired');
    assert.ok(held.signal.aborted);
    assert.equal(held.signal.reason, error);
    assert.throws(() => held.throwIfLost(), LockLostError);
    await server.untilHolders(name, 0);
    await assert.rejects(held.release(), (e) => e instanceof LockLostError && e.reason === 'expired');
  });

  test('lockDelay keeps the name from others after an involuntary end, never shorter', async () => {
    const [a, b] = [client(), client()];
    const name = uniqueName('delay');
    const started = performance.now();
    const held = await a.lock(name).acquire({ ttl: 100, lockDelay: 400 });
    await nextEvent(held, 'lost', 5000);
    assert.equal(await b.lock(name).tryAcquire(), null, 'still delayed after the expiry');
    const next = await b.lock(name).acquire({ wait: 5000 });
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 500, `granted ${elapsed} ms after the first grant`);
    await next.release();
  });

  test('renew keeps a hold with a ttl alive; renew(null) removes the expiry', async () => {
    const a = client();
    const name = uniqueName('renew');
    const held = await a.lock(name, { ttl: 400 }).acquire();
    const started = performance.now();
    while (performance.now() - started < 1000) {
      const hold = await held.renew();
      assert.ok(hold.expires_in_ms > 200, `renewed for the hold's ttl: ${hold.expires_in_ms}`);
      await new Promise((r) => setTimeout(r, 150));
    }
    assert.equal(held.isLost, false, 'renewed past its ttl without loss');
    assert.equal((await held.renew(5000)).expires_in_ms > 4000, true);
    assert.equal((await held.renew(null)).expires_in_ms, null);
    assert.equal(held.hold.expires_in_ms, null);
    assert.equal((await server.holders(name))[0].expires_in_ms, null);
    await held.release();
    await assert.rejects(held.renew(), LockLostError);
  });

  test('check says whether a token is current', async () => {
    const [a, b] = [client(), client()];
    const name = uniqueName('check');
    const held = await a.lock(name).acquire();
    assert.equal(await b.check(name, held.token), true);
    assert.equal(await held.check(), true);
    assert.equal(await b.check(name, held.token + 1), false);
    await held.release();
    assert.equal(await b.check(name, held.token), false);
    await assert.rejects(b.check(name, -1), InvalidArgumentError);
  });

  test('fencing: tokens are exact numbers, and the Fence refuses an older holder', async () => {
    const [a, b] = [client(), client()];
    const name = uniqueName('fence');
    const first = await a.lock(name).acquire();
    assert.equal(typeof first.token, 'number');
    assert.ok(Number.isSafeInteger(first.token));
    await first.release();
    const second = await b.lock(name).acquire();
    const fence = new Fence();
    fence.admit(second.token);
    fence.admit(second.token); // the same holder again
    assert.equal(fence.highest, second.token);
    assert.equal(fence.accepts(first.token), false);
    assert.throws(() => fence.admit(first.token), (error) => {
      assert.ok(error instanceof StaleTokenError);
      assert.ok(error instanceof LockError);
      assert.equal(error.token, first.token);
      assert.equal(error.highest, second.token);
      return true;
    });
    assert.equal(new Fence(10).accepts(9), false);
    assert.throws(() => fence.admit(2 ** 53), InvalidArgumentError);
    await second.release();
  });
});

describe('lost locks', () => {
  test('an admin force-release fires the event, aborts the signal and frees the name', async () => {
    const [a, b] = [client(), client()];
    const name = uniqueName('admin');
    const held = await a.lock(name).acquire();
    const waiting = b.lock(name).acquire();
    await server.untilWaiters(name, 1);
    assert.equal(held.isLost, false);
    assert.equal(held.signal.aborted, false);
    const aborted = new Promise((resolve) => held.signal.addEventListener('abort', resolve, { once: true }));
    const lost = nextEvent(held, 'lost');
    assert.equal(await server.adminReleaseHold(held.holdId), 204);
    const [reason] = await lost;
    await within(5000, aborted);
    assert.equal(reason, 'admin');
    assert.equal(held.isLost, true);
    assert.equal(held.lostReason, 'admin');
    assert.equal(held.signal.reason.reason, 'admin');
    const next = await within(5000, waiting);
    assert.ok(next.token > held.token);
    await assert.rejects(held.release(), (e) => e instanceof LockLostError && e.reason === 'admin');
    await held.dispose(); // never throws for a lost hold
    await next.release();
  });

  test('close() ends the session: holds lost (session) and freed at once; the client reopens', async () => {
    const a = client();
    const name = uniqueName('close');
    const held = await a.lock(name).acquire();
    const pending = client().lock(name).acquire({ wait: 5000 });
    await server.untilWaiters(name, 1);
    const session = a.sessionId;
    assert.match(session, /^[0-9a-f]{32}$/);
    await a.close();
    assert.equal(held.lostReason, 'session');
    assert.equal(a.sessionId, null);
    const next = await within(5000, pending);
    const again = await a.lock(uniqueName('close')).acquire({ wait: 0 });
    assert.notEqual(a.sessionId, session, 'a new session');
    await again.release();
    await next.release();
  });

  test('when close() resolves the server has released the holds (another client gets them at once)', async () => {
    const other = client();
    for (let i = 0; i < 50; i++) {
      const a = new Client({ addr: server.addr });
      const name = uniqueName('closed');
      await a.lock(name).acquire();
      await a.close();
      const next = await other.lock(name).tryAcquire();
      assert.ok(next, `round ${i}: still held right after close()`);
      await next.release();
    }
  });
});

describe('cancellation', () => {
  test('aborting a waiting acquire withdraws the waiter from the server', async () => {
    const [a, b, c] = [client(), client(), client()];
    const name = uniqueName('abort');
    const held = await a.lock(name).acquire();
    const controller = new AbortController();
    const waiting = b.lock(name).acquire({ signal: controller.signal });
    await server.untilWaiters(name, 1);
    controller.abort();
    await assert.rejects(waiting, (error) => error.name === 'AbortError');
    await server.untilWaiters(name, 0);
    await held.release();
    // No ghost holder took it.
    const next = await c.lock(name).tryAcquire();
    assert.ok(next, 'free after the cancel');
    await next.release();
    // b's session is usable and holds nothing on the name.
    const mine = await b.lock(name).acquire({ wait: 0 });
    await mine.release();
  });

  test('the abort reason is what the acquire rejects with; an aborted signal sends nothing', async () => {
    const a = client();
    const name = uniqueName('abort-reason');
    const blocker = await client().lock(name).acquire();
    const controller = new AbortController();
    const waiting = a.lock(name).acquire({ signal: controller.signal, wait: 10_000 });
    await server.untilWaiters(name, 1);
    const reason = new Error('shutting down');
    controller.abort(reason);
    await assert.rejects(waiting, (error) => error === reason);
    await server.untilWaiters(name, 0);
    await assert.rejects(a.lock(name).acquire({ signal: AbortSignal.abort() }), (e) => e.name === 'AbortError');
    assert.equal((await server.view(name)).waiters, 0);
    // A timeout signal works the same way.
    const started = performance.now();
    await assert.rejects(a.lock(name).acquire({ signal: AbortSignal.timeout(200) }), (e) => e.name === 'TimeoutError');
    assert.ok(performance.now() - started >= 190);
    await server.untilWaiters(name, 0);
    await blocker.release();
  });

  test('aborting after the grant changes nothing; the server cancelling a waiter is CancelledError', async () => {
    const a = client();
    const name = uniqueName('abort-late');
    const controller = new AbortController();
    const held = await a.lock(name).acquire({ signal: controller.signal });
    controller.abort();
    assert.equal(held.isLost, false);
    assert.equal((await server.holders(name))[0].hold_id, held.holdId);
    const waiting = client().lock(name).acquire();
    const outcome = waiting.then(() => 'granted', (error) => error); // handled from the start
    await server.untilWaiters(name, 1);
    const status = (await server.request('DELETE', `/v1/admin/locks/${encodeURIComponent(name)}`, { secret: server.adminSecret })).status;
    assert.equal(status, 204);
    const error = await outcome;
    assert.ok(error instanceof CancelledError, String(error));
    assert.equal(error.code, 'cancelled');
    await until(() => held.isLost, 'the holder hears of the force-release');
    assert.equal(held.lostReason, 'admin');
  });
});

describe('disposal', () => {
  test('try…finally with await handle.release() frees the lock; release twice is a no-op', async () => {
    const a = client();
    const name = uniqueName('finally');
    const handle = await a.lock(name).acquire();
    try {
      assert.equal((await server.holders(name)).length, 1);
    } finally {
      await handle.release();
    }
    assert.equal(handle.released, true);
    await server.untilHolders(name, 0);
    await handle.release();
    await handle.dispose();
  });

  test('Symbol.asyncDispose releases the hold (what `await using` calls)', async () => {
    const a = client();
    const name = uniqueName('dispose');
    const handle = await a.lock(name).acquire();
    assert.equal(typeof handle[asyncDispose], 'function');
    assert.equal(asyncDispose, Symbol.asyncDispose ?? Symbol.for('Symbol.asyncDispose'));
    await handle[asyncDispose]();
    await server.untilHolders(name, 0);
    const other = new Client({ addr: server.addr });
    await other.lock(name).acquire({ wait: 0 });
    await other[asyncDispose](); // closes the client: its session and holds end
    await server.untilHolders(name, 0);
  });
});

test('the process-unique default owner labels the session', async () => {
  const a = client();
  const name = uniqueName('owner');
  const held = await a.lock(name).acquire();
  assert.match(a.owner, new RegExp(`:${process.pid}:[0-9a-f]{8}$`));
  assert.equal((await server.holders(name))[0].owner, a.owner);
  await held.release();
  const named = client({ owner: 'billing-3' });
  const h2 = await named.lock(name).acquire();
  assert.equal((await server.holders(name))[0].owner, 'billing-3');
  await h2.release();
  await until(async () => (await server.holders(name)).length === 0);
});
