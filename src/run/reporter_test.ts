import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { FakeGms } from "../../test/fake_gms.ts";
import { EPOCH, installClock } from "../../test/fake_time.ts";
import { GmsError } from "../errors.ts";
import { GmsSimulator } from "../../test/sim/gms_simulator.ts";
import { GmsClient } from "../gms/client.ts";
import { writeOwned } from "../gms/result_write.ts";
import { type Identity, leaseProperties, ownerLine } from "../identity.ts";
import { createLogger, silentLogger } from "../observe/log.ts";
import { PROGRESS_REPORT_BYTES, progressReport } from "./finish.ts";
import { RunLog } from "./run_log.ts";
import { LEASE_GIVE_UP, PROGRESS_INTERVAL_MS, progressLoop, Reporter } from "./reporter.ts";

const ME: Identity = { instanceId: "agent-me", host: "host-a", executorId: "default" };
const TTL = 60_000;
const TOKEN = "token-mine";
const START = 1_000;
/** The progress interval: a changed report is written this long after the last write. */
const P = PROGRESS_INTERVAL_MS;

function setup(options: { monotonic?: () => number; leaseTtlMs?: number } = {}) {
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
  m.t = P;
  assert.equal(await reporter.heartbeat("line 1", START + 5_000), "written");
  assert.equal(reporter.version, "2");
  const stored = gms.result(urn)!;
  assert.equal(stored.value.status, "RUNNING");
  assert.equal(stored.value.report, "line 1");
  assert.equal(stored.value.durationMs, 5_000);
  assert.equal(stored.properties.claimToken, TOKEN);
  m.t += P;
  assert.equal(await reporter.heartbeat("line 1", START + 10_000), "unchanged");
  assert.equal(gms.callsOf("write").length, 1, "unchanged: no write");
  m.t += P;
  assert.equal(await reporter.heartbeat("line 2", START + 15_000), "written");
  assert.equal(gms.callsOf("write").length, 2);
  assert.deepEqual(gms.callsOf("write").map((c) => c.options?.ifVersionMatch), ["1", "2"]);
  assert.equal(gms.result(urn)!.version, "3");
});

Deno.test("heartbeat: a change waits for the progress interval after the last write (the claim too)", async () => {
  const m = mono();
  const { gms, reporter } = setup({ monotonic: m.now });
  assert.equal(reporter.tickMs, P / 4);
  let asked = 0;
  const report = () => `report ${++asked}`;
  // Just after the claim: too soon, and the report is not even built.
  m.t = 100;
  assert.equal(await reporter.heartbeat(report), "waiting");
  assert.equal(asked, 0);
  m.t = P - 1;
  assert.equal(reporter.waitMs, 1);
  assert.equal(await reporter.heartbeat(report), "waiting");
  m.t = P;
  assert.equal(reporter.waitMs, 0);
  assert.equal(await reporter.heartbeat(report), "written");
  assert.equal(reporter.waitMs, P);
  assert.equal(asked, 1);
  const at = m.t;
  m.t = at + P / 2;
  assert.equal(await reporter.heartbeat(report), "waiting");
  m.t = at + P;
  assert.equal(await reporter.heartbeat(report), "written");
  assert.equal(asked, 2);
  assert.deepEqual(gms.callsOf("write").map((c) => c.value?.report), ["report 1", "report 2"]);
});

Deno.test("heartbeat: called often with new output each time, writes every progress interval", async () => {
  const m = mono();
  const { gms, reporter } = setup({ monotonic: m.now });
  const writtenAt: number[] = [];
  // 20 s of a run printing every 100 ms, asked every 100 ms.
  for (m.t = 100; m.t <= 20_000; m.t += 100) {
    const outcome = await reporter.heartbeat(`output up to ${m.t} ms`);
    if (outcome === "written") writtenAt.push(m.t);
    else assert.equal(outcome, "waiting");
  }
  assert.deepEqual(writtenAt, Array.from({ length: 10 }, (_, i) => (i + 1) * P));
  assert.equal(gms.callsOf("write").length, 10);
});

