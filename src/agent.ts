/**
 * The agent: one poll loop that discovers and claims work while slots are free, a p-queue that
 * runs at most `max_concurrent` jobs (plus one reserved slot for TEST_CONNECTION, which the UI
 * waits for), one signal loop that reads KILL signals of every held run in a single batched
 * request, and the drain on shutdown.
 *
 * State machine:  created → running → draining → stopped
 *   running:  polling, claiming, running jobs.
 *   draining: no more claims; jobs finish (up to shutdown_timeout), then are cancelled (ABORTED).
 *   stopped:  every job ended and every result was delivered or given up on.
 */
import { EventEmitter } from "node:events";
import PQueue from "p-queue";
import { claimRequest } from "./claim.ts";
import { GmsError } from "./errors.ts";
import type { GmsApi, RunningSummary } from "./gms/client.ts";
import { leaseProperties, ownerLine } from "./identity.ts";
import { type ClaimedRequest, Job, type JobDeps, runDirName } from "./job.ts";
import { Poller } from "./poller.ts";
import { sleep } from "./process.ts";
import { isFencingError } from "./reporter.ts";
import type { Candidate } from "./request.ts";
import { pruneRunLogs } from "./retention.ts";

export type AgentState = "created" | "running" | "draining" | "stopped";

/** Typed lifecycle events (tests and metrics listen to these instead of sleeping). */
export interface AgentEvents {
  polled: [{ pending: number; running: number }];
  claimed: [{ urn: string; task: string }];
  finished: [{ urn: string }];
  reaped: [{ urn: string; status: string }];
  state: [AgentState];
}

/** What the agent needs: everything a job needs, with the full GMS client. */
export interface AgentDeps extends JobDeps {
  gms: GmsApi;
}

/** Tasks that may use the reserved slot: they take seconds and a user is watching. */
const FAST_TASKS = new Set(["TEST_CONNECTION"]);

export class Agent extends EventEmitter<AgentEvents> {
  readonly #d: AgentDeps;
  readonly #queue: PQueue;
  readonly #fastQueue = new PQueue({ concurrency: 1 });
  readonly #jobs = new Map<string, Job>();
  readonly #poller: Poller;
  readonly #signalPoller: Poller;
  #state: AgentState = "created";
  #drained: Promise<void> | undefined;
  #prunedAt = -Infinity;

