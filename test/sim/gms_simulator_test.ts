// Tests of the GMS simulator over real HTTP: if the double drifts from GMS, every integration test
// built on it lies, so these pin the behaviours the agent relies on (SPEC 2.4, 3.4, 5.3, 5.4).

import assert from "node:assert/strict";
import { GmsSimulator, type SimulatorOptions } from "./gms_simulator.ts";

const INPUT = "dataHubExecutionRequestInput";
const SIGNAL = "dataHubExecutionRequestSignal";
const RESULT = "dataHubExecutionRequestResult";
const SYSTEM_AUTH = "Basic __datahub_system:JohnSnowKnowsNothing";

const PENDING_QUERY = `
query pendingExecutionRequests($executorId: String!, $count: Int!) {
  searchAcrossEntities(input: {
    types: [EXECUTION_REQUEST], query: "*", start: 0, count: $count,
    orFilters: [{ and: [
      { field: "executorId", values: [$executorId] },
      { field: "executionResultStatus", condition: EXISTS, negated: true }
    ] }],
    searchFlags: { skipCache: true, skipAggregates: true, skipHighlighting: true },
    sortInput: { sortCriteria: [{ field: "requestTimeMs", sortOrder: ASCENDING }] }
  }) {
    total
    searchResults { entity { urn ... on ExecutionRequest {
      id
      input { task executorId requestedAt source { type ingestionSource } arguments { key value } }
      result { status startTimeMs }
    } } }
  }
}`;

const LIST_QUERY = `
query listRequests($input: ListExecutionRequestsInput!) {
  listExecutionRequests(input: $input) {
    total
    executionRequests { urn id input { executorId requestedAt } result { status } }
  }
}`;

interface Reply {
  status: number;
  headers: Headers;
  // deno-lint-ignore no-explicit-any
  body: any;
}

