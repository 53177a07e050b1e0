/**
 * gms/ owns talking to GMS: the HTTP transport (http.ts), every GraphQL document
 * (operations.ts), discovery (discovery.ts), the typed client (this file) and the rule for
 * result writes whose answer was lost (result_write.ts). It may import observe/, config/ and the
 * vocabulary; never state/, run/ or pool/.
 *
 * GmsClient: the operations the agent performs on GMS, one method each, typed in and out, every
 * payload checked (valibot schemas, built once at load). No retries here (the callers own the retry policy of each operation,
 * see poller.ts, reporter.ts and outbox.ts).
 *
 * Reads and conditional writes go through OpenAPI v3 (GraphQL exposes neither aspect versions nor
 * the signal aspect, SPEC §2.4); discovery and secrets go through GraphQL.
 */
import * as v from "valibot";
import { AgentError, GmsError } from "../errors.ts";
import type { Logger } from "../observe/log.ts";
import {
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
import { authHint, type GmsConnection, GmsHttp } from "./http.ts";
import {
  badResponse,
  discoverList,
  discoverSearch,
  type Discovery,
  type DiscoveryPages,
  type GraphqlQuery,
} from "./discovery.ts";
import { GET_SECRET_VALUES } from "./operations.ts";
import { secretDenial } from "./secret_denial.ts";
import { atLeast, parseVersion } from "../version.ts";

export type { Discovery, DiscoveryPages, PageInfo, RunningSummary } from "./discovery.ts";
export { listVariables, searchVariables } from "./discovery.ts";

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

const aspectEnvelope = v.looseObject({
  value: v.unknown(),
  systemMetadata: v.optional(v.looseObject({
    version: v.optional(v.union([v.string(), v.number()])),
    lastObserved: v.nullish(v.union([v.string(), v.number()])),
    properties: v.optional(v.record(v.string(), v.unknown())),
  })),
});
const entitySchema = v.looseObject({ urn: v.string() });
const list = v.array(v.unknown());
const serverConfig = v.looseObject({
  versions: v.record(v.string(), v.looseObject({ version: v.string() })),
});
/** DataHub's version in a `GET /config` answer, if it names one. */
export function serverVersionOf(body: unknown): string | undefined {
  const parsed = v.safeParse(serverConfig, body);
  return parsed.success ? parsed.output.versions["acryldata/datahub"]?.version : undefined;
}

const secretAnswer = v.object({
  getSecretValues: v.nullish(v.array(v.object({ name: v.string(), value: v.string() }))),
});

export class GmsClient implements GmsApi {
  readonly http: GmsHttp;
  readonly #log: Logger;
  #mode: DiscoveryMode | undefined;
  #serverVersion: string | undefined;

  constructor(conn: GmsConnection, log: Logger, options: { mode?: DiscoveryMode } = {}) {
    this.http = new GmsHttp(conn, log);
    this.#log = log;
    this.#mode = options.mode;
  }

  get mode(): DiscoveryMode | undefined {
    return this.#mode;
  }

  /** GMS's version as `GET /config` gave it, once read. */
  get serverVersion(): string | undefined {
    return this.#serverVersion;
  }

  readonly #query: GraphqlQuery = (operation, document, variables) =>
    this.graphql(operation, document, variables);

  /**
   * One GraphQL request (a JSON POST to /api/graphql; the documents are operations.ts's); errors
   * become GmsError (auth, rejected, unreachable). Data with errors beside it is returned.
   */
  async graphql<T>(
    operation: string,
    document: string,
    variables: Record<string, unknown>,
  ): Promise<T> {
    const operationName = /^\s*(?:query|mutation)\s+(\w+)/m.exec(document)?.[1];
    const { body } = await this.http.json(operation, "POST", "/api/graphql", {
      body: { query: document, variables, ...(operationName ? { operationName } : {}) },
      outcomeOf: (b) => graphqlErrors(b).length ? "graphql_errors" : "ok",
    });
    const errors = graphqlErrors(body);
    const data = body && typeof body === "object" ? (body as { data?: unknown }).data : undefined;
    if (errors.length) {
      const denied = errors.some((e) => {
        const code = e.extensions?.code;
        return code === 401 || code === 403 || /unauthori[sz]ed/i.test(e.message);
      });
      const msg = errors.map((e) => e.message).join("; ").slice(0, 1000);
      if (data === undefined || data === null || denied) {
        throw new GmsError(
          denied ? "GMS_AUTH" : "GMS_REJECTED",
          operation,
          msg + authHint(denied ? 403 : undefined),
          { status: denied ? 403 : undefined },
        );
      }
    }
    if (data === undefined || data === null) {
      throw new GmsError("GMS_BAD_RESPONSE", operation, "GraphQL answer without data or errors");
    }
    return data as T;
  }

  /** Which discovery query this GMS understands; decided once (SPEC §2.3–2.4, §7). */
  async #discoveryMode(): Promise<DiscoveryMode> {
    if (this.#mode) return this.#mode;
    try {
      const { body } = await this.http.json("config", "GET", "/config");
      this.#serverVersion = serverVersionOf(body);
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
    if (mode === "list") return discoverList(this.#query, executorId, pages);
    try {
      const found = await discoverSearch(this.#query, executorId, pages);
      if (!this.#mode) this.#setMode("search", "the search query was accepted");
      return found;
    } catch (err) {
      // GMS before v1.2.0: ExecutionRequest is not an Entity, so the inline fragment fails validation.
      if (
        !this.#mode && err instanceof GmsError && err.code === "GMS_REJECTED" &&
        /ExecutionRequest/.test(err.message)
      ) {
        this.#setMode("list", "GMS rejected the search query (before v1.2.0)");
        return discoverList(this.#query, executorId, pages);
      }
      throw err;
    }
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
    const items = v.safeParse(list, body);
    if (!items.success) throw badResponse("readSignals", items.issues);
    for (const item of items.output) {
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
    const written = v.safeParse(list, body);
    const first = written.success ? written.output[0] : undefined;
    const raw = first && typeof first === "object"
      ? (first as Record<string, unknown>)[RESULT_ASPECT]
      : undefined;
    const env = v.safeParse(aspectEnvelope, raw);
    const version = env.success ? env.output.systemMetadata?.version : undefined;
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
        // The cause as the answer and GMS's version show it (secret_denial.ts).
        const answer = err.message.replace(authHint(403), "");
        const { why, fix } = secretDenial(answer, this.#serverVersion, this.http.authKind);
        throw new AgentError(
          "SECRET_ACCESS_DENIED",
          `GMS refused to decrypt secrets for the agent's credentials (${this.http.authKind}): ${why}. ` +
            `Fix: ${fix} GMS answered: ${answer}`,
          { cause: err },
        );
      }
      throw err;
    }
    const parsed = v.safeParse(secretAnswer, data);
    if (!parsed.success) throw badResponse("getSecretValues", parsed.issues);
    for (const { name, value } of parsed.output.getSecretValues ?? []) out.set(name, value);
    return out;
  }

  close(): Promise<void> {
    return this.http.close();
  }
}

function toRequestState(body: unknown, operation: string): RequestState {
  const entity = v.safeParse(entitySchema, body);
  if (!entity.success) throw badResponse(operation, entity.issues);
  const fields = entity.output as Record<string, unknown>;
  const aspect = <T>(
    name: string,
    schema: v.GenericSchema<unknown, T>,
  ): Versioned<T> | undefined => {
    const raw = fields[name];
    if (raw === undefined || raw === null) return undefined;
    const env = v.safeParse(aspectEnvelope, raw);
    if (!env.success) throw badResponse(`${operation} ${name}`, env.issues);
    const value = v.safeParse(schema, env.output.value);
    if (!value.success) throw badResponse(`${operation} ${name}`, value.issues);
    const props: Record<string, string> = {};
    for (const [k, p] of Object.entries(env.output.systemMetadata?.properties ?? {})) {
      props[k] = String(p);
    }
    const observed = Number(env.output.systemMetadata?.lastObserved);
    return {
      value: value.output,
      version: String(env.output.systemMetadata?.version ?? "1"),
      properties: props,
      ...(Number.isFinite(observed) && observed > 0 ? { lastObserved: observed } : {}),
    };
  };
  const input = aspect(INPUT_ASPECT, inputSchema);
  return {
    urn: entity.output.urn,
    id: idOf(entity.output.urn),
    input: input?.value,
    result: aspect(RESULT_ASPECT, resultSchema),
    signal: aspect(SIGNAL_ASPECT, signalSchema),
  };
}

interface GraphqlError {
  message: string;
  extensions?: { code?: unknown };
}

/** The `errors` of a GraphQL answer (each with a message). */
function graphqlErrors(body: unknown): GraphqlError[] {
  const errors = body && typeof body === "object" ? (body as { errors?: unknown }).errors : [];
  if (!Array.isArray(errors)) return [];
  return errors.map((e) => {
    const o = e && typeof e === "object" ? e as Record<string, unknown> : {};
    const extensions = o.extensions && typeof o.extensions === "object"
      ? o.extensions as { code?: unknown }
      : undefined;
    return { message: String(o.message ?? e), ...(extensions ? { extensions } : {}) };
  });
}
