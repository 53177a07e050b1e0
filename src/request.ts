/**
 * The execution request as DataHub stores it (entity `dataHubExecutionRequest`, SPEC §1):
 * schemas (valibot) for the three aspects we read, and the statuses we write.
 */
import * as v from "valibot";

export const ENTITY = "dataHubExecutionRequest";
export const INPUT_ASPECT = "dataHubExecutionRequestInput";
export const RESULT_ASPECT = "dataHubExecutionRequestResult";
export const SIGNAL_ASPECT = "dataHubExecutionRequestSignal";
export const URN_PREFIX = "urn:li:dataHubExecutionRequest:";

/** Statuses DataHub knows (SPEC §1.1). Terminal ones end a request. */
export type Status =
  | "RUNNING"
  | "SUCCESS"
  | "FAILURE"
  | "TIMEOUT"
  | "CANCELLED"
  | "ABORTED"
  | "DUPLICATE"
  | "ROLLING_BACK"
  | "ROLLED_BACK"
  | "ROLLBACK_FAILED";

export type TerminalStatus =
  | "SUCCESS"
  | "FAILURE"
  | "TIMEOUT"
  | "CANCELLED"
  | "ABORTED"
  | "DUPLICATE";

export const inputSchema = v.object({
  task: v.string(),
  args: v.optional(
    v.record(v.string(), v.pipe(v.nullable(v.string()), v.transform((a) => a ?? ""))),
    {},
  ),
  executorId: v.optional(v.string()),
  source: v.optional(v.object({ type: v.string(), ingestionSource: v.optional(v.string()) })),
  requestedAt: v.optional(v.number()),
  actorUrn: v.optional(v.string()),
});
export type RequestInput = v.InferOutput<typeof inputSchema>;

export const structuredReportSchema = v.object({
  type: v.string(),
  serializedValue: v.string(),
  contentType: v.string(),
});
export type StructuredReport = v.InferOutput<typeof structuredReportSchema>;

export const resultSchema = v.object({
  status: v.string(),
  report: v.optional(v.string()),
  structuredReport: v.optional(structuredReportSchema),
  startTimeMs: v.optional(v.number()),
  durationMs: v.optional(v.number()),
});
export type ResultValue = v.InferOutput<typeof resultSchema>;

export const signalSchema = v.object({
  signal: v.string(),
  executorId: v.optional(v.string()),
  createdAt: v.optional(v.object({ time: v.number(), actor: v.optional(v.string()) })),
});
export type SignalValue = v.InferOutput<typeof signalSchema>;

/** An aspect value with the version GMS stores for it (the basis of conditional writes). */
export interface Versioned<T> {
  value: T;
  /** `systemMetadata.version` as GMS returns it ("1", "2", …). */
  version: string;
  /** `systemMetadata.properties`, where the agent records who holds a claim. */
  properties: Record<string, string>;
  /** `systemMetadata.lastObserved`: when GMS stored it, by GMS's clock (when GMS says). */
  lastObserved?: number;
}

/** A request re-read from GMS's database (consistent, unlike search). */
export interface RequestState {
  urn: string;
  id: string;
  input: RequestInput | undefined;
  result: Versioned<ResultValue> | undefined;
  signal: Versioned<SignalValue> | undefined;
}

/** What discovery found (from search, possibly stale). */
export interface Candidate {
  urn: string;
  task: string;
  executorId: string;
  requestedAt: number | undefined;
  /** The ingestion source it runs (urn), when it has one (TEST_CONNECTION has none). */
  ingestionSource?: string;
  /** Started by the source's schedule (SCHEDULED_INGESTION_SOURCE), not by a person. */
  scheduled?: boolean;
}

export function idOf(urn: string): string {
  return urn.startsWith(URN_PREFIX) ? urn.slice(URN_PREFIX.length) : urn;
}

const IMMUTABLE: ReadonlySet<string> = new Set(["ABORTED", "CANCELLED", "SUCCESS", "DUPLICATE"]);

/** GMS refuses to change these statuses (SPEC §3.4). */
export function isImmutableStatus(status: string): boolean {
  return IMMUTABLE.has(status);
}

/** A status after which nothing more is written for the request. */
export function isTerminalStatus(status: string): boolean {
  return status !== "RUNNING" && status !== "ROLLING_BACK";
}
