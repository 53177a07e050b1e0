/**
 * `ingest-agent doctor` (issue 10) through the executable (AGENT_BIN) against the GMS simulator
 * and the fake datahub CLI: every check passes on a healthy setup, each failing check is seen
 * once with its exit code, and doctor never claims or writes anything in GMS nor prints a secret.
 */
import assert from "node:assert/strict";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { runAgentOnce, setup, spawnAgent } from "../harness.ts";

const CHECKS = [
  "config",
  "gms",
  "credentials",
  "secrets",
  "discovery",
  "runtime",
  "state_dir",
  "work_dir",
  "lock",
  "proxy",
  "clock",
];

/** The environment doctor runs in: the test's own, without proxy variables. */
function env(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(Deno.env.toObject())) {
    if (!/^(https?|no|all)_proxy$/i.test(k)) out[k] = v;
  }
  return out;
}

async function doctor(config: string, extraEnv: Record<string, string> = {}) {
  const r = await runAgentOnce(["doctor", "--config", config], {
    env: { ...env(), ...extraEnv },
    clearEnv: true,
  });
  const marks = new Map<string, string>();
  for (const line of r.stdout.split("\n")) {
    const m = /^([✓✗!-]) (\S+)\s/.exec(line);
    if (m) marks.set(m[2]!, m[1]!);
  }
  return { ...r, marks, all: `${r.stdout}\n${r.stderr}` };
}

/** The line of one check, with its fix line when there is one. */
function lineOf(stdout: string, name: string): string {
  const lines = stdout.split("\n");
  const i = lines.findIndex((l) => new RegExp(`^[✓✗!-] ${name} `).test(l));
  assert.ok(i >= 0, `no line for ${name} in:\n${stdout}`);
  return /^\s+fix: /.test(lines[i + 1] ?? "") ? `${lines[i]}\n${lines[i + 1]}` : lines[i]!;
}

function assertMarks(marks: Map<string, string>, expected: Record<string, string>, out: string) {
  assert.deepEqual([...marks.keys()], CHECKS, out);
  for (const name of CHECKS) {
    assert.equal(marks.get(name), expected[name] ?? "✓", `${name}:\n${out}`);
  }
}

Deno.test("doctor: every check passes against the simulator (exit 0); nothing claimed or written", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({ args: { recipe: "{}" } });
  const config = await s.writeConfig();
  const r = await doctor(config);
  assert.equal(r.code, 0, r.all);
  assertMarks(r.marks, {}, r.stdout);
  assert.match(lineOf(r.stdout, "gms"), /answers .*DataHub v1\.3\.0/);
  assert.match(lineOf(r.stdout, "credentials"), /accepted: datahub\.token/);
  assert.match(
    lineOf(r.stdout, "discovery"),
    /searchAcrossEntities works; 1 request pending for executor_id default/,
  );
  assert.match(lineOf(r.stdout, "runtime"), /DataHub CLI version 1\.6\.0\.99-fake/);
  assert.match(lineOf(r.stdout, "state_dir"), /state-1 is writable/);
  assert.match(lineOf(r.stdout, "lock"), /no running agent holds .*agent\.lock/);
  assert.match(lineOf(r.stdout, "proxy"), /^✓ proxy\s+none for http:\/\/127\.0\.0\.1:/);
  assert.match(lineOf(r.stdout, "clock"), /within 30 s of GMS/);
  assert.match(r.stdout, /doctor: all 11 checks passed\n$/);
  assert.ok(!r.all.includes(s.sim.token), "the token is never printed");

  assert.equal(s.sim.result(urn), undefined, "the pending request was not claimed");
  assert.deepEqual(s.sim.resultWrites(), [], "nothing written to GMS");
  for (const req of s.sim.requests()) {
    const read = req.method === "GET" ||
      (req.method === "POST" && req.path === "/api/graphql" &&
        ["getSecretValues", "ingestAgentDiscover"].includes(req.operationName ?? ""));
    assert.ok(read, `only reads: ${req.method} ${req.path} ${req.operationName ?? ""}`);
  }
  assert.deepEqual(await s.cli.readJournal(), [], "no run started");
  assert.deepEqual(s.sim.secretRequests().map((q) => q.names), [["__INGEST_AGENT_DOCTOR__"]]);
});

