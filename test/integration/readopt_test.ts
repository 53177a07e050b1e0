/**
 * Runs survive their agent (issue 14): an agent SIGKILLed (or detached) mid-run leaves the run
 * going; the agent restarted on the same state_dir re-adopts it and reports its real outcome,
 * through the executable and the simulator.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { groupGone, recipe, setup, started, terminal } from "../harness.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
type S = Awaited<ReturnType<typeof setup>>;

async function until(pred: () => boolean | Promise<boolean>, what: string, ms = 15_000) {
  const deadline = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** The work units the fake CLI printed, as they appear in `text`, in order. */
function units(text: string): number[] {
  return [...text.matchAll(/Processing work unit (\d+):/g)].map((m) => Number(m[1]));
}

async function executions(s: S, urn: string): Promise<number> {
  const id = urn.split(":").pop();
  return (await s.cli.readJournal()).filter((j) => j.event === "start" && j.runId === id).length;
}

const shared = (s: S, agent: Record<string, unknown> = {}) => ({
  agent: { state_dir: `${s.dir}/shared-state`, ...agent },
});

Deno.test("re-adopt: SIGKILL mid-run, restart 1 s later → SUCCESS; run.log and report hold every line once; one execution", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({
    args: { recipe: recipe({ sleep_ms: 10_000, lines_per_second: 20 }) },
  });
  const first = await s.startAgent(shared(s));
  const start = await started(s, urn);
  await sleep(3_000);
  first.signal("SIGKILL");
  await first.exited;
  await sleep(1_000);
  assert.ok(!groupGone(start.pgid), "the run outlived its agent");
  await using second = await s.startAgent(shared(s));
  const r = await terminal(s.sim, urn, 30_000);
  assert.equal(r.status, "SUCCESS", r.report);
  assert.equal(await executions(s, urn), 1, "one CLI execution");
  assert.ok(second.logs().some((l) => l.msg === "re-adopting a run left by the previous agent"));
  const log = await readFile(
    path.join(s.dir, "work", `run-${urn.split(":").pop()}`, "run.log"),
    "utf8",
  );
  const inLog = units(log);
  assert.ok(inLog.length >= 150, `about 200 lines, got ${inLog.length}`);
  assert.deepEqual(inLog, inLog.map((_, i) => i + 1), "run.log: every line once, in order");
  assert.deepEqual(units(r.report!), inLog, "the report: the same lines once");
  assert.match(r.report!, /Re-adopted by ingest-agent instance/);
  assert.ok(groupGone(start.pgid));
});

Deno.test("re-adopt: the CLI ends while the agent is down → its real outcome (SUCCESS, and FAILURE with its exit code)", async () => {
  await using s = await setup();
  const ok = s.sim.createRequest({ args: { recipe: recipe({ sleep_ms: 1_500, lines: 3 }) } });
  const bad = s.sim.createRequest({
    args: { recipe: recipe({ sleep_ms: 1_500, exit_code: 3 }) },
  });
  const first = await s.startAgent(shared(s));
  await started(s, ok);
  await started(s, bad);
  first.signal("SIGKILL");
  await first.exited;
  await until(
    async () => (await s.cli.readJournal()).filter((j) => j.event === "exit").length >= 2,
    "both CLIs exited",
  );
  await using _second = await s.startAgent(shared(s));
  const a = await terminal(s.sim, ok, 15_000);
  const b = await terminal(s.sim, bad, 15_000);
  assert.equal(a.status, "SUCCESS", a.report);
  assert.equal(units(a.report!).length, 3);
  assert.equal(b.status, "FAILURE", b.report);
  assert.match(b.report!, /exit code 3/);
});

