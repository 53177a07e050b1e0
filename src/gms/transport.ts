/**
 * The connection to GMS below HTTP: one keep-alive pool of node:http(s) sockets for every request
 * (the OpenAPI calls and the GraphQL POSTs), with
 *   - TLS: `datahub.tls.ca_file` added to the roots Node trusts by default (its bundled roots and
 *     NODE_EXTRA_CA_CERTS), a client certificate (`cert_file`/`key_file`), or no verification;
 *     the same options reach GMS through a proxy's CONNECT tunnel (tunnel.ts), and the CA and
 *     verification setting an https:// proxy itself;
 *   - the proxy: `datahub.proxy`, else HTTPS_PROXY/HTTP_PROXY (lower case first), NO_PROXY honoured;
 *     every request to GMS goes through a CONNECT tunnel then, plain HTTP ones too;
 *   - a deadline on everything: the caller's timeout ends a request in any phase (DNS,
 *     connect, CONNECT, TLS, headers, body), and an unanswered CONNECT fails within
 *     `datahub.timeout` on its own;
 *   - the mapping of network failures to a GmsError whose message names the problem and the
 *     option that fixes it (a certificate GMS's chain is not trusted by: `datahub.tls.ca_file`; a
 *     client certificate GMS wants: `datahub.tls.cert_file`; a proxy refusing the tunnel).
 * A TLS 1.3 server that refuses the client's certificate sends its alert after the handshake,
 * and the request may then see only a reset: every socket is watched for such alerts, and a
 * close right after one is reported as that alert.
 *
 * node:http rather than undici (the stack's first choice): the same pool costs far less idle
 * memory (undici's WebAssembly HTTP parser and its module graph; see BENCHMARKS.md, issue 15).
 * node:https and node:tls are loaded only when GMS or the proxy is https:// (about 4 MiB idle).
 */
import { Buffer } from "node:buffer";
import { readFileSync } from "node:fs";
import http from "node:http";
import type { Socket } from "node:net";
import process from "node:process";
import type tls from "node:tls";
import { GmsError } from "../errors.ts";
import { builtin, openTunnel, ProxyRefusal } from "./tunnel.ts";

export interface TransportOptions {
  server: string;
  timeoutMs: number;
  /** `datahub.proxy` ("" or undefined: the environment's). */
  proxy?: string;
  tls?: { caFile?: string; certFile?: string; keyFile?: string; insecureSkipVerify?: boolean };
  /** Where HTTPS_PROXY/NO_PROXY are read (default: process.env). */
  env?: Record<string, string | undefined>;
}

/** What went wrong with TLS, for callers that give advice (doctor). */
export type TlsProblem = "server-certificate" | "client-certificate";

const tlsProblems = new WeakMap<GmsError, TlsProblem>();

/** The TLS problem behind a GmsError made by `Transport.failure`, if it was one. */
export function tlsProblemOf(err: unknown): TlsProblem | undefined {
  return err instanceof GmsError ? tlsProblems.get(err) : undefined;
}

/** One HTTP answer, its body read whole. */
export interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

/** How long after a TLS alert a closed connection is blamed on it. */
const ALERT_WINDOW_MS = 5_000;
/** Idle keep-alive sockets are closed after this (or earlier when the server's Keep-Alive says). */
const IDLE_SOCKET_MS = 30_000;

type CreateConnection = (
  options: http.ClientRequestArgs,
  callback: (err: Error | null, socket?: Socket) => void,
) => Socket | undefined;

export class Transport {
  /** The proxy requests to the server go through (user info hidden), and who set it. */
  readonly route: { proxy?: string; variable?: string; noProxy?: string };
  /** Secrets of the transport (a proxy password) to mask, by name. */
  readonly secrets: Array<[string, string]> = [];
  readonly #o: TransportOptions;
  readonly #host: string;
  readonly #agent: http.Agent;
  readonly #secure: boolean;
  readonly #request: typeof http.request;
  #alert: { error: Error & { code?: string }; at: number } | undefined;

