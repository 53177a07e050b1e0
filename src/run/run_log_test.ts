import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Buffer } from "node:buffer";
import { HEAD_BYTES, RunLog, TAIL_LINES } from "./run_log.ts";

function numbered(n: number, from = 1): string[] {
  return Array.from({ length: n }, (_, i) => `line-${i + from}`);
}

Deno.test("RunLog: keeps a head up to headBytes, a tail of tailLines, and counts the rest", () => {
  // "line-1\n" and "line-2\n" fill 14 of 20 bytes; "line-3\n" would exceed them.
  const log = new RunLog({ headBytes: 20, tailLines: 3 });
  for (const l of numbered(10)) log.add(l);
  assert.equal(log.lines, 10);
  assert.equal(log.omitted, 5);
  assert.equal(
    log.text(),
    ["line-1", "line-2", "… 5 lines omitted …", "line-8", "line-9", "line-10"].join("\n"),
  );
});

Deno.test("RunLog: nothing omitted, no marker", () => {
  const log = new RunLog({ headBytes: 20, tailLines: 3 });
  for (const l of numbered(5)) log.add(l);
  assert.equal(log.omitted, 0);
  assert.equal(log.text(), numbered(5).join("\n"));
  assert.ok(!log.text().includes("omitted"));
});

Deno.test("RunLog: a single omitted line is marked too", () => {
  const log = new RunLog({ headBytes: 7, tailLines: 1 });
  for (const l of numbered(3)) log.add(l);
  assert.equal(log.omitted, 1);
  assert.equal(log.text(), ["line-1", "… 1 lines omitted …", "line-3"].join("\n"));
});

Deno.test("RunLog: an empty log has empty text", () => {
  const log = new RunLog();
  assert.equal(log.lines, 0);
  assert.equal(log.omitted, 0);
  assert.equal(log.text(), "");
  assert.equal(log.lastLineAt, undefined);
});

Deno.test("RunLog: the head stops at the first line that does not fit (no later small lines)", () => {
  const log = new RunLog({ headBytes: 10, tailLines: 2 });
  log.add("aaaa"); // 5 bytes
  log.add("bbbbbbbbbbbb"); // does not fit: head closes
  log.add("c"); // would fit, but the head is closed
  log.add("d");
  log.add("e");
  assert.equal(log.text(), ["aaaa", "… 2 lines omitted …", "d", "e"].join("\n"));
});

Deno.test("RunLog: head, marker and tail stay in order after the ring wraps many times", () => {
  const log = new RunLog({ headBytes: 8, tailLines: 4 });
  for (const l of numbered(1_003)) log.add(l);
  const lines = log.text().split("\n");
  assert.deepEqual(lines, [
    "line-1",
    "… 998 lines omitted …",
    "line-1000",
    "line-1001",
    "line-1002",
    "line-1003",
  ]);
});

Deno.test("RunLog: changes counts every line; lastLineAt is set", () => {
  const log = new RunLog({ headBytes: 8, tailLines: 2 });
  const before = log.changes;
  for (const l of numbered(7)) log.add(l);
  assert.equal(log.changes - before, 7);
  assert.equal(typeof log.lastLineAt, "number");
});

Deno.test("RunLog: redact is applied to what is kept", () => {
  const log = new RunLog({ redact: (l) => l.replaceAll("s3cret", "********") });
  log.add("password=s3cret");
  assert.equal(log.text(), "password=********");
});

const MARKER = /^… (\d+) lines \((\d+) bytes\) omitted …$/;

Deno.test("RunLog.excerpt: bounded by head + tail budgets plus the marker", () => {
  const log = new RunLog({ headBytes: 1_000, tailLines: 100 });
  for (const l of numbered(500)) log.add(`${l} ${"x".repeat(20)}`);
  const headChars = 100;
  const tailChars = 120;
  const ex = log.excerpt(headChars, tailChars);
  const parts = ex.split("\n");
  const markerIndex = parts.findIndex((p) => MARKER.test(p));
  assert.ok(markerIndex > 0, ex);
  const head = parts.slice(0, markerIndex);
  const tail = parts.slice(markerIndex + 1);
  assert.ok(head.join("\n").length <= headChars, `head ${head.join("\n").length}`);
  assert.ok(tail.join("\n").length <= tailChars, `tail ${tail.join("\n").length}`);
  assert.ok(head.length > 0 && tail.length > 0, ex);
  assert.ok(head[0]!.startsWith("line-1 "));
  assert.ok(tail.at(-1)!.startsWith("line-500 "));
  // The marker accounts for every line not shown, and for its bytes.
  const [, lines, bytes] = MARKER.exec(parts[markerIndex]!)!;
  assert.equal(Number(lines), 500 - head.length - tail.length);
  const all = numbered(500).map((l) => `${l} ${"x".repeat(20)}\n`).join("");
  const shown = [...head, ...tail].map((l) => l + "\n").join("");
  assert.equal(Number(bytes), all.length - shown.length);
  // Consecutive: the tail is the last lines, in order.
  const firstTail = Number(/^line-(\d+) /.exec(tail[0]!)![1]);
  tail.forEach((l, i) => assert.ok(l.startsWith(`line-${firstTail + i} `), l));
});

