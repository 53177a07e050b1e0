/**
 * Behind the firewall (issue 11), through the executable: an HTTPS simulator with a CA and
 * certificates made at test time (openssl), mutual TLS, insecure_skip_verify, a CONNECT proxy on
 * loopback that the agent must go through (HTTPS_PROXY, datahub.proxy, NO_PROXY, a refused and a
 * silent CONNECT), and a token file rotated while a run is in flight. No traffic leaves 127.0.0.1:
 * `gms.test` is resolved by the test proxy only.
 */
import assert from "node:assert/strict";
import { rename, writeFile } from "node:fs/promises";
import path from "node:path";
import process from "node:process";
import { ConnectProxy } from "../connect_proxy.ts";
import {
  type AgentProcess,
  type LogLine,
  recipe,
  runAgentOnce,
  setup,
  spawnAgent,
  started,
  tempDir,
  terminal,
} from "../harness.ts";
import { makePki, type Pki } from "../pki.ts";
import type { SimulatorOptions } from "../sim/gms_simulator.ts";

type S = Awaited<ReturnType<typeof setup>>;

/** One CA and its certificates for the whole file (openssl takes a moment). */
const pkiDir = await tempDir("ingest-agent-pki-");
const pki: Pki = await makePki(pkiDir.path);
addEventListener("unload", () => Deno.removeSync(pkiDir.path, { recursive: true }));

const httpsSim = (o: SimulatorOptions = {}): SimulatorOptions => ({ tls: pki.server, ...o });
const mtlsSim: SimulatorOptions = {
  tls: { ...pki.server, ca: pki.ca, requestCert: true },
};

/** The agent's environment without the CA and proxy variables this machine may set. */
function cleanEnv(extra: Record<string, string> = {}): Record<string, string> {
  return { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/", ...extra };
}

function start(s: S, overrides: Record<string, unknown>, env: Record<string, string> = {}) {
  return s.writeConfig(overrides).then((file) =>
    spawnAgent(file, { env: cleanEnv(env), clearEnv: true })
  );
}

/** Waits for a poll failure whose error matches `re`; returns that line. */
function pollFailure(s: S, agent: AgentProcess, re: RegExp, ms = 15_000): Promise<LogLine> {
  return s.sim.waitFor(
    () =>
      agent.logs().find((l) =>
        l.level === "warn" && /failed; retrying/.test(l.msg) && re.test(String(l.error))
      ),
    ms,
    `a poll failure matching ${re}`,
  );
}

/** The env a started CLI printed (fixture print_env) as the journal recorded it. */
async function cliEnv(s: S, urn: string): Promise<Record<string, string | null>> {
  return (await started(s, urn)).env ?? {};
}

const CA_VARS = ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "HTTPS_PROXY", "HTTP_PROXY", "https_proxy"];

Deno.test("tls: ca_file is trusted for GMS (and given to the CLI unless the operator set it)", async () => {
  await using s = await setup({ sim: httpsSim() });
  assert.match(s.sim.url, /^https:\/\/127\.0\.0\.1:/);
  const urn = s.sim.createRequest({ args: { recipe: recipe({ print_env: CA_VARS }) } });
  await using _a = await start(s, { datahub: { tls: { ca_file: pki.caFile } } }, {
    SSL_CERT_FILE: "/etc/operator/bundle.pem",
  });
  const r = await terminal(s.sim, urn);
  assert.equal(r.status, "SUCCESS");
  const env = await cliEnv(s, urn);
  assert.equal(env.REQUESTS_CA_BUNDLE, pki.caFile, "REQUESTS_CA_BUNDLE = ca_file");
  assert.equal(env.SSL_CERT_FILE, "/etc/operator/bundle.pem", "the operator's value is kept");
});

