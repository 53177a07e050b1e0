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
import { rm } from "node:fs/promises";
import path from "node:path";
import type { AgentConfig } from "../config/config.ts";
import { AgentError, coerceError } from "../errors.ts";
import type { GmsApi } from "../gms/client.ts";
import { type Identity, ownerLine } from "../identity.ts";
import type { Logger } from "../observe/log.ts";
import type { RequestInput, RequestState, TerminalStatus } from "../request.ts";
import type { Outbox } from "../state/outbox.ts";
import type { RunRecord, StateDir } from "../state/state_dir.ts";
import { longTimeout } from "../timers.ts";
import {
  cancelledBy,
  type CancelReason,
  cancelStatus,
  exitOutcome,
  finishedFields,
  progressReport,
  readReportFile,
  removeRunFiles,
  stoppedNote,
  terminalValue,
} from "./finish.ts";
import { prepareRun, runDirName } from "./prepare.ts";
import { type AdoptedRun, attachCli, startCli } from "./execution.ts";
import { MemoryWatch } from "./memory.ts";
import type { GroupChild } from "./installer.ts";
import type { ProcessExit, RunProcess } from "./process.ts";
import { Redactor } from "./redact.ts";
import { progressLoop, Reporter } from "./reporter.ts";
import { RunLog } from "./run_log.ts";
import type { Note } from "./summary.ts";

export type { CancelReason } from "./finish.ts";

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
  /** Before the CLI starts: the request that runs instead of this one, if any (schedule.ts). */
  beforeStart?: () => Promise<string | undefined>;
}

export interface ClaimedRequest {
  request: RequestState & { input: RequestInput };
  /** The result version we wrote; undefined: unknown (the first heartbeat reads it). */
  version: string | undefined;
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
  #process: GroupChild | undefined;
  #runLog: RunLog | undefined;
  #timeoutLimit: string | undefined;
  /** Set when the CLI exited: a cancel after that changes nothing. */
  #exited = false;
  #status: TerminalStatus | undefined;
  #sourceType: string | undefined;
  #leaseLostAfterMs: number | undefined;
  #memory: MemoryWatch | undefined;
  readonly #runDir: string;
  readonly #token: string;
  #record: RunRecord;
  /** Set for a run re-adopted from the journal: it is attached to, not started. */
  readonly #adopted: AdoptedRun | undefined;

  /** A run started by an earlier agent (re-adopted after a restart): the same life from here. */
  static adopt(deps: JobDeps, run: AdoptedRun): Job {
    const input = { task: run.task, args: {} } as unknown as RequestInput;
    const request = { urn: run.urn, id: run.id, input, result: undefined, signal: undefined };
    const claimed = { request, version: run.version, startTimeMs: run.startTimeMs };
    return new Job(deps, { ...claimed, token: run.token }, run);
  }

