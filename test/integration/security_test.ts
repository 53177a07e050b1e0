/**
 * What each run can see, where it writes, and what it leaks (issue 17), through the executable:
 * the run's environment is an allowlist, the agent's credentials never answer a `${NAME}`,
 * directories and files another user prepared are refused, extra_env_vars values are masked,
 * a report recovered after a crash is masked, and plain HTTP with credentials is warned about.
 */
import assert from "node:assert/strict";
import { chown, mkdir, readFile, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import process from "node:process";
import { recipe, runAgentOnce, setup, spawnAgent, started, terminal } from "../harness.ts";

type S = Awaited<ReturnType<typeof setup>>;

const SYSTEM_SECRET = "JohnSnowKnowsNothing";

Deno.test("environment: a run sees an allowlist; agent credentials only when the recipe has no sink", async () => {
  await using s = await setup();
  const withSink = s.sim.createRequest({ args: { recipe: recipe() } });
  const sinkless = s.sim.createRequest({
    args: { recipe: JSON.stringify({ source: { type: "fake", config: { fixture: {} } } }) },
  });
  await using _a = await s.startAgent({
    datahub: { token: "${DATAHUB_GMS_TOKEN}" },
    ingestion: { pass_env: ["AWS_*", "MY_*"] },
  }, {
    env: {
      DATAHUB_GMS_TOKEN: s.sim.token,
      DATAHUB_SYSTEM_CLIENT_SECRET: SYSTEM_SECRET,
      MY_GMS_TOKEN: s.sim.token, // the token under another name, even though pass_env matches
      UNRELATED_SETTING: "not for runs",
      AWS_REGION: "eu-west-1",
      LC_ALL: "C.UTF-8",
    },
  });
  assert.equal((await terminal(s.sim, withSink)).status, "SUCCESS");
  assert.equal((await terminal(s.sim, sinkless)).status, "SUCCESS");
  const a = await started(s, withSink);
  const keys = new Set(a.envKeys);
  for (const k of ["PATH", "AWS_REGION", "LC_ALL", "INGEST_AGENT_RUN"]) {
    assert.ok(keys.has(k), `${k} is passed`);
  }
  for (
    const k of [
      "DATAHUB_GMS_TOKEN",
      "DATAHUB_SYSTEM_CLIENT_SECRET",
      "MY_GMS_TOKEN",
      "UNRELATED_SETTING",
      "DATAHUB_GMS_URL",
    ]
  ) assert.ok(!keys.has(k), `${k} is withheld from a run with its own sink`);
  const b = await started(s, sinkless);
  const sinklessKeys = new Set(b.envKeys);
  assert.ok(sinklessKeys.has("DATAHUB_GMS_TOKEN") && sinklessKeys.has("DATAHUB_GMS_URL"));
  assert.equal(b.env?.DATAHUB_GMS_TOKEN, s.sim.token, "the default sink gets the agent's token");
  assert.ok(!sinklessKeys.has("UNRELATED_SETTING") && !sinklessKeys.has("MY_GMS_TOKEN"));
  assert.ok(!sinklessKeys.has("DATAHUB_SYSTEM_CLIENT_SECRET"), "not configured: not passed");
});

Deno.test("secrets: ${DATAHUB_SYSTEM_CLIENT_SECRET} is never answered by the agent's environment", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({
    args: {
      recipe: JSON.stringify({
        source: { type: "fake", config: { password: "${DATAHUB_SYSTEM_CLIENT_SECRET}" } },
        sink: { type: "console" },
      }),
    },
  });
  await using a = await s.startAgent({
    datahub: {
      token: "",
      system_client_id: "__datahub_system",
      system_client_secret: "${DATAHUB_SYSTEM_CLIENT_SECRET}",
    },
  }, { env: { DATAHUB_SYSTEM_CLIENT_SECRET: SYSTEM_SECRET } });
  const r = await terminal(s.sim, urn);
  assert.equal(r.status, "FAILURE");
  assert.match(
    r.report!,
    /'DATAHUB_SYSTEM_CLIENT_SECRET' holds one of the agent's own credentials, which the agent's environment never provides to recipes/,
  );
  assert.ok(!r.report!.includes(SYSTEM_SECRET));
  assert.ok(!a.stdout.includes(SYSTEM_SECRET));
  assert.equal((await s.cli.readJournal()).length, 0, "the CLI was not started");
});

