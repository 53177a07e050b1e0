// The reaper (and discovery paging) of a real Agent, driven through FakeGms with fake time.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { FakeGms } from "../../test/fake_gms.ts";
import { advance, advanceUntil, type Clock, installClock } from "../../test/fake_time.ts";
import { Agent } from "./agent.ts";
import { GmsError } from "../errors.ts";
import { compileConfig } from "../config/config.ts";
import { type Identity, leaseProperties } from "../identity.ts";
import { createLogger } from "../observe/log.ts";
import { Outbox } from "../state/outbox.ts";
import { Redactor } from "../run/redact.ts";
import { StateDir } from "../state/state_dir.ts";

const ME: Identity = { instanceId: "agent-me", host: "host-a", executorId: "default" };
const OTHER: Identity = { instanceId: "agent-gone", host: "host-b", executorId: "default" };
const TTL = 60_000;
const POLL = 5_000;
/** Longest wait between two polls (interval + 15 % jitter), plus a margin. */
const POLL_MAX = POLL * 1.15 + 100;

interface Env {
  gms: FakeGms;
  agent: Agent;
  clock: Clock;
  lines: string[];
  polls: () => number;
  reaped: { urn: string; status: string }[];
  /** Advances fake time until `n` more polls have happened. */
  poll(n?: number): Promise<void>;
  /** A RUNNING request of `owner` whose last write GMS stamped `ageMs` ago (GMS's clock). */
  orphan(ageMs: number, owner?: Identity, extra?: Record<string, string>): string;
  [Symbol.asyncDispose](): Promise<void>;
}

async function setup(
  options: { skewMs?: number; maxConcurrent?: number } = {},
): Promise<Env> {
  const root = await mkdtemp(path.join(os.tmpdir(), "reaper-test-"));
  const { config } = compileConfig({
    agent: {
      state_dir: path.join(root, "state"),
      work_dir: path.join(root, "work"),
      poll_interval: `${POLL}ms`,
      heartbeat_interval: "5s",
      lease_ttl: `${TTL}ms`,
      max_concurrent: options.maxConcurrent ?? 4,
      shutdown_timeout: "1s",
    },
    ingestion: { datahub_command: path.join(root, "no-such-datahub") },
  }, { env: {}, home: root });
  const state = new StateDir(config.agent.stateDir);
  await state.open();
  const gms = new FakeGms({ skewMs: options.skewMs ?? 0 });
  const lines: string[] = [];
  const log = createLogger({ level: "debug", format: "json", write: (l) => lines.push(l) });
  const outbox = new Outbox({
    state,
    gms,
    identity: ME,
    retryForMs: config.agent.resultRetryForMs,
    leaseTtlMs: TTL,
    log,
  });
  const clock = installClock();
  const agent = new Agent({
    config,
    gms,
    identity: ME,
    log,
    redactor: new Redactor(),
    env: {},
    state,
    outbox,
  });
  let polls = 0;
  agent.on("polled", () => polls++);
  const reaped: { urn: string; status: string }[] = [];
  agent.on("reaped", (r) => reaped.push(r));
  let seq = 0;
  return {
    gms,
    agent,
    clock,
    lines,
    polls: () => polls,
    reaped,
    async poll(n = 1) {
      const target = polls + n;
      await advanceUntil(clock, () => polls >= target, `${n} poll(s)`, {
        stepMs: 250,
        maxMs: n * POLL_MAX * 2,
      });
    },
    orphan(ageMs, owner = OTHER, extra = {}) {
      const urn = gms.addRequest({ id: `orphan-${++seq}` });
      const lastObserved = gms.now() - ageMs;
      gms.setResult(
        urn,
        { status: "RUNNING", startTimeMs: lastObserved - 600_000, durationMs: 600_000 },
        { ...leaseProperties(owner, { token: `token-${owner.instanceId}`, ttlMs: TTL }), ...extra },
        { lastObserved },
      );
      return urn;
    },
    async [Symbol.asyncDispose]() {
      try {
        const drained = agent.drain();
        let done = false;
        void drained.then(() => done = true);
        await advanceUntil(clock, () => done, "drain", { stepMs: 500, maxMs: 120_000 });
        await drained;
        assert.equal(agent.state, "stopped");
      } finally {
        clock.uninstall();
        state.close();
        await rm(root, { recursive: true, force: true });
      }
    },
  };
}

