/**
 * state/ owns what survives the agent: state_dir (this file, lock.ts, durable.ts), the outbox of
 * terminal results, log retention, private directories (private_fs.ts) and process identity
 * (procs.ts). It may import gms/ and below; never run/ or pool/.
 *
 * The agent's durable state in `state_dir`, so that a crash or a restart loses nothing:
 *
 *   agent.lock            "<pid> <starttime>" of the agent using this directory (two agents must
 *                         not share it). See "The lock" below.
 *   agent.lock.takeover   present only while an agent replaces a stale lock (a few ms), or
 *                         left by an agent that died doing so (then replaced like a stale lock).
 *   runs/<id>.json        one file per claimed run: request, owner instance, process group, run
 *                         dir, and the exit status once captured. Written before acting on it.
 *   outbox/<id>.json      one file per terminal result not yet delivered to GMS.
 *   *.json.corrupt        a state file that could not be read back, set aside for the operator.
 *
 * Durability: a write goes to a temp file unique to that write, which is fsynced, renamed over
 * the target, and then the directory is fsynced; removals fsync the directory too (writes and
 * removals that land together in one directory share that fsync: durable.ts, group commit).
 * Writes and removals of one file apply in call order. Files are 0600, in 0700 directories.
 *
 * The lock. A lock is live while its process exists with the recorded start time (a pid alone
 * could be reused). It is only ever created with link() from a complete temp file (atomic, fails
 * on EEXIST: no reader sees a half-written lock), removed by its own live holder (close), or
 * replaced by rename() once stale, and only by the agent holding `agent.lock.takeover`, after
 * re-reading it *while holding that guard* and finding it unchanged. The guard is taken the same
 * way, recursively: a guard left by an agent that died mid-takeover is itself replaced under
 * `agent.lock.takeover.takeover`, and so on. Two agents starting together on a stale lock thus
 * serialise on the guard; the loser re-reads the lock, finds the winner live, and gets
 * STATE_LOCKED. Between StateDir instances of one process (same pid, so the file cannot tell
 * them apart) an in-process registry decides.
 * Remaining window: none between agents of this version that see each other's pids, on a local
 * filesystem with POSIX link/rename (hard links are required: without them open() fails, it
 * does not fall back to a racy create). Outside that: agents in different pid namespaces
 * sharing the directory judge each other dead; an older agent (unlink-then-create takeover) can
 * still race; and a stale lock whose pid and start time match, by chance, a process alive after
 * a reboot is judged live (a refusal to start, never two agents).
 */
import { link, mkdir, readdir, readFile, realpath, rm } from "node:fs/promises";
import path from "node:path";
import { AgentError } from "../errors.ts";
import { errno, removeFile, syncDir, writeDurably } from "./durable.ts";
import { acquireLock, releaseHeldLock } from "./lock.ts";
import { alive } from "./procs.ts";
import type { ResultValue } from "../request.ts";

export { alive } from "./procs.ts";

export interface RunRecord {
  urn: string;
  id: string;
  /** The agent instance that claimed it (the owner stamped in GMS). */
  instance: string;
  task: string;
  runDir: string;
  startTimeMs: number;
  /** Process group of the CLI, once started. */
  pgid?: number;
  /**
   * Start time of the group leader (from processStartTime), recorded with `pgid`: a pgid is only
   * signalled while its leader still has this start time.
   */
  pgidStart?: string;
  /** The claim's fencing token. */
  token?: string;
  /** Why the run was stopped, recorded when a cancel begins. */
  cancel?: "user" | "timeout" | "shutdown" | "fenced" | "lease" | "duplicate" | "memory";
  /** The last result version we know we wrote. */
  version?: string;
  /**
   * The run's masked forms of its secrets (redact.ts `patterns`): this file is 0600 in a 0700
   * directory and removed with the run, like the recipe; a restarted agent needs them to mask
   * what the run printed before it reports it.
   */
  masks?: string[];
  /** The report's Environment Setup section (venv and bundled runtimes), masked. */
  setup?: string;
  /** Captured once the CLI exited. */
  exit?: { code: number | null; signal: string | null };
  /**
   * The highest resident memory of the run's process group seen so far, in bytes (run/memory.ts:
   * journaled from the first sample of the whole group on, then each time it grew by 10 %).
   */
  peakRssBytes?: number;
  /**
   * Recorded when the CLI started under the shim (process.ts): what a restarted agent needs to
   * re-adopt the run. `output` and `status` are the raw output and exit status files; the
   * deadline is the run's timeout on the wall clock; the notes are the report's so far.
   */
  adoptable?: {
    output: string;
    status: string;
    sourceType: string;
    deadlineMs: number;
    timeoutLimit: string;
    notes: { at: number; level: "INFO" | "ERROR"; message: string }[];
  };
}

