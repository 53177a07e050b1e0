/**
 * The state_dir lock (see state_dir.ts for the design and its remaining window): "<pid>
 * <starttime>" of the agent using the directory, created only with link() from a complete temp
 * file, replaced by rename() once stale and only under `<lock>.takeover`, taken the same way.
 */
import { readFileSync, unlinkSync } from "node:fs";
import { link, readFile, rename, rm } from "node:fs/promises";
import path from "node:path";
import process from "node:process";
import { setTimeout as delay } from "node:timers/promises";
import { AgentError } from "../errors.ts";
import { errno, writeTemp } from "./durable.ts";
import { alive, processStartTime } from "./procs.ts";

/** How long taking the lock waits for another agent's takeover of a stale lock to finish. */
const TAKEOVER_WAIT_MS = 5000;
/** Nested takeover guards; each level needs an agent that died inside a takeover. */
const MAX_GUARD_DEPTH = 4;

/** Lock files held, or being claimed, by a StateDir of this process (the file cannot tell). */
const claimedHere = new Set<string>();

/**
 * Takes the lock file `lock` for this process, or throws what `refused` makes of its holder
 * (the holder's lock content, and a note such as "taking over a stale lock").
 */
export async function acquireLock(
  lock: string,
  refused: (holder: string, note?: string) => Error,
): Promise<void> {
  if (claimedHere.has(lock)) throw refused(String(process.pid), "in this process");
  claimedHere.add(lock);
  try {
    const deadline = Date.now() + TAKEOVER_WAIT_MS;
    for (;;) {
      const claim = await claimLock(lock, 0);
      if (claim.held) return;
      // A live agent is replacing a stale lock right now: it wins; see who holds it then.
      if (!claim.busy || Date.now() > deadline) {
        throw refused(claim.holder, claim.busy ? "taking over a stale lock" : undefined);
      }
      await delay(20);
    }
  } catch (err) {
    claimedHere.delete(lock);
    throw err;
  }
}

/** Releases a lock this process holds (synchronous, so it also works while exiting). */
export function releaseHeldLock(lock: string): void {
  try {
    if (readFileSync(lock, "utf8") === ownIdentity()) unlinkSync(lock);
  } catch { /* already gone */ }
  claimedHere.delete(lock);
}

/**
 * The live agent holding the lock of `stateDir`, if any. Read only: the lock is never taken or
 * changed (for `ingest-agent doctor`). A missing directory or lock file means no holder.
 */
export async function lockHolder(stateDir: string): Promise<{ pid: number } | undefined> {
  let content: string | undefined;
  try {
    content = await readLock(path.join(stateDir, "agent.lock"));
  } catch (err) {
    if (errno(err) === "ENOTDIR") return undefined;
    throw err;
  }
  if (content === undefined || !holderLive(content)) return undefined;
  return { pid: Number(content.trim().split(" ")[0]) };
}

type Claim = { held: true } | { held: false; holder: string; busy: boolean };

/** This process's lock content: "<pid> <starttime>". */
function ownIdentity(): string {
  return `${process.pid} ${processStartTime(process.pid) ?? ""}`;
}

/**
 * Whether the process named by a lock's content still runs. Our own pid is never live here:
 * StateDirs of this process are told apart by `claimedHere`, before the file is looked at.
 */
function holderLive(content: string): boolean {
  const [pid, started] = content.trim().split(" ");
  const holder = Number(pid);
  if (!Number.isInteger(holder) || holder <= 0 || holder === process.pid) return false;
  // Without a recorded start time (an older agent's lock) the pid alone has to do.
  return alive(holder) && (!started || processStartTime(holder) === started);
}

/**
 * Takes `file` (a lock or a takeover guard) for this process: creates it if absent; if its
 * holder is dead, replaces it while holding `<file>.takeover` (taken the same way), after
 * checking it did not change meanwhile. Not held: live holder, or (busy) a live agent is
 * replacing it right now.
 */
async function claimLock(file: string, depth: number): Promise<Claim> {
  if (depth > MAX_GUARD_DEPTH) {
    throw new AgentError(
      "STATE_LOCKED",
      `${file}: agents died while taking over the lock, ${depth} times over; ` +
        `remove ${path.basename(file)} and its .takeover files by hand`,
    );
  }
  const me = ownIdentity();
  // Each round means another agent changed the file meanwhile; bounded against pathologies.
  for (let round = 0; round < 100; round++) {
    if (await createLock(file, me)) return { held: true };
    const seen = await readLock(file);
    if (seen === undefined) continue; // released meanwhile: try to create it again
    if (holderLive(seen)) return { held: false, holder: seen, busy: false };
    const guard = `${file}.takeover`;
    const claim = await claimLock(guard, depth + 1);
    if (!claim.held) return { held: false, holder: claim.holder, busy: true };
    try {
      // Holding the guard, nobody else may replace `file`; it is ours if still the stale one.
      if (await readLock(file) === seen) {
        await replaceLock(file, me);
        return { held: true };
      }
    } finally {
      await releaseLock(guard, me);
    }
  }
  throw new AgentError("STATE_LOCKED", `${file} keeps changing; is another agent looping?`);
}

/** Creates `file` with `content` atomically; false if it exists. */
async function createLock(file: string, content: string): Promise<boolean> {
  const tmp = await writeTemp(file, content);
  try {
    await link(tmp, file);
    return true;
  } catch (err) {
    if (errno(err) === "EEXIST") return false;
    throw err;
  } finally {
    await rm(tmp, { force: true });
  }
}

/** Replaces `file` with `content` atomically (the name never disappears). */
async function replaceLock(file: string, content: string): Promise<void> {
  const tmp = await writeTemp(file, content);
  try {
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** A lock's content, or undefined when it does not exist. */
async function readLock(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, "utf8");
  } catch (err) {
    if (errno(err) === "ENOENT") return undefined;
    throw err;
  }
}

/** Removes `file` if it is still ours (nobody replaces a live holder's file). */
async function releaseLock(file: string, me: string): Promise<void> {
  if (await readLock(file) === me) await rm(file, { force: true });
}
