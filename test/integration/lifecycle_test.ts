/**
 * Never stuck, never twice, never orphaned (issue 4): cancel, timeouts, leases and fencing,
 * reaping, shutdown, crash recovery, GMS outages, through the executable and the simulator.
 */
import assert from "node:assert/strict";
import { groupGone, recipe, setup, started, terminal } from "../harness.ts";
import { alive } from "../../src/state/state_dir.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function grandchildOf(s: Awaited<ReturnType<typeof setup>>, pid: number): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const e = (await s.cli.readJournal()).find((j) => j.pid === pid && j.grandchildPid);
    if (e) return e.grandchildPid!;
    await sleep(25);
  }
  throw new Error("no grandchild recorded");
}

/** The state letter of a process (/proc/<pid>/stat field 3), undefined when it is gone. */
function processState(pid: number): string | undefined {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
  } catch {
    return undefined;
  }
}

Deno.test("cancel: a run that ignores SIGTERM and has a grandchild is CANCELLED in time, whole group gone", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({
    args: { recipe: recipe({ ignore_sigterm: true, grandchild: true, sleep_ms: 60_000 }) },
  });
  await using _agent = await s.startAgent({
    agent: { heartbeat_interval: "500ms", cancel_grace: "1s" },
  });
  const start = await started(s, urn);
  const grandchild = await grandchildOf(s, start.pid);
  await sleep(300);
  const t0 = Date.now();
  s.sim.sendSignal(urn, "KILL", { actor: "urn:li:corpuser:alice" });
  const r = await terminal(s.sim, urn, 10_000);
  const took = Date.now() - t0;
  assert.equal(r.status, "CANCELLED");
  assert.ok(took <= 500 + 1000 + 1000, `cancelled after ${took} ms`);
  assert.match(r.report!, /Execution was cancelled by request\./);
  assert.match(r.report!, /cancelled by urn:li:corpuser:alice at \d{4}-\d\d-\d\dT/);
  assert.ok(groupGone(start.pgid), "the run's process group is gone");
  // The grandchild is in the run's group, but check the process itself: gone or a zombie.
  assert.ok(!alive(grandchild) || processState(grandchild) === "Z", "the grandchild is gone");
  assert.equal(s.sim.resultWrites(urn).filter((w) => w.value.status !== "RUNNING").length, 1);
});

Deno.test("timeout: task_timeout ends a run as TIMEOUT; a per-source override wins", async () => {
  await using s = await setup();
  const slow = s.sim.createRequest({ args: { recipe: recipe({ sleep_ms: 60_000, lines: 1 }) } });
  const special = s.sim.createRequest({
    args: {
      recipe: JSON.stringify({
        source: { type: "snowflake", config: { fixture: { sleep_ms: 60_000 } } },
      }),
    },
  });
  await using _agent = await s.startAgent({
    ingestion: { task_timeout: "2s", timeouts: { snowflake: "1s" } },
    agent: { cancel_grace: "500ms" },
  });
  const a = await terminal(s.sim, slow, 15_000);
  assert.equal(a.status, "TIMEOUT");
  assert.match(a.report!, /exceeded ingestion\.task_timeout \(2000ms\)/);
  const b = await terminal(s.sim, special, 15_000);
  assert.equal(b.status, "TIMEOUT");
  assert.match(b.report!, /exceeded ingestion\.timeouts\.snowflake \(1000ms\)/);
  assert.ok(b.durationMs! < a.durationMs!, "the override is shorter");
  for (const e of (await s.cli.readJournal()).filter((j) => j.event === "start")) {
    assert.ok(groupGone(e.pgid));
  }
});

Deno.test("fencing: a result changed behind the agent's back stops the run; nothing more is written", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({
    args: { recipe: recipe({ sleep_ms: 60_000, lines_per_second: 5 }) },
  });
  await using agent = await s.startAgent({
    agent: { heartbeat_interval: "300ms", cancel_grace: "500ms" },
  });
  const start = await started(s, urn);
  await s.sim.waitFor(() => s.sim.resultWrites(urn).length >= 2, 10_000, "a progress write");
  s.sim.setResult(urn, { status: "FAILURE", report: "closed by an operator" });
  const writesAfter = s.sim.resultWrites(urn).length;
  await s.sim.waitFor(() => groupGone(start.pgid) || undefined, 10_000, "run stopped");
  await sleep(1000);
  assert.equal(s.sim.resultWrites(urn).length, writesAfter, "no write after the change");
  assert.equal(s.sim.result(urn)!.value.report, "closed by an operator");
  assert.ok(agent.logs().some((l) => /behind our back/.test(l.msg)));
});

