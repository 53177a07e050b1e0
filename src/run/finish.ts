/**
 * Finishing one run: what its ending means (exit status, or why it was stopped) and the terminal
 * result written for it (the Python executor's report layout, masked, fitted to GMS's limit).
 */
import { Buffer } from "node:buffer";
import { readFile } from "node:fs/promises";
import type { ResultValue, TerminalStatus } from "../request.ts";
import { removeFiles } from "../state/private_fs.ts";
import type { ProcessExit } from "./process.ts";
import { memoryExceededNote, peakNote } from "./memory.ts";
import type { RunLog } from "./run_log.ts";
import { type Note, summaryText, terminalResult } from "./summary.ts";

/** Why a run was stopped before it ended by itself. Values appear in reports: keep them stable. */
export type CancelReason =
  | "user"
  | "timeout"
  | "shutdown"
  | "fenced"
  | "lease"
  | "duplicate"
  | "memory";

/** How a cancelled run ends. */
export function cancelStatus(cancel: CancelReason | undefined): TerminalStatus | undefined {
  switch (cancel) {
    case "user":
      return "CANCELLED";
    case "timeout":
      return "TIMEOUT";
    case "shutdown":
    case "lease":
      return "ABORTED";
    case "duplicate":
      return "DUPLICATE";
    case "memory":
      return "FAILURE";
    default:
      return undefined;
  }
}

/** What the report says about a cancel. */
export interface CancelDetails {
  cancel: CancelReason | undefined;
  /** "by <actor> at <time>" of a user's KILL. */
  cancelledBy?: string;
  /** The limit a timeout exceeded, e.g. "ingestion.task_timeout (60000ms)". */
  timeoutLimit?: string;
  /** How long GMS had not accepted a heartbeat when the lease was lost. */
  leaseLostAfterMs?: number;
  /** agent.run_memory_limit and the run's peak (memory.ts), for a run stopped for memory. */
  memory?: { limitBytes: number; peakBytes: number } | undefined;
}

/** "by <actor> at <time>" of a cancel, as the report says it. */
export function cancelledBy(by: string | undefined, at: number | undefined): string {
  return [by ? `by ${by}` : "", at ? `at ${new Date(at).toISOString()}` : ""].filter(Boolean)
    .join(" ");
}

/** The status of a run that exited, with the report's note(s) about it. */
export function exitOutcome(
  task: string,
  exit: ProcessExit,
  d: CancelDetails,
  note: (level: Note["level"], message: string) => void,
): TerminalStatus {
  const cancelled = cancelStatus(d.cancel);
  if (cancelled) {
    if (d.cancel === "user") {
      note(
        "INFO",
        `Ingestion task was cancelled${d.cancelledBy ? ` ${d.cancelledBy}` : ""}`,
      );
    } else if (d.cancel === "timeout") {
      note("ERROR", `The run exceeded ${d.timeoutLimit} and was stopped`);
    } else if (d.cancel === "lease") {
      note("ERROR", leaseLostNote(d.leaseLostAfterMs));
    } else if (d.cancel === "memory") {
      note("ERROR", memoryExceededNote(d.memory));
    } else {
      note("ERROR", "The run was stopped because the agent is shutting down");
    }
    return cancelled;
  }
  const what = task === "TEST_CONNECTION"
    ? "'datahub ingest --test-source-connection'"
    : "'datahub ingest'";
  if (exit.code === 0) {
    note("INFO", `Successfully executed ${what}`);
    return "SUCCESS";
  }
  if (exit.code === null && exit.signal === null) {
    note("ERROR", `${what} ended while no agent watched it, and its exit status was not recorded`);
    return "FAILURE";
  }
  if (exit.signal === "SIGKILL" || exit.code === 137) {
    note(
      "ERROR",
      exit.signal
        ? `The ingestion process was killed by signal ${exit.signal} likely because it ran out of memory. You can resolve this issue by allocating more memory to the machine or container running ingest-agent.`
        : "The ingestion process was terminated with exit code 137, likely because it ran out of memory. You can resolve this issue by allocating more memory to the machine or container running ingest-agent.",
    );
  } else if (exit.signal) {
    note("ERROR", `Failed to execute ${what}: killed by signal ${exit.signal}`);
  } else {
    note("INFO", `Failed to execute ${what}, exit code ${exit.code}`);
  }
  return "FAILURE";
}

