/**
 * Load on GMS.
 *  - Idle: one agent, poll_interval 5 s, nothing to do: requests per minute from the simulator's
 *    log (mean gap between consecutive requests after the first poll), against 1 per interval.
 *  - A 20 s run printing 10 lines of 100 bytes per second: accepted result writes (count and
 *    aspect bytes, from the simulator) against the Python executor's cadence computed for the
 *    same output (the same CLI invocation run directly at the same time, every line timestamped).
 *    Measured at heartbeat_interval 5 s (the bench's default) and again at 250ms and 1s (the
 *    settings an operator picks for fast cancel), each against the same Python cadence.
 *  - The same for a 10-minute run: measured in a full run; in --quick extrapolated from the
 *    20 s run (the progress writes are bounded, so each costs what the last one of the 20 s run
 *    did; the terminal write carries head + last 2,000 lines).
 */
import path from "node:path";
import { recipe, runDirect } from "../lib/cli.ts";
import { BenchEnv } from "../lib/env.ts";
import { pythonCadence, stretchOutput, type TimedLine } from "../lib/python_cadence.ts";
import { sleep, waitUntil } from "../lib/scope.ts";
import { type BenchContext, round, type ScenarioResult, target } from "../lib/types.ts";

const IDLE_POLL_MS = 5000;
const LINES_PER_S = 10;
const LINE_BYTES = 100;
/** heartbeat_interval of the extra 20 s runs (the first one, with the Python capture, is 5s). */
const EXTRA_HEARTBEATS = ["250ms", "1s"];

async function idle(ctx: BenchContext) {
  const windowMs = ctx.quick ? 15_000 : 30_000;
  await using env = await BenchEnv.create(ctx.bin);
  const agent = await env.startAgent({
    name: "idle",
    pollInterval: `${IDLE_POLL_MS}ms`,
    heartbeatInterval: "5s",
  });
  const first = await env.firstDiscover(agent.spawnedAt);
  await sleep(windowMs);
  const all = env.sim.requests().filter((r) => r.at >= agent.spawnedAt);
  await agent.stop();
  const steady = all.filter((r) => r.at >= first && r.at <= first + windowMs);
  const span = steady[steady.length - 1]!.at - steady[0]!.at;
  const gaps = steady.length - 1;
  const perMs = gaps > 0 && span > 0 ? gaps / span : NaN;
  const kinds = new Map<string, number>();
  for (const r of steady) {
    const k = r.operationName ?? `${r.method} ${r.path.split("?")[0]}`;
    kinds.set(k, (kinds.get(k) ?? 0) + 1);
  }
  return {
    window_s: windowMs / 1000,
    poll_interval_ms: IDLE_POLL_MS,
    startup_requests: all.filter((r) => r.at < first).length + 1,
    requests_in_window: steady.length,
    requests_per_minute: round(perMs * 60_000, 2),
    requests_per_poll_interval: round(perMs * IDLE_POLL_MS, 3),
    bytes_out_per_minute: round(steady.reduce((a, r) => a + r.bytesIn, 0) / (windowMs / 60_000)),
    bytes_in_per_minute: round(steady.reduce((a, r) => a + r.bytesOut, 0) / (windowMs / 60_000)),
    by_kind: Object.fromEntries(kinds),
  };
}

interface AgentRun {
  seconds: number;
  heartbeat_interval: string;
  writes: number;
  bytes: number;
  progress_writes: number;
  progress_bytes: number;
  claim_bytes: number;
  final_bytes: number;
  largest_progress_write_bytes: number;
  last_progress_write_bytes: number;
  progress_write_sizes: number[];
  http_requests: number;
  http_bytes_sent: number;
  structured: string | undefined;
  report_chars: number;
}

/** One request printing 10 lines/s for `seconds`, run by an agent; optionally the same run directly. */
async function logRun(
  ctx: BenchContext,
  seconds: number,
  heartbeat: string,
  capture: boolean,
): Promise<{ agent: AgentRun; lines?: TimedLine[]; directMs?: number }> {
  await using env = await BenchEnv.create(ctx.bin);
  const text = recipe({
    lines_per_second: LINES_PER_S,
    line_bytes: LINE_BYTES,
    sleep_ms: seconds * 1000,
  });
  const agent = await env.startAgent({
    name: `log-${seconds}s`,
    pollInterval: "1s",
    heartbeatInterval: heartbeat,
  });
  await env.firstDiscover(agent.spawnedAt);
  const urn = env.sim.createRequest({ args: { recipe: text } });
  const direct = capture
    ? runDirect(env.cli, path.join(env.dir, "direct"), text, "direct-capture", {
      captureLines: true,
      journal: path.join(env.dir, "direct-journal.jsonl"),
    })
    : undefined;
  await waitUntil(
    () => (env.sim.result(urn)?.value.status ?? "RUNNING") !== "RUNNING" || undefined,
    seconds * 1000 + 60_000,
    `end of the ${seconds} s run`,
    50,
  );
  const d = await direct;
  const writes = env.sim.resultWrites(urn);
  const claim = writes[0]!;
  const final = writes[writes.length - 1]!;
  const progress = writes.slice(1, -1);
  const http = env.sim.requests().filter((r) => r.at >= claim.at && r.at <= final.at);
  await agent.stop();
  return {
    agent: {
      seconds,
      heartbeat_interval: heartbeat,
      writes: writes.length,
      bytes: writes.reduce((a, w) => a + w.bytes, 0),
      progress_writes: progress.length,
      progress_bytes: progress.reduce((a, w) => a + w.bytes, 0),
      claim_bytes: claim.bytes,
      final_bytes: final.bytes,
      largest_progress_write_bytes: Math.max(0, ...progress.map((w) => w.bytes)),
      last_progress_write_bytes: progress[progress.length - 1]?.bytes ?? 0,
      progress_write_sizes: progress.map((w) => w.bytes),
      http_requests: http.length,
      http_bytes_sent: http.reduce((a, r) => a + r.bytesIn, 0),
      structured: final.value.structuredReport?.serializedValue,
      report_chars: final.value.report?.length ?? 0,
    },
    ...(d ? { lines: d.lines!, directMs: d.ms } : {}),
  };
}