Deno.test("re-adopt: KILL of a re-adopted run → CANCELLED, group gone; its timeout keeps the original deadline", async () => {
  await using s = await setup();
  const cancel = s.sim.createRequest({
    args: { recipe: recipe({ sleep_ms: 60_000, grandchild: true }) },
  });
  const timeout = s.sim.createRequest({ args: { recipe: recipe({ sleep_ms: 60_000 }) } });
  const settings = shared(s);
  const overrides = { ...settings, ingestion: { task_timeout: "6s" } };
  const first = await s.startAgent(overrides);
  const a = await started(s, cancel);
  const b = await started(s, timeout);
  const t0 = Date.now();
  first.signal("SIGKILL");
  await first.exited;
  // A restart with a longer timeout: the run keeps the deadline it started with.
  await using second = await s.startAgent({ ...settings, ingestion: { task_timeout: "1h" } });
  await until(
    () => second.logs().filter((l) => l.msg === "run re-adopted").length === 2,
    "both re-adopted",
  );
  s.sim.sendSignal(cancel, "KILL");
  const c = await terminal(s.sim, cancel, 15_000);
  assert.equal(c.status, "CANCELLED", c.report);
  assert.ok(groupGone(a.pgid), "the cancelled run's group is gone");
  const t = await terminal(s.sim, timeout, 20_000);
  assert.equal(t.status, "TIMEOUT", t.report);
  assert.match(t.report!, /ingestion\.task_timeout \(6000ms\)/);
  assert.ok(Date.now() - t0 < 15_000, "stopped at the original deadline, not an hour later");
  assert.ok(groupGone(b.pgid));
});

Deno.test("re-adopt: restart after the lease expired → the pool's ABORTED stands and the group is killed", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({ args: { recipe: recipe({ sleep_ms: 60_000 }) } });
  const first = await s.startAgent(shared(s));
  const start = await started(s, urn);
  // Another agent of the pool (its own state_dir) reaps what the first one left.
  await using _pool = await s.startAgent();
  first.signal("SIGKILL");
  await first.exited;
  const r = await terminal(s.sim, urn, 30_000);
  assert.equal(r.status, "ABORTED");
  assert.ok(!groupGone(start.pgid), "the run still runs: its agent is away");
  await using again = await s.startAgent(shared(s));
  await until(() => groupGone(start.pgid), "the group killed", 15_000);
  await until(
    () => again.logs().some((l) => l.msg.includes("is not ours any more")),
    "the restarted agent says why it killed the group",
  );
  assert.equal(s.sim.result(urn)!.value.status, "ABORTED", "the pool's result stands");
});

Deno.test("re-adopt: on_shutdown detach exits at once leaving the run; the next start → SUCCESS; a secret printed across the restart is masked", async () => {
  const secret = "readopt-secret-value-42";
  await using s = await setup({ sim: { secrets: { PW: secret } } });
  const urn = s.sim.createRequest({
    args: {
      recipe: recipe(
        { sleep_ms: 4_000, lines_per_second: 5, print: ["pw=${PW}"] },
        { config: { pw: "${PW}" } },
      ),
    },
  });
  const settings = shared(s, { on_shutdown: "detach" });
  const first = await s.startAgent(settings);
  const start = await started(s, urn);
  await sleep(500);
  first.signal("SIGTERM");
  const exit = await first.exited;
  assert.equal(exit.code, 0, first.stdout);
  assert.ok(!groupGone(start.pgid), "detached: the run goes on");
  assert.equal(s.sim.result(urn)!.value.status, "RUNNING");
  await using _second = await s.startAgent(settings);
  const r = await terminal(s.sim, urn, 20_000);
  assert.equal(r.status, "SUCCESS", r.report);
  for (const w of s.sim.resultWrites(urn)) {
    assert.ok(!JSON.stringify(w.value).includes(secret), "no write holds the secret");
  }
  const log = await readFile(
    path.join(s.dir, "work", `run-${urn.split(":").pop()}`, "run.log"),
    "utf8",
  );
  assert.ok(log.includes("pw="), "the line is there");
  assert.ok(!log.includes(secret), "masked in run.log");
});
