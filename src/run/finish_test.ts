import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { PROGRESS_HEAD_BYTES, PROGRESS_REPORT_BYTES, progressReport, wireBytes } from "./finish.ts";
import { RunLog } from "./run_log.ts";

const OWNER = "[ingest-agent 0.0.0 · executor default · agent host-1-0123abcd]";
const sent = (report: string) => Buffer.byteLength(JSON.stringify(report));

Deno.test("wireBytes: a line's size inside a JSON string, its newline's escape included", () => {
  assert.equal(wireBytes("abc"), 5);
  assert.equal(wireBytes('a"b\\'), 8, "quote and backslash are escaped");
  assert.equal(wireBytes("ü€"), 7, "UTF-8");
  assert.equal(wireBytes("\u001b[0m"), 11, "a control character costs six");
  const lines = ["one", 'two "2"', "drei ü"];
  assert.equal(sent(lines.join("\n")), lines.reduce((a, l) => a + wireBytes(l), 0));
});

Deno.test("progressReport: before any output, the owner and 'No logs yet'", () => {
  const now = Date.now();
  assert.equal(
    progressReport({ owner: OWNER, runLog: undefined, lastLineAt: now, staleAfterMs: 60_000 }),
    `${OWNER}\nNo logs yet`,
  );
});

/** The progress report of `log`, its last line printed `agoMs` ago (stale after 60 s). */
function reportOf(log: RunLog, agoMs = 0): string {
  return progressReport({
    owner: OWNER,
    runLog: log,
    lastLineAt: Date.now() - agoMs,
    staleAfterMs: 60_000,
  });
}

Deno.test("progressReport: a chatty run's report is bounded, first and last lines kept", () => {
  const log = new RunLog();
  for (let i = 1; i <= 10_000; i++) log.add(`${i}: "work" ${"\u001b[1m".repeat(i % 7)}ü`.repeat(3));
  const report = reportOf(log);
  assert.ok(sent(report) <= PROGRESS_REPORT_BYTES, `${sent(report)} B`);
  const lines = report.split("\n");
  assert.equal(lines[0], OWNER);
  assert.ok(lines[1]!.startsWith("1: "), lines[1]);
  const marker = lines.findIndex((l) => /^… \d+ lines \(\d+ bytes\) omitted …$/.test(l));
  assert.ok(marker >= 2, report);
  const head = lines.slice(1, marker);
  assert.ok(head.reduce((a, l) => a + wireBytes(l), 0) <= PROGRESS_HEAD_BYTES);
  assert.ok(lines.at(-1)!.startsWith("10000: "), lines.at(-1));
});

Deno.test("progressReport: the stale note is part of the bound, and the last line stays", () => {
  const log = new RunLog();
  for (let i = 1; i <= 100; i++) log.add(`line ${i} ${"x".repeat(90)}`);
  const report = reportOf(log, 130_000);
  assert.ok(sent(report) <= PROGRESS_REPORT_BYTES, `${sent(report)} B`);
  const lines = report.split("\n");
  assert.match(lines.at(-1)!, /^WARNING: These logs appear to be stale\..*over 120 seconds ago/);
  assert.ok(lines.at(-2)!.startsWith("line 100 "), lines.at(-2));
});

Deno.test("progressReport: a last line longer than the budget shows its end", () => {
  const log = new RunLog();
  log.add("short first line");
  log.add("y".repeat(4_000) + " the end");
  const report = reportOf(log);
  assert.ok(sent(report) <= PROGRESS_REPORT_BYTES, `${sent(report)} B`);
  assert.ok(report.endsWith("y the end"));
  assert.match(report, /\n…y+ the end$/);
});
