/**
 * Timers that work for any duration. Node (and browsers) fire a setTimeout whose delay exceeds
 * 2³¹−1 ms (about 24.8 days) after 1 ms, so `task_timeout: 30d` would end every run at once.
 * `longTimeout` chains shorter timers against the monotonic clock; `sleep` is built on it.
 */

/** The largest delay setTimeout honours. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export interface Timer {
  clear(): void;
}

/** Calls `fn` once, `ms` from now (monotonic), whatever the size of `ms`. */
export function longTimeout(fn: () => void, ms: number, max = MAX_TIMER_MS): Timer {
  const due = performance.now() + Math.max(0, ms);
  let handle: ReturnType<typeof setTimeout>;
  const arm = (delay: number) => {
    handle = setTimeout(() => {
      const left = due - performance.now();
      if (left > 0.5) arm(left);
      else fn();
    }, Math.min(Math.max(0, delay), max));
  };
  arm(ms);
  return { clear: () => clearTimeout(handle) };
}

/** Resolves after `ms` (any size), or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      timer.clear();
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = longTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
