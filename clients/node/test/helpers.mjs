// Test harness: starts the real `lockserver` binary on port 0 with a temporary data directory,
// waits for its start-up line (never a fixed sleep), and talks to it over HTTP. Also a TCP
// proxy whose connections can be cut, and a poll-until helper with a deadline.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

export const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_DIR = resolve(PACKAGE_DIR, '..', '..');
export const ADMIN_SECRET = 'node-test-admin';

/** The server binary: `LOCKSERVER_BIN`, else `<repo>/target/release/lockserver`. */
export function serverBinary() {
  const bin = process.env.LOCKSERVER_BIN || join(REPO_DIR, 'target', 'release', 'lockserver');
  if (!existsSync(bin)) {
    throw new Error(
      `no lockserver binary at ${bin}: build it with \`cargo build --release -p lockserver\` ` +
        'in the repository root, or point LOCKSERVER_BIN at one',
    );
  }
  return bin;
}

/** One percent-encoded path segment. */
export function segment(name) {
  return encodeURIComponent(name).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/**
 * Starts a server: `--port 0 --locker-port 0 --data-dir <tmp> --admin-secret <ADMIN_SECRET>`
 * plus `args`, in a temporary working directory (no `.env`), without the caller's
 * `LOCKSERVER_*` variables. Resolves once it printed its `lockserver listening` line.
 */
export async function startServer(args = [], { adminSecret = ADMIN_SECRET } = {}) {
  const bin = serverBinary();
  const dir = mkdtempSync(join(tmpdir(), 'lockserver-node-test-'));
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('LOCKSERVER_')));
  const child = spawn(
    bin,
    ['--port', '0', '--locker-port', '0', '--data-dir', join(dir, 'data'), '--admin-secret', adminSecret, ...args],
    { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    if (stderr.length < 100_000) stderr += chunk;
  });
  const lines = createInterface({ input: child.stdout });
  const line = await new Promise((resolveLine, reject) => {
    const timer = setTimeout(() => fail(new Error(`lockserver did not start within 30 s:\n${stderr}`)), 30_000);
    function fail(error) {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(error);
    }
    lines.on('line', (text) => {
      if (text.startsWith('lockserver listening ')) {
        clearTimeout(timer);
        resolveLine(text);
      }
    });
    child.once('error', fail);
    child.once('exit', (code, signal) => fail(new Error(`lockserver exited (${code ?? signal}) before it was ready:\n${stderr}`)));
  });
  child.removeAllListeners('exit');
  const match = / http=(\S+)/.exec(line);
  if (!match) throw new Error(`no http= in the start-up line: ${line}`);
  return new Server(child, match[1], dir, adminSecret, () => stderr);
}

export class Server {
  constructor(child, addr, dir, adminSecret, stderr) {
    this.child = child;
    this.addr = addr;
    this.base = `http://${addr}`;
    this.dir = dir;
    this.adminSecret = adminSecret;
    this.stderr = stderr;
    this.exited = new Promise((resolveExit) => child.once('exit', resolveExit));
  }

