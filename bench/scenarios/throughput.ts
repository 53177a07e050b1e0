/**
 * Throughput under contention: 1, 2 and 4 agents (max_concurrent 8 each) share one simulator and
 * drain N trivial requests created at once; runs per second (first request created → last
 * terminal write) against the raw ceiling: the same CLI invocation run N times by a bounded-
 * parallel spawn loop (8 at a time, an `xargs -P 8` equivalent), measured in the same run (before
 * and, in a full run, after the agents, to show drift). Duplicates come from the fake CLI's
 * journal (each runId must start exactly once); lost claims are the 412s the simulator rejected.
 * CPU seconds of the agents, of the CLI runs they reaped, and of this process (simulator + bench)
 * show where the machine's 2 cores went; the agents' CPU per run (all agents' user + system time
 * during the drain / requests) is a target for 1 and 4 agents.
 */
import path from "node:path";
import { boundedParallel, journalRuns, readJournal, recipe, runDirect } from "../lib/cli.ts";
import { BenchEnv, WriteTracker } from "../lib/env.ts";
import { cpu, machineCpu } from "../lib/procfs.ts";
import { sleep } from "../lib/scope.ts";
import { type BenchContext, round, type ScenarioResult, target } from "../lib/types.ts";
import { median, rounded, summarize } from "../stats.ts";

const PARALLEL = 8;

interface Ceiling {
  runs: number;
  seconds: number;
  runs_per_s: number;
  failed: number;
  machine_busy_cores: number;
  cli_cpu_ms_per_run: number;
}

async function rawCeiling(ctx: BenchContext, n: number): Promise<Ceiling> {
  await using env = await BenchEnv.create(ctx.bin);
  const text = recipe();
  const journal = path.join(env.dir, "raw-journal.jsonl");
  const dir = path.join(env.dir, "raw");
  const m0 = machineCpu();
  const c0 = cpu("self")!;
  const t0 = performance.now();
  const runs = await boundedParallel(
    n,
    PARALLEL,
    (i) => runDirect(env.cli, dir, text, `raw-${i}`, { journal }),
  );
  const seconds = (performance.now() - t0) / 1000;
  const m1 = machineCpu();
  const c1 = cpu("self")!;
  return {
    runs: n,
    seconds: round(seconds, 2),
    runs_per_s: round(n / seconds, 2),
    failed: runs.filter((r) => r.code !== 0).length,
    machine_busy_cores: round((m1.busy - m0.busy) / seconds, 2),
    cli_cpu_ms_per_run: round((c1.children - c0.children) / n * 1000, 1),
  };
}

interface AgentsRun {
  agents: number;
  runs: number;
  seconds: number;
  runs_per_s: number;
  /** runs/s in 5 s windows (spread of the rate during the drain). */
  window_runs_per_s: ReturnType<typeof summarize>;
  non_success: number;
  duplicates: number;
  not_started: number;
  claims_lost_412: number;
  other_rejected_writes: number;
  duplicate_terminal_writes: number;
  claims_per_agent: number[];
  gms_requests_per_run: number;
  cpu_ms_per_run: { agents: number; cli_runs: number; simulator_and_bench: number };
  machine_busy_cores: number;
}

async function agentsRun(ctx: BenchContext, k: number, n: number, timeoutMs: number) {
  await using env = await BenchEnv.create(ctx.bin);
  const text = recipe();
  const agents = [];
  for (let i = 0; i < k; i++) {
    agents.push(
      await env.startAgent({
        name: `tp${k}-${i}`,
        maxConcurrent: PARALLEL,
        pollInterval: "1s",
        heartbeatInterval: "5s",
      }),
    );
  }
  for (const a of agents) await env.firstDiscover(a.spawnedAt);
  await sleep(200);
  const a0 = agents.map((a) => a.cpu()!);
  const s0 = cpu("self")!;
  const m0 = machineCpu();
  const req0 = env.sim.requests().length;
  const tracker = new WriteTracker(env.sim);
  const t0 = Date.now();
  const urns = new Set<string>();
  for (let i = 0; i < n; i++) {
    urns.add(env.sim.createRequest({ args: { recipe: text }, requestedAt: t0 }));
  }
  const deadline = Date.now() + timeoutMs;
  while (tracker.terminal.size < n) {
    if (Date.now() > deadline) {
      throw new Error(
        `${k} agents: only ${tracker.terminal.size}/${n} requests ended within ${timeoutMs} ms; ` +
          `agent output: ${agents.map((a) => a.outputTail.slice(-500)).join(" | ")}`,
      );
    }
    await sleep(100);
    tracker.update();
  }
  const a1 = agents.map((a) => a.cpu()!);
  const s1 = cpu("self")!;
  const m1 = machineCpu();
  const ends = [...tracker.terminal.values()].map((w) => w.at);
  const tEnd = Math.max(...ends);
  const seconds = (tEnd - t0) / 1000;
  const windows: number[] = [];
  for (let w = t0; w + 5000 <= tEnd; w += 5000) {
    windows.push(ends.filter((e) => e >= w && e < w + 5000).length / 5);
  }
  const httpRequests = env.sim.requests().length - req0;
  const rejected = env.sim.rejectedWrites();
  const perAgent = new Map<string, number>();
  for (const w of tracker.running.values()) {
    const who = String(
      w.systemMetadata?.properties &&
        (w.systemMetadata.properties as Record<string, unknown>).agentInstance,
    );
    perAgent.set(who, (perAgent.get(who) ?? 0) + 1);
  }
  for (const a of agents) await a.stop();
  const runs = journalRuns(await readJournal(env.cli.journal));
  const ids = [...urns].map((u) => u.slice(u.lastIndexOf(":") + 1));
  const sum = (xs: number[]) => xs.reduce((x, y) => x + y, 0);
  const result: AgentsRun = {
    agents: k,
    runs: n,
    seconds: round(seconds, 2),
    runs_per_s: round(n / seconds, 2),
    window_runs_per_s: rounded(summarize(windows), 2),
    non_success: [...tracker.terminal.values()].filter((w) => w.value.status !== "SUCCESS").length,
    duplicates: ids.filter((id) => (runs.get(id)?.starts ?? 0) > 1).length,
    not_started: ids.filter((id) => !runs.has(id)).length,
    claims_lost_412: rejected.filter((r) => r.status === 412).length,
    other_rejected_writes: rejected.filter((r) => r.status !== 412).length,
    duplicate_terminal_writes: tracker.terminalDuplicates.length,
    claims_per_agent: [...perAgent.values()].sort((x, y) => y - x),
    gms_requests_per_run: round(httpRequests / n, 2),
    cpu_ms_per_run: {
      agents: round(sum(a1.map((c, i) => c.self - a0[i]!.self)) / n * 1000, 1),
      cli_runs: round(sum(a1.map((c, i) => c.children - a0[i]!.children)) / n * 1000, 1),
      simulator_and_bench: round((s1.self - s0.self) / n * 1000, 1),
    },
    machine_busy_cores: round((m1.busy - m0.busy) / ((Date.now() - t0) / 1000), 2),
  };
  return result;
}

