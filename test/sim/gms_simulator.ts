// GMS simulator: the test double of DataHub GMS used by integration tests, `make demo` and
// benchmarks. It speaks real HTTP on 127.0.0.1 through `node:http` (so it runs under Deno and Node
// alike) and plays the parts of GMS an ingestion executor depends on: GraphQL discovery and secrets,
// OpenAPI v3 aspect reads and writes with versions, conditional writes and result immutability, an
// eventually consistent search index, and injectable faults. Behaviour references are to
// /work/shared/datahub/SPEC.md.

import http from "node:http";
import https from "node:https";
import type { Socket } from "node:net";
import { Buffer } from "node:buffer";
import {
  type DocumentNode,
  execute,
  GraphQLError,
  type GraphQLSchema,
  Kind,
  parse,
  validate,
} from "graphql";
import { decideWrite, headerValue, type WriteDecision } from "./aspects.ts";
import { isModernSurface, schemaFor } from "./schema.ts";
import {
  ASPECT_NAMES,
  type AspectName,
  type Criterion,
  deepEqual,
  ENTITY_NAME,
  EntityStore,
  indexedFields,
  INPUT,
  isAspectName,
  type Json,
  matchOrFilters,
  RESULT,
  SIGNAL,
  sortByField,
  type StoredAspect,
  type StoredEntity,
  URN_PREFIX,
} from "./store.ts";

export interface SimulatorOptions {
  /** Bearer token accepted; default "sim-token" (`setToken` changes it). */
  token?: string;
  /**
   * Serve HTTPS with this key and certificate (PEM); `requestCert` with `ca`: only clients with a
   * certificate signed by `ca` complete the handshake (mutual TLS).
   */
  tls?: { key: string; cert: string; ca?: string; requestCert?: boolean };
  /** Accepted as `Authorization: Basic <id>:<secret>` (literal, not base64, as GMS expects). */
  systemClient?: { id: string; secret: string };
  /** GMS version played, default "v1.3.0"; anything below v1.2.0 plays the old GraphQL surface. */
  version?: string;
  /** DataHub secrets (name -> value) served by getSecretValues. */
  secrets?: Record<string, string>;
  /** true = getSecretValues is denied unless system-client auth (SPEC 2.4 caller guard). */
  callerGuard?: boolean;
  /**
   * false = the Bearer token's user lacks Manage Secrets: getSecretValues answers GMS's
   * authorization error (SPEC 2.4, checked before the caller guard; system auth always has it).
   */
  manageSecrets?: boolean;
  /** Search reflects writes only after this delay (the index is updated asynchronously). */
  searchLagMs?: number;
  /** Delay before an `async=true` OpenAPI write is applied (GMS queues it); default 5 ms. */
  asyncWriteDelayMs?: number;
  /**
   * Offset of GMS's clock from the host's, in ms (default 0; negative = GMS is behind). Applies to
   * everything GMS stamps: `systemMetadata.lastObserved`, the `Date` response header, audit stamps
   * (modification times used by If-(Un)Modified-Since, default `requestedAt` / signal `createdAt`)
   * and the search index (so the lag is unchanged). Test-side records (`at` of logs and writes)
   * stay on the host clock.
   */
  clockSkewMs?: number;
}

export interface RequestSpec {
  id?: string;
  task?: string;
  args?: Record<string, string>;
  /** Default "default"; null = field absent (only possible when GMS skipped validation). */
  executorId?: string | null;
  source?: { type: string; ingestionSource?: string };
  requestedAt?: number;
  actorUrn?: string;
}

export interface ResultValue {
  status: string;
  startTimeMs?: number;
  durationMs?: number;
  report?: string;
  structuredReport?: { type: string; serializedValue: string; contentType: string };
}

export interface ResultWrite {
  urn: string;
  value: ResultValue;
  /** Classified as for `Fault.write` (a setResult() has no headers, so it is never a claim). */
  kind: ResultWriteKind;
  version: number;
  /** Host clock (not skewed by `clockSkewMs`). */
  at: number;
  /** MCP headers sent with the write (e.g. If-Version-Match). */
  headers: Record<string, string>;
  systemMetadata?: Record<string, unknown>;
  /** Size of the request body part for this aspect (0 for simulator-side writes). */
  bytes: number;
  /** "openapi" for writes received over HTTP, "sim" for setResult(). */
  via: "openapi" | "sim";
}

export interface RejectedWrite {
  urn: string;
  status: number;
  message: string;
  at: number;
  aspect: string;
  /** true if the write came with async=true: GMS answered 202 and dropped it silently. */
  async: boolean;
}

export interface HttpLogEntry {
  method: string;
  path: string;
  /** 0 while in flight, or when the connection was reset by a fault / goDown. */
  status: number;
  /** The status the simulator had answered when an `after` fault replaced the answer. */
  handledStatus?: number;
  /** Host clock (not skewed by `clockSkewMs`). */
  at: number;
  bytesIn: number;
  bytesOut: number;
  operationName?: string;
  /** Which credentials authenticated the request, if any. */
  auth?: "bearer" | "system";
}

