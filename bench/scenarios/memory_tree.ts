/**
 * Idle memory of the agent's whole process tree, as issue 15 measures it: VmRSS summed over the
 * agent's pid and every descendant it has (helper processes included; from /proc, see
 * procfs.ts treeMemory), with max_concurrent 8, poll_interval 200ms and heartbeat_interval 1s,
 * nothing to run. Sampled every SAMPLE_MS in a window from first poll + 5 s (10 s long; --quick:
 * 5 s), p50 against the target; a full run also samples a settled window from first poll + 30 s
 * (after V8's memory reducer has collected the garbage of starting, see memory_obs.ts).
 */
import { BenchEnv } from "../lib/env.ts";
import { type TreeMemory, treeMemory } from "../lib/procfs.ts";
import { sleep } from "../lib/scope.ts";
import { type BenchContext, round, type ScenarioResult, target } from "../lib/types.ts";
import { fmtSummary, rounded, summarize } from "../stats.ts";

/** A /proc scan per sample: coarser than memory.ts's 50 ms, so sampling stays cheap. */
const SAMPLE_MS = 100;
const IDLE_FROM_MS = 5000;
const SETTLED_FROM_MS = 30_000;
const CONFIG = { maxConcurrent: 8, pollInterval: "200ms", heartbeatInterval: "1s" } as const;

interface Window {
  rss: number[];
  anon: number[];
  file: number[];
  root: number[];
  maxProcesses: number;
  /** The first sample of the window (the "after 5 s idle" reading). */
  first?: TreeMemory;
}

async function sampleWindow(pid: number, fromMs: number, lengthMs: number): Promise<Window> {
  await sleep(Math.max(0, fromMs - Date.now()));
  const w: Window = { rss: [], anon: [], file: [], root: [], maxProcesses: 0 };
  const end = fromMs + lengthMs;
  while (Date.now() < end) {
    const m = treeMemory(pid);
    if (!m) throw new Error("the agent exited while idle");
    w.first ??= m;
    w.rss.push(m.rssMiB);
    w.anon.push(m.anonMiB);
    w.file.push(m.fileMiB);
    w.root.push(m.rootRssMiB);
    w.maxProcesses = Math.max(w.maxProcesses, m.processes);
    await sleep(SAMPLE_MS);
  }
  return w;
}

function windowMetrics(w: Window, fromMs: number, lengthMs: number) {
  return {
    from_first_poll_s: fromMs / 1000,
    seconds: lengthMs / 1000,
    rss_mib: rounded(summarize(w.rss)),
    rss_anon_mib: rounded(summarize(w.anon)),
    rss_file_mib: rounded(summarize(w.file)),
    agent_process_rss_mib: rounded(summarize(w.root)),
    first_sample_rss_mib: w.first ? round(w.first.rssMiB) : null,
    max_processes: w.maxProcesses,
  };
}

function windowInfo(w: Window): string {
  return `${fmtSummary(summarize(w.rss), " MiB")}; anonymous p50 ${
    round(summarize(w.anon).p50)
  } MiB, file-backed p50 ${round(summarize(w.file).p50)} MiB; the agent process alone p50 ${
    round(summarize(w.root).p50)
  } MiB; up to ${w.maxProcesses} process(es)`;
}

export async function memoryTree(ctx: BenchContext): Promise<ScenarioResult> {
  const t0 = performance.now();
  const idleMs = ctx.quick ? 5000 : 10_000;
  await using env = await BenchEnv.create(ctx.bin);
  const agent = await env.startAgent({ name: "memory-tree", ...CONFIG });
  const first = await env.firstDiscover(agent.spawnedAt);
  const idle = await sampleWindow(agent.pid, first + IDLE_FROM_MS, idleMs);
  const idleRss = summarize(idle.rss);
  ctx.log(`idle process-tree RSS ${fmtSummary(idleRss, " MiB")}`);
  let settled: Window | undefined;
  if (!ctx.quick) {
    settled = await sampleWindow(agent.pid, first + SETTLED_FROM_MS, idleMs);
    ctx.log(`settled process-tree RSS ${fmtSummary(summarize(settled.rss), " MiB")}`);
  }
  const polls = env.sim.requests().filter((r) => r.at >= first && r.operationName).length;
  const status = agent.running ? undefined : await agent.exited;
  await agent.stop();
  if (status) throw new Error(`the agent exited (${status.code}): ${agent.outputTail}`);
  const settings =
    `max_concurrent ${CONFIG.maxConcurrent}, poll ${CONFIG.pollInterval}, heartbeat ${CONFIG.heartbeatInterval}`;
  return {
    name: "memory_tree",
    seconds: round((performance.now() - t0) / 1000),
    metrics: {
      max_concurrent: CONFIG.maxConcurrent,
      poll_interval: CONFIG.pollInterval,
      heartbeat_interval: CONFIG.heartbeatInterval,
      sample_ms: SAMPLE_MS,
      idle: windowMetrics(idle, IDLE_FROM_MS, idleMs),
      settled: settled ? windowMetrics(settled, SETTLED_FROM_MS, idleMs) : null,
      graphql_requests_while_idle: polls,
    },
    targets: [
      target({
        id: "memory_tree.idle",
        label: `agent process-tree RSS idle (${settings}), p50`,
        value: round(idleRss.p50),
        unit: "MiB",
        op: "<=",
        limit: 60,
        bar: "≤ 60 MiB",
      }),
    ],
    info: [
      {
        label: `process-tree RSS, first poll + 5 s for ${
          idleMs / 1000
        } s (${SAMPLE_MS} ms samples)`,
        value: `${windowInfo(idle)}; first sample ${round(idle.first?.rssMiB ?? NaN)} MiB`,
      },
      ...(settled
        ? [{
          label: `process-tree RSS settled, first poll + 30 s for ${idleMs / 1000} s`,
          value: windowInfo(settled),
        }]
        : []),
    ],
    notes: [],
  };
}
