// The original lockserver-client API (`new LockserverClient({addr, owner, secret})`,
// `acquire(resource, blocking, expire)`, `release(resource)`) against a real server: blocking
// waits on the server, non-blocking answers at once, expire, errors, environment fallbacks.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import {
  AuthError,
  Client,
  ConflictError,
  ConnectionError,
  DEFAULT_OWNER,
  InvalidNameError,
  LockserverClient,
  NotFoundError,
} from 'lockserver-client';

import { silentServer, startServer, uniqueName, within } from './helpers.mjs';

let server;

before(async () => {
  server = await startServer();
});

after(async () => {
  await server.stop();
});

function seed(owner, options = {}) {
  return new LockserverClient({ addr: server.addr, owner, ...options });
}

const LOCKED = 'lockserver_acquires_total{outcome="locked"}';
const QUEUED = 'lockserver_acquires_queued_total';

test('a blocking acquire waits on the server (no polling) and is granted when the other owner releases', async () => {
  const name = uniqueName('seed-block');
  const [w1, w2] = [seed('w1'), seed('w2')];
  assert.equal(await w1.acquire(name), true);
  const [locked, queued] = [await server.metric(LOCKED), await server.metric(QUEUED)];
  let settled = false;
  const waiting = w2.acquire(name).finally(() => (settled = true));
  // The wait is the server's: the name shows a queued waiter...
  await server.untilWaiters(name, 1);
  await new Promise((resolve) => setTimeout(resolve, 600)); // three polls of the original
  assert.equal(settled, false);
  // ...and in all that time one request was queued and none was refused (the original client
  // polls: a refused try every 200 ms).
  assert.equal(await server.metric(QUEUED), queued + 1);
  assert.equal(await server.metric(LOCKED), locked);
  await w1.release(name);
  assert.equal(await within(5000, waiting), true);
  const holders = await server.holders(name);
  assert.equal(holders.length, 1);
  assert.equal(holders[0].owner, 'w2');
  await w2.release(name);
  await server.untilHolders(name, 0);
});

test('a blocking acquire re-issues its server-side wait until granted', async () => {
  const name = uniqueName('seed-chunks');
  const [w1, w2] = [seed('w1'), seed('w2', { waitChunk: 150 })];
  await w1.acquire(name);
  const [locked, queued] = [await server.metric(LOCKED), await server.metric(QUEUED)];
  const waiting = w2.acquire(name);
  await new Promise((resolve) => setTimeout(resolve, 500)); // several chunks pass
  await server.untilWaiters(name, 1);
  assert.ok((await server.metric(QUEUED)) - queued >= 3, 'each chunk is a new server-side wait');
  assert.equal(await server.metric(LOCKED), locked);
  await w1.release(name);
  assert.equal(await within(5000, waiting), true);
  await w2.release(name);
});

test('a blocking acquire refused at once (this owner holds it) polls, never spins', async () => {
  const name = uniqueName('seed-spin');
  const w1 = seed('w1');
  await w1.acquire(name);
  const refused = await server.metric('lockserver_acquires_total{outcome="refused"}');
  const again = w1.acquire(name); // not re-entrant: the server refuses at once, every time
  await new Promise((resolve) => setTimeout(resolve, 500));
  const tries = (await server.metric('lockserver_acquires_total{outcome="refused"}')) - refused;
  assert.ok(tries >= 1 && tries <= 4, `${tries} tries in 500 ms`);
  await w1.release(name); // the waiting call then gets it
  assert.equal(await within(5000, again), true);
  await w1.release(name);
});

test('a non-blocking acquire of a held lock resolves false at once', async () => {
  const name = uniqueName('seed-nonblock');
  const [w1, w2] = [seed('w1'), seed('w2')];
  assert.equal(await w1.acquire(name, true), true);
  const started = performance.now();
  assert.equal(await w2.acquire(name, false), false);
  assert.ok(performance.now() - started < 1000);
  // Not re-entrant, as the original.
  assert.equal(await w1.acquire(name, false), false);
  assert.equal((await server.view(name)).waiters, 0);
  await w1.release(name);
  assert.equal(await w2.acquire(name, false), true);
  await w2.release(name);
});

test('expire releases the lock that many seconds after the grant, never early', async () => {
  const name = uniqueName('seed-expire');
  const [w1, w2] = [seed('w1'), seed('w2')];
  const started = performance.now();
  assert.equal(await w1.acquire(name, false, 1), true);
  assert.ok((await server.holders(name))[0].expires_in_ms <= 1000);
  assert.equal(await w2.acquire(name, true), true);
  const elapsed = performance.now() - started;
  assert.ok(elapsed >= 1000, `expired early: ${elapsed} ms`);
  assert.ok(elapsed < 4000, `expired late: ${elapsed} ms`);
  await w2.release(name);
  // No expire: no expiry.
  await w1.acquire(name, false);
  assert.equal((await server.holders(name))[0].expires_in_ms, null);
  await w1.release(name);
});

