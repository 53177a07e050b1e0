/**
 * Executing requests exactly as DataHub expects (issue 3): tasks, recipes, secrets, results and
 * GMS versions, through the agent executable and the simulator.
 */
import assert from "node:assert/strict";
import { recipe, setup, terminal } from "../harness.ts";

Deno.test("debug_mode adds --debug (any case, also debugMode)", async () => {
  await using s = await setup();
  const a = s.sim.createRequest({ args: { recipe: recipe(), debug_mode: "TRUE" } });
  const b = s.sim.createRequest({ args: { recipe: recipe(), debugMode: "true" } });
  const c = s.sim.createRequest({ args: { recipe: recipe(), debug_mode: "false" } });
  await using _agent = await s.startAgent();
  for (const urn of [a, b, c]) assert.equal((await terminal(s.sim, urn)).status, "SUCCESS");
  const starts = (await s.cli.readJournal()).filter((e) => e.event === "start");
  const byRun = new Map(starts.map((e) => [e.runId, e]));
  for (const urn of [a, b]) {
    const e = byRun.get(urn.split(":").pop()!)!;
    assert.equal(e.argv[0], "--debug");
    assert.equal(e.debug, true);
  }
  assert.equal(byRun.get(c.split(":").pop()!)!.debug, false);
});

Deno.test("TEST_CONNECTION runs the connection test, is SUCCESS on exit 0, and bypasses a full queue", async () => {
  await using s = await setup();
  const long = [1, 2].map(() =>
    s.sim.createRequest({ args: { recipe: recipe({ sleep_ms: 6000 }) } })
  );
  await using _agent = await s.startAgent({ agent: { max_concurrent: 2, poll_interval: "200ms" } });
  await s.sim.waitFor(
    () => long.every((u) => s.sim.result(u)?.value.status === "RUNNING"),
    10_000,
    "slots busy",
  );
  const t0 = Date.now();
  const test = s.sim.createRequest({
    task: "TEST_CONNECTION",
    source: { type: "MANUAL_TEST_CONNECTION" },
    args: { recipe: recipe({ test_connection_capable: false }) },
  });
  const result = await terminal(s.sim, test, 5000);
  assert.ok(Date.now() - t0 < 4000, "picked up while both slots were busy");
  assert.ok(
    long.every((u) => s.sim.result(u)?.value.status === "RUNNING"),
    "the long runs are still going",
  );
  // Exit 0 is SUCCESS whatever the report says: the UI reads the structured report.
  assert.equal(result.status, "SUCCESS");
  assert.equal(result.structuredReport?.type, "TEST_CONNECTION");
  assert.equal(
    JSON.parse(result.structuredReport!.serializedValue).basic_connectivity.capable,
    false,
  );
  const entry = (await s.cli.readJournal()).find((e) => e.mode === "test-connection")!;
  assert.deepEqual(entry.argv.slice(0, 3), ["ingest", "-c", entry.recipePath]);
  assert.ok(entry.argv.includes("--test-source-connection"));
});

Deno.test("an unsupported task is FAILURE naming the task, never silence", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({ task: "RUN_MONITORS", args: {} });
  await using _agent = await s.startAgent();
  const r = await terminal(s.sim, urn);
  assert.equal(r.status, "FAILURE");
  assert.match(r.report!, /Unsupported task 'RUN_MONITORS'/);
  assert.equal((await s.cli.readJournal()).length, 0);
});

Deno.test("a malformed recipe is FAILURE showing the error position, not the recipe text", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({
    args: {
      recipe: '{"source": {"type": "mysql", "config": {"password": "hunter2-PLAIN"}},, "sink": {}}',
    },
  });
  await using _agent = await s.startAgent();
  const r = await terminal(s.sim, urn);
  assert.equal(r.status, "FAILURE");
  assert.match(r.report!, /recipe is not valid JSON: .*line 1, column \d+/);
  assert.ok(!r.report!.includes("hunter2-PLAIN"), "the recipe text is not echoed");
});

