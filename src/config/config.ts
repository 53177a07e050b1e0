/**
 * config/ owns the configuration: YAML → environment interpolation (interpolate.ts) → validation
 * (schema.ts) → a frozen `AgentConfig`, and durations (duration.ts). It imports only the shared
 * vocabulary (src/*.ts); nothing else in src/.
 *
 * Configuration: YAML file → environment interpolation → validation → a frozen, compiled
 * `AgentConfig` (durations in ms, paths absolute). Nothing here reads the environment or the
 * disk at import time, and nothing exits the process; `loadConfig` returns every problem at once.
 *
 * Two file forms are accepted: the native form (documented in agent.yml) and the DataHub Actions
 * executor pipeline file (`name`, `source`, `action: {type: executor}`, `datahub`), so users of
 * the Python executor keep their file.
 */
import { readFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseDocument } from "yaml";
import { AgentError } from "../errors.ts";
import { actionsToNative, actionsUnknownKey } from "./actions.ts";
import { checkDatahubFiles, unreadable } from "./files.ts";
import { interpolate } from "./interpolate.ts";
import { compileRuntime, type RuntimeConfig } from "./runtime.ts";
import { actionsSchema, check, nativeSchema, type SchemaIssue } from "./schema.ts";

export type LogFormat = "auto" | "json" | "text";
export type LogLevel = "debug" | "info" | "warn" | "error";

/** The compiled configuration every other module receives. */
export interface AgentConfig {
  /** Requests routed to this executor id are ours (a pool when several agents share it). */
  readonly executorId: string;
  readonly datahub: {
    /** GMS base URL without trailing slash. */
    readonly server: string;
    readonly token: string;
    readonly systemClientId: string;
    readonly systemClientSecret: string;
    readonly timeoutMs: number;
    /** The file the token comes from (absolute; "" = none); `token` holds what it read at start. */
    readonly tokenFile: string;
    /** An HTTP CONNECT proxy for GMS ("" = HTTPS_PROXY/HTTP_PROXY of the environment). */
    readonly proxy: string;
    readonly tls: {
      /** Absolute paths ("" = none): CAs added to the system roots, the client certificate. */
      readonly caFile: string;
      readonly certFile: string;
      readonly keyFile: string;
      readonly insecureSkipVerify: boolean;
    };
  };
  readonly agent: {
    readonly maxConcurrent: number;
    readonly pollIntervalMs: number;
    readonly heartbeatIntervalMs: number;
    readonly leaseTtlMs: number;
    readonly cancelGraceMs: number;
    readonly shutdownTimeoutMs: number;
    /** What the first SIGTERM does to runs: wait for them, or leave them to the next start. */
    readonly onShutdown: "drain" | "detach";
    /** A request whose ingestion source already runs: left pending (wait) or DUPLICATE (skip). */
    readonly onOverlap: {
      readonly scheduled: OverlapPolicy;
      readonly manual: OverlapPolicy;
      readonly sourceTypes: Readonly<Record<string, OverlapPolicy>>;
    };
    /** Runs of a source type at once, at most (besides maxConcurrent). */
    readonly sourceLimits: Readonly<Record<string, number>>;
    /** Resident memory of a run's process group above which it is stopped (0: no limit). */
    readonly runMemoryLimitBytes: number;
    /** No new run starts while the host's MemAvailable is below this (0: no minimum). */
    readonly minAvailableMemoryBytes: number;
    readonly stateDir: string;
    readonly workDir: string;
    readonly maxRequestAgeMs: number;
    readonly resultRetryForMs: number;
  };
  /** The runtime keys (runtime, venv, bundled, policy) are runtime.ts's. */
  readonly ingestion: RuntimeConfig & {
    readonly datahubCommand: string;
    readonly taskTimeoutMs: number;
    /** Per source type (`recipe.source.type`) overrides of taskTimeoutMs. */
    readonly timeoutsMs: Readonly<Record<string, number>>;
    readonly logRetentionMs: number;
    readonly logRetentionBytes: number;
    /** After this long without output, progress reports say the logs look stale. */
    readonly staleOutputMs: number;
    /** Extra variables of the agent's environment a run sees (names, or prefixes ending in *). */
    readonly passEnv: readonly string[];
    /** `${NAME}` falls back to the agent's environment only for names with this prefix. */
    readonly envSecretsPrefix: string;
  };
  readonly observability: {
    readonly listen: string;
    readonly logLevel: LogLevel;
    readonly logFormat: LogFormat;
  };
}

export type OverlapPolicy = "wait" | "skip";

/** One configuration problem, with the dotted path of the key it is about. */
export interface ConfigIssue {
  path: string;
  message: string;
}

export interface LoadedConfig {
  config: AgentConfig;
  /** Non-fatal remarks (e.g. the Kafka source of an Actions file is ignored). */
  warnings: string[];
  /** "native" or "actions" (DataHub Actions executor pipeline file). */
  form: "native" | "actions";
}

