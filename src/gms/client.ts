/**
 * GmsClient: the operations the agent performs on GMS, one method each, typed in and out, every
 * payload checked with zod. No retries here (the callers own the retry policy of each operation,
 * see poller.ts, reporter.ts and outbox.ts).
 *
 * Reads and conditional writes go through OpenAPI v3 (GraphQL exposes neither aspect versions nor
 * the signal aspect, SPEC §2.4); discovery and secrets go through GraphQL.
 */
import { ClientError, GraphQLClient } from "graphql-request";
import { z } from "zod";
import { AgentError, codeForStatus, GmsError } from "../errors.ts";
import type { Logger } from "../log.ts";
import {
  type Candidate,
  ENTITY,
  idOf,
  INPUT_ASPECT,
  inputSchema,
  type RequestState,
  RESULT_ASPECT,
  resultSchema,
  type ResultValue,
  SIGNAL_ASPECT,
  signalSchema,
  type SignalValue,
  type Versioned,
} from "../request.ts";
import { type GmsConnection, GmsHttp, networkError, parseRetryAfter } from "./http.ts";
import { DISCOVER_LIST, DISCOVER_SEARCH, GET_SECRET_VALUES } from "./operations.ts";

/** A request someone holds (status RUNNING), as search sees it. */
export interface RunningSummary {
  urn: string;
  executorId: string;
  startTimeMs: number | undefined;
  /** Heartbeats write durationMs = time since start, so start + duration ≈ the last heartbeat. */
  durationMs: number | undefined;
}

/** Where one result set of discovery stands: which page was asked for and what came back. */
export interface PageInfo {
  start: number;
  /** Entities GMS returned on this page (before the agent's own filtering). */
  returned: number;
  /** All matches GMS knows of (search's `total`). */
  total: number;
}

export interface Discovery {
  pending: Candidate[];
  running: RunningSummary[];
  pages: { pending: PageInfo; running: PageInfo };
}

/**
 * Which page of each result set to ask for. The pending page normally starts at 0 (oldest
 * first); the running page walks through all RUNNING requests, one page per poll, so requests
 * that nobody reaps (another executor's) cannot hide ours behind them.
 */
export interface DiscoveryPages {
  count: number;
  pendingStart?: number;
  runningStart?: number;
}

export type DiscoveryMode = "search" | "list";

/** The narrow interface the agent uses; tests may substitute it. */
export interface GmsApi {
  discover(executorId: string, pages: DiscoveryPages): Promise<Discovery>;
  readRequest(urn: string): Promise<RequestState | undefined>;
  readSignals(urns: string[]): Promise<Map<string, Versioned<SignalValue>>>;
  /**
   * A (conditional) result write. Resolves the stored version, or undefined when GMS's answer
   * did not say (the caller re-reads). Rejects with GmsError; a rejection does not prove that
   * nothing was written (see errors.ts `mayHaveBeenApplied`).
   */
  writeResult(urn: string, value: ResultValue, options?: WriteOptions): Promise<string | undefined>;
  secretValues(names: string[]): Promise<Map<string, string>>;
  /** GMS's clock now (estimated from its `Date` headers; the local clock until one was seen). */
  serverNow(): number;
  close(): Promise<void>;
}

export interface WriteOptions {
  /** Conditional write: the version we expect GMS to hold ("-1" = the aspect must not exist). */
  ifVersionMatch?: string;
  /** Stored in systemMetadata.properties (who holds the claim, lease expiry). */
  properties?: Record<string, string>;
}

const ENTITY_PATH = `/openapi/v3/entity/${ENTITY.toLowerCase()}`;

const aspectEnvelope = z.object({
  value: z.unknown(),
  systemMetadata: z.object({
    version: z.union([z.string(), z.number()]).optional(),
    lastObserved: z.union([z.string(), z.number()]).nullish(),
    properties: z.record(z.string(), z.unknown()).optional(),
  }).loose().optional(),
}).loose();
const entitySchema = z.object({ urn: z.string() }).catchall(z.unknown());

const searchEntity = z.object({
  urn: z.string(),
  input: z.object({
    task: z.string(),
    executorId: z.string().nullish(),
    requestedAt: z.number().nullish(),
  }).nullish(),
  result: z.object({
    status: z.string(),
    startTimeMs: z.number().nullish(),
    durationMs: z.number().nullish(),
  }).nullish(),
});
const searchPage = z.object({
  total: z.number().nullish(),
  searchResults: z.array(z.object({ entity: searchEntity.or(z.object({ urn: z.string() })) })),
}).nullish();
const listPage = z.object({
  total: z.number().nullish(),
  executionRequests: z.array(searchEntity),
}).nullish();
const secretValues = z.array(z.object({ name: z.string(), value: z.string() })).nullish();

