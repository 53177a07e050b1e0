/**
 * The build lock of one cached environment (venv.ts): in this process, runs queue per lock file
 * in turn; across agent processes on the host the lock file decides (state/lock.ts: the holder's
 * pid and start time, created with link(), a dead holder's lock taken over). Waiting ends when
 * the run is cancelled.
 */
import { acquireLock, releaseHeldLock } from "../state/lock.ts";
import { sleep } from "../timers.ts";

/** The run was cancelled during the setup (the build, or the wait for it); nothing was kept. */
export class SetupCancelled extends Error {}

export class LockBusy extends Error {}

/** In this process, runs queue per lock file; across processes the lock file decides. */
const queues = new Map<string, Promise<void>>();

export async function withBuildLock<T>(
  lock: string,
  cancelled: () => boolean,
  fn: () => Promise<T>,
): Promise<T> {
  const before = queues.get(lock) ?? Promise.resolve();
  let release!: () => void;
  const turn = new Promise<void>((r) => (release = r));
  // The next in line waits for us and for everyone before us (we may leave the queue early).
  const mine = Promise.all([before, turn]).then(() => {});
  queues.set(lock, mine);
  try {
    let free = false;
    void before.then(() => (free = true));
    await Promise.resolve(); // a queue that is free already lets us in at once
    while (!free) {
      if (cancelled()) throw new SetupCancelled();
      await sleep(100);
    }
    for (;;) {
      try {
        await acquireLock(lock, () => new LockBusy());
        break;
      } catch (err) {
        if (!(err instanceof LockBusy)) throw err;
        if (cancelled()) throw new SetupCancelled();
        await sleep(200);
      }
    }
    try {
      return await fn();
    } finally {
      releaseHeldLock(lock);
    }
  } finally {
    release();
    void mine.then(() => {
      if (queues.get(lock) === mine) queues.delete(lock);
    });
  }
}

/** Takes a lock only if it is free now; runs `fn` holding it. */
export async function ifUnlocked(lock: string, fn: () => Promise<void>): Promise<boolean> {
  try {
    await acquireLock(lock, () => new LockBusy());
  } catch {
    return false;
  }
  try {
    await fn();
    return true;
  } finally {
    releaseHeldLock(lock);
  }
}
