/**
 * pool/ owns finding and claiming work: the agent's poll loop, slots and signal loop (this file),
 * the poller, claims, paging, the reaper and crash recovery at start. It may import every folder
 * below it; only the command line imports it.
 *
 * The agent: one poll loop that discovers and claims work while slots are free, a p-queue that
 * runs at most `max_concurrent` jobs (plus one reserved slot for TEST_CONNECTION, which the UI
 * waits for), one signal loop that reads KILL signals of every held run in a single batched
 * request, and the drain on shutdown.
 *
 * States: created → running → draining → stopped
 *   running:  polling, claiming, running jobs.
 *   draining: no more claims; jobs finish (up to shutdown_timeout), then are cancelled (ABORTED).
 *   stopped:  every job ended and every result was delivered or given up on.
 */
import { EventEmitter } from "node:events";
import PQueue from "p-queue";
import {
  type ClaimOutcome,
  claimRequest,
  closeUnrun,
  perCandidate,
  settleClaim,
  UncertainClaims,
} from "./claim.ts";
import type { GmsApi } from "../gms/client.ts";
import type { AdoptedRun } from "../run/execution.ts";
import { Job, type JobDeps } from "../run/job.ts";
import { runDirName } from "../run/prepare.ts";
import { Candidates } from "./candidates.ts";
import { Poller } from "./poller.ts";
import { sleep } from "../run/process.ts";
import type { Candidate } from "../request.ts";
import { throttledPruner } from "../state/retention.ts";
import type { LiveState } from "../observe/live.ts";
import { metrics } from "../observe/metrics.ts";
import { spreadClaims } from "./paging.ts";
import { Reaper } from "./reaper.ts";
import { candidateOf, Schedule } from "./schedule.ts";
import { applyKills } from "./signals.ts";

export type AgentState = "created" | "running" | "draining" | "stopped";

/** Typed lifecycle events (tests and metrics listen to these instead of sleeping). */
export interface AgentEvents {
  polled: [{ pending: number; running: number }];
  claimed: [{ urn: string; task: string }];
  /** A job ended; `status` is its terminal status (undefined if it wrote none). */
  finished: [{ urn: string; task: string; status?: string }];
  /** Closed by the reaper, or (`unrun`) without running here: too old, a duplicate. */
  reaped: [{ urn: string; status: string; unrun?: boolean }];
  state: [AgentState];
}

/** What the agent needs: everything a job needs, with the full GMS client. */
export interface AgentDeps extends JobDeps {
  gms: GmsApi;
  /** Where the endpoints read the agent's live state (when they are on). */
  live?: LiveState;
  /** Whether GMS answers at all (its /health): ends the poll loop's backoff once it is back. */
  probe?: () => Promise<boolean>;
  /** Why runs cannot start here now (the datahub CLI is missing…); nothing is claimed then. */
  runtimeProblem?: () => Promise<string | undefined>;
}

/** Tasks that may use the reserved slot: they take seconds and a user is watching. */
const FAST_TASKS = new Set(["TEST_CONNECTION"]);

export class Agent extends EventEmitter<AgentEvents> {
  readonly #d: AgentDeps;
  readonly #queue: PQueue;
  readonly #fastQueue = new PQueue({ concurrency: 1 });
  /** Runs re-adopted after a restart: already running, so never queued behind the limit. */
  readonly #adoptedQueue = new PQueue();
  readonly #jobs = new Map<string, Job>();
  readonly #poller: Poller;
  readonly #signalPoller: Poller;
  #state: AgentState = "created";
  #drained: Promise<void> | undefined;
  /** Log retention of finished runs' directories (at most once a minute). */
  readonly #prune: () => void;
  readonly #uncertain = new UncertainClaims();
  readonly #reaper: Reaper;
  readonly #schedule: Schedule;
  readonly #candidates: Candidates;

