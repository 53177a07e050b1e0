/**
 * The memory of runs: the resident memory of each run's process group (the shim, the CLI and
 * whatever it started, however deep: what a cancel kills), sampled from /proc every second in
 * one scan for all runs (the leader alone at the start); its peak, for the report and the
 * journal; and `agent.run_memory_limit`, whose excess stops the run (job.ts cancels it with
 * reason "memory": FAILURE). Where /proc is missing (not Linux) every sample is 0: nothing is
 * limited and no peak is reported.
 */
import type { Logger } from "../observe/log.ts";
import { groupsResidentBytes, leaderResidentBytes } from "../state/procs.ts";

/** How often the groups are sampled. */
export const SAMPLE_MS = 1_000;
/** The journal is told about a peak that grew by this factor since it was last told. */
const JOURNAL_STEP = 1.1;

export interface MemoryHooks {
  /** A peak known already (a re-adopted run's, from its journal entry). */
  peakBytes?: number | undefined;
  /** Called once, when the group's memory first exceeds the limit. */
  onExceed(): void;
  /** Called when the peak grew enough to be journaled (the first group sample, then by 10 %). */
  onPeak?(peakBytes: number): void;
}

const watches = new Set<MemoryWatch>();
let timer: ReturnType<typeof setInterval> | undefined;

function sampleAll(): void {
  const sums = groupsResidentBytes([...watches].map((w) => w.pgid));
  for (const w of watches) w.observe(sums.get(w.pgid) ?? 0);
}

/** Watches one run's process group from its start (or re-adoption) until `stop()`. */
export class MemoryWatch {
  readonly pgid: number;
  /** 0: no limit (the peak is kept all the same). */
  readonly limitBytes: number;
  readonly #log: Logger;
  readonly #hooks: MemoryHooks;
  #peak: number;
  #journaled: number;
  #exceeded = false;

  constructor(
    pgid: number,
    agent: { runMemoryLimitBytes: number },
    log: Logger,
    hooks: MemoryHooks,
  ) {
    this.pgid = pgid;
    this.limitBytes = agent.runMemoryLimitBytes;
    this.#log = log;
    this.#hooks = hooks;
    this.#peak = hooks.peakBytes ?? 0;
    this.#journaled = this.#peak;
    watches.add(this);
    // The first sample is the leader's alone (the group has just started: the shim, perhaps the
    // CLI it forked): scanning all of /proc for it cost more than the rest of a run's start. It
    // is not journaled; the journal hears from the first sample of the whole group on.
    this.#take(leaderResidentBytes(pgid), false);
    timer ??= setInterval(sampleAll, SAMPLE_MS);
  }

  /** The highest sample so far, in bytes (0: none measured). */
  get peakBytes(): number {
    return this.#peak;
  }

  /** What the report says about the limit and the peak. */
  summary(): { limitBytes: number; peakBytes: number } {
    return { limitBytes: this.limitBytes, peakBytes: this.#peak };
  }

  /** One sample of the group's resident memory (bytes). */
  observe(bytes: number): void {
    this.#take(bytes, true);
  }

  #take(bytes: number, journal: boolean): void {
    if (!watches.has(this)) return;
    if (bytes > this.#peak) this.#peak = bytes;
    const peak = this.#peak;
    const grown = peak > this.#journaled &&
      (this.#journaled === 0 || peak >= this.#journaled * JOURNAL_STEP);
    if (journal && grown) {
      this.#journaled = peak;
      this.#hooks.onPeak?.(peak);
    }
    if (this.limitBytes > 0 && bytes > this.limitBytes && !this.#exceeded) {
      this.#exceeded = true;
      this.#log.warn("the run's processes exceed agent.run_memory_limit; stopping the run", {
        pgid: this.pgid,
        rss_bytes: bytes,
        limit_bytes: this.limitBytes,
      });
      this.#hooks.onExceed();
    }
  }

  /** Stops sampling (idempotent); returns the peak. */
  stop(): number {
    watches.delete(this);
    if (watches.size === 0 && timer !== undefined) {
      clearInterval(timer);
      timer = undefined;
    }
    return this.#peak;
  }
}

/** 123.4 MiB, or 5.20 GiB from 1 GiB on. */
export function formatBytes(n: number): string {
  return n >= 1024 ** 3 ? `${(n / 1024 ** 3).toFixed(2)} GiB` : `${(n / 1024 ** 2).toFixed(1)} MiB`;
}

/** The report's note about the run's peak (INFO), when one was measured. */
export function peakNote(peakBytes: number | undefined): string | undefined {
  if (!peakBytes) return undefined;
  return `Peak memory of the run's processes: ${formatBytes(peakBytes)}`;
}

/** The report's note about a run stopped for exceeding agent.run_memory_limit (ERROR). */
export function memoryExceededNote(
  m: { limitBytes: number; peakBytes: number } | undefined,
): string {
  const limit = m ? ` (${formatBytes(m.limitBytes)})` : "";
  const peak = m?.peakBytes ? `; its peak was ${formatBytes(m.peakBytes)}` : "";
  return `The run's processes used more memory than agent.run_memory_limit${limit} allows, so the run was stopped${peak}. ` +
    "To let it finish, raise agent.run_memory_limit in the agent's configuration above that peak (0 removes the limit), " +
    "on a host with that much memory available, restart the agent and run it again.";
}