Deno.test("reaping: a RUNNING request whose agent vanished is ABORTED exactly once by two reapers", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({ args: { recipe: recipe({ sleep_ms: 60_000 }) } });
  const doomed = await s.startAgent({ agent: { lease_ttl: "2s", heartbeat_interval: "300ms" } });
  const start = await started(s, urn);
  doomed.signal("SIGKILL"); // the agent dies; its host "dies" too:
  process.kill(-start.pgid, "SIGKILL");
  await doomed.exited;
  const t0 = Date.now();
  await using _r1 = await s.startAgent({ agent: { lease_ttl: "2s", heartbeat_interval: "300ms" } });
  await using _r2 = await s.startAgent({ agent: { lease_ttl: "2s", heartbeat_interval: "300ms" } });
  const r = await terminal(s.sim, urn, 20_000);
  assert.equal(r.status, "ABORTED");
  assert.match(r.report!, /executor default agent \S+ stopped renewing its lease at/);
  assert.ok(Date.now() - t0 >= 1000, "not before the lease expired");
  await sleep(1500);
  const terminalWrites = s.sim.resultWrites(urn).filter((w) => w.value.status !== "RUNNING");
  assert.equal(terminalWrites.length, 1, "exactly one reaper won");
});

Deno.test("KILL on an orphaned RUNNING request is answered with CANCELLED", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({ args: { recipe: recipe({ sleep_ms: 60_000 }) } });
  const doomed = await s.startAgent({ agent: { lease_ttl: "2s", heartbeat_interval: "300ms" } });
  const start = await started(s, urn);
  doomed.signal("SIGKILL");
  process.kill(-start.pgid, "SIGKILL");
  await doomed.exited;
  s.sim.sendSignal(urn, "KILL", { actor: "urn:li:corpuser:bob" });
  await using _other = await s.startAgent({
    agent: { lease_ttl: "2s", heartbeat_interval: "300ms" },
  });
  const r = await terminal(s.sim, urn, 20_000);
  assert.equal(r.status, "CANCELLED");
  assert.match(r.report!, /No active execution request found\./);
});

Deno.test("shutdown: SIGTERM with 2 runs in flight and 3 pending: no new claim, the 2 finish, exit 0", async () => {
  await using s = await setup();
  const running = [1, 2].map(() =>
    s.sim.createRequest({ args: { recipe: recipe({ sleep_ms: 2500, lines: 2 }) } })
  );
  await using agent = await s.startAgent({ agent: { max_concurrent: 2 } });
  for (const u of running) await started(s, u);
  const pending = [1, 2, 3].map(() => s.sim.createRequest({ args: { recipe: recipe() } }));
  agent.signal("SIGTERM");
  const exit = await agent.exited;
  assert.deepEqual(exit, { code: 0, signal: null });
  for (const u of running) assert.equal(s.sim.result(u)?.value.status, "SUCCESS");
  for (const u of pending) assert.equal(s.sim.result(u), undefined, "not claimed during shutdown");
  assert.ok(agent.logs().some((l) => /next signal cancels them now/.test(l.msg)));
});

Deno.test("shutdown: a second signal cancels runs now (ABORTED); a third exits at once", async () => {
  await using s = await setup();
  const urns = [1, 2].map(() =>
    s.sim.createRequest({ args: { recipe: recipe({ sleep_ms: 60_000 }) } })
  );
  await using agent = await s.startAgent({ agent: { cancel_grace: "500ms" } });
  for (const u of urns) await started(s, u);
  agent.signal("SIGTERM");
  await sleep(300);
  agent.signal("SIGTERM"); // within 2 s: the same signal
  await sleep(400);
  assert.ok(
    urns.every((u) => s.sim.result(u)?.value.status === "RUNNING"),
    "a repeat within 2 s counts as one",
  );
  await sleep(1500);
  agent.signal("SIGTERM");
  const exit = await agent.exited;
  assert.equal(exit.code, 0);
  for (const u of urns) {
    const r = s.sim.result(u)!.value;
    assert.equal(r.status, "ABORTED");
    assert.match(r.report!, /agent is shutting down/);
  }

  // Third signal: exit at once, killing the runs' process groups.
  const more = s.sim.createRequest({
    args: { recipe: recipe({ sleep_ms: 60_000, ignore_sigterm: true }) },
  });
  const again = await s.startAgent({ agent: { cancel_grace: "30s" } });
  const start = await started(s, more);
  for (const _ of [1, 2, 3]) {
    again.signal("SIGTERM");
    await sleep(2200);
  }
  const third = await again.exited;
  assert.equal(third.code, 1);
  assert.ok(groupGone(start.pgid), "no orphan left behind");
});

