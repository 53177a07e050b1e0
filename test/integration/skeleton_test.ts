/**
 * The walking skeleton end to end (issue 2): discover → claim → run → report, through the agent
 * executable (AGENT_BIN) against the GMS simulator and the fake datahub CLI.
 */
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { stringify } from "yaml";
import {
  type AgentProcess,
  recipe,
  runAgentOnce,
  setup,
  spawnAgent,
  terminal,
  usingBinary,
} from "../harness.ts";

Deno.test("happy path: claimed, run with run_id, RUNNING progress, then SUCCESS with the structured report", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({
    // 2.5 s: the first progress write comes 2 s after the claim (reporter.ts).
    args: { recipe: recipe({ lines: 6, sleep_ms: 2500 }), version: "1.6.0", debug_mode: "false" },
  });
  const id = urn.split(":").pop()!;
  await using _agent = await s.startAgent();
  const result = await terminal(s.sim, urn);
  assert.equal(result.status, "SUCCESS", result.report);
  assert.ok(result.startTimeMs! > 0 && result.durationMs! >= 1000, `duration ${result.durationMs}`);
  assert.match(
    result.report!,
    /^~~~~ Execution Summary - RUN_INGEST ~~~~\nExecution finished successfully!/,
  );
  assert.match(result.report!, /~~~~ Ingestion Report ~~~~/);
  assert.match(result.report!, /~~~~ Ingestion Logs ~~~~[\s\S]*Processing work unit 6/);
  assert.equal(result.structuredReport?.type, "RUN_INGEST");
  assert.equal(result.structuredReport?.contentType, "application/json");
  assert.equal(JSON.parse(result.structuredReport!.serializedValue).source.type, "fake");

  const writes = s.sim.resultWrites(urn);
  assert.equal(writes[0]!.value.status, "RUNNING");
  assert.equal(writes[0]!.headers["If-Version-Match"], "-1", "the claim is a create-only write");
  assert.equal(
    writes.filter((w) => w.value.status !== "RUNNING").length,
    1,
    "exactly one terminal write",
  );
  assert.ok(
    writes.some((w) =>
      w.value.status === "RUNNING" && /Processing work unit/.test(w.value.report ?? "")
    ),
  );
  assert.equal(writes.at(-1)!.value.status, "SUCCESS");

  const journal = await s.cli.readJournal();
  const start = journal.find((e) => e.event === "start")!;
  assert.equal(start.runId, id, "run_id is the bare request id");
  assert.equal(
    start.recipe?.pipeline_name,
    "urn:li:dataHubIngestionSource:test",
    "pipeline_name kept",
  );
  assert.deepEqual(start.argv.slice(0, 3), ["ingest", "run", "-c"]);
  assert.ok(start.argv.includes("--report-to"));
  assert.equal(start.debug, false);
  assert.equal(start.recipeFileMode, "600");
  assert.equal(start.recipeDirMode, "700");
  // The run's own process group, led by the shim that records the CLI's exit (process.ts).
  assert.notEqual(start.pgid, _agent.pid, "not the agent's group");
  assert.equal(start.pgid, start.ppid, "the shim, the CLI's parent, leads the group");
});

Deno.test("a non-zero exit is FAILURE with the exit code; both outcomes in one agent", async () => {
  await using s = await setup();
  const ok = s.sim.createRequest({ args: { recipe: recipe({ lines: 2 }) } });
  const bad = s.sim.createRequest({ args: { recipe: recipe({ exit_code: 3, lines: 2 }) } });
  await using _agent = await s.startAgent();
  assert.equal((await terminal(s.sim, ok)).status, "SUCCESS");
  const failed = await terminal(s.sim, bad);
  assert.equal(failed.status, "FAILURE");
  assert.match(failed.report!, /Execution finished with errors\./);
  assert.match(failed.report!, /Failed to execute 'datahub ingest', exit code 3/);
});

