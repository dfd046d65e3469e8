// Typed CommonJS consumer code (the `require` condition's declarations), the seed API as its
// README shows it.
import { LockserverClient, LockError } from 'lockserver-client';

export async function seedRoundTrip(addr: string, resource: string): Promise<boolean[]> {
  const client = new LockserverClient({ addr, owner: 'typed-worker', secret: undefined });
  const first: boolean = await client.acquire(resource);
  const second: boolean = await new LockserverClient({ addr, owner: 'other' }).acquire(resource, false);
  await client.release(resource);
  return [first, second];
}

export function isLockError(error: unknown): error is LockError {
  return error instanceof LockError;
}
