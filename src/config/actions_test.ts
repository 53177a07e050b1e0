import assert from "node:assert/strict";
import { compileConfig, ConfigError, type ConfigIssue } from "./config.ts";
import { actionsUnknownKey } from "./actions.ts";

/** The issues of an Actions file that must be rejected. */
function issuesOf(raw: unknown, env: Record<string, string> = {}): ConfigIssue[] {
  try {
    compileConfig(raw, { env, home: "/h" });
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${err}`);
    return err.issues;
  }
  assert.fail("expected the configuration to be rejected");
}

const actions = (config: Record<string, unknown> = {}, datahub: Record<string, unknown> = {}) => ({
  name: "ingestion_executor",
  action: { type: "executor", config: { executor_id: "pool-a", ...config } },
  datahub: { server: "http://gms:8080", ...datahub },
});

Deno.test("Actions form: keys with a native counterpart name it; unknown stays in the message", () => {
  const issues = issuesOf(
    actions({ max_workers: 8, graceful_shutdown_timeout: 60 }, {
      disable_ssl_verification: true,
      ca_certificate_path: "/ca.pem",
      client_certificate_path: "/client.pem",
      timeout_sec: 10,
    }),
  );
  const byPath = new Map(issues.map((i) => [i.path, i.message]));
  const expected: Record<string, RegExp> = {
    "action.config.max_workers": /counterpart is agent\.max_concurrent of the native form/,
    "action.config.graceful_shutdown_timeout": /counterpart is agent\.shutdown_timeout/,
    "datahub.disable_ssl_verification": /counterpart is datahub\.tls\.insecure_skip_verify/,
    "datahub.ca_certificate_path": /counterpart is datahub\.tls\.ca_file/,
    "datahub.client_certificate_path": /datahub\.tls\.cert_file and datahub\.tls\.key_file/,
    "datahub.timeout_sec": /counterpart is datahub\.timeout\b/,
  };
  assert.deepEqual([...byPath.keys()].sort(), Object.keys(expected).sort());
  for (const [key, pattern] of Object.entries(expected)) {
    assert.match(byPath.get(key)!, /^unknown key/, key);
    assert.match(byPath.get(key)!, pattern, key);
  }
  // The executor's own config has no concurrency or shutdown options (SPEC §4.1): said so.
  assert.match(byPath.get("action.config.max_workers")!, /DataHub executor has no such option/);
});

Deno.test("Actions form: a key without counterpart is an unknown key saying what is read", () => {
  const [issue, ...rest] = issuesOf(actions({ flavour: "x" }));
  assert.deepEqual(rest, []);
  assert.equal(issue!.path, "action.config.flavour");
  assert.match(
    issue!.message,
    /^unknown key \(an Actions file is read for action\.config\.executor_id/,
  );
  assert.doesNotMatch(issue!.message, /counterpart/);
});

Deno.test("Actions form: a native block mixed in is named as such", () => {
  const [issue] = issuesOf({ ...actions(), agent: { max_concurrent: 2 } });
  assert.equal(issue!.path, "agent");
  assert.match(issue!.message, /a key of the native form: an Actions file cannot hold it/);
});

Deno.test("Actions form: what is honoured is not an unknown key", () => {
  const { config, form } = compileConfig(
    actions({ task_configs: [] }, { token: "t", extra_headers: { "X-Trace": "1" } }),
    { env: {}, home: "/h" },
  );
  assert.equal(form, "actions");
  assert.equal(config.executorId, "pool-a");
  assert.equal(config.datahub.token, "t");
});

Deno.test("Actions form: an unset ${VAR} in datahub.server is one problem, not also a URL error", () => {
  const issues = issuesOf(actions({}, { server: "${GMS_URL}" }));
  assert.deepEqual(issues, [{
    path: "datahub.server",
    message: "environment variable GMS_URL is not set",
  }]);
  const partial = issuesOf(
    actions({}, { server: "${DATAHUB_GMS_PROTOCOL:-http}://${DATAHUB_GMS_HOST}:8080" }),
  );
  assert.deepEqual(partial.map((i) => i.message), [
    "environment variable DATAHUB_GMS_HOST is not set",
  ]);
});

Deno.test("actionsUnknownKey: the native form's own keys are not counterparts of themselves", () => {
  assert.match(actionsUnknownKey("executor_id"), /a key of the native form/);
  assert.match(actionsUnknownKey("datahub.retry_max_times"), /^unknown key \(/);
});
