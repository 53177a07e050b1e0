/**
 * Where the poll loop's candidates come from: a discovery query (one per poll, with the pages to
 * ask for next: paging.ts), or between discoveries the last one's leftovers; and which it skips.
 *
 * Leftovers: a discovery asks for about three times the free slots, and a run that ends frees one
 * slot at a time. Instead of a new discovery query for every ended run (a page of requests from
 * the search index), the next claim takes the next untried candidate of the last discovery: the
 * claim re-reads the request from GMS's database anyway, so a leftover is as safe as a fresh hit.
 * Leftovers last at most one poll interval, and are dropped as soon as one proves stale (another
 * agent claimed or closed it): the pool is working through the same list, and a fresh discovery
 * is the better guide then. New requests are seen within one poll interval, as before.
 *
 * Recent: the requests this agent decided in the last minute (ran, closed, lost to a peer). The
 * search index lags behind GMS's database, so discovery keeps showing them pending or RUNNING for
 * a moment; skipping them saves a read each (claim and reaper).
 */
import type { Discovery, GmsApi } from "../gms/client.ts";
import type { Candidate } from "../request.ts";
import type { ClaimOutcome } from "./claim.ts";
import type { LiveState } from "../observe/live.ts";
import { metrics } from "../observe/metrics.ts";
import { nextPages, pendingOf } from "./paging.ts";

/** How long a request this agent decided is skipped by claims and the reaper. */
export const RECENT_MS = 60_000;
/** At most this many recent requests are remembered (the oldest are forgotten first). */
export const RECENT_MAX = 2_000;

export interface CandidatesDeps {
  gms: Pick<GmsApi, "discover" | "serverNow">;
  executorId: string;
  /** How long leftovers may be used. */
  pollIntervalMs: number;
  live?: LiveState;
  /** Told after each discovery. */
  polled?: (counts: { pending: number; running: number }) => void;
  now?: () => number;
}

export class Candidates {
  readonly #d: CandidatesDeps;
  readonly #now: () => number;
  #pendingStart = 0;
  #runningStart = 0;
  #last: { found: Discovery; at: number } | undefined;
  readonly #tried = new Set<string>();
  /** urn → when it was decided; insertion order is age order. */
  readonly #recent = new Map<string, number>();

  constructor(deps: CandidatesDeps) {
    this.#d = deps;
    this.#now = deps.now ?? (() => performance.now());
  }

  /**
   * One discovery query for about three times the `free` slots; its pending requests become the
   * leftovers as they are tried. Publishes how many are pending and the oldest one's age.
   */
  async discover(free: number): Promise<Discovery> {
    const { gms, live } = this.#d;
    const found = await gms.discover(this.#d.executorId, {
      count: Math.min(100, Math.max(10, free * 3)),
      pendingStart: this.#pendingStart,
      runningStart: this.#runningStart,
    });
    this.#last = { found, at: this.#now() };
    this.#tried.clear();
    this.#d.polled?.({ pending: found.pending.length, running: found.running.length });
    const { total, ageS } = pendingOf(found, gms.serverNow()); // oldest: GMS's clock
    metrics.pending(total, ageS);
    live?.polled(total, ageS);
    return found;
  }

  /** After a discovery's claims: whether any led anywhere (or no slot was free) picks the pages. */
  paged(found: Discovery, progressedOrBusy: boolean): void {
    ({ pending: this.#pendingStart, running: this.#runningStart } = nextPages(
      found.pages,
      progressedOrBusy,
    ));
  }

  /**
   * The last discovery and its untried, not recently decided candidates, if it is younger than
   * the poll interval, none proved stale, and any are left; otherwise undefined (discover).
   */
  leftover(): { found: Discovery; untried: Candidate[] } | undefined {
    const last = this.#last;
    if (!last) return undefined;
    if (this.#now() - last.at >= this.#d.pollIntervalMs) {
      this.drop();
      return undefined;
    }
    const untried = last.found.pending.filter((c) =>
      !this.#tried.has(c.urn) && !this.recent(c.urn)
    );
    return untried.length > 0 ? { found: last.found, untried } : undefined;
  }

  /** A candidate was tried (a claim or a close was sent): not a leftover any more. */
  tried(urn: string): void {
    this.#tried.add(urn);
  }

  /**
   * What a claim (or a close) of `urn` came to. Lost to a peer, or gone (deleted, closed): the
   * discovery was stale, so no leftovers. Won, cancelled, lost or gone: decided (recent). Left
   * for now, or uncertain (settled later): not decided.
   */
  claimed(urn: string, outcome: ClaimOutcome): void {
    const stale = outcome.kind === "lost" || (outcome.kind === "skip" && outcome.gone === true);
    if (stale) this.drop();
    if (stale || outcome.kind === "claimed" || outcome.kind === "cancelled") this.decided(urn);
  }

  /** A candidate proved stale: no leftovers until the next discovery. */
  drop(): void {
    this.#last = undefined;
    this.#tried.clear();
  }

  /** This agent decided `urn` (ran it, closed it, or lost it to a peer). */
  decided(urn: string): void {
    this.#recent.delete(urn);
    this.#recent.set(urn, this.#now());
    this.#forget();
  }

  /** Whether this agent decided `urn` in the last RECENT_MS. */
  recent(urn: string): boolean {
    const at = this.#recent.get(urn);
    return at !== undefined && this.#now() - at < RECENT_MS;
  }

  #forget(): void {
    const now = this.#now();
    for (const [urn, at] of this.#recent) {
      if (this.#recent.size <= RECENT_MAX && now - at < RECENT_MS) break;
      this.#recent.delete(urn);
    }
  }
}
