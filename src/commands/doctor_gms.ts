/**
 * The GMS checks of `ingest-agent doctor` (doctor.ts), all read-only: nothing is claimed and
 * nothing is written.
 *
 *   gms          `GET /config` answers; DataHub's version from `versions["acryldata/datahub"]`
 *   credentials  an OpenAPI read of an execution request that does not exist (404 = accepted)
 *   secrets      `getSecretValues` of a name that does not exist (an answer = readable)
 *   discovery    the agent's own discovery query, one page of 100, for its executor_id
 *   clock        GMS's `Date` headers against this host's clock (a warning, never a failure)
 */
import { AgentError, GmsError } from "../errors.ts";
import { type GmsClient, serverVersionOf } from "../gms/client.ts";
import type { AuthKind } from "../gms/http.ts";
import { secretDenial } from "../gms/secret_denial.ts";
import { tlsProblemOf } from "../gms/transport.ts";
import { type Check, failed, passed } from "./doctor.ts";

/** GMS requests of doctor wait datahub.timeout, but at most this long. */
export const GMS_TIMEOUT_MAX_MS = 10_000;
/** A clock offset from GMS beyond this is warned about. */
export const CLOCK_TOLERANCE_MS = 30_000;
/** Names nobody uses: reading them proves access without touching a real request or secret. */
export const PROBE_URN = "urn:li:dataHubExecutionRequest:__INGEST_AGENT_DOCTOR__";
export const PROBE_SECRET = "__INGEST_AGENT_DOCTOR__";

/** The credentials in use, as the configuration names them. */
export function credentialsLabel(kind: AuthKind): string {
  return kind === "system-client"
    ? "the system client credentials (datahub.system_client_id/secret)"
    : kind === "token"
    ? "datahub.token"
    : "no credentials";
}

/** A GmsError's message without its operation prefix. */
function reason(err: unknown): string {
  if (err instanceof GmsError && err.message.startsWith(`${err.operation}: `)) {
    return err.message.slice(err.operation.length + 2);
  }
  return err instanceof Error ? err.message : String(err);
}

/** 2. GMS answers `GET /config`; its version when it says. */
export async function checkReachable(gms: GmsClient, server: string): Promise<Check> {
  const started = Date.now();
  try {
    const { body } = await gms.http.json("config", "GET", "/config");
    const version = serverVersionOf(body);
    return passed(
      "gms",
      `${server} answers (${Date.now() - started} ms), ${
        version
          ? `DataHub ${version}`
          : 'version unknown (GET /config has no versions["acryldata/datahub"])'
      }`,
    );
  } catch (err) {
    if (!(err instanceof GmsError)) throw err;
    if (err.code === "GMS_AUTH") {
      return passed(
        "gms",
        `${server} answers (${
          Date.now() - started
        } ms), version unknown (GET /config needs accepted credentials)`,
      );
    }
    const tls = tlsProblemOf(err);
    if (tls) {
      return failed(
        "gms",
        `${server}: ${reason(err)}`,
        tls === "server-certificate"
          ? "set datahub.tls.ca_file to the PEM of the CA that signed GMS's certificate (or fix the name in datahub.server when the certificate is issued for another one)."
          : "set datahub.tls.cert_file and datahub.tls.key_file to a client certificate GMS (or the gateway in front of it) accepts.",
      );
    }
    if (err.code === "GMS_UNREACHABLE") {
      return failed(
        "gms",
        `${server}: ${reason(err)}`,
        "check datahub.server (scheme, host, port) and that GMS runs and is reachable from this host (through datahub.proxy or HTTPS_PROXY, and NO_PROXY, if a proxy is needed).",
      );
    }
    if (err.code === "GMS_TIMEOUT") {
      return failed(
        "gms",
        `${server}: ${reason(err)}`,
        "check that GMS is up and that no firewall or proxy drops the connection, or raise datahub.timeout for a slow GMS.",
      );
    }
    if (err.status === 404) {
      return failed(
        "gms",
        `${server}: GET /config answered HTTP 404, so this is not GMS`,
        "point datahub.server at GMS itself (behind datahub-frontend: https://<host>/api/gms).",
      );
    }
    return failed(
      "gms",
      `${server}: GET /config failed: ${reason(err)}`,
      "GMS or a proxy in front of it is failing: check GMS's health and logs, then run doctor again.",
    );
  }
}

