/**
 * Preparing one run, before its CLI starts: the task → the command line; the recipe parsed, its
 * `${NAME}`s resolved (DataHub, then the agent's environment by the rules of run_env.ts) and
 * substituted; the run's secrets and extra_env_vars registered for masking (and journaled); a
 * fresh private run directory with the recipe file (0600); the run's environment. Throws an
 * AgentError with a stable code for anything the request got wrong.
 */
import { writeFileSync } from "node:fs";
import path from "node:path";
import type { AgentConfig } from "../config/config.ts";
import { readTokenFile } from "../config/files.ts";
import { AgentError } from "../errors.ts";
import type { GmsApi } from "../gms/client.ts";
import type { RequestInput } from "../request.ts";
import { freshRunDir } from "../state/private_fs.ts";
import {
  hasSink,
  parseRecipe,
  secretNames,
  sourceType,
  substituteSecrets,
  withRunId,
} from "./recipe.ts";
import { MIN_SECRET_LENGTH, type Redactor } from "./redact.ts";
import { type RunLimits, runLimits } from "./execution.ts";
import type { GroupChild } from "./installer.ts";
import { checkRequest } from "./policy.ts";
import { credentialVariables, envSecretRefusal, runEnvironment } from "./run_env.ts";
import { indexCredentials, resolveRuntime, withDeadline } from "./runtime.ts";
import { resolveSecrets } from "./secrets.ts";
import type { Note } from "./summary.ts";
import type { EnvUse } from "./venv.ts";

export { parseJsonList } from "./policy.ts";

/** Set in every CLI's environment (value: the claim's token), so that recovery can find a run's
 * processes even when the agent died before it journaled the process group. */
export const RUN_MARKER_ENV = "INGEST_AGENT_RUN";

export const SUPPORTED_TASKS = ["RUN_INGEST", "TEST_CONNECTION"] as const;

export interface PrepareContext {
  config: AgentConfig;
  gms: Pick<GmsApi, "secretValues">;
  /** The agent's environment. */
  env: Record<string, string | undefined>;
  /** Agent-wide masks (every secret of every run, for the agent's own log). */
  agentRedactor: Redactor;
  /** This run's masks. */
  runRedactor: Redactor;
  task: string;
  id: string;
  input: RequestInput;
  token: string;
  runDir: string;
  note(level: Note["level"], message: string): void;
  /** Keeps the run's masked forms in the journal (a restarted agent masks with them). */
  journalMasks(masks: string[]): void;
  /** Whether the run was cancelled meanwhile (then nothing is written and nothing starts). */
  cancelled(): boolean;
  /** The report's Environment Setup section (runtime.ts), raw. */
  setup(section: string): void;
  /** The installer's process group while one runs (a cancel stops it), then undefined. */
  child(c: GroupChild | undefined): void;
  /** The run's timeout passed during the environment setup (the limit's name). */
  timedOut(limit: string): void;
}

/** What starting the CLI needs. */
export interface PreparedRun {
  command: string;
  args: string[];
  env: Record<string, string>;
  sourceType: string;
  debug: boolean;
  /** The run's timeout, counted from the preparation (environment setup included). */
  limits: RunLimits;
  /** The run's hold on a cached environment (venv runtime; execution.ts moves it to the CLI). */
  use?: EnvUse | undefined;
}