/**
 * Kind of a result write, from the `dataHubExecutionRequestResult` aspect of a write body: "claim"
 * if its MCP header If-Version-Match is "-1", else "heartbeat" if `value.status` is RUNNING, else
 * "terminal" (any other status, even a missing one).
 */
export type ResultWriteKind = "claim" | "heartbeat" | "terminal";

export interface Fault {
  /** Matched against the path including the query string; default: all requests. */
  match?: string | RegExp;
  /**
   * Only synchronous OpenAPI writes (`POST …/entity/datahubexecutionrequest?async=false`, any case)
   * holding a result write of this kind (any of a batch's entities); never any other request.
   * With `match`, both must match.
   */
  write?: ResultWriteKind;
  /** Respond with this status (e.g. 503, 429, 500) instead of handling the request. */
  status?: number;
  /** Sets Retry-After on the faulted response (a `status` one or an `after` status). */
  retryAfterSeconds?: number;
  /** Delay before handling (or before the reset / status). */
  latencyMs?: number;
  /** Destroy the socket without answering. */
  reset?: boolean;
  /**
   * Handle the request normally first (a write is validated and committed, or rejected, exactly as
   * without the fault), then lose the answer: "reset" destroys the socket, a number answers that
   * status with a small JSON error body instead of the real answer (even if that was a 412 or
   * 400). Cannot be combined with `status` or `reset`.
   */
  after?: "reset" | number;
  /** Apply to this many matching requests; default unlimited. */
  times?: number;
}

export interface SecretRequest {
  names: string[];
  granted: boolean;
  auth?: "bearer" | "system";
  at: number;
}

interface Auth {
  kind: "bearer" | "system";
  actor: string;
}

interface GraphQLContext {
  auth: Auth;
  userAgent: string;
}

interface ActiveFault {
  fault: Fault;
  remaining: number;
}

interface WriteOp {
  urn: string;
  aspect: AspectName;
  value: unknown;
  headers: Record<string, string>;
  systemMetadata?: Json;
  bytes: number;
}

const SYSTEM_ACTOR = "urn:li:corpuser:__datahub_system";
const TOKEN_ACTOR = "urn:li:corpuser:datahub";
const DEFAULT_SOURCE = {
  type: "MANUAL_INGESTION_SOURCE",
  ingestionSource: "urn:li:dataHubIngestionSource:sim-source",
};

/** The SecurityException GMS's SecretService raises when the caller guard denies decryption. */
class CallerGuardError extends GraphQLError {
  constructor(message: string) {
    super(message, { extensions: { code: 403, type: "UNAUTHORIZED" } });
  }
}

class HttpError extends Error {
  readonly status: number;
  readonly body: Json;
  constructor(status: number, body: Json) {
    super(String(body.message ?? body.error));
    this.status = status;
    this.body = body;
  }
}

export class GmsSimulator implements AsyncDisposable {
  token: string;
  private readonly tls: SimulatorOptions["tls"];
  private readonly systemClient: { id: string; secret: string };
  private readonly version: string;
  private readonly modern: boolean;
  private readonly schema: GraphQLSchema;
  private readonly secrets: Map<string, string>;
  private readonly callerGuard: boolean;
  private readonly manageSecrets: boolean;
  private readonly searchLagMs: number;
  private readonly asyncWriteDelayMs: number;
  private readonly clockSkewMs: number;
  private readonly fields: Set<string>;
  private readonly store: EntityStore;

  private readonly log: HttpLogEntry[] = [];
  private readonly accepted: ResultWrite[] = [];
  private readonly rejected: RejectedWrite[] = [];
  private readonly secretLog: SecretRequest[] = [];
  private faults: ActiveFault[] = [];

  private server: http.Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly timers = new Set<ReturnType<typeof setTimeout>>();
  private port = 0;
  private closed = false;

  private constructor(opts: SimulatorOptions) {
    this.token = opts.token ?? "sim-token";
    this.tls = opts.tls;
    this.systemClient = opts.systemClient ??
      { id: "__datahub_system", secret: "JohnSnowKnowsNothing" };
    this.version = opts.version ?? "v1.3.0";
    this.modern = isModernSurface(this.version);
    this.schema = schemaFor(this.version);
    this.secrets = new Map(Object.entries(opts.secrets ?? {}));
    this.callerGuard = opts.callerGuard ?? false;
    this.manageSecrets = opts.manageSecrets ?? true;
    this.searchLagMs = opts.searchLagMs ?? 0;
    this.asyncWriteDelayMs = opts.asyncWriteDelayMs ?? 5;
    this.clockSkewMs = opts.clockSkewMs ?? 0;
    this.fields = indexedFields(this.modern);
    this.store = new EntityStore(this.fields, () => this.searchLagMs);
  }

  static async start(opts: SimulatorOptions = {}): Promise<GmsSimulator> {
    const sim = new GmsSimulator(opts);
    await sim.listen(0);
    return sim;
  }

  get url(): string {
    return `${this.tls ? "https" : "http"}://127.0.0.1:${this.port}`;
  }

  /** From now on only this Bearer token is accepted (a rotation: the old one gets 401). */
  setToken(token: string): void {
    this.token = token;
  }

  /** GMS's clock: what it stamps on data and in the Date header (the host clock + clockSkewMs). */
  now(): number {
    return Date.now() + this.clockSkewMs;
  }

