/**
 * Per-run overhead: a trivial request's claim (first RUNNING write) → terminal write, from the
 * simulator's accepted writes, minus the fake CLI's own run time for the same invocation run
 * directly (spawn → exit, same args, a recipe file in a fresh run dir). Agent runs and direct runs
 * alternate (one each, N times), so drift and background load hit both alike. The poll interval is
 * short and pickup is not counted (it starts at the claim).
 *
 * The fake CLI's journal (start/exit entries with Date.now()) splits both into: before the CLI's
 * own code starts (agent: claim → journal start; direct: spawn → journal start), the CLI's work,
 * and after it (agent: journal exit → terminal write; direct: journal exit → exit observed).
 */
import path from "node:path";
import { journalRuns, readJournal, recipe, runDirect } from "../lib/cli.ts";
import { BenchEnv } from "../lib/env.ts";
import { waitUntil } from "../lib/scope.ts";
import { type BenchContext, round, type ScenarioResult, target } from "../lib/types.ts";
import { fmtSummary, median, rounded, summarize } from "../stats.ts";

export async function overhead(ctx: BenchContext): Promise<ScenarioResult> {
  const t0 = performance.now();
  const n = ctx.quick ? 60 : 500;
  await using env = await BenchEnv.create(ctx.bin);
  const directDir = path.join(env.dir, "direct");
  const directJournal = path.join(env.dir, "direct-journal.jsonl");
  const text = recipe();
  const agent = await env.startAgent({
    name: "overhead",
    maxConcurrent: 4,
    pollInterval: "100ms",
    heartbeatInterval: "5s",
  });
  await env.firstDiscover(agent.spawnedAt);

  const runs: { id: string; claim: number; terminal: number; status: string }[] = [];
  const direct: Awaited<ReturnType<typeof runDirect>>[] = [];
  // warm-up: one of each, not counted
  for (let i = 0; i < n + 1; i++) {
    const urn = env.sim.createRequest({ args: { recipe: text } });
    const done = await waitUntil(
      () => {
        const r = env.sim.result(urn);
        return r && r.value.status !== "RUNNING" ? r : undefined;
      },
      30_000,
      `terminal result of run ${i}`,
    );
    const writes = env.sim.resultWrites(urn);
    const claim = writes.find((w) => w.value.status === "RUNNING");
    const term = writes.find((w) => w.value.status !== "RUNNING");
    if (!claim || !term) throw new Error(`run ${i}: no RUNNING or terminal write`);
    const id = urn.slice(urn.lastIndexOf(":") + 1);
    const d = await runDirect(env.cli, directDir, text, `direct-${i}`, { journal: directJournal });
    if (i === 0) continue;
    runs.push({ id, claim: claim.at, terminal: term.at, status: done.value.status });
    direct.push(d);
    if (i % 100 === 0) ctx.log(`overhead: ${i}/${n}`);
  }
  const agentCpu = agent.cpu();
  await agent.stop();

  const failed = runs.filter((r) => r.status !== "SUCCESS").length;
  const e2e = runs.map((r) => r.terminal - r.claim);
  const cli = direct.map((d) => d.ms);
  const cliMedian = median(cli);
  const over = summarize(e2e.map((x) => x - cliMedian));
  const paired = summarize(e2e.map((x, i) => x - cli[i]!));

  // Breakdown from the journals.
  const aj = journalRuns(await readJournal(env.cli.journal));
  const dj = journalRuns(await readJournal(directJournal));
  const aPre: number[] = [], aWork: number[] = [], aPost: number[] = [];
  for (const r of runs) {
    const j = aj.get(r.id);
    if (j?.start === undefined || j.exit === undefined) continue;
    aPre.push(j.start - r.claim);
    aWork.push(j.exit - j.start);
    aPost.push(r.terminal - j.exit);
  }
  const dPre: number[] = [], dWork: number[] = [], dPost: number[] = [];
  direct.forEach((d, i) => {
    const j = dj.get(`direct-${i + 1}`);
    if (j?.start === undefined || j.exit === undefined) return;
    dPre.push(j.start - d.spawnAt);
    dWork.push(j.exit - j.start);
    dPost.push(d.exitAt - j.exit);
  });
  const breakdown = {
    agent: {
      claim_to_cli_start: rounded(summarize(aPre)),
      cli_work: rounded(summarize(aWork)),
      cli_exit_to_terminal_write: rounded(summarize(aPost)),
    },
    direct: {
      spawn_to_cli_start: rounded(summarize(dPre)),
      cli_work: rounded(summarize(dWork)),
      cli_exit_to_exit_observed: rounded(summarize(dPost)),
    },
    overhead_before_cli_ms: round(median(aPre) - median(dPre)),
    overhead_after_cli_ms: round(median(aPost) - median(dPost)),
    cli_work_difference_ms: round(median(aWork) - median(dWork)),
  };
  ctx.log(`overhead ${fmtSummary(over, " ms")}; CLI ${fmtSummary(summarize(cli), " ms")}`);
  const cpuPerRun = agentCpu ? agentCpu.self / (n + 1) * 1000 : NaN;
  return {
    name: "overhead",
    seconds: round((performance.now() - t0) / 1000),
    metrics: {
      runs: n,
      failed,
      end_to_end_ms: rounded(summarize(e2e)),
      cli_direct_ms: rounded(summarize(cli)),
      overhead_ms: rounded(over),
      overhead_paired_ms: rounded(paired),
      breakdown,
      agent_cpu_ms_per_run: round(cpuPerRun),
      agent_cpu_note:
        "agent process user+sys CPU over the whole scenario (incl. 100 ms polling) / runs",
    },
    targets: [
      target({
        id: "overhead.p50",
        label: "per-run overhead (claim → terminal − CLI direct), p50",
        value: round(over.p50),
        unit: "ms",
        op: "<=",
        limit: 20,
        bar: "≤ 20 ms",
      }),
    ],
    info: [
      { label: "per-run overhead", value: fmtSummary(over, " ms") },
      { label: "  claim → terminal write", value: fmtSummary(summarize(e2e), " ms") },
      { label: "  CLI run directly (spawn → exit)", value: fmtSummary(summarize(cli), " ms") },
      {
        label: "  overhead before CLI starts / after it exits (p50 diff)",
        value: `${breakdown.overhead_before_cli_ms} ms / ${breakdown.overhead_after_cli_ms} ms`,
      },
      { label: "  agent CPU per run", value: `${round(cpuPerRun)} ms` },
    ],
    notes: failed ? [`${failed} runs did not end in SUCCESS`] : [],
  };
}
