import assert from "node:assert/strict";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { compileConfig } from "../config/config.ts";
import type { Fields, Logger } from "../observe/log.ts";
import { RECHECK_MS, RuntimeCheck } from "./runtime_check.ts";

function logger(out: { level: string; msg: string; fields?: Fields }[]): Logger {
  const make = (): Logger => ({
    debug: (msg, fields) => out.push({ level: "debug", msg, fields }),
    info: (msg, fields) => out.push({ level: "info", msg, fields }),
    warn: (msg, fields) => out.push({ level: "warn", msg, fields }),
    error: (msg, fields) => out.push({ level: "error", msg, fields }),
    with: () => make(),
  });
  return make();
}

Deno.test("runtime check: a missing CLI is a problem naming the option, checked again a minute later, and cleared", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "runtime-check-"));
  try {
    const cli = path.join(dir, "datahub");
    const { config } = compileConfig({ ingestion: { datahub_command: cli } }, { env: {} });
    const logged: { level: string; msg: string; fields?: Fields }[] = [];
    const changes: (string | undefined)[] = [];
    const check = new RuntimeCheck({
      config,
      env: { PATH: "/usr/bin:/bin" },
      log: logger(logged),
      onChange: (p) => changes.push(p),
    });
    const first = await check.problem(0);
    assert.match(first!, /^ingestion\.datahub_command: cannot start '.*datahub': not found/);
    assert.equal(logged.filter((l) => l.level === "error").length, 1);
    await writeFile(cli, "#!/bin/sh\nexit 0\n");
    await chmod(cli, 0o755);
    assert.equal(await check.problem(RECHECK_MS - 1), first, "not checked again within a minute");
    assert.equal(await check.problem(RECHECK_MS), undefined, "fixed: checked again after a minute");
    assert.deepEqual(changes, [first, undefined]);
    assert.ok(logged.some((l) => l.level === "info" && /again/.test(l.msg)));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
