/**
 * What a request may ask of the runtime, decided before anything is installed or run: its source
 * type (`ingestion.allowed_source_types`), extra pip plugins and requirements
 * (`ingestion.allow_extra_pip`), and, for the venv runtime, that every plugin, the version and
 * each requirement is something the installer can only take from the configured index or
 * find-links (no URL, path or pip option: those would bypass `offline` and the index settings).
 * A refusal is POLICY_REFUSED naming the rule; the run ends FAILURE with it.
 */
import { createHash } from "node:crypto";
import type { AgentConfig } from "../config/config.ts";
import { AgentError } from "../errors.ts";
import type { RequestInput } from "../request.ts";

/** What the request asks for, checked. */
export interface RuntimeRequest {
  sourceType: string;
  /** The acryl-datahub extras: the source type, then extra_pip_plugins (no duplicates). */
  plugins: string[];
  /** `latest` (unpinned) or a release version; `native`/`bundled` as DataHub understands them. */
  version: string;
  /** extra_pip_requirements, `${VAR}`s expanded from extra_env_vars. */
  requirements: string[];
  /** extra_pip_plugins as given (for the notes of runtimes that ignore them). */
  extraPlugins: string[];
}

const NAME = "[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?";
const OP = "(?:~=|===|==|!=|<=|>=|<|>)";
const VERSION_TEXT = "[A-Za-z0-9.*+!_-]+";
const SPEC = `${OP}[ \\t]*${VERSION_TEXT}`;
const MARKER_VAR = "(?:python_version|python_full_version|os_name|sys_platform|platform_release|" +
  "platform_system|platform_version|platform_machine|platform_python_implementation|" +
  "implementation_name|implementation_version|extra)";
const OPERAND = `(?:${MARKER_VAR}|'[^'\\n]*'|"[^"\\n]*")`;
const MARKER_OP = "(?:===|==|!=|<=|>=|~=|<|>|not[ \\t]+in|in)";
const MARKER_EXPR = `[ \\t(]*${OPERAND}[ \\t]*${MARKER_OP}[ \\t]*${OPERAND}[ \\t)]*`;
const MARKER = `${MARKER_EXPR}(?:[ \\t]+(?:and|or)[ \\t]+${MARKER_EXPR})*`;
/** PEP 508 without a URL: name, extras, specifiers, an environment marker. No newline, no `@`. */
const REQUIREMENT = new RegExp(
  `^${NAME}(?:[ \\t]*\\[[ \\t]*${NAME}(?:[ \\t]*,[ \\t]*${NAME})*[ \\t]*\\])?` +
    `(?:[ \\t]*\\(?[ \\t]*${SPEC}(?:[ \\t]*,[ \\t]*${SPEC})*[ \\t]*\\)?)?` +
    `(?:[ \\t]*;${MARKER})?[ \\t]*$`,
);
const PLUGIN = new RegExp(`^${NAME}$`);
const RELEASE = /^[0-9][0-9A-Za-z.+!_-]*$/;

/** Whether `entry` is a requirement the venv runtime installs (see REQUIREMENT). */
export function isPlainRequirement(entry: string): boolean {
  return REQUIREMENT.test(entry) && !entry.includes("://");
}

function refused(message: string): AgentError {
  return new AgentError("POLICY_REFUSED", message);
}

/**
 * The request's runtime arguments, checked against the policy. Throws POLICY_REFUSED (a rule
 * refused it) or ARGUMENT_INVALID (an argument is malformed).
 */
