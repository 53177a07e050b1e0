// RunProcess against real child processes (/bin/sh). Every test kills its process group in a
// finally block, so no process outlives its test.
import assert from "node:assert/strict";
import { within } from "../../test/async.ts";
import { existsSync, readFileSync } from "node:fs";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { AgentError } from "../errors.ts";
import {
  MAX_LINE_BYTES,
  platformLimits,
  readExitStatus,
  type RunFiles,
  RunProcess,
  sleep,
  TRUNCATED_MARK,
} from "./process.ts";

const ENV = { PATH: "/usr/bin:/bin" };

interface Line {
  line: string;
}

/** The shim's files in a fresh private directory (removed at the end of the test process). */
function filesIn(dir: string): RunFiles {
  return { output: path.join(dir, "output.raw"), status: path.join(dir, "exit.status") };
}

async function freshFiles(): Promise<RunFiles> {
  return filesIn(await mkdtemp(path.join(os.tmpdir(), "process-test-")));
}

interface Started {
  proc: RunProcess;
  files: RunFiles;
  lines: Line[];
  /** Resolves with the first line matching the predicate. */
  waitLine(pred: (l: Line) => boolean, timeoutMs?: number): Promise<Line>;
}

async function start(script: string, attachAs?: RunProcess): Promise<Started> {
  const lines: Line[] = [];
  const waiters: { pred: (l: Line) => boolean; resolve: (l: Line) => void }[] = [];
  const files = attachAs ? undefined : await freshFiles();
  const onLine = (line: string) => {
    {
      const l = { line };
      lines.push(l);
      for (const w of [...waiters]) {
        if (w.pred(l)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(l);
        }
      }
    }
  };
  const proc = await RunProcess.start(
    { command: "/bin/sh", args: ["-c", script], cwd: os.tmpdir(), env: ENV },
    files!,
    onLine,
  );
  return {
    proc,
    files: files!,
    lines,
    waitLine: (pred, timeoutMs = 10_000) => {
      const seen = lines.find(pred);
      if (seen) return Promise.resolve(seen);
      return new Promise<Line>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("line not seen in time")), timeoutMs);
        waiters.push({
          pred,
          resolve: (l) => {
            clearTimeout(timer);
            resolve(l);
          },
        });
      });
    },
  };
}

/** Kills whatever is left of the group (or at least the process) and waits for the pipes. */
async function cleanup(proc: RunProcess | undefined): Promise<void> {
  if (!proc) return;
  if (!proc.signalGroup("SIGKILL")) {
    try {
      Deno.kill(proc.pid, "SIGKILL");
    } catch { /* already gone */ }
  }
  await within(proc.exited, 5_000, "exit after SIGKILL");
  await within(proc.drained, 5_000, "pipes drained");
}

/** The process state letter from /proc/<pid>/stat, or undefined when the process is gone. */
function procState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
  } catch {
    return undefined;
  }
}

function pgidOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after "pid (comm) ": state ppid pgrp ...
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[2]);
}

/** Waits until /proc/<pid> is gone or a zombie (dead, waiting to be reaped by init). */
async function waitDead(pid: number, timeoutMs = 5_000): Promise<string | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const state = procState(pid);
    if (state === undefined || state === "Z" || state === "X") return state;
    if (Date.now() > deadline) return state;
    await sleep(20);
  }
}

Deno.test("RunProcess: captures stdout and stderr lines in order, and the exit code", async () => {
  let s: Started | undefined;
  try {
    s = await start(
      "echo out1; echo err1 >&2; printf 'a\\r\\nb\\n'; printf 'last-no-newline'; exit 3",
    );
    const exit = await s.proc.exited;
    await s.proc.drained;
    assert.deepEqual(exit, { code: 3, signal: null });
    const out = s.lines.map((l) => l.line);
    assert.deepEqual(out, ["out1", "err1", "a", "b", "last-no-newline"]);
    assert.deepEqual(await readExitStatus(s.files.status), { code: 3, signal: null });
  } finally {
    await cleanup(s?.proc);
  }
});

Deno.test("RunProcess: passes env and cwd to the child", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "process-test-"));
  const lines: string[] = [];
  let proc: RunProcess | undefined;
  try {
    proc = await RunProcess.start(
      {
        command: "/bin/sh",
        args: ["-c", 'pwd; echo "v=$MY_VAR"'],
        cwd: dir,
        env: { ...ENV, MY_VAR: "x y" },
      },
      filesIn(dir),
      (l) => lines.push(l),
    );
    await proc.exited;
    await proc.drained;
    assert.deepEqual(lines, [dir, "v=x y"]);
  } finally {
    await cleanup(proc);
    await rm(dir, { recursive: true, force: true });
  }
});

