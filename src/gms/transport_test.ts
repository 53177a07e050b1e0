import assert from "node:assert/strict";
import http from "node:http";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { ConnectProxy } from "../../test/connect_proxy.ts";
import { GmsError } from "../errors.ts";
import { GmsHttp } from "./http.ts";
import { proxyFor, tlsProblemOf, Transport } from "./transport.ts";
import { ProxyRefusal } from "./tunnel.ts";

const SERVER = "https://gms.example.com";

function transport(o: Partial<ConstructorParameters<typeof Transport>[0]> = {}): Transport {
  return new Transport({ server: SERVER, timeoutMs: 1_000, env: {}, ...o });
}

/** An error as Node gives it, wrapped once (as a caller's error may be). */
function nodeError(code: string, message: string, name = "Error"): Error {
  const err = Object.assign(new Error(message), { code });
  err.name = name;
  return new Error("request failed", { cause: err });
}

Deno.test("Transport.failure: an untrusted certificate names the problem and datahub.tls.ca_file", async () => {
  const t = transport();
  try {
    const e = t.failure(
      "discover",
      nodeError("SELF_SIGNED_CERT_IN_CHAIN", "self-signed certificate in certificate chain"),
    );
    assert.equal(e.code, "GMS_UNREACHABLE", "retried with backoff like any unreachable GMS");
    assert.equal(tlsProblemOf(e), "server-certificate");
    assert.match(
      e.message,
      /^discover: cannot reach GMS: TLS: the certificate of gms\.example\.com is not accepted: self-signed certificate in certificate chain \(SELF_SIGNED_CERT_IN_CHAIN\); if a private CA signed it, set datahub\.tls\.ca_file/,
    );
    const name = t.failure("x", nodeError("ERR_TLS_CERT_ALTNAME_INVALID", "Hostname/IP mismatch"));
    assert.match(name.message, /use in datahub\.server a host name the certificate is issued for/);
    const expired = t.failure("x", nodeError("CERT_HAS_EXPIRED", "certificate has expired"));
    assert.match(expired.message, /must be renewed/);
  } finally {
    await t.close();
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), "transport-"));
  const caFile = path.join(dir, "ca.pem");
  await writeFile(caFile, "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n");
  const withCa = transport({ tls: { caFile } });
  try {
    const e = withCa.failure("x", nodeError("UNABLE_TO_VERIFY_LEAF_SIGNATURE", "unable to verify"));
    assert.match(e.message, new RegExp(`datahub\\.tls\\.ca_file \\(${caFile}\\) does not hold`));
  } finally {
    await withCa.close();
    await rm(dir, { recursive: true, force: true });
  }
});

Deno.test("Transport.failure: client certificate alerts name datahub.tls.cert_file", async () => {
  const t = transport();
  try {
    const e = t.failure(
      "x",
      nodeError(
        "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "C0:error:0A00045C:SSL routines:ssl3_read_bytes:tlsv13 alert certificate required:rec_layer_s3.c:918:SSL alert number 116",
      ),
    );
    assert.equal(tlsProblemOf(e), "client-certificate");
    assert.match(
      e.message,
      /gms\.example\.com requires a client certificate \(tlsv13 alert certificate required\); set datahub\.tls\.cert_file and datahub\.tls\.key_file$/,
    );
    // A plain reset is not blamed on TLS when no alert was seen.
    const reset = t.failure("x", nodeError("ECONNRESET", "socket hang up"));
    assert.equal(tlsProblemOf(reset), undefined);
    assert.match(reset.message, /cannot reach GMS: ECONNRESET socket hang up$/);
  } finally {
    await t.close();
  }
});

