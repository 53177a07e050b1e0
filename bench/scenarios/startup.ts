/**
 * Startup: executable spawned → first poll (discovery query) received by the simulator, from the
 * simulator's request log vs the spawn time, repeated; plus `--version` (spawn → exit) as the
 * floor of starting the Node single-executable app at all, and the executable's size.
 */
import { BenchEnv, DISCOVER_OP } from "../lib/env.ts";
import { sleep, waitUntil } from "../lib/scope.ts";
import { type BenchContext, round, type ScenarioResult, target } from "../lib/types.ts";
import { fmtSummary, rounded, summarize } from "../stats.ts";

export async function startup(ctx: BenchContext): Promise<ScenarioResult> {
  const t0 = performance.now();
  const reps = ctx.quick ? 4 : 15;
  await using env = await BenchEnv.create(ctx.bin);

  // --version: the cost of booting the executable (no config, no GMS).
  const version: number[] = [];
  for (let i = 0; i < reps + 1; i++) {
    const s = performance.now();
    const out = await new Deno.Command(ctx.bin, { args: ["--version"], stdout: "null" }).output();
    if (!out.success) throw new Error(`${ctx.bin} --version exited ${out.code}`);
    if (i > 0) version.push(performance.now() - s); // first one warms the page cache
  }

  // Bare Node (the binary the executable is built on), when the checkout has it: the floor.
  const node = ctx.node;
  const bare: number[] = [];
  if (node) {
    for (let i = 0; i < reps + 1; i++) {
      const s = performance.now();
      await new Deno.Command(node, { args: ["-e", "0"], stdout: "null" }).output();
      if (i > 0) bare.push(performance.now() - s);
    }
  }

  const firstRequest: number[] = [];
  const firstPoll: number[] = [];
  for (let i = 0; i < reps + 1; i++) {
    const agent = await env.startAgent({ name: `startup-${i}`, pollInterval: "5s" });
    const since = agent.spawnedAt;
    const poll = await waitUntil(
      () => env.sim.requests().find((r) => r.at >= since && r.operationName === DISCOVER_OP),
      15_000,
      "first discovery query",
    );
    const first = env.sim.requests().find((r) => r.at >= since)!;
    await agent.stop();
    if (i === 0) continue; // warm-up (page cache of the 150 MB executable)
    firstRequest.push(first.at - since);
    firstPoll.push(poll.at - since);
    await sleep(50);
  }
  const size = (await Deno.stat(ctx.bin)).size;
  const poll = summarize(firstPoll);
  const req = summarize(firstRequest);
  const ver = summarize(version);
  ctx.log(`startup → first poll ${fmtSummary(poll, " ms", 0)}`);
  return {
    name: "startup",
    seconds: round((performance.now() - t0) / 1000),
    metrics: {
      reps,
      first_poll_ms: rounded(poll),
      first_request_ms: rounded(req),
      version_exit_ms: rounded(ver),
      bare_node_exit_ms: bare.length ? rounded(summarize(bare)) : null,
      executable_bytes: size,
    },
    targets: [target({
      id: "startup.p50",
      label: "startup: spawn → first poll received, p50",
      value: round(poll.p50),
      unit: "ms",
      op: "<=",
      limit: 300,
      bar: "≤ 300 ms",
    })],
    info: [
      { label: "startup: spawn → first poll", value: fmtSummary(poll, " ms", 0) },
      { label: "startup: spawn → first request (GET /config)", value: fmtSummary(req, " ms", 0) },
      { label: "startup: `--version` spawn → exit", value: fmtSummary(ver, " ms", 0) },
      ...(bare.length
        ? [{
          label: "startup: bare `node -e 0` (same Node) spawn → exit",
          value: fmtSummary(summarize(bare), " ms", 0),
        }]
        : []),
      { label: "executable size", value: `${(size / 2 ** 20).toFixed(1)} MiB (${size} bytes)` },
    ],
    notes: ["one warm-up start excluded (page cache)"],
  };
}