Deno.test("RunProcess: a line over 4096 chars arriving in pieces is cut with the truncated mark", async () => {
  let s: Started | undefined;
  try {
    // Two 3000-char pieces, read separately (the pause lets the first one be read on its own),
    // then the newline: the line is emitted once, cut at MAX_LINE_BYTES, and the rest dropped.
    s = await start(
      "printf '%03000d' 0; sleep 0.3; printf '%03000d' 0; sleep 0.3; echo; echo next; " +
        "printf '%04096d\\n' 0",
    );
    await s.proc.exited;
    await s.proc.drained;
    const out = s.lines.map((l) => l.line);
    assert.deepEqual(out.map((l) => l.length), [MAX_LINE_BYTES + TRUNCATED_MARK.length, 4, 4096]);
    assert.equal(out[0], "0".repeat(MAX_LINE_BYTES) + TRUNCATED_MARK);
    assert.equal(TRUNCATED_MARK, " [...truncated]");
    assert.equal(out[1], "next");
    // Exactly MAX_LINE_BYTES is kept whole.
    assert.equal(out[2], "0".repeat(MAX_LINE_BYTES));
  } finally {
    await cleanup(s?.proc);
  }
});

Deno.test("RunProcess: a 10000-char line written at once is cut at 4096 with the mark", async () => {
  let s: Started | undefined;
  try {
    s = await start("printf '%010000d\\nnext\\n' 0");
    await s.proc.exited;
    await s.proc.drained;
    const out = s.lines.map((l) => l.line);
    assert.deepEqual(out.map((l) => l.length), [MAX_LINE_BYTES + TRUNCATED_MARK.length, 4]);
    assert.equal(out[0], "0".repeat(MAX_LINE_BYTES) + TRUNCATED_MARK);
    assert.equal(out[1], "next");
  } finally {
    await cleanup(s?.proc);
  }
});

Deno.test("RunProcess: runs in its own process group (pgid == pid)", async () => {
  let s: Started | undefined;
  try {
    s = await start("echo started; sleep 30; echo never");
    await s.waitLine((l) => l.line === "started");
    assert.equal(pgidOf(s.proc.pid), s.proc.pid);
    assert.notEqual(pgidOf(s.proc.pid), pgidOf(Deno.pid));
  } finally {
    await cleanup(s?.proc);
  }
});

Deno.test("RunProcess.stop: a process that exits on SIGTERM is not SIGKILLed", async () => {
  let s: Started | undefined;
  try {
    s = await start("trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done");
    await s.waitLine((l) => l.line === "ready");
    const exit = await within(s.proc.stop(10_000), 5_000, "stop");
    assert.deepEqual(exit, { code: 7, signal: null });
    await s.proc.drained;
    assert.ok(s.lines.some((l) => l.line === "got-term"));
  } finally {
    await cleanup(s?.proc);
  }
});

Deno.test("RunProcess.stop: ignoring SIGTERM gets SIGKILL after the grace period, grandchild too", async () => {
  let s: Started | undefined;
  let grandchild = 0;
  try {
    // The ignored TERM is inherited by the background sleep.
    s = await start("trap '' TERM; sleep 60 & echo \"child=$!\"; wait; wait; echo survived");
    const line = await s.waitLine((l) => l.line.startsWith("child="));
    grandchild = Number(line.line.slice("child=".length));
    assert.ok(grandchild > 0);
    assert.equal(pgidOf(grandchild), s.proc.pid);
    const exit = await within(s.proc.stop(300), 5_000, "stop");
    assert.equal(exit.signal, "SIGKILL");
    assert.equal(exit.code, null);
    const state = await waitDead(grandchild);
    assert.ok(state === undefined || state === "Z" || state === "X", `grandchild state ${state}`);
    await s.proc.drained;
    assert.ok(!s.lines.some((l) => l.line === "survived"));
  } finally {
    await cleanup(s?.proc);
    if (grandchild && procState(grandchild) !== undefined) {
      try {
        Deno.kill(grandchild, "SIGKILL");
      } catch { /* already gone */ }
    }
  }
});

Deno.test("RunProcess: a grandchild holding stdout open does not delay exited, and is killed", async () => {
  let s: Started | undefined;
  let grandchild = 0;
  try {
    s = await start('sleep 60 & echo "child=$!"; echo bye; exit 0');
    const exit = await within(s.proc.exited, 5_000, "exit");
    assert.deepEqual(exit, { code: 0, signal: null });
    const line = await s.waitLine((l) => l.line.startsWith("child="));
    grandchild = Number(line.line.slice("child=".length));
    const state = await waitDead(grandchild);
    assert.ok(state === undefined || state === "Z" || state === "X", `grandchild state ${state}`);
    // With the grandchild dead the pipes close, so everything is drained.
    await s.proc.drained;
    assert.ok(s.lines.some((l) => l.line === "bye"));
  } finally {
    await cleanup(s?.proc);
    if (grandchild && procState(grandchild) !== undefined) {
      try {
        Deno.kill(grandchild, "SIGKILL");
      } catch { /* already gone */ }
    }
  }
});

