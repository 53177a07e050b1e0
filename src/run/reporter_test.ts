import assert from "node:assert/strict";
import { FakeGms } from "../../test/fake_gms.ts";
import { installClock } from "../../test/fake_time.ts";
import { GmsError } from "../errors.ts";
import { type Identity, leaseProperties } from "../identity.ts";
import { createLogger } from "../observe/log.ts";
import { LEASE_GIVE_UP, Reporter } from "./reporter.ts";

const ME: Identity = { instanceId: "agent-me", host: "host-a", executorId: "default" };
const TTL = 60_000;
const TOKEN = "token-mine";
const START = 1_000;

function setup(options: { monotonic?: () => number } = {}) {
  const gms = new FakeGms();
  const urn = gms.addRequest();
  const version = gms.setResult(
    urn,
    { status: "RUNNING", startTimeMs: START, durationMs: 0, report: "claimed" },
    leaseProperties(ME, { token: TOKEN, ttlMs: TTL, writeId: "w-claim" }),
  );
  const lines: string[] = [];
  const log = createLogger({ level: "debug", format: "json", write: (l) => lines.push(l) });
  const reporter = new Reporter({
    gms,
    urn,
    identity: ME,
    token: TOKEN,
    startTimeMs: START,
    version,
    leaseTtlMs: TTL,
    log,
    ...options,
  });
  return { gms, urn, reporter, lines };
}

/** A settable monotonic clock. */
function mono(start = 0) {
  const c = { t: start, now: () => c.t };
  return c;
}

Deno.test("heartbeat: a changed report is written; the same report again is not", async () => {
  const m = mono();
  const { gms, urn, reporter } = setup({ monotonic: m.now });
  assert.equal(await reporter.heartbeat("line 1", START + 5_000), "written");
  assert.equal(reporter.version, "2");
  const stored = gms.result(urn)!;
  assert.equal(stored.value.status, "RUNNING");
  assert.equal(stored.value.report, "line 1");
  assert.equal(stored.value.durationMs, 5_000);
  assert.equal(stored.properties.claimToken, TOKEN);
  m.t += 5_000;
  assert.equal(await reporter.heartbeat("line 1", START + 10_000), "unchanged");
  assert.equal(gms.callsOf("write").length, 1, "unchanged: no write");
  m.t += 5_000;
  assert.equal(await reporter.heartbeat("line 2", START + 15_000), "written");
  assert.equal(gms.callsOf("write").length, 2);
  assert.deepEqual(gms.callsOf("write").map((c) => c.options?.ifVersionMatch), ["1", "2"]);
  assert.equal(gms.result(urn)!.version, "3");
});

Deno.test("heartbeat: the lease is renewed at ttl/2 with an unchanged report", async () => {
  const m = mono();
  const { gms, reporter } = setup({ monotonic: m.now });
  assert.equal(await reporter.heartbeat("same"), "written");
  m.t = TTL / 2 - 1;
  assert.equal(await reporter.heartbeat("same"), "unchanged", "just before ttl/2");
  assert.equal(gms.callsOf("write").length, 1);
  m.t = TTL / 2;
  assert.equal(await reporter.heartbeat("same"), "written", "at ttl/2: renewal");
  assert.equal(gms.callsOf("write").length, 2);
  m.t = TTL / 2 + TTL / 2 - 1;
  assert.equal(await reporter.heartbeat("same"), "unchanged", "renewal restarts the half-lease");
  assert.equal(reporter.sinceLastWriteMs, TTL / 2 - 1);
});

Deno.test("heartbeat: lost answer + failed re-read → next one adopts, not fenced", async () => {
  const m = mono();
  const { gms, urn, reporter } = setup({ monotonic: m.now });
  gms.failNext("write", "after"); // applied (v2), ECONNRESET
  gms.failNext("read", "before"); // and the re-read answers 500
  assert.equal(await reporter.heartbeat("line 1"), "failed");
  assert.equal(gms.result(urn)!.version, "2", "the lost heartbeat did land");
  assert.equal(reporter.fenced, false);
  m.t += 5_000;
  assert.equal(await reporter.heartbeat("line 2"), "written");
  assert.equal(reporter.fenced, false);
  assert.equal(reporter.version, "3");
  assert.equal(gms.result(urn)!.value.report, "line 2");
  assert.equal(gms.callsOf("write").length, 2, "one write per heartbeat");
});

Deno.test("heartbeat: applied then reset → adopted at once, next one is no 412", async () => {
  const m = mono();
  const { gms, urn, reporter } = setup({ monotonic: m.now });
  gms.failNext("write", "after"); // applied (v2), ECONNRESET; the re-read finds our writeId
  assert.equal(await reporter.heartbeat("line 1"), "written");
  assert.equal(reporter.version, "2");
  m.t += 5_000;
  assert.equal(await reporter.heartbeat("line 2"), "written");
  assert.equal(reporter.fenced, false);
  assert.deepEqual(gms.callsOf("write").map((c) => [c.options?.ifVersionMatch, c.outcome]), [
    ["1", "lost"],
    ["2", "ok"],
  ]);
  assert.equal(gms.result(urn)!.version, "3");
});

Deno.test("heartbeat: 412 from our own lost write → adopts, not fenced", async () => {
  const m = mono();
  const { gms, urn, reporter } = setup({ monotonic: m.now });
  // Our earlier heartbeat (other writeId, our token) landed without us learning its version.
  gms.setResult(
    urn,
    { status: "RUNNING", startTimeMs: START, durationMs: 1, report: "lost one" },
    leaseProperties(ME, { token: TOKEN, ttlMs: TTL, writeId: "w-lost" }),
  );
  assert.equal(reporter.version, "1", "the reporter still holds the claim's version");
  assert.equal(await reporter.heartbeat("next"), "written");
  assert.equal(reporter.fenced, false);
  assert.equal(reporter.version, "3");
  const writes = gms.callsOf("write");
  assert.deepEqual(writes.map((c) => [c.options?.ifVersionMatch, c.outcome]), [
    ["1", "refused"],
    ["2", "ok"],
  ]);
  m.t += 1_000;
  assert.equal(await reporter.heartbeat("again"), "written");
  assert.equal(gms.callsOf("write").at(-1)!.options?.ifVersionMatch, "3");
});

