// Typed ESM consumer code: compiled with tsc against the published declarations (the
// `import` condition), then run by types.test.mjs. Uses `await using`.
import lockserver, {
  type AcquireOptions,
  Client,
  Fence,
  type Hold,
  LockHandle,
  LockLostError,
  LockserverClient,
  type LostReason,
} from 'lockserver-client';

export interface Seen {
  holdId: string;
  token: number;
  releasedAfterBlock: boolean;
  heldInside: number;
}

/** `await using` releases the hold at the end of the block. */
export async function awaitUsing(addr: string, name: string, holders: () => Promise<number>): Promise<Seen> {
  const client = new Client({ addr });
  let inside: LockHandle;
  let heldInside: number;
  {
    await using handle = await client.lock(name).acquire({ wait: 1000 });
    inside = handle;
    heldInside = await holders();
    const reason: LostReason | null = handle.lostReason;
    const hold: Readonly<Hold> = handle.hold;
    void reason;
    void hold;
  }
  const seen = { holdId: inside.holdId, token: inside.token, releasedAfterBlock: inside.released, heldInside };
  await client.close();
  return seen;
}

/** `await using` a client closes it: its holds are lost with reason `session`. */
export async function usingClient(addr: string, name: string): Promise<LockHandle> {
  await using client = new Client({ addr });
  const handle = await client.semaphore(name, 2).acquire({ permits: 2 });
  handle.on('lost', (reason: LostReason, error: LockLostError) => {
    void reason;
    void error;
  });
  return handle;
}

// Compile-time checks of the option types.
export const forever: AcquireOptions = { wait: null, ttl: 1000, signal: AbortSignal.timeout(1) };
// @ts-expect-error a wait is milliseconds or null
export const wrong: AcquireOptions = { wait: 'forever' };
export const seed: typeof lockserver.LockserverClient = LockserverClient;
export const fence: number = new Fence(3).highest;
export const acquired: Promise<boolean> = new LockserverClient({}).acquire('x', false, 10).catch(() => false);