/** Result writes to `urn` that changed it. */
const writesTo = (gms: FakeGms, urn: string) => gms.callsOf("write", urn).filter((c) => c.applied);

Deno.test("reaper: lapsed more than a lease ago → ABORTED, once", async () => {
  await using env = await setup();
  const urn = env.orphan(2 * TTL + 1_000);
  const version = env.gms.result(urn)!.version;
  env.agent.start();
  await env.poll();
  const stored = env.gms.result(urn)!;
  assert.equal(stored.value.status, "ABORTED");
  assert.match(stored.value.report!, /agent-gone stopped renewing its lease/);
  assert.match(stored.value.report!, /agent-me/, "the reaper names itself");
  assert.equal(stored.properties.agentInstance, ME.instanceId);
  const writes = env.gms.callsOf("write", urn);
  assert.equal(writes.length, 1);
  assert.equal(writes[0]!.options?.ifVersionMatch, version, "conditional on what it read");
  await env.poll(5);
  assert.equal(env.gms.callsOf("write", urn).length, 1, "closed once");
  assert.deepEqual(env.reaped, [{ urn, status: "ABORTED" }]);
});

Deno.test("reaper: lapsed less than a lease ago → untouched until a lease passed", async () => {
  await using env = await setup();
  const lapsedAgo = 1_000;
  const urn = env.orphan(TTL + lapsedAgo);
  const lastObserved = env.gms.result(urn)!.lastObserved!;
  env.agent.start();
  await env.poll();
  assert.equal(env.gms.callsOf("write").length, 0, "lapsed 1 s ago: not yet");
  await advance(env.clock, TTL - lapsedAgo - 2 * POLL_MAX, 250);
  assert.equal(env.gms.callsOf("write").length, 0, "still within a lease of the lapse");
  await advanceUntil(env.clock, () => env.reaped.length > 0, "reaped", {
    stepMs: 250,
    maxMs: TTL,
  });
  const write = env.gms.callsOf("write", urn)[0]!;
  assert.ok(write.at + env.gms.skewMs >= lastObserved + 2 * TTL, "not before lapse + lease");
  assert.equal(env.gms.result(urn)!.value.status, "ABORTED");
});

Deno.test("reaper: a fresh heartbeat → not read; read once it showed no change for a lease; untouched", async () => {
  await using env = await setup();
  const urn = env.orphan(10_000);
  env.agent.start();
  await advance(env.clock, TTL - 10_000, 250);
  assert.ok(env.polls() >= 8);
  assert.equal(env.gms.callsOf("write").length, 0);
  assert.equal(env.gms.callsOf("read", urn).length, 0, "a heartbeat within a lease: no read");
  await advance(env.clock, 10_000 + 2 * POLL_MAX, 250);
  assert.equal(env.gms.callsOf("read", urn).length, 1, "unchanged for a lease: read once");
  assert.equal(env.gms.callsOf("write").length, 0, "lapsed less than a lease ago");
});

Deno.test("reaper: a live owner (heartbeats change start+duration) is never reaped", async () => {
  await using env = await setup();
  const urn = env.orphan(1_000);
  const props = env.gms.result(urn)!.properties;
  env.agent.start();
  for (let t = 0; t < 5 * TTL; t += 10_000) {
    const r = env.gms.result(urn)!;
    env.gms.setResult(urn, { ...r.value, durationMs: r.value.durationMs! + 10_000 }, props);
    await advance(env.clock, 10_000, 1_000);
  }
  assert.equal(env.gms.result(urn)!.value.status, "RUNNING");
  assert.equal(env.gms.callsOf("write").length, 0);
  assert.equal(env.gms.callsOf("read", urn).length, 0, "its heartbeats show: never read");
});

