/**
 * Fake time for unit tests: @sinonjs/fake-timers with setTimeout/setInterval, Date and
 * performance faked (checked in src/timers_test.ts: `performance.now()` follows the fake clock,
 * a `setSystemTime` step moves Date only). Real I/O (fs) still runs on the real event loop:
 * `realPause` gives it real time, `advanceUntil` interleaves both.
 */
import FakeTimers from "@sinonjs/fake-timers";

export type Clock = FakeTimers.Clock;

/** Captured at import, before any test installs the fake. */
const realSetTimeout = globalThis.setTimeout;

/** 2030-01-01T00:00:00Z: far from the epoch, so "0" never passes for a time. */
export const EPOCH = Date.UTC(2030, 0, 1);

export function installClock(now = EPOCH): Clock {
  return FakeTimers.install({
    toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date", "performance"],
    now,
  });
}

/** Real milliseconds (for real I/O to progress while the clock is fake). */
export function realPause(ms = 1): Promise<void> {
  return new Promise((resolve) => realSetTimeout(resolve, ms));
}

/**
 * Advances fake time `stepMs` at a time, with a real pause after each step, until `done()`;
 * fails after `maxMs` of fake time. Returns the fake time it took.
 */
export async function advanceUntil(
  clock: Clock,
  done: () => boolean,
  what: string,
  { stepMs = 100, maxMs = 60_000 }: { stepMs?: number; maxMs?: number } = {},
): Promise<number> {
  const start = clock.now;
  while (!done()) {
    if (clock.now - start > maxMs) throw new Error(`${what}: not within ${maxMs} ms (fake)`);
    await clock.tickAsync(stepMs);
    await realPause();
  }
  return clock.now - start;
}

/** Advances fake time by `ms` in steps, with a real pause after each (real I/O keeps up). */
export async function advance(clock: Clock, ms: number, stepMs = 100): Promise<void> {
  for (let left = ms; left > 0; left -= stepMs) {
    await clock.tickAsync(Math.min(stepMs, left));
    await realPause();
  }
}
