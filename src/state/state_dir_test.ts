// StateDir against a real directory: records, durability details, corrupt files, and the lock
// (held, stale, and raced by instances of one process and by several agent processes).
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import process from "node:process";
import { AgentError } from "../errors.ts";
import { processStartTime } from "./procs.ts";
import type { ResultValue } from "../request.ts";
import { type OutboxRecord, type RunRecord, StateDir } from "./state_dir.ts";

const STATE_TS = new URL("./state_dir.ts", import.meta.url).href;

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "state_test_" });
  try {
    await fn(`${dir}/state`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function run(id: string, extra: Partial<RunRecord> = {}): RunRecord {
  return {
    urn: `urn:li:dataHubExecutionRequest:${id}`,
    id,
    instance: "agent-1",
    task: "RUN_INGEST",
    runDir: `/tmp/runs/${id}`,
    startTimeMs: 1_700_000_000_000,
    ...extra,
  };
}

function result(id: string): OutboxRecord {
  return {
    urn: `urn:li:dataHubExecutionRequest:${id}`,
    id,
    instance: "agent-1",
    value: { status: "SUCCESS" } as unknown as ResultValue,
    version: "7",
    createdAt: 1_700_000_000_001,
  };
}

function mode(file: string): number {
  return Deno.statSync(file).mode! & 0o777;
}

function names(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}

async function lockedBy(state: StateDir): Promise<AgentError> {
  const err = await state.open().then(() => undefined, (e) => e);
  assert.ok(err instanceof AgentError, `expected STATE_LOCKED, got ${err}`);
  assert.equal(err.code, "STATE_LOCKED");
  return err;
}

/** A process that is gone: its pid (possibly reused later, but then with another start time). */
async function deadPid(): Promise<number> {
  const child = new Deno.Command("true").spawn();
  await child.status;
  return child.pid;
}

/** A live process other than us (a detached sleep), for "a live holder". */
function sleeper(): { pid: number; start: string; stop: () => Promise<void> } {
  const child: ChildProcess = spawn("sleep", ["30"], { detached: true, stdio: "ignore" });
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  return {
    pid: child.pid!,
    start: processStartTime(child.pid!)!,
    stop: async () => {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch { /* gone */ }
      await exited;
    },
  };
}

Deno.test(
  "StateDir: runs and results round-trip with every field, list sorted, remove",
  async () => {
    await withDir(async (dir) => {
      const state = new StateDir(dir);
      await state.open();
      try {
        const full = run("b", {
          pgid: 4321,
          pgidStart: "98765",
          token: "tok-1",
          cancel: "lease",
          version: "12",
          exit: { code: null, signal: "SIGKILL" },
        });
        await state.saveRun(full);
        await state.saveRun(run("a"));
        await state.saveResult(result("x/y"));
        assert.deepEqual(await state.listRuns(), [run("a"), full]);
        assert.deepEqual(await state.listResults(), [result("x/y")]);
        await state.removeRun("a");
        await state.removeResult("x/y");
        assert.deepEqual(await state.listRuns(), [full]);
        assert.deepEqual(await state.listResults(), []);
      } finally {
        state.close();
      }
    });
  },
);

Deno.test("StateDir: files are 0600 in 0700 directories; no temp file is left", async () => {
  await withDir(async (dir) => {
    const state = new StateDir(dir);
    await state.open();
    try {
      await state.saveRun(run("r1"));
      await state.saveResult(result("r1"));
      for (const d of [dir, `${dir}/runs`, `${dir}/outbox`]) assert.equal(mode(d), 0o700, d);
      for (const f of [`${dir}/agent.lock`, `${dir}/runs/r1.json`, `${dir}/outbox/r1.json`]) {
        assert.equal(mode(f), 0o600, f);
      }
      assert.deepEqual(names(`${dir}/runs`), ["r1.json"]);
      assert.deepEqual(names(dir), ["agent.lock", "outbox", "runs"]);
    } finally {
      state.close();
    }
  });
});

Deno.test(
  "StateDir: concurrent saves of one record apply in call order, a remove too",
  async () => {
    await withDir(async (dir) => {
      const state = new StateDir(dir);
      await state.open();
      try {
        const saves = Array.from({ length: 20 }, (_, i) => state.saveRun(run("same", { pgid: i })));
        await Promise.all(saves);
        assert.deepEqual(await state.listRuns(), [run("same", { pgid: 19 })]);
        await Promise.all([state.saveRun(run("gone")), state.removeRun("gone")]);
        assert.deepEqual((await state.listRuns()).map((r) => r.id), ["same"]);
        assert.deepEqual(names(`${dir}/runs`), ["same.json"]);
      } finally {
        state.close();
      }
    });
  },
);

Deno.test(
  "StateDir: a torn or malformed file is moved to .corrupt and reported; others listed",
  async () => {
    await withDir(async (dir) => {
      const problems: { message: string; details: Record<string, unknown> }[] = [];
      const state = new StateDir(dir, {
        onProblem: (message, details) => {
          problems.push({ message, details });
        },
      });
      await state.open();
      try {
        await state.saveRun(run("good"));
        await Deno.writeTextFile(`${dir}/runs/torn.json`, '{"urn":"urn:li:x","id":"to');
        await Deno.writeTextFile(`${dir}/runs/shape.json`, '{"urn":"urn:li:x"}');
        await Deno.writeTextFile(`${dir}/outbox/null.json`, "null");
        assert.deepEqual(await state.listRuns(), [run("good")]);
        assert.deepEqual(await state.listResults(), []);
        assert.deepEqual(names(`${dir}/runs`), [
          "good.json",
          "shape.json.corrupt",
          "torn.json.corrupt",
        ]);
        assert.deepEqual(names(`${dir}/outbox`), ["null.json.corrupt"]);
        assert.equal(problems.length, 3);
        const torn = problems.find((p) => p.details.file === `${dir}/runs/torn.json`);
        assert.ok(torn);
        assert.match(torn.message, /corrupt state file .*torn\.json \(not JSON: .*\); moved to/);
        assert.equal(torn.details.movedTo, `${dir}/runs/torn.json.corrupt`);
        assert.match(
          problems.map((p) => p.message).join("\n"),
          /shape\.json \(missing urn or id\)/,
        );
        // Listing again reports nothing new; a later corrupt file of that name keeps the first.
        problems.length = 0;
        assert.deepEqual(await state.listRuns(), [run("good")]);
        assert.equal(problems.length, 0);
        await Deno.writeTextFile(`${dir}/runs/torn.json`, "");
        await state.listRuns();
        assert.equal(problems.length, 1);
        assert.equal(Deno.readTextFileSync(`${dir}/runs/torn.json.corrupt`).length, 26);
        assert.match(String(problems[0]!.details.movedTo), /torn\.json\.\d+\.corrupt$/);
      } finally {
        state.close();
      }
    });
  },
);

Deno.test("StateDir: open removes temp files a crashed write left", async () => {
  await withDir(async (dir) => {
    await Deno.mkdir(`${dir}/runs`, { recursive: true });
    await Deno.writeTextFile(`${dir}/runs/r.json.123.1.tmp`, "{");
    const dead = await deadPid();
    await Deno.writeTextFile(`${dir}/agent.lock.${dead}.1.tmp`, `${dead} 1`);
    await Deno.writeTextFile(`${dir}/agent.lock.takeover.${dead}.2.tmp`, `${dead} 1`);
    const state = new StateDir(dir);
    await state.open();
    state.close();
    assert.deepEqual(names(`${dir}/runs`), []);
    assert.deepEqual(names(dir), ["outbox", "runs"]);
  });
});

Deno.test("StateDir lock: held by a live process → STATE_LOCKED; close releases it", async () => {
  await withDir(async (dir) => {
    const holder = sleeper();
    try {
      await Deno.mkdir(dir, { recursive: true });
      await Deno.writeTextFile(`${dir}/agent.lock`, `${holder.pid} ${holder.start}`);
      const err = await lockedBy(new StateDir(dir));
      assert.match(
        err.message,
        new RegExp(`is used by another ingest-agent \\(pid ${holder.pid}\\)`),
      );
      assert.equal(Deno.readTextFileSync(`${dir}/agent.lock`), `${holder.pid} ${holder.start}`);
    } finally {
      await holder.stop();
    }
    // The holder is gone now: its lock is stale.
    const state = new StateDir(dir);
    await state.open();
    assert.equal(
      Deno.readTextFileSync(`${dir}/agent.lock`),
      `${process.pid} ${processStartTime(process.pid)}`,
    );
    state.close();
    assert.deepEqual(names(dir), ["outbox", "runs"]);
  });
});

Deno.test(
  "StateDir lock: a second instance of this process gets STATE_LOCKED until close",
  async () => {
    await withDir(async (dir) => {
      const first = new StateDir(dir);
      await first.open();
      const second = new StateDir(dir);
      try {
        await lockedBy(second);
        second.close(); // not the holder: must not release the first's lock
        await lockedBy(new StateDir(dir));
      } finally {
        first.close();
      }
      await second.open();
      second.close();
    });
  },
);

Deno.test(
  "StateDir lock: stale locks are taken over (dead pid; live pid, other start)",
  async () => {
    await withDir(async (dir) => {
      await Deno.mkdir(dir, { recursive: true });
      const me = `${process.pid} ${processStartTime(process.pid)}`;
      const dead = await deadPid();
      const live = sleeper();
      try {
        for (
          const stale of [`${dead} 12345`, `${live.pid} ${Number(live.start) + 1}`, "", "junk"]
        ) {
          await Deno.writeTextFile(`${dir}/agent.lock`, stale);
          const state = new StateDir(dir);
          await state.open();
          assert.equal(Deno.readTextFileSync(`${dir}/agent.lock`), me, stale);
          state.close();
        }
      } finally {
        await live.stop();
      }
    });
  },
);

Deno.test(
  "StateDir lock: a guard left by an agent that died mid-takeover is taken over",
  async () => {
    await withDir(async (dir) => {
      await Deno.mkdir(dir, { recursive: true });
      const dead = await deadPid();
      await Deno.writeTextFile(`${dir}/agent.lock`, `${dead} 1`);
      await Deno.writeTextFile(`${dir}/agent.lock.takeover`, `${dead} 2`);
      await Deno.writeTextFile(`${dir}/agent.lock.takeover.takeover`, `${dead} 3`);
      const state = new StateDir(dir);
      await state.open();
      assert.deepEqual(names(dir), ["agent.lock", "outbox", "runs"]);
      state.close();
    });
  },
);

Deno.test("StateDir lock: a takeover in progress by a live agent is waited for", async () => {
  await withDir(async (dir) => {
    await Deno.mkdir(dir, { recursive: true });
    const dead = await deadPid();
    const taker = sleeper();
    try {
      await Deno.writeTextFile(`${dir}/agent.lock`, `${dead} 1`);
      await Deno.writeTextFile(`${dir}/agent.lock.takeover`, `${taker.pid} ${taker.start}`);
      const state = new StateDir(dir);
      const opened = state.open();
      await new Promise((r) => setTimeout(r, 300));
      await taker.stop(); // it died mid-takeover: its guard is stale now
      await opened;
      state.close();
    } finally {
      await taker.stop();
    }
  });
});

Deno.test(
  "StateDir lock: two instances racing open() on a stale lock: exactly one wins",
  async () => {
    await withDir(async (dir) => {
      await Deno.mkdir(dir, { recursive: true });
      const dead = await deadPid();
      for (let round = 0; round < 20; round++) {
        await Deno.writeTextFile(`${dir}/agent.lock`, `${dead} ${round + 1}`);
        const states = [new StateDir(dir), new StateDir(dir), new StateDir(dir)];
        const outcomes = await Promise.allSettled(states.map((s) => s.open()));
        const won = outcomes.filter((o) => o.status === "fulfilled").length;
        assert.equal(won, 1, `round ${round}`);
        for (const o of outcomes) {
          if (o.status === "rejected") assert.equal((o.reason as AgentError).code, "STATE_LOCKED");
        }
        for (const s of states) s.close();
      }
    });
  },
);

/** An agent process: opens the state dir on "go", prints won/locked, holds until stdin ends. */
const CONTENDER = `
import { StateDir } from ${JSON.stringify(STATE_TS)};
const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream()).getReader();
const state = new StateDir(Deno.args[0]);
console.log("ready");
await lines.read();
const outcome = await state.open().then(() => "won", (e) => e.code ?? String(e));
console.log(outcome);
while (!(await lines.read()).done);
state.close();
`;

interface Contender {
  child: Deno.ChildProcess;
  stdin: WritableStreamDefaultWriter<Uint8Array>;
  lines: ReadableStreamDefaultReader<string>;
}

function contender(dir: string): Contender {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-check", CONTENDER, dir],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(splitLines())
    .getReader();
  return { child, stdin: child.stdin.getWriter(), lines };
}

function splitLines(): TransformStream<string, string> {
  let rest = "";
  return new TransformStream({
    transform(chunk, out) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop()!;
      for (const p of parts) out.enqueue(p);
    },
  });
}

async function nextLine(c: Contender): Promise<string> {
  const { value, done } = await c.lines.read();
  assert.ok(!done, "contender ended early");
  return value;
}

Deno.test(
  "StateDir lock: agent processes racing open() on a stale lock: exactly one wins",
  async () => {
    await withDir(async (dir) => {
      await Deno.mkdir(dir, { recursive: true });
      const dead = await deadPid();
      for (let round = 0; round < 20; round++) {
        await Deno.writeTextFile(`${dir}/agent.lock`, `${dead} ${round + 1}`);
        const racers = [contender(dir), contender(dir), contender(dir)];
        try {
          for (const r of racers) assert.equal(await nextLine(r), "ready");
          const go = new TextEncoder().encode("go\n");
          await Promise.all(racers.map((r) => r.stdin.write(go)));
          const outcomes = await Promise.all(racers.map(nextLine));
          assert.deepEqual(outcomes.filter((o) => o === "won").length, 1, `round ${round}`);
          assert.deepEqual(outcomes.filter((o) => o !== "won"), ["STATE_LOCKED", "STATE_LOCKED"]);
        } finally {
          for (const r of racers) {
            await r.stdin.close().catch(() => {});
            await r.child.status;
            await r.lines.cancel().catch(() => {});
          }
        }
        // The winner closed on exit: nothing is left behind but the layout.
        assert.deepEqual(names(dir), ["outbox", "runs"]);
      }
    });
  },
);
