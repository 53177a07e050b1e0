/**
 * What `observability.listen` costs in idle memory: the agent's idle RSS (VmRSS, p50 of 50 ms
 * samples, as in memory.ts) with the option empty and with `127.0.0.1:<free port>`, where the agent
 * loads prom-client and serves /healthz, /readyz, /status and /metrics. While "on" runs, the bench
 * scrapes /metrics every second, as Prometheus would, after one GET of each other endpoint. The
 * two are measured in turns, one agent at a time, each a fresh process (off, on, on, off; --quick:
 * off, on), so drift of the machine falls on both. Growth = p50(on) − p50(off) over all samples of
 * each, in the settled window (see SETTLED_FROM_MS); the early window (memory.ts's timing) is
 * reported too.
 */
import { BenchEnv } from "../lib/env.ts";
import type { BenchAgent } from "../lib/agent.ts";
import { sleep } from "../lib/scope.ts";
import { type BenchContext, round, type ScenarioResult, target } from "../lib/types.ts";
import { fmtSummary, rounded, summarize, type Summary } from "../stats.ts";
import { sampleFor } from "./memory.ts";

const SCRAPE_MS = 1000;
/**
 * Until V8's memory reducer runs its first major GC (`--trace-gc`: a Mark-Compact (reduce) about
 * 17.5 s after start, when idle), the heap still holds the garbage of loading and starting, about
 * 5 MiB of anonymous memory. Scrapes allocate and bring a GC forward (to about 6 s), so a window in
 * the first seconds compares a collected heap with an uncollected one. The settled window starts
 * after that GC and after the reducer's next ones (about 30 s).
 */
const SETTLED_FROM_MS = 35_000;
const SETTLED_MS = 20_000;
const OTHER_ENDPOINTS = ["/healthz", "/readyz", "/status"];

