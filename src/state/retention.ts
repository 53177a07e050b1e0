/**
 * Log retention: finished runs leave `work_dir/run-<id>/run.log` for operators to read what the
 * UI report left out. They are kept for `ingestion.log_retention` and within
 * `ingestion.log_retention_bytes` in total, oldest removed first. Runs in progress are never
 * touched. Called at start and after every run; it only lists and stats the run directories.
 */
import { readdir, rm, stat } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "../observe/log.ts";

export interface RetentionPolicy {
  workDir: string;
  maxAgeMs: number;
  maxBytes: number;
}

export async function pruneRunLogs(
  policy: RetentionPolicy,
  active: ReadonlySet<string>,
  log: Logger,
  now = Date.now(),
): Promise<{ removed: string[]; keptBytes: number }> {
  const entries = await readdir(policy.workDir).catch(() => [] as string[]);
  const runs: { dir: string; mtime: number; bytes: number }[] = [];
  for (const name of entries) {
    if (!name.startsWith("run-") || active.has(name)) continue;
    const dir = path.join(policy.workDir, name);
    const info = await stat(path.join(dir, "run.log")).catch(() => undefined);
    if (!info) continue;
    runs.push({ dir, mtime: info.mtimeMs, bytes: info.size });
  }
  runs.sort((a, b) => a.mtime - b.mtime); // oldest first
  let total = runs.reduce((sum, r) => sum + r.bytes, 0);
  const removed: string[] = [];
  for (const run of runs) {
    const tooOld = now - run.mtime > policy.maxAgeMs;
    if (!tooOld && total <= policy.maxBytes) continue;
    await rm(run.dir, { recursive: true, force: true }).catch(() => {});
    total -= run.bytes;
    removed.push(run.dir);
  }
  if (removed.length > 0) {
    log.debug("removed old run logs", { removed: removed.length, kept_bytes: total });
  }
  return { removed, keptBytes: total };
}

/** `pruneRunLogs` at most once a minute (at start, then after runs), in the background. */
export function throttledPruner(
  policy: RetentionPolicy,
  log: Logger,
): (active: () => ReadonlySet<string>) => void {
  let at = -Infinity;
  return (active) => {
    if (Date.now() - at < 60_000) return;
    at = Date.now();
    void pruneRunLogs(policy, active(), log).catch((err) =>
      log.warn("log retention failed", { error: err })
    );
  };
}