Deno.test("a YAML recipe is accepted", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({
    args: {
      recipe:
        "source:\n  type: fake\n  config:\n    fixture:\n      lines: 2\nsink:\n  type: console\n",
    },
  });
  await using _agent = await s.startAgent();
  assert.equal((await terminal(s.sim, urn)).status, "SUCCESS");
  const start = (await s.cli.readJournal()).find((e) => e.event === "start")!;
  assert.equal((start.recipe as { source: { type: string } }).source.type, "fake");
});

const TRICKY = `pa"ss\\word'\n  with: "yaml" {json} \${NOT_A_REF} end`;

Deno.test("secrets: quotes, backslashes and newlines survive; DataHub wins over env; nothing left unresolved", async () => {
  await using s = await setup({
    sim: { secrets: { DB_PASSWORD: TRICKY, SHARED: "from-datahub" } },
  });
  const urn = s.sim.createRequest({
    args: {
      recipe: JSON.stringify({
        source: {
          type: "fake",
          config: {
            password: "${DB_PASSWORD}",
            shared: "${SHARED}",
            only_env: "prefix-${ONLY_ENV}",
            left_for_cli: "${CLI_VAR:-x} $CLI_VAR",
            fixture: { lines: 1 },
          },
        },
        sink: { type: "console" },
      }),
    },
  });
  await using _agent = await s.startAgent({}, {
    env: { SHARED: "from-env", ONLY_ENV: "env-value" },
  });
  assert.equal((await terminal(s.sim, urn)).status, "SUCCESS");
  const start = (await s.cli.readJournal()).find((e) => e.event === "start")!;
  const config = (start.recipe as { source: { config: Record<string, string> } }).source.config;
  assert.equal(config.password, TRICKY);
  assert.equal(config.shared, "from-datahub", "a DataHub secret wins over the environment");
  assert.equal(config.only_env, "prefix-env-value");
  assert.equal(config.left_for_cli, "${CLI_VAR:-x} $CLI_VAR", "env syntax is left for the CLI");
  const raw = JSON.stringify(start.recipe);
  assert.ok(!/\$\{(DB_PASSWORD|SHARED|ONLY_ENV)\}/.test(raw), "no stored-secret reference left");
  assert.equal(s.sim.secretRequests().length, 1, "one getSecretValues call for all names");
});

Deno.test("a missing secret is FAILURE naming it; the CLI is not started", async () => {
  await using s = await setup({ sim: { secrets: { PRESENT: "present-value-1" } } });
  const urn = s.sim.createRequest({
    args: {
      recipe: JSON.stringify({
        source: { type: "fake", config: { a: "${PRESENT}", b: "${ABSENT_SECRET}" } },
      }),
    },
  });
  await using _agent = await s.startAgent();
  const r = await terminal(s.sim, urn);
  assert.equal(r.status, "FAILURE");
  assert.match(r.report!, /secret 'ABSENT_SECRET' not found/);
  assert.ok(!r.report!.includes("present-value-1"));
  assert.equal((await s.cli.readJournal()).length, 0);
});

Deno.test("caller guard: a token that may not decrypt secrets gets a FAILURE explaining the fix", async () => {
  await using s = await setup({ sim: { callerGuard: true, secrets: { PW: "guarded-value" } } });
  const urn = s.sim.createRequest({
    args: { recipe: JSON.stringify({ source: { type: "fake", config: { p: "${PW}" } } }) },
  });
  await using _agent = await s.startAgent();
  const r = await terminal(s.sim, urn);
  assert.equal(r.status, "FAILURE");
  assert.match(r.report!, /refused to decrypt secrets/);
  assert.match(r.report!, /system_client_id and datahub\.system_client_secret/);
  assert.match(r.report!, /SECRET_SERVICE_CALLER_GUARD_MODE/);
  assert.ok(s.sim.secretRequests().every((q) => !q.granted));
});

