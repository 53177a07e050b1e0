/**
 * Background load: CPU used by processes that are not this benchmark's (another test run on the
 * same 2-core machine skews every number here). `quietGate()` waits, bounded, until the machine
 * is idle before a scenario; `ForeignCpu` measures what others used during it, so the results
 * can say whether they were contended.
 */
import { machineCpu } from "./procfs.ts";
import { sleep } from "./scope.ts";

const CLK_TCK = 100;

interface ProcInfo {
  ppid: number;
  /** utime + stime + cutime + cstime, seconds. */
  cpu: number;
}

function snapshot(): Map<number, ProcInfo> {
  const out = new Map<number, ProcInfo>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const text = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      const f = text.slice(text.lastIndexOf(")") + 2).split(" ").map(Number);
      const at = (field: number) => f[field - 3] ?? 0;
      out.set(Number(e.name), {
        ppid: at(4),
        cpu: (at(14) + at(15) + at(16) + at(17)) / CLK_TCK,
      });
    } catch {
      // exited while listing
    }
  }
  return out;
}

function mine(snap: Map<number, ProcInfo>): Set<number> {
  const self = Deno.pid;
  const out = new Set<number>();
  for (const pid of snap.keys()) {
    let p: number | undefined = pid;
    for (let hops = 0; p !== undefined && p > 1 && hops < 64; hops++) {
      if (p === self) {
        out.add(pid);
        break;
      }
      p = snap.get(p)?.ppid;
    }
  }
  return out;
}

/** CPU seconds used by processes outside this benchmark's process tree over a window. */
export class ForeignCpu {
  readonly #start = snapshot();
  readonly #t0 = performance.now();

  /** Average foreign CPU in cores since construction. */
  cores(): number {
    const end = snapshot();
    const ours = new Set([...mine(this.#start), ...mine(end)]);
    let used = 0;
    for (const [pid, info] of end) {
      if (ours.has(pid)) continue;
      const before = this.#start.get(pid);
      used += before && before.ppid === info.ppid ? Math.max(0, info.cpu - before.cpu) : info.cpu;
    }
    const seconds = (performance.now() - this.#t0) / 1000;
    return seconds > 0 ? used / seconds : 0;
  }
}

/**
 * Waits until the whole machine used < `maxCores` for `quietSeconds` in a row (1 s samples;
 * nothing of ours runs between scenarios), at most `maxWaitS`. Returns the waited seconds and the
 * last sampled load.
 */
export async function quietGate(
  log: (msg: string) => void,
  maxWaitS = 90,
  maxCores = 0.25,
  quietSeconds = 3,
): Promise<{ waitedS: number; lastCores: number; quiet: boolean }> {
  const t0 = performance.now();
  let streak = 0;
  let last = 0;
  let announced = false;
  while ((performance.now() - t0) / 1000 < maxWaitS) {
    const a = machineCpu();
    await sleep(1000);
    const b = machineCpu();
    last = (b.busy - a.busy) / ((b.total - a.total) / navigator.hardwareConcurrency);
    if (last < maxCores) {
      if (++streak >= quietSeconds) {
        return {
          waitedS: Math.round((performance.now() - t0) / 1000),
          lastCores: last,
          quiet: true,
        };
      }
    } else {
      streak = 0;
      if (!announced) {
        log(
          `machine busy (${
            last.toFixed(2)
          } cores used by other processes); waiting up to ${maxWaitS} s`,
        );
        announced = true;
      }
    }
  }
  return { waitedS: Math.round((performance.now() - t0) / 1000), lastCores: last, quiet: false };
}
