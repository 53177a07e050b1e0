/**
 * Typed errors with stable codes, and the one place that decides what is retryable.
 *
 * Callers branch on `code`, never on message text. Codes are part of the agent's contract: they
 * appear in logs and in the reports written to GMS, so add new ones with care and never rename.
 */

export type ErrorCode =
  /** Bad command line. */
  | "USAGE"
  /** The configuration file is missing, unreadable or invalid. */
  | "CONFIG_INVALID"
  /** GMS could not be reached (refused, reset, DNS, TLS). */
  | "GMS_UNREACHABLE"
  /** GMS did not answer within `datahub.timeout`. */
  | "GMS_TIMEOUT"
  /** GMS rejected our credentials (401) or our rights (403). */
  | "GMS_AUTH"
  /** GMS asked us to slow down (429). */
  | "GMS_RATE_LIMITED"
  /** GMS failed or is overloaded (5xx). */
  | "GMS_UNAVAILABLE"
  /** GMS rejected the request itself (other 4xx, GraphQL errors). */
  | "GMS_REJECTED"
  /** GMS (or an ingress in front of it) refused the payload as too large (413). */
  | "GMS_TOO_LARGE"
  /** A conditional write lost: the aspect changed since we read it (412, Rest.li 422). */
  | "GMS_PRECONDITION"
  /** GMS answered something we cannot read. */
  | "GMS_BAD_RESPONSE"
  /** The request's recipe cannot be parsed or is not a recipe. */
  | "RECIPE_INVALID"
  /** A `${NAME}` in the recipe has no value in DataHub secrets nor in the environment. */
  | "SECRET_MISSING"
  /** GMS refused to decrypt secrets for our credentials. */
  | "SECRET_ACCESS_DENIED"
  /** A `${NAME}` is not in DataHub, and the agent's environment may not provide it. */
  | "SECRET_NOT_ALLOWED"
  /** A directory or file the agent must own privately is not safe to use. */
  | "PATH_UNSAFE"
  /** The request names a task this agent does not run. */
  | "TASK_UNSUPPORTED"
  /** A task argument (extra_env_vars, …) is malformed. */
  | "ARGUMENT_INVALID"
  /** The datahub CLI could not be started. */
  | "CLI_START_FAILED"
  /** The run's Python environment could not be built (venv runtime: the installer failed). */
  | "RUNTIME_SETUP_FAILED"
  /** The run's prebuilt environment is not there (bundled runtime). */
  | "RUNTIME_MISSING"
  /** The request asks for what ingestion.allowed_source_types / allow_extra_pip refuse, or
   * names a plugin, version or requirement that may not be installed. */
  | "POLICY_REFUSED"
  /** Another agent holds the state directory. */
  | "STATE_LOCKED";

export class AgentError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AgentError";
    this.code = code;
  }
}

/** An error talking to GMS. `status` is the HTTP status when GMS answered. */
export class GmsError extends AgentError {
  readonly status: number | undefined;
  /** What we were doing, e.g. `discover`, `claim`, `writeResult`. */
  readonly operation: string;
  /** From a `Retry-After` header, when GMS sent one. */
  readonly retryAfterMs: number | undefined;
  constructor(
    code: ErrorCode,
    operation: string,
    message: string,
    options?: { status?: number; retryAfterMs?: number; cause?: unknown },
  ) {
    super(code, `${operation}: ${message}`, { cause: options?.cause });
    this.name = "GmsError";
    this.operation = operation;
    this.status = options?.status;
    this.retryAfterMs = options?.retryAfterMs;
  }
}

/** Maps an HTTP status from GMS to our code. */
export function codeForStatus(status: number): ErrorCode {
  if (status === 401 || status === 403) return "GMS_AUTH";
  if (status === 412 || status === 422) return "GMS_PRECONDITION";
  if (status === 429) return "GMS_RATE_LIMITED";
  if (status === 413) return "GMS_TOO_LARGE";
  if (status >= 500) return "GMS_UNAVAILABLE";
  return "GMS_REJECTED";
}

/**
 * The single retryability rule. Retried: connection errors, timeouts, 429 and every 5xx (a GMS
 * that commits and then fails, a restarting pod, a proxy timing out: all transient from here;
 * callers back off with jitter, so a deterministic server bug is not hammered).
 * Not retried: 401/403 (credentials do not fix themselves; logged with what to fix), 412 (a lost
 * race is an answer, not a failure: re-read and decide), 413 (retried smaller, not as is), other
 * 4xx, and every error of a run's own (recipe, secrets, policy, environment setup: the run fails
 * with it; a failed environment build is not cached, so the next run builds it again).
 */
export function isRetryable(err: unknown): boolean {
  if (!(err instanceof AgentError)) return false;
  switch (err.code) {
    case "GMS_UNREACHABLE":
    case "GMS_TIMEOUT":
    case "GMS_RATE_LIMITED":
    case "GMS_UNAVAILABLE":
      return true;
    default:
      return false;
  }
}

/**
 * Whether a failed write may nevertheless have been applied by GMS: the answer was lost (reset,
 * timeout) or spoiled (5xx after the commit), or it was a 412 that our own earlier, seemingly
 * failed attempt caused. Such a write is never judged by its error: the writer re-reads the
 * result and decides by what is stored (see result_write.ts).
 */
export function mayHaveBeenApplied(err: unknown): boolean {
  if (!(err instanceof AgentError)) return false;
  switch (err.code) {
    case "GMS_UNREACHABLE":
    case "GMS_TIMEOUT":
    case "GMS_UNAVAILABLE":
    case "GMS_PRECONDITION":
      return true;
    default:
      return false;
  }
}

/** Turns anything thrown into an Error, keeping the original as `cause`. */
export function coerceError(value: unknown): Error {
  if (value instanceof Error) return value;
  return new Error(typeof value === "string" ? value : `non-error thrown: ${String(value)}`, {
    cause: value,
  });
}

/** Exponential backoff with full jitter: a random delay in [base·2^attempt / 2, base·2^attempt], capped. */
export function backoffDelay(
  attempt: number,
  baseMs: number,
  maxMs: number,
  random = Math.random,
): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + random() * ceiling / 2);
}