export async function throughput(ctx: BenchContext): Promise<ScenarioResult> {
  const t0 = performance.now();
  const n = ctx.quick ? 150 : 1000;
  const ceilings: Ceiling[] = [];
  ceilings.push(await rawCeiling(ctx, n));
  ctx.log(`raw ceiling: ${ceilings[0]!.runs_per_s} runs/s`);
  const timeoutMs = Math.min(900_000, Math.max(120_000, (n / ceilings[0]!.runs_per_s) * 10_000));
  const results: AgentsRun[] = [];
  for (const k of [1, 2, 4]) {
    results.push(await agentsRun(ctx, k, n, timeoutMs));
    const r = results[results.length - 1]!;
    ctx.log(
      `${k} agent(s): ${r.runs_per_s} runs/s, duplicates ${r.duplicates}, lost claims ${r.claims_lost_412}`,
    );
  }
  if (!ctx.quick) {
    ceilings.push(await rawCeiling(ctx, Math.min(n, 300)));
    ctx.log(`raw ceiling (after): ${ceilings[1]!.runs_per_s} runs/s`);
  }
  const ceiling = median(ceilings.map((c) => c.runs_per_s));
  const ceilingMean = ceilings.reduce((a, c) => a + c.runs_per_s, 0) / ceilings.length;
  const four = results.find((r) => r.agents === 4)!;
  const one = results.find((r) => r.agents === 1)!;
  const cpuTarget = (r: AgentsRun) =>
    target({
      id: `throughput.cpu_per_run_${r.agents}agent${r.agents === 1 ? "" : "s"}`,
      label: `agent CPU per trivial run, ${r.agents} agent${
        r.agents === 1 ? "" : "s"
      } (user + system)`,
      value: r.cpu_ms_per_run.agents,
      unit: "ms",
      op: "<=",
      limit: 10,
      bar: "≤ 10 ms",
    });
  const ratio = (r: AgentsRun) => round(r.runs_per_s / ceilingMean, 3);
  const dup = results.reduce((a, r) => a + r.duplicates + r.duplicate_terminal_writes, 0);
  return {
    name: "throughput",
    seconds: round((performance.now() - t0) / 1000),
    metrics: {
      requests: n,
      max_concurrent: PARALLEL,
      raw_ceiling: ceilings,
      raw_ceiling_runs_per_s: round(ceilingMean, 2),
      raw_ceiling_median_runs_per_s: round(ceiling, 2),
      agents: results.map((r) => ({ ...r, ratio_to_ceiling: ratio(r) })),
    },
    targets: [
      target({
        id: "throughput.4agents",
        label: "throughput, 4 agents / raw ceiling",
        value: ratio(four),
        unit: "×",
        op: ">=",
        limit: 0.9,
        bar: "≥ 0.9 × raw ceiling",
      }),
      target({
        id: "throughput.duplicates",
        label: "duplicate runs (all agent counts)",
        value: dup,
        unit: "",
        op: "<=",
        limit: 0,
        bar: "= 0",
      }),
      cpuTarget(one),
      cpuTarget(four),
    ],
    info: [
      {
        label: `raw ceiling (${PARALLEL} parallel spawns of the CLI)`,
        value: ceilings.map((c) => `${c.runs_per_s} runs/s`).join(", then ") +
          ` (${ceilings[0]!.cli_cpu_ms_per_run} ms CPU per CLI run)`,
      },
      ...results.map((r) => ({
        label: `${r.agents} agent(s) × max_concurrent ${PARALLEL}`,
        value:
          `${r.runs_per_s} runs/s = ${
            ratio(r)
          } × ceiling; 5 s windows p50 ${r.window_runs_per_s.p50} ` +
          `(min ${r.window_runs_per_s.min}, max ${r.window_runs_per_s.max}); duplicates ${r.duplicates}; ` +
          `claims lost (412) ${r.claims_lost_412}; CPU ms/run agents ${r.cpu_ms_per_run.agents}, ` +
          `CLI ${r.cpu_ms_per_run.cli_runs}, sim ${r.cpu_ms_per_run.simulator_and_bench}; ` +
          `${r.gms_requests_per_run} GMS requests/run`,
      })),
    ],
    notes: [],
  };
}
