/**
 * Every GraphQL document the agent sends to GMS. Kept in one module so the contract test can
 * validate each of them against the upstream schema (../shared/datahub-graphql).
 */

const REQUEST_FIELDS = `
      id
      input { task executorId requestedAt source { type ingestionSource } }
      result { status startTimeMs durationMs }`;

/** One oldest-first page of execution requests matching the OR-ed filter groups in `$<filters>`. */
const searchPage = (alias: string, filters: string) => `
  ${alias}: searchAcrossEntities(input: {
    types: [EXECUTION_REQUEST], query: "*", start: 0, count: $count,
    orFilters: $${filters},
    searchFlags: { skipCache: true, skipAggregates: true, skipHighlighting: true },
    sortInput: { sortCriteria: [{ field: "requestTimeMs", sortOrder: ASCENDING }] }
  }) {
    total
    searchResults { entity { urn ... on ExecutionRequest {${REQUEST_FIELDS}
    } } }
  }`;

/**
 * Discovery on GMS ≥ v1.2.0 (executorId is searchable there; ExecutionRequest implements Entity).
 * One request, two result sets: `pending` (no result yet: work to claim) and `running` (claimed
 * by someone: the lease reaper checks them without any extra request). Oldest first.
 * `$pendingFilters` and `$runningFilters` are OR-ed groups built by `searchVariables` (client.ts).
 */
export const DISCOVER_SEARCH =
  `query ingestAgentDiscover($pendingFilters: [AndFilterInput!], $runningFilters: [AndFilterInput!], $count: Int!) {${
    searchPage("pending", "pendingFilters")
  }${searchPage("running", "runningFilters")}
}`;

/** One oldest-first page of `listExecutionRequests` with one filter. */
const listPage = (alias: string, filter: string) => `
  ${alias}: listExecutionRequests(input: {
    start: 0, count: $count,
    filters: [${filter}],
    sort: { field: "requestTimeMs", sortOrder: ASCENDING }
  }) {
    total
    executionRequests { urn${REQUEST_FIELDS}
    }
  }`;

/**
 * Discovery on GMS v1.1.x: `listExecutionRequests` (executorId is not indexed there, so the
 * agent checks it on each returned request).
 */
export const DISCOVER_LIST = `query ingestAgentDiscoverLegacy($count: Int!) {${
  listPage("pending", `{ field: "executionResultStatus", condition: EXISTS, negated: true }`)
}${listPage("running", `{ field: "executionResultStatus", values: ["RUNNING"] }`)}
}`;

/** Secret values for one run, all names in one call (SPEC §4.5; same text as the Python client). */
export const GET_SECRET_VALUES =
  `query getSecretValues($input: GetSecretValuesInput!) { getSecretValues(input: $input) { name value } }`;

export const ALL_OPERATIONS: Readonly<Record<string, string>> = {
  DISCOVER_SEARCH,
  DISCOVER_LIST,
  GET_SECRET_VALUES,
};