  constructor(deps: AgentDeps) {
    super();
    this.#d = deps;
    const { agent, ingestion } = deps.config;
    this.#queue = new PQueue({ concurrency: agent.maxConcurrent });
    this.#schedule = new Schedule(deps.config);
    this.#candidates = new Candidates({
      gms: deps.gms,
      executorId: deps.config.executorId,
      pollIntervalMs: agent.pollIntervalMs,
      live: deps.live,
      polled: (counts) => this.emit("polled", counts),
    });
    const prune = throttledPruner({
      workDir: agent.workDir,
      maxAgeMs: ingestion.logRetentionMs,
      maxBytes: ingestion.logRetentionBytes,
    }, deps.log);
    this.#prune = () => prune(() => new Set([...this.#jobs.values()].map((j) => runDirName(j.id))));
    this.#poller = new Poller({
      name: "poll",
      intervalMs: agent.pollIntervalMs,
      maxBackoffMs: Math.max(agent.pollIntervalMs, 300_000),
      tick: () => this.#poll(),
      probe: deps.probe,
      onIteration: (ok, waitMs) => {
        metrics.poll(ok ? "ok" : "error");
        deps.live?.pollIteration(ok, waitMs);
      },
      log: deps.log,
    });
    this.#reaper = new Reaper({
      config: deps.config,
      identity: deps.identity,
      log: deps.log,
      gms: deps.gms,
      holds: (urn) => this.#holds(urn),
      reaped: (urn, status) => this.emit("reaped", { urn, status }),
    });
    this.#signalPoller = new Poller({
      name: "signal check",
      intervalMs: agent.heartbeatIntervalMs,
      maxBackoffMs: Math.max(agent.heartbeatIntervalMs, 60_000),
      tick: () => applyKills(this.#d.gms, this.#jobs), // signals.ts
      log: deps.log,
    });
  }

  get state(): AgentState {
    return this.#state;
  }

  get activeRuns(): number {
    return this.#jobs.size;
  }

  /** Whether anything is still in flight here: a job, or a claim whose answer was lost. */
  get busy(): boolean {
    return this.#jobs.size > 0 || this.#uncertain.size > 0;
  }

  #setState(state: AgentState): void {
    this.#state = state;
    this.#d.log.info(`agent ${state}`, { executor_id: this.#d.config.executorId });
    this.emit("state", state);
  }

  start(): void {
    // A signal during recovery at start may already have stopped it: nothing to start then.
    if (this.#state === "stopped" || this.#state === "draining") return;
    if (this.#state !== "created") throw new Error(`cannot start an agent that is ${this.#state}`);
    this.#setState("running");
    this.#d.live?.loopStarted();
    this.#prune();
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
      this.#d.live?.draining();
      await this.#poller.stop();
      const queues = [this.#queue, this.#fastQueue, this.#adoptedQueue];
      const idle = Promise.all(queues.map((q) => q.onIdle()));
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
            { results: this.#d.outbox.pending },
          );
          this.#d.outbox.stop();
        }
      }
      this.#setState("stopped");
    })();
    return this.#drained;
  }

  /** Stops polling and leaves the runs going (on_shutdown: detach; the next start re-adopts). */
  async detach(): Promise<void> {
    this.#setState("stopped");
    await Promise.all([this.#poller.stop(), this.#signalPoller.stop()]);
  }

  /** Cancels every run now (TERM → grace → KILL); their results say why. */
  cancelAll(reason: "shutdown"): void {
    for (const job of this.#jobs.values()) job.cancel(reason);
  }

  /** Last resort before exiting at once: SIGKILL every run's process group, write nothing. */
  killAll(): void {
    for (const job of this.#jobs.values()) job.kill();
  }

  /**
   * One discovery query (or the last one's leftovers, candidates.ts), then claims while slots are
   * free (oldest first), then the reaper.
   */
  async #poll(): Promise<void> {
    if (this.#state !== "running") return;
    const { log } = this.#d;
    await this.#settleUncertain();
    const free = this.#freeSlots();
    const left = free > 0 ? this.#candidates.leftover() : undefined;
    const found = left?.found ?? await this.#candidates.discover(free);
    // Whether this page led anywhere: a claim decided (won, lost, cancelled, uncertain) or a
    // stale request closed. Skips and per-candidate errors do not count.
    let progressed = false;
    const unusable = await this.#d.runtimeProblem?.(); // left pending for a working agent
    for (const c of unusable ? [] : spreadClaims(left?.untried ?? found.pending, free)) {
      if (this.#state !== "running") break;
      if (this.#holds(c.urn)) continue;
      const fast = FAST_TASKS.has(c.task);
      const slots = this.#freeSlots();
      const fastFree = this.#fastQueue.pending + this.#fastQueue.size === 0 &&
        !this.#uncertain.holdsReserved;
      if (slots <= 0 && !(fast && fastFree)) continue;
      const plan = this.#schedule.action(c, found.running, this.#d.gms.serverNow()); // schedule.ts
      if (plan.kind === "leave") {
        log.debug("left pending", { urn: c.urn, why: plan.why });
        continue;
      }
      this.#candidates.tried(c.urn);
      const done = await perCandidate(
        c,
        log,
        () =>
          plan.kind === "close"
            ? this.#closeUnrun(c, plan.status, plan.why)
            : this.#claim(c, fast && slots <= 0, found.pending),
      );
      progressed ||= done;
      if (left && !this.#candidates.leftover()) break; // used up, or stale (the pool took them)
    }
    if (left) {
      if (this.#freeSlots() > 0 && !this.#candidates.leftover()) this.#poller.nudge(); // discover
      return;
    }
    this.#candidates.paged(found, progressed || free <= 0);
    await this.#reaper.reap(found.running);
  }

  /** Slots free for a claim: a claim still being settled holds its slot like a job. */
  #freeSlots(): number {
    return this.#d.config.agent.maxConcurrent - this.#queue.pending - this.#queue.size -
      this.#uncertain.unreserved - this.#adoptedQueue.pending;
  }

  /** Claims `c` (unless its source type is at its limit, now that the read shows its type). */
  async #claim(c: Candidate, useReservedSlot: boolean, seen: Candidate[]): Promise<boolean> {
    const { gms, identity, config } = this.#d;
    const [ttl, decide] = [config.agent.leaseTtlMs, this.#schedule.decider(c)];
    const outcome = await claimRequest(gms, c.urn, identity, ttl, Date.now(), decide);
    this.#claimed(c, outcome, useReservedSlot, Schedule.siblings(c, seen));
    return outcome.kind !== "skip";
  }

  #claimed(
    c: Candidate,
    outcome: ClaimOutcome,
    useReservedSlot: boolean,
    siblings: Candidate[] = [],
  ): void {
    const { log } = this.#d;
    const { urn, task } = c;
    this.#candidates.claimed(urn, outcome);
    switch (outcome.kind) {
      case "lost":
        metrics.claim("lost");
        log.debug("claim lost to another agent", { urn });
        return;
      case "skip":
        log.debug("not claimed", { urn, reason: outcome.reason });
        return;
      case "cancelled":
        log.info("closed a request cancelled before it started", { urn });
        return;
      case "uncertain": {
        // The claim may have landed: remember the token, and settle it before the next claims.
        log.warn("claim answer lost; will read the request to settle it", {
          urn,
          error: outcome.error,
        });
        const { token, startTimeMs } = outcome;
        this.#uncertain.set(urn, { token, startTimeMs, useReservedSlot });
        return;
      }
      case "claimed": {
        metrics.claim("won");
        const requestedAt = outcome.request.input.requestedAt;
        if (requestedAt !== undefined) {
          metrics.queueWait((this.#d.gms.serverNow() - requestedAt) / 1000);
        }
        log.info("claimed", { urn, task, reserved_slot: useReservedSlot || undefined });
        this.emit("claimed", { urn, task });
        this.#schedule.started(c, outcome.request.input);
        const me = { urn, requestedAt, claimedAt: outcome.startTimeMs };
        const beforeStart = () => this.#schedule.settle(this.#d.gms, me, siblings);
        const job = new Job({ ...this.#d, beforeStart }, outcome);
        this.#startJob(job, useReservedSlot ? this.#fastQueue : this.#queue);
      }
    }
  }

  /** Reads each uncertain claim: ours → the run starts now (once); else forgotten. */
  async #settleUncertain(): Promise<void> {
    for (const [urn, u] of this.#uncertain.entries()) {
      const outcome = await settleClaim(this.#d.gms, urn, u.token, u.startTimeMs);
      this.#uncertain.delete(urn);
      if (outcome.kind === "claimed") {
        this.#d.log.info("the lost claim had landed; running the request", { urn });
      }
      const c = outcome.kind === "claimed" ? candidateOf(urn, outcome.request.input) : undefined;
      this.#claimed(
        c ?? { urn, task: "", executorId: "", requestedAt: undefined },
        outcome,
        u.useReservedSlot,
      );
    }
  }

  /** A run the journal says an earlier agent started, still ours (recovery.ts): supervised here. */
  adopt(run: AdoptedRun): void {
    this.#startJob(Job.adopt(this.#d, run), this.#adoptedQueue);
  }

  #startJob(job: Job, queue: PQueue): void {
    this.#jobs.set(job.urn, job);
    this.#d.live?.runStarted({
      urn: job.urn,
      task: job.task,
      started_at: new Date(job.startTimeMs).toISOString(),
      read: () => ({ pid: job.pid, sourceType: job.sourceType, lastOutputAt: job.lastOutputAt }),
    });
    const live = this.#d.live;
    void queue.add(() => job.run()).finally(() => {
      this.#jobs.delete(job.urn);
      this.#candidates.decided(job.urn);
      this.#schedule.ended(job.urn);
      live?.runEnded(job.urn);
      if (job.status) {
        metrics.runFinished(job.task, job.status, (Date.now() - job.startTimeMs) / 1000);
      }
      this.emit("finished", { urn: job.urn, task: job.task, status: job.status });
      this.#poller.nudge(); // a slot is free: look for work now
      this.#prune();
    });
  }

  /** Closes a request without running it (claim.ts `closeUnrun`): too old, or a duplicate. */
  async #closeUnrun(c: Candidate, status: "ABORTED" | "DUPLICATE", why: string): Promise<boolean> {
    const outcome = await closeUnrun(this.#d.gms, c.urn, this.#d, status, why);
    this.#candidates.claimed(c.urn, outcome);
    if (outcome.kind === "claimed") {
      this.#d.log.warn("closed a request without running it", { urn: c.urn, status, why });
      this.emit("reaped", { urn: c.urn, status, unrun: true });
    }
    return outcome.kind !== "skip";
  }

  /**
   * Whether this agent itself holds the request (a job, a result on its way, a claim to settle),
   * or decided it moments ago (search may still show it pending or RUNNING).
   */
  #holds(urn: string): boolean {
    return this.#jobs.has(urn) || this.#d.outbox.holds(urn) || this.#uncertain.has(urn) ||
      this.#candidates.recent(urn);
  }
}
