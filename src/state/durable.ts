/**
 * Files that survive a crash whole: a write goes to a temp file unique to that write, which is
 * fsynced, renamed over the target, then the directory is fsynced (state_dir.ts, lock.ts). Writes
 * that land together in one directory share its fsync (`syncDir`: group commit).
 *
 * The files are small (a journal entry, a result): open, write, close, rename and unlink take
 * microseconds, so they run on the calling thread; only the fsyncs, which wait for the disk, go to
 * libuv's pool. Each pool hop costs the agent more CPU than those calls themselves (BENCHMARKS.md).
 */
import { closeSync, fsync, openSync, renameSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import process from "node:process";
import { setImmediate } from "node:timers";

/** Makes temp names unique per write within this process (the pid makes them unique across). */
let tempSeq = 0;

/** Writes `content` to `file` so that a crash leaves either the old or the new file, whole. */
export async function writeDurably(file: string, content: string): Promise<void> {
  const tmp = await writeTemp(file, content);
  try {
    renameSync(tmp, file);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  await syncDir(path.dirname(file));
}

/** A new, fsynced, 0600 temp file next to `file`, named uniquely for this write. */
export async function writeTemp(file: string, content: string): Promise<string> {
  const tmp = `${file}.${process.pid}.${++tempSeq}.tmp`;
  const fd = openSync(tmp, "wx", 0o600);
  try {
    writeFileSync(fd, content, "utf8");
    await fsyncFd(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  closeSync(fd);
  return tmp;
}

/** fsync(2) on libuv's pool (the callback API: no FileHandle, one hop). */
function fsyncFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fsync(fd, (err) => err ? reject(err) : resolve()));
}

/** A directory sync that callers join until it starts. */
interface Batch {
  promise: Promise<void>;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** Per directory: whether a sync runs now, and the batch that the next sync will cover. */
const dirSyncs = new Map<string, { running: boolean; next: Batch | undefined }>();

/**
 * Makes a directory's entries durable (the renames and unlinks in it that completed before the
 * call); a no-op where unsupported. Group commit: the callers of one turn of the event loop
 * share one fsync of the directory, and a caller that comes while a sync runs (which may have
 * started before its change) waits for the next one. Each promise resolves only after a sync
 * that started after its call has ended (and rejects with that sync's error).
 */
export function syncDir(dir: string): Promise<void> {
  let state = dirSyncs.get(dir);
  if (!state) dirSyncs.set(dir, state = { running: false, next: undefined });
  if (!state.next) {
    let resolve!: () => void, reject!: (err: unknown) => void;
    const promise = new Promise<void>((res, rej) => (resolve = res, reject = rej));
    state.next = { promise, resolve, reject };
    const waiting = state;
    if (!waiting.running) setImmediate(() => void runBatch(dir, waiting));
  }
  return state.next.promise;
}

async function runBatch(dir: string, state: { running: boolean; next: Batch | undefined }) {
  const batch = state.next;
  if (!batch || state.running) return;
  state.next = undefined;
  state.running = true;
  try {
    await syncDirNow(dir);
    batch.resolve();
  } catch (err) {
    batch.reject(err);
  } finally {
    state.running = false;
    if (state.next) void runBatch(dir, state);
    else dirSyncs.delete(dir);
  }
}

/** One fsync of a directory. */
async function syncDirNow(dir: string): Promise<void> {
  let fd: number | undefined;
  try {
    fd = openSync(dir, "r");
    await fsyncFd(fd);
  } catch (err) {
    const code = errno(err);
    if (code !== "EINVAL" && code !== "EISDIR" && code !== "ENOTSUP") throw err;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * Removes a file; one that is not there is not an error. (One unlink: `rm` with `force` looks the
 * path up first.) The directory entry is durable only after a `syncDir`.
 */
// deno-lint-ignore require-await -- a Promise, so callers see a failure as a rejection
export async function removeFile(file: string): Promise<void> {
  try {
    unlinkSync(file);
  } catch (err) {
    if (errno(err) !== "ENOENT") throw err;
  }
}

export function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}
