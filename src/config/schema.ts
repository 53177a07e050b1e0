/**
 * The configuration's schemas: value types (durations, sizes, URLs) and the two forms a file may
 * take, the native one (defaults as documented in agent.yml) and the DataHub Actions executor
 * pipeline file. Validation only; compiling to `AgentConfig` is config.ts's.
 */
import { z } from "zod";
import { formatDuration, parseDuration } from "./duration.ts";
import { serverUrlProblem } from "./server_url.ts";

// ---------------------------------------------------------------------------------------------
// Value types

const duration = (min = 0, max = Number.MAX_SAFE_INTEGER) =>
  z.union([z.string(), z.number()]).transform((value, ctx) => {
    const ms = parseDuration(value);
    if (ms === undefined) {
      ctx.addIssue({
        code: "custom",
        message:
          `expected a duration such as 250ms, 5s, 2m or 24h (a bare number is seconds), got ${
            JSON.stringify(value)
          }`,
      });
      return z.NEVER;
    }
    if (ms < min) {
      ctx.addIssue({
        code: "custom",
        message: `must be at least ${min}ms, got ${JSON.stringify(value)}`,
      });
      return z.NEVER;
    }
    if (ms > max) {
      ctx.addIssue({
        code: "custom",
        message: `must be at most ${formatDuration(max)}, got ${JSON.stringify(value)}`,
      });
      return z.NEVER;
    }
    return ms;
  });

const BYTE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
};
const bytes = z.union([z.string(), z.number()]).transform((value, ctx) => {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(String(value));
  const unit = match ? BYTE_UNITS[match[2]!.toLowerCase()] : undefined;
  if (!match || unit === undefined) {
    ctx.addIssue({
      code: "custom",
      message: `expected a size such as 500MiB or 1GiB, got ${JSON.stringify(value)}`,
    });
    return z.NEVER;
  }
  return Math.round(Number(match[1]) * unit);
});

const nonEmpty = z.string().trim().min(1, "must not be empty");
// A boolean, also as the string an environment variable gives (`${INSECURE:-false}`).
const flag = z.union([
  z.boolean(),
  z.enum(["true", "false"], { error: "expected true or false" }).transform((s) => s === "true"),
]);
const overlap = z.enum(["wait", "skip"]);
// A package index (pip's --index-url); empty: the installer's own default.
const indexUrl = z.string().trim().refine((s) => s === "" || /^https?:\/\/[^\s/]+/.test(s), {
  message: "expected an http:// or https:// URL of a package index",
});
// One value or a list of them.
const oneOrMany = <T extends z.ZodType<string>>(item: T) =>
  z.union([item, z.array(item)]).transform((v) =>
    (Array.isArray(v) ? v : [v]).filter((s) => s !== "")
  );
