/**
 * Every GraphQL document the agent sends to GMS. Kept in one module so the contract test can
 * validate each of them against the upstream schema (../shared/datahub-graphql).
 */

const REQUEST_FIELDS = `
      id
      input { task executorId requestedAt source { type ingestionSource } }
      result { status startTimeMs durationMs }`;

/**
 * Discovery on GMS ≥ v1.2.0 (executorId is searchable there; ExecutionRequest implements Entity).
 * One request, two result sets: `pending` (no result yet: work to claim) and `running` (claimed
 * by someone: the lease reaper checks them without any extra request). Oldest first.
 * `$pendingFilters` and `$runningFilters` are OR-ed groups built by discovery.ts.
 */
export const DISCOVER_SEARCH =
  `query ingestAgentDiscover($pendingFilters: [AndFilterInput!], $runningFilters: [AndFilterInput!], $count: Int!) {
  pending: searchAcrossEntities(input: {
    types: [EXECUTION_REQUEST], query: "*", start: 0, count: $count,
    orFilters: $pendingFilters,
    searchFlags: { skipCache: true, skipAggregates: true, skipHighlighting: true },
    sortInput: { sortCriteria: [{ field: "requestTimeMs", sortOrder: ASCENDING }] }
  }) {
    total
    searchResults { entity { urn ... on ExecutionRequest {${REQUEST_FIELDS}
    } } }
  }
  running: searchAcrossEntities(input: {
    types: [EXECUTION_REQUEST], query: "*", start: 0, count: $count,
    orFilters: $runningFilters,
    searchFlags: { skipCache: true, skipAggregates: true, skipHighlighting: true },
    sortInput: { sortCriteria: [{ field: "requestTimeMs", sortOrder: ASCENDING }] }
  }) {
    total
    searchResults { entity { urn ... on ExecutionRequest {${REQUEST_FIELDS}
    } } }
  }
}`;

/**
 * Discovery on GMS v1.1.x: `listExecutionRequests` (executorId is not indexed there, so the
 * agent checks it on each returned request).
 */
export const DISCOVER_LIST = `query ingestAgentDiscoverLegacy($count: Int!) {
  pending: listExecutionRequests(input: {
    start: 0, count: $count,
    filters: [{ field: "executionResultStatus", condition: EXISTS, negated: true }],
    sort: { field: "requestTimeMs", sortOrder: ASCENDING }
  }) {
    total
    executionRequests { urn${REQUEST_FIELDS}
    }
  }
  running: listExecutionRequests(input: {
    start: 0, count: $count,
    filters: [{ field: "executionResultStatus", values: ["RUNNING"] }],
    sort: { field: "requestTimeMs", sortOrder: ASCENDING }
  }) {
    total
    executionRequests { urn${REQUEST_FIELDS}
    }
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
