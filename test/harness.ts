/**
 * Integration-test harness: a temp directory, the GMS simulator, the fake datahub CLI, and the
 * agent as a real child process: the built executable when AGENT_BIN is set (as `make test`
 * does), else `deno run src/main.ts`, so tests also run straight from a checkout.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import process from "node:process";
import { stringify } from "yaml";
import { alive } from "../src/state/procs.ts";
import { type FakeCli, makeFakeCli } from "./fixtures/fake_cli.ts";
import { GmsSimulator, type SimulatorOptions } from "./sim/gms_simulator.ts";

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");

/** How to start the agent: the executable under test, or the sources through Deno. */
export function agentCommand(): { command: string; args: string[] } {
  const bin = process.env.AGENT_BIN;
  if (bin) return { command: bin, args: [] };
  return {
    command: Deno.execPath(),
    args: ["run", "-A", "--quiet", path.join(ROOT, "src/main.ts")],
  };
}

export function usingBinary(): boolean {
  return Boolean(process.env.AGENT_BIN);
}

export interface TempDir extends AsyncDisposable {
  path: string;
}

export async function tempDir(prefix = "ingest-agent-test-"): Promise<TempDir> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  return { path: dir, [Symbol.asyncDispose]: () => rm(dir, { recursive: true, force: true }) };
}

/** A JSON recipe whose source drives the fake CLI (see test/fixtures/README.md). */
export function recipe(
  fixture: Record<string, unknown> = {},
  extra: Record<string, unknown> = {},
): string {
  const { config, ...rest } = extra as { config?: Record<string, unknown> };
  return JSON.stringify({
    source: { type: "fake", config: { fixture, ...config } },
    sink: { type: "console" },
    pipeline_name: "urn:li:dataHubIngestionSource:test",
    ...rest,
  });
}

export interface LogLine {
  level: string;
  msg: string;
  [key: string]: unknown;
}

export interface Exit {
  code: number;
  signal: string | null;
}

/**
 * The agent as a child process. Deno.Command rather than node:child_process: Deno's node
 * compatibility layer reports "killed by SIGTERM" for any child it sent SIGTERM to, even one
 * that handled it and exited 0, and exit codes are what these tests check.
 */