Deno.test("RunProcess.start: a command that does not exist is CLI_START_FAILED naming it", async () => {
  const command = "/nonexistent/dir/datahub-does-not-exist";
  const err = await RunProcess.start(
    { command, args: [], cwd: os.tmpdir(), env: ENV },
    await freshFiles(),
    () => {},
  )
    .then(() => assert.fail("expected a rejection"), (e: unknown) => e);
  assert.ok(err instanceof AgentError, String(err));
  assert.equal(err.code, "CLI_START_FAILED");
  assert.ok(err.message.includes(command), err.message);
  assert.match(err.message, /not found/);
  assert.ok(!existsSync(command));
});

Deno.test("RunProcess.start: a command not on PATH is CLI_START_FAILED", async () => {
  const err = await RunProcess.start(
    { command: "datahub-surely-not-on-path", args: ["ingest"], cwd: os.tmpdir(), env: ENV },
    await freshFiles(),
    () => {},
  ).then(() => assert.fail("expected a rejection"), (e: unknown) => e);
  assert.ok(err instanceof AgentError);
  assert.equal(err.code, "CLI_START_FAILED");
  assert.ok(err.message.includes("datahub-surely-not-on-path"), err.message);
});

Deno.test("RunProcess.start: a non-executable file is CLI_START_FAILED (permission denied)", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "process-test-"));
  try {
    const file = path.join(dir, "datahub");
    await writeFile(file, "#!/bin/sh\necho hi\n");
    await chmod(file, 0o644);
    const err = await RunProcess.start(
      { command: file, args: [], cwd: dir, env: ENV },
      filesIn(dir),
      () => {},
    )
      .then(() => assert.fail("expected a rejection"), (e: unknown) => e);
    assert.ok(err instanceof AgentError, String(err));
    assert.equal(err.code, "CLI_START_FAILED");
    assert.ok(err.message.includes(file), err.message);
    assert.match(err.message, /not executable|permission denied/);
    assert.equal((err.cause as { code?: string }).code, "EACCES");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

Deno.test("RunProcess.attach: a second reader sees every line from the start and the recorded exit", async () => {
  let s: Started | undefined;
  try {
    s = await start("echo one; echo two >&2; echo ready; sleep 0.5; echo three; exit 4");
    await s.waitLine((l) => l.line === "ready");
    const lines: string[] = [];
    const attached = RunProcess.attach(
      { pgid: s.proc.pid, startTime: s.proc.startTime! },
      s.files,
      (l) => lines.push(l),
    );
    assert.deepEqual(await within(attached.exited, 5_000, "attached exit"), {
      code: 4,
      signal: null,
    });
    await attached.drained;
    assert.deepEqual(lines, ["one", "two", "ready", "three"]);
  } finally {
    await cleanup(s?.proc);
  }
});

Deno.test("RunProcess: the shim records a signal death of the CLI; SIGKILL of the group leaves no status", async () => {
  let s: Started | undefined;
  try {
    s = await start("echo ready; kill -USR1 $$; sleep 5");
    const exit = await within(s.proc.exited, 5_000, "exit");
    assert.deepEqual(exit, { code: null, signal: "SIGUSR1" });
    assert.deepEqual(await readExitStatus(s.files.status), { code: null, signal: "SIGUSR1" });
    await cleanup(s.proc);
    s = await start("echo ready; sleep 30");
    await s.waitLine((l) => l.line === "ready");
    const attached = RunProcess.attach(
      { pgid: s.proc.pid, startTime: s.proc.startTime! },
      s.files,
      () => {},
    );
    s.proc.signalGroup("SIGKILL");
    const unknown = await within(attached.exited, 5_000, "attached exit");
    assert.deepEqual(unknown, { code: null, signal: null }, "no status: not recorded");
    assert.equal(await readExitStatus(s.files.status), undefined);
  } finally {
    await cleanup(s?.proc);
  }
});

Deno.test("platformLimits: said for Windows (groups, SIGTERM, restart), nothing elsewhere", () => {
  assert.deepEqual(platformLimits("linux"), []);
  assert.deepEqual(platformLimits("darwin"), []);
  const limits = platformLimits("win32").join("\n");
  for (const word of ["process groups", "SIGTERM", "restart"]) {
    assert.match(limits, new RegExp(word));
  }
});
