/**
 * The log of one run, kept in bounded memory whatever the run prints: the first lines (head, up
 * to HEAD_BYTES) where connection errors usually are, a ring of the last TAIL_LINES lines, and
 * counts. The full log goes to `run.log` in the run directory (already redacted), so operators
 * can read what the UI report leaves out.
 */
import { Buffer } from "node:buffer";
import { createWriteStream, type WriteStream } from "node:fs";
import { metrics } from "../observe/metrics.ts";
import { openNewPrivateFile } from "../state/private_fs.ts";

export const HEAD_BYTES = 64 * 1024;
export const TAIL_LINES = 2000;

export interface RunLogOptions {
  /** Where the full log is written; omitted = memory only. */
  file?: string;
  /** Masks secrets; applied to every line before it is kept or written. */
  redact?: (line: string) => string;
  headBytes?: number;
  tailLines?: number;
}

export class RunLog {
  readonly #head: string[] = [];
  #headBytes = 0;
  #headFull = false;
  readonly #tail: string[] = [];
  #tailStart = 0; // ring index of the oldest tail line
  #lines = 0;
  /** UTF-8 bytes of every line seen (masked), newlines included. */
  #bytes = 0;
  #changes = 0;
  #lastLineAt: number | undefined;
  readonly #file: WriteStream | undefined;
  #behind = false;
  readonly #redact: (line: string) => string;
  readonly #maxHead: number;
  readonly #maxTail: number;

  constructor(options: RunLogOptions = {}) {
    this.#redact = options.redact ?? ((l) => l);
    this.#maxHead = options.headBytes ?? HEAD_BYTES;
    this.#maxTail = options.tailLines ?? TAIL_LINES;
    // A new file, never one that exists already or a symbolic link in its place.
    this.#file = options.file
      ? createWriteStream(options.file, { fd: openNewPrivateFile(options.file) })
      : undefined;
    this.#file?.on("error", () => {}); // a full disk must not crash the agent; the report still has head+tail
  }

  /** Adds one line of output. */
  add(raw: string): void {
    const bytes = Buffer.byteLength(raw) + 1;
    metrics.logBytes(bytes);
    const line = this.#redact(raw);
    this.#bytes += line === raw ? bytes : Buffer.byteLength(line) + 1;
    this.#lines++;
    this.#changes++;
    this.#lastLineAt = Date.now();
    if (this.#file && !this.#file.write(line + "\n")) this.#behind = true;
    if (!this.#headFull) {
      const size = line.length + 1;
      if (this.#headBytes + size <= this.#maxHead) {
        this.#head.push(line);
        this.#headBytes += size;
        return;
      }
      this.#headFull = true;
    }
    if (this.#tail.length < this.#maxTail) {
      this.#tail.push(line);
    } else {
      this.#tail[this.#tailStart] = line;
      this.#tailStart = (this.#tailStart + 1) % this.#maxTail;
    }
  }

  /**
   * A promise when run.log's write buffer is full (resolves once it drained), else undefined:
   * the reader pauses the pipe meanwhile (see process.ts Backpressure).
   */
  backpressure = (): Promise<void> | undefined => {
    const file = this.#file;
    if (!this.#behind || !file) return undefined;
    return new Promise((resolve) => {
      file.once("drain", () => {
        this.#behind = false;
        resolve();
      });
    });
  };

  /** Total lines seen. */
  get lines(): number {
    return this.#lines;
  }

  /** Increases on every added line (for "has anything changed since the last report"). */
  get changes(): number {
    return this.#changes;
  }

  get lastLineAt(): number | undefined {
    return this.#lastLineAt;
  }

  #tailLines(): string[] {
    return [...this.#tail.slice(this.#tailStart), ...this.#tail.slice(0, this.#tailStart)];
  }

  /** Lines dropped between head and tail. */
  get omitted(): number {
    return this.#lines - this.#head.length - this.#tail.length;
  }

  /** Head, an omission marker, tail: the text reports show. */
  text(): string {
    const omitted = this.omitted;
    const parts = [...this.#head];
    if (omitted > 0) parts.push(`… ${omitted} lines omitted …`);
    parts.push(...this.#tailLines());
    return parts.join("\n");
  }

  /**
   * A short excerpt for RUNNING progress writes (every write is a new stored aspect version, so
   * it is bounded): whole lines from the start up to `headBudget` and from the end up to
   * `tailBudget`, as `size` measures a line with its newline (default: characters + 1), and a
   * marker line with the count and bytes of the lines left out. A last line bigger than the tail
   * budget shows its end, cut, after "…": the latest output is always visible.
   */
  excerpt(
    headBudget: number,
    tailBudget: number,
    size: (line: string) => number = (l) => l.length + 1,
  ): string {
    const kept = this.#head.length + this.#tail.length;
    // The kept lines in order: the head, then the ring from its oldest line.
    const at = (i: number) =>
      i < this.#head.length
        ? this.#head[i]!
        : this.#tail[(this.#tailStart + i - this.#head.length) % this.#tail.length]!;
    let head = 0;
    for (let used = 0; head < this.#head.length; head++) {
      used += size(this.#head[head]!);
      if (used > headBudget) break;
    }
    let from = kept; // the tail is at(from) … at(kept - 1)
    for (let used = 0; from > head; from--) {
      used += size(at(from - 1));
      if (used > tailBudget) break;
    }
    const lines = this.#head.slice(0, head);
    for (let i = from; i < kept; i++) lines.push(at(i));
    let shownBytes = lines.reduce((a, l) => a + Buffer.byteLength(l) + 1, 0);
    if (from === kept && kept > head) {
      const cut = cutToFit(at(kept - 1), tailBudget, size);
      shownBytes += Buffer.byteLength(cut) + 1;
      lines.push(CUT + cut);
    }
    const omitted = this.#lines - lines.length; // a cut line counts as shown; its bytes do not
    if (omitted > 0) {
      lines.splice(head, 0, `… ${omitted} lines (${this.#bytes - shownBytes} bytes) omitted …`);
    }
    return lines.join("\n");
  }

  /** Flushes and closes run.log. */
  close(): Promise<void> {
    const file = this.#file;
    if (!file) return Promise.resolve();
    return new Promise((resolve) => file.end(() => resolve()));
  }
}

const CUT = "…";

/** The longest end of `line` that `size` allows within `budget` once "…" precedes it. */
function cutToFit(line: string, budget: number, size: (line: string) => number): string {
  let lo = 0; // the longest suffix length known to fit
  let hi = line.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (size(CUT + line.slice(line.length - mid)) <= budget) lo = mid;
    else hi = mid - 1;
  }
  const end = line.slice(line.length - lo);
  // Never start on the second half of a surrogate pair.
  return /^[\udc00-\udfff]/.test(end) ? end.slice(1) : end;
}
