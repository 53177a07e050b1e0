/**
 * The operator's first hour (issue 18, items 1–4 and 6), through the executable and the
 * simulator: a broken CLI path claims nothing and says so, failures say why in the agent's own
 * log, refused credentials name the fix, work resumes quickly after an outage, a repeated
 * Ctrl-C is explained.
 */
import assert from "node:assert/strict";
import { recipe, runAgentOnce, setup, terminal } from "../harness.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
type S = Awaited<ReturnType<typeof setup>>;
type Agent = Awaited<ReturnType<S["startAgent"]>>;

async function logLine(a: Agent, pred: (l: Record<string, unknown>) => boolean, what: string) {
  for (const deadline = Date.now() + 15_000; Date.now() < deadline; await sleep(50)) {
    const l = a.logs().find(pred);
    if (l) return l;
  }
  throw new Error(`no log line: ${what}\n${a.stdout}`);
}

async function address(a: Agent) {
  const l = await logLine(a, (l) => l.msg === "endpoints listening", "endpoints listening");
  return `http://${l.address}`;
}

Deno.test("1: a datahub_command that cannot be found: validate exits 2 naming it; the agent claims nothing, says why, /readyz 503", async () => {
  await using s = await setup();
  const broken = { ingestion: { datahub_command: `${s.dir}/no/such/datahub` } };
  const file = await s.writeConfig(broken);
  const v = await runAgentOnce(["validate", "--config", file]);
  assert.equal(v.code, 2, v.stdout + v.stderr);
  assert.match(
    v.stderr,
    /^ingestion\.datahub_command: cannot start '.*\/no\/such\/datahub': not found/m,
  );
  const urn = s.sim.createRequest({ args: { recipe: recipe() } });
  await using a = await s.startAgent({ ...broken, observability: { listen: "127.0.0.1:0" } });
  const base = await address(a);
  const error = await logLine(
    a,
    (l) => l.level === "error" && /claiming none/.test(String(l.msg)),
    "the runtime error",
  );
  assert.match(String(error.problem), /ingestion\.datahub_command/);
  await sleep(1_500); // several polls
  assert.equal(s.sim.result(urn), undefined, "left pending for a working agent");
  const ready = await fetch(`${base}/readyz`);
  assert.equal(ready.status, 503);
  assert.equal((await ready.json()).reason, "runtime_unusable");
  // A working agent of the pool takes it.
  await using _good = await s.startAgent();
  assert.equal((await terminal(s.sim, urn)).status, "SUCCESS");
});

Deno.test("2: a failed run's 'run finished' line says why (masked)", async () => {
  await using s = await setup();
  const missing = s.sim.createRequest({
    args: { recipe: recipe({}, { config: { password: "${NOT_DEFINED_ANYWHERE}" } }) },
  });
  const bad = s.sim.createRequest({ args: { recipe: recipe({ exit_code: 3 }) } });
  const task = s.sim.createRequest({ task: "NOT_A_TASK", args: {} });
  await using a = await s.startAgent();
  for (const urn of [missing, bad, task]) {
    assert.notEqual((await terminal(s.sim, urn)).status, "SUCCESS");
  }
  // The line comes once the run's journal entry is gone, which may be after GMS has the result.
  const reason = async (urn: string) =>
    String((await logLine(a, (l) => l.msg === "run finished" && l.urn === urn, urn)).reason);
  assert.match(await reason(missing), /NOT_DEFINED_ANYWHERE/);
  assert.match(await reason(bad), /exit code 3/);
  assert.match(await reason(task), /NOT_A_TASK/);
});

Deno.test("3: refused credentials name the fix; no credentials at all warn at start (auth: none)", async () => {
  await using s = await setup();
  await using a = await s.startAgent({ datahub: { token: "not-the-token" } });
  const warn = await logLine(
    a,
    (l) => l.level === "warn" && l.msg === "poll failed; retrying",
    "the poll failure",
  );
  assert.match(JSON.stringify(warn.error), /GMS_AUTH/);
  assert.match(JSON.stringify(warn.error), /check datahub\.token/);
  assert.ok(!a.stdout.includes("not-the-token"), "the token is never logged");
  await using none = await s.startAgent({ datahub: { token: "" } });
  await logLine(none, (l) => l.level === "warn" && /^auth: none/.test(String(l.msg)), "auth none");
});

async function outage(s: S, downMs: number) {
  await s.sim.goDown();
  await using a = await s.startAgent({ agent: { poll_interval: "5s" } });
  await logLine(a, (l) => l.msg === "poll failed; retrying", "a failed poll");
  const urn = s.sim.createRequest({ args: { recipe: recipe() } });
  await sleep(downMs);
  await s.sim.comeBack();
  const back = Date.now();
  await s.sim.waitFor(() => s.sim.result(urn), 30_000, "the claim");
  const after = Date.now() - back;
  assert.ok(after <= 5_000, `claimed ${after} ms after GMS came back (bound: 5 s)`);
  assert.equal((await terminal(s.sim, urn)).status, "SUCCESS");
  // Gentle meanwhile: a probe of /health now and then, not a query every poll_interval.
  return after;
}

Deno.test("4: after a 12 s outage at start, the claim comes within max(poll_interval, 5 s) of GMS's return", async () => {
  await using s = await setup();
  await outage(s, 12_000);
});

Deno.test("4: after a 2 min outage, the claim comes within max(poll_interval, 5 s) of GMS's return", async () => {
  await using s = await setup();
  await outage(s, 120_000);
});

Deno.test("6: a second Ctrl-C within 2 s is counted once and says so", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({ args: { recipe: recipe({ sleep_ms: 3_000 }) } });
  await using a = await s.startAgent();
  await s.sim.waitFor(() => s.sim.result(urn), 15_000, "claimed");
  a.signal("SIGINT");
  await sleep(300);
  a.signal("SIGINT");
  await logLine(a, (l) => /repeated within 2 s/.test(String(l.msg)), "the repeat explained");
  const exit = await a.exited;
  assert.equal(exit.code, 0);
  assert.equal((await terminal(s.sim, urn, 1)).status, "SUCCESS", "the drain let it finish");
});
