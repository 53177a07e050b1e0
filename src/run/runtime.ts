/**
 * Choosing a run's `datahub` CLI by `ingestion.runtime`, and the report's "Environment Setup"
 * section for it:
 *
 *   preinstalled  ingestion.datahub_command as is; version and extra pip arguments noted as ignored
 *   venv          the cached environment for the request's plugins, version and requirements
 *                 (venv.ts); version `native` → the preinstalled CLI, `bundled` → as below
 *   bundled       <bundled_dir>/<source type>-bundled, else <bundled_dir>/default-bundled (the
 *                 DataHub image convention); version and extra pip arguments noted as ignored
 */
import { lstat } from "node:fs/promises";
import path from "node:path";
import type { AgentConfig } from "../config/config.ts";
import { AgentError } from "../errors.ts";
import { longTimeout } from "../timers.ts";
import type { RunLimits } from "./execution.ts";
import { type GroupChild, sourceOptions, venvBin, venvDatahub } from "./installer.ts";
import type { RuntimeRequest } from "./policy.ts";
import type { Note } from "./summary.ts";
import {
  acquireVenv,
  datahubRequirement,
  type EnvUse,
  SetupCancelled,
  SetupFailed,
} from "./venv.ts";

export interface RuntimeContext {
  config: AgentConfig;
  env: Record<string, string | undefined>;
  runId: string;
  marker: { name: string; value: string };
  note(level: Note["level"], message: string): void;
  /** The report's Environment Setup section (raw: masked when the report is made). */
  setup(section: string): void;
  child(c: GroupChild | undefined): void;
  cancelled(): boolean;
}

export interface ResolvedRuntime {
  /** The datahub CLI to run. */
  command: string;
  /** An environment's bin directory (goes first on the run's PATH, with VIRTUAL_ENV). */
  venv?: { dir: string; bin: string };
  /** The run's hold on a cached environment (venv runtime). */
  use?: EnvUse;
}

/** The run's CLI; undefined when the run was cancelled during the setup. */
export async function resolveRuntime(
  request: RuntimeRequest,
  c: RuntimeContext,
): Promise<ResolvedRuntime | undefined> {
  const { ingestion } = c.config;
  if (ingestion.runtime === "venv" && request.version === "native") {
    c.note("INFO", "version 'native': the preinstalled CLI (ingestion.datahub_command) runs");
    return preinstalled(request, c, "version 'native'");
  }
  if (
    ingestion.runtime === "bundled" ||
    (ingestion.runtime === "venv" && request.version === "bundled")
  ) {
    return await bundled(request, c);
  }
  if (ingestion.runtime === "preinstalled") {
    return preinstalled(request, c, "the preinstalled runtime");
  }
  return await venv(request, c);
}

function ignoredNotes(request: RuntimeRequest, c: RuntimeContext, why: string, version: boolean) {
  const lists = [
    ["extra_pip_requirements", request.requirements],
    ["extra_pip_plugins", request.extraPlugins],
  ] as const;
  for (const [key, list] of lists) {
    if (list.length > 0) {
      c.note(
        "INFO",
        `${key} ${JSON.stringify(list)} ignored: ${why} uses the installed datahub CLI as is`,
      );
    }
  }
  if (version && !["latest", "native", "bundled"].includes(request.version)) {
    c.note(
      "INFO",
      `version '${request.version}' ignored: ${why} runs the datahub CLI version it has`,
    );
  }
}

function preinstalled(request: RuntimeRequest, c: RuntimeContext, why: string): ResolvedRuntime {
  ignoredNotes(request, c, why, c.config.ingestion.runtime !== "preinstalled");
  return { command: c.config.ingestion.datahubCommand };
}

async function bundled(request: RuntimeRequest, c: RuntimeContext): Promise<ResolvedRuntime> {
  const root = c.config.ingestion.bundledDir;
  const t0 = performance.now();
  const names = [`${request.sourceType}-bundled`, "default-bundled"];
  for (const name of names) {
    const dir = path.join(root, name);
    const datahub = venvDatahub(dir);
    if (await lstat(datahub).catch(() => undefined)) {
      ignoredNotes(request, c, "the bundled runtime", true);
      c.setup(section([
        ["Runtime", "bundled"],
        [
          "Environment",
          `${dir} (prebuilt${name === "default-bundled" ? ", the default bundle" : ""})`,
        ],
        ["Setup took", seconds(performance.now() - t0)],
      ]));
      return { command: datahub, venv: { dir, bin: venvBin(dir) } };
    }
  }
  const expected = path.join(root, names[0]!);
  c.setup(section([
    ["Runtime", "bundled"],
    ["Environment", `none: neither ${expected} nor ${path.join(root, names[1]!)} has bin/datahub`],
  ]));
  throw new AgentError(
    "RUNTIME_MISSING",
    `No bundled environment for source type '${request.sourceType}': expected ${expected} (or ${
      path.join(root, names[1]!)
    }) with bin/datahub, under ingestion.bundled_dir`,
  );
}