Deno.test("reaper: GMS clock +10 min, lapsed by GMS's clock → ABORTED", async () => {
  await using env = await setup({ skewMs: 600_000 });
  // By the host's clock this lease expires in ~8 min; by GMS's it lapsed over a lease ago.
  const urn = env.orphan(2 * TTL + 1_000);
  assert.ok(env.gms.result(urn)!.lastObserved! + TTL > Date.now());
  env.agent.start();
  await env.poll();
  assert.equal(env.gms.result(urn)!.value.status, "ABORTED");
});

Deno.test("reaper: GMS clock +10 min: a lease fresh by GMS's clock → untouched", async () => {
  await using env = await setup({ skewMs: 600_000 });
  const urn = env.orphan(5_000);
  env.agent.start();
  await env.poll(3);
  assert.equal(env.gms.result(urn)!.value.status, "RUNNING");
  assert.equal(env.gms.callsOf("write").length, 0);
});

Deno.test("reaper: GMS clock −10 min, fresh by GMS's clock → untouched", async () => {
  await using env = await setup({ skewMs: -600_000 });
  // By the host's clock this lease lapsed ~9 min ago.
  const urn = env.orphan(5_000);
  assert.ok(env.gms.result(urn)!.lastObserved! + 2 * TTL < Date.now());
  env.agent.start();
  await env.poll(3);
  assert.equal(env.gms.result(urn)!.value.status, "RUNNING");
  assert.equal(env.gms.callsOf("write").length, 0);
});

Deno.test("reaper: KILL on an orphan whose lease lapsed → CANCELLED at once", async () => {
  await using env = await setup();
  const urn = env.orphan(TTL + 1_000); // lapsed 1 s ago: no lease of grace for a KILL
  env.gms.setSignal(urn, { signal: "KILL", createdAt: { time: env.gms.now(), actor: "jo" } });
  env.agent.start();
  await env.poll();
  const stored = env.gms.result(urn)!;
  assert.equal(stored.value.status, "CANCELLED");
  assert.match(stored.value.report!, /No active execution request found/);
  assert.deepEqual(env.reaped, [{ urn, status: "CANCELLED" }]);
});

Deno.test("reaper: KILL on an orphan whose lease has not lapsed → untouched", async () => {
  await using env = await setup();
  const urn = env.orphan(TTL - 20_000);
  env.gms.setSignal(urn, { signal: "KILL" });
  env.agent.start();
  await env.poll();
  assert.equal(env.gms.result(urn)!.value.status, "RUNNING");
});

Deno.test("reaper: appSource reportingExecutor → never touched, read once", async () => {
  await using env = await setup();
  const urn = env.gms.addRequest({ id: "python" });
  const props = { appSource: "reportingExecutor", executorId: "default" };
  env.gms.setResult(urn, { status: "RUNNING", startTimeMs: 1, durationMs: 1 }, props, {
    lastObserved: env.gms.now() - 86_400_000,
  });
  env.agent.start();
  await env.poll(10);
  // Its own heartbeats change what search shows: still not ours.
  env.gms.setResult(urn, { status: "RUNNING", startTimeMs: 1, durationMs: 2 }, props, {
    lastObserved: env.gms.now() - 86_400_000,
  });
  await advance(env.clock, 3 * TTL, 1_000);
  assert.ok(env.polls() >= 40);
  assert.equal(env.gms.callsOf("read", urn).length, 1);
  assert.equal(env.gms.callsOf("write", urn).length, 0);
  assert.equal(env.gms.result(urn)!.value.status, "RUNNING");
});

