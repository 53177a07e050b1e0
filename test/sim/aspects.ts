// Server-side validation of aspect writes, as GMS runs it before committing (SPEC 3.4, 5.4):
// record-template validation (unknown fields trimmed, required fields enforced), the conditional
// write validator (If-Version-Match / If-(Un)Modified-Since) and the execution-result immutability
// validator. The simulator must be as strict as GMS, otherwise agent bugs pass the tests.

import * as v from "valibot";
import {
  type AspectName,
  deepEqual,
  INPUT,
  type Json,
  RESULT,
  SIGNAL,
  type StoredAspect,
} from "./store.ts";

const long = v.pipe(v.number(), v.integer());

const auditStamp = v.object({
  time: long,
  actor: v.string(),
  impersonator: v.optional(v.string()),
  message: v.optional(v.string()),
});

/** valibot objects strip unknown keys, which matches GMS trimming unknown record fields. */
export const aspectSchemas: Record<AspectName, v.GenericSchema<unknown, Json>> = {
  [INPUT]: v.object({
    task: v.string(),
    args: v.record(v.string(), v.string()),
    executorId: v.string(),
    source: v.object({ type: v.string(), ingestionSource: v.optional(v.string()) }),
    requestedAt: long,
    actorUrn: v.optional(v.string()),
    cliVersionAudit: v.optional(
      v.object({ source: v.string(), serverVersion: v.optional(v.string()) }),
    ),
  }) as v.GenericSchema<unknown, Json>,
  [SIGNAL]: v.object({
    signal: v.string(),
    executorId: v.optional(v.string()),
    createdAt: auditStamp,
  }) as v.GenericSchema<unknown, Json>,
  [RESULT]: v.object({
    status: v.string(),
    report: v.optional(v.string()),
    structuredReport: v.optional(v.object({
      type: v.string(),
      serializedValue: v.string(),
      contentType: v.string(),
    })),
    startTimeMs: v.optional(long),
    durationMs: v.optional(long),
  }) as v.GenericSchema<unknown, Json>,
};

const RECORD_CLASS: Record<AspectName, string> = {
  [INPUT]: "com.linkedin.execution.ExecutionRequestInput",
  [SIGNAL]: "com.linkedin.execution.ExecutionRequestSignal",
  [RESULT]: "com.linkedin.execution.ExecutionRequestResult",
};

/** Statuses after which a result may only move to ROLLING_BACK (ExecutionRequestResultValidator). */
export const IMMUTABLE_STATUSES = new Set(["ABORTED", "CANCELLED", "SUCCESS", "DUPLICATE"]);

export type WriteDecision =
  | { kind: "apply"; value: Json }
  | { kind: "noop"; reason: string }
  | { kind: "reject"; status: 400 | 412; message: string };

/** Record-template validation; returns the trimmed value or a GMS-style error message. */
export function validateValue(
  aspect: AspectName,
  value: unknown,
): { ok: true; value: Json } | { ok: false; message: string } {
  const parsed = v.safeParse(aspectSchemas[aspect], value);
  if (parsed.success) return { ok: true, value: parsed.output };
  const problems = parsed.issues
    .map((i) => `ERROR :: /${(i.path ?? []).map((p) => String(p.key)).join("/")} :: ${i.message}`)
    .join("\n");
  return {
    ok: false,
    message: `Failed to validate record with class ${RECORD_CLASS[aspect]}: ${problems}`,
  };
}

/**
 * Decides what GMS would do with one aspect write given the currently stored aspect. Order matters
 * and follows GMS: schema validation, then the conditional-write check, then the result validator,
 * and only then the "aspect has not changed" no-op.
 */
export function decideWrite(
  urn: string,
  aspect: AspectName,
  rawValue: unknown,
  headers: Record<string, string>,
  current: StoredAspect | undefined,
): WriteDecision {
  const validated = validateValue(aspect, rawValue);
  if (!validated.ok) return { kind: "reject", status: 400, message: validated.message };
  const value = validated.value;

  const expected = headerValue(headers, "If-Version-Match");
  if (expected !== undefined) {
    const actual = current ? String(current.version) : "-1";
    if (expected !== actual) {
      return {
        kind: "reject",
        status: 412,
        message: `Expected version ${expected}, actual version ${actual}`,
      };
    }
  }
  const lastModified = current?.modifiedAt ?? Number.MIN_SAFE_INTEGER;
  const ifModifiedSince = headerValue(headers, "If-Modified-Since");
  if (ifModifiedSince !== undefined) {
    const t = Date.parse(ifModifiedSince);
    if (!(lastModified > t)) {
      return {
        kind: "reject",
        status: 412,
        message: `Item last modified ${lastModified} <= ${t} (epoch ms)`,
      };
    }
  }
  const ifUnmodifiedSince = headerValue(headers, "If-Unmodified-Since");
  if (ifUnmodifiedSince !== undefined) {
    const t = Date.parse(ifUnmodifiedSince);
    if (lastModified > t) {
      return {
        kind: "reject",
        status: 412,
        message: `Item last modified ${lastModified} > ${t} (epoch ms)`,
      };
    }
  }

  if (aspect === RESULT && current) {
    const oldStatus = String(current.value.status);
    const newStatus = String(value.status);
    if (IMMUTABLE_STATUSES.has(oldStatus)) {
      if (newStatus === oldStatus) {
        return { kind: "noop", reason: `Ignored update to terminal status ${oldStatus}` };
      }
      if (newStatus !== "ROLLING_BACK") {
        return {
          kind: "reject",
          status: 400,
          message:
            `Invalid update to immutable state for aspect ${RESULT}. Execution urn: ${urn} Requested status: ${oldStatus} => ${newStatus}. Denied update.`,
        };
      }
    }
  }

  if (current && deepEqual(current.value, value)) {
    return { kind: "noop", reason: "Aspect has not changed" };
  }
  return { kind: "apply", value };
}

/** MCP header lookup; GMS keys them as HTTP header names, which are case-insensitive. */
export function headerValue(headers: Record<string, string>, name: string): string | undefined {
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name.toLowerCase());
  return key === undefined ? undefined : String(headers[key]);
}
