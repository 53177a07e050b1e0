/**
 * Delivery of terminal results. A result is first saved in state_dir/outbox (so it survives a
 * crash or GMS being down for hours), then written to GMS with retries: exponential backoff with
 * jitter, Retry-After honoured, for up to `result_retry_for` after it was produced, across
 * restarts. Every write is conditional on the version we hold and goes through `writeOwned`
 * (result_write.ts): a write whose answer was lost is recognised by its write id, a result that
 * is no longer ours is never overwritten, a RUNNING result that is still ours is written again on
 * its new version. Retries come at least every lease_ttl / 4, so a result waiting for GMS keeps
 * the lease alive as soon as GMS answers again, before any peer may reap the request. A result
 * refused as too large (413) is retried smaller (`smaller` below). Retry-After is honoured up
 * to lease_ttl / 4.
 */
import { backoffDelay, GmsError, isRetryable } from "../errors.ts";
import type { GmsApi } from "../gms/client.ts";
import { type Identity, newWriteId } from "../identity.ts";
import type { Logger } from "../observe/log.ts";
import type { ResultValue } from "../request.ts";
import { writeOwned } from "../gms/result_write.ts";
import type { OutboxRecord, StateDir } from "./state_dir.ts";
import { sleep } from "../timers.ts";

export interface OutboxOptions {
  state: StateDir;
  gms: Pick<GmsApi, "writeResult" | "readRequest">;
  identity: Identity;
  retryForMs: number;
  /** Retries come at least every quarter of it. */
  leaseTtlMs: number;
  log: Logger;
  /** Backoff base (tests shorten it). */
  baseDelayMs?: number;
}

export type DeliveryOutcome = "delivered" | "superseded" | "expired" | "rejected";

export class Outbox {
  readonly #o: OutboxOptions;
  readonly #inflight = new Map<string, Promise<DeliveryOutcome>>();
  readonly #stop = new AbortController();

  constructor(options: OutboxOptions) {
    this.#o = options;
  }

  get pending(): number {
    return this.#inflight.size;
  }

  /** Whether a result for this request is being delivered (the reaper leaves it alone). */
  holds(urn: string): boolean {
    return this.#inflight.has(urn);
  }

  /** Saves the result durably, then delivers it in the background (`delivery` settles when done). */
  async submit(rec: OutboxRecord): Promise<{ delivery: Promise<DeliveryOutcome> }> {
    const saved = { ...rec, writeId: rec.writeId ?? newWriteId() };
    await this.#o.state.saveResult(saved);
    return { delivery: this.#start(saved) };
  }

  /** Delivers what a previous run of the agent left in the outbox; returns their ids. */
  async resume(): Promise<string[]> {
    const pending = await this.#o.state.listResults();
    for (const rec of pending) {
      if (!this.#inflight.has(rec.urn)) void this.#start({ ...rec, version: undefined });
    }
    return pending.map((r) => r.id);
  }

  /** Resolves true when every delivery ended, false if timeoutMs passed first. */
  async idle(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.#inflight.size > 0) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await Promise.race([Promise.all(this.#inflight.values()), sleep(left)]);
    }
    return true;
  }

  /** Stops retrying (results stay in the outbox for the next start). */
  stop(): void {
    this.#stop.abort();
  }

  #start(rec: OutboxRecord): Promise<DeliveryOutcome> {
    const p = this.#deliver(rec).finally(() => this.#inflight.delete(rec.urn));
    this.#inflight.set(rec.urn, p);
    return p;
  }

