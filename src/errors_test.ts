import assert from "node:assert/strict";
import {
  AgentError,
  backoffDelay,
  codeForStatus,
  coerceError,
  type ErrorCode,
  GmsError,
  isRetryable,
  mayHaveBeenApplied,
} from "./errors.ts";

function httpError(status: number): GmsError {
  return new GmsError(codeForStatus(status), "op", `HTTP ${status}`, { status });
}

Deno.test("codeForStatus maps HTTP statuses to stable codes", () => {
  const table: [number, ErrorCode][] = [
    [400, "GMS_REJECTED"],
    [401, "GMS_AUTH"],
    [403, "GMS_AUTH"],
    [404, "GMS_REJECTED"],
    [409, "GMS_REJECTED"],
    [412, "GMS_PRECONDITION"],
    [422, "GMS_PRECONDITION"],
    [413, "GMS_TOO_LARGE"],
    [429, "GMS_RATE_LIMITED"],
    [500, "GMS_UNAVAILABLE"],
    [502, "GMS_UNAVAILABLE"],
    [503, "GMS_UNAVAILABLE"],
    [504, "GMS_UNAVAILABLE"],
  ];
  for (const [status, code] of table) assert.equal(codeForStatus(status), code, `HTTP ${status}`);
});

Deno.test("isRetryable: connection errors, timeouts, 429 and every 5xx are retried", () => {
  assert.equal(isRetryable(new GmsError("GMS_UNREACHABLE", "claim", "ECONNREFUSED")), true);
  assert.equal(isRetryable(new GmsError("GMS_TIMEOUT", "claim", "no answer")), true);
  for (const status of [429, 500, 502, 503, 504, 507]) {
    assert.equal(isRetryable(httpError(status)), true, `HTTP ${status}`);
  }
  const rateLimited = new GmsError("GMS_RATE_LIMITED", "op", "slow down", {
    status: 429,
    retryAfterMs: 2_000,
  });
  assert.equal(isRetryable(rateLimited), true);
});

Deno.test("isRetryable: 400/401/403/404/412/413/422 are not retried", () => {
  for (const status of [400, 401, 403, 404, 412, 413, 422]) {
    assert.equal(isRetryable(httpError(status)), false, `HTTP ${status}`);
  }
});

Deno.test("mayHaveBeenApplied: lost or spoiled answers and 412 are re-read, refusals are not", () => {
  assert.equal(mayHaveBeenApplied(new GmsError("GMS_UNREACHABLE", "w", "ECONNRESET")), true);
  assert.equal(mayHaveBeenApplied(new GmsError("GMS_TIMEOUT", "w", "no answer")), true);
  for (const status of [500, 502, 503, 412, 422]) {
    assert.equal(mayHaveBeenApplied(httpError(status)), true, `HTTP ${status}`);
  }
  for (const status of [400, 401, 403, 404, 413, 429]) {
    assert.equal(mayHaveBeenApplied(httpError(status)), false, `HTTP ${status}`);
  }
  assert.equal(mayHaveBeenApplied(new Error("boom")), false);
});

Deno.test("isRetryable: non-GMS errors and non-errors are not retried", () => {
  assert.equal(isRetryable(new Error("boom")), false);
  assert.equal(isRetryable(new TypeError("fetch failed")), false);
  assert.equal(isRetryable(new AgentError("CONFIG_INVALID", "bad")), false);
  assert.equal(isRetryable(new AgentError("SECRET_MISSING", "x")), false);
  assert.equal(isRetryable("GMS_TIMEOUT"), false);
  assert.equal(isRetryable(undefined), false);
  assert.equal(isRetryable({ code: "GMS_TIMEOUT" }), false);
});

Deno.test("GmsError carries code, operation, status and retryAfterMs", () => {
  const cause = new Error("root");
  const err = new GmsError("GMS_RATE_LIMITED", "writeResult", "HTTP 429", {
    status: 429,
    retryAfterMs: 1_500,
    cause,
  });
  assert.ok(err instanceof AgentError);
  assert.ok(err instanceof Error);
  assert.equal(err.name, "GmsError");
  assert.equal(err.code, "GMS_RATE_LIMITED");
  assert.equal(err.operation, "writeResult");
  assert.equal(err.status, 429);
  assert.equal(err.retryAfterMs, 1_500);
  assert.equal(err.message, "writeResult: HTTP 429");
  assert.equal(err.cause, cause);
  const plain = new GmsError("GMS_TIMEOUT", "claim", "slow");
  assert.equal(plain.status, undefined);
  assert.equal(plain.retryAfterMs, undefined);
});

Deno.test("backoffDelay: full jitter stays within [ceiling/2, ceiling]", () => {
  // random() = 0 gives the lower bound, random() → 1 the upper bound.
  assert.equal(backoffDelay(0, 100, 10_000, () => 0), 50);
  assert.equal(backoffDelay(0, 100, 10_000, () => 1), 100);
  assert.equal(backoffDelay(1, 100, 10_000, () => 0), 100);
  assert.equal(backoffDelay(1, 100, 10_000, () => 1), 200);
  assert.equal(backoffDelay(3, 100, 10_000, () => 0), 400);
  assert.equal(backoffDelay(3, 100, 10_000, () => 1), 800);
  assert.equal(backoffDelay(3, 100, 10_000, () => 0.5), 600);
});

Deno.test("backoffDelay: capped at maxMs, even for huge attempt counts", () => {
  assert.equal(backoffDelay(10, 100, 5_000, () => 1), 5_000);
  assert.equal(backoffDelay(10, 100, 5_000, () => 0), 2_500);
  for (const attempt of [31, 100, 1_000, Number.MAX_SAFE_INTEGER]) {
    const d = backoffDelay(attempt, 1_000, 60_000, () => 0.999);
    assert.ok(Number.isFinite(d), `attempt ${attempt}: ${d}`);
    assert.ok(d >= 30_000 && d <= 60_000, `attempt ${attempt}: ${d}`);
  }
});

Deno.test("backoffDelay: grows with the attempt until the cap", () => {
  let previous = 0;
  for (let attempt = 0; attempt < 8; attempt++) {
    const d = backoffDelay(attempt, 10, 1_000, () => 1);
    assert.ok(d >= previous, `attempt ${attempt}: ${d} < ${previous}`);
    assert.ok(d <= 1_000);
    previous = d;
  }
  assert.equal(previous, 1_000);
});

Deno.test("backoffDelay: with Math.random stays within bounds", () => {
  for (let i = 0; i < 200; i++) {
    const d = backoffDelay(2, 100, 10_000);
    assert.ok(d >= 200 && d <= 400, String(d));
    assert.equal(d, Math.round(d));
  }
});

Deno.test("coerceError: errors pass through, other values are wrapped with a cause", () => {
  const e = new RangeError("x");
  assert.equal(coerceError(e), e);
  const agentErr = new AgentError("USAGE", "bad flag");
  assert.equal(coerceError(agentErr), agentErr);

  const fromString = coerceError("plain message");
  assert.ok(fromString instanceof Error);
  assert.equal(fromString.message, "plain message");
  assert.equal(fromString.cause, "plain message");

  const obj = { reason: 1 };
  const fromObject = coerceError(obj);
  assert.ok(fromObject instanceof Error);
  assert.equal(fromObject.message, "non-error thrown: [object Object]");
  assert.equal(fromObject.cause, obj);

  assert.equal(coerceError(42).message, "non-error thrown: 42");
  assert.equal(coerceError(undefined).message, "non-error thrown: undefined");
  assert.equal(coerceError(null).message, "non-error thrown: null");
});
