/**
 * The HTTP transport to GMS: one keep-alive connection pool (node:http; TLS, proxy and the
 * mapping of network failures are transport.ts's), authentication (a token from `datahub.token_file` is
 * checked before requests, token_file.ts), a non-browser User-Agent, a per-request deadline, and
 * the mapping of every failure to a GmsError with a stable code. It never retries, except once
 * after a 401 when the token file holds a new token: retry policy belongs to the callers (see
 * errors.ts `isRetryable`).
 */
import { codeForStatus, GmsError } from "../errors.ts";
import { type Logger, silentLogger } from "../observe/log.ts";
import { metrics } from "../observe/metrics.ts";
import { VERSION } from "../version.ts";
import { TokenFile } from "./token_file.ts";
import { Transport, type TransportOptions } from "./transport.ts";

export interface GmsConnection {
  server: string;
  /** The token (as read from tokenFile at start when that is set). */
  token: string;
  systemClientId: string;
  systemClientSecret: string;
  timeoutMs: number;
  /** `datahub.token_file`: re-read when it changes and after a 401. */
  tokenFile?: string;
  /** `datahub.proxy`: overrides HTTPS_PROXY/HTTP_PROXY. */
  proxy?: string;
  tls?: TransportOptions["tls"];
}

/** How one exchange with GMS went, for readiness: answered, failed, or credentials refused. */
export type ExchangeOutcome = "ok" | "failed" | "unauthorized";

/** What an HTTP status says about GMS's health (a 404 or 412 is an answer, not a failure). */
export function exchangeOutcome(status: number | undefined): ExchangeOutcome {
  if (status === 401 || status === 403) return "unauthorized";
  if (status === undefined || status >= 500 || status === 429) return "failed";
  return "ok";
}

export interface JsonResponse {
  status: number;
  body: unknown;
}

export interface RequestOptions {
  query?: Record<string, string | string[]>;
  body?: unknown;
  headers?: Record<string, string>;
  /** The outcome a 2xx answer is counted as in the metrics (default "ok"; GraphQL: errors). */
  outcomeOf?: (body: unknown) => string;
}

/** How the agent authenticates, for logs and error messages (never the credential itself). */
export type AuthKind = "system-client" | "token" | "none";

export class GmsHttp {
  readonly server: string;
  readonly authKind: AuthKind;
  readonly #headers: Record<string, string>;
  readonly #timeoutMs: number;
  readonly #transport: Transport;
  readonly #tokenFile: TokenFile | undefined;
  #onSecret: (name: string, value: string) => void = () => {};
  /** GMS's clock minus ours, from the latest `Date` header; undefined until one was seen. */
  #clockOffsetMs: number | undefined;

  /** Told about every exchange (LiveState's readiness). */
  onExchange: (outcome: ExchangeOutcome) => void = () => {};

