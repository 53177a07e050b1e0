/**
 * Writes the RUNNING progress of one claimed request and renews its lease. (The terminal result
 * goes through the outbox.) Progress has its own cadence, independent of heartbeat_interval
 * (which drives the KILL checks of pool/signals.ts only): a changed report is written at most
 * every PROGRESS_INTERVAL_MS, the Python executor's cadence, so the UI is never staler than with
 * it; an unchanged report is written only when the lease needs renewing (half its ttl passed).
 * Reports are bounded (finish.ts `progressReport`), so the bytes a run costs GMS grow with its
 * duration only, and far slower than the Python executor's whole-log writes.
 *
 * Every write is conditional on the version we last wrote and goes through `writeOwned`, so a
 * write whose answer was lost is recognised as ours on the next one instead of being taken for
 * someone else's change. Only a result that is really not ours any more (another agent, a
 * reaper, a manual fix) fences the run: we stop and write nothing more.
 *
 * The lease is timed on the monotonic clock (a wall-clock step cannot stop renewals). When no
 * write succeeded for 1.5 × lease_ttl, the lease is lost: peers may close the request as
 * ABORTED one lease_ttl after it lapsed, so the run has to stop before they can.
 */
import { GmsError } from "../errors.ts";
import type { GmsApi } from "../gms/client.ts";
import type { Identity } from "../identity.ts";
import type { Logger } from "../observe/log.ts";
import { metrics } from "../observe/metrics.ts";
import type { ResultValue } from "../request.ts";
import { writeOwned } from "../gms/result_write.ts";
import { sleep } from "../timers.ts";

/** "waiting": too soon after the last write sent for another one; "unchanged": nothing to write. */
export type HeartbeatOutcome =
  | "written"
  | "unchanged"
  | "waiting"
  | "fenced"
  | "failed"
  | "lease-lost";

/** A run stops when its lease could not be renewed for this many lease_ttl. */
export const LEASE_GIVE_UP = 1.5;

/** A changed progress report is written at most this often (the Python executor writes every 2 s). */
export const PROGRESS_INTERVAL_MS = 2_000;

export interface ReporterOptions {
  gms: Pick<GmsApi, "writeResult" | "readRequest">;
  urn: string;
  identity: Identity;
  /** Our fencing token for this request. */
  token: string;
  startTimeMs: number;
  /** Version returned by the claim. */
  version: string | undefined;
  leaseTtlMs: number;
  log: Logger;
  /** Monotonic clock in ms (tests pass a fake). */
  monotonic?: () => number;
  /** Default PROGRESS_INTERVAL_MS. */
  progressIntervalMs?: number;
}

export class Reporter {
  readonly #o: ReporterOptions;
  readonly #mono: () => number;
  #version: string | undefined;
  #lastReport: string | undefined;
  /** Monotonic time at which the last successful write was sent. */
  #lastWriteAt: number;
  /** Monotonic time at which the last write was sent, accepted or not (the claim at first). */
  #lastAttemptAt: number;
  readonly #progressMs: number;
  #fenced = false;
  #done = false;
  #failures = 0;

  constructor(options: ReporterOptions) {
    this.#o = options;
    this.#mono = options.monotonic ?? (() => performance.now());
    this.#version = options.version;
    this.#lastWriteAt = this.#lastAttemptAt = this.#mono();
    this.#progressMs = options.progressIntervalMs ?? PROGRESS_INTERVAL_MS;
  }

