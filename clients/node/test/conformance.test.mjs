// Runs the client conformance scenarios (conformance/scenarios.json at the repository root)
// with the Node client against a real server, one test per scenario, as the Rust runner
// (crates/lockserver/tests/conformance.rs) does.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  asyncDispose,
  Client,
  ConflictError,
  InvalidArgumentError,
  InvalidNameError,
  LockedError,
  LockLostError,
  LockTimeoutError,
} from 'lockserver-client';

import { nextEvent, REPO_DIR, startServer, within } from './helpers.mjs';

const file = JSON.parse(readFileSync(join(REPO_DIR, 'conformance', 'scenarios.json'), 'utf8'));

let server;

before(async () => {
  server = await startServer([], { adminSecret: file.admin_secret });
});

after(async () => {
  await server.stop();
});

/** One scenario's state: its clients, saved holds and tokens, started acquires. */
class Run {
  constructor(prefix) {
    this.prefix = prefix;
    this.clients = new Map();
    this.holds = new Map();
    this.tokens = new Map();
    this.started = new Map();
  }

  client(step) {
    const label = text(step, 'client');
    if (!this.clients.has(label)) this.clients.set(label, new Client({ addr: server.addr }));
    return this.clients.get(label);
  }

  name(step) {
    if (typeof step.raw_name === 'string') return step.raw_name;
    if (Array.isArray(step.raw_name_repeat)) return step.raw_name_repeat[0].repeat(step.raw_name_repeat[1]);
    return `${this.prefix}${text(step, 'name')}`;
  }

  /** Starts an acquire step; `signal` withdraws it. */
  acquire(step, signal) {
    const client = this.client(step);
    const name = this.name(step);
    const wait = step.wait_ms === null ? null : step.wait_ms;
    const options = { wait, signal };
    switch (text(step, 'kind')) {
      case 'lock':
        return client.lock(name).acquire(options);
      case 'read':
        return client.rwLock(name).acquireRead(options);
      case 'write':
        return client.rwLock(name).acquireWrite(options);
      case 'semaphore':
        return client.semaphore(name, step.limit ?? 0).acquire({ ...options, permits: step.permits ?? 1 });
      default:
        throw new Error(`unknown kind ${step.kind}`);
    }
  }

  /** Checks an acquire's outcome against `expect` (and saves the hold). */
  judge(step, outcome) {
    const got = outcomeName(outcome);
    assert.equal(got, text(step, 'expect'), `step ${JSON.stringify(step)}: ${outcome.error ?? 'granted'}`);
    if (!outcome.handle) return;
    if (step.token_above !== undefined) {
      assert.ok(outcome.handle.token > this.tokens.get(step.token_above), `step ${JSON.stringify(step)}: token did not rise`);
    }
    if (step.save !== undefined) {
      this.tokens.set(step.save, outcome.handle.token);
      this.holds.set(step.save, outcome.handle);
    }
  }

  async step(step) {
    switch (text(step, 'do')) {
      case 'acquire': {
        const started = performance.now();
        const outcome = await settle(this.acquire(step));
        const elapsed = performance.now() - started;
        if (step.min_elapsed_ms !== undefined) {
          assert.ok(elapsed >= step.min_elapsed_ms, `early (${elapsed} ms): ${JSON.stringify(step)}`);
          assert.ok(elapsed < step.min_elapsed_ms + 5000, `late (${elapsed} ms): ${JSON.stringify(step)}`);
        }
        this.judge(step, outcome);
        break;
      }
      case 'try_acquire': {
        assert.equal(text(step, 'kind'), 'lock', 'try_acquire scenarios use locks');
        const handle = await this.client(step).lock(this.name(step)).tryAcquire();
        assert.equal(handle ? 'granted' : 'none', text(step, 'expect'), JSON.stringify(step));
        break;
      }
      case 'start_acquire': {
        const controller = new AbortController();
        this.started.set(text(step, 'as'), { outcome: settle(this.acquire(step, controller.signal)), controller });
        break;
      }
      case 'await': {
        const started = this.take(step);
        this.judge(step, await within(10_000, started.outcome, 'the started acquire'));
        break;
      }
      case 'cancel': {
        const started = this.take(step);
        started.controller.abort();
        const outcome = await within(10_000, started.outcome, 'the cancelled acquire');
        assert.equal(outcome.error?.name, 'AbortError', `a cancelled acquire rejects with the abort: ${outcome.error}`);
        break;
      }
      case 'release': {
        const handle = this.hold(step);
        this.holds.delete(step.hold);
        const outcome = await settle(handle.release());
        if (step.expect === 'ok') assert.equal(outcome.error, undefined);
        else if (step.expect === 'lost') assert.ok(outcome.error instanceof LockLostError, String(outcome.error));
        else throw new Error(`unknown release outcome ${step.expect}`);
        break;
      }
      case 'drop': {
        const handle = this.hold(step);
        this.holds.delete(step.hold);
        await handle[asyncDispose]();
        break;
      }
      case 'check': {
        const valid = await this.client(step).check(this.name(step), this.tokens.get(text(step, 'token_of')));
        assert.equal(valid ? 'valid' : 'invalid', text(step, 'expect'));
        break;
      }
      case 'close':
        await this.client(step).close();
        break;
      case 'expect_waiters':
        await server.untilWaiters(this.name(step), step.count, text(step, 'kind') === 'semaphore' ? 'semaphore' : 'lock');
        break;
      case 'expect_lost': {
        const handle = this.hold(step);
        if (!handle.isLost) await nextEvent(handle, 'lost', 10_000);
        assert.equal(handle.lostReason, text(step, 'reason'), JSON.stringify(step));
        break;
      }
      case 'admin_release_hold':
        assert.equal(await server.adminReleaseHold(this.hold(step).holdId), 204);
        break;
      default:
        throw new Error(`unknown step ${step.do}`);
    }
  }

  hold(step) {
    const handle = this.holds.get(text(step, 'hold'));
    assert.ok(handle, `a saved hold ${step.hold}`);
    return handle;
  }

  take(step) {
    const started = this.started.get(text(step, 'as'));
    assert.ok(started, `a started acquire ${step.as}`);
    this.started.delete(step.as);
    return started;
  }
}

function text(step, key) {
  const value = step[key];
  if (typeof value !== 'string') throw new Error(`step needs a string ${key}: ${JSON.stringify(step)}`);
  return value;
}

/** `{handle}` or `{error}`, never a rejection (a started acquire is handled from the start). */
function settle(promise) {
  return promise.then(
    (handle) => ({ handle }),
    (error) => ({ error }),
  );
}

function outcomeName({ error }) {
  if (error === undefined) return 'granted';
  if (error instanceof LockedError) return 'locked';
  if (error instanceof LockTimeoutError) return 'timeout';
  if (error instanceof InvalidNameError) return 'invalid_name';
  if (error instanceof InvalidArgumentError) return 'invalid_argument';
  if (error instanceof ConflictError) return 'conflict';
  return `another error (${error})`;
}

describe('conformance scenarios', () => {
  test('the file has its scenarios', () => {
    assert.ok(file.scenarios.length >= 10);
  });

  file.scenarios.forEach((scenario, index) => {
    test(scenario.name, async () => {
      const run = new Run(`conformance-node-${index}-`);
      try {
        for (const step of scenario.steps) await run.step(step);
        assert.equal(run.started.size, 0, 'a started acquire was never awaited');
      } finally {
        await Promise.all([...run.clients.values()].map((client) => client.close()));
      }
    });
  });
});
