/**
 * Every GraphQL document the agent sends to GMS. Kept in one module so the contract test can
 * validate each of them against the upstream schema (../shared/datahub-graphql).
 */

const REQUEST_FIELDS = `
      id
      input { task executorId requestedAt source { type ingestionSource } }
      result { status startTimeMs durationMs }`;

/** One page of execution requests matching the OR-ed filter groups in `$<filters>`. */
const searchPage = (alias: string, filters: string, start: string, order: string) => `
  ${alias}: searchAcrossEntities(input: {
    types: [EXECUTION_REQUEST], query: "*", start: $${start}, count: $count,
    orFilters: $${filters},
    searchFlags: { skipCache: true, skipAggregates: true, skipHighlighting: true },
    sortInput: { sortCriteria: [{ field: "requestTimeMs", sortOrder: ${order} }] }
  }) {
    total
    searchResults { entity { urn ... on ExecutionRequest {${REQUEST_FIELDS}
    } } }
  }`;

/**
 * Discovery on GMS ≥ v1.2.0 (executorId is searchable there; ExecutionRequest implements Entity).
 * One request, two result sets: `pending` (no result yet: work to claim; oldest first) and
 * `running` (claimed by someone: the lease reaper checks them without any extra request; newest
 * first, a different page each poll). `$pendingFilters` and `$runningFilters` are OR-ed groups
 * built by `searchVariables` (client.ts); the start offsets come from the agent's paging.
 */
export const DISCOVER_SEARCH =
  `query ingestAgentDiscover($pendingFilters: [AndFilterInput!], $runningFilters: [AndFilterInput!], $count: Int!, $pendingStart: Int!, $runningStart: Int!) {${
    searchPage("pending", "pendingFilters", "pendingStart", "ASCENDING")
  }${searchPage("running", "runningFilters", "runningStart", "DESCENDING")}
}`;

/** One page of `listExecutionRequests` with one filter. */
const listPage = (alias: string, filter: string, start: string, order: string) => `
  ${alias}: listExecutionRequests(input: {
    start: $${start}, count: $count,
    filters: [${filter}],
    sort: { field: "requestTimeMs", sortOrder: ${order} }
  }) {
    total
    executionRequests { urn${REQUEST_FIELDS}
    }
  }`;

/**
 * Discovery on GMS v1.1.x: `listExecutionRequests` (executorId is not indexed there, so the
 * agent checks it on each returned request).
 */
export const DISCOVER_LIST =
  `query ingestAgentDiscoverLegacy($count: Int!, $pendingStart: Int!, $runningStart: Int!) {${
    listPage(
      "pending",
      `{ field: "executionResultStatus", condition: EXISTS, negated: true }`,
      "pendingStart",
      "ASCENDING",
    )
  }${
    listPage(
      "running",
      `{ field: "executionResultStatus", values: ["RUNNING"] }`,
      "runningStart",
      "DESCENDING",
    )
  }
}`;

/** Secret values for one run, all names in one call (SPEC §4.5; same text as the Python client). */
export const GET_SECRET_VALUES =
  `query getSecretValues($input: GetSecretValuesInput!) { getSecretValues(input: $input) { name value } }`;

export const ALL_OPERATIONS: Readonly<Record<string, string>> = {
  DISCOVER_SEARCH,
  DISCOVER_LIST,
  GET_SECRET_VALUES,
};