Deno.test("two agents on one simulator run 50 requests, each exactly once", async () => {
  await using s = await setup({ sim: { searchLagMs: 300 } });
  const urns = Array.from(
    { length: 50 },
    () => s.sim.createRequest({ args: { recipe: recipe({ sleep_ms: 50 }) } }),
  );
  await using _a = await s.startAgent({ agent: { max_concurrent: 4, poll_interval: "100ms" } });
  await using _b = await s.startAgent({ agent: { max_concurrent: 4, poll_interval: "100ms" } });
  for (const urn of urns) assert.equal((await terminal(s.sim, urn, 90_000)).status, "SUCCESS");
  const starts = (await s.cli.readJournal()).filter((e) => e.event === "start");
  const counts = new Map<string, number>();
  for (const e of starts) counts.set(e.runId!, (counts.get(e.runId!) ?? 0) + 1);
  assert.equal(counts.size, 50, "every request ran");
  assert.deepEqual([...counts.values()].filter((n) => n !== 1), [], "no request ran twice");
  for (const urn of urns) {
    const terminalWrites = s.sim.resultWrites(urn).filter((w) => w.value.status !== "RUNNING");
    assert.equal(terminalWrites.length, 1, `one terminal write for ${urn}`);
  }
  // Both agents did work (the pool shares the load).
  const owners = new Set(
    urns.map((u) =>
      s.sim.resultWrites(u).at(-1)!.systemMetadata?.properties as Record<string, string> | undefined
    )
      .map((p) => p?.agentInstance),
  );
  assert.equal(owners.size, 2, `owners: ${[...owners].join(", ")}`);
});

Deno.test("a claim lost to another agent (412) is skipped without running or noise", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({ args: { recipe: recipe() } });
  // Slow the claim write down; meanwhile "another agent" creates the result.
  s.sim.addFault({ match: "async=false", latencyMs: 600, times: 1 });
  await using agent = await s.startAgent();
  await s.sim.waitFor(
    () => s.sim.requests().some((r) => r.method === "POST" && r.path.includes("async=false")),
    10_000,
    "claim attempt",
  );
  s.sim.setResult(urn, {
    status: "RUNNING",
    startTimeMs: Date.now(),
    report: "claimed by another agent",
  });
  await s.sim.waitFor(() => s.sim.rejectedWrites(urn).length > 0, 10_000, "rejected claim");
  assert.equal(s.sim.rejectedWrites(urn)[0]!.status, 412);
  await new Promise((r) => setTimeout(r, 800));
  assert.equal((await s.cli.readJournal()).length, 0, "nothing ran");
  assert.equal(s.sim.result(urn)!.value.report, "claimed by another agent");
  const noisy = agent.logs().filter((l) => l.level === "warn" || l.level === "error");
  assert.deepEqual(noisy, [], "a lost race is not a warning");
});

Deno.test("freed slots trigger an early poll; at most max_concurrent runs at once", async () => {
  await using s = await setup();
  const urns = Array.from(
    { length: 6 },
    () => s.sim.createRequest({ args: { recipe: recipe({ sleep_ms: 700 }) } }),
  );
  await using _agent = await s.startAgent({ agent: { max_concurrent: 2, poll_interval: "30s" } });
  for (const urn of urns) assert.equal((await terminal(s.sim, urn, 30_000)).status, "SUCCESS");
  const journal = await s.cli.readJournal();
  // Replay the journal: never more than 2 runs alive at once.
  const events = journal.map((e) => ({ at: e.at, d: e.event === "start" ? 1 : -1 })).sort((a, b) =>
    a.at - b.at || a.d - b.d
  );
  let live = 0, peak = 0;
  for (const e of events) peak = Math.max(peak, live += e.d);
  assert.equal(peak, 2);
  // With a 30 s poll interval, all six finished well before a second timed poll: nudges did it.
  const discoveries =
    s.sim.requests().filter((r) => r.operationName === "ingestAgentDiscover").length;
  assert.ok(discoveries >= 3, `discoveries: ${discoveries}`);
});

Deno.test("SIGTERM stops the agent cleanly with exit code 0", async () => {
  await using s = await setup();
  const agent: AgentProcess = await s.startAgent();
  await s.sim.waitFor(
    () => s.sim.requests().some((r) => r.operationName === "ingestAgentDiscover"),
    15_000,
    "first poll",
  );
  const exit = await agent.stop();
  assert.deepEqual(exit, { code: 0, signal: null });
  assert.ok(agent.logs().some((l) => l.msg === "ingest-agent stopped"));
});

