// The seam's own contract: FakeGms answers like GMS (test/sim/aspects.ts) for result writes.
import assert from "node:assert/strict";
import { GmsError } from "../src/errors.ts";
import { FakeGms, gmsError } from "./fake_gms.ts";

const running = { status: "RUNNING", report: "r" };

Deno.test("FakeGms: conditional writes, versions, properties, lastObserved", async () => {
  const gms = new FakeGms({ skewMs: 5_000 });
  const urn = gms.addRequest({ id: "x" });
  const before = Date.now();
  assert.equal(
    await gms.writeResult(urn, running, { ifVersionMatch: "-1", properties: { a: "1" } }),
    "1",
  );
  const stored = gms.result(urn)!;
  assert.deepEqual(stored.properties, { a: "1" });
  assert.ok(stored.lastObserved! >= before + 5_000, "stamped by GMS's clock");
  assert.ok(Math.abs(gms.serverNow() - Date.now() - 5_000) < 50);
  await assert.rejects(
    () => gms.writeResult(urn, running, { ifVersionMatch: "-1" }),
    (e) =>
      e instanceof GmsError && e.code === "GMS_PRECONDITION" && e.status === 412 &&
      /Expected version -1, actual version 1/.test(e.message),
  );
  assert.equal(await gms.writeResult(urn, running, { ifVersionMatch: "1" }), "1", "no change");
  assert.equal(await gms.writeResult(urn, { ...running, report: "s" }), "2", "unconditional");
  assert.deepEqual(gms.callsOf("write").map((c) => c.outcome), ["ok", "refused", "ok", "ok"]);
  assert.deepEqual(gms.callsOf("write").map((c) => c.applied), [true, undefined, false, true]);
});

Deno.test("FakeGms: SUCCESS is immutable (400), the same status is a no-op", async () => {
  const gms = new FakeGms();
  const urn = gms.addRequest();
  gms.setResult(urn, { status: "SUCCESS" });
  await assert.rejects(
    () => gms.writeResult(urn, running, { ifVersionMatch: "1" }),
    (e) => e instanceof GmsError && e.status === 400 && /immutable state/.test(e.message),
  );
  assert.equal(await gms.writeResult(urn, { status: "SUCCESS", report: "again" }), "1");
  assert.equal(gms.result(urn)!.value.report, undefined);
  assert.equal(await gms.writeResult(urn, { status: "ROLLING_BACK" }), "2");
});

Deno.test("FakeGms: faults before (nothing applied) and after (applied, answer lost)", async () => {
  const gms = new FakeGms();
  const urn = gms.addRequest();
  gms.failNext("write", "before", { error: gmsError.tooLarge() });
  await assert.rejects(() => gms.writeResult(urn, running), (e) => (e as GmsError).status === 413);
  assert.equal(gms.result(urn), undefined);
  gms.failNext("write", "after", { when: (c) => c.value?.status === "RUNNING" });
  await assert.rejects(
    () => gms.writeResult(urn, running),
    (e) => (e as GmsError).code === "GMS_UNREACHABLE" && /ECONNRESET/.test(String(e)),
  );
  assert.equal(gms.result(urn)!.version, "1", "applied");
  gms.failNext("read", "before", { times: 2 });
  await assert.rejects(() => gms.readRequest(urn), (e) => (e as GmsError).status === 500);
  await assert.rejects(() => gms.readRequest(urn));
  assert.equal((await gms.readRequest(urn))!.result!.version, "1");
  assert.deepEqual(gms.callsOf("read").map((c) => c.outcome), ["failed", "failed", "ok"]);
});

Deno.test("FakeGms: answerWithoutVersion, hold, discovery paging", async () => {
  const gms = new FakeGms({ answerWithoutVersion: true });
  const urns = [0, 1, 2].map((i) => gms.addRequest({ id: `p${i}`, requestedAt: 100 - i }));
  assert.equal(await gms.writeResult(urns[0]!, running), undefined);
  const release = gms.hold("discover");
  let found = false;
  const p = gms.discover("default", { count: 1 }).then((d) => (found = true, d));
  await Promise.resolve();
  await Promise.resolve();
  assert.equal(found, false, "held");
  release();
  const d = await p;
  assert.deepEqual(d.pending.map((c) => c.urn), [urns[2]], "oldest first, one per page");
  assert.deepEqual(d.pages.pending, { start: 0, returned: 1, total: 2 });
  assert.deepEqual(d.running.map((r) => r.urn), [urns[0]]);
  const other = await gms.discover("elsewhere", { count: 10 });
  assert.equal(other.pending.length + other.running.length, 0, "routed by executorId");
});
