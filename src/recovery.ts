/**
 * Crash recovery, run once at start before the first poll: every run the journal says a previous
 * agent held is ended. A process group still alive from the previous agent is killed; then the
 * request is closed with its captured outcome if the CLI had exited, else as ABORTED ("agent
 * restarted; run interrupted"). Results go through the outbox, which writes only if the request
 * is still RUNNING and owned by that previous instance. No orphan survives a restart, no request
 * stays RUNNING.
 */
import { readFile, rm } from "node:fs/promises";
import path from "node:path";
import process from "node:process";
import { type Identity, ownerLine } from "./identity.ts";
import type { Logger } from "./log.ts";
import type { Outbox } from "./outbox.ts";
import { sleep } from "./process.ts";
import type { Redactor } from "./redact.ts";
import type { ResultValue, TerminalStatus } from "./request.ts";
import { alive, type RunRecord, type StateDir } from "./state.ts";
import { summaryText, terminalResult } from "./summary.ts";

export async function recoverRuns(
  deps: { state: StateDir; outbox: Outbox; identity: Identity; log: Logger; redactor: Redactor },
): Promise<number> {
  const runs = await deps.state.listRuns();
  for (const run of runs) {
    if (run.pgid && alive(-run.pgid)) {
      deps.log.warn("killing a run left by the previous agent", { urn: run.urn, pgid: run.pgid });
      try {
        process.kill(-run.pgid, "SIGKILL");
      } catch { /* gone meanwhile */ }
      for (let i = 0; i < 50 && alive(-run.pgid); i++) await sleep(100);
    }
    const value = await recoveredResult(run, deps.identity, deps.redactor);
    await deps.outbox.submit({
      urn: run.urn,
      id: run.id,
      instance: run.instance,
      value,
      createdAt: Date.now(),
    });
    await rm(path.join(run.runDir, "recipe.json"), { force: true });
    await rm(path.join(run.runDir, "report.json"), { force: true });
    await deps.state.removeRun(run.id);
    deps.log.warn("closed a run interrupted by an agent restart", {
      urn: run.urn,
      status: value.status,
    });
  }
  return runs.length;
}

async function recoveredResult(
  run: RunRecord,
  id: Identity,
  redactor: Redactor,
): Promise<ResultValue> {
  const now = Date.now();
  let status: TerminalStatus = "ABORTED";
  let message = "agent restarted; run interrupted. The run's outcome is unknown: run it again.";
  if (run.exit) {
    status = run.exit.code === 0 ? "SUCCESS" : "FAILURE";
    message = `The run ended (${
      run.exit.code !== null ? `exit code ${run.exit.code}` : `signal ${run.exit.signal}`
    }) while the agent was restarting; its result is reported by the next agent.`;
  }
  const structured = await readFile(path.join(run.runDir, "report.json"), "utf8")
    .then((t) => (JSON.parse(t), t)).catch(() => undefined);
  const logs = await readFile(path.join(run.runDir, "run.log"), "utf8").then((t) =>
    t.slice(-200_000)
  ).catch(() => "");
  const report = redactor.mask(summaryText({
    task: run.task,
    status,
    execId: run.id,
    notes: [{ at: now, level: status === "SUCCESS" ? "INFO" : "ERROR", message }],
    structured: run.exit ? structured : undefined,
    logs,
  }));
  return terminalResult({
    task: run.task,
    status,
    execId: run.id,
    startTimeMs: run.startTimeMs,
    report: `${ownerLine(id)}\n${report}`,
    structured: run.exit ? structured : undefined,
    now,
  });
}