async function venv(
  request: RuntimeRequest,
  c: RuntimeContext,
): Promise<ResolvedRuntime | undefined> {
  const t0 = performance.now();
  const extra = request.requirements.length > 0
    ? `; extra requirements: ${request.requirements.join(", ")}`
    : "";
  const rows: Row[] = [
    ["Runtime", "venv"],
    ["Requested", datahubRequirement(request) + extra],
    ["From", fromWhere(c.config)],
  ];
  try {
    const r = await acquireVenv(request, c);
    const b = r.built;
    const waited = r.waitedMs >= 1000
      ? `; waited ${seconds(r.waitedMs)} for another run's build`
      : "";
    rows.push(
      [
        "Environment",
        `${r.dir} (${
          r.hit
            ? `cache hit, built ${new Date(b.builtAt).toISOString()} in ${
              seconds(b.buildMs)
            }${waited}`
            : `cache miss: built in ${seconds(b.buildMs)}`
        })`,
      ],
      ["Installer", b.installer],
      [
        "Constraints",
        b.constraints
          ? "datahub/constraints.txt of the installed acryl-datahub"
          : "none (acryl-datahub has no datahub/constraints.txt)",
      ],
      ["Installed", b.installed.join(", ") || "(nothing listed)"],
    );
    if (!r.hit) rows.push(["Steps", b.steps.map((s) => `${s.label} ${seconds(s.ms)}`).join(", ")]);
    if (r.staleInUse) {
      rows.push([
        "Note",
        "older than ingestion.latest_ttl, but in use by another run: rebuilt when unused",
      ]);
    }
    if (r.evicted.length > 0) {
      const max = c.config.ingestion.venvCacheMax;
      rows.push(["Evicted", `${r.evicted.join(", ")} (ingestion.venv_cache_max ${max})`]);
    }
    rows.push(["Setup took", seconds(performance.now() - t0)]);
    c.setup(section(rows));
    if (c.cancelled()) {
      await r.use.release();
      return undefined;
    }
    return { command: r.datahub, venv: { dir: r.dir, bin: r.bin }, use: r.use };
  } catch (err) {
    if (err instanceof SetupCancelled) {
      const after = seconds(performance.now() - t0);
      rows.push([
        "Environment",
        `not ready: the run was stopped during the setup, after ${after}; nothing half-built was kept`,
      ]);
      c.setup(section(rows));
      return undefined;
    }
    if (err instanceof SetupFailed) {
      rows.push(
        [
          "Environment",
          `cache miss: the build failed after ${
            seconds(err.ms)
          }; the half-built environment was removed (the next run builds it again)`,
        ],
        ["Failed step", `${err.step.label}: ${err.step.command} ${err.step.args.join(" ")}`],
      );
      const output = err.output.map((l) => `  ${l}`).join("\n");
      c.setup(`${section(rows)}\nInstaller output:\n${output}`);
    }
    throw err;
  }
}

/**
 * Runs `fn` (the setup) under the run's deadline: past it, `timedOut` is told the limit (the Job
 * cancels the run, which stops the installer's group).
 */
export async function withDeadline<T>(
  limits: RunLimits,
  timedOut: (limit: string) => void,
  fn: () => Promise<T>,
): Promise<T> {
  const timer = longTimeout(
    () => timedOut(limits.timeoutLimit),
    Math.max(0, limits.deadlineMs - Date.now()),
  );
  try {
    return await fn();
  } finally {
    timer.clear();
  }
}

/** Variables of the agent's environment that name package indexes (they may hold a password). */
const INDEX_VARIABLES = [
  "PIP_INDEX_URL",
  "PIP_EXTRA_INDEX_URL",
  "UV_INDEX_URL",
  "UV_EXTRA_INDEX_URL",
  "UV_DEFAULT_INDEX",
  "UV_INDEX",
];

/** The passwords of the index URLs the installer is given (masked in its output). */
export function indexCredentials(
  config: AgentConfig,
  env: Record<string, string | undefined>,
): string[] {
  if (config.ingestion.runtime !== "venv") return [];
  const urls = [
    config.ingestion.indexUrl,
    ...config.ingestion.extraIndexUrls,
    ...INDEX_VARIABLES.flatMap((n) => (env[n] ?? "").split(/\s+/)),
  ];
  const out: string[] = [];
  for (const u of urls) {
    const m = /\/\/[^/\s:@]+:([^/\s@]+)@/.exec(u);
    if (m) out.push(m[1]!, safeDecode(m[1]!));
  }
  return out;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** Where the installer takes packages from, as the report says it (no credentials). */
function fromWhere(config: AgentConfig): string {
  const i = config.ingestion;
  const options = sourceOptions(config, "pip").map(hideCredentials).join(" ");
  return i.offline
    ? `${options} (offline: find_links only)`
    : options || "the installer's default index (PIP_INDEX_URL / UV_INDEX_URL, else PyPI)";
}

/** A URL's password replaced by ****. */
export function hideCredentials(text: string): string {
  return text.replace(/(\/\/[^/\s:@]+):[^/\s@]+@/g, "$1:****@");
}

type Row = [string, string];

function section(rows: Row[]): string {
  return rows.map(([k, v]) => `${k}: ${v}`).join("\n");
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}
