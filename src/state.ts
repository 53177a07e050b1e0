/**
 * The agent's durable state in `state_dir`, so that a crash or a restart loses nothing:
 *
 *   agent.lock          the pid of the agent using this directory (two agents must not share it)
 *   runs/<id>.json      one file per claimed run: request, owner instance, process group, run dir,
 *                       and the exit status once captured. Written before acting on it.
 *   outbox/<id>.json    one file per terminal result not yet delivered to GMS.
 *
 * Files are written atomically (temp file + rename), 0600, in 0700 directories.
 */
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import process from "node:process";
import { AgentError } from "./errors.ts";
import type { ResultValue } from "./request.ts";

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
  /** Captured once the CLI exited. */
  exit?: { code: number | null; signal: string | null };
}

export interface OutboxRecord {
  urn: string;
  id: string;
  /** The owner instance stamped in GMS when the result was produced. */
  instance: string;
  value: ResultValue;
  /** The result version we last wrote, when known (in-process); else it is re-read. */
  version?: string;
  /** When the result was produced: retries stop result_retry_for after this. */
  createdAt: number;
}

export class StateDir {
  readonly dir: string;
  readonly #lock: string;

  constructor(dir: string) {
    this.dir = dir;
    this.#lock = path.join(dir, "agent.lock");
  }

  /** Creates the layout and takes the lock; throws STATE_LOCKED if a live agent holds it. */
  async open(): Promise<void> {
    for (const sub of ["", "runs", "outbox"]) {
      await mkdir(path.join(this.dir, sub), { recursive: true, mode: 0o700 });
    }
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(this.#lock, "wx", 0o600);
        writeSync(fd, `${process.pid} ${processStartTime(process.pid) ?? ""}`);
        closeSync(fd);
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        const [pid, started] = readFileSync(this.#lock, "utf8").trim().split(" ");
        const holder = Number(pid);
        // The pid alone could be reused by an unrelated process after a crash: compare start times.
        const same = !started || processStartTime(holder) === started;
        if (holder && holder !== process.pid && alive(holder) && same) {
          throw new AgentError(
            "STATE_LOCKED",
            `state_dir ${this.dir} is used by another ingest-agent (pid ${holder}); give each agent its own agent.state_dir`,
          );
        }
        unlinkSync(this.#lock); // stale: its agent is gone
      }
    }
  }

  /** Releases the lock (synchronous, so it also works while exiting). */
  close(): void {
    try {
      if (readFileSync(this.#lock, "utf8").split(" ")[0] === String(process.pid)) {
        unlinkSync(this.#lock);
      }
    } catch { /* already gone */ }
  }

  saveRun(rec: RunRecord): Promise<void> {
    return this.#write(path.join(this.dir, "runs", `${safe(rec.id)}.json`), rec);
  }

  removeRun(id: string): Promise<void> {
    return rm(path.join(this.dir, "runs", `${safe(id)}.json`), { force: true });
  }

  listRuns(): Promise<RunRecord[]> {
    return this.#list<RunRecord>("runs");
  }

  saveResult(rec: OutboxRecord): Promise<void> {
    return this.#write(path.join(this.dir, "outbox", `${safe(rec.id)}.json`), rec);
  }

  removeResult(id: string): Promise<void> {
    return rm(path.join(this.dir, "outbox", `${safe(id)}.json`), { force: true });
  }

  listResults(): Promise<OutboxRecord[]> {
    return this.#list<OutboxRecord>("outbox");
  }

  async #write(file: string, value: unknown): Promise<void> {
    const tmp = `${file}.${process.pid}.tmp`;
    await writeFile(tmp, JSON.stringify(value), { mode: 0o600 });
    await rename(tmp, file);
  }

  async #list<T>(sub: string): Promise<T[]> {
    const dir = path.join(this.dir, sub);
    const out: T[] = [];
    for (const name of (await readdir(dir).catch(() => [] as string[])).sort()) {
      if (!name.endsWith(".json")) continue;
      try {
        out.push(JSON.parse(await readFile(path.join(dir, name), "utf8")) as T);
      } catch {
        // A torn file cannot come from the rename-based writes; ignore anything unreadable.
      }
    }
    return out;
  }
}

function safe(id: string): string {
  return id.replace(/[^\w.-]/g, "_");
}

/** The kernel's start time of a process (Linux /proc), to tell a reused pid from the original. */
function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

/** Whether a process (pid > 0) or a process group (pid < 0) exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
