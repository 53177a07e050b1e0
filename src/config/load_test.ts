/** Loading a configuration file: the problems `validate` prints for the file itself. */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { compileConfig, ConfigError, type ConfigIssue, loadConfig } from "./config.ts";
import { serverUrlProblem } from "./server_url.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "load-test-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function loadIssues(file: string, env: Record<string, string> = {}): Promise<ConfigIssue[]> {
  const err = await loadConfig(file, { env, home: "/h" }).then(
    () => assert.fail("expected a rejection"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${err}`);
  return err.issues;
}

function compileIssues(raw: unknown, env: Record<string, string> = {}): ConfigIssue[] {
  try {
    compileConfig(raw, { env, home: "/h" });
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${err}`);
    return err.issues;
  }
  assert.fail("expected the configuration to be rejected");
}

Deno.test("loadConfig: a missing file names its path, a relative one also resolved", async () => {
  await withDir(async (dir) => {
    const file = path.join(dir, "agent.yml");
    assert.deepEqual(await loadIssues(file), [{
      path: "(file)",
      message: `file not found: ${file}`,
    }]);
    const [relative] = await loadIssues("no-such-dir-4711/agent.yml");
    assert.equal(
      relative!.message,
      `file not found: no-such-dir-4711/agent.yml (${path.resolve("no-such-dir-4711/agent.yml")})`,
    );
  });
});

Deno.test("loadConfig: a directory is a sentence naming it, not EISDIR", async () => {
  await withDir(async (dir) => {
    const conf = path.join(dir, "conf");
    await mkdir(conf);
    const [issue, ...rest] = await loadIssues(conf);
    assert.deepEqual(rest, []);
    assert.equal(
      issue!.message,
      `${conf} is a directory, not a configuration file: give the file's path (e.g. --config ${
        path.join(conf, "agent.yml")
      })`,
    );
    assert.doesNotMatch(issue!.message, /EISDIR/);
  });
});

Deno.test("loadConfig: every YAML error at file:line:column, one line each", async () => {
  await withDir(async (dir) => {
    const file = path.join(dir, "agent.yml");
    await writeFile(file, "agent:\n  poll_interval: 5s\n  poll_interval: 6s\n\tbad: 1\n");
    const issues = await loadIssues(file);
    assert.ok(issues.length >= 2, JSON.stringify(issues));
    assert.deepEqual(issues[0], {
      path: `${file}:3:3`,
      message: "not valid YAML: Map keys must be unique",
    });
    for (const i of issues) {
      assert.match(
        i.path,
        new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:\\d+:\\d+$`),
      );
      assert.ok(!i.message.includes("\n"), i.message);
    }
  });
});

Deno.test("compileConfig: an unset ${VAR} is one problem; no knock-on error at that key", () => {
  assert.deepEqual(compileIssues({ datahub: { server: "${GMS_URL}" } }), [{
    path: "datahub.server",
    message: "environment variable GMS_URL is not set",
  }]);
  assert.deepEqual(compileIssues({ datahub: { server: "http://${GMS_HOST}:8080" } }), [{
    path: "datahub.server",
    message: "environment variable GMS_HOST is not set",
  }]);
  // In a list too (interpolation says pass_env[0], the schema pass_env.0).
  assert.deepEqual(compileIssues({ ingestion: { pass_env: ["${EXTRA_VARS}"] } }), [{
    path: "ingestion.pass_env[0]",
    message: "environment variable EXTRA_VARS is not set",
  }]);
  // Other keys' problems are still all reported.
  const issues = compileIssues({ executor_id: "${POOL}", agent: { poll_interval: "soon" } });
  assert.deepEqual(issues.map((i) => i.path).sort(), ["agent.poll_interval", "executor_id"]);
  assert.match(issues.find((i) => i.path === "executor_id")!.message, /POOL is not set/);
});

Deno.test('datahub.server: any port (also the Fetch standard\'s "bad ports"); a scheme and host are needed', () => {
  for (
    const ok of [
      "http://gms:8080",
      "https://gms",
      "https://gms:443/api/gms",
      "http://[::1]:9002",
      "http://gms:10080",
      "http://gms:6667",
    ]
  ) {
    assert.equal(serverUrlProblem(ok), undefined, ok);
  }
});

Deno.test("datahub.server: not a URL, or no host, is said without echoing the value", () => {
  assert.match(serverUrlProblem("gms:8080")!, /expected an http:\/\/ or https:\/\/ URL/);
  const bad = serverUrlProblem("http://u:secret-pw@:8080")!;
  assert.ok(bad && !bad.includes("secret-pw"), bad);
});
