/**
 * The installer of the venv runtime: uv when it is on PATH (`uv venv`, `uv pip install`), else
 * `<python> -m venv` and that environment's pip; the command lines of each step (SPEC §4.4), the
 * installer's environment, and running one step as a process group of its own, so that a cancel
 * or a timeout during a build stops the installer and everything it started (TERM to the group,
 * the grace period, KILL), as it does a run's CLI.
 */
import { spawn } from "node:child_process";
import { accessSync, constants, statSync } from "node:fs";
import path from "node:path";
import process from "node:process";
import type { AgentConfig } from "../config/config.ts";
import { sleep } from "../timers.ts";
import { credentialVariables, runEnvironment } from "./run_env.ts";

/** A process group the run is waiting on, as the Job stops it (RunProcess is one too). */
export interface GroupChild {
  readonly pid: number | undefined;
  stop(graceMs: number): Promise<unknown>;
  signalGroup(signal: NodeJS.Signals): boolean;
}

export interface InstallerChoice {
  kind: "uv" | "pip";
  /** uv's path (kind uv). */
  uv?: string;
  /** The interpreter environments are made from (as configured when not found on PATH). */
  python: string;
}

/** Where `name` is found on `searchPath` (or `name` itself when it holds a slash). */
export function which(name: string, searchPath: string): string | undefined {
  const candidates = name.includes("/")
    ? [path.resolve(name)]
    : searchPath.split(path.delimiter).filter(Boolean).map((dir) => path.join(dir, name));
  for (const file of candidates) {
    try {
      if (!statSync(file).isFile()) continue;
      accessSync(file, constants.X_OK);
      return file;
    } catch { /* next */ }
  }
  return undefined;
}

/** uv if `installer` allows it and it is on PATH, else pip. */
export function chooseInstaller(
  config: AgentConfig,
  env: Record<string, string | undefined>,
): InstallerChoice {
  const { installer, python } = config.ingestion;
  const searchPath = env.PATH ?? "";
  const uv = installer === "pip" ? undefined : which("uv", searchPath);
  const resolved = which(python, searchPath) ?? python;
  if (uv) return { kind: "uv", uv, python: resolved };
  return { kind: "pip", python: resolved };
}

/** The installer's problem on this host (runtime_check.ts), or undefined. */
export function installerProblem(
  config: AgentConfig,
  env: Record<string, string | undefined>,
): string | undefined {
  const { installer, python } = config.ingestion;
  const searchPath = env.PATH ?? "";
  if (installer === "uv" && !which("uv", searchPath)) {
    return "ingestion.installer is uv, but uv is not on PATH";
  }
  if (!which(python, searchPath)) {
    return `ingestion.python: '${python}' not found (set it to a Python 3 interpreter's path, or put it on PATH)`;
  }
  return undefined;
}

/** The interpreter inside an environment. */
export function venvPython(dir: string): string {
  return process.platform === "win32"
    ? path.join(dir, "Scripts", "python.exe")
    : path.join(dir, "bin", "python");
}

/** The bin directory of an environment. */
export function venvBin(dir: string): string {
  return path.join(dir, process.platform === "win32" ? "Scripts" : "bin");
}

/** The datahub CLI of an environment. */
export function venvDatahub(dir: string): string {
  return path.join(venvBin(dir), process.platform === "win32" ? "datahub.exe" : "datahub");
}

/** The options every install gets from the configuration (index, find-links, offline). */
export function sourceOptions(config: AgentConfig, kind: "uv" | "pip"): string[] {
  const i = config.ingestion;
  const out: string[] = [];
  if (i.offline) out.push(...(kind === "uv" ? ["--offline", "--no-index"] : ["--no-index"]));
  else {
    if (i.indexUrl) out.push("--index-url", i.indexUrl);
    for (const u of i.extraIndexUrls) out.push("--extra-index-url", u);
  }
  for (const f of i.findLinks) out.push("--find-links", f);
  return out;
}

export interface Step {
  /** What the report calls it. */
  label: string;
  command: string;
  args: string[];
}

/** Creating the environment in `dir`. */
export function createStep(choice: InstallerChoice, dir: string): Step {
  return choice.kind === "uv"
    ? { label: "create", command: choice.uv!, args: ["venv", "--python", choice.python, dir] }
    : { label: "create", command: choice.python, args: ["-m", "venv", dir] };
}

/** `pip install` (or `uv pip install`) of `what` into the environment in `dir`. */
export function installStep(
  choice: InstallerChoice,
  config: AgentConfig,
  dir: string,
  label: string,
  what: string[],
  extra: string[] = [],
): Step {
  const options = [...sourceOptions(config, choice.kind), ...extra];
  return choice.kind === "uv"
    ? {
      label,
      command: choice.uv!,
      args: ["pip", "install", "--python", venvPython(dir), ...options, ...what],
    }
    : {
      label,
      command: venvPython(dir),
      args: [
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        ...options,
        ...what,
      ],
    };
}

/**
 * The installer's environment: the run's allowlist (PATH, HOME, locale, proxies, CA bundles,
 * `pass_env`), the agent's PIP_* and UV_* settings, the run marker (recovery finds a build's
 * processes by it), never the agent's credentials nor the request's extra_env_vars (a request
 * must not redirect the installer to another index).
 */
