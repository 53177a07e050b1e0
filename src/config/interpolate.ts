/**
 * Environment interpolation of configuration values (DataHub Actions syntax).
 */
import type { ConfigIssue } from "./config.ts";

// ---------------------------------------------------------------------------------------------
// Environment interpolation: `${VAR}` and `${VAR:-default}` in any string value (DataHub Actions
// syntax). Done on parsed values, not on the raw text, so a value can never inject YAML.

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

export function interpolate(
  node: unknown,
  env: Record<string, string | undefined>,
  at: string,
  issues: ConfigIssue[],
): unknown {
  if (typeof node === "string") {
    return node.replace(ENV_REF, (_whole, name: string, fallback: string | undefined) => {
      const value = env[name];
      // Shell semantics: `${VAR:-default}` also replaces an empty value; `${VAR}` keeps it.
      if (value !== undefined && (value !== "" || fallback === undefined)) return value;
      if (fallback !== undefined) return fallback;
      issues.push({ path: at || "(root)", message: `environment variable ${name} is not set` });
      return "";
    });
  }
  if (Array.isArray(node)) return node.map((v, i) => interpolate(v, env, `${at}[${i}]`, issues));
  if (node && typeof node === "object") {
    return Object.fromEntries(
      Object.entries(node).map(([k, v]) => [k, interpolate(v, env, at ? `${at}.${k}` : k, issues)]),
    );
  }
  return node;
}
