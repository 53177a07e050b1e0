/**
 * Writes the RUNNING progress of one claimed request: only when something changed, at most once
 * per heartbeat, bounded in size; each write also renews the lease. (The terminal result goes
 * through the outbox.) Every write is conditional on the version we last wrote and goes through
 * `writeOwned`, so a heartbeat whose answer was lost is recognised as ours on the next one
 * instead of being taken for someone else's change. Only a result that is really not ours any
 * more (another agent, a reaper, a manual fix) fences the run: we stop and write nothing more.
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

export type HeartbeatOutcome = "written" | "unchanged" | "fenced" | "failed" | "lease-lost";

/** A run stops when its lease could not be renewed for this many lease_ttl. */
export const LEASE_GIVE_UP = 1.5;

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
}

export class Reporter {
  readonly #o: ReporterOptions;
  readonly #mono: () => number;
  #version: string | undefined;
  #lastReport: string | undefined;
  /** Monotonic time at which the last successful write was sent. */
  #lastWriteAt: number;
  #fenced = false;
  #done = false;
  #failures = 0;

  constructor(options: ReporterOptions) {
    this.#o = options;
    this.#mono = options.monotonic ?? (() => performance.now());
    this.#version = options.version;
    this.#lastWriteAt = this.#mono();
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
   * Writes RUNNING with `report` if it differs from the last one, or if the lease needs renewing
   * (half its ttl has passed). GMS errors are not fatal: the run goes on and the next heartbeat
   * tries again, until the lease is lost.
   */
  async heartbeat(report: string, now = Date.now()): Promise<HeartbeatOutcome> {
    if (this.#fenced || this.#done) return this.#fenced ? "fenced" : "unchanged";
    const sentAt = this.#mono();
    const renew = sentAt - this.#lastWriteAt >= this.#o.leaseTtlMs / 2;
    if (report === this.#lastReport && !renew) return "unchanged";
    const value: ResultValue = {
      status: "RUNNING",
      startTimeMs: this.#o.startTimeMs,
      durationMs: Math.max(0, now - this.#o.startTimeMs),
      report,
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
        this.#lastReport = report;
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
 * Heartbeats every `intervalMs` until stopped: progress and lease (`Reporter.heartbeat`). A
 * fenced result or a lost lease is told once, and the loop ends.
 */
export function heartbeatLoop(o: {
  reporter: Reporter;
  intervalMs: number;
  report: () => string;
  onFenced: () => void;
  onLeaseLost: (sinceLastWriteMs: number) => void;
}): { stop(): Promise<void> } {
  const controller = new AbortController();
  const loop = (async () => {
    while (!controller.signal.aborted) {
      await sleep(o.intervalMs, controller.signal);
      if (controller.signal.aborted) break;
      const outcome = await o.reporter.heartbeat(o.report());
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