export class GmsClient implements GmsApi {
  readonly http: GmsHttp;
  readonly #graphql: GraphQLClient;
  readonly #log: Logger;
  #mode: DiscoveryMode | undefined;
  #serverVersion: string | undefined;

  constructor(conn: GmsConnection, log: Logger, options: { mode?: DiscoveryMode } = {}) {
    this.http = new GmsHttp(conn);
    this.#log = log;
    this.#mode = options.mode;
    this.#graphql = new GraphQLClient(`${this.http.server}/api/graphql`, {
      fetch: this.http.fetch,
      errorPolicy: "all",
    });
  }

  get mode(): DiscoveryMode | undefined {
    return this.#mode;
  }

  /** One GraphQL request; errors become GmsError (auth, rejected, unreachable). */
  async graphql<T>(
    operation: string,
    document: string,
    variables: Record<string, unknown>,
  ): Promise<T> {
    let res;
    try {
      res = await this.#graphql.rawRequest<T>(document, variables);
    } catch (err) {
      if (err instanceof ClientError) {
        const status = err.response.status;
        const msg = err.response.errors?.map((e) => e.message).join("; ") ?? `HTTP ${status}`;
        throw new GmsError(
          codeForStatus(status),
          operation,
          `HTTP ${status}: ${msg.slice(0, 500)}`,
          { status, retryAfterMs: parseRetryAfter(retryAfterOf(err.response.headers)) },
        );
      }
      throw networkError(operation, err, this.http.timeoutMs);
    }
    if (res.errors?.length) {
      const denied = res.errors.some((e) => {
        const code = (e.extensions as { code?: unknown } | undefined)?.code;
        return code === 401 || code === 403 || /unauthori[sz]ed/i.test(e.message);
      });
      const msg = res.errors.map((e) => e.message).join("; ").slice(0, 1000);
      if (res.data === undefined || res.data === null || denied) {
        throw new GmsError(denied ? "GMS_AUTH" : "GMS_REJECTED", operation, msg, {
          status: denied ? 403 : undefined,
        });
      }
    }
    return res.data as T;
  }

  /** Which discovery query this GMS understands; decided once (SPEC §2.3–2.4, §7). */
  async #discoveryMode(): Promise<DiscoveryMode> {
    if (this.#mode) return this.#mode;
    try {
      const { body } = await this.http.json("config", "GET", "/config");
      const version = z.object({
        versions: z.record(z.string(), z.object({ version: z.string() }).loose()),
      }).loose().safeParse(body);
      this.#serverVersion = version.success
        ? version.data.versions["acryldata/datahub"]?.version
        : undefined;
    } catch (err) {
      if (err instanceof GmsError && err.code === "GMS_AUTH") throw err;
      this.#log.debug("GMS /config unavailable; will probe the search query", { error: err });
    }
    const parsed = this.#serverVersion ? parseVersion(this.#serverVersion) : undefined;
    if (parsed) {
      this.#setMode(atLeast(parsed, [1, 2, 0]) ? "search" : "list", `GMS ${this.#serverVersion}`);
    }
    return this.#mode ?? "search";
  }

  #setMode(mode: DiscoveryMode, why: string): void {
    this.#mode = mode;
    this.#log.info(
      mode === "search"
        ? "discovery uses searchAcrossEntities filtered on executorId"
        : "discovery uses listExecutionRequests; executorId is checked by the agent (GMS before v1.2.0)",
      { reason: why },
    );
  }

  async discover(executorId: string, pages: DiscoveryPages): Promise<Discovery> {
    const mode = await this.#discoveryMode();
    if (mode === "list") return this.#discoverList(executorId, pages);
    try {
      const found = await this.#discoverSearch(executorId, pages);
      if (!this.#mode) this.#setMode("search", "the search query was accepted");
      return found;
    } catch (err) {
      // GMS before v1.2.0: ExecutionRequest is not an Entity, so the inline fragment fails validation.
      if (
        !this.#mode && err instanceof GmsError && err.code === "GMS_REJECTED" &&
        /ExecutionRequest/.test(err.message)
      ) {
        this.#setMode("list", "GMS rejected the search query (before v1.2.0)");
        return this.#discoverList(executorId, pages);
      }
      throw err;
    }
  }

  async #discoverSearch(executorId: string, pages: DiscoveryPages): Promise<Discovery> {
    const data = await this.graphql<unknown>(
      "discover",
      DISCOVER_SEARCH,
      searchVariables(executorId, pages),
    );
    const parsed = z.object({ pending: searchPage, running: searchPage }).safeParse(data);
    if (!parsed.success) throw badResponse("discover", parsed.error);
    const entities = (page: z.infer<typeof searchPage>) =>
      (page?.searchResults ?? []).map((r) => r.entity).filter((
        e,
      ): e is z.infer<typeof searchEntity> => "input" in e);
    const { pending, running } = parsed.data;
    return toDiscovery(entities(pending), entities(running), executorId, {
      pending: pageInfo(pages.pendingStart, pending?.searchResults.length, pending?.total),
      running: pageInfo(pages.runningStart, running?.searchResults.length, running?.total),
    });
  }

  async #discoverList(executorId: string, pages: DiscoveryPages): Promise<Discovery> {
    const data = await this.graphql<unknown>("discover", DISCOVER_LIST, listVariables(pages));
    const parsed = z.object({ pending: listPage, running: listPage }).safeParse(data);
    if (!parsed.success) throw badResponse("discover", parsed.error);
    const { pending, running } = parsed.data;
    return toDiscovery(
      pending?.executionRequests ?? [],
      running?.executionRequests ?? [],
      executorId,
      {
        pending: pageInfo(pages.pendingStart, pending?.executionRequests.length, pending?.total),
        running: pageInfo(pages.runningStart, running?.executionRequests.length, running?.total),
      },
    );
  }

  async readRequest(urn: string): Promise<RequestState | undefined> {
    let body: unknown;
    try {
      ({ body } = await this.http.json("read", "GET", `${ENTITY_PATH}/${encodeURIComponent(urn)}`, {
        query: { systemMetadata: "true", aspects: [INPUT_ASPECT, RESULT_ASPECT, SIGNAL_ASPECT] },
      }));
    } catch (err) {
      if (err instanceof GmsError && err.status === 404) return undefined;
      throw err;
    }
    return toRequestState(body, "read");
  }

  async readSignals(urns: string[]): Promise<Map<string, Versioned<SignalValue>>> {
    const out = new Map<string, Versioned<SignalValue>>();
    if (urns.length === 0) return out;
    const { body } = await this.http.json("readSignals", "POST", `${ENTITY_PATH}/batchGet`, {
      query: { systemMetadata: "true" },
      body: urns.map((urn) => ({ urn, [SIGNAL_ASPECT]: {} })),
    });
    const list = z.array(z.unknown()).safeParse(body);
    if (!list.success) throw badResponse("readSignals", list.error);
    for (const item of list.data) {
      const state = toRequestState(item, "readSignals");
      if (state.signal) out.set(state.urn, state.signal);
    }
    return out;
  }

  async writeResult(
    urn: string,
    value: ResultValue,
    options: WriteOptions = {},
  ): Promise<string | undefined> {
    const aspect: Record<string, unknown> = { value };
    if (options.properties) aspect.systemMetadata = { properties: options.properties };
    if (options.ifVersionMatch !== undefined) {
      aspect.headers = { "If-Version-Match": options.ifVersionMatch };
    }
    // async=false: GMS validates (conditional write, immutability) and answers now (SPEC §5.3).
    const { body } = await this.http.json("writeResult", "POST", ENTITY_PATH, {
      query: { async: "false", systemMetadata: "true" },
      body: [{ urn, [RESULT_ASPECT]: aspect }],
    });
    // Without systemMetadata in the answer the version is unknown, not "?": the caller re-reads.
    const written = z.array(z.unknown()).safeParse(body);
    const first = written.success ? written.data[0] : undefined;
    const raw = first && typeof first === "object"
      ? (first as Record<string, unknown>)[RESULT_ASPECT]
      : undefined;
    const env = aspectEnvelope.safeParse(raw);
    const version = env.success ? env.data.systemMetadata?.version : undefined;
    return version === undefined ? undefined : String(version);
  }

  serverNow(): number {
    return this.http.serverNow();
  }

  async secretValues(names: string[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    if (names.length === 0) return out;
    let data: unknown;
    try {
      data = await this.graphql("getSecretValues", GET_SECRET_VALUES, {
        input: { secrets: names },
      });
    } catch (err) {
      if (err instanceof GmsError && err.code === "GMS_AUTH") {
        throw new AgentError(
          "SECRET_ACCESS_DENIED",
          `GMS refused to decrypt secrets for the agent's credentials (${this.http.authKind}): ${err.message}. ` +
            "DataHub after v1.6.0 lets only system auth read secret values (SECRET_SERVICE_CALLER_GUARD_MODE=ENFORCE): " +
            "set datahub.system_client_id and datahub.system_client_secret in the agent's configuration, " +
            "or ask the DataHub operator to set SECRET_SERVICE_CALLER_GUARD_MODE=AUDIT.",
          { cause: err },
        );
      }
      throw err;
    }
    const parsed = z.object({ getSecretValues: secretValues }).safeParse(data);
    if (!parsed.success) throw badResponse("getSecretValues", parsed.error);
    for (const { name, value } of parsed.data.getSecretValues ?? []) out.set(name, value);
    return out;
  }

  close(): Promise<void> {
    return this.http.close();
  }
}

