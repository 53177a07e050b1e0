import assert from "node:assert/strict";
import { FakeGms, gmsError } from "../../test/fake_gms.ts";
import { GmsError } from "../errors.ts";
import { type Identity, leaseProperties } from "../identity.ts";
import type { ResultValue } from "../request.ts";
import { isFencingError, type OwnedWrite, writeOwned } from "./result_write.ts";

const ME: Identity = { instanceId: "agent-me", host: "host-a", executorId: "default" };
const OTHER: Identity = { instanceId: "agent-other", host: "host-b", executorId: "default" };
const TTL = 60_000;
const TOKEN = "token-mine";

const running = (report = "progress"): ResultValue => ({
  status: "RUNNING",
  startTimeMs: 1,
  durationMs: 5,
  report,
});
const success: ResultValue = { status: "SUCCESS", startTimeMs: 1, durationMs: 9, report: "done" };

/** Properties of a result written under a claim (ours by default). */
function props(id = ME, token = TOKEN, writeId = "w-earlier"): Record<string, string> {
  return leaseProperties(id, { token, ttlMs: TTL, writeId });
}

/** A request whose result is RUNNING, ours, at version "1". */
function claimed(gms: FakeGms): string {
  const urn = gms.addRequest();
  gms.setResult(urn, running("claimed"), props());
  return urn;
}

function write(urn: string, over: Partial<OwnedWrite> = {}): OwnedWrite {
  return {
    urn,
    value: running(),
    version: "1",
    token: TOKEN,
    identity: ME,
    leaseTtlMs: TTL,
    writeId: "w-this",
    ...over,
  };
}

Deno.test("writeOwned: lands → written, stored version, token and writeId", async () => {
  const gms = new FakeGms();
  const urn = claimed(gms);
  const outcome = await writeOwned(gms, write(urn));
  assert.deepEqual(outcome, { kind: "written", version: "2" });
  assert.equal(gms.callsOf("write").length, 1);
  assert.equal(gms.callsOf("read").length, 0, "no read when the answer carries the version");
  const stored = gms.result(urn)!;
  assert.equal(stored.version, "2");
  assert.equal(stored.value.report, "progress");
  assert.equal(stored.properties.claimToken, TOKEN);
  assert.equal(stored.properties.writeId, "w-this");
  assert.equal(stored.properties.agentInstance, ME.instanceId);
  assert.equal(stored.properties.leaseTtlMs, String(TTL));
  assert.equal(gms.callsOf("write")[0]!.options?.ifVersionMatch, "1");
});

Deno.test("writeOwned: applied then reset → our writeId re-read → written once", async () => {
  const gms = new FakeGms();
  const urn = claimed(gms);
  gms.failNext("write", "after"); // ECONNRESET after the commit
  const outcome = await writeOwned(gms, write(urn));
  assert.equal(outcome.kind, "written");
  assert.equal(outcome.kind === "written" && outcome.version, "2");
  assert.equal(outcome.kind === "written" && outcome.state?.result?.version, "2");
  assert.equal(gms.callsOf("write").length, 1, "no second write");
  assert.equal(gms.callsOf("read").length, 1);
  assert.equal(gms.history(urn).length, 2, "claim + one write");
});

Deno.test("writeOwned: applied then 500 → written", async () => {
  const gms = new FakeGms();
  const urn = claimed(gms);
  gms.failNext("write", "after", { error: gmsError.unavailable("writeResult", 502) });
  const outcome = await writeOwned(gms, write(urn, { value: success }));
  assert.equal(outcome.kind, "written");
  assert.equal(gms.callsOf("write").length, 1);
  assert.equal(gms.result(urn)!.value.status, "SUCCESS");
});

Deno.test("writeOwned: 412 from our own lost write → writes on the stored version", async () => {
  const gms = new FakeGms();
  const urn = claimed(gms);
  // An earlier heartbeat of ours landed, but its answer was lost: v2 is ours, we still hold "1".
  gms.setResult(urn, running("earlier"), props(ME, TOKEN, "w-lost"));
  const outcome = await writeOwned(gms, write(urn, { version: "1" }));
  assert.deepEqual(outcome, { kind: "written", version: "3" });
  const writes = gms.callsOf("write");
  assert.deepEqual(writes.map((c) => c.options?.ifVersionMatch), ["1", "2"]);
  assert.deepEqual(writes.map((c) => c.outcome), ["refused", "ok"]);
  assert.equal(gms.result(urn)!.properties.writeId, "w-this");
});

