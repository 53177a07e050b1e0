import assert from "node:assert/strict";
import type { TerminalStatus } from "../request.ts";
import { fitToLimit, MAX_REPORT_CHARS, type Note, pythonTime, summaryText } from "./summary.ts";

const T0 = Date.UTC(2026, 10, 30, 14, 0, 0, 123);

function summary(over: Partial<Parameters<typeof summaryText>[0]> = {}): string {
  return summaryText({
    task: "RUN_INGEST",
    status: "SUCCESS",
    execId: "exec-1",
    notes: [],
    logs: "log line 1\nlog line 2",
    ...over,
  });
}

Deno.test("pythonTime: datetime.utcnow() format with microseconds", () => {
  assert.equal(pythonTime(T0), "2026-11-30 14:00:00.123000");
  assert.equal(pythonTime(Date.UTC(2026, 0, 2, 3, 4, 5, 6)), "2026-01-02 03:04:05.006000");
  assert.equal(pythonTime(0), "1970-01-01 00:00:00.000000");
});

Deno.test("summaryText: header, sentence, pprint block and logs, in order", () => {
  const notes: Note[] = [
    { at: T0, level: "INFO", message: "Starting execution for task with name=RUN_INGEST" },
    { at: T0 + 1_000, level: "ERROR", message: "Caught exception EXECUTING task" },
    { at: T0 + 2_000, level: "INFO", message: "Finished execution" },
  ];
  const text = summary({ status: "FAILURE", notes });
  const lines = text.split("\n");
  assert.equal(lines[0], "~~~~ Execution Summary - RUN_INGEST ~~~~");
  assert.equal(lines[1], "Execution finished with errors.");
  assert.ok(lines[2]!.startsWith("{'errors': ["), lines[2]);
  assert.ok(text.includes("'2026-11-30 14:00:01.123000 ERROR: Caught exception EXECUTING task'"));
  assert.ok(text.includes("\n 'exec_id': 'exec-1',\n"));
  assert.ok(text.includes("\n 'infos': ['2026-11-30 14:00:00.123000 INFO: Starting execution"));
  assert.ok(text.includes("'2026-11-30 14:00:02.123000 INFO: Finished execution']}"));
  // Errors are not listed among infos and vice versa.
  const errorsPart = text.slice(text.indexOf("'errors'"), text.indexOf("'exec_id'"));
  assert.ok(!errorsPart.includes("INFO:"), errorsPart);
  const infosPart = text.slice(text.indexOf("'infos'"), text.indexOf("~~~~ Ingestion Logs"));
  assert.ok(!infosPart.includes("ERROR:"), infosPart);
  // No structured report: no Ingestion Report section.
  assert.ok(!text.includes("~~~~ Ingestion Report ~~~~"));
  assert.ok(text.endsWith("\n\n~~~~ Ingestion Logs ~~~~\nlog line 1\nlog line 2"), text);
});

Deno.test("summaryText: empty notes give empty lists", () => {
  const text = summary({ execId: "abc" });
  assert.ok(text.includes("{'errors': [],\n 'exec_id': 'abc',\n 'infos': []}"), text);
});

Deno.test("summaryText: one sentence per terminal status", () => {
  const expected: Record<TerminalStatus, string> = {
    SUCCESS: "Execution finished successfully!",
    FAILURE: "Execution finished with errors.",
    CANCELLED: "Execution was cancelled by request.",
    TIMEOUT: "Execution timed out.",
    ABORTED: "Execution was aborted.",
    DUPLICATE: "Execution was not run: another run of this ingestion source is in progress.",
  };
  for (const [status, sentence] of Object.entries(expected)) {
    const lines = summary({ status: status as TerminalStatus }).split("\n");
    assert.equal(lines[1], sentence, status);
  }
});

Deno.test("summaryText: the task name is in the header", () => {
  assert.ok(
    summary({ task: "TEST_CONNECTION" }).startsWith(
      "~~~~ Execution Summary - TEST_CONNECTION ~~~~\n",
    ),
  );
});

Deno.test("summaryText: a structured report is re-indented between the block and the logs", () => {
  const structured = '{"source":{"report":{"events_produced":3}},"sink":{"type":"datahub-rest"}}';
  const text = summary({ structured });
  const reportAt = text.indexOf("\n\n~~~~ Ingestion Report ~~~~\n");
  const logsAt = text.indexOf("\n\n~~~~ Ingestion Logs ~~~~\n");
  assert.ok(reportAt > 0 && logsAt > reportAt, text);
  const body = text.slice(reportAt + "\n\n~~~~ Ingestion Report ~~~~\n".length, logsAt);
  assert.equal(body, JSON.stringify(JSON.parse(structured), null, 2));
  assert.ok(body.includes('\n    "report": {\n      "events_produced": 3'), body);
});

