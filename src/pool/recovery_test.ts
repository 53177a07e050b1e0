import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import process from "node:process";
import { FakeGms } from "../../test/fake_gms.ts";
import { type Identity, leaseProperties } from "../identity.ts";
import { createLogger } from "../observe/log.ts";
import { Outbox } from "../state/outbox.ts";
import { processStartTime } from "../state/procs.ts";
import { recoveredStatus, recoverRuns } from "./recovery.ts";
import { MASK, Redactor } from "../run/redact.ts";
import type { ResultValue } from "../request.ts";
import { type OutboxRecord, type RunRecord, StateDir } from "../state/state_dir.ts";

const OLD: Identity = { instanceId: "agent-old", host: "host-a", executorId: "default" };
const ME: Identity = { instanceId: "agent-new", host: "host-a", executorId: "default" };
const TTL = 60_000;

interface Env {
  gms: FakeGms;
  state: StateDir;
  outbox: Outbox;
  redactor: Redactor;
  lines: string[];
  submitted: OutboxRecord[];
  work: string;
  /** A request claimed by the old instance (RUNNING v1) and its journal entry. */
  run(id: string, over?: Partial<RunRecord>): Promise<RunRecord>;
  recover(resumed?: string[]): Promise<number>;
  [Symbol.asyncDispose](): Promise<void>;
}

async function setup(): Promise<Env> {
  const root = await mkdtemp(path.join(os.tmpdir(), "recovery-test-"));
  const state = new StateDir(path.join(root, "state"));
  await state.open();
  const work = path.join(root, "work");
  const gms = new FakeGms();
  const lines: string[] = [];
  const log = createLogger({ level: "debug", format: "json", write: (l) => lines.push(l) });
  const outbox = new Outbox({
    state,
    gms,
    identity: ME,
    retryForMs: 3_600_000,
    leaseTtlMs: TTL,
    log,
  });
  const submitted: OutboxRecord[] = [];
  const submit = outbox.submit.bind(outbox);
  outbox.submit = (rec) => {
    submitted.push(rec);
    return submit(rec);
  };
  const redactor = new Redactor();
  return {
    gms,
    state,
    outbox,
    redactor,
    lines,
    submitted,
    work,
    async run(id, over = {}) {
      const urn = gms.addRequest({ id });
      const token = `token-${id}`;
      const version = gms.setResult(
        urn,
        { status: "RUNNING", startTimeMs: 1_000, report: "running" },
        leaseProperties(OLD, { token, ttlMs: TTL }),
      );
      const runDir = path.join(work, `run-${id}`);
      await mkdir(runDir, { recursive: true });
      const rec: RunRecord = {
        urn,
        id,
        instance: OLD.instanceId,
        task: "RUN_INGEST",
        runDir,
        startTimeMs: 1_000,
        token,
        version,
        ...over,
      };
      await state.saveRun(rec);
      return rec;
    },
    recover: (resumed?: string[]) =>
      recoverRuns({ state, outbox, identity: ME, log, redactor, resumed }),
    async [Symbol.asyncDispose]() {
      outbox.stop();
      state.close();
      await rm(root, { recursive: true, force: true });
    },
  };
}

Deno.test("recoverRuns: journal entry + queued result → that one delivery", async () => {
  await using env = await setup();
  const rec = await env.run("r1");
  const queued: ResultValue = { status: "FAILURE", startTimeMs: 1_000, report: "from the outbox" };
  await env.state.saveResult({
    urn: rec.urn,
    id: rec.id,
    instance: OLD.instanceId,
    token: rec.token!,
    value: queued,
    writeId: "w-queued",
    createdAt: Date.now(),
  });
  // As cli.ts does: resume the outbox, then recover. The delivery is in flight meanwhile.
  const release = env.gms.hold("write");
  const resumed = await env.outbox.resume();
  assert.deepEqual(resumed, [rec.id]);
  assert.equal(await env.recover(resumed), 1);
  release();
  assert.equal(await env.outbox.idle(5_000), true);
  assert.equal(env.submitted.length, 0, "recovery submitted nothing of its own");
  const stored = env.gms.result(rec.urn)!;
  assert.equal(stored.value.report, "from the outbox");
  assert.deepEqual(env.gms.history(rec.urn).map((r) => r.value.status), ["RUNNING", "FAILURE"]);
  assert.equal(env.gms.callsOf("write").length, 1);
  assert.deepEqual(await env.state.listRuns(), [], "journal entry removed");
  assert.deepEqual(await env.state.listResults(), []);
  assert.ok(env.lines.some((l) => /already queued/.test(l)));
});

