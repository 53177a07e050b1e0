/**
 * The fake datahub CLI from the benchmarks' side: install the wrapper, build recipes, run the
 * same command line the agent runs (directly, to measure the CLI's own cost), a bounded-parallel
 * spawn pool (the raw ceiling), and the journal.
 */
import path from "node:path";
import { type JournalEntry, makeFakeCli } from "../../test/fixtures/fake_cli.ts";

export type { JournalEntry };

export interface Cli {
  path: string;
  journal: string;
}

export async function installCli(dir: string): Promise<Cli> {
  const cli = await makeFakeCli(path.join(dir, "bin"));
  return { path: cli.path, journal: cli.journal };
}

/** A JSON recipe whose source drives the fake CLI; console sink (no GMS env needed). */
export function recipe(fixture: Record<string, unknown> = {}): string {
  return JSON.stringify({
    source: { type: "fake", config: { fixture } },
    sink: { type: "console" },
    pipeline_name: "urn:li:dataHubIngestionSource:bench",
  });
}

export async function readJournal(file: string): Promise<JournalEntry[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  const out: JournalEntry[] = [];
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    try {
      out.push(JSON.parse(line));
    } catch {
      // a line being appended right now
    }
  }
  return out;
}

export interface DirectRun {
  /** Spawn → exit status observed, ms (performance.now). */
  ms: number;
  /** Date.now() just before spawn and when the exit was observed (to align with the journal). */
  spawnAt: number;
  exitAt: number;
  code: number;
  /** Output lines with arrival time (ms since spawn), when asked for. */
  lines?: { t: number; text: string }[];
  stdoutBytes: number;
}

/**
 * Runs the CLI exactly as the agent does for RUN_INGEST: `ingest run -c <dir>/recipe.json
 * --report-to <dir>/report.json`, cwd = a fresh run dir, recipe file mode 600 with run_id set,
 * stdout and stderr piped and read to the end.
 */
export async function runDirect(
  cli: Cli,
  parent: string,
  recipeText: string,
  runId: string,
  options: { captureLines?: boolean; journal?: string } = {},
): Promise<DirectRun> {
  const runDir = path.join(parent, `run-${runId}`);
  await Deno.mkdir(runDir, { recursive: true, mode: 0o700 });
  const recipePath = path.join(runDir, "recipe.json");
  const reportPath = path.join(runDir, "report.json");
  const withId = { ...JSON.parse(recipeText), run_id: runId };
  await Deno.writeTextFile(recipePath, JSON.stringify(withId), { mode: 0o600 });
  const env: Record<string, string> = {};
  if (options.journal) env.FAKE_DATAHUB_JOURNAL = options.journal;
  const spawnAt = Date.now();
  const t0 = performance.now();
  const child = new Deno.Command(cli.path, {
    args: ["ingest", "run", "-c", recipePath, "--report-to", reportPath],
    cwd: runDir,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: { t: number; text: string }[] = [];
  let stdoutBytes = 0;
  const read = async (s: ReadableStream<Uint8Array>) => {
    const dec = new TextDecoder();
    let partial = "";
    for await (const chunk of s) {
      stdoutBytes += chunk.length;
      if (!options.captureLines) continue;
      partial += dec.decode(chunk, { stream: true });
      let nl: number;
      const t = performance.now() - t0;
      while ((nl = partial.indexOf("\n")) >= 0) {
        lines.push({ t, text: partial.slice(0, nl) });
        partial = partial.slice(nl + 1);
      }
    }
    if (options.captureLines && partial) lines.push({ t: performance.now() - t0, text: partial });
  };
  const [status] = await Promise.all([child.status, read(child.stdout), read(child.stderr)]);
  const ms = performance.now() - t0;
  const exitAt = Date.now();
  await Deno.remove(runDir, { recursive: true }).catch(() => {});
  return {
    ms,
    spawnAt,
    exitAt,
    code: status.code,
    stdoutBytes,
    ...(options.captureLines ? { lines: lines.sort((a, b) => a.t - b.t) } : {}),
  };
}

/** Runs `fn` over `count` items with at most `parallel` at a time (an `xargs -P` equivalent). */
export async function boundedParallel<T>(
  count: number,
  parallel: number,
  fn: (i: number) => Promise<T>,
): Promise<T[]> {
  const out: T[] = new Array(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      out[i] = await fn(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, count) }, worker));
  return out;
}

export interface JournalRun {
  runId: string;
  /** How many times a CLI process started for this runId (must be 1). */
  starts: number;
  /** Date.now() in the CLI when it started / exited (first start). */
  start: number;
  exit?: number;
  exitCode?: number;
}

/** Groups journal entries by runId (exit entries carry only the pid). */
export function journalRuns(entries: JournalEntry[]): Map<string, JournalRun> {
  const byPid = new Map<number, JournalRun>();
  const runs = new Map<string, JournalRun>();
  for (const e of entries) {
    if (e.event === "start") {
      const id = e.runId ?? `(no run_id, pid ${e.pid})`;
      const run = runs.get(id);
      if (run) run.starts++;
      else runs.set(id, { runId: id, starts: 1, start: e.at });
      byPid.set(e.pid, runs.get(id)!);
    } else {
      const run = byPid.get(e.pid);
      if (run && run.exit === undefined) {
        run.exit = e.at;
        if (e.exitCode !== undefined) run.exitCode = e.exitCode;
      }
    }
  }
  return runs;
}