Deno.test("tls: without ca_file the error names the certificate problem and datahub.tls.ca_file", async () => {
  await using s = await setup({ sim: httpsSim() });
  const urn = s.sim.createRequest({ args: { recipe: recipe() } });
  await using a = await start(s, {});
  const line = await pollFailure(s, a, /certificate/);
  assert.match(String(line.error), /GMS_UNREACHABLE/);
  // The simulator sends its certificate without the chain (OpenSSL's words for that).
  assert.match(String(line.error), /unable to verify the first certificate/);
  assert.doesNotMatch(String(line.error), /--use-system-ca/, "no advice for node users");
  assert.match(String(line.error), /datahub\.tls\.ca_file/);
  assert.equal(s.sim.result(urn), undefined, "nothing was claimed");
  assert.equal(s.sim.requests().length, 0, "no request got through the handshake");
});

Deno.test("tls: a CA that did not sign GMS's certificate is named in the error", async () => {
  await using s = await setup({ sim: httpsSim() });
  await using a = await start(s, { datahub: { tls: { ca_file: pki.otherCaFile } } });
  const line = await pollFailure(s, a, /certificate/);
  assert.ok(String(line.error).includes(`datahub.tls.ca_file (${pki.otherCaFile}) does not hold`));
});

Deno.test("tls: a server requiring a client certificate works with cert_file/key_file", async () => {
  await using s = await setup({ sim: mtlsSim });
  const urn = s.sim.createRequest({ args: { recipe: recipe() } });
  await using _a = await start(s, {
    datahub: {
      tls: { ca_file: pki.caFile, cert_file: pki.clientCert, key_file: pki.clientKey },
    },
  });
  assert.equal((await terminal(s.sim, urn)).status, "SUCCESS");
});

Deno.test("tls: without a client certificate the server refuses, and the error says so", async () => {
  await using s = await setup({ sim: mtlsSim });
  const urn = s.sim.createRequest({ args: { recipe: recipe() } });
  await using a = await start(s, { datahub: { tls: { ca_file: pki.caFile } } });
  const line = await pollFailure(s, a, /client certificate/);
  assert.match(
    String(line.error),
    // OpenSSL's words (Node, the executable), or rustls' (Deno, from a checkout).
    /requires a client certificate \((tlsv13 alert certificate required|.*CertificateRequired)\)/,
  );
  assert.match(String(line.error), /datahub\.tls\.cert_file and datahub\.tls\.key_file/);
  assert.equal(s.sim.result(urn), undefined);
});

Deno.test("tls: insecure_skip_verify works and warns at start and in /status", async () => {
  await using s = await setup({ sim: httpsSim() });
  const urn = s.sim.createRequest({ args: { recipe: recipe() } });
  await using a = await start(s, {
    datahub: { tls: { insecure_skip_verify: true } },
    observability: { listen: "127.0.0.1:0" },
  });
  assert.equal((await terminal(s.sim, urn)).status, "SUCCESS");
  const warning = a.logs().find((l) => l.level === "warn" && /insecure_skip_verify/.test(l.msg));
  assert.ok(warning, "a warning at start");
  const listening = await s.sim.waitFor(
    () => a.logs().find((l) => l.msg === "endpoints listening"),
    10_000,
    "endpoints",
  );
  const status = await (await fetch(`http://${listening.address}/status`)).json();
  assert.ok(
    (status.warnings as string[]).some((w) => /insecure_skip_verify is true/.test(w)),
    `/status warnings: ${JSON.stringify(status.warnings)}`,
  );
});

Deno.test("tls: doctor names datahub.tls.ca_file for a certificate it does not accept, and the proxy in effect", async () => {
  await using s = await setup({ sim: httpsSim() });
  const config = await s.writeConfig({ datahub: { proxy: "http://127.0.0.1:9", timeout: "2s" } });
  const r = await runAgentOnce(["doctor", "--config", config], {
    env: cleanEnv({ NO_PROXY: "127.0.0.1" }),
    clearEnv: true,
  });
  assert.equal(r.code, 1, r.stdout + r.stderr);
  const gms = r.stdout.split("\n").findIndex((l) => l.startsWith("✗ gms"));
  assert.ok(gms >= 0, r.stdout);
  const [line, fix] = r.stdout.split("\n").slice(gms, gms + 2);
  assert.match(line!, /not accepted: unable to verify the first certificate/);
  assert.match(fix!, /fix: set datahub\.tls\.ca_file to the PEM of the CA/);
  assert.match(r.stdout, /proxy +none for https:\/\/127\.0\.0\.1:\d+ \(NO_PROXY excludes it\)/);
  const ok = await s.writeConfig({
    datahub: { proxy: "http://user:pw@127.0.0.1:9", tls: { ca_file: pki.caFile } },
  });
  const good = await runAgentOnce(["doctor", "--config", ok], { env: cleanEnv(), clearEnv: true });
  assert.match(good.stdout, /proxy +http:\/\/\*\*\*@127\.0\.0\.1:9 \(from datahub\.proxy\)/);
  assert.ok(!good.stdout.includes("pw@"));
});

