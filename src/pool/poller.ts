/**
 * A polite loop: the first tick runs at once, then every interval with random jitter (±15 %, so
 * agents of a pool do not synchronise). While ticks fail it backs off exponentially with jitter
 * (honouring Retry-After) and returns to the interval as soon as a tick succeeds. `nudge()` skips
 * the current wait (a freed slot polls early); `stop()` interrupts the wait and resolves when the
 * running tick has finished.
 */
import { backoffDelay, GmsError } from "../errors.ts";
import type { Logger } from "../observe/log.ts";
import { longTimeout } from "../timers.ts";

export interface PollerOptions {
  name: string;
  intervalMs: number;
  /** Cap of the error backoff. */
  maxBackoffMs: number;
  tick: () => Promise<void>;
  /** Told after every iteration: whether it succeeded, and the wait before the next one. */
  onIteration?: (ok: boolean, waitMs: number) => void;
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
        wait = Math.max(intervalMs, backoffDelay(this.#errors, intervalMs, maxBackoffMs, random));
        if (err instanceof GmsError && err.retryAfterMs !== undefined) {
          wait = Math.max(wait, err.retryAfterMs);
        }
        const level = this.#errors === 1 || this.#errors % 10 === 0 ? "warn" : "debug";
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
      await new Promise<void>((resolve) => {
        const timer = longTimeout(done, wait);
        function done() {
          timer.clear();
          resolve();
        }
        this.#wake = () => {
          if (this.#stopped || this.#errors === 0) done();
        };
      });
      this.#wake = undefined;
    }
  }
}