export function installerEnv(
  agentEnv: Record<string, string | undefined>,
  config: AgentConfig,
  dir: string,
  marker: { name: string; value: string },
): Record<string, string> {
  const env = runEnvironment(agentEnv, {
    passEnv: [...config.ingestion.passEnv, "PIP_*", "UV_*"],
    extra: {},
    withheld: credentialVariables(agentEnv, config.datahub),
    trust: { caFile: config.datahub.tls.caFile, proxy: config.datahub.proxy },
    marker,
  });
  env.VIRTUAL_ENV = dir;
  env.PIP_DISABLE_PIP_VERSION_CHECK = "1";
  env.PIP_NO_INPUT = "1";
  if (config.ingestion.offline) {
    // Belt and braces: no index, no download of a Python by uv, whatever a config file says.
    env.PIP_NO_INDEX = "1";
    env.UV_OFFLINE = "1";
    env.UV_NO_INDEX = "1";
    env.UV_PYTHON_DOWNLOADS = "never";
  }
  return env;
}

/** Installer output kept for the report: the first and the last lines. */
const HEAD_LINES = 100;
const TAIL_LINES = 300;
const MAX_LINE = 1000;

export interface StepResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Start error (the command could not be run). */
  error?: string;
  ms: number;
}

/**
 * Runs one step in a new process group, its output (stdout and stderr, in order) going to
 * `onLine`. `child` is told the group while it runs and undefined once it has exited (so a late
 * cancel never signals a reused pid).
 */
export function runStep(
  step: Step,
  env: Record<string, string>,
  cwd: string,
  onLine: (line: string) => void,
  child: (c: GroupChild | undefined) => void,
): Promise<StepResult> {
  const t0 = performance.now();
  const groups = process.platform !== "win32";
  return new Promise((resolve) => {
    let proc: ReturnType<typeof spawn>;
    try {
      proc = spawn(step.command, step.args, {
        cwd,
        env,
        detached: groups,
        stdio: ["ignore", "pipe", "pipe"],
      });
    } catch (err) {
      resolve({ code: null, signal: null, error: (err as Error).message, ms: 0 });
      return;
    }
    let done = false;
    // The leader's exit ends the step (a leftover holding the output open cannot keep it going).
    const exited = new Promise<void>((r) => proc.once("exit", () => r()));
    const closed = new Promise<void>((r) => proc.once("close", () => r()));
    const group: GroupChild = {
      pid: proc.pid,
      signalGroup(signal) {
        if (done || proc.pid === undefined) return false;
        try {
          process.kill(groups ? -proc.pid : proc.pid, signal);
          return true;
        } catch {
          return false;
        }
      },
      async stop(graceMs) {
        group.signalGroup("SIGTERM");
        const gone = await Promise.race([
          exited.then(() => true),
          sleep(graceMs).then(() => false),
        ]);
        if (!gone) group.signalGroup("SIGKILL");
        await exited;
      },
    };
    for (const stream of [proc.stdout, proc.stderr]) {
      let rest = "";
      stream?.setEncoding("utf8");
      stream?.on("data", (chunk: string) => {
        const lines = (rest + chunk).split(/\r?\n/);
        rest = lines.pop() ?? "";
        for (const line of lines) onLine(line);
      });
      stream?.on("end", () => {
        if (rest) onLine(rest);
        rest = "";
      });
    }
    proc.once("error", (err) => {
      done = true;
      child(undefined);
      resolve({ code: null, signal: null, error: err.message, ms: performance.now() - t0 });
    });
    proc.once("spawn", () => child(group));
    proc.once("exit", async (code, signal) => {
      // The installer is done: whatever it left in its group goes with it; then its output is
      // read to the end (bounded: a process that left the group may hold it open).
      if (groups) group.signalGroup("SIGKILL");
      done = true;
      child(undefined);
      await Promise.race([closed, sleep(2000)]);
      proc.stdout?.destroy();
      proc.stderr?.destroy();
      resolve({ code, signal, ms: performance.now() - t0 });
    });
  });
}

/** How an installer step ended, for the report. */
export function describeStep(r: StepResult): string {
  if (r.error) return `could not start: ${r.error}`;
  if (r.signal) return `killed by ${r.signal}`;
  return `exit code ${r.code}`;
}

/** The first and last lines of the installer's output, each cut to MAX_LINE characters. */
export class BoundedLines {
  readonly #head: string[] = [];
  #tail: string[] = [];
  #dropped = 0;

  add(line: string): void {
    const cut = line.length > MAX_LINE ? `${line.slice(0, MAX_LINE)} [...truncated]` : line;
    if (this.#head.length < HEAD_LINES) return void this.#head.push(cut);
    this.#tail.push(cut);
    if (this.#tail.length > TAIL_LINES * 2) {
      this.#dropped += this.#tail.length - TAIL_LINES;
      this.#tail = this.#tail.slice(-TAIL_LINES);
    }
  }

  lines(): string[] {
    const tail = this.#tail.slice(-TAIL_LINES);
    const dropped = this.#dropped + this.#tail.length - tail.length;
    return [...this.#head, ...(dropped > 0 ? [`… ${dropped} lines omitted …`] : []), ...tail];
  }
}