Deno.test("heartbeat: the lease is renewed at ttl/2 with an unchanged report", async () => {
  const m = mono();
  const { gms, reporter } = setup({ monotonic: m.now });
  m.t = P;
  assert.equal(await reporter.heartbeat("same"), "written");
  m.t = P + TTL / 2 - 1;
  assert.equal(await reporter.heartbeat("same"), "unchanged", "just before ttl/2");
  assert.equal(gms.callsOf("write").length, 1);
  m.t = P + TTL / 2;
  assert.equal(await reporter.heartbeat("same"), "written", "at ttl/2: renewal");
  assert.equal(gms.callsOf("write").length, 2);
  m.t = P + TTL - 1;
  assert.equal(await reporter.heartbeat("same"), "unchanged", "renewal restarts the half-lease");
  assert.equal(reporter.sinceLastWriteMs, TTL / 2 - 1);
});

Deno.test("heartbeat: a lease shorter than the progress interval is renewed (and retried) at its pace", async () => {
  const m = mono();
  const ttl = 1_000;
  const { gms, reporter } = setup({ monotonic: m.now, leaseTtlMs: ttl });
  assert.equal(reporter.tickMs, ttl / 4, "ticks follow the shorter lease");
  m.t = ttl / 2 - 1;
  assert.equal(await reporter.heartbeat("changed"), "waiting", "not due: the progress interval");
  m.t = ttl / 2;
  assert.equal(await reporter.heartbeat("changed"), "written", "renewal due at ttl/2");
  m.t = ttl;
  assert.equal(await reporter.heartbeat("changed"), "written", "and again");
  // Failing renewals are retried every quarter of the lease until it is lost.
  gms.failNext("write", "before", { times: Infinity });
  const outcomes: string[] = [];
  for (m.t = ttl + ttl / 2; m.t <= 3 * ttl; m.t += ttl / 8) {
    outcomes.push(await reporter.heartbeat("changed"));
    if (outcomes.at(-1) === "lease-lost") break;
  }
  assert.deepEqual(outcomes, [
    "failed", // 1.5 s
    "waiting",
    "failed", // 1.75 s
    "waiting",
    "failed", // 2 s
    "waiting",
    "failed", // 2.25 s
    "waiting",
    "failed", // 2.5 s: 1.5 × ttl since the last accepted write, not more
    "waiting",
    "lease-lost", // 2.75 s
  ]);
});

Deno.test("heartbeat: lost answer + failed re-read → next one adopts, not fenced", async () => {
  const m = mono();
  const { gms, urn, reporter } = setup({ monotonic: m.now });
  gms.failNext("write", "after"); // applied (v2), ECONNRESET
  gms.failNext("read", "before"); // and the re-read answers 500
  m.t = P;
  assert.equal(await reporter.heartbeat("line 1"), "failed");
  assert.equal(gms.result(urn)!.version, "2", "the lost heartbeat did land");
  assert.equal(reporter.fenced, false);
  m.t += P;
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
  m.t = P;
  assert.equal(await reporter.heartbeat("line 1"), "written");
  assert.equal(reporter.version, "2");
  m.t += P;
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
  m.t = P;
  assert.equal(await reporter.heartbeat("next"), "written");
  assert.equal(reporter.fenced, false);
  assert.equal(reporter.version, "3");
  const writes = gms.callsOf("write");
  assert.deepEqual(writes.map((c) => [c.options?.ifVersionMatch, c.outcome]), [
    ["1", "refused"],
    ["2", "ok"],
  ]);
  m.t += P;
  assert.equal(await reporter.heartbeat("again"), "written");
  assert.equal(gms.callsOf("write").at(-1)!.options?.ifVersionMatch, "3");
});

