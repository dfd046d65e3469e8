// ES modules: named imports, the default export (the original package's module.exports seen
// from ESM), both from the ESM build.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import lockserver, * as namespace from 'lockserver-client';
import { Client, LockError, LockserverClient, LockTimeoutError } from 'lockserver-client';

test('import loads the ES module build with named and default exports', () => {
  assert.match(fileURLToPath(import.meta.resolve('lockserver-client')), /dist[\\/]esm[\\/]index\.js$/);
  assert.equal(typeof LockserverClient, 'function');
  assert.equal(lockserver.LockserverClient, LockserverClient);
  assert.equal(namespace.Client, Client);
  assert.equal(namespace.default, lockserver);
  assert.ok(new LockTimeoutError('x', 5) instanceof LockError);
  assert.equal(new LockTimeoutError('x', 5).waitMs, 5);
  assert.throws(() => new Client({ addr: 'ftp://x' }), /unknown scheme/);
  assert.equal(new Client({ addr: 'example.org' }).addr, 'http://example.org:8080');
  assert.equal(new Client({ addr: 'https://example.org:443/' }).addr, 'https://example.org:443');
  assert.equal(new Client({ addr: '[::1]' }).addr, 'http://[::1]:8080');
  assert.equal(new Client({ addr: '[::1]:7000' }).addr, 'http://[::1]:7000');
});
