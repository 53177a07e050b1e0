/**
 * Crash recovery, run once at start before the first poll: every run the journal says a previous
 * agent held is re-adopted or ended.
 *
 * Re-adopted (handed to the agent, which attaches to it: execution.ts) when the run was started
 * under the shim, its claim is still ours (our token, RUNNING; or GMS cannot say now, and the
 * first heartbeat will), and its group leader still runs or it recorded its exit status: the run
 * goes on, or gets its real outcome.
 *
 * Otherwise it is ended. Its processes are killed only when they are provably the run's: the
 * journaled process group while its leader has the journaled start time (never a bare pgid, which
 * a reboot or pid wrap may have given to someone else), and every process carrying the run's
 * marker in its environment (which also finds a run whose agent died between spawn and
 * journaling the pgid). Then the request is closed:
 *   - a result already in the outbox is the one delivery (the journal entry was left by a crash
 *     between queueing the result and removing the entry);
 *   - a fenced run gets nothing (the result is not ours any more);
 *   - otherwise the outcome captured in the journal: exit status, or the cancel reason (user →
 *     CANCELLED, timeout → TIMEOUT, shutdown / lost lease → ABORTED, memory → FAILURE), else
 *     ABORTED ("agent restarted; run interrupted").
 * Results go through the outbox, which writes only if the request is still RUNNING and ours.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import type { GmsApi } from "../gms/client.ts";
import { type Identity, isOurs, ownerLine } from "../identity.ts";
import { type AdoptedRun, isAdoptable } from "../run/execution.ts";
import { removeRunFiles } from "../run/finish.ts";
import { formatBytes, peakNote } from "../run/memory.ts";
import { readExitStatus } from "../run/process.ts";
import { RUN_MARKER_ENV } from "../run/prepare.ts";
import type { Logger } from "../observe/log.ts";
import type { Outbox } from "../state/outbox.ts";
import { groupLeaderRunning, killRunGroup } from "../state/procs.ts";
import { Redactor } from "../run/redact.ts";
import type { ResultValue, TerminalStatus } from "../request.ts";
import type { RunRecord, StateDir } from "../state/state_dir.ts";
import { summaryText, terminalResult } from "../run/summary.ts";

export async function recoverRuns(
  deps: {
    state: StateDir;
    outbox: Outbox;
    identity: Identity;
    log: Logger;
    redactor: Redactor;
    /** Results `outbox.resume()` took (they may be delivered and gone from disk by now). */
    resumed?: readonly string[];
    /** To read whether a run's claim is still ours (without it, nothing is re-adopted). */
    gms?: Pick<GmsApi, "readRequest">;
    /** Takes a run to re-adopt (the agent). */
    adopt?: (run: AdoptedRun) => void;
  },
): Promise<number> {
  const { state, outbox, log } = deps;
  const runs = await state.listRuns();
  const queued = new Set([
    ...(deps.resumed ?? []),
    ...(await state.listResults()).map((r) => r.id),
  ]);
  for (const run of runs) {
    const adoptable = !queued.has(run.id) && run.cancel !== "fenced" && isAdoptable(run);
    const decision = adoptable ? await adoption(run, deps) : "end";
    if (decision === "adopt") {
      log.info("re-adopting a run left by the previous agent", { urn: run.urn, pgid: run.pgid });
      deps.adopt!(run as AdoptedRun);
      continue;
    }
    const killed = await killRunGroup({
      pgid: run.pgid,
      pgidStart: run.pgidStart,
      marker: run.token ? { name: RUN_MARKER_ENV, value: run.token } : undefined,
    });
    if (killed.killed.length > 0) {
      log.warn("killed a run left by the previous agent", { urn: run.urn, killed: killed.killed });
    }
    if (killed.skipped) {
      log.warn("left a process group alone", { urn: run.urn, reason: killed.skipped });
    }
    if (killed.remaining?.length) {
      log.error("processes of a previous run could not be killed", {
        urn: run.urn,
        pids: killed.remaining,
      });
    }
    if (decision === "lost") {
      log.warn("the previous agent's run is not ours any more (the pool closed it); killed it", {
        urn: run.urn,
      });
    } else if (queued.has(run.id)) {
      log.info("the interrupted run's result was already queued; delivering that one", {
        urn: run.urn,
      });
    } else if (run.cancel === "fenced") {
      log.info("the interrupted run had been fenced; nothing to write", { urn: run.urn });
    } else {
      const value = await recoveredResult(run, deps.identity, deps.redactor);
      await outbox.submit({
        urn: run.urn,
        id: run.id,
        instance: run.instance,
        ...(run.token ? { token: run.token } : {}),
        ...(run.version ? { version: run.version } : {}),
        value,
        createdAt: Date.now(),
      });
      log.warn("closed a run interrupted by an agent restart", {
        urn: run.urn,
        status: value.status,
      });
    }
    await removeRunFiles(run.runDir);
    await state.removeRun(run.id);
  }
  return runs.length;
}

