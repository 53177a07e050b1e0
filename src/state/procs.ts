/**
 * Process identity (Linux /proc): which process a pid or a process group id names *now*, so the
 * agent never signals an unrelated process that inherited a recorded pid after a crash or a
 * reboot, and the marker search that finds a run's processes when no trustworthy pgid was
 * recorded (the agent died between spawning the CLI and journaling its pgid, or the group's
 * leader has exited while members live on). Owns every signal sent to a run found from state.
 *
 * Runtime-neutral: node:fs, node:process and node:timers only.
 */
import { readdirSync, readFileSync } from "node:fs";
import process from "node:process";
import { setTimeout as delay } from "node:timers/promises";

/** What the agent needs from /proc/<pid>/stat. */
interface Stat {
  /** Field 3: R, S, D, Z (zombie), T, … */
  state: string;
  /** Field 5: the process group id. */
  pgrp: number;
  /** Field 22: start time after boot, in clock ticks (kept as the kernel's text). */
  startTime: string;
}

/** How long killRunGroup waits for what it killed to be gone. */
const KILL_WAIT_MS = 5000;
const KILL_POLL_MS = 50;

function readStat(pid: number): Stat | undefined {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may hold spaces or ')': cut after the last.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const [state, pgrp, startTime] = [fields[0], Number(fields[2]), fields[19]];
  if (!state || !Number.isInteger(pgrp) || !startTime) return undefined;
  return { state, pgrp, startTime };
}

/** Whether a process exists and is not a zombie (a zombie is dead, only not yet reaped). */
function running(pid: number): boolean {
  const stat = readStat(pid);
  return stat !== undefined && stat.state !== "Z";
}

/** The kernel's start time of a process (field 22 of /proc/<pid>/stat), to tell a reused pid. */
export function processStartTime(pid: number): string | undefined {
  return readStat(pid)?.startTime;
}

/** The process group of a process (field 5 of /proc/<pid>/stat), if it exists. */
export function processGroupOf(pid: number): number | undefined {
  return readStat(pid)?.pgrp;
}

/** Whether a process (pid > 0) or a process group (pid < 0) exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Whether `pgid` still names the process group we recorded: process `pgid` exists, leads group
 * `pgid`, and started at `startTime`. False without a start time: a bare pgid is never enough.
 */
export function groupLeaderMatches(pgid: number, startTime: string | undefined): boolean {
  if (startTime === undefined || !Number.isInteger(pgid) || pgid <= 1) return false;
  const stat = readStat(pgid);
  return stat !== undefined && stat.pgrp === pgid && stat.startTime === startTime;
}

/** Like groupLeaderMatches, and the leader has not exited (a zombie waits only to be reaped). */
export function groupLeaderRunning(pgid: number, startTime: string | undefined): boolean {
  return groupLeaderMatches(pgid, startTime) && readStat(pgid)?.state !== "Z";
}

/** The pids listed in /proc (processes, not threads). */
function listPids(): number[] {
  try {
    return readdirSync("/proc").filter((n) => /^\d+$/.test(n)).map(Number);
  } catch {
    return [];
  }
}

/** The resident memory of a process (VmRSS of /proc/<pid>/status) in bytes; 0 when unknown. */
function residentBytes(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0; // exited meanwhile
  }
}

/**
 * The resident memory of the leader of group `pgid` alone, in bytes (0 when `pgid` does not lead
 * a live group now): two reads, where groupsResidentBytes reads every process of the host.
 */
export function leaderResidentBytes(pgid: number): number {
  const stat = readStat(pgid);
  return stat && stat.pgrp === pgid && stat.state !== "Z" ? residentBytes(pgid) : 0;
}

/**
 * The resident memory of the live processes of each process group of `pgids`, summed per group,
 * in bytes, from one pass over /proc (so several runs cost one scan). Pages shared between
 * processes (fork) count once per process, as RSS does. Nothing left (or no /proc): 0.
 */
export function groupsResidentBytes(pgids: Iterable<number>): Map<number, number> {
  const sums = new Map<number, number>();
  for (const pgid of pgids) if (Number.isInteger(pgid) && pgid > 1) sums.set(pgid, 0);
  if (sums.size === 0) return sums;
  for (const pid of listPids()) {
    const stat = readStat(pid);
    const sum = stat && stat.state !== "Z" ? sums.get(stat.pgrp) : undefined;
    if (sum !== undefined) sums.set(stat!.pgrp, sum + residentBytes(pid));
  }
  return sums;
}

/** MemAvailable of /proc/meminfo's text, in bytes; undefined when absent (before Linux 3.14). */
export function parseMemAvailable(meminfo: string): number | undefined {
  const m = /^MemAvailable:\s+(\d+) kB$/m.exec(meminfo);
  return m ? Number(m[1]) * 1024 : undefined;
}

/** The host's MemAvailable in bytes; undefined where /proc/meminfo does not say (not Linux). */
export function hostMemAvailable(file = "/proc/meminfo"): number | undefined {
  try {
    return parseMemAvailable(readFileSync(file, "utf8"));
  } catch {
    return undefined;
  }
}

/** Whether the initial environment of `pid` holds exactly `entry` ("NAME=value"). */
function hasEnvEntry(pid: number, entry: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").includes(entry);
  } catch {
    return false; // gone, or not ours to read
  }
}

