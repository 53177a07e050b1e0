import assert from "node:assert/strict";
import type { Discovery, DiscoveryPages } from "../gms/client.ts";
import type { Candidate } from "../request.ts";
import { Candidates, RECENT_MAX, RECENT_MS } from "./candidates.ts";

const cand = (urn: string): Candidate => ({
  urn,
  task: "RUN_INGEST",
  executorId: "default",
  requestedAt: 1_000,
});

/** A GMS that answers discovery with `pending` and records the pages asked for. */
function fakeGms(pending: Candidate[], total = pending.length) {
  const asked: DiscoveryPages[] = [];
  return {
    asked,
    gms: {
      serverNow: () => 2_000,
      discover(_: string, pages: DiscoveryPages): Promise<Discovery> {
        asked.push(pages);
        return Promise.resolve({
          pending,
          running: [],
          pages: {
            pending: { start: pages.pendingStart ?? 0, returned: pending.length, total },
            running: { start: 0, returned: 0, total: 0 },
          },
        });
      },
    },
  };
}

function setup(pending: Candidate[], total?: number) {
  let now = 0;
  const { gms, asked } = fakeGms(pending, total);
  const polled: number[] = [];
  const c = new Candidates({
    gms,
    executorId: "default",
    pollIntervalMs: 1_000,
    polled: (p) => polled.push(p.pending),
    now: () => now,
  });
  return { c, asked, polled, advance: (ms: number) => (now += ms) };
}

const urns = (l: { untried: Candidate[] } | undefined) => l?.untried.map((x) => x.urn);

Deno.test("candidates: a discovery asks for 3× the free slots (10..100); its untried requests are the leftovers", async () => {
  const { c, asked, polled } = setup([cand("a"), cand("b"), cand("c")]);
  assert.equal(c.leftover(), undefined, "nothing before the first discovery");
  await c.discover(2);
  await c.discover(50);
  assert.deepEqual(asked.map((p) => p.count), [10, 100]);
  assert.deepEqual(polled, [3, 3]);
  c.tried("a");
  assert.deepEqual(urns(c.leftover()), ["b", "c"]);
  c.tried("b");
  c.tried("c");
  assert.equal(c.leftover(), undefined, "used up: discover again");
});

Deno.test("candidates: leftovers last one poll interval, and a new discovery replaces them", async () => {
  const { c, advance } = setup([cand("a"), cand("b")]);
  await c.discover(1);
  c.tried("a");
  advance(999);
  assert.deepEqual(urns(c.leftover()), ["b"]);
  advance(1);
  assert.equal(c.leftover(), undefined, "as old as the poll interval: discover");
  await c.discover(1);
  assert.deepEqual(urns(c.leftover()), ["a", "b"], "a fresh discovery: everything untried");
});

Deno.test("candidates: a lost or gone claim drops the leftovers; a left or uncertain one keeps them", async () => {
  const { c } = setup([cand("a"), cand("b"), cand("c")]);
  await c.discover(3);
  c.tried("a");
  c.claimed("a", { kind: "skip", reason: "on_overlap: wait" });
  c.claimed("a", {
    kind: "uncertain",
    token: "t",
    startTimeMs: 1,
    error: undefined as never,
  });
  assert.deepEqual(urns(c.leftover()), ["b", "c"]);
  assert.equal(c.recent("a"), false, "left or uncertain: may be claimed again");
  c.claimed("b", { kind: "lost" });
  assert.equal(c.leftover(), undefined, "lost to a peer: the pool is taking them");
  assert.equal(c.recent("b"), true);
  await c.discover(3);
  c.claimed("c", { kind: "skip", reason: "already SUCCESS", gone: true });
  assert.equal(c.leftover(), undefined, "closed meanwhile: stale");
  assert.equal(c.recent("c"), true);
});

Deno.test("candidates: requests decided here are skipped for RECENT_MS, at most RECENT_MAX of them", async () => {
  const { c, advance } = setup([cand("a"), cand("b")]);
  await c.discover(2);
  c.decided("a");
  assert.deepEqual(urns(c.leftover()), ["b"], "a recent request is not a leftover");
  advance(RECENT_MS - 1);
  assert.equal(c.recent("a"), true);
  advance(1);
  assert.equal(c.recent("a"), false);
  for (let i = 0; i <= RECENT_MAX; i++) c.decided(`u${i}`);
  assert.equal(c.recent("u0"), false, "the oldest is forgotten past RECENT_MAX");
  assert.equal(c.recent("u1"), true);
  assert.equal(c.recent(`u${RECENT_MAX}`), true);
});

Deno.test("candidates: the pending page moves on only when a full page gave nothing", async () => {
  const { c, asked } = setup([cand("a")], 5);
  const found = await c.discover(1);
  c.paged(found, false);
  await c.discover(1);
  c.paged(found, true);
  await c.discover(1);
  assert.deepEqual(asked.map((p) => p.pendingStart), [0, 1, 0]);
});