Deno.test("reaper: RUNNING as this instance, held by no job → closed once its heartbeat stops showing", async () => {
  await using env = await setup();
  const urn = env.orphan(1_000, ME); // fresh lease, but ours, and we hold nothing
  env.agent.start();
  await env.poll();
  assert.equal(writesTo(env.gms, urn).length, 0, "its last heartbeat is recent: not read yet");
  await advanceUntil(env.clock, () => env.reaped.length > 0, "reaped", {
    stepMs: 250,
    maxMs: TTL + 2 * POLL_MAX,
  });
  const stored = env.gms.result(urn)!;
  assert.equal(stored.value.status, "ABORTED");
  assert.match(stored.value.report!, /lost track of the run/);
  assert.equal(writesTo(env.gms, urn).length, 1);
});

Deno.test("discovery: the running page start advances page by page and wraps", async () => {
  await using env = await setup(); // max_concurrent 4 → pages of 12
  const props = { appSource: "reportingExecutor" };
  for (let i = 0; i < 30; i++) {
    const urn = env.gms.addRequest({ id: `r${String(i).padStart(2, "0")}` });
    env.gms.setResult(urn, { status: "RUNNING", startTimeMs: i, durationMs: 0 }, props);
  }
  env.agent.start();
  await env.poll(7);
  const calls = env.gms.callsOf("discover").slice(0, 7);
  assert.deepEqual(calls.map((c) => c.pages?.count), [12, 12, 12, 12, 12, 12, 12]);
  assert.deepEqual(calls.map((c) => c.pages?.runningStart), [0, 12, 24, 0, 12, 24, 0]);
  assert.deepEqual(calls.map((c) => c.pages?.pendingStart), [0, 0, 0, 0, 0, 0, 0]);
  // Every RUNNING request was looked at (read once), none twice.
  const reads = new Set(env.gms.callsOf("read").map((c) => c.urn));
  assert.equal(reads.size, 30);
  assert.equal(env.gms.callsOf("read").length, 30);
});

Deno.test("discovery: an exact multiple of the page size wraps without an empty page", async () => {
  await using env = await setup();
  for (let i = 0; i < 24; i++) {
    const urn = env.gms.addRequest({ id: `r${i}` });
    env.gms.setResult(urn, { status: "RUNNING" }, { appSource: "reportingExecutor" });
  }
  env.agent.start();
  await env.poll(4);
  const starts = env.gms.callsOf("discover").slice(0, 4).map((c) => c.pages?.runningStart);
  assert.deepEqual(starts, [0, 12, 0, 12]);
});

const BUG_REAPER_TOKEN =
  "BUG: agent.ts #reapOne closes with the owner's fencing token (`token: props.claimToken`), " +
  "although its comment says 'ours is new'";

Deno.test({
  // Regression (found by these tests; fixed in agent.ts / outbox.ts).
  name: "reaper: the owner writes between the reaper's read and write → taken, no poll failure",
  async fn() {
    await using env = await setup();
    const urn = env.orphan(2 * TTL + 1_000);
    const owner = env.gms.result(urn)!;
    const release = env.gms.hold("write");
    env.agent.start();
    await advanceUntil(env.clock, () => env.gms.callsOf("write").length === 1, "reaper write", {
      stepMs: 50,
    });
    // The owner comes back and renews its lease just before the reaper's write arrives.
    env.gms.setResult(urn, { ...owner.value, durationMs: 700_000 }, owner.properties);
    release();
    await env.poll(2);
    assert.equal(env.gms.result(urn)!.value.status, "RUNNING", "the owner's write stands");
    assert.ok(
      !env.lines.some((l) => /"poll failed; retrying"/.test(l)),
      `${BUG_REAPER_TOKEN}: a lost race with the owner failed the poll`,
    );
  },
});

