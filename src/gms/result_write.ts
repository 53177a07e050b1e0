/**
 * Every write of a claimed request's result (claim, heartbeat, terminal) goes through
 * `writeOwned`, which never judges a write by its error alone. GMS may apply a write and then
 * lose or spoil the answer (a reset connection, a proxy timeout, a 500 after the commit); a later
 * write on the old version then gets 412 although nobody else touched the result. So after any
 * answer that does not prove the write failed (errors.ts `mayHaveBeenApplied`), or an answer
 * without a version, the result is re-read and judged by what GMS stores:
 *
 *   stored write id = this write's      → it landed: adopt the stored version
 *   not our fencing token               → someone else holds or closed the request: "taken"
 *   ours and already terminal           → "closed" (the caller decides if that is its own result)
 *   ours and RUNNING                    → our write did not land: write again on that version
 *   no result at all (claims only)      → the claim did not land: try the create again
 *
 * At most `attempts` writes per call; what is still undecided comes back as "retry" with the
 * version to use next time (undefined: read first), for the caller's own retry policy.
 */
import { GmsError, isRetryable, mayHaveBeenApplied } from "../errors.ts";
import type { GmsApi } from "./client.ts";
import { type Identity, isOurs, leaseProperties, newWriteId } from "../identity.ts";
import {
  isTerminalStatus,
  type RequestState,
  type ResultValue,
  type Versioned,
} from "../request.ts";

export interface OwnedWrite {
  urn: string;
  value: ResultValue;
  /** The version we believe is stored ("-1": create, the claim); undefined: read first. */
  version: string | undefined;
  /** Our fencing token for this request. */
  token: string;
  /** Owner instances accepted as ours for results written before fencing tokens existed. */
  instances?: readonly string[];
  identity: Identity;
  leaseTtlMs: number;
  /** Stable across calls for one logical write (the outbox's retries); default: a new one. */
  writeId?: string;
  /** Writes per call (default 2: the write, and once more after a re-read). */
  attempts?: number;
}

export type WriteOutcome =
  /** Stored. `state` is the re-read request when the outcome was learnt by reading. */
  | { kind: "written"; version: string; state?: RequestState }
  /** The result is not ours (another agent, a reaper, a person), or the request is gone. */
  | { kind: "taken"; current: Versioned<ResultValue> | undefined; reason: string }
  /** Ours, but already terminal (an earlier write of ours closed it). */
  | { kind: "closed"; current: Versioned<ResultValue> }
  /** Not decided now (GMS trouble): try again later on `version` (undefined: read first). */
  | { kind: "retry"; version: string | undefined; error: GmsError };

export async function writeOwned(
  gms: Pick<GmsApi, "writeResult" | "readRequest">,
  w: OwnedWrite,
): Promise<WriteOutcome> {
  const writeId = w.writeId ?? newWriteId();
  const properties = leaseProperties(w.identity, { token: w.token, ttlMs: w.leaseTtlMs, writeId });
  const attempts = w.attempts ?? 2;
  const create = w.version === "-1";
  let version = w.version;
  let lastError: GmsError | undefined;
  for (let written = 0; written < attempts;) {
    if (version === undefined) {
      let state: RequestState | undefined;
      try {
        state = await gms.readRequest(w.urn);
      } catch (err) {
        if (err instanceof GmsError && isRetryable(err)) {
          return { kind: "retry", version: undefined, error: lastError ?? err };
        }
        throw err;
      }
      const judged = judge(state, w, writeId, create);
      if (judged.kind !== "write") return judged.outcome;
      version = judged.version;
    }
    written++;
    try {
      const stored = await gms.writeResult(w.urn, w.value, { ifVersionMatch: version, properties });
      if (stored !== undefined) return { kind: "written", version: stored };
      version = undefined; // the answer did not say which version: read it
    } catch (err) {
      if (!(err instanceof GmsError) || !(mayHaveBeenApplied(err) || isFencingError(err))) {
        throw err;
      }
      lastError = err;
      version = undefined; // applied or not, raced or not: the stored result decides
    }
  }
  // Out of writes; one last read tells whether the last one landed.
  if (version === undefined && lastError === undefined) {
    lastError = new GmsError("GMS_BAD_RESPONSE", "writeResult", "GMS did not return a version");
  }
  let state: RequestState | undefined;
  try {
    state = await gms.readRequest(w.urn);
  } catch (err) {
    if (err instanceof GmsError && isRetryable(err)) {
      return { kind: "retry", version: undefined, error: lastError! };
    }
    throw err;
  }
  const judged = judge(state, w, writeId, create);
  if (judged.kind !== "write") return judged.outcome;
  return { kind: "retry", version: judged.version, error: lastError! };
}

type Judgement = { kind: "done"; outcome: WriteOutcome } | { kind: "write"; version: string };

function judge(
  state: RequestState | undefined,
  w: OwnedWrite,
  writeId: string,
  create: boolean,
): Judgement {
  const done = (outcome: WriteOutcome): Judgement => ({ kind: "done", outcome });
  if (!state) return done({ kind: "taken", current: undefined, reason: "the request was deleted" });
  const current = state.result;
  if (!current) {
    if (create) return { kind: "write", version: "-1" };
    return done({ kind: "taken", current, reason: "its result was removed" });
  }
  if (current.properties.writeId === writeId) {
    return done({ kind: "written", version: current.version, state });
  }
  if (!isOurs(current.properties, w.token, w.instances)) {
    const by = current.properties.agentInstance ?? current.properties.appSource ?? "someone else";
    return done({
      kind: "taken",
      current,
      reason: `the result is ${current.value.status}, written by ${by}`,
    });
  }
  if (isTerminalStatus(current.value.status)) return done({ kind: "closed", current });
  return { kind: "write", version: current.version };
}

/**
 * A write refused because the stored result is no longer the one we based it on: 412 (version)
 * or 400 with GMS's immutable-state message (the request is closed: SPEC §3.4). Only a hint:
 * the stored result decides.
 */
export function isFencingError(err: unknown): boolean {
  return err instanceof GmsError &&
    (err.code === "GMS_PRECONDITION" ||
      (err.status === 400 && /immutable state/i.test(err.message)));
}
