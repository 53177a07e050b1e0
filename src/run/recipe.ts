/**
 * Recipes: parse `args.recipe` (JSON, YAML accepted too), find `${NAME}` secret references, and
 * substitute resolved values after parsing, value by value, so any character in a secret is safe
 * (the Python executor replaced text in the JSON, which broke on quotes; SPEC §4.5).
 */
import { parse as parseYaml, YAMLParseError } from "yaml";
import { AgentError } from "../errors.ts";

export type Recipe = Record<string, unknown>;

/** `${NAME}` exactly (SPEC §4.5); `${VAR:-default}` and `$VAR` are left for the CLI. */
const SECRET_REF = /\$\{(\w+)\}/g;

/** Parses a recipe; errors give the position, never the recipe text (it may hold secrets). */
export function parseRecipe(text: string): Recipe {
  if (!text || !text.trim()) {
    throw new AgentError("RECIPE_INVALID", "the request has no recipe (args.recipe is empty)");
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (jsonErr) {
    try {
      doc = parseYaml(text);
    } catch (yamlErr) {
      const looksJson = /^\s*[{[]/.test(text);
      throw new AgentError(
        "RECIPE_INVALID",
        `the recipe is not valid ${looksJson ? "JSON" : "YAML"}: ${
          (looksJson ? jsonPosition(text, jsonErr) : undefined) ?? yamlPosition(yamlErr)
        }`,
      );
    }
  }
  if (!doc || typeof doc !== "object" || Array.isArray(doc)) {
    throw new AgentError("RECIPE_INVALID", "the recipe must be a mapping with a `source` section");
  }
  const source = (doc as Recipe).source;
  if (!source || typeof source !== "object" || typeof (source as Recipe).type !== "string") {
    throw new AgentError("RECIPE_INVALID", "the recipe has no `source.type`");
  }
  return doc as Recipe;
}

export function sourceType(recipe: Recipe): string {
  return String((recipe.source as Recipe).type);
}

export function hasSink(recipe: Recipe): boolean {
  return recipe.sink !== undefined && recipe.sink !== null;
}

/** The distinct secret names referenced in string values, in order of appearance. */
export function secretNames(recipe: unknown): string[] {
  const names = new Set<string>();
  walkStrings(recipe, (s) => {
    for (const m of s.matchAll(SECRET_REF)) names.add(m[1]!);
    return s;
  });
  return [...names];
}

/** A copy of the recipe with every `${NAME}` replaced by its value. */
export function substituteSecrets(recipe: Recipe, values: ReadonlyMap<string, string>): Recipe {
  return walkStrings(
    recipe,
    (s) => s.replace(SECRET_REF, (whole, name: string) => values.get(name) ?? whole),
  ) as Recipe;
}

/** Sets run_id to the bare request id (rollback and stateful ingestion key on it, SPEC §3.3). */
export function withRunId(recipe: Recipe, id: string): Recipe {
  return { ...recipe, run_id: id };
}

function walkStrings(node: unknown, fn: (s: string) => string): unknown {
  if (typeof node === "string") return fn(node);
  if (Array.isArray(node)) return node.map((v) => walkStrings(v, fn));
  if (node && typeof node === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(node)) out[k] = walkStrings(v, fn);
    return out;
  }
  return node;
}

function jsonPosition(text: string, err: unknown): string | undefined {
  const message = err instanceof Error ? err.message : "";
  let pos: number | undefined;
  const at = /position (\d+)/.exec(message);
  if (at) pos = Number(at[1]);
  else if (/Unexpected end|end of (JSON|data)/i.test(message)) pos = text.length;
  if (pos === undefined) return undefined;
  const before = text.slice(0, pos);
  const line = before.split("\n").length;
  const column = pos - before.lastIndexOf("\n");
  return `syntax error at line ${line}, column ${column} (character ${pos})`;
}

function yamlPosition(err: unknown): string {
  if (err instanceof YAMLParseError && err.linePos) {
    const { line, col } = err.linePos[0];
    return `${err.code.toLowerCase().replace(/_/g, " ")} at line ${line}, column ${col}`;
  }
  return "syntax error";
}
