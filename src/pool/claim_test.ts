import assert from "node:assert/strict";
import { FakeGms } from "../../test/fake_gms.ts";
import { claimRequest, settleClaim } from "./claim.ts";
import { type Identity, leaseProperties } from "../identity.ts";

const ME: Identity = { instanceId: "agent-me", host: "host-a", executorId: "default" };
const OTHER: Identity = { instanceId: "agent-other", host: "host-b", executorId: "default" };
const TTL = 60_000;
const NOW = 1_700_000_000_000;

Deno.test("claimRequest: pending → claimed, RUNNING created with -1 and token", async () => {
  const gms = new FakeGms();
  const urn = gms.addRequest({ task: "RUN_INGEST" });
  const outcome = await claimRequest(gms, urn, ME, TTL, NOW);
  assert.equal(outcome.kind, "claimed");
  if (outcome.kind !== "claimed") return;
  assert.equal(outcome.version, "1");
  assert.equal(outcome.startTimeMs, NOW);
  assert.equal(outcome.request.input.task, "RUN_INGEST");
  const writes = gms.callsOf("write", urn);
  assert.equal(writes.length, 1);
  assert.equal(writes[0]!.options?.ifVersionMatch, "-1");
  const stored = gms.result(urn)!;
  assert.equal(stored.value.status, "RUNNING");
  assert.equal(stored.value.startTimeMs, NOW);
  assert.equal(stored.properties.claimToken, outcome.token);
  assert.equal(stored.properties.agentInstance, ME.instanceId);
  assert.match(stored.value.report!, /agent-me/);
});

Deno.test("claimRequest: another agent wins between read and write → lost", async () => {
  const gms = new FakeGms();
  const urn = gms.addRequest();
  // The other agent's claim lands after our read: hold our write until it is stored.
  const release = gms.hold("write");
  const claim = claimRequest(gms, urn, ME, TTL, NOW);
  while (gms.callsOf("write").length === 0) await Promise.resolve();
  gms.setResult(
    urn,
    { status: "RUNNING", report: "theirs" },
    leaseProperties(OTHER, { token: "t-other", ttlMs: TTL }),
  );
  release();
  const outcome = await claim;
  assert.deepEqual(outcome, { kind: "lost" });
  assert.equal(gms.callsOf("write")[0]!.outcome, "refused");
  assert.equal(gms.result(urn)!.properties.agentInstance, OTHER.instanceId);
  assert.equal(gms.history(urn).length, 1);
});

Deno.test("claimRequest: already has a result → skip without writing", async () => {
  const gms = new FakeGms();
  const urn = gms.addRequest();
  gms.setResult(urn, { status: "SUCCESS" });
  assert.deepEqual(await claimRequest(gms, urn, ME, TTL, NOW), {
    kind: "skip",
    reason: "already SUCCESS",
    gone: true,
  });
  assert.deepEqual(await claimRequest(gms, "urn:li:dataHubExecutionRequest:gone", ME, TTL), {
    kind: "skip",
    reason: "deleted",
    gone: true,
  });
  assert.equal(gms.callsOf("write").length, 0);
});

Deno.test("claimRequest: applied then reset → claimed with one write", async () => {
  const gms = new FakeGms();
  const urn = gms.addRequest();
  gms.failNext("write", "after");
  const outcome = await claimRequest(gms, urn, ME, TTL, NOW);
  assert.equal(outcome.kind, "claimed");
  assert.equal(outcome.kind === "claimed" && outcome.version, "1");
  assert.equal(gms.callsOf("write").length, 1);
  assert.equal(gms.history(urn).length, 1);
});

Deno.test("claimRequest: a KILL while pending → CANCELLED without running", async () => {
  const gms = new FakeGms();
  const urn = gms.addRequest();
  gms.setSignal(urn, { signal: "KILL", createdAt: { time: NOW, actor: "urn:li:corpuser:jo" } });
  assert.deepEqual(await claimRequest(gms, urn, ME, TTL, NOW), { kind: "cancelled" });
  assert.equal(gms.result(urn)!.value.status, "CANCELLED");
  assert.match(gms.result(urn)!.value.report!, /jo/);
});

/** A claim whose write failed and whose re-read failed too: "uncertain". */
async function uncertainClaim(gms: FakeGms, urn: string, landed: boolean) {
  gms.failNext("write", landed ? "after" : "before");
  // claimRequest reads first (ok); the re-read after the failed write fails.
  gms.failNext("read", "before", { when: () => gms.callsOf("write").length > 0 });
  const outcome = await claimRequest(gms, urn, ME, TTL, NOW);
  assert.equal(outcome.kind, "uncertain");
  assert.equal(gms.callsOf("write").length, 1);
  assert.deepEqual(gms.callsOf("read").map((c) => c.outcome), ["ok", "failed"]);
  if (outcome.kind !== "uncertain") throw new Error("unreachable");
  assert.equal(outcome.startTimeMs, NOW);
  assert.ok(outcome.token.length > 8);
  return outcome;
}

Deno.test("uncertain claim that had landed → settleClaim → claimed", async () => {
  const gms = new FakeGms();
  const urn = gms.addRequest();
  const u = await uncertainClaim(gms, urn, true);
  assert.equal(gms.callsOf("write").length, 1);
  assert.equal(gms.result(urn)!.properties.claimToken, u.token, "the claim is in GMS");
  const settled = await settleClaim(gms, urn, u.token, u.startTimeMs);
  assert.equal(settled.kind, "claimed");
  if (settled.kind !== "claimed") return;
  assert.equal(settled.version, "1");
  assert.equal(settled.token, u.token);
  assert.equal(settled.startTimeMs, NOW);
  assert.equal(gms.callsOf("write").length, 1, "settling never writes");
});

Deno.test("uncertain claim that did not land → settleClaim → skip", async () => {
  const gms = new FakeGms();
  const urn = gms.addRequest();
  const u = await uncertainClaim(gms, urn, false);
  assert.equal(gms.result(urn), undefined);
  const settled = await settleClaim(gms, urn, u.token, u.startTimeMs);
  assert.equal(settled.kind, "skip");
});

Deno.test("uncertain claim, then someone else claimed → settleClaim → lost", async () => {
  const gms = new FakeGms();
  const urn = gms.addRequest();
  const u = await uncertainClaim(gms, urn, false);
  gms.setResult(
    urn,
    { status: "RUNNING" },
    leaseProperties(OTHER, { token: "t-other", ttlMs: TTL }),
  );
  assert.deepEqual(await settleClaim(gms, urn, u.token, u.startTimeMs), { kind: "lost" });
});

Deno.test("settleClaim: GMS still failing → rejects (still uncertain)", async () => {
  const gms = new FakeGms();
  const urn = gms.addRequest();
  const u = await uncertainClaim(gms, urn, true);
  gms.failNext("read", "before");
  await assert.rejects(() => settleClaim(gms, urn, u.token, u.startTimeMs));
  assert.equal((await settleClaim(gms, urn, u.token, u.startTimeMs)).kind, "claimed");
});