Deno.test("validate: a valid file passes; an unknown key and a bad duration are named; exit 2", async () => {
  await using s = await setup();
  const good = await s.writeConfig();
  const ok = await runAgentOnce(["validate", "--config", good]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /valid/);
  const bad = path.join(s.dir, "bad.yml");
  await writeFile(
    bad,
    stringify({ agent: { poll_interval: "5 parsecs", max_concurent: 3 }, surprise: true }),
  );
  const res = await runAgentOnce(["validate", "--config", bad]);
  assert.equal(res.code, 2);
  assert.match(res.stderr, /^agent\.poll_interval: expected a duration/m);
  assert.match(res.stderr, /^agent\.max_concurent: unknown key/m);
  assert.match(res.stderr, /^surprise: unknown key/m);
  // The agent refuses to start on it, with the same exit code.
  const run = await runAgentOnce(["--config", bad]);
  assert.equal(run.code, 2);
});

Deno.test("command line: --version, --help, bad usage", async () => {
  const version = await runAgentOnce(["--version"]);
  assert.equal(version.code, 0);
  assert.match(version.stdout, /^ingest-agent \d+\.\d+\.\d+/);
  const help = await runAgentOnce(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /validate --config/);
  const bad = await runAgentOnce(["--frobnicate"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /unknown argument '--frobnicate'/);
  const missing = await runAgentOnce(["--config", "/nonexistent/agent.yml"]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /file not found/);
});

Deno.test("the DataHub Actions executor pipeline file works as the configuration", async () => {
  await using s = await setup({ sim: { token: "unused" } });
  // The stock file (SPEC §4.1) as it is: GMS address, system client and executor id from the environment.
  const file = new URL("../fixtures/executor.yaml", import.meta.url).pathname;
  const urn = s.sim.createRequest({ executorId: "remote-pool", args: { recipe: recipe() } });
  const other = s.sim.createRequest({ executorId: "default", args: { recipe: recipe() } });
  // The Actions file has no agent block: the datahub CLI comes from PATH, like the Python executor.
  const env = {
    ...Deno.env.toObject(),
    EXECUTOR_ID: "remote-pool",
    DATAHUB_GMS_HOST: new URL(s.sim.url).hostname,
    DATAHUB_GMS_PORT: new URL(s.sim.url).port,
    PATH: `${path.dirname(s.cli.path)}:${Deno.env.get("PATH")}`,
    HOME: s.dir,
  };
  const validate = await runAgentOnce(["validate", "--config", file], { env });
  assert.equal(validate.code, 0, validate.stderr);
  assert.match(validate.stdout, /actions form, executor_id remote-pool/);
  await using agent = spawnAgent(file, { env });
  assert.equal((await terminal(s.sim, urn)).status, "SUCCESS");
  assert.equal(s.sim.result(other), undefined, "a request of another executor id is left alone");
  assert.ok(agent.stdout.includes("is ignored"), "one warning about the Kafka source");
  assert.ok(
    s.sim.requests().every((r) => r.path === "/health" || r.auth === "system"),
    "system client auth",
  );
});

Deno.test({
  name: "the executable runs with neither Deno nor Node on PATH",
  ignore: !usingBinary(),
  async fn() {
    await using s = await setup();
    const urn = s.sim.createRequest({ args: { recipe: recipe({ lines: 1 }) } });
    const env = { PATH: "/usr/bin:/bin", HOME: s.dir };
    // This machine has node in /usr/bin: the agent runs in a mount namespace where it is hidden.
    const probe = await new Deno.Command("/usr/bin/unshare", {
      args: [
        "-m",
        "/bin/sh",
        "-c",
        "for n in $(command -v -a node); do mount --bind /dev/null $n; done; node --version; deno --version",
      ],
      env,
      clearEnv: true,
    }).output();
    assert.notEqual(probe.code, 0, "neither node nor deno can run in the test's environment");
    await using agent = spawnAgent(await s.writeConfig(), { env, clearEnv: true, hideNode: true });
    assert.equal((await terminal(s.sim, urn)).status, "SUCCESS", agent.stderr);
  },
});