export interface TerminalInput {
  status: TerminalStatus;
  /** The report's notes so far; the ones added here are masked with `mask`. */
  notes: Note[];
  runLog: RunLog | undefined;
  /** `host:path` of run.log, for the report. */
  runLogAt: string;
  structured: string | undefined;
  reportFileText: string | undefined;
  mask: (text: string) => string;
  /** The run's peak memory (memory.ts), when measured. */
  peakRssBytes?: number | undefined;
  /** The Environment Setup section (runtime.ts), masked already. */
  setup?: string | undefined;
}

/** The terminal result value of a run. */
export async function terminalValue(
  run: { task: string; id: string; startTimeMs: number },
  t: TerminalInput,
): Promise<ResultValue> {
  const note = (level: Note["level"], message: string) =>
    t.notes.push({ at: Date.now(), level, message: t.mask(message) });
  await t.runLog?.close();
  let logs = t.runLog ? t.runLog.text() : "";
  if (t.reportFileText !== undefined) {
    note("ERROR", "The CLI's report file is not JSON; its text is kept in the logs below");
    logs += `\n~~~~ Report file (not JSON) ~~~~\n${t.mask(t.reportFileText)}`;
  }
  const peak = peakNote(t.peakRssBytes);
  if (peak) note("INFO", peak);
  if (t.runLog) {
    const where = t.runLogAt;
    note(
      "INFO",
      t.runLog.omitted > 0
        ? `${t.runLog.omitted} log lines are omitted below; the full log is kept at ${where}`
        : `The full log is kept at ${where}`,
    );
  }
  const maskedStructured = t.structured === undefined ? undefined : t.mask(t.structured);
  const summary = t.mask(summaryText({
    task: run.task,
    status: t.status,
    execId: run.id,
    notes: t.notes,
    setup: t.setup,
    structured: maskedStructured,
    logs,
  }));
  return terminalResult({
    task: run.task,
    status: t.status,
    execId: run.id,
    startTimeMs: run.startTimeMs,
    report: summary,
    structured: maskedStructured,
  });
}

/**
 * The note of a run stopped before its CLI started (while it was prepared, its environment
 * built): the one a run stopped while its CLI ran gets, or the duplicate's.
 */
export function stoppedNote(d: CancelDetails): Note | undefined {
  const at = Date.now();
  if (d.cancel === "duplicate") {
    return {
      at,
      level: "INFO",
      message:
        `Not run: ${d.cancelledBy?.replace(/^by /, "")} of the same ingestion source was claimed ` +
        "at the same time and runs (the older request, or the one claimed first, wins)",
    };
  }
  let note: Note | undefined;
  if (cancelStatus(d.cancel)) {
    exitOutcome("", { code: null, signal: null }, d, (level, message) => {
      note ??= { at, level, message };
    });
  }
  return note;
}

/** What a run stopped for lack of a lease says. */
export function leaseLostNote(afterMs: number | undefined): string {
  const after = afterMs === undefined ? "" : ` for ${Math.round(afterMs / 1000)} s`;
  return `GMS did not accept a heartbeat${after}, longer than the lease (agent.lease_ttl) allows, so the run was stopped: ` +
    "another agent of the pool may already have closed this request, and a request must never run twice. Run it again.";
}

/** Reads the CLI's report file: JSON → structured report; anything else → kept as text. */
export async function readReportFile(
  file: string,
): Promise<{ structured?: string; text?: string }> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch {
    return {};
  }
  try {
    JSON.parse(text);
    return { structured: text };
  } catch {
    return { text };
  }
}

