// The session against a real server: keepalive, reconnect and resume through a proxy whose
// connections are cut, a session that ends while away, the local lease deadline on a killed
// server, release-on-disconnect of a killed client process, leader hints, credentials, and
// connection errors (outcome unknown).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';

import { AuthError, Client, ConnectionError, LockLostError, OutcomeUnknownError } from 'lockserver-client';

import { nextEvent, PACKAGE_DIR, Proxy, silentServer, startServer, uniqueName, until, within } from './helpers.mjs';

let server;
const clients = [];

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

test('keepalive: a session with a short ttl keeps its holds for many ttls', async () => {
  const a = client({ sessionTtl: 500 });
  const name = uniqueName('keepalive');
  const held = await a.lock(name).acquire();
  const started = performance.now();
  await sleep(1600); // three leases: only pings keep it
  assert.equal(held.isLost, false, `lost after ${performance.now() - started} ms: ${held.lostReason}`);
  assert.equal((await server.holders(name))[0].hold_id, held.holdId);
  await held.release();
});

describe('reconnect and resume', () => {
  test('a broken connection resumes the session: holds survive, a grant made while away is delivered', async () => {
    const proxy = await Proxy.start(server.addr);
    try {
      const c = client({ addr: proxy.addr, sessionTtl: 5000 });
      const direct = client();
      const heldName = uniqueName('resume-held');
      const waitName = uniqueName('resume-wait');
      const held = await c.lock(heldName).acquire();
      const session = c.sessionId;
      const blocker = await direct.lock(waitName).acquire();
      const waiting = c.lock(waitName).acquire({ wait: 20_000 });
      await server.untilWaiters(waitName, 1);

      proxy.refusing = true;
      proxy.cut();
      // While it is away, the waiter's turn comes.
      await blocker.release();
      await server.untilHolders(waitName, 1);
      proxy.refusing = false;

      const granted = await within(10_000, waiting, 'the grant made while away');
      const shown = await server.holders(waitName);
      assert.equal(shown.length, 1, `one hold, not two: ${JSON.stringify(shown)}`);
      assert.equal(shown[0].hold_id, granted.holdId);
      assert.equal(c.sessionId, session, 'the same session');
      // The hold from before the break survived it: same id, never lost.
      assert.equal(held.isLost, false);
      assert.equal((await server.holders(heldName))[0].hold_id, held.holdId);
      await held.release();
      await granted.release();
      await server.untilHolders(heldName, 0);
      await server.untilHolders(waitName, 0);
    } finally {
      await proxy.close();
    }
  });

  test('requests made while disconnected go out after the resume', async () => {
    const proxy = await Proxy.start(server.addr);
    try {
      const c = client({ addr: proxy.addr, sessionTtl: 5000 });
      const name = uniqueName('resume-later');
      const warm = await c.lock(uniqueName('warm')).acquire();
      proxy.refusing = true;
      proxy.cut();
      const pending = c.lock(name).acquire({ wait: 10_000 });
      const check = c.check(name, 1);
      await sleep(150); // a few reconnect attempts are refused
      proxy.refusing = false;
      const handle = await within(10_000, pending);
      assert.equal(await check, false);
      assert.equal((await server.holders(name))[0].hold_id, handle.holdId);
      assert.equal(warm.isLost, false);
      await handle.release();
      await warm.release();
    } finally {
      await proxy.close();
    }
  });

  test('a session that ends while away: holds lost, pending requests fail with outcome unknown, then a new session', async () => {
    const proxy = await Proxy.start(server.addr);
    try {
      const c = client({ addr: proxy.addr, sessionTtl: 400 });
      const direct = client();
      const heldName = uniqueName('gone-held');
      const waitName = uniqueName('gone-wait');
      const held = await c.lock(heldName).acquire();
      const session = c.sessionId;
      const blocker = await direct.lock(waitName).acquire();
      const waiting = c.lock(waitName).acquire();
      const outcome = waiting.then(() => 'granted', (error) => error);
      await server.untilWaiters(waitName, 1);
      proxy.refusing = true;
      proxy.cut();
      const [reason] = await nextEvent(held, 'lost', 5000);
      assert.ok(reason === 'lease_deadline' || reason === 'session', reason);
      await server.untilHolders(heldName, 0); // the server ended the session
      await server.untilWaiters(waitName, 0);
      proxy.refusing = false;
      const error = await within(10_000, outcome);
      assert.ok(error instanceof ConnectionError, String(error));
      assert.equal(error.outcomeUnknown, true);
      await assert.rejects(held.release(), LockLostError);
      const again = await c.lock(heldName).acquire({ wait: 0 });
      assert.notEqual(c.sessionId, session);
      await again.release();
      await blocker.release();
    } finally {
      await proxy.close();
    }
  });
});