// ------------------------------------------------------------------------------------ proxies

/** datahub.server through the proxy: a name only the proxy resolves. */
function proxiedServer(s: S): string {
  return `https://gms.test:${new URL(s.sim.url).port}`;
}

Deno.test("proxy: HTTPS_PROXY carries the agent to GMS (the proxy's log proves it); the CLI gets it", async () => {
  await using s = await setup({ sim: httpsSim() });
  await using proxy = await ConnectProxy.start({ hosts: { "gms.test": "127.0.0.1" } });
  const urn = s.sim.createRequest({ args: { recipe: recipe({ print_env: CA_VARS }) } });
  await using _a = await start(s, {
    datahub: { server: proxiedServer(s), tls: { ca_file: pki.caFile } },
  }, { HTTPS_PROXY: proxy.url, NO_PROXY: "localhost" });
  assert.equal((await terminal(s.sim, urn)).status, "SUCCESS");
  const target = `gms.test:${new URL(s.sim.url).port}`;
  assert.ok(proxy.log.length > 0 && proxy.log.every((t) => t === target), proxy.log.join(", "));
  const env = await cliEnv(s, urn);
  assert.equal(env.HTTPS_PROXY, proxy.url, "the proxy variable passes through");
  assert.equal(env.SSL_CERT_FILE, pki.caFile);
});

Deno.test("proxy: datahub.proxy overrides https_proxy; the CLI gets it where the environment has none", async () => {
  await using s = await setup({ sim: httpsSim() });
  await using proxy = await ConnectProxy.start({ hosts: { "gms.test": "127.0.0.1" } });
  await using decoy = await ConnectProxy.start({ refuse: 403 });
  const urn = s.sim.createRequest({ args: { recipe: recipe({ print_env: CA_VARS }) } });
  await using _a = await start(s, {
    datahub: { server: proxiedServer(s), proxy: proxy.url, tls: { ca_file: pki.caFile } },
  }, { https_proxy: decoy.url });
  assert.equal((await terminal(s.sim, urn)).status, "SUCCESS");
  assert.ok(proxy.log.length > 0, "datahub.proxy was used");
  assert.deepEqual(decoy.log, [], "https_proxy was not");
  const env = await cliEnv(s, urn);
  assert.equal(env.HTTP_PROXY, proxy.url, "HTTP_PROXY = datahub.proxy");
  assert.equal(env.https_proxy, decoy.url, "the operator's own variable is kept");
  assert.equal(env.HTTPS_PROXY, null, "not set over the operator's https_proxy");
});

Deno.test("proxy: NO_PROXY bypasses datahub.proxy and HTTPS_PROXY (direct to 127.0.0.1; the proxy sees nothing)", async () => {
  await using s = await setup({ sim: httpsSim() });
  await using proxy = await ConnectProxy.start({ hosts: { "gms.test": "127.0.0.1" } });
  const first = s.sim.createRequest({ args: { recipe: recipe() } });
  const tls = { ca_file: pki.caFile };
  {
    await using _a = await start(s, { datahub: { proxy: proxy.url, tls } }, {
      NO_PROXY: "127.0.0.1",
    });
    assert.equal((await terminal(s.sim, first)).status, "SUCCESS");
  }
  const second = s.sim.createRequest({ args: { recipe: recipe() } });
  await using _b = await start(s, { datahub: { tls } }, {
    HTTPS_PROXY: proxy.url,
    no_proxy: "localhost,127.0.0.1",
  });
  assert.equal((await terminal(s.sim, second)).status, "SUCCESS");
  assert.deepEqual(proxy.log, [], "no CONNECT reached the proxy");
});

