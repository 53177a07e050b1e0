import assert from "node:assert/strict";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { FakeGms, gmsError } from "../../test/fake_gms.ts";
import { installClock } from "../../test/fake_time.ts";
import { type Identity, leaseProperties } from "../identity.ts";
import { createLogger } from "../observe/log.ts";
import { Outbox, type OutboxOptions } from "./outbox.ts";
import type { ResultValue } from "../request.ts";
import { type OutboxRecord, StateDir } from "./state_dir.ts";

const ME: Identity = { instanceId: "agent-me", host: "host-a", executorId: "default" };
const OLD: Identity = { instanceId: "agent-old", host: "host-a", executorId: "default" };
const OTHER: Identity = { instanceId: "agent-other", host: "host-b", executorId: "default" };
const TOKEN = "token-mine";

const success = (report = "done"): ResultValue => ({
  status: "SUCCESS",
  startTimeMs: 1,
  durationMs: 9,
  report,
});

interface Env {
  gms: FakeGms;
  state: StateDir;
  outbox: Outbox;
  urn: string;
  lines: string[];
  dir: string;
  files: () => Promise<string[]>;
  record: (over?: Partial<OutboxRecord>) => OutboxRecord;
  [Symbol.asyncDispose](): Promise<void>;
}

/** A request claimed by `owner` (RUNNING v1 with `token`), a StateDir in a temp dir, an Outbox. */
async function setup(
  options: Partial<OutboxOptions> & { owner?: Identity; token?: string } = {},
): Promise<Env> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "outbox-test-"));
  const state = new StateDir(dir);
  await state.open();
  const gms = new FakeGms();
  const urn = gms.addRequest({ id: "exec-1" });
  gms.setResult(
    urn,
    { status: "RUNNING", startTimeMs: 1, report: "claimed" },
    leaseProperties(options.owner ?? ME, { token: options.token ?? TOKEN, ttlMs: 8_000 }),
  );
  const lines: string[] = [];
  const log = createLogger({ level: "debug", format: "json", write: (l) => lines.push(l) });
  const outbox = new Outbox({
    state,
    gms,
    identity: ME,
    retryForMs: 3_600_000,
    leaseTtlMs: 8_000,
    log,
    baseDelayMs: 500,
    ...options,
  });
  return {
    gms,
    state,
    outbox,
    urn,
    lines,
    dir,
    files: () => readdir(path.join(dir, "outbox")),
    record: (over = {}) => ({
      urn,
      id: "exec-1",
      instance: ME.instanceId,
      token: TOKEN,
      value: success(),
      version: "1",
      createdAt: Date.now(),
      ...over,
    }),
    async [Symbol.asyncDispose]() {
      outbox.stop();
      state.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Writes that changed the stored result to a terminal status. */
function terminalWrites(gms: FakeGms, urn: string) {
  return gms.callsOf("write", urn).filter((c) => c.applied && c.value?.status !== "RUNNING");
}

Deno.test("outbox: delivers, then removes the file", async () => {
  await using env = await setup();
  const { delivery } = await env.outbox.submit(env.record());
  assert.equal(await delivery, "delivered");
  assert.deepEqual(await env.files(), []);
  const stored = env.gms.result(env.urn)!;
  assert.equal(stored.value.status, "SUCCESS");
  assert.equal(stored.version, "2");
  assert.equal(stored.properties.claimToken, TOKEN);
  assert.ok(stored.properties.writeId, "the record's write id is stamped");
  assert.equal(env.gms.callsOf("write").length, 1);
  assert.equal(env.outbox.pending, 0);
});

Deno.test("outbox: the file is saved before the first attempt, with a write id", async () => {
  await using env = await setup();
  const release = env.gms.hold("write");
  const { delivery } = await env.outbox.submit(env.record());
  const saved = await env.state.listResults();
  assert.equal(saved.length, 1);
  assert.ok(saved[0]!.writeId);
  release();
  assert.equal(await delivery, "delivered");
  assert.equal(env.gms.result(env.urn)!.properties.writeId, saved[0]!.writeId);
});

Deno.test("outbox: terminal write applied then 500 → one terminal version", async () => {
  await using env = await setup();
  env.gms.failNext("write", "after", {
    error: gmsError.unavailable(),
    when: (c) => c.value?.status !== "RUNNING",
  });
  const { delivery } = await env.outbox.submit(env.record());
  assert.equal(await delivery, "delivered");
  assert.equal(terminalWrites(env.gms, env.urn).length, 1);
  assert.equal(env.gms.callsOf("write").length, 1, "recognised by its write id: no re-write");
  assert.deepEqual(env.gms.history(env.urn).map((r) => r.value.status), ["RUNNING", "SUCCESS"]);
  assert.deepEqual(await env.files(), []);
});

Deno.test("outbox: applied-then-500, re-read failing → next attempt sees it", async () => {
  await using env = await setup();
  const clock = installClock();
  try {
    env.gms.failNext("write", "after", { error: gmsError.unavailable() });
    env.gms.failNext("read", "before");
    const { delivery } = await env.outbox.submit(env.record());
    await clock.tickAsync(2_000);
    assert.equal(await delivery, "delivered");
    assert.equal(env.gms.callsOf("write").length, 1, "one write in all");
    assert.equal(env.gms.history(env.urn).length, 2);
  } finally {
    clock.uninstall();
  }
});

Deno.test("outbox: 500s then success → delivered; backoff ≤ lease_ttl/4", async () => {
  await using env = await setup(); // lease_ttl 8 s → waits at most 2 s; base 500 ms
  const clock = installClock();
  try {
    env.gms.failNext("write", "before", { times: 8 }); // 4 attempts × (write, re-read, write)
    const { delivery } = await env.outbox.submit(env.record());
    await clock.tickAsync(249);
    assert.equal(env.gms.callsOf("write").length, 2, "no retry before the first backoff (≥ 250)");
    await clock.tickAsync(20_000);
    assert.equal(await delivery, "delivered");
    const writes = env.gms.callsOf("write");
    assert.equal(writes.length, 9);
    const starts = writes.filter((_, i) => i % 2 === 0).map((c) => c.at);
    const gaps = starts.slice(1).map((t, i) => t - starts[i]!);
    assert.equal(gaps.length, 4);
    gaps.forEach((gap, k) => {
      const ceiling = Math.min(2_000, 500 * 2 ** k);
      assert.ok(
        gap >= ceiling / 2 && gap <= ceiling,
        `wait ${k}: ${gap} in [${ceiling / 2}, ${ceiling}]`,
      );
      assert.ok(gap <= 8_000 / 4, `wait ${k} ≤ lease_ttl/4`);
    });
    assert.equal(terminalWrites(env.gms, env.urn).length, 1);
    assert.ok(env.lines.some((l) => /result delivered after retries/.test(l)));
  } finally {
    clock.uninstall();
  }
});

Deno.test("outbox: waits are capped at min(60 s, lease_ttl / 4)", async () => {
  for (const [ttl, cap] of [[3_600_000, 60_000], [2_000, 500]] as const) {
    await using env = await setup({ leaseTtlMs: ttl, baseDelayMs: 1_000_000 });
    const clock = installClock();
    try {
      env.gms.failNext("write", "before", { times: 10 });
      const { delivery } = await env.outbox.submit(env.record());
      await clock.tickAsync(20 * cap);
      assert.equal(await delivery, "delivered");
      const starts = env.gms.callsOf("write").filter((_, i) => i % 2 === 0).map((c) => c.at);
      const gaps = starts.slice(1).map((t, i) => t - starts[i]!);
      assert.ok(gaps.every((g) => g <= cap && g >= cap / 2), `ttl ${ttl}: ${gaps}`);
    } finally {
      clock.uninstall();
    }
  }
});

Deno.test("outbox: a Retry-After within lease_ttl/4 is honoured", async () => {
  await using env = await setup(); // lease_ttl 8 s; the first backoff is at most 500 ms
  const clock = installClock();
  try {
    env.gms.failNext("write", "before", { error: gmsError.rateLimited("writeResult", 1_500) });
    const { delivery } = await env.outbox.submit(env.record());
    await clock.tickAsync(1_499);
    assert.equal(env.gms.callsOf("write").length, 1);
    await clock.tickAsync(1);
    assert.equal(await delivery, "delivered");
    assert.equal(env.gms.callsOf("write").length, 2);
  } finally {
    clock.uninstall();
  }
});

Deno.test({
  // Regression (found by these tests; fixed in agent.ts / outbox.ts).
  name: "outbox: a Retry-After beyond lease_ttl/4 still retries within lease_ttl/4",
  async fn() {
    await using env = await setup(); // lease_ttl 8 s
    const clock = installClock();
    try {
      env.gms.failNext("write", "before", { error: gmsError.rateLimited("writeResult", 60_000) });
      const { delivery } = await env.outbox.submit(env.record());
      await clock.tickAsync(8_000 / 4);
      assert.equal(
        env.gms.callsOf("write").length,
        2,
        "BUG: Retry-After 60 s postponed the retry past lease_ttl/4 (2 s)",
      );
      assert.equal(await delivery, "delivered");
    } finally {
      env.outbox.stop();
      await clock.tickAsync(0);
      clock.uninstall();
    }
  },
});

Deno.test("outbox: 413 → retried without structuredReport, then cut; delivered", async () => {
  await using env = await setup();
  const big = "x".repeat(100_000);
  const value: ResultValue = {
    ...success(big),
    structuredReport: {
      type: "RUN_INGEST",
      serializedValue: "{}",
      contentType: "application/json",
    },
  };
  env.gms.failNext("write", "before", { error: gmsError.tooLarge(), times: 2 });
  const { delivery } = await env.outbox.submit(env.record({ value }));
  assert.equal(await delivery, "delivered");
  const writes = env.gms.callsOf("write").map((c) => c.value!);
  assert.equal(writes.length, 3);
  assert.ok(writes[0]!.structuredReport, "first as produced");
  assert.equal(writes[1]!.structuredReport, undefined, "then without the structured report");
  assert.match(writes[1]!.report!, /^WARNING: exec-1 result was refused .*413/);
  const [before, after] = [writes[1]!.report!.length, writes[2]!.report!.length];
  assert.ok(after <= before / 2 + 50, `then cut to about half: ${before} → ${after}`);
  assert.match(writes[2]!.report!, /cut/);
  const stored = env.gms.result(env.urn)!;
  assert.equal(stored.value.status, "SUCCESS");
  assert.equal(stored.value.structuredReport, undefined);
  assert.equal(stored.value.report, writes[2]!.report);
});

Deno.test("outbox: 413 and nothing left to cut → rejected, file removed", async () => {
  await using env = await setup();
  env.gms.failNext("write", "before", { error: gmsError.tooLarge(), times: Infinity });
  const { delivery } = await env.outbox.submit(env.record());
  assert.equal(await delivery, "rejected");
  assert.deepEqual(await env.files(), []);
  assert.equal(env.gms.result(env.urn)!.value.status, "RUNNING");
});

Deno.test("outbox: a non-retryable 400 → rejected and the file removed", async () => {
  await using env = await setup();
  env.gms.failNext("write", "before", { error: gmsError.rejected("writeResult", "bad value") });
  const { delivery } = await env.outbox.submit(env.record());
  assert.equal(await delivery, "rejected");
  assert.deepEqual(await env.files(), []);
  assert.equal(env.gms.callsOf("write").length, 1);
  assert.ok(env.lines.some((l) => /result rejected by GMS/.test(l)));
});

Deno.test("outbox: a result taken by someone else → superseded, not overwritten", async () => {
  await using env = await setup();
  env.gms.setResult(
    env.urn,
    { status: "RUNNING", report: "theirs" },
    leaseProperties(OTHER, { token: "t-other", ttlMs: 8_000 }),
  );
  const { delivery } = await env.outbox.submit(env.record());
  assert.equal(await delivery, "superseded");
  const stored = env.gms.result(env.urn)!;
  assert.equal(stored.value.report, "theirs");
  assert.equal(stored.version, "2");
  assert.equal(terminalWrites(env.gms, env.urn).length, 0);
  assert.deepEqual(await env.files(), []);
});

Deno.test("outbox: closed by a reaper (ABORTED, immutable) → superseded", async () => {
  await using env = await setup();
  env.gms.setResult(env.urn, { status: "ABORTED", report: "reaped" }, {
    ...leaseProperties(OTHER, { token: "t-reaper", ttlMs: 8_000 }),
  });
  const { delivery } = await env.outbox.submit(env.record());
  assert.equal(await delivery, "superseded");
  assert.equal(env.gms.result(env.urn)!.value.report, "reaped");
});

Deno.test("outbox: holds(urn) while delivering and waiting to retry, not after", async () => {
  await using env = await setup();
  const clock = installClock();
  try {
    const release = env.gms.hold("write");
    assert.equal(env.outbox.holds(env.urn), false);
    const { delivery } = await env.outbox.submit(env.record());
    assert.equal(env.outbox.holds(env.urn), true, "while the write is in flight");
    env.gms.failNext("write", "before", { times: 2 });
    release();
    await clock.tickAsync(100);
    assert.equal(env.outbox.holds(env.urn), true, "while waiting to retry");
    assert.equal(env.outbox.pending, 1);
    await clock.tickAsync(2_000);
    assert.equal(await delivery, "delivered");
    assert.equal(env.outbox.holds(env.urn), false);
    assert.equal(env.outbox.pending, 0);
  } finally {
    clock.uninstall();
  }
});

Deno.test("outbox: resume() delivers a previous instance's record by its token", async () => {
  await using env = await setup({ owner: OLD });
  // A later heartbeat of the old instance landed: v2, which the record does not know.
  env.gms.setResult(
    env.urn,
    { status: "RUNNING", report: "later" },
    leaseProperties(OLD, { token: TOKEN, ttlMs: 8_000 }),
  );
  await env.state.saveResult(
    env.record({ instance: OLD.instanceId, writeId: "w-old", version: "1" }),
  );
  assert.equal((await env.outbox.resume()).length, 1);
  assert.equal(await env.outbox.idle(5_000), true);
  const stored = env.gms.result(env.urn)!;
  assert.equal(stored.value.status, "SUCCESS");
  assert.equal(stored.version, "3");
  assert.equal(stored.properties.claimToken, TOKEN);
  assert.equal(stored.properties.writeId, "w-old");
  assert.equal(stored.properties.agentInstance, ME.instanceId);
  const writes = env.gms.callsOf("write");
  assert.deepEqual(writes.map((c) => c.options?.ifVersionMatch), ["2"], "read first, no 412");
  assert.deepEqual(await env.files(), []);
});

Deno.test("outbox: resume() of a record that had landed → removed, no write", async () => {
  await using env = await setup({ owner: OLD });
  env.gms.setResult(
    env.urn,
    success(),
    leaseProperties(OLD, { token: TOKEN, ttlMs: 8_000, writeId: "w-old" }),
  );
  await env.state.saveResult(env.record({ instance: OLD.instanceId, writeId: "w-old" }));
  await env.outbox.resume();
  assert.equal(await env.outbox.idle(5_000), true);
  assert.equal(env.gms.callsOf("write").length, 0);
  assert.deepEqual(await env.files(), []);
});

Deno.test("outbox: resume() of a legacy record without token: ours by its instance", async () => {
  await using env = await setup();
  const legacy = leaseProperties(OLD, { token: "", ttlMs: 8_000 });
  delete legacy.claimToken;
  env.gms.setResult(env.urn, { status: "RUNNING", report: "legacy" }, legacy);
  const rec = env.record({ instance: OLD.instanceId });
  delete rec.token;
  await env.state.saveResult(rec);
  await env.outbox.resume();
  assert.equal(await env.outbox.idle(5_000), true);
  assert.equal(env.gms.result(env.urn)!.value.status, "SUCCESS");
});

Deno.test("outbox: past result_retry_for → expired and dropped", async () => {
  await using env = await setup({ retryForMs: 5_000 });
  const clock = installClock();
  try {
    env.gms.failNext("write", "before", { times: Infinity });
    const { delivery } = await env.outbox.submit(env.record({ createdAt: Date.now() }));
    await clock.tickAsync(6_000);
    assert.equal(await delivery, "expired");
    assert.deepEqual(await env.files(), []);
    assert.ok(env.lines.some((l) => /not delivered within agent.result_retry_for/.test(l)));
  } finally {
    clock.uninstall();
  }
});

Deno.test("outbox: stop() ends the retries; the record stays for the next start", async () => {
  await using env = await setup();
  const clock = installClock();
  try {
    env.gms.failNext("write", "before", { times: Infinity });
    const { delivery } = await env.outbox.submit(env.record());
    await clock.tickAsync(10);
    env.outbox.stop();
    await clock.tickAsync(0);
    assert.equal(await delivery, "expired");
    assert.equal((await env.files()).length, 1);
  } finally {
    clock.uninstall();
  }
});