Deno.test("doctor: system client credentials pass the secret caller guard; the secret is never printed", async () => {
  await using s = await setup({ sim: { callerGuard: true } });
  const config = await s.writeConfig({
    datahub: {
      server: s.sim.url,
      token: "",
      system_client_id: "__datahub_system",
      system_client_secret: "JohnSnowKnowsNothing",
      timeout: "5s",
    },
  });
  const r = await doctor(config);
  assert.equal(r.code, 0, r.all);
  assert.match(lineOf(r.stdout, "secrets"), /readable: .*system client credentials/);
  assert.ok(!r.all.includes("JohnSnowKnowsNothing"), r.all);
});

Deno.test("doctor: an unreachable GMS fails once (exit 1); the checks that need GMS are skipped", async () => {
  await using s = await setup();
  const config = await s.writeConfig();
  await s.sim.goDown();
  const r = await doctor(config);
  assert.equal(r.code, 1, r.all);
  assertMarks(r.marks, {
    gms: "✗",
    credentials: "-",
    secrets: "-",
    discovery: "-",
    clock: "-",
  }, r.stdout);
  assert.match(lineOf(r.stdout, "gms"), /cannot reach GMS[\s\S]*fix: check datahub\.server/);
  assert.match(lineOf(r.stdout, "credentials"), /skipped: GMS is not reachable/);
  assert.match(r.stdout, /doctor: 1 of 11 checks failed \(gms\), 4 skipped\n$/);
});

Deno.test("doctor: a bad token fails the credentials check (exit 1) and is never printed", async () => {
  await using s = await setup();
  const config = await s.writeConfig({
    datahub: { server: s.sim.url, token: "not-the-token-4711", timeout: "5s" },
  });
  const r = await doctor(config);
  assert.equal(r.code, 1, r.all);
  assertMarks(r.marks, { credentials: "✗", secrets: "-", discovery: "-" }, r.stdout);
  assert.match(
    lineOf(r.stdout, "credentials"),
    /HTTP 401 for datahub\.token[\s\S]*fix: set datahub\.token/,
  );
  assert.match(lineOf(r.stdout, "secrets"), /skipped: the credentials were not accepted/);
  assert.ok(!r.all.includes("not-the-token-4711"), r.all);
});

Deno.test("doctor: secrets refused by the caller guard for a token (exit 1) name the system client fix", async () => {
  await using s = await setup({ sim: { callerGuard: true } });
  const r = await doctor(await s.writeConfig());
  assert.equal(r.code, 1, r.all);
  assertMarks(r.marks, { secrets: "✗" }, r.stdout);
  assert.match(
    lineOf(r.stdout, "secrets"),
    /refused to decrypt secrets for datahub\.token[\s\S]*fix: set datahub\.system_client_id and datahub\.system_client_secret/,
  );
  assert.equal(s.sim.secretRequests().length, 1);
  assert.equal(s.sim.secretRequests()[0]!.granted, false);
});

Deno.test("doctor: a missing datahub CLI fails the runtime check (exit 1)", async () => {
  await using s = await setup();
  const missing = path.join(s.dir, "no-such-dir", "datahub");
  const r = await doctor(await s.writeConfig({ ingestion: { datahub_command: missing } }));
  assert.equal(r.code, 1, r.all);
  assertMarks(r.marks, { runtime: "✗" }, r.stdout);
  assert.match(
    lineOf(r.stdout, "runtime"),
    /does not exist[\s\S]*fix: install the datahub CLI .* or set ingestion\.datahub_command/,
  );
});