export class ConfigError extends AgentError {
  readonly issues: ConfigIssue[];
  constructor(file: string, issues: ConfigIssue[]) {
    super(
      "CONFIG_INVALID",
      `invalid configuration ${file}:\n${
        issues.map((i) => `  ${i.path}: ${i.message}`).join("\n")
      }`,
    );
    this.name = "ConfigError";
    this.issues = issues;
  }
}

/**
 * The schema's issues as ConfigIssues; none at a path whose `${VAR}` was not set (`unset`): "must
 * not be empty" or "expected a URL" there would only repeat that problem.
 */
function issuesOf(
  issues: SchemaIssue[],
  unknownKey: (path: string) => string = () => "unknown key (see agent.yml for the supported keys)",
  unset: ReadonlySet<string> = new Set(),
): ConfigIssue[] {
  return issues.flatMap((issue) => {
    if (issue.unknownKey) return [{ path: issue.path, message: unknownKey(issue.path) }];
    return unset.has(issue.path) ? [] : [{ path: issue.path || "(root)", message: issue.message }];
  });
}

function expandHome(p: string, home: string): string {
  if (p === "~") return home;
  if (p.startsWith("~/")) return path.join(home, p.slice(2));
  return path.resolve(p);
}

/** Options for compiling; the environment and home directory are injected for tests. */
export interface CompileOptions {
  env?: Record<string, string | undefined>;
  home?: string;
  file?: string;
}

/** Validates and compiles an already parsed YAML document. Throws ConfigError with every issue. */
export function compileConfig(raw: unknown, options: CompileOptions = {}): LoadedConfig {
  const file = options.file ?? "(config)";
  const env = options.env ?? {};
  const home = options.home ?? os.homedir();
  const issues: ConfigIssue[] = [];
  // In an Actions pipeline file only `action` and `datahub` are used: the Kafka source and the
  // filters are not interpolated, so their variables need not be set here.
  const ignored = raw && typeof raw === "object" && "action" in raw
    ? ["name", "source", "filters", "options"]
    : [];
  const doc = raw && typeof raw === "object" && !Array.isArray(raw)
    ? Object.fromEntries(
      Object.entries(raw).map((
        [k, v],
      ) => [k, ignored.includes(k) ? v : interpolate(v, env, k, issues)]),
    )
    : interpolate(raw ?? {}, env, "", issues);
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) {
    throw new ConfigError(file, [{ path: "(root)", message: "expected a YAML mapping" }]);
  }
  const warnings: string[] = [];
  // Paths whose `${VAR}` is unset: their knock-on schema errors are not reported.
  const unset = new Set(issues.map((i) => i.path.replace(/\[(\d+)\]/g, ".$1"))); // as a.0
  let native: unknown = doc;
  let form: LoadedConfig["form"] = "native";
  if ("action" in doc) {
    form = "actions";
    const parsed = check(actionsSchema, doc);
    if (!parsed.ok) {
      throw new ConfigError(file, [
        ...issues,
        ...issuesOf(parsed.issues, actionsUnknownKey, unset),
      ]);
    }
    native = actionsToNative(parsed.value, warnings);
  }
  const parsed = check(nativeSchema, native);
  if (!parsed.ok) issues.push(...issuesOf(parsed.issues, undefined, unset));
  if (issues.length > 0 || !parsed.ok) throw new ConfigError(file, issues);
  const c = parsed.value;
  if (!!c.datahub.system_client_id !== !!c.datahub.system_client_secret) {
    throw new ConfigError(file, [{
      path: "datahub.system_client_secret",
      message: "system_client_id and system_client_secret must be set together",
    }]);
  }
  if (c.agent.lease_ttl <= c.agent.heartbeat_interval) {
    throw new ConfigError(file, [{
      path: "agent.lease_ttl",
      message:
        `must be longer than agent.heartbeat_interval (${c.agent.heartbeat_interval}ms), got ${c.agent.lease_ttl}ms`,
    }]);
  }
  const filePath = (p: string) => p ? expandHome(p, home) : "";
  const tls = {
    caFile: filePath(c.datahub.tls.ca_file),
    certFile: filePath(c.datahub.tls.cert_file),
    keyFile: filePath(c.datahub.tls.key_file),
    insecureSkipVerify: c.datahub.tls.insecure_skip_verify,
  };
  const tokenFile = filePath(c.datahub.token_file);
  const files = checkDatahubFiles({ token: c.datahub.token, tokenFile, tls });
  if (files.issues.length > 0) throw new ConfigError(file, files.issues);
  warnings.push(...files.warnings);
  const config: AgentConfig = {
    executorId: c.executor_id,
    datahub: {
      server: c.datahub.server.replace(/\/+$/, ""),
      token: files.token,
      systemClientId: c.datahub.system_client_id,
      systemClientSecret: c.datahub.system_client_secret,
      timeoutMs: c.datahub.timeout,
      tokenFile,
      proxy: c.datahub.proxy,
      tls,
    },
    agent: {
      maxConcurrent: c.agent.max_concurrent,
      pollIntervalMs: c.agent.poll_interval,
      heartbeatIntervalMs: c.agent.heartbeat_interval,
      leaseTtlMs: c.agent.lease_ttl,
      cancelGraceMs: c.agent.cancel_grace,
      shutdownTimeoutMs: c.agent.shutdown_timeout,
      onShutdown: c.agent.on_shutdown,
      onOverlap: {
        scheduled: c.agent.on_overlap.scheduled,
        manual: c.agent.on_overlap.manual,
        sourceTypes: Object.freeze({ ...c.agent.on_overlap.source_types }),
      },
      sourceLimits: Object.freeze({ ...c.agent.source_limits }),
      runMemoryLimitBytes: c.agent.run_memory_limit,
      minAvailableMemoryBytes: c.agent.min_available_memory,
      stateDir: expandHome(c.agent.state_dir, home),
      workDir: c.agent.work_dir
        ? expandHome(c.agent.work_dir, home)
        : path.join(expandHome(c.agent.state_dir, home), "work"),
      maxRequestAgeMs: c.agent.max_request_age,
      resultRetryForMs: c.agent.result_retry_for,
    },
    ingestion: {
      ...compileRuntime(c.ingestion, {
        stateDir: expandHome(c.agent.state_dir, home),
        expand: (p) => expandHome(p, home),
      }),
      datahubCommand: c.ingestion.datahub_command,
      taskTimeoutMs: c.ingestion.task_timeout,
      timeoutsMs: Object.freeze({ ...c.ingestion.timeouts }),
      logRetentionMs: c.ingestion.log_retention,
      logRetentionBytes: c.ingestion.log_retention_bytes,
      staleOutputMs: c.ingestion.stale_output_warning,
      passEnv: Object.freeze([...c.ingestion.pass_env]),
      envSecretsPrefix: c.ingestion.env_secrets_prefix,
    },
    observability: {
      listen: c.observability.listen,
      logLevel: c.observability.log_level,
      logFormat: c.observability.log_format,
    },
  };
  const plain = plainHttpWarning(config.datahub);
  if (plain) warnings.push(plain);
  return { config: deepFreeze(config), warnings, form };
}