Deno.test("heartbeat: changed by someone else → fenced, nothing more written", async () => {
  const m = mono();
  const { gms, urn, reporter, lines } = setup({ monotonic: m.now });
  assert.equal(await reporter.heartbeat("line 1"), "written");
  gms.setResult(urn, { status: "FAILURE", report: "closed by hand" }, {});
  m.t += 5_000;
  assert.equal(await reporter.heartbeat("line 2"), "fenced");
  assert.equal(reporter.fenced, true);
  const writes = gms.callsOf("write").length;
  for (let i = 0; i < 5; i++) {
    m.t += TTL;
    assert.equal(await reporter.heartbeat(`line ${i + 3}`), "fenced");
  }
  assert.equal(gms.callsOf("write").length, writes, "no write after fencing");
  assert.equal(gms.result(urn)!.value.report, "closed by hand");
  assert.ok(lines.some((l) => /result changed behind our back/.test(l)));
});

Deno.test("heartbeat: another agent's RUNNING result fences too (taken by token)", async () => {
  const m = mono();
  const { gms, urn, reporter } = setup({ monotonic: m.now });
  gms.setResult(
    urn,
    { status: "RUNNING", report: "theirs" },
    leaseProperties({ ...ME, instanceId: "agent-other" }, { token: "other", ttlMs: TTL }),
  );
  assert.equal(await reporter.heartbeat("mine"), "fenced");
  assert.equal(gms.result(urn)!.value.report, "theirs");
});

Deno.test("heartbeat: failing for more than 1.5 × lease_ttl → lease-lost", async () => {
  const m = mono();
  const { gms, reporter } = setup({ monotonic: m.now });
  assert.equal(LEASE_GIVE_UP, 1.5);
  gms.failNext("write", "before", { times: Infinity });
  const outcomes: string[] = [];
  for (const t of [5_000, 30_000, 60_000, 89_999, 90_000]) {
    m.t = t;
    outcomes.push(await reporter.heartbeat(`line at ${t}`));
  }
  assert.deepEqual(outcomes, ["failed", "failed", "failed", "failed", "failed"]);
  assert.equal(reporter.leaseLost, false, "exactly 1.5 × ttl is not yet more");
  m.t = 90_001;
  assert.equal(await reporter.heartbeat("late"), "lease-lost");
  assert.equal(reporter.leaseLost, true);
  assert.equal(reporter.sinceLastWriteMs, 90_001);
});

Deno.test("heartbeat: a success within 1.5 × ttl resets the lease clock", async () => {
  const m = mono();
  const { gms, reporter } = setup({ monotonic: m.now });
  gms.failNext("write", "before", { times: 4 }); // two heartbeats × two attempts
  m.t = 40_000;
  assert.equal(await reporter.heartbeat("a"), "failed");
  m.t = 80_000;
  assert.equal(await reporter.heartbeat("b"), "failed");
  m.t = 85_000;
  assert.equal(await reporter.heartbeat("c"), "written");
  m.t = 85_000 + 90_000;
  assert.equal(reporter.leaseLost, false);
  m.t += 1;
  assert.equal(reporter.leaseLost, true);
});

Deno.test("heartbeat: a 400 refusal → failed (the run goes on), no fencing", async () => {
  const m = mono();
  const { gms, reporter } = setup({ monotonic: m.now });
  gms.failNext("write", "before", {
    error: new GmsError("GMS_REJECTED", "writeResult", "HTTP 400", { status: 400 }),
  });
  assert.equal(await reporter.heartbeat("x"), "failed");
  assert.equal(reporter.fenced, false);
  assert.equal(await reporter.heartbeat("x"), "written");
});

Deno.test("heartbeat: a backwards wall-clock step does not stop renewals", async () => {
  const clock = installClock();
  try {
    // Default monotonic clock: performance.now(), faked; Date steps back below.
    const { gms, urn, reporter } = setup();
    assert.equal(await reporter.heartbeat("same"), "written");
    await clock.tickAsync(TTL / 2);
    assert.equal(await reporter.heartbeat("same"), "written", "renewal at ttl/2");
    clock.setSystemTime(Date.now() - 6 * 3_600_000); // NTP steps the wall clock back 6 h
    await clock.tickAsync(TTL / 2);
    assert.equal(await reporter.heartbeat("same"), "written", "renewal after the step");
    await clock.tickAsync(TTL / 2 - 1);
    assert.equal(await reporter.heartbeat("same"), "unchanged");
    await clock.tickAsync(1);
    assert.equal(await reporter.heartbeat("same"), "written");
    assert.equal(gms.callsOf("write").length, 4);
    assert.equal(gms.result(urn)!.version, "5");
    assert.ok(gms.result(urn)!.value.durationMs! >= 0, "duration never negative");
    assert.equal(reporter.leaseLost, false);
  } finally {
    clock.uninstall();
  }
});

Deno.test("close(): no more progress writes", async () => {
  const m = mono();
  const { gms, reporter } = setup({ monotonic: m.now });
  reporter.close();
  m.t = TTL;
  assert.equal(await reporter.heartbeat("after close"), "unchanged");
  assert.equal(gms.callsOf("write").length, 0);
});