/** Variables of DISCOVER_SEARCH: requests routed to `executorId`, without a result / RUNNING. */
export function searchVariables(
  executorId: string,
  pages: DiscoveryPages,
): Record<string, unknown> {
  const mine = [{ field: "executorId", values: [executorId] }];
  // A request without executorId is routed to "default" (SPEC §7), but search cannot match a
  // missing field with EQUAL, so the default pool also asks for "no executorId".
  const groups = executorId === "default"
    ? [mine, [{ field: "executorId", condition: "EXISTS", negated: true }]]
    : [mine];
  const noResult = { field: "executionResultStatus", condition: "EXISTS", negated: true };
  const running = { field: "executionResultStatus", values: ["RUNNING"] };
  return {
    ...listVariables(pages),
    pendingFilters: groups.map((g) => ({ and: [...g, noResult] })),
    runningFilters: groups.map((g) => ({ and: [...g, running] })),
  };
}

/** Variables of DISCOVER_LIST (and the paging part of DISCOVER_SEARCH). */
export function listVariables(pages: DiscoveryPages): Record<string, unknown> {
  return {
    count: pages.count,
    pendingStart: pages.pendingStart ?? 0,
    runningStart: pages.runningStart ?? 0,
  };
}

function pageInfo(
  start: number | undefined,
  returned: number | undefined,
  total: number | null | undefined,
): PageInfo {
  const s = start ?? 0;
  const r = returned ?? 0;
  return { start: s, returned: r, total: total ?? s + r };
}

