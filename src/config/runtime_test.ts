import assert from "node:assert/strict";
import { compileConfig, ConfigError } from "./config.ts";

const HOME = "/home/tester";
const compile = (ingestion: Record<string, unknown>) =>
  compileConfig({ ingestion }, { env: {}, home: HOME }).config.ingestion;

function issue(ingestion: Record<string, unknown>): { path: string; message: string } {
  try {
    compile(ingestion);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    assert.equal(err.issues.length, 1, JSON.stringify(err.issues));
    return err.issues[0]!;
  }
  assert.fail("expected the configuration to be rejected");
}

Deno.test("ingestion runtime keys: venv settings compile (paths absolute, lists from one value)", () => {
  const c = compile({
    runtime: "venv",
    python: "/usr/bin/python3.11",
    installer: "pip",
    venv_dir: "~/venvs",
    venv_cache_max: 3,
    latest_ttl: "1h",
    index_url: "https://nexus.example.com/simple",
    extra_index_url: "https://extra.example.com/simple",
    find_links: ["wheels", "https://files.example.com/wheels/"],
    offline: "true",
    bundled_dir: "~/bundles",
    allowed_source_types: ["postgres", "fake"],
    allow_extra_pip: false,
  });
  assert.equal(c.runtime, "venv");
  assert.equal(c.python, "/usr/bin/python3.11");
  assert.equal(c.installer, "pip");
  assert.equal(c.venvDir, `${HOME}/venvs`);
  assert.equal(c.venvCacheMax, 3);
  assert.equal(c.latestTtlMs, 3_600_000);
  assert.equal(c.indexUrl, "https://nexus.example.com/simple");
  assert.deepEqual(c.extraIndexUrls, ["https://extra.example.com/simple"]);
  assert.equal(c.findLinks[0], `${Deno.cwd()}/wheels`);
  assert.equal(c.findLinks[1], "https://files.example.com/wheels/");
  assert.equal(c.offline, true);
  assert.equal(c.bundledDir, `${HOME}/bundles`);
  assert.deepEqual(c.allowedSourceTypes, ["postgres", "fake"]);
  assert.equal(c.allowExtraPip, false);
});

Deno.test("ingestion runtime keys: venv_dir defaults under state_dir; bundled is a runtime", () => {
  const { config } = compileConfig({
    agent: { state_dir: "/var/lib/ia" },
    ingestion: { runtime: "bundled" },
  }, { env: {}, home: HOME });
  assert.equal(config.ingestion.venvDir, "/var/lib/ia/venvs");
  assert.equal(config.ingestion.runtime, "bundled");
});

Deno.test("ingestion runtime keys: what is rejected, naming the key", () => {
  assert.deepEqual(issue({ offline: true }).path, "ingestion.find_links");
  assert.match(issue({ offline: true }).message, /needs find_links/);
  assert.equal(issue({ runtime: "docker" }).path, "ingestion.runtime");
  assert.match(issue({ runtime: "docker" }).message, /"preinstalled".*"venv".*"bundled"/);
  assert.equal(issue({ index_url: "nexus:8081" }).path, "ingestion.index_url");
  assert.equal(issue({ extra_index_url: ["ftp://x"] }).path, "ingestion.extra_index_url.0");
  assert.equal(issue({ venv_cache_max: 0 }).path, "ingestion.venv_cache_max");
  assert.equal(issue({ installer: "conda" }).path, "ingestion.installer");
  assert.equal(issue({ allowed_source_types: [""] }).path, "ingestion.allowed_source_types.0");
});
