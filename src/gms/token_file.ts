/**
 * `datahub.token_file`: the token a secret manager rotates. Read at start (by the configuration),
 * then checked before a request, at most once a second, by a `stat` (inode, size, mtime: an atomic
 * rename changes the inode, an in-place rewrite the size or mtime), and re-read when that changed
 * or when GMS answered 401 (`reread`). A file that cannot be read (or is empty) keeps the token
 * read before, and says so once. The token itself is never logged nor put in an error message.
 */
import { stat } from "node:fs/promises";
import { readTokenFile } from "../config/files.ts";

/** How often the file is stat'ed at most. */
export const TOKEN_CHECK_MS = 1_000;

export class TokenFile {
  readonly path: string;
  #token: string;
  #stamp = "";
  #checkedAt = -Infinity;
  #checking: Promise<void> | undefined;
  #problem: string | undefined;
  /** Told about every new token, before it is sent (the agent masks it). */
  onChange: (token: string) => void = () => {};
  /** Told when the file becomes unreadable (once per streak) and readable again. */
  onProblem: (problem: string | undefined) => void = () => {};

  constructor(path: string, initial: string) {
    this.path = path;
    this.#token = initial;
  }

  /** The token read last, without checking the file. */
  get token(): string {
    return this.#token;
  }

  /** The current token: the file is stat'ed when it was not in the last second. */
  async current(now = performance.now()): Promise<string> {
    if (now - this.#checkedAt >= TOKEN_CHECK_MS) {
      this.#checkedAt = now;
      await this.#check(false);
    }
    return this.#token;
  }

  /** Re-reads the file now (after a 401); resolves whether the token changed. */
  async reread(): Promise<boolean> {
    const before = this.#token;
    this.#checkedAt = performance.now();
    await this.#check(true);
    return this.#token !== before;
  }

  #check(force: boolean): Promise<void> {
    if (force) return this.#run(true);
    // Concurrent requests share one check.
    this.#checking ??= this.#run(false).finally(() => this.#checking = undefined);
    return this.#checking;
  }

  async #run(force: boolean): Promise<void> {
    let stamp: string;
    try {
      const s = await stat(this.path);
      stamp = `${s.dev}:${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      return this.#fail(`cannot read ${this.path}: ${code === "ENOENT" ? "no such file" : code}`);
    }
    if (!force && stamp === this.#stamp) return;
    let token: string;
    try {
      token = readTokenFile(this.path);
    } catch (err) {
      return this.#fail((err as Error).message);
    }
    this.#stamp = stamp;
    if (this.#problem !== undefined) {
      this.#problem = undefined;
      this.onProblem(undefined);
    }
    if (token !== this.#token) {
      this.onChange(token);
      this.#token = token;
    }
  }

  #fail(problem: string): void {
    if (this.#problem === problem) return;
    this.#problem = problem;
    this.onProblem(problem);
  }
}
