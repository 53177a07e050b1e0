/**
 * Writes the RUNNING progress of one claimed request: only when something changed, at most once
 * per heartbeat, bounded in size; each write also renews the lease. (The terminal result goes
 * through the outbox.) Every write is conditional on the version we last wrote, so if anyone else
 * changes the result (another agent, a reaper, a manual fix) we notice at once and stop: fencing.
 */
import { GmsError } from "./errors.ts";
import type { GmsApi } from "./gms/client.ts";
import { type Identity, leaseProperties } from "./identity.ts";
import type { Logger } from "./log.ts";
import type { ResultValue } from "./request.ts";

export type HeartbeatOutcome = "written" | "unchanged" | "fenced" | "failed";

export interface ReporterOptions {
  gms: Pick<GmsApi, "writeResult" | "readRequest">;
  urn: string;
  identity: Identity;
  startTimeMs: number;
  /** Version returned by the claim. */
  version: string;
  leaseTtlMs: number;
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

  /** The result version we last wrote (the terminal write is conditional on it). */
  get version(): string {
    return this.#version;
  }

  /** No more progress writes after this (the terminal result is on its way). */
  close(): void {
    this.#done = true;
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
