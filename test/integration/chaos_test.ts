/**
 * Chaos (issue 14): a pool of three agents, one SIGKILLed every ~8 s and restarted 1 s later on
 * its own state_dir, while GMS loses answers and fails requests now and then. Every request ends
 * SUCCESS (no restart here is longer than lease_ttl) and every CLI ran exactly once.
 */
import assert from "node:assert/strict";
import { type AgentProcess, recipe, setup, spawnAgent } from "../harness.ts";
import type { Fault } from "../sim/gms_simulator.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A small deterministic random source, so that a failure can be replayed from its seed. */
function random(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

const FAULTS: Fault[] = [
  { write: "heartbeat", after: "reset", times: 1 },
  { write: "heartbeat", after: 500, times: 1 },
  { write: "terminal", after: "reset", times: 1 },
  { write: "terminal", after: 502, times: 1 },
  { write: "claim", after: "reset", times: 1 },
  { status: 503, times: 2 },
  { match: /graphql/, reset: true, times: 1 },
];

Deno.test("chaos: 3 agents, SIGKILL every ~8 s with 1 s restarts, GMS faults → every request SUCCESS, each run once", async () => {
  const seed = Number(Deno.env.get("CHAOS_SEED") ?? Date.now() % 100_000);
  const rand = random(seed);
  console.log(`chaos seed ${seed} (CHAOS_SEED=${seed} replays it)`);
  await using s = await setup();
  const urns = Array.from({ length: 24 }, () =>
    s.sim.createRequest({
      args: {
        recipe: recipe({ sleep_ms: 3_000 + Math.floor(rand() * 4_000), lines_per_second: 5 }),
      },
    }));
  const configs = await Promise.all(
    [0, 1, 2].map((i) =>
      s.writeConfig({ agent: { state_dir: `${s.dir}/chaos-state-${i}`, max_concurrent: 2 } })
    ),
  );
  const agents: AgentProcess[] = configs.map((c) => spawnAgent(c));
  const all = [...agents];
  const done = () => urns.every((u) => (s.sim.result(u)?.value.status ?? "RUNNING") !== "RUNNING");
  let kills = 0;
  try {
    const deadline = Date.now() + 120_000;
    let nextKill = Date.now() + 3_000 + rand() * 2_000;
    let nextFault = Date.now() + 500;
    while (!done()) {
      assert.ok(
        Date.now() < deadline,
        `not done in time: ${JSON.stringify(urns.map((u) => s.sim.result(u)?.value.status))}`,
      );
      if (Date.now() >= nextFault) {
        s.sim.addFault(FAULTS[Math.floor(rand() * FAULTS.length)]!);
        nextFault = Date.now() + 500 + rand() * 1_000;
      }
      if (Date.now() >= nextKill) {
        const i = Math.floor(rand() * agents.length);
        agents[i]!.signal("SIGKILL");
        await agents[i]!.exited;
        kills++;
        await sleep(1_000);
        agents[i] = spawnAgent(configs[i]!);
        all.push(agents[i]!);
        nextKill = Date.now() + 6_000 + rand() * 4_000;
      }
      await sleep(50);
    }
  } finally {
    s.sim.clearFaults();
    await Promise.all(agents.map((a) => a.stop()));
  }
  const adopted = all.flatMap((a) => a.logs()).filter((l) => l.msg === "run re-adopted").length;
  console.log(`chaos: ${kills} kills, ${adopted} runs re-adopted`);
  assert.ok(kills >= 1, "at least one agent was killed mid-way");
  assert.ok(adopted >= 1, "a killed agent's run was re-adopted");
  const statuses = urns.map((u) => s.sim.result(u)!.value.status);
  assert.deepEqual(
    statuses.filter((st) => st !== "SUCCESS"),
    [],
    `every request SUCCESS (seed ${seed}, ${kills} kills)`,
  );
  const starts = (await s.cli.readJournal()).filter((j) => j.event === "start");
  for (const urn of urns) {
    const id = urn.split(":").pop();
    assert.equal(starts.filter((j) => j.runId === id).length, 1, `${urn} ran once`);
  }
});