  // ---------------------------------------------------------------- test-side API

  createRequest(spec: RequestSpec = {}): string {
    const urn = URN_PREFIX + (spec.id ?? crypto.randomUUID());
    const value: Json = {
      task: spec.task ?? "RUN_INGEST",
      args: { ...(spec.args ?? {}) },
      // By default each request is a manual run of an ingestion source of its own.
      source: {
        ...(spec.source ??
          {
            ...DEFAULT_SOURCE,
            ingestionSource: `${DEFAULT_SOURCE.ingestionSource}-${urn.slice(URN_PREFIX.length)}`,
          }),
      },
      requestedAt: spec.requestedAt ?? this.now(),
    };
    // executorId: null models a request GMS stored without one (SPEC 3.1 "omitted if unset").
    if (spec.executorId !== null) value.executorId = spec.executorId ?? "default";
    if (spec.actorUrn !== undefined) value.actorUrn = spec.actorUrn;
    this.store.put(urn, INPUT, value, undefined, this.now());
    return urn;
  }

  sendSignal(
    urn: string,
    signal = "KILL",
    opts: { executorId?: string; time?: number; actor?: string } = {},
  ): void {
    const value: Json = {
      signal,
      createdAt: { time: opts.time ?? this.now(), actor: opts.actor ?? TOKEN_ACTOR },
    };
    if (opts.executorId !== undefined) value.executorId = opts.executorId;
    this.store.put(urn, SIGNAL, value, undefined, this.now());
  }

  /**
   * Writes a result behind the agent's back (a UI cancel, another executor, a manual fix). Skips
   * validation on purpose; an identical value is still a storage no-op and keeps the version.
   */
  setResult(
    urn: string,
    value: ResultValue,
    options: { properties?: Record<string, string> } = {},
  ): number {
    const current = this.store.aspect(urn, RESULT);
    const clean = canonical(value) as Json;
    if (current && deepEqual(current.value, clean) && !options.properties) return current.version;
    // `properties` plays another writer's systemMetadata (an agent instance, the Python executor).
    const meta = options.properties ? { properties: { ...options.properties } } : undefined;
    const stored = this.store.put(urn, RESULT, clean, meta, this.now());
    this.accepted.push({
      urn,
      value: structuredClone(clean) as unknown as ResultValue,
      kind: resultWriteKind({ value: clean }),
      version: stored.version,
      at: Date.now(),
      headers: {},
      bytes: 0,
      via: "sim",
    });
    return stored.version;
  }

  result(urn: string): { value: ResultValue; version: number } | undefined {
    const a = this.store.aspect(urn, RESULT);
    return a
      ? { value: structuredClone(a.value) as unknown as ResultValue, version: a.version }
      : undefined;
  }

  /** The stored signal aspect (test convenience; agents read it over OpenAPI). */
  signal(urn: string): { value: Json; version: number } | undefined {
    const a = this.store.aspect(urn, SIGNAL);
    return a ? { value: structuredClone(a.value), version: a.version } : undefined;
  }

  resultWrites(urn?: string): ResultWrite[] {
    return this.accepted.filter((w) => urn === undefined || w.urn === urn).map((w) => ({ ...w }));
  }

  rejectedWrites(urn?: string): RejectedWrite[] {
    return this.rejected.filter((w) => urn === undefined || w.urn === urn).map((w) => ({ ...w }));
  }

  requests(): HttpLogEntry[] {
    return this.log.map((e) => ({ ...e }));
  }

  /** Every getSecretValues call, with the names asked for and whether the caller guard let it pass. */
  secretRequests(): SecretRequest[] {
    return this.secretLog.map((s) => ({ ...s, names: [...s.names] }));
  }

  addFault(f: Fault): () => void {
    checkFault(f);
    const active: ActiveFault = { fault: f, remaining: f.times ?? Infinity };
    this.faults.push(active);
    return () => {
      this.faults = this.faults.filter((a) => a !== active);
    };
  }

  clearFaults(): void {
    this.faults = [];
  }

  setSecret(name: string, value: string): void {
    this.secrets.set(name, value);
  }

