/**
 * Starting the CLI of a prepared run, or attaching to one an earlier agent started, and the
 * timeout both keep: what the journal needs so that the run can be re-adopted after a restart
 * (the shim's files, the source type, the deadline on the wall clock, the report's notes).
 */
import { rm } from "node:fs/promises";
import path from "node:path";
import type { AgentConfig } from "../config/config.ts";
import type { RunRecord } from "../state/state_dir.ts";
import { type RunFiles, RunProcess } from "./process.ts";
import type { PreparedRun } from "./prepare.ts";
import { RunLog } from "./run_log.ts";
import type { Note } from "./summary.ts";

/** What the journal keeps of a started CLI (RunRecord.adoptable). */
export type Adoptable = NonNullable<RunRecord["adoptable"]>;

/** A run an earlier agent started and journaled, whose claim is still ours (recovery.ts). */
export type AdoptedRun = RunRecord & Required<Pick<RunRecord, "adoptable" | "pgid" | "token">>;

/** Whether a journal entry describes a run that can be attached to. */
export function isAdoptable(run: RunRecord): run is AdoptedRun {
  return run.adoptable !== undefined && run.pgid !== undefined && run.token !== undefined;
}

/** The files of a run that outlive its agent (process.ts). */
export function runFiles(runDir: string): RunFiles {
  return { output: path.join(runDir, "output.raw"), status: path.join(runDir, "exit.status") };
}

/** A run's timeout: its deadline on the wall clock, and the limit's name for the report. */
export interface RunLimits {
  deadlineMs: number;
  timeoutLimit: string;
}

/** The timeout of a run of source type `type` starting now. */
export function runLimits(config: AgentConfig, type: string, now = Date.now()): RunLimits {
  const own = config.ingestion.timeoutsMs[type];
  const timeoutMs = own ?? config.ingestion.taskTimeoutMs;
  const limitName = own !== undefined ? `ingestion.timeouts.${type}` : "ingestion.task_timeout";
  return { deadlineMs: now + timeoutMs, timeoutLimit: `${limitName} (${timeoutMs}ms)` };
}

/**
 * Starts the prepared CLI in `runDir`, its output going to `runLog`. The run's hold on its
 * environment (venv runtime) moves to the CLI's group leader, or is released if it cannot start.
 */
export async function startCli(o: {
  prepared: PreparedRun;
  runDir: string;
  runLog: RunLog;
  notes: readonly Note[];
}): Promise<{ proc: RunProcess; adoptable: Adoptable }> {
  const { prepared, runDir, runLog } = o;
  const files = runFiles(runDir);
  let proc: RunProcess;
  try {
    proc = await RunProcess.start(
      { command: prepared.command, args: prepared.args, cwd: runDir, env: prepared.env },
      files,
      (line) => runLog.add(line),
      runLog.backpressure,
    );
  } catch (err) {
    await prepared.use?.release().catch(() => {});
    throw err;
  }
  await prepared.use?.started(proc.pid, proc.startTime).catch(() => {});
  return {
    proc,
    adoptable: {
      ...files,
      sourceType: prepared.sourceType,
      ...prepared.limits,
      notes: [...o.notes],
    },
  };
}

/**
 * Attaches to a re-adopted run. Its output is read again from the start and run.log is written
 * anew from it, so the log holds every line once whatever the last agent had written.
 */
export async function attachCli(
  run: AdoptedRun,
  redact: (line: string) => string,
): Promise<{ proc: RunProcess; runLog: RunLog }> {
  const file = path.join(run.runDir, "run.log");
  await rm(file, { force: true });
  const runLog = new RunLog({ file, redact });
  const proc = RunProcess.attach(
    { pgid: run.pgid, startTime: run.pgidStart ?? "" },
    run.adoptable,
    (line) => runLog.add(line),
    runLog.backpressure,
  );
  return { proc, runLog };
}