export function checkRequest(
  config: AgentConfig,
  sourceType: string,
  args: RequestInput["args"],
  extraEnv: Record<string, string>,
): RuntimeRequest {
  const { ingestion } = config;
  const allowed = ingestion.allowedSourceTypes;
  if (allowed && !allowed.includes(sourceType)) {
    throw refused(
      `Source type '${sourceType}' is not allowed here: ingestion.allowed_source_types is [${
        allowed.join(", ")
      }]`,
    );
  }
  const extraPlugins = parseJsonList("extra_pip_plugins", args.extra_pip_plugins);
  const rawRequirements = parseJsonList("extra_pip_requirements", args.extra_pip_requirements);
  if (!ingestion.allowExtraPip) {
    for (
      const [key, list] of [["extra_pip_plugins", extraPlugins], [
        "extra_pip_requirements",
        rawRequirements,
      ]] as const
    ) {
      if (list.length > 0) {
        throw refused(
          `${key} ${JSON.stringify(list)} refused: ingestion.allow_extra_pip is false`,
        );
      }
    }
  }
  const version = (args.version ?? "").trim() || "latest";
  // Expanded only where they are installed (elsewhere they are only noted as ignored).
  const requirements = ingestion.runtime !== "venv"
    ? rawRequirements
    : rawRequirements.map((r) => expandVars(r, extraEnv).trim()).filter((r) => r !== "");
  const plugins = [...new Set([sourceType, ...extraPlugins.map((p) => p.trim())])];
  if (ingestion.runtime === "venv") {
    for (const p of plugins) {
      if (!PLUGIN.test(p)) {
        throw refused(
          `'${p}' cannot name an acryl-datahub extra (letters, digits, '.', '_' and '-' only), so the venv runtime does not install it`,
        );
      }
    }
    if (!["latest", "native", "bundled"].includes(version) && !RELEASE.test(version)) {
      throw refused(
        `version '${version}' is not a release version of acryl-datahub (such as 1.2.0.1 or latest): the venv runtime installs no URL or path`,
      );
    }
    for (const r of requirements) {
      if (!isPlainRequirement(r)) {
        throw refused(
          `extra_pip_requirements entry ${
            JSON.stringify(r)
          } is not a requirement the venv runtime installs: only name[extras] with version specifiers and markers, no URL, path or pip option such as --index-url (use ingestion.index_url or find_links)`,
        );
      }
    }
  }
  return { sourceType, plugins, version, requirements, extraPlugins };
}

/**
 * `${VAR}` and `${VAR:-default}` in a requirement, from the request's extra_env_vars (as the
 * Python executor does, nounset: an unset variable without a default is an error). The agent's
 * own environment never answers: its values would show in the report.
 */
export function expandVars(text: string, vars: Record<string, string>): string {
  return text.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (_, name, dflt) => {
    const value = vars[name];
    if (value !== undefined && value !== "") return value;
    if (dflt !== undefined) return dflt;
    throw new AgentError(
      "ARGUMENT_INVALID",
      `extra_pip_requirements uses \${${name}}, which extra_env_vars does not set (write \${${name}:-default} for a default)`,
    );
  });
}

/** The cache key of an environment: what it was built from (and with which interpreter). */
export function environmentKey(
  r: Pick<RuntimeRequest, "plugins" | "version" | "requirements">,
  python: string,
): { name: string; hash: string } {
  const plugins = [...new Set(r.plugins.map(normalizeName))].sort();
  const hash = createHash("sha256")
    .update(JSON.stringify({ python, plugins, version: r.version, requirements: r.requirements }))
    .digest("hex").slice(0, 16);
  const slug = (s: string) => s.toLowerCase().replace(/[^a-z0-9.]+/g, "-").slice(0, 40);
  return { name: `${slug(r.plugins[0] ?? "none")}-${slug(r.version)}-${hash}`, hash };
}

/** PEP 503 normalisation of a distribution or extra name. */
export function normalizeName(name: string): string {
  return name.toLowerCase().replace(/[-_.]+/g, "-");
}

/** `extra_pip_requirements` / `extra_pip_plugins`: a JSON array string; "" means none. */
export function parseJsonList(name: string, raw: string | undefined): string[] {
  if (!raw || !raw.trim()) return [];
  try {
    const parsed = JSON.parse(raw);
    if (Array.isArray(parsed)) return parsed.map(String);
  } catch { /* reported below */ }
  throw new AgentError(
    "ARGUMENT_INVALID",
    `${name} must be a JSON array of strings such as ["name==1.0"]`,
  );
}
