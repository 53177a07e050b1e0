/** Readers of /proc for memory and CPU of processes (Linux only). */

const CLK_TCK = 100; // getconf CLK_TCK on Linux x86-64

export interface Memory {
  /** Resident set size now, MiB. */
  rssMiB: number;
  /** Peak resident set size (high-water mark), MiB. */
  hwmMiB: number;
  /** Parts of rssMiB: anonymous memory (heaps), file-backed pages (the executable), shmem. */
  anonMiB: number;
  fileMiB: number;
}

/** VmRSS / VmHWM of a live process, or undefined once it is gone. */
export function memory(pid: number | "self"): Memory | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/status`);
  } catch {
    return undefined;
  }
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text)?.[1]);
  const rss = kb("VmRSS");
  const hwm = kb("VmHWM");
  if (!Number.isFinite(rss)) return undefined;
  return {
    rssMiB: rss / 1024,
    hwmMiB: hwm / 1024,
    anonMiB: kb("RssAnon") / 1024,
    fileMiB: kb("RssFile") / 1024,
  };
}

export interface CpuTimes {
  /** user + system seconds of the process itself. */
  self: number;
  /** user + system seconds of its waited-for children (e.g. the CLI runs an agent reaped). */
  children: number;
}

export function cpu(pid: number | "self"): CpuTimes | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return undefined;
  }
  // Fields after the command name: state(3) ppid … utime(14) stime(15) cutime(16) cstime(17).
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ").map(Number);
  const at = (field: number) => f[field - 3] ?? 0;
  return {
    self: (at(14) + at(15)) / CLK_TCK,
    children: (at(16) + at(17)) / CLK_TCK,
  };
}

/** Whole-machine CPU seconds (busy, total) from /proc/stat, to compute utilisation over a window. */
export function machineCpu(): { busy: number; total: number } {
  const line = Deno.readTextFileSync("/proc/stat").split("\n")[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: (total - idle) / CLK_TCK, total: total / CLK_TCK };
}

/** Parent pid of every live process (one scan of /proc). */
export function parents(): Map<number, number> {
  const out = new Map<number, number>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const text = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      const ppid = Number(text.slice(text.lastIndexOf(")") + 2).split(" ")[1]);
      out.set(Number(e.name), ppid);
    } catch {
      // exited while listing
    }
  }
  return out;
}

/** `pid` and all its live descendants (children, grandchildren, …), pid first. */
export function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const [p, pp] of parents()) {
    const list = children.get(pp);
    if (list) list.push(p);
    else children.set(pp, [p]);
  }
  const out = [pid];
  for (let i = 0; i < out.length; i++) out.push(...(children.get(out[i]!) ?? []));
  return out;
}

export interface TreeMemory {
  /** VmRSS (and its parts) summed over the process and all its descendants, MiB. */
  rssMiB: number;
  anonMiB: number;
  fileMiB: number;
  /** Processes counted (the process itself included). */
  processes: number;
  /** VmRSS of the process itself, MiB. */
  rootRssMiB: number;
}

/**
 * Memory of a process tree: VmRSS summed over `pid` and every descendant (pages shared between
 * them count once per process, as `ps` would add them up), or undefined once `pid` is gone.
 */
export function treeMemory(pid: number): TreeMemory | undefined {
  const root = memory(pid);
  if (!root) return undefined;
  const t: TreeMemory = {
    rssMiB: root.rssMiB,
    anonMiB: root.anonMiB,
    fileMiB: root.fileMiB,
    processes: 1,
    rootRssMiB: root.rssMiB,
  };
  for (const p of processTree(pid).slice(1)) {
    const m = memory(p);
    if (!m) continue;
    t.rssMiB += m.rssMiB;
    t.anonMiB += m.anonMiB;
    t.fileMiB += m.fileMiB;
    t.processes++;
  }
  return t;
}
