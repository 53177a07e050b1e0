/**
 * Secret resolution for one run: every `${NAME}` of the recipe from DataHub secrets (one
 * getSecretValues call for all names) and the agent's environment. On conflict the DataHub
 * secret wins, as in the Python executor (SPEC §4.5). A name found in neither is an error naming
 * the secret, never its value.
 */
import { AgentError, backoffDelay, GmsError, isRetryable } from "../errors.ts";
import type { GmsApi } from "../gms/client.ts";

export interface ResolvedSecrets {
  values: Map<string, string>;
  /** Remarks for the run's report (e.g. secrets read from the environment after a denial). */
  notes: string[];
}

export async function resolveSecrets(
  names: string[],
  gms: Pick<GmsApi, "secretValues">,
  env: Record<string, string | undefined>,
  /** Why the environment may not answer `name` (run_env.ts `envSecretRefusal`), if it may not. */
  refuse: (name: string) => string | undefined = () => undefined,
): Promise<ResolvedSecrets> {
  const values = new Map<string, string>();
  const notes: string[] = [];
  if (names.length === 0) return { values, notes };
  let fromDataHub = new Map<string, string>();
  let denied: AgentError | undefined;
  try {
    fromDataHub = await withRetries(() => gms.secretValues(names));
  } catch (err) {
    if (err instanceof AgentError && err.code === "SECRET_ACCESS_DENIED") denied = err;
    else if (err instanceof GmsError) {
      throw new AgentError(
        "SECRET_MISSING",
        `cannot read DataHub secrets (${err.message}); the run was not started`,
        {
          cause: err,
        },
      );
    } else throw err;
  }
  const refused: string[] = [];
  for (const name of names) {
    const stored = fromDataHub.get(name);
    if (stored !== undefined) {
      values.set(name, stored);
      continue;
    }
    if (env[name] === undefined) continue;
    const why = refuse(name);
    if (why) refused.push(why);
    else values.set(name, env[name]!);
  }
  if (refused.length > 0) {
    throw new AgentError(
      "SECRET_NOT_ALLOWED",
      `secret ${refused.join("; ")}: define ${
        refused.length > 1 ? "them" : "it"
      } in DataHub (Ingestion → Secrets)`,
    );
  }
  const missing = names.filter((n) => !values.has(n));
  if (denied) {
    if (missing.length > 0) throw denied;
    notes.push(
      `DataHub refused to decrypt secrets; all ${names.length} secret(s) came from the agent's environment.`,
    );
  }
  if (missing.length > 0) {
    const several = missing.length > 1;
    throw new AgentError(
      "SECRET_MISSING",
      `secret${several ? "s" : ""} ${missing.map((n) => `'${n}'`).join(", ")} not found: ` +
        `define ${
          several ? "them" : "it"
        } in DataHub (Ingestion → Secrets) or in the agent's environment`,
    );
  }
  return { values, notes };
}

/** A GMS blip should not fail a run: a few quick retries of retryable errors. */
async function withRetries<T>(fn: () => Promise<T>, attempts = 4): Promise<T> {
  for (let i = 0;; i++) {
    try {
      return await fn();
    } catch (err) {
      if (i + 1 >= attempts || !isRetryable(err)) throw err;
      await new Promise((r) => setTimeout(r, backoffDelay(i, 250, 4000)));
    }
  }
}