Deno.test("RunLog.excerpt: a short log is shown whole, without marker", () => {
  const log = new RunLog();
  for (const l of numbered(3)) log.add(l);
  assert.equal(log.excerpt(1_000, 1_000), numbered(3).join("\n"));
});

Deno.test("RunLog.excerpt: tail lines come from the head when the log is small", () => {
  const log = new RunLog();
  for (const l of numbered(10)) log.add(l); // all in the head
  const ex = log.excerpt(14, 16); // "line-1\nline-2" and "line-9\nline-10"
  assert.equal(
    ex,
    ["line-1", "line-2", "… 6 lines (42 bytes) omitted …", "line-9", "line-10"].join("\n"),
  );
});

Deno.test("RunLog.excerpt: lines are measured by the given size, bytes counted as UTF-8", () => {
  const log = new RunLog();
  for (const l of ["first", "ünïcödé 1", "ünïcödé 2", "ünïcödé 3", "last"]) log.add(l);
  // Each "ünïcödé n" is 14 bytes of UTF-8 with its newline; by characters it would be 10.
  const bytes = (l: string) => Buffer.byteLength(l) + 1;
  assert.equal(
    log.excerpt(6, 19, bytes),
    ["first", "… 2 lines (28 bytes) omitted …", "ünïcödé 3", "last"].join("\n"),
  );
  assert.equal(
    log.excerpt(6, 25), // by characters: two of them fit besides "last"
    ["first", "… 1 lines (14 bytes) omitted …", "ünïcödé 2", "ünïcödé 3", "last"].join("\n"),
  );
});

Deno.test("RunLog.excerpt: a last line bigger than the tail budget shows its end, cut", () => {
  const log = new RunLog();
  log.add("start");
  log.add("a".repeat(3_000) + "THE END");
  const ex = log.excerpt(6, 100);
  const [first, last, ...rest] = ex.split("\n");
  assert.equal(first, "start");
  assert.deepEqual(rest, [], "no marker: every line is shown, one of them cut");
  assert.ok(last!.startsWith("…a") && last!.endsWith("THE END"), last);
  assert.equal(last!.length + 1, 100, "as much of it as the budget allows");
  // Alone in a log whose head budget is too small for it: still its end.
  const one = new RunLog();
  one.add("😀".repeat(100)); // surrogate pairs: never cut in half
  const cut = one.excerpt(0, 11);
  assert.equal(cut, "…" + "😀".repeat(4));
});

Deno.test("RunLog.excerpt: masked lines are counted as masked", () => {
  const log = new RunLog({ redact: (l) => l.replaceAll("hunter2", "*") });
  for (let i = 0; i < 5; i++) log.add(`password ${i} hunter2`);
  // Shown: the first and last lines ("password n *", 13 bytes each); omitted: three of them.
  assert.equal(
    log.excerpt(13, 13),
    ["password 0 *", "… 3 lines (39 bytes) omitted …", "password 4 *"].join("\n"),
  );
});

Deno.test("RunLog: writes the full redacted log to its file", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "run-log-test-"));
  try {
    const file = path.join(dir, "run.log");
    const log = new RunLog({
      file,
      headBytes: 10,
      tailLines: 2,
      redact: (l) => l.replaceAll("hunter2", "********"),
    });
    const lines = [...numbered(20), "password: hunter2", "done"];
    for (const l of lines) log.add(l);
    await log.close();
    const content = await readFile(file, "utf8");
    assert.equal(
      content,
      [...numbered(20), "password: ********", "done"].map((l) => l + "\n").join(""),
    );
    assert.ok(!content.includes("hunter2"));
    // Memory kept only head and tail.
    assert.ok(log.omitted > 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

Deno.test("RunLog: close without a file resolves", async () => {
  const log = new RunLog();
  log.add("x");
  await log.close();
});

Deno.test("RunLog: 100k lines keep the tail at tailLines", () => {
  const log = new RunLog({ headBytes: 100, tailLines: 50 });
  for (let i = 1; i <= 100_000; i++) log.add(`line-${i}`);
  assert.equal(log.lines, 100_000);
  const parts = log.text().split("\n");
  const markerIndex = parts.findIndex((p) => p.includes("lines omitted"));
  const head = parts.slice(0, markerIndex);
  const tail = parts.slice(markerIndex + 1);
  assert.equal(tail.length, 50);
  assert.equal(tail[0], "line-99951");
  assert.equal(tail.at(-1), "line-100000");
  assert.equal(log.omitted, 100_000 - head.length - 50);
  assert.equal(parts[markerIndex], `… ${log.omitted} lines omitted …`);
});

Deno.test("RunLog: default bounds hold for 100k lines", () => {
  const log = new RunLog();
  for (let i = 1; i <= 100_000; i++) log.add(`line number ${i} of a chatty run`);
  const text = log.text();
  const parts = text.split("\n");
  const markerIndex = parts.findIndex((p) => p.includes("lines omitted"));
  assert.ok(markerIndex > 0);
  assert.equal(parts.length - markerIndex - 1, TAIL_LINES);
  assert.ok(parts.slice(0, markerIndex).join("\n").length + 1 <= HEAD_BYTES);
  assert.equal(parts.at(-1), "line number 100000 of a chatty run");
});
