// Durable writes against a real directory: the directory fsync shared by writes that land
// together (group commit), its errors, and single-unlink removal.
import assert from "node:assert/strict";
import { setImmediate } from "node:timers";
import { removeFile, syncDir, writeDurably } from "./durable.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "durable_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

Deno.test("syncDir: callers of one turn share one sync; a caller during that sync waits for the next one", async () => {
  await withDir(async (dir) => {
    const first = syncDir(dir);
    assert.equal(syncDir(dir), first, "same turn: the same sync");
    const other = syncDir(`${dir}/..`);
    assert.notEqual(other, first, "another directory syncs on its own");
    await turn(); // the shared sync has started now
    const order: string[] = [];
    const later = syncDir(dir);
    assert.notEqual(later, first, "the running sync may have started before this caller's change");
    assert.equal(syncDir(dir), later, "callers during a sync share the next one");
    await Promise.all([
      first.then(() => order.push("first")),
      later.then(() => order.push("later")),
      other,
    ]);
    assert.deepEqual(order, ["first", "later"]);
    const again = syncDir(dir);
    assert.notEqual(again, later, "once done, a new caller gets a new sync");
    await again;
  });
});

Deno.test("syncDir: every caller of a failed sync gets its error; the next sync starts afresh", async () => {
  await withDir(async (dir) => {
    const gone = `${dir}/missing`;
    const calls = [syncDir(gone), syncDir(gone)];
    for (const call of calls) {
      await assert.rejects(call, (err: Error) => /ENOENT/.test(err.message));
    }
    await Deno.mkdir(gone);
    await syncDir(gone);
  });
});

Deno.test("writeDurably: many writes to one directory at once all land whole, no temp file left", async () => {
  await withDir(async (dir) => {
    const names = Array.from({ length: 24 }, (_, i) => `r${i % 8}-${i}.json`);
    await Promise.all(names.map((n, i) => writeDurably(`${dir}/${n}`, JSON.stringify({ i }))));
    // Writes to one file in call order: the last one wins.
    await Promise.all([1, 2, 3].map((v) => writeDurably(`${dir}/same.json`, String(v))));
    const left = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(left, [...names, "same.json"].sort());
    for (const [i, n] of names.entries()) {
      assert.deepEqual(JSON.parse(await Deno.readTextFile(`${dir}/${n}`)), { i });
    }
    assert.ok(["1", "2", "3"].includes(await Deno.readTextFile(`${dir}/same.json`)));
  });
});

Deno.test("removeFile: removes a file; a missing one is fine; other failures are errors", async () => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/f`, "x");
    await removeFile(`${dir}/f`);
    assert.equal([...Deno.readDirSync(dir)].length, 0);
    await removeFile(`${dir}/f`);
    await Deno.writeTextFile(`${dir}/g`, "x");
    await assert.rejects(removeFile(`${dir}/g/not-a-directory`), /ENOTDIR|Not a directory/);
  });
});
