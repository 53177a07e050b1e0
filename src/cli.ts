/**
 * The command line: `run` (default), `once`, `validate`, `doctor`, `--version`, `--help`. Maps every outcome to an
 * exit code in one place: 0 clean stop, 2 bad usage or configuration, 1 any other fatal error.
 * Also owns the process's signals: first SIGTERM/SIGINT drains, the second cancels runs now, the
 * third exits at once (repeats within 2 s count as one).
 */
import process from "node:process";
import { Agent } from "./pool/agent.ts";
import { doctor } from "./commands/doctor.ts";
import { OnceWork } from "./commands/once.ts";
import { unknownArgument, validate } from "./commands/validate.ts";
import { cliProblem, RuntimeCheck } from "./run/runtime_check.ts";
import { platformLimits, sleep } from "./run/process.ts";
import { type AgentConfig, ConfigError, loadConfig } from "./config/config.ts";
import { AgentError, isRetryable } from "./errors.ts";
import { GmsClient } from "./gms/client.ts";
import { newIdentity } from "./identity.ts";
import { createLogger, type Logger } from "./observe/log.ts";
import { startObservability } from "./commands/observability.ts";
import { Outbox } from "./state/outbox.ts";
import { ensurePrivateDir } from "./state/private_fs.ts";
import { recoverRuns } from "./pool/recovery.ts";
import { Redactor } from "./run/redact.ts";
import { StateDir } from "./state/state_dir.ts";
import { VERSION } from "./version.ts";
import { passwordOf, withoutUserinfo } from "./gms/transport.ts";

const USAGE = `ingest-agent ${VERSION}: runs DataHub ingestion requests close to the data.

Usage:
  ingest-agent [run] --config <file>     poll GMS and run requests until SIGTERM/SIGINT
  ingest-agent once --config <file>      run every request pending at start, then exit
                                         (exit 0: all succeeded or none pending; 1 otherwise)
  ingest-agent validate --config <file>  check a configuration file; print every problem
  ingest-agent doctor --config <file>    check GMS, credentials, secrets, the datahub CLI, the
                                         directories, the lock, proxy and clock; one line each
  ingest-agent --version | --help

The configuration is YAML: the native form (see agent.yml) or a DataHub Actions executor
pipeline file. Strings may use \${VAR} and \${VAR:-default}.

Signals: the first SIGTERM/SIGINT stops claiming and lets runs finish (up to
agent.shutdown_timeout); the second cancels runs now; the third exits at once. A repeat
within 2 s of the previous one counts as the same signal.

Exit codes: 0 clean stop, 2 bad usage or configuration, 1 other fatal error.`;

export interface Io {
  out: (text: string) => void;
  err: (text: string) => void;
  env: Record<string, string | undefined>;
}

const defaultIo: Io = {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
  env: process.env,
};

interface Parsed {
  command: "run" | "once" | "validate" | "doctor" | "help" | "version";
  config?: string;
}

function parseArgs(args: string[]): Parsed {
  let command: Parsed["command"] | undefined;
  let config: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--help" || a === "-h" || a === "help") command = "help";
    else if (a === "--version" || a === "-V" || a === "version") command ??= "version";
    else if (a === "--config" || a === "-c") {
      config = args[++i];
      if (config === undefined) throw new AgentError("USAGE", `${a} needs a file path`);
    } else if (a.startsWith("--config=")) config = a.slice("--config=".length);
    else if (
      (a === "run" || a === "once" || a === "validate" || a === "doctor") && command === undefined
    ) {
      command = a;
    } else throw new AgentError("USAGE", unknownArgument(a));
  }
  return { command: command ?? "run", ...(config !== undefined ? { config } : {}) };
}