/**
 * Bound of a RUNNING progress report, in bytes as sent: each line's UTF-8 inside the JSON string,
 * escapes and its "\n" included (`wireBytes`). Owner line, stale-output note and marker count
 * too; the log's first lines get up to PROGRESS_HEAD_BYTES of it, its last lines the rest. A
 * changed report is written every 2 s while a run prints (reporter.ts) and each write is a
 * stored aspect version: with its other fields (~430 B, and the host name thrice), one progress
 * write stays near 1.5 KB whatever the run prints.
 */
export const PROGRESS_REPORT_BYTES = 1_024;
export const PROGRESS_HEAD_BYTES = 200;
/** Kept for the marker line ("… N lines (B bytes) omitted …"). */
const MARKER_BYTES = 64;

/** What a line costs in a report sent as JSON: its escaped UTF-8 bytes, and 2 for its "\n". */
export function wireBytes(line: string): number {
  return Buffer.byteLength(JSON.stringify(line)); // the two quotes stand for the "\n"
}

/** The RUNNING report of a run: owner, head and tail of its output, a stale-output note. */
export function progressReport(p: {
  owner: string;
  runLog: RunLog | undefined;
  lastLineAt: number;
  staleAfterMs: number;
  /** Default PROGRESS_REPORT_BYTES. */
  bytes?: number;
}): string {
  const log = p.runLog;
  const silentMs = Date.now() - p.lastLineAt;
  let stale: string | undefined;
  if (silentMs >= p.staleAfterMs) {
    // Rounded to the stale period, so a silent run does not cause a write every heartbeat.
    const since = new Date(p.lastLineAt).toISOString();
    const minutes = Math.floor(silentMs / p.staleAfterMs) * Math.round(p.staleAfterMs / 1000);
    stale =
      `WARNING: These logs appear to be stale. No new logs have been received since ${since} (over ${minutes} seconds ago). ` +
      "However, the ingestion process still appears to be running and may complete normally.";
  }
  const lines = [p.owner];
  if (!log || log.lines === 0) lines.push("No logs yet");
  else {
    const left = (p.bytes ?? PROGRESS_REPORT_BYTES) - wireBytes(p.owner) - MARKER_BYTES -
      (stale ? wireBytes(stale) : 0);
    const head = Math.min(PROGRESS_HEAD_BYTES, Math.max(0, left) / 4);
    lines.push(log.excerpt(head, Math.max(0, left - head), wireBytes));
  }
  if (stale) lines.push(stale);
  return lines.join("\n");
}

/** Files of a run directory that never outlive the run: secrets in clear, or read already. */
const RUN_FILES = [
  "recipe.json",
  "report.json",
  "output.raw",
  "exit.status",
  "exit.status.tmp",
];

/** Removes the recipe, the raw output and the CLI's report and exit status (already read). */
export function removeRunFiles(runDir: string): Promise<void> {
  return removeFiles(runDir, RUN_FILES);
}

/** The fields of the agent's "run finished" line. */
export function finishedFields(
  status: TerminalStatus,
  value: ResultValue,
  cancel: CancelReason | undefined,
  notes: readonly Note[],
  peakRssBytes: number | undefined,
): Record<string, unknown> {
  return {
    status,
    duration_ms: value.durationMs,
    cancel_reason: cancel,
    reason: status === "SUCCESS" ? undefined : failureReason(notes),
    peak_rss_bytes: peakRssBytes || undefined,
  };
}

/** Why a run did not succeed, in one line for the agent's log: its last error note (masked). */
export function failureReason(notes: readonly Note[]): string | undefined {
  const note = notes.findLast((n) => n.level === "ERROR") ??
    notes.findLast((n) => n.message.startsWith("Failed to execute"));
  return note === undefined ? undefined : note.message.split("\n")[0]!.slice(0, 300);
}
