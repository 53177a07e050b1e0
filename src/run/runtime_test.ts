import assert from "node:assert/strict";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { compileConfig } from "../config/config.ts";
import { AgentError } from "../errors.ts";
import { checkRequest } from "./policy.ts";
import {
  hideCredentials,
  indexCredentials,
  resolveRuntime,
  type RuntimeContext,
} from "./runtime.ts";
import type { Note } from "./summary.ts";

function context(ingestion: Record<string, unknown>) {
  const config = compileConfig({ ingestion }, { env: {}, home: "/h" }).config;
  const notes: string[] = [];
  const sections: string[] = [];
  const c: RuntimeContext = {
    config,
    env: {},
    runId: "r1",
    marker: { name: "INGEST_AGENT_RUN", value: "t" },
    note: (_level: Note["level"], message: string) => notes.push(message),
    setup: (s) => sections.push(s),
    child: () => {},
    cancelled: () => false,
  };
  return { c, config, notes, sections };
}

async function bundle(root: string, name: string): Promise<string> {
  const bin = path.join(root, name, "bin");
  await mkdir(bin, { recursive: true });
  await writeFile(path.join(bin, "datahub"), "#!/bin/sh\n");
  await chmod(path.join(bin, "datahub"), 0o755);
  return path.join(bin, "datahub");
}

Deno.test("bundled: <type>-bundled, else default-bundled; version and extra pip noted as ignored", async () => {
  const root = await mkdtemp(path.join(os.tmpdir(), "bundles-"));
  try {
    const own = await bundle(root, "postgres-bundled");
    const { c, config, notes, sections } = context({ runtime: "bundled", bundled_dir: root });
    const args = { version: "1.2.0", extra_pip_plugins: '["x"]' };
    const r = await resolveRuntime(checkRequest(config, "postgres", args, {}), c);
    assert.equal(r?.command, own);
    assert.equal(r?.venv?.bin, path.dirname(own));
    assert.ok(
      notes.some((n) => /version '1.2.0' ignored: the bundled runtime/.test(n)),
      notes.join(),
    );
    assert.ok(notes.some((n) => /extra_pip_plugins \["x"\] ignored/.test(n)), notes.join());
    assert.match(sections[0]!, /^Runtime: bundled\nEnvironment: .*postgres-bundled \(prebuilt\)/);

    const fallback = await bundle(root, "default-bundled");
    const m = await resolveRuntime(checkRequest(config, "mysql", {}, {}), c);
    assert.equal(m?.command, fallback);
    assert.match(sections[1]!, /default bundle/);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

Deno.test("bundled: a missing bundle is RUNTIME_MISSING naming the directory it expected", async () => {
  const root = await mkdtemp(path.join(os.tmpdir(), "bundles-"));
  try {
    const { c, config, sections } = context({ runtime: "bundled", bundled_dir: root });
    const err = await resolveRuntime(checkRequest(config, "snowflake", {}, {}), c).catch((e) => e);
    assert.ok(err instanceof AgentError);
    assert.equal(err.code, "RUNTIME_MISSING");
    assert.ok(err.message.includes(path.join(root, "snowflake-bundled")), err.message);
    assert.ok(err.message.includes(path.join(root, "default-bundled")), err.message);
    assert.match(sections[0]!, /Environment: none/);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

Deno.test("preinstalled: the configured CLI, extra pip arguments noted as ignored, no setup section", async () => {
  const { c, config, notes, sections } = context({ datahub_command: "/opt/dh/bin/datahub" });
  const request = checkRequest(config, "x", { extra_pip_requirements: '["a==1"]' }, {});
  const r = await resolveRuntime(request, c);
  assert.equal(r?.command, "/opt/dh/bin/datahub");
  assert.deepEqual(notes, [
    'extra_pip_requirements ["a==1"] ignored: the preinstalled runtime uses the installed datahub CLI as is',
  ]);
  assert.deepEqual(sections, []);
});

Deno.test("venv: version native runs the preinstalled CLI, bundled the bundle", async () => {
  const { c, config, notes } = context({ runtime: "venv", datahub_command: "/x/datahub" });
  const r = await resolveRuntime(checkRequest(config, "x", { version: "native" }, {}), c);
  assert.equal(r?.command, "/x/datahub");
  assert.match(notes[0]!, /version 'native'/);
  const err = await resolveRuntime(checkRequest(config, "x", { version: "bundled" }, {}), c)
    .catch((e) => e);
  assert.equal((err as AgentError).code, "RUNTIME_MISSING");
});

Deno.test("index credentials: passwords of index URLs are masked, and hidden in the report", () => {
  const { config } = context({
    runtime: "venv",
    index_url: "https://svc:p%40ss-word@nexus.example.com/simple",
  });
  const found = indexCredentials(config, { PIP_EXTRA_INDEX_URL: "https://u:tok3n-x@a.example/s" });
  assert.deepEqual(found, ["p%40ss-word", "p@ss-word", "tok3n-x", "tok3n-x"]);
  assert.equal(
    hideCredentials("--index-url https://svc:p%40ss-word@nexus.example.com/simple"),
    "--index-url https://svc:****@nexus.example.com/simple",
  );
  assert.deepEqual(indexCredentials(context({}).config, { PIP_INDEX_URL: "https://a:b@c/" }), []);
});
