import assert from "node:assert/strict";
import { compileConfig } from "../config/config.ts";
import { AgentError } from "../errors.ts";
import { checkRequest, environmentKey, expandVars, isPlainRequirement } from "./policy.ts";

const config = (ingestion: Record<string, unknown> = {}) =>
  compileConfig({ ingestion: { runtime: "venv", ...ingestion } }, { env: {}, home: "/h" }).config;

function refusal(fn: () => unknown, code = "POLICY_REFUSED"): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof AgentError, String(err));
    assert.equal(err.code, code);
    return err.message;
  }
  assert.fail(`expected ${code}`);
}

Deno.test("policy: plugins are the source type then extra_pip_plugins; version defaults to latest", () => {
  const r = checkRequest(config(), "postgres", {
    extra_pip_plugins: '["postgres", "datahub-rest"]',
    extra_pip_requirements: '["pandas<3", ""]',
  }, {});
  assert.deepEqual(r.plugins, ["postgres", "datahub-rest"]);
  assert.equal(r.version, "latest");
  assert.deepEqual(r.requirements, ["pandas<3"]);
  assert.equal(checkRequest(config(), "x", { version: " 1.2.0.1 " }, {}).version, "1.2.0.1");
});

Deno.test("policy: allowed_source_types and allow_extra_pip refuse, naming the rule", () => {
  const allowed = config({ allowed_source_types: ["snowflake"] });
  assert.match(refusal(() => checkRequest(allowed, "mysql", {}, {})), /allowed_source_types/);
  checkRequest(allowed, "snowflake", {}, {});
  const noPip = config({ allow_extra_pip: false });
  assert.match(
    refusal(() => checkRequest(noPip, "x", { extra_pip_requirements: '["a"]' }, {})),
    /extra_pip_requirements \["a"\] refused: ingestion.allow_extra_pip is false/,
  );
  assert.match(
    refusal(() => checkRequest(noPip, "x", { extra_pip_plugins: '["b"]' }, {})),
    /extra_pip_plugins/,
  );
  checkRequest(noPip, "x", { extra_pip_plugins: "[]" }, {});
  // The policy holds in every runtime.
  const pre = compileConfig({ ingestion: { allowed_source_types: ["a"] } }, { env: {} }).config;
  refusal(() => checkRequest(pre, "b", {}, {}));
});

Deno.test("policy: a requirement is name[extras] specifiers ; marker, never a URL, path or option", () => {
  for (
    const ok of [
      "pandas",
      "pandas<3,>=1.5",
      "acryl-datahub[mysql,postgres]==1.2.0",
      "requests (>=2.0)",
      "zope.interface~=6.0",
      'pywin32; sys_platform == "win32"',
      "numpy===1.26.4",
    ]
  ) assert.ok(isPlainRequirement(ok), ok);
  for (
    const bad of [
      "--index-url https://evil.example.com/simple",
      "-e git+https://github.com/x/y",
      "-r other.txt",
      "pkg @ https://evil.example.com/pkg.whl",
      "https://evil.example.com/pkg.whl",
      "./local/dir",
      "/abs/pkg.whl",
      "pkg\n--extra-index-url https://evil",
      "pkg; os.system('x')",
      "",
    ]
  ) assert.ok(!isPlainRequirement(bad), JSON.stringify(bad));
  const message = refusal(() =>
    checkRequest(config(), "x", { extra_pip_requirements: '["--index-url=http://x"]' }, {})
  );
  assert.match(message, /not a requirement the venv runtime installs/);
});

Deno.test("policy: venv refuses plugins that cannot be extras and versions that are not releases", () => {
  assert.match(
    refusal(() => checkRequest(config(), "x", { extra_pip_plugins: '["a]@http://y"]' }, {})),
    /cannot name an acryl-datahub extra/,
  );
  assert.match(
    refusal(() => checkRequest(config(), "x", { version: "https://x/y.whl" }, {})),
    /not a release version/,
  );
  for (const v of ["latest", "native", "bundled", "0.14.1.3rc1"]) {
    checkRequest(config(), "x", { version: v }, {});
  }
  // preinstalled ignores them: no refusal, no expansion.
  const pre = compileConfig({}, { env: {} }).config;
  const r = checkRequest(pre, "x", { version: "weird", extra_pip_requirements: '["${X}"]' }, {});
  assert.deepEqual(r.requirements, ["${X}"]);
});

Deno.test("policy: ${VAR} and ${VAR:-default} come from extra_env_vars only", () => {
  assert.equal(expandVars("pkg==${V}", { V: "1.0" }), "pkg==1.0");
  assert.equal(expandVars("pkg==${V:-2.0}", {}), "pkg==2.0");
  assert.match(refusal(() => expandVars("pkg==${HOME}", {}), "ARGUMENT_INVALID"), /\$\{HOME\}/);
  const r = checkRequest(config(), "x", { extra_pip_requirements: '["fake-${WHICH}"]' }, {
    WHICH: "extra-req",
  });
  assert.deepEqual(r.requirements, ["fake-extra-req"]);
});

Deno.test("policy: the environment key depends on plugins (as a set), version, requirements, python", () => {
  const base = { plugins: ["fake", "other"], version: "1.0.0", requirements: ["a"] };
  const k = environmentKey(base, "python3");
  assert.match(k.name, /^fake-1\.0\.0-[0-9a-f]{16}$/);
  assert.equal(environmentKey({ ...base, plugins: ["fake", "Other"] }, "python3").hash, k.hash);
  assert.notEqual(environmentKey({ ...base, version: "0.9.0" }, "python3").hash, k.hash);
  assert.notEqual(environmentKey({ ...base, requirements: [] }, "python3").hash, k.hash);
  assert.notEqual(environmentKey(base, "python3.12").hash, k.hash);
});
