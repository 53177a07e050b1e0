import assert from "node:assert/strict";
import process from "node:process";
import { compileConfig } from "../config/config.ts";
import {
  BoundedLines,
  createStep,
  type GroupChild,
  installerEnv,
  installStep,
  runStep,
} from "./installer.ts";

const config = (ingestion: Record<string, unknown>) =>
  compileConfig({ ingestion: { runtime: "venv", ...ingestion } }, { env: {}, home: "/h" }).config;

/** Alive and not a zombie (an orphan waits for init to reap it). */
const running = (pid: number) => {
  try {
    return !/^\S+ \(.*\) Z/.test(Deno.readTextFileSync(`/proc/${pid}/stat`));
  } catch {
    return false;
  }
};

const pip = { kind: "pip" as const, python: "/usr/bin/python3" };
const uv = { kind: "uv" as const, uv: "/usr/bin/uv", python: "/usr/bin/python3" };

Deno.test("installer: pip and uv command lines, offline from find_links only", () => {
  const offline = config({ offline: true, find_links: "/opt/wheels" });
  assert.deepEqual(createStep(pip, "/v/e").args, ["-m", "venv", "/v/e"]);
  assert.deepEqual(createStep(uv, "/v/e").args, ["venv", "--python", "/usr/bin/python3", "/v/e"]);
  const p = installStep(pip, offline, "/v/e", "x", ["acryl-datahub==1.0"], ["--no-deps"]);
  assert.equal(p.command, "/v/e/bin/python");
  assert.deepEqual(p.args, [
    "-m",
    "pip",
    "install",
    "--disable-pip-version-check",
    "--no-input",
    "--no-index",
    "--find-links",
    "/opt/wheels",
    "--no-deps",
    "acryl-datahub==1.0",
  ]);
  const u = installStep(uv, offline, "/v/e", "x", ["a"]);
  assert.deepEqual(u.args, [
    "pip",
    "install",
    "--python",
    "/v/e/bin/python",
    "--offline",
    "--no-index",
    "--find-links",
    "/opt/wheels",
    "a",
  ]);
  const online = config({
    index_url: "https://n.example/simple",
    extra_index_url: ["https://e.example/simple"],
  });
  assert.deepEqual(installStep(pip, online, "/v/e", "x", ["a"]).args.slice(5), [
    "--index-url",
    "https://n.example/simple",
    "--extra-index-url",
    "https://e.example/simple",
    "a",
  ]);
});

Deno.test("installer: its environment passes index settings and proxies, never credentials or extra_env_vars", () => {
  const c = compileConfig({
    datahub: { token: "agent-token-123" },
    ingestion: { runtime: "venv", offline: true, find_links: "/w" },
  }, { env: {}, home: "/h" }).config;
  const env = installerEnv(
    {
      PATH: "/usr/bin",
      HOME: "/home/a",
      PIP_INDEX_URL: "https://n/simple",
      UV_CACHE_DIR: "/c",
      HTTPS_PROXY: "http://proxy:3128",
      SSL_CERT_FILE: "/ca.pem",
      DATAHUB_GMS_TOKEN: "agent-token-123",
      OTHER: "x",
    },
    c,
    "/v/e",
    { name: "INGEST_AGENT_RUN", value: "tok" },
  );
  assert.equal(env.PIP_INDEX_URL, "https://n/simple");
  assert.equal(env.UV_CACHE_DIR, "/c");
  assert.equal(env.HTTPS_PROXY, "http://proxy:3128");
  assert.equal(env.SSL_CERT_FILE, "/ca.pem");
  assert.equal(env.VIRTUAL_ENV, "/v/e");
  assert.equal(env.INGEST_AGENT_RUN, "tok");
  assert.equal(env.PIP_NO_INDEX, "1");
  assert.equal(env.UV_OFFLINE, "1");
  assert.equal(env.PIP_DISABLE_PIP_VERSION_CHECK, "1");
  assert.equal(env.DATAHUB_GMS_TOKEN, undefined);
  assert.equal(env.OTHER, undefined);
});

Deno.test({
  name: "runStep: output in order, and stop() ends the installer's whole process group",
  ignore: process.platform === "win32",
  async fn() {
    const lines: string[] = [];
    let child: GroupChild | undefined;
    const step = {
      label: "t",
      command: "/bin/sh",
      args: ["-c", 'echo one; echo two >&2; sleep 30 & echo "bg $!"; wait'],
    };
    const done = runStep(step, { PATH: "/usr/bin:/bin" }, "/", (l) => lines.push(l), (c) => {
      child = c;
    });
    while (!lines.some((l) => l.startsWith("bg "))) await new Promise((r) => setTimeout(r, 10));
    const bg = Number(lines.find((l) => l.startsWith("bg "))!.slice(3));
    assert.ok(child, "the group is handed over while it runs");
    await child!.stop(500);
    const r = await done;
    assert.equal(r.signal, "SIGTERM");
    assert.equal(child, undefined, "and taken back once it exited");
    for (let i = 0; i < 100 && running(bg); i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(!running(bg), "the background process went with its group");
    assert.deepEqual(lines.filter((l) => !l.startsWith("bg ")).sort(), ["one", "two"]);
  },
});

Deno.test("runStep: a command that cannot start is a result, not a throw", async () => {
  const r = await runStep(
    { label: "t", command: "/nonexistent/uv", args: [] },
    {},
    "/",
    () => {},
    () => {},
  );
  assert.equal(r.code, null);
  assert.match(r.error ?? "", /ENOENT/);
});

Deno.test("BoundedLines: the head and the tail, with the count of lines left out", () => {
  const b = new BoundedLines();
  for (let i = 0; i < 1000; i++) b.add(`line ${i}`);
  b.add("x".repeat(5000));
  const lines = b.lines();
  assert.equal(lines[0], "line 0");
  assert.equal(lines[99], "line 99");
  assert.match(lines[100]!, /^… 601 lines omitted …$/);
  assert.equal(lines.at(-2), "line 999");
  assert.match(lines.at(-1)!, /^x{1000} \[\.\.\.truncated\]$/);
});
