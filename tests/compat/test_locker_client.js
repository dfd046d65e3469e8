// The published npm client `locker@0.1.0` (node-locker), unchanged, against our locker port.
// Run by scripts/test-all.sh with the package installed into .tools/node; starts the real
// binary on free ports and reads them from its ready file (no fixed sleeps).
"use strict";

const assert = require("assert");
const { spawn } = require("child_process");
const fs = require("fs");
const os = require("os");
const path = require("path");

const root = path.resolve(__dirname, "..", "..");
const Locker = require(path.join(root, ".tools", "node", "node_modules", "locker"));
const binary = process.env.LOCKSERVER_BIN || path.join(root, "target", "release", "lockserver");

function startServer() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "locker-compat-"));
  const ready = path.join(dir, "ready");
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("LOCKSERVER_")));
  const child = spawn(binary, ["--port", "0", "--locker-port", "0", "--ready-file", ready,
    "--data-dir", path.join(dir, "data")], { env, stdio: "ignore" });
  const deadline = Date.now() + 30000;
  return new Promise((resolve, reject) => {
    const poll = () => {
      if (fs.existsSync(ready)) {
        const line = fs.readFileSync(ready, "utf8").split("\n").find((l) => l.startsWith("locker="));
        const [host, port] = line.slice("locker=".length).split(":");
        return resolve({ host, port: Number(port), http: fs.readFileSync(ready, "utf8").split("\n")[0].slice(5), stop: () => child.kill("SIGKILL") });
      }
      if (Date.now() > deadline) return reject(new Error("lockserver not ready in 30 s"));
      setTimeout(poll, 10);
    };
    poll();
  });
}

// locker.locked(name, wait, timeout) as a promise of {error, done, at}.
function locked(locker, name, wait, timeout) {
  return new Promise((resolve) => {
    locker.locked(name, wait, timeout, (error, done) => resolve({ error, done, at: Date.now() }));
  });
}

async function waiters(server, name) {
  const response = await fetch(`http://${server.http}/v1/locks/${name}`);
  return (await response.json()).waiters;
}

async function untilWaiters(server, name, count) {
  const deadline = Date.now() + 10000;
  while ((await waiters(server, name)) !== count) {
    assert(Date.now() < deadline, `${name}: never ${count} waiters`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const tests = {
  async lockAndUnlock(server) {
    const a = new Locker(server.port, server.host);
    a.on("error", () => {});
    const first = await locked(a, "plain", 1000, 5000);
    assert.strictEqual(first.error, undefined);
    const b = new Locker(server.port, server.host);
    b.on("error", () => {});
    // Wait 0: refused at once and never queued (with a longer wait, the client's own timer can
    // fire before the server's, leaving a request queued that the unlock below would grant).
    const busy = await locked(b, "plain", 0, 5000);
    assert(busy.error, "busy: refused");
    await new Promise((resolve) => first.done(resolve));
    const again = await locked(b, "plain", 1000, 5000);
    assert.strictEqual(again.error, undefined, "free after the unlock");
    await new Promise((resolve) => again.done(resolve));
    a.connection.end(); b.connection.end();
  },

  // The client runs its own wait timer, so its failure says nothing of the server's; what the
  // server must show is the request queued while it waits and gone once the wait is over.
  // (Never early on the server's side: crates/lockserver/tests/compat_locker.rs.)
  async waitTimeoutLeavesNoWaiterBehind(server) {
    const a = new Locker(server.port, server.host);
    a.on("error", () => {});
    const held = await locked(a, "wait", 1000, 10000);
    const b = new Locker(server.port, server.host);
    b.on("error", () => {});
    const late = locked(b, "wait", 300, 10000);
    await untilWaiters(server, "wait", 1);
    assert((await late).error, "the wait runs out");
    await untilWaiters(server, "wait", 0);
    await new Promise((resolve) => held.done(resolve));
    a.connection.end(); b.connection.end();
  },

  async holdTimeoutHandsOver(server) {
    const a = new Locker(server.port, server.host);
    a.on("error", () => {}); // the client reports the exceeded hold as an error event
    const started = Date.now();
    const held = await locked(a, "hold", 1000, 300);
    assert.strictEqual(held.error, undefined);
    const b = new Locker(server.port, server.host);
    b.on("error", () => {});
    const next = await locked(b, "hold", 5000, 5000);
    assert.strictEqual(next.error, undefined);
    assert(next.at - started >= 300, `handed over after ${next.at - started} ms`);
    a.connection.end(); b.connection.end();
  },

  async waitersInFifoOrder(server) {
    const holder = new Locker(server.port, server.host);
    holder.on("error", () => {});
    const held = await locked(holder, "fifo", 1000, 30000);
    const order = [];
    const clients = [];
    const grants = [];
    for (let i = 0; i < 4; i++) {
      const client = new Locker(server.port, server.host);
      client.on("error", () => {});
      clients.push(client);
      grants.push(locked(client, "fifo", 20000, 30000).then((r) => { order.push(i); return r; }));
      await untilWaiters(server, "fifo", i + 1);
    }
    await new Promise((resolve) => held.done(resolve));
    for (const grant of grants) {
      const result = await grant;
      assert.strictEqual(result.error, undefined);
      await new Promise((resolve) => result.done(resolve));
    }
    assert.deepStrictEqual(order, [0, 1, 2, 3]);
    holder.connection.end(); clients.forEach((c) => c.connection.end());
  },

  async disconnectReleases(server) {
    const a = new Locker(server.port, server.host);
    a.on("error", () => {});
    a.on("reset", () => {});
    const held = await locked(a, "gone", 1000, 60000);
    assert.strictEqual(held.error, undefined);
    a.connection.destroy();
    const b = new Locker(server.port, server.host);
    b.on("error", () => {});
    const next = await locked(b, "gone", 5000, 5000);
    assert.strictEqual(next.error, undefined, "released when its connection closed");
    b.connection.end();
  },
};

(async () => {
  const server = await startServer();
  let failed = 0;
  for (const [name, test] of Object.entries(tests)) {
    try {
      await test(server);
      console.log(`ok   ${name}`);
    } catch (error) {
      failed++;
      console.log(`FAIL ${name}: ${error.stack}`);
    }
  }
  server.stop();
  console.log(`${Object.keys(tests).length - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})();