/**
 * Credentials sent in clear: `http://` to a host that is not this machine, with a token or system
 * client credentials. A warning, not an error (a sidecar proxy may terminate TLS on the host).
 */
export function plainHttpWarning(
  datahub: { server: string; token: string; systemClientId: string },
): string | undefined {
  if (!datahub.token && !datahub.systemClientId) return undefined;
  let url: URL;
  try {
    url = new URL(datahub.server);
  } catch {
    return undefined;
  }
  if (url.protocol !== "http:" || isLoopbackHost(url.hostname)) return undefined;
  return `datahub.server ${url.protocol}//${url.host} is plain HTTP to another host: the ` +
    `${datahub.systemClientId ? "system client secret" : "token"} travels in clear; use https://`;
}

function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h.endsWith(".localhost") || /^127\./.test(h) || h === "::1";
}

/** Reads, parses and compiles a configuration file. */
export async function loadConfig(
  file: string,
  options: Omit<CompileOptions, "file"> = {},
): Promise<LoadedConfig> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new ConfigError(file, [{ path: "(file)", message: unreadableConfig(file, err) }]);
  }
  // Every YAML error, each at its place in the file (file:line:column, as editors take it).
  const doc = parseDocument(text);
  if (doc.errors.length > 0) {
    throw new ConfigError(
      file,
      doc.errors.map((e) => {
        const at = e.linePos?.[0];
        return {
          path: at ? `${file}:${at.line}:${at.col}` : file,
          message: `not valid YAML: ${e.message.replace(/ at line \d+, column \d+:[\s\S]*$/, "")}`,
        };
      }),
    );
  }
  let raw: unknown;
  try {
    raw = doc.toJS();
  } catch (err) { // e.g. too many aliases
    throw new ConfigError(file, [{
      path: file,
      message: `not valid YAML: ${(err as Error).message}`,
    }]);
  }
  return compileConfig(raw, { ...options, file });
}

/** Why the configuration file cannot be read, as a sentence naming it. */
function unreadableConfig(file: string, err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const where = path.isAbsolute(file) ? "" : ` (${path.resolve(file)})`;
  if (code === "ENOENT") return `file not found: ${file}${where}`;
  if (code === "EISDIR") {
    return `${file}${where} is a directory, not a configuration file: give the file's path ` +
      `(e.g. --config ${path.join(file, "agent.yml")})`;
  }
  return `cannot read ${file}${where}: ${unreadable(err)}`;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object") {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
