/**
 * What a run may see of the agent's environment, and which `${NAME}`s the environment may answer.
 *
 * A run's environment is built from an allowlist, never inherited whole: the agent's own
 * credentials (`DATAHUB_GMS_TOKEN`, the system client secret, whatever variable `agent.yml`
 * read them from) must not reach a recipe that anyone with Manage Ingestion can write. It holds
 *   - PATH, HOME, USER, LOGNAME, SHELL, TMPDIR, TZ, the locale (LANG, LANGUAGE, LC_*),
 *   - proxy variables (HTTP(S)_PROXY, NO_PROXY, ALL_PROXY, either case) and CA bundles
 *     (SSL_CERT_FILE, SSL_CERT_DIR, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, NODE_EXTRA_CA_CERTS),
 *   - the agent's trust: REQUESTS_CA_BUNDLE and SSL_CERT_FILE = `datahub.tls.ca_file`, and
 *     HTTPS_PROXY/HTTP_PROXY = `datahub.proxy`, each unless the agent's environment sets it,
 *   - what the operator adds with `ingestion.pass_env` (names, or prefixes ending in `*`),
 *   - the request's `extra_env_vars`,
 *   - for a sink-less recipe only: DATAHUB_GMS_URL and the agent's credentials (the CLI's default
 *     datahub-rest sink needs them),
 *   - the run marker (INGEST_AGENT_RUN) that crash recovery finds the run's processes by.
 */

/** Names that are always passed when the agent has them. */
const ALWAYS = new Set([
  "PATH",
  "HOME",
  "USER",
  "LOGNAME",
  "SHELL",
  "TMPDIR",
  "TZ",
  "LANG",
  "LANGUAGE",
  "SSL_CERT_FILE",
  "SSL_CERT_DIR",
  "REQUESTS_CA_BUNDLE",
  "CURL_CA_BUNDLE",
  "NODE_EXTRA_CA_CERTS",
]);

const PROXY = /^(https?_proxy|no_proxy|all_proxy)$/i;

/** The variables the agent's own credentials usually come from (agent.yml, SPEC §4.1). */
export const CREDENTIAL_VARIABLES: readonly string[] = [
  "DATAHUB_GMS_TOKEN",
  "DATAHUB_SYSTEM_CLIENT_ID",
  "DATAHUB_SYSTEM_CLIENT_SECRET",
];

export interface AgentCredentials {
  token: string;
  systemClientId: string;
  systemClientSecret: string;
}

/**
 * The names of the agent's environment that hold its credentials: the usual ones, and any other
 * variable whose value is the token or the system client secret (agent.yml may read them from
 * any name).
 */
export function credentialVariables(
  env: Record<string, string | undefined>,
  creds: AgentCredentials,
): Set<string> {
  const secrets = [creds.token, creds.systemClientSecret].filter((v) => v !== "");
  const out = new Set(CREDENTIAL_VARIABLES);
  for (const [name, value] of Object.entries(env)) {
    if (value !== undefined && secrets.includes(value)) out.add(name);
  }
  return out;
}

/** Whether `name` is matched by a `pass_env` entry (a name, or a prefix ending in `*`). */
export function passes(name: string, passEnv: readonly string[]): boolean {
  return passEnv.some((p) => p.endsWith("*") ? name.startsWith(p.slice(0, -1)) : name === p);
}

export interface RunEnvOptions {
  passEnv: readonly string[];
  /** The request's extra_env_vars (win over the agent's environment). */
  extra: Record<string, string>;
  /** For a sink-less recipe: DATAHUB_GMS_URL and credentials. */
  gms?: Record<string, string>;
  /** Variables that are never passed from the agent's environment (its credentials). */
  withheld: ReadonlySet<string>;
  /** `datahub.tls.ca_file` and `datahub.proxy` ("" or absent: none), given to the CLI too. */
  trust?: { caFile?: string; proxy?: string };
  marker: { name: string; value: string };
}

/** The environment of one run (see the module comment). */
export function runEnvironment(
  agentEnv: Record<string, string | undefined>,
  o: RunEnvOptions,
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(agentEnv)) {
    if (value === undefined || o.withheld.has(name)) continue;
    if (ALWAYS.has(name) || name.startsWith("LC_") || PROXY.test(name) || passes(name, o.passEnv)) {
      env[name] = value;
    }
  }
  // The CLI trusts what the agent trusts (Python requests/ssl read these), unless told otherwise.
  const unset = (...names: string[]) => names.every((n) => !agentEnv[n]);
  const { caFile, proxy } = o.trust ?? {};
  for (const name of ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"]) {
    if (caFile && unset(name)) env[name] = caFile;
  }
  for (const name of ["HTTPS_PROXY", "HTTP_PROXY"]) {
    if (proxy && unset(name, name.toLowerCase())) env[name] = proxy;
  }
  Object.assign(env, o.extra);
  if (o.gms) Object.assign(env, o.gms);
  env[o.marker.name] = o.marker.value;
  return env;
}

/**
 * The rule for `${NAME}` values taken from the agent's environment (DataHub secrets come first):
 * never one of the agent's credential variables, and only names starting with
 * `ingestion.env_secrets_prefix` when it is set. Returns why a name is refused, or undefined.
 */
export function envSecretRefusal(
  name: string,
  withheld: ReadonlySet<string>,
  prefix: string,
): string | undefined {
  if (withheld.has(name)) {
    return `'${name}' holds one of the agent's own credentials, which the agent's environment never provides to recipes`;
  }
  if (prefix && !name.startsWith(prefix)) {
    return `'${name}' does not start with ingestion.env_secrets_prefix '${prefix}', so the agent's environment does not provide it`;
  }
  return undefined;
}