Deno.test("Transport.failure: a proxy refusing the tunnel, and a timeout through it", async () => {
  const t = transport({ proxy: "http://user:pw@proxy.corp:3128" });
  try {
    assert.deepEqual(t.route, { proxy: "http://***@proxy.corp:3128", variable: "datahub.proxy" });
    assert.deepEqual(t.secrets, [["proxy password", "pw"]]);
    const refused = t.failure(
      "discover",
      new Error("request failed", { cause: new ProxyRefusal(407) }),
    );
    assert.equal(refused.code, "GMS_UNREACHABLE", "not a timeout");
    assert.match(
      refused.message,
      /the proxy http:\/\/\*\*\*@proxy\.corp:3128 refused the tunnel \(CONNECT gms\.example\.com:443\) with HTTP 407; it wants credentials/,
    );
    assert.ok(!refused.message.includes("pw@"));
    const slow = t.failure("x", new DOMException("timed out", "TimeoutError"));
    assert.equal(slow.code, "GMS_TIMEOUT");
    assert.match(slow.message, /did not answer within 1000ms through the proxy http:\/\/\*\*\*@/);
  } finally {
    await t.close();
  }
});

Deno.test("proxyFor: datahub.proxy overrides HTTPS_PROXY; NO_PROXY still applies", () => {
  const env = { HTTPS_PROXY: "http://env:1", NO_PROXY: "internal.corp" };
  assert.deepEqual(proxyFor(SERVER, env, "http://conf:2"), {
    proxy: "http://conf:2",
    variable: "datahub.proxy",
  });
  assert.deepEqual(proxyFor("https://gms.internal.corp", env, "http://conf:2"), {
    noProxy: "NO_PROXY",
  });
  assert.deepEqual(proxyFor(SERVER, env, ""), { proxy: "http://env:1", variable: "HTTPS_PROXY" });
});

// ------------------------------------------------------------------ through a CONNECT proxy

/** A plain HTTP "GMS" answering 200 {} to everything, and a GmsHttp to it through `proxy`. */
async function gmsBehind(
  proxy: ConnectProxy,
  timeoutMs: number,
  fn: (client: GmsHttp) => Promise<void>,
) {
  const server = http.createServer((_req, res) => res.end("{}"));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  const client = new GmsHttp({
    server: `http://gms.test:${port}`,
    token: "",
    systemClientId: "",
    systemClientSecret: "",
    timeoutMs,
    proxy: proxy.url,
  });
  try {
    await fn(client);
  } finally {
    await client.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
}

async function rejection(p: Promise<unknown>): Promise<GmsError> {
  const err = await p.then(() => assert.fail("expected a rejection"), (e: unknown) => e);
  assert.ok(err instanceof GmsError, `expected a GmsError, got ${err}`);
  return err;
}

Deno.test("GmsHttp through datahub.proxy: the tunnel works; the proxy saw the CONNECT", async () => {
  await using proxy = await ConnectProxy.start({ hosts: { "gms.test": "127.0.0.1" } });
  await gmsBehind(proxy, 5_000, async (client) => {
    assert.equal((await client.json("health", "GET", "/health")).status, 200);
    const res = await client.json("graphql", "POST", "/api/graphql", { body: {} });
    assert.equal(res.status, 200);
    assert.ok(proxy.log.length >= 1 && proxy.log[0]!.startsWith("gms.test:"));
  });
});

Deno.test("GmsHttp through a proxy that refuses or never answers CONNECT: an error, no hang", async () => {
  await using refusing = await ConnectProxy.start({ refuse: 403 });
  await gmsBehind(refusing, 5_000, async (client) => {
    const e = await rejection(client.json("health", "GET", "/health"));
    assert.equal(e.code, "GMS_UNREACHABLE");
    assert.match(e.message, /refused the tunnel \(CONNECT gms\.test:\d+\) with HTTP 403/);
  });
  await using silent = await ConnectProxy.start({ silent: true });
  await gmsBehind(silent, 800, async (client) => {
    const started = performance.now();
    const e = await rejection(client.json("health", "GET", "/health"));
    const took = performance.now() - started;
    assert.equal(e.code, "GMS_TIMEOUT");
    assert.ok(took < 800 + 400, `gave up after ${Math.round(took)} ms`);
  });
});