  constructor(conn: GmsConnection, log: Logger = silentLogger) {
    this.server = conn.server.replace(/\/+$/, "");
    this.#timeoutMs = conn.timeoutMs;
    this.#headers = { "user-agent": `ingest-agent/${VERSION}`, accept: "application/json" };
    // System client credentials win: on GMS with the secret caller guard only they may read
    // secret values (SPEC §2.4). GMS expects them unencoded: `Basic <id>:<secret>` (SPEC §5.1).
    if (conn.systemClientId) {
      this.#headers.authorization = `Basic ${conn.systemClientId}:${conn.systemClientSecret}`;
      this.authKind = "system-client";
    } else if (conn.tokenFile) {
      this.#tokenFile = new TokenFile(conn.tokenFile, conn.token);
      this.#tokenFile.onChange = (token) => {
        this.#onSecret("datahub.token_file", token);
        log.info("datahub.token_file changed: using the token it holds now", {
          token_file: conn.tokenFile,
        });
      };
      this.#tokenFile.onProblem = (problem) =>
        problem
          ? log.warn("datahub.token_file cannot be read: keeping the token read before", {
            problem,
          })
          : log.info("datahub.token_file is readable again", { token_file: conn.tokenFile });
      this.authKind = "token";
    } else if (conn.token) {
      this.#headers.authorization = `Bearer ${conn.token}`;
      this.authKind = "token";
    } else {
      this.authKind = "none";
    }
    this.#transport = new Transport({
      server: this.server,
      timeoutMs: conn.timeoutMs,
      proxy: conn.proxy,
      tls: conn.tls,
    });
    const { proxy, variable } = this.#transport.route;
    if (proxy) log.info("GMS is reached through a proxy", { proxy, from: variable });
  }

  /**
   * Told every secret the connection holds or comes to hold (a token read from token_file, a
   * proxy password), so that the agent masks them; assigning it reports the current ones.
   */
  set onSecret(fn: (name: string, value: string) => void) {
    this.#onSecret = fn;
    for (const [name, value] of this.#transport.secrets) fn(name, value);
    if (this.#tokenFile) fn("datahub.token_file", this.#tokenFile.token);
  }

  /** The proxy GMS is reached through (user info hidden) and who set it; {} = direct. */
  get route(): Transport["route"] {
    return this.#transport.route;
  }

  /** The request headers with the current credentials. */
  async #withAuth(headers: Record<string, string>): Promise<Record<string, string>> {
    if (!this.#tokenFile) return headers;
    return { ...headers, authorization: `Bearer ${await this.#tokenFile.current()}` };
  }

  /** After a 401: whether the token file holds a new token (then the request is sent again). */
  async #rotated(status: number): Promise<boolean> {
    return status === 401 && this.#tokenFile !== undefined && await this.#tokenFile.reread();
  }

  /** A network failure as a GmsError (transport.ts names TLS and proxy problems). */
  failure(operation: string, err: unknown): GmsError {
    return this.#transport.failure(operation, err);
  }

  /** Sends a JSON request; resolves for 2xx, throws GmsError otherwise. */
  async json(
    operation: string,
    method: string,
    path: string,
    options: RequestOptions = {},
  ): Promise<JsonResponse> {
    const url = new URL(this.server + path);
    for (const [k, v] of Object.entries(options.query ?? {})) {
      for (const item of Array.isArray(v) ? v : [v]) url.searchParams.append(k, item);
    }
    const base: Record<string, string> = { ...this.#headers, ...options.headers };
    let payload: string | undefined;
    if (options.body !== undefined) {
      payload = JSON.stringify(options.body);
      base["content-type"] = "application/json";
    }
    const started = performance.now();
    const done = (status: number | undefined, code: string) => {
      this.onExchange(exchangeOutcome(status));
      metrics.gmsRequest(operation, code, (performance.now() - started) / 1000);
    };
    let res;
    for (let attempt = 0;; attempt++) {
      try {
        const headers = await this.#withAuth(base);
        res = await this.#transport.send(
          method,
          url,
          headers,
          payload,
          this.#timeoutMs,
        );
      } catch (err) {
        const e = this.failure(operation, err);
        done(undefined, e.code.toLowerCase());
        throw e;
      }
      if (attempt > 0 || !await this.#rotated(res.status)) break;
    }
    let body: unknown = undefined;
    if (res.text) {
      try {
        body = JSON.parse(res.text);
      } catch {
        body = res.text;
      }
    }
    this.#observeDate(res.headers.date);
    const ok = res.status >= 200 && res.status < 300;
    done(
      res.status,
      ok ? options.outcomeOf?.(body) ?? "ok" : codeForStatus(res.status).toLowerCase(),
    );
    if (ok) return { status: res.status, body };
    const retryAfter = res.headers["retry-after"];
    throw new GmsError(
      codeForStatus(res.status),
      operation,
      describeHttpFailure(res.status, body),
      {
        status: res.status,
        retryAfterMs: parseRetryAfter(Array.isArray(retryAfter) ? retryAfter[0] : retryAfter),
      },
    );
  }

  /**
   * GMS's clock now: ours plus the offset seen in its latest `Date` header. Leases of a pool are
   * judged on this clock, so agents whose hosts disagree on the time still agree on a lease.
   */
  serverNow(now = Date.now()): number {
    return now + (this.#clockOffsetMs ?? 0);
  }

  #observeDate(header: string | string[] | undefined): void {
    const value = Array.isArray(header) ? header[0] : header;
    const at = value ? Date.parse(value) : NaN;
    // The header has whole seconds: the server's time lies in [at, at + 1000).
    if (Number.isFinite(at)) this.#clockOffsetMs = at + 500 - Date.now();
  }

  /** GMS's clock minus ours (ms), from the latest `Date` header; undefined until one was seen. */
  get clockOffsetMs(): number | undefined {
    return this.#clockOffsetMs;
  }

  get timeoutMs(): number {
    return this.#timeoutMs;
  }

  async close(): Promise<void> {
    await this.#transport.close();
  }
}

function describeHttpFailure(status: number, body: unknown): string {
  let detail = "";
  if (body && typeof body === "object") {
    const b = body as { message?: unknown; error?: unknown; errors?: unknown };
    // GraphQL puts its reasons in errors[].message.
    const reasons = Array.isArray(b.errors)
      ? b.errors.map((e) => (e as { message?: unknown } | null)?.message).filter(Boolean)
      : [];
    detail = String(b.message ?? b.error ?? (reasons.length ? reasons.join("; ") : ""));
  } else if (typeof body === "string") {
    detail = body;
  }
  detail = detail.replace(/\s+/g, " ").slice(0, 500);
  return `HTTP ${status}${detail ? `: ${detail}` : ""}${authHint(status)}`;
}

/** The fix for a refusal of the agent's credentials (401/403), as a parenthesis; else "". */
export function authHint(status: number | undefined): string {
  return status === 401
    ? " (check datahub.token or datahub.token_file, or the system client credentials)"
    : status === 403
    ? " (the credentials lack a privilege; ingest-agent needs to read and write execution requests and read secrets: use system client credentials or a token with Manage Ingestion and Manage Secrets)"
    : "";
}

/** Retry-After is seconds or an HTTP date. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}
