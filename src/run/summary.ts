/**
 * The terminal `report` text, laid out like the Python executor's summary (SPEC §4.2) so the UI
 * and users' habits keep working, and the GMS size limit applied the way it does.
 */
import type { ResultValue, TerminalStatus } from "../request.ts";

/** GMS's limit for report + structured report (ACRYL_EXECUTOR_GMS_PAYLOAD_MAX_LENGTH). */
export const MAX_REPORT_CHARS = 15_368_520;

export interface Note {
  at: number;
  level: "INFO" | "ERROR";
  message: string;
}

export interface SummaryInput {
  task: string;
  status: TerminalStatus;
  execId: string;
  notes: Note[];
  /** The Environment Setup section (venv and bundled runtimes), when there is one. */
  setup?: string | undefined;
  /** The report file's JSON text, when there is one. */
  structured?: string | undefined;
  logs: string;
}

const SENTENCES: Record<TerminalStatus, string> = {
  SUCCESS: "Execution finished successfully!",
  FAILURE: "Execution finished with errors.",
  CANCELLED: "Execution was cancelled by request.",
  TIMEOUT: "Execution timed out.",
  ABORTED: "Execution was aborted.",
  DUPLICATE: "Execution was not run: another run of this ingestion source is in progress.",
};

export function summaryText(input: SummaryInput): string {
  const line = (n: Note) => `${pythonTime(n.at)} ${n.level}: ${n.message}`;
  const parts = [
    `~~~~ Execution Summary - ${input.task} ~~~~`,
    SENTENCES[input.status],
    pprintReport(
      input.execId,
      input.notes.filter((n) => n.level === "INFO").map(line),
      input.notes.filter((n) => n.level === "ERROR").map(line),
    ),
  ];
  if (input.setup !== undefined) parts.push("", "~~~~ Environment Setup ~~~~", input.setup);
  if (input.structured !== undefined) {
    parts.push("", "~~~~ Ingestion Report ~~~~", reindent(input.structured));
  }
  parts.push("", "~~~~ Ingestion Logs ~~~~", input.logs);
  return parts.join("\n");
}

/**
 * Applies GMS's size limit: over it, the structured report goes first, then the report is cut,
 * each with the Python executor's warning (SPEC §4.2).
 */
export function fitToLimit(
  execId: string,
  report: string,
  structured: string | undefined,
  max = MAX_REPORT_CHARS,
): { report: string; structured: string | undefined } {
  if (structured !== undefined && report.length + structured.length > max) {
    report =
      `WARNING: ${execId} report and structured report exceeded the combined limit of ${max} chars, so the structured report was removed.\n` +
      report;
    structured = undefined;
  }
  if (report.length > max) {
    const prefix = `WARNING: ${execId} report exceeded limit of ${max} chars and was truncated.\n`;
    report = prefix + report.slice(0, max - prefix.length);
  }
  return { report, structured };
}

/** `datetime.utcnow()` as Python prints it: 2026-11-30 14:00:00.123000 */
export function pythonTime(ms: number): string {
  const iso = new Date(ms).toISOString(); // 2026-11-30T14:00:00.123Z
  return `${iso.slice(0, 10)} ${iso.slice(11, 23)}000`;
}

/** pprint of {'errors': [...], 'exec_id': ..., 'infos': [...]} (keys sorted, as pprint does). */
function pprintReport(execId: string, infos: string[], errors: string[]): string {
  const list = (key: string, items: string[]) => {
    const indent = " ".repeat(key.length + 6);
    if (items.length === 0) return `'${key}': []`;
    return `'${key}': [${items.map(pyRepr).join(`,\n${indent}`)}]`;
  };
  return `{${list("errors", errors)},\n 'exec_id': ${pyRepr(execId)},\n ${list("infos", infos)}}`;
}

function pyRepr(s: string): string {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  const body = s.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/\t/g, "\\t");
  return quote + (quote === "'" ? body.replace(/'/g, "\\'") : body) + quote;
}

function reindent(json: string): string {
  try {
    return JSON.stringify(JSON.parse(json), null, 2);
  } catch {
    return json;
  }
}

/**
 * The terminal result value: report and structured report fitted to GMS's limit, the structured
 * report typed with the task name as the Python executor does.
 */
export function terminalResult(input: {
  task: string;
  status: TerminalStatus;
  execId: string;
  startTimeMs: number;
  report: string;
  structured: string | undefined;
  now?: number;
}): ResultValue {
  const fitted = fitToLimit(input.execId, input.report, input.structured);
  const value: ResultValue = {
    status: input.status,
    startTimeMs: input.startTimeMs,
    durationMs: (input.now ?? Date.now()) - input.startTimeMs,
    report: fitted.report,
  };
  if (fitted.structured !== undefined) {
    value.structuredReport = {
      type: input.task,
      serializedValue: fitted.structured,
      contentType: "application/json",
    };
  }
  return value;
}
