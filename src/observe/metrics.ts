/**
 * Prometheus metrics (`GET /metrics`), made with prom-client. Modules record through the
 * `metrics` object, which does nothing until `enableMetrics()` loads prom-client (only when
 * `observability.listen` is set: an agent without endpoints pays nothing for it). Label values
 * are bounded: tasks, statuses, outcomes and operations, never a URN.
 */
import type { Registry } from "prom-client";

export interface Metrics {
  poll(outcome: "ok" | "error"): void;
  claim(outcome: "won" | "lost"): void;
  runFinished(task: string, status: string, seconds: number): void;
  queueWait(seconds: number): void;
  pending(count: number, oldestAgeS: number | undefined): void;
  gmsRequest(operation: string, outcome: string, seconds: number): void;
  leaseRenewFailure(): void;
  logBytes(bytes: number): void;
}

const NOOP: Metrics = {
  poll() {},
  claim() {},
  runFinished() {},
  queueWait() {},
  pending() {},
  gmsRequest() {},
  leaseRenewFailure() {},
  logBytes() {},
};

/** Where every module records; a no-op until enabled. */
export let metrics: Metrics = NOOP;

/** Live values read at scrape time. */
export interface Gauges {
  runsInFlight(): number;
  outboxPending(): number;
  slotsMax: number;
}

/** Loads prom-client, registers every metric and makes `metrics` record; returns the registry. */
export async function enableMetrics(gauges: Gauges): Promise<Registry> {
  const prom = await import("prom-client");
  const registry = new prom.Registry();
  prom.collectDefaultMetrics({ register: registry });
  const counter = (name: string, help: string, labelNames: string[] = []) =>
    new prom.Counter({ name, help, labelNames, registers: [registry] });
  const histogram = (name: string, help: string, labelNames: string[], buckets: number[]) =>
    new prom.Histogram({ name, help, labelNames, buckets, registers: [registry] });
  const gauge = (name: string, help: string, collect?: () => number) =>
    new prom.Gauge({
      name,
      help,
      registers: [registry],
      ...(collect
        ? {
          collect() {
            this.set(collect());
          },
        }
        : {}),
    });

  const polls = counter("ingest_agent_polls_total", "Discovery polls by outcome.", ["outcome"]);
  const claims = counter("ingest_agent_claims_total", "Claims won or lost to another agent.", [
    "outcome",
  ]);
  const runs = counter("ingest_agent_runs_total", "Finished runs by task and terminal status.", [
    "task",
    "status",
  ]);
  gauge("ingest_agent_runs_in_flight", "Runs being executed now.", gauges.runsInFlight);
  gauge("ingest_agent_slots_max", "agent.max_concurrent.", () => gauges.slotsMax);
  const runSeconds = histogram(
    "ingest_agent_run_duration_seconds",
    "Run duration, claim to terminal result, by task.",
    ["task"],
    [1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400],
  );
  const waitSeconds = histogram(
    "ingest_agent_queue_wait_seconds",
    "Time from the request to its claim (GMS's clock).",
    [],
    [0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600],
  );
  const pending = gauge("ingest_agent_pending_requests", "Pending requests for this executor id.");
  const oldest = gauge(
    "ingest_agent_oldest_pending_age_seconds",
    "Age of the oldest pending request for this executor id (0 when none).",
  );
  const gmsRequests = counter("ingest_agent_gms_requests_total", "Requests to GMS.", [
    "operation",
    "outcome",
  ]);
  const gmsSeconds = histogram(
    "ingest_agent_gms_request_duration_seconds",
    "Duration of requests to GMS, by operation.",
    ["operation"],
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  );
  gauge("ingest_agent_outbox_pending", "Terminal results not yet delivered.", gauges.outboxPending);
  const leaseFailures = counter(
    "ingest_agent_lease_renew_failures_total",
    "Progress writes (lease renewals) GMS did not take.",
  );
  const logBytes = counter("ingest_agent_log_bytes_total", "Bytes of run output captured.");

  metrics = {
    poll: (outcome) => polls.inc({ outcome }),
    claim: (outcome) => claims.inc({ outcome }),
    runFinished: (task, status, seconds) => {
      runs.inc({ task, status });
      runSeconds.observe({ task }, seconds);
    },
    queueWait: (seconds) => waitSeconds.observe(Math.max(0, seconds)),
    pending: (count, oldestAgeS) => {
      pending.set(count);
      // Unknown (the page did not start at the head): the last known age stands, not a 0.
      if (oldestAgeS !== undefined) oldest.set(oldestAgeS);
    },
    gmsRequest: (operation, outcome, seconds) => {
      gmsRequests.inc({ operation, outcome });
      gmsSeconds.observe({ operation }, seconds);
    },
    leaseRenewFailure: () => leaseFailures.inc(),
    logBytes: (bytes) => logBytes.inc(bytes),
  };
  // Zero series, so a dashboard shows 0 rather than nothing before the first event.
  for (const outcome of ["ok", "error"]) polls.inc({ outcome }, 0);
  for (const outcome of ["won", "lost"]) claims.inc({ outcome }, 0);
  leaseFailures.inc(0);
  logBytes.inc(0);
  return registry;
}

/** Back to the no-op (tests). */
export function disableMetrics(): void {
  metrics = NOOP;
}
