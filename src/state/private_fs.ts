/**
 * Directories and files that only the agent's user may touch: `state_dir`, `work_dir` and each
 * run's directory. Recipes hold secrets in clear while a run lasts, so a directory that another
 * local user owns, or a symbolic link planted where a run's files go, is refused with an error
 * naming the path (AgentError PATH_UNSAFE), never followed. New files in a run directory are
 * opened with O_CREAT | O_EXCL | O_NOFOLLOW.
 */
import { constants, mkdirSync, openSync, unlinkSync } from "node:fs";
import { chmod, lstat, mkdir, readdir, rm } from "node:fs/promises";
import path from "node:path";
import process from "node:process";
import { AgentError } from "../errors.ts";

function ourUid(): number | undefined {
  return typeof process.getuid === "function" ? process.getuid() : undefined;
}

function unsafe(message: string): AgentError {
  return new AgentError("PATH_UNSAFE", message);
}

/** Checks an existing path: a real directory, owned by us. */
async function checkDirectory(dir: string): Promise<{ mode: number }> {
  const st = await lstat(dir);
  if (st.isSymbolicLink()) {
    throw unsafe(`${dir} is a symbolic link: configure the real directory it points to`);
  }
  if (!st.isDirectory()) throw unsafe(`${dir} exists and is not a directory`);
  const uid = ourUid();
  if (uid !== undefined && st.uid !== uid) {
    throw unsafe(
      `${dir} is owned by uid ${st.uid}, not by the agent's user (uid ${uid}): another user could read recipes or plant files there; use a directory of the agent's own`,
    );
  }
  return { mode: st.mode & 0o777 };
}

/**
 * Makes sure `dir` is a private directory: created 0700 (with its missing parents) if absent;
 * an existing one must be a real directory owned by us; wider permissions are narrowed to 0700
 * (returned as a warning). Throws PATH_UNSAFE otherwise.
 */
export async function ensurePrivateDir(dir: string): Promise<string[]> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const { mode } = await checkDirectory(dir);
  if ((mode & 0o077) === 0) return [];
  await chmod(dir, 0o700);
  return [`${dir} was mode ${mode.toString(8).padStart(4, "0")}; narrowed to 0700`];
}

/**
 * A run's directory, new and empty: a leftover directory of ours is removed first, unless it
 * holds a symbolic link (someone prepared it: refused, nothing is written through it).
 */
export async function freshRunDir(dir: string): Promise<void> {
  // The usual case, in one call: nothing there. What mkdir creates is a new directory of ours,
  // 0700 or narrower, in work_dir (private, checked at start): nothing to check. (Synchronous:
  // a local mkdir takes microseconds, less than a hop to libuv's pool costs.)
  try {
    mkdirSync(dir, { mode: 0o700 });
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") {
      throw unsafe(`cannot create the run directory ${dir}: ${(err as Error).message}`);
    }
  }
  const existing = await lstat(dir).catch(() => undefined);
  if (existing) {
    await checkDirectory(dir);
    for (const name of await readdir(dir)) {
      if ((await lstat(path.join(dir, name))).isSymbolicLink()) {
        throw unsafe(
          `${path.join(dir, name)} is a symbolic link: refusing to use this run directory`,
        );
      }
    }
    await rm(dir, { recursive: true, force: true });
  }
  // Not recursive: work_dir exists (checked at start); EEXIST here means a race: refuse.
  try {
    await mkdir(dir, { mode: 0o700 });
  } catch (err) {
    throw unsafe(`cannot create the run directory ${dir}: ${(err as Error).message}`);
  }
  await checkDirectory(dir);
}

/**
 * Removes files of a private directory by name; one that is missing, or cannot be removed, is
 * skipped (what is left goes with the directory). One unlink each, on this thread (microseconds).
 */
// deno-lint-ignore require-await -- a Promise, as callers await the removal
export async function removeFiles(dir: string, names: readonly string[]): Promise<void> {
  for (const name of names) {
    try {
      unlinkSync(path.join(dir, name));
    } catch {
      // missing or not removable: it goes with the directory
    }
  }
}

/**
 * Opens a new file for appending in a private directory: it must not exist yet, and a symbolic
 * link in its place is never followed. Returns the file descriptor.
 */
export function openNewPrivateFile(file: string): number {
  try {
    return openSync(
      file,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_APPEND |
        constants.O_NOFOLLOW,
      0o600,
    );
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === "EEXIST" || code === "ELOOP"
      ? "it already exists (perhaps as a symbolic link someone planted)"
      : (err as Error).message;
    throw unsafe(`cannot create ${file}: ${why}; refusing to write through it`);
  }
}