  async #deliver(rec: OutboxRecord): Promise<DeliveryOutcome> {
    const { gms, identity, log, state } = this.#o;
    const deadline = rec.createdAt + this.#o.retryForMs;
    // At least every lease_ttl / 4, so a result waiting for GMS is written before peers may reap.
    const maxWait = Math.max(250, Math.min(60_000, this.#o.leaseTtlMs / 4));
    const writeId = rec.writeId ?? newWriteId();
    let value: ResultValue = rec.value;
    let version = rec.version;
    for (let attempt = 0; !this.#stop.signal.aborted; attempt++) {
      let error: unknown;
      try {
        const outcome = await writeOwned(gms, {
          urn: rec.urn,
          value,
          version,
          token: rec.token ?? "",
          instances: [identity.instanceId, rec.instance],
          identity,
          leaseTtlMs: this.#o.leaseTtlMs,
          writeId,
        });
        if (outcome.kind === "written") {
          await state.removeResult(rec.id);
          if (attempt > 0) {
            log.info("result delivered after retries", {
              urn: rec.urn,
              status: value.status,
              attempts: attempt + 1,
            });
          }
          return "delivered";
        }
        if (outcome.kind === "taken" || outcome.kind === "closed") {
          const theirs = outcome.current?.value.status;
          // Ours and already this status: an earlier delivery of this result landed.
          const ours = outcome.kind === "closed" && theirs === value.status;
          if (!ours) {
            log.warn("result not written: the request was closed or taken by someone else", {
              urn: rec.urn,
              ours: value.status,
              theirs: theirs ?? "no result",
              reason: outcome.kind === "taken" ? outcome.reason : "closed by an earlier result",
            });
          }
          await state.removeResult(rec.id);
          return ours ? "delivered" : "superseded";
        }
        version = outcome.version;
        error = outcome.error;
      } catch (err) {
        if (err instanceof GmsError && err.code === "GMS_TOO_LARGE") {
          const cut = smaller(value, rec.id);
          if (cut) {
            log.warn("result refused as too large; retrying it smaller", {
              urn: rec.urn,
              chars: (value.report?.length ?? 0) +
                (value.structuredReport?.serializedValue.length ?? 0),
            });
            value = cut;
            version = undefined;
            continue;
          }
        }
        const auth = err instanceof GmsError && err.code === "GMS_AUTH";
        if (!isRetryable(err) && !auth) {
          log.error("result rejected by GMS; dropping it (the reaper closes the request)", {
            urn: rec.urn,
            status: value.status,
            error: err,
          });
          await state.removeResult(rec.id);
          return "rejected";
        }
        error = err;
      }
      if (Date.now() >= deadline) {
        log.error("result not delivered within agent.result_retry_for; dropping it", {
          urn: rec.urn,
          status: value.status,
          error,
        });
        await state.removeResult(rec.id);
        return "expired";
      }
      // 401/403 do not fix themselves: retry slowly, and say what to fix every time.
      const auth = error instanceof GmsError && error.code === "GMS_AUTH";
      let wait = auth ? 60_000 : backoffDelay(attempt, this.#o.baseDelayMs ?? 500, maxWait);
      // Retry-After is honoured up to lease_ttl / 4: past that, peers could reap the request.
      if (error instanceof GmsError && error.retryAfterMs !== undefined) {
        wait = Math.max(wait, Math.min(error.retryAfterMs, maxWait));
      }
      wait = Math.min(wait, Math.max(0, deadline - Date.now()));
      const level = auth ? "error" : attempt === 0 || attempt % 10 === 0 ? "warn" : "debug";
      log[level]("result delivery failed; will retry", {
        urn: rec.urn,
        error,
        attempt: attempt + 1,
        retry_in_ms: wait,
      });
      await sleep(wait, this.#stop.signal);
    }
    return "expired";
  }
}

/** The smallest report a terminal result is cut to before the outbox gives up on a 413. */
export const MIN_REPORT_CHARS = 8_192;

/**
 * A smaller version of a terminal result that GMS (or an ingress in front of it) refused as too
 * large (413): first without the structured report, then with the report halved (head and tail
 * kept), down to MIN_REPORT_CHARS. Undefined when it cannot get smaller.
 */
export function smaller(value: ResultValue, execId: string): ResultValue | undefined {
  const report = value.report ?? "";
  if (value.structuredReport) {
    const { structuredReport: _, ...rest } = value;
    return {
      ...rest,
      report:
        `WARNING: ${execId} result was refused by GMS as too large (HTTP 413), so the structured report was removed.\n` +
        report,
    };
  }
  if (report.length <= MIN_REPORT_CHARS) return undefined;
  const keep = Math.max(MIN_REPORT_CHARS, Math.floor(report.length / 2));
  const prefix =
    `WARNING: ${execId} report was refused by GMS as too large (HTTP 413) and was cut to ${keep} chars.\n`;
  const room = Math.max(0, keep - prefix.length - 40);
  const head = report.slice(0, Math.floor(room / 4));
  const tail = report.slice(report.length - (room - head.length));
  return { ...value, report: `${prefix}${head}\n… cut …\n${tail}` };
}
