/**
 * Cleanup that runs even on failure or Ctrl-C: every process and temp dir a scenario creates is
 * registered in a Scope; scopes are disposed in reverse order, and `disposeAll()` (called from the
 * signal handler and bench.ts's finally) disposes whatever is still open.
 */

type Cleanup = () => Promise<void> | void;

const open = new Set<Scope>();

export class Scope implements AsyncDisposable {
  readonly #cleanups: Cleanup[] = [];
  #disposed = false;

  constructor() {
    open.add(this);
  }

  defer(fn: Cleanup): void {
    if (this.#disposed) throw new Error("scope already disposed");
    this.#cleanups.push(fn);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    open.delete(this);
    while (this.#cleanups.length > 0) {
      const fn = this.#cleanups.pop()!;
      try {
        await fn();
      } catch (err) {
        console.error(`bench: cleanup failed: ${err instanceof Error ? err.message : err}`);
      }
    }
  }
}

export async function disposeAll(): Promise<void> {
  for (const s of [...open].reverse()) await s[Symbol.asyncDispose]();
}

/** A temp directory removed when the scope ends. */
export async function tempDir(scope: Scope, prefix = "ingest-agent-bench-"): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix });
  scope.defer(() => Deno.remove(dir, { recursive: true }).catch(() => {}));
  return dir;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `probe` every `stepMs` until it returns a value other than undefined/false; bounded. */
export async function waitUntil<T>(
  probe: () => T | undefined | false,
  timeoutMs: number,
  what: string,
  stepMs = 5,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await sleep(stepMs);
  }
}

/** Sends a signal to a process (or, with a negative id, a process group); gone is fine. */
export function killQuietly(pid: number, signal: Deno.Signal): boolean {
  try {
    Deno.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}