Deno.test("proxy: a refused CONNECT is a clear error at once, a silent proxy one within datahub.timeout", async () => {
  await using s = await setup({ sim: httpsSim() });
  await using refusing = await ConnectProxy.start({ refuse: 403 });
  await using silent = await ConnectProxy.start({ silent: true });
  const tls = { ca_file: pki.caFile };
  const at = (l: LogLine) => Date.parse(String(l.ts));
  {
    await using a = await start(s, {
      datahub: { server: proxiedServer(s), proxy: refusing.url, timeout: "3s", tls },
    });
    const line = await pollFailure(s, a, /refused the tunnel/, 10_000);
    assert.match(String(line.error), /CONNECT gms\.test:\d+\) with HTTP 403/);
    assert.match(String(line.error), /check datahub\.proxy/);
    assert.ok(refusing.log.length > 0);
  }
  await using b = await start(s, {
    datahub: { server: proxiedServer(s), proxy: silent.url, timeout: "2s", tls },
  });
  // A poll is two requests here (GET /config, then the discovery query), each given up after 2 s.
  const line = await pollFailure(s, b, /did not answer within 2000ms through the proxy/, 10_000);
  const began = at(b.logs().find((l) => l.msg === "ingest-agent starting")!);
  const first = b.logs().find((l) => /\/config unavailable/.test(l.msg))!;
  assert.match(String(first.error), /did not answer within 2000ms/);
  assert.ok(at(first) - began < 2_000 + 1_000, `GET /config gave up after ${at(first) - began} ms`);
  assert.ok(at(line) - began < 4_000 + 1_500, `the poll gave up after ${at(line) - began} ms`);
  assert.ok(silent.log.length > 0, "the CONNECT was sent");
});

// --------------------------------------------------------------------------------- token_file

Deno.test("token_file: rotated mid-run; the old token gets 401, the run and the next polls go on", async () => {
  const OLD = "token-before-rotation-0001";
  const NEW = "token-after-rotation-0002";
  await using s = await setup({ sim: { token: OLD } });
  const tokenFile = path.join(s.dir, "gms-token");
  await writeFile(tokenFile, `${OLD}\n`, { mode: 0o600 });
  const long = s.sim.createRequest({
    args: { recipe: recipe({ sleep_ms: 4_000, lines_per_second: 5, events: 7 }) },
  });
  await using a = await start(s, { datahub: { token: "", token_file: tokenFile } });
  await started(s, long);
  // The secret manager writes the new token beside the file and renames it over (atomic).
  await writeFile(`${tokenFile}.tmp`, `${NEW}\n`, { mode: 0o600 });
  s.sim.setToken(NEW); // from now on the old token is refused
  await rename(`${tokenFile}.tmp`, tokenFile);
  const rotatedAt = Date.now();
  const sinkless = s.sim.createRequest({
    args: { recipe: JSON.stringify({ source: { type: "fake", config: { fixture: {} } } }) },
  });
  const r = await terminal(s.sim, long);
  assert.equal(r.status, "SUCCESS");
  assert.match(r.report!, /Pipeline finished successfully; produced 7 events/);
  assert.equal((await terminal(s.sim, sinkless)).status, "SUCCESS");
  assert.ok(
    s.sim.requests().some((q) => q.status === 401 && q.at >= rotatedAt - 1_000),
    "the old token was refused",
  );
  const writes = s.sim.resultWrites(long).filter((w) => w.at > rotatedAt);
  assert.ok(writes.length > 0, "the run wrote after the rotation");
  const env = await cliEnv(s, sinkless);
  assert.equal(env.DATAHUB_GMS_TOKEN, NEW, "a CLI started after the rotation gets the new token");
  assert.ok(
    a.logs().some((l) => /datahub\.token_file changed/.test(l.msg)),
    "the rotation is logged",
  );
  for (const token of [OLD, NEW]) {
    assert.ok(!a.stdout.includes(token) && !a.stderr.includes(token), "the token is never logged");
    for (const w of s.sim.resultWrites()) assert.ok(!JSON.stringify(w.value).includes(token));
  }
});