/** 3. GMS accepts the credentials for an OpenAPI read (the agent's claims re-read this way). */
export async function checkCredentials(gms: GmsClient): Promise<Check> {
  const kind = gms.http.authKind;
  const label = credentialsLabel(kind);
  try {
    await gms.readRequest(PROBE_URN); // a 404 (undefined) is the expected answer
    return passed("credentials", `accepted: ${label}`);
  } catch (err) {
    if (err instanceof GmsError && err.code === "GMS_AUTH") {
      const status = err.status ?? 401;
      if (status === 403) {
        return failed(
          "credentials",
          `GMS answered HTTP 403 for ${label}: they lack a privilege`,
          kind === "token"
            ? "use the token of a user with Manage Ingestion and Manage Secrets in datahub.token, or the system client credentials."
            : "give the credentials the rights to read and write execution requests (Manage Ingestion) and to read secrets (Manage Secrets).",
        );
      }
      return failed(
        "credentials",
        `GMS answered HTTP ${status} for ${label}: not accepted`,
        kind === "token"
          ? "set datahub.token to a valid, unexpired DataHub access token (or use datahub.system_client_id and datahub.system_client_secret)."
          : kind === "system-client"
          ? "set datahub.system_client_id and datahub.system_client_secret to GMS's own system client (its DATAHUB_SYSTEM_CLIENT_ID and DATAHUB_SYSTEM_CLIENT_SECRET)."
          : "this GMS requires authentication: set datahub.token, or datahub.system_client_id and datahub.system_client_secret.",
      );
    }
    return failed(
      "credentials",
      `reading an execution request failed: ${reason(err)}`,
      "check GMS's health and logs (the agent reads execution requests over OpenAPI v3), then run doctor again.",
    );
  }
}

/** 4. GMS decrypts secrets for these credentials (asked for a name that does not exist). */
export async function checkSecrets(gms: GmsClient): Promise<Check> {
  const kind = gms.http.authKind;
  const label = credentialsLabel(kind);
  try {
    await gms.secretValues([PROBE_SECRET]); // values are never printed; this name has none
    return passed("secrets", `readable: getSecretValues answers for ${label}`);
  } catch (err) {
    if (err instanceof AgentError && err.code === "SECRET_ACCESS_DENIED") {
      // The same reading of the answer as a run's report (the caller guard only where GMS's
      // answer or version shows it); the version from /config, which discovery has not read yet.
      const answer = err.cause instanceof Error ? err.cause.message : err.message;
      const version = gms.serverVersion ?? await versionOf(gms);
      const { why, fix } = secretDenial(answer, version, kind);
      return failed("secrets", `GMS refused to decrypt secrets for ${label}: ${why}`, fix);
    }
    return failed(
      "secrets",
      `getSecretValues failed: ${reason(err)}`,
      "runs whose recipes use ${NAME} secrets will fail: check GMS's health and logs, then run doctor again.",
    );
  }
}

/** DataHub's version from `GET /config`, if it says. */
async function versionOf(gms: GmsClient): Promise<string | undefined> {
  try {
    return serverVersionOf((await gms.http.json("config", "GET", "/config")).body);
  } catch {
    return undefined;
  }
}

/** 5. The discovery query works; how many requests wait for this executor_id. */
export async function checkDiscovery(gms: GmsClient, executorId: string): Promise<Check> {
  const count = 100;
  try {
    const found = await gms.discover(executorId, { count });
    const list = gms.mode === "list";
    // listExecutionRequests' total counts every executor's requests: count ours on the page.
    const pending = list ? found.pending.length : found.pages.pending.total;
    const more = list && found.pages.pending.returned >= count ? " on the first page" : "";
    return passed(
      "discovery",
      `${list ? "listExecutionRequests" : "searchAcrossEntities"} works; ${pending} request${
        pending === 1 ? "" : "s"
      } pending for executor_id ${executorId}${more}`,
    );
  } catch (err) {
    if (err instanceof GmsError && err.code === "GMS_AUTH") {
      return failed(
        "discovery",
        `GMS refused the discovery query: ${reason(err)}`,
        "give the credentials Manage Ingestion (the right to list execution requests), or use the system client credentials.",
      );
    }
    if (err instanceof GmsError && err.code === "GMS_REJECTED") {
      return failed(
        "discovery",
        `GMS rejected the discovery query: ${reason(err)}`,
        "use DataHub v1.1 or later, which the agent's queries are written for (see the compatibility table in README.md).",
      );
    }
    return failed(
      "discovery",
      `the discovery query failed: ${reason(err)}`,
      "check GMS's health and logs (search and its index must be up), then run doctor again.",
    );
  }
}

/** 9. GMS's clock against ours: beyond 30 s a warning (leases and request ages use clocks). */
export function checkClock(offsetMs: number | undefined): Check {
  if (offsetMs === undefined) {
    return { name: "clock", mark: "-", detail: "skipped: GMS's answers had no Date header" };
  }
  const side = offsetMs >= 0 ? "ahead of" : "behind";
  const size = formatOffset(Math.abs(offsetMs));
  if (Math.abs(offsetMs) <= CLOCK_TOLERANCE_MS) {
    // Date has whole seconds: an offset under a second is noise.
    const by = Math.abs(offsetMs) <= 1000 ? "under 1 s apart" : `GMS is ${size} ${side} this host`;
    return passed("clock", `within 30 s of GMS (${by})`);
  }
  return {
    name: "clock",
    mark: "!",
    detail:
      `GMS's clock is ${size} ${side} this host's: leases and request ages depend on clocks (lease expiry, max_request_age)`,
    fix: "synchronise the clocks of this host and GMS (NTP).",
  };
}

/** 0.4 s, 42 s, 3 min 5 s, 2 h 0 min. */
export function formatOffset(ms: number): string {
  if (ms < 9950) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  const min = Math.round(s / 60);
  return `${Math.floor(min / 60)} h ${min % 60} min`;
}
