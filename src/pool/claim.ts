/**
 * Claiming a request: re-read it from GMS's database (search lags), then create its result aspect
 * with `If-Version-Match: -1`. GMS performs the compare-and-set inside its write transaction, so
 * exactly one agent of a pool wins; the others get 412 and move on without noise (SPEC §5.4).
 */
import type { AgentConfig } from "../config/config.ts";
import { GmsError, isRetryable } from "../errors.ts";
import type { Logger } from "../observe/log.ts";
import type { GmsApi } from "../gms/client.ts";
import { type Identity, isOurs, newToken, ownerLine } from "../identity.ts";
import type { Candidate, RequestInput, RequestState, ResultValue } from "../request.ts";
import { writeOwned } from "../gms/result_write.ts";

export type ClaimOutcome =
  | {
    kind: "claimed";
    request: RequestState & { input: RequestInput };
    version: string;
    startTimeMs: number;
    /** Our fencing token for this request. */
    token: string;
  }
  /** Cancelled (KILL) while it was pending: closed as CANCELLED without running. */
  | { kind: "cancelled" }
  /** Another agent won the race. */
  | { kind: "lost" }
  /**
   * Not claimed: the request is gone or already has a result (`gone`: discovery was stale), has
   * no input, or is left pending for now.
   */
  | { kind: "skip"; reason: string; gone?: boolean }
  /**
   * GMS failed to answer the claim and could not be re-read: the claim may have landed. The
   * agent keeps the token and asks again (`settleClaim`) before anything else is decided.
   */
  | { kind: "uncertain"; token: string; startTimeMs: number; error: GmsError };

export async function claimRequest(
  gms: Pick<GmsApi, "readRequest" | "writeResult">,
  urn: string,
  id: Identity,
  leaseTtlMs: number,
  now = Date.now(),
  /**
   * Decides from the request as read: a value instead of RUNNING (to close it directly: too old,
   * a duplicate), `leave` it pending (not now: scheduling), or undefined: claim it.
   */
  decide?: (
    start: number,
    request: RequestState & { input: RequestInput },
  ) => ResultValue | { leave: string } | undefined,
): Promise<ClaimOutcome> {
  const request = await gms.readRequest(urn);
  if (!request) return { kind: "skip", reason: "deleted", gone: true };
  if (request.result) {
    return { kind: "skip", reason: `already ${request.result.value.status}`, gone: true };
  }
  if (!request.input) return { kind: "skip", reason: "no input aspect" };
  const decided = decide?.(now, { ...request, input: request.input });
  if (decided && "leave" in decided) return { kind: "skip", reason: decided.leave };
  // A user may cancel a request that is still pending: it is closed without running.
  const kill = request.signal?.value.signal === "KILL" ? request.signal.value : undefined;
  const value: ResultValue = kill
    ? {
      status: "CANCELLED",
      startTimeMs: now,
      durationMs: 0,
      report: `${ownerLine(id)}\nExecution was cancelled by request before it started${
        kill.createdAt?.actor ? ` (by ${kill.createdAt.actor})` : ""
      }; it was not run.`,
    }
    : decided ??
      {
        status: "RUNNING",
        startTimeMs: now,
        durationMs: 0,
        report: `${ownerLine(id)}\nClaimed; starting.`,
      };
  const token = newToken();
  const outcome = await writeOwned(gms, {
    urn,
    value,
    version: "-1",
    token,
    identity: id,
    leaseTtlMs,
  });
  switch (outcome.kind) {
    case "written":
      if (kill) return { kind: "cancelled" };
      return {
        kind: "claimed",
        request: { ...request, input: request.input },
        version: outcome.version,
        startTimeMs: now,
        token,
      };
    case "taken":
    case "closed":
      return { kind: "lost" };
    case "retry":
      return { kind: "uncertain", token, startTimeMs: now, error: outcome.error };
  }
}

/**
 * Settles an uncertain claim by reading what GMS stores: our RUNNING claim → claimed (the run
 * starts now, once); no result → "skip" (the claim did not land; the request is pending again);
 * anything else → lost. GMS errors propagate (still uncertain).
 */
