/**
 * A polite loop: the first tick runs at once, then every interval with random jitter (±15 %, so
 * agents of a pool do not synchronise). While ticks fail it backs off exponentially with jitter
 * (honouring Retry-After) and returns to the interval as soon as a tick succeeds. `nudge()` skips
 * the current wait (a freed slot polls early); `stop()` interrupts the wait and resolves when the
 * running tick has finished.
 *
 * A long backoff must not delay work once GMS is back: while GMS is unreachable (retryable
 * failures, not refused credentials) a cheap `probe` (GMS's public /health) runs every
 * 0.8 × max(interval, 5 s) during the wait, and the first answer ends it. Failures are logged at
 * the first and then at least every 5 minutes while they last.
 */
import { backoffDelay, GmsError, isRetryable } from "../errors.ts";
import type { Logger } from "../observe/log.ts";
import { longTimeout, sleep } from "../timers.ts";

/** While a failure lasts, it is logged again at least this often. */
export const REPEAT_WARNING_MS = 5 * 60_000;

export interface PollerOptions {
  name: string;
  intervalMs: number;
  /** Cap of the error backoff. */
  maxBackoffMs: number;
  tick: () => Promise<void>;
  /** Told after every iteration: whether it succeeded, and the wait before the next one. */
  onIteration?: (ok: boolean, waitMs: number) => void;
  /** Whether GMS answers at all (cheap, no query): ends a backoff early when it does. */
  probe?: () => Promise<boolean>;
  log: Logger;
  random?: () => number;
}

export class Poller {
  readonly #opts: PollerOptions;
  #wake: (() => void) | undefined;
  #nudged = false;
  #stopped = false;
  #loop: Promise<void> | undefined;
  #errors = 0;
  #lastError: unknown;
  #warnedAt = -Infinity;

  constructor(options: PollerOptions) {
    this.#opts = options;
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  nudge(): void {
    this.#nudged = true;
    this.#wake?.();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#wake?.();
    await this.#loop;
  }

  /** Consecutive failed ticks. */
  get errors(): number {
    return this.#errors;
  }

  async #run(): Promise<void> {
    const { intervalMs, maxBackoffMs, tick, log, name } = this.#opts;
    const random = this.#opts.random ?? Math.random;
    while (!this.#stopped) {
      this.#nudged = false;
      let wait: number;
      try {
        await tick();
        if (this.#errors > 0) {
          log.info(`${name}: GMS answers again`, { after_failures: this.#errors });
        }
        this.#errors = 0;
        wait = Math.round(intervalMs * (0.85 + random() * 0.3));
      } catch (err) {
        this.#errors++;
        this.#lastError = err;
        wait = Math.max(intervalMs, backoffDelay(this.#errors, intervalMs, maxBackoffMs, random));
        if (err instanceof GmsError && err.retryAfterMs !== undefined) {
          wait = Math.max(wait, err.retryAfterMs);
        }
        // Warn now if the next chance (after this wait) would leave more than 5 minutes of silence.
        const repeat = performance.now() + wait - this.#warnedAt > REPEAT_WARNING_MS;
        const level = this.#errors === 1 || repeat ? "warn" : "debug";
        if (level === "warn") this.#warnedAt = performance.now();
        log[level](`${name} failed; retrying`, {
          error: err,
          failures: this.#errors,
          retry_in_ms: wait,
        });
      }
      this.#opts.onIteration?.(this.#errors === 0, wait);
      if (this.#stopped) break;
      // A nudge during a failing streak does not bypass the backoff.
      if (this.#nudged && this.#errors === 0) continue;
      const waited = new AbortController();
      await new Promise<void>((resolve) => {
        const timer = longTimeout(done, wait);
        function done() {
          timer.clear();
          waited.abort();
          resolve();
        }
        this.#wake = () => {
          if (this.#stopped || this.#errors === 0) done();
        };
        void this.#probeWhileDown(wait, waited.signal, done);
      });
      this.#wake = undefined;
    }
  }

  /** During a backoff after GMS was unreachable: probe until it answers (then `done`). */
  async #probeWhileDown(wait: number, over: AbortSignal, done: () => void): Promise<void> {
    const probe = this.#opts.probe;
    const every = 0.8 * Math.max(this.#opts.intervalMs, 5_000);
    const err = this.#lastError;
    // Unreachable or failing, not refused: credentials and rate limits (429) wait their turn.
    const down = isRetryable(err) &&
      !(err instanceof GmsError && (err.status === 429 || err.retryAfterMs !== undefined));
    if (!probe || this.#errors === 0 || !down || wait <= every) return;
    const random = this.#opts.random ?? Math.random;
    while (!over.aborted) {
      await sleep(every * (0.9 + random() * 0.1), over);
      if (over.aborted) return;
      if (await probe().catch(() => false)) {
        if (!over.aborted) this.#opts.log.info(`${this.#opts.name}: GMS answers; retrying now`);
        return done();
      }
    }
  }
}