test('the local lease deadline fires before the ttl when the server is killed', async () => {
  const own = await startServer();
  try {
    const ttl = 1000;
    // The margin is slack for a busy machine's late timers: the assertion is the server's
    // bound (the ttl), never the margin.
    const c = new Client({ addr: own.addr, sessionTtl: ttl, leaseMargin: 250 });
    const held = await c.lock('k').acquire();
    const lost = nextEvent(held, 'lost', 5000);
    const killedAt = performance.now();
    await own.kill9();
    const [reason, error] = await lost;
    const elapsed = performance.now() - killedAt;
    assert.equal(reason, 'lease_deadline');
    assert.equal(error.reason, 'lease_deadline');
    assert.ok(held.signal.aborted);
    // Before the server could have released it: the lease counts from the last ping's send,
    // which was before the kill.
    assert.ok(elapsed < ttl, `fired ${elapsed} ms after the kill`);
    await c.close();
  } finally {
    await own.stop();
  }
});

test('a killed client process: the server frees its lock after the session ttl', async () => {
  const name = uniqueName('killed');
  const ttl = 1000;
  const child = spawn(process.execPath, [join(PACKAGE_DIR, 'test', 'fixtures', 'hold.mjs'), server.addr, name, String(ttl)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)));
  try {
    const [holdId] = await nextEvent(createInterface({ input: child.stdout }), 'line', 10_000);
    assert.match(holdId, /^[0-9a-f]{32}$/);
    assert.equal((await server.holders(name))[0].hold_id, holdId);
    await sleep(ttl); // a held lock keeps the process (and its session) alive
    assert.equal(child.exitCode, null, 'the holder is still running');
    assert.equal((await server.holders(name))[0].hold_id, holdId, 'its session was kept alive');
    child.kill('SIGKILL');
    const killedAt = performance.now();
    assert.equal(await exited, 'SIGKILL');
    assert.equal((await server.holders(name)).length, 1, 'no clean close: the lock outlives the process a while');
    await server.untilHolders(name, 0);
    const freedAfter = performance.now() - killedAt;
    assert.ok(freedAfter < ttl + 2000, `freed ${freedAfter} ms after the kill`);
    const next = await client().lock(name).acquire({ wait: 0 });
    await next.release();
  } finally {
    child.kill('SIGKILL');
  }
});

