/**
 * run/ owns one request's run: preparation (prepare.ts: recipe, secrets, environment), the
 * process group (process.ts), output capture and run.log (run_log.ts), masking (redact.ts),
 * progress and lease (reporter.ts), and the terminal report (finish.ts, summary.ts). It may
 * import state/, gms/ and below; never pool/.
 *
 * The life of one claimed request, from preparation to exactly one terminal result:
 *
 *   prepare (task → command line, recipe, secrets, private run directory)
 *   → start the CLI in its own process group
 *   → heartbeats (progress + lease) until it exits, is cancelled or times out
 *   → summary report → terminal result → clean up (the recipe file never outlives the run)
 *
 * Whatever happens (bad recipe, missing secret, unknown task, CLI not found, crash of a helper),
 * `run()` never throws and ends in one terminal status, unless the request was fenced (someone
 * else changed its result), in which case we write nothing more.
 */
import { rm, stat } from "node:fs/promises";
import path from "node:path";
import type { AgentConfig } from "../config/config.ts";
import { AgentError, coerceError } from "../errors.ts";
import type { GmsApi } from "../gms/client.ts";
import { type Identity, ownerLine } from "../identity.ts";
import type { Logger } from "../observe/log.ts";
import type { RequestInput, RequestState, TerminalStatus } from "../request.ts";
import type { Outbox } from "../state/outbox.ts";
import { processStartTime } from "../state/procs.ts";
import type { RunRecord, StateDir } from "../state/state_dir.ts";
import { longTimeout } from "../timers.ts";
import {
  type CancelReason,
  cancelStatus,
  exitOutcome,
  leaseLostNote,
  progressReport,
  readReportFile,
  terminalValue,
} from "./finish.ts";
import { prepareRun, runDirName } from "./prepare.ts";
import { type ProcessExit, RunProcess, sleep } from "./process.ts";
import { Redactor } from "./redact.ts";
import { Reporter } from "./reporter.ts";
import { RunLog } from "./run_log.ts";
import type { Note } from "./summary.ts";

export type { CancelReason } from "./finish.ts";
export {
  parseExtraEnv,
  parseJsonList,
  RUN_MARKER_ENV,
  runDirName,
  SUPPORTED_TASKS,
} from "./prepare.ts";

/** Bounds of a RUNNING progress report (every write is a stored aspect version). */
export const PROGRESS_HEAD_CHARS = 512;
export const PROGRESS_TAIL_CHARS = 2560;

export interface JobDeps {
  config: AgentConfig;
  gms: Pick<GmsApi, "writeResult" | "readRequest" | "secretValues">;
  identity: Identity;
  log: Logger;
  /** Agent-wide redactor: every secret resolved for a run is added, so no log line shows it. */
  redactor: Redactor;
  env: Record<string, string | undefined>;
  /** Journal of claimed runs (crash recovery). */
  state: StateDir;
  /** Terminal results go here: saved durably, then delivered with retries. */
  outbox: Outbox;
}

export interface ClaimedRequest {
  request: RequestState & { input: RequestInput };
  version: string;
  startTimeMs: number;
  /** Our fencing token for this request. */
  token: string;
}

export class Job {
  readonly urn: string;
  readonly id: string;
  readonly task: string;
  readonly startTimeMs: number;
  readonly #deps: JobDeps;
  readonly #input: RequestInput;
  readonly #reporter: Reporter;
  readonly #notes: Note[] = [];
  readonly #redactor = new Redactor();
  readonly #log: Logger;
  #cancel: CancelReason | undefined;
  #cancelledBy: string | undefined;
  #process: RunProcess | undefined;
  #runLog: RunLog | undefined;
  #timeoutLimit: string | undefined;
  /** Set when the CLI exited: a cancel after that changes nothing. */
  #exited = false;
  #status: TerminalStatus | undefined;
  #sourceType: string | undefined;
  #leaseLostAfterMs: number | undefined;
  readonly #runDir: string;
  readonly #token: string;
  #record: RunRecord;

