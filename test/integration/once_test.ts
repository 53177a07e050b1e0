/**
 * `ingest-agent once` (issue 10) through the executable and the simulator: the requests pending
 * at start run (at most max_concurrent at a time), every result is delivered, and the exit code
 * says whether all succeeded.
 */
import assert from "node:assert/strict";
import { recipe, setup, spawnAgent, started, terminal } from "../harness.ts";

type S = Awaited<ReturnType<typeof setup>>;

/** Starts `ingest-agent once` with the test config (merged with `overrides`). */
async function once(s: S, overrides: Record<string, unknown> = {}) {
  return spawnAgent(await s.writeConfig(overrides), { command: "once" });
}

function exitWithin(agent: { exited: Promise<{ code: number }> }, ms: number) {
  return Promise.race([
    agent.exited,
    new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error(`once did not exit within ${ms} ms`)), ms)
    ),
  ]);
}

async function executions(s: S): Promise<string[]> {
  return (await s.cli.readJournal()).filter((j) => j.event === "start").map((j) => String(j.runId));
}

Deno.test("once: three pending requests all run (two at a time), results delivered, exit 0; a later request is left", async () => {
  await using s = await setup();
  const urns = [1, 2, 3].map(() =>
    s.sim.createRequest({ args: { recipe: recipe({ sleep_ms: 600, lines: 3 }) } })
  );
  await using a = await once(s, { agent: { max_concurrent: 2 } });
  await started(s, urns[0]!);
  const late = s.sim.createRequest({ args: { recipe: recipe() } });
  const exit = await exitWithin(a, 60_000);
  assert.equal(exit.code, 0, a.stdout + a.stderr);
  for (const urn of urns) assert.equal((await terminal(s.sim, urn, 1)).status, "SUCCESS");
  assert.equal(s.sim.result(late), undefined, "a request created after the start is left");
  const ran = await executions(s);
  assert.deepEqual(ran.toSorted(), urns.map((u) => u.split(":").pop()!).toSorted());
  const done = a.logs().find((l) => l.msg === "once: done");
  assert.ok(done, "a summary line");
  assert.equal(done.succeeded, 3);
  assert.equal(done.requests, 3);
});

Deno.test("once: one failing request → exit 1 after the others ran", async () => {
  await using s = await setup();
  const ok = [1, 2].map(() => s.sim.createRequest({ args: { recipe: recipe() } }));
  const bad = s.sim.createRequest({ args: { recipe: recipe({ exit_code: 1 }) } });
  await using a = await once(s, {});
  const exit = await exitWithin(a, 60_000);
  assert.equal(exit.code, 1, a.stdout + a.stderr);
  for (const urn of ok) assert.equal((await terminal(s.sim, urn, 1)).status, "SUCCESS");
  assert.equal((await terminal(s.sim, bad, 1)).status, "FAILURE");
  const done = a.logs().find((l) => l.msg === "once: done, not all succeeded");
  assert.ok(done, "the failure summary");
  assert.deepEqual(done.failures, [`${bad} FAILURE`]);
});

Deno.test("once: nothing pending → exit 0 at once, nothing written", async () => {
  await using s = await setup();
  const other = s.sim.createRequest({ executorId: "pool-b", args: { recipe: recipe() } });
  await using a = await once(s, {});
  const exit = await exitWithin(a, 15_000);
  assert.equal(exit.code, 0, a.stdout + a.stderr);
  assert.equal(s.sim.result(other), undefined, "another executor's request is not touched");
  assert.deepEqual(await executions(s), []);
  assert.ok(a.logs().some((l) => l.msg === "once: requests pending at start" && l.requests === 0));
});

Deno.test("once: SIGTERM drains like run: the run in flight finishes, the rest is left pending, exit 1", async () => {
  await using s = await setup();
  const urns = [1, 2].map(() =>
    s.sim.createRequest({ args: { recipe: recipe({ sleep_ms: 1_500 }) } })
  );
  await using a = await once(s, { agent: { max_concurrent: 1 } });
  for (const deadline = Date.now() + 15_000; (await executions(s)).length === 0;) {
    assert.ok(Date.now() < deadline, "a run started");
    await new Promise((r) => setTimeout(r, 25));
  }
  a.signal("SIGTERM");
  const exit = await exitWithin(a, 30_000);
  assert.equal(exit.code, 1, a.stdout + a.stderr);
  const [ran] = await executions(s);
  const first = urns.find((u) => u.endsWith(ran!))!;
  const second = urns.find((u) => u !== first)!;
  assert.equal((await terminal(s.sim, first, 1)).status, "SUCCESS");
  assert.equal(s.sim.result(second), undefined, "not claimed after the signal");
  const done = a.logs().find((l) => l.msg === "once: done, not all succeeded");
  assert.ok(done);
  assert.equal(done.left_pending, 1);
  assert.equal(done.succeeded, 1);
});

Deno.test("once: a request another agent of the pool runs is not counted; exit 0", async () => {
  await using s = await setup();
  const urns = [1, 2, 3, 4].map(() =>
    s.sim.createRequest({ args: { recipe: recipe({ sleep_ms: 300 }) } })
  );
  await using pool = await s.startAgent({ agent: { max_concurrent: 2 } });
  await using a = await once(s, { agent: { max_concurrent: 2 } });
  const exit = await exitWithin(a, 60_000);
  assert.equal(exit.code, 0, a.stdout + a.stderr);
  for (const urn of urns) {
    assert.equal((await terminal(s.sim, urn, 10_000)).status, "SUCCESS");
  }
  const ran = await executions(s);
  assert.equal(ran.length, 4, "each request ran once in the pool");
  const done = a.logs().find((l) => l.msg === "once: done");
  assert.ok(done, a.stdout);
  // The pool agent started first: what it had claimed already was not pending at once's start.
  assert.equal(Number(done.succeeded) + Number(done.not_run_here), Number(done.requests));
  assert.ok(pool.running);
});
