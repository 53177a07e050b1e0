/**
 * Pickup latency: request created → RUNNING written (the claim), as a fraction of poll_interval,
 * for requests created at random moments while the agent idles. After each run ends the agent
 * polls at once (a freed slot nudges the poller), so the next request is created 1–3 poll
 * intervals later (uniform), which puts it at a random phase of the jittered poll cycle. The
 * discovery query that found the request splits the latency into waiting for the poll and the
 * claim itself (discovery → read → conditional write).
 */
import { recipe } from "../lib/cli.ts";
import { BenchEnv, DISCOVER_OP } from "../lib/env.ts";
import { sleep, waitUntil } from "../lib/scope.ts";
import { type BenchContext, round, type ScenarioResult, target } from "../lib/types.ts";
import { fmtSummary, rounded, summarize } from "../stats.ts";

const POLL_MS = 1000;

export async function pickup(ctx: BenchContext): Promise<ScenarioResult> {
  const t0 = performance.now();
  // The median of a uniform phase has a sampling spread of about ±0.04 at n = 120 (±0.07 at 50).
  const n = ctx.quick ? 15 : 120;
  await using env = await BenchEnv.create(ctx.bin);
  const text = recipe();
  const agent = await env.startAgent({
    name: "pickup",
    pollInterval: `${POLL_MS}ms`,
    heartbeatInterval: "5s",
  });
  await env.firstDiscover(agent.spawnedAt);

  const pickupMs: number[] = [];
  const waitForPoll: number[] = [];
  const claimMs: number[] = [];
  for (let i = 0; i < n; i++) {
    await sleep(POLL_MS * (1 + 2 * Math.random()));
    const created = Date.now();
    const urn = env.sim.createRequest({ args: { recipe: text }, requestedAt: created });
    const claim = await waitUntil(
      () => env.sim.resultWrites(urn).find((w) => w.value.status === "RUNNING"),
      10 * POLL_MS,
      `claim of request ${i}`,
      2,
    );
    pickupMs.push(claim.at - created);
    const poll = env.sim.requests().filter((r) =>
      r.operationName === DISCOVER_OP && r.at >= created && r.at <= claim.at
    )[0];
    if (poll) {
      waitForPoll.push(poll.at - created);
      claimMs.push(claim.at - poll.at);
    }
    await waitUntil(
      () =>
        env.sim.result(urn)?.value.status !== "RUNNING" || undefined,
      30_000,
      `end of request ${i}`,
    );
  }
  await agent.stop();
  const frac = summarize(pickupMs.map((x) => x / POLL_MS));
  const ms = summarize(pickupMs);
  ctx.log(`pickup ${fmtSummary(frac, " × poll", 3)}`);
  return {
    name: "pickup",
    seconds: round((performance.now() - t0) / 1000),
    metrics: {
      requests: n,
      poll_interval_ms: POLL_MS,
      pickup_fraction_of_poll: rounded(frac, 3),
      pickup_ms: rounded(ms),
      wait_for_poll_ms: rounded(summarize(waitForPoll)),
      poll_to_claim_ms: rounded(summarize(claimMs)),
    },
    targets: [target({
      id: "pickup.p50",
      label: "pickup latency (created → RUNNING) / poll_interval, p50",
      value: round(frac.p50, 3),
      unit: "× poll",
      op: "<=",
      limit: 0.55,
      bar: "≤ 0.55 × poll_interval",
    })],
    info: [
      { label: "pickup latency, poll_interval 1 s", value: fmtSummary(ms, " ms", 0) },
      {
        label: "  waiting for the next poll",
        value: fmtSummary(summarize(waitForPoll), " ms", 0),
      },
      {
        label: "  poll received → claim written",
        value: fmtSummary(summarize(claimMs), " ms", 0),
      },
    ],
    notes: [
      "expected for a uniformly random phase of a poll cycle jittered ±15 %: p50 = 0.50, mean ≈ 0.504 × poll_interval, plus the claim",
    ],
  };
}