  constructor(o: TransportOptions) {
    this.#o = o;
    this.#host = hostOf(o.server);
    this.#secure = /^https:/i.test(o.server);
    const env = o.env ?? process.env;
    const route = proxyFor(o.server, env, o.proxy);
    this.route = route.proxy ? { ...route, proxy: withoutUserinfo(route.proxy) } : route;
    const password = passwordOf(o.proxy || route.proxy);
    if (password) this.secrets.push(["proxy password", password]);
    const t = o.tls ?? {};
    const ca = t.caFile ? [...defaultRoots(), readFileSync(t.caFile, "utf8")] : undefined;
    const trust: tls.ConnectionOptions = {
      ...(ca ? { ca } : {}),
      ...(t.insecureSkipVerify ? { rejectUnauthorized: false } : {}),
    };
    const identity = t.certFile && t.keyFile
      ? { cert: readFileSync(t.certFile, "utf8"), key: readFileSync(t.keyFile, "utf8") }
      : {};
    const pool = { keepAlive: true, maxSockets: 16, maxFreeSockets: 16, timeout: IDLE_SOCKET_MS };
    const https = this.#secure ? builtin<typeof import("node:https")>("node:https") : undefined;
    this.#agent = https
      ? new https.Agent({ ...pool, ...trust, ...identity })
      : new http.Agent(pool);
    this.#request = https ? https.request : http.request;
    const agent = this.#agent as unknown as { createConnection: CreateConnection };
    const direct = agent.createConnection.bind(agent);
    const proxy = route.proxy ? new URL(route.proxy) : undefined;
    agent.createConnection = (options, callback) => {
      if (!proxy) return this.#watch(direct(options, callback));
      openTunnel({
        proxy,
        host: String(options.host ?? options.hostname ?? ""),
        port: Number(options.port) || (this.#secure ? 443 : 80),
        targetTls: this.#secure ? { ...trust, ...identity } : undefined,
        proxyTls: trust,
        timeoutMs: o.timeoutMs,
      }).then((socket) => callback(null, this.#watch(socket)), (err) => callback(err));
      return undefined;
    };
  }

  /**
   * One request to GMS: resolves with the answer (any status), rejects with the network error
   * (for `failure`) or, after `timeoutMs`, a TimeoutError. One timer rather than an AbortSignal,
   * which adds listeners and objects to every request (BENCHMARKS.md, issue 15).
   */
  send(
    method: string,
    url: URL,
    headers: Record<string, string>,
    body: string | undefined,
    timeoutMs: number,
  ): Promise<HttpAnswer> {
    return new Promise<HttpAnswer>((resolve, reject) => {
      const req = this.#request(url, {
        method,
        headers: body === undefined
          ? headers
          : { ...headers, "content-length": String(Buffer.byteLength(body)) },
        agent: this.#agent,
      });
      const timer = setTimeout(() => {
        const late = new DOMException("The operation was aborted due to timeout", "TimeoutError");
        req.destroy(late);
        reject(late);
      }, timeoutMs);
      const fail = (err: Error) => {
        clearTimeout(timer);
        reject(err);
      };
      req.once("error", fail);
      req.once("response", (res) => {
        const chunks: string[] = [];
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => chunks.push(chunk));
        res.once("error", fail);
        res.once("end", () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text: chunks.join("") });
        });
      });
      req.end(body);
    });
  }

  /** Records TLS alerts of a socket (see the module comment). */
  #watch<T extends Socket | undefined>(socket: T): T {
    socket?.on("error", (error: Error & { code?: string }) => {
      if (CLIENT_ALERT.test(error.code ?? "")) this.#alert = { error, at: Date.now() };
    });
    return socket;
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

    const refused = chain.find((e): e is ProxyRefusal => e instanceof ProxyRefusal);
    if (refused) {
      const status = refused.status;
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
    this.#agent.destroy();
    return Promise.resolve();
  }
}

const TIMEOUT_CODES = new Set(["ETIMEDOUT"]);

/** A connection closed under the request (what a late TLS alert may look like). */
const CLOSED = new Set(["ECONNRESET", "EPIPE"]);

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
  const tls = builtin<typeof import("node:tls")>("node:tls");
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
 * The proxy used for `server` (undici's and curl's rules): `override` (datahub.proxy) or the
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