Deno.test("caller guard: system client credentials read secrets", async () => {
  await using s = await setup({ sim: { callerGuard: true, secrets: { PW: "guarded-value" } } });
  const urn = s.sim.createRequest({
    args: {
      recipe: JSON.stringify({
        source: { type: "fake", config: { p: "${PW}" } },
        sink: { type: "console" },
      }),
    },
  });
  await using _agent = await s.startAgent({
    datahub: {
      token: "",
      system_client_id: "__datahub_system",
      system_client_secret: "JohnSnowKnowsNothing",
    },
  });
  assert.equal((await terminal(s.sim, urn)).status, "SUCCESS");
  const start = (await s.cli.readJournal()).find((e) => e.event === "start")!;
  assert.equal(
    (start.recipe as { source: { config: { p: string } } }).source.config.p,
    "guarded-value",
  );
});

Deno.test("a sink-less recipe gets DATAHUB_GMS_URL and credentials in the run's environment, not in the recipe", async () => {
  await using s = await setup();
  const sinkless = s.sim.createRequest({
    args: {
      recipe: JSON.stringify({ source: { type: "datahub-gc", config: { fixture: { lines: 1 } } } }),
    },
  });
  const withSink = s.sim.createRequest({ args: { recipe: recipe() } });
  await using _agent = await s.startAgent();
  assert.equal((await terminal(s.sim, sinkless)).status, "SUCCESS");
  assert.equal((await terminal(s.sim, withSink)).status, "SUCCESS");
  const starts = (await s.cli.readJournal()).filter((e) => e.event === "start");
  const a = starts.find((e) => e.runId === sinkless.split(":").pop())!;
  assert.equal(a.env?.DATAHUB_GMS_URL, s.sim.url);
  assert.equal(a.env?.DATAHUB_GMS_TOKEN, s.sim.token);
  assert.ok(
    !JSON.stringify(a.recipe).includes(s.sim.token),
    "the token is not written into the recipe",
  );
  const b = starts.find((e) => e.runId === withSink.split(":").pop())!;
  assert.equal(b.env?.DATAHUB_GMS_TOKEN, null, "a recipe with its own sink gets no credentials");
  const report = s.sim.result(sinkless)!.value.report!;
  assert.ok(!report.includes(s.sim.token), "the token never reaches a report");
});

Deno.test("extra_env_vars reach the run; a malformed value is FAILURE naming the argument", async () => {
  await using s = await setup();
  const good = s.sim.createRequest({
    args: {
      recipe: recipe({ print_env: ["EXTRA_ONE"] }),
      extra_env_vars: JSON.stringify({ EXTRA_ONE: "1", EXTRA_FLAG: true }),
      extra_pip_requirements: '["sqlparse==0.4.3"]',
    },
  });
  const bad = s.sim.createRequest({ args: { recipe: recipe(), extra_env_vars: "{not json" } });
  await using _agent = await s.startAgent();
  const ok = await terminal(s.sim, good);
  assert.equal(ok.status, "SUCCESS");
  assert.match(ok.report!, /EXTRA_ONE=1/);
  assert.match(ok.report!, /extra_pip_requirements \["sqlparse==0\.4\.3"\] ignored/);
  const start = (await s.cli.readJournal()).find((e) => e.runId === good.split(":").pop())!;
  assert.equal(start.env?.EXTRA_FLAG, "true");
  const failed = await terminal(s.sim, bad);
  assert.equal(failed.status, "FAILURE");
  assert.match(failed.report!, /extra_env_vars is not valid JSON/);
});

