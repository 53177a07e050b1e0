import assert from "node:assert/strict";
import { mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { TOKEN_CHECK_MS, TokenFile } from "./token_file.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "token-file-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

Deno.test("TokenFile: an atomic rename is picked up at the next check, at most once a second", async () => {
  await withDir(async (dir) => {
    const file = path.join(dir, "token");
    await writeFile(file, "first-token\n");
    const t = new TokenFile(file, "first-token");
    const seen: string[] = [];
    t.onChange = (token) => seen.push(token);
    let now = 10_000;
    assert.equal(await t.current(now), "first-token");
    await writeFile(`${file}.new`, "second-token\n");
    await rename(`${file}.new`, file);
    now += TOKEN_CHECK_MS / 2;
    assert.equal(await t.current(now), "first-token", "not checked again within a second");
    now += TOKEN_CHECK_MS;
    assert.equal(await t.current(now), "second-token");
    assert.deepEqual(seen, ["second-token"], "told before it is used");
  });
});

Deno.test("TokenFile: reread says whether the token changed; an unreadable file keeps the old one", async () => {
  await withDir(async (dir) => {
    const file = path.join(dir, "token");
    await writeFile(file, "one-token");
    const t = new TokenFile(file, "one-token");
    const problems: Array<string | undefined> = [];
    t.onProblem = (p) => problems.push(p);
    assert.equal(await t.reread(), false);
    await writeFile(file, " two-token \n");
    assert.equal(await t.reread(), true);
    assert.equal(t.token, "two-token");
    await rm(file);
    assert.equal(await t.reread(), false);
    assert.equal(await t.reread(), false);
    assert.equal(t.token, "two-token");
    assert.deepEqual(problems, [`cannot read ${file}: no such file`], "said once");
    await writeFile(file, "");
    assert.equal(await t.reread(), false, "an empty file keeps the token");
    await writeFile(file, "three-token");
    assert.equal(await t.reread(), true);
    assert.deepEqual(problems, [
      `cannot read ${file}: no such file`,
      `${file} is empty`,
      undefined,
    ]);
    assert.ok(!problems.join().includes("token\n"), "never the content");
  });
});
