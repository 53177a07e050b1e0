/**
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
import { readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import type { AgentConfig } from "./config.ts";
import { AgentError, coerceError } from "./errors.ts";
import type { GmsApi } from "./gms/client.ts";
import { type Identity, ownerLine } from "./identity.ts";
import type { Logger } from "./log.ts";
import { type ProcessExit, RunProcess, sleep } from "./process.ts";
import { processStartTime } from "./procs.ts";
import { longTimeout } from "./timers.ts";
import {
  hasSink,
  parseRecipe,
  secretNames,
  sourceType,
  substituteSecrets,
  withRunId,
} from "./recipe.ts";
import { MIN_SECRET_LENGTH, Redactor } from "./redact.ts";
import type { Outbox } from "./outbox.ts";
import { Reporter } from "./reporter.ts";
import type { RunRecord, StateDir } from "./state.ts";
import type { RequestInput, RequestState, TerminalStatus } from "./request.ts";
import { RunLog } from "./run_log.ts";
import { freshRunDir } from "./private_fs.ts";
import { credentialVariables, envSecretRefusal, runEnvironment } from "./run_env.ts";
import { resolveSecrets } from "./secrets.ts";
import { type Note, summaryText, terminalResult } from "./summary.ts";

/** Why a run was stopped before it ended by itself. Values appear in reports: keep them stable. */
export type CancelReason = "user" | "timeout" | "shutdown" | "fenced" | "lease";

/** Set in every CLI's environment (value: the claim's token), so that recovery can find a run's
 * processes even when the agent died before it journaled the process group. */
export const RUN_MARKER_ENV = "INGEST_AGENT_RUN";

