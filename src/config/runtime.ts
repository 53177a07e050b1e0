/**
 * The runtime part of `ingestion:` compiled: how a run gets its `datahub` CLI (preinstalled,
 * venv, bundled), what the venv runtime's installer is told (index, find-links, offline), and
 * the policy every runtime applies (allowed source types, extra pip). See README "Runtimes".
 */
import path from "node:path";

export type RuntimeKind = "preinstalled" | "venv" | "bundled";

export interface RuntimeConfig {
  readonly runtime: RuntimeKind;
  /** venv: the interpreter environments are made from (`<python> -m venv`, `uv venv --python`). */
  readonly python: string;
  /** venv: `auto` is uv when it is on PATH, else pip. */
  readonly installer: "auto" | "uv" | "pip";
  /** venv: where the cached environments live (absolute). */
  readonly venvDir: string;
  /** venv: at most this many environments are kept (least recently used unused ones go). */
  readonly venvCacheMax: number;
  /** venv: an environment for `latest` (unpinned) is rebuilt when older than this. */
  readonly latestTtlMs: number;
  readonly indexUrl: string;
  readonly extraIndexUrls: readonly string[];
  /** Directories (absolute) or URLs of wheels. */
  readonly findLinks: readonly string[];
  /** Install from findLinks only (`--no-index`); nothing is fetched from an index. */
  readonly offline: boolean;
  /** bundled: holds `<source type>-bundled` and `default-bundled` environments (absolute). */
  readonly bundledDir: string;
  /** Source types a request may have; undefined: any. */
  readonly allowedSourceTypes: readonly string[] | undefined;
  /** Whether requests may add extra_pip_plugins / extra_pip_requirements. */
  readonly allowExtraPip: boolean;
}

/** The validated keys (schema.ts) this compiles. */
export interface RuntimeKeys {
  runtime: RuntimeKind;
  python: string;
  installer: "auto" | "uv" | "pip";
  venv_dir: string;
  venv_cache_max: number;
  latest_ttl: number;
  index_url: string;
  extra_index_url: string[];
  find_links: string[];
  offline: boolean;
  bundled_dir: string;
  allowed_source_types?: string[] | undefined;
  allow_extra_pip: boolean;
}

/** `expand` makes a configured path absolute (~ expanded). */
export function compileRuntime(
  c: RuntimeKeys,
  o: { stateDir: string; expand: (p: string) => string },
): RuntimeConfig {
  return {
    runtime: c.runtime,
    python: c.python,
    installer: c.installer,
    venvDir: c.venv_dir ? o.expand(c.venv_dir) : path.join(o.stateDir, "venvs"),
    venvCacheMax: c.venv_cache_max,
    latestTtlMs: c.latest_ttl,
    indexUrl: c.index_url,
    extraIndexUrls: [...c.extra_index_url],
    findLinks: c.find_links.map((l) => isUrl(l) ? l : o.expand(l)),
    offline: c.offline,
    bundledDir: o.expand(c.bundled_dir),
    allowedSourceTypes: c.allowed_source_types ? [...c.allowed_source_types] : undefined,
    allowExtraPip: c.allow_extra_pip,
  };
}

/** Whether a find_links entry is a URL (else it is a directory path). */
export function isUrl(s: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(s);
}
