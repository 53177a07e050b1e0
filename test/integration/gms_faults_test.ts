/**
 * Nothing stays RUNNING when GMS answers badly (issue 16), with ONE agent, through the executable:
 * GMS applies a write and then loses or spoils the answer (a reset connection, a 500 after the
 * commit), answers 500 to everything for a while, refuses a large result (413); old RUNNING
 * requests of another executor hide an orphan; a journal names a live unrelated process group;
 * the journal and the outbox both hold a run; a 30-day timeout; SIGTERM during recovery.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { alive } from "../../src/state/state_dir.ts";
import { recipe, setup, started, terminal } from "../harness.ts";
import type { Fault } from "../sim/gms_simulator.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
type S = Awaited<ReturnType<typeof setup>>;

/** The CLI's journal for one request: how often it started and how each run ended. */
async function runsOf(s: S, urn: string) {
  const id = urn.split(":").pop()!;
  const all = await s.cli.readJournal();
  const starts = all.filter((j) => j.event === "start" && j.runId === id);
  const pids = new Set(starts.map((j) => j.pid));
  const exits = all.filter((j) => j.event === "exit" && pids.has(j.pid));
  return { starts, exits };
}

function terminalWrites(s: S, urn: string) {
  return s.sim.resultWrites(urn).filter((w) => w.value.status !== "RUNNING");
}

/** One request, one agent, one fault; the run must end SUCCESS, once, with the CLI unharmed. */
async function survives(fault: Fault, fixture: Record<string, unknown>, agent = {}) {
  await using s = await setup();
  const urn = s.sim.createRequest({ args: { recipe: recipe(fixture) } });
  s.sim.addFault(fault);
  await using a = await s.startAgent({
    agent: { heartbeat_interval: "300ms", lease_ttl: "3s", ...agent },
  });
  const r = await terminal(s.sim, urn, 30_000);
  assert.equal(r.status, "SUCCESS", r.report);
  await sleep(800); // anything more to come would come now
  assert.equal(terminalWrites(s, urn).length, 1, "one terminal status");
  const { starts, exits } = await runsOf(s, urn);
  assert.equal(starts.length, 1, "run once");
  assert.equal(exits.length, 1);
  assert.equal(exits[0]!.exitCode, 0, "the CLI was not killed");
  assert.equal(exits[0]!.signal, undefined);
  assert.ok(!a.logs().some((l) => /behind our back/.test(l.msg)), "not fenced");
  return { s, urn, agent: a };
}

Deno.test("lost answers: a terminal write committed and answered 500 ends SUCCESS once", async () => {
  await survives({ write: "terminal", after: 500, times: 1 }, { sleep_ms: 500, lines: 2 });
});

Deno.test("lost answers: a terminal write committed and its connection dropped ends SUCCESS once", async () => {
  await survives({ write: "terminal", after: "reset", times: 1 }, { sleep_ms: 500, lines: 2 });
});

Deno.test("lost answers: a heartbeat committed and its connection dropped does not fence a 4 s run", async () => {
  await survives({ write: "heartbeat", after: "reset", times: 1 }, {
    sleep_ms: 4_000,
    lines_per_second: 5,
  });
});

Deno.test("lost answers: a heartbeat committed and answered 500 does not fence the run", async () => {
  await survives({ write: "heartbeat", after: 500, times: 2 }, {
    sleep_ms: 3_000,
    lines_per_second: 5,
  });
});

Deno.test("lost answers: a claim committed and its connection dropped runs once", async () => {
  await survives({ write: "claim", after: "reset", times: 1 }, { sleep_ms: 300 });
});

Deno.test("lost answers: a claim committed and answered 500 runs once", async () => {
  await survives({ write: "claim", after: 500, times: 1 }, { sleep_ms: 300 });
});

