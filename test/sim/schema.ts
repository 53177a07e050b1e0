// GraphQL SDL for the subset of DataHub GMS the simulator serves.
//
// Field names and types follow the upstream schema files (entity.graphql, search.graphql,
// ingestion.graphql); only what an ingestion executor touches is declared, so a query that is valid
// here is valid against real GMS. The SDL differs by GMS version exactly where the real surface did
// (SPEC 2.3): before v1.2.0 `ExecutionRequest` did not implement `Entity`, had no `type`, and
// `ExecutionRequestInput.actor` / `ListExecutionRequestsInput.systemSources` did not exist.

import { buildSchema, type GraphQLSchema } from "graphql";

/** Parses "v1.3.0" / "1.2.0rc1" / "v1.5.0.15" into comparable numbers ([1, 3, 0]). */
export function parseVersion(version: string): number[] {
  const m = /^v?(\d+)\.(\d+)(?:\.(\d+))?/.exec(version.trim());
  if (!m) throw new Error(`unparseable GMS version: ${version}`);
  return [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
}

/** True if `version` is at least `min` (both in "vX.Y.Z" form). */
export function versionAtLeast(version: string, min: string): boolean {
  const a = parseVersion(version);
  const b = parseVersion(min);
  for (let i = 0; i < 3; i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d > 0;
  }
  return true;
}

/** The GraphQL surface changes that matter here landed in v1.2.0 (#13614, #13611). */
export function isModernSurface(version: string): boolean {
  return versionAtLeast(version, "v1.2.0");
}

function sdl(modern: boolean): string {
  const executionRequestHeader = modern
    ? `type ExecutionRequest implements Entity {
  urn: String!
  type: EntityType!`
    : `type ExecutionRequest {
  urn: String!`;
  return `
scalar Long

type Query {
  searchAcrossEntities(input: SearchAcrossEntitiesInput!): SearchResults
  getSecretValues(input: GetSecretValuesInput!): [SecretValue!]
  listExecutionRequests(input: ListExecutionRequestsInput!): IngestionSourceExecutionRequests
  executionRequest(urn: String!): ExecutionRequest
}

interface Entity {
  urn: String!
  type: EntityType!
}

enum EntityType {
  DOMAIN
  DATASET
  CORP_USER
  CORP_GROUP
  DATA_PLATFORM
  DASHBOARD
  CHART
  DATA_FLOW
  DATA_JOB
  TAG
  GLOSSARY_TERM
  CONTAINER
  INGESTION_SOURCE
  EXECUTION_REQUEST
  ASSERTION
  DATA_PROCESS_INSTANCE
  ACCESS_TOKEN
  TEST
  DATAHUB_POLICY
  DATAHUB_VIEW
  DATAHUB_CONNECTION
  OTHER
}

type CorpUser implements Entity {
  urn: String!
  type: EntityType!
  username: String!
}

input SearchAcrossEntitiesInput {
  types: [EntityType!]
  query: String!
  start: Int
  count: Int
  filters: [FacetFilterInput!] @deprecated(reason: "Use \`orFilters\`- they are more expressive")
  orFilters: [AndFilterInput!]
  viewUrn: String
  searchFlags: SearchFlags
  sortInput: SearchSortInput
}

input AndFilterInput {
  and: [FacetFilterInput!]
}

input FacetFilterInput {
  field: String!
  values: [String!]
  negated: Boolean
  condition: FilterOperator
}

enum FilterOperator {
  CONTAIN
  EQUAL
  IEQUAL
  IN
  EXISTS
  GREATER_THAN
  GREATER_THAN_OR_EQUAL_TO
  LESS_THAN
  LESS_THAN_OR_EQUAL_TO
  START_WITH
  END_WITH
  DESCENDANTS_INCL
  ANCESTORS_INCL
  RELATED_INCL
}

input SearchFlags {
  skipCache: Boolean
  maxAggValues: Int
  fulltext: Boolean
  skipHighlighting: Boolean
  skipAggregates: Boolean
  getSuggestions: Boolean
  includeSoftDeleted: Boolean
  includeRestricted: Boolean
  customHighlightingFields: [String!]
  includeStructuredPropertyFacets: Boolean
  filterNonLatestVersions: Boolean
}

enum SortOrder {
  ASCENDING
  DESCENDING
}

input SortCriterion {
  field: String!
  sortOrder: SortOrder!
}

input SearchSortInput {
  sortCriterion: SortCriterion @deprecated(reason: "Use sortCriteria instead")
  sortCriteria: [SortCriterion!]
}

type SearchResults {
  start: Int!
  count: Int!
  total: Int!
  searchResults: [SearchResult!]!
}

type SearchResult {
  entity: Entity!
  matchedFields: [MatchedField!]!
}

type MatchedField {
  name: String!
  value: String!
  entity: Entity
}

type StringMapEntry {
  key: String!
  value: String
}

type ExecutionRequestSource {
  type: String
  ingestionSource: String
}

type ExecutionRequestInput {
  task: String!
  source: ExecutionRequestSource!
  arguments: [StringMapEntry!]
  requestedAt: Long!
  actorUrn: String @deprecated(reason: "Use actor instead")
  ${modern ? "actor: CorpUser" : ""}
  executorId: String
}

type ExecutionRequestResult {
  status: String!
  startTimeMs: Long
  durationMs: Long
  report: String
  structuredReport: StructuredReport
}

type StructuredReport {
  type: String!
  serializedValue: String!
  contentType: String!
}

${executionRequestHeader}
  id: String!
  input: ExecutionRequestInput!
  result: ExecutionRequestResult
}

input ListExecutionRequestsInput {
  start: Int
  count: Int
  query: String
  filters: [FacetFilterInput!]
  sort: SortCriterion
  ${modern ? "systemSources: Boolean" : ""}
}

type IngestionSourceExecutionRequests {
  start: Int
  count: Int
  total: Int
  executionRequests: [ExecutionRequest!]!
}

input GetSecretValuesInput {
  secrets: [String!]!
}

type SecretValue {
  name: String!
  value: String!
}
`;
}

const cache = new Map<boolean, GraphQLSchema>();

/** The executable schema for a GMS version (built once per surface). */
export function schemaFor(version: string): GraphQLSchema {
  const modern = isModernSurface(version);
  let schema = cache.get(modern);
  if (!schema) {
    schema = buildSchema(sdl(modern));
    cache.set(modern, schema);
  }
  return schema;
}
