// Entity store of the simulator: the DB side (versioned aspects, always consistent) and the search
// side (an index that reflects writes only after `searchLagMs`, like GMS's asynchronously updated
// Elasticsearch index). Keeping the two views separate is the point: an executor must not trust
// search for claim decisions (SPEC 1.7), and tests need to be able to show why.

export const ENTITY_NAME = "dataHubExecutionRequest";
export const URN_PREFIX = "urn:li:dataHubExecutionRequest:";
export const INPUT = "dataHubExecutionRequestInput";
export const SIGNAL = "dataHubExecutionRequestSignal";
export const RESULT = "dataHubExecutionRequestResult";
export const ASPECT_NAMES = [INPUT, SIGNAL, RESULT] as const;
export type AspectName = typeof ASPECT_NAMES[number];

export function isAspectName(name: string): name is AspectName {
  return (ASPECT_NAMES as readonly string[]).includes(name);
}

export type Json = Record<string, unknown>;

export interface StoredAspect {
  value: Json;
  version: number;
  /** What GMS returns as systemMetadata (version as a string, as GMS does). */
  systemMetadata: Json;
  /** Audit-stamp time of the last change (used by If-(Un)Modified-Since). */
  modifiedAt: number;
}

export interface StoredEntity {
  urn: string;
  /** Creation order; breaks ties when sort keys are equal, so results are deterministic. */
  seq: number;
  aspects: Map<AspectName, StoredAspect>;
}

/** One document of the search index, i.e. the searchable fields of SPEC 1.7. */
export type IndexDoc = Record<string, string | number>;

interface IndexEntry {
  visibleAt: number;
  doc: IndexDoc;
}

/** Index fields by GMS version: `executorId` is only @Searchable from v1.2.0 (#13614). */
export function indexedFields(modern: boolean): Set<string> {
  const fields = [
    "urn",
    "requestTimeMs",
    "actorUrn",
    "ingestionSource",
    "executionResultStatus",
    "startTimeMs",
  ];
  if (modern) fields.push("executorId");
  return new Set(fields);
}

export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a as Json).filter((k) => (a as Json)[k] !== undefined);
  const kb = Object.keys(b as Json).filter((k) => (b as Json)[k] !== undefined);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => deepEqual((a as Json)[k], (b as Json)[k]));
}

export class EntityStore {
  readonly entities = new Map<string, StoredEntity>();
  private readonly index = new Map<string, IndexEntry[]>();
  private seq = 0;

  private readonly fields: Set<string>;
  private readonly lagMs: () => number;

  // No parameter properties: Node's type stripping must be able to run this module as is.
  constructor(fields: Set<string>, lagMs: () => number) {
    this.fields = fields;
    this.lagMs = lagMs;
  }

  get(urn: string): StoredEntity | undefined {
    return this.entities.get(urn);
  }

  aspect(urn: string, name: AspectName): StoredAspect | undefined {
    return this.entities.get(urn)?.aspects.get(name);
  }

  /**
   * Stores a new version of an aspect (the caller has already decided it is a real change) and
   * schedules the index update. `syncIndex` mirrors the `X-DataHub-Sync-Index-Update` MCP header.
   */
  put(
    urn: string,
    name: AspectName,
    value: Json,
    clientMetadata: Json | undefined,
    now: number,
    syncIndex = false,
  ): StoredAspect {
    let entity = this.entities.get(urn);
    if (!entity) {
      entity = { urn, seq: this.seq++, aspects: new Map() };
      this.entities.set(urn, entity);
    }
    const version = (entity.aspects.get(name)?.version ?? 0) + 1;
    const stored: StoredAspect = {
      value: structuredClone(value),
      version,
      systemMetadata: {
        lastObserved: now,
        runId: "no-run-id-provided",
        ...structuredClone(clientMetadata ?? {}),
        version: String(version),
      },
      modifiedAt: now,
    };
    entity.aspects.set(name, stored);
    const entries = this.index.get(urn) ?? [];
    entries.push({ visibleAt: syncIndex ? now : now + this.lagMs(), doc: this.indexDoc(entity) });
    this.index.set(urn, entries);
    return stored;
  }