Deno.test("exit codes: 137 and SIGKILL carry the out-of-memory hint; a missing CLI names the command", async () => {
  await using s = await setup();
  const oom = s.sim.createRequest({ args: { recipe: recipe({ exit_code: 137 }) } });
  const killed = s.sim.createRequest({ args: { recipe: recipe({ kill_self: "SIGKILL" }) } });
  const agent = await s.startAgent();
  const a = await terminal(s.sim, oom);
  assert.equal(a.status, "FAILURE");
  // Through the shim's shell, exit code 137 and death by SIGKILL are one status (128 + 9).
  assert.match(a.report!, /(exit code 137|signal SIGKILL),? likely because it ran out of memory/);
  const b = await terminal(s.sim, killed);
  assert.equal(b.status, "FAILURE");
  assert.match(b.report!, /killed by signal SIGKILL likely because it ran out of memory/);

  assert.equal((await agent.stop()).code, 0);
  // A CLI that cannot be found: nothing is claimed (test/integration/operator_test.ts), and the
  // error names the command.
  const missing = s.sim.createRequest({ args: { recipe: recipe() } });
  await using other = await s.startAgent({
    ingestion: { datahub_command: "/nonexistent/bin/datahub" },
  });
  const line = await s.sim.waitFor(
    () => other.logs().find((l) => l.level === "error" && l.problem !== undefined),
    15_000,
    "the runtime error",
  );
  assert.match(String(line.problem), /cannot start '\/nonexistent\/bin\/datahub': not found/);
  assert.equal(s.sim.result(missing), undefined, "left pending");
});

Deno.test("an oversize report drops the structured report first, with the executor's warning", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({ args: { recipe: recipe({ report_pad_bytes: 15_500_000 }) } });
  await using _agent = await s.startAgent();
  const r = await terminal(s.sim, urn, 60_000);
  assert.equal(r.status, "SUCCESS");
  assert.equal(r.structuredReport, undefined);
  assert.match(
    r.report!,
    /^WARNING: \S+ report exceeded limit of 15368520 chars and was truncated\.\nWARNING: \S+ report and structured report exceeded the combined limit of 15368520 chars, so the structured report was removed\.\n~~~~ Execution Summary/,
  );
  assert.ok(r.report!.length <= 15_368_520);
});

Deno.test("a report file that is not JSON is kept as text", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({
    args: { recipe: recipe({ report_text: "plain text report: 42 tables" }) },
  });
  await using _agent = await s.startAgent();
  const r = await terminal(s.sim, urn);
  assert.equal(r.structuredReport, undefined);
  assert.match(r.report!, /plain text report: 42 tables/);
});

Deno.test("GMS v1.1: discovery falls back to listExecutionRequests and checks executorId itself", async () => {
  await using s = await setup({ sim: { version: "v1.1.0" } });
  const mine = s.sim.createRequest({ executorId: "pool-a", args: { recipe: recipe() } });
  const theirs = s.sim.createRequest({ executorId: "pool-b", args: { recipe: recipe() } });
  await using agent = await s.startAgent({ executor_id: "pool-a" });
  assert.equal((await terminal(s.sim, mine)).status, "SUCCESS");
  await new Promise((r) => setTimeout(r, 600));
  assert.equal(s.sim.result(theirs), undefined, "another pool's request is untouched");
  const choices = agent.logs().filter((l) => /^discovery uses/.test(l.msg));
  assert.equal(choices.length, 1, "the choice is logged once");
  assert.match(choices[0]!.msg, /listExecutionRequests/);
});

Deno.test("a pending request older than max_request_age is closed as ABORTED, not run", async () => {
  await using s = await setup();
  const old = s.sim.createRequest({
    args: { recipe: recipe() },
    requestedAt: Date.now() - 3 * 3_600_000,
  });
  const fresh = s.sim.createRequest({ args: { recipe: recipe() } });
  await using _agent = await s.startAgent({ agent: { max_request_age: "1h" } });
  const r = await terminal(s.sim, old);
  assert.equal(r.status, "ABORTED");
  assert.match(r.report!, /waited 180 minutes .* no agent for executor 'default' picked it up/);
  assert.equal((await terminal(s.sim, fresh)).status, "SUCCESS");
  const ran = (await s.cli.readJournal()).map((e) => e.runId);
  assert.ok(!ran.includes(old.split(":").pop()!));
});

Deno.test("requests without executorId are served by the default pool; the User-Agent is ingest-agent's", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({ executorId: null, args: { recipe: recipe() } });
  await using _agent = await s.startAgent();
  assert.equal((await terminal(s.sim, urn)).status, "SUCCESS");
});