/** Prepares the run; undefined when it was cancelled before anything was written. */
export async function prepareRun(c: PrepareContext): Promise<PreparedRun | undefined> {
  const { config } = c;
  if (!(SUPPORTED_TASKS as readonly string[]).includes(c.task)) {
    throw new AgentError(
      "TASK_UNSUPPORTED",
      `Unsupported task '${c.task}': ingest-agent runs ${SUPPORTED_TASKS.join(" and ")}`,
    );
  }
  const args = c.input.args;
  const recipe = parseRecipe(args.recipe ?? "");
  const type = sourceType(recipe);
  const extraEnv = parseExtraEnv(args.extra_env_vars);
  // The policy first: a refused request installs nothing and resolves no secret (policy.ts).
  const request = checkRequest(config, type, args, extraEnv);
  const limits = runLimits(config, type);
  const names = secretNames(recipe);
  const withheld = credentialVariables(c.env, config.datahub);
  const prefix = config.ingestion.envSecretsPrefix;
  const secrets = await resolveSecrets(
    names,
    c.gms,
    c.env,
    (name) => envSecretRefusal(name, withheld, prefix),
  );
  for (const [name, value] of secrets.values) c.runRedactor.add(name, value);
  c.agentRedactor.addAll(c.runRedactor);
  for (const note of secrets.notes) c.note("INFO", note);
  if (names.length > 0) {
    c.note("INFO", `Resolved ${names.length} secret reference(s): ${names.join(", ")}`);
  }
  for (const name of c.runRedactor.tooShort) {
    c.note(
      "INFO",
      `Secret '${name}' is shorter than ${MIN_SECRET_LENGTH} characters, so it is not masked in logs and reports`,
    );
  }
  // extra_env_vars often carry credentials (AWS keys, passwords): masked like secrets.
  for (const [name, value] of Object.entries(extraEnv)) {
    c.runRedactor.add(`extra_env_vars.${name}`, value);
  }
  for (const secret of indexCredentials(config, c.env)) c.runRedactor.add("index", secret);
  c.agentRedactor.addAll(c.runRedactor);
  // Journaled (0600, removed with the run) so that an agent restarted after a crash can still
  // mask this run's secrets in what it reports. Nothing to mask: no journal write.
  const masks = c.runRedactor.patterns();
  if (masks.length > 0) c.journalMasks(masks);
  if (c.cancelled()) return undefined;

  const finalRecipe = withRunId(substituteSecrets(recipe, secrets.values), c.id);
  await freshRunDir(c.runDir);
  const recipePath = path.join(c.runDir, "recipe.json");
  const reportPath = path.join(c.runDir, "report.json");
  // One small local file: synchronous (cheaper than three hops to libuv's pool).
  writeFileSync(recipePath, JSON.stringify(finalRecipe), { mode: 0o600, flag: "wx" });

  const debug = /^true$/i.test(args.debug_mode ?? args.debugMode ?? "");
  // The runtime's CLI: may build an environment (minutes), under the run's timeout and cancel.
  const runtime = await withDeadline(limits, c.timedOut, () =>
    resolveRuntime(request, {
      config,
      env: c.env,
      runId: c.id,
      marker: { name: RUN_MARKER_ENV, value: c.token },
      note: c.note,
      setup: c.setup,
      child: c.child,
      cancelled: c.cancelled,
    }));
  if (!runtime) return undefined;
  const cli = runtime.command;
  const argv = c.task === "TEST_CONNECTION"
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
  const env = runEnvironment(c.env, {
    passEnv: config.ingestion.passEnv,
    extra: extraEnv,
    ...(hasSink(recipe) ? {} : { gms: gmsEnv(config, c.note, currentToken(config, c)) }),
    withheld,
    trust: { caFile: config.datahub.tls.caFile, proxy: config.datahub.proxy },
    marker: { name: RUN_MARKER_ENV, value: c.token },
  });
  if (runtime.venv) {
    env.PATH = [runtime.venv.bin, env.PATH].filter(Boolean).join(path.delimiter);
    env.VIRTUAL_ENV = runtime.venv.dir;
  }
  return { command: cli, args: argv, env, sourceType: type, debug, limits, use: runtime.use };
}

/** Environment for a sink-less recipe: the CLI's default datahub-rest sink needs GMS and credentials. */
export function gmsEnv(
  config: AgentConfig,
  note: (level: Note["level"], message: string) => void,
  token = config.datahub.token,
): Record<string, string> {
  const { datahub } = config;
  const env: Record<string, string> = { DATAHUB_GMS_URL: datahub.server };
  if (datahub.systemClientId) {
    env.DATAHUB_SYSTEM_CLIENT_ID = datahub.systemClientId;
    env.DATAHUB_SYSTEM_CLIENT_SECRET = datahub.systemClientSecret;
  }
  if (token) env.DATAHUB_GMS_TOKEN = token;
  note(
    "INFO",
    "The recipe has no sink: the CLI's default datahub-rest sink writes to this agent's GMS",
  );
  return env;
}

/**
 * The token a CLI starting now gets: datahub.token_file as it reads now (masked from here on), or
 * the token read at start when the file cannot be read (the agent's log says why).
 */
function currentToken(config: AgentConfig, c: Pick<PrepareContext, "agentRedactor">): string {
  if (!config.datahub.tokenFile) return config.datahub.token;
  try {
    const token = readTokenFile(config.datahub.tokenFile);
    c.agentRedactor.add("datahub.token_file", token);
    return token;
  } catch {
    return config.datahub.token;
  }
}

/** The run directory's name under work_dir. */
export function runDirName(id: string): string {
  return `run-${id.replace(/[^\w.-]/g, "_")}`;
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