Deno.test("recoverRuns: queued result delivered first → it stays", async () => {
  await using env = await setup();
  const rec = await env.run("r1");
  await env.state.saveResult({
    urn: rec.urn,
    id: rec.id,
    instance: OLD.instanceId,
    token: rec.token!,
    value: { status: "FAILURE", report: "from the outbox" },
    createdAt: Date.now(),
  });
  const resumed = await env.outbox.resume();
  assert.equal(await env.outbox.idle(5_000), true);
  // Delivered and gone from disk before recovery looked: resume's ids still tell it.
  assert.deepEqual(await env.state.listResults(), []);
  await env.recover(resumed);
  assert.equal(await env.outbox.idle(5_000), true);
  assert.equal(env.submitted.length, 0, "recovery submitted nothing of its own");
  assert.equal(env.gms.result(rec.urn)!.value.report, "from the outbox", "never overwritten");
  assert.equal(env.gms.history(rec.urn).length, 2);
});

Deno.test("recoverRuns: cancel reasons → CANCELLED / TIMEOUT / ABORTED / ABORTED", async () => {
  await using env = await setup();
  const cases = [
    ["user", "CANCELLED", /cancelled by request/],
    ["timeout", "TIMEOUT", /exceeded its timeout/],
    ["shutdown", "ABORTED", /agent was shutting down/],
    ["lease", "ABORTED", /lease on GMS was lost/],
  ] as const;
  const recs: RunRecord[] = [];
  for (const [cancel] of cases) recs.push(await env.run(`c-${cancel}`, { cancel }));
  assert.equal(await env.recover(), 4);
  assert.equal(await env.outbox.idle(5_000), true);
  cases.forEach(([cancel, status, why], i) => {
    const stored = env.gms.result(recs[i]!.urn)!;
    assert.equal(stored.value.status, status, cancel);
    assert.match(stored.value.report!, why, cancel);
    assert.match(stored.value.report!, /agent-new/, "the report names the closing agent");
    assert.equal(stored.properties.claimToken, recs[i]!.token, "written under the run's claim");
  });
  assert.equal(env.submitted.length, 4);
  assert.deepEqual(await env.state.listRuns(), []);
});

Deno.test("recoverRuns: exit 0 → SUCCESS; exit 1 → FAILURE; no exit → ABORTED", async () => {
  await using env = await setup();
  const ok = await env.run("ok", { exit: { code: 0, signal: null } });
  const bad = await env.run("bad", { exit: { code: 1, signal: null } });
  const lost = await env.run("lost");
  await env.recover();
  assert.equal(await env.outbox.idle(5_000), true);
  assert.equal(env.gms.result(ok.urn)!.value.status, "SUCCESS");
  assert.equal(env.gms.result(bad.urn)!.value.status, "FAILURE");
  assert.equal(env.gms.result(lost.urn)!.value.status, "ABORTED");
  assert.match(env.gms.result(lost.urn)!.value.report!, /agent restarted; run interrupted/);
});

Deno.test("recoveredStatus: exit with a cancel keeps the cancel; signal exits are FAILURE", () => {
  const base: RunRecord = {
    urn: "u",
    id: "i",
    instance: "x",
    task: "RUN_INGEST",
    runDir: "/nowhere",
    startTimeMs: 0,
  };
  const exit0 = { code: 0, signal: null };
  assert.equal(recoveredStatus({ ...base, exit: exit0, cancel: "user" }).status, "CANCELLED");
  assert.equal(recoveredStatus({ ...base, exit: exit0, cancel: "timeout" }).status, "TIMEOUT");
  assert.equal(recoveredStatus({ ...base, exit: exit0 }).status, "SUCCESS");
  assert.equal(
    recoveredStatus({ ...base, exit: { code: null, signal: "SIGKILL" } }).status,
    "FAILURE",
  );
  assert.match(recoveredStatus({ ...base, exit: exit0 }).message, /exit code 0/);
  const memory = recoveredStatus({ ...base, cancel: "memory", peakRssBytes: 300 * 1024 ** 2 });
  assert.equal(memory.status, "FAILURE");
  assert.match(memory.message, /exceeded agent\.run_memory_limit \(peak 300\.0 MiB\)/);
});