Deno.test("writeOwned: 412 by another token → taken, nothing overwritten", async () => {
  const gms = new FakeGms();
  const urn = claimed(gms);
  gms.setResult(urn, running("theirs"), props(OTHER, "token-theirs", "w-theirs"));
  const outcome = await writeOwned(gms, write(urn));
  assert.equal(outcome.kind, "taken");
  assert.equal(outcome.kind === "taken" && outcome.current?.version, "2");
  assert.match(outcome.kind === "taken" ? outcome.reason : "", /agent-other/);
  assert.equal(gms.callsOf("write").length, 1);
  assert.equal(gms.result(urn)!.value.report, "theirs");
  assert.equal(gms.result(urn)!.version, "2");
});

Deno.test("writeOwned: a result by someone who is not ingest-agent → taken", async () => {
  const gms = new FakeGms();
  const urn = claimed(gms);
  gms.setResult(urn, { status: "CANCELLED" }, { appSource: "reportingExecutor" });
  const outcome = await writeOwned(gms, write(urn, { version: undefined }));
  assert.equal(outcome.kind, "taken");
  assert.equal(gms.callsOf("write").length, 0, "read first (version unknown): nothing written");
});

Deno.test("writeOwned: ours and already terminal (immutable 400) → closed", async () => {
  const gms = new FakeGms();
  const urn = claimed(gms);
  gms.setResult(urn, success, props(ME, TOKEN, "w-terminal"));
  const outcome = await writeOwned(gms, write(urn, { version: "2", value: running() }));
  assert.equal(outcome.kind, "closed");
  assert.equal(outcome.kind === "closed" && outcome.current.value.status, "SUCCESS");
  assert.equal(gms.callsOf("write")[0]!.outcome, "refused");
  assert.match(String(gms.callsOf("write")[0]!.error?.message), /immutable state/);
  assert.equal(gms.result(urn)!.version, "2");
});

Deno.test("writeOwned: a lost claim (-1) that did not land → creates again", async () => {
  const gms = new FakeGms();
  const urn = gms.addRequest();
  gms.failNext("write", "before", { error: gmsError.unreachable() });
  const outcome = await writeOwned(gms, write(urn, { version: "-1" }));
  assert.deepEqual(outcome, { kind: "written", version: "1" });
  assert.deepEqual(gms.callsOf("write").map((c) => c.options?.ifVersionMatch), ["-1", "-1"]);
  assert.equal(gms.history(urn).length, 1);
});

Deno.test("writeOwned: a lost claim that did land → written, once", async () => {
  const gms = new FakeGms();
  const urn = gms.addRequest();
  gms.failNext("write", "after");
  const outcome = await writeOwned(gms, write(urn, { version: "-1" }));
  assert.equal(outcome.kind, "written");
  assert.equal(gms.callsOf("write").length, 1);
});

Deno.test("writeOwned: a claim that lost the race → taken (someone else's RUNNING)", async () => {
  const gms = new FakeGms();
  const urn = gms.addRequest();
  gms.setResult(urn, running("theirs"), props(OTHER, "token-theirs"));
  const outcome = await writeOwned(gms, write(urn, { version: "-1" }));
  assert.equal(outcome.kind, "taken");
  assert.equal(gms.callsOf("write").length, 1);
});

Deno.test("writeOwned: the re-read fails with 500 → retry with version undefined", async () => {
  const gms = new FakeGms();
  const urn = claimed(gms);
  gms.failNext("write", "before");
  gms.failNext("read", "before");
  const outcome = await writeOwned(gms, write(urn));
  assert.equal(outcome.kind, "retry");
  assert.equal(outcome.kind === "retry" && outcome.version, undefined);
  assert.equal(outcome.kind === "retry" && outcome.error.code, "GMS_UNAVAILABLE");
  assert.equal(gms.callsOf("write").length, 1);
});