async function call(
  sim: GmsSimulator,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Reply> {
  const res = await fetch(sim.url + path, {
    method,
    headers: {
      authorization: `Bearer ${sim.token}`,
      "content-type": "application/json",
      ...headers,
    },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // plain-text answers (e.g. /health) stay text
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

function graphql(
  sim: GmsSimulator,
  query: string,
  variables: Record<string, unknown> = {},
  headers: Record<string, string> = {},
): Promise<Reply> {
  return call(sim, "POST", "/api/graphql", { query, variables }, headers);
}

async function pending(sim: GmsSimulator, executorId = "default") {
  const r = await graphql(sim, PENDING_QUERY, { executorId, count: 50 });
  assert.equal(r.status, 200);
  assert.equal(r.body.errors, undefined, JSON.stringify(r.body.errors));
  return r.body.data.searchAcrossEntities as {
    total: number;
    // deno-lint-ignore no-explicit-any
    searchResults: { entity: any }[];
  };
}

function writeResult(
  sim: GmsSimulator,
  urn: string,
  value: unknown,
  headers?: Record<string, string>,
  query = "?async=false&systemMetadata=true",
): Promise<Reply> {
  return call(sim, "POST", `/openapi/v3/entity/dataHubExecutionRequest${query}`, [
    { urn, [RESULT]: { value, ...(headers ? { headers } : {}) } },
  ]);
}

function entityPath(urn: string, query = "?systemMetadata=true"): string {
  return `/openapi/v3/entity/datahubexecutionrequest/${encodeURIComponent(urn)}${query}`;
}

async function withSim(opts: SimulatorOptions, fn: (sim: GmsSimulator) => Promise<void>) {
  await using sim = await GmsSimulator.start(opts);
  await fn(sim);
}

Deno.test("auth: Bearer token and literal Basic system client are accepted, anything else 401", async () => {
  await using sim = await GmsSimulator.start();
  const health = await call(sim, "GET", "/health", undefined, { authorization: "" });
  assert.equal(health.status, 200);

  const none = await call(sim, "GET", "/config", undefined, { authorization: "" });
  assert.equal(none.status, 401);
  assert.deepEqual(none.body, { error: "Unauthorized" });
  const wrong = await call(sim, "GET", "/config", undefined, { authorization: "Bearer nope" });
  assert.equal(wrong.status, 401);
  // GMS takes the system credentials literally; base64 (standard Basic auth) must not work.
  const b64 = await call(sim, "GET", "/config", undefined, {
    authorization: "Basic " + btoa("__datahub_system:JohnSnowKnowsNothing"),
  });
  assert.equal(b64.status, 401);

  const bearer = await call(sim, "GET", "/config");
  assert.equal(bearer.status, 200);
  assert.deepEqual(bearer.body, {
    versions: { "acryldata/datahub": { version: "v1.3.0" } },
    noCode: "true",
  });
  const system = await call(sim, "GET", "/config", undefined, { authorization: SYSTEM_AUTH });
  assert.equal(system.status, 200);

  const log = sim.requests();
  assert.deepEqual(log.map((e) => [e.path, e.status, e.auth]), [
    ["/health", 200, undefined],
    ["/config", 401, undefined],
    ["/config", 401, undefined],
    ["/config", 401, undefined],
    ["/config", 200, "bearer"],
    ["/config", 200, "system"],
  ]);
  assert.ok(log[4]!.bytesOut > 0);
});

Deno.test("discovery: pending query finds requests of its executor, oldest first, until a result exists", async () => {
  await using sim = await GmsSimulator.start();
  const newer = sim.createRequest({ requestedAt: 2_000, args: { recipe: "{}" } });
  const older = sim.createRequest({ requestedAt: 1_000 });
  const other = sim.createRequest({ requestedAt: 1_500, executorId: "pool-b" });
  sim.createRequest({ requestedAt: 1_200, executorId: null }); // no executorId: matches nobody

  const found = await pending(sim);
  assert.equal(found.total, 2);
  assert.deepEqual(found.searchResults.map((r) => r.entity.urn), [older, newer]);
  const entity = found.searchResults[1]!.entity;
  assert.equal(entity.id, newer.split(":").pop());
  assert.deepEqual(entity.input, {
    task: "RUN_INGEST",
    executorId: "default",
    requestedAt: 2_000,
    source: {
      type: "MANUAL_INGESTION_SOURCE",
      ingestionSource: `urn:li:dataHubIngestionSource:sim-source-${newer.split(":").pop()}`,
    },
    arguments: [{ key: "recipe", value: "{}" }],
  });
  assert.equal(entity.result, null);

  const claimed = await writeResult(sim, older, { status: "RUNNING", startTimeMs: 5 });
  assert.equal(claimed.status, 200);
  assert.deepEqual((await pending(sim)).searchResults.map((r) => r.entity.urn), [newer]);
  assert.deepEqual((await pending(sim, "pool-b")).searchResults.map((r) => r.entity.urn), [other]);
  assert.equal((await pending(sim, "nobody")).total, 0);
});

Deno.test("search lag: a claimed request still looks pending in search while OpenAPI shows the truth", async () => {
  await using sim = await GmsSimulator.start({ searchLagMs: 300 });
  const urn = sim.createRequest();
  assert.equal((await pending(sim)).total, 0, "the index must not see the request yet");
  const start = Date.now();
  let seen = 0;
  while (seen === 0 && Date.now() - start < 2_000) {
    seen = (await pending(sim)).total;
    if (seen === 0) await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(seen, 1);

  const w = await writeResult(sim, urn, { status: "RUNNING", startTimeMs: 1 }, {
    "If-Version-Match": "-1",
  });
  assert.equal(w.status, 200);
  const stale = await pending(sim);
  assert.deepEqual(stale.searchResults.map((r) => r.entity.urn), [urn]);
  // Hits come from the index but entities are hydrated from the DB: the result is already there.
  assert.deepEqual(stale.searchResults[0]!.entity.result, { status: "RUNNING", startTimeMs: 1 });
  const truth = await call(sim, "GET", entityPath(urn));
  assert.equal(truth.body[RESULT].value.status, "RUNNING");

  const begun = Date.now();
  while ((await pending(sim)).total !== 0) {
    assert.ok(Date.now() - begun < 2_000, "index never caught up");
    await new Promise((r) => setTimeout(r, 20));
  }
});

Deno.test("OpenAPI GET: aspects with string versions, aspect selection, 404, case-insensitive entity", async () => {
  await using sim = await GmsSimulator.start();
  const urn = sim.createRequest({ id: "abc", requestedAt: 42 });
  sim.sendSignal(urn, "KILL", { executorId: "default", time: 7, actor: "urn:li:corpuser:admin" });

  const some = await call(
    sim,
    "GET",
    entityPath(urn, `?systemMetadata=true&aspects=${INPUT}&aspects=${RESULT}`),
  );
  assert.equal(some.status, 200);
  assert.deepEqual(Object.keys(some.body).sort(), [INPUT, "urn"]);
  assert.equal(some.body.urn, "urn:li:dataHubExecutionRequest:abc");
  assert.equal(some.body[INPUT].value.requestedAt, 42);
  assert.equal(some.body[INPUT].systemMetadata.version, "1");
  assert.equal(typeof some.body[INPUT].systemMetadata.lastObserved, "number");

  sim.sendSignal(urn, "KILL", { time: 8 });
  const all = await call(
    sim,
    "GET",
    `/openapi/v3/entity/dataHubExecutionRequest/${urn}?systemMetadata=true`,
  );
  assert.equal(all.status, 200);
  assert.deepEqual(all.body[SIGNAL].value, {
    signal: "KILL",
    createdAt: { time: 8, actor: "urn:li:corpuser:datahub" },
  });
  assert.equal(all.body[SIGNAL].systemMetadata.version, "2");

  const noMeta = await call(sim, "GET", entityPath(urn, ""));
  assert.equal(noMeta.body[INPUT].systemMetadata, undefined);

  const missing = await call(sim, "GET", entityPath("urn:li:dataHubExecutionRequest:nope"));
  assert.equal(missing.status, 404);
  assert.deepEqual(missing.body, { error: "Not Found" });
});

Deno.test("conditional write: If-Version-Match -1 claims once; the loser gets 412", async () => {
  await using sim = await GmsSimulator.start();
  const urn = sim.createRequest();
  const claim = { status: "RUNNING", startTimeMs: 100 };

  const first = await writeResult(sim, urn, claim, { "If-Version-Match": "-1" });
  assert.equal(first.status, 200);
  assert.equal(first.body[0].urn, urn);
  assert.deepEqual(first.body[0][RESULT].value, claim);
  assert.equal(first.body[0][RESULT].systemMetadata.version, "1");

  const second = await writeResult(sim, urn, { ...claim, startTimeMs: 101 }, {
    "If-Version-Match": "-1",
  });
  assert.equal(second.status, 412);
  assert.deepEqual(second.body, {
    error: "Precondition Error",
    message: "Expected version -1, actual version 1",
  });
  assert.deepEqual(sim.result(urn), { value: claim, version: 1 });
  assert.equal(sim.rejectedWrites(urn).length, 1);
  assert.equal(sim.rejectedWrites(urn)[0]!.status, 412);

  const heartbeat = await writeResult(sim, urn, { ...claim, report: "step 1" }, {
    "If-Version-Match": "1",
  });
  assert.equal(heartbeat.status, 200);
  assert.equal(heartbeat.body[0][RESULT].systemMetadata.version, "2");
  const writes = sim.resultWrites(urn);
  assert.deepEqual(writes.map((w) => w.version), [1, 2]);
  assert.deepEqual(writes[0]!.headers, { "If-Version-Match": "-1" });
  assert.ok(writes[0]!.bytes > 20);
});

Deno.test("async writes (the default) answer 202 and silently drop invalid ones", async () => {
  await using sim = await GmsSimulator.start();
  const urn = sim.createRequest();
  const invalid = await writeResult(sim, urn, { startTimeMs: 1 }, undefined, "");
  assert.equal(invalid.status, 202);
  const valid = await writeResult(
    sim,
    urn,
    { status: "RUNNING" },
    undefined,
    "?systemMetadata=true",
  );
  assert.equal(valid.status, 202);
  assert.equal(sim.result(urn), undefined, "async writes must not be applied synchronously");

  const applied = await sim.waitFor(() => sim.result(urn), 2_000, "async result");
  assert.deepEqual(applied, { value: { status: "RUNNING" }, version: 1 });
  const rejected = sim.rejectedWrites(urn);
  assert.equal(rejected.length, 1);
  assert.equal(rejected[0]!.async, true);
  assert.match(rejected[0]!.message, /status/);

  // Synchronously, the same invalid write is reported.
  const sync = await writeResult(sim, urn, { startTimeMs: 1 });
  assert.equal(sync.status, 400);
  assert.equal(sync.body.error, "Validation Error");
});

Deno.test("result immutability: terminal status cannot change, same status is a no-op", async () => {
  await using sim = await GmsSimulator.start();
  const urn = sim.createRequest();
  const done = await writeResult(sim, urn, { status: "SUCCESS", durationMs: 10, extra: "x" });
  assert.equal(done.status, 200);
  // Unknown fields are trimmed, as GMS does with record templates.
  assert.deepEqual(sim.result(urn), { value: { status: "SUCCESS", durationMs: 10 }, version: 1 });

  const late = await writeResult(sim, urn, { status: "RUNNING" });
  assert.equal(late.status, 400);
  assert.deepEqual(late.body, {
    error: "Validation Error",
    message:
      `Invalid update to immutable state for aspect ${RESULT}. Execution urn: ${urn} Requested status: SUCCESS => RUNNING. Denied update.`,
  });

  const same = await writeResult(sim, urn, { status: "SUCCESS", durationMs: 99 });
  assert.equal(same.status, 200);
  assert.deepEqual(sim.result(urn), { value: { status: "SUCCESS", durationMs: 10 }, version: 1 });
  assert.equal(sim.resultWrites(urn).length, 1);

  const rollback = await writeResult(sim, urn, { status: "ROLLING_BACK" });
  assert.equal(rollback.status, 200);
  assert.equal(sim.result(urn)?.version, 2);

  // FAILURE is not immutable.
  const other = sim.createRequest();
  sim.setResult(other, { status: "FAILURE" });
  assert.equal((await writeResult(sim, other, { status: "RUNNING" })).status, 200);
});

Deno.test("identical re-write does not create a new version; a batch is all-or-nothing", async () => {
  await using sim = await GmsSimulator.start();
  const a = sim.createRequest();
  const b = sim.createRequest();
  const value = { status: "RUNNING", startTimeMs: 3 };
  assert.equal((await writeResult(sim, a, value)).status, 200);
  const again = await writeResult(sim, a, { startTimeMs: 3, status: "RUNNING" });
  assert.equal(again.status, 200);
  assert.equal(again.body[0][RESULT].systemMetadata.version, "1");
  assert.equal(sim.resultWrites(a).length, 1);

  const batch = await call(
    sim,
    "POST",
    "/openapi/v3/entity/dataHubExecutionRequest?async=false",
    [
      { urn: b, [RESULT]: { value: { status: "RUNNING" } } },
      { urn: a, [RESULT]: { value: { status: "RUNNING" }, headers: { "If-Version-Match": "7" } } },
    ],
  );
  assert.equal(batch.status, 412);
  assert.equal(sim.result(b), undefined, "no write of a failed batch may be applied");
});

Deno.test("batchGet returns requested aspects of existing entities and leaves out missing ones", async () => {
  await using sim = await GmsSimulator.start();
  const a = sim.createRequest();
  const b = sim.createRequest();
  sim.setResult(b, { status: "RUNNING" });
  const r = await call(
    sim,
    "POST",
    "/openapi/v3/entity/dataHubExecutionRequest/batchGet?systemMetadata=true",
    [
      { urn: a, [INPUT]: {}, [RESULT]: {} },
      { urn: "urn:li:dataHubExecutionRequest:missing", [RESULT]: {} },
      { urn: b, [RESULT]: {} },
    ],
  );
  assert.equal(r.status, 200);
  assert.equal(r.body.length, 2);
  assert.deepEqual(Object.keys(r.body[0]).sort(), [INPUT, "urn"]);
  assert.equal(r.body[0].urn, a);
  assert.deepEqual(Object.keys(r.body[1]).sort(), [RESULT, "urn"]);
  assert.equal(r.body[1][RESULT].systemMetadata.version, "1");
});

Deno.test("v1.1.0: inline fragment on ExecutionRequest fails validation; executorId filters are ignored", async () => {
  await withSim({ version: "v1.1.0" }, async (sim) => {
    const mine = sim.createRequest({ requestedAt: 1 });
    const theirs = sim.createRequest({ requestedAt: 2, executorId: "pool-b" });
    const cli = sim.createRequest({ requestedAt: 3, source: { type: "MANUAL_TEST_CONNECTION" } });

    const search = await graphql(sim, PENDING_QUERY, { executorId: "default", count: 10 });
    assert.equal(search.status, 200);
    assert.equal(search.body.data, undefined);
    assert.match(search.body.errors[0].message, /ExecutionRequest/);
    assert.match(search.body.errors[0].message, /Entity/);

    const list = await graphql(sim, LIST_QUERY, {
      input: { start: 0, count: 10, filters: [{ field: "executorId", values: ["default"] }] },
    });
    assert.equal(list.body.errors, undefined, JSON.stringify(list.body.errors));
    const got = list.body.data.listExecutionRequests;
    assert.equal(got.total, 3);
    assert.deepEqual(got.executionRequests.map((e: { urn: string }) => e.urn), [cli, theirs, mine]);
  });

  await withSim({}, async (sim) => {
    const mine = sim.createRequest({ requestedAt: 1 });
    sim.createRequest({ requestedAt: 2, executorId: "pool-b" });
    sim.createRequest({ requestedAt: 3, source: { type: "MANUAL_TEST_CONNECTION" } });
    const list = await graphql(sim, LIST_QUERY, {
      input: { filters: [{ field: "executorId", values: ["default"] }] },
    });
    // v1.2.0+: the filter applies and requests without an ingestion source are never listed.
    assert.deepEqual(
      list.body.data.listExecutionRequests.executionRequests.map((e: { urn: string }) => e.urn),
      [mine],
    );
  });
});

Deno.test("executionRequest(urn) hydrates input and result", async () => {
  await using sim = await GmsSimulator.start();
  const urn = sim.createRequest({ args: { a: "1" }, requestedAt: 9 });
  sim.setResult(urn, { status: "FAILURE", report: "boom" });
  const r = await graphql(
    sim,
    `query one($urn: String!) { executionRequest(urn: $urn) {
      urn type input { arguments { key value } requestedAt } result { status report } } }`,
    { urn },
  );
  assert.deepEqual(r.body.data.executionRequest, {
    urn,
    type: "EXECUTION_REQUEST",
    input: { arguments: [{ key: "a", value: "1" }], requestedAt: 9 },
    result: { status: "FAILURE", report: "boom" },
  });
  const none = await graphql(
    sim,
    `{ executionRequest(urn: "urn:li:dataHubExecutionRequest:x") { urn } }`,
  );
  assert.deepEqual(none.body.data, { executionRequest: null });
});

const SECRETS_QUERY = `query getSecrets($names: [String!]!) {
  getSecretValues(input: { secrets: $names }) { name value }
}`;

Deno.test("getSecretValues omits unknown names; operationName is logged", async () => {
  await using sim = await GmsSimulator.start({ secrets: { A: "1" } });
  sim.setSecret("B", "2");
  const r = await graphql(sim, SECRETS_QUERY, { names: ["A", "B", "MISSING"] });
  assert.equal(r.status, 200);
  assert.deepEqual(r.body.data.getSecretValues, [{ name: "A", value: "1" }, {
    name: "B",
    value: "2",
  }]);
  assert.equal(sim.requests().filter((e) => e.operationName === "getSecrets").length, 1);
  assert.deepEqual(sim.secretRequests().map((s) => s.granted), [true]);
});

Deno.test("caller guard: secrets only for the system client with a non-browser User-Agent", async () => {
  await using sim = await GmsSimulator.start({ callerGuard: true, secrets: { A: "1" } });
  const token = await graphql(sim, SECRETS_QUERY, { names: ["A"] });
  assert.equal(token.status, 200);
  assert.equal(token.body.data, null);
  assert.equal(token.body.errors[0].extensions.code, 403);
  assert.match(
    token.body.errors[0].message,
    /caller guard \(SECRET_SERVICE_CALLER_GUARD_MODE=ENFORCE\) denies non-system actor urn:li:corpuser:datahub/,
  );

  const system = await graphql(sim, SECRETS_QUERY, { names: ["A"] }, {
    authorization: SYSTEM_AUTH,
  });
  assert.deepEqual(system.body, { data: { getSecretValues: [{ name: "A", value: "1" }] } });

  const browser = await graphql(sim, SECRETS_QUERY, { names: ["A"] }, {
    authorization: SYSTEM_AUTH,
    "user-agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120",
  });
  assert.equal(browser.body.data, null);
  assert.match(browser.body.errors[0].message, /browser/);
  assert.deepEqual(sim.secretRequests().map((s) => [s.auth, s.granted]), [
    ["bearer", false],
    ["system", true],
    ["system", false],
  ]);
});

Deno.test("manageSecrets: false refuses a token getSecretValues with GMS's authorization error; system auth reads", async () => {
  await using sim = await GmsSimulator.start({ manageSecrets: false, secrets: { A: "1" } });
  const token = await graphql(sim, SECRETS_QUERY, { names: ["A"] });
  assert.equal(token.status, 200);
  assert.equal(token.body.data.getSecretValues, null);
  assert.equal(token.body.errors[0].extensions.code, 403);
  assert.equal(
    token.body.errors[0].message,
    "Unauthorized to perform this action. Please contact your DataHub administrator.",
  );
  const system = await graphql(sim, SECRETS_QUERY, { names: ["A"] }, {
    authorization: SYSTEM_AUTH,
  });
  assert.deepEqual(system.body, { data: { getSecretValues: [{ name: "A", value: "1" }] } });
  assert.deepEqual(sim.secretRequests().map((s) => [s.auth, s.granted]), [
    ["bearer", false],
    ["system", true],
  ]);
});

Deno.test("faults: 503 for two requests then OK; 429 with Retry-After; latency; reset", async () => {
  await using sim = await GmsSimulator.start();
  sim.addFault({ match: "/config", status: 503, times: 2 });
  assert.equal((await call(sim, "GET", "/config")).status, 503);
  assert.equal((await call(sim, "GET", "/config")).status, 503);
  assert.equal((await call(sim, "GET", "/config")).status, 200);

  const remove = sim.addFault({ match: /graphql/, status: 429, retryAfterSeconds: 3 });
  const throttled = await graphql(sim, SECRETS_QUERY, { names: [] });
  assert.equal(throttled.status, 429);
  assert.equal(throttled.headers.get("retry-after"), "3");
  remove();
  assert.equal((await graphql(sim, SECRETS_QUERY, { names: [] })).status, 200);

  sim.addFault({ match: "/health", latencyMs: 150, times: 1 });
  const t0 = Date.now();
  assert.equal((await call(sim, "GET", "/health")).status, 200);
  assert.ok(Date.now() - t0 >= 140, "latency fault not applied");

  // Unlimited: an HTTP client may transparently retry a reset on a reused keep-alive connection.
  const stopResets = sim.addFault({ match: "/config", reset: true });
  await assert.rejects(call(sim, "GET", "/config"));
  stopResets();
  assert.equal((await call(sim, "GET", "/config")).status, 200);
  sim.clearFaults();

  const statuses = sim.requests().map((e) => e.status);
  assert.deepEqual(statuses.slice(0, 6), [503, 503, 200, 429, 200, 200]);
  assert.ok(statuses.slice(6, -1).length >= 1, "reset requests must be logged");
  assert.ok(statuses.slice(6, -1).every((s) => s === 0), "reset requests are logged with status 0");
  assert.equal(statuses.at(-1), 200);
  assert.equal(sim.requests()[3]!.operationName, "getSecrets");
});

function postWrites(sim: GmsSimulator, entities: unknown[], query = "?async=false") {
  return call(sim, "POST", `/openapi/v3/entity/datahubexecutionrequest${query}`, entities);
}

const CLAIM = { "If-Version-Match": "-1" };

Deno.test("write fault after:reset: the claim is committed, the client sees a network error", async () => {
  await using sim = await GmsSimulator.start();
  const urn = sim.createRequest();
  sim.addFault({ write: "claim", after: "reset", times: 1 });
  const claim = { status: "RUNNING", startTimeMs: 1 };
  await assert.rejects(writeResult(sim, urn, claim, CLAIM));
  assert.deepEqual(sim.result(urn), { value: claim, version: 1 });
  assert.deepEqual(sim.resultWrites(urn).map((w) => [w.kind, w.version]), [["claim", 1]]);

  // `times` is used up: retrying the lost claim now gets the real answer, a 412 against itself.
  const retry = await writeResult(sim, urn, claim, CLAIM);
  assert.equal(retry.status, 412);
  assert.deepEqual(sim.requests().map((e) => [e.status, e.handledStatus]), [
    [0, 200],
    [412, undefined],
  ]);
});

Deno.test("write fault after:500: the heartbeat is committed, the answer is a 500, even for a 412", async () => {
  await using sim = await GmsSimulator.start();
  const urn = sim.createRequest();
  const stop = sim.addFault({ write: "heartbeat", after: 500, retryAfterSeconds: 1 });
  const claim = { status: "RUNNING", startTimeMs: 1 };
  assert.equal((await writeResult(sim, urn, claim, CLAIM)).status, 200, "claims are not hit");

  const beat = await writeResult(sim, urn, { ...claim, report: "step 1" }, {
    "If-Version-Match": "1",
  });
  assert.equal(beat.status, 500);
  assert.deepEqual(beat.body, { error: "Internal Server Error" });
  assert.equal(beat.headers.get("retry-after"), "1");
  assert.deepEqual(sim.result(urn), { value: { ...claim, report: "step 1" }, version: 2 });
  assert.deepEqual(sim.resultWrites(urn).map((w) => w.kind), ["claim", "heartbeat"]);

  // A proxy replaces whatever GMS answered: the stale heartbeat's 412 is not seen either.
  const stale = await writeResult(sim, urn, { ...claim, report: "step 2" }, {
    "If-Version-Match": "1",
  });
  assert.equal(stale.status, 500);
  assert.equal(sim.result(urn)?.version, 2);
  assert.equal(sim.rejectedWrites(urn)[0]?.status, 412);
  stop();
  const log = sim.requests();
  assert.deepEqual(log.map((e) => [e.status, e.handledStatus]), [
    [200, undefined],
    [500, 200],
    [500, 412],
  ]);
});

Deno.test("write fault status:413 refuses terminal writes only, applies nothing, honours times", async () => {
  await using sim = await GmsSimulator.start();
  const urn = sim.createRequest();
  sim.setResult(urn, { status: "RUNNING" });
  sim.addFault({ write: "terminal", status: 413, times: 1 });
  assert.equal((await writeResult(sim, urn, { status: "RUNNING", report: "x" })).status, 200);

  const big = { status: "SUCCESS", report: "x".repeat(10_000) };
  const refused = await writeResult(sim, urn, big);
  assert.equal(refused.status, 413);
  assert.deepEqual(refused.body, { error: "Payload Too Large" });
  assert.equal(sim.result(urn)?.value.status, "RUNNING");
  assert.equal(sim.resultWrites(urn).length, 2);

  assert.equal((await writeResult(sim, urn, big)).status, 200);
  assert.equal(sim.result(urn)?.value.status, "SUCCESS");
  assert.deepEqual(sim.resultWrites(urn).map((w) => w.kind), [
    "heartbeat",
    "heartbeat",
    "terminal",
  ]);
});

Deno.test("write faults never hit GraphQL, reads, batchGet, async writes or other aspects", async () => {
  await using sim = await GmsSimulator.start();
  const urn = sim.createRequest();
  sim.addFault({ write: "claim", after: "reset" });
  sim.addFault({ write: "heartbeat", status: 503 });
  sim.addFault({ write: "terminal", after: 502 });

  assert.equal((await pending(sim)).total, 1);
  assert.equal((await call(sim, "GET", entityPath(urn))).status, 200);
  const batchGet = await call(
    sim,
    "POST",
    "/openapi/v3/entity/dataHubExecutionRequest/batchGet?async=false",
    [{ urn, [RESULT]: {} }],
  );
  assert.equal(batchGet.status, 200);
  const signal = { signal: "KILL", createdAt: { time: 1, actor: "urn:li:corpuser:x" } };
  assert.equal((await postWrites(sim, [{ urn, [SIGNAL]: { value: signal } }])).status, 200);
  const queued = await postWrites(
    sim,
    [{ urn, [RESULT]: { value: { status: "RUNNING" }, headers: CLAIM } }],
    "?async=true",
  );
  assert.equal(queued.status, 202);
  await sim.waitFor(() => sim.result(urn), 2_000, "async claim");
  assert.ok(sim.requests().every((e) => e.status >= 200 && e.status < 300));
  assert.ok(sim.requests().every((e) => e.handledStatus === undefined));
});

Deno.test("write faults: a batch matches if any entity does; match and write must both match", async () => {
  await using sim = await GmsSimulator.start();
  const a = sim.createRequest();
  const b = sim.createRequest();
  sim.setResult(a, { status: "RUNNING" });
  sim.addFault({ match: "systemMetadata=true", write: "terminal", status: 502 });
  sim.addFault({ write: "claim", status: 503, times: 1 });

  const mixed = await postWrites(sim, [
    { urn: a, [RESULT]: { value: { status: "RUNNING", report: "r" } } },
    // Header names are case-insensitive, as for the conditional-write validator.
    { urn: b, [RESULT]: { value: { status: "RUNNING" }, headers: { "if-version-match": "-1" } } },
  ]);
  assert.equal(mixed.status, 503);
  assert.equal(sim.result(b), undefined);
  assert.equal(sim.result(a)?.version, 1);

  const terminal = [{ urn: a, [RESULT]: { value: { status: "FAILURE" } } }];
  assert.equal((await postWrites(sim, terminal, "?async=false&systemMetadata=true")).status, 502);
  assert.equal(sim.result(a)?.value.status, "RUNNING");
  assert.equal((await postWrites(sim, terminal)).status, 200, "`match` does not hold");
  assert.equal(sim.result(a)?.value.status, "FAILURE");
});

Deno.test("addFault rejects after combined with status or reset, and non-HTTP statuses", async () => {
  await using sim = await GmsSimulator.start();
  assert.throws(() => sim.addFault({ write: "claim", after: "reset", status: 500 }), TypeError);
  assert.throws(() => sim.addFault({ after: 500, reset: true }), TypeError);
  assert.throws(() => sim.addFault({ write: "terminal", after: 42 }), RangeError);
});

Deno.test("Date header on every answer; clockSkewMs shifts it, lastObserved and audit stamps", async () => {
  const near = (actual: number, expected: number, slackMs: number, what: string) =>
    assert.ok(Math.abs(actual - expected) <= slackMs, `${what}: ${actual} vs ${expected}`);
  const dateOf = (r: Reply) => Date.parse(r.headers.get("date") ?? "");

  await withSim({}, async (sim) => {
    near(dateOf(await call(sim, "GET", "/health")), Date.now(), 2_000, "Date without skew");
  });

  const skew = -2 * 3600_000;
  await using sim = await GmsSimulator.start({ clockSkewMs: skew });
  near(sim.now(), Date.now() + skew, 50, "sim.now()");
  // The Date header has a resolution of one second.
  for (
    const r of [
      await call(sim, "GET", "/health"),
      await call(sim, "GET", "/config", undefined, { authorization: "" }),
      await call(sim, "GET", "/nope"),
    ]
  ) {
    near(dateOf(r), Date.now() + skew, 2_000, `Date of a ${r.status}`);
  }
  sim.addFault({ match: "/config", status: 503, times: 1 });
  near(dateOf(await call(sim, "GET", "/config")), Date.now() + skew, 2_000, "Date of a fault");

  const urn = sim.createRequest();
  sim.sendSignal(urn);
  const stored = (await call(sim, "GET", entityPath(urn))).body;
  near(stored[INPUT].value.requestedAt, Date.now() + skew, 1_000, "requestedAt");
  near(stored[INPUT].systemMetadata.lastObserved, Date.now() + skew, 1_000, "input lastObserved");
  near(stored[SIGNAL].value.createdAt.time, Date.now() + skew, 1_000, "signal createdAt");
  // The search index is stamped with the same clock, so nothing is hidden by the skew.
  assert.equal((await pending(sim)).total, 1);

  const claim = await writeResult(sim, urn, { status: "RUNNING" }, CLAIM);
  near(claim.body[0][RESULT].systemMetadata.lastObserved, Date.now() + skew, 1_000, "claim");
  assert.equal(sim.resultWrites(urn)[0]!.systemMetadata, undefined);
  near(sim.resultWrites(urn)[0]!.at, Date.now(), 1_000, "ResultWrite.at is the host clock");

  // A client-sent lastObserved is kept, as GMS does.
  const own = await postWrites(sim, [{
    urn,
    [RESULT]: { value: { status: "RUNNING", report: "r" }, systemMetadata: { lastObserved: 7 } },
  }], "?async=false&systemMetadata=true");
  assert.equal(own.body[0][RESULT].systemMetadata.lastObserved, 7);
});

Deno.test("goDown refuses connections; comeBack listens on the same port", async () => {
  await using sim = await GmsSimulator.start();
  const url = sim.url;
  assert.equal((await call(sim, "GET", "/health")).status, 200);
  await sim.goDown();
  const err = await fetch(url + "/health").then(
    async (r) => {
      await r.body?.cancel();
      return undefined;
    },
    (e: Error) => e,
  );
  assert.ok(err, "fetch must fail while the simulator is down");
  assert.match(String((err.cause as Error | undefined)?.message ?? err.message), /refused/i);
  await sim.comeBack();
  assert.equal(sim.url, url);
  assert.equal((await call(sim, "GET", "/health")).status, 200);
});

Deno.test("malformed JSON is 400, unknown routes 404", async () => {
  await using sim = await GmsSimulator.start();
  const bad = await call(
    sim,
    "POST",
    "/openapi/v3/entity/dataHubExecutionRequest?async=false",
    "{",
  );
  assert.equal(bad.status, 400);
  assert.equal((await call(sim, "POST", "/api/graphql", "not json")).status, 400);
  assert.equal((await call(sim, "GET", "/nope")).status, 404);
  assert.equal((await call(sim, "GET", "/openapi/v3/entity/dataset/urn:li:dataset:x")).status, 404);
});

Deno.test("waitFor rejects naming what it waited for and the last probe result", async () => {
  await using sim = await GmsSimulator.start();
  const urn = sim.createRequest({ id: "slow" });
  const t0 = Date.now();
  await assert.rejects(
    sim.waitFor(() => sim.result(urn)?.value.status === "SUCCESS" && "done", 60, "slow to succeed"),
    (e: Error) => {
      assert.match(e.message, /waitFor\(slow to succeed\) timed out after 60 ms/);
      assert.match(e.message, /last probe result: false/);
      assert.match(e.message, /slow=pending/);
      return true;
    },
  );
  assert.ok(Date.now() - t0 >= 60);
  sim.setResult(urn, { status: "SUCCESS" });
  assert.equal(
    await sim.waitFor(() => sim.result(urn)?.value.status === "SUCCESS" && "done"),
    "done",
  );
});