Deno.test("recoverRuns: a fenced run → nothing submitted, journal entry removed", async () => {
  await using env = await setup();
  const rec = await env.run("f", { cancel: "fenced" });
  await env.recover();
  assert.equal(env.submitted.length, 0);
  assert.equal(env.gms.callsOf("write").length, 0);
  assert.equal(env.gms.result(rec.urn)!.value.status, "RUNNING");
  assert.deepEqual(await env.state.listRuns(), []);
});

Deno.test("recoverRuns: the recovered report and structured report are masked", async () => {
  await using env = await setup();
  const secret = "hunter2-very-secret";
  env.redactor.add("DB_PASSWORD", secret);
  const rec = await env.run("m", { exit: { code: 0, signal: null } });
  await writeFile(path.join(rec.runDir, "run.log"), `connecting with password=${secret}\n`);
  await writeFile(
    path.join(rec.runDir, "report.json"),
    JSON.stringify({ source: { config: { password: secret } } }),
  );
  await writeFile(path.join(rec.runDir, "recipe.json"), "{}");
  await env.recover();
  assert.equal(await env.outbox.idle(5_000), true);
  const stored = env.gms.result(rec.urn)!.value;
  assert.equal(stored.status, "SUCCESS");
  assert.ok(!stored.report!.includes(secret), "report masked");
  assert.ok(stored.report!.includes(`password=${MASK}`), "the log line is kept, masked");
  assert.ok(stored.structuredReport, "the report file became the structured report");
  assert.ok(!stored.structuredReport!.serializedValue.includes(secret), "structured masked");
  assert.equal(JSON.parse(stored.structuredReport!.serializedValue).source.config.password, MASK);
  const queued = env.submitted[0]!.value;
  assert.ok(!JSON.stringify(queued).includes(secret), "the outbox file never held it either");
  await assert.rejects(() => stat(path.join(rec.runDir, "recipe.json")), "recipe removed");
  await assert.rejects(() => stat(path.join(rec.runDir, "report.json")), "report file removed");
  assert.match(await readFile(path.join(rec.runDir, "run.log"), "utf8"), /password/, "log kept");
});

/** Running: the process exists and is not a zombie. */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

function sleeper() {
  const child = spawn("sleep", ["30"], { detached: true, stdio: "ignore" });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return {
    pid: child.pid!,
    async stop() {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch { /* gone */ }
      await exited;
    },
  };
}

Deno.test("recoverRuns: a pgid with another start time is left alive", async () => {
  await using env = await setup();
  const stranger = sleeper();
  const ours = sleeper();
  try {
    const started = processStartTime(stranger.pid);
    assert.ok(started && running(stranger.pid), "the child runs");
    const rec = await env.run("p", { pgid: stranger.pid, pgidStart: `${started}1` });
    const mine = await env.run("q", { pgid: ours.pid, pgidStart: processStartTime(ours.pid) });
    await env.recover();
    assert.ok(running(stranger.pid), "mismatching start time: not signalled");
    assert.ok(!running(ours.pid), "control: the matching group was killed");
    assert.ok(env.lines.some((l) => /left a process group alone/.test(l) && /start time/.test(l)));
    assert.equal(await env.outbox.idle(5_000), true);
    assert.equal(env.gms.result(rec.urn)!.value.status, "ABORTED", "the request is closed");
    assert.equal(env.gms.result(mine.urn)!.value.status, "ABORTED");
  } finally {
    await stranger.stop();
    await ours.stop();
  }
});