  constructor(deps: JobDeps, claimed: ClaimedRequest, adopted?: AdoptedRun) {
    this.#deps = deps;
    this.urn = claimed.request.urn;
    this.id = claimed.request.id;
    this.#input = claimed.request.input;
    this.task = this.#input.task;
    this.startTimeMs = claimed.startTimeMs;
    this.#log = deps.log.with({ urn: this.urn, task: this.task });
    this.#runDir = path.join(deps.config.agent.workDir, runDirName(this.id));
    this.#token = claimed.token;
    // gms, identity, log; token, startTimeMs, version (of the claim).
    this.#reporter = new Reporter({
      ...deps,
      ...claimed,
      urn: this.urn,
      leaseTtlMs: deps.config.agent.leaseTtlMs,
    });
    this.#adopted = adopted;
    this.#sourceType = adopted?.adoptable.sourceType;
    this.#notes.push(...adopted?.adoptable.notes ?? []);
    // A cancel the last agent had begun goes on (the group is stopped again once attached).
    this.#cancel = adopted?.cancel;
    if (adopted?.cancel === "timeout") this.#timeoutLimit = adopted.adoptable.timeoutLimit;
    this.#record = adopted ?? {
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
    this.#cancelledBy = cancelledBy(by, at);
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
      memory: this.#memory?.summary(),
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
      if (this.#adopted) {
        this.#note("INFO", `Re-adopted by ingest-agent instance ${this.#deps.identity.instanceId}`);
        this.#record = { ...this.#record, instance: this.#deps.identity.instanceId };
      } else {
        this.#note("INFO", `Starting execution for task with name=${this.task}`);
        this.#note("INFO", `Claimed by ingest-agent instance ${this.#deps.identity.instanceId}`);
      }
      await this.#deps.state.saveRun(this.#record);
      // Progress and lease on their own cadence (reporter.ts); heartbeat_interval drives KILLs.
      beats = progressLoop({
        reporter: this.#reporter,
        report: () =>
          progressReport({
            owner: ownerLine(this.#deps.identity),
            runLog: this.#runLog,
            lastLineAt: this.#runLog?.lastLineAt ?? this.startTimeMs,
            staleAfterMs: this.#deps.config.ingestion.staleOutputMs,
          }),
        onFenced: () => this.cancel("fenced"),
        onLeaseLost: (ms) => {
          this.#leaseLostAfterMs = ms;
          this.cancel("lease");
        },
      });
      const exit = this.#adopted ? await this.#attach(this.#adopted) : await this.#execute(runDir);
      if (exit) {
        ({ structured, text: reportFileText } = await readReportFile(
          path.join(runDir, "report.json"),
        ));
        status = exitOutcome(this.task, exit, this.#cancelDetails(), (l, m) => this.#note(l, m));
      } else {
        status = cancelStatus(this.#cancel) ?? "FAILURE";
        const stopped = stoppedNote(this.#cancelDetails());
        if (stopped) this.#note(stopped.level, stopped.message);
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
    await removeRunFiles(runDir);
    try {
      await this.#finish(status, structured, reportFileText);
    } catch (err) {
      // The journal still holds the run: the next start closes it (see recovery.ts).
      this.#log.error("could not record the run's result", { error: err, status });
    } finally {
      // run.log stays for operators (retention prunes it); a run that had none leaves nothing.
      if (!this.#runLog) await rm(runDir, { recursive: true, force: true }).catch(() => {});
    }
  }

  /** Prepares and runs the CLI; resolves its exit, or undefined if cancelled before it started. */
  async #execute(runDir: string): Promise<ProcessExit | undefined> {
    const { config } = this.#deps;
    const winner = await this.#deps.beforeStart?.();
    if (winner) return void this.cancel("duplicate", winner); // nothing prepared, nothing run
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
      setup: (section) => this.#journal({ setup: this.#mask(section) }),
      child: (child) => (this.#process = child),
      timedOut: (limit) => (this.#timeoutLimit = limit) && this.cancel("timeout"),
    });
    if (!prepared) return undefined;
    const { command: cli, args: argv, sourceType: type, debug } = prepared;
    this.#sourceType = type;
    this.#runLog = new RunLog({ file: path.join(runDir, "run.log"), redact: this.#mask });
    this.#note("INFO", `Running: ${path.basename(cli)} ${argv.join(" ")}`);
    const { proc, adoptable } = await startCli({
      prepared,
      runDir,
      runLog: this.#runLog,
      notes: this.#notes,
    });
    this.#record = { ...this.#record, pgid: proc.pid, pgidStart: proc.startTime, adoptable };
    await this.#deps.state.saveRun(this.#record).catch((err) =>
      this.#log.warn("cannot journal the run's process group", { error: err })
    );
    this.#log.info("run started", { pid: proc.pid, source_type: type, debug });
    return await this.#supervise(proc, adoptable);
  }

  /** Attaches to a re-adopted run (execution.ts `attachCli`). */
  async #attach(run: AdoptedRun): Promise<ProcessExit> {
    this.#redactor.addPatterns(run.masks ?? []);
    const { proc, runLog } = await attachCli(run, this.#mask);
    this.#runLog = runLog;
    this.#log.info("run re-adopted", { pid: proc.pid, source_type: run.adoptable.sourceType });
    return await this.#supervise(proc, run.adoptable);
  }

  /** Watches a started (or attached) CLI until it exits: cancel, timeout, exit status. */
  async #supervise(
    proc: RunProcess,
    limits: { deadlineMs: number; timeoutLimit: string },
  ): Promise<ProcessExit> {
    this.#process = proc;
    if (this.#cancel) void proc.stop(this.#deps.config.agent.cancelGraceMs);
    const memory = this.#memory = new MemoryWatch(proc.pid, this.#deps.config.agent, this.#log, {
      peakBytes: this.#record.peakRssBytes,
      onExceed: () => this.cancel("memory"),
      onPeak: (peakRssBytes) => this.#journal({ peakRssBytes }),
    });
    const timer = longTimeout(() => {
      this.#timeoutLimit = limits.timeoutLimit;
      this.cancel("timeout");
    }, Math.max(0, limits.deadlineMs - Date.now()));
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
      memory.stop();
    }
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
    const peak = this.#memory?.peakBytes;
    const value = await terminalValue(this, {
      status,
      notes: this.#notes,
      runLog: this.#runLog,
      runLogAt: `${this.#deps.identity.host}:${path.join(this.#runDir, "run.log")}`,
      structured,
      reportFileText,
      mask: this.#mask,
      peakRssBytes: peak,
      setup: this.#record.setup,
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
    this.#log.info("run finished", finishedFields(status, value, this.#cancel, this.#notes, peak));
    void delivery.then((outcome) => {
      if (outcome === "delivered") this.#log.debug("result delivered", { status });
    });
  }
}