/**
 * Whether a journaled run is re-adopted: its process still runs or recorded how it ended, and its
 * claim is ours ("lost": someone else closed or holds it; "end": nothing left to attach to).
 */
async function adoption(
  run: AdoptedRun,
  deps: { gms?: Pick<GmsApi, "readRequest">; adopt?: (run: AdoptedRun) => void; log: Logger },
): Promise<"adopt" | "lost" | "end"> {
  if (!deps.gms || !deps.adopt) return "end";
  const live = groupLeaderRunning(run.pgid, run.pgidStart);
  if (!live && !await readExitStatus(run.adoptable.status)) return "end";
  let state;
  try {
    state = await deps.gms.readRequest(run.urn);
  } catch (err) {
    // GMS cannot say now: the run goes on, and its first heartbeat finds out (fenced → killed).
    deps.log.warn("cannot read a run's claim at start; re-adopting it meanwhile", {
      urn: run.urn,
      error: err,
    });
    return "adopt";
  }
  const result = state?.result;
  const ours = result && isOurs(result.properties, run.token) && result.value.status === "RUNNING";
  return ours ? "adopt" : "lost";
}

/** What the journal says the run ended as (or was stopped for). */
export function recoveredStatus(run: RunRecord): { status: TerminalStatus; message: string } {
  const how = run.exit
    ? `The run ended (${
      run.exit.code !== null ? `exit code ${run.exit.code}` : `signal ${run.exit.signal}`
    }) while the agent was restarting; its result is reported by the next agent.`
    : "agent restarted; run interrupted.";
  switch (run.cancel) {
    case "user":
      return { status: "CANCELLED", message: `${how} It had been cancelled by request.` };
    case "timeout":
      return { status: "TIMEOUT", message: `${how} It had exceeded its timeout and was stopped.` };
    case "shutdown":
      return {
        status: "ABORTED",
        message: `${how} It was stopped because the agent was shutting down.`,
      };
    case "duplicate":
      return { status: "DUPLICATE", message: `${how} Another run of its ingestion source ran.` };
    case "lease":
      return {
        status: "ABORTED",
        message: `${how} It was stopped because its lease on GMS was lost.`,
      };
    case "memory": {
      const peak = run.peakRssBytes ? ` (peak ${formatBytes(run.peakRssBytes)})` : "";
      return {
        status: "FAILURE",
        message: `${how} It had exceeded agent.run_memory_limit${peak} and was stopped.`,
      };
    }
  }
  if (!run.exit) {
    return { status: "ABORTED", message: `${how} The run's outcome is unknown: run it again.` };
  }
  return { status: run.exit.code === 0 ? "SUCCESS" : "FAILURE", message: how };
}

async function recoveredResult(
  run: RunRecord,
  id: Identity,
  agentRedactor: Redactor,
): Promise<ResultValue> {
  const now = Date.now();
  // The agent-wide masks (its own credentials) plus the run's, saved in the journal.
  const redactor = new Redactor();
  redactor.addAll(agentRedactor);
  redactor.addPatterns(run.masks ?? []);
  const { status, message } = recoveredStatus(run);
  const raw = await readFile(path.join(run.runDir, "report.json"), "utf8")
    .then((t) => (JSON.parse(t), t)).catch(() => undefined);
  const structured = run.exit && raw !== undefined ? redactor.mask(raw) : undefined;
  const logs = redactor.mask(
    await readFile(path.join(run.runDir, "run.log"), "utf8").then((t) => t.slice(-200_000))
      .catch(() => ""),
  );
  const peak = peakNote(run.peakRssBytes);
  const report = redactor.mask(summaryText({
    task: run.task,
    status,
    execId: run.id,
    notes: [
      { at: now, level: status === "SUCCESS" ? "INFO" : "ERROR", message },
      ...(peak ? [{ at: now, level: "INFO" as const, message: peak }] : []),
    ],
    structured,
    logs,
  }));
  return terminalResult({
    task: run.task,
    status,
    execId: run.id,
    startTimeMs: run.startTimeMs,
    report: `${ownerLine(id)}\n${report}`,
    structured,
    now,
  });
}
