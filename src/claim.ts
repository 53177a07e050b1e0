/**
 * Claiming a request: re-read it from GMS's database (search lags), then create its result aspect
 * with `If-Version-Match: -1`. GMS performs the compare-and-set inside its write transaction, so
 * exactly one agent of a pool wins; the others get 412 and move on without noise (SPEC §5.4).
 */
import { GmsError } from "./errors.ts";
import type { GmsApi } from "./gms/client.ts";
import { type Identity, leaseProperties, ownerLine } from "./identity.ts";
import type { RequestInput, RequestState, ResultValue } from "./request.ts";

export type ClaimOutcome =
  | {
    kind: "claimed";
    request: RequestState & { input: RequestInput };
    version: string;
    startTimeMs: number;
  }
  /** Cancelled (KILL) while it was pending: closed as CANCELLED without running. */
  | { kind: "cancelled" }
  /** Another agent won the race. */
  | { kind: "lost" }
  /** The request is gone, already has a result, or has no input. */
  | { kind: "skip"; reason: string };

export async function claimRequest(
  gms: Pick<GmsApi, "readRequest" | "writeResult">,
  urn: string,
  id: Identity,
  leaseTtlMs: number,
  now = Date.now(),
  /** Overrides the RUNNING value (e.g. to close a stale request directly). */
  initial?: (start: number) => ResultValue,
): Promise<ClaimOutcome> {
  const request = await gms.readRequest(urn);
  if (!request) return { kind: "skip", reason: "deleted" };
  if (request.result) return { kind: "skip", reason: `already ${request.result.value.status}` };
  if (!request.input) return { kind: "skip", reason: "no input aspect" };
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
    : initial?.(now) ??
      {
        status: "RUNNING",
        startTimeMs: now,
        durationMs: 0,
        report: `${ownerLine(id)}\nClaimed; starting.`,
      };
  try {
    const version = await gms.writeResult(urn, value, {
      ifVersionMatch: "-1",
      properties: leaseProperties(id, now + leaseTtlMs),
    });
    if (kill) return { kind: "cancelled" };
    return {
      kind: "claimed",
      request: { ...request, input: request.input },
      version,
      startTimeMs: now,
    };
  } catch (err) {
    if (err instanceof GmsError && err.code === "GMS_PRECONDITION") return { kind: "lost" };
    throw err;
  }
}
