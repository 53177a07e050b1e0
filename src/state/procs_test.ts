// Process identity against real processes (sleep, sh). Every test kills what it spawned in a
// finally block, through the process group, so no process outlives its test.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import process from "node:process";
import {
  alive,
  groupLeaderMatches,
  groupsResidentBytes,
  hostMemAvailable,
  killRunGroup,
  parseMemAvailable,
  processesWithEnv,
  processGroupOf,
  processStartTime,
} from "./procs.ts";

const ENV = { PATH: "/usr/bin:/bin" };

interface Spawned {
  child: ChildProcess;
  pid: number;
  /** Leads its own process group. */
  detached: boolean;
  exited: Promise<void>;
}

function start(args: string[], opts: { env?: Record<string, string>; detached?: boolean }) {
  const detached = opts.detached ?? true;
  const child = spawn(args[0]!, args.slice(1), {
    env: { ...ENV, ...opts.env },
    detached,
    stdio: "ignore",
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return { child, pid: child.pid!, detached, exited } satisfies Spawned;
}

/** Kills the child's group (or the child alone) and whatever else was named; awaits the child. */
async function stop(s: Spawned | undefined, ...others: number[]): Promise<void> {
  for (const id of [s?.detached ? -s.pid : 0, s?.pid ?? 0, ...others]) {
    if (id === 0) continue;
    try {
      process.kill(id, "SIGKILL");
    } catch { /* gone */ }
  }
  if (s) await s.exited;
}

/** Running, i.e. existing and not a zombie (an orphan's zombie may wait for an idle init). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

async function until<T>(what: string, probe: () => T | undefined, ms = 5000): Promise<T> {
  for (const deadline = Date.now() + ms; Date.now() < deadline;) {
    const value = probe();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`${what}: not within ${ms}ms`);
}

function marker() {
  return { name: "INGEST_AGENT_TEST_RUN", value: crypto.randomUUID() };
}

/** sh leading its own group, with a grandchild sleep; resolves once both carry the marker. */
async function shWithGrandchild(script: string, mark: { name: string; value: string }) {
  const sh = start(["/bin/sh", "-c", script], { env: { [mark.name]: mark.value } });
  const grandchild = await until("grandchild started", () => {
    const other = processesWithEnv(mark.name, mark.value).filter((p) => p !== sh.pid);
    return other.length === 1 ? other[0] : undefined;
  });
  return { sh, grandchild };
}

Deno.test("processStartTime / processGroupOf: our own process", () => {
  assert.match(processStartTime(process.pid) ?? "", /^\d+$/);
  assert.equal(typeof processGroupOf(process.pid), "number");
  assert.equal(processStartTime(2 ** 30), undefined);
  assert.equal(processGroupOf(-1), undefined);
  assert.equal(alive(process.pid), true);
});

Deno.test(
  "groupLeaderMatches: a detached child leads its group; wrong start or none is false",
  async () => {
    let s: Spawned | undefined;
    try {
      s = start(["sleep", "30"], {});
      const started = processStartTime(s.pid);
      assert.ok(started);
      assert.equal(processGroupOf(s.pid), s.pid);
      assert.equal(groupLeaderMatches(s.pid, started), true);
      assert.equal(groupLeaderMatches(s.pid, String(Number(started) + 1)), false);
      assert.equal(groupLeaderMatches(s.pid, undefined), false);
    } finally {
      await stop(s);
    }
    assert.equal(groupLeaderMatches(s.pid, processStartTime(s.pid)), false);
  },
);

Deno.test("groupLeaderMatches: false for a process that is not its group's leader", async () => {
  const mark = marker();
  let s: Spawned | undefined;
  let grandchild = 0;
  try {
    ({ sh: s, grandchild } = await shWithGrandchild("sleep 30 & wait", mark));
    assert.equal(processGroupOf(grandchild), s.pid);
    assert.equal(groupLeaderMatches(grandchild, processStartTime(grandchild)), false);
    assert.equal(groupLeaderMatches(s.pid, processStartTime(s.pid)), true);
  } finally {
    await stop(s, grandchild);
  }
});

Deno.test(
  "processesWithEnv: finds the child and its grandchild, exact name=value only",
  async () => {
    const mark = marker();
    let s: Spawned | undefined;
    let grandchild = 0;
    try {
      ({ sh: s, grandchild } = await shWithGrandchild("sleep 30 & wait", mark));
      const found = processesWithEnv(mark.name, mark.value).sort((a, b) => a - b);
      assert.deepEqual(found, [s.pid, grandchild].sort((a, b) => a - b));
      assert.deepEqual(processesWithEnv(mark.name, mark.value.slice(0, -1)), []);
      assert.deepEqual(processesWithEnv(mark.name.slice(1), mark.value), []);
    } finally {
      await stop(s, grandchild);
    }
    assert.deepEqual(processesWithEnv(mark.name, mark.value), []);
  },
);

Deno.test(
  "killRunGroup: a wrong pgidStart leaves a live unrelated group alone and says why",
  async () => {
    let s: Spawned | undefined;
    try {
      s = start(["sleep", "30"], {});
      const other = await killRunGroup({ pgid: s.pid, pgidStart: "1" });
      assert.deepEqual(other.killed, []);
      assert.match(other.skipped ?? "", new RegExp(`pgid ${s.pid} now belongs to another process`));
      assert.match(other.skipped ?? "", /start time differs/);
      const bare = await killRunGroup({ pgid: s.pid });
      assert.deepEqual(bare.killed, []);
      assert.match(bare.skipped ?? "", /no recorded start time/);
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(running(s.pid), true);
    } finally {
      await stop(s);
    }
  },
);

Deno.test("killRunGroup: the matching pgid is killed", async () => {
  let s: Spawned | undefined;
  try {
    s = start(["sleep", "30"], {});
    const result = await killRunGroup({ pgid: s.pid, pgidStart: processStartTime(s.pid) });
    assert.deepEqual(result, { killed: [s.pid] });
    await s.exited;
    assert.equal(running(s.pid), false);
  } finally {
    await stop(s);
  }
});

Deno.test(
  "killRunGroup: with the marker and no pgid, the whole group dies, grandchild too",
  async () => {
    const mark = marker();
    let s: Spawned | undefined;
    let grandchild = 0;
    try {
      ({ sh: s, grandchild } = await shWithGrandchild("sleep 30 & wait", mark));
      const result = await killRunGroup({ marker: mark });
      assert.deepEqual(result.killed, [s.pid]);
      assert.equal(result.skipped, undefined);
      assert.equal(result.remaining, undefined);
      assert.equal(running(grandchild), false);
      await s.exited;
      assert.deepEqual(processesWithEnv(mark.name, mark.value), []);
    } finally {
      await stop(s, grandchild);
    }
  },
);

Deno.test(
  "killRunGroup: a group whose leader exited is still found through the marker",
  async () => {
    const mark = marker();
    let s: Spawned | undefined;
    let grandchild = 0;
    try {
      ({ sh: s, grandchild } = await shWithGrandchild("sleep 30 & sleep 0.3", mark));
      const leaderStart = processStartTime(s.pid);
      await s.exited;
      assert.equal(running(grandchild), true);
      const result = await killRunGroup({ pgid: s.pid, pgidStart: leaderStart, marker: mark });
      assert.match(result.skipped ?? "", /leader has exited/);
      assert.deepEqual(result.killed, [s.pid]);
      assert.equal(running(grandchild), false);
    } finally {
      await stop(s, grandchild);
    }
  },
);

Deno.test("killRunGroup: a marked process in the agent's own group is killed alone", async () => {
  const mark = marker();
  let s: Spawned | undefined;
  try {
    s = start(["sleep", "30"], { env: { [mark.name]: mark.value }, detached: false });
    assert.equal(processGroupOf(s.pid), processGroupOf(process.pid));
    const result = await killRunGroup({ marker: mark });
    assert.deepEqual(result.killed, [s.pid]);
    await s.exited;
    assert.equal(running(s.pid), false);
  } finally {
    await stop(s);
  }
});

Deno.test("parseMemAvailable: MemAvailable of /proc/meminfo in bytes; absent → undefined", () => {
  const meminfo = "MemTotal:       24683584 kB\nMemFree:         1234567 kB\n" +
    "MemAvailable:   23996492 kB\nBuffers:          123456 kB\n";
  assert.equal(parseMemAvailable(meminfo), 23996492 * 1024);
  assert.equal(parseMemAvailable("MemTotal: 1 kB\nMemFree: 1 kB\n"), undefined, "Linux < 3.14");
  assert.equal(parseMemAvailable(""), undefined);
  const here = hostMemAvailable();
  assert.ok(here !== undefined && here > 0, `this host's MemAvailable: ${here}`);
  assert.equal(hostMemAvailable("/nonexistent/meminfo"), undefined);
});

/** A deno process holding `mb` MiB (resident) until killed, as a shell command. */
function holdingCommand(mb: number): string {
  const code =
    `const a = new Uint8Array(${mb} * 1048576).fill(1); setInterval(() => a[0]++, 1000);`;
  return `'${Deno.execPath()}' eval --no-config '${code}'`;
}

Deno.test("groupsResidentBytes: the resident memory of every process of a group, summed; none left → 0", async () => {
  // sh leads the group; two children hold 64 and 32 MiB.
  const env = {
    HOME: process.env.HOME ?? "/tmp",
    ...(process.env.DENO_DIR ? { DENO_DIR: process.env.DENO_DIR } : {}),
  };
  const sh = start(["/bin/sh", "-c", `${holdingCommand(64)} & ${holdingCommand(32)} & wait`], {
    env,
  });
  const MiB = 1024 ** 2;
  try {
    const sum = await until("both children hold their memory", () => {
      const bytes = groupsResidentBytes([sh.pid]).get(sh.pid)!;
      return bytes >= (96 + 2 * 20) * MiB ? bytes : undefined; // + 2 runtimes of ≥ 20 MiB
    }, 15_000);
    assert.ok(sum < 512 * MiB, `${sum} bytes: not someone else's processes too`);
    const none = 2 ** 22 + 12345; // above pid_max's default: no such group
    assert.deepEqual([...groupsResidentBytes([none, 0, 1])], [[none, 0]], "bad pgids are left out");
  } finally {
    await stop(sh);
  }
  await until(
    "the group is gone",
    () => groupsResidentBytes([sh.pid]).get(sh.pid) === 0 || undefined,
  );
});
