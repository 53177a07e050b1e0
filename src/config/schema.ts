/**
 * The configuration's schemas (valibot): value types (durations, sizes, URLs) and the two forms a
 * file may take, the native one (defaults as documented in agent.yml) and the DataHub Actions
 * executor pipeline file. Validation only; compiling to `AgentConfig` is config.ts's.
 *
 * A default is given as a file would write it (`"5s"`, `"1GiB"`): valibot validates defaults
 * like values. Unknown keys of the strict objects are listed by `unknownKeys` (every one, not
 * only the first).
 */
import * as v from "valibot";
import { formatDuration, parseDuration } from "./duration.ts";
import { serverUrlProblem } from "./server_url.ts";

// ---------------------------------------------------------------------------------------------
// Value types

/** A value checked and converted by `fn`, which returns an error message or the result. */
const converted = <T>(fn: (value: unknown) => { ok: T } | { problem: string }) =>
  v.pipe(
    v.unknown(),
    v.rawTransform<unknown, T>(({ dataset, addIssue, NEVER }) => {
      const out = fn(dataset.value);
      if ("ok" in out) return out.ok;
      addIssue({ message: out.problem });
      return NEVER;
    }),
  );

const duration = (min = 0, max = Number.MAX_SAFE_INTEGER) =>
  converted<number>((value) => {
    const ms = typeof value === "string" || typeof value === "number"
      ? parseDuration(value)
      : undefined;
    if (ms === undefined) {
      return {
        problem:
          `expected a duration such as 250ms, 5s, 2m or 24h (a bare number is seconds), got ${
            JSON.stringify(value)
          }`,
      };
    }
    if (ms < min) return { problem: `must be at least ${min}ms, got ${JSON.stringify(value)}` };
    if (ms > max) {
      return { problem: `must be at most ${formatDuration(max)}, got ${JSON.stringify(value)}` };
    }
    return { ok: ms };
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
const bytes = converted<number>((value) => {
  const match = typeof value === "string" || typeof value === "number"
    ? /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(String(value))
    : null;
  const unit = match ? BYTE_UNITS[match[2]!.toLowerCase()] : undefined;
  if (!match || unit === undefined) {
    return { problem: `expected a size such as 500MiB or 1GiB, got ${JSON.stringify(value)}` };
  }
  return { ok: Math.round(Number(match[1]) * unit) };
});

const text = v.string();
const trimmed = v.pipe(v.string(), v.trim());
const nonEmpty = v.pipe(v.string(), v.trim(), v.minLength(1, "must not be empty"));
const integer = (min: number, max = Number.MAX_SAFE_INTEGER) => {
  const message = (issue: v.BaseIssue<unknown>) =>
    `expected a whole number ${
      max === Number.MAX_SAFE_INTEGER ? `of at least ${min}` : `from ${min} to ${max}`
    }, got ${JSON.stringify(issue.input)}`;
  return v.pipe(
    v.number(message),
    v.integer(message),
    v.minValue(min, message),
    v.maxValue(max, message),
  );
};
// A boolean, also as the string an environment variable gives (`${INSECURE:-false}`).
const flag = converted<boolean>((value) =>
  typeof value === "boolean"
    ? { ok: value }
    : value === "true" || value === "false"
    ? { ok: value === "true" }
    : { problem: `expected true or false, got ${JSON.stringify(value)}` }
);
const choice = <const T extends string[]>(options: T, message?: (input: unknown) => string) =>
  v.picklist(
    options,
    (issue) =>
      message?.(issue.input) ??
        `expected one of ${options.map((o) => JSON.stringify(o)).join(", ")}, got ${
          JSON.stringify(issue.input)
        }`,
  );
const overlap = choice(["wait", "skip"]);
const httpUrl = (message: string) =>
  v.pipe(v.string(), v.trim(), v.check((s) => s === "" || /^https?:\/\/[^\s/]+/.test(s), message));
// A package index (pip's --index-url); empty: the installer's own default.
const indexUrl = httpUrl("expected an http:// or https:// URL of a package index");
// One value or a list of them.
const oneOrMany = <T extends v.GenericSchema<unknown, string>>(item: T) =>
  v.pipe(
    v.union([item, v.array(item)]),
    v.transform((value) => (Array.isArray(value) ? value : [value]).filter((s) => s !== "")),
  );
// http(s) with a host, on a port Node connects to (server_url.ts).
const serverUrl = v.pipe(
  v.string(),
  v.trim(),
  v.rawCheck(({ dataset, addIssue }) => {
    const problem = dataset.typed ? serverUrlProblem(dataset.value) : undefined;
    if (problem) addIssue({ message: problem });
  }),
);
const map = <T extends v.GenericSchema>(item: T) => v.optional(v.record(v.string(), item), {});

// ---------------------------------------------------------------------------------------------
// The native form. Defaults are the ones documented in agent.yml.

export const nativeSchema = v.strictObject({
  executor_id: v.optional(nonEmpty, "default"),
  datahub: v.optional(
    v.strictObject({
      server: v.optional(serverUrl, "http://localhost:8080"),
      token: v.optional(text, ""),
      // A file holding the token instead (read at start and when it changes, gms/token_file.ts).
      token_file: v.optional(trimmed, ""),
      system_client_id: v.optional(text, ""),
      system_client_secret: v.optional(text, ""),
      // Feeds Node's timers and AbortSignal's, which overflow past 2^31-1 ms: at most 1h.
      timeout: v.optional(duration(100, 3_600_000), "30s"),
      // An HTTP CONNECT proxy; overrides HTTPS_PROXY/HTTP_PROXY (NO_PROXY still applies).
      proxy: v.optional(
        httpUrl(
          "expected an http:// or https:// proxy URL (empty: HTTPS_PROXY from the environment)",
        ),
        "",
      ),
      tls: v.optional(
        v.strictObject({
          ca_file: v.optional(trimmed, ""),
          cert_file: v.optional(trimmed, ""),
          key_file: v.optional(trimmed, ""),
          insecure_skip_verify: v.optional(flag, false),
        }),
        {},
      ),
    }),
    {},
  ),
  agent: v.optional(
    v.strictObject({
      max_concurrent: v.optional(integer(1, 256), 4),
      poll_interval: v.optional(duration(100), "5s"),
      heartbeat_interval: v.optional(duration(100), "5s"),
      lease_ttl: v.optional(duration(1_000), "60s"),
      cancel_grace: v.optional(duration(), "30s"),
      shutdown_timeout: v.optional(duration(), "300s"),
      // drain: the first SIGTERM lets runs finish; detach: exit at once, runs go on and the next
      // start re-adopts them (upgrades with a persistent state_dir).
      on_shutdown: v.optional(choice(["drain", "detach"]), "drain"),
      // A request whose ingestion source already runs: wait (stays pending) or skip (DUPLICATE).
      on_overlap: v.optional(
        v.union([
          v.pipe(
            overlap,
            v.transform((p) => ({
              scheduled: p,
              manual: p,
              source_types: {} as Record<string, "wait" | "skip">,
            })),
          ),
          v.strictObject({
            scheduled: v.optional(overlap, "skip"),
            manual: v.optional(overlap, "wait"),
            source_types: map(overlap),
          }),
        ], 'expected "wait", "skip", or {scheduled, manual, source_types}'),
        {},
      ),
      // At most this many runs of a source type at once (besides max_concurrent).
      source_limits: map(integer(1)),
      // A run whose processes' resident memory (summed over its group) exceeds this is stopped
      // and ends FAILURE. 0: no limit.
      run_memory_limit: v.optional(bytes, 0),
      // No new run starts while the host's MemAvailable is below this. 0: no minimum.
      min_available_memory: v.optional(bytes, 0),
      state_dir: v.optional(nonEmpty, "~/.local/state/ingest-agent"),
      // Empty: <state_dir>/work (private to the agent's user, never a shared /tmp).
      work_dir: v.optional(text, ""),
      max_request_age: v.optional(duration(1_000), "24h"),
      result_retry_for: v.optional(duration(), "24h"),
    }),
    {},
  ),
  ingestion: v.optional(
    v.pipe(
      v.strictObject({
        // preinstalled: the CLI at datahub_command; venv: built and cached per request
        // (src/run/venv.ts); bundled: prebuilt under bundled_dir. See README "Runtimes".
        runtime: v.optional(
          choice(
            ["preinstalled", "venv", "bundled"],
            (input) =>
              `expected "preinstalled" (the datahub CLI at datahub_command), "venv" (environments built per plugins and version) or "bundled" (prebuilt under bundled_dir), got ${
                JSON.stringify(input)
              }`,
          ),
          "preinstalled",
        ),
        datahub_command: v.optional(nonEmpty, "datahub"),
        task_timeout: v.optional(duration(1_000), "24h"),
        timeouts: map(duration(1_000)),
        log_retention: v.optional(duration(), "7d"),
        log_retention_bytes: v.optional(bytes, "1GiB"),
        stale_output_warning: v.optional(duration(1_000), "120s"),
        pass_env: v.optional(
          v.array(
            v.pipe(
              v.string(),
              v.regex(
                /^[A-Za-z_][A-Za-z0-9_]*\*?$/,
                "expected a variable name, or a prefix ending in * (e.g. AWS_*)",
              ),
            ),
          ),
          [],
        ),
        env_secrets_prefix: v.optional(
          v.pipe(
            v.string(),
            v.regex(
              /^[A-Za-z0-9_]*$/,
              "expected the start of a variable name (letters, digits, _)",
            ),
          ),
          "",
        ),
        // runtime: venv (compiled by runtime.ts)
        python: v.optional(nonEmpty, "python3"),
        installer: v.optional(choice(["auto", "uv", "pip"]), "auto"),
        venv_dir: v.optional(trimmed, ""),
        venv_cache_max: v.optional(integer(1, 1000), 10),
        latest_ttl: v.optional(duration(), "24h"),
        index_url: v.optional(indexUrl, ""),
        extra_index_url: v.optional(oneOrMany(indexUrl), []),
        find_links: v.optional(oneOrMany(trimmed), []),
        offline: v.optional(flag, false),
        // runtime: bundled
        bundled_dir: v.optional(nonEmpty, "/opt/datahub/venvs"),
        // Policy, for every runtime. Absent: any source type.
        allowed_source_types: v.optional(v.array(nonEmpty)),
        allow_extra_pip: v.optional(flag, true),
      }),
      v.forward(
        v.check(
          (i) => !i.offline || i.find_links.length > 0,
          "ingestion.offline needs find_links (a directory of wheels to install from)",
        ),
        ["find_links"],
      ),
    ),
    {},
  ),
  observability: v.optional(
    v.strictObject({
      // host:port, [v6]:port or :port (every interface); empty: no endpoints.
      listen: v.optional(
        v.pipe(
          v.string(),
          v.trim(),
          v.regex(
            /^$|^(?:\[[^\]]+\]|[^:[\]\s]*):\d{1,5}$/,
            "expected host:port or :port, e.g. 127.0.0.1:9464 (empty: no endpoints)",
          ),
        ),
        "",
      ),
      log_level: v.optional(choice(["debug", "info", "warn", "error"]), "info"),
      log_format: v.optional(choice(["auto", "json", "text"]), "auto"),
    }),
    {},
  ),
});

// The DataHub Actions executor pipeline file (SPEC §4.1). Only executor_id and the datahub block
// matter; the Kafka source and filters are accepted and ignored.
export const actionsSchema = v.strictObject({
  name: v.optional(v.string()),
  source: v.optional(v.unknown()),
  filters: v.optional(v.unknown()),
  options: v.optional(v.unknown()),
  action: v.strictObject({
    type: v.literal("executor", "only the `executor` action can be run by ingest-agent"),
    config: v.optional(
      v.strictObject({
        executor_id: v.optional(v.string()),
        task_configs: v.optional(v.unknown()),
      }),
      {},
    ),
  }),
  datahub: v.strictObject({
    server: serverUrl,
    token: v.optional(v.string()),
    extra_headers: v.optional(v.record(v.string(), v.string())),
  }),
});

export type NativeDocument = v.InferOutput<typeof nativeSchema>;
export type ActionsDocument = v.InferOutput<typeof actionsSchema>;

/** One problem found by `check`: the dotted path of its key, and the message. */
export interface SchemaIssue {
  path: string;
  message: string;
  /** An unknown key (the caller words the message). */
  unknownKey?: true;
}

/**
 * Validates `doc` against `schema`: the output, or every issue (each unknown key of a strict
 * object, also next to other problems, and the first problem of every other key).
 */
export function check<S extends v.GenericSchema>(
  schema: S,
  doc: unknown,
): { ok: true; value: v.InferOutput<S> } | { ok: false; issues: SchemaIssue[] } {
  const unknown = unknownKeys(schema, doc, "");
  const result = v.safeParse(schema, doc);
  const issues: SchemaIssue[] = unknown.map((path) => ({ path, message: "", unknownKey: true }));
  if (!result.success) issues.push(...described(result.issues, ""));
  if (issues.length > 0 || !result.success) return { ok: false, issues };
  return { ok: true, value: result.output };
}

/** valibot's issues as SchemaIssues (a union's are those of the option the input's shape chose). */
function described(list: readonly v.BaseIssue<unknown>[], at: string): SchemaIssue[] {
  const out: SchemaIssue[] = [];
  for (const issue of list) {
    if (issue.type === "strict_object" && issue.expected === "never") continue; // unknownKeys's
    const keys = (issue.path ?? []).map((p) => String(p.key));
    const path = [at, ...keys].filter((k) => k !== "").join(".");
    const input = issue.input;
    // A union's own issues hold its options' ones, with paths relative to the union.
    const nested = issue.issues?.filter((i) => (i.path?.length ?? 0) > 0);
    if (issue.type === "union" && input && typeof input === "object" && nested?.length) {
      // The input is an object: the object option's problems, not "none of the options".
      out.push(...described(nested, path));
    } else if (issue.kind === "schema" && issue.type === "strict_object" && input === undefined) {
      out.push({ path, message: "missing: this key is required" });
    } else {
      out.push({ path, message: issue.message });
    }
  }
  return out;
}

type Walkable = {
  type: string;
  entries?: Record<string, Walkable>;
  wrapped?: Walkable;
  options?: Walkable[];
};

/** Every key of `doc` that a strict object of `schema` does not know, as dotted paths. */
function unknownKeys(schema: v.GenericSchema, doc: unknown, at: string): string[] {
  const s = schema as unknown as Walkable;
  if (s.wrapped) return unknownKeys(s.wrapped as unknown as v.GenericSchema, doc, at);
  if (s.type === "union" && s.options) {
    const objects = s.options.filter((o) => o.type === "strict_object");
    return objects.length === 1
      ? unknownKeys(objects[0] as unknown as v.GenericSchema, doc, at)
      : [];
  }
  if (s.type !== "strict_object" || !s.entries) return [];
  if (!doc || typeof doc !== "object" || Array.isArray(doc)) return [];
  const out: string[] = [];
  for (const [key, value] of Object.entries(doc)) {
    const path = at ? `${at}.${key}` : key;
    const entry = s.entries[key];
    if (!entry) out.push(path);
    else out.push(...unknownKeys(entry as unknown as v.GenericSchema, value, path));
  }
  return out;
}
