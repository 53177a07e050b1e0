/**
 * Discovery: the one query per poll that finds pending requests of an executor id (and a page of
 * its RUNNING ones for the reaper), in the two forms GMS versions understand (SPEC §2.3–2.4):
 * `searchAcrossEntities` (v1.2.0+) and `listExecutionRequests` (v1.1.x, executorId checked here).
 */
import * as v from "valibot";
import type { Candidate } from "../request.ts";
import { GmsError } from "../errors.ts";
import { DISCOVER_LIST, DISCOVER_SEARCH } from "./operations.ts";

/** Sends one GraphQL document (GmsClient.graphql). */
export type GraphqlQuery = (
  operation: string,
  document: string,
  variables: Record<string, unknown>,
) => Promise<unknown>;

/** A request someone holds (status RUNNING), as search sees it. */
export interface RunningSummary {
  urn: string;
  executorId: string;
  startTimeMs: number | undefined;
  /** Heartbeats write durationMs = time since start, so start + duration ≈ the last heartbeat. */
  durationMs: number | undefined;
  /** The ingestion source it runs, when search shows one. */
  ingestionSource?: string;
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

const searchEntity = v.object({
  urn: v.string(),
  input: v.nullish(v.object({
    task: v.string(),
    executorId: v.nullish(v.string()),
    requestedAt: v.nullish(v.number()),
    source: v.nullish(v.object({
      type: v.nullish(v.string()),
      ingestionSource: v.nullish(v.string()),
    })),
  })),
  result: v.nullish(v.object({
    status: v.string(),
    startTimeMs: v.nullish(v.number()),
    durationMs: v.nullish(v.number()),
  })),
});
type SearchEntity = v.InferOutput<typeof searchEntity>;
const searchPage = v.nullish(v.object({
  total: v.nullish(v.number()),
  searchResults: v.array(v.object({
    entity: v.union([searchEntity, v.object({ urn: v.string() })]),
  })),
}));
const searchAnswer = v.object({ pending: searchPage, running: searchPage });
const listPage = v.nullish(v.object({
  total: v.nullish(v.number()),
  executionRequests: v.array(searchEntity),
}));
const listAnswer = v.object({ pending: listPage, running: listPage });

export async function discoverSearch(
  query: GraphqlQuery,
  executorId: string,
  pages: DiscoveryPages,
): Promise<Discovery> {
  const data = await query(
    "discover",
    DISCOVER_SEARCH,
    searchVariables(executorId, pages),
  );
  const parsed = v.safeParse(searchAnswer, data);
  if (!parsed.success) throw badResponse("discover", parsed.issues);
  const entities = (page: v.InferOutput<typeof searchPage>) =>
    (page?.searchResults ?? []).map((r) => r.entity).filter((e): e is SearchEntity => "input" in e);
  const { pending, running } = parsed.output;
  return toDiscovery(entities(pending), entities(running), executorId, {
    pending: pageInfo(pages.pendingStart, pending?.searchResults.length, pending?.total),
    running: pageInfo(pages.runningStart, running?.searchResults.length, running?.total),
  });
}

export async function discoverList(
  query: GraphqlQuery,
  executorId: string,
  pages: DiscoveryPages,
): Promise<Discovery> {
  const data = await query("discover", DISCOVER_LIST, listVariables(pages));
  const parsed = v.safeParse(listAnswer, data);
  if (!parsed.success) throw badResponse("discover", parsed.issues);
  const { pending, running } = parsed.output;
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
  pending: SearchEntity[],
  running: SearchEntity[],
  executorId: string,
  pages: Discovery["pages"],
): Discovery {
  const routedTo = (e: SearchEntity) => e.input?.executorId || "default";
  return {
    pending: pending
      .filter((e) => !e.result && e.input && routedTo(e) === executorId)
      .map((e) => ({
        urn: e.urn,
        task: e.input!.task,
        executorId: routedTo(e),
        requestedAt: e.input!.requestedAt ?? undefined,
        ...sourceOf(e),
      })),
    // Search lags, but entities come from the database: a pending hit claimed meanwhile is
    // RUNNING now (schedule.ts sees its ingestion source run).
    running: [...running, ...pending.filter((e) => !running.some((r) => r.urn === e.urn))]
      .filter((e) => e.result?.status === "RUNNING" && routedTo(e) === executorId)
      .map((e) => ({
        urn: e.urn,
        executorId: routedTo(e),
        startTimeMs: e.result?.startTimeMs ?? undefined,
        durationMs: e.result?.durationMs ?? undefined,
        ingestionSource: e.input?.source?.ingestionSource ?? undefined,
      })),
    pages,
  };
}

/** The ingestion source of a request, and whether its schedule started it. */
function sourceOf(
  e: SearchEntity,
): Pick<Candidate, "ingestionSource" | "scheduled"> {
  const source = e.input?.source;
  if (!source?.ingestionSource) return {};
  return {
    ingestionSource: source.ingestionSource,
    scheduled: source.type === "SCHEDULED_INGESTION_SOURCE",
  };
}

/** An answer that does not have the shape we read. */
export function badResponse(
  operation: string,
  issues: readonly v.BaseIssue<unknown>[],
): GmsError {
  const first = issues[0];
  const at = first?.path?.map((p) => String(p.key)).join(".") || "(root)";
  return new GmsError(
    "GMS_BAD_RESPONSE",
    operation,
    `unexpected answer from GMS${first ? ` at ${at}: ${first.message}` : ""}`,
  );
}