Deno.test("secrets: env_secrets_prefix narrows which variables may answer a ${NAME}", async () => {
  await using s = await setup();
  const allowed = s.sim.createRequest({
    args: { recipe: recipe({}, { config: { password: "${RECIPE_DB_PASSWORD}" } }) },
  });
  const refused = s.sim.createRequest({
    args: { recipe: recipe({}, { config: { password: "${OTHER_PASSWORD}" } }) },
  });
  await using _a = await s.startAgent({ ingestion: { env_secrets_prefix: "RECIPE_" } }, {
    env: { RECIPE_DB_PASSWORD: "pw-from-env-1", OTHER_PASSWORD: "pw-from-env-2" },
  });
  assert.equal((await terminal(s.sim, allowed)).status, "SUCCESS");
  const r = await terminal(s.sim, refused);
  assert.equal(r.status, "FAILURE");
  assert.match(
    r.report!,
    /'OTHER_PASSWORD' does not start with ingestion\.env_secrets_prefix 'RECIPE_'/,
  );
  const start = await started(s, allowed);
  const config = (start.recipe as { source: { config: Record<string, string> } }).source.config;
  assert.equal(config.password, "pw-from-env-1");
});

Deno.test({
  name: "files: a pre-created work_dir owned by another user is refused at start, nothing written",
  ignore: process.getuid?.() !== 0, // only root can give a directory to another user
  async fn() {
    await using s = await setup();
    const work = path.join(s.dir, "foreign-work");
    await mkdir(work, { mode: 0o777 });
    await chown(work, 65534, 65534);
    s.sim.createRequest({ args: { recipe: recipe() } });
    const a = await s.startAgent({ agent: { work_dir: work } });
    const exit = await a.exited;
    assert.equal(exit.code, 1);
    assert.match(
      a.stdout,
      /PATH_UNSAFE: .*foreign-work is owned by uid 65534, not by the agent's user/,
    );
    assert.equal(s.sim.resultWrites().length, 0, "nothing was claimed");
    assert.equal((await s.cli.readJournal()).length, 0);
  },
});

Deno.test("files: a symlinked run.log in a prepared run directory is refused; nothing written through it", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({ args: { recipe: recipe({ print: ["a line of output"] }) } });
  const id = urn.split(":").pop()!;
  const work = path.join(s.dir, "work");
  const runDir = path.join(work, `run-${id}`);
  await mkdir(runDir, { recursive: true, mode: 0o700 });
  const target = path.join(s.dir, "attacker-file");
  await writeFile(target, "");
  await symlink(target, path.join(runDir, "run.log"));
  await using _a = await s.startAgent({ agent: { work_dir: work } });
  const r = await terminal(s.sim, urn);
  assert.equal(r.status, "FAILURE");
  assert.match(r.report!, /run\.log is a symbolic link: refusing to use this run directory/);
  assert.equal(await readFile(target, "utf8"), "", "nothing was written through the link");
  assert.equal((await s.cli.readJournal()).length, 0, "the CLI was not started");
});