  /** Stops listening and destroys open sockets, so new connections are refused. */
  async goDown(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Listens again on the same port (clients configured with `url` keep working). */
  async comeBack(): Promise<void> {
    if (this.closed) throw new Error("simulator is closed");
    if (this.server) return;
    await this.listen(this.port);
  }

  async waitFor<T>(
    probe: () => T | undefined | null | false,
    timeoutMs = 5000,
    what = "condition",
  ): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    for (;;) {
      try {
        const v = probe();
        if (v !== undefined && v !== null && v !== false) return v;
        last = v;
      } catch (e) {
        last = e;
      }
      if (Date.now() >= deadline) {
        throw new Error(
          `waitFor(${what}) timed out after ${timeoutMs} ms; last probe result: ${
            describe(last)
          }; simulator state: ${this.describeState()}`,
        );
      }
      await this.sleep(10);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await this.goDown();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // ---------------------------------------------------------------- HTTP plumbing

  private listen(port: number): Promise<void> {
    const tls = this.tls && { ...this.tls, rejectUnauthorized: this.tls.requestCert ?? false };
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
      this.handle(req, res).catch((e) => {
        // A handler bug must show up in the test output, not as a hung request.
        if (!res.headersSent && !res.destroyed) {
          this.send(res, undefined, 500, { error: "Internal Server Error", message: String(e) });
        }
      });
    };
    const server: http.Server = tls ? https.createServer(tls, handler) : http.createServer(handler);
    server.on("connection", (socket: Socket) => {
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
    });
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => {
        server.off("error", reject);
        const addr = server.address();
        if (addr && typeof addr === "object") this.port = addr.port;
        this.server = server;
        resolve();
      });
    });
  }

  /** A timer that close() can cancel, so no test leaks a pending timeout. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.timers.delete(t);
        resolve();
      }, ms);
      this.timers.add(t);
    });
  }

  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.closed) fn();
    }, ms);
    this.timers.add(t);
  }

  private describeState(): string {
    const results = [...this.store.entities.values()].map((e) => {
      const r = e.aspects.get(RESULT);
      return `${e.urn.slice(URN_PREFIX.length)}=${
        r ? `${r.value.status}@v${r.version}` : "pending"
      }`;
    });
    const text =
      `${this.log.length} HTTP requests, ${this.accepted.length} result writes, ${this.rejected.length} rejected, requests [${
        results.join(", ")
      }]`;
    return text.length > 2000 ? text.slice(0, 2000) + "…" : text;
  }

  private readBody(req: http.IncomingMessage): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => resolve(Buffer.concat(chunks)));
      req.on("error", reject);
    });
  }

  private send(
    res: http.ServerResponse,
    entry: HttpLogEntry | undefined,
    status: number,
    body: unknown,
    headers: Record<string, string> = {},
  ): void {
    const text = typeof body === "string" ? body : JSON.stringify(body);
    const type = typeof body === "string" ? "text/plain" : "application/json";
    const bytes = Buffer.from(text, "utf8");
    if (entry) {
      entry.status = status;
      entry.bytesOut = bytes.length;
    }
    if (res.destroyed) return;
    res.writeHead(status, {
      // Set explicitly (node would add the host's) so a skewed GMS clock shows in it too.
      date: new Date(this.now()).toUTCString(),
      "content-type": type,
      "content-length": String(bytes.length),
      ...headers,
    });
    res.end(bytes);
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const method = req.method ?? "GET";
    const path = req.url ?? "/";
    const entry: HttpLogEntry = {
      method,
      path,
      status: 0,
      at: Date.now(),
      bytesIn: 0,
      bytesOut: 0,
    };
    this.log.push(entry);
    const raw = await this.readBody(req);
    entry.bytesIn = raw.length;
    const text = raw.toString("utf8");
    const url = new URL(path, "http://sim");
    if (url.pathname === "/api/graphql") {
      const name = graphqlOperationName(text);
      if (name) entry.operationName = name;
    }

    // Faults play a proxy in front of GMS or an overloaded GMS: they hit before any routing and
    // auth. They are matched only now because `write` faults classify the body.
    const faults = this.takeFaults(path, resultWriteKinds(method, url, text));
    const latency = faults.reduce((sum, f) => sum + (f.latencyMs ?? 0), 0);
    if (latency > 0) await this.sleep(latency);
    if (this.closed || res.destroyed) return;
    const before = faults.filter((f) => f.after === undefined);
    if (before.some((f) => f.reset)) {
      req.socket.destroy();
      return;
    }
    const statusFault = before.find((f) => f.status !== undefined);
    if (statusFault?.status !== undefined) {
      this.sendFault(res, entry, statusFault.status, statusFault);
      return;
    }

    const [status, body] = await this.answer(method, url, text, req, entry);
    // An `after` fault: GMS has done the work (maybe committed a write), but the answer is lost.
    // Like the faults before handling, a reset wins over a status.
    const after = faults.find((f) => f.after === "reset") ??
      faults.find((f) => f.after !== undefined);
    if (after?.after === undefined) {
      this.send(res, entry, status, body);
      return;
    }
    entry.handledStatus = status;
    if (after.after === "reset") {
      entry.status = 0;
      req.socket.destroy();
      return;
    }
    this.sendFault(res, entry, after.after, after);
  }

  /** Faults matching a request; each one uses one of its `times`. */
  private takeFaults(path: string, kinds: ReadonlySet<ResultWriteKind>): Fault[] {
    const hit = this.faults.filter((a) => a.remaining > 0 && faultMatches(a.fault, path, kinds));
    for (const a of hit) a.remaining--;
    this.faults = this.faults.filter((a) => a.remaining > 0);
    return hit.map((a) => a.fault);
  }

  private sendFault(
    res: http.ServerResponse,
    entry: HttpLogEntry,
    status: number,
    fault: Fault,
  ): void {
    const headers: Record<string, string> = {};
    if (fault.retryAfterSeconds !== undefined) {
      headers["retry-after"] = String(fault.retryAfterSeconds);
    }
    const reason = http.STATUS_CODES[status] ?? "Error";
    this.send(res, entry, status, { error: reason }, headers);
  }

  /** The real answer to a request: health, auth, then routing (HttpErrors become answers). */
  private async answer(
    method: string,
    url: URL,
    text: string,
    req: http.IncomingMessage,
    entry: HttpLogEntry,
  ): Promise<[number, unknown]> {
    if (method === "GET" && url.pathname === "/health") return [200, "GOOD"];
    const auth = this.authenticate(req.headers.authorization);
    if (!auth) return [401, { error: "Unauthorized" }];
    entry.auth = auth.kind;
    try {
      return await this.route(method, url, text, auth, req);
    } catch (e) {
      if (e instanceof HttpError) return [e.status, e.body];
      throw e;
    }
  }

  private authenticate(header: string | undefined): Auth | undefined {
    if (!header) return undefined;
    if (header.startsWith("Bearer ") && header.slice(7) === this.token) {
      return { kind: "bearer", actor: TOKEN_ACTOR };
    }
    if (header.startsWith("Basic ")) {
      // GMS's DataHubSystemAuthenticator takes the credentials literally (no base64).
      const creds = header.slice(6);
      const i = creds.indexOf(":");
      if (
        i > 0 && creds.slice(0, i) === this.systemClient.id &&
        creds.slice(i + 1) === this.systemClient.secret
      ) {
        return { kind: "system", actor: SYSTEM_ACTOR };
      }
    }
    return undefined;
  }

  private async route(
    method: string,
    url: URL,
    text: string,
    auth: Auth,
    req: http.IncomingMessage,
  ): Promise<[number, unknown]> {
    const p = url.pathname;
    if (method === "GET" && p === "/config") {
      return [200, {
        versions: { "acryldata/datahub": { version: this.version } },
        noCode: "true",
      }];
    }
    if (method === "POST" && p === "/api/graphql") {
      return [200, await this.graphql(parseJson(text), auth, req.headers["user-agent"] ?? "")];
    }
    const prefix = "/openapi/v3/entity/";
    if (p.startsWith(prefix)) {
      const segs = p.slice(prefix.length).split("/").filter((s) => s !== "").map(decodeSegment);
      if (segs[0]?.toLowerCase() !== ENTITY_NAME.toLowerCase()) throw notFound();
      const withMeta = url.searchParams.get("systemMetadata") === "true";
      if (segs.length === 1 && method === "POST") {
        const async = url.searchParams.get("async") !== "false";
        return this.write(parseJson(text), async, withMeta);
      }
      if (segs.length === 2 && segs[1] === "batchGet" && method === "POST") {
        return [200, this.batchGet(parseJson(text), withMeta)];
      }
      if (segs.length === 2 && method === "GET") {
        const entity = this.store.get(segs[1]!);
        if (!entity) throw notFound();
        const wanted = url.searchParams.getAll("aspects");
        return [200, renderEntity(entity, wanted.length ? wanted : [...ASPECT_NAMES], withMeta)];
      }
      if (segs.length === 3 && method === "GET") {
        const name = segs[2]!;
        const aspect = isAspectName(name) ? this.store.aspect(segs[1]!, name) : undefined;
        if (!aspect) throw notFound();
        return [200, renderAspect(aspect, withMeta)];
      }
    }
    throw notFound();
  }

  // ---------------------------------------------------------------- OpenAPI v3

  private batchGet(body: unknown, withMeta: boolean): Json[] {
    if (!Array.isArray(body)) throw badRequest("Request body must be an array of entities");
    const out: Json[] = [];
    for (const item of body) {
      if (!isObject(item) || typeof item.urn !== "string") {
        throw badRequest("Each entity requires a urn");
      }
      const entity = this.store.get(item.urn);
      if (!entity) continue;
      const asked = Object.keys(item).filter((k) => k !== "urn");
      out.push(renderEntity(entity, asked.length ? asked : [...ASPECT_NAMES], withMeta));
    }
    return out;
  }

  private write(body: unknown, async: boolean, withMeta: boolean): [number, unknown] {
    const ops = parseWriteBody(body);
    if (async) {
      // GMS only enqueues the proposals: validation runs later and failures are never reported.
      this.later(this.asyncWriteDelayMs, () => {
        for (const op of ops) {
          const d = decideWrite(
            op.urn,
            op.aspect,
            op.value,
            op.headers,
            this.store.aspect(op.urn, op.aspect),
          );
          if (d.kind === "reject") this.reject(op, d, true);
          else if (d.kind === "apply") this.apply(op, d.value);
        }
      });
      return [202, ops.map((op) => ({ urn: op.urn, [op.aspect]: { value: op.value } }))];
    }

    // Synchronous batch: every write is validated against the state the previous ones would leave,
    // and the batch is applied all-or-nothing, like one GMS transaction.
    const staged = new Map<string, StoredAspect | undefined>();
    const decisions: WriteDecision[] = [];
    for (const op of ops) {
      const key = `${op.urn}\n${op.aspect}`;
      const current = staged.has(key) ? staged.get(key) : this.store.aspect(op.urn, op.aspect);
      const d = decideWrite(op.urn, op.aspect, op.value, op.headers, current);
      decisions.push(d);
      if (d.kind === "apply") {
        staged.set(key, {
          value: d.value,
          version: (current?.version ?? 0) + 1,
          systemMetadata: {},
          modifiedAt: this.now(),
        });
      }
    }
    const failures = ops.flatMap((op, i) => {
      const d = decisions[i]!;
      return d.kind === "reject" ? [{ op, d }] : [];
    });
    if (failures.length > 0) {
      for (const f of failures) this.reject(f.op, f.d, false);
      const precondition = failures.some((f) => f.d.status === 412);
      throw new HttpError(precondition ? 412 : 400, {
        error: precondition ? "Precondition Error" : "Validation Error",
        message: failures.map((f) => f.d.message).join("\n"),
      });
    }
    ops.forEach((op, i) => {
      const d = decisions[i]!;
      if (d.kind === "apply") this.apply(op, d.value);
    });
    return [
      200,
      ops.map((op) => {
        const stored = this.store.aspect(op.urn, op.aspect);
        return { urn: op.urn, [op.aspect]: stored ? renderAspect(stored, withMeta) : {} };
      }),
    ];
  }

  private apply(op: WriteOp, value: Json): void {
    const syncIndex = headerValue(op.headers, "X-DataHub-Sync-Index-Update") === "true";
    const stored = this.store.put(
      op.urn,
      op.aspect,
      value,
      op.systemMetadata,
      this.now(),
      syncIndex,
    );
    if (op.aspect !== RESULT) return;
    this.accepted.push({
      urn: op.urn,
      value: structuredClone(value) as unknown as ResultValue,
      kind: resultWriteKind({ value, headers: op.headers }),
      version: stored.version,
      at: Date.now(),
      headers: { ...op.headers },
      ...(op.systemMetadata ? { systemMetadata: structuredClone(op.systemMetadata) } : {}),
      bytes: op.bytes,
      via: "openapi",
    });
  }

  private reject(op: WriteOp, d: { status: number; message: string }, async: boolean): void {
    this.rejected.push({
      urn: op.urn,
      aspect: op.aspect,
      status: d.status,
      message: d.message,
      at: Date.now(),
      async,
    });
  }

  // ---------------------------------------------------------------- GraphQL

  private async graphql(body: unknown, auth: Auth, userAgent: string): Promise<unknown> {
    if (!isObject(body)) throw badRequest("Request body must be a JSON object");
    if (typeof body.query !== "string") {
      return { errors: [{ message: "Must provide query string." }] };
    }
    let document: DocumentNode;
    try {
      document = parse(body.query);
    } catch (e) {
      if (e instanceof GraphQLError) return { errors: [e.toJSON()] };
      throw e;
    }
    const validationErrors = validate(this.schema, document);
    if (validationErrors.length > 0) {
      return { errors: validationErrors.map((e) => e.toJSON()) };
    }
    const context: GraphQLContext = { auth, userAgent };
    const result = await execute({
      schema: this.schema,
      document,
      rootValue: this.rootValue(),
      contextValue: context,
      variableValues: isObject(body.variables) ? body.variables : undefined,
      operationName: typeof body.operationName === "string" ? body.operationName : undefined,
    });
    const errors = result.errors?.map((e) => e.toJSON());
    // A SecurityException from the secret service fails the whole request in GMS.
    if (result.errors?.some((e) => e.originalError instanceof CallerGuardError)) {
      return { errors, data: null };
    }
    return errors ? { errors, data: result.data ?? null } : { data: result.data };
  }

  private rootValue(): Json {
    return {
      searchAcrossEntities: (args: { input: SearchInput }) => this.searchAcrossEntities(args.input),
      listExecutionRequests: (args: { input: ListInput }) => this.listExecutionRequests(args.input),
      executionRequest: (args: { urn: string }) => {
        const entity = this.store.get(args.urn);
        return entity?.aspects.has(INPUT) ? this.hydrate(entity) : null;
      },
      getSecretValues: (args: { input: { secrets: string[] } }, ctx: GraphQLContext) =>
        this.getSecretValues(args.input.secrets, ctx),
    };
  }

  private searchAcrossEntities(input: SearchInput): Json {
    const start = input.start ?? 0;
    const count = input.count ?? 10;
    const types = input.types ?? [];
    // Execution requests are an internal entity: only searched when asked for explicitly.
    if (!types.includes("EXECUTION_REQUEST")) {
      return { start, count, total: 0, searchResults: [] };
    }
    let groups: Criterion[][] = (input.orFilters ?? []).map((g) => [...(g.and ?? [])]);
    const legacy = input.filters ?? [];
    if (legacy.length > 0) {
      groups = groups.length ? groups.map((g) => [...g, ...legacy]) : [[...legacy]];
    }
    let rows = this.store.searchView(this.now())
      .filter((r) => matchOrFilters(groups, r.doc, this.fields) && matchQuery(input.query, r.doc));
    const sort = input.sortInput?.sortCriteria?.[0] ?? input.sortInput?.sortCriterion;
    if (sort) rows = sortByField(rows, sort.field, sort.sortOrder);
    // Hits come from the (lagging) index, but entities are hydrated from the DB, as in GMS.
    const page = rows.slice(start, start + count);
    return {
      start,
      count,
      total: rows.length,
      searchResults: page.map((r) => ({ entity: this.hydrate(r.entity), matchedFields: [] })),
    };
  }

  private listExecutionRequests(input: ListInput): Json {
    const start = input.start ?? 0;
    const count = input.count ?? 20;
    const filters = [...(input.filters ?? [])];
    let rows = this.store.searchView(this.now()).filter((r) =>
      matchOrFilters(filters.length ? [filters] : [], r.doc, this.fields) &&
      matchQuery(input.query, r.doc) &&
      // Since v1.2.0 the resolver adds `ingestionSource IN (<visible sources>)` (SPEC 2.4).
      (!this.modern || r.doc.ingestionSource !== undefined)
    );
    const sort = input.sort ?? { field: "requestTimeMs", sortOrder: "DESCENDING" as const };
    rows = sortByField(rows, sort.field, sort.sortOrder);
    return {
      start,
      count,
      total: rows.length,
      executionRequests: rows.slice(start, start + count).map((r) => this.hydrate(r.entity)),
    };
  }

  private getSecretValues(names: string[], ctx: GraphQLContext): Json[] {
    const browser = /Mozilla/i.test(ctx.userAgent);
    if (!this.manageSecrets && ctx.auth.kind !== "system") {
      this.secretLog.push({
        names: [...names],
        granted: false,
        auth: ctx.auth.kind,
        at: Date.now(),
      });
      throw new GraphQLError(
        "Unauthorized to perform this action. Please contact your DataHub administrator.",
        { extensions: { code: 403, type: "UNAUTHORIZED" } },
      );
    }
    const granted = !this.callerGuard || (ctx.auth.kind === "system" && !browser);
    this.secretLog.push({ names: [...names], granted, auth: ctx.auth.kind, at: Date.now() });
    if (!granted) {
      const why = ctx.auth.kind !== "system"
        ? `denies non-system actor ${ctx.auth.actor}`
        : `denies human browser/mobile User-Agent for actor ${ctx.auth.actor}`;
      throw new CallerGuardError(
        `Unauthorized to decrypt secrets: SecretService caller guard (SECRET_SERVICE_CALLER_GUARD_MODE=ENFORCE) ${why}`,
      );
    }
    return names.filter((n) => this.secrets.has(n)).map((n) => ({
      name: n,
      value: this.secrets.get(n)!,
    }));
  }

  /** Maps stored aspects to the GraphQL ExecutionRequest (ExecutionRequestMapper, SPEC 2.4). */
  private hydrate(entity: StoredEntity): Json {
    const input = entity.aspects.get(INPUT)?.value;
    const result = entity.aspects.get(RESULT)?.value;
    const actorUrn = typeof input?.actorUrn === "string" ? input.actorUrn : undefined;
    return {
      __typename: "ExecutionRequest",
      urn: entity.urn,
      type: "EXECUTION_REQUEST",
      id: entity.urn.slice(URN_PREFIX.length),
      input: input && {
        task: input.task,
        source: input.source,
        arguments: Object.entries((input.args ?? {}) as Record<string, string>)
          .map(([key, value]) => ({ key, value })),
        requestedAt: input.requestedAt,
        actorUrn,
        actor: actorUrn && {
          __typename: "CorpUser",
          urn: actorUrn,
          type: "CORP_USER",
          username: actorUrn.split(":").pop(),
        },
        executorId: input.executorId ?? null,
      },
      result: result ?? null,
    };
  }
}

