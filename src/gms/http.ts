/**
 * The HTTP transport to GMS: one keep-alive connection pool (undici), proxies from HTTP(S)_PROXY
 * and NO_PROXY, authentication, a non-browser User-Agent, a per-request timeout, and the mapping
 * of every failure to a GmsError with a stable code. It never retries: retry policy belongs to
 * the callers (see errors.ts `isRetryable`).
 */
import { EnvHttpProxyAgent, fetch as undiciFetch, request } from "undici";
import { codeForStatus, GmsError } from "../errors.ts";
import { metrics } from "../observe/metrics.ts";
import { VERSION } from "../version.ts";

export interface GmsConnection {
  server: string;
  token: string;
  systemClientId: string;
  systemClientSecret: string;
  timeoutMs: number;
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
}

/** How the agent authenticates, for logs and error messages (never the credential itself). */
export type AuthKind = "system-client" | "token" | "none";

export class GmsHttp {
  readonly server: string;
  readonly authKind: AuthKind;
  readonly #headers: Record<string, string>;
  readonly #timeoutMs: number;
  readonly #dispatcher: EnvHttpProxyAgent;
  /** GMS's clock minus ours, from the latest `Date` header; undefined until one was seen. */
  #clockOffsetMs: number | undefined;

  /** Told about every exchange (LiveState's readiness). */
  onExchange: (outcome: ExchangeOutcome) => void = () => {};

  constructor(conn: GmsConnection) {
    this.server = conn.server.replace(/\/+$/, "");
    this.#timeoutMs = conn.timeoutMs;
    this.#headers = { "user-agent": `ingest-agent/${VERSION}`, accept: "application/json" };
    // System client credentials win: on GMS with the secret caller guard only they may read
    // secret values (SPEC §2.4). GMS expects them unencoded: `Basic <id>:<secret>` (SPEC §5.1).
    if (conn.systemClientId) {
      this.#headers.authorization = `Basic ${conn.systemClientId}:${conn.systemClientSecret}`;
      this.authKind = "system-client";
    } else if (conn.token) {
      this.#headers.authorization = `Bearer ${conn.token}`;
      this.authKind = "token";
    } else {
      this.authKind = "none";
    }
    this.#dispatcher = new EnvHttpProxyAgent({
      keepAliveTimeout: 30_000,
      connections: 16,
      headersTimeout: conn.timeoutMs,
      bodyTimeout: conn.timeoutMs,
      connectTimeout: Math.min(conn.timeoutMs, 10_000),
    });
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
    const headers: Record<string, string> = { ...this.#headers, ...options.headers };
    let payload: string | undefined;
    if (options.body !== undefined) {
      payload = JSON.stringify(options.body);
      headers["content-type"] = "application/json";
    }
    const started = performance.now();
    const done = (status: number | undefined, code: string) => {
      this.onExchange(exchangeOutcome(status));
      metrics.gmsRequest(operation, code, (performance.now() - started) / 1000);
    };
    let res;
    try {
      res = await request(url, {
        method: method as "GET",
        headers,
        body: payload,
        dispatcher: this.#dispatcher,
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (err) {
      const e = networkError(operation, err, this.#timeoutMs);
      done(undefined, e.code.toLowerCase());
      throw e;
    }
    let text: string;
    try {
      text = await res.body.text();
    } catch (err) {
      const e = networkError(operation, err, this.#timeoutMs);
      done(undefined, e.code.toLowerCase());
      throw e;
    }
    let body: unknown = undefined;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch {
        body = text;
      }
    }
    this.#observeDate(res.headers.date);
    const ok = res.statusCode >= 200 && res.statusCode < 300;
    done(res.statusCode, ok ? "ok" : codeForStatus(res.statusCode).toLowerCase());
    if (ok) return { status: res.statusCode, body };
    const retryAfter = res.headers["retry-after"];
    throw new GmsError(
      codeForStatus(res.statusCode),
      operation,
      describeHttpFailure(res.statusCode, body),
      {
        status: res.statusCode,
        retryAfterMs: parseRetryAfter(Array.isArray(retryAfter) ? retryAfter[0] : retryAfter),
      },
    );
  }

  /** A fetch bound to this pool and these headers, for graphql-request. */
  readonly fetch = (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const headers: Record<string, string> = { ...this.#headers };
    new Headers(init?.headers).forEach((v, k) => headers[k] = v);
    return undiciFetch(input as string, {
      ...(init as object),
      headers,
      dispatcher: this.#dispatcher,
      signal: AbortSignal.timeout(this.#timeoutMs),
    }).then((res) => {
      this.#observeDate(res.headers.get("date") ?? undefined);
      this.onExchange(exchangeOutcome(res.status));
      return res;
    }, (err) => {
      this.onExchange("failed");
      throw err;
    }) as unknown as Promise<Response>;
  };

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
    await this.#dispatcher.close();
  }
}

const TIMEOUT_CODES = new Set([
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
  "ETIMEDOUT",
]);

/** Classifies a thrown network error (undici, fetch TypeError with cause, abort). */
export function networkError(operation: string, err: unknown, timeoutMs: number): GmsError {
  let e: unknown = err;
  // fetch wraps the real error: TypeError("fetch failed", {cause})
  while (e instanceof Error && e.cause instanceof Error && !(e as { code?: string }).code) {
    e = e.cause;
  }
  const code = (e as { code?: string } | undefined)?.code;
  const name = (e as { name?: string } | undefined)?.name;
  if ((code && TIMEOUT_CODES.has(code)) || name === "TimeoutError" || name === "AbortError") {
    return new GmsError("GMS_TIMEOUT", operation, `GMS did not answer within ${timeoutMs}ms`, {
      cause: err,
    });
  }
  const detail = e instanceof Error ? e.message : String(e);
  return new GmsError(
    "GMS_UNREACHABLE",
    operation,
    `cannot reach GMS: ${code ? `${code} ` : ""}${detail}`,
    {
      cause: err,
    },
  );
}

function describeHttpFailure(status: number, body: unknown): string {
  let detail = "";
  if (body && typeof body === "object") {
    const b = body as { message?: unknown; error?: unknown };
    detail = String(b.message ?? b.error ?? "");
  } else if (typeof body === "string") {
    detail = body;
  }
  detail = detail.replace(/\s+/g, " ").slice(0, 500);
  return `HTTP ${status}${detail ? `: ${detail}` : ""}${authHint(status)}`;
}

/** The fix for a refusal of the agent's credentials (401/403), as a parenthesis; else "". */
export function authHint(status: number | undefined): string {
  return status === 401
    ? " (check datahub.token or the system client credentials)"
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
