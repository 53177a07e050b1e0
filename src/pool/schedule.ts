/**
 * Careful scheduling: one run per ingestion source in the pool, and per-source-type limits.
 *
 * Before a claim (`before`): a request whose ingestion source already runs — a job of this
 * agent, or a RUNNING request of the pool in this poll's discovery — is left pending
 * (`agent.on_overlap` wait, the default for manual runs) or closed as DUPLICATE naming the running
 * one (skip, the default for scheduled runs). A request whose source type is at its
 * `agent.source_limits` is left pending for another agent, and the next one is tried.
 *
 * After a claim, before the CLI starts (`settle`): two agents may claim requests of one source in
 * the same instant (each saw the other's still pending). Each waits SETTLE_MS, for the other's
 * claim to land, then reads the others of that source it saw pending (consistent reads): a
 * RUNNING one that is the older request, or that was claimed clearly (SETTLE_MS) before ours,
 * wins, and ours is closed as DUPLICATE. Both agents judge the same stored facts, so exactly one
 * runs. The window that remains: a claim whose write takes longer than SETTLE_MS to land, or
 * pool hosts whose clocks differ by more than SETTLE_MS (claim times are the agents' clocks).
 */
import type { AgentConfig, OverlapPolicy } from "../config/config.ts";
import type { GmsApi, RunningSummary } from "../gms/client.ts";
import type { Candidate, RequestInput } from "../request.ts";
import { parseRecipe, sourceType } from "../run/recipe.ts";
import { sleep } from "../timers.ts";
import { duplicateReason, staleReason } from "./claim.ts";

export const SETTLE_MS = 1_000;

/** What is known of a request from its (immutable) input. */
interface Facts {
  ingestionSource?: string;
  scheduled: boolean;
  sourceType?: string;
}

export type Before =
  | { kind: "claim" }
  /** Left pending: `why` for the log. */
  | { kind: "leave"; why: string }
  /** Closed without running: another request of the same source runs. */
  | { kind: "duplicate"; of: string };

/** What the poll loop does with a candidate now. */
export type Action =
  | { kind: "claim" }
  | { kind: "leave"; why: string }
  /** Closed without running (through a claim): too old, or a duplicate of a running one. */
  | { kind: "close"; status: "ABORTED" | "DUPLICATE"; why: string };

export class Schedule {
  readonly #config: AgentConfig;
  /** This agent's runs (claimed, not ended) and what they run. */
  readonly #mine = new Map<string, Facts>();
  /** Facts learnt from reads, so a waiting request is not read again every poll (bounded). */
  readonly #known = new Map<string, Facts>();

  constructor(config: AgentConfig) {
    this.#config = config;
  }

  /**
   * What to do with `c` now: close it (waited longer than max_request_age, by GMS's clock `now`,
   * since GMS or the UI's host stamped requestedAt; or a duplicate: `before`), leave it, claim it.
   */
  action(c: Candidate, running: readonly RunningSummary[], now: number): Action {
    const { agent, executorId } = this.#config;
    if (c.requestedAt !== undefined && now - c.requestedAt > agent.maxRequestAgeMs) {
      return {
        kind: "close",
        status: "ABORTED",
        why: staleReason(executorId, now - c.requestedAt),
      };
    }
    const plan = this.before(c, running);
    return plan.kind === "duplicate"
      ? { kind: "close", status: "DUPLICATE", why: duplicateReason(plan.of) }
      : plan;
  }

