/**
 * Files that survive a crash whole: a write goes to a temp file unique to that write, which is
 * fsynced, renamed over the target, then the directory is fsynced (state_dir.ts, lock.ts).
 */
import { open, rename, rm } from "node:fs/promises";
import path from "node:path";
import process from "node:process";

/** Makes temp names unique per write within this process (the pid makes them unique across). */
let tempSeq = 0;

/** Writes `content` to `file` so that a crash leaves either the old or the new file, whole. */
export async function writeDurably(file: string, content: string): Promise<void> {
  const tmp = await writeTemp(file, content);
  try {
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await syncDir(path.dirname(file));
}

/** A new, fsynced, 0600 temp file next to `file`, named uniquely for this write. */
export async function writeTemp(file: string, content: string): Promise<string> {
  const tmp = `${file}.${process.pid}.${++tempSeq}.tmp`;
  const handle = await open(tmp, "wx", 0o600);
  try {
    await handle.writeFile(content, "utf8");
    await handle.sync();
  } catch (err) {
    await handle.close();
    await rm(tmp, { force: true });
    throw err;
  }
  await handle.close();
  return tmp;
}

/** Makes a directory's entries durable (a rename or unlink in it); a no-op where unsupported. */
export async function syncDir(dir: string): Promise<void> {
  let handle;
  try {
    handle = await open(dir, "r");
    await handle.sync();
  } catch (err) {
    const code = errno(err);
    if (code !== "EINVAL" && code !== "EISDIR" && code !== "ENOTSUP") throw err;
  } finally {
    await handle?.close();
  }
}

export function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}
