/**
 * Memory of the agent process (VmRSS / VmHWM from /proc/<pid>/status; the executable is the
 * Node binary itself, so the pid is the agent's), idle and under a log storm: 8 concurrent runs
 * each streaming 200 MiB of 100-byte log lines as fast as it can (fixture output_bytes), sampled
 * every 50 ms until every run has ended. --quick streams 32 MiB per run.
 */
import { recipe } from "../lib/cli.ts";
import { BenchEnv, WriteTracker } from "../lib/env.ts";
import type { Memory } from "../lib/procfs.ts";
import { sleep } from "../lib/scope.ts";
import { type BenchContext, round, type ScenarioResult, target } from "../lib/types.ts";
import { fmtSummary, rounded, summarize } from "../stats.ts";

export const SAMPLE_MS = 50;
const RUNS = 8;

/** Samples the agent's memory every SAMPLE_MS until done() (also used by memory_obs.ts). */
export async function sampleFor(
  agent: { memory(): Memory | undefined },
  done: () => boolean,
  maxMs: number,
): Promise<{ rss: number[]; anon: number[]; file: number[]; hwm: number; timedOut: boolean }> {
  const rss: number[] = [];
  const anon: number[] = [];
  const file: number[] = [];
  let hwm = 0;
  const deadline = Date.now() + maxMs;
  while (!done()) {
    if (Date.now() > deadline) return { rss, anon, file, hwm, timedOut: true };
    const m = agent.memory();
    if (m) {
      rss.push(m.rssMiB);
      anon.push(m.anonMiB);
      file.push(m.fileMiB);
      hwm = Math.max(hwm, m.hwmMiB);
    }
    await sleep(SAMPLE_MS);
  }
  return { rss, anon, file, hwm, timedOut: false };
}

export async function memory(ctx: BenchContext): Promise<ScenarioResult> {
  const t0 = performance.now();
  const perRun = ctx.quick ? 32 * 2 ** 20 : 200 * 2 ** 20;
  await using env = await BenchEnv.create(ctx.bin);
  const agent = await env.startAgent({
    name: "memory",
    maxConcurrent: RUNS,
    pollInterval: "1s",
    heartbeatInterval: "5s",
  });
  const first = await env.firstDiscover(agent.spawnedAt);
  // Idle: let it settle for a few polls, then sample.
  await sleep(Math.max(0, first + 3000 - Date.now()));
  const idleEnd = Date.now() + (ctx.quick ? 3000 : 10_000);
  const idle = await sampleFor(agent, () => Date.now() > idleEnd, 60_000);
  const idleRss = summarize(idle.rss);
  const idleHwm = idle.hwm;
  ctx.log(`idle RSS ${fmtSummary(idleRss, " MiB")}`);

  // Storm.
  const cpu0 = agent.cpu()!;
  const tracker = new WriteTracker(env.sim);
  const stormStart = Date.now();
  for (let i = 0; i < RUNS; i++) {
    env.sim.createRequest({ args: { recipe: recipe({ output_bytes: perRun, line_bytes: 100 }) } });
  }
  let lastCheck = 0;
  const storm = await sampleFor(agent, () => {
    if (Date.now() - lastCheck < 250) return false;
    lastCheck = Date.now();
    tracker.update();
    return tracker.terminal.size >= RUNS;
  }, 600_000);
  const stormSeconds = (Date.now() - stormStart) / 1000;
  const cpu1 = agent.cpu();
  const endMem = agent.memory();
  await agent.stop();
  if (storm.timedOut) throw new Error(`log storm did not end within 600 s`);
  const statuses = [...tracker.terminal.values()].map((w) => w.value.status);
  const stormRss = summarize(storm.rss);
  const peakHwm = Math.max(storm.hwm, endMem?.hwmMiB ?? 0);
  const mib = (RUNS * perRun) / 2 ** 20;
  ctx.log(`storm RSS ${fmtSummary(stormRss, " MiB")}, VmHWM ${peakHwm.toFixed(1)} MiB`);
  return {
    name: "memory",
    seconds: round((performance.now() - t0) / 1000),
    metrics: {
      idle_rss_mib: rounded(idleRss),
      idle_rss_anon_mib: rounded(summarize(idle.anon)),
      idle_rss_file_mib: rounded(summarize(idle.file)),
      idle_hwm_mib: round(idleHwm),
      storm: {
        runs: RUNS,
        bytes_per_run: perRun,
        seconds: round(stormSeconds),
        mib_per_s: round(mib / stormSeconds),
        statuses,
        rss_mib: rounded(stormRss),
        rss_anon_mib: rounded(summarize(storm.anon)),
        rss_file_mib: rounded(summarize(storm.file)),
        hwm_mib: round(peakHwm),
        agent_cpu_s: cpu1 ? round(cpu1.self - cpu0.self) : null,
        samples: storm.rss.length,
      },
    },
    targets: [
      target({
        id: "memory.idle",
        label: "agent RSS idle, p50",
        value: round(idleRss.p50),
        unit: "MiB",
        op: "<=",
        limit: 60,
        bar: "≤ 60 MiB",
      }),
      target({
        id: "memory.storm",
        label: `agent peak RSS, ${RUNS} runs × ${perRun / 2 ** 20} MiB of logs (VmHWM)`,
        value: round(peakHwm),
        unit: "MiB",
        op: "<=",
        limit: 150,
        bar: "≤ 150 MiB",
      }),
    ],
    info: [
      {
        label: "RSS idle (50 ms samples)",
        value: `${fmtSummary(idleRss, " MiB")}; VmHWM ${round(idleHwm)} MiB; of which anonymous ` +
          `p50 ${round(summarize(idle.anon).p50)} MiB, file-backed p50 ${
            round(summarize(idle.file).p50)
          } MiB`,
      },
      {
        label: `RSS during the log storm (${RUNS} × ${perRun / 2 ** 20} MiB)`,
        value:
          `${fmtSummary(stormRss, " MiB")}; VmHWM ${round(peakHwm)} MiB; ${
            round(stormSeconds)
          } s, ` +
          `${round(mib / stormSeconds)} MiB/s, agent CPU ${
            cpu1 ? round(cpu1.self - cpu0.self) : "?"
          } s; ` +
          `anonymous max ${round(summarize(storm.anon).max)} MiB, file-backed max ${
            round(summarize(storm.file).max)
          } MiB`,
      },
    ],
    notes: statuses.every((s) => s === "SUCCESS") ? [] : [`storm statuses: ${statuses.join(",")}`],
  };
}
