// CommonJS: `require('lockserver-client')` has the original package's shape
// (`module.exports.LockserverClient`) and the whole native API, from the CommonJS build.
const assert = require('node:assert/strict');
const { test } = require('node:test');

test('require() loads the CommonJS build with the seed export shape', async () => {
  const resolved = require.resolve('lockserver-client');
  assert.match(resolved, /dist[\\/]cjs[\\/]index\.js$/);
  const pkg = require('lockserver-client');
  const { LockserverClient } = require('lockserver-client');
  assert.equal(typeof LockserverClient, 'function');
  assert.equal(pkg.LockserverClient, LockserverClient);
  for (const name of ['Client', 'LockHandle', 'Fence', 'LockError', 'LockTimeoutError', 'LockedError', 'LockLostError',
    'InvalidNameError', 'ConflictError', 'AuthError', 'ConnectionError', 'OutcomeUnknownError', 'asyncDispose']) {
    assert.ok(pkg[name] !== undefined, `exports ${name}`);
  }
  assert.equal(pkg.default.LockserverClient, LockserverClient);
  const client = new LockserverClient({ addr: '127.0.0.1:9', owner: 'w1', secret: 's' });
  assert.equal(client.baseUrl, 'http://127.0.0.1:9');
  assert.equal(typeof client.acquire, 'function');
  assert.equal(typeof client.release, 'function');
  assert.ok(new pkg.LockedError() instanceof pkg.LockError);
  assert.ok(new pkg.ConnectionError('x').outcomeUnknown);
  await assert.rejects(client.acquire('r', false), pkg.ConnectionError);
});