export const SUPPORTED_TASKS = ["RUN_INGEST", "TEST_CONNECTION"] as const;

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
        status = this.#statusOf(exit);
      } else {
        status = this.#cancelStatus() ?? "FAILURE";
        if (this.#cancel === "lease") this.#note("ERROR", leaseLostNote(this.#leaseLostAfterMs));
      }
    } catch (err) {
      const e = coerceError(err);
      status = this.#cancelStatus() ?? "FAILURE";
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
    if (!(SUPPORTED_TASKS as readonly string[]).includes(this.task)) {
      throw new AgentError(
        "TASK_UNSUPPORTED",
        `Unsupported task '${this.task}': ingest-agent runs ${SUPPORTED_TASKS.join(" and ")}`,
      );
    }
    const args = this.#input.args;
    const recipe = parseRecipe(args.recipe ?? "");
    const type = sourceType(recipe);
    const names = secretNames(recipe);
    const withheld = credentialVariables(this.#deps.env, config.datahub);
    const prefix = config.ingestion.envSecretsPrefix;
    const secrets = await resolveSecrets(
      names,
      this.#deps.gms,
      this.#deps.env,
      (name) => envSecretRefusal(name, withheld, prefix),
    );
    for (const [name, value] of secrets.values) this.#redactor.add(name, value);
    this.#deps.redactor.addAll(this.#redactor);
    for (const note of secrets.notes) this.#note("INFO", note);
    if (names.length > 0) {
      this.#note("INFO", `Resolved ${names.length} secret reference(s): ${names.join(", ")}`);
    }
    for (const name of this.#redactor.tooShort) {
      this.#note(
        "INFO",
        `Secret '${name}' is shorter than ${MIN_SECRET_LENGTH} characters, so it is not masked in logs and reports`,
      );
    }
    const extraEnv = parseExtraEnv(args.extra_env_vars);
    // extra_env_vars often carry credentials (AWS keys, passwords): masked like secrets.
    for (const [name, value] of Object.entries(extraEnv)) {
      this.#redactor.add(`extra_env_vars.${name}`, value);
    }
    this.#deps.redactor.addAll(this.#redactor);
    // Journaled (0600, removed with the run) so that an agent restarted after a crash can still
    // mask this run's secrets in what it reports.
    this.#journal({ masks: this.#redactor.patterns() });
    for (const key of ["extra_pip_requirements", "extra_pip_plugins"] as const) {
      const list = parseJsonList(key, args[key]);
      if (list.length > 0) {
        this.#note(
          "INFO",
          `${key} ${
            JSON.stringify(list)
          } ignored: the preinstalled runtime uses the installed datahub CLI as is`,
        );
      }
    }
    if (this.#cancel) return undefined;

    const finalRecipe = withRunId(substituteSecrets(recipe, secrets.values), this.id);
    await freshRunDir(runDir);
    const recipePath = path.join(runDir, "recipe.json");
    const reportPath = path.join(runDir, "report.json");
    await writeFile(recipePath, JSON.stringify(finalRecipe), { mode: 0o600, flag: "wx" });

    const debug = /^true$/i.test(args.debug_mode ?? args.debugMode ?? "");
    const cli = config.ingestion.datahubCommand;
    const argv = this.task === "TEST_CONNECTION"
      ? ["ingest", "-c", recipePath, "--test-source-connection", "--report-to", reportPath]
      : [
        ...(debug ? ["--debug"] : []),
        "ingest",
        "run",
        "-c",
        recipePath,
        "--report-to",
        reportPath,
      ];
    const env = runEnvironment(this.#deps.env, {
      passEnv: config.ingestion.passEnv,
      extra: extraEnv,
      ...(hasSink(recipe) ? {} : { gms: this.#gmsEnv() }),
      withheld,
      marker: { name: RUN_MARKER_ENV, value: this.#token },
    });

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
    const log = this.#runLog;
    const lines = [ownerLine(this.#deps.identity)];
    if (!log || log.lines === 0) lines.push("No logs yet");
    else lines.push(log.excerpt(PROGRESS_HEAD_CHARS, PROGRESS_TAIL_CHARS));
    const last = log?.lastLineAt ?? this.startTimeMs;
    const silentMs = Date.now() - last;
    const staleAfter = this.#deps.config.ingestion.staleOutputMs;
    if (silentMs >= staleAfter) {
      // Rounded to the stale period, so a silent run does not cause a write every heartbeat.
      const since = new Date(last).toISOString();
      const minutes = Math.floor(silentMs / staleAfter) * Math.round(staleAfter / 1000);
      lines.push(
        `WARNING: These logs appear to be stale. No new logs have been received since ${since} (over ${minutes} seconds ago). ` +
          "However, the ingestion process still appears to be running and may complete normally.",
      );
    }
    return lines.join("\n");
  }

  /** Environment for a sink-less recipe: the CLI's default datahub-rest sink needs GMS and credentials. */
  #gmsEnv(): Record<string, string> {
    const { datahub } = this.#deps.config;
    const env: Record<string, string> = { DATAHUB_GMS_URL: datahub.server };
    if (datahub.systemClientId) {
      env.DATAHUB_SYSTEM_CLIENT_ID = datahub.systemClientId;
      env.DATAHUB_SYSTEM_CLIENT_SECRET = datahub.systemClientSecret;
    }
    if (datahub.token) env.DATAHUB_GMS_TOKEN = datahub.token;
    this.#note(
      "INFO",
      "The recipe has no sink: the CLI's default datahub-rest sink writes to this agent's GMS",
    );
    return env;
  }

  #cancelStatus(): TerminalStatus | undefined {
    switch (this.#cancel) {
      case "user":
        return "CANCELLED";
      case "timeout":
        return "TIMEOUT";
      case "shutdown":
      case "lease":
        return "ABORTED";
      default:
        return undefined;
    }
  }

  #statusOf(exit: ProcessExit): TerminalStatus {
    const cancelled = this.#cancelStatus();
    if (cancelled) {
      if (this.#cancel === "user") {
        this.#note(
          "INFO",
          `Ingestion task was cancelled${this.#cancelledBy ? ` ${this.#cancelledBy}` : ""}`,
        );
      } else if (this.#cancel === "timeout") {
        this.#note("ERROR", `The run exceeded ${this.#timeoutLimit} and was stopped`);
      } else if (this.#cancel === "lease") {
        this.#note("ERROR", leaseLostNote(this.#leaseLostAfterMs));
      } else {
        this.#note("ERROR", "The run was stopped because the agent is shutting down");
      }
      return cancelled;
    }
    const what = this.task === "TEST_CONNECTION"
      ? "'datahub ingest --test-source-connection'"
      : "'datahub ingest'";
    if (exit.code === 0) {
      this.#note("INFO", `Successfully executed ${what}`);
      return "SUCCESS";
    }
    if (exit.signal === "SIGKILL" || exit.code === 137) {
      this.#note(
        "ERROR",
        exit.signal
          ? `The ingestion process was killed by signal ${exit.signal} likely because it ran out of memory. You can resolve this issue by allocating more memory to the machine or container running ingest-agent.`
          : "The ingestion process was terminated with exit code 137, likely because it ran out of memory. You can resolve this issue by allocating more memory to the machine or container running ingest-agent.",
      );
    } else if (exit.signal) {
      this.#note("ERROR", `Failed to execute ${what}: killed by signal ${exit.signal}`);
    } else {
      this.#note("INFO", `Failed to execute ${what}, exit code ${exit.code}`);
    }
    return "FAILURE";
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
    let logs = this.#runLog ? this.#runLog.text() : "";
    if (reportFileText !== undefined) {
      this.#note("ERROR", "The CLI's report file is not JSON; its text is kept in the logs below");
      logs += `\n~~~~ Report file (not JSON) ~~~~\n${this.#mask(reportFileText)}`;
    }
    if (this.#runLog) {
      const where = `${this.#deps.identity.host}:${path.join(this.#runDir, "run.log")}`;
      this.#note(
        "INFO",
        this.#runLog.omitted > 0
          ? `${this.#runLog.omitted} log lines are omitted below; the full log is kept at ${where}`
          : `The full log is kept at ${where}`,
      );
    }
    const maskedStructured = structured === undefined ? undefined : this.#mask(structured);
    const summary = this.#mask(summaryText({
      task: this.task,
      status,
      execId: this.id,
      notes: this.#notes,
      structured: maskedStructured,
      logs,
    }));
    const value = terminalResult({
      task: this.task,
      status,
      execId: this.id,
      startTimeMs: this.startTimeMs,
      report: summary,
      structured: maskedStructured,
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

/** What a run stopped for lack of a lease says. */
function leaseLostNote(afterMs: number | undefined): string {
  const after = afterMs === undefined ? "" : ` for ${Math.round(afterMs / 1000)} s`;
  return `GMS did not accept a heartbeat${after}, longer than the lease (agent.lease_ttl) allows, so the run was stopped: ` +
    "another agent of the pool may already have closed this request, and a request must never run twice. Run it again.";
}

/** The run directory's name under work_dir. */
export function runDirName(id: string): string {
  return `run-${id.replace(/[^\w.-]/g, "_")}`;
}

/** Reads the CLI's report file: JSON → structured report; anything else → kept as text. */
async function readReportFile(file: string): Promise<{ structured?: string; text?: string }> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch {
    return {};
  }
  try {
    JSON.parse(text);
    return { structured: text };
  } catch {
    return { text };
  }
}

/** `extra_env_vars`: a JSON object string (SPEC §4.3); values coerced to strings. */
export function parseExtraEnv(raw: string | undefined): Record<string, string> {
  if (!raw || !raw.trim()) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new AgentError(
      "ARGUMENT_INVALID",
      'extra_env_vars is not valid JSON: expected an object such as {"NAME": "value"}',
    );
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new AgentError(
      "ARGUMENT_INVALID",
      'extra_env_vars must be a JSON object such as {"NAME": "value"}',
    );
  }
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(parsed)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) {
      throw new AgentError(
        "ARGUMENT_INVALID",
        `extra_env_vars has an invalid variable name ${JSON.stringify(k)}`,
      );
    }
    env[k] = typeof v === "string"
      ? v
      : typeof v === "boolean"
      ? String(v).toLowerCase()
      : JSON.stringify(v);
  }
  return env;
}

/** `extra_pip_requirements` / `extra_pip_plugins`: a JSON array string; "" means none. */
export function parseJsonList(name: string, raw: string | undefined): string[] {
  if (!raw || !raw.trim()) return [];
  try {
    const parsed = JSON.parse(raw);
    if (Array.isArray(parsed)) return parsed.map(String);
  } catch { /* reported below */ }
  throw new AgentError(
    "ARGUMENT_INVALID",
    `${name} must be a JSON array of strings such as ["name==1.0"]`,
  );
}
