/**
 * Runtimes (issue 12) through the executable: the venv runtime on a fake acryl-datahub built at
 * test time (test/fixtures/wheel.ts) and installed offline from a find-links directory; the
 * bundled runtime; the policy; cancel and timeout during a build. Nothing leaves 127.0.0.1.
 *
 * The tests that build environments need python3 with its venv and ensurepip modules; where it
 * has none they are reported as ignored, with the reason printed.
 */
import assert from "node:assert/strict";
import { mkdir, readdir, readFile, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { recipe, setup, terminal } from "../harness.ts";
import { buildFakeDatahub, pythonVenvProblem } from "../fixtures/wheel.ts";

const NO_VENV = pythonVenvProblem();
if (NO_VENV) console.log(`runtime_test: the venv build tests are ignored: ${NO_VENV}`);

const owner = (report: string) => /Claimed by ingest-agent instance (\S+)/.exec(report)?.[1];
const setupOf = (report: string) =>
  report.split("~~~~ Environment Setup ~~~~\n")[1]?.split("\n\n~~~~ ")[0] ?? "";
const setupSeconds = (report: string) =>
  Number(/Setup took: (\d+\.\d) s/.exec(setupOf(report))?.[1] ?? NaN);
const envDirs = async (dir: string) =>
  (await readdir(dir).catch(() => [] as string[])).filter((n) => !n.endsWith(".lock"));

/** A venv-runtime configuration installing offline from `wheels` into `venvs`. */
const venv = (wheels: string, venvs: string, ingestion: Record<string, unknown> = {}) => ({
  ingestion: {
    runtime: "venv",
    installer: "pip",
    offline: true,
    find_links: wheels,
    venv_dir: venvs,
    ...ingestion,
  },
});

Deno.test({
  name:
    "venv: built once for concurrent runs of two agents, then reused; version, extras and constraints honoured; LRU eviction",
  ignore: NO_VENV !== undefined,
  async fn(t) {
    await using s = await setup();
    const wheels = await buildFakeDatahub(path.join(s.dir, "wheels"), s.cli.path);
    const venvs = path.join(s.dir, "venvs");
    const config = {
      ...venv(wheels, venvs, { venv_cache_max: 2 }),
      agent: { max_concurrent: 1 },
    };
    const args = (extra: Record<string, string> = {}) => ({
      recipe: recipe({ print_env: ["VIRTUAL_ENV"] }),
      version: "1.0.0",
      ...extra,
    });
    const k1 = args({
      extra_pip_plugins: '["other"]',
      extra_pip_requirements: '["fake-extra-req"]',
    });
    const first = [s.sim.createRequest({ args: k1 }), s.sim.createRequest({ args: k1 })];
    await using _a = await s.startAgent(config);
    await using _b = await s.startAgent(config);

    let missSeconds = NaN;
    await t.step("two agents, one build", async () => {
      const results = await Promise.all(first.map((u) => terminal(s.sim, u, 90_000)));
      for (const r of results) assert.equal(r.status, "SUCCESS", r.report);
      const reports = results.map((r) => r.report!);
      assert.notEqual(owner(reports[0]!), owner(reports[1]!), "each agent ran one");
      const misses = reports.filter((r) => /\(cache miss: built in/.test(setupOf(r)));
      const hits = reports.filter((r) => /\(cache hit, built .*waited/.test(setupOf(r)));
      assert.equal(misses.length, 1, reports.map(setupOf).join("\n----\n"));
      assert.equal(hits.length, 1);
      missSeconds = setupSeconds(misses[0]!);
      const env = (await envDirs(venvs))[0]!;
      for (const r of reports) {
        assert.ok(
          r.includes(
            "installed: acryl-datahub==1.0.0, fake-extra-req==1.0, fake-source-fake==1.0, fake-source-other==1.0",
          ),
          "the extras' distributions are installed; constraints.txt pinned fake-extra-req to 1.0",
        );
        assert.ok(r.includes(`VIRTUAL_ENV=${path.join(venvs, env)}`), r);
        assert.match(
          setupOf(r),
          /Requested: acryl-datahub\[fake,other\]==1\.0\.0; extra requirements: fake-extra-req/,
        );
        assert.match(setupOf(r), /From: --no-index --find-links .* \(offline/);
        assert.match(setupOf(r), /Constraints: datahub\/constraints.txt/);
      }
      assert.match(
        setupOf(misses[0]!),
        /Steps: create \d+\.\d s, acryl-datahub \(no dependencies\)/,
      );
    });

    await t.step("the next run is a cache hit, and faster", async () => {
      const r = await terminal(s.sim, s.sim.createRequest({ args: k1 }), 30_000);
      assert.equal(r.status, "SUCCESS");
      assert.match(setupOf(r.report!), /\(cache hit, built/);
      assert.ok(
        setupSeconds(r.report!) < missSeconds,
        `${setupSeconds(r.report!)} < ${missSeconds}`,
      );
    });

    await t.step("args.version picks the wheel; 0.9.0 has no constraints", async () => {
      const r = await terminal(
        s.sim,
        s.sim.createRequest({ args: args({ version: "0.9.0" }) }),
        60_000,
      );
      assert.equal(r.status, "SUCCESS", r.report);
      assert.ok(r.report!.includes("fake acryl-datahub 0.9.0 in "), r.report);
      assert.match(setupOf(r.report!), /Constraints: none/);
      assert.equal((await envDirs(venvs)).length, 2);
    });

    await t.step("a new environment evicts the least recently used one", async () => {
      const again = await terminal(s.sim, s.sim.createRequest({ args: k1 }), 30_000);
      assert.match(setupOf(again.report!), /cache hit/); // 1.0.0+other is now the most recent
      const before = await envDirs(venvs);
      const r = await terminal(s.sim, s.sim.createRequest({ args: args() }), 60_000);
      assert.equal(r.status, "SUCCESS", r.report);
      const old = before.find((n) => n.startsWith("fake-0.9.0-"))!;
      assert.match(
        setupOf(r.report!),
        new RegExp(`Evicted: ${old} \\(ingestion.venv_cache_max 2\\)`),
      );
      const after = await envDirs(venvs);
      assert.equal(after.length, 2);
      assert.ok(!after.includes(old), after.join());
      assert.ok(after.some((n) => before.includes(n) && n !== old), "the recently used one stays");
    });
  },
});

Deno.test({
  name: "venv: a broken requirement fails with the installer's message, masked; nothing is cached",
  ignore: NO_VENV !== undefined,
  async fn() {
    await using s = await setup();
    const wheels = await buildFakeDatahub(path.join(s.dir, "wheels"), s.cli.path);
    const venvs = path.join(s.dir, "venvs");
    const args = {
      recipe: recipe(),
      version: "1.0.0",
      extra_pip_requirements: '["missing-pkg-${TOKENISH}"]',
      extra_env_vars: '{"TOKENISH": "s3cr3t-value-42"}',
    };
    // Two at once: the second waits for the first's build, finds nothing, and builds again.
    const urns = [s.sim.createRequest({ args }), s.sim.createRequest({ args })];
    await using _agent = await s.startAgent(venv(wheels, venvs));
    for (const urn of urns) {
      const r = await terminal(s.sim, urn, 90_000);
      assert.equal(r.status, "FAILURE");
      const report = r.report!;
      assert.match(
        report,
        /Failed to set up the environment \(extra requirements\): exit code 1: ERROR: No matching distribution found for missing-pkg-\*{8}/,
      );
      assert.match(
        setupOf(report),
        /cache miss: the build failed after .*the next run builds it again/,
      );
      assert.match(setupOf(report), /Installer output:\n.*\$ .*pip install/s);
      assert.ok(!report.includes("s3cr3t-value-42"), "the secret is masked");
    }
    assert.deepEqual(await envDirs(venvs), [], "the half-built environments were removed");
    assert.deepEqual(await s.cli.readJournal(), [], "the CLI never ran");
  },
});

Deno.test("policy: refusals name the rule, before anything is installed or resolved", async () => {
  await using s = await setup({ sim: { secrets: { PW: "from-datahub" } } });
  const venvs = path.join(s.dir, "venvs");
  const base = venv(path.join(s.dir, "wheels"), venvs, {
    // Never run: every request here is refused first (so no python3 is needed).
    python: "/bin/sh",
    allowed_source_types: ["fake"],
  });
  const refused = {
    type: s.sim.createRequest({
      args: { recipe: JSON.stringify({ source: { type: "mysql", config: { p: "${PW}" } } }) },
    }),
    option: s.sim.createRequest({
      args: { recipe: recipe(), extra_pip_requirements: '["--index-url https://evil.example/s"]' },
    }),
    url: s.sim.createRequest({
      args: { recipe: recipe(), extra_pip_requirements: '["pkg @ https://evil.example/p.whl"]' },
    }),
    pip: s.sim.createRequest({
      executorId: "strict",
      args: { recipe: recipe(), extra_pip_plugins: '["other"]' },
    }),
  };
  await using _a = await s.startAgent(base);
  await using _b = await s.startAgent({
    ...venv(path.join(s.dir, "wheels"), venvs, { python: "/bin/sh", allow_extra_pip: false }),
    executor_id: "strict",
  });
  const report = async (urn: string) => {
    const r = await terminal(s.sim, urn);
    assert.equal(r.status, "FAILURE");
    return r.report!;
  };
  assert.match(
    await report(refused.type),
    /Source type 'mysql' is not allowed here: ingestion.allowed_source_types is \[fake\]/,
  );
  assert.match(
    await report(refused.option),
    /"--index-url https:\/\/evil.example\/s" is not a requirement/,
  );
  assert.match(
    await report(refused.url),
    /"pkg @ https:\/\/evil.example\/p.whl" is not a requirement/,
  );
  assert.match(
    await report(refused.pip),
    /extra_pip_plugins \["other"\] refused: ingestion.allow_extra_pip is false/,
  );
  assert.deepEqual(await envDirs(venvs), [], "nothing was installed");
  assert.deepEqual(s.sim.secretRequests(), [], "no secret was resolved for a refused request");
  assert.deepEqual(await s.cli.readJournal(), []);
});

Deno.test("bundled: <type>-bundled runs with version ignored; a missing bundle names the directory", async () => {
  await using s = await setup();
  const bundles = path.join(s.dir, "bundles");
  await mkdir(path.join(bundles, "fake-bundled", "bin"), { recursive: true });
  await symlink(s.cli.path, path.join(bundles, "fake-bundled", "bin", "datahub"));
  const ok = s.sim.createRequest({
    args: { recipe: recipe({ print_env: ["VIRTUAL_ENV"] }), version: "1.2.3" },
  });
  const missing = s.sim.createRequest({
    args: { recipe: JSON.stringify({ source: { type: "mysql", config: {} } }) },
  });
  await using _agent = await s.startAgent({
    ingestion: { runtime: "bundled", bundled_dir: bundles },
  });
  const r = await terminal(s.sim, ok);
  assert.equal(r.status, "SUCCESS", r.report);
  assert.match(r.report!, /version '1\.2\.3' ignored: the bundled runtime/);
  assert.ok(
    setupOf(r.report!).startsWith(
      `Runtime: bundled\nEnvironment: ${path.join(bundles, "fake-bundled")} (prebuilt)`,
    ),
    r.report,
  );
  assert.ok(r.report!.includes(`VIRTUAL_ENV=${path.join(bundles, "fake-bundled")}`));
  const m = await terminal(s.sim, missing);
  assert.equal(m.status, "FAILURE");
  assert.ok(
    m.report!.includes(
      `No bundled environment for source type 'mysql': expected ${
        path.join(bundles, "mysql-bundled")
      } (or ${path.join(bundles, "default-bundled")})`,
    ),
    m.report,
  );
});

Deno.test("venv: cancel during a build kills the installer's group (CANCELLED); a timeout during one is TIMEOUT", async () => {
  await using s = await setup();
  // A python3 that hangs in `-m venv`, with a child in its process group.
  const python = path.join(s.dir, "slow-python");
  await writeFile(
    python,
    `#!/bin/sh\nsleep 60 &\necho $! > "${s.dir}/sleep-$1-$$.pid"\nwait\n`,
    { mode: 0o755 },
  );
  const venvs = path.join(s.dir, "venvs");
  await mkdir(path.join(s.dir, "wheels"));
  const cancelled = s.sim.createRequest({ args: { recipe: recipe() } });
  const timed = s.sim.createRequest({
    args: { recipe: JSON.stringify({ source: { type: "slow", config: {} } }) },
  });
  await using _agent = await s.startAgent({
    ...venv(path.join(s.dir, "wheels"), venvs, { python, timeouts: { slow: "2s" } }),
    agent: { cancel_grace: "1s" },
  });
  const pids = async () => {
    for (;;) {
      const files = (await readdir(s.dir)).filter((n) => n.startsWith("sleep-"));
      if (files.length === 2) {
        return await Promise.all(
          files.map(async (f) => Number(await readFile(path.join(s.dir, f), "utf8"))),
        );
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const sleeps = await pids();
  const t0 = Date.now();
  s.sim.sendSignal(cancelled, "KILL", { actor: "urn:li:corpuser:alice" });
  const c = await terminal(s.sim, cancelled, 10_000);
  assert.equal(c.status, "CANCELLED");
  assert.ok(Date.now() - t0 < 5000, `cancelled after ${Date.now() - t0} ms`);
  assert.match(c.report!, /Ingestion task was cancelled by urn:li:corpuser:alice/);
  assert.match(setupOf(c.report!), /not ready: the run was stopped during the setup/);
  const t = await terminal(s.sim, timed, 10_000);
  assert.equal(t.status, "TIMEOUT");
  assert.match(t.report!, /The run exceeded ingestion.timeouts.slow \(2000ms\) and was stopped/);
  for (const pid of sleeps) {
    const state = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "gone");
    assert.ok(state === "gone" || / Z /.test(state), `the installer's child ${pid} is gone`);
  }
  assert.deepEqual(await envDirs(venvs), [], "nothing half-built was kept");
  assert.deepEqual(await s.cli.readJournal(), []);
});
