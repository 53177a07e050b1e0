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

/** What every result write of one claim carries in `systemMetadata.properties`. */
export interface LeaseStamp {
  /** Random per claim; proves a stored result is ours (survives an agent restart via the journal). */
  token: string;
  /** How long the lease runs from the write, as GMS timestamps it (`lastObserved`). */
  ttlMs: number;
  /** The writer's wall clock now (only for the legacy `leaseExpiresAt`). */
  now?: number;
  /** Random per logical write: tells whether this very write landed when its answer was lost. */
  writeId?: string;
}

/** A new fencing token (one per claim). */
export function newToken(): string {
  return crypto.randomUUID();
}

/** A new write id (one per logical write). */
export function newWriteId(): string {
  return crypto.randomUUID().slice(0, 13);
}

/**
 * systemMetadata.properties of every write: owner, fencing token, write id and lease. Peers judge
 * the lease by GMS's own clock (`lastObserved` + `leaseTtlMs`); `leaseExpiresAt` (the writer's
 * clock) is kept for agents of earlier versions.
 */
export function leaseProperties(id: Identity, stamp: LeaseStamp): Record<string, string> {
  const now = stamp.now ?? Date.now();
  return {
    appSource: APP_SOURCE,
    agentVersion: VERSION,
    agentInstance: id.instanceId,
    agentHost: id.host,
    executorId: id.executorId,
    claimToken: stamp.token,
    ...(stamp.writeId ? { writeId: stamp.writeId } : {}),
    leaseTtlMs: String(stamp.ttlMs),
    leaseExpiresAt: String(now + stamp.ttlMs),
  };
}

/**
 * Whether a stored result was written under our claim: its fencing token is ours, or (results
 * written before tokens existed) its owner instance is one of `instances`.
 */
export function isOurs(
  properties: Record<string, string>,
  token: string | undefined,
  instances: readonly string[] = [],
): boolean {
  if (properties.appSource !== APP_SOURCE) return false;
  if (properties.claimToken !== undefined) return properties.claimToken === token;
  return instances.includes(properties.agentInstance ?? "");
}

/** First line of every report we write: a human-readable owner stamp. */
export function ownerLine(id: Identity): string {
  return `[ingest-agent ${VERSION} · executor ${id.executorId} · agent ${id.instanceId}]`;
}
