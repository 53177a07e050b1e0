/**
 * `ingest-agent once`: runs every request pending for the executor id at start, then exits. For
 * batch windows without cron and for Kubernetes Jobs.
 *
 * The work set is fixed at start by one paged discovery (requests created later are left for a
 * later run). The agent then runs as for `run`, with its discovery narrowed to that set, and is
 * drained once every request of the set was run here or is no longer pending (another agent of
 * the pool took it, a user cancelled or deleted it). Exit 0 when everything run here succeeded
 * or nothing was pending; 1 when a run (or a request closed as too old) ended otherwise, a
 * signal left requests unrun, or a result could not be delivered.
 */
import type { Discovery, GmsApi } from "../gms/client.ts";
import type { Identity } from "../identity.ts";
import type { Logger } from "../observe/log.ts";
import type { AgentEvents } from "../pool/agent.ts";

/** The events of the agent that `once` follows. */
interface AgentView {
  readonly busy: boolean;
  on<K extends keyof AgentEvents>(event: K, listener: (...args: AgentEvents[K]) => void): unknown;
}

export class OnceWork {
  readonly #gms: GmsApi;
  readonly #identity: Identity;
  readonly #log: Logger;
  /** Requests of the work set not decided yet: urn → task. */
  readonly #remaining = new Map<string, string>();
  /** Requests this agent ran or closed, with their terminal status. */
  readonly #ended = new Map<string, string>();
  /** Requests that left the set without running here, with what GMS shows of them. */
  readonly #elsewhere = new Map<string, string>();
  #size = 0;

  constructor(o: { gms: GmsApi; identity: Identity; log: Logger }) {
    this.#gms = o.gms;
    this.#identity = o.identity;
    this.#log = o.log;
  }

  /** Fixes the work set: every pending request of the executor id, all pages (oldest first). */
  async collect(): Promise<number> {
    let start = 0;
    for (;;) {
      const found = await this.#gms.discover(this.#identity.executorId, {
        count: 100,
        pendingStart: start,
        runningStart: 0,
      });
      for (const c of found.pending) this.#remaining.set(c.urn, c.task);
      const page = found.pages.pending;
      const end = page.start + page.returned;
      if (page.returned === 0 || end >= page.total) break;
      start = end;
    }
    this.#size = this.#remaining.size;
    return this.#size;
  }

  /** The GMS client the agent uses: the same, with discovery narrowed to the work set. */
  narrowed(): GmsApi {
    const gms = this.#gms;
    return {
      discover: async (executorId, pages): Promise<Discovery> => {
        const found = await gms.discover(executorId, pages);
        return { ...found, pending: found.pending.filter((c) => this.#remaining.has(c.urn)) };
      },
      readRequest: (urn) => gms.readRequest(urn),
      readSignals: (urns) => gms.readSignals(urns),
      writeResult: (urn, value, options) => gms.writeResult(urn, value, options),
      secretValues: (names) => gms.secretValues(names),
      serverNow: () => gms.serverNow(),
      close: () => gms.close(),
    };
  }

  /**
   * Follows the agent until every request of the set is decided (resolves then), or `stop` is
   * aborted (a signal); it keeps counting the runs that end afterwards (drain). Requests the
   * agent did not take are re-read only while it is idle after a poll, which a set of pending
   * requests with free slots never is for long.
   */
  follow(agent: AgentView, stop: AbortSignal): Promise<void> {
    let checking = false;
    let resolveDone!: () => void;
    const finished = new Promise<void>((r) => resolveDone = r);
    const done = () => {
      if (this.#remaining.size === 0 || stop.aborted) resolveDone();
    };
    agent.on("finished", (e) => {
      if (!this.#remaining.delete(e.urn)) return;
      this.#ended.set(e.urn, e.status ?? "UNKNOWN");
      done();
    });
    agent.on("reaped", (e) => {
      if (!e.unrun || !this.#remaining.delete(e.urn)) return;
      this.#ended.set(e.urn, e.status);
      done();
    });
    agent.on("polled", () => {
      if (checking || agent.busy || stop.aborted) return;
      checking = true;
      this.#settleIdle(agent).catch((err) =>
        this.#log.warn("once: could not read the requests left; trying after the next poll", {
          error: err,
        })
      ).finally(() => {
        checking = false;
        done();
      });
    });
    stop.addEventListener("abort", done, { once: true });
    done();
    return finished;
  }

  /** Reads the requests left while the agent is idle: those GMS no longer shows pending leave. */
  async #settleIdle(agent: AgentView): Promise<void> {
    for (const urn of [...this.#remaining.keys()]) {
      const request = await this.#gms.readRequest(urn);
      // The agent may have claimed it meanwhile (its own result): the agent's events decide.
      if (agent.busy || !this.#remaining.has(urn)) continue;
      const result = request?.result;
      if (result?.properties.agentInstance === this.#identity.instanceId) {
        // Ours: RUNNING is a run the agent's events will end; else it closed it without running
        // (cancelled before it started, closed by the reaper).
        if (result.value.status !== "RUNNING") {
          this.#remaining.delete(urn);
          this.#ended.set(urn, result.value.status);
        }
        continue;
      }
      let seen: string | undefined;
      if (!request) seen = "deleted";
      else if (!request.input) seen = "no input aspect: cannot be run";
      else if (result) {
        seen = `${result.value.status} (${result.properties.agentInstance ?? "not ingest-agent"})`;
      }
      if (seen === undefined) continue; // still pending: a later poll claims it
      this.#remaining.delete(urn);
      this.#elsewhere.set(urn, seen);
      this.#log.info("once: a request of the set was not run here", { urn, now: seen });
    }
  }

  /** Logs the summary and returns the exit code (`outboxPending`: results left undelivered). */
  finish(outboxPending: number): number {
    const failed = [...this.#ended].filter(([, status]) => status !== "SUCCESS");
    const summary = {
      requests: this.#size,
      succeeded: this.#ended.size - failed.length,
      failed: failed.length,
      not_run_here: this.#elsewhere.size,
      left_pending: this.#remaining.size,
      undelivered: outboxPending,
    };
    const ok = failed.length === 0 && this.#remaining.size === 0 && outboxPending === 0;
    if (ok) this.#log.info("once: done", summary);
    else {
      this.#log.error("once: done, not all succeeded", {
        ...summary,
        failures: failed.slice(0, 20).map(([urn, status]) => `${urn} ${status}`),
        left: [...this.#remaining.keys()].slice(0, 20),
      });
    }
    return ok ? 0 : 1;
  }
}
