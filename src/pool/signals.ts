/**
 * The signal loop's work: read the signal aspect of every run this agent holds in one request,
 * and cancel the runs a user asked to KILL.
 */
import type { GmsApi } from "../gms/client.ts";
import type { Job } from "../run/job.ts";

export async function applyKills(
  gms: Pick<GmsApi, "readSignals">,
  jobs: ReadonlyMap<string, Pick<Job, "cancel">>,
): Promise<void> {
  if (jobs.size === 0) return;
  const signals = await gms.readSignals([...jobs.keys()]);
  for (const [urn, signal] of signals) {
    const job = jobs.get(urn);
    if (!job || signal.value.signal !== "KILL") continue;
    // Any KILL counts: one that existed at claim time closed the request before it ran
    // (claim.ts), so GMS's clock never has to be compared with ours.
    job.cancel("user", signal.value.createdAt?.actor, signal.value.createdAt?.time);
  }
}