test('an idle client does not keep the process alive', async () => {
  const name = uniqueName('idle');
  const child = spawn(process.execPath, [join(PACKAGE_DIR, 'test', 'fixtures', 'idle.cjs'), server.addr, name], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let output = '';
  child.stdout.on('data', (chunk) => (output += chunk));
  const code = await within(10_000, new Promise((resolve) => child.once('exit', resolve)), 'the idle process exit');
  assert.equal(code, 0);
  assert.match(output, /^released [0-9a-f]{32}\n$/);
});

/** A "follower" that answers everything with `not_leader` naming the real server. */
async function fakeFollower(leader) {
  const follower = net.createServer((socket) => {
    let head = '';
    socket.on('data', (chunk) => {
      head += chunk;
      if (!head.includes('\r\n\r\n')) return;
      const body = JSON.stringify({ error: { code: 'not_leader', message: 'this node is a follower', leader } });
      socket.end(
        `HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
    });
    socket.on('error', () => {});
  });
  await new Promise((resolve) => follower.listen(0, '127.0.0.1', resolve));
  return follower;
}

test('a not_leader answer with a leader hint is followed', async () => {
  const follower = await fakeFollower(server.base);
  try {
    const c = new Client({ addr: `127.0.0.1:${follower.address().port}` });
    const name = uniqueName('leader');
    const held = await c.lock(name).acquire();
    assert.equal(c.addr, server.base);
    assert.equal((await server.holders(name))[0].hold_id, held.holdId);
    await held.release();
    await c.close();
  } finally {
    await new Promise((resolve) => follower.close(resolve));
  }
});

describe('errors', () => {
  test('a wrong or missing secret is an AuthError; the right one works', async () => {
    const secured = await startServer(['--secret', 's3cret']);
    try {
      for (const secret of ['nope', undefined]) {
        const wrong = new Client({ addr: secured.addr, secret });
        await assert.rejects(wrong.lock('a').tryAcquire(), (error) => {
          assert.ok(error instanceof AuthError, String(error));
          assert.equal(error.code, 'unauthorized');
          assert.equal(error.outcomeUnknown, false);
          return true;
        });
        await wrong.close();
      }
      const right = new Client({ addr: secured.addr, secret: 's3cret' });
      const held = await right.lock('a').tryAcquire();
      assert.ok(held);
      await held.release();
      await right.close();
    } finally {
      await secured.stop();
    }
  });

  test('an unreachable server is a ConnectionError: outcome unknown, never "not acquired"', async () => {
    const nowhere = new Client({ addr: '127.0.0.1:9', connectTimeout: 2000 });
    for (const attempt of [() => nowhere.lock('a').acquire(), () => nowhere.lock('a').tryAcquire(), () => nowhere.check('a', 1)]) {
      await assert.rejects(attempt(), (error) => {
        assert.ok(error instanceof ConnectionError, String(error));
        assert.ok(error instanceof OutcomeUnknownError);
        assert.equal(error.code, 'connection');
        assert.equal(error.outcomeUnknown, true);
        return true;
      });
    }
  });

  test('a server that never answers: connecting times out with a ConnectionError', async () => {
    const silent = await silentServer();
    try {
      const c = new Client({ addr: silent.addr, connectTimeout: 300 });
      const started = performance.now();
      await assert.rejects(c.lock('a').acquire(), ConnectionError);
      const elapsed = performance.now() - started;
      assert.ok(elapsed >= 290 && elapsed < 5000, `${elapsed} ms`);
    } finally {
      await silent.close();
    }
  });
});

test('a half-open connection is noticed by its unanswered ping and resumed within the lease', async () => {
  // A proxy that stops forwarding: the socket looks healthy, nothing gets through.
  const proxy = await Proxy.start(server.addr);
  try {
    const c = client({ addr: proxy.addr, sessionTtl: 900 });
    const name = uniqueName('half-open');
    const held = await c.lock(name).acquire();
    const session = c.sessionId;
    const stalled = [...proxy.pairs];
    for (const [inbound, outbound] of stalled) {
      inbound.unpipe(outbound);
      outbound.unpipe(inbound);
    }
    // A request made on the silent connection goes out again after the resume.
    const pending = c.lock(uniqueName('half-open')).acquire({ wait: 5000 });
    const next = await within(5000, pending, 'the acquire sent on the silent connection');
    assert.ok(proxy.pairs.size > stalled.length, 'a new connection was made');
    assert.equal(c.sessionId, session, 'the session was resumed');
    assert.equal(held.isLost, false, `lost: ${held.lostReason}`);
    assert.equal((await server.holders(name))[0].hold_id, held.holdId);
    await next.release();
    await held.release();
  } finally {
    await proxy.close();
  }
});