export class AgentProcess implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  stdout = "";
  stderr = "";
  readonly exited: Promise<Exit>;
  #done = false;

  constructor(child: Deno.ChildProcess) {
    this.child = child;
    const collect = async (stream: ReadableStream<Uint8Array>, key: "stdout" | "stderr") => {
      const decoder = new TextDecoder();
      for await (const chunk of stream) this[key] += decoder.decode(chunk, { stream: true });
    };
    const streams = Promise.all([collect(child.stdout, "stdout"), collect(child.stderr, "stderr")]);
    this.exited = child.status.then(async (st) => {
      this.#done = true;
      await Promise.race([streams, new Promise((r) => setTimeout(r, 2000))]);
      return { code: st.code, signal: st.signal };
    });
  }

  get pid(): number {
    return this.child.pid;
  }

  get running(): boolean {
    return !this.#done;
  }

  /** The agent's JSON log lines. */
  logs(): LogLine[] {
    return this.stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
  }

  signal(sig: Deno.Signal = "SIGTERM"): void {
    if (!this.#done) this.child.kill(sig);
  }

  /** SIGTERM and wait for the exit (SIGKILL after timeoutMs). */
  async stop(timeoutMs = 20_000): Promise<Exit> {
    this.signal("SIGTERM");
    const timer = setTimeout(() => this.signal("SIGKILL"), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** Runs the agent executable with arguments and collects its output (for validate, --help). */
export async function runAgentOnce(
  args: string[],
  options: { env?: Record<string, string>; clearEnv?: boolean; cwd?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const { command, args: pre } = agentCommand();
  const out = await new Deno.Command(command, {
    args: [...pre, ...args],
    env: options.env,
    clearEnv: options.clearEnv,
    cwd: options.cwd,
    stdin: "null",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

const HIDE_NODE =
  `for n in $(command -v -a node 2>/dev/null; ls /usr/local/bin/node /usr/bin/node 2>/dev/null); do mount --bind /dev/null "$n" || exit 97; done; true`;

/** Starts the agent with a config file. */
export function spawnAgent(
  configFile: string,
  options: {
    env?: Record<string, string>;
    clearEnv?: boolean;
    hideNode?: boolean;
    /** In a network namespace of its own (loopback down): no packet can leave the machine. */
    isolatedNet?: boolean;
    /** The command before --config (default: none, which is `run`). */
    command?: "run" | "once";
  } = {},
): AgentProcess {
  let { command, args } = agentCommand();
  if (options.isolatedNet) {
    args = ["-n", command, ...args];
    command = "/usr/bin/unshare";
  }
  if (options.hideNode) {
    // A private mount namespace in which every node binary on PATH is an unusable empty file.
    args = ["-m", "/bin/sh", "-c", `${HIDE_NODE} && exec "$0" "$@"`, command, ...args];
    command = "/usr/bin/unshare";
  }
  const child = new Deno.Command(command, {
    args: [...args, ...(options.command ? [options.command] : []), "--config", configFile],
    env: options.env,
    clearEnv: options.clearEnv,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return new AgentProcess(child);
}

export interface Setup extends AsyncDisposable {
  dir: string;
  sim: GmsSimulator;
  cli: FakeCli;
  /** Writes a config file (test defaults merged with `overrides`) and returns its path. */
  writeConfig(overrides?: Record<string, unknown>, name?: string): Promise<string>;
  /** Starts an agent with that config. */
  startAgent(
    overrides?: Record<string, unknown>,
    options?: { env?: Record<string, string> },
  ): Promise<AgentProcess>;
}

/** Fast settings for tests. */
export function testConfig(
  dir: string,
  sim: GmsSimulator,
  cli: string,
  overrides: Record<string, unknown> = {},
) {
  const base: Record<string, Record<string, unknown> | string> = {
    executor_id: "default",
    datahub: { server: sim.url, token: sim.token, timeout: "5s" },
    agent: {
      max_concurrent: 4,
      poll_interval: "200ms",
      heartbeat_interval: "200ms",
      lease_ttl: "3s",
      cancel_grace: "1s",
      shutdown_timeout: "20s",
      state_dir: path.join(dir, "state"),
      work_dir: path.join(dir, "work"),
    },
    ingestion: { datahub_command: cli },
    observability: { log_format: "json", log_level: "debug" },
  };
  for (const [k, v] of Object.entries(overrides)) {
    const cur = base[k];
    base[k] = v && typeof v === "object" && cur && typeof cur === "object"
      ? { ...cur, ...v }
      : v as string;
  }
  return base;
}

export async function setup(options: { sim?: SimulatorOptions } = {}): Promise<Setup> {
  const tmp = await tempDir();
  const sim = await GmsSimulator.start(options.sim);
  const cli = await makeFakeCli(path.join(tmp.path, "bin"));
  const agents: AgentProcess[] = [];
  let configs = 0;
  const writeConfig = async (overrides: Record<string, unknown> = {}, name?: string) => {
    const n = ++configs;
    const file = path.join(tmp.path, name ?? `agent-${n}.yml`);
    const settings = testConfig(tmp.path, sim, cli.path, overrides);
    // Each agent has its own state directory (they are locked), unless the test says otherwise.
    const agent = settings.agent as Record<string, unknown>;
    const own = (overrides.agent as Record<string, unknown> | undefined)?.state_dir;
    if (own === undefined) agent.state_dir = path.join(tmp.path, `state-${n}`);
    await writeFile(file, stringify(settings));
    return file;
  };
  return {
    dir: tmp.path,
    sim,
    cli,
    writeConfig,
    async startAgent(overrides = {}, opts = {}) {
      const agent = spawnAgent(await writeConfig(overrides), opts);
      agents.push(agent);
      return agent;
    },
    async [Symbol.asyncDispose]() {
      await Promise.all(agents.map((a) => a.stop()));
      await sim.close();
      await tmp[Symbol.asyncDispose]();
    },
  };
}

/** Waits until the request has a terminal result and returns it. */
export function terminal(sim: GmsSimulator, urn: string, timeoutMs = 30_000) {
  return sim.waitFor(
    () => {
      const r = sim.result(urn);
      return r && r.value.status !== "RUNNING" ? r.value : undefined;
    },
    timeoutMs,
    `terminal result of ${urn}`,
  );
}

/** Waits until the fake CLI's journal shows the run of `urn` started; returns its start entry. */
export async function started(s: Setup, urn: string, timeoutMs = 15_000) {
  const id = urn.split(":").pop()!;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const e = (await s.cli.readJournal()).find((j) => j.event === "start" && j.runId === id);
    if (e) return e;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`run of ${urn} did not start`);
}

/** True when no live (non-zombie) process is left in the group. */
export function groupGone(pgid: number): boolean {
  if (!alive(-pgid)) return true;
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[2]) === pgid && fields[0] !== "Z") return false;
    } catch { /* exited meanwhile */ }
  }
  return true;
}
