/**
 * Starts what the operator looks at for `run` (and `once`): the live state the endpoints read,
 * and, when `observability.listen` is set, the metrics registry (prom-client, loaded only then)
 * and the HTTP endpoints. Wires the GMS transport's exchanges and the outbox into the live state.
 */
import type { AgentConfig } from "../config/config.ts";
import type { GmsClient } from "../gms/client.ts";
import type { Identity } from "../identity.ts";
import { LiveState } from "../observe/live.ts";
import type { Logger } from "../observe/log.ts";
import { enableMetrics } from "../observe/metrics.ts";
import { type Endpoints, serveEndpoints } from "../observe/server.ts";
import type { Outbox } from "../state/outbox.ts";
import { VERSION } from "../version.ts";

export interface Observability {
  live: LiveState;
  endpoints: Endpoints | undefined;
  close(): Promise<void>;
}

/** Throws AgentError (USAGE: port in use, permission) when the endpoints cannot listen. */
export async function startObservability(o: {
  config: AgentConfig;
  identity: Identity;
  gms: GmsClient;
  outbox: Outbox;
  /** Configuration warnings (plain HTTP with credentials, …): shown on /status too. */
  warnings: readonly string[];
  /** datahub.server as it may be shown (no user info). */
  server: string;
  runsInFlight: () => number;
  log: Logger;
}): Promise<Observability> {
  const { config } = o;
  const live = new LiveState({
    version: VERSION,
    executorId: config.executorId,
    instance: o.identity.instanceId,
    server: o.server,
    slotsMax: config.agent.maxConcurrent,
    pollIntervalMs: config.agent.pollIntervalMs,
    warnings: o.warnings,
  });
  o.gms.http.onExchange = (outcome) => live.gmsExchange(outcome);
  live.outboxPending(() => o.outbox.pending);
  live.gmsInfo(() => ({ version: o.gms.serverVersion, discovery: o.gms.mode }));
  const listen = config.observability.listen;
  if (!listen) return { live, endpoints: undefined, close: async () => {} };
  const registry = await enableMetrics({
    runsInFlight: o.runsInFlight,
    outboxPending: () => o.outbox.pending,
    slotsMax: config.agent.maxConcurrent,
  });
  const endpoints = await serveEndpoints(listen, live, registry);
  o.log.info("endpoints listening", {
    address: endpoints.address,
    paths: "/healthz /readyz /status /metrics",
  });
  return { live, endpoints, close: () => endpoints.close() };
}