Deno.test("summaryText: a structured report that is not JSON is kept as is", () => {
  const text = summary({ structured: "not { json" });
  assert.ok(text.includes("~~~~ Ingestion Report ~~~~\nnot { json\n\n~~~~ Ingestion Logs ~~~~"));
});

Deno.test("summaryText: quotes, backslashes and newlines in notes are escaped like Python repr", () => {
  const text = summary({
    execId: "e",
    notes: [
      { at: T0, level: "ERROR", message: 'it\'s "bad"\nC:\\x' },
      { at: T0, level: "INFO", message: "it's fine" },
    ],
  });
  assert.ok(text.includes(`'2026-11-30 14:00:00.123000 ERROR: it\\'s "bad"\\nC:\\\\x'`), text);
  assert.ok(text.includes(`"2026-11-30 14:00:00.123000 INFO: it's fine"`), text);
  // The pprint block itself has no raw newline from the message.
  assert.equal(
    text.split("\n")[2],
    `{'errors': ['2026-11-30 14:00:00.123000 ERROR: it\\'s "bad"\\nC:\\\\x'],`,
  );
});

Deno.test("fitToLimit: under the limit nothing changes", () => {
  const out = fitToLimit("id-1", "report", '{"a":1}', 100);
  assert.deepEqual(out, { report: "report", structured: '{"a":1}' });
  assert.deepEqual(fitToLimit("id-1", "r", undefined), { report: "r", structured: undefined });
  assert.equal(MAX_REPORT_CHARS, 15_368_520);
});

Deno.test("fitToLimit: over the combined limit the structured report is dropped first", () => {
  const max = 300;
  const report = "r".repeat(100);
  const structured = "s".repeat(250);
  const out = fitToLimit("id-1", report, structured, max);
  assert.equal(out.structured, undefined);
  assert.equal(
    out.report,
    "WARNING: id-1 report and structured report exceeded the combined limit of 300 chars, so the structured report was removed.\n" +
      report,
  );
  assert.ok(out.report.length <= max);
});

Deno.test("fitToLimit: a report over the limit is truncated with its warning, total ≤ max", () => {
  const max = 200;
  const report = "0123456789".repeat(50);
  const out = fitToLimit("id-2", report, undefined, max);
  const prefix = "WARNING: id-2 report exceeded limit of 200 chars and was truncated.\n";
  assert.ok(out.report.startsWith(prefix), out.report);
  assert.equal(out.report.length, max);
  assert.equal(out.report.slice(prefix.length), report.slice(0, max - prefix.length));
  assert.equal(out.structured, undefined);
});

Deno.test("fitToLimit: both steps apply: structured dropped, then the report truncated", () => {
  const max = 250;
  const out = fitToLimit("id-3", "x".repeat(400), "{}", max);
  assert.equal(out.structured, undefined);
  assert.ok(
    out.report.startsWith(
      "WARNING: id-3 report exceeded limit of 250 chars and was truncated.\nWARNING: id-3 report and structured report exceeded the combined limit",
    ),
    out.report,
  );
  assert.ok(out.report.length <= max);
});

Deno.test("fitToLimit: exactly at the limit is kept", () => {
  const out = fitToLimit("id", "a".repeat(60), "b".repeat(40), 100);
  assert.equal(out.structured, "b".repeat(40));
  assert.equal(out.report, "a".repeat(60));
});

Deno.test("summaryText: multi-item lists align like Python pprint", () => {
  const at = Date.UTC(2026, 10, 30, 14, 0, 0, 123);
  const text = summaryText({
    task: "RUN_INGEST",
    status: "FAILURE",
    execId: "x",
    notes: [
      { at, level: "ERROR", message: "e1" },
      { at, level: "ERROR", message: "e2" },
      { at, level: "INFO", message: "i1" },
      { at, level: "INFO", message: "i2" },
    ],
    logs: "",
  });
  // python3 -c "import pprint; pprint.pprint({'errors': [A, B], 'exec_id': 'x', 'infos': [C, D]})"
  const expected = [
    "{'errors': ['2026-11-30 14:00:00.123000 ERROR: e1',",
    "            '2026-11-30 14:00:00.123000 ERROR: e2'],",
    " 'exec_id': 'x',",
    " 'infos': ['2026-11-30 14:00:00.123000 INFO: i1',",
    "           '2026-11-30 14:00:00.123000 INFO: i2']}",
  ].join("\n");
  assert.ok(text.includes(expected), text);
});
