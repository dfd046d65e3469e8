// The published type declarations: typed consumer code (ESM with `await using`, and CommonJS)
// compiles with tsc against the package's `exports`, and then runs against a real server.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, test } from 'node:test';

import { PACKAGE_DIR, startServer, uniqueName } from './helpers.mjs';

const require = createRequire(import.meta.url);
const typesDir = join(PACKAGE_DIR, 'test', 'types');
let server;

before(async () => {
  server = await startServer();
});

after(async () => {
  await server.stop();
});

test('typed consumer code compiles against the published declarations', () => {
  const tsc = require.resolve('typescript/bin/tsc');
  const result = spawnSync(process.execPath, [tsc, '-p', join(typesDir, 'tsconfig.json')], { encoding: 'utf8' });
  assert.equal(result.status, 0, `tsc failed:\n${result.stdout}${result.stderr}`);
});

test('await using releases a hold at the end of its block; a used client closes', async () => {
  const usage = await import(pathToFileURL(join(typesDir, 'build', 'usage.mjs')).href);
  const name = uniqueName('await-using');
  const seen = await usage.awaitUsing(server.addr, name, async () => (await server.holders(name)).length);
  assert.equal(seen.heldInside, 1);
  assert.equal(seen.releasedAfterBlock, true);
  await server.untilHolders(name, 0);
  const semaphore = uniqueName('await-using-client');
  const handle = await usage.usingClient(server.addr, semaphore);
  assert.equal(handle.lostReason, 'session');
  await server.untilHolders(semaphore, 0, 'semaphore');
});

test('the typed CommonJS seed code runs', async () => {
  const usage = require(join(typesDir, 'build', 'usage.cjs'));
  assert.deepEqual(await usage.seedRoundTrip(server.addr, uniqueName('typed-seed')), [true, false]);
});