Deno.test("crash: the agent and its run's group are SIGKILLed; restarted on the same state_dir it closes the request ABORTED", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({
    args: { recipe: recipe({ sleep_ms: 60_000, grandchild: true }) },
  });
  const settings = { agent: { state_dir: `${s.dir}/shared-state` } };
  const first = await s.startAgent(settings);
  const start = await started(s, urn);
  first.signal("SIGKILL");
  await first.exited;
  assert.ok(
    !groupGone(start.pgid),
    "the run outlived its agent (test/integration/readopt_test.ts)",
  );
  // The whole group killed too (a cgroup OOM kill, a reboot): no exit status was recorded.
  Deno.kill(-start.pgid, "SIGKILL");
  for (let i = 0; i < 200 && !groupGone(start.pgid); i++) await sleep(25);
  await using _second = await s.startAgent(settings);
  const r = await terminal(s.sim, urn, 15_000);
  assert.equal(r.status, "ABORTED");
  assert.match(r.report!, /agent restarted; run interrupted/);
  assert.ok(groupGone(start.pgid), "the previous agent's run was killed");
});

Deno.test("two agents cannot share a state_dir", async () => {
  await using s = await setup();
  const settings = { agent: { state_dir: `${s.dir}/one-state` } };
  await using first = await s.startAgent(settings);
  await s.sim.waitFor(
    () => first.logs().some((l) => l.msg === "agent running") || undefined,
    15_000,
    "first agent",
  );
  const second = await s.startAgent(settings);
  const exit = await second.exited;
  assert.equal(exit.code, 1);
  assert.match(second.stdout, /STATE_LOCKED: state_dir .* is used by another ingest-agent/);
});

Deno.test("GMS down (503, then refused connections) for 3× lease_ttl while runs finish: every result delivered", async () => {
  await using s = await setup();
  const urns = [1, 2, 3].map((i) =>
    s.sim.createRequest({ args: { recipe: recipe({ sleep_ms: 500 * i, lines: 2 }) } })
  );
  // The runs end within the lease (a run whose lease is lost is stopped: see gms_faults_test).
  await using agent = await s.startAgent({
    agent: { lease_ttl: "2s", heartbeat_interval: "200ms" },
  });
  for (const u of urns) await started(s, u);
  const stop503 = s.sim.addFault({ status: 503 });
  await sleep(3000);
  stop503();
  await s.sim.goDown();
  await sleep(3000);
  assert.ok(
    urns.every((u) => s.sim.result(u)?.value.status === "RUNNING"),
    "nothing could be written",
  );
  await s.sim.comeBack();
  for (const u of urns) assert.equal((await terminal(s.sim, u, 30_000)).status, "SUCCESS");
  assert.ok(agent.running, "the agent stayed up");
  for (const u of urns) {
    assert.equal(s.sim.resultWrites(u).filter((w) => w.value.status !== "RUNNING").length, 1);
  }
});

Deno.test("429 with Retry-After is honoured by the poll loop", async () => {
  await using s = await setup();
  await using agent = await s.startAgent({ agent: { poll_interval: "100ms" } });
  await s.sim.waitFor(
    () => agent.logs().some((l) => l.msg === "agent running") || undefined,
    15_000,
    "agent up",
  );
  await sleep(300);
  const stop = s.sim.addFault({ match: "/api/graphql", status: 429, retryAfterSeconds: 2 });
  const before = s.sim.requests().length;
  await s.sim.waitFor(
    () => s.sim.requests().slice(before).some((r) => r.status === 429) || undefined,
    5000,
    "a 429",
  );
  const t429 = Date.now();
  await sleep(1500);
  const during = s.sim.requests().filter((r) => r.at > t429 && r.path === "/api/graphql").length;
  stop();
  assert.equal(during, 0, "no poll during Retry-After (with a 100 ms poll interval)");
  await s.sim.waitFor(
    () =>
      s.sim.requests().some((r) =>
        r.at > t429 + 1500 && r.path === "/api/graphql" && r.status === 200
      ) || undefined,
    10_000,
    "polling resumed",
  );
});

Deno.test("a request cancelled while pending is closed as CANCELLED without running", async () => {
  await using s = await setup();
  const urn = s.sim.createRequest({ args: { recipe: recipe() } });
  s.sim.sendSignal(urn, "KILL", { actor: "urn:li:corpuser:carol" });
  await using _agent = await s.startAgent();
  const r = await terminal(s.sim, urn);
  assert.equal(r.status, "CANCELLED");
  assert.match(r.report!, /cancelled by request before it started \(by urn:li:corpuser:carol\)/);
  assert.equal((await s.cli.readJournal()).length, 0);
});