  /** Whether to claim `c` now, given the pool's RUNNING requests of this poll. */
  before(c: Candidate, running: readonly RunningSummary[]): Before {
    if (c.task === "TEST_CONNECTION") return { kind: "claim" };
    const facts = { ...this.#known.get(c.urn), ...factsOf(c) };
    const source = facts.ingestionSource;
    if (source) {
      const busy = this.#runningOf(source, c.urn) ??
        running.find((r) => r.ingestionSource === source && r.urn !== c.urn)?.urn;
      if (busy) {
        return this.policy(facts) === "skip"
          ? { kind: "duplicate", of: busy }
          : { kind: "leave", why: `${busy} of the same ingestion source is running` };
      }
    }
    return this.#limited(facts.sourceType) ?? { kind: "claim" };
  }

  /** After reading the request (inside the claim): the source-type limit, now that it is known. */
  admit(urn: string, input: RequestInput, c: Candidate): Before {
    if (input.task === "TEST_CONNECTION") return { kind: "claim" };
    const facts: Facts = { ...factsOf(c), sourceType: typeOf(input) };
    this.#remember(urn, facts);
    return this.#limited(facts.sourceType) ?? { kind: "claim" };
  }

  /** `admit` as claim.ts `claimRequest` asks it, after reading the request. */
  decider(c: Candidate) {
    return (_: number, r: { input: RequestInput }) => {
      const admit = this.admit(c.urn, r.input, c);
      return admit.kind === "leave" ? { leave: admit.why } : undefined;
    };
  }

  /** The other requests of `c`'s source seen pending with it (settled after a claim). */
  static siblings(c: Candidate, seen: readonly Candidate[]): Candidate[] {
    if (!c.ingestionSource) return [];
    return seen.filter((s) => s.urn !== c.urn && s.ingestionSource === c.ingestionSource);
  }

  /** The overlap policy for a request. */
  policy(facts: { scheduled: boolean; sourceType?: string }): OverlapPolicy {
    const { onOverlap } = this.#config.agent;
    const byType = facts.sourceType !== undefined
      ? onOverlap.sourceTypes[facts.sourceType]
      : undefined;
    return byType ?? (facts.scheduled ? onOverlap.scheduled : onOverlap.manual);
  }

  started(c: Candidate, input: RequestInput): void {
    this.#mine.set(c.urn, { ...factsOf(c), sourceType: typeOf(input) });
  }

  ended(urn: string): void {
    this.#mine.delete(urn);
    this.#known.delete(urn);
  }

  /**
   * After our claim of `me`: the request that wins against it, if one of `siblings` (requests
   * of the same source seen pending with it) runs and is the older or was claimed clearly
   * before ours. Resolves undefined when ours may run.
   */
  async settle(
    gms: Pick<GmsApi, "readRequest">,
    me: { urn: string; requestedAt?: number; claimedAt: number },
    siblings: readonly Candidate[],
  ): Promise<string | undefined> {
    if (siblings.length === 0) return undefined;
    await sleep(SETTLE_MS);
    for (const s of siblings) {
      if (this.#mine.has(s.urn)) continue; // ours: `before` kept them apart already
      const result = (await gms.readRequest(s.urn))?.result?.value;
      if (result?.status !== "RUNNING") continue;
      const older = (s.requestedAt ?? 0) < (me.requestedAt ?? 0) ||
        ((s.requestedAt ?? 0) === (me.requestedAt ?? 0) && s.urn < me.urn);
      const first = (result.startTimeMs ?? Infinity) < me.claimedAt - SETTLE_MS;
      if (older || first) return s.urn;
    }
    return undefined;
  }

  #runningOf(source: string, except: string): string | undefined {
    for (const [urn, f] of this.#mine) {
      if (urn !== except && f.ingestionSource === source) return urn;
    }
    return undefined;
  }

  #limited(type: string | undefined): Before | undefined {
    const limit = type !== undefined ? this.#config.agent.sourceLimits[type] : undefined;
    if (limit === undefined) return undefined;
    let n = 0;
    for (const f of this.#mine.values()) if (f.sourceType === type) n++;
    return n >= limit
      ? { kind: "leave", why: `agent.source_limits.${type} (${limit}) reached` }
      : undefined;
  }

  #remember(urn: string, facts: Facts): void {
    if (this.#known.size >= 1000) this.#known.delete(this.#known.keys().next().value!);
    this.#known.set(urn, facts);
  }
}

/** A candidate as discovery would show it, from a request's input (a claim settled by reading). */
export function candidateOf(urn: string, input: RequestInput): Candidate {
  const source = input.source?.ingestionSource;
  return {
    urn,
    task: input.task,
    executorId: input.executorId ?? "default",
    requestedAt: input.requestedAt,
    ...(source
      ? { ingestionSource: source, scheduled: input.source?.type === "SCHEDULED_INGESTION_SOURCE" }
      : {}),
  };
}

function factsOf(c: Candidate): Facts {
  return {
    ...(c.ingestionSource ? { ingestionSource: c.ingestionSource } : {}),
    scheduled: c.scheduled ?? false,
  };
}

/** The recipe's source type (undefined when the recipe cannot be read: the run will say why). */
function typeOf(input: RequestInput): string | undefined {
  try {
    const recipe = input.args.recipe;
    return recipe ? sourceType(parseRecipe(recipe)) : undefined;
  } catch {
    return undefined;
  }
}
