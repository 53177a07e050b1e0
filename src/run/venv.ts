/**
 * The venv runtime's cache: one environment per (plugins, CLI version, extra requirements,
 * interpreter) under `ingestion.venv_dir`, built once and reused.
 *
 *   <venv_dir>/<name>/                 the environment (`<name>` = source type, version, key hash)
 *   <name>/.ingest-agent.json          written last: the environment is complete (what, when, how long)
 *   <name>/.last-used                  when a run last took it (the LRU order)
 *   <name>/.in-use/<run id>            "<pid> <start time>" of a process whose life bounds the use:
 *                                      the agent until the CLI starts, then the run's group leader
 *   <venv_dir>/<name>.lock             the build lock (state/lock.ts: pid + start time, link()ed,
 *                                      a dead holder's lock is taken over)
 *
 * Runs that need the same environment build it once: in this process they queue on the lock
 * in turn, across agent processes on the host the lock file decides. A failed build removes its
 * directory (nothing failed is cached: the next run builds again). After a build, the least
 * recently used environments that no live process uses are removed down to
 * `ingestion.venv_cache_max`.
 */
import { lstat, mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import process from "node:process";
import type { AgentConfig } from "../config/config.ts";
import { AgentError } from "../errors.ts";
import { writeDurably } from "../state/durable.ts";
import { ensurePrivateDir } from "../state/private_fs.ts";
import { alive, processStartTime } from "../state/procs.ts";
import { ifUnlocked, LockBusy, SetupCancelled, withBuildLock } from "./build_lock.ts";
import {
  BoundedLines,
  chooseInstaller,
  createStep,
  describeStep,
  type GroupChild,
  installerEnv,
  installStep,
  runStep,
  type Step,
  type StepResult,
  venvBin,
  venvDatahub,
} from "./installer.ts";
import { environmentKey, normalizeName, type RuntimeRequest } from "./policy.ts";

const READY = ".ingest-agent.json";
const LAST_USED = ".last-used";
const IN_USE = ".in-use";

export interface VenvContext {
  config: AgentConfig;
  /** The agent's environment. */
  env: Record<string, string | undefined>;
  runId: string;
  marker: { name: string; value: string };
  child(c: GroupChild | undefined): void;
  cancelled(): boolean;
}

/** What the ready marker records. */
export interface BuiltEnv {
  requested: string[];
  constraints: boolean;
  installed: string[];
  installer: string;
  builtAt: number;
  buildMs: number;
  steps: { label: string; ms: number }[];
}

/** A run's hold on an environment (its in-use marker). */
export interface EnvUse {
  /** The run's CLI started: its group leader now bounds the use (it may outlive the agent). */
  started(pid: number, startTime: string | undefined): Promise<void>;
  release(): Promise<void>;
}

export interface VenvResult {
  dir: string;
  datahub: string;
  bin: string;
  hit: boolean;
  built: BuiltEnv;
  /** Waiting for another run's build of the same environment. */
  waitedMs: number;
  /** A `latest` environment past latest_ttl that a running run still uses (kept, not rebuilt). */
  staleInUse: boolean;
  evicted: string[];
  use: EnvUse;
}

/** A build that failed: the step, how it ended, the installer's output (raw: mask it). */
export class SetupFailed extends AgentError {
  readonly step: Step;
  readonly result: StepResult | undefined;
  readonly output: string[];
  readonly dir: string;
  readonly ms: number;
  constructor(
    o: { step: Step; result?: StepResult; output: string[]; dir: string; ms: number; why: string },
  ) {
    super("RUNTIME_SETUP_FAILED", `Failed to set up the environment (${o.step.label}): ${o.why}`);
    this.step = o.step;
    this.result = o.result;
    this.output = o.output;
    this.dir = o.dir;
    this.ms = o.ms;
  }
}

export { SetupCancelled } from "./build_lock.ts";

/** Gets the environment `request` needs: from the cache, or built now. */
export async function acquireVenv(request: RuntimeRequest, c: VenvContext): Promise<VenvResult> {
  const { config } = c;
  const root = config.ingestion.venvDir;
  await ensurePrivateDir(root);
  const { name } = environmentKey(request, config.ingestion.python);
  const dir = path.join(root, name);
  const t0 = performance.now();
  const result = await withBuildLock(path.join(root, `${name}.lock`), c.cancelled, async () => {
    const waitedMs = performance.now() - t0;
    let built = await readReady(dir);
    let staleInUse = false;
    if (
      built && request.version === "latest" &&
      Date.now() - built.builtAt > config.ingestion.latestTtlMs
    ) {
      if (await inUse(dir)) staleInUse = true;
      else built = undefined; // refreshed: rebuilt below
    }
    const hit = built !== undefined;
    if (!built) {
      await rm(dir, { recursive: true, force: true }); // half-built, or a stale `latest`
      built = await build(request, dir, c);
    }
    await mark(dir, c.runId, process.pid, processStartTime(process.pid));
    await writeFile(path.join(dir, LAST_USED), String(Date.now()));
    return { hit, built, waitedMs, staleInUse };
  });
  const evicted = result.hit ? [] : await evict(root, config.ingestion.venvCacheMax, name);
  const bin = venvBin(dir);
  return {
    ...result,
    dir,
    bin,
    datahub: venvDatahub(dir),
    evicted,
    use: {
      started: (pid, start) => mark(dir, c.runId, pid, start),
      release: () => rm(path.join(dir, IN_USE, safeName(c.runId)), { force: true }),
    },
  };
}

/** acryl-datahub with its extras and version, as pip reads it. */
export function datahubRequirement(request: RuntimeRequest, extras = true): string {
  const pin = request.version === "latest" ? "" : `==${request.version}`;
  return `acryl-datahub${extras ? `[${request.plugins.join(",")}]` : ""}${pin}`;
}

/**
 * SPEC §4.4: create; acryl-datahub without dependencies (to read its constraints.txt); then with
 * the plugins' extras, and the extra requirements, both under those constraints when the file
 * exists.
 */
async function build(request: RuntimeRequest, dir: string, c: VenvContext): Promise<BuiltEnv> {
  const t0 = performance.now();
  const choice = chooseInstaller(c.config, c.env);
  const env = installerEnv(c.env, c.config, dir, c.marker);
  const output = new BoundedLines();
  const steps: BuiltEnv["steps"] = [];
  const run = async (step: Step) => {
    if (c.cancelled()) throw new SetupCancelled();
    output.add(`$ ${step.command} ${step.args.join(" ")}`);
    const r = await runStep(step, env, path.dirname(dir), (l) => output.add(l), c.child);
    steps.push({ label: step.label, ms: Math.round(r.ms) });
    if (c.cancelled()) throw new SetupCancelled();
    if (r.code !== 0) {
      const why = describeStep(r);
      throw new SetupFailed({
        step,
        result: r,
        output: output.lines(),
        dir,
        ms: performance.now() - t0,
        why: `${why}${lastError(output.lines()) ? `: ${lastError(output.lines())}` : ""}`,
      });
    }
  };
  try {
    await mkdir(path.dirname(dir), { recursive: true });
    await run(createStep(choice, dir));
    const bare = datahubRequirement(request, false);
    await run(
      installStep(choice, c.config, dir, "acryl-datahub (no dependencies)", [bare], ["--no-deps"]),
    );
    const constraints = await findConstraints(dir);
    const withC = constraints ? ["--constraint", constraints] : [];
    const full = datahubRequirement(request);
    await run(installStep(choice, c.config, dir, full, [full], withC));
    if (request.requirements.length > 0) {
      await run(
        installStep(choice, c.config, dir, "extra requirements", request.requirements, withC),
      );
    }
    const datahub = venvDatahub(dir);
    if (!await lstat(datahub).catch(() => undefined)) {
      throw new SetupFailed({
        step: { label: "check", command: datahub, args: [] },
        output: output.lines(),
        dir,
        ms: performance.now() - t0,
        why: `the installed acryl-datahub provides no datahub command (${datahub})`,
      });
    }
    const built: BuiltEnv = {
      requested: [full, ...request.requirements],
      constraints: constraints !== undefined,
      installed: await installedDistributions(dir),
      installer: choice.kind === "uv"
        ? `uv (${choice.uv}), python ${choice.python}`
        : `pip, python ${choice.python}`,
      builtAt: Date.now(),
      buildMs: Math.round(performance.now() - t0),
      steps,
    };
    await writeDurably(path.join(dir, READY), JSON.stringify(built));
    return built;
  } catch (err) {
    await rm(dir, { recursive: true, force: true }).catch(() => {});
    throw err;
  }
}

/** The last line of installer output that looks like an error. */
function lastError(lines: string[]): string | undefined {
  return lines.findLast((l) => /^\s*(error|×|fatal)\b/i.test(l) || /\berror:/i.test(l))?.trim();
}

/** `datahub/constraints.txt` of the installed acryl-datahub, if the package has one. */
async function findConstraints(dir: string): Promise<string | undefined> {
  for (const site of await sitePackages(dir)) {
    const file = path.join(site, "datahub", "constraints.txt");
    if (await lstat(file).catch(() => undefined)) return file;
  }
  return undefined;
}

async function sitePackages(dir: string): Promise<string[]> {
  if (process.platform === "win32") return [path.join(dir, "Lib", "site-packages")];
  const lib = path.join(dir, "lib");
  const names = await readdir(lib).catch(() => [] as string[]);
  return names.filter((n) => n.startsWith("python")).map((n) => path.join(lib, n, "site-packages"));
}

/** `name==version` of what the environment holds (its own pip and setuptools left out). */
async function installedDistributions(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const site of await sitePackages(dir)) {
    for (const entry of await readdir(site).catch(() => [] as string[])) {
      const m = /^(.+?)-([^-]+)\.dist-info$/.exec(entry);
      if (!m || ["pip", "setuptools"].includes(normalizeName(m[1]!))) continue;
      const meta = await readFile(path.join(site, entry, "METADATA"), "utf8").catch(() => "");
      const named = /^Name:\s*(.+)$/m.exec(meta)?.[1]?.trim() ?? m[1]!;
      out.push(`${named}==${m[2]}`);
    }
  }
  return out.sort((a, b) => a.localeCompare(b));
}

