import assert from "node:assert/strict";
import { compileConfig } from "../config/config.ts";
import type { Candidate, RequestInput, RequestState } from "../request.ts";
import { Schedule, SETTLE_MS } from "./schedule.ts";

const SOURCE = "urn:li:dataHubIngestionSource:s";
const config = (agent: Record<string, unknown> = {}) =>
  compileConfig({ agent }, { env: {} }).config;
const cand = (urn: string, o: Partial<Candidate> = {}): Candidate => ({
  urn,
  task: "RUN_INGEST",
  executorId: "default",
  requestedAt: 1_000,
  ingestionSource: SOURCE,
  scheduled: false,
  ...o,
});
/** A RUNNING request of SOURCE, as discovery shows it. */
const running = [{
  urn: "u:run",
  executorId: "default",
  startTimeMs: 1,
  durationMs: 1,
  ingestionSource: SOURCE,
}];
const input = (type: string): RequestInput =>
  ({
    task: "RUN_INGEST",
    args: { recipe: JSON.stringify({ source: { type, config: {} } }) },
  }) as unknown as RequestInput;

Deno.test("schedule: a running source → manual waits, scheduled is DUPLICATE naming it; per-type override; TEST_CONNECTION exempt", () => {
  const s = new Schedule(config({ on_overlap: { source_types: { snowflake: "skip" } } }));
  assert.equal(s.before(cand("u:m"), running).kind, "leave");
  assert.deepEqual(s.before(cand("u:s", { scheduled: true }), running), {
    kind: "duplicate",
    of: "u:run",
  });
  assert.equal(s.before(cand("u:t", { task: "TEST_CONNECTION" }), running).kind, "claim");
  assert.equal(s.before(cand("u:other", { ingestionSource: "urn:other" }), running).kind, "claim");
  assert.equal(s.policy({ scheduled: false, sourceType: "snowflake" }), "skip");
  // Within one agent: its own job of the source.
  s.started(cand("u:mine"), input("mysql"));
  assert.equal(s.before(cand("u:next"), []).kind, "leave");
  s.ended("u:mine");
  assert.equal(s.before(cand("u:next"), []).kind, "claim");
  const plain = new Schedule(config({ on_overlap: "skip" }));
  assert.equal(plain.before(cand("u:m"), running).kind, "duplicate", "one policy for both");
});

Deno.test("schedule: source_limits hold per type, learnt at the claim's read and remembered", () => {
  const s = new Schedule(config({ source_limits: { snowflake: 1 } }));
  const a = cand("u:a", { ingestionSource: "urn:a" });
  const b = cand("u:b", { ingestionSource: "urn:b" });
  assert.equal(s.admit(a.urn, input("snowflake"), a).kind, "claim");
  s.started(a, input("snowflake"));
  assert.equal(s.admit(b.urn, input("snowflake"), b).kind, "leave");
  assert.equal(s.before(b, []).kind, "leave", "the type is remembered: no read needed");
  const c = cand("u:c", { ingestionSource: "urn:c" });
  assert.equal(s.admit(c.urn, input("mysql"), c).kind, "claim", "other types flow");
  s.ended(a.urn);
  assert.equal(s.before(b, []).kind, "claim");
});

Deno.test("schedule: settle — the older request or the one claimed clearly first wins; same-instant younger loses", async () => {
  const s = new Schedule(config());
  const states = new Map<string, RequestState>();
  const gms = { readRequest: (urn: string) => Promise.resolve(states.get(urn)) };
  const running = (urn: string, startTimeMs: number) =>
    states.set(urn, {
      urn,
      id: urn,
      input: undefined,
      signal: undefined,
      result: { value: { status: "RUNNING", startTimeMs }, version: "1", properties: {} },
    } as unknown as RequestState);
  const now = Date.now();
  const older = cand("u:older", { requestedAt: 500 });
  const younger = cand("u:younger", { requestedAt: 2_000 });
  running(older.urn, now);
  running(younger.urn, now);
  const me = { urn: "u:me", requestedAt: 1_000, claimedAt: now };
  const t0 = Date.now();
  assert.equal(await s.settle(gms, me, [older]), older.urn, "the older request wins");
  assert.ok(Date.now() - t0 >= SETTLE_MS - 20, "waited for the other claim to land");
  assert.equal(
    await s.settle(gms, me, [younger]),
    undefined,
    "a younger one claimed with us loses",
  );
  running(younger.urn, now - 5_000);
  assert.equal(
    await s.settle(gms, me, [younger]),
    younger.urn,
    "claimed clearly before us: it runs",
  );
  assert.equal(await s.settle(gms, me, []), undefined, "no siblings: no wait");
});

Deno.test("schedule.action: too old → close ABORTED; a running source (skip) → close DUPLICATE naming it; else before's answer", () => {
  const s = new Schedule(config({ max_request_age: "1m" }));
  const old = s.action(cand("u:old", { requestedAt: 0 }), [], 61_000);
  assert.equal(old.kind === "close" && old.status, "ABORTED");
  assert.match(old.kind === "close" ? old.why : "", /waited 1 minutes/);
  const dup = s.action(cand("u:s", { scheduled: true, requestedAt: 60_000 }), running, 61_000);
  assert.equal(dup.kind === "close" && dup.status, "DUPLICATE");
  assert.match(dup.kind === "close" ? dup.why : "", /u:run/);
  assert.equal(s.action(cand("u:m", { requestedAt: 60_000 }), running, 61_000).kind, "leave");
  assert.equal(s.action(cand("u:m", { requestedAt: 60_000 }), [], 61_000).kind, "claim");
});