function toDiscovery(
  pending: z.infer<typeof searchEntity>[],
  running: z.infer<typeof searchEntity>[],
  executorId: string,
  pages: Discovery["pages"],
): Discovery {
  const routedTo = (e: z.infer<typeof searchEntity>) => e.input?.executorId || "default";
  return {
    pending: pending
      .filter((e) => !e.result && e.input && routedTo(e) === executorId)
      .map((e) => ({
        urn: e.urn,
        task: e.input!.task,
        executorId: routedTo(e),
        requestedAt: e.input!.requestedAt ?? undefined,
      })),
    running: running
      .filter((e) => e.result?.status === "RUNNING" && routedTo(e) === executorId)
      .map((e) => ({
        urn: e.urn,
        executorId: routedTo(e),
        startTimeMs: e.result?.startTimeMs ?? undefined,
        durationMs: e.result?.durationMs ?? undefined,
      })),
    pages,
  };
}

function toRequestState(body: unknown, operation: string): RequestState {
  const entity = entitySchema.safeParse(body);
  if (!entity.success) throw badResponse(operation, entity.error);
  const aspect = <T>(name: string, schema: z.ZodType<T>): Versioned<T> | undefined => {
    const raw = entity.data[name];
    if (raw === undefined || raw === null) return undefined;
    const env = aspectEnvelope.safeParse(raw);
    if (!env.success) throw badResponse(`${operation} ${name}`, env.error);
    const value = schema.safeParse(env.data.value);
    if (!value.success) throw badResponse(`${operation} ${name}`, value.error);
    const props: Record<string, string> = {};
    for (const [k, v] of Object.entries(env.data.systemMetadata?.properties ?? {})) {
      props[k] = String(v);
    }
    const observed = Number(env.data.systemMetadata?.lastObserved);
    return {
      value: value.data,
      version: String(env.data.systemMetadata?.version ?? "1"),
      properties: props,
      ...(Number.isFinite(observed) && observed > 0 ? { lastObserved: observed } : {}),
    };
  };
  const input = aspect(INPUT_ASPECT, inputSchema);
  return {
    urn: entity.data.urn,
    id: idOf(entity.data.urn),
    input: input?.value,
    result: aspect(RESULT_ASPECT, resultSchema),
    signal: aspect(SIGNAL_ASPECT, signalSchema),
  };
}

function retryAfterOf(headers: unknown): string | undefined {
  if (headers && typeof (headers as Headers).get === "function") {
    return (headers as Headers).get("retry-after") ?? undefined;
  }
  return undefined;
}

function badResponse(operation: string, error: z.ZodError): GmsError {
  const first = error.issues[0];
  return new GmsError(
    "GMS_BAD_RESPONSE",
    operation,
    `unexpected answer from GMS${
      first ? ` at ${first.path.join(".") || "(root)"}: ${first.message}` : ""
    }`,
  );
}

function parseVersion(v: string): [number, number, number] | undefined {
  const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(v.trim());
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined;
}

function atLeast(v: [number, number, number], min: [number, number, number]): boolean {
  for (let i = 0; i < 3; i++) if (v[i] !== min[i]) return v[i]! > min[i]!;
  return true;
}
