import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import {
  compileConfig,
  type CompileOptions,
  ConfigError,
  type ConfigIssue,
  loadConfig,
} from "./config.ts";
import { AgentError } from "../errors.ts";

const HOME = "/home/tester";

function compile(raw: unknown, options: CompileOptions = {}) {
  return compileConfig(raw, { env: {}, home: HOME, ...options });
}

/** The issues of a configuration that must be rejected. */
function issuesOf(raw: unknown, options: CompileOptions = {}): ConfigIssue[] {
  try {
    compile(raw, options);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${err}`);
    assert.ok(err instanceof AgentError);
    assert.equal(err.code, "CONFIG_INVALID");
    return err.issues;
  }
  assert.fail("expected the configuration to be rejected");
}

function paths(issues: ConfigIssue[]): string[] {
  return issues.map((i) => i.path).sort();
}

// The stock DataHub Actions executor pipeline (SPEC §4.1), shared with the integration test.
const STOCK_EXECUTOR_YAML = readFileSync(
  new URL("../../test/fixtures/executor.yaml", import.meta.url),
  "utf8",
);

Deno.test("compileConfig: an empty file gives the documented defaults", () => {
  for (const raw of [{}, null, undefined]) {
    const { config, warnings, form } = compile(raw);
    assert.equal(form, "native");
    assert.deepEqual(warnings, []);
    assert.equal(config.executorId, "default");
    assert.deepEqual(config.datahub, {
      server: "http://localhost:8080",
      token: "",
      systemClientId: "",
      systemClientSecret: "",
      timeoutMs: 30_000,
      tokenFile: "",
      proxy: "",
      tls: { caFile: "", certFile: "", keyFile: "", insecureSkipVerify: false },
    });
    assert.deepEqual(config.agent, {
      maxConcurrent: 4,
      pollIntervalMs: 5_000,
      heartbeatIntervalMs: 5_000,
      leaseTtlMs: 60_000,
      cancelGraceMs: 30_000,
      shutdownTimeoutMs: 5 * 60_000,
      onShutdown: "drain",
      onOverlap: { scheduled: "skip", manual: "wait", sourceTypes: {} },
      sourceLimits: {},
      runMemoryLimitBytes: 0,
      minAvailableMemoryBytes: 0,
      stateDir: `${HOME}/.local/state/ingest-agent`,
      workDir: `${HOME}/.local/state/ingest-agent/work`,
      maxRequestAgeMs: 24 * 3_600_000,
      resultRetryForMs: 24 * 3_600_000,
    });
    assert.deepEqual(config.ingestion, {
      runtime: "preinstalled",
      datahubCommand: "datahub",
      taskTimeoutMs: 24 * 3_600_000,
      timeoutsMs: {},
      logRetentionMs: 7 * 86_400_000,
      logRetentionBytes: 1024 ** 3,
      staleOutputMs: 2 * 60_000,
      passEnv: [],
      envSecretsPrefix: "",
      python: "python3",
      installer: "auto",
      venvDir: `${HOME}/.local/state/ingest-agent/venvs`,
      venvCacheMax: 10,
      latestTtlMs: 24 * 3_600_000,
      indexUrl: "",
      extraIndexUrls: [],
      findLinks: [],
      offline: false,
      bundledDir: "/opt/datahub/venvs",
      allowedSourceTypes: undefined,
      allowExtraPip: true,
    });
    assert.deepEqual(config.observability, { listen: "", logLevel: "info", logFormat: "auto" });
  }
});

Deno.test("compileConfig: pass_env and env_secrets_prefix are checked", () => {
  const { config } = compile({
    ingestion: { pass_env: ["AWS_*", "JAVA_HOME"], env_secrets_prefix: "RECIPE_" },
  });
  assert.deepEqual(config.ingestion.passEnv, ["AWS_*", "JAVA_HOME"]);
  assert.equal(config.ingestion.envSecretsPrefix, "RECIPE_");
  assert.throws(() => compile({ ingestion: { pass_env: ["AWS-*"] } }), /ingestion\.pass_env\.0/);
  assert.throws(() => compile({ ingestion: { pass_env: ["*"] } }), /ingestion\.pass_env\.0/);
  assert.throws(
    () => compile({ ingestion: { env_secrets_prefix: "A B" } }),
    /ingestion\.env_secrets_prefix/,
  );
});

Deno.test("compileConfig: plain HTTP with credentials to another host is a warning", () => {
  const remote = compile({ datahub: { server: "http://gms.example.com:8080", token: "t0ken" } });
  assert.equal(remote.warnings.length, 1);
  assert.match(remote.warnings[0]!, /plain HTTP to another host: the token travels in clear/);
  for (const server of ["http://localhost:8080", "http://127.0.0.1:8080", "http://[::1]:8080"]) {
    assert.deepEqual(compile({ datahub: { server, token: "t0ken" } }).warnings, [], server);
  }
  assert.deepEqual(
    compile({ datahub: { server: "https://gms.example.com", token: "t" } }).warnings,
    [],
  );
  assert.deepEqual(compile({ datahub: { server: "http://gms.example.com" } }).warnings, []);
});

Deno.test("compileConfig: explicit values are compiled (durations to ms, sizes to bytes)", () => {
  const { config } = compile({
    executor_id: "remote-1",
    datahub: { server: "https://gms.example.com:8443///", token: "tok", timeout: "10s" },
    agent: {
      max_concurrent: 2,
      poll_interval: "250ms",
      heartbeat_interval: 2,
      lease_ttl: "1m",
      cancel_grace: "0s",
    },
    ingestion: {
      task_timeout: "2h",
      timeouts: { snowflake: "6h" },
      log_retention: "1d",
      log_retention_bytes: "500MiB",
    },
    observability: { log_level: "debug", log_format: "json", listen: "127.0.0.1:9100" },
  });
  assert.equal(config.executorId, "remote-1");
  assert.equal(config.datahub.server, "https://gms.example.com:8443");
  assert.equal(config.datahub.token, "tok");
  assert.equal(config.datahub.timeoutMs, 10_000);
  assert.equal(config.agent.maxConcurrent, 2);
  assert.equal(config.agent.pollIntervalMs, 250);
  assert.equal(config.agent.heartbeatIntervalMs, 2_000);
  assert.equal(config.agent.leaseTtlMs, 60_000);
  assert.equal(config.agent.cancelGraceMs, 0);
  assert.equal(config.ingestion.taskTimeoutMs, 7_200_000);
  assert.deepEqual(config.ingestion.timeoutsMs, { snowflake: 6 * 3_600_000 });
  assert.equal(config.ingestion.logRetentionMs, 86_400_000);
  assert.equal(config.ingestion.logRetentionBytes, 500 * 1024 ** 2);
  assert.equal(config.observability.logLevel, "debug");
  assert.equal(config.observability.logFormat, "json");
  assert.equal(config.observability.listen, "127.0.0.1:9100");
});

Deno.test("compileConfig: an unknown key is reported with its dotted path", () => {
  const issues = issuesOf({ agent: { pol_interval: "5s" } });
  assert.deepEqual(paths(issues), ["agent.pol_interval"]);
  assert.match(issues[0]!.message, /unknown key/);
  const top = issuesOf({ executorid: "x" });
  assert.deepEqual(paths(top), ["executorid"]);
});

Deno.test("compileConfig: the error message lists each issue as `path: message`", () => {
  try {
    compile({ agent: { pol_interval: "5s" } }, { file: "/etc/agent.yml" });
    assert.fail("expected a ConfigError");
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, /^invalid configuration \/etc\/agent\.yml:\n/);
    assert.match(err.message, /\n {2}agent\.pol_interval: unknown key/);
  }
});

Deno.test("compileConfig: a bad duration names agent.poll_interval and shows the value", () => {
  const issues = issuesOf({ agent: { poll_interval: "5 seconds" } });
  assert.deepEqual(paths(issues), ["agent.poll_interval"]);
  assert.match(issues[0]!.message, /expected a duration/);
  assert.match(issues[0]!.message, /"5 seconds"/);
});

Deno.test("compileConfig: a duration below the minimum is rejected", () => {
  const issues = issuesOf({ agent: { poll_interval: "10ms" } });
  assert.deepEqual(paths(issues), ["agent.poll_interval"]);
  assert.match(issues[0]!.message, /at least 100ms/);
});

Deno.test("compileConfig: every problem is reported at once", () => {
  const issues = issuesOf(
    {
      bogus: true,
      datahub: { server: "ftp://gms", token: "${MISSING_TOKEN}" },
      agent: { pol_interval: "5s", heartbeat_interval: "often", max_concurrent: 0 },
      ingestion: { runtime: "docker", log_retention_bytes: "lots" },
      observability: { log_level: "loud" },
    },
  );
  assert.deepEqual(paths(issues), [
    "agent.heartbeat_interval",
    "agent.max_concurrent",
    "agent.pol_interval",
    "bogus",
    "datahub.server",
    "datahub.token",
    "ingestion.log_retention_bytes",
    "ingestion.runtime",
    "observability.log_level",
  ]);
  const byPath = new Map(issues.map((i) => [i.path, i.message]));
  assert.match(byPath.get("datahub.token")!, /MISSING_TOKEN/);
  assert.match(byPath.get("datahub.server")!, /http:\/\/ or https:\/\//);
  assert.match(byPath.get("ingestion.runtime")!, /preinstalled/);
});

Deno.test("compileConfig: ${VAR} and ${VAR:-default} are interpolated from the injected env", () => {
  const { config } = compile(
    {
      executor_id: "${POOL:-default-pool}",
      datahub: { server: "http://${GMS_HOST}:${GMS_PORT:-8080}", token: "${TOKEN}" },
      agent: { poll_interval: "${POLL:-7s}" },
    },
    { env: { GMS_HOST: "gms.internal", TOKEN: "a$&b$1c" } },
  );
  assert.equal(config.executorId, "default-pool");
  assert.equal(config.datahub.server, "http://gms.internal:8080");
  // Replacement patterns in a value are taken literally.
  assert.equal(config.datahub.token, "a$&b$1c");
  assert.equal(config.agent.pollIntervalMs, 7_000);
});

Deno.test("compileConfig: a set variable wins over the default", () => {
  const { config } = compile(
    { executor_id: "${POOL:-default-pool}", agent: { poll_interval: "${POLL:-7s}" } },
    { env: { POOL: "east", POLL: "3s" } },
  );
  assert.equal(config.executorId, "east");
  assert.equal(config.agent.pollIntervalMs, 3_000);
});

Deno.test("compileConfig: a missing variable without default is an error naming the path", () => {
  const issues = issuesOf({ datahub: { token: "${DATAHUB_TOKEN}" } }, { env: { OTHER: "x" } });
  assert.deepEqual(paths(issues), ["datahub.token"]);
  assert.match(issues[0]!.message, /DATAHUB_TOKEN/);
  assert.match(issues[0]!.message, /not set/);
});

Deno.test("compileConfig: a missing variable inside a list names the element", () => {
  const issues = issuesOf({ ingestion: { timeouts: { mysql: "1h" } }, extra: ["${NOPE}"] });
  assert.ok(paths(issues).includes("extra[0]"), JSON.stringify(issues));
  assert.ok(paths(issues).includes("extra"), JSON.stringify(issues));
});

Deno.test("compileConfig: ~ is expanded with the injected home; relative paths become absolute", () => {
  const { config } = compile({ agent: { state_dir: "~/state", work_dir: "~" } });
  assert.equal(config.agent.stateDir, path.join(HOME, "state"));
  assert.equal(config.agent.workDir, HOME);
  const rel = compile({ agent: { work_dir: "work/runs" } }).config;
  assert.ok(path.isAbsolute(rel.agent.workDir));
  assert.equal(rel.agent.workDir, path.resolve("work/runs"));
});

Deno.test("compileConfig: the stock DataHub Actions executor.yaml is accepted", () => {
  const { config, warnings, form } = compile(parseYaml(STOCK_EXECUTOR_YAML));
  assert.equal(form, "actions");
  assert.equal(config.executorId, "default");
  assert.equal(config.datahub.server, "http://localhost:8080");
  assert.equal(config.datahub.systemClientId, "__datahub_system");
  assert.equal(config.datahub.systemClientSecret, "JohnSnowKnowsNothing");
  assert.equal(config.datahub.token, "");
  // Everything else takes the native defaults.
  assert.equal(config.agent.pollIntervalMs, 5_000);
  assert.equal(config.agent.maxConcurrent, 4);
  assert.ok(
    warnings.some((w) => /source/.test(w) && /Kafka/.test(w) && /ignored/.test(w)),
    `warnings: ${JSON.stringify(warnings)}`,
  );
});

Deno.test("compileConfig: the Actions file takes its values from the environment", () => {
  const { config } = compile(parseYaml(STOCK_EXECUTOR_YAML), {
    env: {
      EXECUTOR_ID: "remote-east",
      DATAHUB_GMS_PROTOCOL: "https",
      DATAHUB_GMS_HOST: "gms.corp",
      DATAHUB_GMS_PORT: "443",
      DATAHUB_SYSTEM_CLIENT_ID: "my_client",
      DATAHUB_SYSTEM_CLIENT_SECRET: "s3cr:et",
    },
  });
  assert.equal(config.executorId, "remote-east");
  assert.equal(config.datahub.server, "https://gms.corp:443");
  assert.equal(config.datahub.systemClientId, "my_client");
  assert.equal(config.datahub.systemClientSecret, "s3cr:et");
});

Deno.test("compileConfig: Actions form with a literal Basic id:secret header and a token", () => {
  const { config, warnings, form } = compile({
    action: { type: "executor", config: { executor_id: "pool-a" } },
    datahub: {
      server: "http://gms:8080",
      token: "tok-1",
      extra_headers: { Authorization: "Basic id:secret" },
    },
  });
  assert.equal(form, "actions");
  assert.equal(config.executorId, "pool-a");
  assert.equal(config.datahub.systemClientId, "id");
  assert.equal(config.datahub.systemClientSecret, "secret");
  assert.equal(config.datahub.token, "tok-1");
  // No Kafka source in this file: no warning about it.
  assert.ok(!warnings.some((w) => /Kafka/.test(w)), JSON.stringify(warnings));
});

Deno.test("compileConfig: Actions form with another action type is rejected", () => {
  const issues = issuesOf({ action: { type: "slack" }, datahub: { server: "http://gms:8080" } });
  assert.ok(paths(issues).includes("action.type"), JSON.stringify(issues));
});

Deno.test("compileConfig: system_client_id without a secret is an error", () => {
  const issues = issuesOf({ datahub: { system_client_id: "client" } });
  assert.equal(issues.length, 1);
  assert.match(issues[0]!.path, /^datahub\.system_client_(id|secret)$/);
  assert.match(issues[0]!.message, /together/);
  const reverse = issuesOf({ datahub: { system_client_secret: "s" } });
  assert.equal(reverse.length, 1);
});

Deno.test("compileConfig: lease_ttl must exceed heartbeat_interval", () => {
  const equal = issuesOf({ agent: { heartbeat_interval: "5s", lease_ttl: "5s" } });
  assert.deepEqual(paths(equal), ["agent.lease_ttl"]);
  assert.match(equal[0]!.message, /heartbeat_interval/);
  const shorter = issuesOf({ agent: { heartbeat_interval: "30s", lease_ttl: "10s" } });
  assert.deepEqual(paths(shorter), ["agent.lease_ttl"]);
  // Just above is fine.
  const ok = compile({ agent: { heartbeat_interval: "5s", lease_ttl: "5001ms" } }).config;
  assert.equal(ok.agent.leaseTtlMs, 5_001);
});

Deno.test("compileConfig: the result is deeply frozen", () => {
  const { config } = compile({ ingestion: { timeouts: { mysql: "1h" } } });
  assert.ok(Object.isFrozen(config));
  assert.ok(Object.isFrozen(config.datahub));
  assert.ok(Object.isFrozen(config.agent));
  assert.ok(Object.isFrozen(config.ingestion));
  assert.ok(Object.isFrozen(config.ingestion.timeoutsMs));
  assert.ok(Object.isFrozen(config.observability));
  assert.throws(() => {
    (config.agent as { pollIntervalMs: number }).pollIntervalMs = 1;
  }, TypeError);
  assert.throws(() => {
    (config.ingestion.timeoutsMs as Record<string, number>).x = 1;
  }, TypeError);
  assert.equal(config.agent.pollIntervalMs, 5_000);
});

Deno.test("compileConfig: a document that is not a mapping is rejected", () => {
  assert.deepEqual(paths(issuesOf(["a", "b"])), ["(root)"]);
  assert.deepEqual(paths(issuesOf("just text")), ["(root)"]);
});

Deno.test("loadConfig: a missing file is CONFIG_INVALID naming the file", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "config-test-"));
  try {
    const file = path.join(dir, "nope.yml");
    const err = await loadConfig(file, { env: {}, home: HOME }).then(
      () => assert.fail("expected a rejection"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ConfigError);
    assert.equal(err.code, "CONFIG_INVALID");
    assert.ok(err.message.includes(file), err.message);
    assert.deepEqual(err.issues, [{ path: "(file)", message: `file not found: ${file}` }]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

Deno.test("loadConfig: invalid YAML is CONFIG_INVALID", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "config-test-"));
  try {
    const file = path.join(dir, "agent.yml");
    await writeFile(file, "agent:\n  poll_interval: [5s\n  lease_ttl: 60s\n");
    const err = await loadConfig(file, { env: {}, home: HOME }).then(
      () => assert.fail("expected a rejection"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ConfigError);
    assert.equal(err.code, "CONFIG_INVALID");
    assert.equal(err.issues.length, 1);
    assert.equal(err.issues[0]!.path, `${file}:3:3`);
    assert.match(err.issues[0]!.message, /^not valid YAML: Flow sequence [^\n]*\]$/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

Deno.test("loadConfig: a valid file is read, interpolated and compiled", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "config-test-"));
  try {
    const file = path.join(dir, "agent.yml");
    await writeFile(
      file,
      "executor_id: ${POOL}\nagent:\n  poll_interval: 2s\n  state_dir: ~/st\n",
    );
    const { config, form } = await loadConfig(file, { env: { POOL: "p1" }, home: HOME });
    assert.equal(form, "native");
    assert.equal(config.executorId, "p1");
    assert.equal(config.agent.pollIntervalMs, 2_000);
    assert.equal(config.agent.stateDir, path.join(HOME, "st"));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

Deno.test("loadConfig: the documented agent.yml compiles to exactly the built-in defaults", async () => {
  const file = new URL("../../agent.yml", import.meta.url).pathname;
  const documented = await loadConfig(file, { env: {}, home: HOME });
  const builtIn = compile({});
  assert.deepEqual(documented.config, builtIn.config);
  assert.deepEqual(documented.warnings, []);
});

const base = (headers: Record<string, string>, extra: Record<string, unknown> = {}) => ({
  ...extra,
  action: { type: "executor" },
  datahub: { server: "http://gms:8080", extra_headers: headers },
});

Deno.test("Actions form: a lowercase authorization header is understood", () => {
  const { config } = compileConfig(base({ authorization: "Basic id:secret" }), {
    env: {},
    home: "/h",
  });
  assert.equal(config.datahub.systemClientId, "id");
});

Deno.test("Actions form: a Bearer Authorization header is the token; an unusable one gives a warning", () => {
  const { config } = compileConfig(base({ Authorization: "Bearer abc" }), { env: {}, home: "/h" });
  assert.equal(config.datahub.token, "abc");
  const { warnings } = compileConfig(base({ Authorization: "Digest xyz" }), {
    env: {},
    home: "/h",
  });
  assert.ok(warnings.some((w) => /Authorization/.test(w)), JSON.stringify(warnings));
});

Deno.test("Actions form: a missing variable in the ignored Kafka source is not fatal", () => {
  const { config } = compileConfig(
    base({ Authorization: "Basic id:secret" }, {
      source: { type: "kafka", config: { bootstrap: "${KAFKA_BOOTSTRAP_SERVER}" } },
    }),
    { env: {}, home: "/h" },
  );
  assert.equal(config.datahub.systemClientId, "id");
});

Deno.test("agent.run_memory_limit and agent.min_available_memory are sizes (0 = off); a bad one names its key", () => {
  const { config } = compile({
    agent: { run_memory_limit: "4GiB", min_available_memory: "512MiB" },
  });
  assert.equal(config.agent.runMemoryLimitBytes, 4 * 1024 ** 3);
  assert.equal(config.agent.minAvailableMemoryBytes, 512 * 1024 ** 2);
  assert.equal(compile({ agent: { run_memory_limit: 0 } }).config.agent.runMemoryLimitBytes, 0);
  const [issue] = issuesOf({ agent: { min_available_memory: "lots" } });
  assert.equal(issue?.path, "agent.min_available_memory");
  assert.match(issue!.message, /500MiB/);
});
