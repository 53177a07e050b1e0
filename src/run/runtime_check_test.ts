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

Deno.test("runtime check: MemAvailable below agent.min_available_memory blocks every poll, logged once per change", async () => {
  const GiB = 1024 ** 3;
  const { config } = compileConfig({
    ingestion: { datahub_command: "/bin/sh" },
    agent: { min_available_memory: "2GiB" },
  }, { env: {} });
  let available: number | undefined = 1.5 * GiB;
  const logged: { level: string; msg: string; fields?: Fields }[] = [];
  const blocks: (string | undefined)[] = [];
  const cliChanges: (string | undefined)[] = [];
  const check = new RuntimeCheck({
    config,
    env: { PATH: "/usr/bin:/bin" },
    log: logger(logged),
    onChange: (p) => cliChanges.push(p),
    onMemory: (b) => blocks.push(b),
    memAvailable: () => available,
  });
  const first = await check.problem(0);
  assert.equal(
    first,
    "the host's MemAvailable (1.50 GiB) is below agent.min_available_memory (2.00 GiB); no run starts until more memory is free",
  );
  available = 1.2 * GiB;
  assert.match((await check.problem(10))!, /\(1\.20 GiB\)/, "re-read on every poll");
  assert.equal(logged.filter((l) => l.level === "warn").length, 1, "logged once, not every poll");
  assert.equal(logged[0]!.fields?.min_available_memory_bytes, 2 * GiB);
  available = 3 * GiB;
  assert.equal(await check.problem(20), undefined, "enough again");
  assert.ok(logged.some((l) => l.level === "info" && /enough memory/.test(l.msg)));
  assert.equal(blocks.length, 3);
  assert.equal(blocks.at(-1), undefined);
  assert.deepEqual(cliChanges, [], "the CLI is fine: /readyz untouched");
  // Off (0): never blocks, MemAvailable not even read.
  const off = new RuntimeCheck({
    config: compileConfig({ ingestion: { datahub_command: "/bin/sh" } }, { env: {} }).config,
    env: {},
    log: logger([]),
    memAvailable: () => assert.fail("not read when off"),
  });
  assert.equal(await off.problem(0), undefined);
});

Deno.test("runtime check: a host that does not say its MemAvailable is not blocked; a warning says the minimum is not enforced", async () => {
  const { config } = compileConfig({
    ingestion: { datahub_command: "/bin/sh" },
    agent: { min_available_memory: "2GiB" },
  }, { env: {} });
  const logged: { level: string; msg: string; fields?: Fields }[] = [];
  const check = new RuntimeCheck({
    config,
    env: {},
    log: logger(logged),
    memAvailable: () => undefined,
  });
  assert.equal(await check.problem(0), undefined);
  assert.ok(logged.some((l) => l.level === "warn" && /not enforced/.test(l.msg)));
});
