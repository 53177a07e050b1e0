/**
 * The reaper: every agent of a pool closes RUNNING requests of its executor id that nobody holds
 * any more (see `reap`). It reads discovery's page of RUNNING requests (no query of its own),
 * re-reads a request when first seen without a recent heartbeat and when its heartbeat signature
 * stops changing, and closes with a conditional write under a token of its own, so two reapers
 * cannot both win and a closed result never passes for its owner's.
 */
import type { AgentConfig } from "../config/config.ts";
import type { GmsApi, RunningSummary } from "../gms/client.ts";
import { writeOwned } from "../gms/result_write.ts";
import { APP_SOURCE, type Identity, newToken, ownerLine } from "../identity.ts";
import type { Logger } from "../observe/log.ts";
import type { RequestState } from "../request.ts";

export interface ReaperDeps {
  config: AgentConfig;
  identity: Identity;
  log: Logger;
  gms: Pick<GmsApi, "readRequest" | "writeResult" | "serverNow">;
  /** Whether this agent itself holds the request (a job, a result on its way, a claim). */
  holds(urn: string): boolean;
  /** Told about every request the reaper closed. */
  reaped(urn: string, status: string): void;
}

/** What the reaper remembers of a RUNNING request it saw in discovery. */
interface Watched {
  /** start + duration as search shows them: a live owner's heartbeats change it. */
  signature: string;
  /** Monotonic time the signature last changed (or was first seen). */
  changedAt: number;
  /** Monotonic time it was last seen in discovery. */
  seenAt: number;
  /** Monotonic time of the last re-read; undefined: never read. */
  readAt?: number;
  /** Written by someone who is not ingest-agent (the Python executor): never ours to reap. */
  foreign?: boolean;
}

export class Reaper {
  readonly #d: ReaperDeps;
  readonly #watched = new Map<string, Watched>();

  constructor(deps: ReaperDeps) {
    this.#d = deps;
  }

  /**
   * RUNNING requests of our pool that nobody holds any more. Search shows start + duration, which
   * a live owner's heartbeats keep changing; a request is re-read (consistent, with GMS's
   * timestamps) when first seen, unless it shows a heartbeat within the last lease_ttl (a pool's
   * agents see each other's new runs all the time), and again when that signature has not
   * changed for a lease_ttl.
   * It is closed, with a conditional write so two reapers cannot both win, when
   *   - it claims to be this very agent's but no job, outbox entry or pending claim holds it
   *     (the agent lost track of it): as soon as it is read;
   *   - its owner's lease lapsed (GMS's `lastObserved` + lease, on GMS's clock) one lease_ttl
   *     ago, or at once after it lapsed if a user asked to KILL it (CANCELLED, as the Python
   *     executor answers a KILL for a run it does not know).
   * Requests written by others than ingest-agent are never touched.
   */
  async reap(running: RunningSummary[]): Promise<void> {
    const ttl = this.#d.config.agent.leaseTtlMs;
    const mono = performance.now();
    const serverNow = this.#d.gms.serverNow();
    for (const r of running) {
      if (this.#d.holds(r.urn)) continue;
      const signature = `${r.startTimeMs}:${r.durationMs}`;
      let w = this.#watched.get(r.urn);
      if (!w || w.signature !== signature) {
        w = { ...w, signature, changedAt: mono, seenAt: mono };
        this.#watched.set(r.urn, w);
      }
      w.seenAt = mono;
      if (w.foreign) continue;
      // start + duration: the owner's last heartbeat, by the owner's clock (the signature rule
      // below catches what a skewed clock makes look fresh).
      const beat = (r.startTimeMs ?? NaN) + (r.durationMs ?? NaN);
      const fresh = serverNow - beat < ttl;
      const due = (w.readAt === undefined && !fresh) ||
        (mono - w.changedAt >= ttl && (w.readAt === undefined || mono - w.readAt >= ttl / 2));
      if (!due) continue;
      w.readAt = mono;
      const state = await this.#d.gms.readRequest(r.urn);
      if (this.#d.holds(r.urn)) continue; // claimed or finished by us while we were reading
      const result = state?.result;
      if (!state || !result || result.value.status !== "RUNNING") {
        this.#watched.delete(r.urn); // search lagged behind: it is closed
        continue;
      }
      if (result.properties.appSource !== APP_SOURCE) {
        w.foreign = true;
        continue;
      }
      await this.#reapOne(state, result, ttl);
    }
    // Forget what discovery stopped showing a while ago (its pages rotate, so allow for that).
    for (const [urn, w] of this.#watched) {
      if (mono - w.seenAt > Math.max(10 * ttl, 600_000)) this.#watched.delete(urn);
    }
  }

  async #reapOne(
    state: RequestState,
    result: NonNullable<RequestState["result"]>,
    ttl: number,
  ): Promise<void> {
    const { config, identity, log, gms } = this.#d;
    const props = result.properties;
    const owner = props.agentInstance ?? "unknown";
    const mine = props.agentInstance === identity.instanceId;
    const killed = state.signal?.value.signal === "KILL";
    let lapsedAt: number | undefined;
    if (!mine) {
      // GMS's clocks on both sides: when it stored the last write, and what time it is there.
      const leaseMs = Number(props.leaseTtlMs) || ttl;
      const now = result.lastObserved !== undefined ? gms.serverNow() : Date.now();
      lapsedAt = result.lastObserved !== undefined
        ? result.lastObserved + leaseMs
        : Number(props.leaseExpiresAt ?? NaN);
      if (!Number.isFinite(lapsedAt)) return;
      if (now < lapsedAt || (!killed && now < lapsedAt + leaseMs)) return;
    }
    const status = killed ? "CANCELLED" : "ABORTED";
    const why = mine
      ? `this agent (${owner}) lost track of the run (its claim or result could not be confirmed with GMS); the run was ${
        killed ? "cancelled by request" : "aborted"
      }. Its outcome is unknown: run it again.`
      : killed
      ? `No active execution request found. The agent that ran it (${owner}) is gone; the run was cancelled by request.`
      : `executor ${config.executorId} agent ${owner} stopped renewing its lease at ${
        new Date(lapsedAt!).toISOString()
      }; the run was aborted. Its outcome is unknown: run it again.`;
    const now = Date.now();
    const start = result.value.startTimeMs ?? now;
    // Closing with the owner's token would let it pass for the owner's own result: ours is new,
    // so a write of the owner's between our read and our write makes this one "taken".
    const outcome = await writeOwned(gms, {
      urn: state.urn,
      value: {
        status,
        startTimeMs: start,
        durationMs: Math.max(0, now - start),
        report: `${ownerLine(identity)}\n${why}\n\n${result.value.report ?? ""}`.slice(
          0,
          1_000_000,
        ),
      },
      version: result.version,
      token: newToken(),
      identity,
      leaseTtlMs: ttl,
      attempts: 1,
    });
    if (outcome.kind === "written") {
      log.warn(
        mine
          ? "closed a run this agent lost track of"
          : killed
          ? "cancelled an orphaned run"
          : "aborted a run whose agent is gone",
        { urn: state.urn, owner, status },
      );
      this.#watched.delete(state.urn);
      this.#d.reaped(state.urn, status);
    } else if (outcome.kind === "retry") {
      throw outcome.error; // GMS trouble: the poller backs off
    }
    // taken / closed: another reaper, or the owner wrote meanwhile: fine.
  }
}