Deno.test("500s: every OpenAPI call answered 500 (nothing committed) for 2 s while a run ends", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({ args: { recipe: recipe({ sleep_ms: 1_000, lines: 3 }) } });
  await using _a = await s.startAgent({ agent: { heartbeat_interval: "300ms", lease_ttl: "3s" } });
  await started(s, urn);
  const stop = s.sim.addFault({ match: "/openapi/", status: 500 });
  await sleep(2_000);
  assert.equal(s.sim.result(urn)?.value.status, "RUNNING", "nothing could be written");
  stop();
  const r = await terminal(s.sim, urn, 20_000);
  assert.equal(r.status, "SUCCESS");
  assert.equal(terminalWrites(s, urn).length, 1);
  const { exits } = await runsOf(s, urn);
  assert.equal(exits[0]?.exitCode, 0);
});

Deno.test("500s: every route answers 500 for 4 s around claims and runs; all end SUCCESS once", async () => {
  await using s = await setup();
  const urns = [1, 2, 3].map((i) =>
    s.sim.createRequest({ args: { recipe: recipe({ sleep_ms: 400 * i, lines: 2 }) } })
  );
  await using a = await s.startAgent({ agent: { heartbeat_interval: "300ms", lease_ttl: "3s" } });
  await started(s, urns[0]!);
  const stop = s.sim.addFault({ status: 500 });
  const late = s.sim.createRequest({ args: { recipe: recipe({ sleep_ms: 200 }) } });
  await sleep(4_000);
  stop();
  for (const u of [...urns, late]) {
    assert.equal((await terminal(s.sim, u, 30_000)).status, "SUCCESS", u);
  }
  await sleep(500);
  for (const u of [...urns, late]) {
    assert.equal(terminalWrites(s, u).length, 1, `one terminal status for ${u}`);
    assert.equal((await runsOf(s, u)).starts.length, 1, `one run of ${u}`);
  }
  assert.ok(a.running, "the agent stayed up");
});

Deno.test("413: a terminal result refused as too large is delivered smaller", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({
    args: { recipe: recipe({ lines: 200, line_bytes: 200 }) },
  });
  s.sim.addFault({ write: "terminal", status: 413, times: 1 });
  await using a = await s.startAgent();
  const r = await terminal(s.sim, urn, 20_000);
  assert.equal(r.status, "SUCCESS");
  assert.equal(r.structuredReport, undefined, "the structured report went first");
  assert.match(r.report!, /refused by GMS as too large \(HTTP 413\)/);
  assert.ok(a.logs().some((l) => /retrying it smaller/.test(l.msg)));
  assert.equal(terminalWrites(s, urn).length, 1);
});

Deno.test("reaper: 12 stale RUNNING requests of another executor do not hide an orphan of ours", async () => {
  await using s = await setup();
  const hour = 3_600_000;
  const foreign = (requestedAt: number) => {
    const urn = s.sim.createRequest({ args: { recipe: recipe() }, requestedAt });
    s.sim.setResult(urn, { status: "RUNNING", startTimeMs: requestedAt }, {
      properties: { appSource: "reportingExecutor" },
    });
    return urn;
  };
  // 12 old ones of the Python executor (never reaped by design), then the orphan, then 12 more:
  // the orphan is on the second page of 10 whichever way the RUNNING requests are sorted.
  const older = Array.from({ length: 12 }, (_, i) => foreign(Date.now() - 3 * hour + i * 1000));
  const orphan = s.sim.createRequest({
    args: { recipe: recipe() },
    requestedAt: Date.now() - 2 * hour,
  });
  s.sim.setResult(
    orphan,
    { status: "RUNNING", startTimeMs: Date.now() - 2 * hour, durationMs: 0 },
    {
      properties: {
        appSource: "ingest-agent",
        agentInstance: "gone-host-1-abcdef",
        claimToken: "token-of-a-dead-agent",
        leaseTtlMs: "1000",
        leaseExpiresAt: String(Date.now() + 1000),
      },
    },
  );
  const newer = Array.from({ length: 12 }, (_, i) => foreign(Date.now() - hour + i * 1000));
  await using _a = await s.startAgent({ agent: { max_concurrent: 1, lease_ttl: "1s" } });
  const r = await terminal(s.sim, orphan, 20_000);
  assert.equal(r.status, "ABORTED");
  assert.match(r.report!, /stopped renewing its lease/);
  for (const u of [...older, ...newer]) {
    assert.equal(s.sim.result(u)?.value.status, "RUNNING", "not ours to reap");
  }
});