export async function settleClaim(
  gms: Pick<GmsApi, "readRequest">,
  urn: string,
  token: string,
  startTimeMs: number,
): Promise<ClaimOutcome> {
  const request = await gms.readRequest(urn);
  if (!request) return { kind: "skip", reason: "deleted" };
  const result = request.result;
  if (!result) return { kind: "skip", reason: "the claim did not land" };
  if (!isOurs(result.properties, token)) return { kind: "lost" };
  if (result.value.status !== "RUNNING") return { kind: "cancelled" };
  if (!request.input) return { kind: "skip", reason: "no input aspect" };
  return {
    kind: "claimed",
    request: { ...request, input: request.input },
    version: result.version,
    startTimeMs: result.value.startTimeMs ?? startTimeMs,
    token,
  };
}

/** A claim whose answer was lost: settled by reading before anything else is decided. */
export interface UncertainClaim {
  token: string;
  startTimeMs: number;
  useReservedSlot: boolean;
}

/** The agent's claims still to settle; each holds its slot like a job. */
export class UncertainClaims {
  readonly #claims = new Map<string, UncertainClaim>();
  get size(): number {
    return this.#claims.size;
  }
  /** How many hold an ordinary slot. */
  get unreserved(): number {
    let n = 0;
    for (const u of this.#claims.values()) if (!u.useReservedSlot) n++;
    return n;
  }
  /** Whether one holds the reserved (TEST_CONNECTION) slot. */
  get holdsReserved(): boolean {
    return [...this.#claims.values()].some((u) => u.useReservedSlot);
  }
  has(urn: string): boolean {
    return this.#claims.has(urn);
  }
  set(urn: string, claim: UncertainClaim): void {
    this.#claims.set(urn, claim);
  }
  delete(urn: string): void {
    this.#claims.delete(urn);
  }
  /** A copy: settling deletes while iterating. */
  entries(): [string, UncertainClaim][] {
    return [...this.#claims];
  }
}

/**
 * Runs one candidate's step. GMS trouble (unreachable, 5xx, 429, 401/403) ends the poll so the
 * poller backs off; anything else is about this one candidate (a request GMS cannot render, a
 * refused write) and must not keep the others from being claimed.
 */
export async function perCandidate(
  c: Candidate,
  log: Logger,
  fn: () => Promise<boolean>,
): Promise<boolean> {
  try {
    return await fn();
  } catch (err) {
    if (isRetryable(err) || (err instanceof GmsError && err.code === "GMS_AUTH")) throw err;
    log.warn("skipping a request this poll", { urn: c.urn, error: err });
    return false;
  }
}

/**
 * Closes a request without running it, through a claim (so only one agent of a pool does it):
 * too old (ABORTED), or a duplicate of a running one (DUPLICATE). Resolves the claim's outcome.
 */
export function closeUnrun(
  gms: Pick<GmsApi, "readRequest" | "writeResult">,
  urn: string,
  o: { identity: Identity; config: AgentConfig },
  status: "ABORTED" | "DUPLICATE",
  why: string,
): Promise<ClaimOutcome> {
  return claimRequest(gms, urn, o.identity, o.config.agent.leaseTtlMs, Date.now(), (start) => ({
    status,
    startTimeMs: start,
    durationMs: 0,
    report: `${ownerLine(o.identity)}\n${why}`,
  }));
}

/** The report of a request nobody picked up within max_request_age. */
export function staleReason(executorId: string, waitedMs: number): string {
  return `This request waited ${Math.round(waitedMs / 60000)} minutes (longer than ` +
    `agent.max_request_age) and no agent for executor '${executorId}' picked it up, so it was ` +
    "not run. Run it again if it is still wanted.";
}

/** The report of a request closed because its ingestion source already runs. */
export function duplicateReason(of: string): string {
  return `Not run: ${of} of the same ingestion source is running (agent.on_overlap: skip). ` +
    "Run it again once that run has ended, if it is still wanted.";
}
