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
    metrics.logBytes(Buffer.byteLength(raw) + 1);
    const line = this.#redact(raw);
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
   * it is bounded): the first lines up to headChars and the last lines up to tailChars.
   */
  excerpt(headChars: number, tailChars: number): string {
    const head: string[] = [];
    let size = 0;
    for (const l of this.#head) {
      if (size + l.length + 1 > headChars) break;
      head.push(l);
      size += l.length + 1;
    }
    const all = this.#tailLines();
    const tail: string[] = [];
    size = 0;
    const candidates = [...this.#head.slice(head.length), ...all];
    for (let i = candidates.length - 1; i >= 0; i--) {
      const l = candidates[i]!;
      if (size + l.length + 1 > tailChars) break;
      tail.unshift(l);
      size += l.length + 1;
    }
    const omitted = this.#lines - head.length - tail.length;
    return [...head, ...(omitted > 0 ? [`… ${omitted} lines omitted …`] : []), ...tail].join("\n");
  }

  /** Flushes and closes run.log. */
  close(): Promise<void> {
    const file = this.#file;
    if (!file) return Promise.resolve();
    return new Promise((resolve) => file.end(() => resolve()));
  }
}
