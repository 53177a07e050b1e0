// The memory watch against a real process group that allocates, and the report's notes.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import process from "node:process";
import type { Logger } from "../observe/log.ts";
import { exitOutcome, terminalValue } from "./finish.ts";
import { formatBytes, memoryExceededNote, MemoryWatch, peakNote } from "./memory.ts";
import type { Note } from "./summary.ts";

const MiB = 1024 ** 2;

function logger(out: { msg: string; fields?: Record<string, unknown> }[] = []): Logger {
  const push = (msg: string, fields?: Record<string, unknown>) => out.push({ msg, fields });
  const make = (): Logger => ({ debug: push, info: push, warn: push, error: push, with: make });
  return make();
}

/** A deno process holding `mb` MiB (resident) until killed, as a shell command. */
function holding(mb: number): string {
  const code =
    `const a = new Uint8Array(${mb} * 1048576).fill(1); setInterval(() => a[0]++, 1000);`;
  return `'${Deno.execPath()}' eval --no-config '${code}'`;
}

/** sh leading its own process group, whose children hold `mbs` MiB each. */
function group(mbs: number[]): { child: ChildProcess; pgid: number; exited: Promise<void> } {
  const env: Record<string, string> = { PATH: "/usr/bin:/bin", HOME: process.env.HOME ?? "/tmp" };
  if (process.env.DENO_DIR) env.DENO_DIR = process.env.DENO_DIR;
  const script = `${mbs.map((mb) => `${holding(mb)} &`).join(" ")} wait`;
  const child = spawn("/bin/sh", ["-c", script], { detached: true, stdio: "ignore", env });
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  return { child, pgid: child.pid!, exited };
}

/** The processes of group `pgid` (the shell and its children). */
function members(pgid: number): number[] {
  return [...Deno.readDirSync("/proc")].filter((e) => /^\d+$/.test(e.name)).map((e) =>
    Number(e.name)
  )
    .filter((pid) => {
      try {
        const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
        return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]) === pgid;
      } catch {
        return false;
      }
    });
}

function vmRss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return Number(m?.[1] ?? 0) * 1024;
}

async function kill(g: { pgid: number; exited: Promise<void> }): Promise<void> {
  try {
    process.kill(-g.pgid, "SIGKILL");
  } catch { /* gone */ }
  await g.exited;
}

Deno.test("MemoryWatch: a process group whose processes together exceed the limit is reported once, with its peak", async () => {
  // Each child holds ~48 MiB + its runtime (< 120 MiB alone); together they are above 120 MiB.
  const g = group([48, 48]);
  const logged: { msg: string; fields?: Record<string, unknown> }[] = [];
  let exceeded = 0;
  const peaks: number[] = [];
  let resolveExceeded!: () => void;
  const wasExceeded = new Promise<void>((r) => resolveExceeded = r);
  const watch = new MemoryWatch(g.pgid, { runMemoryLimitBytes: 120 * MiB }, logger(logged), {
    onExceed: () => {
      exceeded++;
      resolveExceeded();
    },
    onPeak: (bytes) => peaks.push(bytes),
  });
  try {
    const timeout = new Promise((_, reject) => {
      const t = setTimeout(() => reject(new Error("not exceeded within 10 s")), 10_000);
      void wasExceeded.then(() => clearTimeout(t));
    });
    await Promise.race([wasExceeded, timeout]);
    await new Promise((r) => setTimeout(r, 1_200)); // one more sample: still one callback
    assert.equal(exceeded, 1);
    const each = members(g.pgid).map(vmRss);
    assert.ok(each.length === 3 && each.every((b) => b < 120 * MiB), `alone: ${each}`);
    assert.ok(watch.peakBytes > 120 * MiB, `peak ${formatBytes(watch.peakBytes)}`);
    assert.ok(watch.peakBytes < 600 * MiB, `peak ${formatBytes(watch.peakBytes)}: only the group`);
    assert.deepEqual(watch.summary(), { limitBytes: 120 * MiB, peakBytes: watch.peakBytes });
    assert.ok(peaks.length >= 1 && peaks.at(-1)! <= watch.peakBytes, `journaled ${peaks}`);
    const warn = logged.find((l) => /exceed agent\.run_memory_limit/.test(l.msg));
    assert.equal(warn?.fields?.limit_bytes, 120 * MiB);
    assert.ok(Number(warn?.fields?.rss_bytes) > 120 * MiB);
  } finally {
    assert.equal(watch.stop(), watch.peakBytes);
    await kill(g);
  }
});