  /**
   * How often `heartbeat()` is called while nothing is due: a quarter of the progress interval
   * (of the lease ttl when that is shorter), so a change seen after its turn waits at most a
   * tick, and a renewal is sent between ttl/2 and 3/4 ttl.
   */
  get tickMs(): number {
    return Math.max(10, Math.min(this.#progressMs, this.#o.leaseTtlMs) / 4);
  }

  /** Milliseconds until `heartbeat()` may send a write (0: now). */
  get waitMs(): number {
    return this.#waitMs(this.#mono());
  }

  #renewDue(at: number): boolean {
    return at - this.#lastWriteAt >= this.#o.leaseTtlMs / 2;
  }

  /** The progress interval after the last write sent; for a renewal, ttl/4 when shorter. */
  #waitMs(at: number): number {
    const ttl = this.#o.leaseTtlMs;
    const gap = this.#renewDue(at) ? Math.min(this.#progressMs, ttl / 4) : this.#progressMs;
    return Math.max(0, this.#lastAttemptAt + gap - at);
  }

  get fenced(): boolean {
    return this.#fenced;
  }

  /** The result version we last wrote; undefined when unknown (the outbox re-reads then). */
  get version(): string | undefined {
    return this.#version;
  }

  /** Whether the lease could not be renewed for LEASE_GIVE_UP × lease_ttl. */
  get leaseLost(): boolean {
    return this.#mono() - this.#lastWriteAt > LEASE_GIVE_UP * this.#o.leaseTtlMs;
  }

  /** Milliseconds since the last successful write. */
  get sinceLastWriteMs(): number {
    return Math.round(this.#mono() - this.#lastWriteAt);
  }

  /** No more progress writes after this (the terminal result is on its way). */
  close(): void {
    this.#done = true;
  }

  /**
   * Writes RUNNING with the report if it differs from the last one written, or if the lease needs
   * renewing (half its ttl has passed), but never sooner than the progress interval after the
   * last write sent (the claim included); for a renewal and its retries, the lease's quarter
   * when that is shorter. `report` is only asked for when a write may be sent. GMS errors are
   * not fatal: the run goes on and a later call tries again, until the lease is lost.
   */
  async heartbeat(
    report: string | (() => string),
    now = Date.now(),
  ): Promise<HeartbeatOutcome> {
    if (this.#fenced || this.#done) return this.#fenced ? "fenced" : "unchanged";
    const sentAt = this.#mono();
    if (this.#waitMs(sentAt) > 0) return "waiting";
    const renew = this.#renewDue(sentAt);
    const text = typeof report === "string" ? report : report();
    if (text === this.#lastReport && !renew) return "unchanged";
    this.#lastAttemptAt = sentAt;
    const value: ResultValue = {
      status: "RUNNING",
      startTimeMs: this.#o.startTimeMs,
      durationMs: Math.max(0, now - this.#o.startTimeMs),
      report: text,
    };
    let outcome;
    try {
      outcome = await writeOwned(this.#o.gms, {
        urn: this.#o.urn,
        value,
        version: this.#version,
        token: this.#o.token,
        identity: this.#o.identity,
        leaseTtlMs: this.#o.leaseTtlMs,
      });
    } catch (err) {
      // A refusal that no re-read explains (400, 401/403, …): the run goes on; so does the lease
      // clock, which stops the run if this lasts.
      return this.#failed(
        err instanceof GmsError ? err : new GmsError("GMS_BAD_RESPONSE", "heartbeat", String(err)),
      );
    }
    switch (outcome.kind) {
      case "written":
        if (this.#failures > 0) {
          this.#o.log.info("progress writes work again", {
            urn: this.#o.urn,
            after_failures: this.#failures,
          });
        }
        this.#failures = 0;
        this.#version = outcome.version;
        this.#lastReport = text;
        this.#lastWriteAt = sentAt;
        return "written";
      case "taken":
      case "closed":
        this.#fenced = true;
        this.#o.log.warn(
          "result changed behind our back; stopping this run and writing nothing more",
          {
            urn: this.#o.urn,
            reason: outcome.kind === "taken" ? outcome.reason : "it is already closed",
            theirs: outcome.current?.value.status,
          },
        );
        return "fenced";
      case "retry":
        this.#version = outcome.version;
        return this.#failed(outcome.error);
    }
  }

  #failed(error: GmsError): HeartbeatOutcome {
    this.#failures++;
    metrics.leaseRenewFailure();
    const lost = this.leaseLost;
    const level = lost || this.#failures === 1 || this.#failures % 10 === 0 ? "warn" : "debug";
    this.#o.log[level](
      lost
        ? "lease lost: GMS did not take a write for too long"
        : "progress write failed; the run continues",
      {
        urn: this.#o.urn,
        error,
        failures: this.#failures,
        since_last_write_ms: this.sinceLastWriteMs,
      },
    );
    return lost ? "lease-lost" : "failed";
  }
}

/**
 * Calls `Reporter.heartbeat` until stopped (progress on change, lease renewal; the reporter
 * decides whether a call writes): every `reporter.tickMs`, or at the moment the next write may be
 * sent when that comes sooner, so changes are written every progress interval to the
 * millisecond. A fenced result or a lost lease is told once, and the loop ends.
 */
export function progressLoop(o: {
  reporter: Reporter;
  report: () => string;
  onFenced: () => void;
  onLeaseLost: (sinceLastWriteMs: number) => void;
}): { stop(): Promise<void> } {
  const controller = new AbortController();
  const loop = (async () => {
    while (!controller.signal.aborted) {
      const wait = o.reporter.waitMs;
      // +1: a timer may fire a fraction of a millisecond early (timers.ts).
      await sleep(
        wait > 0 ? Math.min(o.reporter.tickMs, wait + 1) : o.reporter.tickMs,
        controller.signal,
      );
      if (controller.signal.aborted) break;
      const outcome = await o.reporter.heartbeat(o.report);
      if (outcome === "fenced") return o.onFenced();
      if (outcome === "lease-lost") return o.onLeaseLost(o.reporter.sinceLastWriteMs);
    }
  })();
  return {
    stop: async () => {
      controller.abort();
      await loop;
    },
  };
}

export { isFencingError } from "../gms/result_write.ts";