  private indexDoc(entity: StoredEntity): IndexDoc {
    const doc: IndexDoc = { urn: entity.urn };
    const input = entity.aspects.get(INPUT)?.value;
    const result = entity.aspects.get(RESULT)?.value;
    const set = (field: string, v: unknown) => {
      if (this.fields.has(field) && (typeof v === "string" || typeof v === "number")) {
        doc[field] = v;
      }
    };
    set("executorId", input?.executorId);
    set("requestTimeMs", input?.requestedAt);
    set("actorUrn", input?.actorUrn);
    set("ingestionSource", (input?.source as Json | undefined)?.ingestionSource);
    set("executionResultStatus", result?.status);
    set("startTimeMs", result?.startTimeMs);
    return doc;
  }

  /** The index as a search sees it at `now`: per entity, the newest document already visible. */
  searchView(now: number): { entity: StoredEntity; doc: IndexDoc }[] {
    const out: { entity: StoredEntity; doc: IndexDoc }[] = [];
    for (const [urn, entries] of this.index) {
      let visible: IndexEntry | undefined;
      for (const e of entries) if (e.visibleAt <= now) visible = e;
      const entity = this.entities.get(urn);
      if (visible && entity) out.push({ entity, doc: visible.doc });
      // Older invisible-forever entries are dropped so the history stays short.
      if (visible) entries.splice(0, entries.indexOf(visible));
    }
    return out.sort((a, b) => a.entity.seq - b.entity.seq);
  }
}

// ---- Search semantics (Elasticsearch as GMS drives it, for the subset of operators used) ----

export interface Criterion {
  field: string;
  values?: readonly string[] | null;
  negated?: boolean | null;
  condition?: string | null;
}

/**
 * Evaluates one FacetFilterInput against an index document. Filters on fields that are not in the
 * index mapping are ignored (this is how an executorId filter behaves before v1.2.0), while a field
 * that is mapped but absent from the document matches nothing, like a term query on a missing value.
 */
export function matchCriterion(c: Criterion, doc: IndexDoc, fields: Set<string>): boolean {
  if (!fields.has(c.field)) return true;
  const actual = doc[c.field];
  const values = c.values ?? [];
  const num = (s: string | undefined) => Number(s);
  let hit: boolean;
  switch (c.condition ?? "EQUAL") {
    case "EXISTS":
      hit = actual !== undefined;
      break;
    case "EQUAL":
    case "IN":
      hit = actual !== undefined && values.includes(String(actual));
      break;
    case "IEQUAL":
      hit = actual !== undefined &&
        values.some((v) => v.toLowerCase() === String(actual).toLowerCase());
      break;
    case "CONTAIN":
      hit = actual !== undefined && values.some((v) => String(actual).includes(v));
      break;
    case "START_WITH":
      hit = actual !== undefined && values.some((v) => String(actual).startsWith(v));
      break;
    case "END_WITH":
      hit = actual !== undefined && values.some((v) => String(actual).endsWith(v));
      break;
    case "GREATER_THAN":
      hit = typeof actual === "number" && actual > num(values[0]);
      break;
    case "GREATER_THAN_OR_EQUAL_TO":
      hit = typeof actual === "number" && actual >= num(values[0]);
      break;
    case "LESS_THAN":
      hit = typeof actual === "number" && actual < num(values[0]);
      break;
    case "LESS_THAN_OR_EQUAL_TO":
      hit = typeof actual === "number" && actual <= num(values[0]);
      break;
    default:
      // URN-hierarchy operators make no sense for execution requests; treat as equality.
      hit = actual !== undefined && values.includes(String(actual));
  }
  return c.negated ? !hit : hit;
}

/** OR of AND groups; no groups means "match everything". */
export function matchOrFilters(
  groups: readonly (readonly Criterion[])[],
  doc: IndexDoc,
  fields: Set<string>,
): boolean {
  if (groups.length === 0) return true;
  return groups.some((and) => and.every((c) => matchCriterion(c, doc, fields)));
}

/** Sorts by one index field; missing values go last in both directions (ES's `_last`). */
export function sortByField<T extends { entity: StoredEntity; doc: IndexDoc }>(
  rows: T[],
  field: string,
  order: "ASCENDING" | "DESCENDING",
): T[] {
  const dir = order === "DESCENDING" ? -1 : 1;
  return rows.sort((a, b) => {
    const x = a.doc[field];
    const y = b.doc[field];
    if (x === undefined && y === undefined) return a.entity.seq - b.entity.seq;
    if (x === undefined) return 1;
    if (y === undefined) return -1;
    if (x < y) return -dir;
    if (x > y) return dir;
    return (a.entity.seq - b.entity.seq) * dir;
  });
}
