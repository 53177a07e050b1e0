/**
 * One OS process per run, in its own process group (session), so that cancel reaches every
 * descendant: SIGTERM to the group, a grace period, then SIGKILL to the group. Exit is detected
 * from the process itself ('exit'), never from its pipes, so a grandchild holding stdout open
 * cannot keep a finished run RUNNING (datahub#17397). Once the main process has exited, whatever
 * is left in its group is killed: a run leaves no orphans.
 */
import { type ChildProcess, spawn } from "node:child_process";
import process from "node:process";
import { AgentError } from "./errors.ts";

export interface ProcessSpec {
  command: string;
  args: string[];
  cwd: string;
  env: Record<string, string>;
}

export interface ProcessExit {
  /** Exit code, or null when killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Longest line kept; longer lines are cut and marked (as the Python executor does). */
export const MAX_LINE_BYTES = 4096;
export const TRUNCATED_MARK = " [...truncated]";

export type LineSink = (line: string, stream: "stdout" | "stderr") => void;

export class RunProcess {
  readonly pid: number;
  readonly exited: Promise<ProcessExit>;
  readonly #child: ChildProcess;
  /** Resolves when both pipes are drained (or the drain window after exit ran out). */
  readonly drained: Promise<void>;

  private constructor(child: ChildProcess, onLine: LineSink) {
    this.#child = child;
    this.pid = child.pid!;
    const out = pipeLines(child.stdout!, (l) => onLine(l, "stdout"));
    const err = pipeLines(child.stderr!, (l) => onLine(l, "stderr"));
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, signal) => {
        // Anything left in the group (daemonised grandchildren) dies with the run.
        this.signalGroup("SIGKILL");
        resolve({ code, signal });
      });
    });
    this.drained = this.exited.then(() =>
      Promise.race([Promise.all([out, err]).then(() => undefined), sleep(2000)]).then(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
      })
    );
  }

  /** Starts the process in a new session; rejects with CLI_START_FAILED if it cannot start. */
  static start(spec: ProcessSpec, onLine: LineSink): Promise<RunProcess> {
    return new Promise((resolve, reject) => {
      let child: ChildProcess;
      try {
        child = spawn(spec.command, spec.args, {
          cwd: spec.cwd,
          env: spec.env,
          detached: true, // setsid(): own session and process group, pgid = pid
          stdio: ["ignore", "pipe", "pipe"],
        });
      } catch (err) {
        reject(startFailed(spec.command, err));
        return;
      }
      child.once("error", (err) => reject(startFailed(spec.command, err)));
      child.once("spawn", () => resolve(new RunProcess(child, onLine)));
    });
  }

  /** Sends a signal to the whole process group; a group that is gone is not an error. */
  signalGroup(signal: NodeJS.Signals): boolean {
    try {
      process.kill(-this.pid, signal);
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

function startFailed(command: string, err: unknown): AgentError {
  const code = (err as NodeJS.ErrnoException).code;
  const why = code === "ENOENT"
    ? "not found (set ingestion.datahub_command to the datahub CLI's path, or put it on PATH)"
    : code === "EACCES"
    ? "not executable (permission denied)"
    : (err as Error).message;
  return new AgentError("CLI_START_FAILED", `cannot start '${command}': ${why}`, { cause: err });
}

/** Splits a byte stream into lines, cutting lines over MAX_LINE_BYTES. */
function pipeLines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): Promise<void> {
  const decoder = new TextDecoder();
  let partial = "";
  let dropping = false; // inside an over-long line whose head was already emitted
  const push = (text: string) => {
    partial += text;
    let nl: number;
    while ((nl = partial.indexOf("\n")) >= 0) {
      const line = partial.slice(0, nl).replace(/\r$/, "");
      partial = partial.slice(nl + 1);
      if (dropping) dropping = false;
      else onLine(line);
    }
    if (partial.length > MAX_LINE_BYTES) {
      if (!dropping) onLine(partial.slice(0, MAX_LINE_BYTES) + TRUNCATED_MARK);
      dropping = true;
      partial = "";
    }
  };
  return new Promise((resolve) => {
    stream.on("data", (chunk: Uint8Array) => push(decoder.decode(chunk, { stream: true })));
    const end = () => {
      push(decoder.decode());
      if (partial && !dropping) onLine(partial);
      partial = "";
      resolve();
    };
    stream.once("end", end);
    stream.once("close", () => resolve());
    stream.once("error", () => resolve());
  });
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
