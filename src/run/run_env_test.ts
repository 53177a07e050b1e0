import assert from "node:assert/strict";
import { withoutUserinfo } from "../gms/transport.ts";
import { credentialVariables, envSecretRefusal, passes, runEnvironment } from "./run_env.ts";

const creds = { token: "tok-123456", systemClientId: "", systemClientSecret: "" };

Deno.test("credentialVariables: the usual names and any variable holding a credential", () => {
  const env = { MY_TOKEN: "tok-123456", OTHER: "x", DATAHUB_GMS_TOKEN: undefined };
  const names = credentialVariables(env, creds);
  assert.ok(names.has("MY_TOKEN") && names.has("DATAHUB_SYSTEM_CLIENT_SECRET"));
  assert.ok(!names.has("OTHER"));
  // An empty credential matches nothing (every empty variable would be withheld otherwise).
  assert.ok(!credentialVariables({ EMPTY: "" }, { ...creds, token: "" }).has("EMPTY"));
});

Deno.test("passes: names and prefixes ending in *", () => {
  assert.equal(passes("AWS_REGION", ["AWS_*"]), true);
  assert.equal(passes("JAVA_HOME", ["JAVA_HOME"]), true);
  assert.equal(passes("JAVA_HOME_X", ["JAVA_HOME"]), false);
  assert.equal(passes("X", []), false);
});

Deno.test("runEnvironment: allowlist, pass_env, extra, sink-less credentials, marker; withheld wins", () => {
  const agentEnv = {
    PATH: "/usr/bin",
    HOME: "/home/a",
    LC_ALL: "C",
    https_proxy: "http://proxy:3128",
    SSL_CERT_FILE: "/etc/ca.pem",
    DATAHUB_GMS_TOKEN: "tok-123456",
    AWS_SECRET_TOKEN: "tok-123456",
    AWS_REGION: "eu",
    RANDOM: "no",
  };
  const withheld = credentialVariables(agentEnv, creds);
  const env = runEnvironment(agentEnv, {
    passEnv: ["AWS_*"],
    extra: { EXTRA: "1", PATH: "/opt/bin" },
    withheld,
    marker: { name: "INGEST_AGENT_RUN", value: "t" },
  });
  assert.deepEqual(env, {
    PATH: "/opt/bin",
    HOME: "/home/a",
    LC_ALL: "C",
    https_proxy: "http://proxy:3128",
    SSL_CERT_FILE: "/etc/ca.pem",
    AWS_REGION: "eu",
    EXTRA: "1",
    INGEST_AGENT_RUN: "t",
  });
  const sinkless = runEnvironment(agentEnv, {
    passEnv: [],
    extra: {},
    gms: { DATAHUB_GMS_URL: "http://gms", DATAHUB_GMS_TOKEN: "tok-123456" },
    withheld,
    marker: { name: "INGEST_AGENT_RUN", value: "t" },
  });
  assert.equal(sinkless.DATAHUB_GMS_TOKEN, "tok-123456");
  assert.equal(sinkless.AWS_SECRET_TOKEN, undefined);
});

Deno.test("envSecretRefusal: credentials never; a prefix narrows", () => {
  const withheld = new Set(["DATAHUB_GMS_TOKEN"]);
  assert.match(envSecretRefusal("DATAHUB_GMS_TOKEN", withheld, "")!, /agent's own credentials/);
  assert.equal(envSecretRefusal("DB_PASSWORD", withheld, ""), undefined);
  assert.match(envSecretRefusal("DB_PASSWORD", withheld, "RECIPE_")!, /env_secrets_prefix/);
  assert.equal(envSecretRefusal("RECIPE_DB", withheld, "RECIPE_"), undefined);
});

Deno.test("withoutUserinfo: user and password never reach the log", () => {
  assert.equal(withoutUserinfo("https://gms:8080"), "https://gms:8080");
  assert.equal(withoutUserinfo("https://u:p%40ss@gms:8080/x"), "https://***@gms:8080/x");
  assert.ok(!withoutUserinfo("not a url //u:pw@h").includes("pw"));
});

Deno.test("runEnvironment: datahub.tls.ca_file and datahub.proxy reach the CLI unless the operator set them", () => {
  const base = {
    passEnv: [],
    extra: {},
    withheld: new Set<string>(),
    marker: { name: "INGEST_AGENT_RUN", value: "t" },
    trust: { caFile: "/etc/agent/ca.pem", proxy: "http://proxy.corp:3128" },
  };
  const env = runEnvironment({ PATH: "/usr/bin", NO_PROXY: "internal" }, base);
  assert.equal(env.REQUESTS_CA_BUNDLE, "/etc/agent/ca.pem");
  assert.equal(env.SSL_CERT_FILE, "/etc/agent/ca.pem");
  assert.equal(env.HTTPS_PROXY, "http://proxy.corp:3128");
  assert.equal(env.HTTP_PROXY, "http://proxy.corp:3128");
  assert.equal(env.NO_PROXY, "internal", "NO_PROXY passes through");
  const own = runEnvironment({
    PATH: "/usr/bin",
    REQUESTS_CA_BUNDLE: "/etc/own.pem",
    http_proxy: "http://own:1",
  }, { ...base, extra: { SSL_CERT_FILE: "/from/request.pem" } });
  assert.equal(own.REQUESTS_CA_BUNDLE, "/etc/own.pem", "the operator's choice is kept");
  assert.equal(own.SSL_CERT_FILE, "/from/request.pem", "extra_env_vars win");
  assert.equal(own.HTTP_PROXY, undefined, "not set over http_proxy");
  assert.equal(own.http_proxy, "http://own:1");
  assert.equal(own.HTTPS_PROXY, "http://proxy.corp:3128");
  const none = runEnvironment({ PATH: "/usr/bin" }, { ...base, trust: { caFile: "", proxy: "" } });
  assert.deepEqual(Object.keys(none).sort(), ["INGEST_AGENT_RUN", "PATH"]);
});