Deno.test("heartbeat: changed by someone else → fenced, nothing more written", async () => {
  const m = mono();
  const { gms, urn, reporter, lines } = setup({ monotonic: m.now });
  m.t = P;
  assert.equal(await reporter.heartbeat("line 1"), "written");
  gms.setResult(urn, { status: "FAILURE", report: "closed by hand" }, {});
  m.t += P;
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
  m.t = P;
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
  assert.deepEqual(outcomes, ["failed", "failed", "failed", "failed", "waiting"]);
  assert.equal(reporter.leaseLost, false, "exactly 1.5 × ttl is not yet more");
  m.t = 90_001;
  assert.equal(reporter.leaseLost, true);
  m.t = 90_000 + P;
  assert.equal(await reporter.heartbeat("late"), "lease-lost");
  assert.equal(reporter.sinceLastWriteMs, 90_000 + P);
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
  m.t = P;
  assert.equal(await reporter.heartbeat("x"), "failed");
  assert.equal(reporter.fenced, false);
  m.t += P / 2;
  assert.equal(await reporter.heartbeat("x"), "waiting", "retried at the progress interval");
  m.t += P / 2;
  assert.equal(await reporter.heartbeat("x"), "written");
});

Deno.test("heartbeat: a backwards wall-clock step does not stop renewals", async () => {
  const clock = installClock();
  try {
    // Default monotonic clock: performance.now(), faked; Date steps back below.
    const { gms, urn, reporter } = setup();
    await clock.tickAsync(P);
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

/** Runs `progressLoop` on fake time for `ms`, with a report from `report(now)`. */
async function loopFor(ms: number, report: (now: number) => string, leaseTtlMs = TTL) {
  const clock = installClock();
  try {
    const { gms, reporter } = setup({ leaseTtlMs }); // monotonic: performance.now(), faked
    const t0 = performance.now();
    const events: string[] = [];
    const loop = progressLoop({
      reporter,
      report: () => report(performance.now() - t0),
      onFenced: () => events.push("fenced"),
      onLeaseLost: () => events.push("lease-lost"),
    });
    await clock.tickAsync(ms);
    await loop.stop();
    const written = gms.callsOf("write").length;
    await clock.tickAsync(10 * TTL);
    assert.equal(gms.callsOf("write").length, written, "nothing after stop()");
    const at = gms.callsOf("write").map((c) => c.at - EPOCH);
    return { at, reports: gms.callsOf("write").map((c) => c.value!.report!), events };
  } finally {
    clock.uninstall();
  }
}

Deno.test("progressLoop: a run printing every 100 ms gets a write every 2 s, no more", async () => {
  const { at, reports, events } = await loopFor(
    20_100,
    (t) => `output up to ${Math.floor(t / 100)}`,
  );
  assert.deepEqual(events, []);
  assert.equal(at.length, 10, `writes at ${at}`);
  // Never sooner than the progress interval, and never later than it by more than 1 ms per write.
  at.forEach((t, i) => {
    const gap = t - (i === 0 ? 0 : at[i - 1]!);
    assert.ok(gap >= P && gap <= P + 1, `gap ${gap} before write ${i + 1}`);
  });
  // Each write carries the output as it was when it was sent.
  reports.forEach((r, i) => assert.equal(r, `output up to ${Math.floor(at[i]! / 100)}`));
});

Deno.test("progressLoop: a silent run writes its report once, then only lease renewals", async () => {
  const { at } = await loopFor(100_000, () => "owner\nthe only line");
  assert.equal(at.length, 4, `writes at ${at}`);
  assert.ok(at[0]! >= P && at[0]! <= P + 1, `first write at ${at[0]}`);
  for (let i = 1; i < at.length; i++) {
    const gap = at[i]! - at[i - 1]!;
    // Renewed at ttl/2, noticed within a tick (tickMs = P/4).
    assert.ok(gap >= TTL / 2 && gap <= TTL / 2 + P / 4 + 1, `renewal after ${gap} ms`);
  }
});

Deno.test("progressLoop: with a 1 s lease, renewals every ttl/2 carry the latest output", async () => {
  const { at, reports } = await loopFor(5_000, (t) => `output up to ${Math.floor(t / 100)}`, 1_000);
  // ttl/2 = 500 ms since the last accepted write, noticed within a tick of 250 ms.
  assert.ok(at.length >= 7 && at.length <= 10, `writes at ${at}`);
  for (let i = 1; i < at.length; i++) {
    const gap = at[i]! - at[i - 1]!;
    assert.ok(gap >= 500 && gap <= 751, `gap ${gap}`);
  }
  assert.equal(reports.at(-1), `output up to ${Math.floor(at.at(-1)! / 100)}`);
});

/** A write as the agent sends it to GMS, measured by the simulator (request body part). */
async function progressWireBytes(o: { host: string; lines: number; stale: boolean }) {
  await using sim = await GmsSimulator.start();
  const gms = new GmsClient({
    server: sim.url,
    token: sim.token,
    systemClientId: "",
    systemClientSecret: "",
    timeoutMs: 5_000,
  }, silentLogger);
  try {
    const urn = sim.createRequest();
    // A realistic identity: the instance id is `<host>-<pid>-<8 hex>` (identity.ts).
    const me: Identity = {
      instanceId: `${o.host}-4194304-0123abcd`,
      host: o.host,
      executorId: "default",
    };
    const token = crypto.randomUUID();
    const value = { status: "RUNNING" as const, startTimeMs: Date.now(), report: "claimed" };
    const claim = await writeOwned(gms, {
      urn,
      value,
      version: "-1",
      token,
      identity: me,
      leaseTtlMs: TTL,
    });
    assert.equal(claim.kind, "written");
    const m = mono();
    const reporter = new Reporter({
      gms,
      urn,
      identity: me,
      token,
      startTimeMs: value.startTimeMs,
      version: claim.kind === "written" ? claim.version : undefined,
      leaseTtlMs: TTL,
      log: silentLogger,
      monotonic: m.now,
    });
    const log = new RunLog();
    const line = (i: number) =>
      `[2030-01-01 00:00:00,000] INFO {datahub.ingestion.run.pipeline:${i}} - Processing work unit ${i} ` +
      "x".repeat(20) + ' "quoted" \\ tab\t ü';
    for (let i = 1; i <= o.lines; i++) log.add(line(i));
    const report = progressReport({
      owner: ownerLine(me),
      runLog: log,
      lastLineAt: o.stale ? Date.now() - 600_000 : Date.now(),
      staleAfterMs: 120_000,
    });
    m.t = P;
    assert.equal(await reporter.heartbeat(report), "written");
    const w = sim.resultWrites(urn).at(-1)!;
    assert.equal(w.value.report, report);
    return { bytes: w.bytes, report };
  } finally {
    await gms.close();
  }
}

Deno.test("progress write: at most 1.5 KB on the wire, its report 1 KiB, whatever the run printed (simulator)", async () => {
  const bound = 1_500;
  for (const host of ["ingest-1", "ingest-agent-7d9f8b6c5d-x2k4q.datahub.svc.cluster.local"]) {
    for (const lines of [1, 30, 5_000]) {
      for (const stale of [false, true]) {
        const { bytes, report } = await progressWireBytes({ host, lines, stale });
        const what = `${lines} lines (host ${host}, stale ${stale})`;
        assert.ok(bytes <= bound, `${bytes} B for ${what}`);
        const reportBytes = Buffer.byteLength(JSON.stringify(report));
        assert.ok(reportBytes <= PROGRESS_REPORT_BYTES, `report ${reportBytes} B for ${what}`);
        assert.match(
          report,
          new RegExp(`Processing work unit ${lines} `),
          "the last line is shown",
        );
        if (lines === 5_000) {
          assert.match(report, /Processing work unit 1 /, "the first line is shown");
          assert.match(report, /\n… \d+ lines \(\d+ bytes\) omitted …\n/);
        }
        if (stale) assert.match(report, /\nWARNING: These logs appear to be stale\./);
      }
    }
  }
});
