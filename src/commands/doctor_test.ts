import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { processStartTime } from "../state/procs.ts";
import { type Check, formatCheck, summary } from "./doctor.ts";
import { checkClock, formatOffset } from "./doctor_gms.ts";
import {
  checkDirectory,
  checkLock,
  checkProxy,
  findCommand,
  proxyFor,
  withoutUserinfo,
} from "./doctor_host.ts";

Deno.test("doctor proxyFor: undici's and curl's rules (lower case wins, HTTPS falls back to HTTP_PROXY, NO_PROXY)", () => {
  const https = "https://gms.example.com";
  assert.deepEqual(proxyFor(https, {}), {});
  assert.deepEqual(proxyFor(https, { HTTPS_PROXY: "http://p:1" }), {
    proxy: "http://p:1",
    variable: "HTTPS_PROXY",
  });
  assert.deepEqual(proxyFor(https, { https_proxy: "http://a:1", HTTPS_PROXY: "http://b:1" }), {
    proxy: "http://a:1",
    variable: "https_proxy",
  });
  assert.deepEqual(proxyFor(https, { HTTP_PROXY: "http://h:1" }), {
    proxy: "http://h:1",
    variable: "HTTP_PROXY",
  });
  assert.deepEqual(proxyFor("http://gms:8080", { HTTPS_PROXY: "http://p:1" }), {});
  const p = { HTTPS_PROXY: "http://p:1" };
  assert.deepEqual(proxyFor(https, { ...p, NO_PROXY: "*" }), { noProxy: "NO_PROXY" });
  assert.deepEqual(proxyFor(https, { ...p, no_proxy: ".example.com" }), { noProxy: "no_proxy" });
  assert.deepEqual(proxyFor(https, { ...p, NO_PROXY: "gms.example.com:443" }), {
    noProxy: "NO_PROXY",
  });
  assert.equal(proxyFor(https, { ...p, NO_PROXY: "gms.example.com:8443" }).proxy, "http://p:1");
  assert.equal(proxyFor(https, { ...p, NO_PROXY: "other.com, ample.com" }).proxy, "http://p:1");
});

Deno.test("doctor withoutUserinfo masks user and password", () => {
  assert.equal(withoutUserinfo("http://u:pw@proxy:3128"), "http://***@proxy:3128");
  assert.equal(withoutUserinfo("http://proxy:3128"), "http://proxy:3128");
  assert.equal(withoutUserinfo("not a url //u:pw@x"), "not a url //***@x");
});

Deno.test("doctor clock: within 30 s passes, beyond is a warning with a fix", () => {
  assert.equal(checkClock(400).mark, "✓");
  assert.match(checkClock(400).detail, /under 1 s apart/);
  assert.match(checkClock(-20_000).detail, /GMS is 20 s behind this host/);
  const far = checkClock(-7_200_000);
  assert.equal(far.mark, "!");
  assert.match(far.detail, /2 h 0 min behind this host's: leases .* depend on clocks/);
  assert.ok(far.fix);
  assert.equal(checkClock(undefined).mark, "-");
  assert.equal(formatOffset(3_599_700), "1 h 0 min");
  assert.equal(formatOffset(125_000), "2 min 5 s");
  assert.equal(formatOffset(9_960), "10 s");
});

Deno.test("doctor output: one line per check, the fix under it, and the summary", () => {
  const fail: Check = { name: "lock", mark: "✗", detail: "held", fix: "do this." };
  assert.equal(formatCheck(fail), "✗ lock         held\n               fix: do this.\n");
  const ok: Check = { name: "gms", mark: "✓", detail: "answers" };
  const skip: Check = { name: "clock", mark: "-", detail: "skipped: x" };
  const warn: Check = { name: "clock", mark: "!", detail: "far", fix: "ntp." };
  assert.equal(summary([ok, warn]), "doctor: all 2 checks passed (1 warning)\n");
  assert.equal(summary([ok, fail, skip]), "doctor: 1 of 3 checks failed (lock), 1 skipped\n");
});

Deno.test("doctor findCommand and checkDirectory: PATH lookup, symbolic links refused, probe removed", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "doctor-unit-"));
  try {
    const bin = path.join(dir, "bin");
    await mkdir(bin);
    await writeFile(path.join(bin, "tool"), "#!/bin/sh\n", { mode: 0o755 });
    await writeFile(path.join(bin, "plain"), "data\n", { mode: 0o644 });
    assert.deepEqual(await findCommand("tool", `/nonexistent:${bin}`), {
      found: path.join(bin, "tool"),
    });
    assert.deepEqual(await findCommand("missing", bin), {});
    assert.deepEqual(await findCommand(path.join(bin, "missing"), undefined), {});

    const fresh = path.join(dir, "a", "b");
    const made = await checkDirectory("work_dir", fresh);
    assert.equal(made.mark, "✓", made.detail);
    assert.deepEqual([...Deno.readDirSync(fresh)], [], "the probe file is removed");
    const link = path.join(dir, "link");
    await symlink(fresh, link);
    const refused = await checkDirectory("state_dir", link);
    assert.equal(refused.mark, "✗");
    assert.match(refused.detail, /symbolic link/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

Deno.test("doctor lock: a live holder fails with its pid, a stale lock or none passes, nothing changes", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "doctor-lock-"));
  const child = spawn("/bin/sleep", ["30"], { stdio: "ignore" });
  try {
    assert.equal((await checkLock(dir)).mark, "✓");
    const lock = path.join(dir, "agent.lock");
    const pid = child.pid!;
    const content = `${pid} ${processStartTime(pid)}`;
    await writeFile(lock, content);
    const held = await checkLock(dir);
    assert.equal(held.mark, "✗");
    assert.match(held.fix!, new RegExp(`\\(pid ${pid} uses this one\\)`));
    assert.equal(await Deno.readTextFile(lock), content, "the lock is not touched");
    await writeFile(lock, `${pid} 1`); // the pid was reused: another start time
    assert.equal((await checkLock(dir)).mark, "✓");
  } finally {
    child.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
  }
});

Deno.test("doctor checkProxy: datahub.proxy is shown as the proxy in effect (NO_PROXY still wins)", () => {
  const env = { HTTPS_PROXY: "http://env:1" };
  const server = "https://gms.example.com";
  assert.equal(
    checkProxy(server, env, "http://u:pw@conf:2").detail,
    "http://***@conf:2 (from datahub.proxy) for https://gms.example.com",
  );
  assert.equal(
    checkProxy(server, { ...env, NO_PROXY: "example.com" }, "http://conf:2").detail,
    "none for https://gms.example.com (NO_PROXY excludes it)",
  );
  assert.equal(
    checkProxy(server, env).detail,
    "http://env:1 (from HTTPS_PROXY) for https://gms.example.com",
  );
});