Deno.test({
  // Regression (found by these tests; fixed in agent.ts / outbox.ts).
  name: "reaper: the reaped result carries a token of the reaper's own, not the owner's",
  async fn() {
    await using env = await setup();
    const urn = env.orphan(2 * TTL + 1_000);
    const ownerToken = env.gms.result(urn)!.properties.claimToken;
    env.agent.start();
    await env.poll();
    const stored = env.gms.result(urn)!;
    assert.equal(stored.value.status, "ABORTED");
    assert.notEqual(stored.properties.claimToken, ownerToken, BUG_REAPER_TOKEN);
  },
});

Deno.test({
  // Regression (found by these tests; fixed in agent.ts / outbox.ts).
  name: "claims: an uncertain claim keeps its slot; never more claims than max_concurrent",
  async fn() {
    await using env = await setup({ maxConcurrent: 1 });
    const recipe = JSON.stringify({ source: { type: "file", config: { token: "${TOKEN}" } } });
    const a = env.gms.addRequest({ id: "a", args: { recipe } });
    const b = env.gms.addRequest({ id: "b", args: { recipe } });
    env.gms.secrets.set("TOKEN", "secret-value");
    const releaseSecrets = env.gms.hold("secrets"); // jobs stay in preparation, holding a slot
    try {
      // The first claim lands but its answer is lost, and so is the re-read: "uncertain".
      env.gms.failNext("write", "after", { when: (c) => c.options?.ifVersionMatch === "-1" });
      env.gms.failNext("read", "before", { when: () => env.gms.callsOf("write").length === 1 });
      env.agent.start();
      await env.poll(2);
      await advance(env.clock, 2 * TTL, 250);
      const ours = [a, b].filter((urn) =>
        env.gms.result(urn)?.value.status === "RUNNING" &&
        env.gms.result(urn)?.properties.agentInstance === ME.instanceId
      );
      assert.ok(env.agent.activeRuns <= 1, `active runs: ${env.agent.activeRuns}`);
      assert.ok(ours.length <= 1, `requests claimed by us: ${ours.length} (max_concurrent 1)`);
      for (const urn of ours) {
        const observed = env.gms.result(urn)!.lastObserved!;
        assert.ok(env.gms.now() - observed < TTL, `${urn}: a held claim keeps its lease`);
      }
    } finally {
      releaseSecrets();
    }
  },
});

Deno.test("discovery: a full page with nothing for us → next page, wrapping", async () => {
  await using env = await setup();
  // List mode: GMS returns other executors' requests, which the client filters out.
  env.gms.discoverWith = (_id, pages) => {
    const start = pages.pendingStart ?? 0;
    const returned = Math.min(pages.count, 30 - start);
    return {
      pending: [],
      running: [],
      pages: {
        pending: { start, returned, total: 30 },
        running: { start: 0, returned: 0, total: 0 },
      },
    };
  };
  env.agent.start();
  await env.poll(5);
  const starts = env.gms.callsOf("discover").slice(0, 5).map((c) => c.pages?.pendingStart);
  assert.deepEqual(starts, [0, 12, 24, 0, 12]);
});

Deno.test({
  // Regression (found by these tests; fixed in agent.ts / outbox.ts).
  name: "discovery: a full page of unreadable pending requests → the next page is looked at",
  async fn() {
    await using env = await setup(); // max_concurrent 4 → pages of 12
    const bad = new Set<string>();
    for (let i = 0; i < 12; i++) {
      bad.add(env.gms.addRequest({ id: `bad-${i}`, requestedAt: env.gms.now() - 60_000 + i }));
    }
    const good = env.gms.addRequest({ id: "good" });
    env.gms.failNext("read", "before", {
      times: Infinity,
      when: (c) => bad.has(c.urn ?? ""),
      error: new GmsError("GMS_BAD_RESPONSE", "read", "unexpected answer from GMS at input"),
    });
    env.agent.start();
    await env.poll(4);
    const starts = env.gms.callsOf("discover").map((c) => c.pages?.pendingStart);
    assert.ok(starts.includes(12), `pendingStart per poll: ${starts}`);
    assert.ok(env.gms.callsOf("read", good).length > 0, "the request behind them was read");
  },
});