  /** `fetch` against the server; resolves to `{status, body, text, headers}`. */
  async request(method, path, { body, secret, headers = {} } = {}) {
    const all = { ...headers };
    if (secret !== undefined) all.authorization = `Bearer ${secret}`;
    if (body !== undefined) all['content-type'] = 'application/json';
    const response = await fetch(`${this.base}${path}`, {
      method,
      headers: all,
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await response.text();
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    return { status: response.status, body: parsed, text, headers: response.headers };
  }

  /** `GET /v1/{locks|semaphores}/{name}`. */
  async view(name, kind = 'lock') {
    const route = kind === 'semaphore' ? 'semaphores' : 'locks';
    const answer = await this.request('GET', `/v1/${route}/${segment(name)}`);
    if (answer.status !== 200) throw new Error(`GET ${name}: ${answer.status} ${answer.text}`);
    return answer.body;
  }

  async holders(name, kind = 'lock') {
    return (await this.view(name, kind)).holders;
  }

  /** Polls (at most 10 s) until the name has `count` waiters. */
  async untilWaiters(name, count, kind = 'lock') {
    await until(async () => (await this.view(name, kind)).waiters === count, `${name}: ${count} waiters`);
  }

  /** Polls (at most 10 s) until the name has `count` holders. */
  async untilHolders(name, count, kind = 'lock') {
    await until(async () => (await this.holders(name, kind)).length === count, `${name}: ${count} holders`);
  }

  /** The value of one Prometheus metric line, e.g. `lockserver_acquires_total{outcome="locked"}`. */
  async metric(series) {
    const { text } = await this.request('GET', '/metrics');
    const line = text.split('\n').find((l) => l.startsWith(`${series} `));
    if (line === undefined) throw new Error(`no metric ${series}`);
    return Number(line.slice(series.length + 1));
  }

  /** `DELETE /v1/admin/holds/{hold_id}` with the admin secret; returns the status. */
  async adminReleaseHold(holdId) {
    return (await this.request('DELETE', `/v1/admin/holds/${holdId}`, { secret: this.adminSecret })).status;
  }

  /** SIGKILL: no flush, no goodbye. */
  async kill9() {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.exited;
  }

  /** Kills the server and removes its directory. */
  async stop() {
    await this.kill9();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Polls `condition` every 10 ms until it is true; fails after `within` ms. */
export async function until(condition, what = 'condition', within = 10_000) {
  const deadline = performance.now() + within;
  for (;;) {
    if (await condition()) return;
    if (performance.now() > deadline) throw new Error(`timed out after ${within} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** Resolves with what `promise` resolves to, or rejects after `ms`. */
export async function within(ms, promise, what = 'the operation') {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves with the arguments of the next `event` of `emitter` (at most `ms`). */
export function nextEvent(emitter, event, ms = 10_000) {
  return within(ms, new Promise((resolveEvent) => emitter.once(event, (...args) => resolveEvent(args))), `event ${event}`);
}

/** A TCP proxy whose connections can be cut, to break a client's connection mid-session. */
export class Proxy {
  static async start(target) {
    const [host, port] = splitAddr(target);
    const proxy = new Proxy();
    proxy.server = net.createServer((inbound) => {
      if (proxy.refusing) {
        inbound.destroy();
        return;
      }
      const outbound = net.connect(port, host);
      proxy.pairs.add([inbound, outbound]);
      inbound.pipe(outbound);
      outbound.pipe(inbound);
      const end = () => {
        inbound.destroy();
        outbound.destroy();
      };
      inbound.on('error', end).on('close', end);
      outbound.on('error', end).on('close', end);
    });
    await new Promise((resolveListen) => proxy.server.listen(0, '127.0.0.1', resolveListen));
    proxy.addr = `127.0.0.1:${proxy.server.address().port}`;
    return proxy;
  }

  constructor() {
    this.pairs = new Set();
    this.refusing = false;
  }

  /** Drops every open connection (both sides see a reset, no close frame). */
  cut() {
    for (const [inbound, outbound] of this.pairs) {
      inbound.resetAndDestroy?.() ?? inbound.destroy();
      outbound.resetAndDestroy?.() ?? outbound.destroy();
    }
    this.pairs.clear();
  }

  async close() {
    this.cut();
    await new Promise((resolveClose) => this.server.close(resolveClose));
  }
}

function splitAddr(addr) {
  const colon = addr.lastIndexOf(':');
  return [addr.slice(0, colon), Number(addr.slice(colon + 1))];
}

/** A listener that accepts TCP connections and never answers (for timeouts). */
export async function silentServer() {
  const sockets = new Set();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
  });
  await new Promise((resolveListen) => server.listen(0, '127.0.0.1', resolveListen));
  return {
    addr: `127.0.0.1:${server.address().port}`,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolveClose) => server.close(resolveClose));
    },
  };
}

/** A unique name per call, so tests that share a server never share a name. */
let counter = 0;
export function uniqueName(prefix = 'n') {
  counter += 1;
  return `${prefix}-${process.pid}-${counter}`;
}