/** A process group that has nothing to do with any run (its own session). */
function unrelatedGroup(): { pid: number; kill(): void } {
  const child = spawn("/bin/sleep", ["60"], { detached: true, stdio: "ignore" });
  child.unref();
  return {
    pid: child.pid!,
    kill: () => {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch { /* gone */ }
    },
  };
}

/** Writes a journal entry (and optionally an outbox record) as a crashed agent would leave them. */
async function leaveState(
  stateDir: string,
  run: Record<string, unknown>,
  result?: Record<string, unknown>,
) {
  for (const sub of ["runs", "outbox"]) {
    await mkdir(path.join(stateDir, sub), { recursive: true, mode: 0o700 });
  }
  await writeFile(path.join(stateDir, "runs", `${run.id}.json`), JSON.stringify(run), {
    mode: 0o600,
  });
  if (result) {
    await writeFile(path.join(stateDir, "outbox", `${run.id}.json`), JSON.stringify(result), {
      mode: 0o600,
    });
  }
}

function claimedBy(s: S, urn: string, token: string, instance = "crashed-host-9-12345678") {
  return s.sim.setResult(urn, {
    status: "RUNNING",
    startTimeMs: Date.now() - 5_000,
    durationMs: 4_000,
  }, {
    properties: {
      appSource: "ingest-agent",
      agentInstance: instance,
      claimToken: token,
      leaseTtlMs: "60000",
      leaseExpiresAt: String(Date.now() + 60_000),
    },
  });
}

Deno.test("recovery: a journal entry naming a live unrelated process group leaves that group alone", async () => {
  await using s = await setup();
  const group = unrelatedGroup();
  try {
    const urn = s.sim.createRequest({ args: { recipe: recipe() } });
    const id = urn.split(":").pop()!;
    claimedBy(s, urn, "tok-unrelated");
    const stateDir = path.join(s.dir, "crashed-state");
    await leaveState(stateDir, {
      urn,
      id,
      instance: "crashed-host-9-12345678",
      task: "RUN_INGEST",
      runDir: path.join(s.dir, "work", `run-${id}`),
      startTimeMs: Date.now() - 5_000,
      token: "tok-unrelated",
      pgid: group.pid, // e.g. after a reboot the pgid belongs to someone else now
      pgidStart: "1", // the original leader's start time, which this process does not have
    });
    await using a = await s.startAgent({ agent: { state_dir: stateDir } });
    const r = await terminal(s.sim, urn, 15_000);
    assert.equal(r.status, "ABORTED");
    assert.match(r.report!, /agent restarted; run interrupted/);
    assert.ok(alive(-group.pid), "the unrelated process group survived");
    assert.ok(a.logs().some((l) => l.msg === "left a process group alone"));
  } finally {
    group.kill();
  }
});

Deno.test("recovery: journal and outbox both present → exactly one delivery, the real result", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({ args: { recipe: recipe() } });
  const id = urn.split(":").pop()!;
  const version = claimedBy(s, urn, "tok-both");
  const stateDir = path.join(s.dir, "crashed-state");
  const value = {
    status: "SUCCESS",
    startTimeMs: Date.now() - 5_000,
    durationMs: 4_500,
    report: "~~~~ Execution Summary - RUN_INGEST ~~~~\nthe real result",
  };
  await leaveState(stateDir, {
    urn,
    id,
    instance: "crashed-host-9-12345678",
    task: "RUN_INGEST",
    runDir: path.join(s.dir, "work", `run-${id}`),
    startTimeMs: Date.now() - 5_000,
    token: "tok-both",
    exit: { code: 0, signal: null },
  }, {
    urn,
    id,
    instance: "crashed-host-9-12345678",
    token: "tok-both",
    value,
    version: String(version),
    createdAt: Date.now() - 400,
  });
  // Slow writes: two deliveries would both read RUNNING and both write (one then gets 412).
  s.sim.addFault({ match: "async=false", latencyMs: 500 });
  await using _a = await s.startAgent({ agent: { state_dir: stateDir } });
  const r = await terminal(s.sim, urn, 15_000);
  assert.equal(r.status, "SUCCESS");
  assert.match(r.report!, /the real result/);
  await sleep(1_000);
  assert.equal(terminalWrites(s, urn).length, 1, "one delivery");
  assert.equal(s.sim.rejectedWrites(urn).length, 0, "no second, racing delivery");
});

