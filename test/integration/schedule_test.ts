/**
 * Scheduling (issue 13): one run per ingestion source across the pool, and per-source-type
 * limits, through the executable and the simulator.
 */
import assert from "node:assert/strict";
import { recipe, setup, started, terminal } from "../harness.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
type S = Awaited<ReturnType<typeof setup>>;

const SOURCE = "urn:li:dataHubIngestionSource:warehouse";
const scheduled = { type: "SCHEDULED_INGESTION_SOURCE", ingestionSource: SOURCE };
const manual = { type: "MANUAL_INGESTION_SOURCE", ingestionSource: SOURCE };

async function executions(s: S): Promise<string[]> {
  return (await s.cli.readJournal()).filter((j) => j.event === "start").map((j) => String(j.runId));
}

const idOf = (urn: string) => urn.split(":").pop()!;

Deno.test("overlap: a scheduled request whose source runs is closed DUPLICATE naming the running one", async () => {
  await using s = await setup();
  const first = s.sim.createRequest({
    source: manual,
    args: { recipe: recipe({ sleep_ms: 3_000 }) },
  });
  await using _a = await s.startAgent();
  await started(s, first);
  const next = s.sim.createRequest({ source: scheduled, args: { recipe: recipe() } });
  const dup = await terminal(s.sim, next, 15_000);
  assert.equal(dup.status, "DUPLICATE", dup.report);
  assert.ok(dup.report!.includes(first), "the report names the running request");
  assert.equal((await terminal(s.sim, first)).status, "SUCCESS");
  assert.deepEqual(await executions(s), [idOf(first)]);
});

Deno.test("overlap: a manual request whose source runs waits, then runs after it", async () => {
  await using s = await setup();
  const first = s.sim.createRequest({
    source: scheduled,
    args: { recipe: recipe({ sleep_ms: 2_000 }) },
  });
  await using _a = await s.startAgent();
  await started(s, first);
  const next = s.sim.createRequest({ source: manual, args: { recipe: recipe() } });
  await sleep(1_000);
  assert.equal(s.sim.result(next), undefined, "left pending while the other runs");
  const a = await terminal(s.sim, first);
  const b = await terminal(s.sim, next, 15_000);
  assert.equal(a.status, "SUCCESS");
  assert.equal(b.status, "SUCCESS");
  assert.ok(b.startTimeMs! >= a.startTimeMs! + a.durationMs!, "one after the other");
  assert.deepEqual(await executions(s), [idOf(first), idOf(next)]);
});

Deno.test("overlap: two agents, two requests of one source created together → exactly one runs, the other is DUPLICATE", async () => {
  // Search lags the claims (as GMS's index does): neither agent sees the other's claim in
  // discovery, so both claim, and the settle step decides.
  await using s = await setup({ sim: { searchLagMs: 1_500 } });
  const urns = [1, 2].map(() =>
    s.sim.createRequest({ source: scheduled, args: { recipe: recipe({ sleep_ms: 500 }) } })
  );
  await sleep(1_600); // both requests are in the index
  await using _a = await s.startAgent({ agent: { max_concurrent: 1 } });
  await using _b = await s.startAgent({ agent: { max_concurrent: 1 } });
  const results = await Promise.all(urns.map((u) => terminal(s.sim, u, 20_000)));
  const statuses = results.map((r) => r.status).toSorted();
  assert.deepEqual(
    statuses,
    ["DUPLICATE", "SUCCESS"],
    JSON.stringify(results.map((r) => r.report)),
  );
  assert.equal((await executions(s)).length, 1, "one CLI execution");
  const dup = results.find((r) => r.status === "DUPLICATE")!;
  assert.match(
    dup.report!,
    /Not run: urn:li:dataHubExecutionRequest:.* of the same ingestion source/,
  );
});

Deno.test("source_limits: at most that many runs of a type at once; other types keep flowing", async () => {
  await using s = await setup();
  const snow = [1, 2, 3].map(() =>
    s.sim.createRequest({
      args: {
        recipe: recipe({ sleep_ms: 1_200 }, {
          source: { type: "snowflake", config: { fixture: { sleep_ms: 1_200 } } },
        }),
      },
    })
  );
  const other = [1, 2].map(() =>
    s.sim.createRequest({ args: { recipe: recipe({ sleep_ms: 300 }) } })
  );
  await using a = await s.startAgent({
    agent: { max_concurrent: 4, source_limits: { snowflake: 1 } },
  });
  for (const u of [...snow, ...other]) {
    assert.equal((await terminal(s.sim, u, 30_000)).status, "SUCCESS");
  }
  const runs = snow.map((u) => s.sim.result(u)!.value);
  runs.sort((x, y) => x.startTimeMs! - y.startTimeMs!);
  for (let i = 1; i < runs.length; i++) {
    assert.ok(
      runs[i]!.startTimeMs! >= runs[i - 1]!.startTimeMs! + runs[i - 1]!.durationMs!,
      "snowflake runs one at a time",
    );
  }
  const fake = other.map((u) => s.sim.result(u)!.value);
  assert.ok(
    fake.every((r) => r.startTimeMs! + r.durationMs! < runs[2]!.startTimeMs!),
    "the other type did not wait behind snowflake",
  );
  assert.ok(
    a.logs().some((l) =>
      l.msg === "left pending" && /source_limits\.snowflake/.test(String(l.why))
    ),
  );
});