async function readReady(dir: string): Promise<BuiltEnv | undefined> {
  try {
    return JSON.parse(await readFile(path.join(dir, READY), "utf8")) as BuiltEnv;
  } catch {
    return undefined;
  }
}

function safeName(id: string): string {
  return id.replace(/[^\w.-]/g, "_");
}

/** Records (or moves) a run's use of an environment. */
async function mark(dir: string, runId: string, pid: number, start: string | undefined) {
  await mkdir(path.join(dir, IN_USE), { recursive: true });
  await writeDurably(path.join(dir, IN_USE, safeName(runId)), `${pid} ${start ?? ""}`);
}

/** Whether a live process uses the environment; markers of dead processes are removed. */
export async function inUse(dir: string): Promise<boolean> {
  const markers = path.join(dir, IN_USE);
  let used = false;
  for (const name of await readdir(markers).catch(() => [] as string[])) {
    const file = path.join(markers, name);
    const [pid, start] = (await readFile(file, "utf8").catch(() => "")).trim().split(" ");
    const holder = Number(pid);
    const live = Number.isInteger(holder) && holder > 0 && alive(holder) &&
      (!start || processStartTime(holder) === start);
    if (live) used = true;
    else await rm(file, { force: true }).catch(() => {});
  }
  return used;
}