Deno.test("recovery: a run cancelled by the user before the crash is reported CANCELLED, not FAILURE", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({ args: { recipe: recipe() } });
  const id = urn.split(":").pop()!;
  claimedBy(s, urn, "tok-cancel");
  const stateDir = path.join(s.dir, "crashed-state");
  await leaveState(stateDir, {
    urn,
    id,
    instance: "crashed-host-9-12345678",
    task: "RUN_INGEST",
    runDir: path.join(s.dir, "work", `run-${id}`),
    startTimeMs: Date.now() - 5_000,
    token: "tok-cancel",
    cancel: "user",
    exit: { code: 143, signal: null },
  });
  await using _a = await s.startAgent({ agent: { state_dir: stateDir } });
  const r = await terminal(s.sim, urn, 15_000);
  assert.equal(r.status, "CANCELLED");
});

Deno.test("timers: task_timeout 30d is accepted and does not fire", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({ args: { recipe: recipe({ sleep_ms: 1_500, lines: 2 }) } });
  await using _a = await s.startAgent({ ingestion: { task_timeout: "30d" } });
  const r = await terminal(s.sim, urn, 20_000);
  assert.equal(r.status, "SUCCESS");
});

Deno.test("signals: SIGTERM during recovery at start ends the agent with exit 0", async () => {
  await using s = await setup();
  const stateDir = path.join(s.dir, "crashed-state");
  // Enough interrupted runs that recovery takes a while.
  for (let i = 0; i < 300; i++) {
    const urn = s.sim.createRequest({ args: { recipe: recipe() } });
    const id = urn.split(":").pop()!;
    await leaveState(stateDir, {
      urn,
      id,
      instance: "crashed-host-9-12345678",
      task: "RUN_INGEST",
      runDir: path.join(s.dir, "work", `run-${id}`),
      startTimeMs: Date.now() - 5_000,
      token: `tok-${i}`,
    });
  }
  const a = await s.startAgent({ agent: { state_dir: stateDir } });
  await s.sim.waitFor(
    () =>
      a.logs().some((l) => l.msg === "closed a run interrupted by an agent restart") || undefined,
    20_000,
    "recovery under way",
  );
  a.signal("SIGTERM");
  const exit = await a.exited;
  assert.deepEqual(exit, { code: 0, signal: null }, a.stdout.slice(-2000));
  assert.ok(!a.logs().some((l) => l.msg === "agent running"), "it did not start polling");
});

Deno.test("lease: heartbeats failing past 1.5 × lease_ttl stop the run, which ends ABORTED saying why", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({
    args: { recipe: recipe({ sleep_ms: 60_000, lines_per_second: 5 }) },
  });
  await using a = await s.startAgent({
    agent: { lease_ttl: "1s", heartbeat_interval: "200ms", cancel_grace: "500ms" },
  });
  const start = await started(s, urn);
  const stop = s.sim.addFault({ match: "/openapi/", status: 503 });
  for (let i = 0; i < 400 && (await runsOf(s, urn)).exits.length === 0; i++) await sleep(25);
  stop();
  const r = await terminal(s.sim, urn, 20_000);
  assert.equal(r.status, "ABORTED");
  assert.match(r.report!, /GMS did not accept a heartbeat .* a request must never run twice/);
  const { exits } = await runsOf(s, urn);
  assert.equal(exits[0]?.signal, "SIGTERM", "stopped like a cancel");
  assert.equal(exits[0]?.pid, start.pid);
  assert.ok(a.logs().some((l) => /lease lost/.test(l.msg)));
});
