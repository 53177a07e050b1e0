/**
 * The connection to GMS below HTTP: one undici dispatcher for every request (the OpenAPI calls
 * and graphql-request's fetch), with
 *   - TLS: `datahub.tls.ca_file` added to the roots Node trusts by default (its bundled roots and
 *     NODE_EXTRA_CA_CERTS), a client certificate (`cert_file`/`key_file`), or no verification;
 *     the same options reach GMS through a proxy's CONNECT tunnel (`requestTls`), and the CA and
 *     verification setting an https:// proxy itself (`proxyTls`);
 *   - the proxy: `datahub.proxy`, else HTTPS_PROXY/HTTP_PROXY (lower case first), NO_PROXY honoured;
 *   - a bounded CONNECT: undici's proxy client waits 300 s for the proxy's answer and ignores the
 *     request's AbortSignal meanwhile, so its headers timeout is `datahub.timeout` here (GmsHttp
 *     also races every request against its deadline);
 *   - the mapping of network failures to a GmsError whose message names the problem and the
 *     option that fixes it (a certificate GMS's chain is not trusted by: `datahub.tls.ca_file`; a
 *     client certificate GMS wants: `datahub.tls.cert_file`; a proxy refusing the tunnel).
 * A TLS 1.3 server that refuses the client's certificate sends its alert after the handshake, and
 * undici reports only "other side closed": every socket is watched for such alerts, and a close
 * right after one is reported as that alert.
 */
import { readFileSync } from "node:fs";
import process from "node:process";
import tls from "node:tls";
import { buildConnector, EnvHttpProxyAgent, Pool } from "undici";
import { GmsError } from "../errors.ts";

export interface TransportOptions {
  server: string;
  timeoutMs: number;
  /** `datahub.proxy` ("" or undefined: the environment's). */
  proxy?: string;
  tls?: { caFile?: string; certFile?: string; keyFile?: string; insecureSkipVerify?: boolean };
  /** Where HTTPS_PROXY/NO_PROXY are read (default: process.env, as undici does). */
  env?: Record<string, string | undefined>;
}

/** What went wrong with TLS, for callers that give advice (doctor). */
export type TlsProblem = "server-certificate" | "client-certificate";

const tlsProblems = new WeakMap<GmsError, TlsProblem>();

/** The TLS problem behind a GmsError made by `Transport.failure`, if it was one. */
export function tlsProblemOf(err: unknown): TlsProblem | undefined {
  return err instanceof GmsError ? tlsProblems.get(err) : undefined;
}

type Connector = ReturnType<typeof buildConnector> & { watched?: true };

/** How long after a TLS alert a closed connection is blamed on it. */
const ALERT_WINDOW_MS = 5_000;

export class Transport {
  readonly dispatcher: EnvHttpProxyAgent;
  /** The proxy requests to the server go through (user info hidden), and who set it. */
  readonly route: { proxy?: string; variable?: string; noProxy?: string };
  /** Secrets of the transport (a proxy password) to mask, by name. */
  readonly secrets: Array<[string, string]> = [];
  readonly #o: TransportOptions;
  readonly #host: string;
  #alert: { error: Error & { code?: string }; at: number } | undefined;