// ---------------------------------------------------------------- helpers

interface SearchInput {
  types?: string[] | null;
  query: string;
  start?: number | null;
  count?: number | null;
  filters?: Criterion[] | null;
  orFilters?: { and?: Criterion[] | null }[] | null;
  sortInput?: {
    sortCriterion?: SortSpec | null;
    sortCriteria?: SortSpec[] | null;
  } | null;
}

interface ListInput {
  start?: number | null;
  count?: number | null;
  query?: string | null;
  filters?: Criterion[] | null;
  sort?: SortSpec | null;
}

interface SortSpec {
  field: string;
  sortOrder: "ASCENDING" | "DESCENDING";
}

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function notFound(): HttpError {
  return new HttpError(404, { error: "Not Found" });
}

function badRequest(message: string): HttpError {
  return new HttpError(400, { error: "Bad Request", message });
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw badRequest(`Malformed JSON request body: ${(e as Error).message}`);
  }
}

function decodeSegment(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw badRequest(`Malformed URL segment: ${s}`);
  }
}

function faultMatches(f: Fault, path: string, kinds: ReadonlySet<ResultWriteKind>): boolean {
  if (f.write !== undefined && !kinds.has(f.write)) return false;
  if (f.match === undefined) return true;
  if (typeof f.match === "string") return path.includes(f.match);
  f.match.lastIndex = 0;
  return f.match.test(path);
}

