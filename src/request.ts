/**
 * The execution request as DataHub stores it (entity `dataHubExecutionRequest`, SPEC §1): zod
 * schemas for the three aspects we read, and the statuses we write.
 */
import { z } from "zod";

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

export const inputSchema = z.object({
  task: z.string(),
  args: z.record(z.string(), z.string().nullable().transform((v) => v ?? "")).default({}),
  executorId: z.string().optional(),
  source: z.object({ type: z.string(), ingestionSource: z.string().optional() }).optional(),
  requestedAt: z.number().optional(),
  actorUrn: z.string().optional(),
});
export type RequestInput = z.infer<typeof inputSchema>;

export const structuredReportSchema = z.object({
  type: z.string(),
  serializedValue: z.string(),
  contentType: z.string(),
});
export type StructuredReport = z.infer<typeof structuredReportSchema>;

export const resultSchema = z.object({
  status: z.string(),
  report: z.string().optional(),
  structuredReport: structuredReportSchema.optional(),
  startTimeMs: z.number().optional(),
  durationMs: z.number().optional(),
});
export type ResultValue = z.infer<typeof resultSchema>;

export const signalSchema = z.object({
  signal: z.string(),
  executorId: z.string().optional(),
  createdAt: z.object({ time: z.number(), actor: z.string().optional() }).optional(),
});
export type SignalValue = z.infer<typeof signalSchema>;

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