/**
 * The pids whose environment holds exactly `name=value` (our own pid and zombies excluded).
 * Only processes whose /proc/<pid>/environ we may read are seen: those of our own uid.
 */
export function processesWithEnv(name: string, value: string): number[] {
  const entry = `${name}=${value}`;
  return listPids().filter((pid) => pid !== process.pid && hasEnvEntry(pid, entry) && running(pid));
}

/** The live (non-zombie) members of process group `pgid`. */
function groupMembers(pgid: number): number[] {
  if (!alive(-pgid)) return [];
  return listPids().filter((pid) => {
    const stat = readStat(pid);
    return stat !== undefined && stat.pgrp === pgid && stat.state !== "Z";
  });
}

export interface KillTarget {
  /** The run's recorded process group, if it was journaled. */
  pgid?: number;
  /** The start time of the group's leader, recorded with the pgid. */
  pgidStart?: string;
  /** An environment entry only this run's processes carry. */
  marker?: { name: string; value: string };
}

export interface KillResult {
  /** Process groups sent SIGKILL, and pids sent it alone where their group could not be. */
  killed: number[];
  /** Why a recorded pgid was not signalled, when it was not. */
  skipped?: string;
  /** What was still running when the wait ran out (uninterruptible, or not ours to kill). */
  remaining?: number[];
}

/**
 * SIGKILLs a run found from state: its recorded process group, only if `groupLeaderMatches`,
 * and every process carrying the marker, through its process group (or alone, when the group is
 * not the run's). Waits up to 5 s for all of them to be gone; zombies count as gone.
 */
export async function killRunGroup(target: KillTarget): Promise<KillResult> {
  const killed = new Set<number>();
  const groups = new Set<number>();
  const pids = new Set<number>();
  let skipped: string | undefined;
  if (target.pgid !== undefined) {
    skipped = whyNotGroup(target.pgid, target.pgidStart);
    if (skipped === undefined && signal(-target.pgid)) {
      killed.add(target.pgid);
      groups.add(target.pgid);
    }
  }
  const sweep = () => {
    if (!target.marker) return [];
    const marked = processesWithEnv(target.marker.name, target.marker.value);
    for (const pid of marked) killMarked(pid, target.marker, { killed, groups, pids });
    return marked;
  };
  sweep();
  let left = survivors(groups, pids);
  for (const deadline = Date.now() + KILL_WAIT_MS; Date.now() < deadline;) {
    left = [...new Set([...survivors(groups, pids), ...sweep()])];
    if (left.length === 0) break;
    await delay(KILL_POLL_MS);
  }
  const result: KillResult = { killed: [...killed] };
  if (skipped !== undefined) result.skipped = skipped;
  if (left.length > 0) result.remaining = left;
  return result;
}

/** Why `pgid` must not be signalled as the run's group; undefined when it may. */
function whyNotGroup(pgid: number, startTime: string | undefined): string | undefined {
  if (groupLeaderMatches(pgid, startTime)) {
    return pgid === processGroupOf(process.pid)
      ? `pgid ${pgid} is the agent's own process group`
      : undefined;
  }
  const stat = readStat(pgid);
  if (!stat) {
    return alive(-pgid)
      ? `pgid ${pgid}: its leader has exited; its members are only found through the run marker`
      : undefined; // nothing left: nothing skipped
  }
  if (startTime === undefined) return `pgid ${pgid} has no recorded start time; not signalled`;
  if (stat.pgrp !== pgid) {
    return `pgid ${pgid} now belongs to another process (not a process group leader)`;
  }
  return `pgid ${pgid} now belongs to another process (start time differs)`;
}

interface Killed {
  killed: Set<number>;
  groups: Set<number>;
  pids: Set<number>;
}

/** SIGKILLs a marked process through its group when the group is the run's, else alone. */
function killMarked(pid: number, marker: { name: string; value: string }, into: Killed): void {
  const pgid = processGroupOf(pid);
  if (pgid === undefined) return; // gone meanwhile
  if (into.groups.has(pgid)) return; // its whole group was signalled already (it is dying)
  if (runGroup(pgid, marker) && signal(-pgid)) {
    into.killed.add(pgid);
    into.groups.add(pgid);
  } else if (signal(pid)) {
    into.killed.add(pid);
    into.pids.add(pid);
  }
}

/**
 * Whether a marked process's group may be killed whole: never ours nor init's; and its leader
 * either exited (the group is what the run left behind) or carries the marker itself.
 */
function runGroup(pgid: number, marker: { name: string; value: string }): boolean {
  if (pgid <= 1 || pgid === processGroupOf(process.pid)) return false;
  return !running(pgid) || hasEnvEntry(pgid, `${marker.name}=${marker.value}`);
}

/** Sends SIGKILL to a pid (> 0) or a process group (< 0); false if there was nothing to kill. */
function signal(id: number): boolean {
  try {
    process.kill(id, "SIGKILL");
    return true;
  } catch {
    return false; // ESRCH: already gone; EPERM: not ours
  }
}

/** The processes among what was killed that still run. */
function survivors(groups: Set<number>, pids: Set<number>): number[] {
  const left = new Set<number>();
  for (const pgid of groups) for (const pid of groupMembers(pgid)) left.add(pid);
  for (const pid of pids) if (running(pid)) left.add(pid);
  return [...left];
}
