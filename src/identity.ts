/**
 * Who claims: an agent instance id (new each start), the host and the executor id. Stored in the
 * result's systemMetadata.properties and in the report header, so every agent of a pool and every
 * user can tell who holds a request, and leases can be checked.
 */
import os from "node:os";
import process from "node:process";
import { VERSION } from "./version.ts";

export interface Identity {
  instanceId: string;
  host: string;
  executorId: string;
}

export function newIdentity(executorId: string): Identity {
  const host = os.hostname();
  return {
    instanceId: `${host}-${process.pid}-${crypto.randomUUID().slice(0, 8)}`,
    host,
    executorId,
  };
}

/** Marks results written by ingest-agent. */
export const APP_SOURCE = "ingest-agent";

/** systemMetadata.properties of every write: owner and lease expiry. */
export function leaseProperties(id: Identity, leaseExpiresAt: number): Record<string, string> {
  return {
    appSource: APP_SOURCE,
    agentVersion: VERSION,
    agentInstance: id.instanceId,
    agentHost: id.host,
    executorId: id.executorId,
    leaseExpiresAt: String(leaseExpiresAt),
  };
}

/** First line of every report we write: a human-readable owner stamp. */
export function ownerLine(id: Identity): string {
  return `[ingest-agent ${VERSION} · executor ${id.executorId} · agent ${id.instanceId}]`;
}