/** Fails fast on faults whose meaning would be ambiguous, rather than picking one silently. */
function checkFault(f: Fault): void {
  if (f.after !== undefined && (f.status !== undefined || f.reset)) {
    throw new TypeError("Fault.after cannot be combined with status or reset");
  }
  const status = typeof f.after === "number" ? f.after : f.status;
  if (status !== undefined && !(Number.isInteger(status) && status >= 100 && status <= 599)) {
    throw new RangeError(`Fault status must be an HTTP status code, got ${status}`);
  }
}

/**
 * Kinds of the result writes in a synchronous OpenAPI upsert; empty for any other request (and for
 * a body GMS could not parse), so a `write` fault never hits GraphQL, reads or async writes.
 */
function resultWriteKinds(method: string, url: URL, text: string): Set<ResultWriteKind> {
  const kinds = new Set<ResultWriteKind>();
  if (method !== "POST" || !isSyncEntityWrite(url)) return kinds;
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return kinds;
  }
  if (!Array.isArray(body)) return kinds;
  for (const item of body) {
    const part = isObject(item) ? item[RESULT] : undefined;
    if (isObject(part)) kinds.add(resultWriteKind(part));
  }
  return kinds;
}

/** `POST /openapi/v3/entity/<execution request entity, any case>?async=false`. */
function isSyncEntityWrite(url: URL): boolean {
  const prefix = "/openapi/v3/entity/";
  if (!url.pathname.startsWith(prefix) || url.searchParams.get("async") !== "false") return false;
  const segs = url.pathname.slice(prefix.length).split("/").filter((s) => s !== "");
  if (segs.length !== 1) return false;
  try {
    return decodeURIComponent(segs[0]!).toLowerCase() === ENTITY_NAME.toLowerCase();
  } catch {
    return false;
  }
}

