/**
 * The DataHub Actions executor pipeline file (SPEC §4.1) as a configuration ("actions form"):
 * what of it is used (`action.config.executor_id`; `datahub.server`, `token` and the
 * Authorization of `extra_headers`), what is ignored with a warning (the Kafka source,
 * `task_configs`, other headers), and, for the keys a migrating user carries over that are not
 * read there, which option of the native form is their counterpart.
 */
import type { ActionsDocument } from "./schema.ts";

/**
 * Keys an Actions file may hold that the agent does not read there, and their counterpart in
 * the native form. The executor's own config has only `executor_id` and `task_configs` (SPEC
 * §4.1): `max_workers` and `graceful_shutdown_timeout` are names users carry over from other
 * executors. The `datahub:` block of a pipeline is the Python DatahubClientConfig (anchors
 * [D17]: ca_certificate_path, client_certificate_path, disable_ssl_verification).
 */
const COUNTERPARTS: Record<string, { to: string; why?: string }> = {
  "action.config.max_workers": {
    to: "agent.max_concurrent",
    why: "the DataHub executor has no such option: it starts every request at once",
  },
  "action.config.graceful_shutdown_timeout": {
    to: "agent.shutdown_timeout",
    why: "the DataHub executor has no such option",
  },
  "datahub.disable_ssl_verification": { to: "datahub.tls.insecure_skip_verify" },
  "datahub.ca_certificate_path": { to: "datahub.tls.ca_file" },
  "datahub.client_certificate_path": { to: "datahub.tls.cert_file and datahub.tls.key_file" },
  "datahub.timeout_sec": { to: "datahub.timeout" },
};

/** The top-level keys of the native form: a sign of the two forms mixed in one file. */
const NATIVE_TOP = new Set(["executor_id", "agent", "ingestion", "observability"]);

/** The message for an unknown key of an Actions file at `key` (a dotted path). */
export function actionsUnknownKey(key: string): string {
  const counterpart = COUNTERPARTS[key];
  if (counterpart) {
    return `unknown key in an Actions file${
      counterpart.why ? ` (${counterpart.why})` : ""
    }: its counterpart is ${counterpart.to} of the native form (see agent.yml and README "Migrating from the DataHub Actions executor")`;
  }
  if (NATIVE_TOP.has(key)) {
    return "a key of the native form: an Actions file cannot hold it; write the whole file in " +
      "the native form (agent.yml) instead";
  }
  return "unknown key (an Actions file is read for action.config.executor_id and datahub.server, " +
    'token and extra_headers only; see README "Migrating from the DataHub Actions executor")';
}

/** An Actions file (validated) → the native form's document, with the warnings it deserves. */
export function actionsToNative(
  parsed: ActionsDocument,
  warnings: string[],
): Record<string, unknown> {
  const { action, datahub, source } = parsed;
  if (source !== undefined) {
    warnings.push(
      "the pipeline's `source` (Kafka) is ignored: ingest-agent polls GMS over HTTPS instead",
    );
  }
  if (action.config.task_configs !== undefined) {
    warnings.push(
      "action.config.task_configs is ignored: ingest-agent runs RUN_INGEST and TEST_CONNECTION itself",
    );
  }
  const authorization = Object.entries(datahub.extra_headers ?? {})
    .find(([k]) => k.toLowerCase() === "authorization")?.[1];
  const client = parseSystemClientHeader(authorization);
  const bearer = authorization ? /^Bearer\s+(\S+)$/i.exec(authorization.trim())?.[1] : undefined;
  if (authorization && !client && !bearer) {
    warnings.push(
      "datahub.extra_headers.Authorization is neither `Basic <id>:<secret>` nor `Bearer <token>` and is ignored",
    );
  }
  for (const key of Object.keys(datahub.extra_headers ?? {})) {
    if (key.toLowerCase() !== "authorization") {
      warnings.push(`datahub.extra_headers.${key} is ignored`);
    }
  }
  return {
    executor_id: action.config.executor_id || "default",
    datahub: {
      server: datahub.server,
      ...(datahub.token || bearer ? { token: datahub.token || bearer } : {}),
      ...(client ? { system_client_id: client.id, system_client_secret: client.secret } : {}),
    },
  };
}

/** `Basic <id>:<secret>` (unencoded, as GMS expects) → the system client pair. */
function parseSystemClientHeader(
  value: string | undefined,
): { id: string; secret: string } | undefined {
  const match = value ? /^Basic\s+([^:\s]+):(.+)$/.exec(value.trim()) : null;
  return match ? { id: match[1]!, secret: match[2]! } : undefined;
}
