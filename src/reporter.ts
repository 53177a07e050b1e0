/**
 * Writes the result aspect of one claimed request: RUNNING progress (only when something changed,
 * at most once per heartbeat, bounded in size) that also renews the lease, and exactly one
 * terminal result. Every write is conditional on the version we last wrote, so if anyone else
 * changes the result (another agent, a reaper, a manual fix) we notice at once and stop: fencing.
 */
import { backoffDelay, GmsError, isRetryable } from "./errors.ts";
import type { GmsApi } from "./gms/client.ts";
import { type Identity, leaseProperties } from "./identity.ts";
import type { Logger } from "./log.ts";
import { sleep } from "./process.ts";
import { isTerminalStatus, type ResultValue } from "./request.ts";

export type HeartbeatOutcome = "written" | "unchanged" | "fenced" | "failed";

export interface ReporterOptions {
  gms: Pick<GmsApi, "writeResult" | "readRequest">;
  urn: string;
  identity: Identity;
  startTimeMs: number;
  /** Version returned by the claim. */
  version: string;
  leaseTtlMs: number;
  /** How long a terminal result is retried while GMS fails. */
  retryForMs: number;
  log: Logger;
}

export class Reporter {
  readonly #o: ReporterOptions;
  #version: string;
  #lastReport: string | undefined;
  #lastWriteAt: number;
  #fenced = false;
  #done = false;

  constructor(options: ReporterOptions) {
    this.#o = options;
    this.#version = options.version;
    this.#lastWriteAt = options.startTimeMs;
  }

  get fenced(): boolean {
    return this.#fenced;
  }

  /**
   * Writes RUNNING with `report` if it differs from the last one, or if the lease needs renewing
   * (half its ttl has passed). GMS errors are not fatal: the run goes on and the next heartbeat
   * tries again.
   */
  async heartbeat(report: string, now = Date.now()): Promise<HeartbeatOutcome> {
    if (this.#fenced || this.#done) return this.#fenced ? "fenced" : "unchanged";
    const renew = now - this.#lastWriteAt >= this.#o.leaseTtlMs / 2;
    if (report === this.#lastReport && !renew) return "unchanged";
    const value: ResultValue = {
      status: "RUNNING",
      startTimeMs: this.#o.startTimeMs,
      durationMs: now - this.#o.startTimeMs,
      report,
    };
    try {
      this.#version = await this.#o.gms.writeResult(this.#o.urn, value, {
        ifVersionMatch: this.#version,
        properties: leaseProperties(this.#o.identity, now + this.#o.leaseTtlMs),
      });
      this.#lastReport = report;
      this.#lastWriteAt = now;
      return "written";
    } catch (err) {
      if (isFencingError(err)) {
        this.#fenced = true;
        this.#o.log.warn(
          "result changed behind our back; stopping this run and writing nothing more",
          {
            urn: this.#o.urn,
            error: err,
          },
        );
        return "fenced";
      }
      this.#o.log.warn("progress write failed; the run continues", {
        urn: this.#o.urn,
        error: err,
      });
      return "failed";
    }
  }

  /**
   * Writes the terminal result, retrying retryable failures with backoff for up to retryForMs.
   * If GMS says the result changed since our last write, it re-reads: already terminal (a reaper,
   * a cancel, our own earlier attempt whose answer was lost) means there is nothing left to do.
   * Resolves true when our result is stored.
   */
  async finish(value: ResultValue): Promise<boolean> {
    if (this.#fenced) return false;
    this.#done = true;
    const deadline = Date.now() + this.#o.retryForMs;
    for (let attempt = 0;; attempt++) {
      try {
        this.#version = await this.#o.gms.writeResult(this.#o.urn, value, {
          ifVersionMatch: this.#version,
          properties: leaseProperties(this.#o.identity, Date.now()),
        });
        return true;
      } catch (err) {
        if (isFencingError(err)) {
          const current = await this.#o.gms.readRequest(this.#o.urn).catch(() => undefined);
          const status = current?.result?.value.status;
          if (
            status === value.status &&
            current?.result?.properties.agentInstance === this.#o.identity.instanceId
          ) {
            return true; // our own earlier attempt landed; its answer was lost
          }
          this.#o.log.warn("not writing our result: the request was closed by someone else", {
            urn: this.#o.urn,
            ours: value.status,
            theirs: status ?? "unknown",
          });
          this.#fenced = true;
          return false;
        }
        if (!isRetryable(err) || Date.now() >= deadline) {
          this.#o.log.error("could not deliver the result", {
            urn: this.#o.urn,
            status: value.status,
            error: err,
          });
          return false;
        }
        let wait = backoffDelay(attempt, 1000, 60_000);
        if (err instanceof GmsError && err.retryAfterMs !== undefined) {
          wait = Math.max(wait, err.retryAfterMs);
        }
        if (attempt === 0 || attempt % 10 === 0) {
          this.#o.log.warn("result delivery failed; retrying", {
            urn: this.#o.urn,
            error: err,
            retry_in_ms: wait,
          });
        }
        await sleep(Math.min(wait, Math.max(0, deadline - Date.now())));
      }
    }
  }
}

/**
 * A write refused because the stored result is no longer the one we wrote: 412 (version) or 400
 * with GMS's immutable-state message (someone closed the request: SPEC §3.4).
 */
export function isFencingError(err: unknown): boolean {
  return err instanceof GmsError &&
    (err.code === "GMS_PRECONDITION" ||
      (err.status === 400 && /immutable state/i.test(err.message)));
}

export { isTerminalStatus };
