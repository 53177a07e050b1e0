/**
 * The benchmarks' agent launcher: writes a YAML (JSON) config in a temp dir, starts the agent
 * executable with Deno.Command, drains its output (keeping a short tail for diagnostics), and
 * stops it with SIGTERM (SIGKILL after a timeout). Any fake-CLI run the agent started and that is
 * still alive after the agent stopped (journal start without exit) is killed by its process group.
 */
import path from "node:path";
import type { GmsSimulator } from "../../test/sim/gms_simulator.ts";
import { readJournal } from "./cli.ts";
import { cpu, type CpuTimes, type Memory, memory } from "./procfs.ts";
import { killQuietly, type Scope } from "./scope.ts";

export interface AgentOptions {
  name: string;
  maxConcurrent?: number;
  pollInterval?: string;
  heartbeatInterval?: string;
  leaseTtl?: string;
  cancelGrace?: string;
  shutdownTimeout?: string;
  logLevel?: "debug" | "info" | "warn" | "error";
  /** observability.listen (endpoints and metrics); empty or absent: off. */
  listen?: string;
  env?: Record<string, string>;
}

export interface LaunchContext {
  bin: string;
  sim: GmsSimulator;
  /** Absolute path of the fake datahub CLI wrapper. */
  cli: string;
  /** Journal of that wrapper (to find leftover runs). */
  journal: string;
  /** Parent dir of the agent's state/work dirs and config file. */
  dir: string;
}

export function agentConfig(ctx: LaunchContext, o: AgentOptions): Record<string, unknown> {
  const home = path.join(ctx.dir, o.name);
  return {
    executor_id: "default",
    datahub: { server: ctx.sim.url, token: ctx.sim.token, timeout: "10s" },
    agent: {
      max_concurrent: o.maxConcurrent ?? 4,
      poll_interval: o.pollInterval ?? "1s",
      heartbeat_interval: o.heartbeatInterval ?? "5s",
      lease_ttl: o.leaseTtl ?? "60s",
      cancel_grace: o.cancelGrace ?? "2s",
      shutdown_timeout: o.shutdownTimeout ?? "10s",
      state_dir: path.join(home, "state"),
      work_dir: path.join(home, "work"),
    },
    ingestion: { datahub_command: ctx.cli },
    observability: {
      log_format: "json",
      log_level: o.logLevel ?? "warn",
      ...(o.listen ? { listen: o.listen } : {}),
    },
  };
}

const TAIL_BYTES = 16 * 1024;

export class BenchAgent {
  readonly name: string;
  readonly pid: number;
  /** Date.now() just before spawn. */
  readonly spawnedAt: number;
  readonly workDir: string;
  readonly exited: Promise<Deno.CommandStatus>;
  #child: Deno.ChildProcess;
  #tail = "";
  #done = false;
  #ctx: LaunchContext;

  constructor(ctx: LaunchContext, name: string, child: Deno.ChildProcess, spawnedAt: number) {
    this.#ctx = ctx;
    this.name = name;
    this.#child = child;
    this.pid = child.pid;
    this.spawnedAt = spawnedAt;
    this.workDir = path.join(ctx.dir, name, "work");
    const drain = async (s: ReadableStream<Uint8Array>) => {
      const dec = new TextDecoder();
      for await (const chunk of s) {
        this.#tail = (this.#tail + dec.decode(chunk, { stream: true })).slice(-TAIL_BYTES);
      }
    };
    const streams = Promise.all([drain(child.stdout), drain(child.stderr)]).catch(() => {});
    this.exited = child.status.then(async (st) => {
      this.#done = true;
      await Promise.race([streams, new Promise((r) => setTimeout(r, 1000))]);
      return st;
    });
  }

  get running(): boolean {
    return !this.#done;
  }

  /** Last lines the agent printed (warn level and above in benches). */
  get outputTail(): string {
    return this.#tail;
  }

  memory(): Memory | undefined {
    return this.#done ? undefined : memory(this.pid);
  }

  cpu(): CpuTimes | undefined {
    return this.#done ? undefined : cpu(this.pid);
  }

  /** SIGTERM, wait (SIGKILL after timeoutMs), then kill any run the agent left behind. */
  async stop(timeoutMs = 15_000): Promise<Deno.CommandStatus> {
    if (!this.#done) killQuietly(this.pid, "SIGTERM");
    const timer = setTimeout(() => {
      if (!this.#done) killQuietly(this.pid, "SIGKILL");
    }, timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
      await killLeftoverRuns(this.#ctx.journal);
    }
  }
}

/** Runs whose journal has a start but no exit entry: SIGKILL their process group (pgid = pid). */
export async function killLeftoverRuns(journal: string): Promise<number> {
  const entries = await readJournal(journal);
  const exited = new Set(entries.filter((e) => e.event === "exit").map((e) => e.pid));
  let killed = 0;
  for (const e of entries) {
    if (e.event !== "start" || exited.has(e.pid)) continue;
    if (killQuietly(-e.pgid, "SIGKILL")) killed++;
  }
  return killed;
}

/** Starts an agent; it is stopped when the scope ends (even if the benchmark failed). */
export async function startAgent(
  scope: Scope,
  ctx: LaunchContext,
  options: AgentOptions,
): Promise<BenchAgent> {
  const file = path.join(ctx.dir, `${options.name}.yml`);
  await Deno.writeTextFile(file, JSON.stringify(agentConfig(ctx, options), null, 2) + "\n");
  const spawnedAt = Date.now();
  const child = new Deno.Command(ctx.bin, {
    args: ["--config", file],
    env: options.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const agent = new BenchAgent(ctx, options.name, child, spawnedAt);
  scope.defer(async () => {
    await agent.stop();
  });
  return agent;
}
