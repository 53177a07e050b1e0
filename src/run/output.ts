/**
 * A run's output, read from the file the CLI writes to. The CLI's stdout and stderr go to one
 * private file in the run directory (not a pipe): a pipe to a dead reader would kill the CLI
 * with SIGPIPE when its agent dies, a file outlives the agent, and a restarted agent reads it
 * again from the start (so run.log holds every line once). The raw file may hold secrets in
 * clear: 0600 in the 0700 run directory, and removed with the recipe at the end of the run.
 */
import { Buffer } from "node:buffer";
import { open } from "node:fs/promises";
import { sleep } from "../timers.ts";

/** Longest line kept; longer lines are cut and marked (as the Python executor does). */
export const MAX_LINE_BYTES = 4096;
export const TRUNCATED_MARK = " [...truncated]";

/**
 * How often the file is checked for new output while the CLI runs: every TAIL_INTERVAL_MS while
 * it prints, then less and less often while it is silent (doubling up to TAIL_IDLE_MS); its exit
 * ends any wait at once.
 */
export const TAIL_INTERVAL_MS = 100;
export const TAIL_IDLE_MS = 1_000;
const CHUNK_BYTES = 64 * 1024;

/**
 * Called after each chunk of output: a promise means "stop reading until it resolves" (run.log
 * is behind); the file then simply waits on disk, so memory stays flat however fast the CLI
 * prints.
 */
export type Backpressure = () => Promise<void> | undefined;

/**
 * Splits a byte stream into lines, cutting lines over MAX_LINE_BYTES. Lines are cut from the
 * bytes and decoded one by one, so every line is a small string of its own: slicing a decoded
 * chunk instead would keep whole chunks alive through the tail's lines (V8 sliced strings).
 * A newline byte never occurs inside a multi-byte UTF-8 sequence, so this is encoding-safe.
 */
export class LineSplitter {
  #rest: Buffer | undefined; // bytes of an unfinished line
  #dropping = false; // inside an over-long line whose head was already emitted
  readonly #onLine: (line: string) => void;

  constructor(onLine: (line: string) => void) {
    this.#onLine = onLine;
  }

  #emit(buf: Buffer, start: number, end: number): void {
    if (end > start && buf[end - 1] === 13) end--; // \r\n
    this.#onLine(buf.toString("utf8", start, end));
  }

  push(chunk: Buffer): void {
    let buf = this.#rest ? Buffer.concat([this.#rest, chunk]) : chunk;
    this.#rest = undefined;
    let start = 0;
    let nl: number;
    while ((nl = buf.indexOf(10, start)) >= 0) {
      if (this.#dropping) this.#dropping = false;
      else if (nl - start > MAX_LINE_BYTES) {
        this.#onLine(buf.toString("utf8", start, start + MAX_LINE_BYTES) + TRUNCATED_MARK);
      } else this.#emit(buf, start, nl);
      start = nl + 1;
    }
    if (start < buf.length) {
      if (this.#dropping) return;
      if (buf.length - start > MAX_LINE_BYTES) {
        this.#onLine(buf.toString("utf8", start, start + MAX_LINE_BYTES) + TRUNCATED_MARK);
        this.#dropping = true;
        return;
      }
      buf = buf.subarray(start);
      this.#rest = Buffer.from(buf); // a copy: do not pin the whole chunk
    }
  }

  /** The last line, if the output did not end with a newline. */
  end(): void {
    if (this.#rest && this.#rest.length > 0 && !this.#dropping) {
      this.#emit(this.#rest, 0, this.#rest.length);
    }
    this.#rest = undefined;
  }
}

/**
 * Reads `file` from its start and keeps reading what is appended, line by line, until `finished`
 * resolves; then reads what is left and ends. Resolves when every byte was read (or the file
 * could not be read: the run's report says what it has).
 */
export async function tailFile(
  file: string,
  onLine: (line: string) => void,
  finished: Promise<unknown>,
  backpressure?: Backpressure,
): Promise<void> {
  const lines = new LineSplitter(onLine);
  let done = false;
  const ended = new AbortController(); // ends the wait between reads (and its timer) at the exit
  const end = () => {
    done = true;
    ended.abort();
  };
  void finished.then(end, end);
  let handle;
  try {
    handle = await open(file, "r");
  } catch {
    return;
  }
  const buf = Buffer.alloc(CHUNK_BYTES);
  let position = 0;
  let wait = TAIL_INTERVAL_MS;
  try {
    for (;;) {
      const last = done; // read once more after the writer finished: nothing is appended then
      const { bytesRead } = await handle.read(buf, 0, buf.length, position);
      if (bytesRead > 0) {
        position += bytesRead;
        // A copy of what was read: the buffer is reused for the next read.
        lines.push(Buffer.from(buf.subarray(0, bytesRead)));
        wait = TAIL_INTERVAL_MS;
        const behind = backpressure?.();
        if (behind) await behind;
        continue;
      }
      if (last) break;
      await sleep(wait, ended.signal);
      wait = Math.min(wait * 2, TAIL_IDLE_MS);
    }
    lines.end();
  } catch {
    // The file was removed or cannot be read any more: what was read stands.
  } finally {
    await handle.close().catch(() => {});
  }
}