Deno.test("doctor: a state_dir under a regular file fails (exit 1); the lock check is skipped", async () => {
  await using s = await setup();
  const file = path.join(s.dir, "plain-file");
  await writeFile(file, "not a directory\n");
  const r = await doctor(await s.writeConfig({ agent: { state_dir: path.join(file, "state") } }));
  assert.equal(r.code, 1, r.all);
  assertMarks(r.marks, { state_dir: "✗", lock: "-" }, r.stdout);
  assert.match(
    lineOf(r.stdout, "state_dir"),
    /is not writable: .*ENOTDIR[\s\S]*fix: a part of the path is a file/,
  );
});

Deno.test("doctor: a state_dir held by a running agent fails the lock check (exit 1), naming its pid", async () => {
  await using s = await setup();
  const stateDir = path.join(s.dir, "shared-state");
  await mkdir(stateDir, { recursive: true });
  const config = await s.writeConfig({ agent: { state_dir: stateDir } });
  await using agent = spawnAgent(config);
  await s.sim.waitFor(
    () => agent.logs().some((l) => l.msg === "agent running") || undefined,
    20_000,
    "agent running",
  );
  const r = await doctor(config);
  assert.equal(r.code, 1, r.all);
  assertMarks(r.marks, { lock: "✗" }, r.stdout);
  assert.match(
    lineOf(r.stdout, "lock"),
    new RegExp(
      `held by a running agent \\(pid ${agent.pid}\\)[\\s\\S]*fix: each agent needs its own agent\\.state_dir \\(pid ${agent.pid} uses this one\\)`,
    ),
  );
  assert.ok(agent.running, "the agent keeps running: its lock was not touched");
});

Deno.test("doctor: GMS's clock an hour ahead is a warning, not a failure (exit 0)", async () => {
  await using s = await setup({ sim: { clockSkewMs: 3600_000 } });
  const r = await doctor(await s.writeConfig());
  assert.equal(r.code, 0, r.all);
  assertMarks(r.marks, { clock: "!" }, r.stdout);
  assert.match(
    lineOf(r.stdout, "clock"),
    /1 h 0 min ahead of this host's: leases .* depend on clocks/,
  );
  assert.match(r.stdout, /doctor: all 11 checks passed \(1 warning\)\n$/);
});

Deno.test("doctor: the proxy in effect is reported with its credentials masked", async () => {
  await using s = await setup();
  const config = await s.writeConfig({
    datahub: { server: "http://gms.invalid:8080", token: s.sim.token, timeout: "1s" },
  });
  // The proxy is a closed loopback port: GMS is unreachable through it, never contacted.
  const r = await doctor(config, { HTTP_PROXY: "http://user:proxy-pass-1234@127.0.0.1:9" });
  assert.equal(r.code, 1, r.all);
  assert.equal(r.marks.get("gms"), "✗", r.stdout);
  assert.match(
    lineOf(r.stdout, "proxy"),
    /✓ proxy\s+http:\/\/\*\*\*@127\.0\.0\.1:9 \(from HTTP_PROXY\)/,
  );
  assert.ok(!r.all.includes("proxy-pass-1234"), r.all);
});

Deno.test("doctor: an invalid configuration prints its problems like validate and exits 2", async () => {
  await using s = await setup();
  const config = await s.writeConfig({ agent: { max_concurrent: "many" } });
  const r = await doctor(config);
  assert.equal(r.code, 2, r.all);
  assert.match(r.stderr, /^agent\.max_concurrent: /m);
  assert.match(r.stderr, /problem/);
  assert.match(r.stdout, /^✗ config\s+.* is invalid: 1 problem[\s\S]*fix: /);
  assert.deepEqual(s.sim.requests(), [], "GMS is not contacted");

  const usage = await runAgentOnce(["doctor"]);
  assert.equal(usage.code, 2, "no --config is bad usage");
});
