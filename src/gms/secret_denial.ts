/**
 * Why GMS refused `getSecretValues`, told from what its answer shows (SPEC §2.4): the resolver
 * first requires Manage Secrets ("Unauthorized to perform this action…"); on DataHub after
 * v1.6.0 the SecretService caller guard (SECRET_SERVICE_CALLER_GUARD_MODE=ENFORCE) then lets only
 * system auth decrypt. The caller guard is named only where the error says so or GMS is v1.6.0
 * or later; otherwise the missing privilege is. The run's report (client.ts) and `doctor`
 * (doctor_gms.ts) word it from here.
 */
import type { AuthKind } from "./http.ts";
import { atLeast, parseVersion } from "../version.ts";

export interface SecretDenial {
  cause: "caller-guard" | "guard-or-privilege" | "privilege";
  /** What the answer shows, in a few words (after "GMS refused to decrypt secrets for X"). */
  why: string;
  /** The fix, one sentence. */
  fix: string;
}

/** The caller guard's SecurityException names it (SecretService, the mode variable). */
const GUARD_TEXT = /caller[ _-]?guard|SecretService|SECRET_SERVICE_CALLER_GUARD/i;

const SYSTEM_CLIENT =
  "set datahub.system_client_id and datahub.system_client_secret (GMS's own system client)";
const AUDIT = "ask the DataHub operator to set SECRET_SERVICE_CALLER_GUARD_MODE=AUDIT";

export function secretDenial(
  errorMessage: string,
  serverVersion: string | undefined,
  authKind: AuthKind,
): SecretDenial {
  const version = serverVersion ? parseVersion(serverVersion) : undefined;
  const guarded = version !== undefined && atLeast(version, [1, 6, 0]);
  if (GUARD_TEXT.test(errorMessage)) {
    return {
      cause: "caller-guard",
      why: "its secret caller guard (SECRET_SERVICE_CALLER_GUARD_MODE=ENFORCE, DataHub after " +
        "v1.6.0) lets only system auth read secret values",
      fix: authKind === "system-client"
        ? `check that datahub.system_client_id and datahub.system_client_secret are GMS's own system client, or ${AUDIT}.`
        : `${SYSTEM_CLIENT}, or ${AUDIT}.`,
    };
  }
  if (guarded && authKind !== "system-client") {
    return {
      cause: "guard-or-privilege",
      why: `GMS ${serverVersion} has the secret caller guard, which lets only system auth read ` +
        "secret values (SECRET_SERVICE_CALLER_GUARD_MODE=ENFORCE), and reading them also needs " +
        "the Manage Secrets privilege",
      fix: `${SYSTEM_CLIENT}, which passes both, or ${AUDIT} and give ${
        authKind === "token" ? "the token's user" : "the credentials"
      } Manage Secrets.`,
    };
  }
  const context = version === undefined
    ? "GMS's version is unknown and its answer does not name the secret caller guard"
    : guarded
    ? `GMS ${serverVersion}`
    : `GMS ${serverVersion} has no secret caller guard`;
  if (authKind === "system-client") {
    return {
      cause: "privilege",
      why: `the system client credentials lack the Manage Secrets privilege (${context})`,
      fix:
        "check that datahub.system_client_id and datahub.system_client_secret are GMS's own system client.",
    };
  }
  return {
    cause: "privilege",
    why: authKind === "token"
      ? `the token lacks the Manage Secrets privilege (${context})`
      : `no credentials are configured, and reading secrets needs the Manage Secrets privilege (${context})`,
    fix: authKind === "token"
      ? `give the token's user the Manage Secrets platform privilege (or use the token of a user who has it), or ${SYSTEM_CLIENT}.`
      : `set datahub.token to the token of a user with Manage Secrets, or ${SYSTEM_CLIENT}.`,
  };
}