/**
 * Keeps at most `max` complete environments: removes the least recently used ones that no live
 * process uses and no one is building, never `keep`. Leftovers of interrupted builds (no ready
 * marker, lock free) go too. Returns the names removed.
 */
export async function evict(root: string, max: number, keep: string): Promise<string[]> {
  const entries: { name: string; lastUsed: number; ready: boolean }[] = [];
  for (const name of await readdir(root).catch(() => [] as string[])) {
    const dir = path.join(root, name);
    if (name.startsWith(".") || !(await lstat(dir).catch(() => undefined))?.isDirectory()) continue;
    const ready = await readReady(dir);
    const last = Number(await readFile(path.join(dir, LAST_USED), "utf8").catch(() => ""));
    entries.push({ name, ready: ready !== undefined, lastUsed: last || ready?.builtAt || 0 });
  }
  const removed: string[] = [];
  const remove = async (name: string, mustBeUnused: boolean) => {
    const dir = path.join(root, name);
    const ok = await ifUnlocked(path.join(root, `${name}.lock`), async () => {
      if (mustBeUnused && await inUse(dir)) throw new LockBusy();
      await rm(path.join(dir, READY), { force: true }); // never half-removed yet "ready"
      await rm(dir, { recursive: true, force: true });
    }).catch(() => false);
    if (ok) removed.push(name);
    return ok;
  };
  for (const e of entries) if (!e.ready && e.name !== keep) await remove(e.name, true);
  let count = entries.filter((e) => e.ready).length;
  const candidates = entries.filter((e) => e.ready && e.name !== keep)
    .sort((a, b) => a.lastUsed - b.lastUsed);
  for (const e of candidates) {
    if (count <= max) break;
    if (await remove(e.name, true)) count--;
  }
  return removed;
}