interface Scrapes {
  ok: number;
  failed: string[];
  ms: number[];
  bytes: number;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** GETs each other endpoint once, then /metrics every SCRAPE_MS until stop() is called. */
function scraper(base: string): { stop(): Promise<Scrapes> } {
  const s: Scrapes = { ok: 0, failed: [], ms: [], bytes: 0 };
  let stopped = false;
  const get = async (p: string) => {
    const t = performance.now();
    try {
      const res = await fetch(base + p, { signal: AbortSignal.timeout(5000) });
      const body = await res.text();
      if (res.status !== 200) s.failed.push(`${p} ${res.status}`);
      else if (p === "/metrics" && !body.includes("ingest_agent_polls_total")) {
        s.failed.push(`${p}: no ingest_agent_polls_total`);
      } else {
        s.ok++;
        if (p === "/metrics") {
          s.ms.push(performance.now() - t);
          s.bytes = body.length;
        }
      }
    } catch (err) {
      s.failed.push(`${p}: ${err instanceof Error ? err.message : err}`);
    }
  };
  const loop = (async () => {
    for (const p of OTHER_ENDPOINTS) await get(p);
    while (!stopped) {
      const next = Date.now() + SCRAPE_MS;
      await get("/metrics");
      while (!stopped && Date.now() < next) await sleep(Math.min(50, next - Date.now()));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return s;
    },
  };
}

interface Window {
  rss: number[];
  anon: number[];
  file: number[];
  p50: number;
}

function window(w: { rss: number[]; anon: number[]; file: number[] }): Window {
  return { rss: w.rss, anon: w.anon, file: w.file, p50: summarize(w.rss).p50 };
}

/**
 * One agent: the early window (first poll + 3 s, 10 s long, --quick 3 s: memory.ts's timing) and
 * the settled window (from first poll + SETTLED_FROM_MS, SETTLED_MS long).
 */
async function idleAgent(
  ctx: BenchContext,
  env: BenchEnv,
  name: string,
  listen: string | undefined,
  scrapes: Scrapes[],
): Promise<{ early: Window; settled: Window }> {
  const agent: BenchAgent = await env.startAgent({
    name,
    maxConcurrent: 8,
    pollInterval: "1s",
    heartbeatInterval: "5s",
    ...(listen ? { listen } : {}),
  });
  const first = await env.firstDiscover(agent.spawnedAt);
  // Scraping starts with the first poll and goes on through both windows.
  const scrape = listen ? scraper(`http://${listen}`) : undefined;
  const until = (t: number) => () => Date.now() > t;
  await sleep(Math.max(0, first + 3000 - Date.now()));
  const early = await sampleFor(agent, until(Date.now() + (ctx.quick ? 3000 : 10_000)), 60_000);
  await sleep(Math.max(0, first + SETTLED_FROM_MS - Date.now()));
  const settled = await sampleFor(
    agent,
    until(Date.now() + (ctx.quick ? 5000 : SETTLED_MS)),
    90_000,
  );
  if (scrape) scrapes.push(await scrape.stop());
  const alive = agent.running;
  await agent.stop();
  if (!alive || early.rss.length === 0 || settled.rss.length === 0) {
    throw new Error(`agent ${name} exited during the idle window: ${agent.outputTail.slice(-500)}`);
  }
  ctx.log(
    `${name}: idle RSS early p50 ${round(summarize(early.rss).p50)} MiB, settled ${
      fmtSummary(summarize(settled.rss), " MiB")
    }`,
  );
  return { early: window(early), settled: window(settled) };
}

export async function memoryObs(ctx: BenchContext): Promise<ScenarioResult> {
  const t0 = performance.now();
  const rounds = ctx.quick ? 1 : 2;
  await using env = await BenchEnv.create(ctx.bin);
  const off: { early: Window; settled: Window }[] = [];
  const on: { early: Window; settled: Window }[] = [];
  const scrapes: Scrapes[] = [];
  for (let r = 0; r < rounds; r++) {
    for (const which of r % 2 === 0 ? ["off", "on"] : ["on", "off"]) {
      if (which === "off") off.push(await idleAgent(ctx, env, `obs-off-${r}`, undefined, scrapes));
      else on.push(await idleAgent(ctx, env, `obs-on-${r}`, `127.0.0.1:${freePort()}`, scrapes));
    }
  }
  type Agents = typeof off;
  const all = (a: Agents, w: "early" | "settled", k: "rss" | "anon" | "file"): Summary =>
    summarize(a.flatMap((x) => x[w][k]));
  const perAgent = (a: Agents, w: "early" | "settled") => a.map((x) => round(x[w].p50));
  const delta = (w: "early" | "settled", k: "rss" | "anon" | "file") =>
    round(all(on, w, k).p50 - all(off, w, k).p50);
  const offRss = all(off, "settled", "rss");
  const onRss = all(on, "settled", "rss");
  const growth = delta("settled", "rss");
  const ok = scrapes.reduce((a, s) => a + s.ok, 0);
  const failed = scrapes.flatMap((s) => s.failed);
  const scrapeMs = summarize(scrapes.flatMap((s) => s.ms));
  const metricsBytes = Math.max(0, ...scrapes.map((s) => s.bytes));
  if (scrapeMs.n === 0) throw new Error(`no /metrics scrape succeeded: ${failed.join("; ")}`);
  const from = `first poll + ${SETTLED_FROM_MS / 1000} s, ${ctx.quick ? 5 : SETTLED_MS / 1000} s`;
  const early = `first poll + 3 s, ${ctx.quick ? 3 : 10} s`;
  ctx.log(
    `settled idle RSS off p50 ${round(offRss.p50)} MiB, on p50 ${round(onRss.p50)} MiB: ` +
      `growth ${growth} MiB (early window: ${delta("early", "rss")} MiB)`,
  );
  return {
    name: "memory_obs",
    seconds: round((performance.now() - t0) / 1000),
    metrics: {
      rounds,
      settled_window: from,
      early_window: early,
      idle_rss_off_mib: rounded(offRss),
      idle_rss_on_mib: rounded(onRss),
      idle_rss_off_per_agent_p50_mib: perAgent(off, "settled"),
      idle_rss_on_per_agent_p50_mib: perAgent(on, "settled"),
      idle_rss_off_anon_mib: rounded(all(off, "settled", "anon")),
      idle_rss_on_anon_mib: rounded(all(on, "settled", "anon")),
      idle_rss_off_file_mib: rounded(all(off, "settled", "file")),
      idle_rss_on_file_mib: rounded(all(on, "settled", "file")),
      growth_mib: growth,
      growth_anon_mib: delta("settled", "anon"),
      growth_file_mib: delta("settled", "file"),
      early: {
        idle_rss_off_mib: rounded(all(off, "early", "rss")),
        idle_rss_on_mib: rounded(all(on, "early", "rss")),
        growth_mib: delta("early", "rss"),
        growth_anon_mib: delta("early", "anon"),
        growth_file_mib: delta("early", "file"),
      },
      scrapes: { ok, failed, metrics_ms: rounded(scrapeMs), metrics_bytes: metricsBytes },
    },
    targets: [
      target({
        id: "memory.observability_growth",
        label: "idle RSS growth with observability.listen on",
        value: growth,
        unit: "MiB",
        op: "<=",
        limit: 5,
        bar: "≤ 5 MiB",
      }),
    ],
    info: [
      {
        label: `RSS idle, observability.listen empty (${from}; 50 ms samples)`,
        value: `${fmtSummary(offRss, " MiB")}; per agent p50 ${
          perAgent(off, "settled").join(", ")
        } MiB`,
      },
      {
        label: `RSS idle, observability.listen on, /metrics scraped every 1 s (${from})`,
        value: `${fmtSummary(onRss, " MiB")}; per agent p50 ${
          perAgent(on, "settled").join(", ")
        } MiB`,
      },
      {
        label: "growth (p50 on − p50 off)",
        value: `${growth} MiB: anonymous ${delta("settled", "anon")} MiB, file-backed ${
          delta("settled", "file")
        } MiB`,
      },
      {
        label: `early window (${early}, before the first major GC when off)`,
        value: `off p50 ${round(all(off, "early", "rss").p50)} MiB, on p50 ${
          round(all(on, "early", "rss").p50)
        } MiB: ${delta("early", "rss")} MiB (anonymous ${delta("early", "anon")} MiB)`,
      },
      {
        label: "scrapes",
        value: `${ok} OK, ${failed.length} failed; /metrics ${
          fmtSummary(scrapeMs, " ms")
        }, ${metricsBytes} B`,
      },
    ],
    notes: failed.length === 0 ? [] : [`failed scrapes: ${failed.slice(0, 5).join("; ")}`],
  };
}