/** Classifies one result aspect part (`{ value, headers }`) as a claim, heartbeat or terminal. */
function resultWriteKind(part: Json): ResultWriteKind {
  // Same header lookup as the conditional-write validator: case-insensitive name, value as text.
  const headers = (isObject(part.headers) ? part.headers : {}) as Record<string, string>;
  if (headerValue(headers, "If-Version-Match") === "-1") return "claim";
  const status = isObject(part.value) ? part.value.status : undefined;
  return status === "RUNNING" ? "heartbeat" : "terminal";
}

/** Full-text query: "*" (or empty) matches all; otherwise a case-insensitive substring of any field. */
function matchQuery(query: string | null | undefined, doc: Record<string, unknown>): boolean {
  const q = (query ?? "*").trim();
  if (q === "" || q === "*") return true;
  return Object.values(doc).some((v) => String(v).toLowerCase().includes(q.toLowerCase()));
}

function canonical(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(canonical);
  if (isObject(v)) {
    return Object.fromEntries(
      Object.keys(v).filter((k) => v[k] !== undefined).sort().map((k) => [k, canonical(v[k])]),
    );
  }
  return v;
}

function renderAspect(a: StoredAspect, withMeta: boolean): Json {
  return withMeta
    ? { value: structuredClone(a.value), systemMetadata: structuredClone(a.systemMetadata) }
    : { value: structuredClone(a.value) };
}

