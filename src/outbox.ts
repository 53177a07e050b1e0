/**
 * Delivery of terminal results. A result is first saved in state_dir/outbox (so it survives a
 * crash or GMS being down for hours), then written to GMS with retries: exponential backoff with
 * jitter, Retry-After honoured, for up to `result_retry_for` after it was produced, across
 * restarts. Every write is conditional on the version we hold; if GMS says the result changed,
 * it is re-read: already terminal (someone closed it, or our own earlier attempt landed) means
 * there is nothing to do; RUNNING and still ours means write again on the new version.
 */
import { backoffDelay, GmsError, isRetryable } from "./errors.ts";
import type { GmsApi } from "./gms/client.ts";
import { type Identity, leaseProperties } from "./identity.ts";
import type { Logger } from "./log.ts";
import { sleep } from "./process.ts";
import { isFencingError } from "./reporter.ts";
import { isTerminalStatus } from "./request.ts";
import type { OutboxRecord, StateDir } from "./state.ts";

export interface OutboxOptions {
  state: StateDir;
  gms: Pick<GmsApi, "writeResult" | "readRequest">;
  identity: Identity;
  retryForMs: number;
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

  /** Saves the result durably, then delivers it in the background (`delivery` settles when done). */
  async submit(rec: OutboxRecord): Promise<{ delivery: Promise<DeliveryOutcome> }> {
    await this.#o.state.saveResult(rec);
    return { delivery: this.#start(rec) };
  }

  /** Delivers what a previous run of the agent left in the outbox. */
  async resume(): Promise<number> {
    const pending = await this.#o.state.listResults();
    for (const rec of pending) {
      if (!this.#inflight.has(rec.urn)) void this.#start({ ...rec, version: undefined });
    }
    return pending.length;
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
    const owners = new Set([identity.instanceId, rec.instance]);
    let version = rec.version;
    let rereads = 0;
    for (let attempt = 0; !this.#stop.signal.aborted; attempt++) {
      try {
        if (version === undefined) {
          const current = await gms.readRequest(rec.urn);
          const result = current?.result;
          if (
            !current || !result || isTerminalStatus(result.value.status) ||
            !owners.has(result.properties.agentInstance ?? "")
          ) {
            const ours = result?.value.status === rec.value.status &&
              owners.has(result.properties.agentInstance ?? "");
            if (!ours) {
              log.warn("result not written: the request was closed or taken by someone else", {
                urn: rec.urn,
                ours: rec.value.status,
                theirs: result?.value.status ?? (current ? "no result" : "deleted"),
              });
            }
            await state.removeResult(rec.id);
            return ours ? "delivered" : "superseded";
          }
          version = result.version;
        }
        await gms.writeResult(rec.urn, rec.value, {
          ifVersionMatch: version,
          properties: leaseProperties(identity, Date.now()),
        });
        await state.removeResult(rec.id);
        if (attempt > 0) {
          log.info("result delivered after retries", {
            urn: rec.urn,
            status: rec.value.status,
            attempts: attempt + 1,
          });
        }
        return "delivered";
      } catch (err) {
        if (isFencingError(err) && rereads++ < 5) {
          version = undefined; // re-read and decide
          continue;
        }
        const auth = err instanceof GmsError && err.code === "GMS_AUTH";
        if (!isRetryable(err) && !auth) {
          log.error("result rejected by GMS; dropping it", {
            urn: rec.urn,
            status: rec.value.status,
            error: err,
          });
          await state.removeResult(rec.id);
          return "rejected";
        }
        if (Date.now() >= deadline) {
          log.error("result not delivered within agent.result_retry_for; dropping it", {
            urn: rec.urn,
            status: rec.value.status,
            error: err,
          });
          await state.removeResult(rec.id);
          return "expired";
        }
        // 401/403 do not fix themselves: retry slowly, and say what to fix every time.
        let wait = auth ? 60_000 : backoffDelay(attempt, this.#o.baseDelayMs ?? 500, 60_000);
        if (err instanceof GmsError && err.retryAfterMs !== undefined) {
          wait = Math.max(wait, err.retryAfterMs);
        }
        wait = Math.min(wait, Math.max(0, deadline - Date.now()));
        const level = auth ? "error" : attempt === 0 || attempt % 10 === 0 ? "warn" : "debug";
        log[level]("result delivery failed; will retry", {
          urn: rec.urn,
          error: err,
          attempt: attempt + 1,
          retry_in_ms: wait,
        });
        await sleep(wait, this.#stop.signal);
      }
    }
    return "expired";
  }
}