export interface OutboxRecord {
  urn: string;
  id: string;
  /** The owner instance stamped in GMS when the result was produced. */
  instance: string;
  value: ResultValue;
  /** The result version we last wrote, when known (in-process); else it is re-read. */
  version?: string;
  /** The claim's fencing token: a stored result with it is ours. */
  token?: string;
  /** Fixed for all attempts, so a delivery whose answer was lost is recognised as landed. */
  writeId?: string;
  /** When the result was produced: retries stop result_retry_for after this. */
  createdAt: number;
}

/** Told about state that could not be used (a corrupt file set aside, an unreadable one). */
export type ProblemSink = (message: string, details: Record<string, unknown>) => void;

export interface StateDirOptions {
  onProblem?: ProblemSink;
}

export class StateDir {
  readonly dir: string;
  readonly #onProblem: ProblemSink;
  /** The lock path this instance holds (resolved), once open. */
  #held: string | undefined;
  /** The last pending operation per file, so a file's writes and removals apply in call order. */
  readonly #pending = new Map<string, Promise<void>>();

  constructor(dir: string, options: StateDirOptions = {}) {
    this.dir = dir;
    this.#onProblem = options.onProblem ?? (() => {});
  }

  /** Creates the layout and takes the lock; throws STATE_LOCKED if a live agent holds it. */
  async open(): Promise<void> {
    for (const sub of ["", "runs", "outbox"]) {
      await mkdir(path.join(this.dir, sub), { recursive: true, mode: 0o700 });
    }
    if (this.#held) return;
    const lock = path.join(await realpath(this.dir), "agent.lock");
    await acquireLock(lock, (holder, note) => this.#locked(holder, note));
    this.#held = lock;
    try {
      await syncDir(this.dir);
      await removeLeftovers(this.dir);
    } catch (err) {
      this.close();
      throw err;
    }
  }

  #locked(holder: string, note?: string): AgentError {
    const pid = holder.trim().split(" ")[0] || "unknown";
    return new AgentError(
      "STATE_LOCKED",
      `state_dir ${this.dir} is used by another ingest-agent (pid ${pid}${
        note ? `, ${note}` : ""
      }); give each agent its own agent.state_dir`,
    );
  }

  /** Releases the lock (synchronous, so it also works while exiting). */
  close(): void {
    const lock = this.#held;
    if (!lock) return;
    this.#held = undefined;
    releaseHeldLock(lock);
  }

  saveRun(rec: RunRecord): Promise<void> {
    return this.#write(this.#file("runs", rec.id), rec);
  }

  removeRun(id: string): Promise<void> {
    return this.#remove(this.#file("runs", id));
  }

  listRuns(): Promise<RunRecord[]> {
    return this.#list<RunRecord>("runs");
  }

  saveResult(rec: OutboxRecord): Promise<void> {
    return this.#write(this.#file("outbox", rec.id), rec);
  }

  removeResult(id: string): Promise<void> {
    return this.#remove(this.#file("outbox", id));
  }

  listResults(): Promise<OutboxRecord[]> {
    return this.#list<OutboxRecord>("outbox");
  }

  #file(sub: string, id: string): string {
    return path.join(this.dir, sub, `${safe(id)}.json`);
  }