/** The agent's terminal-report log section: head up to 64 KiB, then the last 2,000 lines. */
function agentLogChars(lines: TimedLine[]): number {
  let head = 0, headBytes = 0;
  while (head < lines.length && headBytes + lines[head]!.text.length + 1 <= 65_536) {
    headBytes += lines[head]!.text.length + 1;
    head++;
  }
  const tail = lines.slice(Math.max(head, lines.length - 2000));
  const omitted = lines.length - head - tail.length;
  return headBytes + tail.reduce((a, l) => a + l.text.length + 1, 0) +
    (omitted > 0 ? `… ${omitted} lines omitted …\n`.length : 0);
}

/** "250ms", "1s", "5s" → milliseconds (for ordering). */
function hbMillis(hb: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s)$/.exec(hb);
  return m ? Number(m[1]) * (m[2] === "s" ? 1000 : 1) : NaN;
}

function strip(r: AgentRun): Omit<AgentRun, "structured"> {
  const { structured: _s, ...rest } = r;
  return rest;
}

export async function gmsLoad(ctx: BenchContext): Promise<ScenarioResult> {
  const t0 = performance.now();
  const idleResult = await idle(ctx);
  ctx.log(`idle: ${idleResult.requests_per_minute} requests/min`);

  const short = await logRun(ctx, 20, "5s", true);
  const lines = short.lines!;
  const py20 = pythonCadence(lines, short.directMs!, short.agent.structured);
  const ratio20 = short.agent.bytes / py20.bytes;
  ctx.log(
    `20 s run: agent ${short.agent.bytes} B in ${short.agent.writes} writes, Python ${py20.bytes} B`,
  );

  const byHeartbeat = new Map<string, AgentRun>([["5s", short.agent]]);
  for (const hb of EXTRA_HEARTBEATS) {
    const r = (await logRun(ctx, 20, hb, false)).agent;
    byHeartbeat.set(hb, r);
    ctx.log(
      `20 s run, heartbeat ${hb}: agent ${r.bytes} B in ${r.writes} writes → ratio ${
        round(r.bytes / py20.bytes, 3)
      }`,
    );
  }
  const hbRatios = [...byHeartbeat.entries()]
    .map(([hb, r]) => ({ hb, run: r, ratio: round(r.bytes / py20.bytes, 3) }))
    .sort((a, b) => hbMillis(a.hb) - hbMillis(b.hb));

  let hb2: AgentRun | undefined;
  if (!ctx.quick) {
    hb2 = (await logRun(ctx, 20, "2s", false)).agent;
  }

  // 10 minutes.
  const LONG_S = 600;
  const longLines = stretchOutput(lines, LONG_S * 1000 + (short.directMs! - 20_000));
  const py600 = pythonCadence(longLines, LONG_S * 1000, short.agent.structured);
  // The progress cadence the 20 s run showed (one write per heartbeat before issue 15, every 2 s
  // after it, whatever the heartbeat), not an assumed one.
  const progressEveryMs = (short.agent.seconds * 1000) / Math.max(1, short.agent.progress_writes);
  const logChars20 = agentLogChars(lines);
  const extrapolated = {
    progress_writes: Math.floor((LONG_S * 1000) / progressEveryMs),
    bytes: 0,
    final_bytes: short.agent.final_bytes - logChars20 + agentLogChars(longLines),
  };
  extrapolated.bytes = short.agent.claim_bytes +
    extrapolated.progress_writes * short.agent.last_progress_write_bytes + extrapolated.final_bytes;
  let long: AgentRun | undefined;
  if (!ctx.quick) {
    ctx.log("10-minute run (not in --quick)…");
    long = (await logRun(ctx, LONG_S, "5s", false)).agent;
  }
  const agent600 = long?.bytes ?? extrapolated.bytes;
  const ratio600 = agent600 / py600.bytes;
  const ratioHb2 = hb2 ? hb2.bytes / py20.bytes : undefined;

  return {
    name: "gms_load",
    seconds: round((performance.now() - t0) / 1000),
    metrics: {
      idle: idleResult,
      run_20s: {
        agent: strip(short.agent),
        python_cadence: py20,
        ratio: round(ratio20, 3),
        output_lines: lines.length,
        output_bytes: lines.reduce((a, l) => a + l.text.length + 1, 0),
        ...(hb2 ? { agent_heartbeat_2s: strip(hb2), ratio_heartbeat_2s: round(ratioHb2!, 3) } : {}),
        by_heartbeat: Object.fromEntries(
          hbRatios.map((h) => [h.hb, { agent: strip(h.run), ratio: h.ratio }]),
        ),
      },
      run_10min: {
        measured: long ? strip(long) : null,
        extrapolated_from_20s: extrapolated,
        python_cadence: py600,
        ratio: round(ratio600, 4),
      },
    },
    targets: [
      target({
        id: "gms.idle",
        label: "idle GMS load (poll_interval 5 s), requests per poll_interval",
        value: idleResult.requests_per_poll_interval,
        unit: "req",
        op: "<=",
        limit: 1,
        bar: "≤ 1 per poll_interval",
      }),
      target({
        id: "gms.bytes20s",
        label: "GMS write bytes, 20 s run at 10 lines/s: agent / Python cadence",
        value: round(ratio20, 3),
        unit: "×",
        op: "<=",
        limit: 0.3,
        bar: "≤ 0.30",
      }),
      ...hbRatios.map((h) =>
        target({
          id: `gms_load.ratio_hb_${h.hb}`,
          label:
            `GMS write bytes, 20 s run at 10 lines/s, heartbeat_interval ${h.hb}: agent / Python`,
          value: h.ratio,
          unit: "×",
          op: "<=",
          limit: 0.3,
          bar: "≤ 0.30",
        })
      ),
      target({
        id: "gms.bytes10min",
        label: `GMS write bytes, 10 min run: agent / Python (${
          long ? "measured" : "extrapolated"
        })`,
        value: round(ratio600, 4),
        unit: "×",
        op: "<=",
        limit: round(ratio20, 3),
        bar: "< the 20 s ratio (falls as runs get longer)",
      }),
    ],
    info: [
      {
        label: "idle agent, poll_interval 5 s",
        value:
          `${idleResult.requests_per_minute} requests/min (${idleResult.requests_per_poll_interval} per interval), ` +
          `${idleResult.bytes_out_per_minute} B/min sent, ${idleResult.bytes_in_per_minute} B/min received; ` +
          `${idleResult.startup_requests} requests for the first poll`,
      },
      {
        label: "20 s run, agent (heartbeat 5 s)",
        value:
          `${short.agent.writes} result writes, ${short.agent.bytes} B (claim ${short.agent.claim_bytes}, ` +
          `progress ${
            short.agent.progress_write_sizes.join("/")
          }, final ${short.agent.final_bytes}); ` +
          `${short.agent.http_requests} HTTP requests, ${short.agent.http_bytes_sent} B sent in all`,
      },
      {
        label: "20 s run, Python cadence (computed)",
        value:
          `${py20.writes} writes, ${py20.bytes} B (progress ${py20.progressBytes}, final ${py20.finalBytes}) → ratio ${
            round(ratio20, 3)
          }`,
      },
      ...hbRatios.filter((h) => h.hb !== "5s").map((h) => ({
        label: `20 s run, agent with heartbeat_interval ${h.hb}`,
        value: `${h.run.writes} writes, ${h.run.bytes} B (claim ${h.run.claim_bytes}, progress ${
          h.run.progress_writes === 0
            ? "none"
            : `${h.run.progress_writes} writes, ${h.run.progress_bytes} B, largest ${h.run.largest_progress_write_bytes}`
        }, final ${h.run.final_bytes}) → ratio ${h.ratio}`,
      })),
      ...(hb2
        ? [{
          label: "20 s run, agent with heartbeat_interval 2 s (as Python)",
          value: `${hb2.writes} writes, ${hb2.bytes} B → ratio ${round(ratioHb2!, 3)}`,
        }]
        : []),
      {
        label: "10 min run, agent",
        value: long
          ? `measured: ${long.writes} writes, ${long.bytes} B (largest progress write ${long.largest_progress_write_bytes} B, final ${long.final_bytes} B); extrapolation said ${extrapolated.bytes} B`
          : `extrapolated: ${extrapolated.progress_writes + 2} writes, ${extrapolated.bytes} B`,
      },
      {
        label: "10 min run, Python cadence (computed)",
        value:
          `${py600.writes} writes, ${py600.bytes} B (largest ${py600.largestWriteBytes} B) → ratio ${
            round(ratio600, 4)
          }`,
      },
    ],
    notes: [],
  };
}