Deno.test("masking: a value of extra_env_vars printed by the CLI is masked everywhere", async () => {
  await using s = await setup();
  const value = "s3cr3t-extra-value-42";
  const urn = s.sim.createRequest({
    args: {
      recipe: recipe({ print_env: ["EXTRA_PASSWORD"], print: [`raw ${value}`] }),
      extra_env_vars: JSON.stringify({ EXTRA_PASSWORD: value }),
    },
  });
  const work = path.join(s.dir, "work");
  await using a = await s.startAgent({ agent: { work_dir: work } });
  const r = await terminal(s.sim, urn);
  assert.equal(r.status, "SUCCESS");
  assert.match(r.report!, /EXTRA_PASSWORD=\*{8}/);
  for (const w of s.sim.resultWrites(urn)) {
    assert.ok(!JSON.stringify(w.value).includes(value), "no write holds the value");
  }
  const runLog = await readFile(path.join(work, `run-${urn.split(":").pop()}`, "run.log"), "utf8");
  assert.ok(runLog.includes("EXTRA_PASSWORD=********") && !runLog.includes(value));
  assert.ok(!a.stdout.includes(value) && !a.stderr.includes(value));
});

Deno.test("masking: after a crash and a restart, the recovered report holds no secret", async () => {
  const secret = "pa55-word-of-the-source-db";
  await using s = await setup({ sim: { secrets: { DB_PASSWORD: secret } } });
  const urn = s.sim.createRequest({
    args: {
      recipe: recipe({ print: ["connecting with ${DB_PASSWORD}"], sleep_ms: 60_000 }, {
        config: { password: "${DB_PASSWORD}" },
      }),
    },
  });
  const id = urn.split(":").pop()!;
  const settings = { agent: { state_dir: `${s.dir}/shared-state`, work_dir: `${s.dir}/work` } };
  const first = await s.startAgent(settings);
  const start = await started(s, urn);
  first.signal("SIGKILL");
  await first.exited;
  // While no agent watched, the CLI finished: it wrote its report (echoing its config, as the
  // real CLI's report does) and exited 0. The journal says so, as the agent records it.
  const runDir = path.join(s.dir, "work", `run-${id}`);
  await writeFile(
    path.join(runDir, "report.json"),
    JSON.stringify({ source: { config: { password: secret } }, events: 3 }),
  );
  process.kill(-start.pgid, "SIGKILL");
  const journalFile = path.join(s.dir, "shared-state", "runs", `${id}.json`);
  const journal = JSON.parse(await readFile(journalFile, "utf8"));
  assert.ok(Array.isArray(journal.masks) && journal.masks.length > 0, "the journal keeps masks");
  await writeFile(journalFile, JSON.stringify({ ...journal, exit: { code: 0, signal: null } }));
  await using _second = await s.startAgent(settings);
  const r = await terminal(s.sim, urn, 15_000);
  assert.equal(r.status, "SUCCESS");
  assert.ok(r.structuredReport, "the recovered run has its structured report");
  assert.match(r.structuredReport!.serializedValue, /\*{8}/);
  assert.ok(!JSON.stringify(r).includes(secret), "no secret in the recovered result");
});

Deno.test("plain HTTP with credentials to another host: validate and the start both warn", async () => {
  await using s = await setup();
  const file = await s.writeConfig({ datahub: { server: "http://gms.example.com:8080" } });
  const v = await runAgentOnce(["validate", "--config", file]);
  assert.equal(v.code, 0);
  assert.match(v.stderr, /warning: datahub\.server http:\/\/gms\.example\.com:8080 is plain HTTP/);
  // Started in a network namespace of its own: the remote host is unreachable at once, and no
  // packet (not even a DNS query) leaves this machine.
  const a = spawnAgent(file, { isolatedNet: true });
  try {
    await s.sim.waitFor(
      () => a.logs().some((l) => l.msg === "ingest-agent starting") || undefined,
      15_000,
      "the agent started",
    );
    assert.ok(a.logs().some((l) => l.level === "warn" && /travels in clear/.test(l.msg)));
  } finally {
    await a.stop();
  }
  const https = await runAgentOnce(["validate", "--config", await s.writeConfig()]);
  assert.ok(!/plain HTTP/.test(https.stderr), "loopback is fine");
});