  #write(file: string, value: unknown): Promise<void> {
    const text = JSON.stringify(value);
    return this.#serial(file, () => writeDurably(file, text));
  }

  #remove(file: string): Promise<void> {
    return this.#serial(file, async () => {
      await removeFile(file);
      await syncDir(path.dirname(file));
    });
  }

  /** Runs `op` after the file's previous operation settled (whatever its outcome). */
  #serial(file: string, op: () => Promise<void>): Promise<void> {
    const run = (this.#pending.get(file) ?? Promise.resolve()).catch(() => {}).then(op);
    const settled = run.catch(() => {});
    this.#pending.set(file, settled);
    void settled.then(() => {
      if (this.#pending.get(file) === settled) this.#pending.delete(file);
    });
    return run;
  }

  async #list<T>(sub: string): Promise<T[]> {
    const dir = path.join(this.dir, sub);
    const out: T[] = [];
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (err) {
      if (errno(err) !== "ENOENT") this.#problem(`cannot list ${dir}`, { dir, error: text(err) });
      return out;
    }
    for (const name of names.filter((n) => n.endsWith(".json")).sort()) {
      const rec = await this.#read(path.join(dir, name));
      if (rec !== undefined) out.push(rec as T);
    }
    return out;
  }

  /** One state file, or undefined when it is gone, unreadable or corrupt (then reported). */
  async #read(file: string): Promise<unknown> {
    let content: string;
    try {
      content = await readFile(file, "utf8");
    } catch (err) {
      if (errno(err) === "ENOENT") return undefined; // removed since the listing
      this.#problem(`cannot read state file ${file}; skipped`, { file, error: text(err) });
      return undefined;
    }
    const parsed = parseRecord(content);
    if (parsed.ok) return parsed.value;
    const movedTo = await quarantine(file);
    this.#problem(
      movedTo
        ? `corrupt state file ${file} (${parsed.error}); moved to ${movedTo}`
        : `corrupt state file ${file} (${parsed.error}); could not move it aside, skipped`,
      { file, movedTo, error: parsed.error },
    );
    return undefined;
  }

  #problem(message: string, details: Record<string, unknown>): void {
    try {
      this.#onProblem(message, details);
    } catch { /* a reporting failure must not lose the other records */ }
  }
}

// ---- Records on disk ----

function safe(id: string): string {
  return id.replace(/[^\w.-]/g, "_");
}

type Parsed = { ok: true; value: unknown } | { ok: false; error: string };

/** Parses a state file and checks the shape every record has (urn and id strings). */
function parseRecord(content: string): Parsed {
  let value: unknown;
  try {
    value = JSON.parse(content);
  } catch (err) {
    return { ok: false, error: `not JSON: ${text(err)}` };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { ok: false, error: "not a JSON object" };
  }
  const rec = value as Record<string, unknown>;
  if (typeof rec.urn !== "string" || typeof rec.id !== "string") {
    return { ok: false, error: "missing urn or id" };
  }
  return { ok: true, value };
}

/** Renames a corrupt file to `<name>.corrupt` (never over an earlier one); its new path. */
async function quarantine(file: string): Promise<string | undefined> {
  for (const target of [`${file}.corrupt`, `${file}.${Date.now()}.corrupt`]) {
    try {
      // link + unlink rather than rename: an earlier .corrupt copy is kept, not replaced.
      await link(file, target);
      await rm(file, { force: true });
      await syncDir(path.dirname(file));
      return target;
    } catch (err) {
      if (errno(err) !== "EEXIST") return undefined;
    }
  }
  return undefined;
}

/**
 * Removes temp files a crashed agent left (called with the lock held, so no other agent writes
 * here): every one in runs/ and outbox/, and lock temp files whose process is gone.
 */
async function removeLeftovers(dir: string): Promise<void> {
  for (const sub of ["runs", "outbox"]) {
    const names = await readdir(path.join(dir, sub)).catch(() => [] as string[]);
    for (const name of names.filter((n) => n.endsWith(".tmp"))) {
      await rm(path.join(dir, sub, name), { force: true });
    }
  }
  for (const name of await readdir(dir)) {
    const pid = /^agent\.lock(?:\.takeover)*\.(\d+)\.\d+\.tmp$/.exec(name)?.[1];
    if (pid && !alive(Number(pid))) await rm(path.join(dir, name), { force: true });
  }
}

// ---- Helpers ----

function text(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