  constructor(deps: AgentDeps) {
    super();
    this.#d = deps;
    const { agent } = deps.config;
    this.#queue = new PQueue({ concurrency: agent.maxConcurrent });
    this.#poller = new Poller({
      name: "poll",
      intervalMs: agent.pollIntervalMs,
      maxBackoffMs: Math.max(agent.pollIntervalMs, 300_000),
      tick: () => this.#poll(),
      log: deps.log,
    });
    this.#signalPoller = new Poller({
      name: "signal check",
      intervalMs: agent.heartbeatIntervalMs,
      maxBackoffMs: Math.max(agent.heartbeatIntervalMs, 60_000),
      tick: () => this.#checkSignals(),
      log: deps.log,
    });
  }

  get state(): AgentState {
    return this.#state;
  }

  get activeRuns(): number {
    return this.#jobs.size;
  }

  #setState(state: AgentState): void {
    this.#state = state;
    this.#d.log.info(`agent ${state}`, { executor_id: this.#d.config.executorId });
    this.emit("state", state);
  }

  start(): void {
    if (this.#state !== "created") throw new Error(`cannot start an agent that is ${this.#state}`);
    this.#setState("running");
    void this.#prune();
    this.#poller.start();
    this.#signalPoller.start();
  }

  /**
   * Stops claiming and lets runs finish for up to `graceMs` (default shutdown_timeout), then
   * cancels what is left (ABORTED, "agent shutting down") and waits for every result.
   */
  drain(graceMs = this.#d.config.agent.shutdownTimeoutMs): Promise<void> {
    if (this.#state === "created") this.#setState("stopped");
    this.#drained ??= (async () => {
      this.#setState("draining");
      await this.#poller.stop();
      const idle = Promise.all([this.#queue.onIdle(), this.#fastQueue.onIdle()]);
      if (this.#jobs.size > 0) {
        this.#d.log.info("waiting for runs to finish", {
          runs: this.#jobs.size,
          timeout_ms: graceMs,
        });
        const finished = await Promise.race([
          idle.then(() => true),
          sleep(graceMs).then(() => false),
        ]);
        if (!finished) this.cancelAll("shutdown");
      }
      await idle;
      await this.#signalPoller.stop();
      if (this.#d.outbox.pending > 0) {
        this.#d.log.info("delivering results", { results: this.#d.outbox.pending });
        const delivered = await this.#d.outbox.idle(Math.max(graceMs, 10_000));
        if (!delivered) {
          this.#d.log.warn(
            "GMS unreachable: undelivered results stay in state_dir for the next start",
            {
              results: this.#d.outbox.pending,
            },
          );
          this.#d.outbox.stop();
        }
      }
      this.#setState("stopped");
    })();
    return this.#drained;
  }

  /** Cancels every run now (TERM → grace → KILL); their results say why. */
  cancelAll(reason: "shutdown"): void {
    for (const job of this.#jobs.values()) job.cancel(reason);
  }

  /** Applies log retention to finished runs' directories (at start, then at most once a minute). */
  async #prune(): Promise<void> {
    const { config, log } = this.#d;
    if (Date.now() - this.#prunedAt < 60_000) return;
    this.#prunedAt = Date.now();
    const active = new Set([...this.#jobs.values()].map((j) => runDirName(j.id)));
    await pruneRunLogs(
      {
        workDir: config.agent.workDir,
        maxAgeMs: config.ingestion.logRetentionMs,
        maxBytes: config.ingestion.logRetentionBytes,
      },
      active,
      log,
    ).catch((err) => log.warn("log retention failed", { error: err }));
  }

  /** Last resort before exiting at once: SIGKILL every run's process group, write nothing. */
  killAll(): void {
    for (const job of this.#jobs.values()) job.kill();
  }

  /** One discovery query, then claims while slots are free (oldest first). */
  async #poll(): Promise<void> {
    if (this.#state !== "running") return;
    const { config } = this.#d;
    const free = config.agent.maxConcurrent - this.#queue.pending - this.#queue.size;
    const count = Math.min(100, Math.max(10, free * 3));
    const found = await this.#d.gms.discover(config.executorId, count);
    this.emit("polled", { pending: found.pending.length, running: found.running.length });
    for (const c of spreadClaims(found.pending, free)) {
      if (this.#state !== "running") break;
      if (this.#jobs.has(c.urn)) continue;
      const fast = FAST_TASKS.has(c.task);
      const slots = config.agent.maxConcurrent - this.#queue.pending - this.#queue.size;
      const fastFree = this.#fastQueue.pending + this.#fastQueue.size === 0;
      if (slots <= 0 && !(fast && fastFree)) continue;
      if (
        c.requestedAt !== undefined && Date.now() - c.requestedAt > config.agent.maxRequestAgeMs
      ) {
        await this.#abortStale(c);
        continue;
      }
      await this.#claim(c, fast && slots <= 0);
    }
    await this.#reap(found.running);
  }

  async #claim(c: Candidate, useReservedSlot: boolean): Promise<void> {
    const { config, identity, log } = this.#d;
    let outcome;
    try {
      outcome = await claimRequest(this.#d.gms, c.urn, identity, config.agent.leaseTtlMs);
    } catch (err) {
      log.warn("claim failed", { urn: c.urn, error: err });
      if (err instanceof GmsError && err.code !== "GMS_REJECTED") throw err; // GMS trouble: back off
      return;
    }
    if (outcome.kind === "lost") {
      log.debug("claim lost to another agent", { urn: c.urn });
      return;
    }
    if (outcome.kind === "skip") {
      log.debug("not claimed", { urn: c.urn, reason: outcome.reason });
      return;
    }
    if (outcome.kind === "cancelled") {
      log.info("closed a request cancelled before it started", { urn: c.urn });
      return;
    }
    log.info("claimed", { urn: c.urn, task: c.task, reserved_slot: useReservedSlot || undefined });
    this.emit("claimed", { urn: c.urn, task: c.task });
    this.#startJob(outcome, useReservedSlot);
  }

  #startJob(claimed: ClaimedRequest, useReservedSlot: boolean): void {
    const job = new Job(this.#d, claimed);
    this.#jobs.set(job.urn, job);
    const queue = useReservedSlot ? this.#fastQueue : this.#queue;
    void queue.add(() => job.run()).finally(() => {
      this.#jobs.delete(job.urn);
      this.emit("finished", { urn: job.urn });
      this.#poller.nudge(); // a slot is free: look for work now
      void this.#prune();
    });
  }

  /** A request nobody picked up within max_request_age is closed, so it stops showing as Pending. */
  async #abortStale(c: Candidate): Promise<void> {
    const { config, identity, log } = this.#d;
    const waited = Date.now() - (c.requestedAt ?? 0);
    const outcome = await claimRequest(
      this.#d.gms,
      c.urn,
      identity,
      config.agent.leaseTtlMs,
      Date.now(),
      (now) => ({
        status: "ABORTED",
        startTimeMs: now,
        durationMs: 0,
        report:
          `${ownerLine(identity)}\nThis request waited ${Math.round(waited / 60000)} minutes ` +
          `(longer than agent.max_request_age) and no agent for executor '${config.executorId}' picked it up, so it was not run. ` +
          "Run it again if it is still wanted.",
      }),
    );
    if (outcome.kind === "claimed") {
      log.warn("closed a request that waited too long", { urn: c.urn, waited_ms: waited });
      this.emit("reaped", { urn: c.urn, status: "ABORTED" });
    }
  }

  /**
   * RUNNING requests of our pool whose owner stopped renewing its lease. Search gives start +
   * duration (heartbeats keep durationMs current), so the check costs no extra request unless
   * a lease looks expired; then the request is re-read and closed with a conditional write on
   * the version read, so two reapers cannot both win. A KILL on such an orphan is answered with
   * CANCELLED, as the Python executor does for unknown runs.
   */
  async #reap(running: RunningSummary[]): Promise<void> {
    const { config, identity, log, gms } = this.#d;
    const ttl = config.agent.leaseTtlMs;
    const now = Date.now();
    for (const r of running) {
      if (this.#jobs.has(r.urn) || r.startTimeMs === undefined || r.durationMs === undefined) {
        continue;
      }
      if (r.startTimeMs + r.durationMs + ttl > now) continue; // the lease may still be valid
      const state = await gms.readRequest(r.urn);
      const result = state?.result;
      if (
        !result || result.value.status !== "RUNNING" ||
        result.properties.appSource !== "ingest-agent"
      ) continue;
      if (result.properties.agentInstance === identity.instanceId) continue;
      const expiresAt = Number(
        result.properties.leaseExpiresAt ?? r.startTimeMs + r.durationMs + ttl,
      );
      const killed = state.signal?.value.signal === "KILL" &&
        (state.signal.value.createdAt?.time ?? 0) >= (result.value.startTimeMs ?? 0);
      if (now < expiresAt || (!killed && now < expiresAt + ttl)) continue;
      const owner = result.properties.agentInstance ?? "unknown";
      const status = killed ? "CANCELLED" : "ABORTED";
      const report = killed
        ? `${
          ownerLine(identity)
        }\nNo active execution request found. The agent that ran it (${owner}) is gone; the run was cancelled by request.`
        : `${
          ownerLine(identity)
        }\nexecutor ${config.executorId} agent ${owner} stopped renewing its lease at ${
          new Date(expiresAt).toISOString()
        }; the run was aborted. Its outcome is unknown: run it again.`;
      try {
        await gms.writeResult(r.urn, {
          status,
          startTimeMs: result.value.startTimeMs ?? now,
          durationMs: now - (result.value.startTimeMs ?? now),
          report: `${report}\n\n${result.value.report ?? ""}`.slice(0, 1_000_000),
        }, { ifVersionMatch: result.version, properties: leaseProperties(identity, now) });
        log.warn(killed ? "cancelled an orphaned run" : "aborted a run whose agent is gone", {
          urn: r.urn,
          owner,
        });
        this.emit("reaped", { urn: r.urn, status });
      } catch (err) {
        if (isFencingError(err)) continue; // another reaper, or the owner came back: fine
        throw err;
      }
    }
  }

  /** Reads the signal aspect of every held run in one request; a KILL cancels the run. */
  async #checkSignals(): Promise<void> {
    if (this.#jobs.size === 0) return;
    const signals = await this.#d.gms.readSignals([...this.#jobs.keys()]);
    for (const [urn, signal] of signals) {
      const job = this.#jobs.get(urn);
      if (!job || signal.value.signal !== "KILL") continue;
      // Any KILL counts: one that existed at claim time closed the request before it ran
      // (claim.ts), so GMS's clock never has to be compared with ours.
      job.cancel("user", signal.value.createdAt?.actor, signal.value.createdAt?.time);
    }
  }
}

/**
 * Agents of a pool see the same oldest-first list; if all went for its head they would mostly
 * collide (lost claims cost a read and a write each). Each agent shuffles a window of about three
 * times its free slots at the head of the list, so they spread, and keeps the rest in order.
 */
export function spreadClaims<T>(candidates: T[], free: number, random = Math.random): T[] {
  const window = Math.min(candidates.length, Math.max(0, free) * 3);
  const head = candidates.slice(0, window);
  for (let i = head.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [head[i], head[j]] = [head[j]!, head[i]!];
  }
  return [...head, ...candidates.slice(window)];
}