  constructor(o: TransportOptions) {
    this.#o = o;
    this.#host = hostOf(o.server);
    const env = o.env ?? process.env;
    const route = proxyFor(o.server, env, o.proxy);
    this.route = route.proxy ? { ...route, proxy: withoutUserinfo(route.proxy) } : route;
    const password = passwordOf(o.proxy || route.proxy);
    if (password) this.secrets.push(["proxy password", password]);
    const t = o.tls ?? {};
    const ca = t.caFile ? [...defaultRoots(), readFileSync(t.caFile, "utf8")] : undefined;
    const trust = {
      ...(ca ? { ca } : {}),
      ...(t.insecureSkipVerify ? { rejectUnauthorized: false } : {}),
    };
    const identity = t.certFile && t.keyFile
      ? { cert: readFileSync(t.certFile, "utf8"), key: readFileSync(t.keyFile, "utf8") }
      : {};
    const connectTimeout = Math.min(o.timeoutMs, 10_000);
    const timeouts = { headersTimeout: o.timeoutMs, bodyTimeout: o.timeoutMs };
    this.dispatcher = new EnvHttpProxyAgent({
      keepAliveTimeout: 30_000,
      connections: 16,
      ...timeouts,
      connectTimeout,
      // Direct connections.
      connect: buildConnector({ ...trust, ...identity, timeout: connectTimeout }),
      // Through a proxy: TLS to GMS inside the tunnel, and to an https:// proxy itself.
      requestTls: { ...trust, ...identity, timeout: connectTimeout },
      proxyTls: { ...trust, timeout: connectTimeout },
      // The proxy's answer to CONNECT is awaited at most datahub.timeout.
      clientFactory: (url: URL, opts: object) => new Pool(url, { ...opts, ...timeouts }),
      factory: (origin: string | URL, opts: object) => {
        const connect = (opts as { connect?: unknown }).connect;
        return new Pool(origin, {
          ...opts,
          ...(typeof connect === "function" ? { connect: this.#watch(connect as Connector) } : {}),
        });
      },
      ...(o.proxy ? { httpProxy: o.proxy, httpsProxy: o.proxy } : {}),
    });
  }

  /** Records TLS alerts of the connector's sockets (see the module comment). */
  #watch(connect: Connector): Connector {
    if (connect.watched) return connect;
    const watched: Connector = (opts, callback) =>
      connect(opts, (...args) => {
        const socket = args[1];
        socket?.on("error", (error: Error & { code?: string }) => {
          if (CLIENT_ALERT.test(error.code ?? "")) this.#alert = { error, at: Date.now() };
        });
        callback(...args);
      });
    watched.watched = true;
    return watched;
  }

  /** A network failure (not an HTTP answer) as a GmsError naming the problem and its fix. */
  failure(operation: string, err: unknown): GmsError {
    const chain = causes(err);
    const coded = chain.find((e) => typeof e.code === "string" && e.code !== "");
    let code = coded?.code;
    // Node's advice about its own flags means nothing to users of the executable.
    let detail = ((coded ?? chain[0])?.message ?? String(err))
      .replace(
        /; if the root CA is installed locally, try running Node\.js with --use-system-ca/,
        "",
      );
    const via = this.route.proxy ? ` through the proxy ${this.route.proxy}` : "";
    const make = (
      code: "GMS_UNREACHABLE" | "GMS_TIMEOUT",
      message: string,
      tlsKind?: TlsProblem,
    ) => {
      const e = new GmsError(code, operation, message, { cause: err });
      if (tlsKind) tlsProblems.set(e, tlsKind);
      return e;
    };

    const refused = chain.map((e) => /^Proxy response \((\d+)\)/.exec(e.message)).find(Boolean);
    if (refused) {
      const status = Number(refused[1]);
      return make(
        "GMS_UNREACHABLE",
        `cannot reach GMS: the proxy ${this.route.proxy ?? ""} refused the tunnel (CONNECT ${
          connectTarget(this.#o.server)
        }) with HTTP ${status}${
          status === 407
            ? "; it wants credentials: put them in the proxy URL (http://user:password@host:port)"
            : ""
        }; check ${this.route.variable ?? "the proxy setting"}, the proxy's rules, and NO_PROXY`,
      );
    }
    const alert = this.#alert;
    if (
      code && CLOSED.has(code) && alert && Date.now() - alert.at < ALERT_WINDOW_MS
    ) {
      code = alert.error.code;
      detail = alert.error.message;
    }
    if (code && CLIENT_ALERT.test(code)) {
      const reason = alertReason(detail);
      const required = /CERTIFICATE_REQUIRED$/.test(code) || !this.#o.tls?.certFile;
      return make(
        "GMS_UNREACHABLE",
        required
          ? `cannot reach GMS: TLS: ${this.#host} requires a client certificate (${reason}); set datahub.tls.cert_file and datahub.tls.key_file`
          : `cannot reach GMS: TLS: ${this.#host} refused the client certificate of datahub.tls.cert_file (${reason}); use a certificate signed by a CA it trusts`,
        "client-certificate",
      );
    }
    if (code && SERVER_CERT.test(code)) {
      const caFile = this.#o.tls?.caFile;
      const fix = code === "ERR_TLS_CERT_ALTNAME_INVALID"
        ? "use in datahub.server a host name the certificate is issued for"
        : /EXPIRED|NOT_YET_VALID/.test(code)
        ? "the certificate must be renewed (or this host's clock is wrong)"
        : caFile
        ? `datahub.tls.ca_file (${caFile}) does not hold the CA that signed it: add that CA's certificate (PEM)`
        : "if a private CA signed it, set datahub.tls.ca_file to that CA's certificate (PEM)";
      const inspecting = via && !/ALTNAME|EXPIRED|NOT_YET/.test(code)
        ? " (a TLS-inspecting proxy presents a certificate of its own CA: then that CA)"
        : "";
      return make(
        "GMS_UNREACHABLE",
        `cannot reach GMS: TLS: the certificate of ${this.#host} is not accepted: ${detail} (${code}); ${fix}${inspecting}`,
        "server-certificate",
      );
    }
    const name = chain[0]?.name;
    if ((code && TIMEOUT_CODES.has(code)) || name === "TimeoutError" || name === "AbortError") {
      return make("GMS_TIMEOUT", `GMS did not answer within ${this.#o.timeoutMs}ms${via}`);
    }
    return make("GMS_UNREACHABLE", `cannot reach GMS${via}: ${code ? `${code} ` : ""}${detail}`);
  }

  close(): Promise<void> {
    return this.dispatcher.close();
  }
}

const TIMEOUT_CODES = new Set([
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
  "ETIMEDOUT",
]);

/** A connection closed under the request (what undici reports after a late TLS alert). */
const CLOSED = new Set(["UND_ERR_SOCKET", "ECONNRESET", "EPIPE", "UND_ERR_CLOSED"]);

/** Alerts a server sends about the client's certificate (Node: ERR_SSL_<OpenSSL reason>). */
const CLIENT_ALERT =
  /^ERR_SSL_.*ALERT_(CERTIFICATE_REQUIRED|BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_UNKNOWN|ACCESS_DENIED|CERTIFICATE_EXPIRED|CERTIFICATE_REVOKED|UNSUPPORTED_CERTIFICATE|HANDSHAKE_FAILURE)$/;

/** Verification failures of the server's certificate (OpenSSL's X509 codes, Node's own). */
const SERVER_CERT =
  /^(SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT(_LOCALLY)?|CERT_[A-Z_]+|INVALID_CA|PATH_LENGTH_EXCEEDED|INVALID_PURPOSE|HOSTNAME_MISMATCH|ERR_TLS_CERT_ALTNAME_INVALID|UNABLE_TO_DECRYPT_CERT_SIGNATURE|UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY)$/;

/** "…:ssl3_read_bytes:tlsv13 alert certificate required:…" → "tlsv13 alert certificate required". */
function alertReason(message: string): string {
  return /:([^:]*alert[^:]*):/.exec(message)?.[1] ?? message.split("\n")[0]!;
}

function causes(err: unknown): Array<Error & { code?: string }> {
  const out: Array<Error & { code?: string }> = [];
  for (let e = err; e instanceof Error && out.length < 8; e = e.cause) out.push(e);
  return out;
}

/** The roots Node trusts without a `ca` option (bundled, NODE_EXTRA_CA_CERTS, system if asked). */
function defaultRoots(): readonly string[] {
  const get = (tls as { getCACertificates?: (type: string) => string[] }).getCACertificates;
  return typeof get === "function" ? get("default") : tls.rootCertificates;
}

function hostOf(server: string): string {
  try {
    return new URL(server).host;
  } catch {
    return server;
  }
}

function connectTarget(server: string): string {
  try {
    const url = new URL(server);
    return `${url.hostname}:${url.port || (url.protocol === "https:" ? 443 : 80)}`;
  } catch {
    return server;
  }
}

/** The password in a URL (decoded), to be masked wherever it might surface. */
export function passwordOf(url: string | undefined): string | undefined {
  try {
    return url ? decodeURIComponent(new URL(url).password) || undefined : undefined;
  } catch {
    return undefined;
  }
}

/** A URL as it may be printed: user and password (if any) replaced by `***`. */
export function withoutUserinfo(address: string): string {
  try {
    const url = new URL(address);
    if (!url.username && !url.password) return address;
    url.username = "***";
    url.password = "";
    return url.toString().replace(/\/$/, "");
  } catch {
    return address.replace(/\/\/[^/@]*@/, "//***@");
  }
}

/**
 * The proxy undici's EnvHttpProxyAgent uses for `server`: `override` (datahub.proxy) or the
 * environment's (lower case wins, as there), unless NO_PROXY excludes the server.
 */
export function proxyFor(
  server: string,
  env: Record<string, string | undefined>,
  override?: string,
): { proxy?: string; variable?: string; noProxy?: string } {
  let url: URL;
  try {
    url = new URL(server);
  } catch {
    return {};
  }
  const pick = (lower: string, upper: string) =>
    env[lower] !== undefined
      ? { value: env[lower], variable: lower }
      : { value: env[upper], variable: upper };
  const http = pick("http_proxy", "HTTP_PROXY");
  const https = pick("https_proxy", "HTTPS_PROXY");
  const chosen = override
    ? { value: override, variable: "datahub.proxy" }
    : url.protocol === "https:" && https.value
    ? https
    : http;
  if (!chosen.value) return {};
  const noProxy = pick("no_proxy", "NO_PROXY");
  const entries = (noProxy.value ?? "").split(/[,\s]/).filter((e) => e !== "");
  const host = url.host.replace(/:\d*$/, "").toLowerCase();
  const port = Number(url.port) || (url.protocol === "https:" ? 443 : 80);
  const bypass = noProxy.value === "*" || entries.some((entry) => {
    const m = /^(.+):(\d+)$/.exec(entry);
    const name = (m ? m[1]! : entry).replace(/^\*?\./, "").toLowerCase();
    if (m && Number(m[2]) !== port) return false;
    return host === name || host.endsWith(`.${name}`);
  });
  if (bypass) return { noProxy: noProxy.variable };
  return { proxy: chosen.value, variable: chosen.variable };
}