// http(s) with a host, on a port Node's fetch connects to (server_url.ts).
const serverUrl = z.string().trim().superRefine((s, ctx) => {
  const problem = serverUrlProblem(s);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

// ---------------------------------------------------------------------------------------------
// The native form. Defaults are the ones documented in agent.yml.

export const nativeSchema = z.strictObject({
  executor_id: nonEmpty.default("default"),
  datahub: z.strictObject({
    server: serverUrl.default("http://localhost:8080"),
    token: z.string().default(""),
    // A file holding the token instead (read at start and when it changes, gms/token_file.ts).
    token_file: z.string().trim().default(""),
    system_client_id: z.string().default(""),
    system_client_secret: z.string().default(""),
    // Feeds undici's and AbortSignal's timers, which overflow past 2^31-1 ms: at most 1h.
    timeout: duration(100, 3_600_000).default(30_000),
    // An HTTP CONNECT proxy; overrides HTTPS_PROXY/HTTP_PROXY (NO_PROXY still applies).
    proxy: z.string().trim().refine((s) => s === "" || /^https?:\/\/[^\s/]+/.test(s), {
      message:
        "expected an http:// or https:// proxy URL (empty: HTTPS_PROXY from the environment)",
    }).default(""),
    tls: z.strictObject({
      ca_file: z.string().trim().default(""),
      cert_file: z.string().trim().default(""),
      key_file: z.string().trim().default(""),
      insecure_skip_verify: flag.default(false),
    }).prefault({}),
  }).prefault({}),
  agent: z.strictObject({
    max_concurrent: z.number().int().min(1).max(256).default(4),
    poll_interval: duration(100).default(5_000),
    heartbeat_interval: duration(100).default(5_000),
    lease_ttl: duration(1_000).default(60_000),
    cancel_grace: duration().default(30_000),
    shutdown_timeout: duration().default(300_000),
    // drain: the first SIGTERM lets runs finish; detach: exit at once, runs go on and the next
    // start re-adopts them (upgrades with a persistent state_dir).
    on_shutdown: z.enum(["drain", "detach"]).default("drain"),
    // A request whose ingestion source already runs: wait (stays pending) or skip (DUPLICATE).
    on_overlap: z.union([
      overlap.transform((p) => ({ scheduled: p, manual: p, source_types: {} })),
      z.strictObject({
        scheduled: overlap.default("skip"),
        manual: overlap.default("wait"),
        source_types: z.record(z.string(), overlap).default({}),
      }),
    ]).prefault({}),
    // At most this many runs of a source type at once (besides max_concurrent).
    source_limits: z.record(z.string(), z.number().int().min(1)).default({}),
    // A run whose processes' resident memory (summed over its group) exceeds this is stopped
    // and ends FAILURE. 0: no limit.
    run_memory_limit: bytes.default(0),
    // No new run starts while the host's MemAvailable is below this. 0: no minimum.
    min_available_memory: bytes.default(0),
    state_dir: nonEmpty.default("~/.local/state/ingest-agent"),
    // Empty: <state_dir>/work (private to the agent's user, never a shared /tmp).
    work_dir: z.string().default(""),
    max_request_age: duration(1_000).default(86_400_000),
    result_retry_for: duration().default(86_400_000),
  }).prefault({}),
  ingestion: z.strictObject({
    // preinstalled: the CLI at datahub_command; venv: built and cached per request
    // (src/run/venv.ts); bundled: prebuilt under bundled_dir. See README "Runtimes".
    runtime: z.enum(["preinstalled", "venv", "bundled"], {
      error: (issue) =>
        `expected "preinstalled" (the datahub CLI at datahub_command), "venv" (environments built per plugins and version) or "bundled" (prebuilt under bundled_dir), got ${
          JSON.stringify(issue.input)
        }`,
    }).default("preinstalled"),
    datahub_command: nonEmpty.default("datahub"),
    task_timeout: duration(1_000).default(86_400_000),
    timeouts: z.record(z.string(), duration(1_000)).default({}),
    log_retention: duration().default(7 * 86_400_000),
    log_retention_bytes: bytes.default(1024 ** 3),
    stale_output_warning: duration(1_000).default(120_000),
    pass_env: z.array(
      z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*\*?$/, {
        error: "expected a variable name, or a prefix ending in * (e.g. AWS_*)",
      }),
    ).default([]),
    env_secrets_prefix: z.string().regex(/^[A-Za-z0-9_]*$/, {
      error: "expected the start of a variable name (letters, digits, _)",
    }).default(""),
    // runtime: venv (compiled by runtime.ts)
    python: nonEmpty.default("python3"),
    installer: z.enum(["auto", "uv", "pip"]).default("auto"),
    venv_dir: z.string().trim().default(""),
    venv_cache_max: z.number().int().min(1).max(1000).default(10),
    latest_ttl: duration().default(86_400_000),
    index_url: indexUrl.default(""),
    extra_index_url: oneOrMany(indexUrl).default([]),
    find_links: oneOrMany(z.string().trim()).default([]),
    offline: flag.default(false),
    // runtime: bundled
    bundled_dir: nonEmpty.default("/opt/datahub/venvs"),
    // Policy, for every runtime. Absent: any source type.
    allowed_source_types: z.array(nonEmpty).optional(),
    allow_extra_pip: flag.default(true),
  }).superRefine((v, ctx) => {
    if (v.offline && v.find_links.length === 0) {
      ctx.addIssue({
        code: "custom",
        path: ["find_links"],
        message: "ingestion.offline needs find_links (a directory of wheels to install from)",
      });
    }
  }).prefault({}),
  observability: z.strictObject({
    // host:port, [v6]:port or :port (every interface); empty: no endpoints.
    listen: z.string().trim().regex(/^$|^(?:\[[^\]]+\]|[^:[\]\s]*):\d{1,5}$/, {
      error: "expected host:port or :port, e.g. 127.0.0.1:9464 (empty: no endpoints)",
    }).default(""),
    log_level: z.enum(["debug", "info", "warn", "error"]).default("info"),
    log_format: z.enum(["auto", "json", "text"]).default("auto"),
  }).prefault({}),
});

// The DataHub Actions executor pipeline file (SPEC §4.1). Only executor_id and the datahub block
// matter; the Kafka source and filters are accepted and ignored.
export const actionsSchema = z.strictObject({
  name: z.string().optional(),
  source: z.unknown().optional(),
  filters: z.unknown().optional(),
  options: z.unknown().optional(),
  action: z.strictObject({
    type: z.literal("executor", { error: "only the `executor` action can be run by ingest-agent" }),
    config: z.strictObject({
      executor_id: z.string().optional(),
      task_configs: z.unknown().optional(),
    }).prefault({}),
  }),
  datahub: z.strictObject({
    server: serverUrl,
    token: z.string().optional(),
    extra_headers: z.record(z.string(), z.string()).optional(),
  }),
});
