/**
 * The operator's first hour (issue 18), through the executable and the GMS simulator: what a new
 * user meets first says why and what to do.
 */
import assert from "node:assert/strict";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { stringify } from "yaml";
import { runAgentOnce, setup, terminal } from "../harness.ts";

// ---------------------------------------------------------------------------------------------
// Items 5, 7, 8

type S = Awaited<ReturnType<typeof setup>>;

/** A request whose recipe reads these `${NAME}` secrets. */
function secretRequest(s: S, ...names: string[]): string {
  const config = Object.fromEntries(names.map((n, i) => [`p${i}`, `\${${n}}`]));
  return s.sim.createRequest({
    args: {
      recipe: JSON.stringify({ source: { type: "fake", config }, sink: { type: "console" } }),
    },
  });
}

/** The report of a run that failed on its secrets (no CLI started). */
async function failedReport(s: S, urn: string): Promise<string> {
  await using _agent = await s.startAgent();
  const r = await terminal(s.sim, urn);
  assert.equal(r.status, "FAILURE");
  assert.equal((await s.cli.readJournal()).length, 0, "the CLI never started");
  return r.report!;
}

Deno.test("5: a token without Manage Secrets on GMS v1.3.0: the report names the privilege, not the v1.6 caller guard", async () => {
  await using s = await setup({ sim: { version: "v1.3.0", manageSecrets: false } });
  const report = await failedReport(s, secretRequest(s, "PW"));
  assert.match(report, /refused to decrypt secrets for the agent's credentials \(token\)/);
  assert.match(
    report,
    /the token lacks the Manage Secrets privilege \(GMS v1\.3\.0 has no secret caller guard\)/,
  );
  assert.match(report, /Fix: give the token's user the Manage Secrets platform privilege/);
  assert.match(report, /GMS answered: getSecretValues: Unauthorized to perform this action/);
  assert.doesNotMatch(report, /v1\.6\.0|SECRET_SERVICE_CALLER_GUARD_MODE|only system auth/);
  assert.ok(s.sim.secretRequests().length > 0);
  assert.ok(s.sim.secretRequests().every((q) => !q.granted));
});

Deno.test("5: the same refusal on GMS v1.6.0 names the caller guard and the privilege", async () => {
  await using s = await setup({ sim: { version: "v1.6.0", manageSecrets: false } });
  const report = await failedReport(s, secretRequest(s, "PW"));
  assert.match(report, /GMS v1\.6\.0 has the secret caller guard, which lets only system auth/);
  assert.match(report, /also needs the Manage Secrets privilege/);
  assert.match(report, /Fix: set datahub\.system_client_id and datahub\.system_client_secret/);
});

Deno.test("5: an answer that names the caller guard blames it, even where GMS says v1.3.0", async () => {
  await using s = await setup({ sim: { version: "v1.3.0", callerGuard: true } });
  const report = await failedReport(s, secretRequest(s, "PW"));
  assert.match(report, /its secret caller guard \(SECRET_SERVICE_CALLER_GUARD_MODE=ENFORCE/);
  assert.match(report, /Fix: set datahub\.system_client_id and datahub\.system_client_secret/);
  assert.doesNotMatch(report, /lacks the Manage Secrets privilege/);
});

Deno.test("5: doctor words a refusal the same way (privilege on v1.3.0)", async () => {
  await using s = await setup({ sim: { version: "v1.3.0", manageSecrets: false } });
  const r = await runAgentOnce(["doctor", "--config", await s.writeConfig()]);
  assert.equal(r.code, 1, r.stdout + r.stderr);
  const line = r.stdout.split("\n").find((l) => /\bsecrets\b/.test(l)) ?? "";
  assert.match(
    r.stdout,
    /GMS refused to decrypt secrets for datahub\.token: the token lacks the Manage Secrets privilege \(GMS v1\.3\.0 has no secret caller guard\)/,
  );
  assert.match(r.stdout, /fix: give the token's user the Manage Secrets platform privilege/);
  assert.doesNotMatch(line, /v1\.6\.0/);
});

Deno.test("5: several missing secrets: 'define them'; one: 'define it'", async () => {
  await using s = await setup();
  const two = secretRequest(s, "MISSING_A", "MISSING_B");
  const one = secretRequest(s, "MISSING_C");
  await using _agent = await s.startAgent();
  const several = await terminal(s.sim, two);
  assert.match(
    several.report!,
    /secrets 'MISSING_A', 'MISSING_B' not found: define them in DataHub/,
  );
  const single = await terminal(s.sim, one);
  assert.match(single.report!, /secret 'MISSING_C' not found: define it in DataHub/);
});

Deno.test("7: an Actions file with the Python executor's keys names each native counterpart", async () => {
  await using s = await setup();
  const file = path.join(s.dir, "executor.yaml");
  await writeFile(
    file,
    stringify({
      name: "ingestion_executor",
      action: {
        type: "executor",
        config: { executor_id: "default", max_workers: 8, graceful_shutdown_timeout: 120 },
      },
      datahub: { server: s.sim.url, token: s.sim.token, disable_ssl_verification: true },
      flavour: "extra",
    }),
  );
  const r = await runAgentOnce(["validate", "--config", file]);
  assert.equal(r.code, 2, r.stdout + r.stderr);
  const lines = r.stderr.split("\n");
  const line = (key: string) => lines.find((l) => l.startsWith(`${key}: `)) ?? `(no ${key})`;
  assert.match(
    line("action.config.max_workers"),
    /unknown key in an Actions file .*counterpart is agent\.max_concurrent of the native form/,
  );
  assert.match(
    line("action.config.graceful_shutdown_timeout"),
    /counterpart is agent\.shutdown_timeout of the native form/,
  );
  assert.match(
    line("datahub.disable_ssl_verification"),
    /counterpart is datahub\.tls\.insecure_skip_verify of the native form/,
  );
  assert.match(line("flavour"), /^flavour: unknown key \(an Actions file is read for/);
  assert.match(r.stderr, /ingest-agent: .*executor\.yaml: 4 problems\n$/);
});

Deno.test("8: a missing file names its path in the problem line", async () => {
  await using s = await setup();
  const file = path.join(s.dir, "nope.yml");
  const r = await runAgentOnce(["validate", "--config", file]);
  assert.equal(r.code, 2);
  assert.equal(r.stderr.split("\n")[0], `(file): file not found: ${file}`);
});

Deno.test("8: a directory as --config is a sentence, not EISDIR", async () => {
  await using s = await setup();
  const dir = path.join(s.dir, "conf.d");
  await mkdir(dir);
  const r = await runAgentOnce(["validate", "--config", dir]);
  assert.equal(r.code, 2);
  assert.match(
    r.stderr,
    new RegExp(
      `^\\(file\\): ${dir} is a directory, not a configuration file: give the file's path`,
    ),
  );
  assert.doesNotMatch(r.stderr, /EISDIR/);
});

Deno.test("8: an unset ${VAR} in datahub.server is one problem, without the knock-on URL error", async () => {
  await using s = await setup();
  const file = await s.writeConfig({ datahub: { server: "http://${GMS_HOST_UNSET_4711}:8080" } });
  const r = await runAgentOnce(["validate", "--config", file]);
  assert.equal(r.code, 2);
  assert.equal(
    r.stderr,
    `datahub.server: environment variable GMS_HOST_UNSET_4711 is not set\ningest-agent: ${file}: 1 problem\n`,
  );
});

Deno.test("8: a YAML error is placed at file:line:column, on one line", async () => {
  await using s = await setup();
  const file = path.join(s.dir, "agent.yml");
  await writeFile(file, "agent:\n  poll_interval: 5s\n  poll_interval: 6s\n");
  const r = await runAgentOnce(["validate", "--config", file]);
  assert.equal(r.code, 2);
  assert.equal(
    r.stderr,
    `${file}:3:3: not valid YAML: Map keys must be unique\ningest-agent: ${file}: 1 problem\n`,
  );
});

Deno.test("8: a datahub.server on a port the Fetch standard blocks (10080) is valid", async () => {
  await using s = await setup();
  const file = await s.writeConfig({ datahub: { server: "http://127.0.0.1:10080" } });
  const r = await runAgentOnce(["validate", "--config", file]);
  assert.equal(r.code, 0, r.stderr);
});

Deno.test("8: 'validate agent.yml' without --config suggests --config", async () => {
  const r = await runAgentOnce(["validate", "agent.yml"]);
  assert.equal(r.code, 2);
  assert.match(
    r.stderr,
    /^ingest-agent: unknown argument 'agent\.yml': to use it as the configuration, give --config agent\.yml\n/,
  );
  // A mistyped command is not taken for a file.
  const typo = await runAgentOnce(["valdate"]);
  assert.match(typo.stderr, /^ingest-agent: unknown argument 'valdate'\n/);
});

Deno.test("8: success names the resolved server (without user info) and the auth mode", async () => {
  await using s = await setup();
  const port = new URL(s.sim.url).port;
  const cases: [Record<string, unknown>, string, string][] = [
    [{}, s.sim.url, "token"],
    [
      {
        server: `http://agent:pa55word@127.0.0.1:${port}/`,
        token: "",
        system_client_id: "__datahub_system",
        system_client_secret: "JohnSnowKnowsNothing",
      },
      `http://***@127.0.0.1:${port}`,
      "system-client",
    ],
    [{ server: "${GMS_URL_4711}", token: "" }, s.sim.url, "none"],
  ];
  for (const [datahub, server, auth] of cases) {
    const file = await s.writeConfig({ datahub: { server: s.sim.url, ...datahub } });
    const r = await runAgentOnce(["validate", "--config", file], {
      env: { GMS_URL_4711: s.sim.url },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      r.stdout,
      `${file}: valid (native form, executor_id default, server ${server}, auth ${auth})\n`,
    );
    assert.ok(!r.stdout.includes("pa55word") && !r.stderr.includes("pa55word"));
  }
});
