/**
 * One process group per run, so that cancel reaches every descendant: SIGTERM to the group, a
 * grace period, then SIGKILL to the group. The group's leader is a tiny shell (the shim) whose
 * only jobs are to start the CLI and record its exit status in a file; the CLI's output goes to a
 * file (output.ts). Neither needs the agent: a run survives the death of its agent, and the next
 * agent attaches to it (`RunProcess.attach`) and learns its real outcome.
 *
 * Exit is detected from the group's leader itself (its 'exit', or /proc when attached), never
 * from the output, so a grandchild holding the output open cannot keep a finished run RUNNING
 * (datahub#17397). Once the leader has exited, whatever is left in its group is killed: a run
 * leaves no orphans.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, closeSync, constants, readFileSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import process from "node:process";
import { AgentError } from "../errors.ts";
import { openNewPrivateFile } from "../state/private_fs.ts";
import { groupLeaderRunning, processStartTime } from "../state/procs.ts";
import { sleep } from "../timers.ts";
import { type Backpressure, tailFile } from "./output.ts";

export { MAX_LINE_BYTES, TRUNCATED_MARK } from "./output.ts";
export type { Backpressure } from "./output.ts";

export interface ProcessSpec {
  command: string;
  args: string[];
  cwd: string;
  env: Record<string, string>;
}

/** Where a run's process writes what outlives the agent. */
export interface RunFiles {
  /** The CLI's stdout and stderr (raw: may hold secrets; private, removed with the run). */
  output: string;
  /** The CLI's exit status, written by the shim when the CLI ends. */
  status: string;
}

export interface ProcessExit {
  /** Exit code, or null when killed by a signal (both null: not recorded). */
  code: number | null;
  signal: NodeJS.Signals | null;
}

export type LineSink = (line: string) => void;

/**
 * The shim: `sh -c SHIM ingest-agent-run <status file> <cli> <args…>`. It survives the group's
 * SIGTERM (trapped, so the CLI, which gets the default handling back on exec, decides) to record
 * the status; SIGKILL ends it too, and then the one who sent it knows the outcome.
 */
const SHIM = `trap ':' TERM INT HUP
status=$1; shift
"$@"
rc=$?
printf '%s\\n' "$rc" > "$status.tmp" && mv -f "$status.tmp" "$status"
exit "$rc"`;

/** How often an attached run's leader is checked. */
const ATTACH_POLL_MS = 200;

/** Whether runs can outlive the agent here (a POSIX shell and process groups). */
export const SURVIVES_AGENT = process.platform !== "win32";

/**
 * What the run and signal handling cannot do on this platform, logged once at start: Windows
 * has no process groups, no POSIX shell for the shim, no SIGTERM and no /proc.
 */
export function platformLimits(platform: string = process.platform): string[] {
  if (platform !== "win32") return [];
  return [
    "Windows: no process groups: cancel, the run timeout and shutdown kill only the datahub CLI's own process (at once, without a SIGTERM grace period), not the processes it started",
    "Windows: no SIGTERM: Ctrl+C (SIGINT) drains as SIGTERM does elsewhere; a service stop ends the agent without draining",
    "Windows: a run does not survive an agent restart (agent.on_shutdown: detach included): the next start closes it as interrupted and cannot find or stop a CLI process left running",
  ];
}

export class RunProcess {
  /** The group's leader (the shim): pgid = pid. */
  readonly pid: number;
  /** The kernel's start time of the leader, to never mistake a reused pid for it. */
  readonly startTime: string | undefined;
  readonly exited: Promise<ProcessExit>;
  /** Resolves when the output was read to its end (after the exit). */
  readonly drained: Promise<void>;

  private constructor(
    pid: number,
    exited: Promise<ProcessExit>,
    files: RunFiles,
    onLine: LineSink,
    backpressure?: Backpressure,
  ) {
    this.pid = pid;
    this.startTime = processStartTime(pid);
    this.exited = exited.then((exit) => {
      // Anything left in the group (daemonised grandchildren) dies with the run. (Windows: no
      // group, and the exited CLI's pid may already name another process.)
      if (SURVIVES_AGENT) this.signalGroup("SIGKILL");
      return exit;
    });
    this.drained = tailFile(files.output, onLine, this.exited, backpressure);
  }

