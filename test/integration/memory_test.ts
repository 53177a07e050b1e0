/**
 * Memory (issue 13, part): agent.run_memory_limit stops a run whose process group uses more
 * (FAILURE, the limit and the peak in the report, nothing left running); agent.min_available_memory
 * keeps the agent from starting runs while the host has less available; every run's peak is in
 * its report and its journal entry. Through the executable, the simulator and the fake CLI
 * (fixture allocate_mb / grandchild_allocate_mb).
 */
import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { groupGone, recipe, setup, started, terminal } from "../harness.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
type S = Awaited<ReturnType<typeof setup>>;

function running(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

async function allocatorOf(s: S, pid: number): Promise<number> {
  for (let i = 0; i < 400; i++) {
    const e = (await s.cli.readJournal()).find((j) => j.pid === pid && j.allocatorPid);
    if (e) return e.allocatorPid!;
    await sleep(25);
  }
  throw new Error("no allocator recorded");
}

/** The MiB of "Peak memory of the run's processes: N MiB" in a report. */
function reportedPeakMiB(report: string): number {
  const m = /Peak memory of the run's processes: (\d+\.\d) MiB/.exec(report);
  assert.ok(m, "the report has the run's peak memory");
  return Number(m[1]);
}

Deno.test("run_memory_limit: a run whose processes together exceed it is FAILURE with the limit and its peak; no process left", async () => {
  await using s = await setup();
  // The CLI holds 64 MiB and its helper (a grandchild in its group) 64 MiB: each is below the
  // limit alone, the group is above it.
  const urn = s.sim.createRequest({
    args: { recipe: recipe({ allocate_mb: 64, grandchild_allocate_mb: 64, sleep_ms: 60_000 }) },
  });
  await using agent = await s.startAgent({
    agent: { run_memory_limit: "160MiB", cancel_grace: "1s" },
  });
  const start = await started(s, urn);
  const helper = await allocatorOf(s, start.pid);
  const r = await terminal(s.sim, urn, 20_000);
  assert.equal(r.status, "FAILURE", r.report);
  assert.match(r.report!, /Execution finished with errors\./);
  assert.match(
    r.report!,
    /ERROR: The run's processes used more memory than agent\.run_memory_limit \(160\.0 MiB\) allows, so the run was stopped; its peak was (\d+\.\d) MiB\. To let it finish, raise agent\.run_memory_limit/,
  );
  assert.ok(reportedPeakMiB(r.report!) > 160, "the peak is above the limit");
  assert.ok(groupGone(start.pgid), "the run's process group is gone");
  assert.ok(!running(start.pid) && !running(helper), "the CLI and its helper are gone");
  const exceeded = agent.logs().find((l) => /exceed agent\.run_memory_limit/.test(l.msg));
  assert.equal(exceeded?.limit_bytes, 160 * 1024 ** 2);
  const finished = await s.sim.waitFor(
    () => agent.logs().find((l) => l.msg === "run finished"),
    5_000,
    "the run's last log line",
  );
  assert.equal(finished?.cancel_reason, "memory");
  assert.match(String(finished?.reason), /run_memory_limit/);
});

Deno.test("min_available_memory above the host's MemAvailable: nothing starts and the log says why; restarted lower, it runs", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({ args: { recipe: recipe() } });
  const blocked = await s.startAgent({
    agent: { min_available_memory: "1048576GiB" }, // 1 PiB: more than any host has
    observability: { listen: "127.0.0.1:0" },
  });
  const listening = await s.sim.waitFor(
    () => blocked.logs().find((l) => l.msg === "endpoints listening"),
    15_000,
    "endpoints listening",
  );
  const why = await s.sim.waitFor(
    () => blocked.logs().find((l) => /too little memory available/.test(l.msg)),
    15_000,
    "the log says why nothing starts",
  );
  assert.equal(why.level, "warn");
  assert.match(String(why.problem), /MemAvailable .* is below agent\.min_available_memory/);
  await sleep(1_500); // several polls (200 ms)
  assert.equal(s.sim.result(urn), undefined, "not claimed: left pending for another agent");
  assert.deepEqual(await s.cli.readJournal(), [], "no CLI started");
  assert.equal(
    blocked.logs().filter((l) => /too little memory available/.test(l.msg)).length,
    1,
    "said once, not every poll",
  );
  const status = await (await fetch(`http://${listening.address}/status`)).json();
  assert.match(status.admission.blocked, /agent\.min_available_memory/);
  assert.equal((await fetch(`http://${listening.address}/readyz`)).status, 200, "still ready");
  assert.equal((await blocked.stop()).code, 0);

  await using _agent = await s.startAgent({ agent: { min_available_memory: "1MiB" } });
  assert.equal((await terminal(s.sim, urn, 20_000)).status, "SUCCESS");
});

Deno.test("peak memory: a normal run's report and its journal entry have its peak", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({
    args: { recipe: recipe({ allocate_mb: 64, sleep_ms: 2_500 }) },
  });
  await using _agent = await s.startAgent();
  await started(s, urn);
  // The journal entry (state_dir/runs/<id>.json) while the run is going.
  const runs = path.join(s.dir, "state-1", "runs");
  let journaled = 0;
  for (const deadline = Date.now() + 10_000; journaled < 64 * 1024 ** 2; await sleep(50)) {
    assert.ok(Date.now() < deadline, `peakRssBytes in the run's journal entry: ${journaled}`);
    for (const name of await readdir(runs).catch(() => [])) {
      const entry = JSON.parse(await readFile(path.join(runs, name), "utf8").catch(() => "{}"));
      journaled = Math.max(journaled, entry.peakRssBytes ?? 0);
    }
  }
  const r = await terminal(s.sim, urn);
  assert.equal(r.status, "SUCCESS");
  const peak = reportedPeakMiB(r.report!);
  assert.ok(peak >= 64 && peak < 1024, `peak ${peak} MiB`);
  assert.ok(
    peak * 1024 ** 2 >= journaled * 0.99,
    "the report's peak is at least the journaled one",
  );
});