Deno.test("MemoryWatch: no limit never exceeds; the journal hears the first peak, then 10 % steps; stop ends it", () => {
  let exceeded = false;
  const peaks: number[] = [];
  const gone = 2 ** 22 + 4242; // no such group: every real sample is 0
  const watch = new MemoryWatch(gone, { runMemoryLimitBytes: 0 }, logger(), {
    onExceed: () => exceeded = true,
    onPeak: (bytes) => peaks.push(bytes),
  });
  try {
    for (const mb of [100, 105, 109, 111, 50, 130, 10_000]) watch.observe(mb * MiB);
    assert.equal(exceeded, false, "0: no limit");
    assert.deepEqual(peaks.map((b) => b / MiB), [100, 111, 130, 10_000]);
    assert.equal(watch.peakBytes, 10_000 * MiB);
  } finally {
    watch.stop();
  }
  watch.observe(20_000 * MiB);
  assert.equal(watch.peakBytes, 10_000 * MiB, "not sampled after stop");
  // A re-adopted run starts from its journaled peak.
  const adopted = new MemoryWatch(gone, { runMemoryLimitBytes: 0 }, logger(), {
    peakBytes: 300 * MiB,
    onExceed: () => {},
    onPeak: (bytes) => peaks.push(bytes),
  });
  adopted.observe(310 * MiB);
  assert.equal(adopted.stop(), 310 * MiB);
  assert.equal(peaks.at(-1), 10_000 * MiB, "310 MiB is not 10 % above the journaled 300 MiB");
});

Deno.test("memory notes: the peak; a run stopped for its limit says the limit, its peak and how to raise it", () => {
  assert.equal(formatBytes(123.4 * MiB), "123.4 MiB");
  assert.equal(formatBytes(5.2 * 1024 * MiB), "5.20 GiB");
  assert.equal(peakNote(0), undefined);
  assert.equal(peakNote(64 * MiB), "Peak memory of the run's processes: 64.0 MiB");
  const notes: Note[] = [];
  const status = exitOutcome(
    "RUN_INGEST",
    { code: 143, signal: null },
    { cancel: "memory", memory: { limitBytes: 50 * MiB, peakBytes: 201.5 * MiB } },
    (level, message) => notes.push({ at: 0, level, message }),
  );
  assert.equal(status, "FAILURE");
  assert.equal(notes.length, 1);
  assert.equal(notes[0]!.level, "ERROR");
  assert.equal(
    notes[0]!.message,
    memoryExceededNote({ limitBytes: 50 * MiB, peakBytes: 201.5 * MiB }),
  );
  assert.match(notes[0]!.message, /agent\.run_memory_limit \(50\.0 MiB\)/);
  assert.match(notes[0]!.message, /peak was 201\.5 MiB/);
  assert.match(notes[0]!.message, /raise agent\.run_memory_limit/);
});

Deno.test("terminalValue: the peak is one INFO note of the report (Python executor layout kept)", async () => {
  const value = await terminalValue({ task: "RUN_INGEST", id: "abc", startTimeMs: Date.now() }, {
    status: "SUCCESS",
    notes: [{ at: Date.now(), level: "INFO", message: "Successfully executed 'datahub ingest'" }],
    runLog: undefined,
    runLogAt: "host:/x/run.log",
    structured: undefined,
    reportFileText: undefined,
    mask: (s) => s,
    peakRssBytes: 123.4 * MiB,
  });
  const lines = value.report!.split("\n");
  assert.equal(lines[0], "~~~~ Execution Summary - RUN_INGEST ~~~~");
  assert.match(
    value.report!,
    / 'infos': \[".*INFO: Successfully executed 'datahub ingest'",\n {11}".* INFO: Peak memory of the run's processes: 123\.4 MiB"\]\}\n/,
  );
  const none = await terminalValue({ task: "RUN_INGEST", id: "abc", startTimeMs: Date.now() }, {
    status: "FAILURE",
    notes: [],
    runLog: undefined,
    runLogAt: "host:/x/run.log",
    structured: undefined,
    reportFileText: undefined,
    mask: (s) => s,
  });
  assert.doesNotMatch(none.report!, /Peak memory/, "no CLI ran: no peak");
});