  /** Starts the CLI under the shim in a new session; rejects with CLI_START_FAILED. */
  static async start(
    spec: ProcessSpec,
    files: RunFiles,
    onLine: LineSink,
    backpressure?: Backpressure,
  ): Promise<RunProcess> {
    const command = resolveCommand(spec.command, spec.env.PATH ?? "", spec.cwd);
    const out = openNewPrivateFile(files.output);
    return await new Promise<RunProcess>((resolve, reject) => {
      let child: ChildProcess;
      try {
        const [file, args] = SURVIVES_AGENT
          ? ["/bin/sh", ["-c", SHIM, "ingest-agent-run", files.status, command, ...spec.args]]
          : [command, spec.args];
        child = spawn(file, args, {
          cwd: spec.cwd,
          env: spec.env,
          detached: true, // setsid(): own session and process group, pgid = pid
          stdio: ["ignore", out, out],
        });
      } catch (err) {
        reject(startFailed(spec.command, err));
        return;
      }
      child.once("error", (err) => reject(startFailed(spec.command, err)));
      child.once("spawn", () => {
        const exited = new Promise<ProcessExit>((r) =>
          child.once("exit", (code, signal) => r(signal ? { code, signal } : fromStatus(code)))
        );
        resolve(new RunProcess(child.pid!, exited, files, onLine, backpressure));
      });
    }).finally(() => closeSync(out));
  }

  /**
   * A run started by an earlier agent whose group leader is still `pgid` with `startTime`: its
   * exit is read from the status file once the leader is gone (both null when none was written).
   */
  static attach(
    group: { pgid: number; startTime: string },
    files: RunFiles,
    onLine: LineSink,
    backpressure?: Backpressure,
  ): RunProcess {
    const exited = (async () => {
      while (groupLeaderRunning(group.pgid, group.startTime)) await sleep(ATTACH_POLL_MS);
      return await readExitStatus(files.status) ?? { code: null, signal: null };
    })();
    return new RunProcess(group.pgid, exited, files, onLine, backpressure);
  }

  /** Sends a signal to the whole process group; a group that is gone is not an error. */
  signalGroup(signal: NodeJS.Signals): boolean {
    try {
      // Windows has no groups: the CLI itself (started without the shim) is the only target.
      process.kill(SURVIVES_AGENT ? -this.pid : this.pid, signal);
      return true;
    } catch {
      return false;
    }
  }

  /** SIGTERM to the group, wait up to graceMs, then SIGKILL; resolves with the exit. */
  async stop(graceMs: number): Promise<ProcessExit> {
    this.signalGroup("SIGTERM");
    const exit = await Promise.race([this.exited, sleep(graceMs).then(() => undefined)]);
    if (exit) return exit;
    this.signalGroup("SIGKILL");
    return this.exited;
  }
}

/** The exit the shim recorded, or undefined when it wrote none (it was killed, or still runs). */
// deno-lint-ignore require-await -- a Promise, as its callers expect
export async function readExitStatus(file: string): Promise<ProcessExit | undefined> {
  let text: string | undefined;
  try {
    text = readFileSync(file, "utf8"); // a few bytes, local
  } catch {
    // not written (yet): undefined
  }
  const rc = Number(text?.trim());
  return text !== undefined && Number.isInteger(rc) ? fromStatus(rc) : undefined;
}

/** A shell's status: 128 + n is "killed by signal n", as the shell reports it. */
function fromStatus(rc: number | null): ProcessExit {
  if (rc !== null && rc > 128) {
    const name = Object.entries(os.constants.signals).find(([, n]) => n === rc - 128)?.[0];
    if (name) return { code: null, signal: name as NodeJS.Signals };
  }
  return { code: rc, signal: null };
}

/** The CLI's path as the shim will find it; CLI_START_FAILED when it cannot be run. */
export function resolveCommand(command: string, searchPath: string, cwd: string): string {
  const candidates = command.includes("/")
    ? [path.resolve(cwd, command)]
    : searchPath.split(path.delimiter).filter(Boolean).map((dir) => path.join(dir, command));
  let denied: unknown;
  for (const file of candidates) {
    try {
      if (!statSync(file).isFile()) continue;
      accessSync(file, constants.X_OK);
      return file;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EACCES") denied = err;
    }
  }
  const error = denied ?? Object.assign(new Error("not found"), { code: "ENOENT" });
  throw startFailed(command, error);
}

function startFailed(command: string, err: unknown): AgentError {
  const code = (err as NodeJS.ErrnoException).code;
  const why = code === "ENOENT"
    ? "not found (set ingestion.datahub_command to the datahub CLI's path, or put it on PATH)"
    : code === "EACCES"
    ? "not executable (permission denied)"
    : (err as Error).message;
  return new AgentError("CLI_START_FAILED", `cannot start '${command}': ${why}`, { cause: err });
}

/** Re-exported: the one sleep of the agent works for any duration (timers.ts). */
export { sleep };
