import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import process from "node:process";
import { processStartTime } from "../state/procs.ts";
import { SetupCancelled, withBuildLock } from "./build_lock.ts";
import { compileConfig } from "../config/config.ts";
import { checkRequest } from "./policy.ts";
import { acquireVenv, evict, inUse, SetupFailed } from "./venv.ts";

async function tmp(): Promise<string> {
  return await mkdtemp(path.join(os.tmpdir(), "venv-test-"));
}

/** A complete cached environment, last used at `lastUsed`. */
async function env(root: string, name: string, lastUsed: number, user?: string): Promise<void> {
  const dir = path.join(root, name);
  await mkdir(path.join(dir, ".in-use"), { recursive: true });
  await writeFile(path.join(dir, ".ingest-agent.json"), JSON.stringify({ builtAt: 1 }));
  await writeFile(path.join(dir, ".last-used"), String(lastUsed));
  if (user) await writeFile(path.join(dir, ".in-use", "run-1"), user);
}

const me = () => `${process.pid} ${processStartTime(process.pid) ?? ""}`;

Deno.test("evict: least recently used first, never the one kept, never one in use", async () => {
  const root = await tmp();
  try {
    await env(root, "a", 100);
    await env(root, "b", 200, me()); // oldest but one, in use by a live process
    await env(root, "c", 300);
    await env(root, "d", 400);
    await env(root, "new", 50); // just built: kept whatever its time
    const removed = await evict(root, 3, "new");
    assert.deepEqual(removed.sort(), ["a", "c"]);
    assert.deepEqual((await readdir(root)).sort(), ["b", "d", "new"]);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

Deno.test("evict: a dead user does not hold an environment; leftovers of a build go too", async () => {
  const root = await tmp();
  try {
    await env(root, "old", 1, "999999999 123"); // no such process
    await env(root, "new", 2);
    await mkdir(path.join(root, "half-built", "bin"), { recursive: true }); // no ready marker
    const removed = await evict(root, 1, "new");
    assert.deepEqual(removed.sort(), ["half-built", "old"]);
    assert.deepEqual(await readdir(root), ["new"]);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

Deno.test("evict: an environment whose build lock is held is left alone", async () => {
  const root = await tmp();
  try {
    await env(root, "busy", 1);
    await env(root, "new", 2);
    let removed: string[] = [];
    await withBuildLock(path.join(root, "busy.lock"), () => false, async () => {
      removed = await evict(root, 1, "new");
    });
    assert.deepEqual(removed, []);
    assert.deepEqual((await readdir(root)).sort(), ["busy", "new"]);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

Deno.test("inUse: live markers count, dead ones are removed", async () => {
  const root = await tmp();
  try {
    await env(root, "x", 1, "999999999 1");
    assert.equal(await inUse(path.join(root, "x")), false);
    assert.deepEqual(await readdir(path.join(root, "x", ".in-use")), []);
    await writeFile(path.join(root, "x", ".in-use", "r"), me());
    assert.equal(await inUse(path.join(root, "x")), true);
    // A reused pid (another start time) is not the user.
    await writeFile(path.join(root, "x", ".in-use", "r"), `${process.pid} 1`);
    assert.equal(await inUse(path.join(root, "x")), false);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

Deno.test("withBuildLock: runs of one process take their turn; a cancelled waiter leaves the queue", async () => {
  const root = await tmp();
  const lock = path.join(root, "e.lock");
  try {
    const order: string[] = [];
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    const first = withBuildLock(lock, () => false, async () => {
      order.push("first in");
      await gate;
      order.push("first out");
    });
    let cancel = false;
    const cancelled = withBuildLock(lock, () => cancel, () => {
      order.push("cancelled ran");
      return Promise.resolve();
    });
    const third = withBuildLock(lock, () => false, () => {
      order.push("third");
      return Promise.resolve();
    });
    await new Promise((r) => setTimeout(r, 50));
    cancel = true;
    await assert.rejects(cancelled, SetupCancelled);
    assert.deepEqual(order, ["first in"], "nobody overtakes the holder");
    open();
    await Promise.all([first, third]);
    assert.deepEqual(order, ["first in", "first out", "third"]);
    assert.deepEqual(await readdir(root), [], "the lock file is gone");
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

/**
 * A stand-in for python3 (a shell script): `-m venv DIR` makes DIR/bin/python (a copy of itself),
 * `-m pip install …` logs its arguments and writes DIR/bin/datahub, or fails like pip for a
 * requirement starting with "missing".
 */
const FAKE_PYTHON = `#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin" "$3/lib/python3.11/site-packages" && cp "$0" "$3/bin/python"
  echo "venv $3" >> "$FAKE_PY_LOG"; exit 0
fi
shift 3
echo "pip $*" >> "$FAKE_PY_LOG"
for a in "$@"; do
  case "$a" in missing*) echo "ERROR: No matching distribution found for $a"; exit 1;; esac
done
dir=$(dirname "$(dirname "$0")")
printf '#!/bin/sh\\n' > "$dir/bin/datahub" && chmod +x "$dir/bin/datahub"
`;

async function fakeVenv(ingestion: Record<string, unknown> = {}) {
  const root = await tmp();
  const python = path.join(root, "python3");
  await writeFile(python, FAKE_PYTHON, { mode: 0o755 });
  const log = path.join(root, "log");
  const config = compileConfig({
    ingestion: {
      runtime: "venv",
      installer: "pip",
      python,
      venv_dir: path.join(root, "venvs"),
      pass_env: ["FAKE_PY_LOG"],
      ...ingestion,
    },
  }, { env: {}, home: root }).config;
  let run = 0;
  const acquire = (args: Record<string, string>) =>
    acquireVenv(checkRequest(config, "fake", args, {}), {
      config,
      env: { PATH: "/usr/bin:/bin", FAKE_PY_LOG: log },
      runId: `r${++run}`,
      marker: { name: "INGEST_AGENT_RUN", value: "t" },
      child: () => {},
      cancelled: () => false,
    });
  const builds = async () =>
    (await readFile(log, "utf8").catch(() => "")).split("\n").filter((l) => l.startsWith("venv"))
      .length;
  return { root, acquire, builds, venvs: path.join(root, "venvs") };
}

Deno.test("acquireVenv: concurrent runs build once; the steps of SPEC §4.4; the run holds it", async () => {
  const f = await fakeVenv();
  try {
    const [a, b] = await Promise.all([
      f.acquire({ version: "1.0.0", extra_pip_requirements: '["x==1"]' }),
      f.acquire({ version: "1.0.0", extra_pip_requirements: '["x==1"]' }),
    ]);
    assert.equal(await f.builds(), 1);
    assert.deepEqual([a.hit, b.hit].sort(), [false, true]);
    assert.equal(a.dir, b.dir);
    assert.equal(a.datahub, path.join(a.dir, "bin", "datahub"));
    const pips = (await readFile(path.join(f.root, "log"), "utf8")).split("\n")
      .filter((l) => l.startsWith("pip")).map((l) =>
        l.replace(/^pip --disable-pip-version-check --no-input /, "")
      );
    assert.deepEqual(pips, [
      "--no-deps acryl-datahub==1.0.0",
      "acryl-datahub[fake]==1.0.0",
      "x==1",
    ]);
    assert.equal(await inUse(a.dir), true);
    await a.use.release();
    await b.use.started(999999999, "1"); // the CLI's group leader, long gone
    assert.equal(await inUse(a.dir), false);
  } finally {
    await rm(f.root, { recursive: true, force: true });
  }
});

Deno.test("acquireVenv: `latest` past latest_ttl is rebuilt, unless a run still uses it", async () => {
  const f = await fakeVenv({ latest_ttl: "0s" });
  try {
    const first = await f.acquire({});
    await new Promise((r) => setTimeout(r, 5));
    const second = await f.acquire({ version: "latest" });
    assert.equal(second.hit, true);
    assert.equal(second.staleInUse, true, "kept: the first run uses it");
    await first.use.release();
    await second.use.release();
    const third = await f.acquire({});
    assert.equal(third.hit, false);
    assert.equal(await f.builds(), 2);
    await third.use.release();
  } finally {
    await rm(f.root, { recursive: true, force: true });
  }
});

Deno.test("acquireVenv: a failed build leaves nothing and is not cached", async () => {
  const f = await fakeVenv();
  try {
    for (let i = 0; i < 2; i++) {
      const err = await f.acquire({ extra_pip_requirements: '["missing-pkg"]' }).catch((e) => e);
      assert.ok(err instanceof SetupFailed, String(err));
      assert.equal(err.code, "RUNTIME_SETUP_FAILED");
      assert.match(
        err.message,
        /\(extra requirements\): exit code 1: ERROR: No matching distribution found for missing-pkg/,
      );
      assert.ok(err.output.some((l) => l.startsWith("$ ") && l.includes("missing-pkg")));
      assert.deepEqual((await readdir(f.venvs)).filter((n) => !n.endsWith(".lock")), []);
    }
    assert.equal(await f.builds(), 2);
  } finally {
    await rm(f.root, { recursive: true, force: true });
  }
});
