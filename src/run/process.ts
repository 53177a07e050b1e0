/**
 * One OS process per run, in its own process group (session), so that cancel reaches every
 * descendant: SIGTERM to the group, a grace period, then SIGKILL to the group. Exit is detected
 * from the process itself ('exit'), never from its pipes, so a grandchild holding stdout open
 * cannot keep a finished run RUNNING (datahub#17397). Once the main process has exited, whatever
 * is left in its group is killed: a run leaves no orphans.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { Buffer } from "node:buffer";
import process from "node:process";
import { AgentError } from "../errors.ts";
import { sleep } from "../timers.ts";

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

/**
 * Called after each chunk of output: a promise means "stop reading until it resolves" (the log
 * file is behind). The pipe then fills and the CLI blocks on write, so memory stays flat however
 * fast it prints.
 */
export type Backpressure = () => Promise<void> | undefined;

export class RunProcess {
  readonly pid: number;
  readonly exited: Promise<ProcessExit>;
  readonly #child: ChildProcess;
  /** Resolves when both pipes are drained (or the drain window after exit ran out). */
  readonly drained: Promise<void>;

  private constructor(child: ChildProcess, onLine: LineSink, backpressure?: Backpressure) {
    this.#child = child;
    this.pid = child.pid!;
    const out = pipeLines(child.stdout!, (l) => onLine(l, "stdout"), backpressure);
    const err = pipeLines(child.stderr!, (l) => onLine(l, "stderr"), backpressure);
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
  static start(
    spec: ProcessSpec,
    onLine: LineSink,
    backpressure?: Backpressure,
  ): Promise<RunProcess> {
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
      child.once("spawn", () => resolve(new RunProcess(child, onLine, backpressure)));
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

/**
 * Splits a byte stream into lines, cutting lines over MAX_LINE_BYTES. Lines are cut from the
 * bytes and decoded one by one, so every line is a small string of its own: slicing a decoded
 * chunk instead would keep whole chunks alive through the tail's lines (V8 sliced strings).
 * A newline byte never occurs inside a multi-byte UTF-8 sequence, so this is encoding-safe.
 */
function pipeLines(
  stream: NodeJS.ReadableStream,
  onLine: (line: string) => void,
  backpressure?: Backpressure,
): Promise<void> {
  let rest: Buffer | undefined; // bytes of an unfinished line
  let dropping = false; // inside an over-long line whose head was already emitted
  const emit = (buf: Buffer, start: number, end: number) => {
    if (end > start && buf[end - 1] === 13) end--; // \r\n
    onLine(buf.toString("utf8", start, end));
  };
  const push = (chunk: Buffer) => {
    let buf = rest ? Buffer.concat([rest, chunk]) : chunk;
    rest = undefined;
    let start = 0;
    let nl: number;
    while ((nl = buf.indexOf(10, start)) >= 0) {
      if (dropping) dropping = false;
      else if (nl - start > MAX_LINE_BYTES) {
        onLine(buf.toString("utf8", start, start + MAX_LINE_BYTES) + TRUNCATED_MARK);
      } else emit(buf, start, nl);
      start = nl + 1;
    }
    if (start < buf.length) {
      if (dropping) return;
      if (buf.length - start > MAX_LINE_BYTES) {
        onLine(buf.toString("utf8", start, start + MAX_LINE_BYTES) + TRUNCATED_MARK);
        dropping = true;
        return;
      }
      buf = buf.subarray(start);
      rest = Buffer.from(buf); // a copy: do not pin the whole chunk
    }
  };
  return new Promise((resolve) => {
    stream.on("data", (chunk: Buffer) => {
      push(chunk);
      const wait = backpressure?.();
      if (wait) {
        stream.pause();
        void wait.then(() => stream.resume());
      }
    });
    const end = () => {
      if (rest && rest.length > 0 && !dropping) emit(rest, 0, rest.length);
      rest = undefined;
      resolve();
    };
    stream.once("end", end);
    stream.once("close", () => resolve());
    stream.once("error", () => resolve());
  });
}

/** Re-exported: the one sleep of the agent works for any duration (timers.ts). */
export { sleep };
