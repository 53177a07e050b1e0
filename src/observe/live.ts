/**
 * The agent's live state, in one place: what `/healthz`, `/readyz` and `/status` read. The
 * modules that know a fact push it here (the poll loop its iterations, the GMS transport each
 * exchange's outcome, the agent its runs, the outbox its size through a getter); the endpoints
 * only read. No token, secret or recipe value is ever stored here.
 */

export interface RunInfo {
  urn: string;
  task: string;
  started_at: string;
  /** What changes while it runs, read when asked (not copied on every line). */
  read(): { pid?: number; sourceType?: string; lastOutputAt?: number };
}

export interface LastPoll {
  at: string;
  ok: boolean;
  pending?: number;
  oldest_pending_age_s?: number;
}

export type NotReady =
  | "starting"
  | "gms_unreachable"
  | "unauthorized"
  | "draining"
  | "runtime_unusable";

export interface LiveOptions {
  version: string;
  executorId: string;
  instance: string;
  server: string;
  slotsMax: number;
  pollIntervalMs: number;
  warnings?: readonly string[];
  /** Monotonic clock (tests pass a fake). */
  monotonic?: () => number;
}

export class LiveState {
  readonly #o: LiveOptions;
  readonly #mono: () => number;
  readonly #runs = new Map<string, RunInfo>();
  #draining = false;
  #lastPoll: LastPoll | undefined;
  /** Monotonic time the poll loop last finished an iteration (or started). */
  #loopAt: number;
  /** Whether the poll loop runs yet (recovery at start, `once` reading its set: not yet). */
  #loopStarted = false;
  #loopWaitMs = 0;
  #gmsFailures = 0;
  #gmsOk = false;
  #unauthorized = false;
  #runtimeProblem: string | undefined;
  #admissionBlocked: string | undefined;
  #gmsInfo: () => { version?: string; discovery?: string } = () => ({});
  #outboxPending: () => number = () => 0;

  constructor(options: LiveOptions) {
    this.#o = options;
    this.#mono = options.monotonic ?? (() => performance.now());
    this.#loopAt = this.#mono();
  }

  // ---- written by the modules that know ----

  /** The poll loop starts: from now on it must finish iterations in time. */
  loopStarted(): void {
    this.#loopStarted = true;
    this.#loopAt = this.#mono();
  }

  /** The poll loop finished an iteration; `waitMs` is its next wait (interval or backoff). */
  pollIteration(ok: boolean, waitMs: number): void {
    this.#loopAt = this.#mono();
    this.#loopWaitMs = waitMs;
    if (!ok) this.#lastPoll = { at: new Date().toISOString(), ok: false };
  }

  /** A discovery answered: how many requests are pending, and the oldest one's age. */
  polled(pending: number, oldestPendingAgeS: number | undefined): void {
    this.#lastPoll = {
      at: new Date().toISOString(),
      ok: true,
      pending,
      ...(oldestPendingAgeS !== undefined ? { oldest_pending_age_s: oldestPendingAgeS } : {}),
    };
  }

  /** One HTTP exchange with GMS ended: ok, a failure, or refused credentials (401/403). */
  gmsExchange(outcome: "ok" | "failed" | "unauthorized"): void {
    if (outcome === "ok") {
      this.#gmsOk = true;
      this.#gmsFailures = 0;
      this.#unauthorized = false;
    } else {
      this.#gmsFailures++;
      if (outcome === "unauthorized") this.#unauthorized = true;
    }
  }

  /** Where the GMS version and the discovery mode are read from (the GMS client knows). */
  gmsInfo(getter: () => { version?: string; discovery?: string }): void {
    this.#gmsInfo = getter;
  }

  runStarted(run: RunInfo): void {
    this.#runs.set(run.urn, run);
  }

  runEnded(urn: string): void {
    this.#runs.delete(urn);
  }

  /** Why runs cannot start on this host (the datahub CLI is missing…), or undefined. */
  runtime(problem: string | undefined): void {
    this.#runtimeProblem = problem;
  }

  /**
   * Why no new run starts now although the agent could run one (the host's MemAvailable is below
   * agent.min_available_memory), or undefined. Shown on /status; /readyz stays as it is.
   */
  admission(blocked: string | undefined): void {
    this.#admissionBlocked = blocked;
  }

  draining(): void {
    this.#draining = true;
  }

  outboxPending(getter: () => number): void {
    this.#outboxPending = getter;
  }

  // ---- read by the endpoints ----

  /** Alive while the poll loop finishes iterations in time; GMS being down does not matter. */
  health(): { ok: true } | { ok: false; reason: string } {
    if (this.#draining || !this.#loopStarted) return { ok: true };
    const since = this.#mono() - this.#loopAt;
    const allowed = Math.max(3 * this.#o.pollIntervalMs, 2 * this.#loopWaitMs);
    if (since <= allowed) return { ok: true };
    return {
      ok: false,
      reason: `the poll loop has not finished an iteration for ${
        Math.round(since / 1000)
      } s (allowed ${Math.round(allowed / 1000)} s): it is wedged`,
    };
  }

  /** Ready while GMS answers with accepted credentials (two failures or one 401/403: not). */
  readiness(): { ready: true } | { ready: false; reason: NotReady; detail: string } {
    if (this.#draining) {
      return { ready: false, reason: "draining", detail: "the agent is shutting down" };
    }
    if (this.#runtimeProblem) {
      return { ready: false, reason: "runtime_unusable", detail: this.#runtimeProblem };
    }
    if (this.#unauthorized) {
      return {
        ready: false,
        reason: "unauthorized",
        detail: "GMS refused the agent's credentials (datahub.token or the system client)",
      };
    }
    if (this.#gmsFailures >= 2) {
      return {
        ready: false,
        reason: "gms_unreachable",
        detail: `${this.#gmsFailures} consecutive GMS exchanges failed`,
      };
    }
    if (!this.#gmsOk) {
      return { ready: false, reason: "starting", detail: "GMS has not answered yet" };
    }
    return { ready: true };
  }

  status(): Record<string, unknown> {
    const runs = [...this.#runs.values()].map((r) => {
      const now = r.read();
      return {
        urn: r.urn,
        task: r.task,
        source_type: now.sourceType ?? null,
        started_at: r.started_at,
        last_output_at: now.lastOutputAt !== undefined
          ? new Date(now.lastOutputAt).toISOString()
          : null,
        pid: now.pid ?? null,
      };
    });
    return {
      version: this.#o.version,
      executor_id: this.#o.executorId,
      instance: this.#o.instance,
      draining: this.#draining,
      slots: { max: this.#o.slotsMax, used: runs.length },
      runs,
      last_poll: this.#lastPoll ?? null,
      gms: {
        server: this.#o.server,
        version: this.#gmsInfo().version ?? null,
        discovery: this.#gmsInfo().discovery ?? null,
      },
      outbox: { pending: this.#outboxPending() },
      // Why nothing is claimed now (the runtime problem of /readyz, or too little memory).
      admission: { blocked: this.#runtimeProblem ?? this.#admissionBlocked ?? null },
      warnings: this.#o.warnings ?? [],
    };
  }
}