function renderEntity(entity: StoredEntity, aspects: string[], withMeta: boolean): Json {
  const out: Json = { urn: entity.urn };
  for (const name of aspects) {
    const a = isAspectName(name) ? entity.aspects.get(name) : undefined;
    if (a) out[name] = renderAspect(a, withMeta);
  }
  return out;
}

function parseWriteBody(body: unknown): WriteOp[] {
  if (!Array.isArray(body)) throw badRequest("Request body must be an array of entities");
  const ops: WriteOp[] = [];
  for (const item of body) {
    if (!isObject(item) || typeof item.urn !== "string") {
      throw badRequest("Each entity requires a urn");
    }
    if (!item.urn.startsWith(URN_PREFIX)) {
      throw new HttpError(400, {
        error: "Validation Error",
        message: `Invalid urn ${item.urn} for entity ${ENTITY_NAME}`,
      });
    }
    for (const [name, part] of Object.entries(item)) {
      if (name === "urn") continue;
      if (!isAspectName(name)) {
        throw new HttpError(400, {
          error: "Validation Error",
          message: `Unknown aspect ${name} for entity ${ENTITY_NAME}`,
        });
      }
      if (!isObject(part) || !("value" in part)) {
        throw badRequest(`Aspect ${name} requires a value`);
      }
      const headers = isObject(part.headers)
        ? Object.fromEntries(Object.entries(part.headers).map(([k, v]) => [k, String(v)]))
        : {};
      ops.push({
        urn: item.urn,
        aspect: name,
        value: part.value,
        headers,
        systemMetadata: isObject(part.systemMetadata) ? part.systemMetadata : undefined,
        bytes: Buffer.byteLength(JSON.stringify(part), "utf8"),
      });
    }
  }
  return ops;
}

/** operationName for the request log: the body's, else the document's first named operation. */
function graphqlOperationName(text: string): string | undefined {
  try {
    const body = JSON.parse(text);
    if (!isObject(body)) return undefined;
    if (typeof body.operationName === "string" && body.operationName) return body.operationName;
    if (typeof body.query !== "string") return undefined;
    for (const def of parse(body.query).definitions) {
      if (def.kind === Kind.OPERATION_DEFINITION && def.name) return def.name.value;
    }
  } catch {
    // Malformed requests are answered (and logged) without an operation name.
  }
  return undefined;
}

function describe(v: unknown): string {
  if (v instanceof Error) return `${v.name}: ${v.message}`;
  try {
    const s = JSON.stringify(v);
    if (s === undefined) return String(v);
    return s.length > 500 ? s.slice(0, 500) + "…" : s;
  } catch {
    return String(v);
  }
}