test('release errors: not locked is NotFoundError, another owner is ConflictError', async () => {
  const name = uniqueName('seed-release');
  const [w1, w2] = [seed('w1'), seed('w2')];
  await assert.rejects(w1.release(name), (error) => error instanceof NotFoundError && error.status === 409);
  await w1.acquire(name);
  await assert.rejects(w2.release(name), (error) => error instanceof ConflictError && error.status === 409);
  await w1.release(name);
  await assert.rejects(w1.release(name), NotFoundError);
  await assert.rejects(w1.acquire(''), InvalidNameError);
});

test('seed locks and native holds of the same name exclude each other', async () => {
  const name = uniqueName('seed-native');
  const native = new Client({ addr: server.addr });
  const handle = await native.lock(name).acquire();
  assert.equal(await seed('w1').acquire(name, false), false);
  const waiting = seed('w1').acquire(name);
  await server.untilWaiters(name, 1);
  await handle.release();
  assert.equal(await within(5000, waiting), true);
  assert.equal(await native.lock(name).tryAcquire(), null);
  await seed('w1').release(name);
  await native.close();
});

test('the constructor works without arguments: LOCKSERVER_ADDR / _OWNER / _SECRET, a process-unique owner', async () => {
  const saved = { ...process.env };
  try {
    process.env.LOCKSERVER_ADDR = server.addr;
    process.env.LOCKSERVER_OWNER = 'env-owner';
    delete process.env.LOCKSERVER_SECRET;
    const fromEnv = new LockserverClient();
    assert.equal(fromEnv.addr, server.addr);
    assert.equal(fromEnv.owner, 'env-owner');
    assert.equal(fromEnv.secret, undefined, 'no default secret');
    const name = uniqueName('seed-env');
    assert.equal(await fromEnv.acquire(name), true);
    assert.equal((await server.holders(name))[0].owner, 'env-owner');
    await fromEnv.release(name);
    delete process.env.LOCKSERVER_OWNER;
    const anonymous = new LockserverClient({});
    assert.equal(anonymous.owner, DEFAULT_OWNER);
    assert.match(anonymous.owner, new RegExp(`:${process.pid}:[0-9a-f]{8}$`));
    assert.notEqual(anonymous.owner, 'default_owner');
    delete process.env.LOCKSERVER_ADDR;
    assert.equal(new LockserverClient().addr, '127.0.0.1:8080');
  } finally {
    for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
    Object.assign(process.env, saved);
  }
});

test('a wrong or missing secret is an AuthError; the right one (or LOCKSERVER_SECRET) works', async () => {
  const secured = await startServer(['--secret', 's3cret']);
  const saved = process.env.LOCKSERVER_SECRET;
  try {
    const name = uniqueName('seed-auth');
    for (const secret of ['wrong', undefined]) {
      const client = new LockserverClient({ addr: secured.addr, owner: 'w1', secret });
      await assert.rejects(client.acquire(name, false), (error) => {
        assert.ok(error instanceof AuthError, String(error));
        assert.equal(error.code, 'unauthorized');
        assert.equal(error.status, 401);
        return true;
      });
    }
    const right = new LockserverClient({ addr: secured.addr, owner: 'w1', secret: 's3cret' });
    assert.equal(await right.acquire(name, false), true);
    process.env.LOCKSERVER_SECRET = 's3cret';
    const fromEnv = new LockserverClient({ addr: secured.addr, owner: 'w1' });
    await fromEnv.release(name);
  } finally {
    if (saved === undefined) delete process.env.LOCKSERVER_SECRET;
    else process.env.LOCKSERVER_SECRET = saved;
    await secured.stop();
  }
});

test('transport failures and timeouts are ConnectionErrors (outcome unknown), never false', async () => {
  const nowhere = new LockserverClient({ addr: '127.0.0.1:9', owner: 'w1' });
  for (const attempt of [() => nowhere.acquire('a'), () => nowhere.acquire('a', false), () => nowhere.release('a')]) {
    await assert.rejects(attempt(), (error) => error instanceof ConnectionError && error.outcomeUnknown === true);
  }
  const silent = await silentServer();
  try {
    const slow = new LockserverClient({ addr: silent.addr, owner: 'w1', timeout: 300 });
    const started = performance.now();
    await assert.rejects(slow.acquire('a', false), ConnectionError);
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 290 && elapsed < 5000, `${elapsed} ms`);
  } finally {
    await silent.close();
  }
});