  constructor(deps: JobDeps, claimed: ClaimedRequest) {
    this.#deps = deps;
    this.urn = claimed.request.urn;
    this.id = claimed.request.id;
    this.#input = claimed.request.input;
    this.task = this.#input.task;
    this.startTimeMs = claimed.startTimeMs;
    this.#log = deps.log.with({ urn: this.urn, task: this.task });
    this.#runDir = path.join(deps.config.agent.workDir, runDirName(this.id));
    this.#token = claimed.token;
    this.#reporter = new Reporter({
      gms: deps.gms,
      urn: this.urn,
      identity: deps.identity,
      token: claimed.token,
      startTimeMs: claimed.startTimeMs,
      version: claimed.version,
      leaseTtlMs: deps.config.agent.leaseTtlMs,
      log: deps.log,
    });
    this.#record = {
      urn: this.urn,
      id: this.id,
      instance: deps.identity.instanceId,
      task: this.task,
      runDir: this.#runDir,
      startTimeMs: this.startTimeMs,
      token: claimed.token,
      version: claimed.version,
    };
  }

  /** Read by the agent and its live state: terminal status (undefined while running or when
   * fenced), the CLI's pid, the recipe's source type, when the run last printed a line. */
  get status(): TerminalStatus | undefined {
    return this.#status;
  }
  get pid(): number | undefined {
    return this.#process?.pid;
  }
  get sourceType(): string | undefined {
    return this.#sourceType;
  }
  get lastOutputAt(): number | undefined {
    return this.#runLog?.lastLineAt;
  }

  get cancelReason(): CancelReason | undefined {
    return this.#cancel;
  }

  /** Stops the run (TERM → grace → KILL of its process group); the first reason wins. */
  cancel(reason: CancelReason, by?: string, at?: number): void {
    if (this.#cancel || this.#exited) return;
    this.#cancel = reason;
    // Journaled, so that a restart reports the run as what it was stopped for.
    this.#journal({ cancel: reason });
    this.#cancelledBy = [by ? `by ${by}` : "", at ? `at ${new Date(at).toISOString()}` : ""].filter(
      Boolean,
    ).join(" ");
    this.#log.info("cancelling run", { reason, by });
    void this.#process?.stop(this.#deps.config.agent.cancelGraceMs);
  }

  /** SIGKILL to the run's process group, now (the agent is exiting at once). */
  kill(): void {
    this.#process?.signalGroup("SIGKILL");
  }

  /** Updates the journal entry (best effort: the entry written at start already protects us). */
  #journal(change: Partial<RunRecord>): void {
    this.#record = { ...this.#record, ...change };
    void this.#deps.state.saveRun(this.#record).catch((err) =>
      this.#log.warn("cannot update the run's journal entry", { error: err })
    );
  }

  #cancelDetails() {
    return {
      cancel: this.#cancel,
      cancelledBy: this.#cancelledBy,
      timeoutLimit: this.#timeoutLimit,
      leaseLostAfterMs: this.#leaseLostAfterMs,
    };
  }

  #note(level: Note["level"], message: string): void {
    this.#notes.push({ at: Date.now(), level, message: this.#mask(message) });
  }

  #mask = (text: string): string => this.#deps.redactor.mask(this.#redactor.mask(text));

  /** Runs the request to its terminal result. Never throws. */
  async run(): Promise<void> {
    const runDir = this.#runDir;
    let status: TerminalStatus = "FAILURE";
    let structured: string | undefined;
    let reportFileText: string | undefined;
    // Heartbeats run from the claim on: preparation (secret retries) can take minutes.
    let beats: { stop(): Promise<void> } | undefined;
    try {
      await this.#deps.state.saveRun(this.#record);
      beats = this.#heartbeats();
      this.#note("INFO", `Starting execution for task with name=${this.task}`);
      this.#note("INFO", `Claimed by ingest-agent instance ${this.#deps.identity.instanceId}`);
      const exit = await this.#execute(runDir);
      if (exit) {
        ({ structured, text: reportFileText } = await readReportFile(
          path.join(runDir, "report.json"),
        ));
        status = exitOutcome(this.task, exit, this.#cancelDetails(), (l, m) => this.#note(l, m));
      } else {
        status = cancelStatus(this.#cancel) ?? "FAILURE";
        if (this.#cancel === "lease") this.#note("ERROR", leaseLostNote(this.#leaseLostAfterMs));
      }
    } catch (err) {
      const e = coerceError(err);
      status = cancelStatus(this.#cancel) ?? "FAILURE";
      if (!(status !== "FAILURE" && e instanceof AgentError && e.code === "CLI_START_FAILED")) {
        this.#note("ERROR", e instanceof AgentError ? e.message : `Internal error: ${e.message}`);
      }
      if (!(e instanceof AgentError)) {
        this.#log.error("run failed with an internal error", { error: e });
      }
    }
    await beats?.stop();
    // The recipe (secrets in clear) is gone before anyone can see the run as finished.
    await this.#removeRunFiles(runDir);
    try {
      await this.#finish(status, structured, reportFileText);
    } catch (err) {
      // The journal still holds the run: the next start closes it (see recovery.ts).
      this.#log.error("could not record the run's result", { error: err, status });
    } finally {
      await this.#cleanup(runDir);
    }
  }

  /** Prepares and runs the CLI; resolves its exit, or undefined if cancelled before it started. */
  async #execute(runDir: string): Promise<ProcessExit | undefined> {
    const { config } = this.#deps;
    const prepared = await prepareRun({
      config,
      gms: this.#deps.gms,
      env: this.#deps.env,
      agentRedactor: this.#deps.redactor,
      runRedactor: this.#redactor,
      task: this.task,
      id: this.id,
      input: this.#input,
      token: this.#token,
      runDir,
      note: (level, message) => this.#note(level, message),
      journalMasks: (masks) => this.#journal({ masks }),
      cancelled: () => this.#cancel !== undefined,
    });
    if (!prepared) return undefined;
    const { command: cli, args: argv, env, sourceType: type, debug } = prepared;
    this.#sourceType = type;
    this.#runLog = new RunLog({ file: path.join(runDir, "run.log"), redact: this.#mask });
    const runLog = this.#runLog;
    this.#note("INFO", `Running: ${path.basename(cli)} ${argv.join(" ")}`);
    const proc = await RunProcess.start(
      { command: cli, args: argv, cwd: runDir, env },
      (line) => runLog.add(line),
      runLog.backpressure,
    );
    this.#process = proc;
    this.#record = { ...this.#record, pgid: proc.pid, pgidStart: processStartTime(proc.pid) };
    await this.#deps.state.saveRun(this.#record).catch((err) =>
      this.#log.warn("cannot journal the run's process group", { error: err })
    );
    this.#log.info("run started", { pid: proc.pid, source_type: type, debug });
    if (this.#cancel) void proc.stop(config.agent.cancelGraceMs);

    const timeoutMs = config.ingestion.timeoutsMs[type] ?? config.ingestion.taskTimeoutMs;
    const limitName = config.ingestion.timeoutsMs[type] !== undefined
      ? `ingestion.timeouts.${type}`
      : "ingestion.task_timeout";
    const timer = longTimeout(() => {
      this.#timeoutLimit = `${limitName} (${timeoutMs}ms)`;
      this.cancel("timeout");
    }, timeoutMs);
    try {
      const exit = await proc.exited;
      // Exited: no timer or signal may turn this run into TIMEOUT or CANCELLED any more.
      this.#exited = true;
      timer.clear();
      this.#record = { ...this.#record, exit };
      await this.#deps.state.saveRun(this.#record).catch(() => {});
      await proc.drained;
      return exit;
    } finally {
      timer.clear();
    }
  }

  /** Runs the heartbeat loop until stopped; fencing and a lost lease stop the run. */
  #heartbeats(): { stop(): Promise<void> } {
    const controller = new AbortController();
    const loop = (async () => {
      while (!controller.signal.aborted) {
        await sleep(this.#deps.config.agent.heartbeatIntervalMs, controller.signal);
        if (controller.signal.aborted) break;
        const outcome = await this.#reporter.heartbeat(this.#progressReport());
        if (outcome === "fenced") {
          this.cancel("fenced");
          break;
        }
        if (outcome === "lease-lost") {
          this.#leaseLostAfterMs = this.#reporter.sinceLastWriteMs;
          this.cancel("lease");
          break;
        }
      }
    })();
    return {
      stop: async () => {
        controller.abort();
        await loop;
      },
    };
  }

  #progressReport(): string {
    return progressReport({
      owner: ownerLine(this.#deps.identity),
      runLog: this.#runLog,
      lastLineAt: this.#runLog?.lastLineAt ?? this.startTimeMs,
      staleAfterMs: this.#deps.config.ingestion.staleOutputMs,
      head: PROGRESS_HEAD_CHARS,
      tail: PROGRESS_TAIL_CHARS,
    });
  }

  async #finish(
    status: TerminalStatus,
    structured: string | undefined,
    reportFileText: string | undefined,
  ): Promise<void> {
    if (this.#cancel === "fenced" || this.#reporter.fenced) {
      this.#log.warn("run ended; result not written (fenced)");
      await this.#deps.state.removeRun(this.id);
      return;
    }
    await this.#runLog?.close();
    const value = await terminalValue({
      task: this.task,
      id: this.id,
      status,
      startTimeMs: this.startTimeMs,
      notes: this.#notes,
      runLog: this.#runLog,
      runLogAt: `${this.#deps.identity.host}:${path.join(this.#runDir, "run.log")}`,
      structured,
      reportFileText,
      mask: this.#mask,
      note: (level, message) => this.#note(level, message),
    });
    this.#reporter.close();
    const { delivery } = await this.#deps.outbox.submit({
      urn: this.urn,
      id: this.id,
      instance: this.#deps.identity.instanceId,
      token: this.#token,
      value,
      version: this.#reporter.version,
      createdAt: Date.now(),
    });
    await this.#deps.state.removeRun(this.id);
    this.#status = status;
    this.#log.info("run finished", {
      status,
      duration_ms: value.durationMs,
      cancel_reason: this.#cancel,
    });
    void delivery.then((outcome) => {
      if (outcome === "delivered") this.#log.debug("result delivered", { status });
    });
  }

  /** Removes the recipe and the CLI's report file (already read). */
  async #removeRunFiles(runDir: string): Promise<void> {
    for (const name of ["recipe.json", "report.json"]) {
      await rm(path.join(runDir, name), { force: true }).catch(() => {});
    }
  }

  /** Removes the run directory except run.log (kept for operators; retention prunes it). */
  async #cleanup(runDir: string): Promise<void> {
    await this.#removeRunFiles(runDir);
    const kept = await stat(path.join(runDir, "run.log")).catch(() => undefined);
    if (!kept) await rm(runDir, { recursive: true, force: true }).catch(() => {});
  }
}
