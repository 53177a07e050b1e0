import assert from "node:assert/strict";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { compileConfig, ConfigError, type ConfigIssue } from "./config.ts";
import { readTokenFile } from "./files.ts";

const CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

/** Runs fn with a temp dir holding token, ca.pem, client.pem and client.key (0600). */
async function withFiles(fn: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "config-files-"));
  try {
    await writeFile(path.join(dir, "token"), "  tok-from-file-123\n", { mode: 0o600 });
    await writeFile(path.join(dir, "ca.pem"), CERT);
    await writeFile(path.join(dir, "client.pem"), CERT);
    await writeFile(path.join(dir, "client.key"), KEY, { mode: 0o600 });
    await chmod(path.join(dir, "client.key"), 0o600);
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function compile(datahub: Record<string, unknown>, home = "/home/tester") {
  return compileConfig({ datahub }, { env: {}, home });
}

function issues(datahub: Record<string, unknown>): ConfigIssue[] {
  try {
    compile(datahub);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${err}`);
    return err.issues;
  }
  assert.fail("expected the configuration to be rejected");
}

Deno.test("datahub.token_file: read at load, trimmed; the token never in an error", async () => {
  await withFiles((dir) => {
    const { config, warnings } = compile({ token_file: path.join(dir, "token") });
    assert.equal(config.datahub.token, "tok-from-file-123");
    assert.equal(config.datahub.tokenFile, path.join(dir, "token"));
    assert.deepEqual(warnings, []);
    // `~` is the home directory, as for the other paths.
    const home = compile({ token_file: "~/token" }, dir).config;
    assert.equal(home.datahub.tokenFile, path.join(dir, "token"));
  });
});

Deno.test("datahub.token_file: with datahub.token, missing, a directory or empty is an error naming the key", async () => {
  await withFiles(async (dir) => {
    const both = issues({ token: "abc-token", token_file: path.join(dir, "token") });
    assert.deepEqual(both.map((i) => i.path), ["datahub.token_file"]);
    assert.match(both[0]!.message, /datahub\.token and datahub\.token_file are both set/);
    assert.ok(!JSON.stringify(both).includes("tok-from-file-123"));

    const missing = issues({ token_file: path.join(dir, "nope") });
    assert.deepEqual(missing, [{
      path: "datahub.token_file",
      message: `cannot read ${path.join(dir, "nope")}: no such file`,
    }]);
    assert.match(issues({ token_file: dir })[0]!.message, /is a directory/);
    await writeFile(path.join(dir, "empty"), "\n\n");
    assert.match(issues({ token_file: path.join(dir, "empty") })[0]!.message, /is empty/);
    await writeFile(path.join(dir, "two"), "a-token b-token\n");
    assert.throws(() => readTokenFile(path.join(dir, "two")), /more than one word/);
  });
});

Deno.test("datahub.tls: files are checked (readable, PEM) and made absolute", async () => {
  await withFiles(async (dir) => {
    const tls = {
      ca_file: path.join(dir, "ca.pem"),
      cert_file: path.join(dir, "client.pem"),
      key_file: path.join(dir, "client.key"),
    };
    const { config, warnings } = compile({ server: "https://gms:443", tls });
    assert.deepEqual(config.datahub.tls, {
      caFile: tls.ca_file,
      certFile: tls.cert_file,
      keyFile: tls.key_file,
      insecureSkipVerify: false,
    });
    assert.deepEqual(warnings, []);
    assert.deepEqual(issues({ tls: { ca_file: path.join(dir, "missing.pem") } }), [{
      path: "datahub.tls.ca_file",
      message: `cannot read ${path.join(dir, "missing.pem")}: no such file`,
    }]);
    await writeFile(path.join(dir, "junk.pem"), "not a certificate");
    assert.deepEqual(issues({ tls: { ca_file: path.join(dir, "junk.pem") } }), [{
      path: "datahub.tls.ca_file",
      message: `${path.join(dir, "junk.pem")} holds no PEM certificate`,
    }]);
    assert.deepEqual(
      issues({ tls: { cert_file: tls.cert_file, key_file: tls.cert_file } }).map((i) => i.path),
      ["datahub.tls.key_file"],
      "a certificate is not a key",
    );
  });
});

Deno.test("datahub.tls: a key without a certificate, or a certificate without a key, is an error", async () => {
  await withFiles((dir) => {
    const key = issues({ tls: { key_file: path.join(dir, "client.key") } });
    assert.deepEqual(key.map((i) => i.path), ["datahub.tls.cert_file"]);
    assert.match(key[0]!.message, /key_file is set but cert_file is not/);
    const cert = issues({ tls: { cert_file: path.join(dir, "client.pem") } });
    assert.deepEqual(cert.map((i) => i.path), ["datahub.tls.key_file"]);
    assert.match(cert[0]!.message, /cert_file is set but key_file is not/);
  });
});

Deno.test("datahub.tls: every file problem is reported at once", async () => {
  await withFiles((dir) => {
    const all = issues({
      token: "x-token",
      token_file: path.join(dir, "token"),
      tls: { ca_file: path.join(dir, "none.pem"), key_file: path.join(dir, "client.key") },
    });
    assert.deepEqual(all.map((i) => i.path).sort(), [
      "datahub.tls.ca_file",
      "datahub.tls.cert_file",
      "datahub.token_file",
    ]);
  });
});

Deno.test("datahub.tls: a key readable by others and insecure_skip_verify are warnings", async () => {
  await withFiles(async (dir) => {
    const key = path.join(dir, "client.key");
    await chmod(key, 0o644);
    const { warnings } = compile({
      tls: { cert_file: path.join(dir, "client.pem"), key_file: key, insecure_skip_verify: true },
    });
    assert.equal(warnings.length, 2);
    assert.match(warnings[0]!, /datahub\.tls\.key_file .* has mode 0644: .*chmod 600/);
    assert.match(warnings[1]!, /datahub\.tls\.insecure_skip_verify is true/);
    // From an environment variable, the flag is a string.
    const fromEnv = compileConfig(
      { datahub: { tls: { insecure_skip_verify: "${INSECURE:-false}" } } },
      { env: { INSECURE: "true" } },
    );
    assert.equal(fromEnv.config.datahub.tls.insecureSkipVerify, true);
    assert.deepEqual(issues({ tls: { insecure_skip_verify: "yes" } }).map((i) => i.path), [
      "datahub.tls.insecure_skip_verify",
    ]);
  });
});

Deno.test("datahub.proxy: an http(s) URL, or empty", () => {
  assert.equal(
    compile({ proxy: "http://proxy.corp:3128" }).config.datahub.proxy,
    "http://proxy.corp:3128",
  );
  assert.equal(compile({}).config.datahub.proxy, "");
  const bad = issues({ proxy: "proxy.corp:3128" });
  assert.deepEqual(bad.map((i) => i.path), ["datahub.proxy"]);
  assert.match(bad[0]!.message, /http:\/\/ or https:\/\/ proxy URL/);
});