Deno.test("writeOwned: version unknown and the read fails → retry, nothing written", async () => {
  const gms = new FakeGms();
  const urn = claimed(gms);
  gms.failNext("read", "before", { error: gmsError.unreachable("read") });
  const outcome = await writeOwned(gms, write(urn, { version: undefined }));
  assert.equal(outcome.kind, "retry");
  assert.equal(outcome.kind === "retry" && outcome.version, undefined);
  assert.equal(gms.callsOf("write").length, 0);
});

Deno.test("writeOwned: 500s before applying → retry on the re-read version", async () => {
  const gms = new FakeGms();
  const urn = claimed(gms);
  gms.failNext("write", "before", { times: 5 });
  const outcome = await writeOwned(gms, write(urn));
  assert.equal(outcome.kind, "retry");
  assert.equal(outcome.kind === "retry" && outcome.version, "1");
  assert.equal(gms.callsOf("write").length, 2, "default attempts: 2");
  assert.equal(gms.result(urn)!.version, "1");
  const once = await writeOwned(gms, write(urn, { attempts: 1 }));
  assert.equal(once.kind, "retry");
  assert.equal(gms.callsOf("write").length, 3, "attempts: 1 → one more write");
});

Deno.test("writeOwned: an answer without version → re-read → written", async () => {
  const gms = new FakeGms({ answerWithoutVersion: true });
  const urn = claimed(gms);
  const outcome = await writeOwned(gms, write(urn));
  assert.equal(outcome.kind, "written");
  assert.equal(outcome.kind === "written" && outcome.version, "2");
  assert.equal(gms.callsOf("write").length, 1);
  assert.equal(gms.callsOf("read").length, 1);
});

Deno.test("writeOwned: a 400 not about immutability → throws, no re-read", async () => {
  const gms = new FakeGms();
  const urn = claimed(gms);
  gms.failNext("write", "before", { error: gmsError.rejected("writeResult", "bad field") });
  await assert.rejects(
    () => writeOwned(gms, write(urn)),
    (err) => err instanceof GmsError && err.status === 400 && /bad field/.test(err.message),
  );
  assert.equal(gms.callsOf("write").length, 1);
  assert.equal(gms.callsOf("read").length, 0);
});

Deno.test("writeOwned: 413 → throws for the caller to cut, no re-read", async () => {
  const gms = new FakeGms();
  const urn = claimed(gms);
  gms.failNext("write", "before", { error: gmsError.tooLarge() });
  await assert.rejects(
    () => writeOwned(gms, write(urn, { value: success })),
    (err) => err instanceof GmsError && err.code === "GMS_TOO_LARGE",
  );
  assert.equal(gms.callsOf("read").length, 0);
});

Deno.test("writeOwned: the request was deleted → taken", async () => {
  const gms = new FakeGms();
  const urn = claimed(gms);
  gms.remove(urn);
  const outcome = await writeOwned(gms, write(urn, { version: undefined }));
  assert.equal(outcome.kind, "taken");
  assert.equal(outcome.kind === "taken" && outcome.current, undefined);
});

Deno.test("writeOwned: a tokenless legacy result is ours by listed instance", async () => {
  const gms = new FakeGms();
  const urn = gms.addRequest();
  const legacy = props(ME, TOKEN);
  delete legacy.claimToken;
  delete legacy.writeId;
  gms.setResult(urn, running("legacy"), legacy);
  gms.setResult(urn, running("legacy 2"), legacy);
  const mine = await writeOwned(gms, write(urn, { instances: [ME.instanceId] }));
  assert.deepEqual(mine, { kind: "written", version: "3" });
  const notListed = await writeOwned(
    gms,
    write(urn, { version: "2", token: "t2", writeId: "w-next" }),
  );
  assert.equal(notListed.kind, "taken", "our stamped token is not t2");
});

Deno.test("isFencingError: 412, and 400 about immutable state only", () => {
  assert.ok(isFencingError(new GmsError("GMS_PRECONDITION", "w", "HTTP 412", { status: 412 })));
  assert.ok(
    isFencingError(
      new GmsError("GMS_REJECTED", "w", "Invalid update to immutable state", { status: 400 }),
    ),
  );
  assert.ok(!isFencingError(gmsError.rejected()));
  assert.ok(!isFencingError(gmsError.unavailable()));
  assert.ok(!isFencingError(new Error("412")));
});