export async function main(args: string[], io: Io = defaultIo): Promise<number> {
  let parsed: Parsed;
  try {
    parsed = parseArgs(args);
  } catch (err) {
    io.err(`ingest-agent: ${(err as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  if (parsed.command === "help") {
    io.out(USAGE + "\n");
    return 0;
  }
  if (parsed.command === "version") {
    io.out(`ingest-agent ${VERSION}\n`);
    return 0;
  }
  const file = parsed.config ?? io.env.INGEST_AGENT_CONFIG;
  if (!file) {
    io.err(`ingest-agent: --config <file> is required\n\n${USAGE}\n`);
    return 2;
  }
  if (parsed.command === "doctor") return await doctor(file, io);
  let loaded;
  try {
    loaded = await loadConfig(file, { env: io.env });
  } catch (err) {
    if (err instanceof ConfigError) {
      io.err(err.issues.map((i) => `${i.path}: ${i.message}\n`).join(""));
      io.err(
        `ingest-agent: ${file}: ${err.issues.length} problem${err.issues.length > 1 ? "s" : ""}\n`,
      );
      return 2;
    }
    throw err;
  }
  if (parsed.command === "validate") return validate(file, loaded, io);
  return await serve(loaded.config, loaded.warnings, io, parsed.command);
}

/** `run` until a signal, or `once`: the requests pending at start (commands/once.ts). */
async function serve(
  config: AgentConfig,
  warnings: string[],
  io: Io,
  mode: "run" | "once",
): Promise<number> {
  const redactor = new Redactor();
  // The agent's own credentials are masked wherever they might surface.
  if (config.datahub.token) redactor.add("datahub.token", config.datahub.token);
  if (config.datahub.systemClientSecret) {
    redactor.add("datahub.system_client_secret", config.datahub.systemClientSecret);
  }
  const password = passwordOf(config.datahub.server);
  if (password) redactor.add("datahub.server password", password);
  const log = createLogger({
    level: config.observability.logLevel,
    format: config.observability.logFormat,
    redact: redactor.mask,
  });
  for (const w of warnings) log.warn(w);
  for (const limit of platformLimits()) log.warn(limit);
  const identity = newIdentity(config.executorId);
  try {
    // Recipes hold secrets while a run lasts: both directories are the agent user's alone.
    for (const dir of [config.agent.stateDir, config.agent.workDir]) {
      for (const w of await ensurePrivateDir(dir)) log.warn(w);
    }
  } catch (err) {
    log.error("cannot use the agent's directories", { error: err });
    return 1;
  }
  const state = new StateDir(config.agent.stateDir, {
    onProblem: (message, details) => log.warn(message, details),
  });
  try {
    await state.open();
  } catch (err) {
    log.error("cannot use the state directory", { error: err });
    return 1;
  }
  const gms = new GmsClient(config.datahub, log);
  gms.http.onSecret = (name, value) => redactor.add(name, value); // token_file, proxy password
  const outbox = new Outbox({
    state,
    gms,
    identity,
    retryForMs: config.agent.resultRetryForMs,
    leaseTtlMs: config.agent.leaseTtlMs,
    log,
  });
  let observe;
  // The agent is made after the endpoints (it reports to their live state); read it lazily.
  const agentRef: { current?: Agent } = {};
  try {
    observe = await startObservability({
      config,
      identity,
      gms,
      outbox,
      warnings,
      server: withoutUserinfo(config.datahub.server),
      runsInFlight: () => agentRef.current?.activeRuns ?? 0,
      log,
    });
  } catch (err) {
    log.error("cannot serve observability.listen", { error: err });
    await gms.close();
    state.close();
    return 2;
  }
  const live = observe.live;
  const work = mode === "once" ? new OnceWork({ gms, identity, log }) : undefined;
  const agent = new Agent({
    config,
    gms: work?.narrowed() ?? gms,
    identity,
    log,
    redactor,
    env: io.env,
    state,
    outbox,
    live,
    probe: () => gms.http.json("health", "GET", "/health").then(() => true, () => false),
    runtimeProblem: new RuntimeCheck({
      config,
      env: io.env,
      log,
      onChange: (p) => live.runtime(p), // /readyz
      onMemory: (blocked) => live.admission(blocked), // /status (agent.min_available_memory)
    }).problem,
  });
  agentRef.current = agent;
  log.info("ingest-agent starting", {
    version: VERSION,
    executor_id: config.executorId,
    instance: identity.instanceId,
    server: withoutUserinfo(config.datahub.server),
    auth: gms.http.authKind,
    max_concurrent: config.agent.maxConcurrent,
  });
  if (gms.http.authKind === "none") {
    log.warn(
      "auth: none — datahub.token and datahub.system_client_id are empty; a GMS with authentication on refuses every request (set datahub.token, or the system client)",
    );
  }
  const interrupted = new AbortController();
  const signals = installSignals(agent, config, log, state, () => interrupted.abort());
  let code = 0;
  try {
    const resumed = await outbox.resume();
    if (resumed.length > 0) {
      log.info("delivering results left by the previous start", { results: resumed.length });
    }
    await recoverRuns({
      state,
      outbox,
      identity,
      log,
      redactor,
      resumed,
      gms,
      adopt: (run) => agent.adopt(run),
    });
    const broken = work ? cliProblem(config, io.env) : undefined;
    if (broken) {
      log.error("once: cannot run requests here; none claimed", { problem: broken });
      code = 1;
      await agent.drain(); // results left by the previous start are still delivered
    } else if (work) {
      code = await runOnce(work, agent, interrupted.signal, log);
      const detached = interrupted.signal.aborted && config.agent.onShutdown === "detach";
      // The same drain as a signal's, if one came first.
      await (detached ? signals.stopped : agent.drain());
    } else {
      agent.start(); // a no-op when a signal during recovery already stopped the agent
      await signals.stopped;
    }
    if (work) code = Math.max(code, work.finish(outbox.pending));
  } finally {
    signals.remove();
    outbox.stop();
    await observe.close();
    await gms.close();
    state.close();
  }
  log.info("ingest-agent stopped");
  return code;
}

/**
 * `once`: fixes the work set (retrying GMS trouble for about 2 minutes) and runs it until every
 * request of it is decided or a signal came; the caller then drains the agent, which delivers
 * every result. Resolves 1 when the set could not be read, else 0 (the runs' outcome is
 * `OnceWork.finish`'s).
 */
async function runOnce(
  work: OnceWork,
  agent: Agent,
  interrupted: AbortSignal,
  log: Logger,
): Promise<number> {
  let code = 0;
  for (let attempt = 1, waitMs = 1000;; attempt++, waitMs = Math.min(waitMs * 2, 30_000)) {
    try {
      const count = await work.collect();
      log.info("once: requests pending at start", { requests: count });
      // Started even for an empty set: its discovery is narrowed to the set (nothing is claimed),
      // and runs re-adopted at start still get their signal loop (a KILL reaches them).
      agent.start();
      break;
    } catch (err) {
      if (!isRetryable(err) || attempt >= 7 || interrupted.aborted) {
        log.error("once: cannot read the pending requests", { error: err });
        code = 1;
        break;
      }
      log.warn("once: cannot read the pending requests yet; retrying", {
        error: err,
        retry_in_ms: waitMs,
      });
      await sleep(waitMs);
    }
  }
  if (code === 0 && !interrupted.aborted) await work.follow(agent, interrupted);
  return code;
}

/** First signal drains, second cancels runs now, third exits at once; repeats within 2 s are one. */
function installSignals(
  agent: Agent,
  config: AgentConfig,
  log: Logger,
  state: StateDir,
  onFirst: () => void,
) {
  let count = 0;
  let last = 0;
  let resolveStopped!: () => void;
  const stopped = new Promise<void>((r) => resolveStopped = r);
  const handler = (signal: NodeJS.Signals) => {
    const now = Date.now();
    if (count > 0 && now - last < 2000) {
      log.info(`${signal}: repeated within 2 s, counted once (send it again after 2 s)`);
      return;
    }
    last = now;
    count++;
    if (count === 1 && config.agent.onShutdown === "detach") {
      onFirst();
      log.info(
        `${signal}: detaching (agent.on_shutdown: detach); runs go on, the next start re-adopts them`,
        {
          runs: agent.activeRuns,
        },
      );
      agent.detach().then(resolveStopped, resolveStopped);
    } else if (count === 1) {
      onFirst();
      log.info(
        `${signal}: stopping; no new claims, runs may finish (next signal cancels them now)`,
        {
          runs: agent.activeRuns,
          shutdown_timeout_ms: config.agent.shutdownTimeoutMs,
        },
      );
      agent.drain().then(resolveStopped, resolveStopped);
    } else if (count === 2) {
      log.warn(`${signal}: cancelling runs now (next signal exits at once)`, {
        runs: agent.activeRuns,
        cancel_grace_ms: config.agent.cancelGraceMs,
      });
      agent.cancelAll("shutdown");
    } else {
      log.error(`${signal}: exiting at once; killing run process groups, results not delivered`);
      agent.killAll();
      state.close();
      process.exit(1);
    }
  };
  process.on("SIGTERM", handler);
  process.on("SIGINT", handler);
  return {
    stopped,
    remove: () => {
      process.off("SIGTERM", handler);
      process.off("SIGINT", handler);
    },
  };
}
